"""The last-minute drill on MariaDB, on each server after its other tests (file order, one
worker a server): a writer commits a numbered row every 100 ms; the server is destroyed while
it runs, volumes and all; a fresh server with the same name gets the site's database server
from the test bed's deployment, and playbooks/recover.yml -e pitr=true rebuilds it from the
bucket (the S3 stand-in): the newest base and every binary log archived after it. Every row
committed more than 60 s before the loss must be back (the RPO, measured and printed),
without a gap, and the rebuilt server archives and takes a base again."""

import json
import time

from db_backup import pitr_drill
from db_backup.backup_helpers import DB_NAME, MariaDB
from shop_project import ENGINE_BIN, quote


def start_writer(host):
    """A writer committing a numbered row (its time beside it) every 100 ms into pitr_drill of
    the site's database, for up to ten minutes, in a session of its own."""
    MariaDB(host).sql(
        "DROP TABLE IF EXISTS pitr_drill; CREATE TABLE pitr_drill (n int PRIMARY KEY, at DATETIME(6) NOT NULL)"
    )
    loop = (
        'i=1; while [ $i -le 6000 ]; do echo "INSERT INTO pitr_drill VALUES ($i, NOW(6));"; i=$((i+1)); sleep 0.1; done'
    )
    client = f"mariadb --default-character-set=utf8mb4 --database={quote(DB_NAME)}"
    host.run(f"setsid -f sh -c {quote(f'({loop}) | {client}')} >/dev/null 2>&1")


def test_a_server_that_archives_already_is_not_rebuilt(host, tmp_path):
    """recover.yml -e pitr=true aimed at a live server (a wrong -e target) or with another
    database's name: refused before anything is stopped or restored."""
    uptime_sql = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'"
    before = int(MariaDB(host).sql(uptime_sql, database=None))
    pitr_drill.assert_refused(host, tmp_path, "this server already archives its binary logs")
    assert int(MariaDB(host).sql(uptime_sql, database=None)) >= before  # not restarted


def test_a_destroyed_server_comes_back_to_its_last_minute(host, tmp_path):
    name = host.backend.get_hostname()
    start_writer(host)
    time.sleep(20)  # a few passes' worth of writes
    new, recover, took, lost_at, written = pitr_drill.lose_and_recover(
        host,
        tmp_path,
        lambda: int(MariaDB(host).sql("SELECT count(*) FROM pitr_drill")),
        "/var/lib/djangoops-mariadb-pitr",
    )
    rows, newest, last = MariaDB(new).sql("SELECT count(*), max(n), UNIX_TIMESTAMP(max(at)) FROM pitr_drill").split()
    rpo = lost_at - float(last)
    pitr_drill.record(
        "pitr-mariadb-drill.txt",
        f"{name}: {rows} rows back of the {written}+ written before the loss; the newest written {rpo:.1f} s "
        f"before it (RPO); recover.yml took {took:.0f} s",
    )
    print(f"{rows} rows back, RPO {rpo:.1f} s, recover.yml {took:.0f} s")
    assert int(rows) == int(newest), (rows, newest)
    assert rpo <= pitr_drill.RPO_SECONDS, rpo
    said = " ".join(recover.stdout.split())
    assert "rebuilt MariaDB from the bucket pitr-offsite: base" in said, said[-3000:]
    # It archives again and holds a base of its new timeline.
    check = new.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
    assert check.rc == 0, check.stderr
    bases = json.loads(new.run_expect([0], "cat /var/lib/djangoops-mariadb-pitr/spool/archive/bases.json").stdout)
    assert len(bases) == 1 and bases[0]["file"].startswith("mysql-bin.")
