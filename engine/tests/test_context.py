"""Context and run_command: the end of every command. The last log line, the
metrics and the pings only for a run that started; the exit hooks in order, a
failing one logged and the others still run; the clean-up paths; and how each
way of ending becomes an exit code."""

import os
import signal

import pytest
from command_helpers import shop_project
from djangoops import context
from djangoops.context import Context, Stop, run_command
from djangoops.errors import Exit, Failure
from djangoops.runner import Interrupted, Runner
from fakes import FakeRunner

URL = "https://hc.example/ping/context-secret-key"


class Clock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


@pytest.fixture
def pings(monkeypatch):
    sent = []

    def ping(url, what):
        sent.append((url, what))
        return "health-check ping (start) failed: HTTP 500" if what == "start" and "warn" in url else None

    monkeypatch.setattr(context.healthcheck, "ping", ping)
    return sent


@pytest.fixture
def project(tmp_path):
    for name in ("logs", "metrics", "db_backups"):
        (tmp_path / name).mkdir()
    return shop_project(
        tmp_path, tmp_path / "commands", tmp_path / "db_backups", tmp_path / "logs", tmp_path / "metrics"
    )


def make(project, clock=None, script="backup_db", runner=True, **kwargs):
    ctx = Context(script, project, "/etc/djangoops/shop", "/usr/local/lib/djangoops/shop", quiet=True, **kwargs)
    if clock is not None:
        ctx.clock = clock
        ctx.started = clock()
    if runner:
        ctx.runner = FakeRunner()
        ctx.run_dir = os.path.join(project.home, "run")
        os.mkdir(ctx.run_dir)
    return ctx


def log_lines(project, script="backup_db"):
    path = os.path.join(project.logs_dir, f"{script}.log")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.split(None, 2)[2] for line in f.read().splitlines()]


def metrics_file(project, script="backup_db"):
    return os.path.join(project.metrics_dir, f"djangoops_shop_{script}.prom")


# --- finish ----------------------------------------------------------------------------------------


def test_a_started_run_ends_with_its_last_line_metrics_and_ping(project, pings):
    ctx = make(project, clock=Clock(100.0, 172.35))
    ctx.start_run(URL)
    ctx.extra_metrics["backup_size_bytes"] = 1234

    assert ctx.finish(Exit.OK) == 0

    assert log_lines(project) == ["INFO  finished in 1 min 12 s (72.3 s)"]
    assert pings == [(URL, "start"), (URL, "0")]
    text = open(metrics_file(project)).read()
    assert 'djangoops_job_exit_code{project="shop",script="backup_db"} 0' in text
    assert 'djangoops_job_duration_seconds{project="shop",script="backup_db"} 72.3' in text
    assert 'djangoops_backup_size_bytes{project="shop",script="backup_db"} 1234' in text
    assert ctx.runner.closed
    assert not os.path.exists(ctx.run_dir)


def test_a_failed_run_says_its_code_and_pings_it(project, pings):
    ctx = make(project, clock=Clock(0.0, 3.0))
    ctx.start_run(URL)
    assert ctx.finish(Exit.DUMP_FAILED) == 7
    assert log_lines(project) == ["ERROR failed with exit code 7 after 0 min 3 s (3.0 s)"]
    assert pings[-1] == (URL, "7")
    assert 'djangoops_job_exit_code{project="shop",script="backup_db"} 7' in open(metrics_file(project)).read()


def test_a_run_that_never_started_writes_no_last_line_metrics_or_ping(project, pings):
    ctx = make(project)
    ctx.healthcheck_url = URL
    assert ctx.finish(Exit.USAGE) == 2
    assert log_lines(project) == []
    assert not os.path.exists(metrics_file(project))
    assert pings == []


def test_no_metrics_directory_and_no_url_mean_no_metrics_and_no_ping(project, pings, tmp_path):
    import dataclasses

    ctx = make(dataclasses.replace(project, metrics_dir=""))
    ctx.start_run()
    assert ctx.finish(0) == 0
    assert os.listdir(tmp_path / "metrics") == []
    assert pings == []


