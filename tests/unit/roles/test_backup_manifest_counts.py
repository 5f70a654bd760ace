"""backup_manifest.py's row counts (from a MariaDB dump's text, and from a PostgreSQL
snapshot plus the archive's table of contents) and its sha256 check, which the backup and
restore scripts trust instead of coreutils' sha256sum."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "roles/db_backup/files/backup_manifest.py"
sys.path.insert(0, str(TOOL.parent))
import backup_manifest  # noqa: E402


def tool(*args, stdin=b""):
    result = subprocess.run([sys.executable, str(TOOL), *args], input=stdin, capture_output=True, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


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
    assert backup_manifest.my_rows(piece) == rows


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
    result = tool("count", "mysql", stdin=MARIADB_DUMP)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"tables": {"catalog_item": 5, "empty`name": 0}, "complete": True}


def test_a_mariadb_dump_without_its_last_line_is_incomplete():
    truncated = MARIADB_DUMP.rsplit(b"-- Dump completed", 1)[0]
    assert json.loads(tool("count", "mysql", stdin=truncated).stdout)["complete"] is False


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


def test_snapshot_counts_follow_the_archives_table_of_contents(tmp_path):
    (tmp_path / "counts.tsv").write_text(SNAPSHOT)
    (tmp_path / "toc.txt").write_text(TOC)
    result = tool("snapshot-counts", str(tmp_path / "counts.tsv"), str(tmp_path / "toc.txt"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "tables": {
            'public."blog comment"': 231578,
            "public.auth_group": 3,
            "public.config_of_an_extension": 12,
            # Its rows were left out of the dump (--exclude-table-data): the manifest says 0.
            "public.django_session": 0,
            "public.parted": 0,
        },
        "complete": True,
    }


@pytest.fixture
def backup_set(tmp_path):
    data, media = tmp_path / "shop_x.pgdump.zst", tmp_path / "shop_x.media.tar.zst"
    data.write_bytes(b"dump" * 100_000)
    media.write_bytes(b"media")
    sums = tmp_path / "shop_x.pgdump.zst.sha256"
    sums.write_text(
        "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in (data, media)), encoding="utf-8"
    )
    return data, media, sums


def test_the_checksum_is_sha256sums(backup_set):
    data, _media, sums = backup_set
    result = tool("sha256", str(data))
    assert result.stdout.strip() == hashlib.sha256(data.read_bytes()).hexdigest()
    # The sum files stay what sha256sum checks (the README tells operators to).
    assert (
        subprocess.run(
            ["sha256sum", "--check", "--strict", "--status", sums.name], cwd=data.parent, check=False
        ).returncode
        == 0
    )


def test_a_good_set_passes_the_check(backup_set):
    assert tool("check-sha256", str(backup_set[2])).returncode == 0


def test_one_changed_byte_in_any_file_fails_the_check(backup_set):
    data, media, sums = backup_set
    for damaged in (data, media):
        original = damaged.read_bytes()
        damaged.write_bytes(original[:-1] + b"X")
        result = tool("check-sha256", str(sums))
        assert result.returncode == 1
        assert damaged.name in result.stderr
        damaged.write_bytes(original)


@pytest.mark.parametrize(
    "text",
    ["", "not a checksum line\n", f"{'A' * 64}  shop_x.pgdump.zst\n", f"{'0' * 64}  missing.zst\n"],
)
def test_an_empty_malformed_or_dangling_sum_file_fails(backup_set, text):
    sums = backup_set[2]
    sums.write_text(text, encoding="utf-8")
    assert tool("check-sha256", str(sums)).returncode == 1
