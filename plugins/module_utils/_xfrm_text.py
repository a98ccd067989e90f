# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parsers of `ip xfrm` text: SAs (`ip [-s] xfrm state`), SPs (`ip [-s] xfrm policy`), the
offload line, the per-SA counters, the offloaded-object scan and the usage probe (`ip xfrm state
help`).  Pure, text in and plain data out.

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
    cur = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if raw[0] not in " \t":
            if raw.startswith("src "):
                cur = (raw.split(), [])
                blocks.append(cur)
            else:
                cur = None  # a prompt, a comment, "Error: ...": not ours
            continue
        if cur is not None:
            cur[1].append(raw.strip())
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
# parsers, the SA counters, the offloaded-object scan and offload_devices all read it through here.
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


def _offload(line):
    """The offload line as a model dict {type, dev, dir}; iproute2 < 6.2 prints no "mode": it could
    only create crypto offload, so that reads as crypto."""
    dev, dirn, mode = offload_line(line) or (None, None, None)
    return {"type": mode or "crypto", "dev": dev, "dir": dirn}


def parse_states(text):
    """Parse `ip [-s] xfrm state [list]` output into a list of SA dicts."""
    out = []
    for head, body in _blocks(text):
        if len(head) < 4 or head[2] != "dst":
            continue
        sa = {"src": head[1], "dst": head[3], "proto": None, "spi": None, "reqid": 0, "mode": None,
              "direction": None, "aead": None, "esn": False, "replay_window": 0, "sel": None,
              "offload": dict(_NO_OFFLOAD), "mark": None, "if_id": None, "flags": [], "extras": [],
              "stats": None}
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
                key = tok[2] if len(tok) > 2 else None
                icv = tok[-1]
                if key is None or not key.lower().startswith("0x"):
                    key = None  # "<<Keys hidden>>" (list nokeys)
                else:
                    key = key[2:].lower()
                    if not key.strip("0"):
                        key = None  # kernel lockdown=confidentiality zeroes keys
                sa["aead"] = {"name": tok[1], "key": key, "icv": int(icv) if icv.isdigit() else None}
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
            elif first == "replay_window" and section == "esn":
                esn_window = int(tok[1].rstrip(","))
            elif first == "crypto" and len(tok) > 2 and tok[1] == "offload":
                sa["offload"] = _offload(line)
            elif first == "dir" and len(tok) == 2:
                sa["direction"] = tok[1]
            elif first == "sel":
                sa["sel"] = _parse_selector(tok[1:])
            elif first == "lifetime":
                section = "current" if tok[1] == "current:" else "config"
            elif first == "stats:":
                section = "stats"
            elif section == "current" and first.endswith("(bytes),"):
                sa["stats"] = sa["stats"] or {}
                sa["stats"]["bytes"] = int(first.split("(")[0])
                sa["stats"]["packets"] = int(tok[1].split("(")[0])
            elif section == "stats" and first == "replay-window":
                sa["stats"] = sa["stats"] or {}
                for i in range(0, len(tok) - 1, 2):
                    if tok[i] in ("replay", "failed"):
                        sa["stats"][tok[i]] = int(tok[i + 1])
        out.append(_finish_sa(sa, header_window, esn_window))
    return out


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
                off = _offload(line)
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

# Lines that carry key material: skipped as soon as they are seen, never stored.
_SA_KEY_LINE_RE = re.compile(r"^(aead|enc|auth|auth-trunc|comp)\s")
_SA_RE = {
    "proto": re.compile(r"^proto (\S+)"),
    "spi": re.compile(r"\bspi (0x[0-9a-fA-F]+)"),
    "reqid": re.compile(r"\breqid (\d+)"),
    "mode": re.compile(r"\bmode (\S+)"),
    "esn_seq": re.compile(r"^seq-hi (0x[0-9a-fA-F]+), seq (0x[0-9a-fA-F]+), oseq-hi (0x[0-9a-fA-F]+), "
                          r"oseq (0x[0-9a-fA-F]+)"),
    "esn_window": re.compile(r"^replay_window (\d+), bitmap-length"),
    "legacy": re.compile(r"^anti-replay context: seq (0x[0-9a-fA-F]+), oseq (0x[0-9a-fA-F]+)"),
    "dir": re.compile(r"^dir (in|out)\s*$"),
    "sel": re.compile(r"^sel src (\S+) dst (\S+)"),
    "lifetime": re.compile(r"^(\d+)\(bytes\), (\d+)\(packets\)\s*$"),
    "times": re.compile(r"^add (\S+ \S+|-) use (\S+ \S+|-)\s*$"),
    "stats": re.compile(r"^replay-window (\d+) replay (\d+) failed (\d+)\s*$"),
    "header": re.compile(r"^replay-window (\d+)(.*)$"),
}


def _new_sa(src, dst):
    return {
        "src": src, "dst": dst, "proto": None, "spi": None, "spi_int": None, "reqid": None, "mode": None,
        "flags": [], "dir": None, "sel_src": None, "sel_dst": None,
        "offloaded": False, "offload_dev": None, "offload_dir": None, "offload_mode": None,
        "replay_window": None, "seq": None, "oseq": None,
        "bytes": None, "packets": None, "added": None, "last_used": None,
        "replay_window_errors": None, "replay_errors": None, "integrity_failed": None,
    }


