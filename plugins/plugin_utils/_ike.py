# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""IKE backends (strongSwan, libreswan): pure functions, no I/O.

- connections(): the derivation (ipsec_pairs filter output) -> this host's IKE connections, one per
  peer, each with its CHILD_SAs (traffic selectors taken from the derived policies, so the IKE
  backends protect exactly what the iproute2 backend would) and a per-pair PSK.
- render_swanctl() / render_swanctl_secrets() / render_libreswan() / render_libreswan_secrets():
  the configuration files the collection owns.
- parse_swanctl_sas() / parse_swanctl_conns() / parse_trafficstatus() / parse_showstates() /
  parse_whack_status(): the daemons' status text -> data.
- backend_support(): the backend version -> can it do the requested offload.

Ownership: every connection (and file) the collection writes is named ``ipsec_offload_mlx5-<a>-<b>``
(a, b = the pair's inventory host names, sorted). The daemons choose their SAs' reqids; verify finds
the kernel SAs of a connection by the reqids the daemon lists for it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

CONN_PREFIX = "ipsec_offload_mlx5"
BACKENDS = ("iproute2", "strongswan", "libreswan")
IKE_BACKENDS = ("strongswan", "libreswan")
OFFLOADS = ("none", "crypto", "packet")
# Minimum versions for packet offload (checked against public sources, see docs/ike.md):
#   strongSwan: hw_offload=packet merged 2023-02-17 (branch hw-packet-offload, "kernel 6.2"), first
#   release 5.9.10; libreswan: nic-offload=packet from 5.0 (commit 8e77c72cd4 of 2023-08-05, first
#   in tag v5.0rc1; CHANGES v5.0 "HW packet offload support"; kernel side: Linux 6.4).
PACKET_MIN = {"strongswan": (5, 9, 10), "libreswan": (5, 0)}
_PSK_LABEL = b"ipsec_offload.mlx5 IKE PSK v1 "
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_PSK_RE = re.compile(r"^[A-Za-z0-9+/=_.:-]{16,256}$")
PROTO_NUM = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "gre": 47, "esp": 50, "ipv6-icmp": 58}


class IkeError(ValueError):
    """A problem in the input; the message names the host/variable and never carries a secret."""


def conn_name(a, b):
    lo, hi = sorted((a, b))
    for h in (lo, hi):
        if not isinstance(h, str) or not _HOST_RE.match(h):
            raise IkeError("host %r: inventory name not usable in an IKE connection name "
                           "(letters, digits, '_', '.', '-'; at most 63)" % (h,))
    return "%s-%s-%s" % (CONN_PREFIX, lo, hi)


def _prefix(value):
    net = ipaddress.ip_network(str(value), strict=False)
    return net


def _port(value, where):
    if value is None or value == "":
        return None
    try:
        p = int(str(value), 0)
    except ValueError:
        raise IkeError("%s: port %r is not a number" % (where, value)) from None
    if not 0 < p < 65536:
        raise IkeError("%s: port %d out of range" % (where, p))
    return p


def _child(local, remote, proto, lport, rport):
    return {"local": str(local), "remote": str(remote), "proto": proto, "lport": lport, "rport": rport}


def derive_psk(host_a, host_b, key_ab, key_ba):
    """A per-pair PSK both peers compute alike: HMAC-SHA256 over the pair name, keyed with the two
    directions' ESP keys in host-name order. Hex, 64 characters."""
    (a, ka), (b, kb) = sorted(((host_a, key_ab), (host_b, key_ba)))
    secret = bytes.fromhex(str(ka).lower().replace("0x", "", 1)) + bytes.fromhex(str(kb).lower().replace("0x", "", 1))
    return hmac.new(secret, _PSK_LABEL + ("%s<->%s" % (a, b)).encode(), hashlib.sha256).hexdigest()


