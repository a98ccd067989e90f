# -*- coding: utf-8 -*-
"""Pair derivation: exact objects, determinism, mirror property, uniqueness, stability, bad input."""

from __future__ import annotations

import copy
import hashlib
import random

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import FilterModule, ipsec_pairs
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

K12 = "0x" + "12" * 20          # AES-128 key||salt, lab1 -> lab2
K21 = "0x" + "21" * 20          # lab2 -> lab1
K256 = "0x" + "ab" * 36


def lab(**extra):
    """The lab pair: lab1/lab2 on link0, offload none, keys given by hand (as from vault)."""
    hv = {
        "lab1": {"ipsec_local_ip": "192.168.100.1", "ipsec_peers": ["lab2"], "ipsec_offload": "none",
                 "ipsec_key_bits": 128, "ipsec_overrides": {"lab2": {"key": K12}}},
        "lab2": {"ipsec_local_ip": "192.168.100.2", "ipsec_peers": ["lab1"], "ipsec_offload": "none",
                 "ipsec_key_bits": 128, "ipsec_overrides": {"lab1": {"key": K21}}},
    }
    for host, vs in extra.items():
        hv[host].update(vs)
    return hv


def trio(**extra):
    """lab1, lab2, lab3 as a mesh (no keys needed: bad-input cases fail before keys)."""
    hv = {h: {"ipsec_local_ip": "192.168.100.%d" % i, "ipsec_offload": "none", "ipsec_meshes": ["trio"]}
          for i, h in enumerate(("lab1", "lab2", "lab3"), 1)}
    for host, vs in extra.items():
        hv[host].update(vs)
    return hv, {"all": list(hv), "trio": list(hv)}


