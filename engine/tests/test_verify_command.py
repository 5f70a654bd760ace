"""verify_db: a test restore into the scratch database compared with the set's
manifest; the scratch database dropped at exit whatever happened; the media
archive's file count; --from a repository (the set downloaded, checked, verified
and kept nowhere); the options. The engine is a FakeEngine whose count query
goes through the FakeRunner."""

import os

import pytest
from command_helpers import (
    PGBACKREST_VERIFY_OK,
    PROJECT,
    TABLES,
    RootSide,
    counts_text,
    first,
    held_offsite,
    install_engine,
    make_set,
    restic_rule,
    snapshot_id,
)
from djangoops import pitr, sets
from djangoops.commands import common, verify
from djangoops.errors import Exit, Failure
from djangoops.lock import Lock
from djangoops.runner import CommandFailed

NAME = f"{PROJECT}_20251209T020000Z_daily.pgdump.zst"
OLDER = f"{PROJECT}_20251208T020000Z_daily.pgdump.zst"
SCRATCH = "djangoops_verify_shop"


@pytest.fixture
def engine(cmd, monkeypatch):
    make_set(cmd.backups, OLDER)
    make_set(cmd.backups, NAME, latest=True)
    cmd.fake.on("psql", argv_contains="SELECT count", stdout=counts_text(TABLES))
    return install_engine(monkeypatch)


def run(cmd, *args):
    return cmd.run(verify.main, list(args), script="verify_db")


def info(cmd):
    return cmd.lines("INFO", "verify_db")


def errors(cmd):
    return cmd.lines("ERROR", "verify_db")


def test_a_matching_restore_is_verified_and_the_scratch_database_dropped(cmd, engine):
    assert run(cmd) == Exit.OK

    path = str(cmd.backups / NAME)
    assert engine.calls == [
        ("check_tools",),
        ("check_connection",),
        ("drop_database", SCRATCH),
        ("create_database", SCRATCH),
        ("load", path, SCRATCH, None),
        ("count_rows", SCRATCH),
        ("drop_database", SCRATCH),  # at exit
    ]
    lines = info(cmd)
    assert f"checked {NAME}: sha256 and compression are good" in lines
    assert f"checked {SCRATCH} against the manifest: 2 tables, 2 rows, as in the manifest" in lines
    assert any(
        line.startswith(f"verified {NAME} by a test restore in ")
        and line.endswith(": 2 tables, 2 rows, as in the manifest")
        for line in lines
    )
    assert lines[-1].startswith("finished in")
    assert cmd.metric("job_exit_code", "verify_db") == "0"
    # The set's compression was tested before anything read it.
    assert ["zstd", "-q", "-t", "--", path] in cmd.fake.argvs()
    assert cmd.published() == sorted(
        [OLDER, OLDER + ".sha256", OLDER + ".manifest.json", NAME, NAME + ".sha256", NAME + ".manifest.json", "latest"]
    )


def test_a_named_set_is_verified_rather_than_latest(cmd, engine):
    assert run(cmd, OLDER) == Exit.OK
    assert ("load", str(cmd.backups / OLDER), SCRATCH, None) in engine.calls


def test_a_mismatch_exits_10_with_each_difference_logged(cmd, engine):
    first(cmd.fake, "psql", argv_contains="SELECT count", stdout=counts_text({"public.a": 1, "public.c": 4}))

    assert run(cmd) == Exit.VERIFY_MISMATCH

    assert errors(cmd)[:4] == [
        "table public.a: 1 rows restored, the manifest says 2",
        "table public.b is in the backup's manifest but missing after the restore",
        "table public.c appeared after the restore but is not in the manifest",
        f"{NAME} does not restore to what its manifest describes",
    ]
    assert engine.calls[-1] == ("drop_database", SCRATCH)
    assert cmd.metric("job_exit_code", "verify_db") == "10"


def test_a_failing_count_query_is_exit_4_not_a_mismatch(cmd, engine):
    first(cmd.fake, "psql", argv_contains="SELECT count", fail=2, stderr="psql: error: server closed the connection")

    assert run(cmd) == Exit.DB_UNAVAILABLE

    assert errors(cmd)[0].startswith(f'counting the rows of database "{SCRATCH}" failed: psql failed (exit code 2)')
    assert not any("does not restore" in line for line in errors(cmd))
    assert engine.calls[-1] == ("drop_database", SCRATCH)


