"""Point-in-time recovery on PostgreSQL with pgBackRest, as the db_backup role
configures it (db_backup_pitr): WAL archived within archive_timeout on an idle
site, an encrypted repository whose passphrase only root and postgres read, the
database server restarted only where the role was allowed to, and the cluster
restored to a moment between two writes, aside (another directory and port),
while the live one runs on."""

import json
import re
import subprocess
import time

import pytest
from db_backup.backup_helpers import BACKUPS, DB_NAME, DB_USER, PostgreSQL, last_log_lines, playbook
from schedule.schedule_helpers import UNIT_PREFIX, run_scheduled
from shop_project import COMMANDS, ENGINE_BIN, LOGS, quote

STANZA = "main"
REPOSITORY = "/var/lib/pgbackrest"
CONFIG = "/etc/pgbackrest/pgbackrest.conf"
SCRATCH = "/var/lib/postgresql/pitr-scratch"
SCRATCH_PORT = 5498
SITE_USER = '"' + DB_USER.replace('"', '""') + '"'
# Where restore_db.sh --to-time recovers the cluster (the role's default for project shop).
SCRATCH_DIR = "/var/lib/djangoops-pitr/shop"


def pgbackrest(host, *args, check=True):
    result = host.run("runuser -u postgres -- pgbackrest --stanza=%s " + " ".join(["%s"] * len(args)), STANZA, *args)
    if check:
        assert result.rc == 0, result.stdout + result.stderr
    return result


def info(host):
    (stanza,) = json.loads(pgbackrest(host, "--output=json", "info").stdout)
    return stanza


def local_backups(backups):
    """Those of BACKUPS (info's) in the local repository (pgBackRest's repo1)."""
    return [b for b in backups if b["database"]["repo-key"] == 1]


def newest_archived(host):
    """The newest WAL segment in the repository ("" when none)."""
    archives = info(host)["archive"]
    return max((a["max"] or "" for a in archives), default="")


def segment_of_now(host):
    """The segment a record written now lands in: the one pg_switch_wal() then closes. A record
    of its own, so that the segment is never the empty one just opened (a switch there switches
    nothing, and the segment waits for the next writes: seen once, after archive_timeout had
    closed the previous one a moment before)."""
    return PostgreSQL(host).sql("SELECT pg_walfile_name(pg_logical_emit_message(false, 'djangoops-test', 'switch'))")


@pytest.fixture(scope="module")
def probe(host):
    """A table of the site's database that the tests write numbered rows into."""
    # The site's own, as its tables are: its user dumps them (backup_db.sh, restore_db.sh --to-time).
    PostgreSQL(host).sql(
        "CREATE TABLE IF NOT EXISTS pitr_probe (n int PRIMARY KEY, at timestamptz NOT NULL);"
        f"ALTER TABLE pitr_probe OWNER TO {SITE_USER}"
    )
    return "pitr_probe"


def wait_archived(host, segment, seconds):
    """Seconds until the repository holds SEGMENT (fails after SECONDS)."""
    started = time.monotonic()
    while newest_archived(host) < segment:
        assert time.monotonic() - started < seconds, (
            f"{segment} not archived after {seconds} s; newest {newest_archived(host)!r}; "
            + PostgreSQL(host).sql("SELECT row_to_json(a)::text FROM pg_stat_archiver a")
            + host.run("tail -n 15 /var/log/pgbackrest/*archive-push*.log /var/log/postgresql/*.log").stdout
        )
        time.sleep(0.5)
    return time.monotonic() - started


def test_the_stanza_holds_a_full_backup_and_checks_clean(host):
    stanza = info(host)
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert [b["type"] for b in stanza["backup"]][:1] == ["full"]
    # check: a fresh segment archived end to end, through the server's own archive_command.
    pgbackrest(host, "check")


def write_and_wait_archived(host, timeout):
    """A probe row, and the seconds until its segment is archived (fails after TIMEOUT + 60 s).
    Nobody switches the segment: only archive_timeout sends it."""
    # The segment the write went into, read in the same statement as the write.
    segment = PostgreSQL(host).sql(
        "WITH w AS (INSERT INTO pitr_probe SELECT 1000 + count(*), now() FROM pitr_probe RETURNING n) "
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) FROM w",
    )
    took = wait_archived(host, segment, timeout + 60)
    print(f"archived {segment} {took:.1f} s after the write (archive_timeout {timeout} s)")
    return took


def test_an_idle_site_archives_its_last_write_within_archive_timeout(host, variables, probe):
    timeout = int(variables["db_backup_pitr_archive_timeout"])
    assert write_and_wait_archived(host, timeout) <= timeout + 10


