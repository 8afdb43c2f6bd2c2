"""Property-based fuzz of the CLI surface: any combination of flags and values, valid or not, for every
command gives exit code 0, 1 or 2 through the one error boundary (`cli.main`), never an uncaught
exception, and never touches a file outside --out (a folder of the user's beside it stays byte-identical).

Runs in-process (the boundary is the same code the console script runs), with training capped so that a
valid combination finishes in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
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


def run(args: list[str], monkeypatch) -> int:
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
    code = run([*args, *out, *CAPS.get(args[0], [])], monkeypatch)
    assert code in (0, 1, 2), (args, code)
    assert snapshot(mine) == before, args
    assert (work / "notes.txt").read_text() == "not a model"
    stray = {p.name for p in work.iterdir()} - {"mine", "notes.txt", "out", "runs"}
    assert not stray, (args, stray)
