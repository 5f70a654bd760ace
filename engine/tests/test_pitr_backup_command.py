"""pitr_backup_db.sh (commands/pitr_backup.py), the project user's side: the root side's
answer logged, its figures in the metrics, the ping sent; refusals before anything is
asked. The root side (pitr.BackupSide) is test_pitr.py's."""

import pytest
from command_helpers import RootSide
from djangoops import pitr
from djangoops.commands import pitr_backup
from djangoops.errors import Exit

DONE = {
    "label": "20261207-020000F_20261208-020000D",
    "type": "diff",
    "seconds": 12.5,
    "database_bytes": 50 << 20,
    "repository_bytes": 3 << 20,
    "backups": 3,
}


@pytest.fixture
def root_side(cmd, monkeypatch):
    """The pipes the root side opens, its answers (.messages) written beforehand; what the
    child asked is .asked() afterwards."""
    return RootSide(monkeypatch, lambda *args: cmd.run(pitr_backup.main, list(args), script="pitr_backup_db"))


def test_the_backup_is_logged_measured_and_pinged(cmd, root_side):
    cmd.write_database(healthcheck_urls={"pitr_backup_db": "https://hc.example/pitr"})
    root_side.messages = [{"log": "pgBackRest takes a diff backup of the cluster (stanza main)"}, {"done": DONE}]
    assert root_side.run() == Exit.OK
    assert root_side.asked() == pitr.ASK_BACKUP + "\n"
    assert cmd.lines("INFO", "pitr_backup_db")[:2] == [
        "pgBackRest takes a diff backup of the cluster (stanza main)",
        "pgBackRest diff backup 20261207-020000F_20261208-020000D in 12.5 s: the cluster holds 50MB, the "
        "repository took 3.0MB more; the stanza keeps 3 backups",
    ]
    assert cmd.metric("pitr_backup_seconds", "pitr_backup_db") == "12.5"
    assert cmd.metric("pitr_backup_database_bytes", "pitr_backup_db") == str(50 << 20)
    assert cmd.metric("pitr_backup_repository_bytes", "pitr_backup_db") == str(3 << 20)
    assert cmd.metric("pitr_backup_taken", "pitr_backup_db") == "1"
    assert cmd.metric("job_last_success_timestamp_seconds", "pitr_backup_db") is not None
    assert cmd.pings == [("https://hc.example/pitr", "start"), ("https://hc.example/pitr", "0")]


def test_each_offsite_backup_gets_its_line(cmd, root_side):
    offsite = {**DONE, "repository": 2, "label": "20261208-020000F", "type": "full", "repository_bytes": 40 << 20}
    root_side.messages = [{"done": {**DONE, "repository": 1, "offsite": [offsite]}}]
    assert root_side.run() == Exit.OK
    assert cmd.lines("INFO", "pitr_backup_db")[1] == (
        "pgBackRest full backup 20261208-020000F in off-site repository 2 in 12.5 s: it took 40MB more there; it "
        "keeps 3 backups"
    )


def test_a_night_without_a_backup_is_a_success_that_says_so(cmd, root_side):
    """auto found the archive small since the newest backup: no backup anywhere, each
    repository's line says so, the job succeeded, and no backup's figures are reported."""
    why = "the archive holds 1.0MB of WAL since backup 20261207-020000F, 2.0 % of the cluster's 50MB, under ..."
    kept = {**DONE, "label": "20261207-020000F", "type": "full", "seconds": 0.0, "taken": False, "why": why}
    root_side.messages = [
        {"log": f"pgBackRest takes no backup of the cluster (stanza main): {why}"},
        {"done": {**kept, "repository": 1, "offsite": [{**kept, "repository": 2, "backups": 2}]}},
    ]
    assert root_side.run() == Exit.OK
    assert cmd.lines("INFO", "pitr_backup_db")[1:3] == [
        "pgBackRest took no backup: the archive holds what changed since backup 20261207-020000F (full); the stanza "
        "keeps 3 backups",
        "pgBackRest took no backup in off-site repository 2: the archive holds what changed since backup "
        "20261207-020000F (full); the stanza keeps 2 backups there",
    ]
    assert cmd.metric("pitr_backup_taken", "pitr_backup_db") == "0"
    assert cmd.metric("pitr_backup_seconds", "pitr_backup_db") is None
    assert cmd.metric("job_exit_code", "pitr_backup_db") == "0"


def test_a_failed_backup_exits_with_the_root_sides_code_and_is_no_success(cmd, root_side):
    message = "pgBackRest's diff backup failed (exit code 56); the stanza's earlier backups are as they were"
    root_side.messages = [{"failed": {"code": 7, "message": message}}]
    assert root_side.run() == Exit.DUMP_FAILED
    assert cmd.lines("ERROR", "pitr_backup_db")[0] == message
    assert cmd.metric("job_last_success_timestamp_seconds", "pitr_backup_db") == "0"
    assert cmd.metric("job_exit_code", "pitr_backup_db") == "7"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--type", "weekly"], Exit.USAGE, "--type takes auto, full, diff or incr, got 'weekly'"),
        ([], Exit.CONFIG, "pitr_backup_db.sh must be started as root"),
    ],
)
def test_refusals_ask_nothing(cmd, args, code, error):
    assert cmd.run(pitr_backup.main, args, script="pitr_backup_db") == code
    assert cmd.lines("ERROR", "pitr_backup_db")[0].startswith(error)
    assert cmd.fake.calls == []


def test_a_mariadb_base_is_logged_and_measured(cmd, root_side):
    cmd.write_database(engine="mysql")
    base = {"label": "20261207T013000Z", "seconds": 4.5, "file": "mysql-bin.000012", "position": 1608}
    base.update(gtid="0-1-7", stream_bytes=80 << 20, added_bytes=2 << 20, copied_to=["offsite"], bases=2)
    root_side.messages = [{"done": base}]
    assert root_side.run("--type", "full") == Exit.OK
    assert root_side.asked() == pitr.ASK_BACKUP + "\n"
    assert cmd.lines("INFO", "pitr_backup_db")[0] == (
        "mariadb-backup base 20261207T013000Z in 4.5 s at mysql-bin.000012:1608 (GTID 0-1-7): the stream held 80MB, "
        "the local repository took 2.0MB more; copied to offsite; 2 bases kept"
    )
    assert cmd.metric("pitr_backup_database_bytes", "pitr_backup_db") == str(80 << 20)
    assert cmd.metric("pitr_backup_repository_bytes", "pitr_backup_db") == str(2 << 20)
    assert cmd.metric("pitr_backup_taken", "pitr_backup_db") == "1"


def test_another_engine_is_refused():
    """Only the two engines have a root side; a third is refused before anything is asked."""
    from djangoops.errors import Failure

    database = type("D", (), {"engine": "sqlite"})()
    with pytest.raises(Failure, match="needs db_backup_pitr; this project's database is sqlite"):
        pitr.Channel.for_command(database, "pitr_backup_db.sh", "why")
