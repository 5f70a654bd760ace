"""The one way the engine runs external programs (pg_dump, psql, pg_restore,
mariadb, mariadb-dump, zstd, gzip, tar, restic, ssh).

The bash engine had three blind spots this module exists to close: a failed
process substitution went unnoticed, a TERM waited for the current child to
finish, and the failing stage of a pipeline was easy to misreport. Here:

- A pipeline fails when any stage fails, and the error names the stage at fault
  (the most downstream one that failed: when the writer fails, the stages
  feeding it die of SIGPIPE and are not the cause) with the end of its stderr.
- Data moves between stages through OS pipes. Python holds only what a caller
  asks to capture (small outputs) or writes on a child's stdin (SQL text).
- Every child runs in a process group of its own, so a TERM or INT sent to the
  script reaches the script alone. The handler install_signal_handlers() sets
  stops every child (TERM, then KILL after KILL_AFTER seconds) and then raises
  Interrupted, so the command undoes its current step knowing nothing of ours
  still runs.
- Each child's stderr goes to a file of its own (nothing for Python to drain,
  so a chatty child cannot block); the last lines are kept for messages.
- No child outlives the call that started it, whatever is raised; when a child
  ends, whatever it left running in its process group is killed too.

The runner logs nothing: callers log CommandFailed.reason().
"""

import contextlib
import dataclasses
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time

TAIL_LINES = 20  # stderr lines kept in Result.stderr and CommandFailed.stderr
REASON_LINES = 3  # of which reason() quotes the last few
KILL_AFTER = 2.0  # seconds between TERM and KILL when stopping children

_TAIL_BYTES = 64 * 1024  # read no more than this from the end of a stderr file
_CHUNK = 64 * 1024
_FIRST_POLL = 0.001  # waits start short, so quick programs cost little ...
_LAST_POLL = 0.05  # ... and grow, so a long dump costs 20 wake-ups a second
_LOST_STATUS = 255  # exit code recorded when something else reaped our child


class _Target:
    """A named choice for stdout=; compared by identity."""

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return self._name


CAPTURE = _Target("CAPTURE")  # collect stdout into Result.stdout (small outputs only)
DEVNULL = _Target("DEVNULL")  # discard stdout


@dataclasses.dataclass
class Result:
    argv: list[str]
    returncode: int  # negative: killed by that signal (as in subprocess)
    stdout: bytes
    stderr: str  # the last TAIL_LINES non-empty lines
    name: str = ""


@dataclasses.dataclass
class Stage:
    argv: list[str]
    env: dict[str, str | None] | None = None  # merged over the runner's environment; None removes
    name: str | None = None  # for messages; default: basename of argv[0]
    ok_codes: tuple[int, ...] = (0,)


@dataclasses.dataclass(frozen=True)
class Running:
    """A child still running, as Runner.running() lists it."""

    pid: int
    name: str
    argv: list[str]


class CommandFailed(Exception):
    """A program exited with a code not in its ok_codes, was killed by a signal,
    did not finish in time, or could not be started."""

    def __init__(
        self,
        name,
        argv,
        returncode=None,
        stderr="",
        *,
        signal=None,
        timed_out=False,
        timeout=None,
        failed=None,
        detail=None,
        results=None,
    ):
        super().__init__(name)
        self.name = name
        self.argv = list(argv)
        self.returncode = returncode  # None when it timed out or never started
        if signal is None and returncode is not None and returncode < 0:
            signal = -returncode
        self.signal = signal
        self.stderr = stderr
        self.timed_out = timed_out
        self.timeout = timeout
        self.failed = list(failed) if failed is not None else [name]  # every failed stage, upstream first
        self.detail = detail  # replaces the standard wording of reason()
        self.results = results  # a pipeline's Result per stage, when all of them ended

    def reason(self) -> str:
        """One line for the log: what happened, then the end of the stage's stderr."""
        if self.detail:
            head = f"{self.name} {self.detail}"
        elif self.timed_out:
            within = "in time" if self.timeout is None else f"within {_seconds(self.timeout)} s"
            head = f"{self.name} did not finish {within}"
        elif self.signal is not None:
            head = f"{self.name} was killed by signal {self.signal}"
        else:
            head = f"{self.name} failed (exit code {self.returncode})"
        tail = " ".join(self.stderr.splitlines()[-REASON_LINES:])
        return f"{head}: {tail}" if tail else head

    def __str__(self):
        return self.reason()


