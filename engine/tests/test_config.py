"""The values files: what each loader returns for a good file, and for each
wrong key the message naming the file and the key, never a secret value."""

import json
import os
import pathlib
import sys

import pytest

ENGINE = pathlib.Path(__file__).resolve().parents[1]
if str(ENGINE) not in sys.path:
    sys.path.insert(0, str(ENGINE))

from command_helpers import DATABASE_VALUES  # noqa: E402
from djangoops import config  # noqa: E402
from djangoops.errors import Exit, Failure  # noqa: E402

SECRET_URL = "https://hc-ping.example/0f3c9a4e-secret-key"

PROJECT = {
    "name": "shop",
    "user": "shop",
    "group": "www-data",
    "home": "/home/shop",
    "commands_dir": "/home/shop/commands",
    "backups_dir": "/home/shop/db_backups",
    "logs_dir": "/home/shop/logs",
    "metrics_dir": "/var/lib/prometheus/node-exporter",
}

DATABASE = {
    **DATABASE_VALUES,
    "client_file": "/home/shop/.djangoops/pgpass",
    "db_name": "shop db 'é'",
    "excluded_table_data": ["django_session", "public.audit$log"],
    "min_free_mb": 100,
    "lock_wait": 600,
    "restore_jobs": 2,
    "healthcheck_urls": {"backup_db": SECRET_URL, "verify_db": ""},
}

DJANGO_SOURCE = {
    "credentials_source": "django",
    "client_file": "",
    "db_name": "",
    "db_user": "",
    "django_python": "/home/shop/env/bin/python",
    "django_src_dir": "/home/shop/src/shop",
    "django_settings": "shop.settings.production",
    "django_db_alias": "default",
}

OFFSITE = {
    "dir": "/home/shop/.djangoops/offsite",
    "timeout": 3600,
    "check_subset": "10%",
    "verify_from": "nas",
    "repositories": [
        {"name": "nas", "type": "ssh", "host": "backup.example.org", "port": 2222, "user": "offsite", "url": ""},
        {"name": "s3-eu", "type": "s3", "host": "", "port": 0, "user": "", "url": "s3:https://s3.example/bucket/shop"},
    ],
}

JOBS = {
    "src_dir": "/home/shop/src/shop",
    "venv_dir": "/home/shop/env",
    "settings_module": "shop.settings.production",
    "jobs": {
        "clear_sessions": {"command": "python manage.py clearsessions", "container": "", "healthcheck_url": ""},
        "send-digest": {"command": "python manage.py digest", "container": "shop_web.1", "healthcheck_url": SECRET_URL},
    },
}


def write(tmp_path, values, name="values.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values) if not isinstance(values, str) else values)
    return path


def refused(loader, path):
    with pytest.raises(Failure) as info:
        loader(path)
    assert info.value.code == Exit.CONFIG
    assert SECRET_URL not in info.value.message and "secret" not in info.value.message
    return info.value.message


def changed(base, key, value):
    """BASE with KEY (a dotted path; list items by number) set to VALUE, or
    removed when VALUE is ..."""
    values = json.loads(json.dumps(base))
    *parents, last = key.split(".")
    target = values
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        last = int(last)
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return values


# --- project -------------------------------------------------------------------


def test_project(tmp_path):
    project = config.load_project(write(tmp_path, PROJECT))
    assert project == config.Project(
        name="shop",
        user="shop",
        group="www-data",
        home="/home/shop",
        commands_dir="/home/shop/commands",
        backups_dir="/home/shop/db_backups",
        logs_dir="/home/shop/logs",
        metrics_dir="/var/lib/prometheus/node-exporter",
    )


def test_paths_are_normalized_without_a_trailing_slash(tmp_path):
    # "/srv/media/" and "/srv/media" are one directory: names made beside it
    # (MEDIA_ROOT.restoring.PID) must not land inside it.
    values = PROJECT | {
        "home": "/home/shop/",
        "backups_dir": "/home/shop//db_backups/",
        "logs_dir": "/home/shop/./logs",
    }
    project = config.load_project(write(tmp_path, values))
    assert (project.home, project.backups_dir, project.logs_dir) == (
        "/home/shop",
        "/home/shop/db_backups",
        "/home/shop/logs",
    )
    database = config.load_database(write(tmp_path, DATABASE | {"media_dir": "/home/shop/media/"}))
    assert database.media_dir == "/home/shop/media"
    assert config.load_database(write(tmp_path, DATABASE)).media_dir == ""  # empty stays empty
    offsite = config.load_offsite(write(tmp_path, OFFSITE | {"dir": "/home/shop/.djangoops/offsite/"}))
    assert offsite.dir == "/home/shop/.djangoops/offsite"
    jobs = config.load_jobs(write(tmp_path, JOBS | {"src_dir": "/home/shop/src/shop/", "venv_dir": "/home/shop/env/"}))
    assert (jobs.src_dir, jobs.venv_dir) == ("/home/shop/src/shop", "/home/shop/env")


@pytest.mark.parametrize("group", [..., None, ""])
def test_project_group_is_optional(tmp_path, group):
    values = changed(PROJECT, "group", group) | {"metrics_dir": ""}
    project = config.load_project(write(tmp_path, values))
    assert project.group is None
    assert project.metrics_dir == ""


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("name", ..., "name is missing"),
        ("name", "my-shop", "name must be a Python identifier"),
        ("name", 3, "name must be a string"),
        ("user", "Shop", "user must be a system account name"),
        ("group", "9", "group must be a system account name"),
        ("group", 5, "group must be a string"),
        ("home", "home/shop", "home must be an absolute path other than /"),
        ("home", "/", "home must be an absolute path other than /"),
        ("logs_dir", "//", "logs_dir must be an absolute path other than /"),
        ("logs_dir", "", "logs_dir must be an absolute path other than /"),
        ("backups_dir", "/a\0b", "backups_dir holds a NUL character"),
        ("metrics_dir", "metrics", "metrics_dir must be an absolute path other than /, or empty"),
        ("extra", 1, "extra is not a known key"),
    ],
)
def test_project_refusals(tmp_path, key, value, message):
    path = write(tmp_path, changed(PROJECT, key, value) if key in PROJECT else PROJECT | {key: value})
    assert refused(config.load_project, path) == f"{path}: {message}"


