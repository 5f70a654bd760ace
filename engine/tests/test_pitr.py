"""pitr.py: restore_db.sh --to-time's root side. The moment as typed, the
channel to the project user's side, and the scratch cluster, its every program
(pgBackRest, pg_ctl, psql, all as postgres) through a FakeRunner; the files it
writes are real, in tmp_path."""

import datetime
import fcntl
import json
import os
import signal
import stat
import time

import pytest
from command_helpers import PGBACKREST_VERIFY_OK, PITR_ARCHIVER
from djangoops import config, pitr
from djangoops.errors import Exit, Failure
from djangoops.runner import Interrupted
from fakes import FakeRunner, RecordingLog

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC).timestamp()


# --- the moment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-06 17:59:30+00:00", "2026-12-06 17:59:30.000000+00"),
        ("2026-12-06T17:59:30Z", "2026-12-06 17:59:30.000000+00"),
        ("2026-12-06 17:59:30 UTC", "2026-12-06 17:59:30.000000+00"),
        ("2026-12-06 17:59:30.25+01:00", "2026-12-06 16:59:30.250000+00"),
        ("2026-12-06 17:59:30+0130", "2026-12-06 16:29:30.000000+00"),
        ("2026-12-06 17:59:30-05", "2026-12-06 22:59:30.000000+00"),
        ("2026-12-06 17:59+00", "2026-12-06 17:59:00.000000+00"),
        ("  2026-12-06 17:59:30Z ", "2026-12-06 17:59:30.000000+00"),
    ],
)
def test_a_moment_with_its_zone_is_read_as_utc(text, utc):
    assert pitr.utc_text(pitr.parse_time(text, now=NOW)) == utc


def test_a_moment_without_a_zone_is_the_servers_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert pitr.utc_text(pitr.parse_time("2026-12-06 17:59:30", now=NOW)) == "2026-12-06 16:59:30.000000+00"
        assert pitr.utc_text(pitr.parse_time("2026-07-06 17:59:30", now=NOW)) == "2026-07-06 15:59:30.000000+00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("yesterday", "--to-time takes a date and time such as '2026-12-06 17:59:30'"),
        ("2026-12-06", "--to-time takes a date and time"),
        ("17:59:30", "--to-time takes a date and time"),
        ("2026-12-06 17:59:30 CET", "--to-time takes a date and time"),
        ("2026-12-06 17:59:30; rm -rf /", "--to-time takes a date and time"),
        ("2026-02-30 10:00:00", "--to-time '2026-02-30 10:00:00': day is out of range"),
        ("2026-12-06 25:00:00", "--to-time '2026-12-06 25:00:00': hour must be in 0..23"),
        ("2026-12-07 12:00:01Z", "--to-time '2026-12-07 12:00:01Z' is in the future (2026-12-07 12:00:01.000000+00)"),
    ],
)
def test_a_bad_or_future_moment_is_a_usage_error_naming_it(text, error):
    with pytest.raises(Failure) as raised:
        pitr.parse_time(text, now=NOW)
    assert raised.value.code == Exit.USAGE
    assert raised.value.message.startswith(error)


def test_the_option_is_found_with_its_value_only():
    assert pitr.requested_time(["--yes", "--to-time", "2026-12-06 17:59"]) == "2026-12-06 17:59"
    assert pitr.requested_time(["--yes", "--to-time"]) is None
    assert pitr.requested_time(["latest", "--yes"]) is None


def test_a_moment_given_twice_is_refused():
    """The two sides parse the command line apart: they must not read two moments."""
    with pytest.raises(Failure) as raised:
        pitr.requested_time(["--to-time", "2026-12-01 10:00", "--yes", "--to-time", "2026-12-06 17:59"])
    assert raised.value.code == Exit.USAGE
    assert raised.value.message == "--to-time is given 2 times; give the moment once"


# --- the values file ---------------------------------------------------------------------------

VALUES = {
    "stanza": "main",
    "pg_bin": "/usr/lib/postgresql/15/bin",
    "scratch_dir": "/srv/pitr/shop",
    "scratch_port": 5499,
    "full_every_days": 7,
    "port": 5433,
    "socket_dir": "/var/run/postgresql",
    "max_archive_lag": 300,
    "repositories": [1],
    "diff_after_wal_percent": 25,
}


def write_values(tmp_path, **changes):
    path = tmp_path / "pitr.json"
    path.write_text(json.dumps({**VALUES, **changes}))
    path.chmod(0o600)
    return str(path)


def test_the_values_are_read(tmp_path):
    assert config.load_pitr(write_values(tmp_path)) == config.Pitr(
        "main", "/usr/lib/postgresql/15/bin", "/srv/pitr/shop", 5499, port=5433, diff_after_wal_percent=25
    )


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"scratch_dir": "/srv"}, "scratch_dir is too close to / for a directory the restore removes"),
        ({"scratch_dir": "/srv/pitr/a b"}, "scratch_dir must be a path of letters"),
        ({"pg_bin": "/usr/lib/postgresql/15/bin;sh"}, "pg_bin must be a path of letters"),
        ({"stanza": "--stanza"}, "stanza must be a pgBackRest stanza"),
        ({"scratch_port": 0}, "scratch_port"),
        ({"socket_dir": "/run/x y"}, "socket_dir must be a path of letters"),
        ({"max_archive_lag": 59}, "max_archive_lag"),
        ({"repositories": [2, 1]}, "repositories must list the local repository 1 first"),
        ({"repositories": []}, "repositories must list the local repository 1 first"),
        ({"repositories": [1, 1]}, "each repository once"),
        ({"repositories": [1, 5]}, "repositories must hold numbers from 1 to 4"),
        ({"diff_after_wal_percent": 1001}, "diff_after_wal_percent must be from 0 to 1000"),
        ({"diff_after_wal_percent": "50"}, "diff_after_wal_percent must be a whole number"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, changes, error):
    with pytest.raises(Failure) as raised:
        config.load_pitr(write_values(tmp_path, **changes))
    assert raised.value.code == Exit.CONFIG
    assert error in raised.value.message


# --- the channel, the project user's end -------------------------------------------------------


def channel_with(*messages):
    """A Channel whose root side has already written MESSAGES (and closed its end); the
    file descriptor the child writes its request to, to read back."""
    to_child_r, to_child_w = os.pipe()
    to_root_r, to_root_w = os.pipe()
    with os.fdopen(to_child_w, "w") as f:
        for message in messages:
            f.write(message if isinstance(message, str) else json.dumps(message) + "\n")
    return pitr.Channel(to_child_r, to_root_w), to_root_r


def test_the_channel_asks_once_logs_the_progress_and_returns_where_the_cluster_listens():
    channel, requests = channel_with({"log": "restoring"}, "not json\n", {"warn": "slow"}, {"ready": {"port": 5499}})
    log = RecordingLog()
    assert channel.ask(log) == {"port": 5499}
    assert os.read(requests, 100) == b'{"ask": "scratch"}\n'
    assert log.records == [("INFO", "restoring"), ("WARN", "slow")]


def test_the_channel_raises_the_root_sides_failure_with_its_code():
    channel = channel_with({"failed": {"code": 9, "message": "no backup before that moment"}})[0]
    with pytest.raises(Failure) as raised:
        channel.ask(RecordingLog())
    assert (raised.value.code, raised.value.message) == (Exit.RESTORE_FAILED, "no backup before that moment")


