"""djangoops.manifest: row counts (from a MariaDB dump's text, a PostgreSQL dump's, and a
PostgreSQL snapshot plus the archive's table of contents), the manifest written and read
back, the comparison with a test restore, the sha256 sidecars the backup and restore
trust instead of coreutils' sha256sum, and the sets an off-site repository holds."""

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from djangoops import manifest

# --- MariaDB / MySQL dumps ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("piece", "rows"),
    [
        (rb"(1,'plain'),(2,'two')", 2),
        (rb"(1,'a quote \' and (parens)'),(2,'x),(y')", 2),
        # An escaped backslash ends the string before the quote that follows it.
        (rb"(1,'ends in a backslash \\'),(2,'\\\'(')", 2),
        (rb"(1,'it''s (doubled)'),(2,'')", 2),
        (rb"(1,NULL,0x28,_binary 'b(')", 1),
        (rb"(1,'\\\\'),", 1),
    ],
)
def test_rows_of_an_extended_insert_ignore_what_strings_hold(piece, rows):
    assert manifest.mysql_rows(piece) == rows


MARIADB_DUMP = b"""-- MariaDB dump 10.19
CREATE TABLE `catalog_item` (
  `id` int NOT NULL
);
INSERT INTO `catalog_item` VALUES
(1,'one (1)','{\\"a\\": \\"),(\\"}'),
(2,'two\\\\',NULL),
(3,'it\\'s',NULL);
CREATE TABLE `empty``name` (
  `id` int NOT NULL
);
INSERT INTO `catalog_item` VALUES (4,'x'),(5,'y');
-- Dump completed on 2026-11-30
"""


def test_a_mariadb_dump_is_counted_table_by_table():
    counts = manifest.count_mysql(io.BytesIO(MARIADB_DUMP))
    assert counts == manifest.Counts({"catalog_item": 5, "empty`name": 0}, True)
    assert list(counts.tables) == sorted(counts.tables)


def test_a_mariadb_dump_without_its_last_line_is_incomplete():
    truncated = MARIADB_DUMP.rsplit(b"-- Dump completed", 1)[0]
    assert manifest.count_mysql(io.BytesIO(truncated)).complete is False


def test_a_mariadb_dump_cut_inside_an_insert_is_incomplete_even_with_the_marker():
    # The marker line is read as part of the unfinished INSERT: the dump is not whole.
    cut = b"INSERT INTO `t` VALUES (1,'a'),\n(2,'b'),\n-- Dump completed on 2026-11-30\n"
    counts = manifest.count_mysql(io.BytesIO(cut))
    assert counts == manifest.Counts({"t": 2}, False)


def test_mariadb_lines_that_are_not_a_table_or_its_rows_count_for_nothing():
    dump = (
        b"CREATE TABLE IF NOT EXISTS `x` (\n"  # not mysqldump's form: no table
        b"INSERT INTO t VALUES (1);\n"  # unquoted name: not mysqldump's form either
        b"CREATE VIEW `v` AS SELECT 1;\n"
        b"-- Dump completed\n"
    )
    assert manifest.count_mysql(io.BytesIO(dump)) == manifest.Counts({}, True)


# --- PostgreSQL text dumps ----------------------------------------------------------------

POSTGRESQL_DUMP = b"""--
-- PostgreSQL database dump
--
CREATE TABLE public.auth_group (
    id integer NOT NULL
);
CREATE UNLOGGED TABLE "My Schema"."odd ""quoted"" name" (
    id integer NOT NULL
);
CREATE TABLE public.empty (
    id integer NOT NULL
);
CREATE INDEX auth_group_name ON public.auth_group USING btree (name);
COPY public.auth_group (id, name) FROM stdin;
1\tadmins
2\t\\\\.
\\.
COPY "My Schema"."odd ""quoted"" name" (id) FROM stdin;\r
1\r
\\.\r
COPY public.not_a_block (id) TO stdout;
--
-- PostgreSQL database dump complete
--
"""


def test_a_postgresql_dump_is_counted_table_by_table():
    counts = manifest.count_postgresql(io.BytesIO(POSTGRESQL_DUMP))
    assert counts == manifest.Counts(
        {'"My Schema"."odd ""quoted"" name"': 1, "public.auth_group": 2, "public.empty": 0}, True
    )


def test_a_postgresql_dump_without_its_last_line_is_incomplete():
    truncated = POSTGRESQL_DUMP.split(b"-- PostgreSQL database dump complete", maxsplit=1)[0]
    assert manifest.count_postgresql(io.BytesIO(truncated)).complete is False


