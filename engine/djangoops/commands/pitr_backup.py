"""pitr_backup_db.sh: one pgBackRest backup of the PostgreSQL cluster
(db_backup_pitr), as a scheduled job: started as root, its root side
(pitr.BackupSide) runs pgBackRest as postgres; this side, the project user's,
writes the log, the metrics and the health-check pings, as every job does."""

from .. import pitr
from . import common

USAGE = """Usage: pitr_backup_db.sh [--type auto|full|diff|incr] [--quiet]
Take a pgBackRest backup of the PostgreSQL cluster (db_backup_pitr). auto (the default): a
full one when the newest full backup is db_backup_pitr_full_every_days old or more (or there is
none), else a differential one (what changed since the newest full one). pgBackRest then
applies the stanza's retention. Started as root (as the schedule role does): pgBackRest's repository and
its passphrase are root's and postgres's."""


def main(context, args):
    options, database, _offsite = common.parse_and_load(context, args, USAGE, options={"--type": "type"})
    kind = pitr.backup_type(["--type", options.type] if options.type is not None else [])
    channel = pitr.Channel.for_command(
        database, "pitr_backup_db.sh", "pgBackRest's repository and its passphrase are root's and postgres's"
    )
    context.start_run(database.healthcheck_url("pitr_backup_db"))
    done = channel.request(pitr.ASK_BACKUP, "done", context.log, f"taking the {kind} backup")
    context.log.info(
        f"pgBackRest {done['type']} backup {done['label']} in {done['seconds']} s: the cluster holds "
        f"{common.iec(done['database_bytes'])}B, the repository took {common.iec(done['repository_bytes'])}B more; "
        f"the stanza keeps {done['backups']} backups"
    )
    for offsite in done.get("offsite", []):
        context.log.info(
            f"pgBackRest {offsite['type']} backup {offsite['label']} in off-site repository {offsite['repository']} "
            f"in {offsite['seconds']} s: it took {common.iec(offsite['repository_bytes'])}B more there; it keeps "
            f"{offsite['backups']} backups"
        )
    context.extra_metrics.update(
        {
            "pitr_backup_seconds": done["seconds"],
            "pitr_backup_database_bytes": done["database_bytes"],
            "pitr_backup_repository_bytes": done["repository_bytes"],
        }
    )
