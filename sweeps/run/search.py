"""A Ray Tune `Searcher` that runs one Optuna study per sweep cell, each lr on every seed.

Optuna's `OptunaSearch` cannot take grid factors, so the factorial part of a sweep (workload,
arm, sparsity, budget) is expanded here into cells, and each cell gets its own in-memory
Optuna study (seeded TPE, or GridSampler when every searched value is a grid), driven with
the ask/tell API:

- One Optuna trial = one lr (and weight decay) = a *group* of Tune trials, one per seed,
  handed out over successive `suggest` calls. Cells are served round-robin so they progress
  evenly.
- When every seed of a group has ended, Optuna is told the group's score under the one
  lr-selection rule (`contract.selection`): the mean over the seeds of the last reported
  `metric`, a diverged seed scoring the worst value, a failed one (Tune error, no metric, a
  non-finite value) left out; if no seed counts, the Optuna trial is told FAIL. A trial
  stopped early by ASHA counts with its last (partial) value. A trial that completes again
  after a restore (`resume_errored`) updates the records and the best-lr choice, not a value
  already told.
- Second stage (optional): once all search groups of a cell have ended, the best group under
  the same rule is re-run on `second_stage.seeds` (stage `final`, `lr_trial` = the chosen
  Optuna trial number).
- Adaptive seeds (`grid.seeds` a mapping): lr trials run the initial seeds; once both cells
  of a primary pair have ended every seed at their chosen lrs, `analysis.seed_rule` judges the
  pair's paired interval and may give both cells more seeds at those lrs (groups of stage
  `extra`, never ranked). Decisions are kept with the state and written to
  `seed_decisions.jsonl` (`sweeps.run.seed_decisions`) for `status`.
- Identity: a trial is its resolved `TrainConfig.config_hash()`. A config already handed out
  is never handed out again; a group member that would repeat one shares its result.
- State (studies, groups, trial ids, results) is pickled by `save` and brought back by
  `restore`, so `Tuner.restore` continues every study where it stopped. `extend` adopts a
  newer spec that only extends the old one. Every told trial is also mirrored to an Optuna
  journal beside the sweep's state (`sweeps.run.study_journal`), for `optuna.load_study` and
  optuna-dashboard.
- Tune wraps a `Searcher` in a `SearchGenerator` that saves a "finished" flag with the
  experiment; `SweepSearchGenerator` drops that flag on restore, so a sweep that had finished
  asks its searcher again and an extended spec gets its new trials.
- Shards (`sweeps.run.shards`): a searcher built for shard k of a sharded sweep serves the
  cells the stored plan gives that shard (all cells when the sweep has no plan).
- Each hand-out is journaled with its Tune trial id (`sweeps.run.handouts`) before Tune sees
  it; a restored generator gives a config handed out after the last snapshot its first trial
  id back. Trials carry a short tag and three evaluated params (cell, seed, lr): Tune keeps
  both in its experiment state, and the whole flattened config there cost 3 KB per trial.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from ray.tune.experiment import Trial
from ray.tune.experiment.config_parser import _create_trial_from_spec
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.utils.util import merge_dicts

from analysis.seed_rule import PAIRED_METRIC, SeedDecision, SeedRule, seed_decision
from analysis.stats import CONFIDENCE
from contract.outcome import Status, ended_outcome
from contract.selection import LrRanking, LrTrial, rank_lr_trials, trial_score
from contract.trial import Stage, TrialMeta, trial_config
from sparseopt.config import TrainConfig
from sweeps.run.handouts import read_handouts, record_handout
from sweeps.run.seed_decisions import decisions_path, write_decisions
from sweeps.run.shards import shard_cells
from sweeps.run.study_journal import JOURNAL_FILE, mirror_trial
from sweeps.run.tune_state import ended_trials
from sweeps.spec.cells import Cell
from sweeps.spec.diff import spec_changes_that_alter_existing, spec_diff_text
from sweeps.spec.load import read_spec_file
from sweeps.spec.schema import SweepSpec
from sweeps.spec.storage import is_remote

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # else one INFO line per tell in Tune's log

_STATE_VERSION = 2
"""2: a trial's outcome is its `SeedOutcome` (1: its seed score alone)."""


