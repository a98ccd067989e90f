# -*- coding: utf-8 -*-
"""IKE backends: connections from the real example inventories' derivation, the exact config text
rendered for them, PSK handling (same on both ends, never in the connection files or public view),
status parsing on real daemon output, and the version/offload support table."""

from __future__ import annotations

import json
import os
import sys

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_text
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _ike
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_ike import ipsec_ike

from harness import fixture

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "filter"))
from test_ipsec_pairs_inventories import derive_with_store, load_inventory  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def vxlan():
    return derive_with_store("lab-vxlan")


def test_lab_vxlan_connections(vxlan):
    c1, = _ike.connections(vxlan, "lab1")
    c2, = _ike.connections(vxlan, "lab2")
    assert c1["name"] == c2["name"] == "ipsec_offload_mlx5-lab1-lab2"
    assert (c1["initiator"], c2["initiator"]) == (True, False)
    assert (c1["local_addr"], c1["remote_addr"]) == ("192.168.100.1", "192.168.100.2")
    assert (c2["local_addr"], c2["remote_addr"]) == ("192.168.100.2", "192.168.100.1")
    assert c1["offload"] == "none" and c1["mode"] == "transport" and c1["key_bits"] == 256
    # one CHILD_SA per direction of the udp/4789 selector, mirrored on the peer
    assert [(c["local"], c["proto"], c["lport"], c["remote"], c["rport"], c["name"]) for c in c1["children"]] == [
        ("192.168.100.1/32", "udp", None, "192.168.100.2/32", 4789, "ipsec_offload_mlx5-lab1-lab2-c1"),
        ("192.168.100.1/32", "udp", 4789, "192.168.100.2/32", None, "ipsec_offload_mlx5-lab1-lab2-c2"),
    ]
    mirror = {(c["remote"], c["rport"], c["local"], c["lport"]) for c in c2["children"]}
    assert {(c["local"], c["lport"], c["remote"], c["rport"]) for c in c1["children"]} == mirror
    # the same PSK on both ends, 64 hex characters, derived from (not equal to) the ESP keys
    assert c1["psk"] == c2["psk"] and len(c1["psk"]) == 64
    keys = {s["aead"]["key"][2:] for s in vxlan["hosts"]["lab1"]["states"]}
    assert all(c1["psk"] not in k and k not in c1["psk"] for k in keys)


def test_mesh_has_one_connection_per_peer():
    d = derive_with_store("mesh3")
    names = [c["name"] for c in _ike.connections(d, "node2")]
    assert names == ["ipsec_offload_mlx5-node1-node2", "ipsec_offload_mlx5-node2-node3"]
    assert [c["initiator"] for c in _ike.connections(d, "node2")] == [False, True]
    psks = {c["name"]: c["psk"] for h in ("node1", "node2", "node3") for c in _ike.connections(d, h)}
    assert len(set(psks.values())) == 3   # one per pair


def test_host_slice_gives_the_same_connections_as_the_whole_derivation():
    """site.yml hands ipsec_ike the host's own slice (ipsec_host, derive.yml): same connections, PSKs included."""
    hv, groups = load_inventory("mesh3")
    first = _pairs.derive(hv, groups=groups, keys="none")
    links = _pairs.allocate(_pairs.links_from_summary(first["pairs"]), tuple(first["reqid_range"]))
    entries, dummy = _pairs.update_store({}, links)
    nested = _pairs.derive(hv, groups=groups, store=entries)
    sliced = _pairs.derive_slices(hv, groups=groups, store=entries)
    for h in ("node1", "node2", "node3"):
        mine = json.loads(sliced["hosts"][h])
        assert _ike.connections(mine, h) == _ike.connections(nested, h)
        assert ipsec_ike(mine, h, what="public") == ipsec_ike(nested, h, what="public")


def test_packet_offload_inventory():
    d = derive_with_store("vxlan-overlay")
    c, = _ike.connections(d, "dpu-a")
    assert c["offload"] == "packet"
    assert "hw_offload = packet" in _ike.render_swanctl(c)
    assert "\tnic-offload=packet\n" in _ike.render_libreswan(c)


