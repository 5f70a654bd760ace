"""The backup directory as the commands see it: which files are a project's backup
sets, how a new set is published, how one is found, checked and removed, and how
much room the next backup needs.

A set NAME (PROJECT_STAMP_KIND.EXT, or PROJECT_D-Day.EXT with the weekday
rotation) is up to four files side by side:

    NAME                   the compressed dump
    NAME.sha256            sha256sum lines: the dump's, then the media archive's
    NAME.manifest.json     what the dump holds (manifest.py)
    BASE.media.tar.Z       MEDIA_ROOT, when the project backs up media

`latest` is a relative symlink to the newest published NAME. Files being written
are hidden (.NAME.partial...) until the publish renames them.

Ported from roles/db_backup/files/db.sh (list_backups, kind_of, stamp_of,
resolve_backup, check_backup, file_signature, media_name_of, remove_backup,
remove_stale_partials, backup_extension, the end of backup_now, point_latest_at,
check_free_space) with the same names, layout and messages, so that sets written
by the shell version are listed, checked and restored here. Every function takes
the directory and project it works on: there is no module state.
"""

import fnmatch
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from djangoops.errors import Exit, Failure
from djangoops.manifest import Manifest, ManifestError, check_sha256

LATEST = "latest"
# The link is made under this name, then renamed over `latest` in one step. Its
# name matches the stale-partial patterns, so a run killed in between leaves
# nothing behind for long.
LATEST_PARTIAL = ".latest.partial"
SIDECARS = (".sha256", ".manifest.json")
PARTIAL_PATTERNS = (".*.partial", ".*.partial.*")


class Checked(NamedTuple):
    """What check_set found good: the set's manifest, and the signature of its
    files as they were checked (check_set_again compares it)."""

    manifest: Manifest
    signature: tuple


class Space(NamedTuple):
    """Free space in the backups directory and what a backup needs, in KiB."""

    avail_kb: int
    need_kb: int


# --- names ----------------------------------------------------------------------------


def set_name_pattern(project):
    """A whole backup set name of PROJECT: PROJECT_STAMP_KIND.EXT or PROJECT_D-Day.EXT.
    Matched to its end, so that project `shop` never takes the sets of `shop2` or
    `shop_x` in a shared directory, nor a sidecar or a partial."""
    return re.compile(
        re.escape(project)
        + r"_(?:(?P<stamp>[0-9]{8}T[0-9]{6}Z)_(?P<kind>daily|weekly|monthly|safety)|(?P<weekday>[0-6]-[A-Za-z]+))"
        r"\.(?:pgdump|sql)\.(?:zst|gz)\Z"
    )


def is_set_name(name, project):
    return set_name_pattern(project).match(name) is not None


def list_sets(directory, project):
    """PROJECT's published sets in DIRECTORY (regular files), newest first: the
    names sort by their stamps. A missing directory holds none."""
    pattern = set_name_pattern(project)
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if pattern.match(e.name) and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(names, reverse=True)


def kind_of(name, project):
    """NAME's kind: daily, weekly, monthly, safety, or weekday for any name that
    carries no stamp."""
    base = name.split(".", 1)[0]
    if re.fullmatch(re.escape(project) + r"_[0-9].*T.*Z_.*", base, re.DOTALL):
        return base.rsplit("_", 1)[1]
    return "weekday"


def stamp_of(name, project):
    """NAME's stamp (YYYYmmddTHHMMSSZ, UTC), or None for a weekday file, whose time
    is its modification time."""
    rest = name.split(".", 1)[0].removeprefix(project + "_")
    if re.fullmatch(r"[0-9].*T.*Z_.*", rest, re.DOTALL):
        return rest.split("_", 1)[0]
    return None


def media_name_of(name):
    """The media archive of dump NAME's set: the dump's two extensions replaced by
    .media.tar and the compression's."""
    base = name.rsplit(".", 1)[0]
    base = base.rsplit(".", 1)[0]
    return f"{base}.media.tar.{name.rsplit('.', 1)[-1]}"


def backup_extension(engine, postgresql_format, compression):
    """The extension of a new dump: pgdump for a PostgreSQL custom-format archive,
    sql for a text dump; then the compression's."""
    data = "pgdump" if engine == "postgresql" and postgresql_format == "custom" else "sql"
    suffix = {"zstd": "zst", "gzip": "gz"}.get(compression)
    if suffix is None:
        raise Failure(Exit.CONFIG, f"the compression is '{compression}', not zstd or gzip")
    return f"{data}.{suffix}"


