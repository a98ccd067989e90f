"""The topology objects of the scenario's inventory (MOLECULE_LAB_INVENTORY), on both hosts:
VXLAN overlay: the OVS bridge with the VXLAN port towards the peer's tunnel endpoint and the VF
representor, owned by the collection; RoCE over VF: the VF in its namespace and the QinQ tc rules
(push cvlan 5 + vlan 10 and redirect on the representor, pop + redirect on the PF) carrying the
collection's cookie.  After teardown: none of them left.  That traffic crosses these objects
encrypted (and tagged) is test_converged.py's traffic test."""
from __future__ import annotations

import pytest

import xfrm_view


def _vars(host_name):
    inv = xfrm_view.lab_inventory()
    return {**inv["vars"], **(inv["hosts"].get(host_name) or {})}


def _peer(pair, name):
    return next(n for n in pair if n != name)


def _owned_rules(host, dev):
    """The collection's tc rules on DEV's ingress (action cookie "ipo-mlx5"), read from `tc -j` by the
    parser tc_flower_vlan itself uses: [{match, actions, ...}] in the module's config form.  No
    ingress qdisc: no rule."""
    if not host.run("tc qdisc show dev %s ingress", dev).stdout.strip():
        return []
    tc = xfrm_view.module_util("_tc")
    return [f["rule"] for f in tc.parse_filters(dev, host.check_output("tc -j filter show dev %s ingress", dev))
            if f["owned"]]


def _pushes(rule):
    return [a["id"] for a in rule["actions"] if a.get("vlan") == "push"]


def _pops(rule):
    return sum(1 for a in rule["actions"] if a.get("vlan") == "pop")


def _redirects(rule):
    return [a["dev"] for a in rule["actions"] if a.get("mirred") == "redirect"]


@pytest.mark.phase("converged")
@pytest.mark.topology("vxlan_overlay")
def test_ovs_bridge_vxlan_port_and_representor(pair):
    for name, host in pair.items():
        v, peer = _vars(name), _vars(_peer(pair, name))
        br, port = v.get("vxlan_overlay_bridge", "br-ovs"), v.get("vxlan_overlay_port", "vxlan1")
        ports = host.check_output("ovs-vsctl list-ports %s", br).split()
        assert port in ports and v["vxlan_overlay_rep"] in ports, "%s: %s ports %s" % (name, br, ports)
        assert host.check_output("ovs-vsctl get interface %s type", port).strip() == "vxlan"
        remote = host.check_output("ovs-vsctl get interface %s options:remote_ip", port).strip().strip('"')
        assert remote == peer["ipsec_local_ip"], "%s: %s points at %s, not the peer" % (name, port, remote)
        vni = host.check_output("ovs-vsctl get interface %s options:key", port).strip().strip('"')
        assert vni == str(v["vxlan_overlay_vni"]), "%s: VNI %s" % (name, vni)
        owner = host.check_output("ovs-vsctl get port %s external_ids:ipsec_offload_mlx5", port).strip().strip('"')
        assert owner == "owned", "%s: port %s not marked as the collection's (%r)" % (name, port, owner)


@pytest.mark.phase("converged")
@pytest.mark.topology("roce_vf")
def test_vf_in_its_namespace_with_its_address(pair):
    for name, host in pair.items():
        v = _vars(name)
        out = host.check_output("ip -n %s -br -4 addr show dev %s", v["ipsec_namespace"], v["ipsec_dev"])
        assert v["ipsec_local_ip"] + "/" in out, "%s: %s in %s: %s" % (name, v["ipsec_dev"], v["ipsec_namespace"], out)
        assert host.run("ip link show dev %s", v["ipsec_dev"]).rc != 0, "%s: the VF is still in the initial netns" % name


@pytest.mark.phase("converged")
@pytest.mark.topology("roce_vf")
def test_qinq_tc_rules_owned_and_in_place(pair):
    for name, host in pair.items():
        v = _vars(name)
        pf, rep = v["roce_vf_pf"], v["roce_vf_rep"]
        outer, inner = v["roce_vf_outer_vlan"], v["roce_vf_inner_vlan"]
        on_rep, on_pf = _owned_rules(host, rep), _owned_rules(host, pf)
        assert on_rep, "%s: no owned tc rule on %s ingress" % (name, rep)
        assert on_pf, "%s: no owned tc rule on %s ingress" % (name, pf)
        # inner tag first, then the outer one; the redirect last
        assert any(_pushes(r) == [inner, outer] and _redirects(r) == [pf] for r in on_rep), \
            "%s: no rule on %s pushing vlan %d then %d and redirecting to %s: %s" % (name, rep, inner, outer, pf, on_rep)
        assert any(r["match"].get("vlan_id") == outer and r["match"].get("cvlan_id") == inner and _pops(r) == 2
                   and _redirects(r) == [rep] for r in on_pf), \
            "%s: no rule on %s matching vlan %d + %d, popping both tags and redirecting to %s: %s" % (
                name, pf, outer, inner, rep, on_pf)


@pytest.mark.phase("torn_down")
@pytest.mark.topology("vxlan_overlay")
def test_no_owned_ovs_port_left(pair):
    for name, host in pair.items():
        v = _vars(name)
        br, port = v.get("vxlan_overlay_bridge", "br-ovs"), v.get("vxlan_overlay_port", "vxlan1")
        assert host.run("ovs-vsctl port-to-br %s", port).rc != 0, "%s: %s still on a bridge" % (name, port)
        assert host.run("ovs-vsctl port-to-br %s", v["vxlan_overlay_rep"]).rc != 0, \
            "%s: %s still on a bridge" % (name, v["vxlan_overlay_rep"])
        # the bridge was created by the collection on the fresh lab VM: teardown removes it once empty
        assert host.run("ovs-vsctl br-exists %s", br).rc != 0, "%s: bridge %s left behind" % (name, br)


@pytest.mark.phase("torn_down")
@pytest.mark.topology("roce_vf")
def test_no_owned_tc_rule_left(pair):
    for name, host in pair.items():
        v = _vars(name)
        for dev in (v["roce_vf_pf"], v["roce_vf_rep"]):
            left = _owned_rules(host, dev)
            assert not left, "%s: owned tc rules left on %s: %s" % (name, dev, left)
