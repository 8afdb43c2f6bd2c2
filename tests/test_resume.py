"""Killed and interrupted runs continue where they stopped: kill -9 then --resume gives the same plan and
accuracy as an uninterrupted run (CPU training here is deterministic); SIGINT saves a checkpoint and says
how to continue; a changed setting is refused with the keys named."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["prune", "zoo:small_resnet", "--data", "demo", "--steps-per-epoch", "25", "--reg-epochs", "2",
        "--recover-epochs", "2", "--checkpoint-every", "5", "--threads", "1", "--batch-size", "32", "--json"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "catalyst_deploy", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, after_steps: int, timeout: float = 300,
                        phases: tuple[str, ...] = ("pretrain", "regularize", "recover", "trained")) -> None:
    """Until the run has saved a checkpoint past `after_steps` optimizer steps of one of `phases`."""
    import torch

    deadline = time.time() + timeout
    path = out / "checkpoints" / "last.pt"
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if state["phase"] in phases and state["state"]["step"] >= after_steps:
                    return
            except Exception:  # caught mid-replace: try again
                pass
        time.sleep(0.2)
    raise AssertionError("no checkpoint in time")


def interrupt(out: Path, sig: int, after_steps: int, *phases: str) -> subprocess.Popen:
    """Start a run into `out` and send it `sig` once it has checkpointed past `after_steps` steps (of one of
    `phases`, when given)."""
    proc = start(out)
    wait_for_checkpoint(out, proc, after_steps, **({"phases": phases} if phases else {}))
    proc.send_signal(sig)
    return proc


def resume(out: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalyst_deploy", *ARGS, "--out", str(out), "--resume", *extra],
                          capture_output=True, text=True, timeout=timeout)


def finished(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "plan.json").read_text()), json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("resume") / "whole"
    proc = start(out)
    assert proc.wait(timeout=600) == 0, proc.communicate()
    return finished(out)


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_plan_and_accuracy(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    interrupt(out, signal.SIGKILL, after_steps=10).wait(timeout=60)
    assert not (out / "pruned.pt").exists()
    again = resume(out)
    assert again.returncode == 0, again.stderr[-3000:]
    plan, report = finished(out)
    whole_plan, whole_report = uninterrupted
    assert plan["layers"] == whole_plan["layers"]
    assert report["accuracy"] == whole_report["accuracy"]
    assert report["steps"] == whole_report["steps"]
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_says_how_to_resume(tmp_path, uninterrupted):
    out = tmp_path / "interrupted"
    proc = interrupt(out, signal.SIGINT, after_steps=5)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert (out / "checkpoints" / "last.pt").is_file()
    again = resume(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert finished(out)[0]["layers"] == uninterrupted[0]["layers"]


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_with_the_keys_named(tmp_path):
    out = tmp_path / "changed"
    interrupt(out, signal.SIGKILL, after_steps=5).wait(timeout=60)
    result = resume(out, "--lr", "0.05", timeout=300)
    assert result.returncode == 2 and "lr" in result.stderr and "other settings" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stop_during_recovery_then_resume_gives_the_same_plan_and_accuracy(tmp_path, uninterrupted, sig):
    """After the cut the checkpoints carry the mask, so the pruned model is rebuilt and continued (it was
    KeyError 'mask', after the run had said how to resume)."""
    out = tmp_path / "recovering"
    proc = interrupt(out, sig, 5, "recover")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else -9), err[-2000:]
    again = resume(out)
    assert again.returncode == 0, again.stderr[-3000:]
    plan, report = finished(out)
    assert plan["layers"] == uninterrupted[0]["layers"]
    assert report["accuracy"] == uninterrupted[1]["accuracy"] and report["steps"] == uninterrupted[1]["steps"]


def test_a_checkpoint_is_restored_once_into_the_model_the_method_and_the_rng():
    import torch
    from torch import nn

    from catalyst_deploy.run.checkpoint import rng_state
    from catalyst_deploy.run.resume import Resume
    from catalyst_deploy.run.train import PhaseState

    class Method:
        state = None

        def load_state_dict(self, state):
            self.state = state

    model, method = nn.Linear(3, 2), Method()
    weights = {k: v + 1 for k, v in model.state_dict().items()}
    rng = rng_state()
    expected = torch.rand(4)
    resume = Resume({"phase": "regularize", "state": PhaseState(7, {"momentum": 1}), "model": weights,
                     "method": {"delta": torch.ones(2)}, "rng": rng, "report": {}})
    assert (resume.phase, resume.state.step) == ("regularize", 7)
    assert resume.restore(model, method) == PhaseState(7, {"momentum": 1})
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert torch.equal(method.state["delta"], torch.ones(2)) and torch.equal(torch.rand(4), expected)
    with pytest.raises(RuntimeError, match="restored once"):
        resume.restore(model, method)


PAYLOAD = """
import os, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"phase": "regularize", "state": Payload()}, sys.argv[1])
"""


@pytest.mark.slow
def test_a_crafted_checkpoint_runs_no_code_and_a_failed_resume_deletes_nothing(tmp_path):
    import torch

    out, marker = tmp_path / "crafted", tmp_path / "payload-ran"
    interrupt(out, signal.SIGKILL, 5).wait(timeout=60)
    crafted = tmp_path / "crafted.pt"
    subprocess.run([sys.executable, "-c", PAYLOAD, str(crafted), str(marker)], check=True)
    torch.load(crafted, weights_only=False)  # the payload is real: a full unpickle runs it
    assert marker.exists()
    marker.unlink()
    (out / "checkpoints" / "last.pt").write_bytes(crafted.read_bytes())
    # the tool's own bookkeeping (its marker, and the lock the killed run left) may change; nothing else
    own = {".catalyst-deploy-run.json", ".catalyst-deploy-run.lock"}
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in own}
    result = resume(out, timeout=300)
    assert result.returncode == 2 and "--resume" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not marker.exists()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in own} == before


@pytest.mark.parametrize("phase, missing", [("recover", "no prune mask"), ("trained", "no prune mask"),
                                            ("regularize", "no method state")])
def test_a_checkpoint_without_what_its_phase_needs_is_refused_in_one_line(tmp_path, phase, missing):
    from catalyst_deploy.errors import UsageError
    from catalyst_deploy.inputs.zoo import tiny_cnn
    from catalyst_deploy.run.checkpoint import Checkpointer
    from catalyst_deploy.run.rundir import claim_run_folder
    from catalyst_deploy.run.train import PhaseState

    folder = claim_run_folder(tmp_path / "run")
    config = {"model": "zoo:tiny_cnn"}
    payload = {"phase": phase, "state": PhaseState(step=0, optimizer=None), "model": tiny_cnn().state_dict(),
               "report": {}}  # what save writes, less the cut's mask / the method's state its phase needs
    Checkpointer(folder, config).save(payload)
    with pytest.raises(UsageError, match=f"not a checkpoint this tool wrote \\({missing}"):
        Checkpointer(folder, config).load()
