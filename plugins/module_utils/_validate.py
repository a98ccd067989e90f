# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks shared by the modules AND the controller-side pair derivation (_pairs).

One grammar per kind of value, so that a value is accepted or refused identically on both sides,
with the same message: the controller passes ``"host edge-a: ipsec_selectors[0].proto"`` as the
field, a module ``"config[5000].spi"``.  Everything that ends up in an `ip`/`tc`/`devlink`
command, a batch line, an OVS transaction or a rendered script passes through one of these first.

The grammars are allow-lists, matched with ``fullmatch`` (never ``$``, which also matches before a
trailing newline), ASCII only: Python's int() and str.isdigit() accept Unicode digits ("\u0661"),
we do not.  Surrounding white space is refused, not stripped.  Every failure raises InputError, a
ValueError whose text starts with the field path; a refused value is shown with repr() (control
characters escaped, so a message never carries a line break), and key material is never shown.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_text


class InputError(ValueError):
    """The collection's one error for a refusal before anything changes: bad input, or a
    precondition the host does not meet (a foreign object in the way, a device state that forbids
    the change), with the path of the input field to change (None when no one field is to blame).
    Modules fail with its text and its ``field``."""

    def __init__(self, field, msg):
        self.field = field
        self.msg = msg
        super().__init__("%s: %s" % (field, msg) if field else msg)


# Linux dev_valid_name(): 1..15 bytes, not "." or "..", no "/", ":" or white space.  The allow-list
# below is a subset of that (printable ASCII that has no meaning in a batch line or a shell word)
# and refuses a leading "-" (it would read as an option to ovs-vsctl and friends).
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.@+=][A-Za-z0-9_.@+=-]{0,14}")
# netns names: a file name under /run/netns (not "." or "..", no "/").
_NETNS_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}")
# devlink handles: bus/device.  pci/ handles carry a PCI address (hex digits only); other buses
# (netdevsim/netdevsim1, auxiliary/mlx5_core.eth.0) a plain name.
_PCI_RE = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
_BUS_RE = re.compile(r"[a-z0-9_]{1,32}")
_DEVNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
_PORT_INDEX_RE = re.compile(r"[0-9]{1,10}")
_HEX_RE = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")
_INT_RE = re.compile(r"0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20}")
# addresses and prefixes: the characters of IPv4/IPv6 text forms and nothing else (no "%zone")
_ADDR_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}")
_PREFIX_RE = re.compile(r"[0-9A-Fa-f.:]{2,45}(?:/[0-9]{1,3})?")
_WORD_RE = re.compile(r"[A-Za-z0-9_.:-]*")

# IP protocols by name, as iproute2 prints and accepts them (/etc/protocols may be missing on
# minbase images: ip then prints numbers).  PROTO_NAMES: the canonical name of each number.  The
# table lives with the `ip xfrm` parsers (_xfrm_text, stdlib only) that read these names.
PROTO_NUMBERS, PROTO_NAMES, PORT_PROTOS = _xfrm_text.PROTO_NUMBERS, _xfrm_text.PROTO_NAMES, _xfrm_text.PORT_PROTOS


