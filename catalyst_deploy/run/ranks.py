"""The process group under torchrun: who this process is, the collectives the pipeline needs, and how one
rank's failure reaches every other rank instead of a hang. `distributed` builds DDP and the decision
checks on top of it (docs/distributed.md). Without torchrun everything here is the identity."""


from __future__ import annotations

import atexit
import gc
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from catalyst_deploy.errors import CatalystDeployError, UsageError

T = TypeVar("T")
FAILURE_KEY = "failure"  # in the store: "rank R: message" of the first rank that failed
PERTURB_ENV = "CATALYST_DEPLOY_TEST_PERTURB"  # tests only: "RANK:KEY" alters that rank's KEY before its checks
PEER_GRACE_S = 5.0  # how long a rank whose collective broke waits for the failed rank's message
BACKEND_DRAIN_S = 0.25  # at shutdown: how long gloo's worker threads get the GIL to release finished collectives
_STATE: dict[str, Any] = {"store": None, "owned": False}


class DistributedError(CatalystDeployError):
    """A multi-process run stopped because the ranks disagree or one of them failed (exit code 1)."""


class RankMismatch(DistributedError):
    """The ranks' decision states differ: every rank raises it at the same check."""


class PeerFailed(DistributedError):
    """Another rank failed first; the message is its own."""


# ---- where this process stands -------------------------------------------------------------------
def launched() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment; (1, 0, 0) without it.
    Raises UsageError when the variables are set but malformed."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK {rank} does not fit WORLD_SIZE {world}")
    return world, rank, local


