# -*- coding: utf-8 -*-
"""Reliability 1: the bad-input corpus, across every module, the key store action and the pair
derivation.

For each case: the module fails (failed=True), its message names the field (``config[0].spi``;
for the derivation: ``host X: variable``), no Python traceback appears anywhere in the result, and
the scripted host saw NO state-changing command (``_rel.read_only`` defines, per tool, what counts as
read-only; sysfs writes are recorded by FakeSysfs and must be none).  Every host also answers
commands nobody scripted (rc 1) instead of raising, so a module that wrongly goes on is caught by
the write check rather than by a test crash.

The same cases for the netns-capable modules run against the REAL kernel in
test_rel_bad_input_netns.py.
"""

from __future__ import annotations

import copy

import pytest
from unittest import mock

from ansible.errors import AnsibleActionFail, AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.ipsec_offload.mlx5.plugins.action.ipsec_keystore import ActionModule as KeystoreAction
from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _sysfs, _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.modules import (
    ipsec_offload_info, mlx_devlink_eswitch, mlx_sriov, ovs_vxlan_bridge, tc_flower_vlan, xfrm_offload_policy,
    xfrm_offload_state)

import _rel
from fake_sysfs import FakeSysfs
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

T_TC = _rel.load_test_module("plugins/modules/test_tc_flower_vlan.py", "_rel_fake_tc")
T_DL = _rel.load_test_module("plugins/modules/test_mlx_devlink_eswitch.py", "_rel_fake_devlink")
T_OVS = _rel.load_test_module("plugins/modules/test_ovs_vxlan_bridge.py", "_rel_fake_ovs")

HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")
HELP_61 = fixture("xfrm/iproute2-6.1-state-help-real.txt")
LAB_STATES = fixture("xfrm/lab-xfrm-state.txt")      # foreign SAs, reqid 1 and 2 (strongSwan style)
LAB_POLICIES = fixture("xfrm/lab-xfrm-policy.txt")
MLX5_STATE_ON_P0 = "".join(fixture("devlink/xfrm_state_mlx5_packet.txt").splitlines(True)[1:]).replace(
    "dev eth2", "dev p0")   # real mlx5 packet-offload SA (strongSwan), moved onto our PF netdev
KEY_A = "0x" + "3c" * 20
KEY_B = "0x" + "4d" * 36
PF = "0000:08:00.0"
DEV = "pci/" + PF

INJECT = {
    "semicolon": "p0; reboot",
    "subshell": "$(reboot)",
    "backtick": "`reboot`",
    "space": "p 0",
    "newline": "p0\nxfrm state flush",
    "quote": 'p0"',
    "hash": "p0#x",
    "long": "p" * 300,
    "unicode": "p\u00e40",
    "empty": "",
}


def catch_all(host):
    """Answer any command nobody scripted with rc 1 (recorded), so the write check sees it."""
    host.handlers.append(((), (1, "", "reliability fake: command not scripted\n")))
    return host


# ------------------------------------------------------------------------------ module hosts

def xfrm_host(help_text=HELP_615, ns_missing=False):
    sim = XfrmSim(LAB_STATES, LAB_POLICIES)
    h = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", help_text))])
    if ns_missing:
        h.on(("ip", "-n"), (1, "", "Cannot open network namespace \"nope\": No such file or directory\n"))
    h.handlers.append((("ip",), sim))
    return catch_all(h), []


def xfrm_owned_host():
    """A host that already holds sa() (owned), installed through the module."""
    sim = XfrmSim(LAB_STATES, LAB_POLICIES)
    h = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip",), sim)])
    res, failed = run_module(xfrm_offload_state.main, dict(config=[sa()]), h)
    assert not failed, res
    h = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip",), sim)])
    return catch_all(h), []


def tc_host():
    fake = T_TC.FakeTc(links=("pf0", "pf0vf0_rep", "lo"))
    return catch_all(fake.host()), []


def devlink_host(tree, **kw):
    h = T_DL.host_for(T_DL.FakeDevlink(**kw.pop("dl", {})), **kw)
    return catch_all(h), tree.writes


def tc_ipsec_first_host():
    fake = T_TC.FakeTc(links=("pf0", "pf0vf0_rep", "lo"), hw_devs=("pf0", "pf0vf0_rep"), xfrm="")
    return catch_all(fake.host()), []


def sriov_host(tree, mode="legacy"):
    h = FakeHost([(("devlink", "-j", "dev", "eswitch", "show"), (0, '{"dev":{"%s":{"mode":"%s"}}}' % (DEV, mode), ""))])
    return catch_all(h), tree.writes


