"""The textfile metrics: the files and lines common.sh's write_metrics and
offsite.sh's offsite_metrics wrote, what survives a failed run, and a
failure to write coming back as a warning."""

import os
import pathlib
import stat
import sys

import pytest

ENGINE = pathlib.Path(__file__).resolve().parents[1]
if str(ENGINE) not in sys.path:
    sys.path.insert(0, str(ENGINE))

from djangoops import metrics  # noqa: E402

L = '{project="shop",script="backup_db"}'
R = '{project="shop",repository="nas"}'


def job_lines(now, success, code, duration):
    return [
        "# HELP djangoops_job_last_run_timestamp_seconds When the job last finished.",
        "# TYPE djangoops_job_last_run_timestamp_seconds gauge",
        f"djangoops_job_last_run_timestamp_seconds{L} {now}",
        "# HELP djangoops_job_last_success_timestamp_seconds When the job last succeeded.",
        "# TYPE djangoops_job_last_success_timestamp_seconds gauge",
        f"djangoops_job_last_success_timestamp_seconds{L} {success}",
        "# HELP djangoops_job_exit_code Exit code of the last run.",
        "# TYPE djangoops_job_exit_code gauge",
        f"djangoops_job_exit_code{L} {code}",
        "# HELP djangoops_job_duration_seconds Duration of the last run.",
        "# TYPE djangoops_job_duration_seconds gauge",
        f"djangoops_job_duration_seconds{L} {duration}",
    ]


def read(path):
    return path.read_text().splitlines()


def test_success_with_figures(tmp_path):
    warning = metrics.write_job_metrics(
        tmp_path, "shop", "backup_db", 0, 12.39, {"backup_size_bytes": 2048, "backup_tables": 31}, now=1000
    )
    assert warning is None
    path = tmp_path / "djangoops_shop_backup_db.prom"
    assert read(path) == [
        *job_lines(1000, 1000, 0, "12.3"),
        f"djangoops_backup_size_bytes{L} 2048",
        f"djangoops_backup_tables{L} 31",
    ]
    assert path.read_text().endswith("\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Nothing left behind but the file itself.
    assert os.listdir(tmp_path) == [path.name]


def test_failure_keeps_last_success_and_carries_figures(tmp_path):
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 1, {"backup_size_bytes": 2048}, now=1000)
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 7, 3.25, None, now=2000)
    path = tmp_path / "djangoops_shop_backup_db.prom"
    assert read(path) == [*job_lines(2000, 1000, 7, "3.2"), f"djangoops_backup_size_bytes{L} 2048"]
    # A second failure still carries them, and the first success time.
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 4, 0, {}, now=3000)
    assert read(path) == [*job_lines(3000, 1000, 4, "0.0"), f"djangoops_backup_size_bytes{L} 2048"]


def test_new_figures_replace_carried_ones(tmp_path):
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 1, {"old_figure": 1}, now=1000)
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 8, 1, {"new_figure": 2.5}, now=2000)
    assert read(tmp_path / "djangoops_shop_backup_db.prom") == [
        *job_lines(2000, 1000, 8, "1.0"),
        f"djangoops_new_figure{L} 2.5",
    ]


def test_first_run_failing(tmp_path):
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 3, 0.5, now=50)
    assert read(tmp_path / "djangoops_shop_backup_db.prom") == job_lines(50, 0, 3, "0.5")


def test_edited_file_gives_no_last_success(tmp_path):
    path = tmp_path / "djangoops_shop_backup_db.prom"
    path.write_text(f"djangoops_job_last_success_timestamp_seconds{L} yesterday\nother_metric 1\n")
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 1, 0, now=60)
    # Only djangoops_ lines other than the job's are carried.
    assert read(path) == job_lines(60, 0, 1, "0.0")


def test_unreadable_previous_file(tmp_path):
    # A directory in the file's place cannot be read, nor replaced.
    (tmp_path / "djangoops_shop_backup_db.prom").mkdir()
    warning = metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 0, now=1)
    assert warning.startswith(f"could not write metrics to {tmp_path}/djangoops_shop_backup_db.prom (")
    assert sorted(os.listdir(tmp_path)) == ["djangoops_shop_backup_db.prom"]


def test_missing_directory_is_a_warning(tmp_path):
    warning = metrics.write_job_metrics(tmp_path / "gone", "shop", "backup_db", 0, 0)
    assert (
        warning
        == f"could not write metrics to {tmp_path}/gone/djangoops_shop_backup_db.prom (No such file or directory)"
    )


def test_chmod_failure_is_a_warning_and_leaves_nothing(tmp_path, monkeypatch):
    def refuse(fd, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(metrics.os, "fchmod", refuse)
    warning = metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 0)
    assert warning.endswith("(Operation not permitted)")
    assert os.listdir(tmp_path) == []


