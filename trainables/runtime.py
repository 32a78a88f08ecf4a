"""Where and with what resources one trial runs (not part of the trial's identity)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrialRuntime:
    """Settings the driver needs that must not change a trial's config hash."""

    train_storage_path: str
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 1

    def resources_per_worker(self) -> dict[str, float]:
        """Ray resource request of one training worker."""
        resources = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker > 0:
            resources["GPU"] = float(self.gpus_per_worker)
        return resources


def train_run_name(config_hash: str) -> str:
    """Deterministic Ray Train run name: a restarted driver finds its checkpoints under it."""
    return f"trial-{config_hash}"
