"""The backup scripts against a real database server and Django project (both engines).

The tests share the server. Each sets up what it starts from (a backup of the database as it
is now: the fresh_backup fixture), so that one can be run and read alone; each leaves the
database as it found it."""

import json
import re
import time

import pytest
from backup_helpers import (
    BACKUPS,
    DB_NAME,
    PASSWORD,
    PostgreSQL,
    files_holding,
    last_log_lines,
    sample_ps_during,
)
from installed_code import DB_BACKUP, not_as_shipped, values
from shop_project import COMMANDS, HOME, quote


def manifest(host, name):
    return json.loads(host.file(f"{BACKUPS}/{name}.manifest.json").content_string)


def latest(host):
    return host.run(f"readlink {BACKUPS}/latest").stdout.strip()


def test_the_code_is_the_repositorys_and_the_values_are_what_the_inventory_says(host, variables):
    assert not_as_shipped(host, DB_BACKUP) == []
    assert values(host, "project.json")["backups_dir"] == BACKUPS
    database = values(host, "database.json")
    assert (database["engine"], database["credentials_source"]) == (
        variables["db_backup_engine"],
        variables["db_backup_credentials_source"],
    )
    assert values(host, "offsite.json")["repositories"] == []


def test_credentials_file_and_backup_directory_modes(host, variables):
    backups = host.file(BACKUPS)
    assert (backups.user, backups.mode) == ("shop", 0o700)
    name = "pgpass" if variables["db_backup_engine"] == "postgresql" else "my.cnf"
    client = host.file(f"{HOME}/.djangoops/{name}")
    if variables["db_backup_credentials_source"] == "vars":
        assert (client.user, client.group, client.mode) == ("shop", "shop", 0o600)
    else:
        assert not client.exists


def expected_extension(variables):
    data = "sql"
    if variables["db_backup_engine"] == "postgresql" and variables.get("db_backup_postgresql_format") != "plain":
        data = "pgdump"
    return f"{data}.{'gz' if variables.get('db_backup_compression') == 'gzip' else 'zst'}"


def test_backup_publishes_a_whole_checked_backup(host, variables, run):
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr
    name = latest(host)
    assert name.startswith("shop_") and name.endswith("." + expected_extension(variables))
    if variables.get("db_backup_rotation") == "weekday":
        assert name == f"shop_{host.run('date +%w-%A').stdout.strip()}.{expected_extension(variables)}"
    backup = host.file(f"{BACKUPS}/{name}")
    assert (backup.user, backup.mode) == ("shop", 0o600)
    assert host.run(f"cd {BACKUPS} && sha256sum --check --strict {quote(name)}.sha256").rc == 0
    data = manifest(host, name)
    tables = {k.rsplit(".", 1)[-1]: v for k, v in data["tables"].items()}
    assert tables["catalog_item"] == 500
    # MEDIA_ROOT is in the same set, under the same checksum file.
    media = data["media_file"]
    assert media == name.split(".")[0] + ".media.tar." + name.rsplit(".", 1)[1]
    assert data["media_files"] == 3
    assert host.file(f"{BACKUPS}/{media}").mode == 0o600
    assert len(host.file(f"{BACKUPS}/{name}.sha256").content_string.splitlines()) == 2
    assert data["database"] == DB_NAME
    assert "finished in" in result.stderr


@pytest.fixture
def fresh_backup(host, run):
    """A backup of the database as it is now, which latest points at: its name."""
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr
    return latest(host)


@pytest.fixture
def sessions(engine):
    """Live sessions in django_session (the seed has 10; a restore brings back none)."""
    if int(engine.sql("SELECT count(*) FROM django_session")) == 0:
        engine.sql(
            "INSERT INTO django_session (session_key, session_data, expire_date) VALUES"
            " ('standalone1', 'x', '2999-01-01 00:00:00'), ('standalone2', 'x', '2999-01-01 00:00:00')"
        )
    return int(engine.sql("SELECT count(*) FROM django_session"))


def test_session_rows_are_left_out_but_the_table_is_kept(host, sessions, fresh_backup):
    assert sessions > 0
    data = manifest(host, fresh_backup)
    tables = {k.rsplit(".", 1)[-1]: v for k, v in data["tables"].items()}
    assert tables["django_session"] == 0


