"""The Catalyst regularizer (Jung & Lee, ICML 2025 HiLD workshop; DESIGN.md §2).

One auxiliary variable d >= 0 per channel, outside the model. The penalty lambda * sum_j d_j ||F_j|| is
minimised by a proximal step on both sides after each optimizer step, with the optimizer's learning
rate eta:

    F <- F * max(0, 1 - eta*lambda*d/||F||)      # group soft-threshold: exact zeros
    d <- max(0, d - eta*lambda*||F_old||)

Under this step alone d^2 - ||F||^2 is multiplied by (1 - eta^2 lambda^2), so the decision
c = d/||F|| (> 1: prune, < 1: keep) never flips without the task loss, and channels run away from
c = 1: pruned ones reach F = 0 exactly, kept ones d = 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from catalyst_deploy.catalyst.base import PruningMethod
from catalyst_deploy.surgery import ChannelGraph, ParamSlice, channel_norms

_TINY = 1e-12


class CatalystRegularizer(PruningMethod):
    """Catalyst with per-channel strength: `lam` (global, grown by the controller) times `boost` on the
    frozen prune set, which also gets its own constant step size once frozen (DESIGN.md §2.4)."""

    name = "catalyst"
    summary = "Catalyst product penalty d*||F|| with proximal updates: lossless, magnitude-fair cuts"

    def __init__(self, lam: float = 0.1, skip_normalized: bool = True, c0: float = 1.0):
        self.lam, self.skip_normalized, self.c0 = lam, skip_normalized, c0
        self.frozen: torch.Tensor | None = None  # bool mask of the frozen prune set
        self.frozen_step: float | None = None  # eta*lambda for the frozen set, constant
        self.history: list[tuple[int, float]] = []
        self.steps = 0

    # ---- PruningMethod -------------------------------------------------------------------------
    def start(self, graph: ChannelGraph) -> None:
        super().start(graph)
        self.slices: list[ParamSlice] = graph.producer_slices(self.skip_normalized)
        self.device = self.slices[0].param.device
        self._full = [_covers_whole_dim(s) for s in self.slices]
        self.d = self.c0 * self.norms()  # every channel starts at c = c0 (on the boundary for c0 = 1)
        self.zero_step = torch.zeros_like(self.d)  # step at which each channel's d reached 0

    def regularized_params(self) -> list[nn.Parameter]:
        return [s.param for s in self.slices]

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        step = torch.full_like(self.d, lr * self.lam)
        if self.frozen is not None:
            step = torch.where(self.frozen, torch.full_like(step, self.frozen_step), torch.zeros_like(step))
        self.prox(step)
        self.steps += 1

    def scores(self) -> torch.Tensor:
        """log c; channels whose d reached 0 (log c = -inf) rank below all others, the ones that got
        there last (the weakest keep signal) first among them, instead of in arbitrary tie order."""
        log_c = self.log_ratio()
        kept = torch.isneginf(log_c)
        below_all = -1000.0 - 1.0 / (1.0 + self.zero_step)  # log c of a float32 channel is > -104
        return torch.where(kept, below_all, log_c).cpu()

    def state(self) -> dict:
        return {
            "lambda_history": self.history,
            "frozen": int(self.frozen.sum()) if self.frozen is not None else None,
            "channels_at_zero": int((self.norms() == 0).sum()),
            "channels_d_zero": int((self.d == 0).sum()),
            "channels": self.graph.num_channels,
        }

    # ---- the update ------------------------------------------------------------------------------
    def norms(self) -> torch.Tensor:
        """||F|| per channel, on the parameters' device."""
        return channel_norms(self.slices, self.graph.num_channels).to(self.device)

    @torch.no_grad()
    def prox(self, step: torch.Tensor) -> None:
        """One proximal step with per-channel step size `step` = eta*lambda (all channels at once)."""
        norms = self.norms()
        scale = (1.0 - step * self.d / norms.clamp_min(_TINY)).clamp_min(0.0)
        scale = torch.where(norms > 0, scale, torch.zeros_like(scale))
        d_next = (self.d - step * norms).clamp_min(0.0)
        self.zero_step = torch.where((d_next == 0) & (self.d > 0), torch.full_like(self.zero_step, self.steps),
                                     self.zero_step)
        # the frozen prune set keeps its d: a fixed threshold that the task gradient cannot wear down
        self.d = d_next if self.frozen is None else torch.where(self.frozen, self.d, d_next)
        for s, full in zip(self.slices, self._full):
            factor = scale[s.chan]
            if not full:
                factor = torch.ones(s.param.shape[s.dim], device=self.device).index_copy_(0, s.pos, factor)
            shape = [1] * s.param.dim()
            shape[s.dim] = -1
            s.param.mul_(factor.view(shape).to(s.param.dtype))

    def ratio(self) -> torch.Tensor:
        """c = d/||F|| per channel (inf where F = 0 and d > 0; 0 where d = 0)."""
        norms = self.norms()
        return torch.where(norms > 0, self.d / norms.clamp_min(_TINY),
                           torch.where(self.d > 0, torch.full_like(norms, math.inf), torch.zeros_like(norms)))

    def log_ratio(self) -> torch.Tensor:
        """log c, with -inf for d = 0 and +inf for F = 0 (a score that sorts prune-first)."""
        return self.ratio().log()

    # ---- controller hooks ------------------------------------------------------------------------
    def set_lambda(self, lam: float, step: int) -> None:
        self.lam = lam
        self.history.append((step, lam))

    def freeze(self, prune: torch.Tensor, step_size: float) -> None:
        """Fix the prune set: kept channels get d = 0 (free from now on), the prune set is driven to
        exactly zero with the constant proximal step `step_size` (= eta*lambda, < 1).

        A frozen channel still at c <= 2 is lifted to c = 2, and its d stays fixed from then on: on the
        boundary c = 1, F and d would shrink by the same factor forever, and a channel the task loss
        still pulls on would wear d down to zero. With d fixed, every step soft-thresholds F by
        step_size * d, and F reaches exactly zero within a few steps."""
        prune = prune.to(self.device)
        self.frozen = prune
        self.frozen_step = step_size
        self.d = torch.where(prune, torch.maximum(self.d, 2.0 * self.norms()), torch.zeros_like(self.d))

    def frozen_at_zero(self) -> bool:
        return self.frozen is not None and bool((self.norms()[self.frozen] == 0).all())


def _covers_whole_dim(s: ParamSlice) -> bool:
    n = s.param.shape[s.dim]
    return len(s.pos) == n and bool((s.pos == torch.arange(n, device=s.pos.device)).all())
