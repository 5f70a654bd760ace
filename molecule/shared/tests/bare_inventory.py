"""Applies one role to one test server through a bare inventory (just that host, none
of the scenario's variables), as the bad-input tests need."""

import json
import os
import subprocess

ROOT = os.environ["MOLECULE_PROJECT_DIRECTORY"]


def apply_role(hostname, role, extra_vars, tmp_path, gather_facts=True):
    """Runs `role` on `hostname` with only `extra_vars`; returns (exit code, output)."""
    playbook = tmp_path / "playbook.yml"
    facts = "" if gather_facts else "  gather_facts: false\n"
    playbook.write_text(f"- hosts: all\n{facts}  roles:\n    - {role}\n")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(extra_vars))
    result = subprocess.run(
        ["ansible-playbook", "-i", f"{hostname},", "-c", "community.docker.docker", "-e", f"@{extra}", str(playbook)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr
