"""push_db_backups.sh, fetch_db_backup.sh and check_offsite.sh: the off-site
repositories by hand (backup_db.sh pushes after each backup; recover.yml
fetches; the schedule role runs check_offsite weekly)."""

import datetime
import sys

from ..errors import Exit, Failure
from ..offsite import Offsite
from . import common

PUSH_USAGE = """Usage: push_db_backups.sh [--lock-wait SECONDS] [--quiet]
Copy every backup set in db_backups/ newer than an off-site repository's newest into it,
oldest first. Exits 14 when one could not be copied."""

FETCH_USAGE = """Usage: fetch_db_backup.sh [SET|latest | --arrived-before TIME] [--from REPOSITORY]
                          [--lock-wait SECONDS] [--quiet]
Copy a backup set (default: the newest) from an off-site repository (default: the first
one configured) into db_backups/, checked against its sha256 and manifest first; print
its name. restore_db.sh NAME then restores it. Only a set that the backup host's record
of arrivals vouches for is taken. --arrived-before takes the newest set that reached the
backup host before TIME (YYYY-MM-DD HH:MM[:SS], UTC unless it ends in an offset): what
the server had pushed before a break-in, whatever was pushed since."""

CHECK_USAGE = """Usage: check_offsite.sh [--read-data-subset N%|n/t] [--quiet]
Check every off-site repository with restic check, reading back part of its data
(db_backup_offsite_check_subset). Exits 14 when one fails."""


def offsite_for(context, database, offsite):
    """The off-site repositories, for this run: its runner, log and private
    directory, the engine a fetched set must belong to, its clean-up."""
    context.open()
    return Offsite(
        context.runner,
        context.log,
        context.project,
        offsite,
        context.run_dir,
        engine=database.engine,
        on_exit=context.cleanup_on_exit,
    )


def require_repositories(offsite):
    if not offsite.repositories:
        raise Failure(Exit.CONFIG, "no off-site repository is configured (db_backup_offsite_repositories)")


def _start(context, args, usage, **parsing):
    """ARGS parsed as USAGE says (--quiet applied at once), and the settings,
    refused without an off-site repository."""
    options, database, offsite = common.parse_and_load(context, args, usage, **parsing)
    require_repositories(offsite)
    return options, database, offsite


def push(context, args):
    options, database, offsite = _start(context, args, PUSH_USAGE, options={"--lock-wait": "lock_wait"})
    wait = common.lock_wait(options.lock_wait, database.lock_wait)
    context.start_run()
    common.lock(context, wait, offsite=True)
    offsite_for(context, database, offsite).push_all()


def fetch(context, args):
    options, database, offsite = _start(
        context,
        args,
        FETCH_USAGE,
        options={"--from": "source", "--lock-wait": "lock_wait", "--arrived-before": "before"},
        positional=1,
    )
    source = options.source if options.source is not None else offsite.repositories[0].name
    want = options.positional[0] if options.positional else "latest"
    before = fetch_request(offsite, source, want, options.before)
    wait = common.lock_wait(options.lock_wait, database.lock_wait)
    context.start_run()
    repositories = offsite_for(context, database, offsite)
    repositories.require_restic()
    common.lock(context, wait)
    from .backup import remove_stale_partials

    remove_stale_partials(context)
    path = repositories.fetch(source, want, before=before)
    print(path.rsplit("/", 1)[-1])
    sys.stdout.flush()


def fetch_request(offsite, source, want, before):
    """What a fetch (or restore_db.sh --from) asks for, checked before anything
    runs: SOURCE must be a configured repository, and --arrived-before BEFORE
    goes with latest only. Returns BEFORE in seconds since the epoch, or None."""
    if offsite.repository(source) is None:
        configured = " ".join(r.name for r in offsite.repositories)
        raise Failure(Exit.USAGE, f"no off-site repository named '{source}'; configured: {configured}")
    if before is None:
        return None
    if want != "latest":
        raise Failure(Exit.USAGE, f"name a set ({want}) or give --arrived-before, not both")
    return arrival_time(before)


def arrival_time(text):
    """--arrived-before's TIME in seconds since the epoch: ISO 8601 (a space or a
    T between date and time), UTC unless it carries an offset."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Failure(
            Exit.USAGE, f"--arrived-before {text!r} is not a time: write it as YYYY-MM-DD HH:MM[:SS] (UTC)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def check(context, args):
    options, database, offsite = _start(context, args, CHECK_USAGE, options={"--read-data-subset": "subset"})
    context.start_run(database.healthcheck_url("check_offsite"))
    repositories = offsite_for(context, database, offsite)
    repositories.require_restic()
    # restic check locks the repository exclusively: never beside a push.
    common.lock(context, database.lock_wait, offsite=True)
    repositories.check_all(options.subset)
