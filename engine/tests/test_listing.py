"""list_db_backups: the table of sets, newest first (latest marked *, sizes as
numfmt --to=iec prints them, checksum ok / MISMATCH / missing), the OFF-SITE
column and the sets held off-site only, and the exit codes: 8 for a local set
that is missing its checksum file or fails it, 14 for a repository that cannot
be read when nothing local is wrong."""

import json
import os
import time

import pytest
from command_helpers import (
    PROJECT,
    arrivals_of,
    arrivals_rule,
    make_set,
    restic_rule,
    restic_snapshots,
)
from djangoops.commands import listing
from djangoops.errors import Exit

A = f"{PROJECT}_20251209T020000Z_daily.pgdump.zst"
B = f"{PROJECT}_20251208T020000Z_weekly.pgdump.zst"
C = f"{PROJECT}_20251201T020000Z_monthly.pgdump.zst"
GONE = f"{PROJECT}_20251101T020000Z_monthly.pgdump.zst"  # pruned here, still off-site
WEEKDAY = f"{PROJECT}_3-Wednesday.sql.zst"
HEADER = "  BACKUP                                               TAKEN (UTC)              SIZE KIND     CHECKSUM "


def run(cmd, capsys, *args):
    code = cmd.run(listing.main, list(args), script="list_db_backups")
    return code, capsys.readouterr().out.splitlines()


@pytest.fixture
def local(cmd):
    """A (latest, 1.5 KiB, good), B (10 KiB, damaged), C (empty, its checksum file gone)."""
    shas = {
        A: make_set(cmd.backups, A, b"a" * 1536, latest=True),
        B: make_set(cmd.backups, B, b"b" * 10240),
        C: make_set(cmd.backups, C, b""),
    }
    (cmd.backups / B).write_bytes(b"B" * 10240)
    (cmd.backups / f"{C}.sha256").unlink()
    return shas


def test_the_table_marks_latest_and_each_checksum_and_exits_8(cmd, local, capsys):
    code, lines = run(cmd, capsys)
    assert code == Exit.BAD_BACKUP
    assert lines == [
        HEADER,
        f"* {A:<52} 2025-12-09 02:00:00     1.5KB daily    ok       ",
        f"  {B:<52} 2025-12-08 02:00:00      10KB weekly   MISMATCH ",
        f"  {C:<52} 2025-12-01 02:00:00        0B monthly  missing  ",
    ]
    assert cmd.lines("ERROR", "list_db_backups") == ["a backup is missing its checksum file or does not match it"]
    assert cmd.fake.calls == []  # nothing off-site configured: restic is not asked
    assert cmd.metrics("list_db_backups") == ""  # a read-only command writes no metrics


def test_all_good_exits_0_and_no_checksums_skips_the_check(cmd, capsys):
    make_set(cmd.backups, A, b"a" * 1536, latest=True)
    make_set(cmd.backups, B, b"b" * (168 * 2**20 // 4096))
    code, lines = run(cmd, capsys)
    assert code == Exit.OK
    assert [line.split()[-1] for line in lines[1:]] == ["ok", "ok"]
    (cmd.backups / B).write_bytes(b"changed")
    code, lines = run(cmd, capsys, "--no-checksums")
    assert code == Exit.OK
    assert [line.split()[-1] for line in lines[1:]] == ["unchecked", "unchecked"]


def test_sizes_are_printed_as_numfmt_prints_them(cmd, capsys):
    # A sparse file: its size without its blocks.
    make_set(cmd.backups, A, b"x")
    with open(cmd.backups / A, "r+b") as f:
        f.truncate(168 * 2**20)
    code, lines = run(cmd, capsys, "--no-checksums")
    assert code == Exit.OK
    assert lines[1].split()[3] == "168MB"


def test_a_weekday_file_is_dated_by_its_modification_time(cmd, capsys):
    make_set(cmd.backups, WEEKDAY, b"w" * 1023)
    when = 1764813845  # 2025-12-04 02:04:05 UTC
    os.utime(cmd.backups / WEEKDAY, (when, when))
    code, lines = run(cmd, capsys)
    assert code == Exit.OK
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))
    assert taken == "2025-12-04 02:04:05"
    assert lines[1] == f"  {WEEKDAY:<52} {taken}     1023B weekday  ok       "


def test_other_files_in_the_directory_are_not_listed(cmd, capsys):
    make_set(cmd.backups, A, b"a")
    make_set(cmd.backups, "shop2_20251209T020000Z_daily.pgdump.zst", b"b", project="shop2")
    (cmd.backups / f".{A}.partial").write_bytes(b"half")
    code, lines = run(cmd, capsys)
    assert code == Exit.OK
    assert [line.split()[0] for line in lines[1:]] == [A]


def test_a_set_pruned_while_listing_is_left_out(cmd, capsys, monkeypatch):
    make_set(cmd.backups, A, b"a")
    list_sets = listing.sets.list_sets
    monkeypatch.setattr(listing.sets, "list_sets", lambda directory, project: [B, *list_sets(directory, project)])
    code, lines = run(cmd, capsys)
    assert code == Exit.OK
    assert [line.split()[0] for line in lines[1:]] == [A]


