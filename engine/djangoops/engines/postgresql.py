"""PostgreSQL: the engine_* functions of roles/db_backup/files/engine_postgresql.sh
(and the parts of db.sh they serve), as a class.

Connection details travel in PG* environment variables (exact, no quoting
rules) and the password in a pgpass file: nothing secret on a command line.
SQL goes to psql on its standard input, and every name or value in it is a psql
variable (-v name=value, used as :'name' for a literal and :"name" for an
identifier), so that psql does the quoting; pg_dump and pg_restore get the
database as a conninfo string with the name quoted.

Results are read with psql's unaligned output separated by NUL bytes (-z -0):
a name may hold a tab or a newline, but never a NUL, so every name comes back
exactly as the server has it.

A restore loads the backup into a database of its own, then swaps it in: the
live database is renamed aside and the restored one takes its name, in one
transaction. What a database carries besides its tables (settings, grants,
connection limit) does not move with its contents, so it is read from the live
database and given to the restored one first (properties, apply_properties).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
from time import monotonic, strftime
from typing import NamedTuple

from ..errors import Exit, Failure
from ..manifest import TOC_ENTRY
from ..runner import CAPTURE, DEVNULL, CommandFailed, Stage
from .base import LOCAL_HOSTS, Connection, Engine, Properties, Snapshot, room_here

CONNECT_TIMEOUT = 10  # PGCONNECT_TIMEOUT: seconds to reach the server
# Seconds a short statement may take beyond the waits it is allowed (the
# connection, the lock timeout): a busy server, a slow catalog.
SLACK = 60
# CREATE and DROP DATABASE copy or remove files and wait for a checkpoint:
# longer than a catalog query, still bounded.
DDL_TIMEOUT = 600
# ANALYZE reads a sample of every table: minutes on a large database.
ANALYZE_TIMEOUT = 3600
# The counting session started with pg_dump; by the time pg_dump has ended it
# has (nearly) always finished, as counting is cheaper than dumping.
COUNT_TIMEOUT = 3600

# Every table's name (as pg_dump names it) and row count, for a SELECT: what the
# snapshot counts for the manifest and what a test restore is compared with.
# The same query as the shell version's, so that both count the same tables.
PG_TABLE_ROWS = r"""format('%I.%I', n.nspname, c.relname),
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),
                                            false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%'"""

# Sessions on :'db' other than this one: pid, user, application, and whether
# this user may end them. Background workers (autovacuum) have no user and are
# left out by the join: PostgreSQL ends them itself on RENAME and DROP.
SESSIONS_SQL = """\
SELECT a.pid, r.rolname, coalesce(nullif(a.application_name, ''), '-'),
       (me.rolsuper OR (pg_has_role(current_user, a.usesysid, 'MEMBER') AND NOT r.rolsuper))
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
CROSS JOIN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) me
WHERE a.datname = :'db' AND a.pid <> pg_backend_pid()
ORDER BY a.pid;
"""

RIGHTS_SQL = """\
SELECT r.rolcreatedb OR r.rolsuper,
       coalesce((SELECT pg_has_role(current_user, d.datdba, 'MEMBER') OR r.rolsuper
                 FROM pg_database d WHERE d.datname = :'db'), true),
       coalesce((SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = :'db'), '')
FROM pg_roles r WHERE r.rolname = current_user;
"""

# Ends this user's own sessions on :'db' (the site's, a left-over psql).
END_OWN_SESSIONS_SQL = """\
SELECT pg_terminate_backend(a.pid)
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
CROSS JOIN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) me
WHERE a.datname = :'db' AND a.pid <> pg_backend_pid()
  AND (me.rolsuper OR (pg_has_role(current_user, a.usesysid, 'MEMBER') AND NOT r.rolsuper));
"""

# The swap's first step: the site is locked out of :"db" and its sessions end,
# all but the one (:hold) that reads the sequences next.
LOCK_OUT_SQL = """\
ALTER DATABASE :"db" ALLOW_CONNECTIONS false;
SELECT pg_terminate_backend(a.pid)
FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
CROSS JOIN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) me
WHERE a.datname = :'db' AND a.pid NOT IN (pg_backend_pid(), :hold)
  AND (me.rolsuper OR (pg_has_role(current_user, a.usesysid, 'MEMBER') AND NOT r.rolsuper));
"""

# Run by the holding session once nobody else writes: one statement per
# sequence that raises the restored database's copy to the live value, so
# that no id is handed out twice. The names are quoted by the server (%L, %I).
SEQUENCES_SQL = """\
SELECT format('SELECT setval(%L, %s, true) FROM pg_sequences'
              ' WHERE schemaname = %L AND sequencename = %L AND coalesce(last_value, 0) < %s;',
              format('%I.%I', schemaname, sequencename), last_value, schemaname, sequencename, last_value)
FROM pg_sequences WHERE last_value IS NOT NULL;
"""

RENAME_SQL = """\
BEGIN;
ALTER DATABASE :"live" RENAME TO :"aside";
ALTER DATABASE :"new" RENAME TO :"live";
COMMIT;
"""