# --- database --------------------------------------------------------------------


def test_database_vars(tmp_path):
    database = config.load_database(write(tmp_path, DATABASE))
    assert database.engine == "postgresql"
    assert database.credentials_source == "vars"
    assert database.client_file == "/home/shop/.djangoops/pgpass"
    assert database.db_name == "shop db 'é'"
    assert database.db_port == 0
    assert database.excluded_table_data == ("django_session", "public.audit$log")
    assert database.keep == config.Keep(daily=7, weekly=4, monthly=6, safety=2)
    assert (database.zstd_level, database.threads, database.min_free_mb) == (1, 0, 100)
    assert (database.lock_wait, database.db_lock_timeout, database.restore_jobs) == (600, 30, 2)
    assert database.healthcheck_urls == {"backup_db": SECRET_URL, "verify_db": ""}
    assert database.healthcheck_url("backup_db") == SECRET_URL
    assert database.healthcheck_url("restore_db") == ""
    # The URLs stay out of repr(), which tracebacks and debug logs show.
    assert "secret" not in repr(database)


def test_database_django(tmp_path):
    values = DATABASE | DJANGO_SOURCE | {"engine": "mysql", "media_dir": "/home/shop/media", "db_port": 3306}
    database = config.load_database(write(tmp_path, values))
    assert database.credentials_source == "django"
    assert database.django_python == "/home/shop/env/bin/python"
    assert database.django_src_dir == "/home/shop/src/shop"
    assert database.django_settings == "shop.settings.production"
    assert database.django_db_alias == "default"
    assert database.client_file == ""
    assert database.media_dir == "/home/shop/media"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("engine", "postgres", "engine must be one of postgresql, mysql"),
        ("engine", ["postgresql"], "engine must be one of postgresql, mysql"),
        ("credentials_source", ..., "credentials_source is missing"),
        ("client_file", "", "client_file must be an absolute path other than /"),
        ("client_file", None, "client_file must be a string"),
        ("db_name", "", "db_name must not be empty"),
        ("db_user", "", "db_user must not be empty"),
        ("db_host", 5, "db_host must be a string"),
        ("db_port", 70000, "db_port must be from 0 to 65535"),
        ("db_port", "5432", "db_port must be a whole number"),
        ("db_port", 5432.0, "db_port must be a whole number"),
        ("db_port", True, "db_port must be a whole number"),
        ("django_settings", 1, "django_settings must be a string"),
        ("pg_maintenance_db", "", "pg_maintenance_db must not be empty"),
        ("excluded_table_data", "django_session", "excluded_table_data must be a list"),
        (
            "excluded_table_data",
            ["ok", "bad table"],
            "excluded_table_data must be a list of strings, each a table name (letters, digits, '_', '.', '$')",
        ),
        (
            "excluded_table_data",
            [1],
            "excluded_table_data must be a list of strings, each a table name (letters, digits, '_', '.', '$')",
        ),
        ("postgresql_format", "directory", "postgresql_format must be one of custom, plain"),
        ("compression", "xz", "compression must be one of zstd, gzip"),
        ("zstd_level", 0, "zstd_level must be from 1 to 19"),
        ("zstd_level", 20, "zstd_level must be from 1 to 19"),
        ("threads", -1, "threads must be at least 0"),
        ("rotation", "daily", "rotation must be one of gfs, weekday"),
        ("keep", [7, 4, 6, 2], "keep must be an object"),
        ("keep.weekly", 0, "keep.weekly must be at least 1"),
        ("keep.safety", ..., "keep.safety is missing"),
        ("keep.yearly", 1, "keep.yearly is not a known key"),
        ("min_free_mb", -5, "min_free_mb must be at least 0"),
        ("lock_wait", None, "lock_wait must be a whole number"),
        ("db_lock_timeout", 0, "db_lock_timeout must be at least 1"),
        ("restore_jobs", 0, "restore_jobs must be at least 1"),
        ("media_dir", "media", "media_dir must be an absolute path other than /, or empty"),
        ("healthcheck_urls", SECRET_URL, "healthcheck_urls must be an object"),
        (
            "healthcheck_urls.backup_db",
            "hc-ping.example/0f3c9a4e-secret-key",
            "healthcheck_urls.backup_db must be an http(s) URL or empty",
        ),
        (
            "healthcheck_urls.backup_db",
            "ftp://x.example/secret",
            "healthcheck_urls.backup_db must be an http(s) URL or empty",
        ),
        ("healthcheck_urls.backup_db", "http://[secret/", "healthcheck_urls.backup_db must be an http(s) URL or empty"),
        ("healthcheck_urls.backup_db", SECRET_URL + " x", "healthcheck_urls.backup_db must be an http(s) URL or empty"),
        ("healthcheck_urls.backup_db", ["https://x.example/"], "healthcheck_urls.backup_db must be a string"),
        (
            "healthcheck_urls.backup.db",
            "",
            "healthcheck_urls.backup.db is not a command name (letters, digits, '_', '-')",
        ),
        ("db_password", "secret", "db_password is not a known key"),
    ],
)
def test_database_refusals(tmp_path, key, value, message):
    values = json.loads(json.dumps(DATABASE))
    # One level of nesting at most; a command name may hold a dot.
    top, _dot, sub = key.partition(".")
    target, name = (values[top], sub) if sub else (values, top)
    if value is ...:
        del target[name]
    else:
        target[name] = value
    path = write(tmp_path, values)
    assert refused(config.load_database, path) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("django_python", "", "django_python must be an absolute path other than /"),
        ("django_src_dir", "src", "django_src_dir must be an absolute path other than /"),
        ("django_settings", "shop/settings", "django_settings must be a dotted Python module name"),
        ("django_db_alias", "", "django_db_alias must not be empty"),
    ],
)
def test_database_django_refusals(tmp_path, key, value, message):
    path = write(tmp_path, DATABASE | DJANGO_SOURCE | {key: value})
    assert refused(config.load_database, path) == f"{path}: {message}"


