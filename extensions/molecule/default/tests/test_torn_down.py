"""Verify phase "torn_down" (after side_effect = playbooks/teardown.yml): no owned SA or policy is
left on either host, and the foreign SA + policy planted by prepare are exactly as before."""
from __future__ import annotations

import pytest

import xfrm_view

pytestmark = pytest.mark.phase("torn_down")


def test_no_owned_sa_left(dumps, rng):
    for host, d in dumps.items():
        left = [xfrm_view.sa_identity(sa)[:6] for sa in d["states"] if xfrm_view.is_owned_sa(sa, rng)]
        assert not left, "%s: owned SAs left after teardown: %s" % (host, left)


def test_no_owned_policy_left(dumps, rng):
    for host, d in dumps.items():
        left = [xfrm_view.policy_identity(p) for p in d["policies"] if xfrm_view.is_owned_policy(p, rng)]
        assert not left, "%s: owned policies left after teardown: %s" % (host, left)


def test_foreign_objects_intact(dumps, snapshots, rng):
    for host, d in dumps.items():
        then = xfrm_view.foreign(snapshots[host], rng)
        now = xfrm_view.foreign(d, rng)
        assert then["states"] and then["policies"], "%s: prepare planted no foreign SA/policy" % host
        assert now == then, "%s: foreign SAs/policies changed:\n before: %s\n now:    %s" % (host, then, now)
