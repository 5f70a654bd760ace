"""The log of a command: one line per event, appended to logs/<command>.log and
copied to stderr as the operator asked, in the format common.sh's log() wrote
(monitoring and people grep these lines, so the format does not change):

    2026-12-06T08:00:00+0000 backup_db[1234] INFO  message

Also the time formats the finishing lines and the metrics use, and redact(),
which every caller runs over text that could hold a secret before logging it.
"""

import os
import sys
import time

# The values of the stderr policy (DJANGOOPS_STDERR in common.sh).
STDERR_POLICIES = ("all", "problems", "none")
# What stderr="problems" lets through: what cron should mail.
PROBLEM_LEVELS = ("WARN", "ERROR")
REDACTED = "[redacted]"


def redact(text, secrets):
    """TEXT with every non-empty string of SECRETS replaced by [redacted].

    Longer secrets go first, so a secret that contains another one is hidden
    whole rather than leaving its remainder readable."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def format_seconds(seconds):
    """SECONDS with one decimal, cut rather than rounded ("12.3" for 12.39), as
    common.sh's elapsed printed them. A negative span (the clock was set back)
    reads as 0.0 rather than as a nonsense figure."""
    # Whole microseconds first: 12.3 * 1e6 is 12299999.99..., and cutting that
    # would print 12.2.
    micro = max(0, round(seconds * 1_000_000))
    return f"{micro // 1_000_000}.{micro % 1_000_000 // 100_000}"


def human_duration(seconds):
    """Whole minutes and seconds ("2 min 3 s"), the fraction dropped."""
    # Cut from whole microseconds as format_seconds does, so that the two
    # figures of one line never disagree (59.9999999 s is 60.0 s in both).
    whole = max(0, round(seconds * 1_000_000)) // 1_000_000
    return f"{whole // 60} min {whole % 60} s"


class Log:
    """Writes the command's log lines.

    SCRIPT_NAME names the command in every line; LOG_FILE (None: no file) gets
    every line; STDERR is "all" (the default), "problems" (warnings and errors
    only) or "none", and QUIET means "none" whatever STDERR says. As in
    common.sh, an unknown STDERR value counts as "all": a typo in an
    environment variable must not hide errors. PID defaults to this process's
    id, taken once, so lines written after a fork still name the command's
    process. CLOCK returns the time in seconds since the epoch (time.time by
    default; tests pass a fixed one)."""

    def __init__(self, script_name, log_file, stderr="all", quiet=False, pid=None, clock=None):
        self.script_name = script_name
        self.log_file = None if log_file is None else os.fspath(log_file)
        self.stderr = "none" if quiet else stderr
        self.pid = os.getpid() if pid is None else pid
        self.clock = time.time if clock is None else clock
        self._secrets = set()

    def hide(self, *secrets):
        """Redact SECRETS from every line from now on: a second guard behind
        the callers' own redact(), for values such as health-check URLs that
        must never reach a log."""
        self._secrets.update(s for s in secrets if s)

    def format(self, level, message):
        """The line for MESSAGE at LEVEL, without its newline."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.clock()))
        line = f"{stamp} {self.script_name}[{self.pid}] {level:<5} {message}"
        return redact(line, self._secrets) if self._secrets else line

    def log(self, level, message):
        """Append MESSAGE at LEVEL to the log file and copy it to stderr as the
        policy says. Never raises: a full disk or a removed logs directory must
        not turn a good backup into a failed one."""
        line = self.format(level, message)
        self._append(line)
        if self.stderr == "none" or (self.stderr == "problems" and level not in PROBLEM_LEVELS):
            return
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            # A closed or broken stderr (cron's pipe gone): the file has the line.
            pass

    def _append(self, line):
        if self.log_file is None:
            return
        data = (line + "\n").encode("utf-8", "surrogateescape")
        try:
            # Opened for each line, as common.sh's >> did: a log rotated
            # during the run gets the lines that follow. 0600 because a line
            # can quote a database's error, which can quote its data.
            fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            # One write per line: O_APPEND keeps lines of concurrent runs whole.
            os.write(fd, data)
        except OSError:
            pass
        finally:
            os.close(fd)

    def info(self, message):
        self.log("INFO", message)

    def warn(self, message):
        self.log("WARN", message)

    def error(self, message):
        self.log("ERROR", message)

    def out(self, line):
        """One line a job's own command printed."""
        self.log("OUT", line)

    def lines(self, level, text, last=20):
        """Each non-empty line of TEXT (a tool's error output) at LEVEL, only
        the LAST lines of it (None: all), as db.sh's log_lines did: the end of
        a tool's output says why it failed, and a long one would drown the
        log."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        parts = text.split("\n")
        if parts and parts[-1] == "":
            # The newline that ends the last line does not start another.
            parts.pop()
        if last is not None:
            parts = parts[-last:] if last > 0 else []
        for line in parts:
            if line:
                self.log(level, line)

    def finished(self, code, seconds):
        """The run's last line, as common.sh's exit trap wrote it: how it
        ended and how long it took."""
        took = format_seconds(seconds)
        if code == 0:
            self.info(f"finished in {human_duration(seconds)} ({took} s)")
        else:
            self.error(f"failed with exit code {int(code)} after {human_duration(seconds)} ({took} s)")