def test_restore_brings_back_identical_rows(host, engine, run, fresh_backup):
    original = engine.sql(engine.checksum_sql)
    engine.sql(engine.damage_sql)
    assert engine.sql(engine.checksum_sql) != original
    result = run("restore_db.sh", "--yes")
    assert result.rc == 0, result.stderr
    assert engine.sql(engine.checksum_sql) == original
    # The session table came back with its structure and without its rows.
    assert int(engine.sql("SELECT count(*) FROM django_session")) == 0
    assert "restored" in result.stderr and "safety" in result.stderr


def test_restore_leaves_planner_statistics_on_every_table(host, engine, run, fresh_backup):
    if engine.service != "postgresql":
        pytest.skip("a PostgreSQL table has no planner statistics until analyzed; InnoDB gathers them as rows load")
    engine.sql(engine.damage_sql)
    result = run("restore_db.sh", "--yes")
    assert result.rc == 0, result.stderr
    # last_analyze is an ANALYZE's, not autovacuum's (last_autoanalyze): the restore's own.
    never = engine.sql("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NULL ORDER BY 1")
    assert never == "", f"tables the restore left without statistics: {never}"
    assert int(engine.sql("SELECT count(*) FROM pg_stats WHERE tablename = 'catalog_item'")) > 0
    # It ran on the live database once restored, beside the safety copy.
    swapped = result.stderr.index("restore: swapped:")
    assert result.stderr.index("(ANALYZE), beside the safety copy") > swapped
    assert re.search(r'analyzed ".+" in \d+\.\d s', result.stderr[swapped:]), result.stderr


def media_tree(host):
    return host.run(f"cd {HOME}/media && find . -type f -print0 | sort -z | xargs -0 sha256sum").stdout


def test_restore_with_media_brings_back_the_files_and_keeps_the_old_tree(host, run, fresh_backup):
    original = media_tree(host)
    host.run_expect([0], f"cd {HOME}/media && echo changed > a.txt && rm -f 'sub dir/with space'\\''s.txt'")
    assert media_tree(host) != original
    result = run("restore_db.sh", "--yes", "--with-media")
    assert result.rc == 0, result.stderr
    assert media_tree(host) == original
    kept = host.run(f"ls -d {HOME}/media.before-restore-*").stdout.split()
    assert len(kept) == 1 and host.file(f"{kept[0]}/a.txt").content_string == "changed\n"
    host.run_expect([0], f"rm -rf {HOME}/media.before-restore-*")


def test_restore_keeps_the_backup_it_restores(host, run, fresh_backup):
    for _i in range(2):
        assert run("restore_db.sh", "--yes").rc == 0
    safety = re.compile(r"^shop_\d{8}T\d{6}Z_safety\.(pgdump|sql)\.(zst|gz)$")
    safeties = sorted(n for n in host.run(f"ls -A {BACKUPS}").stdout.split() if safety.match(n))
    oldest = safeties[0]
    assert len(safeties) >= 2
    # Its own safety backup makes one too many: retention must not take the one being restored.
    result = run("restore_db.sh", oldest, "--yes")
    assert result.rc == 0, result.stderr
    assert host.file(f"{BACKUPS}/{oldest}").exists
    assert run("restore_db.sh", "--yes").rc == 0


def test_restore_refuses_a_user_who_could_not_recreate_the_database(host, engine, run, fresh_backup):
    if engine.service != "postgresql":
        pytest.skip(
            "MariaDB has no CREATEDB: a user without the grant fails creating the work database, before the swap"
        )
    before = engine.sql(engine.checksum_sql)
    engine.set_createdb(False)
    try:
        result = run("restore_db.sh", "--yes")
    finally:
        engine.set_createdb(True)
    assert result.rc == 3, result.stderr
    assert "may not create databases" in result.stderr
    assert engine.sql(engine.checksum_sql) == before


def test_restore_without_the_typed_name_changes_nothing(host, engine, run, fresh_backup):
    engine.sql(engine.damage_sql)
    damaged = engine.sql(engine.checksum_sql)
    for answer in ("wrong", "", None):
        result = run("restore_db.sh", stdin=answer)
        assert result.rc == 11, result.stderr
        assert "nothing was changed" in result.stderr
    assert engine.sql(engine.checksum_sql) == damaged
    assert run("restore_db.sh", stdin=DB_NAME).rc == 0
    assert engine.sql(engine.checksum_sql) != damaged


