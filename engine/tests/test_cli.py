"""The entry point: the command's name from the path it was started by, the
project's values read (and checked) before anything else, the refusal to run as
a third user, the dispatch to the commands and to the scheduled jobs for any
other name, and one job run end to end through the real runner."""

import importlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile

import pytest
from djangoops.commands import backup, jobs, listing
from djangoops.errors import Exit, Failure

NOBODY = 65534

# djangoops.cli (with privileges, and pwd) is imported as the tests run, not as
# they are collected: imported during collection, ahead of the other test
# modules, pwd makes CPython 3.11 print a spurious "Exception ignored in
# tp_clear ... SystemError" when the whole suite's interpreter exits.
cli = privileges = None


@pytest.fixture(autouse=True)
def _entry_point_modules():
    global cli, privileges
    cli = importlib.import_module("djangoops.cli")
    privileges = importlib.import_module("djangoops.privileges")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/usr/local/lib/djangoops/shop/bin/backup_db.sh", "backup_db"),
        ("/home/shop/commands/restore_db.sh", "restore_db"),
        ("clear_sessions", "clear_sessions"),
        ("./weird.sh.sh", "weird.sh"),
        ("/x/.sh", ""),
    ],
)
def test_command_name(path, name):
    assert cli.command_name(path) == name


