# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fail-closed guard policies.  Pure: no I/O.

When the kernel loses an SA or an offloaded policy (netdev down flushes the SAs offloaded to it and
its packet-offloaded policies, with no netlink event; a reboot loses everything), the traffic an
SA policy protected would leave in clear until the next converge.  A guard is a software policy
that drops that traffic instead:

  same selector and dir as the SA policy, action block, never offloaded, priority GUARD_PRIORITY,
  and a mark: one guard with `mark 0 mask B`, one with `mark B mask B` (B = GUARD_MARK_BIT).

Why two guards with marks: the kernel calls two policies duplicates (EEXIST on add, `update`
replaces) when type, if_id, the whole selector, the mark (value AND mask, compared exactly since
v5.8: xfrm_policy_mark_match) and the security context match.  Priority, action and offload are
not compared, so a guard with the SA policy's exact selector and no mark is refused.  A mark makes
it a different policy; and since (skb mark & B) is either 0 or B, the pair together matches every
packet whatever its mark.  While the SA policy exists it wins (a better priority, and packet-offload
policies sit at the head of the chain whatever their priority); once it is gone the guard matches
and the kernel drops (XfrmOutPolBlock / XfrmInPolBlock).

GUARD_PRIORITY is 0xffffffff, the worst priority there is: the pair derivation allows SA policy
priorities up to 0xfffffffe (mlx5 refuses 0xffffffff for an offloaded policy; guards are never
offloaded), so every SA policy it makes is strictly better than its guards.  guards_for() refuses
an SA policy whose priority is not better than the guards'.

GUARD_MARK_BIT is 0x1.  Which bit does not change what the pair matches (both values of the bit
are covered); it is what marks a policy as a guard (owned + action block + mark mask == the bit),
and what a foreign policy would have to use, with the same selector, to collide with one (the
modules refuse such a collision naming it, as with any foreign object).

Ownership: guards carry their SA policy's template (same reqid) as the marker, so they are owned
exactly when their SA policy is (reqid in owned_reqid_range).
"""

from __future__ import annotations

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X

GUARD_PRIORITY = 0xFFFFFFFF
GUARD_MARK_BIT = 0x1
GUARD_MARKS = ({"value": 0, "mask": GUARD_MARK_BIT}, {"value": GUARD_MARK_BIT, "mask": GUARD_MARK_BIT})
SCOPES = ("all", "policies", "guards")

_SELECTOR = ("src", "dst", "proto", "sport", "dport")


def _int(value, what):
    if isinstance(value, bool) or value is None:
        raise ValueError("%s: expected an integer, got %r" % (what, value))
    if isinstance(value, int):
        return value
    s = str(value).strip()
    try:
        return int(s, 16) if s.lower().startswith("0x") else int(s, 10)
    except ValueError:
        raise ValueError("%s: %r is not an integer" % (what, value)) from None


def _norm(field, value):
    """Selector values compared for deduplication: protocol names as numbers, ports as ints."""
    if value is None:
        return None
    if field == "proto":
        s = str(value).strip().lower()
        return int(s) if s.isascii() and s.isdigit() else X.PROTO_NUMBERS.get(s, s)
    if field in ("sport", "dport"):
        return str(value).strip()
    return str(value)


def _where(i, sp):
    return "policies[%d] (%s -> %s dir %s)" % (i, sp.get("src"), sp.get("dst"), sp.get("dir"))


def guards_for(policies):
    """The guard policies for ``policies`` (dicts in the xfrm_offload_policy `config` format, as
    _pairs.policy_objects() makes them), in that same format: two per SA policy (action allow or
    left out), in input order, mark 0/B first; deduplicated (two SA policies with one selector and
    dir get one pair).  Block policies (guards included) get none.  Raises ValueError, naming the
    entry, for an SA policy without a template, with a mark, or with a priority not better than
    GUARD_PRIORITY."""
    out = []
    seen = set()
    for i, sp in enumerate(policies or []):
        if not isinstance(sp, dict):
            raise ValueError("policies[%d]: must be a dictionary" % i)
        if (sp.get("action") or "allow") != "allow":
            continue
        for f in ("src", "dst", "dir"):
            if sp.get(f) is None:
                raise ValueError("%s: %s is required" % (_where(i, sp), f))
        tmpl = sp.get("tmpl")
        if not isinstance(tmpl, dict) or tmpl.get("reqid") is None:
            raise ValueError("%s: has no template reqid; a guard carries its SA policy's template as the "
                             "ownership marker" % _where(i, sp))
        if sp.get("mark") is not None:
            raise ValueError("%s: has a mark; guards are made only for SA policies without one (they use "
                             "the mark to differ from the SA policy)" % _where(i, sp))
        prio = _int(sp.get("priority") or 0, _where(i, sp) + ": priority")
        if prio >= GUARD_PRIORITY:
            raise ValueError("%s: priority %d is not better than the guards' (0x%x): the guard would win over "
                             "the SA policy and drop its traffic" % (_where(i, sp), prio, GUARD_PRIORITY))
        base = {f: sp[f] for f in _SELECTOR if sp.get(f) is not None}
        base["dir"] = sp["dir"]
        for mark in GUARD_MARKS:
            ident = (tuple(_norm(f, base.get(f)) for f in _SELECTOR), base["dir"], mark["value"])
            if ident in seen:
                continue
            seen.add(ident)
            g = dict(base)
            g.update(priority=GUARD_PRIORITY, action="block", mark=dict(mark), tmpl=dict(tmpl),
                     offload={"type": "none"})
            out.append(g)
    return out


def is_guard(sp, rng=X.OWNED_REQID_RANGE):
    """True for a parsed (or desired) policy that is one of our guards: owned (template reqid in
    ``rng``), action block, mark mask == GUARD_MARK_BIT."""
    if sp.get("action") != "block":
        return False
    if not X.SPKind(rng).owned(sp):
        return False
    return is_guard_mark(sp.get("mark"))


def is_guard_mark(mark):
    """True when a policy's mark (parsed {value, mask} or config dict) has the guard mask."""
    mk = X.mark_key(mark)
    return isinstance(mk, tuple) and mk[1] == GUARD_MARK_BIT