def mesh(n, offload="none", prefix="h", **common):
    names = ["%s%02d" % (prefix, i) for i in range(1, n + 1)]
    hv = {name: dict({"ipsec_local_ip": "10.1.%d.%d" % (i // 200, i % 200 + 1), "ipsec_offload": offload,
                      "ipsec_meshes": ["dc"]}, **common)
          for i, name in enumerate(names)}
    return hv, {"all": names, "dc": list(names)}


def _test_key(i, bits):
    return hashlib.sha256(b"test key %d" % i).hexdigest()[:bits // 4] + "%08x" % i


def store_for(result_pairs, keygen=None):
    """A parsed key store with a distinct deterministic key per directed pair."""
    out = {}
    for i, p in enumerate(result_pairs):
        key = (keygen or _test_key)(i, p["key_bits"])
        out[(p["src_host"], p["dst_host"])] = {"key": key, "spi": None, "reqid": None}
    return out


# ----------------------------------------------------------------------------------------------
# exact objects for the lab pair

def test_lab_pair_exact_objects():
    r = _pairs.derive(lab())
    assert [p["name"] for p in r["pairs"]] == ["lab1->lab2", "lab2->lab1"]
    p12, p21 = r["pairs"]
    # golden values: the hash of the names.  Changing the hash renumbers every deployment, so a
    # change here must be deliberate.
    assert (p12["spi_hex"], p12["reqid_hex"], p21["spi_hex"], p21["reqid_hex"]) == (
        GOLDEN["lab1->lab2"] + GOLDEN["lab2->lab1"])
    assert p12["spi_source"] == p12["reqid_source"] == "hash"
    assert p12["key_source"] == "inventory"
    s12, s21 = p12["spi"], p21["spi"]
    q12, q21 = p12["reqid"], p21["reqid"]
    lab1 = r["hosts"]["lab1"]
    assert lab1["namespace"] is None and lab1["peers"] == ["lab2"]
    assert lab1["states"] == [
        {"src": "192.168.100.1", "dst": "192.168.100.2", "spi": s12, "reqid": q12, "mode": "transport",
         "direction": "out", "aead": {"name": "rfc4106(gcm(aes))", "key": K12, "icv": 128},
         "esn": True, "offload": {"type": "none"},
         "sel": {"src": "192.168.100.1/32", "dst": "192.168.100.2/32"}},
        {"src": "192.168.100.2", "dst": "192.168.100.1", "spi": s21, "reqid": q21, "mode": "transport",
         "direction": "in", "aead": {"name": "rfc4106(gcm(aes))", "key": K21, "icv": 128},
         "esn": True, "replay_window": 64, "offload": {"type": "none"},
         "sel": {"src": "192.168.100.2/32", "dst": "192.168.100.1/32"}},
    ]
    assert lab1["policies"] == [
        {"src": "192.168.100.1/32", "dst": "192.168.100.2/32", "dir": "out", "priority": 0, "action": "allow",
         "tmpl": {"src": "192.168.100.1", "dst": "192.168.100.2", "proto": "esp", "reqid": q12,
                  "mode": "transport", "level": "required"}, "offload": {"type": "none"}},
        {"src": "192.168.100.2/32", "dst": "192.168.100.1/32", "dir": "in", "priority": 0, "action": "allow",
         "tmpl": {"src": "192.168.100.2", "dst": "192.168.100.1", "proto": "esp", "reqid": q21,
                  "mode": "transport", "level": "required"}, "offload": {"type": "none"}},
    ]


GOLDEN = {}


def _golden():
    # Computed independently of allocate(): first hash candidate of each name pair.
    def first(kind, a, b, lo, hi):
        d = hashlib.sha256(("ipsec_offload.mlx5\0%s\0%d\0%s\0%s" % (kind, 0, a, b)).encode()).digest()
        return "0x%08x" % (lo + int.from_bytes(d[:8], "big") % (hi - lo + 1))
    for a, b in (("lab1", "lab2"), ("lab2", "lab1")):
        GOLDEN["%s->%s" % (a, b)] = (first("spi", a, b, 0x100, 0xFFFFFFFF), first("reqid", a, b, 0x51C00000, 0x51C0FFFF))


_golden()


def test_filter_plugin_is_registered_and_wraps_errors():
    assert FilterModule().filters()["ipsec_pairs"] is ipsec_pairs
    assert ipsec_pairs(lab()) == dict(_pairs.derive(lab()), host_names=["lab1", "lab2"])
    hv = lab()
    del hv["lab2"]["ipsec_peers"]
    with pytest.raises(AnsibleFilterError, match="host lab1: ipsec_peers: lists lab2, but lab2 does not list lab1"):
        ipsec_pairs(hv)


# ----------------------------------------------------------------------------------------------
# vendor topologies

def test_vxlan_overlay_packet_offload_on_pf():
    hv = {
        "dpu-a": {"ipsec_local_ip": "10.10.0.1", "ipsec_dev": "p0", "ipsec_peers": ["dpu-b"],
                  "ipsec_selectors": [{"proto": "udp", "dport": 4789}]},
        "dpu-b": {"ipsec_local_ip": "10.10.0.2", "ipsec_dev": "p0", "ipsec_peers": ["dpu-a"],
                  "ipsec_selectors": [{"proto": "udp", "dport": "4789"}]},
    }
    r = _pairs.derive(hv, store=store_for(_pairs.derive(hv, keys="none")["pairs"]))
    a = r["hosts"]["dpu-a"]
    assert [s["offload"] for s in a["states"]] == [{"type": "packet", "dev": "p0"}] * 2
    assert [(p["dir"], p["proto"], p["dport"], p["offload"]) for p in a["policies"]] == [
        ("out", "udp", 4789, {"type": "packet", "dev": "p0"}), ("in", "udp", 4789, {"type": "packet", "dev": "p0"})]
    assert all("sport" not in p for p in a["policies"])
    assert [s["aead"]["key"][:2] for s in a["states"]] == ["0x", "0x"]
    assert [len(s["aead"]["key"]) for s in a["states"]] == [2 + 72, 2 + 72]   # AES-256 + salt default


def test_roce_over_vf_fwd_policy_never_offloaded():
    common = {"ipsec_dev": "enp8s0f0v0", "ipsec_fwd_policy": True, "ipsec_key_bits": 128}
    hv = {
        "roce-a": dict(common, ipsec_local_ip="192.168.10.1", ipsec_peers=["roce-b"]),
        "roce-b": dict(common, ipsec_local_ip="192.168.10.2", ipsec_peers=["roce-a"]),
    }
    r = _pairs.derive(hv, keys="optional")
    pol = r["hosts"]["roce-a"]["policies"]
    assert [(p["dir"], p["src"], p["dst"], p["tmpl"]["src"], p["offload"]) for p in pol] == [
        ("out", "192.168.10.1/32", "192.168.10.2/32", "192.168.10.1", {"type": "packet", "dev": "enp8s0f0v0"}),
        ("in", "192.168.10.2/32", "192.168.10.1/32", "192.168.10.2", {"type": "packet", "dev": "enp8s0f0v0"}),
        ("fwd", "192.168.10.2/32", "192.168.10.1/32", "192.168.10.2", {"type": "none"}),
    ]
    assert pol[1]["tmpl"] == pol[2]["tmpl"]
    assert [s["aead"]["key"] for s in r["hosts"]["roce-a"]["states"]] == [None, None]


def test_crypto_offload_sa_only_and_namespace():
    hv = lab(lab1={"ipsec_offload": "crypto", "ipsec_dev": "vf0", "ipsec_namespace": "ns0"})
    r = _pairs.derive(hv)
    h = r["hosts"]["lab1"]
    assert h["namespace"] == "ns0"
    assert [s["offload"] for s in h["states"]] == [{"type": "crypto", "dev": "vf0"}] * 2
    assert [p["offload"] for p in h["policies"]] == [{"type": "none"}] * 2
    assert [s["offload"] for s in r["hosts"]["lab2"]["states"]] == [{"type": "none"}] * 2


def test_tunnel_mode_networks_and_default_fwd():
    hv = lab(lab1={"ipsec_mode": "tunnel", "ipsec_networks": ["10.1.0.0/24", "10.3.0.0/24"]},
             lab2={"ipsec_mode": "tunnel", "ipsec_networks": ["10.2.0.0/24"]})
    r = _pairs.derive(hv)
    h = r["hosts"]["lab1"]
    assert all("sel" not in s and s["mode"] == "tunnel" for s in h["states"])
    assert [(p["dir"], p["src"], p["dst"], p["tmpl"]["src"], p["tmpl"]["dst"]) for p in h["policies"]] == [
        ("out", "10.1.0.0/24", "10.2.0.0/24", "192.168.100.1", "192.168.100.2"),
        ("out", "10.3.0.0/24", "10.2.0.0/24", "192.168.100.1", "192.168.100.2"),
        ("in", "10.2.0.0/24", "10.1.0.0/24", "192.168.100.2", "192.168.100.1"),
        ("fwd", "10.2.0.0/24", "10.1.0.0/24", "192.168.100.2", "192.168.100.1"),
        ("in", "10.2.0.0/24", "10.3.0.0/24", "192.168.100.2", "192.168.100.1"),
        ("fwd", "10.2.0.0/24", "10.3.0.0/24", "192.168.100.2", "192.168.100.1"),
    ]


def test_tunnel_mode_ipv6_inside_ipv4_pairs_same_families_only():
    hv = lab(lab1={"ipsec_mode": "tunnel", "ipsec_networks": ["10.1.0.0/24", "2001:db8:1::/64"]},
             lab2={"ipsec_mode": "tunnel", "ipsec_networks": ["2001:db8:2::/64"]})
    pol = _pairs.derive(hv)["hosts"]["lab1"]["policies"]
    assert [(p["dir"], p["src"], p["dst"], p["tmpl"]["src"]) for p in pol] == [
        ("out", "2001:db8:1::/64", "2001:db8:2::/64", "192.168.100.1"),
        ("in", "2001:db8:2::/64", "2001:db8:1::/64", "192.168.100.2"),
        ("fwd", "2001:db8:2::/64", "2001:db8:1::/64", "192.168.100.2"),
    ]


def test_ipv6_pair():
    hv = lab(lab1={"ipsec_local_ip": "2001:db8::1"}, lab2={"ipsec_local_ip": "2001:db8::2"})
    s = _pairs.derive(hv)["hosts"]["lab1"]["states"][0]
    assert (s["src"], s["dst"], s["sel"]) == ("2001:db8::1", "2001:db8::2",
                                              {"src": "2001:db8::1/128", "dst": "2001:db8::2/128"})


def test_selectors_order_insensitive_and_both_ports():
    sels = [{"proto": "tcp", "sport": 18515}, {"proto": "tcp", "dport": 18515}, {"proto": "udp"}]
    hv = lab(lab1={"ipsec_selectors": sels}, lab2={"ipsec_selectors": list(reversed(sels))})
    pol = _pairs.derive(hv)["hosts"]["lab2"]["policies"]
    outs = [{k: p[k] for k in ("proto", "sport", "dport") if k in p} for p in pol if p["dir"] == "out"]
    assert outs == [{"proto": "tcp", "dport": 18515}, {"proto": "tcp", "sport": 18515}, {"proto": "udp"}]


# ----------------------------------------------------------------------------------------------
# determinism, mirror, uniqueness, stability

def test_deterministic_and_independent_of_order():
    hv, groups = mesh(8)
    a = _pairs.derive(hv, groups=groups, keys="none")
    names = list(hv)
    random.Random(7).shuffle(names)
    hv2 = {n: copy.deepcopy(hv[n]) for n in names}
    groups2 = {"all": names, "dc": list(reversed(groups["dc"]))}
    b = _pairs.derive(hv2, groups=groups2, keys="none")
    assert a == b
    assert len(a["pairs"]) == 8 * 7


def check_mirror(result):
    states = {h: v["states"] for h, v in result["hosts"].items()}
    n = 0
    for p in result["pairs"]:
        outs = [s for s in states[p["src_host"]] if s["direction"] == "out" and s["spi"] == p["spi"] and s["dst"] == p["dst"]]
        ins = [s for s in states[p["dst_host"]] if s["direction"] == "in" and s["spi"] == p["spi"] and s["dst"] == p["dst"]]
        assert len(outs) == 1 and len(ins) == 1, p["name"]
        o, i = dict(outs[0]), dict(ins[0])
        for f in ("src", "dst", "spi", "reqid", "mode", "aead", "esn", "sel"):
            assert o.get(f) == i.get(f), (p["name"], f)
        assert (o["direction"], i["direction"]) == ("out", "in")
        assert ("replay_window" not in o, i["replay_window"]) == (True, 64)
        assert o["aead"]["key"] is not None
        n += 1
    return n


def test_mirror_property_20_host_mesh():
    hv, groups = mesh(20)
    pairs = _pairs.derive(hv, groups=groups, keys="none")["pairs"]
    r = _pairs.derive(hv, groups=groups, store=store_for(pairs))
    assert check_mirror(r) == 380
    # the reverse direction of every pair has a different key
    keys = [s["aead"]["key"] for v in r["hosts"].values() for s in v["states"] if s["direction"] == "out"]
    assert len(keys) == len(set(keys)) == 380


def test_uniqueness_20_host_mesh():
    hv, groups = mesh(20)
    r = _pairs.derive(hv, groups=groups, keys="none")
    lo, hi = _pairs.DEFAULT_REQID_RANGE
    spis_by_dst, reqids_by_host = {}, {}
    for p in r["pairs"]:
        assert 0x100 <= p["spi"] <= 0xFFFFFFFF and lo <= p["reqid"] <= hi
        spis_by_dst.setdefault(p["dst_host"], []).append(p["spi"])
        for h in (p["src_host"], p["dst_host"]):
            reqids_by_host.setdefault(h, []).append(p["reqid"])
    assert len(spis_by_dst) == len(reqids_by_host) == 20
    for h, spis in spis_by_dst.items():
        assert len(spis) == 19 and len(set(spis)) == 19, h
    for h, reqids in reqids_by_host.items():
        assert len(reqids) == 38 and len(set(reqids)) == 38, h


def test_uniqueness_under_forced_collisions():
    """A reqid range of 80 values for hosts that need 38 reqids each (greedy probing needs at most 2*38-1): probing must still give
    unique values per host (and SPIs per destination)."""
    hv, groups = mesh(20)
    r = _pairs.derive(hv, groups=groups, keys="none", reqid_range=[0x51C00000, 0x51C00000 + 79])
    by_host = {}
    for p in r["pairs"]:
        for h in (p["src_host"], p["dst_host"]):
            by_host.setdefault(h, []).append(p["reqid"])
    assert all(len(v) == len(set(v)) == 38 for v in by_host.values())
    assert any(p["reqid_source"] == "probed" for p in r["pairs"])


def test_reqid_range_exhausted_is_an_error():
    hv, groups = mesh(4)
    with pytest.raises(_pairs.DeriveError, match="host h01: ipsec_owned_reqid_range: 0x51c00000..0x51c00003 holds 4 "
                                                 "reqids, but h01 has 3 peers and needs 6"):
        _pairs.derive(hv, groups=groups, keys="none", reqid_range=[0x51C00000, 0x51C00003])


# bad input at mesh scale (issue 18): one message naming the host(s) and the variable, before any
# allocation (so before any key store write or rendered file)

def test_reqid_range_too_small_for_the_peers_at_scale():
    hv, groups = mesh(120)
    for h in hv.values():
        h["ipsec_owned_reqid_range"] = ["0x51c00000", "0x51c000c7"]     # 200 values; 119 peers need 238
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups, keys="none")
    msg = str(ei.value)
    assert "\n" not in msg and "ipsec_owned_reqid_range: 0x51c00000..0x51c000c7 holds 200 reqids" in msg
    assert "has 119 peers and needs 238" in msg and "and 114 more" in msg


def test_shared_local_ip_at_scale_names_both_hosts():
    hv, groups = mesh(200)
    hv["h150"]["ipsec_local_ip"] = hv["h20"]["ipsec_local_ip"]
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups, keys="none")
    assert str(ei.value) == ("host h150: ipsec_local_ip: %s is also the tunnel address of h20; every host needs its own"
                             % hv["h20"]["ipsec_local_ip"])


