"""uint8 loader batches normalised on the device: same tensors as the float32 worker path before.

The reference pipelines below are the transforms of commit f7b4bc4 (float32 out of the loader
workers): the new path must give the same normalised batches for the same images and seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from test_data import write_tiny_cifar100
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import datasets as tv_datasets
from torchvision.transforms import v2

from sparseopt.config import DataConfig, TrainConfig
from sparseopt.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataRootError,
    EncodedBatch,
    ImageArrayDataset,
    build_datasets,
    build_loaders,
    check_decode_device,
    read_jpeg_bytes,
    set_epoch,
)
from sparseopt.engine import device_batches
from sparseopt.recipe import build_run

CPU = torch.device("cpu")


def old_cifar_transform(augment: bool) -> v2.Compose:
    """The CIFAR-100 item transform of f7b4bc4: augmentation, then float32 + Normalize."""
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    train = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if augment else []
    return v2.Compose(train + finish)


def old_imagenet_transform(augment: bool) -> v2.Compose:
    """The ImageNet item transform of f7b4bc4 (PIL image in, normalised float32 out)."""
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if augment:
        geometry = [v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(256, antialias=True), v2.CenterCrop(224)]
    return v2.Compose([v2.ToImage(), *geometry, *finish])


def reference_loader(dataset: Subset, cfg: DataConfig, train: bool, seed: int) -> DataLoader:
    """A loader over `dataset` built as f7b4bc4's `build_loaders` built it (one rank)."""
    if train:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.loader_workers,
        )
    return DataLoader(dataset, batch_size=cfg.eval_batch_size, num_workers=cfg.loader_workers)


def batches(loader: DataLoader, to_input) -> list[tuple]:
    """All (model input, targets) of one pass through `device_batches`, then `to_input` if set
    (None: the batch is the input); the global RNG seeded first, so draws are comparable."""
    torch.manual_seed(123)
    return [
        (images if to_input is None else to_input(images, CPU, False), targets)
        for images, targets in device_batches(loader, CPU)
    ]


def assert_same_batches(new: list[tuple], old: list[tuple]) -> None:
    assert len(new) == len(old) > 0
    for (new_images, new_targets), (old_images, old_targets) in zip(new, old, strict=True):
        assert new_images.dtype == torch.float32
        torch.testing.assert_close(new_images, old_images, rtol=0, atol=1e-6)
        assert torch.equal(new_targets, old_targets)


@pytest.mark.parametrize("workers", [0, 1])
def test_cifar100_batches_match_the_float32_worker_path(tmp_path, workers):
    """Train (random crop + flip, same seed) and eval batches: new path == old float32 path."""
    write_tiny_cifar100(tmp_path, n_train=48, n_test=20)
    cfg = DataConfig(
        name="cifar100",
        root=str(tmp_path),
        val_fraction=0.25,
        batch_size=8,
        eval_batch_size=7,
        loader_workers=workers,
    )
    splits = build_datasets(cfg, seed=0)
    loaders = build_loaders(splits, cfg, 0, 1, seed=3)
    set_epoch(loaders, 2)
    full = splits.train.dataset
    old_train = Subset(
        ImageArrayDataset(full.images, full.labels, old_cifar_transform(True)), splits.train.indices
    )
    old_val = Subset(
        ImageArrayDataset(full.images, full.labels, old_cifar_transform(False)), splits.val.indices
    )
    test = splits.test
    old_test = ImageArrayDataset(test.images, test.labels, old_cifar_transform(False))
    old_train_loader = reference_loader(old_train, cfg, train=True, seed=3)
    old_train_loader.sampler.set_epoch(2)
    train_batch = next(iter(loaders.train))[0]
    assert train_batch.dtype == torch.uint8 and train_batch.shape == (8, 3, 32, 32)
    assert_same_batches(batches(loaders.train, splits.to_input), batches(old_train_loader, None))
    for new_loader, old_set in ((loaders.val, old_val), (loaders.test, old_test)):
        old_loader = reference_loader(old_set, cfg, train=False, seed=3)
        assert_same_batches(batches(new_loader, splits.to_input), batches(old_loader, None))


def test_channels_last_input_has_the_same_values(tmp_path):
    write_tiny_cifar100(tmp_path, n_train=16, n_test=8)
    cfg = DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.0, batch_size=8)
    splits = build_datasets(cfg, seed=0)
    images = next(iter(build_loaders(splits, cfg, 0, 1, seed=0).test))[0]
    plain = splits.to_input(images, CPU, False)
    last = splits.to_input(images, CPU, True)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last)


