"""The FakeRunner the engine's unit tests use: rules, recording, and failures
shaped like the real runner's."""

import signal
import stat

import pytest
from djangoops.runner import CAPTURE, DEVNULL, CommandFailed, Interrupted, Result, Running, Stage
from fakes import TIMEOUT, FakeRunner


def dump_pipeline(fake, target, **kwargs):
    return fake.pipeline([Stage(["pg_dump", "-Fc", "app"]), Stage(["zstd", "-q"])], stdout=target, **kwargs)


def test_unmatched_calls_succeed_empty_and_are_recorded(tmp_path):
    fake = FakeRunner()
    assert fake.run(["psql", "-c", "SELECT 1"]) == Result(["psql", "-c", "SELECT 1"], 0, b"", "", "psql")
    results = dump_pipeline(fake, tmp_path / "dump")
    assert [r.returncode for r in results] == [0, 0]
    assert (tmp_path / "dump").read_bytes() == b""
    assert [call.kind for call in fake.calls] == ["run", "pipeline"]


def test_rules_match_by_program_in_order(tmp_path):
    fake = FakeRunner()
    fake.on("psql", stdout=b"first\n")
    fake.on("psql", stdout=b"second\n")
    assert fake.run(["/usr/bin/psql", "-Atc", "SELECT 1"]).stdout == b"first\n"
    assert fake.run(["psql"], name="psql-admin").stdout == b"first\n"  # argv[0] still matches
    assert fake.run(["mariadb"]).stdout == b""


def test_times_limits_a_rule_then_falls_through():
    fake = FakeRunner()
    once = fake.on("zstd", times=1, fail=1, stderr="zstd: error 70 : Write error : No space left on device")
    fake.on("zstd", stdout=b"ok")
    with pytest.raises(CommandFailed) as info:
        fake.run(["zstd"])
    assert info.value.reason() == "zstd failed (exit code 1): zstd: error 70 : Write error : No space left on device"
    assert fake.run(["zstd"]).stdout == b"ok"
    assert once.used == 1 and once.exhausted
    assert repr(once) == "Rule('zstd', used=1)" and repr(TIMEOUT) == "TIMEOUT"


def test_predicates_and_input_conditions():
    fake = FakeRunner()
    fake.on(lambda call: "DROP DATABASE" in call.input, fail=1, stderr="ERROR:  permission denied")
    fake.on("psql", input_contains="pg_database", stdout=b"1\n")
    fake.on("psql", argv_contains="--dbname=other", stdout=b"other\n")
    assert fake.run(["psql"], input=b"SELECT 1 FROM pg_database;").stdout == b"1\n"
    assert fake.run(["psql", "--dbname=other"]).stdout == b"other\n"
    assert fake.run(["psql"], input="SELECT 2;").stdout == b""
    with pytest.raises(CommandFailed) as info:
        fake.run(["psql"], input='DROP DATABASE "app_old";')
    assert info.value.reason() == "psql failed (exit code 1): ERROR:  permission denied"
    assert 'DROP DATABASE "app_old";' in fake.sql()


def test_timeout_signal_and_ok_codes():
    fake = FakeRunner()
    fake.on("restic", timeout=True, stderr="waiting for lock")
    fake.on("mariadb", signal=9)
    fake.on("rsync", fail=24)
    with pytest.raises(CommandFailed) as info:
        fake.run(["restic", "backup"], timeout=30)
    assert info.value.timed_out and info.value.returncode is None
    assert info.value.reason() == "restic did not finish within 30 s: waiting for lock"
    with pytest.raises(CommandFailed) as info:
        fake.run(["mariadb"])
    assert (info.value.signal, info.value.returncode) == (9, -9)
    assert info.value.reason() == "mariadb was killed by signal 9"
    assert fake.run(["rsync"], ok_codes=(0, 24)).returncode == 24


def test_interrupt_runs_effect_first_and_records_the_call(tmp_path):
    fake = FakeRunner()
    marker = tmp_path / "marker"
    fake.on("psql", interrupt=signal.SIGTERM, effect=lambda call: marker.write_text(call.input))
    with pytest.raises(Interrupted) as info:
        fake.run(["psql"], input="ALTER DATABASE app RENAME TO app_old;")
    assert info.value.signum == signal.SIGTERM
    assert marker.read_text() == "ALTER DATABASE app RENAME TO app_old;"
    assert fake.calls_to("psql")[0].input.startswith("ALTER DATABASE")


