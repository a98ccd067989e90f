# -*- coding: utf-8 -*-
"""ipsec_verify: the verify role's verdict per host and its table (one row per SA per host, a summary
row per host, the NIC's ipsec_* counters of every host that has them)."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_verify import FilterModule, ipsec_verify

SA12 = "0x51c00001 192.168.100.1 -> 192.168.100.2 (no offload)"
SA21 = "0x51c00002 192.168.100.2 -> 192.168.100.1 (no offload)"
NIC = {"ipsec_rx_pkts": 0, "ipsec_tx_pkts": 3, "ipsec_rx_drop_pkts": 0}
NIC_AFTER = {"ipsec_rx_pkts": 10, "ipsec_tx_pkts": 13, "ipsec_rx_drop_pkts": 0}


def report(host="lab1", rows=None, nic=None, **kw):
    rep = {"host": host, "namespace": "", "owned_range": "0x51c00000-0x51c0ffff", "method": "ping", "need": 10,
           "traffic": "ping 192.168.100.2 (verify_rdma=off): 10 packets transmitted, 10 received", "traffic_ok": True,
           "roce_total": -1, "nic": nic or {},
           "rows": [{"sa": SA12, "before": 4, "after": 14, "delta": 10},
                    {"sa": SA21, "before": 4, "after": 15, "delta": 11}] if rows is None else rows}
    rep.update(kw)
    return rep


def test_registered():
    assert FilterModule().filters()["ipsec_verify"] is ipsec_verify


def test_pass_and_table_one_row_per_sa_per_host_with_nic_counters_of_every_host():
    nic = {"eni1np1": {"before": NIC, "after": NIC_AFTER}}
    out = ipsec_verify([report("lab1", nic=nic), report("lab2", nic=nic)])
    assert out["hosts"] == {"lab1": {"pass": True, "problems": []}, "lab2": {"pass": True, "problems": []}}
    lines = out["lines"]
    assert lines[0].split() == ["host", "SA", "/", "NIC", "counter", "before", "after", "delta", "need", "method", "pass"]
    # per host: 2 SA rows, the summary, 3 NIC counter rows
    assert len(lines) == 1 + 2 * (2 + 1 + 3)
    for host in ("lab1", "lab2"):
        mine = [ln for ln in lines if ln.startswith(host + " ")]
        assert len(mine) == 6
        assert mine[0].split()[-6:] == ["4", "14", "10", "10", "ping", "PASS"]
        assert SA12 in mine[0] and SA21 in mine[1]
        assert mine[2].endswith("SAs counted 2, packets counted 21: PASS") and "10 received" in mine[2]
        assert mine[3].split() == [host, "NIC", "eni1np1", "ipsec_rx_drop_pkts", "0", "0", "0"]
        assert mine[4].split() == [host, "NIC", "eni1np1", "ipsec_rx_pkts", "0", "10", "10"]
    # columns line up: every SA row has its numbers at the same offsets as the header
    col = lines[0].index("before")
    assert all(ln[col:col + 6].strip().isdigit() for ln in lines if SA12 in ln)
    assert not any(ln.startswith(("[", '"')) or '"' in ln for ln in lines)


def test_host_without_nic_counters_has_no_nic_rows():
    lines = ipsec_verify([report("lab1", nic={"link0": {"before": {}, "after": {}}}), report("lab2")])["lines"]
    assert not any(" NIC " in ln for ln in lines[1:])
    # an empty counter dict is "no NIC counters", not a row


def test_no_owned_sas_fails_with_its_own_message():
    out = ipsec_verify(report("lab1", rows=[], namespace="ns0"))
    verdict = out["hosts"]["lab1"]
    assert verdict["pass"] is False
    assert verdict["problems"] == ["no SAs of this collection to count on lab1 (owned reqid range 0x51c00000-0x51c0ffff "
                                   "in namespace ns0): nothing to verify; run site.yml first"]
    assert out["lines"][-1].endswith("SAs counted 0, packets counted 0: FAIL")


def test_sa_short_of_need_fails_naming_it():
    rows = [{"sa": SA12, "before": 0, "after": 10, "delta": 10}, {"sa": SA21, "before": 0, "after": 3, "delta": 3}]
    out = ipsec_verify(report(rows=rows))
    assert out["hosts"]["lab1"] == {"pass": False, "problems": ["SA %s counted 3 new packets, need >= 10" % SA21]}
    assert out["lines"][1].endswith("PASS") and out["lines"][2].endswith("FAIL")


def test_traffic_failed_fails_every_row():
    out = ipsec_verify(report(traffic_ok=False, traffic="ping 192.168.100.2: 10 packets transmitted, 0 received"))
    assert out["hosts"]["lab1"]["pass"] is False
    assert "did not get through (ping 192.168.100.2: 10 packets transmitted, 0 received)" in out["hosts"]["lab1"]["problems"][0]
    assert all(ln.endswith("FAIL") for ln in out["lines"][1:])


@pytest.mark.parametrize("value, ok", [("False", False), ("True", True), ("false", False), (False, False), (True, True)])
def test_strings_as_ansible_core_216_templates_them(value, ok):
    # ansible-core 2.16 (no native types) hands set_fact values over as strings
    rep = report(traffic_ok=value, need="10", roce_total="-1",
                 rows=[{"sa": SA12, "before": "4", "after": "14", "delta": "10"}])
    assert ipsec_verify([rep])["hosts"]["lab1"]["pass"] is ok


def test_roce_packets_above_sa_packets_fail():
    out = ipsec_verify(report(method="ibv_rc_pingpong", need=10, roce_total=400))
    assert out["hosts"]["lab1"]["pass"] is False
    assert "fewer than the 400 RoCE packets" in out["hosts"]["lab1"]["problems"][0]
    assert "(>= RoCE packets 400)" in out["lines"][3]
    ok = ipsec_verify(report(method="ibv_rc_pingpong", need=10, roce_total=21))
    assert ok["hosts"]["lab1"]["pass"] is True
    assert any(ln.split()[-2:] == ["ibv_rc_pingpong", "PASS"] for ln in ok["lines"])


def test_ike_row_with_one_kernel_sa_missing_fails():
    rows = [{"sa": "IKE lab1-lab2 0xc1/0xc2 reqid 1 (no offload)", "before": 0, "after": 7, "delta": -1}]
    assert ipsec_verify(report(rows=rows))["hosts"]["lab1"]["pass"] is False


def test_nic_counter_new_after_the_run_shows_no_delta():
    nic = {"p0": {"before": {}, "after": {"ipsec_tx_pkts": 5}}}
    line = [ln for ln in ipsec_verify(report(nic=nic))["lines"][1:] if " NIC " in ln][0]
    assert line.split() == ["lab1", "NIC", "p0", "ipsec_tx_pkts", "-", "5", "-"]


@pytest.mark.parametrize("bad", ["text", [1], [report(rows=[{"sa": "x", "before": 0, "after": 1, "delta": "many"}])]])
def test_bad_input_is_a_filter_error(bad):
    with pytest.raises(AnsibleFilterError):
        ipsec_verify(bad)