def write_jpeg_tree(root: Path, classes: tuple[str, ...], per_class: int) -> None:
    """ImageFolder train/ and val/ trees of real JPEG files of assorted sizes (smooth + noise)."""
    rng = np.random.default_rng(2)
    sizes = ((40, 56), (300, 220), (90, 90), (180, 260))
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                height, width = sizes[index % len(sizes)]
                ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
                noise = rng.normal(0, 25, size=(height, width, 3))
                pixels = np.clip(ramp + noise + rng.integers(0, 55, size=3), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.JPEG", quality=90)


@pytest.fixture
def jpeg_root(tmp_path: Path) -> Path:
    write_jpeg_tree(tmp_path, ("n01", "n02"), per_class=6)
    return tmp_path


def imagenet_config(root: Path, **overrides) -> DataConfig:
    values = {
        "name": "imagenet",
        "root": str(root),
        "val_fraction": 0.25,
        "batch_size": 3,
        "eval_batch_size": 4,
    }
    return DataConfig(**{**values, **overrides})


def test_imagenet_jpeg_batches_match_the_float32_worker_path(jpeg_root):
    """PIL decode in the workers: RandomResizedCrop + flip (same seed) and resize 256 / center
    224 on real JPEG files give the old normalised batches."""
    cfg = imagenet_config(jpeg_root)
    splits = build_datasets(cfg, seed=0)
    loaders = build_loaders(splits, cfg, 0, 1, seed=1)
    old_train = Subset(
        tv_datasets.ImageFolder(str(jpeg_root / "train"), transform=old_imagenet_transform(True)),
        splits.train.indices,
    )
    old_eval = tv_datasets.ImageFolder(
        str(jpeg_root / "train"), transform=old_imagenet_transform(False)
    )
    old_test = tv_datasets.ImageFolder(
        str(jpeg_root / "val"), transform=old_imagenet_transform(False)
    )
    assert next(iter(loaders.train))[0].dtype == torch.uint8
    assert_same_batches(
        batches(loaders.train, splits.to_input),
        batches(reference_loader(old_train, cfg, train=True, seed=1), None),
    )
    old_val = Subset(old_eval, splits.val.indices)
    for new_loader, old_set in ((loaders.val, old_val), (loaders.test, old_test)):
        old_loader = reference_loader(old_set, cfg, train=False, seed=1)
        assert_same_batches(batches(new_loader, splits.to_input), batches(old_loader, None))


@pytest.mark.parametrize("workers", [0, 1])
def test_gpu_decode_path_matches_pil_decode_on_cpu(jpeg_root, workers):
    """`data.decode="gpu"` run on the CPU: workers send JPEG bytes with the same crop boxes and
    flips as the PIL path; decoding and cropping the batch gives the PIL path's images."""
    pil_cfg = imagenet_config(jpeg_root, loader_workers=workers)
    gpu_cfg = imagenet_config(jpeg_root, loader_workers=workers, decode="gpu")
    pil_splits, gpu_splits = build_datasets(pil_cfg, seed=0), build_datasets(gpu_cfg, seed=0)
    pil_loaders = build_loaders(pil_splits, pil_cfg, 0, 1, seed=4)
    gpu_loaders = build_loaders(gpu_splits, gpu_cfg, 0, 1, seed=4)
    for name in ("train", "val", "test"):
        gpu_loader = getattr(gpu_loaders, name)
        encoded = next(iter(gpu_loader))[0]
        assert isinstance(encoded, EncodedBatch)
        assert (encoded.boxes is None) == (name != "train")
        new = batches(gpu_loader, gpu_splits.to_input)
        old = batches(getattr(pil_loaders, name), pil_splits.to_input)
        assert len(new) == len(old) > 0
        for (new_images, new_targets), (old_images, old_targets) in zip(new, old, strict=True):
            assert new_images.shape == old_images.shape == (len(new_targets), 3, 224, 224)
            assert torch.equal(new_targets, old_targets)
            # two JPEG decoders (torchvision's and Pillow's libjpeg) may round differently
            torch.testing.assert_close(new_images, old_images, rtol=0, atol=0.1)
            assert (new_images - old_images).abs().mean().item() < 0.01


def test_gpu_decode_without_cuda_is_refused_before_anything_is_built(tmp_path):
    cfg = TrainConfig.model_validate(
        {
            "data": {"name": "imagenet", "root": str(tmp_path / "absent"), "decode": "gpu"},
            "model": {"name": "mlp"},
            "device": "cpu",
        }
    )
    pattern = r"data\.decode='gpu'.*'cpu'.*allowed values: 'pil' .* or 'gpu'"
    with pytest.raises(ValueError, match=pattern):
        build_run(cfg)  # a DataRootError (absent root) would mean the datasets were built first
    check_decode_device(cfg.data, torch.device("cuda"))
    check_decode_device(DataConfig(), CPU)


def test_decode_config_values_are_checked():
    with pytest.raises(ValidationError, match=r"decode\n.*'pil' or 'gpu'"):
        TrainConfig.model_validate({"data": {"decode": "nvjpeg"}})
    with pytest.raises(ValidationError, match=r"data\.decode='gpu'.*data\.name='cifar100'"):
        DataConfig(name="cifar100", root="/data", decode="gpu")
    assert DataConfig().decode == "pil"


def test_gpu_decode_refuses_files_that_are_not_jpeg(tmp_path):
    path = tmp_path / "image.JPEG"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, format="PNG")
    with pytest.raises(DataRootError, match=r"not a JPEG file.*data\.decode='pil'"):
        read_jpeg_bytes(str(path))


def test_loaders_pin_memory_only_for_a_cuda_device():
    cfg = DataConfig(name="synthetic", synthetic_image_size=8, batch_size=16)
    splits = build_datasets(cfg, seed=0)
    cuda = build_loaders(splits, cfg, 0, 1, seed=0, device="cuda")
    cpu = build_loaders(splits, cfg, 0, 1, seed=0, device=CPU)
    assert all(loader.pin_memory for loader in cuda)
    assert not any(loader.pin_memory for loader in cpu)


def test_device_batches_pass_through_on_cpu():
    """Digits/synthetic batches stay the same float tensors (no copy) on the CPU."""
    cfg = DataConfig(name="digits", batch_size=64)
    splits = build_datasets(cfg, seed=0)
    assert splits.to_input is None
    loader = build_loaders(splits, cfg, 0, 1, seed=0).test
    for (images, targets), (plain_images, plain_targets) in zip(
        device_batches(loader, CPU), loader, strict=True
    ):
        assert images.dtype == torch.float32
        assert torch.equal(images, plain_images) and torch.equal(targets, plain_targets)
