"""The arm grammar: `METHOD[+modifier...]`, what each modifier sets, and each arm's baselines.

An arm is a DST method plus modifiers written in the canonical order of `MODIFIERS`, so every
arm has one name (`rigl+sparseopt+cap`). SparseOpt's own options (`corrected`, `cap`,
`normonly`, `wdscale`) need `sparseopt`; the baseline of an arm drops them with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METHODS: tuple[str, ...] = ("dense", "static", "set", "rigl")
MODIFIERS: tuple[str, ...] = (
    "sparseopt",
    "corrected",
    "cap",
    "normonly",
    "wdscale",
    "ham",
    "renorm",
    "clip",
)
SPARSEOPT_OPTIONS: tuple[str, ...] = ("corrected", "cap", "normonly", "wdscale")
"""Modifiers that change how SparseOpt acts, so they need `sparseopt` (and leave with it)."""

MODIFIER_HELP: dict[str, str] = {
    "sparseopt": "SparseOpt: scale row i's gradient by f_i = sqrt(k_i / mean k)",
    "corrected": "RigL regrowth scored on the SparseOpt-corrected gradient (rigl only)",
    "cap": "SparseOpt factors capped at 1 (f_i = min(f_i, 1): no row is amplified)",
    "normonly": "SparseOpt only on layers followed by a normalisation (not the classifier)",
    "wdscale": "weight decay scaled by the same factor f_i as the gradient",
    "ham": "Hyperbolic Aware Minimization after each step",
    "renorm": "the whole gradient rescaled to unit global norm every step (direction only)",
    "clip": "the global gradient norm clipped to 1 (acts only on steps where it exceeds 1)",
}

CAP_F_MAX = 1.0
CLIP_MAX_NORM = 1.0


@dataclass(frozen=True)
class Arm:
    """A parsed arm name."""

    name: str
    method: str
    modifiers: frozenset[str]

    @property
    def sparse(self) -> bool:
        """Whether the arm trains a sparse network (every method but dense)."""
        return self.method != "dense"

    @property
    def sparseopt(self) -> bool:
        """Whether the arm applies SparseOpt."""
        return "sparseopt" in self.modifiers

    def train_settings(self) -> dict[str, Any]:
        """The dotted TrainConfig keys this arm fixes for every trial (HAM's settings aside:
        `sparse.ham` is on or off, its values come from the base config)."""
        mods = self.modifiers
        return {
            "sparse.method": self.method,
            "sparse.preconditioner": "sparseopt" if "sparseopt" in mods else "none",
            "sparse.regrow_scores": "corrected" if "corrected" in mods else "raw",
            "sparse.f_max": CAP_F_MAX if "cap" in mods else None,
            "sparse.sparseopt_layers": "normalized" if "normonly" in mods else "all",
            "sparse.scale_weight_decay": "wdscale" in mods,
            "sparse.grad_renorm": "renorm" in mods,
            "sparse.grad_clip": CLIP_MAX_NORM if "clip" in mods else None,
        }


ARM_CONTROLLED: tuple[str, ...] = (
    "sparse.method",
    "sparse.preconditioner",
    "sparse.regrow_scores",
    "sparse.f_max",
    "sparse.sparseopt_layers",
    "sparse.scale_weight_decay",
    "sparse.grad_renorm",
    "sparse.grad_clip",
    "sparse.ham",
)
"""TrainConfig keys an arm sets (a workload or the base may not)."""


def parse_arm(name: str) -> Arm:
    """Parse `METHOD[+modifier...]`; ValueError naming the allowed methods and modifiers."""
    parts = name.split("+")
    method, modifiers = parts[0], parts[1:]
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r} in arm {name!r}; allowed methods: {', '.join(METHODS)}"
        )
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise ValueError(
                f"unknown modifier {modifier!r} in arm {name!r}; "
                f"allowed modifiers: {', '.join(MODIFIERS)}"
            )
    if len(set(modifiers)) != len(modifiers):
        raise ValueError(f"arm {name!r} repeats a modifier")
    canonical = sorted(modifiers, key=MODIFIERS.index)
    if modifiers != canonical:
        suggestion = "+".join([method, *canonical])
        raise ValueError(
            f"arm {name!r}: write modifiers in the order {', '.join(MODIFIERS)} "
            f"(here: {suggestion!r}) so every arm has one name"
        )
    mods = frozenset(modifiers)
    if method == "dense" and "sparseopt" in mods:
        raise ValueError(
            f"arm {name!r}: 'sparseopt' has no effect on a dense network (every f_i = 1); "
            "allowed modifiers for dense: ham, renorm, clip"
        )
    if "corrected" in mods and method != "rigl":
        raise ValueError(
            f"arm {name!r}: 'corrected' (RigL regrowth scored on the SparseOpt-corrected "
            "gradient) needs method rigl, e.g. 'rigl+sparseopt+corrected'"
        )
    needing = sorted(mods & set(SPARSEOPT_OPTIONS), key=MODIFIERS.index)
    if needing and "sparseopt" not in mods:
        raise ValueError(
            f"arm {name!r}: {', '.join(repr(m) for m in needing)} modify SparseOpt and need the "
            f"'sparseopt' modifier, e.g. {'+'.join([method, 'sparseopt', *needing])!r}"
        )
    if {"renorm", "clip"} <= mods:
        raise ValueError(
            f"arm {name!r}: 'renorm' (unit norm every step) and 'clip' (norm at most 1) "
            "exclude each other; allowed: one of them"
        )
    return Arm(name=name, method=method, modifiers=mods)


def arm_name(method: str, modifiers: frozenset[str] | set[str]) -> str:
    """The canonical name of a method with modifiers."""
    return "+".join([method, *sorted(modifiers, key=MODIFIERS.index)])


def baseline_arm(arm: str) -> str:
    """The baseline of an arm: its name without `sparseopt` and SparseOpt's options."""
    dropped = {"sparseopt", *SPARSEOPT_OPTIONS}
    return "+".join(part for part in arm.split("+") if part not in dropped)


def is_sparseopt_arm(arm: str) -> bool:
    """True if the arm applies SparseOpt (and so has a baseline to be compared with)."""
    return "sparseopt" in arm.split("+")[1:]


def ablation_contrasts(arm: str) -> list[tuple[str, str]]:
    """(modifier, nearest arm without it) for every modifier of `arm` except `sparseopt` whose
    removal leaves a valid arm: `rigl+sparseopt+cap` -> [("cap", "rigl+sparseopt")]."""
    parsed = parse_arm(arm)
    contrasts = []
    for modifier in sorted(parsed.modifiers - {"sparseopt"}, key=MODIFIERS.index):
        nearest = arm_name(parsed.method, parsed.modifiers - {modifier})
        try:
            parse_arm(nearest)
        except ValueError:
            continue
        contrasts.append((modifier, nearest))
    return contrasts