def test_a_root_side_that_ends_without_an_answer_is_an_internal_failure():
    channel = channel_with({"log": "restoring"})[0]
    with pytest.raises(Failure) as raised:
        channel.ask(RecordingLog())
    assert raised.value.code == Exit.INTERNAL
    assert "nothing was changed" in raised.value.message


def test_the_channel_comes_from_the_environment_once(monkeypatch):
    read_fd, write_fd = os.pipe()
    monkeypatch.setenv(pitr.CHANNEL, f"{read_fd},{write_fd}")
    channel = pitr.Channel.from_environment()
    assert channel.write_fd == write_fd and pitr.CHANNEL not in os.environ
    assert pitr.Channel.from_environment() is None
    monkeypatch.setenv(pitr.CHANNEL, "3;4")
    assert pitr.Channel.from_environment() is None
    os.close(write_fd)
    channel.reader.close()


# --- the scratch cluster -------------------------------------------------------------------------


class Scene:
    """A Scratch in tmp_path (whose parents are the test's own user's: it stands for root),
    with a FakeRunner; the ownerships it gives are recorded in .chowns, not given."""

    def __init__(self, tmp_path, monkeypatch):
        self.top = str(tmp_path / "pitr" / "shop")
        self.settings = config.Pitr("main", "/usr/lib/postgresql/15/bin", self.top, 5499)
        self.runner = FakeRunner()
        self.said = []
        self.scratch = pitr.Scratch(self.runner, self.settings, GROUP, POSTGRES, self.said.append)
        self.scratch.root_uid = os.getuid()
        self.data = os.path.join(self.top, "data")
        self.run_dir = os.path.join(self.top, "run")
        self.chowns = []
        monkeypatch.setattr(pitr.os, "chown", lambda path, uid, gid, **kw: self.chowns.append((path, uid, gid)))
        monkeypatch.setattr(pitr.os, "fchown", lambda fd, uid, gid: self.chowns.append(("fd", uid, gid)))
        # pg_ctl status: no server (3) unless a test says otherwise.
        self.runner.on(lambda call: call.argv[-1] == "status", fail=3)
        # The stanza's backups, by pgBackRest's info: 100 MiB databases; 10 GiB free.
        self.runner.on(lambda call: call.argv[-1] == "info", stdout=info(100 << 20, 80 << 20))
        self.scratch.free_bytes = lambda path: 10 << 30

    def log(self, text):
        """What the scratch cluster's log ends with (read by tail, as postgres)."""
        first(self.runner, lambda call: call.argv[4] == "tail", stdout=text.encode())

    def leftover(self):
        """What an earlier run left: its marker, a data directory with a file."""
        os.makedirs(os.path.join(self.data, "base"))
        open(os.path.join(self.top, pitr.Scratch.MARKER), "w").close()
        open(os.path.join(self.data, "base", "leftover"), "w").close()


POSTGRES = (70001, 70002)  # postgres's uid and gid, as given to the chowns
GROUP = 70003  # the project's group


def info(*sizes):
    """pgbackrest --output=json info of a stanza whose backups are of SIZES bytes."""
    return json.dumps([{"name": "main", "backup": [{"info": {"size": size}} for size in sizes]}]).encode()


def first(runner, match, **behaviour):
    """A rule that answers before those set up earlier."""
    runner.rules.insert(0, runner.rules.pop(runner.rules.index(runner.on(match, **behaviour))))


@pytest.fixture
def scene(tmp_path, monkeypatch):
    return Scene(tmp_path, monkeypatch)


def ready(scene, last="2026-12-06 17:59:29.9+00"):
    scene.runner.on(lambda call: "psql" in call.argv[4], stdout=f"f|{last}\n".encode())


def test_build_restores_to_the_moment_aside_and_says_where_the_cluster_listens(scene):
    ready(scene)
    answer = pitr.build(scene.scratch, "2026-12-06 17:59:30.000000+00")

    assert answer["socket_dir"] == scene.run_dir and answer["port"] == 5499
    assert answer["recovered_to"] == "2026-12-06 17:59:29.9+00"
    assert answer["target"] == "2026-12-06 17:59:30.000000+00"
    asked, restore, start, query = (c.argv for c in scene.runner.calls if c.argv[-1] != "status")
    assert asked[4:] == ["pgbackrest", "--stanza=main", "--output=json", "info"]
    assert restore[:4] == ["runuser", "-u", "postgres", "--"]
    assert restore[4:] == [
        "pgbackrest",
        "--stanza=main",
        f"--pg1-path={scene.data}",
        "--type=time",
        "--target=2026-12-06 17:59:30.000000+00",
        "--target-action=promote",
        "--archive-mode=off",
        "--log-level-console=warn",
        "restore",
    ]
    assert start[4:8] == ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", scene.data, "start"]
    options = (" " + start[start.index("-o") + 1]).split(" -")
    # On its command line, over what the restored postgresql.auto.conf says.
    for option in (
        f"c config_file={scene.top}/postgresql.conf",
        "p 5499",
        f"k {scene.run_dir}",
        "c listen_addresses=",
        "c archive_mode=off",
        "c hot_standby=off",
        "c shared_buffers=128MB",
        "c shared_preload_libraries=",
        "c max_logical_replication_workers=0",
        f"c hba_file={scene.top}/pg_hba.conf",
    ):
        assert option in options, (option, options)
    assert query[query.index("-h") + 1 : query.index("-h") + 4] == [scene.run_dir, "-p", "5499"]
    # Its configuration is root's, in root's directory, for postgres to read.
    conf = open(os.path.join(scene.top, "postgresql.conf")).read()
    assert "port = 5499\n" in conf and "listen_addresses = ''\n" in conf and "archive_mode = off\n" in conf
    assert "hot_standby = off\n" in conf and f"data_directory = '{scene.data}'\n" in conf
    assert open(os.path.join(scene.top, "pg_hba.conf")).read() == "local all postgres peer\nlocal all all md5\n"
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        assert stat.S_IMODE(os.stat(os.path.join(scene.top, name)).st_mode) == 0o640
    assert ("fd", -1, POSTGRES[1]) in scene.chowns
    # postgres owns the data alone; the socket's directory is postgres's and the project group's.
    assert (scene.data, *POSTGRES) in scene.chowns and (scene.run_dir, POSTGRES[0], GROUP) in scene.chowns
    assert [c for c in scene.chowns if c[0] == scene.top] == []
    assert stat.S_IMODE(os.stat(scene.top).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(scene.data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(scene.run_dir).st_mode) == 0o750
    assert os.path.isfile(os.path.join(scene.top, pitr.Scratch.MARKER))
    assert scene.said[0].startswith("pgBackRest restores the cluster (stanza main)")
    assert "recovered to 2026-12-06 17:59:30.000000+00 in " in scene.said[-1]


def test_build_removes_what_an_earlier_run_left_first(scene):
    scene.leftover()
    ready(scene)
    pitr.build(scene.scratch, "t")
    assert not os.path.exists(os.path.join(scene.data, "base"))
    # Its server was asked first whether it runs (it did not).
    assert scene.runner.calls[0].argv[-1] == "status"


@pytest.mark.parametrize("kind", ["foreign", "link"])
def test_a_scratch_directory_this_command_did_not_make_is_left_as_it_is(scene, tmp_path, kind):
    """A mistyped db_backup_pitr_scratch_dir (another cluster's, say) is never removed."""
    if kind == "foreign":
        os.makedirs(os.path.join(scene.top, "base"))
    else:
        os.makedirs(os.path.dirname(scene.top))
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / pitr.Scratch.MARKER).write_text("")
        os.symlink(tmp_path / "elsewhere", scene.top)
    ready(scene)
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.CONFIG
    assert "was not made by restore_db.sh --to-time; it is left as it is" in raised.value.message
    assert os.path.lexists(scene.top) and scene.runner.calls == []


