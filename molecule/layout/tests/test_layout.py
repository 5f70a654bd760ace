"""The project role's outcome on both servers, and its refusal of bad input."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from bare_inventory import apply_role, apply_role_cases, bare_inventory

ROOT = os.environ["MOLECULE_PROJECT_DIRECTORY"]

# What each server must look like after converge: (path, owner, group, mode).
EXPECTED = {
    "layout-debian12": {
        "user": ("shop", 1500, "shop", "/home/shop", "/bin/sh"),
        "dirs": [
            ("/home/shop", "shop", "shop", 0o755),
            ("/home/shop/commands", "shop", "shop", 0o750),
            ("/home/shop/db_backups", "shop", "shop", 0o700),
            ("/home/shop/logs", "shop", "shop", 0o750),
        ],
    },
    "layout-debian13": {
        "user": ("blogapp", None, "www-blog", "/srv/blog", "/bin/bash"),
        "dirs": [
            ("/srv/blog", "blogapp", "www-blog", 0o750),
            ("/srv/blog/commands", "blogapp", "www-blog", 0o750),
            ("/srv/blog/db_backups", "blogapp", "www-blog", 0o700),
            ("/var/log/blog", "blogapp", "www-blog", 0o750),
        ],
    },
}


@pytest.fixture
def expected(host):
    return EXPECTED[host.backend.get_hostname()]


def test_user_and_group(host, expected):
    name, uid, group, home, shell = expected["user"]
    user = host.user(name)
    assert user.exists
    assert user.group == group
    assert user.home == home
    assert user.shell == shell
    if uid is not None:
        # An existing account is used as it is, never re-created.
        assert user.uid == uid


@pytest.mark.parametrize("index", range(4))
def test_directory_owner_group_mode(host, expected, index):
    path, owner, group, mode = expected["dirs"][index]
    d = host.file(path)
    assert d.is_directory, path
    assert (d.user, d.group, d.mode) == (owner, group, mode), path


def test_project_user_writes_its_directories(host, expected):
    name = expected["user"][0]
    for path, *_rest in expected["dirs"][1:]:
        probe = f"{path}/.write-probe"
        host.run_expect([0], f"sudo -u {name} touch {probe}")
        host.run_expect([0], f"rm -f {probe}")


def test_others_cannot_read_backups(host, expected):
    backups = expected["dirs"][2][0]
    result = host.run(f"sudo -u nobody ls {backups}")
    assert result.rc != 0
    assert "Permission denied" in result.stderr


# --- bad input ---------------------------------------------------------------

BAD_INPUT = {
    "missing-name": ({}, "project_name"),
    "name-not-identifier": ({"project_name": "my-project"}, "project_name"),
    "relative-home": ({"project_name": "x", "project_home": "srv/x"}, "project_home"),
    "mode-not-string": ({"project_name": "x", "project_logs_mode": 750}, "project_logs_mode"),
    "backups-open": ({"project_name": "x", "project_backups_mode": "0755"}, "project_backups_mode"),
    "bad-user-name": ({"project_name": "x", "project_user": "Bad User"}, "project_user"),
    "not-bool": ({"project_name": "x", "project_user_create": "maybe"}, "project_user_create"),
    "missing-user-not-created": ({"project_name": "ghost", "project_user_create": False}, "project_user"),
}


@pytest.fixture(scope="module")
def bad_input_runs(host, tmp_path_factory):
    """Every BAD_INPUT case applied in one ansible-playbook run."""
    hostname = host.backend.get_hostname()
    if hostname != "layout-debian12":
        pytest.skip("validation does not depend on the platform; one host is enough")
    cases = {case: extra_vars for case, (extra_vars, _message) in BAD_INPUT.items()}
    return apply_role_cases(
        hostname, "djangoops.maintenance.project", cases, tmp_path_factory.mktemp("bad-input"), gather_facts=False
    )


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_fails_naming_the_variable(host, bad_input_runs, case):
    """Bad values stop the play before it changes anything, and say which variable is wrong."""
    rc, outputs, recap = bad_input_runs
    output = outputs.get(case, "")
    assert f"case {case} refused" in output, output or recap
    assert BAD_INPUT[case][1] in output, output
    assert rc == 0 and "changed=0" in recap and "failed=0" in recap, recap
    assert not host.file("/home/x").exists


# --- the README's example on a `django-admin startproject` site ---------------
# prepare.yml stood up myproject (one settings.py, DATABASES on PostgreSQL) on
# Debian 13. templates/examples/maintenance.yml is the README's example.

EXAMPLE = Path(ROOT) / "templates/examples/maintenance.yml"
SITE = "layout-debian13"
PACKAGE_LINE = "project_settings_module: myproject.settings.production"
HOME = "/home/myproject"


def run_example(tmp_path, *options, settings_module=None):
    """ansible-playbook on the example, with the site alone in the group `django`."""
    text = EXAMPLE.read_text()
    assert text.count(PACKAGE_LINE) == 1
    if settings_module:
        text = text.replace(PACKAGE_LINE, f"project_settings_module: {settings_module}")
    (tmp_path / "example.yml").write_text(text)
    result = subprocess.run(
        ["ansible-playbook", "-i", bare_inventory(tmp_path, SITE, "django"), *options, str(tmp_path / "example.yml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def site(host):
    if host.backend.get_hostname() != SITE:
        pytest.skip("the startproject site is on Debian 13")
    return host


def as_site_user(site, command, *args):
    return site.run(f"cd {HOME}/src/myproject && runuser -u myproject -- {command}", *args)


@pytest.mark.parametrize("options", [["--check"], []], ids=["check-mode", "converge"])
def test_example_as_is_stops_before_anything_changes_naming_the_settings_module(site, tmp_path, options):
    rc, output = run_example(tmp_path, *options)
    assert rc != 0, output
    assert (
        "project_settings_module: 'myproject.settings.production' does not import with "
        f"{HOME}/env/bin/python in {HOME}/src/myproject: ModuleNotFoundError: "
    ) in output, output
    assert "myproject.settings for the single settings.py of django-admin startproject" in output, output
    assert "(manage.py names myproject.settings)" in output, output
    assert "Traceback" not in output, output
    assert re.search(rf"{SITE}\s+: ok=\d+\s+changed=0 .*failed=1", output), output
    assert not site.file(f"{HOME}/commands").exists
    assert not site.file(f"{HOME}/db_backups").exists
    assert site.run("crontab -l -u myproject").rc != 0


def test_example_with_the_startproject_module_converges_and_runs_django(site, tmp_path):
    # Check mode and a second run of the same tasks on deployed sites: the operations scenario.
    rc, output = run_example(tmp_path, settings_module="myproject.settings")
    assert rc == 0, output
    # One live and one expired session; clearsessions must remove only the expired one.
    sessions = (
        "from datetime import timedelta; from django.utils import timezone; "
        "from django.contrib.sessions.models import Session; "
        "Session.objects.all().delete(); "
        "Session.objects.create(session_key='live', session_data='', expire_date=timezone.now() + timedelta(days=1)); "
        "Session.objects.create(session_key='expired', session_data='', expire_date=timezone.now() - timedelta(days=1))"
    )
    result = as_site_user(site, f"{HOME}/env/bin/python manage.py shell -c %s", sessions)
    assert result.rc == 0, result.stderr
    result = as_site_user(site, f"{HOME}/commands/clear_sessions.sh")
    assert result.rc == 0, result.stderr
    left = as_site_user(
        site,
        f"{HOME}/env/bin/python manage.py shell -c %s",
        "from django.contrib.sessions.models import Session; "
        "print(sorted(Session.objects.values_list('session_key', flat=True)))",
    )
    assert left.stdout.strip().splitlines()[-1] == "['live']", left.stdout + left.stderr
    # The backup reads its credentials from the settings module.
    result = as_site_user(site, f"{HOME}/commands/backup_db.sh")
    assert result.rc == 0, result.stderr
    assert 'database "myproject" as "myproject" from myproject.settings' in result.stderr, result.stderr
    assert site.run(f"readlink {HOME}/db_backups/latest").stdout.startswith("myproject_")


def test_a_project_not_deployed_is_refused_when_a_role_runs_django(site, tmp_path):
    """db_backup reading credentials from Django on a server without the code: refused,
    naming the variable, before the role writes anything."""
    extra = {"project_name": "undeployed", "db_backup_engine": "postgresql", "db_backup_credentials_source": "django"}
    try:
        rc, output = apply_role(SITE, "djangoops.maintenance.db_backup", extra, tmp_path)
        assert rc != 0, output
        assert (
            "project_venv_dir: /home/undeployed/env/bin/python does not exist, but "
            "db_backup_credentials_source 'django' runs Django"
        ) in output, output
        assert not site.file("/home/undeployed/commands/backup_db.sh").exists
    finally:
        site.run("userdel -r undeployed")
