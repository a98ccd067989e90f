"""Verify tests of the default scenario: the phase hooks; fixtures in pairfixtures.py.

Run by molecule's testinfra verifier, which passes --ansible-inventory=<molecule's inventory
directory>; that directory holds the lab's generated inventory (create.yml links it there).
The phase (converged | torn_down) comes from the file prepare.yml / side_effect.yml write
(MOLECULE_VERIFY_PHASE overrides it); the tests of the other phase are deselected, and a run that
selects no test fails.  Tests marked `topology(...)` run only for the scenario inventory's
ipsec_topology (MOLECULE_LAB_INVENTORY: lab, lab-vxlan, lab-roce).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import xfrm_view  # noqa: E402  pylint: disable=wrong-import-position
from pairfixtures import *  # noqa: E402,F401,F403  pylint: disable=wrong-import-position,wildcard-import,unused-wildcard-import


def _phase() -> str:
    phase = os.environ.get("MOLECULE_VERIFY_PHASE", "").strip()
    if not phase:
        eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
        marker = Path(eph) / "verify-phase"
        if not eph or not marker.is_file():
            raise pytest.UsageError(
                "no verify phase: run through molecule (prepare.yml / side_effect.yml write %s) or set "
                "MOLECULE_VERIFY_PHASE=converged|torn_down" % marker)
        phase = marker.read_text(encoding="utf-8").strip()
    if phase not in xfrm_view.PHASES:
        raise pytest.UsageError("verify phase %r is not one of %s" % (phase, ", ".join(xfrm_view.PHASES)))
    return phase


def pytest_configure(config):
    config.addinivalue_line("markers", "phase(name): run only in this verify phase (converged, torn_down)")
    config.addinivalue_line("markers", "topology(name, ...): run only when the scenario's inventory "
                            "(MOLECULE_LAB_INVENTORY) has one of these ipsec_topology values")
    # the SAs live in the inventory's ipsec_namespace (ns0 for RoCE over VF): dumps read there
    netns = xfrm_view.lab_inventory()["netns"]
    if netns:
        os.environ.setdefault("IPSEC_VERIFY_NETNS", netns)


def pytest_collection_modifyitems(config, items):
    phase = _phase()
    topology = xfrm_view.lab_inventory()["topology"]
    keep, drop = [], []
    for item in items:
        mark = item.get_closest_marker("phase")
        topo = item.get_closest_marker("topology")
        wanted = (mark is None or mark.args[0] == phase) and (topo is None or topology in topo.args)
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    if not keep:
        raise pytest.UsageError("no test for verify phase %r" % phase)
    print("verify phase: %s, topology %s (%d tests; %d of another phase or topology deselected)"
          % (phase, topology, len(keep), len(drop)))
