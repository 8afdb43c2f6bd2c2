"""Core-pipeline numbers (issue 2), each measured in one run on this machine:

1. `catalyst-deploy demo`: wall time, dense vs pruned accuracy.
2. Full Fashion-MNIST, small ResNet, --target-flops 0.5: accuracy dense / after regularization /
   right after surgery / after recovery (the cut must be lossless).
3. Catalyst update overhead per training step: resnet50, batch 8, CPU.

    python benchmarks/pipeline.py [--only demo,fashion,overhead] [--dense-epochs 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_file import git_commit, machine_line, write_section  # noqa: E402

FASHION = HERE.parent.parent / "shared" / "data" / "fashion-mnist"
CACHE = HERE / "cache"


def bench_demo() -> str:
    out = Path(tempfile.mkdtemp()) / "demo"
    start = time.perf_counter()
    subprocess.run(["catalyst-deploy", "demo", "--out", str(out), "--json"], check=True, capture_output=True)
    wall = time.perf_counter() - start
    r = json.loads((out / "report.json").read_text())
    a = r["accuracy"]
    return "\n".join([
        "### `catalyst-deploy demo`", "",
        f"Wall time {wall:.0f} s (target: under 5 minutes). {r['config']['model']} on the bundled subset, "
        f"{r['config']['pretrain_epochs']} dense epochs from scratch, then Catalyst to --target-flops 0.5.", "",
        "| dense | after regularization | right after surgery | after recovery | MACs ratio | phases (s) |",
        "|---|---|---|---|---|---|",
        f"| {a['dense']:.2f} | {a['after_regularization']:.2f} | {a['after_surgery']:.2f} | {a['final']:.2f} "
        f"| {r['macs']['ratio']:.3f} | {', '.join(f'{k} {v:.0f}' for k, v in r['seconds'].items())} |",
    ])


def dense_fashion_model(epochs: int, seed: int = 0) -> Path:
    """Train (once, cached) small_resnet on full Fashion-MNIST."""
    from catalyst_deploy.data import load_dataset, make_loaders
    from catalyst_deploy.models import save_model
    from catalyst_deploy.train import PhaseSettings, evaluate, train_phase
    from catalyst_deploy.zoo import small_resnet

    path = CACHE / f"pipeline_small_resnet_fmnist_e{epochs}_s{seed}.pt"
    if path.exists():
        return path
    torch.manual_seed(seed)
    train, test = make_loaders(load_dataset(f"fashion-mnist:{FASHION}"), 128, seed=seed)
    model = small_resnet()
    train_phase(model, train, torch.device("cpu"), PhaseSettings(epochs, 0.1, weight_decay=5e-4), label="dense")
    print(f"dense accuracy {evaluate(model, test, torch.device('cpu')):.2f}%", flush=True)
    return save_model(model.eval(), path)


def bench_fashion(dense_epochs: int) -> str:
    from catalyst_deploy import api

    model = dense_fashion_model(dense_epochs)
    out = Path(tempfile.mkdtemp()) / "fashion"
    cfg = api.load_config("fashion-mnist", model=str(model), data=f"fashion-mnist:{FASHION}", out=str(out))
    r = api.prune(cfg, log=lambda m: print(m, flush=True))
    a, c = r["accuracy"], r["catalyst"]
    drop = a["after_regularization"] - a["after_surgery"]
    return "\n".join([
        "### Full Fashion-MNIST, small ResNet (3 stages, residual adds), `--target-flops 0.5`, Catalyst", "",
        f"Dense model: `small_resnet()` trained {dense_epochs} epochs (SGD 0.1, cosine). Then recipe "
        f"`fashion-mnist`: {cfg.reg_epochs:g} regularized + {cfg.recover_epochs:g} recovery epochs, lr {cfg.lr}.", "",
        "| dense | after regularization | right after surgery | after recovery | cut drop (pt) | MACs ratio | params ratio |",
        "|---|---|---|---|---|---|---|",
        f"| {a['dense']:.2f} | {a['after_regularization']:.2f} | {a['after_surgery']:.2f} | {a['final']:.2f} "
        f"| {drop:.2f} | {r['macs']['ratio']:.3f} | {r['params']['ratio']:.3f} |", "",
        f"Prune set frozen at step {c['frozen_at_step']} (forced by the deadline: {c['freeze_forced']}), "
        f"{c['frozen']} channels, exactly zero at the cut: {c['frozen_at_zero']}; bifurcation margin "
        f"{r['bifurcation_margin']:.1f} (log c, ±50 = clipped F = 0 / d = 0). Phase times (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + ".",
    ])


def bench_overhead(steps: int = 6) -> str:
    """Catalyst update time vs a plain SGD step on resnet50, batch 8, 224x224, CPU, interleaved."""
    import torchvision

    from catalyst_deploy.catalyst import CatalystRegularizer
    from catalyst_deploy.surgery import ChannelGraph

    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=1000)
    x, y = torch.randn(8, 3, 224, 224), torch.randint(0, 1000, (8,))
    reg = CatalystRegularizer(lam=1.0)
    reg.start(ChannelGraph(model, x[:1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step_t, upd_t = [], []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        reg.after_step(0.01)
        t2 = time.perf_counter()
        if i:  # first step warms up
            step_t.append(t1 - t0)
            upd_t.append(t2 - t1)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    share = med(upd_t) / med(step_t)
    return "\n".join([
        "### Catalyst update overhead (resnet50, batch 8, 224x224, CPU, fp32)", "",
        f"{reg.graph.num_channels} regularized channels in {len(reg.graph.groups)} groups, "
        f"{len(reg.slices)} parameter slices. Median of {steps} steps, same process.", "",
        "| training step (fwd+bwd+SGD) | Catalyst update | share |", "|---|---|---|",
        f"| {1e3 * med(step_t):.0f} ms | {1e3 * med(upd_t):.1f} ms | **{100 * share:.2f}%** (target < 5%) |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="demo,fashion,overhead")
    ap.add_argument("--dense-epochs", type=int, default=12)
    args = ap.parse_args()
    start, header = time.perf_counter(), machine_line()
    parts = []
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        part = {"demo": bench_demo, "overhead": bench_overhead,
                "fashion": lambda: bench_fashion(args.dense_epochs)}[name]()
        print(part, flush=True)
        parts.append(part)
    body = "\n\n".join([
        "## Core pipeline (`benchmarks/pipeline.py`)",
        f"Command: `python benchmarks/pipeline.py --only {args.only}"
        + (f" --dense-epochs {args.dense_epochs}" if "fashion" in args.only else "") + "`; "
        f"{date.today()}, commit {git_commit()}; machine: {header}; "
        f"total {time.perf_counter() - start:.0f} s.", *parts])
    write_section(f"pipeline-{args.only.replace(',', '-')}", body)


if __name__ == "__main__":
    main()
