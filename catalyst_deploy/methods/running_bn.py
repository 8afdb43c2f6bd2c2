"""BatchNorm on its running statistics while a method decides (Catalyst's setting `running_bn`).

In training mode a BatchNorm normalises each sample with the statistics of the batch it came in, so a
sample's gradient depends on its batch-mates: two data-parallel ranks, each normalising half of the global
batch, follow another trajectory than one process with the whole batch (PyTorch's SyncBatchNorm, which would
share the statistics, runs on GPUs only). With the running statistics a sample's forward pass is its own, and
the ranks' averaged gradient is the one process's gradient up to round-off. Under `rewind` nothing the
deciding phase does to the weights is kept, so the phase need not keep the statistics current either.
"""

from __future__ import annotations

from typing import Callable

from torch import nn


def hold_running_stats(model: nn.Module) -> Callable[[], None]:
    """Make every BatchNorm in `model` normalise with its running statistics (which then stay as they are),
    whatever `model.train()` says meanwhile, until the returned function is called."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def to_running(module: nn.Module, args) -> None:
        module.training = False  # read by BatchNorm's forward, which runs right after this hook

    handles = [m.register_forward_pre_hook(to_running) for m in norms]

    def release() -> None:
        for handle in handles:
            handle.remove()
        for m in norms:
            m.train(model.training)

    return release
