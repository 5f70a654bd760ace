"""Who a command runs as. The commands write files the project user must own
(backups, logs, metrics), so they run as that user; started as root (cron,
systemd, an administrator), they switch to it for good before touching
anything, as common.sh's run_as_project_user did with runuser.
"""

import grp
import os
import pwd

from .errors import Exit, Failure


def is_root():
    return os.geteuid() == 0


def current_user():
    """The name of the effective user, or its number when it has no name (a
    container's arbitrary uid)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def drop_to(user, group=None):
    """Become USER for good: its supplementary groups, then GROUP (default:
    its primary group), then its uid, in that order because only root may
    change groups. Checks that root cannot be taken back, then sets HOME,
    USER and LOGNAME as runuser did and the umask to 077 (backups and logs are
    the project's alone). Returns the user's passwd entry.

    Failure(CONFIG) when USER or GROUP does not exist or is root; Failure
    (INTERNAL) when the switch does not hold. Call it first thing, before the
    command opens a file or starts a process that would stay root's."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Failure(Exit.CONFIG, f"the project user {user} does not exist") from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise Failure(Exit.CONFIG, f"the project group {group} does not exist") from None
    else:
        gid = entry.pw_gid
    if entry.pw_uid == 0:
        # "Dropping" to a uid 0 account would keep every privilege while the
        # log says otherwise.
        raise Failure(Exit.CONFIG, f"the project user {user} has uid 0; the commands do not run as root")
    try:
        os.initgroups(entry.pw_name, gid)
        os.setgid(gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise Failure(Exit.INTERNAL, f"could not switch to the user {user} ({exc.strerror or exc})") from None
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise Failure(Exit.INTERNAL, f"switched to the user {user}, but root could be taken back; stopping")
    if os.getresuid() != (entry.pw_uid,) * 3 or os.getresgid() != (gid,) * 3:
        raise Failure(Exit.INTERNAL, f"switching to the user {user} left another user or group id in place")
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = entry.pw_name
    os.environ["LOGNAME"] = entry.pw_name
    os.umask(0o077)
    return entry


def require_project_user_or_root(user):
    """Refuse to go on as anyone but USER or root: files written as a third
    user would lock the project user out of its own backups."""
    current = current_user()
    if current == user or is_root():
        return
    try:
        if pwd.getpwnam(user).pw_uid == os.geteuid():
            # Another name for the same uid: the files are the user's.
            return
    except KeyError:
        pass
    raise Failure(Exit.USAGE, f"run this as {user} (or root), not {current}")


def run_as_project_user(user, group=None):
    """The start of every command: as USER, nothing to do (None); as root,
    drop_to(USER, GROUP) and return its passwd entry; as anyone else,
    Failure(USAGE)."""
    if is_root():
        return drop_to(user, group)
    require_project_user_or_root(user)
    return None
