"""The schedule role on both backends: what is scheduled, that it runs, and what
a run does (tests marked for one backend are skipped on the other); the team's
own crontab, which no run of the role may change."""

import os
import re
import subprocess
import time

import pytest
from bare_inventory import apply_role, apply_role_cases
from installed_code import SCHEDULE, not_as_shipped, values
from schedule_helpers import (
    CRON_FILE,
    TEAM_CRONTAB,
    UNIT_PREFIX,
    V1_MARKER,
    cron_file_lines,
    cron_file_text,
    crontab_text,
    django,
    log_lines_since,
    mails_since,
    pings_since,
    team_run_since,
    wait_for,
)
from shop_project import COMMANDS, HOME, LOGS

SCHEDULED = {
    "clear_sessions": "0 1 * * *",
    "backup_db": "0 2 * * *",
    "verify_db": "0 4 * * 0",
    "probe": "* * * * *",
    "probe-fail": "* * * * *",
    "broken": "30 5 * * *",
    "sandbox-probe": "0 0 1 1 *",
}
# What the jobs find on PATH: the virtualenv first, once, then schedule_path's rest.
JOB_PATH = f"{HOME}/env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CALENDAR = {
    "clear_sessions": "*-*-* 01:00:00",
    "backup_db": "*-*-* 02:00:00",
    "verify_db": "Sun *-*-* 04:00:00",
    "probe": "*-*-* *:*:00",
    "probe-fail": "*-*-* *:*:00",
    "broken": "*-*-* 05:30:00",
    "sandbox-probe": "*-01-01 00:00:00",
}


@pytest.fixture(scope="module")
def scheduled(variables):
    """The jobs this host should have, with their cron times."""
    jobs = dict(SCHEDULED)
    if variables.get("test_app_container"):
        jobs["in-app-container"] = "0 0 1 1 *"
    return jobs


def only(backend_name):
    return pytest.mark.parametrize("wanted_backend", [backend_name])


@pytest.fixture(autouse=True)
def _skip_other_backend(request, backend):
    wanted = request.node.callspec.params.get("wanted_backend") if hasattr(request.node, "callspec") else None
    if wanted and wanted != backend:
        pytest.skip(f"{wanted} backend only; this host uses {backend}")


# --- what any backend must do ---------------------------------------------------


def test_the_job_code_is_the_repositorys_and_the_values_name_each_job(host):
    jobs = {f"bin/{name}.sh": "engine/command" for name in ("clear_sessions", "probe")}
    assert not_as_shipped(host, {**SCHEDULE, **jobs}) == []
    assert {"clear_sessions", "probe"} <= set(values(host, "jobs.json")["jobs"])


def test_clear_sessions_removes_expired_sessions_and_keeps_live_ones(host, run_job):
    created = django(
        host,
        "import json\n"
        "from django.contrib.sessions.backends.db import SessionStore\n"
        "keys = {'live': [], 'expired': []}\n"
        "for n in range(3):\n"
        "    s = SessionStore(); s['n'] = n; s.set_expiry(3600); s.create(); keys['live'].append(s.session_key)\n"
        "    s = SessionStore(); s['n'] = n; s.set_expiry(-60); s.create(); keys['expired'].append(s.session_key)\n"
        "print(json.dumps(keys))\n",
    )
    started = time.time()
    assert run_job("clear_sessions") == 0
    left = django(
        host,
        "import json\n"
        "from django.contrib.sessions.models import Session\n"
        "from django.utils import timezone\n"
        "print(json.dumps({'keys': list(Session.objects.values_list('session_key', flat=True)),\n"
        "  'expired': Session.objects.filter(expire_date__lt=timezone.now()).count()}))\n",
    )
    assert set(created["live"]) <= set(left["keys"])
    assert not set(created["expired"]) & set(left["keys"])
    assert left["expired"] == 0
    lines = log_lines_since(host, "clear_sessions", started)
    assert any("running in /home/shop/src/shop: python manage.py clearsessions" in line for line in lines), lines
    assert any("finished in 0 min" in line for line in lines), lines
    pings = pings_since(host, started)
    assert "/ping/clear_sessions/start" in pings
    assert "/ping/clear_sessions/0" in pings


def test_a_failing_job_exits_12_and_says_why(host, run_job):
    started = time.time()
    assert run_job("broken") == 12
    lines = log_lines_since(host, "broken", started)
    assert any(" OUT   about to fail" in line for line in lines), lines
    assert any("the command failed with exit code 3" in line for line in lines), lines
    assert "/ping/broken/12" in pings_since(host, started)
    metrics = host.file("/var/lib/djangoops-metrics/djangoops_shop_broken.prom").content_string
    assert 'djangoops_job_exit_code{project="shop",script="broken"} 12' in metrics


