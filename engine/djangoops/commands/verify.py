"""verify_db.sh: restore a set into a scratch database, compare its tables and
row counts with the set's manifest, drop the scratch database. With --from, the
set is downloaded from an off-site repository first, checked, test-restored and
kept nowhere: the copy that matters is the off-site one."""

import os

from .. import manifest, pitr, sets
from ..errors import Exit, Failure
from ..log import format_seconds
from ..runner import CommandFailed
from . import common

USAGE = """Usage: verify_db.sh [BACKUP|latest] [--from REPOSITORY|local] [--lock-wait SECONDS]
                    [--lock-timeout SECONDS] [--quiet]
Restore a backup into a scratch database, compare its tables and row counts with
the backup's manifest, drop the scratch database. With --from (default: the
role's db_backup_verify_from, else local), the set is downloaded from that
off-site repository and checked first, and nothing is left here. Needs a
writable db_backups/ (its lock file). Started as root with db_backup_pitr, it
then has pgBackRest verify its repository (every backup's files and the
archived WAL against their checksums)."""


def scratch_database(project):
    """Derived from the project's name, never the live one, and short enough for
    any server (PostgreSQL: 63 bytes)."""
    return f"djangoops_verify_{project[:40]}"


def main(context, args):
    # The root side's pipes (verify_db.sh started as root with db_backup_pitr), None otherwise.
    channel = pitr.Channel.from_environment()
    options, database, offsite = common.parse_and_load(
        context,
        args,
        USAGE,
        options={"--from": "source", "--lock-wait": "lock_wait", "--lock-timeout": "lock_timeout"},
        positional=1,
    )
    want = options.positional[0] if options.positional else "latest"
    source = offsite.verify_from if options.source is None else options.source
    if source == "local":
        source = ""
    if source and offsite.repository(source) is None:
        configured = " ".join(r.name for r in offsite.repositories) or "none"
        raise Failure(Exit.USAGE, f"no off-site repository named '{source}'; configured: {configured}")
    wait = common.lock_wait(options.lock_wait, database.lock_wait)
    database = with_lock_timeout(database, common.lock_timeout(options.lock_timeout, database.db_lock_timeout))
    context.start_run(database.healthcheck_url("verify_db"))
    common.lock(context, wait)
    engine = common.engine_for(context, database)
    if source:
        from .offsite_commands import offsite_for

        path = offsite_for(context, database, offsite).fetch(source, want, staged=True)
        checked_manifest = manifest.Manifest.read(path + ".manifest.json")
    else:
        path = sets.resolve(context.project.backups_dir, want)
        checked_manifest = common.check_backup(context, path, database).manifest
    name = os.path.basename(path)
    engine.check_connection()
    started = context.clock()
    staged = stage(context, engine, path)
    scratch = scratch_database(context.project.name)

    def drop_scratch():
        try:
            engine.drop_database(scratch)
        except (Failure, CommandFailed) as failed:
            context.log.warn(f"could not drop the scratch database {scratch}: {failed}")

    context.on_exit(drop_scratch)
    summary = load_checked(context, engine, path, checked_manifest, scratch, "", staged)
    if summary is None:
        raise Failure(Exit.VERIFY_MISMATCH, f"{name} does not restore to what its manifest describes")
    media = os.path.join(os.path.dirname(path), sets.media_name_of(name))
    if os.path.isfile(media):
        expected = checked_manifest.get("media_files", 0)
        actual = common.media_file_count(context.runner, media)
        if int(actual) != int(expected or 0):
            raise Failure(
                Exit.VERIFY_MISMATCH,
                f"{os.path.basename(media)} holds {actual} files, the manifest says {expected}",
            )
        context.log.info(f"media archive {os.path.basename(media)}: {actual} files, as in the manifest")
    where = f" from off-site repository {source}" if source else ""
    took = format_seconds(context.clock() - started)
    context.log.info(f"verified {name}{where} by a test restore in {took} s: {summary}")
    if channel is not None:
        verify_repository(context, channel)


