"""Switching from root to the project user: the order of the calls and each
refusal with the os functions replaced, then a real switch to 'nobody' in a
forked child when the tests run as root."""

import grp
import json
import os
import pathlib
import pwd
import sys
from typing import NamedTuple

import pytest

ENGINE = pathlib.Path(__file__).resolve().parents[1]
if str(ENGINE) not in sys.path:
    sys.path.insert(0, str(ENGINE))

from djangoops import privileges  # noqa: E402
from djangoops.errors import Exit, Failure  # noqa: E402


class Passwd(NamedTuple):
    """pwd.struct_passwd's fields. (Instances of the real one kept in a module's
    globals until the interpreter ends make its finalization fail when pwd was
    imported by another test module first.)"""

    pw_name: str
    pw_passwd: str
    pw_uid: int
    pw_gid: int
    pw_gecos: str
    pw_dir: str
    pw_shell: str


SHOP = Passwd("shop", "x", 1500, 1500, "", "/home/shop", "/bin/bash")
ROOTISH = Passwd("toor", "x", 0, 0, "", "/root", "/bin/bash")


class FakeOs:
    """Records the identity calls; uid starts as EUID, and setuid(0) after a
    drop fails unless REGAIN says the kernel let it through."""

    def __init__(self, monkeypatch, euid=0, regain=False, fail=None, resuid=None):
        self.calls = []
        self.euid = euid
        self.regain = regain
        self.fail = fail
        self.resuid = resuid
        self.gid = None
        for name in ("initgroups", "setgid", "setuid", "geteuid", "getresuid", "getresgid", "umask"):
            monkeypatch.setattr(privileges.os, name, getattr(self, name))
        monkeypatch.setattr(privileges.os, "environ", {"HOME": "/root", "USER": "root", "PATH": "/usr/bin"})
        users = {"shop": SHOP, "toor": ROOTISH}
        by_uid = {1500: SHOP, 0: Passwd("root", "x", 0, 0, "", "/root", "/bin/bash")}
        monkeypatch.setattr(privileges.pwd, "getpwnam", lambda name: users[name])
        monkeypatch.setattr(privileges.pwd, "getpwuid", lambda uid: by_uid[uid])
        groups = {"backup": grp.struct_group(("backup", "x", 34, []))}
        monkeypatch.setattr(privileges.grp, "getgrnam", lambda name: groups[name])

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if self.fail == name:
            raise PermissionError(1, "Operation not permitted")

    def initgroups(self, user, gid):
        self._call("initgroups", user, gid)

    def setgid(self, gid):
        self._call("setgid", gid)
        self.gid = gid

    def setuid(self, uid):
        if uid == 0 and self.euid != 0 and not self.regain:
            self.calls.append(("setuid", 0))
            raise PermissionError(1, "Operation not permitted")
        self._call("setuid", uid)
        self.euid = uid

    def geteuid(self):
        return self.euid

    def getresuid(self):
        return self.resuid or (self.euid,) * 3

    def getresgid(self):
        return (self.gid,) * 3

    def umask(self, mask):
        self.calls.append(("umask", mask))
        return 0o022


def test_drop_order_and_environment(monkeypatch):
    fake = FakeOs(monkeypatch)
    entry = privileges.drop_to("shop")
    assert entry is SHOP
    assert fake.calls == [
        ("initgroups", "shop", 1500),
        ("setgid", 1500),
        ("setuid", 1500),
        ("setuid", 0),
        ("umask", 0o077),
    ]
    assert privileges.os.environ == {"HOME": "/home/shop", "USER": "shop", "LOGNAME": "shop", "PATH": "/usr/bin"}


def test_drop_with_a_group(monkeypatch):
    fake = FakeOs(monkeypatch)
    privileges.drop_to("shop", "backup")
    assert fake.calls[:2] == [("initgroups", "shop", 34), ("setgid", 34)]


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("ghost", None, "the project user ghost does not exist"),
        ("shop", "nogroup-here", "the project group nogroup-here does not exist"),
        ("toor", None, "the project user toor has uid 0; the commands do not run as root"),
    ],
)
def test_drop_refuses_missing_or_root(monkeypatch, user, group, message):
    users = {"shop": SHOP, "toor": ROOTISH}

    def getpwnam(name):
        return users[name]

    fake = FakeOs(monkeypatch)
    monkeypatch.setattr(privileges.pwd, "getpwnam", getpwnam)
    with pytest.raises(Failure) as refused:
        privileges.drop_to(user, group)
    assert refused.value.code == Exit.CONFIG
    assert refused.value.message == message
    assert fake.calls == []


