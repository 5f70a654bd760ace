"""Shared set-up for the command tests (backup, verify, listing, off-site, jobs):
a project laid out in tmp_path (values files, backups, logs, metrics), a
Context whose runner is a FakeRunner, a FakeEngine that runs its queries
through that runner, and backup sets written as backup_db.sh publishes them.

Nothing external ever runs: every program goes through the FakeRunner, and the
health-check pings are recorded instead of sent. Locks are real (flock on the
files in tmp_path); the ones a command leaves held (a command is a process of
its own in production, and its exit lets them go) are released when the test
ends."""

import copy
import hashlib
import json
import os
import types

import pytest
from djangoops import config, context, lock, manifest, sets
from djangoops.commands import common
from djangoops.engines import base
from djangoops.errors import Exit, Failure
from djangoops.runner import CommandFailed, Stage
from fakes import FakeRunner

PROJECT = "shop"
# A stamp no clock sets: new_stamp() is replaced by it, so names and kinds are known.
STAMP = "20261210T020000Z"
NEW_SET = f"{PROJECT}_{STAMP}_monthly.pgdump.zst"
COMPRESS = "-q -c -"  # in the compressor's argv only (the decompressor's is "-q -d -c")
TABLES = {"public.a": 2, "public.b": 0}
# database.json for a project on the local PostgreSQL, its credentials in a client file.
DATABASE_VALUES = {
    "engine": "postgresql",
    "credentials_source": "vars",
    "client_file": "",
    "db_name": "shop",
    "db_user": "shop",
    "db_host": "",
    "db_port": 0,
    "django_python": "",
    "django_src_dir": "",
    "django_settings": "",
    "django_db_alias": "",
    "pg_maintenance_db": "postgres",
    "excluded_table_data": ["django_session"],
    "postgresql_format": "custom",
    "compression": "zstd",
    "zstd_level": 1,
    "threads": 0,
    "rotation": "gfs",
    "keep": {"daily": 7, "weekly": 4, "monthly": 6, "safety": 2},
    "min_free_mb": 0,
    "lock_wait": 0,
    "db_lock_timeout": 30,
    "restore_jobs": 1,
    "media_dir": "",
    "healthcheck_urls": {},
}


def shop_project(home, commands_dir, backups_dir, logs_dir, metrics_dir=""):
    """The config.Project "shop" (user shop, no group), its directories as given."""
    return config.Project(
        name=PROJECT,
        user="shop",
        group=None,
        home=str(home),
        commands_dir=str(commands_dir),
        backups_dir=str(backups_dir),
        logs_dir=str(logs_dir),
        metrics_dir=str(metrics_dir),
    )


PG_DUMP_TEXT = (
    b"--\n-- PostgreSQL database dump\n--\n"
    b"CREATE TABLE public.a (\n    id integer\n);\n"
    b"CREATE TABLE public.b (\n    id integer\n);\n"
    b"COPY public.a (id) FROM stdin;\n1\n2\n\\.\n"
    b"COPY public.b (id) FROM stdin;\n\\.\n"
    b"--\n-- PostgreSQL database dump complete\n--\n"
)


