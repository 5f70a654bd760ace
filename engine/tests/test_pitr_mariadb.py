"""pitr_mariadb.py: MariaDB's binary logs archived and its bases taken, as root.
The live server is a fake (its binary logs real files in tmp_path), restic and
mariadb-backup answer through a FakeRunner; the spool is real, in tmp_path."""

import fcntl
import json
import os
import threading
import time

import pytest
from djangoops import config, pitr_mariadb
from djangoops.errors import Exit, Failure
from fakes import FakeRunner

SECRET = "s3/secret+key="


@pytest.fixture(autouse=True)
def spool_owner(monkeypatch):
    monkeypatch.setattr(pitr_mariadb, "SPOOL_OWNER", os.getuid())


@pytest.fixture
def settings(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"access_key_id": "AKID", "secret_access_key": SECRET}))
    return config.MariaPitr(
        stanza="main",
        socket="/run/mysqld/mysqld.sock",
        spool_dir=str(tmp_path / "spool"),
        password_file=str(tmp_path / "password"),
        s3_keys_file=str(keys),
        repositories=(
            config.BinlogRepository("local", str(tmp_path / "repository")),
            config.BinlogRepository("offsite", "s3:https://s3.example:5000/bucket/host", "us-east-1", "/etc/ca.pem"),
        ),
        archive_timeout=5,
    )


class FakeServer:
    """The live server: its GTID position and binary logs (files in LOGDIR)."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.gtid = "0-1-10"
        self.log_bin = True
        self.files = []
        self.flushes = 0
        self.add("mysql-bin.000001", 1000)
        self.add("mysql-bin.000002", 400)

    def add(self, name, size):
        (self.logdir / name).write_bytes(b"x" * size)
        self.files.append((name, size))

    def write(self, size=300):
        """A transaction: the open log grows, the GTID moves."""
        name, old = self.files[-1]
        (self.logdir / name).write_bytes(b"x" * (old + size))
        self.files[-1] = (name, old + size)
        self.gtid = f"0-1-{int(self.gtid.split('-')[2]) + 1}"

    def live(self):
        return pitr_mariadb.Live(self.log_bin, "ROW", self.gtid, str(self.logdir / "mysql-bin"), list(self.files))

    def flush(self):
        self.flushes += 1
        number = pitr_mariadb.binlog_number(self.files[-1][0]) + 1
        self.add(f"mysql-bin.{number:06d}", 256)


@pytest.fixture
def server(tmp_path):
    logdir = tmp_path / "log"
    logdir.mkdir()
    return FakeServer(logdir)


class Clock:
    def __init__(self, now=1796000000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def archiver(settings, server):
    fake = FakeRunner()
    made = pitr_mariadb.Archiver(fake, settings, clock=Clock())
    made.server = server
    made.fake = fake
    return made


def restic_backups(fake):
    return [c for c in fake.calls if c.programs[0] == "restic" and "backup" in c.argvs[0]]


def spooled(settings, timeline):
    return sorted(os.listdir(os.path.join(settings.spool_dir, "archive", "binlog", timeline)))


# --- passes --------------------------------------------------------------------------------


def test_the_first_pass_closes_the_open_log_and_pushes_it_to_each_repository(archiver, settings, server):
    done = archiver.pass_once()
    assert server.flushes == 1
    assert done["files"] == ["mysql-bin.000002"]  # the one open at the start; older ones precede any base
    assert spooled(settings, done["timeline"]) == ["mysql-bin.000002"]
    local, offsite = restic_backups(archiver.fake)
    assert local.argv[:3] == ["restic", "--repo", settings.repositories[0].url]
    assert local.argv[-1] == os.path.join(settings.spool_dir, "archive")
    assert ["--host", "main"] == local.argv[local.argv.index("--host") : local.argv.index("--host") + 2]
    assert "binlog" in local.argv
    assert local.env["RESTIC_PASSWORD_FILE"] == settings.password_file
    assert "AWS_SECRET_ACCESS_KEY" not in local.env
    assert offsite.env["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert offsite.env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert ["--cacert", "/etc/ca.pem"] == offsite.argv[4:6]
    assert all(SECRET not in " ".join(c.argvs[0]) for c in archiver.fake.calls)
    assert done["repositories"] == {name: {"through": 1796000000.0, "error": ""} for name in ("local", "offsite")}


def test_an_idle_server_is_not_rotated_and_is_archived_through_now(archiver, server):
    archiver.pass_once()
    archiver.clock.now += 5
    done = archiver.pass_once()
    assert server.flushes == 1
    assert done["files"] == []
    assert len(restic_backups(archiver.fake)) == 2  # the first pass's only: nothing new to push
    assert {r["through"] for r in done["repositories"].values()} == {1796000005.0}


def test_a_write_closes_the_log_and_only_the_new_one_is_pushed(archiver, settings, server):
    first = archiver.pass_once()
    server.write()
    archiver.clock.now += 5
    done = archiver.pass_once()
    assert server.flushes == 2
    assert done["files"] == ["mysql-bin.000003"]
    assert done["bytes"] == 556
    assert spooled(settings, first["timeline"]) == ["mysql-bin.000002", "mysql-bin.000003"]
    assert len(restic_backups(archiver.fake)) == 4


def test_a_failing_bucket_keeps_its_old_moment_and_is_pushed_again_next_pass(archiver, server):
    archiver.fake.on("restic", argv_contains="s3.example", fail=1, stderr="Fatal: unable to open repository")
    done = archiver.pass_once()
    assert done["repositories"]["local"] == {"through": 1796000000.0, "error": ""}
    assert done["repositories"]["offsite"]["through"] is None
    assert "restic backup in the offsite repository failed" in done["repositories"]["offsite"]["error"]
    archiver.fake.rules.clear()
    archiver.clock.now += 5
    done = archiver.pass_once()
    pushed = restic_backups(archiver.fake)
    assert [c.argv[2] for c in pushed] == [pushed[0].argv[2], pushed[1].argv[2], pushed[1].argv[2]]
    assert done["repositories"]["offsite"] == {"through": 1796000005.0, "error": ""}


def test_a_log_shorter_than_the_server_lists_is_not_archived(archiver, settings, server):
    server.files[-1] = (server.files[-1][0], 5000)  # listed longer than the file holds
    with pytest.raises(Failure) as failed:
        archiver.pass_once()
    assert failed.value.code == Exit.DUMP_FAILED
    assert "holds 400 bytes, the server lists 5000" in failed.value.message
    state = (
        json.loads(open(os.path.join(settings.spool_dir, "state.json")).read())
        if os.path.exists(os.path.join(settings.spool_dir, "state.json"))
        else {}
    )
    assert state.get("last_file") is None
    timeline_dir = os.path.join(settings.spool_dir, "archive", "binlog")
    assert all(not names for _d, _s, names in os.walk(timeline_dir))
    assert restic_backups(archiver.fake) == []


def test_a_log_purged_before_it_was_archived_is_a_gap(archiver, server):
    archiver.pass_once()
    server.write()
    server.flush()  # mysql-bin.000004 closed by someone else ...
    server.files = [f for f in server.files if f[0] != "mysql-bin.000003"]  # ... and 3 purged
    archiver.clock.now += 5
    done = archiver.pass_once()
    assert done["gap"]["after"] == "mysql-bin.000002"
    assert done["gap"]["next"] == "mysql-bin.000004"


def test_logs_purged_while_the_server_was_idle_are_a_gap_too(archiver, server):
    """Nothing closed left to archive, only the open log, numbered past the next one expected."""
    archiver.pass_once()  # archives 2; 3 is open
    server.files = [("mysql-bin.000005", 256)]
    (server.logdir / "mysql-bin.000005").write_bytes(b"x" * 256)
    archiver.clock.now += 5
    done = archiver.pass_once()
    assert done["gap"]["after"] == "mysql-bin.000002" and done["gap"]["next"] == "mysql-bin.000005"


def test_a_link_planted_among_the_logs_is_not_followed(archiver, settings, server, tmp_path):
    """mysql owns the logs' directory: a log replaced by a link to a file of root's is refused,
    and nothing of that file reaches the spool."""
    secret = tmp_path / "roots-secret"
    secret.write_text("x" * 400)
    (server.logdir / "mysql-bin.000002").unlink()
    (server.logdir / "mysql-bin.000002").symlink_to(secret)
    with pytest.raises(Failure) as failed:
        archiver.pass_once()
    assert failed.value.code == Exit.DUMP_FAILED and "could not copy the binary log" in failed.value.message
    binlog = os.path.join(settings.spool_dir, "archive", "binlog")
    assert all(not names for _d, _s, names in os.walk(binlog))


def test_a_numbering_that_starts_again_opens_a_new_timeline(archiver, server):
    first = archiver.pass_once()
    for name, _size in server.files:  # RESET MASTER: the logs removed, numbering from 1 again
        (server.logdir / name).unlink()
    server.files = []
    server.add("mysql-bin.000001", 300)
    server.write()
    archiver.clock.now += 60
    done = archiver.pass_once()
    assert done["timeline"] != first["timeline"]
    assert done["files"] == ["mysql-bin.000001"]
    assert done["gap"] is None


def test_logs_pruned_from_the_spool_after_a_base_keep_the_timeline(archiver, settings, server):
    """Retention removes the spool's logs before the oldest kept base, the newest archived one
    among them: the server's numbering has not started again, and the timeline goes on."""
    first = archiver.pass_once()
    for name in spooled(settings, first["timeline"]):
        os.unlink(os.path.join(settings.spool_dir, "archive", "binlog", first["timeline"], name))
    server.write()
    archiver.clock.now += 5
    done = archiver.pass_once()
    assert done["timeline"] == first["timeline"]
    assert done["files"] == ["mysql-bin.000003"]


