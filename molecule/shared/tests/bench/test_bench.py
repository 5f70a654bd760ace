"""The benchmark in quick mode on each scenario server: it must measure every method,
restore every table's rows, and write a report whose ratios are numbers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
BENCH = ROOT / "bench" / "bench.py"
ROWS = ("cookbook (seed)", "project scripts", "floor (dump → /dev/null)", "dump piped to zstd -3, no checks")
RATIOS = ("backup time, project/seed", "backup time, project/floor", "backup size, project/seed",
          "restore time, project/seed")  # fmt: skip


@pytest.fixture(scope="module")
def quick(host, tmp_path_factory):
    variables = host.ansible.get_variables()
    engine, container = variables["db_backup_engine"], variables["inventory_hostname"]
    out = tmp_path_factory.mktemp(engine)
    measured = subprocess.run(
        [sys.executable, BENCH, "measure", engine, container, "--size-mb", "3", "--rounds", "2",
         "--json", out / "run.json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr[-4000:]
    report = subprocess.run(
        [sys.executable, BENCH, "report", out / "run.json", "--markdown", out / "benchmark.md", "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {
        "engine": engine,
        "run": json.loads((out / "run.json").read_text()),
        "report": report,
        "markdown": (out / "benchmark.md").read_text() if (out / "benchmark.md").exists() else "",
    }


def cells(markdown, engine, label):
    for line in markdown.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) > 2 and parts[0] == engine and parts[1] == label:
            return parts
    return None


def test_report_check_passes(quick):
    assert quick["report"].returncode == 0, quick["report"].stderr


def test_every_method_has_a_row_with_figures(quick):
    for label in ROWS:
        row = cells(quick["markdown"], quick["engine"], label)
        assert row, f"no row for {label} in:\n{quick['markdown']}"
        # wall, CPU, RSS and size are numbers (a median, maybe with its range)
        for value in row[2:6]:
            assert re.match(r"^\d+(\.\d+)?", value), f"{label}: {value!r} is not a figure"


def test_ratios_are_numbers(quick):
    for ratio in RATIOS:
        row = cells(quick["markdown"], quick["engine"], ratio)
        assert row, f"no ratio {ratio}"
        median = float(row[2].split()[0])
        assert 0 < median < 1000


def test_rounds_alternate_and_every_method_ran_each_round(quick):
    results = quick["run"]["results"]
    for method in ("seed", "project", "floor", "zstd"):
        assert len(results[method]["backup"]) == 2
    for method in ("seed", "project"):
        assert len(results[method]["restore"]) == 2
    # Round by round, not all of one method then all of the next; the order rotates.
    sequence = quick["run"]["sequence"]
    assert [r for r, _, _ in sequence] == sorted(r for r, _, _ in sequence)
    firsts = [next(m for r, phase, m in sequence if r == n and phase == "backup") for n in (0, 1)]
    assert firsts[0] != firsts[1], sequence


def test_every_restore_brought_back_every_row(quick):
    run = quick["run"]
    assert all(run["rows"][t] > 0 for t in ("auth_user", "django_session", "blog_article", "blog_comment"))
    for method in ("seed", "project"):
        assert all(r["rows_match"] for r in run["results"][method]["restore"]), method
    assert run["restores_ok"]


def test_project_backup_logged_its_credential_lookup(quick):
    assert all(r["credentials_log_s"] is not None for r in quick["run"]["results"]["project"]["backup"])
