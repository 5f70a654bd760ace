#!/usr/bin/env python
"""Lines in a step's log that look like failures: tools/test fails a step that passed but printed any.

    python3 tools/log_alarms.py LOG...

A line looks like a failure when it has CRITICAL, ERROR or FAILED as a word
(capitals: Ansible's recap `failed=0` is not one). It is allowed only

- inside the result of an Ansible task that failed on purpose and says so:
  from `fatal: [HOST]: FAILED! =>` to the `...ignoring` that Ansible prints for
  a task with `ignore_errors: true`, before the next task starts; or
- when it matches one of ALLOWED below, each with its reason.

Tests that provoke failures on purpose keep them in their captured output,
which pytest prints only when a test fails. Prints the alarming lines with
their file and line number; exits 1 when there is any.
"""

import re
import sys
from pathlib import Path

ALARM = re.compile(r"(?<![A-Za-z])(CRITICAL|ERROR|FAILED)(?![A-Za-z])")

# (pattern matched against the whole line, why the line is expected in a green run)
ALLOWED = [
    (
        r"FAILED - RETRYING: \[django_logging-debian1[23]\]: Wait for the site to answer \(\d+ retries left\)\.",
        "molecule/shared/playbooks/prepare_logging.yml polls gunicorn, just started, until it answers; "
        "each poll that finds it still starting prints this",
    ),
]

_ALLOWED = [re.compile(pattern) for pattern, _reason in ALLOWED]
_FAILED_TASK = re.compile(r"^fatal: \[[^\]]+\]: FAILED! =>")
_IGNORING = "...ignoring"
_NEXT = re.compile(r"^(TASK|PLAY|RUNNING HANDLER) \[|^PLAY RECAP")
# Colours, when the output went to a terminal as well as to the log.
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def ignored_failures(lines):
    """Indexes of lines inside the results of failed tasks that Ansible then ignored."""
    inside = set()
    start = None
    for i, line in enumerate(lines):
        if _FAILED_TASK.match(line):
            start = i
        elif start is not None and line.strip() == _IGNORING:
            inside.update(range(start, i + 1))
            start = None
        elif _NEXT.match(line):
            start = None
    return inside


def alarms(text):
    """(line number, line) of every line that looks like a failure and is not allowed."""
    lines = _ESCAPES.sub("", text).splitlines()
    ignored = ignored_failures(lines)
    return [
        (i + 1, line)
        for i, line in enumerate(lines)
        if ALARM.search(line) and i not in ignored and not any(p.fullmatch(line.strip()) for p in _ALLOWED)
    ]


def main(paths):
    found = 0
    for path in paths:
        for number, line in alarms(Path(path).read_text(errors="replace")):
            print(f"{path}:{number}: {line}")
            found += 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
