"""The pretrained model `catalyst-deploy demo` starts from: `zoo:small_resnet` (32-64-128) trained on the
full Fashion-MNIST training split minus the 5,000-image validation split compare.py holds out, 10 epochs
(SGD 0.1 cosine, momentum 0.9, weight decay 5e-4, batch 128, seed 0): compare.py's dense model of seed 0.

    python benchmarks/train_demo_model.py          # trains (or takes compare.py's cached seed-0 model)

Writes catalyst_deploy/pretrained/fashion_small_resnet.pt (a state dict: the demo loads it with
weights_only=True, like any --weights file) and fashion_small_resnet.json (recipe and test accuracy).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_dense import DenseRecipe, cached_dense_model  # noqa: E402

from catalyst_deploy.inputs.data import load_dataset, make_loaders  # noqa: E402
from catalyst_deploy.inputs.models import load_model  # noqa: E402

DATA = f"fashion-mnist:{HERE.parents[1] / 'shared' / 'data' / 'fashion-mnist'}"
TARGET = HERE.parent / "catalyst_deploy" / "pretrained" / "fashion_small_resnet"


def main() -> int:
    torch.set_num_threads(1)
    splits = load_dataset(DATA, val_size=5000)
    recipe = DenseRecipe((32, 64, 128), 10.0, 0.1, 0.9, 5e-4, 128, None, None, DATA, val_size=5000)
    dense = cached_dense_model(recipe, 0, make_loaders(splits, 128, seed=0), torch.device("cpu"), HERE / "cache")
    model = load_model(str(dense.path))
    TARGET.parent.mkdir(exist_ok=True)
    torch.save(model.state_dict(), TARGET.with_suffix(".pt"))
    meta = {"architecture": "zoo:small_resnet (in_channels 1, 10 classes, widths 32-64-128)",
            "recipe": {k: v for k, v in asdict(recipe).items() if k != "data"}, "data": "Fashion-MNIST training split "
            "minus compare.py's 5,000-image validation split", "test_accuracy": dense.accuracy,
            "made_by": "python benchmarks/train_demo_model.py"}
    TARGET.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {TARGET.with_suffix('.pt')} ({dense.accuracy:.2f}% on the test split)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
