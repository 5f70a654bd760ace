"""The commands, one module each: what backup_db.sh, restore_db.sh, verify_db.sh,
list_db_backups.sh, push_db_backups.sh, fetch_db_backup.sh, check_offsite.sh and
the scheduled jobs do, written once against the engine interface
(engines/base.py). Each module's main(context, args) parses its arguments as the
scripts always did and raises errors.Failure to end with an exit code."""

import re
import sys
import types

from ..context import Stop
from ..errors import Exit


def parse(args, usage, *, flags=(), options=None, positional=0):
    """ARGS as the scripts parsed them: FLAGS ("--yes", ...) take no value,
    OPTIONS ({"--lock-wait": "lock_wait", ...}) take the next argument, at most
    POSITIONAL other arguments; -h/--help prints USAGE and stops with 0; anything
    else prints USAGE on stderr and stops with 2. Returns a namespace with one
    attribute per flag and option (dashes become underscores; unset ones None)
    and .positional."""
    options = dict(options or {})
    values = {_attribute(flag): False for flag in flags}
    values.update({name: None for name in options.values()})
    values["quiet"] = False
    rest = []
    args = list(args)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(usage)
            raise Stop(Exit.OK)
        if arg in ("-q", "--quiet"):
            values["quiet"] = True
        elif arg in flags:
            values[_attribute(arg)] = True
        elif arg in options:
            if not args:
                _usage_error(usage, f"{arg} needs a value")
            values[options[arg]] = args.pop(0)
        elif arg.startswith("-") or len(rest) >= positional:
            _usage_error(usage)
        else:
            rest.append(arg)
    return types.SimpleNamespace(positional=rest, **values)


def _attribute(flag):
    return flag.lstrip("-").replace("-", "_")


def _usage_error(usage, message=None):
    if message:
        print(message, file=sys.stderr)
    print(usage, file=sys.stderr)
    raise Stop(Exit.USAGE)


def whole_seconds(value, what, lowest=0):
    """VALUE (a string from the command line) as whole seconds >= LOWEST, or
    a usage Failure naming WHAT."""
    from ..errors import Failure

    if value is None or re.fullmatch(r"[0-9]+", value) is None or int(value) < lowest:
        at_least = f" (at least {lowest})" if lowest else ""
        raise Failure(Exit.USAGE, f"{what} takes whole seconds{at_least}, got '{value}'")
    return int(value)