def test_a_server_without_its_binary_log_is_said(archiver, server):
    server.log_bin = False
    with pytest.raises(Failure) as failed:
        archiver.pass_once()
    assert failed.value.code == Exit.BAD_BACKUP
    assert "binary log is off (log_bin)" in failed.value.message


def test_a_pass_while_another_holds_the_spool_does_nothing(archiver, settings, server):
    holder = pitr_mariadb.Spool(settings.spool_dir)
    holder.ensure()
    assert holder.lock()
    try:
        assert archiver.pass_once() is None
    finally:
        holder.unlock()
    assert server.flushes == 0


def test_a_spool_others_can_read_is_refused(archiver, settings):
    os.makedirs(settings.spool_dir, mode=0o755)
    os.chmod(settings.spool_dir, 0o755)
    with pytest.raises(Failure, match="must be a directory of root's that no one else can read"):
        archiver.pass_once()


# --- the server ----------------------------------------------------------------------------


def test_the_server_is_asked_as_root_by_its_socket():
    fake = FakeRunner()
    fake.on("mariadb", input_contains="SELECT @@log_bin", stdout="1\tROW\t0-1-5\t/var/log/mysql/mysql-bin\n")
    fake.on("mariadb", input_contains="SHOW BINARY LOGS", stdout="mysql-bin.000001\t385\nmysql-bin.000002\t342\n")
    live = pitr_mariadb.Server(fake, "/run/mysqld/mysqld.sock").live()
    assert (live.log_bin, live.gtid, live.directory) == (True, "0-1-5", "/var/log/mysql")
    assert live.files == [("mysql-bin.000001", 385), ("mysql-bin.000002", 342)]
    assert fake.calls[0].argv[:5] == [
        "mariadb",
        "--no-defaults",
        "--protocol=SOCKET",
        "--socket=/run/mysqld/mysqld.sock",
        "--user=root",
    ]


