# -*- coding: utf-8 -*-
"""ipsec_offload_info: pure parsers on real outputs, the summary rules, the module on a scripted
host (exact command list, nothing that could change state), and one run against the real tools."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess

import pytest
from ansible.module_utils import basic
from harness import patch_module_args  # 2.19's, or the same on ansible-core 2.16
from unittest import mock

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _devlink as D
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _iproute2 as IP
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _kernel as K
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _tc as TC
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_text as XT
from ansible_collections.ipsec_offload.mlx5.plugins.modules import ipsec_offload_info as info
from harness import FakeHost, fixture, run_module


def sample(name):
    """A fixture from fixtures/info without its leading '# source' comment lines."""
    lines = fixture("info/" + name).splitlines(True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def sample_json(name):
    return json.loads(sample(name))


# --------------------------------------------------------------------------- versions / probes

@pytest.mark.parametrize("text,expected", [
    (sample("ip_V_iproute2_6.1_host.txt"), "6.1.0"),
    # header line of ../shared/reference/samples/lab/xfrm-offload-negative.txt (trixie VM)
    ("ip utility, iproute2-6.15.0, libbpf 1.5.0", "6.15.0"),
    ("ip utility, iproute2-ss190107", "ss190107"),
    ("", None),
])
def test_parse_ip_version(text, expected):
    assert IP.parse_ip_version(text) == expected


@pytest.mark.parametrize("name,expected", [
    # REAL 6.1 usage: 'offload [dev DEV] dir DIR' -> no packet keyword; nokeys is there
    ("ip_xfrm_state_help_iproute2_6.1_host.txt", {"offload_packet": False, "list_nokeys": True, "sa_dir": False}),
    ("ip_xfrm_state_help_iproute2_6.2plus_DERIVED.txt", {"offload_packet": True, "list_nokeys": True, "sa_dir": False}),
])
def test_parse_xfrm_state_usage_fixtures(name, expected):
    assert XT.parse_state_usage(sample(name)) == expected


@pytest.mark.parametrize("text,expected", [
    ('Object "xfrm" is unknown, try "ip help".', {"offload_packet": None, "list_nokeys": None, "sa_dir": None}),
    ("", {"offload_packet": None, "list_nokeys": None, "sa_dir": None}),
    # iproute2 >= 6.10 adds the SA direction keyword to the add/update usage
    ("Usage: ip xfrm state { add | update } ID\n        [ offload [ crypto | packet ] dev DEV dir DIR ]\n"
     "        [ if_id IF_ID ] [ tfcpad LENGTH ] [dir DIR]\nUsage: ip xfrm state list [ nokeys ] [ ID ]\n",
     {"offload_packet": True, "list_nokeys": True, "sa_dir": True}),
])
def test_parse_xfrm_state_usage_table(text, expected):
    assert XT.parse_state_usage(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("6.12.117+deb13-amd64", (6, 12, 117)),
    ("6.18.44-fc-v657", (6, 18, 44)),
    ("6.6", (6, 6, 0)),
    ("5.15.0-91-generic", (5, 15, 0)),
    ("weird", None),
])
def test_version_tuple(text, expected):
    assert K.version_tuple(text) == expected


# --------------------------------------------------------------------------- kernel features

# the dev host's own /proc/config.gz lines (kernel 6.18.44, no modules, no ESP/GCM)
HOST_CONFIG = """CONFIG_XFRM_USER=y
# CONFIG_XFRM_USER_COMPAT is not set
# CONFIG_INET_ESP is not set
# CONFIG_INET6_ESP is not set
# CONFIG_CRYPTO_GCM is not set
"""


def test_parse_kernel_config():
    assert K.parse_kernel_config(HOST_CONFIG + "CONFIG_INET_ESP_OFFLOAD=m\n") == {
        "CONFIG_XFRM_USER": "y", "CONFIG_XFRM_USER_COMPAT": "n", "CONFIG_INET_ESP": "n",
        "CONFIG_INET6_ESP": "n", "CONFIG_CRYPTO_GCM": "n", "CONFIG_INET_ESP_OFFLOAD": "m"}


@pytest.mark.parametrize("text,expected", [
    ("kernel/net/ipv4/esp4.ko.xz: kernel/net/xfrm/xfrm_algo.ko.xz\nkernel/net/ipv6/esp6-offload.ko:\n",
     {"esp4", "esp6_offload"}),
    ("kernel/net/xfrm/xfrm_user.ko\nkernel/crypto/gcm.ko\n", {"xfrm_user", "gcm"}),
    ("", set()),
])
def test_parse_module_paths(text, expected):
    assert K.parse_module_paths(text) == expected


def test_parse_proc_modules():
    # the lsmod lines of ../shared/reference/samples/netdevsim/05-ipsec.txt in /proc/modules form
    text = ("esp4_offload 12288 0 - Live 0x0000000000000000\n"
            "esp4 28672 1 esp4_offload, Live 0x0000000000000000\n"
            "xfrm_algo 16384 1 esp4, Live 0x0000000000000000\n")
    assert K.parse_proc_modules(text) == {"esp4_offload", "esp4", "xfrm_algo"}


@pytest.mark.parametrize("sources,expected", [
    # the dev host: no modules at all, config readable
    ({"config": K.parse_kernel_config(HOST_CONFIG)},
     {"esp4": "absent", "esp6": "absent", "esp4_offload": "absent", "esp6_offload": "absent",
      "xfrm_user": "builtin", "xfrm_offload": "absent", "gcm": "absent", "mlx5_ipsec": "absent"}),
    # Debian-like: esp4 loaded, esp6 a module on disk, xfrm_user built in, no config file
    ({"loaded": {"esp4", "esp4_offload"}, "builtin": {"xfrm_user"},
      "available": {"esp4", "esp6", "esp4_offload", "esp6_offload", "gcm"}},
     {"esp4": "loaded", "esp6": "module", "esp4_offload": "loaded", "esp6_offload": "module",
      "xfrm_user": "builtin", "xfrm_offload": "unknown", "gcm": "module", "mlx5_ipsec": "unknown"}),
    # configured as a module but not installed -> absent
    ({"config": {"CONFIG_INET_ESP": "m", "CONFIG_XFRM_OFFLOAD": "y"}, "available": set(), "builtin": set(),
      "loaded": set()},
     {"esp4": "absent", "esp6": "absent", "esp4_offload": "absent", "esp6_offload": "absent",
      "xfrm_user": "absent", "xfrm_offload": "builtin", "gcm": "absent", "mlx5_ipsec": "absent"}),
    # nothing readable
    ({}, dict((feat[0], "unknown") for feat in K.KERNEL_FEATURES)),
])
def test_kernel_features(sources, expected):
    assert K.kernel_features(**sources) == expected


def test_parse_xfrm_stat_and_netns():
    assert K.parse_xfrm_stat("XfrmInError             \t0\nXfrmInNoStates          \t7\n") == {
        "XfrmInError": 0, "XfrmInNoStates": 7}
    assert IP.parse_netns_list("ns1 (id: 1)\nns0\n") == {"ns0", "ns1"}


# --------------------------------------------------------------------------- SA counters

LAB_SAS = [
    {"src": "192.168.100.2", "dst": "192.168.100.1", "proto": "esp", "spi": "0x00001001", "spi_int": 4097,
     "reqid": 2, "mode": "transport", "flags": ["esn"], "dir": None,
     "sel_src": "192.168.100.2/32", "sel_dst": "192.168.100.1/32",
     "offloaded": False, "offload_dev": None, "offload_dir": None, "offload_mode": None,
     "replay_window": 64, "seq": 6, "oseq": 0, "bytes": 384, "packets": 6,
     "added": "2026-11-24 09:09:18", "last_used": "2026-11-24 09:09:21",
     "replay_window_errors": 0, "replay_errors": 0, "integrity_failed": 0},
    {"src": "192.168.100.1", "dst": "192.168.100.2", "proto": "esp", "spi": "0x00001000", "spi_int": 4096,
     "reqid": 1, "mode": "transport", "flags": ["esn"], "dir": None,
     "sel_src": "192.168.100.1/32", "sel_dst": "192.168.100.2/32",
     "offloaded": False, "offload_dev": None, "offload_dir": None, "offload_mode": None,
     "replay_window": 64, "seq": 0, "oseq": 6, "bytes": 384, "packets": 6,
     "added": "2026-11-24 09:09:17", "last_used": "2026-11-24 09:09:21",
     "replay_window_errors": 0, "replay_errors": 0, "integrity_failed": 0},
]


def test_sa_counters_lab_esn():
    assert XT.parse_xfrm_sa_counters(sample("ip_s_xfrm_state_lab.txt")) == LAB_SAS


def test_sa_counters_netdevsim_crypto_offload():
    sas = XT.parse_xfrm_sa_counters(sample("ip_s_xfrm_state_netdevsim.txt"))
    assert [(s["spi"], s["dir"], s["offloaded"], s["offload_dev"], s["offload_dir"], s["offload_mode"],
             s["flags"], s["replay_window"], s["seq"], s["oseq"], s["bytes"], s["packets"], s["added"],
             s["last_used"], s["sel_src"]) for s in sas] == [
        ("0x00001001", "in", True, "eth0", "in", "crypto", [], 0, 0, 0, 0, 0, "2026-11-24 08:49:42", None, "0.0.0.0/0"),
        ("0x00001000", "out", True, "eth0", "out", "crypto", [], 0, 0, 0, 0, 0, "2026-11-24 08:49:40", None, "0.0.0.0/0"),
    ]


def test_sa_counters_mlx5_packet_offload_without_stats():
    # real mlx5 output, space-indented, no sel line (af-unspec), no -s counters
    sas = XT.parse_xfrm_sa_counters(sample("ip_xfrm_state_mlx5_packet.txt"))
    assert len(sas) == 1
    sa = sas[0]
    assert (sa["spi"], sa["reqid"], sa["mode"], sa["flags"]) == ("0xc88b7652", 1, "tunnel", ["af-unspec", "esn"])
    assert (sa["offload_dev"], sa["offload_dir"], sa["offload_mode"], sa["dir"]) == ("eth2", "out", "packet", "out")
    assert sa["replay_window"] == 1 and sa["sel_src"] is None
    assert sa["bytes"] is None and sa["integrity_failed"] is None


@pytest.mark.parametrize("text,field,expected", [
    # iproute2 4.12..6.1 print no "mode" on the offload line: the mode stays unknown
    ("src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0x00001000 reqid 1 mode transport\n"
     "\tcrypto offload parameters: dev p0 dir out\n", "offload_mode", None),
    # old iproute2 without "mode" in the id line
    ("src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0x00001000 reqid 1\n", "mode", None),
    # `list nokeys` prints the algorithm without the key
    ("src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0x1000 reqid 7 mode transport\n"
     "\taead rfc4106(gcm(aes)) <<Keys hidden>> 128\n", "reqid", 7),
    # non-ESN state with a window: header carries it
    ("src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0x1000 reqid 7 mode transport\n\treplay-window 32 \n"
     "\tanti-replay context: seq 0x5, oseq 0x0, bitmap 0x0000001f\n", "replay_window", 32),
    # ESN high words fold into the 64-bit sequence numbers
    ("src 10.0.0.1 dst 10.0.0.2\n\tanti-replay esn context:\n\t seq-hi 0x1, seq 0x2, oseq-hi 0x0, oseq 0x3\n",
     "seq", (1 << 32) | 2),
    ("src 10.0.0.1 dst 10.0.0.2\n\tstats:\n\t  replay-window 1 replay 2 failed 3\n", "integrity_failed", 3),
])
def test_sa_counters_variants(text, field, expected):
    (sa,) = XT.parse_xfrm_sa_counters(text)
    assert sa[field] == expected


@pytest.mark.parametrize("name", [
    "ip_s_xfrm_state_lab.txt", "ip_s_xfrm_state_netdevsim.txt", "ip_xfrm_state_mlx5_packet.txt",
])
def test_sa_counters_never_carry_key_material(name):
    text = sample(name)
    keys = re.findall(r"0x[0-9a-f]{32,}", text)
    assert keys, "the fixture holds keys, so this test can fail"
    out = json.dumps(XT.parse_xfrm_sa_counters(text))
    for key in keys:
        assert key not in out and key[2:] not in out
    assert "aead" not in out and "rfc4106" not in out


# --------------------------------------------------------------------------- tc, devlink

def test_tc_offloaded_rules():
    assert TC.tc_offloaded(sample_json("tc_j_netdevsim_in_hw.json.txt")) == {
        "filters": 2, "in_hw": [
            {"pref": 1, "kind": "flower", "chain": 0, "protocol": "ip", "handle": 1, "in_hw_count": 1, "skip_sw": True},
            {"pref": 2, "kind": "flower", "chain": 0, "protocol": "ip", "handle": 1, "in_hw_count": 1, "skip_sw": False},
        ]}


@pytest.mark.parametrize("name,expected", [
    ("tc_j_netdevsim_not_in_hw.json.txt", {"filters": 2, "in_hw": []}),
    # u32: the hash-table entry has options but is not a rule
    ("tc_j_u32_host.json.txt", {"filters": 1, "in_hw": []}),
])
def test_tc_software_rules(name, expected):
    assert TC.tc_offloaded(sample_json(name)) == expected


def test_tc_empty():
    assert TC.tc_offloaded([]) == {"filters": 0, "in_hw": []}


def test_devlink_netdevsim_ports():
    ports = D.parse_ports(sample_json("devlink_j_port_show_netdevsim.json.txt"))
    assert D.device_of_netdev(ports, "eth0") == "netdevsim/netdevsim1"
    assert D.device_of_netdev(ports, "eth2") == "netdevsim/netdevsim1"
    assert D.device_of_netdev(ports, "p0") is None
    # netdevsim has no ipsec port-function caps: reported as None (capability not offered)
    assert D.vf_ports(ports, "netdevsim/netdevsim1") == [
        {"port": "netdevsim/netdevsim1/128", "vfnum": 0, "pfnum": 0, "netdev": "eth1", "ipsec_packet": None, "ipsec_crypto": None},
        {"port": "netdevsim/netdevsim1/129", "vfnum": 1, "pfnum": 0, "netdev": "eth2", "ipsec_packet": None, "ipsec_crypto": None},
    ]
    assert D.vf_ports(ports, "pci/0000:08:00.0") == []


def test_devlink_mlx5_vf_caps_and_params():
    ports = D.parse_ports(sample_json("devlink_j_port_show_mlx5_vf_DERIVED.json.txt"))
    assert D.vf_ports(ports, "pci/0000:06:00.0") == [
        {"port": "pci/0000:06:00.0/2", "vfnum": 1, "pfnum": 0, "netdev": "enp6s0pf0vf1",
         "ipsec_packet": True, "ipsec_crypto": False}]
    assert D.param_value(sample_json("devlink_j_param_fsm_smfs_DERIVED.json.txt"), "pci/0000:06:00.0",
                         "flow_steering_mode") == "smfs"
    assert D.param_value({"param": {"pci/0000:06:00.0": [{"name": "flow_steering_mode", "values": []}]}},
                         "pci/0000:06:00.0", "flow_steering_mode") is None
    assert D.eswitch_facts(sample_json("devlink_j_eswitch_mlx5_DERIVED.json.txt"), "pci/0000:03:00.0") == {
        "eswitch_mode": "switchdev", "inline_mode": "none", "encap_mode": "basic"}
    assert D.eswitch_facts(sample_json("devlink_j_eswitch_netdevsim.json.txt"), "netdevsim/netdevsim1") == {
        "eswitch_mode": "switchdev", "inline_mode": None, "encap_mode": None}
    assert D.eswitch_facts({"dev": {}}, "pci/0000:03:00.0")["eswitch_mode"] is None


@pytest.mark.parametrize("value,expected", [
    ("enable", True), ("enabled", True), ("disable", False), ("disabled", False), (None, None)])
def test_port_function_cap_words(value, expected):
    # iproute2 prints enable/disable, the kernel docs show enabled/disabled: both are understood
    ports = D.parse_ports({"port": {"pci/0000:08:00.0/1": {"flavour": "pcivf", "vfnum": 0, "netdev": "x",
                                                           "function": {"ipsec_packet": value}}}})
    assert D.vf_ports(ports, "pci/0000:08:00.0")[0]["ipsec_packet"] is expected


def test_module_devlink_garbage_is_a_problem_not_a_crash(kernel_tree):
    host = mlx5_host().on(("devlink", "-j", "dev", "eswitch"), (0, '{"dev": []}', ""))
    res, failed = run_module(info.main, {"devices": ["p0"]}, host)
    assert not failed, res
    assert res["devlink"][PF]["eswitch_mode"] is None
    assert "eswitch" in res["devlink"][PF]["problems"]


def test_parse_link_parent():
    obj = [{"ifname": "eth0", "operstate": "UP", "parentbus": "virtio", "parentdev": "virtio2"}]
    assert IP.parse_link(obj) == {"ifname": "eth0", "operstate": "UP", "parent": "virtio/virtio2"}
    assert IP.parse_link([{"ifname": "lo", "operstate": "UNKNOWN"}])["parent"] is None
    assert IP.parse_link([]) is None and IP.parse_link(None) is None


# --------------------------------------------------------------------------- summary rules

def _ready_result():
    feats = {"esp4": "module", "esp6": "module", "esp4_offload": "module", "esp6_offload": "module",
             "xfrm_user": "builtin", "xfrm_offload": "builtin", "gcm": "module", "mlx5_ipsec": "builtin"}
    return {
        "kernel": {"release": "6.12.117+deb13-amd64", "version": "6.12.117", "meets_packet_offload_minimum": True,
                   "features": feats},
        "iproute2": {"present": True, "version": "6.15.0", "offload_packet": True},
        "devices": {"p0": {"present": True, "driver": "mlx5_core", "problems": {},
                           "esp_features": {"esp_hw_offload": {"enabled": True, "fixed": False}},
                           "tc_ingress": {"filters": 0, "in_hw": []}, "devlink": "pci/0000:08:00.0",
                           "offloaded_states": 0}},
        "devlink": {"pci/0000:08:00.0": {"eswitch_mode": "switchdev", "flow_steering_mode": "dmfs", "problems": {},
                                         "vf_ports": [{"port": "pci/0000:08:00.0/1", "vfnum": 0, "netdev": "pf0vf0",
                                                       "ipsec_packet": False, "ipsec_crypto": False}]}},
    }


def _on_vf(res, packet):
    """IPsec on the VF's own netdev (RoCE over VF: its devlink device is the VF's, not the PF's)."""
    res["devices"]["p0"]["devlink"] = "pci/0000:08:00.2"
    res["devlink"]["pci/0000:08:00.0"]["vf_ports"][0]["ipsec_packet"] = packet


