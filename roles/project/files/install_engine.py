"""Make a root-owned directory hold exactly the engine the role sends, in one module run.

Run by the project role as `python3 -I -c SOURCE LIB_DIR check|apply` with the engine on
standard input: a JSON object of relative path -> text (every module of engine/djangoops).
Prints one JSON object: changed, and the paths it wrote, removed and compiled (or would, with
`check`). Whatever LIB_DIR holds besides the engine goes: a module an earlier version had, or
anything else, must not stay importable. Each file is written beside its place and renamed over
it, so a module is never seen half written, and each is byte-compiled as root (the commands run
as the project user, who cannot write the cache). A run that stops half way is completed by the
next one, which compares the files themselves rather than a record of them.
"""

import importlib.util
import json
import os
import py_compile
import stat
import sys

DIR_MODE = 0o755
FILE_MODE = 0o644


class Refused(Exception):
    """Input or a directory that the installer will not work with."""


def check_bundle(bundle):
    """The bundle's paths, refused unless each is a relative .py path with no way out."""
    if not isinstance(bundle, dict) or not bundle:
        raise Refused("the engine sent is not a non-empty object of path -> text")
    for path, text in bundle.items():
        parts = path.split("/")
        if not path.endswith(".py") or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise Refused(f"the engine sent holds a path that is not a module below the directory: {path!r}")
        if not isinstance(text, str):
            raise Refused(f"the engine sent holds no text for {path}")
    return bundle


def check_root(lib):
    """LIB_DIR must be a real directory, not a link, that only its owner can write."""
    try:
        info = os.lstat(lib)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(f"{lib} is not a directory")
    if info.st_mode & 0o022 or info.st_uid != os.geteuid():
        raise Refused(f"{lib} is writable by others than its owner, or not this user's: refusing to install there")
    return True


def wanted_dirs(bundle):
    """Every directory the bundle's files need, parents first."""
    dirs = set()
    for path in bundle:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def present(lib):
    """What LIB_DIR holds now: (directories, other entries), relative, caches left out."""
    dirs, entries = set(), set()
    for top, subdirs, files in os.walk(lib):
        rel = os.path.relpath(top, lib)
        prefix = "" if rel == "." else rel + "/"
        for name in list(subdirs):
            full = os.path.join(top, name)
            if name == "__pycache__" and not os.path.islink(full):
                subdirs.remove(name)
            elif os.path.islink(full):
                subdirs.remove(name)
                entries.add(prefix + name)
            else:
                dirs.add(prefix + name)
        entries.update(prefix + name for name in files)
    return dirs, entries


def owned_right(path, mode):
    info = os.lstat(path)
    right_owner = os.geteuid() != 0 or (info.st_uid, info.st_gid) == (0, 0)
    return right_owner and stat.S_IMODE(info.st_mode) == mode


def cache_current(source):
    """True when the byte-code cache beside SOURCE is the one Python would use for it."""
    cache = importlib.util.cache_from_source(source)
    try:
        with open(cache, "rb") as f:
            header = f.read(16)
        info = os.stat(source)
    except OSError:
        return False
    return (
        len(header) == 16
        and header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0
        and int.from_bytes(header[8:12], "little") == int(info.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == info.st_size & 0xFFFFFFFF
    )


def plan(lib, bundle):
    """What must change so that LIB_DIR holds the bundle: (dirs to make or fix, files to
    write, entries to remove, modules to compile)."""
    exists = check_root(lib)
    dirs_now, entries_now = present(lib) if exists else (set(), set())
    make = []
    for d in wanted_dirs(bundle):
        full = os.path.join(lib, d)
        if d not in dirs_now or not owned_right(full, DIR_MODE):
            make.append(d)
    write = []
    for path, text in sorted(bundle.items()):
        full = os.path.join(lib, path)
        if path not in entries_now or not owned_right(full, FILE_MODE):
            write.append(path)
            continue
        with open(full, "rb") as f:
            if f.read() != text.encode("utf-8"):
                write.append(path)
    remove = sorted(entries_now - set(bundle))
    remove += sorted(d for d in dirs_now - set(wanted_dirs(bundle)))
    compile_ = sorted(p for p in bundle if p in write or not cache_current(os.path.join(lib, p)))
    return make, write, remove, compile_


def remove_entry(full):
    if os.path.isdir(full) and not os.path.islink(full):
        for top, subdirs, files in os.walk(full, topdown=False):
            for name in files:
                os.unlink(os.path.join(top, name))
            for name in subdirs:
                sub = os.path.join(top, name)
                (os.unlink if os.path.islink(sub) else os.rmdir)(sub)
        os.rmdir(full)
    elif os.path.lexists(full):
        os.unlink(full)


def remove_stale_caches(lib, bundle):
    """Byte code of modules the bundle no longer has."""
    for d in ["", *wanted_dirs(bundle)]:
        cache_dir = os.path.join(lib, d, "__pycache__")
        if not os.path.isdir(cache_dir) or os.path.islink(cache_dir):
            continue
        modules = {os.path.basename(p)[:-3] for p in bundle if os.path.dirname(p) == d}
        for name in os.listdir(cache_dir):
            if name.split(".")[0] not in modules:
                remove_entry(os.path.join(cache_dir, name))


def set_owner(path, mode):
    if os.geteuid() == 0:
        os.chown(path, 0, 0, follow_symlinks=False)
    os.chmod(path, mode)


def apply(lib, bundle, make, write, remove, compile_):
    if not check_root(lib):
        raise Refused(f"{lib} does not exist")
    for entry in remove:
        remove_entry(os.path.join(lib, entry))
    for d in make:
        full = os.path.join(lib, d)
        if os.path.lexists(full) and (os.path.islink(full) or not os.path.isdir(full)):
            os.unlink(full)
        os.makedirs(full, mode=DIR_MODE, exist_ok=True)
        set_owner(full, DIR_MODE)
    for path in write:
        full = os.path.join(lib, path)
        temporary = os.path.join(os.path.dirname(full), f".{os.path.basename(full)}.new")
        if os.path.lexists(temporary):
            os.unlink(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(bundle[path].encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        set_owner(temporary, FILE_MODE)
        if os.path.isdir(full) and not os.path.islink(full):
            remove_entry(full)
        os.replace(temporary, full)
    remove_stale_caches(lib, bundle)
    for path in compile_:
        full = os.path.join(lib, path)
        py_compile.compile(full, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        set_owner(importlib.util.cache_from_source(full), FILE_MODE)


def main(argv, stdin):
    if len(argv) != 2 or argv[1] not in ("check", "apply") or not os.path.isabs(argv[0]):
        raise Refused("usage: install_engine LIB_DIR check|apply (LIB_DIR absolute), the engine on stdin")
    lib = argv[0].rstrip("/") or "/"
    try:
        bundle = check_bundle(json.loads(stdin))
    except ValueError as exc:
        raise Refused(f"the engine sent is not JSON: {exc}") from exc
    make, write, remove, compile_ = plan(lib, bundle)
    if argv[1] == "apply":
        apply(lib, bundle, make, write, remove, compile_)
    changed = bool(make or write or remove or compile_)
    return {"changed": changed, "directories": make, "written": write, "removed": remove, "compiled": compile_}


if __name__ == "__main__":
    try:
        print(json.dumps(main(sys.argv[1:], sys.stdin.read())))
    except (Refused, OSError, py_compile.PyCompileError) as exc:
        print(f"install_engine: {exc}", file=sys.stderr)
        sys.exit(1)
