"""The real runner, driven with tiny real programs (sh, cat, sleep, printf, head):
how pipelines fail, where data goes, and that timeouts and signals leave no
process behind."""

import os
import pathlib
import signal
import stat
import subprocess
import threading
import time

import pytest
from djangoops import runner as runner_module
from djangoops.runner import (
    CAPTURE,
    DEVNULL,
    CommandFailed,
    Interrupted,
    Result,
    Runner,
    Stage,
)


@pytest.fixture
def runner():
    runner = Runner(kill_after=0.5)
    yield runner
    runner.close()


def alive(pid):
    """Whether PID is a live process (a zombie waiting for init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def gone_soon(pid, seconds=1.0):
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_pid(path, seconds=2.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"no pid in {path}")


def sleeper(pidfile, script="exec sleep 30"):
    """sh that records its pid in PIDFILE, then runs SCRIPT."""
    return ["sh", "-c", f'echo $$ > "$0"; {script}', str(pidfile)]


def signal_later(seconds, signum=signal.SIGTERM):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


# --- run ---------------------------------------------------------------------------------------


def test_run_captures_stdout_and_stderr_tail(runner):
    result = runner.run(["sh", "-c", "echo out; echo warn >&2"])
    assert result == Result(["sh", "-c", "echo out; echo warn >&2"], 0, b"out\n", "warn", "sh")


def test_run_failure_names_program_with_last_stderr_lines(runner):
    script = "for l in one two three four; do echo $l >&2; done; exit 2"
    with pytest.raises(CommandFailed) as info:
        runner.run(["sh", "-c", script], name="pg_dump")
    error = info.value
    assert (error.name, error.returncode, error.signal, error.timed_out) == ("pg_dump", 2, None, False)
    assert error.stderr == "one\ntwo\nthree\nfour"
    assert error.failed == ["pg_dump"]
    assert error.reason() == "pg_dump failed (exit code 2): two three four"
    assert str(error) == error.reason()


def test_run_failure_without_stderr_has_no_colon(runner):
    with pytest.raises(CommandFailed) as info:
        runner.run(["false"])
    assert info.value.reason() == "false failed (exit code 1)"


def test_ok_codes_accept_other_exit_codes(runner):
    assert runner.run(["sh", "-c", "exit 1"], ok_codes=(0, 1)).returncode == 1


def test_killed_by_signal_is_a_signal_but_128_plus_n_is_an_exit_code(runner):
    with pytest.raises(CommandFailed) as info:
        runner.run(["sh", "-c", "kill -9 $$"])
    assert (info.value.signal, info.value.returncode) == (9, -9)
    assert info.value.reason() == "sh was killed by signal 9"
    with pytest.raises(CommandFailed) as info:
        runner.run(["sh", "-c", "exit 137"])
    assert (info.value.signal, info.value.returncode) == (None, 137)


def test_missing_program_cannot_be_started(runner, tmp_path):
    with pytest.raises(CommandFailed) as info:
        runner.run(["no-such-program-here"])
    assert info.value.reason() == "no-such-program-here could not be started: No such file or directory"
    assert info.value.returncode is None
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_env_merges_over_base_and_none_removes():
    base = {"PATH": os.environ["PATH"], "KEEP": "k", "DROP": "d", "OVER": "o"}
    with Runner(env=base) as runner:
        result = runner.run(
            ["sh", "-c", 'echo "$KEEP-${DROP-unset}-$OVER-$NEW"'], env={"DROP": None, "OVER": "x", "NEW": "n"}
        )
        assert result.stdout == b"k-unset-x-n\n"
        assert runner.env == base  # the base is not changed by a call


def test_default_env_is_a_copy_of_os_environ(monkeypatch):
    monkeypatch.setenv("DJANGOOPS_TEST_VAR", "from-environ")
    with Runner() as runner:
        monkeypatch.setenv("DJANGOOPS_TEST_VAR", "changed-later")
        assert runner.run(["sh", "-c", "echo $DJANGOOPS_TEST_VAR"]).stdout == b"from-environ\n"


def test_input_reaches_stdin_and_never_argv(runner):
    secret = "ALTER ROLE app PASSWORD 'hunter2';\n"
    result = runner.run(["cat"], input=secret)
    assert result.stdout == secret.encode()
    assert not any("hunter2" in arg for arg in result.argv)
    with pytest.raises(CommandFailed) as info:
        runner.run(["sh", "-c", "cat >/dev/null; exit 3"], input=secret)
    assert "hunter2" not in info.value.reason() and "hunter2" not in " ".join(info.value.argv)


def test_large_input_and_output_do_not_deadlock(runner):
    data = bytes(range(256)) * 8192  # 2 MiB, far beyond a pipe's buffer both ways
    assert runner.run(["cat"], input=data, timeout=10).stdout == data


def test_input_to_a_program_that_does_not_read_it(runner):
    assert runner.run(["true"], input=b"x" * 1_000_000).returncode == 0
    assert runner.run(["cat"], input="").stdout == b""


def test_input_and_stdin_together_are_refused(runner, tmp_path):
    with pytest.raises(ValueError):
        runner.run(["cat"], input="x", stdin=tmp_path / "f")


def test_stdin_path_and_stdout_path_with_mode_0600(runner, tmp_path):
    source, target = tmp_path / "in", tmp_path / "out"
    source.write_bytes(b"payload\n")
    target.write_bytes(b"old and longer content\n")
    target.chmod(0o600)
    result = runner.run(["cat"], stdin=source, stdout=target)
    assert result.stdout == b"" and target.read_bytes() == b"payload\n"
    fresh = tmp_path / "fresh"
    runner.run(["printf", "x"], stdout=str(fresh))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_bytes() == b"x"


def test_stdout_devnull_cwd_and_bad_targets(runner, tmp_path):
    assert runner.run(["echo", "x"], stdout=DEVNULL).stdout == b""
    assert runner.run(["pwd"], cwd=tmp_path).stdout.decode().strip() == str(tmp_path)
    with pytest.raises(TypeError):
        runner.run(["true"], stdout=None)
    with pytest.raises(FileNotFoundError):
        runner.run(["true"], stdin=tmp_path / "missing")
    assert runner.running() == []


def test_argv_and_env_are_checked_before_anything_runs(runner, tmp_path):
    with pytest.raises(TypeError):
        runner.run("echo hello")
    with pytest.raises(ValueError):
        runner.run([])
    with pytest.raises(TypeError):
        runner.run(["echo", 1])
    with pytest.raises(TypeError):
        runner.run(["true"], env={"PGPORT": 5432})
    assert runner.run([pathlib.Path("/bin/echo"), tmp_path]).stdout == f"{tmp_path}\n".encode()


def test_run_timeout_kills_the_process(runner, tmp_path):
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandFailed) as info:
        runner.run(sleeper(pidfile), timeout=0.3, name="restic")
    assert time.monotonic() - started < 1.5
    error = info.value
    assert (error.timed_out, error.returncode, error.signal) == (True, None, None)
    assert error.reason() == "restic did not finish within 0.3 s"
    assert not alive(read_pid(pidfile))
    assert runner.running() == []


def test_leftovers_in_a_finished_childs_group_are_killed(runner, tmp_path):
    pidfile = tmp_path / "pid"
    runner.run(["sh", "-c", 'sleep 30 & echo $! > "$0"', str(pidfile)])
    assert gone_soon(read_pid(pidfile))


# --- stderr --------------------------------------------------------------------------------------


def test_stderr_keeps_last_20_non_empty_lines(runner):
    script = "i=0; while [ $i -lt 30 ]; do echo line $i >&2; echo >&2; echo '   ' >&2; i=$((i+1)); done"
    result = runner.run(["sh", "-c", script])
    assert result.stderr.splitlines() == [f"line {i}" for i in range(10, 30)]


def test_stderr_tail_of_a_large_stderr(runner):
    script = "i=0; while [ $i -lt 4000 ]; do echo line $i of a long and chatty error output >&2; i=$((i+1)); done"
    result = runner.run(["sh", "-c", script])
    assert result.stderr.splitlines() == [f"line {i} of a long and chatty error output" for i in range(3980, 4000)]


def test_stderr_undecodable_bytes_are_replaced(runner):
    assert runner.run(["sh", "-c", r"printf '\377bad\n' >&2"]).stderr == "\ufffdbad"


def test_read_tail_of_missing_file_is_empty():
    assert runner_module._read_tail("/nonexistent/djangoops.stderr") == ""


def test_stderr_files_are_removed_and_own_tmpdir_removed_by_close(tmp_path, monkeypatch):
    given = tmp_path / "given"
    given.mkdir()
    with Runner(tmpdir=given) as runner:
        runner.run(["sh", "-c", "echo x >&2"])
        with pytest.raises(CommandFailed):
            runner.run(["sh", "-c", "echo y >&2; exit 1"])
        assert list(given.iterdir()) == []
    assert given.is_dir()
    parent = tmp_path / "parent"
    parent.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(parent))
    runner = Runner()
    runner.run(["true"])
    assert len(list(parent.iterdir())) == 1
    runner.close()
    assert list(parent.iterdir()) == []
    runner.run(["true"])  # usable again after close
    runner.close()


# --- pipelines -------------------------------------------------------------------------------


def test_pipeline_moves_data_stage_to_stage_into_a_0600_file(runner, tmp_path):
    target = tmp_path / "dump.gz"
    stages = [Stage(["head", "-c", "3000000", "/dev/zero"]), Stage(["gzip", "-1"]), Stage(["gzip", "-dc"])]
    results = runner.pipeline(stages, stdout=target, timeout=10)
    assert [r.name for r in results] == ["head", "gzip", "gzip"]
    assert [r.returncode for r in results] == [0, 0, 0]
    assert target.stat().st_size == 3_000_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_pipeline_capture_stdin_env_and_ok_codes(runner, tmp_path):
    source = tmp_path / "in"
    source.write_text("b\na\n")
    stages = [
        Stage(["sort"]),
        Stage(["sh", "-c", 'cat; echo "$X"; exit 1'], env={"X": "two"}, ok_codes=(0, 1)),
        Stage(["sh", "-c", 'cat; echo "$X"'], env={"X": "three"}),
    ]
    results = runner.pipeline(stages, stdin=source, stdout=CAPTURE)
    assert results[-1].stdout == b"a\nb\ntwo\nthree\n"
    assert [r.stdout for r in results[:-1]] == [b"", b""]
    assert results[1].returncode == 1


def test_pipeline_first_stage_failure_is_named_with_its_stderr(runner, tmp_path):
    stages = [
        Stage(["sh", "-c", "echo 'pg_dump: error: connection refused' >&2; exit 1"], name="pg_dump"),
        Stage(["gzip"]),
    ]
    with pytest.raises(CommandFailed) as info:
        runner.pipeline(stages, stdout=tmp_path / "out")
    error = info.value
    assert (error.name, error.returncode, error.failed) == ("pg_dump", 1, ["pg_dump"])
    assert error.reason() == "pg_dump failed (exit code 1): pg_dump: error: connection refused"
    assert [r.returncode for r in error.results] == [1, 0]


def test_pipeline_writer_failure_is_named_not_the_sigpiped_upstream(runner):
    stages = [Stage(["yes"]), Stage(["sh", "-c", "echo 'No space left on device' >&2; exit 3"], name="writer")]
    with pytest.raises(CommandFailed) as info:
        runner.pipeline(stages, timeout=5)
    assert info.value.name == "writer" and info.value.returncode == 3
    assert info.value.reason() == "writer failed (exit code 3): No space left on device"
    assert info.value.failed[-1] == "writer"


def test_pipeline_writer_closing_early_then_failing_is_named(runner):
    stages = [Stage(["yes"]), Stage(["sh", "-c", "head -c1 >/dev/null; exit 4"], name="writer")]
    with pytest.raises(CommandFailed) as info:
        runner.pipeline(stages, timeout=5)
    assert (info.value.name, info.value.returncode) == ("writer", 4)
    assert info.value.failed == ["yes", "writer"]
    # yes died of SIGPIPE, or of the TERM sent to it once the writer had failed.
    assert info.value.results[0].returncode in (-signal.SIGPIPE, -signal.SIGTERM)


def test_pipeline_reader_stopping_early_fails_the_upstream_stage(runner):
    # As with bash's pipefail: data that was never read is a failure.
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([Stage(["yes"]), Stage(["head", "-c1"])], timeout=5)
    assert (info.value.name, info.value.signal) == ("yes", signal.SIGPIPE)


def test_pipeline_stops_an_idle_upstream_when_downstream_fails(runner, tmp_path):
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([Stage(sleeper(pidfile), name="pg_dump"), Stage(["sh", "-c", "sleep 0.2; exit 3"])], timeout=10)
    assert time.monotonic() - started < 2
    assert info.value.name == "sh" and info.value.failed == ["pg_dump", "sh"]
    assert not alive(read_pid(pidfile))


def test_pipeline_timeout_kills_every_stage(runner, tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    stages = [Stage(sleeper(first), name="pg_dump"), Stage(sleeper(second, "exec cat"), name="zstd")]
    with pytest.raises(CommandFailed) as info:
        runner.pipeline(stages, timeout=0.4)
    assert info.value.timed_out and info.value.name == "pg_dump" and info.value.failed == ["pg_dump", "zstd"]
    assert info.value.reason() == "pg_dump did not finish within 0.4 s"
    assert not alive(read_pid(first)) and not alive(read_pid(second))
    assert runner.running() == []


def test_pipeline_stage_that_cannot_start_stops_the_others(runner, tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([Stage(sleeper(pidfile)), Stage(["no-such-zstd"])])
    assert "could not be started" in info.value.reason()
    assert runner.running() == []


def test_empty_pipeline_is_refused(runner):
    with pytest.raises(ValueError):
        runner.pipeline([])


# --- signals ---------------------------------------------------------------------------------


def test_term_to_our_pid_interrupts_a_pipeline_and_stops_children(runner, tmp_path):
    pidfile = tmp_path / "pid"
    with runner.install_signal_handlers():
        timer = signal_later(0.3)
        started = time.monotonic()
        try:
            with pytest.raises(Interrupted) as info:
                runner.pipeline([Stage(sleeper(pidfile)), Stage(["cat"])], timeout=30)
        finally:
            timer.cancel()
    assert time.monotonic() - started < 2
    assert info.value.signum == signal.SIGTERM and str(info.value) == "interrupted by SIGTERM"
    assert not isinstance(info.value, Exception)
    assert not alive(read_pid(pidfile))
    assert runner.running() == []


def test_child_ignoring_term_is_killed_after_two_seconds(tmp_path):
    pidfile, inner = tmp_path / "pid", tmp_path / "inner"
    script = f'trap "" TERM; sleep 30 & echo $! > "{inner}"; wait'
    with Runner() as runner, runner.install_signal_handlers():
        timer = signal_later(0.3)
        second = signal_later(0.8, signal.SIGINT)  # a second signal does not cut the grace short
        started = time.monotonic()
        try:
            with pytest.raises(Interrupted) as info:
                runner.run(sleeper(pidfile, script), timeout=30)
        finally:
            timer.cancel()
            second.cancel()
        elapsed = time.monotonic() - started - 0.3
    assert 1.8 < elapsed < 3.0
    assert info.value.signum == signal.SIGTERM
    assert not alive(read_pid(pidfile)) and gone_soon(read_pid(inner))


def test_int_interrupts_with_no_child_running_and_handlers_are_restored(runner):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    handlers = runner.install_signal_handlers()
    assert signal.getsignal(signal.SIGINT) != before[0]
    timer = signal_later(0.05, signal.SIGINT)
    try:
        with pytest.raises(Interrupted) as info:
            time.sleep(5)
    finally:
        timer.cancel()
        handlers.restore()
    assert info.value.signum == signal.SIGINT
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_signal_during_start_is_handled_once_the_child_is_registered(runner, monkeypatch):
    real_popen = subprocess.Popen
    started = []

    def popen(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled while the runner is starting a child
        os.kill(os.getpid(), signal.SIGINT)
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    with runner.install_signal_handlers(), pytest.raises(Interrupted) as info:
        runner.run(["sleep", "30"])
    assert info.value.signum == signal.SIGTERM
    assert runner.running() == [] and not alive(started[0].pid)


def test_interrupted_names_unknown_signals():
    assert str(Interrupted(999)) == "interrupted by signal 999"


def test_reason_wordings():
    assert CommandFailed("pg_dump", ["pg_dump"], 1, "a\nb\nc\nd").reason() == "pg_dump failed (exit code 1): b c d"
    assert CommandFailed("pg_dump", ["pg_dump"], -9).reason() == "pg_dump was killed by signal 9"
    timed = CommandFailed("pg_dump", ["pg_dump"], timed_out=True, timeout=30)
    assert timed.reason() == "pg_dump did not finish within 30 s"
    assert CommandFailed("x", ["x"], timed_out=True).reason() == "x did not finish in time"


# --- sessions --------------------------------------------------------------------------------


def test_session_lines_timeout_and_close(runner):
    session = runner.start(["cat"], name="psql")
    assert [r.name for r in runner.running()] == ["psql"]
    session.write("SELECT 1;\n")
    assert session.readline(timeout=2) == "SELECT 1;"
    started = time.monotonic()
    with pytest.raises(CommandFailed) as info:
        session.readline(timeout=0.1)
    assert time.monotonic() - started < 1
    assert info.value.timed_out and info.value.reason() == "psql sent no line within 0.1 s"
    session.write(b"partial")  # no newline: not a line yet
    with pytest.raises(CommandFailed):
        session.readline(timeout=0.05)
    result = session.close(timeout=2)
    assert (result.returncode, result.stdout) == (0, b"partial")
    assert runner.running() == []
    with pytest.raises(ValueError):
        session.readline(1)


def test_session_end_of_output(runner):
    session = runner.start(["sh", "-c", "echo a; printf b"])
    assert [session.readline(2), session.readline(2), session.readline(2), session.readline(2)] == [
        "a",
        "b",
        None,
        None,
    ]
    assert session.close(2).returncode == 0


def test_session_close_returns_unread_output_and_env(runner):
    session = runner.start(["sh", "-c", 'echo one; echo "$SNAP"'], env={"SNAP": "two"})
    assert session.readline(2) == "one"
    assert session.close(2).stdout == b"two\n"


def test_session_close_reports_failure(runner):
    session = runner.start(["sh", "-c", "cat >/dev/null; echo 'FATAL: no' >&2; exit 2"], name="psql")
    session.write("\\q\n")
    with pytest.raises(CommandFailed) as info:
        session.close(2)
    assert info.value.reason() == "psql failed (exit code 2): FATAL: no"


def test_session_close_timeout_stops_it(runner):
    session = runner.start(["sleep", "30"])
    with pytest.raises(CommandFailed) as info:
        session.close(0.2)
    assert info.value.timed_out and info.value.returncode is None
    assert not alive(session.pid)


def test_session_write_after_failure_reports_how_it_ended(runner):
    session = runner.start(["sh", "-c", "echo 'could not connect' >&2; exit 3"], name="psql")
    while alive(session.pid):
        time.sleep(0.01)
    with pytest.raises(CommandFailed) as info:
        session.write("SELECT 1;\n")
    assert info.value.reason() == "psql failed (exit code 3): could not connect"
    assert runner.running() == []


def test_session_write_after_it_stopped_reading(runner):
    session = runner.start(["sh", "-c", "exec 0<&-; echo ignored; sleep 0.1"])
    time.sleep(0.05)
    with pytest.raises(CommandFailed) as info:
        session.write("x" * 100_000)
    assert info.value.reason() == "sh stopped reading its input"


def test_session_kill_and_context_manager(runner):
    session = runner.start(["sleep", "30"])
    session.kill()
    session.kill()
    assert not alive(session.pid) and runner.running() == []
    with runner.start(["sleep", "30"]) as other:
        pid = other.pid
    assert not alive(pid)
    with pytest.raises(ValueError):
        other.write("x")


def test_session_reaped_elsewhere_has_a_lost_status(runner):
    session = runner.start(["sh", "-c", "exit 0"])
    os.waitpid(session.pid, 0)
    with pytest.raises(CommandFailed) as info:
        session.close(1)
    assert info.value.returncode == 255


def test_close_stops_sessions_left_open(tmp_path):
    runner = Runner(kill_after=0.5)
    session = runner.start(["sleep", "30"])
    runner.close()
    assert not alive(session.pid) and runner.running() == []


def test_input_left_unwritten_when_the_reader_ends(runner):
    # The background sleep keeps the pipe open without reading; the group kill ends it.
    result = runner.run(["sh", "-c", "exec 3<&0; sleep 30 & exit 0"], input=b"x" * 1_000_000, timeout=5)
    assert result.returncode == 0


def test_input_to_a_running_program_that_closed_its_stdin(runner):
    result = runner.run(["sh", "-c", "exec 0<&-; sleep 0.2; echo done"], input=b"x" * 1_000_000, timeout=5)
    assert result.stdout == b"done\n"


def test_a_child_that_will_not_die_stays_registered_until_close(runner, monkeypatch):
    # A process stuck in the kernel ignores even KILL for a while.
    monkeypatch.setattr(runner_module, "_await_exit", lambda children, seconds: [c for c in children if not c.done])
    with pytest.raises(CommandFailed):
        runner.run(["sleep", "30"], timeout=0.05)
    assert [r.name for r in runner.running()] == ["sleep"]
    monkeypatch.undo()
    runner.close()
    assert runner.running() == []


def test_sentinels_and_argv_items():
    assert (repr(CAPTURE), repr(DEVNULL)) == ("CAPTURE", "DEVNULL")
    with pytest.raises(TypeError):
        runner_module.check_argv(["echo", b"bytes"])
