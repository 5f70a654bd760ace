"""backup_report: each server's `list_db_backups.sh --json` judged with the alert rules'
thresholds (the schedule's longest gap and an hour, 26 hours or 8 days and an hour without
one), an unreachable server or a failed listing named as such, and `ok` false whenever a server
is anything but fresh; backup_report_table: the same as lines of text."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "plugins/filter"))
from ansible.errors import AnsibleFilterError
from backup_report import backup_report, backup_report_table, duration, size

NOW = 1_800_000_000
HOUR = 3600
DAY = 86400
NEWEST = "shop_20270115T080000Z_daily.pgdump.zst"


def listing(sets=None, recorded=None, repositories=(), unreadable=(), free=50 * 2**30, **extra):
    document = {
        "project": "shop",
        "engine": "postgresql",
        "now": NOW,
        "sets": [
            {"name": NEWEST, "latest": True, "taken": NOW - 2 * HOUR, "size_bytes": 200 * 2**20, "kind": "daily",
             "checksum": "ok", "offsite": list(repositories) or None},
        ] if sets is None else sets,
        "offsite_only": [],
        "offsite_repositories": list(repositories),
        "offsite_unreadable": list(unreadable),
        "disk": {"free_bytes": free, "size_bytes": 100 * 2**30},
        "recorded": recorded or {
            "jobs": {
                "backup_db": {"exit_code": 0, "last_success_timestamp_seconds": NOW - 2 * HOUR},
                "verify_db": {"exit_code": 0, "last_success_timestamp_seconds": NOW - 3 * DAY},
            },
            "expected": {"backup_db": DAY, "verify_db": 7 * DAY},
            "offsite": {},
        },
    }  # fmt: skip
    document.update(extra)
    return {"rc": 0, "stdout": json.dumps(document), "error": ""}


def taken(age, name=NEWEST, checksum="ok", kind="daily", offsite=None, size_bytes=200 * 2**20):
    return {"name": name, "latest": False, "taken": NOW - age, "size_bytes": size_bytes, "kind": kind,
            "checksum": checksum, "offsite": offsite}  # fmt: skip


def one(entry, host="web1"):
    report = backup_report({host: entry})
    return report, report["hosts"][0]


def test_a_fresh_server_is_ok_with_its_figures():
    report, row = one(listing())
    assert report["ok"] is True and report["ok"] == (report["stale"] == report["unreachable"] == [])
    assert row["state"] == "ok" and row["problems"] == row["warnings"] == []
    assert row["newest"] == {"name": NEWEST, "taken": NOW - 2 * HOUR, "size_bytes": 200 * 2**20}
    assert row["backup_age_seconds"] == 2 * HOUR
    assert row["backup_max_age_seconds"] == DAY + HOUR  # the schedule's gap and an hour
    assert row["test_restore_age_seconds"] == 3 * DAY
    assert row["test_restore_max_age_seconds"] == 7 * DAY + HOUR
    assert (row["project"], row["engine"]) == ("shop", "postgresql")


@pytest.mark.parametrize(
    ("age", "expected", "stale"),
    [
        (DAY + HOUR - 1, DAY, False),
        (DAY + HOUR, DAY, False),  # older than allowed, as the rule's `>`
        (DAY + HOUR + 1, DAY, True),
        (26 * HOUR - 1, None, False),  # no schedule recorded: 26 hours
        (26 * HOUR + 1, None, True),
    ],
)
def test_a_backup_older_than_its_schedule_allows_is_stale(age, expected, stale):
    recorded = {"jobs": {}, "expected": {"backup_db": expected} if expected else {}, "offsite": {}}
    report, row = one(listing(sets=[taken(age)], recorded=recorded))
    assert (row["state"] == "stale") is stale
    assert report["ok"] is not stale
    assert report["stale"] == (["web1"] if stale else [])
    if stale:
        allowed = "1d 1h" if expected else "1d 2h"
        assert row["problems"] == [f"newest good backup {duration(age)} old (allowed {allowed})"]


def test_no_good_backup_is_stale_and_bad_sets_are_named():
    sets = [taken(HOUR, checksum="MISMATCH"), taken(2 * HOUR, name="b", checksum="missing"),
            taken(3 * HOUR, name="safety", kind="safety")]  # fmt: skip
    report, row = one(listing(sets=sets))
    assert row["state"] == "stale" and report["ok"] is False
    assert row["problems"] == ["no good backup", f"checksum missing or not matching: {NEWEST}, b"]
    assert row["newest"] is None and row["backup_age_seconds"] is None


def test_the_newest_good_set_counts_not_a_newer_damaged_one():
    sets = [taken(HOUR, name="newer", checksum="MISMATCH"), taken(30 * HOUR)]
    _report, row = one(listing(sets=sets))
    assert row["newest"]["name"] == NEWEST
    assert row["state"] == "stale"
    assert row["problems"][1] == "checksum missing or not matching: newer"


def test_an_override_of_the_allowed_age_wins_and_is_checked():
    entry = listing()
    entry["limits"] = {"backup_max_age": 60}
    _report, row = one(entry)
    assert row["state"] == "stale" and row["backup_max_age_seconds"] == 60
    for bad, message in (("soon", "a number of seconds"), (0, "a positive number")):
        entry["limits"] = {"backup_max_age": bad}
        with pytest.raises(AnsibleFilterError, match=f"web1: report_backup_max_age must be {message}"):
            one(entry)
    entry["limits"] = {"backup_max_age": "", "verify_max_age": None}
    assert one(entry)[1]["state"] == "ok"


def test_failed_jobs_and_an_old_test_restore_fail_the_server_without_making_it_stale():
    recorded = {
        "jobs": {
            "backup_db": {"exit_code": 4, "last_success_timestamp_seconds": NOW - 2 * HOUR},
            "verify_db": {"exit_code": 10, "last_success_timestamp_seconds": NOW - 9 * DAY},
        },
        "expected": {},
        "offsite": {},
    }
    report, row = one(listing(recorded=recorded))
    assert row["state"] == "failing" and report["failing"] == ["web1"] and report["ok"] is False
    assert row["problems"] == [
        "last backup_db.sh exited 4",
        "last verify_db.sh exited 10",
        "no good test restore for 9d (allowed 8d 1h)",
    ]


def test_a_test_restore_that_never_succeeded_and_none_recorded():
    recorded = {"jobs": {"verify_db": {"exit_code": 10, "last_success_timestamp_seconds": 0}}, "expected": {},
                "offsite": {}}  # fmt: skip
    _report, row = one(listing(recorded=recorded))
    assert row["problems"] == ["last verify_db.sh exited 10", "no good test restore"]
    assert row["test_restore_age_seconds"] is None
    _report, row = one(listing(recorded={"jobs": {}, "expected": {}, "offsite": {}}))
    assert row["state"] == "warning" and row["warnings"] == ["no test restore recorded (no metrics)"]
    recorded = {"jobs": {"backup_db": {"exit_code": 0}}, "expected": {}, "offsite": {}}
    _report, row = one(listing(recorded=recorded))
    assert row["warnings"] == ["no test restore recorded"]


def test_off_site_state():
    recorded = {
        "jobs": {"verify_db": {"exit_code": 0, "last_success_timestamp_seconds": NOW - DAY}},
        "expected": {},
        "offsite": {
            "nas": {"last_success_timestamp_seconds": NOW - 2 * HOUR, "success": 1},
            "s3": {"last_success_timestamp_seconds": NOW - 30 * HOUR, "success": 0,
                   "last_attempt_timestamp_seconds": NOW - 2 * HOUR},
            "tape": {"last_success_timestamp_seconds": NOW - HOUR, "success": 0,
                     "last_attempt_timestamp_seconds": NOW - HOUR},
        },
    }  # fmt: skip
    sets = [taken(2 * HOUR, offsite=["nas"]), taken(DAY, name="older", offsite=["nas", "s3", "tape"])]
    report, row = one(listing(sets=sets, recorded=recorded, repositories=["nas", "s3", "tape", "vault"],
                              unreadable=["vault"]))  # fmt: skip
    assert row["state"] == "failing" and report["ok"] is False
    assert row["problems"] == ["off-site s3 lacks the newest good backup", "off-site vault could not be read"]
    assert row["warnings"] == [
        "last push to s3 failed",
        "off-site tape lacks the newest good backup yet",
        "last push to tape failed",
    ]
    assert row["offsite"]["nas"] == {"holds_good_sets": 2, "newest_good_held": True,
                                     "last_success_age_seconds": 2 * HOUR, "unreadable": False}  # fmt: skip
    assert row["offsite"]["vault"]["unreadable"] is True
    lines = backup_report_table(report)
    assert "nas ok, s3 behind, tape behind, vault unreadable" in lines[1]


def test_disk_room_against_the_newest_set():
    report, row = one(listing(free=250 * 2**20))
    assert row["state"] == "failing" and row["problems"] == ["no room for the next backup (250.0MiB free)"]
    report, row = one(listing(free=500 * 2**20))
    assert row["state"] == "warning" and report["ok"] is True
    assert row["warnings"] == ["room for two more backups at most (500.0MiB free)"]


def test_unreachable_and_unreadable_servers_are_named_and_fail_the_report():
    report = backup_report(
        {
            "web1": listing(),
            "web2": {"unreachable": True, "msg": "Failed to connect to the host via ssh:\n  timed out"},
            "web3": {"rc": 3, "stdout": "", "error": "values file missing\nlist_db_backups: project.json is missing"},
            "web4": {"rc": 0, "stdout": "not json"},
            "web5": None,
            "web6": {"rc": "8", "stdout": '{"now": "soon"}'},
            "web7": {},
            "web8": {"rc": 0, "stdout": '{"now": true}'},
        }
    )
    assert report["ok"] is False
    assert report["unreachable"] == ["web2"]
    assert report["error"] == ["web3", "web4", "web5", "web6", "web7", "web8"]
    assert [r["host"] for r in report["hosts"]] == ["web1", "web2", "web3", "web4", "web5", "web6", "web7", "web8"]
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["web2"]["problems"] == ["unreachable: Failed to connect to the host via ssh: timed out"]
    assert rows["web3"]["problems"] == [
        "list_db_backups.sh --json failed (exit 3): list_db_backups: project.json is missing"
    ]
    assert rows["web4"]["problems"] == ["list_db_backups.sh --json failed (exit 0)"]
    assert (
        rows["web5"]["problems"]
        == rows["web7"]["problems"]
        == ["the play stopped on this host before its listing (see above)"]
    )
    lines = backup_report_table(report)
    assert lines[0].split() == ["HOST", "PROJECT", "NEWEST", "GOOD", "BACKUP", "AGE", "SIZE", "TEST", "RESTORE",
                                "OFF-SITE", "DISK", "FREE", "STATE"]  # fmt: skip
    assert lines[1].split() == ["web1", "shop", NEWEST, "2h", "200.0MiB", "3d", "-", "50.0GiB", "ok"]
    assert lines[2].split() == ["web2", "-", "-", "-", "-", "-", "-", "-", "UNREACHABLE"]
    assert "web2: unreachable: Failed to connect to the host via ssh: timed out" in lines
    # The columns line up: each row's age and state start where their headings do.
    for heading, cells in (("AGE", ("2h", "-")), ("STATE", ("ok", "UNREACHABLE"))):
        at = lines[0].index(heading)
        assert (lines[1][at:].split()[0], lines[2][at:].split()[0]) == cells


def test_an_empty_inventory_is_not_ok_and_bad_input_is_named():
    assert backup_report({})["ok"] is False
    with pytest.raises(AnsibleFilterError, match="expects a mapping of hosts, got list"):
        backup_report([])
    with pytest.raises(AnsibleFilterError, match="web1: expected a mapping, got str"):
        backup_report({"web1": "up"})
    with pytest.raises(AnsibleFilterError, match="expects what backup_report returns"):
        backup_report_table({"web1": {}})


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-5, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3660, "1h 1m"),
     (86400, "1d"), (90000, "1d 1h"), (9 * 86400, "9d")],
)  # fmt: skip
def test_durations(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (200 * 2**20, "200.0MiB"), (3 * 2**40, "3.0TiB"),
     (5000 * 2**40, "5000.0TiB")],
)  # fmt: skip
def test_sizes(value, text):
    assert size(value) == text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["sets"][0].update(taken=None), f"set {NEWEST} has no time or size"),
        (lambda d: d["sets"][0].pop("size_bytes"), f"set {NEWEST} has no time or size"),
        (lambda d: d["sets"][0].update(size_bytes=True), f"set {NEWEST} has no time or size"),
        (lambda d: d["sets"].append(None), "a set that is not described: None"),
        (lambda d: d["sets"].append({"taken": 1}), "a set that is not described: {'taken': 1}"),
        (lambda d: d.update(sets={"a": 1}), "a set that is not described: 'a'"),
    ],
)
def test_a_listing_that_is_not_what_the_command_writes_fails_that_server_only(change, reason):
    document = json.loads(listing()["stdout"])
    change(document)
    report = backup_report({"web1": {"rc": 0, "stdout": json.dumps(document)}, "web2": listing()})
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["web1"]["state"] == "error" and rows["web1"]["problems"] == [f"the listing could not be read: {reason}"]
    assert rows["web2"]["state"] == "ok" and report["error"] == ["web1"]


def test_figures_of_the_wrong_type_are_left_out_not_fatal():
    recorded = {
        "jobs": {"backup_db": {"exit_code": "4", "last_success_timestamp_seconds": "soon"},
                 "verify_db": {"exit_code": 0, "last_success_timestamp_seconds": "soon"}},
        "expected": {"backup_db": "daily", "verify_db": None},
        "offsite": "none",
    }  # fmt: skip
    document = json.loads(listing(recorded=recorded, disk={"free_bytes": None, "size_bytes": "big"})["stdout"])
    _report, row = one({"rc": 0, "stdout": json.dumps(document)})
    assert row["state"] == "failing"
    assert row["backup_max_age_seconds"] == 26 * HOUR  # no usable schedule: the fallback
    assert row["problems"] == ["no good test restore"]  # its last success is not a time
    assert row["disk"] == {"free_bytes": None, "size_bytes": None}


def test_every_scheduled_job_counts_as_the_rules_count_it():
    recorded = {
        "jobs": {
            "backup_db": {"exit_code": 0, "last_success_timestamp_seconds": NOW - HOUR},
            "verify_db": {"exit_code": 0, "last_success_timestamp_seconds": NOW - DAY},
            "check_offsite": {"exit_code": 14, "last_success_timestamp_seconds": NOW - 2 * HOUR},
            "clear_sessions": {"exit_code": 0, "last_success_timestamp_seconds": NOW - 3 * DAY},
            "by_hand": {"exit_code": 3, "last_success_timestamp_seconds": NOW - 90 * DAY},
            "fresh": {"exit_code": 0, "last_success_timestamp_seconds": NOW - DAY - HOUR},
        },
        "expected": {"backup_db": DAY, "verify_db": 7 * DAY, "check_offsite": DAY, "clear_sessions": DAY,
                     "fresh": DAY},
        "offsite": {},
    }  # fmt: skip
    _report, row = one(listing(recorded=recorded))
    assert row["state"] == "failing"
    # A job run by hand (not scheduled) is not judged; one exactly at its allowance is not late.
    assert row["problems"] == [
        "last check_offsite.sh exited 14",
        "clear_sessions.sh has not succeeded for 3d (allowed 1d 1h)",
    ]
    recorded["jobs"]["verify_db"]["exit_code"] = 10
    _report, row = one(listing(recorded=recorded))
    assert "last verify_db.sh exited 10" in row["problems"]