def cell_seed_offset(cell_id: str) -> int:
    """A stable per-cell offset for the sampler seed (independent of Python's hash seed)."""
    return int(hashlib.sha256(cell_id.encode()).hexdigest()[:8], 16)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for the ask/tell API: its `after_trial` calls `study.stop()` once the grid is
    exhausted, which raises outside `study.optimize`; the searcher counts trials itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


class SeedOutcome(NamedTuple):
    """How one Tune trial ended: its status, final search-metric value (what the lr rule
    ranks on) and final test_acc1 (what the adaptive-seeds rule pairs)."""

    status: str
    value: float | None
    accuracy: float | None = None


@dataclass
class _Group:
    """The Tune trials (one per seed) that evaluate one lr of one cell."""

    cell_id: str
    stage: str
    lr_trial: int
    lr: float
    weight_decay: float | None
    seeds: list[int]
    members: dict[int, str] = field(default_factory=dict)  # seed -> Tune trial id
    told: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.stage, self.lr_trial)

    def next_seed(self) -> int | None:
        """The first seed not yet handed out, if any."""
        for seed in self.seeds:
            if seed not in self.members:
                return seed
        return None


@dataclass
class _CellState:
    """One cell's study, groups (in creation order) and trials still running."""

    study: optuna.Study
    groups: dict[tuple[str, int], _Group] = field(default_factory=dict)
    open: list[tuple[str, int]] = field(default_factory=list)  # groups with seeds to hand out
    running: set[str] = field(default_factory=set)
    n_search: int = 0
    idle: bool = False  # nothing to hand out until one of its trials finishes or the spec grows


