"""Fixtures of the schedule scenarios' tests: which backend the host uses, when this host's
tests began, and running a job the way that backend does (`variables` is
molecule/conftest.py's)."""

import time

import pytest
from schedule_helpers import UNIT_PREFIX, cron_file_environment
from shop_project import COMMANDS, quote


@pytest.fixture(scope="module")
def backend(variables):
    return variables["schedule_backend"]


@pytest.fixture(scope="module", autouse=True)
def verify_started(host):
    """When this host's tests began: after the last converge."""
    return time.time()


@pytest.fixture
def run_job(host, backend):
    """Runs a job as its scheduler would and returns its exit code: systemd starts
    the service (and waits for it); cron's environment is the one its file sets."""

    def _run(name):
        if backend == "systemd":
            host.run(f"systemctl start {UNIT_PREFIX}{name}.service")
            status = host.run(f"systemctl show --property=ExecMainStatus --value {UNIT_PREFIX}{name}.service")
            return int(status.stdout.strip())
        environment = " ".join(quote(f"{name}={value}") for name, value in cron_file_environment(host).items())
        result = host.run(f"runuser -u shop -- env -i {environment} {COMMANDS}/{name}.sh </dev/null")
        return result.rc

    return _run