def connections(derived, host, overrides=None):
    """This host's IKE connections from the ipsec_pairs derivation.

    derived: the host's slice (derive.yml's ipsec_host: states, policies, pairs) or the filter's
    nested result with keys (hosts[h].states/policies, pairs). overrides: optional
    {peer: {"psk": "..."}} (e.g. from vault) - the same PSK must be given on both hosts.
    Returns a list sorted by name of
      {name, peer, local_addr, remote_addr, initiator, mode, offload, dev, key_bits, children, psk}
    with children = [{name, local, remote, proto, lport, rport}].
    """
    if isinstance(derived, dict) and "hosts" not in derived and "states" in derived and "pairs" in derived:
        derived = {"hosts": {host: derived}, "pairs": derived["pairs"]}   # the host's own slice (ipsec_host)
    if not isinstance(derived, dict) or "hosts" not in derived or "pairs" not in derived:
        raise IkeError("neither the host's slice (ipsec_host) nor the whole derivation: run derive.yml first")
    hosts = derived["hosts"]
    if host not in hosts:
        raise IkeError("host %s: not part of any IPsec pair" % host)
    mine = hosts[host]
    overrides = overrides or {}
    out = []
    pairs = derived["pairs"]
    peers = sorted({p["dst_host"] for p in pairs if p["src_host"] == host}
                   | {p["src_host"] for p in pairs if p["dst_host"] == host})
    for peer in peers:
        name = conn_name(host, peer)
        p_out = next((p for p in pairs if p["src_host"] == host and p["dst_host"] == peer), None)
        p_in = next((p for p in pairs if p["src_host"] == peer and p["dst_host"] == host), None)
        if p_out is None or p_in is None:
            raise IkeError("host %s: the pair with %s is one-sided" % (host, peer))
        local_addr, remote_addr = p_out["src"], p_out["dst"]
        sa_out = next((s for s in mine["states"] if s["spi"] == p_out["spi"] and s["dst"] == remote_addr), None)
        sa_in = next((s for s in mine["states"] if s["spi"] == p_in["spi"] and s["dst"] == local_addr), None)
        if sa_out is None or sa_in is None:
            raise IkeError("host %s: the derivation has no SAs for the pair with %s" % (host, peer))
        children = []
        for sp in mine["policies"]:
            tmpl = sp.get("tmpl") or {}
            where = "host %s: policy %s -> %s" % (host, sp.get("src"), sp.get("dst"))
            proto = sp.get("proto")
            if proto is not None and str(proto) not in PROTO_NUM:
                raise IkeError("%s: proto %s has no IKE traffic selector mapping here" % (where, proto))
            if sp.get("dir") == "out" and tmpl.get("dst") == remote_addr:
                c = _child(_prefix(sp["src"]), _prefix(sp["dst"]), proto,
                           _port(sp.get("sport"), where), _port(sp.get("dport"), where))
            elif sp.get("dir") == "in" and tmpl.get("src") == remote_addr:
                c = _child(_prefix(sp["dst"]), _prefix(sp["src"]), proto,
                           _port(sp.get("dport"), where), _port(sp.get("sport"), where))
            else:
                continue
            if c not in children:
                children.append(c)
        if not children:
            children.append(_child(_prefix(local_addr), _prefix(remote_addr), None, None, None))
        children.sort(key=lambda c: (c["local"], c["remote"], str(c["proto"]), c["lport"] or 0, c["rport"] or 0))
        for i, c in enumerate(children, 1):
            c["name"] = "%s-c%d" % (name, i)
        psk_mine = (overrides.get(peer) or {}).get("psk") if isinstance(overrides.get(peer), dict) else None
        if psk_mine is not None:
            psk_mine = str(psk_mine)
            if not _PSK_RE.match(psk_mine):
                raise IkeError("host %s: ipsec_overrides[%s].psk: 16-256 characters of [A-Za-z0-9+/=_.:-]"
                               % (host, peer))
            psk = psk_mine
        else:
            ka, kb = (sa_out.get("aead") or {}).get("key"), (sa_in.get("aead") or {}).get("key")
            if not ka or not kb:
                raise IkeError("host %s: no ESP keys for the pair with %s to derive its PSK from "
                               "(run derive.yml with the key store, or give ipsec_overrides[%s].psk)"
                               % (host, peer, peer))
            psk = derive_psk(host, peer, ka, kb)
        off = sa_out.get("offload") or {"type": "none"}
        out.append({
            "name": name, "peer": peer, "local_addr": local_addr, "remote_addr": remote_addr,
            "initiator": host < peer, "mode": sa_out.get("mode", "transport"),
            "offload": off.get("type", "none"), "dev": off.get("dev"),
            "key_bits": int(p_out.get("key_bits") or 256), "children": children, "psk": psk,
        })
    return out


