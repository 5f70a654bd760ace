"""The off-site scenario's helpers: the files prepare wrote on the controller, the server's
latest set and what list_db_backups.sh says of its off-site copies (playbooks run from the
controller are backup_helpers.playbook)."""

import hashlib
import json
import os
import re

from db_backup.backup_helpers import BACKUPS, ROOT
from shop_project import COMMANDS, HOME, quote

OFFSITE = f"{HOME}/.djangoops/offsite"
BACKUP_HOST = "offsite-backuphost"
TEST_DIR = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "offsite")


def scenario_file(name):
    with open(os.path.join(TEST_DIR, name), encoding="utf-8") as f:
        return f.read().strip()


def latest(host):
    return host.run(f"readlink {BACKUPS}/latest").stdout.strip()


def offsite_column(host, name):
    """The OFF-SITE column of list_db_backups.sh for one set ('' when not listed)."""
    listing = host.run(f"{COMMANDS}/list_db_backups.sh --no-checksums </dev/null").stdout
    for line in listing.splitlines():
        fields = line.split()
        if name in fields:
            return fields[-1]
    return ""


def snapshots(restic, repo):
    """`restic snapshots` of REPO through the `restic` fixture, as JSON."""
    result = restic(repo, "snapshots --json --no-lock")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def restic_as_server(host, repo, args, password=None, timeout=60):
    """restic against one of HOST's repositories, as the project user, with the server's own
    key, host key and password file (or another password): what an intruder on that server
    could run."""
    address = scenario_file("address")
    lines = ["cd /tmp", f"export RESTIC_CACHE_DIR={HOME}/.cache/restic"]
    if password:
        lines.append(f"export RESTIC_PASSWORD={quote(password)}")
    else:
        lines.append(f"export RESTIC_PASSWORD_FILE={OFFSITE}/password")
    options = ""
    if repo == "backuphost":
        lines.append("export RESTIC_REPOSITORY=rclone:backuphost:")
        ssh = (
            f"ssh -i {OFFSITE}/backuphost.key -o IdentitiesOnly=yes"
            f" -o UserKnownHostsFile={OFFSITE}/backuphost.known_hosts -o BatchMode=yes offsite@{address}"
        )
        options = "-o " + quote(f"rclone.program={ssh}")
    else:
        lines.append(f"export RESTIC_REPOSITORY=s3:http://{address}:5000/{host.backend.get_hostname()}")
        lines.append(f'while IFS== read -r k v; do export "$k=$v"; done <{OFFSITE}/bucket.s3')
    lines.append(f"timeout {timeout} restic {options} {args}")
    return host.run("runuser -u shop -- bash -c %s", "\n".join(lines))


def media_name(name):
    return re.sub(r"\.(pgdump|sql)\.(zst|gz)$", r".media.tar.\2", name)


def plant_set(host, name, source, when, extra_tags="", host_tag="shop", repo="backuphost"):
    """Push, with HOST's own key, a snapshot tagged as set NAME and dated WHEN ('YYYY-MM-DD
    HH:MM:SS', the server's local time) that holds local set SOURCE's dump (and media) under
    NAME, with a checksum file rewritten to match and SOURCE's manifest: a forgery that every
    check a fetch makes of the set's own files passes. Returns the forged dump's sha256."""
    work = f"{HOME}/forged/{hashlib.sha256(f'{name}{when}'.encode()).hexdigest()[:8]}"
    files = {name: source, f"{name}.manifest.json": f"{source}.manifest.json"}
    if host.file(f"{BACKUPS}/{media_name(source)}").exists:
        files[media_name(name)] = media_name(source)
    copy = " && ".join(f"cp {BACKUPS}/{src} {work}/{dst}" for dst, src in files.items())
    checksums = " ".join(n for n in files if not n.endswith(".manifest.json"))
    host.run_expect(
        [0],
        "runuser -u shop -- sh -c %s",
        f"rm -rf {work} && mkdir -p {work} && {copy} && cd {work} && sha256sum {checksums} > {name}.sha256",
    )
    sha = host.run_expect([0], f"sha256sum {work}/{name}").stdout.split()[0]
    kind = re.search(r"_(daily|weekly|monthly|safety)\.", name)
    pushed = restic_as_server(
        host,
        repo,
        f"backup --host {host_tag} --tag djangoops --tag set={name} --tag sha256={sha} "
        f"--tag kind={kind.group(1) if kind else 'weekday'} {extra_tags} --time {quote(when)} {work}",
    )
    assert pushed.rc == 0, pushed.stderr
    return sha


def set_time(name):
    """'YYYY-MM-DD HH:MM:SS' of set NAME's stamp (UTC, the servers' local time here)."""
    stamp = re.search(r"_(\d{8})T(\d{6})Z_", name)
    day, clock = stamp.groups()
    return f"{day[:4]}-{day[4:6]}-{day[6:]} {clock[:2]}:{clock[2:4]}:{clock[4:]}"


def bucket_client(hostname, who="server"):
    """The engine's own S3 client on HOSTNAME's bucket, with the server's keys or the
    bucket owner's ("admin"), from the controller."""
    import sys

    engine = str(ROOT / "engine")
    if engine not in sys.path:
        sys.path.insert(0, engine)
    from djangoops import s3

    key_id, secret = json.loads(scenario_file("s3.json"))[hostname][who]
    return s3.Client(f"s3:http://{scenario_file('address')}:5000/{hostname}", key_id, secret)
