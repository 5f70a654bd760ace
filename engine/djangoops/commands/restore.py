"""restore_db.sh: replace the project's database with a backup set, as a state
machine that reads in order in this one file.

    CHECKING  the set checked, the server, the rights, blocking sessions, free
              space, the media unpacked beside MEDIA_ROOT. Undo: nothing was
              created; the work files go.
    LOADING   the set loaded into a work database no client of the site knows,
              compared with its manifest (MariaDB's ANALYZE TABLE runs here),
              its per-database settings, grants and connection limit carried
              over. Undo: drop the work database; the live one is unchanged.
    SWAPPING  in one short step the live database is set aside and the work
              one takes its name. Undo: find out which side of the swap the
              server is on (never assume it), and say so; drop only what is
              known to be the work database.
    SWAPPED   the restored database is live; PostgreSQL's ANALYZE begins on
              it (beside what follows); the media trees are swapped. Undo:
              stop the ANALYZE; nothing to take back; the log says what is
              where.
    SAVING    what the live database held before becomes a safety backup (a
              set like any other), then the set-aside database is dropped.
              Undo: the set-aside database stays, and the log names it.
    DONE      the safety backups are pruned, the ANALYZE has ended.

Each transition writes a log line; each failure says what it means for the
live database. Exit codes: 9 (and 13, 3, 4, 6, 8) only while the live database
is unchanged; a failure after the swap exits 15, with the safety copy taken
whenever the set-aside database can be dumped.
"""

import errno
import os
import re
import sys
import time

from .. import pitr, sets
from ..errors import Exit, Failure
from ..log import format_seconds, human_duration
from ..runner import CommandFailed, Stage
from . import backup, common, offsite_commands, verify

USAGE = """Usage: restore_db.sh [BACKUP|latest] [--from REPOSITORY [--arrived-before TIME]] [--yes]
                     [--with-media] [--jobs N] [--lock-wait SECONDS] [--lock-timeout SECONDS] [--quiet]
       restore_db.sh --to-time 'YYYY-MM-DD HH:MM:SS[+HH:MM]' [--yes] [--jobs N] [--lock-wait ...]
Replace the project's database with a backup from its db_backups/ (default: latest).
With --from, the set is first fetched from that off-site repository (as fetch_db_backup.sh
does; --arrived-before as there), under the same lock as the restore: no backup's retention
can remove it in between. With --to-time (PostgreSQL with db_backup_pitr; as root), the
database as it was at that moment (the server's local time unless a zone is given): the
cluster is recovered aside from pgBackRest's repository, on a scratch cluster of its own,
and the database is taken from there; the live cluster is never touched.
Asks for the database name to be typed unless --yes is given.
The backup is loaded into a work database and checked against its manifest while
the site runs on; then, in one short step, the live database is set aside and the
restored one takes its name. What the old one held becomes a safety backup.
--with-media also replaces MEDIA_ROOT with the set's media archive (the old tree
is kept aside). --lock-timeout: how long to wait on another session's lock
before refusing (nothing changed). Needs a writable db_backups/."""

CHECKING, LOADING, SWAPPING, SWAPPED, SAVING, DONE = "checking", "loading", "swapping", "swapped", "saving", "done"
UNPACK_TIMEOUT = 6 * 3600  # seconds: the media archive's unpacking is bounded too


def work_database(project):
    """Where a restore loads, where no client of the site connects."""
    return f"djangoops_restore_{project[:40]}"


def aside_prefix(project):
    """The database a restore sets aside: stamped, so it never meets another."""
    return f"djangoops_before_{project[:30]}_"


