"""The alert rules against what the servers really export (prepare_monitoring.yml): node_exporter
from Debian's package reads every metrics file the scripts and the schedule role write, and
Prometheus from Debian's package, scraping both servers with the collection's rules file loaded,
finds every series the rules name, with labels that join, evaluates each rule without an error,
fires DjangoopsJobFailed when a backup fails (and stops when the next one succeeds), and would fire
the staleness alerts once the clock passes what the schedule allows. Servers outside the groups
`monitored` and `prometheus` (the cron scenario's) skip these."""

import json
import os
import re
import time
from pathlib import Path

import pytest
from schedule_helpers import wait_for
from shop_project import LOGS, quote

METRICS_DIR = "/var/lib/djangoops-metrics"
RULES = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "templates" / "prometheus" / "djangoops.rules.yml"
# Every metric the rules read, from the rules file itself.
RULE_METRICS = sorted(set(re.findall(r"\bdjangoops_[a-z_]+\b", RULES.read_text())))
# This scenario has no off-site repository and no point-in-time recovery: the offsite and pitr
# scenarios (from the metrics files) and the engine's unit tests prove those series.
OFFSITE = "djangoops_offsite_"
PITR = "djangoops_pitr_"


@pytest.fixture(scope="module")
def groups(variables):
    return variables.get("group_names", [])


@pytest.fixture(scope="module")
def monitored(groups):
    if "monitored" not in groups:
        pytest.skip("this scenario runs no node_exporter")


@pytest.fixture(scope="module")
def prometheus(host, groups, variables):
    """Queries this host's Prometheus (its HTTP API on 127.0.0.1:9090); returns the `data`."""
    if "prometheus" not in groups:
        pytest.skip("Prometheus runs on another server" if "monitored" in groups else "no Prometheus here")

    def query(path, **params):
        script = (
            "import json, sys, urllib.parse, urllib.request\n"
            "url = 'http://127.0.0.1:9090' + sys.argv[1] + '?' + urllib.parse.urlencode(json.loads(sys.argv[2]))\n"
            "print(urllib.request.urlopen(url, timeout=10).read().decode())\n"
        )
        result = host.run(f"python3 -c {quote(script)} {quote(path)} {quote(json.dumps(params))}")
        assert result.rc == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["status"] == "success", answer
        return answer["data"]

    return query


def series(prometheus, expr):
    return prometheus("/api/v1/query", query=expr)["result"]


def node_metrics(host):
    result = host.run("python3 -c \"import urllib.request; print(urllib.request.urlopen("
                      "'http://127.0.0.1:9100/metrics', timeout=10).read().decode())\"")  # fmt: skip
    assert result.rc == 0, result.stderr
    return result.stdout


def test_node_exporter_reads_every_metrics_file_as_installed(host, monitored, run_job, variables):
    # A backup and a test restore of this server's own, so that their files are there.
    assert run_job("backup_db") == 0, host.run(f"tail -n 20 {LOGS}/backup_db.log").stdout
    assert run_job("verify_db") == 0, host.run(f"tail -n 20 {LOGS}/verify_db.log").stdout
    files = host.run(f"ls {METRICS_DIR}").stdout.split()
    assert "djangoops_shop_backup_db.prom" in files and "djangoops_shop.schedule.prom" in files, files

    def exported():
        text = node_metrics(host)
        read = set(re.findall(r'node_textfile_mtime_seconds\{file="(?:[^"]*/)?([^"/]+)"\}', text))
        return text if read >= set(files) else None

    text = wait_for(exported, 30)
    assert text, f"node_exporter did not read all of {files}"
    assert re.search(r"^node_textfile_scrape_error 0$", text, re.M), "node_exporter could not read a file"
    assert re.search(r'^djangoops_job_exit_code\{project="shop",script="backup_db"\} 0$', text, re.M)
    assert re.search(r'^djangoops_job_expected_interval_seconds\{project="shop",script="backup_db"\} 86400$',
                     text, re.M)  # fmt: skip
    # node_exporter sorts the labels by name.
    engine = variables["db_backup_engine"]
    assert re.search(
        rf'^djangoops_backup_disk_free_bytes\{{engine="{engine}",project="shop",script="backup_db"\}} [1-9]', text, re.M
    )


