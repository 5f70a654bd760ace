"""The log lines, byte for byte as common.sh's log() wrote them, and where
they go under each stderr policy."""

import os
import pathlib
import stat
import sys
import time

import pytest

ENGINE = pathlib.Path(__file__).resolve().parents[1]
if str(ENGINE) not in sys.path:
    sys.path.insert(0, str(ENGINE))

from djangoops import log  # noqa: E402

# 2026-12-06T08:00:00Z
T0 = 1796544000.0


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make(tmp_path, **kwargs):
    kwargs.setdefault("pid", 1234)
    kwargs.setdefault("clock", lambda: T0)
    return log.Log("backup_db", tmp_path / "backup_db.log", **kwargs)


def test_line_format_matches_common_sh(tmp_path, utc, capsys):
    out = make(tmp_path)
    out.info("message")
    out.warn("careful")
    out.error("broken")
    out.out("a line of the job")
    assert (tmp_path / "backup_db.log").read_text() == (
        "2026-12-06T08:00:00+0000 backup_db[1234] INFO  message\n"
        "2026-12-06T08:00:00+0000 backup_db[1234] WARN  careful\n"
        "2026-12-06T08:00:00+0000 backup_db[1234] ERROR broken\n"
        "2026-12-06T08:00:00+0000 backup_db[1234] OUT   a line of the job\n"
    )
    # stderr="all" by default: every line, the same text.
    assert capsys.readouterr().err == (tmp_path / "backup_db.log").read_text()


def test_local_time_and_offset(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        line = make(tmp_path).format("INFO", "x")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == "2026-12-06T09:00:00+0100 backup_db[1234] INFO  x"


def test_default_pid_and_clock(tmp_path):
    out = log.Log("job", tmp_path / "job.log", stderr="none")
    before = time.time()
    out.info("now")
    text = (tmp_path / "job.log").read_text()
    assert f" job[{os.getpid()}] INFO  now\n" in text
    stamp = time.mktime(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 2 <= stamp <= time.time() + 1


def test_appends_and_creates_private_file(tmp_path, utc):
    path = tmp_path / "backup_db.log"
    path.write_text("an older line\n")
    make(tmp_path, stderr="none").info("new")
    assert path.read_text().splitlines() == ["an older line", "2026-12-06T08:00:00+0000 backup_db[1234] INFO  new"]
    path.unlink()
    make(tmp_path, stderr="none").info("again")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("stderr", "quiet", "expected"),
    [
        ("all", False, ["INFO", "WARN", "ERROR", "OUT"]),
        ("problems", False, ["WARN", "ERROR"]),
        ("none", False, []),
        ("all", True, []),
        ("problems", True, []),
        # An unknown policy shows everything, as common.sh's case did.
        ("everything", False, ["INFO", "WARN", "ERROR", "OUT"]),
    ],
)
def test_stderr_policy(tmp_path, capsys, stderr, quiet, expected):
    out = make(tmp_path, stderr=stderr, quiet=quiet)
    out.info("i")
    out.warn("w")
    out.error("e")
    out.out("o")
    shown = [line.split()[2] for line in capsys.readouterr().err.splitlines()]
    assert shown == expected
    # The file has every line whatever the policy.
    assert len((tmp_path / "backup_db.log").read_text().splitlines()) == 4


def test_unwritable_log_never_raises(tmp_path, capsys):
    out = log.Log("x", tmp_path / "missing" / "x.log", pid=1, clock=lambda: T0)
    out.error("still shown")
    assert "ERROR still shown" in capsys.readouterr().err


def test_write_failure_never_raises(tmp_path, monkeypatch, capsys):
    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log.os, "write", full)
    make(tmp_path).info("disk full")
    assert "INFO  disk full" in capsys.readouterr().err


def test_no_log_file(tmp_path, capsys):
    log.Log("x", None, pid=1, clock=lambda: T0).warn("only stderr")
    assert "WARN  only stderr" in capsys.readouterr().err


def test_broken_stderr_never_raises(tmp_path, monkeypatch):
    class Broken:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Broken())
    make(tmp_path).error("cron's pipe is gone")
    assert "cron's pipe is gone" in (tmp_path / "backup_db.log").read_text()


def test_undecodable_bytes_reach_the_file(tmp_path):
    # Output decoded with surrogateescape keeps its original bytes.
    make(tmp_path, stderr="none").out(b"caf\xe9".decode("utf-8", "surrogateescape"))
    assert (tmp_path / "backup_db.log").read_bytes().endswith(b"OUT   caf\xe9\n")


def test_lines_keeps_the_last_non_empty_lines(tmp_path, utc):
    out = make(tmp_path, stderr="none")
    text = "".join(f"line {n}\n" for n in range(1, 26)) + "\n"
    out.lines("ERROR", text)
    logged = [line.split(" ", 3)[3] for line in (tmp_path / "backup_db.log").read_text().splitlines()]
    # tail -n 20 counts the empty last line, which is then skipped.
    assert logged == [f"line {n}" for n in range(7, 26)]


def test_lines_variants(tmp_path):
    out = make(tmp_path, stderr="none")
    out.lines("WARN", b"one\n\n  \ntwo", last=None)
    out.lines("INFO", "skipped entirely", last=0)
    out.lines("INFO", "")
    out.lines("INFO", "a\nb\nc\n", last=2)
    logged = [line.split(" ", 2)[2] for line in (tmp_path / "backup_db.log").read_text().splitlines()]
    assert logged == ["WARN  one", "WARN    ", "WARN  two", "INFO  b", "INFO  c"]


def test_hide_redacts_every_line(tmp_path, capsys):
    out = make(tmp_path)
    out.hide("https://hc.example/ping/secret-key", "", None)
    out.warn("ping https://hc.example/ping/secret-key/start failed")
    text = (tmp_path / "backup_db.log").read_text()
    assert "secret-key" not in text
    assert text.endswith("WARN  ping [redacted]/start failed\n")
    assert "secret-key" not in capsys.readouterr().err


def test_redact():
    assert log.redact("user:pw pw", ["pw", "", None]) == "user:[redacted] [redacted]"
    # The longer secret is hidden whole, not cut up by the shorter one.
    assert log.redact("key abcdef", ["abc", "abcdef"]) == "key [redacted]"
    assert log.redact("nothing", []) == "nothing"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0"), (12.39, "12.3"), (12.3, "12.3"), (0.05, "0.0"), (59.99999999, "60.0"), (3600, "3600.0"), (-1, "0.0")],
)
def test_format_seconds(seconds, text):
    assert log.format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 min 0 s"), (123.9, "2 min 3 s"), (59.99999999, "1 min 0 s"), (3725, "62 min 5 s"), (-3, "0 min 0 s")],
)
def test_human_duration(seconds, text):
    assert log.human_duration(seconds) == text


def test_finished_lines(tmp_path, utc):
    out = make(tmp_path, stderr="none")
    out.finished(0, 123.45)
    out.finished(7, 5.0)
    assert (tmp_path / "backup_db.log").read_text() == (
        "2026-12-06T08:00:00+0000 backup_db[1234] INFO  finished in 2 min 3 s (123.4 s)\n"
        "2026-12-06T08:00:00+0000 backup_db[1234] ERROR failed with exit code 7 after 0 min 5 s (5.0 s)\n"
    )
