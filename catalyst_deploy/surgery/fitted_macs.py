"""A MACs count from the groups' widths, fitted once by trial cuts: for a caller that counts often (Catalyst's
`center`, every few optimizer steps), where a trial cut (copy the model, cut it, run it on the meta device)
takes about 0.1 s on a resnet50 and a call of the fitted count well under a millisecond.

Channel pruning leaves every layer's MACs proportional to its kept inputs times its kept outputs, each a sum of
group widths, so the MACs are a polynomial of degree two in the groups' prune counts whose products come only
from pairs of groups that meet in a layer (`coupled_pairs`). `fit_count` measures its coefficients with trial
cuts and keeps it only if it gives exactly the trial cuts' MACs on random cuts; otherwise (or when the fit
would take too many trial cuts) the caller keeps the trial cuts.

    count = fit_count(graph.sizes, graph.trial_macs, coupled_pairs(graph), round_to=8)   # None: not exact
    count(mask) == graph.trial_macs(mask)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from catalyst_deploy.surgery.allocation import MacsOracle, limit, offsets_of

if TYPE_CHECKING:
    from catalyst_deploy.surgery.graph import ChannelGraph

MAX_FIT_CUTS = 400  # `fit_count`: beyond this many trial cuts the fit costs more than it saves in a phase


def coupled_pairs(graph: ChannelGraph) -> list[tuple[int, int]]:
    """Pairs (g, h), g <= h, of groups whose widths a MACs count can multiply: g cuts a layer's inputs and h
    its outputs (a conv's MACs are its kept inputs times its kept outputs), or both cut one attention module
    or bare parameter; every (g, g) too. Read from one-channel plans."""
    cuts_in, cuts_out, other = {}, {}, {}
    for g in range(len(graph.groups)):
        mask = torch.zeros(graph.num_channels, dtype=torch.bool)
        mask[graph.offsets[g]] = True
        plan = graph.plan_for(mask)
        for name, entry in plan["layers"].items():
            for kind, found in (("in", cuts_in), ("out", cuts_out)):
                if kind in entry:
                    found.setdefault(name, set()).add(g)
        for name in [*plan.get("attention", {}), *plan.get("params", {})]:
            other.setdefault(name, set()).add(g)
    pairs = {(g, g) for g in range(len(graph.groups))}
    for name, inputs in cuts_in.items():
        pairs.update((min(g, h), max(g, h)) for g in inputs for h in cuts_out.get(name, ()))
    for groups in other.values():
        pairs.update((g, h) for g in groups for h in groups if g <= h)
    return sorted(pairs)


class QuadraticCount:
    """A MACs oracle from the groups' prune counts alone: MACs = c + sum_g a_g n_g + sum_(g,h) b_gh n_g n_h over
    the `pairs` of groups that meet in a layer (`coupled_pairs`); made by `fit_count`."""

    def __init__(self, sizes: Sequence[int], constant: float, linear: torch.Tensor, pairs: Sequence[tuple[int, int]],
                 products: torch.Tensor):
        self.group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(list(sizes)))
        self.constant, self.linear, self.products = constant, linear, products
        self.first = torch.tensor([g for g, _ in pairs], dtype=torch.long)
        self.second = torch.tensor([h for _, h in pairs], dtype=torch.long)

    def counts(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(self.linear), dtype=torch.float64).index_add_(0, self.group, mask.double())

    def __call__(self, mask: torch.Tensor) -> int:
        n = self.counts(mask)
        products = self.products * n[self.first] * n[self.second]
        total = self.constant + float((self.linear * n).sum()) + float(products.sum())
        return int(round(total))


def fit_count(sizes: Sequence[int], macs_of: MacsOracle, pairs: Sequence[tuple[int, int]], round_to: int | None = None,
              max_ratio: float = 0.9, checks: int = 3, seed: int = 0, max_cuts: int = MAX_FIT_CUTS,
              unit_width: Sequence[int] | None = None) -> QuadraticCount | None:
    """A `QuadraticCount` for `macs_of` (at most 1 + 2 G + |pairs| trial cuts), or None when it does not reproduce
    `macs_of` exactly on `checks` random cuts within the limits (`round_to` counted in `unit_width` channels, as
    in `allocation.limit`): a layer whose count is not of that form; or when a probe cannot be cut; or when the
    fit would take more than `max_cuts` trial cuts (a DenseNet, whose every layer reads all earlier ones)."""
    if 1 + 2 * len(sizes) + len(pairs) + checks > max_cuts:
        return None
    try:
        return _fit_count(sizes, macs_of, pairs, round_to, max_ratio, checks, seed, unit_width)
    except Exception:  # noqa: BLE001 - a probe the oracle cannot cut: no fitted count, the trial cuts stay
        return None


def _fit_count(sizes, macs_of, pairs, round_to, max_ratio, checks, seed, unit_width) -> QuadraticCount | None:
    offsets = offsets_of(sizes)

    def cut(counts: dict[int, int]) -> torch.Tensor:
        mask = torch.zeros(offsets[-1], dtype=torch.bool)
        for g, k in counts.items():
            mask[offsets[g]:offsets[g] + k] = True
        return mask

    base = float(macs_of(cut({})))
    one = [float(macs_of(cut({g: 1}))) - base for g in range(len(sizes))]
    two = [float(macs_of(cut({g: 2}))) - base if size > 2 else 2 * one[g] for g, size in enumerate(sizes)]
    square = [(two[g] - 2 * one[g]) / 2 for g in range(len(sizes))]  # n = 1: a + b; n = 2: 2a + 4b
    linear = torch.tensor([one[g] - square[g] for g in range(len(sizes))], dtype=torch.float64)
    products = []
    for g, h in pairs:
        if g == h:
            products.append(square[g])
        else:
            both = float(macs_of(cut({g: 1, h: 1}))) - base
            products.append(both - one[g] - one[h])
    count = QuadraticCount(sizes, base, linear, pairs, torch.tensor(products, dtype=torch.float64))
    generator = torch.Generator().manual_seed(seed)
    priority = torch.rand(offsets[-1], generator=generator)
    for _ in range(checks):
        share = torch.rand(len(sizes), generator=generator)[count.group]
        mask = limit(torch.rand(offsets[-1], generator=generator) < share, priority, sizes, round_to, max_ratio,
                     unit_width)
        if count(mask) != macs_of(mask):
            return None
    return count
