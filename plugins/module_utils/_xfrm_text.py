# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parsers of `ip xfrm` text: SAs (`ip [-s] xfrm state`), SPs (`ip [-s] xfrm policy`), the
offload line and the usage probe (`ip xfrm state help`).  The per-SA counters of the info module and
the offloaded objects that hold a device busy are views of what parse_states / parse_policies read.
Pure, text in and plain data out.

Every reader of `ip xfrm` output uses these functions: the modules through _xfrm (which re-exports
them beside the SA/SP model), ipsec_offload_info, mlx_devlink_eswitch, tc_flower_vlan, and the lab
and molecule helpers.  Those helpers run this file outside Ansible (lab/reliability.sh imports it by
path on the controller; extensions/molecule/default/files/xfrm_dump.py is sent to the host with
this file's text in front of it), so it imports the standard library only and nothing of the
collection.

`ip xfrm` has no JSON output.  Layout (iproute2 ip/ipxfrm.c): a block starts with an unindented
"src ..." line; every other line of the block is indented (TAB, or 8 spaces in copies from mail).
We handle the plain and `-s` layouts, `replay-window 0` + "anti-replay esn context: ...
replay_window N" (ESN), a missing "sel" line (af-unspec SAs), the "dir in|out" line (kernel >= 6.10
with iproute2 >= 6.11), "crypto offload parameters: dev X [dir D] [mode M]" (mode from iproute2 6.2
on; policies print no dir), fwd policies and policies without a template.
"""

from __future__ import annotations

import re

# IP protocol names as iproute2 prints and accepts them, and the protocols whose selectors carry
# ports: the one table (_validate re-exports it for input checks).
PROTO_NUMBERS = {
    "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47, "esp": 50,
    "ah": 51, "ipv6-icmp": 58, "icmpv6": 58, "dccp": 33, "sctp": 132, "mobility-header": 135,
    "ipv6-mh": 135, "udplite": 136,
}
PROTO_NAMES = {1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 50: "esp",
               51: "ah", 58: "ipv6-icmp", 33: "dccp", 132: "sctp", 135: "mobility-header", 136: "udplite"}
PORT_PROTOS = (6, 17, 33, 132)   # tcp, udp, dccp, sctp: a selector with one of these carries ports

_INT_PAREN_RE = re.compile(r"\(.*\)$")


# --------------------------------------------------------------------------------------------
# blocks, SAs and SPs (the model's shapes: see _xfrm)
# --------------------------------------------------------------------------------------------

def _int(tok):
    """'0x00001000', '4096', '0x00001001(4097)', '2(0x00000002)' -> int."""
    tok = _INT_PAREN_RE.sub("", tok)
    return int(tok, 16) if tok.lower().startswith("0x") else int(tok, 10)


def _proto_num(tok):
    if tok.isdigit():
        return int(tok)
    return PROTO_NUMBERS.get(tok.lower(), tok)


def _blocks(text):
    """Split `ip xfrm` output into blocks: (header tokens, [stripped body lines])."""
    blocks = []
    body = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw[0] == "\t" or raw[0] == " ":
            if body is not None:
                body.append(line)
        elif raw.startswith("src "):
            body = []
            blocks.append((raw.split(), body))
        else:
            body = None  # a prompt, a comment, "Error: ...": not ours
    return blocks


def _parse_selector(tokens):
    """Tokens after 'sel' (SA) or of a policy header: src A/n dst B/n [proto P [sport|dport N]]."""
    sel = {"src": None, "dst": None, "proto": None, "sport": None, "dport": None, "dev": None}
    i = 0
    n = len(tokens)
    while i < n:
        t = tokens[i]
        v = tokens[i + 1] if i + 1 < n else None
        if t in ("src", "dst"):
            sel[t] = v
        elif t == "proto":
            sel["proto"] = _proto_num(v)
        elif t in ("sport", "type", "key"):
            sel["sport"] = int(v) if v.isdigit() else v
        elif t in ("dport", "code"):
            sel["dport"] = int(v) if v.isdigit() else v
        elif t == "dev":
            sel["dev"] = v
        elif t == "uid":
            pass
        else:
            i += 1
            continue
        i += 2
    return sel


_NO_OFFLOAD = {"type": "none", "dev": None, "dir": None}

# The one pattern for the offload line of `ip xfrm state`/`ip xfrm policy` output: the SA/SP
# parsers and offload_devices read it through here.
# iproute2 < 6.2 prints neither "mode" nor, for policies, "dir".
OFFLOAD_LINE_RE = re.compile(r"^\s*crypto offload parameters: dev (\S+)(?: dir (\S+))?(?: mode (\S+))?")


def offload_line(line):
    """One output line -> (dev, dir, mode) when it is a "crypto offload parameters" line, else None
    (dir/mode None when not printed)."""
    m = OFFLOAD_LINE_RE.match(line)
    return m.groups() if m else None


def offload_devices(text):
    """Netdevs named on the offload lines of `ip xfrm state`/`policy` output."""
    return {dev for dev, _d, _m in filter(None, map(offload_line, (text or "").splitlines()))}


def _offload(found):
    """offload_line()'s (dev, dir, mode), or None, as a model dict {type, dev, dir}; iproute2 < 6.2
    prints no "mode": it could only create crypto offload, so that reads as crypto."""
    dev, dirn, mode = found or (None, None, None)
    return {"type": mode or "crypto", "dev": dev, "dir": dirn}


def _counters(sa):
    """The SA's counters dict, made on the first counter line: what `ip [-s] xfrm state` shows beside
    the SA itself, read only by parse_xfrm_sa_counters (the ESN sequence line is kept as its tokens
    in "seq_tokens" and converted there: the modules read every SA and never look at it)."""
    if sa["counters"] is None:
        sa["counters"] = {"offload_mode": None, "seq": None, "oseq": None, "added": None, "last_used": None,
                          "replay_window_errors": None}
    return sa["counters"]


def parse_states(text):
    """Parse `ip [-s] xfrm state [list]` output into a list of SA dicts (each with its counters: see
    parse_xfrm_sa_counters)."""
    out = []
    for head, body in _blocks(text):
        if len(head) < 4 or head[2] != "dst":
            continue
        sa = {"src": head[1], "dst": head[3], "proto": None, "spi": None, "reqid": 0, "mode": None,
              "direction": None, "aead": None, "esn": False, "replay_window": 0, "sel": None,
              "offload": dict(_NO_OFFLOAD), "mark": None, "if_id": None, "flags": [], "extras": [],
              "stats": None, "counters": None, "seq_tokens": None}
        header_window = None
        esn_window = None
        section = None
        for line in body:
            tok = line.split()
            first = tok[0]
            if first == "proto" and sa["proto"] is None:
                sa["proto"] = tok[1]
                for i in range(2, len(tok) - 1):
                    if tok[i] == "spi":
                        sa["spi"] = _int(tok[i + 1])
                    elif tok[i] == "reqid":
                        sa["reqid"] = _int(tok[i + 1])
                    elif tok[i] == "mode":
                        sa["mode"] = tok[i + 1]
                section = None
            elif first == "replay-window" and section != "stats":
                if header_window is None:
                    header_window = int(tok[1])
                if "flag" in tok:
                    flags = [f for f in tok[tok.index("flag") + 1:] if not f.startswith("(")]
                    sa["flags"] = flags
                    sa["esn"] = "esn" in flags
            elif first == "aead":
                sa["aead"] = _aead(tok)
            elif first == "seq-hi" and section == "esn":
                sa["seq_tokens"] = tok
            elif first in ("enc", "auth", "auth-trunc", "comp", "encap", "coa", "output-mark", "tfcpad",
                           "security", "pcpu-num"):
                sa["extras"].append(first)
            elif first == "mark":
                sa["mark"] = tok[1]
                sa["extras"].append("mark")
            elif first == "if_id":
                sa["if_id"] = _int(tok[1])
                sa["extras"].append("if_id")
            elif first == "anti-replay":
                section = "esn" if "esn" in tok else None
                if section is None and len(tok) > 5 and tok[2] == "seq" and tok[4] == "oseq":
                    # anti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000 (no ESN)
                    _counters(sa).update(seq=_int(tok[3].rstrip(",")), oseq=_int(tok[5].rstrip(",")))
            elif first == "replay_window" and section == "esn":
                esn_window = int(tok[1].rstrip(","))
            elif first == "crypto" and len(tok) > 2 and tok[1] == "offload":
                found = offload_line(line)
                sa["offload"] = _offload(found)
                if found and found[2]:  # the mode as printed (none before iproute2 6.2), for the counters
                    _counters(sa)["offload_mode"] = found[2]
            elif first == "dir" and len(tok) == 2:
                sa["direction"] = tok[1]
            elif first == "sel":
                sa["sel"] = _parse_selector(tok[1:])
            elif first == "lifetime":
                section = "current" if tok[1] == "current:" else "config"
            elif first == "stats:":
                section = "stats"
            elif section in ("current", "stats"):
                _stats_line(sa, section, tok)
        out.append(_finish_sa(sa, header_window, esn_window))
    return out


def _stats_line(sa, section, tok):
    """A line of `ip -s xfrm state`'s "lifetime current:" or "stats:" section."""
    first = tok[0]
    if section == "current" and first.endswith("(bytes),"):
        sa["stats"] = sa["stats"] or {}
        sa["stats"]["bytes"] = int(first.split("(")[0])
        sa["stats"]["packets"] = int(tok[1].split("(")[0])
    elif section == "current" and first == "add" and "use" in tok:
        use = tok.index("use")
        added, used = " ".join(tok[1:use]), " ".join(tok[use + 1:])
        _counters(sa).update(added=None if added == "-" else added, last_used=None if used == "-" else used)
    elif section == "stats" and first == "replay-window":
        sa["stats"] = sa["stats"] or {}
        for i in range(0, len(tok) - 1, 2):
            if tok[i] in ("replay", "failed"):
                sa["stats"][tok[i]] = int(tok[i + 1])
        _counters(sa)["replay_window_errors"] = int(tok[1])


