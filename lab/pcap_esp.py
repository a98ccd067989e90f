# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the inter-VM link carried: ESP (SPI, sequence number) and protected flows in clear.

Reads a classic pcap file (QEMU filter-dump writes one: Ethernet, microsecond timestamps; either
byte order and the nanosecond variant are accepted too) with the standard library only (struct).
A record cut short at the end of the file (QEMU still writing) ends the read quietly.

Frames are classified as:
  marker  Ethernet type 0x88b5 (local experimental) whose payload starts with b"LCMARK ": the rest
          of the payload is a label, e.g. "b:healed"; lab/lifecycle.sh sends them from a VM so the
          capture itself says where each stage begins and ends
  esp     IPv4 protocol 50, or UDP port 4500 with a non-zero first word (NAT-T ESP): SPI + sequence
  clear   any other IPv4 packet between the two addresses of --pair (a protected flow in clear)
  other   everything else (ARP, IPv6 neighbour discovery, ...), counted only
One 802.1Q/802.1ad tag is skipped. Only the first fragment of an IPv4 packet carries the ESP header (later ones count as other).

Segments: the frames between two markers belong to the segment named by the earlier marker (the
ones before the first marker to "start").

  pcap_esp.py PCAP --pair A,B [--lost LABEL=SPI,SPI...]... [--json]

prints one "key: value" line per figure (or one JSON document):
  frames / esp / clear / other / markers     totals
  duplicate (spi, seq) pairs                 an ESP (SPI, seq) seen twice: an SA re-created with a
                                             used SPI (and, very likely, its key): must be 0
  segment LABEL                              per segment: esp, clear, SPIs with packet counts
  lost LABEL                                 --lost LABEL=SPIS: packets with one of SPIS after the
                                             marker LABEL (an SPI that reappeared after its SA was
                                             lost and healed): must be 0
Exit status: 0 when the file was read (the figures decide), 2 on a bad file or arguments.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys

MARK_TYPE = 0x88B5
MARK_PREFIX = b"LCMARK "
_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
LINKTYPE_ETHERNET = 1


class PcapError(Exception):
    pass


