"""Applies one role to one test server through a bare inventory (just that host, none
of the scenario's variables), as the bad-input tests need: once, or once per case in
one run."""

import json
import os
import subprocess
from pathlib import Path

import yaml

ROOT = os.environ["MOLECULE_PROJECT_DIRECTORY"]


def connection_vars(hostname):
    """How the scenario's inventory reaches `hostname` (the test bed's sshd: address, port,
    user, key and ssh options), and nothing else of the scenario's."""
    hosts = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())["all"]["hosts"]
    return {name: value for name, value in hosts[hostname].items() if name.startswith("ansible_")}


def bare_inventory(tmp_path, hostname, group="ungrouped", alias=None, **host_vars):
    """An inventory file of `hostname` alone (as `alias` if given), in `group`, reached as
    the scenario reaches it, with only `host_vars`; returns its path."""
    path = tmp_path / f"{alias or hostname}.inventory.json"
    entry = {**connection_vars(hostname), **host_vars}
    path.write_text(json.dumps({group: {"hosts": {alias or hostname: entry}}}))
    return str(path)


def apply_role(hostname, role, extra_vars, tmp_path, gather_facts=True):
    """Runs `role` on `hostname` with only `extra_vars`; returns (exit code, output)."""
    playbook = tmp_path / "playbook.yml"
    facts = "" if gather_facts else "  gather_facts: false\n"
    playbook.write_text(f"- hosts: all\n{facts}  roles:\n    - {role}\n")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(extra_vars))
    result = subprocess.run(
        ["ansible-playbook", "-i", bare_inventory(tmp_path, hostname), "-e", f"@{extra}", str(playbook)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def apply_role_cases(hostname, role, cases, tmp_path, gather_facts=True, become=False):
    """Runs `role` on `hostname` once per case of `cases` (name -> variables), each in a
    play of its own with only that case's variables, all in one ansible-playbook run: one
    start-up and one fact gathering instead of one per case. A case the role refuses is
    rescued, so that the next case still runs, and says so ("case NAME refused"). With
    `become`, the plays run as root, as the roles' own playbooks do.

    Returns the exit code, each case's output (its play, from its header to the next
    play's) and the PLAY RECAP."""
    plays = [
        {
            "name": f"case {name}",
            "hosts": "all",
            "gather_facts": gather_facts and index == 0,
            "become": become,
            "vars": variables,
            "tasks": [
                {
                    "block": [{"ansible.builtin.include_role": {"name": role}}],
                    "rescue": [{"ansible.builtin.debug": {"msg": f"case {name} refused"}}],
                }
            ],
        }
        for index, (name, variables) in enumerate(cases.items())
    ]
    playbook = tmp_path / "cases.yml"
    playbook.write_text(json.dumps(plays))
    # stderr into stdout, so that each error stays in its case's play.
    result = subprocess.run(
        ["ansible-playbook", "-i", bare_inventory(tmp_path, hostname), str(playbook)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        check=False,
    )
    output = result.stdout
    chunks = output.split("PLAY [case ")
    outputs = {chunk.split("]", 1)[0]: chunk for chunk in chunks[1:]}
    recap = output.split("PLAY RECAP", 1)[-1]
    return result.returncode, outputs, recap
