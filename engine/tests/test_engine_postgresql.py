"""The PostgreSQL engine, driven through FakeRunner: the SQL it sends, the
variables, argv and environment it runs psql, pg_dump and pg_restore with, and
what every failure (a client that fails, times out, answers short or not at all,
or is interrupted) becomes.

The tests named after an issue finding fail on the shell version's behaviour:
an unbounded or unchecked swap, properties lost with the set-aside database, no
ANALYZE, a guessed swap outcome, a failed query read as an answer, prefix
matches taken for exact names."""

import itertools
import re
import signal
import types

import pytest
from djangoops.engines import postgresql as pg
from djangoops.engines.base import Connection, Properties, Snapshot
from djangoops.errors import Exit, Failure
from djangoops.manifest import Manifest
from djangoops.runner import CAPTURE, DEVNULL, CommandFailed, Interrupted
from fakes import TIMEOUT, FakeRunner, RecordingLog

PASSWORD = "pa:ss\\word"
LIVE = "shop"
NEW = "djangoops_restore_shop"
ASIDE = "djangoops_before_shop_20261206T080000"
CLIENT_FILE = "/run/djangoops/client"
CLIENT_PROGRAMS = ("psql", "pg_dump", "pg_restore")


def nul(*rows):
    """psql -tA -z -0 output of ROWS (tuples of fields, or single fields)."""
    out = b""
    for row in rows:
        for field in row if isinstance(row, tuple) else (row,):
            out += str(field).encode() + b"\0"
    return out


@pytest.fixture
def fake():
    return FakeRunner()


@pytest.fixture
def log():
    return RecordingLog()


@pytest.fixture
def settings():
    return types.SimpleNamespace(
        pg_maintenance_db="postgres",
        excluded_table_data=["public.sessions", "audit.*"],
        postgresql_format="custom",
        db_lock_timeout=7,
        restore_jobs=4,
    )


@pytest.fixture
def engine(fake, log, settings, tmp_path):
    connection = Connection(name=LIVE, user="shop_user", host="db.example", port="5433", client_file=CLIENT_FILE)
    engine = pg.PostgreSQL(fake, connection, settings, log, str(tmp_path))
    yield engine
    # Whatever the test did: no secret on a command line, every client with
    # the run's pgpass file and without another source of a password.
    for call in fake.calls:
        assert PASSWORD not in call.text and "password" not in call.text.lower()
        for program, env in zip(call.programs, call.envs, strict=True):
            if program in CLIENT_PROGRAMS:
                assert env["PGPASSFILE"] == CLIENT_FILE, call.text
                assert env["PGPASSWORD"] is None and env["PGSERVICE"] is None and env["PGSERVICEFILE"] is None


def psql_calls(fake, contains):
    return [call for call in fake.calls if call.kind == "run" and contains in call.input]


def variables(call):
    """The -v NAME=VALUE pairs of a psql argv."""
    argv = call.argv
    return dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "-v")


def failure(fn, *args):
    with pytest.raises(Failure) as caught:
        fn(*args)
    return caught.value


# --- credentials and environment ----------------------------------------------------------


def test_pgpass_line_escapes_backslash_and_colon(engine):
    assert engine.client_file_content(PASSWORD) == "*:*:*:*:pa\\:ss\\\\word\n"
    assert pg.PostgreSQL.client_file_text(engine.connection, "a:b") == "*:*:*:*:a\\:b\n"


def test_pgpass_refuses_a_line_break(engine):
    error = failure(engine.client_file_content, "one\ntwo")
    assert error.code == Exit.CONFIG and "line break" in error.message and "one" not in error.message


def test_env_carries_the_connection_and_removes_other_password_sources(engine):
    env = engine.env("other")
    assert env["PGPASSFILE"] == CLIENT_FILE
    assert env["PGDATABASE"] == "other" and env["PGUSER"] == "shop_user"
    assert env["PGHOST"] == "db.example" and env["PGPORT"] == "5433"
    assert env["PGCONNECT_TIMEOUT"] == "10"
    assert env["PGAPPNAME"] == "djangoops restore_db"
    assert env["PGOPTIONS"] == "-c client_min_messages=warning -c lock_timeout=7s"
    for name in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE", "PGHOSTADDR"):
        assert name in env and env[name] is None
    assert engine.env()["PGDATABASE"] == LIVE
    assert engine.env(lock_timeout=False)["PGOPTIONS"] == "-c client_min_messages=warning"


def test_env_local_socket_and_default_port_unset_the_variables(engine):
    engine.connection.host = ""
    engine.connection.port = "0"
    env = engine.env()
    assert env["PGHOST"] is None and env["PGPORT"] is None


def test_conninfo_quotes_the_name():
    assert pg.conninfo("it's a\\b") == "dbname='it\\'s a\\\\b'"


# --- the server -----------------------------------------------------------------------------


def test_check_connection(engine, fake):
    engine.check_connection()
    (call,) = fake.calls
    assert call.argv == ["psql", "-X", "-tA", "-c", "SELECT 1"]
    assert call.env["PGDATABASE"] == LIVE and call.stdout is DEVNULL and call.timeout


def test_check_connection_failure_names_database_user_and_host(engine, fake):
    fake.on(
        "psql",
        fail=2,
        stderr='psql: error: connection to server failed: FATAL:  password authentication failed for user "shop_user"',
    )
    error = failure(engine.check_connection)
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message.startswith('cannot connect to database "shop" as "shop_user" on db.example: ')
    assert "password authentication failed" in error.message


def test_check_connection_timeout_on_the_local_socket(engine, fake):
    engine.connection.host = ""
    fake.on("psql", timeout=True)
    error = failure(engine.check_connection)
    assert "on the local socket" in error.message and "did not finish" in error.message


def test_check_server_uses_the_maintenance_database(engine, fake):
    engine.check_server()
    assert fake.calls[0].env["PGDATABASE"] == "postgres"
    fake.on("psql", fail=2, stderr="psql: error: connection refused")
    error = failure(engine.check_server)
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message == (
        'cannot connect to the PostgreSQL server as "shop_user" (database postgres): psql: error: connection refused'
    )


def test_database_exists(engine, fake):
    fake.on("psql", times=1, stdout=nul("1"))
    fake.on("psql", times=1, stdout=nul("0"))
    assert engine.database_exists("shop") is True
    assert engine.database_exists("shop2") is False
    call = fake.calls[0]
    assert "WHERE datname = :'db'" in call.input and variables(call)["db"] == "shop"
    assert "-z" in call.argv and "-0" in call.argv and call.env["PGDATABASE"] == "postgres"


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        ({"fail": 2, "stderr": "ERROR:  canceling statement due to lock timeout"}, "lock timeout"),
        ({"stdout": b""}, "unexpected answer"),
        ({"stdout": nul("2")}, "unexpected answer"),
        ({"stdout": b"1"}, "could not be read"),
    ],
)
def test_database_exists_never_reads_a_failure_as_no(engine, fake, rule, detail):
    # Finding 5: "does not exist" would skip the safety backup.
    fake.on("psql", **rule)
    error = failure(engine.database_exists, "shop")
    assert error.code == Exit.DB_UNAVAILABLE
    assert 'could not check whether database "shop" exists' in error.message and detail in error.message


