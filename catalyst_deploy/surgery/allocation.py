"""How many channels each group loses and which ones: pure functions of a per-channel priority.

A *priority* holds one number per global channel of a `graph.ChannelGraph` (higher = pruned first; the
opposite sign of torch-pruning's importance). `sizes` are the groups' channel counts, in graph order.
MACs come from an oracle `macs_of(mask) -> int` (in the pipeline: `ChannelGraph.trial_macs`, which
measures a real cut), so nothing here estimates a cost.

    mask = select_to_target(priority, graph.sizes, graph.trial_macs, 0.5 * dense_macs, round_to=8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Sequence

import torch

from catalyst_deploy.errors import CatalystDeployError

MacsOracle = Callable[[torch.Tensor], int]
CLOSE_ENOUGH = 0.995  # a cut within half a percent under the target is not worth more trial cuts


@dataclass(frozen=True)
class Budget:
    """Everything that decides how a priority becomes a prune set: the groups' sizes, the MACs oracle and
    target, the per-group limits, and (latency-aware pruning) one weight per group."""

    sizes: tuple[int, ...]
    macs_of: MacsOracle
    target_macs: float
    round_to: int | None = 8
    max_ratio: float = 0.9
    group_weight: torch.Tensor | None = None
    unit_width: tuple[int, ...] | None = None  # channels per unit (an attention head: head_dim); None: all 1

    def select(self, priority: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """`select_to_target` under this budget (latency-weighted when `group_weight` is set)."""
        if self.group_weight is not None:
            priority = latency_weighted(priority, self.sizes, self.group_weight)
        return select_to_target(priority, self.sizes, self.macs_of, self.target_macs, self.round_to, self.max_ratio,
                                candidates, self.unit_width)

    def prefix(self, priority: torch.Tensor, hint: int | None = None,
               macs_of: MacsOracle | None = None) -> tuple[int, torch.Tensor]:
        """(k, cut): the shortest prefix of channels by descending `priority` whose cut (after `limit`) meets the
        target, without `select`'s fill-back: a cheaper count for a caller that looks often (Catalyst's `center`),
        a galloping search from `hint` (an earlier k), counted by `macs_of` (default: the budget's oracle; a
        caller may pass a cheaper exact one, `fitted_macs.fit_count`). The target must be reachable
        (`largest_cut_macs`)."""
        if self.group_weight is not None:
            priority = latency_weighted(priority, self.sizes, self.group_weight)
        count = macs_of or self.macs_of
        mask_of, n = prefix_masks(priority, self.sizes, self.round_to, self.max_ratio, self.unit_width)
        k = smallest_prefix(lambda j: count(mask_of(j)) <= self.target_macs, n, hint)
        return k, mask_of(k)

    def limit(self, chosen: torch.Tensor, priority: torch.Tensor, round_to: int | None = None) -> torch.Tensor:
        return limit(chosen, priority, self.sizes, round_to, self.max_ratio, self.unit_width)

    def largest_cut_macs(self) -> int:
        """MACs left by the largest cut these limits allow: the least a target can ask for."""
        return largest_cut_macs(self.sizes, self.macs_of, self.round_to, self.max_ratio, self.unit_width)


def offsets_of(sizes: Sequence[int]) -> list[int]:
    out = [0]
    for size in sizes:
        out.append(out[-1] + size)
    return out


def units_per_block(round_to: int | None, width: int) -> int | None:
    """`round_to` channels in units of `width` channels each: an attention head of 64 channels is its own
    block (1), a plain channel keeps `round_to`."""
    return None if not round_to else max(1, math.ceil(round_to / width))


def _group_rounding(sizes: Sequence[int], round_to: int | None, unit_width: Sequence[int] | None) -> list:
    return [units_per_block(round_to, w) for w in (unit_width or [1] * len(sizes))]


def allowed_prune_count(size: int, wanted: int, round_to: int | None, max_ratio: float) -> int:
    """How many of `wanted` channels a group of `size` may lose: it keeps >= (1 - max_ratio) of them, at
    least one `round_to` block, and a multiple of `round_to`."""
    keep_min = max(1, math.ceil(size * (1.0 - max_ratio)), min(round_to or 1, size))
    prune = min(wanted, size - keep_min)
    if round_to and round_to > 1 and size > round_to:
        keep = min(size, math.ceil((size - prune) / round_to) * round_to)
        prune = size - keep
    return max(0, prune)


def limit(chosen: torch.Tensor, priority: torch.Tensor, sizes: Sequence[int], round_to: int | None,
          max_ratio: float, unit_width: Sequence[int] | None = None) -> torch.Tensor:
    """Trim a boolean prune mask to what each group may lose (`allowed_prune_count`, with `round_to`
    counted in each group's units), dropping the lowest-priority picks."""
    offsets = offsets_of(sizes)
    rounding = _group_rounding(sizes, round_to, unit_width)
    out = torch.zeros_like(chosen)
    for g, size in enumerate(sizes):
        lo = offsets[g]
        picked = chosen[lo:lo + size].nonzero().flatten()
        allowed = allowed_prune_count(size, len(picked), rounding[g], max_ratio)
        if allowed > 0:
            out[lo + picked[priority[lo:lo + size][picked].argsort(descending=True)[:allowed]]] = True
    return out


def select_to_target(priority: torch.Tensor, sizes: Sequence[int], macs_of: MacsOracle, target_macs: float,
                     round_to: int | None = 8, max_ratio: float = 0.9,
                     candidates: torch.Tensor | None = None, unit_width: Sequence[int] | None = None) -> torch.Tensor:
    """The smallest prefix of channels in descending `priority` (restricted to `candidates`) whose removal,
    after `limit`, brings the measured MACs to <= `target_macs`; then filled back toward the target.

    Raises CatalystDeployError when even the largest allowed cut stays above the target.
    """
    mask_of, hi = prefix_masks(priority, sizes, round_to, max_ratio, unit_width, candidates)
    smallest = macs_of(mask_of(hi))
    if smallest > target_macs:
        raise CatalystDeployError(f"the FLOPs target ({target_macs / 1e6:.3g}M MACs) cannot be reached: the largest "
                                  f"allowed cut leaves {smallest / 1e6:.3g}M (at most {max_ratio:.0%} of each "
                                  "layer's channels removed, counts in multiples of --round-to): raise the target, "
                                  "--max-layer-ratio, or lower --round-to")
    lo = smallest_prefix(lambda k: macs_of(mask_of(k)) <= target_macs, hi)
    mask = _closest_feasible_prefix(mask_of, macs_of, lo, target_macs, round_to)
    return _restore_blocks(mask, priority, sizes, macs_of, target_macs, _group_rounding(sizes, round_to, unit_width))


def prefix_masks(priority: torch.Tensor, sizes: Sequence[int], round_to: int | None, max_ratio: float,
                 unit_width: Sequence[int] | None = None, candidates: torch.Tensor | None = None):
    """(mask_of, n): mask_of(k) is the cut of the first k of the n channels (of `candidates`) in descending
    `priority`, after `limit`."""
    order = priority.argsort(descending=True)
    if candidates is not None:
        order = order[candidates[order]]

    def mask_of(k: int) -> torch.Tensor:
        m = torch.zeros(len(priority), dtype=torch.bool)
        m[order[:k]] = True
        return limit(m, priority, sizes, round_to, max_ratio, unit_width)
    return mask_of, len(order)


def smallest_prefix(fits: Callable[[int], bool], n: int, hint: int | None = None) -> int:
    """The smallest k in [0, n] with fits(k), for a monotone `fits` with fits(n) true. Without `hint` a binary
    search; with one, a galloping search out from it (a few trial cuts when the answer moved little)."""
    lo, hi = 0, n
    if hint is not None and 0 <= hint < n:
        step = 1
        if fits(hint):  # the answer is at or below the hint
            hi = hint
            while hi - step >= 0 and fits(hi - step):
                hi, step = hi - step, 2 * step
            lo = max(0, hi - step + 1)
        else:
            lo = hint + 1
            while lo + step - 1 < n and not fits(lo + step - 1):
                lo, step = lo + step, 2 * step
            hi = min(n, lo + step - 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def largest_cut_macs(sizes: Sequence[int], macs_of: MacsOracle, round_to: int | None, max_ratio: float,
                     unit_width: Sequence[int] | None = None) -> int:
    """MACs left by the largest cut the per-group limits allow: the least a target can ask for."""
    everything = torch.ones(sum(sizes), dtype=torch.bool)
    return macs_of(limit(everything, torch.zeros(sum(sizes)), sizes, round_to, max_ratio, unit_width))


def group_ranks(priority: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Each channel's rank by `priority` within its own group: 0 for the group's lowest, size - 1 for its
    highest (float, one per global channel)."""
    return torch.cat([part.argsort().argsort().float() for part in priority.split(list(sizes))])


def latency_weighted(priority: torch.Tensor, sizes: Sequence[int], group_weight: torch.Tensor) -> torch.Tensor:
    """Latency-aware priority: the rank within each group spread over (0, 1], times the group's weight
    (measured ms per MAC relative to the median, to a power; `bench.layer_latency`). Which channels go
    within a layer follows `priority`; how many per layer follows the weights."""
    counts = torch.tensor(list(sizes))
    per_channel = torch.repeat_interleave(counts, counts).float()
    return (group_ranks(priority, sizes) + 1) / per_channel * torch.repeat_interleave(group_weight.float(), counts)


def _closest_feasible_prefix(mask_of, macs_of: MacsOracle, k: int, target_macs: float, round_to: int | None,
                             tries: int = 8) -> torch.Tensor:
    """Rounding makes MACs(k) step unevenly, so a slightly shorter prefix can also meet the target with
    more MACs left: try a few and keep the feasible cut closest to the target."""
    best = mask_of(k)
    best_macs = macs_of(best)
    step = max(1, round_to or 1)
    for j in range(1, tries + 1):
        if k - j * step < 0:
            break
        mask = mask_of(k - j * step)
        macs = macs_of(mask)
        if best_macs < macs <= target_macs:
            best, best_macs = mask, macs
    return best


def _restore_blocks(mask: torch.Tensor, priority: torch.Tensor, sizes: Sequence[int], macs_of: MacsOracle,
                    target_macs: float, rounding: Sequence[int | None]) -> torch.Tensor:
    """One greedy pass: give each group back one block (its `rounding` in units) of its lowest-priority
    pruned channels while the measured MACs stay within the target (smallest groups first)."""
    if macs_of(mask) >= CLOSE_ENOUGH * target_macs:
        return mask
    offsets = offsets_of(sizes)
    pruned_groups = [g for g in range(len(sizes)) if mask[offsets[g]:offsets[g + 1]].any()]
    for g in sorted(pruned_groups, key=lambda g: sizes[g]):
        lo, block = offsets[g], max(1, rounding[g] or 1)
        picked = mask[lo:lo + sizes[g]].nonzero().flatten()
        if len(picked) < block:
            continue
        trial = mask.clone()
        trial[lo + picked[priority[lo:lo + sizes[g]][picked].argsort()[:block]]] = False
        macs = macs_of(trial)
        if macs <= target_macs:
            mask = trial
            if macs >= CLOSE_ENOUGH * target_macs:
                break
    return mask
