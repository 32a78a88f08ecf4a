"""One real training epoch of the paper's models on a GPU, on synthetic data of the right shape.

For `sweeps/spec/cost.py`'s per-epoch costs (issue #5). Each workload takes the paper spec's
training recipe (`sweeps/configs/paper_*.yaml`: model, batch, optimizer, schedule, precision,
channels_last) for a dense and a RigL+SparseOpt (s = 0.9) cell and swaps the dataset for
`synthetic` images of the real shape and class count, so the whole training path runs
(`sparseopt.recipe.build_run` -> `train_and_evaluate`, sparse hooks included):

- CIFAR-100 / ResNet-20: the full 50,000-image training set shape (45,000 train after the 10%
  validation split) and 10,000 test images; epoch 1 warms up, epoch 2 is timed end to end.
- ImageNet / ResNet-50: the per-GPU share of the spec's global batch (1024 / 8 = 128) on
  `--imagenet-images` images; epoch 1 warms up, epoch 2's throughput is extrapolated to
  ImageNet's 1,281,167 training and 50,000 + 12,811 evaluation images on 8 GPUs (linear DDP
  scaling assumed; in-memory tensors, so JPEG decoding is not counted).

The loaders keep the spec's `loader_workers` (4 for CIFAR-100, 10 for ImageNet), as a trial would.

Each is measured with deterministic kernels (`deterministic: true`, the default: cuDNN's
deterministic algorithms, no autotuning) and without. After the timed epoch it checks the CUDA path's invariants: every masked weight and its SGD
momentum are exactly 0 off the mask, and the measured sparsity is the target.

    python benchmarks/gpu_epoch.py [--imagenet-images 7680] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from sparseopt.config import TrainConfig
from sparseopt.recipe import Run, build_run, train_and_evaluate
from sweeps.spec.load import load_spec

IMAGENET_TRAIN, IMAGENET_VAL, IMAGENET_GPUS = 1_281_167, 50_000, 8
WORKLOADS: dict[str, dict[str, Any]] = {
    "cifar100/resnet20": {"spec": "paper_cifar100_resnet20", "classes": 100, "size": 32},
    "imagenet/resnet50": {"spec": "paper_imagenet_resnet50", "classes": 1000, "size": 224},
}
ARMS = ("dense", "rigl+sparseopt")


def workload_config(name: str, arm: str, imagenet_images: int, deterministic: bool) -> TrainConfig:
    """The paper spec's recipe for `arm` at s = 0.9 (dense: s = 0) on synthetic data of the shape."""
    workload = WORKLOADS[name]
    spec = load_spec(workload["spec"], [f"grid.arms=[{arm}]", "grid.sparsities=[0.9]"])
    cell = spec.cells()[0]
    config = cell.train_config(spec.grid.seeds[0], spec.search.lr.representative())
    payload = config.model_dump(mode="json")
    data = payload["data"]
    if name.startswith("cifar100"):
        train_size, test_size = 50_000, 10_000
    else:  # per-GPU share of the global batch; eval sized to a few batches
        data["batch_size"] = data["batch_size"] // IMAGENET_GPUS
        train_size, test_size = imagenet_images, 4 * data["eval_batch_size"]
    data.update(
        name="synthetic",
        root=None,
        download=False,
        synthetic_num_classes=workload["classes"],
        synthetic_image_size=workload["size"],
        synthetic_train_size=train_size,
        synthetic_test_size=test_size,
    )
    payload.update(device="cuda", deterministic=deterministic)
    return TrainConfig.model_validate(payload)


def masked_state_is_exact(run: Run) -> dict[str, Any]:
    """Off-mask weights and SGD momentum exactly 0 on the GPU; measured vs target sparsity."""
    bad = []
    for name, mask in run.sparse_state.masks.items():
        weight = run.module.get_submodule(name).weight
        off = ~mask.bool()
        momentum = run.optimizer.state.get(weight, {}).get("momentum_buffer")
        if weight.device.type != "cuda" or bool(weight.detach()[off].any()):
            bad.append(f"{name}: weight")
        if momentum is not None and bool(momentum[off].any()):
            bad.append(f"{name}: momentum")
    return {"off_mask_nonzero": bad, "sparsity": run.sparse_state.sparsity()}


def measure(name: str, arm: str, imagenet_images: int, deterministic: bool) -> dict[str, Any]:
    """Warm-up epoch, then one timed epoch (train + val + test evaluation)."""
    config = workload_config(name, arm, imagenet_images, deterministic)
    run = build_run(config, device="cuda")
    train_and_evaluate(run, 0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    metrics = train_and_evaluate(run, 1)
    torch.cuda.synchronize()
    epoch_s = time.perf_counter() - start
    train_images = metrics["samples_per_s"] * metrics["epoch_time_s"]
    eval_images = len(run.loaders.val.dataset) + len(run.loaders.test.dataset)
    eval_s = epoch_s - metrics["epoch_time_s"]
    result = {
        "workload": name,
        "arm": arm,
        "precision": config.precision,
        "deterministic": config.deterministic,
        "channels_last": config.channels_last,
        "batch_per_gpu": config.data.batch_size,
        "train_images": round(train_images),
        "train_images_per_s": metrics["samples_per_s"],
        "eval_images_per_s": eval_images / eval_s,
        "epoch_s": epoch_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        **masked_state_is_exact(run),
    }
    if name.startswith("imagenet"):
        per_gpu_train = IMAGENET_TRAIN / IMAGENET_GPUS / result["train_images_per_s"]
        holdout = IMAGENET_TRAIN * config.data.val_fraction
        per_gpu_eval = (IMAGENET_VAL + holdout) / IMAGENET_GPUS / result["eval_images_per_s"]
        result["extrapolated_epoch_s_on_8_gpus"] = per_gpu_train + per_gpu_eval
    torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet-images", type=int, default=7_680)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_epoch.py needs a CUDA device")
    results = [
        measure(name, arm, args.imagenet_images, deterministic)
        for name in WORKLOADS
        for deterministic in (True, False)
        for arm in ARMS
    ]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(
        "| workload | arm | precision | deterministic | batch/GPU | train img/s | eval img/s | "
        "epoch s | 8-GPU ImageNet epoch s | peak GiB | sparsity | off-mask nonzero |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        extrapolated = r.get("extrapolated_epoch_s_on_8_gpus")
        print(
            f"| {r['workload']} | {r['arm']} | {r['precision']} | {r['deterministic']} | "
            f"{r['batch_per_gpu']} | "
            f"{r['train_images_per_s']:,.0f} | {r['eval_images_per_s']:,.0f} | "
            f"{r['epoch_s']:.1f} | {'' if extrapolated is None else f'{extrapolated:.0f}'} | "
            f"{r['peak_memory_gib']:.1f} | {r['sparsity']:.4f} | "
            f"{', '.join(r['off_mask_nonzero']) or 'none'} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"device": torch.cuda.get_device_name(), "results": results}, handle, indent=2
            )


if __name__ == "__main__":
    main()
