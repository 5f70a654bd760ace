"""The roles' shell and Python code is static (roles/*/files): on a server it must be the
repository's files byte for byte, root's, in root's directory for the project
(/usr/local/lib/djangoops/shop: entry points in bin/, what they source in lib/), and only
the rendered values files (/etc/djangoops/shop/*.conf, also root's) differ from project to
project. commands/ holds links to the entry points. The code itself is shellchecked in the
lint step."""

import hashlib
import os
import shlex
from pathlib import Path

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
ENGINE = "/usr/local/lib/djangoops/shop"
CONFIG = "/etc/djangoops/shop"
PROJECT = {"lib/common.sh": "roles/project/files/common.sh"}
DB_COMMANDS = (
    "backup_db",
    "restore_db",
    "verify_db",
    "list_db_backups",
    "push_db_backups",
    "fetch_db_backup",
    "check_offsite",
)
DB_BACKUP = {
    **PROJECT,
    **{f"lib/{name}": f"roles/db_backup/files/{name}" for name in ("db.sh", "engine_postgresql.sh", "engine_mysql.sh")},
    "lib/offsite.sh": "roles/db_backup/files/offsite.sh",
    "lib/backup_manifest.py": "roles/db_backup/files/backup_manifest.py",
    **{f"bin/{name}.sh": "roles/db_backup/files/db_command.sh" for name in DB_COMMANDS},
}
SCHEDULE = {**PROJECT, "lib/jobs.sh": "roles/schedule/files/jobs.sh"}


def not_as_shipped(host, files):
    """The installed files (relative to ENGINE) whose content is not the repository's, or
    that are not root's and closed to everyone else's writes."""
    paths = [f"{ENGINE}/{installed}" for installed in files]
    quoted = " ".join(shlex.quote(p) for p in paths)
    result = host.run(f"sha256sum -- {quoted}")
    installed = {line.split(None, 1)[1]: line.split(None, 1)[0] for line in result.stdout.splitlines()}
    owners = host.run(f"stat -c '%U:%G %a %n' -- {quoted}").stdout.splitlines()
    wrong_owner = {line.split(None, 2)[2] for line in owners if not line.startswith(("root:root 644", "root:root 755"))}
    return [
        name
        for name, shipped in files.items()
        if installed.get(f"{ENGINE}/{name}") != hashlib.sha256((ROOT / shipped).read_bytes()).hexdigest()
        or f"{ENGINE}/{name}" in wrong_owner
    ]


def shellcheck_values(host, names):
    """shellcheck on rendered values files in CONFIG (variables they define are for the code
    that sources them: SC2034 is expected)."""
    return host.run(
        f"cd {CONFIG} && LC_ALL=C.UTF-8 shellcheck --shell=bash --exclude=SC2034 "
        + " ".join(shlex.quote(n) for n in names)
    )
