"""djangoops.sets: which files of the backups directory are a project's sets (and never
another project's whose name starts the same way), how a set is found, checked,
published, pointed at by `latest` and removed, what killed runs leave and is cleaned
up, and how much free space a backup needs."""

import hashlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from djangoops import sets
from djangoops.errors import Exit, Failure
from djangoops.manifest import ManifestError

DAILY = "shop_20261130T020000Z_daily.pgdump.zst"
MONTHLY = "shop_20261101T020000Z_monthly.pgdump.zst"


def touch(directory, *names, content=b"x"):
    for name in names:
        (directory / name).write_bytes(content)


def make_set(directory, name, project="shop", engine="postgresql", media=None, data=b"dump" * 1000):
    """A set as backup_db.sh publishes it: dump, sha256 sidecar, manifest, media."""
    (directory / name).write_bytes(data)
    lines = [f"{hashlib.sha256(data).hexdigest()}  {name}\n"]
    if media is not None:
        media_name = sets.media_name_of(name)
        (directory / media_name).write_bytes(media)
        lines.append(f"{hashlib.sha256(media).hexdigest()}  {media_name}\n")
    (directory / f"{name}.sha256").write_text("".join(lines))
    (directory / f"{name}.manifest.json").write_text(
        json.dumps({"manifest_version": 1, "project": project, "engine": engine, "tables": {"a": 1}, "rows": 1})
    )
    return directory / name


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        DAILY,
        "shop_20261130T020000Z_weekly.sql.gz",
        "shop_20261130T020000Z_monthly.sql.zst",
        "shop_20261130T020000Z_safety.pgdump.gz",
        "shop_2-Tuesday.pgdump.zst",
        "shop_0-Sunday.sql.gz",
    ],
)
def test_a_projects_set_names(name):
    assert sets.is_set_name(name, "shop")


@pytest.mark.parametrize(
    "name",
    [
        "shop2_20261130T020000Z_daily.pgdump.zst",
        "shop_x_20261130T020000Z_daily.pgdump.zst",
        "shopfront_2-Tuesday.pgdump.zst",
        "blog_20261130T020000Z_daily.pgdump.zst",
        f"{DAILY}.sha256",
        f"{DAILY}.manifest.json",
        "shop_20261130T020000Z_daily.media.tar.zst",
        f".{DAILY}.partial",
        f"{DAILY}\n",
        "shop_20261130T020000Z_hourly.pgdump.zst",
        "shop_2026113T020000Z_daily.pgdump.zst",
        "shop_7-Sunday.pgdump.zst",
        "shop_20261130T020000Z_daily.pgdump.xz",
        "shop_20261130T020000Z_daily.tar.zst",
    ],
)
def test_names_that_are_not_the_projects_sets(name):
    assert not sets.is_set_name(name, "shop")


def test_a_project_name_is_matched_literally():
    assert sets.is_set_name("a.b_2-Tuesday.sql.gz", "a.b")
    assert not sets.is_set_name("axb_2-Tuesday.sql.gz", "a.b")


def test_sets_are_listed_newest_first_and_only_the_projects(tmp_path):
    ours = [MONTHLY, DAILY, "shop_20261115T020000Z_weekly.sql.gz"]
    theirs = [
        "shop2_20261201T020000Z_daily.pgdump.zst",
        "shop_x_20261201T020000Z_daily.pgdump.zst",
        "shopping_20261201T020000Z_daily.pgdump.zst",
    ]
    touch(tmp_path, *ours, *theirs, f"{DAILY}.sha256", f"{DAILY}.manifest.json", f".{DAILY}.partial")
    (tmp_path / "shop_20261202T020000Z_daily.pgdump.zst").mkdir()
    os.symlink(DAILY, tmp_path / "shop_20261203T020000Z_daily.pgdump.zst")
    os.symlink(DAILY, tmp_path / "latest")
    assert sets.list_sets(tmp_path, "shop") == [DAILY, "shop_20261115T020000Z_weekly.sql.gz", MONTHLY]
    assert sets.list_sets(tmp_path, "shop2") == ["shop2_20261201T020000Z_daily.pgdump.zst"]
    assert sets.list_sets(tmp_path / "missing", "shop") == []


@pytest.mark.parametrize(
    ("name", "kind", "stamp"),
    [
        (DAILY, "daily", "20261130T020000Z"),
        (MONTHLY, "monthly", "20261101T020000Z"),
        ("shop_20261130T020000Z_safety.sql.gz", "safety", "20261130T020000Z"),
        ("shop_2-Tuesday.pgdump.zst", "weekday", None),
        # Another project's name has no stamp and no kind for this one.
        ("blog_20261130T020000Z_daily.pgdump.zst", "weekday", None),
        ("shop_x_20261130T020000Z_daily.pgdump.zst", "weekday", None),
    ],
)
def test_the_kind_and_stamp_of_a_name(name, kind, stamp):
    assert sets.kind_of(name, "shop") == kind
    assert sets.stamp_of(name, "shop") == stamp


@pytest.mark.parametrize(
    ("name", "media"),
    [
        (DAILY, "shop_20261130T020000Z_daily.media.tar.zst"),
        ("shop_2-Tuesday.sql.gz", "shop_2-Tuesday.media.tar.gz"),
        # What the shell's ${1%.*} and ${1##*.} make of names with fewer dots.
        ("plain.zst", "plain.media.tar.zst"),
        ("plain", "plain.media.tar.plain"),
    ],
)
def test_the_media_archive_of_a_set(name, media):
    assert sets.media_name_of(name) == media


@pytest.mark.parametrize(
    ("engine", "fmt", "compression", "extension"),
    [
        ("postgresql", "custom", "zstd", "pgdump.zst"),
        ("postgresql", "custom", "gzip", "pgdump.gz"),
        ("postgresql", "plain", "zstd", "sql.zst"),
        ("mysql", "custom", "gzip", "sql.gz"),
    ],
)
def test_the_extension_of_a_new_dump(engine, fmt, compression, extension):
    assert sets.backup_extension(engine, fmt, compression) == extension


def test_an_unknown_compression_is_a_configuration_error():
    with pytest.raises(Failure) as caught:
        sets.backup_extension("postgresql", "custom", "xz")
    assert caught.value.code == Exit.CONFIG
    assert str(caught.value) == "the compression is 'xz', not zstd or gzip"


# --- resolving a name ---------------------------------------------------------------------


def test_a_name_or_a_path_resolves_in_the_backups_directory(tmp_path):
    touch(tmp_path, DAILY)
    assert sets.resolve(tmp_path, DAILY) == str(tmp_path / DAILY)
    assert sets.resolve(tmp_path, f"/somewhere/else/{DAILY}") == str(tmp_path / DAILY)


def test_latest_resolves_to_what_it_points_at(tmp_path):
    touch(tmp_path, DAILY, MONTHLY)
    os.symlink(MONTHLY, tmp_path / "latest")
    assert sets.resolve(tmp_path) == str(tmp_path / MONTHLY)
    assert sets.resolve(tmp_path, "") == str(tmp_path / MONTHLY)
    assert sets.latest_name(tmp_path) == MONTHLY


def bad_backup(directory, want):
    with pytest.raises(Failure) as caught:
        sets.resolve(directory, want)
    assert caught.value.code == Exit.BAD_BACKUP
    return str(caught.value)


def test_latest_without_the_link_is_refused(tmp_path):
    touch(tmp_path, DAILY)
    assert bad_backup(tmp_path, "latest") == f"there is no latest backup in {tmp_path}"
    assert sets.latest_name(tmp_path) == ""
    # A file (not a link) named latest is no latest either.
    touch(tmp_path, "latest")
    assert bad_backup(tmp_path, "latest") == f"there is no latest backup in {tmp_path}"


def test_a_dangling_latest_is_refused_by_the_name_it_holds(tmp_path):
    os.symlink(DAILY, tmp_path / "latest")
    assert bad_backup(tmp_path, "latest") == (f"no backup named {DAILY} in {tmp_path} (list_db_backups.sh lists them)")


def test_latest_removed_while_it_is_read_is_no_backup(tmp_path, monkeypatch):
    os.symlink(DAILY, tmp_path / "latest")

    def gone(path):
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(os, "readlink", gone)
    assert bad_backup(tmp_path, "latest") == f"no backup named  in {tmp_path} (list_db_backups.sh lists them)"


