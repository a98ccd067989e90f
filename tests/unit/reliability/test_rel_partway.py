# -*- coding: utf-8 -*-
"""Reliability 3: a batch that fails part way leaves the host as it was.

Large batches (200 objects) against the stateful fakes: the xfrm simulator (tests/unit/xfrm_sim.py)
for SAs and policies, FakeTc (tests/unit/plugins/modules/test_tc_flower_vlan.py) for tc rules.  The
kernel refuses the first, a middle or the last line of the module's batch (once: the rollback batch
goes through).  Afterwards the simulated host must equal the snapshot taken before the run (every
SA with its key, every policy, every qdisc and filter, foreign objects included), the result must
say rolled_back/restored, and the failing object must be named (failed_object / failed_command and
the message).

Scenarios: adding 200 SAs on a host that already has 20 owned and 2 foreign SAs; a rekey of 200 owned
SAs (state replaced, new keys: 400 lines delete+add); overridden (100 adds + 100 deletes); adding 200
policies; adding 200 tc rules over two devices (the batch also creates the ingress hooks).
"""

from __future__ import annotations

import copy
import random

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import tc_flower_vlan, xfrm_offload_policy, \
    xfrm_offload_state

import _rel
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

T_TC = _rel.load_test_module("plugins/modules/test_tc_flower_vlan.py", "_rel_fake_tc")
HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")
LAB_STATES = fixture("xfrm/lab-xfrm-state.txt")     # foreign SAs (reqid 1, 2)
LAB_POLICIES = fixture("xfrm/lab-xfrm-policy.txt")
N = 200


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


def xhost(sim):
    return FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip",), sim)])