def write_project(config_root, root, user="shop"):
    """project.json of project shop in CONFIG_ROOT/shop, its directories in ROOT."""
    config_dir = os.path.join(config_root, "shop")
    os.makedirs(config_dir, exist_ok=True)
    for name in ("db_backups", "logs", "metrics", "commands"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    values = {
        "name": "shop",
        "user": user,
        "home": root,
        "commands_dir": os.path.join(root, "commands"),
        "backups_dir": os.path.join(root, "db_backups"),
        "logs_dir": os.path.join(root, "logs"),
        "metrics_dir": os.path.join(root, "metrics"),
    }
    path = os.path.join(config_dir, "project.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(values, f)
    os.chmod(path, 0o644)
    return config_dir


@pytest.fixture
def values(tmp_path, monkeypatch):
    """A project shop whose values are in tmp_path/etc."""
    config_root = tmp_path / "etc"
    monkeypatch.setattr(cli, "CONFIG_ROOT", str(config_root))
    config_dir = write_project(str(config_root), str(tmp_path / "home"))
    engine_dir = tmp_path / "lib" / "shop"
    engine_dir.mkdir(parents=True)
    return {"config_dir": config_dir, "engine_dir": str(engine_dir), "home": tmp_path / "home", "switched": []}


@pytest.fixture
def project(values, monkeypatch):
    """VALUES, and main() does not switch users (it records the switch)."""
    switched = values["switched"]
    monkeypatch.setattr(privileges, "run_as_project_user", lambda user, group=None: switched.append((user, group)))
    return values


def test_a_missing_project_file_exits_3_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "CONFIG_ROOT", str(tmp_path / "etc"))
    switched = []
    monkeypatch.setattr(privileges, "run_as_project_user", lambda *a: switched.append(a))

    assert cli.main(["/usr/local/lib/djangoops/shop/bin/backup_db.sh"], str(tmp_path / "lib" / "shop/")) == 3

    path = tmp_path / "etc" / "shop" / "project.json"
    assert capsys.readouterr().err == f"backup_db: {path}: cannot be read (No such file or directory)\n"
    assert switched == []  # nothing else happens before the values are read


def test_a_third_user_is_refused_with_exit_2(values, monkeypatch, capsys):
    project = values
    monkeypatch.setattr(privileges, "is_root", lambda: False)
    monkeypatch.setattr(privileges, "current_user", lambda: "mallory")
    called = []
    monkeypatch.setattr(backup, "main", lambda context, args: called.append(args))

    assert cli.main(["backup_db.sh"], project["engine_dir"]) == Exit.USAGE

    assert capsys.readouterr().err == "backup_db: run this as shop (or root), not mallory\n"
    assert called == []
    assert os.listdir(project["home"] / "logs") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_main_as_nobody_is_refused_with_exit_2():
    """main() in a child process that really runs as nobody (not root, not the
    project user): refused before any command runs, nothing written."""
    top = tempfile.mkdtemp(prefix="djangoops-cli-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        config_root = os.path.join(top, "etc")
        write_project(config_root, os.path.join(top, "home"))
        for directory in (config_root, os.path.join(config_root, "shop")):
            os.chmod(directory, 0o755)
        engine_dir = os.path.join(top, "lib", "shop")
        os.makedirs(engine_dir)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            report = {"code": None, "err": "", "uid": None}
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                cli.CONFIG_ROOT = config_root
                captured = io.StringIO()
                real = sys.stderr
                sys.stderr = captured
                try:
                    report["code"] = cli.main([os.path.join(top, "bin", "backup_db.sh")], engine_dir)
                finally:
                    sys.stderr = real
                report["err"] = captured.getvalue()
                report["uid"] = os.geteuid()
            except BaseException as exc:
                report["err"] = f"child: {type(exc).__name__}: {exc}"
            finally:
                os.write(write_end, json.dumps(report).encode())
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            report = json.loads(pipe.read().decode())
        os.waitpid(pid, 0)
        assert report == {"code": 2, "err": "backup_db: run this as shop (or root), not nobody\n", "uid": NOBODY}
        assert os.listdir(os.path.join(top, "home", "logs")) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_project_user_is_switched_to_before_the_command_runs(project, monkeypatch):
    seen = []

    def command(context, args):
        seen.append((context.script, args, context.config_dir, context.engine_dir, context.project.name))
        assert project["switched"] == [("shop", None)]

    monkeypatch.setattr(backup, "main", command)

    assert cli.main(["/usr/local/lib/djangoops/shop/bin/backup_db.sh", "--no-offsite"], project["engine_dir"]) == 0

    assert seen == [("backup_db", ["--no-offsite"], project["config_dir"], project["engine_dir"], "shop")]


@pytest.mark.parametrize(
    ("script", "module", "attribute"),
    [
        ("list_db_backups", listing, "main"),
        ("clear_sessions", jobs, "main"),  # any other name: a job of jobs.json
        ("nightly-report", jobs, "main"),
    ],
)
def test_dispatch(project, monkeypatch, script, module, attribute):
    seen = []
    monkeypatch.setattr(module, attribute, lambda context, args: seen.append(context.script))
    assert cli.main([f"/home/shop/commands/{script}.sh"], project["engine_dir"]) == 0
    assert seen == [script]


def test_a_command_failure_is_its_exit_code_and_logged_in_the_project(project, monkeypatch, capsys):
    def command(context, args):
        raise Failure(Exit.BAD_BACKUP, "no backup named x")

    monkeypatch.setattr(backup, "main", command)
    assert cli.main(["backup_db.sh"], project["engine_dir"]) == Exit.BAD_BACKUP
    log = (project["home"] / "logs" / "backup_db.log").read_text()
    assert log.rstrip().endswith("ERROR no backup named x")
    assert "ERROR no backup named x" in capsys.readouterr().err


def test_a_job_runs_end_to_end_with_the_real_runner(project, capsys):
    src = project["home"] / "src"
    src.mkdir()
    values = {
        "src_dir": str(src),
        "venv_dir": str(project["home"] / "venv"),
        "settings_module": "shop.settings.production",
        "jobs": {
            "hello": {
                "command": 'echo "hello from $DJANGO_SETTINGS_MODULE"; echo "in $(pwd)"; echo oops >&2',
                "container": "",
                "healthcheck_url": "",
            },
            "broken": {"command": "echo about to fail; exit 3", "container": "", "healthcheck_url": ""},
        },
    }
    with open(os.path.join(project["config_dir"], "jobs.json"), "w", encoding="utf-8") as f:
        json.dump(values, f)
    handler = signal.getsignal(signal.SIGTERM)

    assert cli.main(["/home/shop/commands/hello.sh"], project["engine_dir"]) == 0
    assert cli.main(["/home/shop/commands/broken.sh"], project["engine_dir"]) == Exit.COMMAND_FAILED

    hello = (project["home"] / "logs" / "hello.log").read_text().splitlines()
    outs = [line.split(" OUT   ", 1)[1] for line in hello if " OUT   " in line]
    assert outs == ["hello from shop.settings.production", f"in {src}", "oops"]
    broken = (project["home"] / "logs" / "broken.log").read_text()
    assert "OUT   about to fail" in broken
    assert "the command failed with exit code 3" in broken
    assert "djangoops_job_exit_code" in (project["home"] / "metrics" / "djangoops_shop_broken.prom").read_text()
    assert signal.getsignal(signal.SIGTERM) == handler  # the runner's handlers were put back
    capsys.readouterr()