def test_a_server_that_does_not_answer_is_unavailable():
    fake = FakeRunner()
    fake.on("mariadb", fail=1, stderr="ERROR 2002 (HY000): Can't connect to local server")
    with pytest.raises(Failure) as failed:
        pitr_mariadb.Server(fake, "/run/mysqld/mysqld.sock").live()
    assert failed.value.code == Exit.DB_UNAVAILABLE
    assert "Can't connect" in failed.value.message


# --- bases ---------------------------------------------------------------------------------

INFO_10 = """uuid = 1
server_version = 10.11.18-MariaDB-0+deb12u1-log
binlog_pos = filename 'mysql-bin.000002', position '385', GTID of the last change '0-1-3'
"""
INFO_11 = """server_version = 11.8.6-MariaDB-0+deb13u1-log
binlog_pos = filename 'mysql-bin.000007', position '1608'
"""


def test_the_info_file_gives_the_position_on_both_versions():
    assert pitr_mariadb.parse_info(INFO_10) == {
        "file": "mysql-bin.000002",
        "position": 385,
        "gtid": "0-1-3",
        "server_version": "10.11.18-MariaDB-0+deb12u1-log",
    }
    assert pitr_mariadb.parse_info(INFO_11)["file"] == "mysql-bin.000007"
    with pytest.raises(Failure, match="no binary log position"):
        pitr_mariadb.parse_info("server_version = 10.11\n")


SUMMARY = json.dumps({"message_type": "summary", "total_bytes_processed": 9000, "data_added": 1200})


def base_runner(info=INFO_10, info_name="xtrabackup_info"):
    """mariadb-backup writes its info file into --extra-lsndir, restic stores the stream."""
    fake = FakeRunner()

    def write_info(call):
        lsndir = next(a.split("=", 1)[1] for a in call.argvs[0] if a.startswith("--extra-lsndir="))
        os.makedirs(lsndir, exist_ok=True)
        with open(os.path.join(lsndir, info_name), "w") as file:
            file.write(info)

    fake.on("mariadb-backup", effect=write_info)
    fake.on("restic", argv_contains="--stdin", stdout=SUMMARY + "\n")
    return fake


def take(settings, fake, clock=None):
    said = []
    base = pitr_mariadb.Base(fake, settings, said.append, clock=clock or Clock())
    return base, said


def catalogue(settings):
    return json.loads(open(os.path.join(settings.spool_dir, "archive", "bases.json")).read())


def test_a_base_streams_into_the_local_repository_is_copied_and_catalogued(settings):
    fake = base_runner(info=INFO_11, info_name="mariadb_backup_info")
    base, _said = take(settings, fake)
    done = base.take()
    (pipeline,) = [c for c in fake.calls if c.kind == "pipeline"]
    backup, store = pipeline.argvs
    assert backup[:4] == ["mariadb-backup", "--backup", "--user=root", "--socket=/run/mysqld/mysqld.sock"]
    assert "--stream=mbstream" in backup
    assert store[:3] == ["restic", "--repo", settings.repositories[0].url]
    assert "--stdin" in store and "label=" + done["label"] in store
    (copy,) = [c for c in fake.calls if "copy" in c.argvs[0]]
    assert copy.argv[2] == settings.repositories[1].url
    assert copy.argv[copy.argv.index("--from-repo") + 1] == settings.repositories[0].url
    assert copy.argv[copy.argv.index("--from-password-file") + 1] == settings.password_file
    assert done["file"] == "mysql-bin.000007" and done["position"] == 1608
    assert done["stream_bytes"] == 9000 and done["added_bytes"] == 1200
    assert done["copied_to"] == ["offsite"]
    assert [b["label"] for b in catalogue(settings)] == [done["label"]]
    assert not [n for n in os.listdir(settings.spool_dir) if n.startswith("base-")]  # the lsndir is gone


def test_a_broken_stream_keeps_no_base_and_forgets_what_restic_stored(settings):
    fake = base_runner()
    fake.rules.insert(0, fake.rules.pop(0))
    fake.on("mariadb-backup", fail=1, stderr="[00] FATAL ERROR: failed to copy datafile")
    fake.rules.insert(0, fake.rules.pop())  # before the one that succeeds
    listed = json.dumps([{"id": "abc123", "tags": ["base", "label=x"]}])
    fake.on("restic", argv_contains="snapshots", stdout=listed)
    base, _said = take(settings, fake)
    with pytest.raises(Failure) as failed:
        base.take()
    assert failed.value.code == Exit.DUMP_FAILED
    assert "failed to copy datafile" in failed.value.message and "no base was kept" in failed.value.message
    assert not os.path.exists(os.path.join(settings.spool_dir, "archive", "bases.json"))
    forgets = [c.argv for c in fake.calls if c.kind == "run" and "forget" in c.argv]
    assert forgets and forgets[0][-1] == "abc123"
    assert not [c for c in fake.calls if "copy" in c.argvs[0]]


def test_a_base_without_a_position_is_not_kept(settings):
    fake = base_runner(info="server_version = 10.11\n")
    base, _said = take(settings, fake)
    with pytest.raises(Failure, match="no binary log position"):
        base.take()
    assert not os.path.exists(os.path.join(settings.spool_dir, "archive", "bases.json"))


