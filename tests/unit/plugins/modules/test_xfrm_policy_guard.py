# -*- coding: utf-8 -*-
"""xfrm_offload_policy with fail-closed guards and `scope`, against FakeHost + the xfrm simulator
(tests/unit/xfrm_sim.py: the kernel's policy identity includes the mark).  The same behaviour on a
real kernel: test_xfrm_policy_guard_netns.py."""
from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard as G
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy as M
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")
LAB = fixture("xfrm/lab-xfrm-policy.txt")  # two foreign policies (reqid 1 and 2)


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


SIMS = []


@pytest.fixture(autouse=True)
def netlink_into_sim(monkeypatch):
    """Deletes of mark-value-0 policies go over netlink (not ip): send them to the simulator."""
    calls = []

    def fake(sp, namespace=None):
        calls.append((X.SPKind().describe(sp), namespace))
        res = SIMS[-1].execute(X.SPKind().render_delete(sp))
        return res[2].strip() if res else None
    monkeypatch.setattr(G, "netlink_delete", fake)
    yield calls
    del SIMS[:]


def host(sim):
    SIMS.append(sim)
    return FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip",), sim)])


OUT = dict(src="192.0.2.1/32", dst="192.0.2.2/32", dir="out", priority=10, action="allow",
           tmpl=dict(src="192.0.2.1", dst="192.0.2.2", proto="esp", reqid="0x51c00001", mode="transport",
                     level="required"),
           offload=dict(type="packet", dev="p0"))
IN = dict(OUT, src="192.0.2.2/32", dst="192.0.2.1/32", dir="in",
          tmpl=dict(OUT["tmpl"], src="192.0.2.2", dst="192.0.2.1", reqid="0x51c00002"))
SAS = [OUT, IN]
GUARDS = G.guards_for(SAS)
ALL = SAS + GUARDS


def ours(sim):
    return sorted((k[5], k[6], v["action"]) for k, v in sim.policies.items())


def test_converge_with_guards_then_scopes(netlink_into_sim):
    sim = XfrmSim(policies=LAB)
    res, failed = run_module(M.main, dict(config=ALL, state="overridden"), host(sim), diff=True)
    assert not failed, res
    assert res["counts"]["added"] == 6 and len(sim.policies) == 6
    assert res["commands"][2] == (
        "xfrm policy add src 192.0.2.1/32 dst 192.0.2.2/32 dir out mark 0x0 mask 0x1 action block "
        "priority 4294967295 ptype main tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x51c00001 mode transport")
    assert "mark:\n    value: 0x1\n    mask: 0x1" in res["diff"]["after"]
    assert [o["in_effect"] for o in res["offload"]] == ["packet", "packet", "none", "none", "none", "none"]
    # second run: nothing to do
    res, failed = run_module(M.main, dict(config=ALL, state="overridden"), host(sim))
    assert not failed and not res["changed"] and res["counts"]["unchanged"] == 6, res

    # gathered per scope
    res = run_module(M.main, dict(state="gathered", scope="guards"), host(sim))[0]
    assert len(res["gathered"]) == 4 and all(g["action"] == "block" and g["mark"]["mask"] == "0x1"
                                             for g in res["gathered"])
    res = run_module(M.main, dict(state="gathered", scope="policies"), host(sim))[0]
    assert sorted(g["dir"] for g in res["gathered"]) == ["in", "out"]

    # overridden with scope policies and only the outbound SA policy: the inbound one goes, guards stay
    res, failed = run_module(M.main, dict(config=[OUT], state="overridden", scope="policies"), host(sim))
    assert not failed and res["counts"] == {"added": 0, "replaced": 0, "deleted": 1, "unchanged": 1}, res
    assert len(sim.policies) == 5
    # check mode of a guard teardown: reported, nothing changes
    h = host(sim)
    res, failed = run_module(M.main, dict(state="deleted", scope="guards"), h, check_mode=True)
    assert not failed and res["changed"] and res["counts"]["deleted"] == 4 and len(sim.policies) == 5
    # teardown order: SA policies, then the guards
    res, failed = run_module(M.main, dict(state="deleted", scope="policies"), host(sim))
    assert not failed and res["counts"]["deleted"] == 1 and len(sim.policies) == 4
    assert all(v["action"] == "block" for v in sim.policies.values())
    res, failed = run_module(M.main, dict(state="deleted", scope="guards"), host(sim))
    assert not failed and res["counts"]["deleted"] == 4 and sim.policies == {}
    assert all(" mark 0x" in c and " mask 0x1 " in c for c in res["commands"])
    # the two 0/0x1 guards went over netlink, the 0x1/0x1 ones through ip -batch
    assert [d for d, _ns in netlink_into_sim] == [
        "SP src 192.0.2.1/32 dst 192.0.2.2/32 dir out mark 0x0/0x1", "SP src 192.0.2.2/32 dst 192.0.2.1/32 dir in mark 0x0/0x1"]
    assert all(" mark 0x1 mask 0x1 " in line for line in sim.batches[-1].splitlines())
    res, failed = run_module(M.main, dict(state="deleted", scope="guards"), host(sim))
    assert not failed and not res["changed"]


def test_scope_refuses_listed_policies_outside_it():
    sim = XfrmSim()
    res, failed = run_module(M.main, dict(config=[OUT, GUARDS[0]], state="overridden", scope="policies"), host(sim))
    assert failed and res["field"] == "config[1]" and "is a guard" in res["msg"] and "scope is policies" in res["msg"]
    res, failed = run_module(M.main, dict(config=[GUARDS[1], OUT], state="merged", scope="guards"), host(sim))
    assert failed and res["field"] == "config[1].mark" and "is not a guard" in res["msg"]
    assert sim.batches == []


def test_bad_mark_fails_before_any_command():
    sim = XfrmSim()
    h = host(sim)
    bad = dict(GUARDS[0], mark={"value": "1 action allow", "mask": 1})
    res, failed = run_module(M.main, dict(config=[OUT, IN, GUARDS[1], bad]), h)
    assert failed and res["field"] == "config[3].mark.value", res
    assert h.commands() == []


def test_guard_and_sa_policy_do_not_collide_but_an_unmarked_block_does():
    sim = XfrmSim()
    assert not run_module(M.main, dict(config=SAS), host(sim))[1]
    # a block policy with the SA policy's exact selector and no mark IS the SA policy to the kernel:
    # the module plans an update of it, never a second policy
    block = dict(OUT, action="block", offload=dict(type="none"))
    res, failed = run_module(M.main, dict(config=[block]), host(sim), check_mode=True)
    assert not failed and res["counts"]["replaced"] == 1 and res["commands"][0].startswith("xfrm policy update ")
    # the guards are two new policies next to it
    res, failed = run_module(M.main, dict(config=GUARDS), host(sim))
    assert not failed and res["counts"]["added"] == 4 and len(sim.policies) == 6


def test_foreign_policy_with_guard_mark_is_never_touched():
    foreign = ("src 192.0.2.1/32 dst 192.0.2.2/32 \n\tdir out action block priority 5 ptype main \n"
               "\tmark 0/0x1 \n\ttmpl src 0.0.0.0 dst 0.0.0.0\n\t\tproto esp reqid 7 mode transport\n")
    sim = XfrmSim(policies=foreign)
    res, failed = run_module(M.main, dict(state="deleted", scope="guards"), host(sim))
    assert not failed and not res["changed"]
    res, failed = run_module(M.main, dict(config=GUARDS[:1]), host(sim))
    assert failed and "is not owned by this collection" in res["msg"] and "mark 0x0/0x1" in res["msg"], res
    assert sim.batches == []