def _aead(tok):
    """aead NAME KEY ICV -> {name, key, icv}; key None when hidden (list nokeys) or zeroed (lockdown)."""
    key = tok[2] if len(tok) > 2 else None
    icv = tok[-1]
    if key is None or not key.lower().startswith("0x"):
        key = None  # "<<Keys hidden>>" (list nokeys)
    else:
        key = key[2:].lower()
        if not key.strip("0"):
            key = None  # kernel lockdown=confidentiality zeroes keys
    return {"name": tok[1], "key": key, "icv": int(icv) if icv.isdigit() else None}


def _esn_seq(tok):
    """seq-hi 0x0, seq 0x5, oseq-hi 0x0, oseq 0x0 -> (64-bit seq, 64-bit oseq), or (None, None)."""
    vals = dict(zip(tok[0::2], (t.rstrip(",") for t in tok[1::2])))
    try:
        return ((int(vals["seq-hi"], 16) << 32) | int(vals["seq"], 16),
                (int(vals["oseq-hi"], 16) << 32) | int(vals["oseq"], 16))
    except (KeyError, ValueError):
        return None, None


def _finish_sa(sa, header_window, esn_window):
    if sa["direction"] is None and sa["offload"]["dir"]:
        sa["direction"] = sa["offload"]["dir"]
    sa["replay_window"] = esn_window if esn_window is not None else (header_window or 0)
    extra_flags = [f for f in sa["flags"] if f != "esn"]
    if extra_flags:
        sa["extras"].append("flag " + " ".join(extra_flags))
    return sa


