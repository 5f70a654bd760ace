"""What a server holds after a converge, whether it was fresh or had the previous version
(the backup_postgresql scenario converges its servers with the last version whose code
and values lived in the project user's commands/lib first, and backs up with it:
molecule/shared/playbooks/tasks/previous_version.yml). The code and values are root's
now; commands/ holds only links to the entry points."""

import re

import pytest
from backup_helpers import BACKUPS
from installed_code import CONFIG, DB_BACKUP, DB_COMMANDS, ENGINE
from shop_project import COMMANDS

PREVIOUS = "/root/previous-version"
VALUES = ("project.json", "database.json", "offsite.json")


def listing(host, directory):
    """The files under DIRECTORY (the byte-code cache left out: root's, made at install)."""
    command = f"cd {directory} && find . -mindepth 1 -not -type d -not -name '*.pyc' | sort"
    return host.run_expect([0], command).stdout.split()


def test_commands_holds_only_links_to_this_versions_entry_points(host):
    """Nothing the previous version wrote is left behind (its lib/ was the project user's,
    sourced by root), and nothing is missing."""
    assert listing(host, COMMANDS) == sorted(f"./{name}.sh" for name in DB_COMMANDS)
    links = host.run_expect([0], f"find {COMMANDS} -mindepth 1 -type l -printf '%f %l\\n'").stdout.splitlines()
    assert sorted(links) == sorted(f"{name}.sh {ENGINE}/bin/{name}.sh" for name in DB_COMMANDS)


def test_roots_directories_hold_exactly_this_versions_files(host):
    assert listing(host, ENGINE) == sorted(f"./{name}" for name in DB_BACKUP)
    assert listing(host, CONFIG) == sorted(f"./{name}" for name in VALUES)
    modes = host.run_expect(
        [0], f"stat -c '%U:%G %a %n' {ENGINE} {ENGINE}/bin {ENGINE}/lib {ENGINE}/lib/djangoops {CONFIG} {CONFIG}/*"
    )
    assert sorted(modes.stdout.splitlines()) == sorted(
        [f"root:root 755 {ENGINE}{sub}" for sub in ("", "/bin", "/lib", "/lib/djangoops")]
        + [f"root:shop 750 {CONFIG}"]
        + [f"root:shop 640 {CONFIG}/{name}" for name in VALUES]
    )


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
