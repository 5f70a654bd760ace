"""pitr_archive_db.sh (commands/pitr_archive.py), the project user's side: the root
side's summary logged when something was archived, the metrics, the exit code of a
repository that could not be written. The root side is test_pitr_mariadb.py's."""

import pytest
from command_helpers import RootSide
from djangoops import pitr
from djangoops.commands import pitr_archive
from djangoops.errors import Exit

OK = {"through": 1796000000.0, "error": ""}


def summary(**changes):
    done = {"passes": 12, "skipped": 0, "files": [], "bytes": 0, "gap": None, "timeline": "20261207T000000Z"}
    done.update(repositories={"local": OK, "offsite": OK}, asked_at=1796000000.0)
    done.update(changes)
    return done


@pytest.fixture
def root_side(cmd, monkeypatch):
    cmd.write_database(engine="mysql")
    return RootSide(monkeypatch, lambda *args: cmd.run(pitr_archive.main, list(args), script="pitr_archive_db"))


def test_archived_logs_are_logged_and_measured(cmd, root_side):
    root_side.messages = [{"archived": summary(files=["mysql-bin.000003", "mysql-bin.000004"], bytes=3 << 20)}]
    assert root_side.run() == Exit.OK
    assert root_side.asked() == pitr.ASK_ARCHIVE + "\n"
    assert cmd.lines("INFO", "pitr_archive_db")[0] == (
        "archived 2 binary logs (3.0MB, mysql-bin.000003 to mysql-bin.000004) into local, offsite"
    )
    assert cmd.metric("pitr_archive_files", "pitr_archive_db") == "2"
    assert cmd.metric("pitr_archive_failing", "pitr_archive_db") == "0"


def test_an_idle_minute_logs_nothing(cmd, root_side):
    root_side.messages = [{"archived": summary()}]
    assert root_side.run() == Exit.OK
    assert cmd.lines("INFO", "pitr_archive_db") == []  # not even "finished": the metrics say it ran
    assert cmd.metric("job_exit_code", "pitr_archive_db") == "0"
    assert cmd.metric("pitr_archive_files", "pitr_archive_db") == "0"


@pytest.mark.parametrize(
    ("failing", "code"),
    [("offsite", Exit.OFFSITE_FAILED), ("local", Exit.DUMP_FAILED)],
)
def test_a_repository_that_cannot_be_written_fails_the_run(cmd, root_side, failing, code):
    error = f"restic backup in the {failing} repository failed: restic failed (exit code 1): Fatal: no"
    repositories = {"local": OK, "offsite": OK, failing: {"through": None, "error": error}}
    root_side.messages = [{"archived": summary(files=["mysql-bin.000003"], bytes=10, repositories=repositories)}]
    assert root_side.run() == code
    assert cmd.lines("ERROR", "pitr_archive_db")[0] == error
    assert cmd.metric("pitr_archive_failing", "pitr_archive_db") == "1"
    other = "local" if failing == "offsite" else "offsite"
    assert cmd.lines("INFO", "pitr_archive_db")[0].endswith(f"into {other}")


def test_a_gap_is_warned(cmd, root_side):
    gap = {"after": "mysql-bin.000002", "next": "mysql-bin.000004", "timeline": "t", "at": 1}
    root_side.messages = [{"archived": summary(gap=gap)}]
    assert root_side.run() == Exit.OK
    assert "the archive misses binary logs after mysql-bin.000002" in cmd.lines("WARN", "pitr_archive_db")[0]


def test_postgresql_is_refused(cmd, monkeypatch):
    cmd.write_database(engine="postgresql")
    assert cmd.run(pitr_archive.main, [], script="pitr_archive_db") == Exit.CONFIG
    assert "needs MariaDB with db_backup_pitr" in cmd.lines("ERROR", "pitr_archive_db")[0]


def test_a_repository_another_run_pushes_to_is_no_failure(cmd, root_side):
    busy = {"through": 1795999990.0, "error": "", "busy": True}
    root_side.messages = [
        {"archived": summary(files=["mysql-bin.000003"], bytes=10, repositories={"local": OK, "offsite": busy})}
    ]
    assert root_side.run() == Exit.OK
    assert cmd.lines("INFO", "pitr_archive_db")[0].endswith("into local (offsite: another run's push takes them)")
