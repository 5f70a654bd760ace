"""The off-site scenario's fixtures: restic run on a server as its project user with the
server's own credentials (what an intruder on that server could do), and the backup host
(`run` and `variables` are molecule/conftest.py's)."""

import os

import pytest
import testinfra
from offsite_helpers import BACKUP_HOST, restic_as_server


@pytest.fixture(scope="module")
def backup_host():
    return testinfra.get_host(f"ansible://{BACKUP_HOST}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture
def restic(host):
    """restic against one of the server's repositories, as the project user, with the
    server's own key, host key and password file (or another password)."""

    def _restic(repo, args, password=None, timeout=60):
        return restic_as_server(host, repo, args, password=password, timeout=timeout)

    return _restic
