# -*- coding: utf-8 -*-
"""tc_flower_vlan against the real kernel, in a scratch network namespace.

Runs the module file as Ansible would (a Python process with an args file), with real `tc` and
`ip`.  The dev/CI host kernel has no flower classifier and no act_vlan, but it has u32, mirred,
the ingress/clsact qdiscs and action cookies, so these tests prove on a real kernel:
  - the ingress qdisc is created when missing, inside one `tc -batch -`;
  - a kernel refusal part way through (flower missing) is undone: the host ends exactly as before
    (compared with `tc -j qdisc show` and `tc -j filter show`), and the message names the rule;
  - a foreign u32 filter (made by the test itself) is never touched, a desired rule on its prio is
    refused, and a u32 filter carrying the collection's cookie prefix is still not owned;
  - the IPsec-first precondition reads the real `ip xfrm state list nokeys`;
  - check mode changes nothing.
Where the kernel has flower + act_vlan (the lab VMs), test_flower_round_trip_when_available runs
the full create / idempotence / delete cycle instead and the refusal test is skipped.
"""

from __future__ import annotations

import os
import shutil

import pytest

from netns_util import module_process, sh

pytestmark = pytest.mark.netns

MODULE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "modules", "tc_flower_vlan.py")


def can_run():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "needs iproute2 (ip, tc)"
    return None


