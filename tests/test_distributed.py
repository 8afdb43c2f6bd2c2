"""Multi-process runs (torchrun + DDP, gloo on this CPU machine) and the single-process behaviour they must keep.

The multi-process tests start real processes: torchrun itself (`python -m torch.distributed.run`), or two
processes with torchrun's environment set by hand, so that what ends every rank on a failure is this
package's doing and not torchrun's agent (which also kills the other workers when one fails).

The processes run the CLI through SHIM, a script in the test's folder (torchrun starts a script; the folder
is then on the path, so that `flaky:flaky` imports from it). `api.prune` itself claims the run folder on
rank 0 only (`distributed.claim_on_main`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from catalyst_deploy.run import distributed
from catalyst_deploy.errors import UsageError

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SHIM = """\
from catalyst_deploy.cli import main
main()
"""
# a TinyCNN that raises on one rank at one training step: FLAKY="RANK:STEP"
FLAKY = """\
import os
from catalyst_deploy.inputs.zoo import TinyCNN

class Flaky(TinyCNN):
    steps = 0

    def forward(self, x):
        if self.training and x.shape[0] > 2:  # a training batch (not the graph trace or the preflight)
            Flaky.steps += 1
            if os.environ.get("FLAKY") == f"{os.environ['RANK']}:{Flaky.steps}":
                raise RuntimeError(f"flaky model failed at training step {Flaky.steps}")
        return super().forward(x)

def flaky(in_channels=1, num_classes=10):
    return Flaky(in_channels, num_classes)
"""
TINY = {"data": "demo", "device": "cpu", "threads": 1, "train_limit": 1024, "test_limit": 256, "batch_size": 32,
        "steps_per_epoch": 8, "reg_epochs": 2, "recover_epochs": 1, "checkpoint_every": 4, "dist_timeout_s": 60}
HANG_LIMIT_S = 240  # a run still going after this long hangs: the harness kills it and the test fails


@pytest.fixture
def no_torchrun(monkeypatch):
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)


# ---- one process: exactly as before ----------------------------------------------------------------------
def test_without_torchrun_there_is_no_process_group_and_every_helper_is_the_identity(no_torchrun, tmp_path):
    device = distributed.init(torch.device("cpu"), 5.0)
    assert device == torch.device("cpu") and not torch.distributed.is_initialized()
    assert not distributed.active() and distributed.is_main()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    model = nn.Linear(2, 2)
    with distributed.ddp(model, device, sync_bn=True) as wrapped:
        assert wrapped is model  # no DDP, no SyncBatchNorm
    assert distributed.all_reduce_sum(3, 4) == (3, 4) and distributed.from_main(lambda: "x") == "x"
    distributed.check_identical("cut", {"mask": torch.ones(3, dtype=torch.bool)})  # nothing to compare with
    claimed = distributed.claim_on_main(lambda out, **kw: ("claimed", out, kw))("runs/x", resume=False)
    assert claimed == ("claimed", "runs/x", {"resume": False})


def test_torchrun_with_one_process_starts_no_process_group(monkeypatch):
    for var, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(var, value)
    assert distributed.init(torch.device("cpu"), 5.0) == torch.device("cpu")
    assert not torch.distributed.is_initialized() and distributed.is_main()


def test_a_rank_outside_the_world_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UsageError, match="RANK 2 does not fit WORLD_SIZE 2"):
        distributed.init(torch.device("cpu"), 5.0)


def test_ranks_other_than_0_get_a_folder_that_refuses_writes(tmp_path):
    folder = distributed.ReadOnlyFolder(tmp_path / "run")
    with pytest.raises(RuntimeError, match="only rank 0 writes"):
        folder.write_text("plan.json", "{}")
    folder.finish()
    folder.fail(remove_written=False)
    assert folder.file("plan.json") == tmp_path / "run" / "plan.json" and not (tmp_path / "run").exists()


def test_resume_refuses_a_checkpoint_of_another_number_of_processes(tmp_path):
    from catalyst_deploy.run.checkpoint import Checkpointer
    from catalyst_deploy.run.rundir import claim_run_folder

    folder = claim_run_folder(tmp_path / "run")
    config = {"model": "zoo:tiny_cnn", "batch_size": 32}
    from catalyst_deploy.inputs.zoo import tiny_cnn
    from catalyst_deploy.run.train import PhaseState

    payload = {"phase": "regularize", "state": PhaseState(step=0, optimizer=None), "model": tiny_cnn().state_dict(),
               "report": {}, "method": {}}  # what a run saves (a bare {"phase": ...} is refused as not this tool's)
    Checkpointer(folder, config, world_size=2).save(payload)
    assert Checkpointer(folder, config, world_size=2).load()["world_size"] == 2
    with pytest.raises(UsageError, match=r"made by 2 process\(es\) and this one has 1: resume with 2"):
        Checkpointer(folder, config, world_size=1).load()


def test_sync_batchnorm_keeps_catalysts_gates_and_is_undone():
    from catalyst_deploy.surgery.graph import ChannelGraph
    from catalyst_deploy.methods.gates import attach_gates
    from catalyst_deploy.inputs.zoo import tiny_cnn

    torch.manual_seed(0)
    model, x = tiny_cnn(), torch.randn(4, 1, 28, 28)
    gates = attach_gates(ChannelGraph(model, x[:1]), "cpu")
    with torch.no_grad():
        gates.s.uniform_(0.2, 1.0)
    expected = model.train()(x)
    classes = [type(m) for m in model.modules()]
    swapped = distributed.sync_batchnorm(model)
    assert len(swapped) == 3 and all(isinstance(m, nn.SyncBatchNorm) for m, _ in swapped)
    out = model(x)  # no process group: SyncBatchNorm computes what BatchNorm does
    out.sum().backward()
    assert torch.allclose(out, expected, atol=1e-6) and gates.s.grad is not None and gates.s.grad.abs().sum() > 0
    distributed.restore_batchnorm(swapped)
    assert [type(m) for m in model.modules()] == classes
    assert all(not isinstance(m, nn.SyncBatchNorm) and hasattr(m, "parametrizations") for m, _ in swapped)


# ---- several processes --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], nprocs: int, cwd: Path, env: dict | None = None) -> list[dict]:
    """Start `nprocs` processes of `python ARGS` with torchrun's environment set by hand (no agent watching
    them); returns per rank: rc, out, err, seconds. Kills them all and fails the test on a hang."""
    port, start, procs = free_port(), time.perf_counter(), []
    for rank in range(nprocs):
        rank_env = {**os.environ, **(env or {}), "WORLD_SIZE": str(nprocs), "RANK": str(rank), "LOCAL_RANK": str(rank),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": str(cwd)}
        procs.append(subprocess.Popen([sys.executable, *args], cwd=cwd, env=rank_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, HANG_LIMIT_S - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"a rank still runs after {HANG_LIMIT_S} s: it hangs")
        results.append({"rc": proc.returncode, "out": out, "err": err, "seconds": time.perf_counter() - start})
    return results


def write_recipe(path: Path, **settings) -> Path:
    path.write_text("\n".join(f"{key}: {json.dumps(value)}" for key, value in settings.items()) + "\n")
    return path


def prune_args(tmp_path: Path, model: str, out: str, recipe: Path, *extra: str) -> list[str]:
    (tmp_path / "shim.py").write_text(SHIM)
    return [str(tmp_path / "shim.py"), "prune", model, "--recipe", str(recipe), "--out", str(tmp_path / out), *extra]


DDP_WORKER = """\
import sys, torch
from torch import nn
from torch.utils.data import TensorDataset
from catalyst_deploy.run import distributed
from catalyst_deploy.inputs.data import DataSplits, make_loaders
from catalyst_deploy.run.train import PhaseSettings, evaluate, train_phase

