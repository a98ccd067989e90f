# -*- coding: utf-8 -*-
"""Reliability 4: foreign state is never touched.

Foreign objects on the simulated host, two kinds each:
- printed verbatim before ours (real captures: the lab's strongSwan-style SAs/policies with reqid
  1 and 2; the mlx5 strongSwan SA with `flag af-unspec` and no sel line, its tunnel policy, and the
  fastswan fwd/out/in policies, reqid 1) - the simulator cannot delete these, so the check is that
  no batch line of any run addresses them;
- held by the simulator like ours (so a wrong delete/replace WOULD remove them): SAs and policies
  with reqid 1, 3, 0x51bfffff and 0x51c10000 (just outside the owned range 0x51c00000..0x51c0ffff),
  a policy without a template.  These are compared object by object and as printed text
  (byte for byte) before and after.
tc: a foreign u32 filter, a foreign flower rule (no collection cookie) on an owned device, and a
flower rule on a device the module is not asked about.  OVS: a foreign port on the owned bridge
and a foreign bridge with a foreign VXLAN port (no OVS here: the check is on the transaction the
module hands to ovs-vsctl, which must not name a foreign object nor delete a bridge that holds one).

Each runs merged, overridden, deleted with an empty list, a rekey-like replace, and requests that
name a foreign object's identity (refused, nothing changes).
"""

from __future__ import annotations

import copy
import random
import re

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import ovs_vxlan_bridge, tc_flower_vlan, \
    xfrm_offload_policy, xfrm_offload_state

import _rel
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

T_TC = _rel.load_test_module("plugins/modules/test_tc_flower_vlan.py", "_rel_fake_tc")
T_OVS = _rel.load_test_module("plugins/modules/test_ovs_vxlan_bridge.py", "_rel_fake_ovs")
HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


