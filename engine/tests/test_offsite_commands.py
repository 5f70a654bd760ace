"""push_db_backups, fetch_db_backup and check_offsite by hand: refused without
repositories (exit 3) or with an unknown --from (exit 2), the locks they take,
the fetched set published and its name printed, and the exit code 14 when a
repository fails. restic is the FakeRunner's."""

import json

import pytest
from command_helpers import (
    PROJECT,
    held_offsite,
    make_set,
    restic_rule,
    snapshot_id,
)
from djangoops import manifest
from djangoops.commands import offsite_commands
from djangoops.errors import Exit
from djangoops.lock import Lock

NAME = f"{PROJECT}_20251209T020000Z_daily.pgdump.zst"
OLDER = f"{PROJECT}_20251208T020000Z_daily.pgdump.zst"
NO_REPOSITORY = "no off-site repository is configured (db_backup_offsite_repositories)"


def run(cmd, command, script, *args):
    return cmd.run(command, list(args), script=script)


@pytest.mark.parametrize(
    ("command", "script"),
    [
        (offsite_commands.push, "push_db_backups"),
        (offsite_commands.fetch, "fetch_db_backup"),
        (offsite_commands.check, "check_offsite"),
    ],
)
def test_no_repository_exits_3_before_anything_runs(cmd, command, script):
    assert run(cmd, command, script) == Exit.CONFIG
    assert cmd.lines("ERROR", script) == [NO_REPOSITORY]
    assert cmd.fake.calls == []
    assert cmd.metrics(script) == ""  # refused before the run started


# --- push ------------------------------------------------------------------------------------------


def test_push_sends_every_missing_set_under_the_offsite_lock(cmd, held_locks):
    make_set(cmd.backups, OLDER)
    make_set(cmd.backups, NAME, latest=True)
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=b"[]")
    summary = json.dumps({"message_type": "summary", "data_added": 1536}).encode()
    cmd.fake.on(restic_rule("nas", "backup"), stdout=summary)

    assert run(cmd, offsite_commands.push, "push_db_backups", "-q") == Exit.OK

    pushed = [call.argv[-1] for call in cmd.fake.calls_to("restic") if "backup" in call.argv]
    assert pushed == [OLDER, NAME]  # oldest first
    assert [item.path for item in held_locks] == [str(cmd.backups / ".offsite.lock")]
    assert cmd.metric("job_exit_code", "push_db_backups") == "0"
    offsite_metrics = (cmd.metrics_dir / f"djangoops_{PROJECT}_offsite_nas.prom").read_text()
    assert 'djangoops_offsite_pushed_bytes{project="shop",repository="nas"} 3072' in offsite_metrics


def test_a_failed_push_exits_14(cmd):
    make_set(cmd.backups, NAME, latest=True)
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=b"[]")
    cmd.fake.on(restic_rule("nas", "backup"), fail=1, stderr="Fatal: unable to save snapshot: disk full")
    cmd.fake.on("ssh", returncode=0)
    assert run(cmd, offsite_commands.push, "push_db_backups") == Exit.OFFSITE_FAILED
    assert cmd.lines("ERROR", "push_db_backups")[0].startswith("the off-site copy to nas failed")


def test_push_waits_for_the_offsite_lock_as_long_as_told(cmd):
    cmd.write_offsite(repositories=["nas"])
    Lock(cmd.backups / ".offsite.lock", 0).acquire()
    assert run(cmd, offsite_commands.push, "push_db_backups", "--lock-wait", "0") == Exit.LOCKED
    assert run(cmd, offsite_commands.push, "push_db_backups", "--lock-wait", "x") == Exit.USAGE
    assert cmd.fake.calls_to("restic") == []


# --- fetch -------------------------------------------------------------------------------------------


@pytest.fixture
def remote(cmd, tmp_path):
    """NAME and OLDER in repository nas (and vault), not here."""
    elsewhere = tmp_path / "elsewhere"
    held_offsite(cmd, elsewhere, (OLDER, NAME), ("nas", "vault"), dump=lambda name: f"dump {name}".encode())
    return elsewhere


def test_fetch_publishes_the_newest_set_of_the_first_repository_and_prints_its_name(cmd, remote, capsys):
    (cmd.backups / f".{NAME}.partial").write_bytes(b"left by a killed run")

    assert run(cmd, offsite_commands.fetch, "fetch_db_backup") == Exit.OK

    assert capsys.readouterr().out == f"{NAME}\n"
    assert manifest.check_sha256(str(cmd.backups / f"{NAME}.sha256")) is None
    assert (cmd.backups / NAME).read_bytes() == f"dump {NAME}".encode()
    assert not (cmd.backups / ".fetch-staging").exists()
    assert not (cmd.backups / "latest").exists()  # a fetch does not move latest
    assert f"removing .{NAME}.partial, left by an interrupted run" in cmd.lines("WARN", "fetch_db_backup")
    assert {call.env["RESTIC_REPOSITORY"] for call in cmd.fake.calls_to("restic")} == {"rclone:nas:"}
    assert cmd.metric("job_exit_code", "fetch_db_backup") == "0"