def verify_repository(context, channel):
    """pgBackRest's repository read back by the root side: Failure(BAD_BACKUP)
    naming each backup or archive that is not wholly valid."""
    verified = channel.request(pitr.ASK_VERIFY, "verified", context.log, "verifying the point-in-time repository")
    if verified.get("tool") == "restic":  # MariaDB's binary logs and bases
        context.extra_metrics.update({"pitr_verify_seconds": verified["seconds"], "pitr_verify_invalid_files": 0})
        context.log.info(
            f"restic read back the point-in-time {'repositories' if verified['repositories'] > 1 else 'repository'} "
            f"in {verified['seconds']} s: {verified['snapshots']} snapshots ({verified['backups']} bases), every "
            "pack matching its checksum"
        )
        return
    context.extra_metrics.update(
        {
            "pitr_verify_seconds": verified["seconds"],
            "pitr_verify_invalid_files": (verified["files_checked"] - verified["files_valid"])
            + (verified["wal_checked"] - verified["wal_valid"]),
        }
    )
    if not verified["ok"] or verified["problems"]:
        raise Failure(
            Exit.BAD_BACKUP,
            "pgBackRest's verify finds damage: " + "; ".join(verified["problems"]) + "; a restore to a "
            "time that needs those files would fail: take a full backup (pitr_backup_db.sh --type full)",
        )
    several = verified.get("repositories", 1) > 1
    context.log.info(
        f"pgBackRest's {'repositories' if several else 'repository'} verified in {verified['seconds']} s: "
        f"{verified['backups']} backups "
        f"({verified['files_checked']} files) and {verified['wal_checked']} WAL files, each matching its checksum"
    )


def with_lock_timeout(database, seconds):
    """DATABASE's values with the lock timeout --lock-timeout gave."""
    import dataclasses

    return dataclasses.replace(database, db_lock_timeout=seconds)


def stage(context, engine, path):
    """An uncompressed copy of the set for a parallel load, made before
    anything is dropped, so a full disk stops the run while the live database
    is still intact. None when the engine loads from the compressed file."""
    if not engine.needs_staging(path):
        return None
    staged = os.path.join(context.project.backups_dir, f".restore.{os.getpid()}.partial")
    context.cleanup_on_exit(staged)
    context.log.info(f"decompressing {os.path.basename(path)} for a parallel restore")
    try:
        context.runner.pipeline([common.decompress_stage(path)], stdout=staged)
    except (CommandFailed, OSError):
        raise Failure(
            Exit.NO_SPACE,
            f"could not decompress {os.path.basename(path)} into {context.project.backups_dir}"
            f"{common.no_space_hint(context.project.backups_dir)}; nothing was changed",
        ) from None
    return staged


def load_checked(context, engine, backup, checked_manifest, database, suffix, staged=None, after_load=None):
    """DATABASE (one of the scripts' own: the restore's work database, the
    verify's scratch one) made afresh from BACKUP, stopping at the first error,
    then its tables and row counts compared with the manifest. Returns the
    comparison's summary, or None (the differences logged) when they differ.
    Any other failure raises, its message ending with SUFFIX (what it means
    for the live database). AFTER_LOAD, if given, is called between the load
    and the count (the restore starts its ANALYZE there)."""
    # The engine's messages say what failed; SUFFIX says what it means here.
    try:
        engine.drop_database(database)
        engine.create_database(database, checked_manifest)
        engine.load(backup, database, staged)
    except Failure as failed:
        raise Failure(failed.code, f"{failed.message}{suffix}") from None
    if after_load is not None:
        after_load()
    actual = engine.count_rows(database)
    comparison = manifest.compare_counts(checked_manifest.tables, actual)
    if not comparison.ok:
        for problem in comparison.problems:
            context.log.error(problem)
        return None
    context.log.info(f"checked {database} against the manifest: {comparison.summary}")
    return comparison.summary
