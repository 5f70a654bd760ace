"""Build the collection, install the tarball elsewhere, run the example playbook from outside the repo."""

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())


# Nothing of the checkout's Ansible configuration (Molecule's ansible.cfg sees
# the repository as a collection): only what the commands are given.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}


def run(args, env=None, **kwargs):
    # From "/" so that no ansible.cfg in the working directory is read either.
    kwargs.setdefault("cwd", "/")
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env or CLEAN_ENV, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """An empty directory outside the repository, holding the tarball and the installed collection."""
    return tmp_path_factory.mktemp("outside")


@pytest.fixture(scope="module")
def tarball(outside):
    run(["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(outside), "--force"])
    path = outside / f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def installed(outside, tarball):
    collections = outside / "collections"
    run(["ansible-galaxy", "collection", "install", str(tarball), "-p", str(collections)])
    return collections


@pytest.fixture(scope="module")
def playbook_runs(outside, installed):
    """The example playbook, copied outside the repo and run twice with only the installed collection."""
    shutil.copy(ROOT / "templates/examples/playbook.yml", outside / "playbook.yml")
    env = dict(CLEAN_ENV, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_PIPELINING="true")
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "playbook.yml"]
    return [run(cmd, cwd=outside, env=env).stdout for _ in range(2)]


def test_tarball_holds_the_collection_and_nothing_else(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for wanted in (
        "MANIFEST.json",
        "meta/runtime.yml",
        "roles/project/tasks/main.yml",
        "roles/project/meta/argument_specs.yml",
        "README.md",
        "LICENSE",
        "requirements.yml",
    ):
        assert wanted in names, wanted
    for unwanted in (
        "molecule",
        "tools",
        "collections",
        "inventories",
        ".cache",
        ".venv",
        ".git",
        "ansible.cfg",
        "requirements.txt",
        "constraints.txt",
    ):
        assert not any(n == unwanted or n.startswith(unwanted + "/") for n in names), unwanted


def test_installed_collection_is_the_built_version(installed):
    out = run(["ansible-galaxy", "collection", "list", "djangoops.maintenance", "-p", str(installed)]).stdout
    assert re.search(rf"djangoops\.maintenance\s+{re.escape(GALAXY['version'])}", out), out
    assert str(installed) in out


def test_example_playbook_applies_the_role(host, playbook_runs):
    for path, mode in (("commands", 0o750), ("db_backups", 0o700), ("logs", 0o750)):
        d = host.file(f"/home/myproject/{path}")
        assert d.is_directory
        assert (d.user, d.group, d.mode) == ("myproject", "myproject", mode)


def test_second_run_changes_nothing(host, playbook_runs):
    recap = playbook_runs[1].split("PLAY RECAP", 1)[1]
    assert re.search(rf"{host.backend.get_hostname()}\s+:\s+ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", recap), (
        recap
    )
