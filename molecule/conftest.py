"""The fixtures several test folders use (db_backup's, schedule's, offsite's), for every
scenario: the verifier names pytest.ini here, which makes this pytest's rootdir. A folder's
own conftest.py holds the fixtures only its tests use. Constants and helper functions are
in modules the tests import by name (shop_project, backup_helpers, ...), never in a
conftest.py: pytest imports each of them as the one module name `conftest`."""

import pytest
from shop_project import ENGINE_BIN, quote


@pytest.fixture(scope="module")
def variables(host):
    return host.ansible.get_variables()


@pytest.fixture
def run(host):
    """Runs a command as root, by its root-owned entry point (as the playbooks do: root
    never runs what commands/ holds, which the project user can replace); the command
    switches to the project user before it reads anything that user can write."""

    def _run(script, *args, stdin=None):
        command = " ".join([f"{ENGINE_BIN}/{script}", *(quote(a) for a in args)])
        if stdin is None:
            command += " </dev/null"
        else:
            command = f"printf '%s\\n' {quote(stdin)} | {command}"
        return host.run(command)

    return _run