def test_verify_passes_on_a_good_backup(host, engine, run, fresh_backup):
    result = run("verify_db.sh")
    assert result.rc == 0, result.stderr
    assert "as in the manifest" in result.stderr
    assert not engine.database_exists("djangoops_verify_shop"), "the scratch database was left behind"


WRITER_MARK = "written-during-the-dump"


@pytest.fixture
def writer(host, engine):
    """Rows inserted into catalog_item one transaction at a time, as fast as the server takes
    them, until the test ends; the rows are removed afterwards. Yields a row counter."""
    now = "now()" if isinstance(engine, PostgreSQL) else "NOW(6)"
    insert = f"INSERT INTO catalog_item (name, body, data, created) VALUES ('{WRITER_MARK}', 'x', '{{}}', {now});"
    loop = f"yes {quote(insert)} | {engine.client_command()}"
    host.run_expect([0], f"nohup timeout 120 bash -c {quote(loop)} >/dev/null 2>&1 &")

    def rows():
        return int(engine.sql("SELECT count(*) FROM catalog_item"))

    deadline = time.monotonic() + 30
    while rows() < 550 and time.monotonic() < deadline:
        time.sleep(0.2)
    yield rows
    # A bracket in the pattern, so that pkill's own shell (whose command line holds it) is spared.
    pattern = f"[{WRITER_MARK[0]}]{WRITER_MARK[1:]}"
    host.run(f"pkill -f {quote(pattern)}")
    time.sleep(0.5)
    engine.sql(f"DELETE FROM catalog_item WHERE name = '{WRITER_MARK}'")


def test_the_manifest_counts_the_dumped_rows_while_writes_run(host, run, writer):
    before = writer()
    assert before >= 550, "the writer did not start"
    result = run("backup_db.sh")
    after = writer()
    assert result.rc == 0, result.stderr
    name = latest(host)
    counted = next(v for k, v in manifest(host, name)["tables"].items() if k.endswith("catalog_item"))
    # Rows were committed before the dump began, during it and after it: the manifest's count
    # is the dump's own, strictly between the two.
    assert before < counted < after, (before, counted, after)
    # And it is the dump's: loaded into a scratch database, the file holds exactly those rows.
    verify = run("verify_db.sh", name)
    assert verify.rc == 0, verify.stderr
    assert "as in the manifest" in verify.stderr


@pytest.fixture
def copy_of_latest(host, fresh_backup):
    """A copy of a fresh backup under another (older) name, with matching sidecars."""
    name = fresh_backup
    copy = "shop_19990101T000000Z_daily." + name.split(".", 1)[1]
    media, copy_media = (n.split(".")[0] + ".media.tar." + n.rsplit(".", 1)[1] for n in (name, copy))
    host.run_expect(
        [0],
        f"cd {BACKUPS} && cp -p {quote(name)} {quote(copy)} && cp -p {quote(media)} {quote(copy_media)}"
        f" && cp -p {quote(name)}.manifest.json {quote(copy)}.manifest.json"
        f" && sha256sum {quote(copy)} {quote(copy_media)} > {quote(copy)}.sha256 && chown shop: shop_1999*",
    )
    yield copy
    host.run(f"rm -f {BACKUPS}/shop_1999*")


def test_a_flipped_byte_fails_verify_and_restore_refuses(host, engine, run, copy_of_latest):
    path = f"{BACKUPS}/{copy_of_latest}"
    size = int(host.run(f"stat -c %s {path}").stdout)
    host.run_expect([0], f"printf '\\xff' | dd of={path} bs=1 seek={size // 2} conv=notrunc status=none")
    result = run("verify_db.sh", copy_of_latest)
    assert result.rc == 8, result.stderr
    assert "does not match its sha256" in result.stderr
    before = engine.sql(engine.checksum_sql)
    result = run("restore_db.sh", copy_of_latest, "--yes")
    assert result.rc == 8, result.stderr
    assert engine.sql(engine.checksum_sql) == before
    listing = run("list_db_backups.sh")
    assert listing.rc == 8
    assert any(copy_of_latest in line and "MISMATCH" in line for line in listing.stdout.splitlines())


