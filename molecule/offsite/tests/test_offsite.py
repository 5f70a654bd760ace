"""Off-site copies: pushed after every backup, unreadable without the password, out of the
server's reach to delete, and caught up after every kind of failure. The servers share the
backup host, whose faults would reach both: this scenario's tests run one at a time."""

import contextlib
import fcntl
import json
import os
import re
import time

import pytest
import testinfra
from db_backup.backup_helpers import BACKUPS, files_holding, playbook, sample_ps_during
from offsite_helpers import (
    OFFSITE,
    bucket_client,
    latest,
    offsite_column,
    plant_set,
    scenario_file,
    set_time,
    snapshots,
)
from shop_project import COMMANDS, ENGINE_BIN, HOME, quote

REPOS = ("backuphost", "bucket")
SERVERS = ("offsite-debian12", "offsite-debian13")


def sets_in(restic, repo):
    return {t[4:] for s in snapshots(restic, repo) for t in s["tags"] if t.startswith("set=")}


def metric(host, repo, name):
    text = host.file(f"/var/lib/djangoops-metrics/djangoops_shop_offsite_{repo}.prom").content_string
    match = re.search(rf"^djangoops_offsite_{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def test_a_backup_is_pushed_to_every_repository(host, run, restic):
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr
    name = latest(host)
    for repo in REPOS:
        assert name in sets_in(restic, repo)
        assert metric(host, repo, "success") == 1
        assert metric(host, repo, "pushed_bytes") > 0
    assert offsite_column(host, name) == "backuphost,bucket"


def test_the_repository_holds_no_plaintext(host, backup_host):
    """The set's name is in its checksum file and the database's and tables' names in its
    manifest, in plain text on the server; none of them may appear on the backup host."""
    name = latest(host)
    manifest = host.file(f"{BACKUPS}/{name}.manifest.json").content_string
    # The database's name as the manifest writes it (a JSON string).
    canaries = [name, "catalog_item", json.dumps(json.loads(manifest)["database"], ensure_ascii=False)[1:-1]]
    assert all(c in manifest + host.file(f"{BACKUPS}/{name}.sha256").content_string for c in canaries)
    repository = f"/srv/restic/{host.backend.get_hostname()}"
    assert int(backup_host.run(f"find {repository}/data -type f | wc -l").stdout) > 0
    for canary in canaries:
        found = backup_host.run("grep -rlF -- %s %s", canary, repository)
        assert found.rc == 1, f"{canary!r} in plain text in {found.stdout}"


def test_the_wrong_password_cannot_read_the_repository(restic):
    for repo in REPOS:
        result = restic(repo, "snapshots --no-lock", password="not the password")
        assert result.rc != 0
        assert "wrong password" in result.stderr


def test_the_servers_own_key_cannot_delete_or_prune(host, restic, backup_host):
    before = snapshots(restic, "backuphost")
    repository = f"/srv/restic/{host.backend.get_hostname()}"
    files_before = backup_host.run(f"find {repository} -type f -not -path '*/locks/*' | sort").stdout
    # restic retries a refused delete, then warns (0.18 even exits 0): the outcome is what counts.
    restic("backuphost", f"forget {before[0]['id']}", timeout=10)
    restic("backuphost", "forget --group-by host --keep-last 1 --prune", timeout=10)
    assert [s["id"] for s in snapshots(restic, "backuphost")] == [s["id"] for s in before]
    assert backup_host.run(f"find {repository} -type f -not -path '*/locks/*' | sort").stdout == files_before
    # Nor does the key open a shell.
    address = scenario_file("address")
    shell = host.run(
        f"runuser -u shop -- ssh -i {HOME}/.djangoops/offsite/backuphost.key -o BatchMode=yes "
        f"-o UserKnownHostsFile={HOME}/.djangoops/offsite/backuphost.known_hosts offsite@{address} "
        f"rm -rf {repository} </dev/null"
    )
    assert backup_host.file(f"{repository}/config").exists, shell.stdout
    # What it may read besides: when its own snapshots arrived, and no other repository's.
    own = set(backup_host.run(f"ls {repository}/snapshots").stdout.split())
    others = set(backup_host.run("ls /srv/restic/*/snapshots").stdout.split())
    others = {name for name in others - own if re.fullmatch("[0-9a-f]{64}", name)}
    # (The Debian 13 server's repository is empty until its own tests push, after these.)
    assert own and (others or host.backend.get_hostname() == "offsite-debian12")
    for asked in ("djangoops-arrivals", "djangoops-arrivals offsite-debian12", "djangoops-arrivals offsite-debian13"):
        answer = host.run(
            f"runuser -u shop -- ssh -i {HOME}/.djangoops/offsite/backuphost.key -o BatchMode=yes "
            f"-o UserKnownHostsFile={HOME}/.djangoops/offsite/backuphost.known_hosts offsite@{address} "
            f"{asked} </dev/null"
        )
        # (Asked anything else, the key gets its repository's restic server, which speaks binary.)
        said = answer.stdout_bytes.decode("utf-8", "replace")
        assert not any(other in said for other in others), asked
        if asked == "djangoops-arrivals":
            lines = said.splitlines()
            assert lines[0] == "djangoops-arrivals 1" and {line.split()[0] for line in lines[1:]} == own


def test_the_servers_s3_key_cannot_delete_or_overwrite(host, restic):
    """What offsite_buckets.yml proved with a canary, on the history itself: with the server's
    own S3 keys, restic's forget and prune change nothing, deleting a snapshot's object or
    one of its versions and suspending the versioning are refused, and writing over a
    snapshot leaves its first version (and so its arrival) where it was."""
    hostname = host.backend.get_hostname()
    server, owner = bucket_client(hostname), bucket_client(hostname, "admin")
    from djangoops import s3  # (the engine's, on sys.path once bucket_client has run)

    before = [s["id"] for s in snapshots(restic, "bucket")]
    restic("bucket", f"forget {before[0]}", timeout=20)
    restic("bucket", "forget --group-by host --keep-last 1 --prune", timeout=20)
    assert [s["id"] for s in snapshots(restic, "bucket")] == before
    key = f"snapshots/{before[0]}"
    arrived = owner.arrivals("snapshots")[before[0]]
    [first] = owner.versions(key)
    for attempt in (lambda: server.delete(key), lambda: server.delete(key, first)):
        with pytest.raises(s3.S3Error) as refused:
            attempt()
        assert refused.value.code == "AccessDenied"
    suspend = b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>"
    with pytest.raises(s3.S3Error, match="AccessDenied"):
        server.request("PUT", query=[("versioning", "")], body=suspend)
    assert owner.versioning() == "Enabled"
    time.sleep(1.1)
    server.put(key, b"written over by a thief")
    try:
        assert owner.arrivals("snapshots")[before[0]] == arrived
        assert owner.versions(key)[1:] == [first]
    finally:
        # The owner puts it back: the newest version goes, the first is current again.
        for version in owner.versions(key)[:-1]:
            owner.delete(key, version)
    assert [s["id"] for s in snapshots(restic, "bucket")] == before


def assert_published_locally_and_failed_offsite(host, result, before, reason):
    assert result.rc == 14, result.stderr
    name = latest(host)
    assert name != before, "latest must move to the new local backup"
    assert host.run(f"cd {BACKUPS} && sha256sum --check --status {name}.sha256").rc == 0
    assert re.search(reason, result.stderr), result.stderr
    assert "the local backup is published" in result.stderr
    return name


def test_offsite_secrets_never_on_a_command_line_in_a_log_or_another_file(host, variables):
    """The repository password, the S3 secret key and the SSH key, as the database password is
    tested: never in a process's arguments (ps sampled all through a backup and its pushes),
    and in no file but their own, which is 0600 and the project user's; the bucket owner's
    secret (the controller's prune) in no file of the server."""
    hostname = host.backend.get_hostname()
    key_lines = scenario_file(hostname).splitlines()
    s3_keys = json.loads(scenario_file("s3.json"))[hostname]
    password = variables["db_backup_offsite_password"]
    # Each secret (the password also as JSON writes it, and its non-ASCII word), and its file.
    secrets = {
        "password": ((password, json.dumps(password)[1:-1], "pässwörd"), f"{OFFSITE}/password"),
        "S3 secret": ((s3_keys["server"][1],), f"{OFFSITE}/bucket.s3"),
        "SSH key": ((key_lines[len(key_lines) // 2],), f"{OFFSITE}/backuphost.key"),
        # The bucket owner's, for the controller's prune: never on the server at all.
        "S3 admin secret": ((s3_keys["admin"][1],), None),
    }
    sampled, samples = sample_ps_during(host, "backup_db.sh -q", out="/root/ps-offsite.txt")
    assert sampled.rc == 0, sampled.stderr
    assert "restic" in samples, "ps never saw a push running"
    for what, (needles, _file) in secrets.items():
        assert not any(n in samples for n in needles), f"the {what} on a command line"
    # One pass over every file for all the secrets, then which file holds which.
    holding = files_holding(host, *(n for needles, _file in secrets.values() for n in needles))
    for what, (needles, path) in secrets.items():
        found = {f for f in holding if any(n.encode() in host.file(f).content for n in needles)}
        assert found == ({path} if path else set()), f"the {what} in {found}"
        if path:
            assert (host.file(path).mode, host.file(path).user) == (0o600, "shop"), path


def test_backup_host_down_publishes_locally_then_push_sends_what_was_missed(host, run, restic, backup_host):
    """The backup host down (its sshd stopped; moto's S3 server, which keeps its data in
    memory only, stays up): the bucket still gets the set."""
    before = latest(host)
    backup_host.run_expect([0], "systemctl stop ssh.service")
    try:
        result = run("backup_db.sh")
        listing = run("list_db_backups.sh", "--no-checksums")
    finally:
        backup_host.run_expect([0], "systemctl start ssh.service")
    missed = assert_published_locally_and_failed_offsite(host, result, before, r"backuphost: .*Connection refused")
    assert "bucket: pushed" in result.stderr
    # The listing says it could not see one repository, rather than that it holds nothing.
    assert listing.rc == 14, listing.stderr
    assert "backuphost could not be read" in listing.stderr
    assert metric(host, "backuphost", "success") == 0
    assert metric(host, "backuphost", "sets_missing") == -1
    assert "/ping/backup/14" in host.file("/var/log/hc-pings.log").content_string
    assert offsite_column(host, missed) == "bucket"

    result = run("push_db_backups.sh")
    assert result.rc == 0, result.stderr
    for repo in REPOS:
        assert missed in sets_in(restic, repo)
        assert metric(host, repo, "success") == 1
        assert metric(host, repo, "sets_missing") == 0


def test_a_wrong_key_fails_the_push_not_the_backup(host, run, restic):
    key = f"{HOME}/.djangoops/offsite/backuphost.key"
    host.run_expect([0], f"cp -p {key} {key}.good")
    try:
        host.run_expect([0], f"printf '%s\\n' {quote(scenario_file('unknown'))} > {key}")
        before = latest(host)
        result = run("backup_db.sh")
        missed = assert_published_locally_and_failed_offsite(host, result, before, "Permission denied")
    finally:
        host.run_expect([0], f"mv -f {key}.good {key}")
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr
    assert {missed, latest(host)} <= sets_in(restic, "backuphost")


def test_a_full_backup_host_fails_the_push_then_the_next_run_catches_up(host, run, restic, backup_host):
    backup_host.run("dd if=/dev/zero of=/srv/restic/filler bs=1M status=none")
    try:
        before = latest(host)
        result = run("backup_db.sh")
        missed = assert_published_locally_and_failed_offsite(host, result, before, "backuphost: ")
    finally:
        backup_host.run_expect([0], "rm -f /srv/restic/filler")
    result = run("push_db_backups.sh")
    assert result.rc == 0, result.stderr
    assert missed in sets_in(restic, "backuphost")


def quotas(**quota):
    """Applies the backup host's role with QUOTA (server name -> bytes) for those servers,
    the scenario's own for the others."""
    result = playbook(
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "backup_host.yml"),
        "-e",
        json.dumps({"offsite_quotas": quota}),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def repository_bytes(backup_host, name):
    return int(backup_host.check_output(f"du -sb /srv/restic/{name}").split()[0])


def test_a_server_over_its_quota_fails_its_push_and_the_other_pushes(host, run, restic, backup_host):
    """One server's repository at its quota (offsite_host_clients[].quota): its pushes exit 14
    with the reason in its log, nothing more lands, and listing and fetching from it still
    work; the other server's pushes stay green. With room for less than a set, a push is
    stopped there. Back under its quota, the next run pushes what was missed."""
    me = host.backend.get_hostname()
    other = testinfra.get_host(
        "ansible://" + next(name for name in SERVERS if name != me),
        ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"],
    )
    # The two servers' runs of this test each apply the backup host's role with a quota of
    # their own: one at a time, or one's role run resets the other's quota (and its
    # daemons) in the middle of that one's push.
    with one_at_a_time("backup-host-quota"):
        _over_quota(host, run, restic, backup_host, me, other)


def one_at_a_time(name):
    """A lock on the controller, shared by the scenario's test workers."""

    @contextlib.contextmanager
    def held():
        path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], f"{name}.lock")
        with open(path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    return held()


def _over_quota(host, run, restic, backup_host, me, other):
    used = repository_bytes(backup_host, me)
    missed = None
    try:
        quotas(**{me: used})
        before = latest(host)
        result = run("backup_db.sh")
        missed = assert_published_locally_and_failed_offsite(
            host, result, before, rf"backuphost: .*djangoops: quota: repository {me} holds {used} bytes, its quota"
        )
        assert "bucket: pushed" in result.stderr
        assert repository_bytes(backup_host, me) == used
        # Over its quota, the repository still lists and gives back its sets.
        assert offsite_column(host, before) == "backuphost,bucket"
        host.run_expect([0], f"cd {BACKUPS} && rm -f {before}*")
        fetched = run("fetch_db_backup.sh", before, "--from", "backuphost")
        assert fetched.rc == 0 and fetched.stdout.strip() == before, fetched.stderr
        assert host.run(f"cd {BACKUPS} && sha256sum --check --status {before}.sha256").rc == 0
        # The other server is not stopped.
        theirs = other.run(f"{ENGINE_BIN}/backup_db.sh </dev/null")
        assert theirs.rc == 0, theirs.stderr
        # Room for less than the set: the push is stopped at the quota, and only the
        # time limit (30 s here) ends restic's retries. Once is enough for rclone's limit:
        # with Debian 13's restic.
        if me == "offsite-debian13":
            room = 2048
            quotas(**{me: used + room})
            result = run("push_db_backups.sh")
            assert result.rc == 14, result.stderr
            assert "the backup host stopped the push at this repository's quota" in result.stderr
            assert repository_bytes(backup_host, me) <= used + room
            assert missed not in sets_in(restic, "backuphost")
            # The lock the stopped restic left is gone: no check or prune finds it.
            assert backup_host.check_output(f"ls -A /srv/restic/{me}/locks") == ""
    finally:
        quotas()
        # What was missed is pushed now, whatever failed above (the later tests need it there).
        result = run("push_db_backups.sh")
    assert result.rc == 0, result.stderr
    assert missed in sets_in(restic, "backuphost")


def test_the_offsite_check_reads_the_data_back(run):
    result = run("check_offsite.sh", "--read-data-subset", "100%")
    assert result.rc == 0, result.stderr
    assert result.stderr.count("read back and good") == 2


def test_a_damaged_repository_fails_its_check_and_no_damaged_set_is_fetched(host, run, backup_host):
    """A byte flipped in every pack file of the server's repository on the backup host (a disk
    that rots): the weekly check fails naming the repository, and a fetch publishes nothing.
    The pack files are put back afterwards and the check passes again."""
    repository = f"/srv/restic/{host.backend.get_hostname()}"
    name = latest(host)
    aside = f"{HOME}/aside"
    flip = (
        "import pathlib, sys\n"
        "for p in pathlib.Path(sys.argv[1]).rglob('*'):\n"
        "    if p.is_file():\n"
        "        with open(p, 'r+b') as f:\n"
        "            f.seek(p.stat().st_size // 2); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0xFF]))\n"
    )
    backup_host.run_expect([0], f"cp -a {repository}/data {repository}/data.good")
    host.run_expect([0], f"runuser -u shop -- mkdir -p {aside} && mv {BACKUPS}/{name}* {aside}/")
    try:
        backup_host.run_expect([0], f"python3 -c {quote(flip)} {repository}/data")
        check = run("check_offsite.sh", "--read-data-subset", "100%")
        fetch = run("fetch_db_backup.sh", name, "--from", "backuphost")
        left = host.run(f"ls -A {BACKUPS}").stdout.split()
    finally:
        backup_host.run_expect([0], f"rm -rf {repository}/data && mv {repository}/data.good {repository}/data")
        host.run_expect([0], f"rm -f {BACKUPS}/{name}* && mv {aside}/* {BACKUPS}/ && rmdir {aside}")
    assert check.rc == 14, check.stderr
    assert "off-site repository backuphost: its check failed" in check.stderr
    assert "the off-site check of backuphost failed" in check.stderr
    assert "bucket: structure and 100% of the data read back and good" in check.stderr
    # restic refuses the damaged data (14), or hands it over and the sha256 check refuses it (8).
    expected = {14: f"{name} could not be fetched from backuphost; nothing was published",
                8: f"{name} does not match its sha256 checksum: the file is damaged"}  # fmt: skip
    assert fetch.rc in expected and expected[fetch.rc] in fetch.stderr, (fetch.rc, fetch.stderr)
    assert not [f for f in left if f.startswith(name) or "partial" in f or "staging" in f], left
    assert run("check_offsite.sh", "--read-data-subset", "100%").rc == 0


def test_fetch_brings_a_set_back_checked(host, run):
    name = latest(host)
    # What killed runs leave: a fetch's staging directory, a partial directory.
    host.run_expect([0], f"runuser -u shop -- mkdir -p {BACKUPS}/.fetch-staging/x {BACKUPS}/.old.partial")
    host.run_expect([0], f"cd {BACKUPS} && rm -f {name}*")
    result = run("fetch_db_backup.sh", name, "--from", "bucket")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == name
    assert host.run(f"cd {BACKUPS} && sha256sum --check --status {name}.sha256").rc == 0
    assert run("verify_db.sh", name, "--from", "local").rc == 0
    assert host.run(f"ls -A {BACKUPS} | grep -c 'partial\\|staging'").stdout.strip() == "0"


def test_the_test_restore_can_take_its_set_from_off_site(host, run, variables):
    """verify_db.sh --from REPO (or db_backup_verify_from) downloads the repository's newest
    set even when it is here too, checks it, test-restores it, and leaves nothing behind."""
    before = host.run(f"ls -A {BACKUPS}").stdout.split()
    result = run("verify_db.sh", "--from", "bucket")
    assert result.rc == 0, result.stderr
    fetched = re.search(r"downloaded (\S+) from bucket: sha256 and manifest good", result.stderr)
    assert fetched, result.stderr
    assert f"verified {fetched[1]} from off-site repository bucket by a test restore" in result.stderr
    assert host.run(f"ls -A {BACKUPS}").stdout.split() == before
    # The role's setting is the default source; `local` overrides it for one run.
    default = run("verify_db.sh")
    assert default.rc == 0, default.stderr
    source = variables.get("db_backup_verify_from", "")
    assert ("from off-site repository" in default.stderr) == bool(source), default.stderr
    if source:
        assert f"downloaded {fetched[1]} from {source}" in default.stderr
        local = run("verify_db.sh", "--from", "local")
        assert local.rc == 0 and "from off-site repository" not in local.stderr, local.stderr
    wrong = run("verify_db.sh", "--from", "nowhere")
    assert wrong.rc == 2
    assert "no off-site repository named 'nowhere'; configured: backuphost bucket" in wrong.stderr


def prune(hostname, extra):
    """playbooks/offsite_prune.yml for HOSTNAME, with the scenario's variables and EXTRA."""
    return playbook(
        "playbooks/offsite_prune.yml",
        "-e",
        "@molecule/shared/playbooks/vars/backup.yml",
        "-e",
        f"target={hostname}",
        "-e",
        json.dumps(extra),
    )


def test_the_prune_refuses_a_bucket_without_its_owners_keys(host, restic):
    """A prune with a server's own S3 keys would need a server key that may delete: the
    playbook refuses to start without the admin keys, and names the repository."""
    hostname = host.backend.get_hostname()
    before = snapshots(restic, "bucket")
    bucket = {
        "name": "bucket",
        "type": "s3",
        "url": f"s3:http://127.0.0.1:5000/{hostname}",
        "access_key_id": "test-access",
        "secret_access_key": "server-secret-only",
    }
    result = prune(hostname, {"db_backup_offsite_repositories": [bucket], "db_backup_offsite_keep_daily": 1})
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())  # (ansible-core 2.19 and later: stderr)
    assert (
        f"{hostname}: the s3 repositories bucket of db_backup_offsite_repositories lack admin_access_key_id or "
        "admin_secret_access_key" in said
    ), said[-3000:]
    assert "Nothing was pruned." in said
    assert "server-secret-only" not in said
    assert snapshots(restic, "bucket") == before


def test_the_controller_prunes_with_its_own_key(host, restic):
    hostname = host.backend.get_hostname()
    counts = {repo: len(snapshots(restic, repo)) for repo in REPOS}
    assert all(n > 2 for n in counts.values()), counts
    result = prune(
        hostname,
        {"db_backup_offsite_keep_daily": 1, "db_backup_offsite_keep_weekly": 0, "db_backup_offsite_keep_monthly": 1},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for repo in REPOS:
        kept = snapshots(restic, repo)
        assert 1 <= len(kept) <= 2 < counts[repo], (repo, kept)
        assert latest(host) in sets_in(restic, repo)
    # The next push sends nothing back: what the retention forgot stays forgotten.
    push = host.run(f"{COMMANDS}/push_db_backups.sh </dev/null")
    assert push.rc == 0, push.stderr
    assert push.stderr.count("holds every local set already") == 2, push.stderr
    # The credentials it wrote on the controller are gone, and none reached the output.
    assert "PRIVATE KEY" not in result.stdout
    assert scenario_file("admin") not in result.stdout


def snapshot_of(restic, repo, name):
    """The ids of the snapshots tagged as set NAME, oldest first."""
    return [s["id"] for s in snapshots(restic, repo) if f"set={name}" in s["tags"]]


def test_planted_snapshots_steer_neither_the_prune_nor_the_fetch(host, run, restic, backup_host):
    """The attack of issue 26, with the server's own key and password: fourteen sets dated
    one a month from next year on, a second snapshot under the newest set's name that holds
    an older set's dump with a checksum file and manifest to match, and one of another
    host. Then the documented prune with its defaults, and a fetch: the genuine newest set
    stays and comes back, every planted snapshot stays (evidence), and both name them."""
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr
    genuine = latest(host)
    genuine_sha = host.file(f"{BACKUPS}/{genuine}.sha256").content_string.split()[0]
    dumps = [n for n in host.run(f"ls -t {BACKUPS}").stdout.split() if re.search(r"_(daily|weekly)\.\w+\.\w+$", n)]
    older = next(n for n in dumps if n != genuine)
    [genuine_id] = snapshot_of(restic, "backuphost", genuine)
    held_before = {s["id"] for s in snapshots(restic, "backuphost")}
    ahead = [re.sub(r"_\d{8}T\d{6}Z_", f"_{2027 + m // 12}{m % 12 + 1:02d}01T020000Z_", genuine) for m in range(14)]
    for name in ahead:
        plant_set(host, name, older, set_time(name))
    forged_sha = plant_set(host, genuine, older, set_time(genuine))
    plant_set(host, genuine, older, set_time(genuine), repo="bucket")
    plant_set(host, genuine, older, set_time(genuine), host_tag="web2")
    assert forged_sha != genuine_sha
    planted = {s["id"] for s in snapshots(restic, "backuphost")} - held_before
    assert len(planted) == 16

    pruned = prune(host.backend.get_hostname(), {})
    assert pruned.returncode == 0, pruned.stdout[-3000:] + pruned.stderr[-2000:]
    held = {s["id"] for s in snapshots(restic, "backuphost")}
    assert genuine_id in held
    assert planted <= held, "the prune forgot a planted snapshot: the evidence"
    said = " ".join(pruned.stdout.split())  # (the report's long lines come wrapped)
    for name in ahead:
        assert re.search(rf"kept, not trusted: snapshot \w{{8}} of {name} is (dated|named for) 20\d\d", said), name
    assert f"of {genuine} arrived" in said and "a second copy under the same name is not trusted" in said
    assert re.search(rf"bucket: kept, not trusted: snapshot \w{{8}} of {genuine} arrived .* a second copy", said)
    assert len(snapshot_of(restic, "bucket", genuine)) == 2  # the forgery stays, as evidence

    # A fetch takes the genuine set, by name and as the newest, from either repository.
    for want, repo in ((genuine, "backuphost"), ("latest", "backuphost"), (genuine, "bucket")):
        host.run_expect([0], f"cd {BACKUPS} && rm -f {genuine} {genuine}.sha256 {genuine}.manifest.json")
        fetched = run("fetch_db_backup.sh", want, "--from", repo)
        assert fetched.rc == 0, fetched.stderr
        assert fetched.stdout.strip() == genuine
        assert host.file(f"{BACKUPS}/{genuine}.sha256").content_string.split()[0] == genuine_sha
        assert "a second copy under the same name is not trusted" in fetched.stderr
        if repo == "backuphost":
            assert f"{ahead[-1]} is dated 2028-02-01T02:00:00Z, after it arrived" in fetched.stderr
    assert offsite_column(host, genuine) == "backuphost,bucket"

    # What the key can still do: push a set under a new name, dated after the theft, that
    # looks genuine and becomes the newest. The operator then takes what arrived before.
    theft = backup_host.run_expect([0], "date -u '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    time.sleep(1.5)
    newer = re.sub(r"_\d{8}T\d{6}Z_", time.strftime("_%Y%m%dT%H%M%SZ_", time.gmtime()), genuine)
    plant_set(host, newer, older, set_time(newer))
    newest = run("fetch_db_backup.sh", "--from", "backuphost")
    assert newest.rc == 0 and newest.stdout.strip() == newer, newest.stderr
    before_theft = run("fetch_db_backup.sh", "--arrived-before", theft, "--from", "backuphost")
    assert before_theft.rc == 0, before_theft.stderr
    assert before_theft.stdout.strip() == genuine


def test_a_set_dated_in_the_future_does_not_stop_the_pushes(host, run, restic):
    """Pushes send the sets newer than the repository's newest: one dated 2099 (a clock that
    was wrong once) must not count, or nothing would be pushed until then. Debian 13 only: the
    drill fetches the Debian 12 server's newest set."""
    if host.backend.get_hostname() != "offsite-debian13":
        pytest.skip("the disaster drill fetches the newest set of offsite-debian12")
    name = latest(host)
    future = re.sub(r"_\d{8}T\d{6}Z_", "_20991231T000000Z_", name)
    workdir = f"{HOME}/future"
    host.run_expect([0], f"runuser -u shop -- sh -c 'mkdir -p {workdir} && echo fake > {workdir}/{future}'")
    pushed = restic(
        "backuphost",
        f"backup --host shop --tag djangoops --tag set={future} --tag sha256={'0' * 64} "
        f"--time '2099-12-31 00:00:00' {workdir}/{future}",
    )
    assert pushed.rc == 0, pushed.stderr
    result = run("backup_db.sh")
    assert result.rc == 0, result.stderr
    # The backup host's record says it arrived today: planted, and not the repository's newest.
    assert f"of {future} is dated 2099-12-31T00:00:00Z, after it arrived" in result.stderr
    assert latest(host) in sets_in(restic, "backuphost")
    # Nor is such a set ever fetched.
    fetch = run("fetch_db_backup.sh", future, "--from", "backuphost")
    assert fetch.rc == 8, fetch.stderr
    assert f"off-site repository backuphost holds no set named {future}" in fetch.stderr
    assert not host.file(f"{BACKUPS}/{future}").exists
