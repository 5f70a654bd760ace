"""counter.py, the row counter of a text dump, a stage of the dump's own pipeline
(dump | counter.py ENGINE OUT | compressor): main() passes its input through
unchanged, in chunks, while it counts the rows of both engines, writing the
counts only at the end of its input; its usage errors; a sink it cannot write
fails it; and the script itself run as backup_db runs it (python -I), where
nothing but its own package is importable."""

import fcntl
import io
import json
import os
import subprocess
import sys
import threading

import pytest
from command_helpers import PG_DUMP_TEXT
from djangoops import counter

MYSQL_DUMP = (
    b"-- MariaDB dump 10.19\n"
    b"CREATE TABLE `a` (\n  `id` int\n);\n"
    b"CREATE TABLE `we``ird` (\n  `id` int\n);\n"
    b"INSERT INTO `a` VALUES (1,'x'),(2,'(y)'),\n(3,'z');\n"
    b"-- Dump completed on 2026-12-10  2:00:00\n"
)
USAGE = "usage: counter.py postgresql|mysql OUT\n"


def counts(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pass_through(tmp_path, engine, data, out):
    """counter.main() on DATA as its stdin; its exit code and what it wrote
    on (into a regular file, as its stdout)."""
    passed = tmp_path / "passed"
    sink = os.open(passed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        code = counter.main(["counter.py", engine, str(out)], source=io.BytesIO(data), sink=sink)
    finally:
        os.close(sink)
    return code, passed.read_bytes()


def test_a_postgresql_dump_is_passed_through_and_counted_into_the_output(tmp_path):
    out = tmp_path / "counts.json"
    assert pass_through(tmp_path, "postgresql", PG_DUMP_TEXT, out) == (0, PG_DUMP_TEXT)
    assert counts(out) == {"tables": {"public.a": 2, "public.b": 0}, "complete": True}


def test_a_mysql_dump_is_counted_and_a_cut_one_is_incomplete(tmp_path):
    out = tmp_path / "counts.json"
    assert pass_through(tmp_path, "mysql", MYSQL_DUMP, out) == (0, MYSQL_DUMP)
    assert counts(out) == {"tables": {"a": 3, "we`ird": 0}, "complete": True}
    cut = MYSQL_DUMP.split(b"-- Dump completed", maxsplit=1)[0]
    assert pass_through(tmp_path, "mysql", cut, out) == (0, cut)
    assert counts(out)["complete"] is False


def test_an_empty_dump_passes_nothing_and_is_incomplete(tmp_path):
    out = tmp_path / "counts.json"
    assert pass_through(tmp_path, "postgresql", b"", out) == (0, b"")
    assert counts(out) == {"tables": {}, "complete": False}


def test_lines_cut_across_chunks_are_counted_whole(tmp_path, monkeypatch):
    # Chunks of 7 bytes: nearly every line of the dump is cut across two or more.
    monkeypatch.setattr(counter, "CHUNK", 7)
    out = tmp_path / "counts.json"
    assert pass_through(tmp_path, "postgresql", PG_DUMP_TEXT, out) == (0, PG_DUMP_TEXT)
    assert counts(out) == {"tables": {"public.a": 2, "public.b": 0}, "complete": True}


def test_a_dump_larger_than_a_chunk_streams_through_pipes(tmp_path):
    # Between pipes, as in the dump's pipeline: the counter passes on each chunk
    # while it reads, and a reader downstream gets every byte in order.
    rows = b"".join(b"%d\n" % i for i in range(500_000))  # over 2 MiB: several chunks
    data = PG_DUMP_TEXT.replace(b"1\n2\n\\.\n", rows + b"\\.\n")
    assert len(data) > 2 * counter.CHUNK
    out = tmp_path / "counts.json"
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    result, received = [], []

    def run():
        with open(in_read, "rb", buffering=0) as source:
            try:
                result.append(counter.main(["counter.py", "postgresql", str(out)], source=source, sink=out_write))
            finally:
                os.close(out_write)

    def drain():
        with open(out_read, "rb") as downstream:
            received.append(downstream.read())

    stage = threading.Thread(target=run, daemon=True)
    reader = threading.Thread(target=drain, daemon=True)
    stage.start()
    reader.start()
    with open(in_write, "wb") as upstream:
        for start in range(0, len(data), 65536):
            upstream.write(data[start : start + 65536])
    stage.join(10)
    reader.join(10)
    assert result == [0]
    assert received == [data]
    assert counts(out) == {"tables": {"public.a": 500_000, "public.b": 0}, "complete": True}


def test_a_sink_that_cannot_be_written_fails_the_counter_and_writes_no_counts(tmp_path):
    out = tmp_path / "counts.json"
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        with pytest.raises(OSError):
            # A read-only descriptor: the pass-through fails, as a stage does.
            counter.main(["counter.py", "postgresql", str(out)], source=io.BytesIO(PG_DUMP_TEXT), sink=read_end)
    finally:
        os.close(read_end)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["counter.py"],
        ["counter.py", "postgresql"],
        ["counter.py", "sqlite", "out"],
        ["counter.py", "postgresql", "fifo", "out"],
        ["counter.py", "postgresql", "out", "extra"],
    ],
)
def test_usage_errors_exit_2(argv, capsys, tmp_path):
    source = io.BytesIO(PG_DUMP_TEXT)
    assert counter.main(argv, source=source, sink=-1) == 2
    assert capsys.readouterr().err == USAGE
    assert source.tell() == 0  # nothing read