# --- off-site --------------------------------------------------------------------


def test_offsite(tmp_path):
    offsite = config.load_offsite(write(tmp_path, OFFSITE))
    assert offsite.dir == "/home/shop/.djangoops/offsite"
    assert (offsite.timeout, offsite.check_subset, offsite.verify_from) == (3600, "10%", "nas")
    assert offsite.repositories == (
        config.Repository(name="nas", type="ssh", host="backup.example.org", port=2222, user="offsite", url=""),
        config.Repository(name="s3-eu", type="s3", host="", port=0, user="", url="s3:https://s3.example/bucket/shop"),
    )
    assert offsite.repository("s3-eu").type == "s3"
    assert offsite.repository("gone") is None


def test_offsite_none(tmp_path):
    offsite = config.load_offsite(
        write(tmp_path, OFFSITE | {"repositories": [], "verify_from": "", "check_subset": "1/5"})
    )
    assert offsite.repositories == ()
    assert offsite.verify_from == ""


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dir", "", "dir must be an absolute path other than /"),
        ("timeout", 9, "timeout must be at least 10"),
        ("check_subset", "ten", "check_subset must be a percentage (10%) or n/t (1/5)"),
        ("check_subset", 10, "check_subset must be a string"),
        ("verify_from", "elsewhere", "verify_from names none of the repositories"),
        ("repositories", {}, "repositories must be a list"),
        ("repositories.0", "nas", "repositories[0] must be an object"),
        ("repositories.0.name", "n a s", "repositories[0].name must be a repository name (letters, digits, '_', '-')"),
        ("repositories.1.name", "nas", "repositories[1].name is the name of an earlier repository too"),
        ("repositories.0.type", "sftp", "repositories[0].type must be one of ssh, s3"),
        ("repositories.0.host", "", "repositories[0].host must be a host name or address"),
        ("repositories.0.host", "-oProxyCommand=x", "repositories[0].host must be a host name or address"),
        ("repositories.0.port", 0, "repositories[0].port must be from 1 to 65535"),
        ("repositories.0.user", "", "repositories[0].user must be a user name"),
        ("repositories.0.url", ..., "repositories[0].url is missing"),
        (
            "repositories.1.url",
            "https://s3.example/bucket",
            "repositories[1].url must be a restic S3 repository (s3:https://HOST/BUCKET)",
        ),
        ("repositories.1.port", 70000, "repositories[1].port must be from 0 to 65535"),
        ("repositories.1.private_key", "-----BEGIN", "repositories[1].private_key is not a known key"),
    ],
)
def test_offsite_refusals(tmp_path, key, value, message):
    path = write(tmp_path, changed(OFFSITE, key, value))
    assert refused(config.load_offsite, path) == f"{path}: {message}"


