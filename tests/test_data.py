"""Dataset specs (catalyst_deploy.inputs.data) on small synthetic files in the real formats, the demo and Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from catalyst_deploy.inputs.data import Augmentation, load_dataset, make_loaders
from catalyst_deploy.errors import UsageError

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def write_idx(path, array: np.ndarray, magic: int, gz: bool) -> None:
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_folder(root, *, gz: bool, n_train: int = 12, n_test: int = 6):
    """IDX files whose image i is filled with the value 10 * label and label i = i % 10."""
    root.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.repeat(10 * labels, 28 * 28).reshape(n, 28, 28)
        write_idx(root / f"{split}-images-idx3-ubyte", images, 2051, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels, 2049, gz)
    return root


def cifar_records(n: int, label_bytes: int) -> np.ndarray:
    """n records: labels (coarse = 99 - fine for CIFAR-100), then R=label, G=2*label, B=255 planes."""
    labels = np.arange(n) % 10
    records = np.zeros((n, label_bytes + 3072), np.uint8)
    records[:, label_bytes - 1] = labels
    if label_bytes == 2:
        records[:, 0] = 99 - labels
    planes = records[:, label_bytes:].reshape(n, 3, 1024)
    planes[:, 0], planes[:, 1], planes[:, 2] = labels[:, None], 2 * labels[:, None], 255
    records[:, label_bytes:] = planes.reshape(n, 3072)
    return records


def make_cifar10(root):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        cifar_records(4, 1).tofile(folder / f"data_batch_{i}.bin")
    cifar_records(20, 1).tofile(folder / "test_batch.bin")
    return folder


# ---- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_gzipped_or_not_load_with_labels_and_normalisation(tmp_path, gz):
    splits = load_dataset(f"fashion-mnist:{make_idx_folder(tmp_path / 'fm', gz=gz)}")
    assert (len(splits.train), len(splits.test)) == (12, 6)
    info = splits.info
    assert (info.name, info.num_classes, info.channels, info.image_size) == ("fashion-mnist", 10, 1, (28, 28))
    image, label = splits.test[3]
    assert label == 3 and image.shape == (1, 28, 28)
    assert torch.allclose(image, torch.full_like(image, (30 / 255 - FMNIST_MEAN) / FMNIST_STD), atol=1e-5)


def test_idx_bad_magic_truncated_file_and_count_mismatch_are_usage_errors(tmp_path):
    root = make_idx_folder(tmp_path / "bad", gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(12), 2051, gz=False)
    with pytest.raises(UsageError, match="not an IDX labels file.*magic number 2051, expected 2049"):
        load_dataset(f"mnist:{root}")
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(11), 2049, gz=False)
    with pytest.raises(UsageError, match="12 images but 11 labels"):
        load_dataset(f"mnist:{root}")
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(12), 2049, gz=False)
    images = root / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(UsageError, match="header says shape"):
        load_dataset(f"mnist:{root}")


def test_idx_missing_files_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path / 'empty'}")
    with pytest.raises(UsageError, match="dataset folder not found"):
        load_dataset(f"mnist:{tmp_path / 'absent'}")


def test_channels_and_image_size_conversions(tmp_path):
    splits = load_dataset(f"mnist:{make_idx_folder(tmp_path / 'm', gz=True)}", channels=3, image_size=(40, 36))
    assert splits.info.channels == 3 and splits.info.mean == (0.1307,) * 3
    image, _ = splits.test[5]
    assert image.shape == (3, 40, 36)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert torch.allclose(image, torch.full_like(image, (50 / 255 - 0.1307) / 0.3081), atol=1e-4)


def test_train_items_are_augmented_test_items_are_not(tmp_path):
    splits = load_dataset(f"fashion-mnist:{make_idx_folder(tmp_path / 'a', gz=False)}")
    torch.manual_seed(0)
    assert len({splits.train[7][0].sum().item() for _ in range(20)}) > 1  # crops shift zero padding in
    assert torch.equal(splits.test[3][0], splits.test[3][0])


def test_augmentation_crops_within_padding_and_flips():
    torch.manual_seed(0)
    row = torch.arange(1.0, 5.0).view(1, 1, 4)
    flips = {tuple(Augmentation(horizontal_flip=True)(row).flatten().tolist()) for _ in range(20)}
    assert flips == {(1.0, 2.0, 3.0, 4.0), (4.0, 3.0, 2.0, 1.0)}
    crops = [Augmentation(crop_padding=1)(torch.ones(1, 5, 5)) for _ in range(30)]
    assert all(c.shape == (1, 5, 5) and c[0, 1:4, 1:4].eq(1).all() for c in crops)  # shifted by 1 at most
    assert any(c.sum() < 25 for c in crops)


def test_limits_take_the_same_subset_each_time(tmp_path):
    root = make_idx_folder(tmp_path / "l", gz=False, n_train=50, n_test=20)
    first = load_dataset(f"mnist:{root}", train_limit=10, test_limit=5)
    again = load_dataset(f"mnist:{root}", train_limit=10, test_limit=5)
    assert (len(first.train), len(first.test)) == (10, 5)
    assert first.train.indices == again.train.indices != list(range(10))
    assert len(load_dataset(f"mnist:{root}", train_limit=1000).train) == 50
    with pytest.raises(UsageError, match="train_limit must be >= 1"):
        load_dataset(f"mnist:{root}", train_limit=0)


# ---- CIFAR binary ------------------------------------------------------------------------------


def test_cifar10_binary_from_folder_or_parent(tmp_path):
    folder = make_cifar10(tmp_path)
    for spec in (f"cifar10:{folder}", f"cifar10:{tmp_path}"):
        splits = load_dataset(spec)
        assert (len(splits.train), len(splits.test), splits.info.num_classes) == (20, 20, 10)
        assert splits.info.image_size == (32, 32) and splits.info.channels == 3
    image, label = splits.test[7]
    raw = torch.tensor([7, 14, 255]) / 255.0
    expected = (raw - torch.tensor(splits.info.mean)) / torch.tensor(splits.info.std)
    assert label == 7 and image.shape == (3, 32, 32)
    assert torch.allclose(image[:, 5, 9], expected, atol=1e-5)


def test_cifar_to_one_channel_averages(tmp_path):
    splits = load_dataset(f"cifar10:{make_cifar10(tmp_path)}", channels=1)
    assert splits.info.channels == 1 and splits.info.mean == (round((0.4914 + 0.4822 + 0.4465) / 3, 4),)
    image, _ = splits.test[3]
    gray = (3 + 6 + 255) / 3 / 255
    assert image.shape == (1, 32, 32)
    assert torch.allclose(image, torch.full_like(image, (gray - splits.info.mean[0]) / splits.info.std[0]), atol=1e-4)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    cifar_records(10, 2).tofile(folder / "train.bin")
    cifar_records(10, 2).tofile(folder / "test.bin")
    splits = load_dataset(f"cifar100:{tmp_path}")
    assert splits.info.num_classes == 100
    assert [splits.test[i][1] for i in range(10)] == list(range(10))  # not the coarse 99 - label


def test_cifar_wrong_size_or_layout_is_a_usage_error(tmp_path):
    folder = make_cifar10(tmp_path)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(UsageError, match="not a whole number of 3073-byte records"):
        load_dataset(f"cifar10:{folder}")
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(UsageError, match="cifar-10-batches-bin/ with data_batch_1.bin"):
        load_dataset(f"cifar10:{folder}")


# ---- image folders -----------------------------------------------------------------------------


def make_image_folder(root, layout: dict[str, dict[str, int]]):
    """PNGs at root/SPLIT/CLASS/i.png, solid gray with value 40 * class index + 20."""
    from PIL import Image

    for split, classes in layout.items():
        for class_name, count in classes.items():
            (root / split / class_name).mkdir(parents=True)
            value = 40 * "abc".index(class_name) + 20
            for i in range(count):
                Image.new("RGB", (40, 30), (value, value, value)).save(root / split / class_name / f"{i}.png")
    return root


def test_imagefolder_splits_transforms_and_class_indices(tmp_path):
    root = make_image_folder(tmp_path, {"train": {"a": 2, "b": 2, "c": 1}, "val": {"a": 1, "c": 2}})
    splits = load_dataset(f"imagefolder:{root}", image_size=(24, 24))
    assert (splits.info.num_classes, splits.info.channels, splits.info.image_size) == (3, 3, (24, 24))
    assert (len(splits.train), len(splits.test)) == (5, 3)
    image, label = splits.test[2]  # val/c/1.png: val lacks b, c keeps index 2
    assert label == 2 and image.shape == (3, 24, 24)
    expected = (100 / 255 - torch.tensor(splits.info.mean)) / torch.tensor(splits.info.std)
    assert torch.allclose(image[:, 12, 12], expected, atol=1e-2)
    assert load_dataset(f"imagefolder:{root}", channels=1, image_size=(16, 16)).train[0][0].shape == (1, 16, 16)


def test_imagefolder_layout_errors(tmp_path):
    make_image_folder(tmp_path / "noval", {"train": {"a": 1}})
    with pytest.raises(UsageError, match="needs .*/train/CLASS/.*/val/CLASS/"):
        load_dataset(f"imagefolder:{tmp_path / 'noval'}")
    make_image_folder(tmp_path / "extra", {"train": {"a": 1, "c": 1}, "val": {"a": 1, "b": 1, "c": 1}})
    with pytest.raises(UsageError, match="class folders that train/ lacks: b"):
        load_dataset(f"imagefolder:{tmp_path / 'extra'}")


# ---- specs, loaders, demo, real data -----------------------------------------------------------


def test_unknown_spec_suggests_and_lists_forms():
    with pytest.raises(UsageError, match="did you mean 'fashion-mnist'.*cifar10:PATH"):
        load_dataset("fashion_mnist:/data")
    with pytest.raises(UsageError, match="needs a path: cifar10:PATH"):
        load_dataset("cifar10")
    with pytest.raises(UsageError, match="channels must be 1 or 3"):
        load_dataset("demo", channels=2)


def test_loaders_shuffle_train_by_seed_and_keep_test_order(tmp_path):
    splits = load_dataset(f"mnist:{make_idx_folder(tmp_path / 'm', gz=False, n_train=40, n_test=10)}")

    def train_labels(seed):
        return torch.cat([labels for _, labels in make_loaders(splits, 16, seed=seed)[0]]).tolist()

    assert train_labels(1) == train_labels(1) != train_labels(2)
    train, test = make_loaders(splits, batch_size=16)
    assert [len(labels) for _, labels in train] == [16, 16, 8]  # the last, short batch is kept
    assert torch.cat([labels for _, labels in test]).tolist() == list(range(10))


def test_an_items_augmentation_is_the_same_whichever_rank_or_worker_draws_it():
    """By its definition: the epoch's augmented items as one process reads them are, item for item, the ones two
    ranks read between them (one of them through two loader workers), and an item is drawn afresh each epoch."""
    splits = load_dataset("demo", train_limit=48)  # crops and flips

    def items(world_size=1, rank=0, workers=0, epoch=0):
        loader = make_loaders(splits, 8, workers=workers, seed=3, rank=rank, world_size=world_size)[0]
        loader.sampler.set_epoch(epoch)
        keys = list(loader.sampler)
        return {key % 48: image for key, image in zip(keys, torch.cat([x for x, _ in loader]))}

    one, two = items(), {**items(2, 0), **items(2, 1, workers=2)}
    assert sorted(one) == sorted(two) == list(range(48))
    assert all(torch.equal(one[i], two[i]) for i in one)
    later = items(epoch=1)
    assert sum(not torch.equal(one[i], later[i]) for i in one) > 24, "each epoch draws again"


def test_demo_ships_a_balanced_fashion_mnist_subset_with_its_notice():
    from catalyst_deploy.inputs.data import DEMO_DATA_DIR

    splits = load_dataset("demo")
    assert (len(splits.train), len(splits.test)) == (4500, 1000)
    assert (splits.info.mean, splits.info.std, splits.info.num_classes) == ((FMNIST_MEAN,), (FMNIST_STD,), 10)
    assert torch.bincount(splits.test.labels).tolist() == [100] * 10
    test_images = torch.stack([splits.test[i][0] for i in range(len(splits.test))])
    assert abs(test_images.mean().item()) < 0.05 and abs(test_images.std().item() - 1) < 0.05
    assert "Zalando SE" in (DEMO_DATA_DIR / "NOTICE").read_text()


def test_full_fashion_mnist_matches_its_readme(fashion_mnist_dir):
    splits = load_dataset(f"fashion-mnist:{fashion_mnist_dir}")
    assert (len(splits.train), len(splits.test)) == (60000, 10000)
    assert torch.bincount(splits.train.labels).tolist() == [6000] * 10
    mean = splits.train.images.sum(dtype=torch.float64) / splits.train.images.numel() / 255
    assert mean.item() == pytest.approx(FMNIST_MEAN, abs=5e-4)
