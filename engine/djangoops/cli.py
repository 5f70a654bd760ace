"""The entry point of every command: bin/<command>.sh (root's, in
/usr/local/lib/djangoops/PROJECT) runs main() with its own path, linked from the
project's commands/ under the same name.

What root runs, root owns: started as root, a command reads only root's files
(this package and /etc/djangoops/PROJECT/project.json, checked to be root's and
writable by no one else) before it becomes the project user for good; only
then does it read anything that user can write (the other values files are
root's too, but read after the switch: nothing in them can raise privileges).
"""

import functools
import os
import sys

from . import config, pitr, privileges
from .context import Context, run_command
from .errors import Exit, Failure

CONFIG_ROOT = "/etc/djangoops"


def _commands():
    # Imported here, once the process runs as the project user, and only the
    # one command that runs.
    from .commands import (
        backup,
        jobs,
        listing,
        offsite_commands,
        pitr_archive,
        pitr_backup,
        pitr_check,
        restore,
        verify,
    )

    return {
        "backup_db": backup.main,
        "restore_db": restore.main,
        "verify_db": verify.main,
        "list_db_backups": listing.main,
        "push_db_backups": offsite_commands.push,
        "fetch_db_backup": offsite_commands.fetch,
        "check_offsite": offsite_commands.check,
        "pitr_backup_db": pitr_backup.main,
        "pitr_check_db": pitr_check.main,
        "pitr_archive_db": pitr_archive.main,
        None: jobs.main,  # any other name: a scheduled job of jobs.json
    }


def command_name(path):
    name = os.path.basename(path)
    return name[:-3] if name.endswith(".sh") else name


def main(argv, engine_dir):
    """Run the command ARGV[0] names, with ARGV[1:]; return its exit code."""
    script = command_name(argv[0])
    project_name = os.path.basename(os.path.normpath(engine_dir))
    config_dir = os.path.join(CONFIG_ROOT, project_name)
    try:
        # As root, read_values() refuses a file that anyone but root can change.
        project = config.load_project(os.path.join(config_dir, "project.json"))
        child = functools.partial(_run, script, project, config_dir, engine_dir, argv)
        if privileges.is_root() and script == "restore_db" and pitr.requested_time(argv[1:]) is not None:
            # The root side recovers the cluster aside; the child it forks runs the restore below.
            return pitr.restore_to_time(project, config_dir, argv[1:], child)
        if privileges.is_root() and script == "pitr_backup_db":
            # The root side runs pgBackRest; the child logs it, writes its metrics and pings.
            return pitr.pitr_backup(project, config_dir, argv[1:], child)
        if privileges.is_root() and script == "verify_db" and os.path.isfile(os.path.join(config_dir, "pitr.json")):
            # With db_backup_pitr: the root side verifies pgBackRest's repository after the test restore.
            return pitr.pitr_verify(project, config_dir, argv[1:], child)
        if script == "pitr_rebuild_db":
            if not privileges.is_root():
                raise Failure(Exit.CONFIG, "pitr_rebuild_db.sh runs as root only (recover.yml -e pitr=true)")
            return pitr.pitr_rebuild(project, config_dir, argv[1:])
        if privileges.is_root() and script == "pitr_archive_db":
            # The root side closes, copies and pushes MariaDB's binary logs; the child logs and reports.
            return pitr.pitr_archive(project, config_dir, argv[1:], child)
        if privileges.is_root() and script == "pitr_check_db":
            # The root side reads the cluster's archiver and the repository; the child judges and reports.
            return pitr.pitr_check(project, config_dir, argv[1:], child)
        return child()
    except Failure as failure:
        print(f"{script}: {failure.message}", file=sys.stderr)
        return int(failure.code)


def _run(script, project, config_dir, engine_dir, argv):
    """As the project user: the command ARGV[0] names."""
    try:
        privileges.run_as_project_user(project.user, project.group)
    except Failure as failure:
        print(f"{script}: {failure.message}", file=sys.stderr)
        return int(failure.code)
    commands = _commands()
    command = commands.get(script, commands[None])
    context = Context(script, project, config_dir, engine_dir)
    return run_command(context, command, list(argv[1:]))
