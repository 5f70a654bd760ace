"""Scheduled jobs: the command's output lines logged as OUT lines, exit 12 with
the command's own code, the virtualenv first on PATH (once), the job's lock
(exit 5 for a second run), the container jobs run with docker exec, and the
jobs that are not configured (exit 3)."""

import os
import signal

import pytest
from djangoops.commands import jobs
from djangoops.errors import Exit
from djangoops.lock import Lock
from djangoops.runner import CommandFailed, Interrupted
from fakes import TIMEOUT

URL = "https://hc.example/ping/clear-sessions-key"


def run(cmd, script="clear_sessions", *args):
    return cmd.run(jobs.main, list(args), script=script)


@pytest.fixture
def job(cmd, monkeypatch):
    cmd.write_jobs({"clear_sessions": ("python manage.py clearsessions", "", URL), "other": "true"})
    monkeypatch.setenv("PATH", f"/usr/local/bin:{cmd.venv}/bin:/usr/bin:/bin:")
    return cmd


def test_the_output_is_logged_line_by_line_between_start_and_finish(job):
    job.fake.on("job", lines=["Deleted 12 sessions", TIMEOUT, "", "done", None])

    assert run(job) == Exit.OK

    log = job.log("clear_sessions").splitlines()
    assert " INFO  running in " in log[0]
    assert log[0].endswith(f"running in {job.src}: python manage.py clearsessions")
    # Each line as printed, a blank one too; a quiet stretch (TIMEOUT) writes nothing.
    assert job.lines("OUT", "clear_sessions") == ["Deleted 12 sessions", "", "done"]
    assert all(" OUT   " in line for line in log[1:-1]) and len(log) == 5
    assert " INFO  finished in 0 min " in log[-1]
    assert job.pings == [(URL, "start"), (URL, "0")]
    assert job.metric("job_exit_code", "clear_sessions") == "0"
    [session] = job.fake.sessions
    assert session.closed


def test_the_command_runs_with_bash_in_the_source_directory_with_stdin_closed(job):
    assert run(job) == Exit.OK
    [call] = job.fake.calls
    assert call.kind == "start"
    assert call.argv == [
        "sh",
        "-c",
        'exec "$@" 2>&1 </dev/null',
        "job",
        "bash",
        "-c",
        "python manage.py clearsessions",
    ]
    assert call.cwd == str(job.src)
    assert call.env["DJANGO_SETTINGS_MODULE"] == "shop.settings"
    # The virtualenv first, and there once; the empty entry dropped.
    assert call.env["PATH"] == f"{job.venv}/bin:/usr/local/bin:/usr/bin:/bin"


def test_a_failing_command_exits_12_with_its_own_code(job):
    job.fake.on("job", lines=["Traceback (most recent call last):", "KeyError: 'x'", None], fail=3)

    assert run(job) == Exit.COMMAND_FAILED

    log_file = job.logs / "clear_sessions.log"
    assert job.lines("OUT", "clear_sessions") == ["Traceback (most recent call last):", "KeyError: 'x'"]
    assert job.lines("ERROR", "clear_sessions")[0] == (
        f"the command failed with exit code 3 (its output is above, in {log_file})"
    )
    assert job.pings[-1] == (URL, "12")
    assert job.metric("job_exit_code", "clear_sessions") == "12"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGKILL, 137), (signal.SIGTERM, 143), (signal.SIGSEGV, 139)])
def test_a_command_killed_by_a_signal_reports_128_plus_the_signal(job, signum, code):
    job.fake.on("job", signal=signum)
    assert run(job) == Exit.COMMAND_FAILED
    log_file = job.logs / "clear_sessions.log"
    assert job.lines("ERROR", "clear_sessions")[0] == (
        f"the command failed with exit code {code} (its output is above, in {log_file})"
    )
    assert job.metric("job_exit_code", "clear_sessions") == "12"


def test_a_command_killed_by_a_signal_exits_12(job):
    job.fake.on("job", signal=signal.SIGKILL)
    assert run(job) == Exit.COMMAND_FAILED
    assert job.lines("ERROR", "clear_sessions")[0].startswith("the command failed with exit code ")


