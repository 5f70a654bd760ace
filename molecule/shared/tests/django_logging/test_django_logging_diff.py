"""`ansible-playbook --diff` shows what the django_logging role would change and none of
its secrets: the SMTP password and the Sentry DSN live in a 0600 file whose task is
no_log, and appear nowhere else."""

import json
import os
import subprocess

import pytest

CHANGED = {
    "django_logging_email_host_password": "diff-secret-smtp-password",
    "django_logging_sentry_dsn": "http://diff-secret-dsn-key@127.0.0.1:8766/1",
    # Not a secret: a change the settings module's diff must show.
    "django_logging_email_subject_prefix": "[shop-diff] ",
}
# The secrets the scenario converged with (molecule/django_logging/converge.yml).
CONVERGED = ["pa ss ", "public@127.0.0.1"]


def test_check_diff_shows_the_change_and_no_secret(host, tmp_path):
    hostname = host.backend.get_hostname()
    if not hostname.endswith("debian12"):
        pytest.skip("the role's output does not depend on the platform: one server is enough")
    extra = tmp_path / "changed.json"
    extra.write_text(json.dumps(CHANGED))
    extra.chmod(0o600)
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit",
            hostname,
            "--check",
            "--diff",
            "-e",
            f"@{extra}",
            f"{os.environ['MOLECULE_SCENARIO_DIRECTORY']}/converge.yml",
        ],
        capture_output=True,
        text=True,
        cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"],
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[shop-diff] " in output, output
    leaked = [word for word in ["diff-secret", *CONVERGED] if word in output]
    assert not leaked, output