def test_pipeline_names_the_most_downstream_failure(tmp_path):
    fake = FakeRunner()
    fake.on("pg_dump", fail=1, stderr="pg_dump: error: connection refused", times=1)
    with pytest.raises(CommandFailed) as info:
        dump_pipeline(fake, tmp_path / "dump")
    assert (info.value.name, info.value.failed) == ("pg_dump", ["pg_dump"])
    assert [r.returncode for r in info.value.results] == [1, 0]
    fake.on("pg_dump", signal=13)
    fake.on("zstd", fail=1, stderr="No space left on device")
    with pytest.raises(CommandFailed) as info:
        dump_pipeline(fake, tmp_path / "dump")
    assert (info.value.name, info.value.failed) == ("zstd", ["pg_dump", "zstd"])
    assert info.value.reason() == "zstd failed (exit code 1): No space left on device"


def test_pipeline_output_short_file_and_effect(tmp_path):
    target = tmp_path / "dump"
    fake = FakeRunner()
    fake.on("zstd", stdout=b"compressed", times=1)
    dump_pipeline(fake, target)
    assert target.read_bytes() == b"compressed" and stat.S_IMODE(target.stat().st_mode) == 0o600
    fake.on("zstd", stdout=b"", times=1)  # an empty dump
    dump_pipeline(fake, target)
    assert target.read_bytes() == b""

    def truncate(call):
        with open(call.stdout, "r+b") as file:
            file.truncate(3)

    fake.on("zstd", stdout=b"compressed", effect=truncate, fail=1)
    with pytest.raises(CommandFailed):
        dump_pipeline(fake, target)
    assert target.read_bytes() == b"com"  # the partial file a failed write leaves


def test_pipeline_capture_timeout_and_stage_targets(tmp_path):
    fake = FakeRunner()
    fake.on(lambda call: True, stage="pg_dump", stdout=b"ignored: not the last stage")
    fake.on(lambda call: call.kind == "pipeline", stdout=b"toc\n")
    results = fake.pipeline([Stage(["pg_dump"]), Stage(["pg_restore", "--list"])], stdout=CAPTURE)
    assert [r.stdout for r in results] == [b"", b"toc\n"]
    fake.on("tar", timeout=True)
    with pytest.raises(CommandFailed) as info:
        fake.pipeline([Stage(["tar", "-c"]), Stage(["gzip"])], timeout=5)
    assert info.value.timed_out and info.value.failed == ["tar"]
    fake.on(lambda call: True, stage="absent", fail=3)
    assert fake.run(["true"]).returncode == 0


def test_calls_record_env_stdin_stdout_and_helpers(tmp_path):
    source = tmp_path / "backup.sql.zst"
    source.write_bytes(b"x")
    fake = FakeRunner()
    fake.run(["psql"], env={"PGPASSFILE": "/run/pgpass", "PGHOST": None}, input="SELECT 1;", stdout=DEVNULL)
    fake.pipeline(
        [Stage(["zstd", "-dc"], env={"A": "1"}), Stage(["psql", "-v", "ON_ERROR_STOP=1"], env={"B": "2"})],
        stdin=source,
        timeout=60,
        cwd=str(tmp_path),
    )
    run, pipe = fake.calls
    assert run.env == {"PGPASSFILE": "/run/pgpass", "PGHOST": None}
    assert (run.input, run.stdout, run.stdin) == ("SELECT 1;", DEVNULL, None)
    assert (pipe.env, pipe.envs) == ({"A": "1", "B": "2"}, [{"A": "1"}, {"B": "2"}])
    assert (pipe.stdin, pipe.stdout, pipe.timeout, pipe.cwd) == (str(source), DEVNULL, 60, str(tmp_path))
    assert pipe.names == ["zstd", "psql"] and pipe.text == "zstd -dc | psql -v ON_ERROR_STOP=1"
    assert fake.calls_to("psql") == [run, pipe] and fake.calls_to("zstd") == [pipe]
    assert fake.argvs() == [["psql"], ["zstd", "-dc"], ["psql", "-v", "ON_ERROR_STOP=1"]]
    assert fake.sql() == "SELECT 1;"
    with pytest.raises(FileNotFoundError):
        fake.run(["cat"], stdin=tmp_path / "missing")