def test_the_schedule_tells_the_alert_rules_how_long_each_job_may_go_without_a_success(host):
    schedule = host.file("/var/lib/djangoops-metrics/djangoops_shop.schedule.prom")
    assert (schedule.user, schedule.group, schedule.mode) == ("root", "root", 0o644)
    samples = {}
    for line in schedule.content_string.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r'djangoops_job_expected_interval_seconds\{project="shop",script="([^"]+)"\} (\d+)', line)
        assert match, line
        samples[match.group(1)] = int(match.group(2))
    # The longest gap of each job's schedule: every minute, daily, and @yearly across a leap year.
    assert samples["probe"] == samples["probe-fail"] == 60
    assert samples["broken"] == 86400
    assert samples["sandbox-probe"] == 366 * 86400
    assert {"clear_sessions", "backup_db", "verify_db"} <= set(samples)
    assert "retired" not in samples  # no longer scheduled


@only("cron")
def test_cron_runs_the_jobs_with_their_environment_and_mails_only_problems(
    host, variables, wanted_backend, verify_started
):
    """The every-minute probe as cron really starts it: the virtualenv once on PATH,
    HOME, nothing mailed while it succeeds; and in the same minute probe-fail, which
    fails: a mail with its error only, to schedule_mailto (none when that is empty).
    Before any test runs the probe by hand, so that what it sees since this host's
    tests began is cron's doing; the team's job runs in the same minute, so the wait
    here is the only one for cron's next minute until the back-and-forth test."""
    started = verify_started

    def ran(job, exit_code):
        return lambda: f"/ping/{job}/{exit_code}" in pings_since(host, started)

    def journal():
        return host.run("journalctl -u cron --since=-3min --no-pager | tail -20").stdout

    assert wait_for(ran("probe", 0), timeout=70), journal()
    assert wait_for(ran("probe-fail", 12), timeout=15), journal()
    lines = log_lines_since(host, "probe", started)
    assert any("probe ran with Django" in line for line in lines), lines
    assert f"PATH={JOB_PATH}" in [line.split(" OUT   ", 1)[-1] for line in lines], lines
    assert f"HOME={HOME}" in [line.split(" OUT   ", 1)[-1] for line in lines], lines
    time.sleep(5)  # cron mails when the run has ended
    assert mails_about(host, started, f"{COMMANDS}/probe.sh") == []

    def failure_mails():
        return mails_about(host, started, f"{COMMANDS}/probe-fail.sh")

    mailto = variables.get("schedule_mailto", "")
    if not mailto:
        assert failure_mails() == []
        return
    mails = wait_for(failure_mails, timeout=15)
    assert {mail["to"] for mail in mails} == {mailto}, mails
    body = mails[0]["body"].strip().splitlines()
    assert body and all(" ERROR " in line or " WARN  " in line for line in body), body
    assert any("the command failed with exit code 4" in line for line in body), body
    assert "told to fail" not in mails[0]["body"]  # the command's output is in the log


def test_each_job_writes_its_output_to_its_own_log(host, run_job):
    started = time.time()
    assert run_job("probe") == 0
    lines = log_lines_since(host, "probe", started)
    assert any(" OUT   probe ran with Django " in line for line in lines), lines
    assert any(" OUT   settings: shop.settings.production" in line for line in lines), lines
    assert not any("probe ran" in line for line in log_lines_since(host, "broken", started))
    # The virtualenv first on PATH and there once, whatever the scheduler's PATH held.
    assert [line.split(" OUT   ", 1)[1] for line in lines if " OUT   PATH=" in line] == [f"PATH={JOB_PATH}"], lines


def test_under_cron_only_problems_reach_stderr(host):
    # clear_sessions, not the every-minute probe, whose cron run could hold the lock.
    quiet = host.run(f"runuser -u shop -- env DJANGOOPS_STDERR=problems {COMMANDS}/clear_sessions.sh </dev/null")
    assert quiet.rc == 0, quiet.stderr
    assert quiet.stderr == ""
    # The same run prints its INFO lines when the setting is left alone.
    loud_default = host.run(f"runuser -u shop -- {COMMANDS}/clear_sessions.sh </dev/null")
    assert loud_default.rc == 0 and "INFO" in loud_default.stderr, loud_default.stderr
    loud = host.run(f"runuser -u shop -- env DJANGOOPS_STDERR=problems {COMMANDS}/broken.sh </dev/null")
    assert loud.rc == 12
    assert "ERROR the command failed with exit code 3" in loud.stderr
    assert "about to fail" not in loud.stderr  # the output is in the log, not in the mail