SWANCTL_LAB1 = """\
# Managed by ipsec_offload.mlx5 (ipsec_backend: strongswan); edits are overwritten.
connections {
    ipsec_offload_mlx5-lab1-lab2 {
        version = 2
        local_addrs = 192.168.100.1
        remote_addrs = 192.168.100.2
        proposals = aes256gcm16-prfsha384-ecp384
        encap = no
        mobike = no
        dpd_delay = 30s
        local {
            auth = psk
            id = 192.168.100.1
        }
        remote {
            auth = psk
            id = 192.168.100.2
        }
        children {
            ipsec_offload_mlx5-lab1-lab2-c1 {
                mode = transport
                local_ts = 192.168.100.1/32[udp]
                remote_ts = 192.168.100.2/32[udp/4789]
                esp_proposals = aes256gcm16-esn
                hw_offload = no
                ipcomp = no
                dpd_action = restart
            }
            ipsec_offload_mlx5-lab1-lab2-c2 {
                mode = transport
                local_ts = 192.168.100.1/32[udp/4789]
                remote_ts = 192.168.100.2/32[udp]
                esp_proposals = aes256gcm16-esn
                hw_offload = no
                ipcomp = no
                dpd_action = restart
            }
        }
    }
}
"""

LIBRESWAN_LAB2_C1 = """\
conn ipsec_offload_mlx5-lab1-lab2-c1
\tleft=192.168.100.2
\tright=192.168.100.1
\tauthby=secret
\tkeyexchange=ikev2
\ttype=transport
\tesp=aes_gcm256
\tesn=yes
\tcompress=no
\tencapsulation=no
\tnic-offload=no
\tleftprotoport=17/%any
\trightprotoport=17/4789
\tauto=add
"""


def test_render_swanctl_exact_and_secret_free(vxlan):
    c, = _ike.connections(vxlan, "lab1")
    text = _ike.render_swanctl(c)
    assert text == SWANCTL_LAB1
    assert c["psk"] not in text
    sec = _ike.render_swanctl_secrets(c)
    assert sec.splitlines()[1:] == [
        "secrets {", "    ike-ipsec_offload_mlx5-lab1-lab2 {", "        id-local = 192.168.100.1",
        "        id-remote = 192.168.100.2", '        secret = "%s"' % c["psk"], "    }", "}"]


def test_render_libreswan_exact_and_secret_free(vxlan):
    c, = _ike.connections(vxlan, "lab2")
    text = _ike.render_libreswan(c)
    assert LIBRESWAN_LAB2_C1 in text
    assert text.count("\nconn ") == 2 and "rightprotoport=17/%any" in text
    assert c["psk"] not in text
    assert _ike.render_libreswan_secrets(c).splitlines()[1] == '192.168.100.2 192.168.100.1 : PSK "%s"' % c["psk"]


def test_tunnel_mode_uses_subnets():
    conn = {"name": "ipsec_offload_mlx5-a-b", "local_addr": "10.0.0.1", "remote_addr": "10.0.0.2", "initiator": True,
            "mode": "tunnel", "offload": "crypto", "key_bits": 128, "psk": "x" * 64,
            "children": [{"name": "ipsec_offload_mlx5-a-b-c1", "local": "192.168.1.0/24", "remote": "192.168.2.0/24",
                          "proto": None, "lport": None, "rport": None}]}
    sw = _ike.render_swanctl(conn)
    assert "local_ts = 192.168.1.0/24\n" in sw and "remote_ts = 192.168.2.0/24\n" in sw
    assert "esp_proposals = aes128gcm16-esn" in sw and "hw_offload = crypto" in sw and "mode = tunnel" in sw
    ls = _ike.render_libreswan(conn)
    assert "\tleftsubnet=192.168.1.0/24\n\trightsubnet=192.168.2.0/24\n" in ls and "\tauto=start\n" in ls
    assert "protoport" not in ls and "nic-offload=crypto" in ls


def test_public_redacts(vxlan):
    pub = _ike.public(_ike.connections(vxlan, "lab1"))
    assert pub[0]["psk"] == "<redacted>"
    assert ipsec_ike(vxlan, "lab1", what="public") == pub
    assert ipsec_ike(_ike.connections(vxlan, "lab1"), what="redact") == pub


