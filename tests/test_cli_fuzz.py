"""Property-based fuzz of the CLI surface: any combination of flags and values, valid or not, for every
command gives exit code 0, 1 or 2 through the one error boundary (`cli.main`), never an uncaught
exception, and never touches a file outside --out (a folder of the user's beside it stays byte-identical).
The same holds for run folders anybody could have forged: any marker and model.json, a symlinked
checkpoints/, under prune --overwrite / --resume, bench and export: no file outside is touched and no code
that model.json names runs.

Runs in-process (the boundary is the same code the console script runs), with training capped so that a
valid combination finishes in seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from catalyst_deploy import cli

NUMBERS = st.sampled_from(["0", "1", "-1", "0.5", "1e9", "nan", "inf", "-inf", "abc", "", "2.0G", "0.3", "1,2", "8"])
PATHS = st.sampled_from(["zoo:tiny_cnn", "missing.pt", "torchvision:nope", "notes.txt", "demo", "nosuch:x", ".", ".."])
FLAGS = {
    "prune": {"--target-flops": NUMBERS, "--method": st.sampled_from(["catalyst", "l1", "catalist", "random", ""]),
              "--round-to": NUMBERS, "--max-layer-ratio": NUMBERS, "--lr": NUMBERS, "--batch-size": NUMBERS,
              "--input-shape": st.sampled_from(["1,1,28,28", "1,3,28,28", "3,28", "a,b", "1,1,0,0"]),
              "--export": st.sampled_from(["onnx", "onx", "trt", "onnx,torch", ""]), "--seed": NUMBERS,
              "--data": st.sampled_from(["demo", "nosuch:x", "fashion-mnist:/nonexistent", "imagefolder:."]),
              "--ignore": st.sampled_from(["stem", "features.0", "nope"]), "--val-size": NUMBERS,
              "--target-latency": st.sampled_from(["0.6x", "2x", "3ms@0", "fast"]), "--recipe": st.sampled_from(["demo", "nope"])},
    "export": {"--format": st.sampled_from(["onnx", "torch", "onx", "trt", ""]), "--input-shape": st.sampled_from(
        ["1,1,28,28", "1,3,8,8", "x", "1,1,28"]), "--opset": NUMBERS, "--atol": NUMBERS, "--exporter": st.sampled_from(
        ["dynamo", "torchscript", "tracer"])},
    "bench": {"--backend": st.sampled_from(["ort-cpu", "torch", "ort-gpu", "trt", ""]), "--batch": NUMBERS,
              "--input-shape": st.sampled_from(["1,28,28", "3,8,8", "x"]), "--min-runs": NUMBERS,
              "--min-time": st.sampled_from(["0", "0.01", "-1", "nan"]), "--threads": NUMBERS},
    "env": {"--json": st.none()},
    "demo": {"--steps-per-epoch": NUMBERS},
}
CAPS = {"prune": ["--steps-per-epoch", "1", "--reg-epochs", "0.5", "--recover-epochs", "0.5", "--threads", "1"],
        "demo": ["--steps-per-epoch", "1"]}


@st.composite
def invocations(draw):
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = [command]
    if command in ("prune", "export", "bench"):
        args.append(draw(PATHS))
    for flag, values in FLAGS[command].items():
        if draw(st.booleans()):
            args += [flag] if values is None else [flag, draw(values)]
    return args


def run_args(args: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["catalyst-deploy", *args])
    try:
        cli.main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=invocations())
def test_any_flags_give_exit_0_1_or_2_and_touch_nothing_outside_out(tmp_path_factory, monkeypatch, args):
    work = tmp_path_factory.mktemp("fuzz")
    mine = work / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's work")
    (work / "notes.txt").write_text("not a model")
    before = snapshot(mine)
    monkeypatch.chdir(work)
    out = ["--out", str(work / "out" / ("m.onnx" if args[0] == "export" else "run"))] if args[0] != "env" else []
    code = run_args([*args, *out, *CAPS.get(args[0], [])], monkeypatch)
    assert code in (0, 1, 2), (args, code)
    assert snapshot(mine) == before, args
    assert (work / "notes.txt").read_text() == "not a model"
    stray = {p.name for p in work.iterdir()} - {"mine", "notes.txt", "out", "runs"}
    assert not stray, (args, stray)


# ---- forged run folders: markers and model.json files anybody could have written ------------------------
VICTIM = "victim.txt"
NAMES = st.sampled_from(["pruned.pt", "plan.json", "model.json", "report.md", "checkpoints/last.pt", "model.onnx",
                         f"../{VICTIM}", "{abs}", "notes.txt", f"checkpoints/../../{VICTIM}", "", ".", "checkpoints",
                         "a", 42, None, ["pruned.pt"]])
FILE_LISTS = st.one_of(st.lists(NAMES, max_size=5), st.sampled_from(["abc", 7, None, {"pruned.pt": 1}]))
PLAUSIBLE = st.fixed_dictionaries({  # the real run's own list, with at most one forged name added
    "tool": st.just("catalyst-deploy"), "kind": st.just("prune"), "status": st.sampled_from(["running", "done", "failed"]),
    "files": st.lists(NAMES, max_size=1).map(lambda extra: ["{real}", *extra])})
MARKERS = st.one_of(
    PLAUSIBLE, PLAUSIBLE,
    st.fixed_dictionaries({"tool": st.sampled_from(["catalyst-deploy", "other"]),
                           "kind": st.sampled_from(["prune", "bench", "x", 5]),
                           "status": st.sampled_from(["running", "done", "failed", None, 3]),
                           "files": FILE_LISTS, "previous": FILE_LISTS,
                           "pid": st.sampled_from([1, 2 ** 22, -1, "x"]), "host": st.sampled_from(["vm", "elsewhere"])}),
    st.sampled_from(["not json", "[" * 100000, "[]", '"catalyst-deploy"']))
META = st.one_of(
    st.fixed_dictionaries({"input_shape": st.sampled_from([[1, 1, 28, 28], [1, 1, 100000, 100000], [1, 1, 28], "x",
                                                           [1, 1, -28, 28], [1.5, 1, 28, 28], None]),
                           "source_model": st.sampled_from(["os:abort", "tempfile:mkdtemp", "zoo:tiny_cnn", "zoo:TinyCNN",
                                                            "{abs}", "builtins:exit", 5]),
                           "num_classes": st.sampled_from([10, 0, 2 ** 40, "10"]), "channels": st.sampled_from([1, 0, None])}),
    st.sampled_from(["not json", "[" * 100000, "null"]))
COMMANDS = st.sampled_from([["prune", "zoo:tiny_cnn", "--out", "{run}", "--overwrite"],
                            ["prune", "zoo:tiny_cnn", "--out", "{run}", "--resume"],
                            ["bench", "{run}", "--min-runs", "2", "--min-time", "0"],
                            ["bench", "{run}", "--out", "{work}/b", "--min-runs", "2", "--min-time", "0"],
                            ["export", "{run}", "--format", "onnx", "--out", "{work}/x.onnx"]])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-run") / "run"
    args = ["prune", "zoo:tiny_cnn", "--data", "demo", "--out", str(out), *CAPS["prune"]]
    code = subprocess.run([sys.executable, "-m", "catalyst_deploy", *args], capture_output=True).returncode
    assert code == 0
    return out


def forge(work: Path, finished: Path, marker, meta, link_checkpoints: bool) -> Path:
    """A copy of a finished run with `marker` and `meta` written over its own, beside the user's files."""
    import json
    import shutil

    run = work / "run"
    shutil.copytree(finished, run)
    if isinstance(marker, dict) and isinstance(marker.get("files"), list) and "{real}" in marker["files"]:
        real = json.loads((finished / ".catalyst-deploy-run.json").read_text())["files"]
        marker = {**marker, "files": [*real, *marker["files"][1:]]}
    abs_victim = str(work / "abs" / VICTIM)
    fill = lambda value: json.dumps(value).replace("{abs}", abs_victim) if not isinstance(value, str) else value  # noqa: E731
    (run / ".catalyst-deploy-run.json").write_text(fill(marker))
    (run / "model.json").write_text(fill(meta))
    if link_checkpoints:
        (run / "checkpoints").symlink_to(work / "elsewhere")
    return run


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(marker=MARKERS, meta=META, command=COMMANDS, link_checkpoints=st.booleans())
def test_forged_run_folders_run_no_code_and_touch_nothing_outside(tmp_path_factory, monkeypatch, finished_run, marker,
                                                                  meta, command, link_checkpoints):
    import tempfile

    work = tmp_path_factory.mktemp("forged")
    for folder in ("abs", "elsewhere", "tmp"):
        (work / folder).mkdir()
    (work / VICTIM).write_text("the user's work")
    (work / "abs" / VICTIM).write_text("the user's other work")
    (work / "elsewhere" / "last.pt").write_text("where the link points")
    run = forge(work, finished_run, marker, meta, link_checkpoints)
    outside = {name: snapshot(work / name) for name in ("abs", "elsewhere", "tmp")}
    monkeypatch.setattr(tempfile, "tempdir", str(work / "tmp"))  # tempfile:mkdtemp would make a folder here
    monkeypatch.chdir(work)
    args = [a.replace("{run}", str(run)).replace("{work}", str(work)) for a in command]
    code = run_args([*args, *CAPS.get(args[0], []), "--data", "demo"] if args[0] == "prune" else args, monkeypatch)
    event(f"{' '.join(a for a in command if a.startswith('--') and a not in ('--min-runs', '--min-time'))}"
          f" {args[0]}: exit {code}")
    assert code in (0, 1, 2), (args, code)
    assert (work / VICTIM).read_text() == "the user's work"
    assert {name: snapshot(work / name) for name in ("abs", "elsewhere", "tmp")} == outside, args
