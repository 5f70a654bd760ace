"""pitr_check_db.sh (commands/pitr_check.py), the project user's side: the root side's
status judged (archiving failing or lagging, nothing to restore from), one log line, the
metrics the alert rules read, the ping. The root side (pitr.StatusSide) is test_pitr.py's."""

import copy

import pytest
from command_helpers import PITR_ARCHIVER, RootSide
from djangoops import pitr
from djangoops.commands import pitr_check
from djangoops.errors import Exit

STATUS = {
    # Nothing written since segment 7 was archived.
    "archiver": {**PITR_ARCHIVER, "current_wal": "000000010000000000000007"},
    "backups": [
        {"type": "full", "label": "20261207-020000F", "stop": 1795990100},
        {"type": "diff", "label": "20261207-020000F_1D", "stop": 1795999050},
    ],
    "repository": {"code": 0, "message": "ok"},
    "max_archive_lag": 300,
}


FIGURES = (
    "pitr_archive_lag_seconds",
    "pitr_archive_lag_allowed_seconds",
    "pitr_archive_failing",
    "pitr_archive_failures_total",
    "pitr_restorable_timestamp_seconds",
    "pitr_archived_timestamp_seconds",
    "pitr_newest_backup_timestamp_seconds",
    "pitr_backups",
)


def status(**archiver):
    changed = copy.deepcopy(STATUS)
    changed["archiver"].update(archiver)
    return changed


@pytest.fixture
def root_side(cmd, monkeypatch):
    return RootSide(monkeypatch, lambda *args: cmd.run(pitr_check.main, list(args), script="pitr_check_db"))


def metric(cmd, name):
    return cmd.metric(name, "pitr_check_db")


def metrics(cmd, *names):
    """The check's figures NAMES, by name."""
    return {name: metric(cmd, name) for name in names}


def test_archiving_that_keeps_up_is_logged_measured_and_pinged(cmd, root_side):
    cmd.write_database(healthcheck_urls={"pitr_check_db": "https://hc.example/wal"})
    root_side.messages = [{"status": STATUS}]
    assert root_side.run() == Exit.OK
    assert root_side.asked() == pitr.ASK_STATUS + "\n"
    assert cmd.lines("INFO", "pitr_check_db")[0] == (
        "archiving keeps up: the newest archived segment 000000010000000000000007 at 2026-11-30 00:53:20 UTC, "
        "nothing waits; restorable to 2026-11-30 00:53:50 UTC; 2 backups, the newest of 2026-11-30 00:37:30 UTC"
    )
    assert metrics(cmd, *FIGURES) == dict(
        zip(FIGURES, ["0.0", "300", "0", "0", "1796000030.25", "1796000000.5", "1795999050", "2"], strict=True)
    )
    assert cmd.pings == [("https://hc.example/wal", "start"), ("https://hc.example/wal", "0")]


def test_wal_waiting_within_the_allowed_lag_is_measured_and_passes(cmd, root_side):
    root_side.messages = [{"status": status(current_wal="000000010000000000000008")}]
    assert root_side.run() == Exit.OK
    assert "lag 30 s; restorable to 2026-11-30 00:53:20 UTC" in cmd.lines("INFO", "pitr_check_db")[0]
    # Restorable up to the newest archived segment, not to now.
    assert metrics(cmd, "pitr_archive_lag_seconds", "pitr_restorable_timestamp_seconds") == {
        "pitr_archive_lag_seconds": "29.8",
        "pitr_restorable_timestamp_seconds": "1796000000.5",
    }


def test_archiving_that_lags_fails_with_the_segments_named(cmd, root_side):
    root_side.messages = [{"status": status(current_wal="00000001000000010000000A", now=1796000401.0)}]
    assert root_side.run() == Exit.BAD_BACKUP
    assert cmd.lines("ERROR", "pitr_check_db")[0] == (
        "archiving lags: the newest archived segment, 000000010000000000000007, is 400 s old while "
        "00000001000000010000000A waits (db_backup_pitr_max_archive_lag 300 s)"
    )
    assert metrics(cmd, "pitr_archive_lag_seconds", "job_exit_code", "job_last_success_timestamp_seconds") == {
        "pitr_archive_lag_seconds": "400.5",
        "job_exit_code": "8",
        "job_last_success_timestamp_seconds": "0",
    }