def test_an_unknown_name_or_a_directory_is_refused(tmp_path):
    (tmp_path / DAILY).mkdir()
    assert bad_backup(tmp_path, DAILY) == f"no backup named {DAILY} in {tmp_path} (list_db_backups.sh lists them)"
    assert bad_backup(tmp_path, MONTHLY).startswith(f"no backup named {MONTHLY} in ")


# --- checking a set -------------------------------------------------------------------------


class Compression:
    """A stand-in for the runner's zstd -t / gzip -t: records what it tested and
    fails the paths it is told to."""

    def __init__(self, failing=()):
        self.failing, self.tested = {str(p) for p in failing}, []

    def __call__(self, path):
        self.tested.append(str(path))
        return str(path) not in self.failing


def refused(path, *args, **kwargs):
    with pytest.raises(Failure) as caught:
        sets.check_set(path, *args, **kwargs)
    assert caught.value.code == Exit.BAD_BACKUP
    return caught.value


def test_a_good_set_passes_and_gives_its_manifest_and_signature(tmp_path):
    path = make_set(tmp_path, DAILY, media=b"media")
    compression = Compression()
    checked = sets.check_set(str(path), "shop", "postgresql", compression)
    assert checked.manifest.project == "shop" and checked.manifest.tables == {"a": 1}
    assert checked.signature == sets.file_signature(str(path))
    assert compression.tested == [str(path), str(tmp_path / sets.media_name_of(DAILY))]
    # Without the compression test (the caller runs it elsewhere) the rest is checked.
    assert sets.check_set(str(path), "shop", "postgresql").manifest.engine == "postgresql"


def test_a_set_without_its_checksum_file_is_refused(tmp_path):
    path = make_set(tmp_path, DAILY)
    os.unlink(f"{path}.sha256")
    assert str(refused(str(path), "shop", "postgresql")) == f"{DAILY} has no checksum file; refusing to use it"


def test_a_set_without_its_manifest_is_refused(tmp_path):
    path = make_set(tmp_path, DAILY)
    os.unlink(f"{path}.manifest.json")
    assert str(refused(str(path), "shop", "postgresql")) == f"{DAILY} has no manifest; refusing to use it"


def test_a_damaged_dump_is_refused_and_the_reason_is_kept(tmp_path):
    path = make_set(tmp_path, DAILY, media=b"media")
    path.write_bytes(b"damaged")
    failure = refused(str(path), "shop", "postgresql", Compression(failing=[path]))
    # The checksum is said first, whatever the compression test found.
    assert str(failure) == f"{DAILY} does not match its sha256 checksum: the file is damaged; refusing to use it"
    assert str(failure.__cause__) == f"{DAILY}: does not match its sha256"


def test_a_damaged_media_archive_is_named_in_the_reason(tmp_path):
    path = make_set(tmp_path, DAILY, media=b"media")
    media = tmp_path / sets.media_name_of(DAILY)
    media.write_bytes(b"MEDIA")
    failure = refused(str(path), "shop", "postgresql")
    assert str(failure).startswith(f"{DAILY} does not match its sha256 checksum")
    assert str(failure.__cause__) == f"{media.name}: does not match its sha256"


def test_a_checksum_naming_a_missing_file_is_refused(tmp_path):
    path = make_set(tmp_path, DAILY, media=b"media")
    os.unlink(tmp_path / sets.media_name_of(DAILY))
    failure = refused(str(path), "shop", "postgresql")
    assert str(failure.__cause__) == f"{sets.media_name_of(DAILY)}: No such file or directory"


def test_a_dump_that_fails_its_compression_test_is_refused(tmp_path):
    path = make_set(tmp_path, DAILY)
    failure = refused(str(path), "shop", "postgresql", Compression(failing=[path]))
    assert str(failure) == f"{DAILY} fails its compression check: the file is damaged"


def test_a_media_archive_that_fails_its_compression_test_is_refused(tmp_path):
    path = make_set(tmp_path, DAILY, media=b"media")
    media = tmp_path / sets.media_name_of(DAILY)
    failure = refused(str(path), "shop", "postgresql", Compression(failing=[media]))
    assert str(failure) == f"{media.name} fails its compression check: the file is damaged"