def _section(text, start):
    """Lines after the prompt line containing ``start`` up to the next blank line; 8 spaces -> TAB
    (the capture came through an e-mail that turned ip's TABs into spaces)."""
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if start in ln) + 1
    out = []
    while i < len(lines) and lines[i].strip():
        out.append(re.sub(r"^((?: {8})+)", lambda m: "\t" * (len(m.group(1)) // 8), lines[i]))
        i += 1
    return "\n".join(out) + "\n"


MLX5 = fixture("xfrm/mlx5-packet-offload-real.txt")
RAW_STATES = fixture("xfrm/lab-xfrm-state.txt") + _section(MLX5, "sudo ip x s")
RAW_POLICIES = (fixture("xfrm/lab-xfrm-policy.txt") + _section(MLX5, "sudo ip x p")
                + _section(MLX5, "ipsec-gw:$ sudo ip xfrm policy"))
RAW_IDS = ["dst 192.168.100.1 proto esp spi 0x00001001", "dst 192.168.100.2 proto esp spi 0x00001000",
           "dst 192.169.101.1 proto esp spi 0xc88b7652", "192.168.100.2/32 dst 192.168.100.1/32",
           "192.168.100.1/32 dst 192.168.100.2/32", "192.170.0.0/16", "192.168.102.0/24", "192.168.201.0/24"]
FOREIGN_REQIDS = (1, 3, 0x51bfffff, 0x51c10000)
RNG = random.Random(4)


def fkey():
    return _rel.random_key(RNG, 36)


def foreign_sim():
    sim = XfrmSim(RAW_STATES, RAW_POLICIES)
    for n, reqid in enumerate(FOREIGN_REQIDS):
        a, b = "10.9.0.%d" % (2 * n + 1), "10.9.0.%d" % (2 * n + 2)
        assert sim.execute("xfrm state add src %s dst %s proto esp spi 0x%08x reqid %d mode transport "
                           "replay-window 32 flag esn aead rfc4106(gcm(aes)) %s 128" % (a, b, 0x2000 + n, reqid, fkey())
                           ) is None
        assert sim.execute("xfrm policy add src %s/32 dst %s/32 dir out priority 0 ptype main tmpl src %s dst %s "
                           "proto esp reqid %d mode transport" % (a, b, a, b, reqid)) is None
    assert sim.execute("xfrm policy add src 10.9.1.0/24 dst 10.9.2.0/24 dir in priority 5 ptype main") is None
    return sim


def xhost(sim):
    return FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip",), sim)])


def owned_sas(n, seed, first=0):
    rng = random.Random(seed)
    return [dict(src="10.7.0.%d" % (i + 1), dst="10.8.0.%d" % (i + 1), spi="0x%08x" % (0x5000 + i),
                 reqid="0x%08x" % (0x51c00100 + i), direction="out", aead=dict(key=_rel.random_key(rng, 20)),
                 offload=dict(type="none")) for i in range(first, first + n)]


def owned_sps(n, priority=0):
    return [dict(src="10.7.0.%d/32" % (i + 1), dst="10.8.0.%d/32" % (i + 1), dir="out", priority=priority,
                 offload=dict(type="none"),
                 tmpl=dict(src="10.7.0.%d" % (i + 1), dst="10.8.0.%d" % (i + 1), reqid="0x%08x" % (0x51c00100 + i)))
            for i in range(n)]


def blocks(text):
    """Printed objects, one string each (a line not starting with white space opens one)."""
    out, cur = [], []
    for ln in text.splitlines(True):
        if not ln[:1].isspace() and cur:
            out.append("".join(cur))
            cur = []
        cur.append(ln)
    if cur:
        out.append("".join(cur))
    return out


def foreign_view(sim):
    """The foreign objects the simulator holds: as objects and as printed text blocks."""
    sas = {k: v for k, v in sim.states.items() if not 0x51c00000 <= v["reqid"] <= 0x51c0ffff}
    sps = {k: v for k, v in sim.policies.items()
           if not (v["tmpl"] and 0x51c00000 <= v["tmpl"]["reqid"] <= 0x51c0ffff)}
    text = [b for b in blocks(sim.state_text()) if any(("spi 0x%08x" % k[1]) in b for k in sas)]
    text += [b for b in blocks(sim.policy_text()) if any(
        b.startswith("src %s dst %s " % (sim._pfx(v["src"], None), sim._pfx(v["dst"], None))) for v in sps.values())]
    return copy.deepcopy((sas, sps)), sorted(text)


def batch_lines(sim, since):
    return [ln for b in sim.batches[since:] for ln in b.splitlines()]


def raw_objects():
    return len(blocks(RAW_STATES)) + len(blocks(RAW_POLICIES))


def touches_raw(lines):
    return [ln for ln in lines for ident in RAW_IDS if ident in ln]


def touches_dict_foreign(lines, view):
    sas, sps = view[0]
    hits = []
    for ln in lines:
        for (dst, spi) in sas:
            if "dst %s proto esp spi 0x%08x" % (dst, spi) in ln:
                hits.append(ln)
        for sp in sps.values():
            if "src %s dst %s " % (sp["src"], sp["dst"]) in ln:
                hits.append(ln)
    return hits


XFRM_STEPS = [
    # (name, module, args, expect failure)
    ("state-merged", xfrm_offload_state, dict(config=owned_sas(10, 1)), False),
    ("state-overridden", xfrm_offload_state, dict(config=owned_sas(5, 1), state="overridden"), False),
    ("state-rekey-replaced", xfrm_offload_state, dict(config=owned_sas(5, 2), state="replaced"), False),
    ("state-names-foreign-sa", xfrm_offload_state,
     dict(config=[dict(owned_sas(1, 9)[0], dst="10.9.0.2", spi="0x2000")], state="replaced"), True),
    ("state-deletes-foreign-sa", xfrm_offload_state, dict(config=[dict(dst="10.9.0.2", spi="0x2000")],
                                                          state="deleted"), True),
    ("state-deletes-raw-foreign-sa", xfrm_offload_state, dict(config=[dict(dst="192.169.101.1", spi="0xc88b7652")],
                                                              state="deleted"), True),
    ("state-deleted-all", xfrm_offload_state, dict(state="deleted"), False),
    ("policy-merged", xfrm_offload_policy, dict(config=owned_sps(10)), False),
    ("policy-overridden", xfrm_offload_policy, dict(config=owned_sps(5), state="overridden"), False),
    ("policy-replaced", xfrm_offload_policy, dict(config=owned_sps(5, priority=7), state="replaced"), False),
    ("policy-names-foreign", xfrm_offload_policy,
     dict(config=[dict(owned_sps(1)[0], src="10.9.0.1/32", dst="10.9.0.2/32")], state="replaced"), True),
    ("policy-deleted-all", xfrm_offload_policy, dict(state="deleted"), False),
]


RAW_OBJECTS = 10   # 3 SAs + 7 policies printed verbatim (checked below)


def test_xfrm_foreign_objects_survive_every_state():
    assert raw_objects() == RAW_OBJECTS
    sim = foreign_sim()
    view0 = foreign_view(sim)
    assert len(view0[0][0]) == 4 and len(view0[0][1]) == 5 and len(view0[1]) == 9
    raw0 = (sim.raw_states, sim.raw_policies)
    for name, module, args, expect_fail in XFRM_STEPS:
        since = len(sim.batches)
        owned_before = len(sim.states) + len(sim.policies)
        res, failed = run_module(module.main, copy.deepcopy(args), xhost(sim))
        lines = batch_lines(sim, since)
        view = foreign_view(sim)
        bad = touches_raw(lines) + touches_dict_foreign(lines, view0)
        intact = view == view0 and (sim.raw_states, sim.raw_policies) == raw0 and not bad
        _rel.record("foreign", step=name, objects=len(view0[0][0]) + len(view0[0][1]) + RAW_OBJECTS,
                    intact=intact)
        assert failed is expect_fail, (name, res.get("msg"))
        if expect_fail:
            assert "not owned" in res["msg"] and lines == [], (name, res["msg"])
        else:
            assert res["changed"] and len(sim.states) + len(sim.policies) != owned_before or "replace" in name, name
        assert not bad, (name, bad)
        assert view == view0, name
    # the owned objects are gone, the foreign ones are all that is left
    assert sim.states.keys() == view0[0][0].keys() and sim.policies.keys() == view0[0][1].keys()


def test_foreign_view_would_see_a_wrong_delete():
    sim = foreign_sim()
    view0 = foreign_view(sim)
    assert sim.execute("xfrm state delete src 10.9.0.1 dst 10.9.0.2 proto esp spi 0x2000") is None
    assert foreign_view(sim) != view0
    assert touches_dict_foreign(["xfrm state delete src 10.9.0.1 dst 10.9.0.2 proto esp spi 0x00002000"], view0)
    assert touches_raw(["xfrm state delete src 192.169.101.2 dst 192.169.101.1 proto esp spi 0xc88b7652"])


# ---------------------------------------------------------------------------------------------- tc

def tc_rule(dev, prio, vid, peer):
    return {"dev": dev, "prio": prio, "protocol": "802.1q", "match": {"vlan_id": vid},
            "actions": [{"vlan": "pop"}, {"mirred": "redirect", "dev": peer}]}


def tc_foreign_fake():
    fake = T_TC.FakeTc(links=("pf0", "pf0vf0_rep", "rep1", "lo"))
    # a foreign flower rule (installed by someone else: no cookie) on pf0 and on rep1
    for dev, prio in (("pf0", 50), ("rep1", 10)):
        fake.hooks[dev] = "ingress"
        fake.apply("filter add dev %s ingress protocol 802.1q chain 0 prio %d handle 1 flower vlan_id 77 "
                   "action vlan pop action mirred egress redirect dev pf0vf0_rep" % (dev, prio))
    fake.filters["pf0"].append({"protocol": "all", "pref": 5, "kind": "u32", "chain": 0,
                                "options": {"fh": "800::800", "order": 2048, "key_ht": "800", "bkt": "0"}})
    return fake


def tc_foreign(fake):
    out = []
    for dev, flt in sorted(fake.filters.items()):
        for f in flt:
            if not any(a.get("cookie") for a in f["options"].get("actions", [])):
                out.append((dev, copy.deepcopy(f)))
    return out, {d: fake.hooks.get(d) for d in ("pf0", "rep1")}


TC_STEPS = [
    ("tc-merged", dict(config=[tc_rule("pf0", 10, 10, "pf0vf0_rep"), tc_rule("pf0", 11, 11, "pf0vf0_rep"),
                               tc_rule("pf0vf0_rep", 10, 12, "pf0")]), False),
    ("tc-overridden", dict(config=[tc_rule("pf0", 10, 10, "pf0vf0_rep")], state="overridden",
                           devices=["pf0", "pf0vf0_rep", "rep1"]), False),
    ("tc-replaced", dict(config=[tc_rule("pf0", 10, 20, "pf0vf0_rep")], state="replaced"), False),
    ("tc-names-foreign-prio", dict(config=[tc_rule("pf0", 50, 30, "pf0vf0_rep")], state="replaced"), True),
    ("tc-deletes-foreign", dict(config=[{"dev": "pf0", "prio": 5}], state="deleted"), True),
    ("tc-deleted-all", dict(config=[], state="deleted", devices=["pf0", "pf0vf0_rep", "rep1"],
                            remove_ingress_qdisc=True), False),
]


def test_tc_foreign_rules_survive_every_state():
    fake = tc_foreign_fake()
    foreign0 = tc_foreign(fake)
    assert len(foreign0[0]) == 3
    for name, args, expect_fail in TC_STEPS:
        since = len(fake.batches)
        res, failed = run_module(tc_flower_vlan.main, dict(copy.deepcopy(args), require_ipsec_before_offload=False),
                                 fake.host())
        lines = [ln for _f, b in fake.batches[since:] for ln in b.splitlines()]
        bad = [ln for ln in lines if re.search(r"dev (pf0 .* prio (50|5)|rep1 )\b", ln)
               or ln.startswith("qdisc del dev pf0 ") or ln.startswith("qdisc del dev rep1 ")]
        intact = tc_foreign(fake) == foreign0 and not bad
        _rel.record("foreign", step=name, objects=len(foreign0[0]) + 2, intact=intact)
        assert failed is expect_fail, (name, res.get("msg"))
        assert expect_fail or res["changed"], name
        assert not bad, (name, bad)
        assert tc_foreign(fake) == foreign0, name


# ---------------------------------------------------------------------------------------------- OVS

FOREIGN_OVS = {"foreign0", "vx9", "br-other"}

OVS_STEPS = [
    ("ovs-present-purge", dict(bridge="br-ovs", ports=["rep0"], purge=True), False),
    ("ovs-vxlan-update", dict(bridge="br-ovs", ports=["rep0"], vxlan=[dict(T_OVS.VX, key=200)]), False),
    ("ovs-absent-owned-ports", dict(bridge="br-ovs", ports=["rep0"], vxlan=[T_OVS.VX], state="absent"), False),
    ("ovs-absent-bridge-with-foreign-port", dict(bridge="br-ovs", state="absent"), False),
    ("ovs-absent-foreign-port", dict(bridge="br-ovs", ports=["foreign0"], state="absent"), True),
    ("ovs-take-foreign-port", dict(bridge="br-ovs", ports=["vx9"]), True),
    ("ovs-absent-foreign-bridge", dict(bridge="br-other", state="absent"), False),
]


def ovs_violations(argv):
    """Commands of one ovs-vsctl transaction that would change a foreign object."""
    cmds, cur = [], []
    for a in argv:
        if a == "--":
            if cur:
                cmds.append(cur)
            cur = []
        elif not a.startswith("--") or cur:
            cur.append(a)
    if cur:
        cmds.append(cur)
    bad = []
    for c in cmds:
        named = set(c[1:])
        if named & FOREIGN_OVS and c[0] in ("del-port", "del-br", "set", "clear", "remove", "destroy", "add-port"):
            bad.append(c)
        if c[0] == "del-br" and "br-ovs" in named:   # br-ovs holds foreign0
            bad.append(c)
    return bad


@pytest.mark.parametrize("name,args,expect_fail", OVS_STEPS, ids=[s[0] for s in OVS_STEPS])
def test_ovs_transaction_never_touches_foreign(name, args, expect_fail):
    host = T_OVS.host_with(T_OVS.EXISTING)
    res, failed = run_module(ovs_vxlan_bridge.main, dict(args), host)
    tx = [argv for argv in host.commands() if "list" not in argv]
    bad = [v for argv in tx for v in ovs_violations(argv)]
    _rel.record("foreign", step=name, objects=len(FOREIGN_OVS), intact=not bad)
    assert failed is expect_fail, res.get("msg")
    assert not bad, bad
    if expect_fail:
        assert tx == []


def test_ovs_violation_check_can_fail():
    assert ovs_violations(["ovs-vsctl", "--timeout=10", "--", "del-port", "br-ovs", "foreign0"])
    assert ovs_violations(["ovs-vsctl", "--timeout=10", "--", "--if-exists", "del-br", "br-ovs"])
    assert not ovs_violations(["ovs-vsctl", "--timeout=10", "--", "del-port", "br-ovs", "rep0"])
