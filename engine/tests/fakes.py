"""FakeRunner: runner.Runner's public API without running anything, for the unit
tests of the database engines and commands.

It records every call and answers from rules a test sets up, matched in order;
failures are the real CommandFailed and Interrupted, built as the real runner
builds them (a pipeline names its most downstream failed stage), so the code
under test takes the same paths it takes in production.

    fake = FakeRunner()
    fake.on("pg_dump", stdout=b"dump")                       # by program name, any stage
    fake.on("psql", input_contains="pg_database", stdout=b"1\\n")
    fake.on(lambda call: "DROP DATABASE" in call.input, fail=1, stderr="ERROR: permission denied")
    fake.on("restic", timeout=True)
    fake.on("zstd", times=1, signal=9)                       # once, then the next rule
    fake.on("psql", lines=["snap-1", None])                  # a session's readline() answers
    ...
    assert "DROP DATABASE" not in fake.sql()
"""

import collections
import dataclasses
import inspect
import os

from djangoops import runner
from djangoops.log import Log
from djangoops.runner import (
    CAPTURE,
    DEVNULL,
    CommandFailed,
    Interrupted,
    Result,
    Running,
    Stage,
    check_argv,
    check_stages,
    input_data,
    last_lines,
    merge_env,
    program_name,
    stdout_target,
)

_RUN_SIGNATURE = inspect.signature(runner.Runner.run)


class _Timeout:
    def __repr__(self):
        return "TIMEOUT"


TIMEOUT = _Timeout()  # in a session's lines: that readline() times out


@dataclasses.dataclass
class Call:
    """One call to the runner, as the code under test made it."""

    kind: str  # "run", "pipeline" or "start"
    argv: list  # run and start: the argv; pipeline: one argv per stage
    names: list[str]  # one per stage
    env: dict  # the extra variables given (a pipeline's stages merged); None means removed
    input: str = ""  # run: the input text; start: everything written to the session
    stdin: str | None = None
    stdout: object = None  # CAPTURE, DEVNULL or a path
    cwd: str | None = None
    timeout: float | None = None
    envs: list = dataclasses.field(default_factory=list)  # each stage's own extra variables
    ok_codes: list = dataclasses.field(default_factory=list)  # each stage's

    @property
    def argvs(self) -> list[list[str]]:
        return self.argv if self.kind == "pipeline" else [self.argv]

    @property
    def programs(self) -> list[str]:
        return [program_name(argv) for argv in self.argvs]

    @property
    def text(self) -> str:
        """The command line, stages joined with ' | ', for substring checks."""
        return " | ".join(" ".join(argv) for argv in self.argvs)


# What a rule does when nothing else is said (see FakeRunner.on()); fail= sets returncode.
_BEHAVIOUR = {
    "stdout": b"",
    "stderr": "",
    "returncode": 0,
    "fail": None,
    "signal": None,
    "timeout": False,
    "interrupt": None,
    "times": None,
    "effect": None,
    "input_contains": None,
    "argv_contains": None,
    "stage": None,
    "lines": (),
    "reply": None,
}


