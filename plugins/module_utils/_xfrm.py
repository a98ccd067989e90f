# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""IPsec SA (xfrm state) and SP (xfrm policy) model: validate, compare, render.  Pure: no I/O.

The text of `ip xfrm` is parsed in _xfrm_text (re-exported here).

Ownership: an SA, or an SP through its template, belongs to this collection iff its reqid lies in
the owned range (OWNED_REQID_RANGE by default).  Only owned objects are ever replaced or deleted.

SA dicts (parsed and desired share one shape; desired ones never hold None in required fields):
  src, dst (str, compressed), proto ("esp"), spi (int), reqid (int), mode (str or None = not
  printed), direction ("in"/"out"/None = unknown), aead ({name, key (lower hex, no 0x; None =
  hidden/redacted), icv} or None), esn (bool), replay_window (int, the effective window),
  sel (dict or None), offload ({type: packet|crypto|none, dev, dir}), mark, if_id,
  extras (attributes we do not model: a list of names), stats (dict, `-s` only).
SP dicts:
  src, dst (prefix str), proto (int or None), sport, dport, dir (in|out|fwd), ptype, priority,
  action (allow|block), tmpls (list of {src, dst, proto, spi, reqid, mode, level}),
  offload ({type: packet|none, dev}), mark ({value, mask} ints, or None = no mark: the kernel's
  0/0), if_id, extras.  The mark is part of a policy's identity (the kernel compares value AND mask
  exactly since v5.8, xfrm_policy_mark_match); this is what lets fail-closed guard policies (see
  _guard.py) share an SA policy's selector.
"""

from __future__ import annotations

import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
# The parsers of `ip xfrm` text live in _xfrm_text (stdlib only, also run by the lab/molecule
# helpers); re-exported here beside the model they fill.
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._xfrm_text import (  # noqa: F401 pylint: disable=unused-import
    OFFLOAD_LINE_RE, _NO_OFFLOAD, _parse_selector, offload_devices,
    offload_line, parse_policies, parse_state_usage, parse_states)
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._iproute2 import parse_link_names  # noqa: F401 pylint: disable=unused-import
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import ObjectKind
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError

# reqids 0x51c00000..0x51c0ffff belong to this collection ("51c0" ~ "SEC0").  The pair derivation
# plugin allocates inside this range; users may choose another range with owned_reqid_range.
OWNED_REQID_RANGE = (0x51C00000, 0x51C0FFFF)

AEAD_RFC4106 = "rfc4106(gcm(aes))"
# AES-128/AES-256 key followed by the 4-byte salt (RFC 4106).  AES-192 is left out on purpose:
# mlx5 does not offload it.
AEAD_KEY_BYTES = {AEAD_RFC4106: (20, 36)}
ICV_BITS = (64, 96, 128)
DEFAULT_ICV = 128
DEFAULT_REPLAY_WINDOW = 64
MAX_REPLAY_WINDOW = 4096
PACKET_IN_REPLAY_WINDOWS = (32, 64, 128, 256)  # mlx5: inbound packet offload
MIN_SPI = 256  # 1..255 are reserved by IANA (RFC 4303 section 2.1); 0 is never valid on the wire
MAX_SPI = 0xFFFFFFFF
REDACTED = "<redacted>"

OFFLOAD_TYPES = ("packet", "crypto", "none")
SA_MODES = ("transport", "tunnel")
SP_DIRS = ("in", "out", "fwd")

# IP protocol names and the protocols whose selectors carry ports: one table, in _validate.
PROTO_NUMBERS = V.PROTO_NUMBERS
PORT_PROTOS = V.PORT_PROTOS

# Defaults for the capability flags when nothing can be probed (state=rendered): a current stack.
RENDER_FEATURES = {"offload_packet": True, "sa_dir": True}

_HEX_LONG_RE = re.compile(r"(?:0x)?[0-9a-fA-F]{40,}")


def scrub(text):
    """Replace anything that looks like key material (40+ hex digits) in tool output."""
    if not text:
        return text
    return _HEX_LONG_RE.sub(REDACTED, text)


# --------------------------------------------------------------------------------------------
# selectors and marks as parsed
# --------------------------------------------------------------------------------------------

def selector_is_any(sel):
    """True for no selector or the all-zero one `ip xfrm state add` sets without `sel`."""
    if sel is None:
        return True
    return (sel.get("src") in (None, "0.0.0.0/0", "::/0") and sel.get("dst") in (None, "0.0.0.0/0", "::/0")
            and not sel.get("proto") and not sel.get("sport") and not sel.get("dport") and not sel.get("dev"))


def mark_key(mark):
    """A policy mark (None, {value, mask}, or an unparsed string) -> a hashable identity part.
    No mark and 0/0 are the same to the kernel (it stores 0/0 for a policy added without one)."""
    if mark is None:
        return None
    if isinstance(mark, dict):
        v, m = mark.get("value") or 0, mark.get("mask") or 0
        return None if v == 0 and m == 0 else (v, m)
    return mark


# --------------------------------------------------------------------------------------------
# validation of module input -> desired objects
# --------------------------------------------------------------------------------------------

def owned_range(value, field="owned_reqid_range"):
    """None -> OWNED_REQID_RANGE; [lo, hi] (ints or 0x-strings) -> (lo, hi)."""
    if value is None:
        return OWNED_REQID_RANGE
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(field, "must be a list of two reqids [first, last]")
    lo = V.integer(field + "[0]", value[0], 1, 0xFFFFFFFF)
    hi = V.integer(field + "[1]", value[1], 1, 0xFFFFFFFF)
    if lo > hi:
        raise InputError(field, "first reqid 0x%08x is above last 0x%08x" % (lo, hi))
    return (lo, hi)


def _reqid(field, value, rng):
    n = V.integer(field, value, 0, 0xFFFFFFFF)
    if not rng[0] <= n <= rng[1]:
        raise InputError(field, "reqid 0x%08x is outside the owned range 0x%08x..0x%08x: everything this "
                                "collection creates must carry a reqid in that range (owned_reqid_range)"
                         % (n, rng[0], rng[1]))
    return n


def _prefix(field, value):
    """Selector prefix: an address or a prefix without host bits -> ip_network (None stays None)."""
    if value is None:
        return None
    return V.prefix(field, value, strict=True)


def _sel_upper(field, item):
    """proto/sport/dport of a selector -> (proto int or None, sport, dport)."""
    proto = item.get("proto")
    proto = V.protocol(field + ".proto", proto) if proto is not None and proto != "" else None
    ports = []
    for p in ("sport", "dport"):
        v = item.get(p)
        if v is None:
            ports.append(None)
            continue
        n = V.port(field + "." + p, v)
        if proto not in PORT_PROTOS:
            raise InputError(field + "." + p, "ports need proto tcp, udp, sctp or dccp")
        ports.append(n)
    return proto, ports[0], ports[1]


def sa_options():
    """The sub-options of xfrm_offload_state's `config` (its argument spec; documented there)."""
    return dict(
        src=dict(type="str"),
        dst=dict(type="str", required=True),
        spi=dict(type="raw", required=True),
        reqid=dict(type="raw"),
        mode=dict(type="str", choices=list(SA_MODES)),
        direction=dict(type="str", choices=["in", "out"]),
        aead=dict(type="dict", options=dict(
            name=dict(type="str", choices=list(AEAD_KEY_BYTES), default=AEAD_RFC4106),
            key=dict(type="str", required=True, no_log=True),
            icv=dict(type="raw"),
        )),
        esn=dict(type="bool"),
        installed=dict(type="bool", default=False),
        replay_window=dict(type="raw"),
        sel=dict(type="dict", options=dict(
            src=dict(type="str"),
            dst=dict(type="str"),
            proto=dict(type="raw"),
            sport=dict(type="raw"),
            dport=dict(type="raw"),
        )),
        offload=dict(type="dict", options=dict(
            type=dict(type="str", choices=list(OFFLOAD_TYPES), default="packet"),
            dev=dict(type="str"),
            fallback=dict(type="str", choices=["fail", "allow"], default="fail"),
        )),
    )


