"""The tool deletes only what it created: each data-loss case of the reliability issue, on real folders
with files in them, checked before and after."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catalyst_deploy import api
from catalyst_deploy.errors import UsageError
from catalyst_deploy.run.rundir import MARKER, claim_run_folder, next_free_folder
from catalyst_deploy.inputs.zoo import tiny_cnn

CLI = [sys.executable, "-m", "catalyst_deploy.cli"]
TINY = dict(data="demo", train_limit=256, test_limit=128, batch_size=64, steps_per_epoch=2, reg_epochs=1,
            recover_epochs=1, device="cpu", model="zoo:tiny_cnn")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_prune(out: Path, **extra) -> dict:
    return api.prune(api.load_config(out=str(out), **{**TINY, **extra}), log=lambda _m: None)


def test_demo_never_empties_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep").write_text("x")
    before = snapshot(out)
    result = run_cli("demo", "--out", str(out), "--steps-per-epoch", "1")
    assert result.returncode == 2 and "did not write" in result.stderr
    assert snapshot(out) == before


def test_demo_without_out_takes_the_next_free_folder(tmp_path):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "notes.txt").write_text("mine")
    assert next_free_folder(tmp_path / "runs" / "demo") == tmp_path / "runs" / "demo-2"
    (tmp_path / "runs" / "demo-2").mkdir()
    assert next_free_folder(tmp_path / "runs" / "demo") == tmp_path / "runs" / "demo-3"


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_out_dot_in_a_project_folder_is_refused(tmp_path, flag):
    (tmp_path / "train.py").write_text("print('my work')")
    before = snapshot(tmp_path)
    result = run_cli("prune", "zoo:tiny_cnn", "--data", "demo", "--out", ".", *flag, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert snapshot(tmp_path) == before


def test_overwrite_never_deletes_the_input_model(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    torch.save(tiny_cnn(), folder / "model.pt")
    before = snapshot(folder)
    result = run_cli("prune", str(folder / "model.pt"), "--data", "demo", "--out", str(folder), "--overwrite")
    assert result.returncode == 2 and "input" in result.stderr
    assert snapshot(folder) == before


def test_out_inside_the_data_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(UsageError, match="inside the input"):
        claim_run_folder(data / "runs", inputs=[data])
    assert list(data.iterdir()) == []


def test_overwrite_replaces_only_an_earlier_run_and_only_its_files(tmp_path):
    out = tmp_path / "run"
    tiny_prune(out)
    first = snapshot(out)
    assert MARKER in first and "pruned.pt" in first
    with pytest.raises(UsageError, match="--overwrite"):
        tiny_prune(out)
    assert snapshot(out) == first
    (out / "my-notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="my-notes.txt"):
        tiny_prune(out, overwrite=True)
    assert (out / "my-notes.txt").read_text() == "mine"
    (out / "my-notes.txt").unlink()
    tiny_prune(out, overwrite=True, seed=1)
    assert set(snapshot(out)) == set(first)


def test_a_failed_run_removes_what_it_wrote_and_only_that(tmp_path):
    out = tmp_path / "empty-but-mine"
    out.mkdir()
    with pytest.raises(Exception, match="cannot be reached"):
        tiny_prune(out, target_flops="0.001")
    assert out.is_dir() and list(out.iterdir()) == []  # the folder existed before: it stays, empty
    new = tmp_path / "new"
    with pytest.raises(Exception, match="cannot be reached"):
        tiny_prune(new, target_flops="0.001")
    assert not new.exists()  # made by the run, removed with it


def test_export_refuses_its_own_input_and_existing_files(tmp_path):
    model = tmp_path / "m.pt"
    torch.save(tiny_cnn(), model)
    before = model.read_bytes()
    result = run_cli("export", str(model), "--format", "onnx", "--out", str(model), "--input-shape", "1,1,28,28")
    assert result.returncode == 2 and "input" in result.stderr
    assert model.read_bytes() == before
    other = tmp_path / "other.onnx"
    other.write_text("somebody's file")
    result = run_cli("export", str(model), "--format", "onnx", "--out", str(other), "--input-shape", "1,1,28,28")
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert other.read_text() == "somebody's file"
    result = run_cli("export", str(model), "--format", "onnx", "--out", str(other), "--input-shape", "1,1,28,28",
                     "--overwrite")
    assert result.returncode == 0, result.stderr
    assert other.read_bytes()[:2] != b"so"
