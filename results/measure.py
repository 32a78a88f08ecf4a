"""Run one command and record what it cost on this machine: wall time, the CPU time of the
command and of the processes it started that were reaped before it ended (a lower bound: a
worker killed at shutdown may be missed), and the machine's load while it ran.

The machine is shared, so a wall time alone says little: the 1-minute load average is sampled
every `--every` seconds (from /proc/loadavg) and its mean and maximum are kept beside the wall
time, with the CPU count. Appends one JSON line per run to `--log` (the command's exit status
is passed through).

    python results/measure.py --log results/resnet20/cost.jsonl --label sweep -- \
        sparsesweep run sweeps/configs/results_resnet20.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone


def load_average() -> float:
    """The machine's 1-minute load average."""
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def sample_load(samples: list[float], stop: threading.Event, every: float) -> None:
    """Append the load average to `samples` every `every` seconds until `stop` is set."""
    while not stop.wait(every):
        samples.append(load_average())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, help="JSON-lines file the record is appended to")
    parser.add_argument("--label", required=True, help="what the command is, for the record")
    parser.add_argument("--every", type=float, default=30.0, help="load sampling period, s")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (write it after --)")
    samples = [load_average()]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_load, args=(samples, stop, args.every), daemon=True)
    started = datetime.now(timezone.utc)
    wall = time.perf_counter()
    sampler.start()
    status = subprocess.call(command)
    stop.set()
    sampler.join()
    elapsed = time.perf_counter() - wall
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "label": args.label,
        "command": " ".join(command),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round(elapsed, 1),
        "wall_min": round(elapsed / 60.0, 2),
        "cpu_s_command_and_children": round(children.ru_utime + children.ru_stime, 1),
        "load_mean": round(sum(samples) / len(samples), 2),
        "load_max": round(max(samples), 2),
        "load_samples": len(samples),
        "cpus": os.cpu_count(),
        "exit_status": status,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    with open(args.log, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
