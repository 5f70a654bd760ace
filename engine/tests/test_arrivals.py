"""djangoops.arrivals: which off-site snapshots are trusted, by when the backup host says
each arrived, and the off-site prune's policy over those arrivals, which nothing a server
writes can shift."""

import calendar

import pytest
from djangoops import arrivals
from djangoops.manifest import Snapshot

DAY = 86400


def at(*when):
    return calendar.timegm((*when, 0, 0, 0)[:6])


def hexid(n):
    return f"{n:064x}"


def snapshot(n, name, claimed):
    return Snapshot(
        name=name,
        sha256="a" * 64,
        snapshot_id=hexid(n),
        time=arrivals.time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", arrivals.time.gmtime(claimed)),
        paths=(),
        host="shop",
        tags=(),
    )


def stamped(when):
    return f"shop_{arrivals.time.strftime('%Y%m%dT%H%M%SZ', arrivals.time.gmtime(when))}_daily.pgdump.zst"


# --- the backup host's answer --------------------------------------------------------------


def test_the_answer_is_read_as_ids_and_whole_seconds():
    text = f"{arrivals.HEADER}\n{hexid(1)} 1765000000.123456789\n\n{hexid(2)} 1765000100\n".encode()
    assert arrivals.parse(text) == {hexid(1): 1765000000, hexid(2): 1765000100}


def test_an_empty_record_is_not_no_record():
    assert arrivals.parse(arrivals.HEADER + "\n") == {}
    # A backup host without the record (an older offsite_host role) answers nothing.
    assert arrivals.parse(b"") is None
    assert arrivals.parse("something else\n") is None


@pytest.mark.parametrize(
    "line",
    [
        "id-1 1765000000",  # not restic's id
        f"{hexid(1)}",  # no time
        f"{hexid(1)} yesterday",
        f"{hexid(1)} 1765000000 extra",
        f"{hexid(1)}\n{hexid(2)} 1",  # a name with a newline in it must not pass as two
    ],
)
def test_a_line_that_is_not_an_arrival_refuses_the_whole_answer(line):
    with pytest.raises(ValueError, match="not a snapshot's arrival"):
        arrivals.parse(f"{arrivals.HEADER}\n{line}\n")


# --- judging snapshots -------------------------------------------------------------------


def test_a_set_that_arrived_after_it_was_taken_is_genuine():
    taken = at(2026, 12, 1, 2)
    held = [snapshot(1, stamped(taken), taken)]
    judged = arrivals.judge(held, {hexid(1): taken + 600}, "shop")
    assert judged.genuine == held and judged.refused == []


def test_a_snapshot_the_backup_host_never_saw_arrive_is_refused():
    taken = at(2026, 12, 1, 2)
    judged = arrivals.judge([snapshot(1, stamped(taken), taken)], {}, "shop")
    assert judged.genuine == []
    assert judged.refused[0].reason == (
        f"snapshot 00000000 of {stamped(taken)}: the backup host has no record of its arrival"
    )


def test_a_snapshot_dated_after_it_arrived_is_planted():
    arrived = at(2026, 12, 6, 10)
    future = at(2099, 12, 31)
    # Dated in the future, named for now; then named for the future, dated now.
    held = [snapshot(1, stamped(arrived), future), snapshot(2, stamped(future), arrived)]
    judged = arrivals.judge(held, {hexid(1): arrived, hexid(2): arrived}, "shop")
    assert judged.genuine == []
    assert [r.reason for r in judged.refused] == [
        f"snapshot 00000000 of {stamped(arrived)} is dated 2099-12-31T00:00:00.123456789Z, after it arrived "
        "(2026-12-06 10:00:00 UTC): planted",
        f"snapshot 00000000 of {stamped(future)} is named for 2099-12-31 00:00:00 UTC, after it arrived "
        "(2026-12-06 10:00:00 UTC): planted",
    ]