def sas(n, first=0, seed=1, spi_base=0x10000):
    rng = random.Random(seed)
    out = []
    for i in range(first, first + n):
        out.append(dict(src="10.1.%d.%d" % (i // 250, i % 250 + 1), dst="10.2.%d.%d" % (i // 250, i % 250 + 1),
                        spi="0x%08x" % (spi_base + i), reqid="0x%08x" % (0x51c00000 + i + 1),
                        direction="in" if i % 2 else "out", replay_window=64 if i % 2 else None,
                        aead=dict(key=_rel.random_key(rng, 36)), offload=dict(type="none")))
    for d in out:
        if d["replay_window"] is None:
            del d["replay_window"]
    return out


def sps(n, first=0):
    return [dict(src="10.1.%d.%d/32" % (i // 250, i % 250 + 1), dst="10.2.%d.%d/32" % (i // 250, i % 250 + 1),
                 dir="out", offload=dict(type="none"),
                 tmpl=dict(src="10.1.%d.%d" % (i // 250, i % 250 + 1), dst="10.2.%d.%d" % (i // 250, i % 250 + 1),
                           reqid="0x%08x" % (0x51c00000 + i + 1)))
            for i in range(first, first + n)]


class FailOnce:
    """Refuse line ``k`` (0-based) of the next batch the simulator runs, once."""

    def __init__(self, sim, k, msg="RTNETLINK answers: Invalid argument"):
        self.sim, self.k, self.msg = sim, k, msg
        self.batch = len(sim.batches) + 1
        self.seen = -1
        self.line = None
        self.used = False

    def __call__(self, line):
        if self.used or len(self.sim.batches) != self.batch:
            return None
        self.seen += 1
        if self.seen == self.k:
            self.used = True
            self.line = line
            return self.msg
        return None


def sim_state(sim):
    return copy.deepcopy((sim.states, sim.policies, sim.raw_states, sim.raw_policies))


def run_xfrm(module, sim, args, k):
    """Run with line k refused; return (result, failed, line that failed, before, after)."""
    before = sim_state(sim)
    sim.fail = FailOnce(sim, k)
    res, failed = run_module(module.main, args, xhost(sim))
    line = sim.fail.line
    sim.fail = None
    return res, failed, line, before, sim_state(sim)


def prepared_sim():
    sim = XfrmSim(LAB_STATES, LAB_POLICIES)
    res, failed = run_module(xfrm_offload_state.main, dict(config=sas(20, first=1000, seed=7)), xhost(sim))
    assert not failed and res["counts"]["added"] == 20, res
    return sim


def ident(line):
    """The identity of the object of a batch line as the modules describe it: 'src A dst B spi S'
    for an SA, 'src A dst B' for a policy."""
    t = line.split()
    text = "src %s dst %s" % (t[t.index("src") + 1], t[t.index("dst") + 1])
    return text + (" spi %s" % t[t.index("spi") + 1] if "spi" in t else "")


SCENARIOS = {
    # name: (module, make sim, args, number of batch lines)
    "state-add-200": (xfrm_offload_state, prepared_sim, lambda: dict(config=sas(N)), N),
    "state-rekey-200": (xfrm_offload_state, None, None, 2 * N),
    "state-overridden-100+100": (xfrm_offload_state, None, None, N),
    "policy-add-200": (xfrm_offload_policy, lambda: XfrmSim(LAB_STATES, LAB_POLICIES), lambda: dict(config=sps(N)), N),
}


def _rekey_setup():
    sim = XfrmSim(LAB_STATES, LAB_POLICIES)
    res, failed = run_module(xfrm_offload_state.main, dict(config=sas(N, seed=1)), xhost(sim))
    assert not failed, res
    return sim, dict(config=sas(N, seed=2), state="replaced")   # same SAs, new keys


def _overridden_setup():
    sim = XfrmSim(LAB_STATES, LAB_POLICIES)
    res, failed = run_module(xfrm_offload_state.main, dict(config=sas(100, seed=1)), xhost(sim))
    assert not failed, res
    return sim, dict(config=sas(100, first=100, seed=3), state="overridden")  # 100 adds, then 100 deletes


POSITIONS = ("first", "middle", "last")


def index(pos, n):
    return {"first": 0, "middle": n // 2, "last": n - 1}[pos]


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_xfrm_batch_fails_part_way(scenario, pos):
    module, make_sim, make_args, n = SCENARIOS[scenario]
    if scenario == "state-rekey-200":
        sim, args = _rekey_setup()
    elif scenario == "state-overridden-100+100":
        sim, args = _overridden_setup()
    else:
        sim, args = make_sim(), make_args()
    k = index(pos, n)
    res, failed, line, before, after = run_xfrm(module, sim, args, k)
    restored = after == before
    named = bool(line) and res.get("failed_line") == k + 1 and ident(line) in res.get("failed_object", "")
    _rel.record("partway", scenario=scenario, position=pos, lines=n, restored=restored,
                named=named and res.get("failed_object", "") in res.get("msg", ""), reported=res.get("rolled_back"))
    assert line is not None, "the batch never reached line %d" % k
    assert failed and res.get("rolled_back") is True, res.get("msg")
    assert restored, "the host differs from before the run"
    assert named and res["failed_object"] in res["msg"], (res.get("failed_object"), res.get("failed_line"), line)
    assert "Rolled back" in res["msg"]


# ------------------------------------------------------------------------------------------------- tc

def rules(n):
    out = []
    for i in range(n):
        dev, peer = ("pf0", "pf0vf0_rep") if i % 2 == 0 else ("pf0vf0_rep", "pf0")
        out.append({"dev": dev, "prio": 100 + i, "protocol": "802.1q", "match": {"vlan_id": i % 4000 + 1},
                    "actions": [{"vlan": "pop"}, {"mirred": "redirect", "dev": peer}]})
    return out


@pytest.mark.parametrize("pos", POSITIONS)
def test_tc_batch_fails_part_way(pos):
    # pf0 already has an ingress hook with two owned rules and a foreign u32 filter; pf0vf0_rep has none
    fake = T_TC.FakeTc(links=("pf0", "pf0vf0_rep", "lo"))
    res, failed = run_module(tc_flower_vlan.main, {"require_ipsec_before_offload": False,
                                                   "config": [dict(r, prio=10 + j) for j, r in enumerate(rules(2))]},
                             fake.host())
    assert not failed, res
    fake.filters["pf0"].append({"protocol": "all", "pref": 5, "kind": "u32", "chain": 0,
                                "options": {"fh": "800::800", "order": 2048, "key_ht": "800", "bkt": "0"}})
    before = fake.state()
    k = index(pos, N)
    target = rules(N)[k]
    needle = "filter add dev %s ingress protocol 802.1q chain 0 prio %d " % (target["dev"], target["prio"])
    fake.fail_on = [(needle, "Error: Failed to load TC action module.")]
    res, failed = run_module(tc_flower_vlan.main, {"require_ipsec_before_offload": False, "config": rules(N)},
                             fake.host())
    restored = fake.state() == before
    fc = res.get("failed_command") or ""
    named = fc.startswith(needle) and ("config[%d]" % k) in res.get("msg", "")
    _rel.record("partway", scenario="tc-add-200", position=pos, lines=len(res.get("commands", [])),
                restored=restored, named=named, reported=res.get("restored"))
    assert failed and res.get("restored") is True, res.get("msg")
    assert restored, "the tc state differs from before the run"
    assert named, (fc, res.get("msg"))


def test_failonce_really_refuses():
    """The injected failure is real: without the rollback the host would differ (the module's own
    undo batch is what restores it).  Checked by counting the simulator's batches: apply + undo."""
    sim = prepared_sim()
    res, failed, line, before, after = run_xfrm(xfrm_offload_state, sim, dict(config=sas(N)), 150)
    assert failed and line is not None and res["rolled_back"] is True and after == before
    assert len(sim.batches) == 3            # the preparing run, the failed apply, the undo
    assert sim.batches[2].count("xfrm state delete") == 150