# --- jobs --------------------------------------------------------------------------


def test_jobs(tmp_path):
    jobs = config.load_jobs(write(tmp_path, JOBS))
    assert (jobs.src_dir, jobs.venv_dir, jobs.settings_module) == (
        "/home/shop/src/shop",
        "/home/shop/env",
        "shop.settings.production",
    )
    assert list(jobs.jobs) == ["clear_sessions", "send-digest"]
    digest = jobs.jobs["send-digest"]
    assert (digest.name, digest.command, digest.container, digest.healthcheck_url) == (
        "send-digest",
        "python manage.py digest",
        "shop_web.1",
        SECRET_URL,
    )
    assert jobs.jobs["clear_sessions"].container == ""
    assert "secret" not in repr(jobs)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("src_dir", "src", "src_dir must be an absolute path other than /"),
        ("venv_dir", ..., "venv_dir is missing"),
        ("settings_module", "shop.settings.", "settings_module must be a dotted Python module name"),
        ("jobs", [], "jobs must be an object"),
        ("jobs.clear_sessions", "python manage.py clearsessions", "jobs.clear_sessions must be an object"),
        ("jobs.clear_sessions.command", "  ", "jobs.clear_sessions.command is blank"),
        ("jobs.clear_sessions.container", "-it", "jobs.clear_sessions.container must be empty or a container name"),
        (
            "jobs.send-digest.healthcheck_url",
            "hc-ping.example/secret",
            "jobs.send-digest.healthcheck_url must be an http(s) URL or empty",
        ),
        ("jobs.send-digest.time", "daily", "jobs.send-digest.time is not a known key"),
    ],
)
def test_jobs_refusals(tmp_path, key, value, message):
    path = write(tmp_path, changed(JOBS, key, value))
    assert refused(config.load_jobs, path) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("name", "shown"),
    [("../etc", "'../etc'"), ("a" * 70, "'aaaaaaaaaaaa...'"), (SECRET_URL, "'https://hc-p...'")],
)
def test_jobs_bad_names_are_shown_cut(tmp_path, name, shown):
    values = json.loads(json.dumps(JOBS))
    values["jobs"][name] = {"command": "x", "container": "", "healthcheck_url": ""}
    path = write(tmp_path, values)
    message = refused(config.load_jobs, path)
    assert message.startswith(f"{path}: jobs.{shown} is not")


# --- reading -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": ', "is not valid JSON (Expecting value at line 1 column 10)"),
        (f'{{"a": "{SECRET_URL}" "b"}}', "is not valid JSON (Expecting ',' delimiter at line 1 column"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"name": "a", "name": "b"}', "the key name appears twice in one object"),
        ('{"x": NaN}', "holds NaN, which is not a JSON number"),
        ("[" * 100_000, "is not valid JSON (nested too deeply)"),
    ],
)
def test_bad_json(tmp_path, text, message):
    path = write(tmp_path, text)
    assert refused(config.load_project, path).startswith(f"{path}: {message}")


def test_not_utf8(tmp_path):
    path = tmp_path / "values.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    assert refused(config.load_project, path) == f"{path}: is not UTF-8 text"


