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
