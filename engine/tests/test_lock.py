"""The run lock: held, refused, waited for, released, and the two messages
common.sh's acquire_lock gave, with real flock()s."""

import errno
import os
import pathlib
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

ENGINE = pathlib.Path(__file__).resolve().parents[1]
if str(ENGINE) not in sys.path:
    sys.path.insert(0, str(ENGINE))

from djangoops import lock  # noqa: E402
from djangoops.errors import Exit, Failure  # noqa: E402


def test_second_lock_is_refused_then_granted(tmp_path):
    path = tmp_path / ".lock"
    first = lock.Lock(path, 0, "backup_db")
    second = lock.Lock(path, 0, "restore_db")
    first.acquire()
    assert first.held
    with pytest.raises(Failure) as refused:
        second.acquire()
    assert refused.value.code == Exit.LOCKED
    assert refused.value.message == f"another run holds the lock {path}; gave up after waiting 0 s"
    assert not second.held
    first.release()
    assert not first.held
    second.acquire()
    assert second.held
    second.release()


def test_file_is_private_and_untouched(tmp_path):
    path = tmp_path / ".lock"
    with lock.Lock(path, 0) as held:
        assert held.held
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("kept\n")
    with lock.Lock(path, 0):
        pass
    assert path.read_text() == "kept\n"


def test_waits_for_the_holder(tmp_path):
    path = tmp_path / ".lock"
    holder = lock.Lock(path, 0)
    holder.acquire()
    timer = threading.Timer(0.3, holder.release)
    timer.start()
    started = time.monotonic()
    with lock.Lock(path, 5) as waiter:
        assert waiter.held
        took = time.monotonic() - started
    timer.join()
    assert 0.2 <= took < 3


def test_gives_up_after_the_wait(tmp_path):
    path = tmp_path / ".lock"
    now = [100.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    with lock.Lock(path, 0):
        waiter = lock.Lock(path, 1, "verify_db", poll=0.3, clock=lambda: now[0], sleep=sleep)
        with pytest.raises(Failure) as refused:
            waiter.acquire()
    assert refused.value.code == Exit.LOCKED
    assert refused.value.message == f"another run holds the lock {path}; gave up after waiting 1 s"
    # Polls every 0.3 s, the last sleep cut to what is left: never past the wait.
    assert sleeps[:3] == [0.3, 0.3, 0.3]
    assert sleeps[3] == pytest.approx(0.1)
    assert len(sleeps) == 4


def test_child_process_holds_it(tmp_path):
    path = tmp_path / ".lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, sys
                fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                print("held", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(Failure) as refused:
            lock.Lock(path, 0).acquire()
        assert refused.value.code == Exit.LOCKED
        # Released when the child ends, however it ends.
        threading.Timer(0.2, child.stdin.close).start()
        with lock.Lock(path, 5) as waiter:
            assert waiter.held
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_child_does_not_inherit_it(tmp_path):
    path = tmp_path / ".lock"
    held = lock.Lock(path, 0).acquire()
    # A tool started during the run (pg_dump...), even one given every open
    # descriptor, must not keep the lock once the run lets it go.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, close_fds=False
    )
    try:
        held.release()
        with lock.Lock(path, 0) as again:
            assert again.held
    finally:
        child.stdin.close()
        child.wait()


def test_unwritable_directory(tmp_path):
    missing = tmp_path / "db_backups" / ".lock"
    with pytest.raises(Failure) as refused:
        lock.Lock(missing, 10, "backup_db").acquire()
    assert refused.value.code == Exit.CONFIG
    assert refused.value.message == (
        f"cannot open the lock file {missing} (No such file or directory):"
        f" backup_db needs a writable {tmp_path}/db_backups"
    )


def test_relative_path_names_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir(".lock")
    with pytest.raises(Failure) as refused:
        lock.Lock(".lock", 0, "x").acquire()
    assert refused.value.message == "cannot open the lock file .lock (Is a directory): x needs a writable ."


@pytest.mark.parametrize("wait", [-1, 1.5, "10", True, None])
def test_wait_takes_whole_seconds(tmp_path, wait):
    with pytest.raises(Failure) as refused:
        lock.Lock(tmp_path / ".lock", wait)
    assert refused.value.code == Exit.USAGE
    assert refused.value.message == f"the lock wait takes whole seconds, got '{wait}'"


def test_flock_unsupported(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)
    with pytest.raises(Failure) as refused:
        lock.Lock(tmp_path / ".lock", 5, "backup_db").acquire()
    assert refused.value.code == Exit.CONFIG
    assert refused.value.message == (
        f"cannot lock {tmp_path}/.lock (No locks available): backup_db needs a file system with flock"
    )


def test_acquire_twice_and_release_twice(tmp_path):
    held = lock.Lock(tmp_path / ".lock", 0)
    assert held.acquire() is held
    assert held.acquire() is held
    held.release()
    held.release()
    assert not held.held
    with lock.Lock(tmp_path / ".lock", 0):
        pass


def test_released_on_exception(tmp_path):
    path = tmp_path / ".lock"
    with pytest.raises(RuntimeError), lock.Lock(path, 0):
        raise RuntimeError("the run failed")
    with lock.Lock(path, 0) as again:
        assert again.held


def test_release_closes_even_when_unlock_fails(tmp_path, monkeypatch):
    held = lock.Lock(tmp_path / ".lock", 0).acquire()
    fd = held._fd

    def fail(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(lock.fcntl, "flock", fail)
    with pytest.raises(OSError):
        held.release()
    assert not held.held
    with pytest.raises(OSError):
        os.fstat(fd)
