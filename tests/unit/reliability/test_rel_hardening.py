# -*- coding: utf-8 -*-
"""Reliability 5 (issue 15): input hardening, an adversarial corpus.

The classes issue 15 found (IPv6 zone ids carrying line breaks and shell syntax, trailing newlines
through ``$``-anchored patterns, Unicode digits normalised by int()/isdigit(), ``namespace: ..``,
non-hex PCI handles, vlan ids 0/4095, one AES key with two salts, a derivation that let through
what a module refuses later, a pinned allocation renumbered by another pair's override, a heredoc
a value could close in render.yml), fed to every module field and every inventory variable that
reaches a batch line, a command, an OVS transaction or a rendered file.

Each case asserts: failed, the field path named (``config[5000].spi``; ``host edge-a:
ipsec_selectors[0].proto`` for the derivation), no traceback, and nothing changed: no
state-changing command on the scripted host (``_rel.read_only``), no sysfs write, the inventory
untouched, no key store written, no rendered file.  Every case is recorded as figure "hardening".
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_render import ipsec_render
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.modules import rxe_link

import _rel
from harness import FakeHost, run_module

B = _rel.load_test_module("reliability/test_rel_bad_input.py", "_rel_bad_input_corpus")
sa, sa_in, sp, rule, rule_action, vx = B.sa, B.sa_in, B.sp, B.rule, B.rule_action, B.vx
PF, DEV = B.PF, B.DEV

# ------------------------------------------------------------------------------ hostile strings

ZONE = {   # IPv6 zone ids: refused whatever they hold
    "zone-plain": "fe80::1%eth0",
    "zone-newline": "fe80::1%eth0\nxfrm state flush",
    "zone-heredoc": "fe80::1%x\nXFRM\nreboot",
    "zone-subshell": "2001:db8::1%$(reboot)",
    "zone-space": "2001:db8::1%a b",
}
ADDR_BAD = dict(ZONE, **{
    "trailing-newline": "192.0.2.1\n",
    "leading-space": " 192.0.2.1",
    "unicode-digits": "\u0661\u0669\u0662.0.2.1",
    "fullwidth": "\uff11\uff19\uff12.0.2.1",
    "nul": "192.0.2.1\x00",
})
INT_BAD = {   # integers: ASCII digits or 0x-hex only
    "unicode-digit": "\u0664\u0660\u0669\u0666",
    "fullwidth-digit": "\uff14\uff10\uff19\uff16",
    "trailing-newline": "4096\n",
    "leading-space": " 4096",
    "underscore": "4_096",
    "plus-sign": "+4096",
    "hex-unicode": "0x\u0661\u0660\u0660\u0660",
    "injection": "4096; reboot",
}
NAME_BAD = {   # interface / namespace names
    "dot": ".",
    "dotdot": "..",
    "slash": "a/b",
    "colon": "p0:1",
    "trailing-newline": "p0\n",
    "tab": "p0\t",
    "leading-dash": "-p0",
    "quote": "p0'",
    "heredoc": "p0\nXFRM",
    "nul": "p\x000",
}


def keyhex(i, nbytes=20):
    """A distinct, non-zero key||salt per ``i``."""
    body = ("%08x" % (i + 1)) * ((nbytes - 4) // 4)
    return "0x" + body + "%08x" % (0x5a170000 + i)


# ------------------------------------------------------------------------------ module hosts

# the bad-input corpus's fixtures: a scripted sysfs with PF and two VFs, a 6.12 kernel (autouse)
tree = B.tree
kernel_612 = B.kernel_612


def rxe_host():
    return B.catch_all(FakeHost()), []


MODULES = dict(B.MODULES, rxe_link=rxe_link)
S, P, TC, OVS, DL, SR, INFO, RXE = ("xfrm_offload_state", "xfrm_offload_policy", "tc_flower_vlan", "ovs_vxlan_bridge",
                                    "mlx_devlink_eswitch", "mlx_sriov", "ipsec_offload_info", "rxe_link")
HOSTS = {S: "xfrm", P: "xfrm", TC: "tc", OVS: "ovs", DL: "devlink", SR: "sriov", INFO: "info", RXE: "rxe"}


def sa_list(n, bad_at, **bad):
    """n distinct valid SAs, element ``bad_at`` changed by ``bad``."""
    out = []
    for i in range(n):
        out.append(dict(src="10.%d.%d.1" % (i // 250, i % 250), dst="192.0.2.2", spi=0x10000 + i,
                        reqid=0x51C00000 + i, direction="out", aead=dict(key=keyhex(i)),
                        offload=dict(type="none")))
    out[bad_at].update(bad)
    return out


def module_cases():
    c = []

    def add(cid, cls, module, args, field):
        c.append((cid, cls, module, args, field))

    # --- xfrm_offload_state: every string field
    for k, v in ADDR_BAD.items():
        add("state-dst-" + k, "address", S, dict(config=[sa(dst=v)]), "config[0].dst")
        add("state-src-" + k, "address", S, dict(config=[sa(src=v)]), "config[0].src")
    for k, v in ZONE.items():
        add("state-sel-src-" + k, "address", S, dict(config=[sa(sel=dict(src=v + "/128"))]), "config[0].sel.src")
    add("state-sel-dst-zone-prefix", "address", S, dict(config=[sa(sel=dict(dst="fe80::%eth0/64"))]),
        "config[0].sel.dst")
    for k, v in INT_BAD.items():
        add("state-spi-" + k, "digits", S, dict(config=[sa(spi=v)]), "config[0].spi")
        add("state-reqid-" + k, "digits", S, dict(config=[sa(reqid=v)]), "config[0].reqid")
    for k in ("unicode-digit", "trailing-newline", "leading-space"):
        add("state-window-" + k, "digits", S,
            dict(config=[sa_in(replay_window=INT_BAD[k].replace("4096", "64").replace("\u0664\u0660\u0669\u0666",
                                                                                      "\u0666\u0664"))]),
            "config[0].replay_window")
        add("state-icv-" + k, "digits", S, dict(config=[sa(aead=dict(key=B.KEY_A, icv={
            "unicode-digit": "\u0661\u0662\u0668", "trailing-newline": "128\n", "leading-space": " 128"}[k]))]),
            "config[0].aead.icv")
    for k, v in (("proto-newline", "17\n"), ("proto-unicode", "\u0661\u0667"), ("proto-name-newline", "udp\n"),
                 ("proto-zero", 0), ("proto-256", 256), ("proto-bool", True), ("proto-space", " udp")):
        add("state-sel-" + k, "proto", S, dict(config=[sa(sel=dict(proto=v))]), "config[0].sel.proto")
    for k, v in (("0", 0), ("unicode", "\u0664\u0667\u0668\u0669"), ("newline", "4789\n")):
        add("state-sel-dport-" + k, "digits", S, dict(config=[sa(sel=dict(proto="udp", dport=v))]),
            "config[0].sel.dport")
    for k, v in NAME_BAD.items():
        add("state-dev-" + k, "name", S, dict(config=[sa(offload=dict(type="packet", dev=v))]), "config[0].offload.dev")
        add("state-namespace-" + k, "name", S, dict(config=[sa()], namespace=v), "namespace")
    add("state-key-newline", "key", S, dict(config=[sa(aead=dict(key=B.KEY_A + "\n"))]), "config[0].aead.key")
    add("state-key-space", "key", S, dict(config=[sa(aead=dict(key=" " + B.KEY_A))]), "config[0].aead.key")
    add("state-key-fullwidth", "key", S, dict(config=[sa(aead=dict(key="0x" + "\uff41" * 40))]), "config[0].aead.key")
    add("state-key-aes-zero", "key", S, dict(config=[sa(aead=dict(key="0x" + "00" * 16 + "5a175a17"))]),
        "config[0].aead.key")
    add("state-same-aes-two-salts", "key", S,
        dict(config=[sa(aead=dict(key="0x" + "3c" * 16 + "00000001")),
                     sa_in(aead=dict(key="0x" + "3c" * 16 + "00000002"))]), "config[1].aead.key")
    add("state-same-aes-two-salts-256", "key", S,
        dict(config=[sa(aead=dict(key="0x" + "4d" * 32 + "00000001")),
                     sa_in(aead=dict(key="0x" + "4d" * 32 + "ffffffff"))]), "config[1].aead.key")
    add("state-owned-range-unicode", "digits", S, dict(config=[sa()], owned_reqid_range=["\u0661", "0x51c0ffff"]),
        "owned_reqid_range[0]")
    add("state-tunnel-v6-zone", "address", S,
        dict(config=[sa(src="2001:db8::1", dst="2001:db8::2%eth0", mode="tunnel")]), "config[0].dst")
    add("state-huge-list-bad-spi-middle", "list", S, dict(config=sa_list(10001, 5000, spi="\u0664\u0660\u0669\u0666")),
        "config[5000].spi")
    add("state-huge-list-bad-dst-middle", "list", S, dict(config=sa_list(10001, 5000, dst="192.0.2.2%x\nreboot")),
        "config[5000].dst")
    add("state-huge-list-shared-aes-middle", "list", S,
        dict(config=sa_list(2001, 1000, aead=dict(key=keyhex(3)[:-8] + "00000000"))), "config[1000].aead.key")

    # --- xfrm_offload_policy
    for k, v in ZONE.items():
        add("policy-src-" + k, "address", P, dict(config=[sp(src=v)]), "config[0].src")
        add("policy-tmpl-dst-" + k, "address", P,
            dict(config=[sp(src="2001:db8::1/128", dst="2001:db8::2/128",
                            tmpl=dict(src="2001:db8::1", dst=v, reqid="0x51c00001"))]), "config[0].tmpl.dst")
    add("policy-dst-newline", "address", P, dict(config=[sp(dst="192.0.2.2/32\n")]), "config[0].dst")
    add("policy-dst-unicode", "address", P, dict(config=[sp(dst="192.0.2.\u0662/32")]), "config[0].dst")
    for k, v in (("newline", "17\n"), ("unicode", "\u0661\u0667"), ("name-newline", "tcp\n"), ("256", "256")):
        add("policy-proto-" + k, "proto", P, dict(config=[sp(proto=v)]), "config[0].proto")
    for k, v in (("0", 0), ("unicode", "\u0664\u0667\u0668\u0669"), ("newline", "4789\n")):
        add("policy-dport-" + k, "digits", P, dict(config=[sp(proto="udp", dport=v)]), "config[0].dport")
        add("policy-sport-" + k, "digits", P, dict(config=[sp(proto="tcp", sport=v)]), "config[0].sport")
    for k in ("unicode-digit", "trailing-newline", "leading-space", "underscore"):
        add("policy-priority-" + k, "digits", P, dict(config=[sp(priority=INT_BAD[k])]), "config[0].priority")
        add("policy-tmpl-reqid-" + k, "digits", P,
            dict(config=[sp(tmpl=dict(src="192.0.2.1", dst="192.0.2.2", reqid=INT_BAD[k]))]), "config[0].tmpl.reqid")
    add("policy-mark-unicode", "digits", P, dict(config=[sp(mark=dict(value="\u0661"))]), "config[0].mark.value")
    for k in ("dotdot", "slash", "trailing-newline", "leading-dash"):
        add("policy-dev-" + k, "name", P, dict(config=[sp(offload=dict(type="packet", dev=NAME_BAD[k]))]),
            "config[0].offload.dev")
        add("policy-namespace-" + k, "name", P, dict(config=[sp()], namespace=NAME_BAD[k]), "namespace")

    # --- tc_flower_vlan
    for k, v in (("0", 0), ("4095", 4095), ("unicode", "\u0661\u0660"), ("newline", "10\n")):
        add("tc-vlan-id-" + k, "vlan", TC, dict(config=[rule(match={"vlan_id": v})]), "config[0].match.vlan_id")
    for k, v in (("0", 0), ("4095", 4095)):
        add("tc-cvlan-id-" + k, "vlan", TC, dict(config=[rule(protocol="802.1ad", match={
            "vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": v})]), "config[0].match.cvlan_id")
        add("tc-push-id-" + k, "vlan", TC, dict(config=[rule(actions=[{"vlan": "push", "id": v},
                                                                      {"mirred": "redirect", "dev": "pf0vf0_rep"}])]),
            "config[0].actions[0].id")
    for k, v in ZONE.items():
        add("tc-dst-ip-" + k, "address", TC,
            dict(config=[rule(protocol="ipv6", match={"vlan_id": None, "dst_ip": v})]), "config[0].match.dst_ip")
    add("tc-src-ip-newline", "address", TC,
        dict(config=[rule(protocol="ip", match={"vlan_id": None, "src_ip": "10.0.0.1\n"})]), "config[0].match.src_ip")
    add("tc-mac-newline", "text", TC, dict(config=[rule(match={"dst_mac": "02:00:00:00:00:01\n"})]),
        "config[0].match.dst_mac")
    add("tc-ethtype-unicode", "digits", TC, dict(config=[rule(protocol="802.1q", match={
        "vlan_ethtype": "\u0662\u0660\u0664\u0668"})]), "config[0].match.vlan_ethtype")
    add("tc-dport-unicode", "digits", TC, dict(config=[rule(protocol="ip", match={
        "vlan_id": None, "ip_proto": "udp", "dst_port": "\u0664\u0667\u0668\u0669"})]), "config[0].match.dst_port")
    add("tc-dport-0", "digits", TC, dict(config=[rule(protocol="ip", match={
        "vlan_id": None, "ip_proto": "udp", "dst_port": 0})]), "config[0].match.dst_port")
    add("tc-prio-unicode", "digits", TC, dict(config=[rule(prio="\u0661\u0660")]), "config[0].prio")
    add("tc-chain-newline", "digits", TC, dict(config=[rule(chain="0\n")]), "config[0].chain")
    for k in ("dotdot", "slash", "colon", "trailing-newline", "leading-dash"):
        add("tc-dev-" + k, "name", TC, dict(config=[rule(dev=NAME_BAD[k])]), "config[0].dev")
        add("tc-mirred-dev-" + k, "name", TC, dict(config=[rule_action(1, dev=NAME_BAD[k])]),
            "config[0].actions[1].dev")
    add("tc-namespace-dotdot", "name", TC, dict(config=[rule()], namespace=".."), "namespace")

    # --- ovs_vxlan_bridge
    for k, v in ZONE.items():
        add("ovs-remote-" + k, "address", OVS, dict(bridge="br-ovs", vxlan=[vx(remote_ip=v, local_ip=None)]),
            "vxlan[0].remote_ip")
    add("ovs-local-zone", "address", OVS, dict(bridge="br-ovs", vxlan=[vx(local_ip="fe80::1%br0",
                                                                          remote_ip="fe80::2")]), "vxlan[0].local_ip")
    add("ovs-remote-newline", "address", OVS, dict(bridge="br-ovs", vxlan=[vx(remote_ip="192.168.100.2\n")]),
        "vxlan[0].remote_ip")
    add("ovs-key-unicode", "digits", OVS, dict(bridge="br-ovs", vxlan=[vx(key="\u0661\u0660\u0660")]), "vxlan[0].key")
    add("ovs-dst-port-unicode", "digits", OVS, dict(bridge="br-ovs", vxlan=[vx(dst_port="\u0664\u0667\u0668\u0669")]),
        "vxlan[0].dst_port")
    add("ovs-option-newline", "text", OVS, dict(bridge="br-ovs", vxlan=[vx(options={"tos": "inherit\n"})]),
        "vxlan[0].options")
    add("ovs-option-key-newline", "text", OVS, dict(bridge="br-ovs", vxlan=[vx(options={"tos\n": "inherit"})]),
        "vxlan[0].options")
    for k in ("dot", "dotdot", "slash", "leading-dash", "trailing-newline"):
        add("ovs-bridge-" + k, "name", OVS, dict(bridge=NAME_BAD[k]), "bridge")
        add("ovs-port-" + k, "name", OVS, dict(bridge="br-ovs", ports=[NAME_BAD[k]]), "ports[0]")
    add("ovs-vxlan-name-colon", "name", OVS, dict(bridge="br-ovs", vxlan=[vx(name="vx:1")]), "vxlan[0].name")

    # --- mlx_devlink_eswitch
    for k, v in (("non-hex-pci", "pci/0000:0g:00.0"), ("pci-newline", DEV + "\n"), ("pci-unicode", "pci/0000:\u06608:00.0"),
                 ("pci-function-8", "pci/0000:08:00.8"), ("two-slashes", "pci/0000:08:00.0/x"),
                 ("bus-dotdot", "../0000:08:00.0"), ("netdevsim-space", "netdevsim/netdevsim 1")):
        add("devlink-device-" + k, "handle", DL, dict(device=v), "device")
    add("devlink-port-non-hex", "handle", DL, dict(device=DEV, port_functions=[{"port": "pci/0000:0z:00.0/1",
                                                                                "ipsec_packet": True}]),
        "port_functions[0].port")
    add("devlink-port-unicode-index", "handle", DL,
        dict(device=DEV, port_functions=[{"port": DEV + "/\u0661", "ipsec_packet": True}]), "port_functions[0].port")
    add("devlink-vf-unicode", "digits", DL, dict(device=DEV, port_functions=[{"vf": "\u0661", "ipsec_packet": True}]),
        "port_functions[0].vf")

    # --- mlx_sriov
    add("sriov-device-netdevsim-unicode", "handle", SR, dict(device="netdevsim\u0661", num_vfs=1), "device")
    add("sriov-device-non-hex", "handle", SR, dict(device="0000:0g:00.0", num_vfs=1), "device")
    add("sriov-num-vfs-unicode", "digits", SR, dict(pf="p0", num_vfs="\u0662"), "num_vfs")
    add("sriov-num-vfs-newline", "digits", SR, dict(pf="p0", num_vfs="2\n"), "num_vfs")
    add("sriov-pf-dotdot", "name", SR, dict(pf="..", num_vfs=1), "pf")
    add("sriov-pf-slash", "name", SR, dict(pf="../p0", num_vfs=1), "pf")

    # --- ipsec_offload_info, rxe_link
    add("info-namespace-dotdot", "name", INFO, dict(namespace=".."), "namespace")
    add("info-device-colon", "name", INFO, dict(devices=["p0:1"]), "devices[0]")
    add("info-devlink-non-hex", "handle", INFO, dict(devlink=["pci/0000:0g:00.0"]), "devlink[0]")
    add("rxe-namespace-dotdot", "name", RXE, dict(config=[{"netdev": "p0"}], namespace=".."), "namespace")
    add("rxe-address-zone", "address", RXE, dict(config=[{"netdev": "p0"}], state="gathered", address="fe80::1%p0"),
        "address")
    return c


MODULE_CASES = module_cases()


def make_host(kind, tree):
    if kind == "rxe":
        return rxe_host()
    return B.make_host(kind, tree)


@pytest.mark.parametrize("case,cls,module,args,field", [pytest.param(*c, id=c[0]) for c in MODULE_CASES])
def test_module_refuses_hostile_input(tree, case, cls, module, args, field):
    host, sysfs_writes = make_host(HOSTS[module], tree)
    why = []
    try:
        res, failed = run_module(MODULES[module].main, copy.deepcopy(args), host)
    except Exception as exc:   # an unhandled exception is a defect of its own
        res, failed = {"msg": "unhandled %s: %s" % (type(exc).__name__, exc)}, True
        why.append("unhandled exception %s" % type(exc).__name__)
    changing = _rel.writes(host.commands()) + [("sysfs",) + tuple(w) for w in sysfs_writes]
    why += B.check_failure(res, failed, field)
    if "\n" in str(res.get("msg", "")):
        why.append("line break in the message")
    if changing:
        why.append("state-changing commands: %r" % changing[:3])
    _rel.record("hardening", case=case, cls=cls, target=module, ok=not why, field=field)
    assert not why, "%s: %s -- msg %r" % (case, "; ".join(why), str(res.get("msg"))[:300])


# ------------------------------------------------------------------------------ the derivation

K12, K21, K13, K31 = keyhex(12), keyhex(21), keyhex(13), keyhex(31)


def lab(**extra):
    hv = {
        "edge-a": {"ipsec_local_ip": "192.168.100.1", "ipsec_peers": ["edge-b"], "ipsec_offload": "none",
                   "ipsec_key_bits": 128, "ipsec_overrides": {"edge-b": {"key": K12}}},
        "edge-b": {"ipsec_local_ip": "192.168.100.2", "ipsec_peers": ["edge-a"], "ipsec_offload": "none",
                   "ipsec_key_bits": 128, "ipsec_overrides": {"edge-a": {"key": K21}}},
    }
    for host, vs in extra.items():
        hv.setdefault(host, {}).update(vs)
    return hv


def lab6(**extra):
    hv = lab(**extra)
    for h, ip in (("edge-a", "2001:db8::1"), ("edge-b", "2001:db8::2")):
        hv[h].setdefault("ipsec_local_ip", ip)
        if hv[h]["ipsec_local_ip"].startswith("192.168.100."):
            hv[h]["ipsec_local_ip"] = ip
    return hv


def tunnel(**extra):
    base = {"edge-a": {"ipsec_mode": "tunnel", "ipsec_networks": ["10.1.0.0/24"]},
            "edge-b": {"ipsec_mode": "tunnel", "ipsec_networks": ["10.2.0.0/24"]}}
    for h, vs in extra.items():
        base[h].update(vs)
    return lab(**base)


def derive_cases():
    c = []

    def add(cid, cls, make, field):
        c.append((cid, cls, make, field))

    for k, v in ADDR_BAD.items():
        add("derive-local-ip-" + k, "address", lambda v=v: lab(**{"edge-a": {"ipsec_local_ip": v}}),
            "host edge-a: ipsec_local_ip")
    for k, v in ZONE.items():
        add("derive-local-ip6-" + k, "address", lambda v=v: lab6(**{"edge-b": {"ipsec_local_ip": v}}),
            "host edge-b: ipsec_local_ip")
        add("derive-networks-" + k, "address", lambda v=v: tunnel(**{"edge-a": {"ipsec_networks": [v + "/64"]}}),
            "host edge-a: ipsec_networks[0]")
    add("derive-networks-newline", "address", lambda: tunnel(**{"edge-a": {"ipsec_networks": ["10.1.0.0/24\n"]}}),
        "host edge-a: ipsec_networks[0]")
    add("derive-networks-unicode", "address",
        lambda: tunnel(**{"edge-b": {"ipsec_networks": ["10.2.0.0/24", "10.\u0663.0.0/24"]}}),
        "host edge-b: ipsec_networks[1]")
    for k, v in NAME_BAD.items():
        add("derive-dev-" + k, "name", lambda v=v: lab(**{"edge-a": {"ipsec_dev": v, "ipsec_offload": "crypto"}}),
            "host edge-a: ipsec_dev")
        add("derive-namespace-" + k, "name", lambda v=v: lab(**{"edge-b": {"ipsec_namespace": v}}),
            "host edge-b: ipsec_namespace")
    for k, v in (("newline", "17\n"), ("unicode", "\u0661\u0667"), ("name-newline", "udp\n"), ("zero", 0),
                 ("256", 256), ("bool", True), ("space", " udp"), ("injection", "udp; reboot"),
                 ("fullwidth", "\uff11\uff17")):
        add("derive-selector-proto-" + k, "proto",
            lambda v=v: lab(**{"edge-a": {"ipsec_selectors": [{"proto": v}]}}), "host edge-a: ipsec_selectors[0].proto")
    for k, v in (("0", 0), ("unicode", "\u0664\u0667\u0668\u0669"), ("newline", "4789\n"), ("65536", 65536),
                 ("negative", -1), ("hex-unicode", "0x\u0661\u0662")):
        add("derive-selector-dport-" + k, "digits",
            lambda v=v: lab(**{"edge-a": {"ipsec_selectors": [{"proto": "udp", "dport": v}]}}),
            "host edge-a: ipsec_selectors[0].dport")
    add("derive-selector-sport-0-second", "digits",
        lambda: lab(**{"edge-b": {"ipsec_selectors": [{"proto": "udp", "dport": 4789}, {"proto": "tcp", "sport": 0}]}}),
        "host edge-b: ipsec_selectors[1].sport")
    for k in INT_BAD:
        add("derive-override-spi-" + k, "digits",
            lambda k=k: lab(**{"edge-a": {"ipsec_overrides": {"edge-b": {"key": K12, "spi": INT_BAD[k]}}}}),
            "host edge-a: ipsec_overrides[edge-b].spi")
    for k in ("unicode-digit", "trailing-newline", "leading-space"):
        add("derive-override-reqid-" + k, "digits",
            lambda k=k: lab(**{"edge-b": {"ipsec_overrides": {"edge-a": {"key": K21, "reqid": INT_BAD[k]}}}}),
            "host edge-b: ipsec_overrides[edge-a].reqid")
        add("derive-key-bits-" + k, "digits",
            lambda k=k: lab(**{"edge-a": {"ipsec_key_bits": {"unicode-digit": "\u0661\u0662\u0668",
                                                             "trailing-newline": "128\n",
                                                             "leading-space": " 128"}[k]}}),
            "host edge-a: ipsec_key_bits")
        add("derive-priority-" + k, "digits",
            lambda k=k: lab(**{"edge-a": {"ipsec_policy_priority": INT_BAD[k].replace("4096", "5")}}),
            "host edge-a: ipsec_policy_priority")
    add("derive-reqid-range-unicode", "digits",
        lambda: lab(**{"edge-a": {"ipsec_owned_reqid_range": ["\u0661", "0x51c0ffff"]}}),
        "host edge-a: ipsec_owned_reqid_range")
    add("derive-key-newline", "key", lambda: lab(**{"edge-a": {"ipsec_overrides": {"edge-b": {"key": K12 + "\n"}}}}),
        "host edge-a: ipsec_overrides[edge-b].key")
    add("derive-key-aes-zero-128", "key",
        lambda: lab(**{"edge-a": {"ipsec_overrides": {"edge-b": {"key": "0x" + "00" * 16 + "5a175a17"}}}}),
        "host edge-a: ipsec_overrides[edge-b].key")
    add("derive-key-aes-zero-256", "key",
        lambda: lab(**{"edge-a": {"ipsec_key_bits": 256, "ipsec_overrides": {"edge-b": {"key": "0x" + "00" * 36}}},
                       "edge-b": {"ipsec_key_bits": 256, "ipsec_overrides": {"edge-a": {"key": keyhex(7, 36)}}}}),
        "host edge-a: ipsec_overrides[edge-b].key")
    add("derive-key-fullwidth", "key",
        lambda: lab(**{"edge-b": {"ipsec_overrides": {"edge-a": {"key": "0x" + "\uff41" * 40}}}}),
        "host edge-b: ipsec_overrides[edge-a].key")
    add("derive-key-bits-mismatch", "key",
        lambda: lab(**{"edge-a": {"ipsec_overrides": {"edge-b": {"key": keyhex(5, 36)}}}}),
        "host edge-a: ipsec_overrides[edge-b].key")
    add("derive-same-aes-two-salts", "key",
        lambda: lab(**{"edge-b": {"ipsec_overrides": {"edge-a": {"key": K12[:-8] + "00000001"}}}}),
        "host edge-b: ipsec_overrides[edge-a].key")
    add("derive-same-aes-two-salts-256", "key",
        lambda: lab(**{"edge-a": {"ipsec_key_bits": 256, "ipsec_overrides": {"edge-b": {"key": "0x" + "ab" * 32 + "00000001"}}},
                       "edge-b": {"ipsec_key_bits": 256, "ipsec_overrides": {"edge-a": {"key": "0x" + "ab" * 32 + "00000002"}}}}),
        "host edge-b: ipsec_overrides[edge-a].key")
    add("derive-tunnel-v6-zone-peer", "address",
        lambda: tunnel(**{"edge-a": {"ipsec_local_ip": "2001:db8::1", "ipsec_networks": ["2001:db8:1::/64"]},
                          "edge-b": {"ipsec_local_ip": "2001:db8::2%eth0", "ipsec_networks": ["2001:db8:2::/64"]}}),
        "host edge-b: ipsec_local_ip")
    add("derive-mode-newline", "text", lambda: lab(**{"edge-a": {"ipsec_mode": "transport\n"}}), "host edge-a: ipsec_mode")
    add("derive-offload-newline", "text", lambda: lab(**{"edge-a": {"ipsec_offload": "none\n"}}),
        "host edge-a: ipsec_offload")
    add("derive-offload-list", "text", lambda: lab(**{"edge-a": {"ipsec_offload": ["none"]}}), "host edge-a: ipsec_offload")
    add("derive-peer-newline", "text", lambda: lab(**{"edge-a": {"ipsec_peers": ["edge-b", "edge-c\nreboot"]}}),
        "host edge-a: ipsec_peers[1]")
    add("derive-huge-mesh-bad-middle", "list", big_mesh, "host n050: ipsec_selectors[0].dport")
    return c


def big_mesh():
    """100 hosts in one mesh group (4,950 pairs); one selector port in the middle is bad."""
    names = ["n%03d" % i for i in range(100)]
    hv = {h: {"ipsec_local_ip": "10.7.0.%d" % (i + 1), "ipsec_offload": "none",
              "ipsec_selectors": [{"proto": "udp", "dport": 4789}]} for i, h in enumerate(names)}
    hv["n050"]["ipsec_selectors"] = [{"proto": "udp", "dport": "\u0664\u0667\u0668\u0669"}]
    hv["_groups"] = names
    return hv


DERIVE_CASES = derive_cases()


def _keys_in(hv):
    out = []
    for h in hv.values():
        if isinstance(h, dict):
            for o in (h.get("ipsec_overrides") or {}).values():
                k = o.get("key") if isinstance(o, dict) else None
                if isinstance(k, str) and k.startswith("0x") and len(k) in (42, 74):
                    try:
                        int(k[2:], 16)
                        out.append(k)
                    except ValueError:
                        pass
    return out


@pytest.mark.parametrize("case,cls,make,field", [pytest.param(*c, id=c[0]) for c in DERIVE_CASES])
def test_derivation_refuses_hostile_input(case, cls, make, field):
    hv = make()
    groups = None
    if "_groups" in hv:
        groups = {"mesh": hv.pop("_groups")}
        for h in groups["mesh"]:
            hv[h]["ipsec_meshes"] = ["mesh"]
    before = copy.deepcopy(hv)
    msg, why = "", []
    try:
        ipsec_pairs(hv, groups=groups)
        why.append("did not fail")
    except AnsibleFilterError as exc:
        msg = str(exc)
    except Exception as exc:
        msg = "unhandled %s: %s" % (type(exc).__name__, exc)
        why.append("unhandled exception")
    if field not in msg:
        why.append("message does not name %s" % field)
    if not _rel.no_traceback(msg):
        why.append("traceback")
    if _rel.occurrences(msg, _keys_in(hv)):
        why.append("key material in the message")
    if any("\n" in p for p in msg.split("\n  - ")) and "problems in the IPsec inventory" not in msg:
        why.append("line break in the message")
    if hv != before:
        why.append("the inventory was changed")
    _rel.record("hardening", case=case, cls=cls, target="ipsec_pairs", ok=not why, field=field)
    assert not why, "%s: %s -- %s" % (case, "; ".join(why), msg[:400])


# ------------------------------------------------------------------------------ pinned allocations

def trio_with_store():
    hv = {h: {"ipsec_local_ip": "192.168.100.%d" % i, "ipsec_offload": "none",
              "ipsec_peers": [x for x in ("lab1", "lab2", "lab3") if x != h]}
          for i, h in enumerate(("lab1", "lab2", "lab3"), 1)}
    first = _pairs.derive(hv, keys="none")
    store = {}
    for i, p in enumerate(first["pairs"]):
        store[(p["src_host"], p["dst_host"])] = {"key": keyhex(40 + i, 36)[2:], "spi": p["spi"],
                                                 "reqid": p["reqid"], "generation": 1}
    return hv, first, store


PIN_CASES = [
    # (id, which pinned pair's value an override of another pair takes, the override's host/peer, field)
    ("pin-spi-taken-by-override", "spi", ("lab1", "lab2"), ("lab3", "lab2"), "host lab3: ipsec_overrides[lab2].spi"),
    ("pin-reqid-taken-by-override", "reqid", ("lab1", "lab2"), ("lab1", "lab3"),
     "host lab1: ipsec_overrides[lab3].reqid"),
    ("pin-reqid-taken-on-dst", "reqid", ("lab2", "lab3"), ("lab1", "lab3"), "host lab1: ipsec_overrides[lab3].reqid"),
]


@pytest.mark.parametrize("case,what,pinned,over,field", [pytest.param(*c, id=c[0]) for c in PIN_CASES])
def test_override_never_renumbers_a_pinned_pair(case, what, pinned, over, field):
    hv, first, store = trio_with_store()
    value = store[pinned][what]
    hv[over[0]]["ipsec_overrides"] = {over[1]: {what: "0x%x" % value}}
    msg, why = "", []
    try:
        _pairs.derive(hv, store=store, keys="optional")
        why.append("did not fail (the pinned pair would be renumbered)")
    except _pairs.DeriveError as exc:
        msg = str(exc)
    name = "%s->%s" % pinned
    if field not in msg:
        why.append("message does not name %s" % field)
    if name not in msg or "%s->%s" % over not in msg:
        why.append("message does not name both pairs")
    _rel.record("hardening", case=case, cls="pinned", target="ipsec_pairs", ok=not why, field=field)
    assert not why, "%s: %s -- %s" % (case, "; ".join(why), msg)


def test_override_equal_to_its_own_pin_is_fine():
    hv, first, store = trio_with_store()
    hv["lab1"]["ipsec_overrides"] = {"lab2": {"spi": store[("lab1", "lab2")]["spi"]}}
    out = _pairs.derive(hv, store=store, keys="optional")
    spis = {(p["src_host"], p["dst_host"]): p["spi"] for p in out["pairs"]}
    assert spis == {k: v["spi"] for k, v in store.items()}


# ------------------------------------------------------------------------------ the renderer

RENDER_CASES = [
    ("render-line-newline", lambda: ipsec_render("lab1", "script", states=["xfrm state add src 1.1.1.1\nreboot"]),
     "host lab1: states[0]"),
    ("render-line-cr", lambda: ipsec_render("lab1", "script", policies=["xfrm policy add\rreboot"]),
     "host lab1: policies[0]"),
    ("render-line-nul", lambda: ipsec_render("lab1", "script", states=["ok", "xfrm\x00"]), "host lab1: states[1]"),
    ("render-line-unicode", lambda: ipsec_render("lab1", "script", states=["xfrm state add src \u0661.1.1.1"]),
     "host lab1: states[0]"),
    ("render-line-not-str", lambda: ipsec_render("lab1", "script", states=[{"a": 1}]), "host lab1: states[0]"),
    ("render-lines-not-list", lambda: ipsec_render("lab1", "script", states="xfrm state flush"), "host lab1: states"),
    ("render-host-traversal", lambda: ipsec_render("../etc/x", "file"), "host '../etc/x'"),
    ("render-host-newline", lambda: ipsec_render("a\nreboot", "script"), "host 'a\\nreboot'"),
    ("render-host-space", lambda: ipsec_render("a b", "script"), "host 'a b'"),
    ("render-host-dot", lambda: ipsec_render(".hidden", "file"), "host '.hidden'"),
    ("render-namespace-dotdot", lambda: ipsec_render("lab1", "script", namespace=".."), "host lab1: ipsec_namespace"),
    ("render-namespace-injection", lambda: ipsec_render("lab1", "script", namespace="ns0; reboot"),
     "host lab1: ipsec_namespace"),
    ("render-pairs-newline", lambda: ipsec_render([{"name": "a->b\nreboot", "spi_hex": "0x1", "reqid_hex": "0x2",
                                                    "key_source": "keystore", "key_bits": 256, "spi_source": "hash",
                                                    "reqid_source": "hash", "mode": "transport"}], "pairs"),
     "pairs[0].name"),
    ("render-what-unknown", lambda: ipsec_render("lab1", "shell"), "what"),
]


@pytest.mark.parametrize("case,call,field", [pytest.param(*c, id=c[0]) for c in RENDER_CASES])
def test_renderer_refuses(case, call, field):
    msg, why = "", []
    try:
        call()
        why.append("did not fail")
    except AnsibleFilterError as exc:
        msg = str(exc)
    except Exception as exc:
        msg = "unhandled %s" % type(exc).__name__
        why.append(msg)
    if field not in msg:
        why.append("message does not name %s" % field)
    if "\n" in msg:
        why.append("line break in the message")
    _rel.record("hardening", case=case, cls="render", target="ipsec_render", ok=not why, field=field)
    assert not why, "%s: %s -- %r" % (case, "; ".join(why), msg)


def test_render_quotes_what_it_accepts(tmp_path):
    """Accepted lines that look like shell or a here-document end stay one printf argument each."""
    nasty = ["XFRM", "EOF", "'; reboot; '", "$(reboot)", "`reboot`", "a\\", "# not a comment", "x' \"y\" 'z"]
    text = ipsec_render("lab1", "script", namespace="ns0", states=nasty, policies=["xfrm policy add src 1.1.1.1/32"])
    f = tmp_path / "s.sh"
    f.write_text(text)
    assert subprocess.run(["bash", "-n", str(f)], check=False).returncode == 0
    # run it with `ip` replaced by cat: exactly the lines given come out, nothing runs
    out = subprocess.run(["bash", "-c", "ip() { shift 2; cat; }; . %s" % f], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == nasty + ["xfrm policy add src 1.1.1.1/32"]


# ------------------------------------------------------------------------------ render.yml for real

ROOT = _rel.ROOT


def _playbook(tmp_path, inv_doc):
    import ansible_collections.ipsec_offload.mlx5 as collection
    collections = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(inv_doc))
    env = dict(os.environ, HOME=str(tmp_path / "home"), ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inv),
           os.path.join(ROOT, "playbooks", "render.yml"), "-e", "ipsec_render_dir=%s" % (tmp_path / "out"),
           "-e", "ipsec_keystore_path=%s" % (tmp_path / "ks" / "keys.yml")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path), check=False)
    return p.returncode, p.stdout + p.stderr


PLAYBOOK_CASES = [
    # the shell injection: a zone id that closed the heredoc and ran a command of its own
    ("render.yml-zone-heredoc", {"ipsec_local_ip": "fe80::1%x\nXFRM\ntouch /tmp/pwned-ipsec\ncat <<'XFRM'"},
     "host a: ipsec_local_ip"),
    ("render.yml-selector-proto-unicode", {"ipsec_selectors": [{"proto": "\u0661\u0667"}]},
     "host a: ipsec_selectors[0].proto"),
]


@pytest.mark.parametrize("case,bad,field", [pytest.param(*c, id=c[0]) for c in PLAYBOOK_CASES])
def test_render_playbook_refuses_before_writing(tmp_path, case, bad, field):
    a = {"ipsec_local_ip": "fe80::1" if "zone" in case else "10.0.0.1", "ipsec_peers": ["b"], "ipsec_offload": "none"}
    a.update(bad)
    b = {"ipsec_local_ip": "fe80::2" if "zone" in case else "10.0.0.2", "ipsec_peers": ["a"], "ipsec_offload": "none"}
    if "selectors" in bad:
        b["ipsec_selectors"] = [{"proto": "udp"}]
    rc, out = _playbook(tmp_path, {"all": {"hosts": {"a": a, "b": b}}})
    why = []
    if rc == 0:
        why.append("did not fail")
    if field not in out:
        why.append("output does not name %s" % field)
    if (tmp_path / "ks").exists() or (tmp_path / "out").exists():
        why.append("the key store or a rendered file was written")
    if os.path.exists("/tmp/pwned-ipsec"):
        why.append("the injected command ran")
    if not _rel.no_traceback(out):
        why.append("traceback")
    _rel.record("hardening", case=case, cls="render", target="render.yml", ok=not why, field=field)
    assert not why, "%s: %s -- %s" % (case, "; ".join(why), out[-2000:])


def test_corpus_size():
    n = len(MODULE_CASES) + len(DERIVE_CASES) + len(PIN_CASES) + len(RENDER_CASES) + len(PLAYBOOK_CASES)
    assert n >= 150, n
    ids = [c[0] for c in MODULE_CASES + DERIVE_CASES + PIN_CASES + RENDER_CASES + PLAYBOOK_CASES]
    assert len(ids) == len(set(ids))