def partial_path(directory, name):
    """Where file NAME is written before it is published: hidden, and matched by
    remove_stale_partials should the run be killed."""
    return os.path.join(directory, f".{name}.partial")


# --- finding and checking a set -------------------------------------------------------


def latest_name(directory):
    """The name `latest` points at, or "" when there is no link."""
    try:
        return os.path.basename(os.readlink(os.path.join(directory, LATEST)))
    except OSError:
        return ""


def resolve(directory, want=LATEST):
    """The path of published backup WANT (a name, a path whose last part is the
    name, or latest) in DIRECTORY."""
    want = want or LATEST
    if want == LATEST:
        link = os.path.join(directory, LATEST)
        if not os.path.islink(link):
            raise Failure(Exit.BAD_BACKUP, f"there is no latest backup in {directory}")
        try:
            want = os.readlink(link)
        except OSError:
            want = ""  # removed since: like a dangling link, no backup by that name
    name = want.rsplit("/", 1)[-1]
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise Failure(Exit.BAD_BACKUP, f"no backup named {name} in {directory} (list_db_backups.sh lists them)")
    return path


def file_signature(path):
    """What identifies the files of a set as they are: device, inode, size,
    modification and change times (ns) of the dump and its sidecars (None for one
    that is missing). A set replaced, rewritten or touched since it was checked
    has another one. Links are not followed, as `stat` does not."""
    signature = []
    for file in (path, *(path + s for s in SIDECARS)):
        try:
            st = os.stat(file, follow_symlinks=False)
        except OSError:
            signature.append(None)
        else:
            signature.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(signature)


def check_set(path, project, engine, test_compression=None):
    """Check the set at PATH (in the backups directory, or a fetch's staging one)
    before anything reads it: both sidecars there, every file its .sha256 names
    matches, the dump and media archive decompress, and the manifest is readable
    and of PROJECT and ENGINE. Returns Checked; raises Failure(BAD_BACKUP).

    TEST_COMPRESSION(path) -> bool is the caller's compression test (zstd -t or
    gzip -t, run elsewhere); None skips it. It runs while the checksum is
    computed in a thread, each taking a core, as the shell ran the two at once.
    A failing checksum is reported first; the Failure's __cause__ carries its
    reason (which file, and why) for the log."""
    name = os.path.basename(path)
    directory = os.path.dirname(path)
    if not os.path.isfile(path + ".sha256"):
        raise Failure(Exit.BAD_BACKUP, f"{name} has no checksum file; refusing to use it")
    if not os.path.isfile(path + ".manifest.json"):
        raise Failure(Exit.BAD_BACKUP, f"{name} has no manifest; refusing to use it")
    with ThreadPoolExecutor(max_workers=1) as pool:
        sums = pool.submit(check_sha256, path + ".sha256")
        compressed = test_compression(path) if test_compression else True
        reason = sums.result()
    if reason is not None:
        raise Failure(
            Exit.BAD_BACKUP, f"{name} does not match its sha256 checksum: the file is damaged; refusing to use it"
        ) from ValueError(reason)
    if not compressed:
        raise Failure(Exit.BAD_BACKUP, f"{name} fails its compression check: the file is damaged")
    media = os.path.join(directory, media_name_of(name))
    if test_compression and os.path.isfile(media) and not test_compression(media):
        raise Failure(Exit.BAD_BACKUP, f"{os.path.basename(media)} fails its compression check: the file is damaged")
    try:
        manifest = Manifest.read(path + ".manifest.json")
    except ManifestError as e:
        raise Failure(Exit.BAD_BACKUP, f"the manifest of {name} cannot be read") from e
    if manifest.project != project or manifest.engine != engine:
        raise Failure(
            Exit.BAD_BACKUP,
            f"{name} belongs to project '{manifest.project}' ({manifest.engine}), not {project} ({engine}); "
            "refusing to use it",
        )
    return Checked(manifest, file_signature(path))


def check_set_again(path, checked, project, engine, test_compression=None):
    """After waiting for the lock: CHECKED again if PATH's files are still the
    very ones check_set read, else check_set anew (another run may have pruned,
    replaced or rewritten the set meanwhile)."""
    if checked is not None and file_signature(path) == checked.signature:
        return checked
    return check_set(path, project, engine, test_compression)