def test_an_empty_directory_lists_the_header_only(cmd, capsys):
    assert run(cmd, capsys) == (Exit.OK, [HEADER])


# --- off-site ----------------------------------------------------------------------------------------


@pytest.fixture
def offsite(cmd, local):
    cmd.write_offsite(repositories=["nas", "vault"])
    cmd.fake.on(
        restic_rule("nas", "snapshots"), stdout=restic_snapshots((GONE, "f" * 64), (A, local[A]), (A, local[A]))
    )
    cmd.fake.on(restic_rule("vault", "snapshots"), stdout=restic_snapshots((A, local[A]), (B, local[B])))
    return local


def test_the_offsite_column_and_the_sets_held_offsite_only(cmd, offsite, capsys):
    code, lines = run(cmd, capsys)
    assert code == Exit.BAD_BACKUP  # B and C, locally
    assert lines == [
        HEADER + " OFF-SITE",
        f"* {A:<52} 2025-12-09 02:00:00     1.5KB daily    ok        nas,vault",
        f"  {B:<52} 2025-12-08 02:00:00      10KB weekly   MISMATCH  vault",
        f"  {C:<52} 2025-12-01 02:00:00        0B monthly  missing  ",
        f"  {GONE:<52} {'':<20} {'':>8} monthly  off-site  nas",
    ]
    for call in cmd.fake.calls_to("restic"):
        assert "--no-lock" in call.argv
        assert call.env["RESTIC_PASSWORD_FILE"] == str(cmd.offsite_dir / "password")


def test_a_set_held_by_no_repository_shows_a_dash(cmd, capsys):
    make_set(cmd.backups, A, b"a", latest=True)
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=b"[]")
    code, lines = run(cmd, capsys)
    assert code == Exit.OK
    assert lines[1].endswith("ok        -")


def test_an_unreadable_repository_exits_14_when_nothing_local_is_wrong(cmd, capsys):
    sha = make_set(cmd.backups, A, b"a", latest=True)
    cmd.write_offsite(repositories=["nas", "vault"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=restic_snapshots((A, sha)))
    cmd.fake.on(arrivals_rule, stdout=arrivals_of(restic_snapshots((A, sha))))
    cmd.fake.on(restic_rule("vault", "snapshots"), fail=1, stderr="Fatal: unable to open config file")
    cmd.fake.on("ssh", returncode=0)

    code, lines = run(cmd, capsys)

    assert code == Exit.OFFSITE_FAILED
    assert lines[1].endswith("ok        nas")
    warnings = cmd.lines("WARN", "list_db_backups")
    assert warnings == [
        "off-site repository vault: reading its snapshots failed (restic exit 1): Fatal: unable to open config file",
        "off-site repository vault could not be read: the OFF-SITE column leaves it out",
    ]
    assert cmd.lines("ERROR", "list_db_backups") == ["an off-site repository could not be read"]


def test_an_unreadable_repository_with_a_local_fault_exits_8(cmd, offsite, capsys):
    cmd.fake.rules.clear()
    cmd.fake.on(restic_rule("nas", "snapshots"), fail=1, stderr="Fatal: wrong password or no key found")
    cmd.fake.on(restic_rule("vault", "snapshots"), stdout=b"[]")
    code, _lines = run(cmd, capsys)
    assert code == Exit.BAD_BACKUP
    assert "off-site repository nas could not be read: the OFF-SITE column leaves it out" in cmd.lines(
        "WARN", "list_db_backups"
    )


def test_local_leaves_the_repositories_alone(cmd, offsite, capsys):
    code, lines = run(cmd, capsys, "--local")
    assert code == Exit.BAD_BACKUP
    assert lines[0] == HEADER
    assert len(lines) == 4
    assert cmd.fake.calls == []


def test_repositories_without_restic_exit_3(cmd, offsite, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(cmd.root / "nothing-here"))
    code, lines = run(cmd, capsys)
    assert code == Exit.CONFIG
    assert lines == []
    assert cmd.lines("ERROR", "list_db_backups")[0].startswith("restic is not installed")


def test_a_checksum_file_that_is_not_text_is_a_mismatch_with_repositories(cmd, capsys):
    make_set(cmd.backups, A, b"a", latest=True)
    (cmd.backups / f"{A}.sha256").write_bytes(b"\xff\xfe not utf-8\n")
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=b"[]")
    code, lines = run(cmd, capsys)
    assert code == Exit.BAD_BACKUP
    assert lines == [
        HEADER + " OFF-SITE",
        f"* {A:<52} 2025-12-09 02:00:00        1B daily    MISMATCH  -",
    ]
    assert cmd.lines("ERROR", "list_db_backups") == ["a backup is missing its checksum file or does not match it"]