def _set(path, value):
    def change(res):
        node = res
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def test_summary_ready():
    assert info.summarize(_ready_result(), True) == (True, [], [])


@pytest.mark.parametrize("change,kind,needle", [
    (_set(("kernel", "meets_packet_offload_minimum"), False), "reasons", "older than 6.6"),
    (_set(("iproute2", "offload_packet"), False), "reasons", "does not accept 'offload packet'"),
    (_set(("iproute2", "offload_packet"), None), "unverified", "could not tell whether ip accepts"),
    (lambda r: r["kernel"]["features"].update(esp4="absent", esp6="absent"), "reasons", "no ESP"),
    (lambda r: r["kernel"]["features"].update(esp4="unknown", esp6="unknown"), "unverified", "has ESP"),
    (_set(("kernel", "features", "mlx5_ipsec"), "absent"), "reasons", "CONFIG_MLX5_EN_IPSEC"),
    (_set(("devices", "p0", "driver"), "virtio_net"), "reasons", "driver is virtio_net"),
    (_set(("devices", "p0", "esp_features", "esp_hw_offload"), {"enabled": False, "fixed": False}),
     "reasons", "ethtool -K p0 esp-hw-offload on"),
    (_set(("devices", "p0", "esp_features", "esp_hw_offload"), {"enabled": False, "fixed": True}),
     "reasons", "off [fixed]"),
    (_set(("devices", "p0", "esp_features"), None), "unverified", "esp-hw-offload unknown"),
    (_set(("devices", "p0", "present"), False), "reasons", "no such network device"),
    (_set(("devices", "p0", "tc_ingress", "in_hw"), [{"pref": 1}]), "reasons", "EBUSY"),
    (lambda r: (r["devices"]["p0"]["tc_ingress"].update(in_hw=[{"pref": 1}]),
                r["devices"]["p0"].update(offloaded_states=None)), "unverified", "EBUSY"),
    (_set(("devices", "p0", "devlink"), None), "unverified", "no devlink device"),
    (_set(("devlink", "pci/0000:08:00.0", "flow_steering_mode"), "smfs"), "reasons", "smfs in switchdev"),
    (_set(("devlink", "pci/0000:08:00.0", "flow_steering_mode"), None), "unverified", "flow_steering_mode unknown"),
    (lambda r: _on_vf(r, False), "reasons", "ipsec_packet is disabled"),
    (lambda r: _on_vf(r, None), "reasons", "no ipsec_packet capability"),
    # IPsec on the PF while a VF holds an IPsec capability: mlx5 refuses the PF's SAs (EBUSY)
    (lambda r: r["devlink"]["pci/0000:08:00.0"]["vf_ports"][0].update(ipsec_packet=True), "reasons",
     "p0 (the PF) while the VF port function(s) pci/0000:08:00.0/1 have ipsec_crypto/ipsec_packet enabled"),
    (lambda r: r["devlink"]["pci/0000:08:00.0"]["vf_ports"][0].update(ipsec_crypto=True), "reasons",
     "mlx5 refuses the PF's offloaded SAs"),
])
def test_summary_each_rule(change, kind, needle):
    res = copy.deepcopy(_ready_result())
    change(res)
    ready, reasons, unverified = info.summarize(res, True)
    found = {"reasons": reasons, "unverified": unverified}
    assert ready is False
    assert len(found[kind]) == 1 and needle in found[kind][0], found
    other = "unverified" if kind == "reasons" else "reasons"
    assert found[other] == []