class SweepSearcher(Searcher):
    """Per-cell Optuna search behind Ray Tune's `Searcher` interface (see the module docstring).

    Use `num_samples=-1` in `TuneConfig`: the searcher returns `Searcher.FINISHED` itself.
    `shard`: the shard of a sharded sweep whose cells it serves (read from the plan beside
    `spec_file`).
    """

    _shard: int = 0  # a searcher pickled before shards served shard 0

    def __init__(
        self,
        spec: SweepSpec,
        metric: str | None = None,
        mode: str | None = None,
        spec_file: str | None = None,
        shard: int = 0,
    ):
        metric = metric or spec.search.metric
        expected_mode = "max" if spec.search.direction == "maximize" else "min"
        mode = mode or expected_mode
        if metric != spec.search.metric or mode != expected_mode:
            raise ValueError(
                f"metric/mode {metric!r}/{mode!r} disagree with the spec: search.metric is "
                f"{spec.search.metric!r}, which is {spec.search.direction}d (mode {expected_mode!r})"
            )
        super().__init__(metric=metric, mode=mode)
        self._spec = spec
        self._spec_file = spec_file
        self._shard = shard
        self._cells: dict[str, Cell] = {}
        self._order: list[str] = []
        self._states: dict[str, _CellState] = {}
        self._cursor = 0
        self._trials: dict[str, str] = {}  # Tune trial id -> its cell id
        self._sharers: dict[str, list[tuple[str, tuple[str, int], int]]] = {}  # id -> groups
        self._hashes: dict[str, str] = {}  # config hash -> Tune trial id
        self._outcomes: dict[str, SeedOutcome] = {}  # ended trial id -> how it ended
        self._last_values: dict[str, float] = {}
        self._decisions: dict[tuple[str, str], SeedDecision] = {}  # primary pair -> last
        self._pairs: dict[str, list[tuple[str, str]]] = {}  # cell -> its primary pairs
        self._adopt(spec)

    # ---- Tune's Searcher interface -------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Accept Tune's metric/mode only when they agree with the spec's."""
        if metric not in (None, self._metric) or mode not in (None, self._mode):
            raise ValueError(
                f"TuneConfig metric/mode {metric!r}/{mode!r} disagree with the sweep's "
                f"{self._metric!r}/{self._mode!r} (search.metric)"
            )
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        """The next trial's config, None if nothing can start now, or FINISHED when all is done."""
        waiting = False
        count = len(self._order)
        for step in range(count):
            cell_id = self._order[(self._cursor + step) % count]
            state = self._states[cell_id]
            picked = None if state.idle else self._next_for_cell(cell_id)
            if picked is not None:
                self._cursor = (self._cursor + step + 1) % count
                return self._hand_out(trial_id, *picked)
            state.idle = True
            waiting = waiting or bool(state.running)
        return None if waiting else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Remember the latest value of the metric (used if the final result lacks it)."""
        value = result.get(self._metric)
        if isinstance(value, int | float) and math.isfinite(value):
            self._last_values[trial_id] = float(value)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Record a finished seed; tell Optuna once every seed of its group has finished."""
        if trial_id not in self._trials:
            logger.warning("on_trial_complete for unknown trial %s: ignored", trial_id)
            return
        cell = self._cells.get(self._trials[trial_id])
        budget = cell.budget if cell is not None else 0
        final = (result or {}).get(self._metric)
        if not (isinstance(final, int | float) and math.isfinite(final)):
            final = self._last_values.get(trial_id)
        status = ended_outcome(error, result, budget)
        accuracy = (result or {}).get(PAIRED_METRIC)
        if not (isinstance(accuracy, int | float) and math.isfinite(accuracy)):
            accuracy = None
        self._outcomes[trial_id] = SeedOutcome(status.value, final, accuracy)
        self._last_values.pop(trial_id, None)
        self._states[self._trials[trial_id]].running.discard(trial_id)
        for sharer_cell, key, _seed in self._sharers[trial_id]:
            self._states[sharer_cell].idle = False
            self._maybe_tell(sharer_cell, self._states[sharer_cell].groups[key])

    def running_trial_ids(self) -> set[str]:
        """Trials handed out and not completed yet."""
        return {trial_id for state in self._states.values() for trial_id in state.running}

    def handed_out(self, config_hash: str) -> bool:
        """Whether a config with this hash has been handed out (under any trial id)."""
        return config_hash in self._hashes

    def rename_trial(self, trial_id: str, first_id: str, config_hash: str) -> None:
        """Record the trial just handed out as `trial_id` under `first_id` instead (the id its
        config was first handed out under, before a restore; see `SweepSearchGenerator`)."""
        cell_id = self._trials.pop(trial_id)
        self._trials[first_id] = cell_id
        self._sharers[first_id] = self._sharers.pop(trial_id)
        for sharer_cell, key, seed in self._sharers[first_id]:
            self._states[sharer_cell].groups[key].members[seed] = first_id
        self._hashes[config_hash] = first_id
        self._states[cell_id].running.discard(trial_id)
        self._states[cell_id].running.add(first_id)

    def save(self, checkpoint_path: str) -> None:
        """Pickle the whole search state (Tune calls this for every experiment checkpoint)."""
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, checkpoint_path: str) -> None:
        """Load a saved state, then extend it to the newer spec if there is one.

        The newer spec is the one this searcher was built with or, when built with a
        `spec_file`, the spec stored there now (`Tuner.restore` brings back the searcher
        pickled at launch, so the file is how a re-run with an extended spec reaches it).
        """
        target = (read_spec_file(self._spec_file) if self._spec_file else None) or self._spec
        spec_file = self._spec_file
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))
        self._spec_file = spec_file
        if target.model_dump() != self._spec.model_dump():
            self.extend(target)

    def get_state(self) -> dict:
        """Everything needed to continue: spec, studies, groups, trial bookkeeping."""
        return {
            "version": _STATE_VERSION,
            "spec": self._spec.model_dump(mode="json"),
            "metric": self._metric,
            "mode": self._mode,
            "states": self._states,
            "cursor": self._cursor,
            "trials": self._trials,
            "sharers": self._sharers,
            "hashes": self._hashes,
            "outcomes": self._outcomes,
            "last_values": self._last_values,
            "decisions": self._decisions,
        }

    def set_state(self, state: dict) -> None:
        """Replace this searcher's state with a saved one."""
        if state.get("version") not in (1, _STATE_VERSION):
            raise ValueError(
                f"searcher state version {state.get('version')!r} is not 1 or {_STATE_VERSION}"
            )
        self._spec = SweepSpec.model_validate(state["spec"])
        self._metric, self._mode = state["metric"], state["mode"]
        self._states = state["states"]
        self._cursor = state["cursor"]
        self._trials = state["trials"]
        self._sharers = state["sharers"]
        self._hashes = state["hashes"]
        self._outcomes = state["outcomes"]
        if state["version"] == 1:
            self._outcomes = {key: _v1_outcome(score) for key, score in self._outcomes.items()}
        self._last_values = state["last_values"]
        self._decisions = state.get("decisions", {})
        self._cells = {cell.cell_id: cell for cell in self._own_cells(self._spec)}
        self._order = list(self._cells)
        self._pairs = self._primary_pairs(self._spec)

    # ---- extension, progress ---------------------------------------------------------------

    @property
    def spec(self) -> SweepSpec:
        """The spec this searcher currently follows."""
        return self._spec

    def extend(self, new_spec: SweepSpec) -> None:
        """Adopt a spec that only extends the current one; ValueError with the diff otherwise.

        New cells get new studies; new grid seeds join every existing lr trial (so each group
        stays complete over the seeds; values already told to Optuna are not re-told); new
        second-stage seeds join every existing final group; a raised `trials_per_cell`
        continues the studies (and a cell whose best lr changes gets a new final group).
        """
        changes = spec_changes_that_alter_existing(self._spec, new_spec)
        if changes:
            raise ValueError(
                "the new sweep spec changes trials already run; use a new sweep name.\n"
                + spec_diff_text(self._spec, new_spec)
            )
        old = self._spec
        new_seeds = [s for s in new_spec.grid.search_seeds() if s not in old.grid.search_seeds()]
        old_final = old.second_stage.seeds if old.second_stage else []
        new_final = [
            s
            for s in (new_spec.second_stage.seeds if new_spec.second_stage else [])
            if s not in old_final
        ]
        for state in self._states.values():
            state.idle = False
            for group in state.groups.values():
                added = new_seeds if group.stage == Stage.SEARCH else new_final
                group.seeds.extend(added)
                if added and group.key not in state.open:
                    state.open.append(group.key)
        self._adopt(new_spec)

    def study(self, cell_id: str) -> optuna.Study:
        """The Optuna study of one cell (KeyError for an unknown cell id)."""
        return self._states[cell_id].study

    def seed_decisions(self) -> dict[tuple[str, str], SeedDecision]:
        """The adaptive-seeds rule's latest decision per primary pair (arm cell, baseline
        cell) it has judged (`analysis.seed_rule`)."""
        return dict(self._decisions)

    # ---- internals -----------------------------------------------------------------------

    def _own_cells(self, spec: SweepSpec) -> list[Cell]:
        """The cells of `spec` this searcher serves: its shard's, by the stored plan."""
        wanted = shard_cells(self._spec_file, self._shard) if self._spec_file else None
        if wanted is None:
            return spec.cells()
        served = set(wanted)
        return [cell for cell in spec.cells() if cell.cell_id in served]

    def _adopt(self, spec: SweepSpec) -> None:
        """Follow `spec`: index its cells and create a study for every cell that has none."""
        self._spec = spec
        self._cells = {cell.cell_id: cell for cell in self._own_cells(spec)}
        self._order = list(self._cells)
        self._pairs = self._primary_pairs(spec)
        for cell_id in self._order:
            if cell_id not in self._states:
                self._states[cell_id] = _CellState(study=self._new_study(cell_id))

    def _new_study(self, cell_id: str) -> optuna.Study:
        search = self._spec.search
        seed = (search.sampler_seed + cell_seed_offset(cell_id)) % 2**32
        sampler: optuna.samplers.BaseSampler
        if search.sampler == "grid":
            space = {name: list(param.grid or ()) for name, param in search.params.items()}
            sampler = AskTellGridSampler(space, seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed)
        return optuna.create_study(study_name=cell_id, direction=search.direction, sampler=sampler)

    def _next_for_cell(self, cell_id: str) -> tuple[str, _Group, int, TrainConfig] | None:
        """The next (cell, group, seed, config) to run in this cell, opening a group if needed."""
        state = self._states[cell_id]
        cell = self._cells[cell_id]
        while True:
            while state.open:
                group = state.groups[state.open[0]]
                seed = group.next_seed()
                if seed is None:
                    state.open.pop(0)
                    continue
                config = cell.train_config(seed=seed, lr=group.lr, weight_decay=group.weight_decay)
                existing = self._hashes.get(config.config_hash())
                if existing is None:
                    return cell_id, group, seed, config
                self._share(existing, cell_id, group, seed)
            if not self._open_group(cell_id, state):
                return None

    def _open_group(self, cell_id: str, state: _CellState) -> bool:
        """Ask Optuna for the next lr, or queue the second stage; False if neither is due."""
        search = self._spec.search
        if state.n_search < search.n_trials:
            trial = state.study.ask()
            values = {}
            for name, param in search.params.items():
                if param.grid is not None:
                    values[name] = trial.suggest_categorical(name, param.grid)
                else:
                    assert param.low is not None and param.high is not None
                    values[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
            group = _Group(
                cell_id=cell_id,
                stage=Stage.SEARCH,
                lr_trial=trial.number,
                lr=float(values["lr"]),
                weight_decay=values.get("weight_decay"),
                seeds=self._spec.grid.search_seeds(),
            )
            state.n_search += 1
        else:
            if self._add_seeds(cell_id):
                return True
            second = self._spec.second_stage
            if second is None or not self._search_finished(state):
                return False
            best = self._best(cell_id)
            if best is None or (Stage.FINAL, best.lr_trial) in state.groups:
                return False
            group = _Group(
                cell_id=cell_id,
                stage=Stage.FINAL,
                lr_trial=best.lr_trial,
                lr=best.lr,
                weight_decay=best.weight_decay,
                seeds=list(second.seeds),
            )
        state.groups[group.key] = group
        state.open.append(group.key)
        return True

    def _hand_out(
        self, trial_id: str, cell_id: str, group: _Group, seed: int, config: TrainConfig
    ) -> dict:
        cell = self._cells[cell_id]
        config_hash = config.config_hash()
        group.members[seed] = trial_id
        self._trials[trial_id] = cell_id
        self._sharers[trial_id] = [(cell_id, group.key, seed)]
        self._hashes[config_hash] = trial_id
        self._states[cell_id].running.add(trial_id)
        meta = TrialMeta(
            sweep=self._spec.name,
            cell=cell_id,
            workload=cell.workload,
            arm=cell.arm,
            method=cell.method,
            sparsity=cell.sparsity,
            budget=cell.budget,
            seed=seed,
            lr=config.optim.lr,
            weight_decay=config.optim.weight_decay,
            stage=group.stage,
            lr_trial=group.lr_trial,
            config_hash=config_hash,
        )
        return trial_config(config.model_dump(mode="json"), meta)

    def _share(self, trial_id: str, cell_id: str, group: _Group, seed: int) -> None:
        """Let a group member reuse an identical config's trial instead of running it again."""
        group.members[seed] = trial_id
        self._sharers[trial_id].append((cell_id, group.key, seed))
        self._maybe_tell(cell_id, group)

    def _group_finished(self, group: _Group) -> bool:
        return len(group.members) == len(group.seeds) and all(
            tid in self._outcomes for tid in group.members.values()
        )

    def _lr_trial(self, group: _Group) -> LrTrial:
        """A group as the lr rule sees it: its seeds handed out, each as it ended (or running)."""
        running = SeedOutcome(Status.RUNNING.value, None)
        seeds = [self._outcomes.get(tid, running) for tid in group.members.values()]
        return LrTrial(group.lr_trial, group.lr, [(seed.status, seed.value) for seed in seeds])

    def _group_value(self, group: _Group) -> float | None:
        """The lr trial's score once all its seeds ended (`contract.selection.trial_score`)."""
        return trial_score(self._lr_trial(group), self._metric, len(group.seeds))

    def ranking(self, cell_id: str) -> LrRanking:
        """The cell's lr trials (search stage) ranked by the one lr rule
        (`contract.selection.rank_lr_trials`): each is ranked once all its seeds have ended;
        ties go to the lr nearer the log-middle of the lrs the cell has tried."""
        groups = [g for g in self._states[cell_id].groups.values() if g.stage == Stage.SEARCH]
        return rank_lr_trials(
            [self._lr_trial(group) for group in groups],
            self._metric,
            len(self._spec.grid.search_seeds()),
            [group.lr for group in groups],
        )

    def _maybe_tell(self, cell_id: str, group: _Group) -> None:
        if group.stage != Stage.SEARCH or group.told or not self._group_finished(group):
            return
        value = self._group_value(group)
        study = self._states[cell_id].study
        if value is None:
            study.tell(group.lr_trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(group.lr_trial, value)
        group.told = True
        journal = self._journal_path()
        if journal is not None:
            mirror_trial(journal, study, group.lr_trial)

    def _journal_path(self) -> str | None:
        """The Optuna journal beside the sweep's Tune state (local storage only)."""
        if not self._spec_file or is_remote(self._spec_file):
            return None
        return str(Path(self._spec_file).parent / JOURNAL_FILE)

    def _search_finished(self, state: _CellState) -> bool:
        return state.n_search >= self._spec.search.n_trials and all(
            self._group_finished(group)
            for group in state.groups.values()
            if group.stage == Stage.SEARCH
        )

    # ---- adaptive seeds (`analysis.seed_rule`) ---------------------------------------------

    def _primary_pairs(self, spec: SweepSpec) -> dict[str, list[tuple[str, str]]]:
        """Cell -> the primary pairs (arm cell, baseline cell) it is in, both served here;
        empty unless `grid.seeds` is adaptive."""
        pairs: dict[str, list[tuple[str, str]]] = {}
        if spec.grid.adaptive is None:
            return pairs
        for arm, baseline in spec.primary_cell_pairs():
            if arm.cell_id in self._cells and baseline.cell_id in self._cells:
                pair = (arm.cell_id, baseline.cell_id)
                for cell_id in pair:
                    pairs.setdefault(cell_id, []).append(pair)
        return pairs

    def _add_seeds(self, cell_id: str) -> bool:
        """Judge the primary pairs of this cell whose seeds have all ended at their chosen
        lrs; where the rule asks for more, extend both cells' extra groups. True when this
        cell got seeds to hand out."""
        adaptive = self._spec.grid.adaptive
        if adaptive is None:
            return False
        rule = SeedRule(**adaptive.model_dump())
        opened = False
        for pair in self._pairs.get(cell_id, ()):
            decision = self._judge(pair, rule)
            if decision is None:
                continue
            if self._decisions.get(pair) != decision:
                self._decisions[pair] = decision
                if self._spec_file:
                    write_decisions(decisions_path(self._spec_file), {pair: decision})
            if decision.add:
                for member in pair:
                    grown = self._grow_extra(member, rule.initial, decision.seeds + decision.add)
                    opened = opened or (grown and member == cell_id)
        return opened

    def _judge(self, pair: tuple[str, str], rule: SeedRule) -> SeedDecision | None:
        """The rule's decision for a pair, None while a seed of either cell at its chosen lr
        (or an lr trial of its search) has not ended."""
        planned = [self._chosen_seeds(cell_id) for cell_id in pair]
        if planned[0] is None or planned[1] is None:
            return None
        for seeds in planned:
            if any(tid is None or tid not in self._outcomes for tid in seeds.values()):
                return None
        arm, baseline = planned
        common = sorted(set(arm) & set(baseline))
        differences = []
        for seed in common:
            left, right = self._outcomes[arm[seed]], self._outcomes[baseline[seed]]  # type: ignore[index]
            finished = Status.FINISHED.value
            if left.status == right.status == finished and None not in (
                left.accuracy,
                right.accuracy,
            ):
                differences.append(left.accuracy - right.accuracy)  # type: ignore[operator]
        return seed_decision(differences, len(common), rule, CONFIDENCE)

    def _chosen_seeds(self, cell_id: str) -> dict[int, str | None] | None:
        """Seed -> trial id (None: not handed out yet) of every seed the cell has at the lr the
        rule picks: the search seeds and the extra ones; None until its search has ended."""
        state = self._states[cell_id]
        if not self._search_finished(state):
            return None
        best = self._best(cell_id)
        if best is None:
            return None
        seeds = {seed: best.members.get(seed) for seed in best.seeds}
        extra = state.groups.get((Stage.EXTRA, best.lr_trial))
        if extra is not None:
            seeds.update({seed: extra.members.get(seed) for seed in extra.seeds})
        return seeds

    def _grow_extra(self, cell_id: str, first: int, end: int) -> bool:
        """Give the cell's chosen lr the seeds first..end-1 it lacks (an extra group, stage
        `extra`); True if any was added."""
        state = self._states[cell_id]
        best = self._best(cell_id)
        assert best is not None, "a judged pair has a chosen lr in both cells"
        key = (Stage.EXTRA, best.lr_trial)
        group = state.groups.get(key)
        if group is None:
            group = _Group(cell_id, Stage.EXTRA, best.lr_trial, best.lr, best.weight_decay, [])
            state.groups[key] = group
        have = set(group.seeds) | set(best.seeds)
        added = [seed for seed in range(first, end) if seed not in have]
        group.seeds.extend(added)
        if added:
            state.idle = False
            if key not in state.open:
                state.open.append(key)
        return bool(added)

    def _best(self, cell_id: str) -> _Group | None:
        """The search group the lr rule ranks first (None while none is ranked)."""
        best = self.ranking(cell_id).best
        return None if best is None else self._states[cell_id].groups[(Stage.SEARCH, best)]  # type: ignore[index]


class SweepSearchGenerator(SearchGenerator):
    """Tune's `SearchGenerator` for a `SweepSearcher`: asks the searcher again after a
    restore, journals each hand-out, and keeps each trial's record in Tune small.

    Tune restores a generator's saved "finished" flag, so a sweep that had finished would come
    back finished and never ask for the trials an extended spec adds. The searcher knows when
    nothing is left (it answers `Searcher.FINISHED` again), so the flag is not restored.
    """

    _handouts: str | None = None  # a generator pickled before the journal existed keeps none

    def __init__(self, searcher: Searcher, handouts: str | None = None) -> None:
        super().__init__(searcher)
        self._handouts = handouts
        self._first_ids = {}

    def create_trial_if_possible(self, experiment_spec: dict) -> Trial | None:
        """The next trial, under the id its config was first handed out under if the driver
        died before Tune saved it (see `sweeps.run.handouts`), with a short tag."""
        trial_id = Trial.generate_id()
        config = self.searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            self._finished = True
            return None
        if config is None:
            return None
        meta = TrialMeta.of(config)
        first_id = self._first_ids.pop(meta.config_hash, None)
        if first_id is not None:
            self._rename(trial_id, first_id, meta.config_hash)
            trial_id = first_id
        elif self._handouts is not None:
            record_handout(self._handouts, trial_id, meta.config_hash)
        spec = copy.deepcopy(experiment_spec)
        spec["config"] = merge_dicts(spec["config"], copy.deepcopy(config))
        self._counter += 1
        return _create_trial_from_spec(
            spec,
            self._parser,
            evaluated_params={"cell": meta.cell, "seed": meta.seed, "lr": meta.lr},
            experiment_tag=f"{self._counter}_{meta.cell},seed={meta.seed},lr={meta.lr:.4g}",
            trial_id=trial_id,
        )

    def set_state(self, state: dict) -> None:
        """Restore the generator's counters, leaving it unfinished (see the class docstring)."""
        super().set_state({**state, "finished": False})

    def restore_from_dir(self, dirpath: str) -> None:
        """Restore, complete the trials the experiment state records as ended, and read which
        configs were handed out after the snapshot (they get their first trial ids back).

        Tune writes its experiment state before the searcher's: a driver killed between the
        two leaves trials TERMINATED in the one and live in the other, and a restored limiter
        would wait for them forever (no trial starts again). Tune never re-runs a TERMINATED
        trial, so they are completed here with their last result, as Tune would have done.
        """
        super().restore_from_dir(dirpath)
        live = self.running_trial_ids()
        for trial_id, result in ended_trials(Path(dirpath), live).items():
            logger.info("trial %s ended after the searcher's last save: completed now", trial_id)
            self.on_trial_complete(trial_id, result=result)
        searcher = self._sweep_searcher()
        self._first_ids = {}
        if self._handouts is not None and searcher is not None:
            self._first_ids = {
                config_hash: trial_id
                for config_hash, trial_id in read_handouts(self._handouts).items()
                if not searcher.handed_out(config_hash)
            }
            if self._first_ids:
                logger.info(
                    "%d configs were handed out after the last snapshot: they keep their trial ids",
                    len(self._first_ids),
                )

    def running_trial_ids(self) -> set[str]:
        """Trials the concurrency limiter or the sweep searcher still count as running."""
        limiter = self.searcher
        live = set(limiter.live_trials) if isinstance(limiter, ConcurrencyLimiter) else set()
        searcher = self._sweep_searcher()
        if searcher is not None:
            live |= searcher.running_trial_ids()
        return live

    def _sweep_searcher(self) -> SweepSearcher | None:
        limiter = self.searcher
        searcher = limiter.searcher if isinstance(limiter, ConcurrencyLimiter) else limiter
        return searcher if isinstance(searcher, SweepSearcher) else None

    def _rename(self, trial_id: str, first_id: str, config_hash: str) -> None:
        """Move the hand-out just made as `trial_id` to `first_id` in the limiter and searcher."""
        limiter = self.searcher
        if isinstance(limiter, ConcurrencyLimiter):
            limiter.live_trials.discard(trial_id)
            limiter.live_trials.add(first_id)
        searcher = self._sweep_searcher()
        if searcher is not None:
            searcher.rename_trial(trial_id, first_id, config_hash)


def search_algorithm(
    searcher: SweepSearcher, max_concurrent_trials: int, handouts: str | None = None
) -> SweepSearchGenerator:
    """The search algorithm for `TuneConfig(search_alg=...)`, limited to N trials at a time,
    journaling hand-outs to `handouts` (`sweeps.run.handouts.handouts_path`) if given.

    The same wrapping Tune applies to a `Searcher` given `max_concurrent_trials` (so leave that
    `TuneConfig` field unset), with `SweepSearchGenerator` as the outer layer.
    """
    limiter = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent_trials)
    return SweepSearchGenerator(limiter, handouts)


def _v1_outcome(score: float | None) -> SeedOutcome:
    """A version-1 outcome (the seed's score) as a `SeedOutcome` the lr rule scores the same."""
    if score is None:
        return SeedOutcome(Status.FAILED.value, None)
    if math.isinf(score):
        return SeedOutcome(Status.DIVERGED.value, None)
    return SeedOutcome(Status.FINISHED.value, score)