def test_psk_override(vxlan):
    c, = _ike.connections(vxlan, "lab1", {"lab2": {"psk": "Vault-Given-PSK-0123456789"}})
    assert c["psk"] == "Vault-Given-PSK-0123456789"
    with pytest.raises(_ike.IkeError, match=r"ipsec_overrides\[lab2\]\.psk") as e:
        _ike.connections(vxlan, "lab1", {"lab2": {"psk": 'short"; reboot'}})
    assert "reboot" not in str(e.value)


@pytest.mark.parametrize("host,msg", [
    ("nope", "host nope: not part of any IPsec pair"),
])
def test_connection_errors(vxlan, host, msg):
    with pytest.raises(_ike.IkeError, match=msg):
        _ike.connections(vxlan, host)


def test_bad_host_name_refused():
    with pytest.raises(_ike.IkeError, match="not usable in an IKE connection name"):
        _ike.conn_name("lab1", "evil host;reboot")


def test_filter_errors_never_echo_input(vxlan):
    with pytest.raises(AnsibleFilterError, match="neither the host's slice"):
        ipsec_ike({"secret": "abc"}, "lab1")
    with pytest.raises(AnsibleFilterError, match="malformed input") as e:
        ipsec_ike({"name": "x", "psk": "TOPSECRET"}, what="swanctl_secrets")
    assert "TOPSECRET" not in str(e.value)
    with pytest.raises(AnsibleFilterError, match="what='bogus'"):
        ipsec_ike("", what="bogus")


def test_parse_swanctl_sas_real_sample():
    sas = _ike.parse_swanctl_sas(fixture("ike/swanctl-list-sas-sample.txt"))
    assert sas == [{"name": "lab", "id": 1, "state": "ESTABLISHED", "children": [
        {"name": "lab", "id": 1, "reqid": 1, "state": "INSTALLED", "mode": "transport",
         "spi_in": "0xcf62a413", "spi_out": "0xc52f2ad7", "packets_in": 0, "packets_out": 0}]}]
    assert _ike.parse_swanctl_sas("") == []


TRAFFIC = """\
#3: "ipsec_offload_mlx5-lab1-lab2-c1", type=ESP, add_time=1732456789, inBytes=0, outBytes=1408, maxBytes=2^63B, id='192.168.100.2'
006 #4: "ipsec_offload_mlx5-lab1-lab2-c2", type=ESP, add_time=1732456790, inBytes=1408, outBytes=0, maxBytes=2^63B, id='192.168.100.2'
"""


def test_parse_trafficstatus():
    rows = _ike.parse_trafficstatus(TRAFFIC)
    assert [(r["name"], r["serial"], r["type"], r["inBytes"], r["outBytes"]) for r in rows] == [
        ("ipsec_offload_mlx5-lab1-lab2-c1", 3, "ESP", 0, 1408),
        ("ipsec_offload_mlx5-lab1-lab2-c2", 4, "ESP", 1408, 0)]


@pytest.mark.parametrize("backend,text,offload,ok,version,packet", [
    ("strongswan", "strongSwan swanctl 6.0.1\n", "packet", True, "6.0.1", True),
    ("strongswan", "strongSwan swanctl 5.9.8\n", "packet", False, "5.9.8", False),
    ("strongswan", "strongSwan swanctl 5.9.8\n", "none", True, "5.9.8", False),
    ("strongswan", "strongSwan swanctl 5.9.10\n", "packet", True, "5.9.10", True),
    ("libreswan", "Libreswan 5.2\n", "packet", True, "5.2", True),
    ("libreswan", "Libreswan 4.11\n", "packet", False, "4.11", False),
    ("libreswan", "Libreswan 4.11\n", "crypto", True, "4.11", False),
    # nic-offload=packet came with libreswan 5.0 (CHANGES: "HW packet offload support"); 4.15 has none
    ("libreswan", "Libreswan 4.15\n", "packet", False, "4.15", False),
    ("libreswan", "Libreswan 5.0\n", "packet", True, "5.0", True),
    ("libreswan", "", "none", False, None, None),
])
def test_backend_support(backend, text, offload, ok, version, packet):
    r = _ike.backend_support(backend, text, offload)
    assert (r["ok"], r["version"], r["packet_offload"]) == (ok, version, packet)
    if not ok:
        assert r["reason"]
    if version and not ok:
        assert "ipsec_offload: crypto/none" in r["reason"] and r["packet_min"] in r["reason"]


