"""The MySQL/MariaDB engine, driven through FakeRunner: the SQL and arguments it
sends, and what it does when the client fails, times out, answers short or is
interrupted. A small simulated server (Server) answers the listings from a
table of databases and applies CREATE, RENAME and DROP, so that the swap's
decisions can be checked against what the server would then hold."""

import re
import types

import pytest
from djangoops.engines import mysql
from djangoops.engines.base import Connection, Properties
from djangoops.engines.mysql import (
    ID_MARGIN,
    MySQL,
    option_value,
    parse_rows,
    quote_ident,
    quote_string,
    same,
    unescape,
)
from djangoops.errors import Exit, Failure
from djangoops.runner import CommandFailed, Interrupted
from fakes import FakeRunner, RecordingLog, Rule

MARK = "djangoops:99:restore_db"
LIVE = "shop"
NEW = "djangoops_restore_shop"
ASIDE = "djangoops_before_shop_20260101T000000"
HOSTILE = ["tab`le", "it's", "back\\slash", "café_ünï", 'qu"ote', "mixed`'\\\"é"]
LOST = "ERROR 2013 (HY000) at line 9: Lost connection to server during query"
TOO_MANY = {"fail": 1, "stderr": "ERROR 1040 (HY000): Too many connections"}
BUSY = {"fail": 1, "stderr": "ERROR 1040: Too many connections"}
LOCKED = "ERROR 1205 (HY000) at line 9: Lock wait timeout exceeded; try restarting transaction"


def which_mariadb(name):
    return f"/usr/bin/{name}" if name in ("mariadb", "mariadb-dump") else None


def make(fake=None, *, host="db.example", lock_timeout=30, excluded=("django_session",), **options):
    fake = fake if fake is not None else FakeRunner()
    settings = types.SimpleNamespace(excluded_table_data=list(excluded), db_lock_timeout=lock_timeout)
    connection = Connection(LIVE, "shopuser", host, "3306", "/run/djangoops/client")
    options.setdefault("which", which_mariadb)
    options.setdefault("mark", MARK)
    engine = MySQL(fake, connection, settings, RecordingLog(), "/run/djangoops", "restore_db", **options)
    return engine, fake


def first(fake, match=None, **behaviour):
    """A rule that goes before every other (the simulated server's included)."""
    rule = Rule(match, **behaviour)
    fake.rules.insert(0, rule)
    return rule


def sql_has(text):
    return lambda call: text in call.input


def failure_of(call, made=None, **rule):
    """The Failure CALL(engine) raises when every client call answers as RULE
    (made: what make() returned, default make()); and the fake."""
    engine, fake = made or make()
    fake.on("mariadb", **rule)
    with pytest.raises(Failure) as caught:
        call(engine)
    return caught.value, fake


def put_in_place_failure(match, tables=("a",), **rule):
    """The Failure put_in_place() raises when RULE answers first, the work
    database holding TABLES as the manifest says; and the fake and server."""
    engine, fake = make()
    first(fake, match, **rule)
    server = Server(fake, {NEW: list(tables)})
    with pytest.raises(Failure) as caught:
        engine.put_in_place(NEW, LIVE, manifest(*tables))
    return caught.value, fake, server


def listing(when):
    """A match for the table listings: true for those whose number (from 1) WHEN accepts."""
    count = [0]

    def match(call):
        if "TABLE_TYPE = 'BASE TABLE'" not in call.input:
            return False
        count[0] += 1
        return when(count[0])

    return match


# --- a simulated server -----------------------------------------------------------------------

LITERAL = r"'((?:[^'\\]|\\.)*)'"
IDENT = r"`((?:[^`]|``)*)`"


def unliteral(text):
    return re.sub(r"\\(.)", r"\1", text, flags=re.S)


def unident(text):
    return text.replace("``", "`")