def test_the_clocks_may_differ_by_the_skew_and_no_more():
    arrived = at(2026, 12, 6, 10)
    within = snapshot(1, stamped(arrived + arrivals.SKEW), arrived + arrivals.SKEW)
    beyond = snapshot(2, stamped(arrived + arrivals.SKEW + 1), arrived)
    judged = arrivals.judge([within, beyond], {hexid(1): arrived, hexid(2): arrived}, "shop")
    assert judged.genuine == [within]
    assert [r.snapshot for r in judged.refused] == [beyond]


def test_only_the_first_snapshot_of_a_name_to_arrive_is_the_set():
    taken = at(2026, 12, 1, 2)
    genuine = snapshot(7, stamped(taken), taken)
    # Pushed later under the same name, with a checksum file to match: whatever it holds,
    # and though it claims a later time, it is not the set.
    forged = snapshot(3, stamped(taken), taken + 60)
    judged = arrivals.judge([forged, genuine], {hexid(7): taken + 300, hexid(3): at(2026, 12, 5)}, "shop")
    assert judged.genuine == [genuine]
    assert judged.refused[0].snapshot == forged
    assert "after the set's first snapshot (00000000, arrived 2026-12-01 02:05:00 UTC)" in judged.refused[0].reason


def test_a_planted_snapshot_that_arrived_first_does_not_stand_for_the_set():
    """A snapshot named for tonight's set, planted today: named after it arrived, so
    refused, and tonight's genuine push is the set's first eligible snapshot."""
    tonight = at(2026, 12, 7, 2)
    planted = snapshot(1, stamped(tonight), at(2026, 12, 6, 12))
    genuine = snapshot(2, stamped(tonight), tonight)
    judged = arrivals.judge([planted, genuine], {hexid(1): at(2026, 12, 6, 12), hexid(2): tonight + 400}, "shop")
    assert judged.genuine == [genuine]
    assert [r.snapshot for r in judged.refused] == [planted]


def test_weekday_names_are_one_set_per_time_taken():
    name = "shop_1-Monday.sql.gz"
    week1, week2 = at(2026, 11, 30, 2), at(2026, 12, 7, 2)
    held = [snapshot(1, name, week1), snapshot(2, name, week2), snapshot(3, name, week1)]
    arrived = {hexid(1): week1 + 60, hexid(2): week2 + 60, hexid(3): week2 + 90}
    judged = arrivals.judge(held, arrived, "shop")
    assert judged.genuine == [held[0], held[1]]
    assert [r.snapshot for r in judged.refused] == [held[2]]


def test_the_trusted_sets_are_listed_by_their_own_time():
    first, second = at(2026, 12, 1, 2), at(2026, 12, 2, 2)
    # Pushed in the other order (a backlog caught up): listed by when they were taken.
    held = [snapshot(2, stamped(second), second), snapshot(1, stamped(first), first)]
    judged = arrivals.judge(held, {hexid(2): second + 60, hexid(1): second + 120}, "shop")
    assert [s.snapshot_id for s in judged.genuine] == [hexid(1), hexid(2)]


# --- the prune's policy --------------------------------------------------------------------


def nightly(first, days):
    """A genuine snapshot a night from FIRST on, each arriving ten minutes after it was taken."""
    held, arrived = [], {}
    for n in range(days):
        taken = first + n * DAY
        held.append(snapshot(n + 1, stamped(taken), taken))
        arrived[hexid(n + 1)] = taken + 600
    return held, arrived


def test_the_policy_keeps_the_newest_of_each_day_week_and_month_by_arrival():
    held, arrived = nightly(at(2026, 10, 1, 2), 67)  # 2026-10-01 .. 2026-12-06
    now = at(2026, 12, 6, 12)
    kept = arrivals.keep(held, arrived, now, daily=3, weekly=2, monthly=3)
    days = {arrivals.utc(arrived[i])[:10]: why for i, why in kept.items()}
    assert days == {
        "2026-12-06": "daily 2026-12-06",
        "2026-12-05": "daily 2026-12-05",
        "2026-12-04": "daily 2026-12-04",
        "2026-11-29": "weekly 2026-W48",  # last week's Sunday; this week's newest is a daily already
        "2026-11-30": "monthly 2026-11",
        "2026-10-31": "monthly 2026-10",
    }


