"""Fixtures of the backup scenarios' tests: the server's database engine and the state of
the backups directory (`run` and `variables` are molecule/conftest.py's)."""

import pytest
from backup_helpers import BACKUPS, MariaDB, PostgreSQL


@pytest.fixture(scope="module")
def engine(host, variables):
    return {"postgresql": PostgreSQL, "mysql": MariaDB}[variables["db_backup_engine"]](host)


@pytest.fixture
def backups_state(host):
    """What must not change when a run fails: where latest points, that file's sha256,
    the published files, and that no partial file is left behind."""

    def _state():
        latest = host.run(f"readlink {BACKUPS}/latest").stdout.strip()
        sha = host.run(f"sha256sum {BACKUPS}/{latest}").stdout.split()[0] if latest else ""
        files = sorted(host.run(f"ls -A {BACKUPS}").stdout.split())
        return {"latest": latest, "sha256": sha, "files": [f for f in files if f != ".lock"]}

    return _state
