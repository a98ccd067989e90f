# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks shared by the modules.

Everything that ends up in an `ip`/`tc`/`devlink` command or batch line passes through one of
these first, so a device name such as ``eth0; reboot`` or a value with a newline can never become
a second command.  Each failure names the field (``config[3].offload.dev``) and says what is
allowed; modules turn InputError into ``fail_json`` before touching the host.
"""

from __future__ import annotations

import ipaddress
import re


class InputError(ValueError):
    """Bad input, with the path of the offending field."""

    def __init__(self, field, msg):
        self.field = field
        super().__init__("%s: %s" % (field, msg))


# Patterns end in \Z, not $: "$" also matches before a trailing newline ("eth0\n").
# Linux dev_valid_name(): 1..15 bytes, not "." or "..", no "/", ":" or white space.  We are stricter
# (printable ASCII only) because the name also lands in batch lines.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@+=-]{1,15}\Z")
# netns names: a file name under /run/netns.
_NETNS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
# devlink handles: bus/device, e.g. pci/0000:08:00.0, netdevsim/netdevsim1, auxiliary/mlx5_core.eth.0
_DEVLINK_RE = re.compile(r"^[a-z0-9_]+/[A-Za-z0-9_.:-]{1,64}\Z")
_DEVLINK_PORT_RE = re.compile(r"^[a-z0-9_]+/[A-Za-z0-9_.:-]{1,64}/[0-9]{1,10}\Z")
_PCI_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\Z")
_HEX_RE = re.compile(r"^(0x)?[0-9a-fA-F]+\Z")


def ifname(field, value):
    if not isinstance(value, str) or not _IFNAME_RE.match(value) or value in (".", ".."):
        raise InputError(field, "%r is not a valid interface name (1-15 characters of "
                                "letters, digits and _ . - @ + =)" % (value,))
    return value


def netns(field, value):
    if value is None:
        return None
    if not isinstance(value, str) or not _NETNS_RE.match(value):
        raise InputError(field, "%r is not a valid network namespace name" % (value,))
    return value


def devlink_handle(field, value):
    if not isinstance(value, str) or not _DEVLINK_RE.match(value):
        raise InputError(field, "%r is not a devlink handle such as pci/0000:08:00.0 or "
                                "netdevsim/netdevsim1" % (value,))
    return value


def devlink_port(field, value):
    if not isinstance(value, str) or not _DEVLINK_PORT_RE.match(value):
        raise InputError(field, "%r is not a devlink port handle such as pci/0000:08:00.0/1" % (value,))
    return value


def pci_address(field, value):
    if not isinstance(value, str) or not _PCI_RE.match(value):
        raise InputError(field, "%r is not a PCI address such as 0000:08:00.2" % (value,))
    return value.lower()


def integer(field, value, lo=None, hi=None):
    """Accept an int, or a decimal/0x-hex string (INI inventories and YAML both appear)."""
    if isinstance(value, bool):
        raise InputError(field, "expected an integer, got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.strip():
        s = value.strip()
        try:
            n = int(s, 16) if s.lower().startswith("0x") else int(s, 10)
        except ValueError:
            raise InputError(field, "%r is not an integer (decimal or 0x-hex)" % (value,))
    else:
        raise InputError(field, "expected an integer (decimal or 0x-hex), got %r" % (value,))
    if lo is not None and n < lo or hi is not None and n > hi:
        raise InputError(field, "%d is out of range %s..%s" % (n, lo, hi))
    return n


def hexbytes(field, value, lengths=None):
    """A hex string (with or without 0x) -> lower-case hex without 0x.

    ``lengths``: allowed lengths in bytes.  The value itself is never put in the message.
    """
    if not isinstance(value, str) or not _HEX_RE.match(value.strip()):
        raise InputError(field, "must be a hex string (0x...)")
    s = value.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    if len(s) % 2:
        raise InputError(field, "hex string has an odd number of digits")
    if lengths and len(s) // 2 not in lengths:
        raise InputError(field, "is %d bytes long; allowed: %s bytes" % (len(s) // 2, " or ".join(str(n) for n in lengths)))
    return s


def address(field, value):
    """An IPv4/IPv6 address -> (ipaddress object)."""
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise InputError(field, "%r is not an IPv4 or IPv6 address" % (value,))


def prefix(field, value):
    """An address or prefix (10.0.0.1, 10.0.0.0/24, 2001:db8::/64) -> ip_network (strict=False)."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise InputError(field, "%r is not an IPv4/IPv6 address or prefix" % (value,))


def same_family(field, *values):
    fams = set(v.version for v in values if v is not None)
    if len(fams) > 1:
        raise InputError(field, "mixes IPv4 and IPv6 addresses")
    return fams.pop() if fams else None


def choice(field, value, choices):
    if value not in choices:
        raise InputError(field, "%r is not one of %s" % (value, ", ".join(str(c) for c in choices)))
    return value
