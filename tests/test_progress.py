"""The sweep's progress display and trial index, driven through its Tune hooks with stand-in
trials that change status the way Tune changes them."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from sweep_helpers import ONE_TRIAL_SPEC, trial_meta

from contract.outcome import Status
from sweeps.run import display
from sweeps.run.display import PROGRESS_ENV, duration, progress_mode
from sweeps.run.ledger import TrialEntry
from sweeps.run.progress import RichProgressCallback
from sweeps.run.status import cell_statuses, sweep_status
from sweeps.run.trial_index import INDEX_FILE, read_index
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec

CELLS = ("default/rigl/s=0.9/e=1", "default/rigl/s=0.95/e=1")


@pytest.fixture(autouse=True)
def every_step_redraws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune's loop is driven step by step here: no throttling of the redraws."""
    monkeypatch.setattr(display, "REFRESH_S", 0.0)


def write_spec(tmp_path: Path, budget: int = 1) -> tuple[SweepSpec, str]:
    grid = {**ONE_TRIAL_SPEC["grid"], "sparsities": [0.9, 0.95], "seeds": [0, 1]}
    spec = parse_spec(
        {
            "name": "p",
            "storage_path": str(tmp_path),
            **ONE_TRIAL_SPEC,
            "grid": {**grid, "budgets": [budget]},
        }
    )
    path = tmp_path / "p" / "sweep_spec.yaml"
    path.parent.mkdir()
    path.write_text(spec.to_yaml())
    return spec, str(path)


@pytest.fixture
def spec_file(tmp_path: Path) -> tuple[SweepSpec, str]:
    return write_spec(tmp_path)


def trial(
    name: str,
    cell: int,
    seed: int,
    status: str = "PENDING",
    value: float | None = None,
    budget: int = 1,
    lr_trial: int = 0,
):
    """A stand-in for a Tune trial of cell `CELLS[cell]` (at `budget` epochs)."""
    sparsity = (0.9, 0.95)[cell]
    meta = trial_meta(
        sweep="p",
        cell=CELLS[cell].replace("e=1", f"e={budget}"),
        sparsity=sparsity,
        budget=budget,
        seed=seed,
        lr_trial=lr_trial,
        config_hash=f"{name}-hash",
    )
    result = {} if value is None else {"epoch": budget, "val_acc1": value}
    return SimpleNamespace(
        trial_id=name,
        status=status,
        config={"meta": meta.to_dict(), "train": {}},
        last_result=result,
        run_metadata=SimpleNamespace(error_filename=None),
        storage=None,
    )


def started(callback: RichProgressCallback, trials: list[Any], mode: str, monkeypatch) -> None:
    monkeypatch.setenv(PROGRESS_ENV, mode)
    callback.setup()
    callback.on_step_begin(iteration=0, trials=trials)


def end(callback: RichProgressCallback, trials: list[Any], one: Any, value: float, ok: bool):
    """Tune's order: the hook while the trial still says RUNNING, then its final status."""
    one.last_result = {"epoch": 1, "val_acc1": value}
    if ok:
        callback.on_trial_complete(iteration=1, trials=trials, trial=one)
        one.status = "TERMINATED"
    else:
        one.status = "ERROR"
        callback.on_trial_error(iteration=1, trials=trials, trial=one)
    callback.on_step_begin(iteration=2, trials=trials)


def test_plain_lines_when_not_a_terminal(spec_file, monkeypatch, capsys) -> None:
    _, path = spec_file
    callback = RichProgressCallback(path)
    trials: list[Any] = []
    started(callback, trials, "lines", monkeypatch)
    trials += [trial("a", 0, 0, "RUNNING"), trial("b", 0, 1, "RUNNING")]
    callback.on_trial_start(iteration=1, trials=trials, trial=trials[0])
    callback.on_trial_start(iteration=1, trials=trials, trial=trials[1])
    end(callback, trials, trials[0], 50.0, ok=True)
    end(callback, trials, trials[1], 60.0, ok=True)
    trials.append(trial("c", 1, 0, "RUNNING"))
    callback.on_trial_start(iteration=1, trials=trials, trial=trials[2])
    end(callback, trials, trials[2], 0.0, ok=False)
    callback.on_experiment_end(trials=trials)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "sweep p: 4 trials to run"
    assert lines[1].startswith(f"[1/4] finished {CELLS[0]} seed=0 lr=0.1 val_acc1=50 |")
    assert "cell best val_acc1 - |" in lines[1] and "1 running, 2 pending, 0 failed" in lines[1]
    assert "cell best val_acc1 55 (lr 0.1)" in lines[2] and "ETA" in lines[2]
    assert lines[3].startswith(f"[3/4] failed {CELLS[1]} seed=0")
    assert "0 running, 1 pending, 1 failed" in lines[3]
    assert len(lines) == 4


