"""The sweep's progress display, driven through its Tune hooks with stand-in trials."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from sweep_helpers import ONE_TRIAL_SPEC, trial_meta

from sweeps.run import progress
from sweeps.run.progress import PROGRESS_ENV, RichProgressCallback, duration, progress_mode
from sweeps.spec.load import parse_spec
from sweeps.spec.schema import SweepSpec

CELLS = ("default/rigl/s=0.9/e=1", "default/rigl/s=0.95/e=1")


@pytest.fixture(autouse=True)
def every_step_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune's loop is driven step by step here: no throttling of the snapshots."""
    monkeypatch.setattr(progress, "SNAPSHOT_S", 0.0)


@pytest.fixture
def spec_file(tmp_path: Path) -> tuple[SweepSpec, str]:
    spec = parse_spec(
        {
            "name": "p",
            **ONE_TRIAL_SPEC,
            "grid": {**ONE_TRIAL_SPEC["grid"], "sparsities": [0.9, 0.95], "seeds": [0, 1]},
        }
    )
    path = tmp_path / "sweep_spec.yaml"
    path.write_text(spec.to_yaml())
    return spec, str(path)


def trial(name: str, cell: int, seed: int, status: str = "PENDING", value: float | None = None):
    """A stand-in for a Tune trial of cell `CELLS[cell]`."""
    sparsity = (0.9, 0.95)[cell]
    meta = trial_meta(sweep="p", cell=CELLS[cell], sparsity=sparsity, budget=1, seed=seed)
    result = {} if value is None else {"epoch": 1, "val_acc1": value}
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
    end(callback, trials, trials[0], 50.0, ok=True)
    end(callback, trials, trials[1], 60.0, ok=True)
    trials.append(trial("c", 1, 0, "RUNNING"))
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


def test_a_resumed_sweep_starts_from_what_is_done(spec_file, monkeypatch, capsys) -> None:
    _, path = spec_file
    done = [trial("a", 0, 0, "TERMINATED", 50.0), trial("b", 0, 1, "TERMINATED", 70.0)]
    started(RichProgressCallback(path), done, "lines", monkeypatch)
    assert capsys.readouterr().err == "sweep p: 2/4 trials already ended\n"


def test_live_view_counts_each_cell_and_its_best(spec_file, monkeypatch) -> None:
    _, path = spec_file
    callback = RichProgressCallback(path)
    trials = [trial("a", 0, 0, "TERMINATED", 50.0), trial("b", 0, 1, "RUNNING")]
    started(callback, trials, "live", monkeypatch)
    end(callback, trials, trials[1], 70.0, ok=True)
    screen = Console(file=io.StringIO(), width=160)
    screen.print(callback._render())
    text = screen.file.getvalue()
    callback.on_experiment_end(trials=trials)
    assert "2/4 done" in text and "0 running, 2 pending, 0 failed; elapsed" in text
    row = next(line for line in text.splitlines() if CELLS[0] in line)
    assert row.split()[1:5] == ["2", "0", "0", "0"] and "60 (lr 0.1)" in row
    assert "1 more cells not started" in text


def test_off_prints_nothing_and_state_is_only_the_spec_file(spec_file, monkeypatch, capsys):
    _, path = spec_file
    callback = RichProgressCallback(path)
    started(callback, [trial("a", 0, 0, "TERMINATED", 50.0)], "off", monkeypatch)
    callback.on_experiment_end(trials=[])
    assert capsys.readouterr().err == ""
    assert callback.__getstate__() == {"_spec_file": path}


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
    display kept counters and a `_enabled` flag of its own."""
    _, path = spec_file
    callback = RichProgressCallback.__new__(RichProgressCallback)
    old_state = {"_spec_file": path, "_total": 4, "_enabled": False, "_ended": {"x"}, "_failed": 1}
    callback.__setstate__(old_state)
    started(callback, [trial("a", 0, 0, "TERMINATED", 50.0)], "lines", monkeypatch)
    assert capsys.readouterr().err == "sweep p: 1/4 trials already ended\n"


def test_snapshots_are_throttled_on_a_busy_loop(spec_file, monkeypatch, capsys) -> None:
    """A snapshot reads every trial; with thousands of trials it must not run on every step:
    the lines of trials that end within SNAPSHOT_S of the last snapshot wait for the next one."""
    _, path = spec_file
    callback = RichProgressCallback(path)
    trials: list[Any] = []
    started(callback, trials, "lines", monkeypatch)
    monkeypatch.setattr(progress, "SNAPSHOT_S", 3600.0)
    trials.append(trial("a", 0, 0, "RUNNING"))
    callback.on_trial_start(iteration=1, trials=trials, trial=trials[0])
    end(callback, trials, trials[0], 50.0, ok=True)
    assert capsys.readouterr().err.splitlines() == ["sweep p: 4 trials to run"]
    callback.on_experiment_end(trials=trials)  # the last snapshot is never throttled
    assert capsys.readouterr().err.startswith(f"[1/4] finished {CELLS[0]} seed=0")