def first(fake, match=None, **behaviour):
    """A FakeRunner rule put before every rule already there (to override a
    fixture's)."""
    rule = fake.on(match, **behaviour)
    fake.rules.remove(rule)
    fake.rules.insert(0, rule)
    return rule


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class CommandEnv:
    """A project in ROOT (tmp_path): its values files, directories and runner."""

    def __init__(self, root, monkeypatch):
        self.root = root
        self.monkeypatch = monkeypatch
        self.engine_dir = root / "lib" / PROJECT
        self.config_dir = root / "etc" / PROJECT
        self.backups = root / "db_backups"
        self.logs = root / "logs"
        self.metrics_dir = root / "metrics"
        self.offsite_dir = root / "offsite"
        self.media = root / "media"
        self.src = root / "src"
        self.venv = root / "venv"
        for directory in (
            self.engine_dir,
            self.config_dir,
            self.backups,
            self.logs,
            self.metrics_dir,
            self.offsite_dir,
            self.src,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        self.client_file = root / "pgpass"
        self.client_file.write_text("*:*:*:*:secret\n")
        (self.offsite_dir / "password").write_text("repository-password\n")
        self.project = shop_project(root, root / "commands", self.backups, self.logs, self.metrics_dir)
        self.fake = FakeRunner()
        self.pings = []
        self.contexts = []
        self.write_database()
        self.write_offsite()

    # --- values files -------------------------------------------------------------------------

    def database_values(self, **overrides):
        return {**copy.deepcopy(DATABASE_VALUES), "client_file": str(self.client_file), **overrides}

    def write_database(self, **overrides):
        (self.config_dir / "database.json").write_text(json.dumps(self.database_values(**overrides)))

    def write_offsite(self, repositories=(), **overrides):
        """REPOSITORIES: names of ssh repositories (each marked as created)."""
        values = {
            "dir": str(self.offsite_dir),
            "timeout": 60,
            "check_subset": "10%",
            "verify_from": "",
            "repositories": [
                {"name": name, "type": "ssh", "host": f"{name}.example", "port": 22, "user": "offsite", "url": ""}
                for name in repositories
            ],
        }
        values.update(overrides)
        for name in repositories:
            (self.offsite_dir / f"{name}.initialized").write_text("")
        (self.config_dir / "offsite.json").write_text(json.dumps(values))

    def write_jobs(self, jobs, **overrides):
        """JOBS: {name: command} (on the host) or {name: (command, container, url)}."""
        table = {}
        for name, spec in jobs.items():
            command, container, url = (spec, "", "") if isinstance(spec, str) else spec
            table[name] = {"command": command, "container": container, "healthcheck_url": url}
        values = {
            "src_dir": str(self.src),
            "venv_dir": str(self.venv),
            "settings_module": "shop.settings",
            "jobs": table,
        }
        values.update(overrides)
        (self.config_dir / "jobs.json").write_text(json.dumps(values))

    # --- running a command --------------------------------------------------------------------

    def context(self, script):
        """A Context of SCRIPT whose runner is self.fake (open() keeps it)."""
        ctx = context.Context(script, self.project, str(self.config_dir), str(self.engine_dir), quiet=True)
        ctx.runner = self.fake
        run_dir = self.root / f"run.{script}.{len(self.contexts)}"
        run_dir.mkdir()
        ctx.run_dir = str(run_dir)
        self.contexts.append(ctx)
        return ctx

    def run(self, command, args=(), script="backup_db"):
        """COMMAND(context, ARGS) run to its end; its exit code."""
        return context.run_command(self.context(script), command, list(args))

    def log(self, script="backup_db"):
        return read(self.logs / f"{script}.log")

    def lines(self, level, script="backup_db"):
        """The messages of the log lines at LEVEL, without stamp, name and pid."""
        found = []
        for line in self.log(script).splitlines():
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[2] == level:
                found.append(parts[3] if len(parts) > 3 else "")
        return found

    def metrics(self, script="backup_db"):
        return read(self.metrics_dir / f"djangoops_{PROJECT}_{script}.prom")

    def metric(self, name, script="backup_db"):
        """The value of djangoops_NAME in SCRIPT's metrics file, or None."""
        for line in self.metrics(script).splitlines():
            if line.startswith(f"djangoops_{name}{{"):
                return line.rsplit(None, 1)[1]
        return None

    def published(self):
        """The files in the backups directory but the lock files, sorted."""
        return sorted(name for name in os.listdir(self.backups) if name not in (".lock", ".offsite.lock"))


@pytest.fixture
def held_locks(monkeypatch):
    """Every Lock acquired during the test, released at its end."""
    held = []
    acquire = lock.Lock.acquire

    def recording(self):
        result = acquire(self)
        held.append(self)
        return result

    monkeypatch.setattr(lock.Lock, "acquire", recording)
    yield held
    for item in held:
        item.release()


def restic_on_path(bin_dir, monkeypatch):
    """restic "installed" in BIN_DIR, first on PATH (shutil.which finds it; the
    FakeRunner answers its calls); returns BIN_DIR."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "restic").write_text("#!/bin/sh\nexit 99\n")
    (bin_dir / "restic").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return bin_dir


@pytest.fixture
def cmd(tmp_path, monkeypatch, held_locks):
    """A CommandEnv; health-check pings recorded in .pings, never sent."""
    env = CommandEnv(tmp_path, monkeypatch)

    def ping(url, what):
        env.pings.append((url, what))

    monkeypatch.setattr(context.healthcheck, "ping", ping)
    env.bin_dir = restic_on_path(tmp_path / "bin", monkeypatch)
    monkeypatch.delenv("QUIET", raising=False)
    monkeypatch.delenv("DJANGOOPS_STDERR", raising=False)
    return env


# --- the engine -------------------------------------------------------------------------------


class FakeEngine(base.Engine):
    """An engine whose queries run through the runner (psql, as the real one),
    so that tests script them on the FakeRunner; what it was asked to do is in
    SPEC.calls. SPEC (a class attribute, set by install_engine) says how it
    behaves."""

    name = "postgresql"
    dump_name = "pg_dump"
    django_engines = (r"\.postgresql$",)
    spec = None

    def __init__(self, runner, connection, settings, log, run_dir, script=""):
        super().__init__(runner, connection, settings, log, run_dir, script)
        self.spec.instances.append(self)

    def _record(self, *call):
        self.spec.calls.append(call)

    @classmethod
    def client_file_text(cls, connection, password):
        return f"*:*:*:*:{password}\n"

    def check_tools(self):
        self._record("check_tools")

    def check_connection(self):
        self._record("check_connection")
        try:
            self.runner.run(["psql", "-X", "-tA", "-c", "SELECT 1"], name="psql")
        except CommandFailed as failed:
            raise Failure(
                Exit.DB_UNAVAILABLE, f'cannot connect to database "{self.connection.name}": {failed}'
            ) from None

    def counts_in_snapshot(self):
        return self.spec.snapshot

    def snapshot_begin(self, database):
        self._record("snapshot_begin", database)
        return base.Snapshot("00000003-0000001B-1")

    def dump_stage(self, database, snapshot=None):
        argv = ["pg_dump", "--format=custom" if snapshot else "--format=plain"]
        if snapshot is not None:
            argv.append(f"--snapshot={snapshot.snapshot_id}")
        return Stage([*argv, "--", database], name="pg_dump")

    def snapshot_counts(self, snapshot, archive_toc):
        self._record("snapshot_counts", archive_toc)
        return {"tables": dict(self.spec.tables), "complete": self.spec.complete}

    def snapshot_abandon(self, snapshot):
        self._record("snapshot_abandon", snapshot.snapshot_id)

    def manifest_fields(self, database):
        return {"encoding": "UTF8", "collate": "C.UTF-8", "ctype": "C.UTF-8", "server_version": "16.4"}

    def needs_staging(self, backup_path):
        return self.spec.staging

    def drop_database(self, name):
        self._record("drop_database", name)
        if self.spec.drop_failure is not None:
            raise self.spec.drop_failure

    def create_database(self, name, manifest):
        self._record("create_database", name)

    def load(self, backup_path, database, staged_path):
        self._record("load", backup_path, database, staged_path)
        if self.spec.load_failure is not None:
            raise self.spec.load_failure

    def count_rows(self, database):
        self._record("count_rows", database)
        try:
            result = self.runner.run(["psql", "-X", "-tA", "-d", database, "-c", "SELECT count(*)"], name="psql")
        except CommandFailed as failed:
            raise Failure(Exit.DB_UNAVAILABLE, f'counting the rows of database "{database}" failed: {failed}') from None
        return manifest.parse_table_counts(result.stdout)


def install_engine(monkeypatch, **behaviour):
    """Make commands.common build a FakeEngine for "postgresql"; returns its
    spec (.calls, .instances, and the behaviour given)."""
    spec = types.SimpleNamespace(
        snapshot=True,
        tables=dict(TABLES),
        complete=True,
        staging=False,
        drop_failure=None,
        load_failure=None,
        calls=[],
        instances=[],
    )
    for key, value in behaviour.items():
        if not hasattr(spec, key):
            raise TypeError(f"unknown FakeEngine behaviour {key}")
        setattr(spec, key, value)
    engine_class = type("FakeEngine", (FakeEngine,), {"spec": spec})
    monkeypatch.setitem(common.ENGINES, "postgresql", engine_class)
    return spec


# --- backup sets --------------------------------------------------------------------------------


def make_set(
    directory,
    name,
    data=None,
    *,
    media=None,
    media_files=0,
    tables=None,
    project=PROJECT,
    engine="postgresql",
    latest=False,
):
    """Publish set NAME in DIRECTORY as backup_db.sh does (dump, .sha256,
    manifest, media archive when MEDIA); returns the dump's sha256."""
    directory = os.fspath(directory)
    data = data if data is not None else f"dump of {name}".encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
    sha = hashlib.sha256(data).hexdigest()
    lines = [f"{sha}  {name}\n"]
    media_name = ""
    if media is not None:
        media_name = sets.media_name_of(name)
        with open(os.path.join(directory, media_name), "wb") as f:
            f.write(media)
        lines.append(f"{hashlib.sha256(media).hexdigest()}  {media_name}\n")
    with open(os.path.join(directory, name + ".sha256"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    fields = {
        "engine": engine,
        "database": "shop",
        "project": project,
        "created": sets.stamp_of(name, project) or "",
        "kind": sets.kind_of(name, project),
        "file": name,
        "sha256": sha,
        "size_bytes": len(data),
        "media_file": media_name,
        "media_size_bytes": len(media or b""),
        "media_files": media_files,
    }
    manifest.write_manifest(os.path.join(directory, name + ".manifest.json"), fields, tables or dict(TABLES), [])
    if latest:
        sets.point_latest_at(directory, name)
    return sha


def counts_text(tables):
    """What the FakeEngine's count query prints for TABLES."""
    return "".join(f"{table}\t{rows}\n" for table, rows in tables.items()).encode()


def snapshot_id(name):
    """The id the fake listings give the snapshot of set NAME: 64 hex digits, as restic's."""
    return hashlib.sha256(f"snapshot of {name}".encode()).hexdigest()


def arrivals_rule(call):
    """A FakeRunner match: the backup host's record of arrivals, asked over ssh."""
    return call.programs[0] == "ssh" and call.argv[-1] == "djangoops-arrivals"


def arrivals_of(listing, late=60, **when):
    """The backup host's answer for the snapshots of LISTING (`restic snapshots
    --json` output): each arrived LATE seconds after its time, or at WHEN[id]."""
    from djangoops import arrivals

    lines = [arrivals.HEADER]
    for snap in json.loads(listing):
        lines.append(f"{snap['id']} {when.get(snap['id'], arrivals.epoch(snap['time']) + late)}")
    return ("\n".join(lines) + "\n").encode()


def restic_snapshots(*held, project=PROJECT):
    """`restic snapshots --json` of the sets HELD ((name, sha256) pairs)."""
    import calendar
    import time

    listing = []
    for name, sha in held:
        epoch = calendar.timegm(time.strptime(sets.stamp_of(name, project), "%Y%m%dT%H%M%SZ"))
        listing.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
                "paths": [f"/home/{project}/db_backups/{name}"],
                "hostname": project,
                "tags": ["djangoops", f"set={name}", f"sha256={sha}", f"kind={sets.kind_of(name, project)}"],
                "id": snapshot_id(name),
            }
        )
    return json.dumps(listing).encode()


def restic_rule(repo, command):
    """A FakeRunner match: restic COMMAND against ssh repository REPO."""

    def match(call):
        return (
            call.programs[0] == "restic"
            and call.env.get("RESTIC_REPOSITORY") == f"rclone:{repo}:"
            and command in call.argv
        )

    return match


def held_offsite(cmd, directory, names, repositories=("nas",), dump=None, **offsite):
    """NAMES published in DIRECTORY (not the backups directory), DUMP(name) their
    dump (default: make_set's), and held in REPOSITORIES, configured with the
    OFFSITE values, as `restic snapshots` lists them; `restic restore` of one of
    them from the first repository writes its files."""
    directory.mkdir()
    shas = {name: make_set(directory, name, None if dump is None else dump(name)) for name in names}
    cmd.write_offsite(repositories=list(repositories), **offsite)
    listing = restic_snapshots(*shas.items())
    for repo in repositories:
        cmd.fake.on(restic_rule(repo, "snapshots"), stdout=listing)
    cmd.fake.on(arrivals_rule, stdout=arrivals_of(listing))
    for name in names:
        cmd.fake.on(
            lambda call, name=name: restic_rule(repositories[0], "restore")(call) and snapshot_id(name) in call.argv,
            effect=restic_restores(set_files(directory, name)),
        )


def restic_restores(files):
    """An effect for `restic restore ... --target TREE`: FILES ({name: bytes})
    written under TREE as restic lays them out."""

    def effect(call):
        tree = call.argv[call.argv.index("--target") + 1]
        where = os.path.join(tree, "home", PROJECT, "db_backups")
        os.makedirs(where, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(where, name), "wb") as f:
                f.write(data)

    return effect


def set_files(directory, name):
    """The files of published set NAME in DIRECTORY, {name: bytes}."""
    found = {}
    for file in (name, name + ".sha256", name + ".manifest.json", sets.media_name_of(name)):
        path = os.path.join(directory, file)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[file] = f.read()
    return found


class RootSide:
    """The pipes pitr.supervise opens, as the child (the command under test) finds them:
    the root side's answers (.messages, a list to fill before the run) are written when
    .run(*args) runs COMMAND(*args); .asked() is what the child asked, after the run."""

    def __init__(self, monkeypatch, command):
        from djangoops import pitr

        self.messages = []
        self.command = command
        self._to_child_r, self._to_child_w = os.pipe()
        self._to_root_r, self._to_root_w = os.pipe()
        monkeypatch.setenv(pitr.CHANNEL, f"{self._to_child_r},{self._to_root_w}")

    def run(self, *args):
        with os.fdopen(self._to_child_w, "w") as f:
            f.writelines(json.dumps(m) + "\n" for m in self.messages)
        try:
            return self.command(*args)
        finally:
            os.close(self._to_root_w)

    def asked(self):
        with os.fdopen(self._to_root_r) as f:
            return f.read()


# pg_stat_archiver as pitr.StatusSide reads it (times in seconds since the epoch): segment 7
# archived 30 s ago, segment 8 being written.
PITR_ARCHIVER = {
    "archive_mode": "on",
    "archived_wal": "000000010000000000000007",
    "archived_at": 1796000000.5,
    "failed_wal": None,
    "failed_at": None,
    "failed_count": 0,
    "current_wal": "000000010000000000000008",
    "now": 1796000030.25,
}

# What pgBackRest 2.45's verify --output=text --verbose printed for a repository as written.
PGBACKREST_VERIFY_OK = """stanza: main
status: ok
  archiveId: 15-1, total WAL checked: 20, total valid WAL: 20
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261207-113729F, status: valid, total files checked: 1315, total valid files: 1315
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261207-113729F_20261207-113851D, status: valid, total files checked: 1620, total valid files: 1620
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""
