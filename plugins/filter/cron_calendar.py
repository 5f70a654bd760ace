"""Filters of cron schedules ("0 2 * * *", "@daily"): cron_to_calendar turns
one into systemd OnCalendar= expressions, so one schedule variable drives both
backends; cron_longest_gap gives the longest time between two of its runs, for
the alert rules. Their documentation is in cron_to_calendar.yml and
cron_longest_gap.yml beside this file.

cron fires when the minute, hour and month match and either the day of month
or the day of week matches (when both are restricted); systemd's calendar
events are conjunctions, so that case becomes two expressions, which a timer
takes as two OnCalendar= lines.
"""

import datetime
import itertools

from ansible.errors import AnsibleFilterError

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
SYSTEMD_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
# name, lowest, highest, names for the values from `lowest` on
FIELDS = [
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
]


def _value(text, low, high, names, field, schedule):
    if names and text.lower() in names:
        return names.index(text.lower()) + low
    if not text.isdigit():
        raise AnsibleFilterError(f"cron schedule '{schedule}': '{text}' is not a valid {field}")
    number = int(text)
    if not low <= number <= high:
        raise AnsibleFilterError(f"cron schedule '{schedule}': {field} {number} is outside {low}-{high}")
    return number


def _expand(text, low, high, names, field, schedule):
    """The set of values a cron field matches."""
    values = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise AnsibleFilterError(f"cron schedule '{schedule}': bad step '{step_text}' in the {field}")
            step = int(step_text)
        else:
            step = 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            start, _sep, end = base.partition("-")
            first = _value(start, low, high, names, field, schedule)
            last = _value(end, low, high, names, field, schedule)
            if first > last:
                raise AnsibleFilterError(f"cron schedule '{schedule}': range '{base}' in the {field} runs backwards")
        else:
            first = _value(base, low, high, names, field, schedule)
            # "5/10" means from 5 to the end, every 10.
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values


def _runs(values):
    """Sorted values as (first, last) runs of consecutive numbers."""
    runs = []
    for value in sorted(values):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return runs


def _numbers(values, width):
    parts = []
    for first, last in _runs(values):
        if first == last:
            parts.append(f"{first:0{width}d}")
        elif last == first + 1:
            parts.append(f"{first:0{width}d},{last:0{width}d}")
        else:
            parts.append(f"{first:0{width}d}..{last:0{width}d}")
    return ",".join(parts)


def _weekdays(values):
    parts = []
    for first, last in _runs(values):
        if first == last:
            parts.append(SYSTEMD_DAYS[first])
        else:
            parts.append(f"{SYSTEMD_DAYS[first]}..{SYSTEMD_DAYS[last]}")
    return ",".join(parts)


def _parse(schedule):
    """SCHEDULE as (minutes, hours, days, months, weekdays, day_restricted,
    weekday_restricted): the sets each field matches (Sunday 0, never 7)."""
    if not isinstance(schedule, str):
        raise AnsibleFilterError(f"a cron schedule must be a string, got {schedule!r}")
    text = " ".join(schedule.split())
    if text.startswith("@"):
        if text not in MACROS:
            raise AnsibleFilterError(
                f"cron schedule '{schedule}' has no systemd equivalent; use five fields or one of {', '.join(MACROS)}"
            )
        text = MACROS[text]
    fields = text.split(" ")
    if len(fields) != 5:
        raise AnsibleFilterError(
            f"cron schedule '{schedule}' must have five fields (minute hour day-of-month month day-of-week)"
        )
    minutes, hours, days, months, weekdays = (
        _expand(text, low, high, names, name, schedule)
        for text, (name, low, high, names) in zip(fields, FIELDS, strict=True)
    )
    if 7 in weekdays:  # cron's second Sunday
        weekdays = (weekdays - {7}) | {0}
    day_restricted = not fields[2].startswith("*")
    weekday_restricted = not fields[4].startswith("*")
    return minutes, hours, days, months, weekdays, day_restricted, weekday_restricted


def cron_to_calendar(schedule):
    minutes, hours, days, months, weekdays, day_restricted, weekday_restricted = _parse(schedule)
    hour = "*" if hours == set(range(24)) else _numbers(hours, 2)
    minute = "*" if minutes == set(range(60)) else _numbers(minutes, 2)
    time = f"{hour}:{minute}:00"
    month = "*" if months == set(range(1, 13)) else _numbers(months, 2)

    def expression(day_set, weekday_set):
        day = "*" if day_set is None else _numbers(day_set, 2)
        prefix = "" if weekday_set is None else _weekdays(weekday_set) + " "
        return f"{prefix}*-{month}-{day} {time}"

    if day_restricted and weekday_restricted:
        return [expression(days, None), expression(None, weekdays)]
    if day_restricted:
        return [expression(days, None)]
    if weekday_restricted and weekdays != set(range(7)):
        return [expression(None, weekdays)]
    return [expression(None, None)]


# Years whose days cron_longest_gap walks: 28 years repeat the Gregorian
# calendar's weekdays and leap days (2100, not a leap year, lies beyond).
GAP_FIRST_YEAR = 2001
GAP_YEARS = 28


def cron_longest_gap(schedule):
    """The longest time, in seconds, between two runs of SCHEDULE: how old its
    job's last success may be before a run was missed. cron's rule for the two
    day fields (either matches when both are restricted) applies."""
    minutes, hours, days, months, weekdays, day_restricted, weekday_restricted = _parse(schedule)
    times = sorted(h * 3600 + m * 60 for h in hours for m in minutes)
    longest = max((b - a for a, b in itertools.pairwise(times)), default=0)
    day = datetime.date(GAP_FIRST_YEAR, 1, 1)
    end = datetime.date(GAP_FIRST_YEAR + GAP_YEARS, 1, 1)
    previous = None
    while day < end:
        if day.month in months:
            by_day = day.day in days
            by_weekday = day.isoweekday() % 7 in weekdays
            if day_restricted and weekday_restricted:
                runs = by_day or by_weekday
            else:
                runs = by_day and by_weekday
            if runs:
                if previous is not None:
                    gap = (day - previous).days * 86400 + times[0] - times[-1]
                    longest = max(longest, gap)
                previous = day
        day += datetime.timedelta(days=1)
    if previous is None:
        raise AnsibleFilterError(f"cron schedule '{schedule}' never runs")
    return longest


class FilterModule:
    def filters(self):
        return {"cron_to_calendar": cron_to_calendar, "cron_longest_gap": cron_longest_gap}
