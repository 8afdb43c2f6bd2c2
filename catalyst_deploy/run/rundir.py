"""Output folders that never cost a user a file: the tool deletes only what it wrote.

A run folder carries a marker file (``.catalyst-deploy-run.json``, `marker`) naming the tool, the run's
kind and status (running, done, failed) and every file the run wrote. The rules for ``--out``:

- a new folder, or an empty one: used; an earlier run of this tool of the same kind: ``--overwrite`` replaces
  it and ``--resume`` continues it when it did not finish;
- anything else (files this tool did not write, a marker listing such files, a symlinked folder or
  ``checkpoints/``, a file, the current project): refused, whatever the flag;
- it may not equal, contain or sit inside an input (the model file, the weights, the data folder).

One process at a time writes a folder (`folderlock`). ``--overwrite`` does not erase first: the new run
writes beside the old files, each of its writes replaces the old file of that name, and the old run's other
files go once the new run has written its model (`drop_previous`) or finished. A new run that fails before
writing anything leaves the old run as it was. ``folder = claim_run_folder(Path("r18"), inputs=[Path("m.pt")])``,
``folder.write_text("plan.json", text)`` (atomic, recorded in the marker), ``folder.finish()`` (status done).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from catalyst_deploy.atomic import atomic_path
from catalyst_deploy.errors import UsageError
from catalyst_deploy.run.folderlock import FolderLock, process_start
from catalyst_deploy.run.marker import (CHECKPOINTS, LOCK, MARKER, TOOL, check_folder_is_plain, foreign_entries,
                                        is_own_temp, listed_files, marker_kind, own_names, read_marker, short)

__all__ = ["CHECKPOINTS", "MARKER", "RunFolder", "check_not_an_input", "claim_run_folder", "next_free_folder",
           "read_marker", "reopen_finished"]


def next_free_folder(base: str | Path) -> Path:
    """`base` if free, else the first free base-2, base-3, ... (the default --out of `demo` and `prune`)."""
    base = Path(base)
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}-{n}").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")


@dataclass
class RunFolder:
    """An output folder this run writes into, under its lock; every file written through it is recorded.
    `previous`: files of the run this one replaces (--overwrite), still in place; `replaced`: that run's
    marker, put back when this run fails having written nothing."""

    path: Path
    created: bool
    kind: str = "prune"
    files: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    status: str = "running"
    previous: list[str] = field(default_factory=list)
    replaced: dict | None = None
    lock: FolderLock | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    def record(self, name: str) -> Path:
        """Note that this run wrote `name` (relative to the folder) and return its path."""
        if name not in self.files:
            self.files.append(name)
        if name in self.previous:
            self.previous.remove(name)  # the old run's file of that name was just replaced
        self._write_marker()
        return self.path / name

    @contextmanager
    def writing(self, names: list[str]) -> Iterator[None]:
        """Around a write of `names`: listed before they appear (a kill in between leaves a listed name, never an
        unlisted file `--resume` would refuse as foreign); the lists as they were when the write fails."""
        before = (list(self.files), list(self.previous))
        for name in names:
            self.record(name)
        try:
            yield
        except BaseException:  # back as it was, plus the new files the failed write left (this run's)
            self.files, self.previous = before
            self.files += [n for n in names if (self.path / n).exists() and n not in self.files + self.previous]
            self._write_marker()
            raise

    def write_with(self, name: str, write: Callable[[Path], None]) -> Path:
        """Write `name` atomically with `write(temp_path)`, recorded (`writing`)."""
        with self.writing([name]), atomic_path(self.path / name) as tmp:
            write(tmp)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write_with(name, lambda tmp: tmp.write_text(text))

    def drop_previous(self, checkpoints: bool = False) -> None:
        """Remove the replaced run's files this run has not rewritten (its checkpoints only if `checkpoints`)."""
        for name in list(self.previous):
            if checkpoints or not name.startswith(CHECKPOINTS + "/"):
                _unlink_regular(self.path / name)
                self.previous.remove(name)
        self._write_marker()

    def finish(self, status: str = "done") -> None:
        """Mark the run `status`, let go of the folder; done: no checkpoints stay, nor the replaced run's files."""
        if status == "done":
            self.drop_previous(checkpoints=True)
            for name in [f for f in self.files if f.startswith(CHECKPOINTS + "/")]:
                _unlink_regular(self.path / name)
                self.files.remove(name)
            _remove_empty_dirs(self.path / CHECKPOINTS)
        self.status = status
        self._write_marker()
        self._unlock()

    def fail(self, remove_written: bool) -> None:
        """End a failed run. With `remove_written` the files it wrote go (bench: nothing half-done stays);
        otherwise everything stays, marked failed (prune: what `--resume` finishes from). A run that leaves
        nothing gives the folder back as it found it (the replaced run's marker or none; no folder it made)."""
        if remove_written:
            for name in self.files:
                _unlink_regular(self.path / name)
            self.files = []
            _remove_empty_dirs(self.path / CHECKPOINTS)
        if self.files:
            self.finish("failed")
            return
        if self.replaced is not None:
            with atomic_path(self.path / MARKER) as tmp:
                tmp.write_text(json.dumps(self.replaced, indent=1))
        else:
            (self.path / MARKER).unlink(missing_ok=True)
        self._unlock()
        if self.created:
            _remove_empty_dirs(self.path)

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _write_marker(self) -> None:
        marker = {"tool": TOOL, "kind": self.kind, "status": self.status,
                  "files": sorted(set(self.files) | set(self.previous)), "previous": sorted(self.previous),
                  "settings": self.settings, "pid": os.getpid(), "started": process_start(os.getpid()),
                  "host": socket.gethostname(), "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        with atomic_path(self.path / MARKER) as tmp:
            tmp.write_text(json.dumps(marker, indent=1))


def claim_run_folder(out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                     resume: bool = False, kind: str = "prune", settings: dict | None = None) -> RunFolder:
    """`out` checked against this module's rules and locked (`resume`: an unfinished `kind` run, kept); UsageError."""
    path = Path(out).expanduser().absolute()
    check_not_an_input(path, inputs, "--out")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UsageError(f"--out {out} is a file or a symlink, not a folder: choose a folder name")
    created = False
    if not path.exists():
        if resume:
            raise UsageError(f"--resume: {out} does not exist, so there is no run to continue")
        try:
            path.mkdir(parents=True)
            created = True
        except FileExistsError:  # another process made it a moment ago: it is judged like any existing folder
            pass
    _usable(path, out, resume)  # refuse a folder of the user's before writing anything into it
    lock = FolderLock.take(path)
    if lock is None:
        raise UsageError(f"another catalyst-deploy process is writing to {out}: wait for it or choose another "
                         "folder")
    try:
        marker = _usable(path, out, resume)  # again, now that no other run can change it
        _permitted(marker, out, kind, overwrite, resume)
        return _claimed(path, created, kind, settings, marker, resume, lock)
    except BaseException:
        lock.release(remove=True)
        raise


def reopen_finished(out: str | Path) -> RunFolder:
    """The finished prune run in `out` (e.g. to rewrite its report), checked and locked like a claim."""
    path = Path(out).expanduser().absolute()
    marker = _usable(path, out, resume=False)
    lock = FolderLock.take(path)
    if marker is None or marker_kind(marker) != "prune" or lock is None:
        raise UsageError(f"{out} is not a finished run of this tool, or another process is writing to it")
    return RunFolder(path, created=False, files=listed_files(path, marker), settings=marker.get("settings", {}),
                     status=marker.get("status", "done"), lock=lock)


def _usable(path: Path, out, resume: bool) -> dict | None:
    """The marker in `path` (None: empty); UsageError for anything this tool did not write or cannot trust."""
    contents = sorted(p.name for p in path.iterdir() if p.name != LOCK)
    if not contents:
        if resume:
            raise UsageError(f"--resume: {out} is empty, there is no run to continue")
        return None
    marker = read_marker(path)
    if marker is None:
        raise UsageError(f"--out {out} already holds files this tool did not write ({_few(contents)}): it is never "
                         "overwritten; choose a new or empty folder")
    try:
        check_folder_is_plain(path)
        names = listed_files(path, marker) + listed_files(path, marker, "previous")
    except UsageError as err:
        raise UsageError(f"--out {out} is not a run folder this tool can use: {err}; nothing in it was touched, "
                         "choose another folder") from None
    foreign = foreign_entries(path, names, marker_kind(marker))
    if foreign:
        raise UsageError(f"--out {out} holds an earlier run, and also files it did not write ({_few(foreign)}): "
                         "move them away or choose another folder")
    return marker


def _permitted(marker: dict | None, out, kind: str, overwrite: bool, resume: bool) -> None:
    """UsageError unless this claim may continue (`resume`) or replace (`overwrite`) the run of `marker`."""
    if marker is None:
        return
    theirs, status = marker_kind(marker), marker.get("status")
    if theirs != kind:
        raise UsageError(f"--out {out} holds a {theirs} run, which a {kind} run never replaces, with or without "
                         "--overwrite: choose another folder")
    if resume and status == "done":
        raise UsageError(f"--resume: the run in {out} has finished; nothing to continue")
    if not resume and not overwrite:
        hint = "--resume to continue it or --overwrite" if status != "done" else "--overwrite"
        raise UsageError(f"--out {out} holds an earlier {kind} run ({short(status)}): pass {hint} to replace it, "
                         "or choose another folder")


def _claimed(path: Path, created: bool, kind: str, settings: dict | None, marker: dict | None, resume: bool,
             lock: FolderLock) -> RunFolder:
    """The RunFolder of a checked claim: a new run, a resumed one, or one that replaces `marker`'s run."""
    own = own_names(kind) | {MARKER}
    for sub in (path, path / CHECKPOINTS):  # temp files of atomic writes that a kill interrupted
        if sub.is_dir():
            for entry in sub.iterdir():
                if is_own_temp(entry.name, own):
                    _unlink_regular(entry)
    if marker is None:
        folder = RunFolder(path, created, kind, settings=settings or {}, lock=lock)
    elif resume:
        previous = [f for f in listed_files(path, marker, "previous") if (path / f).is_file()]
        files = [f for f in listed_files(path, marker) if (path / f).is_file() and f not in previous]
        folder = RunFolder(path, False, kind, files=files, settings=marker.get("settings", {}), previous=previous,
                           lock=lock)
    else:
        old = [f for f in listed_files(path, marker) if (path / f).is_file()]
        folder = RunFolder(path, False, kind, settings=settings or {}, previous=old, replaced=marker, lock=lock)
    folder._write_marker()
    return folder


def check_not_an_input(path: Path, inputs: Iterable[str | Path | None], option: str) -> None:
    """UsageError when `path` equals, contains or lies inside one of `inputs` (files or folders)."""
    target = path.resolve()
    for given in inputs:
        if given is None or not str(given) or ":" in str(given) and not Path(str(given)).exists():
            continue  # specs such as torchvision:resnet18 name no file
        source = Path(given).expanduser().resolve()
        if not source.exists():
            continue
        if target == source or source.is_relative_to(target) or target.is_relative_to(source):
            raise UsageError(f"{option} {path} would overwrite or sit inside the input {given}: choose a folder "
                             "apart from the model, weights and data")


def _unlink_regular(path: Path) -> None:
    """Remove `path` when it is a regular file (never a symlink or a folder that took its place)."""
    if path.is_file() and not path.is_symlink():
        path.unlink(missing_ok=True)


def _remove_empty_dirs(path: Path) -> None:
    """Remove `path` and its empty subfolders, bottom up; a folder with anything left in it stays."""
    if not path.is_dir() or path.is_symlink():
        return
    for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink():
            try:
                sub.rmdir()
            except OSError:
                pass
    try:
        path.rmdir()
    except OSError:
        pass


def _few(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
