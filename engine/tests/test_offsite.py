"""djangoops.offsite: pushes of the sets a repository lacks (oldest first, stopping at
the first failure), what a repository that cannot be read, a time limit or a stale
lock does, sets dated in the future, fetches checked before anything is published,
restic's own check, where each set is, and secrets kept out of argv and the log.
Everything runs through FakeRunner: restic is never started."""

import calendar
import errno
import hashlib
import json
import os
import time
import typing
from types import SimpleNamespace

import pytest
from command_helpers import arrivals_of, arrivals_rule, shop_project, snapshot_id
from djangoops import config, offsite, sets
from djangoops.errors import Exit, Failure
from djangoops.offsite import Offsite, error_line, iec, snapshot_epoch
from djangoops.runner import DEVNULL, CommandFailed, Interrupted
from fakes import FakeRunner

A = "shop_20261201T020000Z_daily.pgdump.zst"
B = "shop_20261202T020000Z_daily.pgdump.zst"
C = "shop_20261203T020000Z_weekly.pgdump.zst"
D = "shop_20261204T020000Z_daily.pgdump.zst"
SAFETY = "shop_20261205T020000Z_safety.pgdump.zst"
NOW = calendar.timegm((2026, 12, 6, 8, 0, 0))
PASSWORD = "correct horse pässwörd"
S3_SECRET = "s3-secret-do-not-log"
ADDRESS = {"backuphost": "rclone:backuphost:", "bucket": "s3:https://s3.example/bucket"}
STALE = (
    "Fatal: unable to create lock in backend: repository is already locked exclusively by PID 1 on web\n"
    "the `unlock` command can be used to remove stale locks\n"
)


class RecordingLog:
    """Log's interface, keeping the messages exactly as given: hide() records but
    redacts nothing, so the redaction tested is offsite.py's own."""

    def __init__(self):
        self.lines = []
        self.hidden = []

    def info(self, message):
        self.lines.append(("INFO", message))

    def warn(self, message):
        self.lines.append(("WARN", message))

    def error(self, message):
        self.lines.append(("ERROR", message))

    def hide(self, *secrets):
        self.hidden.extend(secrets)

    @property
    def text(self):
        return "\n".join(f"{level} {message}" for level, message in self.lines)

    def at(self, level):
        return [message for lvl, message in self.lines if lvl == level]


class Clock:
    def __init__(self):
        self.now = float(NOW)
        self.mono = 1000.0

    def time(self):
        return self.now

    def monotonic(self):
        return self.mono


def epoch_of(name):
    return calendar.timegm(time.strptime(name.split("_")[1], "%Y%m%dT%H%M%SZ"))


def rfc3339(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def make_set(directory, name, data=None, media=None, project="shop", engine="postgresql"):
    """A set as backup_db.sh publishes it; returns the dump's sha256."""
    data = data if data is not None else f"dump of {name}".encode()
    (directory / name).write_bytes(data)
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}\n"]
    if media is not None:
        (directory / sets.media_name_of(name)).write_bytes(media)
        lines.append(f"{hashlib.sha256(media).hexdigest()}  {sets.media_name_of(name)}\n")
    (directory / f"{name}.sha256").write_text("".join(lines))
    (directory / f"{name}.manifest.json").write_text(
        json.dumps({"manifest_version": 1, "project": project, "engine": engine, "tables": {"a": 1}, "rows": 1})
    )
    return hashlib.sha256(data).hexdigest()


def snap(name, sha, when=None, snap_id=None):
    return {
        "time": when or rfc3339(epoch_of(name)),
        "tree": "0" * 64,
        "paths": [f"/home/shop/db_backups/{name}"],
        "hostname": "shop",
        "username": "shop",
        "tags": ["djangoops", f"set={name}", f"sha256={sha}", f"kind={sets.kind_of(name, 'shop')}"],
        "id": snap_id or snapshot_id(name),
    }


def listing(*snaps):
    return json.dumps(list(snaps)).encode()


def restic(repo, command):
    """A FakeRunner rule matching restic COMMAND against REPO."""

    def match(call):
        return (
            call.programs[0] == "restic" and call.env.get("RESTIC_REPOSITORY") == ADDRESS[repo] and command in call.argv
        )

    return match


def summary(added):
    return (
        json.dumps({"message_type": "status", "percent_done": 0.5})
        + "\n"
        + json.dumps({"message_type": "summary", "data_added": added, "snapshot_id": "abc"})
        + "\n"
    ).encode()


@pytest.fixture
def env(tmp_path):
    backups = tmp_path / "db_backups"
    secrets = tmp_path / "offsite"
    metrics_dir = tmp_path / "metrics"
    run_dir = tmp_path / "run"
    for directory in (backups, secrets, metrics_dir, run_dir):
        directory.mkdir()
    (secrets / "password").write_text(PASSWORD + "\n")
    (secrets / "bucket.s3").write_text(f"AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY={S3_SECRET}\n")
    for name in ("backuphost", "bucket"):
        (secrets / f"{name}.initialized").touch()
    project = shop_project(tmp_path / "home", tmp_path / "commands", backups, tmp_path / "logs", metrics_dir)
    repositories = (
        config.Repository("backuphost", "ssh", "backup.example", 2222, "offsite", ""),
        config.Repository("bucket", "s3", "", 0, "", ADDRESS["bucket"]),
    )
    ns = SimpleNamespace(
        backups=backups,
        secrets=secrets,
        metrics=metrics_dir,
        run=run_dir,
        project=project,
        fake=FakeRunner(),
        log=RecordingLog(),
        clock=Clock(),
        exits=[],
    )

    def make(repos=repositories, **kwargs):
        settings = config.Offsite(
            dir=str(secrets), timeout=600, check_subset="10%", verify_from="", repositories=tuple(repos)
        )
        kwargs.setdefault("test_compression", lambda path: True)
        kwargs.setdefault("on_exit", ns.exits.append)
        kwargs.setdefault("which", lambda name: f"/usr/bin/{name}")
        kwargs.setdefault("s3_client", FakeBucket)
        return Offsite(
            ns.fake,
            ns.log,
            project,
            settings,
            str(run_dir),
            clock=ns.clock.time,
            monotonic=ns.clock.monotonic,
            **kwargs,
        )

    ns.make = make
    ns.bucket = lambda **kw: make(repos=repositories[1:], **kw)
    ns.ssh = lambda **kw: make(repos=repositories[:1], **kw)
    return ns


class ArrivedLate(dict):
    """A record of arrivals in which every snapshot arrived at the start of 2100."""

    def get(self, key, default=None):
        return super().get(key, 4102444800)

    def __getitem__(self, key):
        return self.get(key)


class FakeBucket:
    """s3.Client for the unit tests: versioning on, and unless a test says otherwise every
    snapshot arrived late (nothing is refused). Each instance is recorded in CREATED."""

    created: typing.ClassVar[list] = []
    arrived = None
    status = "Enabled"
    errors: typing.ClassVar[list] = []  # what versioning() raises, when any

    def __init__(self, url, access_key, secret_key, timeout=None):
        self.url, self.access_key, self.secret_key, self.timeout = url, access_key, secret_key, timeout
        FakeBucket.created.append(self)

    def versioning(self):
        for error in FakeBucket.errors:
            raise error
        return FakeBucket.status

    def arrivals(self, prefix):
        assert prefix == "snapshots"
        return FakeBucket.arrived if FakeBucket.arrived is not None else ArrivedLate()


@pytest.fixture(autouse=True)
def fake_bucket():
    FakeBucket.created, FakeBucket.arrived, FakeBucket.status, FakeBucket.errors = [], None, "Enabled", []
    return FakeBucket


def metric(env, repo, name):
    text = (env.metrics / f"djangoops_shop_offsite_{repo}.prom").read_text()
    for line in text.splitlines():
        if line.startswith(f"djangoops_offsite_{name}{{"):
            return line.rsplit(" ", 1)[1]
    raise AssertionError(text)


def pushes(env):
    """The set each restic backup call pushed, in order."""
    return [
        next(arg[4:] for arg in call.argv if arg.startswith("set="))
        for call in env.fake.calls
        if call.programs[0] == "restic" and "backup" in call.argv
    ]


def command(call):
    """The restic command of CALL (after the options an ssh repository adds)."""
    argv = call.argv[1:]
    while argv[0] == "-o":
        argv = argv[2:]
    return argv[0]


def restic_calls(env, command):
    return [call for call in env.fake.calls if call.programs[0] == "restic" and command in call.argv]


