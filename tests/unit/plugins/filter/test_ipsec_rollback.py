# -*- coding: utf-8 -*-
"""ipsec_rollback: what undoes one run of the ipsec role (site.yml's topology rescue).

The before/after lists are built the way the xfrm modules build them (kind.public() of objects
parsed from REAL lab captures: tests/unit/fixtures/xfrm/lab-xfrm-state.txt / lab-xfrm-policy.txt,
reqids 1 and 2 treated as the owned range here)."""

from __future__ import annotations

import copy
import os

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_rollback import FilterModule, ipsec_rollback, rollback_plan
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy

FIX = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "xfrm")
RNG = (1, 2)


def _read(name):
    with open(os.path.join(FIX, name)) as fh:
        return fh.read()


SAS = [X.SAKind(RNG).public(s) for s in X.parse_states(_read("lab-xfrm-state.txt"))]
SPS = [X.SPKind(RNG).public(p) for p in X.parse_policies(_read("lab-xfrm-policy.txt"))]


def by(objs, **kw):
    return [o for o in objs if all(o.get(k) == v for k, v in kw.items())][0]


SA12 = by(SAS, src="192.168.100.1", dst="192.168.100.2")
SA21 = by(SAS, src="192.168.100.2", dst="192.168.100.1")
SP_OUT = by(SPS, dir="out")
SP_IN = by(SPS, dir="in")
STALE = dict(copy.deepcopy(SP_OUT), dst="10.98.0.1/32", priority=5,
             tmpl=dict(SP_OUT["tmpl"], dst="10.98.0.1"))
OUT_PRIO7 = dict(copy.deepcopy(SP_OUT), priority=7)


def res(before, after, changed=True, **extra):
    r = {"changed": changed, "before": before, "after": after}
    r.update(extra)
    return r


def ident(sa):
    return {"src": sa["src"], "dst": sa["dst"], "spi": sa["spi"]}


def sp_ident(sp):
    return {k: sp[k] for k in ("src", "dst", "dir")}


def test_fixture_shapes_are_real():
    # the captures hold one SA and one SP per direction; SPIs are hex strings as the modules return
    assert len(SAS) == 2 and len(SPS) == 2
    assert SA12["spi"].startswith("0x") and SA12["aead"]["key"] == X.REDACTED
    assert int(SP_OUT["tmpl"]["reqid"], 16) == 1 and SP_OUT["src"] == "192.168.100.1/32"


CASES = [
    # id, state result, policy result, expected plan (subset of keys)
    ("fresh host: both SAs and SPs added",
     res([], [SA12, SA21], counts={"added": 2, "replaced": 0, "deleted": 0, "unchanged": 0}),
     res([], [SP_IN, SP_OUT]),
     {"sa_delete": sorted([ident(SA12), ident(SA21)], key=lambda d: (d["src"], d["dst"], d["spi"])),
      "sp_delete": [sp_ident(SP_OUT), sp_ident(SP_IN)], "sp_restore": [], "sa_unrestorable": 0, "applied": True}),
    ("stale owned SP removed by overridden: given back",
     res([], [SA12, SA21], counts={"added": 2, "replaced": 0, "deleted": 0, "unchanged": 0}),
     res([STALE], [SP_IN, SP_OUT]),
     {"sp_restore": [{k: STALE[k] for k in STALE if STALE[k] is not None}], "sp_unrestorable": []}),
    ("SP priority changed: old one given back, nothing deleted",
     res([SA12, SA21], [SA12, SA21], changed=False),
     res([OUT_PRIO7, SP_IN], [SP_IN, SP_OUT]),
     {"sp_delete": [], "sa_delete": [], "sp_restore": [{k: OUT_PRIO7[k] for k in OUT_PRIO7 if OUT_PRIO7[k] is not None}]}),
    ("SA replaced (new key) and one removed: counted, never guessed",
     res([SA12, SA21, dict(SA21, spi="0x00000777")], [SA12, SA21],
         counts={"added": 0, "replaced": 1, "deleted": 1, "unchanged": 1}),
     None,
     {"sa_delete": [], "sa_unrestorable": 2, "applied": True}),
    ("counts absent: removed identities counted",
     res([SA12, dict(SA21, spi="0x00000777")], [SA12, SA21]),
     None,
     {"sa_delete": [ident(SA21)], "sa_unrestorable": 1}),
    ("nothing changed", res([SA12], [SA12], changed=False), res([SP_OUT], [SP_OUT], changed=False),
     {"sa_delete": [], "sp_delete": [], "sp_restore": [], "applied": False}),
    ("steps skipped (role not run on the host)", {"changed": False, "skipped": True}, {"skipped": True},
     {"applied": False, "sa_delete": []}),
    ("state step failed (the module undid its own batch)", res([], [SA12], failed=True), {},
     {"applied": False, "sa_delete": []}),
    ("SP with extra templates removed: reported, not restored",
     None, res([dict(STALE, extra_tmpls=1)], [SP_OUT]),
     {"sp_restore": [], "sp_unrestorable": ["SP src 192.168.100.1/32 dst 10.98.0.1/32 dir out"]}),
]