_MARK_TEXT_RE = re.compile(r"(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})/(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})\Z")


def _parse_mark(tok):
    """A policy's "mark V/M" token (iproute2 prints "%#x/%#x": "0/0x1", "0x1/0x1") -> {value, mask},
    None when it is not in that form.  0/0 (never printed: the kernel's "no mark") -> None too."""
    m = _MARK_TEXT_RE.match(tok)
    if m is None:
        return None
    v, mask = (int(x, 16) if x.startswith("0x") else int(x, 10) for x in m.groups())
    if v > 0xFFFFFFFF or mask > 0xFFFFFFFF:
        return None
    return {"value": v, "mask": mask}


def parse_policies(text):
    """Parse `ip [-s] xfrm policy [list]` output into a list of SP dicts."""
    out = []
    for head, body in _blocks(text):
        sel = _parse_selector(head)
        sp = {"src": sel["src"], "dst": sel["dst"], "proto": sel["proto"], "sport": sel["sport"],
              "dport": sel["dport"], "dir": None, "ptype": "main", "priority": 0, "action": "allow",
              "tmpls": [], "offload": {"type": "none", "dev": None}, "mark": None, "if_id": None,
              "extras": [], "socket": False}
        if sel["dev"]:
            sp["extras"].append("dev " + sel["dev"])
        for line in body:
            tok = line.split()
            first = tok[0]
            if first in ("dir", "socket"):
                sp["socket"] = first == "socket"
                sp["dir"] = tok[1]
                for i in range(2, len(tok) - 1):
                    if tok[i] == "priority":
                        sp["priority"] = int(tok[i + 1])
                    elif tok[i] == "action":
                        sp["action"] = tok[i + 1]
                    elif tok[i] == "ptype":
                        sp["ptype"] = tok[i + 1]
                    elif tok[i] == "flag" and not tok[i + 1].startswith("("):
                        sp["extras"].append("flag " + tok[i + 1])
            elif first == "tmpl":
                sp["tmpls"].append({"src": tok[2] if len(tok) > 2 else None, "dst": tok[4] if len(tok) > 4 else None,
                                    "proto": None, "spi": 0, "reqid": 0, "mode": None, "level": "required"})
            elif first == "proto" and sp["tmpls"]:
                t = sp["tmpls"][-1]
                t["proto"] = tok[1]
                for i in range(2, len(tok) - 1):
                    if tok[i] == "spi":
                        t["spi"] = _int(tok[i + 1])
                    elif tok[i] == "reqid":
                        t["reqid"] = _int(tok[i + 1])
                    elif tok[i] == "mode":
                        t["mode"] = tok[i + 1]
            elif first == "level" and sp["tmpls"]:
                sp["tmpls"][-1]["level"] = tok[1]
            elif first == "crypto" and len(tok) > 2 and tok[1] == "offload":
                off = _offload(offload_line(line))
                sp["offload"] = {"type": off["type"], "dev": off["dev"]}
            elif first == "mark":
                mark = _parse_mark(tok[1] if len(tok) > 1 else "")
                if mark is None:  # not the "V/M" iproute2 prints: keep it visible as an extra
                    sp["mark"] = tok[1] if len(tok) > 1 else ""
                    sp["extras"].append("mark")
                else:
                    sp["mark"] = mark
            elif first == "if_id":
                sp["if_id"] = _int(tok[1])
                sp["extras"].append("if_id")
            elif first == "action" and len(tok) > 1:  # not printed on its own line today
                sp["action"] = tok[1]
            elif first == "security":
                sp["extras"].append("ctx")
        out.append(sp)
    return out


# --------------------------------------------------------------------------------------------
# per-SA counters (ipsec_offload_info): identifiers, offload facts and counts, never a key
# --------------------------------------------------------------------------------------------

def parse_xfrm_sa_counters(text):
    """`ip [-s] xfrm state [list nokeys]` text -> list of per-SA counter dicts (see ipsec_offload_info
    RETURN xfrm_states): the info module's view of parse_states, identifiers, offload facts and
    counts, never a key."""
    out = []
    for sa in parse_states(text or ""):
        c, off, sel, stats = sa["counters"] or _counters(sa), sa["offload"], sa["sel"] or {}, sa["stats"] or {}
        if sa["seq_tokens"] is not None:
            c["seq"], c["oseq"] = _esn_seq(sa["seq_tokens"])
        offloaded = off["dev"] is not None
        out.append({
            "src": sa["src"], "dst": sa["dst"], "proto": sa["proto"],
            "spi": None if sa["spi"] is None else "0x%08x" % sa["spi"], "spi_int": sa["spi"],
            "reqid": sa["reqid"], "mode": sa["mode"], "flags": list(sa["flags"]), "dir": sa["direction"],
            "sel_src": sel.get("src"), "sel_dst": sel.get("dst"),
            "offloaded": offloaded, "offload_dev": off["dev"], "offload_dir": off["dir"],
            "offload_mode": c["offload_mode"],
            "replay_window": sa["replay_window"], "seq": c["seq"], "oseq": c["oseq"],
            "bytes": stats.get("bytes"), "packets": stats.get("packets"),
            "added": c["added"], "last_used": c["last_used"],
            "replay_window_errors": c["replay_window_errors"], "replay_errors": stats.get("replay"),
            "integrity_failed": stats.get("failed"),
        })
    return out


