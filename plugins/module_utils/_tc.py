# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""tc flower VLAN rules on the ingress hook: model, pure parse/render/plan, and a small client.

Private to the collection.  Everything above ``TcClient`` is pure (no I/O) and table-tested.

The model of one rule (the "canonical" form, also the module's ``config`` element)::

    {"dev": "pf0", "chain": 0, "prio": 10, "protocol": "802.1q",
     "match": {"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5},
     "actions": [{"vlan": "pop"}, {"vlan": "pop"}, {"mirred": "redirect", "dev": "pf0vf0_rep"}],
     "hw": "none"}

Identity: dev + chain + prio + protocol (one flower filter per prio, added with handle 1).

Ownership: every rule this collection writes carries an action cookie on its FIRST action:
``COOKIE_PREFIX`` (the 8 ASCII bytes ``ipo-mlx5``) followed by a one-byte format version.  A
filter is owned when it is a flower filter whose first action's cookie starts with the prefix.
Nothing else is ever replaced or deleted.

Facts used here (see tests/unit/fixtures/tc/README.md for the sources):
- ``tc -j filter show dev D ingress`` prints, per (chain, prio), a head object without
  "options" and then one object per filter with "options"; "pref"/"chain" are omitted when the
  query names them.
- flower dumps "eth_type" for the innermost ether type (ipv4/ipv6/arp/rarp or 4 hex digits),
  "vlan_ethtype"/"cvlan_ethtype" and "protocol" with iproute2's ll_proto names ("ip", "802.1Q",
  "802.1ad", "[N]" when unknown), IP addresses as "addr" or "addr/len", ports as numbers.
- act_vlan dumps push with "id", "protocol" and always "priority"; mirred dumps "mirred_action",
  "direction" and "to_dev"; an action cookie appears as "cookie": "<hex>".
- ``tc -batch -`` stops at the first failing line and says ``Command failed -:N``.
"""

from __future__ import annotations

import ipaddress
import json
import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import ObjectKind
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import hint_for as _runner_hint
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._iproute2 import link_parent
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._xfrm_text import offload_devices

# "ipo-mlx5" in ASCII.  Cookies may hold up to 16 bytes; we use 9.
COOKIE_PREFIX = "69706f2d6d6c7835"
COOKIE_VERSION = "01"
COOKIE = COOKIE_PREFIX + COOKIE_VERSION

HW_CHOICES = ("none", "skip_sw", "skip_hw")

# Ether types we model: canonical name -> number.  Canonical names are what tc accepts
# (ll_proto_a2n compares case-insensitively) and, lower-cased, what it prints.
_ETHERTYPES = {
    "all": 0x0003,
    "ip": 0x0800,
    "arp": 0x0806,
    "ipv6": 0x86DD,
    "802.1q": 0x8100,
    "802.1ad": 0x88A8,
}
_BY_NUMBER = dict((v, k) for k, v in _ETHERTYPES.items())
_NAME_ALIASES = {"ipv4": "ip"}
PROTOCOLS = ("all", "ip", "ipv6", "arp", "802.1q", "802.1ad")
INNER_ETHTYPES = ("ip", "ipv6", "arp", "802.1q", "802.1ad")
VLAN_TYPES = ("802.1q", "802.1ad")
# flower prints the innermost ether type ("eth_type") with its own names.
_FLOWER_ETH_TYPE = {"ip": "ipv4", "ipv6": "ipv6", "arp": "arp", "802.1q": "8100", "802.1ad": "88a8"}
IP_PROTOS = ("tcp", "udp", "sctp", "icmp", "icmpv6", "esp", "ah")
# iproute2 < 6.2 knows no names for ESP/AH (and prints them as bare hex): render numbers.
_IP_PROTO_TOKEN = {"esp": "0x32", "ah": "0x33"}
_IP_PROTO_DUMP = {"32": "esp", "0x32": "esp", "33": "ah", "0x33": "ah", "06": "tcp", "11": "udp",
                  "84": "sctp", "01": "icmp", "3a": "icmpv6"}
_PORT_PROTOS = ("tcp", "udp", "sctp")

MATCH_KEYS = ("vlan_id", "vlan_prio", "vlan_ethtype", "cvlan_id", "cvlan_prio", "cvlan_ethtype",
              "dst_mac", "src_mac", "ip_proto", "dst_ip", "src_ip", "dst_port", "src_port")

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")
# 802.1Q VLAN ids: 0 (priority tag only) and 4095 (reserved) are not VLANs
VLAN_ID_MIN, VLAN_ID_MAX = 1, 4094
_COOKIE_RE = re.compile(r"^[0-9a-f]{2,32}$")

# Counters and bookkeeping that change without the rule changing (ignored when comparing).
_VOLATILE = frozenset(("stats", "installed", "last_used", "first_used", "expires", "index", "ref",
                       "bind", "in_hw_count", "hw_stats", "used_hw_stats", "not_in_hw", "in_hw"))


class ParseError(ValueError):
    """tc printed something we cannot read."""


# --------------------------------------------------------------------------------------------
# ether types


def ethertype(value):
    """User input -> canonical name (all, ip, ipv6, arp, 802.1q, 802.1ad).  ValueError if unknown.

    Accepts the names in any case, ipv4, and numbers (0x8100, 33024, "0x0800").
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        num = value
    else:
        s = str(value).strip().lower()
        s = _NAME_ALIASES.get(s, s)
        if s in _ETHERTYPES:
            return s
        try:
            num = int(s, 16) if s.startswith("0x") else int(s, 10)
        except ValueError:
            raise ValueError(value)
    if num in _BY_NUMBER:
        return _BY_NUMBER[num]
    raise ValueError(value)


def ethertype_from_dump(value):
    """A name as tc prints it (ll_proto_n2a: "802.1Q", "ip", "[2048]") -> canonical name.

    Unknown numbers come back as "0x%04x" so they never equal a modelled value.
    """
    s = str(value).strip()
    m = re.match(r"^\[(\d+)\]$", s)
    if m:
        num = int(m.group(1))
        return _BY_NUMBER.get(num, "0x%04x" % num)
    try:
        return ethertype(s)
    except ValueError:
        return s.lower()


def innermost_ethertype(protocol, match):
    """The ether type flower matches on after the VLAN tags (None when not fixed)."""
    if protocol not in VLAN_TYPES:
        return None if protocol == "all" else protocol
    vt = match.get("vlan_ethtype")
    if vt is None:
        return None
    if vt not in VLAN_TYPES:
        return vt
    return match.get("cvlan_ethtype")


# --------------------------------------------------------------------------------------------
# validation of the module's input (pure)


def _int(field, value, lo, hi):
    return _validate.integer(field, value, lo, hi)


_ETHERTYPE_TEXT_RE = re.compile(r"[A-Za-z0-9.]{1,16}")   # names (802.1Q, ipv6) and ASCII numbers (0x8100)


def _ethertype_field(field, value, allowed):
    name = None
    if isinstance(value, int) or isinstance(value, str) and _ETHERTYPE_TEXT_RE.fullmatch(value):
        try:
            name = ethertype(value)
        except ValueError:
            name = None
    if name not in allowed:
        raise _validate.InputError(field, "%r is not one of %s (names in any case, or the "
                                          "ether type number such as 0x8100)" % (value, ", ".join(allowed)))
    return name


def _mac(field, value):
    return _validate.mac(field, value)


def _ip(field, value, family):
    net = _validate.prefix(field, value, strict=True)   # no zone ids, ASCII only, no white space
    want = 4 if family == "ip" else 6 if family == "ipv6" else None
    if want is None:
        raise _validate.InputError(field, "an IP address match needs protocol ip/ipv6 (or a VLAN "
                                          "protocol with vlan_ethtype/cvlan_ethtype ip/ipv6)")
    if net.version != want:
        raise _validate.InputError(field, "%s is IPv%d but the rule matches %s packets"
                                   % (value, net.version, "IPv4" if want == 4 else "IPv6"))
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def validate_match(field, protocol, raw):
    """The ``match`` dict -> canonical dict with only the keys that are set."""
    raw = dict((k, v) for k, v in (raw or {}).items() if v is not None)
    unknown = sorted(set(raw) - set(MATCH_KEYS))
    if unknown:
        raise _validate.InputError(field, "unknown match key(s): %s" % ", ".join(unknown))
    m = {}
    vlan_keys = [k for k in ("vlan_id", "vlan_prio", "vlan_ethtype") if k in raw]
    if vlan_keys and protocol not in VLAN_TYPES:
        raise _validate.InputError("%s.%s" % (field, vlan_keys[0]),
                                   "needs protocol 802.1q or 802.1ad (the rule's protocol is %s)" % protocol)
    if "vlan_id" in raw:
        m["vlan_id"] = _int(field + ".vlan_id", raw["vlan_id"], VLAN_ID_MIN, VLAN_ID_MAX)
    if "vlan_prio" in raw:
        m["vlan_prio"] = _int(field + ".vlan_prio", raw["vlan_prio"], 0, 7)
    if "vlan_ethtype" in raw:
        m["vlan_ethtype"] = _ethertype_field(field + ".vlan_ethtype", raw["vlan_ethtype"], INNER_ETHTYPES)
    cvlan_keys = [k for k in ("cvlan_id", "cvlan_prio", "cvlan_ethtype") if k in raw]
    if cvlan_keys and m.get("vlan_ethtype") not in VLAN_TYPES:
        raise _validate.InputError("%s.%s" % (field, cvlan_keys[0]),
                                   "needs vlan_ethtype 802.1q or 802.1ad (a second, inner tag)")
    if "cvlan_id" in raw:
        m["cvlan_id"] = _int(field + ".cvlan_id", raw["cvlan_id"], VLAN_ID_MIN, VLAN_ID_MAX)
    if "cvlan_prio" in raw:
        m["cvlan_prio"] = _int(field + ".cvlan_prio", raw["cvlan_prio"], 0, 7)
    if "cvlan_ethtype" in raw:
        m["cvlan_ethtype"] = _ethertype_field(field + ".cvlan_ethtype", raw["cvlan_ethtype"],
                                              ("ip", "ipv6", "arp"))
    for k in ("dst_mac", "src_mac"):
        if k in raw:
            m[k] = _mac("%s.%s" % (field, k), raw[k])
    inner = innermost_ethertype(protocol, m)
    if "ip_proto" in raw:
        p = raw["ip_proto"].lower() if isinstance(raw["ip_proto"], str) else None
        if p not in IP_PROTOS:
            raise _validate.InputError(field + ".ip_proto", "%s is not one of %s"
                                       % (_validate.show(raw["ip_proto"]), ", ".join(IP_PROTOS)))
        if inner not in ("ip", "ipv6"):
            raise _validate.InputError(field + ".ip_proto", "needs protocol ip/ipv6 (or vlan_ethtype/"
                                                            "cvlan_ethtype ip/ipv6 under a VLAN protocol)")
        if p == "icmp" and inner != "ip" or p == "icmpv6" and inner != "ipv6":
            raise _validate.InputError(field + ".ip_proto", "%s does not fit %s packets" % (p, inner))
        m["ip_proto"] = p
    for k in ("dst_ip", "src_ip"):
        if k in raw:
            m[k] = _ip("%s.%s" % (field, k), raw[k], inner)
    for k in ("dst_port", "src_port"):
        if k in raw:
            if m.get("ip_proto") not in _PORT_PROTOS:
                raise _validate.InputError("%s.%s" % (field, k), "needs ip_proto tcp, udp or sctp")
            m[k] = _validate.port("%s.%s" % (field, k), raw[k])
    return m


def validate_actions(field, raw):
    """The ``actions`` list -> canonical list.  At least one action; redirect ends the list."""
    if not isinstance(raw, list) or not raw:
        raise _validate.InputError(field, "give at least one action")
    out = []
    for j, a in enumerate(raw):
        f = "%s[%d]" % (field, j)
        if not isinstance(a, dict):
            raise _validate.InputError(f, "must be a dict with 'vlan' or 'mirred'")
        a = dict((k, v) for k, v in a.items() if v is not None)
        if out and out[-1].get("mirred") == "redirect":
            raise _validate.InputError(f, "comes after a mirred redirect, which ends the action list "
                                          "(the packet has left): put the redirect last")
        if ("vlan" in a) == ("mirred" in a):
            raise _validate.InputError(f, "set exactly one of 'vlan' (pop|push) or 'mirred' (redirect|mirror)")
        if "vlan" in a:
            kind = a["vlan"]
            if kind == "pop":
                extra = sorted(set(a) & set(("id", "protocol", "priority", "dev")))
                if extra:
                    raise _validate.InputError("%s.%s" % (f, extra[0]), "is not used by vlan pop")
                out.append({"vlan": "pop"})
            elif kind == "push":
                if "dev" in a:
                    raise _validate.InputError(f + ".dev", "is not used by vlan push")
                if "id" not in a:
                    raise _validate.InputError(f + ".id", "vlan push needs an id (1..4094)")
                out.append({"vlan": "push",
                            "id": _int(f + ".id", a["id"], VLAN_ID_MIN, VLAN_ID_MAX),
                            "protocol": _ethertype_field(f + ".protocol", a.get("protocol", "802.1q"), VLAN_TYPES),
                            "priority": _int(f + ".priority", a.get("priority", 0), 0, 7)})
            else:
                raise _validate.InputError(f + ".vlan", "%s is not one of pop, push" % _validate.show(kind))
        else:
            kind = a["mirred"]
            if kind not in ("redirect", "mirror"):
                raise _validate.InputError(f + ".mirred", "%s is not one of redirect, mirror" % _validate.show(kind))
            extra = sorted(set(a) & set(("id", "protocol", "priority")))
            if extra:
                raise _validate.InputError("%s.%s" % (f, extra[0]), "is not used by mirred")
            if "dev" not in a:
                raise _validate.InputError(f + ".dev", "mirred needs the device to send to")
            out.append({"mirred": kind, "dev": _validate.ifname(f + ".dev", a["dev"])})
    return out


def validate_rule(field, raw, state):
    """One ``config`` element -> canonical rule (plus "_field").

    For state merged, match/actions/hw left out stay None (filled from the current rule by
    FlowerKind.merge, or from the defaults by ``complete``).  For deleted only the identity counts.
    """
    if not isinstance(raw, dict):
        raise _validate.InputError(field, "must be a dict")
    rule = {"_field": field}
    rule["dev"] = _validate.ifname(field + ".dev", raw.get("dev"))
    rule["chain"] = _int(field + ".chain", raw.get("chain") if raw.get("chain") is not None else 0, 0, 0xFFFFFFFF)
    if raw.get("prio") is None:
        raise _validate.InputError(field + ".prio", "is required (1..65535): it is part of the rule's identity")
    rule["prio"] = _int(field + ".prio", raw["prio"], 1, 0xFFFF)
    rule["protocol"] = _ethertype_field(field + ".protocol", raw.get("protocol") or "all", PROTOCOLS)
    if state == "deleted":
        return rule
    hw = raw.get("hw")
    if hw is not None and hw not in HW_CHOICES:
        raise _validate.InputError(field + ".hw", "%r is not one of %s" % (hw, ", ".join(HW_CHOICES)))
    rule["hw"] = hw
    rule["match"] = validate_match(field + ".match", rule["protocol"], raw["match"]) if raw.get("match") is not None else None
    rule["actions"] = validate_actions(field + ".actions", raw["actions"]) if raw.get("actions") is not None else None
    if state != "merged":
        complete(rule)
    return rule


def complete(rule):
    """Fill defaults for fields left out (a rule that is created, or replaced).  Mutates, returns."""
    if rule.get("hw") is None:
        rule["hw"] = "none"
    if rule.get("match") is None:
        rule["match"] = {}
    if rule.get("actions") is None:
        raise _validate.InputError(rule.get("_field", "config") + ".actions",
                                   "is required to create or replace a rule")
    return rule


def validate_config(config, state):
    """The whole ``config`` list -> canonical rules.  Refuses duplicates naming the field."""
    rules = []
    seen = {}
    for i, raw in enumerate(config or []):
        r = validate_rule("config[%d]" % i, raw, state)
        slot = (r["dev"], r["chain"], r["prio"])
        if slot in seen:
            raise _validate.InputError("config[%d]" % i, "dev %s chain %d prio %d is already used by %s "
                                                         "(one rule per dev/chain/prio)" % (slot + (seen[slot],)))
        seen[slot] = "config[%d]" % i
        rules.append(r)
    return rules


def public(rule):
    """A rule without private keys (for results)."""
    return dict((k, v) for k, v in rule.items() if not k.startswith("_"))


# --------------------------------------------------------------------------------------------
# render (pure): batch lines for `tc -batch -`


def _proto_token(name):
    return name  # tc's ll_proto_a2n is case-insensitive: "802.1q" == "802.1Q"


def match_tokens(protocol, match):
    t = []
    for k in ("vlan_id", "vlan_prio", "vlan_ethtype", "cvlan_id", "cvlan_prio", "cvlan_ethtype",
              "dst_mac", "src_mac", "ip_proto", "dst_ip", "src_ip", "dst_port", "src_port"):
        if k in match:
            v = match[k]
            t += [k, _IP_PROTO_TOKEN.get(v, str(v)) if k == "ip_proto" else str(v)]
    return t


def action_tokens(actions, cookie):
    t = []
    for n, a in enumerate(actions):
        if a.get("vlan") == "pop":
            t += ["action", "vlan", "pop"]
        elif a.get("vlan") == "push":
            t += ["action", "vlan", "push", "id", str(a["id"]), "protocol", _proto_token(a["protocol"]),
                  "priority", str(a["priority"])]
        elif a.get("mirred") in ("redirect", "mirror"):
            t += ["action", "mirred", "egress", a["mirred"], "dev", a["dev"]]
        else:
            raise ValueError("cannot render action %r" % (a,))
        if n == 0 and cookie:
            t += ["cookie", cookie]
    return t


def _where(rule):
    return ["dev", rule["dev"], "ingress", "protocol", _proto_token(rule["protocol"]),
            "chain", str(rule["chain"]), "prio", str(rule["prio"])]


def filter_line(verb, rule, handle=1, cookie=COOKIE):
    """``filter add|replace dev D ingress protocol P chain C prio N handle H flower ...``."""
    if cookie is not None and not _COOKIE_RE.match(cookie):
        raise ValueError("bad cookie")
    t = ["filter", verb] + _where(rule) + ["handle", str(int(handle)), "flower"]
    if rule.get("hw", "none") != "none":
        t.append(rule["hw"])
    t += match_tokens(rule["protocol"], rule["match"])
    t += action_tokens(rule["actions"], cookie)
    return " ".join(t)


def delete_line(rule):
    """``filter del dev D ingress protocol P chain C prio N`` (the whole prio)."""
    return " ".join(["filter", "del"] + _where(rule))


def qdisc_line(verb, dev):
    return "qdisc %s dev %s ingress" % (verb, dev)


def describe(rule):
    return "dev %s chain %d prio %d protocol %s" % (rule["dev"], rule["chain"], rule["prio"], rule["protocol"])


def rule_text(rule):
    """One readable line per rule for diffs (no handle, no cookie)."""
    t = [describe(rule) + ":", "flower"]
    if rule.get("hw", "none") != "none":
        t.append(rule["hw"])
    t += match_tokens(rule["protocol"], rule.get("match") or {})
    t += action_tokens(rule.get("actions") or [], None)
    return " ".join(t)


def rendered_lines(rules):
    """state=rendered: the commands that create ``rules`` on a host without them."""
    lines = []
    for dev in sorted(set(r["dev"] for r in rules)):
        lines.append(qdisc_line("add", dev))
    for r in rules:
        lines.append(filter_line("add", r))
    return lines


# --------------------------------------------------------------------------------------------
# parse (pure)


def load_json(text, what="tc -j output"):
    """Decode tc JSON; empty output is an empty list.  ParseError (never a traceback) otherwise."""
    if text is None or not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError("%s is not valid JSON (%s); iproute2 is known to print broken JSON for some "
                         "actions: upgrade iproute2" % (what, exc))
    if not isinstance(data, list):
        raise ParseError("%s is not a JSON list" % what)
    return data


def _parse_action(a, first, extra):
    """One dumped action -> canonical action or None (and notes in ``extra``)."""
    kind = a.get("kind")
    ctl = (a.get("control_action") or {}).get("type")
    n = a.get("order", "?")
    if not first and a.get("cookie"):
        extra.append("action %s has a cookie" % n)
    if kind == "vlan":
        va = a.get("vlan_action")
        if ctl not in (None, "pipe"):
            extra.append("action %s control %s" % (n, ctl))
        if va == "pop":
            return {"vlan": "pop"}
        if va == "push":
            try:
                proto = ethertype_from_dump(a.get("protocol", "802.1Q"))
                return {"vlan": "push", "id": int(a["id"]), "protocol": proto, "priority": int(a.get("priority", 0))}
            except (KeyError, TypeError, ValueError):
                extra.append("action %s vlan push without id" % n)
                return None
        extra.append("action %s vlan %s" % (n, va))
        return None
    if kind == "mirred":
        ma = a.get("mirred_action")
        if a.get("direction") != "egress":
            extra.append("action %s mirred direction %s" % (n, a.get("direction")))
        default_ctl = {"redirect": "stolen", "mirror": "pipe"}.get(ma)
        if ctl not in (None, default_ctl):
            extra.append("action %s control %s" % (n, ctl))
        if ma in ("redirect", "mirror") and a.get("to_dev"):
            return {"mirred": ma, "dev": a["to_dev"]}
        extra.append("action %s mirred %s" % (n, ma))
        return None
    extra.append("action %s kind %s" % (n, kind))
    return None


def _parse_keys(protocol, keys, extra):
    m = {}
    for k in ("vlan_id", "vlan_prio", "cvlan_id", "cvlan_prio", "dst_port", "src_port"):
        if k in keys:
            try:
                m[k] = int(keys[k])
            except (TypeError, ValueError):
                extra.append("key %s %r" % (k, keys[k]))
    for k in ("vlan_ethtype", "cvlan_ethtype"):
        if k in keys:
            m[k] = ethertype_from_dump(keys[k])
    for k in ("dst_mac", "src_mac"):
        if k in keys:
            m[k] = str(keys[k]).lower()
            if "/" in m[k]:
                extra.append("key %s %s (masked)" % (k, m[k]))
    if "ip_proto" in keys:
        p = str(keys["ip_proto"]).lower()
        m["ip_proto"] = _IP_PROTO_DUMP.get(p, p)
    for k in ("dst_ip", "src_ip"):
        if k in keys:
            s = str(keys[k])
            try:
                iface = ipaddress.ip_interface(s)
            except ValueError:
                m[k] = s
                extra.append("key %s %s" % (k, s))
                continue
            plen = iface.network.prefixlen
            m[k] = str(iface.ip) if plen == iface.network.max_prefixlen else "%s/%d" % (iface.ip, plen)
    for k, v in keys.items():
        if k in MATCH_KEYS or k.endswith("_mask") and k[:-5] in MATCH_KEYS:
            if k.endswith("_mask"):
                extra.append("key %s" % k)
            continue
        if k == "eth_type":
            want = _FLOWER_ETH_TYPE.get(innermost_ethertype(protocol, m))
            if str(v).lower() != want:
                extra.append("key eth_type %s" % v)
            continue
        extra.append("key %s" % k)
    return m


def parse_filters(dev, text):
    """``tc -j filter show dev DEV ingress`` -> list of filters (every kind), in dump order.

    Each filter: dev, chain, prio, protocol, kind, handle, owned, cookie, in_hw, in_hw_count,
    offload ("in_hw"|"not_in_hw"|"unknown"), rule (canonical flower rule or None), extra (list of
    what the model cannot express), raw (the options, for comparison).
    """
    out = []
    for obj in load_json(text, "tc -j filter show dev %s ingress" % dev):
        if not isinstance(obj, dict) or "options" not in obj:
            continue  # the per-(chain, prio) head object
        opts = obj.get("options") or {}
        f = {
            "dev": dev,
            "chain": int(obj.get("chain", 0)),
            "prio": int(obj.get("pref", 0)),
            "protocol": ethertype_from_dump(obj.get("protocol", "all")),
            "kind": obj.get("kind"),
            "handle": opts.get("handle", opts.get("fh")),
            "owned": False,
            "cookie": None,
            "in_hw": _in_hw(opts),
            "in_hw_count": opts.get("in_hw_count"),
            "offload": "in_hw" if _in_hw(opts) else "not_in_hw" if opts.get("not_in_hw") else "unknown",
            "rule": None,
            "extra": [],
            "raw": strip_volatile(obj),
        }
        actions = opts.get("actions") or []
        if actions and isinstance(actions[0], dict):
            f["cookie"] = actions[0].get("cookie")
        if f["kind"] == "flower":
            extra = f["extra"]
            hw = "skip_sw" if opts.get("skip_sw") else "skip_hw" if opts.get("skip_hw") else "none"
            if opts.get("skip_sw") and opts.get("skip_hw"):
                extra.append("skip_sw and skip_hw")
            for k in opts:
                if k not in ("handle", "keys", "skip_sw", "skip_hw", "in_hw", "in_hw_count", "not_in_hw", "actions"):
                    extra.append("option %s" % k)
            match = _parse_keys(f["protocol"], opts.get("keys") or {}, extra)
            acts = []
            for n, a in enumerate(actions):
                ca = _parse_action(a if isinstance(a, dict) else {}, n == 0 or (isinstance(a, dict) and a.get("cookie") == f["cookie"]), extra)
                if ca is not None:
                    acts.append(ca)
            f["rule"] = {"dev": dev, "chain": f["chain"], "prio": f["prio"], "protocol": f["protocol"],
                         "match": match, "actions": acts, "hw": hw}
            cookie = f["cookie"] or ""
            f["owned"] = isinstance(cookie, str) and cookie.lower().startswith(COOKIE_PREFIX)
        out.append(f)
    return out


def _in_hw(opts):
    """A filter's options say it is in hardware ("in_hw": true, or "in_hw_count" > 0)."""
    return bool(opts.get("in_hw")) or (opts.get("in_hw_count") or 0) > 0


def hw_rules(data):
    """``tc -j filter show dev D ingress`` (text or decoded) -> the rules with their hardware state:
    [{pref, kind, chain, protocol, handle, in_hw, in_hw_count, skip_sw}], in dump order.

    Entries without "options" are the per-(chain, pref) heads; entries whose options carry none of
    in_hw / not_in_hw / in_hw_count (u32 hash tables) are not rules either.  Output that is not a
    JSON list holds no rule; invalid JSON raises ParseError.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data) if data.strip() else []
        except ValueError as exc:
            raise ParseError("tc -j filter show printed no valid JSON: %s" % exc)
    rules = []
    for entry in data if isinstance(data, list) else []:
        opts = entry.get("options") if isinstance(entry, dict) else None
        if not isinstance(opts, dict) or not ("in_hw" in opts or "not_in_hw" in opts or "in_hw_count" in opts):
            continue
        rules.append({"pref": entry.get("pref"), "kind": entry.get("kind"), "chain": entry.get("chain"),
                      "protocol": entry.get("protocol"), "handle": opts.get("handle", opts.get("fh")),
                      "in_hw": _in_hw(opts), "in_hw_count": opts.get("in_hw_count"),
                      "skip_sw": bool(opts.get("skip_sw"))})
    return rules


def tc_offloaded(data):
    """ipsec_offload_info's view of hw_rules: {'filters': N, 'in_hw': [the rules in hardware]}."""
    rules = hw_rules(data)
    return {"filters": len(rules), "in_hw": [dict((k, r[k]) for k in r if k != "in_hw") for r in rules if r["in_hw"]]}


def tc_in_hw(data):
    """mlx_devlink_eswitch's view of hw_rules: how many rules are in hardware (they hold the eswitch)."""
    return sum(1 for r in hw_rules(data) if r["in_hw"])


def strip_volatile(obj):
    """A copy of a dumped object without counters/indexes (to compare before/after)."""
    if isinstance(obj, dict):
        return dict((k, strip_volatile(v)) for k, v in obj.items() if k not in _VOLATILE)
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def fingerprint(filters):
    """Sorted, comparable text of a list of parsed filters (ignores counters and action indexes)."""
    return sorted(json.dumps([f["dev"], f["raw"]], sort_keys=True) for f in filters)


def parse_qdiscs(text):
    """``tc -j qdisc show`` -> {dev: kind of the ingress hook qdisc ("ingress"|"clsact")}."""
    hooks = {}
    for q in load_json(text, "tc -j qdisc show"):
        if isinstance(q, dict) and q.get("kind") in ("ingress", "clsact") and q.get("dev"):
            hooks[q["dev"]] = q["kind"]
    return hooks


def parse_links(text):
    """``ip -d -j link show`` -> {interface name: parent device ("pci/0000:08:00.0") or None}.

    The parent: _iproute2.link_parent.
    """
    out = {}
    for x in load_json(text, "ip -d -j link show"):
        if isinstance(x, dict) and x.get("ifname"):
            out[x["ifname"]] = link_parent(x)
    return out


def xfrm_offload_devices(text):
    """Devices named on ``crypto offload parameters: dev X ...`` lines of ``ip xfrm state``."""
    return offload_devices(text)


def ipsec_ready(dev, offload_devs, parents):
    """True if ``dev``, or another netdev on the same parent device (mlx5: the same PCI function,
    whose IPsec tables the kernel checks), already holds an offloaded xfrm state."""
    if dev in offload_devs:
        return True
    parent = parents.get(dev)
    return bool(parent) and any(parents.get(x) == parent for x in offload_devs)


# --------------------------------------------------------------------------------------------
# current objects and planning (pure)


def group(filters):
    """Parsed filters -> current objects for _resource.plan, one per (dev, chain, prio).

    An object has the identity fields, ``kind``, ``filters`` (all filters at that prio) and, when
    the prio holds exactly one flower filter, that filter's ``rule`` fields copied in.
    """
    objs = {}
    order = []
    for f in filters:
        slot = (f["dev"], f["chain"], f["prio"])
        if slot not in objs:
            objs[slot] = {"dev": f["dev"], "chain": f["chain"], "prio": f["prio"], "protocol": f["protocol"],
                          "kind": f["kind"], "filters": []}
            order.append(slot)
        objs[slot]["filters"].append(f)
    return [objs[s] for s in order]


class FlowerKind(ObjectKind):
    name = "tc flower rule"

    def key(self, obj):
        return (obj["dev"], obj["chain"], obj["prio"], obj["protocol"])

    def owned(self, obj):
        fs = obj.get("filters")
        return bool(fs) and all(f["kind"] == "flower" and f["owned"] for f in fs)

    def sole(self, obj):
        """The single flower filter at this prio, or None."""
        fs = obj.get("filters") or []
        return fs[0] if len(fs) == 1 and fs[0]["kind"] == "flower" else None

    def same(self, current, desired):
        f = self.sole(current)
        if f is None or not f["owned"] or f["extra"]:
            return False
        r = f["rule"]
        return (r["match"] == desired["match"] and r["actions"] == desired["actions"]
                and r["hw"] == desired["hw"])

    def merge(self, current, desired):
        f = self.sole(current)
        out = dict(desired)
        for k in ("match", "actions", "hw"):
            if out.get(k) is None and f is not None:
                out[k] = f["rule"][k]
        return complete(out)

    def describe(self, obj):
        return describe(obj)


def restorable(obj):
    """Why an owned current object could not be put back exactly by rollback (None if it can)."""
    fs = obj.get("filters") or []
    if len(fs) != 1:
        return "it holds %d filters at one prio (this module manages one)" % len(fs)
    f = fs[0]
    if f["extra"]:
        return "it has settings this module does not manage (%s)" % "; ".join(f["extra"])
    if not isinstance(f.get("handle"), int):
        return "its handle is unknown"
    if not _COOKIE_RE.match(str(f.get("cookie") or "")):
        return "its cookie is not plain hex"
    return None


def slot_conflicts(kind, p, desired, current_objs):
    """Desired rules whose (dev, chain, prio) holds a filter with another protocol.

    Returns a list of (desired, current object, reason) that cannot be applied.  A conflicting
    owned object that the plan deletes anyway (state overridden) is fine: deletes run first.
    """
    deleting = set(kind.key(c) for c in p.delete)
    by_slot = {}
    for c in current_objs:
        by_slot.setdefault((c["dev"], c["chain"], c["prio"]), []).append(c)
    out = []
    for d in desired:
        for c in by_slot.get((d["dev"], d["chain"], d["prio"]), []):
            if c["protocol"] == d["protocol"] or kind.key(c) in deleting:
                continue
            if kind.owned(c):
                reason = ("holds this collection's rule with protocol %s; delete it first (state=deleted) "
                          "or use state=overridden" % c["protocol"])
            else:
                reason = "holds a foreign %s filter with protocol %s" % (c["kind"], c["protocol"])
            out.append((d, c, reason))
    return out


def changing(p):
    """The desired rules a plan creates or replaces."""
    return list(p.add) + [pair[1] for pair in p.replace]


def build_batch(kind, p, hooks, remove_qdisc_devs=()):
    """Plan -> (lines, undo, owners): batch lines, the line that undoes each, and who each serves.

    ``hooks``: {dev: "ingress"|"clsact"} for devices that already have an ingress hook.  Order:
    qdisc adds, deletes, replaces, adds, qdisc removals (only ``remove_qdisc_devs``).
    """
    lines, undo, owners = [], [], []

    def emit(line, inverse, owner):
        lines.append(line)
        undo.append(inverse)
        owners.append(owner)

    for dev in sorted(set(d["dev"] for d in changing(p))):
        if dev not in hooks:
            emit(qdisc_line("add", dev), qdisc_line("del", dev), "ingress qdisc on %s" % dev)
    for c in p.delete:
        f = kind.sole(c)
        emit(delete_line(c), filter_line("add", f["rule"], f["handle"], f["cookie"]), c)
    for c, d in p.replace:
        f = kind.sole(c)
        emit(filter_line("replace", d, f["handle"]), filter_line("replace", f["rule"], f["handle"], f["cookie"]), d)
    for d in p.add:
        emit(filter_line("add", d), delete_line(d), d)
    for dev in sorted(remove_qdisc_devs):
        emit(qdisc_line("del", dev), qdisc_line("add", dev), "ingress qdisc on %s" % dev)
    return lines, undo, owners


# --------------------------------------------------------------------------------------------
# hints for tc's own messages

TC_HINTS = [
    (r"TC classifier not found|Unknown filter \"flower\"",
     "the kernel has no flower classifier (CONFIG_NET_CLS_FLOWER / module cls_flower): load or build it"),
    (r"Failed to load TC action module|Unknown action",
     "the kernel lacks an action the rule uses (act_vlan / act_mirred: CONFIG_NET_ACT_VLAN, "
     "CONFIG_NET_ACT_MIRRED): load or build it"),
    (r"TC offload is disabled on net device|only offload of BPF classifiers supported|"
     r"Operation not supported",
     "the device did not take the rule into hardware: enable `ethtool -K DEV hw-tc-offload on` "
     "(and switchdev mode for VF representors), or use hw: none / skip_hw"),
    (r"Exclusivity flag on",
     "the device already has an ingress/clsact qdisc of another kind"),
    (r"Cannot find device",
     "a device named in the rule does not exist (in this namespace)"),
]


_NOISE_RE = re.compile(r"^(Command failed \S+:\d+|We have an error talking to the kernel)$")


def batch_message(stderr, stdout=""):
    """The useful part of a failed ``tc -batch`` run's output (without the batch boilerplate)."""
    lines = [x.strip() for x in (stderr or "").splitlines() + (stdout or "").splitlines()]
    lines = [x for x in lines if x and not _NOISE_RE.match(x)]
    return "; ".join(lines) if lines else "no message"


def hint_for(text):
    for pattern, advice in TC_HINTS:
        if re.search(pattern, text or "", re.IGNORECASE):
            return advice
    return _runner_hint(text)


# --------------------------------------------------------------------------------------------
# client (I/O)


class TcClient:
    """The collection's one client of `tc`: every `tc` command a module runs is a method here, run
    through ``tc_runner`` (a _runner.Runner for "tc"); the links and the xfrm offload devices come
    from ``ip`` (an _iproute2.Ip).  Methods raise _runner.ToolError."""

    def __init__(self, tc_runner, ip):
        self.tc = tc_runner
        self.ip = ip
        self.tool = tc_runner.tool

    def available(self):
        return self.tc.available()

    def links(self):
        return parse_links(self.ip.links_json_text())

    def hooks(self):
        return parse_qdiscs(self.tc.out(["-j", "qdisc", "show"], what="tc -j qdisc show"))

    def filters_text(self, dev):
        """`tc -j filter show dev DEV ingress` (for parse_filters, and hw_rules / tc_in_hw / tc_offloaded)."""
        return self.tc.out(["-j", "filter", "show", "dev", dev, "ingress"], what="tc -j filter show dev %s ingress" % dev)

    def filters(self, dev):
        return parse_filters(dev, self.filters_text(dev))

    def xfrm_offload_devices(self):
        # nokeys: the module never reads key material
        return xfrm_offload_devices(self.ip.xfrm_text("state", nokeys=True))

    def batch(self, lines, force=False):
        """Run lines through ``tc [-force] -batch -``.  Raises ToolError (with stderr) on failure."""
        from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import batch_text
        args = (["-force"] if force else []) + ["-batch", "-"]
        return self.tc.run(args, data=batch_text(lines), what="tc %s-batch" % ("-force " if force else ""))
