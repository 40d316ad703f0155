"""A private PostgreSQL server on 127.0.0.1 for the tests that need one: its own
data directory and port, stopped and removed afterwards."""

from __future__ import annotations

import glob
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.support import free_port


@contextmanager
def running_postgres() -> Iterator[str]:
    """A fresh cluster, trusting local connections; yields its SQLAlchemy URL."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert binaries, "PostgreSQL is missing: run `make test` (scripts/setup.sh installs it)"
    bin_dir = Path(binaries[-1])
    postgres = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="sandman-pg-"))
    shutil.chown(root, postgres.pw_uid, postgres.pw_gid)
    port = free_port()

    def as_postgres(*argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True,
            timeout=120,
        )  # fmt: skip

    as_postgres(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "sandman")
    as_postgres(
        str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w",
        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start",
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://sandman@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
