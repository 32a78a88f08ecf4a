"""A throw-away PostgreSQL server for tests: `initdb` into a temporary folder, `pg_ctl` on a free
port of 127.0.0.1, one database, trust authentication, stopped (and its files removed) on exit.

PostgreSQL refuses to run as root: under root the cluster is created and run as the `postgres`
user that Debian's package adds. `make postgres` installs the package (`initdb` and `pg_ctl`
are in `/usr/lib/postgresql/<version>/bin`, which is not on PATH).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

DATABASE = "mlflow"
USER = "sparsesweep"


def postgres_bin() -> Path | None:
    """The folder with `initdb` and `pg_ctl` (PATH first, then Debian's versioned folders)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _as_owner(command: list[str]) -> list[str]:
    """Run `command` as the `postgres` user when this process is root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def postgres(port: int) -> Iterator[str]:
    """A running PostgreSQL on 127.0.0.1:`port` with an empty database; yields its
    SQLAlchemy URI (`postgresql+psycopg2://sparsesweep@127.0.0.1:PORT/mlflow`: SQLAlchemy 2.1
    defaults `postgresql://` to psycopg 3, the project installs psycopg2)."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed: run `make postgres` (Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    started = False
    try:
        subprocess.run(
            _as_owner(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
        subprocess.run(
            _as_owner([*pg_ctl, "-o", options, "-l", str(log), "-w", "start"]),
            check=True,
            capture_output=True,
        )
        started = True
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute(f"CREATE DATABASE {DATABASE}")
        connection.close()
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            subprocess.run(
                _as_owner([*pg_ctl, "-m", "immediate", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(folder, ignore_errors=True)