def test_the_scratch_directory_goes_below_directories_only_root_can_change(scene, tmp_path):
    (tmp_path / "pitr").mkdir()
    os.chmod(tmp_path / "pitr", 0o777)
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.CONFIG
    assert raised.value.message.startswith(f"{tmp_path / 'pitr'}, above db_backup_pitr_scratch_dir {scene.top}, is")
    # Sticky, as /tmp is: no one renames what root put there.
    os.chmod(tmp_path / "pitr", 0o1777)
    ready(scene)
    pitr.build(scene.scratch, "t")


@pytest.mark.parametrize(
    ("free", "stops"),
    [((100 << 20) + (10 << 20) + (1 << 30) - 1, True), ((100 << 20) + (10 << 20) + (1 << 30), False)],
)
def test_no_restore_starts_without_room_for_the_largest_backup_a_tenth_more_and_wal(scene, free, stops):
    scene.scratch.free_bytes = lambda path: free if path == scene.top else 0
    ready(scene)
    if not stops:
        pitr.build(scene.scratch, "t")
        return
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.NO_SPACE
    assert raised.value.message == (
        f"only {free >> 20} MiB free in {scene.top}; recovering the cluster there needs about 1134 MiB (its size "
        "at its largest backup, a tenth more, and WAL to replay); free some space, or set "
        "db_backup_pitr_scratch_dir on another disk; the live database is unchanged"
    )
    assert not [c for c in scene.runner.calls if "restore" in c.argv]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"fail": 1, "stderr": "ERROR: [055]: unable to load info file"}, "pgBackRest cannot read the stanza ("),
        ({"stdout": b"[]"}, "pgBackRest's description of the stanza is unreadable"),
        ({"stdout": b'[{"backup": [{"info": {}}]}]'}, "pgBackRest's description of the stanza is unreadable"),
        ({"stdout": info()}, "the stanza main holds no backup to restore from"),
    ],
)
def test_a_stanza_that_cannot_be_read_or_holds_no_backup_stops_before_the_restore(scene, answer, error):
    first(scene.runner, lambda call: call.argv[-1] == "info", **answer)
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.RESTORE_FAILED and raised.value.message.startswith(error)
    assert not [c for c in scene.runner.calls if "restore" in c.argv]


def test_a_failed_pgbackrest_restore_stops_before_any_server_starts(scene):
    scene.runner.on(
        lambda call: "pgbackrest" in call.argv, fail=1, stderr="ERROR: [075]: no backup set found to restore"
    )
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.RESTORE_FAILED
    assert "pgBackRest could not restore the cluster" in raised.value.message
    assert "no backup set found to restore" in raised.value.message
    assert raised.value.message.endswith("the live database is unchanged")
    assert not [c for c in scene.runner.calls if "start" in c.argv]


def test_a_recovery_that_ends_before_the_moment_says_the_archive_ends_earlier(scene):
    scene.log(
        "LOG:  starting point-in-time recovery to 2026-12-06 17:59:30+00\n"
        "FATAL:  recovery ended before configured recovery target was reached\n"
    )
    scene.runner.on(lambda call: "start" in call.argv, fail=1, stderr="pg_ctl: could not start server")
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.RESTORE_FAILED
    assert "the archived WAL ends before that moment" in raised.value.message
    assert "choose an earlier time" in raised.value.message


def test_another_fatal_error_of_the_recovery_is_quoted(scene):
    scene.log("2026-12-07 LOG: x\n2026-12-07 FATAL:  could not locate required checkpoint\n")
    scene.runner.on(lambda call: "start" in call.argv, fail=1)
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert "did not recover: FATAL:  could not locate required checkpoint" in raised.value.message


def test_a_start_that_fails_without_a_log_quotes_pg_ctl(scene):
    scene.runner.on(lambda call: "start" in call.argv, fail=1, stderr="pg_ctl: could not start server")
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert "could not start server" in raised.value.message


def test_the_recovery_is_waited_for_until_the_cluster_is_promoted(scene):
    # With hot_standby off it refuses connections until then; its server runs on.
    ready(scene, last="2026-12-06 17:59:29+00")
    first(scene.runner, lambda call: "psql" in call.argv[4], times=1, stdout=b"t|\n")
    psql = "FATAL:  the database system is not accepting connections"
    first(scene.runner, lambda call: "psql" in call.argv[4], times=2, fail=2, stderr=psql)
    first(scene.runner, lambda call: call.argv[-1] == "status", times=2)
    naps = []
    scene.scratch.sleep = naps.append
    assert pitr.build(scene.scratch, "t")["recovered_to"] == "2026-12-06 17:59:29+00"
    assert naps == [pitr.POLL] * 3


def test_a_server_that_stops_while_recovering_is_reported_in_its_own_words(scene):
    scene.log("FATAL:  recovery ended before configured recovery target was reached\n")
    scene.runner.on(
        lambda call: "psql" in call.argv[4], fail=2, stderr="connection to server failed: No such file or directory"
    )
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert raised.value.code == Exit.RESTORE_FAILED
    assert "the archived WAL ends before that moment" in raised.value.message


def test_a_recovery_that_never_ends_is_given_up_at_the_deadline(scene, monkeypatch):
    first(scene.runner, lambda call: call.argv[-1] == "status")
    scene.runner.on(lambda call: "psql" in call.argv[4], fail=2, stderr="not accepting connections")
    now = [0.0]
    scene.scratch.clock = lambda: now[0]
    scene.scratch.sleep = lambda seconds: now.__setitem__(0, now[0] + 3600)
    with pytest.raises(Failure) as raised:
        pitr.build(scene.scratch, "t")
    assert f"had not finished its recovery after {pitr.RECOVERY_TIMEOUT} s" in raised.value.message


def test_remove_stops_a_running_server_fast_then_immediately(scene):
    scene.leftover()
    scene.runner.rules.clear()
    scene.runner.on(lambda call: call.argv[-1] == "status")  # running
    scene.runner.on(lambda call: "fast" in call.argv, fail=1, stderr="pg_ctl: server does not shut down")
    scene.scratch.remove()
    assert [c.argv[c.argv.index("-m") + 1] for c in scene.runner.calls if "stop" in c.argv] == ["fast", "immediate"]
    assert not os.path.exists(scene.top)


def test_a_server_that_cannot_be_stopped_is_not_removed_from_under_it(scene):
    scene.leftover()
    scene.runner.rules.clear()
    scene.runner.on(lambda call: call.argv[-1] == "status")
    scene.runner.on(lambda call: "stop" in call.argv, fail=1, stderr="pg_ctl: server does not shut down")
    with pytest.raises(Failure) as raised:
        scene.scratch.remove()
    assert raised.value.code == Exit.INTERNAL and "could not stop the scratch cluster" in raised.value.message
    assert os.path.isdir(scene.data)


# --- serving the child --------------------------------------------------------------------------


def serve_with(scene, monkeypatch, requests, build):
    monkeypatch.setattr(pitr, "build", build)
    to_root_r, to_root_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    os.write(to_root_w, requests.encode())
    os.close(to_root_w)
    pitr.serve(to_root_r, to_child_w, pitr.ScratchSide(scene.scratch, "t"), pitr.Served())
    with os.fdopen(to_child_r) as f:
        return [json.loads(line) for line in f]


