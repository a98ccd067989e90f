# -*- coding: utf-8 -*-
"""The example inventories, read by Ansible's own inventory code, derive cleanly; the derived
objects are accepted by the xfrm modules' validators and match what really ran in the lab."""

from __future__ import annotations

import os

import pytest

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.manager import VariableManager

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

from harness import fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
EXAMPLES = os.path.join(ROOT, "inventories", "examples")


def load_inventory(name):
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[os.path.join(EXAMPLES, name)])
    vm = VariableManager(loader=loader, inventory=inv)
    hostvars = {h.name: vm.get_vars(host=h, include_hostvars=False) for h in inv.get_hosts()}
    return hostvars, inv.get_groups_dict()


def derive_with_store(name, with_report=False):
    hv, groups = load_inventory(name)
    first = _pairs.derive(hv, groups=groups, keys="none")
    links = _pairs.allocate(_pairs.links_from_summary(first["pairs"]), tuple(first["reqid_range"]))
    entries, report = _pairs.update_store({}, links)
    result = _pairs.derive(hv, groups=groups, store=entries)
    return (result, report) if with_report else result


@pytest.mark.parametrize("name,hosts,npairs", [
    ("lab", ["lab1", "lab2"], 2),
    ("vxlan-overlay", ["dpu-a", "dpu-b"], 2),
    ("roce-vf", ["roce-a", "roce-b"], 2),
    ("mesh3", ["node1", "node2", "node3"], 6),
])
def test_example_inventories_derive(name, hosts, npairs):
    r, report = derive_with_store(name, with_report=True)
    assert sorted(r["hosts"]) == hosts
    assert len(r["pairs"]) == npairs
    assert len(report["created"]) == npairs
    assert all(p["key_source"] == "keystore" for p in r["pairs"])
    per_host = (npairs // len(hosts))
    for h in hosts:
        assert len(r["hosts"][h]["states"]) == 2 * per_host


def test_example_lab_is_software_only():
    r = derive_with_store("lab")
    objs = [o for h in r["hosts"].values() for o in h["states"] + h["policies"]]
    assert {o["offload"]["type"] for o in objs} == {"none"}
    assert [(s["src"], s["dst"], s["direction"]) for s in r["hosts"]["lab1"]["states"]] == [
        ("192.168.100.1", "192.168.100.2", "out"), ("192.168.100.2", "192.168.100.1", "in")]


def test_example_vxlan_overlay():
    r = derive_with_store("vxlan-overlay")
    a = r["hosts"]["dpu-a"]
    assert {(s["offload"]["type"], s["offload"]["dev"]) for s in a["states"]} == {("packet", "enp8s0f0np0")}
    assert [(p["dir"], p["src"], p["dst"], p["proto"], p["dport"], p["priority"]) for p in a["policies"]] == [
        ("out", "172.16.0.1/32", "172.16.0.2/32", "udp", 4789, 12),
        ("in", "172.16.0.2/32", "172.16.0.1/32", "udp", 4789, 12)]


def test_example_roce_vf():
    r = derive_with_store("roce-vf")
    a = r["hosts"]["roce-a"]
    assert [(p["dir"], p["offload"]["type"]) for p in a["policies"]] == [("out", "packet"), ("in", "packet"), ("fwd", "none")]
    assert {len(s["aead"]["key"]) for s in a["states"]} == {2 + 40}   # AES-128 + salt, as the vendor


def test_example_mesh3():
    r = derive_with_store("mesh3")
    pairs = {p["name"]: p for p in r["pairs"]}
    assert (pairs["node1->node2"]["spi"], pairs["node1->node2"]["spi_source"]) == (0x1000, "override")
    n3 = r["hosts"]["node3"]
    assert n3["namespace"] == "ns0"
    assert {s["offload"]["type"] for s in n3["states"]} == {"crypto"}
    assert {p["offload"]["type"] for p in n3["policies"]} == {"none"}
    assert {s["offload"]["type"] for s in r["hosts"]["node1"]["states"]} == {"packet"}


# ----------------------------------------------------------------------------------------------
# against the xfrm core (the modules' own validators) and a real lab capture

def _xfrm():
    try:
        from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm
    except ImportError:
        pytest.skip("module_utils/_xfrm.py is not in this tree")
    return _xfrm


@pytest.mark.parametrize("name", ["lab", "vxlan-overlay", "roce-vf", "mesh3"])
def test_xfrm_validators_accept_derived_objects(name):
    X = _xfrm()
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec  # pylint: disable=import-outside-toplevel
    SA_OPTIONS, SP_OPTIONS = _argspec.Options(X.sa_options()), _argspec.Options(X.sp_options())  # pylint: disable=invalid-name
    r = derive_with_store(name)
    rng = tuple(r["reqid_range"])
    for host, objs in r["hosts"].items():
        sas = []
        for i, sa in enumerate(objs["states"]):
            field = "%s.states[%d]" % (host, i)  # the module's sub-options first: no key it does not declare
            v = X.check_sa(X.complete_sa(X.validate_sa(field, SA_OPTIONS.apply(field, sa), "merged", rng)))
            assert (v["spi"], v["reqid"], v["direction"], v["offload"]["type"]) == (
                sa["spi"], sa["reqid"], sa["direction"], sa["offload"]["type"])
            sas.append(v)
        X.check_key_reuse(sas, [], X.SAKind(rng))
        for i, sp in enumerate(objs["policies"]):
            field = "%s.policies[%d]" % (host, i)
            v = X.complete_sp(X.validate_sp(field, SP_OPTIONS.apply(field, sp), "merged", rng))
            assert (v["dir"], v["tmpls"][0]["reqid"], v["offload"]["type"]) == (
                sp["dir"], sp["tmpl"]["reqid"], sp["offload"]["type"])


def _strip_comments(text):
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"


def test_lab_pair_matches_the_real_lab_capture():
    """The lab ran lab1 with SPIs 0x1000 (out) / 0x1001 (in) and keys 0x11.. / 0x22..; derive the
    same pair with those values given by hand and compare with what the kernel printed."""
    X = _xfrm()
    k1, k2 = "0x" + "11" * 20, "0x" + "22" * 20
    hv = {
        "lab1": {"ipsec_local_ip": "192.168.100.1", "ipsec_peers": ["lab2"], "ipsec_offload": "none", "ipsec_key_bits": 128,
                 "ipsec_overrides": {"lab2": {"spi": "0x1000", "key": k1}}},
        "lab2": {"ipsec_local_ip": "192.168.100.2", "ipsec_peers": ["lab1"], "ipsec_offload": "none", "ipsec_key_bits": 128,
                 "ipsec_overrides": {"lab1": {"spi": "0x1001", "key": k2}}},
    }
    mine = {(s["src"], s["spi"]): s for s in _pairs.derive(hv)["hosts"]["lab1"]["states"]}
    real = X.parse_states(_strip_comments(fixture("pairs/lab-xfrm-state.txt")))
    assert len(real) == 2
    for r in real:
        m = mine[(r["src"], r["spi"])]
        assert (m["dst"], m["mode"], m["esn"]) == (r["dst"], r["mode"], r["esn"])
        assert (m["aead"]["name"], m["aead"]["key"][2:], m["aead"]["icv"]) == (r["aead"]["name"], r["aead"]["key"], r["aead"]["icv"])
        assert (m["sel"]["src"], m["sel"]["dst"]) == (r["sel"]["src"], r["sel"]["dst"])
        if m["direction"] == "in":
            assert m["replay_window"] == r["replay_window"] == 64
    pols = X.parse_policies(_strip_comments(fixture("pairs/lab-xfrm-policy.txt")))
    mine_p = {p["dir"]: p for p in _pairs.derive(hv)["hosts"]["lab1"]["policies"]}
    assert sorted(p["dir"] for p in pols) == sorted(mine_p) == ["in", "out"]
    for p in pols:
        m = mine_p[p["dir"]]
        assert (m["src"], m["dst"], m["priority"]) == (p["src"], p["dst"], p["priority"])
        t = p["tmpls"][0]
        assert (m["tmpl"]["src"], m["tmpl"]["dst"], m["tmpl"]["proto"], m["tmpl"]["mode"]) == (t["src"], t["dst"], t["proto"], t["mode"])
