"""What the commands share (commands/__init__.py and commands/common.py): the
argument parser, sizes as numfmt --to=iec prints them, the lock options, the
compression stages and tests, the checks of a set, the media file count, the
no-space hint."""

import os
import types

import pytest
from command_helpers import (
    PROJECT,
    install_engine,
    make_set,
)
from djangoops import sets
from djangoops.commands import common, parse, whole_seconds
from djangoops.context import Stop
from djangoops.errors import Exit, Failure
from djangoops.runner import DEVNULL, Stage
from fakes import FakeRunner

USAGE = "Usage: thing.sh [--yes] [--lock-wait SECONDS] [NAME]"
NAME = f"{PROJECT}_20251209T020000Z_daily.pgdump.zst"


# --- parse -------------------------------------------------------------------------------------------


def parse_thing(args):
    return parse(args, USAGE, flags=("--yes", "--no-offsite"), options={"--lock-wait": "lock_wait"}, positional=1)


def test_parse_flags_options_and_positionals():
    options = parse_thing(["--yes", "backup.zst", "--lock-wait", "30", "-q"])
    assert options.yes is True
    assert options.no_offsite is False
    assert options.lock_wait == "30"
    assert options.quiet is True
    assert options.positional == ["backup.zst"]
    defaults = parse_thing([])
    assert (defaults.yes, defaults.lock_wait, defaults.quiet, defaults.positional) == (False, None, False, [])
    assert parse_thing(["--quiet", "--lock-wait", "-5"]).lock_wait == "-5"  # the value is the option's


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage_and_stops_with_0(flag, capsys):
    with pytest.raises(Stop) as stop:
        parse_thing(["--yes", flag, "--bogus"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == USAGE + "\n"


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["--bogus"], USAGE + "\n"),
        (["-x"], USAGE + "\n"),
        (["-"], USAGE + "\n"),
        (["one", "two"], USAGE + "\n"),
        (["--lock-wait"], "--lock-wait needs a value\n" + USAGE + "\n"),
    ],
)
def test_bad_arguments_print_the_usage_on_stderr_and_stop_with_2(args, err, capsys):
    with pytest.raises(Stop) as stop:
        parse_thing(args)
    assert stop.value.code == Exit.USAGE
    assert capsys.readouterr() == ("", err)


def test_no_positional_is_taken_unless_allowed(capsys):
    with pytest.raises(Stop):
        parse(["name"], USAGE)
    assert parse([], USAGE).positional == []


def test_whole_seconds():
    assert whole_seconds("30", "--timeout") == 30
    assert whole_seconds("0", "--timeout") == 0
    for value, lowest, message in [
        (None, 0, "--timeout takes whole seconds, got 'None'"),
        ("1.5", 0, "--timeout takes whole seconds, got '1.5'"),
        ("0", 1, "--timeout takes whole seconds (at least 1), got '0'"),
    ]:
        with pytest.raises(Failure) as caught:
            whole_seconds(value, "--timeout", lowest)
        assert (caught.value.code, caught.value.message) == (Exit.USAGE, message)


# --- lock options ----------------------------------------------------------------------------------------


def test_lock_wait():
    assert common.lock_wait(None, 600) == 600
    assert common.lock_wait("0", 600) == 0
    assert common.lock_wait("007", 600) == 7
    for value in ("", "-1", "1.5", "ten", " 5"):
        with pytest.raises(Failure) as caught:
            common.lock_wait(value, 600)
        assert caught.value.code == Exit.USAGE
        assert caught.value.message == f"the lock wait takes whole seconds, got '{value}'"


def test_lock_timeout():
    assert common.lock_timeout(None, 30) == 30
    assert common.lock_timeout("1", 30) == 1
    for value in ("0", "", "x", "-3"):
        with pytest.raises(Failure) as caught:
            common.lock_timeout(value, 30)
        assert caught.value.message == f"--lock-timeout takes whole seconds (at least 1), got '{value}'"
    with pytest.raises(Failure):
        common.lock_timeout(None, 0)  # a default below 1 is refused too


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (common.lock_wait, "the lock wait takes whole seconds, got '{}'"),
        (common.lock_timeout, "--lock-timeout takes whole seconds (at least 1), got '{}'"),
        (lambda value, default: whole_seconds(value, "--timeout"), "--timeout takes whole seconds, got '{}'"),
    ],
    ids=["lock_wait", "lock_timeout", "whole_seconds"],
)
# "²" str.isdigit() takes and int() refuses; Arabic-Indic digits, which int() takes.
@pytest.mark.parametrize("value", ["²", "1²", "\u0661\u0660", "5\n"])
def test_a_superscript_digit_is_a_usage_error(check, message, value):
    with pytest.raises(Failure) as caught:
        check(value, 1)
    assert (caught.value.code, caught.value.message) == (Exit.USAGE, message.format(value))