def in_scope(sp, scope, rng=X.OWNED_REQID_RANGE):
    """Whether an owned policy falls in the xfrm_offload_policy `scope`: all; policies (every
    owned policy but the guards); guards (only the guards)."""
    if scope == "all":
        return True
    if scope == "guards":
        return is_guard(sp, rng)
    if scope == "policies":
        return not is_guard(sp, rng)
    raise ValueError("scope %r is not one of %s" % (scope, ", ".join(SCOPES)))


class ScopedSPKind(X.SPKind):
    """SPKind whose `owned` is limited to one scope: states overridden/deleted/gathered then act on
    (and report) only the owned policies of that scope.  Subclass with `scope` set (see
    scoped_kind): _xfrm_run re-creates the kind from its class with the owned range only."""

    scope = "all"

    def owned(self, obj):
        return X.SPKind.owned(self, obj) and in_scope(obj, self.scope, self.rng)


def scoped_kind(scope, rng=X.OWNED_REQID_RANGE):
    if scope not in SCOPES:
        raise ValueError("scope %r is not one of %s" % (scope, ", ".join(SCOPES)))
    cls = type("SPKind_%s" % scope, (ScopedSPKind,), {"scope": scope})
    return cls(rng)


# --------------------------------------------------------------------------------------------
# deleting a policy whose mark value is 0
# --------------------------------------------------------------------------------------------
# iproute2 (ip/xfrm_policy.c, xfrm_policy_get_or_delete, up to at least 6.15) sends the mark of
# `ip xfrm policy delete|get` only when `mark.m & mark.v` is non-zero.  `delete ... mark 0 mask 0x1`
# therefore reaches the kernel WITHOUT a mark, and since the kernel compares marks exactly it deletes
# the UNMARKED policy with that selector (the SA policy) or fails with ENOENT; `delete index N` is no
# way out (the index lookup compares the mark too).  Seen on kernel 6.18 / iproute2 6.1 (see
# tests/unit/fixtures/xfrm/policy-marks-guards-real.txt and the netns tests).  `add`/`update` send
# any non-zero mask, so only deletion is affected.  Such deletes are sent here, as one
# XFRM_MSG_DELPOLICY netlink request with XFRMA_MARK, with the standard library only.

