"""Bad input stops the django_logging role before it writes anything, with a message that
names the variable. The role runs from a bare inventory of one test server, every case in
one ansible-playbook run (a play per case, its refusal rescued)."""

import pytest
from bare_inventory import apply_role_cases
from logging_helpers import MODULE_FILE

# case: (its variables besides project_name, the variable its refusal must name)
REFUSED = {
    "logs-readable-by-all": ({"django_logging_file_mode": "0644"}, "django_logging_file_mode"),
    "unknown-level": ({"django_logging_level": "LOUD"}, "django_logging_level"),
    "logger-level": ({"django_logging_loggers": {"django.db": "LOUD"}}, "django_logging_loggers"),
    "admin-no-email": ({"django_logging_admins": [{"name": "no address"}]}, "django_logging_admins"),
    "tls-and-ssl": (
        {"django_logging_email_use_tls": True, "django_logging_email_use_ssl": True},
        "django_logging_email_use_tls",
    ),
    "module-not-dotted-name": ({"django_logging_module": "shop.my-logging"}, "django_logging_module"),
    "secrets-open": ({"django_logging_secrets_file_mode": "0644"}, "django_logging_secrets_file_mode"),
    "file-outside-dir": ({"django_logging_json_file": "../x.log"}, "django_logging_json_file"),
    # The virtualenv lacks django-structlog and the role may not install it.
    "packages-missing": ({"project_venv_dir": "/opt/no-such-env"}, "django_logging_pip_install"),
}


@pytest.fixture(scope="module")
def refusals(host, tmp_path_factory):
    """Every REFUSED case applied in one run, and the settings module's mtime before it."""
    hostname = host.backend.get_hostname()
    if not hostname.endswith("debian12"):
        pytest.skip("the checks do not depend on the platform: one server is enough")
    before = host.file(MODULE_FILE).mtime
    cases = {case: {"project_name": "shop", **variables} for case, (variables, _name) in REFUSED.items()}
    result = apply_role_cases(
        hostname,
        "djangoops.maintenance.django_logging",
        cases,
        tmp_path_factory.mktemp("bad-input"),
        gather_facts=False,
        become=True,
    )
    return before, result


@pytest.mark.parametrize("case", REFUSED)
def test_bad_input_is_refused_naming_the_variable(host, refusals, case):
    before, (rc, outputs, recap) = refusals
    output = outputs.get(case, "")
    assert f"case {case} refused" in output, output or recap
    assert REFUSED[case][1] in output, output
    assert rc == 0 and "changed=0" in recap and "failed=0" in recap, recap
    assert host.file(MODULE_FILE).mtime == before