# --- small pieces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("Fatal: unable to open repository\nrclone: ssh: connect to host x port 22: Connection refused\n", None),
        ("x\nFatal: wrong password or no key found\nsomething after\n", "Fatal: wrong password or no key found"),
        ("Load(<lock/1>) failed\nerror: pack 1 not found\nFatal: repository contains errors\n", None),
        ("write failed: no space left on device\nFatal: unable to save snapshot\n", None),
        ("first\nlast line\n\n   \n", "last line"),
        ("", "no message"),
    ],
)
def test_error_line_prefers_ssh_then_restic_then_the_last_line(text, line):
    expected = {
        0: "rclone: ssh: connect to host x port 22: Connection refused",
        2: "Fatal: repository contains errors",
        3: "write failed: no space left on device",
    }
    if line is None:
        line = next(v for k, v in expected.items() if v in text)
    assert error_line(text) == line


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-12-01T02:00:00Z", calendar.timegm((2026, 12, 1, 2, 0, 0))),
        ("2026-12-01T03:00:00.123456789+01:00", calendar.timegm((2026, 12, 1, 2, 0, 0))),
        ("2026-12-01T02:00:59.999999999Z", calendar.timegm((2026, 12, 1, 2, 0, 59))),
    ],
)
def test_snapshot_times_read_as_date_did(text, epoch):
    assert snapshot_epoch(text) == epoch


def test_sizes_as_numfmt_writes_them():
    cases = {0: "0", 1023: "1023", 1024: "1.0K", 1536: "1.5K", 9999: "9.8K", 10239: "10K", 10241: "11K"}
    cases.update({1047552: "1023K", 1048575: "1.0M", 175000000: "167M", 5 * 2**60: "5.0E", 2**70: "1024E"})
    assert {size: iec(size) for size in cases} == cases


# --- pushing --------------------------------------------------------------------------------


def test_a_push_sends_the_sets_newer_than_the_newest_oldest_first(env, monkeypatch):
    sha_a = make_set(env.backups, A)
    make_set(env.backups, B, media=b"media")
    make_set(env.backups, C)
    make_set(env.backups, SAFETY)  # a restore's safety backup goes too
    (env.backups / D).write_bytes(b"no checksum file: not whole")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "backup"), stdout=summary(1536))
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        done = env.bucket().push_all()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert [(p.repo, p.ok, p.pushed, p.missing, p.added) for p in done] == [("bucket", True, (B, C, SAFETY), 0, 4608)]
    assert pushes(env) == [B, C, SAFETY]
    assert "kind=safety" in restic_calls(env, "backup")[2].argv
    first = restic_calls(env, "backup")[0]
    sha_b = (env.backups / f"{B}.sha256").read_text().split()[0]
    assert first.argv == [
        "restic",
        "backup",
        "--json",
        "--host",
        "shop",
        "--tag",
        "djangoops",
        "--tag",
        f"set={B}",
        "--tag",
        f"sha256={sha_b}",
        "--tag",
        "kind=daily",
        "--time",
        "2026-12-02 03:00:00",  # local time (Paris), as restic reads --time
        "--",
        f"{B}.sha256",
        f"{B}.manifest.json",
        "shop_20261202T020000Z_daily.media.tar.zst",
        B,
    ]
    assert first.cwd == str(env.backups / offsite.PIN)
    assert not (env.backups / offsite.PIN).exists()
    assert first.timeout == 600
    assert first.env == {
        "RESTIC_PASSWORD_FILE": str(env.secrets / "password"),
        "RESTIC_CACHE_DIR": os.path.join(env.project.home, ".cache", "restic"),
        "RESTIC_PROGRESS_FPS": "0.0166",
        "RESTIC_REPOSITORY": ADDRESS["bucket"],
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    assert "kind=weekly" in restic_calls(env, "backup")[1].argv
    listed = restic_calls(env, "snapshots")[0]
    assert listed.argv == ["restic", "snapshots", "--json", "--no-lock", "--host", "shop", "--tag", "djangoops"]
    assert listed.cwd == "/"
    assert env.log.at("INFO") == [
        f"off-site repository bucket: pushed {B} (1.5KB new after deduplication, in 0.0 s)",
        f"off-site repository bucket: pushed {C} (1.5KB new after deduplication, in 0.0 s)",
        f"off-site repository bucket: pushed {SAFETY} (1.5KB new after deduplication, in 0.0 s)",
    ]
    assert (metric(env, "bucket", "success"), metric(env, "bucket", "sets_missing")) == ("1", "0")
    assert metric(env, "bucket", "pushed_bytes") == "4608"
    assert metric(env, "bucket", "last_success_timestamp_seconds") == str(NOW)


def test_a_set_removed_by_the_retention_during_its_push_is_pushed_whole(env):
    """The push reads hard links of the set's files: the backups' retention, under the
    other lock, removing the set meanwhile takes nothing from the snapshot."""
    make_set(env.backups, A, media=b"media")
    read = {}

    def retention_then_restic_reads(call):
        for file in call.argv[call.argv.index("--") + 1 :]:
            os.remove(env.backups / file)  # the retention
        for file in call.argv[call.argv.index("--") + 1 :]:
            read[file] = (env.backups / offsite.PIN / file).read_bytes()

    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), effect=retention_then_restic_reads, stdout=summary(10))
    (done,) = env.bucket().push_all()
    assert (done.ok, done.pushed, done.missing) == (True, (A,), 0)
    assert read[A] == f"dump of {A}".encode() and read[sets.media_name_of(A)] == b"media"
    assert len(read) == 4
    assert sorted(os.listdir(env.backups)) == []  # the links went with the push


def test_a_set_removed_before_its_push_is_passed_over(env):
    make_set(env.backups, A)
    make_set(env.backups, B)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())

    def remove_b(call):
        if f"set={A}" in call.argv:
            for file in (B, f"{B}.sha256", f"{B}.manifest.json"):
                os.remove(env.backups / file)

    env.fake.on(restic("bucket", "backup"), effect=remove_b, stdout=summary(10))
    # B was listed as missing, and is gone when its turn comes.
    (done,) = env.bucket().push_all()
    assert (done.ok, done.pushed, done.missing, done.added) == (True, (A,), 0, 10)
    assert pushes(env) == [A]
    assert f"off-site repository bucket: {B} was removed here before it could be pushed" in env.log.at("INFO")


def test_a_set_whose_dump_goes_while_it_is_pinned_is_passed_over(env, monkeypatch):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    real_link = os.link

    def link(source, target, **kwargs):
        if os.path.basename(source) == A:
            os.remove(source)  # the retention, between two links
        return real_link(source, target, **kwargs)

    monkeypatch.setattr(os, "link", link)
    (done,) = env.bucket().push_all()
    assert (done.ok, done.pushed) == (True, ())
    assert pushes(env) == [] and not (env.backups / offsite.PIN).exists()


@pytest.mark.parametrize("leftover", ["directory", "file", "link"])
def test_what_a_killed_push_left_in_the_pin_is_replaced(env, tmp_path, leftover):
    pin = env.backups / offsite.PIN
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the push's")
    if leftover == "directory":
        pin.mkdir()
        (pin / A).write_text("a stale link")
    elif leftover == "file":
        pin.write_text("x")
    else:
        pin.symlink_to(outside)
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), stdout=summary(10))
    (done,) = env.bucket().push_all()
    assert done.pushed == (A,) and not pin.exists()
    assert (outside / "keep").read_text() == "not the push's"


def test_without_hard_links_the_set_is_pushed_from_where_it_lies(env, monkeypatch):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), stdout=summary(10))

    def link(source, target, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", link)
    (done,) = env.bucket().push_all()
    assert done.pushed == (A,) and restic_calls(env, "backup")[0].cwd == str(env.backups)
    assert env.log.at("WARN") == [
        f"could not link the set's files in {env.backups / offsite.PIN} (Operation not permitted); pushing them "
        f"from {env.backups}, where a backup's retention could remove them during the push"
    ]
    assert sorted(os.listdir(env.backups)) == sorted([A, f"{A}.sha256", f"{A}.manifest.json"])


def incomplete_push(env, snapshot_id="0123abcd"):
    """restic backup exits 3 (a file could not be read): it stored an incomplete snapshot."""
    line = json.dumps({"message_type": "summary", "data_added": 5, "snapshot_id": snapshot_id}) if snapshot_id else ""
    return env.fake.on(
        restic("bucket", "backup"),
        times=1,
        fail=3,
        stdout=(line + "\n").encode(),
        stderr="error: read shop.pgdump.zst: input/output error\nWarning: at least one source file could not be read",
    )


def test_an_incomplete_snapshot_does_not_count_and_the_set_is_pushed_again(env):
    sha_a = make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), times=1, stdout=listing())
    incomplete_push(env)
    with pytest.raises(Failure) as raised:
        env.bucket().push_all()
    assert raised.value.code == Exit.OFFSITE_FAILED
    assert env.log.at("WARN") == [
        f"off-site repository bucket: pushing {A} failed (restic exit 3): error: read shop.pgdump.zst: "
        f"input/output error; restic stored an incomplete snapshot (0123abcd), which does not count: the next "
        f"push sends {A} again"
    ]
    assert metric(env, "bucket", "sets_missing") == "1"
    assert (env.secrets / "bucket.incomplete").read_text() == "0123abcd\n"
    # The repository now lists it; this server knows it holds no set.
    # (restic's summary gave the short id; the listing has the whole one.)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a, snap_id="0123abcd" + "e" * 56)))
    env.fake.on(restic("bucket", "backup"), stdout=summary(10))
    (done,) = env.bucket().push_all()
    assert (done.ok, done.pushed) == (True, (A,))
    assert env.bucket().where().holders == {}
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket", A)
    assert raised.value.message.startswith(f"off-site repository bucket holds no set named {A}")