def test_serve_answers_the_one_request_and_ignores_anything_else(scene, monkeypatch):
    calls = []

    def build(scratch, target):
        calls.append(target)
        return {"port": 5499}

    answers = serve_with(scene, monkeypatch, 'rm -rf /\n{"ask": "scratch"}\n', build)
    assert answers == [{"ready": {"port": 5499}}] and calls == ["t"]


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (Failure(Exit.RESTORE_FAILED, "pgBackRest could not restore"), 9, "pgBackRest could not restore"),
        (Interrupted(15), 130, "stopped; the live database is unchanged"),
        (PermissionError(13, "Permission denied"), 9, "could not make the scratch cluster's directory"),
    ],
)
def test_serve_passes_a_failure_on_with_its_code(scene, monkeypatch, error, code, message):
    def build(scratch, target):
        raise error

    (answer,) = serve_with(scene, monkeypatch, '{"ask": "scratch"}\n', build)
    assert answer["failed"]["code"] == code and message in answer["failed"]["message"]


# --- the two processes -------------------------------------------------------------------------


@pytest.fixture
def root_side(tmp_path, monkeypatch):
    """supervise() with its values, accounts and scratch cluster stood in for: .built lists
    the moments the child got a cluster for, .removed how often the scratch was removed."""
    side = type("Side", (), {})()
    side.built, side.removed = [], []
    settings = config.Pitr("main", "/usr/lib/postgresql/15/bin", str(tmp_path / "scratch"), 5499)
    monkeypatch.setattr(config, "load_pitr", lambda path: settings)
    account = type("Account", (), {"pw_uid": os.getuid(), "pw_gid": os.getgid()})()
    monkeypatch.setattr(pitr.pwd, "getpwnam", lambda name: account)

    def build(scratch, target):
        side.built.append(target)
        return {"socket_dir": scratch.top, "port": 5499}

    monkeypatch.setattr(pitr, "build", build)
    monkeypatch.setattr(pitr.Scratch, "remove", lambda self: side.removed.append(self.top))
    project = type("Project", (), {"group": None, "user": "shop"})()
    side.supervise = lambda child: pitr.restore_to_time(
        project, str(tmp_path), ["--to-time", "2026-12-06 17:59Z"], child
    )
    return side


def test_the_child_gets_the_recovered_cluster_and_its_exit_code_is_the_commands(root_side, tmp_path):
    answer = tmp_path / "answer.json"

    def child():
        ready = pitr.Channel.from_environment().ask(RecordingLog())
        answer.write_text(json.dumps(ready))
        return 15

    assert root_side.supervise(child) == 15
    assert json.loads(answer.read_text()) == {"socket_dir": str(tmp_path / "scratch"), "port": 5499}
    # Recovered in the parent (its list), and removed there once the child had ended.
    assert root_side.built == ["2026-12-06 17:59:00.000000+00"]
    assert root_side.removed == [str(tmp_path / "scratch")]


def test_a_child_that_stops_before_asking_recovers_nothing(root_side):
    assert root_side.supervise(lambda: int(Exit.NOT_CONFIRMED)) == Exit.NOT_CONFIRMED
    assert root_side.built == []
    # Not even removed: without the project's lock, the scratch may be another run's.
    assert root_side.removed == []


def test_a_child_that_dies_of_a_signal_is_reported_so(root_side):
    def child():
        pitr.Channel.from_environment().ask(RecordingLog())
        os.kill(os.getpid(), 9)

    assert root_side.supervise(child) == 128 + 9
    assert len(root_side.removed) == 1


def test_a_bad_moment_is_refused_before_anything_forks(root_side, tmp_path):
    project = type("Project", (), {"group": None, "user": "shop"})()
    with pytest.raises(Failure) as raised:
        pitr.restore_to_time(project, str(tmp_path), ["--to-time", "noon"], lambda: 0)
    assert raised.value.code == Exit.USAGE
    assert root_side.removed == []


def test_a_term_to_the_root_side_stops_its_recovery_and_reaches_the_child(root_side, monkeypatch):
    def build(scratch, target):
        root_side.built.append(target)
        time.sleep(30)  # the TERM's Interrupted ends it

    monkeypatch.setattr(pitr, "build", build)

    def child():
        signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(42))
        channel = pitr.Channel.from_environment()
        os.write(channel.write_fd, b'{"ask": "scratch"}\n')
        time.sleep(0.2)
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(30)
        return 0

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    started = time.monotonic()
    assert root_side.supervise(child) == 42
    assert time.monotonic() - started < 10
    assert len(root_side.built) == 1 and len(root_side.removed) == 1
    # The handlers are the test's own again.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def flocked(path):
    """Whether another descriptor holds a flock on PATH."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_the_scratch_cluster_is_removed_when_the_child_is_done_and_the_lock_let_go(scene, monkeypatch):
    removed, held = [], []
    lock = scene.top + ".lock"

    def remove(scratch):
        removed.append(scratch.top)
        held.append(flocked(lock))

    monkeypatch.setattr(pitr.Scratch, "remove", remove)
    answers = serve_with(scene, monkeypatch, pitr.ASK_SCRATCH + "\n" + pitr.ASK_REMOVE + "\n", lambda s, t: {"port": 1})
    assert answers == [{"ready": {"port": 1}}, {"removed": True}]
    assert scene.said == ["the scratch cluster is stopped and removed"]
    # Removed once, under the root side's own lock, which then went.
    assert removed == [scene.top] and held == [True]
    assert not flocked(lock)


def test_a_failed_recovery_is_removed_at_once_and_its_lock_let_go(scene, monkeypatch):
    removed = []
    monkeypatch.setattr(pitr.Scratch, "remove", lambda scratch: removed.append(scratch.top))

    def build(scratch, target):
        raise Failure(Exit.RESTORE_FAILED, "pgBackRest could not restore")

    answers = serve_with(scene, monkeypatch, pitr.ASK_SCRATCH + "\n" + pitr.ASK_REMOVE + "\n", build)
    assert answers[0]["failed"]["code"] == 9 and answers[-1] == {"removed": True}
    assert removed == [scene.top] and not flocked(scene.top + ".lock")


def test_another_runs_scratch_cluster_is_waited_for_then_left_alone(scene, monkeypatch):
    """A run whose child let the project's lock go may still be removing its scratch cluster."""
    removed = []
    monkeypatch.setattr(pitr.Scratch, "remove", lambda scratch: removed.append(scratch.top))
    monkeypatch.setattr(pitr, "LOCK_WAIT", 1)
    os.makedirs(os.path.dirname(scene.top), exist_ok=True)
    other = os.open(scene.top + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        answers = serve_with(scene, monkeypatch, pitr.ASK_SCRATCH + "\n" + pitr.ASK_REMOVE + "\n", lambda s, t: {})
    finally:
        os.close(other)
    assert answers[0]["failed"]["code"] == Exit.LOCKED
    assert "another restore to a time still holds" in answers[0]["failed"]["message"]
    assert removed == []


# --- pitr_backup_db.sh's root side ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kind"),
    [([], "auto"), (["--type", "full"], "full"), (["--quiet", "--type", "incr"], "incr")],
)
def test_the_backup_type_is_read_as_the_child_reads_it(args, kind):
    assert pitr.backup_type(args) == kind


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--type", "weekly"], "--type takes auto, full, diff or incr, got 'weekly'"),
        (["--type", "full", "--type", "diff"], "--type is given 2 times; give it once"),
    ],
)
def test_a_bad_backup_type_is_a_usage_error(args, error):
    with pytest.raises(Failure) as raised:
        pitr.backup_type(args)
    assert (raised.value.code, raised.value.message) == (Exit.USAGE, error)