def test_failing_archiving_fails_the_check_and_is_its_own_metric(cmd, root_side):
    root_side.messages = [
        {
            "status": status(
                failed_wal="000000010000000000000008",
                failed_at=1796000020.0,
                failed_count=3,
                current_wal="000000010000000000000008",
            )
        }
    ]
    assert root_side.run() == Exit.BAD_BACKUP
    assert cmd.lines("ERROR", "pitr_check_db")[0] == (
        "archiving fails: 000000010000000000000008 failed at 2026-11-30 00:53:40 UTC (3 failures since the "
        "statistics were reset); read /var/log/pgbackrest/ and PostgreSQL's log"
    )
    assert metric(cmd, "pitr_archive_failing") == "1"
    assert metric(cmd, "pitr_archive_failures_total") == "3"


def test_a_failure_before_the_newest_success_is_over(cmd, root_side):
    root_side.messages = [{"status": status(failed_wal="000000010000000000000006", failed_at=1795999000.0)}]
    assert root_side.run() == Exit.OK
    assert metric(cmd, "pitr_archive_failing") == "0"


def test_a_repository_without_a_backup_has_nothing_restorable(cmd, root_side):
    empty = status()
    empty["backups"] = []
    empty["repository"] = {"code": 2, "message": "no valid backups"}
    root_side.messages = [{"status": empty}]
    assert root_side.run() == Exit.BAD_BACKUP
    assert cmd.lines("ERROR", "pitr_check_db")[0] == (
        "the repository holds no backup: nothing can be restored to a time until pitr_backup_db.sh takes one"
    )
    assert metric(cmd, "pitr_restorable_timestamp_seconds") == "0.0"
    assert metric(cmd, "pitr_backups") == "0"


@pytest.mark.parametrize(
    ("changes", "repository", "error"),
    [
        (
            {"archive_mode": "off"},
            None,
            "the cluster runs with archive_mode = off: nothing is archived (it takes effect when PostgreSQL restarts)",
        ),
        ({"current_wal": None}, None, "the cluster is in recovery (a standby?): check the primary's archiving"),
        (
            {},
            {"code": -1, "message": "pgBackRest info failed (exit code 55)"},
            "pgBackRest says of the stanza: pgBackRest info failed (exit code 55) (status -1)",
        ),
        (
            {"archived_wal": None, "archived_at": None, "current_wal": "000000010000000000000001"},
            None,
            "archiving lags: no segment has been archived yet while 000000010000000000000001 waits",
        ),
    ],
)
def test_each_problem_is_named(cmd, root_side, changes, repository, error):
    answer = status(**changes)
    if repository:
        answer["repository"] = repository
    root_side.messages = [{"status": answer}]
    assert root_side.run() == Exit.BAD_BACKUP
    assert cmd.lines("ERROR", "pitr_check_db")[0].startswith(error)


def test_no_segment_archived_yet_is_an_unbounded_lag(cmd, root_side):
    root_side.messages = [{"status": status(archived_wal=None, archived_at=None)}]
    assert root_side.run() == Exit.BAD_BACKUP
    assert metric(cmd, "pitr_archive_lag_seconds") == "+Inf"


@pytest.mark.parametrize(
    ("archived", "current", "waiting"),
    [
        # After a promotion: the new timeline's history file, then its first segment.
        ("00000002.history", "000000020000000000000009", True),
        # A backup's history file comes after its segment.
        ("000000010000000000000007.00000028.backup", "000000010000000000000007", False),
        ("000000010000000000000007", "000000020000000000000007", True),
        ("000000010000000100000000", "0000000100000000000000FF", False),
    ],
)
def test_wal_waits_only_when_the_segment_written_is_past_the_newest_archived(
    cmd, root_side, archived, current, waiting
):
    root_side.messages = [{"status": status(archived_wal=archived, current_wal=current)}]
    assert root_side.run() == Exit.OK
    assert (metric(cmd, "pitr_archive_lag_seconds") != "0.0") is waiting


