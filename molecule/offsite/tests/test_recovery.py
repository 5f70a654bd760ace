"""The disaster drill: the Debian 12 server (PostgreSQL) is destroyed, volumes and all; a
fresh server with the same name starts from the bare image, gets the site's code and an
empty database server, and playbooks/recover.yml brings back its data from the off-site
repository. The recovered site must serve the same rows (read through Django over HTTP)
and the same media files. Runs last (file order), once, without the per-server `host`."""

import json
import os
import re
import time

import fresh_server
from db_backup.backup_helpers import ROOT, PostgreSQL, playbook, recovery_vars
from installed_code import DB_COMMANDS
from offsite_helpers import plant_set, set_time
from planted_code import PLANTED_LOG, plant, planted_by_root

SERVER = "offsite-debian12"
IMAGE = f"{os.environ.get('DJANGOOPS_IMAGE_PREFIX', 'djangoops-test')}/server:debian12"
# The site's answer, read with the server's own Python (no HTTP client is installed
# for the tests: the roles need none).
SITE = (
    "python3 -c 'import sys, urllib.request; "
    'sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:8000/catalog/checksum/", timeout=30).read().decode())\''
)
MEDIA = "cd /home/shop/media && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum"


def server(inventory=None):
    return fresh_server.server(SERVER, inventory)


def served(host):
    result = host.run(SITE)
    return json.loads(result.stdout) if result.rc == 0 else None


def backup_now(host):
    backup = host.run("/home/shop/commands/backup_db.sh </dev/null")
    assert backup.rc == 0, backup.stderr
    return host.run_expect([0], "readlink /home/shop/db_backups/latest").stdout.strip()