def sp_options():
    """The sub-options of xfrm_offload_policy's `config` (its argument spec; documented there), also
    the shape of xfrm_guard_boot's `config`."""
    return dict(
        src=dict(type="str", required=True),
        dst=dict(type="str", required=True),
        proto=dict(type="raw"),
        sport=dict(type="raw"),
        dport=dict(type="raw"),
        dir=dict(type="str", required=True, choices=list(SP_DIRS)),
        priority=dict(type="raw"),
        action=dict(type="str", choices=["allow", "block"]),
        tmpl=dict(type="dict", options=dict(
            src=dict(type="str"),
            dst=dict(type="str"),
            proto=dict(type="str", choices=["esp"], default="esp"),
            reqid=dict(type="raw", required=True),
            mode=dict(type="str", choices=list(SA_MODES), default="transport"),
            level=dict(type="str", choices=["required", "use"], default="required"),
        )),
        offload=dict(type="dict", options=dict(
            type=dict(type="str", choices=["packet", "none"]),
            dev=dict(type="str"),
        )),
        mark=dict(type="dict", options=dict(
            value=dict(type="raw", required=True),
            mask=dict(type="raw"),
        )),
    )


# validate_sa / validate_sp take one config element as _argspec.Options.apply() hands it over with
# sa_options() / sp_options(): a dict holding every declared option (None when not given), with no
# other key, the typed ones converted, the ones with choices one of them, nested dicts done alike.
# What is checked here is what a spec cannot say: required but given as null, numbers and their
# ranges, addresses and families, and the rules between options.