def test_a_removed_job_is_gone_everywhere(host):
    assert not host.file(f"{COMMANDS}/retired.sh").exists
    assert "retired" not in crontab_text(host)
    assert not any("retired" in line for line in cron_file_lines(host))
    assert host.run(f"ls /etc/systemd/system/{UNIT_PREFIX}retired.*").rc != 0


# --- the team's own crontab -----------------------------------------------------------


def test_the_teams_crontab_is_byte_for_byte_as_it_was(host):
    """Whatever was scheduled before (the other backend, or the role's first version
    in this very crontab), the project user's crontab is now the team's, unchanged."""
    assert crontab_text(host) == TEAM_CRONTAB


def test_an_upgrade_takes_out_exactly_what_the_first_version_wrote(host, variables):
    if variables.get("test_previous") != "v1":
        pytest.skip("this host did not start from the role's first version")
    before = host.file("/root/crontab-before-upgrade").content_string
    # The server really had the first version's environment lines and entries ...
    assert before.splitlines()[:5] == [
        f'MAILTO="{variables.get("schedule_mailto", "")}"',
        f'HOME="{HOME}"',
        f'PATH="{JOB_PATH}"',
        'SHELL="/bin/bash"',
        'DJANGOOPS_STDERR="problems"',
    ]
    assert f"{V1_MARKER}clear_sessions\n0 1 * * * {COMMANDS}/clear_sessions.sh\n" in before
    assert f"{V1_MARKER}retired\n" in before
    assert before.endswith(TEAM_CRONTAB)
    # ... and now has the team's lines only.
    assert crontab_text(host) == TEAM_CRONTAB


def test_cron_gives_the_teams_job_the_teams_mailto_and_path(host, verify_started):
    """acme-report, found only through the team's PATH, writes the environment cron
    started it with and prints a line, which cron mails to the team's MAILTO."""
    env = wait_for(lambda: team_run_since(host, verify_started), timeout=70)
    assert env, host.run("journalctl -u cron --since=-3min --no-pager | tail -20").stdout
    assert_teams_run(host, env, verify_started)


def mails_about(host, since, command):
    """The mails since the epoch `since` about a cron run of `command` (cron's Subject
    ends with the command line)."""
    return [mail for mail in mails_since(host, since) if mail["headers"].get("Subject", "").endswith(" " + command)]


def assert_teams_run(host, env, since):
    assert env["PATH"] == "/opt/acme-tools/bin:/usr/bin:/bin"
    assert env["MAILTO"] == "ops@example.com"
    assert env["SHELL"] == "/bin/sh"  # cron's own default: the team set none
    assert "DJANGOOPS_STDERR" not in env
    mails = wait_for(lambda: mails_about(host, since, "acme-report"), timeout=10)
    assert mails, mails_since(host, since)
    assert {mail["to"] for mail in mails} == {"ops@example.com"}
    assert all(mail["body"].strip() == "acme report" for mail in mails), mails


# --- cron -----------------------------------------------------------------------------


@only("cron")
def test_the_cron_file_has_exactly_the_expected_lines(host, variables, scheduled, wanted_backend):
    mailto = variables.get("schedule_mailto", "")
    expected = [
        f'MAILTO="{mailto}"',
        f'HOME="{HOME}"',
        f'PATH="{JOB_PATH}"',
        'SHELL="/bin/bash"',
        'DJANGOOPS_STDERR="problems"',
    ]
    expected += [f"{when} shop {COMMANDS}/{name}.sh" for name, when in scheduled.items()]
    assert cron_file_lines(host) == expected
    # cron reads only files of root's that nobody else may write.
    cron_file = host.file(CRON_FILE)
    assert (cron_file.user, cron_file.group, cron_file.mode) == ("root", "root", 0o644)


@only("cron")
def test_cron_is_installed_running_and_enabled(host, wanted_backend):
    assert host.package("cron").is_installed
    assert host.service("cron").is_running
    assert host.service("cron").is_enabled


@only("cron")
def test_no_systemd_unit_of_the_project_is_left(host, wanted_backend):
    assert host.run(f"ls /etc/systemd/system/{UNIT_PREFIX}*").rc != 0
    assert UNIT_PREFIX not in host.run("systemctl list-timers --all --no-pager").stdout


# --- systemd ---------------------------------------------------------------------------