NETLINK_XFRM = 6
XFRM_MSG_DELPOLICY = 0x14
XFRMA_MARK = 21
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
CLONE_NEWNET = 0x40000000
_DIRS = {"in": 0, "out": 1, "fwd": 2}


def ip_cannot_delete(sp):
    """True when `ip xfrm policy delete` would drop this policy's mark (value 0, mask non-zero)."""
    mk = X.mark_key(sp.get("mark"))
    return isinstance(mk, tuple) and mk[0] == 0 and mk[1] != 0


def delpolicy_message(sp, seq=1):
    """The XFRM_MSG_DELPOLICY request (bytes) for a policy dict (src/dst prefixes, proto, ports, dir,
    mark; main policy type).  The selector is laid out as iproute2 fills it for `add`, since the
    kernel compares selectors bytewise (struct xfrm_selector, xfrm_userpolicy_id)."""
    import ipaddress
    import socket
    import struct
    src, dst = ipaddress.ip_network(sp["src"]), ipaddress.ip_network(sp["dst"])
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    proto = sp.get("proto") or 0
    if isinstance(proto, str):
        proto = int(proto) if proto.isdigit() else X.PROTO_NUMBERS[proto.lower()]
    sport, dport = sp.get("sport") or 0, sp.get("dport") or 0
    sel = struct.pack("!16s16sHHHH", dst.network_address.packed.ljust(16, b"\0"),
                      src.network_address.packed.ljust(16, b"\0"), dport, 0xFFFF if dport else 0,
                      sport, 0xFFFF if sport else 0)
    sel += struct.pack("=HBBB3xiI", family, dst.prefixlen, src.prefixlen, proto, 0, 0)
    body = sel + struct.pack("=IB3x", 0, _DIRS[sp["dir"]])
    mk = X.mark_key(sp.get("mark")) or (0, 0)
    attr = struct.pack("=HHII", 12, XFRMA_MARK, mk[0], mk[1])
    payload = body + attr
    return struct.pack("=IHHII", 16 + len(payload), XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + payload


def _setns(fd):
    import os
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def xfrm_socket(namespace=None):
    """A NETLINK_XFRM socket in ``namespace`` (a name under /run/netns; None: this one)."""
    import os
    import socket
    if not namespace:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join("/run/netns", namespace), os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def netlink_delete(sp, namespace=None):
    """Delete one policy by selector, dir and exact mark.  Returns None, or the error as `ip` would
    word it ("RTNETLINK answers: No such file or directory")."""
    import os
    import struct
    try:
        s = xfrm_socket(namespace)
    except OSError as exc:
        where = " in netns %s" % namespace if namespace else ""
        return "cannot open a NETLINK_XFRM socket%s: %s" % (where, exc.strerror or exc)
    try:
        s.settimeout(10)
        s.bind((0, 0))
        s.send(delpolicy_message(sp))
        while True:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    return None if err == 0 else "RTNETLINK answers: %s" % os.strerror(err)
                off += max(16, (length + 3) & ~3)
    except OSError as exc:
        return "netlink: %s" % (exc.strerror or exc)
    finally:
        s.close()


def split_delete_line(line):
    """A rendered `xfrm policy delete ...` line -> the policy dict it names (for netlink_delete)."""
    tok = line.split()
    if tok[:3] != ["xfrm", "policy", "delete"]:
        return None
    t = tok[3:]
    sel = X._parse_selector(t[:t.index("dir")])
    sp = {"src": sel["src"], "dst": sel["dst"], "proto": sel["proto"], "sport": sel["sport"],
          "dport": sel["dport"], "dir": t[t.index("dir") + 1], "mark": None}
    if "mark" in t:
        i = t.index("mark")
        sp["mark"] = {"value": int(t[i + 1], 16), "mask": int(t[i + 3], 16)}
    return sp