def test_a_postgresql_dump_cut_inside_a_copy_block_is_incomplete():
    cut = b"COPY public.t (id) FROM stdin;\n1\n2\n-- PostgreSQL database dump complete\n"
    # Inside a COPY block every line is a row, the marker too: the block never ended.
    assert manifest.count_postgresql(io.BytesIO(cut)) == manifest.Counts({"public.t": 3}, False)


# --- PostgreSQL archives: the snapshot's counts and the table of contents ------------------

TOC = """;
; Archive created at 2026-11-30 17:32:00 UTC
;
214; 1259 158383 TABLE public auth_group shop
3471; 0 158383 TABLE DATA public auth_group shop
228; 1259 158415 TABLE public blog comment shop
3485; 0 158415 TABLE DATA public blog comment shop
232; 1259 158437 TABLE public django_session shop
240; 1259 158500 TABLE public parted shop
3500; 0 158600 TABLE DATA public config_of_an_extension postgres
"""

SNAPSHOT = (
    "158383\tpublic.auth_group\t3\n"
    '158415\tpublic."blog comment"\t231578\n'
    "158437\tpublic.django_session\t90909\n"
    "158500\tpublic.parted\t0\n"
    "158600\tpublic.config_of_an_extension\t12\n"
    "158700\tpublic.created_after_the_dump\t5\n"
)

SNAPSHOT_COUNTS = {
    'public."blog comment"': 231578,
    "public.auth_group": 3,
    "public.config_of_an_extension": 12,
    # Its rows were left out of the dump (--exclude-table-data): the manifest says 0.
    "public.django_session": 0,
    "public.parted": 0,
}


def test_snapshot_counts_follow_the_archives_table_of_contents():
    assert manifest.snapshot_counts(SNAPSHOT, TOC) == manifest.Counts(SNAPSHOT_COUNTS, True)


def test_snapshot_counts_read_bytes_as_the_files_were_read():
    # The table of contents may hold any byte in a name; the counts must be UTF-8.
    toc = TOC.encode() + b"3600; 1259 158800 TABLE public caf\xe9 shop\r\n"
    tsv = SNAPSHOT.replace("\n", "\r\n").encode() + b"\n\n"
    assert manifest.snapshot_counts(tsv, toc) == manifest.Counts(SNAPSHOT_COUNTS, True)
    with pytest.raises(UnicodeDecodeError):
        manifest.snapshot_counts(b"158383\tcaf\xe9\t3\n", toc)


def test_a_malformed_snapshot_count_line_is_an_error():
    with pytest.raises(ValueError, match=r"line 2: .* is not OID<TAB>TABLE<TAB>ROWS"):
        manifest.snapshot_counts("158383\tpublic.auth_group\t3\n158415 public.x 2\n", TOC)
    with pytest.raises(ValueError, match="invalid literal"):
        manifest.snapshot_counts("158383\tpublic.auth_group\tmany\n", TOC)
    # A table the archive neither creates nor fills is never read for its count.
    assert manifest.snapshot_counts("1\tpublic.other\tmany\n", TOC).tables == {}


# --- the manifest written and read back ----------------------------------------------------

FIELDS = {
    "engine": "postgresql",
    "database": "shop",
    "project": "shop",
    "created": "20261130T020000Z",
    "kind": "daily",
    "file": "shop_20261130T020000Z_daily.pgdump.zst",
    "sha256": "ab" * 32,
    "size_bytes": "1234",
    "dump_seconds": "2.5",
    "media_file": "",
    "media_size_bytes": 0,
    "media_files": "0",
    "encoding": "UTF8",
    "collate": "C.UTF-8",
    "ctype": "C.UTF-8",
    "server_version": 16,
}


def test_the_manifest_has_the_keys_order_and_types_the_shell_version_wrote(tmp_path):
    path = tmp_path / "m.json"
    written = manifest.write_manifest(path, FIELDS, {"b.t": 2, "a.t": 3}, "public.sessions\n\npublic.log\n")
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    data = json.loads(text)
    assert list(data) == [
        "manifest_version",
        "collate",
        "created",
        "ctype",
        "database",
        "dump_seconds",
        "encoding",
        "engine",
        "excluded_table_data",
        "file",
        "kind",
        "media_file",
        "media_files",
        "media_size_bytes",
        "project",
        "server_version",
        "sha256",
        "size_bytes",
        "tables",
        "rows",
    ]
    assert data["manifest_version"] == 1
    assert data["size_bytes"] == 1234 and data["media_files"] == 0 and data["media_size_bytes"] == 0
    assert data["dump_seconds"] == 2.5 and isinstance(data["dump_seconds"], float)
    assert data["server_version"] == "16" and data["media_file"] == ""
    assert data["excluded_table_data"] == ["public.sessions", "public.log"]
    assert list(data["tables"].items()) == [("a.t", 3), ("b.t", 2)]
    assert data["rows"] == 5
    assert dict(written) == data


