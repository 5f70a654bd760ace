"""backup_db: a set published only when whole (counted in the dump's snapshot, or
by the counter, a stage of the dump's pipeline, from the very stream being
stored), every failure path
leaving nothing behind and `latest` where it was, the media archive, retention,
the off-site push after the publish, and the options. Every external program
goes through the FakeRunner; the backups directory, log and metrics are real
files."""

import io
import json
import os
import signal
import sys
import types

import pytest
from command_helpers import (
    COMPRESS,
    NEW_SET,
    PG_DUMP_TEXT,
    PROJECT,
    STAMP,
    TABLES,
    first,
    install_engine,
    make_set,
    restic_rule,
    restic_snapshots,
)
from djangoops import counter, manifest, sets
from djangoops.commands import backup, common
from djangoops.errors import Exit
from djangoops.lock import Lock
from djangoops.runner import Runner

PREVIOUS = f"{PROJECT}_20261209T020000Z_daily.pgdump.zst"
# With PREVIOUS there (the same month and ISO week), the new set is a daily one.
NEXT = f"{PROJECT}_{STAMP}_daily.pgdump.zst"
TOC = (
    "; Archive created at 2026-12-10 02:00:00 UTC\n"
    "215; 1259 16390 TABLE public a shop\n"
    "216; 1259 16395 TABLE public b shop\n"
    "3300; 0 16390 TABLE DATA public a shop\n"
)
SECRET_URL = "https://hc.example/ping/0f3c9a4e-backup-secret"


@pytest.fixture
def engine(cmd, monkeypatch):
    """A FakeEngine counting in its snapshot; new sets are stamped STAMP."""
    monkeypatch.setattr(backup, "new_stamp", lambda directory, project: STAMP)
    cmd.fake.on("zstd", argv_contains=COMPRESS, stdout=b"compressed dump bytes")
    cmd.fake.on("pg_restore", stdout=TOC)
    return install_engine(monkeypatch)


@pytest.fixture
def previous(cmd):
    """A published set that `latest` points at."""
    make_set(cmd.backups, PREVIOUS, latest=True)
    return sorted([PREVIOUS, PREVIOUS + ".sha256", PREVIOUS + ".manifest.json", "latest"])


def counter_argv(call):
    """The argv of the counter stage of the dump pipeline CALL."""
    [argv] = [argv for name, argv in zip(call.names, call.argvs, strict=True) if name == "counter"]
    return argv


