"""Each cell's Optuna study mirrored to an Optuna journal file beside the sweep's Tune state.

The searcher's studies live in memory and are pickled with Tune's experiment state (that is
what a restore continues from). The mirror makes them readable by Optuna's own tools while the
sweep runs and after it: `optuna.load_study(study_name=CELL_ID, storage=JournalStorage(
JournalFileBackend(PATH)))` or `optuna-dashboard PATH`. Only told trials are mirrored, each
once (tagged with its lr trial number), so a restored searcher re-telling nothing adds nothing.
A mirror that cannot be written is logged and skipped: the sweep never depends on it.

The journal's storage is opened once per file and process (`_storages`): a `JournalStorage`
replays the whole file when it opens and only the lines added since on later calls, so one
kept open makes each mirrored trial cost the same however many came before.
"""

from __future__ import annotations

import logging
import os

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

logger = logging.getLogger(__name__)

JOURNAL_FILE = "optuna_studies.log"
LR_TRIAL_ATTR = "lr_trial"
_storages: dict[tuple[str, int], JournalStorage] = {}


def _storage(path: str) -> JournalStorage:
    """The journal storage of the file at `path`, opened on first use in this process (a file
    replaced since, e.g. a sweep folder deleted and started again, is opened afresh)."""
    key = (path, os.stat(path).st_ino) if os.path.exists(path) else None
    storage = _storages.get(key) if key is not None else None
    if storage is None:
        storage = JournalStorage(JournalFileBackend(path))  # creates the file if missing
        _storages[(path, os.stat(path).st_ino)] = storage
    return storage


def mirror_trial(path: str, study: optuna.Study, number: int) -> None:
    """Copy trial `number` of `study` (told) into the study of the same name in the journal."""
    try:
        storage = _storage(path)
        mirror = optuna.create_study(
            storage=storage,
            study_name=study.study_name,
            direction=study.direction,
            load_if_exists=True,
        )
        if any(t.user_attrs.get(LR_TRIAL_ATTR) == number for t in mirror.trials):
            return
        trial = study.trials[number]
        mirror.add_trial(
            optuna.trial.create_trial(
                state=trial.state,
                value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={**trial.user_attrs, LR_TRIAL_ATTR: number},
            )
        )
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("could not mirror study %s to %s: %s", study.study_name, path, error)
