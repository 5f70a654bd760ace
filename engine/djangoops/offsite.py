"""Off-site copies of the backup sets, with restic: push, list, fetch and check.

Ported from roles/db_backup/files/offsite.sh and the off-site parts of db.sh
(main_push, main_fetch, main_check_offsite, the OFF-SITE column of main_list),
with the same restic invocations, tags, log lines and exit codes, so that
repositories written by the shell version are read here and the other way
round, and so that monitoring and people grepping the logs see what they saw.

A set in a repository is one snapshot of its files (dump, checksums, manifest,
media archive), tagged djangoops, set=NAME, sha256=SHA (of the dump) and
kind=KIND, with host = the project name and the time the set was taken, so
that restic's own retention (`forget --group-by host`) applies to sets.

Every secret stays in a 0600 file of the off-site directory and reaches restic
through its environment or a file name, never a command line:

    password          the repository password (RESTIC_PASSWORD_FILE)
    NAME.key          the SSH key of an ssh repository
    NAME.known_hosts  its host key
    NAME.s3           AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=... of an s3 one

What restic prints can quote them back (a URL with the key, a password echoed
in an error), so every line taken from its output is redacted before it
reaches the log or a message.

Only snapshots that the repository's record of arrivals vouches for are
taken as sets (_held, arrivals.judge): the backup host's record, read through
the key's forced command, or the bucket's first versions; a planted snapshot
(dated after it arrived, a second copy under a set's name) is warned about,
never listed, fetched or counted as pushed.

A set is pushed from hard links of its files in .offsite-push (PIN), so that
the backups' retention, under the other lock, can remove it meanwhile; a
snapshot that restic stored without all of a set (its exit 3) is recorded in
NAME.incomplete of the off-site directory and counts for nothing here: the set
is pushed again.

The caller holds the locks: the off-site lock (.offsite.lock) around
push_all, push_repo and check_all, which change or lock a repository; the
backups lock (.lock) around fetch, which publishes into the backups directory
or stages there. where() and sets() read with --no-lock and need neither.
Nothing here writes the command's own job metrics: whether a failed push
fails the command is the caller's decision.
"""

import atexit
import json
import os
import re
import shutil
import time
from typing import NamedTuple

from . import arrivals, manifest, metrics, s3, sets
from .config import Repository
from .errors import Exit, Failure
from .log import format_seconds, redact
from .runner import CAPTURE, DEVNULL, CommandFailed

RESTIC = "restic"
TAG = "djangoops"
# restic's progress lines once a minute: enough to see a push is alive in the
# output file, few enough not to fill it.
PROGRESS_FPS = "0.0166"
# Not a *.partial name: remove_stale_partials of another command must not
# take it while a fetch or a verify is using it.
STAGING = ".fetch-staging"
# Hard links of the set being pushed (in the backups directory, so on its file
# system): the backups' retention, which runs under the other lock, may remove
# the set meanwhile, and the push still reads it whole.
PIN = ".offsite-push"
# A set dated more than this ahead of the clock was taken under a wrong clock.
FUTURE_SECONDS = 86400
# How long pending() waits for each repository's answer.
PENDING_SECONDS = 120
# How long restic's unlock may take after a push that was stopped.
UNLOCK_SECONDS = 60
# How long ssh may take to say why it cannot get in.
SSH_PROBE_SECONDS = 30
# zstd -t / gzip -t of a fetched file: bounded, never endless.
TEST_SECONDS = 3600
# What restic says when a lock blocks it (the quotes around `unlock` vary).
STALE_LOCK = re.compile(r"unlock. command can be used")
TIMEOUT_SETTING = "db_backup_offsite_timeout_seconds"
# Lines of a multi-line password shorter than this are not redacted on their own.
MIN_SECRET_LINE = 8
# How much of a restic output file is read back: its end says how it went.
TAIL_BYTES = 1 << 20

# What restic asks a backup host to run when it only reads: the forced
# command (offsite_host's offsite-client) then serves the repository
# read-only, and a full quota does not stop it.
READ_ONLY = "djangoops-read"
# The backup host's quota: its forced command's refusal, and what rclone says
# when a push reaches it midway (offsite-client's --max-transfer).
QUOTA_REFUSED = re.compile(r"djangoops: quota: .*")
QUOTA_REACHED = "max transfer limit reached"
# ssh's own words (refused, key, host key) and a full disk say more than the
# restic error that follows them; then restic's Fatal line.
SSH_WORDS = re.compile(
    r"(^|rclone: )ssh: |Permission denied|Host key verification failed|REMOTE HOST IDENTIFICATION"
    r"|[Nn]o space left|[Dd]isk quota"
)
RESTIC_WORDS = re.compile(r"^Fatal: |^error: |wrong password|no key found")
SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


class RepositoryError(Failure):
    """A repository could not be reached, read or written. MESSAGE is the
    warning line that says which one, what was being done and why."""

    def __init__(self, repo, message):
        super().__init__(Exit.OFFSITE_FAILED, message)
        self.repo = repo


class Push(NamedTuple):
    """What push_repo did to one repository: OK when it holds every local set
    now; PUSHED the sets sent, oldest first; MISSING the local sets it still
    lacks (-1: it could not be read); ADDED bytes after deduplication."""

    repo: str
    ok: bool
    pushed: tuple[str, ...]
    missing: int
    added: int
    seconds: float


class Where(NamedTuple):
    """Which repositories hold each set (NAME@SHA256 -> "repo,repo", in the
    configured order: the OFF-SITE column as offsite_where printed it), and
    the repositories that could not be read: those are left out of HOLDERS,
    which then says nothing about them."""

    holders: dict[str, str]
    unreadable: tuple[str, ...]