class Rule:
    """What a matching stage does. See FakeRunner.on()."""

    def __init__(self, match=None, **behaviour):
        unknown = sorted(set(behaviour) - set(_BEHAVIOUR))
        if unknown:
            raise TypeError(f"unknown rule behaviour: {', '.join(unknown)}")
        if not (match is None or isinstance(match, str) or callable(match)):
            raise TypeError(f"match must be a program name, a callable or None, not {match!r}")
        if behaviour.get("stage") is not None and isinstance(match, str):
            raise TypeError("stage= is for callable rules; a name rule applies to the stages of that name")
        options = {**_BEHAVIOUR, **behaviour}
        fail = options.pop("fail")
        vars(self).update(options)
        self.match = match
        self.stdout = self.stdout.encode() if isinstance(self.stdout, str) else bytes(self.stdout)
        if fail is not None:
            self.returncode = fail
        self.lines = list(self.lines)
        self.used = 0  # how many calls it has answered

    def __repr__(self):
        return f"Rule({self.match!r}, used={self.used})"

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.used >= self.times

    @property
    def exit_code(self) -> int:
        return -self.signal if self.signal is not None else self.returncode

    def applies(self, call, index) -> bool:
        """Whether this rule answers stage INDEX of CALL. A name rule answers
        every stage of that name; a callable (or match-all) rule answers one
        stage: the one named by stage=, else the last (the writer)."""
        if self.exhausted:
            return False
        if self.input_contains is not None and self.input_contains not in call.input:
            return False
        if self.argv_contains is not None and self.argv_contains not in " ".join(call.argvs[index]):
            return False
        if isinstance(self.match, str):
            return self.match in (call.names[index], call.programs[index])
        if self.stage is None:
            target = len(call.names) - 1
        else:
            named = [i for i, name in enumerate(call.names) if self.stage in (name, call.programs[i])]
            if not named:
                return False
            target = named[-1]
        return index == target and (self.match is None or bool(self.match(call)))


