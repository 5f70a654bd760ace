"""The project role's outcome on both servers, and its refusal of bad input."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared/tests"))
from bare_inventory import apply_role

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
    for path, *_ in expected["dirs"][1:]:
        probe = f"{path}/.write-probe"
        host.run_expect([0], f"sudo -u {name} touch {probe}")
        host.run_expect([0], f"rm -f {probe}")


def test_others_cannot_read_backups(host, expected):
    backups = expected["dirs"][2][0]
    result = host.run(f"sudo -u nobody ls {backups}")
    assert result.rc != 0
    assert "Permission denied" in result.stderr


# --- bad input ---------------------------------------------------------------

BAD_INPUT = [
    pytest.param({}, "project_name", id="missing-name"),
    pytest.param({"project_name": "my-project"}, "project_name", id="name-not-identifier"),
    pytest.param({"project_name": "x", "project_home": "srv/x"}, "project_home", id="relative-home"),
    pytest.param({"project_name": "x", "project_logs_mode": 750}, "project_logs_mode", id="mode-not-string"),
    pytest.param({"project_name": "x", "project_backups_mode": "0755"}, "project_backups_mode", id="backups-open"),
    pytest.param({"project_name": "x", "project_user": "Bad User"}, "project_user", id="bad-user-name"),
    pytest.param({"project_name": "x", "project_user_create": "maybe"}, "project_user_create", id="not-bool"),
    pytest.param(
        {"project_name": "ghost", "project_user_create": False}, "project_user", id="missing-user-not-created"
    ),
]


@pytest.mark.parametrize(("extra_vars", "variable"), BAD_INPUT)
def test_bad_input_fails_naming_the_variable(host, tmp_path, extra_vars, variable):
    """Bad values stop the play before it changes anything, and say which variable is wrong."""
    hostname = host.backend.get_hostname()
    if hostname != "layout-debian12":
        pytest.skip("validation does not depend on the platform; one host is enough")
    rc, output = apply_role(hostname, "djangoops.maintenance.project", extra_vars, tmp_path, gather_facts=False)
    assert rc != 0, output
    assert variable in output, output
    assert "changed=0" in output, output
    assert not host.file("/home/x").exists