def test_is_whole_takes_ascii_digits_only():
    assert common.is_whole("0")
    assert common.is_whole("007")
    assert common.is_whole("1234567890")
    for value in (None, "", " 1", "1 ", "5\n", "+1", "-1", "1.0", "1_000", "²", "\u0661", "\uff11"):
        assert not common.is_whole(value), value


# --- sizes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "numfmt"),
    [
        # What `numfmt --to=iec` prints for each (coreutils 9).
        (0, "0"),
        (1, "1"),
        (1023, "1023"),
        (1024, "1.0K"),
        (1025, "1.1K"),
        (1536, "1.5K"),
        (10239, "10K"),
        (10240, "10K"),
        (10241, "11K"),
        (1048575, "1.0M"),
        (1048576, "1.0M"),
        (168 * 2**20, "168M"),
        (2**30 - 1, "1.0G"),
        (2**30, "1.0G"),
        (10**12, "932G"),
        (2**40, "1.0T"),
        (2**60, "1.0E"),
        (1023 * 2**60, "1023E"),
    ],
)
def test_iec_matches_numfmt(size, numfmt):
    assert common.iec(size) == numfmt
    assert common.iec(str(size)) == numfmt


@pytest.mark.parametrize(
    ("size", "numfmt"),
    [
        # Where floating point went wrong: one byte over a tenth rounds up.
        (17 * 2**50 // 10 + 1, "1.8P"),
        (17 * 2**50 // 10, "1.7P"),
        (2**50, "1.0P"),
        (2**50 + 1, "1.1P"),
        (10 * 2**50 - 1, "10P"),
    ],
)
def test_iec_rounds_up_like_numfmt_for_petabyte_sizes(size, numfmt):
    assert common.iec(size) == numfmt


# --- compression -----------------------------------------------------------------------------------------------


def database(**values):
    defaults = {"compression": "zstd", "zstd_level": 3, "threads": 2}
    defaults.update(values)
    return types.SimpleNamespace(**defaults)


def test_compress_stage():
    no_repos = types.SimpleNamespace(repositories=())
    with_repos = types.SimpleNamespace(repositories=("nas",))
    assert common.compress_stage(database(), no_repos) == Stage(["zstd", "-q", "-c", "-3", "-T2"], name="zstd")
    assert common.compress_stage(database(), with_repos).argv[-1] == "--rsyncable"
    assert common.compress_stage(database(compression="gzip"), with_repos) == Stage(["gzip", "-c"], name="gzip")


def test_decompress_stage_and_test_argv_by_extension():
    assert common.decompress_stage("/b/x.sql.zst") == Stage(
        ["zstd", "-q", "-d", "-c", "--", "/b/x.sql.zst"], name="zstd"
    )
    assert common.decompress_stage("/b/x.sql.gz", ok_codes=(0, 1)) == Stage(
        ["gzip", "-d", "-c", "--", "/b/x.sql.gz"], name="gzip", ok_codes=(0, 1)
    )
    # A partial is named by the set it becomes.
    assert common.decompress_stage("/b/.x.partial", "x.pgdump.gz").argv[0] == "gzip"
    with pytest.raises(Failure) as caught:
        common.decompress_stage("/b/x.sql.bz2")
    assert (caught.value.code, caught.value.message) == (Exit.BAD_BACKUP, "unknown compression: /b/x.sql.bz2")
    assert common.test_argv("/b/x.zst") == ["zstd", "-q", "-t", "--", "/b/x.zst"]
    assert common.test_argv("/b/.p", "x.sql.gz") == ["gzip", "-t", "--", "/b/.p"]
    assert common.test_argv("/b/x.sql") is None


def test_test_compression():
    fake = FakeRunner()
    fake.on("gzip", fail=1, stderr="gzip: unexpected end of file")
    assert common.test_compression(fake, "/b/x.zst") is True
    assert common.test_compression(fake, "/b/x.gz") is False
    assert common.test_compression(fake, "/b/x.tar") is False
    assert [call.argv for call in fake.calls] == [
        ["zstd", "-q", "-t", "--", "/b/x.zst"],
        ["gzip", "-t", "--", "/b/x.gz"],
    ]
    assert all(call.stdout is DEVNULL and call.timeout == common.TEST_TIMEOUT for call in fake.calls)


def test_start_and_finish_test():
    fake = FakeRunner()
    fake.on("zstd", times=1, fail=1)
    assert common.finish_test(common.start_test(fake, "/b/.p", "x.zst")) is False
    session = common.start_test(fake, "/b/.p", "x.zst")
    assert session.argv == ["zstd", "-q", "-t", "--", "/b/.p"]
    assert common.finish_test(session) is True


# --- sets -------------------------------------------------------------------------------------------------------


def test_check_backup_and_check_backup_again(cmd, monkeypatch):
    make_set(cmd.backups, NAME, b"good")
    ctx = cmd.context("restore_db")
    values = types.SimpleNamespace(engine="postgresql")
    path = str(cmd.backups / NAME)

    checked = common.check_backup(ctx, path, values)

    assert checked.manifest.project == PROJECT
    assert cmd.lines("INFO", "restore_db") == [f"checked {NAME}: sha256 and compression are good"]
    assert common.check_backup_again(ctx, path, values, checked) is checked
    assert len(cmd.fake.calls) == 1  # not tested again
    os.utime(path)  # touched since: checked anew
    again = common.check_backup_again(ctx, path, values, checked)
    assert again is not checked and len(cmd.fake.calls) == 2
    assert common.check_backup_again(ctx, path, values, None).manifest.project == PROJECT
    (cmd.backups / NAME).write_bytes(b"evil")
    with pytest.raises(Failure) as caught:
        common.check_backup_again(ctx, path, values, again)
    assert caught.value.code == Exit.BAD_BACKUP


def test_a_set_of_another_engine_is_refused(cmd):
    make_set(cmd.backups, NAME, engine="mysql")
    with pytest.raises(Failure, match="belongs to project 'shop' \\(mysql\\), not shop \\(postgresql\\)"):
        common.check_backup(
            cmd.context("verify_db"), str(cmd.backups / NAME), types.SimpleNamespace(engine="postgresql")
        )


def test_media_file_count_counts_files_not_directories():
    fake = FakeRunner()
    fake.on("tar", stdout=b"./\n./a.jpg\n./d/\n./d/e/\n./d/e/f.png\n\n./g h.txt\n")
    assert common.media_file_count(fake, "/b/.m.partial", "x.media.tar.gz") == 3
    [call] = fake.calls
    assert call.argv == [["gzip", "-d", "-c", "--", "/b/.m.partial"], ["tar", "-tf", "-"]]


# --- the rest -------------------------------------------------------------------------------------------------------


def test_settings_engine_and_locks(cmd, monkeypatch, held_locks):
    spec = install_engine(monkeypatch)
    ctx = cmd.context("backup_db")
    database, offsite = common.load_settings(ctx)
    assert (database.engine, offsite.repositories) == ("postgresql", ())
    engine = common.engine_for(ctx, database)
    assert engine.connection.name == "shop"
    assert engine.script == "backup_db"
    assert engine.run_dir == ctx.run_dir
    assert spec.calls == [("check_tools",)]
    assert common.backups_dir(ctx) == str(cmd.backups)
    common.lock(ctx, 0)
    common.lock(ctx, 0, offsite=True)
    assert [item.path for item in held_locks] == [str(cmd.backups / ".lock"), str(cmd.backups / ".offsite.lock")]
    with pytest.raises(Failure) as caught:
        common.lock(ctx, 0)
    assert caught.value.code == Exit.LOCKED


def test_mount_point_and_the_no_space_hint(tmp_path, monkeypatch):
    mount = common.mount_point(str(tmp_path))
    assert os.path.ismount(mount)
    assert str(tmp_path).startswith(mount)
    assert common.mount_point("/") == "/"
    for mounted in ("/dev/shm", "/proc", "/sys"):
        if os.path.ismount(mounted):  # another file system: its own mount point, not /
            assert common.mount_point(mounted) == mounted
            break
    monkeypatch.setattr(sets, "free_kb", lambda directory: 2048)
    assert common.no_space_hint(str(tmp_path)) == ""
    monkeypatch.setattr(sets, "free_kb", lambda directory: 1023)
    assert common.no_space_hint(str(tmp_path)) == f" (no space left on {mount})"
    assert common.no_space_hint(str(tmp_path / "gone")) == ""  # cannot tell: no hint


def test_tail():
    assert common.tail("a\n\n  \nb\nc\n", 2) == "b c"
    assert common.tail("", 3) == ""
    assert common.tail("one", 3) == "one"
