"""restore_db.sh (commands/restore.py), driven through restore.main and
context.run_command with a real Context, Log, Lock and backups directory, a
FakeRunner and a FakeEngine that records every call and fails on demand.

What is checked for each state of the restore (CHECKING, LOADING, SWAPPING,
SWAPPED, SAVING, DONE): the exit code, what the log says about the live
database, which engine methods ran and which did not (the live and set-aside
databases are never dropped), the files left in db_backups/ and MEDIA_ROOT."""

import dataclasses
import fcntl
import gzip
import io
import json
import os
import random
import re
import signal
import sys

import pytest
from command_helpers import (
    RootSide,
    arrivals_of,
    arrivals_rule,
    restic_on_path,
    restic_restores,
    restic_rule,
    restic_snapshots,
    set_files,
    shop_project,
)
from djangoops import config, manifest, pitr, sets
from djangoops.commands import common, restore
from djangoops.context import Context, run_command
from djangoops.engines.base import Connection, Engine, Properties, Snapshot
from djangoops.errors import Exit, Failure
from djangoops.lock import Lock
from djangoops.offsite import Offsite
from djangoops.runner import CommandFailed, Interrupted, Stage
from fakes import FakeRunner

PROJECT = "shop"
LIVE = "shop"
WORK = "djangoops_restore_shop"
ASIDE_PREFIX = "djangoops_before_shop_"
SET = "shop_20261206T010203Z_daily.sql.gz"
TABLES = {"public.orders": 3, "public.users": 2}
# Random bytes do not compress: the set is a few KiB, so that "three times the
# set" is a real figure for the staging space check.
DUMP = gzip.compress(random.Random(7).randbytes(6000), mtime=0)
MEDIA = gzip.compress(b"a tar of MEDIA_ROOT", mtime=0)
SAFETY_DUMP = gzip.compress(b"-- the set-aside database's dump\n", mtime=0)
UNCHANGED = f'database "{LIVE}" is unchanged'
SIGTERM = signal.SIGTERM


# --- the fake engine -----------------------------------------------------------------------


class FakeEngine(Engine):
    """engines.base.Engine recording each call as (method, args). `fail` maps
    a method name to an exception raised on every call (Failure, CommandFailed,
    Interrupted) or to a function of the call's arguments returning the
    exception to raise, or None. `databases` is what the server holds."""

    name = "postgresql"
    dump_name = "pg_dump"

    def __init__(self, runner, log, databases=(LIVE,)):
        super().__init__(runner, Connection(LIVE, "shop_user", "", "", ""), None, log, "")
        self.calls = []
        self.fail = {}
        self.databases = set(databases)
        self.counts = dict(TABLES)
        self.side = "before"  # what swap_state answers
        self.kept = None  # what drop_if_empty answers
        self.staging = False
        self.room = (0, None, "")

    def _call(self, method, *args):
        self.calls.append((method, args))
        failure = self.fail.get(method)
        if failure is not None and not isinstance(failure, BaseException):
            failure = failure(*args)
        if failure is not None:
            raise failure

    # what the tests ask

    def names(self):
        return [method for method, _args in self.calls]

    def args_of(self, method):
        return [args for name, args in self.calls if name == method]

    def after(self, method):
        """The calls after the first call of METHOD."""
        index = self.names().index(method)
        return self.calls[index + 1 :]

    def aside(self):
        """The name the swap set the live database aside as."""
        return self.args_of("swap")[0][2]

    # the interface

    def check_connection(self):  # the recovered cluster's, before a restore to a time dumps it
        self._call("check_connection")

    def check_server(self):
        self._call("check_server")

    def database_exists(self, name):
        self._call("database_exists", name)
        return name in self.databases

    def list_databases(self, prefix):
        self._call("list_databases", prefix)
        return sorted(d for d in self.databases if d.startswith(prefix))

    def restore_precheck(self, live):
        self._call("restore_precheck", live)

    def needs_staging(self, backup_path):
        self._call("needs_staging", backup_path)
        return self.staging

    def room_for_load(self, live):
        self._call("room_for_load", live)
        return self.room

    def create_database(self, name, manifest):
        self._call("create_database", name)
        self.databases.add(name)

    def drop_database(self, name):
        self._call("drop_database", name)
        self.databases.discard(name)

    def load(self, backup_path, database, staged_path):
        self._call("load", backup_path, database, staged_path)

    def count_rows(self, database):
        self._call("count_rows", database)
        return dict(self.counts)

    def check_movable(self, database):
        self._call("check_movable", database)

    def properties(self, database):
        self._call("properties", database)
        return Properties([f"ALTER DATABASE \"{database}\" SET timezone TO 'UTC'"])

    def apply_properties(self, properties, database):
        self._call("apply_properties", tuple(properties.statements), database)

    def analyze(self, database):
        self._call("analyze", database)

    def start_analyze(self, database, beside="the row count"):
        self._call("start_analyze", database, beside)
        return ("analyzing", database)

    def finish_analyze(self, handle):
        self._call("finish_analyze", handle)

    def stop_analyze(self, handle):
        self._call("stop_analyze", handle)

    def swap(self, live, new, aside, manifest=None):
        self._call("swap", live, new, aside)
        self.databases -= {live, new}
        self.databases |= {live, aside}

    def swap_state(self, live, new, aside, manifest=None):
        self._call("swap_state", live, new, aside)
        return self.side

    def reopen(self, live):
        self._call("reopen", live)

    def put_in_place(self, new, live, manifest=None):
        self._call("put_in_place", new, live)
        self.databases.discard(new)
        self.databases.add(live)

    def drop_if_empty(self, database):
        self._call("drop_if_empty", database)
        if self.kept is None:
            self.databases.discard(database)
        return self.kept

    def allow_connections(self, database):
        self._call("allow_connections", database)

    def stop_own_statements(self):
        self._call("stop_own_statements")

    # the safety backup (backup.take): rows counted in the dump's snapshot

    def counts_in_snapshot(self):
        return True

    def snapshot_begin(self, database):
        self._call("snapshot_begin", database)
        return Snapshot("snap-1")

    def dump_stage(self, database, snapshot=None):
        self._call("dump_stage", database)
        return Stage(["pg_dump", "--snapshot", snapshot.snapshot_id, database], name="pg_dump")

    def snapshot_counts(self, snapshot, archive_toc):
        self._call("snapshot_counts")
        return {"tables": dict(TABLES), "complete": True}

    def snapshot_abandon(self, snapshot):
        self._call("snapshot_abandon")

    def manifest_fields(self, database):
        return {"encoding": "UTF8", "collate": "C.UTF-8", "server_version": "16.4"}


# --- the backups directory, the context, the run ---------------------------------------------


def make_set(directory, name, media=None, data=DUMP, tables=None):
    """A set as backup_db.sh publishes it: dump, sha256 sidecar, manifest (of
    TABLES, by default the module's), and the media archive when MEDIA (its
    bytes) is given."""
    if tables is None:
        tables = TABLES
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    files = [name]
    media_name = sets.media_name_of(name)
    if media is not None:
        with open(os.path.join(directory, media_name), "wb") as f:
            f.write(media)
        files.append(media_name)
    with open(path + ".sha256", "w", encoding="utf-8") as f:
        f.writelines(f"{manifest.sha256_of(os.path.join(directory, n))}  {n}\n" for n in files)
    fields = {
        "engine": "postgresql",
        "database": LIVE,
        "project": PROJECT,
        "created": sets.stamp_of(name, PROJECT),
        "kind": sets.kind_of(name, PROJECT),
        "file": name,
        "sha256": manifest.sha256_of(path),
        "size_bytes": len(data),
        "media_file": media_name if media is not None else "",
        "media_size_bytes": len(media or b""),
        "media_files": 1 if media is not None else 0,
    }
    manifest.write_manifest(path + ".manifest.json", fields, tables)
    return path


LINE = re.compile(r"\S+ restore_db\[\d+\] (\w+) +(.*)")