@pytest.mark.parametrize("state_result,policy_result,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(state_result, policy_result, want):
    plan = rollback_plan(state_result, policy_result)
    for k, v in want.items():
        assert plan[k] == v, k


def test_integer_spi_identity_matches_hex():
    plan = rollback_plan(res([dict(SA12, spi=int(SA12["spi"], 16))], [SA12, SA21]))
    assert plan["sa_delete"] == [ident(SA21)]


def test_restore_entries_fit_the_policy_module_config():
    options = xfrm_offload_policy.argument_spec()["config"]["options"]
    plan = rollback_plan(None, res([STALE, OUT_PRIO7, dict(SP_IN, extras=["mark 0x1"])], [SP_OUT]))
    assert len(plan["sp_restore"]) == 2
    for entry in plan["sp_restore"]:
        assert set(entry) <= set(options)
        for sub in ("tmpl", "offload"):
            if sub in entry:
                assert set(entry[sub]) <= set(options[sub]["options"])
    for entry in plan["sp_delete"]:
        assert set(entry) <= set(options)


def test_no_key_in_plan():
    plan = rollback_plan(res([], [SA12, SA21]), res([], [SP_OUT]))
    assert "key" not in repr(plan["sa_delete"]) and X.REDACTED not in repr(plan)


def test_usable_result_without_before_after_is_an_error():
    with pytest.raises(AnsibleFilterError, match="output=full"):
        ipsec_rollback({"changed": True, "counts": {}})
    with pytest.raises(AnsibleFilterError, match="SP step"):
        ipsec_rollback({}, {"changed": True})


def test_registered():
    assert FilterModule().filters()["ipsec_rollback"] is ipsec_rollback


def test_inbound_sa_added_by_the_heal_phase_is_removed_too():
    # site.yml on a fresh pair: the lifecycle heal phase adds the inbound SA (receivers first), the
    # ipsec role then adds the outbound one; a failed topology step must remove BOTH (seen in the
    # lab: only the outbound was removed and the inbound SA stayed behind)
    heal = res([], [SA21])
    step = res([SA21], [SA21, SA12])
    plan = rollback_plan(step, res(SPS, SPS, changed=False), heal)
    assert plan["sa_delete"] == sorted([ident(SA12), ident(SA21)], key=lambda i: (i["src"], i["dst"], i["spi"]))
    assert plan["sa_unrestorable"] == 0 and plan["applied"]
    # heal phase skipped or failed (it undid its own batch): nothing from it
    for h in ({"skipped": True, "changed": False}, dict(res([], [SA21]), failed=True), {}):
        assert plan_ids(rollback_plan(step, {}, h)) == [ident(SA12)]
    # the heal phase alone changed something (the ipsec step changed nothing): still removed
    only = rollback_plan(res([SA21], [SA21], changed=False), {}, heal)
    assert only["sa_delete"] == [ident(SA21)] and only["applied"]
    # an SA both added (heal) and listed by the step is deleted once
    assert len(rollback_plan(res([], [SA21]), {}, heal)["sa_delete"]) == 1
    with pytest.raises(AnsibleFilterError, match="heal phase"):
        ipsec_rollback({}, {}, {"changed": True})


def plan_ids(plan):
    return plan["sa_delete"]
