"""The backup commands' decisions about time: the kind of a new set (GFS: monthly,
weekly, daily), its name, and which sets retention removes. Kept apart from the
commands so that the tests can try them on any calendar without a server.

- The first backup of a calendar month (UTC) is monthly; otherwise the first of
  an ISO 8601 week (which may start in the previous month or year) is weekly;
  any other is daily. Safety backups (taken by a restore) and weekday-rotation
  files count for neither.
- Retention keeps the KEEP newest sets of each kind and removes the older ones,
  but never the set `latest` points at, nor a protected one (the set a restore
  is restoring from). Only whole names of the project's sets count: another
  project's files in the same directory are never seen.

Ported from roles/db_backup/files/backup_manifest.py (gfs_kind, new_set_name,
prune_plan, and the checks of its `name` and `prune` commands) and db.sh's prune.
"""

import datetime
import time
from typing import NamedTuple

from djangoops.errors import Exit, Failure
from djangoops.sets import latest_name, list_sets, remove_set, set_name_pattern

KINDS = ("daily", "weekly", "monthly", "safety")
ROTATIONS = ("gfs", "weekday")


class Removal(NamedTuple):
    """A set retention removes: its name, its kind, and how many of that kind it keeps."""

    name: str
    kind: str
    kept: int


def stamp_date(stamp):
    """The UTC date of a stamp (YYYYmmddTHHMMSSZ)."""
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").date()


def gfs_kind(stamp, names, project):
    """The kind of a backup taken at STAMP, given the NAMES of the sets already
    there (any order; names not of PROJECT's sets are ignored)."""
    day = stamp_date(stamp)
    pattern = set_name_pattern(project)
    month_seen = week_seen = False
    for name in names:
        found = pattern.match(name)
        if not found or not found.group("stamp") or found.group("kind") == "safety":
            continue
        other = stamp_date(found.group("stamp"))
        month_seen |= (other.year, other.month) == (day.year, day.month)
        # The ISO year with the week: week 1 of one year is not week 1 of another.
        week_seen |= other.isocalendar()[:2] == day.isocalendar()[:2]
    if not month_seen:
        return "monthly"
    return "daily" if week_seen else "weekly"


def new_set_name(stamp, names, project, extension, rotation, safety=False, now=None):
    """(name, kind) of a set taken at STAMP among NAMES: PROJECT_STAMP_KIND.EXTENSION,
    or with the weekday rotation PROJECT_D-Day.EXTENSION, the weekday being the
    server's local one at NOW (default: the current time), as `date +%w-%A`
    gives it. A safety backup is named so whatever the rotation. An unknown
    ROTATION ends the command (Failure INTERNAL) before anything is dumped."""
    if rotation not in ROTATIONS:
        raise Failure(
            Exit.INTERNAL, "could not work out the name of the new backup; nothing was dumped"
        ) from ValueError(f"rotation {rotation!r}: gfs or weekday")
    if safety:
        kind = "safety"
    elif rotation == "weekday":
        day = time.localtime(now)
        return f"{project}_{time.strftime('%w-%A', day)}.{extension}", "weekday"
    else:
        kind = gfs_kind(stamp, names, project)
    return f"{project}_{stamp}_{kind}.{extension}", kind


def check_keep(kinds, keep):
    """Refuse (ValueError) KINDS that are not all known and counted in KEEP, or a
    count in KEEP below 1: keeping none would remove a kind's every set."""
    kinds, keep = list(kinds), dict(keep)
    unknown = [k for k in kinds if k not in KINDS or k not in keep]
    if unknown or any(v < 1 for v in keep.values()):
        raise ValueError(f"prune: kinds {kinds} need a count of at least 1 each in {keep}")


def prune_plan(names, kinds, keep, project, latest="", protected=()):
    """[Removal] that retention removes from NAMES (newest first, as list_sets
    gives them): for each of KINDS in turn, the sets beyond the KEEP[kind] newest,
    except LATEST and PROTECTED. Raises ValueError on KINDS or KEEP check_keep
    refuses."""
    check_keep(kinds, keep)
    pattern = set_name_pattern(project)
    plan = []
    for kind in kinds:
        seen = 0
        for name in names:
            found = pattern.match(name)
            if not found or (found.group("kind") or "weekday") != kind:
                continue
            seen += 1
            if seen > keep[kind] and name != latest and name not in protected:
                plan.append(Removal(name, kind, keep[kind]))
    return plan


def prune(directory, project, kinds, keep, protected=()):
    """Remove from DIRECTORY what prune_plan says for PROJECT's sets there, sparing
    the set `latest` points at and PROTECTED. Returns the Removals done, for the
    log ("retention: removing NAME (KIND, keeping KEPT)"). A ValueError means
    nothing was removed."""
    plan = prune_plan(list_sets(directory, project), kinds, keep, project, latest_name(directory), protected)
    for removal in plan:
        remove_set(directory, removal.name)
    return plan
