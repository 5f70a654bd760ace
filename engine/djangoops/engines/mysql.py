"""MySQL and MariaDB: what differs from PostgreSQL, ported from
roles/db_backup/files/engine_mysql.sh.

A restore loads the backup into a work database, then moves tables, not
databases: one RENAME TABLE moves the live tables into the set-aside database
and the restored ones into the live database. RENAME TABLE is atomic (every
table moves or none does), which is what lets a failed or interrupted swap be
judged afterwards from what each database holds.

How the client is run:
- Host, port, user and password travel in the option file given with
  --defaults-extra-file; only the database name is an argument.
- SQL goes to the client on stdin, never on the command line.
- Every session waits on another session's lock for db_lock_timeout seconds at
  most (the server's default is a day), set by --init-command.
- Every statement carries this run's mark, a comment the client keeps
  (--comments: by default it strips comments before sending), so that
  stop_own_statements can find and stop them on the server.
- Sessions use utf8mb4, so non-ASCII names and passwords arrive as they are.
"""

import copy
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Mapping

from ..errors import Exit, Failure
from ..runner import CommandFailed, Stage
from .base import LOCAL_HOSTS, Engine, Properties, room_here

# The restored tables hand out ids this far above the live counters read just
# before the rename, so that rows written to the live tables in that instant
# (they live on in the safety copy) keep ids nobody else gets.
ID_MARGIN = 1000

# The lock probe of restore_precheck waits this long at most.
PROBE_SECONDS = 5

# Spare seconds a client gets beyond the server-side lock timeout before the
# runner stops it: connecting and answering a small query.
CLIENT_SLACK = 60

# ANALYZE TABLE: tables per statement (a statement stays a sane length), and
# how long the statistics may take before they are given up on.
ANALYZE_BATCH = 100
ANALYZE_TIMEOUT = 900

# A character set or collation name as the manifest must give it: it goes into
# CREATE DATABASE as a bare word.
CHARSET_NAME = re.compile(r"[A-Za-z0-9_]+")

# _run's timeout when the caller gives none: the lock timeout and some slack.
_DEFAULT = object()

# The batch output of the client escapes these in values (unless --raw).
_UNESCAPES = {"0": "\0", "t": "\t", "n": "\n", "\\": "\\"}


# --- quoting ------------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """NAME as an identifier: backquoted, backquotes doubled."""
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """VALUE as a string literal: single-quoted, backslashes and quotes escaped
    (the server's default sql_mode reads backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def option_value(value: str, what: str) -> str:
    """VALUE for an option file: double-quoted, '\\' and '"' escaped. A line
    break would end the line and start another option, so it is refused (the
    message never quotes the value: it may be the password)."""
    if any(char in value for char in "\n\r\0"):
        raise Failure(
            Exit.CONFIG, f"the database {what} holds a line break or a NUL, which an option file cannot carry"
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def same(column: str, value: str) -> str:
    """SQL that COLUMN equals VALUE exactly. information_schema compares names
    case-insensitively and ignores trailing spaces; the byte comparison makes
    it exact, and the plain one keeps the server's lookup by name fast."""
    literal = quote_string(value)
    return f"{column} = {literal} AND CAST({column} AS BINARY) = CAST({literal} AS BINARY)"


