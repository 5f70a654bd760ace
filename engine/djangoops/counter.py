"""The row counter of a text dump, a stage of the dump's own pipeline:

    dump | python3 -I counter.py ENGINE OUT | compressor

It passes its input through unchanged, in large chunks, while it counts the
rows of every table and whether the dump ended with its end marker; at the end
of its input it writes the counts as JSON to OUT. So the manifest describes the
very bytes stored, and the counter fails (or ends) as a stage of the pipeline:
no FIFO that a counter which died before opening it could leave the dump
waiting on. A process of its own, so that the data never passes through the
command's Python; -I, so that nothing the project user can write (PYTHONPATH,
the working directory) is imported.
"""

import fcntl
import json
import os
import sys

if __name__ == "__main__":  # pragma: no cover - the import path of the script as run
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from djangoops.manifest import count_mysql, count_postgresql

COUNTERS = {"postgresql": count_postgresql, "mysql": count_mysql}
CHUNK = 1 << 20
# Pipes as large as a chunk (Linux's default limit for any user): a chunk written
# downstream fits at once, so the compressor works on it while this counts it, and
# the dump writes ahead meanwhile. With the default 64 KiB, each stage waited for
# the next one in turn.
PIPE_SIZE = 1 << 20


def widen(fd):
    """Make the pipe FD hold PIPE_SIZE bytes; anything else (a file, a limit
    set lower, another system) is left as it is."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError):
        pass


def passed_through(source, sink):
    """The lines of SOURCE (a binary file), each chunk written to SINK (a file
    descriptor) before its lines are counted."""
    rest = b""
    while chunk := source.read(CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(sink, view) :]
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def main(argv, source=None, sink=None):
    if len(argv) != 3 or argv[1] not in COUNTERS:
        sys.stderr.write("usage: counter.py postgresql|mysql OUT\n")
        return 2
    source = sys.stdin.buffer if source is None else source
    sink = sys.stdout.fileno() if sink is None else sink
    try:
        widen(source.fileno())
    except (OSError, ValueError):
        pass  # not a file (the tests' buffers)
    widen(sink)
    counts = COUNTERS[argv[1]](passed_through(source, sink))
    with open(argv[2], "w", encoding="utf-8") as out:
        json.dump({"tables": dict(sorted(counts.tables.items())), "complete": counts.complete}, out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv))
