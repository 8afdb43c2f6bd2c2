"""A run folder is untrusted input (issue 19): a forged marker, a symlinked folder or checkpoints/, a user's
file named like a temp file, a crafted model.json each leave every file outside the run folder (and a refused
folder itself) byte for byte unchanged and run no code. One process writes a folder at a time; --overwrite
replaces an earlier run only once the new one has something to put there. All through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalyst_deploy.errors import UsageError
from catalyst_deploy.run.rundir import MARKER, claim_run_folder

TINY = ["--data", "demo", "--steps-per-epoch", "2", "--reg-epochs", "1", "--recover-epochs", "1", "--threads", "1"]


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalyst_deploy", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder`: file bytes, and symlinks as their targets (never followed)."""
    found = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        found[key] = f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return found


def refused(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "run"
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def work_with_run(tmp_path: Path, finished_run: Path, **marker_changes) -> tuple[Path, Path]:
    """tmp_path/work holding a copy of the finished run (its marker changed) and a file of the user's beside it."""
    work = tmp_path / "work"
    run = work / "run"
    shutil.copytree(finished_run, run)
    (work / "victim.txt").write_text("the user's work")
    marker = json.loads((run / MARKER).read_text())
    marker.update(marker_changes)
    (run / MARKER).write_text(json.dumps(marker))
    return work, run


# case: (names added to the marker's real list, or a value replacing it; the user's files in the run folder)
FORGED = {"parent": (["../victim.txt"], []), "absolute": (["{abs}"], []),
          "through checkpoints": (["checkpoints/../../victim.txt"], []), "not names": ([42], []),
          "the user's own file": (["notes.txt"], ["notes.txt"]), "a string": ("abc", ["a", "b"])}


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_file_list_is_refused_and_nothing_anywhere_is_touched(tmp_path, finished_run, case, flag):
    outside = tmp_path / "abs.txt"
    outside.write_text("another file of the user's")
    listed, users = FORGED[case]
    work, run = work_with_run(tmp_path, finished_run, status="running")
    marker = json.loads((run / MARKER).read_text())
    if isinstance(listed, str):  # the marker alone, beside the user's files
        for entry in run.iterdir():
            if entry.name != MARKER:
                entry.unlink()
        marker["files"] = listed
    else:
        marker["files"] += [f.replace("{abs}", str(outside)) if isinstance(f, str) else f for f in listed]
    (run / MARKER).write_text(json.dumps(marker))
    for name in users:
        (run / name).write_text(f"the user's file {name}")
    before = snapshot(tmp_path)
    refused(cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(run), flag), "--out")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_symlinked_checkpoints_folder_is_never_followed(tmp_path, finished_run, flag):
    work, run = work_with_run(tmp_path, finished_run, status="running")
    marker = json.loads((run / MARKER).read_text())
    (run / MARKER).write_text(json.dumps({**marker, "files": [*marker["files"], "checkpoints/last.pt"]}))
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.pt").write_text("the user's file where the link points")
    (run / "checkpoints").symlink_to(elsewhere)
    before = snapshot(tmp_path)
    refused(cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(run), flag), "symlink")
    assert snapshot(tmp_path) == before


def test_a_symlinked_run_folder_is_refused(tmp_path, finished_run):
    work, run = work_with_run(tmp_path, finished_run)
    (work / "link").symlink_to(run)
    before = snapshot(tmp_path)
    refused(cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(work / "link"), "--overwrite"), "symlink")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", [".x.partial", ".notes.partial.txt", ".pruned.partial.pt"])
def test_a_users_file_named_like_a_temp_file_is_never_deleted(tmp_path, finished_run, name):
    work, run = work_with_run(tmp_path, finished_run)
    (run / name).write_text("the user's file")
    before = snapshot(tmp_path)
    refused(cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(run), "--overwrite"), name)
    assert snapshot(tmp_path) == before


def test_bench_never_replaces_a_prune_run(tmp_path, finished_run):
    work, run = work_with_run(tmp_path, finished_run)
    shutil.copytree(finished_run, work / "other")
    before = snapshot(tmp_path)
    result = cli("bench", str(work / "other"), "--out", str(run), "--overwrite", "--min-runs", "2", "--min-time", "0")
    refused(result, "prune run")
    assert snapshot(tmp_path) == before


def test_a_failing_overwrite_leaves_the_old_run_intact(tmp_path, finished_run):
    work, run = work_with_run(tmp_path, finished_run)
    before = snapshot(tmp_path)
    result = cli("prune", "zoo:tiny_cnn", *TINY, "--steps-per-epoch", "5", "--out", str(run), "--overwrite", "--lr",
                 "1e6")  # diverges within the first phase, before its first checkpoint
    assert result.returncode == 1 and "diverged" in result.stderr, result.stderr[-2000:]
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.endswith(MARKER)} == \
        {k: v for k, v in before.items() if not k.endswith(MARKER)}
    marker = json.loads((run / MARKER).read_text())
    assert marker["status"] == "done" and set(marker["files"]) == set(json.loads(before[f"work/run/{MARKER}"])["files"])