def test_a_bucket_that_refuses_the_copy_leaves_the_local_base_standing(settings):
    fake = base_runner()
    fake.on("restic", argv_contains=" copy ", fail=1, stderr="Fatal: unable to open repository at s3")
    base, _said = take(settings, fake)
    with pytest.raises(Failure) as failed:
        base.take()
    assert failed.value.code == Exit.OFFSITE_FAILED
    assert "in the local repository stands" in failed.value.message
    assert len(catalogue(settings)) == 1
    # The bucket keeps what it had: its retention does not run.
    assert not [c for c in fake.calls if c.kind == "run" and "s3.example" in c.argv[2] and "forget" in c.argv]


def test_retention_keeps_the_newest_bases_and_the_logs_from_the_oldest_kept(settings, tmp_path):
    settings = config.MariaPitr(**{**settings.__dict__, "keep_full": 2})
    spool = pitr_mariadb.Spool(settings.spool_dir)
    spool.ensure()
    old, new = "20261201T000000Z", "20261205T000000Z"
    for timeline, names in ((old, ["mysql-bin.000001"]), (new, ["mysql-bin.000001", "mysql-bin.000002"])):
        os.makedirs(spool.timeline_dir(timeline), mode=0o700)
        for name in names:
            open(os.path.join(spool.timeline_dir(timeline), name), "w").close()
    spool.save_bases(
        [
            {"label": "A", "ended_at": 1, "timeline": old, "file": "mysql-bin.000001"},
            {"label": "B", "ended_at": 2, "timeline": new, "file": "mysql-bin.000002"},
        ]
    )
    fake = base_runner()
    # A: retired now; B: kept; C: a base of another name older than the oldest kept one (a lost
    # server's, once this one holds keep_full of its own); D: one of another name dated later.
    times = {"A": "1970-01-01T00:00:01Z", "B": "1970-01-01T00:00:02Z", "C": "1970-01-01T00:00:01.5Z"}
    times["D"] = "2030-01-01T00:00:00Z"
    snaps = [
        {"id": i, "tags": ["base", "label=" + label], "time": times[label]}
        for i, label in (("s1", "A"), ("s2", "B"), ("s3", "C"), ("s4", "D"))
    ]
    fake.on("restic", argv_contains="snapshots", stdout=json.dumps(snaps))
    base, _said = take(settings, fake, clock=Clock(3))
    done = base.take()
    kept = [b["label"] for b in catalogue(settings)]
    assert kept == ["B", done["label"]]
    assert spool.timelines() == [new]
    assert spool.files(new) == ["mysql-bin.000002"]
    forgets = [c.argv for c in fake.calls if c.kind == "run" and "forget" in c.argv and "--keep-last" not in c.argv]
    assert {tuple(a[a.index("forget") + 1 :]) for a in forgets} == {("s1", "s3")}
    prunes = [c.argv for c in fake.calls if c.kind == "run" and "--prune" in c.argv]
    assert len(prunes) == 2  # each repository


# --- the archive's run -----------------------------------------------------------------------


class Root:
    def __init__(self, settings):
        self.settings = settings
        self.runner = FakeRunner()
        self.said = []
        self.say = self.said.append


def test_a_run_passes_every_half_archive_timeout_until_its_minute_is_over(settings, monkeypatch):
    import dataclasses

    # The local repository only: no push runs beside the passes (a thread would make the count
    # depend on when it is scheduled; test_a_run_ends_once_its_last_push_has_ended has one).
    settings = dataclasses.replace(settings, repositories=settings.repositories[:1])
    passes = []

    class Counting:
        def __init__(self, *_args):
            pass

        runner = FakeRunner()

        def push_other(self, repo, asked_at):
            return {"through": asked_at, "error": ""}

        def pass_once(self, others=True):
            passes.append(now[0])
            return {"files": [], "bytes": 0, "repositories": {}, "gap": None, "timeline": "t", "asked_at": now[0]}

    now = [0.0]
    monkeypatch.setattr(pitr_mariadb, "Archiver", Counting)

    def sleep(seconds):
        now[0] += seconds

    side = pitr_mariadb.ArchiveSide(Root(settings), clock=lambda: now[0], sleep=sleep)
    summary = side.work()
    # archive_timeout 5: a pass every 2 s, so that the pass and the push together stay within it.
    assert passes == [float(n) for n in range(0, 59, 2)]
    assert summary["passes"] == 30
    passes.clear()
    now[0] = 0.0
    assert pitr_mariadb.ArchiveSide(Root(settings), once=True, clock=lambda: now[0], sleep=sleep).work()["passes"] == 1


def archive_side(settings, server, monkeypatch, pusher_runner, clock=None):
    """ArchiveSide with the fake server, FakeRunners for the passes and for the pushes,
    and a clock that the sleeps move."""
    monkeypatch.setattr(pitr_mariadb, "Server", lambda runner, socket: server)
    now = [0.0]

    def sleep(seconds):
        now[0] += max(seconds, 0.01)
        time.sleep(0.001)

    root = Root(settings)
    side = pitr_mariadb.ArchiveSide(
        root, clock=clock or (lambda: now[0]), sleep=sleep, make_runner=lambda: pusher_runner
    )
    return side, root


def test_a_slow_bucket_holds_up_only_itself(settings, server, monkeypatch):
    """The bucket's push runs beside the passes: while it hangs, writes still reach the local
    repository pass after pass; the run waits for it, then reports its moment."""
    release = threading.Event()
    pushing = FakeRunner()
    pushing.on("restic", effect=lambda call: release.wait(10))
    side, root = archive_side(settings, server, monkeypatch, pushing)
    local_pushes = []

    def written(call):
        local_pushes.append(call)
        server.write()  # the site goes on writing
        if len(local_pushes) == 5:
            release.set()

    root.runner.on("restic", effect=written)
    summary = side.work()
    assert len(local_pushes) >= 5  # the local repository kept being written while the bucket hung
    assert summary["repositories"]["offsite"]["error"] == ""
    assert summary["repositories"]["offsite"]["through"] is not None
    assert all("s3.example" not in c.argv[2] for c in root.runner.calls if c.programs[0] == "restic")
    assert all("s3.example" in c.argv[2] for c in pushing.calls)