def active() -> bool:
    """True when a process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank: from the process group once started, from torchrun's environment before."""
    if active():
        return dist.get_rank()
    world, env_rank, _ = launched()
    return env_rank if world > 1 else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs, shows progress and writes files."""
    return rank() == 0


# ---- starting and stopping -------------------------------------------------------------------------
def init(device: torch.device, timeout_s: float) -> torch.device:
    """Start the process group when torchrun launched this process; return the device this rank trains on.

    `device` is the resolved --device: CUDA gives NCCL on cuda:LOCAL_RANK, CPU gives gloo. Every collective
    waits at most `timeout_s` seconds. A single process gets `device` back and no process group; a group
    that is already running (a second run in the same process) is reused. Raises UsageError when
    LOCAL_RANK names no visible GPU.
    """
    world, rank_, local = launched()
    if world == 1:
        return device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible: start "
                             "at most one process per GPU (torchrun --nproc-per-node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device
    timeout = timedelta(seconds=timeout_s)
    # the env:// rendezvous that init_process_group would do, kept so that a failing rank can leave its
    # message in the same store (torchrun's agent store, or rank 0's)
    store, rank_, world = next(dist.rendezvous("env://", rank_, world, timeout=timeout))
    store.set_timeout(timeout)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.PrefixStore("default_pg", store),
                            rank=rank_, world_size=world, timeout=timeout)
    _STATE.update(store=dist.PrefixStore("catalyst_deploy", store), owned=True)
    atexit.register(shutdown)
    return device


def shutdown() -> None:
    """Destroy the process group this module started (idempotent; also registered at exit)."""
    if _STATE["owned"] and dist.is_initialized():
        with suppress(Exception):  # already broken by a failed peer: nothing left to release
            dist.destroy_process_group()
        _let_backend_threads_finish()
    _STATE.update(store=None, owned=False)


def _let_backend_threads_finish(seconds: float = BACKEND_DRAIN_S) -> None:
    """Give gloo's worker threads the GIL before the interpreter shuts down.

    A gloo worker thread drops its reference to a finished collective after `wait()` has returned in the main
    thread, and dropping the tensors of that collective takes the GIL. A worker still waiting for the GIL when
    the interpreter finalizes is ended by CPython mid-destructor, and the C++ runtime aborts the whole process
    ("terminate called without an active exception", exit -6) after every result was written: 3 runs in 60 of
    a two-rank job on a loaded 2-core machine. Collecting the cycles that hold finished work and sleeping
    (which releases the GIL) lets those threads finish while the interpreter is alive.
    """
    gc.collect()
    time.sleep(seconds)


@contextmanager
def failure_boundary() -> Iterator[None]:
    """Around a rank's work: when it raises, every rank stops, naming the first failure.

    The failing rank records "rank R: message" in the rendezvous store and destroys its process group, so
    that the ranks blocked in a collective with it fail now instead of at the timeout, and re-raises its
    error. A rank whose collective broke raises PeerFailed with the recorded message. RankMismatch, which
    every rank raises at the same check, passes through as it is. Single process: nothing is added.
    """
    if not active():
        yield
        return
    try:
        yield
    except RankMismatch:
        raise  # every rank raises it at the same check: none is left waiting, and its message is the check's
    except BaseException as err:
        peer = None if isinstance(err, CatalystDeployError) else _peer_failure(wait=_is_comm_error(err))
        if peer is None:
            _record_failure(err)
        shutdown()
        if peer is not None:
            raise PeerFailed(f"stopped because {peer}") from None
        if _is_comm_error(err):
            raise PeerFailed(f"a collective failed on rank {rank()}, another rank probably died without a "
                             f"message (see its log): {_first_line(err)}") from None
        raise


def _is_comm_error(err: BaseException) -> bool:
    """Whether `err` is a broken collective (gloo raises a plain RuntimeError naming itself when a peer closes)."""
    return isinstance(err, dist.DistError) or "gloo" in str(err).lower() or "nccl" in str(err).lower()


def _record_failure(err: BaseException) -> None:
    store = _STATE["store"]
    if store is None:
        return
    text = str(err) if isinstance(err, CatalystDeployError) else f"{type(err).__name__}: {_first_line(err)}"
    with suppress(Exception):  # the store may have gone with rank 0; the error is raised all the same
        store.compare_set(FAILURE_KEY, "", f"rank {rank()}: {text}")  # the first failure wins: later ones follow it


def _peer_failure(wait: bool) -> str | None:
    """The first failure recorded by another rank, or None (waits a moment when the collective broke, so
    that the failed rank's message has arrived)."""
    store = _STATE["store"]
    if store is None:
        return None
    try:
        if wait:
            store.wait([FAILURE_KEY], timedelta(seconds=PEER_GRACE_S))
        if not store.check([FAILURE_KEY]):
            return None
        message = store.get(FAILURE_KEY).decode()
    except Exception:  # noqa: BLE001 - no record (timeout) or no store left
        return None
    return None if message.startswith(f"rank {rank()}:") else message


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---- collectives (the identity in a single process) ---------------------------------------------------
def _comm_device() -> torch.device:
    """Where tensors must be for the backend: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(*values: int) -> tuple[int, ...]:
    """The sums of `values` over all ranks (exact: int64)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(int(v) for v in t.tolist())


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on any rank."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's `tensor` on every rank (same device and dtype as given)."""
    if not active():
        return tensor
    t = tensor.detach().to(_comm_device()).contiguous()
    dist.broadcast(t, src=0)
    return t.to(tensor.device)


def broadcast_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into `module` on every rank."""
    if not active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.copy_(broadcast(t))


def average_buffers(module: nn.Module) -> None:
    """Every rank's floating-point buffers (BatchNorm running statistics) replaced by their mean over the
    ranks, the others by rank 0's: each rank tracked the statistics of its own batches, and their mean is
    what one process would have tracked over the global batch (exactly for the running means)."""
    if not active():
        return
    with torch.no_grad():
        for t in module.buffers():
            if t.is_floating_point():
                mean = t.detach().to(_comm_device()).clone()
                dist.all_reduce(mean)
                t.copy_((mean / world_size()).to(t.device))
            else:
                t.copy_(broadcast(t))


def from_main(fn: Callable[[], T]) -> T:
    """`fn()` run on rank 0 only, its result given to every rank (a single process just calls it).

    When `fn` raises on rank 0, every rank raises: rank 0 its own error, the others UsageError with its
    message when it was one (same exit code), else PeerFailed.
    """
    if not active():
        return fn()
    box: list = [None]
    error = None
    if is_main():
        try:
            box = [("ok", fn())]
        except BaseException as err:  # noqa: BLE001 - given to the other ranks, then re-raised here
            error = err
            box = [("error", isinstance(err, UsageError), _message(err))]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    kind, *rest = box[0]
    if kind == "ok":
        return rest[0]
    usage, message = rest
    raise UsageError(message) if usage else PeerFailed(f"stopped because rank 0: {message}")


def _message(err: BaseException) -> str:
    return str(err) if isinstance(err, CatalystDeployError) else f"{type(err).__name__}: {_first_line(err)}"
