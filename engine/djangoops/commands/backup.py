"""backup_db.sh: dump, check, checksum and publish one backup set, move
`latest`, apply the retention, then push every set the off-site repositories
lack.

A set is published only when whole: the dump is written to a hidden partial
file, its rows counted from the very bytes stored (or inside the dump's own
snapshot), its compression tested, its sha256 and manifest written, every file
flushed, the sidecars renamed before the dump, the directory flushed. A failure
anywhere leaves the previous sets and `latest` as they were, removes the
partials, and exits with a documented code.
"""

import json
import os
import sys
import time

from .. import manifest, retention, sets
from ..errors import Exit, Failure
from ..log import format_seconds
from ..runner import CAPTURE, CommandFailed, Stage
from . import common

USAGE = """Usage: backup_db.sh [--no-offsite] [--lock-wait SECONDS] [--min-free-mb MB] [--quiet]
Back up the project's database into its db_backups/.
The backup is published (and latest moved, old ones pruned) only when whole;
then every off-site repository receives each local set newer than its newest (not with
--no-offsite). A failed off-site copy exits 14 with the local backup published."""

TOC_TIMEOUT = 600  # reading an archive's table of contents


def main(context, args):
    options, database, offsite = common.parse_and_load(
        context,
        args,
        USAGE,
        flags=("--no-offsite",),
        options={"--lock-wait": "lock_wait", "--min-free-mb": "min_free_mb"},
    )
    wait = common.lock_wait(options.lock_wait, database.lock_wait)
    min_free_mb = database.min_free_mb
    if options.min_free_mb is not None:
        if not common.is_whole(options.min_free_mb):
            raise Failure(Exit.USAGE, f"--min-free-mb takes a whole number, got '{options.min_free_mb}'")
        min_free_mb = int(options.min_free_mb)
    context.start_run(database.healthcheck_url("backup_db"))
    held = common.lock(context, wait)
    remove_stale_partials(context)
    engine = common.engine_for(context, database)
    engine.check_connection()
    sets.check_free_space(context.project.backups_dir, context.project.name, min_free_mb)
    name = take(context, database, offsite, engine, engine.connection.name)
    sets.point_latest_at(context.project.backups_dir, name)
    context.log.info(f"latest -> {name}")
    if database.rotation == "gfs":
        prune(context, database, ("daily", "weekly", "monthly"))
    # The room left once this run's retention is done, which the alert rules
    # compare with the size of the next backup.
    free, size = sets.disk_bytes(context.project.backups_dir)
    context.extra_metrics.update({"backup_disk_free_bytes": free, "backup_disk_size_bytes": size})
    # Off-site last: the local set is published whatever happens there. The push
    # holds the off-site lock, not the backups one, so that a restore or a verify
    # never waits for a slow repository.
    if not options.no_offsite and offsite.repositories:
        held.release()
        try:
            common.lock(context, wait, offsite=True)
        except Failure as failure:
            if failure.code != Exit.LOCKED:
                raise
            # The set is published: what failed is its copy off-site, and the
            # next run pushes it.
            raise Failure(
                Exit.OFFSITE_FAILED,
                f"{failure.message}; the local backup {name} is published, and the next run (or "
                "push_db_backups.sh) pushes every set still missing",
            ) from None
        from .offsite_commands import offsite_for

        offsite_for(context, database, offsite).push_all()


def remove_stale_partials(context):
    """What killed runs left; only ever called under the lock."""
    for name in sets.remove_stale_partials(context.project.backups_dir):
        context.log.warn(f"removing {name}, left by an interrupted run")


def prune(context, database, kinds, protected=(), offsite=None):
    """Retention, only after a backup was published: never the newest backup,
    never the one latest points at, never a PROTECTED one, and with OFFSITE
    (config.Offsite) never a safety backup that an off-site repository still
    lacks: until then it is the only copy of what a restore replaced."""
    directory = context.project.backups_dir
    keep = {
        "daily": database.keep.daily,
        "weekly": database.keep.weekly,
        "monthly": database.keep.monthly,
        "safety": database.keep.safety,
    }
    try:
        plan = retention.prune_plan(
            sets.list_sets(directory, context.project.name),
            kinds,
            keep,
            context.project.name,
            sets.latest_name(directory),
            protected,
        )
    except (ValueError, OSError):
        context.log.warn("retention: could not work out what to remove; nothing was removed")
        return
    safety = [removal.name for removal in plan if removal.kind == "safety"]
    if safety and offsite is not None and offsite.repositories:
        from .offsite_commands import offsite_for

        waiting = offsite_for(context, database, offsite).pending(safety)
        for name in sorted(waiting):
            context.log.info(
                f"retention: keeping {name} (safety) until every off-site repository holds it; "
                "the next backup_db.sh or push_db_backups.sh sends it"
            )
        plan = [removal for removal in plan if removal.name not in waiting]
    for removal in plan:
        context.log.info(f"retention: removing {removal.name} ({removal.kind}, keeping {removal.kept})")
        try:
            sets.remove_set(directory, removal.name)
        except OSError as exc:
            # Retention runs after the set that matters is published: a set it
            # could not remove is a warning, not a failed backup or restore.
            context.log.warn(f"retention: could not remove {removal.name}: {exc.strerror or exc}")