def test_no_metrics_dir():
    assert metrics.write_job_metrics("", "shop", "backup_db", 0, 0) is None
    assert metrics.write_job_metrics(None, "shop", "backup_db", 0, 0) is None
    assert metrics.write_offsite_metrics("", "shop", "nas", True, 0, 0, 0) is None


def test_default_clock(tmp_path):
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 0)
    line = read(tmp_path / "djangoops_shop_backup_db.prom")[2]
    assert abs(int(line.rsplit(" ", 1)[1]) - int(metrics.time.time())) <= 2


def test_label_values_are_escaped(tmp_path):
    metrics.write_job_metrics(tmp_path, 'we"ird\\na\nme', "job", 0, 0, now=5)
    text = (tmp_path / 'djangoops_we"ird\\na\nme_job.prom').read_text()
    assert 'djangoops_job_exit_code{project="we\\"ird\\\\na\\nme",script="job"} 0\n' in text


def test_labels_and_values():
    assert metrics.labels(a="x", b='"') == '{a="x",b="\\""}'
    assert metrics.escape_label_value("a\\b\nc") == "a\\\\b\\nc"
    assert [metrics.format_value(v) for v in (True, False, 3, 0.25, float("nan"), float("inf"), float("-inf"))] == [
        "1",
        "0",
        "3",
        "0.25",
        "NaN",
        "+Inf",
        "-Inf",
    ]
    with pytest.raises(TypeError):
        metrics.format_value("12")


def test_bad_names_are_programming_errors(tmp_path):
    with pytest.raises(ValueError, match="not a metric name"):
        metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 0, {"bad-name": 1})
    with pytest.raises(ValueError, match="metrics file name"):
        metrics.write_job_metrics(tmp_path, "../etc", "backup_db", 0, 0)
    with pytest.raises(ValueError, match="metrics file name"):
        metrics.write_offsite_metrics(tmp_path, "shop", "", True, 0, 0, 0)
    assert os.listdir(tmp_path) == []


def offsite_lines(success, attempt, ok, pushed, seconds, missing):
    return [
        "# HELP djangoops_offsite_last_success_timestamp_seconds When every local set was last known to be in the"
        " repository.",
        "# TYPE djangoops_offsite_last_success_timestamp_seconds gauge",
        f"djangoops_offsite_last_success_timestamp_seconds{R} {success}",
        "# HELP djangoops_offsite_last_attempt_timestamp_seconds When a push to the repository was last tried.",
        "# TYPE djangoops_offsite_last_attempt_timestamp_seconds gauge",
        f"djangoops_offsite_last_attempt_timestamp_seconds{R} {attempt}",
        "# HELP djangoops_offsite_success Whether the last push succeeded.",
        "# TYPE djangoops_offsite_success gauge",
        f"djangoops_offsite_success{R} {ok}",
        "# HELP djangoops_offsite_pushed_bytes Bytes the last push added to the repository, after deduplication.",
        "# TYPE djangoops_offsite_pushed_bytes gauge",
        f"djangoops_offsite_pushed_bytes{R} {pushed}",
        "# HELP djangoops_offsite_push_duration_seconds Duration of the last push.",
        "# TYPE djangoops_offsite_push_duration_seconds gauge",
        f"djangoops_offsite_push_duration_seconds{R} {seconds}",
        "# HELP djangoops_offsite_sets_missing Local sets the repository still lacks.",
        "# TYPE djangoops_offsite_sets_missing gauge",
        f"djangoops_offsite_sets_missing{R} {missing}",
    ]