@pytest.mark.parametrize("mode", ["lines", "live"])
def test_a_resumed_sweep_says_what_is_done_and_what_resumes(
    spec_file, monkeypatch, capsys, mode: str
) -> None:
    """2 trials ended; 1 was in flight when the sweep stopped (it reported an epoch, so it has
    a checkpoint); 1 never started."""
    _, path = spec_file
    done = [trial("a", 0, 0, "TERMINATED", 50.0), trial("b", 0, 1, "TERMINATED", 70.0)]
    in_flight = trial("c", 1, 0, "PENDING")
    in_flight.last_result = {"epoch": 1, "val_acc1": 30.0}
    started(RichProgressCallback(path), [*done, in_flight], mode, monkeypatch)
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "sweep p: resuming: 2 ended, 1 from checkpoints (4 trials in all)"


def test_a_sweep_with_every_trial_ended_says_so(spec_file, monkeypatch, capsys) -> None:
    _, path = spec_file
    done = [
        trial(name, cell, seed, "TERMINATED", 50.0)
        for name, cell, seed in (("a", 0, 0), ("b", 0, 1), ("c", 1, 0), ("d", 1, 1))
    ]
    started(RichProgressCallback(path), done, "lines", monkeypatch)
    assert capsys.readouterr().err == "sweep p: 4/4 trials already ended\n"


def test_ctrl_c_is_acknowledged_and_in_flight_trials_stay_pending(
    spec_file, monkeypatch, capsys
) -> None:
    """Ctrl-C while 2 trials run: one line at once naming them; Tune then stops them (an error
    or a partial result), and they count as pending, as `sparsesweep status` says, not as
    failed or stopped; no line per trial for them."""
    import signal

    _, path = spec_file
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        callback = RichProgressCallback(path)
        trials = [trial("a", 0, 0, "RUNNING"), trial("b", 0, 1, "RUNNING")]
        trials.append(trial("c", 1, 0, "RUNNING"))  # Tune stops it without a hook
        started(callback, trials, "lines", monkeypatch)
        for one in trials:
            callback.on_trial_start(iteration=1, trials=trials, trial=one)
        capsys.readouterr()
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert received == [signal.SIGINT], "Tune's own handler still runs"
        assert capsys.readouterr().err == (
            "stopping: 3 trials in flight will resume from their checkpoint (Ctrl-C again "
            "stops without saving the sweep's state)\n"
        )
        trials[0].status = "ERROR"
        callback.on_trial_error(iteration=2, trials=trials, trial=trials[0])
        trials[1].last_result = {"epoch": 0}
        callback.on_trial_complete(iteration=2, trials=trials, trial=trials[1])
        trials[2].status = "TERMINATED"  # Tune's cleanup, which calls no hook
        callback.on_experiment_end(trials=trials)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == ""
    progress = display._sweeps[path]
    assert (progress.running, progress.pending, progress.failed, progress.ended) == (0, 4, 0, 0)
    index = read_index(str(Path(path).parent))
    assert {entry.config_hash: entry.status for entry in index.values()} == {
        "a-hash": Status.PENDING,
        "b-hash": Status.PENDING,
        "c-hash": Status.PENDING,
    }


def test_live_view_counts_each_cell_and_its_best(spec_file, monkeypatch) -> None:
    _, path = spec_file
    callback = RichProgressCallback(path)
    trials = [trial("a", 0, 0, "TERMINATED", 50.0), trial("b", 0, 1, "RUNNING")]
    started(callback, trials, "live", monkeypatch)
    end(callback, trials, trials[1], 70.0, ok=True)
    screen = Console(file=io.StringIO(), width=160)
    screen.print(display._sweeps[path]._render())
    text = screen.file.getvalue()
    callback.on_experiment_end(trials=trials)
    display.finish_progress(path)
    assert "2/4 done" in text and "0 running, 2 pending, 0 failed; elapsed" in text
    row = next(line for line in text.splitlines() if CELLS[0] in line)
    assert row.split()[1:5] == ["2", "0", "0", "0"] and "60 (lr 0.1)" in row
    assert "1 more cells not started" in text


