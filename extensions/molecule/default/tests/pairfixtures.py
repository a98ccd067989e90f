"""Fixtures shared by the molecule scenarios' verify tests (default, lab_dpu): the pair as testinfra
hosts, the owned reqid range, on-host dumps.  A scenario's conftest.py imports them with
`from pairfixtures import *` and may override `salt` / `snapshots`.

The pair: MOLECULE_PAIR="hostA,hostB" (default lab1,lab2), looked up in the inventory molecule's
testinfra verifier passes (--ansible-inventory).  IPSEC_VERIFY_NETNS: read SAs/policies in that
network namespace.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import testinfra

import xfrm_view

__all__ = ["inventory", "pair", "ephemeral", "salt", "rng", "dumps", "snapshots"]


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