def test_a_run_ends_once_its_last_push_has_ended(settings, server, monkeypatch):
    """A push takes a moment (each one alive when the loop looks): --once pushes once, and a
    run past its minute begins no new push, so that it ends."""
    pushing = FakeRunner()
    pushing.on("restic", effect=lambda call: time.sleep(0.05))
    side, root = archive_side(settings, server, monkeypatch, pushing)
    root.runner.on("restic", effect=lambda call: server.write())  # the site writes all along
    side.once = True
    finished = []
    worker = threading.Thread(target=lambda: finished.append(side.work()), daemon=True)
    worker.start()
    worker.join(20)
    assert finished, "the --once run did not end"
    assert len(pushing.calls) == 1
    side.once = False
    worker = threading.Thread(target=lambda: finished.append(side.work()), daemon=True)
    worker.start()
    worker.join(60)
    assert len(finished) == 2, "the run did not end after its minute"


def test_a_bucket_another_run_pushes_to_is_left_to_it(settings, server, monkeypatch):
    spool = pitr_mariadb.Spool(settings.spool_dir)
    spool.ensure()
    holder = os.open(os.path.join(settings.spool_dir, ".push-offsite.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        pushing = FakeRunner()
        side, _root = archive_side(settings, server, monkeypatch, pushing)
        side.once = True
        summary = side.work()
    finally:
        os.close(holder)
    assert summary["repositories"]["offsite"]["busy"] is True
    assert summary["repositories"]["offsite"]["error"] == ""
    assert pushing.calls == []


def test_a_bucket_out_of_reach_is_said_and_the_local_repository_has_it(settings, server, monkeypatch):
    pushing = FakeRunner()
    pushing.on("restic", fail=1, stderr="Fatal: unable to open config file: dial tcp 127.0.0.1:5000: connect: refused")
    side, _root = archive_side(settings, server, monkeypatch, pushing)
    side.once = True
    summary = side.work()
    assert summary["repositories"]["local"]["error"] == ""
    assert "restic backup in the offsite repository failed" in summary["repositories"]["offsite"]["error"]
    assert "connect: refused" in summary["repositories"]["offsite"]["error"]


def test_config_reads_mariadbs_values(tmp_path):
    path = tmp_path / "pitr.json"
    values = {
        "engine": "mysql",
        "stanza": "main",
        "socket": "/run/mysqld/mysqld.sock",
        "spool_dir": "/var/lib/djangoops-mariadb-pitr/spool",
        "password_file": "/etc/djangoops/shop/pitr-restic-password",
        "s3_keys_file": "",
        "repositories": [{"name": "local", "url": "/var/lib/djangoops-mariadb-pitr/repository"}],
        "scratch_dir": "/var/lib/djangoops-pitr/shop",
        "scratch_port": 5499,
        "archive_timeout": 60,
        "max_archive_lag": 300,
        "keep_full": 2,
    }
    path.write_text(json.dumps(values))
    read = config.load_pitr(str(path))
    assert read.engine == "mysql" and read.repositories[0].name == "local"
    values["repositories"] = [{"name": "offsite", "url": "s3:https://h/b"}]
    path.write_text(json.dumps(values))
    with pytest.raises(Failure, match="must list the local repository first"):
        config.load_pitr(str(path))
    values["repositories"] = [{"name": "local", "url": "/r"}, {"name": "offsite", "url": "s3:https://h/b"}]
    path.write_text(json.dumps(values))
    with pytest.raises(Failure, match="s3_keys_file must name the bucket's keys"):
        config.load_pitr(str(path))


# --- restore to a time: the scratch server ----------------------------------------------------

TARGET = "2026-12-07 12:00:30.700000+00"  # pitr.utc_text's form
AT = 1796644830.7  # the same moment


@pytest.fixture
def scratch(settings, tmp_path):
    """The scratch server's root side with a spool holding two bases of the current timeline,
    the second ending at AT - 30, and the logs from the first on; archived up to AT + 5."""
    import dataclasses

    settings = dataclasses.replace(settings, scratch_dir=str(tmp_path / "pitr" / "shop"))
    spool = pitr_mariadb.Spool(settings.spool_dir)
    spool.ensure()
    timeline = "20261201T000000Z"
    os.makedirs(spool.timeline_dir(timeline), mode=0o700)
    for number in range(3, 8):
        with open(os.path.join(spool.timeline_dir(timeline), f"mysql-bin.{number:06d}"), "wb") as file:
            file.write(b"\xfebin" + bytes(number))
    spool.save_bases(
        [
            {"label": "B1", "ended_at": AT - 3600, "timeline": timeline, "file": "mysql-bin.000003", "position": 9},
            {"label": "B2", "ended_at": AT - 30, "timeline": timeline, "file": "mysql-bin.000005", "position": 385},
        ]
    )
    spool.save_state({"timeline": timeline, "repositories": {"local": {"through": AT + 5}}})
    fake = FakeRunner()
    made = pitr_mariadb.MariaScratch(fake, settings, os.getgid(), (os.getuid(), os.getgid()), lambda text: None)
    made.root_uid = os.getuid()
    made.fake = fake
    made.sleep = lambda seconds: None
    return made


def test_the_newest_base_before_the_moment_is_replayed_with_the_logs_from_it(scratch):
    base = scratch.choose(TARGET)
    assert base["label"] == "B2"
    assert [os.path.basename(p) for p in scratch.logs] == ["mysql-bin.000005", "mysql-bin.000006", "mysql-bin.000007"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"through": AT - 10}, "the archive holds the writes up to 2026-12-07 12:00:20.700000+00, not to"),
        ({"through": None}, "the archive holds the writes up to nothing"),
        ({"bases": []}, "no base of the archive ends before"),
        ({"gap": {"timeline": "20261201T000000Z", "after": "mysql-bin.000006"}}, "misses binary logs after"),
        ({"missing": "mysql-bin.000005"}, "the archive lacks mysql-bin.000005, where the base B2 ends"),
    ],
)
def test_a_moment_the_archive_cannot_reach_is_refused(scratch, change, error):
    state = scratch.spool.state()
    if "through" in change:
        state["repositories"]["local"]["through"] = change["through"]
    if "gap" in change:
        state["gap"] = change["gap"]
    scratch.spool.save_state(state)
    if "bases" in change:
        scratch.spool.save_bases(change["bases"])
    if "missing" in change:
        os.unlink(os.path.join(scratch.spool.timeline_dir("20261201T000000Z"), change["missing"]))
    with pytest.raises(Failure) as failed:
        scratch.choose(TARGET)
    assert failed.value.code == Exit.RESTORE_FAILED
    assert error in failed.value.message and failed.value.message.endswith("the live database is unchanged")


