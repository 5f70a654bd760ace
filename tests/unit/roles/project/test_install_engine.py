"""roles/project/files/install_engine.py: the engine in one module run. Driven as the role runs
it (python3 -I -c SOURCE LIB check|apply, the bundle on stdin) against a temporary directory."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SOURCE = (ROOT / "roles/project/files/install_engine.py").read_text(encoding="utf-8")
BUNDLE = {
    "djangoops/__init__.py": "",
    "djangoops/cli.py": "VALUE = 1\n",
    "djangoops/engines/__init__.py": "",
    "djangoops/engines/base.py": "class Engine:\n    pass\n",
}


def run(lib, mode="apply", bundle=None, raw=None):
    result = subprocess.run(
        [sys.executable, "-I", "-c", SOURCE, str(lib), mode],
        input=raw if raw is not None else json.dumps(BUNDLE if bundle is None else bundle),
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, (json.loads(result.stdout) if result.returncode == 0 else result.stderr)


@pytest.fixture
def lib(tmp_path):
    path = tmp_path / "lib"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


def tree(lib):
    return sorted(str(p.relative_to(lib)) for p in lib.rglob("*") if "__pycache__" not in p.parts)


def test_a_fresh_directory_gets_every_module_compiled(lib):
    rc, report = run(lib)
    assert rc == 0 and report["changed"]
    assert set(tree(lib)) == {"djangoops", "djangoops/engines", *BUNDLE}
    for path, text in BUNDLE.items():
        assert (lib / path).read_text() == text
        assert oct((lib / path).stat().st_mode & 0o777) == "0o644"
        assert Path(importlib.util.cache_from_source(str(lib / path))).is_file()
    assert oct((lib / "djangoops/engines").stat().st_mode & 0o777) == "0o755"
    assert report["compiled"] == sorted(BUNDLE)


def test_a_second_run_changes_nothing(lib):
    run(lib)
    rc, report = run(lib)
    assert rc == 0
    assert report == {"changed": False, "directories": [], "written": [], "removed": [], "compiled": []}


def test_check_mode_reports_and_touches_nothing(lib):
    rc, report = run(lib, "check")
    assert rc == 0 and report["changed"] and report["written"] == sorted(BUNDLE)
    assert tree(lib) == []


def test_check_mode_on_a_host_without_the_directory_yet(tmp_path):
    rc, report = run(tmp_path / "absent", "check")
    assert rc == 0 and report["changed"] and report["directories"] == ["djangoops", "djangoops/engines"]
    assert not (tmp_path / "absent").exists()


def test_apply_refuses_a_missing_directory(tmp_path):
    rc, err = run(tmp_path / "absent")
    assert rc == 1 and "does not exist" in err


def test_a_changed_module_is_rewritten_and_compiled_again(lib):
    run(lib)
    changed = {**BUNDLE, "djangoops/cli.py": "VALUE = 2\n"}
    rc, report = run(lib, bundle=changed)
    assert rc == 0 and report["written"] == ["djangoops/cli.py"] and report["compiled"] == ["djangoops/cli.py"]
    assert (lib / "djangoops/cli.py").read_text() == "VALUE = 2\n"
    assert run(lib, bundle=changed)[1]["changed"] is False


def test_a_module_edited_in_place_is_put_back(lib):
    run(lib)
    (lib / "djangoops/engines/base.py").write_text("import os; os.system('id')\n")
    rc, report = run(lib, "check")
    assert rc == 0 and report["written"] == ["djangoops/engines/base.py"]
    run(lib)
    assert (lib / "djangoops/engines/base.py").read_text() == BUNDLE["djangoops/engines/base.py"]


def test_what_the_engine_no_longer_holds_goes_with_its_byte_code(lib):
    old = {**BUNDLE, "djangoops/old.py": "X = 1\n", "djangoops/gone/__init__.py": ""}
    run(lib, bundle=old)
    (lib / "djangoops.sha256").write_text("record of an earlier version\n")
    (lib / "djangoops/stray.txt").write_text("x")
    os.symlink("/etc", lib / "djangoops/link")
    rc, report = run(lib)
    assert rc == 0
    assert report["removed"] == [
        "djangoops.sha256",
        "djangoops/gone/__init__.py",
        "djangoops/link",
        "djangoops/old.py",
        "djangoops/stray.txt",
        "djangoops/gone",
    ]
    assert set(tree(lib)) == {"djangoops", "djangoops/engines", *BUNDLE}
    caches = os.listdir(lib / "djangoops/__pycache__")
    assert caches and not [name for name in caches if name.startswith("old.")]
    assert Path("/etc").is_dir()


def test_a_lost_byte_code_cache_is_compiled_again(lib):
    run(lib)
    os.unlink(importlib.util.cache_from_source(str(lib / "djangoops/cli.py")))
    rc, report = run(lib)
    assert rc == 0 and report["compiled"] == ["djangoops/cli.py"] and report["written"] == []
    assert run(lib)[1]["changed"] is False


def test_a_stale_byte_code_cache_is_compiled_again(lib):
    run(lib)
    source = lib / "djangoops/cli.py"
    os.utime(source, (1, 1))
    assert run(lib, "check")[1]["compiled"] == ["djangoops/cli.py"]


def test_a_wrong_mode_is_put_right(lib):
    run(lib)
    (lib / "djangoops/cli.py").chmod(0o666)
    (lib / "djangoops/engines").chmod(0o777)
    rc, report = run(lib)
    assert rc == 0 and report["written"] == ["djangoops/cli.py"] and report["directories"] == ["djangoops/engines"]
    assert (lib / "djangoops/cli.py").stat().st_mode & 0o777 == 0o644
    assert (lib / "djangoops/engines").stat().st_mode & 0o777 == 0o755


def test_a_file_where_a_package_belongs_is_replaced(lib):
    (lib / "djangoops").write_text("not a package")
    rc, report = run(lib)
    assert rc == 0 and "djangoops" in report["removed"] and (lib / "djangoops/cli.py").read_text() == "VALUE = 1\n"


def test_an_interrupted_write_is_finished_by_the_next_run(lib):
    run(lib)
    (lib / "djangoops/.cli.py.new").write_text("half")
    (lib / "djangoops/cli.py").write_text("VAL")
    rc, report = run(lib)
    assert rc == 0 and (lib / "djangoops/cli.py").read_text() == "VALUE = 1\n"
    assert "djangoops/.cli.py.new" in report["removed"]


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ({"../evil.py": "x"}, "not a module below"),
        ({"/etc/evil.py": "x"}, "not a module below"),
        ({"djangoops//x.py": "x"}, "not a module below"),
        ({"djangoops/x.sh": "x"}, "not a module below"),
        ({"djangoops/x.py": 1}, "no text for djangoops/x.py"),
        ({}, "non-empty object"),
        ([], "non-empty object"),
    ],
)
def test_a_bundle_that_could_write_elsewhere_is_refused(lib, bundle, message):
    rc, err = run(lib, bundle=bundle)
    assert rc == 1 and message in err
    assert tree(lib) == []


def test_input_that_is_not_json_is_refused(lib):
    rc, err = run(lib, raw="{not json")
    assert rc == 1 and "not JSON" in err


@pytest.mark.parametrize("argv", [["relative", "apply"], ["/x", "install"], ["/x"]])
def test_a_wrong_command_line_is_refused(argv):
    result = subprocess.run(
        [sys.executable, "-I", "-c", SOURCE, *argv], input="{}", capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "usage:" in result.stderr


def test_a_directory_others_can_write_is_refused(lib):
    lib.chmod(0o777)
    rc, err = run(lib)
    assert rc == 1 and "writable by others" in err


def test_a_link_in_place_of_the_directory_is_refused(tmp_path, lib):
    link = tmp_path / "link"
    link.symlink_to(lib)
    rc, err = run(link)
    assert rc == 1 and "not a directory" in err