torch.set_num_threads(1)
device = distributed.init(torch.device("cpu"), 60.0)
batch = int(sys.argv[1])
gen = torch.Generator().manual_seed(0)
x, y = torch.randn(96, 1, 8, 8, generator=gen), torch.randint(0, 3, (96,), generator=gen)
data = TensorDataset(x, y)
train, test = make_loaders(DataSplits(data, data, None), batch, rank=distributed.rank(),
                           world_size=distributed.world_size())
torch.manual_seed(1)
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))  # no BatchNorm: exact
with distributed.ddp(model, device) as wrapped:
    stats = train_phase(wrapped, train, device, PhaseSettings(6, 0.1), label="t")
acc = evaluate(model, distributed.shard_eval_loader(test), device)
name = f"rank{distributed.rank()}-of-{distributed.world_size()}.pt"
torch.save({"state": model.state_dict(), "acc": acc, "steps": stats.steps}, name)
"""


@pytest.mark.slow
def test_two_ranks_take_the_steps_one_process_takes_on_the_global_batch(tmp_path):
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    one = launch(["worker.py", "16"], 1, tmp_path)  # WORLD_SIZE=1: a plain single process
    two = launch(["worker.py", "8"], 2, tmp_path)  # per-rank batch 8 x 2 ranks = the global batch 16
    assert [r["rc"] for r in one + two] == [0, 0, 0], [r["err"][-2000:] for r in one + two]
    ref, rank0, rank1 = (torch.load(tmp_path / name) for name in ("rank0-of-1.pt", "rank0-of-2.pt", "rank1-of-2.pt"))
    assert ref["steps"] == rank0["steps"] == rank1["steps"] == 6
    for key, value in ref["state"].items():
        assert torch.equal(rank0["state"][key], rank1["state"][key])  # the ranks hold the same model
        assert torch.allclose(rank0["state"][key], value, atol=1e-5), key  # the one process's, up to rounding
    assert rank0["acc"] == rank1["acc"] == ref["acc"]  # each rank evaluated its half; the counts were summed


@pytest.mark.slow
def test_torchrun_with_two_processes_prunes_like_one_process_on_the_same_global_batch(tmp_path):
    # a pretrained model, a mild cut and a gentle learning rate: the plan must be identical, and the accuracy
    # only differs by what DDP on CPU cannot remove (each rank's BatchNorm sees half the batch; SyncBatchNorm is
    # GPU-only in PyTorch); at lr 0.005 that noise reached 0.5 pt on the 1,000 test images in one run
    settings = {"data": "demo", "device": "cpu", "threads": 1, "train_limit": 2048, "steps_per_epoch": 16,
                "reg_epochs": 1, "recover_epochs": 2, "lr": 0.001, "method": "l1", "target_flops": "0.7"}
    one = write_recipe(tmp_path / "one.yaml", **settings, batch_size=64)
    two = write_recipe(tmp_path / "two.yaml", **settings, batch_size=32)
    single = subprocess.run([sys.executable, *prune_args(tmp_path, "zoo:fashion_small_resnet", "one", one, "--json")],
                            check=False, cwd=tmp_path, capture_output=True, text=True, timeout=HANG_LIMIT_S,
                            env={k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS})
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(free_port()), "--log-dir", str(tmp_path / "logs"), "--redirects", "3"]
    run = subprocess.run([*torchrun, *prune_args(tmp_path, "zoo:fashion_small_resnet", "two", two, "--json")],
                         check=False, cwd=tmp_path, capture_output=True, text=True, timeout=HANG_LIMIT_S)
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stdout.log")}
    errors = [p.read_text()[-2000:] for p in (tmp_path / "logs").rglob("stderr.log")]
    assert run.returncode == 0, (run.stderr[-2000:], errors)
    reports = [json.loads(logs[rank]) for rank in ("0", "1")]
    assert reports[0]["accuracy"] == reports[1]["accuracy"]  # every rank computed the same numbers
    assert reports[0]["channels"]["pruned"] == reports[1]["channels"]["pruned"]
    assert (tmp_path / "one" / "plan.json").read_text() == (tmp_path / "two" / "plan.json").read_text()
    ref = json.loads((tmp_path / "one" / "report.json").read_text())
    written = json.loads((tmp_path / "two" / "report.json").read_text())
    assert written["steps"] == ref["steps"]
    assert abs(written["accuracy"]["final"] - ref["accuracy"]["final"]) <= 0.3, (written["accuracy"], ref["accuracy"])


@pytest.mark.slow
def test_ranks_whose_decisions_differ_all_stop_at_the_check(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml", **TINY)
    ranks = launch(prune_args(tmp_path, "zoo:tiny_cnn", "run", recipe), 2, tmp_path,
                   env={distributed.PERTURB_ENV: "1:mask"})  # rank 1's prune mask altered before its checks
    for rank in ranks:
        assert rank["rc"] == 1 and rank["seconds"] < TINY["dist_timeout_s"], rank["err"][-2000:]
        assert "error: the ranks disagree at the freeze on mask: rank(s) 1 differ from rank 0" in rank["err"]
    assert not (tmp_path / "run" / "plan.json").exists()


@pytest.mark.slow
def test_a_failing_rank_ends_every_rank_and_the_run_resumes_only_with_the_same_number_of_processes(tmp_path):
    (tmp_path / "flaky.py").write_text(FLAKY)
    # 32 regularized steps of 8 a pass: with a window of two passes Catalyst freezes at step 16, so step 10 is in it
    args = prune_args(tmp_path, "flaky:flaky", "run", write_recipe(tmp_path / "tiny.yaml", **{
        **TINY, "reg_epochs": 4, "catalyst": {"window_epochs": 2}}))
    failed = launch(args, 2, tmp_path, env={"FLAKY": "1:10"})  # rank 1 raises at its 10th training step
    for rank in failed:  # both stop, well before the collective timeout
        assert rank["rc"] == 1 and rank["seconds"] < TINY["dist_timeout_s"], rank["err"][-2000:]
    assert "RuntimeError: flaky model failed at training step 10" in failed[1]["err"]
    assert "error: stopped because rank 1: RuntimeError: flaky model failed at training step 10" in failed[0]["err"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()  # rank 0's, from step 8

    alone = launch([*args, "--resume"], 1, tmp_path)
    assert alone[0]["rc"] == 2 and "made by 2 process(es) and this one has 1" in alone[0]["err"]
    resumed = launch([*args, "--resume"], 2, tmp_path)
    assert [r["rc"] for r in resumed] == [0, 0], [r["err"][-2000:] for r in resumed]
    assert "resuming at regularize step 8" in resumed[0]["out"] and "resuming" not in resumed[1]["out"]  # rank 0 logs
    assert (tmp_path / "run" / "plan.json").is_file() and not (tmp_path / "run" / "checkpoints").exists()