def test_damaged_media_archive_fails_verify(host, run, copy_of_latest):
    media = copy_of_latest.split(".")[0] + ".media.tar." + copy_of_latest.rsplit(".", 1)[1]
    host.run_expect([0], f"printf 'XX' | dd of={BACKUPS}/{media} bs=1 seek=100 conv=notrunc status=none")
    result = run("verify_db.sh", copy_of_latest)
    assert result.rc == 8, result.stderr
    assert "does not match its sha256" in result.stderr


def test_verify_fails_when_the_restore_differs_from_the_manifest(host, run, copy_of_latest):
    path = f"{BACKUPS}/{copy_of_latest}.manifest.json"
    data = json.loads(host.file(path).content_string)
    table = next(k for k in data["tables"] if k.endswith("catalog_item"))
    data["tables"][table] += 1
    host.run_expect([0], f"printf '%s' {quote(json.dumps(data))} > {path}")
    result = run("verify_db.sh", copy_of_latest)
    assert result.rc == 10, result.stderr
    assert f"table {table}: 500 rows restored, the manifest says 501" in result.stderr


def test_restore_stops_at_the_first_sql_error(host, engine, run, copy_of_latest):
    if ".pgdump." in copy_of_latest:
        pytest.skip("a custom archive cannot be edited into a broken one; pg_restore runs with --exit-on-error")
    path = f"{BACKUPS}/{copy_of_latest}"
    tool = "gzip" if path.endswith(".gz") else "zstd -q"
    media = copy_of_latest.split(".")[0] + ".media.tar." + copy_of_latest.rsplit(".", 1)[1]
    host.run_expect(
        [0],
        f"cd {BACKUPS} && {{ {tool} -dc {copy_of_latest}; "
        "printf 'THIS IS NOT SQL;\\nCREATE TABLE after_the_error (id int);\\n'; }"
        f" | {tool} -c > broken && mv broken {copy_of_latest} && chown shop: {copy_of_latest}"
        f" && sha256sum {copy_of_latest} {media} > {copy_of_latest}.sha256",
    )
    before = engine.sql(engine.checksum_sql)
    safeties = host.run(f"ls {BACKUPS} | grep -c _safety").stdout
    result = run("restore_db.sh", copy_of_latest, "--yes")
    assert result.rc == 9, result.stderr
    # The cause is in the log file, the only record when cron throws stderr away.
    log = last_log_lines(host, "restore_db", 30)
    assert "stopped at the first error" in log
    assert re.search(r'syntax error at or near "THIS"|ERROR 1064', log), log
    assert f'database "{DB_NAME}" is unchanged' in log
    # Loaded beside the live database: the live one never saw the broken load.
    assert engine.sql(engine.checksum_sql) == before
    assert not engine.table_exists("after_the_error")
    assert host.run(f"ls {BACKUPS} | grep -c _safety").stdout == safeties, "no safety backup is needed"
    assert not engine.database_exists("djangoops_restore_shop")


# --- faults: each leaves the previous backup and latest as they were ------------------


def assert_untouched(host, before, after):
    assert after == before
    assert not host.run(f"ls -A {BACKUPS} | grep partial").stdout


def test_database_stopped(host, engine, run, backups_state):
    before = backups_state()
    engine.stop()
    try:
        result = run("backup_db.sh")
    finally:
        engine.start()
    assert result.rc == 4, result.stderr
    assert "cannot connect to database" in last_log_lines(host, "backup_db")
    assert_untouched(host, before, backups_state())


def test_wrong_password(host, engine, run, backups_state):
    before = backups_state()
    engine.set_password("not the password")
    try:
        result = run("backup_db.sh")
    finally:
        engine.set_password(PASSWORD)
    assert result.rc == 4, result.stderr
    log = last_log_lines(host, "backup_db")
    assert "cannot connect to database" in log
    assert "authentication failed" in log or "Access denied" in log
    assert_untouched(host, before, backups_state())


@pytest.fixture
def small_backup_dir(host):
    """db_backups on a tmpfs holding a copy of what it held, with 2 MiB to spare."""
    used = int(host.run(f"du -sk {BACKUPS}").stdout.split()[0])
    host.run_expect(
        [0],
        f"cp -a {BACKUPS} /root/backups-copy && mount -t tmpfs -o size={used + 2048}k,mode=0700 tmpfs {BACKUPS}"
        f" && cp -a /root/backups-copy/. {BACKUPS}/ && chown shop:shop {BACKUPS}",
    )
    yield
    host.run_expect([0], f"umount {BACKUPS} && rm -rf /root/backups-copy")