def show(value, limit=80):
    """A user value for a message: repr() (control characters escaped), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...'"


def _is_str(value):
    return isinstance(value, str)


def string(field, value, what="a string"):
    if not _is_str(value):
        raise InputError(field, "must be %s, got %s" % (what, type(value).__name__))
    return value


def ifname(field, value):
    if not _is_str(value) or not _IFNAME_RE.fullmatch(value) or value in (".", ".."):
        raise InputError(field, "%s is not a valid interface name (1-15 characters of letters, digits and "
                                "_ . - @ + =, not starting with -, not . or ..)" % show(value))
    return value


def netns(field, value):
    if value is None:
        return None
    if not _is_str(value) or not _NETNS_RE.fullmatch(value) or value in (".", ".."):
        raise InputError(field, "%s is not a valid network namespace name (1-64 characters of letters, "
                                "digits and _ . -, not starting with -, not . or ..)" % show(value))
    return value


def _devlink_parts(value):
    """'bus/dev' -> True when it is a well-formed devlink device handle."""
    if not _is_str(value) or value.count("/") != 1:
        return False
    bus, dev = value.split("/")
    if not _BUS_RE.fullmatch(bus):
        return False
    if bus == "pci":
        return bool(_PCI_RE.fullmatch(dev))
    return bool(_DEVNAME_RE.fullmatch(dev))


def devlink_handle(field, value):
    if not _devlink_parts(value):
        raise InputError(field, "%s is not a devlink handle such as pci/0000:08:00.0 (hex digits) or "
                                "netdevsim/netdevsim1" % show(value))
    return value


def devlink_port(field, value):
    ok = _is_str(value) and value.count("/") == 2
    if ok:
        dev, index = value.rsplit("/", 1)
        ok = _devlink_parts(dev) and bool(_PORT_INDEX_RE.fullmatch(index))
    if not ok:
        raise InputError(field, "%s is not a devlink port handle such as pci/0000:08:00.0/1" % show(value))
    return value


def pci_address(field, value):
    if not _is_str(value) or not _PCI_RE.fullmatch(value):
        raise InputError(field, "%s is not a PCI address such as 0000:08:00.2 (hex digits)" % show(value))
    return value.lower()


def integer(field, value, lo=None, hi=None):
    """An int, or a string of ASCII decimal digits or 0x + hex digits -> int in lo..hi.

    Booleans, floats, signs, white space, underscores and Unicode digits are refused."""
    if isinstance(value, bool):
        raise InputError(field, "expected an integer, got a boolean")
    if isinstance(value, int):
        n = int(value)
    elif _is_str(value) and _INT_RE.fullmatch(value):
        n = int(value[2:], 16) if value[:2] in ("0x", "0X") else int(value, 10)
    else:
        raise InputError(field, "%s is not an integer (ASCII decimal digits, or 0x and hex digits)" % show(value))
    if lo is not None and n < lo or hi is not None and n > hi:
        raise InputError(field, "%d is out of range %s..%s" % (n, lo, hi))
    return n


def port(field, value):
    """A TCP/UDP/SCTP/DCCP port in a selector or match: 1..65535."""
    return integer(field, value, 1, 65535)


def protocol(field, value):
    """An IP protocol: a number 1..255 or a known name (any case) -> number."""
    if _is_str(value) and value.lower() in PROTO_NUMBERS:
        return PROTO_NUMBERS[value.lower()]
    if isinstance(value, int) or (_is_str(value) and _INT_RE.fullmatch(value)):
        return integer(field, value, 1, 255)
    raise InputError(field, "%s is not a known protocol name; give a protocol number 1..255 or one of %s"
                     % (show(value), ", ".join(sorted(PROTO_NUMBERS))))


def proto_name(number):
    """The canonical name of a protocol number, or the number itself."""
    return PROTO_NAMES.get(number, number)


def boolean(field, value):
    if not isinstance(value, bool):
        raise InputError(field, "must be true or false")
    return value


def hexbytes(field, value, lengths=None):
    """A hex string (with or without 0x) -> lower-case hex without 0x.

    ``lengths``: allowed lengths in bytes.  The value itself is never put in the message.
    """
    if not _is_str(value) or not _HEX_RE.fullmatch(value):
        raise InputError(field, "must be a hex string (0x followed by hex digits, nothing else)")
    s = value.lower()
    if s.startswith("0x"):
        s = s[2:]
    if len(s) % 2:
        raise InputError(field, "hex string has an odd number of digits")
    if lengths and len(s) // 2 not in lengths:
        raise InputError(field, "is %d bytes long; allowed: %s bytes" % (len(s) // 2, " or ".join(str(n) for n in lengths)))
    return s


SALT_BYTES = 4   # RFC 4106: the last 4 bytes of key||salt


def aead_key(field, value, lengths):
    """An AES-GCM key||salt -> lower-case hex.  Refuses an all-zero key.  Never echoes it."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise InputError(field, "is a number, not a string: YAML reads an unquoted 0x... as an integer; quote the key")
    s = hexbytes(field, value, lengths)
    if len(s) > 2 * SALT_BYTES and not s[:-2 * SALT_BYTES].strip("0"):
        raise InputError(field, "is all zeros")
    return s


