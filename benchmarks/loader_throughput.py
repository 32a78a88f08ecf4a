"""ImageNet loader throughput per worker process: the float32 worker path (old) vs uint8 (new).

"old" is `sparseopt` as of commit f7b4bc4 (extracted with `git archive` into a temporary
directory): the loader workers decode, augment, convert to float32 and normalise. "new" is this
checkout: the workers send uint8 and `DatasetSplits.to_input` normalises on the device. Both
run the real ImageNet path (`build_datasets` -> `build_loaders`, RandomResizedCrop 224 + flip,
batch 128 by default) on two workloads:

- `memory`: ImageNet-shaped images (500 x 375) decoded once and held in memory (the ImageFolder's
  loader is swapped for a dictionary lookup), so no JPEG decoding is timed;
- `jpeg`: 2,000 synthetic 500 x 375 JPEG files written to a temporary directory (deleted after),
  decoded by PIL in the workers; plus `new, decode=gpu`, whose workers only read the bytes and
  draw the augmentation (the nvJPEG decode on the GPU is not measured here).

Each measurement runs in a fresh process (the right `sparseopt` on `sys.path`, fresh loader
workers): one warm-up batch, then the rest of one epoch timed; variants alternate for `--rounds`
rounds (in reverse order every other round) and the medians are printed as a Markdown table:
wall-clock img/s per worker, and images per CPU-second of the worker processes (their rusage),
which other load on a shared machine disturbs far less. The last column is the CPU cost
of `to_input` per batch (for decode=gpu: decoding on the CPU too), which a CUDA run does on the GPU.

    python benchmarks/loader_throughput.py [--workers 1] [--rounds 3] [--jpegs 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "f7b4bc4"
IMAGE_SIZE = (500, 375)  # width, height: a typical ImageNet photo
CLASSES = 10
IN_MEMORY_IMAGES = 256
NORMALISE_REPEATS = 3
VARIANTS: tuple[tuple[str, str, str], ...] = (  # (workload, code, decode)
    ("memory", "old", "pil"),
    ("memory", "new", "pil"),
    ("jpeg", "old", "pil"),
    ("jpeg", "new", "pil"),
    ("jpeg", "new", "gpu"),
)


def extract_old_sparseopt(repo: Path, commit: str, into: Path) -> Path:
    """`sparseopt/` as of `commit` of git repository `repo`, extracted under `into` (no worktree)."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit, "sparseopt"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def synthetic_photo(rng: np.random.Generator) -> np.ndarray:
    """A 375 x 500 RGB uint8 image: smooth colour blobs plus pixel noise (JPEG-sized like a photo)."""
    from PIL import Image

    width, height = IMAGE_SIZE
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    noise = rng.integers(-12, 13, size=(height, width, 3))
    return np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_jpegs(root: Path, count: int) -> None:
    """`count` training JPEGs (quality 90) over CLASSES folders, and one val image per class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, total in (("train", count), ("val", CLASSES)):
        for index in range(total):
            folder = root / split / f"n{index % CLASSES:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(synthetic_photo(rng))
            image.save(folder / f"{split}_{index}.JPEG", quality=90)


def in_memory(splits: Any) -> Any:
    """`splits` whose ImageFolder returns decoded images from memory (IN_MEMORY_IMAGES distinct
    ones, reused round-robin), so the workers do everything but decoding."""
    from torchvision.datasets.folder import pil_loader

    folder = splits.train.dataset
    paths = [path for path, _ in folder.samples]
    decoded = [pil_loader(path) for path in paths[:IN_MEMORY_IMAGES]]
    cache = {path: decoded[index % len(decoded)] for index, path in enumerate(paths)}
    folder.loader = cache.__getitem__
    return splits


def measure(code: Path, root: Path, workload: str, decode: str, workers: int, batch: int) -> dict:
    """One epoch of the training loader of `code`'s sparseopt: img/s after the first batch."""
    sys.path.insert(0, str(code))
    import torch

    import sparseopt
    from sparseopt.config import DataConfig
    from sparseopt.data import build_datasets, build_loaders

    options = {"decode": decode} if decode != "pil" else {}
    cfg = DataConfig(
        name="imagenet",
        root=str(root),
        batch_size=batch,
        loader_workers=workers,
        val_fraction=0.0,
        **options,
    )
    splits = build_datasets(cfg, seed=0)
    if workload == "memory":
        splits = in_memory(splits)
    loader = build_loaders(splits, cfg, 0, 1, seed=0).train
    workers_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    batches = iter(loader)
    first_images, _ = next(batches)
    start = time.perf_counter()
    timed = sum(1 for _ in batches)  # exhausting the iterator joins the workers
    elapsed = time.perf_counter() - start
    workers_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu_s = sum(
        getattr(workers_after, field) - getattr(workers_before, field)
        for field in ("ru_utime", "ru_stime")
    )
    to_input = getattr(splits, "to_input", None)
    normalise_ms = None
    if to_input is not None:
        cpu = torch.device("cpu")
        begin = time.perf_counter()
        for _ in range(NORMALISE_REPEATS):
            to_input(first_images, cpu, False)
        normalise_ms = 1000 * (time.perf_counter() - begin) / NORMALISE_REPEATS
    data = first_images if isinstance(first_images, torch.Tensor) else first_images.data
    return {
        "sparseopt": str(Path(sparseopt.__file__).parent),
        "images_per_s": timed * batch / elapsed,
        "images_per_worker_cpu_s": (timed + 1) * batch / worker_cpu_s,
        "batch_mb": data.numel() * data.element_size() / 1e6,
        "dtype": str(data.dtype),
        "normalise_ms": normalise_ms,
    }