def test_backend_support_refuses_unknown():
    with pytest.raises(_ike.IkeError, match="ipsec_backend"):
        _ike.backend_support("racoon", "x", "none")


# `ipsec whack --showstates` lines in libreswan's format (older releases prefix "000 "; 5.x does not);
# the layout (#serial: "conn" esp.<peer spi>@<peer> esp.<our spi>@<us> ...) as published in public
# libreswan status dumps; addresses and SPIs are the lab's.
SHOWSTATES = """\
#1: "ipsec_offload_mlx5-lab1-lab2-c1":500 ESTABLISHED_IKE_SA (established IKE SA); REKEY in 27456s; newest; idle;
#2: "ipsec_offload_mlx5-lab1-lab2-c1":500 ESTABLISHED_CHILD_SA (established Child SA); REKEY in 27499s; IKE SA #1; idle;
#2: "ipsec_offload_mlx5-lab1-lab2-c1" esp.248d1071@192.168.100.2 esp.4e68b7a9@192.168.100.1 Traffic: ESPin=0B ESPout=0B ESPmax=2^63B
000 #5: "ipsec_offload_mlx5-lab1-lab2-c2" esp.b81df6e@192.168.100.2 esp.8fd9bdcd@192.168.100.1 Traffic: ESPin=128B ESPout=0B ESPmax=2^63B
000 #3: "ipsec_offload_mlx5-lab1-lab2-c2" esp.a3a6c6eb@192.168.100.2 esp.1fd9bdcd@192.168.100.1 Traffic: ESPin=0B ESPout=0B ESPmax=2^63B
#9: "other" esp.11111111@10.0.0.1 esp.22222222@10.0.0.2 Traffic: ESPin=0B
"""


def test_parse_showstates_newest_child_per_conn():
    assert _ike.parse_showstates(SHOWSTATES) == [
        {"name": "ipsec_offload_mlx5-lab1-lab2-c1", "serial": 2, "spi_out": "0x248d1071", "spi_in": "0x4e68b7a9"},
        {"name": "ipsec_offload_mlx5-lab1-lab2-c2", "serial": 5, "spi_out": "0x0b81df6e", "spi_in": "0x8fd9bdcd"},
        {"name": "other", "serial": 9, "spi_out": "0x11111111", "spi_in": "0x22222222"},
    ]
    assert ipsec_ike(SHOWSTATES, what="showstates")[0]["spi_in"] == "0x4e68b7a9"


def test_libreswan_children_merge_port_directions(vxlan):
    conns = _ike.connections(vxlan, "lab1")
    ls, = _ike.libreswan_children(conns)
    assert [(c["name"], c["local"], c["remote"], c["proto"], c["lport"], c["rport"]) for c in ls["children"]] == [
        ("ipsec_offload_mlx5-lab1-lab2-c1", "192.168.100.1/32", "192.168.100.2/32", "udp", None, None)]
    text = _ike.render_libreswan(ls)
    # libreswan 5.2 refuses %any ports on both sides ("cannot have protoports with wildcard (%any)
    # ports on both sides", seen in the lab): the protocol alone
    assert text.count("\nconn ") == 1 and "\tleftprotoport=17\n\trightprotoport=17\n" in text
    assert len(conns[0]["children"]) == 2   # the input is not modified; strongSwan keeps both
    assert ipsec_ike(conns, what="libreswan_children") == [ls]