def test_summary_rules_that_do_not_fire():
    res = _ready_result()
    # offloaded TC rules next to existing offloaded SAs: the IPsec tables exist, no EBUSY
    res["devices"]["p0"]["tc_ingress"]["in_hw"] = [{"pref": 1}]
    res["devices"]["p0"]["offloaded_states"] = 2
    # smfs is only a problem in switchdev
    res["devlink"]["pci/0000:08:00.0"].update(eswitch_mode="legacy", flow_steering_mode="smfs")
    # one ESP family missing is not a blocker
    res["kernel"]["features"]["esp6"] = "absent"
    assert info.summarize(res, True) == (True, [], [])
    # IPsec on the VF netdev with ipsec_packet on its port function (RoCE over VF): ready
    _on_vf(res, True)
    assert info.summarize(res, True) == (True, [], [])
    assert info.summarize(res, False)[2] == ["no devices given: NIC capabilities not checked"]


def test_summary_packet_offload_drivers():
    res = copy.deepcopy(_ready_result())
    res["devices"]["p0"]["driver"] = "netdevsim"
    ready, reasons, unverified = info.summarize(res, True)
    assert ready is False and unverified == [] and reasons == [
        "p0: driver is netdevsim, not mlx5_core (this collection drives mlx5 packet offload; "
        "packet_offload_drivers lists the drivers accepted)"]
    # the lab's simulated ConnectX: accepted once listed, every other rule still applies
    assert info.summarize(res, True, None, ("mlx5_core", "netdevsim")) == (True, [], [])
    res["devices"]["p0"]["esp_features"]["esp_hw_offload"] = {"enabled": False, "fixed": True}
    assert info.summarize(res, True, None, ("mlx5_core", "netdevsim"))[0] is False
    # the list replaces the default: mlx5_core not listed is refused too
    assert "not netdevsim" in info.summarize(_ready_result(), True, None, ("netdevsim",))[1][0]


