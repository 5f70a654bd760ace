"""The test servers' bytecode cache for code imported from zip files.

Python compiles what it imports from a zip file every time: zipimport writes no
.pyc. Ansible sends each task's module with its module_utils as a zip, so each
of the suite's module runs on a test server compiled the same few thousand lines
of Ansible again (measured: a `file` task 198 ms of CPU on the server, 135 ms
with this cache). The image loads this module at every start of its system
Python (a .pth file); it keeps each compiled module, keyed by the sha256 of the
interpreter's cache tag and the source, in a directory only root writes, and
hands it back under the file name of the import that asked. The code objects are
those compile() made of the same source: nothing that runs changes.

Test bed only: the roles never install it, and a real server runs Ansible's
modules without it."""

import hashlib
import marshal
import os
import sys
import zipimport

CACHE = "/var/cache/djangoops-test/zip-bytecode"
_TAG = sys.implementation.cache_tag.encode()
_compile = zipimport._compile_source


def _renamed(code, filename):
    """CODE, and the code objects it holds, as compiled from FILENAME."""
    consts = tuple(_renamed(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _compile_source(pathname, source):
    path = os.path.join(CACHE, hashlib.sha256(_TAG + b"\0" + source).hexdigest())
    try:
        with open(path, "rb") as f:
            return _renamed(marshal.load(f), pathname)
    except Exception:  # absent, unreadable or damaged: compile it
        pass
    code = _compile(pathname, source)
    if os.geteuid() == 0:
        try:
            os.makedirs(CACHE, mode=0o700, exist_ok=True)
            partial = f"{path}.{os.getpid()}"
            with open(partial, "wb") as f:
                marshal.dump(code, f)
            os.replace(partial, path)
        except OSError:
            pass
    return code


zipimport._compile_source = _compile_source
