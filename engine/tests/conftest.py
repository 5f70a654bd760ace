"""Makes the engine's package importable from the tests, wherever pytest is run
from, and gives every test module the command tests' shared fixtures (cmd,
held_locks, from command_helpers) without importing them one by one."""

import pathlib
import sys

ENGINE = str(pathlib.Path(__file__).resolve().parents[1])
if ENGINE not in sys.path:
    sys.path.insert(0, ENGINE)

# After the path is set: command_helpers imports the engine's package.
from command_helpers import cmd, held_locks  # noqa: E402

__all__ = ["cmd", "held_locks"]
