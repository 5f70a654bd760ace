"""Which off-site snapshots to trust, judged by when each one arrived.

A server's key may only add to its repository, but it adds anything: a
snapshot's host, tags, time and files are what the server wrote. What it cannot
write is when a snapshot arrived: the backup host's own record of that (the
modification time of the snapshot's file, which the append-only server never
lets a client rewrite) is read through the key's forced command
(`djangoops-arrivals`, roles/offsite_host) and is the only thing trusted here.

A snapshot of a set is taken as the set's genuine copy when:
- the backup host has a record of its arrival;
- neither its time nor the stamp in its name is later than its arrival (a set
  cannot arrive before it is taken; SKEW allows for the two clocks);
- it is the first of that name to arrive (with the seed's weekday names, which
  come back every week, the first of that name and time).
Every other one is refused, with the reason, and left out of the listing,
fetches and pushes; the off-site prune never forgets it (it may be the
evidence of a break-in), nor a genuine snapshot outside its policy's reach.

What this cannot tell: a set pushed with a stolen key under a new name, dated
after the theft, looks as genuine as the server's own; the operator then picks
a set that arrived before the break-in (fetch --arrived-before).
"""

import calendar
import datetime
import math
import re
import time
from typing import NamedTuple

# The first line of the backup host's answer: without it, the host predates the
# record (an older offsite_host role) and nothing can be judged.
HEADER = "djangoops-arrivals 1"
# How far a set's own time may be ahead of its arrival: the server's clock and the backup
# host's may differ by this much.
SKEW = 300
ARRIVAL_LINE = re.compile(r"([0-9a-f]{64}) ([0-9]{1,12})(?:\.[0-9]+)?\Z")
# restic prints nanoseconds; Python 3.11 reads at most microseconds everywhere.
FRACTION = re.compile(r"(\.\d{6})\d+")


class Refused(NamedTuple):
    """A snapshot not taken as its set's copy, and why (a sentence that names it)."""

    snapshot: object
    reason: str


class Judged(NamedTuple):
    """GENUINE: the sets' copies, as listed (oldest first by their time);
    REFUSED: every other snapshot, with the reason; ARRIVED: snapshot id ->
    when it arrived (seconds since the epoch)."""

    genuine: list
    refused: list
    arrived: dict


