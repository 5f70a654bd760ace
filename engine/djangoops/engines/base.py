"""The interface every database engine implements (postgresql.py, mysql.py).

The commands (backup, restore, verify) are written once, against this class; an
engine adds only what differs between database servers. Every program an engine
runs goes through the runner it is given (runner.Runner, or the tests' FakeRunner),
so that a failing client, a timeout or a signal is reported the same way
everywhere, and unit tests can check the SQL and arguments without a server.

Rules every method keeps:
- A query that fails is never read as an answer: a failed listing raises, it is
  not an empty list (an empty table list once made a restore move every live
  table out and nothing in).
- Every wait on the server is bounded: statements carry the lock timeout
  (settings.db_lock_timeout), sessions held open are read with timeouts.
- Secrets never go on a command line: connection details travel in the
  environment or in the 0600 client file (PGPASSFILE, --defaults-extra-file).
- Errors raise errors.Failure with the exit code and a message that says what
  failed and what it means for the live database; methods that are part of a
  restore take that meaning from the caller (the `suffix` arguments) where it
  depends on the state the restore is in.
"""

from __future__ import annotations

import dataclasses
import os

from ..errors import Exit, Failure

LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")  # the server runs on this machine


@dataclasses.dataclass
class Connection:
    """Who and where: the database the site uses, and the credentials file this
    run reads (the role's 0600 client file, or one written into the run's private
    directory from Django's settings)."""

    name: str
    user: str
    host: str
    port: str
    client_file: str


@dataclasses.dataclass
class Snapshot:
    """A dump's snapshot while it runs (PostgreSQL): its id for pg_dump
    --snapshot, and the sessions that hold and count it."""

    snapshot_id: str
    holder: object = None  # runner.Session that exported it and keeps it alive
    counter: object = None  # runner.Session (or handle) counting the tables in it


@dataclasses.dataclass
class Properties:
    """What a database carries besides its tables, which a swap would otherwise
    leave with the set-aside database: per-database settings (ALTER DATABASE ...
    SET, ALTER ROLE ... IN DATABASE ... SET), CONNECT grants, the connection
    limit. Engines that swap tables rather than databases have none to carry."""

    statements: list[str] = dataclasses.field(default_factory=list)


