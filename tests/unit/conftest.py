# -*- coding: utf-8 -*-
"""Make the repository importable as ansible_collections.ipsec_offload.mlx5 for plain pytest.

The repository root is the collection root.  Under ansible-test the tree already sits at
.../ansible_collections/ipsec_offload/mlx5; for plain pytest we point a symlink farm at it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


def _ensure_collection_path():
    parts = ROOT.split(os.sep)
    if parts[-3:-2] == ["ansible_collections"]:
        sys.path.insert(0, os.sep.join(parts[:-3]))
        return
    # One directory per test run (never a fixed name): two runs on one machine, from two checkouts,
    # each import and run ansible-playbook against their own tree.  Removed when the run ends (the
    # symlink only: rmtree does not follow it).
    base = tempfile.mkdtemp(prefix="ipsec_offload_mlx5_pytest_")
    link = os.path.join(base, "ansible_collections", "ipsec_offload", "mlx5")
    os.makedirs(os.path.dirname(link))
    os.symlink(ROOT, link)
    atexit.register(shutil.rmtree, base, True)
    sys.path.insert(0, base)


_ensure_collection_path()


def pytest_configure(config):
    # Tests that create a scratch network namespace and run real ip/tc against the host kernel
    # (test_*_netns.py).  They skip themselves when not root or when `ip netns` is unavailable;
    # deselect them with `-m "not netns"`.
    config.addinivalue_line("markers", "netns: needs root and network namespaces; runs real ip/tc in a scratch netns")
    # the molecule verifiers' marks (extensions/molecule/default/tests), whose checks
    # test_molecule_topology.py imports and runs against recorded dumps
    config.addinivalue_line("markers", "phase(name): molecule verify phase (converged, torn_down)")
    config.addinivalue_line("markers", "topology(name): molecule scenario topology (vxlan_overlay, roce_vf)")


try:
    import pytest
except ImportError:  # pragma: no cover - conftest is only loaded by pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(autouse=True)
    def _private_host_lock(tmp_path, monkeypatch):
        """Module runs in unit tests take the per-host lock (plugins/module_utils/_lock.py) on a
        file of their own, not on /run/ipsec_offload_mlx5.lock of the machine running the tests."""
        from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock
        monkeypatch.setattr(_lock, "LOCK_PATH", str(tmp_path / "ipsec_offload_mlx5.lock"))
