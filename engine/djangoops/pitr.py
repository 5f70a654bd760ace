"""restore_db.sh --to-time: the database as it was at a moment, from pgBackRest.

The cluster is recovered to that moment aside, into a scratch cluster of its own
(its own directory, port and socket, archiving off: nothing of it reaches the
live cluster or the repository), the project's database is dumped from it and
goes live through the restore's load-aside-and-swap path, and the scratch
cluster is stopped and removed.

Two processes, because two owners. pgBackRest's repository and passphrase are
root's and postgres's, and the recovered cluster runs as postgres: that part
(supervise, Scratch) runs as root and reads only root's files. Everything that
touches the project's files (the lock, the log, the dump, the restore) runs in
a child that has become the project user, as every command does. They speak
over two pipes (Channel): the child asks for the scratch cluster once it holds
the lock and the restore is confirmed; the root side answers with progress
lines for the child's log, then where the recovered cluster listens, or why it
could not be recovered. Nothing the child sends steers the root side: the
moment and every path come from root's command line and files.
"""

import datetime
import errno
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import sys
import time

from . import config
from .errors import Exit, Failure
from .offsite import iec
from .runner import CAPTURE, CommandFailed, Interrupted, Runner

OPTION = "--to-time"
CHANNEL = "DJANGOOPS_PITR_CHANNEL"  # "READ_FD,WRITE_FD" in the child's environment
RESTORE_TIMEOUT = 12 * 3600  # pgBackRest copying the backup and its WAL
RECOVERY_TIMEOUT = 12 * 3600  # the scratch cluster replaying WAL up to the moment
STOP_TIMEOUT = 120
QUERY_TIMEOUT = 60
# What the child asks the root side, one line each.
ASK_SCRATCH = '{"ask": "scratch"}'
ASK_REMOVE = '{"ask": "remove"}'
ASK_BACKUP = '{"ask": "backup"}'
ASK_STATUS = '{"ask": "status"}'
ASK_VERIFY = '{"ask": "verify"}'
ASK_ARCHIVE = '{"ask": "archive"}'
VERIFY_TIMEOUT = 24 * 3600  # pgBackRest reading back the whole repository
BACKUP_TYPES = ("auto", "full", "diff", "incr")
BACKUP_TIMEOUT = 24 * 3600
# A WAL segment as pgBackRest's archive names it: the segment, then its SHA-1 (and extension).
WAL_FILE = re.compile(r"[0-9A-F]{24}-[0-9a-f]{40}")
WAL_ROOM = 1 << 30  # bytes: PostgreSQL's default max_wal_size, for the WAL a recovery replays
POLL = 0.5  # seconds between two questions to a cluster still recovering
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[ T](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"\s*(?P<zone>Z|UTC|[+-]\d{2}(?::?\d{2})?)?\Z"
)


