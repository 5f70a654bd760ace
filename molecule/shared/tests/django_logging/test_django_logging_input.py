"""Bad input stops the django_logging role before it writes anything, with a message that
names the variable. The role runs from a bare inventory of one test server."""

import json
import os
import subprocess

import pytest
from bare_inventory import bare_inventory
from logging_helpers import MODULE_FILE

PLAY = "- hosts: all\n  gather_facts: false\n  become: true\n  roles:\n    - djangoops.maintenance.django_logging\n"

REFUSED = [
    pytest.param({"django_logging_file_mode": "0644"}, "django_logging_file_mode", id="logs-readable-by-all"),
    pytest.param({"django_logging_level": "LOUD"}, "django_logging_level", id="unknown-level"),
    pytest.param({"django_logging_loggers": {"django.db": "LOUD"}}, "django_logging_loggers", id="logger-level"),
    pytest.param({"django_logging_admins": [{"name": "no address"}]}, "django_logging_admins", id="admin-no-email"),
    pytest.param(
        {"django_logging_email_use_tls": True, "django_logging_email_use_ssl": True},
        "django_logging_email_use_tls",
        id="tls-and-ssl",
    ),
    pytest.param({"django_logging_module": "shop.my-logging"}, "django_logging_module", id="module-not-dotted-name"),
    pytest.param({"django_logging_secrets_file_mode": "0644"}, "django_logging_secrets_file_mode", id="secrets-open"),
    pytest.param({"django_logging_json_file": "../x.log"}, "django_logging_json_file", id="file-outside-dir"),
    # The virtualenv lacks django-structlog and the role may not install it.
    pytest.param({"project_venv_dir": "/opt/no-such-env"}, "django_logging_pip_install", id="packages-missing"),
]


@pytest.mark.parametrize(("extra_vars", "variable"), REFUSED)
def test_bad_input_is_refused_naming_the_variable(host, tmp_path, extra_vars, variable):
    hostname = host.backend.get_hostname()
    if not hostname.endswith("debian12"):
        pytest.skip("the checks do not depend on the platform: one server is enough")
    before = host.file(MODULE_FILE).mtime
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "vars.json").write_text(json.dumps({"project_name": "shop", **extra_vars}))
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            bare_inventory(tmp_path, hostname),
            "-e",
            f"@{tmp_path / 'vars.json'}",
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"],
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert variable in output, output
    assert host.file(MODULE_FILE).mtime == before
