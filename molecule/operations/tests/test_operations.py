"""playbooks/backup.yml, restore.yml and verify.yml, run from the controller as a user
runs them, against the two sites site.yml set up. The tests run in file order."""

import hashlib
import json
import os
import stat
import subprocess

import pytest
import testinfra
from bare_inventory import bare_inventory
from planted_code import PLANTED_LOG, plant, planted_by_root, unplant
from shop_project import quote

ROOT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE") or f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/inventory"
PG_HOST, MARIADB_HOST = "operations-debian12", "operations-debian13"
BACKUPS = "/home/shop/db_backups"


@pytest.fixture(autouse=True)
def _controller_tests_run_once(host):
    # The playbooks are run from the controller against both hosts; once is enough.
    if host.backend.get_hostname() != PG_HOST:
        pytest.skip("runs the playbooks from the controller; once, from the first host's test run")


def playbook(name, *extra, umask=-1):
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, f"playbooks/{name}", *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        umask=umask,
    )
    return result.returncode, result.stdout + result.stderr


def items(host):
    """The site's catalogue, seen through its own Django: row count and a checksum."""
    code = (
        "import hashlib, json; from catalog.models import Item; "
        "rows = list(Item.objects.order_by('id').values_list('id', 'name')); "
        "print(json.dumps([len(rows), hashlib.md5(repr(rows).encode()).hexdigest()]))"
    )
    result = host.run(
        "cd /home/shop/src/shop && runuser -u shop -- /home/shop/env/bin/python manage.py shell -c %s", code
    )
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def damage(host):
    result = host.run(
        "cd /home/shop/src/shop && runuser -u shop -- /home/shop/env/bin/python manage.py shell -c %s",
        "from catalog.models import Item; Item.objects.filter(id__gt=300).delete()",
    )
    assert result.rc == 0, result.stderr


@pytest.fixture(scope="module")
def mariadb():
    return testinfra.get_host(f"ansible://{MARIADB_HOST}?ansible_inventory={INVENTORY}")


def test_backup_fetches_each_hosts_newest_set_with_its_checksum_verified(host, mariadb, tmp_path):
    """Each set arrives whole, and closed to others as on the server: files 0600 in 0700
    directories (the fetch directory too: the play creates it), under a usual umask."""
    fetch_dir = tmp_path / "backups"
    rc, out = playbook("backup.yml", "-e", "fetch=true", "-e", f"fetch_dir={fetch_dir}", umask=0o022)
    assert rc == 0, out
    assert stat.S_IMODE(fetch_dir.stat().st_mode) == 0o700
    for server in (host, mariadb):
        name = server.run(f"readlink {BACKUPS}/latest").stdout.strip()
        fetched = fetch_dir / server.backend.get_hostname()
        assert stat.S_IMODE(fetched.stat().st_mode) == 0o700
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in fetched.iterdir()}
        assert len(modes) == 4 and set(modes.values()) == {0o600}, modes  # dump, media, .sha256, manifest
        sums = (fetched / f"{name}.sha256").read_text().splitlines()
        assert len(sums) == 2  # the dump and the media archive
        for line in sums:
            digest, filename = line.split()
            assert hashlib.sha256((fetched / filename).read_bytes()).hexdigest() == digest
            assert server.run(f"sha256sum {BACKUPS}/{filename}").stdout.split()[0] == digest
        assert json.loads((fetched / f"{name}.manifest.json").read_text())


def test_restore_refuses_without_the_confirmation(host):
    damage(host)
    damaged = items(host)
    rc, out = playbook("restore.yml", "-e", f"target={PG_HOST}")
    assert rc != 0
    assert "confirm_database is not set" in out, out
    assert items(host) == damaged


def test_restore_refuses_more_than_one_host(host):
    damaged = items(host)
    rc, out = playbook("restore.yml", "-e", "target=django", "-e", "confirm_database=shop")
    assert rc != 0
    assert "restores one host at a time" in out, out
    assert items(host) == damaged