@pytest.mark.parametrize("drivers,needle", [
    ([], "packet_offload_drivers: is empty"),
    (["mlx5_core", "bad driver"], "packet_offload_drivers[1]: 'bad driver' is not a driver name"),
    (["-x"], "packet_offload_drivers[0]: '-x' is not a driver name"),
])
def test_packet_offload_drivers_bad_input(drivers, needle):
    with pytest.raises(V.InputError) as exc:
        info.validate_drivers(drivers)
    assert str(exc.value).startswith(needle)


# --------------------------------------------------------------------------- the module on a scripted host

RELEASE = "6.12.117+deb13-amd64"
PF = "pci/0000:08:00.0"

# Synthetic, in the shapes of the real outputs above (no mlx5 capture of these exists in the samples).
MLX5_ETHTOOL_I = ("driver: mlx5_core\nversion: 6.12.117+deb13-amd64\nfirmware-version: 22.39.1002 (MT_0000000359)\n"
                  "expansion-rom-version: \nbus-info: 0000:08:00.0\nsupports-statistics: yes\n")
MLX5_LINK = json.dumps([{"ifindex": 4, "ifname": "p0", "operstate": "UP", "parentbus": "pci",
                         "parentdev": "0000:08:00.0"}])
MLX5_PORTS = json.dumps({"port": {
    PF + "/65535": {"type": "eth", "netdev": "p0", "flavour": "physical", "port": 0, "splittable": False},
    PF + "/1": {"type": "eth", "netdev": "pf0vf0", "flavour": "pcivf", "controller": 0, "pfnum": 0, "vfnum": 0,
                "external": False, "splittable": False,
                "function": {"hw_addr": "00:00:00:00:00:00", "ipsec_crypto": "disable", "ipsec_packet": "disable"}}}})
