"""pitr_archive_db.sh: MariaDB's binary logs into the point-in-time
repositories (db_backup_pitr), every minute. Started as root, its root side
(pitr_mariadb.ArchiveSide) closes the open binary log when something was
written, copies the closed ones into root's spool and pushes it to each
repository, every half of db_backup_pitr_archive_timeout until the minute is
over; this side, the project user's, logs what was archived, writes the
metrics and pings."""

from .. import pitr
from ..errors import Exit, Failure
from . import common

USAGE = """Usage: pitr_archive_db.sh [--once] [--quiet]
Archive MariaDB's binary logs (db_backup_pitr): close the open one when something was written,
copy the closed ones into root's spool and push it, encrypted, to the local repository and the
off-site one, every half of db_backup_pitr_archive_timeout for a minute. Exit 7 when the local
repository cannot be written, 14 when only the off-site one cannot, 8 when the server's binary log
is off. --once: one pass, not a minute of them. Started as root, every minute (as the schedule
role does): the spool and the repositories are root's."""


def main(context, args):
    _options, database, _offsite = common.parse_and_load(context, args, USAGE, flags=("--once",))
    channel = pitr.Channel.for_command(
        database, "pitr_archive_db.sh", "the binary logs' spool and repositories are root's", engines=("mysql",)
    )
    context.start_run(database.healthcheck_url("pitr_archive_db"))
    done = channel.request(pitr.ASK_ARCHIVE, "archived", context.log, "archiving the binary logs")
    repositories = done.get("repositories") or {}
    context.extra_metrics.update(
        {
            "pitr_archive_files": len(done["files"]),
            "pitr_archive_bytes": int(done["bytes"]),
            "pitr_archive_failing": 1 if any(r.get("error") for r in repositories.values()) else 0,
        }
    )
    if done.get("gap"):
        gap = done["gap"]
        context.log.warn(
            f"the archive misses binary logs after {gap.get('after')} ({gap.get('next')} was the next one left on the "
            "server: the ones between were purged before they were archived); a restore to a time cannot cross "
            "that gap until pitr_backup_db.sh takes a base after it"
        )
    errors = {name: r["error"] for name, r in repositories.items() if r.get("error")}
    if done["files"]:
        written = [name for name, r in repositories.items() if name not in errors and not r.get("busy")]
        where = ", ".join(written) or "no repository"
        busy = [name for name, r in repositories.items() if r.get("busy")]
        if busy:
            where += f" ({', '.join(busy)}: another run's push takes them)"
        context.log.info(
            f"archived {len(done['files'])} binary logs ({common.iec(done['bytes'])}B, {done['files'][0]} to "
            f"{done['files'][-1]}) into {where}"
        )
    if "local" in errors:
        raise Failure(Exit.DUMP_FAILED, errors["local"])
    if errors:
        raise Failure(Exit.OFFSITE_FAILED, "; ".join(errors.values()))
    # A minute with nothing archived and nothing wrong leaves no line: 1440 a day would bury the others.
    context.quiet_success = not done["files"] and not done.get("gap") and done["passes"] > 0
    if done["passes"] == 0:
        context.log.info(f"another run of pitr_archive_db.sh held the spool all minute ({done['skipped']} passes)")