def test_list_databases_matches_a_whole_prefix_exactly(engine, fake):
    # Finding 6: starts_with, no LIKE wildcards; names come back exact (a
    # newline in a name survives the NUL separators).
    fake.on("psql", stdout=nul("djangoops_before_shop_1", "djangoops_before_shop_x\nweird", "unrelated"))
    names = engine.list_databases("djangoops_before_shop_")
    assert names == ["djangoops_before_shop_1", "djangoops_before_shop_x\nweird"]
    call = fake.calls[0]
    assert "starts_with(datname, :'prefix')" in call.input and "LIKE" not in call.input
    assert variables(call)["prefix"] == "djangoops_before_shop_"


def test_list_databases_rest_keeps_another_projects_databases_out(engine, fake):
    # Project "shop" and project "shop_x" share the prefix djangoops_before_shop_.
    fake.on(
        "psql",
        stdout=nul("djangoops_before_shop_20261206T080000", "djangoops_before_shop_x_20261206T080000"),
    )
    names = engine.list_databases("djangoops_before_shop_", r"\d{8}T\d{6}")
    assert names == ["djangoops_before_shop_20261206T080000"]


@pytest.mark.parametrize("rule", [{"fail": 1, "stderr": "ERROR:  boom"}, {"timeout": True}, {"stdout": b"cut"}])
def test_list_databases_failure_raises_not_empty(engine, fake, rule):
    # Finding 5: the shell version's 2>/dev/null made a failed listing empty.
    fake.on("psql", **rule)
    error = failure(engine.list_databases, "djangoops_")
    assert error.code == Exit.DB_UNAVAILABLE
    assert "could not list the databases whose names start with djangoops_" in error.message


# --- backup ---------------------------------------------------------------------------------


def test_dump_stage_custom_with_snapshot(engine):
    stage = engine.dump_stage("it's", Snapshot("00000003-0000001B-1"))
    assert stage.argv == [
        "pg_dump",
        "--format=custom",
        "--compress=0",
        "--exclude-table-data=public.sessions",
        "--exclude-table-data=audit.*",
        "--snapshot=00000003-0000001B-1",
        "--dbname=dbname='it\\'s'",
    ]
    assert stage.env["PGDATABASE"] == "it's" and "lock_timeout" not in stage.env["PGOPTIONS"]
    assert stage.env["PGPASSFILE"] == CLIENT_FILE and stage.env["PGPASSWORD"] is None
    assert engine.counts_in_snapshot() is True


def test_dump_stage_plain(engine, settings):
    settings.postgresql_format = "plain"
    settings.excluded_table_data = []
    assert engine.dump_stage("shop").argv == ["pg_dump", "--format=plain", "--dbname=dbname='shop'"]
    assert engine.counts_in_snapshot() is False


def snapshot_rules(fake, holder_lines=("00000003-0000001B-1",), **holder):
    fake.on(lambda call: call.kind == "start" and "--output" not in call.text, lines=list(holder_lines), **holder)


def test_snapshot_begin_exports_and_starts_counting(engine, fake):
    snapshot_rules(fake)
    snapshot = engine.snapshot_begin("shop")
    assert snapshot.snapshot_id == "00000003-0000001B-1"
    holder, counter = fake.sessions
    assert snapshot.holder is holder and snapshot.counter is counter
    assert holder.text == "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n"
    assert holder.call.env["PGDATABASE"] == "shop"
    assert f"--output={engine.counts_path}" in counter.argv
    assert variables(counter.call)["snapshot"] == "00000003-0000001B-1"
    assert "SET TRANSACTION SNAPSHOT :'snapshot';" in counter.text
    assert "SELECT c.oid, format('%I.%I', n.nspname, c.relname)" in counter.text
    assert "FROM ONLY %I.%I" in counter.text and counter.text.endswith("COMMIT;\n\\q\n")
    assert "-z" in counter.argv and "-0" in counter.argv
    # The counter holds its locks only while counting, as pg_dump does: no lock timeout.
    assert "lock_timeout" not in counter.call.env["PGOPTIONS"]
    assert not holder.ended and not counter.ended


@pytest.mark.parametrize(
    ("holder", "detail"),
    [
        ({"holder_lines": [None], "fail": 2, "stderr": 'FATAL:  database "shop" does not exist'}, "does not exist"),
        ({"holder_lines": [None]}, "ended without an answer"),
        ({"holder_lines": [TIMEOUT]}, "sent no line within 17 s"),
        ({"holder_lines": ["ERROR"]}, "unexpected answer 'ERROR'"),
    ],
)
def test_snapshot_begin_failures(engine, fake, holder, detail):
    snapshot_rules(fake, **holder)
    error = failure(engine.snapshot_begin, "shop")
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message.startswith('could not take a snapshot of database "shop" to dump: ')
    assert detail in error.message
    assert all(session.ended for session in fake.sessions)
    assert len(fake.sessions) == 1  # no counter started


def test_snapshot_begin_psql_missing(engine, fake):
    def missing(call):
        raise CommandFailed("psql", call.argv, detail="could not be started: No such file or directory")

    fake.on(lambda call: call.kind == "start", effect=missing)
    error = failure(engine.snapshot_begin, "shop")
    assert error.code == Exit.DB_UNAVAILABLE and "could not be started" in error.message


def test_snapshot_begin_counter_write_fails(engine, fake):
    snapshot_rules(fake)

    def broken(text):
        raise CommandFailed("psql", ["psql"], 2, "FATAL:  too many connections")

    fake.on(lambda call: call.kind == "start", reply=broken)
    error = failure(engine.snapshot_begin, "shop")
    assert error.code == Exit.DB_UNAVAILABLE
    assert 'could not start counting in the snapshot of database "shop"' in error.message
    assert "too many connections" in error.message
    assert all(session.ended for session in fake.sessions)


@pytest.mark.parametrize("where", ["holder", "counter"])
def test_snapshot_begin_interrupted_leaves_no_session(engine, fake, where):
    if where == "holder":
        snapshot_rules(fake, holder_lines=[Interrupted(signal.SIGTERM)])
    else:
        snapshot_rules(fake)

        def interrupted(text):
            raise Interrupted(signal.SIGINT)

        fake.on(lambda call: call.kind == "start", reply=interrupted)
    with pytest.raises(Interrupted):
        engine.snapshot_begin("shop")
    assert fake.sessions and all(session.ended for session in fake.sessions)