class Interrupted(BaseException):
    """TERM or INT arrived. A BaseException, so that `except Exception` in a
    step does not swallow it on the way to the command's undo."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    def __str__(self):
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        return f"interrupted by {name}"


# --- helpers shared with the tests' FakeRunner ---------------------------------------------


def check_argv(argv) -> list[str]:
    """ARGV as a list of str; a bare string (a command line that would need a
    shell) and non-text arguments are caller bugs, refused before anything runs."""
    if isinstance(argv, str | bytes):
        raise TypeError(f"argv must be a list of arguments, not a string: {argv!r}")
    checked = [os.fspath(arg) for arg in argv]
    for arg in checked:
        if not isinstance(arg, str):
            raise TypeError(f"argv items must be str or path-like, not {type(arg).__name__}: {arg!r}")
    if not checked:
        raise ValueError("argv is empty")
    return checked


def program_name(argv) -> str:
    return os.path.basename(argv[0])


def merge_env(base, extra) -> dict[str, str]:
    """BASE with EXTRA laid over it; a value of None removes the variable."""
    merged = dict(base)
    for key, value in (extra or {}).items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, str):
            merged[key] = value
        else:
            raise TypeError(f"environment variable {key} must be str or None, not {type(value).__name__}")
    return merged


def input_data(input, stdin) -> bytes | None:
    """run()'s INPUT as bytes (None for none); giving STDIN as well is a caller bug."""
    if input is not None and stdin is not None:
        raise ValueError("give input or stdin, not both")
    return input.encode() if isinstance(input, str) else None if input is None else bytes(input)


def check_stages(stages) -> list:
    """pipeline()'s STAGES as a list; an empty pipeline is a caller bug."""
    stages = list(stages)
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    return stages


def stdout_target(stdout):
    """CAPTURE, DEVNULL, or STDOUT as a path string."""
    return stdout if stdout is CAPTURE or stdout is DEVNULL else os.fspath(stdout)


def last_lines(text: str, count: int = TAIL_LINES) -> str:
    """The last COUNT non-empty lines of TEXT, trailing blanks trimmed."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def _seconds(value) -> str:
    return f"{value:g}"


def _read_tail(path) -> str:
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            file.seek(start)
            data = file.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if start:
        # The read began mid-file: its first line is a fragment.
        text = text.partition("\n")[2]
    return last_lines(text)


def _file_prefix(name) -> str:
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in name)
    return safe[:40] + "."


class _Deadline(Exception):
    """The call's timeout passed while children still ran."""


# --- children ---------------------------------------------------------------------------------


class _Child:
    """One started process: its Popen, its stderr file, and how it ended.

    Waiting is done here with os.waitpid rather than Popen.wait: the signal
    handler must reap children while the main thread may be inside a Popen
    method holding that Popen's internal lock."""

    def __init__(self, popen, name, argv, errpath, ok_codes):
        self.popen = popen
        self.pid = popen.pid
        self.name = name
        self.argv = argv
        self.errpath = errpath
        self.ok_codes = tuple(ok_codes)
        self.returncode = None
        self.stderr = ""

    @property
    def done(self) -> bool:
        return self.returncode is not None

    @property
    def ok(self) -> bool:
        return self.returncode in self.ok_codes

    def reap(self) -> bool:
        """Whether the child has ended (reaping it if it just did)."""
        if self.returncode is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else (another waitpid in this process): the status is lost.
            pid, status = self.pid, None
        if pid == 0:
            return False
        self.returncode = _LOST_STATUS if status is None else os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # so Popen neither waits again nor warns
        # Anything it left in its process group would be an orphan nobody stops.
        self.signal_group(signal.SIGKILL)
        return True

    def signal_group(self, signum):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def failure(self, failed=None, results=None) -> CommandFailed:
        return CommandFailed(self.name, self.argv, self.returncode, self.stderr, failed=failed, results=results)


