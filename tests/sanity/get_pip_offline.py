# Copyright: ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for ansible-test's ``get-pip-<version>.py`` bootstrap script.

``ansible-test sanity --venv`` creates an empty virtual environment per sanity test and bootstraps
pip into it by running ``python get_pip_X_Y.py --disable-pip-version-check pip==X.Y
--no-setuptools --no-wheel`` from ``~/.ansible/test/cache/``; when that file is missing it tries to
download it from a host that is not reachable from our machines.  scripts/sanity.sh installs this
file there instead.  It does the same job with the standard library: ``ensurepip`` puts the pip
wheel bundled with Python into the venv (no network), then that pip installs the exact pip version
ansible-test asked for from the configured package index.  Not part of the collection's content.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY = ('--no-setuptools', '--no-wheel')


def main(argv: list[str]) -> int:
    """Bootstrap pip, then install the requested packages (normally ``pip==X.Y``)."""
    pip_args = [arg for arg in argv if arg not in GET_PIP_ONLY]
    # ensurepip in a child process: in-process it sets PIP_CONFIG_FILE=/dev/null in os.environ,
    # which would hide the index/certificate settings of /etc/pip.conf from the install below.
    boot = subprocess.run([sys.executable, '-m', 'ensurepip', '--upgrade'],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if boot.returncode:
        sys.stderr.write(boot.stdout.decode('utf-8', 'replace'))
        sys.stderr.write('ensurepip failed (on Debian: apt-get install python3-venv)\n')
        return boot.returncode
    cmd = [sys.executable, '-m', 'pip', 'install', '--quiet'] + pip_args
    if '--no-setuptools' in argv:
        # Python 3.11's ensurepip also installs setuptools; get-pip.py would not have.
        # (Python 3.12+ installs none: pip's "Skipping setuptools" note goes to /dev/null.)
        subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '--quiet', '--yes', 'setuptools'],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.call(cmd)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
