"""Prometheus textfile metrics: dashboards and the alert rules
(templates/prometheus/djangoops.rules.yml) read them, so their names and
labels are stable. The command's name is the label `script`, not `job`: on a
scrape, Prometheus gives every series the `job` of its scrape configuration,
and a series' own `job` would become `exported_job`.

One file per command (djangoops_<project>_<command>.prom) and one per
off-site repository (djangoops_<project>_offsite_<repository>.prom), each
replaced whole by a rename, so that node_exporter never reads half a file.
Writing metrics is never worth failing a run for: a failure comes back as a
warning for the caller to log.
"""

import math
import os
import re
import time

from .log import format_seconds

# What a metric name may hold (the Prometheus data model).
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
# Enough for any file these functions write; a larger one is not theirs.
MAX_READ_BYTES = 1 << 20

JOB_PREFIX = "djangoops_job_"
JOB_LAST_SUCCESS = "djangoops_job_last_success_timestamp_seconds"
OFFSITE_LAST_SUCCESS = "djangoops_offsite_last_success_timestamp_seconds"


def escape_label_value(value):
    """VALUE as a Prometheus label value between its quotes: backslash, double
    quote and newline escaped, the three characters the text format escapes."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**pairs):
    """The label set of PAIRS, in the order given: {a="1",b="2"}."""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs.items()) + "}"


def format_value(value):
    """VALUE as a sample value: integers as they are, floats in Python's
    shortest form, NaN and infinities as Prometheus spells them."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    raise TypeError(f"a metric value must be a number, got {type(value).__name__}")


def job_metrics_file(metrics_dir, project, script):
    return os.path.join(metrics_dir, f"djangoops_{_file_part(project)}_{_file_part(script)}.prom")


def offsite_metrics_file(metrics_dir, project, repo):
    return os.path.join(metrics_dir, f"djangoops_{_file_part(project)}_offsite_{_file_part(repo)}.prom")


def write_job_metrics(metrics_dir, project, script, code, duration, extra=None, now=None, extra_labels=None):
    """Write the job file of SCRIPT: when it last ran, last succeeded, its exit
    CODE, its DURATION (seconds), then EXTRA ({name: number}, each written as
    djangoops_<name>, with EXTRA_LABELS beside project and script: a backup's
    figures carry its engine) in the order given. Returns None, or a warning
    to log.

    The last success time comes from the previous file unless CODE is 0, so
    that a failing job's alert can say since when. A run with no EXTRA figures
    (a backup that failed before it measured anything) keeps the previous
    run's own figures, so that "size of the last backup" does not drop to
    nothing. No METRICS_DIR ("" or None) means no metrics. NOW (seconds since
    the epoch) is for tests."""
    if not metrics_dir:
        return None
    extra = dict(extra or {})
    for name in extra:
        if not METRIC_NAME.match(f"djangoops_{name}"):
            raise ValueError(f"not a metric name: djangoops_{name!r}")
    path = job_metrics_file(metrics_dir, project, script)
    now = int(time.time() if now is None else now)
    old = _read_lines(path)
    last_success = now if code == 0 else _last_value(old, JOB_LAST_SUCCESS)
    tags = labels(project=project, script=script)
    lines = [
        "# HELP djangoops_job_last_run_timestamp_seconds When the job last finished.",
        "# TYPE djangoops_job_last_run_timestamp_seconds gauge",
        f"djangoops_job_last_run_timestamp_seconds{tags} {now}",
        "# HELP djangoops_job_last_success_timestamp_seconds When the job last succeeded.",
        "# TYPE djangoops_job_last_success_timestamp_seconds gauge",
        f"djangoops_job_last_success_timestamp_seconds{tags} {last_success}",
        "# HELP djangoops_job_exit_code Exit code of the last run.",
        "# TYPE djangoops_job_exit_code gauge",
        f"djangoops_job_exit_code{tags} {int(code)}",
        "# HELP djangoops_job_duration_seconds Duration of the last run.",
        "# TYPE djangoops_job_duration_seconds gauge",
        f"djangoops_job_duration_seconds{tags} {format_seconds(duration)}",
    ]
    figure_tags = labels(project=project, script=script, **dict(extra_labels or {}))
    lines += [f"djangoops_{name}{figure_tags} {format_value(value)}" for name, value in extra.items()]
    if not extra:
        lines += [line for line in old if line.startswith("djangoops_") and not line.startswith(JOB_PREFIX)]
    return _replace(path, lines)


