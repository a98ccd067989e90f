"""Lab VMs only (installed by lab/vm/customize.sh, loaded by a .pth file at Python start-up).

Ansible runs every module from the zip it sends (AnsiballZ), and Python compiles each .py it
imports from a zip again on every run: zip archives hold no __pycache__. Under QEMU TCG that is
about 1.5 s of each 2.2-2.5 s module run (python -X importtime on a lab VM), and most of the lab's
time. This keeps the compiled code objects in /var/cache/lab-pyzip, keyed by the file's path
inside the zip and a hash of its source, so only a changed file is compiled again. What runs is
the same code: the same source gives the same code object, with the current run's file name.
Nothing of the collection depends on it; real hosts do not have it.
"""

import marshal
import os
import zipimport

CACHE_DIR = "/var/cache/lab-pyzip"
_compile = getattr(zipimport, "_compile_source", None)


def _renamed(code, filename):
    """``code`` and the code objects inside it with co_filename = ``filename``."""
    consts = tuple(_renamed(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _cached_compile(pathname, source):
    # hashlib only when a zip is imported from (not at every Python start-up)
    import hashlib  # pylint: disable=import-outside-toplevel

    inner = pathname.rsplit(".zip" + os.sep, 1)[-1]
    key = hashlib.sha256(inner.encode("utf-8", "surrogateescape") + b"\0" + source).hexdigest()
    path = os.path.join(CACHE_DIR, key)
    try:
        with open(path, "rb") as fh:
            code = marshal.load(fh)
        return _renamed(code, pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile(pathname, source)
    tmp = "%s.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as fh:
            marshal.dump(code, fh)
        os.replace(tmp, path)
    except OSError:
        pass
    return code


if _compile is not None and os.path.isdir(CACHE_DIR) and os.access(CACHE_DIR, os.W_OK):
    zipimport._compile_source = _cached_compile
