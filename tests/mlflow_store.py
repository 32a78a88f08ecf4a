"""Empty MLflow SQLite stores for tests, copied from one migrated store per test process.

Creating a store runs MLflow's schema migrations (about a second per store on 2 CPUs); copying
an already migrated empty store costs milliseconds. The copy is the same database a first
`MlflowClient` call would create: the tables at the installed MLflow's schema head and the
`Default` experiment. A test that checks what happens on a store that does not exist yet (the
migration itself, the messages it prints, a store that must not be created) does not use it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _migrated_template() -> Path:
    """The migrated empty store of this process (made on first use, removed at exit)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    directory = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, directory, True)
    database = directory / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{database}", (directory / "mlruns").as_uri())
    store.engine.dispose()  # every write committed and the file closed before it is copied
    return database


def empty_store(database: Path) -> str:
    """Copy the migrated empty store to `database` (its folder created); its SQLite URI."""
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_template(), database)
    return f"sqlite:///{database}"
