"""Multi-process fine-tuning under torchrun: the process group, DDP around each training phase, and the
checks that keep every rank's pruning decisions identical (docs/distributed.md).

    torchrun --nproc-per-node 8 -m catalyst_deploy prune torchvision:resnet50 --data imagefolder:/data/imagenet ...

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. Without them (or with WORLD_SIZE=1) everything here is the
identity: `init` starts no process group, `ddp` yields the model itself, `is_main()` is True, the
collectives return their input and the checks check nothing, so a single process runs exactly as before.

Rules the pipeline follows with these helpers:
- rank 0 decides what is read or written (`from_main`, `claim_on_main`); the other ranks write nothing;
- what a method decides is computed from synchronised state on every rank and compared by hash
  (`check_identical`) at Catalyst's freeze and at the cut; a difference stops every rank;
- a rank that fails records its message in the rendezvous store and tears its process group down, so that
  a rank blocked in a collective fails at once and names it (`failure_boundary`); a rank that hangs is
  caught by the collective timeout (`dist_timeout_s`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from catalyst_deploy.run.ranks import (DistributedError, FAILURE_KEY, PEER_GRACE_S, PERTURB_ENV, PeerFailed, RankMismatch, active, all_reduce_sum, any_rank, average_buffers, broadcast, broadcast_state, failure_boundary, from_main, init, is_main, launched, rank, shutdown, world_size)  # noqa: F401 (the low-level half, re-exported)


# ---- the decision check ---------------------------------------------------------------------------
def digest(value: Any) -> str:
    """A short hash of a tensor (dtype, shape and bytes), a module's state dict, or a JSON-able value."""
    h = hashlib.sha256()
    if isinstance(value, nn.Module):
        for name, t in value.state_dict().items():
            h.update(name.encode() + digest(t).encode())
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{t.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def check_identical(where: str, state: dict[str, Any]) -> None:
    """Compare the hash of each entry of `state` (the decision state: prune mask, d, lambda...) across ranks.

    Raises RankMismatch on every rank, naming the entries and the ranks that differ from rank 0, when
    they are not identical; does nothing in a single process.
    """
    if not active():
        return
    mine = {key: digest(value) for key, value in _perturbed(state).items()}
    every: list = [None] * world_size()
    dist.all_gather_object(every, mine)
    keys = set().union(*every)
    differ = sorted(key for key in keys if any(other.get(key) != every[0].get(key) for other in every))
    if differ:
        # every rank has its copy of the hashes before any rank stops (a rank leaving at once could cut the
        # gather short for a slower one, which would then see a broken connection instead of this message)
        dist.barrier()
        ranks = [r for r, other in enumerate(every) if other != every[0]]
        raise RankMismatch(f"the ranks disagree at the {where} on {', '.join(differ)}: rank(s) "
                           f"{', '.join(map(str, ranks))} differ from rank 0; every rank stopped (the decisions must "
                           "be computed from synchronised state: see docs/distributed.md)")


def _perturbed(state: dict[str, Any]) -> dict[str, Any]:
    """Tests only (PERTURB_ENV="RANK:KEY"): this rank's `state` with KEY altered, to show that the check
    stops every rank; `state` itself otherwise."""
    target_rank, _, key = os.environ.get(PERTURB_ENV, "").partition(":")
    if target_rank != str(rank()) or key not in state:
        return state
    value = state[key]
    if isinstance(value, torch.Tensor):
        value = value.detach().clone().reshape(-1)
        value[0] = ~value[0] if value.dtype == torch.bool else value[0] + 1
    else:
        value = [value, "perturbed"]
    return {**state, key: value}


# ---- DDP around a training phase ----------------------------------------------------------------------
@contextmanager
def ddp(model: nn.Module, device: torch.device, sync_bn: bool = False) -> Iterator[nn.Module]:
    """`model` wrapped in DistributedDataParallel for one training phase; the bare model in a single process.

    With `sync_bn` its BatchNorms synchronise their batch statistics across ranks (converted in place before
    wrapping, back after). Buffers are not broadcast at every step (each rank tracks its batches'
    statistics); when the phase ends the wrapper is dropped and the ranks average them (`average_buffers`).
    """
    if not active():
        yield model
        return
    from torch.nn.parallel import DistributedDataParallel

    swapped = sync_batchnorm(model) if sync_bn else []
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      **_no_buffer_sync())
    try:
        yield wrapped
    finally:
        del wrapped  # its reducer's gradient hooks go with it: the next phase wraps the same parameters again
        restore_batchnorm(swapped)
    average_buffers(model)