def test_a_failed_load_exits_with_its_code_and_still_drops_the_scratch_database(cmd, monkeypatch):
    make_set(cmd.backups, NAME, latest=True)
    spec = install_engine(monkeypatch, load_failure=Failure(Exit.RESTORE_FAILED, "pg_restore failed: bad block"))

    assert run(cmd) == Exit.RESTORE_FAILED

    assert errors(cmd)[0] == "pg_restore failed: bad block"
    assert spec.calls[-1] == ("drop_database", SCRATCH)
    assert [call for call in spec.calls if call[0] == "count_rows"] == []


def test_a_scratch_database_that_cannot_be_dropped_is_a_warning(cmd, engine, monkeypatch):
    engine_class = common.ENGINES["postgresql"]

    def drop(self, name):
        engine.calls.append(("drop_database", name))
        if engine.calls.count(("drop_database", name)) > 1:  # the drop at exit
            raise CommandFailed("psql", ["psql"], 1, "ERROR: database is being accessed by other users")

    monkeypatch.setattr(engine_class, "drop_database", drop)

    assert run(cmd) == Exit.OK

    assert cmd.lines("WARN", "verify_db") == [
        f"could not drop the scratch database {SCRATCH}: psql failed (exit code 1): "
        "ERROR: database is being accessed by other users"
    ]
    assert engine.calls[-1] == ("drop_database", SCRATCH)


def test_the_media_archive_file_count_is_checked(cmd, monkeypatch):
    make_set(cmd.backups, NAME, media=b"media archive", media_files=2, latest=True)
    cmd.fake.on("psql", argv_contains="SELECT count", stdout=counts_text(TABLES))
    cmd.fake.on("tar", argv_contains="-tf", stdout=b"./\n./a.jpg\n./b/\n./b/c.png\n")
    install_engine(monkeypatch)

    assert run(cmd) == Exit.OK

    media = sets.media_name_of(NAME)
    assert f"media archive {media}: 2 files, as in the manifest" in info(cmd)
    [listing] = cmd.fake.calls_to("tar")
    assert listing.argv == [["zstd", "-q", "-d", "-c", "--", str(cmd.backups / media)], ["tar", "-tf", "-"]]


def test_a_media_file_count_mismatch_exits_10(cmd, monkeypatch):
    make_set(cmd.backups, NAME, media=b"media archive", media_files=3, latest=True)
    cmd.fake.on("psql", argv_contains="SELECT count", stdout=counts_text(TABLES))
    cmd.fake.on("tar", argv_contains="-tf", stdout=b"./a.jpg\n")
    spec = install_engine(monkeypatch)

    assert run(cmd) == Exit.VERIFY_MISMATCH

    assert errors(cmd)[0] == f"{sets.media_name_of(NAME)} holds 1 files, the manifest says 3"
    assert spec.calls[-1] == ("drop_database", SCRATCH)


def test_a_media_archive_that_cannot_be_listed_is_a_bad_backup_not_an_unexpected_failure(cmd, monkeypatch):
    make_set(cmd.backups, NAME, media=b"not a tar", media_files=3, latest=True)
    cmd.fake.on("psql", argv_contains="SELECT count", stdout=counts_text(TABLES))
    cmd.fake.on("tar", argv_contains="-tf", fail=2, stderr="tar: This does not look like a tar archive")
    spec = install_engine(monkeypatch)
    assert run(cmd) == Exit.BAD_BACKUP
    [error, last] = errors(cmd)
    assert error == (
        f"the media archive {sets.media_name_of(NAME)} cannot be listed (tar failed (exit code 2): "
        "tar: This does not look like a tar archive)"
    )
    assert last.startswith("failed with exit code 8 after ")
    assert spec.calls[-1] == ("drop_database", SCRATCH)  # the scratch database dropped all the same
    assert not any(line.startswith("verified") for line in info(cmd))


def test_a_damaged_set_is_refused_before_anything_is_restored(cmd, engine):
    (cmd.backups / NAME).write_bytes(b"damaged")
    assert run(cmd) == Exit.BAD_BACKUP
    assert errors(cmd)[0] == f"{NAME} does not match its sha256 checksum: the file is damaged; refusing to use it"
    assert not any(call[0] in ("drop_database", "load") for call in engine.calls)


def test_no_latest_backup_exits_8(cmd, monkeypatch):
    install_engine(monkeypatch)
    assert run(cmd) == Exit.BAD_BACKUP
    assert errors(cmd)[0] == f"there is no latest backup in {cmd.backups}"


