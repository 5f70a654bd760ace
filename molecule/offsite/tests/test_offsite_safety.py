"""Safety backups (what a restore replaced: the writes since the last backup are in them
only) go off-site like any set, tagged kind=safety, and a restore's retention keeps each one
until every repository holds it. On the Debian 13 server, which keeps one safety backup
(db_backup_keep_safety: 1); the disaster drill after this file restores Debian 12's sets."""

import pytest
from db_backup.backup_helpers import BACKUPS
from offsite_helpers import latest, snapshots


def safety_sets(host):
    return set(host.run(f"cd {BACKUPS} && ls -1 | grep '_safety\\.[a-z.]*zst$' || true").stdout.split())


def test_a_safety_backup_goes_off_site_before_it_is_pruned_here(host, run, restic):
    if host.backend.get_hostname() != "offsite-debian13":
        pytest.skip("on the Debian 13 server only: the drill restores Debian 12's sets")

    def restore():
        before = safety_sets(host)
        result = run("restore_db.sh", latest(host), "--yes")
        assert result.rc == 0, result.stderr
        (new,) = safety_sets(host) - before
        return new, result

    first = restore()[0]
    second, result = restore()
    # Two safety backups where one is kept: the first stays, as no repository holds it yet.
    assert {first, second} <= safety_sets(host)
    assert f"retention: keeping {first} (safety) until every off-site repository holds it" in result.stderr

    pushed = run("push_db_backups.sh")
    assert pushed.rc == 0, pushed.stderr
    for repo in ("backuphost", "bucket"):
        kinds = {
            tag[4:]: next((t for t in s["tags"] if t.startswith("kind=")), None)
            for s in snapshots(restic, repo)
            for tag in s["tags"]
            if tag.startswith("set=")
        }
        assert (kinds.get(first), kinds.get(second)) == ("kind=safety", "kind=safety"), repo

    # Off-site now, both go from here at the next restore's retention.
    third, result = restore()
    assert safety_sets(host) == {third}
    assert f"retention: removing {first} (safety, keeping 1)" in result.stderr
    # And the first comes back from off-site, checked; `latest` is never a safety backup.
    fetched = run("fetch_db_backup.sh", first, "--from", "backuphost")
    assert fetched.rc == 0 and fetched.stdout.strip() == first, fetched.stderr
    assert host.run(f"cd {BACKUPS} && sha256sum --check --status {first}.sha256").rc == 0
    newest = run("fetch_db_backup.sh", "--from", "bucket")
    assert newest.rc == 0 and "_safety." not in newest.stdout, newest.stderr