def validate_sa(field, item, state, rng):
    """One config element (see above) -> a desired SA dict (None for fields left out, filled by
    complete_sa())."""
    if item.get("dst") is None:
        raise InputError(field + ".dst", "is required")
    if item.get("spi") is None:
        raise InputError(field + ".spi", "is required")
    dst = V.address(field + ".dst", item["dst"])
    spi = V.integer(field + ".spi", item["spi"], 0, MAX_SPI)
    if spi == 0:
        raise InputError(field + ".spi", "0 is not a valid SPI")
    if spi < MIN_SPI:
        raise InputError(field + ".spi", "%d is reserved by IANA (1..255); use 256..4294967295" % spi)
    src = V.address(field + ".src", item["src"]) if item.get("src") is not None else None
    if src is not None:
        V.same_family(field, src, dst)
    sa = {"src": V.text(src) if src is not None else None, "dst": V.text(dst), "proto": "esp", "spi": spi,
          "reqid": None, "mode": None, "direction": None, "aead": None, "esn": None, "replay_window": None,
          "sel": None, "offload": None, "family": dst.version, "field": field}
    if state == "deleted":
        return sa
    sa["installed"] = bool(item.get("installed"))
    for req in ("src", "reqid", "direction"):
        if item.get(req) is None:
            raise InputError(field + "." + req, "is required")
    sa["reqid"] = _reqid(field + ".reqid", item["reqid"], rng)
    sa["direction"] = item["direction"]
    sa["mode"] = item.get("mode")
    sa["aead"] = _sa_aead(field, item.get("aead"))
    sa["esn"] = item.get("esn")
    rw = item.get("replay_window")
    if rw is not None:
        rw = V.integer(field + ".replay_window", rw, 0, MAX_REPLAY_WINDOW)
        if sa["direction"] == "out" and rw != 0:
            raise InputError(field + ".replay_window", "applies to inbound SAs only; leave it out for "
                                                       "direction out (the module picks what the kernel needs)")
        sa["replay_window"] = rw if sa["direction"] == "in" else None
    if item.get("sel") is not None:
        sa["sel"] = _sa_sel(field, item["sel"], dst)
    if item.get("offload") is not None:
        sa["offload"] = _sa_offload(field, item["offload"], sa["direction"])
    return sa


def _sa_aead(field, aead):
    """aead: {name, key, icv} -> the SA's aead (key checked for the algorithm's size)."""
    if not aead or not aead.get("key"):
        raise InputError(field + ".aead.key", "is required (hex key||salt)")
    name = aead.get("name") or AEAD_RFC4106
    key = V.aead_key(field + ".aead.key", aead["key"], AEAD_KEY_BYTES[name])
    icv = aead.get("icv")
    if icv is not None:
        icv = V.integer(field + ".aead.icv", icv)
        if icv not in ICV_BITS:
            raise InputError(field + ".aead.icv", "%d is not one of 64, 96, 128" % icv)
    return {"name": name, "key": key, "icv": icv}


def _sa_sel(field, sel, dst):
    """sel: the SA's selector (prefixes of dst's family, upper protocol and ports)."""
    s = _prefix(field + ".sel.src", sel.get("src"))
    d = _prefix(field + ".sel.dst", sel.get("dst"))
    for f, v in (("src", s), ("dst", d)):
        if v is not None and v.version != dst.version:
            raise InputError(field + ".sel." + f, "mixes IPv4 and IPv6 addresses")
    proto, sport, dport = _sel_upper(field + ".sel", sel)
    zero = "0.0.0.0/0" if dst.version == 4 else "::/0"
    return {"src": V.text(s) if s is not None else zero, "dst": V.text(d) if d is not None else zero,
            "proto": proto, "sport": sport, "dport": dport, "dev": None}


def _sa_offload(field, off, direction):
    """offload: {type, dev, fallback} -> the SA's offload (dir from the SA's direction)."""
    otype = off.get("type") or "packet"
    dev = off.get("dev")
    if otype != "none":
        if not dev:
            raise InputError(field + ".offload.dev", "is required for offload type %s (set offload.type: none "
                                                     "for a software-only SA)" % otype)
        V.ifname(field + ".offload.dev", dev)
    else:
        dev = None
    fallback = off.get("fallback") or "fail"
    if fallback == "allow" and otype != "crypto":
        raise InputError(field + ".offload.fallback", "'allow' only applies to offload type crypto "
                                                      "(packet offload never falls back)")
    return {"type": otype, "dev": dev, "dir": direction if otype != "none" else None, "fallback": fallback}


def complete_sa(sa, current=None):
    """Fill fields left out: from ``current`` (state merged) and then the defaults.  New dict."""
    d = dict(sa)
    if current is not None:
        for f in ("mode", "esn", "sel"):
            if d[f] is None:
                d[f] = current[f]
        if d["aead"]["icv"] is None and current.get("aead"):
            d["aead"] = dict(d["aead"], icv=current["aead"]["icv"])
        if d["replay_window"] is None and d["direction"] == "in":
            d["replay_window"] = current["replay_window"]
        if d["offload"] is None:
            c = current["offload"]
            d["offload"] = {"type": c["type"], "dev": c["dev"], "dir": c["dir"], "fallback": "fail"}
    if d["mode"] is None:
        d["mode"] = "transport"
    if d["esn"] is None:
        d["esn"] = True
    if d["aead"]["icv"] is None:
        d["aead"] = dict(d["aead"], icv=DEFAULT_ICV)
    if d["direction"] == "out":
        d["replay_window"] = 0  # decided at render time (see out_replay_window)
    elif d["replay_window"] is None:
        d["replay_window"] = DEFAULT_REPLAY_WINDOW
    if d["offload"] is None:
        raise InputError(d["field"] + ".offload.dev", "is required: offload type packet is the default (set "
                                                      "offload.type: none for a software-only SA)")
    return d


