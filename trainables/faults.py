"""Test-only fault injection in a trial's training worker; inert unless `SPARSESWEEP_FAULT_PLAN` is set.

The fault tests need a worker that dies, or stands still, at a known point of a known trial,
on its first attempt(s) only. `SPARSESWEEP_FAULT_PLAN` names a JSON file that maps a trial's
config hash to one fault:

    {"<config_hash>": {"epoch": 2, "action": "kill", "times": 1}}

* `action: kill` sends SIGKILL to the worker process (a crashed or preempted worker);
  `action: pause` sleeps until the file named by `release` exists (or `timeout_s` passes),
  so a test can kill the whole sweep while this trial is known to be mid-epoch.
* The fault fires on rank 0 at the first training step of `epoch` (1-based), i.e. after the
  trial's checkpoint of epoch `epoch - 1`, at most `times` times: each firing first creates
  the marker file `<plan>.<config_hash>.<n>` (n = 1..times), so a retried or resumed attempt
  finds every marker taken and trains on, and the test can see that the fault fired.

Nothing reads the variable except this module; never set it outside tests.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FAULT_PLAN_ENV = "SPARSESWEEP_FAULT_PLAN"


class Fault(BaseModel):
    """One planned fault of one trial (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int = Field(ge=1)
    action: Literal["kill", "pause"]
    times: int = Field(1, ge=1)
    release: str | None = None
    timeout_s: float = Field(600.0, gt=0)


def marker_path(plan: str | os.PathLike, config_hash: str, firing: int) -> Path:
    """The file created just before the `firing`-th (1-based) firing of a trial's fault."""
    return Path(f"{plan}.{config_hash}.{firing}")


def fault_hook(config_hash: str, epoch: int, rank: int) -> Callable[[int], None] | None:
    """The `on_step` callback that fires the trial's planned fault in 0-based `epoch`, or None."""
    plan = os.environ.get(FAULT_PLAN_ENV)
    if not plan or rank != 0:
        return None
    entry = json.loads(Path(plan).read_text()).get(config_hash)
    if entry is None:
        return None
    fault = Fault.model_validate(entry)
    if fault.epoch != epoch + 1:
        return None

    def on_step(step: int) -> None:
        if step == 1 and _take_marker(plan, config_hash, fault.times):
            _fire(fault)

    return on_step


def _take_marker(plan: str, config_hash: str, times: int) -> bool:
    """Create the first free marker; False when all `times` are taken (the fault is spent)."""
    for firing in range(1, times + 1):
        try:
            descriptor = os.open(
                marker_path(plan, config_hash, firing), os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        except FileExistsError:
            continue
        os.close(descriptor)
        return True
    return False


def _fire(fault: Fault) -> None:
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    deadline = time.monotonic() + fault.timeout_s
    while time.monotonic() < deadline and not (fault.release and Path(fault.release).exists()):
        time.sleep(0.2)
