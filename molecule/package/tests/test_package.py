"""Build the collection, install the tarball elsewhere, run the example playbook from outside the repo."""

import json
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


def readme_install_commands():
    """The shell lines of the README's block that installs the collection."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    (block,) = [b for b in blocks if "ansible-galaxy collection install" in b] or [None]
    assert block, "README.md: no ```sh block with `ansible-galaxy collection install`"
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the checkout's files (committed or not, the ignored ones left out), so
    that the README's commands can be run in it as written without leaving a tarball in
    the real one."""
    copy = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the work tree, not yet in git
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy / name, follow_symlinks=False)
    return copy


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The user's home directory the README's commands install into."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def installed(checkout, home):
    """The README's commands, run as written in the checkout (whose ansible.cfg they read)
    with an empty home directory; returns where the collection went."""
    env = dict(CLEAN_ENV, HOME=str(home))
    for line in readme_install_commands():
        run(["bash", "-c", line], env=env, cwd=checkout)
    collections = home / ".ansible/collections"
    assert (collections / "ansible_collections/djangoops/maintenance/MANIFEST.json").is_file(), (
        f"the README's commands installed nothing into {collections}"
    )
    return collections


@pytest.fixture(scope="module")
def tarball(checkout, installed):
    (path,) = checkout.glob("*.tar.gz")
    assert path.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    return path


@pytest.fixture(scope="module")
def playbook_runs(outside, installed):
    """From outside the repo with only the installed collection: the example playbook,
    then the collection's own site playbook by its FQCN with the same variables (which
    must change nothing)."""
    shutil.copy(ROOT / "templates/examples/playbook.yml", outside / "playbook.yml")
    env = dict(CLEAN_ENV, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_PIPELINING="true")
    inventory = ["-i", os.environ["MOLECULE_INVENTORY_FILE"]]
    site_vars = json.dumps({"project_name": "myproject", "djangoops_roles": ["project"]})
    return [
        run(["ansible-playbook", *inventory, "playbook.yml"], cwd=outside, env=env).stdout,
        run(
            ["ansible-playbook", *inventory, "djangoops.maintenance.site", "-e", site_vars], cwd=outside, env=env
        ).stdout,
    ]


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
        # The alert rules, for operators to load or copy (the README's "Alerts").
        "templates/prometheus/djangoops.rules.yml",
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


def test_the_site_playbook_by_fqcn_changes_nothing_after_it(host, playbook_runs):
    recap = playbook_runs[1].split("PLAY RECAP", 1)[1]
    assert re.search(rf"{host.backend.get_hostname()}\s+:\s+ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", recap), (
        recap
    )


@pytest.mark.parametrize(
    "playbook", ["backup", "restore", "verify", "recover", "offsite_prune", "offsite_buckets", "report"]
)
def test_the_other_playbooks_load_by_fqcn(outside, installed, playbook):
    env = dict(CLEAN_ENV, ANSIBLE_COLLECTIONS_PATH=str(installed))
    out = run(["ansible-playbook", "--syntax-check", f"djangoops.maintenance.{playbook}"], cwd=outside, env=env)
    # ansible-playbook names the file it resolved the FQCN to: the installed one.
    path = installed / f"ansible_collections/djangoops/maintenance/playbooks/{playbook}.yml"
    assert f"playbook: {path}" in out.stdout, out.stdout