# --------------------------------------------------------------------------------------------
# what holds a device busy: the offloaded objects (mlx_devlink_eswitch)
# --------------------------------------------------------------------------------------------

def offloaded_xfrm(text, kind, netdevs=None):
    """Offloaded objects in ``ip xfrm state list nokeys`` (kind "state") or ``ip xfrm policy list``
    (kind "policy") output, optionally only those bound to one of ``netdevs``: a view of
    parse_states / parse_policies.

    -> list of {"kind", "dev", "dir", "mode", "label"}; label is the selector/SPI, never a key.
    """
    wanted = set(netdevs) if netdevs is not None else None
    found = []
    for obj in (parse_states if kind == "state" else parse_policies)(text or ""):
        dev = obj["offload"]["dev"]
        if dev is None or (wanted is not None and dev not in wanted):
            continue
        label = "src %s dst %s" % (obj["src"], obj["dst"])
        if kind == "state":
            if obj["spi"]:
                label += " spi 0x%08x" % obj["spi"]
            dirn, mode = obj["offload"]["dir"] or obj["direction"], (obj["counters"] or {}).get("offload_mode")
        else:
            if obj["proto"] is not None:
                label += " proto %s" % PROTO_NAMES.get(obj["proto"], obj["proto"])
            for port in ("sport", "dport"):
                if obj[port] is not None:
                    label += " %s %s" % (port, obj[port])
            if obj["dir"]:
                label += " dir " + obj["dir"]
            dirn, mode = obj["dir"], obj["offload"]["type"]
        found.append({"kind": kind, "dev": dev, "dir": dirn, "mode": mode, "label": label})
    return found


# --------------------------------------------------------------------------------------------
# the usage probe: `ip xfrm state help` (printed before ip opens a netlink socket)
# --------------------------------------------------------------------------------------------

# White space is free inside the brackets: the probe must not depend on how a build wraps its usage.
_USAGE_RE = {
    # iproute2 <= 6.1: "[ offload [dev DEV] dir DIR ]"; >= 6.2: "[ offload [ crypto | packet ] dev DEV dir DIR ]"
    "offload_packet": re.compile(r"offload\s*\[\s*crypto\s*\|\s*packet\s*\]"),
    "list_nokeys": re.compile(r"list\s*\[\s*nokeys\s*\]"),
    # iproute2 >= 6.11: the SA direction keyword "[ dir DIR ]" (the offload's "dir DIR" has no bracket)
    "sa_dir": re.compile(r"\[\s*dir\s+DIR\s*\]"),
}


def parse_state_usage(text):
    """Usage text of `ip xfrm state help` (stdout and stderr together) -> which keywords this ip
    knows: {"offload_packet", "list_nokeys", "sa_dir"}, True/False, or None each when the text is
    not the usage (no such object, another tool)."""
    text = text or ""
    if "Usage: ip xfrm state" not in text or "offload" not in text:
        return dict.fromkeys(_USAGE_RE)
    return {name: bool(rx.search(text)) for name, rx in _USAGE_RE.items()}
