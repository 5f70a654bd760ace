"""Point-in-time recovery on MariaDB: the binary logs and mariadb-backup's
bases, encrypted in restic repositories (a local one, then an S3 bucket).

MariaDB has no archive_command: nothing tells us a binary log is complete
but its closing. So each pass (pitr_archive_db.sh, every archive_timeout
seconds through the minute) reads the server's GTID position, and when it
moved since the last pass closes the open binary log (FLUSH BINARY LOGS,
which is never itself logged); every closed log not yet archived is copied
into root's spool, its size checked against what the server lists, and the
spool goes into each repository as one restic snapshot (the unchanged files
cost nothing). An idle server is not rotated: nothing was written, so all
of it is archived already.

The spool (root's, 0700) holds `archive/binlog/TIMELINE/mysql-bin.NNNNNN` and
`archive/bases.json`, the catalogue of the bases (their binary log position,
GTID and end time): the newest binlog snapshot of a repository is complete,
everything a restore needs besides a base. A timeline begins where the
server's numbering does (a first pass, RESET MASTER, a rebuilt server);
only a base of the same timeline can be replayed forward. A log purged
before it was copied is a gap, said until a base is taken after it.

A base (pitr_backup_db.sh) is mariadb-backup's stream piped into restic in
the local repository, tagged with its label, copied to the bucket by restic
itself, then entered in the catalogue; retention keeps keep_full bases and
the logs from the oldest one on. A base that did not complete never enters
the catalogue, and is forgotten.

Everything here runs as root (pitr.supervise's root side); the project
user's child logs, writes the metrics and pings.
"""

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time

from . import config, pitr
from .errors import Exit, Failure
from .offsite import backup_summary, snapshot_epoch
from .runner import CAPTURE, DEVNULL, CommandFailed, Runner, Stage

# A binary log's name, as SHOW BINARY LOGS lists it: the base name, then the number.
BINLOG_NAME = re.compile(r"(?P<stem>[A-Za-z0-9_.-]+)\.(?P<number>\d{6,})\Z")
# mariadb-backup's info file (xtrabackup_info up to 11.0, mariadb_backup_info since 11.1).
INFO_FILES = ("mariadb_backup_info", "xtrabackup_info")
INFO_POSITION = re.compile(
    r"^binlog_pos = filename '(?P<file>[^']+)', position '(?P<position>\d+)'"
    r"(?:, GTID of the last change '(?P<gtid>[^']*)')?",
    re.MULTILINE,
)
INFO_VERSION = re.compile(r"^server_version = (?P<version>\S+)", re.MULTILINE)
LABEL_TAG = "label="
SQL_TIMEOUT = 60
COPY_CHUNK = 1 << 20
RESTIC_TIMEOUT = 3600  # one push of the spool, or one copy of a base
BASE_TIMEOUT = 24 * 3600
RETENTION_TIMEOUT = 6 * 3600
LOCK_WAIT = 300  # seconds a base waits for the archiver's pass to end before it writes the catalogue
KEEP_BINLOG_SNAPSHOTS = 3  # the newest binlog snapshot is complete; a few more in case it is damaged
SPOOL_OWNER = 0  # root: what root runs, root owns
HEAD_BYTES = 4096  # a log's start (its format event, stamped when it was opened): which file it is


def utc_label(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def binlog_number(name):
    """NAME's number (mysql-bin.000012: 12); None for another name."""
    found = BINLOG_NAME.fullmatch(name or "")
    return int(found.group("number")) if found else None


def parse_info(text):
    """The binary log position in mariadb-backup's info file TEXT: {file,
    position, gtid, server_version}. Failure(DUMP_FAILED) without one (the
    server's binary log is off, or mariadb-backup ran with --no-lock)."""
    found = INFO_POSITION.search(text)
    if found is None:
        raise Failure(
            Exit.DUMP_FAILED,
            "mariadb-backup recorded no binary log position (is log_bin on?): the base cannot be replayed "
            "forward, so it was not kept",
        )
    version = INFO_VERSION.search(text)
    return {
        "file": found.group("file"),
        "position": int(found.group("position")),
        "gtid": found.group("gtid") or "",
        "server_version": version.group("version") if version else "",
    }


def head_digest(path):
    """The SHA-256 of PATH's first HEAD_BYTES: which binary log it is."""
    with open(path, "rb") as file:
        return hashlib.sha256(file.read(HEAD_BYTES)).hexdigest()


def redact(text, secrets):
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret]")
    return text


class Restic:
    """restic against the repositories of pitr.json, with root's password
    file and the bucket's keys in its environment only."""

    def __init__(self, runner, settings):
        self.runner = runner
        self.settings = settings
        self.keys = {}
        if settings.s3_keys_file:
            values = config.read_values(settings.s3_keys_file)
            if not isinstance(values, dict) or not all(
                isinstance(values.get(k), str) and values.get(k) for k in ("access_key_id", "secret_access_key")
            ):
                raise Failure(Exit.CONFIG, f"{settings.s3_keys_file}: must hold access_key_id and secret_access_key")
            self.keys = values

    @property
    def secrets(self):
        return [self.keys.get("secret_access_key", "")]

    def env(self, repo):
        env = {
            "RESTIC_PASSWORD_FILE": self.settings.password_file,
            "RESTIC_CACHE_DIR": os.path.join(self.settings.spool_dir, "cache"),
            "HOME": "/root",
        }
        if repo.url.startswith("s3:"):
            env["AWS_ACCESS_KEY_ID"] = self.keys.get("access_key_id", "")
            env["AWS_SECRET_ACCESS_KEY"] = self.keys.get("secret_access_key", "")
            if repo.region:
                env["AWS_DEFAULT_REGION"] = repo.region
        return env

    def argv(self, repo, *args):
        argv = ["restic", "--repo", repo.url, "--quiet"]
        if repo.ca_file:
            argv += ["--cacert", repo.ca_file]
        return argv + list(args)

    def stage(self, repo, *args):
        return Stage(self.argv(repo, *args), env=self.env(repo), name="restic")

    def run(self, repo, *args, timeout=RESTIC_TIMEOUT, stdout=CAPTURE):
        """restic ARGS against REPO: its Result. Failure(fail_code) naming the
        repository and restic's last words when it fails."""
        try:
            return self.runner.run(self.argv(repo, *args), env=self.env(repo), timeout=timeout, stdout=stdout)
        except CommandFailed as exc:
            raise self.failure(repo, args[0], exc) from None

    def failure(self, repo, what, exc):
        code = Exit.OFFSITE_FAILED if repo.name != "local" else Exit.DUMP_FAILED
        reason = redact(exc.reason(), self.secrets)
        return Failure(code, f"restic {what} in the {repo.name} repository failed: {reason}")

    def snapshots(self, repo, *tags):
        args = ["snapshots", "--json", "--host", self.settings.stanza]
        for tag in tags:
            args += ["--tag", tag]
        result = self.run(repo, *args, timeout=600)
        try:
            listed = json.loads(result.stdout or b"[]")
        except ValueError:
            listed = None
        if not isinstance(listed, list):
            raise Failure(
                Exit.OFFSITE_FAILED if repo.name != "local" else Exit.BAD_BACKUP,
                f"restic's list of snapshots in the {repo.name} repository is not a list",
            )
        return [item for item in listed if isinstance(item, dict)]


