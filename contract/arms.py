"""The arm grammar and the sparse-option rules: DST methods, modifiers, and which go together.

An arm is a DST method plus modifiers written in the canonical order of `MODIFIERS`, so every
arm has one name (`rigl+sparseopt+cap`). Each modifier switches one field of
`sparseopt.config.SparseConfig` away from its default (`MODIFIER_TABLE`), and the rules on
which modifiers and methods go together are stated here once, in modifier terms
(`Modifier.needs`, `Modifier.method_trait`, `Modifier.excludes`), and checked by one function,
`option_problems`: `parse_arm` applies it to an arm's modifiers and `SparseConfig` to the
options a config switches on, so an arm is valid exactly when the config it sets is.

`METHOD_TRAITS` is the registry of method names: `SparseConfig.method` takes its values from
it and `sparseopt.topology` refuses to import unless it has one updater class per name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodTraits:
    """What the option rules and the readers need to know of a DST method."""

    sparse: bool
    """It masks the maskable weights (every method but dense)."""
    dynamic: bool
    """It moves its masks: drops and grows weights every delta_t steps."""
    gradient_growth: bool
    """It grows the weights of largest |gradient| (so the regrowth scores apply)."""


METHOD_TRAITS: dict[str, MethodTraits] = {
    "dense": MethodTraits(sparse=False, dynamic=False, gradient_growth=False),
    "static": MethodTraits(sparse=True, dynamic=False, gradient_growth=False),
    "set": MethodTraits(sparse=True, dynamic=True, gradient_growth=False),
    "rigl": MethodTraits(sparse=True, dynamic=True, gradient_growth=True),
}
METHODS: tuple[str, ...] = tuple(METHOD_TRAITS)
DYNAMIC_METHODS: tuple[str, ...] = tuple(
    name for name, traits in METHOD_TRAITS.items() if traits.dynamic
)
TRAIT_WORDS: dict[str, str] = {
    "sparse": "a sparse method",
    "dynamic": "a dynamic (drop-and-grow) method",
    "gradient_growth": "a method that grows by gradient",
}

CAP_F_MAX = 1.0
CLIP_MAX_NORM = 1.0


@dataclass(frozen=True)
class Modifier:
    """One arm modifier: the SparseConfig field it sets, and what it needs to be valid."""

    name: str
    field: str
    """The `SparseConfig` field it switches on."""
    on: Any
    """The field's value in an arm with this modifier (HAM's comes from the base config)."""
    off: Any
    """The field's value otherwise: `SparseConfig`'s default."""
    needs: tuple[str, ...] = ()
    """Modifiers it needs besides itself."""
    method_trait: str | None = None
    """The `MethodTraits` attribute the method must have, if any."""
    excludes: tuple[str, ...] = ()
    """Modifiers it cannot go with."""


MODIFIER_TABLE: tuple[Modifier, ...] = (
    Modifier("sparseopt", "preconditioner", "sparseopt", "none", method_trait="sparse"),
    Modifier(
        "corrected",
        "regrow_scores",
        "corrected",
        "raw",
        needs=("sparseopt",),
        method_trait="gradient_growth",
    ),
    Modifier("cap", "f_max", CAP_F_MAX, None, needs=("sparseopt",)),
    Modifier("normonly", "sparseopt_layers", "normalized", "all", needs=("sparseopt",)),
    Modifier("wdscale", "scale_weight_decay", True, False, needs=("sparseopt",)),
    Modifier("ham", "ham", {}, None),
    Modifier("renorm", "grad_renorm", True, False, excludes=("clip",)),
    Modifier("clip", "grad_clip", CLIP_MAX_NORM, None, excludes=("renorm",)),
    Modifier("rownorm", "drop_scores", "row_normalized", "magnitude", method_trait="dynamic"),
)
"""Every modifier in canonical order: sparseopt, its options, then the method-independent ones."""
MODIFIERS: tuple[str, ...] = tuple(modifier.name for modifier in MODIFIER_TABLE)
_BY_NAME: dict[str, Modifier] = {modifier.name: modifier for modifier in MODIFIER_TABLE}
SPARSEOPT_OPTIONS: tuple[str, ...] = tuple(
    modifier.name for modifier in MODIFIER_TABLE if "sparseopt" in modifier.needs
)
"""Modifiers that change how SparseOpt acts, so they need `sparseopt` (and leave with it)."""

ARM_CONTROLLED: tuple[str, ...] = (
    "sparse.method",
    *(f"sparse.{modifier.field}" for modifier in MODIFIER_TABLE),
)
"""TrainConfig keys an arm sets (a workload or the base may not)."""


def option_problems(
    method: str, modifiers: Collection[str], name: Callable[[str], str] = repr
) -> list[str]:
    """Why `modifiers` cannot go together on `method`, one sentence each (empty when they can).

    The one home of the sparse-option rules. `name(modifier)` words a modifier for the reader:
    the modifier itself for an arm, its field and value for a config.
    """
    traits = METHOD_TRAITS[method]
    problems = []
    for modifier in MODIFIER_TABLE:
        if modifier.name not in modifiers:
            continue
        trait = modifier.method_trait
        if trait is not None and not getattr(traits, trait):
            allowed = [other for other, kind in METHOD_TRAITS.items() if getattr(kind, trait)]
            problems.append(
                f"{name(modifier.name)} needs {TRAIT_WORDS[trait]} ({', '.join(allowed)}); "
                f"got {method!r}"
            )
        for needed in modifier.needs:
            if needed not in modifiers:
                reason = " (it modifies SparseOpt)" if needed == "sparseopt" else ""
                problems.append(f"{name(modifier.name)} needs {name(needed)}{reason}")
        for other in modifier.excludes:
            if other in modifiers and MODIFIERS.index(other) > MODIFIERS.index(modifier.name):
                problems.append(
                    f"{name(modifier.name)} and {name(other)} exclude each other; set one of them"
                )
    return problems


def modifiers_in_use(fields: Mapping[str, Any]) -> frozenset[str]:
    """The modifiers whose field `fields` (a SparseConfig's, by field name) sets off its default."""
    return frozenset(
        modifier.name for modifier in MODIFIER_TABLE if fields[modifier.field] != modifier.off
    )


def allowed_modifiers(method: str) -> list[str]:
    """The modifiers that are valid on `method` (each with what it needs), in canonical order."""
    return [
        modifier.name
        for modifier in MODIFIER_TABLE
        if not option_problems(method, {modifier.name, *modifier.needs})
    ]


@dataclass(frozen=True)
class Arm:
    """A parsed arm name."""

    name: str
    method: str
    modifiers: frozenset[str]

    @property
    def sparse(self) -> bool:
        """Whether the arm trains a sparse network (every method but dense)."""
        return METHOD_TRAITS[self.method].sparse

    @property
    def sparseopt(self) -> bool:
        """Whether the arm applies SparseOpt."""
        return "sparseopt" in self.modifiers

    def train_settings(self) -> dict[str, Any]:
        """The dotted TrainConfig keys this arm fixes for every trial (HAM's settings aside:
        `sparse.ham` is on or off, its values come from the base config)."""
        settings: dict[str, Any] = {"sparse.method": self.method}
        for modifier in MODIFIER_TABLE:
            if modifier.name != "ham":
                used = modifier.name in self.modifiers
                settings[f"sparse.{modifier.field}"] = modifier.on if used else modifier.off
        return settings


def parse_arm(name: str) -> Arm:
    """Parse `METHOD[+modifier...]`; ValueError naming the allowed methods and modifiers, or the
    option rule the arm breaks (`option_problems`)."""
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
    problems = option_problems(method, modifiers)
    if problems:
        raise ValueError(
            f"arm {name!r}: {'; '.join(problems)} "
            f"(modifiers allowed on {method}, each with what it needs: "
            f"{', '.join(allowed_modifiers(method))})"
        )
    return Arm(name=name, method=method, modifiers=frozenset(modifiers))


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
        rest = parsed.modifiers - {modifier}
        if not option_problems(parsed.method, rest):
            contrasts.append((modifier, arm_name(parsed.method, rest)))
    return contrasts