TOC = """\
;
; Archive created at 2026-12-06 08:00:00 UTC
215; 1259 16390 TABLE public items shop
216; 1259 16400 TABLE public sessions shop
217; 1259 16410 TABLE public "odd name" shop
3301; 0 16390 TABLE DATA public items shop
3302; 0 16410 TABLE DATA public "odd name" shop
"""


def begun(engine, fake):
    snapshot_rules(fake)
    return engine.snapshot_begin("shop")


def test_snapshot_counts_from_the_snapshot_and_the_table_of_contents(engine, fake, tmp_path):
    snapshot = begun(engine, fake)
    (tmp_path / "snapshot.counts").write_bytes(
        nul(
            ("16390", "public.items", "500"),
            ("16400", "public.sessions", "12"),  # data excluded: 0
            ("16410", 'public."odd name"', "3"),
            ("16420", "public.created_after", "9"),  # not in the archive
        )
    )
    counts = engine.snapshot_counts(snapshot, TOC)
    assert counts == {
        "tables": {'public."odd name"': 3, "public.items": 500, "public.sessions": 0},
        "complete": True,
    }
    # Released only now, after pg_dump ended.
    assert snapshot.holder.text.endswith("COMMIT;\n\\q\n")
    assert snapshot.holder.closed and snapshot.counter.closed


def test_snapshot_counts_counter_failed(engine, fake, tmp_path):
    snapshot_rules(fake)
    fake.on(lambda call: "--output" in call.text, fail=3, stderr="ERROR:  canceling statement due to user request")
    snapshot = engine.snapshot_begin("shop")
    error = failure(engine.snapshot_counts, snapshot, TOC)
    assert error.code == Exit.DUMP_FAILED
    assert error.message == (
        "counting in the dump's snapshot failed: ERROR:  canceling statement due to user request; nothing was published"
    )
    assert snapshot.holder.ended and "COMMIT" not in snapshot.holder.text


def test_snapshot_counts_holder_failed(engine, fake, tmp_path):
    snapshot_rules(fake, timeout=True)
    snapshot = engine.snapshot_begin("shop")
    error = failure(engine.snapshot_counts, snapshot, TOC)
    assert error.code == Exit.DUMP_FAILED
    assert error.message.startswith("the snapshot's session failed: psql did not finish")


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (None, "No such file"),
        (b"16390\0public.items\0", "do not make rows"),
        (nul(("16390", "public.items", "many")), "counted 'many' rows in table public.items"),
    ],
)
def test_snapshot_counts_unreadable_counts(engine, fake, tmp_path, content, detail):
    snapshot = begun(engine, fake)
    if content is not None:
        (tmp_path / "snapshot.counts").write_bytes(content)
    error = failure(engine.snapshot_counts, snapshot, TOC)
    assert error.code == Exit.DUMP_FAILED and detail in error.message and "nothing was published" in error.message


def test_snapshot_abandon_ends_both_sessions(engine, fake):
    snapshot = begun(engine, fake)
    engine.snapshot_abandon(snapshot)
    assert snapshot.holder.killed and snapshot.counter.killed
    engine.snapshot_abandon(Snapshot("x"))  # nothing started: nothing to end


def test_table_of_contents(engine, fake):
    fake.on("pg_restore", stdout=TOC.encode())
    assert engine.table_of_contents("/b/.x.partial", "shop_1.pgdump.zst") == TOC
    (call,) = fake.calls
    assert call.argvs == [["zstd", "-q", "-d", "-c", "--", "/b/.x.partial"], ["pg_restore", "--list"]]
    assert call.stdout is CAPTURE and call.timeout


def test_table_of_contents_decompressor_stopped_by_sigpipe(engine, fake):
    # pg_restore stops reading after the table of contents.
    fake.on("gzip", signal=signal.SIGPIPE)
    fake.on("pg_restore", stdout=TOC.encode())
    assert engine.table_of_contents("/b/shop_1.pgdump.gz") == TOC


def test_table_of_contents_only_pg_restores_status_counts(engine, fake):
    fake.on("zstd", fail=1, stderr="zstd: error 70 : Write error : Broken pipe")
    fake.on("pg_restore", stdout=TOC.encode())
    assert engine.table_of_contents("/b/shop_1.pgdump.zst") == TOC


def test_table_of_contents_unreadable(engine, fake):
    fake.on("pg_restore", fail=1, stderr="pg_restore: error: input file does not appear to be a valid archive")
    error = failure(engine.table_of_contents, "/b/shop_1.pgdump.zst")
    assert error.code == Exit.DUMP_FAILED
    assert "could not read the archive's table of contents" in error.message
    assert "not appear to be a valid archive" in error.message


def test_manifest_fields(engine, fake):
    fake.on("psql", stdout=nul(("UTF8", "en_US.UTF-8", "en_US.UTF-8", "15.4")))
    assert engine.manifest_fields("djangoops_before_shop_1") == {
        "encoding": "UTF8",
        "collate": "en_US.UTF-8",
        "ctype": "en_US.UTF-8",
        "server_version": "15.4",
    }
    assert fake.calls[0].env["PGDATABASE"] == "djangoops_before_shop_1"
    assert "datname = current_database()" in fake.calls[0].input


@pytest.mark.parametrize(
    "rule", [{"fail": 2, "stderr": "FATAL:  no"}, {"stdout": b""}, {"stdout": nul(("", "", "", ""))}]
)
def test_manifest_fields_failure_is_not_an_empty_manifest(engine, fake, rule):
    # The shell version wrote empty fields, and the restore failed much later.
    fake.on("psql", **rule)
    error = failure(engine.manifest_fields, "shop")
    assert error.code == Exit.DB_UNAVAILABLE
    assert 'could not read the encoding and locale of database "shop"' in error.message


# --- restore: checks, create, drop, load, count ----------------------------------------------


def precheck_rules(fake, rights=("t", "t", "shop_user"), sessions=()):
    fake.on("psql", input_contains="rolcreatedb", stdout=nul(rights) if rights else b"")
    fake.on("psql", input_contains="pg_stat_activity", stdout=nul(*sessions))


def test_restore_precheck_passes(engine, fake):
    precheck_rules(fake, sessions=[("101", "shop_user", "gunicorn", "t")])
    engine.restore_precheck(True)
    rights, sessions = fake.calls
    assert variables(rights)["db"] == LIVE and variables(sessions)["db"] == LIVE
    assert rights.env["PGDATABASE"] == "postgres" and "lock_timeout=7s" in rights.env["PGOPTIONS"]