def test_host_in_two_meshes_with_different_key_sizes_is_one_message():
    hv = {}
    for i in range(60):
        hv["a%02d" % i] = {"ipsec_local_ip": "10.1.0.%d" % (i + 1), "ipsec_meshes": ["ma"], "ipsec_key_bits": 256,
                           "ipsec_offload": "none"}
        hv["b%02d" % i] = {"ipsec_local_ip": "10.2.0.%d" % (i + 1), "ipsec_meshes": ["mb"], "ipsec_key_bits": 128,
                           "ipsec_offload": "none"}
    hv["x"] = {"ipsec_local_ip": "10.3.0.1", "ipsec_meshes": ["ma", "mb"], "ipsec_key_bits": 256,
               "ipsec_offload": "none"}
    groups = {"ma": sorted(h for h in hv if h[0] in "ax"), "mb": sorted(h for h in hv if h[0] in "bx")}
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups, keys="none")
    assert str(ei.value) == ("host x: ipsec_key_bits: 256, but peers b00, b01, b02, b03, b04 and 55 more use 128; both "
                             "ends of a pair must agree (x is in meshes ma, mb: give them the same ipsec_key_bits)")


def test_many_problems_are_cut_short():
    hv, groups = mesh(60)
    for i in range(1, 61):
        hv["h%02d" % i]["ipsec_key_bits"] = 192
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups, keys="none")
    msg = str(ei.value)
    assert msg.startswith("60 problems in the IPsec inventory:") and msg.count("\n  - ") == 41
    assert "host h01: ipsec_key_bits: 192 is not 128 or 256" in msg and msg.endswith("\n  - ... and 20 more")