def test_only_a_recorded_id_that_begins_a_snapshots_id_rules_it_out(env):
    sha_a = make_set(env.backups, A)
    (env.secrets / "bucket.incomplete").write_text("0123\n9999abcd\n")  # too short; another snapshot
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a, snap_id="0123abcd" + "e" * 56)))
    assert env.bucket().where().holders == {f"{A}@{sha_a}": "bucket"}


def test_an_incomplete_snapshot_without_its_id_is_still_a_failed_push(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    incomplete_push(env, snapshot_id=None)
    with pytest.raises(Failure):
        env.bucket().push_all()
    assert "restic stored an incomplete snapshot (id unknown)" in env.log.at("WARN")[0]
    assert not (env.secrets / "bucket.incomplete").exists()


def test_an_incomplete_snapshot_that_cannot_be_recorded_is_warned_about(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    incomplete_push(env)
    (env.secrets / "bucket.incomplete").mkdir()
    with pytest.raises(Failure):
        env.bucket().push_all()
    record = env.secrets / "bucket.incomplete"
    assert (
        env.log.at("WARN")[0]
        == f"could not read {record} (Is a directory): the incomplete snapshots it names are taken as whole"
    )
    assert env.log.at("WARN")[1].startswith("could not record the incomplete snapshot 0123abcd (")


def test_a_repository_holding_the_newest_set_gets_nothing(env):
    """What the off-site retention forgot (A) stays forgotten: it is older than the newest."""
    make_set(env.backups, A)
    sha_b = make_set(env.backups, B)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(B, sha_b)))
    done = env.bucket().push_repo("bucket")
    assert (done.ok, done.pushed, done.missing) == (True, (), 0)
    assert pushes(env) == []
    assert env.log.at("INFO") == ["off-site repository bucket: holds every local set already"]


def test_a_set_newer_than_the_newest_but_held_is_not_pushed_again(env):
    sha_b = make_set(env.backups, B)
    make_set(env.backups, C)
    # C is there already, under an earlier time (pushed from a server with a slow clock).
    env.fake.on(
        restic("bucket", "snapshots"),
        stdout=listing(snap(C, (env.backups / f"{C}.sha256").read_text().split()[0], rfc3339(epoch_of(A)))),
    )
    done = env.bucket().push_repo("bucket")
    assert done.pushed == (B,) and sha_b
    assert pushes(env) == [B]


def test_weekday_sets_are_dated_by_their_files(env):
    weekday = "shop_3-Wednesday.pgdump.zst"
    make_set(env.backups, weekday)
    sha_a = make_set(env.backups, A)
    os.utime(env.backups / weekday, (NOW - 60, NOW - 60))
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.bucket().push_all()
    assert pushes(env) == [weekday]
    assert "kind=weekday" in restic_calls(env, "backup")[0].argv


def test_a_stamp_no_calendar_has_is_dated_by_the_file(env):
    odd = "shop_20261399T020000Z_daily.pgdump.zst"
    make_set(env.backups, odd)
    os.utime(env.backups / odd, (12345, 12345))
    assert env.bucket().set_epoch(odd) == 12345


def test_one_repository_failing_does_not_stop_the_others(env):
    make_set(env.backups, A)
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing())
    env.fake.on(arrivals_rule, stdout=arrivals_of(listing()))
    env.fake.on(restic("bucket", "snapshots"), fail=1, stderr="Fatal: unable to open config file: Stat: 403 Forbidden")
    with pytest.raises(Failure) as raised:
        env.make().push_all()
    assert raised.value.code == Exit.OFFSITE_FAILED == 14
    assert raised.value.message == (
        "the off-site copy to bucket failed; the local backup is published, and the next run "
        "(or push_db_backups.sh) pushes every set still missing"
    )
    assert pushes(env) == [A]  # to backuphost
    assert env.log.at("WARN") == [
        "off-site repository bucket: reading its snapshots failed (restic exit 1): "
        "Fatal: unable to open config file: Stat: 403 Forbidden"
    ]
    assert (metric(env, "bucket", "success"), metric(env, "bucket", "sets_missing")) == ("0", "-1")
    assert (metric(env, "backuphost", "success"), metric(env, "backuphost", "sets_missing")) == ("1", "0")


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"{not json",
        b'{"a": 1}',
        b'[{"tags": ["djangoops", "set=' + A.encode() + b'"], "id": "x", "time": "soon"}]',
    ],
)
def test_a_listing_that_cannot_be_understood_is_never_no_sets(env, answer):
    """restic exiting 0 with nothing or nonsense on stdout: nothing is pushed (not every
    set again), the repository counts as unreadable, and a fetch says so."""
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=answer)
    done = env.bucket().push_repo("bucket")
    assert (done.ok, done.missing, pushes(env)) == (False, -1, [])
    assert env.log.at("WARN")[0].startswith(
        "off-site repository bucket: reading its snapshots failed: restic's answer is not a list of snapshots ("
    )
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket", "latest")
    assert raised.value.code == Exit.OFFSITE_FAILED
    assert raised.value.message == "off-site repository bucket cannot be read; nothing was fetched"
    where = env.bucket().where()
    assert where == offsite.Where({}, ("bucket",))
    with pytest.raises(offsite.RepositoryError):
        env.bucket().sets("bucket")


def test_a_push_failing_midway_stops_there(env):
    sha_a = make_set(env.backups, A)
    for name in (B, C, D):
        make_set(env.backups, name)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "backup"), times=1, stdout=summary(100))
    env.fake.on(
        restic("bucket", "backup"),
        fail=1,
        stderr="Save(<data/1>) returned error, retrying\nFatal: unable to save snapshot: 507 Insufficient Storage",
    )
    with pytest.raises(Failure) as raised:
        env.bucket().push_all()
    assert raised.value.code == Exit.OFFSITE_FAILED
    assert pushes(env) == [B, C]  # D never tried: no gap for the next run to skip
    assert env.log.at("WARN") == [
        f"off-site repository bucket: pushing {C} failed (restic exit 1): "
        "Fatal: unable to save snapshot: 507 Insufficient Storage"
    ]
    assert metric(env, "bucket", "sets_missing") == "2"
    assert metric(env, "bucket", "success") == "0"
    assert metric(env, "bucket", "pushed_bytes") == "100"


def test_a_failed_push_keeps_the_last_success_time(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.bucket().push_all()
    env.clock.now += 3600
    make_set(env.backups, B)
    env.fake.rules.insert(0, env.fake.on(restic("bucket", "backup"), fail=1, stderr="Fatal: boom"))
    with pytest.raises(Failure):
        env.bucket().push_all()
    assert metric(env, "bucket", "last_success_timestamp_seconds") == str(NOW)
    assert metric(env, "bucket", "last_attempt_timestamp_seconds") == str(NOW + 3600)


def test_nothing_here_writes_the_commands_own_metrics(env):
    """The backup's own last-success metric is the caller's: a published backup whose
    push failed (or could not get the off-site lock) must not lose it here."""
    job = env.metrics / "djangoops_shop_backup_db.prom"
    job.write_text("djangoops_job_last_success_timestamp_seconds 1\n")
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), fail=1, stderr="Fatal: down")
    with pytest.raises(Failure):
        env.bucket().push_all()
    assert job.read_text() == "djangoops_job_last_success_timestamp_seconds 1\n"
    assert sorted(p.name for p in env.metrics.iterdir()) == [job.name, "djangoops_shop_offsite_bucket.prom"]


def test_a_push_that_runs_out_of_time(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(
        restic("bucket", "backup"),
        timeout=True,
        stderr="Load(<lock/abc>, 0, 0) returned error, retrying after 1.2s: 503 Slow Down\n",
    )
    done = env.bucket().push_repo("bucket")
    assert not done.ok and done.missing == 1
    assert env.log.at("WARN") == [
        f"off-site repository bucket: pushing {A} did not finish within 600 s (db_backup_offsite_timeout_seconds); "
        "restic kept retrying after: Load(<lock/abc>, 0, 0) returned error, retrying after 1.2s: 503 Slow Down"
    ]
    # The lock the stopped restic left goes, with a minute of its own past the limit.
    unlock = env.fake.calls[-1]
    assert (command(unlock), unlock.timeout, unlock.stdout) == ("unlock", 60, DEVNULL)


@pytest.mark.parametrize("stopped", [{"timeout": True}, {"signal": 15}])
def test_a_lock_a_stopped_push_left_that_cannot_be_removed_is_warned_about(env, stopped):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), **stopped)
    env.fake.on(restic("bucket", "unlock"), fail=1, stderr="Fatal: unable to open repository\n")
    assert not env.bucket().push_repo("bucket").ok
    assert (
        "off-site repository bucket: the lock the stopped push left could not be removed; the next push, check or "
        "prune tries again"
    ) in env.log.at("WARN")
    assert env.log.at("WARN")[-1].startswith(f"off-site repository bucket: pushing {A} ")


