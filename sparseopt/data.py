"""Datasets (CIFAR-100, ImageNet, sklearn digits, synthetic) with a seeded validation split, and loaders.

Conventions: `data.batch_size` is the *global* training batch (split evenly over ranks, so a
recipe means the same thing on any number of workers); `data.eval_batch_size` is per rank.
The validation split is carved from the training set with a generator seeded by `seed` and is
evaluated with the eval transforms (no augmentation).

CIFAR-100 and ImageNet items leave the loader workers as uint8 images (a quarter of float32's
bytes through worker shared memory, pinning and the host-to-device copy); random crops and flips
are drawn and applied there, per item, as before. `DatasetSplits.to_input` scales and normalises
each batch on the training device. With `data.decode="gpu"` the ImageNet workers only read the
JPEG bytes and draw the augmentation; the training process decodes the batch on its CUDA device.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from sparseopt.config import IMAGENET_CROP, DataConfig

if TYPE_CHECKING:
    from torchvision import datasets as tv_datasets
    from torchvision.transforms import v2

# torchvision is imported only by the CIFAR-100 and ImageNet paths: it costs ~1.7 CPU-s per process
# (it pulls in torch._dynamo), paid by every Ray Train worker of a digits or synthetic trial.

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE = 256
CIFAR100_FOLDER = "cifar-100-python"
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
SYNTHETIC_DATA_SEED = 2026


class DataRootError(ValueError):
    """`data.root` is missing or does not hold the files the dataset needs."""


class DatasetSplits(NamedTuple):
    """Train / validation / test datasets, `meta` = {num_classes, in_channels, image_size}, and
    `to_input`: how the training loop turns a batch's images into model input on the device
    (a `sparseopt.engine.InputTransform`; None: the batch already is the input)."""

    train: Dataset
    val: Dataset
    test: Dataset
    meta: dict[str, int]
    to_input: Callable[[Any, torch.device, bool], torch.Tensor] | None = None


class Loaders(NamedTuple):
    """Train / validation / test loaders of one rank."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


class ImageArrayDataset(Dataset):
    """uint8 CHW images held in memory, transformed per item when `transform` is set (CIFAR-100)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any | None) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


@dataclass(frozen=True)
class EncodedImage:
    """One JPEG file's bytes and the augmentation its worker drew (`data.decode="gpu"`): the
    RandomResizedCrop box (top, left, height, width; None: eval resize + center crop) and flip."""

    data: np.ndarray
    box: tuple[int, int, int, int] | None
    flip: bool


@dataclass(frozen=True)
class EncodedBatch:
    """A loader batch of `EncodedImage`s: the files' bytes end to end (one shared-memory tensor),
    each file's length, and the crop boxes and flips (both None for an eval batch)."""

    data: torch.Tensor
    sizes: tuple[int, ...]
    boxes: tuple[tuple[int, int, int, int], ...] | None
    flips: torch.Tensor | None


def _collate_encoded(
    batch: Sequence[EncodedImage], *, collate_fn_map: dict[Any, Any] | None = None
) -> EncodedBatch:
    """Join a worker's `EncodedImage`s into one `EncodedBatch` (a `collate` hook)."""
    if batch[0].box is None:
        boxes, flips = None, None
    else:
        boxes = tuple(item.box for item in batch if item.box is not None)
        flips = torch.tensor([item.flip for item in batch])
    return EncodedBatch(
        torch.from_numpy(np.concatenate([item.data for item in batch])),
        tuple(len(item.data) for item in batch),
        boxes,
        flips,
    )


COLLATE_FN_MAP: dict[Any, Any] = {**default_collate_fn_map, EncodedImage: _collate_encoded}


def collate_batch(batch: list[Any]) -> Any:
    """torch's `default_collate`, extended to join `EncodedImage`s into an `EncodedBatch`."""
    return collate(batch, collate_fn_map=COLLATE_FN_MAP)