class Env:
    """One project "shop" in tmp_path: db_backups/ with SET (latest), MEDIA_ROOT
    with old.txt, the settings, a FakeRunner and a FakeEngine wired into
    common.load_settings and common.engine_for."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        self.backups = str(tmp_path / "db_backups")
        self.logs = str(tmp_path / "logs")
        self.media_dir = str(tmp_path / "site" / "media")
        for directory in (self.backups, self.logs, self.media_dir):
            os.makedirs(directory)
        with open(os.path.join(self.media_dir, "old.txt"), "w") as f:
            f.write("before the restore")
        self.project = shop_project(tmp_path, tmp_path / "bin", self.backups, self.logs)
        self.database = config.Database(
            engine="postgresql",
            credentials_source="vars",
            client_file=str(tmp_path / "pgpass"),
            db_name=LIVE,
            db_user="shop_user",
            db_host="",
            db_port=0,
            django_python="",
            django_src_dir="",
            django_settings="",
            django_db_alias="default",
            pg_maintenance_db="postgres",
            excluded_table_data=(),
            postgresql_format="plain",
            compression="gzip",
            zstd_level=3,
            threads=1,
            rotation="gfs",
            keep=config.Keep(daily=7, weekly=4, monthly=12, safety=1),
            min_free_mb=0,
            lock_wait=0,
            db_lock_timeout=30,
            restore_jobs=1,
            media_dir=self.media_dir,
            healthcheck_urls={},
        )
        self.offsite = config.Offsite(dir="", timeout=60, check_subset="1/5", verify_from="", repositories=())
        self.runner = FakeRunner()
        # The compressor of the safety backup writes a real gzip file.
        self.runner.on(lambda call: call.argvs[-1] == ["gzip", "-c"], stdout=SAFETY_DUMP)
        # tar unpacks the media archive: a file appears in the directory it was given.
        self.runner.on("tar", effect=self._unpack)
        self.path = make_set(self.backups, SET)
        sets.point_latest_at(self.backups, SET)
        self.published = self.files()
        monkeypatch.delenv("QUIET", raising=False)
        monkeypatch.setenv("DJANGOOPS_STDERR", "all")
        self.context = Context("restore_db", self.project, str(tmp_path / "config"), str(tmp_path / "engine"))
        self.context.runner = self.runner  # start_run() then opens no real runner
        self.engine = FakeEngine(self.runner, self.context.log)
        self.engine_settings = []
        monkeypatch.setattr(common, "load_settings", lambda context: (self.database, self.offsite))
        monkeypatch.setattr(common, "engine_for", self._engine_for)

    def _engine_for(self, context, database):
        self.engine_settings.append(database)
        return self.engine

    @staticmethod
    def _unpack(call):
        target = call.argvs[-1][call.argvs[-1].index("-C") + 1]
        with open(os.path.join(target, "new.txt"), "w") as f:
            f.write("from the backup")

    def first(self, match=None, **behaviour):
        """A runner rule that answers before the fixture's own."""
        rule = self.runner.on(match, **behaviour)
        self.runner.rules.remove(rule)
        self.runner.rules.insert(0, rule)
        return rule

    def with_media(self):
        """SET published again with a media archive."""
        self.path = make_set(self.backups, SET, media=MEDIA)
        self.published = self.files()

    def run(self, *args):
        return run_command(self.context, restore.main, list(args))

    def messages(self, level=None):
        with open(os.path.join(self.logs, "restore_db.log"), encoding="utf-8") as f:
            found = [LINE.fullmatch(line.rstrip("\n")) for line in f]
        assert all(found), "every log line is in the log's format"
        return [m.group(2) for m in found if level is None or m.group(1) == level]

    def text(self):
        return "\n".join(self.messages())

    def states(self):
        return [m.split(":", 2)[1].strip() for m in self.messages("INFO") if m.startswith("restore: ")]

    def files(self):
        return sorted(os.listdir(self.backups))

    def safety_sets(self):
        return [n for n in sets.list_sets(self.backups, PROJECT) if sets.kind_of(n, PROJECT) == "safety"]

    def media_files(self):
        return sorted(os.listdir(self.media_dir)) if os.path.isdir(self.media_dir) else None

    def media_leftovers(self):
        parent = os.path.dirname(self.media_dir)
        return sorted(n for n in os.listdir(parent) if n != "media")


@pytest.fixture
def env(tmp_path, monkeypatch):
    return Env(tmp_path, monkeypatch)


LIVE_CHANGES = ("swap", "put_in_place", "reopen", "allow_connections", "drop_if_empty", "snapshot_begin")


def assert_live_untouched(env):
    """Nothing done to the live database, nothing published, nothing left over."""
    assert not set(LIVE_CHANGES) & set(env.engine.names())
    assert all(name == WORK for (name,) in env.engine.args_of("drop_database"))
    assert LIVE in env.engine.databases
    assert env.safety_sets() == []
    assert [n for n in env.files() if n != ".lock"] == env.published
    assert env.media_files() == ["old.txt"]
    assert env.media_leftovers() == []


def fail_rename(monkeypatch, env, call, error):
    """os.rename raises ERROR at its CALL-th call on MEDIA_ROOT or its siblings."""
    real = os.rename
    seen = []

    def rename(source, target, *args, **kwargs):
        if os.fspath(source).startswith(env.media_dir):
            seen.append(source)
            if len(seen) == call:
                raise error
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)


# --- names ---------------------------------------------------------------------------------


def test_work_and_aside_names_are_the_projects_own_and_short():
    assert restore.work_database("shop") == WORK
    assert restore.aside_prefix("shop") == ASIDE_PREFIX
    long = "p" * 80
    assert restore.work_database(long) == "djangoops_restore_" + "p" * 40
    # The stamp the swap appends (YYYYmmddTHHMMSS) keeps it within PostgreSQL's 63 bytes.
    assert len(restore.aside_prefix(long) + "20261206T010203") <= 63


# --- 6. success ------------------------------------------------------------------------------


def test_success_swaps_saves_the_old_database_and_logs_every_state(env):
    assert env.run("--yes") == Exit.OK

    assert env.states() == ["checking", "loading", "swapping", "swapped", "saving", "done"]
    engine = env.engine
    aside = engine.aside()
    assert re.fullmatch(ASIDE_PREFIX + r"\d{8}T\d{6}", aside)
    assert engine.args_of("restore_precheck") == [(True,)]
    assert engine.args_of("load") == [(env.path, WORK, None)]
    assert engine.args_of("apply_properties") == [((f"ALTER DATABASE \"{LIVE}\" SET timezone TO 'UTC'",), WORK)]
    assert engine.args_of("swap") == [(LIVE, WORK, aside)]
    # The work database is dropped (afresh) before the load, the set-aside one only once saved.
    assert engine.args_of("drop_database") == [(WORK,), (aside,)]
    assert engine.names().index("allow_connections") < engine.names().index("snapshot_begin")
    assert engine.args_of("dump_stage") == [(aside,)]
    assert "put_in_place" not in engine.names()
    assert engine.databases == {LIVE}

    (safety,) = env.safety_sets()
    assert safety.startswith("shop_") and safety.endswith("_safety.sql.gz")
    checked = sets.check_set(os.path.join(env.backups, safety), PROJECT, "postgresql")
    assert checked.manifest.kind == "safety"
    assert checked.manifest.tables == TABLES
    assert gzip.decompress(open(os.path.join(env.backups, safety), "rb").read()).startswith(b"-- the set-aside")
    assert sets.latest_name(env.backups) == SET  # a safety backup never becomes latest
    assert f"is in {safety} (restore_db.sh {safety} brings it back)" in env.text()
    assert f'restored {SET} into database "{LIVE}" in ' in env.text()
    assert env.messages("ERROR") == []
    assert env.messages()[-1].startswith("finished in ")
    assert not [n for n in env.files() if "partial" in n]


def test_success_logs_the_done_state(env):
    assert env.run("--yes") == Exit.OK
    assert env.states()[-1] == "done"
    info = env.messages("INFO")
    done = info.index(f'restore: done: database "{LIVE}" holds {SET}')
    # DONE comes last: after the safety backup is saved and its set-aside database dropped.
    (safety,) = env.safety_sets()
    saved = f'what database "{LIVE}" held before the restore is in {safety} (restore_db.sh {safety} brings it back)'
    assert done > info.index(saved)


def test_success_prunes_older_safety_sets_but_not_the_one_restored_from(env):
    older = "shop_20261101T000000Z_safety.sql.gz"
    source = "shop_20261001T000000Z_safety.sql.gz"  # older still, and the one being restored
    make_set(env.backups, older)
    make_set(env.backups, source)

    assert env.run("--yes", source) == Exit.OK

    (new,) = [n for n in env.safety_sets() if n not in (older, source)]
    assert env.safety_sets() == [new, source]
    assert not [n for n in env.files() if n.startswith(older)]
    info = env.messages("INFO")
    removing = info.index(f"retention: removing {older} (safety, keeping 1)")
    # The restore is done only once the safety backups are pruned.
    assert info.index(f'restore: done: database "{LIVE}" holds {source}') > removing
    assert SET in env.files()  # another kind is never pruned by a restore


@pytest.mark.parametrize("pushed", [False, True])
def test_a_safety_backup_no_repository_holds_yet_is_not_pruned(env, monkeypatch, pushed):
    """Until every off-site repository holds it, a safety backup is the only copy of what a
    restore replaced: the retention keeps it, and removes it once it is off-site."""
    older = "shop_20261101T000000Z_safety.sql.gz"
    make_set(env.backups, older)
    env.offsite = config.Offsite(
        dir=str(env.backups), timeout=60, check_subset="1/5", verify_from="",
        repositories=(config.Repository("bucket", "s3", "", 0, "", "s3:https://s3.example/b"),),
    )  # fmt: skip
    asked = []
    monkeypatch.setattr(
        Offsite, "pending", lambda self, names: asked.append(sorted(names)) or set(names) - {pushed and older}
    )

    assert env.run("--yes") == Exit.OK
    assert asked == [[older]]
    assert (older in env.safety_sets()) is not pushed
    kept = (
        f"retention: keeping {older} (safety) until every off-site repository holds it; the next backup_db.sh or "
        "push_db_backups.sh sends it"
    )
    assert (kept in env.messages("INFO")) is not pushed
    assert (f"retention: removing {older} (safety, keeping 1)" in env.messages("INFO")) is pushed
    assert any(m.endswith("(the next backup_db.sh or push_db_backups.sh sends it off-site)") for m in env.messages())