def _alloc(result):
    return {p["name"]: (p["spi"], p["reqid"]) for p in result["pairs"]}


def test_stable_when_a_host_joins_the_mesh():
    hv, groups = mesh(20)
    before = _alloc(_pairs.derive(hv, groups=groups, keys="none"))
    hv["h21"] = dict(hv["h01"], ipsec_local_ip="10.1.9.9")
    groups = {"all": groups["all"] + ["h21"], "dc": groups["dc"] + ["h21"]}
    after = _alloc(_pairs.derive(hv, groups=groups, keys="none"))
    assert len(after) == 21 * 20
    assert {k: after[k] for k in before} == before


def test_stable_with_pins_even_when_the_new_host_collides():
    """In a crowded reqid range new pairs collide with old ones; the key store's pins keep the
    old pairs where they were and move the new ones."""
    rng = [0x51C00000, 0x51C00000 + 15]
    hv, groups = mesh(5)
    first = _pairs.derive(hv, groups=groups, keys="none", reqid_range=rng)
    links = _pairs.allocate(_pairs.links_from_summary(first["pairs"]), tuple(rng))
    entries = _pairs.update_store({}, links, new_key=lambda bits: None)[0]
    before = _alloc(first)
    hv["h00"] = dict(hv["h01"], ipsec_local_ip="10.1.9.9")     # sorts first: wins collisions unpinned
    groups = {"all": ["h00"] + groups["all"], "dc": ["h00"] + groups["dc"]}
    unpinned = _alloc(_pairs.derive(hv, groups=groups, keys="none", reqid_range=rng))
    pinned = _alloc(_pairs.derive(hv, groups=groups, keys="none", reqid_range=rng, store=entries))
    assert {k: pinned[k] for k in before} == before
    # the scenario really is a collision case: without pins something old would have moved
    assert {k: unpinned[k] for k in before} != before
    by_host = {}
    for name, (spi, reqid) in pinned.items():
        for h in name.split("->"):
            by_host.setdefault(h, []).append(reqid)
    assert all(len(v) == len(set(v)) == 10 for v in by_host.values())


