"""pitr_check_db.sh: how continuous archiving goes (db_backup_pitr), as a
scheduled job every few minutes. Started as root, its root side
(pitr.StatusSide) reads the live cluster's pg_stat_archiver as postgres and
the stanza's backups from pgBackRest; this side, the project user's, judges
them, logs one line, writes the metrics (archive lag, the newest restorable
moment, failing archiving) and pings. It changes nothing."""

import datetime
import math
import re

from .. import pitr
from ..errors import Exit, Failure
from . import common

USAGE = """Usage: pitr_check_db.sh [--quiet]
Check that the PostgreSQL cluster's WAL reaches pgBackRest's repository (db_backup_pitr): exit 0
when archiving keeps up and the repository holds a backup to restore from, 8 (with the reason in
logs/pitr_check_db.log) when archiving fails, lags more than db_backup_pitr_max_archive_lag
seconds, or there is nothing to restore from. Writes the metrics djangoops_pitr_*. Started as root
(as the schedule role does): the repository is root's and postgres's."""

# A WAL segment's file name: timeline, then the segment's number in two halves.
WAL_NAME = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
# A timeline history file (after a promotion): no segment of that timeline yet.
HISTORY_NAME = re.compile(r"([0-9A-F]{8})\.history\Z")


def main(context, args):
    _options, database, _offsite = common.parse_and_load(context, args, USAGE)
    channel = pitr.Channel.for_command(database, "pitr_check_db.sh", "pgBackRest's repository is root's and postgres's")
    context.start_run(database.healthcheck_url("pitr_check_db"))
    status = channel.request(pitr.ASK_STATUS, "status", context.log, "reading how archiving goes")
    if status.get("engine") == "mysql":
        verdict = judge_mariadb(status, int(status["max_archive_lag"]))
    else:
        verdict = judge(status, int(status["max_archive_lag"]))
    context.extra_metrics.update(verdict.metrics)
    if verdict.problems:
        raise Failure(Exit.BAD_BACKUP, "; ".join(verdict.problems))
    context.log.info(verdict.summary)


class Verdict:
    def __init__(self):
        self.metrics = {}
        self.problems = []
        self.summary = ""


def wal_position(name):
    """(timeline, high, low) of a WAL file NAME as pg_stat_archiver names what
    it archived (a segment, a backup's history file after its segment, or a
    timeline's history file: (timeline, -1, -1)); None for anything else."""
    if not isinstance(name, str):
        return None
    found = WAL_NAME.match(name)
    if found:
        return tuple(int(part, 16) for part in found.groups())
    found = HISTORY_NAME.match(name)
    if found:
        return (int(found.group(1), 16), -1, -1)
    return None


