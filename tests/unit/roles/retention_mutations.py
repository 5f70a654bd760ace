"""Shows that the retention tests guard their rules: each mutation below breaks one rule of
backup_manifest.py (in a copy), and test_backup_retention.py must then fail.

    .venv/bin/python tests/unit/roles/retention_mutations.py

Prints each mutation with the tests that caught it; exits 1 if any mutation survives.
(A week counted with %Y%W instead of the ISO week is not on the list: within a month it
decides the same, and at a year's turn the month decides first.)"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "roles/db_backup/files/backup_manifest.py"
TESTS = ROOT / "tests/unit/roles/test_backup_retention.py"
SAME_WEEK = "other.isocalendar()[:2] == day.isocalendar()[:2]"
MUTATIONS = {
    "a week number without its ISO year": (SAME_WEEK, "other.isocalendar()[1] == day.isocalendar()[1]"),
    "a Sunday-based week (%U)": (SAME_WEEK, "other.strftime('%Y%U') == day.strftime('%Y%U')"),
    "a month without its year": ("(other.year, other.month) == (day.year, day.month)", "other.month == day.month"),
    "safety backups count for the month": ('or m.group("kind") == "safety"', ""),
    "the set latest points at is not spared": ("and name != latest ", ""),
    "the set being restored is not spared": (" and name not in protected", ""),
    "one set too few kept": ("seen > keep[kind]", "seen >= keep[kind]"),
    "names not matched to their end": ('(?:zst|gz)$"', '(?:zst|gz)"'),
    "another project's prefix matches": ('+ r"_(?:', '+ r"_(?:.*_)?(?:'),
    "the weekday in UTC, not local time": ("day = time.localtime(now)", "day = time.gmtime(now)"),
    "a safety backup named by the calendar": (
        '        kind = "safety"\n',
        "        kind = gfs_kind(stamp, names, project)\n",
    ),
}


def main():
    source = TOOL.read_text()
    survivors = 0
    with tempfile.TemporaryDirectory() as tmp:
        for what, (rule, broken) in MUTATIONS.items():
            assert source.count(rule) == 1, f"{what}: the rule is no longer in {TOOL.name}"
            mutant = Path(tmp) / "backup_manifest.py"
            mutant.write_text(source.replace(rule, broken))
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS)],
                capture_output=True,
                text=True,
                env={**os.environ, "BACKUP_MANIFEST_TOOL": str(mutant)},
                check=False,
            )
            failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
            caught = sorted({line.split("::")[1].split()[0] for line in failed})
            survivors += not caught
            print(f"{what}: {'caught by ' + ', '.join(caught) if caught else 'SURVIVED'}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
