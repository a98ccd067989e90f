# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parsers of `ip` output other than `ip xfrm` (that is _xfrm_text): `ip -V`, `ip netns list`,
`ip -o link show`, `ip -d -j link show`.  Pure: text or decoded JSON in, plain data out."""

from __future__ import annotations

import re


def parse_ip_version(text):
    """`ip -V` -> '6.1.0' ('ip utility, iproute2-6.1.0, libbpf 1.1.2'), 'ss190107' on old
    builds, or None."""
    m = re.search(r"iproute2-(?:v)?([0-9][0-9.]*[0-9]|ss[0-9]+)", text or "")
    return m.group(1) if m else None


def parse_netns_list(text):
    """`ip netns list` -> set of names ('ns0 (id: 0)' or 'ns0')."""
    return set(line.split()[0] for line in (text or "").splitlines() if line.strip())


def parse_link_names(text):
    """`ip -o link show` -> set of interface names ("5: veth0@if4: <...>" -> "veth0")."""
    names = set()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2 and parts[0].strip().isdigit():
            names.add(parts[1].strip().split("@", 1)[0])
    return names


def link_parent(link):
    """One link object of `ip -d -j link show` -> its parent device as a devlink handle
    ("pci/0000:08:00.0", from "parentbus"/"parentdev", iproute2 >= 5.14), or None.

    The parent is the device the driver registered the netdev on: for mlx5 the PCI function, which
    the uplink and the VF representors share."""
    if link.get("parentbus") and link.get("parentdev"):
        return "%s/%s" % (link["parentbus"], link["parentdev"])
    return None


def parse_link(obj):
    """`ip -d -j link show dev D` JSON -> {'ifname', 'operstate', 'parent'} ('parent' is
    'bus/device' from parentbus/parentdev, the devlink handle form) or None."""
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], dict):
        return None
    link = obj[0]
    return {"ifname": link.get("ifname"), "operstate": link.get("operstate"), "parent": link_parent(link)}