def test_the_repository_is_encrypted(host, probe):
    marker = "pitr-marker-5d41402abc4b2a76"
    PostgreSQL(host).sql(
        f"CREATE TABLE IF NOT EXISTS pitr_text (t text); ALTER TABLE pitr_text OWNER TO {SITE_USER};"
        f"INSERT INTO pitr_text VALUES ('{marker}')"
    )
    segment = segment_of_now(host)
    PostgreSQL(host).sql("SELECT pg_switch_wal()")
    wait_archived(host, segment, 60)
    # The marker is there in clear in the server's own WAL: the search can find it...
    assert host.run(f"grep -rlF {marker} {PostgreSQL(host).sql('SHOW data_directory')}/pg_wal").stdout.strip()
    # ...and nowhere in the repository.
    found = host.run(f"grep -rlF {marker} {REPOSITORY}")
    assert found.rc == 1 and found.stdout == "", found.stdout
    assert info(host)["cipher"] == "aes-256-cbc"
    # Compression alone would hide the marker too: no archived segment is a zstd stream one could read.
    segments = host.run(f"find {REPOSITORY}/archive -name '0*.zst' -print").stdout.split()
    assert segments
    readable = [f for f in segments if host.run(f"zstd -q -t {f}").rc == 0]
    assert readable == []
    # Without the passphrase, pgBackRest itself cannot read the stanza.
    host.run(f"printf '[global]\\nrepo1-path={REPOSITORY}\\n' > /tmp/nopass.conf && chmod 0644 /tmp/nopass.conf")
    blind = host.run(
        f"runuser -u postgres -- pgbackrest --config=/tmp/nopass.conf --stanza={STANZA} --output=json info"
    )
    # (Its message quotes the undecipherable bytes: read as bytes.)
    text = blind.stdout_bytes.decode(errors="replace")
    assert blind.rc != 0 or json.loads(text, strict=False)[0]["status"]["code"] != 0, text


def test_only_root_and_postgres_read_the_passphrase(host, variables):
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "postgres", 0o640)
    assert host.file("/etc/pgbackrest").user == "root"
    passphrase = variables["db_backup_pitr_cipher_pass"]
    # Once a repository: the local one and the bucket.
    assert host.run(f"grep -cF {quote(passphrase)} {CONFIG}").stdout.strip() == "2"
    # In no other file of pgBackRest's or PostgreSQL's, nor its logs.
    others = host.run(
        f"grep -rlF {quote(passphrase)} /etc/postgresql /var/log/pgbackrest /var/log/postgresql {REPOSITORY} "
        "/var/spool/pgbackrest /etc/pgbackrest.conf 2>/dev/null"
    )
    assert others.stdout == ""
    for path in (REPOSITORY, "/var/spool/pgbackrest", "/var/log/pgbackrest"):
        assert host.file(path).user == "postgres" and not host.file(path).mode & 0o007


def test_postgresql_was_restarted_only_where_the_role_was_allowed_to(host, variables):
    assert PostgreSQL(host).sql("SHOW archive_mode") == "on"
    restarted = (
        PostgreSQL(host).sql("SELECT pg_postmaster_start_time()")
        != host.file("/root/postmaster_started").content_string.strip()
    )
    assert restarted == bool(variables["db_backup_pitr_restart_database"])


def test_right_after_a_restart_a_write_is_archived_within_archive_timeout(host, variables, probe):
    """PostgreSQL's checkpointer sleeps up to checkpoint_timeout after a start before it first
    applies archive_timeout (15 and 17 both): without the role's reload after each start, this
    write waited minutes for the archive. An operator's restart, as systemd does it (after the
    test that the role restarted PostgreSQL only where it may)."""
    timeout = int(variables["db_backup_pitr_archive_timeout"])
    restart_postgresql(host)
    assert write_and_wait_archived(host, timeout) <= timeout + 10


@pytest.fixture
def scratch(host):
    """The scratch cluster's directory, stopped and removed afterwards."""
    host.run(f"rm -rf {SCRATCH}")
    yield SCRATCH
    host.run(f"runuser -u postgres -- {pg_bin(host)}/pg_ctl -D {SCRATCH} -m immediate stop")
    host.run(f"rm -rf {SCRATCH}")


def pg_bin(host):
    major = int(PostgreSQL(host).sql("SHOW server_version_num")) // 10000
    return f"/usr/lib/postgresql/{major}/bin"