def test_backup_directory_full_is_refused_before_dumping(host, run, backups_state, small_backup_dir):
    before = backups_state()
    result = run("backup_db.sh")
    assert result.rc == 6, result.stderr
    assert "MiB free in" in last_log_lines(host, "backup_db")
    assert_untouched(host, before, backups_state())


def test_backup_directory_filling_up_while_writing(host, engine, run, backups_state, small_backup_dir):
    """The free-space check is lowered to 0 so the dump starts, then the disk fills."""
    # 4 MB of base64 of random bytes: zstd keeps it above the 2 MiB the tmpfs has left.
    host.run_expect([0], "head -c 3000000 /dev/urandom | base64 -w0 > /root/filler")
    engine.sql("INSERT INTO catalog_item (name, body, data, created) VALUES ('filler', '', NULL, '2020-01-01')")
    before = backups_state()
    try:
        # Streamed through the client's stdin: far too long for a command-line argument.
        host.run_expect(
            [0],
            '(printf "UPDATE catalog_item SET body = \'"; cat /root/filler; '
            f"printf \"' WHERE name = 'filler';\") | {engine.client_command()}",
        )
        result = run("backup_db.sh", "--min-free-mb", "0")
    finally:
        engine.sql("DELETE FROM catalog_item WHERE name = 'filler'")
    assert result.rc == 7, result.stderr
    assert "no space" in last_log_lines(host, "backup_db").lower()
    assert_untouched(host, before, backups_state())


def backup_between(host, run, setup, undo):
    """A backup with the free-space floor at 0, after the shell command SETUP, with UNDO run however it ends."""
    host.run_expect([0], setup)
    try:
        return run("backup_db.sh", "--min-free-mb", "0")
    finally:
        host.run(undo)


def test_backup_directory_filling_up_while_archiving_media(host, run, backups_state, small_backup_dir):
    """The dump fits in the 2 MiB left, 3 MB of random bytes in MEDIA_ROOT do not: the log names the cause."""
    before = backups_state()
    big = f"{HOME}/media/big.bin"
    result = backup_between(host, run, f"head -c 3000000 /dev/urandom > {big} && chown shop: {big}", f"rm -f {big}")
    assert result.rc == 7, result.stderr
    log = last_log_lines(host, "backup_db", 3)
    assert "No space left on device" in log, log
    assert_untouched(host, before, backups_state())


def test_free_space_check_counts_the_media_archive(host, run, backups_state, fresh_backup, small_backup_dir):
    """A newest set whose media archive is 3 MB (sparse: it takes no room) needs 4.5 MB to back up again."""
    name = fresh_backup
    newest = "shop_29991231T000000Z_daily." + name.split(".", 1)[1]
    media = newest.split(".")[0] + ".media.tar." + newest.rsplit(".", 1)[1]
    before = backups_state()
    result = backup_between(
        host,
        run,
        f"cd {BACKUPS} && cp {quote(name)} {newest} && truncate -s 3M {media} && chown shop: shop_2999*",
        f"rm -f {BACKUPS}/shop_2999*",
    )
    assert result.rc == 6, result.stderr
    assert "MiB free in" in last_log_lines(host, "backup_db", 3)
    assert_untouched(host, before, backups_state())


@pytest.fixture
def read_only_backup_dir(host):
    host.run_expect([0], f"mount --bind {BACKUPS} {BACKUPS} && mount -o remount,bind,ro {BACKUPS}")
    yield
    host.run_expect([0], f"umount {BACKUPS}")


@pytest.mark.parametrize("script", ["backup_db.sh", "verify_db.sh", "restore_db.sh"])
def test_read_only_backup_directory_is_named_in_the_log(host, run, read_only_backup_dir, script):
    result = run(script, "--yes") if script == "restore_db.sh" else run(script)
    assert result.rc == 3, result.stderr
    # The log is the only record when cron throws stderr away (MAILTO="").
    log = last_log_lines(host, script.removesuffix(".sh"), 2)
    assert "Read-only file system" in log and f"needs a writable {BACKUPS}" in log, log
    assert "unexpected failure" not in log