def test_without_off_site_repositories_nothing_is_asked(env, monkeypatch):
    monkeypatch.setattr(Offsite, "pending", lambda self, names: pytest.fail("asked"))
    make_set(env.backups, "shop_20261101T000000Z_safety.sql.gz")
    assert env.run("--yes") == Exit.OK
    assert len(env.safety_sets()) == 1
    assert not any("sends it off-site" in m for m in env.messages())


def test_success_with_staging_loads_the_uncompressed_copy_and_removes_it(env):
    env.engine.staging = True
    assert env.run("--yes") == Exit.OK
    staged = os.path.join(env.backups, f".restore.{os.getpid()}.partial")
    assert env.engine.args_of("load") == [(env.path, WORK, staged)]
    assert not os.path.exists(staged)
    assert f"decompressing {SET} for a parallel restore" in env.messages("INFO")


def test_success_says_the_set_holds_media_files_when_not_asked_to_restore_them(env):
    env.with_media()
    assert env.run("--yes") == Exit.OK
    assert f"the set also holds media files; restore_db.sh {SET} --with-media restores them" in env.messages()
    assert env.media_files() == ["old.txt"]
    assert env.runner.calls_to("tar") == []


def test_success_with_media_swaps_the_trees(env):
    env.with_media()
    assert env.run("--yes", "--with-media") == Exit.OK
    assert env.media_files() == ["new.txt"]
    (old,) = env.media_leftovers()
    assert re.fullmatch(r"media\.before-restore-\d{8}T\d{6}Z", old)
    assert os.listdir(os.path.join(os.path.dirname(env.media_dir), old)) == ["old.txt"]
    old_path = os.path.join(os.path.dirname(env.media_dir), old)
    assert f"media restored into {env.media_dir}; the previous files are in {old_path}" in env.messages()
    (unpack,) = env.runner.calls_to("tar")
    assert unpack.timeout == restore.UNPACK_TIMEOUT
    assert len(env.safety_sets()) == 1


def test_success_with_media_when_media_root_does_not_exist_yet(env):
    env.with_media()
    os.remove(os.path.join(env.media_dir, "old.txt"))
    os.rmdir(env.media_dir)
    assert env.run("--yes", "--with-media") == Exit.OK
    assert env.media_files() == ["new.txt"]
    assert env.media_leftovers() == []
    assert f"media restored into {env.media_dir}" in env.messages()


def test_dropping_the_aside_database_after_saving_it_may_fail(env):
    env.engine.fail["drop_database"] = lambda name: Failure(Exit.DB_UNAVAILABLE, "gone") if name != WORK else None
    assert env.run("--yes") == Exit.OK
    aside = env.engine.aside()
    (safety,) = env.safety_sets()
    assert f"could not drop {aside} after saving it as {safety}: gone; drop it by hand" in env.messages("WARN")
    assert aside in env.engine.databases


# --- 7. no live database ----------------------------------------------------------------------------


def test_no_live_database_puts_the_work_one_in_place_without_a_safety_backup(env):
    env.engine.databases = set()
    assert env.run("--yes") == Exit.OK
    engine = env.engine
    assert engine.args_of("restore_precheck") == [(False,)]
    assert engine.args_of("room_for_load") == [(None,)]
    assert engine.args_of("put_in_place") == [(WORK, LIVE)]
    assert not {"swap", "properties", "apply_properties", "allow_connections", "snapshot_begin"} & set(engine.names())
    assert engine.databases == {LIVE}
    assert env.states() == ["checking", "loading", "swapping", "swapped", "done"]
    assert env.safety_sets() == []


def test_a_failed_existence_query_is_not_read_as_no_live_database(env):
    env.engine.fail["database_exists"] = Failure(Exit.DB_UNAVAILABLE, "could not ask the server")
    assert env.run("--yes") == Exit.DB_UNAVAILABLE
    assert "put_in_place" not in env.engine.names()
    assert_live_untouched(env)


# --- 1. failures before the swap ----------------------------------------------------------------


def _fail(method, code, message="it failed"):
    def setup(env, monkeypatch):
        env.engine.fail[method] = Failure(code, message)

    return setup


def _failing(method, code, message, expected=None):
    """A case of the tables below: METHOD raises Failure(CODE, MESSAGE); the
    restore exits CODE and logs EXPECTED (default: the message)."""
    return _fail(method, code, message), code, message if expected is None else expected


def _no_room_for_staging(env, monkeypatch):
    env.engine.staging = True
    monkeypatch.setattr(sets, "free_kb", lambda directory: 1)


def _no_room_on_the_server(env, monkeypatch):
    env.engine.room = (10 << 30, 5 << 20, "/var/lib/postgresql/16/main")


def _staging_fails(env, monkeypatch):
    env.engine.staging = True
    env.first(lambda call: call.argvs[-1][:2] == ["gzip", "-d"], fail=1, stderr="gzip: No space left on device")


def _no_media_archive(env, monkeypatch):
    env.args = ("--with-media",)


def _unpack_fails(env, monkeypatch):
    env.with_media()
    env.args = ("--with-media",)
    env.first("tar", fail=2, stderr="tar: Cannot write: No space left on device")


def _unpack_times_out(env, monkeypatch):
    env.with_media()
    env.args = ("--with-media",)
    env.first("tar", timeout=True)


def _no_media_dir_configured(env, monkeypatch):
    env.with_media()
    env.args = ("--with-media",)
    env.database = dataclasses.replace(env.database, media_dir="")


def _mismatch(env, monkeypatch):
    env.engine.counts = {"public.orders": 3, "public.users": 1}


def _load_fails_after_the_unpack(env, monkeypatch):
    env.with_media()
    env.args = ("--with-media",)
    env.engine.fail["load"] = Failure(Exit.RESTORE_FAILED, "pg_restore failed: ERROR: out of memory")


CHECKING_FAILURES = {
    "check_server": _failing("check_server", Exit.DB_UNAVAILABLE, "cannot connect", "cannot"),
    "precheck_refused": _failing("restore_precheck", Exit.REFUSED, "another session holds a lock"),
    "precheck_config": _failing("restore_precheck", Exit.CONFIG, "no right to create databases"),
    "no_room_for_staging": (_no_room_for_staging, Exit.NO_SPACE, "parallel restore needs about 1 MiB (three times"),
    "no_room_on_the_server": (
        _no_room_on_the_server,
        Exit.NO_SPACE,
        "only 5 MiB free in /var/lib/postgresql/16/main, where the database server keeps its data",
    ),
    "staging_fails": (_staging_fails, Exit.NO_SPACE, f"could not decompress {SET}"),
    "no_media_archive": (_no_media_archive, Exit.BAD_BACKUP, f"{SET} has no media archive"),
    "no_media_dir": (_no_media_dir_configured, Exit.CONFIG, "--with-media needs db_backup_media_dir"),
    "unpack_fails": (_unpack_fails, Exit.RESTORE_FAILED, "unpacking shop_20261206T010203Z_daily.media.tar.gz failed"),
    "unpack_times_out": (_unpack_times_out, Exit.RESTORE_FAILED, "tar did not finish within 21600 s"),
}

LOADING_FAILURES = {
    "drop_fails": _failing("drop_database", Exit.DB_UNAVAILABLE, "drop refused"),
    "create_fails": _failing("create_database", Exit.RESTORE_FAILED, "no such locale", "locale"),
    "load_fails": _failing(
        "load",
        Exit.RESTORE_FAILED,
        "pg_restore failed: ERROR: syntax error",
        f"pg_restore failed: ERROR: syntax error; {UNCHANGED}",
    ),
    "load_fails_with_media": (_load_fails_after_the_unpack, Exit.RESTORE_FAILED, f"out of memory; {UNCHANGED}"),
    "mismatch": (_mismatch, Exit.RESTORE_FAILED, f"{SET} did not load into what its manifest describes"),
    "count_rows_fails": _failing(
        "count_rows",
        Exit.DB_UNAVAILABLE,
        'counting the rows of database "djangoops_restore_shop" failed',
        "counting the rows",
    ),
    "check_movable": _failing("check_movable", Exit.RESTORE_FAILED, "the dump holds 2 views"),
    "properties_fail": _failing("properties", Exit.DB_UNAVAILABLE, "no answer"),
    "apply_properties_fails": _failing("apply_properties", Exit.DB_UNAVAILABLE, "GRANT failed"),
    "start_analyze_fails": _failing("start_analyze", Exit.DB_UNAVAILABLE, "ANALYZE could not start", "ANALYZE"),
    "finish_analyze_fails": _failing("finish_analyze", Exit.DB_UNAVAILABLE, "ANALYZE timed out", "ANALYZE"),
}


def _run_failing(env, monkeypatch, case):
    """Set up CASE (setup, code, message), check the restore exits with its
    code; its code, message and the errors logged."""
    setup, code, message = case
    env.args = ()
    setup(env, monkeypatch)
    assert env.run("--yes", *env.args) == code
    return code, message, env.messages("ERROR")


@pytest.mark.parametrize("case", CHECKING_FAILURES)
def test_a_failure_while_checking_creates_nothing(env, monkeypatch, case):
    code, message, errors = _run_failing(env, monkeypatch, CHECKING_FAILURES[case])
    assert env.states() == ["checking"]
    assert message in errors[0]
    assert f"{UNCHANGED}: the restore stopped before it created anything" in errors
    assert errors[-1].startswith(f"failed with exit code {int(code)} after ")
    assert not {"create_database", "drop_database", "load"} & set(env.engine.names())
    assert env.engine.names()[-1] == "stop_own_statements"
    assert_live_untouched(env)


