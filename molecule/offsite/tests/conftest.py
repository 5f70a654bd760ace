"""The off-site scenario's fixtures: restic run on a server as its project user with the
server's own credentials (what an intruder on that server could do), and the backup host
(`run` and `variables` are molecule/conftest.py's)."""

import os

import pytest
import testinfra
from offsite_helpers import BACKUP_HOST, OFFSITE, scenario_file
from shop_project import HOME, quote


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