def ovs_host():
    return catch_all(T_OVS.host_with(T_OVS.EXISTING)), []


def info_host():
    return catch_all(FakeHost()), []


# ------------------------------------------------------------------------------ base objects

def sa(**kw):
    d = dict(src="192.0.2.1", dst="192.0.2.2", spi="0x1000", reqid="0x51c00001", direction="out",
             aead=dict(key=KEY_A), offload=dict(type="packet", dev="p0"))
    d.update(kw)
    return d


def sa_in(**kw):
    d = dict(src="192.0.2.2", dst="192.0.2.1", spi="0x1001", reqid="0x51c00002", direction="in",
             aead=dict(key=KEY_B), replay_window=64, offload=dict(type="packet", dev="p0"))
    d.update(kw)
    return d


def sp(**kw):
    d = dict(src="192.0.2.1/32", dst="192.0.2.2/32", dir="out", offload=dict(type="none"),
             tmpl=dict(src="192.0.2.1", dst="192.0.2.2", reqid="0x51c00001"))
    d.update(kw)
    return d


RULE = {"dev": "pf0", "prio": 10, "protocol": "802.1q", "match": {"vlan_id": 10},
        "actions": [{"vlan": "pop"}, {"mirred": "redirect", "dev": "pf0vf0_rep"}]}


def rule(**kw):
    d = copy.deepcopy(RULE)
    for k, v in kw.items():
        if k == "match":
            d["match"].update(v)
        else:
            d[k] = v
    return d


def rule_action(i, **kw):
    d = copy.deepcopy(RULE)
    d["actions"][i].update(kw)
    return d


VX = {"name": "vxlan1", "local_ip": "192.168.100.1", "remote_ip": "192.168.100.2", "key": 100}


def vx(**kw):
    return dict(VX, **kw)


# ------------------------------------------------------------------------------ the corpus
# (id, module, args, field named in the message, host factory name)