def unescape(field: str) -> str:
    """A value of the client's batch output as it is on the server (the client
    writes NUL, tab, newline and backslash as \\0, \\t, \\n and \\\\)."""
    if "\\" not in field:
        return field
    out = []
    chars = iter(field)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(_UNESCAPES.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


def parse_rows(stdout: bytes) -> list[list[str]]:
    """The client's batch output as rows of fields."""
    text = stdout.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [[unescape(field) for field in line.split("\t")] for line in lines]


def why(error: CommandFailed) -> str:
    """What went wrong, for a message: the server's own words when the client
    said any, otherwise how the client ended."""
    if error.returncode is not None and error.returncode > 0 and error.stderr.strip():
        return " ".join(line.strip() for line in error.stderr.splitlines()[-3:] if line.strip())
    return error.reason()


class MySQL(Engine):
    name = "mysql"
    dump_name = "mariadb-dump"
    django_engines = (r"\.mysql$",)

    def __init__(self, runner, connection, settings, log, run_dir, script="", *, which=shutil.which, mark=None):
        """WHICH finds programs on PATH (tests give their own); MARK is the
        comment every statement carries (default djangoops:PID:SCRIPT)."""
        super().__init__(runner, connection, settings, log, run_dir, script)
        self.client = which("mariadb") or which("mysql")
        self.dump_program = which("mariadb-dump") or which("mysqldump")
        if self.dump_program:
            self.dump_name = os.path.basename(self.dump_program)
        if mark is None:
            # Only characters that cannot end the comment it goes into.
            command = re.sub(r"[^A-Za-z0-9_.-]", "_", script or getattr(log, "script_name", "") or "djangoops")
            mark = f"djangoops:{os.getpid()}:{command}"
        self.mark = mark
        self.lock_timeout = int(settings.db_lock_timeout)
        # Where the client connects when it is not where the credentials file says (elsewhere()).
        self.where: list[str] = []

    def elsewhere(self, host, port):
        """The same database, user and credentials file on a scratch server
        beside the live one (a restore to a time): by its socket HOST (a path)
        when the live server is reached by its socket, else by TCP on
        127.0.0.1:PORT, as the site's account matches there. The options go
        after --defaults-extra-file, so they win over the file's host and port."""
        other = copy.copy(self)  # the same programs, mark and settings
        other.connection = dataclasses.replace(self.connection, host=host, port=port)
        if self.connection.host in ("", "localhost"):
            other.where = ["--protocol=SOCKET", f"--socket={host}"]
        else:
            other.where = ["--protocol=TCP", "--host=127.0.0.1", f"--port={port}"]
        return other

    # --- the client ---------------------------------------------------------------------------

    def check_tools(self) -> None:
        """Failure(CONFIG) unless the client and the dump program are installed
        (engine_connection_setup in the shell version)."""
        if not (self.client and self.dump_program):
            raise Failure(Exit.CONFIG, "the MariaDB/MySQL client tools (mariadb, mariadb-dump) are not installed")

    def _client(self, database=None, force=False) -> list[str]:
        self.check_tools()
        timeout = self.lock_timeout
        argv = [
            self.client,
            f"--defaults-extra-file={self.connection.client_file}",
            *self.where,
            "--batch",
            "--skip-column-names",
            "--comments",
            "--default-character-set=utf8mb4",
            f"--init-command=SET SESSION lock_wait_timeout = {timeout}, SESSION innodb_lock_wait_timeout = {timeout}",
        ]
        if force:
            # Each KILL stands alone: one whose target has already ended must
            # not keep the others from being sent.
            argv.append("--force")
        if database is not None:
            argv.append(f"--database={database}")
        return argv

    def _sql(self, statements) -> str:
        """STATEMENTS as the client's input, each with this run's mark (the
        client sends statements one by one, so each needs its own)."""
        return "".join(f"/* {self.mark} */ {statement};\n" for statement in statements)

    def _timeout(self, lock_seconds=None) -> int:
        return (self.lock_timeout if lock_seconds is None else lock_seconds) + CLIENT_SLACK

    def _run(self, statements, *, database=None, timeout=_DEFAULT, force=False, ok_codes=(0,)):
        """Send STATEMENTS in one session; CommandFailed as the runner raises it.
        TIMEOUT None: no limit (counting rows takes as long as the data)."""
        return self.runner.run(
            self._client(database, force),
            input=self._sql(statements),
            timeout=self._timeout() if timeout is _DEFAULT else timeout,
            ok_codes=ok_codes,
        )

    def _query(self, statements, what, *, database=None, timeout=_DEFAULT) -> list[list[str]]:
        """The rows STATEMENTS return. A failure is never an answer: it raises
        Failure(DB_UNAVAILABLE) naming the query (WHAT)."""
        try:
            result = self._run(statements, database=database, timeout=timeout)
        except CommandFailed as error:
            raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} failed: {why(error)}") from error
        return parse_rows(result.stdout)

    # --- credentials --------------------------------------------------------------------------

    @classmethod
    def client_file_text(cls, connection, password: str) -> str:
        """The [client] option file for --defaults-extra-file: user, password,
        host and port as quoted option values, utf8mb4 for the session."""
        lines = [
            "[client]",
            "default-character-set=utf8mb4",
            f"user={option_value(connection.user or '', 'user')}",
            f"password={option_value(password or '', 'password')}",
        ]
        if connection.host:
            lines.append(f"host={option_value(connection.host, 'host')}")
        port = str(connection.port or "").strip()
        if port and port != "0":
            if not port.isdigit():
                raise Failure(Exit.CONFIG, f"the database port {port!r} is not a number")
            lines.append(f"port={port}")
        return "\n".join(lines) + "\n"

    def client_file_content(self, password: str) -> str:
        """client_file_text for this engine's connection."""
        return self.client_file_text(self.connection, password)

    # --- the server ---------------------------------------------------------------------------

    def check_connection(self) -> None:
        c = self.connection
        try:
            self._run(["SELECT 1"], database=c.name)
        except CommandFailed as error:
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f'cannot connect to database "{c.name}" as "{c.user}" on {c.host or "the local socket"}: {why(error)}',
            ) from error

    def check_server(self) -> None:
        try:
            self._run(["SELECT 1"])
        except CommandFailed as error:
            raise Failure(
                Exit.DB_UNAVAILABLE, f'cannot connect to the server as "{self.connection.user}": {why(error)}'
            ) from error

    def database_exists(self, name: str) -> bool:
        """Whether NAME exists. A failed query is not "no": that would skip the
        safety backup of the live database."""
        what = f'checking whether database "{name}" exists'
        rows = self._query(
            [f"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE {same('SCHEMA_NAME', name)}"], what
        )
        if rows not in ([["0"]], [["1"]]):
            raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned {rows!r}, not a count")
        return rows == [["1"]]

    def list_databases(self, prefix: str) -> list[str]:
        literal = quote_string(prefix)
        rows = self._query(
            [
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"
                f" WHERE CAST(LEFT(SCHEMA_NAME, CHAR_LENGTH({literal})) AS BINARY) = CAST({literal} AS BINARY)"
                " ORDER BY 1"
            ],
            f'listing the databases whose names start with "{prefix}"',
        )
        # The server compared the bytes already; this keeps a name the client
        # mangled from passing for one of ours.
        return [row[0] for row in rows if row and row[0].startswith(prefix)]

    def _tables_in(self, databases) -> dict[str, list[str]]:
        """{database: its base tables (not views), sorted} for each of DATABASES
        that exists; one query, and a failure raises (an empty list once made a
        restore move every live table out and nothing in). The rows name the
        database by its position, so nothing depends on how names print."""
        databases = list(databases)
        parts = []
        for index, db in enumerate(databases):
            parts.append(f"SELECT {index}, 0, '' FROM information_schema.SCHEMATA WHERE {same('SCHEMA_NAME', db)}")
            parts.append(
                f"SELECT {index}, 1, TABLE_NAME FROM information_schema.TABLES"
                f" WHERE {same('TABLE_SCHEMA', db)} AND TABLE_TYPE = 'BASE TABLE'"
            )
        names = ", ".join(f'"{db}"' for db in databases)
        what = f"listing the tables of {names}"
        rows = self._query([" UNION ALL ".join(parts)], what)
        found: dict[str, list[str]] = {}
        for row in rows:
            if len(row) != 3 or not row[0].isdigit() or int(row[0]) >= len(databases) or row[1] not in ("0", "1"):
                raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned a line it should not: {row!r}")
            tables = found.setdefault(databases[int(row[0])], [])
            if row[1] == "1":
                tables.append(row[2])
        return {db: sorted(tables) for db, tables in found.items()}

    def base_tables(self, database: str) -> list[str]:
        """DATABASE's base tables (none if it does not exist); a failed query raises."""
        return self._tables_in([database]).get(database, [])

    def _charsets(self, databases) -> dict[str, tuple[str, str]]:
        """{database: (character set, collation)} for each of DATABASES that exists."""
        databases = list(databases)
        parts = [
            f"SELECT {index}, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
            f" FROM information_schema.SCHEMATA WHERE {same('SCHEMA_NAME', db)}"
            for index, db in enumerate(databases)
        ]
        what = "reading the character set of " + ", ".join(f'"{db}"' for db in databases)
        found = {}
        for row in self._query([" UNION ALL ".join(parts)], what):
            # The names go into CREATE and ALTER DATABASE as bare words.
            if (
                len(row) != 3
                or not row[0].isdigit()
                or int(row[0]) >= len(databases)
                or not all(CHARSET_NAME.fullmatch(name) for name in row[1:])
            ):
                raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned a line it should not: {row!r}")
            found[databases[int(row[0])]] = (row[1], row[2])
        return found

    def _session_ids(self, condition) -> list[int]:
        """Ids of the other sessions matching CONDITION; [] when they cannot be
        read (the callers only tidy up, and say so when it matters)."""
        try:
            result = self._run(
                [f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND {condition}"]
            )
        except CommandFailed:
            return []
        return [int(row[0]) for row in parse_rows(result.stdout) if row and row[0].isdigit()]

    def _kill(self, kind, ids) -> None:
        if not ids:
            return
        try:
            self._run([f"KILL {kind} {i}" for i in ids], force=True, ok_codes=(0, 1))
        except CommandFailed:
            pass  # a session that ended by itself is no failure; nothing else to do

    def end_own_sessions(self, database: str) -> None:
        """End the sessions of this database user on DATABASE (the site's own,
        which would hold the swap up); others' are left alone."""
        ids = self._session_ids(f"{same('DB', database)} AND USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)")
        self._kill("CONNECTION", ids)

    def visible_sessions(self, database: str) -> str:
        """The sessions on DATABASE this user can see (its own; all with
        PROCESS), for a refusal's message; "" when they cannot be read."""
        try:
            result = self._run(
                [
                    "SELECT CONCAT('id ', ID, ' (user ', USER, ', ', COMMAND, ' for ', TIME, ' s',"
                    " IF(STATE = '', '', CONCAT(', ', STATE)), ')') FROM information_schema.PROCESSLIST"
                    f" WHERE {same('DB', database)} AND ID <> CONNECTION_ID()"
                ]
            )
        except CommandFailed:
            return ""
        return "; ".join(row[0] for row in parse_rows(result.stdout) if row and row[0])

    # --- backup -------------------------------------------------------------------------------

    def dump_stage(self, database: str, snapshot=None):
        self.check_tools()
        ignored = [f"--ignore-table-data={database}.{table}" for table in self.settings.excluded_table_data]
        argv = [
            self.dump_program,
            f"--defaults-extra-file={self.connection.client_file}",
            *self.where,
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--hex-blob",
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            *ignored,
            "--",
            database,
        ]
        return Stage(argv, name=self.dump_name)

    def counts_in_snapshot(self) -> bool:
        """False: MariaDB cannot share a snapshot with another session (the
        dump's START TRANSACTION WITH CONSISTENT SNAPSHOT is its alone), so the
        rows are counted from the dump stream as it is written."""
        return False

    def _no_snapshot(self):
        return Failure(Exit.INTERNAL, "MySQL/MariaDB backups count rows from the dump stream, not in a snapshot")

    def snapshot_begin(self, database):
        raise self._no_snapshot()

    def snapshot_counts(self, snapshot, archive_toc):
        raise self._no_snapshot()

    def snapshot_abandon(self, snapshot):
        raise self._no_snapshot()

    def manifest_fields(self, database: str) -> dict:
        """encoding, collate and server_version of DATABASE. A failed query
        raises: a manifest without them could not be restored."""
        what = f'reading the character set of "{database}"'
        rows = self._query(
            [
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, VERSION()"
                f" FROM information_schema.SCHEMATA WHERE {same('SCHEMA_NAME', database)}"
            ],
            what,
        )
        if len(rows) != 1 or len(rows[0]) != 3:
            raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned {rows!r}, not one line of three fields")
        encoding, collate, version = rows[0]
        return {"encoding": encoding, "collate": collate, "server_version": version}

    # --- restore and verify ---------------------------------------------------------------------

    def restore_precheck(self, live: bool) -> None:
        """A lock another session holds on the live tables (an open
        transaction) would make the swap wait, and the site with it. A short
        LOCK TABLES probes for it; the site's own sessions are ended and the
        probe tried once more; a lock that stays is a refusal that says what it
        can. Other errors of the probe (no LOCK TABLES right) are warned about:
        the swap itself still waits db_lock_timeout at most."""
        if not live:
            return
        name = self.connection.name
        tables = self.base_tables(name)
        if not tables:
            return
        probe = min(self.lock_timeout, PROBE_SECONDS)
        locks = ", ".join(f"{quote_ident(name)}.{quote_ident(table)} WRITE" for table in tables)
        statements = [f"SET SESSION lock_wait_timeout = {probe}", f"LOCK TABLES {locks}", "UNLOCK TABLES"]
        try:
            self._run(statements, timeout=self._timeout(probe))
            return
        except CommandFailed as error:
            if "Lock wait timeout" not in error.stderr:
                self.log.warn(f'could not check for locks on "{name}" ({why(error)}); going on')
                return
        self.end_own_sessions(name)
        try:
            self._run(statements, timeout=self._timeout(probe))
            return
        except CommandFailed as error:
            failed = error
        raise Failure(
            Exit.REFUSED,
            f'a session holds a lock on the tables of "{name}" (an open transaction?) and did not let go within'
            f' {probe} s; sessions user "{self.connection.user}" can see: {self.visible_sessions(name) or "none"};'
            " other users' sessions are visible only with the PROCESS privilege (as root: SHOW PROCESSLIST;"
            " KILL ID); nothing was changed",
        ) from failed

    def create_database(self, name: str, manifest) -> None:
        """A new, empty NAME with the character set and collation the backup's
        database had."""
        charset = self._charset_clause(manifest)
        self.log.info(f'creating database "{name}"')
        try:
            self._run([f"CREATE DATABASE {quote_ident(name)} {charset}"])
        except CommandFailed as error:
            raise Failure(
                Exit.CONFIG,
                f"could not create the work database {name}: {why(error)};"
                " the database user needs the right to create (and drop) it",
            ) from error

    def _charset_clause(self, manifest) -> str:
        encoding = str(manifest.get("encoding") or "")
        collate = str(manifest.get("collate") or "")
        if not (CHARSET_NAME.fullmatch(encoding) and CHARSET_NAME.fullmatch(collate)):
            source = getattr(manifest, "source", "the backup")
            raise Failure(Exit.BAD_BACKUP, f"the manifest of {source} lacks the database's character set or collation")
        return f"CHARACTER SET {encoding} COLLATE {collate}"

    def drop_database(self, name: str) -> None:
        """Drop one of the scripts' own databases, after ending this user's
        sessions on it. Never the live one: that is a caller's bug."""
        if name == self.connection.name:
            raise Failure(Exit.INTERNAL, f'refusing to drop database "{name}": it is the live database')
        self.end_own_sessions(name)
        try:
            self._run([f"DROP DATABASE IF EXISTS {quote_ident(name)}"])
        except CommandFailed as error:
            raise Failure(Exit.REFUSED, f"could not drop {name}: {why(error)}") from error

    def needs_staging(self, backup_path: str) -> bool:
        """False: the client reads the decompressed stream directly."""
        return False

    def load(self, backup_path: str, database: str, staged_path=None) -> None:
        """Decompress into the client, which stops at the first error (no
        --force); its warnings go into the log."""
        name = os.path.basename(backup_path)
        if backup_path.endswith(".zst"):
            decompress = ["zstd", "-q", "-d", "-c", "--", backup_path]
        elif backup_path.endswith(".gz"):
            decompress = ["gzip", "-d", "-c", "--", backup_path]
        else:
            raise Failure(Exit.BAD_BACKUP, f"unknown compression: {backup_path}")
        self.log.info(f'loading {name} into "{database}"')
        stages = [Stage(decompress), Stage(self._client(database))]
        try:
            results = self.runner.pipeline(stages)
        except CommandFailed as error:
            raise self.load_failure(name, database, error, error.reason()) from error
        self.log_warnings(results)

    def count_rows(self, database: str) -> dict[str, int]:
        """Every table's row count, in one UNION ALL query. The rows name their
        table by position, so no name has to survive the client's output."""
        tables = self.base_tables(database)
        if not tables:
            return {}
        query = " UNION ALL ".join(
            f"SELECT {index}, COUNT(*) FROM {quote_ident(database)}.{quote_ident(table)}"
            for index, table in enumerate(tables)
        )
        what = f"counting the rows of {database}"
        rows = self._query([query], what, timeout=None)
        counts = {}
        for row in rows:
            if len(row) != 2 or not row[0].isdigit() or not row[1].isdigit() or int(row[0]) >= len(tables):
                raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned a line it should not: {row!r}")
            counts[tables[int(row[0])]] = int(row[1])
        if len(counts) != len(tables):
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f"the query {what} returned counts for {len(counts)} of its {len(tables)} tables",
            )
        return counts

    def check_movable(self, database: str) -> None:
        """A dump's views, triggers, routines and events cannot be moved to
        another database by RENAME TABLE; a Django database has none, so refuse
        rather than lose them."""
        parts = []
        for label, view, column in (
            ("views", "VIEWS", "TABLE_SCHEMA"),
            ("triggers", "TRIGGERS", "TRIGGER_SCHEMA"),
            ("routines", "ROUTINES", "ROUTINE_SCHEMA"),
            ("events", "EVENTS", "EVENT_SCHEMA"),
        ):
            parts.append(
                f"(SELECT CONCAT(COUNT(*), ' {label}') FROM information_schema.{view}"
                f" WHERE {same(column, database)} HAVING COUNT(*) > 0)"
            )
        what = f"looking for what RENAME TABLE cannot move in {database}"
        rows = self._query([f"SELECT CONCAT_WS(', ', {', '.join(parts)})"], what)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned {rows!r}, not one line")
        found = rows[0][0]
        if found:
            raise Failure(
                Exit.RESTORE_FAILED,
                f"the backup holds {found}, which this restore cannot move into place (RENAME TABLE moves tables"
                " only); restore it by hand (README: restoring without the scripts)",
            )

    def room_for_load(self, live):
        """(bytes the work copy needs, bytes free where the server keeps its
        data or None when that cannot be seen from here, that place) for the
        restore's free-space check. The copy needs about what LIVE's tables
        take now; the server's disk is only seen when it runs on this machine.
        A failed query raises."""
        if live is None:
            return 0, None, ""
        what = f'reading the size of "{live}"'
        rows = self._query(
            [
                "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0), @@datadir FROM information_schema.TABLES"
                f" WHERE {same('TABLE_SCHEMA', live)}"
            ],
            what,
        )
        if len(rows) != 1 or len(rows[0]) != 2 or not rows[0][0].isdigit():
            raise Failure(Exit.DB_UNAVAILABLE, f"the query {what} returned {rows!r}, not a size and a directory")
        needed, datadir = int(rows[0][0]), rows[0][1]
        return room_here(needed, datadir, self.connection.host in LOCAL_HOSTS)

    def properties(self, database: str) -> Properties:
        """Nothing: MariaDB/MySQL swaps move tables, not databases, so the live
        database keeps its own grants and settings (and the set-aside one is
        made with the live one's character set)."""
        return Properties()

    def apply_properties(self, properties: Properties, database: str) -> None:
        """Nothing to apply: see properties()."""

    def analyze(self, database: str) -> None:
        """ANALYZE TABLE every restored table before the swap, so the site does
        not come back slow on empty statistics. Statistics are an improvement,
        not the data: a failure or timeout is a warning, and what still runs
        is stopped so that it cannot hold up the swap."""
        tables = self.base_tables(database)
        if not tables:
            return
        statements = [
            "ANALYZE TABLE "
            + ", ".join(
                f"{quote_ident(database)}.{quote_ident(table)}" for table in tables[start : start + ANALYZE_BATCH]
            )
            for start in range(0, len(tables), ANALYZE_BATCH)
        ]
        started = time.monotonic()
        try:
            result = self._run(statements, timeout=ANALYZE_TIMEOUT)
        except CommandFailed as error:
            if error.timed_out or error.returncode is None or error.returncode < 0:
                self.stop_own_statements()
            self.log.warn(
                f"could not refresh the statistics of {database}: {why(error)};"
                " queries may be slow until the server refreshes them"
            )
            return
        errors = [row for row in parse_rows(result.stdout) if len(row) == 4 and row[2].lower() == "error"]
        for table, _op, _kind, text in errors:
            self.log.warn(f"ANALYZE TABLE {table}: {text}")
        self.log.info(f"analyzed {len(tables)} tables of {database} in {time.monotonic() - started:.1f} s")

    # --- the swap -------------------------------------------------------------------------------

    @staticmethod
    def _manifest_tables(manifest):
        """The table names MANIFEST lists: a manifest (its "tables"), or the
        names themselves; None when not given."""
        if manifest is None:
            return None
        if isinstance(manifest, Mapping) and "tables" in manifest:
            return list(manifest["tables"])
        return list(manifest)

    @staticmethod
    def _check_work_tables(new, new_tables, tables, code, prefix, suffix):
        """Refuse to move an empty work database in while the manifest lists
        tables (or the manifest is not known), or one that lacks any of the
        manifest's tables: the listing was wrong, or the load was."""
        if tables is None:
            if not new_tables:
                raise Failure(code, f"{prefix}the work database {new} holds no tables{suffix}")
            return
        tables = list(tables)
        if tables and not new_tables:
            raise Failure(
                code,
                f"{prefix}the work database {new} holds no tables, but the backup's manifest lists"
                f" {len(tables)}{suffix}",
            )
        missing = sorted(set(tables) - set(new_tables))
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise Failure(
                code,
                f"{prefix}the work database {new} lacks {len(missing)} of the tables the backup's manifest lists"
                f" ({shown}){suffix}",
            )

    def drop_if_empty(self, database: str) -> str | None:
        """Drop DATABASE if a successful listing shows it holds no tables; else
        keep it. None when dropped (or already gone), else why it was kept."""
        try:
            listed = self._tables_in([database])
        except Failure as failure:
            return failure.message
        if database not in listed:
            return None
        if listed[database]:
            return f"it holds {len(listed[database])} tables"
        try:
            self._run([f"DROP DATABASE IF EXISTS {quote_ident(database)}"])
        except CommandFailed as error:
            return why(error)
        return None

    def _reused_ids(self, aside: str, live: str):
        return (
            "SELECT f.TABLE_NAME FROM information_schema.TABLES f JOIN information_schema.TABLES t"
            " ON t.TABLE_NAME = f.TABLE_NAME AND CAST(t.TABLE_NAME AS BINARY) = CAST(f.TABLE_NAME AS BINARY)"
            f" WHERE {same('f.TABLE_SCHEMA', aside)} AND {same('t.TABLE_SCHEMA', live)}"
            " AND f.AUTO_INCREMENT IS NOT NULL AND f.AUTO_INCREMENT > t.AUTO_INCREMENT ORDER BY 1"
        )

    def _carry_counters(self, live: str, new: str, common) -> list[str]:
        """Statements giving NEW's tables LIVE's next ids plus the margin, read
        in the session that renames them. ALTER TABLE takes no variable, so
        each is built by a SELECT and run as a prepared statement ("DO 0" where
        the table has no counter). MySQL 8 caches information_schema's
        counters for a day unless told otherwise; MariaDB has no such setting
        (and would refuse it), hence the VERSION() test."""
        statements = [
            "SET @djangoops_sql = IF(VERSION() LIKE '%MariaDB%', 'DO 0',"
            " 'SET SESSION information_schema_stats_expiry = 0')",
            "PREPARE djangoops_stmt FROM @djangoops_sql",
            "EXECUTE djangoops_stmt",
            "DEALLOCATE PREPARE djangoops_stmt",
        ]
        for table in common:
            target = quote_string(f"/* {self.mark} */ ALTER TABLE {quote_ident(new)}.{quote_ident(table)}")
            statements += [
                f"SET @djangoops_sql = COALESCE((SELECT CONCAT({target}, ' AUTO_INCREMENT = ',"
                f" AUTO_INCREMENT + {ID_MARGIN}) FROM information_schema.TABLES"
                f" WHERE {same('TABLE_SCHEMA', live)} AND {same('TABLE_NAME', table)}), 'DO 0')",
                "PREPARE djangoops_stmt FROM @djangoops_sql",
                "EXECUTE djangoops_stmt",
                "DEALLOCATE PREPARE djangoops_stmt",
            ]
        return statements

    @staticmethod
    def _rename(moves) -> str:
        """One RENAME TABLE for every (from db, to db, tables) of MOVES: all of
        it happens or none of it."""
        pairs = [
            f"{quote_ident(source)}.{quote_ident(table)} TO {quote_ident(target)}.{quote_ident(table)}"
            for source, target, tables in moves
            for table in tables
        ]
        return "RENAME TABLE " + ", ".join(pairs)

    def swap(self, live: str, new: str, aside: str, manifest=None) -> None:
        """In one RENAME TABLE, the live tables go to ASIDE and the restored
        ones take their place. Writes acknowledged before it are in ASIDE,
        writes after it in the restored tables. A lock another session holds
        makes it wait db_lock_timeout seconds at most, then fail with nothing
        moved.

        MANIFEST: the backup's manifest, or the table names it lists (None:
        unknown).
        The swap refuses, with nothing changed, when the work database's
        listing is empty while the manifest lists tables, or lacks any of them.
        When the client fails after sending the rename, swap_state() finds out
        what happened; ASIDE, which may hold the only copy of the live data, is
        dropped only when a listing shows it holds no tables. Interrupted is
        not caught: the caller's undo asks swap_state() itself."""
        unchanged = f'; database "{live}" is unchanged'
        tables = self._manifest_tables(manifest)
        try:
            listed = self._tables_in([live, new])
            charsets = self._charsets([live, new])
        except Failure as failure:
            raise Failure(failure.code, failure.message + unchanged) from failure
        new_tables = listed.get(new, [])
        live_tables = listed.get(live, [])
        self._check_work_tables(
            new, new_tables, tables, Exit.REFUSED, "the swap was refused: ", "; nothing was moved" + unchanged
        )
        for db in (live, new):
            if db not in charsets:
                raise Failure(Exit.REFUSED, f'the swap was refused: database "{db}" does not exist{unchanged}')
        live_charset, new_charset = charsets[live], charsets[new]
        try:
            # The set-aside database takes the live one's character set: it
            # holds the live tables, and its safety backup records it.
            self._run(
                [f"CREATE DATABASE {quote_ident(aside)} CHARACTER SET {live_charset[0]} COLLATE {live_charset[1]}"]
            )
        except CommandFailed as error:
            # No rename was sent: whatever was created is empty.
            self.drop_if_empty(aside)
            raise Failure(Exit.REFUSED, f"the swap was refused: {why(error)}{unchanged}") from error
        moves = [(live, aside, live_tables), (new, live, new_tables)]
        statements = self._carry_counters(live, new, sorted(set(live_tables) & set(new_tables)))
        if live_tables or new_tables:
            statements.append(self._rename(moves))
        # Read in the same session, moments after the rename, before writers
        # move the restored counters on.
        statements.append(self._reused_ids(aside, live))
        self.end_own_sessions(live)
        self.log.info(
            f'moving the tables: writes to "{live}" acknowledged before {time.strftime("%H:%M:%S")}'
            " are in the safety copy, later ones in the restored database"
        )
        reused = None
        try:
            result = self._run(statements)
            reused = [row[0] for row in parse_rows(result.stdout) if row]
        except CommandFailed as error:
            self._after_failed_swap(error, live, new, aside, new_tables, tables)
        if reused is None:
            try:
                reused = [row[0] for row in self._query([self._reused_ids(aside, live)], "comparing the id counters")]
            except Failure as failure:
                self.log.warn(f"could not check whether ids will be handed out twice: {failure.message}")
                reused = []
        if reused:
            self.log.warn(
                f"more rows were written in the last instant before the swap than the id margin ({ID_MARGIN})"
                f" allows: new rows of {','.join(reused)} may take ids that rows in the safety copy have"
            )
        try:
            self._run([f"ALTER DATABASE {quote_ident(live)} CHARACTER SET {new_charset[0]} COLLATE {new_charset[1]}"])
        except CommandFailed as error:
            self.log.warn(f'could not set the character set of "{live}": {why(error)}')
        kept = self.drop_if_empty(new)
        if kept:
            self.log.warn(f"could not drop the empty work database {new}: {kept}")
        self.log.info(f'swapped: database "{live}" holds the restored tables; the old ones are in {aside}')

    def _after_failed_swap(self, error, live, new, aside, new_tables, tables) -> None:
        """The swap session failed: find out whether the rename happened.
        Returns when it did (the swap goes on); raises otherwise."""
        # A client that timed out, was killed or lost its connection may leave
        # its statement running on the server: stop it before judging.
        self.stop_own_statements()
        state = self.swap_state(live, new, aside, tables if tables is not None else new_tables)
        reason = why(error)
        if state == "after":
            self.log.warn(f"the client failed after the tables were moved ({reason}); the swap went through")
            return
        if state == "unknown":
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f"the swap's outcome is unknown: {reason}; the server could not be asked which tables moved:"
                f' database "{live}" holds either its old tables or the restored ones, the others are in {aside}'
                f" or {new}; nothing was dropped",
            ) from error
        message = f"the swap was refused: {reason}"
        if "Lock wait timeout" in error.stderr:
            message += (
                f'; a session held a lock on "{live}" for over {self.lock_timeout} s (sessions user'
                f' "{self.connection.user}" can see: {self.visible_sessions(live) or "none"}; others need the'
                " PROCESS privilege to be seen)"
            )
        kept = self.drop_if_empty(aside)
        if kept:
            message += f"; database {aside} was kept ({kept})"
        raise Failure(Exit.REFUSED, f'{message}; database "{live}" is unchanged') from error

    def swap_state(self, live: str, new: str, aside: str, manifest=None) -> str:
        """After a failed or interrupted swap, from one successful listing
        (RENAME TABLE moves every table or none): "before" when the work
        database still holds its tables and ASIDE none, "after" when ASIDE
        holds the old tables and the work database none, "unknown" when the
        server cannot be asked or the listing fits neither. MANIFEST (or the
        table names it lists) settles the one case the listing alone cannot:
        the live database was empty, so ASIDE got nothing, and the work
        database is empty now."""
        tables = self._manifest_tables(manifest)
        try:
            listed = self._tables_in([live, new, aside])
        except Failure:
            return "unknown"
        new_tables = listed.get(new, [])
        aside_tables = listed.get(aside, [])
        if new_tables and not aside_tables:
            return "before"
        if aside_tables and not new_tables:
            return "after"
        if new_tables and aside_tables:
            return "unknown"
        if aside not in listed or not listed.get(live):
            # ASIDE is made before the rename is sent; and with no table
            # anywhere, nothing can have moved.
            return "before"
        return "after" if tables else "unknown"

    def reopen(self, live: str) -> None:
        """Nothing: moving tables never closes the live database to clients."""

    def allow_connections(self, database: str) -> None:
        """Nothing: databases have no connection switch here."""

    def put_in_place(self, new: str, live: str, manifest=None) -> None:
        """No live database to set aside (a new server): LIVE is created and
        NEW's tables are renamed into it. NEW is dropped only when a successful
        listing shows it empty afterwards; an empty or failed listing before
        the move keeps it and raises. MANIFEST as for swap()."""
        tables = self._manifest_tables(manifest)
        prefix = f'could not name the restored database "{live}"'
        kept = f"; it is loaded as {new}"
        try:
            new_tables = self.base_tables(new)
            charsets = self._charsets([new])
        except Failure as failure:
            raise Failure(failure.code, f"{prefix}: {failure.message}{kept}") from failure
        self._check_work_tables(
            new, new_tables, tables, Exit.RESTORE_FAILED, f"{prefix}: ", f"; nothing was moved, {new} is kept"
        )
        if new not in charsets:
            raise Failure(Exit.RESTORE_FAILED, f"{prefix}: the work database {new} does not exist")
        encoding, collate = charsets[new]
        try:
            self._run([f"CREATE DATABASE {quote_ident(live)} CHARACTER SET {encoding} COLLATE {collate}"])
        except CommandFailed as error:
            raise Failure(Exit.RESTORE_FAILED, f"{prefix}: {why(error)}{kept}") from error
        if new_tables:
            try:
                self._run([self._rename([(new, live, new_tables)])])
            except CommandFailed as error:
                self.stop_own_statements()
                self._after_failed_put(error, new, live, new_tables, prefix, kept)
        left = self.drop_if_empty(new)
        if left:
            self.log.warn(f"could not drop the empty work database {new}: {left}")

    def _after_failed_put(self, error, new, live, new_tables, prefix, kept) -> None:
        """The rename into LIVE failed: returns when the tables moved all the
        same, raises otherwise (nothing is dropped)."""
        try:
            listed = self._tables_in([new, live])
        except Failure as failure:
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f"{prefix}: {why(error)}; where the tables are cannot be told ({failure.message}): they are in"
                f' {new} or "{live}"; nothing was dropped',
            ) from error
        if not listed.get(new) and set(new_tables) <= set(listed.get(live, [])):
            self.log.warn(f"the client failed after the tables were moved ({why(error)}); they are in place")
            return
        raise Failure(Exit.RESTORE_FAILED, f"{prefix}: {why(error)}{kept}") from error

    def stop_own_statements(self) -> None:
        """Statements of this run still running on the server (a signal arrived
        while the client waited, or the client was stopped): KILL QUERY, so
        nothing outlives the run."""
        marked = quote_string(f"/* {self.mark} */")
        ids = self._session_ids(f"LOCATE(CAST({marked} AS BINARY), CAST(INFO AS BINARY)) > 0")
        self._kill("QUERY", ids)