def test_strict_mode_names_the_unmatched_argv():
    fake = FakeRunner(strict=True)
    fake.on("psql")
    fake.run(["psql"])
    with pytest.raises(AssertionError, match=r"\['pg_dump', '--schema-only'\]"):
        fake.run(["pg_dump", "--schema-only"])
    assert len(fake.calls) == 2


def test_argument_checks_match_the_real_runner():
    fake = FakeRunner()
    with pytest.raises(TypeError):
        fake.run("psql -c 'SELECT 1'")
    with pytest.raises(TypeError):
        fake.run(["psql"], env={"PGPORT": 5432})
    with pytest.raises(ValueError):
        fake.run(["psql"], input="x", stdin="/tmp/x")
    with pytest.raises(ValueError):
        fake.pipeline([])
    with pytest.raises(TypeError):
        fake.pipeline([["pg_dump"]])
    with pytest.raises(TypeError):
        fake.on(42)
    with pytest.raises(TypeError):
        fake.on("psql", stage="psql")


def test_sessions_are_scripted_and_recorded():
    fake = FakeRunner()
    fake.on("psql", lines=["00000003-1", None], reply=lambda text: "7" if "count" in text else None)
    session = fake.start(["psql", "-At"], env={"PGAPPNAME": "snapshot"})
    assert fake.running() == [Running(session.pid, "psql", ["psql", "-At"])]
    assert session.readline(5) == "00000003-1"
    session.write("SELECT count(*) FROM t;\n")
    session.write(b"SELECT 2;\n")
    assert session.readline(5) is None  # the scripted end of output comes first
    assert session.readline(5) is None
    assert session.text == "SELECT count(*) FROM t;\nSELECT 2;\n"
    assert "SELECT count(*) FROM t;" in fake.sql()
    assert session.close(5) == Result(["psql", "-At"], 0, b"", "", "psql")
    assert fake.running() == [] and fake.calls[0].env == {"PGAPPNAME": "snapshot"}
    with pytest.raises(ValueError):
        session.readline(1)


def test_session_reply_queues_lines():
    fake = FakeRunner()
    fake.on("psql", reply=lambda text: ["a", "b"] if "both" in text else "one")
    with fake.start(["psql"]) as session:
        session.write("both\n")
        session.write("x\n")
        assert [session.readline(1) for _i in range(4)] == ["a", "b", "one", None]
    assert session.killed and fake.running() == []


def test_session_timeouts_failures_and_interrupts():
    fake = FakeRunner()
    fake.on("psql", lines=[TIMEOUT, Interrupted(signal.SIGINT)], fail=2, stderr="FATAL: terminated", times=1)
    session = fake.start(["psql"])
    with pytest.raises(CommandFailed) as info:
        session.readline(0.5)
    assert info.value.timed_out and info.value.reason() == "psql sent no line within 0.5 s: FATAL: terminated"
    with pytest.raises(Interrupted):
        session.readline(0.5)
    with pytest.raises(CommandFailed) as info:
        session.close(5)
    assert info.value.returncode == 2
    fake.on("psql", timeout=True, times=1)
    with pytest.raises(CommandFailed) as info:
        fake.start(["psql"]).close(3)
    assert info.value.reason() == "psql did not finish within 3 s"
    fake.on("psql", interrupt=signal.SIGTERM, effect=lambda call: call.names.append("seen"))
    with pytest.raises(Interrupted):
        fake.start(["psql"])
    assert fake.calls[-1].names == ["psql", "seen"]


def test_unscripted_session_and_no_op_runner_parts():
    fake = FakeRunner()
    session = fake.start(["mariadb"])
    session.write("SELECT 1;\n")
    assert session.readline(1) is None
    session.kill()
    session.kill()
    assert session.killed and not session.closed
    with fake.install_signal_handlers() as handlers:
        handlers.restore()
    fake.close()
    assert fake.closed