S, P = "xfrm_offload_state", "xfrm_offload_policy"
CASES = [
    # --- xfrm_offload_state: numbers, lengths, types, families
    ("state-spi-0", S, dict(config=[sa(spi=0)]), "config[0].spi", "xfrm"),
    ("state-spi-reserved", S, dict(config=[sa(spi=255)]), "config[0].spi", "xfrm"),
    ("state-spi-2^32", S, dict(config=[sa(spi=2 ** 32)]), "config[0].spi", "xfrm"),
    ("state-spi-not-hex", S, dict(config=[sa(spi="0x1g")]), "config[0].spi", "xfrm"),
    ("state-spi-list", S, dict(config=[sa(spi=[4096])]), "config[0].spi", "xfrm"),
    ("state-key-19-bytes", S, dict(config=[sa(aead=dict(key="0x" + "11" * 19))]), "config[0].aead.key", "xfrm"),
    ("state-key-not-hex", S, dict(config=[sa(aead=dict(key="0x" + "zz" * 20))]), "config[0].aead.key", "xfrm"),
    ("state-key-odd", S, dict(config=[sa(aead=dict(key="0x" + "1" * 41))]), "config[0].aead.key", "xfrm"),
    ("state-key-injection", S, dict(config=[sa(aead=dict(key=KEY_A + " 128 offload dev x; reboot"))]),
     "config[0].aead.key", "xfrm"),
    ("state-key-all-zero", S, dict(config=[sa(aead=dict(key="0x" + "00" * 20))]), "config[0].aead.key", "xfrm"),
    ("state-family-mix", S, dict(config=[sa(src="2001:db8::1")]), "config[0]", "xfrm"),
    ("state-dst-injection", S, dict(config=[sa(dst="192.0.2.2; reboot")]), "config[0].dst", "xfrm"),
    ("state-src-newline", S, dict(config=[sa(src="192.0.2.1\nxfrm state flush")]), "config[0].src", "xfrm"),
    ("state-reqid-foreign-1", S, dict(config=[sa(reqid=1)]), "config[0].reqid", "xfrm"),
    ("state-reqid-negative", S, dict(config=[sa(reqid=-5)]), "config[0].reqid", "xfrm"),
    ("state-window-100-packet-in", S, dict(config=[sa_in(replay_window=100)]), "config[0].replay_window", "xfrm"),
    ("state-window-5000", S, dict(config=[sa_in(replay_window=5000, offload=dict(type="none"))]),
     "config[0].replay_window", "xfrm"),
    ("state-window-on-out", S, dict(config=[sa(replay_window=64)]), "config[0].replay_window", "xfrm"),
    ("state-icv-64-offload", S, dict(config=[sa(aead=dict(key=KEY_A, icv=64))]), "config[0].aead.icv", "xfrm"),
    ("state-missing-direction", S, dict(config=[{k: v for k, v in sa().items() if k != "direction"}]),
     "config[0].direction", "xfrm"),
    ("state-dev-semicolon", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["semicolon"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-subshell", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["subshell"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-backtick", S, dict(config=[sa(offload=dict(type="crypto", dev=INJECT["backtick"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-space", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["space"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-newline", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["newline"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-quote", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["quote"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-hash", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["hash"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-long", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["long"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-unicode", S, dict(config=[sa(offload=dict(type="packet", dev=INJECT["unicode"]))]),
     "config[0].offload.dev", "xfrm"),
    ("state-dev-unknown", S, dict(config=[sa(offload=dict(type="packet", dev="eth9"))]),
     "config[0].offload.dev", "xfrm"),
    ("state-packet-on-iproute2-6.1", S, dict(config=[sa()]), "config[0].offload.type", "xfrm61"),
    ("state-shared-key", S, dict(config=[sa(), sa_in(aead=dict(key=KEY_A))]), "config[1].aead.key", "xfrm"),
    ("state-key-of-foreign-sa", S, dict(config=[sa(aead=dict(key="0x" + "11" * 20))]), "config[0].aead.key", "xfrm"),
    ("state-duplicate-spi", S, dict(config=[sa(), sa(reqid="0x51c00009", aead=dict(key=KEY_B))]), "config[1]",
     "xfrm"),
    ("state-collides-foreign-sa", S, dict(config=[sa(src="192.168.100.1", dst="192.168.100.2")]), "config[0]",
     "xfrm"),
    ("state-sel-injection", S, dict(config=[sa(sel=dict(src="10.0.0.0/24 proto 6"))]), "config[0].sel.src", "xfrm"),
    ("state-sel-port-no-proto", S, dict(config=[sa(sel=dict(dport=4789))]), "config[0].sel", "xfrm"),
    ("state-sel-family-mix", S, dict(config=[sa(sel=dict(src="10.0.0.0/24", dst="2001:db8::/64"))]),
     "config[0].sel", "xfrm"),
    ("state-namespace-injection", S, dict(config=[sa()], namespace="ns0; reboot"), "namespace", "xfrm"),
    ("state-namespace-missing", S, dict(config=[sa(offload=dict(type="none"))], namespace="nope"), "namespace",
     "xfrm_nons"),
    ("state-reveal-keys-merged", S, dict(config=[sa()], reveal_keys=True), "reveal_keys", "xfrm"),
    ("state-owned-range-garbage", S, dict(config=[sa()], owned_reqid_range=["x", "y"]), "owned_reqid_range", "xfrm"),
    ("state-overridden-empty", S, dict(state="overridden"), "config", "xfrm"),
    # --- unsafe transitions the modules check
    ("state-replace-with-old-key", S, dict(config=[sa(mode="tunnel")], state="replaced"), "config[0]",
     "xfrm_owned"),
    # --- xfrm_offload_policy
    ("policy-prefix-33", P, dict(config=[sp(src="192.0.2.1/33")]), "config[0].src", "xfrm"),
    ("policy-dir-injection", P, dict(config=[sp(dir="out; reboot")]), "config[0].dir", "xfrm"),  # the sub-options (_argspec)
    ("policy-reqid-foreign", P, dict(config=[sp(tmpl=dict(src="192.0.2.1", dst="192.0.2.2", reqid=1))]),
     "config[0].tmpl.reqid", "xfrm"),
    ("policy-proto-injection", P, dict(config=[sp(proto="udp; reboot")]), "config[0].proto", "xfrm"),
    ("policy-dport-70000", P, dict(config=[sp(proto="udp", dport=70000)]), "config[0].dport", "xfrm"),
    ("policy-port-no-proto", P, dict(config=[sp(dport=4789)]), "config[0]", "xfrm"),
    ("policy-family-mix", P, dict(config=[sp(dst="2001:db8::2/128")]), "config[0]", "xfrm"),
    ("policy-tmpl-family-mix", P,
     dict(config=[sp(tmpl=dict(src="2001:db8::1", dst="2001:db8::2", reqid="0x51c00001"))]), "config[0].tmpl", "xfrm"),
    ("policy-priority-negative", P, dict(config=[sp(priority=-1)]), "config[0].priority", "xfrm"),
    ("policy-dev-injection", P, dict(config=[sp(offload=dict(type="packet", dev="p0$(reboot)"))]),
     "config[0].offload.dev", "xfrm"),
    ("policy-namespace-newline", P, dict(config=[sp()], namespace="ns0\nreboot"), "namespace", "xfrm"),
    ("policy-duplicate", P, dict(config=[sp(), sp()]), "config[1]", "xfrm"),
    # --- tc_flower_vlan
    ("tc-dev-semicolon", "tc_flower_vlan", dict(config=[rule(dev="pf0; reboot")]), "config[0].dev", "tc"),
    ("tc-dev-unicode", "tc_flower_vlan", dict(config=[rule(dev="pf\u00f60")]), "config[0].dev", "tc"),
    ("tc-dev-unknown", "tc_flower_vlan", dict(config=[rule(dev="eth9")]), "config[0].dev", "tc"),
    ("tc-prio-0", "tc_flower_vlan", dict(config=[rule(prio=0)]), "config[0].prio", "tc"),
    ("tc-prio-70000", "tc_flower_vlan", dict(config=[rule(prio=70000)]), "config[0].prio", "tc"),
    ("tc-chain-negative", "tc_flower_vlan", dict(config=[rule(chain=-1)]), "config[0].chain", "tc"),
    ("tc-vlan-4096", "tc_flower_vlan", dict(config=[rule(match={"vlan_id": 4096})]), "config[0].match.vlan_id", "tc"),
    ("tc-mac-short", "tc_flower_vlan", dict(config=[rule(match={"dst_mac": "aa:bb"})]), "config[0].match.dst_mac",
     "tc"),
    ("tc-ip-injection", "tc_flower_vlan",
     dict(config=[rule(protocol="ip", match={"vlan_id": None, "dst_ip": "10.0.0.1 action drop"})]),
     "config[0].match.dst_ip", "tc"),
    ("tc-mirred-subshell", "tc_flower_vlan", dict(config=[rule_action(1, dev="$(reboot)")]),
     "config[0].actions[1].dev", "tc"),
    ("tc-push-without-id", "tc_flower_vlan", dict(config=[rule(actions=[{"vlan": "push"}])]),
     "config[0].actions[0]", "tc"),
    ("tc-protocol-injection", "tc_flower_vlan", dict(config=[rule(protocol="ip; reboot")]), "config[0].protocol",
     "tc"),
    ("tc-devices-space", "tc_flower_vlan", dict(config=[], state="deleted", devices=["pf0 x"]), "devices[0]", "tc"),
    ("tc-offload-before-ipsec", "tc_flower_vlan", dict(config=[rule()]), "require_ipsec_before_offload",
     "tc_ipsec_first"),  # a host precondition: names the option and the device, not config[0]
    ("tc-namespace-quote", "tc_flower_vlan", dict(config=[rule()], namespace="ns'0"), "namespace", "tc"),
    # --- mlx_devlink_eswitch
    ("devlink-device-semicolon", "mlx_devlink_eswitch", dict(device=DEV + "; reboot"), "device", "devlink"),
    ("devlink-device-subshell", "mlx_devlink_eswitch", dict(device="pci/$(reboot)"), "device", "devlink"),
    ("devlink-device-unicode-long", "mlx_devlink_eswitch", dict(device="pci/" + "\u00e9" * 200), "device", "devlink"),
    ("devlink-vf-negative", "mlx_devlink_eswitch", dict(device=DEV, port_functions=[{"vf": -1, "ipsec_packet": True}]),
     "port_functions[0].vf", "devlink"),
    ("devlink-port-injection", "mlx_devlink_eswitch",
     dict(device=DEV, port_functions=[{"port": DEV + "/1\nset", "ipsec_packet": True}]), "port_functions[0].port",
     "devlink"),
    ("devlink-vf-missing", "mlx_devlink_eswitch", dict(device=DEV, mode="switchdev",
                                                       port_functions=[{"vf": 7, "ipsec_packet": True}]),
     "port_functions[0]", "devlink"),
    ("devlink-mode-bad", "mlx_devlink_eswitch", dict(device=DEV, mode="switchdev; reboot"), "value of mode",
     "devlink"),
    ("devlink-steering-in-switchdev", "mlx_devlink_eswitch", dict(device=DEV, flow_steering_mode="dmfs"),
     "flow_steering_mode", "devlink_switchdev"),
    ("devlink-mode-with-offloaded-ipsec", "mlx_devlink_eswitch", dict(device=DEV, mode="switchdev"), "mode",
     "devlink_ipsec"),
    ("devlink-mode-with-hw-tc-rules", "mlx_devlink_eswitch", dict(device=DEV, mode="legacy"), "mode", "devlink_tc"),
    # --- mlx_sriov
    ("sriov-pf-semicolon", "mlx_sriov", dict(pf="p0; reboot", num_vfs=1), "pf", "sriov"),
    ("sriov-num-vfs-negative", "mlx_sriov", dict(pf="p0", num_vfs=-1), "num_vfs", "sriov"),
    ("sriov-num-vfs-over-total", "mlx_sriov", dict(pf="p0", num_vfs=5), "num_vfs", "sriov"),
    ("sriov-driver-traversal", "mlx_sriov", dict(pf="p0", vf_driver="../../x"), "vf_driver", "sriov"),
    ("sriov-pf-unknown", "mlx_sriov", dict(pf="nope0", num_vfs=1), "pf", "sriov"),
    ("sriov-device-newline", "mlx_sriov", dict(device=PF + "\n", num_vfs=1), "device", "sriov"),
    ("sriov-vf-index-missing", "mlx_sriov", dict(pf="p0", num_vfs=2, vfs=[{"index": 3, "bound": True}]),
     "vfs[0].index", "sriov"),
    ("sriov-count-in-switchdev", "mlx_sriov", dict(pf="p0", num_vfs=0), "num_vfs", "sriov_switchdev"),
    # --- ovs_vxlan_bridge
    ("ovs-bridge-semicolon", "ovs_vxlan_bridge", dict(bridge="br0; reboot"), "bridge", "ovs"),
    ("ovs-bridge-long", "ovs_vxlan_bridge", dict(bridge="b" * 16), "bridge", "ovs"),
    ("ovs-port-space", "ovs_vxlan_bridge", dict(bridge="br-ovs", ports=["rep 0"]), "ports[0]", "ovs"),
    ("ovs-remote-injection", "ovs_vxlan_bridge", dict(bridge="br-ovs", vxlan=[vx(remote_ip="1.2.3.4 -- del-br x")]),
     "vxlan[0].remote_ip", "ovs"),
    ("ovs-vni-2^24", "ovs_vxlan_bridge", dict(bridge="br-ovs", vxlan=[vx(key=2 ** 24)]), "vxlan[0].key", "ovs"),
    ("ovs-dst-port-0", "ovs_vxlan_bridge", dict(bridge="br-ovs", vxlan=[vx(dst_port=0)]), "vxlan[0].dst_port", "ovs"),
    ("ovs-option-injection", "ovs_vxlan_bridge",
     dict(bridge="br-ovs", vxlan=[vx(options={"df_default": "true -- del-br br-other"})]), "vxlan[0].options", "ovs"),
    ("ovs-option-hash", "ovs_vxlan_bridge", dict(bridge="br-ovs", vxlan=[vx(options={"tos#": "inherit"})]),
     "vxlan[0].options", "ovs"),
    ("ovs-family-mix", "ovs_vxlan_bridge", dict(bridge="br-ovs", vxlan=[vx(local_ip="2001:db8::1")]), "vxlan[0]",
     "ovs"),
    ("ovs-bridge-is-port", "ovs_vxlan_bridge", dict(bridge="br-ovs", ports=["br-ovs"]), "bridge", "ovs"),
    ("ovs-foreign-port", "ovs_vxlan_bridge", dict(bridge="br-ovs", ports=["vx9"]), "ports[0]", "ovs"),
    # --- ipsec_offload_info (read-only module: still must refuse before running anything)
    ("info-device-semicolon", "ipsec_offload_info", dict(devices=["eth0; reboot"]), "devices[0]", "info"),
    ("info-devlink-subshell", "ipsec_offload_info", dict(devlink=["pci/$(reboot)"]), "devlink[0]", "info"),
    ("info-namespace-space", "ipsec_offload_info", dict(namespace="a b"), "namespace", "info"),
]

MODULES = {
    "xfrm_offload_state": xfrm_offload_state, "xfrm_offload_policy": xfrm_offload_policy,
    "tc_flower_vlan": tc_flower_vlan, "mlx_devlink_eswitch": mlx_devlink_eswitch, "mlx_sriov": mlx_sriov,
    "ovs_vxlan_bridge": ovs_vxlan_bridge, "ipsec_offload_info": ipsec_offload_info,
}

# Known module defects: case id -> reason (xfail strict: the test starts failing once fixed).
DEFECTS = {
}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    t = FakeSysfs(tmp_path / "sys")
    t.install(monkeypatch, _sysfs)
    devdir = t.add_pci_pf(PF, netdevs=("p0", "pf0vf0", "pf0vf1"), total_vfs=4)
    t.set_vfs(devdir, 2)
    t.writes.clear()
    return t


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


def make_host(kind, tree):
    return {
        "xfrm": xfrm_host,
        "xfrm61": lambda: xfrm_host(HELP_61),
        "xfrm_nons": lambda: xfrm_host(ns_missing=True),
        "tc": tc_host,
        "xfrm_owned": xfrm_owned_host,
        "devlink": lambda: devlink_host(tree),
        "devlink_switchdev": lambda: devlink_host(tree, dl=dict(mode="switchdev", fsm="smfs")),
        "devlink_ipsec": lambda: devlink_host(tree, xfrm_state=MLX5_STATE_ON_P0),
        "devlink_tc": lambda: devlink_host(tree, dl=dict(mode="switchdev", fsm="dmfs"),
                                           tc={"pf0vf0": T_DL.fx("tc_netdevsim_in_hw.json.txt")}),
        "sriov": lambda: sriov_host(tree),
        "sriov_switchdev": lambda: sriov_host(tree, "switchdev"),
        "tc_ipsec_first": tc_ipsec_first_host,
        "ovs": ovs_host,
        "info": info_host,
    }[kind]()


def check_failure(res, failed, field):
    """(ok, reasons) for one module result."""
    why = []
    msg = str(res.get("msg", ""))
    if not failed:
        why.append("did not fail")
    if field not in msg:
        why.append("message does not name %s" % field)
    if not _rel.no_traceback(msg, str(res.get("exception", "")), _rel.texts_of(res)):
        why.append("traceback in the result")
    return why


def params(cases):
    out = []
    for c in cases:
        marks = [pytest.mark.xfail(strict=True, reason=DEFECTS[c[0]])] if c[0] in DEFECTS else []
        out.append(pytest.param(*c, id=c[0], marks=marks))
    return out


@pytest.mark.parametrize("case,module,args,field,hostkind", params(CASES))
def test_module_refuses_bad_input(tree, case, module, args, field, hostkind):
    host, sysfs_writes = make_host(hostkind, tree)
    res, failed = run_module(MODULES[module].main, copy.deepcopy(args), host)
    changing = _rel.writes(host.commands()) + [("sysfs",) + tuple(w) for w in sysfs_writes]
    why = check_failure(res, failed, field)
    if changing:
        why.append("state-changing commands: %r" % changing[:3])
    _rel.record("bad_input", case=case, target=module, ok=not why, field=field,
                reads=len(host.commands()), writes=len(changing))
    assert not why, "%s: %s -- result %r" % (case, "; ".join(why), res)


# ------------------------------------------------------------------------------ the key store action

def _store_pairs():
    hv = {"a": {"ipsec_local_ip": "10.9.0.1", "ipsec_offload": "none", "ipsec_peers": ["b"]},
          "b": {"ipsec_local_ip": "10.9.0.2", "ipsec_offload": "none", "ipsec_peers": ["a"]}}
    return _pairs.derive(hv, keys="none")


KEYSTORE_CASES = [
    ("keystore-pairs-with-keys", lambda p: {"pairs": {"hosts": {}, "pairs": []}}, "pairs"),
    ("keystore-pairs-a-string", lambda p: {"pairs": "a->b"}, "pairs"),
    ("keystore-range-garbage", lambda p: {"pairs": p, "reqid_range": ["x", 5]}, "reqid_range"),
    ("keystore-range-reversed", lambda p: {"pairs": p, "reqid_range": [0x51c0ffff, 0x51c00000]}, "reqid_range"),
    ("keystore-unknown-option", lambda p: {"pairs": p, "mode": "0644"}, "mode"),
    ("keystore-pair-entry-garbage", lambda p: {"pairs": [{"name": "x; reboot"}]}, "pairs[0]"),
]


@pytest.mark.parametrize("case,make,field", [pytest.param(*c, id=c[0]) for c in KEYSTORE_CASES])
def test_keystore_action_refuses_bad_input(tmp_path, case, make, field):
    path = tmp_path / "ks" / "keys.yml"
    task = Task()
    task.action = "ipsec_offload.mlx5.ipsec_keystore"
    task.args = dict({"path": str(path)}, **make(_store_pairs()))
    task.check_mode = False
    task.diff = False
    msg, why = "", []
    try:
        KeystoreAction(task, mock.MagicMock(), PlayContext(), DataLoader(), None, None).run(task_vars={})
        why.append("did not fail")
    except AnsibleActionFail as exc:
        msg = str(exc)
    if field not in msg:
        why.append("message does not name %s" % field)
    if not _rel.no_traceback(msg):
        why.append("traceback")
    # The key store FILE must not be written.  (The action takes its lock - creating the 0700
    # directory and a lock file - before it reads `pairs`; reported to the owner, not a key leak.)
    wrote = path.exists()
    if wrote:
        why.append("the key store was written")
    _rel.record("bad_input", case=case, target="ipsec_keystore", ok=not why, field=field, reads=0, writes=int(wrote))
    assert not why, "%s: %s -- %s" % (case, "; ".join(why), msg)


# ------------------------------------------------------------------------------ the pair derivation

K12, K21 = "0x" + "12" * 20, "0x" + "21" * 20


def lab(**extra):
    hv = {
        "lab1": {"ipsec_local_ip": "192.168.100.1", "ipsec_peers": ["lab2"], "ipsec_offload": "none",
                 "ipsec_key_bits": 128, "ipsec_overrides": {"lab2": {"key": K12}}},
        "lab2": {"ipsec_local_ip": "192.168.100.2", "ipsec_peers": ["lab1"], "ipsec_offload": "none",
                 "ipsec_key_bits": 128, "ipsec_overrides": {"lab1": {"key": K21}}},
    }
    for host, vs in extra.items():
        hv.setdefault(host, {}).update(vs)
    return hv


def trio(**extra):
    hv = {h: {"ipsec_local_ip": "192.168.100.%d" % i, "ipsec_offload": "none", "ipsec_peers":
              [x for x in ("lab1", "lab2", "lab3") if x != h]} for i, h in enumerate(("lab1", "lab2", "lab3"), 1)}
    for host, vs in extra.items():
        hv[host].update(vs)
    return hv


DERIVE_CASES = [
    ("derive-peer-unknown", lambda: lab(lab1={"ipsec_peers": ["lab2", "lab9"]}), "host lab1: ipsec_peers[1]"),
    ("derive-one-sided-peer", lambda: lab(lab2={"ipsec_peers": []}), "host lab"),
    ("derive-no-local-ip", lambda: lab(lab2={"ipsec_local_ip": None}), "host lab2: ipsec_local_ip"),
    ("derive-local-ip-injection", lambda: lab(lab1={"ipsec_local_ip": "192.168.100.1; reboot"}),
     "host lab1: ipsec_local_ip"),
    ("derive-family-mix", lambda: lab(lab2={"ipsec_local_ip": "2001:db8::2"}), "host lab1: ipsec_local_ip"),
    ("derive-duplicate-address", lambda: lab(lab2={"ipsec_local_ip": "192.168.100.1"}), "ipsec_local_ip"),
    ("derive-shared-key", lambda: lab(lab2={"ipsec_overrides": {"lab1": {"key": K12}}}), "ipsec_overrides"),
    ("derive-key-length", lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": "0x" + "12" * 36}}}),
     "host lab1: ipsec_overrides[lab2].key"),
    ("derive-key-int", lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": int(K12, 16)}}}),
     "host lab1: ipsec_overrides[lab2].key"),
    ("derive-spi-collision", lambda: trio(lab1={"ipsec_overrides": {"lab2": {"spi": "0x1000"}}},
                                          lab3={"ipsec_overrides": {"lab2": {"spi": 4096}}}),
     "host lab3: ipsec_overrides[lab2].spi"),
    ("derive-reqid-collision", lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "reqid": 0x51C00005}}},
                                           lab2={"ipsec_overrides": {"lab1": {"key": K21, "reqid": "0x51c00005"}}}),
     "host lab2: ipsec_overrides[lab1].reqid"),
    ("derive-reqid-outside-range", lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "reqid": 1}}}),
     "host lab1: ipsec_overrides[lab2].reqid"),
    ("derive-spi-reserved", lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "spi": 1}}}),
     "host lab1: ipsec_overrides[lab2].spi"),
    ("derive-dev-injection", lambda: lab(lab1={"ipsec_dev": "eth0; reboot", "ipsec_offload": "packet"}),
     "host lab1: ipsec_dev"),
    ("derive-dev-unicode", lambda: lab(lab1={"ipsec_dev": "\u0435th0", "ipsec_offload": "packet"}),
     "host lab1: ipsec_dev"),
    ("derive-namespace-newline", lambda: lab(lab1={"ipsec_namespace": "ns0\nreboot"}), "host lab1: ipsec_namespace"),
    ("derive-selector-injection", lambda: lab(lab1={"ipsec_selectors": [{"proto": "udp; reboot"}]}),
     "host lab1: ipsec_selectors[0].proto"),
    ("derive-offload-missing-dev", lambda: lab(lab2={"ipsec_offload": "packet"}), "host lab2: ipsec_dev"),
    ("derive-key-bits-192", lambda: lab(lab1={"ipsec_key_bits": 192}), "host lab1: ipsec_key_bits"),
    ("derive-priority-huge", lambda: lab(lab1={"ipsec_policy_priority": 2 ** 40}), "host lab1: ipsec_policy_priority"),
]