def parse(text):
    """The backup host's answer: {snapshot id: arrival epoch}, or None when it
    carries no header (a host that keeps no record). ValueError on any other
    line: an answer that cannot be read is never taken as an empty one. TEXT
    may be bytes (the runner's capture), read as UTF-8."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        return None
    arrived = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        found = ARRIVAL_LINE.match(line.strip())
        if found is None:
            raise ValueError(f"not a snapshot's arrival: {line[:80]!r}")
        arrived[found.group(1)] = int(found.group(2))
    return arrived


def epoch(text):
    """A restic time (RFC 3339, nanoseconds) in whole seconds since the epoch.
    ValueError when it is not a time."""
    moment = datetime.datetime.fromisoformat(FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    return math.floor(moment.timestamp())


def stamp_epoch(name, project):
    """The time in set NAME's stamp, None for a weekday name (or a stamp no
    calendar has)."""
    from .sets import stamp_of  # sets reads manifests, which import nothing of this

    stamp = stamp_of(name, project)
    if not stamp:
        return None
    try:
        return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def utc(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def judge(held, arrived, project, skew=SKEW):
    """HELD (manifest.Snapshot of PROJECT's sets) judged against ARRIVED
    (parse()'s answer, read after the listing): Judged."""
    refused = []
    eligible = []
    for snapshot in held:
        came = arrived.get(snapshot.snapshot_id)
        short = snapshot.snapshot_id[:8]
        if came is None:
            refused.append(
                Refused(snapshot, f"snapshot {short} of {snapshot.name}: the backup host has no record of its arrival")
            )
            continue
        claimed = epoch(snapshot.time)
        stamp = stamp_epoch(snapshot.name, project)
        if claimed > came + skew:
            refused.append(
                Refused(
                    snapshot,
                    f"snapshot {short} of {snapshot.name} is dated {snapshot.time}, after it arrived "
                    f"({utc(came)}): planted",
                )
            )
        elif stamp is not None and stamp > came + skew:
            refused.append(
                Refused(
                    snapshot,
                    f"snapshot {short} of {snapshot.name} is named for {utc(stamp)}, after it arrived "
                    f"({utc(came)}): planted",
                )
            )
        else:
            eligible.append((came, snapshot.snapshot_id, snapshot))
    first = {}
    genuine = []
    for came, _id, snapshot in sorted(eligible, key=lambda e: (e[0], e[1])):
        # A stamped name is one set; a weekday name is one set per time it was taken.
        key = snapshot.name if stamp_epoch(snapshot.name, project) is not None else (snapshot.name, snapshot.time)
        if key in first:
            earlier, earlier_came = first[key]
            refused.append(
                Refused(
                    snapshot,
                    f"snapshot {snapshot.snapshot_id[:8]} of {snapshot.name} arrived {utc(came)}, after the set's "
                    f"first snapshot ({earlier.snapshot_id[:8]}, arrived {utc(earlier_came)}): a second copy "
                    "under the same name is not trusted",
                )
            )
            continue
        first[key] = (snapshot, came)
        genuine.append(snapshot)
    genuine.sort(key=lambda s: (epoch(s.time), arrived[s.snapshot_id], s.snapshot_id))
    return Judged(genuine, refused, dict(arrived))


# --- the off-site prune's policy ---------------------------------------------------------


def _months_back(day, count):
    """The first day of the month COUNT - 1 months before DAY's."""
    index = day.year * 12 + day.month - 1 - (count - 1)
    return datetime.date(index // 12, index % 12 + 1, 1)


def keep(genuine, arrived, now, daily, weekly, monthly, project=None):
    """The ids of GENUINE snapshots to keep, judged by when they arrived
    (ARRIVED), never by what they claim: the newest of each of the last DAILY
    days, WEEKLY ISO weeks and MONTHLY months before NOW (UTC calendar, counted
    back from NOW, so that nothing dated or pushed can shift them), and always
    the newest of all. A safety backup (of PROJECT, when given) is no day's,
    week's or month's set and never the newest: each one that arrived in the
    last DAILY days is kept, and the newest of them always. {id: why}
    ("daily 2026-12-06", ...)."""
    from .sets import kind_of  # sets reads manifests, which import nothing of this

    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    first_day = today - datetime.timedelta(days=daily - 1) if daily > 0 else None
    monday = today - datetime.timedelta(days=today.weekday())
    first_week = monday - datetime.timedelta(weeks=weekly - 1) if weekly > 0 else None
    first_month = _months_back(today, monthly) if monthly > 0 else None
    kept = {}
    newest_in = {}
    sets, safety = [], []
    for snapshot in sorted(genuine, key=lambda s: (arrived[s.snapshot_id], s.snapshot_id)):
        (safety if project and kind_of(snapshot.name, project) == "safety" else sets).append(snapshot)
    for snapshot in safety:
        day = datetime.datetime.fromtimestamp(arrived[snapshot.snapshot_id], datetime.UTC).date()
        if day > today:
            kept[snapshot.snapshot_id] = "arrived after now"
        elif first_day is not None and day >= first_day:
            kept[snapshot.snapshot_id] = f"safety {day.isoformat()}"
    if safety:
        kept.setdefault(safety[-1].snapshot_id, "the newest safety backup")
    for snapshot in sets:
        day = datetime.datetime.fromtimestamp(arrived[snapshot.snapshot_id], datetime.UTC).date()
        if day > today:
            # Arrived after NOW by the controller's clock: nothing to judge it by yet.
            kept[snapshot.snapshot_id] = "arrived after now"
            continue
        if first_day is not None and day >= first_day:
            newest_in[("daily", day.isoformat())] = snapshot.snapshot_id
        week_start = day - datetime.timedelta(days=day.weekday())
        if first_week is not None and week_start >= first_week:
            iso = day.isocalendar()
            newest_in[("weekly", f"{iso.year}-W{iso.week:02d}")] = snapshot.snapshot_id
        if first_month is not None and day >= first_month:
            newest_in[("monthly", f"{day.year}-{day.month:02d}")] = snapshot.snapshot_id
    for (rule, bucket), snapshot_id in sorted(newest_in.items()):
        kept.setdefault(snapshot_id, f"{rule} {bucket}")
    if sets:
        kept.setdefault(sets[-1].snapshot_id, "the newest")
    return kept