def test_the_root_sides_failure_is_the_exit_code(cmd, root_side):
    message = "cannot ask the cluster (port 5432) how its archiving goes (exit code 2)"
    root_side.messages = [{"failed": {"code": 4, "message": message}}]
    assert root_side.run() == Exit.DB_UNAVAILABLE
    assert cmd.lines("ERROR", "pitr_check_db")[0] == message


def test_without_the_root_side_nothing_is_asked(cmd):
    assert cmd.run(pitr_check.main, [], script="pitr_check_db") == Exit.CONFIG
    assert cmd.lines("ERROR", "pitr_check_db")[0].startswith("pitr_check_db.sh must be started as root")
    assert cmd.fake.calls == []


def test_mariadb_status_is_judged_and_measured(cmd, root_side):
    cmd.write_database(engine="mysql")
    root_side.messages = [{"status": {**MARIADB_STATUS, "now": 1796000030.0}}]
    assert root_side.run() == Exit.OK
    assert root_side.asked() == pitr.ASK_STATUS + "\n"
    assert cmd.lines("INFO", "pitr_check_db")[0].startswith("archiving keeps up: every repository holds")
    assert metric(cmd, "pitr_archive_lag_seconds") == "10.0"


# --- MariaDB ---------------------------------------------------------------------------------

MARIADB = MARIADB_STATUS = {
    "engine": "mysql",
    "now": 1796000030.0,
    "log_bin": True,
    "binlog_format": "ROW",
    "timeline": "20261207T000000Z",
    "last_file": "mysql-bin.000009",
    "repositories": {
        "local": {"through": 1796000025.0, "error": ""},
        "offsite": {"through": 1796000020.0, "error": ""},
    },
    "gap": None,
    "bases": [{"label": "20261207T013000Z", "ended_at": 1795990000.0, "timeline": "20261207T000000Z"}],
    "max_archive_lag": 300,
}


def mariadb(**changes):
    changed = copy.deepcopy(MARIADB)
    changed.update(changes)
    return changed


def test_mariadb_keeping_up_is_judged_by_its_oldest_repository():
    verdict = pitr_check.judge_mariadb(mariadb(), 300)
    assert verdict.problems == []
    assert verdict.metrics["pitr_archive_lag_seconds"] == 10.0
    assert verdict.metrics["pitr_restorable_timestamp_seconds"] == 1796000020.0
    assert verdict.metrics["pitr_backups"] == 1
    assert verdict.summary.startswith("archiving keeps up: every repository holds the writes up to")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"log_bin": False}, "the server's binary log is off (log_bin)"),
        ({"binlog_format": "MIXED"}, "binlog_format MIXED, not ROW"),
        (
            {"repositories": {"local": {"through": 1796000025.0, "error": ""}, "offsite": {"through": 1795999000.0}}},
            "archiving lags: the offsite repository holds the writes up to",
        ),
        ({"repositories": {"local": {}}}, "nothing has been archived yet"),
        (
            {"repositories": {"local": {"through": 1796000025.0, "error": "restic backup in the local repository"}}},
            "archiving into the local repository fails: restic backup",
        ),
        ({"gap": {"after": "mysql-bin.000002"}}, "the archive misses binary logs after mysql-bin.000002"),
        ({"timeline": "20261208T000000Z"}, "no base of the archive's current timeline"),
    ],
)
def test_mariadb_problems_are_named(changes, problem):
    verdict = pitr_check.judge_mariadb(mariadb(**changes), 300)
    assert any(problem in p for p in verdict.problems), verdict.problems