def test_a_command_that_does_not_end_in_time_exits_12(job):
    job.fake.on("job", timeout=True)
    assert run(job) == Exit.COMMAND_FAILED
    assert job.lines("ERROR", "clear_sessions")[0].startswith("the command failed with exit code ")


def test_a_second_run_while_the_first_holds_the_lock_exits_5(job):
    Lock(job.logs / ".clear_sessions.lock", 0).acquire()
    assert run(job) == Exit.LOCKED
    assert job.fake.calls == []
    assert job.lines("ERROR", "clear_sessions")[0].startswith(
        f"another run holds the lock {job.logs / '.clear_sessions.lock'}"
    )
    # Another job has a lock of its own.
    assert run(job, "other") == Exit.OK


def test_a_container_job_runs_with_docker_exec(cmd, monkeypatch):
    cmd.write_jobs({"rebuild_index": ("python manage.py update_index", "shop-web", "")})
    (cmd.src).rmdir()  # the host's source directory is not needed

    assert run(cmd, "rebuild_index") == Exit.OK

    [call] = cmd.fake.calls
    assert call.argv[4:] == ["docker", "exec", "shop-web", "sh", "-c", "python manage.py update_index"]
    assert call.cwd is None
    assert cmd.lines("INFO", "rebuild_index")[0] == "running in the container shop-web: python manage.py update_index"
    assert cmd.pings == []


def test_an_unknown_job_exits_3_before_the_run_starts(job):
    assert run(job, "nightly_report") == Exit.CONFIG
    assert job.lines("ERROR", "nightly_report") == [
        f"nightly_report is not a job of {job.config_dir}/jobs.json (schedule_jobs)"
    ]
    assert job.fake.calls == []
    assert job.metrics("nightly_report") == ""


def test_a_missing_source_directory_exits_3(job):
    os.rmdir(job.src)
    assert run(job) == Exit.CONFIG
    assert job.lines("ERROR", "clear_sessions")[0] == f"the project's source directory {job.src} is missing"
    assert job.fake.calls == []


def test_a_job_takes_no_arguments(job, capsys):
    assert run(job, "clear_sessions", "--now") == Exit.USAGE
    assert "Usage: clear_sessions.sh\nRun the scheduled job clear_sessions" in capsys.readouterr().err
    assert job.fake.calls == []


def test_a_missing_jobs_file_exits_3(cmd):
    assert run(cmd) == Exit.CONFIG
    assert cmd.lines("ERROR", "clear_sessions")[0].startswith(f"{cmd.config_dir}/jobs.json: cannot be read")


def test_an_interrupted_job_exits_130(job):
    job.fake.on("job", lines=["working", Interrupted(signal.SIGTERM)])
    assert run(job) == Exit.INTERRUPTED
    assert job.lines("OUT", "clear_sessions") == ["working"]
    assert job.lines("ERROR", "clear_sessions")[0] == "interrupted by SIGTERM: stopped"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/bin:/bin", "/v/bin:/usr/bin:/bin"),
        ("/v/bin:/usr/bin", "/v/bin:/usr/bin"),
        ("/usr/bin:/v/bin:/bin:/v/bin", "/v/bin:/usr/bin:/bin"),
        ("", "/v/bin"),
        ("::/usr/bin:", "/v/bin:/usr/bin"),
        ("/v/bin/:/usr/bin", "/v/bin:/v/bin/:/usr/bin"),
    ],
)
def test_venv_first_on_path(path, expected):
    assert jobs.venv_first_on_path(path, "/v") == expected


def test_a_quiet_stretch_is_not_an_error(job):
    quiet = CommandFailed("job", ["sh"], None, "", timed_out=True, timeout=3600, detail="sent no line within 3600 s")
    job.fake.on("job", lines=[quiet, quiet, "still alive", None])
    assert run(job) == Exit.OK
    assert job.lines("OUT", "clear_sessions") == ["still alive"]