def test_the_script_runs_isolated_as_backup_db_starts_it(tmp_path):
    out = tmp_path / "counts.json"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(tmp_path / "nothing")}
    done = subprocess.run(
        [sys.executable, "-I", counter.__file__, "postgresql", str(out)],
        input=PG_DUMP_TEXT,
        capture_output=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == PG_DUMP_TEXT
    assert counts(out) == {"tables": {"public.a": 2, "public.b": 0}, "complete": True}
    bad = subprocess.run([sys.executable, "-I", counter.__file__], capture_output=True, check=False)
    assert (bad.returncode, bad.stderr) == (2, USAGE.encode())


def test_the_script_fails_as_a_stage_when_what_follows_it_is_gone(tmp_path):
    # The compressor died (a full disk): the counter's stdout is a pipe no one
    # reads; it fails (it never passes the dump on as if it were stored) and
    # writes no counts.
    out = tmp_path / "counts.json"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-I", counter.__file__, "postgresql", str(out)],
            input=PG_DUMP_TEXT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode != 0
    assert b"BrokenPipeError" in done.stderr
    assert not out.exists()


def test_the_counter_widens_its_pipes_so_that_counting_overlaps_compressing(tmp_path):
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    assert fcntl.fcntl(out_write, fcntl.F_GETPIPE_SZ) < counter.PIPE_SIZE
    os.write(in_write, MYSQL_DUMP)
    os.close(in_write)
    try:
        with open(in_read, "rb", buffering=0) as source:
            assert (
                counter.main(["counter.py", "mysql", str(tmp_path / "counts.json")], source=source, sink=out_write) == 0
            )
            assert fcntl.fcntl(source.fileno(), fcntl.F_GETPIPE_SZ) == counter.PIPE_SIZE
        assert fcntl.fcntl(out_write, fcntl.F_GETPIPE_SZ) == counter.PIPE_SIZE
        assert os.read(out_read, 1 << 16) == MYSQL_DUMP
    finally:
        os.close(out_write)
        os.close(out_read)


def test_widening_leaves_what_is_not_a_pipe_alone(tmp_path, monkeypatch):
    with open(tmp_path / "file", "wb") as f:
        counter.widen(f.fileno())  # EBADF-like refusal for a file: no error
    monkeypatch.delattr(fcntl, "F_SETPIPE_SZ")  # a system without it
    read, write = os.pipe()
    try:
        counter.widen(write)
        assert fcntl.fcntl(write, 1032) < counter.PIPE_SIZE  # 1032: F_GETPIPE_SZ, left as it was
    finally:
        os.close(read)
        os.close(write)