@pytest.mark.parametrize("case,make,field", [pytest.param(*c, id=c[0]) for c in DERIVE_CASES])
def test_derivation_refuses_bad_input(case, make, field):
    hv = make()
    msg, why = "", []
    try:
        ipsec_pairs(hv)
        why.append("did not fail")
    except AnsibleFilterError as exc:
        msg = str(exc)
    if field not in msg:
        why.append("message does not name %s" % field)
    if not _rel.no_traceback(msg):
        why.append("traceback")
    keys = [o["key"] for h in hv.values() for o in (h.get("ipsec_overrides") or {}).values()
            if isinstance(o.get("key"), str)]
    leaked = _rel.occurrences(msg, keys)
    if leaked:
        why.append("key material in the message")
    _rel.record("bad_input", case=case, target="ipsec_pairs", ok=not why, field=field, reads=0, writes=0)
    assert not why, "%s: %s -- %s" % (case, "; ".join(why), msg)


# ------------------------------------------------------------------------------ the classifier itself

@pytest.mark.parametrize("argv,expected", [
    (["ip", "xfrm", "state", "list"], True),
    (["ip", "-n", "ns0", "xfrm", "state", "list", "nokeys"], True),
    (["ip", "xfrm", "policy", "list"], True),
    (["ip", "xfrm", "state", "help"], True),
    (["ip", "-o", "link", "show"], True),
    (["ip", "-d", "-j", "link", "show", "dev", "p0"], True),
    (["ip", "netns", "exec", "ns0", "devlink", "-j", "port", "show"], True),
    (["ip", "-batch", "-"], False),
    (["ip", "-n", "ns0", "-batch", "-"], False),
    (["ip", "xfrm", "state", "flush"], False),
    (["ip", "xfrm", "state", "add", "src", "1.1.1.1"], False),
    (["ip", "link", "set", "p0", "up"], False),
    (["ip", "netns", "exec", "ns0", "devlink", "dev", "eswitch", "set", DEV, "mode", "switchdev"], False),
    (["tc", "-j", "qdisc", "show"], True),
    (["tc", "-n", "ns0", "-j", "filter", "show", "dev", "p0", "ingress"], True),
    (["tc", "-batch", "-"], False),
    (["tc", "-force", "-batch", "-"], False),
    (["tc", "qdisc", "add", "dev", "p0", "ingress"], False),
    (["tc", "filter", "del", "dev", "p0", "ingress"], False),
    (["devlink", "-j", "dev", "eswitch", "show", DEV], True),
    (["devlink", "-j", "dev", "param", "show", DEV, "name", "flow_steering_mode"], True),
    (["devlink", "-j", "port", "show"], True),
    (["devlink", "dev", "eswitch", "set", DEV, "mode", "switchdev"], False),
    (["devlink", "dev", "param", "set", DEV, "name", "flow_steering_mode", "value", "dmfs", "cmode", "runtime"], False),
    (["devlink", "port", "function", "set", DEV + "/1", "ipsec_packet", "enable"], False),
    (["ethtool", "-S", "p0"], True),
    (["ethtool", "-i", "p0"], True),
    (["ethtool", "-K", "p0", "esp-hw-offload", "on"], False),
    (["ovs-vsctl", "--timeout=10", "--format=json", "--data=json", "--columns=name", "list", "bridge"], True),
    (["ovs-vsctl", "--timeout=10", "add-br", "br0"], False),
    (["ovs-vsctl", "--timeout=10", "list", "bridge", "--", "del-br", "br0"], False),
    (["reboot"], False),
])
def test_read_only_classifier(argv, expected):
    assert _rel.read_only(argv) is expected
