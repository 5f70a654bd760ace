"""The README's commands on a fresh machine: what tools/lib.sh installs there.

CI's machine is never fresh, so fresh Debian 12 and 13 machines are stood in
for by containers of the bare base images (debootstrap --variant=minbase, or
the public debian image), in three kinds:

- bare:   no Docker at all;
- client: only a Docker client binary (this machine's) on PATH, as issue 12's
          machine had;
- engine: the client, and an engine that already answers (this machine's,
          through its socket and DOCKER_HOST).

In each, ensure_host_packages from tools/lib.sh runs as tools/test runs it
(sourced, then called), and then every command tools/ and the suite run on the
host must exist and run. The list below is the specification, written out
here on purpose rather than read from lib.sh. An engine cannot start in an
unprivileged container, which is used to check that ensure_docker then says why
in one line; in the `engine` kind, that the running engine is used and left
running.

All six machines run at once, each with a package cache of its own in
.cache/fresh-host/ (apt locks it), kept for the next run with the packages
they share hard-linked.
"""

import filecmp
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "fresh-host"
IMAGE_PREFIX = os.environ.get("DJANGOOPS_IMAGE_PREFIX", "djangoops-test")
PLATFORMS = ("debian12", "debian13")
KINDS = ("bare", "client", "engine")
HOST_SOCKET = Path("/var/run/docker.sock")
# Where lib.sh sits in the containers: ROOT is then /opt/djangoops, CACHE /opt/djangoops/.cache.
TOOLS = "/opt/djangoops/tools"
# Names of this checkout's own, so that two checkouts can run the suite at once.
NAME_PREFIX = "djangoops-fresh-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]

# The engine's pieces: what issue 12's machine lacked while `docker` was on PATH.
ENGINE = {
    "dockerd": "dockerd --version",
    "containerd": "containerd --version",
    "runc": "runc --version",
    "iptables": "iptables --version",
}
# Everything else tools/ and the suite run on the host, each as they use it.
OTHERS = {
    "docker": "docker --version",
    "debootstrap": "debootstrap --version",
    "shellcheck": "shellcheck --version",
    "git": "git --version",
    "python3-venv-pip": "python3 -m venv /tmp/venv && /tmp/venv/bin/pip --version",
    "systemd-analyze": "systemd-analyze calendar --iterations=2 '*-*-* 01:00:00'",
    "ca-bundle": "test -s /etc/ssl/certs/ca-certificates.crt",
    "apt-get": "apt-get --version",
    "setsid": "setsid --version",
    "timeout": "timeout --version",
    "sha256sum": "echo x | sha256sum",
    "mktemp": "mktemp -d",
    "tee": "echo x | tee /dev/null",
    "tar": "tar --version",
    "find": "find /opt -maxdepth 0",
    "sed": "sed --version",
}


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float


@dataclass
class Machine:
    platform: str
    kind: str
    setup: str = ""
    install: Result | None = None
    again: Result | None = None
    probes: dict[str, Result] = field(default_factory=dict)
    start_engine: Result | None = None
    stop_engine: Result | None = None
    engine_after_stop: Result | None = None

    @property
    def name(self):
        return f"{NAME_PREFIX}-{self.platform}-{self.kind}"


def docker(*args, check=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=900)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr}")
    return result


def sh(machine, script):
    started = time.monotonic()
    result = docker("exec", machine.name, "bash", "-c", script, check=False)
    return Result(result.returncode, result.stdout, result.stderr, time.monotonic() - started)


def probe(machine, commands):
    """Each command's exit status and output, from one `docker exec` (each costs a moment)."""
    script = "".join(
        f"out=$( ({command}) 2>&1 ); printf '%s\\0%s\\0%s\\0' {shlex.quote(tool)} $? \"$out\"\n"
        for tool, command in commands.items()
    )
    run = sh(machine, script)
    fields = run.out.split("\0")
    found = {fields[i]: Result(int(fields[i + 1]), fields[i + 2], "", 0) for i in range(0, len(fields) - 2, 3)}
    missing = Result(-1, "", f"not probed: {shown(run)}", 0)
    return {tool: found.get(tool, missing) for tool in commands}


def lib(call):
    """A call into tools/lib.sh, as the commands in tools/ make it."""
    return f"set -Eeuo pipefail; source {TOOLS}/lib.sh; {call}"


def start(machine):
    apt = CACHE / f"{machine.platform}-{machine.kind}"
    for part in ("archives/partial", "lists/partial"):
        (apt / part).mkdir(parents=True, exist_ok=True)
    args = ["run", "--detach", "--name", machine.name, "--hostname", f"fresh-{machine.platform}"]
    args += ["--volume", f"{apt}/archives:/var/cache/apt/archives"]
    args += ["--volume", f"{apt}/lists:/var/lib/apt/lists"]
    if machine.kind == "engine":
        args += ["--volume", f"{HOST_SOCKET}:/run/host-docker.sock"]
        args += ["--env", "DOCKER_HOST=unix:///run/host-docker.sock"]
    docker("rm", "--force", machine.name, check=False)
    docker(*args, f"{IMAGE_PREFIX}/base:{machine.platform}", "sleep", "infinity")
    # As in Debian's own container images: dpkg skips fsync, which changes nothing installed.
    docker("exec", machine.name, "sh", "-c", "echo force-unsafe-io >/etc/dpkg/dpkg.cfg.d/unsafe-io")
    docker("exec", machine.name, "mkdir", "-p", TOOLS)
    for tool in ("lib.sh", "engine"):
        docker("cp", str(ROOT / "tools" / tool), f"{machine.name}:{TOOLS}/{tool}")
    if machine.kind in ("client", "engine"):
        docker("cp", "--follow-link", shutil.which("docker"), f"{machine.name}:/usr/local/bin/docker")