def public(conns):
    """The connections without their PSK (for results, diffs, debug)."""
    return [dict((k, ("<redacted>" if k == "psk" else v)) for k, v in c.items()) for c in conns]


# --- strongSwan --------------------------------------------------------------------------------

_HW_OFFLOAD = {"none": "no", "crypto": "crypto", "packet": "packet"}


def _ts(prefix, proto, port):
    if proto is None:
        return prefix
    return "%s[%s%s]" % (prefix, proto, "" if port is None else "/%d" % port)


def render_swanctl(conn):
    """swanctl.conf text of one connection (no secret in it)."""
    bits = conn["key_bits"]
    lines = [
        "# Managed by ipsec_offload.mlx5 (ipsec_backend: strongswan); edits are overwritten.",
        "connections {",
        "    %s {" % conn["name"],
        "        version = 2",
        "        local_addrs = %s" % conn["local_addr"],
        "        remote_addrs = %s" % conn["remote_addr"],
        "        proposals = aes%dgcm16-prfsha384-ecp384" % bits,
        "        encap = no",
        "        mobike = no",
        "        dpd_delay = 30s",
        "        local {",
        "            auth = psk",
        "            id = %s" % conn["local_addr"],
        "        }",
        "        remote {",
        "            auth = psk",
        "            id = %s" % conn["remote_addr"],
        "        }",
        "        children {",
    ]
    for c in conn["children"]:
        lines += [
            "            %s {" % c["name"],
            "                mode = %s" % conn["mode"],
            "                local_ts = %s" % _ts(c["local"], c["proto"], c["lport"]),
            "                remote_ts = %s" % _ts(c["remote"], c["proto"], c["rport"]),
            "                esp_proposals = aes%dgcm16-esn" % bits,
            "                hw_offload = %s" % _HW_OFFLOAD[conn["offload"]],
            "                ipcomp = no",
            "                dpd_action = %s" % ("restart" if conn["initiator"] else "clear"),
            "            }",
        ]
    lines += ["        }", "    }", "}", ""]
    return "\n".join(lines)


def render_swanctl_secrets(conn):
    """The PSK of one connection as a swanctl.conf secrets section (file mode 0600)."""
    return "\n".join([
        "# Managed by ipsec_offload.mlx5 (ipsec_backend: strongswan): the PSK of %s. Keep 0600." % conn["name"],
        "secrets {",
        "    ike-%s {" % conn["name"],
        "        id-local = %s" % conn["local_addr"],
        "        id-remote = %s" % conn["remote_addr"],
        '        secret = "%s"' % conn["psk"],
        "    }",
        "}",
        "",
    ])


# --- libreswan --------------------------------------------------------------------------------

def _protoport(proto, port):
    if proto is None:
        return None
    return "%d/%s" % (PROTO_NUM[proto], "%any" if port is None else str(port))


def render_libreswan(conn):
    """ipsec.conf text (one `conn` per CHILD_SA; no secret in it)."""
    bits = conn["key_bits"]
    lines = ["# Managed by ipsec_offload.mlx5 (ipsec_backend: libreswan); edits are overwritten."]
    for c in conn["children"]:
        lines += [
            "conn %s" % c["name"],
            "\tleft=%s" % conn["local_addr"],
            "\tright=%s" % conn["remote_addr"],
            "\tauthby=secret",
            "\tkeyexchange=ikev2",
            "\ttype=%s" % conn["mode"],
            "\tesp=aes_gcm%d" % bits,
            "\tesn=yes",
            "\tcompress=no",
            "\tencapsulation=no",
            "\tnic-offload=%s" % {"none": "no", "crypto": "crypto", "packet": "packet"}[conn["offload"]],
        ]
        if conn["mode"] == "tunnel" or c["local"] != _host(conn["local_addr"]) or c["remote"] != _host(conn["remote_addr"]):
            lines += ["\tleftsubnet=%s" % c["local"], "\trightsubnet=%s" % c["remote"]]
        if c["lport"] is None and c["rport"] is None:
            # libreswan refuses "%any" ports on both sides: the protocol alone means any port
            lp = rp = None if c["proto"] is None else str(PROTO_NUM[c["proto"]])
        else:
            lp, rp = _protoport(c["proto"], c["lport"]), _protoport(c["proto"], c["rport"])
        if lp:
            lines += ["\tleftprotoport=%s" % lp, "\trightprotoport=%s" % rp]
        lines += ["\tauto=%s" % ("start" if conn["initiator"] else "add"), ""]
    return "\n".join(lines)