def test_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MAX_VALUES_BYTES", 64)
    path = write(tmp_path, {"x": "y" * 60})
    assert refused(config.load_project, path) == f"{path}: is larger than 64 bytes, too large for a values file"


def test_missing_file(tmp_path):
    path = tmp_path / "gone.json"
    assert refused(config.load_jobs, path) == f"{path}: cannot be read (No such file or directory)"


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    # O_NONBLOCK: opening a FIFO with no writer does not hang.
    assert refused(config.load_jobs, fifo) == f"{fifo}: is not a regular file"
    assert refused(config.load_jobs, tmp_path) == f"{tmp_path}: is not a regular file"


def test_read_error(tmp_path, monkeypatch):
    path = write(tmp_path, PROJECT)

    def broken(fd, size):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(config.os, "read", broken)
    assert refused(config.load_project, path) == f"{path}: cannot be read (Input/output error)"


def test_short_reads_are_joined(tmp_path, monkeypatch):
    path = write(tmp_path, PROJECT)
    real_read = os.read
    monkeypatch.setattr(config.os, "read", lambda fd, size: real_read(fd, min(size, 7)))
    assert config.load_project(path).name == "shop"


def test_symlink_is_followed_to_a_root_owned_file(tmp_path):
    real = write(tmp_path, PROJECT, "real.json")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert config.load_project(link).name == "shop"
    assert config.check_root_owned(link) == str(real)


# --- what root reads ----------------------------------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the ownership checks apply to root")


@root_only
def test_root_reads_a_file_root_owns(tmp_path):
    path = write(tmp_path, PROJECT)
    os.chmod(path, 0o640)
    os.chown(path, 0, 65534)
    assert config.load_project(path).name == "shop"
    assert config.check_root_owned(path) == str(path)


@root_only
def test_root_refuses_a_file_another_user_owns(tmp_path):
    path = write(tmp_path, PROJECT)
    os.chown(path, 65534, 0)
    expected = (
        f"{path}: is owned by uid 65534, not root; a command running as root reads only values files that root"
        " alone can change"
    )
    assert refused(config.load_project, path) == expected
    assert refused(config.check_root_owned, path) == expected


@root_only
@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_root_refuses_a_file_others_can_write(tmp_path, mode):
    path = write(tmp_path, PROJECT)
    os.chmod(path, mode)
    assert refused(config.load_project, path).startswith(
        f"{path}: is writable by its group or others (mode {mode:04o}); a command running as root"
    )


@root_only
@pytest.mark.parametrize(
    ("spoil", "complaint"),
    [
        (lambda directory: os.chown(directory, 65534, 65534), "is owned by uid 65534, not root;"),
        (lambda directory: os.chmod(directory, 0o775), "is writable by its group or others (mode 0775);"),
    ],
)
def test_root_refuses_a_directory_others_control(tmp_path, spoil, complaint):
    directory = tmp_path / "etc"
    directory.mkdir()
    path = write(directory, PROJECT)
    spoil(directory)
    assert refused(config.load_project, path).startswith(f"{path}: the directory {directory} {complaint}")
    if "writable" in complaint:
        # The sticky bit protects what root owns in it, as in /tmp.
        os.chmod(directory, 0o1777)
        assert config.load_project(path).name == "shop"


@root_only
def test_root_refuses_a_file_reached_through_another_users_link(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    real = write(theirs, PROJECT)
    os.chown(theirs, 65534, 65534)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    # The check is on the file the link leads to, and the directories above it.
    assert f"the directory {theirs} is owned by uid 65534" in refused(config.load_project, link)


@root_only
def test_root_check_of_a_directory_that_cannot_be_read(tmp_path, monkeypatch):
    path = write(tmp_path, PROJECT)
    real_stat = os.stat

    def stat(name, *args, **kwargs):
        if str(name) == str(tmp_path):
            raise PermissionError(13, "Permission denied")
        return real_stat(name, *args, **kwargs)

    monkeypatch.setattr(config.os, "stat", stat)
    assert refused(config.load_project, path) == f"{path}: cannot check {tmp_path} (Permission denied)"


@root_only
def test_root_check_of_a_missing_file(tmp_path):
    path = tmp_path / "gone.json"
    assert refused(config.check_root_owned, path) == f"{path}: cannot be read (No such file or directory)"


def test_other_users_are_not_checked(tmp_path, monkeypatch):
    path = write(tmp_path, PROJECT)
    os.chmod(path, 0o666)
    monkeypatch.setattr(config.os, "geteuid", lambda: 1500)
    assert config.load_project(path).name == "shop"
    assert config.check_root_owned(path) == str(path)