def new_stamp(directory, project, clock=time.time, sleep=time.sleep):
    """A UTC stamp no set of PROJECT has yet: names are unique to the second,
    so two runs in one second (under the lock) wait."""
    while True:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
        prefix = f"{project}_{stamp}_"
        try:
            taken = any(entry.startswith(prefix) for entry in os.listdir(directory))
        except FileNotFoundError:
            taken = False
        if not taken:
            return stamp
        sleep(1)


def take(context, database, offsite, engine, dump_database, safety=False, directory=None, kind=None):
    """Dump DUMP_DATABASE into a new set (a safety backup when SAFETY), check
    it and publish it; return its name. Nothing is published unless whole.
    DIRECTORY (default: db_backups/) and KIND (default: the rotation's) are
    for a set the run uses and removes itself, as a restore to a time does:
    named PROJECT_STAMP_KIND, without media files."""
    transient = kind is not None
    directory = directory or context.project.backups_dir
    project = context.project.name
    runner = context.runner
    started = context.clock()
    stamp = new_stamp(directory, project)
    extension = sets.backup_extension(database.engine, database.postgresql_format, database.compression)
    if transient:
        name = f"{project}_{stamp}_{kind}.{extension}"
    else:
        name, kind = retention.new_set_name(
            stamp, sets.list_sets(directory, project), project, extension, database.rotation, safety
        )
    partial = sets.partial_path(directory, name)
    context.cleanup_on_exit(partial, partial + ".sha256", partial + ".manifest.json")
    context.log.info(f'dumping database "{dump_database}" to {name} ({kind})')
    compress = common.compress_stage(database, offsite)

    if engine.counts_in_snapshot():
        # The rows are counted in the dump's own snapshot, while it runs.
        snapshot = engine.snapshot_begin(dump_database)
        try:
            run_dump(context, engine, [engine.dump_stage(dump_database, snapshot), compress], partial, name)
            counts = engine.snapshot_counts(snapshot, table_of_contents(context, partial, name))
        except BaseException:
            # The snapshot's sessions end with the run, not when the runner closes.
            engine.snapshot_abandon(snapshot)
            raise
    else:
        counts = counted_dump(context, database, engine, dump_database, compress, partial, name)
    if not counts["complete"]:
        raise Failure(Exit.DUMP_FAILED, "the dump is incomplete (no end-of-dump marker); nothing was published")

    # The integrity test reads the file on one core while the checksum (below)
    # and the media archive take the other.
    test = common.start_test(runner, partial, name)
    media = ""
    media_partial = ""
    media_files = media_size = 0
    if database.media_dir and not safety and not transient:
        media = sets.media_name_of(name)
        media_partial = sets.partial_path(directory, media)
        context.cleanup_on_exit(media_partial)
        archive_media(context, database, offsite, media_partial, media)
        media_files = common.media_file_count(runner, media_partial, media, code=Exit.DUMP_FAILED)
        media_size = os.stat(media_partial).st_size
    size = os.stat(partial).st_size
    sha = manifest.sha256_of(partial)
    if not common.finish_test(test):
        raise Failure(Exit.DUMP_FAILED, "the compressed file fails its integrity test; nothing was published")
    lines = [f"{sha}  {name}\n"]
    if media:
        lines.append(f"{manifest.sha256_of(media_partial)}  {media}\n")
    with open(partial + ".sha256", "w", encoding="utf-8") as f:
        f.writelines(lines)
    fields = {
        "engine": database.engine,
        "database": engine.connection.name,
        "project": project,
        "created": stamp,
        "kind": kind,
        "file": name,
        "sha256": sha,
        "size_bytes": size,
        "dump_seconds": format_seconds(context.clock() - started),
        "media_file": media,
        "media_size_bytes": media_size,
        "media_files": media_files,
    }
    fields.update(engine.manifest_fields(dump_database))
    written = manifest.write_manifest(
        partial + ".manifest.json", fields, counts["tables"], list(database.excluded_table_data)
    )
    # Durable before visible: flush the files, rename (sidecars first, the data
    # last: a data file never exists without its checksum), flush the directory.
    sets.publish(directory, name, media=bool(media))
    took = format_seconds(context.clock() - started)
    context.log.info(f"published {name}: {common.iec(size)}B, {written.rows} rows, sha256 {sha}, in {took} s")
    context.extra_metrics.update(
        {"backup_size_bytes": size, "backup_rows": written.rows, "backup_published_timestamp_seconds": int(time.time())}
    )
    return name


