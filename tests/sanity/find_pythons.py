# Copyright: ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find real interpreters for the target Python versions ansible-test supports.

``scripts/sanity.sh --pythons`` compiles and imports the modules on every other Python found, so a
module that would break on an older managed host (Ubuntu 22.04 on BlueField: 3.10) is caught.
ansible-test looks interpreters up as ``pythonX.Y`` on PATH; a pyenv shim found there runs only
when that version is pyenv's global one and otherwise exits 127, which ansible-test reports as a
failed test.  So each candidate is run once and kept only when it answers with its version.
Prints one ``X.Y DIRECTORY`` line per version found.  Not part of the collection's content.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

PROBE = 'import sys; print("%d.%d" % sys.version_info[:2])'


def _release(interpreter: str) -> tuple[int, ...]:
    """(3, 10, 13) for .../versions/3.10.13/bin/python3.10; non-numeric parts count as 0."""
    name = os.path.basename(os.path.dirname(os.path.dirname(interpreter)))
    return tuple(int(part) if part.isdigit() else 0 for part in name.split('.'))


def candidates(version: str, path: str | None, home: str) -> list[str]:
    """Places where ``pythonX.Y`` may live: PATH, pyenv's versions (newest first), /usr/local/bin, /usr/bin."""
    exe = 'python' + version
    found = [shutil.which(exe, path=path)]
    pyenv = glob.glob(os.path.join(home, '.pyenv', 'versions', version + '.*', 'bin', exe))
    found += sorted(pyenv, key=_release, reverse=True)
    found += [os.path.join(d, exe) for d in ('/usr/local/bin', '/usr/bin') if os.path.exists(os.path.join(d, exe))]
    return [c for c in found if c]


def answers(interpreter: str, version: str) -> bool:
    """True when the interpreter runs and reports VERSION."""
    try:
        out = subprocess.run([interpreter, '-c', PROBE], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find(versions: list[str], skip: str, path: str | None, home: str, probe=answers) -> list[tuple[str, str]]:
    """(version, directory) for each version other than SKIP that has a working interpreter."""
    result = []
    for version in versions:
        if version == skip:
            continue
        for candidate in candidates(version, path, home):
            if probe(candidate, version):
                result.append((version, os.path.dirname(os.path.realpath(candidate))))
                break
    return result


def main(argv: list[str]) -> int:
    """argv: the main Python version (skipped), then the versions to look for."""
    for version, directory in find(argv[1:], argv[0], os.environ.get('PATH'), os.path.expanduser('~')):
        print(version, directory)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
