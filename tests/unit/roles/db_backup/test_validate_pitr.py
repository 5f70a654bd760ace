"""roles/db_backup/tasks/validate.yml on db_backup_pitr's variables: each bad value refused with
a message that names the variable, a good set passing. One ansible-playbook run on the
controller (connection local, no host touched) applies every case in a block of its own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
GOOD = {
    "project_name": "shop",
    "project_user": "shop",
    "project_group": "shop",
    "project_home": "/home/shop",
    "db_backup_database_name": "shop",
    "db_backup_database_user": "shop",
    "db_backup_database_password": "secret",
    "db_backup_pitr": True,
    "db_backup_pitr_cipher_pass": "a passphrase of twenty-some characters",
    # The default, as the role renders it for project shop (the cases' values are not templated).
    "db_backup_pitr_scratch_dir": "/var/lib/djangoops-pitr/shop",
    "db_backup_pitr_repository_path": "/var/lib/pgbackrest",
}
S3 = {
    "endpoint": "s3.example.net",
    "bucket": "shop-pitr",
    "region": "eu-west-1",
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "secret/key+example",
}
CASES = {
    "good": ({}, None),
    "good_s3": ({"db_backup_pitr_s3": {**S3, "port": 9000, "uri_style": "path", "ca": "-----BEGIN..."}}, None),
    "s3_missing": (
        {"db_backup_pitr_s3": {"endpoint": "s3.example.net", "bucket": "shop-pitr"}},
        "(missing: region, access_key_id, secret_access_key; unknown keys: none)",
    ),
    "s3_unknown": ({"db_backup_pitr_s3": {**S3, "secret": "x"}}, "unknown keys: secret)"),
    "s3_uri_style": ({"db_backup_pitr_s3": {**S3, "uri_style": "virtual"}}, "uri_style host or path (got 'virtual')"),
    "s3_bucket": ({"db_backup_pitr_s3": {**S3, "bucket": "Shop_PITR"}}, "a bucket name S3 allows (got 'Shop_PITR')"),
    "s3_path": ({"db_backup_pitr_s3": {**S3, "path": "pgbackrest"}}, "(got 'pgbackrest')"),
    "off_ignores_the_rest": ({"db_backup_pitr": False, "db_backup_pitr_cipher_pass": ""}, None),
    "mariadb": ({"db_backup_engine": "mysql", "db_backup_pitr_repository_path": "/var/lib/mariadb-pitr"}, None),
    "no_passphrase": ({"db_backup_pitr_cipher_pass": ""}, "db_backup_pitr_cipher_pass of at least 20 characters"),
    "short_passphrase": ({"db_backup_pitr_cipher_pass": "x" * 19}, "db_backup_pitr_cipher_pass of at least 20"),
    "stanza": ({"db_backup_pitr_stanza": "main; rm"}, "db_backup_pitr_stanza of letters, digits, '_' or '-' (got"),
    "timeout_zero": (
        {"db_backup_pitr_archive_timeout": 0},
        "db_backup_pitr_archive_timeout from 1 to 60 seconds (got 0)",
    ),
    "timeout_long": ({"db_backup_pitr_archive_timeout": 61}, "from 1 to 60 seconds (got 61)"),
    "lag_short": (
        {"db_backup_pitr_max_archive_lag": 59},
        "db_backup_pitr_max_archive_lag from 60 to 86400 seconds (got 59)",
    ),
    "lag_long": ({"db_backup_pitr_max_archive_lag": 86401}, "from 60 to 86400 seconds (got 86401)"),
    "keep_none": ({"db_backup_pitr_keep_full": 0}, "db_backup_pitr_keep_full of at least 1 (got 0)"),
    "full_every_zero": ({"db_backup_pitr_full_every_days": 0}, "db_backup_pitr_full_every_days from 1 to 366 (got 0)"),
    "full_every_long": ({"db_backup_pitr_full_every_days": 367}, "from 1 to 366 (got 367)"),
    "relative_repository": (
        {"db_backup_pitr_repository_path": "pgbackrest"},
        "absolute db_backup_pitr_repository_path",
    ),
    "root_repository": ({"db_backup_pitr_repository_path": "/"}, "other than '/' (got '/')"),
    "scratch_dir_shallow": (
        {"db_backup_pitr_scratch_dir": "/var/lib"},
        "a db_backup_pitr_scratch_dir three levels below / at least",
    ),
    "scratch_dir_spaces": ({"db_backup_pitr_scratch_dir": "/srv/pitr/my shop"}, "(got '/srv/pitr/my shop'"),
    "scratch_dir_relative": ({"db_backup_pitr_scratch_dir": "srv/pitr/shop"}, "(got 'srv/pitr/shop'"),
    "scratch_port_zero": ({"db_backup_pitr_scratch_port": 0}, "db_backup_pitr_scratch_port from 1 to 65535 (got 0)"),
    "scratch_port_high": ({"db_backup_pitr_scratch_port": 65536}, "from 1 to 65535 (got 65536)"),
}


DEFAULTS = yaml.safe_load((ROOT / "roles/db_backup/defaults/main.yml").read_text())
# Task vars cannot come from one templated dict: each variable a case sets is passed by name,
# the role's default where the case leaves it.
KEYS = sorted({*GOOD, *(key for extra, _message in CASES.values() for key in extra)})


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Each case's outcome: "passed", or the message it failed with."""
    tmp = tmp_path_factory.mktemp("validate")
    cases = {name: {k: {**DEFAULTS, **GOOD, **extra}[k] for k in KEYS} for name, (extra, _message) in CASES.items()}
    (tmp / "cases.json").write_text(json.dumps(cases))
    (tmp / "case.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "One case",
                    "block": [
                        {
                            "name": "Validate",
                            "ansible.builtin.include_tasks": str(ROOT / "roles/db_backup/tasks/validate.yml"),
                            "vars": {key: f"{{{{ __case.value['{key}'] }}}}" for key in KEYS},
                        },
                        {
                            "name": "Passed",
                            "ansible.builtin.set_fact": {"__out": "{{ __out | combine({__case.key: 'passed'}) }}"},
                        },
                    ],
                    "rescue": [
                        {
                            "name": "Failed",
                            "ansible.builtin.set_fact": {
                                "__out": "{{ __out | combine({__case.key: ansible_failed_result.msg}) }}"
                            },
                        }
                    ],
                }
            ]
        )
    )
    (tmp / "play.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    # The role's defaults and vars, as the role would have them (no module runs:
                    # every task is an assert or set_fact).
                    "vars_files": [
                        str(ROOT / "roles/db_backup/defaults/main.yml"),
                        str(ROOT / "roles/db_backup/vars/main.yml"),
                    ],
                    "vars": {"__out": {}, "__cases": "{{ lookup('ansible.builtin.file', 'cases.json') | from_json }}"},
                    "tasks": [
                        {
                            "name": "Every case",
                            "ansible.builtin.include_tasks": "case.yml",
                            "loop": "{{ __cases | dict2items }}",
                            "loop_control": {"loop_var": "__case"},
                        },
                        {"name": "Show", "ansible.builtin.debug": {"var": "__out"}},
                    ],
                }
            ]
        )
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json"}
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp / "play.yml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout)["plays"][0]["tasks"][-1]["hosts"]["localhost"]["__out"]
    assert set(shown) == set(CASES)
    return shown


@pytest.mark.parametrize("case", CASES)
def test_each_pitr_value_is_checked_by_name(outcomes, case):
    expected = CASES[case][1]
    if expected is None:
        assert outcomes[case] == "passed"
    else:
        assert expected in " ".join(outcomes[case].split())


def test_the_passphrase_is_never_in_a_message(outcomes):
    for message in outcomes.values():
        assert GOOD["db_backup_pitr_cipher_pass"] not in message