class Restore:
    """One restore: its state, the names it works with, and the undo of each state."""

    def __init__(self, context, database, offsite, engine):
        self.context = context
        self.log = context.log
        self.database = database
        self.offsite = offsite
        self.engine = engine
        self.live = engine.connection.name
        self.work = work_database(context.project.name)
        self.aside = ""
        self.had_live = False
        self.state = CHECKING
        self.manifest = None  # the set's, once checked
        self.media_new = ""  # the unpacked media tree, until it is swapped in
        self.media_old = ""
        self.safety = ""
        self.analyzing = None  # an ANALYZE begun beside the restore's next steps, until it ends

    def enter(self, state, meaning):
        """Move to STATE, saying in the log what it means for the live database."""
        self.state = state
        self.log.info(f"restore: {state}: {meaning}")

    # --- the undo of each state, run when the command ends without reaching DONE ---------

    def undo(self):
        if self.analyzing is not None:  # begun beside the restore's next steps, not yet ended
            self.engine.stop_analyze(self.analyzing)
            self.analyzing = None
        if self.state == DONE:
            return
        self.engine_stop()
        if self.state == CHECKING:
            self.log.error(f'database "{self.live}" is unchanged: the restore stopped before it created anything')
        elif self.state == LOADING:
            self.drop_work()
            self.log.error(f'database "{self.live}" is unchanged: the restore stopped before the swap')
        elif self.state == SWAPPING:
            self.undo_swap()
        elif self.state == SWAPPED:
            self.log.error(
                f'database "{self.live}" holds the restored backup, but the restore stopped before it saved what '
                f"the database held before: that stays in database {self.aside} (restore_db.sh cannot bring it "
                "back from there; dump it, or drop it once you no longer need it)"
                if self.aside
                else f'database "{self.live}" holds the restored backup'
            )
        elif self.state == SAVING:
            self.log.error(
                f'database "{self.live}" holds the restored backup; what it held before was not saved as a safety '
                f"backup and stays in database {self.aside} (drop it once you no longer need it)"
            )

    def start_analyze(self, database, beside):
        self.analyzing = self.engine.start_analyze(database, beside)

    def finish_analyze(self):
        self.engine.finish_analyze(self.analyzing)
        self.analyzing = None

    def engine_stop(self):
        try:
            self.engine.stop_own_statements()
        except (Failure, CommandFailed) as failed:
            self.log.warn(f"could not stop this run's statements on the server: {failed}")

    def drop_work(self):
        try:
            self.engine.drop_database(self.work)
        except (Failure, CommandFailed) as failed:
            self.log.warn(f"could not drop the work database {self.work}: {failed}")

    def undo_swap(self):
        """Stopped during the swap: the server says which side of it we are on."""
        try:
            side = self.engine.swap_state(self.live, self.work, self.aside, self.manifest)
        except (Failure, CommandFailed):
            side = "unknown"
        if side == "before":
            if self.had_live:
                self.reopen()
                try:
                    kept = self.engine.drop_if_empty(self.aside)
                except (Failure, CommandFailed) as failed:
                    kept = str(failed)
                if kept:
                    self.log.warn(f"kept {self.aside}, made for the swap: {kept}")
            self.drop_work()
            self.log.error(f'database "{self.live}" is unchanged: the restore stopped before the swap')
        elif side == "after":
            self.reopen()
            aside = f"; what it held before is in database {self.aside}" if self.aside else ""
            self.log.error(
                f'the restore stopped just after the swap: database "{self.live}" holds the restored backup{aside}'
            )
        else:
            names = ", ".join(f'"{n}"' for n in (self.live, self.work, self.aside) if n)
            self.log.error(
                "the restore stopped during the swap and the server could not be asked which side of it database "
                f'"{self.live}" is on: nothing was dropped; databases {names} are as the server left them (check '
                "them before anything else)"
            )

    def reopen(self):
        """The live database takes connections again (the engine says so when it cannot)."""
        try:
            self.engine.reopen(self.live)
        except (Failure, CommandFailed) as failed:
            self.log.error(f'database "{self.live}" may still refuse connections ({failed}); open it as its owner')

    # --- the states, in order -------------------------------------------------------------

    def run(self, path, options, checked):
        name = os.path.basename(path)
        context = self.context
        engine = self.engine
        self.manifest = checked.manifest
        context.on_exit(self.undo)
        self.enter(CHECKING, f'database "{self.live}" is unchanged; nothing is created until the checks pass')
        started = context.clock()
        # Everything that can be checked is checked before anything is created:
        # the server, the rights the swap needs, sessions or locks that would
        # block it, the room it needs, and the media archive.
        engine.check_server()
        self.had_live = engine.database_exists(self.live)
        engine.restore_precheck(self.had_live)
        self.warn_leftover_aside()
        self.check_room(path)
        if options.with_media:
            self.unpack_media(path)
        staged = verify.stage(context, engine, path)

        self.enter(LOADING, f'loading {name} into {self.work}; database "{self.live}" serves on, unchanged')
        suffix = f'; database "{self.live}" is unchanged'
        after_load = None if engine.analyzes_live else (lambda: self.start_analyze(self.work, "the row count"))
        summary = verify.load_checked(
            context, engine, path, checked.manifest, self.work, suffix, staged, after_load=after_load
        )
        if summary is None:
            raise Failure(
                Exit.RESTORE_FAILED,
                f'{name} did not load into what its manifest describes; database "{self.live}" is unchanged',
            )
        if staged:
            _remove(staged)
        engine.check_movable(self.work)
        if self.had_live:
            engine.apply_properties(engine.properties(self.live), self.work)
        if not engine.analyzes_live:
            self.finish_analyze()

        self.enter(SWAPPING, f'database "{self.live}" is set aside and {self.work} takes its name, in one step')
        if self.had_live:
            self.aside = aside_prefix(context.project.name) + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            engine.swap(self.live, self.work, self.aside, checked.manifest)
        else:
            engine.put_in_place(self.work, self.live, checked.manifest)

        self.enter(SWAPPED, f'database "{self.live}" holds the restored backup')
        took = context.clock() - started
        self.log.info(
            f'restored {name} into database "{self.live}" in {human_duration(took)} ({format_seconds(took)} s)'
        )
        if engine.analyzes_live:
            self.start_analyze(self.live, "the safety copy" if self.had_live else "the rest of the restore")
        media_failure = None
        if self.media_new:
            try:
                self.swap_media()
            except (OSError, Failure) as failed:
                media_failure = failed
                self.context.keep(self.media_new)
                self.log.error(
                    f"the media files could not be swapped in ({failed}); MEDIA_ROOT {self.database.media_dir} is "
                    f"as it was, the unpacked files are in {self.media_new}"
                )
        elif os.path.isfile(os.path.join(os.path.dirname(path), sets.media_name_of(name))):
            self.log.info(f"the set also holds media files; restore_db.sh {name} --with-media restores them")
        if self.had_live:
            try:
                self.save_aside()
            except (Failure, CommandFailed, OSError) as failed:
                # The database is restored; what failed is its safety copy (the undo names the set-aside
                # database): not an exit code that says the live database is unchanged.
                message = failed.message if isinstance(failed, Failure) else f"the safety backup failed: {failed}"
                raise Failure(Exit.PARTIAL, message) from None
        # Safety backups are pruned only once the restore has succeeded.
        backup.prune(context, self.database, ("safety",), protected=(name,), offsite=self.offsite)
        if engine.analyzes_live:
            self.finish_analyze()
        self.enter(DONE, f'database "{self.live}" holds {name}')
        if media_failure is not None:
            taken = f" (what it held before is in {self.safety})" if self.safety else ""
            raise Failure(
                Exit.PARTIAL,
                f'database "{self.live}" holds the restored backup{taken}, but its media files could not be '
                f"swapped in: {media_failure}; MEDIA_ROOT {self.database.media_dir} is as it was, the unpacked "
                f"files are in {self.media_new}",
            )

    def warn_leftover_aside(self):
        """Databases set aside by earlier restores whose safety backup could not be written."""
        prefix = aside_prefix(self.context.project.name)
        try:
            names = self.engine.list_databases(prefix)
        except (Failure, CommandFailed):
            return
        # The prefix of project shop also starts shop_x's: only whole stamps count.
        for name in (n for n in names if re.fullmatch(r"\d{8}T\d{6}", n[len(prefix) :])):
            self.log.warn(
                f'database {name}, set aside by an earlier restore, is still there: it holds what "{self.live}" '
                "held before that restore"
            )

    def check_room(self, path):
        """Free space before anything is staged or loaded: a parallel load's
        uncompressed copy in db_backups/, and the database server's own disk
        for the copy it loads beside the live database (when the server is this
        machine and says where its data lives)."""
        directory = self.context.project.backups_dir
        if self.engine.needs_staging(path):
            need = max(1024, os.stat(path).st_size * 3 // 1024)
            avail = sets.free_kb(directory)
            if avail < need:
                raise Failure(
                    Exit.NO_SPACE,
                    f"only {avail // 1024} MiB free in {directory}; decompressing {os.path.basename(path)} for a "
                    f"parallel restore needs about {need // 1024} MiB (three times the set); free some space or "
                    "restore with --jobs 1; nothing was changed",
                )
        needed, free, where = self.engine.room_for_load(self.live if self.had_live else None)
        if needed and free is not None and free < needed:
            raise Failure(
                Exit.NO_SPACE,
                f"only {free // (1 << 20)} MiB free in {where}, where the database server keeps its data; loading "
                f'the backup beside database "{self.live}" needs about {needed // (1 << 20)} MiB (its size now); '
                "nothing was changed",
            )

    # --- media -----------------------------------------------------------------------------

    def unpack_media(self, path):
        """The set's media archive unpacked beside MEDIA_ROOT before anything is
        swapped: a missing archive or a full disk stops the restore while the
        database and the files are still as they were."""
        media_dir = self.database.media_dir
        archive = os.path.join(os.path.dirname(path), sets.media_name_of(os.path.basename(path)))
        if not os.path.isfile(archive):
            raise Failure(
                Exit.BAD_BACKUP,
                f"{os.path.basename(path)} has no media archive ({os.path.basename(archive)}); nothing was changed",
            )
        if not media_dir:
            raise Failure(Exit.CONFIG, "--with-media needs db_backup_media_dir; nothing was changed")
        new = f"{media_dir}.restoring.{os.getpid()}"
        try:
            os.makedirs(new)
        except OSError as exc:
            code = Exit.NO_SPACE if exc.errno == errno.ENOSPC else Exit.CONFIG
            raise Failure(
                code, f"cannot make {new} to unpack the media files into ({exc.strerror}); nothing was changed"
            ) from None
        self.media_new = new
        self.context.cleanup_on_exit(new)
        self.log.info(f"unpacking {os.path.basename(archive)} next to {media_dir}")
        try:
            self.context.runner.pipeline(
                [common.decompress_stage(archive), Stage(["tar", "-C", self.media_new, "-xf", "-"], name="tar")],
                timeout=UNPACK_TIMEOUT,
            )
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED,
                f"unpacking {os.path.basename(archive)} failed ({failed.reason()})"
                f'{common.no_space_hint(os.path.dirname(media_dir))}; {media_dir} and database "{self.live}" '
                "are unchanged",
            ) from None

    def swap_media(self):
        """Two renames in one directory: the old tree aside, the new one in."""
        media_dir = self.database.media_dir
        self.media_old = f"{media_dir}.before-restore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        if os.path.lexists(media_dir):
            os.rename(media_dir, self.media_old)
        else:
            self.media_old = ""
        try:
            os.rename(self.media_new, media_dir)
        except OSError:
            if self.media_old:
                os.rename(self.media_old, media_dir)  # MEDIA_ROOT as it was
            raise
        self.media_new = ""
        try:
            fd = os.open(os.path.dirname(media_dir) or "/", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.log.warn(f"could not flush the directory of {media_dir} ({exc.strerror}); the swap is done")
        kept = f"; the previous files are in {self.media_old}" if self.media_old else ""
        self.log.info(f"media restored into {media_dir}{kept}")

    # --- the safety copy ---------------------------------------------------------------------

    def save_aside(self):
        """The old database becomes a safety backup (a file like any other set,
        restorable by restore_db.sh), then goes. If it cannot be saved, it
        stays, and the undo says where."""
        context = self.context
        self.enter(
            SAVING, f'saving what database "{self.live}" held before the swap (now {self.aside}) as a safety backup'
        )
        sets.check_free_space(context.project.backups_dir, context.project.name, self.database.min_free_mb, False)
        self.engine.allow_connections(self.aside)
        self.safety = backup.take(context, self.database, self.offsite, self.engine, self.aside, safety=True)
        self.state = DONE
        try:
            self.engine.drop_database(self.aside)
        except (Failure, CommandFailed) as failed:
            self.log.warn(f"could not drop {self.aside} after saving it as {self.safety}: {failed}; drop it by hand")
        offsite = (
            " (the next backup_db.sh or push_db_backups.sh sends it off-site)" if self.offsite.repositories else ""
        )
        self.log.info(
            f'what database "{self.live}" held before the restore is in {self.safety} '
            f"(restore_db.sh {self.safety} brings it back){offsite}"
        )


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(context, args):
    options, database, offsite = common.parse_and_load(
        context,
        args,
        USAGE,
        flags=("--yes", "--with-media"),
        options={
            "--jobs": "jobs",
            "--lock-wait": "lock_wait",
            "--lock-timeout": "lock_timeout",
            "--from": "source",
            "--arrived-before": "before",
            "--to-time": "to_time",
        },
        positional=1,
    )
    if options.to_time is not None and (options.positional or options.source is not None or options.with_media):
        raise Failure(
            Exit.USAGE,
            "--to-time restores the database as it was at that moment: it takes no BACKUP, --from or --with-media",
        )
    want = options.positional[0] if options.positional else "latest"
    before = None
    if options.source is not None:
        offsite_commands.require_repositories(offsite)
        before = offsite_commands.fetch_request(offsite, options.source, want, options.before)
    elif options.before is not None:
        raise Failure(
            Exit.USAGE, "--arrived-before chooses among an off-site repository's sets: give --from REPOSITORY too"
        )
    wait = common.lock_wait(options.lock_wait, database.lock_wait)
    database = verify.with_lock_timeout(database, common.lock_timeout(options.lock_timeout, database.db_lock_timeout))
    if options.jobs is not None:
        if not common.is_whole(options.jobs) or int(options.jobs) < 1:
            raise Failure(Exit.USAGE, f"--jobs takes a whole number of at least 1, got '{options.jobs}'")
        import dataclasses

        database = dataclasses.replace(database, restore_jobs=int(options.jobs))
    context.start_run(database.healthcheck_url("restore_db"))
    engine = common.engine_for(context, database)
    if options.to_time is not None:
        _restore_to_time(context, options, database, offsite, engine, wait)
        return
    if options.source is None:
        path = sets.resolve(context.project.backups_dir, want)
        name = os.path.basename(path)
        checked = common.check_backup(context, path, database)
        _announce(
            engine,
            f"{name}\n  taken {checked.manifest.get('created', '')}, {checked.manifest.rows} rows, "
            f"{common.iec(os.stat(path).st_size)}B",
        )
        _confirm(options, engine)
        common.lock(context, wait)
        backup.remove_stale_partials(context)
        # Another run may have pruned or replaced the set while this one waited.
        if not os.path.isfile(path):
            raise Failure(Exit.BAD_BACKUP, f"{name} is gone (pruned while waiting for the lock?); nothing was changed")
        checked = common.check_backup_again(context, path, database, checked)
    else:
        repositories = offsite_commands.offsite_for(context, database, offsite)
        repositories.require_restic()
        if before is not None:
            which = f"the newest set that reached it before {options.before}"
        else:
            which = "its newest set" if want == "latest" else want
        _announce(engine, f"{which} from off-site repository {options.source}, fetched and checked first")
        _confirm(options, engine)
        # One lock from the fetch to the end: a backup's retention cannot remove the
        # fetched set before it is restored.
        common.lock(context, wait)
        backup.remove_stale_partials(context)
        path = repositories.fetch(options.source, want, before=before)
        checked = common.check_backup(context, path, database)
    Restore(context, database, offsite, engine).run(path, options, checked)


def _restore_to_time(context, options, database, offsite, engine, wait):
    """The database as it was at --to-time: the root side (pitr.py) recovers
    the cluster aside; its database is dumped into a set of this run's own
    (a hidden directory in db_backups/, removed at the end), which goes live
    as any set does."""
    moment = pitr.utc_text(pitr.parse_time(options.to_time))
    channel = pitr.Channel.from_environment()
    if channel is None:
        raise Failure(
            Exit.CONFIG,
            "restore_db.sh --to-time must be started as root (sudo "
            f"{os.path.join(context.engine_dir, 'bin', 'restore_db.sh')} --to-time ...): the point-in-time "
            "repository and its passphrase are root's; nothing was changed",
        )
    live = engine.connection.name
    where = "pgBackRest's repository" if database.engine == "postgresql" else "a base and the binary logs"
    _announce(engine, f"what it held at {moment} (UTC), recovered aside from {where}")
    _confirm(options, engine)
    common.lock(context, wait)
    backup.remove_stale_partials(context)
    server = "cluster" if database.engine == "postgresql" else "server"
    context.log.info(f"restore to a time: {options.to_time!r} is {moment}; the {server} is recovered aside first")
    ready = channel.ask(context.log)
    try:
        if ready.get("target") != moment:
            raise Failure(
                Exit.INTERNAL,
                f'the {server} was recovered to {ready.get("target")}, not to {moment}; database "{live}" is unchanged',
            )
        staging = os.path.join(context.project.backups_dir, f".pitr-{os.getpid()}.partial")
        os.mkdir(staging, 0o700)
        context.cleanup_on_exit(staging)
        try:
            scratch = engine.elsewhere(str(ready.get("socket") or ready["socket_dir"]), str(ready["port"]))
            scratch.check_connection()
            name = backup.take(context, database, offsite, scratch, live, directory=staging, kind="pitr")
        except Failure as failure:
            raise Failure(
                Exit.RESTORE_FAILED,
                f'taking database "{live}" from the recovered {server} failed: {failure.message}; '
                f'database "{live}" is unchanged',
            ) from None
    finally:
        # Once its database is taken (or not), the scratch cluster goes, before the swap: the
        # set holds what the restore needs, and the next restore to a time may have the room.
        channel.finish(context.log)
    path = os.path.join(staging, name)
    checked = common.check_backup(context, path, database)
    Restore(context, database, offsite, engine).run(path, options, checked)
    context.log.info(f'database "{live}" holds what it held at {moment}')


def _announce(engine, what):
    """What the restore replaces, and with WHAT, on stderr before the question."""
    connection = engine.connection
    sys.stderr.write(
        f'\nThis replaces database "{connection.name}" (user "{connection.user}", host '
        f"{connection.host or 'local socket'}) with\n  {what}.\n"
        "Everything written to the database since then is set aside (a safety backup is taken).\n\n"
    )


def _confirm(options, engine):
    """The database's name, typed (unless --yes)."""
    if options.yes:
        return
    sys.stderr.write("Type the database name to go on: ")
    sys.stderr.flush()
    answer = sys.stdin.readline().rstrip("\n")
    if answer != engine.connection.name:
        raise Failure(Exit.NOT_CONFIRMED, "confirmation did not match the database name; nothing was changed")