def read_pcap(path):
    """Yield (timestamp, frame bytes) of every complete record of the pcap file at ``path``."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise PcapError("%s: not a pcap file (%d bytes)" % (path, len(head)))
        if head[:4] not in _MAGICS:
            raise PcapError("%s: not a pcap file (magic %s)" % (path, head[:4].hex()))
        end, unit = _MAGICS[head[:4]]
        linktype = struct.unpack(end + "I", head[20:24])[0] & 0x0FFFFFFF
        if linktype != LINKTYPE_ETHERNET:
            raise PcapError("%s: link type %d, only Ethernet (1) is read" % (path, linktype))
        rec = struct.Struct(end + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _orig = rec.unpack(h)
            if incl > 262144:
                raise PcapError("%s: record of %d bytes at offset %d" % (path, incl, f.tell() - 16))
            data = f.read(incl)
            if len(data) < incl:
                return
            yield sec + frac * unit, data


def classify(frame):
    """(kind, info) of one Ethernet frame; see the module docstring for the kinds.

    marker: info = label (str); esp: (src, dst, spi, seq); clear: (src, dst, proto); other: None.
    """
    if len(frame) < 14:
        return "other", None
    etype = struct.unpack("!H", frame[12:14])[0]
    off = 14
    if etype in (0x8100, 0x88A8) and len(frame) >= 18:
        etype = struct.unpack("!H", frame[16:18])[0]
        off = 18
    if etype == MARK_TYPE:
        body = frame[off:]
        if body.startswith(MARK_PREFIX):
            return "marker", body[len(MARK_PREFIX):].split(b"\0", 1)[0].decode("ascii", "replace").strip()
        return "other", None
    if etype != 0x0800 or len(frame) < off + 20:
        return "other", None
    ip = frame[off:]
    if ip[0] >> 4 != 4:
        return "other", None
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    frag_off = struct.unpack("!H", ip[6:8])[0] & 0x1FFF
    src = ".".join(str(b) for b in ip[12:16])
    dst = ".".join(str(b) for b in ip[16:20])
    pl = ip[ihl:]
    if proto == 50:
        if frag_off == 0 and len(pl) >= 8:
            spi, seq = struct.unpack("!II", pl[:8])
            return "esp", (src, dst, spi, seq)
        return "other", None    # a later fragment of an ESP packet (or a runt): ciphertext
    if proto == 17 and frag_off == 0 and len(pl) >= 16:
        sport, dport = struct.unpack("!HH", pl[:4])
        if 4500 in (sport, dport) and pl[8:12] != b"\0\0\0\0":
            spi, seq = struct.unpack("!II", pl[8:16])
            return "esp", (src, dst, spi, seq)
    return "clear", (src, dst, proto)


def analyse(path, pair=None, lost=None):
    """Figures of the capture at ``path`` (a dict, JSON-friendly).

    pair: the two IPv4 addresses whose traffic is protected (clear packets between them count);
    lost: {marker label: [SPI (int)...]}: packets with these SPIs after that marker are counted.
    """
    pair = set(pair or ())
    lost = {k: set(v) for k, v in (lost or {}).items()}
    seen = {}               # (spi, seq) -> segment of the first sighting
    dups = []
    seg = "start"
    segs = {seg: {"esp": 0, "clear": 0, "spis": {}, "clear_examples": []}}
    order = [seg]
    passed = set()          # marker labels seen so far
    after_lost = {k: 0 for k in lost}
    tot = {"frames": 0, "esp": 0, "clear": 0, "other": 0, "markers": 0}
    first_ts = last_ts = None
    for ts, frame in read_pcap(path):
        first_ts = ts if first_ts is None else first_ts
        last_ts = ts
        tot["frames"] += 1
        kind, info = classify(frame)
        if kind == "marker":
            tot["markers"] += 1
            seg = info
            passed.add(info)
            if seg not in segs:
                segs[seg] = {"esp": 0, "clear": 0, "spis": {}, "clear_examples": []}
                order.append(seg)
            continue
        if kind == "clear" and not (info[0] in pair and info[1] in pair):
            kind = "other"
        tot[kind] += 1
        s = segs[seg]
        if kind == "esp":
            src, dst, spi, seq = info
            s["esp"] += 1
            key = "0x%08x" % spi
            s["spis"][key] = s["spis"].get(key, 0) + 1
            if (spi, seq) in seen:
                dups.append({"spi": key, "seq": seq, "first": seen[(spi, seq)], "again": seg})
            else:
                seen[(spi, seq)] = seg
            for label, spis in lost.items():
                if label in passed and spi in spis:
                    after_lost[label] += 1
        elif kind == "clear":
            s["clear"] += 1
            if len(s["clear_examples"]) < 3:
                s["clear_examples"].append("%s > %s proto %d" % info)
    return {
        "totals": tot,
        "seconds": round((last_ts - first_ts), 1) if first_ts is not None else 0,
        "duplicates": len(dups),
        "duplicate_examples": dups[:5],
        "segments": [dict(segs[k], label=k) for k in order],
        "lost_after": after_lost,
    }


def _spi(text):
    v = int(text, 16) if text.lower().startswith("0x") else int(text)
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(text)
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("pcap")
    ap.add_argument("--pair", default="", help="A,B: the two IPv4 addresses of the protected flows")
    ap.add_argument("--lost", action="append", default=[], metavar="LABEL=SPI,SPI",
                    help="SPIs that must not appear after the marker LABEL")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        pair = [x for x in a.pair.split(",") if x]
        lost = {}
        for item in a.lost:
            label, dummy, spis = item.partition("=")
            lost.setdefault(label, []).extend(_spi(x) for x in spis.split(",") if x)
        res = analyse(a.pcap, pair=pair, lost=lost)
    except (OSError, PcapError, ValueError) as e:
        print("pcap_esp: %s" % e, file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res, indent=1, sort_keys=True))
        return 0
    t = res["totals"]
    print("frames: %d (%d s) esp: %d clear: %d other: %d markers: %d"
          % (t["frames"], res["seconds"], t["esp"], t["clear"], t["other"], t["markers"]))
    print("duplicate (spi, seq) pairs: %d%s" % (res["duplicates"], "".join(
        " [%s seq %d: %s, again %s]" % (d["spi"], d["seq"], d["first"], d["again"]) for d in res["duplicate_examples"])))
    for s in res["segments"]:
        spis = " ".join("%s:%d" % kv for kv in sorted(s["spis"].items()))
        print("segment %s: esp %d clear %d spis %s%s" % (
            s["label"], s["esp"], s["clear"], spis or "-",
            (" clear e.g. " + "; ".join(s["clear_examples"])) if s["clear_examples"] else ""))
    for label, n in sorted(res["lost_after"].items()):
        print("lost %s: %d" % (label, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
