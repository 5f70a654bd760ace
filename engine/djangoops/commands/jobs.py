"""A scheduled job (clear_sessions.sh and the custom ones): run the job's
command with bash in the project's source directory (or with sh in its Docker
container), each line it prints into logs/<job>.log with a timestamp, between
a start line and "finished in ..."; exit 12 when the command fails, 5 when the
previous run of the same job is still going.

The command's output passes through this process line by line (it is the
job's log, not data); the command runs through the runner, so a TERM to this
process stops it."""

import os

from .. import config
from ..errors import Exit, Failure
from ..lock import Lock
from ..runner import CommandFailed
from . import parse

LINE_WAIT = 3600  # seconds between checks while a job prints nothing

USAGE_TEMPLATE = (
    "Usage: {script}.sh\nRun the scheduled job {script} (its command is in jobs.json); it takes no arguments."
)


def venv_first_on_path(path, venv_dir):
    """PATH with the virtualenv's bin first, and there once: the scheduler's
    PATH (schedule_path) may hold it already."""
    bin_dir = f"{venv_dir}/bin"
    parts = [part for part in path.split(":") if part and part != bin_dir]
    return ":".join([bin_dir, *parts])


def main(context, args):
    parse(args, USAGE_TEMPLATE.format(script=context.script))
    values = config.load_jobs(os.path.join(context.config_dir, "jobs.json"))
    job = values.jobs.get(context.script)
    if job is None:
        raise Failure(Exit.CONFIG, f"{context.script} is not a job of {context.config_dir}/jobs.json (schedule_jobs)")
    context.start_run(job.healthcheck_url)
    Lock(os.path.join(context.project.logs_dir, f".{context.script}.lock"), 0, script=context.script).acquire()
    env = {
        "DJANGO_SETTINGS_MODULE": values.settings_module,
        "PATH": venv_first_on_path(os.environ.get("PATH", "/usr/bin:/bin"), values.venv_dir),
    }
    if job.container:
        context.log.info(f"running in the container {job.container}: {job.command}")
        argv, cwd = ["docker", "exec", job.container, "sh", "-c", job.command], None
    else:
        if not os.path.isdir(values.src_dir):
            raise Failure(Exit.CONFIG, f"the project's source directory {values.src_dir} is missing")
        context.log.info(f"running in {values.src_dir}: {job.command}")
        argv, cwd = ["bash", "-c", job.command], values.src_dir
    # Output and errors into one stream, each line logged as it comes; no stdin.
    merged = ["sh", "-c", 'exec "$@" 2>&1 </dev/null', "job", *argv]
    session = context.runner.start(merged, env=env, cwd=cwd, name="job")
    while True:
        try:
            line = session.readline(timeout=LINE_WAIT)
        except CommandFailed:
            continue  # a quiet stretch: the job runs on
        if line is None:
            break
        context.log.out(line)
    try:
        session.close(timeout=LINE_WAIT)
        code = 0
    except CommandFailed as failed:
        # As a shell reports it: 128 + the signal that killed the command.
        code = 128 + failed.signal if failed.signal else (failed.returncode or 1)
    if code != 0:
        raise Failure(
            Exit.COMMAND_FAILED,
            f"the command failed with exit code {code} (its output is above, in {context.log.log_file})",
        )