def test_a_metrics_file_that_cannot_be_written_and_a_failed_ping_are_warnings(project, pings, tmp_path):
    import dataclasses

    ctx = make(dataclasses.replace(project, metrics_dir=str(tmp_path / "missing")))
    ctx.start_run(URL + "/warn")
    assert ctx.finish(0) == 0
    lines = log_lines(project)
    assert lines[0] == "WARN  health-check ping (start) failed: HTTP 500"
    assert lines[1].startswith("INFO  finished in")
    assert lines[2].startswith(f"WARN  could not write metrics to {tmp_path / 'missing'}")


def test_the_health_check_url_never_reaches_the_log(project, pings):
    ctx = make(project)
    ctx.start_run(URL)
    ctx.log.error(f"could not reach {URL}")
    ctx.finish(1)
    assert log_lines(project)[0] == "ERROR could not reach [redacted]"


# --- exit hooks and clean-up -------------------------------------------------------------------------


def test_exit_hooks_run_in_order_and_a_failing_one_does_not_stop_the_others(project, pings):
    ctx = make(project)
    ctx.start_run()
    order = []
    ctx.on_exit(lambda: order.append("drop scratch"))

    def failing():
        order.append("failing")
        raise Failure(Exit.DB_UNAVAILABLE, "server gone")

    ctx.on_exit(failing)
    ctx.on_exit(lambda: order.append("say what is where"))

    ctx.finish(Exit.OK)

    assert order == ["drop scratch", "failing", "say what is where"]
    lines = log_lines(project)
    assert lines[0] == "WARN  clean-up step failed: server gone"
    assert lines[1].startswith("INFO  finished in")  # the hooks run before the last line
    ctx.finish(0)
    assert order == ["drop scratch", "failing", "say what is where"]  # once only


def test_a_second_signal_during_the_hooks_skips_the_rest(project, pings):
    ctx = make(project)
    ctx.start_run()
    order = []

    def interrupted():
        order.append("interrupted")
        raise Interrupted(signal.SIGTERM)

    ctx.on_exit(interrupted)
    ctx.on_exit(lambda: order.append("skipped"))
    assert ctx.finish(Exit.INTERRUPTED) == 130
    assert order == ["interrupted"]
    assert log_lines(project)[0] == (
        "WARN  a second signal arrived while the run was ending; some clean-up was skipped"
    )


def test_cleanup_paths_are_removed_whatever_they_are(project, tmp_path, capsys):
    ctx = make(project)
    a_file = tmp_path / "partial"
    a_file.write_text("x")
    a_dir = tmp_path / "staging"
    (a_dir / "tree").mkdir(parents=True)
    (a_dir / "tree" / "f").write_text("y")
    target = tmp_path / "kept"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("z")
    ctx.cleanup_on_exit(str(a_file), str(a_dir), str(tmp_path / "never-made"))
    ctx.cleanup_on_exit(str(link), str(locked / "file"))
    os.chmod(locked, 0o500)
    readonly = os.geteuid() != 0  # root removes it anyway

    try:
        ctx.finish(0)
    finally:
        os.chmod(locked, 0o700)

    assert not a_file.exists() and not a_dir.exists()
    assert not link.is_symlink() and target.is_dir()  # the link, never what it points at
    if readonly:
        assert f"could not remove {locked / 'file'}: Permission denied" in capsys.readouterr().err


