"""The lock that keeps two runs (a backup and a restore, two verifications)
from working on the same backups at once, as common.sh's acquire_lock did
with flock(1).

flock() locks belong to an open file description: another open of the same
file, in this process or another, contends; the kernel drops the lock when
the last descriptor closes, so a killed run never leaves a stale lock. The
descriptor is not inherited by the commands a run starts (pg_dump...), so a
tool left behind does not keep holding it.
"""

import fcntl
import os
import time

from .errors import Exit, Failure

POLL_SECONDS = 0.1


class Lock:
    """An exclusive lock on the file PATH, waited for at most WAIT_SECONDS
    (whole seconds, 0: one try). SCRIPT names the command in the message
    about an unwritable directory. POLL, CLOCK and SLEEP are for tests.

        with Lock(backups_dir / ".lock", settings.lock_wait, "backup_db"):
            ...
    """

    def __init__(self, path, wait_seconds, script="djangoops", *, poll=POLL_SECONDS, clock=None, sleep=None):
        # Checked here rather than when waiting: a bad value is the caller's
        # input (--lock-wait), to be refused before anything starts.
        if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, int) or wait_seconds < 0:
            raise Failure(Exit.USAGE, f"the lock wait takes whole seconds, got '{wait_seconds}'")
        self.path = os.fspath(path)
        self.wait_seconds = wait_seconds
        self.script = script
        self.poll = poll
        self.clock = time.monotonic if clock is None else clock
        self.sleep = time.sleep if sleep is None else sleep
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        """Take the lock, waiting for another run to release it. Raises
        Failure(CONFIG) when the file cannot be opened, Failure(LOCKED) when
        the wait is over. Taking a lock already held by this object is a
        no-op."""
        if self._fd is not None:
            return self
        try:
            # Appending, as common.sh's >> did: the file's content is never
            # touched, and a file someone made read-only stays so.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            why = exc.strerror or exc
            where = os.path.dirname(self.path) or "."
            raise Failure(
                Exit.CONFIG, f"cannot open the lock file {self.path} ({why}): {self.script} needs a writable {where}"
            ) from None
        deadline = self.clock() + self.wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                left = deadline - self.clock()
                if left <= 0:
                    os.close(fd)
                    raise Failure(
                        Exit.LOCKED,
                        f"another run holds the lock {self.path}; gave up after waiting {self.wait_seconds} s",
                    ) from None
                self.sleep(min(self.poll, left))
            except OSError as exc:
                # No flock on this file system (some network ones): waiting
                # would not help, and "another run" would be wrong.
                os.close(fd)
                raise Failure(
                    Exit.CONFIG,
                    f"cannot lock {self.path} ({exc.strerror or exc}): {self.script} needs a file system with flock",
                ) from None
            else:
                self._fd = fd
                return self

    def release(self):
        """Let the lock go; safe to call when it is not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            # Closing releases it anyway, should the unlock have failed.
            os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
