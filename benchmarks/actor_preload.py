"""Does Ray's `preload_python_modules` make a fresh actor start faster? (It does not.)

Ray Train V2 starts new actor processes for every trial (controller, workers), each importing
`ray.train.torch` (torch, pandas, Ray Data). Ray's raylet can import modules in every worker
process it starts (`_system_config={"preload_python_modules": [...]}`), which would only help if
actors were handed prestarted, already-importing idle workers. This creates an actor (0.5 CPU, a
job runtime_env as `sweeps.run.launch` sets) a few times per variant, each variant with its own local
Ray, and times creation and the import separately.

    .venv/bin/python benchmarks/actor_preload.py [--actors 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODULE = "ray.train.torch"


def measure(variant: str, actors: int) -> list[dict[str, float]]:
    """Start a local Ray for `variant`, create `actors` actors one after another, time each."""
    import ray

    system_config = {"preload_python_modules": [MODULE]} if variant == "preload" else {}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"SPARSESWEEP_PROBE": "1"}},
        _system_config=system_config,
    )
    time.sleep(20)  # give Ray time to prestart its idle worker pool

    @ray.remote(num_cpus=0.5)
    class Probe:
        def timed_import(self) -> tuple[float, float]:
            start = time.time()
            __import__(MODULE)
            return start, time.time()

    timings = []
    for _ in range(actors):
        created = time.time()
        probe = Probe.remote()
        start, end = ray.get(probe.timed_import.remote())
        timings.append(
            {"create_s": start - created, "import_s": end - start, "total_s": end - created}
        )
        ray.kill(probe)
        time.sleep(8)  # time to refill the pool
    ray.shutdown()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("default", "preload"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.actors)))
        return
    results: dict[str, list[dict[str, float]]] = {"default": [], "preload": []}
    for _ in range(args.rounds):
        for variant in results:  # alternate, each in a fresh process with its own Ray
            with tempfile.TemporaryDirectory(prefix="ray-") as ray_tmp:
                output = subprocess.run(
                    [sys.executable, __file__, "--child", variant, "--actors", str(args.actors)],
                    env={**os.environ, "RAY_TMPDIR": ray_tmp},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            results[variant] += json.loads(output.strip().splitlines()[-1])
    print("| variant | actor created (s) | import ray.train.torch (s) | total (s) |")
    print("|---|---:|---:|---:|")
    for variant, timings in results.items():
        medians = [
            statistics.median(t[key] for t in timings)
            for key in ("create_s", "import_s", "total_s")
        ]
        print(f"| {variant} | " + " | ".join(f"{value:.2f}" for value in medians) + " |")


if __name__ == "__main__":
    main()