def test_a_field_cannot_overwrite_what_the_manifest_writes_itself(tmp_path):
    for key in ("rows", "TABLES", "manifest_version", "excluded_table_data"):
        with pytest.raises(ValueError, match="written by the manifest itself"):
            manifest.write_manifest(tmp_path / "m.json", {key: "1"}, {})
    assert not (tmp_path / "m.json").exists()


def test_a_written_manifest_reads_back_with_typed_access(tmp_path):
    path = tmp_path / "m.json"
    manifest.write_manifest(path, FIELDS, {"public.a": 3, "public.b": 4}, ["public.sessions"])
    read = manifest.Manifest.read(path)
    assert read.project == "shop" and read.engine == "postgresql" and read.database == "shop"
    assert read.kind == "daily" and read.created == "20261130T020000Z" and read.sha256 == "ab" * 32
    assert read.media_file == ""
    assert read.tables == {"public.a": 3, "public.b": 4}
    assert read.rows == 7
    assert read.excluded_table_data == ["public.sessions"]
    assert read.integer("size_bytes") == 1234
    assert read.number("dump_seconds") == 2.5
    assert read.text("size_bytes") == "1234" and read.text("no such key") == ""
    assert read["kind"] == "daily" and len(read) == len(list(read)) == 20
    assert repr(read) == f"Manifest({str(path)!r})"
    # What is handed out is a copy: the manifest read stays as it was.
    read.tables["public.a"] = 0
    assert read.tables["public.a"] == 3


def test_an_older_manifest_without_a_total_sums_its_tables():
    read = manifest.Manifest({"tables": {"a": 1, "b": 2}}, "old.json")
    assert read.rows == 3 and read.excluded_table_data == [] and read.project == ""


@pytest.mark.parametrize("value", ["plain", "ünïcode 'q' \"d\" $HOME\ttab\nline", 12, 1.5, ["a", "b"], {"t": 1}])
def test_text_gives_each_value_as_the_shell_read_it(value):
    read = manifest.Manifest({"project": "shop", "value": value, "tables": {}})
    expected = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    assert read.text("value") == expected


def test_typed_access_refuses_a_missing_or_mistyped_value():
    read = manifest.Manifest({"tables": {}, "created": "x", "flag": True}, "m.json")
    with pytest.raises(manifest.ManifestError, match=r"m\.json: no size_bytes"):
        read.integer("size_bytes")
    with pytest.raises(manifest.ManifestError, match=r"m\.json: created is 'x', not a whole number"):
        read.integer("created")
    with pytest.raises(manifest.ManifestError, match=r"m\.json: no dump_seconds"):
        read.number("dump_seconds")
    with pytest.raises(manifest.ManifestError, match=r"m\.json: flag is True, not a number"):
        read.number("flag")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"tables": {', "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 13)"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"project": "shop"}', "no tables, or not an object of table names and row counts"),
        (b'{"tables": []}', "no tables, or not an object of table names and row counts"),
        (b'{"tables": {"a": "3"}}', "no tables, or not an object of table names and row counts"),
        (b'{"tables": {"a": true}}', "no tables, or not an object of table names and row counts"),
        (b'{"tables": {}, "size_bytes": "12"}', "size_bytes is '12', not a whole number"),
        (b'{"tables": {}, "media_files": 1.0}', "media_files is 1.0, not a whole number"),
        (b'{"tables": {}, "rows": null}', "rows is None, not a whole number"),
        (b'{"tables": {}, "manifest_version": "1"}', "manifest_version is '1', not a whole number"),
        (b'{"tables": {}, "dump_seconds": "2.5"}', "dump_seconds is '2.5', not a number"),
        (b'{"tables": {}, "excluded_table_data": "a"}', "excluded_table_data is not a list of table names"),
        (b'{"tables": {}, "excluded_table_data": [1]}', "excluded_table_data is not a list of table names"),
        (b'{"tables": {}, "project": "sh\\u0000op"}', "a NUL in 'project'"),
        (b'{"tables": {}, "a\\u0000b": 1}', "a NUL in 'a\\x00b'"),
    ],
)
def test_a_malformed_manifest_is_refused_with_its_reason(tmp_path, content, reason):
    path = tmp_path / "m.json"
    path.write_bytes(content)
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.Manifest.read(path)
    assert str(caught.value) == f"{path}: {reason}"


