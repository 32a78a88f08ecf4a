"""Datasets in their real on-disk formats (tiny files written here), splits and loaders."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tv_datasets

from sparseopt.config import DataConfig
from sparseopt.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DataRootError,
    build_datasets,
    build_loaders,
    load_digits_arrays,
    prepare_cifar100,
    set_epoch,
    split_indices,
    synthetic_arrays,
)


def write_tiny_cifar100(root: Path, n_train: int = 40, n_test: int = 20) -> dict[str, np.ndarray]:
    """Write cifar-100-python/{train,test,meta} pickles with the keys of the real release."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        pixels = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = [int(i) for i in rng.integers(0, 100, size=count)]
        entry = {
            "filenames": [f"img_{i}.png" for i in range(count)],
            "batch_label": f"{split} batch",
            "fine_labels": fine,
            "coarse_labels": [label // 5 for label in fine],
            "data": pixels,
        }
        with open(folder / split, "wb") as handle:
            pickle.dump(entry, handle)
        arrays[split] = pixels
        arrays[f"{split}_labels"] = np.array(fine)
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle)
    return arrays


def test_cifar100_reads_the_real_pickle_format(tmp_path):
    arrays = write_tiny_cifar100(tmp_path)
    cfg = DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.25, augment=False)
    splits = build_datasets(cfg, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert splits.meta == {"num_classes": 100, "in_channels": 3, "image_size": 32}
    image, label = splits.test[3]
    assert torch.equal(image, torch.from_numpy(arrays["test"][3].reshape(3, 32, 32)))
    raw = image.float() / 255.0
    mean = torch.tensor(CIFAR100_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(3, 1, 1)
    normalised = splits.to_input(image.unsqueeze(0), torch.device("cpu"), False)[0]
    assert torch.allclose(normalised, (raw - mean) / std, atol=1e-6)
    assert label == arrays["test_labels"][3]
    val_index = splits.val.indices[0]
    assert splits.val[0][1] == arrays["train_labels"][val_index]


def test_cifar100_reader_agrees_with_torchvision(tmp_path, monkeypatch):
    """torchvision's CIFAR100 (md5 check patched out, only here) decodes the same images."""
    write_tiny_cifar100(tmp_path)
    monkeypatch.setattr(tv_datasets.CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_datasets.cifar, "check_integrity", lambda path, md5=None: True)
    reference = tv_datasets.CIFAR100(str(tmp_path), train=True, download=False)
    cfg = DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.0, augment=False)
    ours = build_datasets(cfg, seed=0).train.dataset
    assert torch.equal(ours.images, torch.from_numpy(reference.data).permute(0, 3, 1, 2))
    assert ours.labels.tolist() == reference.targets


def test_cifar100_augmented_train_items_keep_shape(tmp_path):
    write_tiny_cifar100(tmp_path)
    cfg = DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.1, augment=True)
    image, _ = build_datasets(cfg, seed=0).train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8  # normalised on the device


def test_cifar100_missing_files_name_data_root(tmp_path):
    cfg = DataConfig(name="cifar100", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataRootError, match=r"data\.root=.*cifar-100-python/train"):
        build_datasets(cfg, seed=0)


def test_cifar100_truncated_file_is_a_clear_error(tmp_path):
    write_tiny_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:500])
    with pytest.raises(DataRootError, match="not a readable CIFAR-100"):
        build_datasets(DataConfig(name="cifar100", root=str(tmp_path)), seed=0)


def test_cifar100_download_happens_once_under_the_lock(tmp_path, monkeypatch):
    calls = []

    def fake_download(root, train, download):
        calls.append(root)
        threading.Event().wait(0.2)  # hold the lock while "extracting"
        write_tiny_cifar100(Path(root))

    monkeypatch.setattr(tv_datasets, "CIFAR100", fake_download)
    errors = []

    def worker():
        try:
            prepare_cifar100(tmp_path, download=True)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(calls) == 1
    prepare_cifar100(tmp_path, download=True)  # files present: no second download
    assert len(calls) == 1


def write_image_tree(root: Path, classes: tuple[str, ...], per_class: int) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


def test_imagenet_image_folder_tree(tmp_path):
    write_image_tree(tmp_path, ("n01", "n02", "n03"), per_class=4)
    cfg = DataConfig(name="imagenet", root=str(tmp_path), val_fraction=0.25)
    splits = build_datasets(cfg, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 12)
    assert splits.meta == {"num_classes": 3, "in_channels": 3, "image_size": 224}
    for dataset in (splits.train, splits.val, splits.test):
        image, label = dataset[0]
        assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and 0 <= label < 3
    assert torch.equal(splits.val[0][0], splits.val[0][0])  # eval transform: deterministic
    torch.manual_seed(0)
    assert not torch.equal(splits.train[0][0], splits.train[0][0])  # random resized crop
    assert splits.train.dataset.samples is splits.val.dataset.samples  # one directory scan


def test_imagenet_missing_split_names_data_root(tmp_path):
    write_image_tree(tmp_path, ("n01",), per_class=1)
    for path in (tmp_path / "val" / "n01").iterdir():
        path.unlink()
    (tmp_path / "val" / "n01").rmdir()
    (tmp_path / "val").rmdir()
    with pytest.raises(DataRootError, match=r"data\.root=.*val/<class>"):
        build_datasets(DataConfig(name="imagenet", root=str(tmp_path)), seed=0)
    with pytest.raises(DataRootError, match=r"data\.root"):
        build_datasets(DataConfig(name="imagenet", root=str(tmp_path / "absent")), seed=0)