def run_dump(context, engine, stages, partial, name):
    """The dump pipeline into PARTIAL; a failure says which stage failed, the
    writer first: when it fails (disk full), the dump dies of a broken pipe,
    and that is not the cause to report."""
    try:
        context.runner.pipeline(stages, stdout=partial)
    except CommandFailed as failed:
        raise dump_failure(context, engine, failed, partial) from None


def dump_failure(context, engine, failed, partial):
    hint = common.no_space_hint(context.project.backups_dir)
    if failed.name in ("zstd", "gzip"):
        return Failure(Exit.DUMP_FAILED, f"writing {partial} failed: {common.tail(failed.stderr, 2)}{hint}")
    if failed.name == "counter":
        return Failure(Exit.DUMP_FAILED, f"reading the dump back failed: {failed.reason()}")
    if failed.timed_out:
        why = "it did not finish in time"
    elif failed.signal is not None:
        why = f"killed by signal {failed.signal}"
    else:
        why = f"exit code {failed.returncode}"
    return Failure(Exit.DUMP_FAILED, f"{engine.dump_name} failed ({why}): {common.tail(failed.stderr, 3)}{hint}")


def counted_dump(context, database, engine, dump_database, compress, partial, name):
    """A text dump: the counter (counter.py, a process of its own) is a stage
    between the dump and the compressor, passing the stream through and
    writing the manifest's counts from the very bytes being stored."""
    out = os.path.join(context.run_dir, "counts.json")
    counter = Stage(
        [
            sys.executable,
            "-I",
            os.path.join(os.path.dirname(os.path.dirname(__file__)), "counter.py"),
            database.engine,
            out,
        ],
        name="counter",
    )
    run_dump(context, engine, [engine.dump_stage(dump_database), counter, compress], partial, name)
    try:
        with open(out, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise Failure(Exit.DUMP_FAILED, f"reading the dump back failed: the counts are unreadable ({exc})") from None


def table_of_contents(context, partial, name):
    """`pg_restore --list` of the archive: only the table of contents is read,
    then pg_restore stops reading, and the decompressor may die of the broken
    pipe (that is not a failure; a damaged file fails pg_restore)."""
    try:
        results = context.runner.pipeline(
            [
                common.decompress_stage(partial, name, ok_codes=(0, 1, -13)),
                Stage(["pg_restore", "--list"], name="pg_restore"),
            ],
            stdout=CAPTURE,
            timeout=TOC_TIMEOUT,
        )
    except CommandFailed as failed:
        raise Failure(
            Exit.DUMP_FAILED,
            f"pg_restore could not read the archive's table of contents ({failed.reason()}); nothing was published",
        ) from None
    return results[-1].stdout.decode("utf-8", "replace")


def archive_media(context, database, offsite, partial, name):
    """MEDIA_ROOT into a compressed tar; fails the run (nothing published) if
    anything cannot be read."""
    media_dir = database.media_dir
    if not os.path.isdir(media_dir):
        raise Failure(Exit.CONFIG, f"the media directory {media_dir} (db_backup_media_dir) does not exist")
    context.log.info(f"archiving {media_dir} to {name}")
    tar = Stage(["tar", "-C", media_dir, "-cf", "-", "."], name="tar", ok_codes=(0, 1))
    hint = common.no_space_hint
    try:
        results = context.runner.pipeline([tar, common.compress_stage(database, offsite)], stdout=partial)
    except CommandFailed as failed:
        if failed.name == "tar":
            raise Failure(
                Exit.DUMP_FAILED,
                f"archiving {media_dir} failed (tar exit {failed.returncode}): {common.tail(failed.stderr, 2)}"
                f"{hint(context.project.backups_dir)}",
            ) from None
        raise Failure(
            Exit.DUMP_FAILED,
            f"writing {partial} failed: {common.tail(failed.stderr, 2)}{hint(context.project.backups_dir)}",
        ) from None
    # GNU tar exits 1 when a file changed while it was read (an upload during
    # the backup): the archive is still whole, so that is a warning.
    if results[0].returncode == 1:
        context.log.warn(f"media files changed while being archived: {common.tail(results[0].stderr, 2)}")
    if not common.test_compression(context.runner, partial, name):
        raise Failure(Exit.DUMP_FAILED, "the media archive fails its integrity test; nothing was published")
