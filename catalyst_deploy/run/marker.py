"""The marker of a run folder (``.catalyst-deploy-run.json``), read as untrusted input.

A marker says which tool made the folder, the kind of run (prune, bench), its status and the files the run
wrote. Anybody can write such a file, so its file list is only a list of candidates. A name counts only
when it is a file this tool writes for that kind of run (`own_names`: pruned.pt, model.onnx,
checkpoints/last.pt, ...), given as a plain relative name directly in the folder or in its own
``checkpoints/``; on disk it must be a regular file, not a symlink. Anything else in the list (``../x``,
``/tmp/x``, ``notes.txt``, a list that is not a list) is treated as a file of the user's: the folder is
refused, and nothing in it is touched.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from catalyst_deploy.errors import UsageError

MARKER = ".catalyst-deploy-run.json"
LOCK = ".catalyst-deploy-run.lock"
TOOL = "catalyst-deploy"
CHECKPOINTS = "checkpoints"
KINDS = ("prune", "bench")
MAX_MARKER_BYTES = 1 << 20  # a real marker is a few hundred bytes; a bigger file is not read at all
BENCH_FILES = ("bench.json", "bench.md", "latency.png")
PRUNE_FILES = ("pruned.pt", "pruned_state.pt", "plan.json", "model.json", "report.json", "report.md",
               "bifurcation.png", f"{CHECKPOINTS}/last.pt", *BENCH_FILES)


def own_names(kind: str) -> frozenset[str]:
    """Every file name (relative to the folder) a run of `kind` may write: for a prune run its outputs, its
    checkpoint, and the exported files of every format, for the pruned model and the dense one."""
    if kind == "bench":
        return frozenset(BENCH_FILES)
    from catalyst_deploy.exporters import output_paths
    from catalyst_deploy.formats import FORMATS

    exported = {path.name for fmt in FORMATS.values() for stem in ("model", "dense")
                for path in output_paths(fmt.name, Path(f"{stem}{fmt.suffix}"), with_plan=True)}
    return frozenset(PRUNE_FILES) | exported


def read_marker(folder: Path) -> dict | None:
    """The marker of a run folder of this tool, or None when `folder` has none (or one that is not a regular
    file, too big, or not a JSON mapping naming this tool)."""
    path = Path(folder) / MARKER
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MARKER_BYTES:
            return None
        marker = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == TOOL else None


def marker_kind(marker: dict) -> str:
    """The kind of run a marker describes; UsageError for one this tool does not make."""
    kind = marker.get("kind", "prune")
    if kind not in KINDS:
        raise UsageError(f"its marker {MARKER} names an unknown kind of run: {short(kind)}")
    return kind


def listed_files(folder: Path, marker: dict, key: str = "files") -> list[str]:
    """The marker's list `key` (files, previous), each name checked (see the module's docstring).

    Raises UsageError when the list is not a list of names this tool writes for the marker's kind, or when a
    listed name exists in the folder as anything but a regular file (a symlink, a folder)."""
    names = marker.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"its marker {MARKER} lists {key} that are not a list of file names")
    own = own_names(marker_kind(marker))
    for name in names:
        if name not in own:
            raise UsageError(f"its marker {MARKER} lists {short(name)}, which this tool never writes there")
        entry = Path(folder) / name
        if entry.is_symlink() or (entry.exists() and not entry.is_file()):
            raise UsageError(f"{name} in it is not a regular file (a symlink or a folder): it is not this tool's")
    return list(dict.fromkeys(names))


def check_folder_is_plain(folder: Path) -> None:
    """UsageError when the folder or its ``checkpoints/`` is a symlink (or checkpoints is not a folder): the
    tool writes and deletes only inside a real folder of its own."""
    folder = Path(folder)
    if folder.is_symlink():
        raise UsageError("it is a symlink: give the real folder")
    sub = folder / CHECKPOINTS
    if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
        raise UsageError(f"its {CHECKPOINTS} is a symlink or not a folder: it is not this tool's")


# the temp names of atomic.atomic_path: ".STEM." + mkstemp's 8 random characters + ".partial" + SUFFIX
_TEMP = re.compile(r"\.(?P<stem>.+)\.[a-z0-9_]{8}\.partial(?P<suffix>(\.[^.]*)?)")


def is_own_temp(name: str, own: frozenset[str]) -> bool:
    """Whether `name` (in the folder or its checkpoints/) is the temp file of an atomic write of one of the
    files in `own`, as `atomic.atomic_path` names them; a user's file named otherwise never is."""
    match = _TEMP.fullmatch(name)
    return bool(match) and f"{match['stem']}{match['suffix']}" in {Path(n).name for n in own}


def foreign_entries(folder: Path, names: list[str], kind: str) -> list[str]:
    """Entries of `folder` (and of its checkpoints/) that the checked `names` of a marker do not account for;
    temp files of this tool's own atomic writes count as its own."""
    folder, own = Path(folder), own_names(kind) | {MARKER}
    ours = {MARKER, LOCK, CHECKPOINTS} | set(names)
    foreign = [e.name for e in sorted(folder.iterdir()) if e.name not in ours and not is_own_temp(e.name, own)]
    if (folder / CHECKPOINTS).is_dir():
        foreign += [f"{CHECKPOINTS}/{e.name}" for e in sorted((folder / CHECKPOINTS).iterdir())
                    if f"{CHECKPOINTS}/{e.name}" not in ours and not is_own_temp(e.name, own)]
    return foreign


def short(value, limit: int = 80) -> str:
    """A bounded repr of an untrusted value (reprlib: a few items per level, a few levels)."""
    import reprlib

    text = reprlib.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
