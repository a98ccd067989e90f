# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The resource-module state machine shared by xfrm_offload_state, xfrm_offload_policy and
tc_flower_vlan.

A module describes its objects with an ObjectKind (identity, equality, ownership, how to merge a
partial request onto the current object) and hands desired + current lists to ``plan()``.  The plan
says what to add, what to replace and what to delete; the module renders it into one batch.

States (the network resource-module convention):
  merged      listed objects exist as given; fields left out keep their current value
  replaced    listed objects exist exactly as given (fields left out take their defaults)
  overridden  as replaced, and every *owned* object not listed is deleted
  deleted     listed objects (or, with an empty list, every owned object) are deleted
  gathered    nothing changes; the current owned objects are returned
  rendered    nothing is read or changed; the commands for the listed objects are returned
Objects that are not owned (see ObjectKind.owned) are never deleted or replaced, whatever the state.
"""

from __future__ import annotations

STATES = ("merged", "replaced", "overridden", "deleted", "gathered", "rendered")


class ObjectKind:
    """How one kind of object is identified and compared.  Subclass per module."""

    name = "object"

    def key(self, obj):
        raise NotImplementedError

    def same(self, current, desired):
        """True if ``current`` already satisfies ``desired``."""
        raise NotImplementedError

    def owned(self, obj):
        """True if the collection owns this object (it may delete or replace it)."""
        raise NotImplementedError

    def merge(self, current, desired):
        """For state=merged: the desired object completed with current values for unset fields."""
        return desired

    def describe(self, obj):
        """A short, secret-free label for messages."""
        return repr(self.key(obj))


class Plan:
    def __init__(self):
        self.add = []        # desired objects that do not exist
        self.replace = []    # (current, desired) pairs that differ
        self.delete = []     # current objects to remove
        self.unchanged = []  # desired objects already satisfied
        self.foreign = []    # (current, desired) where desired collides with a foreign object

    @property
    def changed(self):
        return bool(self.add or self.replace or self.delete)

    def counts(self):
        return {"added": len(self.add), "replaced": len(self.replace),
                "deleted": len(self.delete), "unchanged": len(self.unchanged)}


def plan(kind, state, desired, current):
    """Compare desired with current objects; return a Plan.  Pure."""
    p = Plan()
    cur = {}
    for c in current:
        cur.setdefault(kind.key(c), c)
    seen = set()
    if state in ("merged", "replaced", "overridden"):
        for d in desired:
            k = kind.key(d)
            seen.add(k)
            c = cur.get(k)
            if c is None:
                p.add.append(d)
                continue
            want = kind.merge(c, d) if state == "merged" else d
            if kind.same(c, want):
                p.unchanged.append(want)
            elif not kind.owned(c):
                p.foreign.append((c, want))
            else:
                p.replace.append((c, want))
        if state == "overridden":
            for k, c in cur.items():
                if k not in seen and kind.owned(c):
                    p.delete.append(c)
    elif state == "deleted":
        if desired:
            for d in desired:
                c = cur.get(kind.key(d))
                if c is None:
                    continue
                if not kind.owned(c):
                    p.foreign.append((c, d))
                else:
                    p.delete.append(c)
        else:
            p.delete = [c for c in cur.values() if kind.owned(c)]
    else:
        raise ValueError("plan() does not handle state %r" % state)
    return p