def test_digits_fixed_stratified_split_and_normalization():
    x_train, y_train, x_test, y_test = load_digits_arrays()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    expected = torch.bincount(torch.cat([y_train, y_test])).double() * 360 / 1797
    assert (torch.bincount(y_test).double() - expected).abs().max().item() <= 1.0  # stratified
    assert abs(x_train.mean().item()) < 1e-5 and x_train.std().item() == pytest.approx(
        1.0, abs=1e-3
    )
    again = load_digits_arrays()
    assert torch.equal(again[0], x_train) and torch.equal(again[3], y_test)


def test_digits_val_split_is_seeded():
    cfg = DataConfig(name="digits", val_fraction=0.1)
    first, same, other = (build_datasets(cfg, seed) for seed in (0, 0, 1))
    assert (len(first.train), len(first.val), len(first.test)) == (1293, 144, 360)
    assert first.val.indices == same.val.indices
    assert first.val.indices != other.val.indices
    assert first.meta == {"num_classes": 10, "in_channels": 1, "image_size": 8}


def test_split_indices_partition():
    train, val = split_indices(101, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 81
    assert sorted(train + val) == list(range(101))
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0, seed=0)


def test_synthetic_is_fixed_and_learnable():
    x_train, y_train = synthetic_arrays(num_classes=4, image_size=8, size=400, split=0)
    x_again, _ = synthetic_arrays(num_classes=4, image_size=8, size=400, split=0)
    x_test, y_test = synthetic_arrays(num_classes=4, image_size=8, size=200, split=1)
    assert torch.equal(x_train, x_again) and not torch.equal(x_train[:200], x_test)
    means = torch.stack([x_train[y_train == c].mean(0) for c in range(4)]).flatten(1)
    nearest = torch.cdist(x_test.flatten(1), means).argmin(1)
    assert (nearest == y_test).float().mean().item() > 0.9
    cfg = DataConfig(
        name="synthetic",
        synthetic_train_size=64,
        synthetic_test_size=32,
        synthetic_image_size=8,
        synthetic_num_classes=4,
    )
    splits = build_datasets(cfg, seed=0)
    assert splits.meta == {"num_classes": 4, "in_channels": 3, "image_size": 8}
    assert splits.train[0][0].shape == (3, 8, 8)


def test_loaders_shard_over_ranks_without_overlap():
    cfg = DataConfig(
        name="synthetic",
        synthetic_train_size=64,
        synthetic_test_size=33,
        synthetic_image_size=8,
        val_fraction=0.25,
        batch_size=8,
        eval_batch_size=5,
    )
    splits = build_datasets(cfg, seed=0)
    ranks = [build_loaders(splits, cfg, rank, 2, seed=0) for rank in range(2)]
    train_sets = [list(iter(loaders.train.sampler)) for loaders in ranks]
    assert not set(train_sets[0]) & set(train_sets[1])
    assert all(len(batch[1]) == 4 for batch in ranks[0].train)  # global 8 over 2 ranks
    test_indices = [list(iter(loaders.test.sampler)) for loaders in ranks]
    assert sorted(test_indices[0] + test_indices[1]) == list(range(33))
    val_indices = [list(iter(loaders.val.sampler)) for loaders in ranks]
    assert sorted(val_indices[0] + val_indices[1]) == list(range(16))


def test_loader_order_depends_on_seed_and_epoch_only():
    cfg = DataConfig(name="digits", batch_size=64)
    splits = build_datasets(cfg, seed=0)
    first = build_loaders(splits, cfg, 0, 1, seed=5)
    second = build_loaders(splits, cfg, 0, 1, seed=5)
    set_epoch(first, 3)
    set_epoch(second, 3)
    assert list(iter(first.train.sampler)) == list(iter(second.train.sampler))
    set_epoch(second, 4)
    assert list(iter(first.train.sampler)) != list(iter(second.train.sampler))
    assert len(first.train) == 1293 // 64


def test_loader_rejects_indivisible_or_too_large_batches():
    splits = build_datasets(DataConfig(name="digits"), seed=0)
    with pytest.raises(ValueError, match=r"data\.batch_size=100 .*divisible"):
        build_loaders(splits, DataConfig(name="digits", batch_size=100), 0, 3, seed=0)
    with pytest.raises(ValueError, match=r"data\.batch_size=4096"):
        build_loaders(splits, DataConfig(name="digits", batch_size=4096), 0, 1, seed=0)


def test_digits_workers_never_import_torchvision():
    """A digits/synthetic trial's worker must not pay torchvision's import (~1.7 CPU-s, torch._dynamo)."""
    probe = (
        "import sys\n"
        "import trainables.worker\n"
        "from sparseopt.config import DataConfig, ModelConfig\n"
        "from sparseopt.data import build_datasets\n"
        "from sparseopt.models import build_model\n"
        "splits = build_datasets(DataConfig(name='digits'), seed=0)\n"
        "build_model(ModelConfig(name='small_cnn'), **splits.meta)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torchvision'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