def aes_part(hexkey):
    """The AES key of a key||salt (hex): two SAs must never share it, whatever their salts."""
    return hexkey[:-2 * SALT_BYTES]


def _zone_or_grammar(field, value, regex, what):
    if not _is_str(value):
        raise InputError(field, "%s is not %s (expected a string)" % (show(value), what))
    if "%" in value:
        raise InputError(field, "%s: zone ids (%%zone) are not accepted; give the address alone" % show(value))
    if not regex.fullmatch(value):
        raise InputError(field, "%s is not %s" % (show(value), what))


# Parsed addresses and prefixes by their text (ipaddress objects are immutable): a mesh host's
# objects repeat the same few addresses thousands of times (issue 18).  Only successful parses of
# strings are kept (by their text); a bad value is checked (and named) every time.
_PARSED = {}
_PARSED_MAX = 1 << 16


def _remember(key, obj):
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = obj
    return obj


_TEXT = {}


def text(obj):
    """str() of an ipaddress object (address or network), remembered: the same text every time."""
    t = _TEXT.get(obj)
    if t is None:
        if len(_TEXT) >= _PARSED_MAX:
            _TEXT.clear()
        t = _TEXT[obj] = str(obj)
    return t


def address(field, value):
    """An IPv4/IPv6 address (no prefix length, no zone id) -> ipaddress object."""
    key = ("a", str(value)) if isinstance(value, str) else None
    if key is not None:
        hit = _PARSED.get(key)
        if hit is not None:
            return hit
    what = "an IPv4 or IPv6 address"
    _zone_or_grammar(field, value, _ADDR_RE, what)
    try:
        obj = ipaddress.ip_address(value)
    except ValueError:
        raise InputError(field, "%s is not %s" % (show(value), what)) from None
    return _remember(key, obj) if key is not None else obj


def prefix(field, value, strict=False):
    """An address or prefix (10.0.0.1, 10.0.0.0/24, 2001:db8::/64) -> ip_network.

    strict=True refuses host bits (10.0.0.1/24), naming the network address to write instead."""
    key = ("p", bool(strict), str(value)) if isinstance(value, str) else None
    if key is not None:
        hit = _PARSED.get(key)
        if hit is not None:
            return hit
    what = "an IPv4/IPv6 address or prefix"
    _zone_or_grammar(field, value, _PREFIX_RE, what)
    try:
        obj = ipaddress.ip_network(value, strict=strict)
        return _remember(key, obj) if key is not None else obj
    except ValueError as exc:
        if strict and "host bits" in str(exc):
            raise InputError(field, "%s has host bits set; write the network address (for example %s)"
                             % (show(value), ipaddress.ip_network(value, strict=False))) from None
        raise InputError(field, "%s is not %s" % (show(value), what)) from None


def mac(field, value):
    if not _is_str(value) or not re.fullmatch(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}", value):
        raise InputError(field, "%s is not a MAC address such as 02:00:00:00:00:01" % show(value))
    return value.lower()


def word(field, value, maxlen=64):
    """A plain word (letters, digits, _ . : -), e.g. an OVS option value."""
    if not _is_str(value) or len(value) > maxlen or not _WORD_RE.fullmatch(value):
        raise InputError(field, "%s is not a plain word (up to %d letters, digits, _ . : -)" % (show(value), maxlen))
    return value


def same_family(field, *values):
    fams = set(v.version for v in values if v is not None)
    if len(fams) > 1:
        raise InputError(field, "mixes IPv4 and IPv6 addresses")
    return fams.pop() if fams else None


def choice(field, value, choices):
    try:
        ok = value in choices and (_is_str(value) or not any(_is_str(c) for c in choices))
    except TypeError:
        ok = False
    if not ok:
        raise InputError(field, "%s is not one of %s" % (show(value), ", ".join(str(c) for c in choices)))
    return value
