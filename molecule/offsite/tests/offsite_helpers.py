"""The off-site scenario's helpers: the files prepare wrote on the controller, the server's
latest set and what list_db_backups.sh says of its off-site copies, and playbooks run from
the controller."""

import os
import subprocess

from db_backup.backup_helpers import BACKUPS, ROOT
from shop_project import COMMANDS, HOME

OFFSITE = f"{HOME}/.djangoops/offsite"
BACKUP_HOST = "offsite-backuphost"
TEST_DIR = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "offsite")


def scenario_file(name):
    with open(os.path.join(TEST_DIR, name), encoding="utf-8") as f:
        return f.read().strip()


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