def test_a_stale_marker_whose_pid_is_alive_does_not_block_the_folder(tmp_path, finished_run):
    """The pid in a killed run's marker may belong to another live process by now (here: a sleep)."""
    other = subprocess.Popen(["sleep", "120"])
    try:
        import socket

        work, run = work_with_run(tmp_path, finished_run, status="running", pid=other.pid, host=socket.gethostname())
        result = cli("prune", "zoo:tiny_cnn", *TINY, "--out", str(run), "--overwrite")
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((run / MARKER).read_text())["status"] == "done"
        assert (work / "victim.txt").read_text() == "the user's work"
    finally:
        other.kill()
        other.wait()


def test_a_folder_being_written_cannot_be_claimed_again(tmp_path):
    first = claim_run_folder(tmp_path / "run")
    with pytest.raises(UsageError, match="another catalyst-deploy process"):
        claim_run_folder(tmp_path / "run", overwrite=True)
    with pytest.raises(UsageError, match="another catalyst-deploy process"):
        claim_run_folder(tmp_path / "run", resume=True)
    first.finish()
    claim_run_folder(tmp_path / "run", overwrite=True).finish()


CLAIM = """
import sys, time
from pathlib import Path
from catalyst_deploy.errors import UsageError
from catalyst_deploy.run.rundir import claim_run_folder
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
try:
    folder = claim_run_folder(sys.argv[1], overwrite=True)
except UsageError:
    print("refused")
else:
    print("claimed")
    time.sleep(3)
    folder.finish()
"""


def test_of_several_claims_at_the_same_moment_exactly_one_wins(tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path / "run"), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(4)  # every process has imported and waits for the start
    go.touch()
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["claimed", "refused", "refused", "refused"], [p.communicate()[1][-500:] for p in procs]


@pytest.mark.parametrize("source", ["os:abort", "tempfile:mkdtemp", "catalyst_deploy.inputs.zoo:tiny_cnn",
                                    "{model}"])
def test_bench_never_imports_or_calls_what_model_json_names(tmp_path, finished_run, source):
    work, run = work_with_run(tmp_path, finished_run)
    meta = json.loads((run / "model.json").read_text())
    meta["source_model"] = source.replace("{model}", str(run / "pruned.pt"))
    (run / "model.json").write_text(json.dumps(meta))
    temp = tmp_path / "tmp"
    temp.mkdir()
    before = snapshot(tmp_path)
    result = cli("bench", str(run), "--min-runs", "2", "--min-time", "0", env={"TMPDIR": str(temp)})
    refused(result, "--baseline")
    assert snapshot(tmp_path) == before  # tempfile:mkdtemp would have made a folder in TMPDIR


@pytest.mark.parametrize("shape", [[1, 1, 100000, 100000], [1, 1, 28], "1,1,28,28", [1, 1, -28, 28], [1, True, 28, 28]])
@pytest.mark.parametrize("command", ["bench", "export"])
def test_a_crafted_input_shape_in_model_json_is_refused(tmp_path, finished_run, shape, command):
    work, run = work_with_run(tmp_path, finished_run)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "input_shape": shape}))
    before = snapshot(tmp_path)
    args = ["bench", str(run), "--min-runs", "2", "--min-time", "0"] if command == "bench" else \
        ["export", str(run), "--format", "onnx", "--out", str(work / "m.onnx")]
    refused(cli(*args, timeout=120), "model.json")
    assert snapshot(tmp_path) == before


def test_a_file_is_named_in_the_marker_before_it_appears_and_unnamed_when_its_write_fails(tmp_path):
    """A kill -9 between a file's rename into place and the marker's update must not leave a file of the run
    the marker does not name: `--resume` would refuse the folder as holding foreign files. So the marker
    names the file before the rename; a write that fails leaves it unnamed (nothing of it is in the folder)."""
    folder = claim_run_folder(tmp_path / "run")
    listed = lambda: json.loads((tmp_path / "run" / MARKER).read_text())["files"]  # noqa: E731

    def write(tmp: Path) -> None:
        assert not (tmp_path / "run" / "plan.json").exists() and "plan.json" in listed()
        tmp.write_text("{}")
    folder.write_with("plan.json", write)
    assert (tmp_path / "run" / "plan.json").read_text() == "{}" and "plan.json" in listed()

    def broken(tmp: Path) -> None:
        raise OSError("disk full")
    with pytest.raises(OSError):
        folder.write_with("report.json", broken)
    assert "report.json" not in listed() and not (tmp_path / "run" / "report.json").exists()
    assert "plan.json" in listed()
    (tmp_path / "run" / "report.md").write_text("the replaced run's")  # a file of the run being replaced
    folder.previous.append("report.md")
    with pytest.raises(OSError):
        folder.write_with("report.md", broken)
    assert folder.previous == ["report.md"] and "report.md" not in folder.files  # still the old run's, not ours
    folder.previous.clear()
    (tmp_path / "run" / "report.md").unlink()
    folder.fail(remove_written=True)
    assert not (tmp_path / "run").exists()