class _NoHandlers:
    """What FakeRunner.install_signal_handlers() returns: nothing to restore."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def restore(self):
        pass


class FakeRunner:
    """Records calls in .calls and answers them from rules (see on()).

    Unmatched stages succeed with no output, unless strict=True: then an
    unmatched stage raises AssertionError naming its argv."""

    def __init__(self, strict=False, env=None):
        self.strict = strict
        self.env = dict(env or {})
        self.rules: list[Rule] = []
        self.calls: list[Call] = []
        self.sessions: list[FakeSession] = []
        self.closed = False
        self._next_pid = 40000

    def on(self, match=None, **behaviour) -> Rule:
        """Add a rule; the first rule that applies to a stage answers it.

        MATCH: a program name (the stage's name or basename of argv[0]), a
        callable taking the Call, or None for any call. Options:
          stdout=bytes            the stage's output (captured, or written to the stdout path)
          stderr=str              its stderr (Result.stderr and the error's tail)
          returncode=N / fail=N   its exit code
          signal=N                killed by signal N
          timeout=True            CommandFailed(timed_out=True)
          interrupt=signum        Interrupted(signum) during the call (after output and effect)
          times=N                 answer N calls, then let later rules answer
          effect=callable(call)   run when the rule answers (create or spoil files)
          input_contains=str      only if the input text contains this
          argv_contains=str       only if the stage's argv, joined by spaces, contains this
          stage=name              for callable rules: answer this stage rather than the last
          lines=[...]             sessions: readline() answers; None is end of output,
                                  TIMEOUT a timeout, an exception instance is raised
          reply=callable(text)    sessions: called on each write; the str or list of str
                                  it returns is queued for readline()
        For a session, the exit options (returncode, signal, timeout) apply at close()."""
        rule = Rule(match, **behaviour)
        self.rules.append(rule)
        return rule

    # --- the runner's API ---------------------------------------------------------------------

    def run(self, argv, **options) -> Result:
        """Runner.run(): the same parameters (bound to its signature, so the two
        cannot drift apart), recorded and answered from the rules."""
        bound = _RUN_SIGNATURE.bind(self, argv, **options)
        bound.apply_defaults()
        options = bound.arguments
        input, stdin, env, name = options["input"], options["stdin"], options["env"], options["name"]
        data = input_data(input, stdin)
        call = self._one_program(
            "run",
            argv,
            env,
            name,
            options["ok_codes"],
            input=input if isinstance(input, str) else "" if data is None else data.decode("utf-8", errors="replace"),
            stdin=None if stdin is None else os.fspath(stdin),
            stdout=stdout_target(options["stdout"]),
            cwd=options["cwd"],
            timeout=options["timeout"],
        )
        return self._execute(call)[0]

    def pipeline(self, stages, *, stdin=None, stdout=DEVNULL, timeout=None, cwd=None) -> list[Result]:
        stages = check_stages(stages)
        for stage in stages:
            if not isinstance(stage, Stage):
                raise TypeError(f"pipeline stages must be runner.Stage, not {type(stage).__name__}")
        argvs = [check_argv(stage.argv) for stage in stages]
        merged = {}
        for stage in stages:
            merge_env(self.env, stage.env)
            merged.update(stage.env or {})
        call = Call(
            kind="pipeline",
            argv=argvs,
            names=[stage.name or program_name(argv) for stage, argv in zip(stages, argvs, strict=True)],
            env=merged,
            stdin=None if stdin is None else os.fspath(stdin),
            stdout=stdout_target(stdout),
            cwd=cwd,
            timeout=timeout,
            envs=[dict(stage.env or {}) for stage in stages],
            ok_codes=[tuple(stage.ok_codes) for stage in stages],
        )
        return self._execute(call)

    def start(self, argv, *, env=None, name=None, ok_codes=(0,), cwd=None) -> "FakeSession":
        call = self._one_program("start", argv, env, name, ok_codes, cwd=cwd)
        self.calls.append(call)
        rule = self._answer(call)[0]
        if rule is not None:
            if rule.effect is not None:
                rule.effect(call)
            if rule.interrupt is not None:
                raise Interrupted(rule.interrupt)
        self._next_pid += 1
        session = FakeSession(call, rule, self._next_pid)
        self.sessions.append(session)
        return session

    def running(self) -> list[Running]:
        """The sessions not yet closed or killed (what the real runner would
        still have running)."""
        return [Running(s.pid, s.name, list(s.argv)) for s in self.sessions if not s.ended]

    def close(self):
        self.closed = True

    def install_signal_handlers(self):
        return _NoHandlers()

    # --- for assertions ---------------------------------------------------------------------------

    def calls_to(self, name) -> list[Call]:
        """The calls with a stage of that name or program."""
        return [call for call in self.calls if name in call.names or name in call.programs]

    def sql(self) -> str:
        """Every input text (run input, session writes), in call order."""
        return "\n".join(call.input for call in self.calls if call.input)

    def argvs(self) -> list[list[str]]:
        """Every argv run, one per stage, in call order."""
        return [argv for call in self.calls for argv in call.argvs]

    # --- internals --------------------------------------------------------------------------------

    def _one_program(self, kind, argv, env, name, ok_codes, **fields) -> Call:
        """The Call of a run() or start(), its argv and env checked as the real runner checks them."""
        argv = check_argv(argv)
        merge_env(self.env, env)
        return Call(
            kind=kind,
            argv=argv,
            names=[name or program_name(argv)],
            env=dict(env or {}),
            envs=[dict(env or {})],
            ok_codes=[tuple(ok_codes)],
            **fields,
        )

    def _answer(self, call) -> list:
        """The rule answering each stage of CALL (None where none applies)."""
        answers = []
        for index in range(len(call.names)):
            rule = next((r for r in self.rules if r.applies(call, index)), None)
            if rule is None and self.strict:
                raise AssertionError(f"FakeRunner: no rule for {call.argvs[index]!r} ({call.kind})")
            answers.append(rule)
        for rule in {id(r): r for r in answers if r is not None}.values():
            rule.used += 1
        return answers

    def _execute(self, call) -> list[Result]:
        self.calls.append(call)
        if call.stdin is not None:
            with open(call.stdin, "rb"):  # a missing input fails as it would for real
                pass
        answers = self._answer(call)
        last = answers[-1]
        output = last.stdout if last is not None else b""
        if call.stdout not in (CAPTURE, DEVNULL):
            # What the last stage wrote is in the file even if the call fails.
            fd = os.open(call.stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as file:
                file.write(output)
        for rule in {id(r): r for r in answers if r is not None}.values():
            if rule.effect is not None:
                rule.effect(call)
        for rule in answers:
            if rule is not None and rule.interrupt is not None:
                raise Interrupted(rule.interrupt)
        timed_out = [i for i, rule in enumerate(answers) if rule is not None and rule.timeout]
        if timed_out:
            first = timed_out[0]
            raise CommandFailed(
                call.names[first],
                call.argvs[first],
                None,
                last_lines(answers[first].stderr),
                timed_out=True,
                timeout=call.timeout,
                failed=[call.names[i] for i in timed_out],
            )
        results = []
        for index, rule in enumerate(answers):
            stdout = output if index == len(answers) - 1 and call.stdout is CAPTURE else b""
            code = 0 if rule is None else rule.exit_code
            stderr = "" if rule is None else last_lines(rule.stderr)
            results.append(Result(call.argvs[index], code, stdout, stderr, call.names[index]))
        failed = [i for i, result in enumerate(results) if result.returncode not in call.ok_codes[i]]
        if failed:
            worst = results[failed[-1]]
            raise CommandFailed(
                worst.name,
                worst.argv,
                worst.returncode,
                worst.stderr,
                failed=[call.names[i] for i in failed],
                results=results,
            )
        return results


class FakeSession:
    """A scripted runner.Session: readline() answers from the rule's lines (and
    reply), write() records into .written and the call's input."""

    def __init__(self, call, rule, pid):
        self.call = call
        self.rule = rule
        self.pid = pid
        self.name = call.names[0]
        self.argv = call.argv
        self.written: list[str] = []
        self.lines = collections.deque(rule.lines if rule is not None else ())
        self.closed = False
        self.killed = False
        self._eof = False

    @property
    def ended(self) -> bool:
        return self.closed or self.killed

    @property
    def text(self) -> str:
        return "".join(self.written)

    def write(self, text):
        self._check_open()
        text = text if isinstance(text, str) else bytes(text).decode("utf-8", errors="replace")
        self.written.append(text)
        self.call.input += text
        if self.rule is not None and self.rule.reply is not None:
            answer = self.rule.reply(text)
            if isinstance(answer, str):
                self.lines.append(answer)
            elif answer is not None:
                self.lines.extend(answer)

    def readline(self, timeout: float) -> str | None:
        self._check_open()
        if self._eof or not self.lines:
            return None
        item = self.lines.popleft()
        if item is None:
            self._eof = True  # as a real pipe: nothing more after the end
            return None
        if item is TIMEOUT:
            raise CommandFailed(
                self.name,
                self.argv,
                None,
                self._stderr(),
                timed_out=True,
                timeout=timeout,
                detail=f"sent no line within {timeout:g} s",
            )
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout: float) -> Result:
        self._check_open()
        self.closed = True
        rule = self.rule
        if rule is not None and rule.timeout:
            raise CommandFailed(self.name, self.argv, None, self._stderr(), timed_out=True, timeout=timeout)
        code = 0 if rule is None else rule.exit_code
        stdout = b"" if rule is None else rule.stdout
        if code not in self.call.ok_codes[0]:
            raise CommandFailed(self.name, self.argv, code, self._stderr())
        return Result(self.argv, code, stdout, self._stderr(), self.name)

    def kill(self):
        if not self.ended:
            self.killed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.kill()

    def _stderr(self) -> str:
        return "" if self.rule is None else last_lines(self.rule.stderr)

    def _check_open(self):
        if self.ended:
            raise ValueError(f"{self.name}: session already closed")


class RecordingLog(Log):
    """The real Log's formatting (lines(), levels), lines kept in .records as
    (level, message) rather than written."""

    def __init__(self, script_name="restore_db"):
        super().__init__(script_name, None, stderr="none")
        self.records = []

    def log(self, level, message):
        self.records.append((level, message))

    def text(self, level=None):
        """The messages logged (at LEVEL, or all), one a line."""
        return "\n".join(m for lv, m in self.records if level is None or lv == level)
