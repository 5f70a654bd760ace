"""tools/log_alarms.py: which lines of a step's log fail a step that passed.

The logs below are the kinds of output the suite's steps print; several provoke
alarming lines on purpose, which stay inside this test."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from log_alarms import alarms

ROOT = Path(__file__).resolve().parents[2]

GREEN_PLAY = """\
TASK [Wait for systemd to finish booting] **************************************
ok: [package-debian12]

PLAY RECAP *********************************************************************
package-debian12           : ok=1    changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
INFO     Molecule executed 1 scenario (1 successful)
package                   : actions=5  successful=4  disabled=0  skipped=0  missing=0  failed=0
============================== 6 passed in 16.35s ==============================
"""

IGNORED_FAILURE = """\
TASK [Try the restore without confirmation] ************************************
fatal: [ops-debian12]: FAILED! =>
    changed: false
    rc: 2
    stderr: 'ERROR: refusing to restore: confirm_database is not set'
...ignoring

TASK [Next] ********************************************************************
ok: [ops-debian12]
"""


@pytest.mark.parametrize(
    "log",
    [GREEN_PLAY, IGNORED_FAILURE, "\x1b[0;32mok: [h]\x1b[0m\n", "ERRORS_FILE=x FAILEDOVER=1 critical error failed\n"],
    ids=["green-play", "ignored-failure", "colours", "not-a-word"],
)
def test_green_logs_have_no_alarms(log):
    assert alarms(log) == []


@pytest.mark.parametrize(
    "line",
    [
        # What every scenario printed before there was a default scenario.
        "CRITICAL 'molecule/default/molecule.yml' glob failed.  Exiting.",
        # Molecule's docker driver waiting for its containers.
        "FAILED - RETRYING: [localhost]: Wait for instance(s) deletion to complete (299 retries left).",
        "[ERROR]: couldn't resolve module/action 'nope'",
        "FAILED tests/test_package.py::test_example_playbook - AssertionError",
        "ERROR tests/test_package.py - ModuleNotFoundError",
        "\x1b[0;31mfatal: [h]: FAILED! => {}\x1b[0m",
        "[21:50:16] ERROR: the Docker engine (dockerd) exited: failed to start daemon",
    ],
)
def test_failure_lines_are_alarms(line):
    uncoloured = line.replace("\x1b[0;31m", "").replace("\x1b[0m", "")
    assert alarms(GREEN_PLAY + line + "\n") == [(GREEN_PLAY.count("\n") + 1, uncoloured)]


def test_a_failure_not_ignored_is_an_alarm_even_if_a_later_task_is_ignored():
    log = "TASK [a] ***\nfatal: [h]: FAILED! =>\n    msg: boom\n\nTASK [b] ***\nfatal: [h]: FAILED! =>\n...ignoring\n"
    assert alarms(log) == [(2, "fatal: [h]: FAILED! =>")]


def test_allowed_lines_are_only_those_listed():
    retry = "FAILED - RETRYING: [django_logging-debian12]: Wait for the site to answer (29 retries left)."
    assert alarms(retry + "\n") == []
    other = "FAILED - RETRYING: [layout-debian12]: Wait for the site to answer (29 retries left)."
    assert alarms(other + "\n") == [(1, other)]


def test_command_lists_the_lines_and_fails(tmp_path):
    log = tmp_path / "step.log"
    log.write_text(GREEN_PLAY + "CRITICAL something\n")
    result = subprocess.run(
        [sys.executable, ROOT / "tools/log_alarms.py", log], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (1, f"{log}:{GREEN_PLAY.count(chr(10)) + 1}: CRITICAL something\n")
    log.write_text(GREEN_PLAY)
    result = subprocess.run(
        [sys.executable, ROOT / "tools/log_alarms.py", log], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, "")