def test_a_push_that_failed_on_its_own_leaves_no_lock_to_remove(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), fail=1, stderr="Fatal: unable to save snapshot\n")
    assert not env.bucket().push_repo("bucket").ok
    assert restic_calls(env, "unlock") == []


def test_a_timeout_without_a_word_from_restic(env):
    env.fake.on(restic("bucket", "snapshots"), timeout=True)
    env.bucket().push_repo("bucket")
    assert env.log.at("WARN") == [
        "off-site repository bucket: reading its snapshots did not finish within 600 s "
        "(db_backup_offsite_timeout_seconds)"
    ]


def test_each_repository_has_one_time_limit_per_run(env):
    make_set(env.backups, A)
    make_set(env.backups, B)

    def slow(seconds):
        def effect(call):
            env.clock.mono += seconds

        return effect

    env.fake.on(restic("backuphost", "snapshots"), stdout=listing(), effect=slow(100))
    env.fake.on(arrivals_rule, stdout=arrivals_of(listing()), effect=slow(50))
    env.fake.on(restic("backuphost", "backup"), times=1, effect=slow(550))
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.make().push_all()
    timeouts = [
        (
            call.env.get("RESTIC_REPOSITORY", "ssh"),
            command(call) if call.programs[0] == "restic" else call.argv[-1],
            call.timeout,
        )
        for call in env.fake.calls
    ]
    assert timeouts == [
        ("rclone:backuphost:", "snapshots", 600),
        ("ssh", "djangoops-arrivals", 500),  # the record of arrivals shares the limit
        ("rclone:backuphost:", "backup", 450),
        ("rclone:backuphost:", "backup", 1.0),  # past the limit: a second, to fail with restic's words
        (ADDRESS["bucket"], "snapshots", 600),  # a fresh limit for the next repository
        (ADDRESS["bucket"], "backup", 600),
        (ADDRESS["bucket"], "backup", 600),
    ]


def test_a_stale_lock_is_removed_and_the_push_tried_once_more(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), times=1, fail=1, stderr=STALE)
    env.fake.on(restic("bucket", "unlock"), fail=1, stderr="Fatal: could not remove")
    env.fake.on(restic("bucket", "backup"), stdout=summary(10))
    done = env.bucket().push_repo("bucket")
    assert done.ok and done.pushed == (A,)
    commands = [call.argv[1] for call in env.fake.calls]
    assert commands == ["snapshots", "backup", "unlock", "backup"]
    assert env.fake.calls[2].stdout is DEVNULL
    assert env.log.at("WARN") == ["off-site repository bucket is locked; removing stale locks and trying once more"]


def test_a_lock_that_stays_fails_the_push_after_one_retry(env):
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("bucket", "backup"), fail=1, stderr=STALE)
    done = env.bucket().push_repo("bucket")
    assert not done.ok
    assert [call.argv[1] for call in env.fake.calls] == ["snapshots", "backup", "unlock", "backup"]
    assert env.log.at("WARN")[-1] == (
        f"off-site repository bucket: pushing {A} failed (restic exit 1): "
        "Fatal: unable to create lock in backend: repository is already locked exclusively by PID 1 on web"
    )


def test_a_set_dated_in_the_future_is_not_the_newest(env):
    sha_a = make_set(env.backups, A)
    make_set(env.backups, B)
    future = "shop_20991231T000000Z_daily.pgdump.zst"
    # A day ahead is still the present (clocks differ); more is a wrong clock.
    soon = "shop_20261207T070000Z_daily.pgdump.zst"
    env.fake.on(
        restic("bucket", "snapshots"),
        stdout=listing(snap(A, sha_a), snap(soon, "1" * 64), snap(future, "0" * 64, "2099-12-31T00:00:00+01:00")),
    )
    make_set(env.backups, "shop_20261207T080000Z_daily.pgdump.zst")
    done = env.bucket().push_repo("bucket")
    assert done.pushed == ("shop_20261207T080000Z_daily.pgdump.zst",)
    assert env.log.at("WARN") == [
        f"off-site repository bucket holds {future}, dated 2099-12-31T00:00:00+01:00, in the future; "
        "it is not taken as the newest"
    ]


def test_a_new_repository_is_created_first(env):
    os.unlink(env.secrets / "bucket.initialized")
    make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.bucket().push_repo("bucket")
    assert [call.argv[1] for call in env.fake.calls] == ["init", "snapshots", "backup"]
    assert env.log.at("INFO")[0] == "off-site repository bucket: created"
    assert (env.secrets / "bucket.initialized").exists()
    env.fake.calls.clear()
    env.bucket().push_repo("bucket")
    assert [call.argv[1] for call in env.fake.calls] == ["snapshots", "backup"]


def test_a_repository_that_exists_already_is_taken_as_it_is(env):
    os.unlink(env.secrets / "bucket.initialized")
    env.fake.on(restic("bucket", "init"), fail=1, stderr="Fatal: create repository failed: config file already exists")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    assert env.bucket().push_repo("bucket").ok
    assert (env.secrets / "bucket.initialized").exists()
    assert "created" not in env.log.text


def test_a_repository_that_cannot_be_created(env):
    os.unlink(env.secrets / "bucket.initialized")
    env.fake.on(restic("bucket", "init"), fail=1, stderr="Fatal: create repository failed: 403 AccessDenied")
    done = env.bucket().push_repo("bucket")
    assert (done.ok, done.missing) == (False, -1)
    assert [call.argv[1] for call in env.fake.calls] == ["init"]
    assert env.log.at("WARN") == [
        "off-site repository bucket: creating it failed (restic exit 1): "
        "Fatal: create repository failed: 403 AccessDenied"
    ]
    assert not (env.secrets / "bucket.initialized").exists()


def test_a_marker_that_cannot_be_written_is_only_a_warning(env):
    os.unlink(env.secrets / "bucket.initialized")
    (env.secrets / "bucket.initialized").mkdir()  # not a file: `restic init` runs, the marker fails
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    assert env.bucket().push_repo("bucket").ok
    assert env.log.at("WARN")[0].startswith(f"could not write {env.secrets / 'bucket.initialized'} (")


def test_a_checksum_file_without_a_sha256_fails_the_push_of_that_set(env):
    make_set(env.backups, A)
    (env.backups / f"{A}.sha256").write_text("garbage\n")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    done = env.bucket().push_repo("bucket")
    assert (done.ok, done.missing, pushes(env)) == (False, 1, [])
    assert env.log.at("WARN") == [
        f"off-site repository bucket: pushing {A} failed: its checksum file {env.backups / A}.sha256 holds no sha256"
    ]


def test_a_push_without_restic_or_repositories(env):
    with pytest.raises(Failure) as raised:
        env.make(which=lambda name: None).push_all()
    assert raised.value.code == Exit.CONFIG
    assert "restic is not installed" in raised.value.message
    assert env.make(repos=()).push_all() == []
    env.make(repos=()).check_all()
    assert env.fake.calls == []


def test_an_unknown_repository(env):
    with pytest.raises(Failure) as raised:
        env.make().push_repo("nowhere")
    assert raised.value.code == Exit.USAGE
    assert raised.value.message == "no off-site repository named 'nowhere'; configured: backuphost bucket"
    with pytest.raises(Failure) as raised:
        env.make(repos=()).fetch("nowhere")
    assert raised.value.message == "no off-site repository named 'nowhere'; configured: none"


# --- how repositories are reached -------------------------------------------------------------


def test_an_ssh_repository_is_named_by_its_key(env):
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing())
    env.ssh().push_repo("backuphost")
    call = env.fake.calls[0]
    ssh = (
        f"ssh -i {env.secrets}/backuphost.key -o IdentitiesOnly=yes -o IdentityAgent=none "
        f"-o UserKnownHostsFile={env.secrets}/backuphost.known_hosts -o GlobalKnownHostsFile=/dev/null "
        "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=15 "
        "-o ServerAliveCountMax=4 -p 2222 offsite@backup.example"
    )
    assert call.argv[:3] == ["restic", "-o", f"rclone.program={ssh}"]
    assert call.env["RESTIC_REPOSITORY"] == "rclone:backuphost:"
    assert not any(key.startswith("AWS_") for key in call.env)


