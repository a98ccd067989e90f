"""Fixtures of the molecule verify tests: the lab pair as testinfra hosts, the phase, snapshots.

Run by molecule's testinfra verifier, which passes --ansible-inventory=<molecule's inventory
directory>; that directory holds the lab's generated inventory (create.yml links it there).
The pair: MOLECULE_PAIR="hostA,hostB" (default lab1,lab2).  The phase (converged | torn_down) comes
from the file prepare.yml / side_effect.yml write (MOLECULE_VERIFY_PHASE overrides it); the tests of
the other phase are deselected, and a run that selects no test fails.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parent))
import xfrm_view  # noqa: E402  pylint: disable=wrong-import-position


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


@pytest.fixture(scope="session")
def inventory(pytestconfig) -> str:
    inv = pytestconfig.getoption("ansible_inventory", default=None)
    if not inv:
        pytest.fail("no --ansible-inventory (molecule's testinfra verifier passes it)")
    return inv


@pytest.fixture(scope="session")
def pair(inventory):
    """The two hosts of the pair, as testinfra hosts."""
    names = [n.strip() for n in os.environ.get("MOLECULE_PAIR", "lab1,lab2").split(",") if n.strip()]
    assert len(names) == 2, "MOLECULE_PAIR must name two hosts, got %r" % names
    return {n: testinfra.get_host("ansible://" + n, ansible_inventory=inventory) for n in names}


@pytest.fixture(scope="session")
def ephemeral() -> Path:
    eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not eph:
        pytest.fail("MOLECULE_EPHEMERAL_DIRECTORY is not set (run through molecule)")
    return Path(eph)


@pytest.fixture(scope="session")
def salt(ephemeral) -> str:
    f = ephemeral / "hash-salt"
    if not f.is_file():
        pytest.fail("%s is missing: prepare.yml writes it (molecule prepare)" % f)
    return f.read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def rng():
    return xfrm_view.owned_range()


@pytest.fixture()
def dumps(pair, salt):
    """A fresh dump of every host of the pair."""
    return {n: xfrm_view.dump(h, salt, os.environ.get("IPSEC_VERIFY_NETNS", "")) for n, h in pair.items()}


@pytest.fixture(scope="session")
def snapshots(pair, ephemeral):
    """The dumps prepare.yml took before converge, per host."""
    out = {}
    for n in pair:
        f = ephemeral / ("before-converge-%s.json" % n)
        if not f.is_file():
            pytest.fail("%s is missing: prepare.yml writes it (molecule prepare)" % f)
        out[n] = json.loads(f.read_text(encoding="utf-8"))
    return out