def batch_escape(text):
    """As the client's batch output writes a value."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\0", "\\0")


class Server:
    """Answers the engine's listings from DATABASES ({name: [tables]}) and
    applies CREATE DATABASE, RENAME TABLE and DROP DATABASE to it when a call
    succeeds. Rules added with first() answer before it."""

    def __init__(self, fake, databases, charsets=None, sessions=()):
        self.databases = {name: list(tables) for name, tables in databases.items()}
        self.charsets = dict(charsets or {})
        self.sessions = list(sessions)
        self.rule = fake.on(self._match, effect=self.apply)

    def _match(self, call):
        self.rule.stdout = self.answer(call.input).encode()
        return True

    def answer(self, sql):
        if "TABLE_TYPE = 'BASE TABLE'" in sql and "SELECT 0, 0, ''" in sql:
            lines = []
            pattern = r"SELECT (\d+), 0, '' FROM information_schema\.SCHEMATA WHERE SCHEMA_NAME = " + LITERAL
            for index, name in re.findall(pattern, sql):
                name = unliteral(name)
                if name in self.databases:
                    lines.append(f"{index}\t0\t")
                    lines += [f"{index}\t1\t{batch_escape(table)}" for table in self.databases[name]]
            return "".join(line + "\n" for line in lines)
        pattern = r"SELECT (\d+), DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema\.SCHEMATA"
        pattern += r" WHERE SCHEMA_NAME = " + LITERAL
        found = re.findall(pattern, sql)
        if found:
            lines = []
            for index, name in found:
                name = unliteral(name)
                if name in self.databases:
                    charset, collation = self.charsets.get(name, ("utf8mb4", "utf8mb4_unicode_ci"))
                    lines.append(f"{index}\t{charset}\t{collation}\n")
            return "".join(lines)
        if "SELECT ID FROM information_schema.PROCESSLIST" in sql:
            return "".join(f"{i}\n" for i in self.sessions)
        return ""

    def apply(self, call):
        sql = call.input
        for name in re.findall(r"CREATE DATABASE " + IDENT, sql):
            self.databases.setdefault(unident(name), [])
        for statement in re.findall(r"RENAME TABLE (.*?);\n", sql):
            moves = re.findall(IDENT + r"\." + IDENT + " TO " + IDENT + r"\." + IDENT, statement)
            for source, table, _target, _name in moves:
                self.databases[unident(source)].remove(unident(table))
            for _source, _table, target, name in moves:
                self.databases[unident(target)].append(unident(name))
        for name in re.findall(r"DROP DATABASE (?:IF EXISTS )?" + IDENT, sql):
            self.databases.pop(unident(name), None)


def swap_server(fake, live=("auth_user", "catalog_item", "old_only"), new=("auth_user", "catalog_item"), **kw):
    return Server(fake, {LIVE: list(live), NEW: list(new)}, **kw)


def manifest(*tables):
    return {"encoding": "utf8mb4", "collate": "utf8mb4_unicode_ci", "tables": {t: 1 for t in tables}}


def no_secrets(fake):
    for argv in fake.argvs():
        for arg in argv:
            assert not arg.startswith(("-p", "--password")), argv
            assert "s3cret" not in arg


def statements(fake):
    return [line for call in fake.calls for line in call.input.splitlines()]


# --- quoting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quote", "text", "quoted"),
    [
        *[
            (quote_ident, *case)
            for case in [
                ("plain", "`plain`"),
                ("tab`le", "`tab``le`"),
                ("``", "``````"),
                ("it's", "`it's`"),
                ("back\\slash", "`back\\slash`"),
                ("café_ünï", "`café_ünï`"),
            ]
        ],
        *[
            (quote_string, *case)
            for case in [
                ("plain", "'plain'"),
                ("it's", "'it\\'s'"),
                ("back\\slash", "'back\\\\slash'"),
                ("\\'", "'\\\\\\''"),
                ("tab`le", "'tab`le'"),
                ("café", "'café'"),
            ]
        ],
    ],
)
def test_quoting(quote, text, quoted):
    assert quote(text) == quoted


@pytest.mark.parametrize("value", HOSTILE)
def test_quoting_round_trips(value):
    assert unident(quote_ident(value)[1:-1]) == value
    assert unliteral(quote_string(value)[1:-1]) == value
    # The quoted literal cannot end early: every quote inside it is escaped.
    assert re.fullmatch(LITERAL, quote_string(value))


def test_same_compares_bytes():
    assert same("SCHEMA_NAME", "Shop ") == (
        "SCHEMA_NAME = 'Shop ' AND CAST(SCHEMA_NAME AS BINARY) = CAST('Shop ' AS BINARY)"
    )


def test_unescape_and_parse_rows():
    assert unescape("a\\tb\\nc\\\\d\\0e") == "a\tb\nc\\d\0e"
    assert unescape("odd\\x") == "odd\\x"
    assert unescape("trailing\\") == "trailing\\"
    assert parse_rows(b"1\tname\\twith tab\n2\tcaf\xc3\xa9\n") == [["1", "name\twith tab"], ["2", "café"]]
    assert parse_rows(b"") == []
    assert parse_rows(b"\n") == [[""]]


def test_option_value_escapes_and_refuses_line_breaks():
    assert option_value('a"b\\c', "password") == '"a\\"b\\\\c"'
    with pytest.raises(Failure) as caught:
        option_value("s3cret\nhost=evil", "password")
    assert caught.value.code == Exit.CONFIG
    assert "s3cret" not in caught.value.message
    assert "password" in caught.value.message


def test_client_file_text():
    connection = Connection(LIVE, 'us"er', "db.example", "3306", "/x")
    text = MySQL.client_file_text(connection, 'pa"ss\\wörd #1')
    assert text == (
        "[client]\ndefault-character-set=utf8mb4\n"
        'user="us\\"er"\npassword="pa\\"ss\\\\wörd #1"\nhost="db.example"\nport=3306\n'
    )
    local = Connection(LIVE, "u", "", "0", "/x")
    assert MySQL.client_file_text(local, "") == '[client]\ndefault-character-set=utf8mb4\nuser="u"\npassword=""\n'
    engine, _fake = make()
    assert engine.client_file_content("pw").endswith('password="pw"\nhost="db.example"\nport=3306\n')
    with pytest.raises(Failure) as caught:
        MySQL.client_file_text(Connection(LIVE, "u", "h", "33o6", "/x"), "pw")
    assert caught.value.code == Exit.CONFIG


# --- the client's arguments -------------------------------------------------------------------


def test_client_argv_and_marks():
    engine, fake = make()
    engine.check_connection()
    (call,) = fake.calls
    assert call.argv == [
        "/usr/bin/mariadb",
        "--defaults-extra-file=/run/djangoops/client",
        "--batch",
        "--skip-column-names",
        "--comments",
        "--default-character-set=utf8mb4",
        "--init-command=SET SESSION lock_wait_timeout = 30, SESSION innodb_lock_wait_timeout = 30",
        "--database=shop",
    ]
    assert call.input == f"/* {MARK} */ SELECT 1;\n"
    assert call.timeout == 30 + mysql.CLIENT_SLACK
    no_secrets(fake)


def test_mysql_tools_when_mariadb_is_missing():
    engine, fake = make(which=lambda name: f"/opt/bin/{name}" if name in ("mysql", "mysqldump") else None)
    engine.check_server()
    assert fake.calls[0].argv[0] == "/opt/bin/mysql"
    assert engine.dump_name == "mysqldump"
    assert engine.dump_stage("shop").argv[0] == "/opt/bin/mysqldump"


def test_no_tools_is_a_configuration_failure():
    engine, fake = make(which=lambda name: None)
    for call in (engine.check_tools, engine.check_server, lambda: engine.dump_stage("shop")):
        with pytest.raises(Failure) as caught:
            call()
        assert caught.value.code == Exit.CONFIG
        assert "not installed" in caught.value.message
    assert fake.calls == []


def test_default_mark_names_the_process_and_command(monkeypatch):
    monkeypatch.setattr(mysql.os, "getpid", lambda: 4242)
    fake = FakeRunner()
    settings = types.SimpleNamespace(excluded_table_data=[], db_lock_timeout=7)
    connection = Connection(LIVE, "u", "", "", "/c")
    engine = MySQL(fake, connection, settings, RecordingLog(), "/run", "restore */ db", which=which_mariadb)
    assert engine.mark == "djangoops:4242:restore____db"
    engine = MySQL(fake, connection, settings, RecordingLog(), "/run", which=which_mariadb)
    assert engine.mark == "djangoops:4242:restore_db"  # from the log's script name


# --- the server -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ask", "stderr", "message"),
    [
        (
            "check_connection",
            "ERROR 1045 (28000): Access denied for user 'shopuser'@'10.0.0.2'",
            'cannot connect to database "shop" as "shopuser" on db.example: '
            "ERROR 1045 (28000): Access denied for user 'shopuser'@'10.0.0.2'",
        ),
        (
            "check_server",
            "ERROR 2002 (HY000): Can't connect to server",
            'cannot connect to the server as "shopuser": ERROR 2002 (HY000): Can\'t connect to server',
        ),
    ],
)
def test_connection_failure_names_everything(ask, stderr, message):
    failure, fake = failure_of(lambda engine: getattr(engine, ask)(), fail=1, stderr=stderr)
    assert (failure.code, failure.message) == (Exit.DB_UNAVAILABLE, message)
    assert ("--database=" in fake.calls[0].text) == (ask == "check_connection")


def test_check_connection_timeout_and_local_socket():
    failure, _fake = failure_of(lambda engine: engine.check_connection(), make(host=""), timeout=True)
    assert "on the local socket: mariadb did not finish within 90 s" in failure.message


@pytest.mark.parametrize(("stdout", "exists"), [(b"1\n", True), (b"0\n", False)])
def test_database_exists(stdout, exists):
    engine, fake = make()
    fake.on("mariadb", stdout=stdout)
    assert engine.database_exists("it's") is exists
    assert "SCHEMA_NAME = 'it\\'s' AND CAST(SCHEMA_NAME AS BINARY) = CAST('it\\'s' AS BINARY)" in fake.sql()


def test_list_databases_matches_the_prefix_exactly():
    engine, fake = make()
    fake.on("mariadb", stdout=b"djangoops_before_shop_1\ndjangoops_before_shop_2\nDJANGOOPS_BEFORE_SHOP_3\n")
    assert engine.list_databases("djangoops_before_shop_") == ["djangoops_before_shop_1", "djangoops_before_shop_2"]
    sql = fake.sql()
    assert "LIKE" not in sql
    assert (
        "CAST(LEFT(SCHEMA_NAME, CHAR_LENGTH('djangoops_before_shop_')) AS BINARY)"
        " = CAST('djangoops_before_shop_' AS BINARY)" in sql
    )


def test_list_databases_failure_raises():
    """The shell version read a failed listing as "no leftover databases"."""
    failure, _fake = failure_of(lambda engine: engine.list_databases("djangoops_before_"), **TOO_MANY)
    assert failure.code == Exit.DB_UNAVAILABLE
    assert failure.message == (
        'the query listing the databases whose names start with "djangoops_before_" failed:'
        " ERROR 1040 (HY000): Too many connections"
    )


def test_base_tables_of_hostile_names():
    engine, fake = make()
    Server(fake, {"wéird`db": [*HOSTILE, "new\nline", "with\ttab"]})
    assert engine.base_tables("wéird`db") == sorted([*HOSTILE, "new\nline", "with\ttab"])
    assert engine.base_tables("missing") == []


@pytest.mark.parametrize("stdout", [b"0\tutf8mb4\n", b"0\tutf8; DROP\tx\n", b"3\tutf8mb4\tutf8mb4_bin\n"])
def test_a_garbled_charset_answer_raises(stdout):
    engine, fake = make()
    fake.on("mariadb", stdout=stdout)
    with pytest.raises(Failure) as caught:
        engine._charsets(["shop"])
    assert caught.value.code == Exit.DB_UNAVAILABLE


# Every query that fails, times out or answers what it should not is DB_UNAVAILABLE, never read as an
# answer. The shell version read a failure as "does not exist" (database_exists); counted nothing and
# then said every table was "missing after the restore" (count_rows); wrote a manifest without a
# character set, which no restore could then use (manifest_fields).
@pytest.mark.parametrize(
    ("ask", "rule", "query", "not_sent"),
    [
        *[
            ("database_exists", rule, 'checking whether database "shop" exists', None)
            for rule in (TOO_MANY, {"timeout": True}, {"stdout": b""}, {"stdout": b"2\n"})
        ],
        *[
            ("base_tables", {"stdout": stdout}, 'listing the tables of "shop" returned a line it should not', None)
            for stdout in (b"0\t1\n", b"5\t1\tt\n", b"x\t1\tt\n", b"0\t2\tt\n")
        ],
        *[
            ("manifest_fields", rule, 'reading the character set of "shop"', None)
            for rule in ({"fail": 1, "stderr": "ERROR 2013: Lost connection"}, {"stdout": b""})
        ],
        ("restore_precheck", TOO_MANY, 'listing the tables of "shop" failed', "LOCK TABLES"),
        ("count_rows", TOO_MANY, f'listing the tables of "{NEW}" failed', None),
        *[
            ("check_movable", rule, f"looking for what RENAME TABLE cannot move in {NEW}", None)
            for rule in (BUSY, {"stdout": b""})
        ],
        (
            "analyze",
            BUSY,
            f'listing the tables of "{NEW}"',
            "ANALYZE",
        ),
        *[
            ("room_for_load", rule, 'reading the size of "shop"', None)
            for rule in ({"fail": 1, "stderr": "ERROR 1040"}, {"stdout": b""}, {"stdout": b"NULL\t/x\n"})
        ],
    ],
)
def test_a_query_that_fails_or_answers_garbage_raises(ask, rule, query, not_sent):
    argument = {"restore_precheck": True, "count_rows": NEW, "check_movable": NEW, "analyze": NEW}.get(ask, LIVE)
    failure, fake = failure_of(lambda engine: getattr(engine, ask)(argument), **rule)
    assert failure.code == Exit.DB_UNAVAILABLE
    assert failure.message.startswith(f"the query {query}")
    assert "does not exist" not in failure.message
    assert "manifest" not in failure.message
    assert not_sent is None or not_sent not in fake.sql()


def test_sessions_helpers():
    engine, fake = make()
    fake.on(
        sql_has("CONCAT('id '"), stdout=b"id 5 (user shopuser, Sleep for 3 s)\nid 6 (user x, Query for 1 s, Locked)\n"
    )
    fake.on(sql_has("SELECT ID"), stdout=b"5\n6\n")
    assert engine.visible_sessions(LIVE) == "id 5 (user shopuser, Sleep for 3 s); id 6 (user x, Query for 1 s, Locked)"
    engine.end_own_sessions(LIVE)
    kill = fake.calls[-1]
    assert "--force" in kill.argv
    assert kill.input == f"/* {MARK} */ KILL CONNECTION 5;\n/* {MARK} */ KILL CONNECTION 6;\n"
    assert "USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)" in fake.calls[-2].input


def test_sessions_helpers_when_the_server_fails():
    engine, fake = make()
    fake.on(sql_has("KILL"), fail=1, stderr="ERROR 1094 (HY000): Unknown thread id: 5")
    fake.on(sql_has("SELECT ID"), times=1, stdout=b"5\n")
    fake.on("mariadb", fail=1, stderr="ERROR 1040: Too many connections")
    assert engine.visible_sessions(LIVE) == ""
    engine.end_own_sessions(LIVE)  # one KILL failing is not a failure
    engine.end_own_sessions(LIVE)  # nor is a failed listing: nothing to kill
    assert sum("KILL" in call.input for call in fake.calls) == 1


def test_stop_own_statements_kills_marked_queries():
    engine, fake = make()
    fake.on(sql_has("SELECT ID"), stdout=b"11\n12\n")
    engine.stop_own_statements()
    listing, kill = fake.calls
    assert f"LOCATE(CAST('/* {MARK} */' AS BINARY), CAST(INFO AS BINARY)) > 0" in listing.input
    assert "ID <> CONNECTION_ID()" in listing.input
    assert kill.input == f"/* {MARK} */ KILL QUERY 11;\n/* {MARK} */ KILL QUERY 12;\n"


def test_stop_own_statements_with_nothing_to_stop():
    engine, fake = make()
    engine.stop_own_statements()
    assert len(fake.calls) == 1


def test_every_statement_carries_the_mark():
    engine, fake = make()
    swap_server(fake)
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    for line in statements(fake):
        assert line.startswith(f"/* {MARK} */ "), line
        assert line.endswith(";"), line
    assert all("--comments" in call.argv for call in fake.calls)


# --- backup -----------------------------------------------------------------------------------


def test_dump_stage():
    engine, fake = make(excluded=("django_session", "it's"))
    stage = engine.dump_stage("shop")
    assert stage.name == "mariadb-dump"
    # The whole command line, as one would type it (no argument holds a space).
    assert stage.argv == (
        "/usr/bin/mariadb-dump --defaults-extra-file=/run/djangoops/client --single-transaction --quick"
        " --routines --triggers --hex-blob --no-tablespaces --default-character-set=utf8mb4"
        " --ignore-table-data=shop.django_session --ignore-table-data=shop.it's -- shop"
    ).split(" ")
    assert engine.dump_stage(ASIDE).argv[-3:] == [f"--ignore-table-data={ASIDE}.it's", "--", ASIDE]
    assert fake.calls == []


def test_counts_are_taken_from_the_stream():
    engine, _fake = make()
    assert engine.counts_in_snapshot() is False
    for call in (
        lambda: engine.snapshot_begin("shop"),
        lambda: engine.snapshot_counts(None, ""),
        lambda: engine.snapshot_abandon(None),
    ):
        with pytest.raises(Failure) as caught:
            call()
        assert caught.value.code == Exit.INTERNAL


def test_manifest_fields():
    engine, fake = make()
    fake.on("mariadb", stdout=b"utf8mb4\tutf8mb4_unicode_ci\t10.11.6-MariaDB-0+deb12u1\n")
    assert engine.manifest_fields(ASIDE) == {
        "encoding": "utf8mb4",
        "collate": "utf8mb4_unicode_ci",
        "server_version": "10.11.6-MariaDB-0+deb12u1",
    }
    assert f"SCHEMA_NAME = '{ASIDE}'" in fake.sql()


# --- restore precheck -------------------------------------------------------------------------


def test_precheck_without_a_live_database_does_nothing():
    engine, fake = make()
    engine.restore_precheck(False)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("database", "call", "unsent"),
    [
        (LIVE, lambda engine: engine.restore_precheck(True), "LOCK TABLES"),
        (NEW, lambda engine: engine.analyze(NEW), "ANALYZE"),
    ],
    ids=["precheck", "analyze"],
)
def test_a_database_with_no_tables_gets_no_statement(database, call, unsent):
    engine, fake = make()
    Server(fake, {database: []})
    call(engine)
    assert unsent not in fake.sql()


def test_precheck_probe_succeeds():
    engine, fake = make(lock_timeout=3)
    Server(fake, {LIVE: ["auth_user", "tab`le"]})
    engine.restore_precheck(True)
    probe = fake.calls[-1]
    assert probe.input == (
        f"/* {MARK} */ SET SESSION lock_wait_timeout = 3;\n"
        f"/* {MARK} */ LOCK TABLES `shop`.`auth_user` WRITE, `shop`.`tab``le` WRITE;\n"
        f"/* {MARK} */ UNLOCK TABLES;\n"
    )
    assert probe.timeout == 3 + mysql.CLIENT_SLACK


def test_precheck_other_errors_are_a_warning():
    engine, fake = make()
    first(fake, sql_has("LOCK TABLES"), fail=1, stderr="ERROR 1044 (42000): Access denied ... LOCK TABLES")
    Server(fake, {LIVE: ["auth_user"]})
    engine.restore_precheck(True)
    assert 'could not check for locks on "shop" (ERROR 1044 (42000): Access denied ... LOCK TABLES); going on' in (
        engine.log.text("WARN")
    )
    assert sum("LOCK TABLES" in call.input for call in fake.calls) == 1


def test_precheck_ends_own_sessions_and_retries_once():
    engine, fake = make()
    first(fake, sql_has("LOCK TABLES"), times=1, fail=1, stderr=LOCKED)
    Server(fake, {LIVE: ["auth_user"]}, sessions=[77])
    engine.restore_precheck(True)
    assert sum("LOCK TABLES" in call.input for call in fake.calls) == 2
    assert f"/* {MARK} */ KILL CONNECTION 77;\n" in fake.sql()


def test_precheck_refuses_a_lock_that_stays():
    engine, fake = make()
    first(fake, sql_has("LOCK TABLES"), fail=1, stderr=LOCKED)
    first(fake, sql_has("CONCAT('id '"), stdout=b"id 8 (user other, Sleep for 40 s)\n")
    Server(fake, {LIVE: ["auth_user"]})
    with pytest.raises(Failure) as caught:
        engine.restore_precheck(True)
    assert caught.value.code == Exit.REFUSED
    message = caught.value.message
    assert message.startswith('a session holds a lock on the tables of "shop" (an open transaction?)')
    assert "did not let go within 5 s" in message
    assert 'sessions user "shopuser" can see: id 8 (user other, Sleep for 40 s)' in message
    assert "SHOW PROCESSLIST" in message
    assert message.endswith("nothing was changed")
    assert sum("LOCK TABLES" in call.input for call in fake.calls) == 2


# --- work databases ---------------------------------------------------------------------------


def test_create_database():
    engine, fake = make()
    engine.create_database("djangoops_verify_shop", manifest())
    assert fake.sql() == (
        f"/* {MARK} */ CREATE DATABASE `djangoops_verify_shop` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n"
    )
    assert 'creating database "djangoops_verify_shop"' in engine.log.text("INFO")


@pytest.mark.parametrize(
    "fields", [{}, {"encoding": "utf8mb4"}, {"encoding": "utf8mb4; DROP DATABASE shop", "collate": "x"}]
)
def test_create_database_refuses_a_manifest_without_charset(fields):
    engine, fake = make()
    with pytest.raises(Failure) as caught:
        engine.create_database(NEW, fields)
    assert caught.value.code == Exit.BAD_BACKUP
    assert "lacks the database's character set or collation" in caught.value.message
    assert fake.calls == []


def test_create_database_failure():
    engine, fake = make()
    fake.on("mariadb", fail=1, stderr="ERROR 1044 (42000): Access denied for user 'shopuser' to database 'x'")
    with pytest.raises(Failure) as caught:
        engine.create_database(NEW, manifest())
    assert caught.value.code == Exit.CONFIG
    assert caught.value.message.startswith(f"could not create the work database {NEW}: ERROR 1044")
    assert "needs the right to create (and drop) it" in caught.value.message


def test_drop_database():
    engine, fake = make()
    fake.on(sql_has("SELECT ID"), stdout=b"31\n")
    engine.drop_database(NEW)
    assert fake.calls[-1].input == f"/* {MARK} */ DROP DATABASE IF EXISTS `{NEW}`;\n"
    assert "KILL CONNECTION 31;" in fake.sql()


def test_drop_database_never_drops_the_live_one():
    engine, fake = make()
    with pytest.raises(Failure) as caught:
        engine.drop_database(LIVE)
    assert caught.value.code == Exit.INTERNAL
    assert fake.calls == []


def test_drop_database_failure():
    engine, fake = make()
    fake.on(sql_has("DROP DATABASE"), fail=1, stderr="ERROR 1010 (HY000): Error dropping database")
    with pytest.raises(Failure) as caught:
        engine.drop_database(NEW)
    assert caught.value.code == Exit.REFUSED
    assert caught.value.message == f"could not drop {NEW}: ERROR 1010 (HY000): Error dropping database"


# --- loading and checking ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "decompress"),
    [
        ("/b/shop_x.sql.zst", ["zstd", "-q", "-d", "-c", "--", "/b/shop_x.sql.zst"]),
        ("/b/shop_x.sql.gz", ["gzip", "-d", "-c", "--", "/b/shop_x.sql.gz"]),
    ],
)
def test_load_pipeline(path, decompress):
    engine, fake = make()
    fake.on("mariadb", stderr="Warning (Code 1287): something deprecated")
    engine.load(path, NEW, None)
    (call,) = fake.calls
    assert call.kind == "pipeline"
    assert call.argvs[0] == decompress
    client = call.argvs[1]
    assert client[0] == "/usr/bin/mariadb"
    assert client[-1] == f"--database={NEW}"
    assert "--force" not in client
    assert engine.log.records[-1] == ("WARN", "Warning (Code 1287): something deprecated")
    assert f'loading {path.rsplit("/", 1)[1]} into "{NEW}"' in engine.log.text("INFO")
    assert engine.needs_staging(path) is False


def test_load_stops_at_the_first_error():
    engine, fake = make()
    fake.on("mariadb", fail=1, stderr="ERROR 1062 (23000) at line 52: Duplicate entry '1' for key 'PRIMARY'")
    with pytest.raises(Failure) as caught:
        engine.load("/b/shop.sql.zst", NEW, None)
    assert caught.value.code == Exit.RESTORE_FAILED
    assert caught.value.message == (
        f"loading shop.sql.zst into {NEW} stopped at the first error: mariadb failed (exit code 1): "
        "ERROR 1062 (23000) at line 52: Duplicate entry '1' for key 'PRIMARY'"
    )
    assert ("ERROR", "ERROR 1062 (23000) at line 52: Duplicate entry '1' for key 'PRIMARY'") in engine.log.records


def test_load_reports_the_decompressor():
    engine, fake = make()
    fake.on("zstd", fail=1, stderr="zstd: /b/shop.sql.zst: unexpected end of file")
    with pytest.raises(Failure) as caught:
        engine.load("/b/shop.sql.zst", NEW, None)
    assert "zstd failed (exit code 1): zstd: /b/shop.sql.zst: unexpected end of file" in caught.value.message


def test_load_refuses_an_unknown_compression():
    engine, fake = make()
    with pytest.raises(Failure) as caught:
        engine.load("/b/shop.sql.xz", NEW, None)
    assert caught.value.code == Exit.BAD_BACKUP
    assert fake.calls == []


def test_load_interrupted():
    engine, fake = make()
    fake.on("mariadb", interrupt=15)
    with pytest.raises(Interrupted):
        engine.load("/b/shop.sql.zst", NEW, None)


def test_count_rows():
    engine, fake = make()
    first(fake, sql_has("COUNT(*) FROM `"), stdout=b"0\t3\n1\t0\n2\t12\n")
    Server(fake, {NEW: ["auth_user", "it's", "tab`le"]})
    assert engine.count_rows(NEW) == {"auth_user": 3, "it's": 0, "tab`le": 12}
    count = fake.calls[-1]
    assert count.input == (
        f"/* {MARK} */ SELECT 0, COUNT(*) FROM `{NEW}`.`auth_user` UNION ALL "
        f"SELECT 1, COUNT(*) FROM `{NEW}`.`it's` UNION ALL SELECT 2, COUNT(*) FROM `{NEW}`.`tab``le`;\n"
    )
    assert count.timeout is None


def test_count_rows_of_an_empty_database():
    engine, fake = make()
    Server(fake, {NEW: []})
    assert engine.count_rows(NEW) == {}
    assert "COUNT(*) FROM" not in fake.sql()


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"fail": 1, "stderr": "ERROR 2013 (HY000): Lost connection"}, "failed: ERROR 2013"),
        ({"timeout": True}, "did not finish"),
        ({"stdout": b"0\t3\n"}, "counts for 1 of its 2 tables"),
        ({"stdout": b""}, "counts for 0 of its 2 tables"),
        ({"stdout": b"0\tNULL\n1\t2\n"}, "a line it should not"),
        ({"stdout": b"7\t1\n1\t2\n"}, "a line it should not"),
    ],
)
def test_count_rows_query_failures(rule, words):
    engine, fake = make()
    first(fake, sql_has("COUNT(*) FROM `"), **rule)
    Server(fake, {NEW: ["a", "b"]})
    with pytest.raises(Failure) as caught:
        engine.count_rows(NEW)
    assert caught.value.code == Exit.DB_UNAVAILABLE
    assert f"counting the rows of {NEW}" in caught.value.message
    assert words in caught.value.message
    assert "does not match" not in caught.value.message


def test_check_movable():
    engine, fake = make()
    fake.on("mariadb", stdout=b"\n")
    engine.check_movable(NEW)
    sql = fake.sql()
    for view in ("VIEWS", "TRIGGERS", "ROUTINES", "EVENTS"):
        assert f"information_schema.{view}" in sql
    assert f"TRIGGER_SCHEMA = '{NEW}'" in sql


def test_check_movable_refuses_views():
    engine, fake = make()
    fake.on("mariadb", stdout=b"2 views, 1 triggers\n")
    with pytest.raises(Failure) as caught:
        engine.check_movable(NEW)
    assert caught.value.code == Exit.RESTORE_FAILED
    assert caught.value.message.startswith("the backup holds 2 views, 1 triggers, which this restore cannot move")


def test_properties_are_empty_and_nothing_is_applied():
    engine, fake = make()
    assert engine.properties(LIVE) == Properties()
    engine.apply_properties(Properties(["ALTER DATABASE x"]), NEW)
    engine.reopen(LIVE)
    engine.allow_connections(ASIDE)
    assert fake.calls == []


def test_analyze_every_table_in_batches():
    engine, fake = make()
    # Before the swap, on the work database: InnoDB samples a few pages per
    # index, quick beside the load, and the site never meets a table without
    # statistics.
    assert not engine.analyzes_live
    tables = [f"t{i:03}" for i in range(mysql.ANALYZE_BATCH + 5)] + ["tab`le"]
    first(fake, sql_has("ANALYZE TABLE"), stdout=f"{NEW}.t000\tanalyze\tstatus\tOK\n".encode())
    Server(fake, {NEW: tables})
    engine.analyze(NEW)
    call = fake.calls[-1]
    lines = call.input.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"/* {MARK} */ ANALYZE TABLE `{NEW}`.`t000`, ")
    assert lines[0].count(f"`{NEW}`.") == mysql.ANALYZE_BATCH
    assert lines[1].endswith(f"`{NEW}`.`tab``le`;")
    assert call.timeout == mysql.ANALYZE_TIMEOUT
    assert f"analyzed {len(tables)} tables of {NEW}" in engine.log.text("INFO")


def test_analyze_reports_table_errors():
    engine, fake = make()
    first(fake, sql_has("ANALYZE TABLE"), stdout=f"{NEW}.a\tanalyze\tError\tTable is marked as crashed\n".encode())
    Server(fake, {NEW: ["a"]})
    engine.analyze(NEW)
    assert f"ANALYZE TABLE {NEW}.a: Table is marked as crashed" in engine.log.text("WARN")


def test_analyze_failure_is_a_warning():
    engine, fake = make()
    first(fake, sql_has("ANALYZE TABLE"), fail=1, stderr="ERROR 1142: ANALYZE command denied")
    Server(fake, {NEW: ["a"]})
    engine.analyze(NEW)
    assert f"could not refresh the statistics of {NEW}: ERROR 1142: ANALYZE command denied" in engine.log.text()
    assert "KILL QUERY" not in fake.sql()


def test_analyze_timeout_stops_the_statement():
    engine, fake = make()
    first(fake, sql_has("ANALYZE TABLE"), timeout=True)
    Server(fake, {NEW: ["a"]}, sessions=[91])
    engine.analyze(NEW)
    assert f"/* {MARK} */ KILL QUERY 91;" in fake.sql()
    assert "did not finish within 900 s" in engine.log.text("WARN")


# --- the swap ---------------------------------------------------------------------------------


def swap_session(fake):
    (call,) = [call for call in fake.calls if "RENAME TABLE" in call.input]
    return call


def test_swap_moves_every_table_in_one_statement():
    engine, fake = make()
    server = swap_server(fake, charsets={LIVE: ("utf8mb3", "utf8mb3_general_ci")}, sessions=[55])
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert server.databases == {LIVE: ["auth_user", "catalog_item"], ASIDE: ["auth_user", "catalog_item", "old_only"]}
    sql = fake.sql()
    # The set-aside database takes the live one's character set, the live one the backup's.
    assert f"CREATE DATABASE `{ASIDE}` CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci;" in sql
    assert f"ALTER DATABASE `{LIVE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;" in sql
    session = swap_session(fake).input
    rename = [line for line in session.splitlines() if "RENAME TABLE" in line]
    assert rename == [
        f"/* {MARK} */ RENAME TABLE `shop`.`auth_user` TO `{ASIDE}`.`auth_user`, "
        f"`shop`.`catalog_item` TO `{ASIDE}`.`catalog_item`, `shop`.`old_only` TO `{ASIDE}`.`old_only`, "
        f"`{NEW}`.`auth_user` TO `shop`.`auth_user`, `{NEW}`.`catalog_item` TO `shop`.`catalog_item`;"
    ]
    assert "KILL CONNECTION 55;" in sql
    assert f"DROP DATABASE IF EXISTS `{NEW}`;" in sql
    assert f"`{ASIDE}`;" not in sql.split("RENAME TABLE")[1].split("DROP DATABASE", 1)[1]
    info = engine.log.text("INFO")
    assert 'moving the tables: writes to "shop" acknowledged before ' in info
    assert f'swapped: database "shop" holds the restored tables; the old ones are in {ASIDE}' in info
    assert engine.log.text("WARN") == ""
    no_secrets(fake)


def test_swap_carries_the_counters_in_the_renaming_session():
    engine, fake = make()
    swap_server(fake)
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    lines = swap_session(fake).input.splitlines()
    rename_at = next(i for i, line in enumerate(lines) if "RENAME TABLE" in line)
    carry = [i for i, line in enumerate(lines) if f"AUTO_INCREMENT + {ID_MARGIN}" in line]
    assert len(carry) == 2  # the tables both databases hold
    assert all(i < rename_at for i in carry)
    assert "information_schema_stats_expiry = 0" in lines[0]
    assert f"'/* {MARK} */ ALTER TABLE `{NEW}`.`auth_user`'" in lines[carry[0]]
    assert "TABLE_SCHEMA = 'shop'" in lines[carry[0]]
    assert "EXECUTE djangoops_stmt" in lines[carry[0] + 2]
    # The id check follows the rename in the same session, and flags only
    # counters the margin did not cover.
    assert "f.AUTO_INCREMENT > t.AUTO_INCREMENT" in lines[rename_at + 1]
    assert f"- {ID_MARGIN} <" not in "\n".join(lines)


def test_swap_warns_about_reused_ids():
    engine, fake = make()
    server = swap_server(fake)  # its rule last: first() puts the one below before it
    first(fake, sql_has("RENAME TABLE"), stdout=b"auth_user\ncatalog_item\n", effect=server.apply)
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert (
        f"more rows were written in the last instant before the swap than the id margin ({ID_MARGIN}) allows:"
        " new rows of auth_user,catalog_item may take ids that rows in the safety copy have"
    ) in engine.log.text("WARN")


def test_swap_of_hostile_names():
    engine, fake = make()
    server = Server(fake, {LIVE: list(HOSTILE), NEW: list(HOSTILE)})
    engine.swap(LIVE, NEW, ASIDE, manifest(*HOSTILE))
    assert sorted(server.databases[LIVE]) == sorted(HOSTILE)
    assert sorted(server.databases[ASIDE]) == sorted(HOSTILE)
    assert NEW not in server.databases


def test_swap_with_an_empty_backup_moves_the_live_tables_out():
    engine, fake = make()
    server = swap_server(fake, new=())
    engine.swap(LIVE, NEW, ASIDE, manifest())
    assert server.databases == {LIVE: [], ASIDE: ["auth_user", "catalog_item", "old_only"]}


def test_swap_with_nothing_anywhere_sends_no_rename():
    engine, fake = make()
    swap_server(fake, live=(), new=())
    engine.swap(LIVE, NEW, ASIDE, manifest())
    assert "RENAME TABLE" not in fake.sql()


@pytest.mark.parametrize("listing", ["live and work", "charsets"])
def test_swap_listing_failure_raises_and_moves_nothing(listing):
    """Issue finding 1: the shell's listing failed ("Too many connections"),
    the rename moved every live table out and nothing in, and the work database
    was dropped."""
    engine, fake = make()
    fragment = "TABLE_TYPE = 'BASE TABLE'" if listing == "live and work" else "DEFAULT_COLLATION_NAME"
    first(fake, sql_has(fragment), fail=1, stderr="ERROR 1040 (HY000): Too many connections")
    server = swap_server(fake)
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.DB_UNAVAILABLE
    assert "failed: ERROR 1040 (HY000): Too many connections" in caught.value.message
    assert caught.value.message.startswith("the query ")
    assert caught.value.message.endswith('database "shop" is unchanged')
    sql = fake.sql()
    for statement in ("CREATE DATABASE", "RENAME TABLE", "DROP DATABASE"):
        assert statement not in sql
    assert server.databases[NEW] == ["auth_user", "catalog_item"]


def test_swap_refuses_an_empty_work_database():
    """Issue finding 1, second guard: the listing succeeds but says the work
    database holds nothing while the manifest lists tables."""
    engine, fake = make()
    first(fake, sql_has("TABLE_TYPE = 'BASE TABLE'"), stdout=b"0\t0\t\n0\t1\tauth_user\n1\t0\t\n")
    swap_server(fake)
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.REFUSED
    assert caught.value.message == (
        f"the swap was refused: the work database {NEW} holds no tables, but the backup's manifest lists 2;"
        ' nothing was moved; database "shop" is unchanged'
    )
    for statement in ("CREATE DATABASE", "RENAME TABLE", "DROP DATABASE"):
        assert statement not in fake.sql()


def test_swap_refuses_a_work_database_missing_tables():
    engine, fake = make()
    swap_server(fake, new=("auth_user",))
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.REFUSED
    assert f"the work database {NEW} lacks 1 of the tables the backup's manifest lists (catalog_item)" in (
        caught.value.message
    )
    assert "RENAME TABLE" not in fake.sql()


def test_swap_without_a_manifest_refuses_an_empty_work_database():
    engine, fake = make()
    swap_server(fake, new=())
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE)
    assert caught.value.code == Exit.REFUSED
    assert "RENAME TABLE" not in fake.sql()


def test_swap_accepts_table_names_for_the_manifest():
    engine, fake = make()
    swap_server(fake)
    engine.swap(LIVE, NEW, ASIDE, ["auth_user", "catalog_item"])
    assert "RENAME TABLE" in fake.sql()


def test_swap_refuses_when_the_live_database_is_gone():
    engine, fake = make()
    Server(fake, {NEW: ["a"]})
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("a"))
    assert caught.value.code == Exit.REFUSED
    assert 'database "shop" does not exist' in caught.value.message
    assert "CREATE DATABASE" not in fake.sql()


def test_swap_refused_when_the_aside_database_cannot_be_made():
    engine, fake = make()
    first(fake, sql_has("CREATE DATABASE"), fail=1, stderr="ERROR 1044 (42000): Access denied")
    swap_server(fake)
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.REFUSED
    assert (
        caught.value.message == 'the swap was refused: ERROR 1044 (42000): Access denied; database "shop" is unchanged'
    )
    assert "RENAME TABLE" not in fake.sql()
    assert "DROP DATABASE" not in fake.sql()  # the listing shows no such database


def test_swap_lock_timeout_is_refused_and_the_empty_aside_dropped():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), fail=1, stderr=LOCKED)
    first(fake, sql_has("CONCAT('id '"), stdout=b"id 8 (user other, Sleep for 40 s)\n")
    server = swap_server(fake)
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.REFUSED
    message = caught.value.message
    assert message.startswith(f"the swap was refused: {LOCKED}")
    assert 'a session held a lock on "shop" for over 30 s (sessions user "shopuser" can see: id 8' in message
    assert message.endswith('database "shop" is unchanged')
    assert ASIDE not in server.databases  # empty, and listed as such before the drop
    assert server.databases[NEW] == ["auth_user", "catalog_item"]
    after = fake.sql().split("RENAME TABLE", 1)[1]
    assert after.index("TABLE_TYPE = 'BASE TABLE'") < after.index(f"DROP DATABASE IF EXISTS `{ASIDE}`")
    assert "ALTER DATABASE" not in fake.sql()


def test_swap_ambiguous_failure_after_the_rename_goes_on():
    """Issue finding 2: the client failed after the server applied the
    rename; the shell dropped the set-aside database, the only copy of the
    data as it was. Here the server is asked, and the swap goes on."""
    engine, fake = make()
    server = swap_server(fake)  # its rule last: first() puts the one below before it
    first(fake, sql_has("RENAME TABLE"), fail=1, stderr=LOST, effect=server.apply)
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert server.databases[ASIDE] == ["auth_user", "catalog_item", "old_only"]
    assert f"DROP DATABASE IF EXISTS `{ASIDE}`" not in fake.sql()
    assert f"DROP DATABASE IF EXISTS `{NEW}`" in fake.sql()
    assert f"the client failed after the tables were moved ({LOST}); the swap went through" in engine.log.text("WARN")
    assert 'swapped: database "shop"' in engine.log.text("INFO")
    # The id check is asked again, in a session of its own.
    assert sum("f.AUTO_INCREMENT > t.AUTO_INCREMENT" in call.input for call in fake.calls) == 2


def test_swap_ambiguous_failure_before_the_rename_is_refused():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), signal=9)
    first(
        fake,
        sql_has("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND LOCATE"),
        stdout=b"66\n",
    )
    server = swap_server(fake)
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.REFUSED
    assert "mariadb was killed by signal 9" in caught.value.message
    assert f"/* {MARK} */ KILL QUERY 66;" in fake.sql()  # before the server is asked
    assert ASIDE not in server.databases


def test_swap_outcome_unknown_drops_nothing():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), timeout=True)
    swap_server(fake)
    # Every listing after the rename fails: the server cannot be asked.
    first(fake, listing(lambda number: number > 1), fail=1, stderr="ERROR 2003 (HY000): Can't connect to server")
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.DB_UNAVAILABLE
    assert caught.value.message.startswith("the swap's outcome is unknown: mariadb did not finish within 90 s")
    assert "nothing was dropped" in caught.value.message
    assert "DROP DATABASE" not in fake.sql()
    assert "ALTER DATABASE" not in fake.sql()


def test_swap_keeps_the_aside_database_when_it_cannot_be_listed():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), fail=1, stderr=LOST)
    swap_server(fake)
    # The listing before the drop fails.
    first(fake, listing(lambda number: number == 3), fail=1, stderr="ERROR 1040 (HY000): Too many connections")
    with pytest.raises(Failure) as caught:
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert caught.value.code == Exit.REFUSED
    assert f"database {ASIDE} was kept (the query listing the tables of" in caught.value.message
    assert "DROP DATABASE" not in fake.sql()


def test_swap_interrupted_drops_nothing():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), interrupt=15)
    server = swap_server(fake)
    with pytest.raises(Interrupted):
        engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert "DROP DATABASE" not in fake.sql()
    assert ASIDE in server.databases


def test_swap_tidying_failures_are_warnings():
    engine, fake = make()
    server = swap_server(fake)  # its rule last: first() puts the ones below before it
    first(fake, sql_has("RENAME TABLE"), fail=1, stderr=LOST, effect=server.apply)
    first(
        fake,
        lambda call: "f.AUTO_INCREMENT > t.AUTO_INCREMENT" in call.input and "RENAME" not in call.input,
        fail=1,
        stderr="ERROR 1040: Too many connections",
    )
    first(fake, sql_has("ALTER DATABASE"), fail=1, stderr="ERROR 1044: Access denied")
    first(fake, sql_has(f"DROP DATABASE IF EXISTS `{NEW}`"), fail=1, stderr="ERROR 1010: Error dropping database")
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    warnings = engine.log.text("WARN")
    assert "could not check whether ids will be handed out twice" in warnings
    assert 'could not set the character set of "shop": ERROR 1044: Access denied' in warnings
    assert f"could not drop the empty work database {NEW}: ERROR 1010: Error dropping database" in warnings
    assert 'swapped: database "shop"' in engine.log.text("INFO")


def test_swap_never_drops_a_work_database_that_still_holds_tables():
    engine, fake = make()
    swap_server(fake)
    # The listing after the rename says the work database still holds a table.
    first(fake, listing(lambda number: number == 2), stdout=b"0\t0\t\n0\t1\tstray\n")
    engine.swap(LIVE, NEW, ASIDE, manifest("auth_user", "catalog_item"))
    assert f"DROP DATABASE IF EXISTS `{NEW}`" not in fake.sql()
    assert f"could not drop the empty work database {NEW}: it holds 1 tables" in engine.log.text("WARN")


# --- swap_state -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("databases", "hint", "state"),
    [
        ({LIVE: ["a"], NEW: ["a"], ASIDE: []}, None, "before"),
        ({LIVE: ["a"], NEW: ["a"]}, None, "before"),
        ({LIVE: ["a"], NEW: [], ASIDE: ["a", "b"]}, None, "after"),
        ({LIVE: ["a"], ASIDE: ["a"]}, None, "after"),
        ({LIVE: ["a"], NEW: ["a"], ASIDE: ["a"]}, None, "unknown"),
        ({LIVE: [], NEW: [], ASIDE: []}, None, "before"),
        ({NEW: []}, None, "before"),
        # The live database was empty: only the manifest tells the two apart.
        ({LIVE: ["a"], NEW: [], ASIDE: []}, manifest("a"), "after"),
        ({LIVE: ["a"], NEW: [], ASIDE: []}, None, "unknown"),
    ],
)
def test_swap_state(databases, hint, state):
    engine, fake = make()
    Server(fake, databases)
    assert engine.swap_state(LIVE, NEW, ASIDE, hint) == state
    assert len(fake.calls) == 1  # one listing, nothing else


def test_swap_state_unknown_when_the_server_cannot_be_asked():
    engine, fake = make()
    fake.on("mariadb", fail=1, stderr="ERROR 2003: Can't connect")
    assert engine.swap_state(LIVE, NEW, ASIDE) == "unknown"


# --- put_in_place -----------------------------------------------------------------------------


def test_put_in_place():
    engine, fake = make()
    server = Server(fake, {NEW: ["auth_user", "tab`le"]}, charsets={NEW: ("utf8mb4", "utf8mb4_bin")})
    engine.put_in_place(NEW, LIVE, manifest("auth_user", "tab`le"))
    assert server.databases == {LIVE: ["auth_user", "tab`le"]}
    sql = fake.sql()
    assert f"CREATE DATABASE `{LIVE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;" in sql
    assert f"RENAME TABLE `{NEW}`.`auth_user` TO `shop`.`auth_user`, `{NEW}`.`tab``le` TO `shop`.`tab``le`;" in sql
    assert sql.rindex("TABLE_TYPE = 'BASE TABLE'") < sql.index(f"DROP DATABASE IF EXISTS `{NEW}`")


def test_put_in_place_listing_failure_keeps_the_work_database():
    """Issue finding 1 for a new server: the shell renamed nothing and then
    dropped the work database, the restored data with it."""
    failure, fake, server = put_in_place_failure(
        sql_has("TABLE_TYPE = 'BASE TABLE'"),
        fail=1,
        stderr="ERROR 1040 (HY000): Too many connections",
        tables=["auth_user"],
    )
    assert failure.code == Exit.DB_UNAVAILABLE
    assert failure.message.startswith('could not name the restored database "shop": the query listing')
    assert failure.message.endswith(f"it is loaded as {NEW}")
    for statement in ("CREATE DATABASE", "RENAME TABLE", "DROP DATABASE"):
        assert statement not in fake.sql()
    assert server.databases == {NEW: ["auth_user"]}


def test_put_in_place_refuses_an_empty_listing():
    failure, fake, server = put_in_place_failure(
        sql_has("TABLE_TYPE = 'BASE TABLE'"), stdout=b"0\t0\t\n", tables=["auth_user"]
    )
    assert failure.code == Exit.RESTORE_FAILED
    assert "holds no tables, but the backup's manifest lists 1" in failure.message
    assert "DROP DATABASE" not in fake.sql()
    assert server.databases == {NEW: ["auth_user"]}


def test_put_in_place_of_a_missing_work_database():
    engine, fake = make()
    Server(fake, {})
    with pytest.raises(Failure) as caught:
        engine.put_in_place(NEW, LIVE, manifest())
    assert caught.value.code == Exit.RESTORE_FAILED
    assert f"the work database {NEW} does not exist" in caught.value.message
    assert "CREATE DATABASE" not in fake.sql()


def test_put_in_place_of_an_empty_backup():
    engine, fake = make()
    server = Server(fake, {NEW: []})
    engine.put_in_place(NEW, LIVE, manifest())
    assert server.databases == {LIVE: []}
    assert "RENAME TABLE" not in fake.sql()


def test_put_in_place_create_failure():
    failure, fake, _engine = put_in_place_failure(
        sql_has("CREATE DATABASE"), fail=1, stderr="ERROR 1007 (HY000): Can't create database 'shop'"
    )
    assert failure.code == Exit.RESTORE_FAILED
    assert "RENAME TABLE" not in fake.sql()
    assert "DROP DATABASE" not in fake.sql()


def test_put_in_place_rename_failure_keeps_the_work_database():
    failure, fake, server = put_in_place_failure(
        sql_has("RENAME TABLE"), fail=1, stderr="ERROR 1050 (42S01): Table 'a' already exists"
    )
    assert failure.code == Exit.RESTORE_FAILED
    assert failure.message == (
        f"could not name the restored database \"shop\": ERROR 1050 (42S01): Table 'a' already exists;"
        f" it is loaded as {NEW}"
    )
    assert "DROP DATABASE" not in fake.sql()
    assert server.databases[NEW] == ["a"]


def test_put_in_place_rename_applied_despite_the_client():
    engine, fake = make()
    server = Server(fake, {NEW: ["a"]})  # its rule last: first() puts the one below before it
    first(fake, sql_has("RENAME TABLE"), fail=1, stderr=LOST, effect=server.apply)
    engine.put_in_place(NEW, LIVE, manifest("a"))
    assert server.databases == {LIVE: ["a"]}
    assert "they are in place" in engine.log.text("WARN")


def test_put_in_place_rename_outcome_unknown():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), timeout=True)
    Server(fake, {NEW: ["a"]})
    first(fake, listing(lambda number: number > 1), fail=1, stderr="ERROR 2003: Can't connect")
    with pytest.raises(Failure) as caught:
        engine.put_in_place(NEW, LIVE, manifest("a"))
    assert caught.value.code == Exit.DB_UNAVAILABLE
    assert "nothing was dropped" in caught.value.message
    assert "DROP DATABASE" not in fake.sql()


def test_put_in_place_keeps_the_work_database_when_the_last_listing_fails():
    engine, fake = make()
    Server(fake, {NEW: ["a"]})
    first(fake, listing(lambda number: number > 1), fail=1, stderr="ERROR 1040: Too many connections")
    engine.put_in_place(NEW, LIVE, manifest("a"))
    assert "DROP DATABASE" not in fake.sql()
    assert f"could not drop the empty work database {NEW}: the query listing" in engine.log.text("WARN")


def test_put_in_place_interrupted():
    engine, fake = make()
    first(fake, sql_has("RENAME TABLE"), interrupt=2)
    Server(fake, {NEW: ["a"]})
    with pytest.raises(Interrupted):
        engine.put_in_place(NEW, LIVE, manifest("a"))
    assert "DROP DATABASE" not in fake.sql()


# --- room for the load ------------------------------------------------------------------------


def test_room_for_load_on_this_machine(tmp_path):
    engine, fake = make(host="localhost")
    fake.on("mariadb", stdout=f"123456\t{tmp_path}/\n".encode())
    needed, free, where = engine.room_for_load(LIVE)
    assert needed == 123456
    assert free is not None and free > 0
    assert where == f"{tmp_path}/"
    assert "TABLE_SCHEMA = 'shop'" in fake.sql()


def test_room_for_load_elsewhere_or_unknown(tmp_path):
    engine, fake = make()
    fake.on("mariadb", stdout=f"99\t{tmp_path}\n".encode())
    assert engine.room_for_load(LIVE) == (99, None, str(tmp_path))
    assert engine.room_for_load(None) == (0, None, "")
    local, fake = make(host="")
    fake.on("mariadb", stdout=f"99\t{tmp_path}/missing\n".encode())
    assert local.room_for_load(LIVE) == (99, None, f"{tmp_path}/missing")


def test_command_failed_is_never_leaked():
    """Every client failure becomes a Failure (or a warning): callers catch one
    exception type."""
    engine, fake = make()
    fake.on("mariadb", fail=1, stderr="ERROR 1040: Too many connections")
    for call in (
        lambda: engine.database_exists(LIVE),
        lambda: engine.list_databases("x"),
        lambda: engine.count_rows(NEW),
        lambda: engine.check_movable(NEW),
        lambda: engine.manifest_fields(LIVE),
        lambda: engine.swap(LIVE, NEW, ASIDE, manifest("a")),
        lambda: engine.put_in_place(NEW, LIVE, manifest("a")),
    ):
        with pytest.raises(Failure):
            try:
                call()
            except CommandFailed:  # pragma: no cover - what must not happen
                pytest.fail("CommandFailed escaped")


@pytest.mark.parametrize(
    ("live_host", "where"),
    [
        ("", ["--protocol=SOCKET", "--socket=/var/lib/djangoops-pitr/shop/run/mysqld.sock"]),
        ("localhost", ["--protocol=SOCKET", "--socket=/var/lib/djangoops-pitr/shop/run/mysqld.sock"]),
        ("127.0.0.1", ["--protocol=TCP", "--host=127.0.0.1", "--port=5499"]),
    ],
)
def test_a_scratch_server_is_reached_the_way_the_live_one_is(live_host, where):
    """restore_db.sh --to-time dumps from the scratch server as the site's own account, which
    matches there as on the live server: by the socket when the site uses it, else by TCP on
    the loopback. The options follow the credentials file, so they win over its host and port."""
    engine, fake = make(host=live_host)
    scratch = engine.elsewhere("/var/lib/djangoops-pitr/shop/run/mysqld.sock", "5499")
    scratch.check_connection()
    dump = scratch.dump_stage(LIVE).argv
    for argv in (fake.calls[0].argv, dump):
        index = argv.index("--defaults-extra-file=/run/djangoops/client")
        assert argv[index + 1 : index + 1 + len(where)] == where
    assert engine.dump_stage(LIVE).argv[2] != where[0]  # the live engine is unchanged