def _await_exit(children, seconds):
    """Reap CHILDREN for up to SECONDS; those still running."""
    deadline = time.monotonic() + seconds
    delay = _FIRST_POLL
    alive = [child for child in children if not child.reap()]
    while alive and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, _LAST_POLL)
        alive = [child for child in alive if not child.reap()]
    return alive


def _stop(children, grace):
    """TERM the process groups of CHILDREN, KILL what still runs GRACE seconds
    later, and reap them all."""
    alive = [child for child in children if not child.reap()]
    for child in alive:
        child.signal_group(signal.SIGTERM)
    alive = _await_exit(alive, grace)
    for child in alive:
        child.signal_group(signal.SIGKILL)
    # KILL cannot be refused, but a process stuck in the kernel (a dead NFS
    # mount) can take a while to go: bounded, and Runner.close() tries again.
    _await_exit(alive, grace)


class _SignalHandlers:
    """The handlers install_signal_handlers() replaced; a with block restores them."""

    def __init__(self, previous):
        self._previous = previous

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.restore()

    def restore(self):
        for signum, handler in self._previous.items():
            # None: a handler set outside Python, which cannot be put back; the default is closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class Runner:
    """Starts, watches and stops the engine's child processes.

    ENV is the base environment of every child (default: a copy of os.environ
    now); TMPDIR is where the children's stderr files go (default: a private
    directory made on first use and removed by close()). KILL_AFTER is the
    grace between TERM and KILL whenever children are stopped."""

    def __init__(self, env: dict | None = None, tmpdir: str | None = None, *, kill_after: float = KILL_AFTER):
        self.env = dict(os.environ if env is None else env)
        self.kill_after = kill_after
        self._tmpdir = None if tmpdir is None else os.fspath(tmpdir)
        self._own_tmpdir = None
        self._children: dict[int, _Child] = {}
        self._spawning = False  # a signal now is handled once the new child is registered
        self._pending_signal = None
        self._stopping = False

    # --- running things ------------------------------------------------------------------------

    def run(
        self,
        argv,
        *,
        env=None,
        input=None,
        stdin=None,
        stdout=CAPTURE,
        cwd=None,
        timeout=None,
        ok_codes=(0,),
        name=None,
    ) -> Result:
        """Run one program and wait for it.

        INPUT (bytes or str) is written to its stdin: the way to hand it SQL or
        secrets, which never go on argv. STDIN is a path to read from instead.
        STDOUT: CAPTURE, DEVNULL, or a path (truncated; created with mode 0600).
        Raises CommandFailed if the exit code is not in OK_CODES, or after
        TIMEOUT seconds (the child's process group is killed); OSError if STDIN
        or STDOUT cannot be opened."""
        data = input_data(input, stdin)
        stage = Stage(argv, env=env, name=name, ok_codes=tuple(ok_codes))
        return self._execute([stage], data=data, stdin=stdin, stdout=stdout, timeout=timeout, cwd=cwd)[0]

    def pipeline(self, stages, *, stdin=None, stdout=DEVNULL, timeout=None, cwd=None) -> list[Result]:
        """Run STAGES with each one's stdout piped into the next one's stdin, and
        wait for all of them. STDIN (a path) feeds the first stage, STDOUT
        (as for run()) takes the last one's output.

        If any stage fails, CommandFailed names the most downstream failed stage
        and lists all of them in .failed. When a stage fails, the stages feeding
        it are stopped at once: their output has nowhere to go. TIMEOUT bounds
        the whole pipeline; when it passes every stage is stopped."""
        stages = check_stages(stages)
        return self._execute(stages, data=None, stdin=stdin, stdout=stdout, timeout=timeout, cwd=cwd)

    def start(self, argv, *, env=None, name=None, ok_codes=(0,), cwd=None) -> "Session":
        """Start a long-lived program with pipes to its stdin and stdout (a psql
        session held open while other things happen)."""
        argv = check_argv(argv)
        name = name or program_name(argv)
        started = []
        self._spawn(argv, name, merge_env(self.env, env), ok_codes, subprocess.PIPE, subprocess.PIPE, cwd, started)
        return Session(self, started[0])

    def running(self) -> list[Running]:
        """The children started by this runner that have not ended."""
        return [Running(c.pid, c.name, list(c.argv)) for c in self._children.values() if not c.done]

    def close(self):
        """Stop any child still running (sessions left open) and remove the
        runner's own directory of stderr files. The runner stays usable."""
        _stop(list(self._children.values()), self.kill_after)
        for child in list(self._children.values()):
            self._release(child)
        if self._own_tmpdir is not None:
            shutil.rmtree(self._own_tmpdir, ignore_errors=True)
            self._own_tmpdir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # --- signals -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> _SignalHandlers:
        """Handle TERM and INT: stop every running child (TERM to its process
        group, KILL after kill_after seconds), then raise Interrupted(signum) in
        the main thread. Must be called from the main thread. The return value
        restores the previous handlers, by .restore() or as a context manager."""
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return _SignalHandlers(previous)

    def _on_signal(self, signum, frame):
        if self._spawning:
            # A child may exist that is not registered yet; handled right after.
            if self._pending_signal is None:
                self._pending_signal = signum
            return
        if self._stopping:
            # A second signal while the first one is stopping the children: the
            # first will raise; returning lets its wait go on.
            return
        self._pending_signal = None  # this signal covers one deferred a moment ago
        self._stopping = True
        try:
            _stop(list(self._children.values()), self.kill_after)
        finally:
            self._stopping = False
        # Raising here (rather than setting a flag) also breaks the main thread
        # out of a blocking wait, which PEP 475 would otherwise resume.
        raise Interrupted(signum)

    # --- internals -----------------------------------------------------------------------------

    def _dir(self):
        if self._tmpdir is not None:
            return self._tmpdir
        if self._own_tmpdir is None:
            self._own_tmpdir = tempfile.mkdtemp(prefix="djangoops-run.")
        return self._own_tmpdir

    def _spawn(self, argv, name, env, ok_codes, stdin, stdout, cwd, started):
        """Start one child in a new session, register it and append it to
        STARTED before any signal can be handled, so nothing escapes the
        registry."""
        errfd, errpath = tempfile.mkstemp(dir=self._dir(), prefix=_file_prefix(name), suffix=".stderr")
        error = None
        registered = False
        self._spawning = True
        try:
            streams = {"stdin": stdin, "stdout": stdout, "stderr": errfd}
            popen = subprocess.Popen(argv, env=env, cwd=cwd, close_fds=True, start_new_session=True, **streams)
            child = _Child(popen, name, argv, errpath, ok_codes)
            self._children[child.pid] = child
            started.append(child)
            registered = True
        except OSError as exc:
            error = exc
        finally:
            os.close(errfd)
            if not registered:
                os.unlink(errpath)
            self._spawning = False
        if self._pending_signal is not None:
            signum, self._pending_signal = self._pending_signal, None
            self._on_signal(signum, None)
        if error is not None:
            reason = error.strerror or str(error)
            raise CommandFailed(name, argv, detail=f"could not be started: {reason}") from error
        return child

    def _release(self, child):
        """Close our ends of CHILD's pipes and keep the tail of its stderr; the
        registry forgets it once it has ended."""
        for pipe in (child.popen.stdin, child.popen.stdout):
            if pipe is not None:
                pipe.close()
        if os.path.exists(child.errpath):
            child.stderr = _read_tail(child.errpath)
            os.unlink(child.errpath)
        if child.done:
            self._children.pop(child.pid, None)

    def _execute(self, stages, *, data, stdin, stdout, timeout, cwd) -> list[Result]:
        # Everything is checked before the first program starts.
        argvs = [check_argv(stage.argv) for stage in stages]
        envs = [merge_env(self.env, stage.env) for stage in stages]
        names = [stage.name or program_name(argv) for stage, argv in zip(stages, argvs, strict=True)]
        stdout = stdout_target(stdout)
        deadline = None if timeout is None else time.monotonic() + timeout
        children = []
        ours = []  # files we opened for the children; closed once they have them
        output = b""
        timed_out = False
        stuck = []
        try:
            if stdin is not None:
                upstream = open(stdin, "rb")  # closed in finally, once the child has it
                ours.append(upstream)
            else:
                upstream = subprocess.PIPE if data is not None else subprocess.DEVNULL
            if stdout is CAPTURE:
                last_out = subprocess.PIPE
            elif stdout is DEVNULL:
                last_out = subprocess.DEVNULL
            else:
                fd = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                last_out = open(fd, "wb")
                ours.append(last_out)
            for index, stage in enumerate(stages):
                last = index == len(stages) - 1
                out = last_out if last else subprocess.PIPE
                child = self._spawn(
                    argvs[index], names[index], envs[index], stage.ok_codes, upstream, out, cwd, children
                )
                if index > 0:
                    upstream.close()  # the previous stage's stdout: only the new child reads it now
                upstream = child.popen.stdout
            feed = children[0].popen.stdin
            capture = children[-1].popen.stdout if stdout is CAPTURE else None
            for file in ours:
                file.close()
            try:
                output = self._wait(children, feed, data, capture, deadline)
            except _Deadline:
                timed_out = True
                # All may have ended with their output not yet at its end: then the last is named.
                stuck = [child for child in children if not child.done] or children[-1:]
        finally:
            for file in ours:
                file.close()
            _stop(children, self.kill_after)
            for child in children:
                self._release(child)
        if timed_out:
            # Upstream or downstream, a stalled stage holds up the others; the
            # first still running is reported, all of them are listed.
            first = stuck[0]
            raise CommandFailed(
                first.name,
                first.argv,
                None,
                first.stderr,
                timed_out=True,
                timeout=timeout,
                failed=[child.name for child in stuck],
            )
        results = [
            Result(c.argv, c.returncode, output if c is children[-1] else b"", c.stderr, c.name) for c in children
        ]
        failed = [child for child in children if not child.ok]
        if failed:
            raise failed[-1].failure(failed=[child.name for child in failed], results=results)
        return results

    def _reap_all(self, children):
        for index, child in enumerate(children):
            if not child.done and child.reap() and not child.ok:
                # Nothing reads what the stages upstream of a failed one write.
                _stop(children[:index], self.kill_after)

    def _wait(self, children, feed, data, capture, deadline) -> bytes:
        """Until every child has ended and CAPTURE is at its end: write DATA to
        FEED, collect CAPTURE, reap children. Raises _Deadline at DEADLINE."""
        selector = selectors.DefaultSelector()
        collected = bytearray()
        pending = memoryview(data or b"")
        feeding = False

        def stop_feeding():
            nonlocal feeding
            selector.unregister(feed)
            feed.close()
            feeding = False

        try:
            if feed is not None:
                if pending:
                    os.set_blocking(feed.fileno(), False)
                    selector.register(feed, selectors.EVENT_WRITE)
                    feeding = True
                else:
                    feed.close()  # nothing to send: end of input at once
            if capture is not None:
                selector.register(capture, selectors.EVENT_READ)
            delay = _FIRST_POLL
            while True:
                self._reap_all(children)
                if all(child.done for child in children):
                    if feeding:
                        stop_feeding()
                    if not selector.get_map():
                        return bytes(collected)
                wait = delay
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise _Deadline
                if selector.get_map():
                    events = selector.select(wait)
                else:
                    time.sleep(wait)
                    events = []
                for key, _mask in events:
                    if key.fileobj is capture:
                        chunk = os.read(key.fd, _CHUNK)
                        if chunk:
                            collected += chunk
                        else:
                            selector.unregister(capture)
                        continue
                    try:
                        written = os.write(key.fd, pending[:_CHUNK])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        # It stopped reading; its exit status says whether that is a failure.
                        stop_feeding()
                        continue
                    pending = pending[written:]
                    if not pending:
                        stop_feeding()
                delay = _FIRST_POLL if events else min(delay * 2, _LAST_POLL)
        finally:
            selector.close()