def moment(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def judge(status, max_lag):
    """What STATUS (the root side's answer) means: the metrics, the problems
    (each a sentence; none when all is well) and the summary line."""
    verdict = Verdict()
    archiver = status["archiver"]
    now = float(archiver["now"])
    archived_at = archiver.get("archived_at")
    failed_at = archiver.get("failed_at")
    archived = wal_position(archiver.get("archived_wal"))
    current = wal_position(archiver.get("current_wal"))
    backups = status.get("backups") or []
    repository = status.get("repository") or {"code": 0, "message": "ok"}

    if str(archiver.get("archive_mode")) not in ("on", "always"):
        verdict.problems.append(
            f"the cluster runs with archive_mode = {archiver.get('archive_mode')}: nothing is archived "
            "(it takes effect when PostgreSQL restarts)"
        )
    failing = failed_at is not None and (archived_at is None or float(failed_at) > float(archived_at))
    if failing:
        verdict.problems.append(
            f"archiving fails: {archiver.get('failed_wal')} failed at {moment(float(failed_at))} "
            f"({archiver.get('failed_count')} failures since the statistics were reset); read "
            "/var/log/pgbackrest/ and PostgreSQL's log"
        )
    if current is None:
        verdict.problems.append("the cluster is in recovery (a standby?): check the primary's archiving")
        waiting = False
    else:
        # WAL waits when the segment being written is past the newest archived
        # one: something was written since the last switch.
        waiting = archived is None or current > archived
    if not waiting:
        lag = 0.0
    elif archived_at is None:
        lag = math.inf
    else:
        lag = max(0.0, now - float(archived_at))
    if lag > max_lag:
        newest = (
            f"the newest archived segment, {archiver.get('archived_wal')}, is {format_lag(lag)} old"
            if archived_at is not None
            else "no segment has been archived yet"
        )
        verdict.problems.append(
            f"archiving lags: {newest} while {archiver.get('current_wal')} waits "
            f"(db_backup_pitr_max_archive_lag {max_lag} s)"
        )
    code = int(repository.get("code", 0))
    if code not in (0, 2):  # 2: no valid backup, said below
        verdict.problems.append(f"pgBackRest says of the stanza: {repository.get('message')} (status {code})")
    newest_backup = max((b["stop"] for b in backups), default=None)
    if not backups:
        verdict.problems.append(
            "the repository holds no backup: nothing can be restored to a time until pitr_backup_db.sh takes one"
        )
    if newest_backup is None:
        restorable = 0.0
    elif not waiting:
        restorable = now
    else:
        restorable = max(float(archived_at or 0), float(newest_backup))

    verdict.metrics = {
        "pitr_archive_lag_seconds": round(lag, 1) if math.isfinite(lag) else lag,
        "pitr_archive_lag_allowed_seconds": max_lag,
        "pitr_archived_timestamp_seconds": round(float(archived_at or 0), 3),
        "pitr_archive_failing": 1 if failing else 0,
        "pitr_archive_failures_total": int(archiver.get("failed_count") or 0),
        "pitr_restorable_timestamp_seconds": round(restorable, 3),
        "pitr_backups": len(backups),
        "pitr_newest_backup_timestamp_seconds": int(newest_backup or 0),
    }
    if not verdict.problems:
        verdict.summary = (
            f"archiving keeps up: the newest archived segment {archiver.get('archived_wal')} at "
            f"{moment(float(archived_at))}, {'nothing waits' if not waiting else f'lag {format_lag(lag)}'}; "
            f"restorable to {moment(restorable)}; {len(backups)} backups, the newest of {moment(newest_backup)}"
        )
    return verdict


def format_lag(seconds):
    if not math.isfinite(seconds):
        return "unbounded"
    return f"{seconds:.0f} s"


def judge_mariadb(status, max_lag):
    """What MariaDB's STATUS (pitr_mariadb.StatusSide's answer) means: each
    repository holds every write made before its "through" moment; the lag is
    how long ago the oldest of them was."""
    verdict = Verdict()
    now = float(status["now"])
    repositories = status.get("repositories") or {}
    bases = status.get("bases") or []
    timeline = status.get("timeline")
    if not status.get("log_bin"):
        verdict.problems.append(
            "the server's binary log is off (log_bin): nothing is archived (it takes effect when MariaDB restarts)"
        )
    elif str(status.get("binlog_format")).upper() != "ROW":
        verdict.problems.append(
            f"the server logs in binlog_format {status.get('binlog_format')}, not ROW: a replay may differ"
        )
    throughs = {name: r.get("through") for name, r in repositories.items()}
    oldest = min((float(t) if t is not None else 0.0 for t in throughs.values()), default=0.0)
    lag = now - oldest if oldest else math.inf
    failing = {name: r.get("error") for name, r in repositories.items() if r.get("error")}
    for name, error in failing.items():
        verdict.problems.append(f"archiving into the {name} repository fails: {error}")
    if lag > max_lag:
        verdict.problems.append(
            "archiving lags: "
            + (
                f"the {min(throughs, key=lambda n: throughs[n] or 0)} repository holds the writes up to "
                f"{moment(oldest)}, {format_lag(lag)} ago"
                if oldest
                else "nothing has been archived yet (is pitr_archive_db.sh scheduled?)"
            )
            + f" (db_backup_pitr_max_archive_lag {max_lag} s)"
        )
    gap = status.get("gap")
    if gap:
        verdict.problems.append(
            f"the archive misses binary logs after {gap.get('after')} (purged before they were archived): take a "
            "base (pitr_backup_db.sh)"
        )
    current = [b for b in bases if b.get("timeline") == timeline]
    newest_backup = max((float(b.get("ended_at") or 0) for b in current), default=None)
    if not current:
        verdict.problems.append(
            "no base of the archive's current timeline: nothing can be restored to a time until pitr_backup_db.sh "
            "takes one"
        )
    restorable = max(oldest, newest_backup or 0.0) if newest_backup is not None and not gap else 0.0
    verdict.metrics = {
        "pitr_archive_lag_seconds": round(lag, 1) if math.isfinite(lag) else lag,
        "pitr_archive_lag_allowed_seconds": max_lag,
        "pitr_archived_timestamp_seconds": round(oldest, 3),
        "pitr_archive_failing": 1 if failing else 0,
        "pitr_restorable_timestamp_seconds": round(restorable, 3),
        "pitr_backups": len(bases),
        "pitr_newest_backup_timestamp_seconds": int(newest_backup or 0),
    }
    if not verdict.problems:
        verdict.summary = (
            f"archiving keeps up: every repository holds the writes up to {moment(oldest)} "
            f"(lag {format_lag(lag)}, the newest binary log archived {status.get('last_file')}); restorable to "
            f"{moment(restorable)}; {len(bases)} bases, the newest of {moment(newest_backup)}"
        )
    return verdict
