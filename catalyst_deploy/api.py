"""What the CLI and Python users call: prune(), export(), bench(), check(), env_report().

    from catalyst_deploy import api
    report = api.prune(api.load_config("demo", out="runs/demo"))
    api.export("runs/demo", "onnx", "runs/demo/copy.onnx")          # a run folder knows its input shape
    api.bench("runs/demo")                                          # its exported files, dense vs pruned
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from catalyst_deploy.bench.harness import BenchOptions  # noqa: F401 (what `bench` takes, re-exported)
from catalyst_deploy.config import PruneConfig, load_check_config, load_config  # noqa: F401 (re-exported for callers)
from catalyst_deploy.exporters import ExportOptions  # noqa: F401 (what `export` takes, re-exported)
from catalyst_deploy.errors import CatalystDeployError, PartialFailure, UsageError  # noqa: F401 (PartialFailure re-exported)

DEFAULT_PRUNE_OUT = "runs/prune"
DEFAULT_DEMO_OUT = "runs/demo"


def prune(cfg: PruneConfig, progress: Callable | None = None, log: Callable[[str], None] = print, _group_weight=None):
    """Run the whole pipeline of `cfg`, writing its outputs to `cfg.out`; returns the `report.PruneReport`.

    The model, data, target and export formats are checked before the output folder is touched. The folder
    must be new, empty or an earlier run of this tool (`rundir`); `cfg.resume` continues an unfinished run
    from its checkpoint. A failed run keeps what it wrote (checkpoints; once trained, the model files), so that
    `cfg.resume` can finish it, and touches nothing else.
    Raises UsageError for bad input, CatalystDeployError when the job fails, PartialFailure (after writing
    everything else) when an export failed, Interrupted on SIGINT/SIGTERM (saying what is kept).
    """
    from catalyst_deploy.run import distributed
    from catalyst_deploy.inputs.data import spec_path
    from catalyst_deploy.run.pipeline import PruneRun
    from catalyst_deploy.run.rundir import claim_run_folder, next_free_folder

    out = cfg.out if cfg.out is not None else next_free_folder(DEFAULT_PRUNE_OUT)
    if cfg.target_latency is not None:
        from catalyst_deploy.run.latency_loop import prune_to_latency

        return prune_to_latency(cfg, out, progress, log, prune)
    run = PruneRun(cfg, progress=progress, log=log, group_weight=_group_weight)
    setup = run.setup()
    # under torchrun rank 0 claims the folder; the other ranks get a view of it that writes nothing
    folder = distributed.claim_on_main(claim_run_folder)(out, inputs=[cfg.model, cfg.weights, spec_path(cfg.data)],
                                                         overwrite=cfg.overwrite, resume=cfg.resume,
                                                         settings={"model": cfg.model, "method": cfg.method})
    try:
        report = run.run(setup, folder)
    except BaseException:
        folder.fail(remove_written=False)  # what it wrote (checkpoints, the model) is what --resume continues from
        raise
    failed = {fmt: e["error"] for fmt, e in report.exports.items() if "error" in e}
    folder.finish("done" if not failed else "failed")
    if failed:
        from catalyst_deploy.run.outputs import kept_message

        raise PartialFailure(kept_message(folder, "export " + "; ".join(f"{fmt}: {msg}" for fmt, msg in failed.items())))
    return report


def demo_config(out: str | None = None, **overrides) -> PruneConfig:
    """The built-in demo's settings (recipes/demo.yaml) with `overrides`, writing to `out` (by default
    runs/demo, or runs/demo-N when that is taken)."""
    from catalyst_deploy.run.rundir import next_free_folder

    return load_config("demo", out=out or next_free_folder(DEFAULT_DEMO_OUT), **overrides)


def is_main_process() -> bool:
    """False on the ranks other than 0 under torchrun, which print nothing (rank 0 speaks for the run)."""
    from catalyst_deploy.run.ranks import is_main

    return is_main()


def export(model, fmt: str, out: str | Path, *, input_shape: tuple[int, ...] | None = None, example=None,
           options=None, calib_data: str | None = None, calib_loader=None, plan: dict | None = None,
           trust_pickle: bool = False, overwrite: bool = False, metadata: dict | None = None):
    """Export `model` to `fmt` (onnx, trt, torch; `formats.FORMATS`) at `out`, checked against PyTorch on
    the same input. Returns an `ExportResult`.

    `model`: an nn.Module, a run folder of `prune`, or a `models.load_model` spec. The traced input is
    `example` (an N,C,H,W tensor), else `input_shape`, else the model.json of a run folder (or beside the
    model file). `options`: an `ExportOptions`. For int8 engines, `calib_data` (a dataset spec) or
    `calib_loader` feeds the calibrator. `plan` is written beside a torch export; `metadata` goes into an
    ONNX file's metadata_props (a run's model.json does by default). An existing file at `out` is replaced
    only with `overwrite`, never when it is the model itself.

        api.export("runs/r18/pruned.pt", "onnx", "runs/r18/model.onnx", input_shape=(1, 3, 224, 224))

    Raises UsageError (bad format/option/shape, missing file, `out` taken), MissingDependency,
    ExportValidationError.
    """
    from catalyst_deploy.exporters import export_model, output_paths
    from catalyst_deploy.run.outputs import read_model_meta

    model = _run_folder_model(model)
    kwargs = (options or ExportOptions()).for_format(fmt)
    check_export_targets(output_paths(fmt, out, plan is not None), model, calib_data, overwrite)
    try:
        meta = read_model_meta(model) if isinstance(model, (str, Path)) and Path(model).exists() else None
    except UsageError:
        if example is None and not input_shape:
            raise
        meta = None  # a broken model.json beside the model is not needed when the shape is given
    if example is None and not input_shape:
        if not meta:
            raise UsageError("the input shape is needed to trace the model: give it (CLI: --input-shape N,C,H,W, "
                             "e.g. 1,3,224,224 for RGB or 1,1,28,28 for grayscale), or export a run folder")
        input_shape = tuple(meta["input_shape"])
    module = _module_of(model, trust_pickle)
    example = example if example is not None else _example_input(input_shape)
    from catalyst_deploy.run.preflight import check_forward

    check_forward(module, example, "the input shape")
    if calib_data is not None:
        calib_loader = _calibration_loader(calib_data, tuple(example.shape))
    if fmt == "onnx" and metadata is None and meta:
        metadata = {k: str(v) for k, v in meta.items()}
    extras = {"calib_loader": calib_loader, "plan": plan, "metadata": metadata}
    return export_model(module, fmt, out, example, **kwargs, **{k: v for k, v in extras.items() if v is not None})


def check_export_targets(paths, model, calib_data, overwrite: bool) -> None:
    """UsageError when an export would write onto its input, or over an existing file without `overwrite`."""
    from catalyst_deploy.inputs.data import spec_path
    from catalyst_deploy.run.rundir import check_not_an_input

    inputs = [model if isinstance(model, (str, Path)) else None, spec_path(calib_data) if calib_data else None]
    for path in paths:
        check_not_an_input(Path(path).absolute(), inputs, "--out")
        if Path(path).is_dir():
            raise UsageError(f"--out {path} is a folder: give the file to write, e.g. {Path(path) / 'model.onnx'}")
        if Path(path).exists() and not overwrite:
            raise UsageError(f"{path} exists: pass --overwrite to replace it, or choose another file name")


def bench(pruned, baseline=None, options=None, out_dir: str | Path | None = None, progress=None, overwrite=False):
    """Benchmark `pruned` against `baseline` (dense; optional) on each backend and batch, interleaved.

    Models: nn.Modules, files (.onnx, .engine, .pt), or a `prune` run folder: then its exported files
    (model.onnx against dense.onnx, ...) with their input shape from model.json. `options`: a
    `bench.harness.BenchOptions`. With `out_dir` (new, empty, or an earlier bench output of this tool),
    writes bench.json, bench.md and latency.png there. Returns the `BenchReport`; a backend that fails is
    reported in its rows. Raises UsageError for a missing file, an unknown backend or a taken `out_dir`.
    """
    from catalyst_deploy.bench.harness import run_benchmark
    from catalyst_deploy.bench.report import write_bench_files
    from catalyst_deploy.run.rundir import claim_run_folder

    options = options or BenchOptions()
    if baseline is None and isinstance(pruned, (str, Path)) and Path(pruned).is_dir():
        pruned, baseline, options = _run_folder_pair(Path(pruned), options)
    folder = None
    if out_dir is not None:
        inputs = [p for p in (pruned, baseline) if isinstance(p, (str, Path))]
        folder = claim_run_folder(out_dir, inputs=inputs, overwrite=overwrite, kind="bench")
    try:
        report = run_benchmark(pruned, baseline, options, progress=progress)
        if folder is not None:
            write_bench_files(report, folder.path, folder)
    except BaseException:
        if folder is not None:
            folder.fail(remove_written=True)
        raise
    if folder is not None:
        folder.finish()
    return report


def check(cfg, log: Callable[[str], None] = print):
    """What the model of `cfg` (a `config.CheckConfig`, see `config.load_check_config`) offers to pruning, with
    no data and no training: its channel groups, the layers left alone and why, the least MACs the limits
    allow, and a trial cut at the target exported to ONNX (parity at batch 1 and 3; ONNX Runtime latency
    against the dense model with `cfg.bench`). Returns a `run.check.CheckReport`; a model that cannot be
    pruned is a report with status "failed" and a one-line reason. Raises UsageError for bad input.

        report = api.check(load_check_config(model="torchvision:resnet50", input_shape="1,3,224,224"))
    """
    from catalyst_deploy.run.check import check_model

    return check_model(cfg, log)


def env_report() -> dict:
    """Versions, CPU and its ISA flags, CUDA devices, ONNX Runtime providers, and which formats and
    benchmark backends are usable on this machine (with the reason when not)."""
    from catalyst_deploy.bench.environment import environment_report

    return environment_report()


def _run_folder_model(model):
    """A run folder stands for its pruned.pt."""
    if isinstance(model, (str, Path)) and Path(model).is_dir() and _regular_file(Path(model) / "pruned.pt"):
        return Path(model) / "pruned.pt"
    return model


def _run_folder_pair(folder: Path, options):
    """(pruned, dense, options) for a run folder: its exported files when there, else pruned.pt against the
    source model rebuilt by name; the input shape from its model.json. The folder's files are data: the
    source model is built only when model.json names a built-in architecture (zoo, torchvision, timm), never
    a factory or a file."""
    import dataclasses

    from catalyst_deploy.run.outputs import read_model_meta

    meta = read_model_meta(folder)
    if meta is None:
        raise UsageError(f"{folder} is not a prune run folder (no model.json): pass model files instead")
    if options.input_shape is None:
        options = dataclasses.replace(options, input_shape=tuple(meta["input_shape"][1:]))
    for stem_pruned, stem_dense in (("model.onnx", "dense.onnx"), ("model.engine", "dense.engine"),
                                    ("model.pt", "dense.pt")):
        if _regular_file(folder / stem_pruned) and _regular_file(folder / stem_dense):
            return folder / stem_pruned, folder / stem_dense, options
    source = meta.get("source_model", "")
    if not _builtin_architecture(source):
        raise UsageError(f"{folder}/model.json names the source model {source[:80]!r}, which bench does not build "
                         "from a folder's file (only zoo:, torchvision: and timm: names): pass the dense model as "
                         "--baseline")
    from catalyst_deploy.inputs.models import load_model

    dense = load_model(source, num_classes=meta.get("num_classes"), in_channels=meta.get("channels"))
    return folder / "pruned.pt", dense, options


def _builtin_architecture(spec: str) -> bool:
    """Whether `spec` names an architecture of a fixed table (the zoo's, torchvision's, timm's registry),
    which builds a model by name without importing or calling anything the name chooses."""
    import re

    prefix, sep, name = spec.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", name):
        return False
    if prefix == "zoo":
        from catalyst_deploy.inputs import zoo

        return name in zoo.__all__ and name[0].islower()  # the factories, not the classes
    return prefix in ("torchvision", "timm")


def _regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _module_of(model, trust_pickle: bool):
    if not isinstance(model, (str, Path)):
        return model
    from catalyst_deploy.inputs.models import load_model

    return load_model(str(model), trust_pickle=trust_pickle)


def _example_input(input_shape: tuple[int, ...]):
    from catalyst_deploy.exporters.validation import random_input

    if len(input_shape) < 2 or min(input_shape) < 1:
        raise UsageError(f"input shape must be N,C,... with positive sizes, got {','.join(map(str, input_shape))}")
    return random_input(input_shape)


def _calibration_loader(spec: str, example_shape: tuple[int, ...], batch_size: int = 16, batches: int = 16):
    """Batches of training images from dataset `spec`, sized and channelled like the example input."""
    from catalyst_deploy.inputs.data import load_dataset, make_loaders

    channels, size = example_shape[1], tuple(example_shape[2:4])
    splits = load_dataset(spec, image_size=size, channels=channels, train_limit=batch_size * batches)
    return make_loaders(splits, batch_size)[0]