def test_overrides_are_used_and_others_avoid_them():
    hv, groups = mesh(4)
    auto = _pairs.derive(hv, groups=groups, keys="none")["pairs"]
    taken = next(p for p in auto if p["name"] == "h01->h02")
    # hand-give h03->h02 the SPI and h03->h04 the reqid that h01->h02 would get by hash
    hv["h03"]["ipsec_overrides"] = {"h02": {"spi": taken["spi_hex"]}, "h01": {"reqid": taken["reqid"]}}
    r = {p["name"]: p for p in _pairs.derive(hv, groups=groups, keys="none")["pairs"]}
    assert (r["h03->h02"]["spi"], r["h03->h02"]["spi_source"]) == (taken["spi"], "override")
    assert (r["h03->h01"]["reqid"], r["h03->h01"]["reqid_source"]) == (taken["reqid"], "override")
    assert r["h01->h02"]["spi"] != taken["spi"] and r["h01->h02"]["spi_source"] == "probed"
    assert r["h01->h02"]["reqid"] != taken["reqid"] and r["h01->h02"]["reqid_source"] == "probed"


def test_one_peer_list_in_group_vars():
    """A pair group can carry one ipsec_peers list naming both hosts: a host's own name is skipped."""
    hv = lab(lab1={"ipsec_peers": ["lab1", "lab2"]}, lab2={"ipsec_peers": ["lab1", "lab2"]})
    assert [p["name"] for p in _pairs.derive(hv)["pairs"]] == ["lab1->lab2", "lab2->lab1"]


def test_ini_inventory_strings_for_lists():
    hv = lab(lab1={"ipsec_peers": "lab2"}, lab2={"ipsec_peers": "lab1, lab2"})
    assert [p["name"] for p in _pairs.derive(hv)["pairs"]] == ["lab1->lab2", "lab2->lab1"]
    hv, groups = mesh(3)
    for v in hv.values():
        v["ipsec_meshes"] = "dc"
    assert len(_pairs.derive(hv, groups=groups, keys="none")["pairs"]) == 6


def test_protocol_numbers_and_names_agree():
    hv = lab(lab1={"ipsec_selectors": [{"proto": 17, "dport": 4789}]}, lab2={"ipsec_selectors": [{"proto": "UDP", "dport": 4789}]})
    pol = _pairs.derive(hv)["hosts"]["lab1"]["policies"]
    assert [(p["proto"], p["dport"]) for p in pol] == [("udp", 4789), ("udp", 4789)]
    hv = lab(lab1={"ipsec_selectors": [{"proto": 132}]}, lab2={"ipsec_selectors": [{"proto": "sctp"}]})
    assert _pairs.derive(hv)["hosts"]["lab1"]["policies"][0]["proto"] == "sctp"
    hv = lab(lab1={"ipsec_selectors": [{"proto": 115}]}, lab2={"ipsec_selectors": [{"proto": "115"}]})
    assert _pairs.derive(hv)["hosts"]["lab1"]["policies"][0]["proto"] == 115


def test_ini_style_strings_accepted():
    hv = lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "spi": "4096", "reqid": "0x51c00001"}},
                   "ipsec_key_bits": "128"})
    p = _pairs.derive(hv)["pairs"][0]
    assert (p["spi"], p["reqid"]) == (4096, 0x51C00001)


# ----------------------------------------------------------------------------------------------
# bad input: every case fails before anything else, naming the host and the variable

def _without(hv, host, var):
    del hv[host][var]
    return hv