def test_a_staged_load_decompresses_first_and_removes_the_copy(cmd, monkeypatch):
    make_set(cmd.backups, NAME, latest=True)
    cmd.fake.on("psql", argv_contains="SELECT count", stdout=counts_text(TABLES))
    cmd.fake.on("zstd", argv_contains="-d -c", stdout=b"uncompressed archive")
    spec = install_engine(monkeypatch, staging=True)
    engine_class = common.ENGINES["postgresql"]
    seen = []

    def load(self, path, database, staged):
        with open(staged, "rb") as f:
            seen.append((path, database, staged, f.read()))

    monkeypatch.setattr(engine_class, "load", load)

    assert run(cmd) == Exit.OK

    staged = str(cmd.backups / f".restore.{os.getpid()}.partial")
    assert seen == [(str(cmd.backups / NAME), SCRATCH, staged, b"uncompressed archive")]
    assert not os.path.exists(staged)
    assert f"decompressing {NAME} for a parallel restore" in info(cmd)
    [decompress] = [call for call in cmd.fake.calls if call.stdout == staged]
    assert decompress.argv == [["zstd", "-q", "-d", "-c", "--", str(cmd.backups / NAME)]]
    assert spec.calls[-1] == ("drop_database", SCRATCH)


def test_a_copy_that_cannot_be_staged_exits_6_with_nothing_changed(cmd, monkeypatch):
    make_set(cmd.backups, NAME, latest=True)
    cmd.fake.on("zstd", argv_contains="-d -c", fail=1, stderr="zstd: No space left on device")
    spec = install_engine(monkeypatch, staging=True)

    assert run(cmd) == Exit.NO_SPACE

    assert errors(cmd)[0].startswith(f"could not decompress {NAME} into {cmd.backups}")
    assert errors(cmd)[0].endswith("; nothing was changed")
    assert not any(call[0] in ("drop_database", "load") for call in spec.calls)
    assert not os.path.exists(cmd.backups / f".restore.{os.getpid()}.partial")


# --- --from -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repositories", "configured"), [((), "none"), (("nas", "vault"), "nas vault")], ids=["none", "two"]
)
def test_from_an_unknown_repository_exits_2(cmd, engine, repositories, configured):
    cmd.write_offsite(repositories=repositories)
    assert run(cmd, "--from", "tape") == Exit.USAGE
    assert errors(cmd) == [f"no off-site repository named 'tape'; configured: {configured}"]
    assert engine.calls == []
    assert cmd.pings == []


def test_from_local_overrides_the_configured_repository(cmd, engine):
    cmd.write_offsite(repositories=["nas"], verify_from="nas")
    assert run(cmd, "--from", "local") == Exit.OK
    assert cmd.fake.calls_to("restic") == []


def fetched_set(cmd, tmp_path):
    """NAME as repository nas holds it (nowhere in the backups directory)."""
    held_offsite(cmd, tmp_path / "elsewhere", [NAME], verify_from="nas")


def test_from_a_repository_verifies_the_downloaded_copy_and_keeps_nothing(cmd, monkeypatch, tmp_path):
    (cmd.backups / "latest").unlink(missing_ok=True)
    cmd.fake.on("psql", argv_contains="SELECT count", stdout=counts_text(TABLES))
    spec = install_engine(monkeypatch)
    fetched_set(cmd, tmp_path)

    assert run(cmd) == Exit.OK  # verify_from says nas

    staging = cmd.backups / ".fetch-staging"
    assert ("load", str(staging / NAME), SCRATCH, None) in spec.calls
    lines = info(cmd)
    assert any(line.startswith(f"downloaded {NAME} from nas: sha256 and manifest good") for line in lines)
    assert any(line.startswith(f"verified {NAME} from off-site repository nas by a test restore") for line in lines)
    assert not staging.exists()
    assert cmd.published() == []  # nothing was published here
    [restore] = [call for call in cmd.fake.calls_to("restic") if "restore" in call.argv]
    assert snapshot_id(NAME) in restore.argv


def test_from_a_repository_that_cannot_be_read_exits_14(cmd, monkeypatch, tmp_path):
    spec = install_engine(monkeypatch)
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), fail=1, stderr="Fatal: repository does not exist")
    cmd.fake.on("ssh", returncode=0)

    assert run(cmd, "--from", "nas") == Exit.OFFSITE_FAILED

    assert errors(cmd)[0] == "off-site repository nas cannot be read; nothing was fetched"
    assert not any(call[0] == "load" for call in spec.calls)


def test_from_a_repository_with_offsite_fetch_replaced(cmd, engine, monkeypatch):
    from djangoops import offsite

    cmd.write_offsite(repositories=["nas"])
    asked = []

    def fetch(self, repo, want="latest", staged=False):
        asked.append((repo, want, staged))
        return str(cmd.backups / OLDER)

    monkeypatch.setattr(offsite.Offsite, "fetch", fetch)
    assert run(cmd, OLDER, "--from", "nas") == Exit.OK
    assert asked == [("nas", OLDER, True)]
    assert any(f"verified {OLDER} from off-site repository nas" in line for line in info(cmd))


