"""The benchmark in quick mode on each scenario server: it must measure every method,
restore every table's rows, and write a report whose ratios are numbers; then, as
tools/bench does after the rounds, push nightly backups to an off-site repository and
report the push times and the repository's growth."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
BENCH = ROOT / "bench" / "bench.py"
ROWS = ("cookbook (seed)", "project scripts", "django-dbbackup 5.4.0 (--compress)", "floor (dump → /dev/null)",
        "dump piped to zstd at the project's level, no checks")  # fmt: skip
RATIOS = ("backup time, project/seed", "backup time, project/floor", "backup size, project/seed",
          "restore time, project/seed", "backup time, project/django-dbbackup",
          "restore time, project/django-dbbackup")  # fmt: skip
METHODS = ("seed", "project", "dbbackup", "floor", "zstd")
RESTORED = ("seed", "project", "dbbackup")


@pytest.fixture(scope="module")
def quick(host, tmp_path_factory):
    variables = host.ansible.get_variables()
    engine, container = variables["db_backup_engine"], variables["inventory_hostname"]
    out = tmp_path_factory.mktemp(engine)
    bench("measure", engine, container, "--size-mb", "3", "--rounds", "2", "--json", out / "run.json")
    report = subprocess.run(
        [sys.executable, BENCH, "report", out / "run.json", "--markdown", out / "benchmark.md", "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return {
        "engine": engine,
        "container": container,
        "out": out,
        "run": json.loads((out / "run.json").read_text()),
        "report": report,
        "markdown": (out / "benchmark.md").read_text() if (out / "benchmark.md").exists() else "",
    }


def bench(*args):
    """bench.py ARGS, which must succeed."""
    ran = subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr[-4000:]


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
    for method in METHODS:
        assert len(results[method]["backup"]) == 2
    for method in RESTORED:
        assert len(results[method]["restore"]) == 2
    # Round by round, not all of one method then all of the next; the order rotates.
    sequence = quick["run"]["sequence"]
    assert [r for r, _phase, _method in sequence] == sorted(r for r, _phase, _method in sequence)
    firsts = [next(m for r, phase, m in sequence if r == n and phase == "backup") for n in (0, 1)]
    assert firsts[0] != firsts[1], sequence


def test_every_restore_brought_back_every_row(quick):
    run = quick["run"]
    assert all(run["rows"][t] > 0 for t in ("auth_user", "django_session", "blog_article", "blog_comment"))
    for method in RESTORED:
        assert all(r["rows_match"] for r in run["results"][method]["restore"]), method
    assert run["restores_ok"]


def test_project_backup_logged_its_credential_lookup(quick):
    assert all(r["credentials_log_s"] is not None for r in quick["run"]["results"]["project"]["backup"])


@pytest.fixture(scope="module")
def nightly(host, quick):
    """After the rounds: bench/playbooks/offsite.yml makes the server its own backup host,
    then a first backup and two nights, each pushed; then the report of both."""
    out, engine, container = quick["out"], quick["engine"], quick["container"]
    keys = out / "keys"
    keys.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "client"], check=True)
    applied = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", container,
         ROOT / "bench" / "playbooks" / "offsite.yml", "-e", f"bench_offsite_keys={keys}"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stdout[-4000:]
    bench("offsite", engine, container, "--nights", "2", "--json", out / "offsite.json")
    bench("report", out / "run.json", out / "offsite.json", "--markdown", out / "with-offsite.md", "--check")
    return {
        "nights": json.loads((out / "offsite.json").read_text())["offsite"]["nights"],
        "markdown": (out / "with-offsite.md").read_text(),
    }


def test_each_night_was_pushed_and_the_repository_grew(host, nightly):
    nights = nightly["nights"]
    assert [n["night"] for n in nights] == [0, 1, 2]
    assert all(n["pushed_bytes"] > 0 and n["push_s"] > 0 for n in nights), nights
    sizes = [n["repository_bytes"] for n in nights]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3, sizes
    # Every local set is in the repository, as the scripts' own listing reads it.
    listing = host.run("/home/shop/commands/list_db_backups.sh --no-checksums </dev/null")
    assert listing.rc == 0, listing.stderr
    sets = [line.split() for line in listing.stdout.splitlines() if " shop_" in line]
    assert len(sets) == 3, listing.stdout
    assert all(fields[-1] == "backuphost" for fields in sets), listing.stdout


def test_the_report_has_the_off_site_table(nightly, quick):
    rows = [
        line for line in nightly["markdown"].splitlines() if line.startswith(f"| {quick['engine']} | uniform | ")
    ]  # fmt: skip
    assert [r.split("|")[3].strip() for r in rows] == ["first", "1", "2"], nightly["markdown"]
    assert f"- **{quick['engine']}, uniform**: push " in nightly["markdown"]


@pytest.fixture(scope="module")
def pitr(host, quick, nightly):
    """After the off-site nights, as tools/bench does on a PostgreSQL server: bench/playbooks/
    pitr.yml turns point-in-time recovery on, then bench.py pitr measures with one night (the
    archive timeout shortened, so that a write waits seconds, not a minute, under this small
    load), and the report takes its table."""
    out, engine, container = quick["out"], quick["engine"], quick["container"]
    if engine != "postgresql":
        pytest.skip("point-in-time recovery is built for PostgreSQL only so far")
    applied = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", container,
         ROOT / "bench" / "playbooks" / "pitr.yml", "-e", "db_backup_pitr_archive_timeout=5"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stdout[-4000:]
    bench("pitr", engine, container, "--nights", "1", "--load-seconds", "12", "--json", out / "pitr.json")
    bench("report", out / "run.json", out / "pitr.json", "--markdown", out / "with-pitr.md", "--check")
    return {"run": json.loads((out / "pitr.json").read_text())["pitr"], "markdown": (out / "with-pitr.md").read_text()}


def test_point_in_time_figures_come_from_checked_restores_and_a_growing_repository(pitr):
    run = pitr["run"]
    # Both restores brought back what their moment held, table by table (the restore to a
    # time: the load's updates and every marker before the moment, not the one after).
    assert run["restore_to_time"]["rows_match"] and run["dump_restore"]["rows_match"], run
    assert run["load"]["archive_waits_s"] and run["load"]["wal_bytes"] > 0, run["load"]
    nights = run["nights"]["list"]
    assert [n["night"] for n in nights] == [0, 1]
    # The night's run is the schedule's (auto): its WAL, a few percent of the cluster, is in the
    # archive, and no backup was taken, the backups' part of the repository as it was.
    assert nights[1]["kind"] == "none", nights
    assert nights[1]["backup"] == nights[0]["backup"] and nights[1]["archive"] > nights[0]["archive"], nights
    assert run["full_backup"]["repository_bytes"] > 0, run["full_backup"]


def test_the_report_has_the_point_in_time_table(pitr):
    rows = [line for line in pitr["markdown"].splitlines() if line.startswith("| uniform | ")]
    assert len(rows) == 1, pitr["markdown"]
    cells = [c.strip() for c in rows[0].strip().strip("|").split("|")]
    for value in cells[1:9]:
        assert re.match(r"^\d+(\.\d+)?", value), f"{value!r} is not a figure in {rows[0]}"
