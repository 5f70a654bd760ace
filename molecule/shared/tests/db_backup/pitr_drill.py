"""The steps of the point-in-time scenarios' last-minute drill (pitr, pitr_mariadb): the
refusals of recover.yml -e pitr=true on a live server, and the loss of a server, its fresh
replacement and its recovery."""

import os
import time
from pathlib import Path

import fresh_server
from db_backup.backup_helpers import playbook, recovery_vars

IMAGE = "{prefix}/server:{release}"
RESULTS = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".cache" / os.environ.get("DJANGOOPS_RESULTS_DIR", "results")
RPO_SECONDS = 60


def recover(name, tmp_path, inventory=None, **extra):
    """playbooks/recover.yml -e pitr=true aimed at NAME, with the site's vars and EXTRA."""
    return playbook(
        "playbooks/recover.yml", "-e", f"target={name}", "-e", "@molecule/shared/playbooks/vars/backup.yml",
        "-e", f"@{recovery_vars(tmp_path, pitr=True, **extra)}", inventory=inventory,
    )  # fmt: skip


def assert_refused(host, tmp_path, already):
    """recover.yml -e pitr=true aimed at a live server (a wrong -e target) or with another
    database's name: refused, saying ALREADY or naming the confirmation, nothing changed."""
    name = host.backend.get_hostname()
    for extra, said in (({}, already), ({"confirm_database": "another"}, "The confirmation 'another' is not the")):
        refused = recover(name, tmp_path, **extra)
        output = " ".join((refused.stdout + refused.stderr).split())  # ansible-core 2.19+ says failures on stderr
        assert refused.returncode != 0 and said in output and "Nothing was changed." in output, output[-3000:]


def lose_and_recover(host, tmp_path, written, leftover):
    """The server destroyed now (WRITTEN: a callable, the rows written so far), a fresh one of
    the same name with the site's database server from the test bed's deployment, and
    recover.yml -e pitr=true on it: (the new server, the playbook's result, its seconds, the
    moment of the loss, the rows written before it). LEFTOVER: a path the new server must not
    have."""
    name = host.backend.get_hostname()
    release = name.rsplit("-", 1)[1]
    image = IMAGE.format(prefix=os.environ.get("DJANGOOPS_IMAGE_PREFIX", "djangoops-test"), release=release)
    s3_address = host.run_expect([0], "getent hosts pitr-s3").stdout.split()[0]
    before = written()
    assert before > 100, before
    lost_at = time.time()
    inventory = fresh_server.replace(name, image, tmp_path, "--add-host", f"pitr-s3:{s3_address}")
    new = fresh_server.server(name, inventory)
    new.run_expect([0, 1], "systemctl is-system-running --wait")
    assert new.run(f"test -e {leftover}").rc == 1, "the new server must start without the old one's files"
    # The site's code and an empty database server, from the deployment (the test bed's).
    deployed = playbook("molecule/shared/playbooks/prepare_backup.yml", "--limit", name, inventory=inventory)
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    started = time.monotonic()
    result = recover(name, tmp_path, inventory=inventory)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    return new, result, took, lost_at, before


def record(file_name, line):
    """LINE appended to the results' FILE_NAME (a passing test's output is not shown)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / file_name, "a", encoding="utf-8") as figures:
        figures.write(line + "\n")
