"""benchmarks/compare_runs.py: a cached record is reused only with the dense model it was made from."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from compare_runs import dense_digest, same_dense  # noqa: E402


def dense_file(tmp_path: Path, content: bytes, accuracy: float) -> SimpleNamespace:
    path = tmp_path / "dense_s0.pt"
    path.write_bytes(content)
    return SimpleNamespace(path=path, accuracy=accuracy)


def test_a_record_is_reused_with_the_dense_model_it_was_made_from(tmp_path):
    dense = dense_file(tmp_path, b"weights A", 91.68)
    record = {"acc_final": 90.0, "acc_dense": 91.68, "dense_sha256": dense_digest(dense)}
    assert same_dense(record, dense, "k") is record


def test_a_dense_model_retrained_under_the_same_name_is_refused(tmp_path):
    made_from = dense_file(tmp_path, b"weights A", 91.68)
    record = {"acc_final": 90.0, "acc_dense": 91.68, "dense_sha256": dense_digest(made_from)}
    retrained = dense_file(tmp_path, b"weights B", 91.68)  # same file name and accuracy, other weights
    with pytest.raises(SystemExit, match="made from another dense_s0.pt"):
        same_dense(record, retrained, "k")


def test_an_older_record_without_a_digest_is_checked_by_its_dense_accuracy(tmp_path):
    dense = dense_file(tmp_path, b"weights B", 91.42)
    with pytest.raises(SystemExit, match="accuracy 91.68 there, 91.42 here"):
        same_dense({"acc_dense": 91.68}, dense, "k")
    assert same_dense({"acc_dense": 91.42}, dense, "k") == {"acc_dense": 91.42}
