# -*- coding: utf-8 -*-
"""Table-driven tests for _ethtool: parsers on real ethtool output, client on a FakeHost."""
from __future__ import annotations

import pytest
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _ethtool
from harness import FakeHost, fixture, run_module


def sample(name):
    """A fixture from fixtures/info without its leading '# source' comment lines."""
    lines = fixture("info/" + name).splitlines(True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


CX7_COUNTERS = {
    "ipsec_rx_pkts": 38, "ipsec_rx_bytes": 6004, "ipsec_rx_drop_pkts": 0, "ipsec_rx_drop_bytes": 0,
    "ipsec_rx_drop_mismatch_sa_sel": 0, "ipsec_tx_pkts": 46, "ipsec_tx_bytes": 7084,
    "ipsec_tx_drop_pkts": 0, "ipsec_tx_drop_bytes": 0, "ipsec_rx_drop_sp_alloc": 0,
    "ipsec_rx_drop_sadb_miss": 0, "ipsec_tx_drop_bundle": 0, "ipsec_tx_drop_no_state": 0,
    "ipsec_tx_drop_not_ip": 0, "ipsec_tx_drop_trailer": 0,
}


@pytest.mark.parametrize("name,prefix,expected", [
    ("ethtool_S_ipsec_cx7.txt", "ipsec_", CX7_COUNTERS),
    # a real NIC without IPsec: plenty of counters, none ipsec_
    ("ethtool_S_virtio_host.txt", "ipsec_", {}),
])
def test_parse_stats_prefix(name, prefix, expected):
    assert _ethtool.parse_stats(sample(name), prefix) == expected


def test_parse_stats_all_counters_and_header_skipped():
    stats = _ethtool.parse_stats(sample("ethtool_S_virtio_host.txt"), prefix=None)
    assert "NIC statistics" not in stats
    assert stats["rx_drops"] == 0
    assert stats["rx_kicks"] > 0
    assert len(stats) == 20  # the capture: header + 20 counter lines


@pytest.mark.parametrize("text,expected", [
    # names are not hard-coded: an OFED-style or FPGA-era counter is picked up too
    ("NIC statistics:\n     ipsec_full_rx_pkts: 7\n     rx_packets: 9\n", {"ipsec_full_rx_pkts": 7}),
    ("     ipsec_dec_in_packets: 3\n     ipsec_add_sa_success: 2\n",
     {"ipsec_dec_in_packets": 3, "ipsec_add_sa_success": 2}),
    ("ipsec-gw:$ ethtool -S p1 | grep ipsec\n", {}),
    ("", {}),
])
def test_parse_stats_table(text, expected):
    assert _ethtool.parse_stats(text) == expected


def test_parse_features_netdevsim_esp():
    feats = _ethtool.parse_features(sample("ethtool_k_netdevsim_esp.txt"))
    assert feats == {
        "tx-esp-segmentation": {"enabled": True, "fixed": True, "requested": None},
        "hw-tc-offload": {"enabled": False, "fixed": False, "requested": None},
        "esp-hw-offload": {"enabled": True, "fixed": True, "requested": None},
        "esp-tx-csum-hw-offload": {"enabled": True, "fixed": True, "requested": None},
    }
    assert _ethtool.esp_features(feats) == {
        "esp_hw_offload": {"enabled": True, "fixed": True},
        "esp_tx_csum_hw_offload": {"enabled": True, "fixed": True},
        "tx_esp_segmentation": {"enabled": True, "fixed": True},
        "hw_tc_offload": {"enabled": False, "fixed": False},
    }


def test_parse_features_full_host_output():
    feats = _ethtool.parse_features(sample("ethtool_k_lo_host.txt"))
    assert "Features for lo" not in feats
    # indented sub-features are parsed too
    assert feats["tx-checksum-ip-generic"] == {"enabled": True, "fixed": True, "requested": None}
    assert feats["tx-checksumming"] == {"enabled": True, "fixed": False, "requested": None}
    assert _ethtool.esp_features(feats) == {
        "esp_hw_offload": {"enabled": False, "fixed": True},
        "esp_tx_csum_hw_offload": {"enabled": False, "fixed": True},
        "tx_esp_segmentation": {"enabled": False, "fixed": True},
        "hw_tc_offload": {"enabled": False, "fixed": True},
    }


@pytest.mark.parametrize("line,expected", [
    ("esp-hw-offload: off [requested on]", {"enabled": False, "fixed": False, "requested": True}),
    ("esp-hw-offload: on [requested off]", {"enabled": True, "fixed": False, "requested": False}),
    ("esp-hw-offload: on", {"enabled": True, "fixed": False, "requested": None}),
])
def test_parse_features_annotations(line, expected):
    assert _ethtool.parse_features(line) == {"esp-hw-offload": expected}


def test_esp_features_missing_is_unknown_not_off():
    # an old kernel that does not list esp-* features at all
    assert _ethtool.esp_features({"hw-tc-offload": {"enabled": True, "fixed": False, "requested": None}}) == {
        "esp_hw_offload": None, "esp_tx_csum_hw_offload": None, "tx_esp_segmentation": None,
        "hw_tc_offload": {"enabled": True, "fixed": False},
    }


@pytest.mark.parametrize("name,expected", [
    ("ethtool_i_netdevsim.txt", {
        "driver": "netdevsim", "version": "6.12.117+deb13-amd64", "firmware_version": "10.20.30",
        "expansion_rom_version": "", "bus_info": "netdevsim1", "supports_statistics": "no",
        "supports_test": "no", "supports_eeprom_access": "no", "supports_register_dump": "no",
        "supports_priv_flags": "no"}),
    ("ethtool_i_virtio_host.txt", {
        "driver": "virtio_net", "version": "1.0.0", "firmware_version": "", "expansion_rom_version": "",
        "bus_info": "0000:00:03.0", "supports_statistics": "yes", "supports_test": "no",
        "supports_eeprom_access": "no", "supports_register_dump": "no", "supports_priv_flags": "no"}),
])
def test_parse_driver_info(name, expected):
    assert _ethtool.parse_driver_info(sample(name)) == expected


@pytest.mark.parametrize("msg,kind", [
    # real messages seen on the dev host (ethtool 6.1)
    ("Cannot get driver information: Operation not supported", "unsupported"),
    ("no stats available", "unsupported"),
    ("Cannot get driver information: No such device", "no_device"),
    ("netlink error: no device matches name (offset 24)\nnetlink error: No such device", "no_device"),
    ("Cannot get stats strings information: Permission denied", "error"),
])
def test_classify_error(msg, kind):
    assert _ethtool.classify_error(msg) == kind


def _client_main(dev, ns=None):
    def main():
        module = AnsibleModule(argument_spec={})
        et = _ethtool.Ethtool(module, namespace=ns)
        module.exit_json(info=list(et.driver_info(dev)), feats=list(et.features(dev)),
                         stats=list(et.ipsec_counters(dev)))
    return main


def test_client_commands_and_results():
    host = FakeHost([
        (("ethtool", "-i", "p0"), (0, sample("ethtool_i_netdevsim.txt"), "")),
        (("ethtool", "-k", "p0"), (0, sample("ethtool_k_netdevsim_esp.txt"), "")),
        (("ethtool", "-S", "p0"), (0, "NIC statistics:\n" + sample("ethtool_S_ipsec_cx7.txt"), "")),
    ])
    res, failed = run_module(_client_main("p0"), {}, host)
    assert not failed
    assert host.commands() == [["ethtool", "-i", "p0"], ["ethtool", "-k", "p0"], ["ethtool", "-S", "p0"]]
    assert res["info"][0]["driver"] == "netdevsim" and res["info"][1] is None
    assert res["feats"][0]["esp-hw-offload"]["enabled"] is True
    assert res["stats"] == [CX7_COUNTERS, None]


def test_client_unsupported_is_not_a_failure():
    host = FakeHost([
        (("ethtool", "-i"), (71, "", "Cannot get driver information: Operation not supported\n")),
        (("ethtool", "-k"), (0, sample("ethtool_k_lo_host.txt"), "")),
        (("ethtool", "-S"), (94, "", "no stats available\n")),
    ])
    res, failed = run_module(_client_main("lo"), {}, host)
    assert not failed
    assert res["info"] == [None, "unsupported: Cannot get driver information: Operation not supported"]
    assert res["stats"] == [None, "unsupported: no stats available"]


def test_client_namespace_wraps_in_ip_netns_exec():
    host = FakeHost([(("ip", "netns", "exec", "ns0"), (0, "", ""))])
    res, failed = run_module(_client_main("vf0", ns="ns0"), {}, host)
    assert not failed
    assert host.commands()[0] == ["ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "-i", "vf0"]
    assert res["stats"] == [{}, None]


def test_client_without_ethtool_runs_nothing():
    host = FakeHost([])
    res, failed = run_module(_client_main("p0"), {}, host, bins=["ip"])
    assert not failed
    assert host.calls == []
    assert res["info"] == [None, "absent: ethtool is not installed"]
