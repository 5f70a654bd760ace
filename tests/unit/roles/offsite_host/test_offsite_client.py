"""roles/offsite_host/files/offsite-client, the forced command of a server's key: what it runs for
each thing a client may ask, and its quota. rclone is a stand-in on PATH that prints the arguments
it got (the scenario molecule/offsite runs the real one); du is the real one, on a real directory."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
CLIENT = ROOT / "roles/offsite_host/files/offsite-client"
SERVE = ["serve", "restic", "--stdio", "--append-only", "--config", "/dev/null"]


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "srv" / "shop"
    (path / "data").mkdir(parents=True)
    (path / "data" / "pack").write_bytes(b"x" * 100_000)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rclone = bin_dir / "rclone"
    rclone.write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    rclone.chmod(0o755)
    return path


def used(repo):
    return int(subprocess.run(["du", "-sb", str(repo)], capture_output=True, text=True, check=True).stdout.split()[0])


def client(repo, asked, *quota):
    env = {"PATH": f"{repo.parent.parent / 'bin'}:/usr/bin:/bin", "SSH_ORIGINAL_COMMAND": asked}
    if asked is None:
        del env["SSH_ORIGINAL_COMMAND"]
    result = subprocess.run(
        ["sh", str(CLIENT), str(repo), *map(str, quota)], env=env, capture_output=True, text=True, check=False
    )
    return result.returncode, result.stdout.splitlines(), result.stderr


@pytest.mark.parametrize("asked", ["serve restic --stdio --b2-hard-delete", "", None, "sh -c 'rm -rf /'"])
def test_without_a_quota_anything_asked_is_the_append_only_server_of_its_own_repository(repo, asked):
    assert client(repo, asked) == (0, [*SERVE, str(repo)], "")


def test_a_read_is_served_read_only_whatever_the_quota(repo):
    read_only = [*SERVE, f":union,upstreams='{repo}:ro /usr/local/lib/djangoops/empty:ro':"]
    assert client(repo, "djangoops-read") == (0, read_only, "")
    # What restic asks: the word, then the repository's name, which is not taken.
    assert client(repo, "djangoops-read backuphost:") == (0, read_only, "")
    assert client(repo, "djangoops-read ../other") == (0, read_only, "")
    # Over its quota, the repository can still be listed and fetched from.
    assert client(repo, "djangoops-read backuphost:", 1) == (0, read_only, "")
    # Only that word: anything else is a write.
    for asked in ("djangoops-readx", "x djangoops-read", "serve restic --stdio djangoops-read"):
        assert client(repo, asked)[1][-1] == str(repo)


def test_a_write_may_move_what_is_left_of_the_quota(repo):
    quota = used(repo) + 5000
    assert client(repo, "serve restic --stdio", quota) == (0, [*SERVE, "--max-transfer", "5000B", str(repo)], "")


@pytest.mark.parametrize("over", [0, 1, 10**9])
def test_a_repository_holding_its_quota_takes_nothing_more_and_says_why(repo, over):
    holds = used(repo)
    quota = holds - over
    code, out, err = client(repo, "serve restic --stdio", quota)
    assert (code, out) == (1, [])
    assert (
        err.split()
        == (
            f"djangoops: quota: repository shop holds {holds} bytes, its quota is {quota} bytes: nothing more is "
            "taken until the backup host's admin prunes it or raises its quota (offsite_host_clients)"
        ).split()
    )
