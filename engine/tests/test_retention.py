"""djangoops.retention: the kind of a new backup (GFS: monthly, weekly, daily), its name,
and what retention removes. Calendars a container test cannot reach (ISO week 53, the
turn of a year, a month that starts mid-week) are tried here."""

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from djangoops import retention, sets
from djangoops.errors import Exit, Failure

KEEP = {"daily": 3, "weekly": 2, "monthly": 2, "safety": 2}


def name(stamp, kind, project="shop", ext="pgdump.zst"):
    return f"{project}_{stamp}_{kind}.{ext}"


def history(*pairs):
    """Set names from (stamp, kind) pairs, newest first as list_sets gives them."""
    return sorted((name(stamp, kind) for stamp, kind in pairs), reverse=True)


def kind(stamp, *pairs):
    return retention.gfs_kind(stamp, history(*pairs), "shop")


def touch(directory, *names):
    for n in names:
        (directory / n).write_text("x")


# --- the kind of a new backup -------------------------------------------------------------


def test_the_first_backup_ever_is_monthly():
    assert kind("20261130T020000Z") == "monthly"


def test_several_backups_in_one_day_the_first_keeps_the_month():
    first = ("20261103T020000Z", "monthly")
    assert kind("20261103T120000Z", first) == "daily"
    assert kind("20261103T180000Z", first, ("20261103T120000Z", "daily")) == "daily"


def test_the_first_backup_of_a_new_iso_week_is_weekly():
    # Sunday 8 November 2026 ends ISO week 45; Monday the 9th starts week 46.
    month = ("20261102T020000Z", "monthly")
    assert kind("20261108T020000Z", month) == "daily"
    assert kind("20261109T020000Z", month, ("20261108T020000Z", "daily")) == "weekly"


def test_31_december_then_1_january_is_a_new_month():
    # Both days are in ISO week 53 of 2026: only the month (and year) changed.
    december = ("20261201T020000Z", "monthly"), ("20261231T020000Z", "daily")
    assert kind("20270101T020000Z", *december) == "monthly"


def test_the_same_month_a_year_later_is_a_new_month():
    assert kind("20261103T020000Z", ("20251101T020000Z", "monthly"), ("20251130T020000Z", "daily")) == "monthly"


def test_iso_week_53_then_week_1_is_a_new_week():
    # 2026 has 53 ISO weeks: Monday 28 December 2026 to Sunday 3 January 2027.
    # Monday 4 January 2027 starts week 1 of 2027, in a month already begun.
    seen = ("20261228T020000Z", "weekly"), ("20270101T020000Z", "monthly"), ("20270103T020000Z", "daily")
    assert kind("20270104T020000Z", *seen) == "weekly"
    # Week 1 of another year is not the same week.
    assert kind("20270104T020000Z", ("20260101T020000Z", "weekly"), ("20270101T020000Z", "monthly")) == "weekly"


def test_a_month_that_starts_mid_week_keeps_the_week_it_started_in():
    # Wednesday 1 July 2026: monthly, in ISO week 27, which began on Monday 29 June.
    june = ("20260601T020000Z", "monthly"), ("20260629T020000Z", "weekly")
    assert kind("20260701T020000Z", *june) == "monthly"
    july = (*june, ("20260701T020000Z", "monthly"))
    assert kind("20260702T020000Z", *july) == "daily"
    assert kind("20260706T020000Z", *july, ("20260702T020000Z", "daily")) == "weekly"


def test_a_sunday_based_week_would_decide_otherwise():
    # Sunday 8 November 2026 is in the ISO week of Monday the 2nd, not a new one.
    assert kind("20261108T020000Z", ("20261102T020000Z", "monthly")) == "daily"


def test_safety_backups_and_weekday_files_count_for_no_month_or_week():
    names = [name("20261103T020000Z", "safety"), "shop_2-Tuesday.pgdump.zst"]
    assert retention.gfs_kind("20261103T030000Z", names, "shop") == "monthly"


def test_another_projects_sets_count_for_nothing():
    names = [
        name("20261102T020000Z", "monthly", "shop_x"),
        name("20261102T020000Z", "monthly", "shopping"),
        name("20261102T020000Z", "monthly", "shop2"),
        f"{name('20261102T020000Z', 'monthly')}.sha256",
    ]
    assert retention.gfs_kind("20261103T020000Z", names, "shop") == "monthly"


