"""pitr_backup_db.sh: one pgBackRest backup of the PostgreSQL cluster
(db_backup_pitr), as a scheduled job: started as root, its root side
(pitr.BackupSide) runs pgBackRest as postgres; this side, the project user's,
writes the log, the metrics and the health-check pings, as every job does."""

from .. import pitr
from . import common

USAGE = """Usage: pitr_backup_db.sh [--type auto|full|diff|incr] [--quiet]
On MariaDB: a base backup (mariadb-backup) of the server into each point-in-time repository, the
binary logs replaying from it; every base is a full one (auto or full), restic storing only what
changed since the last one; then each repository keeps db_backup_pitr_keep_full bases.
On PostgreSQL:
Take a pgBackRest backup of the PostgreSQL cluster (db_backup_pitr), in each repository. auto (the
default): a full one when the newest full backup is db_backup_pitr_full_every_days old or more (or
there is none); between them, a differential one (what changed since the newest full one) once the
WAL archived since the newest backup has grown to db_backup_pitr_diff_after_wal_percent of the
cluster's size, and none before: the archive holds the changes. pgBackRest then applies the
stanza's retention. Started as root (as the schedule role does): pgBackRest's repository and its
passphrase are root's and postgres's."""


def main(context, args):
    options, database, _offsite = common.parse_and_load(context, args, USAGE, options={"--type": "type"})
    kind = pitr.backup_type(["--type", options.type] if options.type is not None else [])
    channel = pitr.Channel.for_command(
        database, "pitr_backup_db.sh", "the point-in-time repositories and their passphrase are root's"
    )
    context.start_run(database.healthcheck_url("pitr_backup_db"))
    done = channel.request(pitr.ASK_BACKUP, "done", context.log, f"taking the {kind} backup")
    if database.engine == "mysql":
        report_base(context, done)
        return
    for taken in (done, *done.get("offsite", [])):
        where = "" if taken is done else f" in off-site repository {taken['repository']}"
        if not taken.get("taken", True):
            context.log.info(
                f"pgBackRest took no backup{where}: the archive holds what changed since backup {taken['label']} "
                f"({taken['type']}); the stanza keeps {taken['backups']} backups{' there' if where else ''}"
            )
        elif taken is done:
            context.log.info(
                f"pgBackRest {done['type']} backup {done['label']} in {done['seconds']} s: the cluster holds "
                f"{common.iec(done['database_bytes'])}B, the repository took {common.iec(done['repository_bytes'])}B "
                f"more; the stanza keeps {done['backups']} backups"
            )
        else:
            context.log.info(
                f"pgBackRest {taken['type']} backup {taken['label']}{where} in {taken['seconds']} s: it took "
                f"{common.iec(taken['repository_bytes'])}B more there; it keeps {taken['backups']} backups"
            )
    context.extra_metrics["pitr_backup_taken"] = 1 if done.get("taken", True) else 0
    if done.get("taken", True):
        context.extra_metrics.update(
            {
                "pitr_backup_seconds": done["seconds"],
                "pitr_backup_database_bytes": done["database_bytes"],
                "pitr_backup_repository_bytes": done["repository_bytes"],
            }
        )


def report_base(context, done):
    """The log line and metrics of MariaDB's base DONE (the root side's answer)."""
    copied = ", ".join(done.get("copied_to") or [])
    context.log.info(
        f"mariadb-backup base {done['label']} in {done['seconds']} s at {done['file']}:{done['position']}"
        f"{' (GTID ' + done['gtid'] + ')' if done.get('gtid') else ''}: the stream held "
        f"{common.iec(done['stream_bytes'])}B, the local repository took {common.iec(done['added_bytes'])}B more"
        f"{'; copied to ' + copied if copied else ''}; {done['bases']} bases kept"
    )
    context.extra_metrics.update(
        {
            "pitr_backup_taken": 1,
            "pitr_backup_seconds": done["seconds"],
            "pitr_backup_database_bytes": done["stream_bytes"],
            "pitr_backup_repository_bytes": done["added_bytes"],
        }
    )