class Session:
    """A program started by Runner.start(), talked to line by line."""

    def __init__(self, runner, child):
        self._runner = runner
        self._child = child
        self.pid = child.pid
        self.name = child.name
        self.argv = child.argv
        self._buffer = bytearray()
        self._eof = False
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.kill()

    def write(self, text):
        """Send TEXT (str or bytes) to the program's stdin, unbuffered. If the
        program has stopped reading, CommandFailed says how it ended."""
        self._check_open()
        data = text.encode() if isinstance(text, str) else bytes(text)
        pipe = self._child.popen.stdin
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(pipe.fileno(), view) :]
        except BrokenPipeError:
            raise self._stopped_reading() from None

    def readline(self, timeout: float) -> str | None:
        """The next line of output without its newline; None at end of output.
        CommandFailed(timed_out=True) if no full line arrives within TIMEOUT
        seconds (the program keeps running: close or kill it)."""
        self._check_open()
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line.decode("utf-8", errors="replace")
            if self._eof:
                if not self._buffer:
                    return None
                line = bytes(self._buffer)
                self._buffer.clear()
                return line.decode("utf-8", errors="replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandFailed(
                    self.name,
                    self.argv,
                    None,
                    _read_tail(self._child.errpath),
                    timed_out=True,
                    timeout=timeout,
                    detail=f"sent no line within {_seconds(timeout)} s",
                )
            stdout = self._child.popen.stdout
            with selectors.DefaultSelector() as selector:
                selector.register(stdout, selectors.EVENT_READ)
                ready = selector.select(remaining)
            if ready:
                chunk = os.read(stdout.fileno(), _CHUNK)
                if chunk:
                    self._buffer += chunk
                else:
                    self._eof = True

    def close(self, timeout: float) -> Result:
        """Close the program's stdin (end of input) and wait up to TIMEOUT seconds
        for it to end, then stop it. Result.stdout holds the output not read
        by readline(). CommandFailed if it failed or did not end in time."""
        self._check_open()
        child = self._child
        child.popen.stdin.close()
        stuck = False
        try:
            capture = None if self._eof else child.popen.stdout
            self._buffer += self._runner._wait([child], None, None, capture, time.monotonic() + timeout)
        except _Deadline:
            stuck = True
        finally:
            self._end()
        if stuck:
            raise CommandFailed(child.name, child.argv, None, child.stderr, timed_out=True, timeout=timeout)
        result = Result(child.argv, child.returncode, bytes(self._buffer), child.stderr, child.name)
        self._buffer.clear()
        if not child.ok:
            raise child.failure()
        return result

    def kill(self):
        """Stop the program (TERM, then KILL) and forget it; safe to repeat."""
        if not self._closed:
            self._end()

    def _check_open(self):
        if self._closed:
            raise ValueError(f"{self.name}: session already closed")

    def _end(self):
        self._closed = True
        _stop([self._child], self._runner.kill_after)
        self._runner._release(self._child)

    def _stopped_reading(self) -> CommandFailed:
        child = self._child
        child.popen.stdin.close()
        # It usually has ended, or is about to: give it the grace a stop would.
        with contextlib.suppress(_Deadline):
            capture = None if self._eof else child.popen.stdout
            self._runner._wait([child], None, None, capture, time.monotonic() + self._runner.kill_after)
        self._end()
        if not child.ok:
            return child.failure()
        return CommandFailed(child.name, child.argv, child.returncode, child.stderr, detail="stopped reading its input")