@only("systemd")
def test_units_pass_systemd_analyze_verify(host, scheduled, wanted_backend):
    units = host.run(f"ls /etc/systemd/system/{UNIT_PREFIX}*").stdout.split()
    assert sorted(units) == sorted(
        f"/etc/systemd/system/{UNIT_PREFIX}{name}.{kind}" for name in scheduled for kind in ("service", "timer")
    )
    result = host.run("systemd-analyze verify " + " ".join(units))
    assert result.rc == 0, result.stderr
    assert UNIT_PREFIX not in result.stderr, result.stderr


@only("systemd")
def test_timers_are_listed_with_their_next_run(host, wanted_backend):
    listed = host.run("systemctl list-timers --all --no-pager").stdout
    for name, calendar in CALENDAR.items():
        timer = f"{UNIT_PREFIX}{name}.timer"
        assert timer in listed
        # A timer that is elapsing right now (the every-minute probe, at :00) has no
        # next elapse for a moment: asked again, it has.
        properties = "TimersCalendar,NextElapseUSecRealtime,ActiveState"
        for _i in range(20):
            show = host.run(f"systemctl show --property={properties} {timer}").stdout
            next_run = next(line for line in show.splitlines() if line.startswith("NextElapseUSecRealtime="))
            if next_run.split("=", 1)[1] not in ("", "0", "n/a"):
                break
            time.sleep(0.2)
        assert f"OnCalendar={calendar} ;" in show, show
        assert "ActiveState=active" in show
        assert next_run.split("=", 1)[1] not in ("", "0", "n/a"), show
        assert host.service(timer).is_enabled


@only("systemd")
def test_the_backup_and_test_restore_run_inside_the_sandbox(host, run_job, wanted_backend):
    before = host.run(f"readlink {HOME}/db_backups/latest").stdout.strip()
    time.sleep(1)  # backups are named by the second
    assert run_job("backup_db") == 0, host.run(f"tail -n 20 {LOGS}/backup_db.log").stdout
    after = host.run(f"readlink {HOME}/db_backups/latest").stdout.strip()
    assert after and after != before
    assert run_job("verify_db") == 0, host.run(f"tail -n 20 {LOGS}/verify_db.log").stdout


@only("systemd")
def test_the_sandbox_keeps_jobs_from_writing_elsewhere(host, run_job, wanted_backend):
    started = time.time()
    assert run_job("sandbox-probe") == 12
    assert not host.file(f"{HOME}/src/shop/.sandbox-probe").exists
    assert any("Read-only file system" in line for line in log_lines_since(host, "sandbox-probe", started))
    # The same command outside the sandbox can write there: the test can fail.
    assert host.run(f"runuser -u shop -- touch {HOME}/src/shop/.sandbox-probe").rc == 0
    host.run(f"rm -f {HOME}/src/shop/.sandbox-probe")


@only("systemd")
def test_a_job_runs_in_the_named_container(host, variables, run_job, wanted_backend):
    container = variables.get("test_app_container")
    if not container:
        pytest.skip("this host has no Docker socket in the test bed")
    started = time.time()
    assert run_job("in-app-container") == 0, host.run(f"tail -n 5 {LOGS}/in-app-container.log").stdout
    lines = log_lines_since(host, "in-app-container", started)
    assert any(f"running in the container {container}:" in line for line in lines), lines
    # The host is Debian 13; the container it reached is Debian 12.
    assert any(" OUT   Debian 12." in line for line in lines), lines
    assert host.file("/etc/debian_version").content_string.startswith("13")


@only("systemd")
def test_no_cron_entry_of_the_project_is_left(host, wanted_backend):
    assert not host.file(CRON_FILE).exists
    assert V1_MARKER not in crontab_text(host)


# --- switching the backend and back -------------------------------------------------------

INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE") or f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/inventory"