def test_restore_refuses_a_target_that_names_no_host(host):
    damaged = items(host)
    for extra in ([], ["-e", "target=operations-debian14"]):
        rc, out = playbook("restore.yml", "-e", "confirm_database=shop", *extra)
        assert rc != 0
        assert "restores one host at a time" in out, out
    assert items(host) == damaged


def test_restore_refuses_a_name_that_is_not_the_database(host):
    damaged = items(host)
    rc, out = playbook("restore.yml", "-e", f"target={PG_HOST}", "-e", "confirm_database=shop_old")
    assert rc != 0
    assert "the confirmation did not match the database name; nothing was changed" in out, out
    assert items(host) == damaged


def test_restore_brings_the_data_back_and_says_what_and_how_long(host):
    damaged = items(host)
    rc, out = playbook("restore.yml", "-e", f"target={PG_HOST}", "-e", "confirm_database=shop")
    assert rc == 0, out
    restored = items(host)
    assert restored[0] == 500 and damaged[0] == 300
    assert "restored shop_" in out and 'into database "shop" in ' in out, out
    assert "finished in" in out, out


def test_verify_passes_everywhere_then_names_the_host_that_fails(host, mariadb):
    rc, out = playbook("verify.yml")
    assert rc == 0, out
    assert f"{PG_HOST}: exit 0" in out and f"{MARIADB_HOST}: exit 0" in out, out
    # A damaged newest backup on the MariaDB site only.
    name = mariadb.run(f"readlink {BACKUPS}/latest").stdout.strip()
    mariadb.run_expect([0], f"cp -p {BACKUPS}/{name} /root/good-copy")
    # Byte 100 inverted: writing a fixed byte there changes nothing when the byte is that one
    # already (one set in 256: a CI run met it).
    flip = "f = open(sys.argv[1], 'r+b'); f.seek(100); b = f.read(1)[0]; f.seek(100); f.write(bytes([b ^ 0xFF]))"
    mariadb.run_expect([0], f"python3 -c {quote('import sys; ' + flip)} {BACKUPS}/{name}")
    try:
        rc, out = playbook("verify.yml")
    finally:
        mariadb.run_expect([0], f"mv -f /root/good-copy {BACKUPS}/{name}")
    assert rc != 0
    assert f"verify failed on: {MARIADB_HOST} " in out, out
    assert f"{PG_HOST}: exit 0" in out and f"{MARIADB_HOST}: exit 8" in out, out


def report(tmp_path, *extra):
    out = tmp_path / "report.json"
    rc, text = playbook("report.yml", "-e", f"report_json={out}", *extra)
    return rc, text, json.loads(out.read_text()) if out.exists() else None


def test_report_names_the_stale_and_the_unreachable_server_and_fails(host, mariadb, tmp_path):
    """Three servers: the two sites, the MariaDB one held to a one-second allowance (its newest
    backup, minutes old, is then stale), and a third that nothing answers for."""
    # Test restores that pass on both (the test above left the MariaDB one's last at exit 8).
    rc, out = playbook("verify.yml")
    assert rc == 0, out
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps({"django": {"hosts": {
        "operations-gone": {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_user": "root"},
        MARIADB_HOST: {"report_backup_max_age": 1},
    }}}))  # fmt: skip
    rc, out, data = report(tmp_path, "-i", str(fleet))
    assert rc != 0, out
    assert data["ok"] is False
    assert data["stale"] == [MARIADB_HOST] and data["unreachable"] == ["operations-gone"], data
    assert data["failing"] == data["error"] == []
    rows = {row["host"]: row for row in data["hosts"]}
    assert list(rows) == [PG_HOST, MARIADB_HOST, "operations-gone"]
    newest = mariadb.run(f"readlink {BACKUPS}/latest").stdout.strip()
    assert rows[MARIADB_HOST]["newest"]["name"] == newest
    assert rows[MARIADB_HOST]["problems"][0].startswith("newest good backup ")
    assert rows[MARIADB_HOST]["problems"][0].endswith(" old (allowed 1s)")
    assert rows["operations-gone"]["problems"][0].startswith("unreachable: ")
    assert f"stale: {MARIADB_HOST}; unreachable: operations-gone" in out, out
    # The table names both, with the state in its last column (the debug output's lines as
    # YAML or JSON list items).
    lines = [line.strip().removeprefix("- ").strip("'\",") for line in out.splitlines()]
    assert any(line.startswith(MARIADB_HOST) and line.endswith("STALE") for line in lines), out
    assert any(line.startswith("operations-gone") and line.endswith("UNREACHABLE") for line in lines), out


def test_report_passes_when_every_server_is_fresh(host, mariadb, tmp_path):
    rc, out, data = report(tmp_path)
    assert rc == 0, out
    assert data["ok"] is True and [row["host"] for row in data["hosts"]] == [PG_HOST, MARIADB_HOST]
    for row, server in zip(data["hosts"], (host, mariadb), strict=True):
        assert row["state"] == "ok", row
        assert row["newest"]["name"] == server.run(f"readlink {BACKUPS}/latest").stdout.strip()
        assert row["newest"]["size_bytes"] == int(server.run(f"stat -Lc %s {BACKUPS}/latest").stdout)
        # verify.yml above took a test restore on each; the schedule allows a backup a day.
        assert 0 <= row["test_restore_age_seconds"] < 3600
        assert row["backup_max_age_seconds"] == 86400 + 3600
        assert row["disk"]["free_bytes"] > 0


# The blog: one more inventory entry for the PostgreSQL server (reached as the
# scenario reaches it).
BLOG = {
    "project_name": "blog",
    "db_backup_engine": "postgresql",
    "db_backup_credentials_source": "vars",
    "db_backup_database_name": "blog",
    "db_backup_database_user": "blog",
    "db_backup_database_password": "blog-password",
    "db_backup_database_host": "127.0.0.1",
    "db_backup_media_dir": "",
    "schedule_backend": "cron",
    # The blog has no Django code on this server: nothing would run clearsessions.
    "schedule_clear_sessions_state": "absent",
    "schedule_backup_time": "30 2 * * *",
}


def test_code_the_project_user_plants_never_runs_as_root(host, mariadb):
    """The playbooks start root's own entry points, which become the project user before
    they read anything that user can write; the timers run their commands as that user.
    Code planted in commands/, in the previous layout's commands/lib and in the shell's
    start-up files is never run by root: what did run of it (the timers' links) ran as
    the project user."""
    for server in (host, mariadb):
        plant(server)
    try:
        rc, out = playbook("backup.yml")
        assert rc == 0, out
        rc, out = playbook("verify.yml")
        assert rc == 0, out
        rc, out = playbook("restore.yml", "-e", f"target={PG_HOST}", "-e", "confirm_database=shop")
        assert rc == 0, out
        assert "restored shop_" in out, out
        # The MariaDB server schedules with systemd: its units start commands/<job>.sh.
        mariadb.run_expect([0], "systemctl start djangoops-shop-backup_db.service")
        logs = {server.backend.get_hostname(): server.run(f"cat {PLANTED_LOG}").stdout for server in (host, mariadb)}
    finally:
        for server in (host, mariadb):
            unplant(server)
    shop_uid = host.run_expect([0], "id -u shop").stdout.strip()
    assert not [line for text in logs.values() for line in planted_by_root(text)], logs
    # What the timer started ran, as the project user: the plant was live, and harmless.
    assert f"{shop_uid} /home/shop/commands/backup_db.sh" in logs[MARIADB_HOST], logs


