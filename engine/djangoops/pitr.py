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
import grp
import json
import os
import pwd
import re
import shutil
import signal
import sys
import time

from . import config
from .errors import Exit, Failure
from .runner import CAPTURE, CommandFailed, Interrupted, Runner

OPTION = "--to-time"
CHANNEL = "DJANGOOPS_PITR_CHANNEL"  # "READ_FD,WRITE_FD" in the child's environment
RESTORE_TIMEOUT = 12 * 3600  # pgBackRest copying the backup and its WAL
RECOVERY_TIMEOUT = 12 * 3600  # the scratch cluster replaying WAL up to the moment
STOP_TIMEOUT = 120
QUERY_TIMEOUT = 60
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
    without a value: the command's own parsing says so)."""
    for index, arg in enumerate(args[:-1]):
        if arg == OPTION:
            return args[index + 1]
    return None


# --- the child's side ----------------------------------------------------------------------


class Channel:
    """The project user's end of the pipes to the root side."""

    def __init__(self, read_fd, write_fd):
        self.reader = os.fdopen(read_fd, "r", encoding="utf-8", closefd=True)
        self.write_fd = write_fd

    @classmethod
    def from_environment(cls):
        """The channel the root side opened, None when the command was not
        started by it (not as root)."""
        value = os.environ.pop(CHANNEL, "")
        found = re.fullmatch(r"(\d+),(\d+)", value)
        if found is None:
            return None
        return cls(int(found.group(1)), int(found.group(2)))

    def ask(self, log):
        """The scratch cluster, recovered: {"socket_dir", "port", "target",
        "recovered_to", "seconds"}. The root side's progress goes into LOG as it
        comes; its failure is raised as the Failure it names."""
        os.write(self.write_fd, b'{"ask": "scratch"}\n')
        for line in self.reader:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "log" in message:
                log.info(str(message["log"]))
            elif "warn" in message:
                log.warn(str(message["warn"]))
            elif "ready" in message:
                return message["ready"]
            elif "failed" in message:
                raise Failure(Exit(int(message["failed"]["code"])), str(message["failed"]["message"]))
        raise Failure(
            Exit.INTERNAL,
            "the root side of restore_db.sh --to-time ended without recovering the cluster; nothing was changed",
        )


# --- the root side ---------------------------------------------------------------------------


def unchanged(text):
    return f"{text}; the live database is unchanged"


class Scratch:
    """The cluster recovered aside, run by postgres: a directory of its own
    (SETTINGS.scratch_dir: the data directory, its log, and the socket, in a
    directory only postgres and GROUP can enter), its own port, no TCP, no
    archiving."""

    def __init__(self, runner, settings, group_id, postgres, say):
        self.runner = runner
        self.settings = settings
        self.group_id = group_id
        self.postgres = postgres  # (uid, gid)
        self.say = say  # say(text): a progress line for the child's log
        self.top = settings.scratch_dir
        self.data = os.path.join(self.top, "data")
        self.logfile = os.path.join(self.top, "postgresql.log")
        self.clock = time.monotonic
        self.sleep = time.sleep

    def _run(self, argv, timeout, ok_codes=(0,)):
        # From /: postgres may not enter root's working directory.
        return self.runner.run(argv, timeout=timeout, ok_codes=ok_codes, stdout=CAPTURE, cwd="/")

    def as_postgres(self, *argv):
        return ["runuser", "-u", "postgres", "--", *argv]

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

    def remove(self):
        """Stop it and remove its directory, whatever an earlier run left."""
        self.stop()
        if os.path.lexists(self.top):
            shutil.rmtree(self.top)

    def prepare(self):
        """The directories, empty: the top one postgres's and GROUP's (the
        project user reaches the socket in it), the data directory postgres's
        alone."""
        self.remove()
        parent = os.path.dirname(self.top)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        os.mkdir(self.top, 0o750)
        os.chown(self.top, self.postgres[0], self.group_id)
        os.chmod(self.top, 0o750)
        os.mkdir(self.data, 0o700)
        os.chown(self.data, *self.postgres)

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

    def configure(self):
        """Its own postgresql.conf and pg_hba.conf (Debian keeps the live ones
        in /etc): socket only, and the site's database user by its password,
        as the live server takes it over TCP."""
        port = self.settings.scratch_port
        files = {
            "postgresql.conf": (
                "# restore_db.sh --to-time: a scratch cluster, removed when the restore ends\n"
                f"port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{self.top}'\n"
                "unix_socket_permissions = 0777\n"
                f"hba_file = '{self.data}/pg_hba.conf'\nident_file = '{self.data}/pg_ident.conf'\n"
                "archive_mode = off\nhot_standby = off\nshared_buffers = 128MB\n"
            ),
            "pg_hba.conf": "local all postgres peer\nlocal all all md5\n",
            "pg_ident.conf": "",
        }
        for name, text in files.items():
            path = os.path.join(self.data, name)
            if os.path.lexists(path):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, text.encode())
                os.fchown(fd, *self.postgres)
            finally:
                os.close(fd)

    def start(self, target):
        """Start it, replaying the archive up to TARGET (wait_promoted waits
        for the end: with hot_standby off, pg_ctl -w returns once recovery has
        begun). A server that does not start says why, in PostgreSQL's words."""
        self.say(f"the scratch cluster replays the archived WAL up to {target} (port {self.settings.scratch_port})")
        # Given on the command line, these win over the restored postgresql.auto.conf.
        options = f"-p {self.settings.scratch_port} -k {self.top} -c listen_addresses= -c archive_mode=off"
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
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()[-200:]
        except OSError:
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
                    self.as_postgres(psql, "-X", "-At", "-h", self.top, "-p", port, "-d", "postgres", "-c", sql),
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
    scratch.configure()
    scratch.start(target)
    last = scratch.wait_promoted()
    took = clock() - started
    scratch.say(
        f"the scratch cluster is recovered to {target} in {took:.0f} s"
        + (f" (its last replayed commit: {last})" if last else "")
    )
    return {
        "socket_dir": scratch.top,
        "port": scratch.settings.scratch_port,
        "target": target,
        "recovered_to": last,
        "seconds": round(took, 1),
    }


