"""The `catalyst-deploy` command line: thin Typer commands that parse, call `catalyst_deploy.api`, print.

Nothing heavy (torch, onnxruntime, tensorrt) is imported at module level, so `--help` stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Prune PyTorch models with the Catalyst regularizer, export them, and benchmark dense vs pruned.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts show [defaults] in square brackets literally
)


# ---- prune / demo (core pipeline) ---------------------------------------------------------------
_METHOD_HELP = "catalyst (default), l1, group-lasso, slimming, taylor, random: same pipeline, same budget"


@app.command()
def prune(
    model: str = typer.Argument(..., help="file.pt (whole pickled module), torchvision:NAME, timm:NAME or pkg.module:factory"),
    data: str = typer.Option(None, help="demo, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH, imagefolder:PATH"),
    target_flops: str = typer.Option(None, "--target-flops", help="share of the dense MACs to keep at most (0.5) or a budget (2.0G)"),
    method: str = typer.Option(None, help=_METHOD_HELP),
    out: str = typer.Option(None, help="output folder: new, empty, or an earlier run of this tool [runs/prune, or runs/prune-N when taken]"),
    recipe: str = typer.Option(None, help="recipe name (recipes/*.yaml) or YAML path; flags override it"),
    weights: str = typer.Option(None, help="state_dict file to load into the model"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="load a model file that needs classes outside torch/torchvision (runs code from the file)"),
    input_shape: str = typer.Option(None, help="example input N,C,H,W, e.g. 1,3,224,224 [from the data]"),
    ignore: str = typer.Option(None, help="comma-separated module names whose channels stay whole"),
    round_to: int = typer.Option(None, help="keep channel counts multiples of this [8]"),
    max_layer_ratio: float = typer.Option(None, help="remove at most this share of any layer's channels [0.9]"),
    reg_epochs: float = typer.Option(None, help="epochs of the regularized phase [2]"),
    recover_epochs: float = typer.Option(None, help="epochs of recovery fine-tuning [2]"),
    lr: float = typer.Option(None, help="learning rate [0.01]"),
    batch_size: int = typer.Option(None, help="batch size [128]"),
    steps_per_epoch: int = typer.Option(None, help="cap steps per epoch (quick runs)"),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N [auto]"),
    threads: int = typer.Option(None, help="torch CPU threads [one per core]"),
    seed: int = typer.Option(None, help="random seed [0]"),
    export: str = typer.Option(None, help="comma-separated formats to export the pruned model to (onnx,trt,torch)"),
    bench: bool = typer.Option(False, "--bench", help="benchmark dense vs pruned latency (ONNX Runtime, torch; TensorRT with --export trt on a GPU)"),
    bench_batch: str = typer.Option(None, help="batch sizes for --bench, e.g. 1,8 [1,8]"),
    latency_aware: str = typer.Option(None, help="weigh layers by their measured latency per MAC on this backend (ort-cpu) when choosing channels"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run of this tool in --out (a folder holding anything else is never touched)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Fine-tune with a pruning regularizer, cut whole channels to the FLOPs target, recover, write outputs."""
    from catalyst_deploy import api

    cfg = api.load_config(recipe, model=model, data=data, target_flops=target_flops, method=method, out=out,
                          weights=weights, trust_pickle=trust_pickle or None, input_shape=input_shape, ignore=ignore,
                          round_to=round_to, max_layer_ratio=max_layer_ratio, reg_epochs=reg_epochs, recover_epochs=recover_epochs, lr=lr,
                          batch_size=batch_size, steps_per_epoch=steps_per_epoch, device=device, threads=threads, seed=seed,
                          export=export, bench=bench or None, bench_batches=bench_batch, latency_aware=latency_aware, overwrite=overwrite or None)
    _run_prune(cfg, as_json)


