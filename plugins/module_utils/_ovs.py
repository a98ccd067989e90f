# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open vSwitch client: read bridges/ports/interfaces as OVSDB JSON, plan one ovs-vsctl transaction.

Pure functions (parse_table, parse_db, plan_bridge) are kept apart from the runner so they can be
tested on captured output.  ``ovs-vsctl --format=json --data=json`` prints table cells in RFC 7047
form: maps as ["map", [[k, v], ...]], sets as ["set", [...]] (a one-element set is the bare atom),
UUIDs as ["uuid", "..."].

Ownership: every port this collection adds carries external_ids:ipsec_offload_mlx5=owned on its
Port row; a bridge it creates carries the same key.  Nothing without the mark is ever removed.
"""

from __future__ import annotations

import json

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError

OWNER_KEY = "ipsec_offload_mlx5"
OWNER_VAL = "owned"


def _atom(cell):
    """Decode one RFC 7047 cell into Python: map -> dict, set -> list, uuid -> str."""
    if isinstance(cell, list) and len(cell) == 2 and cell[0] in ("map", "set", "uuid", "named-uuid"):
        kind, val = cell
        if kind == "map":
            return dict((_atom(k), _atom(v)) for k, v in val)
        if kind == "set":
            return [_atom(v) for v in val]
        return val
    return cell


def parse_table(text):
    """`ovs-vsctl --format=json --data=json list TABLE` -> list of dicts (column -> value)."""
    doc = json.loads(text) if text.strip() else {"headings": [], "data": []}
    heads = doc.get("headings", [])
    rows = []
    for row in doc.get("data", []):
        rows.append(dict((h, _atom(c)) for h, c in zip(heads, row)))
    return rows


def _as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def parse_db(bridges, ports, interfaces):
    """Join the three tables into {bridge: {"owned": bool, "ports": {name: port}}}.

    port = {"owned": bool, "type": str, "options": dict}
    """
    by_uuid = {}
    for p in ports:
        by_uuid[p["_uuid"]] = p
    ifaces = dict((i["name"], i) for i in interfaces)
    out = {}
    for b in bridges:
        bports = {}
        for puuid in _as_list(b.get("ports")):
            p = by_uuid.get(puuid)
            if not p:
                continue
            i = ifaces.get(p["name"], {})
            bports[p["name"]] = {
                "owned": (p.get("external_ids") or {}).get(OWNER_KEY) == OWNER_VAL,
                "type": i.get("type") or "",
                "options": dict(i.get("options") or {}),
            }
        out[b["name"]] = {"owned": (b.get("external_ids") or {}).get(OWNER_KEY) == OWNER_VAL, "ports": bports}
    return out


def port_bridge(db, name):
    for br, info in db.items():
        if name in info["ports"]:
            return br
    return None


def vxlan_options(v):
    """Desired OVS options map for a vxlan spec {remote_ip, local_ip, key, dst_port, options}."""
    opts = {"remote_ip": str(v["remote_ip"])}
    if v.get("local_ip"):
        opts["local_ip"] = str(v["local_ip"])
    if v.get("key") is not None:
        opts["key"] = str(v["key"])
    if v.get("dst_port") is not None:
        opts["dst_port"] = str(v["dst_port"])
    for k, val in (v.get("options") or {}).items():
        opts[str(k)] = str(val)
    return opts


def plan_bridge(db, bridge, ports, vxlans, state, purge, fields=None):
    """Return (ovs-vsctl argument list for one transaction, list of human-readable changes).

    ``ports``: plain port names; ``vxlans``: list of {name, ...vxlan spec}; ``fields``: port name ->
    input field path, for messages.  Raises InputError (naming that field) for foreign objects in the way.
    """
    fields = fields or {}
    args = []
    changes = []
    own_port = ["external_ids:%s=%s" % (OWNER_KEY, OWNER_VAL)]
    cur = db.get(bridge)
    want = dict((p, None) for p in ports)
    for v in vxlans:
        want[v["name"]] = v

    if state == "absent":
        if cur is None:
            return [], []
        for name in sorted(want):
            p = cur["ports"].get(name)
            if p is None:
                continue
            if not p["owned"]:
                raise InputError(fields.get(name), "port %s on bridge %s was not created by this collection; "
                                                   "not removing it" % (name, bridge))
            args += ["--", "del-port", bridge, name]
            changes.append("remove port %s from %s" % (name, bridge))
        left = [n for n in cur["ports"] if n not in want and n != bridge]
        if cur["owned"] and not left:
            args = ["--", "--if-exists", "del-br", bridge]
            changes = ["remove bridge %s" % bridge]
        return args, changes

    if cur is None:
        if bridge in [n for b in db.values() for n in b["ports"]]:
            raise InputError("bridge", "%s is already a port of bridge %s" % (bridge, port_bridge(db, bridge)))
        args += ["--", "add-br", bridge, "--", "br-set-external-id", bridge, OWNER_KEY, OWNER_VAL]
        changes.append("create bridge %s" % bridge)
        cur = {"owned": True, "ports": {}}

    for name in sorted(want):
        v = want[name]
        where = port_bridge(db, name)
        p = cur["ports"].get(name)
        if where is not None and where != bridge:
            other = db[where]["ports"][name]
            if not other["owned"]:
                raise InputError(fields.get(name), "port %s belongs to bridge %s and was not created by this "
                                                   "collection" % (name, where))
            args += ["--", "del-port", where, name]
            changes.append("move port %s from %s" % (name, where))
            p = None
        if p is not None and not p["owned"]:
            raise InputError(fields.get(name), "port %s on bridge %s was not created by this collection; "
                                               "refusing to change it" % (name, bridge))
        if v is None:
            if p is None:
                args += ["--", "add-port", bridge, name, "--", "set", "port", name] + own_port
                changes.append("add port %s to %s" % (name, bridge))
            continue
        opts = vxlan_options(v)
        if p is None:
            args += ["--", "add-port", bridge, name, "--", "set", "interface", name, "type=vxlan"]
            args += ["options:%s=%s" % (k, opts[k]) for k in sorted(opts)]
            args += ["--", "set", "port", name] + own_port
            changes.append("add vxlan port %s to %s (%s)" % (name, bridge, _fmt(opts)))
        elif p["type"] != "vxlan" or p["options"] != opts:
            args += ["--", "set", "interface", name, "type=vxlan", "--", "clear", "interface", name, "options"]
            args += ["--", "set", "interface", name] + ["options:%s=%s" % (k, opts[k]) for k in sorted(opts)]
            changes.append("update vxlan port %s (%s -> %s)" % (name, _fmt(p["options"]), _fmt(opts)))

    if purge:
        for name, p in sorted(cur["ports"].items()):
            if name not in want and p["owned"]:
                args += ["--", "del-port", bridge, name]
                changes.append("remove port %s from %s" % (name, bridge))
    return args, changes


def _fmt(opts):
    return ", ".join("%s=%s" % (k, opts[k]) for k in sorted(opts))