# What :'db' carries besides its tables, as statements that give it to the
# database named by the psql variable db of the session that runs them (the
# text :"db" is left in them for that). Settings (ALTER DATABASE ... SET and
# ALTER ROLE ... IN DATABASE ... SET, from pg_db_role_setting), the grants of
# its ACL, its connection limit, its comment and its owner. Every name and
# value is quoted by the server (quote_ident, quote_literal, %I, %L).
#
# A setting is stored as "name=value". The value of a list setting
# (search_path, temp_tablespaces, *_preload_libraries) is a list of
# identifiers ('"$user", public'): quoted whole it would become one element,
# so each element is taken out and quoted on its own, as pg_dump does.
PROPERTIES_SQL = r"""
WITH d AS (
  SELECT oid, datdba, datacl, datconnlimit, shobj_description(oid, 'pg_database') AS description
  FROM pg_database WHERE datname = :'db'
), setting AS (
  SELECT s.setrole, sc.ord, split_part(sc.item, '=', 1) AS name, substr(sc.item, strpos(sc.item, '=') + 1) AS value
  FROM pg_db_role_setting s JOIN d ON s.setdatabase = d.oid
  CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS sc(item, ord)
), statement AS (
  SELECT 1 AS step, CASE WHEN setrole = 0 THEN 0 ELSE 1 END AS sub, pg_get_userbyid(setrole) AS who, ord,
         CASE WHEN setrole = 0 THEN 'ALTER DATABASE :"db"'
              ELSE format('ALTER ROLE %I IN DATABASE :"db"', pg_get_userbyid(setrole)) END
         || ' SET ' || (SELECT string_agg(quote_ident(part), '.' ORDER BY n)
                        FROM unnest(string_to_array(name, '.')) WITH ORDINALITY AS p(part, n))
         || ' TO '
         || CASE WHEN lower(name) IN ('search_path', 'temp_tablespaces', 'local_preload_libraries',
                                      'session_preload_libraries', 'shared_preload_libraries')
                 THEN coalesce((SELECT string_agg(quote_literal(
                                          CASE WHEN m[1] LIKE '"%'
                                               THEN replace(substr(m[1], 2, length(m[1]) - 2), '""', '"')
                                               ELSE m[1] END), ', ' ORDER BY k)
                                FROM regexp_matches(value, '("(?:[^"]|"")*"|[^",[:space:]]+)', 'g')
                                     WITH ORDINALITY AS e(m, k)),
                               quote_literal(value))
                 ELSE quote_literal(value) END
         || ';' AS sql
  FROM setting
  UNION ALL
  SELECT 2, 0, '', 0, 'REVOKE ALL ON DATABASE :"db" FROM PUBLIC;' FROM d WHERE datacl IS NOT NULL
  UNION ALL
  SELECT 3, 0, coalesce(pg_get_userbyid(nullif(a.grantee, 0)), ''), 0,
         format('GRANT %s ON DATABASE :"db" TO %s%s;', a.privilege_type,
                CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM d CROSS JOIN LATERAL aclexplode(d.datacl) a
  WHERE a.grantee <> d.datdba AND a.privilege_type IN ('CONNECT', 'CREATE', 'TEMPORARY')
  UNION ALL
  SELECT 4, 0, '', 0, format('ALTER DATABASE :"db" CONNECTION LIMIT %s;', datconnlimit) FROM d WHERE datconnlimit <> -1
  UNION ALL
  SELECT 5, 0, '', 0, format('COMMENT ON DATABASE :"db" IS %L;', description) FROM d WHERE description IS NOT NULL
  UNION ALL
  SELECT 6, 0, '', 0, format('ALTER DATABASE :"db" OWNER TO %I;', pg_get_userbyid(datdba))
  FROM d WHERE datdba <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
)
SELECT (SELECT count(*) FROM d), sql FROM (
  SELECT step, sub, who, ord, sql FROM statement
  UNION ALL SELECT 0, 0, '', 0, NULL WHERE NOT EXISTS (SELECT FROM statement)
) s ORDER BY step, sub, who, ord;
"""

MANIFEST_FIELDS_SQL = """\
SELECT pg_encoding_to_char(encoding), datcollate, datctype, current_setting('server_version')
FROM pg_database WHERE datname = current_database();
"""

# pg_export_snapshot()'s answer, e.g. 00000003-0000001B-1.
SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+\Z")