def test_a_path_that_cannot_be_removed_is_said_on_stderr(project, monkeypatch, capsys, tmp_path):
    ctx = make(project)
    path = tmp_path / "busy"
    path.write_text("x")

    def unlink(target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(context.os, "unlink", unlink)
    ctx.cleanup_on_exit(str(path))
    ctx.finish(0)
    assert capsys.readouterr().err == f"could not remove {path}: Permission denied\n"


# --- run_command ---------------------------------------------------------------------------------------


def test_an_unexpected_exception_is_exit_1_with_where_it_happened(project, pings):
    ctx = make(project)

    def command(context, args):
        context.start_run()
        {}["missing"]

    line = command.__code__.co_firstlineno + 2
    assert run_command(ctx, command, []) == Exit.INTERNAL
    assert log_lines(project)[0] == f"ERROR unexpected failure at test_context.py:{line}: KeyError: 'missing'"
    assert log_lines(project)[1].startswith("ERROR failed with exit code 1 after")


def test_an_unexpected_exception_deep_down_names_the_innermost_frame(project):
    ctx = make(project)

    def command(context, args):
        int("x")

    assert run_command(ctx, command, []) == 1
    [line] = log_lines(project)
    assert line.startswith("ERROR unexpected failure at test_context.py:")
    assert line.endswith("ValueError: invalid literal for int() with base 10: 'x'")


def test_a_failure_is_its_code_and_its_message(project):
    ctx = make(project)

    def command(context, args):
        raise Failure(Exit.NO_SPACE, "only 3 MiB free")

    assert run_command(ctx, command, ["a"]) == 6
    assert log_lines(project) == ["ERROR only 3 MiB free"]


@pytest.mark.parametrize(
    ("code", "last"), [(0, "INFO  finished in 0 min 0 s (0.0 s)"), (2, "ERROR failed with exit code 2 after 0 min 0 s")]
)
def test_stop_gives_its_code_with_no_log_line_of_its_own(project, pings, code, last):
    ctx = make(project, clock=Clock(5.0))

    def command(context, args):
        context.start_run(URL)
        raise Stop(code)

    assert run_command(ctx, command, []) == code
    [line] = log_lines(project)  # only the run's last line
    assert line.startswith(last)
    assert pings == [(URL, "start"), (URL, str(code))]


def test_stop_before_the_run_writes_nothing(project):
    ctx = make(project)

    def command(context, args):
        raise Stop(Exit.USAGE)

    assert run_command(ctx, command, []) == 2
    assert log_lines(project) == []


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (Interrupted(signal.SIGTERM), "ERROR interrupted by SIGTERM: stopped"),
        (Interrupted(signal.SIGINT), "ERROR interrupted by SIGINT: stopped"),
        (KeyboardInterrupt(), "ERROR interrupted by SIGINT: stopped"),
    ],
)
def test_a_signal_is_exit_130(project, raised, line):
    ctx = make(project)
    hooks = []
    ctx.on_exit(lambda: hooks.append("undo"))

    def command(context, args):
        raise raised

    assert run_command(ctx, command, []) == 130
    assert log_lines(project) == [line]
    assert hooks == ["undo"]


def test_success_is_exit_0(project):
    assert run_command(make(project), lambda context, args: None, []) == 0


# --- set-up -----------------------------------------------------------------------------------------------


def test_open_makes_a_private_directory_and_a_runner_with_signal_handlers(project):
    ctx = make(project, runner=False)
    before = signal.getsignal(signal.SIGTERM)
    assert ctx.open() is ctx
    try:
        assert isinstance(ctx.runner, Runner)
        assert os.path.basename(ctx.run_dir).startswith("djangoops-backup_db.")
        assert os.stat(ctx.run_dir).st_mode & 0o777 == 0o700
        assert ctx.runner.env["LC_ALL"] == "C.UTF-8"
        assert signal.getsignal(signal.SIGTERM) != before
        runner = ctx.runner
        ctx.open()
        assert ctx.runner is runner  # once
    finally:
        ctx.finish(0)
    assert not os.path.exists(ctx.run_dir)
    assert signal.getsignal(signal.SIGTERM) == before


def test_private_dir_falls_back_to_tmpdir_without_dev_shm(monkeypatch, tmp_path):
    monkeypatch.setattr(context.os, "access", lambda path, mode: False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    made = context.private_dir("verify_db")
    assert os.path.dirname(made) == str(tmp_path)
    os.rmdir(made)


def test_the_stderr_policy_and_quiet(project, monkeypatch):
    monkeypatch.setenv("DJANGOOPS_STDERR", "problems")
    monkeypatch.delenv("QUIET", raising=False)
    ctx = Context("backup_db", project, "/c", "/e")
    assert ctx.log.stderr == "problems"
    assert ctx.lib_dir == "/e/lib"
    assert ctx.log.log_file == os.path.join(project.logs_dir, "backup_db.log")
    ctx.quiet()
    assert ctx.log.stderr == "none"
    monkeypatch.setenv("QUIET", "1")
    assert Context("backup_db", project, "/c", "/e").log.stderr == "none"


def test_elapsed_uses_the_clock(project):
    ctx = make(project, clock=Clock(10.0, 12.5))
    assert ctx.elapsed() == 2.5


def test_interrupted_names_unknown_signals():
    assert str(Interrupted(200)) == "interrupted by signal 200"
    assert str(Stop(3)) == "3" and Stop(Exit.CONFIG).code == 3
