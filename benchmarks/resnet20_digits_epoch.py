"""Cost of one ResNet-20 epoch on the digits (1 channel, 8x8, 10 classes) on one CPU thread.

Builds the run `sparsesweep train` builds (`sparseopt.recipe.build_run`) for ResNet-20 on the
digits with RigL + SparseOpt at s = 0.97 (ERK), torch limited to one thread, and times each
epoch (training + validation + test evaluation, as a trial runs it): wall time and this
process's CPU time. On a shared machine the wall time grows with the load; the CPU time is the
cost a dedicated thread would see. Also prints the steps per epoch (to set delta_t against)
and each layer's mean active fan-in per row.

    .venv/bin/python benchmarks/resnet20_digits_epoch.py [--epochs 3] [--batch-size 128]
        [--sparsity 0.97]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparseopt.config import TrainConfig
from sparseopt.diagnostics import fan_in_spread
from sparseopt.recipe import build_run, train_and_evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.97)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.model_validate(
        {
            "data": {"name": "digits", "batch_size": args.batch_size},
            "model": {"name": "resnet20"},
            "sparse": {"method": "rigl", "sparsity": args.sparsity, "preconditioner": "sparseopt"},
            "schedule": {"warmup_epochs": 0},
            "epochs": args.epochs,
            "device": "cpu",
        }
    )
    run = build_run(cfg)
    print(f"steps per epoch: {run.steps_per_epoch} (batch {args.batch_size})")
    for row in fan_in_spread(run.sparse_state.masks):
        print(f"  {row['layer']:24s} mean active fan-in {row['mean_k']:6.2f}")
    walls, cpus = [], []
    for epoch in range(cfg.epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = train_and_evaluate(run, epoch)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        print(
            f"epoch {epoch + 1}: wall {walls[-1]:.2f} s, CPU {cpus[-1]:.2f} s "
            f"(training part {metrics['epoch_time_s']:.2f} s wall), val_acc1 {metrics['val_acc1']:.1f}"
        )
    print(
        f"median epoch: wall {statistics.median(walls):.2f} s, CPU {statistics.median(cpus):.2f} s"
    )


if __name__ == "__main__":
    main()
