"""The one atomic writer: every file this tool writes goes to a temp file beside its target and is moved
into place (os.replace) only when the writing, and any check that follows it, has succeeded. A failure
or a kill leaves the target as it was (absent, or the old file) and no temp file behind on failure."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path in `target`'s folder; on a clean exit move it onto `target`.

    The temp name keeps `target`'s suffix, since some writers (torch.onnx, TensorRT) look at it.

        with atomic_path("model.onnx") as tmp:
            write(tmp); check(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".partial{target.suffix}")
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def torch_save(obj, target: str | Path) -> Path:
    """`torch.save(obj, target)` atomically."""
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return Path(target)
