"""The entry point of every command: bin/<command>.sh (root's, in
/usr/local/lib/djangoops/PROJECT) runs main() with its own path, linked from the
project's commands/ under the same name.

What root runs, root owns: started as root, a command reads only root's files
(this package and /etc/djangoops/PROJECT/project.json, checked to be root's and
writable by no one else) before it becomes the project user for good; only
then does it read anything that user can write (the other values files are
root's too, but read after the switch: nothing in them can raise privileges).
"""

import os
import sys

from . import config, pitr, privileges
from .context import Context, run_command
from .errors import Failure

CONFIG_ROOT = "/etc/djangoops"


def _commands():
    # Imported here, once the process runs as the project user, and only the
    # one command that runs.
    from .commands import backup, jobs, listing, offsite_commands, restore, verify

    return {
        "backup_db": backup.main,
        "restore_db": restore.main,
        "verify_db": verify.main,
        "list_db_backups": listing.main,
        "push_db_backups": offsite_commands.push,
        "fetch_db_backup": offsite_commands.fetch,
        "check_offsite": offsite_commands.check,
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
        if script == "restore_db" and privileges.is_root() and pitr.requested_time(argv[1:]) is not None:
            # The root side recovers the cluster aside; the child it forks runs the restore below.
            return pitr.supervise(
                project, config_dir, argv[1:], lambda: _run(script, project, config_dir, engine_dir, argv)
            )
        return _run(script, project, config_dir, engine_dir, argv)
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