@pytest.mark.parametrize("case", LOADING_FAILURES)
def test_a_failure_while_loading_drops_the_work_database_only(env, monkeypatch, case):
    _code, message, errors = _run_failing(env, monkeypatch, LOADING_FAILURES[case])
    assert env.states() == ["checking", "loading"]
    assert [e for e in errors if message in e]
    assert f"{UNCHANGED}: the restore stopped before the swap" in errors
    # The undo drops the work database (again: the load dropped it first).
    assert env.engine.calls[-2:] == [("stop_own_statements", ()), ("drop_database", (WORK,))]
    assert WORK not in env.engine.databases or case == "drop_fails"
    assert_live_untouched(env)


def test_the_analyze_runs_beside_the_row_count_and_ends_before_the_swap(env):
    assert env.run("--yes") == Exit.OK
    names = env.engine.names()
    order = ["load", "start_analyze", "count_rows", "properties", "apply_properties", "finish_analyze", "swap"]
    assert [n for n in names if n in order] == order
    assert env.engine.args_of("start_analyze") == [(WORK, "the row count")]
    assert env.engine.args_of("finish_analyze") == [(("analyzing", WORK),)]
    assert "stop_analyze" not in names


# An engine whose ANALYZE outlasts the row count (PostgreSQL) runs it on the
# restored database once live, beside the safety copy; the restore waits for it.


@pytest.fixture
def live_analyze(env):
    env.engine.analyzes_live = True
    return env


def test_an_engine_analyzing_live_starts_after_the_swap_and_ends_before_done(live_analyze):
    env = live_analyze
    states_when_awaited = []
    finish = env.engine.finish_analyze

    def awaited(handle):
        states_when_awaited.append(env.states())
        finish(handle)

    env.engine.finish_analyze = awaited
    assert env.run("--yes") == Exit.OK
    # Awaited while saving, before the restore says it is done.
    assert states_when_awaited == [["checking", "loading", "swapping", "swapped", "saving"]]
    names = env.engine.names()
    aside = env.engine.aside()
    assert env.engine.args_of("start_analyze") == [(LIVE, "the safety copy")]
    assert names.index("swap") < names.index("start_analyze") < names.index("dump_stage")
    # It is awaited after the safety copy is saved and its database dropped, before DONE.
    assert env.engine.calls.index(("drop_database", (aside,))) < names.index("finish_analyze")
    assert env.engine.args_of("finish_analyze") == [(("analyzing", LIVE),)]
    assert "stop_analyze" not in names


def test_an_engine_analyzing_live_without_a_live_database_analyzes_after_put_in_place(live_analyze):
    env = live_analyze
    env.engine.databases = set()
    assert env.run("--yes") == Exit.OK
    names = env.engine.names()
    assert env.engine.args_of("start_analyze") == [(LIVE, "the rest of the restore")]
    assert names.index("put_in_place") < names.index("start_analyze") < names.index("finish_analyze")


@pytest.mark.parametrize("case", ["count_rows_fails", "mismatch", "apply_properties_fails"])
def test_an_engine_analyzing_live_analyzes_nothing_when_the_restore_stops_before_the_swap(
    live_analyze, monkeypatch, case
):
    _run_failing(live_analyze, monkeypatch, LOADING_FAILURES[case])
    assert not {"start_analyze", "stop_analyze", "finish_analyze"} & set(live_analyze.engine.names())


@pytest.mark.parametrize("case", ["dump_fails", "allow_connections_fails"])
def test_an_engine_analyzing_live_stops_it_when_the_safety_copy_fails(live_analyze, case):
    env = live_analyze
    setup, code, _message = SAVING_FAILURES[case]
    setup(env)
    assert env.run("--yes") == code
    assert env.engine.args_of("stop_analyze") == [(("analyzing", LIVE),)]
    assert "finish_analyze" not in env.engine.names()
    _assert_kept_aside(env)


def test_an_engine_analyzing_live_stops_it_when_interrupted_during_the_safety_copy(live_analyze):
    env = live_analyze
    env.first("pg_dump", interrupt=SIGTERM)
    assert env.run("--yes") == Exit.INTERRUPTED
    assert env.engine.args_of("stop_analyze") == [(("analyzing", LIVE),)]
    assert env.engine.aside() in env.engine.databases


def test_an_engine_analyzing_live_stops_it_when_pruning_fails_after_the_safety_copy(live_analyze, monkeypatch):
    env = live_analyze

    def prune(*args, **kwargs):
        raise Failure(Exit.DB_UNAVAILABLE, "pruning failed")

    monkeypatch.setattr(restore.backup, "prune", prune)
    assert env.run("--yes") == Exit.DB_UNAVAILABLE
    assert env.engine.args_of("stop_analyze") == [(("analyzing", LIVE),)]
    assert env.safety_sets()  # the safety copy was saved before


@pytest.mark.parametrize(
    "case", ["count_rows_fails", "mismatch", "check_movable", "properties_fail", "apply_properties_fails",
             "finish_analyze_fails"]
)  # fmt: skip
def test_a_failure_after_the_analyze_began_stops_it_before_the_work_database_is_dropped(env, monkeypatch, case):
    _run_failing(env, monkeypatch, LOADING_FAILURES[case])
    names = env.engine.names()
    assert env.engine.args_of("stop_analyze") == [(("analyzing", WORK),)]
    assert names.index("stop_analyze") < len(names) - 1 - names[::-1].index("drop_database")
    assert "swap" not in names


def test_a_failure_before_the_analyze_began_has_none_to_stop(env, monkeypatch):
    _run_failing(env, monkeypatch, LOADING_FAILURES["load_fails"])
    assert "start_analyze" not in env.engine.names() and "stop_analyze" not in env.engine.names()


def test_a_mismatch_logs_each_difference(env):
    env.engine.counts = {"public.orders": 3, "public.users": 1, "public.extra": 0}
    assert env.run("--yes") == Exit.RESTORE_FAILED
    errors = env.messages("ERROR")
    assert "table public.extra appeared after the restore but is not in the manifest" in errors
    assert "table public.users: 1 rows restored, the manifest says 2" in errors
    assert f"{SET} did not load into what its manifest describes; {UNCHANGED}" in errors


def test_a_failed_row_count_is_never_read_as_a_mismatch(env):
    env.engine.fail["count_rows"] = Failure(Exit.DB_UNAVAILABLE, "counting the rows failed: connection lost")
    assert env.run("--yes") == Exit.DB_UNAVAILABLE
    text = env.text()
    assert "did not load into" not in text
    assert "does not match" not in text
    assert "rows restored, the manifest says" not in text
    assert "counting the rows failed: connection lost" in env.messages("ERROR")


def test_a_failed_drop_of_the_work_database_is_a_warning(env):
    env.engine.fail["finish_analyze"] = Failure(Exit.DB_UNAVAILABLE, "ANALYZE failed")
    env.engine.fail["drop_database"] = lambda name: (
        CommandFailed("psql", ["psql"], 2, "server closed the connection")
        if env.engine.args_of("finish_analyze")
        else None
    )
    assert env.run("--yes") == Exit.DB_UNAVAILABLE
    assert any(
        w.startswith(f"could not drop the work database {WORK}: psql failed (exit code 2)")
        for w in env.messages("WARN")
    )
    assert f"{UNCHANGED}: the restore stopped before the swap" in env.messages("ERROR")


def test_a_failure_to_stop_own_statements_is_a_warning(env):
    env.engine.fail["check_movable"] = Failure(Exit.RESTORE_FAILED, "a trigger")
    env.engine.fail["stop_own_statements"] = Failure(Exit.DB_UNAVAILABLE, "cannot connect")
    assert env.run("--yes") == Exit.RESTORE_FAILED
    assert "could not stop this run's statements on the server: cannot connect" in env.messages("WARN")
    assert ("drop_database", (WORK,)) == env.engine.calls[-1]
    assert f"{UNCHANGED}: the restore stopped before the swap" in env.messages("ERROR")


def test_a_failed_load_with_media_removes_the_unpacked_tree(env):
    env.with_media()
    env.engine.fail["load"] = Failure(Exit.RESTORE_FAILED, "pg_restore failed")
    assert env.run("--yes", "--with-media") == Exit.RESTORE_FAILED
    assert env.runner.calls_to("tar")  # it was unpacked
    assert env.media_files() == ["old.txt"]
    assert env.media_leftovers() == []


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PermissionError(13, "Permission denied"), Exit.CONFIG),
        (OSError(28, "No space left on device"), Exit.NO_SPACE),
    ],
)
def test_an_unwritable_media_parent_is_a_documented_failure(env, monkeypatch, error, code):
    env.with_media()
    real = os.makedirs
    unpack_dir = f"{env.media_dir}.restoring.{os.getpid()}"

    def makedirs(path, *args, **kwargs):
        if os.fspath(path) == unpack_dir:
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    assert env.run("--yes", "--with-media") == code
    errors = env.messages("ERROR")
    assert errors[0] == (
        f"cannot make {unpack_dir} to unpack the media files into ({error.strerror}); nothing was changed"
    )
    assert f"{UNCHANGED}: the restore stopped before it created anything" in errors
    assert env.states() == ["checking"]
    assert env.runner.calls_to("tar") == []
    assert "unexpected failure" not in env.text()
    assert_live_untouched(env)