def test_every_series_the_rules_read_is_scraped_from_every_server(host, prometheus, variables):
    instances = set(variables["groups"]["monitored"])
    assert len(instances) == 2
    wanted = [name for name in RULE_METRICS if not name.startswith((OFFSITE, PITR))]
    assert "djangoops_job_expected_interval_seconds" in wanted and "djangoops_backup_size_bytes" in wanted

    def missing():
        out = {}
        for name in wanted:
            found = {s["metric"].get("instance") for s in series(prometheus, f'{name}{{project="shop"}}')}
            if instances - found:
                out[name] = sorted(instances - found)
        return out

    # The other server's tests take its backup and test restore at the same time as these.
    if not wait_for(lambda: not missing(), 240, interval=5):
        pytest.fail(f"not scraped: {missing()}")
    labels = series(prometheus, 'djangoops_job_last_success_timestamp_seconds{script="backup_db"}')[0]["metric"]
    assert {"instance", "job", "project", "script"} <= set(labels)
    assert labels["job"] == "node" and "exported_job" not in labels


def test_every_rule_is_loaded_and_evaluates_without_an_error(prometheus):
    wanted = set(re.findall(r"^\s+- alert: (\S+)$", RULES.read_text(), re.M))
    assert len(wanted) == 9

    def evaluated():
        rules = [r for g in prometheus("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = wait_for(evaluated, 30)
    assert rules and {r["name"] for r in rules} == wanted
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def rule_expr(prometheus, name):
    return next(r["query"] for g in prometheus("/api/v1/rules")["groups"] for r in g["rules"] if r["name"] == name)


def firing(prometheus, name, **labels):
    return [a for a in prometheus("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip


# The clock the rules compare against, moved on: past what the schedule allows and its hour
# (a daily backup: 25 hours; a weekly test restore: 7 days and 1 hour), and short of it.
@pytest.mark.parametrize(
    ("alert", "overdue", "not_yet"),
    [("DjangoopsBackupStale", 26 * 3600, 23 * 3600), ("DjangoopsTestRestoreStale", 7 * 86400 + 2 * 3600, 6 * 86400)],
)
def test_a_staleness_rule_fires_once_the_schedule_is_overdue_on_each_server(
    prometheus, variables, alert, overdue, not_yet
):
    """Each rule as Prometheus loaded it, evaluated with its clock moved on: nothing is stale
    now (the backups and test restores above are minutes old) nor a little before the
    schedule's longest gap and its hour have passed, and every server is once they have,
    which proves the rule's joins with the schedule role's series on what is really scraped."""
    instances = sorted(variables["groups"]["monitored"])
    expr = rule_expr(prometheus, alert)
    assert "time()" in expr

    def stale(later):
        moved = expr.replace("time()", f"(time() + {later})")
        return sorted(s["metric"]["instance"] for s in series(prometheus, moved) if s["metric"]["project"] == "shop")

    # A scrape that fails (2 s apart, on two busy cores) marks every series of its server stale
    # until the next one: the rule is asked again until each server's series are there.
    script = re.search(r'script="(\w+)"', expr).group(1)
    wanted = f'djangoops_job_last_success_timestamp_seconds{{project="shop",script="{script}"}}'

    def scraped():
        return sorted(s["metric"]["instance"] for s in series(prometheus, wanted)) == instances

    assert wait_for(scraped, 60), series(prometheus, 'up{job="node"}')
    assert stale(0) == []
    assert stale(not_yet) == []
    assert wait_for(lambda: stale(overdue) == instances, 30), (stale(overdue), series(prometheus, 'up{job="node"}'))


def test_a_failed_backup_fires_job_failed_naming_the_server_until_one_succeeds(host, prometheus, run_job, variables):
    me = variables["inventory_hostname"]
    service = {"postgresql": "postgresql", "mysql": "mariadb"}[variables["db_backup_engine"]]
    assert firing(prometheus, "DjangoopsJobFailed", instance=me, script="backup_db") == []
    host.run_expect([0], f"systemctl stop {quote(service)}")
    try:
        code = run_job("backup_db")
    finally:
        host.run_expect([0], f"systemctl start {quote(service)}")
    assert code != 0
    alerts = wait_for(lambda: firing(prometheus, "DjangoopsJobFailed", instance=me, script="backup_db"), 30)
    assert len(alerts) == 1, prometheus("/api/v1/alerts")
    assert alerts[0]["labels"]["project"] == "shop" and alerts[0]["labels"]["severity"] == "warning"
    assert alerts[0]["annotations"]["summary"] == f"shop on {me}: backup_db failed with exit code {code}"
    assert alerts[0]["annotations"]["runbook_url"] == "README.md#djangoopsjobfailed"
    # The failure kept the last success: the staleness rule does not fire for it.
    assert firing(prometheus, "DjangoopsBackupStale", instance=me) == []

    assert run_job("backup_db") == 0, host.run(f"tail -n 20 {LOGS}/backup_db.log").stdout
    started = time.time()
    assert wait_for(lambda: not firing(prometheus, "DjangoopsJobFailed", instance=me, script="backup_db"), 30), (
        f"still firing {time.time() - started:.0f} s after a good backup"
    )
