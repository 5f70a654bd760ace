"""Where a command's database connection comes from: the role's 0600 client
file (credentials_source "vars"), or the site's own Django settings, read once
per run (credentials_source "django"), so that a password changed in the
settings needs no second copy.

Only the settings module is imported (no django.setup()); the password stays in
this process and in a 0600 client file in the run's private directory, and
never reaches a command line or the log.
"""

import os
import re
import time

from .engines.base import Connection
from .errors import Exit, Failure
from .runner import CAPTURE, CommandFailed

# Run by the site's own Python in its source directory: ENGINE NAME USER
# PASSWORD HOST PORT, NUL-separated. The message of an exception, never a
# traceback that could quote settings.
READ_SETTINGS = """
import sys
try:
    from django.conf import settings
    db = settings.DATABASES[sys.argv[1]]
except Exception as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}\\n")
    sys.exit(1)
keys = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")
sys.stdout.write("".join(f"{'' if db.get(k) is None else db.get(k)}\\0" for k in keys))
"""

SETTINGS_TIMEOUT = 120  # seconds: importing a large project's settings is slow, never endless


def from_file(settings, log):
    """The role's client file (vars)."""
    if not os.access(settings.client_file, os.R_OK):
        raise Failure(Exit.CONFIG, f"the credentials file {settings.client_file} is missing or unreadable")
    connection = Connection(
        name=settings.db_name,
        user=settings.db_user,
        host=settings.db_host,
        port=str(settings.db_port) if settings.db_port else "",
        client_file=settings.client_file,
    )
    log.info(f'database "{connection.name}" as "{connection.user}" from {settings.client_file}')
    return connection


def from_django(settings, engine_class, runner, log, run_dir, clock=time.monotonic):
    """DATABASES[alias] of the site's settings, the password written into a
    0600 client file in RUN_DIR for the engine's tools."""
    started = clock()
    if not os.access(settings.django_python, os.X_OK):
        raise Failure(Exit.CONFIG, f"no Python at {settings.django_python} (project_venv_dir)")
    if not os.path.isdir(settings.django_src_dir):
        raise Failure(Exit.CONFIG, f"no Django project at {settings.django_src_dir} (project_src_dir)")
    alias = settings.django_db_alias
    where = f"DATABASES['{alias}'] in {settings.django_settings}"
    try:
        result = runner.run(
            [settings.django_python, "-c", READ_SETTINGS, alias],
            env={"DJANGO_SETTINGS_MODULE": settings.django_settings},
            cwd=settings.django_src_dir,
            stdout=CAPTURE,
            timeout=SETTINGS_TIMEOUT,
            name="python",
        )
    except CommandFailed as failed:
        last = failed.stderr.splitlines()[-1] if failed.stderr.strip() else failed.reason()
        raise Failure(
            Exit.CONFIG, f"reading DATABASES['{alias}'] from {settings.django_settings} failed: {last}"
        ) from None
    fields = result.stdout.decode("utf-8", "surrogateescape").split("\0")
    if len(fields) != 7 or fields[-1] != "":
        raise Failure(Exit.CONFIG, f"{where} could not be read")
    engine, name, user, password, host, port = fields[:6]
    if not any(re.search(pattern, engine) for pattern in engine_class.django_engines):
        raise Failure(
            Exit.CONFIG,
            f"DATABASES['{alias}'] uses ENGINE {engine}, but these scripts were set up for "
            f"{engine_class.name} (db_backup_engine)",
        )
    if not name:
        raise Failure(Exit.CONFIG, f"DATABASES['{alias}'] has no NAME")
    connection = Connection(
        name=name,
        user=user,
        host=host,
        port="" if port in ("", "0") else port,
        client_file=os.path.join(run_dir, "client"),
    )
    content = engine_class.client_file_text(connection, password)
    fd = os.open(connection.client_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    log.hide(password)
    took = clock() - started
    log.info(f'database "{name}" as "{user}" from {settings.django_settings}, read in {took:.1f} s')
    return connection


def load(settings, engine_class, runner, log, run_dir):
    """The connection, from the source the role chose."""
    if settings.credentials_source == "django":
        return from_django(settings, engine_class, runner, log, run_dir)
    return from_file(settings, log)