@pytest.fixture
def ns():
    why = can_run()
    if why:
        pytest.skip(why)
    name = "tcfv-%d" % os.getpid()
    if sh("ip", "netns", "add", name, check=False).returncode:
        pytest.skip("cannot create a network namespace here")
    try:
        for a, b in (("v0", "v1"), ("w0", "w1")):
            sh("ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "-n", name, "link", "set", a, "up")
            sh("ip", "-n", name, "link", "set", b, "up")
        # foreign state the module must never touch: ingress qdisc + u32 filter on v0
        sh("tc", "-n", name, "qdisc", "add", "dev", "v0", "ingress")
        sh("tc", "-n", name, "filter", "add", "dev", "v0", "ingress", "protocol", "all", "pref", "10",
           "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "v1")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def has_flower(ns):
    """True if this kernel takes a flower filter with a vlan action (tried on w1, then removed)."""
    sh("tc", "-n", ns, "qdisc", "add", "dev", "w1", "ingress")
    try:
        p = sh("tc", "-n", ns, "filter", "add", "dev", "w1", "ingress", "protocol", "802.1q", "pref", "1", "flower",
               "vlan_id", "1", "action", "vlan", "pop", check=False)
        return p.returncode == 0
    finally:
        sh("tc", "-n", ns, "qdisc", "del", "dev", "w1", "ingress")


def snapshot(ns):
    """The ingress state of every device in the namespace, as tc prints it."""
    out = {"qdisc": sh("tc", "-n", ns, "-j", "qdisc", "show").stdout}
    for dev in ("v0", "v1", "w0", "w1"):
        out[dev] = sh("tc", "-n", ns, "-j", "filter", "show", "dev", dev, "ingress").stdout
    return out


def run(ns, check_mode=False, **params):
    params = dict(params, namespace=ns)
    if check_mode:
        params["_ansible_check_mode"] = True
    return module_process(MODULE, params)[0]


POP_TO_V1 = {"dev": "v0", "prio": 20, "protocol": "802.1q", "match": {"vlan_id": 100},
             "actions": [{"vlan": "pop"}, {"mirred": "redirect", "dev": "v1"}]}
PUSH_TO_V0 = {"dev": "w0", "prio": 10, "protocol": "ip", "hw": "skip_hw",
              "actions": [{"vlan": "push", "id": 100, "priority": 3}, {"mirred": "redirect", "dev": "v0"}]}


def test_kernel_refusal_part_way_leaves_host_exactly_as_before(ns):
    if has_flower(ns):
        pytest.skip("this kernel has flower: the refusal path cannot be provoked this way")
    before = snapshot(ns)
    res = run(ns, config=[PUSH_TO_V0, POP_TO_V1, dict(PUSH_TO_V0, dev="w1", prio=11)],
              require_ipsec_before_offload=False)
    assert res.get("failed") is True, res
    # the batch made both missing ingress qdiscs, then the kernel refused the first flower filter
    assert res["commands"][:2] == ["qdisc add dev w0 ingress", "qdisc add dev w1 ingress"]
    assert res["failed_command"] == res["commands"][2]
    assert res["stderr"].rstrip().endswith("Command failed -:3")
    assert res["rollback"] == ["qdisc del dev w1 ingress", "qdisc del dev w0 ingress"]
    assert res["restored"] is True
    assert res["msg"].startswith("tc refused config[0] (dev w0 chain 0 prio 10 protocol ip): "
                                 "Error: TC classifier not found.")
    assert "flower classifier" in res["msg"] and "the host is as before" in res["msg"]
    assert snapshot(ns) == before


def test_foreign_u32_prio_is_refused_and_untouched(ns):
    before = snapshot(ns)
    res = run(ns, config=[dict(POP_TO_V1, prio=10, protocol="all", match={})], require_ipsec_before_offload=False)
    assert res.get("failed") is True
    assert "config[0] (dev v0 chain 0 prio 10 protocol all) collides with a u32 filter" in res["msg"]
    assert snapshot(ns) == before


def test_collection_cookie_on_u32_is_not_ownership(ns):
    # a u32 filter that carries the collection's cookie prefix (made here, by hand): still foreign
    sh("tc", "-n", ns, "filter", "add", "dev", "v0", "ingress", "protocol", "802.1q", "chain", "3", "pref", "30", "u32",
       "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "v1", "cookie", "69706f2d6d6c783501")
    before = snapshot(ns)
    assert '"cookie":"69706f2d6d6c783501"' in before["v0"]
    res = run(ns, state="gathered")
    assert res.get("failed") is not True, res
    assert res["gathered"] == []
    res = run(ns, state="deleted", remove_ingress_qdisc=True)
    assert res.get("failed") is not True, res
    assert res["changed"] is False and res["commands"] == []
    res = run(ns, config=[dict(POP_TO_V1, prio=30, chain=3, protocol="802.1q")], require_ipsec_before_offload=False)
    assert res.get("failed") is True and "collides with a u32 filter this collection does not own" in res["msg"]
    assert snapshot(ns) == before


def test_ipsec_first_precondition_reads_real_xfrm_state(ns):
    before = snapshot(ns)
    res = run(ns, config=[POP_TO_V1])  # may be offloaded (hw none), and no offloaded xfrm state in this netns
    assert res.get("failed") is True
    assert res["msg"].startswith("refusing offloadable TC rules on v0: no offloaded xfrm state on it (or on another "
                                 "netdev of the same PCI function) yet.")
    assert "apply the IPsec states and policies" in res["msg"]
    assert snapshot(ns) == before


def test_check_mode_changes_nothing(ns):
    before = snapshot(ns)
    res = run(ns, check_mode=True, config=[PUSH_TO_V0, POP_TO_V1], require_ipsec_before_offload=False)
    assert res.get("failed") is not True, res
    assert res["changed"] is True
    assert res["commands"][0] == "qdisc add dev w0 ingress" and len(res["commands"]) == 3
    assert snapshot(ns) == before


def test_flower_round_trip_when_available(ns):
    if not has_flower(ns):
        pytest.skip("this kernel has no flower/act_vlan (proved in the lab VMs instead)")
    before = snapshot(ns)
    cfg = [PUSH_TO_V0, dict(POP_TO_V1, hw="skip_hw")]
    res = run(ns, config=cfg, require_ipsec_before_offload=False)
    assert res.get("failed") is not True, res
    assert res["changed"] is True
    assert [(r["status"], r["offload"]) for r in res["rules"]] == [("added", "not_in_hw")] * 2
    res = run(ns, config=cfg, require_ipsec_before_offload=False)
    assert res["changed"] is False and res["commands"] == []
    res = run(ns, state="gathered")
    assert [(r["dev"], r["prio"]) for r in res["gathered"]] == [("v0", 20), ("w0", 10)]
    res = run(ns, state="deleted", remove_ingress_qdisc=True)
    assert res["changed"] is True and "qdisc del dev w0 ingress" in res["commands"]
    after = snapshot(ns)
    assert after == before  # u32 filter and v0's qdisc untouched, w0's qdisc (made by us) gone