BAD = [
    ("no peer",
     lambda: dict(lab(), lab3={"ipsec_local_ip": "192.168.100.3", "ipsec_offload": "none"}),
     "host lab3: ipsec_peers: this host has IPsec settings but no peer"),
    ("one-sided peer",
     lambda: lab(lab2={"ipsec_peers": []}),
     "host lab1: ipsec_peers: lists lab2, but lab2 does not list lab1"),
    ("unknown peer",
     lambda: lab(lab1={"ipsec_peers": ["lab2", "lab9"]}),
     "host lab1: ipsec_peers[1]: lab9 is not an inventory host"),
    ("peer not taking part",
     lambda: dict(lab(lab1={"ipsec_peers": ["lab2", "web1"]}), web1={"ansible_host": "x"}),
     "host lab1: ipsec_peers[1]: web1 is not taking part"),
    ("duplicate address",
     lambda: lab(lab2={"ipsec_local_ip": "192.168.100.1"}),
     "host lab2: ipsec_local_ip: 192.168.100.1 is also the tunnel address of lab1"),
    ("missing address",
     lambda: _without(lab(), "lab2", "ipsec_local_ip"),
     "host lab2: ipsec_local_ip: not set"),
    ("address with prefix",
     lambda: lab(lab2={"ipsec_local_ip": "192.168.100.2/24"}),
     "host lab2: ipsec_local_ip: '192.168.100.2/24' is not an IPv4 or IPv6 address"),
    ("missing device",
     lambda: lab(lab2={"ipsec_offload": "packet"}),
     "host lab2: ipsec_dev: not set, but ipsec_offload is packet"),
    ("missing device, crypto",
     lambda: lab(lab1={"ipsec_offload": "crypto"}),
     "host lab1: ipsec_dev: not set, but ipsec_offload is crypto"),
    ("injection in device",
     lambda: lab(lab1={"ipsec_dev": "eth0; reboot"}),
     "host lab1: ipsec_dev: 'eth0; reboot' is not a valid interface name"),
    ("newline in namespace",
     lambda: lab(lab1={"ipsec_namespace": "ns0\nreboot"}),
     "host lab1: ipsec_namespace:"),
    ("bad offload",
     lambda: lab(lab1={"ipsec_offload": "full"}),
     "host lab1: ipsec_offload: 'full' is not one of packet, crypto, none"),
    ("bad mode",
     lambda: lab(lab1={"ipsec_mode": "beet"}),
     "host lab1: ipsec_mode: 'beet' is not one of transport, tunnel"),
    ("mode mismatch",
     lambda: lab(lab1={"ipsec_mode": "tunnel"}),
     "host lab1: ipsec_mode: tunnel, but peer lab2 uses transport"),
    ("key size mismatch",
     lambda: lab(lab1={"ipsec_key_bits": 256}),
     "host lab1: ipsec_key_bits: 256, but peer lab2 uses 128"),
    ("bad key size",
     lambda: lab(lab1={"ipsec_key_bits": 192}),
     "host lab1: ipsec_key_bits: 192 is not 128 or 256"),
    ("selector mismatch",
     lambda: lab(lab1={"ipsec_selectors": [{"proto": "udp", "dport": 4789}]}),
     "host lab1: ipsec_selectors: differ from peer lab2's (proto udp dport 4789 vs all traffic)"),
    ("port without proto",
     lambda: lab(lab1={"ipsec_selectors": [{"dport": 4789}]}),
     "host lab1: ipsec_selectors[0].dport: a port needs proto tcp, udp or sctp"),
    ("bad port",
     lambda: lab(lab1={"ipsec_selectors": [{"proto": "udp", "dport": 70000}]}),
     "host lab1: ipsec_selectors[0].dport: 70000 is out of range 1..65535"),
    ("bad proto",
     lambda: lab(lab1={"ipsec_selectors": [{"proto": "udp; reboot"}]}),
     "host lab1: ipsec_selectors[0].proto:"),
    ("unknown selector field",
     lambda: lab(lab1={"ipsec_selectors": [{"proto": "udp", "port": 1}]}),
     "host lab1: ipsec_selectors[0]: unknown field(s) port"),
    ("networks in transport mode",
     lambda: lab(lab1={"ipsec_networks": ["10.0.0.0/8"]}),
     "host lab1: ipsec_networks: only used in tunnel mode"),
    ("tunnel networks without a common family",
     lambda: lab(lab1={"ipsec_mode": "tunnel", "ipsec_networks": ["10.1.0.0/24"]},
                 lab2={"ipsec_mode": "tunnel", "ipsec_networks": ["2001:db8::/64"]}),
     "host lab1: ipsec_networks: IPv4 only, but peer lab2 protects IPv6 only"),
    ("packet offload of a non tcp/udp selector",
     lambda: lab(lab1={"ipsec_offload": "packet", "ipsec_dev": "p0", "ipsec_selectors": [{"proto": "gre"}]},
                 lab2={"ipsec_selectors": [{"proto": "gre"}]}),
     "host lab1: ipsec_selectors[0]: proto gre cannot be packet-offloaded"),
    ("policy priority mlx5 refuses",
     lambda: lab(lab1={"ipsec_policy_priority": "0xffffffff"}),
     "host lab1: ipsec_policy_priority: 0xffffffff is out of range"),
    ("family mix",
     lambda: lab(lab2={"ipsec_local_ip": "2001:db8::2"}),
     "host lab1: ipsec_local_ip: IPv4, but peer lab2 has IPv6"),
    ("spi override collision",
     lambda: trio(lab1={"ipsec_overrides": {"lab2": {"spi": "0x1000"}}}, lab3={"ipsec_overrides": {"lab2": {"spi": 4096}}}),
     "host lab3: ipsec_overrides[lab2].spi: SPI 0x1000 for lab3->lab2 collides with ipsec_overrides of host lab1 for lab1->lab2"),
    ("reqid override collision on a third host",
     lambda: trio(lab1={"ipsec_overrides": {"lab2": {"reqid": 0x51C00007}}}, lab3={"ipsec_overrides": {"lab1": {"reqid": 0x51C00007}}}),
     "reqid 0x51c00007 for lab3->lab1 collides with ipsec_overrides of host lab1 for lab1->lab2 (both on host lab1"),
    ("spi override reserved",
     lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "spi": 255}}}),
     "host lab1: ipsec_overrides[lab2].spi: 0xff is out of range 0x100..0xffffffff"),
    ("reqid override collision",
     lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "reqid": 0x51C00005}}},
                 lab2={"ipsec_overrides": {"lab1": {"key": K21, "reqid": "0x51c00005"}}}),
     "host lab2: ipsec_overrides[lab1].reqid: reqid 0x51c00005 for lab2->lab1 collides with ipsec_overrides of host lab1 for lab1->lab2"),
    ("reqid override outside owned range",
     lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "reqid": 10000}}}),
     "host lab1: ipsec_overrides[lab2].reqid: 0x2710 is outside the owned reqid range 0x51c00000..0x51c0ffff"),
    ("override for a non-peer",
     lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12}, "lab7": {"spi": 4096}}}),
     "host lab1: ipsec_overrides[lab7]: lab7 is not a peer of lab1"),
    ("unknown override field",
     lambda: lab(lab1={"ipsec_overrides": {"lab2": {"key": K12, "spl": 4096}}}),
     "host lab1: ipsec_overrides[lab2]: unknown field(s) spl"),
    ("unknown mesh group",
     lambda: mesh(3)[0],
     "ipsec_meshes names group dc, but the filter was not given groups="),
    ("mesh group missing",
     lambda: (mesh(3)[0], {"all": ["h01", "h02", "h03"]}),
     "ipsec_meshes: dc is not an inventory group"),
    ("mesh of one",
     lambda: (mesh(3)[0], {"all": ["h01", "h02", "h03"], "dc": ["h01"]}),
     "ipsec_meshes: group dc has 1 host(s); a mesh needs at least 2"),
    ("reqid range disagreement",
     lambda: lab(lab1={"ipsec_owned_reqid_range": [0x51C00000, 0x51C000FF]}, lab2={"ipsec_owned_reqid_range": [0x51C00000, 0x51C0FFFF]}),
     "ipsec_owned_reqid_range: hosts disagree"),
]


