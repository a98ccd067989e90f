# Copyright: ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests for the sanity gate's helpers: ``pytest tests/sanity`` (project venv)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import doc_yaml_check  # noqa: E402  pylint: disable=wrong-import-position
import find_pythons  # noqa: E402  pylint: disable=wrong-import-position
import get_pip_offline  # noqa: E402  pylint: disable=wrong-import-position

GOOD = '''
DOCUMENTATION = r"""
module: good
short_description: fine
"""
EXAMPLES = r"""
- name: Example
  ipsec_offload.mlx5.good:
"""
RETURN = r""" # """
'''

# the colon after "key" inside a plain scalar is what broke real DOCUMENTATION blocks here
BAD_DOC = '''
DOCUMENTATION = r"""
module: bad
description: only with a new key: re-creating an SA
"""
'''

BAD_EXAMPLES = '''
EXAMPLES = """
- name: x
  a: [1, 2
"""
'''


def _tree(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding='utf-8')
    return str(tmp_path)


@pytest.mark.parametrize('files,expect', [
    ({'plugins/modules/good.py': GOOD}, []),
    ({'plugins/modules/good.py': GOOD, 'plugins/modules/bad.py': BAD_DOC},
     ['plugins/modules/bad.py DOCUMENTATION: mapping values are not allowed here in "<unicode string>", '
      'line 3, column 33: description: only with a new key: re-creating an SA ^']),
    ({'plugins/filter/f.py': BAD_EXAMPLES},
     ['plugins/filter/f.py EXAMPLES: while parsing a flow sequence in "<unicode string>", line 3, column 6: '
      'a: [1, 2 ^ expected \',\' or \']\', but got \'<stream end>\' in "<unicode string>", line 4, column 1: ^']),
    ({'plugins/modules/broken.py': 'def (:\n'}, ['plugins/modules/broken.py: not valid Python: ']),
    ({'tests/unit/bad.py': BAD_DOC, 'plugins/modules/sub/deep.py': BAD_DOC}, []),  # only plugins/*/*.py
])
def test_doc_yaml_check_problems(tmp_path, files, expect):
    found = doc_yaml_check.problems(_tree(tmp_path, files))
    if expect and expect[0].endswith('not valid Python: '):
        assert len(found) == 1 and found[0].startswith(expect[0])
    else:
        assert found == expect


def test_doc_yaml_check_exit_status(tmp_path, capsys):
    assert doc_yaml_check.main([_tree(tmp_path, {'plugins/modules/good.py': GOOD})]) == 0
    assert doc_yaml_check.main([_tree(tmp_path, {'plugins/modules/bad.py': BAD_DOC})]) == 1
    assert capsys.readouterr().out.startswith('plugins/modules/bad.py DOCUMENTATION: ')


class FakeRun:
    """Records the commands the bootstrap runs; ensurepip exits with ``boot_rc``."""

    def __init__(self, boot_rc=0, install_rc=0):
        self.calls = []
        self.boot_rc = boot_rc
        self.install_rc = install_rc

    def run(self, cmd, **kwargs):
        self.calls.append(cmd)
        assert kwargs['check'] is False
        return subprocess.CompletedProcess(cmd, self.boot_rc, stdout=b'ensurepip said no\n')

    def call(self, cmd, **kwargs):
        self.calls.append(cmd)
        if cmd[3] == 'uninstall':
            assert kwargs == {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL}
        return self.install_rc if cmd[3] == 'install' else 0


PY = sys.executable


@pytest.mark.parametrize('argv,fake,rc,calls', [
    # what ansible-test 2.19 passes for its sanity venvs
    (['--disable-pip-version-check', 'pip==24.2', '--no-setuptools', '--no-wheel'], FakeRun(), 0,
     [[PY, '-m', 'ensurepip', '--upgrade'],
      [PY, '-m', 'pip', 'uninstall', '--quiet', '--yes', 'setuptools'],
      [PY, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', 'pip==24.2']]),
    # setuptools wanted: keep it
    (['--disable-pip-version-check', 'pip==24.2', '--no-wheel'], FakeRun(), 0,
     [[PY, '-m', 'ensurepip', '--upgrade'],
      [PY, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', 'pip==24.2']]),
    # ensurepip fails: its status, nothing installed
    (['pip==24.2', '--no-setuptools'], FakeRun(boot_rc=3), 3,
     [[PY, '-m', 'ensurepip', '--upgrade']]),
    # the index refuses: pip's status goes back to ansible-test
    (['pip==24.2'], FakeRun(install_rc=1), 1,
     [[PY, '-m', 'ensurepip', '--upgrade'],
      [PY, '-m', 'pip', 'install', '--quiet', 'pip==24.2']]),
])
def test_get_pip_offline_commands(monkeypatch, argv, fake, rc, calls):
    monkeypatch.setattr(get_pip_offline.subprocess, 'run', fake.run)
    monkeypatch.setattr(get_pip_offline.subprocess, 'call', fake.call)
    assert get_pip_offline.main(argv) == rc
    assert fake.calls == calls


def test_find_pythons_candidates_and_choice(tmp_path):
    home = tmp_path / 'home'
    bindir = tmp_path / 'bin'
    for rel in ('.pyenv/versions/3.10.4/bin/python3.10', '.pyenv/versions/3.10.13/bin/python3.10',
                '.pyenv/versions/3.12.1/bin/python3.12'):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text('', encoding='utf-8')
    bindir.mkdir()
    shim = bindir / 'python3.10'
    shim.write_text('#!/bin/sh\nexit 127\n', encoding='utf-8')
    shim.chmod(0o755)
    # PATH first (a shim here), then pyenv's versions, newest release first (3.10.13 before 3.10.4)
    assert find_pythons.candidates('3.10', str(bindir), str(home))[:3] == [
        str(shim), str(home / '.pyenv/versions/3.10.13/bin/python3.10'),
        str(home / '.pyenv/versions/3.10.4/bin/python3.10')]
    # the shim does not answer, the first pyenv interpreter that does is taken (3.10.4 here, as if
    # 3.10.13 were broken); 3.11 is the main version, skipped; 3.9 has none at all
    works = {str(home / '.pyenv/versions/3.10.4/bin/python3.10'), str(home / '.pyenv/versions/3.12.1/bin/python3.12')}
    found = find_pythons.find(['3.9', '3.10', '3.11', '3.12'], '3.11', str(bindir), str(home),
                              probe=lambda exe, version: exe in works)
    assert found == [('3.10', str(home / '.pyenv/versions/3.10.4/bin')),
                     ('3.12', str(home / '.pyenv/versions/3.12.1/bin'))]


def test_find_pythons_probe_real_interpreter(tmp_path):
    version = '%d.%d' % sys.version_info[:2]
    assert find_pythons.answers(sys.executable, version) is True
    assert find_pythons.answers(sys.executable, '2.7') is False
    assert find_pythons.answers(str(tmp_path / 'missing'), version) is False
