"""A test server lost and replaced, as the disaster drills need it: the container is
destroyed, volumes and all, and a fresh one with the same name starts from the bare
image, at an address of its own, reached by the test bed's key; the scenario's
inventory, copied, points at the new address (the operator's edit when the
replacement machine comes up)."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import testinfra
import yaml
from bare_inventory import connection_vars


def docker(*args):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def server(name, inventory=None):
    inventory = inventory or os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory))


def wait_for_ssh(address, port, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as connection:
                if connection.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no sshd at {address}:{port} after {seconds} s"
        time.sleep(0.5)


def inventory_for_new_server(name, address, tmp_path):
    """The scenario's inventory (with its group and host variables) where NAME is at
    ADDRESS."""
    copy = tmp_path / "inventory"
    shutil.copytree(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent, copy)
    hosts = copy / "ansible_inventory.yml"
    data = yaml.safe_load(hosts.read_text())
    data["all"]["hosts"][name]["ansible_host"] = address  # the groups share this mapping
    hosts.write_text(yaml.safe_dump(data))
    return hosts


def replace(name, image, tmp_path, *run_args):
    """Destroy server NAME and start a fresh one from IMAGE (RUN_ARGS: more `docker run`
    options); returns the inventory that reaches it, once its sshd answers."""
    entry = connection_vars(name)
    docker("rm", "--force", "--volumes", name)
    docker(
        "run", "--detach", "--name", name, "--hostname", name, "--label", "owner=molecule",
        "--cap-add", "SYS_ADMIN", "--cgroupns", "host", "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--volume", f"{entry['ansible_private_key_file']}.pub:/opt/djangoops-test/access/authorized_keys:ro",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp", *run_args, image, "/sbin/init",
    )  # fmt: skip
    address = docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
    wait_for_ssh(address, int(entry["ansible_port"]))
    return inventory_for_new_server(name, address, tmp_path)