def test_a_second_project_on_the_same_server_gets_its_own_everything(host, tmp_path):
    """One more inventory entry pointing at the PostgreSQL server: site.yml gives the
    blog project its own user, scripts, credentials, backups and cron file, and leaves
    the shop's alone."""
    sql = "CREATE ROLE blog LOGIN PASSWORD 'blog-password'; CREATE DATABASE blog OWNER blog;"
    host.run_expect([0], "printf '%%s' %s | runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1", sql)
    shop_cron = host.file("/etc/cron.d/djangoops-shop").content_string
    shop_latest = host.run(f"readlink {BACKUPS}/latest").stdout
    inventory = bare_inventory(tmp_path, PG_HOST, "django", alias="operations-blog", **BLOG)
    rc, out = playbook("../site.yml", "-i", inventory, "--limit", "operations-blog")
    assert rc == 0, out
    host.run_expect([0], "/home/blog/commands/backup_db.sh")
    assert host.run("readlink /home/blog/db_backups/latest").stdout.startswith("blog_")
    assert "30 2 * * * blog /home/blog/commands/backup_db.sh" in host.file("/etc/cron.d/djangoops-blog").content_string
    assert host.file("/etc/cron.d/djangoops-shop").content_string == shop_cron
    assert host.run(f"readlink {BACKUPS}/latest").stdout == shop_latest
    assert host.file("/home/blog/db_backups").user == "blog"
    # The metrics directory both projects name stays the first one's (it was there).
    assert host.file("/var/lib/djangoops-metrics").user == "shop"


# Every secret site.yml takes, changed; a key kept out of the output is searched for by a
# part no other text holds.
CHANGED_SECRETS = {
    "db_backup_database_password": "diff-secret-db-password",
    "db_backup_healthcheck_urls": {
        script: f"https://hc.example.test/ping/diff-secret-hc-{script}"
        for script in ("backup", "verify", "restore", "offsite_check")
    },
    "schedule_clear_sessions_healthcheck_url": "https://hc.example.test/ping/diff-secret-hc-sessions",
    "schedule_jobs": [
        {
            "name": "report",
            "time": "15 5 * * *",
            "command": "python manage.py check",
            "healthcheck_url": "https://hc.example.test/ping/diff-secret-hc-job",
        }
    ],
    "db_backup_offsite_password": "diff-secret-restic-password",
    "db_backup_offsite_repositories": [
        {
            "name": "vault",
            "type": "ssh",
            "host": "backup.example.test",
            "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\ndiff-secret-ssh-key\n"
            "-----END OPENSSH PRIVATE KEY-----\n",
            "known_hosts": "backup.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiffTestHostKeyOnly",
        },
        {
            "name": "bucket",
            "type": "s3",
            "url": "s3:https://s3.example.test/shop",
            "access_key_id": "diffaccesskey",
            "secret_access_key": "diff-secret-s3-key",
        },
    ],
}


def test_diff_mode_shows_changes_but_no_secret(host, tmp_path):
    """`--check --diff` of site.yml with every secret changed, and one schedule time, so
    that there is a diff to show: the output shows the new time and none of the secrets,
    new or old (the inventory's database password). On the newest ansible-core of the
    suite's matrix only, as django_logging's (a run of site.yml costs a converge)."""
    if os.environ.get("DJANGOOPS_MATRIX") != "newest":
        pytest.skip("runs on the newest ansible-core of the matrix (tools/test's SCENARIO@VERSION steps)")
    extra = tmp_path / "secrets.json"
    extra.write_text(json.dumps({**CHANGED_SECRETS, "schedule_backup_time": "17 3 * * *"}))
    extra.chmod(0o600)
    rc, out = playbook("../site.yml", "--check", "--diff", "-e", f"@{extra}")
    assert rc == 0, out
    # The cron file's diff (PostgreSQL site) and the timer's (MariaDB site).
    assert "+17 3 * * * shop " in out, out
    assert "OnCalendar=*-*-* 03:17:00" in out, out
    leaked = [word for word in ("diff-secret", "correct horse", "$battery") if word in out]
    assert not leaked, out


def test_a_second_site_run_changes_nothing(host):
    """After backups, restores and a second project on the server, site.yml still changes
    nothing. On the oldest ansible-core of the suite's matrix only (Molecule's idempotence
    step runs on both; the newest runs the --diff test instead, each a run of site.yml)."""
    if os.environ.get("DJANGOOPS_MATRIX") == "newest":
        pytest.skip("runs on the oldest ansible-core of the matrix; the newest runs the --diff test")
    rc, out = playbook("../site.yml")
    assert rc == 0, out
    recap = [line for line in out.splitlines() if " : ok=" in line]
    assert len(recap) == 2 and all("changed=0" in line and "failed=0" in line for line in recap), out
