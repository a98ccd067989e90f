# -*- coding: utf-8 -*-
"""Pure parse/render/plan of plugins/module_utils/_tc.py, on real tool output (fixtures/tc)."""

from __future__ import annotations

import json

import pytest

from harness import fixture

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _steps, _tc
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import plan
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError

COOKIE = "69706f2d6d6c783501"


def tcfix(name):
    return fixture("tc/" + name)


def push(vid, prio=0, proto="802.1q"):
    return {"vlan": "push", "id": vid, "protocol": proto, "priority": prio}


POP = {"vlan": "pop"}


def redirect(dev):
    return {"mirred": "redirect", "dev": dev}


def rule(dev, prio, protocol, match, actions, hw="none", chain=0):
    return {"dev": dev, "chain": chain, "prio": prio, "protocol": protocol, "match": match,
            "actions": actions, "hw": hw}


# The vendor's RoCE-over-VF example (nvidia-mlnx-en-ipsec-full-offload.txt, step 7).
ROCE_UPLINK = rule("pf0", 10, "802.1q", {"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5},
                   [POP, POP, redirect("pf0vf0_rep")])
ROCE_REP = rule("pf0vf0_rep", 10, "all", {}, [push(5), push(10), redirect("pf0")])


# ------------------------------------------------------------------------------------------ ether types

@pytest.mark.parametrize("value,expected", [
    ("802.1Q", "802.1q"), ("802.1q", "802.1q"), ("0x8100", "802.1q"), (0x8100, "802.1q"), ("33024", "802.1q"),
    ("802.1AD", "802.1ad"), ("0x88a8", "802.1ad"),
    ("ip", "ip"), ("IPv4", "ip"), ("0x0800", "ip"), ("0x800", "ip"),
    ("ipv6", "ipv6"), ("0x86DD", "ipv6"), ("arp", "arp"), ("ALL", "all"), ("0x0003", "all"),
])
def test_ethertype_accepts_names_and_numbers(value, expected):
    assert _tc.ethertype(value) == expected


@pytest.mark.parametrize("value", ["mpls_uc", "0x1234", "", "802.1x", True, "ip; reboot"])
def test_ethertype_refuses_unmodelled(value):
    with pytest.raises(ValueError):
        _tc.ethertype(value)


@pytest.mark.parametrize("dumped,expected", [
    ("802.1Q", "802.1q"), ("802.1ad", "802.1ad"), ("ip", "ip"), ("all", "all"), ("ipv6", "ipv6"),
    ("[2048]", "ip"), ("[4660]", "0x1234"), ("mpls_uc", "mpls_uc"),
])
def test_ethertype_from_dump(dumped, expected):
    assert _tc.ethertype_from_dump(dumped) == expected


# ------------------------------------------------------------------------------------------ validation

def test_validate_vendor_roce_rules():
    raw = [
        {"dev": "pf0", "prio": 10, "protocol": "802.1Q",
         "match": {"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5},
         "actions": [{"vlan": "pop"}, {"vlan": "pop"}, {"mirred": "redirect", "dev": "pf0vf0_rep"}]},
        {"dev": "pf0vf0_rep", "prio": 10, "protocol": "all",
         "actions": [{"vlan": "push", "protocol": "802.1q", "id": 5}, {"vlan": "push", "id": 10, "priority": None},
                     {"mirred": "redirect", "dev": "pf0"}]},
    ]
    got = [_tc.public(r) for r in _tc.validate_config(raw, "replaced")]
    assert got == [ROCE_UPLINK, ROCE_REP]


def test_validate_merged_leaves_unset_fields_open():
    r = _tc.validate_rule("config[0]", {"dev": "pf0", "prio": 3}, "merged")
    assert (r["match"], r["actions"], r["hw"], r["protocol"], r["chain"]) == (None, None, None, "all", 0)


def test_validate_deleted_needs_identity_only():
    r = _tc.validate_rule("config[0]", {"dev": "pf0", "prio": 3, "actions": "ignored"}, "deleted")
    assert _tc.public(r) == {"dev": "pf0", "chain": 0, "prio": 3, "protocol": "all"}


@pytest.mark.parametrize("match,protocol,expected", [
    ({"dst_ip": "10.0.0.1", "ip_proto": "UDP", "dst_port": "4791"}, "ip",
     {"dst_ip": "10.0.0.1", "ip_proto": "udp", "dst_port": 4791}),
    ({"src_ip": "10.0.0.0/24"}, "ipv4", {"src_ip": "10.0.0.0/24"}),
    ({"dst_ip": "2001:db8:0:0::1/128"}, "ipv6", {"dst_ip": "2001:db8::1"}),
    ({"vlan_id": 100, "vlan_ethtype": "ipv4", "src_ip": "10.50.0.1", "ip_proto": "esp"}, "802.1q",
     {"vlan_id": 100, "vlan_ethtype": "ip", "src_ip": "10.50.0.1", "ip_proto": "esp"}),
    ({"vlan_id": 10, "vlan_ethtype": "0x88a8", "cvlan_id": 5, "cvlan_ethtype": "ipv6", "dst_ip": "2001:db8::/64"},
     "802.1ad", {"vlan_id": 10, "vlan_ethtype": "802.1ad", "cvlan_id": 5, "cvlan_ethtype": "ipv6",
                 "dst_ip": "2001:db8::/64"}),
    ({"dst_mac": "E4:2C:0B:08:00:02", "vlan_prio": 0}, "802.1q", {"dst_mac": "e4:2c:0b:08:00:02", "vlan_prio": 0}),
    (None, "all", {}),
])
def test_validate_match_normalises(match, protocol, expected):
    assert _tc.validate_match("m", _tc.ethertype(protocol), match) == expected


@pytest.mark.parametrize("raw,field", [
    ({"dev": "eth0; reboot", "prio": 1, "actions": [{"vlan": "pop"}]}, "config[0].dev"),
    ({"dev": "eth0", "prio": 0, "actions": [{"vlan": "pop"}]}, "config[0].prio"),
    ({"dev": "eth0", "prio": 70000, "actions": [{"vlan": "pop"}]}, "config[0].prio"),
    ({"dev": "eth0", "actions": [{"vlan": "pop"}]}, "config[0].prio"),
    ({"dev": "eth0", "prio": 1, "chain": -1, "actions": [{"vlan": "pop"}]}, "config[0].chain"),
    ({"dev": "eth0", "prio": 1, "protocol": "mpls_uc", "actions": [{"vlan": "pop"}]}, "config[0].protocol"),
    ({"dev": "eth0", "prio": 1, "hw": "both", "actions": [{"vlan": "pop"}]}, "config[0].hw"),
    ({"dev": "eth0", "prio": 1}, "config[0].actions"),
    ({"dev": "eth0", "prio": 1, "actions": []}, "config[0].actions"),
    ({"dev": "eth0", "prio": 1, "match": {"vlan_id": 5}, "actions": [{"vlan": "pop"}]}, "config[0].match.vlan_id"),
    ({"dev": "eth0", "prio": 1, "protocol": "802.1q", "match": {"vlan_id": 4096}, "actions": [{"vlan": "pop"}]},
     "config[0].match.vlan_id"),
    ({"dev": "eth0", "prio": 1, "protocol": "802.1q", "match": {"vlan_prio": 8}, "actions": [{"vlan": "pop"}]},
     "config[0].match.vlan_prio"),
    ({"dev": "eth0", "prio": 1, "protocol": "802.1q", "match": {"cvlan_id": 5}, "actions": [{"vlan": "pop"}]},
     "config[0].match.cvlan_id"),
    ({"dev": "eth0", "prio": 1, "protocol": "802.1q", "match": {"vlan_ethtype": "ip", "cvlan_prio": 1},
      "actions": [{"vlan": "pop"}]}, "config[0].match.cvlan_prio"),
    ({"dev": "eth0", "prio": 1, "protocol": "802.1q", "match": {"vlan_ethtype": "ip\nqdisc del dev eth0 root"},
      "actions": [{"vlan": "pop"}]}, "config[0].match.vlan_ethtype"),
    ({"dev": "eth0", "prio": 1, "protocol": "ip", "match": {"dst_ip": "10.0.0.1/24"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.dst_ip"),
    ({"dev": "eth0", "prio": 1, "protocol": "ip", "match": {"dst_ip": "2001:db8::1"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.dst_ip"),
    ({"dev": "eth0", "prio": 1, "protocol": "arp", "match": {"dst_ip": "10.0.0.1"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.dst_ip"),
    ({"dev": "eth0", "prio": 1, "protocol": "all", "match": {"ip_proto": "udp"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.ip_proto"),
    ({"dev": "eth0", "prio": 1, "protocol": "ipv6", "match": {"ip_proto": "icmp"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.ip_proto"),
    ({"dev": "eth0", "prio": 1, "protocol": "ip", "match": {"ip_proto": "gre"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.ip_proto"),
    ({"dev": "eth0", "prio": 1, "protocol": "ip", "match": {"dst_port": 80}, "actions": [{"vlan": "pop"}]},
     "config[0].match.dst_port"),
    ({"dev": "eth0", "prio": 1, "protocol": "ip", "match": {"ip_proto": "tcp", "src_port": 70000},
      "actions": [{"vlan": "pop"}]}, "config[0].match.src_port"),
    ({"dev": "eth0", "prio": 1, "match": {"dst_mac": "00:11:22:33:44"}, "actions": [{"vlan": "pop"}]},
     "config[0].match.dst_mac"),
    ({"dev": "eth0", "prio": 1, "match": {"color": "red"}, "actions": [{"vlan": "pop"}]}, "config[0].match"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "push"}]}, "config[0].actions[0].id"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "push", "id": 4095}]}, "config[0].actions[0].id"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "push", "id": 5, "priority": 8}]}, "config[0].actions[0].priority"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "push", "id": 5, "protocol": "ip"}]}, "config[0].actions[0].protocol"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "pop", "id": 5}]}, "config[0].actions[0].id"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "swap"}]}, "config[0].actions[0].vlan"),
    ({"dev": "eth0", "prio": 1, "actions": [{"vlan": "pop", "mirred": "redirect", "dev": "x"}]}, "config[0].actions[0]"),
    ({"dev": "eth0", "prio": 1, "actions": [{}]}, "config[0].actions[0]"),
    ({"dev": "eth0", "prio": 1, "actions": [{"mirred": "redirect"}]}, "config[0].actions[0].dev"),
    ({"dev": "eth0", "prio": 1, "actions": [{"mirred": "redirect", "dev": "rep 0"}]}, "config[0].actions[0].dev"),
    ({"dev": "eth0", "prio": 1, "actions": [{"mirred": "steal", "dev": "rep0"}]}, "config[0].actions[0].mirred"),
    ({"dev": "eth0", "prio": 1, "actions": [{"mirred": "redirect", "dev": "rep0"}, {"vlan": "pop"}]},
     "config[0].actions[1]"),
])
def test_validate_refuses_naming_the_field(raw, field):
    with pytest.raises(InputError) as err:
        _tc.validate_config([raw], "replaced")
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ")


def test_validate_refuses_two_rules_in_one_slot():
    raw = [{"dev": "pf0", "prio": 1, "protocol": "ip", "actions": [{"vlan": "pop"}]},
           {"dev": "pf0", "prio": 1, "protocol": "arp", "actions": [{"vlan": "pop"}]}]
    with pytest.raises(InputError) as err:
        _tc.validate_config(raw, "merged")
    assert err.value.field == "config[1]" and "config[0]" in str(err.value)


def test_mirror_may_be_followed_by_more_actions():
    acts = _tc.validate_actions("a", [{"mirred": "mirror", "dev": "m0"}, {"vlan": "pop"}, {"mirred": "redirect", "dev": "r0"}])
    assert acts == [{"mirred": "mirror", "dev": "m0"}, POP, redirect("r0")]


# ------------------------------------------------------------------------------------------ render

@pytest.mark.parametrize("verb,r,handle,cookie,line", [
    ("add", ROCE_UPLINK, 1, _tc.COOKIE,
     "filter add dev pf0 ingress protocol 802.1q chain 0 prio 10 handle 1 flower vlan_id 10 vlan_ethtype 802.1q "
     "cvlan_id 5 action vlan pop cookie 69706f2d6d6c783501 action vlan pop action mirred egress redirect dev pf0vf0_rep"),
    ("add", ROCE_REP, 1, _tc.COOKIE,
     "filter add dev pf0vf0_rep ingress protocol all chain 0 prio 10 handle 1 flower action vlan push id 5 protocol "
     "802.1q priority 0 cookie 69706f2d6d6c783501 action vlan push id 10 protocol 802.1q priority 0 action mirred "
     "egress redirect dev pf0"),
    ("replace", rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(100, 3), redirect("tv2")], hw="skip_hw", chain=2), 7,
     _tc.COOKIE,
     "filter replace dev tv0 ingress protocol ip chain 2 prio 10 handle 7 flower skip_hw src_ip 10.50.0.1 action vlan "
     "push id 100 protocol 802.1q priority 3 cookie 69706f2d6d6c783501 action mirred egress redirect dev tv2"),
    ("add", rule("p0", 4, "ipv6", {"ip_proto": "esp", "dst_ip": "2001:db8::/64"},
                 [{"mirred": "mirror", "dev": "mon0"}, push(7, 1, "802.1ad")], hw="skip_sw"), 1, "69706f2d6d6c7835ff",
     "filter add dev p0 ingress protocol ipv6 chain 0 prio 4 handle 1 flower skip_sw ip_proto 0x32 dst_ip 2001:db8::/64 "
     "action mirred egress mirror dev mon0 cookie 69706f2d6d6c7835ff action vlan push id 7 protocol 802.1ad priority 1"),
    ("add", rule("p0", 5, "802.1q", {"vlan_id": 3, "vlan_prio": 2, "vlan_ethtype": "ip", "dst_mac": "02:00:00:00:00:01",
                                     "src_mac": "02:00:00:00:00:02", "ip_proto": "udp", "src_ip": "10.0.0.0/8",
                                     "dst_ip": "10.1.1.1", "dst_port": 4791, "src_port": 0},
                 [POP]), 1, _tc.COOKIE,
     "filter add dev p0 ingress protocol 802.1q chain 0 prio 5 handle 1 flower vlan_id 3 vlan_prio 2 vlan_ethtype ip "
     "dst_mac 02:00:00:00:00:01 src_mac 02:00:00:00:00:02 ip_proto udp dst_ip 10.1.1.1 src_ip 10.0.0.0/8 dst_port 4791 "
     "src_port 0 action vlan pop cookie 69706f2d6d6c783501"),
])
def test_filter_line(verb, r, handle, cookie, line):
    assert _tc.filter_line(verb, r, handle, cookie) == line


