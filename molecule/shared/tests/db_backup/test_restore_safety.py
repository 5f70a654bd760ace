"""A restore under the conditions it meets at 3 a.m.: an application that reconnects and writes,
other users' sessions and transactions, autovacuum, a database the user does not own, an operator
who interrupts it. Each test takes the backup it restores, so it can run alone."""

import re
import time

import pytest
from backup_helpers import BACKUPS, DB_NAME, DB_USER, last_log_lines
from shop_project import HOME, quote

# The site's own code writing through Django: a new connection after every error, one
# acknowledged row per line ("id<TAB>name") once the INSERT has returned (autocommit).
WRITER = """
import os, time
from django.db import connection
from django.utils import timezone
from catalog.models import Item
deadline = time.time() + 60
n = 0
with open("/tmp/writer.acked", "a") as acked:
    while time.time() < deadline and not os.path.exists("/tmp/writer.stop"):
        n += 1
        try:
            item = Item.objects.create(name=f"writer-{n}", body="", created=timezone.now())
        except Exception:
            connection.close()
            time.sleep(0.05)
            continue
        acked.write(f"{item.id}\\t{item.name}\\n")
        acked.flush()
        time.sleep(0.02)
"""


def fresh_backup(run):
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr


def work_databases(engine):
    """The restore's work database and the databases it sets aside, as far as they are left."""
    if engine.service == "postgresql":
        query = "SELECT datname FROM pg_database WHERE datname LIKE 'djangoops\\_%' AND datname NOT LIKE '%verify%'"
        return engine.sql(query, database="postgres").split()
    query = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'djangoops\\_%'"
    return [name for name in engine.sql(query, database=None).split() if "verify" not in name]


def writer_rows(engine):
    rows = engine.sql("SELECT CONCAT(id, ':', name) FROM catalog_item WHERE name LIKE 'writer-%'")
    return {int(i): name for i, name in (line.split(":") for line in rows.splitlines() if line)}


def safety_of(result):
    match = re.search(r"is in (shop_\S+_safety\.\S+) \(restore_db", result.stderr)
    assert match, result.stderr
    return match.group(1)


class Writer:
    def __init__(self, host):
        self.host = host

    def start(self):
        self.host.run_expect([0], "rm -f /tmp/writer.* && install -o shop -m 0644 /dev/null /tmp/writer.acked")
        self.host.run_expect([0], f"printf '%s' {quote(WRITER)} > /tmp/writer.py")
        self.host.run_expect(
            [0],
            # Only the writer in the background, its output away from the session (a
            # backgrounded `cd && ...` list would hold the ssh session open till it ends).
            f"cd {HOME} || exit; nohup runuser -u shop -- env/bin/python src/shop/manage.py shell < /tmp/writer.py"
            " > /tmp/writer.log 2>&1 &",
        )
        for _i in range(50):
            if len(self.acknowledged()) >= 20:
                return
            time.sleep(0.2)
        pytest.fail("the writer did not start writing: " + self.host.run("cat /tmp/writer.log").stdout)

    def acknowledged(self):
        lines = self.host.file("/tmp/writer.acked").content_string.splitlines()
        return {int(i): name for i, name in (line.split("\t") for line in lines)}

    def stop(self):
        """Stops it; returns {id: name} of every row it was told was written."""
        self.host.run("touch /tmp/writer.stop")
        # '[m]anage': the pattern must not match the shell that runs pgrep, whose own
        # command line holds it (that made this wait its full 10 s every time).
        for _i in range(50):
            if self.host.run("pgrep -f '[m]anage.py shell'").rc != 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the writer did not stop: " + self.host.run("cat /tmp/writer.log").stdout)
        return self.acknowledged()


@pytest.fixture
def writer(host):
    """The site's code writing through Django, reconnecting after every error."""
    writer = Writer(host)
    yield writer
    writer.stop()


def test_restore_with_a_reconnecting_writer_loses_no_acknowledged_write(host, engine, run, writer):
    engine.sql("DELETE FROM catalog_item WHERE name LIKE 'writer-%'")
    fresh_backup(run)
    original = engine.sql(engine.checksum_sql)
    indexes = engine.indexes("catalog_item")
    writer.start()
    result = run("restore_db.sh", "--yes")
    time.sleep(2)  # the writer goes on writing into the restored database
    acknowledged = writer.stop()
    assert result.rc == 0, result.stderr
    assert "takes no connections from" in result.stderr or "moving the tables" in result.stderr
    # The restored table is whole: its primary key and indexes, and the backup's rows.
    assert engine.indexes("catalog_item") == indexes
    after = writer_rows(engine)
    engine.sql("DELETE FROM catalog_item WHERE name LIKE 'writer-%'")
    assert engine.sql(engine.checksum_sql) == original
    # Every acknowledged row is either in the restored database (written after the swap)
    # or in the safety backup (written before it); no id was handed out twice.
    safety = safety_of(result)
    assert run("restore_db.sh", safety, "--yes").rc == 0
    before_swap = writer_rows(engine)
    assert after and before_swap, (after, before_swap)
    lost = {i: n for i, n in acknowledged.items() if after.get(i) != n and before_swap.get(i) != n}
    assert not lost, f"{len(lost)} acknowledged rows lost: {sorted(lost.items())[:5]}"
    assert not set(after) & set(before_swap), "ids handed out again after the restore"
    assert not work_databases(engine), "the set-aside database stays only when its safety backup failed"
    assert run("restore_db.sh", "--yes").rc == 0


@pytest.fixture
def other_users_session(host, engine):
    host.run_expect([0], f"nohup {engine.other_user_session_command(120)} >/dev/null 2>&1 &")
    time.sleep(1)
    yield
    engine.release_locks()
    host.run("pkill -f 'pg_sleep(120)|SLEEP(120)'")


