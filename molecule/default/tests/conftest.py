"""Verify tests of the default scenario: the phase hooks; fixtures in pairfixtures.py.

Run by molecule's testinfra verifier, which passes --ansible-inventory=<molecule's inventory
directory>; that directory holds the lab's generated inventory (create.yml links it there).
The phase (converged | torn_down) comes from the file prepare.yml / side_effect.yml write
(MOLECULE_VERIFY_PHASE overrides it); the tests of the other phase are deselected, and a run that
selects no test fails.
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


def pytest_collection_modifyitems(config, items):
    phase = _phase()
    keep, drop = [], []
    for item in items:
        mark = item.get_closest_marker("phase")
        (keep if mark is None or mark.args[0] == phase else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    if not keep:
        raise pytest.UsageError("no test for verify phase %r" % phase)
    print("verify phase: %s (%d tests; %d of the other phase deselected)" % (phase, len(keep), len(drop)))