def test_filter_line_refuses_bad_cookie():
    with pytest.raises(ValueError):
        _tc.filter_line("add", ROCE_REP, 1, "zz; reboot")


def test_delete_and_qdisc_lines():
    assert _tc.delete_line(ROCE_UPLINK) == "filter del dev pf0 ingress protocol 802.1q chain 0 prio 10"
    assert _tc.qdisc_line("add", "pf0") == "qdisc add dev pf0 ingress"
    assert _tc.qdisc_line("del", "pf0") == "qdisc del dev pf0 ingress"


def test_rendered_lines_vendor_example():
    assert _tc.rendered_lines([ROCE_UPLINK, ROCE_REP]) == [
        "qdisc add dev pf0 ingress",
        "qdisc add dev pf0vf0_rep ingress",
        _tc.filter_line("add", ROCE_UPLINK),
        _tc.filter_line("add", ROCE_REP),
    ]


def test_rule_text_has_no_cookie_or_handle():
    assert _tc.rule_text(ROCE_UPLINK) == (
        "dev pf0 chain 0 prio 10 protocol 802.1q: flower vlan_id 10 vlan_ethtype 802.1q cvlan_id 5 "
        "action vlan pop action vlan pop action mirred egress redirect dev pf0vf0_rep")


# ------------------------------------------------------------------------------------------ parse

