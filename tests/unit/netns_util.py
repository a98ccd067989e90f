# -*- coding: utf-8 -*-
"""Shared plumbing of the real-kernel tests in network namespaces (tests/unit/plugins/modules/
test_*_netns.py): a command runner with C locale, the collection's import root (PYTHONPATH for a
module run as a subprocess), and the skip rules (root and iproute2 needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

C = dict(os.environ, LC_ALL="C", LANG="C")


def sh(*argv, check=True):
    p = subprocess.run(list(argv), capture_output=True, text=True, env=C, check=False)
    if check and p.returncode:
        raise AssertionError("%s failed (rc=%d): %s" % (" ".join(argv), p.returncode, p.stderr))
    return p


def collection_path():
    for entry in sys.path:
        if os.path.isdir(os.path.join(entry, "ansible_collections", "ipsec_offload", "mlx5")):
            return entry
    raise AssertionError("ansible_collections.ipsec_offload.mlx5 is not importable")


def need_netns():
    """Skip unless network namespaces can be made here (root, iproute2)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("ip"):
        pytest.skip("needs iproute2")


def module_process(path, params):
    """Run the module file ``path`` as Ansible would (a subprocess, arguments from a JSON file).
    Returns (its JSON result, the CompletedProcess)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": params}, fh)
    try:
        env = dict(os.environ, PYTHONPATH=collection_path())
        p = subprocess.run([sys.executable, path, fh.name], capture_output=True, text=True, env=env, check=False)
    finally:
        os.unlink(fh.name)
    try:
        return json.loads(p.stdout), p
    except ValueError:
        raise AssertionError("module printed no JSON (rc=%d): %s %s" % (p.returncode, p.stdout, p.stderr)) from None