def test_restore_precheck_without_live_database_lists_no_sessions(engine, fake):
    precheck_rules(fake)
    engine.restore_precheck(False)
    assert len(fake.calls) == 1


def test_restore_precheck_needs_createdb(engine, fake):
    precheck_rules(fake, rights=("f", "t", "shop_user"))
    error = failure(engine.restore_precheck, True)
    assert error.code == Exit.CONFIG
    assert error.message == (
        'user "shop_user" may not create databases (CREATEDB), so it cannot load the backup beside "shop"; '
        "nothing was changed"
    )


def test_restore_precheck_needs_ownership(engine, fake):
    precheck_rules(fake, rights=("t", "f", "postgres"))
    error = failure(engine.restore_precheck, True)
    assert error.code == Exit.CONFIG
    assert 'user "shop_user" does not own database "shop" (its owner is "postgres")' in error.message
    assert error.message.endswith("nothing was changed")


def test_restore_precheck_refuses_sessions_it_may_not_end(engine, fake):
    precheck_rules(
        fake,
        sessions=[("101", "shop_user", "gunicorn", "t"), ("202", "postgres", "psql", "f"), ("303", "report", "-", "f")],
    )
    error = failure(engine.restore_precheck, True)
    assert error.code == Exit.REFUSED
    assert (
        'database "shop" is in use by sessions that user "shop_user" may not end: '
        'pid 202 (user "postgres", psql) pid 303 (user "report", -); end them'
    ) in error.message
    assert "101" not in error.message and error.message.endswith("nothing was changed")


@pytest.mark.parametrize("rule", [{"fail": 2, "stderr": "FATAL:  the database system is shutting down"}, None])
def test_restore_precheck_unreadable_rights(engine, fake, rule):
    # An empty answer was read by the shell version as "may not create databases".
    if rule is None:
        precheck_rules(fake, rights=())
    else:
        fake.on("psql", **rule)
    error = failure(engine.restore_precheck, True)
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message.startswith('could not read the privileges of "shop_user"')


def test_restore_precheck_unreadable_sessions(engine, fake):
    fake.on("psql", input_contains="rolcreatedb", stdout=nul(("t", "t", "shop_user")))
    fake.on("psql", input_contains="pg_stat_activity", timeout=True)
    error = failure(engine.restore_precheck, True)
    assert error.code == Exit.DB_UNAVAILABLE and 'could not list the sessions on "shop"' in error.message


MANIFEST = {"encoding": "UTF8", "collate": "de_DE.UTF-8", "ctype": "de_DE.UTF-8", "tables": {}, "rows": 0}


def test_create_database(engine, fake, log):
    engine.create_database(NEW, MANIFEST)
    (call,) = fake.calls
    assert call.input == (
        "CREATE DATABASE :\"db\" TEMPLATE template0 ENCODING :'enc' LC_COLLATE :'coll' LC_CTYPE :'ctype';\n"
    )
    assert variables(call) == {
        "ON_ERROR_STOP": "1",
        "db": NEW,
        "enc": "UTF8",
        "coll": "de_DE.UTF-8",
        "ctype": "de_DE.UTF-8",
    }
    assert call.env["PGDATABASE"] == "postgres"
    assert ("INFO", f'creating database "{NEW}"') in log.records


def test_create_database_from_a_manifest_object(engine, fake):
    engine.create_database(NEW, Manifest(dict(MANIFEST), "/b/shop_1.pgdump.zst.manifest.json"))
    assert variables(fake.calls[0])["coll"] == "de_DE.UTF-8"


def test_create_database_manifest_without_locale(engine, fake):
    manifest = Manifest({"encoding": "UTF8", "tables": {}}, "/b/shop_1.pgdump.zst.manifest.json")
    error = failure(engine.create_database, NEW, manifest)
    assert error.code == Exit.BAD_BACKUP
    assert "the manifest of shop_1.pgdump.zst.manifest.json lacks the database's encoding or locale" in error.message
    assert fake.calls == []


def test_create_database_failure(engine, fake):
    fake.on("psql", fail=1, stderr="ERROR:  permission denied to create database")
    error = failure(engine.create_database, NEW, MANIFEST)
    assert error.code == Exit.CONFIG
    assert error.message == (
        f"could not create the work database {NEW}: ERROR:  permission denied to create database; "
        "the database user needs the right to create (and drop) it"
    )


def test_drop_database_ends_own_sessions_first(engine, fake):
    engine.drop_database(NEW)
    end, drop = fake.calls
    assert "pg_terminate_backend" in end.input and variables(end)["db"] == NEW
    assert drop.input == 'DROP DATABASE IF EXISTS :"db";\n' and variables(drop)["db"] == NEW
    assert "FORCE" not in drop.input


def test_drop_database_failure(engine, fake):
    fake.on("psql", input_contains="pg_terminate_backend", fail=1, stderr="ERROR:  whatever")
    fake.on(
        "psql",
        input_contains="DROP DATABASE",
        fail=1,
        stderr=f'ERROR:  database "{NEW}" is being accessed by other users\n'
        "DETAIL:  There is 1 other session using the database.",
    )
    error = failure(engine.drop_database, NEW)
    assert error.code == Exit.REFUSED
    assert error.message == f'could not drop {NEW}: ERROR:  database "{NEW}" is being accessed by other users'


def test_drop_database_never_drops_the_live_one(engine, fake):
    error = failure(engine.drop_database, LIVE)
    assert error.code == Exit.INTERNAL and fake.calls == []


def test_needs_staging(engine, settings):
    assert engine.needs_staging("/b/shop_1.pgdump.zst") is True
    assert engine.needs_staging("/b/shop_1.sql.zst") is False
    settings.restore_jobs = 1
    assert engine.needs_staging("/b/shop_1.pgdump.zst") is False


def test_load_staged_archive_in_parallel(engine, fake, log, tmp_path):
    staged = tmp_path / ".restore.1.partial"
    staged.write_bytes(b"PGDMP")
    fake.on("pg_restore", stderr="pg_restore: warning: errors ignored on restore: 0")
    engine.load("/b/shop_1.pgdump.zst", "it's", str(staged))
    (call,) = fake.calls
    assert call.argv == [
        "pg_restore",
        "--exit-on-error",
        "--no-owner",
        "--jobs=4",
        "--dbname=dbname='it\\'s'",
        "--",
        str(staged),
    ]
    assert call.timeout is None  # loading is work, not a wait
    assert not staged.exists()  # the safety backup needs the space
    assert ("INFO", 'loading shop_1.pgdump.zst into "it\'s"') in log.records
    assert ("WARN", "pg_restore: warning: errors ignored on restore: 0") in log.records


