"""The last-minute drill, on each server after its other tests (file order, one worker a
server): a writer commits a numbered row every 100 ms; the server is destroyed while it
runs, volumes and all; a fresh server with the same name gets the site's database server
from the test bed's deployment, and playbooks/recover.yml -e pitr=true rebuilds the whole
cluster from the off-site pgBackRest repository (the S3 stand-in). Every row committed more
than 60 s before the loss must be back (the RPO, measured and printed), without a gap, and
the rebuilt server archives and backs itself up again."""

import json
import time

from db_backup import pitr_drill
from db_backup.backup_helpers import DB_NAME, PostgreSQL
from shop_project import ENGINE_BIN, quote

SITE_USER = "shop"


def start_writer(host):
    """A writer committing a numbered row (its commit time beside it) every 100 ms into
    pitr_drill of the site's database, for up to ten minutes, in a session of its own."""
    db = PostgreSQL(host)
    db.sql("DROP TABLE IF EXISTS pitr_drill; CREATE TABLE pitr_drill (n int PRIMARY KEY, at timestamptz NOT NULL)")
    loop = (
        "i=1; while [ $i -le 6000 ]; do "
        'echo "INSERT INTO pitr_drill VALUES ($i, clock_timestamp());"; i=$((i+1)); sleep 0.1; done'
    )
    psql = f"runuser -u postgres -- env PGDATABASE={quote(DB_NAME)} psql -X -q"
    host.run(f"setsid -f sh -c {quote(f'({loop}) | {psql}')} >/dev/null 2>&1")


def test_a_server_that_archives_already_is_not_rebuilt(host, tmp_path):
    """recover.yml -e pitr=true aimed at a live server (a wrong -e target) or with another
    database's name: refused before anything is stopped or restored."""
    name = host.backend.get_hostname()
    started = PostgreSQL(host).sql("SELECT pg_postmaster_start_time()")
    pitr_drill.assert_refused(host, tmp_path, f"{name} already archives stanza main into /var/lib/pgbackrest")
    assert PostgreSQL(host).sql("SELECT pg_postmaster_start_time()") == started


def test_a_destroyed_server_comes_back_to_its_last_minute(host, tmp_path):
    name = host.backend.get_hostname()
    start_writer(host)
    # Long enough for a few archive_timeouts (5 s here) of writes.
    time.sleep(20)
    new, recover, took, lost_at, written = pitr_drill.lose_and_recover(
        host, tmp_path, lambda: int(PostgreSQL(host).sql("SELECT count(*) FROM pitr_drill")), "/var/lib/pgbackrest"
    )
    db = PostgreSQL(new)
    rows, newest, last = db.sql(
        "SELECT count(*) || ' ' || max(n) || ' ' || extract(epoch FROM max(at)) FROM pitr_drill"
    ).split()
    rpo = lost_at - float(last)
    # The figures, for the README (a passing test's output is not shown).
    pitr_drill.record(
        "pitr-drill.txt",
        f"{name}: {rows} rows back of the {written}+ written before the loss; the newest committed {rpo:.1f} s "
        f"before it (RPO); recover.yml took {took:.0f} s",
    )
    # Every row up to the newest one that came back, without a gap: all those committed
    # more than RPO_SECONDS before the loss among them.
    assert int(rows) == int(newest), (rows, newest)
    assert rpo <= pitr_drill.RPO_SECONDS, rpo
    said = " ".join(recover.stdout.split())
    assert "rebuilt the PostgreSQL cluster from the off-site pgBackRest repository (bucket pitr-offsite)" in said, said[
        -3000:
    ]
    # It archives again, into both repositories, and the local one has a backup to restore from.
    stanza = json.loads(
        new.run_expect([0], "cd / && runuser -u postgres -- pgbackrest --stanza=main --output=json info").stdout
    )[0]
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert {b["database"]["repo-key"] for b in stanza["backup"]} == {1, 2}
    check = new.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
    assert check.rc == 0, check.stderr
    assert SITE_USER in new.run_expect([0], "stat -c %U /home/shop/logs/pitr_check_db.log").stdout