def flower_rules(filters):
    return [f["rule"] for f in filters]


def test_parse_lab_push_mirred_real():
    fs = _tc.parse_filters("tv0", tcfix("lab_tv0_ingress_push_mirred.json"))
    assert flower_rules(fs) == [
        rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(100, 3), redirect("tv2")]),
        rule("tv0", 20, "arp", {}, [push(100, 0), redirect("tv2")]),
    ]
    assert [(f["kind"], f["handle"], f["owned"], f["cookie"], f["offload"], f["extra"]) for f in fs] == [
        ("flower", 1, False, None, "not_in_hw", []), ("flower", 1, False, None, "not_in_hw", [])]


def test_parse_lab_roce_qinq_owned_cookie_repeated_by_iproute2_real():
    # iproute2 6.15 repeats the first action's cookie on the later actions: still our rule, no extras
    link0 = _tc.parse_filters("link0", tcfix("lab_roce_link0_qinq_pop_owned.json"))
    rep = _tc.parse_filters("vf0_rep", tcfix("lab_roce_vf0_rep_qinq_push_owned.json"))
    assert flower_rules(link0) == [
        rule("link0", 1, "802.1q", {"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5}, [POP, POP, redirect("vf0_rep")])]
    assert flower_rules(rep) == [
        rule("vf0_rep", 1, "all", {}, [push(5, 0), push(10, 0), redirect("link0")])]
    assert [(f["owned"], f["cookie"], f["offload"], f["extra"]) for f in link0 + rep] == [
        (True, "69706f2d6d6c783501", "not_in_hw", [])] * 2


def test_parse_later_action_with_another_cookie_is_extra():
    data = json.loads(tcfix("lab_roce_link0_qinq_pop_owned.json"))
    data[1]["options"]["actions"][1]["cookie"] = "0102"
    fs = _tc.parse_filters("link0", json.dumps(data))
    assert fs[0]["owned"] and fs[0]["extra"] == ["action 2 has a cookie"]


def test_parse_lab_pop_mirred_with_stats_real():
    fs = _tc.parse_filters("tv2", tcfix("lab_tv2_ingress_pop_mirred_stats.json"))
    assert flower_rules(fs) == [
        rule("tv2", 10, "802.1q", {"vlan_id": 100, "vlan_ethtype": "ip"}, [POP, redirect("tv0")]),
        rule("tv2", 20, "802.1q", {"vlan_id": 100, "vlan_ethtype": "arp"}, [POP, redirect("tv0")]),
    ]
    assert [f["extra"] for f in fs] == [[], []]
    assert "stats" not in json.dumps([f["raw"] for f in fs])


def test_parse_netdevsim_flags_and_offload_real():
    sw = _tc.parse_filters("eth0", tcfix("netdevsim_eth0_not_in_hw.json"))
    hw = _tc.parse_filters("eth0", tcfix("netdevsim_eth0_in_hw_skip_sw.json"))
    base = {"dst_ip": "192.0.2.1"}
    acts = [push(10), redirect("eth1")]
    assert flower_rules(sw) == [rule("eth0", 2, "ip", base, acts), rule("eth0", 3, "ip", base, acts, hw="skip_hw")]
    assert [(f["offload"], f["in_hw"], f["in_hw_count"]) for f in sw] == [("not_in_hw", False, None)] * 2
    assert flower_rules(hw) == [rule("eth0", 1, "ip", base, acts, hw="skip_sw"),
                                rule("eth0", 2, "ip", {"dst_ip": "192.0.2.2"}, acts)]
    assert [(f["offload"], f["in_hw"], f["in_hw_count"]) for f in hw] == [("in_hw", True, 1)] * 2


def test_parse_public_flower_fixture_with_parent_and_ports():
    fs = _tc.parse_filters("wg0", tcfix("flower_mirred_udp_public_fixture.json"))
    assert flower_rules(fs) == [rule("wg0", 10, "ip", {"ip_proto": "udp", "src_ip": "198.51.100.2", "src_port": 51820},
                                     [redirect("ifb-cgw")])]
    assert fs[0]["handle"] == 7 and fs[0]["extra"] == []


def test_parse_derived_pop_push_in_hw():
    fs = _tc.parse_filters("pf0vf0_rep", tcfix("derived_vlan_pop_push_in_hw.json"))
    assert flower_rules(fs) == [
        rule("pf0vf0_rep", 1, "802.1q", {"vlan_id": 100, "vlan_ethtype": "ip"}, [POP, redirect("p0")], hw="skip_sw"),
        rule("pf0vf0_rep", 2, "all", {}, [push(100), redirect("pf0vf0")], hw="skip_sw"),
    ]
    assert [f["offload"] for f in fs] == ["in_hw", "in_hw"]


def test_parse_u32_real_is_never_owned():
    fs = _tc.parse_filters("veth-rf1", tcfix("u32_mirred_bookworm_host.json"))
    assert [(f["kind"], f["prio"], f["protocol"], f["handle"], f["owned"], f["rule"]) for f in fs] == [
        ("u32", 10, "all", "800:", False, None), ("u32", 10, "all", "800::800", False, None)]


def test_parse_u32_with_collection_cookie_real_is_still_not_owned():
    # real host capture: the cookie JSON shape, chain 3; ownership also needs kind flower
    fs = _tc.parse_filters("r0", tcfix("u32_cookie_chain3_host.json"))
    assert [(f["chain"], f["prio"], f["protocol"], f["cookie"]) for f in fs] == [
        (0, 10, "all", None), (0, 10, "all", None), (3, 5, "802.1q", None), (3, 5, "802.1q", COOKIE)]
    assert not any(f["owned"] for f in fs)


def test_parse_owned_rules_derived():
    fs = _tc.parse_filters("tv0", tcfix("owned_lab_tv0_derived.json"))
    assert [(f["owned"], f["cookie"]) for f in fs] == [(True, COOKIE), (True, COOKIE)]
    roce = _tc.parse_filters("pf0", tcfix("owned_roce_uplink_derived.json"))
    assert flower_rules(roce) == [ROCE_UPLINK]
    assert (roce[0]["owned"], roce[0]["offload"], roce[0]["extra"]) == (True, "in_hw", [])


@pytest.mark.parametrize("keys,protocol,match,extra", [
    ({"vlan_id": 10, "vlan_ethtype": "802.1Q", "cvlan_id": 5, "cvlan_ethtype": "ip", "eth_type": "ipv4"}, "802.1Q",
     {"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5, "cvlan_ethtype": "ip"}, []),
    ({"eth_type": "ipv6", "dst_ip": "2001:db8::1", "ip_proto": "esp"}, "ipv6", {"dst_ip": "2001:db8::1", "ip_proto": "esp"}, []),
    ({"eth_type": "ipv4", "ip_proto": "32"}, "ip", {"ip_proto": "esp"}, []),          # iproute2 6.1 prints "%02x"
    ({"eth_type": "ipv4", "src_ip": "10.0.0.0/24"}, "ip", {"src_ip": "10.0.0.0/24"}, []),
    ({"eth_type": "ipv4", "src_ip": "10.0.0.7/24"}, "ip", {"src_ip": "10.0.0.7/24"}, []),  # host bits kept: never equal
    ({"eth_type": "ipv4", "ip_flags": "nofrag"}, "ip", {}, ["key ip_flags"]),
    ({"eth_type": "8100"}, "ip", {}, ["key eth_type 8100"]),
    ({"dst_mac": "00:04:9f:63:35:eb/ff:ff:ff:00:00:00"}, "all", {"dst_mac": "00:04:9f:63:35:eb/ff:ff:ff:00:00:00"},
     ["key dst_mac 00:04:9f:63:35:eb/ff:ff:ff:00:00:00 (masked)"]),
    ({"eth_type": "ipv4", "ip_proto": "tcp", "dst_port": 80, "dst_port_mask": "0xff00"}, "ip",
     {"ip_proto": "tcp", "dst_port": 80}, ["key dst_port_mask"]),
])
def test_parse_keys(keys, protocol, match, extra):
    text = json.dumps([{"protocol": protocol, "pref": 1, "kind": "flower", "chain": 0, "options": {
        "handle": 1, "keys": keys, "actions": [{"order": 1, "kind": "vlan", "vlan_action": "pop",
                                                "control_action": {"type": "pipe"}, "cookie": COOKIE}]}}])
    f = _tc.parse_filters("d", text)[0]
    assert (f["rule"]["match"], f["extra"]) == (match, extra)


@pytest.mark.parametrize("action,expect,extra", [
    ({"kind": "vlan", "vlan_action": "modify", "id": 3}, [], ["action 1 vlan modify"]),
    ({"kind": "vlan", "vlan_action": "pop", "control_action": {"type": "reclassify"}}, [POP], ["action 1 control reclassify"]),
    ({"kind": "mirred", "mirred_action": "redirect", "direction": "ingress", "to_dev": "x",
      "control_action": {"type": "stolen"}}, [redirect("x")], ["action 1 mirred direction ingress"]),
    ({"kind": "mirred", "mirred_action": "mirror", "direction": "egress", "to_dev": "x", "control_action": {"type": "pipe"}},
     [{"mirred": "mirror", "dev": "x"}], []),
    ({"kind": "gact", "control_action": {"type": "drop"}}, [], ["action 1 kind gact"]),
    ({"kind": "vlan", "vlan_action": "push", "id": 9, "protocol": "802.1ad", "priority": 5}, [push(9, 5, "802.1ad")], []),
])
def test_parse_actions(action, expect, extra):
    action = dict(action, order=1, cookie=COOKIE)
    text = json.dumps([{"protocol": "all", "pref": 1, "kind": "flower", "chain": 0,
                        "options": {"handle": 1, "keys": {}, "actions": [action]}}])
    f = _tc.parse_filters("d", text)[0]
    assert (f["rule"]["actions"], f["extra"]) == (expect, extra)


def test_parse_cookie_on_later_action_is_unmodelled():
    text = json.dumps([{"protocol": "all", "pref": 1, "kind": "flower", "chain": 0, "options": {"handle": 1, "keys": {}, "actions": [
        {"order": 1, "kind": "vlan", "vlan_action": "pop", "cookie": COOKIE},
        {"order": 2, "kind": "vlan", "vlan_action": "pop", "cookie": "01"}]}}])
    assert _tc.parse_filters("d", text)[0]["extra"] == ["action 2 has a cookie"]


@pytest.mark.parametrize("text", [
    # older iproute2 printed act_police like this inside -j output (see the samples' note)
    '[{"protocol":"all","pref":1,"kind":"flower","chain":0,"options":{"actions":[{"order":1 police 0x1 rate 1Mbit burst 10Kb }]}}]',
    '{"not": "a list"}',
    "Error: something\n",
])
def test_invalid_json_is_a_parse_error(text):
    with pytest.raises(_tc.ParseError):
        _tc.parse_filters("d", text)


def test_empty_output_is_no_filters():
    assert _tc.parse_filters("d", "") == [] and _tc.parse_filters("d", "[]\n") == []


def test_parse_qdiscs_and_links_real():
    assert _tc.parse_qdiscs(tcfix("qdisc_show_ingress_clsact_host.json")) == {"r0": "ingress", "r1": "clsact"}
    assert _tc.parse_links(tcfix("ip_link_show_host.json")) == {"lo": None, "r0": None, "r1": None}
    assert _tc.parse_links(tcfix("ip_d_link_show_veth_host.json")) == {"lo": None, "a0": None, "a1": None}
    assert _tc.parse_links(tcfix("ip_d_link_show_eth0_virtio_host.json")) == {"eth0": "virtio/virtio2"}


def test_parse_links_mlx5_switchdev_derived():
    assert _tc.parse_links(tcfix("ip_d_link_show_mlx5_switchdev_derived.json")) == {
        "p0": "pci/0000:08:00.0", "pf0vf0": "pci/0000:08:00.0", "enp8s0f0v0": "pci/0000:08:00.2"}


@pytest.mark.parametrize("dev,offload_devs,ready", [
    ("p0", {"p0"}, True),               # IPsec offloaded on the device itself
    ("pf0vf0", {"p0"}, True),           # VF representor: same PCI function as the uplink
    ("enp8s0f0v0", {"p0"}, False),      # the VF is its own function
    ("p0", {"enp8s0f0v0"}, False),
    ("p0", set(), False),
    ("lo", {"eth9"}, False),            # no parent device known: only the device itself counts
    ("eth9", {"eth9"}, True),
])
def test_ipsec_ready(dev, offload_devs, ready):
    parents = _tc.parse_links(tcfix("ip_d_link_show_mlx5_switchdev_derived.json"))
    parents.update({"lo": None, "eth9": None})
    assert _tc.ipsec_ready(dev, offload_devs, parents) is ready


@pytest.mark.parametrize("name,devs", [
    ("xfrm_state_mlx5_packet_real.txt", {"eth2"}),
    ("xfrm_state_netdevsim_crypto.txt", {"eth0"}),
])
def test_xfrm_offload_devices_real(name, devs):
    text = tcfix(name)
    assert _tc.xfrm_offload_devices(text) == devs
    software_only = "".join(line for line in text.splitlines(True) if "offload" not in line)
    assert _tc.xfrm_offload_devices(software_only) == set()


def test_xfrm_offload_devices_old_iproute2_line():
    # iproute2 4.12..6.1 print no "mode"
    assert _tc.xfrm_offload_devices("\tcrypto offload parameters: dev p0 dir out\n") == {"p0"}


def test_fingerprint_ignores_counters_but_not_content():
    text = tcfix("lab_tv2_ingress_pop_mirred_stats.json")
    data = json.loads(text)
    for o in data:
        for a in (o.get("options") or {}).get("actions", []):
            a["stats"]["packets"] += 5
            a["index"] += 10
            a["installed"] = 99
    same = _tc.fingerprint(_tc.parse_filters("tv2", json.dumps(data)))
    assert same == _tc.fingerprint(_tc.parse_filters("tv2", text))
    data[1]["options"]["actions"][1]["to_dev"] = "other"
    assert _tc.fingerprint(_tc.parse_filters("tv2", json.dumps(data))) != same


# ------------------------------------------------------------------------------------------ plan

KIND = _tc.FlowerKind()


def desired(r, field="config[0]"):
    d = dict(r)
    d["_field"] = field
    return d


def current_from(dev, name):
    return _tc.group(_tc.parse_filters(dev, tcfix(name)))


def test_group_one_object_per_prio():
    objs = current_from("veth-rf1", "u32_mirred_bookworm_host.json")
    assert [(o["dev"], o["chain"], o["prio"], o["protocol"], o["kind"], len(o["filters"])) for o in objs] == [
        ("veth-rf1", 0, 10, "all", "u32", 2)]
    assert not KIND.owned(objs[0]) and KIND.sole(objs[0]) is None


def test_plan_owned_and_same_is_unchanged():
    cur = current_from("pf0", "owned_roce_uplink_derived.json")
    p = plan(KIND, "merged", [desired(ROCE_UPLINK)], cur)
    assert (p.add, p.replace, p.delete, p.foreign, len(p.unchanged)) == ([], [], [], [], 1)


def test_plan_identical_foreign_rule_is_a_collision_not_unchanged():
    cur = current_from("tv0", "lab_tv0_ingress_push_mirred.json")
    want = rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(100, 3), redirect("tv2")])
    p = plan(KIND, "merged", [desired(want)], cur)
    assert len(p.foreign) == 1 and not p.changed


def test_plan_owned_changed_is_replace_and_merge_keeps_unset_fields():
    cur = current_from("tv0", "owned_lab_tv0_derived.json")
    d = desired({"dev": "tv0", "chain": 0, "prio": 10, "protocol": "ip", "match": None, "actions": None, "hw": "skip_hw"})
    p = plan(KIND, "merged", [d], cur)
    assert len(p.replace) == 1
    assert _tc.public(p.replace[0][1]) == rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(100, 3), redirect("tv2")],
                                               hw="skip_hw")


def test_plan_overridden_deletes_other_owned_only():
    cur = current_from("tv0", "owned_lab_tv0_derived.json") + current_from("veth-rf1", "u32_mirred_bookworm_host.json")
    keep = rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(100, 3), redirect("tv2")])
    p = plan(KIND, "overridden", [desired(keep)], cur)
    assert [KIND.key(c) for c in p.delete] == [("tv0", 0, 20, "arp")]
    assert len(p.unchanged) == 1