def test_a_missing_manifest_is_refused_with_its_reason(tmp_path):
    with pytest.raises(manifest.ManifestError, match=r"m\.json: No such file or directory"):
        manifest.Manifest.read(tmp_path / "m.json")


# --- the comparison with a test restore ------------------------------------------------------


def test_counts_that_agree_give_the_one_line_summary():
    result = manifest.compare_counts({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert result == manifest.Comparison([], "2 tables, 3 rows, as in the manifest")
    assert result.ok


def test_each_difference_is_said_by_table_in_order():
    result = manifest.compare_counts({"c": 1, "a": 5, "b": 2}, {"d": 0, "a": 4, "b": 2})
    assert not result.ok and result.summary == ""
    assert result.problems == [
        "table a: 4 rows restored, the manifest says 5",
        "table c is in the backup's manifest but missing after the restore",
        "table d appeared after the restore but is not in the manifest",
    ]


def test_a_test_restores_counts_are_read_from_its_query_output():
    text = "public.a\t3\r\n\npublic.with\ttab\t4\n"
    assert manifest.parse_table_counts(text) == {"public.a": 3, "public.with\ttab": 4}
    assert manifest.parse_table_counts(text.encode()) == {"public.a": 3, "public.with\ttab": 4}
    with pytest.raises(ValueError):
        manifest.parse_table_counts("public.a\tmany\n")


# --- checksums ---------------------------------------------------------------------------------


@pytest.fixture
def backup_set(tmp_path):
    data, media = tmp_path / "shop_x.pgdump.zst", tmp_path / "shop_x.media.tar.zst"
    data.write_bytes(b"dump" * 400_000)  # more than the 1 MiB buffer
    media.write_bytes(b"media")
    sums = tmp_path / "shop_x.pgdump.zst.sha256"
    sums.write_text(
        "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in (data, media)), encoding="utf-8"
    )
    return data, media, sums


def test_the_checksum_is_sha256sums(backup_set, tmp_path):
    data, _media, sums = backup_set
    assert manifest.sha256_of(data) == hashlib.sha256(data.read_bytes()).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert manifest.sha256_of(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    assert manifest.sidecar_sha256(sums) == manifest.sha256_of(data)
    sums.write_text("")
    assert manifest.sidecar_sha256(sums) == ""


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="no sha256sum")
def test_the_sum_files_stay_what_sha256sum_checks(backup_set):
    # The README tells operators to check them so.
    sums = backup_set[2]
    check = ["sha256sum", "--check", "--strict", "--status", sums.name]
    assert subprocess.run(check, cwd=sums.parent, check=False).returncode == 0


def test_a_good_set_passes_the_check(backup_set):
    assert manifest.check_sha256(backup_set[2]) is None


def test_a_binary_mode_line_passes_too(backup_set):
    data, _media, sums = backup_set
    sums.write_text(f"{manifest.sha256_of(data)} *{data.name}\n")
    assert manifest.check_sha256(sums) is None


def test_one_changed_byte_in_any_file_fails_with_that_files_name(backup_set):
    data, media, sums = backup_set
    for damaged in (data, media):
        original = damaged.read_bytes()
        damaged.write_bytes(original[:-1] + b"X")
        assert manifest.check_sha256(sums) == f"{damaged.name}: does not match its sha256"
        damaged.write_bytes(original)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "{sums}: no checksum lines"),
        ("not a checksum line\n", "{sums}: improperly formatted line: 'not a checksum line'"),
        (f"{'A' * 64}  shop_x.pgdump.zst\n", "{sums}: improperly formatted line: '" + "A" * 64 + "  shop_x.pgd"),
        (f"{'0' * 64}  missing.zst\n", "missing.zst: No such file or directory"),
    ],
)
def test_an_empty_malformed_or_dangling_sum_file_fails_with_its_reason(backup_set, text, reason):
    sums = backup_set[2]
    sums.write_text(text, encoding="utf-8")
    assert manifest.check_sha256(sums).startswith(reason.format(sums=sums))


