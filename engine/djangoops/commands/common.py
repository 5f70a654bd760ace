"""What several database commands share: their values, the engine with its
connection, compression, the checks a set passes before anything reads it, the
locks, and a few formats for the log."""

import os
import re

from .. import config, credentials, offsite, sets
from ..engines.mysql import MySQL
from ..engines.postgresql import PostgreSQL
from ..errors import Exit, Failure
from ..lock import Lock
from ..runner import CAPTURE, DEVNULL, CommandFailed, Stage
from . import parse

ENGINES = {"postgresql": PostgreSQL, "mysql": MySQL}
LOCK_FILE = ".lock"  # held by whatever changes db_backups/
OFFSITE_LOCK_FILE = ".offsite.lock"  # held by whatever changes an off-site repository
TEST_TIMEOUT = 3600  # seconds for an integrity test of one file: bounded, never endless
iec = offsite.iec  # sizes as numfmt writes them, for the commands' messages


def parse_and_load(context, args, usage, **parsing):
    """ARGS parsed as commands.parse() does (--quiet applied at once), then the
    settings: (options, database values, off-site values)."""
    options = parse(args, usage, **parsing)
    if options.quiet:
        context.quiet()
    database, offsite = load_settings(context)
    return options, database, offsite


def load_settings(context):
    """The database and off-site values (database.json, offsite.json)."""
    database = config.load_database(os.path.join(context.config_dir, "database.json"))
    offsite = config.load_offsite(os.path.join(context.config_dir, "offsite.json"))
    return database, offsite


def engine_for(context, database):
    """The engine of DATABASE's server, connected as the values say (the
    credentials read from Django's settings when they come from there)."""
    engine_class = ENGINES[database.engine]
    # A backup's figures (size, rows, room left) name the engine that wrote them.
    context.extra_metric_labels["engine"] = database.engine
    context.open()
    connection = credentials.load(database, engine_class, context.runner, context.log, context.run_dir)
    engine = engine_class(context.runner, connection, database, context.log, context.run_dir, script=context.script)
    engine.check_tools()
    return engine


def backups_dir(context):
    return context.project.backups_dir


def lock(context, wait, offsite=False):
    """Take the backups lock (or the off-site one), waiting WAIT seconds at most."""
    path = os.path.join(backups_dir(context), OFFSITE_LOCK_FILE if offsite else LOCK_FILE)
    held = Lock(path, wait, script=context.script)
    held.acquire()
    return held


def is_whole(value):
    """VALUE is a whole number written in ASCII digits (str.isdigit() would take "²")."""
    return value is not None and re.fullmatch(r"[0-9]+", value) is not None


def lock_wait(value, default):
    """--lock-wait: whole seconds."""
    if value is None:
        return default
    if not is_whole(value):
        raise Failure(Exit.USAGE, f"the lock wait takes whole seconds, got '{value}'")
    return int(value)


def lock_timeout(value, default):
    """--lock-timeout: whole seconds, at least 1."""
    if value is None:
        value = str(default)
    if not is_whole(value) or int(value) < 1:
        raise Failure(Exit.USAGE, f"--lock-timeout takes whole seconds (at least 1), got '{value}'")
    return int(value)


# --- compression -----------------------------------------------------------------------


def compress_stage(database, offsite):
    """The compressor of a new set. --rsyncable with off-site repositories, so
    that restic deduplicates the nightly sets (measured: a repository grew 33
    MiB a night instead of 83 for a 168 MiB set); without them it only costs
    CPU."""
    if database.compression == "gzip":
        return Stage(["gzip", "-c"], name="gzip")
    argv = ["zstd", "-q", "-c", f"-{database.zstd_level}", f"-T{database.threads}"]
    if offsite.repositories:
        argv.append("--rsyncable")
    return Stage(argv, name="zstd")


def decompress_stage(path, name=None, ok_codes=(0,)):
    """A stage writing PATH decompressed to stdout; NAME's extension (default
    PATH's) says which tool, as PATH may be a partial."""
    kind = name or path
    if kind.endswith(".zst"):
        return Stage(["zstd", "-q", "-d", "-c", "--", path], name="zstd", ok_codes=ok_codes)
    if kind.endswith(".gz"):
        return Stage(["gzip", "-d", "-c", "--", path], name="gzip", ok_codes=ok_codes)
    raise Failure(Exit.BAD_BACKUP, f"unknown compression: {path}")


def test_argv(path, name=None):
    kind = name or path
    if kind.endswith(".zst"):
        return ["zstd", "-q", "-t", "--", path]
    if kind.endswith(".gz"):
        return ["gzip", "-t", "--", path]
    return None


def test_compression(runner, path, name=None):
    """Whether PATH decompresses whole (zstd -t / gzip -t)."""
    argv = test_argv(path, name)
    if argv is None:
        return False
    try:
        runner.run(argv, stdout=DEVNULL, timeout=TEST_TIMEOUT)
    except CommandFailed:
        return False
    return True


def start_test(runner, path, name=None):
    """The integrity test of PATH started in the background (it reads the file
    on one core while the checksum takes the other); finish_test() waits."""
    return runner.start(test_argv(path, name))


def finish_test(session):
    try:
        session.close(timeout=TEST_TIMEOUT)
    except CommandFailed:
        return False
    return True


def check_backup(context, path, database):
    """The set at PATH is whole and as written, before anything reads it."""
    checked = sets.check_set(
        path,
        context.project.name,
        database.engine,
        test_compression=lambda file: test_compression(context.runner, file),
    )
    context.log.info(f"checked {os.path.basename(path)}: sha256 and compression are good")
    return checked


def check_backup_again(context, path, database, checked):
    if checked is not None and sets.file_signature(path) == checked.signature:
        return checked
    return check_backup(context, path, database)


def media_file_count(runner, archive, name=None, code=Exit.BAD_BACKUP):
    """The files (not directories) a media archive holds; Failure(CODE) when it
    cannot be read as one."""
    try:
        result = runner.pipeline(
            [decompress_stage(archive, name), Stage(["tar", "-tf", "-"], name="tar")], stdout=CAPTURE
        )
    except CommandFailed as failed:
        raise Failure(
            code, f"the media archive {os.path.basename(name or archive)} cannot be listed ({failed.reason()})"
        ) from None
    listing = result[-1].stdout.decode("utf-8", "surrogateescape").splitlines()
    return sum(1 for line in listing if line and not line.endswith("/"))


# --- formats -------------------------------------------------------------------------------


def mount_point(path):
    path = os.path.realpath(path)
    device = os.stat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != device:
            break
        path = parent
    return path


def no_space_hint(directory):
    """ " (no space left on MOUNT)" when DIRECTORY's file system has under 1 MiB
    free: the cause to name when a write failed."""
    try:
        if sets.free_kb(directory) < 1024:
            return f" (no space left on {mount_point(directory)})"
    except OSError:
        pass
    return ""


def tail(text, lines):
    """The last LINES non-empty lines of TEXT, joined by spaces."""
    return " ".join([line for line in text.splitlines() if line.strip()][-lines:])
