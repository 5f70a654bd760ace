"""Helpers for the schedule scenarios: the health-check listener's log, the jobs' logs,
the Django session table through the project's own manage.py, the role's cron file,
the project user's crontab and what cron gave the team's job, and the mails cron sent
(prepare_schedule.yml installs a sendmail that keeps them)."""

import json
import os
import re
import time
from datetime import datetime
from pathlib import Path

import yaml
from shop_project import ENGINE_BIN, HOME, LOGS, quote

PINGS = "/var/log/hc-pings.log"
UNIT_PREFIX = "djangoops-shop-"
CRON_FILE = "/etc/cron.d/djangoops-shop"
# Where the role's first version marked its entries in the project user's crontab.
V1_MARKER = "#Ansible: djangoops:shop:"
MAILS = "/var/spool/test-mail"
TEAM_ENV = "/var/lib/acme/env"
# The project user's crontab as the site's team keeps it (prepare_schedule.yml
# writes it; on upgraded hosts below the first version's lines).
VARS = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule/shared/playbooks/vars/schedule.yml"
TEAM_CRONTAB = yaml.safe_load(VARS.read_text())["test_team_crontab"]


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


def crontab_text(host):
    """The project user's crontab as `crontab -l` prints it, byte for byte ("" when none)."""
    result = host.run("crontab -l -u shop")
    assert result.rc in (0, 1), result.stderr
    return result.stdout if result.rc == 0 else ""


def cron_file_text(host, path=CRON_FILE):
    """The role's cron file ("" when there is none)."""
    result = host.run(f"cat {path}")
    return result.stdout if result.rc == 0 else ""


def cron_file_lines(host):
    """The lines of the role's cron file that cron reads (no comments, no blank lines)."""
    lines = cron_file_text(host).splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def cron_file_environment(host):
    """NAME="value" lines of the role's cron file, as cron reads them."""
    pairs = (re.fullmatch(r'([A-Z_]+)="(.*)"', line) for line in cron_file_lines(host))
    return {match[1]: match[2] for match in pairs if match}


def team_run_since(host, since):
    """The environment cron gave the team's acme-report in a run that started at or
    after the epoch `since`, or None before such a run."""
    env = host.file(TEAM_ENV)
    if not env.exists:
        return None
    stamp, *lines = env.content_string.splitlines()
    if int(stamp) < int(since):
        return None
    return dict(line.split("=", 1) for line in lines if "=" in line)


def mails_since(host, since):
    """The mails cron handed to sendmail since the epoch `since`: recipients (the
    last argument), headers and body."""
    found = []
    texts = host.run(f"tail -v -n +1 {MAILS}/mail.* 2>/dev/null").stdout  # each after "==> FILE <=="
    for text in re.split(r"^==> .* <==\n", texts, flags=re.MULTILINE)[1:]:
        head, _sep, body = text.partition("\n\n")
        headers = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        if int(headers.get("X-Test-Received", 0)) >= int(since):
            args = headers.get("X-Test-Args", "").split()
            found.append({"to": args[-1] if args else "", "headers": headers, "body": body})
    return found


def wait_for(predicate, timeout, interval=2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def run_scheduled(host, variables, name):
    """Runs job NAME as its scheduler would (systemd starts the service and waits for it;
    cron: the file's line for it, as root, with the environment the file sets); its exit
    code."""
    if variables["schedule_backend"] == "systemd":
        started = host.run(f"systemctl start {UNIT_PREFIX}{name}.service")
        if started.rc != 0:
            print(host.run(f"journalctl -u {UNIT_PREFIX}{name}.service --no-pager -n 40").stdout)
        unit = host.file(f"/etc/systemd/system/{UNIT_PREFIX}{name}.service").content_string
        # Root's (no User=: a system service's default), confined, by the root-owned entry point.
        assert "\nUser=" not in unit and "ProtectSystem=strict\n" in unit
        assert f"ExecStart={ENGINE_BIN}/{name}.sh\n" in unit
        status = host.run(f"systemctl show --property=ExecMainStatus --value {UNIT_PREFIX}{name}.service")
        return int(status.stdout.strip())
    (entry,) = [line.split() for line in cron_file_lines(host) if line.endswith(f"/{name}.sh")]
    # Root's, by the root-owned entry point: never the project user's commands/ link.
    assert entry[5:] == ["root", f"{ENGINE_BIN}/{name}.sh"]
    environment = " ".join(quote(f"{k}={v}") for k, v in cron_file_environment(host).items())
    return host.run(f"env -i {environment} {ENGINE_BIN}/{name}.sh </dev/null").rc