def test_the_base_comes_out_of_the_local_repository_prepared_as_mysql(scratch, settings):
    scratch.prepare()
    scratch.restore(TARGET)
    (pipeline,) = [c for c in scratch.fake.calls if c.kind == "pipeline"]
    dump, extract = pipeline.argvs
    assert dump[:3] == ["restic", "--repo", settings.repositories[0].url]
    assert "label=B2" in dump
    assert dump[-2:] == ["latest", "/base.mbstream"]
    assert extract == ["runuser", "-u", "mysql", "--", "mbstream", "-x", "-C", scratch.data]
    (prepare,) = [c.argv for c in scratch.fake.calls if c.kind == "run" and "--prepare" in c.argv]
    assert prepare[:5] == ["runuser", "-u", "mysql", "--", "mariadb-backup"]
    assert f"--target-dir={scratch.data}" in prepare
    assert sorted(os.listdir(scratch.binlog)) == ["mysql-bin.000005", "mysql-bin.000006", "mysql-bin.000007"]
    assert stat_mode(scratch.binlog) == 0o700 and stat_mode(scratch.data) == 0o700


def stat_mode(path):
    return os.stat(path).st_mode & 0o777


def test_a_base_that_cannot_be_extracted_fails_the_restore_with_the_live_database_unchanged(scratch):
    scratch.fake.on("mbstream", fail=1, stderr="mbstream: Can't change dir")
    scratch.prepare()
    with pytest.raises(Failure) as failed:
        scratch.restore(TARGET)
    assert failed.value.code == Exit.RESTORE_FAILED
    assert "the base B2 could not be restored" in failed.value.message and "Can't change dir" in failed.value.message


def test_the_scratch_server_has_its_own_everything_and_no_binary_log(scratch):
    scratch.prepare()
    with open(os.path.join(scratch.data, "backup-my.cnf"), "w") as file:
        file.write("[mysqld]\ninnodb_log_file_size=100663296\ninnodb_page_size=16384\ndatadir=/elsewhere\n")
    scratch.configure()
    text = open(scratch.config).read()
    for line in (
        f"datadir={scratch.data}",
        f"socket={scratch.socket}",
        "bind-address=127.0.0.1",
        "port=5499",
        "skip-log-bin",
        "skip-slave-start",
        "event-scheduler=DISABLED",
        "innodb_log_file_size=100663296",
        "innodb_page_size=16384",
    ):
        assert line in text.splitlines(), line
    assert "/elsewhere" not in text
    assert stat_mode(scratch.config) == 0o640


def test_the_scratch_servers_files_are_read_without_following_links(scratch, tmp_path):
    """backup-my.cnf and the server's log are in mysql's directory: root reads neither through
    a link, and takes only plain values from the first."""
    scratch.prepare()
    secret = tmp_path / "roots-secret"
    secret.write_text("innodb_page_size=SECRET\n")
    os.symlink(secret, os.path.join(scratch.data, "backup-my.cnf"))
    os.symlink(secret, os.path.join(scratch.data, "djangoops-scratch.err"))
    with pytest.raises(OSError):
        scratch.configure()
    assert "SECRET" not in scratch.log_tail()
    os.unlink(os.path.join(scratch.data, "backup-my.cnf"))
    with open(os.path.join(scratch.data, "backup-my.cnf"), "w") as file:
        file.write("innodb_page_size=16384 \ninnodb_log_file_size=1; rm -rf /\n")
    os.unlink(scratch.config) if os.path.exists(scratch.config) else None
    scratch.configure()
    text = open(scratch.config).read()
    assert "innodb_page_size=16384" in text and "rm -rf" not in text


def test_the_logs_are_replayed_up_to_the_second_in_utc(scratch):
    scratch.prepare()
    scratch.restore(TARGET)
    scratch.start(TARGET)
    (start,) = [c.argv for c in scratch.fake.calls if c.kind == "run" and c.argv[0] == "start-stop-daemon"]
    assert start[start.index("--") + 1] == f"--defaults-file={scratch.config}"
    replay = next(c for c in scratch.fake.calls if c.kind == "pipeline" and c.names[0] == "mariadb-binlog")
    reader, client = replay.argvs
    assert "--start-position=385" in reader and "--stop-datetime=2026-12-07 12:00:30" in reader
    assert "--skip-gtid-strict-mode" in reader and "--verify-binlog-checksum" in reader
    assert [os.path.basename(p) for p in reader if p.startswith("/")] == [
        "mysql-bin.000005",
        "mysql-bin.000006",
        "mysql-bin.000007",
    ]
    assert replay.envs[0] == {"TZ": "UTC"}
    assert f"--socket={scratch.socket}" in client and "--binary-mode" in client
    assert scratch.wait_promoted() == "mysql-bin.000007 up to 2026-12-07 12:00:30 UTC"