def run_variant(code: Path, root: Path, variant: tuple[str, str, str], args: Any) -> dict:
    """`measure` in a fresh interpreter (so exactly one sparseopt is imported)."""
    workload, _, decode = variant
    command = [
        sys.executable,
        __file__,
        "--measure",
        json.dumps([str(code), str(root), workload, decode, args.workers, args.batch]),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float:
    """The median of `key` over rounds."""
    return statistics.median(run[key] for run in runs)


def report(results: dict[tuple[str, str, str], list[dict]], workers: int) -> None:
    """Medians over rounds as a Markdown table: wall-clock img/s per worker process, and images
    per CPU-second of the worker processes (robust to other load on the machine)."""
    print(
        f"| workload | code | decode | img/s per worker, wall ({workers} worker(s)) | ratio | "
        "img per worker CPU-s | ratio | MB per batch | dtype | `to_input` on the CPU, ms/batch |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|---:|")
    for variant, runs in results.items():
        workload, code, decode = variant
        old = results[(workload, "old", "pil")]
        wall = median_of(runs, "images_per_s")
        cpu = median_of(runs, "images_per_worker_cpu_s")
        normalise = (
            "—" if runs[0]["normalise_ms"] is None else f"{median_of(runs, 'normalise_ms'):.1f}"
        )
        print(
            f"| {workload} | {code} | {decode} | {wall / workers:,.0f} | "
            f"{wall / median_of(old, 'images_per_s'):.2f}× | {cpu:,.0f} | "
            f"{cpu / median_of(old, 'images_per_worker_cpu_s'):.2f}× | {runs[0]['batch_mb']:.1f} | "
            f"{runs[0]['dtype']} | {normalise} |"
        )
    for variant, runs in results.items():
        rounds = ", ".join(f"{run['images_per_s']:,.0f}" for run in runs)
        print(f"# {'/'.join(variant)}: img/s per round (wall) {rounds}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="loader workers (>= 1)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jpegs", type=int, default=2000)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--git-repo", type=Path, default=REPO, help="where --old-commit lives")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be >= 1 (the figures are per loader worker process)")
    if args.measure:
        code, root, workload, decode, workers, batch = json.loads(args.measure)
        print(json.dumps(measure(Path(code), Path(root), workload, decode, workers, batch)))
        return
    with tempfile.TemporaryDirectory(prefix="loader-throughput-") as tmp:
        old_code = extract_old_sparseopt(args.git_repo, args.old_commit, Path(tmp) / "old")
        root = Path(tmp) / "imagenet"
        write_jpegs(root, args.jpegs)
        codes = {"old": old_code, "new": REPO}
        results: dict[tuple[str, str, str], list[dict]] = {variant: [] for variant in VARIANTS}
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                results[variant].append(run_variant(codes[variant[1]], root, variant, args))
    print(
        f"old = sparseopt at {args.old_commit}, new = {REPO}; batch {args.batch}, "
        f"{args.jpegs} JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, medians of {args.rounds} rounds"
    )
    report(results, args.workers)


if __name__ == "__main__":
    main()