def read_mysqls(path, limit=1 << 20):
    """A file of a directory mysql owns, read as root: never through a link
    (one planted there would show root's files), a regular file only, at most
    LIMIT bytes. FileNotFoundError when it is not there."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return file.read(limit).decode("utf-8", "replace")


def older(snapshot, moment):
    """Whether restic's SNAPSHOT was taken before MOMENT (epoch; 0: never)."""
    try:
        return bool(moment) and snapshot_epoch(str(snapshot.get("time"))) < moment
    except ValueError:
        return False


def label_of(snapshot):
    for tag in snapshot.get("tags") or []:
        if isinstance(tag, str) and tag.startswith(LABEL_TAG):
            return tag[len(LABEL_TAG) :]
    return None


class Spool:
    """Root's spool directory: the archived logs, the bases' catalogue, the
    archiver's state and the lock that keeps two passes (or a pass and a
    base's catalogue) apart."""

    def __init__(self, directory):
        self.dir = directory
        self.archive = os.path.join(directory, "archive")
        self.binlog = os.path.join(self.archive, "binlog")
        self.state_file = os.path.join(directory, "state.json")
        self.bases_file = os.path.join(self.archive, "bases.json")
        self.lock_fd = None

    def ensure(self):
        """The spool's directories, root's and private; Failure(CONFIG) when
        the spool is not root's (someone else could plant logs in it)."""
        for path in (self.dir, self.archive, self.binlog):
            os.makedirs(path, mode=0o700, exist_ok=True)
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != SPOOL_OWNER or info.st_mode & 0o077:
                raise Failure(Exit.CONFIG, f"{path} must be a directory of root's that no one else can read")

    def lock(self, wait=0, sleep=time.sleep, name=".lock"):
        """Take the spool's lock (NAME: another of its locks); False when
        another holds it after WAIT seconds."""
        fd = os.open(os.path.join(self.dir, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        tries = wait * 10  # a pass holds it for moments: asked again every tenth of a second
        for attempt in range(tries + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if attempt < tries:
                    sleep(0.1)
                continue
            self.lock_fd = fd
            return True
        os.close(fd)
        return False

    def unlock(self):
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    @staticmethod
    def _read(path, default):
        try:
            with open(path, encoding="utf-8") as file:
                value = json.load(file)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            raise Failure(Exit.BAD_BACKUP, f"{path} cannot be read ({exc}): move it aside to start afresh") from None
        return value if isinstance(value, type(default)) else default

    @staticmethod
    def _write(path, value):
        temporary = f"{path}.new"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as file:
            json.dump(value, file, indent=1, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)

    def state(self):
        return self._read(self.state_file, {})

    def save_state(self, state):
        self._write(self.state_file, state)

    def bases(self):
        return self._read(self.bases_file, [])

    def save_bases(self, bases):
        self._write(self.bases_file, bases)

    def timeline_dir(self, timeline):
        return os.path.join(self.binlog, timeline)

    def files(self, timeline):
        """The logs archived in TIMELINE, by number."""
        try:
            names = os.listdir(self.timeline_dir(timeline))
        except FileNotFoundError:
            return []
        return sorted((n for n in names if binlog_number(n) is not None), key=binlog_number)

    def timelines(self):
        try:
            return sorted(n for n in os.listdir(self.binlog) if re.fullmatch(r"\d{8}T\d{6}Z", n))
        except FileNotFoundError:
            return []


class Live:
    """What the live server says of its binary logs."""

    def __init__(self, log_bin, binlog_format, gtid, basename, files):
        self.log_bin = log_bin
        self.binlog_format = binlog_format
        self.gtid = gtid
        self.basename = basename
        self.files = files  # [(name, size)], oldest first; the last one is open

    @property
    def directory(self):
        return os.path.dirname(self.basename)


class Server:
    """The live MariaDB server, asked as root by its socket."""

    def __init__(self, runner, socket):
        self.runner = runner
        self.socket = socket

    def sql(self, text, timeout=SQL_TIMEOUT):
        argv = ["mariadb", "--no-defaults", "--protocol=SOCKET", f"--socket={self.socket}", "--user=root", "-N", "-B"]
        try:
            return self.runner.run(argv, input=text, timeout=timeout).stdout.decode("utf-8", "replace")
        except CommandFailed as exc:
            raise Failure(
                Exit.DB_UNAVAILABLE, f"the MariaDB server at {self.socket} did not answer: {exc.reason()}"
            ) from None

    def live(self):
        text = self.sql("SELECT @@log_bin, @@binlog_format, @@gtid_binlog_pos, IFNULL(@@log_bin_basename, '');\n")
        fields = text.rstrip("\n").split("\t")
        if len(fields) != 4:
            raise Failure(Exit.DB_UNAVAILABLE, f"the MariaDB server at {self.socket} gave an unexpected answer")
        log_bin = fields[0] == "1"
        files = []
        if log_bin:
            for line in self.sql("SHOW BINARY LOGS;\n").splitlines():
                parts = line.split("\t")
                if len(parts) >= 2 and binlog_number(parts[0]) is not None and parts[1].isdigit():
                    files.append((parts[0], int(parts[1])))
        return Live(log_bin, fields[1], fields[2], fields[3], files)

    def flush(self):
        self.sql("FLUSH BINARY LOGS;\n")


class Archiver:
    """One pass after another: close the open log when something was written,
    copy the closed ones into the spool, push the spool to each repository."""

    def __init__(self, runner, settings, clock=time.time):
        self.runner = runner
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.server = Server(runner, settings.socket)
        self.restic = Restic(runner, settings)
        self.clock = clock

    def pass_once(self, others=True):
        """One pass: under the spool's lock, the logs closed and copied and
        the local repository written; then (OTHERS) each other repository,
        outside it (a bucket out of reach must not hold the local archive up).
        {"files": [names copied], "bytes", "repositories": {name: {"through",
        "error"}}, "gap", "timeline", "asked_at"}, or None when another pass or
        a base held the lock. Failure when the server cannot be asked, its
        binary log is off, or a log cannot be copied; a repository that
        cannot be written is said in its "error"."""
        self.spool.ensure()
        if not self.spool.lock():
            return None
        try:
            done = self._pass()
        finally:
            self.spool.unlock()
        if others:
            for repo in self.settings.repositories[1:]:
                done["repositories"][repo.name] = self.push_other(repo, done["asked_at"])
        return done

    def _pass(self):
        state = self.spool.state()
        asked_at = self.clock()
        live = self.server.live()
        if not live.log_bin:
            raise Failure(
                Exit.BAD_BACKUP,
                "the MariaDB server's binary log is off (log_bin): nothing can be archived; the role turns it on, "
                "and it takes a restart (db_backup_pitr_restart_database)",
            )
        if live.gtid != state.get("flushed_gtid") or not state.get("timeline"):
            open_log = live.files[-1][0] if live.files else None
            self.server.flush()
            state["flushed_gtid"] = live.gtid
            if not state.get("timeline"):
                # The first pass archives from the log that was open: what came before is
                # older than any base yet to be taken.
                state["timeline"] = utc_label(asked_at)
                state["first_file"] = open_log
            live = self.server.live()
        copied, size = self.copy_closed(state, live)
        if copied:
            state["version"] = int(state.get("version", 0)) + 1
        self.spool.save_state(state)
        repositories = self.push(state, asked_at, self.settings.repositories[:1])
        self.spool.save_state(state)
        return {
            "files": copied,
            "bytes": size,
            "repositories": repositories,
            "gap": state.get("gap"),
            "timeline": state["timeline"],
            "asked_at": asked_at,
        }

    def copy_closed(self, state, live):
        """Copy the closed logs that the spool lacks, oldest first: ([names], bytes).
        A new timeline when the server's numbering went back (RESET MASTER, a
        rebuilt server); a gap when a log was purged before it was copied."""
        closed = live.files[:-1]
        timeline = state["timeline"]
        last = state.get("last_file")
        if last is not None and self.restarted(live, last, state.get("last_head")):
            timeline = state["timeline"] = utc_label(self.clock())
            state["last_file"] = last = None
            state["first_file"] = live.files[0][0]
            state["gap"] = None
        if last is None:
            start = binlog_number(state.get("first_file")) or 0
            wanted = [(n, s) for n, s in closed if binlog_number(n) >= start]
            expected = start if state.get("first_file") else None
        else:
            wanted = [(n, s) for n, s in closed if binlog_number(n) > binlog_number(last)]
            expected = binlog_number(last) + 1
        # The oldest log the server still has, closed or open: past the next one to archive, the
        # ones between were purged unarchived.
        still = [(n, s) for n, s in live.files if expected is None or binlog_number(n) >= expected]
        if still and expected is not None and binlog_number(still[0][0]) > expected:
            state["gap"] = {"timeline": timeline, "after": last, "next": still[0][0], "at": self.clock()}
        os.makedirs(self.spool.timeline_dir(timeline), mode=0o700, exist_ok=True)
        copied, total = [], 0
        for name, size in wanted:
            source = os.path.join(live.directory, name)
            self.copy(source, os.path.join(self.spool.timeline_dir(timeline), name), size)
            state["last_file"] = name
            state["last_head"] = head_digest(os.path.join(self.spool.timeline_dir(timeline), name))
            copied.append(name)
            total += size
        return copied, total

    @staticmethod
    def restarted(live, last, head):
        """Whether the server's numbering began again since LAST (the newest
        log archived; HEAD, the digest of its first bytes): no log of that name
        and none numbered after it, or one of that name that starts otherwise
        (RESET MASTER removes the logs and starts again at 1; a log's start,
        its format event, is stamped when it was opened)."""
        names = dict(live.files)
        if not names:
            return False
        if last not in names:
            return max(map(binlog_number, names)) <= binlog_number(last)
        if head is None:
            return False
        try:
            return head_digest(os.path.join(live.directory, last)) != head
        except FileNotFoundError:
            return True

    @staticmethod
    def copy(source, target, size):
        """SOURCE (a closed log) to TARGET, whole: SIZE bytes, as the server
        lists it, or Failure(DUMP_FAILED) and nothing at TARGET."""
        temporary = target + ".part"
        try:
            # mysql owns the logs' directory: a link planted there must not make root copy
            # (and push) a file of its choice.
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{source} is not a regular file")
            with (
                open(fd, "rb") as reader,
                open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as writer,
            ):
                shutil.copyfileobj(reader, writer, COPY_CHUNK)
                writer.flush()
                os.fsync(writer.fileno())
                written = writer.tell()
        except OSError as exc:
            _remove(temporary)
            raise Failure(Exit.DUMP_FAILED, f"could not copy the binary log {source}: {exc.strerror or exc}") from None
        if written != size:
            _remove(temporary)
            raise Failure(
                Exit.DUMP_FAILED,
                f"the binary log {source} holds {written} bytes, the server lists {size}: it was not archived",
            )
        os.replace(temporary, target)

    def push(self, state, asked_at, repositories):
        """The spool into each of REPOSITORIES whose newest snapshot lacks its
        latest change; {name: {"through": epoch, "error": text}}. A repository
        that was written (or was already current) holds every write made
        before ASKED_AT."""
        pushed = state.setdefault("repositories", {})
        version = int(state.get("version", 0))
        answer = {}
        for repo in repositories:
            mine = pushed.setdefault(repo.name, {})
            if int(mine.get("version", -1)) != version:
                try:
                    self.restic.run(
                        repo,
                        "backup",
                        "--host",
                        self.settings.stanza,
                        "--tag",
                        "djangoops-pitr",
                        "--tag",
                        "binlog",
                        self.spool.archive,
                        stdout=DEVNULL,
                    )
                except Failure as failure:
                    mine["error"] = failure.message
                    answer[repo.name] = {"through": mine.get("through"), "error": failure.message}
                    continue
                mine["version"] = version
            mine["through"] = asked_at
            mine["error"] = ""
            answer[repo.name] = {"through": asked_at, "error": ""}
        return answer

    def push_other(self, repo, asked_at):
        """REPO (not the local one) brought up to the spool, outside the spool's
        lock, under a lock of its own: {"through", "error"}, with "busy" when
        another run pushes to it now. The spool only grows meanwhile: the
        snapshot holds at least what it held when the push began."""
        fd = os.open(
            os.path.join(self.spool.dir, f".push-{repo.name}.lock"),
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                mine = (self.spool.state().get("repositories") or {}).get(repo.name) or {}
                return {"through": mine.get("through"), "error": "", "busy": True}
            with self.spool_locked():
                state = self.spool.state()
                version = int(state.get("version", 0))
                current = int(((state.get("repositories") or {}).get(repo.name) or {}).get("version", -1)) == version
            error = ""
            if not current:
                try:
                    self.restic.run(
                        repo, "backup", "--host", self.settings.stanza, "--tag", "djangoops-pitr", "--tag", "binlog",
                        self.spool.archive, stdout=DEVNULL,
                    )  # fmt: skip
                except Failure as failure:
                    error = failure.message
            with self.spool_locked():
                state = self.spool.state()
                mine = state.setdefault("repositories", {}).setdefault(repo.name, {})
                mine["error"] = error
                if not error:
                    mine["version"] = max(version, int(mine.get("version", -1)))
                    mine["through"] = max(asked_at, float(mine.get("through") or 0))
                self.spool.save_state(state)
                return {"through": mine.get("through"), "error": error}
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def spool_locked(self):
        if not self.spool.lock(wait=LOCK_WAIT):
            raise Failure(Exit.LOCKED, f"{self.spool.dir}/.lock stayed held for {LOCK_WAIT} s")
        try:
            yield
        finally:
            self.spool.unlock()


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Base:
    """One base: mariadb-backup's stream into the local repository, copied to
    the others, entered in the catalogue; then retention."""

    def __init__(self, runner, settings, say, clock=time.time):
        self.runner = runner
        self.settings = settings
        self.say = say
        self.spool = Spool(settings.spool_dir)
        self.restic = Restic(runner, settings)
        self.clock = clock

    def take(self):
        self.spool.ensure()
        local, *others = self.settings.repositories
        started = self.clock()
        label = utc_label(started)
        lsndir = os.path.join(self.spool.dir, f"base-{label}")
        shutil.rmtree(lsndir, ignore_errors=True)
        tags = ["--host", self.settings.stanza, "--tag", "djangoops-pitr", "--tag", "base", "--tag", LABEL_TAG + label]
        stages = [
            Stage(
                [
                    "mariadb-backup",
                    "--backup",
                    "--user=root",
                    f"--socket={self.settings.socket}",
                    "--stream=mbstream",
                    f"--extra-lsndir={lsndir}",
                ],
                name="mariadb-backup",
            ),
            self.restic.stage(local, "backup", "--stdin", "--stdin-filename", "base.mbstream", "--json", *tags),
        ]
        try:
            results = self.runner.pipeline(stages, stdout=CAPTURE, timeout=BASE_TIMEOUT)
            info = parse_info(self.read_info(lsndir))
        except (CommandFailed, Failure) as exc:
            self.forget_label(local, label)
            shutil.rmtree(lsndir, ignore_errors=True)
            if isinstance(exc, Failure):
                raise
            raise Failure(
                Exit.DUMP_FAILED,
                f"the base backup failed: {redact(exc.reason(), self.restic.secrets)}; no base was kept",
            ) from None
        shutil.rmtree(lsndir, ignore_errors=True)
        ended = self.clock()
        summary = backup_summary(results[-1].stdout.decode("utf-8", "replace"))
        entry = {
            "label": label,
            "ended_at": ended,
            "seconds": round(ended - started, 1),
            "stream_bytes": int(summary.get("total_bytes_processed", 0)),
            "added_bytes": int(summary.get("data_added", 0)),
            **info,
        }
        if not self.spool.lock(wait=LOCK_WAIT):
            self.forget_label(local, label)
            raise Failure(Exit.LOCKED, f"the archiver held {self.spool.dir}/.lock for {LOCK_WAIT} s; no base was kept")
        try:
            state = self.spool.state()
            entry["timeline"] = state.get("timeline") or ""
            bases = [b for b in self.spool.bases() if isinstance(b, dict) and b.get("label") != label]
            bases.append(entry)
            self.spool.save_bases(bases)
            if state.get("gap"):
                self.say(f"the base {label} closes the gap in the archive after {state['gap'].get('after')}")
                state["gap"] = None
            state["version"] = int(state.get("version", 0)) + 1
            self.spool.save_state(state)
        finally:
            self.spool.unlock()
        copied = []
        failure = None
        for repo in others:
            try:
                self.restic.run(
                    repo,
                    "copy",
                    "--from-repo",
                    local.url,
                    "--from-password-file",
                    self.settings.password_file,
                    "--host",
                    self.settings.stanza,
                    "--tag",
                    LABEL_TAG + label,
                    timeout=BASE_TIMEOUT,
                    stdout=DEVNULL,
                )
                copied.append(repo.name)
            except Failure as exc:
                failure = failure or exc
        kept = self.retain(failure is None)
        entry.update({"copied_to": copied, "bases": kept})
        if failure is not None:
            raise Failure(Exit.OFFSITE_FAILED, f"{failure.message}; the base {label} in the local repository stands")
        return entry

    @staticmethod
    def read_info(lsndir):
        for name in INFO_FILES:
            try:
                with open(os.path.join(lsndir, name), encoding="utf-8", errors="replace") as file:
                    return file.read()
            except FileNotFoundError:
                continue
        raise Failure(Exit.DUMP_FAILED, f"mariadb-backup left no info file in {lsndir}; no base was kept")

    def forget_label(self, repo, label):
        """Forget what a failed base left in REPO (restic stores what it read
        before the stream broke); a failure here is said, not raised."""
        try:
            ids = [s.get("id") for s in self.restic.snapshots(repo, LABEL_TAG + label) if s.get("id")]
            if ids:
                self.restic.run(repo, "forget", *ids, stdout=DEVNULL)
        except Failure as exc:
            self.say(f"could not forget the incomplete base {label}: {exc.message}")

    def retain(self, everywhere):
        """Keep the newest keep_full bases of the catalogue, and the logs from
        the oldest kept one on; forget in every repository (only in the local
        one unless EVERYWHERE: a bucket that missed the new base keeps its
        older ones) the bases the catalogue retired, and, once it holds
        keep_full, the others older than its oldest (a lost server's, which
        this one was rebuilt from), as pgBackRest retires a former timeline's.
        A base of another name newer than that is left alone. Returns how many
        bases are kept."""
        if not self.spool.lock(wait=LOCK_WAIT):
            self.say(f"retention skipped: {self.spool.dir}/.lock is held")
            return len(self.spool.bases())
        try:
            bases = sorted(self.spool.bases(), key=lambda b: b.get("ended_at", 0))
            keep = bases[-self.settings.keep_full :]
            labels = {b["label"] for b in keep}
            self.spool.save_bases(keep)
            self.prune_spool(keep[0])
            state = self.spool.state()
            state["version"] = int(state.get("version", 0)) + 1
            retired = [*state.get("retired", []), *(b["label"] for b in bases if b["label"] not in labels)][-1000:]
            state["retired"] = retired
            self.spool.save_state(state)
            oldest = float(keep[0].get("ended_at") or 0) if len(keep) >= self.settings.keep_full else 0.0
            repos = self.settings.repositories if everywhere else self.settings.repositories[:1]
            for repo in repos:
                try:
                    stale = [
                        s["id"]
                        for s in self.restic.snapshots(repo, "base")
                        if s.get("id") and label_of(s) not in labels and (label_of(s) in retired or older(s, oldest))
                    ]
                    if stale:
                        self.restic.run(repo, "forget", *stale, stdout=DEVNULL, timeout=RETENTION_TIMEOUT)
                    self.restic.run(
                        repo,
                        "forget",
                        "--host",
                        self.settings.stanza,
                        "--tag",
                        "binlog",
                        "--keep-last",
                        str(KEEP_BINLOG_SNAPSHOTS),
                        "--prune",
                        stdout=DEVNULL,
                        timeout=RETENTION_TIMEOUT,
                    )
                except Failure as exc:
                    self.say(f"retention in the {repo.name} repository failed: {exc.message}")
            return len(keep)
        finally:
            self.spool.unlock()

    def prune_spool(self, oldest):
        """Drop the archived logs a restore from OLDEST (a base) no longer needs:
        other timelines before its own, and its own timeline's logs before its file."""
        timeline = oldest.get("timeline")
        first = binlog_number(oldest.get("file"))
        if not timeline or first is None:
            return
        for other in self.spool.timelines():
            if other < timeline:
                shutil.rmtree(self.spool.timeline_dir(other), ignore_errors=True)
        for name in self.spool.files(timeline):
            if binlog_number(name) < first:
                _remove(os.path.join(self.spool.timeline_dir(timeline), name))


# --- the root sides of the commands (pitr.supervise) ----------------------------------------


class BaseSide(pitr.OneRequest):
    """pitr_backup_db.sh's root side on MariaDB: one base once asked."""

    ask, answer = pitr.ASK_BACKUP, "done"
    os_error = "could not take the base backup"

    def work(self):
        return Base(self.root.runner, self.root.settings, self.root.say).take()


class ArchiveSide(pitr.OneRequest):
    """pitr_archive_db.sh's root side: a pass every half of archive_timeout
    until the minute is over (the next run starts then), once asked."""

    ask, answer = pitr.ASK_ARCHIVE, "archived"
    os_error = "could not archive the binary logs"
    RUN_SECONDS = 60

    def __init__(self, root, once=False, clock=time.monotonic, sleep=time.sleep, make_runner=None):
        super().__init__(root)
        self.once = once
        self.clock = clock
        self.sleep = sleep
        # The background pushes' own runner (a runner serves one thread).
        self.make_runner = make_runner or (lambda: Runner(env={"PATH": pitr.PATH, "LC_ALL": "C.UTF-8"}))

    def work(self):
        """{"passes", "skipped", "files", "bytes", "repositories" (the local
        one as the last pass left it, the others as their last push did),
        "gap", "timeline", "asked_at"}. The other repositories are pushed in
        the background, one push after another, while the passes go on: a
        bucket that takes long, or is out of reach, holds up only itself; the
        run lasts until its last push has ended."""
        settings = self.root.settings
        archiver = Archiver(self.root.runner, settings)
        others = settings.repositories[1:]
        pusher = Archiver(self.make_runner(), settings) if others else None
        pushed = {}
        thread = None

        def push(asked_at):
            for repo in others:
                try:
                    pushed[repo.name] = pusher.push_other(repo, asked_at)
                except (Failure, OSError) as exc:
                    pushed[repo.name] = {"through": None, "error": str(exc)}

        # Half of archive_timeout: a write waits for the next pass, then for the push, and both
        # together stay within archive_timeout.
        period = max(1, settings.archive_timeout // 2)
        started = self.clock()
        summary = {"passes": 0, "skipped": 0, "files": [], "bytes": 0, "repositories": {}, "gap": None}
        next_pass = started
        try:
            while True:
                done = archiver.pass_once(others=False)
                if done is None:
                    summary["skipped"] += 1
                else:
                    summary["passes"] += 1
                    summary["files"] += done["files"]
                    summary["bytes"] += done["bytes"]
                    for key in ("repositories", "gap", "timeline", "asked_at"):
                        summary[key] = done[key]
                    # A push begins while the run's minute lasts (with --once, one push): past it,
                    # the run only waits for the push under way, and the next run pushes again.
                    in_time = self.clock() < started + self.RUN_SECONDS - 1 and not (self.once and thread)
                    if pusher is not None and in_time and (thread is None or not thread.is_alive()):
                        thread = threading.Thread(target=push, args=(done["asked_at"],), daemon=True)
                        thread.start()
                    if any(r["error"] for r in done["repositories"].values()):
                        break  # the local repository fails: said now; the next run tries again
                next_pass += period
                pushing = thread is not None and thread.is_alive()
                if (self.once or next_pass >= started + self.RUN_SECONDS - 1) and not pushing:
                    break
                self.sleep(max(0.0, next_pass - self.clock()))
            if thread is not None:
                thread.join()
        finally:
            if thread is not None and thread.is_alive():  # stopped by a signal: so is its restic
                pusher.runner.close()
                thread.join(30)
            if pusher is not None:
                pusher.runner.close()
        summary["repositories"] = {**summary["repositories"], **pushed}
        return summary


class StatusSide(pitr.OneRequest):
    """pitr_check_db.sh's root side on MariaDB: the live server's binary log
    settings, the archiver's state and the bases' catalogue. Nothing is changed."""

    ask, answer = pitr.ASK_STATUS, "status"
    os_error = "could not read the archive's state"

    def work(self):
        settings = self.root.settings
        spool = Spool(settings.spool_dir)
        state = spool.state()
        live = Server(self.root.runner, settings.socket).live()
        return {
            "engine": "mysql",
            "now": time.time(),
            "log_bin": live.log_bin,
            "binlog_format": live.binlog_format,
            "timeline": state.get("timeline"),
            "last_file": state.get("last_file"),
            "repositories": {
                repo.name: (state.get("repositories") or {}).get(repo.name, {}) for repo in settings.repositories
            },
            "gap": state.get("gap"),
            "bases": [
                {k: b.get(k) for k in ("label", "ended_at", "timeline", "file")}
                for b in spool.bases()
                if isinstance(b, dict)
            ],
            "max_archive_lag": settings.max_archive_lag,
        }


class VerifySide(pitr.OneRequest):
    """verify_db.sh's root side on MariaDB: restic reads back every pack of
    each repository against its checksum. Nothing is changed."""

    ask, answer = pitr.ASK_VERIFY, "verified"
    os_error = "could not run restic"

    def work(self):
        settings = self.root.settings
        restic = Restic(self.root.runner, settings)
        started = time.monotonic()
        verified = {"tool": "restic", "ok": True, "problems": [], "backups": 0, "snapshots": 0}
        verified.update(files_checked=0, files_valid=0, wal_checked=0, wal_valid=0)
        spool = Spool(settings.spool_dir)
        for index, repo in enumerate(settings.repositories):
            self.root.say(f"restic reads back the {repo.name} repository of {settings.stanza}")
            # restic's check locks the repository for itself: the archive's passes (the local
            # repository) or its pushes (another) wait meanwhile; the logs wait on the server.
            name = ".lock" if index == 0 else f".push-{repo.name}.lock"
            try:
                if not spool.lock(wait=LOCK_WAIT, name=name):
                    raise Failure(Exit.LOCKED, f"the archive held {spool.dir}/{name} for {LOCK_WAIT} s")
                try:
                    snapshots = restic.snapshots(repo)
                    restic.run(repo, "check", "--read-data", timeout=pitr.VERIFY_TIMEOUT, stdout=DEVNULL)
                finally:
                    spool.unlock()
            except Failure as failure:
                if index == 0:
                    raise Failure(Exit.BAD_BACKUP, failure.message) from None
                if verified["problems"]:
                    raise Failure(Exit.BAD_BACKUP, "; ".join([*verified["problems"], failure.message])) from None
                raise Failure(Exit.OFFSITE_FAILED, f"{failure.message}; the local repository verified whole") from None
            verified["snapshots"] += len(snapshots)
            verified["backups"] += sum(1 for s in snapshots if "base" in (s.get("tags") or []))
        verified["repositories"] = len(settings.repositories)
        verified["seconds"] = round(time.monotonic() - started, 1)
        return verified


# --- restore to a time -------------------------------------------------------------------------

START_TIMEOUT = 600  # seconds a scratch server may take to start (InnoDB's recovery of a big base)
PREPARE_TIMEOUT = 12 * 3600
REPLAY_TIMEOUT = 12 * 3600
ROOM = 256 << 20  # bytes beside the base and the logs: the scratch server's own files
# What the scratch server must share with the server the base came from (its backup-my.cnf).
COPIED_OPTIONS = (
    "innodb_page_size",
    "innodb_data_file_path",
    "innodb_undo_tablespaces",
    "innodb_log_file_size",
    "innodb_checksum_algorithm",
)


def floor_epoch(target):
    """TARGET (pitr.utc_text) in whole seconds: the binary log stamps its
    events to the second, and a replay stops at the first event stamped at or
    after it, so no write after the moment comes back."""
    return datetime.datetime.strptime(target[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC).timestamp()


class MariaScratch(pitr.Scratch):
    """A MariaDB server beside the live one, in SETTINGS.scratch_dir (TOP):

        TOP/                      root, 0755
            .djangoops-pitr       root: TOP is this command's, it may be removed
            my.cnf                root:mysql 0640: the server's whole configuration
            mariadbd.pid          root: start-stop-daemon's, to stop it
            binlog/               root, 0700: the archived logs it replays
            data/                 mysql, 0700: the base, prepared, and the server's log
            run/                  mysql:GROUP, 0750: the socket, for the project user

    The base the moment needs comes from the local repository, the logs from
    the archive's spool; the server replays them up to the moment, with no
    binary log of its own, no events and no replication."""

    def __init__(self, runner, settings, group_id, mysql, say):
        super().__init__(runner, settings, group_id, mysql, say)
        self.mysql = mysql  # (uid, gid)
        self.socket = os.path.join(self.socket_dir, "mysqld.sock")
        self.binlog = os.path.join(self.top, "binlog")
        self.pid_file = os.path.join(self.top, "mariadbd.pid")
        self.config = os.path.join(self.top, "my.cnf")
        self.spool = Spool(settings.spool_dir)
        self.restic = Restic(runner, settings)
        self.base = None
        self.logs = []
        self.replayed = ""

    def as_mysql(self, *argv):
        return ["runuser", "-u", "mysql", "--", *argv]

    # --- stop and remove (pitr.Scratch.remove calls stop) ----------------------------------

    def stop(self):
        """Stop the scratch server if it runs (by its pid file, and only that
        program): TERM, then KILL after STOP_TIMEOUT. Nothing in it is kept."""
        if not os.path.exists(self.pid_file):
            return
        # By its name, not --exec: /proc/PID/exe of mysql's process is not root's to read where
        # root lacks CAP_SYS_PTRACE (a container), and the stop would then find nothing to stop.
        argv = ["start-stop-daemon", "--stop", "--pidfile", self.pid_file, "--name", "mariadbd"]
        try:
            retry = f"TERM/{pitr.STOP_TIMEOUT}/KILL/5"
            self._run([*argv, "--retry", retry], pitr.STOP_TIMEOUT + 30, ok_codes=(0, 1))
        except CommandFailed as failed:
            raise Failure(
                Exit.INTERNAL, f"could not stop the scratch server in {self.top}: {failed.reason()}"
            ) from None

    # --- build ----------------------------------------------------------------------------

    def prepare(self):
        """TOP made afresh, with its marker and directories."""
        self.make_top("server")
        os.mkdir(self.binlog, 0o700)
        os.chmod(self.top, 0o755)

    def choose(self, target):
        """The base to replay from for TARGET, and the archived logs from it:
        Failure(RESTORE_FAILED) when the archive cannot reach TARGET."""
        moment = floor_epoch(target)
        state = self.spool.state()
        timeline = state.get("timeline")
        through = float(((state.get("repositories") or {}).get("local") or {}).get("through") or 0)
        if moment > through:
            held = pitr.utc_text(datetime.datetime.fromtimestamp(through, datetime.UTC)) if through else "nothing"
            raise Failure(
                Exit.RESTORE_FAILED,
                pitr.unchanged(
                    f"the archive holds the writes up to {held}, not to {target}: choose an earlier time, or wait "
                    "for the next pass of pitr_archive_db.sh"
                ),
            )
        bases = [
            b
            for b in self.spool.bases()
            if isinstance(b, dict) and b.get("timeline") == timeline and float(b.get("ended_at") or 0) <= moment
        ]
        if not bases:
            raise Failure(
                Exit.RESTORE_FAILED,
                pitr.unchanged(f"no base of the archive ends before {target}: there is nothing to replay from"),
            )
        base = max(bases, key=lambda b: float(b["ended_at"]))
        gap = state.get("gap")
        if gap and gap.get("timeline") == timeline:
            raise Failure(
                Exit.RESTORE_FAILED,
                pitr.unchanged(f"the archive misses binary logs after {gap.get('after')}: take a base, then restore"),
            )
        first = binlog_number(base["file"])
        logs = [n for n in self.spool.files(timeline) if binlog_number(n) >= first]
        if not logs or logs[0] != base["file"]:
            raise Failure(
                Exit.RESTORE_FAILED,
                pitr.unchanged(f"the archive lacks {base['file']}, where the base {base['label']} ends"),
            )
        self.base = base
        self.logs = [os.path.join(self.spool.timeline_dir(timeline), n) for n in logs]
        return base

    def check_room(self):
        """Room for the base (the stream's size) and the logs, and ROOM more."""
        if self.base is None:
            return
        need = int(self.base.get("stream_bytes") or 0) + sum(os.path.getsize(p) for p in self.logs) + ROOM
        free = self.free_bytes(self.top)
        if free < need:
            raise Failure(
                Exit.NO_SPACE,
                pitr.unchanged(
                    f"only {free >> 20} MiB free in {self.top}; the scratch server needs about {need >> 20} MiB (the "
                    "base and the logs to replay); free some space, or set db_backup_pitr_scratch_dir on another disk"
                ),
            )

    def restore(self, target):
        """The base restic holds, extracted and prepared as mysql; the logs
        from it copied out of the spool (under its lock: retention must not
        remove one half-way)."""
        base = self.choose(target)
        self.check_room()
        self.extract(self.settings.repositories[0], base)
        if not self.spool.lock(wait=LOCK_WAIT):
            raise Failure(Exit.LOCKED, pitr.unchanged(f"the archive's spool stayed locked for {LOCK_WAIT} s"))
        try:
            copied = []
            for path in self.logs:
                target_path = os.path.join(self.binlog, os.path.basename(path))
                shutil.copyfile(path, target_path, follow_symlinks=False)
                copied.append(target_path)
        finally:
            self.spool.unlock()
        self.logs = copied

    def extract(self, repo, base):
        """BASE out of REPO into the data directory, prepared (as mysql)."""
        self.say(f"the base {base['label']} comes out of the {repo.name} repository into {self.data}")
        label = LABEL_TAG + base["label"]
        dump = self.restic.stage(
            repo, "dump", "--host", self.settings.stanza, "--tag", label, "latest", "/base.mbstream"
        )
        extract = Stage(self.as_mysql("mbstream", "-x", "-C", self.data), name="mbstream")
        try:
            self.runner.pipeline([dump, extract], timeout=PREPARE_TIMEOUT, cwd="/")
            self._run(
                self.as_mysql("mariadb-backup", "--prepare", f"--target-dir={self.data}", "--use-memory=256M"),
                PREPARE_TIMEOUT,
            )
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED,
                pitr.unchanged(
                    f"the base {base['label']} could not be restored: {redact(failed.reason(), self.restic.secrets)}"
                ),
            ) from None

    def configure(self):
        """The scratch server's whole configuration (nothing of /etc/mysql):
        its own directory, socket and port on the loopback, no binary log,
        events or replication, and the InnoDB layout of the base."""
        copied = []
        try:
            for line in read_mysqls(os.path.join(self.data, "backup-my.cnf")).splitlines():
                name, equals, value = line.partition("=")
                name = name.strip().replace("-", "_")
                if equals and name in COPIED_OPTIONS and re.fullmatch(r"[A-Za-z0-9_:;.+-]+", value.strip()):
                    copied.append(f"{name}={value.strip()}")
        except FileNotFoundError:
            pass
        lines = [
            "# restore_db.sh --to-time: a scratch server, removed when the restore ends",
            "[mariadbd]",
            f"datadir={self.data}",
            f"socket={self.socket}",
            f"pid-file={os.path.join(self.socket_dir, 'mariadbd.pid')}",
            f"log-error={os.path.join(self.data, 'djangoops-scratch.err')}",
            "bind-address=127.0.0.1",
            f"port={self.settings.scratch_port}",
            "skip-log-bin",
            "skip-slave-start",
            "event-scheduler=DISABLED",
            "performance-schema=OFF",
            "local-infile=0",
            "max-allowed-packet=1G",
            "innodb-buffer-pool-size=256M",
            *copied,
        ]
        self.write("my.cnf", "\n".join(lines) + "\n", 0o640, self.mysql[1])

    def start(self, target):
        """Start it, then replay the logs up to TARGET's second."""
        self.start_server()
        self.replay(target)

    def start_server(self):
        """Start it (mariadbd becomes mysql) and wait until it answers."""
        self.configure()
        argv = ["start-stop-daemon", "--start", "--background", "--make-pidfile", "--pidfile", self.pid_file]
        argv += ["--exec", "/usr/sbin/mariadbd", "--", f"--defaults-file={self.config}", "--user=mysql"]
        try:
            self._run(argv, pitr.QUERY_TIMEOUT)
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED, pitr.unchanged(f"the scratch server did not start: {failed.reason()}")
            ) from None
        started = self.clock()
        while True:
            ping = ["mariadb-admin", "--no-defaults", "--protocol=SOCKET", f"--socket={self.socket}", "--user=root"]
            try:
                self._run([*ping, "ping"], pitr.QUERY_TIMEOUT)
                break
            except CommandFailed:
                if self.clock() - started > START_TIMEOUT:
                    raise Failure(
                        Exit.RESTORE_FAILED,
                        pitr.unchanged(
                            f"the scratch server did not answer within {START_TIMEOUT} s: {self.log_tail()}"
                        ),
                    ) from None
                self.sleep(pitr.POLL)

    def log_tail(self):
        try:
            return " ".join(read_mysqls(os.path.join(self.data, "djangoops-scratch.err")).splitlines()[-3:])
        except OSError:
            return "its log cannot be read"

    def replay(self, target):
        """mariadb-binlog reads every log from the base's position and stops at
        the first event stamped at or after TARGET's second (in UTC: it reads
        the moment in its own time zone); one client session applies them, so
        a temporary table or a transaction spanning two logs holds. TARGET
        None: to the end of the last log."""
        stop = target[:19] if target else None
        up_to = f"up to {stop} UTC" if stop else "to their end"
        self.say(f"the scratch server replays {len(self.logs)} binary logs from {self.base['file']}:"
                 f"{self.base['position']} {up_to}")  # fmt: skip
        reader = Stage(
            [
                "mariadb-binlog",
                "--no-defaults",
                "--verify-binlog-checksum",
                "--skip-gtid-strict-mode",
                f"--start-position={self.base['position']}",
                *([f"--stop-datetime={stop}"] if stop else []),
                *self.logs,
            ],
            env={"TZ": "UTC"},
            name="mariadb-binlog",
        )
        session = ["--protocol=SOCKET", f"--socket={self.socket}", "--user=root"]
        client = Stage(
            ["mariadb", "--no-defaults", *session, "--binary-mode", "--max-allowed-packet=1G"], name="mariadb"
        )
        try:
            self.runner.pipeline([reader, client], timeout=REPLAY_TIMEOUT, cwd="/")
        except CommandFailed as failed:
            raise Failure(
                Exit.RESTORE_FAILED, pitr.unchanged(f"replaying the binary logs failed: {failed.reason()}")
            ) from None
        self.replayed = f"{os.path.basename(self.logs[-1])} {up_to}"

    # --- a lost server rebuilt (recover.yml -e pitr=true) ------------------------------------

    def rebuild(self, datadir, service="mariadb"):
        """This new server's MariaDB replaced by the lost one's, from the
        bucket: its newest binlog snapshot (the logs and the bases' catalogue),
        the newest base of the newest timeline there, and every log archived
        after it replayed to its end, in the scratch server; then MariaDB
        stopped, DATADIR set aside and the rebuilt one moved in, and started.
        Refused where this server archives already (its spool has a state)."""
        if os.path.exists(self.spool.state_file) or os.path.exists(self.spool.bases_file):
            raise Failure(
                Exit.REFUSED,
                f"this server already archives its binary logs ({self.spool.dir}): it is not a new server, and its "
                "databases are not replaced. To bring a database back to a moment, use restore_db.sh --to-time. "
                "Nothing was changed.",
            )
        offsite = [r for r in self.settings.repositories if r.name == "offsite"]
        if not offsite:
            raise Failure(Exit.CONFIG, "there is no off-site repository (db_backup_pitr_s3) to rebuild from")
        (repo,) = offsite
        started = self.clock()
        self.prepare()
        archive = os.path.join(self.top, "archive")
        self.say(f"restic restores the newest binlog snapshot of the {repo.name} repository")
        try:
            self.restic.run(
                repo, "restore", "latest", "--host", self.settings.stanza, "--tag", "binlog", "--target", archive,
                timeout=PREPARE_TIMEOUT, stdout=DEVNULL,
            )  # fmt: skip
        except Failure as failure:
            raise Failure(Exit.OFFSITE_FAILED, f"{failure.message}. Nothing was changed.") from None
        found = [d for d, _dirs, names in os.walk(archive) if "bases.json" in names and os.path.isdir(f"{d}/binlog")]
        bases = Spool._read(os.path.join(found[0], "bases.json"), []) if found else []
        bases = [b for b in bases if isinstance(b, dict) and b.get("timeline") and b.get("file")]
        if not bases:
            raise Failure(
                Exit.BAD_BACKUP, f"the {repo.name} repository holds no base to rebuild from. Nothing was changed."
            )
        timeline = max(b["timeline"] for b in bases)
        base = max((b for b in bases if b["timeline"] == timeline), key=lambda b: float(b.get("ended_at") or 0))
        logs_dir = os.path.join(found[0], "binlog", timeline)
        names = sorted(
            (n for n in os.listdir(logs_dir) if (binlog_number(n) or 0) >= binlog_number(base["file"])),
            key=binlog_number,
        )
        if not names or names[0] != base["file"]:
            raise Failure(
                Exit.BAD_BACKUP,
                f"the {repo.name} repository lacks {base['file']}, where the base {base['label']} ends. "
                "Nothing was changed.",
            )
        self.base = base
        self.logs = [os.path.join(logs_dir, n) for n in names]
        self.extract(repo, base)
        self.start_server()
        self.replay(None)
        self.stop()
        os.unlink(self.pid_file)
        _remove(os.path.join(self.data, "djangoops-scratch.err"))
        datadir = os.path.normpath(datadir)
        aside = f"{datadir}.before-pitr-{utc_label(time.time())}"
        self.say(f"MariaDB is stopped, what {datadir} held moved to {aside} and the rebuilt files moved in")
        self._run(["systemctl", "stop", service], pitr.STOP_TIMEOUT + 30)
        # The directory itself stays (its owner, mode and mount); what it holds moves.
        info = os.stat(datadir)
        os.mkdir(aside, 0o700)
        os.chown(aside, info.st_uid, info.st_gid)
        for name in sorted(os.listdir(datadir)):
            self.move(os.path.join(datadir, name), os.path.join(aside, name))
        for name in sorted(os.listdir(self.data)):
            self.move(os.path.join(self.data, name), os.path.join(datadir, name))
        self._run(["systemctl", "start", service], START_TIMEOUT)
        self.remove()
        took = self.clock() - started
        return {
            "base": base["label"],
            "timeline": timeline,
            "logs": len(names),
            "last_log": names[-1],
            "aside": aside,
            "seconds": round(took, 1),
        }

    def move(self, source, target):
        """SOURCE renamed to TARGET; across file systems (or out of a
        container image's lower layer, which overlayfs will not rename), copied
        with its owners by cp -a, then removed."""
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._run(["cp", "-a", "--", source, target], PREPARE_TIMEOUT)
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.rmtree(source)
            else:
                os.unlink(source)

    def wait_promoted(self):
        return self.replayed