@pytest.mark.parametrize("name,make,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, make, expect):
    made = make()
    hv, groups = made if isinstance(made, tuple) else (made, None)
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups)
    assert expect in str(ei.value)


def test_all_problems_reported_at_once():
    hv = lab(lab1={"ipsec_offload": "packet", "ipsec_peers": ["lab2", "nope"]}, lab2={"ipsec_mode": "x"})
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv)
    text = str(ei.value)
    assert text.startswith("3 problems in the IPsec inventory:")
    for part in ("host lab1: ipsec_dev: not set", "host lab2: ipsec_mode: 'x'", "host lab1: ipsec_peers[1]: nope"):
        assert part in text


# ----------------------------------------------------------------------------------------------
# keys: shared keys refused, lengths checked, never in messages

SECRET_A = "0x" + "5eC4e7" * 6 + "abcd"      # 20 bytes, mixed case
SECRET_B = "0x" + "0badc0de" * 9           # 36 bytes


def _key_cases():
    return [
        ("shared between directions", lab(lab1={"ipsec_overrides": {"lab2": {"key": SECRET_A}}},
                                          lab2={"ipsec_overrides": {"lab1": {"key": SECRET_A}}}),
         "the key of lab2->lab1 (inventory) is also used by the reverse direction"),
        ("same AES key, other salt", lab(lab1={"ipsec_overrides": {"lab2": {"key": SECRET_A}}},
                                         lab2={"ipsec_overrides": {"lab1": {"key": SECRET_A[:-8] + "00000000"}}}),
         "is also used by the reverse direction"),
        ("wrong length for key bits", lab(lab1={"ipsec_overrides": {"lab2": {"key": SECRET_B}}}),
         "host lab1: ipsec_overrides[lab2].key: is 36 bytes long (AES-256 + salt) but ipsec_key_bits is 128"),
        ("not a key length", lab(lab1={"ipsec_overrides": {"lab2": {"key": SECRET_B[:-2]}}}),
         "host lab1: ipsec_overrides[lab2].key: is 35 bytes long"),
        ("not hex", lab(lab1={"ipsec_overrides": {"lab2": {"key": SECRET_A[:-1] + "g"}}}),
         "host lab1: ipsec_overrides[lab2].key: must be a hex string"),
        ("odd digits", lab(lab1={"ipsec_overrides": {"lab2": {"key": SECRET_A + "1"}}}),
         "host lab1: ipsec_overrides[lab2].key: hex string has an odd number of digits"),
        ("unquoted in YAML", lab(lab1={"ipsec_overrides": {"lab2": {"key": int(SECRET_A, 16)}}}),
         "host lab1: ipsec_overrides[lab2].key: is a number, not a string"),
        ("a list", lab(lab1={"ipsec_overrides": {"lab2": {"key": [SECRET_A]}}}),
         "host lab1: ipsec_overrides[lab2].key: must be a hex string"),
    ]


