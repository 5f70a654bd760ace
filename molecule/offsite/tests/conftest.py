"""The off-site scenario's helpers: restic run on a server as its project user with the
server's own credentials (what an intruder on that server could do), the backup host,
and playbooks run from the controller."""

import os
import subprocess

import pytest
import testinfra
from db_backup.conftest import (  # noqa: F401 - shared helpers and fixtures
    BACKUPS,
    COMMANDS,
    DB_NAME,
    HOME,
    ROOT,
    files_holding,
    quote,
    run,
    sample_ps_during,
    variables,
)

OFFSITE = f"{HOME}/.djangoops/offsite"
BACKUP_HOST = "offsite-backuphost"
TEST_DIR = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "offsite")


def scenario_file(name):
    with open(os.path.join(TEST_DIR, name), encoding="utf-8") as f:
        return f.read().strip()


@pytest.fixture(scope="module")
def backup_host():
    return testinfra.get_host(f"ansible://{BACKUP_HOST}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture
def restic(host):
    """restic against one of the server's repositories, as the project user, with the
    server's own key, host key and password file (or another password)."""
    address = scenario_file("address")

    def _restic(repo, args, password=None, timeout=60):
        lines = ["cd /tmp", f"export RESTIC_CACHE_DIR={HOME}/.cache/restic"]
        if password:
            lines.append(f"export RESTIC_PASSWORD={quote(password)}")
        else:
            lines.append(f"export RESTIC_PASSWORD_FILE={OFFSITE}/password")
        options = ""
        if repo == "backuphost":
            lines.append("export RESTIC_REPOSITORY=rclone:backuphost:")
            ssh = (
                f"ssh -i {OFFSITE}/backuphost.key -o IdentitiesOnly=yes"
                f" -o UserKnownHostsFile={OFFSITE}/backuphost.known_hosts -o BatchMode=yes offsite@{address}"
            )
            options = "-o " + quote(f"rclone.program={ssh}")
        else:
            lines.append(f"export RESTIC_REPOSITORY=s3:http://{address}:5000/{host.backend.get_hostname()}")
            lines.append(f'while IFS== read -r k v; do export "$k=$v"; done <{OFFSITE}/bucket.s3')
        lines.append(f"timeout {timeout} restic {options} {args}")
        return host.run("runuser -u shop -- bash -c %s", "\n".join(lines))

    return _restic


def latest(host):
    return host.run(f"readlink {BACKUPS}/latest").stdout.strip()


def offsite_column(host, name):
    """The OFF-SITE column of list_db_backups.sh for one set ('' when not listed)."""
    listing = host.run(f"{COMMANDS}/list_db_backups.sh --no-checksums </dev/null").stdout
    for line in listing.splitlines():
        fields = line.split()
        if name in fields:
            return fields[-1]
    return ""


def playbook(*args, inventory=None):
    """ansible-playbook from the controller, on the scenario's inventory (or another)."""
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory or os.environ["MOLECULE_INVENTORY_FILE"]), *args],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        check=False,
    )