def write_offsite_metrics(metrics_dir, project, repo, ok, pushed_bytes, seconds, missing, now=None):
    """Write the file of off-site repository REPO after a push: whether it
    worked (OK), the bytes it added after deduplication, how long it took
    (SECONDS) and how many local sets the repository still lacks (MISSING).
    The last success time survives failed pushes. Returns None, or a warning
    to log."""
    if not metrics_dir:
        return None
    path = offsite_metrics_file(metrics_dir, project, repo)
    now = int(time.time() if now is None else now)
    last_success = now if ok else _last_value(_read_lines(path), OFFSITE_LAST_SUCCESS)
    tags = labels(project=project, repository=repo)
    lines = [
        "# HELP djangoops_offsite_last_success_timestamp_seconds"
        " When every local set was last known to be in the repository.",
        "# TYPE djangoops_offsite_last_success_timestamp_seconds gauge",
        f"djangoops_offsite_last_success_timestamp_seconds{tags} {last_success}",
        "# HELP djangoops_offsite_last_attempt_timestamp_seconds When a push to the repository was last tried.",
        "# TYPE djangoops_offsite_last_attempt_timestamp_seconds gauge",
        f"djangoops_offsite_last_attempt_timestamp_seconds{tags} {now}",
        "# HELP djangoops_offsite_success Whether the last push succeeded.",
        "# TYPE djangoops_offsite_success gauge",
        f"djangoops_offsite_success{tags} {1 if ok else 0}",
        "# HELP djangoops_offsite_pushed_bytes Bytes the last push added to the repository, after deduplication.",
        "# TYPE djangoops_offsite_pushed_bytes gauge",
        f"djangoops_offsite_pushed_bytes{tags} {int(pushed_bytes)}",
        "# HELP djangoops_offsite_push_duration_seconds Duration of the last push.",
        "# TYPE djangoops_offsite_push_duration_seconds gauge",
        f"djangoops_offsite_push_duration_seconds{tags} {format_seconds(seconds)}",
        "# HELP djangoops_offsite_sets_missing Local sets the repository still lacks.",
        "# TYPE djangoops_offsite_sets_missing gauge",
        f"djangoops_offsite_sets_missing{tags} {int(missing)}",
    ]
    return _replace(path, lines)


SAMPLE = re.compile(r"(djangoops_[a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def recorded(metrics_dir, project):
    """What the files in METRICS_DIR last recorded for PROJECT, for a report:
    {"jobs": {script: {metric: value}}, "expected": {script: seconds},
    "offsite": {repository: {metric: value}}}, each metric without its
    djangoops_job_ / djangoops_offsite_ prefix (a backup's own figures under
    its script, as djangoops_<name> wrote them: backup_size_bytes...). Every
    djangoops_*.prom file is read (the schedule role writes one too) and only
    the samples whose `project` label is PROJECT are kept, so that projects
    whose names share a prefix never read each other's. A file that cannot be
    read or a line that is not a sample is left out; no METRICS_DIR, nothing."""
    out = {"jobs": {}, "expected": {}, "offsite": {}}
    if not metrics_dir:
        return out
    try:
        names = sorted(os.listdir(metrics_dir))
    except OSError:
        return out
    for name in names:
        if not (name.startswith("djangoops_") and name.endswith(".prom")):
            continue
        for line in _read_lines(os.path.join(metrics_dir, name)):
            sample = SAMPLE.fullmatch(line.strip())
            if not sample:
                continue
            metric, label_text, value = sample.groups()
            tags = {key: _unescape(text) for key, text in LABEL.findall(label_text)}
            if tags.get("project") != project:
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            if not math.isfinite(number):
                continue
            number = int(number) if number.is_integer() else number
            if metric == "djangoops_job_expected_interval_seconds" and "script" in tags:
                out["expected"][tags["script"]] = number
            elif metric.startswith("djangoops_offsite_") and "repository" in tags:
                out["offsite"].setdefault(tags["repository"], {})[metric.removeprefix("djangoops_offsite_")] = number
            elif "script" in tags:
                short = metric.removeprefix(JOB_PREFIX).removeprefix("djangoops_")
                out["jobs"].setdefault(tags["script"], {})[short] = number
    return out


def _unescape(text):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _file_part(name):
    # A name is part of a file name in the metrics directory: a slash would
    # write elsewhere. The names come from validated settings and the code, so
    # this is a programming error, not a runtime one.
    name = str(name)
    if not name or "/" in name or "\0" in name:
        raise ValueError(f"cannot be part of a metrics file name: {name!r}")
    return name


def _read_lines(path):
    """The lines of the previous file, or none when it is missing or cannot
    be read: the new file is written all the same."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_READ_BYTES)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def _last_value(lines, name):
    """The value of the first sample of NAME in LINES, or 0 when there is none
    or it is not a number (a file someone edited)."""
    for line in lines:
        if line.startswith(name + "{") or line.startswith(name + " "):
            value = line.rsplit(None, 1)[-1]
            return value if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value) else 0
    return 0


def _replace(path, lines):
    """Write LINES to PATH through a temporary file beside it and a rename.
    Returns None, or the warning to log."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        # O_NOFOLLOW and mode 0600 until complete: the metrics directory is
        # often shared with node_exporter's other collectors.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            data = memoryview(("\n".join(lines) + "\n").encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            # Readable by node_exporter, which runs as another user.
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return f"could not write metrics to {path} ({exc.strerror or exc})"
    return None