def test_a_checksum_line_naming_a_missing_file_fails_after_the_good_ones(backup_set):
    _data, media, sums = backup_set
    media.unlink()
    assert manifest.check_sha256(sums) == f"{media.name}: No such file or directory"


def test_an_unreadable_sum_file_fails_with_its_reason(tmp_path):
    assert manifest.check_sha256(tmp_path / "none.sha256") == f"{tmp_path / 'none.sha256'}: No such file or directory"
    (tmp_path / "bad.sha256").write_bytes(b"\xff\n")
    assert manifest.check_sha256(tmp_path / "bad.sha256") == f"{tmp_path / 'bad.sha256'}: not UTF-8 text"


# --- off-site snapshots --------------------------------------------------------------------------


def snapshot(time, name, tags=("djangoops",), sha="ab" * 32, snap_id="0" * 64, paths=None, host="web1"):
    return {
        "time": time,
        "id": snap_id,
        "hostname": host,
        "paths": paths or [f"/home/shop/db_backups/{name}"],
        "tags": [*tags, f"set={name}", f"sha256={sha}", "kind=daily"],
    }


def test_snapshots_oldest_first_with_what_the_fetch_needs():
    rows = manifest.snapshots(
        [
            snapshot("2026-11-30T02:00:00Z", "shop_20261130T020000Z_daily.pgdump.zst", snap_id="2" * 64),
            snapshot("2026-11-29T02:00:00Z", "shop_20261129T020000Z_monthly.pgdump.zst", snap_id="1" * 64),
        ],
        "shop",
    )
    assert [r.name for r in rows] == [
        "shop_20261129T020000Z_monthly.pgdump.zst",
        "shop_20261130T020000Z_daily.pgdump.zst",
    ]
    first = rows[0]
    assert (first.sha256, first.snapshot_id, first.time) == ("ab" * 32, "1" * 64, "2026-11-29T02:00:00Z")
    assert first.paths == ("/home/shop/db_backups/shop_20261129T020000Z_monthly.pgdump.zst",)
    assert first.host == "web1"
    assert first.tags == (
        "djangoops",
        "set=shop_20261129T020000Z_monthly.pgdump.zst",
        f"sha256={'ab' * 32}",
        "kind=daily",
    )


def test_another_projects_sets_and_foreign_snapshots_are_left_out():
    rows = manifest.snapshots(
        [
            snapshot("2026-11-30T02:00:00Z", "shop_20261130T020000Z_daily.pgdump.zst"),
            # Another project whose name starts the same way is not this one's.
            snapshot("2026-11-30T02:00:00Z", "shopfront_20261130T020000Z_daily.pgdump.zst"),
            snapshot("2026-11-30T02:00:00Z", "shop_x_20261130T020000Z_daily.pgdump.zst"),
            snapshot("2026-11-30T02:00:00Z", "shop2_20261130T020000Z_daily.pgdump.zst"),
            snapshot("2026-11-30T02:00:00Z", "blog_20261130T020000Z_daily.pgdump.zst"),
            # A snapshot somebody made by hand, without the djangoops tag, or without any.
            snapshot("2026-11-30T03:00:00Z", "shop_20261130T030000Z_daily.pgdump.zst", tags=()),
            {"time": "2026-11-30T04:00:00Z", "id": "f" * 64, "paths": ["/etc"]},
        ],
        "shop",
    )
    assert [r.name for r in rows] == ["shop_20261130T020000Z_daily.pgdump.zst"]
    assert rows[0].host == "web1"


def test_snapshots_are_read_from_restics_json_text():
    listing = [snapshot("2026-11-30T02:00:00Z", "shop_2-Tuesday.sql.gz", host=None)]
    for data in (json.dumps(listing), json.dumps(listing).encode()):
        (row,) = manifest.snapshots(data, "shop")
        assert row.name == "shop_2-Tuesday.sql.gz" and row.host == ""


def test_an_empty_repository_has_no_sets():
    assert manifest.snapshots([], "shop") == []
    assert manifest.snapshots(None, "shop") == []
    assert manifest.snapshots("null", "shop") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "Expecting property name"),
        ('{"a": 1}', "did not print a list"),
        ("[1]", "1 is not a snapshot"),
        ([{"tags": ["djangoops", "set=shop_2-Tuesday.sql.gz"], "id": "x"}], "shop_2-Tuesday.sql.gz has no time"),
    ],
)
def test_output_that_is_not_a_list_of_snapshots_is_an_error(data, message):
    with pytest.raises(ValueError, match=message):
        manifest.snapshots(data, "shop")
