"""The `catalyst-deploy` command line: thin Typer commands that parse, call `catalyst_deploy.api`, print.
The interface layer: it imports `api`, `render` (printing) and the settings layer (parsing, help text) only
(docs/architecture.md).

Nothing heavy (torch, onnxruntime, tensorrt) is imported at module level, so `--help` stays fast. Every
command runs inside one error boundary (`main`): expected failures print one line (exit 1: the job
failed, 2: bad usage), unexpected ones one line and a hint to rerun with --debug for the traceback.
"""

from __future__ import annotations

import json

import typer

from catalyst_deploy.config import BenchSettings, CheckConfig, PruneConfig, default_text, load_check_config
from catalyst_deploy.formats import backend_help, format_help
from catalyst_deploy.method_table import method_help
from catalyst_deploy.render.check import print_check  # rich is imported only when it prints

app = typer.Typer(help="Prune PyTorch models with the Catalyst regularizer, export them, and benchmark dense vs "
                       "pruned.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)
STATE = {"debug": False}
# options several commands share (one definition each)
TRUST_PICKLE = typer.Option(False, "--trust-pickle", help="load model files that need classes outside the allowlist (runs code from the file)")
AS_JSON = typer.Option(False, "--json", help="print the result as JSON")


def _d(name: str, cls=PruneConfig) -> str:
    return f"[{default_text(name, cls)}]"


def _version(value: bool) -> None:
    if value:
        from catalyst_deploy import __version__

        typer.echo(f"catalyst-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="print the full traceback of an unexpected error"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    STATE["debug"] = debug


@app.command()
def prune(
    model: str = typer.Argument(..., help="file.pt (whole pickled module), torchvision:NAME, timm:NAME, zoo:NAME or pkg.module:factory"),
    data: str = typer.Option(None, help="demo, fashion-mnist:PATH, mnist:PATH, cifar10:PATH, cifar100:PATH, imagefolder:PATH " + _d("data")),
    target_flops: str = typer.Option(None, "--target-flops", help="share of the dense MACs to keep at most (0.5), or a MAC budget (2.0G = 2e9 multiply-accumulates) " + _d("target_flops")),
    method: str = typer.Option(None, help=f"{method_help()} {_d('method')}"),
    out: str = typer.Option(None, help="output folder: new, empty, or an earlier run of this tool [runs/prune, or runs/prune-N when taken]"),
    recipe: str = typer.Option(None, help="recipe name (recipes/*.yaml) or YAML path; flags override it"),
    weights: str = typer.Option(None, help="state_dict file to load into the model"),
    trust_pickle: bool = TRUST_PICKLE,
    input_shape: str = typer.Option(None, help="example input N,C,H,W, e.g. 1,3,224,224 [from the data]"),
    ignore: str = typer.Option(None, help="comma-separated module names whose channels stay whole"),
    round_to: int = typer.Option(None, help="keep channel counts multiples of this " + _d("round_to")),
    max_layer_ratio: float = typer.Option(None, help="remove at most this share of any layer's channels " + _d("max_layer_ratio")),
    prune_embedding: bool = typer.Option(False, "--prune-embedding", help="also prune a transformer's embedding width: it is coupled through every LayerNorm and residual add of its stage, so each channel cut touches every block"),
    reg_epochs: float = typer.Option(None, help="epochs of the regularized phase " + _d("reg_epochs")),
    recover_epochs: float = typer.Option(None, help="epochs of recovery fine-tuning " + _d("recover_epochs")),
    lr: float = typer.Option(None, help="learning rate " + _d("lr")),
    batch_size: int = typer.Option(None, help="batch size " + _d("batch_size")),
    steps_per_epoch: int = typer.Option(None, help="cap steps per epoch (quick runs)"),
    val_size: int = typer.Option(None, help="hold out this many training images as a validation split " + _d("val_size")),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N " + _d("device")),
    threads: int = typer.Option(None, help="torch CPU threads [one per core]"),
    seed: int = typer.Option(None, help="random seed " + _d("seed")),
    export: str = typer.Option(None, help=f"comma-separated formats to export the pruned model to: {format_help()}"),
    bench: bool = typer.Option(False, "--bench", help="time the exported files, dense vs pruned (ONNX Runtime CPU; TensorRT and ORT CUDA on a GPU)"),
    bench_batch: str = typer.Option(None, help="batch sizes for --bench, e.g. 1,8 " + _d("batches", BenchSettings)),
    latency_aware: str = typer.Option(None, help="weigh layers by their measured latency per MAC on this backend (ort-cpu) when choosing channels"),
    target_latency: str = typer.Option(None, "--target-latency", help="prune to a measured latency instead of FLOPs: a share of the dense latency (0.6x) or a time per call (3ms, 3ms@8); searched on the --backend, exported and checked"),
    backend: str = typer.Option(None, "--backend", help="backend that --target-latency is measured on " + _d("latency_backend")),
    checkpoint_every: int = typer.Option(None, help="optimizer steps between checkpoints " + _d("checkpoint_every")),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="under torchrun on GPUs: synchronise BatchNorm statistics across ranks"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted run in --out from its last checkpoint"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run of this tool in --out (a folder holding anything else is never touched)"),
    as_json: bool = AS_JSON,
) -> None:
    """Fine-tune with a pruning regularizer, cut whole channels to the FLOPs target, recover, write outputs."""
    from catalyst_deploy import api

    cfg = api.load_config(recipe, model=model, data=data, target_flops=target_flops, method=method, out=out,
                          weights=weights, trust_pickle=trust_pickle or None, input_shape=input_shape, ignore=ignore,
                          round_to=round_to, max_layer_ratio=max_layer_ratio, prune_embedding=prune_embedding or None,
                          reg_epochs=reg_epochs,
                          recover_epochs=recover_epochs, lr=lr, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                          val_size=val_size, device=device, threads=threads, seed=seed, export=export,
                          bench=bench or None, bench_batches=bench_batch, latency_aware=latency_aware,
                          checkpoint_every=checkpoint_every, resume=resume or None, overwrite=overwrite or None,
                          target_latency=target_latency, latency_backend=backend, sync_bn=sync_bn or None)
    _run_prune(cfg, as_json)


@app.command()
def demo(
    out: str = typer.Option(None, help="output folder [runs/demo, or runs/demo-N when taken]"),
    steps_per_epoch: int = typer.Option(None, help="cap steps per epoch (smoke runs)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier run of this tool in --out"),
    as_json: bool = AS_JSON,
) -> None:
    """The whole story on the built-in default: a small ResNet pretrained on Fashion-MNIST (shipped with the
    package) pruned to half its FLOPs with Catalyst, exported to ONNX, and timed against the dense model on
    ONNX Runtime. No downloads, no GPU; a few minutes on 2 CPU cores."""
    from catalyst_deploy import api

    cfg = api.demo_config(out, steps_per_epoch=steps_per_epoch, overwrite=overwrite or None)
    _run_prune(cfg, as_json)


def _run_prune(cfg, as_json: bool) -> None:
    from catalyst_deploy import api
    from catalyst_deploy.render.progress import phase_progress
    from catalyst_deploy.render.prune import print_summary

    main = api.is_main_process()  # under torchrun every rank runs this: one set of bars, one summary
    with phase_progress(enabled=not as_json and main) as progress:
        report = api.prune(cfg, progress=progress, log=(lambda _m: None) if as_json else typer.echo)
    if as_json:
        typer.echo(report.to_json())
    elif main:
        print_summary(report)


@app.command()
def export(
    model: str = typer.Argument(..., help="a prune run folder, file.pt, torchvision:NAME, timm:NAME or pkg.mod:factory"),
    fmt: str = typer.Option(..., "--format", "-f", help=f"one of: {format_help()}"),
    out: str = typer.Option(..., help="output file (.onnx, .engine, .pt)"),
    input_shape: str = typer.Option(None, help="example input N,C,H,W [a run folder's model.json]"),
    opset: int = typer.Option(None, help="ONNX opset (onnx, trt) [18]"),
    exporter: str = typer.Option(None, help="ONNX exporter: dynamo (torch.export-based, falls back to torchscript) or torchscript [dynamo]"),
    precision: str = typer.Option(None, help="TensorRT precision fp32, fp16 or int8 (trt) [fp16]"),
    max_batch: int = typer.Option(None, help="largest batch of the engine's profile (trt) [32]"),
    data: str = typer.Option(None, help="int8 calibration data, a dataset spec as in `prune --data` (trt)"),
    atol: float = typer.Option(None, help="tolerance vs PyTorch, scaled by outputs above 1 [per format]"),
    trust_pickle: bool = TRUST_PICKLE,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file at --out (never the input model)"),
    as_json: bool = AS_JSON,
) -> None:
    """Export a model to ONNX, a TensorRT engine or a torch file, checked against PyTorch on the same input."""
    from catalyst_deploy import api
    from catalyst_deploy.config import parse_int_tuple

    options = api.ExportOptions(opset=opset, precision=precision, max_batch=max_batch, atol=atol, exporter=exporter)
    options.for_format(fmt)  # usage errors first: exporting loads torch
    shape = parse_int_tuple(input_shape, "--input-shape", length=4)
    result = api.export(model, fmt, out, input_shape=shape, options=options, calib_data=data,
                        trust_pickle=trust_pickle, overwrite=overwrite)
    if as_json:
        _echo_json(result.to_dict())
    else:
        typer.echo(f"wrote {result.path} ({result.fmt}) in {result.seconds:.1f} s: max abs diff vs PyTorch "
                   f"{result.max_abs_diff:.3g} <= tolerance {result.atol:.3g}")


@app.command()
def bench(
    model: str = typer.Argument(..., help="a prune run folder (its exported files, dense vs pruned), or the pruned model: .onnx, .engine or .pt"),
    baseline: str = typer.Option(None, help="dense model to compare with (.onnx, .engine or .pt)"),
    backend: str = typer.Option(None, help=f"comma-separated backends [ort-cpu]: {backend_help()}"),
    batch: str = typer.Option(None, help="comma-separated batch sizes, e.g. 1,8,32 [1]"),
    input_shape: str = typer.Option(None, help="input shape C,H,W or N,C,H,W (needed for .pt files outside a run folder)"),
    threads: int = typer.Option(None, help="ONNX Runtime intra-op / torch CPU threads [the runtime's]"),
    min_time: float = typer.Option(None, help="least seconds of timed runs per model and batch " + _d("min_time_s", BenchSettings)),
    min_runs: int = typer.Option(None, help="least timed runs per model and batch " + _d("min_runs", BenchSettings)),
    precision: str = typer.Option(None, help="precision of engines built from ONNX, trt and ort-trt [fp16]"),
    out: str = typer.Option(None, help="folder for bench.json, bench.md and latency.png (new, empty or an earlier bench output)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier bench output in --out"),
    trust_pickle: bool = TRUST_PICKLE,
    as_json: bool = AS_JSON,
) -> None:
    """Latency of the pruned model and the dense one, interleaved in one process, per backend and batch.

    Exit code 1 when the pruned model could not be measured anywhere; failed backends are reported in
    their rows."""
    from catalyst_deploy import api
    from catalyst_deploy.config import parse_int_tuple

    given = dict(backends=tuple(backend.split(",")) if backend else None, batches=parse_int_tuple(batch, "--batch"),
                 input_shape=parse_int_tuple(input_shape, "--input-shape"), threads=threads, min_time_s=min_time,
                 min_runs=min_runs, precision=precision, trust_pickle=trust_pickle)
    options = api.BenchOptions(**{key: value for key, value in given.items() if value is not None})
    report = api.bench(model, baseline, options, out_dir=out, progress=None if as_json else typer.echo,
                       overwrite=overwrite)
    if as_json:
        _echo_json(report.to_dict())
    else:
        from rich.console import Console

        from catalyst_deploy.render.bench import render_table

        Console().print(render_table(report))
        if out:
            typer.echo(f"wrote {out}/bench.json, bench.md, latency.png")
    raise typer.Exit(0 if report.pruned_ok else 1)


@app.command()
def check(
    model: str = typer.Argument(..., help="file.pt, torchvision:NAME, timm:NAME, zoo:NAME or pkg.module:factory"),
    input_shape: str = typer.Option(None, help="example input N,C,H,W " + _d("input_shape", CheckConfig)),
    target_flops: str = typer.Option(None, "--target-flops", help="MACs target of the trial cut " + _d("target_flops", CheckConfig)),
    ignore: str = typer.Option(None, help="comma-separated module names whose channels stay whole"),
    round_to: int = typer.Option(None, help="keep channel counts multiples of this " + _d("round_to", CheckConfig)),
    max_layer_ratio: float = typer.Option(None, help="remove at most this share of any layer's channels " + _d("max_layer_ratio", CheckConfig)),
    prune_embedding: bool = typer.Option(False, "--prune-embedding", help="also cut a transformer's embedding width (every block's LayerNorms and residual adds)"),
    bench: bool = typer.Option(False, "--bench", help="time the trial cut against the dense model on ONNX Runtime CPU, batch 1"),
    threads: int = typer.Option(None, help="torch and ONNX Runtime CPU threads [torch 1, ONNX Runtime its default]"),
    trust_pickle: bool = TRUST_PICKLE,
    as_json: bool = AS_JSON,
) -> None:
    """Can this model be pruned, and how far? No data, no training: its channel groups, the layers left alone and
    why, the least MACs the limits allow, and a trial cut at --target-flops checked in ONNX at batch 1 and 3."""
    cfg = load_check_config(**{k: v for k, v in locals().items() if k != "as_json"})  # usage errors first
    from catalyst_deploy import api

    report = api.check(cfg, log=(lambda _m: None) if as_json else typer.echo).to_dict()
    (_echo_json if as_json else print_check)(report)
    if report["status"] != "ok":
        typer.echo(f"error: {report['reason']}", err=True)
        raise typer.Exit(1)


@app.command()
def env(as_json: bool = AS_JSON) -> None:
    """Versions, CPU and its ISA flags, devices, and which formats and benchmark backends work here."""
    from catalyst_deploy import api

    report = api.env_report()
    if as_json:
        _echo_json(report)
    else:
        from rich.console import Console

        from catalyst_deploy.render.env import render_environment

        Console().print(render_environment(report))


def _echo_json(data: dict) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def main() -> None:
    """Console-script entry point: the one error boundary around every command."""
    import signal

    from catalyst_deploy.errors import CatalystDeployError, StopSignal, raising_on_stop_signals

    try:
        with raising_on_stop_signals() as stops:  # SIGTERM too unwinds: temp folders go, a run says what it kept
            code = app(standalone_mode=False)  # returns typer.Exit's code instead of exiting
    except SystemExit:
        raise
    except CatalystDeployError as err:
        if STATE["debug"] and err.__cause__ is not None:
            raise
        typer.echo(f"error: {err}", err=True)
        raise SystemExit(err.exit_code) from None
    except (KeyboardInterrupt, typer.Abort) as err:  # click turns a KeyboardInterrupt into Abort
        stop = err.__cause__ if isinstance(err, typer.Abort) else err
        if not isinstance(stop, KeyboardInterrupt):
            typer.echo("error: aborted", err=True)
            raise SystemExit(1) from None
        name = stop.name if isinstance(stop, StopSignal) else "SIGINT"
        typer.echo(f"error: interrupted by {name}", err=True)
        raise SystemExit(128 + int(getattr(signal, name))) from None
    except OSError as err:  # a full or read-only disk, a permission: the system's words and the path
        if STATE["debug"]:
            raise
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        typer.echo(f"error: {err.strerror or err}{where}: check the path and free space", err=True)
        raise SystemExit(1) from None
    except Exception as err:  # noqa: BLE001 - the boundary: one line, the traceback only on request
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()  # a usage error of the command line (typer/click): its own message, exit 2
            raise SystemExit(err.exit_code) from None
        if STATE["debug"]:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        typer.echo(f"error: unexpected {type(err).__name__}: {first} (run with --debug for the traceback)", err=True)
        raise SystemExit(1) from None
    if code == 130 and stops:  # Typer ended the command on the StopSignal of a signal
        typer.echo(f"error: interrupted by {stops[-1]}", err=True)
        raise SystemExit(128 + int(getattr(signal, stops[-1])))
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