def check_sa(sa):
    """Cross-field checks on a completed desired SA."""
    f = sa["field"]
    off = sa["offload"]
    if sa["direction"] == "in":
        if sa["esn"] and sa["replay_window"] == 0:
            raise InputError(f + ".replay_window", "must be at least 1 with esn (the kernel refuses an ESN "
                                                   "inbound SA without a replay window)")
        if off["type"] == "packet" and sa["replay_window"] not in PACKET_IN_REPLAY_WINDOWS:
            raise InputError(f + ".replay_window", "%d is not supported for inbound packet offload; use 32, 64, "
                                                   "128 or 256" % sa["replay_window"])
    if off["type"] != "none" and sa["aead"]["icv"] != 128:
        raise InputError(f + ".aead.icv", "mlx5 offloads only a 128-bit ICV; use icv 128 or offload type none")
    if sa["mode"] == "tunnel" and sa["sel"] is None:
        pass  # allowed: the policy selects the traffic
    return sa


def check_key_reuse(desired, current, kind):
    """Refuse one key in two SAs (list or host).  ``desired``: completed SAs; ``current``: parsed.

    The AES key is compared, salt aside: two SAs with one AES key and different salts still share
    the key (and their nonces differ only by the salt).  Replacing an SA while keeping its key is
    refused too: the new SA restarts its sequence numbers, and with AES-GCM that repeats nonces
    under the same key.
    """
    seen = {}
    for d in desired:
        k = V.aes_part(d["aead"]["key"])
        other = seen.get(k)
        if other is not None:
            raise InputError(d["field"] + ".aead.key", "the same AES key (salt aside) is also given to %s; every "
                                                       "SA needs its own key (AES-GCM nonce reuse)" % other["field"])
        seen[k] = d
    for c in current:
        a = c.get("aead")
        if not a or a.get("key") is None:
            continue
        d = seen.get(V.aes_part(a["key"]))
        if d is None:
            continue
        if kind.key(c) != kind.key(d):
            raise InputError(d["field"] + ".aead.key", "this key is already used by another SA on the host (%s); "
                                                       "every SA needs its own key (AES-GCM nonce reuse)"
                             % kind.describe(c))


def out_replay_window(esn, features):
    """The replay window to send for an outbound SA.

    kernel >= 6.10 with iproute2 >= 6.11 (the SA direction attribute in effect): must be 0
    ("Replay window should be 0 for output SA").  Otherwise an ESN SA needs a window > 0 (kernel
    "ESN replay window must be > 0", iproute2 "esn flag set without replay-window"): send 1, as
    strongSwan does.  The window is not used on outbound SAs.
    """
    if features.get("sa_dir"):
        return 0
    return 1 if esn else 0


_MARK_INT_RE = re.compile(r"(?:0[xX][0-9a-fA-F]{1,8}|[0-9]{1,10})\Z")


