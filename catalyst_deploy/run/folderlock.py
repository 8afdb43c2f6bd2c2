"""One writer per run folder: an exclusive lock on ``.catalyst-deploy-run.lock`` inside it, held while a run
writes there.

The lock is the kernel's (``flock``): taking it is atomic, so of two runs claiming one folder at the same
moment exactly one gets it, and it ends with the process that holds it, however that process ends (kill -9
included). A marker left by a dead run therefore never blocks its folder, whatever process has its pid now.

    lock = FolderLock.take(folder)      # None when another live process holds it
    ...
    lock.release()
"""

from __future__ import annotations

import os
from pathlib import Path

from catalyst_deploy.run.marker import LOCK


class FolderLock:
    """A held lock on `folder` (take it with `FolderLock.take`)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def take(cls, folder: Path) -> FolderLock | None:
        """The lock of `folder`, or None when another live process holds it. The lock file is created when
        missing; a lock file that is a symlink or not a regular file is never opened."""
        import fcntl

        path = Path(folder) / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            # the holder before us may have removed the file between our open and our lock: then we hold a
            # lock on a file nobody else will open, and must lock the one now at `path`
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                _write_owner(fd)
                return cls(path, fd)
            os.close(fd)

    def release(self, remove: bool = True) -> None:
        """Let go of the lock (removing its file first, while still holding it, unless `remove` is False)."""
        if self.fd < 0:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = -1


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where /proc is not there:
    recorded in the marker beside the pid, so that a reader can tell a reused pid from the writer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _write_owner(fd: int) -> None:
    """The holder's pid and start time in the lock file, for a person who finds it."""
    text = f"{os.getpid()} {process_start(os.getpid()) or ''}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