def conninfo(database: str) -> str:
    """A libpq conninfo string naming DATABASE, whatever characters it holds."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


# A line of a client's stderr that says what failed (psql, pg_restore and the
# server's own messages); the lines after it are context (the statement).
ERROR_LINE = re.compile(r"\b(ERROR|FATAL|PANIC|error|fatal):")


def _why(failed: CommandFailed, lines: int = 1) -> str:
    """What went wrong, for one log line: the client's own message (from its
    last ERROR line, which the statement it quotes may follow) when it exited
    with an error, else the runner's account (a timeout, a signal, a program
    that could not be started)."""
    if failed.timed_out or failed.signal is not None or failed.detail or not failed.stderr.strip():
        return failed.reason()
    tail = [line.strip() for line in failed.stderr.splitlines() if line.strip()]
    errors = [index for index, line in enumerate(tail) if ERROR_LINE.search(line)]
    start = errors[-1] if errors else max(0, len(tail) - lines)
    return " ".join(tail[start : start + lines])


def _fields(output: bytes, width: int) -> list[tuple[str, ...]]:
    """Rows of WIDTH fields from psql -tA -z -0 output (every field ends with a
    NUL). Undecodable bytes are kept as surrogates, so a name read here and put
    back on a command line is the server's exact name. ValueError when the
    output is not whole rows: a cut-off answer is not an answer."""
    text = output.decode("utf-8", "surrogateescape")
    if not text:
        return []
    if not text.endswith("\0"):
        raise ValueError("the output does not end with a complete field")
    values = text[:-1].split("\0")
    if len(values) % width:
        raise ValueError(f"{len(values)} fields do not make rows of {width}")
    return [tuple(values[i : i + width]) for i in range(0, len(values), width)]


def _is_setting(sql: str) -> bool:
    """Whether SQL, one of properties()' statements, is a setting (ALTER
    DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET)."""
    return sql.startswith(("ALTER ROLE ", 'ALTER DATABASE :"db" SET '))


def _row_count(text, code, message):
    """TEXT (a count the server sent) as an int; Failure(CODE, MESSAGE) if it is not one."""
    try:
        return int(text)
    except ValueError:
        raise Failure(code, message) from None


class Analyzing(NamedTuple):
    """An ANALYZE running beside the restore (start_analyze)."""

    database: str
    session: object
    started: float


class PostgreSQL(Engine):
    name = "postgresql"
    dump_name = "pg_dump"
    django_engines = (r"\.(postgresql(_psycopg2)?|postgis)$",)
    # ANALYZE takes longer than the row count it would run beside (about 1 s
    # against 0.3 s in the benchmark): after the swap it runs beside
    # the safety copy's dump instead, and the restore is not the longer for
    # it. It takes no lock that stops the site's reads or writes; until it
    # ends (about a second), the planner estimates from the tables' sizes.
    analyzes_live = True

    def __init__(self, runner, connection: Connection, settings, log, run_dir: str, script: str = ""):
        super().__init__(runner, connection, settings, log, run_dir, script)
        # The live database while the swap has it locked out (ALLOW_CONNECTIONS
        # false), None otherwise: what the restore's exit handler must reopen.
        self.locked_out: str | None = None

    # --- credentials -----------------------------------------------------------

    @staticmethod
    def pgpass_line(password: str) -> str:
        """The pgpass line for PASSWORD on any host, port, database and user;
        ':' and '\\' are escaped. A line break cannot be written in a pgpass
        file (it would end the entry and leave a wrong password): refused."""
        if "\n" in password or "\r" in password:
            raise Failure(Exit.CONFIG, "the database password holds a line break, which a pgpass file cannot hold")
        return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"

    @classmethod
    def client_file_text(cls, connection: Connection, password: str) -> str:
        """For credentials.from_django, which writes the file before an engine
        exists: the same line whatever the connection (PG* variables say
        where)."""
        return cls.pgpass_line(password)

    def client_file_content(self, password: str) -> str:
        return self.pgpass_line(password)

    # --- how the clients are run -------------------------------------------------

    def env(self, database: str | None = None, lock_timeout: bool = True) -> dict[str, str | None]:
        """The variables a client runs with (laid over the runner's environment;
        None removes one): who and where, the run's pgpass file, and no other
        source of a password or of connection details. LOCK_TIMEOUT: every
        lock the session waits for is waited for at most db_lock_timeout
        seconds (left out only for the dump and the load, which wait as
        pg_dump alone would)."""
        connection = self.connection
        options = "-c client_min_messages=warning"
        if lock_timeout:
            options += f" -c lock_timeout={self.lock_timeout}s"
        command = getattr(self, "script", "") or getattr(self.log, "script_name", "") or ""
        port = str(connection.port or "")
        return {
            "PGPASSFILE": connection.client_file,
            "PGDATABASE": connection.name if database is None else database,
            "PGUSER": connection.user,
            "PGHOST": connection.host or None,
            "PGPORT": port if port not in ("", "0") else None,
            "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            "PGAPPNAME": f"djangoops {command}".strip(),
            "PGOPTIONS": options,
            # Another password, service or address than the run's own would
            # connect somewhere else, or as someone else.
            "PGPASSWORD": None,
            "PGSERVICE": None,
            "PGSERVICEFILE": None,
            "PGHOSTADDR": None,
        }

    @staticmethod
    def psql(*options: str, variables: dict[str, object] | None = None) -> list[str]:
        """psql's argv: no .psqlrc, quiet, stopping at the first error, with
        VARIABLES for :'name' and :"name" in the SQL it reads on stdin."""
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *options]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        return argv

    @property
    def lock_timeout(self) -> int:
        return int(self.settings.db_lock_timeout)

    @property
    def query_timeout(self) -> int:
        """How long a short script may run: the connection, two lock waits
        (its statements and the catalog), and slack."""
        return CONNECT_TIMEOUT + 2 * self.lock_timeout + SLACK

    def _run_sql(self, sql, *, database=None, variables=None, options=("-tA",), timeout=None, stdout=CAPTURE):
        """Run SQL (psql's stdin) on DATABASE (default: the maintenance
        database). CommandFailed and Interrupted go to the caller."""
        database = self.settings.pg_maintenance_db if database is None else database
        return self.runner.run(
            self.psql(*options, variables=variables),
            env=self.env(database),
            input=sql,
            stdout=stdout,
            timeout=self.query_timeout if timeout is None else timeout,
            name="psql",
        )

    def _query(self, sql, width, what, *, database=None, variables=None, timeout=None, code=Exit.DB_UNAVAILABLE):
        """The rows SQL returns, WIDTH fields each. A failed query, or an
        answer that is cut off, raises Failure(CODE) saying WHAT could not be
        done: it is never read as an empty answer."""
        try:
            result = self._run_sql(
                sql, database=database, variables=variables, options=("-tA", "-z", "-0"), timeout=timeout
            )
        except CommandFailed as failed:
            raise Failure(code, f"{what}: {_why(failed)}") from None
        try:
            return _fields(result.stdout, width)
        except ValueError as exc:
            raise Failure(code, f"{what}: psql's answer could not be read ({exc})") from None

    def _session_error(self, session) -> str:
        """Why SESSION ended its output early: its exit status and the end of
        its stderr, once it has been stopped."""
        try:
            session.close(timeout=CONNECT_TIMEOUT)
        except CommandFailed as failed:
            return _why(failed, lines=2)
        return "it ended without an answer"

    # --- the server ------------------------------------------------------------------

    def check_connection(self) -> None:
        connection = self.connection
        try:
            self.runner.run(
                ["psql", "-X", "-tA", "-c", "SELECT 1"],
                env=self.env(lock_timeout=False),
                stdout=DEVNULL,
                timeout=self.query_timeout,
                name="psql",
            )
        except CommandFailed as failed:
            where = connection.host or "the local socket"
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f'cannot connect to database "{connection.name}" as "{connection.user}" on {where}: '
                f"{_why(failed, lines=3)}",
            ) from None

    def check_server(self) -> None:
        try:
            self._run_sql("SELECT 1;\n", stdout=DEVNULL)
        except CommandFailed as failed:
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f'cannot connect to the PostgreSQL server as "{self.connection.user}" '
                f"(database {self.settings.pg_maintenance_db}): {_why(failed, lines=3)}",
            ) from None

    def database_exists(self, name: str) -> bool:
        # A query error is not "the database does not exist": that would skip
        # the safety backup.
        rows = self._query(
            "SELECT count(*) FROM pg_database WHERE datname = :'db';\n",
            1,
            f'could not check whether database "{name}" exists',
            variables={"db": name},
        )
        if rows not in ([("0",)], [("1",)]):
            raise Failure(
                Exit.DB_UNAVAILABLE, f'could not check whether database "{name}" exists: unexpected answer {rows!r}'
            )
        return rows == [("1",)]

    def list_databases(self, prefix: str, rest: str | None = None) -> list[str]:
        """Databases whose names start with PREFIX (starts_with: '_' and '%'
        are plain characters). REST, a regular expression, must match the
        whole remainder of a name: the work databases of project "shop" are
        then never taken for those of "shop_x" or "shop2"."""
        rows = self._query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, :'prefix') ORDER BY 1;\n",
            1,
            f"could not list the databases whose names start with {prefix}",
            variables={"prefix": prefix},
        )
        names = [row[0] for row in rows]
        # starts_with already did this; checked again so that a server that
        # answered otherwise is never believed.
        names = [name for name in names if name.startswith(prefix)]
        if rest is not None:
            pattern = re.compile(rest)
            names = [name for name in names if pattern.fullmatch(name[len(prefix) :])]
        return names

    # --- backup ----------------------------------------------------------------------

    def dump_stage(self, database: str, snapshot: Snapshot | None = None) -> Stage:
        args = [f"--exclude-table-data={table}" for table in self.settings.excluded_table_data]
        if snapshot is not None:
            args.append(f"--snapshot={snapshot.snapshot_id}")
        if self.settings.postgresql_format == "custom":
            argv = ["pg_dump", "--format=custom", "--compress=0", *args]
        else:
            argv = ["pg_dump", "--format=plain", *args]
        argv.append(f"--dbname={conninfo(database)}")
        return Stage(argv, env=self.env(database, lock_timeout=False), name="pg_dump")

    def counts_in_snapshot(self) -> bool:
        # A custom-format archive is not read back to count its rows (pg_restore
        # would render it as SQL text for the counter: more CPU than
        # compressing it). The rows are counted inside the very snapshot
        # pg_dump reads, while pg_dump runs.
        return self.settings.postgresql_format == "custom"

    @property
    def counts_path(self) -> str:
        """Where the counting session writes its counts (the run's private
        directory): a file, so that it never waits for a reader while it
        holds its locks."""
        return os.path.join(self.run_dir, "snapshot.counts")

    def snapshot_begin(self, database: str) -> Snapshot:
        """One session exports a snapshot and keeps it alive (it touches no
        table, so it holds no lock a migration could wait for); a second one
        imports it and counts every table, holding its ACCESS SHARE locks
        only while it counts. pg_dump --snapshot reads the same data."""
        try:
            holder = self.runner.start(self.psql("-tA"), env=self.env(database), name="psql")
        except CommandFailed as failed:
            raise Failure(
                Exit.DB_UNAVAILABLE, f'could not take a snapshot of database "{database}" to dump: {_why(failed, 2)}'
            ) from None
        try:
            holder.write("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n")
            line = holder.readline(timeout=CONNECT_TIMEOUT + self.lock_timeout)
            if line is None or not SNAPSHOT_ID.match(line.strip()):
                why = self._session_error(holder) if line is None else f"unexpected answer {line[:80]!r}"
                raise Failure(Exit.DB_UNAVAILABLE, f'could not take a snapshot of database "{database}" to dump: {why}')
            snapshot_id = line.strip()
            counter = self.runner.start(
                self.psql("-tA", "-z", "-0", f"--output={self.counts_path}", variables={"snapshot": snapshot_id}),
                env=self.env(database, lock_timeout=False),
                name="psql",
            )
        except CommandFailed as failed:
            holder.kill()
            raise Failure(
                Exit.DB_UNAVAILABLE, f'could not take a snapshot of database "{database}" to dump: {_why(failed, 2)}'
            ) from None
        except BaseException:
            holder.kill()
            raise
        try:
            counter.write(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                "SET TRANSACTION SNAPSHOT :'snapshot';\n"
                f"SELECT c.oid, {PG_TABLE_ROWS};\n"
                "COMMIT;\n"
                "\\q\n"
            )
        except CommandFailed as failed:
            counter.kill()
            holder.kill()
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f'could not start counting in the snapshot of database "{database}": {_why(failed)}',
            ) from None
        except BaseException:
            counter.kill()
            holder.kill()
            raise
        return Snapshot(snapshot_id=snapshot_id, holder=holder, counter=counter)

    def table_of_contents(self, archive: str, name: str | None = None) -> str:
        """The table of contents (`pg_restore --list`) of the compressed
        archive ARCHIVE (named NAME, whose extension says how it is
        compressed: ARCHIVE may be a partial). pg_restore reads only the table
        of contents and stops reading, so the decompressor may die of SIGPIPE:
        only pg_restore's status counts."""
        stages = [
            Stage(self._decompress_argv(archive, name), name="decompress", ok_codes=(0, -signal.SIGPIPE)),
            Stage(["pg_restore", "--list"], env=self.env(lock_timeout=False), name="pg_restore"),
        ]
        try:
            results = self.runner.pipeline(stages, stdout=CAPTURE, timeout=self.query_timeout)
        except CommandFailed as failed:
            last = (failed.results or [None])[-1]
            if last is None or last.returncode != 0:
                raise Failure(
                    Exit.DUMP_FAILED,
                    f"pg_restore could not read the archive's table of contents: {_why(failed, 2)}; "
                    "nothing was published",
                ) from None
            results = failed.results
        return results[-1].stdout.decode("utf-8", "replace")

    def snapshot_counts(self, snapshot: Snapshot, archive_toc: str) -> dict:
        """{"tables": {name: rows}, "complete": True} of the archive whose
        `pg_restore --list` is ARCHIVE_TOC: the tables it creates or fills,
        with the rows counted in the snapshot where it holds their data (a
        table left out with --exclude-table-data counts 0)."""
        try:
            snapshot.counter.close(timeout=COUNT_TIMEOUT)
        except CommandFailed as failed:
            raise self._snapshot_lost(snapshot, "counting in the dump's snapshot failed", failed) from None
        try:
            # The snapshot is released only now: pg_dump has imported it and ended.
            snapshot.holder.write("COMMIT;\n\\q\n")
            snapshot.holder.close(timeout=self.query_timeout)
        except CommandFailed as failed:
            raise self._snapshot_lost(snapshot, "the snapshot's session failed", failed) from None
        try:
            with open(self.counts_path, "rb") as f:
                rows = _fields(f.read(), 3)
        except (OSError, ValueError) as exc:
            raise Failure(
                Exit.DUMP_FAILED, f"the counts of the dump's snapshot could not be read: {exc}; nothing was published"
            ) from None
        created, filled = set(), set()
        for line in archive_toc.splitlines():
            found = TOC_ENTRY.match(line)
            if found:
                (filled if found.group(3) == "TABLE DATA" else created).add(found.group(2))
        tables = {}
        for oid, table, count in rows:
            if oid in filled:
                wrong = f"the snapshot counted {count[:40]!r} rows in table {table}; nothing was published"
                tables[table] = _row_count(count, Exit.DUMP_FAILED, wrong)
            elif oid in created:
                tables[table] = 0
        return {"tables": dict(sorted(tables.items())), "complete": True}

    def _snapshot_lost(self, snapshot: Snapshot, what: str, failed: CommandFailed) -> Failure:
        """SNAPSHOT abandoned; the Failure saying WHAT failed, and why (FAILED)."""
        self.snapshot_abandon(snapshot)
        return Failure(Exit.DUMP_FAILED, f"{what}: {_why(failed, 2)}; nothing was published")

    def snapshot_abandon(self, snapshot: Snapshot) -> None:
        for session in (snapshot.counter, snapshot.holder):
            if session is not None:
                session.kill()

    def manifest_fields(self, database: str) -> dict:
        rows = self._query(
            MANIFEST_FIELDS_SQL,
            4,
            f'could not read the encoding and locale of database "{database}"',
            database=database,
        )
        if len(rows) != 1 or not all(rows[0][:3]):
            raise Failure(
                Exit.DB_UNAVAILABLE, f'could not read the encoding and locale of database "{database}": no answer'
            )
        encoding, collate, ctype, version = rows[0]
        return {"encoding": encoding, "collate": collate, "ctype": ctype, "server_version": version}

    # --- restore and verify ------------------------------------------------------------

    def restore_precheck(self, live: bool) -> None:
        """The right to create databases, ownership of the live one (to set it
        aside), and no session on it that this user may not end."""
        name, user = self.connection.name, self.connection.user
        rows = self._query(RIGHTS_SQL, 3, f'could not read the privileges of "{user}"', variables={"db": name})
        if len(rows) != 1:
            raise Failure(Exit.DB_UNAVAILABLE, f'could not read the privileges of "{user}": no answer')
        may_create, owns, owner = rows[0]
        if may_create != "t":
            raise Failure(
                Exit.CONFIG,
                f'user "{user}" may not create databases (CREATEDB), so it cannot load the backup beside "{name}"; '
                "nothing was changed",
            )
        if owns != "t":
            raise Failure(
                Exit.CONFIG,
                f'user "{user}" does not own database "{name}" (its owner is "{owner}"), so it cannot set it aside; '
                "make it the owner (ALTER DATABASE ... OWNER TO ...) or restore as the owner; nothing was changed",
            )
        if not live:
            return
        sessions = self._query(SESSIONS_SQL, 4, f'could not list the sessions on "{name}"', variables={"db": name})
        blockers = [f'pid {pid} (user "{who}", {app})' for pid, who, app, mine in sessions if mine != "t"]
        if blockers:
            raise Failure(
                Exit.REFUSED,
                f'database "{name}" is in use by sessions that user "{user}" may not end: {" ".join(blockers)}; '
                "end them (as their user or a superuser: SELECT pg_terminate_backend(PID)) and run the restore again; "
                "nothing was changed",
            )

    def _end_own_sessions(self, database: str) -> None:
        """End this user's own sessions on DATABASE. A failure is not reported
        here: the statement that needs them gone (DROP, RENAME) says it."""
        try:
            self._run_sql(END_OWN_SESSIONS_SQL, variables={"db": database}, stdout=DEVNULL)
        except CommandFailed:
            pass

    def create_database(self, name: str, manifest) -> None:
        values = {key: manifest.get(key) for key in ("encoding", "collate", "ctype")}
        if not all(isinstance(value, str) and value for value in values.values()):
            source = os.path.basename(str(getattr(manifest, "source", "the backup")))
            raise Failure(
                Exit.BAD_BACKUP,
                f"the manifest of {source} lacks the database's encoding or locale, "
                f"so database {name} cannot be created as the backup's was",
            )
        self.log.info(f'creating database "{name}"')
        try:
            self._run_sql(
                "CREATE DATABASE :\"db\" TEMPLATE template0 ENCODING :'enc' LC_COLLATE :'coll' LC_CTYPE :'ctype';\n",
                variables={"db": name, "enc": values["encoding"], "coll": values["collate"], "ctype": values["ctype"]},
                timeout=DDL_TIMEOUT + self.lock_timeout,
                stdout=DEVNULL,
            )
        except CommandFailed as failed:
            raise Failure(
                Exit.CONFIG,
                f"could not create the work database {name}: {_why(failed)}; "
                "the database user needs the right to create (and drop) it",
            ) from None

    def drop_database(self, name: str) -> None:
        """Plain DROP, not WITH (FORCE): PostgreSQL stops an autovacuum worker
        on it by itself, while FORCE needs the right to end every session,
        which a site user lacks."""
        if name == self.connection.name:
            raise Failure(Exit.INTERNAL, f'refusing to drop database "{name}": it is the live database')
        self._end_own_sessions(name)
        try:
            self._run_sql(
                'DROP DATABASE IF EXISTS :"db";\n',
                variables={"db": name},
                timeout=DDL_TIMEOUT + self.lock_timeout,
                stdout=DEVNULL,
            )
        except CommandFailed as failed:
            raise Failure(Exit.REFUSED, f"could not drop {name}: {_why(failed)}") from None

    @staticmethod
    def _decompress_argv(path: str, name: str | None = None) -> list[str]:
        """The decompressor for PATH to stdout; NAME's extension (default
        PATH's) says which, as PATH may be a partial."""
        name = name or path
        if name.endswith(".zst"):
            return ["zstd", "-q", "-d", "-c", "--", path]
        if name.endswith(".gz"):
            return ["gzip", "-d", "-c", "--", path]
        raise Failure(Exit.BAD_BACKUP, f"unknown compression: {path}")

    def needs_staging(self, backup_path: str) -> bool:
        # A parallel restore reads a seekable file: the caller decompresses it
        # before anything is dropped, so a full disk stops the run while the
        # database is still intact.
        return ".pgdump." in os.path.basename(backup_path) and int(self.settings.restore_jobs) > 1

    def load(self, backup_path: str, database: str, staged_path: str | None) -> None:
        """Stops at the first error. A staged copy is removed once loaded:
        the safety backup that follows needs the space."""
        name = os.path.basename(backup_path)
        target = conninfo(database)
        self.log.info(f'loading {name} into "{database}"')
        env = self.env(database, lock_timeout=False)
        try:
            if ".pgdump." in name and staged_path:
                argv = ["pg_restore", "--exit-on-error", "--no-owner", f"--jobs={int(self.settings.restore_jobs)}"]
                argv += [f"--dbname={target}", "--", staged_path]
                results = [self.runner.run(argv, env=env, stdout=DEVNULL, name="pg_restore")]
            elif ".pgdump." in name:
                stages = [
                    Stage(self._decompress_argv(backup_path), name="decompress"),
                    Stage(["pg_restore", "--exit-on-error", "--no-owner", f"--dbname={target}"], env=env),
                ]
                results = self.runner.pipeline(stages, stdout=DEVNULL)
            else:
                stages = [
                    Stage(self._decompress_argv(backup_path), name="decompress"),
                    Stage(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"], env=env),
                ]
                results = self.runner.pipeline(stages, stdout=DEVNULL)
        except CommandFailed as failed:
            raise self.load_failure(name, database, failed, _why(failed)) from None
        self.log_warnings(results)
        if staged_path:
            try:
                os.remove(staged_path)
            except FileNotFoundError:
                pass

    def count_rows(self, database: str) -> dict[str, int]:
        rows = self._query(
            f"SELECT {PG_TABLE_ROWS}\nORDER BY 1;\n",
            2,
            f'counting the rows of database "{database}" failed',
            database=database,
            # Counting reads every table: its time is the database's size, not a wait.
            timeout=COUNT_TIMEOUT,
        )
        counts = {}
        for table, rows_text in rows:
            wrong = f'counting the rows of database "{database}" failed: {rows_text[:40]!r} rows in table {table}'
            counts[table] = _row_count(rows_text, Exit.DB_UNAVAILABLE, wrong)
        return counts

    def check_movable(self, database: str) -> None:
        # PostgreSQL renames whole databases: anything a dump can hold moves with them.
        return None

    def room_for_load(self, live: str | None) -> tuple[int, int | None, str]:
        """(bytes the work copy needs, bytes free where the server keeps its
        data or None when that cannot be seen from here, that place), for the
        restore's free-space check. The copy needs about what LIVE takes now.
        The server's disk is seen only when the server runs on this machine
        and tells this user its data directory (pg_settings hides it from
        users without pg_read_all_settings). A failed query raises."""
        if live is None:
            return 0, None, ""
        what = f'could not read the size of database "{live}"'
        rows = self._query(
            "SELECT pg_database_size(:'db'),\n"
            "       coalesce((SELECT setting FROM pg_settings WHERE name = 'data_directory'), '');\n",
            2,
            what,
            variables={"db": live},
        )
        if len(rows) != 1 or not rows[0][0].isdigit():
            raise Failure(Exit.DB_UNAVAILABLE, f"{what}: unexpected answer {rows!r}")
        needed, datadir = int(rows[0][0]), rows[0][1]
        host = self.connection.host
        return room_here(needed, datadir, host in LOCAL_HOSTS or host.startswith("/"))

    def properties(self, database: str) -> Properties:
        what = f'could not read the settings, grants and connection limit of database "{database}"'
        rows = self._query(PROPERTIES_SQL, 2, what, variables={"db": database})
        if not rows or rows[0][0] != "1":
            # The query always answers one row at least, telling whether the
            # database exists: no rows, or no such database, is no answer.
            raise Failure(Exit.DB_UNAVAILABLE, f"{what}: no answer")
        return Properties([sql for _found, sql in rows if sql])

    def apply_properties(self, properties: Properties, database: str) -> None:
        """The grants, connection limit, comment and owner are run in one
        transaction, and a failure stops the restore (a database more open
        than the live one, or owned by someone else, is not a restore of it).
        Each setting is run on its own: some may be made only by a superuser
        (a parameter of superuser level, another role's setting), and such a
        setting, made by an administrator on the live database, must not make
        every restore impossible. One that fails is a warning that names it."""
        settings = [sql for sql in properties.statements if _is_setting(sql)]
        others = [sql for sql in properties.statements if not _is_setting(sql)]
        missing = 0
        for sql in settings:
            try:
                self._run_sql(sql + "\n", variables={"db": database}, stdout=DEVNULL)
            except CommandFailed as failed:
                missing += 1
                self.log.warn(
                    f'database "{database}" lacks a setting of the live one, which user "{self.connection.user}" '
                    f"may not make ({_why(failed)}); a superuser can make it once the restore is done: {sql} "
                    "(psql -v db=NAME)"
                )
        if others:
            try:
                self._run_sql(
                    "\n".join(others) + "\n",
                    variables={"db": database},
                    options=("-tA", "--single-transaction"),
                    stdout=DEVNULL,
                )
            except CommandFailed as failed:
                raise Failure(
                    Exit.RESTORE_FAILED,
                    f'could not give database "{database}" the grants, connection limit and owner of the live one: '
                    f"{_why(failed)}",
                ) from None
        if properties.statements:
            self.log.info(
                f'database "{database}" has the settings, grants and connection limit of the live one '
                f"({len(properties.statements) - missing} of {len(properties.statements)} statements)"
            )

    def analyze(self, database: str) -> None:
        """A failed ANALYZE does not stop the restore (the data is whole and
        checked; autovacuum gathers the statistics later): it is a warning."""
        self.log.info(f'gathering planner statistics for "{database}" (ANALYZE)')
        started = monotonic()
        try:
            self._run_sql("ANALYZE;\n", database=database, timeout=ANALYZE_TIMEOUT, stdout=DEVNULL)
        except CommandFailed as failed:
            self._analyze_failed(database, failed)
            return
        self.log.info(f'analyzed "{database}" in {monotonic() - started:.1f} s')

    def start_analyze(self, database: str, beside: str = "the row count"):
        """ANALYZE in a session of its own while the restore goes on (two
        backends, two cores): the same statement, bound and outcome as
        analyze(), the wait moved to finish_analyze()."""
        self.log.info(f'gathering planner statistics for "{database}" (ANALYZE), beside {beside}')
        session = None
        try:
            session = self.runner.start(self.psql("-tA"), env=self.env(database), name="psql")
            session.write("ANALYZE;\n")
        except CommandFailed as failed:
            if session is not None:
                session.kill()
            self._analyze_failed(database, failed)
            return None
        return Analyzing(database, session, monotonic())

    def finish_analyze(self, handle) -> None:
        if handle is None:
            return
        try:
            handle.session.close(max(0.0, ANALYZE_TIMEOUT - (monotonic() - handle.started)))
        except CommandFailed as failed:
            self._analyze_failed(handle.database, failed)
            return
        self.log.info(f'analyzed "{handle.database}" in {monotonic() - handle.started:.1f} s')

    def stop_analyze(self, handle) -> None:
        if handle is not None:
            handle.session.kill()

    def _analyze_failed(self, database, failed):
        self.log.warn(
            f'ANALYZE of "{database}" failed: {_why(failed)}; '
            "the restored database has no planner statistics until autovacuum gathers them"
        )

    def swap(self, live: str, new: str, aside: str, manifest=None) -> None:
        """A session of our own on LIVE reads its sequences once nobody else
        writes; LIVE is locked out (no new connections, its other sessions
        ended); the sequences are carried over to NEW, so that no id is handed
        out twice; then LIVE is renamed ASIDE and NEW renamed LIVE in one
        transaction. Every wait is bounded by the lock timeout. Interrupted
        goes to the caller (self.locked_out says whether LIVE must be
        reopened; swap_state says where the swap got to). MANIFEST is not
        needed here: whole databases move, whatever tables they hold."""
        try:
            holder = self.runner.start(self.psql("-tA"), env=self.env(live), name="psql")
        except CommandFailed as failed:
            raise self._refuse(live, f'could not connect to "{live}": {_why(failed)}', reopen=False) from None
        try:
            self._swap(holder, live, new, aside)
        finally:
            holder.kill()

    def _refuse(self, live: str, why: str, reopen: bool = True):
        if reopen:
            self.reopen(live)
        return Failure(Exit.REFUSED, f'the swap was refused: {why}; database "{live}" is unchanged')

    def _swap(self, holder, live, new, aside):
        try:
            holder.write("SELECT pg_backend_pid();\n")
            line = holder.readline(timeout=CONNECT_TIMEOUT + self.lock_timeout)
        except CommandFailed as failed:
            raise self._refuse(live, f'could not connect to "{live}": {_why(failed)}', reopen=False) from None
        if line is None or not line.strip().isdigit():
            why = self._session_error(holder) if line is None else f"unexpected answer {line[:80]!r}"
            raise self._refuse(live, f'could not connect to "{live}": {why}', reopen=False)
        hold_pid = line.strip()

        self.locked_out = live
        try:
            self._run_sql(LOCK_OUT_SQL, variables={"db": live, "hold": hold_pid}, stdout=DEVNULL)
        except CommandFailed as failed:
            raise self._refuse(live, _why(failed)) from None
        self.log.info(
            f'database "{live}" takes no connections from {strftime("%H:%M:%S")}: every write acknowledged '
            "before this moment is in the safety copy, and the site is down until the swap"
        )

        sequences = self._read_sequences(holder, live)
        try:
            holder.close(timeout=CONNECT_TIMEOUT)
        except CommandFailed:
            pass  # its answer is whole (the end marker came): how it ends changes nothing
        if sequences:
            try:
                self._run_sql(sequences, database=new, stdout=DEVNULL)
            except CommandFailed as failed:
                raise self._refuse(live, f'could not carry the sequences over to "{new}": {_why(failed)}') from None

        self._end_own_sessions(new)
        try:
            self._run_sql(RENAME_SQL, variables={"live": live, "new": new, "aside": aside}, stdout=DEVNULL)
        except CommandFailed as failed:
            # The client may have failed after the server committed: ask.
            state = self.swap_state(live, new, aside)
            if state == "before":
                raise self._refuse(live, _why(failed)) from None
            if state == "unknown":
                self.reopen(live)
                raise Failure(
                    Exit.DB_UNAVAILABLE,
                    f"the swap's outcome is unknown ({_why(failed)}) and the server could not be asked: "
                    f'database "{live}" is either unchanged (the restored copy is then {new}) or holds the restored '
                    f"backup (what it held before is then in database {aside}); SELECT datname FROM pg_database tells",
                ) from None
            self.log.warn(f"the client reported a failure after the renames ({_why(failed)}); the server made them")
        self.locked_out = None
        self.log.info(
            f'swapped: database "{live}" holds the restored backup and takes connections; the old one is {aside}'
        )

    def _read_sequences(self, holder, live: str) -> str:
        """The setval statements the holding session prints, up to its end
        marker (random, so that no sequence name can forge it). Each read, and
        the whole, is bounded; an answer without the marker (cut short,
        empty, or late) refuses the swap: carrying over part of the
        sequences would hand out ids twice."""
        marker = f"__djangoops_end_{secrets.token_hex(8)}__"
        deadline = monotonic() + self.lock_timeout + SLACK
        lines = []
        try:
            holder.write(f"{SEQUENCES_SQL}\\echo {marker}\n\\q\n")
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise self._refuse(live, f'the sequences of "{live}" were not read in time')
                line = holder.readline(timeout=remaining)
                if line is None:
                    why = self._session_error(holder)
                    raise self._refuse(live, f'the sequences of "{live}" could not be read: {why}')
                if line == marker:
                    break
                lines.append(line)
        except CommandFailed as failed:
            raise self._refuse(live, f'the sequences of "{live}" could not be read: {_why(failed)}') from None
        return "".join(line + "\n" for line in lines)

    def swap_state(self, live: str, new: str, aside: str, manifest=None) -> str:
        """From pg_database, exact names. The renames are one transaction, so
        either both happened or neither. With ASIDE "" (put_in_place, no live
        database to set aside): "before" while NEW has not taken LIVE's name.
        Any other combination is not guessed at: "unknown"."""
        try:
            rows = self._query(
                "SELECT datname FROM pg_database WHERE datname IN (:'live', :'new', :'aside');\n",
                1,
                "could not read which databases exist",
                variables={"live": live, "new": new, "aside": aside},
            )
        except Failure as failure:
            self.log.warn(f"{failure.message}: where the swap got to is unknown")
            return "unknown"
        found = {row[0] for row in rows}
        has_live, has_new, has_aside = live in found, new in found, bool(aside) and aside in found
        if aside:
            if has_live and has_new and not has_aside:
                return "before"
            if has_live and has_aside and not has_new:
                return "after"
        else:
            if has_new and not has_live:
                return "before"
            if has_live and not has_new:
                return "after"
        self.log.warn(
            f"after the interrupted swap the server has {', '.join(sorted(found)) or 'none'} of "
            f"{live}, {new}{', ' + aside if aside else ''}: neither the state before nor the one after"
        )
        return "unknown"

    def drop_if_empty(self, database: str) -> str | None:
        """PostgreSQL's swap renames the live database itself: nothing is made
        aside beforehand, so there is nothing to tidy after a swap that did
        not happen."""
        return None

    def reopen(self, live: str) -> bool:
        """Whether LIVE takes connections again; a failure is logged (with
        what to do), not raised: the caller is already reporting a failure."""
        try:
            self._run_sql('ALTER DATABASE :"db" ALLOW_CONNECTIONS true;\n', variables={"db": live}, stdout=DEVNULL)
        except CommandFailed as failed:
            self.log.error(
                f'database "{live}" still refuses connections ({_why(failed)}): '
                "ALTER DATABASE ... ALLOW_CONNECTIONS true as its owner"
            )
            return False
        if self.locked_out == live:
            self.locked_out = None
        return True

    def put_in_place(self, new: str, live: str, manifest=None) -> None:
        self._end_own_sessions(new)
        try:
            self._run_sql(
                'ALTER DATABASE :"new" RENAME TO :"live";\n', variables={"new": new, "live": live}, stdout=DEVNULL
            )
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED,
                f'could not name the restored database "{live}": {_why(failed)}; it is loaded as {new}',
            ) from None

    def allow_connections(self, database: str) -> None:
        try:
            self._run_sql('ALTER DATABASE :"db" ALLOW_CONNECTIONS true;\n', variables={"db": database}, stdout=DEVNULL)
        except CommandFailed as failed:
            raise Failure(
                Exit.DB_UNAVAILABLE, f"could not open {database} for the safety backup: {_why(failed)}"
            ) from None

    def stop_own_statements(self) -> None:
        # Every statement here waits at most the lock timeout, and the renames
        # are one transaction that ends with its session: nothing to stop.
        return None