def run_counter(data):
    """A FakeRunner effect for the counter stage of the dump pipeline:
    counter.main() itself, fed DATA (what the dump writes into it), passing it
    on into a regular file beside OUT, which must get every byte unchanged."""

    def effect(call):
        _python, _isolated, script, engine_name, out = counter_argv(call)
        passed = out + ".passed"
        sink = os.open(passed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            assert counter.main([script, engine_name, out], source=io.BytesIO(data), sink=sink) == 0
        finally:
            os.close(sink)
        with open(passed, "rb") as f:
            assert f.read() == data

    return effect


def text_dump(cmd, monkeypatch, data=PG_DUMP_TEXT, **database):
    """Set up a plain-format (counted) backup; returns the engine's spec."""
    cmd.write_database(postgresql_format="plain", **database)
    cmd.fake.on("counter", effect=run_counter(data))
    return install_engine(monkeypatch, snapshot=False)


def integrity_test(call):
    return call.kind == "start" and call.argv[:3] == ["zstd", "-q", "-t"]


def partials(directory):
    return [name for name in os.listdir(directory) if name.endswith(".partial") or ".partial." in name]


# --- success ------------------------------------------------------------------------------------


def test_a_snapshot_backup_is_published_whole_and_latest_moved(cmd, engine):
    assert cmd.run(backup.main) == Exit.OK

    assert cmd.published() == sorted([NEW_SET, NEW_SET + ".sha256", NEW_SET + ".manifest.json", "latest"])
    assert os.readlink(cmd.backups / "latest") == NEW_SET
    assert (cmd.backups / NEW_SET).read_bytes() == b"compressed dump bytes"
    assert manifest.check_sha256(str(cmd.backups / (NEW_SET + ".sha256"))) is None
    written = manifest.Manifest.read(cmd.backups / (NEW_SET + ".manifest.json"))
    assert written.tables == TABLES
    assert written.rows == 2
    assert written.kind == "monthly"
    assert written.integer("size_bytes") == len(b"compressed dump bytes")
    assert written.text("server_version") == "16.4"
    assert written.excluded_table_data == ["django_session"]
    # Counted in the snapshot, from the archive's own table of contents.
    assert ("snapshot_counts", TOC) in engine.calls
    dump = cmd.fake.calls_to("pg_dump")[0]
    assert dump.argv == [
        ["pg_dump", "--format=custom", "--snapshot=00000003-0000001B-1", "--", "shop"],
        ["zstd", "-q", "-c", "-1", "-T0"],
    ]
    assert dump.stdout == str(cmd.backups / f".{NEW_SET}.partial")
    [test] = [call for call in cmd.fake.calls if call.kind == "start"]
    assert test.argv == ["zstd", "-q", "-t", "--", str(cmd.backups / f".{NEW_SET}.partial")]
    assert cmd.fake.sessions[0].closed
    info = cmd.lines("INFO")
    assert f'dumping database "shop" to {NEW_SET} (monthly)' in info
    assert f"latest -> {NEW_SET}" in info
    assert any(line.startswith(f"published {NEW_SET}: 21B, 2 rows, sha256 ") for line in info)
    assert info[-1].startswith("finished in 0 min ")
    assert cmd.lines("ERROR") == []
    assert cmd.metric("job_exit_code") == "0"
    assert cmd.metric("backup_size_bytes") == "21"
    assert cmd.metric("backup_rows") == "2"
    # The backup's figures name its engine; the job's series are every command's.
    assert f'djangoops_backup_size_bytes{{project="{PROJECT}",script="backup_db",engine="postgresql"}} 21' in (
        cmd.metrics().splitlines()
    )
    assert f'djangoops_job_exit_code{{project="{PROJECT}",script="backup_db"}} 0' in cmd.metrics().splitlines()
    assert int(cmd.metric("backup_published_timestamp_seconds")) > 0
    disk = os.statvfs(cmd.backups)
    # The room of db_backups/'s file system after the run (others write to it meanwhile: close, not equal).
    assert abs(int(cmd.metric("backup_disk_free_bytes")) - disk.f_bavail * disk.f_frsize) < 64 << 20
    assert int(cmd.metric("backup_disk_size_bytes")) == disk.f_blocks * disk.f_frsize
    assert partials(cmd.backups) == []


def test_a_text_dump_is_counted_by_the_counter_from_the_stream(cmd, monkeypatch):
    monkeypatch.setattr(backup, "new_stamp", lambda directory, project: STAMP)
    cmd.fake.on("zstd", argv_contains=COMPRESS, stdout=b"zstd frames")
    spec = text_dump(cmd, monkeypatch)

    assert cmd.run(backup.main) == Exit.OK

    name = f"{PROJECT}_{STAMP}_monthly.sql.zst"
    assert os.readlink(cmd.backups / "latest") == name
    assert manifest.Manifest.read(cmd.backups / (name + ".manifest.json")).tables == TABLES
    [dump] = cmd.fake.calls_to("pg_dump")
    # The counter is a stage between the dump and the compressor: it passes on
    # the very bytes being compressed.
    assert dump.kind == "pipeline"
    assert dump.names == ["pg_dump", "counter", "zstd"]
    assert dump.argv[0] == ["pg_dump", "--format=plain", "--", "shop"]
    assert dump.argv[2] == ["zstd", "-q", "-c", "-1", "-T0"]
    assert dump.stdout == str(cmd.backups / f".{name}.partial")
    assert cmd.fake.calls_to("counter") == [dump]  # no process of its own beside the pipeline
    python, isolated, script, engine_name, out = counter_argv(dump)
    assert (python, isolated, engine_name) == (sys.executable, "-I", "postgresql")
    assert script == counter.__file__ or os.path.samefile(script, counter.__file__)
    assert os.path.dirname(out) == cmd.contexts[-1].run_dir
    assert os.path.basename(out) == "counts.json"
    assert not any(call[0].startswith("snapshot") for call in spec.calls)
    assert cmd.fake.calls_to("pg_restore") == []
    # The only session is the integrity test: no counter, FIFO or tee beside the dump.
    assert [session.name for session in cmd.fake.sessions] == ["zstd"]
    assert cmd.fake.running() == []
    assert cmd.fake.calls_to("tee") == []


def test_gzip_and_the_weekday_rotation_name_the_set_by_weekday_and_prune_nothing(cmd, monkeypatch):
    monkeypatch.setattr(backup, "new_stamp", lambda directory, project: STAMP)
    cmd.fake.on("gzip", argv_contains="-c", stdout=b"gzip bytes")
    keep = {"daily": 1, "weekly": 1, "monthly": 1, "safety": 1}
    spec = text_dump(cmd, monkeypatch, compression="gzip", rotation="weekday", keep=keep)
    make_set(cmd.backups, f"{PROJECT}_20261201T020000Z_daily.sql.gz")
    make_set(cmd.backups, f"{PROJECT}_20261202T020000Z_daily.sql.gz")

    assert cmd.run(backup.main) == Exit.OK

    latest = os.readlink(cmd.backups / "latest")
    assert latest.endswith(".sql.gz")
    assert sets.kind_of(latest, PROJECT) == "weekday"
    [dump] = cmd.fake.calls_to("pg_dump")
    assert dump.argv[-1] == ["gzip", "-c"]
    assert [call.argv[:2] for call in cmd.fake.calls if call.kind == "start" and call.names == ["gzip"]] == [
        ["gzip", "-t"]
    ]
    assert (cmd.backups / f"{PROJECT}_20261201T020000Z_daily.sql.gz").exists()  # no GFS retention
    assert not any("retention" in line for line in cmd.lines("INFO"))
    assert spec.instances


def test_the_health_check_is_pinged_at_start_and_with_the_exit_code(cmd, engine):
    cmd.write_database(healthcheck_urls={"backup_db": SECRET_URL})
    assert cmd.run(backup.main) == 0
    assert cmd.pings == [(SECRET_URL, "start"), (SECRET_URL, "0")]


def test_stale_partials_are_removed_under_the_lock(cmd, engine):
    (cmd.backups / f".{PREVIOUS}.partial").write_bytes(b"half")
    (cmd.backups / ".restore.123.partial").mkdir()
    assert cmd.run(backup.main) == 0
    warnings = cmd.lines("WARN")
    assert f"removing .{PREVIOUS}.partial, left by an interrupted run" in warnings
    assert "removing .restore.123.partial, left by an interrupted run" in warnings
    assert partials(cmd.backups) == []


# --- failures: nothing published, latest where it was ---------------------------------------------


def _dump_fails(cmd, monkeypatch):
    cmd.fake.on("pg_dump", fail=1, stderr="pg_dump: error: query failed\npg_dump: detail: connection lost\n")
    return (
        Exit.DUMP_FAILED,
        "pg_dump failed (exit code 1): pg_dump: error: query failed pg_dump: detail: connection lost",
    )


def _dump_killed(cmd, monkeypatch):
    cmd.fake.on("pg_dump", signal=9)
    return Exit.DUMP_FAILED, "pg_dump failed (killed by signal 9): "


def _dump_timed_out(cmd, monkeypatch):
    cmd.fake.on("pg_dump", timeout=True, stderr="still dumping")
    return Exit.DUMP_FAILED, "pg_dump failed (it did not finish in time): still dumping"


def _compressor_fails(cmd, monkeypatch):
    first(cmd.fake, "zstd", argv_contains=COMPRESS, fail=1, stderr="zstd: error 70 : Write error")
    partial = cmd.backups / f".{NEXT}.partial"
    return Exit.DUMP_FAILED, f"writing {partial} failed: zstd: error 70 : Write error"


def _toc_unreadable(cmd, monkeypatch):
    first(cmd.fake, "pg_restore", fail=1, stderr="pg_restore: error: corrupt archive")
    return (
        Exit.DUMP_FAILED,
        "pg_restore could not read the archive's table of contents (pg_restore failed (exit code 1): "
        "pg_restore: error: corrupt archive); nothing was published",
    )


def _snapshot_incomplete(cmd, monkeypatch):
    install_engine(monkeypatch, complete=False)
    return Exit.DUMP_FAILED, "the dump is incomplete (no end-of-dump marker); nothing was published"


def _integrity_test_fails(cmd, monkeypatch):
    cmd.fake.on(integrity_test, fail=1, stderr="zstd: corrupted block detected")
    return Exit.DUMP_FAILED, "the compressed file fails its integrity test; nothing was published"


def _connection_fails(cmd, monkeypatch):
    cmd.fake.on("psql", argv_contains="SELECT 1", fail=2, stderr='psql: error: FATAL: role "shop" does not exist')
    return Exit.DB_UNAVAILABLE, 'cannot connect to database "shop"'


def _text_dump_counter_killed(cmd, monkeypatch):
    text_dump(cmd, monkeypatch)
    first(cmd.fake, "counter", signal=9)
    return Exit.DUMP_FAILED, "reading the dump back failed: "


def _text_dump_counter_fails(cmd, monkeypatch):
    cmd.write_database(postgresql_format="plain")
    install_engine(monkeypatch, snapshot=False)
    cmd.fake.on("counter", fail=1, stderr="Traceback (most recent call last):\nMemoryError")
    return (
        Exit.DUMP_FAILED,
        "reading the dump back failed: counter failed (exit code 1): Traceback (most recent call last): MemoryError",
    )


def _text_dump_compressor_fails(cmd, monkeypatch):
    # A full disk: the compressor fails, and the counter upstream of it dies of
    # the broken pipe. The writer is the cause to report.
    text_dump(cmd, monkeypatch)
    first(cmd.fake, "counter", fail=1, stderr="BrokenPipeError: [Errno 32] Broken pipe")
    first(cmd.fake, "zstd", argv_contains=COMPRESS, fail=1, stderr="zstd: error 70 : Write error")
    partial = cmd.backups / f".{PROJECT}_{STAMP}_daily.sql.zst.partial"
    return Exit.DUMP_FAILED, f"writing {partial} failed: zstd: error 70 : Write error"


def _text_dump_counts_unreadable(cmd, monkeypatch):
    cmd.write_database(postgresql_format="plain")
    install_engine(monkeypatch, snapshot=False)
    return Exit.DUMP_FAILED, "reading the dump back failed: the counts are unreadable ("


def _text_dump_without_end_marker(cmd, monkeypatch):
    text_dump(cmd, monkeypatch, data=PG_DUMP_TEXT.split(b"--\n-- PostgreSQL database dump complete", maxsplit=1)[0])
    return Exit.DUMP_FAILED, "the dump is incomplete (no end-of-dump marker); nothing was published"


def _media_tar_fails(cmd, monkeypatch):
    cmd.media.mkdir()
    cmd.write_database(media_dir=str(cmd.media))
    cmd.fake.on("tar", argv_contains="-cf", fail=2, stderr="tar: ./private: Cannot open: Permission denied")
    return (
        Exit.DUMP_FAILED,
        f"archiving {cmd.media} failed (tar exit 2): tar: ./private: Cannot open: Permission denied",
    )


def _media_compressor_fails(cmd, monkeypatch):
    cmd.media.mkdir()
    cmd.write_database(media_dir=str(cmd.media))
    first(cmd.fake, lambda call: call.names[0] == "tar", stage="zstd", fail=1, stderr="zstd: write error")
    partial = cmd.backups / f".{sets.media_name_of(NEXT)}.partial"
    return Exit.DUMP_FAILED, f"writing {partial} failed: zstd: write error"


def _media_integrity_fails(cmd, monkeypatch):
    cmd.media.mkdir()
    cmd.write_database(media_dir=str(cmd.media))
    cmd.fake.on(lambda call: call.kind == "run" and call.argv[:3] == ["zstd", "-q", "-t"], fail=1)
    return Exit.DUMP_FAILED, "the media archive fails its integrity test; nothing was published"


def _media_dir_missing(cmd, monkeypatch):
    cmd.write_database(media_dir=str(cmd.media))
    return Exit.CONFIG, f"the media directory {cmd.media} (db_backup_media_dir) does not exist"


def _no_room(cmd, monkeypatch):
    cmd.write_database(min_free_mb=10**9)
    return Exit.NO_SPACE, "only "


def _interrupted(cmd, monkeypatch):
    cmd.fake.on("pg_dump", interrupt=signal.SIGTERM)
    return Exit.INTERRUPTED, "interrupted by SIGTERM: stopped"


FAILURES = [
    _dump_fails,
    _dump_killed,
    _dump_timed_out,
    _compressor_fails,
    _toc_unreadable,
    _snapshot_incomplete,
    _integrity_test_fails,
    _connection_fails,
    _text_dump_counter_killed,
    _text_dump_counter_fails,
    _text_dump_compressor_fails,
    _text_dump_counts_unreadable,
    _text_dump_without_end_marker,
    _media_tar_fails,
    _media_compressor_fails,
    _media_integrity_fails,
    _media_dir_missing,
    _no_room,
    _interrupted,
]


@pytest.mark.parametrize("failure", FAILURES, ids=[f.__name__.strip("_") for f in FAILURES])
def test_a_failure_publishes_nothing_and_leaves_latest(cmd, engine, previous, monkeypatch, failure):
    before = (cmd.backups / PREVIOUS).read_bytes()
    code, message = failure(cmd, monkeypatch)

    assert cmd.run(backup.main) == code

    errors = cmd.lines("ERROR")
    assert any(line.startswith(message) for line in errors), errors
    assert errors[-1].startswith(f"failed with exit code {int(code)} after ")
    assert cmd.published() == previous
    assert os.readlink(cmd.backups / "latest") == PREVIOUS
    assert (cmd.backups / PREVIOUS).read_bytes() == before
    assert partials(cmd.backups) == []
    assert cmd.metric("job_exit_code") == str(int(code))
    assert cmd.metric("backup_size_bytes") is None  # no figures of a backup that was not taken
    assert not any(line.startswith("published") for line in cmd.lines("INFO"))


def test_a_failed_dump_abandons_the_snapshot(cmd, engine, previous, monkeypatch):
    _dump_fails(cmd, monkeypatch)
    assert cmd.run(backup.main) == Exit.DUMP_FAILED
    assert ("snapshot_abandon", "00000003-0000001B-1") in engine.calls
    assert not any(call[0] == "snapshot_counts" for call in engine.calls)
    assert cmd.fake.calls_to("pg_restore") == []


def test_an_unreadable_table_of_contents_abandons_the_snapshot(cmd, engine, monkeypatch):
    _toc_unreadable(cmd, monkeypatch)
    assert cmd.run(backup.main) == Exit.DUMP_FAILED
    assert ("snapshot_abandon", "00000003-0000001B-1") in engine.calls


def test_a_failed_text_dump_is_the_dumps_failure_and_leaves_no_counter_running(cmd, monkeypatch, engine, previous):
    text_dump(cmd, monkeypatch)
    _code, message = _dump_fails(cmd, monkeypatch)
    assert cmd.run(backup.main) == Exit.DUMP_FAILED
    # The counter, a stage of the failed pipeline, is not the cause to report.
    assert cmd.lines("ERROR")[0] == message
    [dump] = cmd.fake.calls_to("pg_dump")
    assert dump.names == ["pg_dump", "counter", "zstd"]
    # Nothing of the counter outlives the pipeline: no session to wait for or kill.
    assert cmd.fake.sessions == []
    assert cmd.fake.running() == []
    assert cmd.published() == previous
    assert partials(cmd.backups) == []


def test_a_dump_that_fails_the_connection_check_dumps_nothing(cmd, engine, monkeypatch):
    _connection_fails(cmd, monkeypatch)
    assert cmd.run(backup.main) == Exit.DB_UNAVAILABLE
    assert cmd.fake.calls_to("pg_dump") == []


def test_the_free_space_refusal_names_what_is_needed(cmd, engine):
    assert cmd.run(backup.main, ["--min-free-mb", str(10**9)]) == Exit.NO_SPACE
    [error, _last] = cmd.lines("ERROR")
    assert error.endswith(f"a backup needs {10**9} MiB (db_backup_min_free_mb, or 1.5 times the newest backup set)")
    assert cmd.fake.calls_to("pg_dump") == []


def test_a_write_failure_names_a_full_file_system(cmd, engine, previous, monkeypatch):
    _compressor_fails(cmd, monkeypatch)
    real = os.statvfs

    def statvfs(path):
        if os.fspath(path) == str(cmd.backups):
            return types.SimpleNamespace(f_bavail=100, f_frsize=4096)  # 400 KiB: under 1 MiB
        return real(path)

    monkeypatch.setattr(sets.os, "statvfs", statvfs)
    assert cmd.run(backup.main) == Exit.DUMP_FAILED
    mount = common.mount_point(str(cmd.backups))
    assert f"Write error (no space left on {mount})" in cmd.log()
    assert os.readlink(cmd.backups / "latest") == PREVIOUS


def test_a_dump_failure_on_a_full_disk_says_so(cmd, engine, monkeypatch):
    _dump_fails(cmd, monkeypatch)
    monkeypatch.setattr(sets, "free_kb", lambda directory: 0)
    assert cmd.run(backup.main) == Exit.DUMP_FAILED
    assert "connection lost (no space left on " in cmd.log()


# --- media ----------------------------------------------------------------------------------------


def media_setup(cmd):
    cmd.media.mkdir()
    (cmd.media / "a.jpg").write_bytes(b"jpeg")
    cmd.write_database(media_dir=str(cmd.media))
    cmd.fake.on("tar", argv_contains="-tf", stdout=b"./\n./a.jpg\n./sub/\n./sub/b.png\n./c.pdf\n")


def test_the_media_archive_is_published_with_its_file_count(cmd, engine):
    media_setup(cmd)
    assert cmd.run(backup.main) == Exit.OK
    media = sets.media_name_of(NEW_SET)
    assert media in cmd.published()
    written = manifest.Manifest.read(cmd.backups / (NEW_SET + ".manifest.json"))
    assert written.integer("media_files") == 3
    assert written.media_file == media
    assert manifest.check_sha256(str(cmd.backups / (NEW_SET + ".sha256"))) is None
    assert len((cmd.backups / (NEW_SET + ".sha256")).read_text().splitlines()) == 2
    [archive] = [call for call in cmd.fake.calls_to("tar") if "-cf" in call.argv[0]]
    assert archive.argv[0] == ["tar", "-C", str(cmd.media), "-cf", "-", "."]
    assert archive.ok_codes[0] == (0, 1)
    assert f"archiving {cmd.media} to {media}" in cmd.lines("INFO")
    assert cmd.lines("WARN") == []


def test_media_changed_while_archived_is_a_warning_not_a_failure(cmd, engine):
    media_setup(cmd)
    cmd.fake.on("tar", argv_contains="-cf", returncode=1, stderr="tar: ./a.jpg: file changed as we read it\n")
    assert cmd.run(backup.main) == Exit.OK
    assert cmd.lines("WARN") == ["media files changed while being archived: tar: ./a.jpg: file changed as we read it"]
    assert sets.media_name_of(NEW_SET) in cmd.published()


def test_a_media_archive_that_cannot_be_listed_fails_the_dump(cmd, engine, previous):
    media_setup(cmd)
    first(cmd.fake, "tar", argv_contains="-tf", fail=2, stderr="tar: This does not look like a tar archive")
    assert cmd.run(backup.main) == Exit.DUMP_FAILED
    media = sets.media_name_of(NEXT)
    [error, last] = cmd.lines("ERROR")
    assert error == (
        f"the media archive {media} cannot be listed (tar failed (exit code 2): "
        "tar: This does not look like a tar archive)"
    )
    assert last.startswith("failed with exit code 7 after ")
    assert cmd.published() == previous
    assert os.readlink(cmd.backups / "latest") == PREVIOUS
    assert partials(cmd.backups) == []
    assert cmd.metric("job_exit_code") == "7"


# --- retention ------------------------------------------------------------------------------------


def test_retention_removes_the_oldest_beyond_keep_after_the_publish(cmd, engine):
    cmd.write_database(keep={"daily": 2, "weekly": 1, "monthly": 1, "safety": 1})
    for name in (
        f"{PROJECT}_20261201T020000Z_monthly.pgdump.zst",
        f"{PROJECT}_20261207T020000Z_weekly.pgdump.zst",
        f"{PROJECT}_20261208T020000Z_daily.pgdump.zst",
        f"{PROJECT}_20261209T020000Z_daily.pgdump.zst",
        f"{PROJECT}_20261109T020000Z_safety.pgdump.zst",
        f"{PROJECT}_20261108T020000Z_safety.pgdump.zst",
    ):
        make_set(cmd.backups, name)
    other = "shop2_20261101T020000Z_daily.pgdump.zst"
    make_set(cmd.backups, other, project="shop2")

    assert cmd.run(backup.main) == Exit.OK

    remaining = sets.list_sets(str(cmd.backups), PROJECT)
    assert remaining == [
        NEXT,
        f"{PROJECT}_20261209T020000Z_daily.pgdump.zst",
        f"{PROJECT}_20261207T020000Z_weekly.pgdump.zst",
        f"{PROJECT}_20261201T020000Z_monthly.pgdump.zst",
        # Safety backups are the restore's to prune, never the backup's.
        f"{PROJECT}_20261109T020000Z_safety.pgdump.zst",
        f"{PROJECT}_20261108T020000Z_safety.pgdump.zst",
    ]
    assert not (cmd.backups / f"{PROJECT}_20261208T020000Z_daily.pgdump.zst.sha256").exists()
    assert (cmd.backups / other).exists()
    assert f"retention: removing {PROJECT}_20261208T020000Z_daily.pgdump.zst (daily, keeping 2)" in cmd.lines("INFO")


def test_retention_never_removes_latest_nor_a_protected_set(cmd):
    names = [f"{PROJECT}_2026120{day}T020000Z_daily.pgdump.zst" for day in range(1, 6)]
    for name in names:
        make_set(cmd.backups, name)
    sets.point_latest_at(str(cmd.backups), names[0])  # the oldest, as after restoring it
    database = types.SimpleNamespace(keep=types.SimpleNamespace(daily=1, weekly=1, monthly=1, safety=1))
    ctx = cmd.context("backup_db")

    backup.prune(ctx, database, ("daily",), protected=(names[1],))

    assert sets.list_sets(str(cmd.backups), PROJECT) == [names[4], names[1], names[0]]


def test_a_set_retention_cannot_remove_is_a_warning_not_a_failed_backup(cmd, engine, monkeypatch):
    cmd.write_database(keep={"daily": 1, "weekly": 1, "monthly": 1, "safety": 1})
    old = [f"{PROJECT}_2026120{day}T020000Z_daily.pgdump.zst" for day in (8, 9)]
    for name in old:
        make_set(cmd.backups, name)
    remove_set = sets.remove_set

    def refuse_one(directory, name):
        if name == old[0]:
            raise PermissionError(13, "Permission denied")
        remove_set(directory, name)

    monkeypatch.setattr(sets, "remove_set", refuse_one)

    assert cmd.run(backup.main) == Exit.OK

    assert cmd.lines("WARN") == [f"retention: could not remove {old[0]}: Permission denied"]
    assert sets.list_sets(str(cmd.backups), PROJECT) == [NEXT, old[0]]
    assert os.readlink(cmd.backups / "latest") == NEXT


def test_retention_that_cannot_be_worked_out_removes_nothing(cmd):
    make_set(cmd.backups, f"{PROJECT}_20261201T020000Z_daily.pgdump.zst")
    make_set(cmd.backups, f"{PROJECT}_20261202T020000Z_daily.pgdump.zst")
    database = types.SimpleNamespace(keep=types.SimpleNamespace(daily=0, weekly=1, monthly=1, safety=1))
    backup.prune(cmd.context("backup_db"), database, ("daily",))
    assert len(sets.list_sets(str(cmd.backups), PROJECT)) == 2
    assert cmd.lines("WARN") == ["retention: could not work out what to remove; nothing was removed"]


# --- off-site after the publish ---------------------------------------------------------------------


def test_an_offsite_lock_timing_out_after_the_publish_exits_14_with_the_metrics(cmd, engine, previous):
    cmd.write_offsite(repositories=["nas"])
    other_run = Lock(cmd.backups / ".offsite.lock", 0).acquire()

    assert cmd.run(backup.main, ["--lock-wait", "0"]) == Exit.OFFSITE_FAILED

    assert other_run.held
    assert os.readlink(cmd.backups / "latest") == NEXT  # published all the same
    assert NEXT in cmd.published()
    [error, last] = cmd.lines("ERROR")
    assert error == (
        f"another run holds the lock {cmd.backups / '.offsite.lock'}; gave up after waiting 0 s; the local backup "
        f"{NEXT} is published, and the next run (or push_db_backups.sh) pushes every set still missing"
    )
    assert last.startswith("failed with exit code 14 after")
    assert cmd.metric("job_exit_code") == "14"
    assert cmd.metric("backup_size_bytes") == "21"
    assert int(cmd.metric("backup_published_timestamp_seconds")) > 0
    assert cmd.fake.calls_to("restic") == []


def test_an_offsite_lock_that_cannot_be_opened_is_not_taken_as_locked(cmd, engine):
    cmd.write_offsite(repositories=["nas"])
    (cmd.backups / ".offsite.lock").mkdir()
    assert cmd.run(backup.main) == Exit.CONFIG
    assert "cannot open the lock file" in cmd.lines("ERROR")[0]
    assert os.readlink(cmd.backups / "latest") == NEW_SET


def test_the_new_set_is_pushed_off_site_under_the_offsite_lock(cmd, engine, held_locks):
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=restic_snapshots())
    summary = json.dumps({"message_type": "summary", "data_added": 2048}).encode()
    cmd.fake.on(restic_rule("nas", "backup"), stdout=summary)

    assert cmd.run(backup.main) == Exit.OK

    [push] = [call for call in cmd.fake.calls_to("restic") if "backup" in call.argv]
    assert push.argv[-1] == NEW_SET
    assert f"set={NEW_SET}" in push.argv
    assert push.cwd == str(cmd.backups / ".offsite-push")  # hard links of the set: the retention may remove it
    assert any(line.startswith(f"off-site repository nas: pushed {NEW_SET} (2.0KB new") for line in cmd.lines("INFO"))
    locks = [os.path.basename(item.path) for item in held_locks]
    assert locks == [".lock", ".offsite.lock"]
    assert not held_locks[0].held  # the backups lock was let go before the push
    assert (cmd.metrics_dir / f"djangoops_{PROJECT}_offsite_nas.prom").exists()