# --- 9. leftover set-aside databases --------------------------------------------------------------


def test_leftover_aside_databases_of_this_project_are_warned_about(env):
    ours = ASIDE_PREFIX + "20261101T010203"
    env.engine.databases |= {
        ours,
        "djangoops_before_shop_x_20261101T010203",  # project shop_x's
        ASIDE_PREFIX + "20261101T010203_copy",  # not a whole stamp
    }
    assert env.run("--yes") == Exit.OK
    assert env.engine.args_of("list_databases") == [(ASIDE_PREFIX,)]
    warnings = [w for w in env.messages("WARN") if "set aside by an earlier restore" in w]
    assert warnings == [
        f'database {ours}, set aside by an earlier restore, is still there: it holds what "{LIVE}" held before '
        "that restore"
    ]


def test_a_failed_listing_of_leftovers_does_not_stop_the_restore(env):
    env.engine.fail["list_databases"] = Failure(Exit.DB_UNAVAILABLE, "could not list")
    assert env.run("--yes") == Exit.OK
    assert "set aside by an earlier restore" not in env.text()


# --- 3. the swap and its undo -------------------------------------------------------------------


SWAP_ERRORS = {
    "refused": Failure(Exit.REFUSED, f'the swap was refused: lock timeout; database "{LIVE}" is unchanged'),
    "interrupted": Interrupted(SIGTERM),
    "lost": Failure(Exit.DB_UNAVAILABLE, "the connection was lost after the renames were sent"),
}
SWAP_CODES = {"refused": Exit.REFUSED, "interrupted": Exit.INTERRUPTED, "lost": Exit.DB_UNAVAILABLE}


def _swap_stopped(env, error, side):
    """The swap raises SWAP_ERRORS[ERROR], the server then SIDE ("before" or
    "after") of it; checks the exit code. The engine and the aside database."""
    env.engine.fail["swap"] = SWAP_ERRORS[error]
    env.engine.side = side
    assert env.run("--yes") == SWAP_CODES[error]
    return env.engine, env.engine.aside()


@pytest.mark.parametrize("error", SWAP_ERRORS)
def test_swap_stopped_before_it_happened(env, error):
    engine, aside = _swap_stopped(env, error, "before")
    after = engine.after("swap")
    assert after == [
        ("stop_own_statements", ()),
        ("swap_state", (LIVE, WORK, aside)),
        ("reopen", (LIVE,)),
        ("drop_if_empty", (aside,)),
        ("drop_database", (WORK,)),
    ]
    assert env.states() == ["checking", "loading", "swapping"]
    assert f"{UNCHANGED}: the restore stopped before the swap" in env.messages("ERROR")
    assert env.safety_sets() == []
    if error == "interrupted":
        assert "interrupted by SIGTERM: stopped" in env.messages("ERROR")


def test_swap_stopped_before_it_happened_keeps_an_aside_database_that_is_not_empty(env):
    env.engine.fail["swap"] = Interrupted(SIGTERM)
    env.engine.kept = "it holds 3 tables"
    assert env.run("--yes") == Exit.INTERRUPTED
    aside = env.engine.aside()
    assert f"kept {aside}, made for the swap: it holds 3 tables" in env.messages("WARN")
    assert ("drop_database", (aside,)) not in env.engine.calls
    assert f"{UNCHANGED}: the restore stopped before the swap" in env.messages("ERROR")


@pytest.mark.parametrize("error", ["interrupted", "lost"])
def test_swap_stopped_just_after_it_happened(env, error):
    engine, aside = _swap_stopped(env, error, "after")
    assert [name for name, _args in engine.after("swap")] == ["stop_own_statements", "swap_state", "reopen"]
    assert not [args for name, args in engine.after("swap") if name.startswith("drop")]
    assert (
        f'the restore stopped just after the swap: database "{LIVE}" holds the restored backup; what it held '
        f"before is in database {aside}"
    ) in env.messages("ERROR")
    assert not [e for e in env.messages("ERROR") if "is unchanged" in e]
    assert env.safety_sets() == []


@pytest.mark.parametrize("how", ["unknown", "swap_state_fails", "swap_state_command_fails"])
def test_swap_stopped_where_the_server_cannot_tell_drops_nothing(env, how):
    env.engine.fail["swap"] = Interrupted(SIGTERM)
    env.engine.side = "unknown"
    if how == "swap_state_fails":
        env.engine.side = "before"  # never read: the question fails
        env.engine.fail["swap_state"] = Failure(Exit.DB_UNAVAILABLE, "cannot connect")
    elif how == "swap_state_command_fails":
        env.engine.side = "after"
        env.engine.fail["swap_state"] = CommandFailed("psql", ["psql"], None, "", timed_out=True, timeout=30)
    assert env.run("--yes") == Exit.INTERRUPTED

    engine = env.engine
    aside = engine.aside()
    assert [name for name, _args in engine.after("swap")] == ["stop_own_statements", "swap_state"]
    assert (
        f"the restore stopped during the swap and the server could not be asked which side of it database "
        f'"{LIVE}" is on: nothing was dropped; databases "{LIVE}", "{WORK}", "{aside}" are as the server left '
        "them (check them before anything else)"
    ) in env.messages("ERROR")
    assert not [e for e in env.messages("ERROR") if "is unchanged" in e]


def test_a_failed_reopen_says_the_live_database_may_refuse_connections(env):
    env.engine.fail["swap"] = Failure(Exit.REFUSED, "the swap was refused")
    env.engine.fail["reopen"] = Failure(Exit.DB_UNAVAILABLE, "permission denied")
    assert env.run("--yes") == Exit.REFUSED
    errors = env.messages("ERROR")
    assert f'database "{LIVE}" may still refuse connections (permission denied); open it as its owner' in errors
    assert f"{UNCHANGED}: the restore stopped before the swap" in errors
    assert env.engine.calls[-1] == ("drop_database", (WORK,))


def test_put_in_place_stopped_before_it_happened(env):
    env.engine.databases = set()
    env.engine.fail["put_in_place"] = Interrupted(SIGTERM)
    assert env.run("--yes") == Exit.INTERRUPTED
    assert [name for name, _args in env.engine.after("put_in_place")] == [
        "stop_own_statements",
        "swap_state",
        "drop_database",
    ]
    assert env.engine.args_of("swap_state") == [(LIVE, WORK, "")]
    assert env.engine.calls[-1] == ("drop_database", (WORK,))
    assert f"{UNCHANGED}: the restore stopped before the swap" in env.messages("ERROR")


def test_put_in_place_stopped_after_it_happened(env):
    env.engine.databases = set()
    env.engine.fail["put_in_place"] = Interrupted(SIGTERM)
    env.engine.side = "after"
    assert env.run("--yes") == Exit.INTERRUPTED
    assert [name for name, _args in env.engine.after("put_in_place")] == ["stop_own_statements", "swap_state", "reopen"]
    assert f'the restore stopped just after the swap: database "{LIVE}" holds the restored backup' in env.messages(
        "ERROR"
    )
    assert "what it held before" not in env.text()


def test_put_in_place_stopped_where_the_server_cannot_tell_names_only_real_databases(env):
    # No live database, so nothing was set aside: the message names no empty one.
    env.engine.databases = set()
    env.engine.fail["put_in_place"] = Interrupted(SIGTERM)
    env.engine.side = "unknown"
    assert env.run("--yes") == Exit.INTERRUPTED
    assert [name for name, _args in env.engine.after("put_in_place")] == ["stop_own_statements", "swap_state"]
    (message,) = [e for e in env.messages("ERROR") if "could not be asked" in e]
    assert message == (
        f"the restore stopped during the swap and the server could not be asked which side of it database "
        f'"{LIVE}" is on: nothing was dropped; databases "{LIVE}", "{WORK}" are as the server left them (check '
        "them before anything else)"
    )


# --- 2. signals at each step -----------------------------------------------------------------


def test_interrupted_while_unpacking_media(env):
    env.with_media()
    env.first("tar", interrupt=SIGTERM)
    assert env.run("--yes", "--with-media") == Exit.INTERRUPTED
    errors = env.messages("ERROR")
    assert errors[0] == "interrupted by SIGTERM: stopped"
    assert f"{UNCHANGED}: the restore stopped before it created anything" in errors
    assert_live_untouched(env)


def test_interrupted_while_loading(env):
    env.engine.fail["load"] = Interrupted(SIGTERM)
    assert env.run("--yes") == Exit.INTERRUPTED
    errors = env.messages("ERROR")
    assert errors[0] == "interrupted by SIGTERM: stopped"
    assert f"{UNCHANGED}: the restore stopped before the swap" in errors
    assert env.engine.calls[-2:] == [("stop_own_statements", ()), ("drop_database", (WORK,))]
    assert_live_untouched(env)


def test_interrupted_while_swapping_media(env, monkeypatch):
    env.with_media()
    fail_rename(monkeypatch, env, 1, Interrupted(SIGTERM))
    assert env.run("--yes", "--with-media") == Exit.INTERRUPTED
    aside = env.engine.aside()
    assert env.states()[-1] == "swapped"
    assert (
        f'database "{LIVE}" holds the restored backup, but the restore stopped before it saved what the '
        f"database held before: that stays in database {aside} (restore_db.sh cannot bring it back from there; "
        "dump it, or drop it once you no longer need it)"
    ) in env.messages("ERROR")
    assert ("drop_database", (aside,)) not in env.engine.calls
    assert "allow_connections" not in env.engine.names()
    assert env.safety_sets() == []
    assert env.media_files() == ["old.txt"]