def libreswan_children(conns):
    """The connections as libreswan runs them: CHILD_SAs that differ only in their ports are merged
    into one with any port on both sides (``17/%any``).

    Seen in the lab (libreswan 5.2): the second CHILD_SA between the same two hosts, negotiated with
    CREATE_CHILD_SA over the shared IKE SA, got no answer from the responder (initiator: "EXPECTATION
    FAILED ... routing: unhandled INITIATED, UNROUTED, TEMPLATE"). One CHILD_SA per address/protocol
    pair avoids that; it protects the protocol between the two addresses on all ports (wider than the
    iproute2/strongSwan selectors, never narrower)."""
    out = []
    for conn in conns:
        merged = []
        for c in conn["children"]:
            same = next((m for m in merged if (m["local"], m["remote"], m["proto"]) == (c["local"], c["remote"], c["proto"])), None)
            if same is None:
                merged.append(dict(c))
            elif (same["lport"], same["rport"]) != (c["lport"], c["rport"]):
                same["lport"] = same["rport"] = None
        new = dict(conn)
        new["children"] = merged
        out.append(new)
    return out


def _host(addr):
    ip = ipaddress.ip_address(addr)
    return "%s/%d" % (ip, ip.max_prefixlen)


def render_libreswan_secrets(conn):
    return "\n".join([
        "# Managed by ipsec_offload.mlx5 (ipsec_backend: libreswan): the PSK of %s. Keep 0600." % conn["name"],
        '%s %s : PSK "%s"' % (conn["local_addr"], conn["remote_addr"], conn["psk"]),
        "",
    ])


# --- status parsing ----------------------------------------------------------------------------

_SAS_IKE = re.compile(r"^(?P<name>\S+): #(?P<id>\d+), (?P<state>[A-Z_]+), IKEv(?P<ver>\d)")
_SAS_CHILD = re.compile(r"^\s+(?P<name>\S+): #(?P<id>\d+), reqid (?P<reqid>\d+), (?P<state>[A-Z_]+), (?P<mode>[A-Z_]+)")
_SAS_DIR = re.compile(r"^\s+(?P<dir>in|out)\s+(?P<spi>[0-9a-f]{8})(?:\s*\([^)]*\))?,\s+(?P<bytes>\d+) bytes,\s+(?P<packets>\d+) packets")


def parse_swanctl_sas(text):
    """`swanctl --list-sas` text -> [{name, id, state, children: [{name, id, reqid, state, mode,
    spi_in, spi_out, packets_in, packets_out}]}]."""
    sas, ike, child = [], None, None
    for line in (text or "").splitlines():
        m = _SAS_IKE.match(line)
        if m:
            ike = {"name": m["name"], "id": int(m["id"]), "state": m["state"], "children": []}
            sas.append(ike)
            child = None
            continue
        m = _SAS_CHILD.match(line)
        if m and ike is not None:
            child = {"name": m["name"], "id": int(m["id"]), "reqid": int(m["reqid"]), "state": m["state"],
                     "mode": m["mode"].lower(), "spi_in": None, "spi_out": None, "packets_in": 0, "packets_out": 0}
            ike["children"].append(child)
            continue
        m = _SAS_DIR.match(line)
        if m and child is not None:
            child["spi_" + m["dir"]] = "0x" + m["spi"]
            child["packets_" + m["dir"]] = int(m["packets"])
    return sas


_TRAFFIC = re.compile(r'^(?:\d+\s+)?#(?P<serial>\d+): "(?P<name>[^"]+)"(?:\[\d+\])?[^,]*,(?P<rest>.*)$')


def parse_trafficstatus(text):
    """`ipsec trafficstatus` text -> [{name, serial, type, inBytes, outBytes}] (libreswan's own
    key=value fields, numbers as int)."""
    out = []
    for line in (text or "").splitlines():
        m = _TRAFFIC.match(line.strip())
        if not m:
            continue
        row = {"name": m["name"], "serial": int(m["serial"])}
        for field in m["rest"].split(","):
            if "=" in field:
                k, v = field.strip().split("=", 1)
                row[k] = int(v) if v.isdigit() else v
        out.append(row)
    return out