def test_a_failed_push_exits_14_with_the_set_published(cmd, engine):
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), fail=1, stderr="Fatal: unable to open repository")
    cmd.fake.on("ssh", fail=0)
    assert cmd.run(backup.main) == Exit.OFFSITE_FAILED
    assert os.readlink(cmd.backups / "latest") == NEW_SET
    assert cmd.metric("backup_size_bytes") == "21"


def test_no_offsite_skips_the_push(cmd, engine):
    cmd.write_offsite(repositories=["nas"])
    assert cmd.run(backup.main, ["--no-offsite"]) == Exit.OK
    assert cmd.fake.calls_to("restic") == []
    assert not (cmd.backups / ".offsite.lock").exists()


# --- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-free-mb", "lots"], "--min-free-mb takes a whole number, got 'lots'"),
        (["--min-free-mb", "-5"], "--min-free-mb takes a whole number, got '-5'"),
        (["--lock-wait", "soon"], "the lock wait takes whole seconds, got 'soon'"),
        (["--lock-wait", "1.5"], "the lock wait takes whole seconds, got '1.5'"),
        # Digits str.isdigit() takes and int() refuses.
        (["--min-free-mb", "²"], "--min-free-mb takes a whole number, got '²'"),
        (["--lock-wait", "²"], "the lock wait takes whole seconds, got '²'"),
        # Digits int() takes but are not ASCII.
        (["--min-free-mb", "\u0661\u0660"], "--min-free-mb takes a whole number, got '\u0661\u0660'"),
    ],
)
def test_bad_option_values_exit_2_before_anything_starts(cmd, engine, args, message):
    assert cmd.run(backup.main, args) == Exit.USAGE
    assert cmd.lines("ERROR") == [message]  # no "failed with exit code" line: the run never started
    assert cmd.fake.calls == []
    assert cmd.metrics() == ""
    assert not (cmd.backups / ".lock").exists()
    assert not (cmd.backups / ".lock").exists()


