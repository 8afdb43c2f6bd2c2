"""Output folders that never cost a user a file: the tool deletes only what it wrote.

A run folder carries a marker file (``.catalyst-deploy-run.json``) naming the tool, the run's status
(running, done, failed) and every file the run wrote. The rules for ``--out``:

- a new folder, or an empty one: used;
- an earlier run of this tool (its marker lists everything in it): ``--overwrite`` replaces it, file by
  file, and ``--resume`` continues it when it was interrupted;
- anything else (files this tool did not write, a file, the current project): refused, whatever the flag;
- it may not equal, contain or sit inside an input (the model file, the weights, the data folder).

    folder = claim_run_folder(Path("runs/r18"), inputs=[Path("model.pt")], overwrite=False)
    folder.write_bytes("plan.json", data)        # atomic, recorded in the marker
    folder.finish()                              # status done

A failed run removes the files it wrote (checkpoints excepted, which `--resume` needs) and the folder
itself when it created it and it is empty; it never removes a folder it did not create.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

from catalyst_deploy.atomic import atomic_path
from catalyst_deploy.errors import UsageError

MARKER = ".catalyst-deploy-run.json"
TOOL = "catalyst-deploy"
CHECKPOINTS = "checkpoints"


def next_free_folder(base: str | Path) -> Path:
    """`base` when it does not exist, else the first of base-2, base-3, ... that does not (as training
    tools number their runs): the default output of `demo` and of `prune` without --out."""
    base = Path(base)
    if not base.exists():
        return base
    n = 2
    while base.with_name(f"{base.name}-{n}").exists():
        n += 1
    return base.with_name(f"{base.name}-{n}")


def read_marker(folder: Path) -> dict | None:
    """The marker of a run folder of this tool, or None when `folder` is not one."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == TOOL else None