def parse_time(text, now=None):
    """TEXT ('2026-12-06 17:59:30', seconds and fractions optional, 'T' for the
    space allowed, then optionally Z, UTC or an offset such as +01:00) as an
    aware datetime in UTC. Without a zone it is the server's local time, as
    `date` shows it. Failure(USAGE) for anything else, or for a moment not yet
    come (NOW: the current time)."""
    found = _TIME.fullmatch(text.strip())
    if found is None:
        raise Failure(
            Exit.USAGE,
            f"{OPTION} takes a date and time such as '2026-12-06 17:59:30' (the server's local time) or "
            f"'2026-12-06 17:59:30+00:00', got '{text}'",
        )
    clock = found.group("time")
    if clock.count(":") == 1:
        clock += ":00"
    zone = found.group("zone") or ""
    if zone in ("Z", "UTC"):
        zone = "+00:00"
    elif zone and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:] or '00'}"
    try:
        moment = datetime.datetime.fromisoformat(f"{found.group('date')}T{clock}{zone}")
    except ValueError as exc:
        raise Failure(Exit.USAGE, f"{OPTION} '{text}': {exc}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the server's local time zone
    moment = moment.astimezone(datetime.UTC)
    now = time.time() if now is None else now
    if moment.timestamp() > now:
        raise Failure(Exit.USAGE, f"{OPTION} '{text}' is in the future ({utc_text(moment)}); nothing was changed")
    return moment


def utc_text(moment):
    """MOMENT as PostgreSQL and pgBackRest read a time: '2026-12-06 17:59:30.250000+00'."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def requested_time(args):
    """The value given to --to-time in ARGS, None without the option (or
    without a value: the command's own parsing says so). Given twice, it is
    refused: the two sides must not read two moments."""
    values = [args[index + 1] for index, arg in enumerate(args[:-1]) if arg == OPTION]
    if len(values) > 1:
        raise Failure(Exit.USAGE, f"{OPTION} is given {len(values)} times; give the moment once")
    return values[0] if values else None


# --- the child's side ----------------------------------------------------------------------


class Channel:
    """The project user's end of the pipes to the root side."""

    def __init__(self, read_fd, write_fd):
        self.reader = os.fdopen(read_fd, "r", encoding="utf-8", closefd=True)
        self.write_fd = write_fd

    @classmethod
    def for_command(cls, database, command, why, engines=("postgresql", "mysql")):
        """The channel of COMMAND (e.g. "pitr_check_db.sh"), a command that only
        runs with its root side, on ENGINES: Failure(CONFIG) for another
        engine, or when it was not started as root (WHY: what root has that the
        command needs)."""
        if database.engine not in engines:
            needs = (
                "PostgreSQL with db_backup_pitr (pgBackRest)"
                if engines == ("postgresql",)
                else ("MariaDB with db_backup_pitr" if engines == ("mysql",) else "db_backup_pitr")
            )
            raise Failure(
                Exit.CONFIG,
                f"{command} needs {needs}; this project's database is {database.engine}",
            )
        channel = cls.from_environment()
        if channel is None:
            raise Failure(Exit.CONFIG, f"{command} must be started as root: {why}")
        return channel

    @classmethod
    def from_environment(cls):
        """The channel the root side opened, None when the command was not
        started by it (not as root)."""
        value = os.environ.pop(CHANNEL, "")
        found = re.fullmatch(r"(\d+),(\d+)", value)
        if found is None:
            return None
        return cls(int(found.group(1)), int(found.group(2)))

    def answers(self, log):
        """The root side's answers, as they come; its progress lines go into LOG."""
        for line in self.reader:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "log" in message:
                log.info(str(message["log"]))
            elif "warn" in message:
                log.warn(str(message["warn"]))
            else:
                yield message

    def request(self, ask, answer, log, what):
        """Send ASK; return the root side's ANSWER (a dict), raising its failure
        as the Failure it names. WHAT: what the root side was to do, for the
        message when it ends without an answer."""
        os.write(self.write_fd, (ask + "\n").encode())
        for message in self.answers(log):
            if answer in message:
                return message[answer]
            if "failed" in message:
                raise Failure(Exit(int(message["failed"]["code"])), str(message["failed"]["message"]))
        raise Failure(Exit.INTERNAL, f"the root side ended without {what}; nothing was changed")

    def ask(self, log):
        """The scratch cluster, recovered: {"socket_dir", "port", "target",
        "recovered_to", "seconds"}. The root side's progress goes into LOG as it
        comes; its failure is raised as the Failure it names."""
        return self.request(ASK_SCRATCH, "ready", log, "recovering the cluster")

    def finish(self, log):
        """The scratch cluster is no longer needed: the root side stops and
        removes it, and this waits for that (while this side still holds the
        project's lock, which the next restore to a time waits for)."""
        try:
            os.write(self.write_fd, (ASK_REMOVE + "\n").encode())
        except OSError:
            return
        for message in self.answers(log):
            if "removed" in message:
                return


# --- the root side ---------------------------------------------------------------------------


def unchanged(text):
    return f"{text}; the live database is unchanged"


class Scratch:
    """The cluster recovered aside, run by postgres, in SETTINGS.scratch_dir
    (TOP), a directory of root's made for it (MARKER says so) below a chain of
    root's directories:

        TOP/                      root, 0755
            .djangoops-pitr       root: TOP is this command's, it may be removed
            postgresql.conf       root:postgres 0640, with pg_hba.conf and pg_ident.conf:
                                  the cluster's whole configuration (config_file)
            data/                 postgres, 0700: the data directory, and its log
            run/                  postgres:GROUP, 0750: the socket, for the project user

    Root writes only in TOP: nothing postgres can write is a path root
    follows (a link planted there could lead root's writes anywhere)."""

    MARKER = ".djangoops-pitr"

    def __init__(self, runner, settings, group_id, postgres, say):
        self.runner = runner
        self.settings = settings
        self.group_id = group_id
        self.postgres = postgres  # (uid, gid)
        self.say = say  # say(text): a progress line for the child's log
        self.top = settings.scratch_dir
        self.data = os.path.join(self.top, "data")
        self.socket_dir = os.path.join(self.top, "run")
        self.config = os.path.join(self.top, "postgresql.conf")
        self.logfile = os.path.join(self.data, "djangoops-scratch.log")
        self.root_uid = 0  # who must own TOP and its parents (the tests' own user there)
        self.clock = time.monotonic
        self.sleep = time.sleep

    def _run(self, argv, timeout, ok_codes=(0,)):
        return run_quiet(self.runner, argv, timeout, ok_codes)

    def as_postgres(self, *argv):
        return as_postgres(*argv)

    def pg_ctl(self, *args):
        return self.as_postgres(os.path.join(self.settings.pg_bin, "pg_ctl"), "-D", self.data, *args)

    def server_runs(self):
        """pg_ctl status: 0 a server runs on the data directory, 3 none, 4 no
        data directory. Unknown counts as running: it is then stopped."""
        try:
            return self._run(self.pg_ctl("status"), QUERY_TIMEOUT, ok_codes=(0, 3, 4)).returncode == 0
        except CommandFailed:
            return True

    def stop(self):
        """Stop the scratch server if one runs: fast, then immediate (nothing
        in it is kept, so nothing is lost)."""
        if not os.path.isdir(self.data) or not self.server_runs():
            return
        for mode in ("fast", "immediate"):
            try:
                self._run(self.pg_ctl("stop", "-m", mode, "-w", "-t", str(STOP_TIMEOUT)), STOP_TIMEOUT + 10)
                return
            except CommandFailed as failed:
                last = failed
        raise Failure(Exit.INTERNAL, f"could not stop the scratch cluster in {self.data}: {last.reason()}")

    def check_parents(self):
        """Every directory above TOP is root's, and no one else can rename
        what is in it (not writable by others, or sticky): TOP's path leads
        where it says."""
        path = os.path.dirname(os.path.normpath(self.top))
        while True:
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                info = None
            if info is not None:
                loose = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != self.root_uid or loose:
                    raise Failure(
                        Exit.CONFIG,
                        unchanged(
                            f"{path}, above db_backup_pitr_scratch_dir {self.top}, is not a directory of root's that "
                            "only root can change; the scratch cluster goes below root's directories only"
                        ),
                    )
            if path == "/":
                return
            path = os.path.dirname(path)

    def remove(self):
        """Stop it and remove TOP, whatever an earlier run left: only a
        directory this command made (its MARKER there), or an empty one."""
        try:
            info = os.lstat(self.top)
        except FileNotFoundError:
            return
        ours = stat.S_ISDIR(info.st_mode) and info.st_uid == self.root_uid
        if not ours or not (os.path.lexists(os.path.join(self.top, self.MARKER)) or not os.listdir(self.top)):
            raise Failure(
                Exit.CONFIG,
                unchanged(
                    f"{self.top} (db_backup_pitr_scratch_dir) is there and was not made by restore_db.sh --to-time; "
                    "it is left as it is: give the scratch cluster a directory of its own"
                ),
            )
        self.stop()
        shutil.rmtree(self.top)  # without following links (fd-based on Linux)

    def prepare(self):
        """TOP made afresh, with its marker, configuration and directories."""
        self.make_top("cluster")
        self.configure()
        os.chmod(self.top, 0o755)

    def make_top(self, what):
        """TOP made afresh (whatever an earlier run left removed), root's and
        closed until it is complete, with its marker, the data directory and
        the socket's, the server's account's (self.postgres: its ids)."""
        self.check_parents()
        self.remove()
        os.makedirs(os.path.dirname(self.top), mode=0o755, exist_ok=True)
        self.check_parents()
        os.mkdir(self.top, 0o700)
        self.write(self.MARKER, f"restore_db.sh --to-time: a scratch {what}, removed when the restore ends\n", 0o644)
        os.mkdir(self.data, 0o700)
        os.chown(self.data, *self.postgres, follow_symlinks=False)
        os.mkdir(self.socket_dir, 0o750)
        os.chown(self.socket_dir, self.postgres[0], self.group_id, follow_symlinks=False)
        os.chmod(self.socket_dir, 0o750, follow_symlinks=False)

    def write(self, name, text, mode, group=None):
        """A file of root's in TOP (GROUP: its group, readable by it)."""
        fd = os.open(
            os.path.join(self.top, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
        try:
            os.write(fd, text.encode())
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def configure(self):
        """The cluster's whole configuration, root's, readable by postgres:
        socket only, archiving off, the site's database user by its password
        (as the live server takes it over TCP)."""
        port = self.settings.scratch_port
        self.write(
            "postgresql.conf",
            "# restore_db.sh --to-time: a scratch cluster, removed when the restore ends\n"
            f"data_directory = '{self.data}'\nport = {port}\nlisten_addresses = ''\n"
            f"unix_socket_directories = '{self.socket_dir}'\nunix_socket_permissions = 0777\n"
            f"hba_file = '{self.top}/pg_hba.conf'\nident_file = '{self.top}/pg_ident.conf'\n"
            "archive_mode = off\nhot_standby = off\nshared_buffers = 128MB\n",
            0o640,
            self.postgres[1],
        )
        self.write("pg_hba.conf", "local all postgres peer\nlocal all all md5\n", 0o640, self.postgres[1])
        self.write("pg_ident.conf", "", 0o640, self.postgres[1])

    def check_room(self):
        """Room for the cluster beside the live one, which shares the disk more
        often than not: a scratch cluster that filled it would stop the live
        server's own WAL writes. Needed: the largest backup of the stanza (its
        database size, as pgBackRest recorded it), a tenth more, and WAL_ROOM
        for the WAL replayed."""
        try:
            result = self._run(
                self.as_postgres("pgbackrest", f"--stanza={self.settings.stanza}", "--output=json", "info"),
                QUERY_TIMEOUT,
            )
            (stanza,) = json.loads(result.stdout)
            sizes = [int(b["info"]["size"]) for b in stanza.get("backup") or []]
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED, unchanged(f"pgBackRest cannot read the stanza ({failed.reason()})")
            ) from None
        except (ValueError, TypeError, KeyError):
            raise Failure(
                Exit.RESTORE_FAILED, unchanged("pgBackRest's description of the stanza is unreadable")
            ) from None
        if not sizes:
            raise Failure(
                Exit.RESTORE_FAILED, unchanged(f"the stanza {self.settings.stanza} holds no backup to restore from")
            )
        need = max(sizes) + max(sizes) // 10 + WAL_ROOM
        free = self.free_bytes(self.top)
        if free < need:
            raise Failure(
                Exit.NO_SPACE,
                unchanged(
                    f"only {free >> 20} MiB free in {self.top}; recovering the cluster there needs about "
                    f"{need >> 20} MiB (its size at its largest backup, a tenth more, and WAL to replay); free some "
                    "space, or set db_backup_pitr_scratch_dir on another disk"
                ),
            )

    @staticmethod
    def free_bytes(path):
        info = os.statvfs(path)
        return info.f_bavail * info.f_frsize

    def restore(self, target):
        """pgBackRest restores the backup before TARGET into the data directory,
        with the recovery settings that stop at TARGET and promote. Archiving
        off: the scratch cluster's new timeline must never reach the stanza."""
        self.say(
            f"pgBackRest restores the cluster (stanza {self.settings.stanza}) into {self.data}, to stop at {target}"
        )
        try:
            self._run(
                self.as_postgres(
                    "pgbackrest",
                    f"--stanza={self.settings.stanza}",
                    f"--pg1-path={self.data}",
                    "--type=time",
                    f"--target={target}",
                    "--target-action=promote",
                    "--archive-mode=off",
                    "--log-level-console=warn",
                    "restore",
                ),
                RESTORE_TIMEOUT,
            )
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED, unchanged(f"pgBackRest could not restore the cluster ({failed.reason()})")
            ) from None

    def start(self, target):
        """Start it, replaying the archive up to TARGET (wait_promoted waits
        for the end: with hot_standby off, pg_ctl -w returns once recovery has
        begun). A server that does not start says why, in PostgreSQL's words."""
        self.say(f"the scratch cluster replays the archived WAL up to {target} (port {self.settings.scratch_port})")
        # Given on the command line, these win over the restored postgresql.auto.conf.
        # On the command line, these win over the postgresql.auto.conf restored with the cluster (the live
        # one's ALTER SYSTEM settings): its memory, its libraries, its subscriptions stay the live cluster's.
        options = " ".join(
            [
                f"-c config_file={self.config}",
                f"-p {self.settings.scratch_port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=",
                "-c archive_mode=off",
                "-c hot_standby=off",
                "-c shared_buffers=128MB",
                "-c shared_preload_libraries=",
                "-c max_logical_replication_workers=0",
                f"-c hba_file={self.top}/pg_hba.conf",
                f"-c ident_file={self.top}/pg_ident.conf",
            ]
        )
        try:
            self._run(
                self.pg_ctl("start", "-w", "-t", str(RECOVERY_TIMEOUT), "-l", self.logfile, "-o", options),
                RECOVERY_TIMEOUT + 30,
            )
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED, unchanged(f"the scratch cluster did not recover: {self.why(failed)}")
            ) from None

    def why(self, failed):
        """PostgreSQL's FATAL line from the scratch log, else pg_ctl's own."""
        # Read as postgres: the file is in postgres's directory, where a link could point anywhere.
        try:
            result = self._run(self.as_postgres("tail", "-n", "200", self.logfile), QUERY_TIMEOUT)
            lines = result.stdout.decode("utf-8", "replace").splitlines()
        except CommandFailed:
            lines = []
        fatal = [line.strip() for line in lines if "FATAL:" in line or "PANIC:" in line]
        if any("recovery ended before configured recovery target was reached" in line for line in fatal):
            return (
                "the archived WAL ends before that moment (recovery ended before configured recovery target "
                "was reached); choose an earlier time, or wait for the archive to catch up"
            )
        if fatal:
            return fatal[-1][fatal[-1].find("FATAL:") if "FATAL:" in fatal[-1] else 0 :]
        return failed.reason()

    def wait_promoted(self):
        """Wait until the cluster has replayed up to the moment and been
        promoted (with hot_standby off it takes no connection before): the
        commit time of the last transaction it replayed. A server that stops
        meanwhile has failed its recovery, in the words of its log."""
        deadline = self.clock() + RECOVERY_TIMEOUT
        sql = "SELECT pg_is_in_recovery(), coalesce(pg_last_xact_replay_timestamp()::text, '')"
        psql = os.path.join(self.settings.pg_bin, "psql")
        port = str(self.settings.scratch_port)
        while True:
            try:
                result = self._run(
                    self.as_postgres(psql, "-X", "-At", "-h", self.socket_dir, "-p", port, "-d", "postgres", "-c", sql),
                    QUERY_TIMEOUT,
                )
            except CommandFailed as failed:
                if not self.server_runs():
                    raise Failure(
                        Exit.RESTORE_FAILED, unchanged(f"the scratch cluster did not recover: {self.why(failed)}")
                    ) from None
                answer = ""
            else:
                answer = result.stdout.decode("utf-8", "replace").strip()
            recovering, last = [*answer.split("|", 1), ""][:2]
            if recovering == "f":
                return last
            if self.clock() > deadline:
                raise Failure(
                    Exit.RESTORE_FAILED,
                    unchanged(f"the scratch cluster had not finished its recovery after {RECOVERY_TIMEOUT} s"),
                )
            self.sleep(POLL)


def _send(fd, message):
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise


def build(scratch, target, clock=time.monotonic):
    """The scratch cluster, recovered to TARGET: what the child is told."""
    started = clock()
    scratch.prepare()
    scratch.check_room()
    scratch.restore(target)
    scratch.start(target)
    last = scratch.wait_promoted()
    took = clock() - started
    scratch.say(
        f"the scratch {'server' if scratch.settings.engine == 'mysql' else 'cluster'} is recovered to {target} in "
        f"{took:.0f} s" + (f" (its last replayed commit: {last})" if last else "")
    )
    return {
        "socket_dir": scratch.socket_dir,
        "socket": getattr(scratch, "socket", None),  # MariaDB's: the socket itself
        "port": scratch.settings.scratch_port,
        "target": target,
        "recovered_to": last,
        "seconds": round(took, 1),
    }


LOCK_WAIT = 600  # seconds another run's root side may take to remove its scratch cluster


class Served:
    """What the root side has done for its child: building (a recovery runs
    now: a signal stops it), asked (the child asked, holding the project's
    lock: only then is the scratch directory this run's to touch), lock (the
    root side's own, held until the scratch cluster is removed)."""

    def __init__(self):
        self.building = False
        self.asked = False
        self.lock = None

    def release(self):
        if self.lock is not None:
            os.close(self.lock)  # closing the descriptor lets the flock go
            self.lock = None


def hold_lock(scratch, served, wait=None, sleep=time.sleep):
    """The root side's lock, beside TOP in its root-owned parent: a run whose
    child already let the project's lock go may still be removing its scratch
    cluster. Failure(LOCKED) after WAIT seconds."""
    path = os.path.normpath(scratch.top) + ".lock"
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    wait = LOCK_WAIT if wait is None else wait
    for _second in range(wait + 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sleep(1)
            continue
        served.lock = fd
        return
    os.close(fd)
    raise Failure(Exit.LOCKED, unchanged(f"another restore to a time still holds {path} after {wait} s"))


def restore_to_time(project, config_dir, args, child_main):
    """restore_db.sh --to-time started as root: recover the scratch cluster
    when the child asks, remove it when the child is done with it (before it
    lets the project's lock go) or has ended."""
    # Checked before the fork: a mistyped moment is said once.
    target = utc_text(parse_time(requested_time(args)))
    return supervise(project, config_dir, child_main, lambda root: ScratchSide(root.scratch(), target))


def settings_of(config_dir):
    return config.load_pitr(os.path.join(config_dir, "pitr.json"))


def pitr_backup(project, config_dir, args, child_main):
    """pitr_backup_db.sh started as root: take the pgBackRest backup (on
    MariaDB, mariadb-backup's base) when the child (which logs it, writes its
    metrics and pings) asks."""
    kind = backup_type(args)
    settings = settings_of(config_dir)
    if settings.engine == "mysql":
        from . import pitr_mariadb

        if kind not in ("auto", "full"):
            raise Failure(Exit.USAGE, f"--type {kind}: on MariaDB every base is a full one (auto or full)")
        return supervise(project, config_dir, child_main, pitr_mariadb.BaseSide, settings)
    return supervise(project, config_dir, child_main, lambda root: BackupSide(root, kind), settings)


def pitr_archive(project, config_dir, args, child_main):
    """pitr_archive_db.sh started as root (MariaDB): archive the binary logs,
    pass after pass through the minute, when the child asks."""
    once = "--once" in args  # the child reads the others (--quiet) itself
    settings = settings_of(config_dir)
    if settings.engine != "mysql":
        raise Failure(
            Exit.CONFIG, "pitr_archive_db.sh archives MariaDB's binary logs; PostgreSQL's archive_command sends its WAL"
        )
    from . import pitr_mariadb

    return supervise(project, config_dir, child_main, lambda root: pitr_mariadb.ArchiveSide(root, once=once), settings)


def pitr_rebuild(project, config_dir, args):
    """pitr_rebuild_db.sh DATADIR, as root only (recover.yml -e pitr=true on
    MariaDB): this new server's MariaDB rebuilt from the bucket to the end of
    its archive. No child: nothing of the project user's is read or written;
    progress on stderr, the outcome as one JSON line on stdout."""
    del project
    settings = settings_of(config_dir)
    if settings.engine != "mysql" or len(args) != 1 or not os.path.isabs(args[0]):
        raise Failure(Exit.USAGE, "pitr_rebuild_db.sh DATADIR rebuilds a lost MariaDB server (db_backup_pitr)")
    from . import pitr_mariadb

    entry = pwd.getpwnam("mysql")
    runner = Runner(env={"PATH": PATH, "LC_ALL": "C.UTF-8"})
    try:
        scratch = pitr_mariadb.MariaScratch(
            runner, settings, entry.pw_gid, (entry.pw_uid, entry.pw_gid), lambda text: print(text, file=sys.stderr)
        )
        done = scratch.rebuild(args[0])
    finally:
        runner.close()
    print(json.dumps(done))
    return 0


def pitr_check(project, config_dir, args, child_main):
    """pitr_check_db.sh started as root: read how archiving goes (the live
    cluster's pg_stat_archiver, as postgres; on MariaDB the archiver's state)
    and what the repository holds when the child, which judges, logs, writes
    the metrics and pings, asks."""
    del args  # the child reads its options (--quiet) itself
    settings = settings_of(config_dir)
    if settings.engine == "mysql":
        from . import pitr_mariadb

        return supervise(project, config_dir, child_main, pitr_mariadb.StatusSide, settings)
    return supervise(project, config_dir, child_main, StatusSide, settings)


def pitr_verify(project, config_dir, args, child_main):
    """verify_db.sh started as root with db_backup_pitr: once the child has
    test-restored its dump, pgBackRest verifies the stanza's repository."""
    del args  # the child reads its own
    settings = settings_of(config_dir)
    if settings.engine == "mysql":
        from . import pitr_mariadb

        return supervise(project, config_dir, child_main, pitr_mariadb.VerifySide, settings)
    return supervise(project, config_dir, child_main, VerifySide, settings)


def backup_type(args):
    """--type's value in ARGS (auto, full, diff or incr; default auto), read by
    both sides alike; Failure(USAGE) for another, or for the option given twice."""
    values = [args[index + 1] for index, arg in enumerate(args[:-1]) if arg == "--type"]
    if len(values) > 1:
        raise Failure(Exit.USAGE, f"--type is given {len(values)} times; give it once")
    kind = values[0] if values else "auto"
    if kind not in BACKUP_TYPES:
        raise Failure(Exit.USAGE, f"--type takes auto, full, diff or incr, got '{kind}'")
    return kind


def supervise(project, config_dir, child_main, make_side, settings=None):
    """Fork the child that becomes the project user and runs CHILD_MAIN() (its
    exit code), and answer its requests as root with MAKE_SIDE(Root) (a side:
    handle(request, served, send) and cleanup(served)) until it has ended.
    SETTINGS: pitr.json's values, read here when not given. Returns the
    child's exit code."""
    settings = settings_of(config_dir) if settings is None else settings
    account = "mysql" if settings.engine == "mysql" else "postgres"
    try:
        entry = pwd.getpwnam(account)
        group_id = grp.getgrnam(project.group).gr_gid if project.group else pwd.getpwnam(project.user).pw_gid
    except KeyError as exc:
        raise Failure(Exit.CONFIG, f"no such account or group: {exc} ({account}, or the project's)") from None
    os.umask(0o022)
    to_child_r, to_child_w = os.pipe()
    to_root_r, to_root_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: becomes the project user in CHILD_MAIN
        code = Exit.INTERNAL
        try:
            os.close(to_child_w)
            os.close(to_root_r)
            os.environ[CHANNEL] = f"{to_child_r},{to_root_w}"
            code = child_main()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
    os.close(to_child_r)
    os.close(to_root_w)
    runner = Runner(env={"PATH": PATH, "LC_ALL": "C.UTF-8"})
    served = Served()

    def on_signal(signum, frame):
        # A TERM or HUP sent to this process is passed on; an INT comes from
        # the terminal, which sent it to the child too.
        if signum != signal.SIGINT:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        if served.building:
            runner._on_signal(signum, frame)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    root = Root(runner, settings, group_id, (entry.pw_uid, entry.pw_gid), lambda text: _send(to_child_w, {"log": text}))
    side = make_side(root)
    try:
        serve(to_root_r, to_child_w, side, served)
        status = _wait(pid)
    except BaseException as exc:  # a signal between two steps, or a bug: the child stops too
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait(pid)
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            status = int(Exit.INTERRUPTED)
        else:
            print_error(f"unexpected failure of the root side: {type(exc).__name__}: {exc}")
            status = int(Exit.INTERNAL)
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        side.cleanup(served)
        served.release()
        runner.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def print_error(text):
    print(f"restore_db.sh: {text}", file=sys.stderr)


def remove(scratch, say):
    """Remove the scratch cluster; a failure is said (SAY), not raised: the
    restore's own outcome stands."""
    try:
        scratch.remove()
        return True
    except (Failure, CommandFailed, OSError) as exc:
        say(f"could not remove the scratch cluster in {scratch.top} ({exc}); stop it and remove it by hand")
        return False


class Root:
    """What every root side works with: its runner, the values of pitr.json,
    the project's group and postgres's ids, and SAY (a line for the child's log)."""

    def __init__(self, runner, settings, group_id, postgres, say):
        self.runner = runner
        self.settings = settings
        self.group_id = group_id
        self.postgres = postgres
        self.say = say

    def scratch(self):
        if self.settings.engine == "mysql":
            from . import pitr_mariadb

            return pitr_mariadb.MariaScratch(self.runner, self.settings, self.group_id, self.postgres, self.say)
        return Scratch(self.runner, self.settings, self.group_id, self.postgres, self.say)


class ScratchSide:
    """restore_db.sh --to-time's root side: the scratch cluster, recovered to
    TARGET once asked, removed when the child is done with it."""

    def __init__(self, scratch, target):
        self.scratch = scratch
        self.target = target

    def handle(self, request, served, send):
        if request == ASK_SCRATCH and not served.asked:
            served.asked = served.building = True
            try:
                hold_lock(self.scratch, served)
                answer = {"ready": build(self.scratch, self.target)}
            except (Failure, Interrupted, OSError) as exc:
                answer = failed(exc, "could not make the scratch cluster's directory")
            finally:
                served.building = False
            if "failed" in answer and served.lock is not None:
                remove(self.scratch, lambda text: send({"warn": text}))
                served.release()
            return answer
        if request == ASK_REMOVE and served.asked:
            if served.lock is not None and remove(self.scratch, lambda text: send({"warn": text})):
                self.scratch.say("the scratch cluster is stopped and removed")
            served.release()
            return {"removed": True}
        return None

    def cleanup(self, served):
        if served.lock is not None:  # this run's scratch cluster, not yet removed
            remove(self.scratch, print_error)


class OneRequest:
    """A root side that answers one request, ASK, with {ANSWER: self.work()};
    its failure is passed on to the child (an OSError as OS_ERROR says)."""

    ask = answer = ""
    os_error = "could not run pgBackRest"

    def __init__(self, root):
        self.root = root

    def handle(self, request, served, send):
        if request != self.ask or served.asked:
            return None
        served.asked = served.building = True
        try:
            return {self.answer: self.work()}
        except (Failure, Interrupted, OSError) as exc:
            return failed(exc, self.os_error)
        finally:
            served.building = False

    def cleanup(self, served):
        pass

    def work(self):
        raise NotImplementedError


class BackupSide(OneRequest):
    """pitr_backup_db.sh's root side: one pgBackRest backup of KIND once asked
    (pgBackRest applies the stanza's retention after it)."""

    ask, answer = ASK_BACKUP, "done"

    def __init__(self, root, kind):
        super().__init__(root)
        self.kind = kind

    def work(self):
        """A backup in each repository, the local one first: {the local one's
        figures (backup()), "offsite": [the others' figures]}. A failure in the
        first is DUMP_FAILED; in another, OFFSITE_FAILED, the local one standing."""
        now = time.time()
        done = None
        for repo in self.root.settings.repositories:
            try:
                taken = self.backup(now=now, repo=repo)
            except Failure as failure:
                if done is None:
                    raise
                raise Failure(
                    Exit.OFFSITE_FAILED,
                    f"{failure.message}; the backup {done['label']} in the local repository stands",
                ) from None
            if done is None:
                done = {**taken, "offsite": []}
            else:
                done["offsite"].append(taken)
        return done

    def describe(self):
        return describe(self.root)

    def auto_kind(self, now, repo=1):
        """auto's choice for REPO: (kind, why), kind None for no backup.

        full when REPO holds no full backup of the stanza, or its newest one is
        older than full_every_days (less an hour, so that a daily run at a set time
        does not slip a day). Between full backups, a differential one once the WAL
        archived since REPO's newest backup has grown to diff_after_wal_percent of
        the cluster's size as stored (0: every run), which bounds what a restore
        replays (compressed: the WAL itself is larger), or at once when the archive misses a segment since that backup
        (a gap: a restore from it would stop there); otherwise none: the archive
        already holds the changes, and a differential backup would copy every
        changed table file whole again."""
        settings = self.root.settings
        days = settings.full_every_days
        try:
            held = [b for b in self.describe()["backup"] if repository_of(b) == repo]
            fulls = [int(b["timestamp"]["stop"]) for b in held if b["type"] == "full"]
        except (CommandFailed, ValueError, TypeError, KeyError) as exc:
            raise Failure(
                Exit.DUMP_FAILED, f"pgBackRest cannot describe the stanza, so no backup was taken ({exc})"
            ) from None
        if not fulls:
            return "full", "the stanza has no full backup" + (f" in repository {repo}" if repo != 1 else "")
        age = now - max(fulls)
        if age >= days * 86400 - 3600:
            return (
                "full",
                f"the newest full backup is {age / 86400:.1f} days old (db_backup_pitr_full_every_days {days})",
            )
        old = f"the newest full backup is {age / 86400:.1f} days old"
        allowed = settings.diff_after_wal_percent
        if not allowed:
            return "diff", old
        newest = held[-1]
        try:
            label, stop, size = str(newest["label"]), str(newest["archive"]["stop"]), int(newest["info"]["size"])
        except (ValueError, TypeError, KeyError) as exc:
            raise Failure(
                Exit.DUMP_FAILED,
                f"pgBackRest's description of the newest backup names no WAL or size ({exc}), so no backup was taken",
            ) from None
        wal, names = self.archived_since(repo, stop)
        missing = self.first_missing(stop, names)
        if missing:
            return (
                "diff",
                f"the archive misses WAL after backup {label} (segment {missing} is in no archive of the repository, "
                "written while archiving was off?): a restore from that backup would stop there",
            )
        share = 100 * wal / max(size, 1)
        measured = (
            f"the archive holds {iec(wal)}B of WAL since backup {label}, {share:.1f} % of the cluster's {iec(size)}B"
        )
        if share >= allowed:
            return "diff", f"{measured} (db_backup_pitr_diff_after_wal_percent {allowed}); {old}"
        return None, f"{measured}, under db_backup_pitr_diff_after_wal_percent {allowed}; {old}"

    def first_missing(self, stop, names):
        """The first WAL segment after segment STOP that NAMES (segments archived
        after it, of any timeline) skip ("" when none is skipped): a gap, WAL that
        reached no archive. Segments are numbered by the cluster's segment size."""
        if not names:
            return ""
        per_log = 0x100000000 // self.wal_segment_size()

        def number(name):
            return int(name[8:16], 16) * per_log + int(name[16:24], 16)

        held = {number(name) for name in names}
        timeline = max(names)[:8]  # the newest segment's, where the gap is named
        for wanted in range(number(stop) + 1, max(held)):
            if wanted not in held:
                return f"{timeline}{wanted // per_log:08X}{wanted % per_log:08X}"
        return ""

    def wal_segment_size(self):
        """The live cluster's WAL segment size in bytes (asked as postgres, by its socket)."""
        settings = self.root.settings
        conninfo = f"dbname=postgres host={settings.socket_dir} port={settings.port} connect_timeout=10"
        psql = [f"{settings.pg_bin}/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo]
        query = "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'"
        try:
            size = int(run_quiet(self.root.runner, as_postgres(*psql, "-c", query), QUERY_TIMEOUT).stdout)
            if size < 1 << 20 or size & (size - 1):
                raise ValueError(size)
            return size
        except CommandFailed as failed_run:
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f"cannot ask the cluster (port {settings.port}) its WAL segment size ({failed_run.reason()}), so no "
                "backup was taken",
            ) from None
        except ValueError:
            raise Failure(
                Exit.INTERNAL, "the cluster's WAL segment size is unreadable, so no backup was taken"
            ) from None

    def archived_since(self, repo, stop):
        """(bytes, names): what REPO's archive holds of the WAL segments after
        segment STOP, the end of a backup: their bytes as stored (compressed and
        encrypted) and their names. pgBackRest's repo-ls of the stanza's archive,
        which reads a bucket as well as a directory."""
        stanza = self.root.settings.stanza
        where = "the local repository" if repo == 1 else f"off-site repository {repo}"
        listing = as_postgres(
            "pgbackrest", f"--stanza={stanza}", f"--repo={repo}", "--output=json", "--recurse",
            "--log-level-console=warn", "repo-ls", f"archive/{stanza}",
        )  # fmt: skip
        try:
            found = json.loads(run_quiet(self.root.runner, listing, QUERY_TIMEOUT).stdout)
            total, names = 0, []
            for path, entry in found.items():
                name = path.rsplit("/", 1)[-1]
                # Segments only (24 hex digits, then pgBackRest's checksum and extension), of
                # any timeline: a name sorts after STOP exactly when it was written after it.
                if entry["type"] == "file" and WAL_FILE.match(name) and name[:24] > stop:
                    total += int(entry["size"])
                    names.append(name[:24])
        except CommandFailed as failed_run:
            raise Failure(
                Exit.DUMP_FAILED,
                f"pgBackRest cannot list the archive of {where} ({failed_run.reason()}), so no backup was taken",
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError):
            raise Failure(
                Exit.DUMP_FAILED,
                f"pgBackRest's listing of the archive of {where} is unreadable, so no backup was taken",
            ) from None
        return total, names

    def backup(self, now=None, repo=1):
        root, stanza = self.root, self.root.settings.stanza
        pgbackrest = as_postgres("pgbackrest", f"--stanza={stanza}", f"--repo={repo}")
        now = time.time() if now is None else now
        kind, why = (self.kind, "") if self.kind != "auto" else self.auto_kind(now, repo)
        where = f"stanza {stanza}" + (f", off-site repository {repo}" if repo != 1 else "")
        if kind is None:
            root.say(f"pgBackRest takes no backup of the cluster ({where}): {why}")
            return {**self.newest(repo), "taken": False, "why": why}
        root.say(f"pgBackRest takes a {kind} backup of the cluster ({where})" + (f": {why}" if why else ""))
        started = time.monotonic()
        try:
            run_quiet(
                root.runner, [*pgbackrest, f"--type={kind}", "--log-level-console=warn", "backup"], BACKUP_TIMEOUT
            )
        except CommandFailed as failed_run:
            raise Failure(
                Exit.DUMP_FAILED,
                f"pgBackRest's {kind} backup ({where}) failed ({failed_run.reason()}); the earlier backups are as "
                "they were",
            ) from None
        return {**self.newest(repo, kind), "seconds": round(time.monotonic() - started, 1), "taken": True}

    def newest(self, repo, kind=None):
        """REPO's newest backup as the answer gives it; KIND: the backup just taken."""
        try:
            held = [b for b in self.describe()["backup"] if repository_of(b) == repo]
            newest = held[-1]
            return {
                "repository": repo,
                "label": str(newest["label"]),
                "type": str(newest["type"]),
                "seconds": 0.0,
                "database_bytes": int(newest["info"]["size"]),
                "repository_bytes": int(newest["info"]["repository"]["delta"]),
                "backups": len(held),
            }
        except (CommandFailed, ValueError, TypeError, KeyError, IndexError):
            taken = f"pgBackRest's {kind} backup ended without an error, but its" if kind else "pgBackRest's"
            raise Failure(Exit.INTERNAL, f"{taken} description of the stanza is unreadable (pgbackrest info)") from None


def repository_of(backup):
    """The repository (pgBackRest's repo-key) that holds BACKUP, an entry of info's backups."""
    return int((backup.get("database") or {}).get("repo-key", 1))


def describe(root):
    """The stanza as pgBackRest's info describes it (a dict); ValueError,
    TypeError or KeyError when that cannot be read, CommandFailed when
    pgBackRest fails."""
    stanza = root.settings.stanza
    result = run_quiet(
        root.runner, as_postgres("pgbackrest", f"--stanza={stanza}", "--output=json", "info"), QUERY_TIMEOUT
    )
    (described,) = json.loads(result.stdout)
    if not isinstance(described.get("backup"), list):
        raise TypeError("no list of backups")
    return described


# How the live cluster's archiving goes, one JSON object (times in seconds
# since the epoch). A standby has no WAL position of its own to compare.
ARCHIVER_SQL = """SELECT json_build_object(
  'archive_mode', current_setting('archive_mode'),
  'archived_wal', last_archived_wal, 'archived_at', extract(epoch FROM last_archived_time),
  'failed_wal', last_failed_wal, 'failed_at', extract(epoch FROM last_failed_time),
  'failed_count', failed_count,
  'current_wal', CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
  'now', extract(epoch FROM now()))
FROM pg_stat_archiver"""


class StatusSide(OneRequest):
    """pitr_check_db.sh's root side: once asked, the live cluster's archiver
    (as postgres, by its socket) and the stanza's backups (pgBackRest's info).
    Nothing is changed."""

    ask, answer = ASK_STATUS, "status"
    os_error = "could not run psql"

    def work(self):
        return self.status()

    def archiver(self):
        settings = self.root.settings
        conninfo = f"dbname=postgres host={settings.socket_dir} port={settings.port} connect_timeout=10"
        psql = [f"{settings.pg_bin}/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo]
        try:
            result = run_quiet(self.root.runner, as_postgres(*psql, "-c", ARCHIVER_SQL), QUERY_TIMEOUT)
            answer = json.loads(result.stdout)
            if not isinstance(answer, dict):
                raise TypeError("not an object")
            return answer
        except CommandFailed as failed_run:
            raise Failure(
                Exit.DB_UNAVAILABLE,
                f"cannot ask the cluster (port {settings.port}) how its archiving goes ({failed_run.reason()})",
            ) from None
        except (ValueError, TypeError):
            raise Failure(Exit.INTERNAL, "the cluster's answer about its archiving is unreadable") from None

    def status(self):
        """{"archiver": pg_stat_archiver's figures, "backups": [{"type", "label",
        "stop"}] oldest first, "repository": {"code", "message"} (pgBackRest's
        status of the stanza; code -1 when pgBackRest could not say),
        "max_archive_lag": the lag allowed, from pitr.json}."""
        answer = {
            "archiver": self.archiver(),
            "backups": [],
            "repository": {"code": 0, "message": "ok"},
            "max_archive_lag": self.root.settings.max_archive_lag,
        }
        try:
            described = describe(self.root)
            answer["backups"] = [
                {"type": str(b["type"]), "label": str(b["label"]), "stop": int(b["timestamp"]["stop"])}
                for b in described["backup"]
            ]
            status = described.get("status") or {}
            answer["repository"] = {"code": int(status.get("code", 0)), "message": str(status.get("message", "ok"))}
        except CommandFailed as failed_run:
            answer["repository"] = {"code": -1, "message": f"pgBackRest info failed ({failed_run.reason()})"}
        except (ValueError, TypeError, KeyError):
            answer["repository"] = {"code": -1, "message": "pgBackRest's info of the stanza is unreadable"}
        return answer


class VerifySide(OneRequest):
    """verify_db.sh's root side with db_backup_pitr: once asked, pgBackRest's
    verify of the stanza (every backup's files and the archived WAL read back
    against their checksums). Nothing is changed."""

    ask, answer = ASK_VERIFY, "verified"

    def work(self):
        return self.verify()

    def verify(self):
        """Each repository in turn, the local one first (pgBackRest's verify
        reads one repository, repo1 unless told): the figures summed, each
        problem naming its repository. A verify that cannot run is BAD_BACKUP in
        the local repository; in another, OFFSITE_FAILED when the local one
        verified whole, BAD_BACKUP naming the local damage otherwise."""
        stanza = self.root.settings.stanza
        started = time.monotonic()
        verified = None
        for repo in self.root.settings.repositories:
            where = repository_name(repo)
            self.root.say(f"pgBackRest verifies the {where} of stanza {stanza}")
            argv = as_postgres("pgbackrest", f"--stanza={stanza}", f"--repo={repo}", "--output=text", "--verbose",
                               "verify")  # fmt: skip
            try:
                result = run_quiet(self.root.runner, argv, VERIFY_TIMEOUT)
            except CommandFailed as failed_run:
                message = f"pgBackRest's verify of the {where} failed ({failed_run.reason()})"
                if verified is None:
                    raise Failure(Exit.BAD_BACKUP, message) from None
                if verified["problems"] or not verified["ok"]:
                    # The damage found so far is the worse news: it is not lost behind this.
                    damage = "; ".join(verified["problems"]) or "the local repository's status is not ok"
                    damaged = f"pgBackRest's verify finds damage: {damage}; and {message}"
                    raise Failure(Exit.BAD_BACKUP, damaged) from None
                raise Failure(Exit.OFFSITE_FAILED, f"{message}; the local repository verified whole") from None
            found = read_verify(result.stdout.decode("utf-8", "replace"))
            found["problems"] = [f"{where}: {problem}" for problem in found["problems"]]
            if verified is None:
                verified = found
            else:
                for key in ("wal_checked", "wal_valid", "backups", "files_checked", "files_valid", "problems"):
                    verified[key] += found[key]
                verified["ok"] = verified["ok"] and found["ok"]
        verified["repositories"] = len(self.root.settings.repositories)
        verified["seconds"] = round(time.monotonic() - started, 1)
        return verified


def repository_name(repo):
    """pgBackRest's repository REPO as the logs name it."""
    return "local repository" if repo == 1 else f"off-site repository {repo}"


_VERIFY_STATUS = re.compile(r"^status: (\S+)", re.M)
_VERIFY_ARCHIVE = re.compile(r"archiveId: (\S+), total WAL checked: (\d+), total valid WAL: (\d+)\n\s*(.*)")
_VERIFY_BACKUP = re.compile(
    r"backup: (\S+), status: (\S+), total files checked: (\d+), total valid files: (\d+)\n\s*(.*)"
)


def read_verify(text):
    """pgBackRest's verify --output=text --verbose (it exits 0 whatever it
    found): {"ok", "wal_checked", "wal_valid", "backups", "files_checked",
    "files_valid", "problems": [a sentence per archive or backup that is not
    wholly valid]}. Failure(INTERNAL) when it says no status."""
    found = _VERIFY_STATUS.search(text)
    if found is None:
        raise Failure(Exit.INTERNAL, f"pgBackRest's verify said nothing readable: {text.strip()[:200]!r}")
    verified = {"ok": found.group(1) == "ok", "wal_checked": 0, "wal_valid": 0, "backups": 0}
    verified.update(files_checked=0, files_valid=0, problems=[])
    for archive, checked, valid, detail in _VERIFY_ARCHIVE.findall(text):
        verified["wal_checked"] += int(checked)
        verified["wal_valid"] += int(valid)
        if checked != valid:
            verified["problems"].append(f"archive {archive}: {valid} of {checked} WAL files valid ({detail.strip()})")
    for label, status, checked, valid, detail in _VERIFY_BACKUP.findall(text):
        verified["backups"] += 1
        verified["files_checked"] += int(checked)
        verified["files_valid"] += int(valid)
        if status != "valid" or checked != valid:
            verified["problems"].append(f"backup {label} {status}: {valid} of {checked} files valid ({detail.strip()})")
    if not verified["ok"] and not verified["problems"]:
        verified["problems"].append(f"status {found.group(1)}")
    return verified


def as_postgres(*argv):
    return ["runuser", "-u", "postgres", "--", *argv]


def run_quiet(runner, argv, timeout, ok_codes=(0,)):
    """ARGV's output captured; from /, where postgres may go (not root's working directory)."""
    return runner.run(argv, timeout=timeout, ok_codes=ok_codes, stdout=CAPTURE, cwd="/")


def failed(exc, os_error):
    """The answer that passes EXC on to the child: a Failure with its code, a
    signal as 130, an OSError (OS_ERROR: what could not be done) as 9."""
    if isinstance(exc, Failure):
        return {"failed": {"code": int(exc.code), "message": exc.message}}
    if isinstance(exc, Interrupted):
        return {"failed": {"code": int(Exit.INTERRUPTED), "message": unchanged(f"{exc}: stopped")}}
    message = unchanged(f"{os_error}: {exc.strerror or exc}")
    return {"failed": {"code": int(Exit.RESTORE_FAILED), "message": message}}


def serve(read_fd, write_fd, side, served):
    """Answer the child's requests with SIDE until it closes its end; a line
    SIDE does not take is ignored."""
    with os.fdopen(read_fd, "r", encoding="utf-8") as requests:
        for line in requests:
            answer = side.handle(line.strip(), served, lambda message: _send(write_fd, message))
            if answer is not None:
                _send(write_fd, answer)
    os.close(write_fd)


def _wait(pid):
    while True:
        try:
            status = os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return int(Exit.INTERNAL)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