def _header_flags(rest):
    """' seq 0x00000000 flag esn (0x10000000)' / ' flag af-unspec esn' -> ['esn'] / ['af-unspec', 'esn']."""
    tokens = rest.split()
    if "flag" not in tokens:
        return []
    flags = []
    for tok in tokens[tokens.index("flag") + 1:]:
        if tok.startswith("("):
            break
        flags.append(tok)
    return flags


def _id_line(cur, line):
    cur["proto"] = _SA_RE["proto"].match(line).group(1)
    spi = _SA_RE["spi"].search(line)
    if spi:
        cur["spi_int"] = int(spi.group(1), 16)
        cur["spi"] = "0x%08x" % cur["spi_int"]
    reqid = _SA_RE["reqid"].search(line)
    cur["reqid"] = int(reqid.group(1)) if reqid else None
    mode = _SA_RE["mode"].search(line)
    cur["mode"] = mode.group(1) if mode else None


def _counter_line(cur, line):
    """One body line of an SA into its counter dict (the id, key and offload lines excluded)."""
    m = _SA_RE["stats"].match(line)
    if m:
        cur["replay_window_errors"], cur["replay_errors"], cur["integrity_failed"] = (int(g) for g in m.groups())
        return
    m = _SA_RE["header"].match(line)
    if m:
        if cur["replay_window"] is None:
            cur["replay_window"] = int(m.group(1))
        cur["flags"] = _header_flags(m.group(2))
        return
    m = _SA_RE["esn_seq"].match(line)
    if m:
        hi, lo, ohi, olo = (int(g, 16) for g in m.groups())
        cur["seq"], cur["oseq"] = (hi << 32) | lo, (ohi << 32) | olo
        return
    m = _SA_RE["esn_window"].match(line)
    if m:
        cur["replay_window"] = int(m.group(1))  # with ESN the header says 0; this is the real window
        return
    m = _SA_RE["legacy"].match(line)
    if m:
        cur["seq"], cur["oseq"] = int(m.group(1), 16), int(m.group(2), 16)
        return
    for name, keys in (("dir", ("dir",)), ("sel", ("sel_src", "sel_dst")), ("lifetime", ("bytes", "packets")),
                       ("times", ("added", "last_used"))):
        m = _SA_RE[name].match(line)
        if m:
            vals = m.groups()
            if name == "lifetime":
                vals = (int(vals[0]), int(vals[1]))
            elif name == "times":
                vals = tuple(None if g == "-" else g for g in vals)
            cur.update(zip(keys, vals))
            return


def parse_xfrm_sa_counters(text):
    """`ip [-s] xfrm state [list nokeys]` text -> list of per-SA counter dicts (see ipsec_offload_info
    RETURN xfrm_states).

    Counters-only view for the info module: it keeps identifiers, offload facts and counts, and
    skips every key line (aead/enc/auth/auth-trunc/comp) as it reads it.  Blocks as in parse_states
    (an SA starts with "src A dst B" in column 0; tabs or spaces before the other lines).
    """
    sas = []
    for head, body in _blocks(text or ""):
        if len(head) != 4 or head[2] != "dst":
            continue
        cur = _new_sa(head[1], head[3])
        sas.append(cur)
        for line in body:
            if _SA_KEY_LINE_RE.match(line):
                continue
            if line.startswith("proto "):
                _id_line(cur, line)
                continue
            off = offload_line(line)
            if off:
                cur["offloaded"] = True
                cur["offload_dev"], cur["offload_dir"], cur["offload_mode"] = off
                continue
            _counter_line(cur, line)
    for sa in sas:
        if sa["dir"] is None and sa["offload_dir"]:
            sa["dir"] = sa["offload_dir"]
    return sas


# --------------------------------------------------------------------------------------------
# what holds a device busy: the offloaded objects (mlx_devlink_eswitch)
# --------------------------------------------------------------------------------------------

_SPI_RE = re.compile(r"\bspi (0x[0-9a-fA-F]+|\d+)")
_DIR_RE = re.compile(r"^\s*dir (\S+)")


def offloaded_xfrm(text, kind, netdevs=None):
    """Offloaded objects in ``ip xfrm state list nokeys`` (kind "state") or ``ip xfrm policy list``
    (kind "policy") output, optionally only those bound to one of ``netdevs``.

    -> list of {"kind", "dev", "dir", "mode", "label"}; label is the selector/SPI, never a key.
    """
    wanted = set(netdevs) if netdevs is not None else None
    found = []
    for head, body in _blocks(text or ""):
        spi = next((m.group(1) for m in map(_SPI_RE.search, body) if m), None)
        dirn = next((m.group(1) for m in map(_DIR_RE.match, body) if m), None)
        for dev, off_dir, off_mode in filter(None, map(offload_line, body)):
            if wanted is not None and dev not in wanted:
                continue
            label = " ".join(head)
            if kind == "state" and spi:
                label += " spi " + spi
            if kind == "policy" and dirn:
                label += " dir " + dirn
            found.append({"kind": kind, "dev": dev, "dir": off_dir or dirn, "mode": off_mode, "label": label})
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