def test_the_cluster_restores_aside_to_a_moment_between_two_writes(host, probe, scratch):
    PostgreSQL(host).sql("DELETE FROM pitr_probe WHERE n < 100")
    for n in (1, 2, 3):
        PostgreSQL(host).sql(f"INSERT INTO pitr_probe VALUES ({n}, clock_timestamp())")
    time.sleep(1.1)
    target = PostgreSQL(host).sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
    )
    time.sleep(1.1)
    for n in (4, 5):
        PostgreSQL(host).sql(f"INSERT INTO pitr_probe VALUES ({n}, clock_timestamp())")
    segment = segment_of_now(host)
    PostgreSQL(host).sql("SELECT pg_switch_wal()")
    wait_archived(host, segment, 60)
    live_before = PostgreSQL(host).sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe WHERE n < 100")

    host.run(f"install -d -o postgres -g postgres -m 0700 {scratch}")
    # archive-mode=off: the scratch cluster must never push its new timeline into the stanza.
    pgbackrest(
        host,
        f"--pg1-path={scratch}",
        "--type=time",
        f"--target={target}",
        "--target-action=promote",
        "--archive-mode=off",
        "restore",
    )
    # The restored directory holds no postgresql.conf (Debian keeps it in /etc): its own, private.
    # Recovery refuses a max_connections (and the like) below the primary's: the defaults, as Debian's.
    conf = (
        f"port = {SCRATCH_PORT}\nlisten_addresses = ''\nunix_socket_directories = '{scratch}'\n"
        f"archive_mode = off\nhba_file = '{scratch}/pg_hba.conf'\nident_file = '{scratch}/pg_ident.conf'\n"
        "shared_buffers = 16MB\n"
    )
    host.run(f"printf '%s' {quote(conf)} > {scratch}/postgresql.conf")
    host.run(f"printf 'local all postgres peer\\n' > {scratch}/pg_hba.conf && : > {scratch}/pg_ident.conf")
    host.run(f"chown postgres:postgres {scratch}/postgresql.conf {scratch}/pg_hba.conf {scratch}/pg_ident.conf")
    started = host.run(f"runuser -u postgres -- {pg_bin(host)}/pg_ctl -D {scratch} -l {scratch}/log -w -t 120 start")
    assert started.rc == 0, started.stdout + started.stderr + host.run(f"tail -n 30 {scratch}/log").stdout
    deadline = time.monotonic() + 120
    while PostgreSQL(host).sql("SELECT pg_is_in_recovery()", socket_dir=SCRATCH, port=SCRATCH_PORT, check=False) != "f":
        assert time.monotonic() < deadline, host.run(f"tail -n 30 {scratch}/log").stdout
        time.sleep(0.5)
    restored = PostgreSQL(host).sql(
        "SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe WHERE n < 100",
        socket_dir=SCRATCH,
        port=SCRATCH_PORT,
    )
    assert restored == "1,2,3"
    # The live cluster ran on, unchanged, and the repository's archive took nothing from the scratch one.
    assert (
        PostgreSQL(host).sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe WHERE n < 100") == live_before
    )
    assert live_before == "1,2,3,4,5"
    pgbackrest(host, "check")


def rows(host, **where):
    return PostgreSQL(host).sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM pitr_probe WHERE n < 100", **where)


def safety_manifests(host):
    return host.run(f"ls {BACKUPS} | grep '_safety\\..*\\.manifest\\.json$' || true").stdout.split()


@pytest.fixture
def writer(host):
    """A writer committing a numbered row every 100 ms into table pitr_writes of the site's
    database (one psql session, each INSERT its own transaction), for up to a minute."""
    db = PostgreSQL(host)
    db.sql(
        "DROP TABLE IF EXISTS pitr_writes; CREATE TABLE pitr_writes (n int PRIMARY KEY, at timestamptz NOT NULL);"
        f"ALTER TABLE pitr_writes OWNER TO {SITE_USER}"
    )
    loop = (
        "i=1; while [ $i -le 600 ]; do "
        'echo "INSERT INTO pitr_writes VALUES ($i, clock_timestamp());"; i=$((i+1)); sleep 0.1; done'
    )
    psql = f"runuser -u postgres -- env PGDATABASE={quote(DB_NAME)} psql -X -q"
    # A session of its own: stop() ends the loop and its psql together.
    host.run(f"setsid -f sh -c {quote(f'echo $$ > /root/pitr-writer.pid; ({loop}) | {psql}')} >/dev/null 2>&1")

    def stop():
        host.run("kill -- -$(cat /root/pitr-writer.pid) 2>/dev/null; true")

    yield stop
    stop()


