"""The values files: what the roles render for each project (the code is the
same everywhere), one JSON object per file, read and checked before a command
does anything. A file that is wrong stops the command with exit code 3 and a
message naming the file and the key, never the value: some values (health-check
URLs) are secrets, and the message goes to logs and mail.

Every key listed in a loader's docstring is required (the templates render
them all, "" or 0 where unused) and no other key is accepted: a misspelt key,
or a secret rendered into the wrong file, stops the command instead of being
ignored. Run as root, a command reads a values file only when root alone can
change it and every directory above it (check_root_owned): what root runs,
root owns.

The rules repeat those of the roles' validate.yml, so that a file written by
hand or by an older role is held to the same ones.
"""

import json
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass, field

from .errors import Exit, Failure

# Far more than any project needs; a larger file is not one of ours.
MAX_VALUES_BYTES = 256 * 1024

PROJECT_NAME = (re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z"), "a Python identifier")
ACCOUNT_NAME = (re.compile(r"[a-z_][a-z0-9_.-]{0,31}\Z"), "a system account name")
MODULE_NAME = (re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z"), "a dotted Python module name")
TABLE_NAME = (re.compile(r"[A-Za-z0-9_.$]+\Z"), "a table name (letters, digits, '_', '.', '$')")
COMMAND_NAME = (re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z"), "a command name (letters, digits, '_', '-')")
REPOSITORY_NAME = (re.compile(r"[A-Za-z0-9_-]{1,40}\Z"), "a repository name (letters, digits, '_', '-')")
HOST_NAME = (re.compile(r"[A-Za-z0-9_.:\[\]][A-Za-z0-9_.:\[\]-]*\Z"), "a host name or address")
SSH_USER = (re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z"), "a user name")
CONTAINER_NAME = (re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)?\Z"), "empty or a container name")
CHECK_SUBSET = (re.compile(r"([0-9]+(\.[0-9]+)?%|[0-9]+/[0-9]+)\Z"), "a percentage (10%) or n/t (1/5)")
S3_URL = (re.compile(r"s3:\S+\Z"), "a restic S3 repository (s3:https://HOST/BUCKET)")
STANZA_NAME = (re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"), "a pgBackRest stanza (letters, digits, '_', '.', '-')")
# Written unquoted into a pg_ctl command line, which a shell reads.
PLAIN_PATH = (re.compile(r"/[A-Za-z0-9_./-]*\Z"), "a path of letters, digits, '_', '.', '-' and '/'")

ROOT_ONLY = "a command running as root reads only values files that root alone can change"


@dataclass(frozen=True)
class Project:
    name: str
    user: str
    group: str | None  # None: the user's primary group
    home: str
    commands_dir: str
    backups_dir: str
    logs_dir: str
    metrics_dir: str  # "": no metrics


@dataclass(frozen=True)
class Pitr:
    stanza: str
    pg_bin: str
    scratch_dir: str
    scratch_port: int
    full_every_days: int = 7
    port: int = 5432
    socket_dir: str = "/var/run/postgresql"
    max_archive_lag: int = 300
    repositories: tuple[int, ...] = (1,)
    diff_after_wal_percent: int = 50
    engine: str = "postgresql"


@dataclass(frozen=True)
class BinlogRepository:
    name: str  # "local" (the first), or "offsite"
    url: str  # restic's repository: a path, or s3:https://HOST:PORT/BUCKET/PATH (no secret in it)
    region: str = ""  # the bucket's region (restic reads it from its environment)
    ca_file: str = ""  # the bucket's CA, "" for the system's


@dataclass(frozen=True)
class MariaPitr:
    """pitr.json on MariaDB: binary logs and mariadb-backup's bases in restic
    repositories (pitr_mariadb)."""

    stanza: str
    socket: str
    spool_dir: str
    password_file: str
    s3_keys_file: str  # "" without an S3 repository
    repositories: tuple[BinlogRepository, ...]
    scratch_dir: str = "/var/lib/djangoops-pitr/scratch"
    scratch_port: int = 5499
    archive_timeout: int = 60
    max_archive_lag: int = 300
    keep_full: int = 2
    engine: str = "mysql"


@dataclass(frozen=True)
class Keep:
    daily: int
    weekly: int
    monthly: int
    safety: int


@dataclass(frozen=True)
class Database:
    engine: str
    credentials_source: str
    client_file: str
    db_name: str
    db_user: str
    db_host: str
    db_port: int
    django_python: str
    django_src_dir: str
    django_settings: str
    django_db_alias: str
    pg_maintenance_db: str
    excluded_table_data: tuple[str, ...]
    postgresql_format: str
    compression: str
    zstd_level: int
    threads: int
    rotation: str
    keep: Keep
    min_free_mb: int
    lock_wait: int
    db_lock_timeout: int
    restore_jobs: int
    media_dir: str
    # Secrets: kept out of repr(), which ends up in tracebacks.
    healthcheck_urls: dict[str, str] = field(repr=False)

    def healthcheck_url(self, command):
        """COMMAND's ping URL, "" when it has none."""
        return self.healthcheck_urls.get(command, "")


@dataclass(frozen=True)
class Repository:
    name: str
    type: str  # ssh or s3
    host: str
    port: int
    user: str
    url: str


@dataclass(frozen=True)
class Offsite:
    dir: str
    timeout: int
    check_subset: str
    verify_from: str  # "": the local backups
    repositories: tuple[Repository, ...]

    def repository(self, name):
        """The repository called NAME, or None."""
        for repo in self.repositories:
            if repo.name == name:
                return repo
        return None


@dataclass(frozen=True)
class Job:
    name: str
    command: str
    container: str  # "": run in src_dir on the host
    healthcheck_url: str = field(repr=False)


@dataclass(frozen=True)
class Jobs:
    src_dir: str
    venv_dir: str
    settings_module: str
    jobs: dict[str, Job]


def load_project(path):
    """The project's values, project.json (role project):

    name: str, the Django project's package (a Python identifier)
    user: str, the system account the commands run as
    group: str, optional (absent, null or ""): the account's primary group
    home, commands_dir, backups_dir, logs_dir: str, absolute paths, not "/"
    metrics_dir: str, absolute path of the Prometheus textfile directory, "" for none
    """
    values = _Object(_file(path), read_values(path))
    group = values.optional("group")
    if group is not None and group != "":
        group = values.string("group", rule=ACCOUNT_NAME)
    else:
        group = None
    project = Project(
        name=values.string("name", rule=PROJECT_NAME),
        user=values.string("user", rule=ACCOUNT_NAME),
        group=group,
        home=values.path("home"),
        commands_dir=values.path("commands_dir"),
        backups_dir=values.path("backups_dir"),
        logs_dir=values.path("logs_dir"),
        metrics_dir=values.path("metrics_dir", empty=True),
    )
    values.finish()
    return project


def load_database(path):
    """The database commands' values, database.json (role db_backup):

    engine: "postgresql" | "mysql"
    credentials_source: "vars" (the client file) | "django" (the site's settings, read at each run)
    client_file: str, absolute path of the 0600 pgpass or my.cnf (vars)
    db_name, db_user: str, not empty (vars); db_host: str ("" = the local socket) (vars)
    db_port: int 0-65535 (0 = the engine's default) (vars)
    django_python: str, absolute path of the virtualenv's python (django)
    django_src_dir: str, absolute path of the site's source (django)
    django_settings: str, dotted settings module (django)
    django_db_alias: str, the DATABASES entry (django)
    pg_maintenance_db: str, not empty, the database DROP/CREATE DATABASE connect to (PostgreSQL)
    excluded_table_data: list of str, tables whose rows are left out
    postgresql_format: "custom" | "plain"
    compression: "zstd" | "gzip"
    zstd_level: int 1-19; threads: int >= 0 (0 = one per core)
    rotation: "gfs" | "weekday"
    keep: {"daily": int >= 1, "weekly": int >= 1, "monthly": int >= 1, "safety": int >= 1}
    min_free_mb: int >= 0; lock_wait: int >= 0 (seconds)
    db_lock_timeout: int >= 1 (seconds); restore_jobs: int >= 1
    media_dir: str, absolute path of MEDIA_ROOT, "" for none
    healthcheck_urls: {command: str}, command without .sh (backup_db, restore_db, verify_db,
        check_offsite), value an http(s) URL or "" for no ping; the commands left out have none

    The keys of the source not chosen are only checked to be strings (or an
    int for db_port): render them as "" (0).
    """
    values = _Object(_file(path), read_values(path))
    source = values.choice("credentials_source", ("vars", "django"))
    by_vars, by_django = source == "vars", source == "django"
    keep = values.object("keep")
    urls = values.object("healthcheck_urls")
    database = Database(
        engine=values.choice("engine", ("postgresql", "mysql")),
        credentials_source=source,
        client_file=values.path("client_file") if by_vars else values.string("client_file"),
        db_name=values.string("db_name", empty=not by_vars),
        db_user=values.string("db_user", empty=not by_vars),
        db_host=values.string("db_host"),
        db_port=values.number("db_port", 0, 65535),
        django_python=values.path("django_python") if by_django else values.string("django_python"),
        django_src_dir=values.path("django_src_dir") if by_django else values.string("django_src_dir"),
        django_settings=values.string("django_settings", rule=MODULE_NAME if by_django else None),
        django_db_alias=values.string("django_db_alias", empty=not by_django),
        pg_maintenance_db=values.string("pg_maintenance_db", empty=False),
        excluded_table_data=values.strings("excluded_table_data", TABLE_NAME),
        postgresql_format=values.choice("postgresql_format", ("custom", "plain")),
        compression=values.choice("compression", ("zstd", "gzip")),
        zstd_level=values.number("zstd_level", 1, 19),
        threads=values.number("threads", 0),
        rotation=values.choice("rotation", ("gfs", "weekday")),
        keep=Keep(
            daily=keep.number("daily", 1),
            weekly=keep.number("weekly", 1),
            monthly=keep.number("monthly", 1),
            safety=keep.number("safety", 1),
        ),
        min_free_mb=values.number("min_free_mb", 0),
        lock_wait=values.number("lock_wait", 0),
        db_lock_timeout=values.number("db_lock_timeout", 1),
        restore_jobs=values.number("restore_jobs", 1),
        media_dir=values.path("media_dir", empty=True),
        healthcheck_urls={command: urls.url(command) for command in urls.keys(COMMAND_NAME)},
    )
    keep.finish()
    values.finish()
    return database


def load_pitr(path):
    """Point-in-time recovery's values, pitr.json (role db_backup, with
    db_backup_pitr; root's alone, read by restore_db.sh --to-time as root).
    With "engine": "mysql", MariaDB's (load_mariadb_pitr); otherwise PostgreSQL's:

    stanza: str, the pgBackRest stanza of the cluster that holds the database
    pg_bin: str, absolute path of the cluster's version's programs (pg_ctl)
    scratch_dir: str, absolute path where a restore to a time recovers the cluster aside
    scratch_port: int 1-65535, the port the recovered cluster listens on (its socket only)
    full_every_days: int 1-366, how old the newest full backup may be before pitr_backup_db.sh
        --type auto takes a full one rather than a differential one
    port: int 1-65535, the port of the live cluster (pitr_check_db.sh asks it how archiving goes)
    socket_dir: str, absolute path of the live cluster's socket directory
    max_archive_lag: int 60-86400, seconds the newest archived WAL may be older than WAL still
        waiting before pitr_check_db.sh fails
    repositories: list of int 1-4, pgBackRest's repositories, the local one (1) first; each
        pitr_backup_db.sh backs up to every one
    diff_after_wal_percent: int 0-1000, between full backups, pitr_backup_db.sh --type auto takes a
        differential backup once the WAL archived since a repository's newest backup has grown to
        this share of the cluster's size, and none before (0: a differential one every run)
    """
    data = read_values(path)
    if isinstance(data, dict) and data.get("engine") == "mysql":
        return load_mariadb_pitr(path, data)
    values = _Object(_file(path), data)
    if "engine" in data:
        values.choice("engine", ("postgresql", "mysql"))
    pitr = Pitr(
        stanza=values.string("stanza", rule=STANZA_NAME),
        pg_bin=values.string("pg_bin", rule=PLAIN_PATH),
        scratch_dir=values.string("scratch_dir", rule=PLAIN_PATH),
        scratch_port=values.number("scratch_port", 1, 65535),
        full_every_days=values.number("full_every_days", 1, 366),
        port=values.number("port", 1, 65535),
        socket_dir=values.string("socket_dir", rule=PLAIN_PATH),
        max_archive_lag=values.number("max_archive_lag", 60, 86400),
        repositories=tuple(values.list("repositories")),
        diff_after_wal_percent=values.number("diff_after_wal_percent", 0, 1000),
    )
    if not pitr.repositories or pitr.repositories[0] != 1 or len(set(pitr.repositories)) != len(pitr.repositories):
        values.fail("repositories", "must list the local repository 1 first, each repository once")
    if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 4 for r in pitr.repositories):
        values.fail("repositories", "must hold numbers from 1 to 4")
    if pitr.scratch_dir.rstrip("/").count("/") < 2:
        values.fail("scratch_dir", "is too close to / for a directory the restore removes")
    values.finish()
    return pitr


def load_mariadb_pitr(path, data):
    """MariaDB's point-in-time recovery values (pitr.json with "engine": "mysql"):

    stanza: str, the name the server's snapshots carry in each repository (restic's host)
    socket: str, absolute path of the live server's socket (root connects by unix_socket)
    spool_dir: str, root's directory of the binary logs archived and the bases' catalogue
    password_file: str, root's 0600 file of the repositories' password
    s3_keys_file: str, root's 0600 JSON file {"access_key_id", "secret_access_key"}, or ""
    repositories: list of {"name": "local"|"offsite", "url", "region", "ca_file"}, local first
    archive_timeout: int 1-60, seconds between two passes of pitr_archive_db.sh
    max_archive_lag: int 60-86400, seconds a write may wait to be archived before pitr_check_db.sh fails
    keep_full: int 1-100, how many bases each repository keeps
    scratch_dir: str, where restore_db.sh --to-time starts a server of its own, removed after
    scratch_port: int 1-65535, the port that server listens on (127.0.0.1)
    """
    values = _Object(_file(path), data)
    values.choice("engine", ("mysql",))
    repositories = []
    for index, item in enumerate(values.list("repositories")):
        repo = _Object(values.file, item, f"repositories[{index}].", "an object")
        repositories.append(
            BinlogRepository(
                name=repo.choice("name", ("local", "offsite")),
                url=repo.string("url", empty=False),
                region=repo.string("region") if "region" in repo.data else "",
                ca_file=repo.path("ca_file", empty=True) if "ca_file" in repo.data else "",
            )
        )
        repo.finish()
    pitr = MariaPitr(
        stanza=values.string("stanza", rule=STANZA_NAME),
        socket=values.path("socket"),
        spool_dir=values.string("spool_dir", rule=PLAIN_PATH),
        password_file=values.path("password_file"),
        s3_keys_file=values.path("s3_keys_file", empty=True),
        repositories=tuple(repositories),
        scratch_dir=values.string("scratch_dir", rule=PLAIN_PATH),
        scratch_port=values.number("scratch_port", 1, 65535),
        archive_timeout=values.number("archive_timeout", 1, 60),
        max_archive_lag=values.number("max_archive_lag", 60, 86400),
        keep_full=values.number("keep_full", 1, 100),
    )
    names = [repo.name for repo in pitr.repositories]
    if not names or names[0] != "local" or len(set(names)) != len(names):
        values.fail("repositories", "must list the local repository first, each repository once")
    if pitr.repositories[0].url != os.path.normpath(pitr.repositories[0].url) or not os.path.isabs(
        pitr.repositories[0].url
    ):
        values.fail("repositories", "must give the local repository as an absolute path")
    if any(repo.url.startswith("s3:") for repo in pitr.repositories) and not pitr.s3_keys_file:
        values.fail("s3_keys_file", "must name the bucket's keys for an S3 repository")
    if pitr.spool_dir.rstrip("/").count("/") < 2:
        values.fail("spool_dir", "is too close to / for a directory the archive prunes")
    if pitr.scratch_dir.rstrip("/").count("/") < 2:
        values.fail("scratch_dir", "is too close to / for a directory the restore removes")
    values.finish()
    return pitr


def load_offsite(path):
    """The off-site repositories' values, offsite.json (role db_backup; the
    secrets are files in dir, never here):

    dir: str, absolute path of the directory holding the repositories' secrets
    timeout: int >= 10, seconds one repository may take in one run
    check_subset: str, restic's --read-data-subset: "10%" or "1/5"
    verify_from: str, "" (the local backups) or the name of one of repositories
    repositories: list of objects, [] for none, each with every key of:
        name: str, letters, digits, "_" and "-", at most 40, unique
        type: "ssh" | "s3"
        host: str, the backup host (ssh; "" for s3)
        port: int 1-65535 (ssh; any 0-65535 for s3)
        user: str, the SSH user (ssh; "" for s3)
        url: str, "s3:https://HOST/BUCKET[/PREFIX]" (s3; "" for ssh)
    """
    file = _file(path)
    values = _Object(file, read_values(path))
    repositories = []
    for index, item in enumerate(values.list("repositories")):
        repo = _Object(file, item, f"repositories[{index}].", "an object")
        kind = repo.choice("type", ("ssh", "s3"))
        ssh = kind == "ssh"
        repositories.append(
            Repository(
                name=repo.string("name", rule=REPOSITORY_NAME),
                type=kind,
                host=repo.string("host", rule=HOST_NAME if ssh else None),
                port=repo.number("port", 1 if ssh else 0, 65535),
                user=repo.string("user", rule=SSH_USER if ssh else None),
                url=repo.string("url", rule=None if ssh else S3_URL),
            )
        )
        repo.finish()
        if [r.name for r in repositories].count(repositories[-1].name) > 1:
            repo.fail("name", "is the name of an earlier repository too")
    offsite = Offsite(
        dir=values.path("dir"),
        timeout=values.number("timeout", 10),
        check_subset=values.string("check_subset", rule=CHECK_SUBSET),
        verify_from=values.string("verify_from"),
        repositories=tuple(repositories),
    )
    if offsite.verify_from and offsite.repository(offsite.verify_from) is None:
        values.fail("verify_from", "names none of the repositories")
    values.finish()
    return offsite


def load_jobs(path):
    """The scheduled jobs' values, jobs.json (role schedule):

    src_dir: str, absolute path of the site's source, where a job's command runs
    venv_dir: str, absolute path of the virtualenv, first on the jobs' PATH
    settings_module: str, the dotted DJANGO_SETTINGS_MODULE
    jobs: {name: {"command": str, "container": str, "healthcheck_url": str}}, name in letters,
        digits, "_" and "-"; command not blank, run by bash in src_dir (sh in the container);
        container "" (on the host) or a Docker container name; healthcheck_url an http(s) URL
        or "" for no ping
    """
    file = _file(path)
    values = _Object(file, read_values(path))
    table = values.object("jobs")
    jobs = {}
    for name in table.keys(COMMAND_NAME):
        job = _Object(file, table.get(name), f"jobs.{name}.", "an object")
        command = job.string("command")
        if not command.strip():
            job.fail("command", "is blank")
        jobs[name] = Job(
            name=name,
            command=command,
            container=job.string("container", rule=CONTAINER_NAME),
            healthcheck_url=job.url("healthcheck_url"),
        )
        job.finish()
    result = Jobs(
        src_dir=values.path("src_dir"),
        venv_dir=values.path("venv_dir"),
        settings_module=values.string("settings_module", rule=MODULE_NAME),
        jobs=jobs,
    )
    values.finish()
    return result


def read_values(path):
    """The JSON object in the file PATH, read at most MAX_VALUES_BYTES, after
    check_root_owned's checks when running as root. Failure(CONFIG) naming the
    file for anything else."""
    file = _file(path)
    # The real path is what gets checked and opened: a symbolic link swapped
    # between the two cannot bring in another file.
    real = os.path.realpath(file)
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the command.
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        raise Failure(Exit.CONFIG, f"{file}: cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Failure(Exit.CONFIG, f"{file}: is not a regular file")
        if os.geteuid() == 0:
            _check_root_owned(file, real, info)
        chunks, size = [], 0
        while size <= MAX_VALUES_BYTES:
            chunk = os.read(fd, MAX_VALUES_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise Failure(Exit.CONFIG, f"{file}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_VALUES_BYTES:
        raise Failure(Exit.CONFIG, f"{file}: is larger than {MAX_VALUES_BYTES} bytes, too large for a values file")
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise Failure(Exit.CONFIG, f"{file}: is not UTF-8 text") from None
    except _Refused as exc:
        raise Failure(Exit.CONFIG, f"{file}: {exc}") from None
    except json.JSONDecodeError as exc:
        # The position and the parser's message, not the text around it: the
        # text could be a secret.
        raise Failure(
            Exit.CONFIG, f"{file}: is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise Failure(Exit.CONFIG, f"{file}: is not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise Failure(Exit.CONFIG, f"{file}: does not hold a JSON object")
    return value


def check_root_owned(path):
    """Run as root, refuse (Failure CONFIG) the file PATH unless root owns it
    and it and every directory above it are writable by no one else (a
    directory with the sticky bit, such as /tmp, protects what root owns in
    it). A user who could change a file root reads, or rename another in its
    place, could have root run what it says. Returns the file's real path. Not
    run as root, there is nothing to protect: it returns at once."""
    file = _file(path)
    real = os.path.realpath(file)
    if os.geteuid() != 0:
        return real
    try:
        info = os.stat(real)
    except OSError as exc:
        raise Failure(Exit.CONFIG, f"{file}: cannot be read ({exc.strerror or exc})") from None
    _check_root_owned(file, real, info)
    return real


def _check_root_owned(file, real, info):
    if info.st_uid != 0:
        raise Failure(Exit.CONFIG, f"{file}: is owned by uid {info.st_uid}, not root; {ROOT_ONLY}")
    if info.st_mode & 0o022:
        raise Failure(
            Exit.CONFIG,
            f"{file}: is writable by its group or others (mode {stat.S_IMODE(info.st_mode):04o}); {ROOT_ONLY}",
        )
    directory = real
    while directory != "/":
        directory = os.path.dirname(directory)
        try:
            above = os.stat(directory)
        except OSError as exc:
            raise Failure(Exit.CONFIG, f"{file}: cannot check {directory} ({exc.strerror or exc})") from None
        if above.st_uid != 0:
            raise Failure(
                Exit.CONFIG, f"{file}: the directory {directory} is owned by uid {above.st_uid}, not root; {ROOT_ONLY}"
            )
        if above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX:
            raise Failure(
                Exit.CONFIG,
                f"{file}: the directory {directory} is writable by its group or others"
                f" (mode {stat.S_IMODE(above.st_mode):04o}); {ROOT_ONLY}",
            )


class _Refused(ValueError):
    """JSON that parses but is refused: a repeated key, NaN."""


def _unique_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {_show(key)} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name):
    raise _Refused(f"holds {name}, which is not a JSON number")


def _file(path):
    return os.fspath(path)


def _show(key):
    """A key from the file, fit for a message: as it is when it looks like a
    key, otherwise quoted and cut (it could be anything, a secret pasted in
    the wrong place included)."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
        return key
    return repr(key[:12] + "...") if len(key) > 12 else repr(key)


class _Object:
    """A JSON object being read: each accessor checks one key and remembers
    it, finish() refuses the keys nobody asked for. Messages name the file and
    the key (PREFIX says where the object is), never the value."""

    def __init__(self, file, data, prefix="", kind=None):
        self.file = file
        self.prefix = prefix
        self.seen = set()
        if not isinstance(data, dict):
            raise Failure(Exit.CONFIG, f"{file}: {prefix.rstrip('.')} must be {kind}")
        self.data = data

    def fail(self, key, text):
        raise Failure(Exit.CONFIG, f"{self.file}: {self.prefix}{key} {text}")

    def get(self, key):
        self.seen.add(key)
        if key not in self.data:
            self.fail(key, "is missing")
        return self.data[key]

    def optional(self, key):
        self.seen.add(key)
        return self.data.get(key)

    def finish(self):
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            self.fail(_show(unknown[0]), "is not a known key")

    def string(self, key, *, empty=True, rule=None):
        value = self.get(key)
        if not isinstance(value, str):
            self.fail(key, "must be a string")
        if "\0" in value:
            self.fail(key, "holds a NUL character")
        if not value and not empty:
            self.fail(key, "must not be empty")
        if rule is not None and not rule[0].match(value):
            self.fail(key, f"must be {rule[1]}")
        return value

    def path(self, key, *, empty=False):
        value = self.string(key)
        if empty and not value:
            return value
        if not os.path.isabs(value) or os.path.normpath(value) in ("/", "//"):
            self.fail(key, "must be an absolute path other than /" + (", or empty" if empty else ""))
        # "/srv/media/" and "/srv/media" are one directory: names made beside it
        # (MEDIA_ROOT.restoring.PID) must not land inside it.
        return os.path.normpath(value)

    def number(self, key, lowest, highest=None):
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "must be a whole number")
        if highest is None and value < lowest:
            self.fail(key, f"must be at least {lowest}")
        if highest is not None and not lowest <= value <= highest:
            self.fail(key, f"must be from {lowest} to {highest}")
        return value

    def choice(self, key, choices):
        value = self.get(key)
        if value not in choices or not isinstance(value, str):
            self.fail(key, "must be one of " + ", ".join(choices))
        return value

    def list(self, key):
        value = self.get(key)
        if not isinstance(value, list):
            self.fail(key, "must be a list")
        return value

    def strings(self, key, rule):
        items = self.list(key)
        for item in items:
            if not isinstance(item, str) or not rule[0].match(item):
                self.fail(key, f"must be a list of strings, each {rule[1]}")
        return tuple(items)

    def object(self, key):
        return _Object(self.file, self.get(key), f"{self.prefix}{key}.", "an object")

    def keys(self, rule):
        """The keys of an object whose keys are names (commands, jobs), each
        checked against RULE, in the file's order."""
        for key in self.data:
            if not rule[0].match(key):
                raise Failure(Exit.CONFIG, f"{self.file}: {self.prefix}{_show(key)} is not {rule[1]}")
        return list(self.data)

    def url(self, key):
        """An http(s) URL or "". Its value is a secret: messages say what is
        wrong with it without quoting it."""
        value = self.string(key)
        if not value:
            return value
        try:
            parts = urllib.parse.urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value):
            self.fail(key, "must be an http(s) URL or empty")
        return value