def test_disaster_drill(tmp_path):
    a = server()
    assert served(a)["items"] == 500
    older = backup_now(a)
    # The data moves on after that set; the newest set holds it.
    PostgreSQL(a).sql("DELETE FROM catalog_item WHERE id > 490")
    before, media = served(a), a.run_expect([0], MEDIA).stdout
    assert before and before["items"] == 490, before
    assert media.count("\n") == 3, media
    name = backup_now(a)
    # Then an intruder on A, with A's own key and password, plants a second snapshot under
    # the newest set's name holding the older data (its checksum file and manifest to match),
    # and a set dated years ahead: by what snapshots claim, the one would be the newest set's
    # copy and the other the newest set.
    plant_set(a, name, older, set_time(name))
    ahead = re.sub(r"_\d{8}T\d{6}Z_", "_20300101T000000Z_", name)
    plant_set(a, ahead, older, set_time(ahead))
    # The yardstick: the same set restored locally, on the same server.
    started = time.monotonic()
    local = a.run(f"/home/shop/commands/restore_db.sh {name} --yes --with-media </dev/null")
    local_seconds = time.monotonic() - started
    assert local.rc == 0, local.stderr
    assert served(a) == before

    # Server A is lost; B starts from the image as a new machine would, with
    # the test bed's access key, at an address of its own.
    inventory = fresh_server.replace(SERVER, IMAGE, tmp_path)
    b = server(inventory)
    b.run_expect([0, 1], "systemctl is-system-running --wait")
    assert b.run("test -e /home/shop/db_backups").rc == 1, "B must start without A's files"
    deployed = playbook(
        "molecule/offsite/stand_up_site.yml", "--limit", SERVER, "-e", "test_site_data=false", inventory=inventory,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    assert served(b) is None, "B's site must have no data before the recovery"
    # The site runs as the project user: whatever it planted before the recovery, in
    # commands/, the previous layout's commands/lib or its shell's start-up files, root
    # never runs (recover.yml replaces the first two before it runs a command).
    plant(b)

    # B is up: the recovery, from nothing but the inventory and the vault.
    # The recovered server schedules its backups again (recover.yml applies the schedule
    # role): every minute here, so that the test sees the next one run.
    extra = recovery_vars(tmp_path, schedule_backup_time="* * * * *")
    started = time.monotonic()
    recover = playbook(
        "playbooks/recover.yml", "-e", f"target={SERVER}", "-e", "@molecule/shared/playbooks/vars/backup.yml",
        "-e", f"@{extra}", inventory=inventory,
    )  # fmt: skip
    assert recover.returncode == 0, recover.stdout[-4000:]
    # The site (restarting every second while its database was missing) gets
    # 60 s from the playbook's end, however long the playbook took.
    recovered = time.monotonic()
    after = served(b)
    while after != before and time.monotonic() - recovered < 60:
        time.sleep(0.5)
        after = served(b)
    recovery_seconds = time.monotonic() - started
    assert after == before, "recovered the planted data, not the genuine set's"
    assert b.run_expect([0], MEDIA).stdout == media
    assert name in recover.stdout
    # The report names what the backup host's record refused.
    said = " ".join(recover.stdout.split())
    assert f"of {name} arrived" in said and "a second copy under the same name is not trusted" in said, said[-4000:]
    assert f"of {ahead} is dated 2030-01-01T00:00:00Z, after it arrived" in said
    assert not planted_by_root(b.run_expect([0], f"cat {PLANTED_LOG}").stdout)
    assert b.run("test -e /home/shop/commands/lib").rc == 1
    links = b.run_expect([0], "find /home/shop/commands -mindepth 1 -printf '%y %f %l\\n'").stdout.splitlines()
    assert sorted(links) == sorted(
        f"l {n}.sh /usr/local/lib/djangoops/shop/bin/{n}.sh" for n in (*DB_COMMANDS, "clear_sessions")
    )
    # The start-up files' plants were in place and live: a login shell of the user runs them.
    b.run_expect([0], "runuser -l shop -c true")
    ran = b.run_expect([0], f"cat {PLANTED_LOG}").stdout
    assert ran and not planted_by_root(ran), ran
    # The server backs itself up again, on schedule, and off-site: cron's next minute takes a
    # set of the recovered data and pushes it.
    assert "scheduled with cron: backup * * * * *, the next backup is pushed off-site" in recover.stdout
    deadline = time.monotonic() + 150
    while True:
        latest = b.run("readlink /home/shop/db_backups/latest").stdout.strip()
        log = b.run("cat /home/shop/logs/backup_db.log").stdout
        if latest != name and f"pushed {latest} " in log:
            break
        assert time.monotonic() < deadline, f"no scheduled backup after the recovery: latest {latest}\n{log}"
        time.sleep(2)
    manifests = [
        json.loads(b.run_expect([0], f"cat /home/shop/db_backups/{set_name}.manifest.json").stdout)
        for set_name in (name, latest)
    ]
    assert manifests[1]["tables"] == manifests[0]["tables"], manifests  # the recovered rows, backed up
    # Recovered again, naming the set: the genuine one again, not the copy planted under its name.
    # Cron runs on (a backup every minute, two daily sets kept): recover.yml fetches and
    # restores under one lock, so no backup between the two can prune the fetched set.
    again = playbook(
        "playbooks/recover.yml", "-e", f"target={SERVER}", "-e", "@molecule/shared/playbooks/vars/backup.yml",
        "-e", f"@{extra}", "-e", f"backup={name}", inventory=inventory,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-4000:]
    assert "a second copy under the same name is not trusted" in " ".join(again.stdout.split())
    deadline = time.monotonic() + 60
    while served(b) != before:
        assert time.monotonic() < deadline, "the recovery by name did not bring back the genuine set"
        time.sleep(0.5)
    # recover.yml's own figure: the fetch (download and checks) and the restore, one command.
    took = re.search(r"recovered in (\d+):(\d+):([\d.]+) \(fetch and restore", recover.stdout)
    assert took, recover.stdout[-2000:]
    hours, minutes, seconds = (float(x) for x in took.groups())
    data_seconds = hours * 3600 + minutes * 60 + seconds
    report = {
        "set": name,
        "recovery_seconds_from_b_up_to_b_serving": round(recovery_seconds, 1),
        "fetch_and_restore_seconds": round(data_seconds, 1),
        "local_restore_seconds": round(local_seconds, 1),
        "fetch_and_restore_vs_local_restore": round(data_seconds / local_seconds, 2),
    }
    (ROOT / ".cache").mkdir(exist_ok=True)
    (ROOT / ".cache" / "recovery-drill.json").write_text(json.dumps(report) + "\n")
    print(f"\nDISASTER DRILL: {report}")