@dataclass
class RunFolder:
    """An output folder this run may write into; every file written through it is recorded."""

    path: Path
    created: bool
    kind: str = "prune"
    files: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    status: str = "running"

    def file(self, name: str) -> Path:
        return self.path / name

    def record(self, name: str) -> Path:
        """Note that this run wrote `name` (relative to the folder) and return its path."""
        if name not in self.files:
            self.files.append(name)
        self._write_marker()
        return self.path / name

    def write_with(self, name: str, write: Callable[[Path], None]) -> Path:
        """Write `name` atomically with `write(temp_path)` and record it."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            write(tmp)
        return self.record(name)

    def write_text(self, name: str, text: str) -> Path:
        return self.write_with(name, lambda tmp: tmp.write_text(text))

    def finish(self, status: str = "done") -> None:
        """Mark the run `status`; a finished run no longer needs its checkpoints, which are removed."""
        if status == "done":
            for name in [f for f in self.files if f.startswith(CHECKPOINTS + "/")]:
                (self.path / name).unlink(missing_ok=True)
                self.files.remove(name)
            _remove_empty_dirs(self.path / CHECKPOINTS)
        self.status = status
        self._write_marker()

    def discard(self, keep_checkpoints: bool) -> None:
        """Remove what this run wrote (checkpoints too unless `keep_checkpoints`), and the folder when this
        run created it and nothing else is left in it."""
        keep = [f for f in self.files if keep_checkpoints and f.startswith(CHECKPOINTS + "/")]
        for name in self.files:
            if name not in keep:
                (self.path / name).unlink(missing_ok=True)
        self.files = keep
        _remove_empty_dirs(self.path / CHECKPOINTS)
        if keep:
            self.finish("failed")
            return
        (self.path / MARKER).unlink(missing_ok=True)
        if self.created:
            _remove_empty_dirs(self.path)

    def _write_marker(self) -> None:
        marker = {"tool": TOOL, "kind": self.kind, "status": self.status, "files": sorted(self.files),
                  "settings": self.settings, "pid": os.getpid(), "host": socket.gethostname(),
                  "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        with atomic_path(self.path / MARKER) as tmp:
            tmp.write_text(json.dumps(marker, indent=1))


def claim_run_folder(out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                     resume: bool = False, kind: str = "prune", settings: dict | None = None) -> RunFolder:
    """Check `out` against the rules of this module and return it as this run's folder.

    With `resume`, the folder must hold an interrupted run of the same `kind`; its recorded files are
    kept. Raises UsageError naming what is wrong and what to do.
    """
    path = Path(out).expanduser().absolute()
    check_not_an_input(path, inputs, "--out")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose a folder name")
    if not path.exists():
        if resume:
            raise UsageError(f"--resume: {out} does not exist, so there is no run to continue")
        path.mkdir(parents=True)
        return _new(path, created=True, kind=kind, settings=settings)
    marker = read_marker(path)
    contents = sorted(p.name for p in path.iterdir())
    if not contents:
        if resume:
            raise UsageError(f"--resume: {out} is empty, there is no run to continue")
        return _new(path, created=False, kind=kind, settings=settings)
    if marker is None:
        raise UsageError(f"--out {out} already holds files this tool did not write ({_few(contents)}): it is never "
                         "overwritten; choose a new or empty folder")
    foreign = _foreign_files(path, marker)
    if foreign:
        raise UsageError(f"--out {out} holds an earlier run, and also files it did not write ({_few(foreign)}): "
                         "move them away or choose another folder")
    _refuse_live_writer(path, marker)
    if resume:
        return _resumed(path, marker, kind, out)
    if not overwrite:
        hint = "--resume to continue it or --overwrite" if marker.get("status") != "done" else "--overwrite"
        raise UsageError(f"--out {out} holds an earlier {marker.get('kind', 'prune')} run "
                         f"({marker.get('status')}): pass {hint} to replace it, or choose another folder")
    for name in marker.get("files", []):
        (path / name).unlink(missing_ok=True)
    _remove_empty_dirs(path / CHECKPOINTS)
    _remove_own_temp_files(path)
    return _new(path, created=False, kind=kind, settings=settings)


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


def _new(path: Path, *, created: bool, kind: str, settings: dict | None) -> RunFolder:
    folder = RunFolder(path, created, kind, settings=settings or {})
    folder._write_marker()
    return folder


def _resumed(path: Path, marker: dict, kind: str, out) -> RunFolder:
    if marker.get("kind", "prune") != kind:
        raise UsageError(f"--resume: {out} holds a {marker.get('kind')} run, not a {kind} run")
    if marker.get("status") == "done":
        raise UsageError(f"--resume: the run in {out} has finished; nothing to continue")
    files = [f for f in marker.get("files", []) if (path / f).exists()]
    _remove_own_temp_files(path)
    folder = RunFolder(path, created=False, kind=kind, files=files, settings=marker.get("settings", {}))
    folder._write_marker()
    return folder


def _foreign_files(path: Path, marker: dict) -> list[str]:
    """Entries of `path` that the marker does not account for (temp files of this tool's atomic writes
    count as its own)."""
    ours = {MARKER} | {f.split("/", 1)[0] for f in marker.get("files", [])} | {CHECKPOINTS}
    foreign = []
    for entry in sorted(path.iterdir()):
        if entry.name in ours or _is_own_temp(entry.name):
            continue
        foreign.append(entry.name)
    return foreign


def _is_own_temp(name: str) -> bool:
    return name.startswith(".") and ".partial" in name


def _refuse_live_writer(path: Path, marker: dict) -> None:
    """UsageError when the marker says a run is still writing here from a live process on this host."""
    if marker.get("status") != "running" or marker.get("host") != socket.gethostname():
        return
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return
    raise UsageError(f"another catalyst-deploy process (pid {pid}) is writing to {path}: wait for it or choose "
                     "another folder")


def _remove_own_temp_files(path: Path) -> None:
    """Temp files a killed atomic write of this tool left in its own folder (`.NAME.XXXX.partial.SUFFIX`)."""
    for sub in [path, path / CHECKPOINTS]:
        if sub.is_dir():
            for entry in sub.iterdir():
                if entry.is_file() and _is_own_temp(entry.name):
                    entry.unlink(missing_ok=True)


def _remove_empty_dirs(path: Path) -> None:
    """Remove `path` and its empty subfolders, bottom up; a folder with anything left in it stays."""
    if not path.is_dir():
        return
    for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if sub.is_dir():
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