def test_an_unreadable_manifest_is_refused_with_its_reason_kept(tmp_path):
    path = make_set(tmp_path, DAILY)
    Path(f"{path}.manifest.json").write_text('{"project": "shop"')
    failure = refused(str(path), "shop", "postgresql")
    assert str(failure) == f"the manifest of {DAILY} cannot be read"
    assert isinstance(failure.__cause__, ManifestError)


@pytest.mark.parametrize(("project", "engine"), [("shop_x", "postgresql"), ("shop", "mysql")])
def test_another_projects_or_engines_set_is_refused(tmp_path, project, engine):
    path = make_set(tmp_path, DAILY, project=project, engine=engine)
    assert str(refused(str(path), "shop", "postgresql")) == (
        f"{DAILY} belongs to project '{project}' ({engine}), not shop (postgresql); refusing to use it"
    )


def test_a_set_checked_before_the_lock_is_not_read_again_if_unchanged(tmp_path):
    path = str(make_set(tmp_path, DAILY))
    checked = sets.check_set(path, "shop", "postgresql")
    compression = Compression()
    assert sets.check_set_again(path, checked, "shop", "postgresql", compression) is checked
    assert compression.tested == []
    # Rewritten meanwhile (another inode, other times): read again, and found damaged.
    os.unlink(path)
    Path(path).write_bytes(b"replaced")
    with pytest.raises(Failure, match="does not match its sha256"):
        sets.check_set_again(path, checked, "shop", "postgresql", compression)
    # Never checked: checked now.
    make_set(tmp_path, DAILY)
    assert sets.check_set_again(path, None, "shop", "postgresql", compression).manifest.project == "shop"
    # Tested twice: while the damaged one's checksum was computed, then now.
    assert compression.tested == [path, path]