def test_load_archive_through_the_decompressor(engine, fake):
    engine.load("/b/shop_1.pgdump.gz", NEW, None)
    (call,) = fake.calls
    assert call.kind == "pipeline"
    assert call.argvs == [
        ["gzip", "-d", "-c", "--", "/b/shop_1.pgdump.gz"],
        ["pg_restore", "--exit-on-error", "--no-owner", f"--dbname=dbname='{NEW}'"],
    ]


def test_load_plain_dump_in_one_transaction(engine, fake):
    engine.load("/b/shop_1.sql.zst", NEW, None)
    (call,) = fake.calls
    assert call.argvs == [
        ["zstd", "-q", "-d", "-c", "--", "/b/shop_1.sql.zst"],
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"],
    ]
    assert call.envs[1]["PGDATABASE"] == NEW and call.stdout is DEVNULL


def test_load_failure_quotes_the_error_line(engine, fake, log):
    fake.on(
        "pg_restore",
        fail=1,
        stderr='pg_restore: error: could not execute query: ERROR:  relation "items" already exists\n'
        "Command was: CREATE TABLE public.items (\n    id integer\n);",
    )
    error = failure(engine.load, "/b/shop_1.pgdump.zst", NEW, None)
    assert error.code == Exit.RESTORE_FAILED
    assert error.message == (
        f"loading shop_1.pgdump.zst into {NEW} stopped at the first error: "
        'pg_restore: error: could not execute query: ERROR:  relation "items" already exists'
    )
    assert ("ERROR", "Command was: CREATE TABLE public.items (") in log.records


def test_load_interrupted(engine, fake, tmp_path):
    staged = tmp_path / "staged"
    staged.write_bytes(b"x")
    fake.on("pg_restore", interrupt=signal.SIGTERM)
    with pytest.raises(Interrupted):
        engine.load("/b/shop_1.pgdump.zst", NEW, str(staged))
    assert staged.exists()


def test_load_unknown_compression(engine, fake):
    error = failure(engine.load, "/b/shop_1.pgdump.xz", NEW, None)
    assert error.code == Exit.BAD_BACKUP and fake.calls == []


def test_count_rows(engine, fake):
    fake.on("psql", stdout=nul(("public.items", "500"), ('public."odd\tname"', "0")))
    assert engine.count_rows(NEW) == {"public.items": 500, 'public."odd\tname"': 0}
    (call,) = fake.calls
    assert call.input.startswith("SELECT format('%I.%I', n.nspname, c.relname)")
    assert "query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I'" in call.input
    assert "c.relkind IN ('r', 'p')" in call.input and "NOT LIKE 'pg\\_%'" in call.input
    assert call.input.rstrip().endswith("ORDER BY 1;")
    assert call.env["PGDATABASE"] == NEW and "lock_timeout=7s" in call.env["PGOPTIONS"]


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        ({"fail": 2, "stderr": 'FATAL:  database "x" does not exist'}, "does not exist"),
        ({"timeout": True}, "did not finish"),
        ({"stdout": nul("public.items")}, "could not be read"),
        ({"stdout": nul(("public.items", ""))}, "'' rows in table public.items"),
    ],
)
def test_count_rows_failure_says_the_query_failed(engine, fake, rule, detail):
    # Finding 5: never a "does not match the manifest".
    fake.on("psql", **rule)
    error = failure(engine.count_rows, NEW)
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message.startswith(f'counting the rows of database "{NEW}" failed: ') and detail in error.message


def test_nothing_to_check_or_stop(engine, fake):
    assert engine.check_movable(NEW) is None
    assert engine.stop_own_statements() is None
    assert fake.calls == []


# --- properties and ANALYZE (findings 2 and 3) --------------------------------------------------


STATEMENTS = [
    "ALTER DATABASE :\"db\" SET search_path TO '$user', 'public';",
    "ALTER ROLE reporting IN DATABASE :\"db\" SET work_mem TO '64MB';",
    'REVOKE ALL ON DATABASE :"db" FROM PUBLIC;',
    'GRANT CONNECT ON DATABASE :"db" TO reporting;',
    'ALTER DATABASE :"db" CONNECTION LIMIT 40;',
]


def test_properties_reads_settings_grants_and_connection_limit(engine, fake):
    fake.on("psql", stdout=nul(*[("1", sql) for sql in STATEMENTS]))
    properties = engine.properties(LIVE)
    assert properties.statements == STATEMENTS
    (call,) = fake.calls
    assert variables(call)["db"] == LIVE and call.env["PGDATABASE"] == "postgres"
    for piece in (
        "pg_db_role_setting",
        "setrole = 0",
        "ALTER ROLE %I IN DATABASE",
        "aclexplode(d.datacl)",
        "'CONNECT', 'CREATE', 'TEMPORARY'",
        "datconnlimit",
        "quote_literal(value)",
        "WHERE datname = :'db'",
    ):
        assert piece in call.input
    # The statements name the database to change by a psql variable, never by the live name.
    assert all(LIVE not in sql for sql in properties.statements)


def test_properties_of_a_database_without_any(engine, fake):
    fake.on("psql", stdout=nul(("1", "")))
    assert engine.properties(LIVE).statements == []


@pytest.mark.parametrize(
    "rule",
    [{"stdout": nul(("0", ""))}, {"stdout": b""}, {"fail": 1, "stderr": "ERROR:  permission denied"}],
)
def test_properties_unreadable(engine, fake, rule):
    fake.on("psql", **rule)
    error = failure(engine.properties, LIVE)
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message.startswith('could not read the settings, grants and connection limit of database "shop"')


def test_apply_properties_to_the_restored_database(engine, fake, log):
    engine.apply_properties(Properties(list(STATEMENTS)), NEW)
    settings_1, settings_2, rest = fake.calls
    assert settings_1.input == STATEMENTS[0] + "\n" and settings_2.input == STATEMENTS[1] + "\n"
    assert rest.input == "\n".join(STATEMENTS[2:]) + "\n" and "--single-transaction" in rest.argv
    for call in fake.calls:
        assert variables(call)["db"] == NEW and call.env["PGDATABASE"] == "postgres"
    assert "(5 of 5 statements)" in log.text("INFO")


def test_apply_properties_a_setting_it_may_not_make_is_a_warning(engine, fake, log):
    fake.on("psql", input_contains="ALTER ROLE", fail=1, stderr='ERROR:  permission denied to set parameter "work_mem"')
    engine.apply_properties(Properties(list(STATEMENTS)), NEW)
    warning = log.text("WARN")
    assert f'database "{NEW}" lacks a setting of the live one' in warning
    assert "permission denied to set parameter" in warning and STATEMENTS[1] in warning
    assert "(4 of 5 statements)" in log.text("INFO")