def error_line(text):
    """The line of restic's output that says what went wrong (offsite_error):
    the backup host's quota first, then ssh's own words, then restic's Fatal
    line, then the last line."""
    refused = QUOTA_REFUSED.findall(text)
    if refused:
        return refused[-1]
    if QUOTA_REACHED in text:
        return (
            "djangoops: quota: the backup host stopped the push at this repository's quota "
            f"(offsite_host_clients): rclone says {QUOTA_REACHED}"
        )
    lines = text.splitlines()
    for pattern in (SSH_WORDS, RESTIC_WORDS):
        found = [line for line in lines if pattern.search(line)]
        if found:
            return found[-1]
    found = [line for line in lines if line.strip()]
    return found[-1] if found else "no message"


# A restic time (RFC 3339, nanoseconds) in whole seconds since the epoch, as
# `date -d TIME +%s` gave it; ValueError when it is not a time.
snapshot_epoch = arrivals.epoch


def iec(size):
    """SIZE in bytes as `numfmt --to=iec` writes it: 1024-based, rounded up,
    one decimal below 10."""
    size = int(size)
    if size < 1024:
        return str(size)
    units = "KMGTPE"
    power = 1
    while power < len(units) and size >= 1024 ** (power + 1):
        power += 1
    while True:
        scale = 1024**power
        tenths = -(-size * 10 // scale)
        if tenths < 100:
            return f"{tenths // 10}.{tenths % 10}{units[power - 1]}"
        whole = -(-size // scale)
        if whole < 1024 or power == len(units):
            return f"{whole}{units[power - 1]}"
        power += 1  # 1023.1K rounds up to 1024K: that is 1.0M


class Offsite:
    """The off-site repositories of PROJECT (config.Project), as SETTINGS
    (config.Offsite) describe them, reached through RUNNER and reported to LOG.
    RUN_DIR is the run's private directory: restic's output files go there.

    ENGINE (the database engine's name) is checked against a fetched set's
    manifest; without it the manifest's own is taken, and the restore or test
    restore that follows refuses a set of another engine. TEST_COMPRESSION
    (path -> bool) replaces zstd -t / gzip -t through the runner. ON_EXIT
    (path -> None, e.g. Context.cleanup_on_exit) removes a staged fetch when
    the command ends; without it, the interpreter's exit does. CLOCK (seconds
    since the epoch), MONOTONIC and WHICH are for tests."""

    def __init__(
        self,
        runner,
        log,
        project,
        settings,
        run_dir,
        *,
        engine=None,
        test_compression=None,
        on_exit=None,
        clock=time.time,
        monotonic=time.monotonic,
        which=shutil.which,
        s3_client=s3.Client,
    ):
        self.runner = runner
        self.log = log
        self.project = project
        self.settings = settings
        self.run_dir = run_dir
        self.engine = engine
        self.test_compression = test_compression or self._test_compression
        self.on_exit = on_exit
        self.clock = clock
        self.monotonic = monotonic
        self.which = which
        self.s3_client = s3_client
        self.backups_dir = project.backups_dir
        self.staging = os.path.join(project.backups_dir, STAGING)
        self._deadlines = {}
        self._exit_registered = False
        # Per repository: when each snapshot arrived (None: no record), and
        # the refusals already told in this run.
        self.arrived = {}
        self._told = set()

    # --- the repositories ------------------------------------------------------------------

    @property
    def repositories(self):
        return self.settings.repositories

    def repository(self, repo):
        """REPO (a config.Repository, or the name of a configured one) as a
        config.Repository; Failure(USAGE) for a name not configured."""
        if isinstance(repo, Repository):
            return repo
        found = self.settings.repository(repo)
        if found is None:
            configured = " ".join(r.name for r in self.repositories) or "none"
            raise Failure(Exit.USAGE, f"no off-site repository named '{repo}'; configured: {configured}")
        return found

    def require_restic(self):
        if self.which(RESTIC) is None:
            raise Failure(
                Exit.CONFIG,
                "restic is not installed, but off-site repositories are configured (db_backup_offsite_repositories)",
            )

    def ssh_command(self, repo):
        """How restic reaches an ssh repository, as argv. restic splits the
        rclone.program option at spaces, so no part may hold one."""
        directory = self.settings.dir
        if re.search(r"\s", directory):
            raise Failure(
                Exit.CONFIG,
                f"the off-site directory {directory} holds a space, which restic's rclone.program cannot carry",
            )
        return [
            "ssh",
            "-i",
            os.path.join(directory, f"{repo.name}.key"),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            f"UserKnownHostsFile={os.path.join(directory, f'{repo.name}.known_hosts')}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-p",
            str(repo.port),
            f"{repo.user}@{repo.host}",
        ]

    def _start(self, repo):
        """One time limit per repository and run: every restic call against
        REPO from now on shares what is left of it."""
        deadline = self._deadlines[repo.name] = self.monotonic() + self.settings.timeout
        return deadline

    def _left(self, repo):
        deadline = self._deadlines.get(repo.name) or self._start(repo)
        # Past the deadline, a call still gets a second: it fails as timed out
        # with restic's last words rather than not running at all.
        return max(1.0, deadline - self.monotonic())

    def _s3_keys(self, repo):
        path = os.path.join(self.settings.dir, f"{repo.name}.s3")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise RepositoryError(
                repo.name, f"off-site repository {repo.name}: its S3 keys cannot be read from {path} ({why})"
            ) from None
        keys = {}
        # Every line, the last one too when it has no newline (the shell's
        # `while read` loop dropped it).
        for line in text.splitlines():
            key, _eq, value = line.partition("=")
            if key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                keys[key] = value.rstrip("\r")
        if keys.get("AWS_SECRET_ACCESS_KEY"):
            self.log.hide(keys["AWS_SECRET_ACCESS_KEY"])
        return keys

    def _secrets(self, repo):
        """What must never be quoted from restic's output: the password, and
        an s3 repository's secret key."""
        found = []
        try:
            with open(os.path.join(self.settings.dir, "password"), encoding="utf-8", errors="replace") as f:
                password = f.read()
        except OSError:
            password = ""
        # restic takes the file's content trimmed of white space; a line of a
        # longer one is hidden too, unless so short that hiding it would blank
        # out ordinary words.
        found.append(password.strip())
        found.extend(line.strip() for line in password.splitlines() if len(line.strip()) >= MIN_SECRET_LINE)
        if repo.type == "s3":
            try:
                found.append(self._s3_keys(repo).get("AWS_SECRET_ACCESS_KEY", ""))
            except RepositoryError:
                pass
        return [secret for secret in found if secret]

    def _run(self, repo, args, *, stdout=CAPTURE, cwd="/", read=False):
        """restic ARGS against REPO within what is left of its time. The
        repository's address and keys go into restic's environment only.
        READ: ARGS only read (--no-lock), and a backup host serves them
        read-only, over its quota too. Raises CommandFailed, or
        RepositoryError when the keys cannot be read."""
        env = {
            "RESTIC_PASSWORD_FILE": os.path.join(self.settings.dir, "password"),
            "RESTIC_CACHE_DIR": os.path.join(self.project.home, ".cache", "restic"),
            "RESTIC_PROGRESS_FPS": PROGRESS_FPS,
        }
        options = []
        if repo.type == "ssh":
            # The backup host's forced command decides what runs there (an
            # append-only `rclone serve restic --stdio`, on the key's own
            # repository): what restic asks ssh to run only chooses a
            # read-only server, so the repository is named by the key alone.
            env["RESTIC_REPOSITORY"] = f"rclone:{repo.name}:"
            options = ["-o", "rclone.program=" + " ".join(self.ssh_command(repo))]
            if read:
                options += ["-o", f"rclone.args={READ_ONLY}"]
        else:
            env["RESTIC_REPOSITORY"] = repo.url
            env.update(self._s3_keys(repo))
        return self.runner.run(
            [RESTIC, *options, *args], env=env, stdout=stdout, cwd=cwd, timeout=self._left(repo), name=RESTIC
        )

    def _restic(self, repo, what, args, **kwargs):
        """_run, a failure told as RepositoryError (WHAT: what was being done)."""
        try:
            return self._run(repo, args, **kwargs)
        except CommandFailed as failed:
            raise RepositoryError(repo.name, self._describe(repo, what, failed)) from None

    def ssh_problem(self, repo):
        """When ssh itself cannot get in (refused, key, host key): its own
        words, asked for again, since restic may end before ssh says them.
        None when ssh gets in, or says nothing."""
        try:
            self.runner.run(self.ssh_command(repo), stdout=DEVNULL, timeout=SSH_PROBE_SECONDS, name="ssh")
        except CommandFailed as failed:
            if failed.timed_out or failed.returncode != 255:
                return None
            lines = [line for line in failed.stderr.splitlines() if line.strip()]
            return lines[-1] if lines else None
        return None

    def _describe(self, repo, what, failed, output=None):
        """The warning for a restic run that failed (offsite_failed). OUTPUT
        is what restic printed, when more than its stderr."""
        secrets = self._secrets(repo)
        text = redact(failed.stderr if output is None else output, secrets)
        where = f"off-site repository {repo.name}: {what}"
        if failed.timed_out:
            last = f"; restic kept retrying after: {error_line(text)}" if text.strip() else ""
            return f"{where} did not finish within {self.settings.timeout} s ({TIMEOUT_SETTING}){last}"
        if failed.returncode is None:
            # restic never ran (not installed, not executable).
            return f"{where} failed: {redact(failed.reason(), secrets)}"
        code = 128 + failed.signal if failed.signal is not None else failed.returncode
        why = None
        if repo.type == "ssh":
            problem = self.ssh_problem(repo)
            if problem:
                # ssh starts some of its messages with its name already.
                why = redact(problem if problem.startswith("ssh: ") else f"ssh: {problem}", secrets)
        if why is None:
            why = error_line(text)
        return f"{where} failed (restic exit {code}): {why}"

    # --- reading a repository --------------------------------------------------------------

    def sets(self, repo):
        """The sets REPO holds (manifest.Snapshot), oldest first. Raises
        RepositoryError, whose message is the warning to log, when the
        repository cannot be reached or read, or restic's answer cannot be
        understood: a failed listing is never an empty one."""
        repo = self.repository(repo)
        self._start(repo)
        return self._sets(repo)

    def _sets(self, repo):
        result = self._restic(
            repo,
            "reading its snapshots",
            ["snapshots", "--json", "--no-lock", "--host", self.project.name, "--tag", TAG],
            read=True,
        )
        try:
            held = manifest.snapshots(result.stdout, self.project.name)
            for snapshot in held:
                snapshot_epoch(snapshot.time)
        except (ValueError, TypeError, AttributeError) as exc:
            raise RepositoryError(
                repo.name,
                f"off-site repository {repo.name}: reading its snapshots failed: restic's answer is not a list "
                f"of snapshots ({exc})",
            ) from None
        return held

    def _arrivals(self, repo):
        """When each snapshot of REPO arrived, as its backup host recorded it
        ({id: epoch}), read through the key's forced command, or for an s3
        repository the oldest version of each snapshot object; None when the
        repository keeps no such record (a backup host whose offsite_host role
        predates it, a bucket without versioning). Raises RepositoryError."""
        if repo.type == "s3":
            return self._bucket_arrivals(repo)
        try:
            result = self.runner.run(
                [*self.ssh_command(repo), arrivals.HEADER.split()[0]],
                timeout=self._left(repo),
                name="ssh",
            )
        except CommandFailed as failed:
            secrets = self._secrets(repo)
            if failed.timed_out:
                why = f"no answer within {self.settings.timeout} s ({TIMEOUT_SETTING})"
            elif failed.returncode is None:
                why = redact(failed.reason(), secrets)
            else:
                why = redact(error_line(failed.stderr), secrets)
            raise RepositoryError(
                repo.name, f"off-site repository {repo.name}: reading when its snapshots arrived failed: {why}"
            ) from None
        try:
            found = arrivals.parse(result.stdout)
        except ValueError as exc:
            raise RepositoryError(
                repo.name,
                f"off-site repository {repo.name}: reading when its snapshots arrived failed: the backup host's "
                f"answer cannot be read ({exc})",
            ) from None
        if found is None:
            self._tell(
                ("no record", repo.name),
                f"off-site repository {repo.name}: its backup host keeps no record of when snapshots arrived "
                "(apply the offsite_host role to it again): its snapshots are taken as they claim",
            )
        return found

    def _bucket_arrivals(self, repo):
        keys = self._s3_keys(repo)
        try:
            bucket = self.s3_client(
                repo.url,
                keys.get("AWS_ACCESS_KEY_ID", ""),
                keys.get("AWS_SECRET_ACCESS_KEY", ""),
                timeout=self._left(repo),
            )
            if bucket.versioning() != "Enabled":
                self._tell(
                    ("no record", repo.name),
                    f"off-site repository {repo.name}: its bucket's versioning is not enabled, so it keeps no "
                    "record of when snapshots arrived (playbooks/offsite_buckets.yml turns it on): its snapshots "
                    "are taken as they claim",
                )
                return None
            found = bucket.arrivals("snapshots")
        except (s3.S3Error, ValueError) as error:
            raise RepositoryError(
                repo.name,
                f"off-site repository {repo.name}: reading when its snapshots arrived failed: "
                f"{redact(str(error), self._secrets(repo))}",
            ) from None
        # (Objects of other names are no snapshots: nothing restic lists is looked up among them.)
        return found

    def _held(self, repo):
        """The sets REPO holds that can be trusted, oldest first: its listing
        without the snapshots this server saw stored incomplete and without
        those that the backup host's record of their arrival refuses
        (arrivals.judge), each refusal warned about once per run. Raises
        RepositoryError."""
        held = self._complete(repo, self._sets(repo))
        # After the listing: whatever it names has arrived by now.
        found = self.arrived[repo.name] = self._arrivals(repo)
        if found is None:
            return held
        judged = arrivals.judge(held, found, self.project.name)
        for refusal in judged.refused:
            self._tell(
                (refusal.snapshot.snapshot_id, repo.name),
                f"off-site repository {repo.name}: {refusal.reason}; it is not taken for the set",
            )
        return judged.genuine

    def _tell(self, key, message):
        if key not in self._told:
            self._told.add(key)
            self.log.warn(message)

    def where(self):
        """Where each set is off-site (Where). A repository that cannot be
        read is warned about and listed as unreadable, never taken as holding
        nothing."""
        holders = {}
        unreadable = []
        if self.repositories:
            self.require_restic()
        for repo in self.repositories:
            self._start(repo)
            try:
                held = self._held(repo)
            except RepositoryError as error:
                self.log.warn(error.message)
                unreadable.append(repo.name)
                continue
            for snapshot in held:
                names = holders.setdefault(f"{snapshot.name}@{snapshot.sha256}", [])
                # A set pushed twice is still held by one repository.
                if repo.name not in names:
                    names.append(repo.name)
        return Where({key: ",".join(names) for key, names in holders.items()}, tuple(unreadable))

    def pending(self, names):
        """Those of local sets NAMES that some repository still lacks and would
        be sent (pushes send what is newer than a repository's newest), or
        that cannot be known to be there: a repository that cannot be read,
        or restic missing. A set older than a repository's newest and not in
        it was forgotten there, or predates its pushes: it is not pending."""
        names = set(names)
        if not names or not self.repositories:
            return set()
        if self.which(RESTIC) is None:
            self.log.warn("restic is not installed: no set can be known to be off-site")
            return names
        pending = set()
        for repo in self.repositories:
            # A restore asks this at its end: a repository that hangs keeps the
            # set here, rather than the restore waiting for it.
            self._deadlines[repo.name] = self.monotonic() + min(self.settings.timeout, PENDING_SECONDS)
            try:
                held = self._held(repo)
            except RepositoryError as error:
                self.log.warn(error.message)
                return names
            pending.update(names.intersection(self._missing(repo, held)))
        return pending

    # --- the local sets ----------------------------------------------------------------------

    def local_sha256(self, name, directory=None):
        """The dump's sha256 as local set NAME's checksum file (in DIRECTORY,
        default the backups directory) says, or None when that file cannot be
        read or holds no sha256."""
        try:
            sha = manifest.sidecar_sha256(os.path.join(directory or self.backups_dir, f"{name}.sha256"))
        except (OSError, UnicodeDecodeError):
            return None
        return sha if SHA256_HEX.match(sha) else None

    def local_set_id(self, name):
        """NAME@SHA256 of local set NAME (what where() keys by), or None."""
        sha = self.local_sha256(name)
        return None if sha is None else f"{name}@{sha}"

    def set_epoch(self, name, directory=None):
        """When local set NAME was taken: its name's stamp, or the file's (in
        DIRECTORY, default the backups directory) modification time for
        weekday names, in seconds since the epoch."""
        stamped = arrivals.stamp_epoch(name, self.project.name)
        if stamped is not None:
            return stamped
        # A weekday name (or a stamp no calendar has): the file's time says when.
        return int(os.stat(os.path.join(directory or self.backups_dir, name)).st_mtime)

    def _local_sets(self):
        """(epoch, name) of every local set that goes off-site, oldest first:
        safety backups too (tagged kind=safety: the writes since the last
        backup before a restore are in them only), but not a set without its
        checksum file, which is not whole."""
        found = []
        for name in sets.list_sets(self.backups_dir, self.project.name):
            if not os.path.isfile(os.path.join(self.backups_dir, f"{name}.sha256")):
                continue
            try:
                found.append((self.set_epoch(name), name))
            except FileNotFoundError:
                continue  # removed since it was listed
        return sorted(found)

    # --- pushing ------------------------------------------------------------------------------

    def push_all(self):
        """Push to every repository; one failing does not stop the others.
        Returns the Push of each; raises Failure(OFFSITE_FAILED) at the end
        when any failed. The local sets are already published: nothing here
        touches them."""
        if not self.repositories:
            return []
        self.require_restic()
        done = [self.push_repo(repo) for repo in self.repositories]
        failed = [push.repo for push in done if not push.ok]
        if failed:
            raise Failure(
                Exit.OFFSITE_FAILED,
                f"the off-site copy to {' '.join(failed)} failed; the local backup is published, and the next "
                "run (or push_db_backups.sh) pushes every set still missing",
            )
        return done

    def push_repo(self, repo):
        """Every local set newer than REPO's newest, oldest first (Push), and
        the repository's metrics file written.

        Only sets newer than the repository's newest are missing: the others
        were pushed, or forgotten by the off-site retention
        (playbooks/offsite_prune.yml, which keeps the newest set of a week or
        month where the local retention keeps the first), and must not come
        back. Pushes go oldest first and stop at the first failure, so a
        failed run leaves no gap for this to skip."""
        repo = self.repository(repo)
        started = self.monotonic()
        self._start(repo)
        ok, added, missing, pushed = False, 0, -1, []
        try:
            if self._init(repo):
                todo = self._missing(repo, self._held(repo))
                missing = len(todo)
                if not todo:
                    self.log.info(f"off-site repository {repo.name}: holds every local set already")
                ok = True
                for name in todo:
                    sent = self._push_set(repo, name)
                    missing -= 1
                    if sent is not None:
                        added += sent
                        pushed.append(name)
        except RepositoryError as error:
            self.log.warn(error.message)
            ok = False
        seconds = self.monotonic() - started
        warning = metrics.write_offsite_metrics(
            self.project.metrics_dir, self.project.name, repo.name, ok, added, seconds, missing, now=self.clock()
        )
        if warning:
            self.log.warn(warning)
        return Push(repo.name, ok, tuple(pushed), missing, added, seconds)

    def _init(self, repo):
        """Create REPO unless this server knows it exists (a marker in the
        off-site directory). `restic init` on an existing one only fails, fast
        and harmlessly; looking first would not be fast: restic retries a
        missing bucket until its time runs out. False (warned) when it could
        not be created."""
        marker = os.path.join(self.settings.dir, f"{repo.name}.initialized")
        if os.path.isfile(marker):
            return True
        try:
            self._run(repo, ["init"], stdout=DEVNULL)
        except CommandFailed as failed:
            if "already exists" not in failed.stderr and "already initialized" not in failed.stderr:
                self.log.warn(self._describe(repo, "creating it", failed))
                return False
        else:
            self.log.info(f"off-site repository {repo.name}: created")
        try:
            with open(marker, "a"):
                pass
        except OSError as exc:
            # Harmless: the next run tries `restic init` again.
            self.log.warn(f"could not write {marker} ({exc.strerror})")
        return True

    def _missing(self, repo, held):
        """The local sets REPO lacks, oldest first: those newer than its newest
        set that it does not hold (HELD: the sets it can be trusted to hold,
        _held). A set dated more than a day ahead (a clock that was wrong)
        would stop every push until then: it does not count."""
        have = {f"{s.name}@{s.sha256}" for s in held}
        future = self.clock() + FUTURE_SECONDS
        newest = 0
        for snapshot in held:
            epoch = snapshot_epoch(snapshot.time)
            if epoch > future:
                self.log.warn(
                    f"off-site repository {repo.name} holds {snapshot.name}, dated {snapshot.time}, in the future; "
                    "it is not taken as the newest"
                )
            elif epoch > newest:
                newest = epoch
        return [name for epoch, name in self._local_sets() if epoch > newest and self.local_set_id(name) not in have]

    # --- snapshots that restic stored incomplete -----------------------------------------------

    def _incomplete_path(self, repo):
        return os.path.join(self.settings.dir, f"{repo.name}.incomplete")

    def incomplete(self, repo):
        """The ids of the snapshots of REPO that a push here saw restic store
        incomplete (exit 3: some of the set could not be read): they hold no
        set, and the set is pushed again."""
        try:
            with open(self._incomplete_path(repo), encoding="utf-8", errors="replace") as f:
                return {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            return set()
        except OSError as exc:
            self.log.warn(
                f"could not read {self._incomplete_path(repo)} ({exc.strerror}): the incomplete snapshots "
                "it names are taken as whole"
            )
            return set()

    def _record_incomplete(self, repo, snapshot_id):
        try:
            with open(self._incomplete_path(repo), "a", encoding="utf-8") as f:
                f.write(f"{snapshot_id}\n")
        except OSError as exc:
            self.log.warn(f"could not record the incomplete snapshot {snapshot_id} ({exc.strerror})")

    def _complete(self, repo, held):
        """HELD without the snapshots this server knows to be incomplete. restic's
        backup summary may give the short id (its first 8 hex digits): a
        recorded id matches the snapshot whose id it begins."""
        incomplete = tuple(i for i in self.incomplete(repo) if len(i) >= 8)
        return [snapshot for snapshot in held if not snapshot.snapshot_id.startswith(incomplete or ("\0",))]

    # --- the set being pushed, pinned ----------------------------------------------------------

    def _pin(self, files):
        """Hard links of FILES (names in the backups directory) in a directory
        of the push's own; None when one of them is gone (the retention
        removed the set before it could be pushed)."""
        pin = os.path.join(self.backups_dir, PIN)
        try:
            self._unpin()
            os.mkdir(pin, 0o700)
            for file in files:
                os.link(os.path.join(self.backups_dir, file), os.path.join(pin, file), follow_symlinks=False)
        except FileNotFoundError:
            self._unpin()
            return None
        except OSError as exc:
            # A file system without hard links: the set as it lies.
            self._unpin()
            self.log.warn(
                f"could not link the set's files in {pin} ({exc.strerror}); pushing them from "
                f"{self.backups_dir}, where a backup's retention could remove them during the push"
            )
            return self.backups_dir
        return pin

    def _unpin(self):
        pin = os.path.join(self.backups_dir, PIN)
        if os.path.islink(pin) or (os.path.lexists(pin) and not os.path.isdir(pin)):
            os.unlink(pin)
        shutil.rmtree(pin, ignore_errors=True)

    def _push_set(self, repo, name):
        """Local set NAME into REPO, as one snapshot, read from hard links of
        its files (_pin); the bytes it added, or None when the set was removed
        here before it could be pinned. Raises RepositoryError."""
        started = self.monotonic()
        files = [f"{name}.sha256", f"{name}.manifest.json"]
        media = sets.media_name_of(name)
        if os.path.isfile(os.path.join(self.backups_dir, media)):
            files.append(media)
        files.append(name)
        pin = self._pin(files)
        if pin is None:
            self.log.info(f"off-site repository {repo.name}: {name} was removed here before it could be pushed")
            return None
        try:
            # What the snapshot says of the set comes from the files it holds.
            sha = self.local_sha256(name, pin)
            if sha is None:
                raise RepositoryError(
                    repo.name,
                    f"off-site repository {repo.name}: pushing {name} failed: its checksum file "
                    f"{os.path.join(self.backups_dir, name + '.sha256')} holds no sha256",
                )
            # Local time, as restic reads --time.
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.set_epoch(name, pin)))
            return self._push_pinned(repo, name, sha, files, when, pin, started)
        finally:
            self._unpin()

    def _push_pinned(self, repo, name, sha, files, when, pin, started):
        args = [
            "backup",
            "--json",
            "--host",
            self.project.name,
            "--tag",
            TAG,
            "--tag",
            f"set={name}",
            "--tag",
            f"sha256={sha}",
            "--tag",
            f"kind={sets.kind_of(name, self.project.name)}",
            "--time",
            when,
            "--",
            *files,
        ]
        output = os.path.join(self.run_dir, "push.json")
        for attempt in (1, 2):
            try:
                self._run(repo, args, stdout=output, cwd=pin)
                break
            except CommandFailed as failed:
                if failed.returncode == 3:
                    # restic stored a snapshot without all of the set: it must
                    # not count as the set's copy.
                    snapshot_id = backup_summary(_tail(output)).get("snapshot_id")
                    if isinstance(snapshot_id, str) and snapshot_id:
                        self._record_incomplete(repo, snapshot_id)
                    raise RepositoryError(
                        repo.name,
                        f"{self._describe(repo, f'pushing {name}', failed)}; restic stored an incomplete snapshot "
                        f"({snapshot_id or 'id unknown'}), which does not count: the next push sends {name} again",
                    ) from None
                # A killed run's exclusive lock blocks every push.
                if attempt == 1 and STALE_LOCK.search(failed.stderr):
                    self._remove_stale_locks(repo, "trying once more")
                    continue
                message = self._describe(repo, f"pushing {name}", failed)
                if failed.timed_out or failed.signal is not None:
                    self._unlock_after(repo)
                raise RepositoryError(repo.name, message) from None
        added = _data_added(_tail(output))
        self.log.info(
            f"off-site repository {repo.name}: pushed {name} ({iec(added)}B new after deduplication, "
            f"in {format_seconds(self.monotonic() - started)} s)"
        )
        return added

    def _remove_stale_locks(self, repo, then):
        """A run that was killed left its lock, and an exclusive one blocks
        what comes next: restic's unlock removes stale locks only (of
        processes gone from this host, or older than 30 minutes), which even
        an append-only repository allows. THEN says what is done next, which
        says what is wrong when this did not help."""
        self.log.warn(f"off-site repository {repo.name} is locked; removing stale locks and {then}")
        try:
            self._run(repo, ["unlock"], stdout=DEVNULL)
        except CommandFailed:
            pass

    def _unlock_after(self, repo):
        """After a restic that was stopped (its time limit, a signal), which
        left its lock behind: that lock would fail the next check, and the
        controller's prune for half an hour (restic takes another host's lock
        for stale only then). restic's unlock removes this host's stale locks;
        it gets UNLOCK_SECONDS of its own, past the run's time limit."""
        self._deadlines[repo.name] = self.monotonic() + UNLOCK_SECONDS
        try:
            self._run(repo, ["unlock"], stdout=DEVNULL)
        except (CommandFailed, RepositoryError):
            self.log.warn(
                f"off-site repository {repo.name}: the lock the stopped push left could not be removed; "
                "the next push, check or prune tries again"
            )

    # --- fetching -----------------------------------------------------------------------------

    def fetch(self, repo, want="latest", staged=False, before=None):
        """The set WANT (a set name, or latest: the newest the repository
        holds) from REPO into the backups directory, checked against its
        sha256 and manifest before it is published there, data file last.
        Returns the path of its dump. A set already here whole is not
        downloaded again. Only a set whose snapshot the backup host's record
        of arrivals vouches for is taken (_held).

        BEFORE (seconds since the epoch; with latest only): the newest set
        that arrived before then, by the backup host's record: what a server
        held before a break-in, whatever was pushed since.

        STAGED (verify --from): always downloaded, checked the same way, and
        left in the staging directory (self.staging) until remove_staging()
        or the command's end: nothing is published."""
        repo = self.repository(repo)
        self.require_restic()
        self._start(repo)
        try:
            held = self._held(repo)
        except RepositoryError as error:
            self.log.warn(error.message)
            raise Failure(
                Exit.OFFSITE_FAILED, f"off-site repository {repo.name} cannot be read; nothing was fetched"
            ) from None
        if before is not None:
            found = self.arrived.get(repo.name)
            if found is None:
                raise Failure(
                    Exit.USAGE,
                    f"off-site repository {repo.name} keeps no record of when its snapshots arrived: a set cannot "
                    "be chosen by its arrival there; name it instead (list_db_backups.sh lists them)",
                )
            held = [s for s in held if found[s.snapshot_id] < before]
        chosen = self._choose(repo, held, want, before)
        name = chosen.name
        # (Only names of this project's sets come out of manifest.snapshots: the
        # shell's refusal of a foreign name is built into the listing.)
        local = os.path.join(self.backups_dir, name)
        if not staged and os.path.isfile(local) and self.local_set_id(name) == f"{name}@{chosen.sha256}":
            reason = manifest.check_sha256(f"{local}.sha256")
            if reason is None:
                self.log.info(f"{name} (from {repo.name}, taken {chosen.time}) is already here")
                self._check(local)
                return local
            self.log.warn(f"the copy of {name} here fails its sha256 check ({reason}); fetching it again")
        return self._download(repo, chosen, staged)

    def _choose(self, repo, held, want, before=None):
        """The snapshot WANT names among HELD (oldest first): the newest of
        that name, or for latest the newest set not dated in the future (a
        set taken under a wrong clock is not the newest here either), and
        never a safety backup: what a restore replaced is no one's latest."""
        chosen, newest = None, None
        future = self.clock() + FUTURE_SECONDS
        for snapshot in held:
            if want == "latest":
                if sets.kind_of(snapshot.name, self.project.name) == "safety":
                    continue
                # By the time itself: restic's times may carry different offsets.
                epoch = snapshot_epoch(snapshot.time)
                if epoch > future:
                    self.log.warn(
                        f"off-site repository {repo.name} holds {snapshot.name}, dated {snapshot.time}, in the "
                        "future; it is not taken as the newest"
                    )
                elif newest is None or epoch >= newest:
                    chosen, newest = snapshot, epoch
            elif snapshot.name == want:
                chosen = snapshot
        if chosen is None:
            if before is not None:
                raise Failure(
                    Exit.BAD_BACKUP,
                    f"off-site repository {repo.name} holds no backup set of {self.project.name} that arrived "
                    f"before {arrivals.utc(before)}",
                )
            if want == "latest":
                raise Failure(
                    Exit.BAD_BACKUP, f"off-site repository {repo.name} holds no backup set of {self.project.name}"
                )
            raise Failure(
                Exit.BAD_BACKUP,
                f"off-site repository {repo.name} holds no set named {want} (list_db_backups.sh lists them)",
            )
        found = self.arrived.get(repo.name)
        if found is not None:
            self.log.info(
                f"off-site repository {repo.name}: {chosen.name} (snapshot {chosen.snapshot_id[:8]}) arrived "
                f"{arrivals.utc(found[chosen.snapshot_id])}"
            )
        return chosen

    def _download(self, repo, chosen, staged):
        name = chosen.name
        self.remove_staging()  # what a killed fetch left
        tree = os.path.join(self.staging, "tree")
        os.mkdir(self.staging, 0o700)
        keep = False
        try:
            os.mkdir(tree, 0o700)
            self.log.info(f"fetching {name} (taken {chosen.time}) from off-site repository {repo.name}")
            started = self.monotonic()
            # Restored as the snapshot holds it (restic versions lay out the
            # paths differently), then each expected file taken out by name.
            try:
                self._restic(
                    repo,
                    f"fetching {name}",
                    ["restore", "--no-lock", chosen.snapshot_id, "--target", tree],
                    stdout=DEVNULL,
                    read=True,
                )
            except RepositoryError as error:
                self.log.warn(error.message)
                raise Failure(
                    Exit.OFFSITE_FAILED, f"{name} could not be fetched from {repo.name}; nothing was published"
                ) from None
            self._gather(name, tree)
            dump = os.path.join(self.staging, name)
            if not os.path.isfile(dump):
                raise Failure(Exit.BAD_BACKUP, f"off-site set {name} lacks its dump; refusing it")
            # The checks a restore makes (sha256, compression, the manifest's
            # project and engine), before anything is published; then the
            # snapshot's own tag.
            self._check(dump)
            sha = manifest.sidecar_sha256(f"{dump}.sha256")
            if sha != chosen.sha256:
                raise Failure(
                    Exit.BAD_BACKUP,
                    f"{name}, as fetched from {repo.name}, is not the dump its snapshot names "
                    f"(sha256 {chosen.sha256}, its checksum file says {sha}); nothing was published",
                )
            size = iec(os.stat(dump).st_size)
            if staged:
                keep = True
                self._remove_at_exit()
                self.log.info(
                    f"downloaded {name} from {repo.name}: sha256 and manifest good, {size}B in "
                    f"{format_seconds(self.monotonic() - started)} s"
                )
                return dump
            # Published as a backup taken here would be: data last, then the
            # directory flushed.
            path = sets.publish(self.backups_dir, name, staging=self.staging)
            self.log.info(
                f"fetched {name} from {repo.name}: sha256 and manifest good, {size}B in "
                f"{format_seconds(self.monotonic() - started)} s"
            )
            return path
        finally:
            if not keep:
                self.remove_staging()

    def _gather(self, name, tree):
        """Move the files restic restored under TREE into the staging
        directory, by name; anything else refuses the set."""
        expected = {name, f"{name}.sha256", f"{name}.manifest.json", sets.media_name_of(name)}
        seen = set()
        for path, is_file in _walk(tree):
            file = os.path.basename(path)
            if file not in expected or not is_file:
                raise Failure(Exit.BAD_BACKUP, f"off-site set {name} holds an unexpected file {file}; refusing it")
            if file in seen:
                raise Failure(Exit.BAD_BACKUP, f"off-site set {name} holds {file} twice; refusing it")
            seen.add(file)
            os.replace(path, os.path.join(self.staging, file))
        # Only the set's files stay in the staging directory a verify reads.
        shutil.rmtree(tree)

    def _check(self, path):
        """sets.check_set, its reason (which file, why) kept in the message."""
        name = os.path.basename(path)
        engine = self.engine
        if not engine:
            try:
                engine = manifest.Manifest.read(f"{path}.manifest.json").engine
            except manifest.ManifestError:
                engine = ""  # check_set says the manifest cannot be read
        try:
            sets.check_set(path, self.project.name, engine, self.test_compression)
        except Failure as failure:
            if failure.__cause__ is None:
                raise
            raise Failure(failure.code, f"{failure.message} ({failure.__cause__})") from failure.__cause__
        self.log.info(f"checked {name}: sha256 and compression are good")

    def _test_compression(self, path):
        if path.endswith(".zst"):
            argv = ["zstd", "-q", "-t", "--", path]
        elif path.endswith(".gz"):
            argv = ["gzip", "-t", "--", path]
        else:
            return False
        try:
            self.runner.run(argv, stdout=DEVNULL, timeout=TEST_SECONDS)
        except CommandFailed:
            return False
        return True

    def remove_staging(self):
        """Remove the staging directory (a staged fetch, or what a killed one left)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def _remove_at_exit(self):
        if self._exit_registered:
            return
        self._exit_registered = True
        if self.on_exit is not None:
            self.on_exit(self.staging)
        else:
            atexit.register(self.remove_staging)

    # --- checking -----------------------------------------------------------------------------

    def check_all(self, subset=None):
        """restic's own check of every repository, reading back SUBSET
        (default: the configured share) of the data. Raises
        Failure(OFFSITE_FAILED) naming those that failed."""
        subset = subset or self.settings.check_subset
        if not self.repositories:
            return
        self.require_restic()
        failed = []
        output = os.path.join(self.run_dir, "check.out")
        for repo in self.repositories:
            started = self.monotonic()
            self._start(repo)
            try:
                try:
                    self._run(repo, ["check", f"--read-data-subset={subset}"], stdout=output)
                except CommandFailed as error:
                    # A killed run's lock blocks the check's exclusive one.
                    if not STALE_LOCK.search(error.stderr):
                        raise
                    self._remove_stale_locks(repo, "checking again")
                    self._run(repo, ["check", f"--read-data-subset={subset}"], stdout=output)
            except CommandFailed as error:
                # restic check says what is damaged on stdout, and why it gives
                # up on stderr: both are read, in that order.
                text = _tail(output) + "\n" + error.stderr
                self.log.warn(self._describe(repo, "its check", error, output=text))
                failed.append(repo.name)
            except RepositoryError as error:
                self.log.warn(error.message)
                failed.append(repo.name)
            else:
                self.log.info(
                    f"off-site repository {repo.name}: structure and {subset} of the data read back and good, "
                    f"in {format_seconds(self.monotonic() - started)} s"
                )
        if failed:
            raise Failure(Exit.OFFSITE_FAILED, f"the off-site check of {' '.join(failed)} failed")


def _walk(top):
    """(path, is a regular file) of everything under TOP but its directories,
    links not followed, in name order."""
    with os.scandir(top) as entries:
        found = sorted(entries, key=lambda e: e.name)
    for entry in found:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path)
        else:
            yield entry.path, entry.is_file(follow_symlinks=False)


def _tail(path):
    """The end of the file PATH as text, "" when there is none."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def backup_summary(output):
    """The last summary line of `restic backup --json` OUTPUT, {} when there is none."""
    for line in reversed(output.splitlines()):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("message_type") == "summary":
            return message
    return {}


def _data_added(output):
    """The bytes a push added after deduplication: data_added of restic's
    summary line, 0 when there is none."""
    added = backup_summary(output).get("data_added", 0)
    return added if isinstance(added, int) and not isinstance(added, bool) else 0