def test_slot_conflicts():
    cur = current_from("veth-rf1", "u32_mirred_bookworm_host.json") + current_from("tv0", "owned_lab_tv0_derived.json")
    d1 = desired(rule("veth-rf1", 10, "ip", {}, [POP]))       # foreign u32 with protocol all at prio 10
    d2 = desired(rule("tv0", 20, "ip", {}, [POP]), "config[1]")  # owned arp rule at prio 20
    d3 = desired(rule("tv0", 30, "ip", {}, [POP]), "config[2]")  # free
    p = plan(KIND, "merged", [d1, d2, d3], cur)
    got = _tc.slot_conflicts(KIND, p, p.add, cur)
    assert [(g[0]["_field"], g[1]["kind"], g[1]["protocol"]) for g in got] == [
        ("config[0]", "u32", "all"), ("config[1]", "flower", "arp")]
    assert "foreign u32" in got[0][2] and "state=overridden" in got[1][2]
    # overridden deletes the owned arp rule first: no conflict left for it
    p = plan(KIND, "overridden", [d2], current_from("tv0", "owned_lab_tv0_derived.json"))
    assert _tc.slot_conflicts(KIND, p, p.add, current_from("tv0", "owned_lab_tv0_derived.json")) == []


def test_restorable():
    owned = current_from("tv0", "owned_lab_tv0_derived.json")[0]
    assert _tc.restorable(owned) is None
    odd = json.loads(tcfix("owned_lab_tv0_derived.json"))
    odd[1]["options"]["keys"]["ip_tos"] = "0x10"
    assert "ip_tos" in _tc.restorable(_tc.group(_tc.parse_filters("tv0", json.dumps(odd)))[0])
    two = _tc.group(_tc.parse_filters("tv0", json.dumps([odd[1], odd[1]])))[0]
    assert "2 filters" in _tc.restorable(two)


