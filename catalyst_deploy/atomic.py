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
    with atomic_path(target) as tmp:
        torch_save_file(obj, tmp, shown=target)
    return Path(target)


def torch_save_file(obj, path: str | Path, shown: str | Path | None = None) -> None:
    """`torch.save(obj, path)`, with a failed write (a full disk, a file size limit) as a one-line
    CatalystDeployError naming `shown` (the file the temp `path` stands for): torch reports it as a
    RuntimeError from its zip writer ("[enforce fail at inline_container.cc ...]")."""
    import torch

    from catalyst_deploy.errors import CatalystDeployError

    try:
        with open(path, "wb") as f:  # a file object: torch names the archive inside "archive", not after the temp
            torch.save(obj, f)      # file's random name, so the same model gives the same bytes
    except RuntimeError as err:
        text = str(err)
        if "inline_container" not in text and "PytorchStreamWriter" not in text:
            raise
        raise CatalystDeployError(f"cannot write {shown or path}: the write failed ({text.splitlines()[0][:120]}): "
                                  "check the free space and the file size limit (ulimit -f)") from None