def test_the_newest_is_always_kept():
    held, arrived = nightly(at(2026, 1, 1, 2), 3)
    kept = arrivals.keep(held, arrived, at(2026, 12, 6), daily=1, weekly=0, monthly=0)
    assert kept == {hexid(3): "the newest"}


def test_nothing_pushed_or_dated_can_shift_the_windows():
    """What a stolen key can add arrives now: it may take the place of today's newest, but
    every day, week and month before today keeps its genuine set."""
    held, arrived = nightly(at(2026, 11, 1, 2), 36)  # up to 2026-12-06 02:00
    now = at(2026, 12, 6, 12)
    before = arrivals.keep(held, arrived, now, daily=14, weekly=8, monthly=12)
    planted = []
    for n in range(14):  # fourteen sets under new names, claiming to be old
        claimed = at(2026, 12, 6, 2) - (n + 1) * 3600
        planted.append(snapshot(100 + n, stamped(claimed), claimed))
        arrived[hexid(100 + n)] = now - 60 + n
    after = arrivals.keep(held + planted, arrived, now, daily=14, weekly=8, monthly=12)
    lost = set(before) - set(after)
    assert lost == {hexid(36)}  # today's: the newest of today is a planted one now
    assert all(arrived[i] < now for i in after)


def test_a_snapshot_that_arrived_after_now_is_kept():
    held, arrived = nightly(at(2026, 12, 1, 2), 2)
    arrived[hexid(2)] = at(2026, 12, 8)
    kept = arrivals.keep(held, arrived, at(2026, 12, 6), daily=7, weekly=0, monthly=0)
    assert kept == {hexid(1): "daily 2026-12-01", hexid(2): "arrived after now"}


def test_a_policy_of_nothing_still_keeps_the_newest():
    held, arrived = nightly(at(2026, 12, 1, 2), 5)
    assert arrivals.keep(held, arrived, at(2026, 12, 6), daily=0, weekly=0, monthly=0) == {hexid(5): "the newest"}
    assert arrivals.keep([], {}, at(2026, 12, 6), daily=3, weekly=3, monthly=3) == {}


def test_safety_backups_are_kept_for_the_daily_days_and_take_no_sets_place():
    """A restore's safety backup (what the live database held) is no day's set: it neither
    displaces that day's nightly set nor becomes the newest; each one that arrived in the last
    DAILY days stays, and the newest of them whatever the policy."""
    held, arrived = nightly(at(2026, 12, 1, 2), 6)  # nightly sets 2026-12-01 .. 2026-12-06
    safety = []
    for n, when in enumerate((at(2026, 11, 20, 14), at(2026, 12, 2, 14), at(2026, 12, 6, 14))):
        name = stamped(when).replace("_daily.", "_safety.")
        safety.append(snapshot(50 + n, name, when))
        arrived[hexid(50 + n)] = when + 60
    now = at(2026, 12, 6, 20)
    kept = arrivals.keep(held + safety, arrived, now, daily=3, weekly=0, monthly=0, project="shop")
    assert kept == {
        hexid(4): "daily 2026-12-04",
        hexid(5): "daily 2026-12-05",
        hexid(6): "daily 2026-12-06",  # the nightly set, though the safety backup arrived later that day
        hexid(52): "safety 2026-12-06",
    }
    # Older than the days kept, the newest safety backup still stays; the others go.
    kept = arrivals.keep(held + safety[:2], arrived, now, daily=3, weekly=0, monthly=0, project="shop")
    assert kept[hexid(51)] == "the newest safety backup" and hexid(50) not in kept
    # Without the project's name, a safety backup is a set like any other (as before).
    kept = arrivals.keep(held + safety, arrived, now, daily=1, weekly=0, monthly=0)
    assert kept == {hexid(52): "daily 2026-12-06"}


def test_months_are_counted_across_the_year():
    held, arrived = nightly(at(2025, 11, 15, 2), 60)  # 2025-11-15 .. 2026-01-13
    kept = arrivals.keep(held, arrived, at(2026, 1, 20), daily=0, weekly=0, monthly=3)
    assert sorted(kept.values()) == ["monthly 2025-11", "monthly 2025-12", "monthly 2026-01"]