def test_build_batch_order_and_undo():
    cur = current_from("tv0", "owned_lab_tv0_derived.json")
    new = desired(rule("tv1", 5, "802.1q", {"vlan_id": 7}, [POP, redirect("tv0")]), "config[1]")
    chg = desired(rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(101, 3), redirect("tv2")]))
    p = plan(KIND, "overridden", [chg, new], cur)
    lines, undo, owners = _tc.build_batch(KIND, p, {"tv0": "ingress"}, remove_qdisc_devs=["tvx"])
    old10 = rule("tv0", 10, "ip", {"src_ip": "10.50.0.1"}, [push(100, 3), redirect("tv2")])
    old20 = rule("tv0", 20, "arp", {}, [push(100, 0), redirect("tv2")])
    assert lines == [
        "qdisc add dev tv1 ingress",
        "filter del dev tv0 ingress protocol arp chain 0 prio 20",
        _tc.filter_line("replace", chg, 1),
        _tc.filter_line("add", new, 1),
        "qdisc del dev tvx ingress",
    ]
    assert undo == [
        "qdisc del dev tv1 ingress",
        "filter add dev tv0 ingress protocol arp chain 0 prio 20 handle 1 flower action vlan push id 100 protocol 802.1q "
        "priority 0 cookie 69706f2d6d6c783501 action mirred egress redirect dev tv2",
        _tc.filter_line("replace", old10, 1, COOKIE),
        "filter del dev tv1 ingress protocol 802.1q chain 0 prio 5",
        "qdisc add dev tvx ingress",
    ]
    assert _tc.public(owners[1]["filters"][0]["rule"]) == old20 and owners[3] is new
    assert _steps.undo_prefix(undo, 3) == [undo[2], undo[1], undo[0]]
    assert _steps.undo_prefix(undo, 0) == []


def test_build_batch_no_qdisc_when_clsact_present():
    d = desired(rule("r1", 5, "all", {}, [POP]))
    p = plan(KIND, "merged", [d], [])
    lines = _tc.build_batch(KIND, p, {"r1": "clsact"})[0]
    assert lines == [_tc.filter_line("add", d)]


# ------------------------------------------------------------------------------------------ messages

def test_batch_message_drops_boilerplate():
    err = "Error: TC classifier not found.\nWe have an error talking to the kernel\nCommand failed -:2\n"
    assert _tc.batch_message(err) == "Error: TC classifier not found."
    assert _tc.batch_message("Command failed -:1\n") == "no message"


@pytest.mark.parametrize("text,needle", [
    ("Error: TC classifier not found.", "flower classifier"),
    ("Error: Failed to load TC action module.", "act_vlan"),
    ("Error: netdevsim: only offload of BPF classifiers supported.", "hw-tc-offload"),
    ("RTNETLINK answers: Device or resource busy", "IPsec"),  # falls back to the runner's table
])
def test_hints(text, needle):
    assert needle in _tc.hint_for(text)