@app.command()
def demo(
    out: str = typer.Option(None, help="output folder [runs/demo, or runs/demo-N when taken]"),
    steps_per_epoch: int = typer.Option(None, help="cap steps per epoch (smoke runs)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run of this tool in --out"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Built-in example: train a small ResNet on the bundled Fashion-MNIST subset, prune it to 50% FLOPs.

    No downloads, no GPU; a few minutes on 2 CPU cores.
    """
    from catalyst_deploy import api

    from catalyst_deploy.rundir import next_free_folder

    cfg = api.load_config("demo", out=out or next_free_folder("runs/demo"), steps_per_epoch=steps_per_epoch,
                          overwrite=overwrite or None)
    _run_prune(cfg, as_json)


def _run_prune(cfg, as_json: bool) -> None:
    import json

    from catalyst_deploy import api
    from catalyst_deploy.console import phase_progress, print_prune_summary

    with phase_progress(enabled=not as_json) as progress:
        report = api.prune(cfg, progress=progress, log=(lambda _m: None) if as_json else typer.echo)
    if as_json:
        bulky = {"log_c_at_cut", "c_trajectory", "pruned_channels"}
        typer.echo(json.dumps({k: v for k, v in report.items() if k not in bulky}, indent=1, default=str))
    else:
        print_prune_summary(report)


# ---- export / bench / env -----------------------------------------------------------------------
# (filled in by the export-and-benchmark work)
from catalyst_deploy.bench.backends import backend_help  # noqa: E402  (light: the registry only)
from catalyst_deploy.exporters import exporter_help  # noqa: E402


def _bench_default(name: str) -> str:
    """A BenchOptions default as help text (the defaults live once, in the dataclass)."""
    from catalyst_deploy.bench.harness import BenchOptions

    value = BenchOptions.__dataclass_fields__[name].default
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@app.command()
def export(
    model: str = typer.Argument(..., help="model to export: file.pt (whole module), torchvision:NAME, timm:NAME, pkg.mod:factory"),
    fmt: str = typer.Option(..., "--format", "-f", help=f"one of: {exporter_help()}"),
    out: str = typer.Option(..., help="output file (.onnx, .engine, .pt)"),
    input_shape: str = typer.Option(None, help="example input N,C,H,W, e.g. 1,3,224,224 (required)"),
    opset: int = typer.Option(None, help="ONNX opset (onnx, trt) (default 17)"),
    precision: str = typer.Option(None, help="TensorRT precision fp32, fp16 or int8 (trt; default fp16)"),
    max_batch: int = typer.Option(None, help="largest batch of the engine's profile (trt; default 32)"),
    data: str = typer.Option(None, help="int8 calibration data, a dataset spec as in `prune --data` (trt)"),
    atol: float = typer.Option(None, help="tolerance vs PyTorch, scaled by outputs above 1 (default per format)"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="load a model file that needs classes outside torch/torchvision"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file at --out (never the input model)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Export a model to ONNX, a TensorRT engine or a torch file, checked against PyTorch on the same input."""
    from catalyst_deploy.exporters import ExportOptions

    options = ExportOptions(opset=opset, precision=precision, max_batch=max_batch, atol=atol)
    options.for_format(fmt)  # usage errors first: importing api loads torch
    from catalyst_deploy import api

    result = api.export(model, fmt, out, input_shape=_int_tuple(input_shape, "--input-shape"), options=options,
                        calib_data=data, trust_pickle=trust_pickle, overwrite=overwrite)
    _print_export(result, as_json)


@app.command()
def bench(
    model: str = typer.Argument(..., help="pruned model: .onnx, .engine or .pt"),
    baseline: str = typer.Option(None, help="dense model to compare with (.onnx, .engine or .pt)"),
    backend: str = typer.Option(None, help=f"comma-separated backends (default {_bench_default('backends')}): {backend_help()}"),
    batch: str = typer.Option(None, help=f"comma-separated batch sizes, e.g. 1,8,32 (default {_bench_default('batches')})"),
    input_shape: str = typer.Option(None, help="input shape C,H,W or N,C,H,W (needed for .pt models)"),
    threads: int = typer.Option(None, help="ONNX Runtime intra-op / torch CPU threads (default: the runtime's)"),
    min_time: float = typer.Option(None, help=f"least seconds of timed runs per model and batch (default {_bench_default('min_time_s')})"),
    min_runs: int = typer.Option(None, help=f"least timed runs per model and batch (default {_bench_default('min_runs')})"),
    precision: str = typer.Option(None, help=f"precision of engines built from ONNX, trt and ort-trt (default {_bench_default('precision')})"),
    flops_ratio: float = typer.Option(None, help="pruned/dense FLOPs, drawn as the ideal (default: counted when possible)"),
    out: str = typer.Option(None, help="folder for bench.json, bench.md and latency.png"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="load .pt files that need classes outside torch/torchvision"),
    as_json: bool = typer.Option(False, "--json", help="print bench.json to stdout"),
) -> None:
    """Latency of the pruned model (and the dense one, interleaved in the same process) per backend and batch.

    Exit code 1 when no backend produced a measurement; failed backends are reported in their rows.
    """
    from catalyst_deploy.bench.harness import BenchOptions

    given = dict(backends=tuple(backend.split(",")) if backend else None, batches=_int_tuple(batch, "--batch"),
                 input_shape=_int_tuple(input_shape, "--input-shape"), threads=threads, min_time_s=min_time,
                 min_runs=min_runs, precision=precision, flops_ratio=flops_ratio, trust_pickle=trust_pickle)
    options = BenchOptions(**{key: value for key, value in given.items() if value is not None})
    from catalyst_deploy import api  # after the usage checks: it loads torch

    report = api.bench(model, baseline, options, out_dir=out, progress=None if as_json else typer.echo)
    _print_bench(report, out, as_json)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Versions, devices, and which exporters and benchmark backends are usable here (for bug reports)."""
    from catalyst_deploy import api

    report = api.env_report()
    if as_json:
        _echo_json(report)
    else:
        from rich.console import Console

        from catalyst_deploy.bench.environment import render_environment

        Console().print(render_environment(report))


def _int_tuple(text: str | None, option: str) -> tuple[int, ...] | None:
    """"1,3,224,224" -> (1, 3, 224, 224); UsageError (exit 2) for anything else."""
    from catalyst_deploy.errors import UsageError

    if not text:
        return None
    try:
        return tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, e.g. 1,3,224,224; got {text!r}") from None


def _print_export(result, as_json: bool) -> None:
    if as_json:
        _echo_json(result.to_dict())
    else:
        typer.echo(f"wrote {result.path} ({result.fmt}) in {result.seconds:.1f} s: max abs diff vs PyTorch "
                   f"{result.max_abs_diff:.3g} <= tolerance {result.atol:.3g}")


def _print_bench(report, out: str | None, as_json: bool) -> None:
    if as_json:
        _echo_json(report.to_dict())
        return
    from rich.console import Console

    from catalyst_deploy.bench.report import render_table

    Console().print(render_table(report))
    if out:
        typer.echo(f"wrote {out}/bench.json, bench.md, latency.png")


def _echo_json(data: dict) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, default=str))



def main() -> None:
    """Console-script entry point: run the app, turning our typed errors into one line + exit code."""
    from catalyst_deploy.errors import CatalystDeployError

    try:
        app()
    except CatalystDeployError as err:
        typer.echo(f"error: {err}", err=True)
        raise SystemExit(err.exit_code) from None


if __name__ == "__main__":
    main()