AUTO_NOW = 1796000000  # when the auto tests run


def backups(*kinds_and_ages):
    """pgbackrest info of a stanza whose backups are (kind, days old when they stopped)."""
    entries = [
        {
            "label": f"{n}{kind[0].upper()}",
            "type": kind,
            "timestamp": {"stop": AUTO_NOW - int(days * 86400)},
            "archive": {"stop": f"0000000100000000000000{n:02X}"},
            "info": {"size": 100 << 20, "repository": {"delta": 1}},
        }
        for n, (kind, days) in enumerate(kinds_and_ages)
    ]
    return json.dumps([{"name": "main", "backup": entries}]).encode()


@pytest.mark.parametrize(
    ("held", "kind", "why"),
    [
        ((), "full", "the stanza has no full backup"),
        (
            (("full", 8), ("diff", 1)),
            "full",
            "the newest full backup is 8.0 days old (db_backup_pitr_full_every_days 7)",
        ),
        # A daily run a few minutes earlier than last week's still takes the full one.
        ((("full", 7 - 0.01),), "full", "the newest full backup is 7.0 days old (db_backup_pitr_full_every_days 7)"),
    ],
)
def test_auto_takes_a_full_backup_once_the_newest_full_one_is_a_week_old(backup_side, held, kind, why):
    backup_side.kind = "auto"
    backup_side.runner.on(lambda call: call.argv[-1] == "info", times=2, stdout=backups(*held))
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=backups(*held, (kind, 0)))
    assert backup_side.auto_kind(AUTO_NOW) == (kind, why)
    assert backup_side.backup(now=AUTO_NOW)["type"] == kind
    (taken,) = [call.argv for call in backup_side.runner.calls if call.argv[-1] == "backup"]
    assert f"--type={kind}" in taken
    assert backup_side.said == [f"pgBackRest takes a {kind} backup of the cluster (stanza main): {why}"]


def wal_listing(*segments):
    """repo-ls --recurse of a stanza's archive holding SEGMENTS, (segment number, bytes),
    with what else an archive holds: its info files, a timeline's history, a backup's
    label, the directories."""
    listing = {
        ".": {"type": "path"},
        "archive.info": {"type": "file", "size": 600, "time": 1},
        "15-1": {"type": "path"},
        "15-1/00000002.history": {"type": "file", "size": 5 << 20, "time": 1},
        "15-1/0000000100000000": {"type": "path"},
        "15-1/0000000100000000/000000010000000000000002.00000028.backup": {"type": "file", "size": 9 << 20},
    }
    for number, size in segments:
        name = f"{segment_name(number)}-{'ab' * 20}.gz"
        listing[f"15-1/{name[:16]}/{name}"] = {"type": "file", "size": size, "time": 1}
    return json.dumps(listing).encode()


def segment_name(number):
    """WAL segment NUMBER's name on timeline 1, with 16 MiB segments (256 to a log file)."""
    return f"00000001{number // 256:08X}{number % 256:08X}"


def lists_archive(call):
    return call.argv[-2] == "repo-ls"


@pytest.mark.parametrize(
    ("segments", "kind", "why"),
    [
        # Segments 0 to 2 end at or before the newest backup (the diff numbered 2): not counted.
        (
            ((0, 90 << 20), (2, 90 << 20), (3, 30 << 20), (4, 19 << 20)),
            None,
            "the archive holds 49MB of WAL since backup 2D, 49.0 % of the cluster's 100MB, under "
            "db_backup_pitr_diff_after_wal_percent 50; the newest full backup is 6.0 days old",
        ),
        (
            ((3, 30 << 20), (4, 20 << 20)),
            "diff",
            "the archive holds 50MB of WAL since backup 2D, 50.0 % of the cluster's 100MB "
            "(db_backup_pitr_diff_after_wal_percent 50); the newest full backup is 6.0 days old",
        ),
        ((), None, "the archive holds 0B of WAL since backup 2D, 0.0 % of the cluster's 100MB, under "
                   "db_backup_pitr_diff_after_wal_percent 50; the newest full backup is 6.0 days old"),
    ],
)  # fmt: skip
def test_between_full_backups_auto_takes_a_differential_one_once_the_wal_since_the_newest_is_half_the_cluster(
    backup_side, segments, kind, why
):
    backup_side.kind = "auto"
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=backups(("full", 20), ("full", 6), ("diff", 1)))
    backup_side.runner.on(lists_archive, stdout=wal_listing(*segments))
    assert backup_side.auto_kind(AUTO_NOW) == (kind, why)
    (listed,) = [call.argv for call in backup_side.runner.calls if lists_archive(call)]
    assert listed == [
        "runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=main", "--repo=1", "--output=json", "--recurse",
        "--log-level-console=warn", "repo-ls", "archive/main",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "segments", "missing"),
    [
        (2, (3, 5, 6), "000000010000000000000004"),
        # The first segment after the backup's.
        (2, (4,), "000000010000000000000003"),
        # Across a log file's end (segment FF, then the next log file's first): no gap.
        (255, (256, 257), ""),
        (255, (257,), "000000010000000100000000"),
    ],
)
def test_wal_missing_from_the_archive_since_the_newest_backup_takes_a_differential_one(
    backup_side, stop, segments, missing
):
    """A gap (WAL written while archive_mode was off reached no archive): a restore from the
    newest backup would stop at it, so auto takes a backup however little WAL there is."""
    backup_side.kind = "auto"
    described = json.loads(backups(("full", 2)))
    described[0]["backup"][0]["archive"]["stop"] = segment_name(stop)
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=json.dumps(described).encode())
    backup_side.runner.on(lists_archive, stdout=wal_listing(*((n, 1024) for n in segments)))
    kind, why = backup_side.auto_kind(AUTO_NOW)
    if missing:
        assert kind == "diff"
        assert why == (
            f"the archive misses WAL after backup 0F (segment {missing} is in no archive of the repository, written "
            "while archiving was off?): a restore from that backup would stop there"
        )
    else:
        assert kind is None and why.startswith("the archive holds 2.0KB of WAL since backup 0F, 0.0 % of")
    (asked,) = [call.argv for call in backup_side.runner.calls if asks_segment_size(call)]
    assert asked[:4] == ["runuser", "-u", "postgres", "--"]


@pytest.mark.parametrize(
    ("answer", "code", "error"),
    [
        ({"fail": 2, "stderr": "psql: error: connection refused"}, Exit.DB_UNAVAILABLE,
         "cannot ask the cluster (port 5432) its WAL segment size (runuser failed (exit code 2): psql: error: "
         "connection refused), so no backup was taken"),
        ({"stdout": b"16MB\n"}, Exit.INTERNAL, "the cluster's WAL segment size is unreadable, so no backup was taken"),
        ({"stdout": b"1000\n"}, Exit.INTERNAL, "the cluster's WAL segment size is unreadable, so no backup was taken"),
    ],
)  # fmt: skip
def test_a_segment_size_that_cannot_be_read_takes_no_backup(backup_side, answer, code, error, monkeypatch):
    monkeypatch.setattr(pitr.time, "time", lambda: AUTO_NOW)
    backup_side.kind = "auto"
    backup_side.runner.rules.clear()
    backup_side.runner.on(asks_segment_size, **answer)
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=backups(("full", 2)))
    backup_side.runner.on(lists_archive, stdout=wal_listing((1, 1024)))
    assert backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"] == {"code": code, "message": error}
    assert [c for c in backup_side.runner.calls if c.argv[-1] == "backup"] == []


