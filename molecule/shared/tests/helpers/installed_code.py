"""The roles' shell and Python code is static (roles/*/files): on a server it must be the
repository's files byte for byte, and only the rendered values files (commands/lib/*.conf)
differ from project to project. The code itself is shellchecked in the lint step."""

import hashlib
import os
import shlex
from pathlib import Path

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
PROJECT = {"lib/common.sh": "roles/project/files/common.sh"}
DB_COMMANDS = ("backup_db", "restore_db", "verify_db", "list_db_backups", "push_db_backups", "fetch_db_backup")
DB_BACKUP = {
    **PROJECT,
    **{f"lib/{name}": f"roles/db_backup/files/{name}" for name in ("db.sh", "engine_postgresql.sh", "engine_mysql.sh")},
    "lib/offsite.sh": "roles/db_backup/files/offsite.sh",
    "lib/backup_manifest.py": "roles/db_backup/files/backup_manifest.py",
    **{f"{name}.sh": "roles/db_backup/files/db_command.sh" for name in (*DB_COMMANDS, "check_offsite")},
}
SCHEDULE = {**PROJECT, "lib/jobs.sh": "roles/schedule/files/jobs.sh"}


def not_as_shipped(host, commands_dir, files):
    """The installed files (relative to COMMANDS_DIR) whose content is not the repository's."""
    paths = [f"{commands_dir}/{installed}" for installed in files]
    result = host.run("sha256sum -- " + " ".join(shlex.quote(p) for p in paths))
    installed = {line.split(None, 1)[1]: line.split(None, 1)[0] for line in result.stdout.splitlines()}
    return [
        name
        for name, shipped in files.items()
        if installed.get(f"{commands_dir}/{name}") != hashlib.sha256((ROOT / shipped).read_bytes()).hexdigest()
    ]


def shellcheck_values(host, commands_dir, names):
    """shellcheck on rendered values files in COMMANDS_DIR/lib (variables they define are for
    the code that sources them: SC2034 is expected)."""
    return host.run(
        f"cd {shlex.quote(commands_dir)}/lib && LC_ALL=C.UTF-8 shellcheck --shell=bash --exclude=SC2034 "
        + " ".join(shlex.quote(n) for n in names)
    )