def test_ssh_says_why_it_cannot_get_in(env):
    env.fake.on(restic("backuphost", "snapshots"), fail=1, stderr="Fatal: unable to open repository: EOF")
    env.fake.on("ssh", fail=255, stderr="offsite@backup.example: Permission denied (publickey).\n")
    env.ssh().push_repo("backuphost")
    assert env.log.at("WARN") == [
        "off-site repository backuphost: reading its snapshots failed (restic exit 1): "
        "ssh: offsite@backup.example: Permission denied (publickey)."
    ]
    probe = env.fake.calls_to("ssh")[0]
    assert probe.argv[0] == "ssh" and probe.argv[-1] == "offsite@backup.example"
    assert (probe.stdout, probe.timeout) == (DEVNULL, 30)


def test_ssh_naming_itself_is_not_named_twice(env):
    env.fake.on(restic("backuphost", "snapshots"), fail=1, stderr="Fatal: unable to open repository: EOF")
    env.fake.on("ssh", fail=255, stderr="ssh: connect to host backup.example port 2222: Connection refused\n")
    env.ssh().push_repo("backuphost")
    assert env.log.at("WARN")[0].endswith(
        "failed (restic exit 1): ssh: connect to host backup.example port 2222: Connection refused"
    )


@pytest.mark.parametrize("probe", [{"fail": 1}, {"timeout": True}, {"fail": 255, "stderr": ""}, {}])
def test_when_ssh_gets_in_restic_says_why(env, probe):
    env.fake.on(restic("backuphost", "snapshots"), fail=1, stderr="Fatal: wrong password or no key found\n")
    env.fake.on("ssh", **probe)
    env.ssh().push_repo("backuphost")
    assert env.log.at("WARN") == [
        "off-site repository backuphost: reading its snapshots failed (restic exit 1): "
        "Fatal: wrong password or no key found"
    ]


def test_restic_killed_or_not_started(env):
    env.fake.on(restic("bucket", "snapshots"), times=1, signal=9)
    env.bucket().push_repo("bucket")

    def cannot_start(call):
        raise CommandFailed("restic", call.argv, detail="could not be started: No such file or directory")

    env.fake.on(restic("bucket", "snapshots"), effect=cannot_start)
    env.bucket().push_repo("bucket")
    assert env.log.at("WARN") == [
        "off-site repository bucket: reading its snapshots failed (restic exit 137): no message",
        "off-site repository bucket: reading its snapshots failed: restic could not be started: "
        "No such file or directory",
    ]


def test_an_off_site_directory_with_a_space_cannot_reach_ssh(env):
    settings = config.Offsite("/srv/off site", 600, "10%", "", (config.Repository("r", "ssh", "h", 22, "u", ""),))
    with pytest.raises(Failure) as raised:
        Offsite(env.fake, env.log, env.project, settings, str(env.run)).push_repo("r")
    assert raised.value.code == Exit.CONFIG


def test_s3_keys_without_a_last_newline_are_read(env):
    (env.secrets / "bucket.s3").write_text(f"# keys\nAWS_ACCESS_KEY_ID=AKIA\nAWS_SECRET_ACCESS_KEY={S3_SECRET}")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.bucket().push_repo("bucket")
    assert env.fake.calls[0].env["AWS_SECRET_ACCESS_KEY"] == S3_SECRET
    assert env.fake.calls[0].env["AWS_ACCESS_KEY_ID"] == "AKIA"
    assert S3_SECRET in env.log.hidden


def test_s3_keys_that_cannot_be_read(env):
    os.unlink(env.secrets / "bucket.s3")
    done = env.bucket().push_repo("bucket")
    assert (done.ok, done.missing, env.fake.calls) == (False, -1, [])
    assert env.log.at("WARN") == [
        f"off-site repository bucket: its S3 keys cannot be read from {env.secrets}/bucket.s3 "
        "(No such file or directory)"
    ]
    (env.secrets / "bucket.s3").write_bytes(b"\xff\xfe")
    with pytest.raises(Failure):
        env.bucket().check_all()
    assert env.log.at("WARN")[-1].endswith("(not UTF-8 text)")


def test_secrets_never_in_argv_nor_in_the_log(env):
    """restic echoing the password or the S3 secret (a URL, an error) is redacted before
    anything is logged; no argv of any call carries either."""
    make_set(env.backups, A)
    (env.secrets / "password").write_text(f"{PASSWORD}\nsecond line of it\nshort\n")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing())
    env.fake.on(
        restic("bucket", "backup"),
        fail=1,
        stderr=f"Fatal: GET https://s3.example/?X-Amz-Secret={S3_SECRET}: password {PASSWORD!s} refused\n",
    )
    env.fake.on(restic("backuphost", "backup"), timeout=True, stderr="Fatal: second line of it\n")
    env.fake.on(restic("backuphost", "check"), fail=1, stdout=f"error: {PASSWORD}\n".encode())
    env.fake.on(restic("bucket", "check"), fail=1, stderr=f"Fatal: {S3_SECRET} cut short")
    with pytest.raises(Failure) as pushed:
        env.make().push_all()
    with pytest.raises(Failure) as checked:
        env.make().check_all()
    everything = "\n".join(
        [env.log.text, pushed.value.message, checked.value.message, *(" ".join(a) for a in env.fake.argvs())]
    )
    for secret in (PASSWORD, S3_SECRET, "second line of it"):
        assert secret not in everything
    assert "short" in everything  # a word, not a secret, however short a line of the password is
    # The password and the secret in the bucket's push, a line of the password in
    # backuphost's, the password in its check's findings, the secret in the bucket's.
    assert everything.count("[redacted]") == 5
    assert f"pushing {A} failed (restic exit 1): Fatal: GET https://s3.example/?X-Amz-Secret=[redacted]" in everything


def test_secrets_when_the_password_file_is_gone(env):
    os.unlink(env.secrets / "password")
    env.fake.on(restic("bucket", "snapshots"), fail=1, stderr="Fatal: Resolving password failed: open: no such file")
    env.bucket().push_repo("bucket")
    assert env.log.at("WARN")[0].endswith("Fatal: Resolving password failed: open: no such file")


# --- where the sets are -----------------------------------------------------------------------


def test_where_lists_each_set_with_its_repositories_and_the_unreadable_ones(env):
    sha_a = make_set(env.backups, A)
    held = listing(snap(A, sha_a, snap_id="1" * 64), snap(A, sha_a, snap_id="2" * 64), snap(B, "b" * 64))
    env.fake.on(restic("backuphost", "snapshots"), stdout=held)
    env.fake.on(arrivals_rule, stdout=arrivals_of(held, **{"2" * 64: epoch_of(A) + 30}))
    env.fake.on(restic("bucket", "snapshots"), fail=1, stderr="Fatal: unable to open config file")
    found = env.make().where()
    assert found.holders == {f"{A}@{sha_a}": "backuphost", f"{B}@{'b' * 64}": "backuphost"}
    assert found.unreadable == ("bucket",)
    # A second snapshot under A's name, though it claims the same dump, is told about.
    assert env.log.at("WARN") == [
        f"off-site repository backuphost: snapshot 11111111 of {A} arrived 2026-12-01 02:01:00 UTC, after the "
        "set's first snapshot (22222222, arrived 2026-12-01 02:00:30 UTC): a second copy under the same name is "
        "not trusted; it is not taken for the set",
        "off-site repository bucket: reading its snapshots failed (restic exit 1): Fatal: unable to open config file",
    ]
    assert env.make().local_set_id(A) == f"{A}@{sha_a}"
    assert env.make().local_set_id(B) is None
    assert env.make(repos=()).where() == offsite.Where({}, ())


def test_where_with_two_repositories_holding_a_set(env):
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    holders, unreadable = env.make().where()
    assert (holders, unreadable) == ({f"{A}@{'a' * 64}": "backuphost,bucket"}, ())
    assert [s.name for s in env.make().sets("bucket")] == [A]


# --- fetching -----------------------------------------------------------------------------------


def stored(tmp_path, name, **kwargs):
    """A set's files as a repository holds them (made elsewhere), with the dump's sha256."""
    source = tmp_path / f"source-{len(os.listdir(tmp_path))}"
    source.mkdir()
    sha = make_set(source, name, **kwargs)
    return source, sha


def restores(source, extra=None, layout="home/shop/db_backups"):
    """The effect of `restic restore ... --target TREE`: the source's files under TREE."""

    def effect(call):
        target = call.argv[call.argv.index("--target") + 1]
        where = os.path.join(target, layout)
        os.makedirs(where, exist_ok=True)
        for file in os.listdir(source):
            with open(source / file, "rb") as f, open(os.path.join(where, file), "wb") as out:
                out.write(f.read())
        for file, data in (extra or {}).items():
            path = os.path.join(target, file)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)

    return effect


