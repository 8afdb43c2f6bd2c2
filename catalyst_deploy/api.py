"""What the CLI and Python users call: prune(), export(), bench(), env_report().

    from catalyst_deploy import api
    report = api.prune(api.PruneConfig(model="torchvision:resnet18", data="demo", target_flops="0.5"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from catalyst_deploy.config import PruneConfig, load_config  # noqa: F401 (re-exported for callers)
from catalyst_deploy.errors import UsageError

# ---- prune (core pipeline) ----------------------------------------------------------------------


def prune(cfg: PruneConfig, progress: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the whole pipeline of `cfg` and write its outputs to `cfg.out`; returns the report dict.

    The model and data are loaded and checked before the output folder is touched. The folder must be new,
    empty or an earlier run of this tool (see `rundir`); a failed run removes the files it wrote, and
    nothing else. Raises UsageError for bad input, CatalystDeployError when the job fails.
    """
    from catalyst_deploy.data import spec_path
    from catalyst_deploy.pipeline import PruneRun
    from catalyst_deploy.rundir import claim_run_folder, next_free_folder

    out = cfg.out if cfg.out is not None else next_free_folder(DEFAULT_PRUNE_OUT)
    run = PruneRun(cfg, progress=progress, log=log)
    setup = run.setup()
    folder = claim_run_folder(out, inputs=[cfg.model, cfg.weights, spec_path(cfg.data)], overwrite=cfg.overwrite)
    run.report["out"] = str(out)
    try:
        report = run.run(setup, folder)
    except BaseException:
        folder.discard(keep_checkpoints=True)
        raise
    folder.finish()
    return report


DEFAULT_PRUNE_OUT = "runs/prune"


# ---- export / bench / env -----------------------------------------------------------------------


def export(model, fmt: str, out: str | Path, *, input_shape: tuple[int, ...] | None = None, example=None,
           options=None, calib_data: str | None = None, calib_loader=None, plan: dict | None = None,
           trust_pickle: bool = False, overwrite: bool = False):
    """Export `model` to `fmt` (onnx, trt, torch; see `catalyst_deploy.exporters.EXPORTERS`) at `out`,
    checked against PyTorch on the same input. Returns an `ExportResult`.

    `model`: an nn.Module or a `models.load_model` spec ("runs/r18/pruned.pt", "torchvision:resnet18").
    `example` (an N,C,H,W tensor) or `input_shape` (N,C,H,W) gives the traced input. `options`: an
    `ExportOptions`. For int8 engines, `calib_data` (a dataset spec, see `data.load_dataset`) or
    `calib_loader` feeds the calibrator. `plan` (the surgery plan) is written beside a torch export.

        api.export("runs/r18/pruned.pt", "onnx", "runs/r18/model.onnx", input_shape=(1, 3, 224, 224))

    An existing file at `out` is replaced only with `overwrite`, and never when it is the model itself.
    Raises UsageError (bad format/option/shape, missing file, `out` taken), MissingDependency,
    ExportValidationError.
    """
    from catalyst_deploy.exporters import ExportOptions, export_model, output_paths

    kwargs = (options or ExportOptions()).for_format(fmt)
    check_export_targets(output_paths(fmt, out, plan is not None), model, calib_data, overwrite)
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


def check_export_targets(paths, model, calib_data, overwrite: bool) -> None:
    """UsageError when an export would write onto its input, or over an existing file without `overwrite`."""
    from catalyst_deploy.data import spec_path
    from catalyst_deploy.rundir import check_not_an_input

    inputs = [model if isinstance(model, (str, Path)) else None, spec_path(calib_data) if calib_data else None]
    for path in paths:
        check_not_an_input(Path(path).absolute(), inputs, "--out")
        if Path(path).is_dir():
            raise UsageError(f"--out {path} is a folder: give the file to write, e.g. {Path(path) / 'model.onnx'}")
        if Path(path).exists() and not overwrite:
            raise UsageError(f"{path} exists: pass --overwrite to replace it, or choose another file name")


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