MLX5_ESWITCH = json.dumps({"dev": {PF: {"mode": "switchdev", "inline-mode": "none", "encap-mode": "basic"}}})
MLX5_FSM = json.dumps({"param": {PF: [{"name": "flow_steering_mode", "type": "driver-specific",
                                       "values": [{"cmode": "runtime", "value": "dmfs"}]}]}})
MLX5_ETHTOOL_K = "Features for p0:\n" + sample("ethtool_k_netdevsim_esp.txt").replace(
    "esp-hw-offload: on [fixed]", "esp-hw-offload: on")
MLX5_SAS = sample("ip_xfrm_state_mlx5_packet.txt").replace("dev eth2", "dev p0")
USAGE_NEW = sample("ip_xfrm_state_help_iproute2_6.2plus_DERIVED.txt")
USAGE_61 = sample("ip_xfrm_state_help_iproute2_6.1_host.txt")


@pytest.fixture
def kernel_tree(tmp_path, monkeypatch):
    """A host file tree: esp4 loaded, esp6 on disk, xfrm_user built in, config in /boot."""
    files = {
        "proc/modules": "esp4_offload 12288 0 - Live 0x0\nesp4 28672 1 esp4_offload, Live 0x0\n",
        "proc/net/xfrm_stat": "XfrmInError             \t0\nXfrmInNoStates          \t3\n",
        "lib/modules/%s/modules.builtin" % RELEASE: "kernel/net/xfrm/xfrm_user.ko\n",
        "lib/modules/%s/modules.dep" % RELEASE: ("kernel/net/ipv4/esp4.ko.xz:\nkernel/net/ipv6/esp6.ko.xz:\n"
                                                 "kernel/net/ipv4/esp4_offload.ko.xz:\nkernel/net/ipv6/esp6_offload.ko.xz:\n"
                                                 "kernel/crypto/gcm.ko.xz:\n"),
        "boot/config-%s" % RELEASE: ("CONFIG_XFRM_USER=y\nCONFIG_XFRM_OFFLOAD=y\nCONFIG_INET_ESP=m\nCONFIG_INET6_ESP=m\n"
                                     "CONFIG_INET_ESP_OFFLOAD=m\nCONFIG_INET6_ESP_OFFLOAD=m\nCONFIG_CRYPTO_GCM=m\n"
                                     "CONFIG_MLX5_EN_IPSEC=y\n"),
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(info, "FS_ROOT", str(tmp_path))
    monkeypatch.setattr(info, "kernel_release", lambda: RELEASE)
    return tmp_path


def mlx5_host(usage=USAGE_NEW, sas=MLX5_SAS):
    return FakeHost([
        (("ip", "-V"), (0, "ip utility, iproute2-6.15.0, libbpf 1.5.0\n", "")),
        (("ip", "xfrm", "state", "help"), (255, "", usage)),
        (("devlink", "-j", "dev", "eswitch"), (0, MLX5_ESWITCH, "")),
        (("devlink", "-j", "dev", "param"), (0, MLX5_FSM, "")),
        (("devlink", "-j", "dev"), (0, json.dumps({"dev": {PF: {}}}), "")),
        (("devlink", "-j", "port", "show"), (0, MLX5_PORTS, "")),
        (("ip", "-d", "-j", "link", "show", "dev", "p0"), (0, MLX5_LINK, "")),
        (("ethtool", "-i", "p0"), (0, MLX5_ETHTOOL_I, "")),
        (("ethtool", "-k", "p0"), (0, MLX5_ETHTOOL_K, "")),
        (("ethtool", "-S", "p0"), (0, "NIC statistics:\n     rx_packets: 10\n" + sample("ethtool_S_ipsec_cx7.txt"), "")),
        (("tc", "-j", "filter", "show", "dev", "p0", "ingress"), (0, "[]", "")),
        (("ip", "-s", "xfrm", "state", "list"), (0, sas, "")),
        (("ip", "xfrm", "policy", "list"), (0, "", "")),
    ])


MLX5_COMMANDS = [
    ["ip", "-V"],
    ["ip", "xfrm", "state", "help"],
    ["devlink", "-j", "dev"],
    ["devlink", "-j", "port", "show"],
    ["ip", "-d", "-j", "link", "show", "dev", "p0"],
    ["ethtool", "-i", "p0"],
    ["ethtool", "-k", "p0"],
    ["ethtool", "-S", "p0"],
    ["tc", "-j", "filter", "show", "dev", "p0", "ingress"],
    ["devlink", "-j", "dev", "eswitch", "show", PF],
    ["devlink", "-j", "dev", "param", "show", PF, "name", "flow_steering_mode"],
    ["ip", "-s", "xfrm", "state", "list", "nokeys"],
    ["ip", "xfrm", "policy", "list"],
]

# Words that would make any of these tools change state.
MUTATING = {"add", "set", "del", "delete", "deleteall", "flush", "change", "replace", "update", "-K",
            "-batch", "-b", "allocspi", "reload"}


def assert_read_only(host):
    for argv in host.commands():
        assert not MUTATING.intersection(argv), argv
    assert host.stdins() == []


def test_module_mlx5_ready(kernel_tree):
    host = mlx5_host()
    res, failed = run_module(info.main, {"devices": ["p0"]}, host)
    assert not failed, res
    assert host.commands() == MLX5_COMMANDS
    assert_read_only(host)
    assert res["changed"] is False
    assert res["summary"] == {"packet_offload_ready": True, "reasons": [], "unverified": []}
    assert res["iproute2"] == {"present": True, "version": "6.15.0", "offload_packet": True,
                               "list_nokeys": True, "sa_dir": False}
    assert res["kernel"]["features"] == {
        "esp4": "loaded", "esp6": "module", "esp4_offload": "loaded", "esp6_offload": "module",
        "xfrm_user": "builtin", "xfrm_offload": "builtin", "gcm": "module", "mlx5_ipsec": "builtin"}
    assert res["kernel"]["xfrm_stat"] == {"XfrmInError": 0, "XfrmInNoStates": 3}
    p0 = res["devices"]["p0"]
    assert (p0["driver"], p0["firmware_version"], p0["bus_info"], p0["devlink"]) == (
        "mlx5_core", "22.39.1002 (MT_0000000359)", "0000:08:00.0", PF)
    assert p0["esp_features"]["esp_hw_offload"] == {"enabled": True, "fixed": False}
    assert p0["ipsec_counters"]["ipsec_rx_pkts"] == 38 and "rx_packets" not in p0["ipsec_counters"]
    assert p0["offloaded_states"] == 1 and p0["problems"] == {}
    assert res["devlink"][PF] == {
        "eswitch_mode": "switchdev", "inline_mode": "none", "encap_mode": "basic", "flow_steering_mode": "dmfs",
        "vf_ports": [{"port": PF + "/1", "vfnum": 0, "pfnum": 0, "netdev": "pf0vf0",
                      "ipsec_packet": False, "ipsec_crypto": False}],
        "problems": {}}
    assert [(s["spi"], s["offload_mode"]) for s in res["xfrm_states"]] == [("0xc88b7652", "packet")]


def test_module_check_mode_gives_the_same_answer(kernel_tree):
    normal = run_module(info.main, {"devices": ["p0"]}, mlx5_host())[0]
    host = mlx5_host()
    checked, failed = run_module(info.main, {"devices": ["p0"]}, host, check_mode=True)
    assert not failed
    assert host.commands() == MLX5_COMMANDS
    normal.pop("invocation", None)
    checked.pop("invocation", None)
    assert checked == normal


def test_module_old_iproute2_without_nokeys_keeps_no_keys(kernel_tree):
    usage = USAGE_61.replace("list [ nokeys ] ", "list ")
    host = mlx5_host(usage=usage, sas=sample("ip_s_xfrm_state_lab.txt"))
    res, failed = run_module(info.main, {"devices": ["p0"]}, host)
    assert not failed
    assert host.commands()[-2] == ["ip", "-s", "xfrm", "state", "list"]
    dumped = json.dumps(res)
    assert "2222222222222222222222222222222222222222" not in dumped
    assert "1111111111111111111111111111111111111111" not in dumped
    assert len(res["xfrm_states"]) == 2
    assert res["summary"]["packet_offload_ready"] is False
    assert any("does not accept 'offload packet'" in r for r in res["summary"]["reasons"])


def test_module_xfrm_failure_does_not_echo_stdout(kernel_tree):
    host = mlx5_host().on(("ip", "-s", "xfrm", "state", "list"),
                          (2, "\taead rfc4106(gcm(aes)) 0x1111111111111111111111111111111111111111 128\n", ""))
    res, failed = run_module(info.main, {"devices": ["p0"]}, host)
    assert not failed
    assert res["xfrm_states_problem"] == "failed with rc=2"
    assert "1111111111" not in json.dumps(res)
    assert res["devices"]["p0"]["offloaded_states"] is None


def test_module_tc_rules_in_hw_block_first_sa(kernel_tree):
    host = mlx5_host(sas="").on(("tc", "-j", "filter", "show", "dev", "p0", "ingress"),
                                (0, sample("tc_j_netdevsim_in_hw.json.txt"), ""))
    res, failed = run_module(info.main, {"devices": ["p0"]}, host)
    assert not failed
    assert res["devices"]["p0"]["offloaded_states"] == 0
    assert len(res["devices"]["p0"]["tc_ingress"]["in_hw"]) == 2
    (reason,) = res["summary"]["reasons"]
    assert reason.startswith("p0: 2 offloaded TC rule(s) on ingress")


def test_module_namespace_argv_forms(kernel_tree):
    host = FakeHost([
        (("ip", "netns", "list"), (0, "ns0 (id: 0)\n", "")),
        (("ip", "-V"), (0, "ip utility, iproute2-6.1.0, libbpf 1.1.2\n", "")),
        (("ip", "xfrm", "state", "help"), (255, "", USAGE_61)),
        (("ip", "netns", "exec", "ns0", "/usr/sbin/devlink", "-j", "dev"), (1, "", "Failed to connect to devlink Netlink\n")),
        (("ip", "-n", "ns0", "-d", "-j", "link"), (0, json.dumps([{"ifname": "vf0", "operstate": "UP"}]), "")),
        (("ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-i"), (0, MLX5_ETHTOOL_I, "")),
        (("ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-k"), (0, MLX5_ETHTOOL_K, "")),
        (("ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-S"), (0, sample("ethtool_S_ipsec_cx7.txt"), "")),
        (("tc", "-n", "ns0", "-j"), (0, "[]", "")),
        (("ip", "-n", "ns0", "-s", "xfrm"), (0, "", "")),
        (("ip", "-n", "ns0", "xfrm", "policy"), (0, "", "")),
    ])
    res, failed = run_module(info.main, {"devices": ["vf0"], "namespace": "ns0"}, host)
    assert not failed, res
    assert host.commands() == [
        ["ip", "netns", "list"],
        ["ip", "-V"],
        ["ip", "xfrm", "state", "help"],
        ["ip", "netns", "exec", "ns0", "/usr/sbin/devlink", "-j", "dev"],
        ["ip", "-n", "ns0", "-d", "-j", "link", "show", "dev", "vf0"],
        ["ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-i", "vf0"],
        ["ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-k", "vf0"],
        ["ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-S", "vf0"],
        ["tc", "-n", "ns0", "-j", "filter", "show", "dev", "vf0", "ingress"],
        ["ip", "-n", "ns0", "-s", "xfrm", "state", "list", "nokeys"],
        ["ip", "-n", "ns0", "xfrm", "policy", "list"],
    ]
    assert_read_only(host)
    vf0 = res["devices"]["vf0"]
    assert vf0["problems"] == {"devlink": "Failed to connect to devlink Netlink"}
    assert res["devlink"] == {}
    assert res["xfrm_states"] == [] and vf0["offloaded_states"] == 0
    assert "vf0: no devlink device found: eswitch and steering mode not checked" in res["summary"]["unverified"]


def test_module_missing_namespace_fails_before_anything_else(kernel_tree):
    host = FakeHost([(("ip", "netns", "list"), (0, "ns1 (id: 1)\n", ""))])
    res, failed = run_module(info.main, {"devices": ["vf0"], "namespace": "ns0"}, host)
    assert failed
    assert res["msg"].startswith("namespace: network namespace 'ns0' does not exist")
    assert host.commands() == [["ip", "netns", "list"]]


@pytest.mark.parametrize("args,field", [
    ({"devices": ["p0", "eth0; reboot"]}, "devices[1]"),
    ({"devices": ["p0\nip link del p0"]}, "devices[0]"),
    ({"devices": ["a" * 16]}, "devices[0]"),
    ({"devlink": ["pci/0000:08:00.0 && reboot"]}, "devlink[0]"),
    ({"namespace": "ns 0"}, "namespace"),
])
def test_module_bad_input_names_the_field_and_runs_nothing(kernel_tree, args, field):
    host = FakeHost([])
    res, failed = run_module(info.main, args, host)
    assert failed
    assert res["msg"].startswith(field + ": ")
    assert host.calls == []


def test_module_without_ethtool_devlink_tc_reports_unknown(kernel_tree):
    host = FakeHost([
        (("ip", "-V"), (0, "ip utility, iproute2-6.15.0, libbpf 1.5.0\n", "")),
        (("ip", "xfrm", "state", "help"), (255, "", USAGE_NEW)),
        (("ip", "-d", "-j", "link"), (0, MLX5_LINK, "")),
        (("ip", "-s", "xfrm"), (0, "", "")),
        (("ip", "xfrm", "policy"), (0, "", "")),
    ])
    res, failed = run_module(info.main, {"devices": ["p0"]}, host, bins=["ip"])
    assert not failed, res
    assert [c[:3] for c in host.commands()] == [["ip", "-V"], ["ip", "xfrm", "state"], ["ip", "-d", "-j"],
                                                ["ip", "-s", "xfrm"], ["ip", "xfrm", "policy"]]
    assert res["tools"] == {"ip": True, "tc": False, "ethtool": False, "devlink": False}
    p0 = res["devices"]["p0"]
    assert p0["present"] is True and p0["driver"] is None and p0["esp_features"] is None
    assert p0["problems"] == {"ethtool -i": "absent: ethtool is not installed",
                              "ethtool -k": "absent: ethtool is not installed",
                              "ethtool -S": "absent: ethtool is not installed",
                              "tc filter": "absent: tc is not installed",
                              "devlink": "absent: devlink is not installed"}
    assert res["summary"]["reasons"] == []
    assert res["summary"]["unverified"] == [
        "p0: driver unknown (absent: ethtool is not installed)",
        "p0: esp-hw-offload unknown (absent: ethtool is not installed)"]


def test_module_nothing_installed_is_not_a_failure(kernel_tree):
    host = FakeHost([])
    res, failed = run_module(info.main, {"devices": ["p0"]}, host, bins=[])
    assert not failed, res
    assert host.calls == []
    assert res["iproute2"]["present"] is False
    assert res["devices"]["p0"]["present"] is None
    assert res["xfrm_states_problem"] == "absent: ip is not installed"
    assert res["summary"]["packet_offload_ready"] is False


# --------------------------------------------------------------------------- the real tools on this host

def _run_real(args):
    from harness import ModuleExit, _exit_json, _fail_json
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        try:
            info.main()
        except ModuleExit as done:
            return done.result, done.failed
    raise AssertionError("no exit")


@pytest.mark.skipif(not shutil.which("ip") or not shutil.which("ethtool"), reason="needs ip and ethtool")
def test_real_host_lo():
    res, failed = _run_real({"devices": ["lo"]})
    assert not failed, res
    assert res["changed"] is False
    ip_v = subprocess.run(["ip", "-V"], capture_output=True, text=True, check=True).stdout
    assert res["iproute2"]["version"] == IP.parse_ip_version(ip_v)
    # two independent signals must agree: the probe, and the version that introduced the keyword
    vt = K.version_tuple(res["iproute2"]["version"])
    assert res["iproute2"]["offload_packet"] is (vt >= (6, 2, 0))
    assert res["kernel"]["release"] == os.uname().release
    assert res["kernel"]["xfrm_stat_present"] is os.path.exists("/proc/net/xfrm_stat")
    lo = res["devices"]["lo"]
    assert lo["present"] is True
    # loopback never offers ESP offload, and ethtool -k always lists the feature on >= 4.11 kernels
    assert lo["esp_features"]["esp_hw_offload"] == {"enabled": False, "fixed": True}
    assert res["summary"]["packet_offload_ready"] is False
    assert any(r.startswith("lo: esp-hw-offload is off [fixed]") for r in res["summary"]["reasons"])
    print(json.dumps({k: res[k] for k in ("iproute2", "kernel", "devices", "summary")}, indent=1))


@pytest.fixture
def real_netns():
    """A private namespace with a veth pair inside (created and removed by this test only)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip")
    name = "ioinfo%d" % os.getpid()
    if subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                       capture_output=True, check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.mark.skipif(not shutil.which("ethtool"), reason="needs ethtool")
def test_real_host_namespace_veth(real_netns):
    res, failed = _run_real({"devices": ["v0", "lo"], "namespace": real_netns})
    assert not failed, res
    v0 = res["devices"]["v0"]
    # ethtool ran inside the namespace (v0 exists only there) and saw the veth driver
    assert v0["present"] is True and v0["driver"] == "veth"
    assert v0["esp_features"]["esp_hw_offload"]["enabled"] is False
    assert v0["tc_ingress"] == {"filters": 0, "in_hw": []}
    assert any(r.startswith("v0: driver is veth, not mlx5_core") for r in res["summary"]["reasons"])
    assert res["xfrm_states"] == [] and v0["offloaded_states"] == 0


def test_real_host_missing_namespace_fails_cleanly():
    if not shutil.which("ip"):
        pytest.skip("needs ip")
    res, failed = _run_real({"devices": ["lo"], "namespace": "ioinfo-does-not-exist"})
    assert failed
    assert res["msg"].startswith("namespace: network namespace 'ioinfo-does-not-exist' does not exist")


def test_xfrm_health_names_lost_sas_active_guards_and_remnants():
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
    rng = X.OWNED_REQID_RANGE
    pol = ("src 10.0.0.1/32 dst 10.0.0.2/32 \n\tdir out priority 0 ptype main \n"
           "\ttmpl src 10.0.0.1 dst 10.0.0.2\n\t\tproto esp reqid 1371537409 mode transport\n")
    guards = "".join("src 10.0.0.%s/32 dst 10.0.0.%s/32 \n\tdir %s action block priority 4294967295 ptype main \n"
                     "\tmark %s/0x1 \n\ttmpl src 10.0.0.%s dst 10.0.0.%s\n\t\tproto esp reqid %d mode transport\n"
                     % (a, b, d, m, a, b, r)
                     for (a, b, d, r) in (("1", "2", "out", 1371537409), ("2", "1", "in", 1371537410))
                     for m in ("0", "0x1"))
    foreign = "src 10.0.0.1/32 dst 10.0.0.9/32 \n\tdir out priority 0 ptype main \n"
    policies = X.parse_policies(pol + guards + foreign)
    # the out SA is lost (policy without SA), the in SA policy is gone (its guards are what drops
    # the traffic), and an owned SA nothing selects is left over
    states = [{"src": "10.0.0.9", "dst": "10.0.0.1", "spi": "0x00001234", "reqid": 1371537499}]
    h = info.xfrm_health(states, policies, rng)
    assert h["policies_without_sa"] == ["SP src 10.0.0.1/32 dst 10.0.0.2/32 dir out (reqid 0x51c00001)"]
    assert h["guards_active"] == ["SP src 10.0.0.2/32 dst 10.0.0.1/32 dir in mark 0x0/0x1 (reqid 0x51c00002)",
                                  "SP src 10.0.0.2/32 dst 10.0.0.1/32 dir in mark 0x1/0x1 (reqid 0x51c00002)"]
    assert h["sas_without_policy"] == ["SA src 10.0.0.9 dst 10.0.0.1 spi 0x00001234 (reqid 0x51c0005b)"]
    # all well: SA present for the policy, guards beside their policy
    states = [{"src": "10.0.0.1", "dst": "10.0.0.2", "spi": "0x00001000", "reqid": 1371537409}]
    assert info.xfrm_health(states, X.parse_policies(pol + guards[:len(guards) // 2]), rng) == {
        "policies_without_sa": [], "guards_active": [], "sas_without_policy": []}
