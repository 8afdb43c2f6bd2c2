"""What the task alone tells the paper form's catalyst, by the sign of its forward-pass term.

    python benchmarks/catalyst_signal.py --cache /work/cache              # 600 steps, every sign
    python benchmarks/catalyst_signal.py --cache /work/cache --steps 200 --write

From seed 0's narrow dense model (compare.py's long budget; its single-channel ablation losses are cached beside
it), the catalyst is attached (c = 1 for every channel) and the model trains for --steps optimizer steps of the
fashion-mnist recipe (lr 0.02, momentum 0.9, batch 128) with the penalty switched off: no proximal step, no
pressure, so only the task moves F and delta. Per channel it sums the change of log delta, log ||F|| and
log c = log delta - log ||F|| that the optimizer steps made, and gives the Spearman correlation of each with
the channel's ablation loss (negative: the channels whose removal costs least rise towards the prune side).

The question it answers (docs/method.md, "What the task tells the catalyst"): with the term's `plus` sign and
the preconditioned step, the first-order task push moves log delta and log ||F|| by the same amount, so it
cancels in c, and what is left is the growth of ||F|| from the gradient's component across F (second order,
larger where the loss is sensitive); with `minus` the first-order push moves c twice, and on a converged model
that push is mostly minibatch noise. Writes the `catalyst-signal` section of RESULTS.md with --write.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import machine_line, publish  # noqa: E402
from catalyst_deploy.methods.catalyst import LITERAL  # noqa: E402

SIGNS = ("plus", "minus", "none")


def spearman(a, b) -> float:
    from compare_runs import rank_correlation

    return rank_correlation([float(x) for x in a], [float(x) for x in b])


class Recorder:
    """Training-loop hooks: log delta and log ||F|| before and after each optimizer step (the task's change),
    and nothing of the penalty (its step is not taken)."""

    def __init__(self, method):
        self.method, self.before = method, None
        self.d_delta = self.d_norm = 0.0

    def logs(self):
        import torch

        with torch.no_grad():
            return self.method.delta.detach().abs().log(), self.method.F.norms().log()

    def before_step(self) -> None:
        self.method.before_step()  # the preconditioning of the task gradients, as in a run
        self.before = self.logs()

    def after_step(self, lr: float, step: int) -> None:
        log_delta, log_norm = self.logs()
        self.d_delta = self.d_delta + (log_delta - self.before[0])
        self.d_norm = self.d_norm + (log_norm - self.before[1])

    def status(self) -> dict:
        return {}

    def done(self) -> bool:
        return False


def measure(args, sign: str, dense, ablation) -> dict:
    import torch

    from catalyst_deploy.api import load_config
    from catalyst_deploy.inputs.data import load_dataset, make_loaders
    from catalyst_deploy.inputs.models import load_model
    from catalyst_deploy.methods import make_method
    from catalyst_deploy.run.train import PhaseSettings, train_phase
    from catalyst_deploy.surgery.allocation import Budget
    from catalyst_deploy.surgery.graph import ChannelGraph
    from catalyst_deploy.surgery.macs import count_macs

    cfg = load_config("fashion-mnist", model=str(dense.path), method="catalyst",
                      catalyst={**LITERAL, "bypass": sign})
    torch.manual_seed(0)
    model = load_model(str(dense.path))
    example = torch.zeros(1, 1, 28, 28)
    graph = ChannelGraph(model, example)
    budget = Budget(tuple(graph.sizes), graph.trial_macs, 0.3 * count_macs(model, example)[0])
    method = make_method(cfg)
    method.start(graph, budget, args.steps)
    splits = load_dataset(args.data, val_size=5000)
    train, _ = make_loaders(splits, cfg.batch_size, seed=0)
    recorder = Recorder(method)
    start = time.perf_counter()
    train_phase(model, train, torch.device("cpu"), PhaseSettings(args.steps, cfg.lr, schedule="constant"),
                label=f"signal {sign}", hooks=recorder, overrides=method.param_overrides())
    d_c = recorder.d_delta - recorder.d_norm
    return {"sign": sign, "steps": args.steps, "seconds": round(time.perf_counter() - start, 1),
            "corr_log_c": spearman(d_c, ablation), "corr_log_delta": spearman(recorder.d_delta, ablation),
            "corr_log_norm": spearman(recorder.d_norm, ablation),
            "mean_abs_d_log_c": float(d_c.abs().mean()), "mean_d_log_c": float(d_c.mean()),
            "mean_d_log_norm": float(recorder.d_norm.mean())}


def section(rows: list[dict], dense) -> str:
    lines = ["## What the task alone tells the paper form's catalyst (`benchmarks/catalyst_signal.py`)", "",
             f"Machine: {machine_line()} (single-thread, beside other work). Seed 0's narrow dense model "
             f"({dense.accuracy:.2f}%), catalyst attached at c = 1, the task's optimizer steps only (no proximal step, "
             "no pressure), constant lr 0.02, batch 128. Correlations are Spearman, with each channel's "
             "single-channel ablation loss on the dense model (negative: the channels whose removal costs least "
             "move towards the prune side).", "",
             "| term | steps | corr. of the change of log c | of log delta | of log norm F | mean change of log c | "
             "mean abs. change of log c | mean change of log norm F |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sign']} | {r['steps']} | {r['corr_log_c']} | {r['corr_log_delta']} | "
                     f"{r['corr_log_norm']} | {r['mean_d_log_c']:.2e} | {r['mean_abs_d_log_c']:.2e} | "
                     f"{r['mean_d_log_norm']:.2e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    from compare import DATA, MODELS
    from compare_dense import dense_models

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--signs", nargs="+", default=list(SIGNS), choices=SIGNS)
    p.add_argument("--data", default=DATA)
    p.add_argument("--write", action="store_true", help="write the section into RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = SimpleNamespace(latency_aware=False, quick=False, data=args.data, cache=args.cache, threads=1, seeds=[0])
    dense = dense_models(cfg, MODELS["narrow"])[0]
    ablation = dense.ablation(cfg)
    rows = []
    for sign in args.signs:
        rows.append(measure(args, sign, dense, ablation))
        print(rows[-1], flush=True)
    publish("catalyst-signal", section(rows, dense), write=args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