def test_apply_properties_grants_that_fail_stop_the_restore(engine, fake):
    fake.on("psql", input_contains="GRANT", fail=1, stderr='ERROR:  role "reporting" does not exist')
    error = failure(engine.apply_properties, Properties(list(STATEMENTS)), NEW)
    assert error.code == Exit.RESTORE_FAILED
    assert error.message == (
        f'could not give database "{NEW}" the grants, connection limit and owner of the live one: '
        'ERROR:  role "reporting" does not exist'
    )


def test_apply_no_properties_runs_nothing(engine, fake):
    engine.apply_properties(Properties([]), NEW)
    assert fake.calls == []


def test_analyze_is_bounded_and_a_failure_is_a_warning(engine, fake, log):
    engine.analyze(NEW)
    (call,) = fake.calls
    assert call.input == "ANALYZE;\n" and call.env["PGDATABASE"] == NEW
    assert "lock_timeout=7s" in call.env["PGOPTIONS"] and call.timeout == pg.ANALYZE_TIMEOUT
    assert re.search(rf'analyzed "{NEW}" in \d+\.\d s', log.text("INFO"))
    fake.on("psql", timeout=True)
    engine.analyze(NEW)
    assert f'ANALYZE of "{NEW}" failed: psql did not finish' in log.text("WARN")
    assert log.text("INFO").count("analyzed") == 1


def test_an_analyze_beside_the_count_runs_in_a_session_of_its_own(engine, fake, log):
    handle = engine.start_analyze(NEW)
    (session,) = fake.sessions
    assert session.text == "ANALYZE;\n" and session.call.env["PGDATABASE"] == NEW
    assert "lock_timeout=7s" in session.call.env["PGOPTIONS"]
    assert not session.ended  # it runs on while the restore counts the rows
    assert f'gathering planner statistics for "{NEW}" (ANALYZE), beside the row count' in log.text("INFO")
    engine.finish_analyze(handle)
    assert session.closed
    assert re.search(rf'analyzed "{NEW}" in \d+\.\d s', log.text("INFO"))
    engine.stop_analyze(handle)  # after the end: nothing left to stop
    assert not session.killed


def test_postgresql_analyzes_the_live_database_beside_the_safety_copy(engine, fake, log):
    # Its ANALYZE outlasts the row count: the restore starts it after the swap.
    assert engine.analyzes_live
    engine.finish_analyze(engine.start_analyze("shop", "the safety copy"))
    assert 'gathering planner statistics for "shop" (ANALYZE), beside the safety copy' in log.text("INFO")


def test_an_analyze_beside_the_count_that_fails_or_times_out_is_a_warning(engine, fake, log):
    fake.on("psql", fail=2, stderr="ERROR:  canceling statement due to lock timeout")
    engine.finish_analyze(engine.start_analyze(NEW))
    assert f'ANALYZE of "{NEW}" failed: ERROR:  canceling statement due to lock timeout; the restored' in (
        log.text("WARN")
    )
    fake.rules.clear()
    fake.on("psql", timeout=True)
    engine.finish_analyze(engine.start_analyze(NEW))
    assert log.text("WARN").count("failed") == 2
    assert "analyzed" not in log.text("INFO")


def test_an_analyze_that_cannot_start_is_a_warning_and_nothing_to_wait_for(engine, fake, log):
    def refuse(text):
        raise CommandFailed("psql", ["psql"], 2, "psql: error: connection refused")

    fake.on("psql", reply=refuse)
    assert engine.start_analyze(NEW) is None
    (session,) = fake.sessions
    assert session.killed
    assert f'ANALYZE of "{NEW}" failed: psql: error: connection refused; the restored' in log.text("WARN")
    engine.finish_analyze(None)
    engine.stop_analyze(None)


def test_a_restore_that_stops_stops_its_analyze(engine, fake):
    handle = engine.start_analyze(NEW)
    engine.stop_analyze(handle)
    assert fake.sessions[0].killed


def test_analyze_interrupted(engine, fake):
    fake.on("psql", interrupt=signal.SIGINT)
    with pytest.raises(Interrupted):
        engine.analyze(NEW)


# --- the swap (findings 1 and 4) ------------------------------------------------------------------


SEQUENCE_LINES = [
    "SELECT setval('public.items_id_seq', 512, true) FROM pg_sequences WHERE schemaname = 'public' "
    "AND sequencename = 'items_id_seq' AND coalesce(last_value, 0) < 512;",
]


def holder_rule(fake, sequences=None, pid="4242", end=True, tail=(), **behaviour):
    """The holding session on the live database: its pid, then the sequence
    statements (SEQUENCE_LINES unless given) and the end marker it was asked
    to print (or not)."""
    if sequences is None:
        sequences = SEQUENCE_LINES

    def reply(text):
        if "pg_backend_pid" in text:
            return [pid]
        found = re.search(r"\\echo (\S+)", text)
        if found:
            return [*sequences, *([found.group(1)] if end else []), *tail]
        return None

    return fake.on(lambda call: call.kind == "start" and call.env.get("PGDATABASE") == LIVE, reply=reply, **behaviour)


def state_rule(fake, *names, **behaviour):
    return fake.on("psql", input_contains="datname IN", stdout=nul(*names), **behaviour)


def test_swap(engine, fake, log):
    holder_rule(fake)
    engine.swap(LIVE, NEW, ASIDE)
    (holder,) = fake.sessions
    runs = [call for call in fake.calls if call.kind == "run"]
    lock_out, sequences, end_sessions, rename = runs
    # The holder runs with the lock timeout, like every other session.
    assert holder.call.env["PGDATABASE"] == LIVE
    assert "-c lock_timeout=7s" in holder.call.env["PGOPTIONS"]
    assert holder.written[0] == "SELECT pg_backend_pid();\n"
    assert "FROM pg_sequences WHERE last_value IS NOT NULL" in holder.written[1]
    assert holder.ended
    assert 'ALTER DATABASE :"db" ALLOW_CONNECTIONS false;' in lock_out.input
    assert "a.pid NOT IN (pg_backend_pid(), :hold)" in lock_out.input
    assert variables(lock_out)["db"] == LIVE and variables(lock_out)["hold"] == "4242"
    assert sequences.input == SEQUENCE_LINES[0] + "\n" and sequences.env["PGDATABASE"] == NEW
    assert "pg_terminate_backend" in end_sessions.input and variables(end_sessions)["db"] == NEW
    assert rename.input == pg.RENAME_SQL
    assert {k: variables(rename)[k] for k in ("live", "new", "aside")} == {"live": LIVE, "new": NEW, "aside": ASIDE}
    info = log.text("INFO")
    assert f'database "{LIVE}" takes no connections from ' in info
    assert f'swapped: database "{LIVE}" holds the restored backup and takes connections; the old one is {ASIDE}' in info
    assert engine.locked_out is None


