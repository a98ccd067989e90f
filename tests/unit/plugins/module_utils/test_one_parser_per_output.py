# -*- coding: utf-8 -*-
"""One parser per tool output: the views different callers take of the same output agree, on the
real outputs in tests/unit/fixtures (copied from ../shared/reference/samples)."""
from __future__ import annotations

import json
import re

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _devlink as D
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _iproute2 as IP
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _tc as TC
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_text as XT
from harness import fixture

USAGES = ["xfrm/iproute2-6.1-state-help-real.txt", "xfrm/iproute2-6.2.0-state-help-DERIVED.txt",
          "xfrm/iproute2-6.15.0-state-help-DERIVED.txt", "info/ip_xfrm_state_help_iproute2_6.1_host.txt",
          "info/ip_xfrm_state_help_iproute2_6.2plus_DERIVED.txt"]

STATES = ["xfrm/lab-xfrm-state.txt", "xfrm/lab-xfrm-state-s.txt", "xfrm/mlx5-packet-offload-real.txt",
          "xfrm/netdevsim-05-ipsec.txt",
          "xfrm/lab-xfrm-offload-negative.txt", "info/ip_s_xfrm_state_lab.txt",
          "info/ip_s_xfrm_state_netdevsim.txt", "info/ip_xfrm_state_mlx5_packet.txt",
          "devlink/xfrm_state_mlx5_packet.txt", "devlink/xfrm_state_netdevsim_crypto.txt",
          "tc/xfrm_state_mlx5_packet_real.txt", "tc/xfrm_state_netdevsim_crypto.txt"]

POLICIES = ["xfrm/lab-xfrm-policy.txt", "xfrm/lab-xfrm-policy-s.txt", "xfrm/policy-marks-guards-real.txt",
            "xfrm/bookworm-policy-and-errors-real.txt", "devlink/xfrm_policy_mlx5_packet.txt"]


def _reflowed(text):
    """The same usage wrapped differently: every run of white space one space, then a line break
    before each "[ dir" (a build that wraps at another column)."""
    return re.sub(r"\s+", " ", text).replace("[ dir DIR ]", "\n        [ dir\n DIR ]")


# ------------------------------------------------------------------ the iproute2 usage probe

@pytest.mark.parametrize("name", USAGES)
@pytest.mark.parametrize("reflow", [False, True])
def test_preflight_and_info_read_the_usage_alike(name, reflow):
    text = fixture(name)
    text = _reflowed(text) if reflow else text
    usage = XT.parse_state_usage(text)
    feats = X.parse_features(text, "6.12.0")
    assert usage["offload_packet"] is not None
    assert feats["offload_packet"] == usage["offload_packet"]
    assert feats["iproute2_sa_dir"] == usage["sa_dir"]
    assert usage == XT.parse_state_usage(fixture(name))  # the wrapping does not matter


def test_usage_sa_dir_anywhere_in_the_add_usage():
    # "[ dir DIR ]" not right after "[ reqid REQID ]": the preflight pattern used to miss it
    text = ("Usage: ip xfrm state { add | update } ID [ reqid REQID ] [ seq SEQ ]\n        [ dir DIR ]\n"
            "        [ offload [ crypto | packet ] dev DEV dir DIR ]\nUsage: ip xfrm state list [ nokeys ] [ ID ]\n")
    assert XT.parse_state_usage(text) == {"offload_packet": True, "list_nokeys": True, "sa_dir": True}
    assert X.parse_features(text, "6.12.0")["sa_dir"] is True


def test_usage_not_recognised_is_none_for_info_and_false_for_preflight():
    text = 'Object "xfrm" is unknown, try "ip help".'
    assert XT.parse_state_usage(text) == {"offload_packet": None, "list_nokeys": None, "sa_dir": None}
    assert X.parse_features(text, "6.12.0")["offload_packet"] is False


# ------------------------------------------------------------------------ ip xfrm state

def _spi(sa):
    return sa["spi"] if isinstance(sa["spi"], int) else int(sa["spi"], 16)


@pytest.mark.parametrize("name", STATES)
def test_sa_counters_and_the_model_see_the_same_sas(name):
    text = fixture(name)
    model = X.parse_states(text)
    counters = XT.parse_xfrm_sa_counters(text)
    assert model, "the fixture holds SAs"
    assert [(c["src"], c["dst"], c["spi_int"], c["mode"], c["dir"]) for c in counters] == [
        (m["src"], m["dst"], m["spi"], m["mode"], m["direction"]) for m in model]
    for c, m in zip(counters, model):
        assert c["offloaded"] == (m["offload"]["type"] != "none")
        assert (c["offload_dev"], c["offload_dir"]) == (m["offload"]["dev"], m["offload"]["dir"])
        assert (c["offload_mode"] or "crypto") == (m["offload"]["type"] if c["offloaded"] else "crypto")
        if c["reqid"] is not None:
            assert c["reqid"] == m["reqid"]
    # the counters never carry a key, the model keeps only what it compares
    dumped = json.dumps(counters)
    for key in re.findall(r"0x([0-9a-fA-F]{32,})", text):
        assert key not in dumped and key.lower() not in dumped