def test_off_prints_nothing_and_state_is_the_spec_file_and_shard(spec_file, monkeypatch, capsys):
    _, path = spec_file
    callback = RichProgressCallback(path, shard=2)
    started(callback, [trial("a", 0, 0, "TERMINATED", 50.0)], "off", monkeypatch)
    callback.on_experiment_end(trials=[])
    assert capsys.readouterr().err == ""
    assert callback.__getstate__() == {"_spec_file": path, "_shard": 2}


def test_mode_follows_the_stream() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_mode(True, io.StringIO()) == "lines"
    assert progress_mode(True, Terminal()) == "live"
    assert progress_mode(False, Terminal()) == "off"
    assert [duration(s) for s in (4.4, 130, 3 * 3600 + 300)] == ["4s", "2m10s", "3h05m"]


def test_restores_from_the_state_an_older_release_pickled(spec_file, monkeypatch, capsys):
    """Tune restores a resumed sweep's callbacks from its first start: one pickled before this
    display kept counters and a `_enabled` flag of its own, and no shard."""
    _, path = spec_file
    callback = RichProgressCallback.__new__(RichProgressCallback)
    old_state = {"_spec_file": path, "_total": 4, "_enabled": False, "_ended": {"x"}, "_failed": 1}
    callback.__setstate__(old_state)
    started(callback, [trial("a", 0, 0, "TERMINATED", 50.0)], "lines", monkeypatch)
    assert (
        capsys.readouterr().err
        == "sweep p: resuming: 1 ended, 0 from checkpoints (4 trials in all)\n"
    )
    assert callback.__getstate__() == {"_spec_file": path, "_shard": 0}


class Tune:
    """Plays Tune's controller: sets statuses and calls the hooks in Tune's order."""

    def __init__(self, callback: RichProgressCallback, trials: list[Any]) -> None:
        self.callback, self.trials = callback, trials

    def step(self) -> None:
        self.callback.on_step_begin(iteration=0, trials=self.trials)

    def start(self, one: Any) -> None:
        one.status = "RUNNING"
        self.callback.on_trial_start(iteration=0, trials=self.trials, trial=one)

    def complete(self, one: Any, result: dict[str, Any]) -> None:
        one.last_result = result
        self.callback.on_trial_complete(iteration=0, trials=self.trials, trial=one)
        one.status = "TERMINATED"

    def recover(self, one: Any) -> None:
        one.status = "PENDING"  # `_try_recover` requeues it, then the hook
        self.callback.on_trial_recover(iteration=0, trials=self.trials, trial=one)

    def error(self, one: Any) -> None:
        one.status = "ERROR"  # `_schedule_trial_stop`, then the hook
        self.callback.on_trial_error(iteration=0, trials=self.trials, trial=one)

    def snapshot(self) -> None:
        self.callback.get_state()