def _mark_int(field, value):
    """A mark value or mask: an int or a decimal/0x-hex string of ASCII digits, 0..0xffffffff."""
    if isinstance(value, bool):
        raise InputError(field, "expected an integer, got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _MARK_INT_RE.match(value):
        n = int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
    else:
        raise InputError(field, "%r is not an integer (decimal or 0x-hex digits, 0..0xffffffff)" % (value,))
    if not 0 <= n <= 0xFFFFFFFF:
        raise InputError(field, "%d is out of range 0..0xffffffff" % n)
    return n


def validate_mark(field, mark):
    """A policy's mark option {value, mask} -> {value, mask} ints, or None (none given, or 0/0).
    mask defaults to 0xffffffff, as with `ip xfrm policy ... mark V`."""
    if mark is None:
        return None
    if mark.get("value") is None:
        raise InputError(field + ".value", "is required")
    v = _mark_int(field + ".value", mark["value"])
    m = _mark_int(field + ".mask", mark["mask"]) if mark.get("mask") is not None else 0xFFFFFFFF
    if v & ~m:
        raise InputError(field + ".value", "0x%x has bits outside mask 0x%x: such a policy matches no packet "
                                           "(the kernel compares skb mark & mask with value)" % (v, m))
    if v == 0 and m == 0:
        return None
    return {"value": v, "mask": m}


def validate_sp(field, item, state, rng):
    """One config element (see above validate_sa) -> a desired SP dict (filled by complete_sp())."""
    for req in ("src", "dst", "dir"):
        if item.get(req) is None:
            raise InputError(field + "." + req, "is required")
    s = _prefix(field + ".src", item["src"])
    d = _prefix(field + ".dst", item["dst"])
    if s.version != d.version:
        raise InputError(field, "mixes IPv4 and IPv6 addresses")
    direction = item["dir"]
    proto, sport, dport = _sel_upper(field, item)
    sp = {"src": V.text(s), "dst": V.text(d), "proto": proto, "sport": sport, "dport": dport, "dir": direction,
          "ptype": "main", "priority": None, "action": None, "tmpls": None, "offload": None,
          "mark": validate_mark(field + ".mark", item.get("mark")), "if_id": None, "family": s.version,
          "field": field}
    if state == "deleted":
        return sp
    if item.get("priority") is not None:
        sp["priority"] = V.integer(field + ".priority", item["priority"], 0, 0xFFFFFFFF)
    sp["action"] = item.get("action")
    tmpl = item.get("tmpl")
    if tmpl is not None:
        if tmpl.get("reqid") is None:
            raise InputError(field + ".tmpl.reqid", "is required")
        mode = tmpl.get("mode") or "transport"
        ts = V.address(field + ".tmpl.src", tmpl["src"]) if tmpl.get("src") is not None else None
        td = V.address(field + ".tmpl.dst", tmpl["dst"]) if tmpl.get("dst") is not None else None
        V.same_family(field + ".tmpl", ts, td)
        if mode == "tunnel" and (ts is None or td is None):
            raise InputError(field + ".tmpl", "tunnel mode needs tmpl.src and tmpl.dst (the tunnel endpoints)")
        if mode == "transport":
            for f, v in (("src", ts), ("dst", td)):
                if v is not None and v.version != s.version:
                    raise InputError(field + ".tmpl." + f, "transport mode: the address family must match the selector")
        sp["tmpls"] = [{"src": V.text(ts) if ts is not None else None, "dst": V.text(td) if td is not None else None,
                        "proto": tmpl.get("proto") or "esp",
                        "spi": 0, "reqid": _reqid(field + ".tmpl.reqid", tmpl["reqid"], rng), "mode": mode,
                        "level": tmpl.get("level") or "required"}]
    off = item.get("offload")
    if off is not None:
        otype = off.get("type") or ("none" if direction == "fwd" else "packet")
        if otype == "packet":
            if direction == "fwd":
                raise InputError(field + ".offload.type", "forward policies cannot be offloaded (mlx5 offloads "
                                                          "in/out policies only); use offload type none")
            if not off.get("dev"):
                raise InputError(field + ".offload.dev", "is required for offload type packet (set offload.type: "
                                                         "none for a policy without offload)")
            V.ifname(field + ".offload.dev", off["dev"])
        sp["offload"] = {"type": otype, "dev": off.get("dev") if otype == "packet" else None}
    return sp


def complete_sp(sp, current=None):
    d = dict(sp)
    if current is not None:
        for f in ("priority", "action", "offload"):
            if d[f] is None:
                d[f] = current[f]
        if d["tmpls"] is None:
            d["tmpls"] = current["tmpls"]
    if d["priority"] is None:
        d["priority"] = 0
    if d["action"] is None:
        d["action"] = "allow"
    if d["tmpls"] is None:
        raise InputError(d["field"] + ".tmpl", "is required (its reqid marks the policy as owned by this "
                                               "collection; for action block it is only that marker)")
    if d["offload"] is None:
        if d["dir"] == "fwd":
            d["offload"] = {"type": "none", "dev": None}
        else:
            raise InputError(d["field"] + ".offload.dev", "is required: offload type packet is the default for "
                                                          "in/out policies (set offload.type: none otherwise)")
    return d


# --------------------------------------------------------------------------------------------
# object kinds: identity, comparison, ownership, rendering
# --------------------------------------------------------------------------------------------

def _hex(n):
    return "0x%08x" % n


def _same_sel(cur, want):
    if selector_is_any(want):
        return selector_is_any(cur)
    if cur is None:
        return False
    return all(cur.get(f) == want.get(f) for f in ("src", "dst", "proto", "sport", "dport"))


class SAKind(ObjectKind):
    name = "SA"

    def __init__(self, rng=OWNED_REQID_RANGE):
        self.rng = rng

    def key(self, obj):
        # the kernel's SA identity: daddr, spi, proto (+ mark, which we never set)
        return (obj["dst"], obj["spi"], obj.get("proto") or "esp", obj.get("mark"))

    def owned(self, obj):
        return self.rng[0] <= (obj.get("reqid") or 0) <= self.rng[1]

    def describe(self, obj):
        spi = obj.get("spi")
        return "SA src %s dst %s spi %s" % (obj.get("src") or "*", obj["dst"], _hex(spi) if spi is not None else "?")

    def differences(self, cur, want):
        """Names of the fields in which ``cur`` (parsed) does not satisfy ``want`` (completed)."""
        diff = []
        if cur["src"] != want["src"]:
            diff.append("src")
        if cur["reqid"] != want["reqid"]:
            diff.append("reqid")
        if cur["mode"] is not None and cur["mode"] != want["mode"]:
            diff.append("mode")
        if cur["direction"] is not None and cur["direction"] != want["direction"]:
            diff.append("direction")
        ca = cur.get("aead")
        wa = want["aead"]
        if ca is None or ca["name"] != wa["name"] or ca["icv"] != wa["icv"]:
            diff.append("aead")
        elif ca["key"] is not None and ca["key"] != wa["key"]:
            diff.append("aead.key")
        if cur["esn"] != want["esn"]:
            diff.append("esn")
        if want["direction"] == "in" and cur["replay_window"] != want["replay_window"]:
            diff.append("replay_window")
        if not _same_sel(cur["sel"], want["sel"]):
            diff.append("sel")
        co, wo = cur["offload"], want["offload"]
        if wo["type"] == "none":
            if co["type"] != "none":
                diff.append("offload")
        elif co["type"] == "none":
            if not (wo["type"] == "crypto" and wo.get("fallback") == "allow"):
                diff.append("offload")
        elif co["type"] != wo["type"] or co["dev"] != wo["dev"]:
            diff.append("offload")
        if cur.get("extras"):
            diff.append("extras")
        return diff

    def same(self, current, desired):
        return not self.differences(current, desired)

    def identical(self, a, b):
        """Strict equality of two parsed SAs (rollback check)."""
        fields = ("src", "dst", "spi", "reqid", "mode", "direction", "aead", "esn", "replay_window", "offload")
        return all(a.get(f) == b.get(f) for f in fields) and _same_sel(a["sel"], b["sel"])

    # --- rendering ---------------------------------------------------------------------------
    def render_add(self, sa, features, keys="mask"):
        """``keys``: mask (display), plain (stdin), reveal (rendered with reveal_keys)."""
        parts = ["xfrm state add src", sa["src"], "dst", sa["dst"], "proto esp spi", _hex(sa["spi"]),
                 "reqid", _hex(sa["reqid"]), "mode", sa["mode"] or "transport"]
        off = sa["offload"] or _NO_OFFLOAD
        direction = sa.get("direction")
        if direction and features.get("sa_dir") and off["type"] == "none":
            parts += ["dir", direction]
        if direction == "out":
            window = out_replay_window(sa["esn"], features)
        else:
            window = sa["replay_window"]
        parts += ["replay-window", str(window)]
        if sa["esn"]:
            parts.append("flag esn")
        a = sa["aead"]
        if a["key"] is None:
            raise ValueError("%s: key unknown (hidden or redacted by the kernel); cannot render it" % self.describe(sa))
        if keys == "plain":
            k = "0x" + a["key"]
        elif keys == "reveal":
            k = "0x" + a["key"].upper()
        else:
            k = REDACTED
        parts += ["aead", a["name"], k, str(a["icv"])]
        sel = sa.get("sel")
        if not selector_is_any(sel):
            parts += ["sel", "src", sel["src"], "dst", sel["dst"]]
            if sel.get("proto"):
                parts += ["proto", str(sel["proto"])]
                if sel.get("sport"):
                    parts += ["sport", str(sel["sport"])]
                if sel.get("dport"):
                    parts += ["dport", str(sel["dport"])]
        if off["type"] != "none":
            odir = off.get("dir") or direction or "out"
            if off["type"] == "packet":
                parts += ["offload packet dev", off["dev"], "dir", odir]
            elif features.get("offload_packet"):
                parts += ["offload crypto dev", off["dev"], "dir", odir]
            else:  # iproute2 < 6.2: "offload dev DEV dir DIR" is crypto offload
                parts += ["offload dev", off["dev"], "dir", odir]
        return " ".join(parts)

    def render_delete(self, sa):
        return "xfrm state delete src %s dst %s proto %s spi %s" % (sa["src"], sa["dst"], sa.get("proto") or "esp",
                                                                    _hex(sa["spi"]))

    # --- output --------------------------------------------------------------------------------
    def public(self, sa, reveal=False):
        """A secret-free dict for results (the config shape)."""
        a = sa.get("aead")
        out = {"src": sa["src"], "dst": sa["dst"], "spi": _hex(sa["spi"]), "reqid": _hex(sa["reqid"] or 0),
               "mode": sa["mode"], "direction": sa["direction"], "esn": sa["esn"],
               "replay_window": sa["replay_window"],
               "aead": {"name": a["name"], "key": REDACTED, "icv": a["icv"]} if a else None,
               "sel": None, "offload": {"type": sa["offload"]["type"], "dev": sa["offload"]["dev"]}}
        if not selector_is_any(sa.get("sel")):
            out["sel"] = {k: sa["sel"][k] for k in ("src", "dst", "proto", "sport", "dport") if sa["sel"].get(k)}
        if sa.get("extras"):
            out["extras"] = list(sa["extras"])
        if sa.get("stats"):
            out["stats"] = dict(sa["stats"])
        return out


class SPKind(ObjectKind):
    name = "SP"

    def __init__(self, rng=OWNED_REQID_RANGE):
        self.rng = rng

    def key(self, obj):
        return (obj["src"], obj["dst"], obj.get("proto"), obj.get("sport"), obj.get("dport"), obj["dir"],
                obj.get("ptype") or "main", mark_key(obj.get("mark")), obj.get("if_id"))

    def owned(self, obj):
        t = obj.get("tmpls") or []
        return bool(t) and all(self.rng[0] <= x["reqid"] <= self.rng[1] for x in t)

    def describe(self, obj):
        up = ""
        if obj.get("proto"):
            up = " proto %s" % obj["proto"]
            if obj.get("sport"):
                up += " sport %s" % obj["sport"]
            if obj.get("dport"):
                up += " dport %s" % obj["dport"]
        mk = mark_key(obj.get("mark"))
        if isinstance(mk, tuple):
            up_dir = " dir %s mark %#x/%#x" % (obj["dir"], mk[0], mk[1])
        else:
            up_dir = " dir %s" % obj["dir"]
        return "SP src %s dst %s%s%s" % (obj["src"], obj["dst"], up, up_dir)

    @staticmethod
    def _tmpl_norm(t):
        zero = (None, "0.0.0.0", "::")
        return (None if t.get("src") in zero else t["src"], None if t.get("dst") in zero else t["dst"],
                t.get("proto") or "esp", t.get("reqid"), t.get("mode") or "transport", t.get("level") or "required")

    def differences(self, cur, want):
        diff = []
        for f in ("priority", "action"):
            if cur[f] != want[f]:
                diff.append(f)
        if [self._tmpl_norm(t) for t in cur["tmpls"]] != [self._tmpl_norm(t) for t in want["tmpls"]]:
            diff.append("tmpl")
        co, wo = cur["offload"], want["offload"]
        if co["type"] != wo["type"] or (wo["type"] != "none" and co["dev"] != wo["dev"]):
            diff.append("offload")
        if cur.get("extras"):
            diff.append("extras")
        return diff

    def same(self, current, desired):
        return not self.differences(current, desired)

    def identical(self, a, b):
        return self.key(a) == self.key(b) and not self.differences(a, b) and not self.differences(b, a)

    def _selector(self, sp):
        parts = ["src", sp["src"], "dst", sp["dst"]]
        if sp.get("proto"):
            parts += ["proto", str(sp["proto"])]
            if sp.get("sport"):
                parts += ["sport", str(sp["sport"])]
            if sp.get("dport"):
                parts += ["dport", str(sp["dport"])]
        return parts

    @staticmethod
    def _mark(sp):
        mk = mark_key(sp.get("mark"))
        if mk is None:
            return []
        if not isinstance(mk, tuple):
            raise ValueError("mark %r of a policy cannot be rendered (not value/mask)" % (mk,))
        return ["mark", "%#x" % mk[0], "mask", "%#x" % mk[1]]

    def render_add(self, sp, features=None, keys=None, verb="add"):
        parts = ["xfrm policy", verb] + self._selector(sp) + ["dir", sp["dir"]] + self._mark(sp)
        if sp["action"] == "block":
            parts += ["action block"]
        parts += ["priority", str(sp["priority"]), "ptype", sp.get("ptype") or "main"]
        if sp["offload"]["type"] == "packet":
            parts += ["offload packet dev", sp["offload"]["dev"]]
        for t in sp["tmpls"]:
            src, dst, proto, reqid, mode, level = self._tmpl_norm(t)
            parts.append("tmpl")
            if src:
                parts += ["src", src]
            if dst:
                parts += ["dst", dst]
            parts += ["proto", proto, "reqid", _hex(reqid), "mode", mode]
            if level != "required":
                parts += ["level", level]
        return " ".join(parts)

    def render_update(self, sp, features=None, keys=None):
        return self.render_add(sp, features, keys, verb="update")

    def render_delete(self, sp):
        parts = (["xfrm policy delete"] + self._selector(sp) + ["dir", sp["dir"]] + self._mark(sp)
                 + ["ptype", sp.get("ptype") or "main"])
        return " ".join(parts)

    def public(self, sp, reveal=False):
        out = {"src": sp["src"], "dst": sp["dst"], "dir": sp["dir"], "priority": sp["priority"],
               "action": sp["action"], "offload": dict(sp["offload"])}
        for f in ("proto", "sport", "dport"):
            if sp.get(f):
                out[f] = sp[f]
        t = sp.get("tmpls") or []
        if t:
            src, dst, proto, reqid, mode, level = self._tmpl_norm(t[0])
            out["tmpl"] = {"src": src, "dst": dst, "proto": proto, "reqid": _hex(reqid), "mode": mode, "level": level}
        if len(t) > 1:
            out["extra_tmpls"] = len(t) - 1
        mk = mark_key(sp.get("mark"))
        if isinstance(mk, tuple):
            out["mark"] = {"value": "%#x" % mk[0], "mask": "%#x" % mk[1]}
        if sp.get("extras"):
            out["extras"] = list(sp["extras"])
        return out


# --------------------------------------------------------------------------------------------
# operations: one batch, its undo, and how far a failed batch got
# --------------------------------------------------------------------------------------------
# An op is a tuple (verb, obj, old): verb "add" (old None), "delete" (obj = the current object),
# "update" (SP only; old = the current object it replaces).

def ops_for_plan(kind, p):
    """Order: adds of new objects, then each replaced object (SA: delete+add, SP: update), then
    deletes of removed objects.  A failure in the first part needs no re-adds to roll back."""
    ops = [("add", d, None) for d in p.add]
    for cur, want in p.replace:
        if isinstance(kind, SPKind):
            ops.append(("update", want, cur))
        else:
            ops.append(("delete", cur, None))
            ops.append(("add", want, None))
    ops += [("delete", c, None) for c in p.delete]
    return ops


def render_ops(kind, ops, features, keys="mask"):
    lines = []
    for verb, obj, _old in ops:
        if verb == "delete":
            lines.append(kind.render_delete(obj))
        elif verb == "update":
            lines.append(kind.render_update(obj, features, keys))
        else:
            lines.append(kind.render_add(obj, features, keys))
    return lines


def undo_op(op):
    """The op that undoes ``op``: an add is deleted, a delete added back, an update updated back."""
    verb, obj, old = op
    if verb == "add":
        return ("delete", obj, None)
    if verb == "delete":
        return ("add", obj, None)
    return ("update", old, obj)


def applied_count(kind, ops, current):
    """How many leading ops took effect, judged from the objects read back after a failed batch.

    `ip -batch` stops at the first failing xfrm command (the kernel's error makes `ip xfrm` exit
    with rc 2 and no "Command failed -:N" line), so the ops applied are a prefix of the list.
    An add counts as applied when its key is present (even if, say, crypto offload fell back), a
    delete when the object it removes is gone, an update when the old object is gone.
    """
    cur = {}
    for c in current:
        cur.setdefault(kind.key(c), c)
    deleted = {}
    n = 0
    for verb, obj, old in ops:
        k = kind.key(obj)
        c = cur.get(k)
        if verb == "delete":
            ok = c is None or not kind.identical(c, obj)
            deleted[k] = obj
        elif verb == "add":
            prev = deleted.get(k)
            ok = c is not None and (prev is None or not kind.identical(c, prev))
        else:
            ok = c is not None and not kind.identical(c, old)
        if not ok:
            break
        n += 1
    return n


def check_lost(kind, adds):
    """An SA marked ``installed`` (its key was installed by an earlier run) that the host no longer
    has was lost (link down, reboot, a teardown running at the same time): it is never added again
    with its old key.  Raises InputError before any change."""
    for sa in adds:
        if sa.get("installed"):
            raise InputError(sa["field"] + ".installed", (
                "%s (reqid %s) was installed by an earlier run and is gone from this host now: lost since "
                "the run read the host (link down, reboot, driver reset, a teardown at the same time). "
                "It is never added again with its old key; nothing was changed. Run site.yml again: its "
                "SA lifecycle step rotates this direction (new SPI and key) on both peers"
                % (kind.describe(sa), _hex(sa["reqid"]))))


def check_replace_keys(kind, replace):
    """Refuse to replace an SA with one that keeps its key (see check_key_reuse)."""
    for cur, want in replace:
        ca = cur.get("aead") or {}
        if ca.get("key") is not None and ca.get("key") == want["aead"]["key"]:
            raise InputError(want["field"] + ".aead.key", "%s differs (%s) but keeps its key: re-creating it restarts "
                                                          "its sequence numbers under the same key (AES-GCM nonce "
                                                          "reuse); give it a new key (and SPI)"
                             % (kind.describe(cur), ", ".join(kind.differences(cur, want))))


def state_matches(kind, before, after, keys):
    """True if every object whose key is in ``keys`` is the same in ``before`` and ``after``."""
    b = {kind.key(o): o for o in before}
    a = {kind.key(o): o for o in after}
    for k in keys:
        x, y = b.get(k), a.get(k)
        if (x is None) != (y is None):
            return False
        if x is not None and not kind.identical(x, y):
            return False
    return True


# --------------------------------------------------------------------------------------------
# text for diffs
# --------------------------------------------------------------------------------------------

def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _yaml(obj, indent):
    pad = " " * indent
    lines = []
    for k in obj:
        v = obj[k]
        if isinstance(v, dict):
            lines.append("%s%s:" % (pad, k))
            lines.extend(_yaml(v, indent + 2))
        elif isinstance(v, list):
            lines.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(x) for x in v)))
        else:
            lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    return lines