def test_offsite_success_then_failure(tmp_path):
    path = tmp_path / "djangoops_shop_offsite_nas.prom"
    assert metrics.write_offsite_metrics(tmp_path, "shop", "nas", True, 5000, 61.27, 0, now=1000) is None
    assert read(path) == offsite_lines(1000, 1000, 1, 5000, "61.2", 0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    metrics.write_offsite_metrics(tmp_path, "shop", "nas", False, 0, 3.0, 2, now=2000)
    assert read(path) == offsite_lines(1000, 2000, 0, 0, "3.0", 2)


def test_offsite_first_failure_and_warning(tmp_path):
    metrics.write_offsite_metrics(tmp_path, "shop", "nas", 0, 0, 0, 4, now=7)
    assert read(tmp_path / "djangoops_shop_offsite_nas.prom") == offsite_lines(0, 7, 0, 0, "0.0", 4)
    warning = metrics.write_offsite_metrics(tmp_path / "gone", "shop", "nas", 1, 0, 0, 0)
    assert warning.startswith(f"could not write metrics to {tmp_path}/gone/djangoops_shop_offsite_nas.prom")


# --- what a report reads back --------------------------------------------------------------------


def test_recorded_reads_back_what_the_writers_wrote_for_this_project_only(tmp_path):
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 0, 1, {"backup_size_bytes": 2048}, now=1000)
    metrics.write_job_metrics(tmp_path, "shop", "verify_db", 10, 2.5, None, now=2000)
    metrics.write_offsite_metrics(tmp_path, "shop", "nas", False, 0, 1.5, 2, now=3000)
    # Another project whose name starts like this one's, and the schedule role's file.
    metrics.write_job_metrics(tmp_path, "shop_2", "backup_db", 5, 1, now=4000)
    (tmp_path / "djangoops_shop.schedule.prom").write_text(
        "# TYPE djangoops_job_expected_interval_seconds gauge\n"
        'djangoops_job_expected_interval_seconds{project="shop",script="backup_db"} 86400\n'
        'djangoops_job_expected_interval_seconds{project="shop_2",script="backup_db"} 60\n'
    )
    assert metrics.recorded(str(tmp_path), "shop") == {
        "jobs": {
            "backup_db": {
                "last_run_timestamp_seconds": 1000,
                "last_success_timestamp_seconds": 1000,
                "exit_code": 0,
                "duration_seconds": 1,
                "backup_size_bytes": 2048,
            },
            "verify_db": {
                "last_run_timestamp_seconds": 2000,
                "last_success_timestamp_seconds": 0,
                "exit_code": 10,
                "duration_seconds": 2.5,
            },
        },
        "expected": {"backup_db": 86400},
        "offsite": {
            "nas": {
                "last_success_timestamp_seconds": 0,
                "last_attempt_timestamp_seconds": 3000,
                "success": 0,
                "pushed_bytes": 0,
                "push_duration_seconds": 1.5,
                "sets_missing": 2,
            }
        },
    }
    assert metrics.recorded(str(tmp_path), "shop_2")["jobs"]["backup_db"]["exit_code"] == 5
    assert metrics.recorded(str(tmp_path), "shop_2")["expected"] == {"backup_db": 60}


def test_recorded_leaves_out_what_is_not_a_sample_of_its_own(tmp_path):
    (tmp_path / "djangoops_shop_edited.prom").write_text(
        "not a sample\n"
        'djangoops_job_exit_code{project="shop",script="a"} many\n'
        'djangoops_job_exit_code{project="shop",script="b"} NaN\n'
        'djangoops_job_exit_code{project="shop",script="c"} +Inf\n'
        'djangoops_job_exit_code{project="shop"} 1\n'
        'djangoops_job_exit_code{project="sh\\"op",script="d"} 1\n'
        'node_load1{project="shop",script="e"} 1\n'
        'djangoops_job_exit_code{project="shop",script="f\\\\g"} 3\n'
    )
    (tmp_path / "other.prom").write_text('djangoops_job_exit_code{project="shop",script="h"} 1\n')
    (tmp_path / "djangoops_unreadable.prom").mkdir()
    assert metrics.recorded(str(tmp_path), "shop") == {
        "jobs": {"f\\g": {"exit_code": 3}},
        "expected": {},
        "offsite": {},
    }
    assert metrics.recorded(str(tmp_path), 'sh"op')["jobs"] == {"d": {"exit_code": 1}}


def test_recorded_without_a_directory_is_empty(tmp_path):
    empty = {"jobs": {}, "expected": {}, "offsite": {}}
    assert metrics.recorded("", "shop") == empty
    assert metrics.recorded(str(tmp_path / "gone"), "shop") == empty


def test_a_backups_figures_carry_its_engine_and_the_job_series_do_not(tmp_path):
    metrics.write_job_metrics(
        tmp_path, "shop", "backup_db", 0, 1, {"backup_size_bytes": 2048}, now=1000, extra_labels={"engine": "mysql"}
    )
    text = (tmp_path / "djangoops_shop_backup_db.prom").read_text()
    assert 'djangoops_backup_size_bytes{project="shop",script="backup_db",engine="mysql"} 2048\n' in text
    assert 'djangoops_job_exit_code{project="shop",script="backup_db"} 0\n' in text
    # A failed run keeps those figures as they were, label and all.
    metrics.write_job_metrics(tmp_path, "shop", "backup_db", 4, 1, None, now=2000, extra_labels={"engine": "mysql"})
    text = (tmp_path / "djangoops_shop_backup_db.prom").read_text()
    assert 'djangoops_backup_size_bytes{project="shop",script="backup_db",engine="mysql"} 2048\n' in text
    assert metrics.recorded(str(tmp_path), "shop")["jobs"]["backup_db"]["backup_size_bytes"] == 2048