def test_interrupted_while_swapping_media_with_no_live_database(env, monkeypatch):
    env.with_media()
    env.engine.databases = set()
    fail_rename(monkeypatch, env, 1, Interrupted(SIGTERM))
    assert env.run("--yes", "--with-media") == Exit.INTERRUPTED
    assert f'database "{LIVE}" holds the restored backup' in env.messages("ERROR")
    assert "stays in database" not in env.text()


def test_interrupted_during_the_safety_backup_keeps_the_aside_database(env):
    env.first("pg_dump", interrupt=SIGTERM)
    assert env.run("--yes") == Exit.INTERRUPTED
    aside = env.engine.aside()
    assert env.states()[-1] == "saving"
    assert (
        f'database "{LIVE}" holds the restored backup; what it held before was not saved as a safety backup and '
        f"stays in database {aside} (drop it once you no longer need it)"
    ) in env.messages("ERROR")
    assert "snapshot_abandon" in env.engine.names()
    assert ("drop_database", (aside,)) not in env.engine.calls
    assert aside in env.engine.databases
    assert env.safety_sets() == []
    assert not [n for n in env.files() if "partial" in n]


# --- 4. a failure after the swap -------------------------------------------------------------------


def unpacked_dir(env):
    """Where this run unpacks the media archive, beside MEDIA_ROOT."""
    return f"{env.media_dir}.restoring.{os.getpid()}"


def media_not_swapped(env, error):
    """The ERROR logged as soon as the media swap fails."""
    return (
        f"the media files could not be swapped in ({error}); MEDIA_ROOT {env.media_dir} is as it was, the unpacked "
        f"files are in {unpacked_dir(env)}"
    )


def media_partial(env, error, taken=""):
    """The final PARTIAL failure of a restore whose media swap failed."""
    return (
        f'database "{LIVE}" holds the restored backup{taken}, but its media files could not be swapped in: {error}; '
        f"MEDIA_ROOT {env.media_dir} is as it was, the unpacked files are in {unpacked_dir(env)}"
    )


def test_a_failed_media_swap_lets_a_live_analyze_end(live_analyze, monkeypatch):
    env = live_analyze
    env.with_media()
    fail_rename(monkeypatch, env, 1, OSError(18, "Invalid cross-device link"))
    assert env.run("--yes", "--with-media") == Exit.PARTIAL
    assert env.engine.args_of("finish_analyze") == [(("analyzing", LIVE),)]
    assert "stop_analyze" not in env.engine.names()


@pytest.mark.parametrize("error", [OSError(18, "Invalid cross-device link"), Failure(Exit.CONFIG, "no")])
def test_a_failed_media_swap_still_takes_the_safety_copy_and_exits_partial(env, monkeypatch, error):
    env.with_media()
    fail_rename(monkeypatch, env, 1, error)
    assert env.run("--yes", "--with-media") == Exit.PARTIAL

    aside = env.engine.aside()
    (safety,) = env.safety_sets()
    assert env.engine.args_of("allow_connections") == [(aside,)]
    assert env.engine.calls[-1] == ("drop_database", (aside,))
    assert env.states() == ["checking", "loading", "swapping", "swapped", "saving", "done"]
    errors = env.messages("ERROR")
    assert errors[:2] == [
        media_not_swapped(env, error),
        media_partial(env, error, f" (what it held before is in {safety})"),
    ]
    assert errors[2].startswith("failed with exit code 15 after") and len(errors) == 3
    # The media failure is logged at once, before the safety backup is taken.
    states = [m.split(":", 2)[1].strip() if m.startswith("restore: ") else m for m in env.messages()]
    assert states.index(media_not_swapped(env, error)) < states.index("saving")
    assert f"is in {safety} (restore_db.sh {safety} brings it back)" in env.text()
    assert env.media_files() == ["old.txt"]


def test_a_failed_media_swap_keeps_the_unpacked_files_it_names(env, monkeypatch):
    env.with_media()
    fail_rename(monkeypatch, env, 1, OSError(16, "Device or resource busy"))
    assert env.run("--yes", "--with-media") == Exit.PARTIAL
    named = [e.rsplit("the unpacked files are in ", 1)[1] for e in env.messages("ERROR") if "unpacked files" in e]
    assert named == [unpacked_dir(env)] * 2  # at once, and in the final failure
    assert os.listdir(unpacked_dir(env)) == ["new.txt"]
    assert env.media_leftovers() == [os.path.basename(unpacked_dir(env))]
    assert env.media_files() == ["old.txt"]


def test_a_media_swap_failing_at_its_second_rename_leaves_media_root_as_it_was(env, monkeypatch):
    # The old tree was already renamed aside: it is put back as MEDIA_ROOT.
    env.with_media()
    error = OSError(28, "No space left on device")
    fail_rename(monkeypatch, env, 2, error)
    assert env.run("--yes", "--with-media") == Exit.PARTIAL
    assert env.messages("ERROR")[0] == media_not_swapped(env, error)
    assert env.media_files() == ["old.txt"]
    assert env.media_leftovers() == [os.path.basename(unpacked_dir(env))]  # no old tree left aside
    assert os.listdir(unpacked_dir(env)) == ["new.txt"]
    assert len(env.safety_sets()) == 1


def test_a_failed_directory_flush_after_the_media_swap_is_not_reported_as_no_swap(env, monkeypatch):
    env.with_media()
    parent = os.path.dirname(env.media_dir)
    real = os.open

    def open_(path, flags, *args, **kwargs):
        if os.fspath(path) == parent and flags == os.O_RDONLY:
            raise PermissionError(13, "Permission denied", path)
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    # The swap stands: a warning, not a failure.
    assert env.run("--yes", "--with-media") == Exit.OK
    assert env.media_files() == ["new.txt"]
    (old,) = env.media_leftovers()
    assert re.fullmatch(r"media\.before-restore-\d{8}T\d{6}Z", old)
    assert f"could not flush the directory of {env.media_dir} (Permission denied); the swap is done" in env.messages(
        "WARN"
    )
    assert f"media restored into {env.media_dir}; the previous files are in {os.path.join(parent, old)}" in (
        env.messages("INFO")
    )
    assert env.messages("ERROR") == []
    assert "is as it was" not in env.text()


def test_a_failed_media_swap_without_a_live_database_claims_no_safety_copy(env, monkeypatch):
    env.with_media()
    env.engine.databases = set()
    error = OSError(16, "Device or resource busy")
    fail_rename(monkeypatch, env, 1, error)
    assert env.run("--yes", "--with-media") == Exit.PARTIAL
    assert env.safety_sets() == []
    assert env.states() == ["checking", "loading", "swapping", "swapped", "done"]
    assert env.messages("ERROR")[:2] == [media_not_swapped(env, error), media_partial(env, error)]
    assert "what it held before" not in env.text()
    assert "safety copy" not in env.text()


def test_a_failed_media_swap_is_logged_even_when_the_safety_save_fails(env, monkeypatch):
    env.with_media()
    env.database = dataclasses.replace(env.database, min_free_mb=1 << 40)
    error = OSError(16, "Device or resource busy")
    fail_rename(monkeypatch, env, 1, error)
    # After the swap: exit 15 with the cause of the failed safety backup.
    assert env.run("--yes", "--with-media") == Exit.PARTIAL
    aside = env.engine.aside()
    assert env.states() == ["checking", "loading", "swapping", "swapped", "saving"]
    errors = env.messages("ERROR")
    assert errors[0] == media_not_swapped(env, error)
    assert "a backup needs" in errors[1]
    assert (
        f'database "{LIVE}" holds the restored backup; what it held before was not saved as a safety backup and '
        f"stays in database {aside} (drop it once you no longer need it)"
    ) in errors
    assert aside in env.engine.databases
    assert env.media_files() == ["old.txt"]
    assert os.listdir(unpacked_dir(env)) == ["new.txt"]


# --- 5. the safety backup fails --------------------------------------------------------------------


def _no_space_for_safety(env):
    env.database = dataclasses.replace(env.database, min_free_mb=1 << 40)


def _dump_fails(env):
    env.first("pg_dump", fail=1, stderr="pg_dump: error: connection to server lost")


def _allow_fails(env):
    env.engine.fail["allow_connections"] = Failure(Exit.DB_UNAVAILABLE, "ALTER DATABASE failed")


SAVING_FAILURES = {
    "no_space": (_no_space_for_safety, Exit.PARTIAL, "a backup needs"),
    "dump_fails": (_dump_fails, Exit.PARTIAL, "pg_dump failed (exit code 1): pg_dump: error: connection"),
    "allow_connections_fails": (_allow_fails, Exit.PARTIAL, "ALTER DATABASE failed"),
}