# --- retention -----------------------------------------------------------------------------


def removed(names, kinds=("daily", "weekly", "monthly"), latest="", protected=()):
    return [r.name for r in retention.prune_plan(sorted(names, reverse=True), kinds, KEEP, "shop", latest, protected)]


def test_monthly_weekly_and_daily_limits_reached_together():
    months = [name(f"2026{m:02d}01T020000Z", "monthly") for m in range(7, 12)]  # 5, keep 2
    weeks = [name(f"202611{d:02d}T020000Z", "weekly") for d in (9, 16, 23)]  # 3, keep 2
    days = [name(f"202611{d:02d}T020000Z", "daily") for d in range(24, 29)]  # 5, keep 3
    names = sorted(months + weeks + days, reverse=True)
    plan = retention.prune_plan(names, ("daily", "weekly", "monthly"), KEEP, "shop")
    assert plan == [
        (name("20261125T020000Z", "daily"), "daily", 3),
        (name("20261124T020000Z", "daily"), "daily", 3),
        (name("20261109T020000Z", "weekly"), "weekly", 2),
        (name("20260901T020000Z", "monthly"), "monthly", 2),
        (name("20260801T020000Z", "monthly"), "monthly", 2),
        (name("20260701T020000Z", "monthly"), "monthly", 2),
    ]
    assert plan[0].name == name("20261125T020000Z", "daily") and plan[0].kind == "daily" and plan[0].kept == 3


def test_under_the_limits_nothing_goes():
    assert removed([name("20261101T020000Z", "monthly"), name("20261102T020000Z", "daily")]) == []


def test_exactly_at_the_limit_nothing_goes():
    assert removed([name(f"202611{d:02d}T020000Z", "daily") for d in range(1, 4)]) == []


def test_a_backup_pruning_leaves_safety_backups_alone_and_a_restore_only_those():
    names = [name(f"202611{d:02d}T020000Z", "daily") for d in range(1, 6)] + [
        name(f"202611{d:02d}T030000Z", "safety") for d in range(1, 5)
    ]
    assert removed(names) == [name("20261102T020000Z", "daily"), name("20261101T020000Z", "daily")]
    assert removed(names, ("safety",)) == [name("20261102T030000Z", "safety"), name("20261101T030000Z", "safety")]


def test_the_safety_backup_being_restored_is_never_pruned():
    # Restoring the oldest safety backup: the restore takes a new one, then prunes.
    safeties = [name(f"202611{d:02d}T030000Z", "safety") for d in range(1, 5)]
    restoring = safeties[0]
    assert removed(safeties, ("safety",), protected=(restoring,)) == [name("20261102T030000Z", "safety")]


def test_the_set_latest_points_at_is_never_pruned():
    # A clock set back made the newest set sort oldest; latest still points at it.
    days = [name(f"202611{d:02d}T020000Z", "daily") for d in range(1, 6)]
    assert removed(days, ("daily",), latest=days[0]) == [days[1]]


def test_weekday_files_and_other_projects_sets_are_never_pruned():
    weekday = [f"shop_{d}-{n}.pgdump.zst" for d, n in enumerate(["Sunday", "Monday", "Tuesday", "Wednesday"])]
    theirs = [name(f"202611{d:02d}T020000Z", "daily", "shop_x") for d in range(1, 9)]
    assert removed(weekday + theirs, ("daily", "weekly", "monthly", "safety")) == []


@pytest.mark.parametrize(
    ("kinds", "keep"),
    [
        (("daily",), {**KEEP, "daily": 0}),
        (("daily",), {**KEEP, "monthly": 0}),  # every count is checked, not only the kinds pruned
        (("weekday",), {**KEEP, "weekday": 1}),
        (("hourly",), KEEP),
        (("safety",), {"daily": 3}),
    ],
)
def test_kinds_or_counts_retention_cannot_follow_are_refused(kinds, keep):
    with pytest.raises(ValueError, match="need a count of at least 1 each"):
        retention.prune_plan([name("20261101T020000Z", "daily")], kinds, keep, "shop")


# --- on a directory ----------------------------------------------------------------------------