# (mlx5-packet-offload-real.txt also holds `ip x p` output after the SA: a policy read as a state)
@pytest.mark.parametrize("name", [n for n in STATES if n != "xfrm/mlx5-packet-offload-real.txt"])
def test_offload_scans_agree_with_the_model_on_states(name):
    text = fixture(name)
    # (some fixtures are transcripts that also hold policy blocks: those have no SPI)
    model = [m for m in X.parse_states(text) if m["offload"]["type"] != "none" and m["spi"] is not None]
    found = [f for f in XT.offloaded_xfrm(text, "state") if " spi " in f["label"]]
    assert [(f["dev"], f["dir"], f["mode"] or "crypto") for f in found] == [
        (m["offload"]["dev"], m["offload"]["dir"] or m["direction"], m["offload"]["type"]) for m in model]
    assert all(f["label"].endswith(" spi 0x%08x" % m["spi"]) for f, m in zip(found, model))
    assert XT.offload_devices(text) >= {m["offload"]["dev"] for m in model}
    assert TC.xfrm_offload_devices(text) == XT.offload_devices(text)


@pytest.mark.parametrize("name", POLICIES)
def test_offload_scans_agree_with_the_model_on_policies(name):
    text = fixture(name)
    model = [p for p in X.parse_policies(text) if p["offload"]["type"] != "none"]
    found = XT.offloaded_xfrm(text, "policy")
    assert [(f["dev"], f["mode"] or "crypto") for f in found] == [
        (p["offload"]["dev"], p["offload"]["type"]) for p in model]
    assert all(f["label"].endswith(" dir " + p["dir"]) for f, p in zip(found, model))


@pytest.mark.parametrize("line,offload", [
    ("\tcrypto offload parameters: dev eth2 dir out mode packet", {"type": "packet", "dev": "eth2", "dir": "out"}),
    # iproute2 < 6.2 prints no mode: it could only add crypto offload
    ("\tcrypto offload parameters: dev p0 dir in", {"type": "crypto", "dev": "p0", "dir": "in"}),
])
def test_the_model_reads_the_offload_line_through_the_one_pattern(line, offload):
    text = "src 10.0.0.1 dst 10.0.0.2\n\tproto esp spi 0x00001000 reqid 1 mode transport\n" + line + "\n"
    (sa,) = X.parse_states(text)
    assert sa["offload"] == offload
    assert XT.offload_line(line.strip()) == (offload["dev"], offload["dir"], None if "mode" not in line else "packet")


def test_the_protocol_table_is_one():
    assert V.PROTO_NUMBERS is XT.PROTO_NUMBERS and X.PROTO_NUMBERS is XT.PROTO_NUMBERS
    assert V.PORT_PROTOS is XT.PORT_PROTOS and V.PROTO_NAMES is XT.PROTO_NAMES


# ------------------------------------------------------------------------------------ tc

TC_FILTERS = ["tc/netdevsim_eth0_in_hw_skip_sw.json", "tc/netdevsim_eth0_not_in_hw.json",
              "tc/lab_tv0_ingress_push_mirred.json", "tc/lab_tv2_ingress_pop_mirred_stats.json",
              "tc/u32_mirred_bookworm_host.json", "tc/u32_cookie_chain3_host.json",
              "tc/flower_mirred_udp_public_fixture.json", "tc/derived_vlan_pop_push_in_hw.json",
              "devlink/tc_netdevsim_in_hw.json.txt", "devlink/tc_netdevsim_not_in_hw.json.txt",
              "info/tc_j_netdevsim_in_hw.json.txt", "info/tc_j_netdevsim_not_in_hw.json.txt",
              "info/tc_j_u32_host.json.txt"]


def _json_text(name):
    return "".join(line for line in fixture(name).splitlines(True) if not line.startswith("#"))


@pytest.mark.parametrize("name", TC_FILTERS)
def test_tc_views_count_the_same_rules_in_hardware(name):
    text = _json_text(name)
    rules = TC.hw_rules(text)
    assert TC.hw_rules(json.loads(text)) == rules
    in_hw = [r for r in rules if r["in_hw"]]
    assert TC.tc_in_hw(text) == len(in_hw) == len(TC.tc_offloaded(json.loads(text))["in_hw"])
    assert TC.tc_offloaded(json.loads(text))["filters"] == len(rules)
    filters = TC.parse_filters("eth0", text)
    assert sum(1 for f in filters if f["in_hw"]) == len(in_hw)


def test_tc_bad_output():
    assert TC.hw_rules("") == [] and TC.hw_rules({"not": "a list"}) == []
    with pytest.raises(TC.ParseError):
        TC.tc_in_hw("[{")


# ---------------------------------------------------------------------------------- ip link

@pytest.mark.parametrize("name", ["tc/ip_d_link_show_mlx5_switchdev_derived.json", "tc/ip_d_link_show_eth0_virtio_host.json",
                                  "tc/ip_d_link_show_veth_host.json"])
def test_link_parent_is_read_alike_by_tc_and_info(name):
    text = _json_text(name)
    links = json.loads(text)
    assert TC.parse_links(text) == {x["ifname"]: IP.parse_link([x])["parent"] for x in links}


# ---------------------------------------------------------------------------------- devlink

def test_devlink_views_for_info():
    ports = D.parse_ports(_json_text("devlink/port_show_mlx5_vf_DERIVED.json.txt"))
    vf = [p for p in ports if p["flavour"] == "pcivf"]
    assert vf and D.device_of_netdev(ports, vf[0]["netdev"]) == vf[0]["device"]
    assert [p["port"] for p in D.vf_ports(ports, vf[0]["device"])] == [p["port"] for p in vf]
    assert D.parse_dev_handles('{"dev": {"pci/0000:08:00.0": {}}}') == {"pci/0000:08:00.0"}
