# -*- coding: utf-8 -*-
"""xfrm_offload_policy end to end against FakeHost + the xfrm simulator (tests/unit/xfrm_sim.py)."""
from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy as M
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")
HELP_61 = fixture("xfrm/iproute2-6.1-state-help-real.txt")
LAB = fixture("xfrm/lab-xfrm-policy.txt")  # two foreign policies (reqid 1 and 2)


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


def host(sim, help_text=HELP_615):
    return FakeHost([(("ip", "xfrm", "state", "help"), (255, "", help_text)), (("ip",), sim)])


def batches(h):
    return [s for a, s in h.calls if a[-2:] == ["-batch", "-"]]


def out_sp(**kw):
    d = dict(src="192.0.2.1/32", dst="192.0.2.2/32", dir="out", tmpl=dict(src="192.0.2.1", dst="192.0.2.2",
                                                                          reqid="0x51c00001"),
             offload=dict(type="packet", dev="p0"))
    d.update(kw)
    return d


def in_sp(**kw):
    d = dict(src="192.0.2.2/32", dst="192.0.2.1/32", dir="in", tmpl=dict(src="192.0.2.2", dst="192.0.2.1",
                                                                         reqid="0x51c00002"),
             offload=dict(type="packet", dev="p0"))
    d.update(kw)
    return d


def test_merged_idempotent_update_and_check_mode():
    sim = XfrmSim(policies=LAB)
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sp(), in_sp()]), h, diff=True)
    assert not failed, res
    assert res["commands"] == [
        "xfrm policy add src 192.0.2.1/32 dst 192.0.2.2/32 dir out priority 0 ptype main offload packet dev p0 "
        "tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x51c00001 mode transport",
        "xfrm policy add src 192.0.2.2/32 dst 192.0.2.1/32 dir in priority 0 ptype main offload packet dev p0 "
        "tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 0x51c00002 mode transport"]
    assert batches(h) == ["\n".join(res["commands"]) + "\n"]
    assert [o["in_effect"] for o in res["offload"]] == ["packet", "packet"]
    assert "dir: out" in res["diff"]["after"]

    res, failed = run_module(M.main, dict(config=[out_sp(), in_sp()]), host(sim))
    assert not failed and not res["changed"] and res["counts"]["unchanged"] == 2

    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sp(priority=10)]), h, check_mode=True)
    assert not failed and res["changed"] and batches(h) == []
    assert sim.policies[("192.0.2.1/32", "192.0.2.2/32", None, None, None, "out", (0, 0))]["priority"] == 0

    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sp(priority=10)]), h)
    assert not failed and res["counts"]["replaced"] == 1
    assert res["commands"] == [
        "xfrm policy update src 192.0.2.1/32 dst 192.0.2.2/32 dir out priority 10 ptype main offload packet dev p0 "
        "tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x51c00001 mode transport"]


def test_merged_keeps_fields_left_out():
    sim = XfrmSim()
    assert not run_module(M.main, dict(config=[out_sp(priority=7)]), host(sim))[1]
    res, failed = run_module(M.main, dict(config=[{"src": "192.0.2.1/32", "dst": "192.0.2.2/32", "dir": "out"}]),
                             host(sim))
    assert not failed and not res["changed"], res
    res, failed = run_module(M.main, dict(config=[{"src": "192.0.2.1/32", "dst": "192.0.2.2/32", "dir": "out",
                                                   "tmpl": {"reqid": "0x51c00001", "src": "192.0.2.1",
                                                            "dst": "192.0.2.2"}}],
                                          state="replaced"), host(sim))
    assert failed and res["field"] == "config[0].offload.dev"


def test_overridden_deleted_leave_foreign_alone():
    sim = XfrmSim(policies=LAB)
    assert not run_module(M.main, dict(config=[out_sp(), in_sp()]), host(sim))[1]
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[in_sp()], state="overridden"), h)
    assert not failed and res["commands"] == ["xfrm policy delete src 192.0.2.1/32 dst 192.0.2.2/32 dir out ptype main"]
    res, failed = run_module(M.main, dict(state="deleted"), host(sim))
    assert res["commands"] == ["xfrm policy delete src 192.0.2.2/32 dst 192.0.2.1/32 dir in ptype main"]
    res, failed = run_module(M.main, dict(state="gathered", owned_reqid_range=[1, 2]), host(sim))
    assert [(g["dir"], g["tmpl"]["reqid"]) for g in res["gathered"]] == [("in", "0x00000002"), ("out", "0x00000001")]
    # a listed policy that collides with a foreign one is refused
    res, failed = run_module(M.main, dict(config=[out_sp(src="192.168.100.1/32", dst="192.168.100.2/32",
                                                         offload=dict(type="none"))]), host(sim))
    assert failed and res["field"] == "config[0]" and "not owned" in res["msg"]


def test_fwd_offload_refused_and_fwd_default_none():
    h = FakeHost()
    res, failed = run_module(M.main, dict(config=[out_sp(dir="fwd")]), h)
    assert failed and res["field"] == "config[0].offload.type" and "forward policies" in res["msg"] and h.calls == []
    sim = XfrmSim()
    res, failed = run_module(M.main, dict(config=[out_sp(dir="fwd", offload=None)]), host(sim))
    assert not failed and "offload" not in res["commands"][0]


def test_policy_offload_not_supported_rolls_back():
    sim = XfrmSim(no_policy_offload_devs=("eth0",))
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sp(offload=dict(type="none")),
                                                  in_sp(offload=dict(type="packet", dev="eth0"))]), h)
    assert failed and res["failed_line"] == 2 and res["rolled_back"]
    assert "Policy offload is not supported" in res["msg"] and "cannot offload policies" in res["msg"]
    assert sim.policies == {}
    assert batches(h)[1] == "xfrm policy delete src 192.0.2.1/32 dst 192.0.2.2/32 dir out ptype main\n"


def test_failed_update_is_undone_with_old_policy():
    sim = XfrmSim()
    assert not run_module(M.main, dict(config=[out_sp(), in_sp()]), host(sim))[1]
    sim.fail = lambda line: "RTNETLINK answers: Invalid argument" if "priority 9" in line and "dir in" in line else None
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sp(priority=9), in_sp(priority=9)]), h)
    assert failed and res["rolled_back"] and res["failed_object"].endswith("dir in")
    assert batches(h)[1].startswith("xfrm policy update src 192.0.2.1/32 dst 192.0.2.2/32 dir out priority 0 ")
    assert all(p["priority"] == 0 for p in sim.policies.values())


def test_packet_needs_new_iproute2():
    h = host(XfrmSim(), HELP_61)
    res, failed = run_module(M.main, dict(config=[out_sp()]), h)
    assert failed and res["field"] == "config[0].offload.type" and "use offload type none" in res["msg"]
    assert batches(h) == []


def test_rendered_and_summary():
    res, failed = run_module(M.main, dict(config=[out_sp(), in_sp(dir="fwd", offload=None)], state="rendered"),
                             FakeHost())
    assert not failed and len(res["rendered"]) == 2 and "dir fwd" in res["rendered"][1]
    sim = XfrmSim()
    res, failed = run_module(M.main, dict(config=[out_sp()], output="summary"), host(sim))
    assert not failed and "after" not in res and res["offload"] == []