def test_swap_without_sequences(engine, fake):
    holder_rule(fake, sequences=[])
    engine.swap(LIVE, NEW, ASIDE)
    assert not [call for call in fake.calls if call.kind == "run" and call.env["PGDATABASE"] == NEW]


def assert_refused(engine, fake, log, detail, reopened=True):
    error = failure(engine.swap, LIVE, NEW, ASIDE)
    assert error.code == Exit.REFUSED
    assert error.message.startswith("the swap was refused: ")
    assert error.message.endswith(f'; database "{LIVE}" is unchanged')
    assert detail in error.message
    reopen = psql_calls(fake, "ALLOW_CONNECTIONS true")
    assert bool(reopen) == reopened
    if reopened:
        assert variables(reopen[0])["db"] == LIVE
        assert engine.locked_out is None
    assert not psql_calls(fake, "RENAME TO")
    assert all(session.ended for session in fake.sessions)
    return error


def test_swap_holder_cannot_connect(engine, fake, log):
    holder_rule(fake, pid=None, fail=2, stderr=f'FATAL:  database "{LIVE}" is not currently accepting connections')
    assert_refused(engine, fake, log, "is not currently accepting connections", reopened=False)
    assert not psql_calls(fake, "ALLOW_CONNECTIONS false")


def test_swap_holder_psql_missing(engine, fake, log):
    def missing(call):
        raise CommandFailed("psql", call.argv, detail="could not be started: No such file or directory")

    fake.on(lambda call: call.kind == "start", effect=missing)
    assert_refused(engine, fake, log, "could not be started", reopened=False)


@pytest.mark.parametrize("pid", [TIMEOUT, "ERROR:  boom"])
def test_swap_holder_pid_late_or_wrong(engine, fake, log, pid):
    holder_rule(fake, pid=pid)
    assert_refused(engine, fake, log, 'could not connect to "shop"', reopened=False)


def test_swap_lock_out_refused(engine, fake, log):
    holder_rule(fake)
    fake.on(
        "psql",
        input_contains="ALLOW_CONNECTIONS false",
        fail=3,
        stderr="ERROR:  canceling statement due to lock timeout",
    )
    assert_refused(engine, fake, log, "canceling statement due to lock timeout")


@pytest.mark.parametrize(
    ("behaviour", "detail"),
    [
        # Finding 1: without the end marker the statements may be cut short:
        # the shell version applied whatever it had read and swapped.
        ({"end": False}, "could not be read: it ended without an answer"),
        ({"end": False, "sequences": []}, "could not be read"),
        ({"end": False, "fail": 3, "stderr": "ERROR:  canceling statement due to lock timeout"}, "lock timeout"),
        ({"end": False, "tail": [TIMEOUT]}, "sent no line within"),
    ],
)
def test_swap_sequences_without_end_marker_are_refused(engine, fake, log, behaviour, detail):
    holder_rule(fake, **behaviour)
    assert_refused(engine, fake, log, detail)
    # Nothing was carried over to the restored database.
    assert not [call for call in fake.calls if call.kind == "run" and call.env["PGDATABASE"] == NEW]


def test_swap_sequences_not_read_in_time(engine, fake, log, monkeypatch):
    holder_rule(fake, end=False, sequences=SEQUENCE_LINES * 3)
    clock = itertools.count(0, 40)
    monkeypatch.setattr(pg, "monotonic", lambda: next(clock))
    assert_refused(engine, fake, log, "were not read in time")


def test_swap_holder_failing_after_the_marker_changes_nothing(engine, fake):
    holder_rule(fake, fail=1, stderr="FATAL:  terminating connection")
    engine.swap(LIVE, NEW, ASIDE)
    assert psql_calls(fake, "RENAME TO")


def test_swap_sequences_not_carried_over(engine, fake, log):
    holder_rule(fake)
    fake.on(
        lambda call: call.kind == "run" and call.env["PGDATABASE"] == NEW,
        fail=1,
        stderr="ERROR:  permission denied for sequence items_id_seq",
    )
    assert_refused(engine, fake, log, f'could not carry the sequences over to "{NEW}": ERROR:  permission denied')


def test_swap_rename_refused(engine, fake, log):
    holder_rule(fake)
    fake.on(
        "psql", input_contains="RENAME TO", fail=3, stderr=f'ERROR:  database "{NEW}" is being accessed by other users'
    )
    state_rule(fake, LIVE, NEW)
    error = failure(engine.swap, LIVE, NEW, ASIDE)
    assert error.code == Exit.REFUSED
    assert error.message == (
        f'the swap was refused: ERROR:  database "{NEW}" is being accessed by other users; '
        f'database "{LIVE}" is unchanged'
    )
    assert variables(psql_calls(fake, "ALLOW_CONNECTIONS true")[0])["db"] == LIVE


def test_swap_rename_client_failed_after_the_commit(engine, fake, log):
    # Finding 4: the outcome is asked, not assumed.
    holder_rule(fake)
    fake.on("psql", input_contains="RENAME TO", signal=signal.SIGKILL)
    state_rule(fake, LIVE, ASIDE)
    engine.swap(LIVE, NEW, ASIDE)
    assert "the server made them" in log.text("WARN")
    assert "swapped: database" in log.text("INFO")
    assert not psql_calls(fake, "ALLOW_CONNECTIONS true") and engine.locked_out is None


def test_swap_rename_outcome_unknown(engine, fake, log):
    holder_rule(fake)
    fake.on("psql", input_contains="RENAME TO", timeout=True)
    state_rule(fake, fail=2, stderr="psql: error: connection to server failed")
    error = failure(engine.swap, LIVE, NEW, ASIDE)
    assert error.code == Exit.DB_UNAVAILABLE
    assert "the swap's outcome is unknown (psql did not finish" in error.message
    assert f"the restored copy is then {NEW}" in error.message and f"then in database {ASIDE}" in error.message
    # Reopening is right either way: LIVE is the old database, locked out, or the restored one.
    assert psql_calls(fake, "ALLOW_CONNECTIONS true")
    assert "swapped" not in log.text()


def test_swap_interrupted_keeps_the_lock_out_known(engine, fake):
    holder_rule(fake)
    fake.on("psql", input_contains="RENAME TO", interrupt=signal.SIGTERM)
    with pytest.raises(Interrupted):
        engine.swap(LIVE, NEW, ASIDE)
    assert engine.locked_out == LIVE
    assert all(session.ended for session in fake.sessions)
    # The caller finds out where it got to, and reopens.
    state_rule(fake, LIVE, NEW)
    assert engine.swap_state(LIVE, NEW, ASIDE) == "before"
    assert engine.reopen(LIVE) is True and engine.locked_out is None


