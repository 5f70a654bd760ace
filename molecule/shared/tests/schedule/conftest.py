"""Helpers for the schedule scenarios: which backend the host uses, running a job
the way that backend does, the health-check listener's log, and the Django
session table through the project's own manage.py."""

import json
import time
from datetime import datetime

import pytest

HOME = "/home/shop"
COMMANDS = f"{HOME}/commands"
LOGS = f"{HOME}/logs"
PINGS = "/var/log/hc-pings.log"
UNIT_PREFIX = "djangoops-shop-"
MARKER = "#Ansible: djangoops:shop:"
# The crontab prepare_schedule.yml gives the project user before any role runs.
OWN_CRONTAB = ["# the site's own job, not ours", "17 3 * * * /bin/true"]


@pytest.fixture(scope="module")
def variables(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def backend(variables):
    return variables["schedule_backend"]


@pytest.fixture
def run_job(host, backend):
    """Runs a job as its scheduler would and returns its exit code: systemd starts
    the service (and waits for it); cron's environment is the crontab's."""

    def _run(name):
        if backend == "systemd":
            host.run(f"systemctl start {UNIT_PREFIX}{name}.service")
            status = host.run(f"systemctl show --property=ExecMainStatus --value {UNIT_PREFIX}{name}.service")
            return int(status.stdout.strip())
        result = host.run(
            f"runuser -u shop -- env -i HOME={HOME} SHELL=/bin/bash PATH=/usr/bin:/bin {COMMANDS}/{name}.sh </dev/null"
        )
        return result.rc

    return _run


def pings_since(host, since):
    """Paths the health-check listener received since the epoch `since`."""
    lines = host.file(PINGS).content_string.splitlines() if host.file(PINGS).exists else []
    return [path for stamp, _method, path in (line.split(" ", 2) for line in lines) if float(stamp) >= since]


def log_lines_since(host, job, since):
    """Lines of logs/<job>.log written since the epoch `since` (second precision)."""
    log = host.file(f"{LOGS}/{job}.log")
    if not log.exists:
        return []
    out = []
    for line in log.content_string.splitlines():
        stamp = line.split(" ", 1)[0]
        try:
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            continue
        if when >= int(since):
            out.append(line)
    return out


def django(host, code):
    """Runs Python in the project's Django shell as the project user; returns its
    last line parsed as JSON."""
    result = host.run(
        f"cd {HOME}/src/shop && printf '%s' {quote(code)} | runuser -u shop -- {HOME}/env/bin/python manage.py shell"
    )
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def crontab_lines(host):
    result = host.run("crontab -l -u shop")
    assert result.rc in (0, 1), result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


def wait_for(predicate, timeout, interval=2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def quote(value):
    return "'" + value.replace("'", "'\\''") + "'"
