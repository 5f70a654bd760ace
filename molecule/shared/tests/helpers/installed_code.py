"""The commands' code is the collection's engine (engine/djangoops, and engine/command as every
entry point): on a server it must be the repository's files byte for byte, root's, in root's
directory for the project (/usr/local/lib/djangoops/shop: entry points in bin/, the package in
lib/djangoops), and only the rendered values files (/etc/djangoops/shop/*.json, also root's)
differ from project to project. commands/ holds links to the entry points."""

import hashlib
import json
import os
import shlex
from pathlib import Path

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
ENGINE = "/usr/local/lib/djangoops/shop"
CONFIG = "/etc/djangoops/shop"
PACKAGE = {
    f"lib/{path.relative_to(ROOT / 'engine')}": str(path.relative_to(ROOT))
    for path in sorted((ROOT / "engine/djangoops").rglob("*.py"))
}
DB_COMMANDS = (
    "backup_db",
    "restore_db",
    "verify_db",
    "list_db_backups",
    "push_db_backups",
    "fetch_db_backup",
    "check_offsite",
)
DB_BACKUP = {**PACKAGE, **{f"bin/{name}.sh": "engine/command" for name in DB_COMMANDS}}
SCHEDULE = dict(PACKAGE)


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


def values(host, name):
    """The values file NAME of CONFIG, as the commands read it."""
    return json.loads(host.file(f"{CONFIG}/{name}").content_string)
