"""Point-in-time recovery on MariaDB, as the db_backup role configures it
(db_backup_pitr): the binary log on, an idle site's last write archived within
archive_timeout into an encrypted local restic repository and the S3 bucket,
a base that mariadb-backup took, restorable into a server of its own, and the
database server restarted only where the role was allowed to."""

import json
import re
import subprocess
import time
import uuid

import pytest
from db_backup.backup_helpers import DB_NAME, MariaDB, last_log_lines
from schedule.schedule_helpers import run_scheduled
from shop_project import ENGINE_BIN, quote

PITR_DIR = "/var/lib/djangoops-mariadb-pitr"
SPOOL = f"{PITR_DIR}/spool"
REPOSITORY = f"{PITR_DIR}/repository"
CONFIG_DIR = "/etc/djangoops/shop"
PASSWORD_FILE = f"{CONFIG_DIR}/pitr-restic-password"
KEYS_FILE = f"{CONFIG_DIR}/pitr-s3-keys.json"
ARCHIVE_TIMEOUT = 5


def restic(host, repo, *args, check=True):
    """restic against the local repository ("local") or the bucket ("offsite"), as the engine runs it."""
    settings = json.loads(host.run("cat %s/pitr.json", CONFIG_DIR).stdout)
    (where,) = [r for r in settings["repositories"] if r["name"] == repo]
    env = f"RESTIC_PASSWORD_FILE={PASSWORD_FILE} RESTIC_CACHE_DIR=/root/.cache/restic-test"
    if repo == "offsite":
        keys = json.loads(host.run("cat %s", KEYS_FILE).stdout)
        env += " AWS_DEFAULT_REGION=us-east-1"
        env += f" AWS_ACCESS_KEY_ID={keys['access_key_id']} AWS_SECRET_ACCESS_KEY='{keys['secret_access_key']}'"
    ca = ["--cacert", where["ca_file"]] if where.get("ca_file") else []
    argv = ["restic", "--repo", where["url"], *ca, *args]
    result = host.run(f"env {env} " + " ".join(["%s"] * len(argv)), *argv)
    if check:
        assert result.rc == 0, result.stdout + result.stderr
    return result


def snapshots(host, repo, tag):
    return json.loads(restic(host, repo, "snapshots", "--json", "--tag", tag).stdout)


@pytest.fixture(scope="module")
def probe(host):
    """A table of the site's database that the tests write marked rows into."""
    MariaDB(host).sql(
        "CREATE TABLE IF NOT EXISTS pitr_probe (n int PRIMARY KEY AUTO_INCREMENT, mark varchar(64) NOT NULL, "
        "at DATETIME(6) NOT NULL DEFAULT NOW(6))"
    )
    return MariaDB(host)


def state(host):
    return json.loads(host.run("cat %s/state.json", SPOOL).stdout)


def test_the_server_logs_rows_into_its_binary_log(host):
    answer = MariaDB(host).sql("SELECT @@log_bin, @@binlog_format, @@sync_binlog", database=None)
    assert answer.split("\t") == ["1", "ROW", "1"]


def test_mariadb_was_restarted_only_where_the_role_was_allowed_to(host, variables):
    before = float(host.run("cat /root/mariadb_started").stdout)
    started = float(
        MariaDB(host).sql(
            "SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
            "WHERE VARIABLE_NAME = 'UPTIME'",
            database=None,
        )
    )
    if variables["db_backup_pitr_restart_database"]:
        assert started > before + 1  # Debian 13: log_bin was off, the role restarted it
    else:
        assert abs(started - before) <= 2  # Debian 12: the operator had done it; the role must not


def wait_archived(host, since, seconds):
    """Until both repositories hold every write made before a moment after SINCE."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        repos = state(host)["repositories"]
        if all((r.get("through") or 0) > since and not r.get("error") for r in repos.values()):
            return time.time() - since
        time.sleep(0.5)
    pytest.fail(f"not archived within {seconds} s: {state(host)}; {last_log_lines(host, 'pitr_archive_db')}")


def binlog_text(host, repo, target):
    """The binary logs of REPO's newest binlog snapshot, decoded (rows as pseudo-SQL)."""
    host.run("rm -rf %s", target)
    restic(host, repo, "restore", "latest", "--tag", "binlog", "--target", target)
    return host.run(
        "find %s -name 'mysql-bin.*' -print0 | sort -z | xargs -0 -r mariadb-binlog --base64-output=decode-rows -v",
        target,
    ).stdout


