"""Atomic file output: an export is written to a temp file beside its target and moved into place only
once it has been validated, so a failed export never leaves a partial or unchecked file at the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temp path in `target`'s folder; on a clean exit move it onto `target` (os.replace).

    On any exception the temp file is deleted and `target` is left as it was (absent, or the old file).
    The temp name keeps `target`'s suffix, since some writers (torch.onnx, TensorRT) look at it.

        with atomic_output("model.onnx") as tmp:
            write(tmp); check(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".partial{target.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