def test_prune_on_a_directory_shared_with_another_project(tmp_path):
    ours = [name(f"202611{d:02d}T020000Z", "daily") for d in range(1, 6)]
    theirs = [name(f"202611{d:02d}T020000Z", "daily", "shop_x") for d in range(1, 6)]
    touch(tmp_path, *ours, *theirs, f"{ours[0]}.sha256", f".{ours[4]}.partial")
    touch(tmp_path, f"{ours[1]}.sha256", f"{ours[1]}.manifest.json", sets.media_name_of(ours[1]))
    os.symlink(ours[0], tmp_path / "latest")
    done = retention.prune(tmp_path, "shop", ("daily", "weekly", "monthly"), KEEP)
    # The oldest, but latest points at it; then the next oldest, with its sidecars and media.
    assert done == [(ours[1], "daily", 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*theirs, ours[0], *ours[2:], f"{ours[0]}.sha256", f".{ours[4]}.partial", "latest"]
    )


def test_prune_keeps_protected_names(tmp_path):
    safeties = [name(f"202611{d:02d}T030000Z", "safety") for d in range(1, 5)]
    touch(tmp_path, *safeties)
    assert retention.prune(tmp_path, "shop", ("safety",), KEEP, protected=(safeties[1],)) == [
        (safeties[0], "safety", 2)
    ]
    assert not (tmp_path / safeties[0]).exists() and (tmp_path / safeties[1]).exists()


def test_prune_refusing_its_counts_removes_nothing(tmp_path):
    touch(tmp_path, *(name(f"202611{d:02d}T020000Z", "daily") for d in range(1, 6)))
    with pytest.raises(ValueError, match="at least 1"):
        retention.prune(tmp_path, "shop", ("daily",), {**KEEP, "daily": 0})
    assert len(list(tmp_path.iterdir())) == 5


def test_the_kind_on_a_directory_counts_only_the_projects_sets(tmp_path):
    touch(tmp_path, name("20261101T020000Z", "monthly"), name("20261201T020000Z", "monthly", "shop_x"))
    listed = sets.list_sets(tmp_path, "shop")
    assert retention.gfs_kind("20261102T020000Z", listed, "shop") == "weekly"  # Monday 2 November
    assert retention.gfs_kind("20261201T020000Z", listed, "shop") == "monthly"


# --- the name of a new set -------------------------------------------------------------------


def test_a_new_set_is_named_after_its_stamp_and_kind():
    names = history(("20261101T020000Z", "monthly"))
    made = retention.new_set_name("20261102T020000Z", names, "shop", "pgdump.zst", "gfs")
    assert made == ("shop_20261102T020000Z_weekly.pgdump.zst", "weekly")


def test_a_safety_backup_is_named_so_whatever_the_calendar_or_rotation():
    made = retention.new_set_name("20261102T020000Z", [], "shop", "sql.gz", "gfs", safety=True)
    assert made == ("shop_20261102T020000Z_safety.sql.gz", "safety")
    made = retention.new_set_name("20261102T020000Z", [], "shop", "sql.gz", "weekday", safety=True)
    assert made == ("shop_20261102T020000Z_safety.sql.gz", "safety")


def test_the_weekday_rotation_names_the_local_weekday(monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: already Tuesday when UTC says Monday
    time.tzset()
    try:
        monday_noon_utc = 1793620800  # 2026-11-02T12:00:00Z
        made = retention.new_set_name("20261102T120000Z", [], "shop", "sql.zst", "weekday", now=monday_noon_utc)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert made == ("shop_2-Tuesday.sql.zst", "weekday")
    assert sets.is_set_name(made[0], "shop") and sets.kind_of(made[0], "shop") == "weekday"


def test_a_name_on_a_directory(tmp_path):
    touch(tmp_path, name("20261101T020000Z", "monthly"))
    listed = sets.list_sets(tmp_path, "shop")
    assert retention.new_set_name("20261101T030000Z", listed, "shop", "pgdump.zst", "gfs") == (
        "shop_20261101T030000Z_daily.pgdump.zst",
        "daily",
    )


def test_an_unknown_rotation_ends_the_command_before_the_dump():
    with pytest.raises(Failure) as caught:
        retention.new_set_name("20261101T030000Z", [], "shop", "pgdump.zst", "hourly")
    assert caught.value.code == Exit.INTERNAL
    assert str(caught.value) == "could not work out the name of the new backup; nothing was dumped"
    assert str(caught.value.__cause__) == "rotation 'hourly': gfs or weekday"