def test_fetch_a_named_set_from_a_named_repository(cmd, remote, capsys):
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", OLDER, "--from", "nas", "-q") == Exit.OK
    assert capsys.readouterr().out == f"{OLDER}\n"
    assert (cmd.backups / OLDER).exists()
    assert not (cmd.backups / NAME).exists()


def test_a_set_already_here_is_not_downloaded_again(cmd, remote, capsys):
    make_set(cmd.backups, NAME, f"dump {NAME}".encode())
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup") == Exit.OK
    assert capsys.readouterr().out == f"{NAME}\n"
    assert not any("restore" in call.argv for call in cmd.fake.calls_to("restic"))
    assert any(line.endswith("is already here") for line in cmd.lines("INFO", "fetch_db_backup"))


def test_fetch_from_an_unknown_repository_exits_2(cmd, remote, capsys):
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", "--from", "tape") == Exit.USAGE
    assert cmd.lines("ERROR", "fetch_db_backup") == ["no off-site repository named 'tape'; configured: nas vault"]
    assert capsys.readouterr().out == ""
    assert cmd.fake.calls == []


def test_fetch_of_a_set_the_repository_lacks_exits_8(cmd, remote, capsys):
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", "shop_20250101T000000Z_daily.pgdump.zst") == 8
    assert capsys.readouterr().out == ""


def test_fetch_without_restic_exits_3(cmd, remote, monkeypatch):
    monkeypatch.setenv("PATH", str(cmd.root / "nothing-here"))
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup") == Exit.CONFIG
    assert cmd.fake.calls == []


def test_fetch_waits_for_the_backups_lock(cmd, remote):
    Lock(cmd.backups / ".lock", 0).acquire()
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", "--lock-wait", "0") == Exit.LOCKED
    assert cmd.fake.calls == []
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", "--lock-wait", "-") == Exit.USAGE


@pytest.mark.parametrize("before", ["2025-12-09 02:00", "2025-12-09T03:00:30+01:00", "2025-12-09T02:00:59Z"])
def test_fetch_by_arrival_takes_the_newest_set_that_reached_the_backup_host_before(cmd, remote, capsys, before):
    # NAME arrived at 2025-12-09 02:01:00 UTC, OLDER a day before.
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", "--arrived-before", before) == Exit.OK
    assert capsys.readouterr().out == f"{OLDER}\n"
    assert f"off-site repository nas: {OLDER} (snapshot {snapshot_id(OLDER)[:8]}) arrived 2025-12-08 02:01:00 UTC" in (
        cmd.lines("INFO", "fetch_db_backup")
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--arrived-before", "last tuesday"], "--arrived-before 'last tuesday' is not a time"),
        (["--arrived-before", "2025-12-09", NAME], f"name a set ({NAME}) or give --arrived-before, not both"),
    ],
)
def test_fetch_by_arrival_refuses_what_it_cannot_read(cmd, remote, args, error):
    assert run(cmd, offsite_commands.fetch, "fetch_db_backup", *args) == Exit.USAGE
    assert cmd.lines("ERROR", "fetch_db_backup")[0].startswith(error)
    assert cmd.fake.calls == []


# --- check -------------------------------------------------------------------------------------------


def test_check_reads_back_the_configured_share_of_every_repository(cmd):
    cmd.write_offsite(repositories=["nas", "vault"], check_subset="1/5")
    cmd.write_database(healthcheck_urls={"check_offsite": "https://hc.example/check-key-1"})
    assert run(cmd, offsite_commands.check, "check_offsite", "--quiet") == Exit.OK
    checks = [call.argv[-2:] for call in cmd.fake.calls_to("restic")]
    assert checks == [["check", "--read-data-subset=1/5"]] * 2
    assert cmd.pings == [("https://hc.example/check-key-1", "start"), ("https://hc.example/check-key-1", "0")]
    assert any(
        line.startswith("off-site repository vault: structure and 1/5 of the data read back and good")
        for line in cmd.lines("INFO", "check_offsite")
    )


def test_check_with_another_subset_and_a_failing_repository_exits_14(cmd):
    cmd.write_offsite(repositories=["nas", "vault"])
    cmd.fake.on(
        restic_rule("vault", "check"),
        fail=1,
        stdout=b"error: pack abc: not found\n",
        stderr="Fatal: repository contains errors",
    )
    cmd.fake.on("ssh", returncode=0)
    assert run(cmd, offsite_commands.check, "check_offsite", "--read-data-subset", "5%") == Exit.OFFSITE_FAILED
    assert [call.argv[-1] for call in cmd.fake.calls_to("restic")] == ["--read-data-subset=5%"] * 2
    assert cmd.lines("ERROR", "check_offsite")[0] == "the off-site check of vault failed"


def test_check_takes_the_offsite_lock(cmd):
    cmd.write_offsite(repositories=["nas"])
    Lock(cmd.backups / ".offsite.lock", 0).acquire()
    assert run(cmd, offsite_commands.check, "check_offsite") == Exit.LOCKED
    assert cmd.fake.calls == []
