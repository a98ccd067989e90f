# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lab/pcap_esp.py on a tiny pcap written here: ESP, a duplicate (SPI, seq), markers, a protected
flow in clear, traffic that is not protected, a VLAN tag, NAT-T ESP, both byte orders, a record cut
short at the end, and files that are not pcaps."""

import importlib.util
import os
import struct

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "lab", "pcap_esp.py")
_spec = importlib.util.spec_from_file_location("pcap_esp", _PATH)
pcap_esp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pcap_esp)

A, B, C = "192.168.100.1", "192.168.100.2", "10.0.0.9"
MAC1, MAC2 = bytes.fromhex("525400bb0001"), bytes.fromhex("525400bb0002")


def _ip(a):
    return bytes(int(x) for x in a.split("."))


def ipv4(src, dst, proto, payload, frag=0):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0, _ip(src), _ip(dst))
    return hdr + payload


def eth(etype, payload, vlan=None):
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return MAC2 + MAC1 + tag + struct.pack("!H", etype) + payload


def esp(src, dst, spi, seq, vlan=None):
    return eth(0x0800, ipv4(src, dst, 50, struct.pack("!II", spi, seq) + b"\x00" * 24), vlan)


def natt(src, dst, spi, seq):
    udp = struct.pack("!HHHH", 4500, 4500, 24, 0) + struct.pack("!II", spi, seq) + b"\x00" * 8
    return eth(0x0800, ipv4(src, dst, 17, udp))


def icmp(src, dst):
    return eth(0x0800, ipv4(src, dst, 1, b"\x08\x00" + b"\x00" * 30))


def marker(label):
    return eth(0x88B5, b"LCMARK " + label.encode() + b"\x00" * 8)


def arp():
    return MAC2 + b"\xff" * 6 + struct.pack("!H", 0x0806) + b"\x00" * 28


def write(path, frames, order="<", nano=False, cut=0):
    magic = {("<", False): 0xA1B2C3D4, ("<", True): 0xA1B23C4D}[("<", nano)]
    with open(path, "wb") as f:
        f.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65536, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack(order + "IIII", 1000 + i, 500, len(fr), len(fr)) + fr)
        if cut:
            f.write(struct.pack(order + "IIII", 2000, 0, 100, 100) + b"\x00" * cut)


FRAMES = [
    arp(),
    esp(A, B, 0x1000, 1),
    esp(B, A, 0x2000, 1),
    icmp(A, C),                     # not between the pair: other
    marker("a:lost"),
    icmp(B, A),                     # a protected flow in clear
    esp(A, B, 0x1000, 2, vlan=5),   # tagged
    marker("a:healed"),
    esp(A, B, 0x3000, 1),
    esp(B, A, 0x2000, 2),           # an SPI reported lost at a:healed: counted
    natt(A, B, 0x1000, 1),          # the (SPI, seq) of the second frame again: a duplicate
    eth(0x0800, ipv4(A, B, 50, b"\x00" * 8, frag=10)),   # a later fragment of ESP: other
    eth(0x0800, ipv4(B, A, 6, b"\x00" * 20, frag=10)),   # a later fragment of TCP: clear
    eth(0x86DD, b"\x60" + b"\x00" * 39),                  # IPv6: other
]


def test_analyse(tmp_path):
    p = tmp_path / "t.pcap"
    write(str(p), FRAMES, cut=10)
    r = pcap_esp.analyse(str(p), pair=[A, B], lost={"a:healed": [0x2000, 0x1000], "a:lost": [0x9]})
    assert r["totals"] == {"frames": 14, "esp": 6, "clear": 2, "other": 4, "markers": 2}
    segs = {s["label"]: s for s in r["segments"]}
    assert list(segs) == ["start", "a:lost", "a:healed"]
    assert segs["start"]["spis"] == {"0x00001000": 1, "0x00002000": 1} and segs["start"]["clear"] == 0
    assert segs["a:lost"]["clear"] == 1 and segs["a:lost"]["clear_examples"] == ["192.168.100.2 > 192.168.100.1 proto 1"]
    assert segs["a:lost"]["spis"] == {"0x00001000": 1}
    # a later fragment of ESP is ciphertext (other), one of TCP is a protected flow in clear
    assert segs["a:healed"]["clear"] == 1 and segs["a:healed"]["esp"] == 3
    assert r["duplicates"] == 1
    assert r["duplicate_examples"] == [{"spi": "0x00001000", "seq": 1, "first": "start", "again": "a:healed"}]
    assert r["lost_after"] == {"a:healed": 2, "a:lost": 0}
    assert r["seconds"] == 13.0


def test_big_endian_and_nanoseconds(tmp_path):
    p = tmp_path / "be.pcap"
    with open(p, "wb") as f:
        f.write(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65536, 1))
        fr = esp(A, B, 7, 9)
        f.write(struct.pack(">IIII", 5, 0, len(fr), len(fr)) + fr)
    r = pcap_esp.analyse(str(p), pair=[A, B])
    assert r["totals"]["esp"] == 1 and r["segments"][0]["spis"] == {"0x00000007": 1}
    q = tmp_path / "ns.pcap"
    write(str(q), [esp(A, B, 7, 9), esp(A, B, 7, 9)], nano=True)
    assert pcap_esp.analyse(str(q))["duplicates"] == 1


def test_classify():
    assert pcap_esp.classify(marker("d:start")) == ("marker", "d:start")
    assert pcap_esp.classify(eth(0x88B5, b"something else")) == ("other", None)
    assert pcap_esp.classify(b"\x00" * 10) == ("other", None)
    assert pcap_esp.classify(esp(B, A, 0xDEADBEEF, 0xFFFFFFFF)) == ("esp", (B, A, 0xDEADBEEF, 0xFFFFFFFF))
    # IKE on 4500 (non-ESP marker 0) is not ESP: a packet in clear between the pair
    ike = eth(0x0800, ipv4(A, B, 17, struct.pack("!HHHH", 4500, 4500, 24, 0) + b"\x00" * 16))
    assert pcap_esp.classify(ike) == ("clear", (A, B, 17))


def test_not_a_pcap(tmp_path, capsys):
    p = tmp_path / "x.pcap"
    p.write_bytes(b"hello world, not a capture")
    with pytest.raises(pcap_esp.PcapError):
        list(pcap_esp.read_pcap(str(p)))
    assert pcap_esp.main([str(p)]) == 2
    assert "not a pcap file" in capsys.readouterr().err
    q = tmp_path / "short.pcap"
    q.write_bytes(b"\xd4\xc3")
    assert pcap_esp.main([str(q)]) == 2


def test_cli(tmp_path, capsys):
    p = tmp_path / "t.pcap"
    write(str(p), FRAMES)
    assert pcap_esp.main([str(p), "--pair", A + "," + B, "--lost", "a:healed=0x2000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("frames: 14 ")
    assert out[1].startswith("duplicate (spi, seq) pairs: 1 [0x00001000 seq 1: start, again a:healed]")
    assert "segment a:lost: esp 1 clear 1 spis 0x00001000:1 clear e.g. 192.168.100.2 > 192.168.100.1 proto 1" in out
    assert out[-1] == "lost a:healed: 1"
    assert pcap_esp.main([str(p), "--lost", "x=zz"]) == 2