@pytest.mark.parametrize("failing", ["initgroups", "setgid", "setuid"])
def test_drop_failing_call(monkeypatch, failing):
    fake = FakeOs(monkeypatch, fail=failing)
    with pytest.raises(Failure) as failed:
        privileges.drop_to("shop")
    assert failed.value.code == Exit.INTERNAL
    assert failed.value.message == "could not switch to the user shop (Operation not permitted)"
    assert fake.calls[-1][0] == failing
    assert privileges.os.environ["HOME"] == "/root"


def test_drop_refuses_when_root_comes_back(monkeypatch):
    FakeOs(monkeypatch, regain=True)
    with pytest.raises(Failure) as failed:
        privileges.drop_to("shop")
    assert failed.value.code == Exit.INTERNAL
    assert "root could be taken back" in failed.value.message


def test_drop_refuses_a_saved_root_uid(monkeypatch):
    FakeOs(monkeypatch, resuid=(1500, 1500, 0))
    with pytest.raises(Failure) as failed:
        privileges.drop_to("shop")
    assert failed.value.code == Exit.INTERNAL
    assert failed.value.message == "switching to the user shop left another user or group id in place"


def test_is_root_and_current_user(monkeypatch):
    fake = FakeOs(monkeypatch, euid=1500)
    assert not privileges.is_root()
    assert privileges.current_user() == "shop"
    fake.euid = 0
    assert privileges.is_root()
    assert privileges.current_user() == "root"
    fake.euid = 4242
    assert privileges.current_user() == "4242"


def test_require_project_user_or_root(monkeypatch):
    fake = FakeOs(monkeypatch, euid=1500)
    privileges.require_project_user_or_root("shop")
    fake.euid = 0
    privileges.require_project_user_or_root("shop")
    fake.euid = 4242
    with pytest.raises(Failure) as refused:
        privileges.require_project_user_or_root("shop")
    assert refused.value.code == Exit.USAGE
    assert refused.value.message == "run this as shop (or root), not 4242"
    with pytest.raises(Failure) as refused:
        privileges.require_project_user_or_root("ghost")
    assert refused.value.message == "run this as ghost (or root), not 4242"


def test_require_accepts_another_name_of_the_same_uid(monkeypatch):
    FakeOs(monkeypatch, euid=1500)
    alias = Passwd("shop2", "x", 1500, 1500, "", "/home/shop", "/bin/bash")
    monkeypatch.setattr(privileges.pwd, "getpwnam", lambda name: alias)
    privileges.require_project_user_or_root("shop2")


def test_run_as_project_user(monkeypatch):
    fake = FakeOs(monkeypatch, euid=1500)
    assert privileges.run_as_project_user("shop") is None
    assert fake.calls == []
    fake.euid = 0
    assert privileges.run_as_project_user("shop", "backup") is SHOP
    assert ("setuid", 1500) in fake.calls
    fake.euid = 4242
    with pytest.raises(Failure) as refused:
        privileges.run_as_project_user("shop")
    assert refused.value.code == Exit.USAGE


def test_run_as_project_user_root_never_stays_root(monkeypatch):
    FakeOs(monkeypatch, euid=0)
    with pytest.raises(Failure) as refused:
        privileges.run_as_project_user("toor")
    assert refused.value.code == Exit.CONFIG


@pytest.mark.skipif(os.geteuid() != 0, reason="a real switch needs root")
def test_real_drop_in_a_forked_child():
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's report is what is checked
        os.close(read_end)
        report = {}
        try:
            entry = privileges.drop_to("nobody")
            report["entry"] = entry.pw_name
            report["resuid"] = os.getresuid()
            report["resgid"] = os.getresgid()
            report["groups"] = sorted(os.getgroups())
            report["env"] = [os.environ.get(k) for k in ("HOME", "USER", "LOGNAME")]
            report["umask"] = os.umask(0o077)
            try:
                os.setuid(0)
                report["setuid0"] = "worked"
            except PermissionError:
                report["setuid0"] = "refused"
            try:
                os.setgid(0)
                report["setgid0"] = "worked"
            except PermissionError:
                report["setgid0"] = "refused"
        except BaseException as exc:
            report["error"] = repr(exc)
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        report = json.loads(f.read())
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == {
        "entry": "nobody",
        "resuid": [nobody.pw_uid] * 3,
        "resgid": [nobody.pw_gid] * 3,
        "groups": sorted({nobody.pw_gid, *(g.gr_gid for g in grp.getgrall() if "nobody" in g.gr_mem)}),
        "env": [nobody.pw_dir, "nobody", "nobody"],
        "umask": 0o077,
        "setuid0": "refused",
        "setgid0": "refused",
    }
    # The parent is still root: the switch was the child's alone.
    assert os.geteuid() == 0
