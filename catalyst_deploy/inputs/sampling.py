"""The order of the training items and their random draws, as functions of (seed, epoch, item) only.

`EpochSampler` shuffles each epoch as a function of the seed and the epoch (torch-distributed's sampler: each
rank reads its share) and yields keys `epoch * n + index`; `SampleDraws` reads the item of each key with the
torch RNG seeded from (seed, epoch, index), so an item's augmentation (a crop, a flip) is the same whichever
rank, loader worker or process draws it. One process and W ranks with a W-times smaller batch then train on
the same augmented images, and a resumed run on the ones the interrupted run would have seen. Importing this
module loads no torch (the CLI's --help stays quick).
"""

from __future__ import annotations

import itertools

_MIX = 0x9E3779B97F4A7C15  # an odd 64-bit constant: spreads (seed, epoch, index) over the seed range


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of one item's draws, spread over the seed range so that neighbouring items, epochs and seeds
    do not share one (a collision is possible, only unlikely: it would repeat one item's crop)."""
    return ((((seed * _MIX + epoch) % 2**64) * _MIX + index) * _MIX) % 2**63


class EpochSampler:
    """A shuffled order of `n` items that depends only on (seed, epoch), as keys for `SampleDraws`, plus `skip`
    to start an epoch part-way without loading what is skipped (continuing a checkpointed run)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        from torch.utils.data import DistributedSampler

        self.inner = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.n, self.epoch, self.skip = n, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)
        self.epoch, self.skip = epoch, 0

    def __iter__(self):
        base = self.epoch * self.n
        return (base + index for index in itertools.islice(iter(self.inner), self.skip, None))

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class SampleDraws:
    """`dataset` read by `EpochSampler`'s keys: item `index`, its random draws from the torch RNG seeded with
    (seed, epoch, index); the RNG state outside is left as it was."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.n = dataset, seed, len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int):
        import torch

        epoch, index = divmod(int(key), self.n)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(self.seed, epoch, index))  # the CPU's alone: cheap
            return self.dataset[index]