def test_an_idle_sites_last_write_is_in_both_repositories_within_archive_timeout(host, probe):
    """The scheduled job archives every minute, a pass every archive_timeout (5 s): the write,
    then nothing more, and both repositories hold it a few seconds later."""
    mark = f"idle-{uuid.uuid4().hex}"
    written = time.time()
    probe.sql(f"INSERT INTO pitr_probe (mark) VALUES ('{mark}')")
    took = wait_archived(host, written, ARCHIVE_TIMEOUT * 2 + 30)
    print(f"the write was in both repositories {took:.1f} s after it")
    for repo in ("local", "offsite"):
        assert mark in binlog_text(host, repo, f"/root/binlog-{repo}"), repo


def test_the_repository_is_encrypted_and_its_secrets_are_roots(host, probe):
    mark = f"clear-{uuid.uuid4().hex}"
    written = time.time()
    probe.sql(f"INSERT INTO pitr_probe (mark) VALUES ('{mark}')")
    wait_archived(host, written, ARCHIVE_TIMEOUT * 2 + 30)
    # In clear on the server (the control), in no file of the repository.
    assert host.run("grep -rl %s /var/log/mysql", mark).stdout.strip()
    assert host.run("grep -rl %s %s", mark, REPOSITORY).stdout == ""
    for path in (PASSWORD_FILE, KEYS_FILE, f"{CONFIG_DIR}/pitr.json"):
        found = host.file(path)
        assert (found.user, found.mode) == ("root", 0o600), path
    assert host.file(SPOOL).mode == 0o700 and host.file(SPOOL).user == "root"
    settings = host.run("cat %s/pitr.json", CONFIG_DIR).stdout
    assert "secret" not in settings and "passphrase" not in settings


# Run on the S3 stand-in with the bucket owner's keys: how many objects under a prefix, and
# how many hold a marker.
S3_GREP = """
import sys, boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5001", region_name="us-east-1",
                  aws_access_key_id="owner", aws_secret_access_key="owner")
prefix, mark = sys.argv[1], sys.argv[2].encode()
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="pitr-offsite", Prefix=prefix)
        for o in page.get("Contents", [])]
holding = [k for k in keys if mark in s3.get_object(Bucket="pitr-offsite", Key=k)["Body"].read()]
print(len(keys), len(holding))
"""