def test_fetch_latest_publishes_the_newest_set_data_last(env, tmp_path, monkeypatch, fake_bucket):
    fake_bucket.status = "Suspended"  # (the record's part is tested below)
    source, sha_b = stored(tmp_path, B, media=b"media")
    env.fake.on(
        restic("bucket", "snapshots"),
        stdout=listing(snap(A, "a" * 64), snap(B, sha_b, snap_id="bbb"), snap(SAFETY, "c" * 64)),
    )
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real_replace(a, b)))
    path = env.bucket().fetch("bucket")
    assert path == str(env.backups / B)
    assert sorted(os.listdir(env.backups)) == sorted(
        [B, f"{B}.sha256", f"{B}.manifest.json", "shop_20261202T020000Z_daily.media.tar.zst"]
    )
    published = [name for name in moved if not name.startswith("tree")][-4:]
    assert published[-1] == B and set(published[:2]) == {f"{B}.sha256", f"{B}.manifest.json"}
    restore = restic_calls(env, "restore")[0]
    assert restore.argv == [
        "restic",
        "restore",
        "--no-lock",
        "bbb",
        "--target",
        str(env.backups / ".fetch-staging/tree"),
    ]
    assert restore.stdout is DEVNULL
    assert env.log.at("INFO") == [
        f"fetching {B} (taken {rfc3339(epoch_of(B))}) from off-site repository bucket",
        f"checked {B}: sha256 and compression are good",
        f"fetched {B} from bucket: sha256 and manifest good, {len(f'dump of {B}')}B in 0.0 s",
    ]
    assert env.exits == []


def test_fetch_by_name_and_a_stale_staging_directory(env, tmp_path):
    (env.backups / ".fetch-staging" / "x").mkdir(parents=True)
    source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a), snap(B, "b" * 64)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source, layout="."))
    assert env.bucket().fetch("bucket", A) == str(env.backups / A)
    assert sorted(os.listdir(env.backups)) == sorted([A, f"{A}.sha256", f"{A}.manifest.json"])


def test_a_safety_backup_is_fetched_by_name_never_as_the_latest(env, tmp_path):
    source, sha = stored(tmp_path, SAFETY)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "a" * 64), snap(SAFETY, sha, snap_id="sss")))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert env.bucket().fetch("bucket", SAFETY) == str(env.backups / SAFETY)
    assert "sss" in restic_calls(env, "restore")[0].argv
    for path in env.backups.iterdir():
        path.unlink()
    env.fake.on(restic("bucket", "restore"), effect=lambda call: None)
    with pytest.raises(Failure):
        env.bucket().fetch("bucket", "latest")  # A, not the newer safety backup (A's files are not there)
    assert restic_calls(env, "restore")[-1].argv[3] == snapshot_id(A)


def test_fetch_latest_passes_over_a_set_dated_in_the_future(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    future = "shop_20991231T000000Z_daily.pgdump.zst"
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a), snap(future, "0" * 64)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert env.bucket().fetch("bucket", "latest") == str(env.backups / A)
    assert "in the future; it is not taken as the newest" in env.log.at("WARN")[0]


def test_fetch_of_a_set_not_there(env):
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(SAFETY, "c" * 64)))
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket", A)
    assert (raised.value.code, raised.value.message) == (
        Exit.BAD_BACKUP,
        f"off-site repository bucket holds no set named {A} (list_db_backups.sh lists them)",
    )
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket", "latest")
    assert raised.value.message == "off-site repository bucket holds no backup set of shop"
    assert restic_calls(env, "restore") == []


def test_fetch_from_a_repository_that_cannot_be_read(env):
    env.fake.on(restic("bucket", "snapshots"), fail=1, stderr="Fatal: unable to open config file")
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket")
    assert (raised.value.code, raised.value.message) == (
        Exit.OFFSITE_FAILED,
        "off-site repository bucket cannot be read; nothing was fetched",
    )
    assert env.log.at("WARN") == [
        "off-site repository bucket: reading its snapshots failed (restic exit 1): Fatal: unable to open config file"
    ]


def refused(env, code=Exit.BAD_BACKUP, want=A):
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket", want)
    assert raised.value.code == code
    # Nothing published, nothing staged left behind.
    assert os.listdir(env.backups) == []
    return raised.value.message


def test_fetch_refuses_an_unexpected_file(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source, {"etc/cron.d/evil": b"* * * * * root sh"}))
    assert refused(env) == f"off-site set {A} holds an unexpected file evil; refusing it"


def test_fetch_refuses_a_link_named_as_a_set_file(env, tmp_path):
    _source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))

    def effect(call):
        target = call.argv[call.argv.index("--target") + 1]
        os.symlink("/etc/passwd", os.path.join(target, A))

    env.fake.on(restic("bucket", "restore"), effect=effect)
    assert refused(env) == f"off-site set {A} holds an unexpected file {A}; refusing it"


def test_fetch_refuses_a_file_held_twice(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source, {f"other/{A}": b"another dump"}))
    assert refused(env) == f"off-site set {A} holds {A} twice; refusing it"


