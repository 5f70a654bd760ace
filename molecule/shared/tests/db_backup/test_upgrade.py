"""The code as static files and the values as rendered ones: what a server holds after a
converge, whether it was fresh or had the previous version (the backup_postgresql scenario
converges its servers with the last version whose scripts were templates first, and backs
up with it: molecule/shared/playbooks/tasks/previous_version.yml)."""

import re

import pytest
from backup_helpers import BACKUPS
from installed_code import DB_BACKUP
from shop_project import COMMANDS

PREVIOUS = "/root/previous-version"
VALUES = ("lib/project.conf", "lib/db.conf", "lib/offsite.conf")


def test_commands_hold_exactly_this_versions_files(host):
    """Nothing the previous version wrote is left behind, and nothing is missing."""
    listing = host.run_expect([0], f"cd {COMMANDS} && find . -mindepth 1 -not -type d | sort").stdout.split()
    assert listing == sorted(f"./{name}" for name in (*DB_BACKUP, *VALUES))


def test_a_script_of_the_previous_version_runs_on_this_library(host):
    """A job started during the upgrade runs the old (templated) script, which sources the
    library by its full path with no LIB_DIR: the new library must serve it."""
    if not host.file(PREVIOUS).exists:
        pytest.skip("this server was not converged with the previous version first")
    before = host.run(f"readlink {BACKUPS}/latest").stdout.strip()
    result = host.run("/opt/previous-version-scripts/backup_db.sh </dev/null")
    assert result.rc == 0, result.stderr
    after = host.run(f"readlink {BACKUPS}/latest").stdout.strip()
    assert after and after != before


def test_a_set_the_previous_version_took_verifies_and_restores(host, run, engine):
    if not host.file(PREVIOUS).exists:
        pytest.skip("this server was not converged with the previous version first")
    files = host.run_expect([0], f"ls {PREVIOUS}").stdout.split()
    sets = [n for n in files if re.fullmatch(r"shop_\d{8}T\d{6}Z_[a-z]+\.(pgdump|sql)\.(zst|gz)", n)]
    assert len(sets) == 1, files
    host.run_expect([0], f"cp -p {PREVIOUS}/* {BACKUPS}/")
    assert run("verify_db.sh", sets[0]).rc == 0
    engine.sql(engine.damage_sql)
    result = run("restore_db.sh", sets[0], "--yes")
    assert result.rc == 0, result.stderr
    assert int(engine.sql("SELECT count(*) FROM catalog_item")) == 500