def test_the_signature_changes_with_any_of_the_three_files(tmp_path):
    path = str(make_set(tmp_path, DAILY))
    before = sets.file_signature(path)
    assert len(before) == 3 and all(len(entry) == 5 for entry in before)
    assert sets.file_signature(path) == before
    st = os.stat(f"{path}.manifest.json")
    os.utime(f"{path}.manifest.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert sets.file_signature(path) != before
    os.unlink(f"{path}.sha256")
    assert sets.file_signature(path)[1] is None


def test_the_signature_is_of_a_link_not_what_it_points_at(tmp_path):
    touch(tmp_path, "target")
    os.symlink("target", tmp_path / DAILY)
    assert sets.file_signature(str(tmp_path / DAILY))[0][1] == os.lstat(tmp_path / DAILY).st_ino


# --- publishing ------------------------------------------------------------------------------


def write_partials(directory, name, media=False):
    partial = sets.partial_path(directory, name)
    for suffix in ("", ".sha256", ".manifest.json"):
        Path(partial + suffix).write_text(f"new{suffix}")
    if media:
        Path(sets.partial_path(directory, sets.media_name_of(name))).write_text("new media")
    return partial


@pytest.fixture
def recorder(monkeypatch):
    """Records every fsync (by path) and rename in order, and checks at each rename
    of a dump that its sidecars are already in place."""
    events = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(source, target):
        target = str(target)
        if sets.is_set_name(os.path.basename(target), "shop"):
            assert os.path.isfile(f"{target}.sha256") and os.path.isfile(f"{target}.manifest.json")
        events.append(("replace", os.path.basename(source), os.path.basename(target)))
        real_replace(source, target)

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    return events


def test_publish_flushes_then_renames_sidecars_first_and_the_dump_last(tmp_path, recorder):
    write_partials(tmp_path, DAILY, media=True)
    media = sets.media_name_of(DAILY)
    assert sets.publish(str(tmp_path), DAILY, media=True) == str(tmp_path / DAILY)
    assert recorder == [
        ("fsync", f".{DAILY}.partial.sha256"),
        ("fsync", f".{DAILY}.partial.manifest.json"),
        ("fsync", f".{media}.partial"),
        ("fsync", f".{DAILY}.partial"),
        ("replace", f".{DAILY}.partial.sha256", f"{DAILY}.sha256"),
        ("replace", f".{DAILY}.partial.manifest.json", f"{DAILY}.manifest.json"),
        ("replace", f".{media}.partial", media),
        ("replace", f".{DAILY}.partial", DAILY),
        ("fsync", tmp_path.name),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [DAILY, f"{DAILY}.sha256", f"{DAILY}.manifest.json", media]
    )
    assert (tmp_path / DAILY).read_text() == "new"


def test_publish_without_media_leaves_an_older_media_archive_alone(tmp_path, recorder):
    write_partials(tmp_path, DAILY)
    sets.publish(str(tmp_path), DAILY)
    assert [e[2] for e in recorder if e[0] == "replace"] == [f"{DAILY}.sha256", f"{DAILY}.manifest.json", DAILY]


def test_publish_with_a_sidecar_missing_renames_nothing(tmp_path, recorder):
    partial = write_partials(tmp_path, DAILY)
    os.unlink(partial + ".manifest.json")
    with pytest.raises(FileNotFoundError):
        sets.publish(str(tmp_path), DAILY)
    assert [e for e in recorder if e[0] == "replace"] == []
    assert sets.list_sets(tmp_path, "shop") == []


def test_publish_from_a_fetch_staging_directory(tmp_path, recorder):
    staging, backups = tmp_path / ".fetch-staging", tmp_path / "backups"
    staging.mkdir()
    backups.mkdir()
    make_set(staging, DAILY, media=b"media")
    sets.publish(str(backups), DAILY, staging=str(staging))
    assert [e[2] for e in recorder if e[0] == "replace"] == [
        f"{DAILY}.sha256",
        f"{DAILY}.manifest.json",
        sets.media_name_of(DAILY),
        DAILY,
    ]
    assert recorder[-1] == ("fsync", "backups")
    sets.check_set(str(backups / DAILY), "shop", "postgresql")
    # Without a media archive in the staging directory, none is published.
    make_set(staging, MONTHLY)
    recorder.clear()
    sets.publish(str(backups), MONTHLY, staging=str(staging))
    assert [e[2] for e in recorder if e[0] == "replace"] == [f"{MONTHLY}.sha256", f"{MONTHLY}.manifest.json", MONTHLY]


def test_latest_is_swapped_in_one_rename(tmp_path, recorder, monkeypatch):
    touch(tmp_path, DAILY, MONTHLY)
    sets.point_latest_at(str(tmp_path), MONTHLY)
    assert os.readlink(tmp_path / "latest") == MONTHLY
    # A link left by a killed run is replaced; latest is never removed, only renamed over.
    os.symlink("stale", tmp_path / ".latest.partial")
    recorder.clear()
    real_unlink = os.unlink

    def unlink(path):
        assert os.path.basename(path) != "latest"
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    sets.point_latest_at(str(tmp_path), DAILY)
    assert recorder == [("replace", ".latest.partial", "latest"), ("fsync", tmp_path.name)]
    assert os.readlink(tmp_path / "latest") == DAILY
    assert not os.path.lexists(tmp_path / ".latest.partial")
    assert sets.resolve(tmp_path) == str(tmp_path / DAILY)


# --- removing ----------------------------------------------------------------------------------


def test_removing_a_set_takes_its_four_files_and_nothing_else(tmp_path):
    make_set(tmp_path, DAILY, media=b"media")
    make_set(tmp_path, MONTHLY, media=b"media")
    sets.remove_set(tmp_path, DAILY)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [MONTHLY, f"{MONTHLY}.sha256", f"{MONTHLY}.manifest.json", sets.media_name_of(MONTHLY)]
    )
    # Files already gone are no error (rm -f).
    sets.remove_set(tmp_path, DAILY)