# --- options ------------------------------------------------------------------------------------------


def test_lock_timeout_reaches_the_engine(cmd, engine):
    assert run(cmd, "--lock-timeout", "5") == Exit.OK
    assert engine.instances[0].settings.db_lock_timeout == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lock-timeout", "0"], "--lock-timeout takes whole seconds (at least 1), got '0'"),
        (["--lock-timeout", "x"], "--lock-timeout takes whole seconds (at least 1), got 'x'"),
        (["--lock-wait", "-1"], "the lock wait takes whole seconds, got '-1'"),
    ],
)
def test_bad_option_values_exit_2(cmd, engine, args, message):
    assert run(cmd, *args) == Exit.USAGE
    assert errors(cmd) == [message]
    assert engine.calls == []


def test_too_many_arguments_exit_2(cmd, engine, capsys):
    assert run(cmd, NAME, OLDER) == Exit.USAGE
    assert "Usage: verify_db.sh" in capsys.readouterr().err


def test_a_held_lock_exits_5(cmd, engine):
    Lock(cmd.backups / ".lock", 0).acquire()
    assert run(cmd, "-q") == Exit.LOCKED
    assert engine.calls == []


def test_the_health_check_of_verify_db_is_pinged(cmd, engine):
    cmd.write_database(healthcheck_urls={"verify_db": "https://hc.example/verify-key-123"})
    assert run(cmd) == 0
    assert cmd.pings == [("https://hc.example/verify-key-123", "start"), ("https://hc.example/verify-key-123", "0")]


def test_the_scratch_database_name_is_short_and_never_the_live_one():
    assert verify.scratch_database("shop") == "djangoops_verify_shop"
    assert len(verify.scratch_database("x" * 100)) == len("djangoops_verify_") + 40


# --- with db_backup_pitr, started as root: pgBackRest's repository after the dump -------------

VERIFIED = {**pitr.read_verify(PGBACKREST_VERIFY_OK), "seconds": 4.5}


@pytest.fixture
def root_side(cmd, monkeypatch):
    return RootSide(monkeypatch, lambda *args: run(cmd, *args))


def test_the_repository_is_verified_after_the_dump(cmd, engine, root_side):
    root_side.messages = [{"log": "pgBackRest verifies the local repository of stanza main"}, {"verified": VERIFIED}]
    assert root_side.run() == Exit.OK
    assert root_side.asked() == pitr.ASK_VERIFY + "\n"
    lines = info(cmd)[:-1]  # the last: "finished in"
    assert lines[-3].startswith(f"verified {NAME} by a test restore in ")
    assert lines[-2:] == [
        "pgBackRest verifies the local repository of stanza main",
        "pgBackRest's repository verified in 4.5 s: 2 backups (2935 files) and 20 WAL files, each matching its "
        "checksum",
    ]
    assert cmd.metric("pitr_verify_invalid_files", "verify_db") == "0"


def test_both_repositories_verified_say_so(cmd, engine, root_side):
    root_side.messages = [{"verified": {**VERIFIED, "repositories": 2}}]
    assert root_side.run() == Exit.OK
    assert info(cmd)[-2].startswith("pgBackRest's repositories verified in 4.5 s: ")


def test_a_repository_that_fails_its_verify_exits_8_naming_what(cmd, engine, root_side):
    problems = ["backup 20261207-113729F invalid: 1314 of 1315 files valid (missing: 1)"]
    bad = {**VERIFIED, "ok": False, "files_valid": 2934, "problems": problems}
    root_side.messages = [{"verified": bad}]
    assert root_side.run() == Exit.BAD_BACKUP
    assert errors(cmd)[0] == (
        "pgBackRest's verify finds damage: backup 20261207-113729F invalid: 1314 of 1315 files valid "
        "(missing: 1); a restore to a time that needs those files would fail: take a full backup "
        "(pitr_backup_db.sh --type full)"
    )
    assert cmd.metric("pitr_verify_invalid_files", "verify_db") == "1"


def test_a_dump_that_fails_its_verify_asks_the_root_side_nothing(cmd, engine, root_side):
    first(cmd.fake, "psql", argv_contains="SELECT count", stdout=counts_text({"public.a": 1}))
    assert root_side.run() == Exit.VERIFY_MISMATCH
    assert root_side.asked() == ""