_SHOW_LINE = re.compile(r'^(?:\d+\s+)?#(?P<serial>\d+): "(?P<name>[^"]+)"(?:\[\d+\])?(?P<rest>.*)$')
_SHOW_ESP = re.compile(r"\besp\.(?P<spi>[0-9a-f]+)@(?P<addr>[0-9A-Fa-f.:]+)")


def parse_showstates(text, newest=True):
    """`ipsec whack --showstates` (libreswan) -> [{name, serial, spi_out, spi_in}], one per CHILD_SA
    state that lists its ESP SPIs (``esp.<spi>@<addr>``: first the peer's = outbound, then ours =
    inbound): the newest state (highest serial) per conn, sorted by conn; with ``newest`` false every
    such state, sorted by serial."""
    states = {}
    for line in (text or "").splitlines():
        m = _SHOW_LINE.match(line.strip())
        if not m:
            continue
        esp = _SHOW_ESP.findall(m["rest"])
        if len(esp) < 2:
            continue
        serial = int(m["serial"])
        states.setdefault(serial, {"name": m["name"], "serial": serial,
                                   "spi_out": "0x%08x" % int(esp[0][0], 16), "spi_in": "0x%08x" % int(esp[1][0], 16)})
    if not newest:
        return [states[k] for k in sorted(states)]
    best = {}
    for st in states.values():
        if st["name"] not in best or best[st["name"]]["serial"] < st["serial"]:
            best[st["name"]] = st
    return [best[k] for k in sorted(best)]


_WHACK_CONN = re.compile(r'"(%s-[A-Za-z0-9_.-]+)"' % re.escape(CONN_PREFIX))
_SWANCTL_CONN = re.compile(r"^(\S+): IKEv\d", re.MULTILINE)


def parse_whack_status(text):
    """`ipsec whack --status` (libreswan) -> the names of the collection's conns it mentions (loaded
    conns and their states), sorted, each once."""
    return sorted(set(_WHACK_CONN.findall(text or "")))


def parse_swanctl_conns(text):
    """`swanctl --list-conns` -> the names of the loaded connections, in their order."""
    return _SWANCTL_CONN.findall(text or "")


_VERSION = re.compile(r"(?:strongSwan|Libreswan)[^0-9]*(\d+(?:\.\d+)+)", re.IGNORECASE)


def parse_version(text):
    """'strongSwan swanctl 6.0.1' / 'Libreswan 5.2' -> (6, 0, 1) / (5, 2); None if not found."""
    m = _VERSION.search(text or "")
    if not m:
        return None
    return tuple(int(x) for x in m.group(1).split("."))


def backend_support(backend, version_text, offload):
    """{backend, version, packet_offload, ok, reason}: whether this backend version can do the
    requested offload (packet needs PACKET_MIN; crypto/none any supported version)."""
    if backend not in IKE_BACKENDS:
        raise IkeError("ipsec_backend: %r is not one of %s" % (backend, ", ".join(BACKENDS)))
    if offload not in OFFLOADS:
        raise IkeError("ipsec_offload: %r is not one of %s" % (offload, ", ".join(OFFLOADS)))
    ver = parse_version(version_text)
    res = {"backend": backend, "version": ".".join(map(str, ver)) if ver else None,
           "packet_min": ".".join(map(str, PACKET_MIN[backend])), "packet_offload": None, "ok": True, "reason": ""}
    if ver is None:
        res["ok"] = False
        seen = (version_text or "").strip()
        seen = seen.splitlines()[0][:120] if seen else "no output"
        pkgs = "strongswan-swanctl strongswan-charon" if backend == "strongswan" else "libreswan"
        res["reason"] = "%s is not installed or did not report its version (%s); install it (Debian: %s)" % (backend, seen, pkgs)
        return res
    res["packet_offload"] = ver >= PACKET_MIN[backend]
    if offload == "packet" and not res["packet_offload"]:
        res["ok"] = False
        option = "hw_offload = packet" if backend == "strongswan" else "nic-offload=packet"
        res["reason"] = ("%s %s cannot request IPsec packet offload (%s needs >= %s); upgrade it, or set "
                         "ipsec_offload: crypto/none" % (backend, res["version"], option, res["packet_min"]))
    return res