def test_stale_partials_are_removed_and_nothing_else(tmp_path):
    stale = [
        f".{DAILY}.partial",
        f".{DAILY}.partial.sha256",
        f".{DAILY}.partial.manifest.json",
        f".{sets.media_name_of(DAILY)}.partial",
    ]
    touch(tmp_path, *stale, DAILY, ".lock", ".offsite.lock", "notes.partial", ".partial")
    os.symlink(DAILY, tmp_path / ".latest.partial")
    (tmp_path / ".restore.partial.d").mkdir()
    (tmp_path / ".restore.partial.d" / "inside").write_text("x")
    (tmp_path / ".fetch-staging").mkdir()
    removed = sets.remove_stale_partials(tmp_path)
    assert removed == sorted([*stale, ".latest.partial", ".restore.partial.d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [DAILY, ".lock", ".offsite.lock", "notes.partial", ".partial", ".fetch-staging"]
    )
    assert sets.remove_stale_partials(tmp_path) == []
    assert sets.remove_stale_partials(tmp_path / "missing") == []


def test_a_partial_gone_before_its_removal_is_skipped(tmp_path, monkeypatch):
    touch(tmp_path, ".a.partial", ".b.partial")
    real_unlink = os.unlink

    def unlink(path):
        if str(path).endswith(".a.partial"):
            real_unlink(path)  # another run was faster
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    assert sets.remove_stale_partials(tmp_path) == [".b.partial"]


# --- free space --------------------------------------------------------------------------------


@pytest.fixture
def free(monkeypatch):
    """os.statvfs reporting FREE["kb"] KiB available (in 4 KiB blocks)."""
    state = {"kb": 0, "asked": []}

    def statvfs(path):
        state["asked"].append(str(path))
        return SimpleNamespace(f_bavail=state["kb"] // 4, f_frsize=4096, f_bfree=10**9, f_bsize=4096)

    monkeypatch.setattr(os, "statvfs", statvfs)
    return state


def test_without_sets_a_backup_needs_the_minimum(tmp_path, free):
    free["kb"] = 100 * 1024
    assert sets.check_free_space(str(tmp_path), "shop", 100) == sets.Space(100 * 1024, 100 * 1024)
    assert free["asked"] == [str(tmp_path)]
    free["kb"] = 100 * 1024 - 4
    with pytest.raises(Failure) as caught:
        sets.check_free_space(str(tmp_path), "shop", 100)
    assert caught.value.code == Exit.NO_SPACE
    assert str(caught.value) == (
        f"only 99 MiB free in {tmp_path}; a backup needs 100 MiB "
        "(db_backup_min_free_mb, or 1.5 times the newest backup set)"
    )


def test_a_backup_needs_one_and_a_half_times_the_newest_set_with_its_media(tmp_path, free):
    (tmp_path / DAILY).write_bytes(b"\0" * (2 * 1024 * 1024 + 1023))  # 2048 KiB, the rest dropped
    (tmp_path / sets.media_name_of(DAILY)).write_bytes(b"\0" * (1024 * 1024))  # 1024 KiB
    (tmp_path / MONTHLY).write_bytes(b"\0" * (50 * 1024 * 1024))  # older: not counted
    assert sets.space_needed_kb(str(tmp_path), "shop", 1) == (2048 + 1024) * 3 // 2
    # A safety backup (or no media directory): the media archive does not count.
    assert sets.space_needed_kb(str(tmp_path), "shop", 1, with_media=False) == 2048 * 3 // 2
    # The minimum when it is more.
    assert sets.space_needed_kb(str(tmp_path), "shop", 10) == 10 * 1024
    free["kb"] = 4608
    assert sets.check_free_space(str(tmp_path), "shop", 1) == sets.Space(4608, 4608)
    free["kb"] = 4604
    with pytest.raises(Failure, match=r"only 4 MiB free .* a backup needs 4 MiB"):
        sets.check_free_space(str(tmp_path), "shop", 1)


def test_another_projects_bigger_set_is_not_the_newest(tmp_path, free):
    (tmp_path / DAILY).write_bytes(b"\0" * 4096)
    (tmp_path / "shop_x_20261231T020000Z_daily.pgdump.zst").write_bytes(b"\0" * (10 * 1024 * 1024))
    assert sets.space_needed_kb(str(tmp_path), "shop", 0) == 6


def test_free_space_is_what_an_unprivileged_user_may_use(tmp_path):
    st = os.statvfs(tmp_path)
    assert sets.free_kb(str(tmp_path)) == st.f_bavail * st.f_frsize // 1024