def test_a_night_without_a_backup_says_why_and_reports_the_newest_one(backup_side, monkeypatch):
    monkeypatch.setattr(pitr.time, "time", lambda: AUTO_NOW)
    backup_side.kind = "auto"
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=backups(("full", 2)))
    backup_side.runner.on(lists_archive, stdout=wal_listing((1, 1 << 20)))
    done = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["done"]
    assert [c for c in backup_side.runner.calls if c.argv[-1] == "backup"] == []
    assert (done["taken"], done["label"], done["type"], done["seconds"], done["backups"]) == (False, "0F", "full", 0, 1)
    assert done["why"].startswith("the archive holds 1.0MB of WAL since backup 0F, 1.0 % of the cluster's 100MB, under")
    assert backup_side.said == [f"pgBackRest takes no backup of the cluster (stanza main): {done['why']}"]


def test_a_share_of_0_takes_a_differential_backup_every_run_without_listing_the_archive(backup_side):
    backup_side.kind = "auto"
    backup_side.root.settings = config.Pitr(
        "main", "/usr/lib/postgresql/15/bin", "/var/lib/x/shop", 5499, diff_after_wal_percent=0
    )
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=backups(("full", 2)))
    assert backup_side.auto_kind(AUTO_NOW) == ("diff", "the newest full backup is 2.0 days old")
    assert not [c for c in backup_side.runner.calls if lists_archive(c)]


@pytest.mark.parametrize(
    ("listing", "error"),
    [
        ({"fail": 82, "stderr": "ERROR: [082]: unable to list"}, "pgBackRest cannot list the archive of the local "
         "repository (runuser failed (exit code 82): ERROR: [082]: unable to list)"),
        ({"stdout": b"[1]"}, "pgBackRest's listing of the archive of the local repository is unreadable"),
        # A segment after the backup's, without its size.
        ({"stdout": json.dumps({"F" * 24 + "-" + "a" * 40: {"type": "file"}}).encode()},
         "pgBackRest's listing of the archive of the local repository is unreadable"),
    ],
)  # fmt: skip
def test_an_archive_that_cannot_be_listed_takes_no_backup(backup_side, listing, error, monkeypatch):
    monkeypatch.setattr(pitr.time, "time", lambda: AUTO_NOW)
    backup_side.kind = "auto"
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=backups(("full", 2)))
    backup_side.runner.on(lists_archive, **listing)
    answer = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.DUMP_FAILED
    assert answer["message"].startswith(error) and answer["message"].endswith("so no backup was taken")
    assert [c for c in backup_side.runner.calls if c.argv[-1] == "backup"] == []


def test_a_newest_backup_without_its_wal_takes_no_backup(backup_side, monkeypatch):
    monkeypatch.setattr(pitr.time, "time", lambda: AUTO_NOW)
    backup_side.kind = "auto"
    described = json.loads(backups(("full", 2)))
    del described[0]["backup"][0]["archive"]
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=json.dumps(described).encode())
    answer = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.DUMP_FAILED
    assert answer["message"].startswith("pgBackRest's description of the newest backup names no WAL or size")


def test_auto_takes_no_backup_when_the_stanza_cannot_be_described(backup_side):
    backup_side.kind = "auto"
    backup_side.runner.on(lambda call: call.argv[-1] == "info", fail=1, stderr="ERROR: [055]: unable to load info")
    answer = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.DUMP_FAILED
    assert answer["message"].startswith("pgBackRest cannot describe the stanza, so no backup was taken")
    assert [c for c in backup_side.runner.calls if c.argv[-1] == "backup"] == []


BACKUP_INFO = json.dumps(
    [
        {
            "name": "main",
            "backup": [
                {"label": "20261207-020000F", "type": "full", "info": {"size": 50 << 20, "repository": {"delta": 9}}},
                {
                    "label": "20261207-020000F_20261208-020000D",
                    "type": "diff",
                    "info": {"size": 51 << 20, "repository": {"delta": 3 << 20}},
                },
            ],
        }
    ]
).encode()


@pytest.fixture
def backup_side():
    runner = FakeRunner()
    said = []
    root = pitr.Root(
        runner, config.Pitr("main", "/usr/lib/postgresql/15/bin", "/var/lib/x/shop", 5499), 1, (2, 3), said.append
    )
    side = pitr.BackupSide(root, "diff")
    side.runner, side.said = runner, said
    # The cluster's WAL segment size, PostgreSQL's default, when auto asks it.
    runner.on(asks_segment_size, stdout=b"16777216\n")
    return side


def asks_segment_size(call):
    return "wal_segment_size" in call.argv[-1]


def test_the_backup_runs_as_postgres_and_reports_the_newest_backup(backup_side):
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=BACKUP_INFO)
    served = pitr.Served()
    answer = backup_side.handle(pitr.ASK_BACKUP, served, None)["done"]
    backup, info = (call.argv for call in backup_side.runner.calls)
    assert backup == [
        "runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=main", "--repo=1", "--type=diff",
        "--log-level-console=warn", "backup",
    ]  # fmt: skip
    assert info[4:] == ["pgbackrest", "--stanza=main", "--output=json", "info"]
    assert answer["label"] == "20261207-020000F_20261208-020000D" and answer["type"] == "diff"
    assert (answer["database_bytes"], answer["repository_bytes"], answer["backups"]) == (51 << 20, 3 << 20, 2)
    assert backup_side.said == ["pgBackRest takes a diff backup of the cluster (stanza main)"]
    # One backup a run: the same request again is not taken.
    assert backup_side.handle(pitr.ASK_BACKUP, served, None) is None
    assert backup_side.handle(pitr.ASK_SCRATCH, pitr.Served(), None) is None


def test_a_failed_backup_says_the_earlier_ones_stand(backup_side):
    backup_side.runner.on(
        lambda call: call.argv[-1] == "backup", fail=56, stderr="ERROR: [056]: unable to find primary"
    )
    answer = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.DUMP_FAILED
    assert answer["message"].startswith("pgBackRest's diff backup (stanza main) failed (")
    assert "unable to find primary" in answer["message"]
    assert answer["message"].endswith("the earlier backups are as they were")


@pytest.mark.parametrize("stdout", [b"", b"[]", b'[{"backup": []}]', b'[{"backup": [{"label": "x"}]}]'])
def test_an_unreadable_description_after_the_backup_is_an_internal_failure(backup_side, stdout):
    backup_side.runner.on(lambda call: call.argv[-1] == "info", stdout=stdout)
    answer = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.INTERNAL and "description of the stanza is unreadable" in answer["message"]


def test_a_signal_stops_the_backup_with_130(backup_side):

    def interrupted(call):
        raise Interrupted(signal.SIGTERM)

    backup_side.runner.on(lambda call: call.argv[-1] == "backup", effect=interrupted)
    answer = backup_side.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.INTERRUPTED


# --- the check's root side ---------------------------------------------------------------------