# --- publishing and removing ----------------------------------------------------------


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(directory, name, *, media=False, staging=None):
    """Make set NAME visible in DIRECTORY, durable before visible: flush every
    file, rename the sidecars (and media archive) first and the dump last, so
    that a dump never exists without its checksum and manifest, then flush the
    directory. The files come from the partials (.NAME.partial,
    .NAME.partial.sha256, .NAME.partial.manifest.json, and .MEDIA.partial when
    MEDIA) or, with STAGING, from that directory under their own names (a fetch;
    the media archive when it is there). A missing file fails before anything is
    renamed. Returns the published dump's path."""
    media_name = media_name_of(name)
    if staging is None:
        partial = partial_path(directory, name)
        moves = [(partial + s, name + s) for s in SIDECARS]
        if media:
            moves.append((partial_path(directory, media_name), media_name))
        moves.append((partial, name))
    else:
        moves = [(os.path.join(staging, name + s), name + s) for s in SIDECARS]
        if os.path.isfile(os.path.join(staging, media_name)):
            moves.append((os.path.join(staging, media_name), media_name))
        moves.append((os.path.join(staging, name), name))
    for source, _final in moves:
        _fsync(source)
    for source, final in moves:
        os.replace(source, os.path.join(directory, final))
    _fsync(directory)
    return os.path.join(directory, name)


def point_latest_at(directory, name):
    """Point `latest` at NAME in one step: the new link is made aside, then
    renamed over the old one, so that `latest` always exists once it has."""
    temporary = os.path.join(directory, LATEST_PARTIAL)
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    os.symlink(name, temporary)
    os.replace(temporary, os.path.join(directory, LATEST))
    _fsync(directory)


def remove_set(directory, name):
    """Remove set NAME: the dump, its sidecars and its media archive; those
    already gone are no error."""
    for file in (name, *(name + s for s in SIDECARS), media_name_of(name)):
        try:
            os.unlink(os.path.join(directory, file))
        except FileNotFoundError:
            pass


def remove_stale_partials(directory):
    """Remove what killed runs left (.*.partial, .*.partial.*, files or
    directories); only ever called under the lock, so none is being written.
    Returns the names removed, sorted, for the log."""
    removed = []
    try:
        with os.scandir(directory) as entries:
            stale = sorted(
                (e for e in entries if any(fnmatch.fnmatchcase(e.name, p) for p in PARTIAL_PATTERNS)),
                key=lambda e: e.name,
            )
    except FileNotFoundError:
        return removed
    for entry in stale:
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(entry.name)
    return removed


# --- free space -----------------------------------------------------------------------


def space_needed_kb(directory, project, min_free_mb, with_media=True):
    """KiB a new backup needs: 1.5 times the newest set (its dump, and its media
    archive when WITH_MEDIA: not for a safety backup, nor without a media
    directory), and at least MIN_FREE_MB. Sizes are counted in whole KiB, file
    by file, as the shell did."""
    newest_kb = 0
    names = list_sets(directory, project)
    if names:
        newest_kb = os.stat(os.path.join(directory, names[0])).st_size // 1024
        media = os.path.join(directory, media_name_of(names[0]))
        if with_media and os.path.isfile(media):
            newest_kb += os.stat(media).st_size // 1024
    return max(min_free_mb * 1024, newest_kb * 3 // 2)


def free_kb(directory):
    """KiB free in DIRECTORY's file system for an unprivileged user (df's Available)."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize // 1024


def disk_bytes(directory):
    """(free, size) of DIRECTORY's file system in bytes, free as df's Available."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def check_free_space(directory, project, min_free_mb, with_media=True):
    """Refuse a backup (Failure NO_SPACE) when DIRECTORY has less free space than
    space_needed_kb; else return the Space found."""
    need_kb = space_needed_kb(directory, project, min_free_mb, with_media)
    avail_kb = free_kb(directory)
    if avail_kb < need_kb:
        raise Failure(
            Exit.NO_SPACE,
            f"only {avail_kb // 1024} MiB free in {directory}; a backup needs {need_kb // 1024} MiB "
            "(db_backup_min_free_mb, or 1.5 times the newest backup set)",
        )
    return Space(avail_kb, need_kb)