def bucket_grep(prefix, mark):
    found = subprocess.run(
        ["docker", "exec", "pitr_mariadb-s3", "/opt/djangoops-test/moto/bin/python", "-c", S3_GREP, prefix, mark],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    return [int(n) for n in found.stdout.split()]


def test_the_bucket_holds_no_write_in_clear(host, probe):
    """restic's objects in the bucket are ciphertext: the marker of an archived write is in none of them."""
    mark = f"bucket-{uuid.uuid4().hex}"
    written = time.time()
    probe.sql(f"INSERT INTO pitr_probe (mark) VALUES ('{mark}')")
    wait_archived(host, written, ARCHIVE_TIMEOUT * 2 + 30)
    assert mark in binlog_text(host, "offsite", "/root/binlog-bucket")  # there, decrypted by restic
    objects, holding = bucket_grep(host.backend.get_hostname() + "/", mark)
    assert objects > 5 and holding == 0


def test_a_base_is_in_both_repositories_and_restores_into_a_server_of_its_own(host, probe):
    """The first base (converge): extracted from the bucket, prepared and started on a socket of
    its own, it holds the site's rows as they were when it was taken."""
    bases = json.loads(host.run("cat %s/archive/bases.json", SPOOL).stdout)
    assert bases and bases[-1]["file"].startswith("mysql-bin.")
    label = bases[-1]["label"]
    for repo in ("local", "offsite"):
        assert [s for s in snapshots(host, repo, "base") if f"label={label}" in s["tags"]], repo
    top = "/var/tmp/base-restore"  # below directories mysql may pass through
    stop_base_server(host, top)
    host.run("install -d -o mysql -g mysql %s/data %s/run", top, top)
    extracted = host.run(
        "set -o pipefail; " + restic_dump_command(host, label) + " | runuser -u mysql -- mbstream -x -C %s/data",
        top,
    )
    assert extracted.rc == 0, extracted.stderr
    prepared = host.run("runuser -u mysql -- mariadb-backup --prepare --target-dir=%s/data", top)
    assert prepared.rc == 0, prepared.stderr[-2000:]
    host.run(
        "runuser -u mysql -- sh -c 'setsid mariadbd --no-defaults --datadir=%s/data --socket=%s/run/s.sock "
        "--skip-networking --skip-log-bin --pid-file=%s/run/pid >%s/run/log 2>&1 &'",
        top,
        top,
        top,
        top,
    )
    try:
        for _attempt in range(60):
            answer = host.run(
                "mariadb --no-defaults --default-character-set=utf8mb4 --socket=%s/run/s.sock -NB "
                "-e 'SELECT count(*) FROM catalog_item' --database=%s",
                top,
                DB_NAME,
            )
            if answer.rc == 0:
                break
            time.sleep(0.5)
        assert answer.rc == 0, answer.stderr + host.run("cat %s/run/log", top).stdout
        assert int(answer.stdout) == int(probe.sql("SELECT count(*) FROM catalog_item")) > 0
    finally:
        stop_base_server(host, top)


def stop_base_server(host, top):
    """The test's own mariadbd, by its pid file (a pattern would match this very command)."""
    host.run("test -f %s/run/pid && kill $(cat %s/run/pid) && sleep 2; rm -rf %s", top, top, top)


def restic_dump_command(host, label):
    settings = json.loads(host.run("cat %s/pitr.json", CONFIG_DIR).stdout)
    (where,) = [r for r in settings["repositories"] if r["name"] == "offsite"]
    keys = json.loads(host.run("cat %s", KEYS_FILE).stdout)
    return (
        f"env RESTIC_PASSWORD_FILE={PASSWORD_FILE} AWS_DEFAULT_REGION=us-east-1 "
        f"AWS_ACCESS_KEY_ID={keys['access_key_id']} AWS_SECRET_ACCESS_KEY='{keys['secret_access_key']}' "
        f"restic --repo {where['url']} --cacert {where['ca_file']} dump --tag label={label} latest /base.mbstream"
    )


def test_the_scheduled_check_measures_the_lag(host, probe):
    result = host.run(f"{ENGINE_BIN}/pitr_check_db.sh")
    assert result.rc == 0, result.stderr + "\n".join(last_log_lines(host, "pitr_check_db"))
    metrics = host.run("cat /var/lib/djangoops-metrics/djangoops_shop_pitr_check_db.prom").stdout
    lag = float(re.search(r"djangoops_pitr_archive_lag_seconds\{[^}]*\} (\S+)", metrics).group(1))
    assert 0 <= lag < 60
    assert re.search(r"djangoops_pitr_backups\{[^}]*\} [1-9]", metrics)


def test_a_base_taken_by_hand_is_kept_and_retention_keeps_two(host):
    for _base in range(2):
        result = host.run(f"{ENGINE_BIN}/pitr_backup_db.sh")
        assert result.rc == 0, result.stderr
        time.sleep(1.1)  # labels are to the second
    bases = json.loads(host.run("cat %s/archive/bases.json", SPOOL).stdout)
    assert len(bases) == 2
    for repo in ("local", "offsite"):
        labels = sorted(t[6:] for s in snapshots(host, repo, "base") for t in s["tags"] if t.startswith("label="))
        assert labels == sorted(b["label"] for b in bases), repo
    assert "2 bases kept" in last_log_lines(host, "pitr_backup_db")


def test_an_unreachable_bucket_holds_up_only_itself(host, probe):
    """The bucket out of reach from this server (its name resolved to the loopback, where
    nothing listens on its port): the scheduled archive still puts a write into the local
    repository within seconds (restic retries the bucket meanwhile: a minute on 0.14, fifteen
    from 0.17, in a push of its own); once the bucket is back it catches up and the check
    passes."""
    hosts = host.file("/etc/hosts").content_string
    assert "pitr-s3" in hosts
    # /etc/hosts is Docker's bind mount: rewritten in place, not replaced.
    rewrite = 'python3 -c \'import sys; f = open("/etc/hosts", "r+"); f.write(sys.stdin.read()); f.truncate()\''
    cut = "".join(line + "\n" for line in hosts.splitlines() if "pitr-s3" not in line) + "127.0.0.1 pitr-s3\n"
    host.run_expect([0], f"printf %s {quote(cut)} | {rewrite}")
    try:
        time.sleep(ARCHIVE_TIMEOUT)  # a push that began before the cut has ended
        mark = f"outage-{uuid.uuid4().hex}"
        written = time.time()
        probe.sql(f"INSERT INTO pitr_probe (mark) VALUES ('{mark}')")
        deadline = time.time() + ARCHIVE_TIMEOUT * 2 + 30
        while (state(host)["repositories"]["local"].get("through") or 0) <= written:
            assert time.time() < deadline, state(host)
            time.sleep(0.5)
        print(f"the local repository held the write {time.time() - written:.1f} s after it, the bucket out of reach")
        assert mark in binlog_text(host, "local", "/root/binlog-outage")
        assert (state(host)["repositories"]["offsite"].get("through") or 0) <= written
    finally:
        host.run_expect([0], f"printf %s {quote(hosts)} | {rewrite}")
    back = time.time()
    wait_archived(host, written, 300)
    print(f"the bucket caught up {time.time() - back:.0f} s after it came back")
    assert mark in binlog_text(host, "offsite", "/root/binlog-outage")
    passing = host.run(f"{ENGINE_BIN}/pitr_check_db.sh </dev/null")
    assert passing.rc == 0, passing.stderr


def test_the_test_restore_reads_both_repositories_back_and_names_a_damaged_one(host):
    """verify_db.sh as root with db_backup_pitr: the dump's test restore, then restic reads every
    pack of both repositories back; with a pack of the local repository spoiled it exits 8 naming
    that repository, and passes again once the pack is whole."""
    dump = host.run("runuser -u shop -- /home/shop/commands/backup_db.sh </dev/null")
    assert dump.rc == 0, dump.stderr
    verified = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    assert verified.rc == 0, verified.stderr
    log = last_log_lines(host, "verify_db", 6)
    assert "restic reads back the local repository of main" in log
    assert "restic reads back the offsite repository of main" in log
    assert "restic read back the point-in-time repositories in " in log and "every pack matching" in log
    pack = host.run(f"find {REPOSITORY}/data -type f | sort | head -n 1").stdout.strip()
    assert pack
    spoil = "cp -p %s /root/pack.whole && printf 'spoiled' | dd of=%s bs=1 seek=64 conv=notrunc"
    host.run_expect([0], spoil, pack, pack)
    try:
        damaged = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    finally:
        host.run_expect([0], "cp -p /root/pack.whole %s", pack)
    assert damaged.rc == 8, damaged.stderr
    assert "restic check in the local repository failed" in damaged.stderr, damaged.stderr
    again = host.run(f"{ENGINE_BIN}/verify_db.sh </dev/null")
    assert again.rc == 0, again.stderr


def test_the_scheduled_base_and_test_restore_run_in_their_sandbox(host, variables):
    """pitr_backup_db.sh and verify_db.sh as their scheduler starts them (cron on Debian 12, a
    confined systemd service on 13): a new base in both repositories, both read back."""
    before = {b["label"] for b in json.loads(host.run("cat %s/archive/bases.json", SPOOL).stdout)}
    time.sleep(1.1)  # labels are to the second
    assert run_scheduled(host, variables, "pitr_backup_db") == 0, last_log_lines(host, "pitr_backup_db")
    after = json.loads(host.run("cat %s/archive/bases.json", SPOOL).stdout)
    (new,) = [b["label"] for b in after if b["label"] not in before]
    for repo in ("local", "offsite"):
        assert [s for s in snapshots(host, repo, "base") if f"label={new}" in s["tags"]], repo
    dump = host.run("runuser -u shop -- /home/shop/commands/backup_db.sh </dev/null")
    assert dump.rc == 0, dump.stderr
    assert run_scheduled(host, variables, "verify_db") == 0, last_log_lines(host, "verify_db")
    assert "restic read back the point-in-time repositories" in last_log_lines(host, "verify_db", 5)


SCRATCH_DIR = "/var/lib/djangoops-pitr/shop"  # the role's default for project shop


@pytest.fixture
def writer(host):
    """A writer committing a numbered row every 100 ms into table pitr_writes of the site's
    database (one client session, each INSERT its own transaction), for up to a minute."""
    MariaDB(host).sql(
        "DROP TABLE IF EXISTS pitr_writes; "
        "CREATE TABLE pitr_writes (n int PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6))"
    )
    loop = 'i=1; while [ $i -le 600 ]; do echo "INSERT INTO pitr_writes (n) VALUES ($i);"; i=$((i+1)); sleep 0.1; done'
    client = f"mariadb --default-character-set=utf8mb4 --database={quote(DB_NAME)}"
    host.run(f"setsid -f sh -c {quote(f'echo $$ > /root/pitr-writer.pid; ({loop}) | {client}')} >/dev/null 2>&1")

    def stop():
        host.run("kill -- -$(cat /root/pitr-writer.pid) 2>/dev/null; true")

    yield stop
    stop()


def test_restore_to_a_time_brings_back_every_row_written_before_it_and_none_after(host, probe, writer, run):
    """The issue's drill on MariaDB: a writer commits a row every 100 ms; at T the table is
    dropped; restore_db.sh --to-time T - 1 s (as root) brings back every row written before
    that second (the binary log stamps events to the second) and none after. The server's
    other database, written after that moment too, is untouched; nothing of the scratch
    server is left."""
    db = MariaDB(host)
    db.sql("DROP DATABASE IF EXISTS pitr_other; CREATE DATABASE pitr_other", database=None)
    db.sql("CREATE TABLE other (n int); INSERT INTO other VALUES (1)", database="pitr_other")
    time.sleep(4)
    out = db.sql(
        "SELECT CONCAT('row ', n, ' ', UNIX_TIMESTAMP(at)) FROM pitr_writes ORDER BY n; "
        "SELECT CONCAT('T ', UNIX_TIMESTAMP(NOW(6))); DROP TABLE pitr_writes"
    ).split("\n")
    writer()
    (dropped_at,) = (float(line.split()[1]) for line in out if line.startswith("T "))
    at = {int(line.split()[1]): float(line.split()[2]) for line in out if line.startswith("row ")}
    db.sql("INSERT INTO other VALUES (2)", database="pitr_other")
    assert len(at) >= 25, at
    target = dropped_at - 1
    moment = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(target)) + f".{int(target % 1 * 1e6):06d}"
    wait_archived(host, dropped_at, ARCHIVE_TIMEOUT * 2 + 30)

    result = run("restore_db.sh", "--to-time", f"{moment}+00:00", "--yes")
    assert result.rc == 0, result.stdout + result.stderr + last_log_lines(host, "restore_db", 30)
    restored = [int(n) for n in db.sql("SELECT n FROM pitr_writes ORDER BY n").split()]
    second = int(target)  # the replay stops at the first event stamped at or after it
    assert restored == list(range(1, len(restored) + 1))
    assert all(at[n] < second + 0.001 for n in restored), [(n, at[n] - second) for n in restored if at[n] >= second]
    missing = [n for n in at if n not in restored and at[n] < second - 0.02]
    assert missing == []
    assert restored, "nothing restored"
    print(f"restored {len(restored)} of {len(at)} rows; the last {target - at[restored[-1]]:.3f} s before the moment")
    assert db.sql("SELECT GROUP_CONCAT(n ORDER BY n) FROM other", database="pitr_other") == "1,2"
    log = last_log_lines(host, "restore_db", 60)
    assert "the server is recovered aside first" in log and "replays" in log
    assert not host.file(SCRATCH_DIR).exists
    assert host.run(f"pgrep -f {SCRATCH_DIR}").rc == 1


def test_restore_to_a_time_past_the_archive_or_before_the_first_base_changes_nothing(host, probe, run):
    before = probe.sql("SELECT count(*) FROM pitr_probe")
    early = run("restore_db.sh", "--to-time", "2020-01-01 00:00:00+00:00", "--yes")
    assert early.rc == 9 and "no base of the archive ends before" in early.stderr, early.stderr
    as_user = host.run("runuser -u shop -- /home/shop/commands/restore_db.sh --to-time '2026-01-01 00:00:00' --yes")
    assert as_user.rc == 3 and "must be started as root" in as_user.stderr, as_user.stderr
    assert probe.sql("SELECT count(*) FROM pitr_probe") == before
    assert not host.file(SCRATCH_DIR).exists


def test_nothing_runs_the_archive_but_root(host):
    result = host.run("runuser -u shop -- %s/pitr_archive_db.sh --once", ENGINE_BIN)
    assert result.rc == 3 and "pitr_archive_db.sh must be started as root" in result.stderr, result.stderr
    assert host.file(f"{ENGINE_BIN}/pitr_archive_db.sh").user == "root"