@pytest.mark.parametrize("idx", range(8))
def test_key_errors_never_show_the_key(idx):
    name, hv, expect = _key_cases()[idx]
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv)
    text = str(ei.value)
    assert expect in text, name
    _assert_no_secret(text)
    with pytest.raises(AnsibleFilterError) as fe:
        ipsec_pairs(hv)
    _assert_no_secret(str(fe.value))
    assert fe.value.__cause__ is None and fe.value.__context__ is not None   # raised "from None"


def _assert_no_secret(text):
    low = text.lower()
    assert str(int(SECRET_A, 16))[:20] not in low
    for secret in (SECRET_A, SECRET_B):
        body = secret[2:].lower()
        for frag in (body, body[:16], body[8:24], body[-16:]):
            assert frag not in low


def test_shared_key_between_two_pairs_in_store():
    hv, groups = mesh(3)
    pairs = _pairs.derive(hv, groups=groups, keys="none")["pairs"]
    store = store_for(pairs)
    k = store[("h01", "h02")]["key"]
    store[("h03", "h01")]["key"] = k
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups, store=store)
    assert "key store entry h03->h01: the key of h03->h01 (keystore) is also used by pair h01->h02 (from keystore)" in str(ei.value)
    assert k not in str(ei.value)


def test_missing_key_required():
    hv = lab(lab1={"ipsec_overrides": {}})
    with pytest.raises(_pairs.DeriveError, match=r"host lab1: ipsec_overrides\[lab2\].key: no key for lab1->lab2"):
        _pairs.derive(hv)
    r = _pairs.derive(hv, keys="optional")
    assert r["pairs"][0]["key_source"] == "missing"
    assert r["hosts"]["lab1"]["states"][0]["aead"]["key"] is None


def test_keys_none_has_no_secrets():
    r = _pairs.derive(lab(), keys="none")
    assert "hosts" not in r
    assert K12[2:] not in repr(r) and K21[2:] not in repr(r)
    assert [p["key_source"] for p in r["pairs"]] == ["inventory", "inventory"]


def test_stored_key_of_wrong_size_is_an_error():
    hv, groups = mesh(2, ipsec_key_bits=256)
    pairs = _pairs.derive(hv, groups=groups, keys="none")["pairs"]
    store = {(p["src_host"], p["dst_host"]): {"key": "%02x" % i * 20, "spi": None, "reqid": None} for i, p in enumerate(pairs)}
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.derive(hv, groups=groups, store=store)
    assert "key store entry h01->h02: key is 20 bytes long (AES-128 + salt) but ipsec_key_bits is 256" in str(ei.value)
    assert "delete the entry to generate a new key" in str(ei.value)
    assert "00" * 20 not in str(ei.value)


def test_generate_key_sizes_and_uniqueness():
    keys = {_pairs.generate_key(128) for i in range(50)} | {_pairs.generate_key(256) for i in range(50)}
    assert len(keys) == 100
    assert sorted({len(k) for k in keys}) == [40, 72]
    with pytest.raises(ValueError):
        _pairs.generate_key(192)


def test_packed_allocation_is_the_pairs_list_in_short():
    """derive.yml keeps its allocation packed (issue 18): the same pairs, as the key store action reads them."""
    from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
    hv, groups = mesh(5)
    hv["h02"]["ipsec_overrides"] = {"h03": {"spi": "0x1000"}}
    hv["h03"]["ipsec_overrides"] = {"h02": {"key": _test_key(1, 256)}}
    full = ipsec_pairs(hv, groups=groups, keys="none")
    packed = ipsec_pairs(hv, groups=groups, keys="none", packed=True)
    assert sorted(packed) == ["count", "host_names", "packed", "reqid_range"]
    assert packed["count"] == len(full["pairs"]) == 20 and packed["host_names"] == full["host_names"] == sorted(hv)
    assert packed["reqid_range"] == full["reqid_range"]
    rows = _pairs.unpack_pairs(packed["packed"])
    assert [{k: p[k] for k in r} for p, r in zip(full["pairs"], rows)] == rows
    with pytest.raises(Exception, match="packed=true: only with keys='none'"):
        ipsec_pairs(hv, groups=groups, packed=True)


def _with_store(hv, groups, entries):
    first = _pairs.derive(hv, groups=groups, keys="none", store=entries)
    links = _pairs.allocate(_pairs.links_from_summary(first["pairs"]), tuple(first["reqid_range"]), _pairs.pins_of(entries))
    entries, dummy = _pairs.update_store(entries, links)
    r = _pairs.derive(hv, groups=groups, store=entries)
    return entries, {(s["src"], s["dst"]): (s["spi"], s["reqid"], s["aead"]["key"])
                     for h in r["hosts"].values() for s in h["states"] if s["direction"] == "out"}


def test_pins_and_keys_stable_when_hosts_join_and_leave_a_30_host_mesh():
    """Issue 18: existing pairs keep SPI, reqid and key when a host joins and when one leaves."""
    hv, groups = mesh(31)
    small = {h: v for h, v in hv.items() if h != "h31"}
    entries, before = _with_store(small, {"dc": sorted(small)}, {})
    entries, joined = _with_store(hv, groups, entries)
    assert len(joined) == 31 * 30 and all(joined[k] == v for k, v in before.items())
    left = {h: v for h, v in hv.items() if h != "h07"}
    entries, after = _with_store(left, {"dc": sorted(left)}, entries)
    assert len(after) == 30 * 29 and all(after[k] == joined[k] for k in after)