def test_a_checksum_file_that_is_not_text_shows_a_dash_unchecked(cmd, capsys):
    make_set(cmd.backups, A, b"a", latest=True)
    (cmd.backups / f"{A}.sha256").write_bytes(b"\xff\xfe not utf-8\n")
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=b"[]")
    code, lines = run(cmd, capsys, "--no-checksums")
    assert code == Exit.OK
    assert lines[1] == f"* {A:<52} 2025-12-09 02:00:00        1B daily    unchecked -"


def test_quiet_and_help(cmd, capsys):
    assert run(cmd, capsys, "--quiet")[0] == Exit.OK
    code, lines = run(cmd, capsys, "--help")
    assert (code, lines) == (Exit.OK, [listing.USAGE])
    assert run(cmd, capsys, "extra")[0] == Exit.USAGE


# --- --json: what a report reads ---------------------------------------------------------------------


def as_json(cmd, capsys, *args):
    code, lines = run(cmd, capsys, "--json", *args)
    return code, json.loads("\n".join(lines))


def test_json_has_every_set_the_room_left_and_what_the_metrics_recorded(cmd, offsite, capsys, monkeypatch):
    cmd.metrics_dir.mkdir(exist_ok=True)
    (cmd.metrics_dir / f"djangoops_{PROJECT}.schedule.prom").write_text(
        f'djangoops_job_expected_interval_seconds{{project="{PROJECT}",script="backup_db"}} 86400\n'
    )
    monkeypatch.setattr(listing.sets, "disk_bytes", lambda directory: (5 * 2**30, 20 * 2**30))
    monkeypatch.setattr(listing.time, "time", lambda: 1765300000.5)
    code, document = as_json(cmd, capsys)
    assert code == Exit.BAD_BACKUP  # as the table: B and C, locally
    assert document == {
        "project": PROJECT,
        "engine": "postgresql",
        "now": 1765300000,
        "sets": [
            {"name": A, "latest": True, "taken": 1765245600, "size_bytes": 1536, "kind": "daily",
             "checksum": "ok", "offsite": ["nas", "vault"]},
            {"name": B, "latest": False, "taken": 1765159200, "size_bytes": 10240, "kind": "weekly",
             "checksum": "MISMATCH", "offsite": ["vault"]},
            {"name": C, "latest": False, "taken": 1764554400, "size_bytes": 0, "kind": "monthly",
             "checksum": "missing", "offsite": None},
        ],
        "offsite_only": [{"name": GONE, "kind": "monthly", "offsite": ["nas"]}],
        "offsite_repositories": ["nas", "vault"],
        "offsite_unreadable": [],
        "disk": {"free_bytes": 5 * 2**30, "size_bytes": 20 * 2**30},
        "recorded": {"jobs": {}, "expected": {"backup_db": 86400}, "offsite": {}},
    }  # fmt: skip
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(document["sets"][0]["taken"])) == "2025-12-09 02:00:00"


def test_json_of_a_weekday_file_an_odd_stamp_and_no_set_held_off_site(cmd, capsys):
    odd = f"{PROJECT}_20251340T020000Z_daily.pgdump.zst"  # a stamp that is not a time: its modification time
    make_set(cmd.backups, WEEKDAY, b"w", latest=True)
    make_set(cmd.backups, odd, b"o")
    for name, when in ((WEEKDAY, 1764813845), (odd, 1764813000)):
        os.utime(cmd.backups / name, (when, when))
    cmd.write_offsite(repositories=["nas"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=b"[]")
    code, document = as_json(cmd, capsys)
    assert code == Exit.OK
    assert {row["name"]: (row["taken"], row["offsite"]) for row in document["sets"]} == {
        WEEKDAY: (1764813845, []),
        odd: (1764813000, []),
    }


def test_json_with_an_unreadable_repository_names_it_and_exits_14(cmd, capsys):
    sha = make_set(cmd.backups, A, b"a", latest=True)
    cmd.write_offsite(repositories=["nas", "vault"])
    cmd.fake.on(restic_rule("nas", "snapshots"), stdout=restic_snapshots((A, sha)))
    cmd.fake.on(restic_rule("vault", "snapshots"), fail=1, stderr="Fatal: unable to open config file")
    code, document = as_json(cmd, capsys)
    assert code == Exit.OFFSITE_FAILED
    assert document["offsite_unreadable"] == ["vault"]
    assert document["sets"][0]["offsite"] == ["nas"]


def test_json_local_reads_no_repository_and_an_empty_directory_has_no_sets(cmd, capsys):
    cmd.write_offsite(repositories=["nas"])
    code, document = as_json(cmd, capsys, "--local")
    assert code == Exit.OK
    assert cmd.fake.calls == []
    assert document["sets"] == [] and document["offsite_only"] == []
    assert document["offsite_repositories"] == []
    assert document["disk"]["size_bytes"] > 0


def test_json_without_a_backups_directory_has_no_room_to_report(cmd, capsys):
    cmd.backups.rmdir()
    code, document = as_json(cmd, capsys, "--local")
    assert code == Exit.OK
    assert document["sets"] == [] and document["disk"] == {"free_bytes": None, "size_bytes": None}
