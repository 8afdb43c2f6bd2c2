"""What the CLI and Python users call: prune(), export(), bench(), env_report().

    from catalyst_deploy import api
    report = api.prune(api.PruneConfig(model="torchvision:resnet18", data="demo", target_flops="0.5"))
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from catalyst_deploy.config import PruneConfig, load_config  # noqa: F401 (re-exported for callers)
from catalyst_deploy.errors import UsageError

# ---- prune (core pipeline) ----------------------------------------------------------------------


def prune(cfg: PruneConfig, progress: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the whole pipeline of `cfg` and write its outputs to `cfg.out`; returns the report dict.

    Outputs (pruned.pt, pruned_state.pt, plan.json, report.json, report.md, bifurcation.png) are
    written to a staging folder and moved into place only when the run succeeds.
    Raises UsageError for bad input, CatalystDeployError when the job fails.
    """
    from catalyst_deploy.pipeline import PruneRun

    with staged_output(Path(cfg.out), cfg.overwrite) as stage:
        run = PruneRun(cfg, progress=progress, log=log)
        report = run.run(stage)
        report["out"] = str(cfg.out)
    return report


@contextmanager
def staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh folder beside `out` that replaces `out` on success and disappears on failure."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} already holds files: pass --overwrite or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)


# ---- export / bench / env -----------------------------------------------------------------------


def export(model, fmt: str, out: str | Path, *, input_shape: tuple[int, ...] | None = None, example=None,
           options=None, calib_data: str | None = None, calib_loader=None, plan: dict | None = None,
           trust_pickle: bool = False):
    """Export `model` to `fmt` (onnx, trt, torch; see `catalyst_deploy.exporters.EXPORTERS`) at `out`,
    checked against PyTorch on the same input. Returns an `ExportResult`.

    `model`: an nn.Module or a `models.load_model` spec ("runs/r18/pruned.pt", "torchvision:resnet18").
    `example` (an N,C,H,W tensor) or `input_shape` (N,C,H,W) gives the traced input. `options`: an
    `ExportOptions`. For int8 engines, `calib_data` (a dataset spec, see `data.load_dataset`) or
    `calib_loader` feeds the calibrator. `plan` (the surgery plan) is written beside a torch export.

        api.export("runs/r18/pruned.pt", "onnx", "runs/r18/model.onnx", input_shape=(1, 3, 224, 224))

    Raises UsageError (bad format/option/shape, missing file), MissingDependency, ExportValidationError.
    """
    from catalyst_deploy.exporters import ExportOptions, export_model

    kwargs = (options or ExportOptions()).for_format(fmt)
    if example is None and not input_shape:
        raise UsageError("the input shape is needed to trace the model: give it (CLI: --input-shape 1,3,224,224)")
    module = _module_of(model, trust_pickle)
    example = example if example is not None else _example_input(input_shape)
    if calib_data is not None:
        calib_loader = _calibration_loader(calib_data, tuple(example.shape))
    extras = {"calib_loader": calib_loader, "plan": plan}
    return export_model(module, fmt, out, example, **kwargs, **{k: v for k, v in extras.items() if v is not None})


def bench(pruned, baseline=None, options=None, out_dir: str | Path | None = None, progress=None):
    """Benchmark `pruned` against `baseline` (dense; optional) on each backend and batch, interleaved.

    Models: nn.Modules or files (.onnx, .engine, .pt). `options`: a `bench.harness.BenchOptions`. With
    `out_dir`, writes bench.json, bench.md and latency.png there. Returns the `BenchReport`; a backend
    that fails is reported in its rows. Raises UsageError for a missing file or an unknown backend.
    """
    from catalyst_deploy.bench.harness import BenchOptions, run_benchmark
    from catalyst_deploy.bench.report import write_report

    report = run_benchmark(pruned, baseline, options or BenchOptions(), progress=progress)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def env_report() -> dict:
    """Versions, CUDA devices, ONNX Runtime providers, and which exporters and benchmark backends are
    usable on this machine (with the reason when not)."""
    from catalyst_deploy.bench.environment import environment_report

    return environment_report()


def _module_of(model, trust_pickle: bool):
    if not isinstance(model, (str, Path)):
        return model
    from catalyst_deploy.models import load_model

    return load_model(str(model), trust_pickle=trust_pickle)


def _example_input(input_shape: tuple[int, ...]):
    from catalyst_deploy.exporters.validation import random_input

    if len(input_shape) < 2 or min(input_shape) < 1:
        raise UsageError(f"input shape must be N,C,... with positive sizes, got {','.join(map(str, input_shape))}")
    return random_input(input_shape)


def _calibration_loader(spec: str, example_shape: tuple[int, ...], batch_size: int = 16, batches: int = 16):
    """Batches of training images from dataset `spec`, sized and channelled like the example input."""
    from catalyst_deploy.data import load_dataset, make_loaders

    channels, size = example_shape[1], tuple(example_shape[2:4])
    splits = load_dataset(spec, image_size=size, channels=channels, train_limit=batch_size * batches)
    return make_loaders(splits, batch_size)[0]
