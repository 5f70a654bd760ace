"""What every command shares while it runs: the project's values, the log, the
runner, a private directory, the undo steps to run at the end, and the end
itself (the last log line, the Prometheus textfile, the health-check ping).

A command is a function taking a Context. It raises errors.Failure to end with
an exit code, and registers with on_exit() what must happen however it ends
(dropping a scratch database, saying what an interrupted restore left). The
CLI (cli.py) builds the Context once the process runs as the project user.
"""

import os
import shutil
import sys
import tempfile
import time

from . import healthcheck, metrics
from .errors import Exit, Failure
from .log import Log
from .runner import Interrupted, Runner


class Stop(Exception):
    """End the command at once with CODE and no log line: --help (0), bad
    arguments (2, after the usage went to stderr)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = int(code)


def private_dir(script):
    """A directory for this run's temporary files, only the project user's:
    RAM-backed where possible (credentials read from Django land here)."""
    base = "/dev/shm"
    if not (os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)):
        base = os.environ.get("TMPDIR") or tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=f"djangoops-{script}.", dir=base)


class Context:
    """The run of one command (SCRIPT, e.g. "backup_db") of PROJECT."""

    def __init__(self, script, project, config_dir, engine_dir, *, quiet=False, clock=time.monotonic):
        self.script = script
        self.project = project
        self.config_dir = config_dir
        self.engine_dir = engine_dir
        self.lib_dir = os.path.join(engine_dir, "lib")
        self.clock = clock
        self.started = clock()
        stderr = os.environ.get("DJANGOOPS_STDERR", "all")
        self.log = Log(
            script,
            os.path.join(project.logs_dir, f"{script}.log"),
            stderr=stderr,
            quiet=quiet or bool(os.environ.get("QUIET")),
        )
        self.healthcheck_url = ""
        self.extra_metrics = {}
        # A job that runs every minute and did nothing says nothing: its metrics and ping still
        # tell that it ran (pitr_archive_db.sh on an idle server).
        self.quiet_success = False
        self.extra_metric_labels = {}  # labels of those figures beside project and script (the engine)
        self.run_dir = None
        self.runner = None
        self._exit_hooks = []
        self._cleanup = []
        self._signals = None
        self._started_run = False

    # --- set-up ------------------------------------------------------------------------------

    def open(self):
        """The private directory and the runner (with the signal handlers:
        a TERM or INT stops every child and raises Interrupted)."""
        if self.runner is None:
            self.run_dir = private_dir(self.script)
            env = dict(os.environ)
            env["LC_ALL"] = "C.UTF-8"
            self.runner = Runner(env=env, tmpdir=self.run_dir)
            self._signals = self.runner.install_signal_handlers()
        return self

    def start_run(self, healthcheck_url=""):
        """The beginning of every command that changes something: the run
        directory, and the start ping. Such a command ends with finish(),
        which writes its metrics and pings its exit code."""
        self.healthcheck_url = healthcheck_url
        if healthcheck_url:
            self.log.hide(healthcheck_url)
        self.open()
        self._started_run = True
        self._ping("start")

    def on_exit(self, hook):
        """Call HOOK (no arguments) when the command ends, however it ends,
        before the last log line. Hooks run in the order they were added; one
        that fails is logged and the others still run."""
        self._exit_hooks.append(hook)

    def cleanup_on_exit(self, *paths):
        """Remove PATHS (files or directories) when the command ends."""
        self._cleanup.extend(paths)

    def keep(self, path):
        """Do not remove PATH after all (the log has named it as what to use)."""
        self._cleanup = [p for p in self._cleanup if p != path]

    def quiet(self):
        """-q/--quiet: nothing on stderr; the log file still gets every line."""
        self.log.stderr = "none"

    def elapsed(self):
        return self.clock() - self.started

    # --- the end -----------------------------------------------------------------------------

    def finish(self, code):
        """Run the exit hooks, remove the temporary files, write the last log
        line, the metrics and the ping; return CODE (the process's exit code)."""
        for hook in self._exit_hooks:
            try:
                hook()
            except Interrupted:
                self.log.warn("a second signal arrived while the run was ending; some clean-up was skipped")
                break
            except Exception as exc:  # a clean-up step must not hide the run's own outcome
                self.log.warn(f"clean-up step failed: {exc}")
        self._exit_hooks = []
        for path in self._cleanup:
            _remove(path)
        if self.runner is not None:
            self.runner.close()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._signals is not None:
            self._signals.restore()
        if self._started_run:
            seconds = self.elapsed()
            if code != 0 or not self.quiet_success:
                self.log.finished(code, seconds)
            if self.project.metrics_dir:
                warning = metrics.write_job_metrics(
                    self.project.metrics_dir,
                    self.project.name,
                    self.script,
                    int(code),
                    seconds,
                    self.extra_metrics or None,
                    extra_labels=self.extra_metric_labels,
                )
                if warning:
                    self.log.warn(warning)
            self._ping(str(int(code)))
        return int(code)

    def _ping(self, what):
        if not self.healthcheck_url:
            return
        warning = healthcheck.ping(self.healthcheck_url, what)
        if warning:
            self.log.warn(warning)


def _remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        print(f"could not remove {path}: {exc.strerror}", file=sys.stderr)


def run_command(context, command, args):
    """Run COMMAND(context, args) and end the run: the exit code of the
    Failure it raised, 130 for a signal, 1 (with the error logged) for an
    unexpected exception, 0 otherwise."""
    code = Exit.OK
    try:
        command(context, args)
    except Stop as stop:
        code = stop.code
    except Failure as failure:
        context.log.error(failure.message)
        code = failure.code
    except Interrupted as interrupted:
        context.log.error(f"{interrupted}: stopped")
        code = Exit.INTERRUPTED
    except KeyboardInterrupt:
        context.log.error("interrupted by SIGINT: stopped")
        code = Exit.INTERRUPTED
    except Exception as exc:  # the last resort: a bug, said in one line, with where it happened
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
        context.log.error(f"unexpected failure{where}: {type(exc).__name__}: {exc}")
        code = Exit.INTERNAL
    return context.finish(code)