ARCHIVER = PITR_ARCHIVER
STATUS_INFO = json.dumps(
    [
        {
            "name": "main",
            "status": {"code": 0, "message": "ok"},
            "backup": [
                {"label": "20261207-020000F", "type": "full", "timestamp": {"start": 1795990000, "stop": 1795990100}},
                {
                    "label": "20261207-020000F_1D",
                    "type": "diff",
                    "timestamp": {"start": 1795999000, "stop": 1795999050},
                },
            ],
        }
    ]
).encode()


@pytest.fixture
def status_side():
    runner = FakeRunner()
    settings = config.Pitr("main", "/usr/lib/postgresql/15/bin", "/var/lib/x/shop", 5499, port=5433)
    side = pitr.StatusSide(pitr.Root(runner, settings, 1, (2, 3), lambda text: None))
    side.runner = runner
    return side


def is_psql(call):
    return call.argv[4].endswith("/psql")


def test_the_status_reads_the_archiver_as_postgres_and_the_stanzas_backups(status_side):
    status_side.runner.on(is_psql, stdout=json.dumps(ARCHIVER).encode())
    status_side.runner.on(lambda call: call.argv[-1] == "info", stdout=STATUS_INFO)
    served = pitr.Served()
    answer = status_side.handle(pitr.ASK_STATUS, served, None)["status"]
    psql, info = (call.argv for call in status_side.runner.calls)
    assert psql[:5] == ["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql"]
    assert "dbname=postgres host=/var/run/postgresql port=5433 connect_timeout=10" in psql
    assert "FROM pg_stat_archiver" in psql[-1] and "ON_ERROR_STOP=1" in psql
    assert info[4:] == ["pgbackrest", "--stanza=main", "--output=json", "info"]
    assert answer == {
        "archiver": ARCHIVER,
        "backups": [
            {"type": "full", "label": "20261207-020000F", "stop": 1795990100},
            {"type": "diff", "label": "20261207-020000F_1D", "stop": 1795999050},
        ],
        "repository": {"code": 0, "message": "ok"},
        "max_archive_lag": 300,
    }
    # One status a run; nothing else is taken.
    assert status_side.handle(pitr.ASK_STATUS, served, None) is None
    assert status_side.handle(pitr.ASK_BACKUP, pitr.Served(), None) is None
    status_side.cleanup(served)


def test_a_cluster_that_cannot_be_asked_is_unavailable_and_pgbackrest_is_not_run(status_side):
    status_side.runner.on(is_psql, fail=2, stderr="psql: error: connection to server failed: No such file")
    answer = status_side.handle(pitr.ASK_STATUS, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.DB_UNAVAILABLE
    assert answer["message"].startswith("cannot ask the cluster (port 5433) how its archiving goes (")
    assert "No such file" in answer["message"]
    assert len(status_side.runner.calls) == 1


@pytest.mark.parametrize("stdout", [b"", b"[1]", b"not json"])
def test_an_unreadable_archiver_answer_is_an_internal_failure(status_side, stdout):
    status_side.runner.on(is_psql, stdout=stdout)
    answer = status_side.handle(pitr.ASK_STATUS, pitr.Served(), None)["failed"]
    assert answer == {"code": Exit.INTERNAL, "message": "the cluster's answer about its archiving is unreadable"}


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"fail": 55, "stderr": "ERROR: [055]: unable to load info file"}, "pgBackRest info failed ("),
        ({"stdout": b"[]"}, "pgBackRest's info of the stanza is unreadable"),
        ({"stdout": b'[{"backup": [{"label": "x"}]}]'}, "pgBackRest's info of the stanza is unreadable"),
    ],
)
def test_a_repository_that_cannot_be_read_is_said_beside_the_archiver(status_side, info, message):
    status_side.runner.on(is_psql, stdout=json.dumps(ARCHIVER).encode())
    status_side.runner.on(lambda call: call.argv[-1] == "info", **info)
    answer = status_side.handle(pitr.ASK_STATUS, pitr.Served(), None)["status"]
    assert answer["archiver"] == ARCHIVER and answer["backups"] == []
    assert answer["repository"]["code"] == -1 and answer["repository"]["message"].startswith(message)


# --- verify_db.sh's root side: pgBackRest's verify ----------------------------------------------

# What pgBackRest 2.45 printed (exit 0 both times) for a repository as written (command_helpers),
# and for a copy with a WAL segment overwritten in its middle and one file of the full backup removed.
VERIFY_OK = PGBACKREST_VERIFY_OK
VERIFY_DAMAGED = """stanza: main
status: error
  archiveId: 15-1, total WAL checked: 20, total valid WAL: 19
    other: 1
  backup: 20261207-113729F, status: invalid, total files checked: 1315, total valid files: 1314
    missing: 1
  backup: 20261207-113729F_20261207-113851D, status: invalid, total files checked: 1620, total valid files: 1619
    missing: 1
"""


def test_a_verify_that_found_everything_valid_is_counted():
    assert pitr.read_verify(VERIFY_OK) == {
        "ok": True,
        "wal_checked": 20,
        "wal_valid": 20,
        "backups": 2,
        "files_checked": 2935,
        "files_valid": 2935,
        "problems": [],
    }


def test_a_verify_that_found_damage_names_each_archive_and_backup():
    verified = pitr.read_verify(VERIFY_DAMAGED)
    assert not verified["ok"] and (verified["wal_valid"], verified["files_valid"]) == (19, 2933)
    assert verified["problems"] == [
        "archive 15-1: 19 of 20 WAL files valid (other: 1)",
        "backup 20261207-113729F invalid: 1314 of 1315 files valid (missing: 1)",
        "backup 20261207-113729F_20261207-113851D invalid: 1619 of 1620 files valid (missing: 1)",
    ]


def test_an_error_status_without_details_is_still_a_problem():
    assert pitr.read_verify("stanza: main\nstatus: error\n")["problems"] == ["status error"]


def test_a_verify_without_a_status_is_unreadable():
    with pytest.raises(Failure) as raised:
        pitr.read_verify("")
    assert raised.value.code == Exit.INTERNAL and "said nothing readable" in raised.value.message


@pytest.fixture
def verify_side():
    runner = FakeRunner()
    said = []
    settings = config.Pitr("main", "/usr/lib/postgresql/15/bin", "/var/lib/x/shop", 5499)
    side = pitr.VerifySide(pitr.Root(runner, settings, 1, (2, 3), said.append))
    side.runner, side.said = runner, said
    return side


def test_the_verify_runs_as_postgres_and_answers_once(verify_side):
    verify_side.runner.on(lambda call: call.argv[-1] == "verify", stdout=VERIFY_OK.encode())
    served = pitr.Served()
    answer = verify_side.handle(pitr.ASK_VERIFY, served, None)["verified"]
    (call,) = verify_side.runner.calls
    assert call.argv == [
        "runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=main", "--repo=1", "--output=text", "--verbose",
        "verify",
    ]  # fmt: skip
    assert answer["ok"] and answer["backups"] == 2 and isinstance(answer["seconds"], float)
    assert answer["repositories"] == 1
    assert verify_side.said == ["pgBackRest verifies the local repository of stanza main"]
    assert verify_side.handle(pitr.ASK_VERIFY, served, None) is None
    assert verify_side.handle(pitr.ASK_STATUS, pitr.Served(), None) is None
    verify_side.cleanup(served)