def test_fetch_refuses_a_set_without_its_dump(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    os.unlink(source / A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert refused(env) == f"off-site set {A} lacks its dump; refusing it"


def test_fetch_refuses_a_set_without_its_checksum_file(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    os.unlink(source / f"{A}.sha256")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert refused(env) == f"{A} has no checksum file; refusing to use it"


def test_fetch_refuses_a_damaged_dump_and_says_which_file(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    (source / A).write_bytes(b"rotten")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert refused(env) == (
        f"{A} does not match its sha256 checksum: the file is damaged; refusing to use it "
        f"({A}: does not match its sha256)"
    )


def test_fetch_refuses_a_set_whose_manifest_cannot_be_read(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    (source / f"{A}.manifest.json").write_text("{")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    message = refused(env)
    assert message.startswith(f"the manifest of {A} cannot be read (")
    assert "not valid JSON" in message


def test_fetch_refuses_a_set_of_another_engine(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    with pytest.raises(Failure) as raised:
        env.bucket(engine="mysql").fetch("bucket", A)
    assert raised.value.message == f"{A} belongs to project 'shop' (postgresql), not shop (mysql); refusing to use it"


def test_fetch_refuses_a_dump_other_than_the_one_its_snapshot_names(env, tmp_path):
    source, _sha = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "e" * 64)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert refused(env) == (
        f"{A}, as fetched from bucket, is not the dump its snapshot names (sha256 {'e' * 64}, "
        f"its checksum file says {_sha}); nothing was published"
    )


def test_fetch_when_restic_cannot_restore(env):
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    env.fake.on(restic("bucket", "restore"), fail=1, stderr="Fatal: pack 1234 is damaged")
    assert refused(env, Exit.OFFSITE_FAILED) == f"{A} could not be fetched from bucket; nothing was published"
    assert env.log.at("WARN") == [
        f"off-site repository bucket: fetching {A} failed (restic exit 1): Fatal: pack 1234 is damaged"
    ]


def test_fetch_interrupted_leaves_nothing(env):
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    env.fake.on(restic("bucket", "restore"), interrupt=15)
    with pytest.raises(Interrupted):
        env.bucket().fetch("bucket", A)
    assert os.listdir(env.backups) == []


def test_a_set_already_here_is_not_downloaded(env, fake_bucket):
    sha_a = make_set(env.backups, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    fake_bucket.arrived = {snapshot_id(A): epoch_of(A) + 90}
    assert env.bucket().fetch("bucket", A) == str(env.backups / A)
    assert restic_calls(env, "restore") == []
    assert env.log.at("INFO") == [
        f"off-site repository bucket: {A} (snapshot {snapshot_id(A)[:8]}) arrived 2026-12-01 02:01:30 UTC",
        f"{A} (from bucket, taken {rfc3339(epoch_of(A))}) is already here",
        f"checked {A}: sha256 and compression are good",
    ]


def test_a_damaged_copy_here_is_fetched_again(env, tmp_path):
    sha_a = make_set(env.backups, A)
    (env.backups / A).write_bytes(b"rotten")
    source, _sha = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    assert env.bucket().fetch("bucket", A) == str(env.backups / A)
    assert (env.backups / A).read_bytes() == f"dump of {A}".encode()
    assert env.log.at("WARN") == [
        f"the copy of {A} here fails its sha256 check ({A}: does not match its sha256); fetching it again"
    ]


def test_a_staged_fetch_downloads_even_a_set_here_and_publishes_nothing(env, tmp_path):
    sha_a = make_set(env.backups, A)
    before = sorted(os.listdir(env.backups))
    source, _sha = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    store = env.bucket()
    path = store.fetch("bucket", "latest", staged=True)
    assert path == str(env.backups / ".fetch-staging" / A)
    assert sorted(os.listdir(env.backups / ".fetch-staging")) == sorted([A, f"{A}.sha256", f"{A}.manifest.json"])
    assert sorted(os.listdir(env.backups)) == sorted([*before, ".fetch-staging"])
    assert (
        env.log.at("INFO")[-1]
        == f"downloaded {A} from bucket: sha256 and manifest good, {len(f'dump of {A}')}B in 0.0 s"
    )
    assert env.exits == [store.staging]
    store.remove_staging()
    assert sorted(os.listdir(env.backups)) == before


def test_a_staged_fetch_without_an_exit_hook_goes_at_exit(env, tmp_path, monkeypatch):
    registered = []
    monkeypatch.setattr(offsite.atexit, "register", registered.append)
    source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    store = env.bucket(on_exit=None)
    store.fetch("bucket", A, staged=True)
    store.fetch("bucket", A, staged=True)
    assert registered == [store.remove_staging]


def test_the_compression_test_runs_through_the_runner(env, tmp_path):
    source, sha_a = stored(tmp_path, A, media=b"media")
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(restic("bucket", "restore"), effect=restores(source))
    env.fake.on("zstd", fail=1)
    with pytest.raises(Failure) as raised:
        env.bucket(test_compression=None).fetch("bucket", A)
    assert raised.value.message == f"{A} fails its compression check: the file is damaged"
    tested = env.fake.calls_to("zstd")[0]
    assert tested.argv == ["zstd", "-q", "-t", "--", str(env.backups / ".fetch-staging" / A)]
    store = env.bucket(test_compression=None)
    env.fake.rules.pop()
    assert store._test_compression("x.gz") and not store._test_compression("x.tar")
    assert env.fake.calls[-1].argv == ["gzip", "-t", "--", "x.gz"]


# --- checking ---------------------------------------------------------------------------------


def test_check_all_checks_every_repository_and_names_those_that_failed(env):
    env.fake.on(
        restic("backuphost", "check"),
        fail=1,
        stdout=b"error: pack 1234: not found\n",
        stderr="Fatal: repository contains errors\n",
    )
    with pytest.raises(Failure) as raised:
        env.make().check_all("100%")
    assert (raised.value.code, raised.value.message) == (Exit.OFFSITE_FAILED, "the off-site check of backuphost failed")
    assert [call.argv[-2:] for call in restic_calls(env, "check")] == [
        ["check", "--read-data-subset=100%"],
        ["check", "--read-data-subset=100%"],
    ]
    assert env.log.at("WARN") == [
        "off-site repository backuphost: its check failed (restic exit 1): Fatal: repository contains errors"
    ]
    assert env.log.at("INFO") == [
        "off-site repository bucket: structure and 100% of the data read back and good, in 0.0 s"
    ]


def test_check_all_reads_restics_findings_when_it_says_nothing_else(env):
    env.fake.on(restic("bucket", "check"), fail=1, stdout=b"error: pack 1234: not found\n")
    with pytest.raises(Failure):
        env.bucket().check_all()
    assert restic_calls(env, "check")[0].argv[-1] == "--read-data-subset=10%"
    assert env.log.at("WARN") == [
        "off-site repository bucket: its check failed (restic exit 1): error: pack 1234: not found"
    ]


def test_check_all_passes(env):
    env.make().check_all()
    assert len(env.log.at("INFO")) == 2


def test_a_check_blocked_by_a_stale_lock_removes_it_and_checks_again(env):
    env.fake.on(restic("bucket", "check"), times=1, fail=1, stderr=STALE)
    env.bucket().check_all()
    assert [command(call) for call in env.fake.calls] == ["check", "unlock", "check"]
    assert env.log.at("WARN") == ["off-site repository bucket is locked; removing stale locks and checking again"]
    assert env.log.at("INFO")[-1].startswith("off-site repository bucket: structure and 10% of the data read back")


def test_a_lock_that_stays_fails_the_check(env):
    env.fake.on(restic("bucket", "check"), fail=1, stderr=STALE)
    env.fake.on(restic("bucket", "unlock"), fail=1, stderr="Fatal: could not remove")
    with pytest.raises(Failure) as raised:
        env.bucket().check_all()
    assert raised.value.message == "the off-site check of bucket failed"
    assert [command(call) for call in env.fake.calls] == ["check", "unlock", "check"]


# --- what the backup host's record of arrivals refuses ---------------------------------------


def forged_repository(env, tmp_path):
    """backuphost holding A and B as pushed, then, planted with the server's key on
    2026-12-05: a second snapshot of B (an older dump under B's name, with a checksum file
    to match), one dated 2099 and one named for 2099. Returns (the genuine snapshots'
    sources, the forged one's)."""
    genuine_a, sha_a = stored(tmp_path, A)
    genuine_b, sha_b = stored(tmp_path, B)
    forged_b, sha_forged = stored(tmp_path, B, data=b"the older data under B's name")
    future = "shop_20991231T000000Z_daily.pgdump.zst"
    held = listing(
        snap(A, sha_a, snap_id="a" * 64),
        snap(B, sha_b, snap_id="b" * 64),
        snap(B, sha_forged, when="2026-12-02T03:00:00Z", snap_id="f" * 64),
        snap(C, "c" * 64, when="2099-01-01T00:00:00Z", snap_id="e" * 64),
        snap(future, "d" * 64, when="2026-12-05T00:00:00Z", snap_id="d" * 64),
    )
    planted = calendar.timegm((2026, 12, 5, 12, 0, 0))
    env.fake.on(restic("backuphost", "snapshots"), stdout=held)
    env.fake.on(arrivals_rule, stdout=arrivals_of(held, **{"f" * 64: planted, "e" * 64: planted, "d" * 64: planted}))
    for snap_id, source in (("a" * 64, genuine_a), ("b" * 64, genuine_b), ("f" * 64, forged_b)):
        env.fake.on(
            lambda call, snap_id=snap_id: restic("backuphost", "restore")(call) and snap_id in call.argv,
            effect=restores(source),
        )
    return sha_b


def test_a_fetch_takes_the_genuine_set_and_names_the_planted_snapshots(env, tmp_path):
    sha_b = forged_repository(env, tmp_path)
    for want in ("latest", B):
        assert env.ssh().fetch("backuphost", want) == str(env.backups / B)
        assert env.make().local_sha256(B) == sha_b
        restore = restic_calls(env, "restore")[-1]
        assert "b" * 64 in restore.argv
        for path in env.backups.iterdir():
            path.unlink()
    warned = env.log.at("WARN")
    assert warned[:3] == [
        "off-site repository backuphost: snapshot dddddddd of shop_20991231T000000Z_daily.pgdump.zst is named for "
        "2099-12-31 00:00:00 UTC, after it arrived (2026-12-05 12:00:00 UTC): planted; it is not taken for the set",
        f"off-site repository backuphost: snapshot eeeeeeee of {C} is dated 2099-01-01T00:00:00Z, after it arrived "
        "(2026-12-05 12:00:00 UTC): planted; it is not taken for the set",
        f"off-site repository backuphost: snapshot ffffffff of {B} arrived 2026-12-05 12:00:00 UTC, after the set's "
        "first snapshot (bbbbbbbb, arrived 2026-12-02 02:01:00 UTC): a second copy under the same name is not "
        "trusted; it is not taken for the set",
    ]
    assert f"off-site repository backuphost: {B} (snapshot bbbbbbbb) arrived 2026-12-02 02:01:00 UTC" in env.log.at(
        "INFO"
    )


def test_a_fetch_by_arrival_takes_the_newest_set_that_arrived_before(env, tmp_path):
    forged_repository(env, tmp_path)
    before = calendar.timegm((2026, 12, 2, 2, 1, 0))  # B arrived at 02:01:00, not before it
    assert env.ssh().fetch("backuphost", before=before) == str(env.backups / A)
    with pytest.raises(Failure) as raised:
        env.ssh().fetch("backuphost", before=calendar.timegm((2026, 11, 1, 0, 0, 0)))
    assert (raised.value.code, raised.value.message) == (
        Exit.BAD_BACKUP,
        "off-site repository backuphost holds no backup set of shop that arrived before 2026-11-01 00:00:00 UTC",
    )


def test_a_fetch_by_arrival_needs_the_record(env, fake_bucket):
    fake_bucket.status = "Suspended"
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket", before=NOW)
    assert raised.value.code == Exit.USAGE
    assert "keeps no record of when its snapshots arrived" in raised.value.message
    assert restic_calls(env, "restore") == []
    assert env.log.at("WARN") == [
        "off-site repository bucket: its bucket's versioning is not enabled, so it keeps no record of when "
        "snapshots arrived (playbooks/offsite_buckets.yml turns it on): its snapshots are taken as they claim"
    ]


def test_a_buckets_record_is_the_oldest_version_of_each_snapshot(env, tmp_path, fake_bucket):
    """The same judgement as a backup host's, from the bucket's versions, read with the
    server's own keys: a second snapshot under a set's name is refused."""
    genuine, sha_a = stored(tmp_path, A)
    held = listing(snap(A, sha_a, snap_id="a" * 64), snap(A, "f" * 64, snap_id="f" * 64))
    env.fake.on(restic("bucket", "snapshots"), stdout=held)
    env.fake.on(lambda call: restic("bucket", "restore")(call) and "a" * 64 in call.argv, effect=restores(genuine))
    fake_bucket.arrived = {"a" * 64: epoch_of(A) + 60, "f" * 64: NOW - 60}
    assert env.bucket().fetch("bucket", A) == str(env.backups / A)
    assert "a second copy under the same name is not trusted" in env.log.at("WARN")[0]
    [bucket] = fake_bucket.created
    assert (bucket.url, bucket.access_key, bucket.secret_key) == (ADDRESS["bucket"], "AKIAEXAMPLE", S3_SECRET)
    assert bucket.timeout == 600


def test_a_bucket_that_cannot_say_fetches_nothing_and_never_shows_the_secret(env, fake_bucket):
    from djangoops import s3

    fake_bucket.errors = [s3.S3Error(f"AccessDenied: no ListBucketVersions for key with secret {S3_SECRET}")]
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    with pytest.raises(Failure) as raised:
        env.bucket().fetch("bucket")
    assert raised.value.code == Exit.OFFSITE_FAILED
    assert env.log.at("WARN") == [
        "off-site repository bucket: reading when its snapshots arrived failed: AccessDenied: no ListBucketVersions "
        "for key with secret [redacted]"
    ]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"fail": 255, "stderr": "offsite@backup.example: Permission denied (publickey).\n"}, "Permission denied"),
        ({"timeout": True}, "no answer within 600 s (db_backup_offsite_timeout_seconds)"),
        ({"stdout": b"djangoops-arrivals 1\nnot a line\n"}, "the backup host's answer cannot be read"),
    ],
)
def test_a_record_that_cannot_be_read_fetches_nothing(env, answer, why):
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing(snap(A, "a" * 64)))
    env.fake.on(arrivals_rule, **answer)
    with pytest.raises(Failure) as raised:
        env.ssh().fetch("backuphost")
    assert (raised.value.code, raised.value.message) == (
        Exit.OFFSITE_FAILED,
        "off-site repository backuphost cannot be read; nothing was fetched",
    )
    assert env.log.at("WARN")[0].startswith(
        "off-site repository backuphost: reading when its snapshots arrived failed: "
    )
    assert why in env.log.at("WARN")[0]
    assert restic_calls(env, "restore") == []


def test_a_set_whose_only_snapshot_was_planted_is_pushed(env):
    """A stolen key planted a snapshot named for tonight's set before it was taken: the
    push does not take the set as held, and sends it."""
    sha_d = make_set(env.backups, D)
    held = listing(snap(D, sha_d, snap_id="d" * 64))
    env.fake.on(restic("backuphost", "snapshots"), stdout=held)
    env.fake.on(arrivals_rule, stdout=arrivals_of(held, **{"d" * 64: epoch_of(D) - 3 * 3600}))
    env.fake.on(restic("backuphost", "backup"), stdout=summary(10))
    env.ssh().push_all()
    assert pushes(env) == [D]
    assert (
        f"snapshot dddddddd of {D} is dated 2026-12-04T02:00:00Z, after it arrived (2026-12-03 23:00:00 UTC): planted"
        in (env.log.at("WARN")[0])
    )


def test_a_backup_host_without_the_record_is_read_as_before_and_said_so(env, tmp_path):
    source, sha_a = stored(tmp_path, A)
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing(snap(A, sha_a)))
    env.fake.on(arrivals_rule, stdout=b"")  # an older forced command: rclone says nothing
    env.fake.on(restic("backuphost", "restore"), effect=restores(source))
    assert env.ssh().fetch("backuphost") == str(env.backups / A)
    assert env.log.at("WARN") == [
        "off-site repository backuphost: its backup host keeps no record of when snapshots arrived (apply the "
        "offsite_host role to it again): its snapshots are taken as they claim"
    ]
    arrivals_call = env.fake.calls_to("ssh")[0]
    assert arrivals_call.argv[-2:] == ["offsite@backup.example", "djangoops-arrivals"]


