"""The adaptive-seeds rule's latest decision per primary cell pair, kept beside the sweep's
spec (`<sweep>/seed_decisions.jsonl`, one JSON line per pair) so that `sparsesweep status`
shows, without Ray, how many seeds each pair has and why it stopped. The searcher rewrites it
when a decision changes. Not `.json`: Tune copies every `*.json` and `*.pkl` of the experiment
folder to its staging folder on restore and back at each snapshot, which would put the copy
from before the restore back over newer decisions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from analysis.seed_rule import SeedDecision
from sweeps.spec.storage import read_text, write_text_atomic

DECISIONS_FILE = "seed_decisions.jsonl"

Pair = tuple[str, str]
"""(arm cell id, baseline cell id)."""


def decisions_path(spec_file: str) -> str:
    """The decisions file of the sweep whose stored spec is `spec_file`."""
    return f"{spec_file.rsplit('/', 1)[0]}/{DECISIONS_FILE}"


def read_decisions(path: str) -> dict[Pair, SeedDecision]:
    """{pair: its latest decision} (empty without a file)."""
    text = read_text(path)
    if not text:
        return {}
    found = {}
    for row in map(json.loads, text.splitlines()):
        halfwidth = math.nan if row["halfwidth"] is None else float(row["halfwidth"])
        found[(row["arm"], row["baseline"])] = SeedDecision(
            int(row["seeds"]), int(row["pairs"]), halfwidth, int(row["add"]), str(row["reason"])
        )
    return found


def write_decisions(path: str, decisions: Mapping[Pair, SeedDecision]) -> None:
    """Merge `decisions` into the file (each shard's searcher judges its own pairs)."""
    merged = {**read_decisions(path), **decisions}
    rows = [
        {
            "arm": arm,
            "baseline": baseline,
            "seeds": d.seeds,
            "pairs": d.pairs,
            "halfwidth": None if math.isnan(d.halfwidth) else d.halfwidth,
            "add": d.add,
            "reason": d.reason,
        }
        for (arm, baseline), d in sorted(merged.items())
    ]
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
