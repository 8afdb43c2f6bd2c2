"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# CI keeps shared/ beside the repository: <root>/main/tests/conftest.py -> <root>/shared
FASHION_MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


@pytest.fixture
def fashion_mnist_dir() -> Path:
    """The full Fashion-MNIST IDX files; skips the test when they are not on this machine."""
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"full Fashion-MNIST not found at {FASHION_MNIST_DIR}")
    return FASHION_MNIST_DIR