def test_a_replay_that_fails_fails_the_restore(scratch):
    scratch.fake.on("mariadb-binlog", fail=1, stderr="ERROR: Error in Log_event::read_log_event(): 'Event truncated'")
    scratch.prepare()
    scratch.restore(TARGET)
    with pytest.raises(Failure) as failed:
        scratch.start(TARGET)
    assert failed.value.code == Exit.RESTORE_FAILED
    assert "replaying the binary logs failed" in failed.value.message and "Event truncated" in failed.value.message


def test_a_scratch_server_that_never_answers_is_named_with_its_log(scratch, monkeypatch):
    scratch.fake.on("mariadb-admin", fail=1, stderr="connect to server failed")
    ticks = iter(range(0, 10000, 100))
    scratch.clock = lambda: next(ticks)
    scratch.prepare()
    scratch.restore(TARGET)
    with open(os.path.join(scratch.data, "djangoops-scratch.err"), "w") as file:
        file.write("[ERROR] InnoDB: the log file is too small\n")
    with pytest.raises(Failure) as failed:
        scratch.start(TARGET)
    assert "did not answer within 600 s: [ERROR] InnoDB: the log file is too small" in failed.value.message


def test_remove_stops_the_server_by_its_pid_file_and_removes_the_directory(scratch):
    scratch.prepare()
    open(scratch.pid_file, "w").close()
    scratch.remove()
    (stop,) = [c.argv for c in scratch.fake.calls if c.argv[0] == "start-stop-daemon"]
    assert stop[:4] == ["start-stop-daemon", "--stop", "--pidfile", scratch.pid_file]
    assert stop[4:6] == ["--name", "mariadbd"]
    assert not os.path.exists(scratch.top)


def test_a_lost_servers_bases_stay_until_this_one_holds_keep_full_of_its_own(settings):
    """After recover.yml, the bucket still holds the lost server's bases: the first base of the
    rebuilt server (keep_full 2) retires none of them; its second does."""
    old = {"id": "old1", "tags": ["base", "label=OLD"], "time": "2026-11-01T00:00:00Z"}
    fake = base_runner()
    fake.on("restic", argv_contains="snapshots", stdout=json.dumps([old]))
    base, _said = take(settings, fake, clock=Clock(1796000000.0))
    base.take()
    forgets = [c.argv for c in fake.calls if c.kind == "run" and "forget" in c.argv and "--keep-last" not in c.argv]
    assert forgets == []
    base, _said = take(settings, fake, clock=Clock(1796086400.0))
    base.take()
    forgets = [c.argv for c in fake.calls if c.kind == "run" and "forget" in c.argv and "--keep-last" not in c.argv]
    assert [a[-1] for a in forgets] == ["old1", "old1"]  # local and bucket


# --- a lost server rebuilt ---------------------------------------------------------------------


@pytest.fixture
def rebuild(settings, tmp_path, monkeypatch):
    """A new server: its data directory, and a bucket whose newest binlog snapshot (what restic
    restore writes) holds two timelines and their bases."""
    import dataclasses

    settings = dataclasses.replace(settings, scratch_dir=str(tmp_path / "pitr" / "shop"))
    datadir = tmp_path / "mysql"
    datadir.mkdir(mode=0o755)
    (datadir / "ibdata1").write_text("the new server's own")
    fake = FakeRunner()

    def restored(call):
        target = call.argv[call.argv.index("--target") + 1]
        archive = os.path.join(target, settings.spool_dir.lstrip("/"), "archive")
        for timeline, names in (("20261201T000000Z", [1, 2]), ("20261205T000000Z", [1, 2, 3, 4])):
            os.makedirs(os.path.join(archive, "binlog", timeline))
            for number in names:
                open(os.path.join(archive, "binlog", timeline, f"mysql-bin.{number:06d}"), "w").close()
        bases = [
            {"label": "OLD", "ended_at": 1, "timeline": "20261201T000000Z", "file": "mysql-bin.000001", "position": 4},
            {"label": "N1", "ended_at": 2, "timeline": "20261205T000000Z", "file": "mysql-bin.000001", "position": 4},
            {"label": "N2", "ended_at": 3, "timeline": "20261205T000000Z", "file": "mysql-bin.000003", "position": 385},
        ]
        with open(os.path.join(archive, "bases.json"), "w") as file:
            json.dump(bases, file)

    fake.on("restic", argv_contains=" restore ", effect=restored)

    def extracted(call):
        data = call.argvs[-1][-1]  # mbstream -x -C DATA, the pipeline's last stage
        os.makedirs(os.path.join(data, "mysql"), exist_ok=True)
        with open(os.path.join(data, "ibdata1"), "w") as file:
            file.write("rebuilt")

    fake.on("mbstream", effect=extracted)

    def started(call):
        open(call.argv[call.argv.index("--pidfile") + 1], "w").close()

    fake.on("start-stop-daemon", argv_contains="--start", effect=started)
    made = pitr_mariadb.MariaScratch(fake, settings, os.getgid(), (os.getuid(), os.getgid()), lambda text: None)
    made.root_uid = os.getuid()
    made.sleep = lambda seconds: None
    made.fake = fake
    made.datadir = str(datadir)
    return made