def test_unknown_arguments_and_help(cmd, engine, capsys):
    assert cmd.run(backup.main, ["--frobnicate"]) == Exit.USAGE
    assert "Usage: backup_db.sh" in capsys.readouterr().err
    assert cmd.run(backup.main, ["--help"]) == Exit.OK
    assert capsys.readouterr().out.startswith("Usage: backup_db.sh")
    assert cmd.log() == ""  # Stop writes no log line
    assert cmd.fake.calls == []


def test_quiet_writes_nothing_on_stderr_but_the_log(cmd, engine, capsys):
    ctx = cmd.context("backup_db")
    ctx.log.stderr = "all"
    from djangoops.context import run_command

    assert run_command(ctx, backup.main, ["-q"]) == 0
    assert capsys.readouterr().err == ""
    assert "published" in cmd.log()


def test_a_held_backups_lock_exits_5(cmd, engine):
    Lock(cmd.backups / ".lock", 0).acquire()
    assert cmd.run(backup.main) == Exit.LOCKED
    assert cmd.fake.calls == []


def test_min_free_mb_on_the_command_line_overrides_the_values(cmd, engine):
    cmd.write_database(min_free_mb=10**9)
    assert cmd.run(backup.main, ["--min-free-mb", "0"]) == Exit.OK


