"""The numeric check every export goes through: same input, exported runtime vs PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

from catalyst_deploy.errors import ExportValidationError

# Seed of the random validation inputs: fixed so that a failing check reproduces.
VALIDATION_SEED = 0


@dataclass(frozen=True)
class OutputCheck:
    """Largest |exported - PyTorch| over every checked output element, and the tolerance it met
    (the requested `atol` scaled by the output magnitude, see `check_outputs`)."""

    max_abs_diff: float
    atol: float


def random_input(shape: Sequence[int], seed: int = VALIDATION_SEED):
    """A reproducible standard-normal float32 CPU tensor of `shape`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def as_output_list(output) -> list:
    """A model output (tensor, or tuple/list of tensors) as a flat list of tensors."""
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in as_output_list(item)]
    return [output]


def check_outputs(fmt: str, expected: Sequence, actual: Sequence, atol: float) -> OutputCheck:
    """Compare two lists of arrays/tensors; raise ExportValidationError when they differ by more than the
    tolerance: `atol` for outputs of magnitude <= 1, `atol * max|expected|` beyond that (float round-off is
    relative: a random-init ResNet-50 with logits near 100 differs from ONNX Runtime by 5e-5, a
    ResNet-18 with logits near 6 by 3e-6). A shape mismatch or a NaN counts as an infinite difference.
    """
    import numpy as np

    expected, actual = [_as_numpy(t) for t in expected], [_as_numpy(t) for t in actual]
    scale = max([1.0] + [float(np.max(np.abs(ref))) for ref in expected if ref.size])
    tolerance = atol * scale if np.isfinite(scale) else atol
    worst = 0.0 if len(expected) == len(actual) else float("inf")
    for ref, got in zip(expected, actual):
        diff = float(np.max(np.abs(ref - got))) if ref.shape == got.shape and ref.size else float("inf")
        worst = max(worst, diff if np.isfinite(diff) else float("inf"))
    if not worst <= tolerance:
        raise ExportValidationError(fmt, worst, tolerance)
    return OutputCheck(worst, tolerance)


def _as_numpy(value):
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)
