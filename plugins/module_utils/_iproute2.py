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


class Ip:
    """The collection's one client of `ip`: every `ip` command a module runs is a method here (the
    argument list in one place), run through ``runner`` (a _runner.Runner for "ip", which holds the
    namespace).  Methods return the tool's text or decoded JSON and raise _runner.ToolError; the
    parsers are the functions above and those of _xfrm_text."""

    def __init__(self, runner):
        self.runner = runner
        self.tool = runner.tool

    def available(self):
        return self.runner.available()

    def version_text(self):
        """`ip -V` (stdout and stderr: old versions print to either)."""
        dummy, out, err = self.runner.run(["-V"], ok_rcs=range(256), what="ip -V")
        return out + "\n" + err

    def state_usage(self):
        """`ip xfrm state help`: the usage text, printed before ip opens a netlink socket (rc 255 by
        design), so the probe can never add or change state.  For _xfrm_text.parse_state_usage.
        Another exit status (ip crashed, not iproute2) raises ToolError."""
        dummy, out, err = self.runner.run(["xfrm", "state", "help"], ok_rcs=(0, 1, 255),
                                          what="probing iproute2 (ip xfrm state help)")
        return out + "\n" + err

    def netns_text(self):
        return self.runner.out(["netns", "list"], what="ip netns list")

    def links_text(self):
        return self.runner.out(["-o", "link", "show"], what="listing interfaces (ip -o link show)")

    @staticmethod
    def _links_args(dev):
        return ["-d", "-j", "link", "show"] + (["dev", dev] if dev is not None else [])

    def links_json_text(self, dev=None):
        """`ip -d -j link show [dev DEV]` as text (for _tc.parse_links)."""
        return self.runner.out(self._links_args(dev), what="ip -d -j link show")

    def links_json(self, dev=None):
        """The same, decoded (for parse_link)."""
        return self.runner.json(self._links_args(dev), what="ip -d -j link show")

    def xfrm_text(self, which, nokeys=False, stats=False):
        """`ip [-s] xfrm state|policy list [nokeys]`."""
        args = (["-s"] if stats else []) + ["xfrm", which, "list"] + (["nokeys"] if nokeys else [])
        return self.runner.out(args, what="reading the %s (ip %s)" % (
            "SAs" if which == "state" else "policies", " ".join(args)))

    def batch(self, text):
        """`ip -batch -` with ``text`` (key material) on stdin -> (rc, stdout, stderr)."""
        return self.runner.run(["-batch", "-"], data=text, what="ip -batch")