def _assert_kept_aside(env):
    """After a safety backup failed: the restored database is live, what it
    held before stays in the aside database, named in an error; no safety
    set. The errors logged."""
    engine = env.engine
    aside = engine.aside()
    assert env.states() == ["checking", "loading", "swapping", "swapped", "saving"]
    assert ("drop_database", (aside,)) not in engine.calls
    assert aside in engine.databases and LIVE in engine.databases
    errors = env.messages("ERROR")
    assert (
        f'database "{LIVE}" holds the restored backup; what it held before was not saved as a safety backup and '
        f"stays in database {aside} (drop it once you no longer need it)"
    ) in errors
    assert env.safety_sets() == []
    return errors


@pytest.mark.parametrize("case", SAVING_FAILURES)
def test_a_failed_safety_backup_keeps_the_aside_database_and_names_it(env, case):
    # After the swap, exit 15 (the database is restored), the cause in the message.
    setup, code, message = SAVING_FAILURES[case]
    setup(env)
    assert env.run("--yes") == code
    errors = _assert_kept_aside(env)
    assert message in errors[0]
    assert not [n for n in env.files() if "partial" in n]
    assert "retention:" not in env.text()
    if case == "no_space":
        assert "allow_connections" not in env.engine.names()


def _safety_command_fails(env, monkeypatch):
    env.engine.fail["allow_connections"] = CommandFailed("psql", ["psql"], 2, "psql: error: connection to server lost")


def _safety_write_fails(env, monkeypatch):
    write_manifest = manifest.write_manifest

    def full_disk(path, *args, **kwargs):
        if "_safety." in os.path.basename(path):
            raise OSError(28, "No space left on device")
        return write_manifest(path, *args, **kwargs)

    monkeypatch.setattr(manifest, "write_manifest", full_disk)


SAVING_ERRORS = {
    "command_failed": (
        _safety_command_fails,
        "the safety backup failed: psql failed (exit code 2): psql: error: connection to server lost",
    ),
    "os_error": (_safety_write_fails, "the safety backup failed: [Errno 28] No space left on device"),
}


@pytest.mark.parametrize("case", SAVING_ERRORS)
def test_a_safety_backup_failing_with_a_command_or_os_error_exits_15(env, monkeypatch, case):
    # Not only a Failure: whatever stops the safety backup after the swap is a
    # partial restore (exit 15), never an unexpected failure (exit 1).
    setup, message = SAVING_ERRORS[case]
    setup(env, monkeypatch)
    assert env.run("--yes") == Exit.PARTIAL
    errors = _assert_kept_aside(env)
    assert errors[0] == message
    assert not any("unexpected failure" in line for line in errors)
    assert not [n for n in env.files() if "partial" in n]
    assert "retention:" not in env.text()


# --- 8. the confirmation and the command line ------------------------------------------------------


def test_a_wrong_confirmation_changes_nothing(env, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("shop_x\n"))
    assert env.run() == Exit.NOT_CONFIRMED
    err = capsys.readouterr().err
    assert f'This replaces database "{LIVE}" (user "shop_user", host local socket) with\n  {SET}\n' in err
    assert "taken 20261206T010203Z, 5 rows" in err
    assert "Type the database name to go on: " in err
    assert "confirmation did not match the database name; nothing was changed" in env.messages("ERROR")
    assert env.engine.calls == []
    assert ".lock" not in env.files()  # refused before the lock
    assert env.media_files() == ["old.txt"]


def test_an_empty_confirmation_changes_nothing(env, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert env.run() == Exit.NOT_CONFIRMED
    assert env.engine.calls == []


def test_the_right_confirmation_goes_on(env, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{LIVE}\n"))
    assert env.run(SET) == Exit.OK
    assert len(env.safety_sets()) == 1


def test_yes_skips_the_confirmation(env, monkeypatch, capsys):
    class NoInput:
        def readline(self):
            raise AssertionError("--yes must not read stdin")

    monkeypatch.setattr(sys, "stdin", NoInput())
    assert env.run("--yes") == Exit.OK
    assert "Type the database name" not in capsys.readouterr().err


def test_options_reach_the_settings(env):
    assert env.run("--yes", "--jobs", "4", "--lock-timeout", "12", "--quiet", "--lock-wait", "3") == Exit.OK
    (settings,) = env.engine_settings
    assert settings.restore_jobs == 4
    assert settings.db_lock_timeout == 12
    assert env.context.log.stderr == "none"


@pytest.mark.parametrize("jobs", ["0", "x", "-1", "²", "\u0664"])
def test_a_bad_jobs_value_is_a_usage_error(env, jobs):
    assert env.run("--yes", "--jobs", jobs) in (Exit.USAGE,)
    assert env.engine.calls == []


def test_a_set_gone_while_waiting_for_the_lock_is_refused(env, monkeypatch):
    real = common.lock

    def lock(context, wait, offsite=False):
        sets.remove_set(env.backups, SET)
        return real(context, wait, offsite)

    monkeypatch.setattr(common, "lock", lock)
    assert env.run("--yes") == Exit.BAD_BACKUP
    assert f"{SET} is gone (pruned while waiting for the lock?); nothing was changed" in env.messages("ERROR")
    assert env.engine.calls == []


def test_a_set_rewritten_while_waiting_for_the_lock_is_checked_again(env, monkeypatch):
    real = common.lock

    def lock(context, wait, offsite=False):
        with open(env.path, "r+b") as f:
            f.write(b"\0\0\0\0")
        return real(context, wait, offsite)

    monkeypatch.setattr(common, "lock", lock)
    assert env.run("--yes") == Exit.BAD_BACKUP
    assert f"{SET} does not match its sha256 checksum" in env.messages("ERROR")[0]
    assert env.engine.calls == []


def test_stale_partials_are_removed_under_the_lock(env):
    stale = os.path.join(env.backups, ".shop_20261205T010203Z_daily.sql.gz.partial")
    with open(stale, "wb") as f:
        f.write(b"half")
    assert env.run("--yes") == Exit.OK
    assert not os.path.exists(stale)
    assert "removing .shop_20261205T010203Z_daily.sql.gz.partial, left by an interrupted run" in env.messages("WARN")


# --- the Restore object on its own -----------------------------------------------------------------


def test_undo_after_done_does_nothing(env):
    job = restore.Restore(env.context, env.database, env.offsite, env.engine)
    job.state = restore.DONE
    job.undo()
    assert env.engine.calls == []


# --- 9. --from: the set fetched under the restore's own lock -------------------------------------

OLDER = "shop_20261205T010203Z_daily.sql.gz"


class Remote:
    """OLDER in off-site repository nas (not here), as restic lists it and the
    backup host's record of arrivals vouches for it; `restic restore` writes its
    files, and notes in .lock_held whether the backups lock was held then."""

    def __init__(self, env, tmp_path, monkeypatch):
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        make_set(str(elsewhere), OLDER)
        offsite_dir = tmp_path / "offsite"
        offsite_dir.mkdir()
        (offsite_dir / "password").write_text("repository-password\n")
        (offsite_dir / "nas.initialized").write_text("")
        values = {
            "dir": str(offsite_dir),
            "timeout": 60,
            "check_subset": "10%",
            "verify_from": "",
            "repositories": [
                {"name": "nas", "type": "ssh", "host": "nas.example", "port": 22, "user": "offsite", "url": ""}
            ],
        }
        (tmp_path / "offsite.json").write_text(json.dumps(values))
        env.offsite = config.load_offsite(str(tmp_path / "offsite.json"))
        listing = restic_snapshots((OLDER, manifest.sha256_of(str(elsewhere / OLDER))))
        env.runner.on(restic_rule("nas", "snapshots"), stdout=listing)
        env.runner.on(arrivals_rule, stdout=arrivals_of(listing))
        env.runner.on(restic_rule("nas", "restore"), effect=self._restore)
        self.write_files = restic_restores(set_files(str(elsewhere), OLDER))
        self.lock_held = []
        self.env = env
        restic_on_path(tmp_path / "bin", monkeypatch)

    def _restore(self, call):
        probe = Lock(os.path.join(self.env.backups, ".lock"), 0)
        try:
            probe.acquire()
        except Failure:
            self.lock_held.append(True)
        else:
            probe.release()
            self.lock_held.append(False)
        self.write_files(call)

    def restic_calls(self):
        return [call for call in self.env.runner.calls if call.programs[0] == "restic"]


@pytest.fixture
def remote(env, tmp_path, monkeypatch):
    return Remote(env, tmp_path, monkeypatch)


@pytest.mark.parametrize("which", [[OLDER], [], ["--arrived-before", "2026-12-06 00:00"]])
def test_from_fetches_the_set_under_the_restores_own_lock_and_restores_it(env, remote, which):
    # SET (here, latest) is newer than anything off-site: --from restores what the
    # repository holds, by name, as its newest, or by its arrival there.
    assert env.run(*which, "--from", "nas", "--yes") == Exit.OK

    assert remote.lock_held == [True], "a backup's retention could remove the set between the fetch and the restore"
    fetched = os.path.join(env.backups, OLDER)
    assert env.engine.args_of("load") == [(fetched, WORK, None)]
    assert any(m.startswith(f"fetched {OLDER} from nas: sha256 and manifest good") for m in env.messages("INFO"))
    assert env.states() == ["checking", "loading", "swapping", "swapped", "saving", "done"]
    assert f'database "{LIVE}" holds {OLDER}' in env.text()
    assert manifest.check_sha256(fetched + ".sha256") is None
    assert os.readlink(os.path.join(env.backups, "latest")) == SET  # a fetch does not move latest


def test_from_asks_before_it_fetches_and_a_wrong_answer_fetches_nothing(env, remote, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("shop_x\n"))
    assert env.run("--from", "nas") == Exit.NOT_CONFIRMED
    err = capsys.readouterr().err
    assert f'This replaces database "{LIVE}" (user "shop_user", host local socket) with\n' in err
    assert "  its newest set from off-site repository nas, fetched and checked first.\n" in err
    assert remote.restic_calls() == []
    assert env.engine.calls == []
    assert env.files() == env.published


def test_from_a_repository_that_fails_the_fetch_exits_14_with_the_live_database_untouched(env, remote):
    env.first(restic_rule("nas", "restore"), fail=1, stderr="Fatal: unable to open repository")
    assert env.run("--from", "nas", "--yes") == Exit.OFFSITE_FAILED
    assert f"{OLDER} could not be fetched from nas; nothing was published" in env.messages("ERROR")
    assert env.engine.calls == []
    assert_live_untouched(env)


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--arrived-before", "2026-12-06"], Exit.USAGE, "--arrived-before chooses among an off-site repository's"),
        (["--from", "tape"], Exit.USAGE, "no off-site repository named 'tape'; configured: nas"),
        ([OLDER, "--from", "nas", "--arrived-before", "2026-12-06"], Exit.USAGE, f"name a set ({OLDER}) or give"),
        (["--from", "nas", "--arrived-before", "noon"], Exit.USAGE, "--arrived-before 'noon' is not a time"),
    ],
)
def test_from_refuses_a_bad_request_before_anything_runs(env, remote, args, code, error):
    assert env.run(*args, "--yes") == code
    assert env.messages("ERROR")[0].startswith(error)
    assert env.runner.calls == []
    assert env.engine.calls == []