def decode_batch(batch: EncodedBatch, device: torch.device) -> torch.Tensor:
    """Decode a JPEG batch on `device` (batched nvJPEG on CUDA) into N x 3 x 224 x 224 uint8:
    the PIL path's crop/resize kernels with the worker's draws, then the flips, batched."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as tvf

    files = list(torch.split(batch.data, list(batch.sizes)))
    decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
    if batch.boxes is None:
        crops = [
            tvf.center_crop(tvf.resize(image, [IMAGENET_RESIZE], antialias=True), [IMAGENET_CROP])
            for image in decoded
        ]
    else:
        crops = [
            tvf.resized_crop(image, *box, [IMAGENET_CROP, IMAGENET_CROP], antialias=True)
            for image, box in zip(decoded, batch.boxes, strict=True)
        ]
    images = torch.stack(crops)
    if batch.flips is None:
        return images
    flips = batch.flips.to(device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(flips, images.flip(-1), images)


class NormalizeOnDevice:
    """`DatasetSplits.to_input` of uint8 image batches: scale to [0, 1] and normalise on the device.

    The arithmetic is torchvision's `ToDtype(float32, scale=True)` then `Normalize` (the same ops
    in the same order), so it equals what the loader workers computed before. The float copy is
    made in channels_last when asked (one pass). A JPEG batch is decoded on the device first.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = mean
        self.std = std
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as 1 x C x 1 x 1 float32 tensors on `device`, copied there once."""
        if device not in self._stats:
            mean, std = (
                torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                for values in (self.mean, self.std)
            )
            self._stats[device] = (mean, std)
        return self._stats[device]

    def __call__(
        self, images: torch.Tensor | EncodedBatch, device: torch.device, channels_last: bool
    ) -> torch.Tensor:
        if isinstance(images, EncodedBatch):
            images = decode_batch(images, device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        mean, std = self._stats_on(device)
        floats = images.to(device, torch.float32, non_blocking=True, memory_format=layout)
        return floats.mul_(1.0 / 255).sub_(mean).div_(std)


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index starting at `rank`: an eval shard without padding or duplicates."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def split_indices(length: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random (train, val) index lists; val holds round(length * val_fraction) items."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(length * val_fraction)
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(length, generator=generator).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DataRootError(f"data.root is required for data.name={cfg.name!r}")
    return Path(cfg.root).expanduser()


def _cifar_train_transform(augment: bool) -> v2.Compose | None:
    """Random crop 4 + flip of a uint8 image (None without augmentation; eval items have none)."""
    if not augment:
        return None
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])


def _read_cifar_pickle(path: Path, root: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Load one CIFAR-100 python pickle and check it holds `keys`."""
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        return {key: entry[key] for key in keys}
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise DataRootError(
            f"data.root={str(root)!r}: {path} is not a readable CIFAR-100 python pickle "
            f"with {', '.join(repr(key) for key in keys)} ({type(error).__name__}: {error})"
        ) from error