def supervise(project, config_dir, args, child_main):
    """restore_db.sh --to-time started as root: fork the child that becomes the
    project user and runs CHILD_MAIN() (its exit code), recover the scratch
    cluster when it asks, remove the scratch cluster once it has ended. Returns
    the child's exit code."""
    # Checked before the fork: a mistyped moment or a missing file is said once.
    settings = config.load_pitr(os.path.join(config_dir, "pitr.json"))
    target = utc_text(parse_time(requested_time(args)))
    try:
        entry = pwd.getpwnam("postgres")
        group_id = grp.getgrnam(project.group).gr_gid if project.group else pwd.getpwnam(project.user).pw_gid
    except KeyError as exc:
        raise Failure(Exit.CONFIG, f"restore_db.sh {OPTION}: no such account or group: {exc}") from None
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
            os._exit(int(code))
    os.close(to_child_r)
    os.close(to_root_w)
    runner = Runner(env={"PATH": PATH, "LC_ALL": "C.UTF-8"})
    # [building now, asked at all]: only a run whose child asked (holding the
    # project's lock) touches the scratch directory, which another run may use.
    building = [False, False]

    def on_signal(signum, frame):
        # A TERM sent to this process is passed on; an INT comes from the
        # terminal, which sent it to the child too.
        if signum == signal.SIGTERM:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if building[0]:
            runner._on_signal(signum, frame)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    scratch = Scratch(
        runner, settings, group_id, (entry.pw_uid, entry.pw_gid), lambda text: _send(to_child_w, {"log": text})
    )
    try:
        serve(to_root_r, to_child_w, scratch, target, building)
        status = _wait(pid)
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        try:
            if building[1]:
                scratch.remove()
        except (Failure, CommandFailed, OSError) as exc:
            print(
                f"restore_db.sh: could not remove the scratch cluster in {settings.scratch_dir}: {exc}", file=sys.stderr
            )
        runner.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def serve(read_fd, write_fd, scratch, target, building):
    """Answer the child's one request; return when it closes its end."""
    with os.fdopen(read_fd, "r", encoding="utf-8") as requests:
        for line in requests:
            if line.strip() != '{"ask": "scratch"}':
                continue
            building[0] = building[1] = True
            try:
                ready = build(scratch, target)
            except Failure as failure:
                _send(write_fd, {"failed": {"code": int(failure.code), "message": failure.message}})
            except Interrupted as interrupted:
                _send(
                    write_fd,
                    {"failed": {"code": int(Exit.INTERRUPTED), "message": unchanged(f"{interrupted}: stopped")}},
                )
            except OSError as exc:
                message = unchanged(f"could not make the scratch cluster's directory: {exc.strerror or exc}")
                _send(write_fd, {"failed": {"code": int(Exit.RESTORE_FAILED), "message": message}})
            else:
                _send(write_fd, {"ready": ready})
            finally:
                building[0] = False
    os.close(write_fd)


def _wait(pid):
    while True:
        try:
            status = os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
