"""cron_to_calendar: the systemd expressions must fire exactly when cron would.

Each schedule's next firings are computed twice: by a small cron matcher written
from crontab(5), and by `systemd-analyze calendar` on the expressions the filter
returns. They must agree.

cron_longest_gap: the longest time between two firings, as the same matcher finds
it minute by minute over two weeks of firings, and for the schedules with gaps of
months or years, as the calendar says."""

import itertools
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "plugins/filter"))
from ansible.errors import AnsibleFilterError
from cron_calendar import cron_longest_gap, cron_to_calendar

ITERATIONS = 12


def cron_matches(schedule):
    """A predicate on datetimes, straight from crontab(5)."""
    names = {
        **{m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
        **{d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
    }
    macros = {"@daily": "0 0 * * *", "@hourly": "0 * * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}
    fields = macros.get(schedule, schedule).split()
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]

    def values(field, low, high):
        out = set()
        for part in field.split(","):
            base, _sep, step = part.partition("/")
            step = int(step or 1)
            if base == "*":
                lo, hi = low, high
            elif "-" in base:
                a, b = base.split("-")
                lo, hi = int(names.get(a.lower(), a)), int(names.get(b.lower(), b))
            else:
                lo = int(names.get(base.lower(), base))
                hi = high if "/" in part else lo
            out.update(range(lo, hi + 1, step))
        return out

    minute, hour, dom, month, dow = (values(f, lo, hi) for f, (lo, hi) in zip(fields, bounds, strict=True))
    if 7 in dow:
        dow.add(0)
    dom_star, dow_star = fields[2].startswith("*"), fields[4].startswith("*")

    def match(t):
        cron_dow = (t.weekday() + 1) % 7
        if dom_star or dow_star:
            day_ok = t.day in dom and cron_dow in dow
        else:
            day_ok = t.day in dom or cron_dow in dow
        return t.minute in minute and t.hour in hour and t.month in month and day_ok

    return match


def cron_next(schedule, start, count):
    match = cron_matches(schedule)
    found, t = [], start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = t.replace(hour=0, minute=0)
    while len(found) < count:
        for minute_of_day in range(24 * 60):
            candidate = day + timedelta(minutes=minute_of_day)
            if candidate >= t and match(candidate):
                found.append(candidate)
                if len(found) == count:
                    break
        day += timedelta(days=1)
    return found


def systemd_next(expressions, count):
    times = set()
    for expression in expressions:
        out = subprocess.run(
            ["systemd-analyze", "calendar", f"--iterations={count}", expression],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
            check=True,
        ).stdout
        for line in out.splitlines():
            label, _sep, value = line.strip().partition(": ")
            # "Iter. #2" in systemd 252 (Debian 12), "Iteration #2" in 257 (Debian 13).
            if label == "Next elapse" or label.startswith(("Iter. #", "Iteration #")):
                times.add(datetime.strptime(value.rsplit(" ", 1)[0], "%a %Y-%m-%d %H:%M:%S").replace(tzinfo=UTC))
    return sorted(times)[:count]


SCHEDULES = [
    "0 1 * * *",
    "0 2 * * *",
    "30 3 * * 0",
    "*/15 * * * *",
    "5 */6 * * 1-5",
    "0 4 1,15 * *",
    "0 4 1 * mon",
    "10 22 * jan-mar,dec sat,sun",
    "0 0 * * 7",
    "7-9 1 * * *",
    "3/20 * * * *",
    "@daily",
    "@weekly",
    "@monthly",
]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_systemd_fires_when_cron_would(schedule):
    expressions = cron_to_calendar(schedule)
    start = datetime.now(UTC)
    expected = cron_next(schedule, start, ITERATIONS)
    actual = systemd_next(expressions, ITERATIONS)
    # The two were computed a moment apart: a minute boundary may fall between.
    if actual and expected and actual[0] < expected[0]:
        actual = actual[1:]
        expected = expected[: len(actual)]
    assert actual == expected[: len(actual)], expressions
    assert len(actual) >= ITERATIONS - 1


def test_expressions_read_well():
    assert cron_to_calendar("0 2 * * *") == ["*-*-* 02:00:00"]
    assert cron_to_calendar("30 3 * * 0") == ["Sun *-*-* 03:30:00"]
    assert cron_to_calendar("0 4 1 * mon") == ["*-*-01 04:00:00", "Mon *-*-* 04:00:00"]
    assert cron_to_calendar("*/30 * * * *") == ["*-*-* *:00,30:00"]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 2 * *", "five fields"),
        ("61 2 * * *", "minute 61 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 2 * * funday", "'funday' is not a valid day of week"),
        ("0 2 5-1 * *", "runs backwards"),
        ("*/0 * * * *", "bad step"),
        ("@reboot", "no systemd equivalent"),
    ],
)
def test_bad_schedules_are_named(schedule, message):
    with pytest.raises(AnsibleFilterError, match=message):
        cron_to_calendar(schedule)
    with pytest.raises(AnsibleFilterError, match=schedule.split()[0].replace("*", r"\*")):
        cron_to_calendar(schedule)


# --- cron_longest_gap --------------------------------------------------------------------

DAY = 86400


@pytest.mark.parametrize(
    ("schedule", "fires_in_two_weeks"),
    [
        ("0 2 * * *", 14),
        ("*/15 * * * *", 200),
        ("5 */6 * * 1-5", 41),
        ("30 3 * * 0", 3),
        ("0 4 1 * mon", 4),
        ("7-9 1 * * *", 30),
        ("*/15 9-17 * * 1-5", 400),
        ("@weekly", 3),
    ],
)
def test_the_longest_gap_is_the_longest_time_between_two_firings(schedule, fires_in_two_weeks):
    # From a Monday, so that every gap of the week comes up (the schedule's own
    # pattern repeats within two weeks, or within a month for "0 4 1 * mon").
    firings = cron_next(schedule, datetime(2026, 12, 7, tzinfo=UTC), fires_in_two_weeks)
    longest = max((b - a).total_seconds() for a, b in itertools.pairwise(firings))
    assert cron_longest_gap(schedule) == longest


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [
        ("@monthly", 31 * DAY),
        ("0 0 31 * *", 61 * DAY),  # Mar 31 to May 31
        ("0 4 1,15 * *", 17 * DAY),  # the 15th of a 31-day month to the 1st of the next
        ("0 0 29 2 *", 4 * 365 * DAY + DAY),  # leap day to leap day
        ("0 12 * * 0,7", 7 * DAY),
    ],
)
def test_the_longest_gap_of_monthly_and_yearly_schedules(schedule, seconds):
    assert cron_longest_gap(schedule) == seconds


def test_a_schedule_that_never_fires_is_named():
    with pytest.raises(AnsibleFilterError, match="cron schedule '0 0 30 2 \\*' never runs"):
        cron_longest_gap("0 0 30 2 *")