def test_restore_refuses_while_another_users_session_blocks_it(host, engine, run, other_users_session):
    fresh_backup(run)
    engine.sql(engine.damage_sql)
    damaged = engine.sql(engine.checksum_sql)
    started = time.monotonic()
    result = run("restore_db.sh", "--yes", "--lock-timeout", "3")
    took = time.monotonic() - started
    assert result.rc == 13, result.stderr
    log = last_log_lines(host, "restore_db", 5)
    assert "nothing was changed" in log
    if engine.service == "postgresql":
        assert 'user "postgres"' in log, log  # the blocker, named
    else:
        assert "SHOW PROCESSLIST" in log, log  # what the site user cannot see, and how to see it
    assert took < 30, f"the refusal took {took:.0f} s"
    assert engine.sql(engine.checksum_sql) == damaged
    assert not work_databases(engine)
    engine.release_locks()
    assert run("restore_db.sh", "--yes").rc == 0


def test_an_interrupted_restore_leaves_the_live_database(host, engine, run, other_users_session):
    if engine.service != "mariadb":
        pytest.skip("PostgreSQL refuses at once when another user's session is open (test above)")
    fresh_backup(run)
    engine.sql(engine.damage_sql)
    damaged = engine.sql(engine.checksum_sql)
    host.run_expect(
        [0],
        "rm -f /root/restore.rc; nohup sh -c "
        f"'{HOME}/commands/restore_db.sh --yes --lock-timeout 20 -q </dev/null; echo $? > /root/restore.rc'"
        " >/dev/null 2>&1 &",
    )
    # Interrupted while it waits for the other session's lock, not before it gets there
    # (a fixed pause was too short on a loaded machine).
    waiting = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for%lock%'"
    for _i in range(150):
        if engine.sql(waiting, database=None) not in ("", "0"):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the restore never waited for the other session's lock")
    host.run_expect([0], "pkill -TERM -u shop -f restore_db.sh")
    for _i in range(150):
        rc = host.run("cat /root/restore.rc").stdout.strip()
        if rc:
            break
        time.sleep(0.2)
    assert rc == "130", rc
    # The blocker goes away: nothing queued by the restore may run now.
    engine.release_locks()
    host.run("pkill -f 'SLEEP(120)'")
    time.sleep(3)
    assert engine.database_exists(DB_NAME)
    assert engine.sql(engine.checksum_sql) == damaged
    assert not work_databases(engine)
    log = last_log_lines(host, "restore_db", 5)
    assert f'database "{DB_NAME}" is unchanged' in log, log
    assert "exit code 130" in log
    assert run("restore_db.sh", "--yes").rc == 0


@pytest.fixture
def autovacuum_worker(host, engine):
    """A slow autovacuum worker busy on a table of the site's database."""
    if engine.service != "postgresql":
        pytest.skip("autovacuum is PostgreSQL's")
    engine.sql("ALTER SYSTEM SET autovacuum_naptime = 1", database="postgres")
    engine.sql("SELECT pg_reload_conf()", database="postgres")
    engine.sql(
        "CREATE TABLE autovacuum_bait (id int) WITH (autovacuum_vacuum_cost_delay = 100,"
        " autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0);"
        " INSERT INTO autovacuum_bait SELECT generate_series(1, 300000); DELETE FROM autovacuum_bait;"
        f' ALTER TABLE autovacuum_bait OWNER TO "{DB_USER.replace(chr(34), chr(34) * 2)}"'
    )
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        f" AND datname = '{DB_NAME.replace(chr(39), chr(39) * 2)}'"
    )
    for _i in range(150):
        if engine.sql(query, database="postgres") != "0":
            break
        time.sleep(0.2)
    else:
        pytest.fail("no autovacuum worker started on the database")
    yield
    engine.sql("ALTER SYSTEM RESET autovacuum_naptime", database="postgres")
    engine.sql("SELECT pg_reload_conf()", database="postgres")
    engine.sql("DROP TABLE IF EXISTS autovacuum_bait", check=False)


def test_restore_while_autovacuum_works_on_the_database(host, engine, run, autovacuum_worker):
    fresh_backup(run)  # holds autovacuum_bait, empty
    engine.sql(engine.damage_sql)
    result = run("restore_db.sh", "--yes")
    assert result.rc == 0, result.stderr
    assert int(engine.sql("SELECT count(*) FROM catalog_item")) == 500


def test_restore_refuses_a_user_who_does_not_own_the_database(host, engine, run):
    if engine.service != "postgresql":
        pytest.skip("MariaDB databases have no owner; the grants are checked by the swap itself")
    fresh_backup(run)
    engine.sql(engine.damage_sql)
    damaged = engine.sql(engine.checksum_sql)
    files = host.run(f"ls -A {BACKUPS}").stdout
    ident = '"' + DB_NAME.replace('"', '""') + '"'
    owner = engine.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
    engine.sql(f"ALTER DATABASE {ident} OWNER TO postgres", database="postgres")
    try:
        result = run("restore_db.sh", "--yes")
    finally:
        engine.sql(f'ALTER DATABASE {ident} OWNER TO "{owner.replace(chr(34), chr(34) * 2)}"', database="postgres")
    assert result.rc == 3, result.stderr
    assert "does not own database" in result.stderr and 'its owner is "postgres"' in result.stderr
    assert "nothing was changed" in result.stderr
    assert engine.sql(engine.checksum_sql) == damaged
    assert host.run(f"ls -A {BACKUPS}").stdout == files, "refused before anything was written"
    assert not work_databases(engine)
    assert run("restore_db.sh", "--yes").rc == 0