def apply_schedule(hostname, backend):
    """The schedule role alone on one scenario host, with the scenario's variables and
    `backend`; returns (exit code, output)."""
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            INVENTORY,
            "--limit",
            hostname,
            "-e",
            f"schedule_backend={backend}",
            "molecule/shared/playbooks/converge_schedule.yml",
        ],
        capture_output=True,
        text=True,
        cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"],
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_switching_the_backend_and_back_leaves_the_teams_crontab_alone(host, variables, backend, scheduled):
    """To the other backend and back: after each run the team's crontab is as it was,
    and after the run that put the role's cron file back, cron still gives the team's
    job its MAILTO and PATH."""
    if not variables.get("test_round_trip"):
        pytest.skip("one host per scenario switches back and forth")
    other = "systemd" if backend == "cron" else "cron"
    for step in (other, backend):
        rc, output = apply_schedule(host.backend.get_hostname(), step)
        assert rc == 0, output
        since = time.time()
        assert crontab_text(host) == TEAM_CRONTAB, f"after switching to {step}"
        assert host.file(CRON_FILE).exists == (step == "cron")
        timers = host.run(f"ls /etc/systemd/system/{UNIT_PREFIX}*.timer").stdout.split()
        assert len(timers) == (len(scheduled) if step == "systemd" else 0), timers
        if step != "cron":
            continue
        # With the role's cron file beside it (the state in which its lines could
        # reach the team's job), cron runs the team's job as the team set it up.
        # With timers, the team's crontab, compared above, is all cron reads.
        env = wait_for(lambda: team_run_since(host, since), timeout=70)  # noqa: B023 (called at once)
        assert env, f"no run of the team's job after switching to {step}"
        assert_teams_run(host, env, since)


# --- bad input ---------------------------------------------------------------------------

# The project as the scenario set it up, so that the project role (a dependency,
# applied first) has nothing to change.
GOOD = {"project_name": "shop", "project_metrics_dir": "/var/lib/djangoops-metrics", "schedule_backend": "cron"}
BAD_INPUT = {
    "unknown-backend": ({"schedule_backend": "anacron"}, "schedule_backend"),
    "bad-hour": ({"schedule_backup_time": "0 25 * * *"}, "hour 25 is outside 0-23"),
    "four-fields": ({"schedule_verify_time": "0 4 * *"}, "must have five fields"),
    "reboot": ({"schedule_clear_sessions_time": "@reboot"}, "no systemd equivalent"),
    "reserved-name": (
        {"schedule_jobs": [{"name": "backup_db", "time": "@daily", "command": "true"}]},
        "not one of backup_db",
    ),
    "bad-name": ({"schedule_jobs": [{"name": "a b", "time": "@daily", "command": "true"}]}, "a job name takes"),
    "no-command": ({"schedule_jobs": [{"name": "x", "time": "@daily"}]}, "job 'x' has no command"),
    "no-time": ({"schedule_jobs": [{"name": "x", "command": "true"}]}, "time"),
    "quote": ({"schedule_mailto": 'ops@example.com" x'}, "schedule_mailto: with the cron"),
    "newline": ({"schedule_path": "/usr/bin\n* * * * * root id"}, "schedule_path: with the cron"),
    "relative-write-path": (
        {
            "schedule_backend": "systemd",
            "schedule_jobs": [{"name": "x", "time": "@daily", "command": "true", "read_write_paths": ["relative/dir"]}],
        },
        "relative/dir",
    ),
}


@pytest.fixture(scope="module")
def bad_input_runs(host, variables, tmp_path_factory):
    """Every BAD_INPUT case applied in one ansible-playbook run, with what the project
    user's crontab and the role's cron file held before and after."""
    if not variables.get("test_bad_input"):
        pytest.skip("validation does not depend on the platform or the backend; one host is enough")
    before = crontab_text(host), cron_file_text(host)
    cases = {case: {**GOOD, **extra_vars} for case, (extra_vars, _message) in BAD_INPUT.items()}
    rc, outputs, recap = apply_role_cases(
        host.backend.get_hostname(), "djangoops.maintenance.schedule", cases, tmp_path_factory.mktemp("bad-input")
    )
    return rc, outputs, recap, before, (crontab_text(host), cron_file_text(host))


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_fails_with_a_clear_message_and_changes_nothing(bad_input_runs, case):
    rc, outputs, recap, before, after = bad_input_runs
    output = outputs.get(case, "")
    assert f"case {case} refused" in output, output or recap
    assert BAD_INPUT[case][1] in output, output
    assert rc == 0 and "changed=0" in recap and "failed=0" in recap, recap
    assert after == before


def test_a_missing_backup_script_is_named(host, variables, tmp_path):
    hostname = host.backend.get_hostname()
    if not variables.get("test_bad_input"):
        pytest.skip("validation does not depend on the platform or the backend; one host is enough")
    # A second project on the same server, without djangoops.maintenance.db_backup.
    rc, output = apply_role(hostname, "djangoops.maintenance.schedule", {"project_name": "blog"}, tmp_path)
    assert rc != 0, output
    assert "/home/blog/commands/backup_db.sh does not exist" in output, output
    assert "schedule_backup_state" in output, output
    assert host.run("crontab -l -u blog").rc != 0  # nothing scheduled for it
    assert not host.file("/etc/cron.d/djangoops-blog").exists