# --- pieces -----------------------------------------------------------------------------------------


def test_new_stamp_waits_for_a_second_no_set_has(tmp_path):
    clock = iter([1796868000.0, 1796868001.0])
    slept = []
    (tmp_path / f"{PROJECT}_20261210T020000Z_daily.pgdump.zst").write_bytes(b"")
    stamp = backup.new_stamp(str(tmp_path), PROJECT, clock=lambda: next(clock), sleep=slept.append)
    assert stamp == "20261210T020001Z"
    assert slept == [1]
    assert backup.new_stamp(str(tmp_path / "missing"), PROJECT, clock=lambda: 1796868000.0) == STAMP


def test_dump_failure_names_the_stage_at_fault(cmd):
    from djangoops.runner import CommandFailed

    ctx = cmd.context("backup_db")
    engine = types.SimpleNamespace(dump_name="mariadb-dump")
    gzip = backup.dump_failure(ctx, engine, CommandFailed("gzip", ["gzip"], 1, "gzip: stdout: No space"), "/p")
    assert gzip.message == "writing /p failed: gzip: stdout: No space"
    dump = backup.dump_failure(ctx, engine, CommandFailed("mariadb-dump", ["x"], 2, "a\nb\nc\nd"), "/p")
    assert dump.code == Exit.DUMP_FAILED
    assert dump.message == "mariadb-dump failed (exit code 2): b c d"


