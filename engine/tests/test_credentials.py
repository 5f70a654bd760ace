"""Where the connection comes from: the role's client file, or the site's Django
settings read by its own Python (scripted on the FakeRunner): the NUL-separated
answer parsed, the wrong ENGINE or no NAME refused, the password in a 0600 file
of the run's directory and hidden from the log, a failing Python said in one
line."""

import os
import stat
import subprocess
import sys
import types

import pytest
from djangoops import credentials
from djangoops.engines.mysql import MySQL
from djangoops.engines.postgresql import PostgreSQL
from djangoops.errors import Exit, Failure
from djangoops.log import Log
from fakes import FakeRunner

PASSWORD = "s3cr:et\\pass"


def answer(*fields):
    return "".join(f"{field}\0" for field in fields).encode()


@pytest.fixture
def site(tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    settings = types.SimpleNamespace(
        credentials_source="django",
        client_file="",
        db_name="",
        db_user="",
        db_host="",
        db_port=0,
        django_python=str(python),
        django_src_dir=str(src),
        django_settings="shop.settings.production",
        django_db_alias="default",
    )
    log = Log("backup_db", tmp_path / "backup_db.log", stderr="none")
    return types.SimpleNamespace(settings=settings, log=log, run_dir=str(run_dir), fake=FakeRunner(), tmp=tmp_path)


def read_log(site):
    path = site.tmp / "backup_db.log"
    return path.read_text() if path.exists() else ""


def from_django(site, engine_class=PostgreSQL):
    return credentials.from_django(
        site.settings, engine_class, site.fake, site.log, site.run_dir, clock=iter([10.0, 10.25]).__next__
    )


# --- from the client file --------------------------------------------------------------------------


def test_from_file_takes_the_values_and_the_client_file(tmp_path):
    client = tmp_path / "pgpass"
    client.write_text("*:*:*:*:pw\n")
    settings = types.SimpleNamespace(
        credentials_source="vars",
        client_file=str(client),
        db_name="shop",
        db_user="shop_user",
        db_host="db.internal",
        db_port=6432,
    )
    log = Log("backup_db", tmp_path / "log", stderr="none")
    connection = credentials.load(settings, PostgreSQL, FakeRunner(), log, str(tmp_path))
    assert (connection.name, connection.user, connection.host, connection.port) == (
        "shop",
        "shop_user",
        "db.internal",
        "6432",
    )
    assert connection.client_file == str(client)
    assert (tmp_path / "log").read_text().rstrip().endswith(f'INFO  database "shop" as "shop_user" from {client}')
    settings.db_port = 0
    assert credentials.from_file(settings, log).port == ""


def test_a_missing_client_file_exits_3(tmp_path):
    settings = types.SimpleNamespace(client_file=str(tmp_path / "pgpass"))
    with pytest.raises(Failure) as caught:
        credentials.from_file(settings, Log("x", None))
    assert caught.value.code == Exit.CONFIG
    assert caught.value.message == f"the credentials file {tmp_path / 'pgpass'} is missing or unreadable"


# --- from Django's settings --------------------------------------------------------------------------


def test_the_settings_answer_is_parsed_and_the_password_kept_in_a_0600_file(site):
    site.fake.on("python", stdout=answer("django.db.backends.postgresql", "shop", "shop_user", PASSWORD, "db", 5432))

    connection = from_django(site)

    assert (connection.name, connection.user, connection.host, connection.port) == ("shop", "shop_user", "db", "5432")
    assert connection.client_file == os.path.join(site.run_dir, "client")
    assert stat.S_IMODE(os.stat(connection.client_file).st_mode) == 0o600
    with open(connection.client_file, encoding="utf-8") as f:
        assert f.read() == "*:*:*:*:s3cr\\:et\\\\pass\n"
    [call] = site.fake.calls
    assert call.argv == [site.settings.django_python, "-c", credentials.READ_SETTINGS, "default"]
    assert call.env == {"DJANGO_SETTINGS_MODULE": "shop.settings.production"}
    assert call.cwd == site.settings.django_src_dir
    assert call.timeout == credentials.SETTINGS_TIMEOUT
    assert PASSWORD not in " ".join(call.argv)
    log = read_log(site)
    assert 'database "shop" as "shop_user" from shop.settings.production, read in 0.2 s' in log
    assert PASSWORD not in log
    # Any later line quoting the password is redacted.
    site.log.error(f"psql: password {PASSWORD} rejected")
    assert read_log(site).splitlines()[-1].endswith("ERROR psql: password [redacted] rejected")


@pytest.mark.parametrize(("port", "expected"), [("", ""), ("0", ""), ("3307", "3307")])
def test_mysql_settings_and_the_default_port(site, port, expected):
    site.fake.on("python", stdout=answer("django.db.backends.mysql", "shop", "u", "pw", "", port))
    connection = from_django(site, MySQL)
    assert connection.port == expected
    with open(connection.client_file, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("[client]\n") and "password=" in text


@pytest.mark.parametrize(
    ("engine", "engine_class"),
    [("django.db.backends.postgresql_psycopg2", PostgreSQL), ("django.contrib.gis.db.backends.postgis", PostgreSQL)],
)
def test_postgresql_engines_django_knows(site, engine, engine_class):
    site.fake.on("python", stdout=answer(engine, "shop", "u", "pw", "", ""))
    assert from_django(site, engine_class).name == "shop"


def test_the_wrong_engine_is_refused(site):
    site.fake.on("python", stdout=answer("django.db.backends.sqlite3", "/srv/db.sqlite3", "", "", "", ""))
    with pytest.raises(Failure) as caught:
        from_django(site)
    assert caught.value.code == Exit.CONFIG
    assert caught.value.message == (
        "DATABASES['default'] uses ENGINE django.db.backends.sqlite3, but these scripts were set up for "
        "postgresql (db_backup_engine)"
    )
    assert os.listdir(site.run_dir) == []


def test_no_name_is_refused(site):
    site.fake.on("python", stdout=answer("django.db.backends.postgresql", "", "u", "pw", "", ""))
    with pytest.raises(Failure, match=r"^DATABASES\['default'\] has no NAME$") as caught:
        from_django(site)
    assert caught.value.code == Exit.CONFIG


@pytest.mark.parametrize("stdout", [b"", b"django.db.backends.postgresql\0shop\0", answer(*"1234567")])
def test_an_answer_of_the_wrong_shape_is_refused(site, stdout):
    site.fake.on("python", stdout=stdout)
    with pytest.raises(Failure) as caught:
        from_django(site)
    assert caught.value.message == "DATABASES['default'] in shop.settings.production could not be read"


def test_a_failing_python_exits_3_with_its_last_stderr_line(site):
    site.fake.on("python", fail=1, stderr="warning: something\nKeyError: 'replica'\n")
    with pytest.raises(Failure) as caught:
        from_django(site)
    assert caught.value.code == Exit.CONFIG
    assert caught.value.message == (
        "reading DATABASES['default'] from shop.settings.production failed: KeyError: 'replica'"
    )


def test_a_python_that_says_nothing_or_hangs_is_said_by_the_runner(site):
    site.fake.on("python", times=1, fail=1)
    site.fake.on("python", timeout=True)
    with pytest.raises(Failure, match=r"failed: python failed \(exit code 1\)$"):
        from_django(site)
    with pytest.raises(Failure, match=r"failed: python did not finish within 120 s$"):
        from_django(site)


def test_no_python_or_no_source_directory_exits_3(site):
    site.settings.django_src_dir = str(site.tmp / "nowhere")
    with pytest.raises(Failure, match=r"^no Django project at .*/nowhere \(project_src_dir\)$"):
        from_django(site)
    site.settings.django_python = str(site.tmp / "nopython")
    with pytest.raises(Failure, match=r"^no Python at .*/nopython \(project_venv_dir\)$"):
        from_django(site)
    assert site.fake.calls == []


def test_load_reads_django_when_the_role_says_so(site):
    site.fake.on("python", stdout=answer("django.db.backends.postgresql", "shop", "u", "pw", "", ""))
    assert credentials.load(site.settings, PostgreSQL, site.fake, site.log, site.run_dir).name == "shop"


def test_the_settings_script_itself(tmp_path):
    """READ_SETTINGS run by a real Python against a stand-in django.conf."""
    package = tmp_path / "django" / "conf"
    package.mkdir(parents=True)
    (tmp_path / "django" / "__init__.py").write_text("")
    (package / "__init__.py").write_text(
        "settings = type('S', (), {'DATABASES': {'default': {'ENGINE': 'django.db.backends.postgresql', "
        "'NAME': 'shop', 'USER': 'u', 'PASSWORD': 'p\\u00e4ss', 'HOST': None, 'PORT': 5432}}})\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", credentials.READ_SETTINGS, "default"], capture_output=True, env=env, check=True
    )
    assert done.stdout.decode() == "django.db.backends.postgresql\0shop\0u\0päss\0\x005432\0"
    missing = subprocess.run(
        [sys.executable, "-c", credentials.READ_SETTINGS, "replica"], capture_output=True, env=env, check=False
    )
    assert missing.returncode == 1
    assert missing.stderr.decode() == "KeyError: 'replica'\n"
    assert missing.stdout == b""