def _read_cifar_split(path: Path, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a CIFAR-100 split (`data`: N x 3072 uint8, `fine_labels`: N ints) as CHW images."""
    entry = _read_cifar_pickle(path, root, ("data", "fine_labels"))
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataRootError(
            f"data.root={str(root)!r}: {path} has data of shape {data.shape} and {len(labels)} "
            "labels; expected N x 3072 and N labels"
        )
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def _cifar_files_present(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("train", "test", "meta"))


def prepare_cifar100(root: Path, download: bool) -> Path:
    """Make sure `root/cifar-100-python/{train,test,meta}` exist, downloading under a file lock.

    With `download`, every worker checks under `root/.cifar100.lock` (one lock per node for a
    node-local root): the first downloads and extracts (torchvision, md5-checked archive), the
    others wait, then find complete files, never a half-extracted folder.
    """
    folder = root / CIFAR100_FOLDER
    if download:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".cifar100.lock")):
            if not _cifar_files_present(folder):
                from torchvision import datasets as tv_datasets

                tv_datasets.CIFAR100(str(root), train=True, download=True)
        return folder
    if not _cifar_files_present(folder):
        raise DataRootError(
            f"data.root={str(root)!r} does not contain the CIFAR-100 python files "
            f"{CIFAR100_FOLDER}/train, {CIFAR100_FOLDER}/test and {CIFAR100_FOLDER}/meta; "
            "set data.download=true to fetch them, or point data.root at the directory holding "
            f"{CIFAR100_FOLDER}/"
        )
    return folder


def _cifar100(cfg: DataConfig, seed: int) -> DatasetSplits:
    root = _root(cfg)
    folder = prepare_cifar100(root, cfg.download)
    train_images, train_labels = _read_cifar_split(folder / "train", root)
    test_images, test_labels = _read_cifar_split(folder / "test", root)
    meta = _read_cifar_pickle(folder / "meta", root, ("fine_label_names",))
    num_classes = len(meta["fine_label_names"])
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataRootError(
                f"data.root={str(root)!r}: {split} labels outside [0, {num_classes}) "
                "(the number of fine_label_names in meta)"
            )
    train_tf = _cifar_train_transform(cfg.augment)
    train_idx, val_idx = split_indices(len(train_labels), cfg.val_fraction, seed)
    return DatasetSplits(
        Subset(ImageArrayDataset(train_images, train_labels, train_tf), train_idx),
        Subset(ImageArrayDataset(train_images, train_labels, None), val_idx),
        ImageArrayDataset(test_images, test_labels, None),
        {"num_classes": num_classes, "in_channels": 3, "image_size": 32},
        NormalizeOnDevice(CIFAR100_MEAN, CIFAR100_STD),
    )


def _imagenet_transforms(augment: bool) -> tuple[v2.Compose, v2.Compose]:
    """PIL image -> uint8 CHW: RandomResizedCrop 224 + flip (train); resize 256, center 224 (eval)."""
    from torchvision.transforms import v2

    eval_tf = v2.Compose(
        [v2.ToImage(), v2.Resize(IMAGENET_RESIZE, antialias=True), v2.CenterCrop(IMAGENET_CROP)]
    )
    if not augment:
        return eval_tf, eval_tf
    train_tf = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(IMAGENET_CROP, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
    return train_tf, eval_tf


def read_jpeg_bytes(path: str) -> np.ndarray:
    """A JPEG file's bytes (the ImageFolder loader of `data.decode="gpu"`); other formats refused."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[:2].tobytes() != b"\xff\xd8":
        raise DataRootError(
            f"{path} is not a JPEG file, and data.decode='gpu' decodes JPEGs only; set "
            "data.decode='pil' (allowed: 'pil', 'gpu') or convert the file to JPEG"
        )
    return data


class JpegAugmentation:
    """Worker half of `data.decode="gpu"`: from a JPEG's header alone, draw the PIL path's
    RandomResizedCrop box and flip (the same RNG calls in the same order, hence the same
    augmentation); decode nothing. Without augmentation, mark it for resize 256 / center 224."""

    def __init__(self, augment: bool) -> None:
        from torchvision.transforms import v2

        self.crop = v2.RandomResizedCrop(IMAGENET_CROP, antialias=True) if augment else None

    def __call__(self, data: np.ndarray) -> EncodedImage:
        if self.crop is None:
            return EncodedImage(data, None, False)
        from PIL import Image

        with Image.open(io.BytesIO(data.tobytes())) as header:
            box = self.crop.make_params([header])
        flip = bool(torch.rand(1) < 0.5)  # v2.RandomHorizontalFlip(p=0.5)'s draw
        return EncodedImage(data, (box["top"], box["left"], box["height"], box["width"]), flip)


def _image_folder(
    path: Path, root: Path, transform: Any, loader: Callable[[str], Any] | None
) -> tv_datasets.ImageFolder:
    """An ImageFolder over `path` (`loader` None: torchvision's PIL loader)."""
    expected = (
        f"expected ImageFolder trees {root}/train/<class>/<image> and {root}/val/<class>/<image>"
    )
    if not path.is_dir():
        raise DataRootError(f"data.root={str(root)!r}: {path} does not exist; {expected}")
    from torchvision import datasets as tv_datasets

    try:
        return tv_datasets.ImageFolder(
            str(path), transform=transform, loader=loader or tv_datasets.folder.default_loader
        )
    except FileNotFoundError as error:
        raise DataRootError(f"data.root={str(root)!r}: {error}; {expected}") from error


def _imagenet(cfg: DataConfig, seed: int) -> DatasetSplits:
    root = _root(cfg)
    if not root.is_dir():
        raise DataRootError(
            f"data.root={str(root)!r} does not exist; expected ImageNet as ImageFolder trees "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image>"
        )
    if cfg.decode == "gpu":
        train_tf, eval_tf = JpegAugmentation(cfg.augment), JpegAugmentation(False)
        loader: Callable[[str], Any] | None = read_jpeg_bytes
    else:
        train_tf, eval_tf = _imagenet_transforms(cfg.augment)
        loader = None
    train_aug = _image_folder(root / "train", root, train_tf, loader)
    train_eval = copy.copy(train_aug)  # same file list (scanned once), eval transform
    train_eval.transform = eval_tf
    test = _image_folder(root / "val", root, eval_tf, loader)
    if test.classes != train_aug.classes:
        raise DataRootError(
            f"data.root={str(root)!r}: the class folders of train/ ({len(train_aug.classes)}) "
            f"and val/ ({len(test.classes)}) differ"
        )
    train_idx, val_idx = split_indices(len(train_aug), cfg.val_fraction, seed)
    return DatasetSplits(
        Subset(train_aug, train_idx),
        Subset(train_eval, val_idx),
        test,
        {"num_classes": len(train_aug.classes), "in_channels": 3, "image_size": IMAGENET_CROP},
        NormalizeOnDevice(IMAGENET_MEAN, IMAGENET_STD),
    )


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits as normalized 1x8x8 float tensors, fixed stratified 1437/360 train/test split.

    Pixels are scaled to [0, 1], then standardized with the train split's mean and std.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=DIGITS_TEST_SIZE,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    mean, std = float(x_train.mean()), float(x_train.std())

    def to_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((array - mean) / std).unsqueeze(1)

    return (
        to_tensor(x_train),
        torch.from_numpy(y_train.astype(np.int64)),
        to_tensor(x_test),
        torch.from_numpy(y_test.astype(np.int64)),
    )


def _tensor_splits(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    val_fraction: float,
    seed: int,
    num_classes: int,
) -> DatasetSplits:
    train_idx, val_idx = split_indices(len(y_train), val_fraction, seed)
    full = TensorDataset(x_train, y_train)
    return DatasetSplits(
        Subset(full, train_idx),
        Subset(full, val_idx),
        TensorDataset(x_test, y_test),
        {
            "num_classes": num_classes,
            "in_channels": int(x_train.shape[1]),
            "image_size": int(x_train.shape[-1]),
        },
    )


def synthetic_arrays(
    num_classes: int, image_size: int, size: int, split: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable synthetic 3-channel images: a smooth per-class pattern plus Gaussian noise.

    Class patterns depend only on (num_classes, image_size); `split` seeds the samples, so the
    train (split 0) and test (split 1) sets are fixed, disjoint draws around the same patterns.
    """
    patterns_gen = torch.Generator().manual_seed(SYNTHETIC_DATA_SEED)
    coarse = torch.randn(num_classes, 3, 4, 4, generator=patterns_gen)
    patterns = torch.nn.functional.interpolate(
        coarse, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    patterns = patterns / patterns.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    sample_gen = torch.Generator().manual_seed(SYNTHETIC_DATA_SEED + 1 + split)
    labels = torch.arange(size) % num_classes
    labels = labels[torch.randperm(size, generator=sample_gen)]
    noise = torch.randn(size, 3, image_size, image_size, generator=sample_gen)
    return 0.5 * patterns[labels] + noise, labels


def build_datasets(cfg: DataConfig, seed: int) -> DatasetSplits:
    """The train/val/test datasets named by `cfg.name`; the val split is seeded by `seed`."""
    if cfg.name == "cifar100":
        return _cifar100(cfg, seed)
    if cfg.name == "imagenet":
        return _imagenet(cfg, seed)
    if cfg.name == "digits":
        return _tensor_splits(*load_digits_arrays(), cfg.val_fraction, seed, num_classes=10)
    if cfg.name == "synthetic":
        classes, size = cfg.synthetic_num_classes, cfg.synthetic_image_size
        x_train, y_train = synthetic_arrays(classes, size, cfg.synthetic_train_size, split=0)
        x_test, y_test = synthetic_arrays(classes, size, cfg.synthetic_test_size, split=1)
        return _tensor_splits(x_train, y_train, x_test, y_test, cfg.val_fraction, seed, classes)
    raise ValueError(
        f"data.name must be one of 'digits', 'synthetic', 'cifar100', 'imagenet', got {cfg.name!r}"
    )


def check_decode_device(cfg: DataConfig, device: torch.device) -> None:
    """Refuse `data.decode="gpu"` on a device other than CUDA, before anything is built."""
    if cfg.decode == "gpu" and device.type != "cuda":
        raise ValueError(
            f"data.decode='gpu' decodes JPEGs with nvJPEG on a CUDA device, but this run's device "
            f"is {device.type!r}; allowed values: 'pil' (decode in the loader workers, any "
            "device) or 'gpu' (CUDA only)"
        )


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """The training batch of one rank; the global batch must split evenly over ranks."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if global_batch % world_size:
        raise ValueError(
            f"data.batch_size={global_batch} (the global batch) must be divisible by the "
            f"number of workers ({world_size})"
        )
    return global_batch // world_size


def _eval_loader(
    dataset: Dataset, cfg: DataConfig, rank: int, world_size: int, pin_memory: bool
) -> DataLoader:
    """The unpadded eval shard of `rank`."""
    return DataLoader(
        dataset,
        batch_size=cfg.eval_batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=cfg.loader_workers,
        collate_fn=collate_batch,
        pin_memory=pin_memory,
    )


def build_loaders(
    datasets: DatasetSplits | Sequence[Dataset],
    cfg: DataConfig,
    rank: int,
    world_size: int,
    seed: int,
    device: torch.device | str | None = None,
) -> Loaders:
    """Loaders for one rank: seeded, epoch-reshuffled training batches; unpadded eval shards.

    The training sampler is always a `DistributedSampler` (one replica when `world_size == 1`):
    call `loader.sampler.set_epoch(epoch)` before each epoch. Its order depends only on
    (seed, epoch), which is what makes a resumed run see the same batches. Incomplete final
    batches are dropped (tiny batches break BatchNorm). Worker seeds come from the global torch
    RNG, which checkpoints save and restore. Batches are pinned when `device` is CUDA (when it
    is None: when CUDA is available), for non-blocking host-to-device copies.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    train, val, test = datasets[0], datasets[1], datasets[2]
    batch = per_rank_batch_size(cfg.batch_size, world_size)
    sampler = DistributedSampler(
        train, num_replicas=world_size, rank=rank, shuffle=True, seed=int(seed), drop_last=True
    )
    if len(sampler) < batch:
        raise ValueError(
            f"data.batch_size={cfg.batch_size} leaves no full training batch: each of the "
            f"{world_size} worker(s) holds {len(sampler)} training samples"
        )
    if device is None:
        pin_memory = torch.cuda.is_available()
    else:
        pin_memory = torch.device(device).type == "cuda"
    train_loader = DataLoader(
        train,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.loader_workers,
        collate_fn=collate_batch,
        pin_memory=pin_memory,
    )
    return Loaders(
        train_loader,
        _eval_loader(val, cfg, rank, world_size, pin_memory),
        _eval_loader(test, cfg, rank, world_size, pin_memory),
    )


def set_epoch(loaders: Loaders, epoch: int) -> None:
    """Select the shuffling of `epoch` (0-based) for the training loader."""
    sampler = loaders.train.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