@pytest.mark.parametrize("how", ["dies_before_reading", "fails_after_reading"])
def test_a_failing_counter_stage_fails_the_backup_with_exit_7_and_publishes_nothing(
    cmd,
    monkeypatch,
    previous,
    how,
):
    """Real processes: the dump (printf), the counter (counter.py, or /bin/false
    for one that dies before reading anything) and the compressor (cat). The
    counter is a stage of the pipeline: its failure fails the backup, and
    nothing ever waits for it (an alarm turns a hang into a failure)."""
    cmd.write_database(postgresql_format="plain")
    monkeypatch.setattr(backup, "new_stamp", lambda directory, project: STAMP)
    monkeypatch.setattr(common, "compress_stage", lambda database, offsite: backup.Stage(["cat"], name="zstd"))
    engine = types.SimpleNamespace(
        dump_name="pg_dump",
        counts_in_snapshot=lambda: False,
        dump_stage=lambda database: backup.Stage(["printf", "%s", PG_DUMP_TEXT.decode()], name="pg_dump"),
    )
    if how == "dies_before_reading":
        monkeypatch.setattr(sys, "executable", "/bin/false")

    def command(context, args):
        context.runner = Runner(tmpdir=context.run_dir, kill_after=0.2)
        if how == "fails_after_reading":
            # Where it writes its counts, a directory: it fails at the end of its input.
            os.mkdir(os.path.join(context.run_dir, "counts.json"))
        database, offsite = common.load_settings(context)
        context.start_run()
        backup.take(context, database, offsite, engine, "shop")

    def hung(signum, frame):
        raise TimeoutError("the dump pipeline hung")

    previous_handler = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 10)
    try:
        code = cmd.run(command)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)

    assert code == Exit.DUMP_FAILED, cmd.lines("ERROR")
    [error, last] = cmd.lines("ERROR")
    assert error.startswith("reading the dump back failed: ")
    if how == "fails_after_reading":
        assert "IsADirectoryError" in error
    assert last.startswith("failed with exit code 7 after ")
    assert cmd.metric("job_exit_code") == "7"
    assert cmd.published() == previous
    assert os.readlink(cmd.backups / "latest") == PREVIOUS
    assert partials(cmd.backups) == []
    assert not any(line.startswith("published") for line in cmd.lines("INFO"))