def _no_buffer_sync() -> dict:
    """DDP's option for not broadcasting rank 0's buffers before every forward (renamed in recent torch)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if renamed else "broadcast_buffers": False}


def sync_batchnorm(model: nn.Module) -> list[tuple[nn.Module, type]]:
    """Make every BatchNorm of `model` a SyncBatchNorm in place; returns what `restore_batchnorm` undoes.

    In place, not `nn.SyncBatchNorm.convert_sync_batchnorm` (which builds new modules): the channel graph,
    the plan and Catalyst's gates (parametrizations of the BN scale and shift) keep pointing at these
    modules, and a parametrized BN cannot be copied into a new module.
    """
    swapped = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
            swapped.append((module, type(module)))
            module.__class__ = _synced(type(module))
            module.process_group = None  # the default group: every rank
    return swapped


def restore_batchnorm(swapped: list[tuple[nn.Module, type]]) -> None:
    """Give back the BatchNorm classes `sync_batchnorm` replaced (plain BatchNorms export everywhere)."""
    for module, cls in swapped:
        module.__class__ = cls
        del module.process_group


@cache
def _synced(cls: type) -> type:
    """`cls` (a BatchNorm class, possibly parametrize's subclass of one: its gated properties stay first in
    line) with SyncBatchNorm's forward; an instance is an `nn.SyncBatchNorm` for every isinstance check."""
    return type(f"Sync{cls.__name__}", (cls, nn.SyncBatchNorm), {"forward": nn.SyncBatchNorm.forward})


# ---- data and files ----------------------------------------------------------------------------------------
def shard_eval_loader(loader):
    """This rank's share of an evaluation loader (items rank, rank + W, ...: no padding, so the all-reduced
    counts of `train.evaluate` cover every item once); the loader itself in a single process."""
    if not active() or loader is None:
        return loader
    from torch.utils.data import DataLoader, Subset

    share = Subset(loader.dataset, range(rank(), len(loader.dataset), world_size()))
    return DataLoader(share, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=False, persistent_workers=loader.num_workers > 0)


class ReadOnlyFolder:
    """The run folder as a rank other than 0 sees it: rank 0's path, and nothing written."""

    def __init__(self, path: Path):
        self.path, self.files = Path(path), []

    def file(self, name: str) -> Path:
        return self.path / name

    def write_with(self, name: str, write) -> Path:
        raise RuntimeError(f"rank {rank()} tried to write {name}: only rank 0 writes")

    record = write_text = write_with

    def finish(self, status: str = "done") -> None:
        """Rank 0 marks the folder."""

    def fail(self, remove_written: bool) -> None:
        """Rank 0 marks the folder or removes what it wrote."""

    def drop_previous(self, checkpoints: bool = False) -> None:
        """Rank 0 removes the replaced run's files."""


def claim_on_main(claim: Callable) -> Callable:
    """`claim` (rundir.claim_run_folder) made rank-aware: rank 0 claims the folder, every other rank gets a
    ReadOnlyFolder of the same path, or rank 0's UsageError. Unchanged in a single process."""
    if getattr(claim, "rank_aware", False):
        return claim

    def claim_folder(out, **kwargs):
        if not active():
            return claim(out, **kwargs)
        claimed = {}

        def on_main() -> str:
            claimed["folder"] = claim(out, **kwargs)
            return str(claimed["folder"].path)

        path = from_main(on_main)
        return claimed.get("folder") or ReadOnlyFolder(Path(path))

    claim_folder.rank_aware = True
    return claim_folder