def test_from_without_repositories_exits_3(env):
    assert env.run("--from", "nas", "--yes") == Exit.CONFIG
    assert env.messages("ERROR") == ["no off-site repository is configured (db_backup_offsite_repositories)"]
    assert env.engine.calls == []


# --- --to-time: the project user's side (the root side is pitr.py's, test_pitr.py) ----------

MOMENT = "2026-12-06 17:59:30+00:00"
UTC_MOMENT = "2026-12-06 17:59:30.000000+00"
READY = {"socket_dir": "/var/lib/djangoops-pitr/shop/run", "port": 5499, "target": UTC_MOMENT, "recovered_to": ""}


@pytest.fixture
def root_side(env, monkeypatch):
    """The pipes the root side opens, its answers written beforehand (MESSAGES, a list to
    fill before the run); what the child asked is in .asked() afterwards. The scratch
    cluster's engine is .scratch, an engine of its own, its connection noted in .elsewhere;
    .locked_at_ask says whether the backups lock was held when the child asked."""
    side = RootSide(monkeypatch, env.run)
    side.elsewhere, side.locked_at_ask = [], []
    side.scratch = FakeEngine(env.runner, env.context.log)

    def elsewhere(host, port):
        side.elsewhere.append((host, port))
        return side.scratch

    real_ask = pitr.Channel.ask

    def ask(channel, log):
        lock = os.open(os.path.join(env.backups, ".lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            side.locked_at_ask.append(False)
        except BlockingIOError:
            side.locked_at_ask.append(True)
        finally:
            os.close(lock)
        return real_ask(channel, log)

    monkeypatch.setattr(pitr.Channel, "ask", ask)

    monkeypatch.setattr(env.engine, "elsewhere", elsewhere, raising=False)
    return side


def test_to_time_takes_the_database_from_the_recovered_cluster_and_swaps_it_in(env, root_side):
    root_side.messages = [
        {"log": "pgBackRest restores the cluster"},
        {"ready": READY},
        {"log": "the scratch cluster is stopped and removed"},
        {"removed": True},
    ]
    assert root_side.run("--to-time", MOMENT, "--yes") == Exit.OK

    # Asked under the lock; told to remove the scratch cluster before the swap.
    assert root_side.asked() == '{"ask": "scratch"}\n{"ask": "remove"}\n'
    assert root_side.locked_at_ask == [True]
    messages = env.messages()
    assert messages.index("the scratch cluster is stopped and removed") < messages.index(
        'restore: swapping: database "shop" is set aside and djangoops_restore_shop takes its name, in one step'
    )
    assert root_side.elsewhere == [(READY["socket_dir"], "5499")]
    assert env.states() == ["checking", "loading", "swapping", "swapped", "saving", "done"]
    # Dumped from the recovered cluster under the live database's name; from the live one, only the
    # set-aside database (the safety backup).
    assert root_side.scratch.names() == ["check_connection", "snapshot_begin", "dump_stage", "snapshot_counts"]
    assert root_side.scratch.args_of("dump_stage") == [(LIVE,)]
    assert env.engine.args_of("dump_stage") == [(env.engine.aside(),)]
    (loaded,) = env.engine.args_of("load")
    assert re.search(r"/\.pitr-\d+\.partial/shop_\d{8}T\d{6}Z_pitr\.sql\.gz$", loaded[0]), loaded
    assert "pgBackRest restores the cluster" in env.messages("INFO")
    assert env.messages()[-2] == f'database "{LIVE}" holds what it held at 2026-12-06 17:59:30.000000+00'
    assert len(env.safety_sets()) == 1
    # The point-in-time set was this run's own: gone, and never published or made latest.
    assert [n for n in env.files() if "pitr" in n] == []
    assert sets.latest_name(env.backups) == SET


def test_to_time_when_the_root_side_fails_changes_nothing(env, root_side):
    failed = {"code": 9, "message": "pgBackRest could not restore the cluster (exit 1); the live database is unchanged"}
    root_side.messages = [{"log": "pgBackRest restores the cluster"}, {"failed": failed}]
    assert root_side.run("--to-time", MOMENT, "--yes") == Exit.RESTORE_FAILED
    assert env.messages("ERROR")[0] == failed["message"]
    assert root_side.elsewhere == []
    assert_live_untouched(env)


def test_to_time_when_the_root_side_ends_without_an_answer_changes_nothing(env, root_side):
    assert root_side.run("--to-time", MOMENT, "--yes") == Exit.INTERNAL
    assert "ended without recovering the cluster; nothing was changed" in env.messages("ERROR")[0]
    assert_live_untouched(env)


def test_to_time_a_failed_dump_from_the_recovered_cluster_leaves_the_live_database_unchanged(env, root_side):
    root_side.messages = [{"ready": READY}]
    env.first("pg_dump", fail=1, stderr='pg_dump: error: database "shop" does not exist')
    assert root_side.run("--to-time", MOMENT, "--yes") == Exit.RESTORE_FAILED
    error = env.messages("ERROR")[0]
    assert error.startswith(f'taking database "{LIVE}" from the recovered cluster failed: pg_dump failed')
    assert error.endswith(UNCHANGED)
    assert root_side.scratch.names() == ["check_connection", "snapshot_begin", "dump_stage", "snapshot_abandon"]
    assert root_side.asked() == '{"ask": "scratch"}\n{"ask": "remove"}\n'
    assert_live_untouched(env)


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--to-time", MOMENT, SET], Exit.USAGE, "--to-time restores the database as it was at that moment"),
        (["--to-time", MOMENT, "--from", "nas"], Exit.USAGE, "--to-time restores the database as it was"),
        (["--to-time", MOMENT, "--with-media"], Exit.USAGE, "--to-time restores the database as it was"),
        (["--to-time", "yesterday"], Exit.USAGE, "--to-time takes a date and time such as"),
        (["--to-time", "2999-01-01 00:00"], Exit.USAGE, "--to-time '2999-01-01 00:00' is in the future"),
        (["--to-time", MOMENT], Exit.CONFIG, "restore_db.sh --to-time must be started as root"),
    ],
)
def test_to_time_refuses_a_bad_request_before_anything_changes(env, args, code, error):
    assert env.run(*args, "--yes") == code
    assert env.messages("ERROR")[0].startswith(error)
    assert_live_untouched(env)


def test_to_time_refuses_a_cluster_recovered_to_another_moment(env, root_side):
    root_side.messages = [{"ready": {**READY, "target": "2026-12-01 10:00:00.000000+00"}}]
    assert root_side.run("--to-time", MOMENT, "--yes") == Exit.INTERNAL
    assert env.messages("ERROR")[0] == (
        f'the cluster was recovered to 2026-12-01 10:00:00.000000+00, not to {UTC_MOMENT}; database "shop" is unchanged'
    )
    assert root_side.elsewhere == []
    assert root_side.asked() == '{"ask": "scratch"}\n{"ask": "remove"}\n'
    assert_live_untouched(env)


def test_to_time_on_mariadb_takes_the_database_from_the_scratch_servers_socket(env, root_side):
    """On MariaDB the root side answers with the scratch server's socket itself; the
    restore goes on as on PostgreSQL."""
    env.database = dataclasses.replace(env.database, engine="mysql")
    socket = "/var/lib/djangoops-pitr/shop/run/mysqld.sock"
    root_side.messages = [{"ready": {**READY, "socket": socket}}, {"removed": True}]
    assert root_side.run("--to-time", MOMENT, "--yes") == Exit.OK
    assert root_side.elsewhere == [(socket, "5499")]
    assert "the server is recovered aside first" in " ".join(env.messages("INFO"))
