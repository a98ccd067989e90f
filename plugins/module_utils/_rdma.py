# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RDMA links (Soft-RoCE rdma_rxe, or a NIC's own RoCE device) bound to a netdev: pure parse/plan.

Private to the collection.  I/O lives in the module (rxe_link); everything here takes text or
dicts and returns data, so it is tested on real outputs captured in the lab
(tests/unit/fixtures/rdma/).

- ``rdma -j link show`` lists every RDMA port: ifname (the RDMA device), port, state, netdev.  The
  kernel names the netdev only when it lives in the caller's network namespace, so it is read in
  the namespace of the netdev.
- The GID table is sysfs: /sys/class/infiniband/DEV/ports/1/gids/N (the GID),
  gid_attrs/types/N ("RoCE v2", "IB/RoCE v1") and gid_attrs/ndevs/N (the netdev).  RoCE v2 over IPv4
  uses the IPv4-mapped GID (::ffff:a.b.c.d); its index is what ``ibv_rc_pingpong -g`` needs.
- Ownership: a link is this collection's when its name is the configured one (default
  ``rxe_<netdev>``) and it is bound to the configured netdev.  Any other link bound to the netdev
  (a NIC's mlx5_N, an rxe made by hand) is used but never removed.
"""

from __future__ import annotations

import ipaddress
import json
import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V

# IB_DEVICE_NAME_MAX is 64; we are stricter (no % patterns, printable ASCII) as the name lands on a
# command line.
_IBDEV_RE = re.compile(r"^[A-Za-z0-9_.-]{1,63}\Z")


def ibdev(field, value):
    if not isinstance(value, str) or not _IBDEV_RE.match(value):
        raise V.InputError(field, "%r is not a valid RDMA device name (1-63 letters, digits, _ . -)" % (value,))
    return value


def default_name(netdev):
    return "rxe_" + netdev


def validate_config(config):
    """config list -> [{'netdev', 'name'}]; InputError names the field."""
    out = []
    seen = {}
    for i, item in enumerate(config or []):
        field = "config[%d]" % i
        if not isinstance(item, dict):
            raise V.InputError(field, "must be a dict with netdev (and optionally name)")
        netdev = V.ifname(field + ".netdev", item.get("netdev"))
        name = item.get("name") or default_name(netdev)
        ibdev(field + ".name", name)
        for key, val in (("netdev", netdev), ("name", name)):
            if (key, val) in seen:
                raise V.InputError(field + "." + key, "%s %r is already used by config[%d]" % (key, val, seen[(key, val)]))
            seen[(key, val)] = i
        out.append({"netdev": netdev, "name": name})
    return out


def parse_links(text):
    """`rdma -j link show` -> [{'name', 'port', 'state', 'physical_state', 'netdev'}] (netdev may be None)."""
    if not (text or "").strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError("cannot decode `rdma -j link show` output: %s" % exc)
    links = []
    for entry in data or []:
        links.append({
            "name": entry.get("ifname"),
            "port": entry.get("port"),
            "state": entry.get("state"),
            "physical_state": entry.get("physical_state"),
            "netdev": entry.get("netdev"),
        })
    return links


def gid_entry(index, gid, gid_type, ndev):
    """One GID table row -> dict; ``ipv4`` is the address of an IPv4-mapped GID, else None."""
    gid = (gid or "").strip()
    row = {"index": int(index), "gid": gid, "type": (gid_type or "").strip() or None,
           "netdev": (ndev or "").strip() or None, "ipv4": None}
    try:
        addr = ipaddress.IPv6Address(gid)
    except ValueError:
        return row
    if addr.ipv4_mapped is not None:
        row["ipv4"] = str(addr.ipv4_mapped)
    return row


def used_gids(rows):
    """Drop the empty slots (all-zero GID, no type) of a GID table."""
    return [r for r in rows if r["type"] and r["gid"].replace(":", "").strip("0")]


def roce_v2_ipv4_gid(rows, netdev=None, address=None):
    """The first RoCE v2 IPv4-mapped GID (on ``netdev``, with ``address`` when given), or None."""
    for row in rows:
        if row["type"] != "RoCE v2" or not row["ipv4"]:
            continue
        if netdev and row["netdev"] != netdev:
            continue
        if address and row["ipv4"] != address:
            continue
        return {"index": row["index"], "address": row["ipv4"]}
    return None


def plan(config, links, state):
    """Decide per configured netdev.  Returns (actions, views).

    actions: [('add', name, netdev)] or [('delete', name, netdev)], in config order.
    views: per config item {'netdev', 'name', 'link' (the RDMA link in use or None), 'owned', 'action'}.
    Raises InputError for a configured name that is taken by a link on another netdev.
    """
    by_name = dict((link["name"], link) for link in links)
    actions, views = [], []
    for i, item in enumerate(config):
        field = "config[%d]" % i
        netdev, name = item["netdev"], item["name"]
        mine = by_name.get(name)
        if mine is not None and mine["netdev"] not in (netdev, None):
            raise V.InputError(field + ".name", "RDMA device %r exists but is bound to netdev %r, not %r"
                               % (name, mine["netdev"], netdev))
        if mine is not None and mine["netdev"] is None:
            # bound to a netdev we cannot see from here (another namespace): not the one asked for
            raise V.InputError(field + ".name", "RDMA device %r exists but its netdev is not %r in this "
                               "namespace" % (name, netdev))
        other = [link for link in links if link["netdev"] == netdev and link["name"] != name]
        view = {"netdev": netdev, "name": name, "link": None, "owned": False, "action": None}
        if state == "present":
            if mine is not None:
                view.update(link=name, owned=True)
            elif other:
                view.update(link=other[0]["name"], owned=False)
            else:
                actions.append(("add", name, netdev))
                view.update(link=name, owned=True, action="add")
        elif state == "absent":
            if mine is not None:
                actions.append(("delete", name, netdev))
                view.update(action="delete", owned=True)
            # a foreign link on the netdev stays; it is reported, not removed
            if other:
                view.update(link=other[0]["name"])
        else:  # gathered
            if mine is not None:
                view.update(link=name, owned=True)
            elif other:
                view.update(link=other[0]["name"])
        views.append(view)
    return actions, views


def render(action, name, netdev):
    """The `rdma` arguments for one action."""
    if action == "add":
        return ["link", "add", name, "type", "rxe", "netdev", netdev]
    if action == "delete":
        return ["link", "delete", name]
    raise ValueError("unknown action %r" % (action,))


def describe(links):
    """Diff text: one line per link."""
    return "".join("%s port %s netdev %s state %s\n" % (lk["name"], lk["port"], lk["netdev"] or "-", lk["state"])
                   for lk in sorted(links, key=lambda lk: lk["name"]))