# --- the backup host's quota --------------------------------------------------------------------


def read_only_asked(calls):
    """For each restic command among CALLS: whether it asked for the read-only server."""
    asked = {}
    for call in calls:
        if call.programs[0] == "restic":
            options = [call.argv[i + 1] for i, arg in enumerate(call.argv[:-1]) if arg == "-o"]
            asked.setdefault(command(call), set()).add("rclone.args=djangoops-read" in options)
    return asked


def test_a_backup_host_serves_listings_and_fetches_read_only(env, tmp_path):
    """What only reads asks for the read-only server, which a full quota does not stop; what
    writes asks for nothing and gets the append-only one."""
    forged_repository(env, tmp_path)
    env.ssh().fetch("backuphost", "latest")
    assert read_only_asked(env.fake.calls) == {"snapshots": {True}, "restore": {True}}


def test_a_push_asks_for_the_append_only_server(env):
    make_set(env.backups, A)
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing())
    env.fake.on(arrivals_rule, stdout=arrivals_of(listing()))
    env.fake.on(restic("bucket", "snapshots"), stdout=listing())
    env.make().push_all()
    assert pushes(env) == [A, A]
    backuphost = [call for call in env.fake.calls if call.env.get("RESTIC_REPOSITORY") == ADDRESS["backuphost"]]
    assert read_only_asked(backuphost) == {"snapshots": {True}, "backup": {False}}
    # An s3 repository has no such server to ask for.
    bucket = [call for call in env.fake.calls if call.env.get("RESTIC_REPOSITORY") == ADDRESS["bucket"]]
    assert read_only_asked(bucket) == {"snapshots": {False}, "backup": {False}}


@pytest.mark.parametrize(
    ("stderr", "why"),
    [
        (
            "rclone: djangoops: quota: repository web1 holds 900 bytes, its quota is 800 bytes: nothing more\n"
            "Fatal: unable to open repository at rclone:: error talking HTTP to rclone: unexpected EOF\n",
            "djangoops: quota: repository web1 holds 900 bytes, its quota is 800 bytes: nothing more",
        ),
        (
            "rclone: 2026/12/06 18:45:12 ERROR : data/a8/a82d: Post request put error: max transfer limit "
            "reached as set by --max-transfer\nSave(<data/a82d>) returned error, retrying after 1s: 500\n"
            "Fatal: unable to save snapshot: server response unexpected: 500 Internal Server Error (500)\n",
            "djangoops: quota: the backup host stopped the push at this repository's quota (offsite_host_clients): "
            "rclone says max transfer limit reached",
        ),
    ],
)
def test_a_push_over_the_backup_hosts_quota_says_so(env, stderr, why):
    env.fake.on(restic("backuphost", "snapshots"), stdout=listing())
    env.fake.on(arrivals_rule, stdout=arrivals_of(listing()))
    env.fake.on(restic("backuphost", "backup"), fail=1, stderr=stderr)
    env.fake.on("ssh", fail=1, stderr=stderr.splitlines()[0][len("rclone: ") :])
    make_set(env.backups, A)
    assert not env.ssh().push_repo("backuphost").ok
    assert env.log.at("WARN")[-1].endswith(f"failed (restic exit 1): {why}")


# --- safety backups: off-site before they are pruned here ----------------------------------------


def test_a_set_is_pending_until_every_repository_holds_it(env):
    """What a restore's retention asks before it removes a safety backup: a set is still to go
    off-site while a repository lacks it and would be sent it (it is newer than that
    repository's newest); older and missing, it was forgotten there or predates the pushes."""
    sha_a = make_set(env.backups, A)
    sha_s = make_set(env.backups, SAFETY)  # 2026-12-05
    older = "shop_20261130T020000Z_safety.pgdump.zst"  # older than A, and in no repository
    make_set(env.backups, older)
    both = listing(snap(A, sha_a), snap(SAFETY, sha_s))
    env.fake.on(restic("backuphost", "snapshots"), stdout=both)
    env.fake.on(arrivals_rule, stdout=arrivals_of(both))
    env.fake.on(restic("bucket", "snapshots"), stdout=listing(snap(A, sha_a)))
    assert env.make().pending([SAFETY, older]) == {SAFETY}  # the bucket lacks it
    assert env.ssh().pending([SAFETY, older]) == set()
    assert env.make().pending([]) == set()
    assert env.make(repos=()).pending([SAFETY]) == set()
    assert {command(call) for call in env.fake.calls if call.programs[0] == "restic"} == {"snapshots"}  # reads only
    assert {call.timeout for call in env.fake.calls} == {120}  # not the push's 600 s: a restore is waiting


def test_a_set_is_pending_while_a_repository_cannot_be_read(env):
    make_set(env.backups, SAFETY)
    env.fake.on(restic("bucket", "snapshots"), fail=1, stderr="Fatal: unable to open config file: 403 Forbidden\n")
    assert env.bucket().pending([SAFETY]) == {SAFETY}
    assert env.log.at("WARN") == [
        "off-site repository bucket: reading its snapshots failed (restic exit 1): "
        "Fatal: unable to open config file: 403 Forbidden"
    ]
    assert env.bucket(which=lambda name: None).pending([SAFETY]) == {SAFETY}
    assert env.log.at("WARN")[-1] == "restic is not installed: no set can be known to be off-site"