class Engine:
    """Base class: the names of the methods the commands call, with what each
    must do. Subclasses override all of them."""

    name = ""  # "postgresql" or "mysql", as db_backup_engine says
    dump_name = ""  # the dump program's name, for messages
    django_engines = ()  # regular expressions of DATABASES ENGINE values this engine serves
    # Where a restore gathers planner statistics: False, on the work database
    # before the swap (beside the row count); True, on the live database just
    # after the swap, beside the safety copy and the media swap.
    analyzes_live = False

    def __init__(self, runner, connection: Connection, settings, log, run_dir: str, script: str = ""):
        self.script = script  # the command's name (backup_db...): PGAPPNAME, MariaDB's statement mark
        self.runner = runner
        self.connection = connection
        self.settings = settings  # config.Database
        self.log = log
        self.run_dir = run_dir  # the run's private directory (0700), removed at exit

    def elsewhere(self, host: str, port: str) -> Engine:
        """The same engine, database and user (and credentials file), on the
        server at HOST (a socket directory) and PORT: a scratch cluster."""
        connection = dataclasses.replace(self.connection, host=host, port=port)
        return type(self)(self.runner, connection, self.settings, self.log, self.run_dir, script=self.script)

    # --- shared by the engines ----------------------------------------------------

    def load_failure(self, name: str, database: str, failed, why: str) -> Failure:
        """The Failure of a load of backup NAME into DATABASE that stopped with
        FAILED (runner.CommandFailed) for the reason WHY; the client's error
        lines go into the log."""
        self.log.lines("ERROR", failed.stderr)
        return Failure(Exit.RESTORE_FAILED, f"loading {name} into {database} stopped at the first error: {why}")

    def log_warnings(self, results) -> None:
        """What the stages of a load (runner.Result) wrote to stderr, as warnings."""
        for result in results:
            self.log.lines("WARN", result.stderr)

    # --- credentials -----------------------------------------------------------

    @classmethod
    def client_file_text(cls, connection: Connection, password: str) -> str:
        """The client file for CONNECTION and PASSWORD (a pgpass line, or a
        [client] option file with user, password, host and port), written by
        credentials.py into the run's private directory when the credentials
        come from Django's settings. A classmethod: it is needed before the
        engine (which takes the connection) exists."""
        raise NotImplementedError

    def check_tools(self) -> None:
        """Failure(CONFIG) when the engine's client programs are not installed."""
        return None

    # --- the server ------------------------------------------------------------------

    def check_connection(self) -> None:
        """Connect to the site's database; Failure(DB_UNAVAILABLE) naming the
        database, the user, the host and the server's own message."""
        raise NotImplementedError

    def check_server(self) -> None:
        """Connect to the server without the site's database (it may be missing
        after a failed restore, and restoring must still work)."""
        raise NotImplementedError

    def database_exists(self, name: str) -> bool:
        """Whether NAME exists; a failed query raises (it is not "no")."""
        raise NotImplementedError

    def list_databases(self, prefix: str) -> list[str]:
        """Databases whose names start with PREFIX exactly (no LIKE wildcards);
        a failed query raises."""
        raise NotImplementedError

    # --- backup ----------------------------------------------------------------------

    def dump_stage(self, database: str, snapshot: Snapshot | None = None):
        """The runner.Stage that writes DATABASE's dump to stdout (the excluded
        tables' data left out, as settings say)."""
        raise NotImplementedError

    def counts_in_snapshot(self) -> bool:
        """True when rows are counted in the dump's own snapshot (PostgreSQL
        custom format); False when the dump stream is counted as it is written."""
        raise NotImplementedError

    def snapshot_begin(self, database: str) -> Snapshot:
        """Export a snapshot and start counting in it, with no session of ours
        holding a lock while it waits for another process."""
        raise NotImplementedError

    def snapshot_counts(self, snapshot: Snapshot, archive_toc: str) -> dict:
        """After the dump ended: the counts (manifest.counts format: tables and
        complete) from the snapshot session's counts and the archive's table of
        contents (`pg_restore --list` text). Releases the snapshot."""
        raise NotImplementedError

    def snapshot_abandon(self, snapshot: Snapshot) -> None:
        """After a failed dump: end the snapshot's sessions."""
        raise NotImplementedError

    def manifest_fields(self, database: str) -> dict:
        """What the manifest needs to recreate DATABASE as it was: encoding,
        collate (and ctype), server_version."""
        raise NotImplementedError

    # --- restore and verify ------------------------------------------------------------

    def restore_precheck(self, live: bool) -> None:
        """Everything a restore needs, checked before anything is created: the
        rights to create the work database and to set the live one aside, and no
        session or lock that would block the swap (Failure CONFIG or REFUSED,
        "nothing was changed")."""
        raise NotImplementedError

    def create_database(self, name: str, manifest) -> None:
        """A new, empty NAME with the encoding and locale the manifest records."""
        raise NotImplementedError

    def drop_database(self, name: str) -> None:
        """Drop one of the scripts' own databases (never the live one)."""
        raise NotImplementedError

    def load(self, backup_path: str, database: str, staged_path: str | None) -> None:
        """Load the backup into DATABASE, stopping at the first error; the
        client's messages are in the Failure (RESTORE_FAILED). STAGED_PATH: an
        uncompressed copy for a parallel load (PostgreSQL custom format)."""
        raise NotImplementedError

    def needs_staging(self, backup_path: str) -> bool:
        """Whether load() wants an uncompressed copy (a parallel pg_restore)."""
        raise NotImplementedError

    def count_rows(self, database: str) -> dict[str, int]:
        """Every table's row count, named as the manifest names them."""
        raise NotImplementedError

    def check_movable(self, database: str) -> None:
        """Refuse (Failure RESTORE_FAILED) what the swap cannot move."""
        raise NotImplementedError

    def properties(self, database: str) -> Properties:
        """What DATABASE carries besides its tables (see Properties)."""
        raise NotImplementedError

    def apply_properties(self, properties: Properties, database: str) -> None:
        """Give DATABASE the settings, grants and connection limit read by
        properties() from another one."""
        raise NotImplementedError

    def analyze(self, database: str) -> None:
        """Fresh planner statistics, so the site does not come back slow."""
        raise NotImplementedError

    def start_analyze(self, database: str, beside: str = "the row count"):
        """Begin analyze(DATABASE) beside what the restore does next (BESIDE,
        for the log); returns the handle finish_analyze() and stop_analyze()
        take. An engine that cannot do both at once analyzes here and returns
        None."""
        self.analyze(database)

    def finish_analyze(self, handle) -> None:
        """Wait for what start_analyze() began (bounded; a failure is a warning,
        as for analyze())."""

    def stop_analyze(self, handle) -> None:
        """Stop what start_analyze() began, when the restore stops before it
        ends; safe to repeat."""

    def swap(self, live: str, new: str, aside: str, manifest=None) -> None:
        """In one short step, LIVE becomes ASIDE and NEW becomes LIVE; no id is
        handed out twice. On failure nothing has changed (LIVE takes connections
        again) and Failure(REFUSED) says why; when the outcome cannot be known
        (the client failed after sending the statement), it is found out, not
        assumed. MANIFEST: the set's manifest, whose tables the swap must
        find in NEW (an engine that moves tables refuses to move none)."""
        raise NotImplementedError

    def swap_state(self, live: str, new: str, aside: str, manifest=None) -> str:
        """After an interrupted swap: "before" (LIVE is the old database, NEW
        still the work one), "after" (LIVE is the restored one, ASIDE the old),
        or "unknown" (the server could not be asked)."""
        raise NotImplementedError

    def reopen(self, live: str) -> None:
        """LIVE takes connections again (after a refused or interrupted swap)."""
        raise NotImplementedError

    def put_in_place(self, new: str, live: str, manifest=None) -> None:
        """No live database to set aside (a new server): NEW becomes LIVE."""
        raise NotImplementedError

    def drop_if_empty(self, database: str):
        """After a swap that did not happen: drop DATABASE (a set-aside one made
        for it) only when a listing shows it holds nothing; return None when
        dropped or absent, else why it was kept."""
        raise NotImplementedError

    def room_for_load(self, live: str | None) -> tuple[int, int | None, str]:
        """(bytes a copy of LIVE needs, bytes free where the server keeps its
        data or None when that cannot be known from here, that directory)."""
        raise NotImplementedError

    def allow_connections(self, database: str) -> None:
        """Let the dump of a set-aside database connect to it."""
        raise NotImplementedError

    def stop_own_statements(self) -> None:
        """Stop statements of this run still running on the server (a signal
        arrived while the client waited)."""
        raise NotImplementedError


def room_here(needed: int, datadir: str, local: bool) -> tuple[int, int | None, str]:
    """room_for_load()'s answer: NEEDED, the bytes free in DATADIR when the
    server is LOCAL and DATADIR can be looked at from here (else None), DATADIR."""
    if not local or not os.path.isabs(datadir):
        return needed, None, datadir
    try:
        found = os.statvfs(datadir)
    except OSError:
        return needed, None, datadir
    return needed, found.f_bavail * found.f_frsize, datadir