def test_restore_to_a_time_brings_back_every_row_committed_before_it_and_none_after(host, probe, writer, run):
    """The issue's drill: a writer commits a row every 100 ms; at T the table is dropped;
    restore_db.sh --to-time T - 1 s (as root) brings back every row committed before T - 1 s
    and none after. The cluster's other database, written after that moment too, is
    untouched; what the database held before the restore is a safety backup; nothing of the
    scratch cluster is left."""
    db = PostgreSQL(host)
    db.sql("DROP DATABASE IF EXISTS pitr_other", database="postgres")
    db.sql("CREATE DATABASE pitr_other", database="postgres")
    db.sql("CREATE TABLE other (n int); INSERT INTO other VALUES (1)", database="pitr_other")
    time.sleep(4)
    # T: the rows committed until then, read in the transaction that drops the table.
    out = db.sql(
        "BEGIN; SELECT 'row ' || n || ' ' || extract(epoch FROM at) FROM pitr_writes ORDER BY n;"
        "SELECT 'T ' || extract(epoch FROM clock_timestamp()); DROP TABLE pitr_writes; COMMIT"
    ).split("\n")
    writer()  # (its next INSERTs would fail anyway, and must not reach the restored table)
    (dropped_at,) = (float(line.split()[1]) for line in out if line.startswith("T "))
    at = {int(line.split()[1]): float(line.split()[2]) for line in out if line.startswith("row ")}
    db.sql("INSERT INTO other VALUES (2)", database="pitr_other")
    assert len(at) >= 25, at  # four seconds of rows at 100 ms
    target = dropped_at - 1
    moment = db.sql(f"SELECT to_char(to_timestamp({target}) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    segment = segment_of_now(host)
    db.sql("SELECT pg_switch_wal()")
    wait_archived(host, segment, 120)
    safety_before = safety_manifests(host)

    result = run("restore_db.sh", "--to-time", f"{moment}+00:00", "--yes")
    assert result.rc == 0, result.stdout + result.stderr
    restored = [int(n) for n in db.sql("SELECT n FROM pitr_writes ORDER BY n").split()]
    # Every row committed before the moment, and none after: the first rows, in order, up to
    # the last one written before it (a row's time is read just before its commit: one
    # within 20 ms of the moment may fall either side).
    assert restored == list(range(1, len(restored) + 1))
    assert all(at[n] <= target for n in restored), [(n, at[n] - target) for n in restored if at[n] > target]
    missing = [n for n in at if n not in restored and at[n] < target - 0.02]
    assert missing == []
    print(f"restored {len(restored)} of {len(at)} rows; the last {target - at[restored[-1]]:.3f} s before the moment")
    assert db.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM other", database="pitr_other") == "1,2"
    log = last_log_lines(host, "restore_db", 60)
    assert "the cluster is recovered aside first" in log and "pgBackRest restores the cluster" in log
    assert f"what it held at {moment}" in log
    # What the database held before the restore (no pitr_writes) is a safety backup.
    (safety,) = set(safety_manifests(host)) - set(safety_before)
    tables = json.loads(host.file(f"{BACKUPS}/{safety}").content_string)["tables"]
    assert not [k for k in tables if k.endswith("pitr_writes")] and [k for k in tables if k.endswith("pitr_probe")]
    # Nothing is left of the scratch cluster: no directory, no server, no hidden set in db_backups/.
    assert not host.file(SCRATCH_DIR).exists
    assert host.run(f"pgrep -f {SCRATCH_DIR}").rc == 1
    assert host.run(f"ls -A {BACKUPS} | grep -c pitr || true").stdout.strip() == "0"
    # The stanza is as it was: the scratch cluster archived nothing into it.
    pgbackrest(host, "check")


def test_restore_to_a_time_refuses_without_root_a_future_moment_and_a_bad_one(host, probe):
    before = rows(host)
    as_user = host.run(f"runuser -u shop -- {COMMANDS}/restore_db.sh --to-time '2026-01-01 00:00:00' --yes </dev/null")
    assert as_user.rc == 3 and "must be started as root" in as_user.stderr, as_user.stderr
    future = host.run(f"{ENGINE_BIN}/restore_db.sh --to-time '2999-01-01 00:00:00' --yes </dev/null")
    assert future.rc == 2 and "is in the future" in future.stderr, future.stderr
    bad = host.run(f"{ENGINE_BIN}/restore_db.sh --to-time yesterday --yes </dev/null")
    assert bad.rc == 2 and "takes a date and time" in bad.stderr, bad.stderr
    assert rows(host) == before
    assert not host.file(SCRATCH_DIR).exists


def converge(host, *extra):
    """The scenario's converge, on this server alone (EXTRA: more ansible-playbook arguments):
    its exit code and its output (stdout and stderr, where the errors go), whitespace collapsed."""
    result = playbook("--limit", host.backend.get_hostname(), *extra, "molecule/shared/playbooks/converge_backup.yml")
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def local_wal_since(host, stop):
    """Bytes of the WAL segments after STOP in the local repository's archive, as stored
    (read from its directory, not through pgBackRest)."""
    listed = host.run(f"find {REPOSITORY}/archive/{STANZA} -type f -printf '%f %s\\n'").stdout.split("\n")
    return sum(
        int(size)
        for name, size in (line.split() for line in listed if line)
        if len(name) > 25 and name[24] == "-" and name[:24] > stop
    )


def test_the_scheduled_pgbackrest_backup_takes_none_while_the_archive_since_the_newest_is_small(host, probe, variables):
    """An incremental backup in each repository (--type incr), a write archived after it; then
    pitr_backup_db.sh as the schedule runs it, as root (cron on Debian 12, a systemd timer's
    service on 13): --type auto takes no backup, since the WAL archived since the newest backup
    is far under half the cluster's size; it says so with the figure the local repository's
    directory gives, per repository, and its metrics say no backup was taken. The project
    user alone gets a refusal and no backup."""
    before = info(host)["backup"]
    taken = host.run(f"{ENGINE_BIN}/pitr_backup_db.sh --type incr --quiet </dev/null")
    assert taken.rc == 0, last_log_lines(host, "pitr_backup_db", 10)
    after = info(host)["backup"]
    assert len(after) == len(before) + 2
    newest = {}
    for repo in (1, 2):
        held = [b for b in after if b["database"]["repo-key"] == repo]
        # Incremental: what changed since the repository's newest backup, its prior.
        assert held[-1]["type"] == "incr" and held[-1]["prior"] == held[-2]["label"], held[-2:]
        newest[repo] = held[-1]
    pg = PostgreSQL(host)
    segment = write_and_switch(pg, 2000)
    wait_archived(host, segment, 60)
    code = run_scheduled(host, variables, "pitr_backup_db")
    assert code == 0, (
        last_log_lines(host, "pitr_backup_db", 10)
        + host.run(f"journalctl -u {UNIT_PREFIX}pitr_backup_db.service --no-pager -n 40").stdout
    )
    assert info(host)["backup"] == after
    log = last_log_lines(host, "pitr_backup_db", 8)
    wal = local_wal_since(host, newest[1]["archive"]["stop"])
    size = newest[1]["info"]["size"]
    # Written since the incremental backup: the probe row's segment, at least.
    assert 0 < wal < size / 2
    assert (
        "pgBackRest takes no backup of the cluster (stanza main): the archive holds " in log
        and f"of WAL since backup {newest[1]['label']}, {100 * wal / size:.1f} % of the cluster's " in log
    ), log
    assert "under db_backup_pitr_diff_after_wal_percent 50; the newest full backup is 0.0 days old" in log
    assert "(stanza main, off-site repository 2): the archive holds " in log
    assert f"of WAL since backup {newest[2]['label']}, " in log
    assert f"pgBackRest took no backup: the archive holds what changed since backup {newest[1]['label']} (incr)" in log
    metrics = host.file("/var/lib/djangoops-metrics/djangoops_shop_pitr_backup_db.prom").content_string
    assert re.search(r"^djangoops_pitr_backup_taken(\{[^}]*\})? 0$", metrics, re.M), metrics
    assert "pitr_backup_seconds" not in metrics, metrics
    assert host.file(f"{LOGS}/pitr_backup_db.log").user == "shop"
    as_user = host.run(f"runuser -u shop -- {ENGINE_BIN}/pitr_backup_db.sh </dev/null")
    assert as_user.rc == 3 and "must be started as root" in as_user.stderr, as_user.stderr
    assert info(host)["backup"] == after


def check_metrics(host):
    """The figures of pitr_check_db's metrics file, by name (djangoops_ left off)."""
    text = host.file("/var/lib/djangoops-metrics/djangoops_shop_pitr_check_db.prom").content_string
    return {
        line.split("{")[0].removeprefix("djangoops_"): float(line.split()[-1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_the_scheduled_archiving_check_measures_the_lag_and_the_restorable_moment(host, probe, variables):
    """pitr_check_db.sh as the schedule runs it, as root: archiving keeps up, so it exits 0
    and its metrics say that the cluster is restorable to within archive_timeout of now,
    as the project user logs it."""
    segment = PostgreSQL(host).sql(
        "WITH w AS (INSERT INTO pitr_probe SELECT 3000 + count(*), now() FROM pitr_probe RETURNING n) "
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) FROM w",
    )
    PostgreSQL(host).sql("SELECT pg_switch_wal()")
    wait_archived(host, segment, 120)
    code = run_scheduled(host, variables, "pitr_check_db")
    assert code == 0, last_log_lines(host, "pitr_check_db", 10)
    figures = check_metrics(host)
    assert figures["pitr_archive_failing"] == 0
    assert figures["job_exit_code"] == 0
    lag = figures["pitr_archive_lag_seconds"]
    assert 0 <= lag <= int(variables["db_backup_pitr_archive_timeout"]) + 30, figures
    assert figures["pitr_backups"] >= 1
    # Restorable to a moment at most archive_timeout (and the push) before now.
    assert time.time() - figures["pitr_restorable_timestamp_seconds"] < 120, figures
    assert "archiving keeps up: the newest archived segment " in last_log_lines(host, "pitr_check_db", 3)
    assert host.file(f"{LOGS}/pitr_check_db.log").user == "shop"
    schedule = host.file("/var/lib/djangoops-metrics/djangoops_shop.schedule.prom").content_string
    assert 'djangoops_job_expected_interval_seconds{project="shop",script="pitr_check_db"} 300' in schedule


def write_and_switch(pg, base):
    """A probe row numbered from BASE, then a WAL switch: the segment that holds the row."""
    segment = pg.sql(
        f"WITH w AS (INSERT INTO pitr_probe SELECT {base} + count(*), now() FROM pitr_probe RETURNING n) "
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) FROM w",
    )
    pg.sql("SELECT pg_switch_wal()")
    return segment


def wait_failed(pg, before, seconds):
    """Until PostgreSQL counts more failed archive attempts than BEFORE (fails after SECONDS)."""
    deadline = time.monotonic() + seconds
    while int(pg.sql("SELECT failed_count FROM pg_stat_archiver")) == before:
        assert time.monotonic() < deadline, pg.sql("SELECT row_to_json(a)::text FROM pg_stat_archiver a")
        time.sleep(0.5)


def test_a_failing_archive_command_fails_the_check_until_archiving_works_again(host, probe):
    """The archive command broken (as a full or unreachable repository breaks it): the
    check exits 8 naming the failing segment, and its metrics say archiving fails and
    lags; once archiving works again, the check passes and the segment is in the
    repository."""
    pg = PostgreSQL(host)
    before = int(pg.sql("SELECT failed_count FROM pg_stat_archiver"))
    pg.sql("ALTER SYSTEM SET archive_command = '/bin/false'")
    pg.sql("SELECT pg_reload_conf()")
    try:
        segment = write_and_switch(pg, 4000)
        wait_failed(pg, before, 60)
        failing = host.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
        assert failing.rc == 8, failing.stderr
        assert f"archiving fails: {segment} failed at " in failing.stderr, failing.stderr
        figures = check_metrics(host)
        assert figures["pitr_archive_failing"] == 1 and figures["job_exit_code"] == 8
        assert figures["pitr_archive_lag_seconds"] > 0
        assert figures["pitr_archive_failures_total"] > before
    finally:
        pg.sql("ALTER SYSTEM RESET archive_command")
        pg.sql("SELECT pg_reload_conf()")
    wait_archived(host, segment, 120)
    passing = host.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
    assert passing.rc == 0, passing.stderr + last_log_lines(host, "pitr_check_db", 5)
    assert check_metrics(host)["pitr_archive_failing"] == 0


def archived_in(host, repo):
    """The newest WAL segment in pgBackRest's repository REPO ("" when none), read from that
    repository alone (info of every repository waits out an unreachable bucket's retries)."""
    (stanza,) = json.loads(pgbackrest(host, f"--repo={repo}", "--output=json", "info").stdout)
    return max((a["max"] or "" for a in stanza["archive"]), default="")


def test_an_unreachable_bucket_fails_the_check_and_the_archive_catches_up(host, probe):
    """The bucket out of reach from this server (its name resolved to the loopback, where
    nothing listens on its port): PostgreSQL is told archiving failed, the check exits 8 and
    its metrics say so; once the bucket is back, archiving catches up: both repositories hold
    the segment, PostgreSQL counts it archived and the check passes. (Whether the local
    repository gets the segment while the bucket is out is printed, not asserted: with
    pgBackRest 2.45 it did not.)"""
    pg = PostgreSQL(host)
    hosts = host.file("/etc/hosts").content_string
    assert "pitr-s3" in hosts
    # /etc/hosts is Docker's bind mount: rewritten in place, not replaced.
    rewrite = 'python3 -c \'import sys; f = open("/etc/hosts", "r+"); f.write(sys.stdin.read()); f.truncate()\''
    cut = "".join(line + "\n" for line in hosts.splitlines() if "pitr-s3" not in line) + "127.0.0.1 pitr-s3\n"
    before = int(pg.sql("SELECT failed_count FROM pg_stat_archiver"))
    host.run_expect([0], f"printf %s {quote(cut)} | {rewrite}")
    try:
        started = time.monotonic()
        segment = write_and_switch(pg, 5000)
        wait_failed(pg, before, 240)
        print(f"archiving of {segment} reported failing {time.monotonic() - started:.0f} s after the switch;")
        failing = host.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
        assert failing.rc == 8, failing.stderr
        assert "archiving fails: " in failing.stderr, failing.stderr
        assert check_metrics(host)["pitr_archive_failing"] == 1
        print(f"the local repository held it then: {archived_in(host, 1) >= segment}")
    finally:
        host.run_expect([0], f"printf %s {quote(hosts)} | {rewrite}")
    back = time.monotonic()
    while min(archived_in(host, 1), archived_in(host, 2)) < segment:
        assert time.monotonic() - back < 420, pg.sql("SELECT row_to_json(a)::text FROM pg_stat_archiver a")
        time.sleep(2)
    print(f"both repositories held it {time.monotonic() - back:.0f} s after the bucket came back")
    # PostgreSQL counts it archived when it next runs archive_command, up to a minute after
    # its last failed try: the check judges by what PostgreSQL counts.
    deadline = time.monotonic() + 120
    while (
        pg.sql(
            f"SELECT last_archived_wal >= '{segment}' AND last_archived_time > coalesce(last_failed_time, '-infinity') "
            "FROM pg_stat_archiver"
        )
        != "t"
    ):
        assert time.monotonic() < deadline, pg.sql("SELECT row_to_json(a)::text FROM pg_stat_archiver a")
        time.sleep(1)
    passing = host.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
    assert passing.rc == 0, passing.stderr + last_log_lines(host, "pitr_check_db", 5)
    assert check_metrics(host)["pitr_archive_failing"] == 0


def test_the_scheduled_test_restore_verifies_the_repository_and_names_a_damaged_backup(host, variables):
    """verify_db.sh as the schedule runs it with db_backup_pitr, as root: the dump's test
    restore, then pgBackRest's verify of the repository, logged by the project user's side;
    with a file of the newest pgBackRest backup moved aside it exits 8 naming that backup
    (pgBackRest itself exits 0), and passes again once the file is back."""
    dump = host.run(f"runuser -u shop -- {COMMANDS}/backup_db.sh </dev/null")
    assert dump.rc == 0, dump.stderr
    code = run_scheduled(host, variables, "verify_db")
    assert code == 0, last_log_lines(host, "verify_db", 10)
    log = last_log_lines(host, "verify_db", 5)
    assert " by a test restore in " in log
    # Both repositories: the local one and the bucket.
    assert "pgBackRest verifies the local repository of stanza main" in log
    assert "pgBackRest verifies the off-site repository 2 of stanza main" in log
    assert "pgBackRest's repositories verified in " in log and "WAL files, each matching its checksum" in log
    newest = local_backups(info(host)["backup"])[-1]["label"]
    found = host.run(f"find {REPOSITORY}/backup/{STANZA}/{newest}/pg_data -type f -name '*.zst' | sort | head -n 1")
    path = found.stdout.strip()
    assert path, found.stderr
    host.run_expect([0], "mv %s %s.aside", path, path)
    try:
        damaged = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    finally:
        host.run_expect([0], "mv %s.aside %s", path, path)
    assert damaged.rc == 8, damaged.stderr
    assert f"pgBackRest's verify finds damage: local repository: backup {newest} invalid: " in damaged.stderr, (
        damaged.stderr
    )
    again = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    assert again.rc == 0, again.stderr


# An object of the bucket moved aside (to aside/KEY) or back, on the S3 stand-in itself, with
# the boto3 that moto's virtualenv holds.
S3_OBJECT = """
import sys, boto3
action, bucket, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5001", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
source, target = (key, "aside/" + key) if action == "aside" else ("aside/" + key, key)
s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})
s3.delete_object(Bucket=bucket, Key=source)
"""


def s3_object(action, bucket, key):
    moved = subprocess.run(
        ["docker", "exec", "pitr-s3", "/opt/djangoops-test/moto/bin/python", "-c", S3_OBJECT, action, bucket, key],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr


def test_the_verify_reads_the_bucket_and_names_a_damaged_off_site_backup(host):
    """verify_db.sh verifies the off-site repository as well as the local one: with an object
    of the bucket's newest backup moved aside, it exits 8 naming off-site repository 2 and that
    backup, the local repository being whole; with the object back, it passes."""
    dump = host.run(f"runuser -u shop -- {COMMANDS}/backup_db.sh </dev/null")  # the dump's test restore comes first
    assert dump.rc == 0, dump.stderr
    # Where the bucket is, as pgBackRest's configuration says.
    conf = dict(
        line.split("=", 1) for line in host.file(CONFIG).content_string.splitlines() if line.startswith("repo2-")
    )
    newest = [b for b in info(host)["backup"] if b["database"]["repo-key"] == 2][-1]["label"]
    where = f"backup/{STANZA}/{newest}/pg_data"
    listed = json.loads(pgbackrest(host, "--repo=2", "--output=json", "--recurse", "repo-ls", where).stdout)
    name = sorted(n for n, entry in listed.items() if entry["type"] == "file" and n.endswith(".zst"))[0]
    key = f"{conf['repo2-path'].strip('/')}/{where}/{name}"
    s3_object("aside", conf["repo2-s3-bucket"], key)
    try:
        damaged = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    finally:
        s3_object("back", conf["repo2-s3-bucket"], key)
    assert damaged.rc == 8, damaged.stderr
    assert f"pgBackRest's verify finds damage: off-site repository 2: backup {newest} invalid: " in damaged.stderr, (
        damaged.stderr
    )
    assert "local repository:" not in damaged.stderr
    again = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    assert again.rc == 0, again.stderr


def test_a_new_passphrase_shows_in_no_diff(host, variables):
    # Check mode with --diff, as an operator previews a change of the passphrase.
    old = variables["db_backup_pitr_cipher_pass"]
    new = "a new passphrase for the preview, 12345"
    code, output = converge(host, "--check", "--diff", "-e", f"db_backup_pitr_cipher_pass='{new}'")
    assert code == 0, output
    assert "Install pgBackRest's configuration" in output
    assert old not in output and new not in output
    assert "censored" in output  # the configuration's task would change, and says nothing of how
    assert host.run(f"grep -cF {quote(old)} {CONFIG}").stdout.strip() == "2"  # check mode changed nothing


def restart_postgresql(host):
    """Stopped and started again (systemctl start returns once the cluster takes connections)."""
    engine = PostgreSQL(host)
    engine.stop()
    engine.start()


def test_the_role_never_restarts_postgresql_it_may_not_restart(host, variables):
    if variables["db_backup_pitr_restart_database"]:
        pytest.skip("this server lets the role restart PostgreSQL")
    # An ALTER SYSTEM that keeps archiving off: a restart would not help, and the role says which file.
    PostgreSQL(host).sql("ALTER SYSTEM SET archive_mode = off", database="postgres")
    restart_postgresql(host)
    try:
        started = PostgreSQL(host).sql("SELECT pg_postmaster_start_time()")
        code, output = converge(host)
        assert code != 0, output
        assert "archive_mode = off in /var/lib/postgresql/" in output and "postgresql.auto.conf" in output, output
        assert "ALTER SYSTEM RESET archive_mode" in output

        # Reset and reloaded, not restarted: the role stops and names the restart, without doing it.
        PostgreSQL(host).sql("ALTER SYSTEM RESET archive_mode; SELECT pg_reload_conf()", database="postgres")
        code, output = converge(host)
        assert code != 0, output
        major = int(PostgreSQL(host).sql("SHOW server_version_num")) // 10000
        assert f"restart it in a quiet minute (pg_ctlcluster {major} main restart)" in output, output
        assert PostgreSQL(host).sql("SELECT pg_postmaster_start_time()") == started
        assert PostgreSQL(host).sql("SHOW archive_mode") == "off"
        # A segment filled and switched out while archiving is off: it reaches no archive.
        write_and_switch(PostgreSQL(host), 3000)
    finally:
        PostgreSQL(host).sql("ALTER SYSTEM RESET archive_mode", database="postgres")
        restart_postgresql(host)  # the operator's quiet minute
    code, output = converge(host)
    assert code == 0, output
    assert PostgreSQL(host).sql("SHOW archive_mode") == "on"
    pgbackrest(host, "check")
    # The segment switched out while archive_mode was off is in no archive: a restore from an
    # older backup stops there. The role README's step after such a gap, a backup at once (the drill,
    # next, rebuilds this server from the newest one): auto sees the gap and takes one in each
    # repository, however little WAL there is.
    before = info(host)["backup"]
    after_gap = host.run(f"{ENGINE_BIN}/pitr_backup_db.sh </dev/null")
    assert after_gap.rc == 0, after_gap.stderr
    log = last_log_lines(host, "pitr_backup_db", 8)
    assert "pgBackRest takes a diff backup of the cluster (stanza main): the archive misses WAL after backup " in log
    assert "(stanza main, off-site repository 2): the archive misses WAL after backup " in log, log
    assert len(info(host)["backup"]) == len(before) + 2
