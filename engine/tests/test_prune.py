"""djangoops.prune: the controller's off-site prune forgets only genuine sets beyond the
policy, counted by when they arrived; what the record refuses, lacks, or is no set of the
project stays; a repository without the record is refused, not pruned by its claims."""

import calendar
import io
import json
import subprocess
import typing

import pytest
from djangoops import arrivals, prune

NOW = calendar.timegm((2026, 12, 6, 12, 0, 0))
DAY = 86400
PASSWORD = "prune pässwörd"


def name_at(epoch):
    return f"shop_{arrivals.time.strftime('%Y%m%dT%H%M%SZ', arrivals.time.gmtime(epoch))}_daily.pgdump.zst"


def snap(n, epoch, name=None, host="shop", tags=None):
    name = name or name_at(epoch)
    return {
        "id": f"{n:064x}",
        "time": arrivals.time.strftime("%Y-%m-%dT%H:%M:%SZ", arrivals.time.gmtime(epoch)),
        "hostname": host,
        "tags": tags if tags is not None else ["djangoops", f"set={name}", "sha256=" + "a" * 64, "kind=daily"],
        "paths": [f"/home/shop/db_backups/{name}"],
    }


class Restic:
    """subprocess.run for restic and the arrivals command, recording each call."""

    def __init__(self, listing, arrived, arrivals_rc=0, answer=None, fail=None):
        self.listing = listing
        self.arrived = arrived
        self.arrivals_rc = arrivals_rc
        self.answer = answer
        self.fail = fail or {}
        self.calls = []

    def __call__(self, argv, env, capture_output, text, check):
        assert capture_output and text and not check
        self.calls.append((argv, env))
        if argv[0] == "ssh":
            if self.answer is not None:
                out = self.answer
            else:
                out = arrivals.HEADER + "\n" + "".join(f"{i} {t}\n" for i, t in self.arrived.items())
            return subprocess.CompletedProcess(argv, self.arrivals_rc, out, "Permission denied\n")
        command = next(a for a in argv[1:] if not a.startswith("-") and "=" not in a)
        if command in self.fail:
            return subprocess.CompletedProcess(argv, 1, "", self.fail[command])
        if command == "snapshots":
            return subprocess.CompletedProcess(argv, 0, json.dumps(self.listing), "")
        if command == "forget" and "--keep-daily" in argv:
            return subprocess.CompletedProcess(argv, 0, "keep 2 snapshots:\nremove 3 snapshots:\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def restic(self, command):
        return [argv for argv, _env in self.calls if argv[0] == "restic" and command in argv]


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return {
        "project": "shop",
        "repository": "backuphost",
        "env": {
            "RESTIC_PASSWORD_FILE": str(tmp_path / "password"),
            "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
            "RESTIC_REPOSITORY": "rclone:web1",
        },
        "options": ["-o", "rclone.program=ssh -i admin.key offsite@backup"],
        "s3_keys": "",
        "arrivals": ["ssh", "-i", "admin.key", "offsite@backup", "djangoops-arrivals web1"],
        "keep": {"daily": "2", "weekly": "0", "monthly": "0"},
        "dry_run": False,
    }


def attacked():
    """Five nightly sets (arriving ten minutes after each was taken), then what a stolen
    key pushed this morning: fourteen sets dated one a month from next year on, a second
    snapshot under the newest set's name, and a snapshot of another host."""
    listing, arrived = [], {}
    for n in range(5):
        taken = calendar.timegm((2026, 12, 2 + n, 2, 0, 0))
        listing.append(snap(n + 1, taken))
        arrived[f"{n + 1:064x}"] = taken + 600
    planted_at = calendar.timegm((2026, 12, 6, 9, 0, 0))
    for m in range(14):
        future = calendar.timegm((2027 + m // 12, m % 12 + 1, 1, 2, 0, 0))
        listing.append(snap(100 + m, future))
        arrived[f"{100 + m:064x}"] = planted_at
    listing.append(snap(200, calendar.timegm((2026, 12, 6, 2, 0, 0))))
    arrived[f"{200:064x}"] = planted_at
    listing.append(snap(300, planted_at, host="elsewhere", tags=["mine"]))
    arrived[f"{300:064x}"] = planted_at
    return listing, arrived


def test_only_genuine_sets_beyond_the_policy_are_forgotten(settings):
    listing, arrived = attacked()
    run = Restic(listing, arrived)
    changed, lines = prune.prune(settings, run=run, now=lambda: NOW)
    assert changed
    forgotten = run.restic("forget")[0]
    assert forgotten[forgotten.index("forget") + 1 :] == [f"{n:064x}" for n in (1, 2, 3)]
    assert run.restic("prune")
    assert run.restic("unlock")
    assert lines[-1] == "backuphost: keep 2 sets, remove 3 (by when they arrived: 2 days, 0 weeks, 0 months)"
    planted = [line for line in lines if "kept, not trusted" in line]
    assert len(planted) == 15  # fourteen dated ahead, and the second copy
    assert any("second copy under the same name" in line for line in planted)
    assert "backuphost: kept 1 snapshots that are no backup set of shop" in lines
    # The ssh command and the repository reach restic through options and the environment.
    argv, env = run.calls[0]
    assert argv[:3] == ["restic", "-o", "rclone.program=ssh -i admin.key offsite@backup"]
    assert env["RESTIC_REPOSITORY"] == "rclone:web1"


def test_sets_planted_ahead_take_no_place_in_the_policy(settings):
    """Reproduced against restic's own policy (by the times the snapshots claim), the
    fourteen planted ones were the newest fourteen days and every genuine set went; by
    arrival, all five genuine sets are within fourteen days."""
    listing, arrived = attacked()
    run = Restic(listing, arrived)
    changed, lines = prune.prune(
        {**settings, "keep": {"daily": 14, "weekly": 0, "monthly": 0}}, run=run, now=lambda: NOW
    )
    assert not changed and run.restic("forget") == []
    # The five genuine sets are what the policy keeps; the fifteen planted are kept as evidence only.
    assert lines[-1] == "backuphost: keep 5 sets, remove 0 (by when they arrived: 14 days, 0 weeks, 0 months)"
    assert sum("kept, not trusted" in line for line in lines) == 15


def test_a_dry_run_forgets_nothing(settings):
    listing, arrived = attacked()
    run = Restic(listing, arrived)
    changed, lines = prune.prune({**settings, "dry_run": "True"}, run=run, now=lambda: NOW)
    assert not changed
    assert run.restic("forget") == [] and run.restic("prune") == []
    assert lines[-1].startswith("backuphost: keep 2 sets, would remove 3")


@pytest.mark.parametrize(
    ("run", "why"),
    [
        (Restic([], {}, answer=""), "its backup host keeps no record of when snapshots arrived"),
        (Restic([], {}, arrivals_rc=255), "reading when the snapshots arrived failed (exit 255): Permission denied"),
        (Restic([], {}, answer=arrivals.HEADER + "\nrubbish\n"), "not a snapshot's arrival"),
        (Restic([], {}, fail={"snapshots": "Fatal: wrong password\n"}), "restic snapshots failed (exit 1)"),
    ],
)
def test_a_prune_that_cannot_judge_forgets_nothing(settings, tmp_path, run, why, capsys):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    out = io.StringIO()
    assert prune.main([str(path)], run=run, now=lambda: NOW, out=out) == 1
    said = json.loads(out.getvalue())
    assert said["changed"] is False
    assert why in said["lines"][-1]
    assert run.restic("forget") == [] and run.restic("prune") == []


class Bucket:
    """s3.Client with the bucket owner's keys: its versioning, and the record."""

    made: typing.ClassVar[list] = []

    def __init__(self, url, access_key, secret_key, status="Enabled", arrived=None):
        self.url, self.access_key, self.secret_key = url, access_key, secret_key
        self.status, self.arrived = status, arrived or {}
        Bucket.made.append(self)

    def versioning(self):
        return self.status

    def arrivals(self, prefix):
        assert prefix == "snapshots"
        return self.arrived


def s3_settings(settings, tmp_path):
    keys = tmp_path / "bucket.s3"
    keys.write_text("AWS_ACCESS_KEY_ID=admin\nAWS_SECRET_ACCESS_KEY='it'\\''s secret'\n")
    env = {**settings["env"], "RESTIC_REPOSITORY": "s3:http://10.0.0.5:5000/web1"}
    return {**settings, "repository": "bucket", "options": [], "arrivals": [], "s3_keys": str(keys), "env": env}


def test_an_s3_repository_is_judged_by_its_buckets_versions(settings, tmp_path):
    listing, arrived = attacked()
    run = Restic(listing, {})
    Bucket.made = []
    changed, lines = prune.prune(
        s3_settings(settings, tmp_path), run=run, now=lambda: NOW, bucket=lambda *a: Bucket(*a, arrived=arrived)
    )
    assert changed
    forgotten = run.restic("forget")[0]
    assert forgotten[forgotten.index("forget") + 1 :] == [f"{n:064x}" for n in (1, 2, 3)]
    [owner] = Bucket.made
    assert (owner.url, owner.access_key, owner.secret_key) == ("s3:http://10.0.0.5:5000/web1", "admin", "it's secret")
    assert run.calls[0][1]["AWS_SECRET_ACCESS_KEY"] == "it's secret"  # restic's environment, not its argv
    assert lines[-1] == "bucket: keep 2 sets, remove 3 (by when they arrived: 2 days, 0 weeks, 0 months)"


def test_a_bucket_without_versioning_is_not_pruned(settings, tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(s3_settings(settings, tmp_path)))
    out = io.StringIO()
    run = Restic(*attacked())

    def bucket(*args):
        return Bucket(*args, status="Suspended")

    assert prune.main([str(path)], run=run, now=lambda: NOW, out=out, bucket=bucket) == 1
    assert "its bucket's versioning is not enabled" in json.loads(out.getvalue())["lines"][-1]
    assert run.restic("forget") == [] and run.restic("prune") == []


def test_a_failure_never_quotes_the_password(settings, tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    out = io.StringIO()
    run = Restic([], {}, fail={"unlock": f"Fatal: password {PASSWORD} is wrong\n"})
    assert prune.main([str(path)], run=run, now=lambda: NOW, out=out) == 1
    assert PASSWORD not in out.getvalue()
    assert "[redacted]" in out.getvalue()


def test_a_bucket_that_cannot_be_read_is_not_pruned(settings, tmp_path):
    from djangoops import s3

    class Refusing(Bucket):
        def versioning(self):
            raise s3.S3Error("AccessDenied: Access Denied", code="AccessDenied", status=403)

    run = Restic(*attacked())
    with pytest.raises(prune.PruneError, match="reading when the snapshots arrived failed: AccessDenied"):
        prune.prune(s3_settings(settings, tmp_path), run=run, now=lambda: NOW, bucket=Refusing)
    assert run.restic("forget") == []


def test_a_safety_backup_takes_no_days_place_and_stays_its_days(settings):
    """A restore's safety backup is kept for the days of the daily policy, and never counts as
    the day's set: the nightly set of its day stays beside it."""
    listing, arrived = [], {}
    for n in range(3):  # nightly sets 2026-12-04 .. 06
        taken = calendar.timegm((2026, 12, 4 + n, 2, 0, 0))
        listing.append(snap(n + 1, taken))
        arrived[f"{n + 1:064x}"] = taken + 600
    for n, day in enumerate((1, 6)):  # safety backups of restores on 2026-12-01 and 06, in the afternoon
        taken = calendar.timegm((2026, 12, day, 14, 0, 0))
        name = name_at(taken).replace("_daily.", "_safety.")
        listing.append(
            snap(10 + n, taken, name, tags=["djangoops", f"set={name}", "sha256=" + "b" * 64, "kind=safety"])
        )
        arrived[f"{10 + n:064x}"] = taken + 60
    run = Restic(listing, arrived)
    changed, lines = prune.prune(settings, run=run, now=lambda: calendar.timegm((2026, 12, 6, 20, 0, 0)))
    assert changed
    forgotten = run.restic("forget")[0]
    # Kept: the nightly sets of the 5th and 6th, and the safety backup of the 6th.
    assert sorted(forgotten[forgotten.index("forget") + 1 :]) == [f"{n:064x}" for n in (1, 10)]
    assert lines[-1] == "backuphost: keep 3 sets, remove 2 (by when they arrived: 2 days, 0 weeks, 0 months)"
