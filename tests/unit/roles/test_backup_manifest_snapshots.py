"""backup_manifest.py snapshots: which snapshots of an off-site repository are this project's
backup sets, in what order, and with what the fetch needs (set, sha256, id, time, paths)."""

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[3] / "roles/db_backup/files/backup_manifest.py"


def snapshot(time, name, tags=("djangoops",), sha="ab" * 32, snap_id="0" * 64, paths=None):
    return {
        "time": time,
        "id": snap_id,
        "paths": paths or [f"/home/shop/db_backups/{name}"],
        "tags": [*tags, f"set={name}", f"sha256={sha}", "kind=daily"],
    }


def sets(snapshots, project="shop"):
    result = subprocess.run(
        [sys.executable, str(TOOL), "snapshots", project],
        input=json.dumps(snapshots),
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_oldest_first_with_what_the_fetch_needs():
    rows = sets(
        [
            snapshot("2026-11-30T02:00:00Z", "shop_20261130T020000Z_daily.pgdump.zst", snap_id="2" * 64),
            snapshot("2026-11-29T02:00:00Z", "shop_20261129T020000Z_monthly.pgdump.zst", snap_id="1" * 64),
        ]
    )
    assert [r[0] for r in rows] == [
        "shop_20261129T020000Z_monthly.pgdump.zst",
        "shop_20261130T020000Z_daily.pgdump.zst",
    ]
    assert rows[0][1:4] == ["ab" * 32, "1" * 64, "2026-11-29T02:00:00Z"]
    assert rows[0][4] == "/home/shop/db_backups/shop_20261129T020000Z_monthly.pgdump.zst"


def test_another_projects_sets_and_foreign_snapshots_are_left_out():
    rows = sets(
        [
            snapshot("2026-11-30T02:00:00Z", "shop_20261130T020000Z_daily.pgdump.zst"),
            # Another project whose name starts the same way is not this one's.
            snapshot("2026-11-30T02:00:00Z", "shopfront_20261130T020000Z_daily.pgdump.zst"),
            snapshot("2026-11-30T02:00:00Z", "shop_x_20261130T020000Z_daily.pgdump.zst"),
            snapshot("2026-11-30T02:00:00Z", "blog_20261130T020000Z_daily.pgdump.zst"),
            # A snapshot somebody made by hand, without the djangoops tag.
            snapshot("2026-11-30T03:00:00Z", "shop_20261130T030000Z_daily.pgdump.zst", tags=()),
        ]
    )
    assert [r[0] for r in rows] == ["shop_20261130T020000Z_daily.pgdump.zst"]


def test_an_empty_repository_has_no_sets():
    assert sets([]) == []
    assert sets(None) == []