def live_through(machine):
    try:
        start(machine)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        machine.setup = str(error)
        return machine
    machine.install = sh(machine, lib("ensure_host_packages"))
    machine.again = sh(machine, lib("ensure_host_packages"))
    machine.probes = probe(machine, {**ENGINE, **OTHERS})
    # This provokes a failure on purpose where no engine answers: an engine
    # cannot start in an unprivileged container. Its ERROR line stays in the
    # captured output.
    machine.start_engine = sh(machine, lib("ensure_docker"))
    if machine.kind == "engine":
        machine.stop_engine = sh(machine, f"{TOOLS}/engine stop")
        machine.engine_after_stop = sh(machine, "docker info --format '{{.ServerVersion}}'")
    return machine


@pytest.fixture(scope="session")
def machines():
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers: run this through ./tools/test, which starts one")
    kinds = [kind for kind in KINDS if kind != "engine" or HOST_SOCKET.is_socket()]
    wanted = [Machine(platform, kind) for platform in PLATFORMS for kind in kinds]
    try:
        # Mostly waiting: on the mirror, on dpkg's disk writes, on the other machines.
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            yield {(m.platform, m.kind): m for m in pool.map(live_through, wanted)}
    finally:
        docker("rm", "--force", *(Machine(p, k).name for p in PLATFORMS for k in KINDS), check=False)
        share_packages()


def share_packages():
    """One copy on disk of each package and package list the machines of a release have alike."""
    for platform in PLATFORMS:
        for pattern in ("archives/*.deb", "lists/*_*"):
            first = {}
            for path in sorted(CACHE.glob(f"{platform}-*/{pattern}")):
                kept = first.setdefault(path.name, path)
                if kept != path and not path.samefile(kept) and filecmp.cmp(kept, path, shallow=False):
                    path.unlink()
                    os.link(kept, path)


def machine_of(machines, platform, kind):
    if (platform, kind) not in machines:
        pytest.skip(f"no engine socket at {HOST_SOCKET} to share")
    machine = machines[platform, kind]
    assert not machine.setup, f"could not set up the stand-in machine: {machine.setup}"
    return machine


def shown(result):
    return f"exit {result.rc} after {result.seconds:.0f} s\nstdout: {result.out[-3000:]}\nstderr: {result.err[-3000:]}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_host_packages_step_installs_what_is_missing(machines, platform, kind):
    machine = machine_of(machines, platform, kind)
    assert machine.install.rc == 0, shown(machine.install)
    installing = [line for line in machine.install.err.splitlines() if "Installing host packages:" in line]
    assert len(installing) == 1, shown(machine.install)
    packages = installing[0].split("Installing host packages:")[1].split()
    # Decided by what is needed: the engine only where none answers.
    assert ("docker.io" in packages) == (kind != "engine"), installing[0]


@pytest.mark.parametrize("tool", [*ENGINE, *OTHERS])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_tool_runs_afterwards(machines, platform, kind, tool):
    machine = machine_of(machines, platform, kind)
    probe = machine.probes[tool]
    if kind == "engine" and tool in ENGINE:
        # An engine answers already: its pieces are not needed here.
        assert probe.rc != 0, f"{tool} was installed although an engine answered: {shown(probe)}"
    else:
        assert probe.rc == 0, f"{tool}: {shown(probe)}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_second_run_installs_nothing(machines, platform, kind):
    machine = machine_of(machines, platform, kind)
    assert (machine.again.rc, machine.again.out, machine.again.err) == (0, "", ""), shown(machine.again)


@pytest.mark.parametrize("kind", ["bare", "client"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_engine_that_cannot_start_says_why_in_one_line(machines, platform, kind):
    machine = machine_of(machines, platform, kind)
    result = machine.start_engine
    assert result.rc == 1, shown(result)
    errors = [line for line in result.err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, shown(result)
    error = errors[0]
    # dockerd's own words from its log, the command that fixes it, where the whole log is.
    assert "failed to start daemon" in error, error
    assert "Fix: run on the machine itself or a VM" in error, error
    assert error.endswith("(full log: .cache/dockerd.log)"), error
    # Said as soon as dockerd has exited, not after the 60 s an engine gets to answer.
    assert result.seconds < 20, shown(result)
    # Nothing left for `tools/engine stop` to stop.
    assert sh(machine, "test -e /opt/djangoops/.cache/engine.started").rc == 1


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_engine_that_answers_is_used_and_left_running(machines, platform):
    machine = machine_of(machines, platform, "engine")
    assert (machine.start_engine.rc, machine.start_engine.err) == (0, ""), shown(machine.start_engine)
    assert (machine.stop_engine.rc, machine.stop_engine.err) == (0, ""), shown(machine.stop_engine)
    assert machine.engine_after_stop.rc == 0, shown(machine.engine_after_stop)
    assert machine.engine_after_stop.out.strip(), shown(machine.engine_after_stop)
