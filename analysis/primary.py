"""The primary declaration: the contrasts a sweep exists to answer, and how the verdict reads.

A sweep declares (spec section `analysis:`, recorded by the tracker as the experiment tag
`sparsesweep.primary`, overridable by `sparsesweep report --primary ARM:BASELINE`):

* `primary`: the contrasts, each `ARM:BASELINE` (arm − baseline). Default: every arm with a
  modifier against its base arm (`base_arm`: the arm without SparseOpt and its options, or,
  for an arm without SparseOpt, the bare method), where both ran; `dense` is a reference
  only. Only these contrasts form the family within which multiplicity is corrected (Holm);
  every other comparison of the report is exploratory.
* `alpha`: the family-wise error rate (default 0.05).
* `target`: a test accuracy (%) the budget-to-target table and the budget equivalence also
  aim at (default none: budget-to-target aims at each baseline's mean at its largest budget,
  budget equivalence is read at each of the arm's budgets).
* `halfwidth`: the ± half-width (accuracy points) of a 95 % interval of a paired difference
  the `few_seeds` guard asks for (default 1.0).

The experiment tag holds this JSON object (every key optional; `primary` null or absent:
the default contrasts)::

    {"primary": ["rigl+sparseopt:rigl"], "alpha": 0.05, "target": null, "halfwidth": 1.0}

Stdlib only, so that the spec can validate its `analysis:` section with it cheaply.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.errors import BadInputError
from contract.arms import baseline_arm, parse_arm

DEFAULT_ALPHA = 0.05
DEFAULT_HALFWIDTH = 1.0
KEYS: tuple[str, ...] = ("primary", "alpha", "target", "halfwidth")


@dataclass(frozen=True)
class PrimaryDeclaration:
    """What the verdict answers and how strictly; `contrasts=None` means the default."""

    contrasts: tuple[tuple[str, str], ...] | None = None
    """(arm, baseline) pairs."""
    alpha: float = DEFAULT_ALPHA
    target: float | None = None
    halfwidth: float = DEFAULT_HALFWIDTH

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise BadInputError(f"analysis.alpha = {self.alpha}: allowed: a number in (0, 1)")
        if self.target is not None and not 0.0 <= self.target <= 100.0:
            raise BadInputError(
                f"analysis.target = {self.target}: allowed: a test accuracy in [0, 100] (%)"
            )
        if not (math.isfinite(self.halfwidth) and self.halfwidth > 0.0):
            raise BadInputError(
                f"analysis.halfwidth = {self.halfwidth}: allowed: a positive number of points"
            )
        for arm, baseline in self.contrasts or ():
            if arm == baseline:
                raise BadInputError(f"primary contrast {arm}:{baseline} compares an arm to itself")

    def resolve(self, arms: Iterable[str]) -> PrimaryDeclaration:
        """This declaration with its contrasts filled in (the default, for the arms that ran)."""
        if self.contrasts is not None:
            return self
        return PrimaryDeclaration(default_contrasts(arms), self.alpha, self.target, self.halfwidth)

    def to_json(self) -> str:
        """The JSON object of the experiment tag (module docstring)."""
        contrasts = None if self.contrasts is None else [f"{a}:{b}" for a, b in self.contrasts]
        values = [contrasts, self.alpha, self.target, self.halfwidth]
        return json.dumps(dict(zip(KEYS, values, strict=True)))


def base_arm(arm: str) -> str | None:
    """The arm a modified arm is judged against: without SparseOpt and its options, or (for an
    arm without SparseOpt) the bare method; None for an arm without modifiers or a dense one."""
    method, *modifiers = arm.split("+")
    if method == "dense" or not modifiers:
        return None
    baseline = baseline_arm(arm)
    return baseline if baseline != arm else method


def default_contrasts(arms: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Every arm with a modifier against its base arm (`base_arm`), where both ran."""
    present = set(arms)
    pairs = [(arm, base_arm(arm)) for arm in sorted(present)]
    return tuple((arm, base) for arm, base in pairs if base is not None and base in present)


def parse_contrast(text: str) -> tuple[str, str]:
    """`ARM:BASELINE` -> (arm, baseline), both valid arm names (BadInputError otherwise)."""
    arm, sep, baseline = text.strip().partition(":")
    if not sep or not arm or not baseline:
        raise BadInputError(
            f"primary contrast {text!r}: write it ARM:BASELINE, e.g. 'rigl+sparseopt:rigl'"
        )
    for name in (arm, baseline):
        try:
            parse_arm(name)
        except ValueError as error:
            raise BadInputError(f"primary contrast {text!r}: {error}") from None
    return arm, baseline


def declaration(
    contrasts: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    target: float | None = None,
    halfwidth: float = DEFAULT_HALFWIDTH,
) -> PrimaryDeclaration:
    """A declaration from `ARM:BASELINE` strings (None: the default contrasts)."""
    pairs = None if contrasts is None else tuple(parse_contrast(text) for text in contrasts)
    if pairs is not None and not pairs:
        raise BadInputError("primary: an empty list declares nothing; omit it for the default")
    return PrimaryDeclaration(pairs, float(alpha), _number(target), float(halfwidth))


def from_json(text: str | None) -> PrimaryDeclaration:
    """The declaration of an experiment tag (module docstring); the default when absent."""
    if text is None:
        return PrimaryDeclaration()
    try:
        values: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"experiment tag sparsesweep.primary is not JSON: {error}") from None
    if not isinstance(values, dict) or set(values) - set(KEYS):
        raise BadInputError(
            f"experiment tag sparsesweep.primary = {text!r}: allowed: a JSON object with the "
            f"keys {', '.join(KEYS)}"
        )
    contrasts = values.get("primary")
    if contrasts is not None and not (
        isinstance(contrasts, list) and all(isinstance(c, str) for c in contrasts)
    ):
        raise BadInputError(
            f"experiment tag sparsesweep.primary: 'primary' = {contrasts!r}; allowed: a list "
            "of 'ARM:BASELINE' strings or null"
        )
    try:
        return declaration(
            contrasts,
            alpha=values.get("alpha", DEFAULT_ALPHA),
            target=values.get("target"),
            halfwidth=values.get("halfwidth", DEFAULT_HALFWIDTH),
        )
    except (TypeError, ValueError) as error:
        raise BadInputError(f"experiment tag sparsesweep.primary = {text!r}: {error}") from None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