def start_blocked_backup(host, engine, seconds=60):
    """A backup whose dump waits on a table lock held by another session."""
    host.run_expect([0], f"nohup {engine.lock_table_command(seconds)} >/dev/null 2>&1 &")
    time.sleep(1)
    host.run_expect(
        [0],
        f"rm -f /root/blocked.rc; nohup sh -c '{COMMANDS}/backup_db.sh -q; echo $? > /root/blocked.rc' "
        ">/dev/null 2>&1 </dev/null &",
    )
    for _i in range(50):
        if host.run(f"pgrep -u shop -x {engine.dump_process}").rc == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"{engine.dump_process} did not start")


def wait_for_blocked_backup(host):
    for _i in range(100):
        rc = host.run("cat /root/blocked.rc").stdout.strip()
        if rc:
            return int(rc)
        time.sleep(0.2)
    pytest.fail("the blocked backup did not finish")


def test_two_runs_at_once_and_a_killed_dump(host, engine, run, backups_state):
    before = backups_state()
    start_blocked_backup(host, engine)
    try:
        second = run("backup_db.sh", "--lock-wait", "2")
        assert second.rc == 5, second.stderr
        assert "another run holds the lock" in second.stderr
        time.sleep(1)
        host.run_expect([0], f"pkill -KILL -u shop -x {engine.dump_process}")
        assert wait_for_blocked_backup(host) == 7
    finally:
        engine.release_locks()
    assert "killed by signal 9" in last_log_lines(host, "backup_db")
    assert_untouched(host, before, backups_state())


# --- secrets ---------------------------------------------------------------------------


def test_password_never_on_a_command_line_in_a_log_or_another_file(host, engine, variables):
    # A backup whose dump waits two seconds on a lock, sampled by ps all along.
    host.run_expect([0], f"nohup {engine.lock_table_command(2)} >/dev/null 2>&1 &")
    time.sleep(0.5)
    sampled, samples = sample_ps_during(host, "backup_db.sh -q")
    assert sampled.rc == 0, sampled.stderr
    assert engine.dump_process in samples, "ps never saw the dump running"
    assert PASSWORD not in samples
    assert "pä ss" not in samples
    # Everywhere a script, a client tool or the server could write it down; a
    # non-ASCII part and an ASCII part (JSON files escape the "ä").
    found = files_holding(host, "pä ss", "'d' $PATH `id`")
    allowed = {f"{HOME}/.secrets/database.json"}  # the project's own settings secret
    if variables["db_backup_credentials_source"] == "vars":
        allowed.add(f"{HOME}/.djangoops/{'pgpass' if engine.service == 'postgresql' else 'my.cnf'}")
    assert set(found) == allowed
    for path in allowed:
        assert host.file(path).mode == 0o600
    assert not host.run("ls /dev/shm | grep djangoops").stdout


def test_healthcheck_pings_and_metrics(host, engine, run):
    host.run("truncate -s 0 /var/log/hc-pings.log")
    assert run("backup_db.sh").rc == 0
    engine.stop()
    try:
        assert run("backup_db.sh").rc == 4
    finally:
        engine.start()
    pings = [line.split()[2] for line in host.file("/var/log/hc-pings.log").content_string.splitlines()]
    assert pings == ["/ping/backup/start", "/ping/backup/0", "/ping/backup/start", "/ping/backup/4"]
    metrics = host.file("/var/lib/djangoops-metrics/djangoops_shop_backup_db.prom").content_string
    values = {line.split("{")[0]: line.split()[-1] for line in metrics.splitlines() if not line.startswith("#")}
    assert values["djangoops_job_exit_code"] == "4"
    assert float(values["djangoops_job_last_success_timestamp_seconds"]) > time.time() - 600
    assert int(values["djangoops_backup_size_bytes"]) > 0


def test_retention_keeps_the_newest_of_each_kind(host, variables, run):
    for _i in range(3):
        assert run("backup_db.sh").rc == 0
    listing = run("list_db_backups.sh")
    assert listing.rc == 0, listing.stdout
    kinds = [line.split()[-2] for line in listing.stdout.splitlines()[1:]]
    if variables.get("db_backup_rotation") == "weekday":
        # Today's file was replaced each time, whole each time.
        assert kinds.count("weekday") == 1
    else:
        assert kinds.count("daily") == 2  # db_backup_keep_daily
        assert kinds.count("monthly") == 1
    assert kinds.count("safety") <= 2
    assert all(line.split()[-1] == "ok" for line in listing.stdout.splitlines()[1:])