def test_a_verify_that_cannot_run_is_a_bad_backup(verify_side):
    verify_side.runner.on(lambda call: call.argv[-1] == "verify", fail=28, stderr="ERROR: [028]: backup in progress")
    answer = verify_side.handle(pitr.ASK_VERIFY, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.BAD_BACKUP
    assert answer["message"].startswith("pgBackRest's verify of the local repository failed (")


@pytest.fixture
def verify_both():
    """VerifySide with the local repository and the bucket (pgBackRest's repo1 and repo2)."""
    runner = FakeRunner()
    said = []
    settings = config.Pitr("main", "/usr/lib/postgresql/15/bin", "/var/lib/x/shop", 5499, repositories=(1, 2))
    side = pitr.VerifySide(pitr.Root(runner, settings, 1, (2, 3), said.append))
    side.runner, side.said = runner, said
    return side


def verifies(repo):
    return lambda call: call.argv[-1] == "verify" and f"--repo={repo}" in call.argv


def test_each_repository_is_verified_and_the_figures_add_up(verify_both):
    verify_both.runner.on(verifies(1), stdout=VERIFY_OK.encode())
    verify_both.runner.on(verifies(2), stdout=VERIFY_DAMAGED.encode())
    answer = verify_both.handle(pitr.ASK_VERIFY, pitr.Served(), None)["verified"]
    assert [c.argv[6] for c in verify_both.runner.calls] == ["--repo=1", "--repo=2"]
    assert verify_both.said == [
        "pgBackRest verifies the local repository of stanza main",
        "pgBackRest verifies the off-site repository 2 of stanza main",
    ]
    alone = (pitr.read_verify(VERIFY_OK), pitr.read_verify(VERIFY_DAMAGED))
    assert not answer["ok"] and answer["repositories"] == 2
    for key in ("backups", "files_checked", "files_valid", "wal_checked", "wal_valid"):
        assert answer[key] == alone[0][key] + alone[1][key], key
    # Only the bucket's damage, each problem naming its repository.
    assert answer["problems"] == [f"off-site repository 2: {p}" for p in alone[1]["problems"]]


def bucket_unverifiable(side, local):
    """The answer when the local repository's verify says LOCAL and the bucket's cannot run."""
    side.runner.on(verifies(1), stdout=local.encode())
    side.runner.on(verifies(2), fail=39, stderr="ERROR: [039]: HTTP request failed with 503")
    return side.handle(pitr.ASK_VERIFY, pitr.Served(), None)["failed"]


def test_a_bucket_whose_verify_cannot_run_is_an_off_site_failure_after_the_local_one(verify_both):
    answer = bucket_unverifiable(verify_both, VERIFY_OK)
    assert answer["code"] == Exit.OFFSITE_FAILED
    assert answer["message"].startswith("pgBackRest's verify of the off-site repository 2 failed (")
    assert answer["message"].endswith("; the local repository verified whole")


def test_local_damage_is_not_lost_behind_a_bucket_that_cannot_be_verified(verify_both):
    answer = bucket_unverifiable(verify_both, VERIFY_DAMAGED)
    assert answer["code"] == Exit.BAD_BACKUP
    assert answer["message"].startswith("pgBackRest's verify finds damage: local repository: ")
    assert "; and pgBackRest's verify of the off-site repository 2 failed (" in answer["message"]


def test_a_damaged_local_repository_is_named_as_such(verify_both):
    verify_both.runner.on(verifies(1), stdout=VERIFY_DAMAGED.encode())
    verify_both.runner.on(verifies(2), stdout=VERIFY_OK.encode())
    answer = verify_both.handle(pitr.ASK_VERIFY, pitr.Served(), None)["verified"]
    assert answer["problems"] and all(p.startswith("local repository: ") for p in answer["problems"])


# --- two repositories: the local one, then the bucket ------------------------------------------


def two_repositories_info(*backups):
    """info of a stanza whose BACKUPS are (label, kind, repository, days old)."""
    entries = [
        {
            "label": label,
            "type": kind,
            "timestamp": {"stop": AUTO_NOW - int(days * 86400)},
            "database": {"id": 1, "repo-key": repo},
            "archive": {"stop": "000000010000000000000001"},
            "info": {"size": 10 << 20, "repository": {"delta": repo << 20}},
        }
        for label, kind, repo, days in backups
    ]
    return json.dumps([{"name": "main", "backup": entries}]).encode()


@pytest.fixture
def two_sides(backup_side):
    backup_side.root.settings = config.Pitr(
        "main", "/usr/lib/postgresql/15/bin", "/var/lib/x/shop", 5499, repositories=(1, 2)
    )
    backup_side.kind = "auto"
    return backup_side


def test_each_repository_gets_its_own_backup_the_local_one_first(two_sides, monkeypatch):
    monkeypatch.setattr(pitr.time, "time", lambda: AUTO_NOW)
    before = (("1F", "full", 1, 2), ("2F", "full", 2, 9))
    # info: before the local backup, after it (and before the bucket's), after the bucket's.
    two_sides.runner.on(lambda call: call.argv[-1] == "info", times=1, stdout=two_repositories_info(*before))
    after_local = (*before, ("1F_1D", "diff", 1, 0))
    two_sides.runner.on(lambda call: call.argv[-1] == "info", times=2, stdout=two_repositories_info(*after_local))
    two_sides.runner.on(
        lambda call: call.argv[-1] == "info", stdout=two_repositories_info(*after_local, ("3F", "full", 2, 0))
    )
    # Since the local full backup, WAL of 6 MiB: 60 % of the cluster's 10 MiB.
    two_sides.runner.on(lists_archive, argv_contains="--repo=1", stdout=wal_listing((2, 6 << 20)))
    done = two_sides.handle(pitr.ASK_BACKUP, pitr.Served(), None)["done"]
    taken = [call.argv[6:8] for call in two_sides.runner.calls if call.argv[-1] == "backup"]
    # The local repository's full backup is 2 days old, the bucket's 9: each decides alone.
    assert taken == [["--repo=1", "--type=diff"], ["--repo=2", "--type=full"]]
    assert (done["label"], done["repository"], done["backups"]) == ("1F_1D", 1, 2)
    assert [(o["label"], o["repository"], o["repository_bytes"]) for o in done["offsite"]] == [("3F", 2, 2 << 20)]
    assert two_sides.said[1] == (
        "pgBackRest takes a full backup of the cluster (stanza main, off-site repository 2): the newest full "
        "backup is 9.0 days old (db_backup_pitr_full_every_days 7)"
    )


def test_an_offsite_backup_that_fails_leaves_the_local_one_standing(two_sides):
    two_sides.runner.on(lambda call: call.argv[-1] == "info", stdout=two_repositories_info(("1F", "full", 1, 0)))
    two_sides.runner.on(lambda call: "--repo=2" in call.argv and call.argv[-1] == "backup", fail=39,
                        stderr="ERROR: [039]: HTTP request failed")  # fmt: skip
    answer = two_sides.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.OFFSITE_FAILED
    assert answer["message"].startswith("pgBackRest's full backup (stanza main, off-site repository 2) failed (")
    assert answer["message"].endswith("; the backup 1F in the local repository stands")


def test_a_local_backup_that_fails_stops_before_the_bucket(two_sides):
    two_sides.runner.on(lambda call: call.argv[-1] == "info", stdout=two_repositories_info())
    two_sides.runner.on(lambda call: call.argv[-1] == "backup", fail=56, stderr="ERROR: [056]")
    answer = two_sides.handle(pitr.ASK_BACKUP, pitr.Served(), None)["failed"]
    assert answer["code"] == Exit.DUMP_FAILED
    assert [c.argv[6] for c in two_sides.runner.calls if c.argv[-1] == "backup"] == ["--repo=1"]