def to_text(objs):
    """YAML-ish text of a list of public (already redacted) dicts, for --diff."""
    lines = []
    for o in objs:
        sub = _yaml(o, 2)
        lines.append("- " + sub[0].lstrip())
        lines.extend(sub[1:])
    return "\n".join(lines) + ("\n" if lines else "")


# --------------------------------------------------------------------------------------------
# capabilities
# --------------------------------------------------------------------------------------------

SA_DIR_KERNEL = (6, 10)


def kernel_version(release):
    """'6.18.44-fc' -> (6, 18); unknown -> (0, 0)."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def parse_features(state_usage, kernel_release):
    """What this host's ip and kernel can do, from `ip xfrm state help` (usage on stderr).

    offload_packet: iproute2 >= 6.2 knows `offload packet` (states and policies).
    sa_dir: the SA direction attribute is in effect: iproute2 >= 6.11 sends it (`dir DIR`, also
    set by `offload ... dir`) and kernel >= 6.10 honours it.  It decides the outbound replay
    window (see out_replay_window).
    """
    usage = parse_state_usage(state_usage)  # the one usage parser (ipsec_offload_info reads it too)
    ip_dir = bool(usage["sa_dir"])
    kv = kernel_version(kernel_release)
    return {"offload_packet": bool(usage["offload_packet"]),
            "sa_dir": ip_dir and kv >= SA_DIR_KERNEL,
            "iproute2_sa_dir": ip_dir, "kernel": "%d.%d" % kv}