def test_parse_showstates_every_child_state_by_serial():
    """showstates_all: the superseded states too (the SA-loss heal deletes those whose kernel SAs are
    gone), one row per serial however many lines name it, in serial order."""
    rows = _ike.parse_showstates(SHOWSTATES + SHOWSTATES.splitlines()[2] + "\n", newest=False)
    assert [(r["serial"], r["name"]) for r in rows] == [
        (2, "ipsec_offload_mlx5-lab1-lab2-c1"), (3, "ipsec_offload_mlx5-lab1-lab2-c2"),
        (5, "ipsec_offload_mlx5-lab1-lab2-c2"), (9, "other")]
    assert rows[1] == {"name": "ipsec_offload_mlx5-lab1-lab2-c2", "serial": 3, "spi_out": "0xa3a6c6eb", "spi_in": "0x1fd9bdcd"}
    assert ipsec_ike(SHOWSTATES, what="showstates_all") == rows
    assert _ike.parse_showstates("", newest=False) == []


# `ipsec whack --status` conn lines (libreswan 5.x; older releases prefix "000 ") and `swanctl
# --list-conns` heads (strongSwan 6), in the daemons' layouts with the lab's names
WHACK_STATUS = """\
"ipsec_offload_mlx5-lab1-lab2-c1": 192.168.100.1---192.168.100.2; unrouted; my_ip=unset; their_ip=unset;
000 "ipsec_offload_mlx5-lab1-lab2-c1":   policy: IKEv2+PSK+ENCRYPT+PFS+UP;
000 "ipsec_offload_mlx5-lab1-lab3-c2": 192.168.100.1---192.168.100.3; erouted; eroute owner: #4
"someone-else": 10.0.0.1---10.0.0.2; unrouted;
#4: "ipsec_offload_mlx5-lab1-lab3-c2":500 ESTABLISHED_CHILD_SA (established Child SA); newest;
"""
LIST_CONNS = """\
ipsec_offload_mlx5-lab1-lab2: IKEv2, no reauthentication, rekeying every 14400s
  local:  192.168.100.1
  remote: 192.168.100.2
  ipsec_offload_mlx5-lab1-lab2-c1: TRANSPORT, rekeying every 3600s
other: IKEv1/2, reauthentication every 10800s
"""


def test_parse_whack_status_names_the_collections_conns_once():
    assert _ike.parse_whack_status(WHACK_STATUS) == ["ipsec_offload_mlx5-lab1-lab2-c1", "ipsec_offload_mlx5-lab1-lab3-c2"]
    assert ipsec_ike(WHACK_STATUS, what="whack_status") == _ike.parse_whack_status(WHACK_STATUS)
    assert _ike.parse_whack_status("") == [] and _ike.parse_whack_status(None) == []


def test_parse_swanctl_conns_takes_connection_heads_only():
    assert _ike.parse_swanctl_conns(LIST_CONNS) == ["ipsec_offload_mlx5-lab1-lab2", "other"]
    assert ipsec_ike(LIST_CONNS, what="swanctl_conns") == ["ipsec_offload_mlx5-lab1-lab2", "other"]
    assert _ike.parse_swanctl_conns("") == []


def test_kernel_side_read_with_the_collections_xfrm_parser():
    """xfrm_states / xfrm_policies: what the ike role compares with the daemons (SA loss) and counts
    before pluto's flush; identifiers only, never a key."""
    states = fixture("xfrm/lab-xfrm-state.txt")
    sas = ipsec_ike(states, what="xfrm_states")
    assert [(sa["src"], sa["dst"], sa["proto"], sa["spi"], sa["reqid"]) for sa in sas] == [
        ("192.168.100.2", "192.168.100.1", "esp", "0x00001001", 2), ("192.168.100.1", "192.168.100.2", "esp", "0x00001000", 1)]
    assert sas == _xfrm_text.parse_xfrm_sa_counters(states)  # the info module's view, the same code
    assert "1111" not in str(sas)
    pols = ipsec_ike(fixture("xfrm/lab-xfrm-policy.txt"), what="xfrm_policies")
    assert sorted((p["dir"], p["action"], tuple(p["reqids"])) for p in pols) == [("in", "allow", (2,)), ("out", "allow", (1,))]
    assert ipsec_ike("", what="xfrm_states") == [] and ipsec_ike("", what="xfrm_policies") == []