def test_a_lost_server_is_rebuilt_from_the_buckets_newest_base_and_every_log_after_it(rebuild):
    done = rebuild.rebuild(rebuild.datadir)
    assert (done["base"], done["logs"], done["last_log"]) == ("N2", 2, "mysql-bin.000004")
    (restore,) = [c.argv for c in rebuild.fake.calls if c.kind == "run" and "restore" in c.argv]
    assert restore[2].startswith("s3:")  # from the bucket
    dump = next(c for c in rebuild.fake.calls if c.kind == "pipeline" and c.names[0] == "restic").argvs[0]
    assert dump[2].startswith("s3:") and "label=N2" in dump
    reader = next(c for c in rebuild.fake.calls if c.kind == "pipeline" and c.names[0] == "mariadb-binlog").argvs[0]
    assert "--start-position=385" in reader and not [a for a in reader if a.startswith("--stop-datetime")]
    assert [os.path.basename(a) for a in reader if a.startswith("/")] == ["mysql-bin.000003", "mysql-bin.000004"]
    systemctl = [c.argv for c in rebuild.fake.calls if c.argv[0] == "systemctl"]
    assert systemctl == [["systemctl", "stop", "mariadb"], ["systemctl", "start", "mariadb"]]
    # What the new server's data directory held set aside, the rebuilt files in it, the scratch gone.
    assert open(os.path.join(done["aside"], "ibdata1")).read() == "the new server's own"
    assert open(os.path.join(rebuild.datadir, "ibdata1")).read() == "rebuilt"
    assert os.path.isdir(os.path.join(rebuild.datadir, "mysql"))
    assert os.stat(rebuild.datadir).st_mode & 0o777 == 0o755
    assert done["aside"].startswith(rebuild.datadir + ".before-pitr-2")  # named by the wall clock
    assert not os.path.exists(rebuild.top)


def test_files_that_cannot_be_renamed_are_copied_with_their_owners(rebuild, monkeypatch):
    """overlayfs will not rename a directory of the image's lower layer (EXDEV), nor can a rename
    cross file systems: cp -a copies it, keeping its owner, and the original goes."""
    import errno

    real_rename = os.rename

    def rename(source, target):
        if source.startswith(rebuild.datadir + "/"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(source, target)

    monkeypatch.setattr(pitr_mariadb.os, "rename", rename)
    done = rebuild.rebuild(rebuild.datadir + "/")
    copies = [c.argv for c in rebuild.fake.calls if c.argv[:2] == ["cp", "-a"]]
    old_file = os.path.join(rebuild.datadir, "ibdata1")
    assert copies == [["cp", "-a", "--", old_file, os.path.join(done["aside"], "ibdata1")]]
    assert open(os.path.join(rebuild.datadir, "ibdata1")).read() == "rebuilt"


def test_a_server_that_archives_already_is_not_rebuilt(rebuild):
    rebuild.spool.ensure()
    rebuild.spool.save_state({"timeline": "20261207T000000Z"})
    with pytest.raises(Failure) as failed:
        rebuild.rebuild(rebuild.datadir)
    assert failed.value.code == Exit.REFUSED and "it is not a new server" in failed.value.message
    assert rebuild.fake.calls == []
    assert open(os.path.join(rebuild.datadir, "ibdata1")).read() == "the new server's own"


def test_a_bucket_without_a_base_changes_nothing(rebuild):
    rebuild.fake.rules.clear()
    with pytest.raises(Failure) as failed:
        rebuild.rebuild(rebuild.datadir)
    assert failed.value.code == Exit.BAD_BACKUP and "holds no base to rebuild from" in failed.value.message
    assert [c.argv[0] for c in rebuild.fake.calls if c.argv[0] == "systemctl"] == []
    assert open(os.path.join(rebuild.datadir, "ibdata1")).read() == "the new server's own"


# --- verify ------------------------------------------------------------------------------------


def test_the_verify_reads_each_repository_while_the_archive_waits(settings):
    """restic's check takes the repository for itself: the local one is read back under the
    spool's lock (the passes wait), the bucket under its push lock (the pushes wait)."""
    root = Root(settings)
    held = []

    def check(call):
        probe = pitr_mariadb.Spool(settings.spool_dir)
        name = ".lock" if "s3.example" not in call.argv[2] else ".push-offsite.lock"
        taken = probe.lock(name=name)
        held.append((call.argv[2], not taken))
        if taken:
            probe.unlock()

    listed = json.dumps([{"id": "a", "tags": ["base", "label=A"]}, {"id": "b", "tags": ["binlog"]}])
    root.runner.on("restic", argv_contains="snapshots", stdout=listed)
    root.runner.on("restic", argv_contains=" check ", effect=check)
    pitr_mariadb.Spool(settings.spool_dir).ensure()
    verified = pitr_mariadb.VerifySide(root).work()
    assert [h for _repo, h in held] == [True, True]
    assert (verified["snapshots"], verified["backups"], verified["repositories"]) == (4, 2, 2)


@pytest.mark.parametrize(("failing", "code"), [("repository", Exit.BAD_BACKUP), ("s3.example", Exit.OFFSITE_FAILED)])
def test_a_repository_that_does_not_read_back_is_named(settings, failing, code):
    root = Root(settings)
    root.runner.on("restic", argv_contains="snapshots", stdout="[]")
    root.runner.on("restic", argv_contains=failing, fail=1, stderr="Fatal: repository contains errors")
    pitr_mariadb.Spool(settings.spool_dir).ensure()
    with pytest.raises(Failure) as failed:
        pitr_mariadb.VerifySide(root).work()
    assert failed.value.code == code
    assert "repository contains errors" in failed.value.message