def test_incremental_counts_agree_with_a_full_rescan_after_every_hook(tmp_path, monkeypatch):
    """Every status Tune can move a trial through, and a restore: after each hook, the ledger
    the hooks keep equals `cell_statuses` over Tune's trials, and after each snapshot so does
    the index on storage."""
    spec, path = write_spec(tmp_path, budget=2)
    budget2 = [{"epoch": 2, "val_acc1": v} for v in (40.0, 80.0)]
    trials = [
        trial("a", 0, 0, budget=2),
        trial("b", 0, 1, budget=2),
        trial("c", 1, 0, budget=2),
        trial("d", 1, 1, budget=2),
    ]
    callback = RichProgressCallback(path)
    tune = Tune(callback, [])
    monkeypatch.setenv(PROGRESS_ENV, "off")
    callback.setup()
    tune.step()

    def agree() -> None:
        assert display._sweeps[path].ledger.rows(spec) == cell_statuses(spec, tune.trials)

    def index_agrees() -> None:
        assert sweep_status(spec) == cell_statuses(spec, tune.trials)

    a, b, c, d = trials
    for one in trials:
        tune.trials.append(one)
        agree()
    events = [
        lambda: tune.start(a),
        lambda: tune.complete(a, budget2[0]),
        lambda: tune.start(b),
        lambda: tune.recover(b),
        lambda: tune.start(b),
        lambda: tune.error(b),
        lambda: tune.start(c),
        lambda: tune.complete(c, {"epoch": 1, "val_acc1": float("nan"), "diverged": True}),
        lambda: tune.start(d),
        lambda: tune.complete(d, {"epoch": 1, "val_acc1": 30.0}),
    ]
    for event in events:
        event()
        agree()
        tune.snapshot()
        index_agrees()
    rows = {row.cell_id: row for row in sweep_status(spec)}
    first, second = (rows[cell.cell_id] for cell in spec.cells())
    assert [first.count(s) for s in (Status.FINISHED, Status.FAILED)] == [1, 1]
    assert [second.count(s) for s in (Status.DIVERGED, Status.STOPPED)] == [1, 1]
    assert second.best_value == 15.0  # (0 for the diverged seed + 30) / 2

    # a restore: Tune brings the errored trial back as PENDING (resume_errored) and restarts
    b.status = "PENDING"
    display.finish_progress(path)
    restored = RichProgressCallback(path)
    restored.setup()
    Tune(restored, tune.trials).step()
    agree()
    tune.snapshot()
    restored.get_state()
    index_agrees()


def test_an_index_ahead_of_tunes_snapshot_is_brought_back_to_it(spec_file, monkeypatch):
    """A driver killed after the index was written but before Tune's state reached storage:
    on restore, a trial the index knows but Tune does not counts as pending again."""
    spec, path = spec_file
    monkeypatch.setenv(PROGRESS_ENV, "off")
    first = RichProgressCallback(path)
    first.setup()
    known, lost = trial("a", 0, 0), trial("b", 0, 1)
    tune = Tune(first, [known, lost])
    tune.step()
    for one in (known, lost):
        tune.start(one)
        tune.complete(one, {"epoch": 1, "val_acc1": 50.0})
    tune.snapshot()
    assert sweep_status(spec)[0].count(Status.FINISHED) == 2
    display.finish_progress(path)

    known.status, lost_hash = "RUNNING", lost.config["meta"]["config_hash"]
    again = RichProgressCallback(path)
    again.setup()
    Tune(again, [known]).step()  # Tune's snapshot predates both ends and never saw `b`
    again.get_state()
    (row, _) = sweep_status(spec)
    assert (row.count(Status.RUNNING), row.count(Status.FINISHED), row.count(Status.PENDING)) == (
        1,
        0,
        1,
    )
    index = read_index(str(Path(path).parent))
    assert index is not None and index[lost_hash].status is Status.PENDING
    lines = (Path(path).parent / INDEX_FILE).read_text().splitlines()
    assert len(lines) == 1 + 2 + 2  # header, a and b as of the snapshot, then the corrections
    display.finish_progress(path)


def test_other_shards_are_counted_from_their_index(tmp_path, monkeypatch, capsys) -> None:
    """One display for a sharded sweep: shard 1's callback starts from shard 0's index."""
    from sweeps.run.shards import Shard, ShardPlan, shard_dir, write_plan
    from sweeps.run.trial_index import IndexWriter

    _, path = write_spec(tmp_path)
    sweep_dir = str(Path(path).parent)
    write_plan(sweep_dir, ShardPlan([Shard(0, [CELLS[0]]), Shard(1, [CELLS[1]])]))
    writer = IndexWriter(shard_dir(sweep_dir, 0), None)
    for seed in (0, 1):
        meta = trial_meta(sweep="p", cell=CELLS[0], budget=1, seed=seed, config_hash=f"h{seed}")
        writer.add(TrialEntry.of(meta, Status.FINISHED, {"val_acc1": 50.0}, "val_acc1"))
    writer.flush()
    callback = RichProgressCallback(path, shard=1)
    started(callback, [trial("c", 1, 0, "RUNNING")], "lines", monkeypatch)
    assert (
        capsys.readouterr().err
        == "sweep p: resuming: 2 ended, 0 from checkpoints (4 trials in all)\n"
    )
    assert read_index(shard_dir(sweep_dir, 1)) is None  # nothing of shard 1 written yet
    callback.get_state()
    assert list(read_index(shard_dir(sweep_dir, 1)) or {}) == ["c-hash"]
    display.finish_progress(path)
