# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pair derivation: inventory -> mirrored SAs and SPs per host.  Pure, controller side.

Used by the ``ipsec_pairs`` filter, the ``ipsec_keystore`` action and lookup.  Nothing here reads
files, runs commands or prints; key material is never put in an exception message.

Inventory model (per host variables, all optional unless said):

  ipsec_local_ip      tunnel endpoint / VF address of this host (required for a participating host)
  ipsec_peers         list of inventory host names this host pairs with (must be listed both ways;
                      the host's own name is skipped; "a,b" from an INI inventory is split)
  ipsec_meshes        list of inventory group names; every two members of such a group pair up
  ipsec_dev           netdev to offload on (required unless ipsec_offload is none)
  ipsec_offload       packet | crypto | none          (default packet: the product default)
  ipsec_mode          transport | tunnel              (default transport; both ends must agree)
  ipsec_selectors     list of {proto, sport, dport}: traffic to protect, the same both ways
                      (e.g. [{proto: udp, dport: 4789}] for a VXLAN overlay); default: all traffic
  ipsec_networks      tunnel mode: prefixes behind this host (default: ipsec_local_ip alone)
  ipsec_fwd_policy    add a dir fwd policy next to each dir in policy (never offloaded);
                      default: true in tunnel mode, false in transport mode
  ipsec_key_bits      128 | 256 (AES-GCM key size; both ends must agree; default 256)
  ipsec_policy_priority  policy priority (default 0)
  ipsec_namespace     network namespace the host's SAs/SPs live in (default / "": the initial one)
  ipsec_owned_reqid_range  [lo, hi] reqids to allocate from (default DEFAULT_REQID_RANGE, the range
                      the xfrm modules own; same variable as the ipsec role's; hosts must agree)
  ipsec_overrides     {peer: {spi, reqid, key}} hand-given values for the SA this host -> peer
  ipsec_esn           true (default) | false: 64-bit extended sequence numbers (both ends must
                      agree; false for a device that cannot offload ESN, e.g. netdevsim)
  ipsec_fail_closed   true (default) | false: guard policies (action block, never offloaded) that
                      drop the protected traffic while an SA or its policy is missing

Allocation.  Every directed pair A->B gets one SA.  Its SPI is unique among the SAs whose
destination is B; its reqid is unique among all SAs of A and of B.  Values come, in this order,
from a hand-given override, a pin recorded in the key store, or a hash of the two host names
(sha256, with deterministic probing on collision).  Names, not list positions, drive the hash, so
adding a host never renumbers an existing pair unless a new pair collides with it; the key store
records (pins) every allocation, which closes that gap too.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import hmac
import ipaddress
import json
import re
import secrets as _secrets
from collections.abc import Mapping

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V

DEFAULT_REQID_RANGE = (0x51C00000, 0x51C0FFFF)
SPI_RANGE = (0x100, 0xFFFFFFFF)
AEAD_NAME = "rfc4106(gcm(aes))"
ICV_BITS = 128
REPLAY_WINDOW = 64
KEY_BITS = (128, 256)
SALT_BYTES = 4
STORE_VERSION = 2
# version 1: written before the SA lifecycle (every entry counts as installed); version 3: a store
# with hkdf nonces (earlier versions of the collection, which would ignore them and derive other
# keys, refuse it); without a nonce the store stays version 2
STORE_VERSION_NONCE = 3
STORE_VERSIONS_READ = (1, 2, 3)
MASTER_SECRET_MIN_BYTES = 32
KEY_DERIVATIONS = ("keystore", "hkdf")
OFFLOAD_TYPES = ("packet", "crypto", "none")
MODES = ("transport", "tunnel")
# Every inventory value that reaches a host goes through the modules' own checks (_validate), with
# "host H: variable" as the field, so the derivation accepts and refuses exactly what the modules
# do -- before the key store is written.
_PORT_PROTOS = tuple(V.proto_name(n) for n in V.PORT_PROTOS)   # names of the protocols with ports
_OVERRIDE_FIELDS = ("spi", "reqid", "key")
_SELECTOR_FIELDS = ("proto", "sport", "dport")
_PROBE_HASHES = 32


_PROBLEMS_SHOWN = 40


@contextlib.contextmanager
def no_gc():
    """Python's cyclic garbage collector paused while a mesh's millions of (acyclic) objects are
    built: each full collection walks every object, and they come more often as objects pile up
    (300-host full mesh, key store read-modify-write: 4.7 -> 2.8 s CPU; store parse 1.7 -> 0.6 s).
    Restored as it was, whatever happens."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _some(names, limit=5):
    """'a, b, c' or 'a, b, c, d, e and 12 more' (messages about large meshes stay short)."""
    names = list(names)
    if len(names) <= limit + 1:
        return ", ".join(names)
    return "%s and %d more" % (", ".join(names[:limit]), len(names) - limit)


class DeriveError(ValueError):
    """One or more problems with the inventory; each names the host and the variable."""

    def __init__(self, problems):
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            shown = self.problems if len(self.problems) <= _PROBLEMS_SHOWN + 10 else self.problems[:_PROBLEMS_SHOWN]
            text = "%d problems in the IPsec inventory:\n  - %s" % (len(self.problems), "\n  - ".join(shown))
            if len(shown) < len(self.problems):
                # a mesh of hundreds of hosts can give thousands: the first ones name the cause
                text += "\n  - ... and %d more" % (len(self.problems) - len(shown))
        super().__init__(text)


def _where(host, var):
    return "host %s: %s" % (host, var)


# ----------------------------------------------------------------------------------------------
# small checks (messages never contain a key value)

def _int(value, lo, hi):
    """int, or a string of ASCII decimal digits or 0x-hex -> int in lo..hi, else ValueError (message
    only).  The grammar is _validate.integer's (no white space, signs or Unicode digits)."""
    try:
        n = V.integer("", value)
    except V.InputError as e:
        raise ValueError(e.msg) from None
    if n < lo or n > hi:
        raise ValueError("%s is out of range 0x%x..0x%x" % (hex(n), lo, hi))
    return n


def _key_hex(value, bits=None):
    """Validate a key||salt hex string -> lower-case hex without 0x.  Never echoes the value.
    The grammar is _validate.hexbytes' (the modules' aead.key); _read_host also refuses an all-zero
    AES key in the inventory, as the modules do (_validate.aead_key)."""
    allowed = [b // 8 + SALT_BYTES for b in KEY_BITS]
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("is a number, not a string: YAML reads an unquoted 0x... as an integer; quote the key")
    try:
        s = V.hexbytes("", value, None)
    except V.InputError as e:
        msg = e.msg
        if msg.startswith("must be a hex string"):
            msg = "must be a hex string (0x followed by 40 or 72 hex digits)"
        raise ValueError(msg) from None
    n = len(s) // 2
    if n not in allowed:
        raise ValueError("is %d bytes long; an AES-GCM key||salt is 20 (AES-128) or 36 (AES-256) bytes" % n)
    if bits is not None and n != bits // 8 + SALT_BYTES:
        raise ValueError("is %d bytes long (AES-%d + salt) but ipsec_key_bits is %d (needs %d bytes)"
                         % (n, (n - SALT_BYTES) * 8, bits, bits // 8 + SALT_BYTES))
    return s


def key_bits_of(hexkey):
    return (len(hexkey) // 2 - SALT_BYTES) * 8


def generate_key(bits, token_bytes=_secrets.token_bytes):
    """A fresh AES-GCM key||salt for one direction, as lower-case hex (no 0x)."""
    if bits not in KEY_BITS:
        raise ValueError("key size must be 128 or 256 bits")
    return token_bytes(bits // 8 + SALT_BYTES).hex()


def key_fingerprint(hexkey):
    """A short, one-way fingerprint of a key||salt (sha256, 16 hex digits) for the key store's
    record of retired keys: enough to recognise a key that comes back, useless to recover it."""
    return hashlib.sha256(bytes.fromhex(hexkey)).hexdigest()[:16]


def check_master_secret(value, where="ipsec_master_secret"):
    """The HKDF master secret as bytes (UTF-8 of the string); refuse anything shorter than 32 bytes."""
    if not isinstance(value, str) or not value:
        raise DeriveError(["%s: must be a non-empty string (give it from a vault variable)" % where])
    raw = value.encode("utf-8")
    if len(raw) < MASTER_SECRET_MIN_BYTES:
        raise DeriveError(["%s: is %d bytes long; it must be at least %d bytes (e.g. 64 hex digits from "
                           "`openssl rand -hex 32`, kept in ansible-vault)" % (where, len(raw), MASTER_SECRET_MIN_BYTES)])
    return raw


def hkdf_sha256(ikm, info, length, salt=b""):
    """RFC 5869 HKDF with SHA-256 (extract, then expand) -> ``length`` bytes."""
    prk = hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 0
    while len(out) < length:
        i += 1
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
    return out[:length]


def derive_key(master, src, dst, spi, generation, bits, nonce=None):
    """The key||salt (hex) of one SA instance in hkdf mode: HKDF-SHA256(master secret, salt = the
    key store entry's nonce, info = sender, receiver, SPI, generation).  A new SPI or generation
    gives an unrelated key; nothing depends on boot ids or on the host's state.  The nonce (random,
    not secret, made with the entry: new_nonce) ties the keys to one key store: a store that is
    lost and made again gets new nonces, so SPIs and generations that start over never bring back
    a key an earlier store handed out.  Entries of stores written before it had nonces have none
    (no salt: their keys stay as they were)."""
    info = ("ipsec_offload.mlx5 sa-key v1\0%s\0%s\0%08x\0%d" % (src, dst, spi, generation)).encode("utf-8")
    return hkdf_sha256(master, info, bits // 8 + SALT_BYTES, salt=bytes.fromhex(nonce) if nonce else b"").hex()


NONCE_BYTES = 16


def new_nonce(token_bytes=_secrets.token_bytes):
    """A key store entry's hkdf nonce (hex): random, not secret (see derive_key)."""
    return token_bytes(NONCE_BYTES).hex()


def _seq(value):
    return isinstance(value, (list, tuple))


def _str(value):
    return isinstance(value, str)


_PLAIN_NAME_RE = re.compile(r"[!-~]{1,255}")   # printable ASCII, no white space


def _plain_name(value):
    """True for a host/group name that can be shown in a message as it is (no control characters,
    no white space)."""
    return isinstance(value, str) and bool(_PLAIN_NAME_RE.fullmatch(value))


def _names(value):
    """A list of names; an INI inventory's "a,b" or "a b" string is split."""
    if _str(value):
        return [x for x in re.split(r"[,\s]+", value.strip()) if x]
    return value


# ----------------------------------------------------------------------------------------------
# reading the inventory

class HostSpec:
    __slots__ = ("name", "ip", "dev", "offload", "mode", "selectors", "networks", "fwd",
                 "key_bits", "priority", "namespace", "overrides", "peers", "fail_closed", "esn")

    def __init__(self, name):
        self.name = name
        self.ip = None
        self.dev = None
        self.offload = "packet"
        self.mode = "transport"
        self.selectors = []
        self.networks = []
        self.fwd = False
        self.key_bits = 256
        self.priority = 0
        self.namespace = None
        self.overrides = {}
        self.peers = []
        self.fail_closed = True
        self.esn = True


def _has_ipsec_vars(hv):
    return hv.get("ipsec_local_ip") is not None or hv.get("ipsec_peers") is not None


def _read_selectors(host, value, problems):
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not _seq(value):
        problems.append("%s: must be a list of {proto, sport, dport}" % _where(host, "ipsec_selectors"))
        return []
    out = []
    for i, sel in enumerate(value):
        var = "ipsec_selectors[%d]" % i
        if not isinstance(sel, Mapping):
            problems.append("%s: must be a mapping with proto, sport, dport" % _where(host, var))
            continue
        unknown = sorted(str(k) for k in sel if k not in _SELECTOR_FIELDS)
        if unknown:
            problems.append("%s: unknown field(s) %s (allowed: proto, sport, dport)" % (_where(host, var), ", ".join(unknown)))
            continue
        item = {}
        bad = False
        proto = sel.get("proto")
        if proto is not None:
            try:
                item["proto"] = V.proto_name(V.protocol(_where(host, var + ".proto"), proto))
            except V.InputError as e:
                problems.append(str(e))
                continue
        for port in ("sport", "dport"):
            if sel.get(port) is None:
                continue
            if item.get("proto") not in _PORT_PROTOS:
                problems.append("%s.%s: a port needs proto tcp, udp or sctp (or dccp)" % (_where(host, var), port))
                bad = True
                continue
            try:
                item[port] = V.port(_where(host, "%s.%s" % (var, port)), sel.get(port))
            except V.InputError as e:
                problems.append(str(e))
                bad = True
        if not bad:
            if not item:
                problems.append("%s: empty selector (leave ipsec_selectors out to protect all traffic)" % _where(host, var))
                continue
            out.append(item)
    # canonical order so that two hosts listing the same selectors compare equal
    return sorted(out, key=lambda s: (str(s.get("proto", "")), s.get("sport", -1), s.get("dport", -1)))


def _plain_str(value):
    """A str subclass (Ansible's tagged inventory values) as a plain str, the same text: every SA and
    policy of a mesh carries these values, and plain str is what the caches and checks expect."""
    return str(value) if isinstance(value, str) else value


def _read_host(name, hv, problems):
    spec = HostSpec(name)
    _read_endpoint(spec, name, hv, problems)
    bits_ok = _read_flags(spec, name, hv, problems)
    _read_peers(spec, name, hv, problems)
    _read_overrides(spec, name, hv, bits_ok, problems)
    return spec


def _read_endpoint(spec, name, hv, problems):
    """ipsec_local_ip, ipsec_offload, ipsec_dev, ipsec_mode, ipsec_selectors, ipsec_networks."""
    ip = hv.get("ipsec_local_ip")
    if ip is None:
        problems.append("%s: not set (the tunnel endpoint / VF address of this host)" % _where(name, "ipsec_local_ip"))
    else:
        try:
            spec.ip = V.address(_where(name, "ipsec_local_ip"), ip)
        except V.InputError as e:
            problems.append("%s (give the address without a prefix length)" % e)

    try:
        spec.offload = _plain_str(V.choice(_where(name, "ipsec_offload"), hv.get("ipsec_offload", "packet"), OFFLOAD_TYPES))
    except V.InputError as e:
        problems.append(str(e))

    dev = hv.get("ipsec_dev")
    if dev is not None:
        try:
            spec.dev = _plain_str(V.ifname(_where(name, "ipsec_dev"), dev))
        except V.InputError as e:
            problems.append(str(e))
    elif spec.offload != "none":
        problems.append("%s: not set, but ipsec_offload is %s and needs the netdev to offload on "
                        "(set ipsec_dev, or ipsec_offload: none)" % (_where(name, "ipsec_dev"), spec.offload))

    try:
        spec.mode = _plain_str(V.choice(_where(name, "ipsec_mode"), hv.get("ipsec_mode", "transport"), MODES))
    except V.InputError as e:
        problems.append(str(e))

    spec.selectors = _read_selectors(name, hv.get("ipsec_selectors"), problems)

    nets = hv.get("ipsec_networks")
    if nets is not None:
        if spec.mode != "tunnel":
            problems.append("%s: only used in tunnel mode (ipsec_mode is %s)" % (_where(name, "ipsec_networks"), spec.mode))
        elif not _seq(nets) or not nets:
            problems.append("%s: must be a non-empty list of prefixes" % _where(name, "ipsec_networks"))
        else:
            for i, n in enumerate(nets):
                try:
                    # host bits are cleared here (10.0.1.1/24 -> 10.0.1.0/24): the module sees the network
                    spec.networks.append(V.prefix(_where(name, "ipsec_networks[%d]" % i), n))
                except V.InputError as e:
                    problems.append(str(e))


def _read_flags(spec, name, hv, problems):
    """ipsec_fail_closed, ipsec_esn, ipsec_fwd_policy, ipsec_key_bits, ipsec_policy_priority,
    ipsec_namespace; the selectors packet offload cannot carry. True when the key size is valid."""
    fc = hv.get("ipsec_fail_closed", True)
    if isinstance(fc, bool):
        spec.fail_closed = fc
    else:
        problems.append("%s: must be true or false" % _where(name, "ipsec_fail_closed"))

    esn = hv.get("ipsec_esn", True)
    if isinstance(esn, bool):
        spec.esn = esn
    else:
        problems.append("%s: must be true or false" % _where(name, "ipsec_esn"))

    fwd = hv.get("ipsec_fwd_policy")
    if fwd is None:
        spec.fwd = spec.mode == "tunnel"
    elif isinstance(fwd, bool):
        spec.fwd = fwd
    else:
        problems.append("%s: must be true or false" % _where(name, "ipsec_fwd_policy"))

    bits = hv.get("ipsec_key_bits", 256)
    bits_ok = False
    try:
        spec.key_bits = _int(bits, 0, 1024)
        if spec.key_bits not in KEY_BITS:
            raise ValueError("%d is not 128 or 256" % spec.key_bits)
        bits_ok = True
    except ValueError as e:
        problems.append("%s: %s" % (_where(name, "ipsec_key_bits"), e))

    if spec.offload == "packet":
        for i, sel in enumerate(spec.selectors):
            if sel.get("proto") not in (None, "tcp", "udp"):
                problems.append("%s: proto %s cannot be packet-offloaded (mlx5: \"Device does not support upper "
                                "protocol other than TCP/UDP\"); select tcp/udp or the address pair, or use "
                                "ipsec_offload: crypto/none" % (_where(name, "ipsec_selectors[%d]" % i), sel["proto"]))
    try:
        # 0xffffffff is refused by mlx5 ("Device does not support requested policy priority")
        spec.priority = _int(hv.get("ipsec_policy_priority", 0), 0, 0xFFFFFFFE)
    except ValueError as e:
        problems.append("%s: %s" % (_where(name, "ipsec_policy_priority"), e))

    ns = hv.get("ipsec_namespace")
    if ns is not None and ns != "":   # "" = the default namespace, as in the ipsec role
        try:
            spec.namespace = _plain_str(V.netns(_where(name, "ipsec_namespace"), ns))
        except V.InputError as e:
            problems.append(str(e))
    return bits_ok


def _read_peers(spec, name, hv, problems):
    """ipsec_peers (a host's own name is skipped: one list can sit in group_vars)."""
    peers = _names(hv.get("ipsec_peers"))
    if peers is not None:
        if not _seq(peers):
            problems.append("%s: must be a list of inventory host names" % _where(name, "ipsec_peers"))
        else:
            for i, p in enumerate(peers):
                if not _str(p):
                    problems.append("%s: must be an inventory host name" % _where(name, "ipsec_peers[%d]" % i))
                elif p == name:
                    continue   # one list can sit in group_vars: a host's own name is skipped
                elif p not in spec.peers:
                    spec.peers.append(str(p))


def _read_overrides(spec, name, hv, bits_ok, problems):
    """ipsec_overrides: {peer: {spi, reqid, key}} pinned by the inventory."""
    ov = hv.get("ipsec_overrides")
    if ov is not None:
        if not isinstance(ov, Mapping):
            problems.append("%s: must be a mapping {peer: {spi, reqid, key}}" % _where(name, "ipsec_overrides"))
        else:
            for peer, fields in ov.items():
                var = "ipsec_overrides[%s]" % (peer if _plain_name(peer) else V.show(peer))
                if not isinstance(fields, Mapping):
                    problems.append("%s: must be a mapping with spi, reqid and/or key" % _where(name, var))
                    continue
                unknown = sorted(str(k) for k in fields if k not in _OVERRIDE_FIELDS)
                if unknown:
                    problems.append("%s: unknown field(s) %s (allowed: spi, reqid, key)" % (_where(name, var), ", ".join(unknown)))
                    continue
                item = {}
                if fields.get("spi") is not None:
                    try:
                        item["spi"] = _int(fields["spi"], SPI_RANGE[0], SPI_RANGE[1])
                    except ValueError as e:
                        problems.append("%s.spi: %s" % (_where(name, var), e))
                if fields.get("reqid") is not None:
                    try:
                        item["reqid"] = _int(fields["reqid"], 1, 0xFFFFFFFF)
                    except ValueError as e:
                        problems.append("%s.reqid: %s" % (_where(name, var), e))
                if fields.get("key") is not None:
                    try:
                        item["key"] = _key_hex(fields["key"], spec.key_bits if bits_ok else None)
                        V.aead_key(_where(name, var + ".key"), item["key"], None)   # all-zero AES key
                    except V.InputError as e:
                        problems.append(str(e))
                    except ValueError as e:
                        problems.append("%s.key: %s" % (_where(name, var), e))
                spec.overrides[str(peer)] = item


def parse_reqid_range(value, where):
    if not _seq(value) or len(value) != 2:
        raise ValueError("%s: must be a list [lo, hi]" % where)
    try:
        lo = _int(value[0], 1, 0xFFFFFFFF)
        hi = _int(value[1], 1, 0xFFFFFFFF)
    except ValueError as e:
        raise ValueError("%s: %s" % (where, e)) from None
    if lo > hi:
        raise ValueError("%s: lo 0x%x is above hi 0x%x" % (where, lo, hi))
    return (lo, hi)


def read_inventory(hostvars, hosts=None, groups=None, meshes=None, reqid_range=None):
    """Read and check the IPsec variables of the inventory.

    hostvars: mapping host -> mapping of variables (Ansible's ``hostvars`` or plain dicts).
    hosts:    the host names to consider (default: every host in hostvars).
    groups:   mapping group -> member list (Ansible's ``groups``), needed for ipsec_meshes.
    meshes:   extra mesh group names (added to the hosts' ipsec_meshes).
    Returns (specs: {name: HostSpec}, pairs: sorted list of (a, b) with a < b, reqid_range).
    Raises DeriveError listing every problem found.
    """
    problems = []
    known = set(str(h) for h in hostvars)
    names = []
    for h in (str(h) for h in (hosts if hosts is not None else list(hostvars))):
        if h in known:
            names.append(h)
        else:
            problems.append("host %s: listed in hosts= but not in the inventory" % h)
    mesh_names, rrange = _meshes_and_range(hostvars, names, meshes, reqid_range, problems)
    in_mesh, mesh_members = _mesh_members(mesh_names, groups, set(names), problems)

    participants = [h for h in names if h in in_mesh or _has_ipsec_vars(hostvars[h])]
    specs = {}
    for h in participants:
        specs[h] = _read_host(h, hostvars[h], problems)
    pairs = _pairs_of(participants, specs, mesh_members, known, hosts is not None, problems)

    peers_of = {}
    for a, b in pairs:
        peers_of.setdefault(a, set()).add(b)
        peers_of.setdefault(b, set()).add(a)
    for h in participants:
        if h not in peers_of:
            problems.append("%s: this host has IPsec settings but no peer (list peers in ipsec_peers or "
                            "put it in a group named in ipsec_meshes)" % _where(h, "ipsec_peers"))
    _check_addresses(participants, specs, problems)
    _check_reqid_room(peers_of, rrange, problems)
    _check_agreement(specs, pairs, in_mesh, problems)
    _check_overrides(participants, specs, peers_of, problems)
    if problems:
        raise DeriveError(problems)
    return specs, sorted(pairs), rrange


def _meshes_and_range(hostvars, names, meshes, reqid_range, problems):
    """(mesh group names, the owned reqid range) from meshes=, the hosts' ipsec_meshes and
    ipsec_owned_reqid_range (one range for the whole inventory), and reqid_range=."""
    mesh_names = []
    if meshes is not None:
        if not _seq(meshes):
            raise DeriveError(["meshes=: must be a list of group names"])
        mesh_names.extend(str(m) for m in meshes)
    range_votes = {}
    for h in names:
        hv = hostvars[h]
        m = _names(hv.get("ipsec_meshes"))
        if m is not None:
            if not _seq(m) or not all(_str(x) for x in m):
                problems.append("%s: must be a list of inventory group names" % _where(h, "ipsec_meshes"))
            else:
                for g in m:
                    if g not in mesh_names:
                        mesh_names.append(str(g))
        r = hv.get("ipsec_owned_reqid_range")
        if r is not None:
            try:
                range_votes.setdefault(parse_reqid_range(r, _where(h, "ipsec_owned_reqid_range")), []).append(h)
            except ValueError as e:
                problems.append(str(e))

    if reqid_range is not None:
        try:
            return mesh_names, parse_reqid_range(reqid_range, "reqid_range=")
        except ValueError as e:
            raise DeriveError([str(e)]) from None
    if len(range_votes) > 1:
        desc = "; ".join("%s: 0x%x..0x%x" % (", ".join(sorted(hs)[:3]), r[0], r[1]) for r, hs in sorted(range_votes.items()))
        problems.append("ipsec_owned_reqid_range: hosts disagree (%s); set it once, in group_vars/all" % desc)
        return mesh_names, DEFAULT_REQID_RANGE
    if range_votes:
        return mesh_names, next(iter(range_votes))
    return mesh_names, DEFAULT_REQID_RANGE


def _mesh_members(mesh_names, groups, name_set, problems):
    """({host: [mesh groups]}, {mesh group: [members among the hosts considered]})."""
    in_mesh = {}
    mesh_members = {}
    for g in mesh_names:
        if groups is None:
            problems.append("ipsec_meshes names group %s, but the filter was not given groups= "
                            "(call it as hostvars | ipsec_pairs(groups=groups))" % g)
            continue
        if g not in groups:
            problems.append("ipsec_meshes: %s is not an inventory group" % g)
            continue
        members = [str(x) for x in groups[g] if str(x) in name_set]
        if len(members) < 2:
            problems.append("ipsec_meshes: group %s has %d host(s); a mesh needs at least 2" % (g, len(members)))
            continue
        mesh_members[g] = members
        for x in members:
            in_mesh.setdefault(x, []).append(g)
    return in_mesh, mesh_members


def _pairs_of(participants, specs, mesh_members, known, hosts_given, problems):
    """The set of pairs (a, b), a < b: every two members of a mesh, and hosts that list each other."""
    pairs = set()
    for members in mesh_members.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if a != b:
                    pairs.add((min(a, b), max(a, b)))
    listed = set()
    for h in participants:
        for i, p in enumerate(specs[h].peers):
            if p not in known:
                problems.append("%s: %s is not an inventory host"
                                % (_where(h, "ipsec_peers[%d]" % i), p if _plain_name(p) else V.show(p)))
            elif p not in specs:
                problems.append("%s: %s is not taking part (it has no ipsec_local_ip or ipsec_peers%s)"
                                % (_where(h, "ipsec_peers[%d]" % i), p, ", or is not in hosts=" if hosts_given else ""))
            else:
                listed.add((h, p))
    for (h, p) in sorted(listed):
        key = (min(h, p), max(h, p))
        if (p, h) not in listed and key not in pairs:
            problems.append("%s: lists %s, but %s does not list %s (add it to %s's ipsec_peers, or put both in a mesh group)"
                            % (_where(h, "ipsec_peers"), p, p, h, p))
            continue
        pairs.add(key)
    return pairs


def _check_addresses(participants, specs, problems):
    """Every host its own tunnel address."""
    by_ip = {}
    for h in participants:
        if specs[h].ip is not None:
            by_ip.setdefault(specs[h].ip, []).append(h)
    for ip, hs in sorted(by_ip.items(), key=lambda kv: str(kv[0])):
        if len(hs) > 1:
            problems.append("%s: %s is also the tunnel address of %s; every host needs its own"
                            % (_where(hs[1], "ipsec_local_ip"), ip, ", ".join(hs[:1] + hs[2:])))


def _check_reqid_room(peers_of, rrange, problems):
    """reqids are unique per host: a host with P peers needs 2P of them (one per direction and peer)."""
    size = rrange[1] - rrange[0] + 1
    short = sorted((h for h in peers_of if 2 * len(peers_of[h]) > size), key=lambda h: (-len(peers_of[h]), h))
    if short:
        worst = short[0]
        problems.append("%s: 0x%x..0x%x holds %d reqids, but %s has %d peers and needs %d (one per direction and "
                        "peer; reqids are unique per host)%s: widen the range (at least %d values)"
                        % (_where(worst, "ipsec_owned_reqid_range"), rrange[0], rrange[1], size, worst,
                           len(peers_of[worst]), 2 * len(peers_of[worst]),
                           "" if len(short) == 1 else "; so do hosts %s" % _some(short[1:]),
                           2 * len(peers_of[worst])))


def _check_agreement(specs, pairs, in_mesh, problems):
    """Both ends of every pair agree on mode, ESN, key size, address family, selectors and (tunnel)
    inner families. A value that differs is blamed on the end that disagrees with more peers (a host
    in two meshes of different settings: one message naming it, not one per pair)."""
    odd = {}   # (var, attr, host) -> [peers]
    for var, attr in (("ipsec_mode", "mode"), ("ipsec_esn", "esn"), ("ipsec_key_bits", "key_bits")):
        diff = [(a, b) for a, b in sorted(pairs) if getattr(specs[a], attr) != getattr(specs[b], attr)]
        count = {}
        for a, b in diff:
            count[a] = count.get(a, 0) + 1
            count[b] = count.get(b, 0) + 1
        for a, b in diff:
            h, p = (b, a) if count[b] > count[a] else (a, b)
            odd.setdefault((var, attr, h), []).append(p)
    for (var, attr, h), peers in sorted(odd.items(), key=lambda kv: (kv[0][0], kv[0][2])):
        mine = getattr(specs[h], attr)
        theirs = {}
        for p in peers:
            theirs.setdefault(getattr(specs[p], attr), []).append(p)
        what = "; ".join("peer%s %s use%s %s" % ("s" if len(ps) > 1 else "", _some(sorted(ps)),
                                                 "" if len(ps) > 1 else "s", v)
                         for v, ps in sorted(theirs.items(), key=lambda kv: str(kv[0])))
        meshes_of = in_mesh.get(h) or []
        problems.append("%s: %s, but %s; both ends of a pair must agree%s"
                        % (_where(h, var), mine, what,
                           " (%s is in meshes %s: give them the same %s)" % (h, ", ".join(meshes_of), var)
                           if len(meshes_of) > 1 else ""))
    for a, b in sorted(pairs):
        sa, sb = specs[a], specs[b]
        if sa.ip is not None and sb.ip is not None and sa.ip.version != sb.ip.version:
            problems.append("%s: IPv%d, but peer %s has IPv%d" % (_where(a, "ipsec_local_ip"), sa.ip.version, b, sb.ip.version))
        if sa.selectors != sb.selectors:
            problems.append("%s: differ from peer %s's (%s vs %s); both ends of a pair must protect the same traffic"
                            % (_where(a, "ipsec_selectors"), b, _sel_text(sa.selectors), _sel_text(sb.selectors)))
        if sa.mode == "tunnel" == sb.mode and sa.ip is not None and sb.ip is not None:
            # inner and outer families may differ (IPv6 over an IPv4 tunnel), but a policy needs
            # the same family on both sides of its selector
            fams_a = set(n.version for n in sa.networks) or {sa.ip.version}
            fams_b = set(n.version for n in sb.networks) or {sb.ip.version}
            if not fams_a & fams_b:
                problems.append("%s: IPv%s only, but peer %s protects IPv%s only; nothing to pair"
                                % (_where(a, "ipsec_networks"), "/".join(str(f) for f in sorted(fams_a)), b,
                                   "/".join(str(f) for f in sorted(fams_b))))


def _check_overrides(participants, specs, peers_of, problems):
    """ipsec_overrides name peers of the host, and no two directions share an AES key."""
    key_seen = {}   # AES key (salt aside) -> (host, peer) of the first override that gives it
    for h in participants:
        for peer in specs[h].overrides:
            shown = peer if _plain_name(peer) else V.show(peer)
            if peer not in peers_of.get(h, ()):
                problems.append("%s: %s is not a peer of %s" % (_where(h, "ipsec_overrides[%s]" % shown), shown, h))
            key = specs[h].overrides[peer].get("key")
            if key is None:
                continue
            first = key_seen.setdefault(V.aes_part(key), (h, peer))
            if first != (h, peer):
                what = "the reverse direction" if first == (peer, h) else "pair %s->%s" % first
                problems.append("%s: the key of %s->%s (inventory) is also used by %s (from inventory: host %s: "
                                "ipsec_overrides[%s].key; AES keys are compared, salts aside); every direction "
                                "needs its own key"
                                % (_where(h, "ipsec_overrides[%s].key" % shown), h, shown, what, first[0], first[1]))


def _sel_text(sels):
    if not sels:
        return "all traffic"
    return ", ".join(" ".join("%s %s" % (k, s[k]) for k in _SELECTOR_FIELDS if k in s) for s in sels)


# ----------------------------------------------------------------------------------------------
# allocation

def _hash_candidates(kind, a, b, lo, hi):
    """Deterministic candidates for pair a->b: hashes first, then a linear scan of the range."""
    size = hi - lo + 1
    last = None
    for i in range(_PROBE_HASHES):
        digest = hashlib.sha256(("ipsec_offload.mlx5\0%s\0%d\0%s\0%s" % (kind, i, a, b)).encode("utf-8")).digest()
        last = lo + int.from_bytes(digest[:8], "big") % size
        yield last, i
    for j in range(1, size + 1):
        yield lo + (last - lo + j) % size, _PROBE_HASHES


class Link:
    """One directed pair src -> dst: one SA, installed out on src and in on dst."""

    __slots__ = ("src", "dst", "spi", "reqid", "spi_source", "reqid_source", "key", "key_source",
                 "spi_override", "reqid_override", "key_override", "key_bits",
                 "generation", "prev_spi", "prev_key", "stage")

    def __init__(self, src, dst, key_bits=256, spi=None, reqid=None, key=None):
        self.src = src
        self.dst = dst
        self.spi_override = spi
        self.reqid_override = reqid
        self.key_override = key
        self.key_bits = key_bits
        self.spi = self.reqid = None
        self.spi_source = self.reqid_source = None
        self.key = None
        self.key_source = "missing"
        # key rotation (see rotate()): the generation in use, and while a rotation is unfinished
        # the previous generation's SPI/key and the rotation stage
        self.generation = 1
        self.prev_spi = None
        self.prev_key = None
        self.stage = None

    @property
    def name(self):
        return "%s->%s" % (self.src, self.dst)


def build_links(specs, pairs):
    links = []
    for a, b in pairs:
        for s, d in ((a, b), (b, a)):
            ov = specs[s].overrides.get(d, {})
            links.append(Link(s, d, specs[s].key_bits, ov.get("spi"), ov.get("reqid"), ov.get("key")))
    return links


def allocate(links, reqid_range=DEFAULT_REQID_RANGE, pins=None):
    """Give every link an SPI and a reqid.  Mutates and returns ``links``.

    pins: {(src, dst): {"spi": int, "reqid": int}} from the key store.  Hand-given overrides are
    checked first (collisions among them are errors); pins are honoured when still valid and free;
    the rest are hashed from the host names, with deterministic probing.
    """
    ordered = sorted(links, key=lambda lk: (lk.src, lk.dst))
    alloc = _Allocation(reqid_range, pins or {}, ordered)
    problems = []
    # 1. hand-given values
    for lk in ordered:
        if lk.spi_override is not None:
            alloc.override_spi(lk, problems)
        if lk.reqid_override is not None:
            alloc.override_reqid(lk, problems)
    if problems:
        raise DeriveError(problems)
    # 2. pins from the key store, 3. hashed
    alloc.pinned(ordered)
    starved = alloc.hashed(ordered)
    if starved:
        raise DeriveError(["ipsec_owned_reqid_range: 0x%x..0x%x has no free reqid left for %s (%d directed pairs): "
                           "widen the range" % (alloc.lo, alloc.hi, _some(starved), len(starved))])
    return links


class _Allocation:
    """The SPIs (per destination host) and reqids (per host) taken so far while allocating."""

    def __init__(self, reqid_range, pins, ordered):
        self.lo, self.hi = reqid_range
        self.pins = pins
        self.spi_used = {}     # dst host -> {spi: link}
        self.reqid_used = {}   # host -> {reqid: link}
        # 0. SPIs of previous generations (rotations in progress, retired instances) stay taken
        self.prev_used = {}    # dst host -> {spi: name of the rotating pair}
        for (psrc, pdst), pin in sorted(pins.items()):
            if pin.get("previous_spi") is not None:
                self.prev_used.setdefault(pdst, {})[pin["previous_spi"]] = "%s->%s" % (psrc, pdst)
            for v in pin.get("retired_spis") or ():
                self.prev_used.setdefault(pdst, {}).setdefault(v, "%s->%s" % (psrc, pdst))
        for dst, taken in self.prev_used.items():
            for v, name in taken.items():
                self.spi_used.setdefault(dst, {})[v] = Link(*name.split("->", 1))
        # pinned allocations that a hand-given value of ANOTHER pair would take: refused (naming both
        # pairs) rather than renumbering the pinned pair behind the operator's back
        self.pinned_spi, self.pinned_reqid = {}, {}
        for lk in ordered:
            pin = pins.get((lk.src, lk.dst)) or {}
            if lk.spi_override is None and pin.get("spi") is not None:
                self.pinned_spi.setdefault((lk.dst, pin["spi"]), lk)
            if lk.reqid_override is None and pin.get("reqid") is not None:
                for host in (lk.src, lk.dst):
                    self.pinned_reqid.setdefault((host, pin["reqid"]), lk)

    def spi_free(self, link, v):
        return v not in self.spi_used.get(link.dst, {})

    def reqid_free(self, link, v):
        return v not in self.reqid_used.get(link.src, {}) and v not in self.reqid_used.get(link.dst, {})

    def take_spi(self, link, v, source):
        link.spi, link.spi_source = v, source
        self.spi_used.setdefault(link.dst, {})[v] = link

    def take_reqid(self, link, v, source):
        link.reqid, link.reqid_source = v, source
        self.reqid_used.setdefault(link.src, {})[v] = link
        self.reqid_used.setdefault(link.dst, {})[v] = link

    def override_spi(self, lk, problems):
        other = self.spi_used.get(lk.dst, {}).get(lk.spi_override)
        pinned = self.pinned_spi.get((lk.dst, lk.spi_override))
        where = _where(lk.src, "ipsec_overrides[%s].spi" % lk.dst)
        if pinned is not None and pinned is not lk:
            problems.append("%s: SPI 0x%x for %s is the pinned SPI of pair %s in the key store (both SAs go "
                            "to %s); an override never renumbers another pair: choose another SPI, or rekey "
                            "%s first" % (where, lk.spi_override, lk.name, pinned.name, lk.dst, pinned.name))
        elif lk.spi_override in self.prev_used.get(lk.dst, {}):
            problems.append("%s: SPI 0x%x for %s is used by an earlier generation of %s (a rotation in "
                            "progress, or a retired SA instance: a lost SA's SPI never comes back); choose "
                            "another SPI" % (where, lk.spi_override, lk.name, self.prev_used[lk.dst][lk.spi_override]))
        elif other is not None:
            problems.append("%s: SPI 0x%x for %s collides with ipsec_overrides of host %s for %s "
                            "(both SAs go to %s; SPIs must differ per destination)"
                            % (where, lk.spi_override, lk.name, other.src, other.name, lk.dst))
        else:
            self.take_spi(lk, lk.spi_override, "override")

    def override_reqid(self, lk, problems):
        v = lk.reqid_override
        where = _where(lk.src, "ipsec_overrides[%s].reqid" % lk.dst)
        if v < self.lo or v > self.hi:
            problems.append("%s: 0x%x is outside the owned reqid range 0x%x..0x%x (the modules would not own "
                            "the SA)" % (where, v, self.lo, self.hi))
            return
        clash = self.reqid_used.get(lk.src, {}).get(v) or self.reqid_used.get(lk.dst, {}).get(v)
        pinned = self.pinned_reqid.get((lk.src, v)) or self.pinned_reqid.get((lk.dst, v))
        if pinned is not None and pinned is not lk:
            shared = lk.src if self.pinned_reqid.get((lk.src, v)) is pinned else lk.dst
            problems.append("%s: reqid 0x%x for %s is the pinned reqid of pair %s in the key store (both on "
                            "host %s); an override never renumbers another pair: choose another reqid"
                            % (where, v, lk.name, pinned.name, shared))
        elif clash is not None:
            shared = lk.src if v in self.reqid_used.get(lk.src, {}) else lk.dst
            problems.append("%s: reqid 0x%x for %s collides with ipsec_overrides of host %s for %s "
                            "(both on host %s; reqids must be unique per host)"
                            % (where, v, lk.name, clash.src, clash.name, shared))
        else:
            self.take_reqid(lk, v, "override")

    def pinned(self, ordered):
        """Pins of the key store, where still valid and free."""
        for lk in ordered:
            pin = self.pins.get((lk.src, lk.dst)) or {}
            v = pin.get("spi")
            if lk.spi is None and v is not None and SPI_RANGE[0] <= v <= SPI_RANGE[1] and self.spi_free(lk, v):
                self.take_spi(lk, v, "pinned")
            v = pin.get("reqid")
            if lk.reqid is None and v is not None and self.lo <= v <= self.hi and self.reqid_free(lk, v):
                self.take_reqid(lk, v, "pinned")

    def hashed(self, ordered):
        """Hashed from the host names, probing on; the names of the links left without a reqid."""
        starved = []
        for lk in ordered:
            if lk.spi is None:
                for v, i in _hash_candidates("spi", lk.src, lk.dst, SPI_RANGE[0], SPI_RANGE[1]):
                    if self.spi_free(lk, v):
                        self.take_spi(lk, v, "hash" if i == 0 else "probed")
                        break
            if lk.reqid is None:
                for v, i in _hash_candidates("reqid", lk.src, lk.dst, self.lo, self.hi):
                    if self.reqid_free(lk, v):
                        self.take_reqid(lk, v, "hash" if i == 0 else "probed")
                        break
                else:
                    starved.append(lk.name)
        return starved


# ----------------------------------------------------------------------------------------------
# keys

def attach_keys(links, store=None, require=True, master=None):
    """Give each link its key: the hand-given one, else the key store's (or, with ``master`` - the
    hkdf mode's secret as bytes - the key derived from it).  Refuse shared keys.

    store: {(src, dst): {"key": hex, ...}} (see parse_store).  With require=False a link may stay
    without a key (key_source "missing"), e.g. before the key store action has created it.
    """
    store = store or {}
    problems = []
    for lk in links:
        if master is not None:
            if lk.key_override is not None or lk.key_source == "inventory":
                problems.append("%s: ipsec_key_derivation is hkdf: every key is derived from ipsec_master_secret, "
                                "so %s cannot also have a hand-given key (the two key sources cannot mix for one "
                                "pair); remove the key from ipsec_overrides"
                                % (_where(lk.src, "ipsec_overrides[%s].key" % lk.dst), lk.name))
                continue
            entry = store.get((lk.src, lk.dst)) or {}
            lk.generation = entry.get("generation") or 1
            lk.key = derive_key(master, lk.src, lk.dst, lk.spi, lk.generation, lk.key_bits, entry.get("nonce"))
            lk.key_source = "hkdf"
            prev = entry.get("previous")
            if prev and entry.get("stage") and lk.spi == entry.get("spi"):
                lk.prev_spi = prev["spi"]
                lk.prev_key = derive_key(master, lk.src, lk.dst, prev["spi"], prev["generation"], lk.key_bits,
                                         entry.get("nonce"))
                lk.stage = entry["stage"]
            continue
        if lk.key_override is None and lk.key_source == "inventory":
            continue   # rebuilt from a pairs summary: the inventory holds the key, not us
        if lk.key_override is not None:
            try:
                lk.key = _key_hex(lk.key_override, lk.key_bits)
                lk.key_source = "inventory"
            except ValueError as e:
                problems.append("%s: %s" % (_where(lk.src, "ipsec_overrides[%s].key" % lk.dst), e))
                continue
            entry = store.get((lk.src, lk.dst))
            if entry and key_fingerprint(lk.key) in {r.get("fp") for r in entry.get("retired") or []}:
                problems.append("%s: this key served an SA instance of %s that is gone (lost or torn down); a "
                                "key serves one SA instance only: give a new key and a new SPI"
                                % (_where(lk.src, "ipsec_overrides[%s].key" % lk.dst), lk.name))
            continue
        entry = store.get((lk.src, lk.dst))
        if entry and entry.get("key") is not None:
            try:
                lk.key = _key_hex(entry["key"], lk.key_bits)
                lk.key_source = "keystore"
            except ValueError as e:
                problems.append("key store entry %s: key %s; delete the entry to generate a new key "
                                "(a rekey of this direction)" % (lk.name, e))
                continue
            lk.generation = entry.get("generation") or 1
            prev = entry.get("previous")
            if prev and entry.get("stage") and lk.spi == entry.get("spi"):
                try:
                    lk.prev_key = _key_hex(prev["key"], lk.key_bits)
                except ValueError as e:
                    problems.append("key store entry %s: previous key %s" % (lk.name, e))
                    continue
                lk.prev_spi = prev["spi"]
                lk.stage = entry["stage"]
            continue
        if require:
            problems.append("%s: no key for %s: set ipsec_overrides[%s].key on %s (from a vault variable) "
                            "or let the ipsec_keystore action create one (playbooks/derive.yml; in check "
                            "mode it writes nothing)"
                            % (_where(lk.src, "ipsec_overrides[%s].key" % lk.dst), lk.name, lk.dst, lk.src))
    if problems:
        raise DeriveError(problems)
    check_keys_distinct(links)
    return links


def check_keys_distinct(links):
    """Refuse a key (the AES part, salt aside) used by two directions or two pairs."""
    seen = {}
    problems = []
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        if lk.key is None:
            continue
        aes = lk.key[:-2 * SALT_BYTES]
        other = seen.get(aes)
        if other is not None:
            what = "the reverse direction" if (other.src, other.dst) == (lk.dst, lk.src) else "pair %s" % other.name
            problems.append("%s: the key of %s (%s) is also used by %s (from %s); every direction needs its own key"
                            % (_where(lk.src, "ipsec_overrides[%s].key" % lk.dst) if lk.key_source == "inventory"
                               else "key store entry %s" % lk.name, lk.name, lk.key_source, what, other.key_source))
        else:
            seen[aes] = lk
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        if lk.prev_key is None:
            continue
        aes = lk.prev_key[:-2 * SALT_BYTES]
        other = seen.get(aes)
        if other is not None:
            what = "its own new generation" if other is lk else "pair %s" % other.name
            problems.append("key store entry %s: the previous key is also used by %s; every direction and "
                            "generation needs its own key" % (lk.name, what))
        else:
            seen[aes] = lk
    if problems:
        raise DeriveError(problems)


# ----------------------------------------------------------------------------------------------
# per-host objects

def _host_prefix(ip):
    return "%s/%d" % (ip, ip.max_prefixlen)


def _offload(spec, kind):
    if spec.offload == "none" or kind == "fwd":
        return {"type": "none"}
    if kind == "policy" and spec.offload == "crypto":
        return {"type": "none"}   # policies have packet offload only
    return {"type": spec.offload, "dev": spec.dev}


def sa_object(link, specs, direction, previous=False):
    """The SA of ``link`` as the host at its ``direction`` end installs it.

    previous=True: the SA of the previous generation (a rotation in progress): its SPI and key,
    the same reqid and everything else.
    """
    s, d = specs[link.src], specs[link.dst]
    local = s if direction == "out" else d
    spi, key = (link.prev_spi, link.prev_key) if previous else (link.spi, link.key)
    sa = {
        "src": str(s.ip), "dst": str(d.ip), "spi": spi, "reqid": link.reqid,
        "mode": s.mode, "direction": direction,
        "aead": {"name": AEAD_NAME, "key": None if key is None else "0x" + key, "icv": ICV_BITS},
        "esn": s.esn,
        "offload": _offload(local, "sa"),
    }
    if direction == "in":
        # the anti-replay window is the receiver's; the xfrm module picks what an out SA needs
        sa["replay_window"] = REPLAY_WINDOW
    if s.mode == "transport":
        sa["sel"] = {"src": _host_prefix(s.ip), "dst": _host_prefix(d.ip)}
    return sa


def _policy_selectors(link, specs):
    """(src prefix, dst prefix) pairs the policies of ``link`` cover."""
    s, d = specs[link.src], specs[link.dst]
    if s.mode == "tunnel":
        srcs = s.networks or [ipaddress.ip_network(_host_prefix(s.ip))]
        dsts = d.networks or [ipaddress.ip_network(_host_prefix(d.ip))]
        return [(str(a), str(b)) for a in srcs for b in dsts if a.version == b.version]
    return [(_host_prefix(s.ip), _host_prefix(d.ip))]


def policy_objects(link, specs, direction):
    """The policies that steer ``link``'s traffic, on the host at its ``direction`` end."""
    s, d = specs[link.src], specs[link.dst]
    local = s if direction == "out" else d
    dirs = ["out"] if direction == "out" else (["in", "fwd"] if local.fwd else ["in"])
    out = []
    for src, dst in _policy_selectors(link, specs):
        for sel in (s.selectors or [{}]):
            for dr in dirs:
                sp = {"src": src, "dst": dst}
                for k in _SELECTOR_FIELDS:
                    if k in sel:
                        sp[k] = sel[k]
                sp.update({
                    "dir": dr, "priority": local.priority, "action": "allow",
                    "tmpl": {"src": str(s.ip), "dst": str(d.ip), "proto": "esp", "reqid": link.reqid,
                             "mode": s.mode, "level": "required"},
                    "offload": _offload(local, "fwd" if dr == "fwd" else "policy"),
                })
                out.append(sp)
    return out


def generations_present(link, direction):
    """Which generations of ``link``'s SA the host at its ``direction`` end keeps: a list of
    "previous"/"current", oldest first (the order they are added in, so the newest outbound SA is
    also the most recently added one).

    Outside a rotation: the current one.  During a rotation (make-before-break):
      stage inbound   out: previous           in: previous, current   (receivers first)
      stage outbound  out: previous, current  in: previous, current
      stage retire    out: current            in: previous, current   (old outbound gone)
    Finishing the rotation drops the previous generation: only the current one remains.
    """
    if link.stage is None or link.prev_spi is None:
        return ["current"]
    if direction == "in":
        return ["previous", "current"]
    return {"inbound": ["previous"], "outbound": ["previous", "current"], "retire": ["current"]}[link.stage]


def host_objects(specs, links, held=None, fresh=None):
    """{host: {"namespace", "peers", "states", "policies", "guards"}} for every participating host.

    A pair in rotation contributes the SAs of generations_present(); policies do not change
    (they select the SA by reqid, which both generations share).
    ``held``: {pair name: {"out": [generations], "in": [generations]}} for pairs whose SA was lost
    while the peer could not be reached (see plugin_utils._lifecycle): each end keeps only the
    SAs it still has, nothing is added, so a lost SA is never re-created with its old key.
    Policies and guards are emitted for every pair: they hold no key and make the protected
    traffic fail closed.  ``guards``: per SA policy two block policies that survive a link down
    or a lost SA (module_utils._guard), for hosts with ipsec_fail_closed (default true); site.yml
    installs ``policies + guards`` in one xfrm_offload_policy run.
    ``fresh``: when the SA lifecycle ran (site.yml), the pair names that get a new SA instance in
    this run; every other pair's SAs were found on the hosts and carry ``installed: true``, so
    xfrm_offload_state refuses to add one that vanished after the hosts were read (a link down, a
    teardown at the same time) instead of installing its key a second time.  None: no marking.
    """
    return {h: host_slice(specs, h, items, held, fresh) for h, items in links_by_host(specs, links).items()}


def links_by_host(specs, links):
    """{host: [(link, "out"|"in"), ...]} for every participating host (sorted), each host's links in
    the order of sorted (src, dst): the order host_objects() adds them in."""
    by_host = {h: [] for h in sorted(specs)}
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        by_host[lk.src].append((lk, "out"))
        by_host[lk.dst].append((lk, "in"))
    return by_host


def host_slice(specs, host, items, held=None, fresh=None):
    """One host's {"namespace", "peers", "states", "policies", "guards"} (see host_objects) from its
    entry of links_by_host(): only this host's objects are built, so a caller that goes host by
    host (render.yml's one-step render) never holds the whole mesh's objects (issue 18)."""
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard

    held = held or {}
    obj = {"namespace": specs[host].namespace, "peers": [], "states": [], "policies": [], "guards": []}
    for lk, direction in items:
        gens = held[lk.name][direction] if lk.name in held else generations_present(lk, direction)
        for gen in gens:
            sa = sa_object(lk, specs, direction, previous=gen == "previous")
            if fresh is not None and (gen == "previous" or lk.name not in fresh):
                sa["installed"] = True
            obj["states"].append(sa)
        obj["policies"].extend(policy_objects(lk, specs, direction))
        if direction == "out":
            obj["peers"].append(lk.dst)
    if specs[host].fail_closed:
        obj["guards"] = _guard.guards_for(obj["policies"])
    return obj


def heal_steps(specs, links, fresh):
    """Per host, the inbound SAs of the directions that get a new SA instance in this run
    (``fresh``: pair names - a new pair, or a direction rotated after a loss): the receivers add
    them before any sender adds its outbound SA (site.yml's heal phase), as rekey.yml does."""
    fresh = set(fresh or ())
    return {h: host_heal(specs, items, fresh) for h, items in links_by_host(specs, links).items()}


def host_heal(specs, items, fresh):
    """heal_steps() of one host, from its entry of links_by_host(); ``fresh`` a set of pair names."""
    return {"add_in": [sa_object(lk, specs, "in") for lk, direction in items if direction == "in" and lk.name in fresh]}


def rekey_steps(specs, links):
    """Per host, what playbooks/rekey.yml does for the pairs in rotation (whatever their stage):

      add_in   the new inbound SAs (phase 1, receivers first)
      add_out  the new outbound SAs (phase 2)
      del_out  identities (src, dst, spi) of the previous outbound SAs (phase 4a)
      del_in   identities of the previous inbound SAs (phase 4b)

    Every step is idempotent (merged / deleted by identity), so a re-run resumes an interrupted
    rotation.  Hosts without a pair in rotation get empty lists.
    """
    return {h: host_rekey(specs, items) for h, items in links_by_host(specs, links).items()}


def host_rekey(specs, items):
    """rekey_steps() of one host, from its entry of links_by_host()."""
    steps = {"add_in": [], "add_out": [], "del_out": [], "del_in": []}
    for lk, direction in items:
        if lk.stage is None or lk.prev_spi is None:
            continue
        steps["add_" + direction].append(sa_object(lk, specs, direction))
        steps["del_" + direction].append({"src": str(specs[lk.src].ip), "dst": str(specs[lk.dst].ip), "spi": lk.prev_spi})
    return steps


def pair_summary(link, specs):
    """A secret-free description of one directed pair."""
    return {
        "name": link.name, "src_host": link.src, "dst_host": link.dst,
        "src": str(specs[link.src].ip), "dst": str(specs[link.dst].ip),
        "spi": link.spi, "spi_hex": "0x%08x" % link.spi, "spi_source": link.spi_source,
        "reqid": link.reqid, "reqid_hex": "0x%08x" % link.reqid, "reqid_source": link.reqid_source,
        "key_bits": link.key_bits, "key_source": link.key_source,
        "mode": specs[link.src].mode,
        "generation": link.generation, "rotation": link.stage,
        "previous_spi_hex": None if link.prev_spi is None else "0x%08x" % link.prev_spi,
    }


# ----------------------------------------------------------------------------------------------
# the key store document (parsed YAML <-> entries); file I/O lives in the controller plugins

STORE_HEADER = (
    "# ipsec_offload.mlx5 key store: one AES-GCM key||salt per direction, plus the SPI and reqid\n"
    "# allocated to it (pinned so that adding hosts never renumbers a pair).  SECRET: keep it mode\n"
    "# 0600 and encrypt it at rest with ansible-vault.  Written by the ipsec_keystore action, as JSON\n"
    "# (one pair entry per line; YAML tools read it too).\n"
)


def parse_store(doc):
    """Parsed YAML -> {(src, dst): entry}.

    entry: {"key": hex|None, "spi": int|None, "reqid": int|None, "generation": int,
    "installed": bool, "retired": [{"generation", "spi", "fp"}], and during a rotation "previous"
    {key, spi, generation} and "stage"}.  ``installed``: the current generation's key was handed
    to a host (it may have been installed): it is never installed again once its SA is lost.
    Version 1 stores (before the SA lifecycle) are read with every entry counted as installed.
    """
    if doc is None or (isinstance(doc, Mapping) and not doc):
        return {}
    if not isinstance(doc, Mapping):
        raise DeriveError(["key store: not a mapping (expected keys ipsec_offload_keystore and pairs)"])
    version = doc.get("ipsec_offload_keystore")
    if version not in STORE_VERSIONS_READ:
        raise DeriveError(["key store: ipsec_offload_keystore is %r; this collection reads versions %s"
                           % (version, ", ".join(str(v) for v in STORE_VERSIONS_READ))])
    pairs = doc.get("pairs") or {}
    if not isinstance(pairs, Mapping):
        raise DeriveError(["key store: pairs must be a mapping src -> dst -> entry"])
    out = {}
    problems = []
    for src, dsts in pairs.items():
        if not isinstance(dsts, Mapping):
            problems.append("key store: pairs[%s] must be a mapping dst -> entry" % src)
            continue
        for dst, entry in dsts.items():
            name = "%s->%s" % (src, dst)
            if not isinstance(entry, Mapping):
                problems.append("key store entry %s: must be a mapping with key, spi, reqid" % name)
                continue
            item = {"key": None, "spi": None, "reqid": None, "generation": 1, "installed": True, "retired": []}
            if entry.get("key") is not None:
                try:
                    item["key"] = _key_hex(entry["key"])
                except ValueError as e:
                    problems.append("key store entry %s: key %s" % (name, e))
            for f, lo, hi in (("spi", SPI_RANGE[0], SPI_RANGE[1]), ("reqid", 1, 0xFFFFFFFF)):
                if entry.get(f) is not None:
                    try:
                        item[f] = _int(entry[f], lo, hi)
                    except ValueError as e:
                        problems.append("key store entry %s: %s %s" % (name, f, e))
            nonce = entry.get("nonce")
            if nonce is not None:
                if isinstance(nonce, str) and re.fullmatch(r"[0-9a-f]{%d}" % (2 * NONCE_BYTES), nonce):
                    item["nonce"] = nonce
                else:
                    problems.append("key store entry %s: nonce must be %d lower-case hex digits" % (name, 2 * NONCE_BYTES))
            inst = entry.get("installed", True)
            if not isinstance(inst, bool):
                problems.append("key store entry %s: installed must be true or false" % name)
            else:
                item["installed"] = inst
            _parse_rotation(name, entry, item, problems)
            _parse_retired(name, entry, item, problems)
            out[(str(src), str(dst))] = item
    if problems:
        raise DeriveError(problems)
    return out


def _parse_retired(name, entry, item, problems):
    """retired: [{generation, spi, fp}] - the SA instances of this direction that are gone for good
    (lost, torn down, rotated out).  Their SPIs and keys are never handed out again.  Refuses a
    store where the generation goes backwards or a retired key or SPI is back in use."""
    raw = entry.get("retired")
    if raw is None:
        raw = []
    if not _seq(raw):
        problems.append("key store entry %s: retired must be a list of {generation, spi, fp}" % name)
        return
    ok = True
    for i, r in enumerate(raw):
        if not isinstance(r, Mapping):
            problems.append("key store entry %s: retired[%d] must be a mapping {generation, spi, fp}" % (name, i))
            ok = False
            continue
        rec = {"fp": None}
        try:
            rec["generation"] = _int(r.get("generation"), 1, 0xFFFFFFFF)
            rec["spi"] = _int(r.get("spi"), SPI_RANGE[0], SPI_RANGE[1])
        except (ValueError, TypeError) as e:
            problems.append("key store entry %s: retired[%d]: %s" % (name, i, e))
            ok = False
            continue
        fp = r.get("fp")
        if fp is not None:
            if not isinstance(fp, str) or not re.match(r"\A[0-9a-f]{16}\Z", fp):
                problems.append("key store entry %s: retired[%d].fp must be 16 lower-case hex digits" % (name, i))
                ok = False
                continue
            rec["fp"] = fp
        item["retired"].append(rec)
    if not ok or not item["retired"]:
        return
    last = max(r["generation"] for r in item["retired"])
    live = [("current", item.get("generation") or 1, item.get("spi"), item.get("key"))]
    if item.get("previous"):
        p = item["previous"]
        live.append(("previous", p["generation"], p["spi"], p["key"]))
    for what, gen, spi, key in live:
        if gen <= last:
            problems.append("key store entry %s: the %s generation %d is not newer than retired generation %d "
                            "(a generation going backwards: the store was edited or an old copy restored); "
                            "restore the store written last, or delete this entry so that the pair rotates"
                            % (name, what, gen, last))
        if spi is not None and spi in {r["spi"] for r in item["retired"]}:
            problems.append("key store entry %s: the %s SPI 0x%08x belongs to a retired SA instance; a lost SA "
                            "never comes back: delete this entry so that the pair rotates" % (name, what, spi))
        if key is not None and key_fingerprint(key) in {r["fp"] for r in item["retired"]}:
            problems.append("key store entry %s: the %s key belongs to a retired SA instance (a used key marked "
                            "unused); a key serves one SA instance only: delete this entry so that the pair "
                            "rotates" % (name, what))


def _parse_rotation(name, entry, item, problems):
    """Optional generation fields of a store entry (absent in stores written before rotations):
    generation (int >= 1), rotation (stage) and previous {key, spi, generation}, both or neither."""
    if entry.get("generation") is not None:
        try:
            item["generation"] = _int(entry["generation"], 1, 0xFFFFFFFF)
        except ValueError as e:
            problems.append("key store entry %s: generation %s" % (name, e))
    stage, prev = entry.get("rotation"), entry.get("previous")
    if stage is None and prev is None:
        return
    if stage not in ROTATION_STAGES:
        problems.append("key store entry %s: rotation must be one of %s (with previous)" % (name, ", ".join(ROTATION_STAGES)))
        return
    if not isinstance(prev, Mapping) or prev.get("spi") is None or (prev.get("key") is None) != (item["key"] is None):
        problems.append("key store entry %s: a rotation needs previous: {key, spi, generation} (no key in "
                        "both, in hkdf mode)" % name)
        return
    p = {"key": None}
    if prev.get("key") is not None:
        try:
            p["key"] = _key_hex(prev["key"])
        except ValueError as e:
            problems.append("key store entry %s: previous key %s" % (name, e))
    try:
        p["spi"] = _int(prev["spi"], SPI_RANGE[0], SPI_RANGE[1])
    except ValueError as e:
        problems.append("key store entry %s: previous spi %s" % (name, e))
    try:
        p["generation"] = _int(prev.get("generation", 1), 1, 0xFFFFFFFF)
    except ValueError as e:
        problems.append("key store entry %s: previous generation %s" % (name, e))
    if len(p) == 3:
        if p["generation"] >= (item.get("generation") or 1):
            problems.append("key store entry %s: the previous generation %d is not older than the current one %d "
                            "(a generation going backwards)" % (name, p["generation"], item.get("generation") or 1))
            return
        if p["spi"] == item.get("spi"):
            problems.append("key store entry %s: previous spi equals the current one (a rotation needs a new SPI)" % name)
            return
        item["previous"] = p
        item["stage"] = stage


def store_document(entries):
    """{(src, dst): entry} -> the YAML-able document (sorted, hex strings)."""
    pairs = {}
    for (src, dst) in sorted(entries):
        e = entries[(src, dst)]
        item = {}
        if e.get("key") is not None:
            item["key"] = "0x" + e["key"]
        if e.get("spi") is not None:
            item["spi"] = "0x%08x" % e["spi"]
        if e.get("reqid") is not None:
            item["reqid"] = "0x%08x" % e["reqid"]
        if (e.get("generation") or 1) > 1:
            item["generation"] = e["generation"]
        if e.get("nonce"):
            item["nonce"] = e["nonce"]
        item["installed"] = bool(e.get("installed", True))
        if e.get("previous") and e.get("stage"):
            p = e["previous"]
            item["previous"] = {"spi": "0x%08x" % p["spi"], "generation": p["generation"]}
            if p.get("key") is not None:
                item["previous"]["key"] = "0x" + p["key"]
            item["rotation"] = e["stage"]
        if e.get("retired"):
            item["retired"] = [{"generation": r["generation"], "spi": "0x%08x" % r["spi"], **({"fp": r["fp"]} if r.get("fp") else {})}
                               for r in sorted(e["retired"], key=lambda r: r["generation"])]
        pairs.setdefault(src, {})[dst] = item
    nonces = any(e.get("nonce") for e in entries.values())
    return {"ipsec_offload_keystore": STORE_VERSION_NONCE if nonces else STORE_VERSION, "pairs": pairs}


def retire(entry):
    """Move the entry's live SA instances (current, and previous during a rotation) to its retired
    list: their SPIs and keys are never handed out again.  Mutates ``entry``."""
    gone = []
    if entry.get("previous"):
        p = entry["previous"]
        gone.append((p["generation"], p["spi"], p.get("key")))
    if entry.get("spi") is not None:
        gone.append((entry.get("generation") or 1, entry["spi"], entry.get("key")))
    known = {(r["generation"], r["spi"]) for r in entry.get("retired") or []}
    entry["retired"] = list(entry.get("retired") or [])
    for gen, spi, key in gone:
        if (gen, spi) not in known:
            entry["retired"].append({"generation": gen, "spi": spi, "fp": key_fingerprint(key) if key else None})
    entry.pop("previous", None)
    entry.pop("stage", None)


def retired_spis(entries, dst):
    """Every SPI towards ``dst`` that the store knows: current, previous and retired ones."""
    used = set()
    for (s, d), e in entries.items():
        if d != dst:
            continue
        if e.get("spi") is not None:
            used.add(e["spi"])
        if e.get("previous"):
            used.add(e["previous"]["spi"])
        used.update(r["spi"] for r in e.get("retired") or [])
    return used


def random_spi(taken, token_bytes=_secrets.token_bytes):
    """A random SPI in SPI_RANGE not in ``taken`` (new generations: never a number used before)."""
    for dummy in range(1000):
        v = int.from_bytes(token_bytes(4), "big")
        if SPI_RANGE[0] <= v <= SPI_RANGE[1] and v not in taken:
            return v
    raise DeriveError(["no free SPI found (random source broken?)"])


def new_generation(entry, lk, entries, key_mode="keystore", new_key=generate_key, taken=(), spi=None):
    """Retire the entry's SA instances and give it the next generation: a new SPI (random, never
    used towards lk.dst, not in ``taken``) and a new key (keystore mode; hkdf keys follow from the
    SPI and generation), not yet installed.  Mutates ``entry``; returns it."""
    gen = max([entry.get("generation") or 1] + [r["generation"] for r in entry.get("retired") or []]
              + ([entry["previous"]["generation"]] if entry.get("previous") else []))
    retire(entry)
    if spi is None:
        spi = random_spi(retired_spis(entries, lk.dst) | set(taken))
    entry["spi"] = spi
    entry["generation"] = gen + 1
    entry["installed"] = False
    if key_mode == "keystore" and lk.key_source != "inventory":
        fps = {r.get("fp") for r in entry["retired"]}
        key = new_key(lk.key_bits)
        while key_fingerprint(key) in fps:   # only a broken random source repeats a key
            key = new_key(lk.key_bits)
        entry["key"] = key
    else:
        entry["key"] = None
    return entry


def update_store(entries, links, new_key=generate_key, key_mode="keystore"):
    """Entries for the key store after this run: keys for links that need one, pins for all.

    Returns (new_entries, report) where report = {"created": [names], "pinned": [names],
    "repinned": [names], "renewed": [names]}.  Entries of pairs no longer in the inventory are kept
    (a host may be out of the inventory for a while; deleting keys is an explicit act).  Links
    whose key comes from the inventory get no stored key, nor do any in hkdf mode, where a new entry
    gets a random nonce instead (derive_key).  A new entry is not installed yet.  An installed
    entry whose SPI must change (its pin collides now) is never
    given the new SPI with its old key: it moves to a new generation (new key), the old one retired.
    """
    out = {k: dict(v) for k, v in entries.items()}
    report = {"created": [], "pinned": [], "repinned": [], "renewed": []}
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        k = (lk.src, lk.dst)
        fresh = k not in out
        e = out.setdefault(k, {"key": None, "spi": None, "reqid": None, "generation": 1, "installed": False,
                               "retired": []})
        if key_mode == "hkdf":
            e["key"] = None
            if fresh:
                e["nonce"] = new_nonce()
        elif lk.key_source != "inventory" and e.get("key") is None:
            e["key"] = new_key(lk.key_bits)
            if not fresh:
                e["installed"] = False    # a new key is a new SA instance
            report["created"].append(lk.name)
        if (e.get("spi"), e.get("reqid")) != (lk.spi, lk.reqid):
            if e.get("spi") is not None and e["spi"] != lk.spi and e.get("installed") and not e.get("stage"):
                e["reqid"] = lk.reqid
                new_generation(e, lk, out, key_mode, new_key, spi=lk.spi)
                report["renewed"].append(lk.name)
                continue
            report["repinned" if e.get("spi") is not None or e.get("reqid") is not None else "pinned"].append(lk.name)
            e["spi"], e["reqid"] = lk.spi, lk.reqid
    return out, report


def pins_of(entries):
    out = {}
    for k, v in entries.items():
        out[k] = {"spi": v.get("spi"), "reqid": v.get("reqid")}
        if v.get("previous") and v.get("stage"):
            out[k]["previous_spi"] = v["previous"]["spi"]
        if v.get("retired"):
            out[k]["retired_spis"] = [r["spi"] for r in v["retired"]]
    return out


# ----------------------------------------------------------------------------------------------
# key rotation: generations in the key store (pure; the ipsec_keystore action does the file I/O)
#
# An entry in rotation keeps its reqid and holds the NEW generation in key/spi/generation, the
# old one in previous {key, spi, generation}, and the stage in rotation:
#   inbound   created; receivers install the new inbound SA (old SAs untouched)
#   outbound  every new inbound SA is in place; senders may add the new outbound SA
#   retire    every new outbound SA is in place; the old outbound SAs may go
# finish_rotation() drops previous (the old inbound SAs may go).  See generations_present().

ROTATION_STAGES = ("inbound", "outbound", "retire")
ROTATION_FINISHED = "finished"


def select_pairs(selectors, names):
    """Pair selectors -> the set of directed pair names ("a->b") out of ``names``.

    A selector is "a->b" (one direction), "a<->b" (both directions) or a host name (every
    direction to and from it).  An unknown selector is an error naming it.
    """
    if selectors is None:
        return set(names)
    if _str(selectors):
        selectors = _names(selectors)
    if not _seq(selectors):
        raise DeriveError(["rotate: must be a list of pair selectors (a->b, a<->b or a host name)"])
    names = set(names)
    out = set()
    problems = []
    for i, sel in enumerate(selectors):
        if not _str(sel) or not sel.strip():
            problems.append("rotate[%d]: must be a string a->b, a<->b or a host name" % i)
            continue
        sel = sel.strip()
        if "<->" in sel:
            a, b = [x.strip() for x in sel.split("<->", 1)]
            got = {"%s->%s" % (a, b), "%s->%s" % (b, a)} & names
        elif "->" in sel:
            a, b = [x.strip() for x in sel.split("->", 1)]
            got = {"%s->%s" % (a, b)} & names
        else:
            got = {n for n in names if sel in n.split("->")}
        if not got:
            problems.append("rotate[%d]: %s matches no IPsec pair of the inventory" % (i, sel))
        out |= got
    if problems:
        raise DeriveError(problems)
    return out


def _rotation_spi(entries, links, lk, generation):
    """A new SPI for ``lk``'s next generation: deterministic (hash of names and generation), never
    the SPI of any SA towards lk.dst that the store or the allocation knows (current or previous)."""
    used = set()
    for (src, dst), e in entries.items():
        if dst == lk.dst:
            if e.get("spi") is not None:
                used.add(e["spi"])
            if e.get("previous"):
                used.add(e["previous"]["spi"])
            used.update(r["spi"] for r in e.get("retired") or [])
    used |= {x.spi for x in links if x.dst == lk.dst and x.spi is not None}
    for v, dummy in _hash_candidates("spi-generation-%d" % generation, lk.src, lk.dst, SPI_RANGE[0], SPI_RANGE[1]):
        if v not in used:
            return v
    raise DeriveError(["%s: no free SPI left towards %s" % (lk.name, lk.dst)])


def start_rotation(entries, links, chosen, new_key=generate_key, key_mode="keystore"):
    """Start a rotation for the directed pairs named in ``chosen`` (links already allocated and
    pinned, e.g. by update_store).  Idempotent: a pair already in rotation is left as it is (its
    new key is not replaced), so re-running an unfinished rotation continues it.

    Returns (new_entries, report) with report {"started": [names], "continuing": [names]}.
    """
    out = {k: dict(v) for k, v in entries.items()}
    report = {"started": [], "continuing": []}
    problems = []
    all_keys = set()
    for e in out.values():
        if e.get("key"):
            all_keys.add(e["key"][:-2 * SALT_BYTES])
        if e.get("previous") and e["previous"].get("key"):
            all_keys.add(e["previous"]["key"][:-2 * SALT_BYTES])
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        if lk.name not in chosen:
            continue
        e = out.get((lk.src, lk.dst))
        if lk.key_source == "inventory" or lk.key_override is not None:
            problems.append("%s: the key of %s comes from the inventory; rotate it by giving a new key and SPI "
                            "there (rekey.yml rotates key store keys only)"
                            % (_where(lk.src, "ipsec_overrides[%s].key" % lk.dst), lk.name))
            continue
        if lk.spi_source == "override":
            problems.append("%s: the SPI of %s is hand-given; a rotation needs a new SPI: remove the override "
                            "or rotate by hand" % (_where(lk.src, "ipsec_overrides[%s].spi" % lk.dst), lk.name))
            continue
        if not e or (e.get("key") is None and key_mode != "hkdf") or e.get("spi") is None:
            problems.append("key store entry %s: no key yet; run playbooks/derive.yml (or site.yml) without "
                            "--check first" % lk.name)
            continue
        if e.get("previous") and e.get("stage"):
            report["continuing"].append(lk.name)
            continue
        gen = max([e.get("generation") or 1] + [r["generation"] for r in e.get("retired") or []]) + 1
        spi = _rotation_spi(out, links, lk, gen)
        key = None
        if key_mode != "hkdf":
            fps = {r.get("fp") for r in e.get("retired") or []}
            key = new_key(lk.key_bits)
            while key[:-2 * SALT_BYTES] in all_keys or key_fingerprint(key) in fps:
                key = new_key(lk.key_bits)     # only a broken random source repeats a key
            all_keys.add(key[:-2 * SALT_BYTES])
        e["previous"] = {"key": e["key"], "spi": e["spi"], "generation": e.get("generation") or 1}
        e["key"], e["spi"], e["generation"], e["stage"] = key, spi, gen, ROTATION_STAGES[0]
        # rekey.yml hands the new generation out at once (phase 1): count it as installed
        e["installed"] = True
        lk.spi = spi
        report["started"].append(lk.name)
    if problems:
        raise DeriveError(problems)
    return out, report


def advance_rotation(entries, stage, chosen=None, strict=True):
    """Move every rotation (of the pairs in ``chosen``, default all) to ``stage`` (one of
    ROTATION_STAGES[1:] or "finished").  Monotonic: a rotation already at or past ``stage`` is
    left alone; skipping a stage is refused (each one is a fact about the hosts: every new inbound
    SA installed, then every new outbound SA).  "finished" drops the previous generation.
    strict=False allows skipping (check mode: the stages before were reported, not written).

    Returns (new_entries, {"advanced": [names], "finished": [names]}).
    """
    order = list(ROTATION_STAGES) + [ROTATION_FINISHED]
    if stage not in order[1:]:
        raise DeriveError(["rotation_stage: %r is not one of %s" % (stage, ", ".join(order[1:]))])
    target = order.index(stage)
    out = {k: dict(v) for k, v in entries.items()}
    report = {"advanced": [], "finished": []}
    problems = []
    for k in sorted(out):
        e = out[k]
        name = "%s->%s" % k
        if not (e.get("previous") and e.get("stage")) or (chosen is not None and name not in chosen):
            continue
        cur = order.index(e["stage"])
        if cur >= target:
            continue
        if strict and cur + 1 < target:
            problems.append("key store entry %s: rotation is at stage %s; it cannot skip to %s"
                            % (name, e["stage"], stage))
            continue
        if stage == ROTATION_FINISHED:
            p = e.pop("previous", None)
            e.pop("stage", None)
            e["retired"] = list(e.get("retired") or []) + [
                {"generation": p["generation"], "spi": p["spi"], "fp": key_fingerprint(p["key"]) if p.get("key") else None}]
            report["finished"].append(name)
        else:
            e["stage"] = stage
            report["advanced"].append(name)
    if problems:
        raise DeriveError(problems)
    return out, report


def rotations_of(entries):
    """{name: stage} of the rotations in progress."""
    return {"%s->%s" % k: e["stage"] for k, e in sorted(entries.items()) if e.get("previous") and e.get("stage")}


# ----------------------------------------------------------------------------------------------
# the whole derivation

KEYS_MODES = ("required", "optional", "none")


def derive(hostvars, hosts=None, groups=None, meshes=None, reqid_range=None, store=None, keys="required",
           master_secret=None, lifecycle=None):
    """Inventory (+ parsed key store) -> {"pairs": [...], "hosts": {...}, "reqid_range": [lo, hi]}.

    ``store`` is the key store as parse_store returns it (or None).
    ``keys``: required (every SA must have its key), optional (SAs without a key get key None),
    none (no keys at all and no "hosts": only the secret-free allocation, for the key store action).
    ``master_secret``: hkdf mode (ipsec_key_derivation: hkdf): every key derived from it.
    ``lifecycle``: what the ipsec_keystore action found on the hosts (its ``lifecycle`` result):
    {"held": {name: {"out": [...], "in": [...]}}, "fresh": [names], "planned": {name: {"spi",
    "generation"}}, "check_mode": bool}.  In check mode the planned new generations are shown with
    throw-away keys (never stored, never installed), as are pairs that have no key yet.
    Raises DeriveError.
    """
    specs, links, rrange = derive_links(hostvars, hosts, groups, meshes, reqid_range, store, keys, master_secret,
                                        lifecycle)
    life = lifecycle or {}
    out = {
        "reqid_range": list(rrange),
        "pairs": [pair_summary(lk, specs) for lk in sorted(links, key=lambda x: (x.src, x.dst))],
    }
    if keys != "none":
        out["hosts"] = host_objects(specs, links, life.get("held"),
                                    None if lifecycle is None or "fresh" not in life else life["fresh"])
        out["rekey"] = rekey_steps(specs, links)
        out["heal"] = heal_steps(specs, links, life.get("fresh"))
        out["rotations"] = {lk.name: lk.stage for lk in sorted(links, key=lambda x: (x.src, x.dst)) if lk.stage}
    return out


def derive_slices(hostvars, hosts=None, groups=None, meshes=None, reqid_range=None, store=None,
                  master_secret=None, lifecycle=None):
    """derive() (keys required) cut into one slice per host, each a JSON text (issue 18).

    Returns {"reqid_range", "host_names", "count" (directed pairs), "rotations" (name -> stage),
    "rotating" (the pair summaries of unfinished rotations), "pair_ends" (JSON text {name: [src_host,
    dst_host]}), "hosts" {host: JSON text of its slice}}.  A slice is host_slice()'s
    {namespace, peers, states, policies, guards} plus "pairs" (the summaries of the pairs it sends
    or receives), "rekey" (its rekey_steps()) and "heal" (its heal_steps()).

    Built and serialised one host at a time: the whole mesh's objects are never held at once, and
    Ansible carries one string per host instead of N*(N-1) nested mappings (a full mesh of 200
    hosts: the derivation task took 52 s with the nested form, 6 s with the texts).
    """
    specs, links, rrange = derive_links(hostvars, hosts, groups, meshes, reqid_range, store, "required",
                                        master_secret, lifecycle)
    life = lifecycle or {}
    held = life.get("held")
    fresh = None if lifecycle is None or "fresh" not in life else life["fresh"]
    fresh_names = set(fresh or ())
    ordered = sorted(links, key=lambda x: (x.src, x.dst))
    hosts_out = {}
    for host, items in links_by_host(specs, links).items():
        obj = host_slice(specs, host, items, held, fresh)
        obj["pairs"] = [pair_summary(lk, specs) for lk, dummy in items]
        obj["rekey"] = host_rekey(specs, items)
        obj["heal"] = host_heal(specs, items, fresh_names)
        hosts_out[host] = json.dumps(obj, separators=(",", ":"))
    return {
        "reqid_range": list(rrange),
        "host_names": sorted({lk.src for lk in links} | {lk.dst for lk in links}),
        "count": len(links),
        "rotations": {lk.name: lk.stage for lk in ordered if lk.stage},
        "rotating": [pair_summary(lk, specs) for lk in ordered if lk.stage],
        "pair_ends": json.dumps({lk.name: [lk.src, lk.dst] for lk in ordered}, separators=(",", ":")),
        "hosts": hosts_out,
    }


def derive_links(hostvars, hosts=None, groups=None, meshes=None, reqid_range=None, store=None, keys="required",
                 master_secret=None, lifecycle=None):
    """The work of derive() without its output: (specs, links with SPI/reqid/keys, reqid range).
    Same arguments; raises DeriveError."""
    if keys not in KEYS_MODES:
        raise DeriveError(["keys=: %r is not one of %s" % (keys, ", ".join(KEYS_MODES))])
    life = lifecycle or {}
    master = check_master_secret(master_secret) if master_secret is not None else None
    specs, pairs, rrange = read_inventory(hostvars, hosts, groups, meshes, reqid_range)
    links = build_links(specs, pairs)
    allocate(links, rrange, pins_of(store or {}))
    if keys == "none":
        for lk in links:
            if lk.key_override is not None:
                lk.key_source = "inventory"
    else:
        check = bool(life.get("check_mode"))
        attach_keys(links, store, require=keys == "required" and not check, master=master)
        planned = life.get("planned") or {}
        for lk in links:
            plan = planned.get(lk.name)
            if plan is not None:
                lk.spi, lk.generation = int(plan["spi"]), int(plan["generation"])
                lk.prev_spi = lk.prev_key = lk.stage = None
                lk.key = (derive_key(master, lk.src, lk.dst, lk.spi, lk.generation, lk.key_bits,
                                     ((store or {}).get((lk.src, lk.dst)) or {}).get("nonce")) if master
                          else generate_key(lk.key_bits) if check else None)
                lk.key_source = "hkdf" if master else "check mode: a new key" if check else lk.key_source
            elif check and lk.key is None and keys == "required":
                lk.key = generate_key(lk.key_bits)
                lk.key_source = "check mode: a new key"
    return specs, links, rrange


_SUMMARY_FIELDS = ("src_host", "dst_host", "spi", "reqid", "key_bits", "spi_source", "reqid_source", "key_source")
_PACKED_FIELDS = ("src_host", "dst_host", "src", "dst", "spi", "spi_source", "reqid", "reqid_source", "key_bits",
                  "key_source")


def pack_pairs(pairs):
    """A pairs list (secret-free summaries) -> one JSON text of rows (_PACKED_FIELDS): what the key
    store action needs, as one string.  derive.yml keeps its allocation fact in this form: Ansible
    handles one string of a few MB quickly, but 90,000 dicts (a 300-host full mesh) took it about
    a minute per task that set or passed them (issue 18)."""
    return json.dumps([[p[f] for f in _PACKED_FIELDS] for p in pairs], separators=(",", ":"))


def pack_links(specs, links):
    """pack_pairs() of the pairs derive() would list, straight from the links (no summaries built)."""
    rows = []
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        rows.append([lk.src, lk.dst, str(specs[lk.src].ip), str(specs[lk.dst].ip), lk.spi, lk.spi_source, lk.reqid,
                     lk.reqid_source, lk.key_bits, lk.key_source])
    return json.dumps(rows, separators=(",", ":"))


def unpack_pairs(text):
    """pack_pairs() text -> [{field: value}] with the _PACKED_FIELDS and the pair name."""
    try:
        rows = json.loads(text)
    except (TypeError, ValueError):
        raise DeriveError(["packed pairs: not the text pack_pairs() makes"]) from None
    out = []
    for i, row in enumerate(rows if isinstance(rows, list) else [None]):
        if not isinstance(row, list) or len(row) != len(_PACKED_FIELDS):
            raise DeriveError(["packed pairs[%d]: not a row of pack_pairs()" % i])
        d = dict(zip(_PACKED_FIELDS, row))
        d["name"] = "%s->%s" % (d["src_host"], d["dst_host"])
        out.append(d)
    return out


def links_from_summary(pairs):
    """Rebuild Links from the ``pairs`` list the filter returns (for the key store action)."""
    links = []
    for i, p in enumerate(pairs):
        if not isinstance(p, Mapping) or not all(k in p for k in _SUMMARY_FIELDS):
            raise DeriveError(["pairs[%d]: not an entry of ipsec_pairs(...).pairs" % i])
        lk = Link(str(p["src_host"]), str(p["dst_host"]), int(p["key_bits"]),
                  int(p["spi"]) if p["spi_source"] == "override" else None,
                  int(p["reqid"]) if p["reqid_source"] == "override" else None)
        if p["key_source"] == "inventory":
            lk.key_source = "inventory"   # the key itself never travels in a summary
        links.append(lk)
    return links