@pytest.mark.parametrize(
    ("names", "state"),
    [
        ((LIVE, NEW), "before"),
        ((LIVE, ASIDE), "after"),
        ((LIVE,), "unknown"),
        ((LIVE, NEW, ASIDE), "unknown"),
        ((), "unknown"),
    ],
)
def test_swap_state_from_exact_names(engine, fake, log, names, state):
    state_rule(fake, *names)
    assert engine.swap_state(LIVE, NEW, ASIDE) == state
    (call,) = fake.calls
    # Finding 6: exact names; the shell version took a prefix listing of NEW
    # (which djangoops_restore_shop2 also matches) for NEW's existence.
    assert "datname IN (:'live', :'new', :'aside')" in call.input and "starts_with" not in call.input
    assert {k: variables(call)[k] for k in ("live", "new", "aside")} == {"live": LIVE, "new": NEW, "aside": ASIDE}
    if state == "unknown":
        assert "neither the state before nor the one after" in log.text("WARN")


def test_swap_state_of_another_project_is_not_taken_for_ours(engine, fake):
    # The server answers for the exact names only; shop2's work database is not among them.
    state_rule(fake, LIVE, ASIDE)
    assert engine.swap_state(LIVE, NEW, ASIDE) == "after"


def test_swap_state_when_the_server_cannot_be_asked(engine, fake, log):
    state_rule(fake, fail=2, stderr="psql: error: connection to server failed")
    assert engine.swap_state(LIVE, NEW, ASIDE) == "unknown"
    assert "could not read which databases exist" in log.text("WARN")


@pytest.mark.parametrize(("names", "state"), [((NEW,), "before"), ((LIVE,), "after"), ((LIVE, NEW), "unknown")])
def test_swap_state_of_put_in_place(engine, fake, names, state):
    state_rule(fake, *names)
    assert engine.swap_state(LIVE, NEW, "") == state


def test_reopen_failure_is_logged_with_what_to_do(engine, fake, log):
    engine.locked_out = LIVE
    fake.on("psql", fail=1, stderr="ERROR:  must be owner of database shop")
    assert engine.reopen(LIVE) is False
    assert engine.locked_out == LIVE
    assert f'database "{LIVE}" still refuses connections' in log.text("ERROR")
    assert "ALTER DATABASE ... ALLOW_CONNECTIONS true as its owner" in log.text("ERROR")


def test_put_in_place(engine, fake):
    engine.put_in_place(NEW, LIVE)
    end, rename = fake.calls
    assert "pg_terminate_backend" in end.input
    assert rename.input == 'ALTER DATABASE :"new" RENAME TO :"live";\n'
    assert variables(rename)["new"] == NEW and variables(rename)["live"] == LIVE


def test_put_in_place_failure(engine, fake):
    fake.on("psql", input_contains="RENAME", fail=1, stderr=f'ERROR:  database "{LIVE}" already exists')
    error = failure(engine.put_in_place, NEW, LIVE)
    assert error.code == Exit.RESTORE_FAILED
    assert error.message == (
        f'could not name the restored database "{LIVE}": ERROR:  database "{LIVE}" already exists; '
        f"it is loaded as {NEW}"
    )


def test_allow_connections(engine, fake):
    engine.allow_connections(ASIDE)
    assert fake.calls[0].input == 'ALTER DATABASE :"db" ALLOW_CONNECTIONS true;\n'
    assert variables(fake.calls[0])["db"] == ASIDE
    fake.on("psql", fail=1, stderr="ERROR:  must be owner of database")
    error = failure(engine.allow_connections, ASIDE)
    assert error.code == Exit.DB_UNAVAILABLE
    assert error.message == f"could not open {ASIDE} for the safety backup: ERROR:  must be owner of database"


def test_why_prefers_the_error_line_and_falls_back_to_the_tail():
    failed = CommandFailed("psql", ["psql"], 1, "NOTICE:  x\nsome context\nmore")
    assert pg._why(failed) == "more"
    assert pg._why(failed, lines=2) == "some context more"
    assert pg._why(CommandFailed("psql", ["psql"], 1, "")) == "psql failed (exit code 1)"


def test_app_name_is_the_commands(fake, log, settings, tmp_path):
    connection = Connection(name=LIVE, user="u", host="", port="", client_file=CLIENT_FILE)
    engine = pg.PostgreSQL(fake, connection, settings, log, str(tmp_path), "backup_db")
    assert engine.env()["PGAPPNAME"] == "djangoops backup_db"


def test_swap_and_put_in_place_take_the_manifest_as_the_commands_pass_it(engine, fake):
    holder_rule(fake)
    engine.swap(LIVE, NEW, ASIDE, MANIFEST)
    engine.put_in_place(NEW, LIVE, MANIFEST)
    state_rule(fake, LIVE, ASIDE)
    assert engine.swap_state(LIVE, NEW, ASIDE, MANIFEST) == "after"


def test_room_for_load_without_a_live_database(engine, fake):
    assert engine.room_for_load(None) == (0, None, "")
    assert fake.calls == []


def test_room_for_load_on_this_machine(engine, fake, tmp_path):
    engine.connection.host = "/run/postgresql"
    fake.on("psql", stdout=nul(("123456", str(tmp_path))))
    needed, free, where = engine.room_for_load(LIVE)
    assert needed == 123456 and isinstance(free, int) and free > 0 and where == str(tmp_path)
    (call,) = fake.calls
    assert "pg_database_size(:'db')" in call.input and variables(call)["db"] == LIVE
    assert "pg_settings WHERE name = 'data_directory'" in call.input


@pytest.mark.parametrize(
    ("host", "datadir"),
    [("db.example", "/var/lib/postgresql/15/main"), ("", ""), ("localhost", "/nonexistent/djangoops/data")],
)
def test_room_for_load_unseen_disk(engine, fake, host, datadir):
    # Another machine, a data directory the server hides from this user, or one that cannot be seen.
    engine.connection.host = host
    fake.on("psql", stdout=nul(("99", datadir)))
    assert engine.room_for_load(LIVE) == (99, None, datadir)


@pytest.mark.parametrize("rule", [{"fail": 1, "stderr": "ERROR:  permission denied"}, {"stdout": nul(("x", ""))}])
def test_room_for_load_failure(engine, fake, rule):
    fake.on("psql", **rule)
    error = failure(engine.room_for_load, LIVE)
    assert error.code == Exit.DB_UNAVAILABLE and 'could not read the size of database "shop"' in error.message
