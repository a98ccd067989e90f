#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: tc_flower_vlan
short_description: tc flower rules on the ingress hook that pop/push VLAN tags and redirect or mirror
version_added: 0.1.0
description:
  - Manages a list of C(tc flower) filters on the ingress hook of network devices, as used by the
    NVIDIA "IPsec packet offload" topologies (for example the RoCE-over-VF example, where the uplink
    pops the outer and inner VLAN tags and redirects to the VF representor, and the representor pushes
    both tags and redirects back).
  - A network resource module. O(state=merged), V(replaced) and V(overridden) create or change
    rules, V(deleted) removes them, V(gathered) reads them and V(rendered) prints the C(tc) commands
    without touching a host.
  - "Identity of a rule: O(config[].dev), O(config[].chain), O(config[].prio) and O(config[].protocol).
    The module manages one flower filter per prio and adds it with handle 1."
  - "Ownership: every rule written by this module carries an action cookie on its first action that
    starts with C(69706f2d6d6c7835) (the ASCII bytes C(ipo-mlx5)), followed by a one-byte format
    version (C(01)). Only such rules are ever replaced or deleted (also by V(overridden) and
    V(deleted)). A listed rule whose dev/chain/prio is taken by any other filter is refused."
  - All changes run as one C(tc -batch -) (without C(-force), so it stops at the first failure).
    When a line fails, the lines already applied are undone in reverse order and the ingress state of
    the touched devices is compared with the state before the run; the result says which rule failed
    and whether the host is back as it was. After a successful run the rules are read back and
    compared with the request; a mismatch is undone the same way and reported.
  - An ingress qdisc is added to a device that needs one and has neither C(ingress) nor C(clsact). It
    is never removed unless O(remove_ingress_qdisc=true) and no filter at all is left on it.
  - "mlx5: IPsec RX/TX steering tables must exist before any offloaded TC rule on the same device,
    otherwise the first offloaded IPsec state or policy is refused with C(EBUSY). With
    O(require_ipsec_before_offload=true) (the default) a rule that may be offloaded (O(config[].hw) is
    not V(skip_hw)) is refused on a device when neither it nor another netdev of the same parent
    device (C(ip -d link) C(parentdev); for mlx5 the PCI function shared by the uplink and its VF
    representors) has an offloaded xfrm state yet (a C(crypto offload parameters: dev DEV) line in
    C(ip xfrm state list nokeys))."
  - Each rule's result says whether the kernel holds it in hardware (V(in_hw)) or in software only
    (V(not_in_hw)).
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.common
  - ipsec_offload.mlx5.lock
options:
  config:
    description:
      - The rules. Required unless O(state) is V(gathered), or V(deleted)/V(overridden) meant for
        every owned rule.
      - With O(state=merged), O(config[].match), O(config[].actions) and O(config[].hw) that are left
        out keep the current rule's value; each of them is compared as a whole (a given O(config[].match)
        replaces the whole match).
    type: list
    elements: dict
    suboptions:
      dev:
        description: Device whose ingress hook holds the rule.
        type: str
        required: true
      chain:
        description: tc chain.
        type: raw
        default: 0
      prio:
        description: Filter priority (C(tc ... prio N), 1..65535); part of the identity.
        type: raw
        required: true
      protocol:
        description:
          - Ether type the filter is attached to, one of V(all), V(ip) (also V(ipv4)), V(ipv6), V(arp),
            V(802.1q), V(802.1ad); any case and the numbers (V(0x8100)) are accepted.
          - Defaults to V(all). With O(state=deleted), leaving it out deletes the owned rule at this
            dev/chain/prio whatever its protocol.
          - Matching VLAN fields needs V(802.1q) or V(802.1ad).
        type: str
      match:
        description: What the rule matches. Leave out (or empty) to match every packet of O(config[].protocol).
        type: dict
        suboptions:
          vlan_id:
            description: Outer VLAN id (0..4095).
            type: raw
          vlan_prio:
            description: Outer VLAN priority (PCP, 0..7).
            type: raw
          vlan_ethtype:
            description: Ether type after the outer tag (V(ip), V(ipv6), V(arp), or V(802.1q)/V(802.1ad) for a second tag).
            type: str
          cvlan_id:
            description: Inner VLAN id (needs O(config[].match.vlan_ethtype) V(802.1q) or V(802.1ad)).
            type: raw
          cvlan_prio:
            description: Inner VLAN priority (0..7).
            type: raw
          cvlan_ethtype:
            description: Ether type after the inner tag (V(ip), V(ipv6), V(arp)).
            type: str
          dst_mac:
            description: Destination MAC address.
            type: str
          src_mac:
            description: Source MAC address.
            type: str
          ip_proto:
            description: IP protocol (needs an IPv4/IPv6 ether type).
            type: str
            choices: [tcp, udp, sctp, icmp, icmpv6, esp, ah]
          dst_ip:
            description: Destination address or prefix (no host bits), for example V(10.0.0.0/24).
            type: str
          src_ip:
            description: Source address or prefix.
            type: str
          dst_port:
            description: Destination port (needs O(config[].match.ip_proto) tcp, udp or sctp).
            type: raw
          src_port:
            description: Source port.
            type: raw
      actions:
        description:
          - Ordered actions. Each element sets exactly one of O(config[].actions[].vlan) or
            O(config[].actions[].mirred). A redirect must be the last action.
          - Required to create or replace a rule.
        type: list
        elements: dict
        suboptions:
          vlan:
            description: Pop the outer tag, or push a tag.
            type: str
            choices: [pop, push]
          id:
            description: VLAN id to push (0..4094).
            type: raw
          protocol:
            description: Tag protocol to push, V(802.1q) (default) or V(802.1ad).
            type: str
          priority:
            description: Priority (PCP) of the pushed tag, 0..7 (default 0).
            type: raw
          mirred:
            description: Send the packet out of O(config[].actions[].dev) (V(redirect)), or a copy of it (V(mirror)).
            type: str
            choices: [redirect, mirror]
          dev:
            description: Device for O(config[].actions[].mirred) (egress).
            type: str
      hw:
        description:
          - V(none) lets the kernel offload the rule when it can and keep it in software otherwise;
            V(skip_sw) requires hardware (the kernel refuses the rule otherwise); V(skip_hw) keeps it in
            software only. Defaults to V(none) for a new rule.
        type: str
        choices: [none, skip_sw, skip_hw]
  state:
    description:
      - V(merged) creates or updates the listed rules; V(replaced) makes them exactly as listed;
        V(overridden) does the same and deletes every other owned rule in scope (see O(devices));
        V(deleted) deletes the listed owned rules, or with no O(config) every owned rule in scope;
        V(gathered) returns the owned rules in scope; V(rendered) returns the commands only.
    type: str
    choices: [merged, replaced, overridden, deleted, gathered, rendered]
    default: merged
  devices:
    description:
      - Devices in scope for V(overridden), V(gathered) and V(deleted) without O(config), besides the
        devices named in O(config). Default is every device with an ingress hook in the namespace.
    type: list
    elements: str
  require_ipsec_before_offload:
    description:
      - Refuse to add a rule that may be offloaded (O(config[].hw) not V(skip_hw)) to a device when neither
        it nor another netdev of the same PCI function has an offloaded xfrm state yet (mlx5 refuses the
        first offloaded IPsec object once offloaded TC rules exist on the function).
      - Set to V(false) for devices where no IPsec offload will be configured on the same function, for
        example VF representors and the uplink in the vendor's RoCE-over-VF example, where IPsec runs on
        the VF itself.
    type: bool
    default: true
  remove_ingress_qdisc:
    description:
      - With V(deleted) or V(overridden), also delete a device's C(ingress) qdisc when no filter at all
        (owned or foreign) is left on it. A C(clsact) qdisc is never removed.
    type: bool
    default: false
attributes:
  check_mode:
    description: Reads the current rules (and C(ip xfrm state) for the IPsec check) and returns the commands without running them.
    support: full
  diff_mode:
    description: Returns the owned rules before and after, one line per rule.
    support: full
notes:
  - Requires the kernel's flower classifier and the vlan and mirred actions (C(cls_flower), C(act_vlan),
    C(act_mirred)).
  - The IPsec check reads C(ip xfrm state list nokeys) in the same namespace; key material is never read.
'''

EXAMPLES = r'''
- name: Vendor RoCE-over-VF example, QinQ between the uplink and the VF representor
  ipsec_offload.mlx5.tc_flower_vlan:
    config:
      - dev: "{{ pf0 }}"
        prio: 10
        protocol: 802.1q
        match:
          vlan_id: 10
          vlan_ethtype: 802.1q
          cvlan_id: 5
        actions:
          - vlan: pop
          - vlan: pop
          - mirred: redirect
            dev: "{{ vf0_rep }}"
      - dev: "{{ vf0_rep }}"
        prio: 10
        protocol: all
        actions:
          - vlan: push
            id: 5
          - vlan: push
            id: 10
          - mirred: redirect
            dev: "{{ pf0 }}"
    # IPsec runs on the VF, not on these devices
    require_ipsec_before_offload: false

- name: Software-only VLAN push in a lab namespace
  ipsec_offload.mlx5.tc_flower_vlan:
    namespace: ns0
    config:
      - dev: tv0
        prio: 10
        protocol: ip
        match: {src_ip: 10.50.0.1}
        hw: skip_hw
        actions:
          - {vlan: push, id: 100, priority: 3}
          - {mirred: redirect, dev: tv2}

- name: Remove every rule this collection owns on pf0, and the ingress qdisc if nothing else is left
  ipsec_offload.mlx5.tc_flower_vlan:
    state: deleted
    devices: [pf0]
    remove_ingress_qdisc: true

- name: Show the commands for review
  ipsec_offload.mlx5.tc_flower_vlan:
    state: rendered
    config:
      - {dev: pf0, prio: 1, protocol: 802.1q, match: {vlan_id: 10}, actions: [{vlan: pop}, {mirred: redirect, dev: rep0}]}
  register: out
'''

RETURN = r'''
commands:
  description: The C(tc -batch) lines that ran (or would run in check mode); empty when nothing changes.
  returned: when not rendered or gathered
  type: list
  elements: str
  sample:
    - qdisc add dev pf0 ingress
    - >-
      filter add dev pf0 ingress protocol 802.1q chain 0 prio 10 handle 1 flower vlan_id 10
      action vlan pop cookie 69706f2d6d6c783501 action mirred egress redirect dev rep0
rules:
  description:
    - One entry per listed rule (and per rule deleted), with what happened and where it lives.
    - C(offload) is V(in_hw) (offloaded), V(not_in_hw) (software), V(unknown) (the kernel did not say, or
      check mode for a rule not yet there) or V(absent).
  returned: when not rendered or gathered
  type: list
  elements: dict
  sample: [{"dev": "pf0", "chain": 0, "prio": 10, "protocol": "802.1q", "status": "added", "handle": 1,
            "offload": "in_hw", "in_hw_count": 1}]
before:
  description: The owned rules in scope before the run (config format).
  returned: when not rendered
  type: list
  elements: dict
  sample:
    - dev: pf0
      chain: 0
      prio: 10
      protocol: 802.1q
      hw: none
      match: {vlan_id: 10}
      actions: [{vlan: pop}, {mirred: redirect, dev: pf0vf0_rep}]
after:
  description: The owned rules in scope after the run (read back; predicted in check mode).
  returned: when not rendered or gathered
  type: list
  elements: dict
  sample:
    - dev: pf0
      chain: 0
      prio: 10
      protocol: 802.1q
      hw: none
      match: {vlan_id: 10, vlan_ethtype: 802.1q, cvlan_id: 5}
      actions: [{vlan: pop}, {vlan: pop}, {mirred: redirect, dev: pf0vf0_rep}]
    - dev: pf0vf0_rep
      chain: 0
      prio: 10
      protocol: all
      hw: none
      match: {}
      actions: [{vlan: push, id: 5, protocol: 802.1q, priority: 0}, {vlan: push, id: 10, protocol: 802.1q, priority: 0},
                {mirred: redirect, dev: pf0}]
gathered:
  description: The owned rules in scope (config format, usable as O(config)), with O(state=gathered).
  returned: when state is gathered
  type: list
  elements: dict
  sample:
    - dev: pf0
      chain: 0
      prio: 10
      protocol: 802.1q
      hw: none
      match: {vlan_id: 10, vlan_ethtype: 802.1q, cvlan_id: 5}
      actions: [{vlan: pop}, {vlan: pop}, {mirred: redirect, dev: pf0vf0_rep}]
rendered:
  description: The C(tc -batch) lines that create the listed rules on a host without them.
  returned: when state is rendered
  type: list
  elements: str
  sample:
    - qdisc add dev pf0 ingress
    - >-
      filter add dev pf0 ingress protocol 802.1q chain 0 prio 10 handle 1 flower vlan_id 10 vlan_ethtype 802.1q
      cvlan_id 5 action vlan pop cookie 69706f2d6d6c783501 action vlan pop action mirred egress redirect dev pf0vf0_rep
failed_command:
  description: The batch line the kernel refused.
  returned: on failure while applying
  type: str
  sample: >-
    filter add dev pf0vf0_rep ingress protocol all chain 0 prio 10 handle 1 flower action vlan push id 5
    protocol 802.1q priority 0 cookie 69706f2d6d6c783501 action vlan push id 10 protocol 802.1q priority 0
    action mirred egress redirect dev pf0
rollback:
  description: The lines run to undo what the failed run had applied.
  returned: on failure while applying
  type: list
  elements: str
  sample:
    - filter del dev pf0 ingress protocol 802.1q chain 0 prio 10
    - qdisc del dev pf0vf0_rep ingress
    - qdisc del dev pf0 ingress
restored:
  description: True if, after the rollback, the ingress state of the touched devices equals the state before the run.
  returned: on failure while applying
  type: bool
  sample: true
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock, _steps, _tc, _validate
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._iproute2 import Ip
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import STATES, plan
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError, failed_batch_line

IPSEC_FIRST = ("On mlx5 the first offloaded IPsec state/policy is refused (EBUSY) once offloaded TC rules "
               "exist, so IPsec must come first: apply the IPsec states and policies (xfrm_offload_state / "
               "xfrm_offload_policy) on %s first, then this module; or set hw: skip_hw on rules that stay "
               "in software, or require_ipsec_before_offload: false if no IPsec offload will ever be "
               "configured on that device")


def argument_spec():
    return dict(
        config=dict(type="list", elements="dict", options=dict(
            dev=dict(type="str", required=True),
            chain=dict(type="raw", default=0),
            prio=dict(type="raw", required=True),
            protocol=dict(type="str"),
            match=dict(type="dict", options=dict(
                vlan_id=dict(type="raw"),
                vlan_prio=dict(type="raw"),
                vlan_ethtype=dict(type="str"),
                cvlan_id=dict(type="raw"),
                cvlan_prio=dict(type="raw"),
                cvlan_ethtype=dict(type="str"),
                dst_mac=dict(type="str"),
                src_mac=dict(type="str"),
                ip_proto=dict(type="str", choices=list(_tc.IP_PROTOS)),
                dst_ip=dict(type="str"),
                src_ip=dict(type="str"),
                dst_port=dict(type="raw"),
                src_port=dict(type="raw"),
            )),
            actions=dict(type="list", elements="dict", options=dict(
                vlan=dict(type="str", choices=["pop", "push"]),
                id=dict(type="raw"),
                protocol=dict(type="str"),
                priority=dict(type="raw"),
                mirred=dict(type="str", choices=["redirect", "mirror"]),
                dev=dict(type="str"),
            )),
            hw=dict(type="str", choices=list(_tc.HW_CHOICES)),
        )),
        state=dict(type="str", default="merged", choices=list(STATES)),
        devices=dict(type="list", elements="str"),
        require_ipsec_before_offload=dict(type="bool", default=True),
        remove_ingress_qdisc=dict(type="bool", default=False),
        namespace=dict(type="str"),
    )


class Failure(Exception):
    def __init__(self, msg, **extra):
        self.msg = msg
        self.extra = extra
        super().__init__(msg)


def read_state(client, devs, hooks=None):
    """(hooks, filters on those of ``devs`` that have an ingress hook)."""
    if hooks is None:
        hooks = client.hooks()
    filters = []
    for dev in sorted(devs):
        if dev in hooks:
            filters += client.filters(dev)
    return hooks, filters


def owned_rules(kind, objs):
    out = []
    for c in objs:
        f = kind.sole(c)
        if kind.owned(c) and f is not None:
            out.append(_tc.public(f["rule"]))
    return out


def text(rules):
    return "".join(_tc.rule_text(r) + "\n" for r in rules)


def resolve_deleted_protocols(rules, raw_config, current):
    """state=deleted: a rule given without protocol takes the protocol found at its slot."""
    for r, raw in zip(rules, raw_config or []):
        if raw.get("protocol") is None:
            hits = [c for c in current if (c["dev"], c["chain"], c["prio"]) == (r["dev"], r["chain"], r["prio"])]
            if hits:
                r["protocol"] = hits[0]["protocol"]


def check_devices(p, links):
    for d in _tc.changing(p):
        f = d.get("_field", "config")
        if d["dev"] not in links:
            raise _validate.InputError(f + ".dev", "device %s does not exist" % d["dev"])
        for j, a in enumerate(d["actions"]):
            if "mirred" in a and a["dev"] not in links:
                raise _validate.InputError("%s.actions[%d].dev" % (f, j), "device %s does not exist" % a["dev"])


def newly_offloadable(kind, p):
    """Rules that the run makes eligible for hardware (not skip_hw), per device."""
    devs = set()
    for d in p.add:
        if d["hw"] != "skip_hw":
            devs.add(d["dev"])
    for c, d in p.replace:
        f = kind.sole(c)
        if d["hw"] != "skip_hw" and (f is None or f["rule"]["hw"] == "skip_hw"):
            devs.add(d["dev"])
    return sorted(devs)


def status_rows(kind, p, filters_after, check_mode):
    """The per-rule report."""
    found = {}
    for f in filters_after:
        found.setdefault((f["dev"], f["chain"], f["prio"], f["protocol"]), f)
    rows = []

    def row(obj, status):
        k = kind.key(obj)
        r = {"dev": k[0], "chain": k[1], "prio": k[2], "protocol": k[3], "status": status}
        f = found.get(k)
        if status == "deleted":
            r.update(offload="absent" if not check_mode else "unknown")
        elif f is None:
            r.update(offload="unknown" if check_mode else "absent")
        else:
            r.update(handle=f["handle"], offload=f["offload"], in_hw_count=f["in_hw_count"])
        rows.append(r)

    for d in p.add:
        row(d, "added")
    for pair in p.replace:
        row(pair[1], "replaced")
    for d in p.unchanged:
        row(d, "unchanged")
    for c in p.delete:
        row(c, "deleted")
    return rows


def predicted(kind, p, before_objs):
    deleted = set(kind.key(c) for c in p.delete) | set(kind.key(pair[0]) for pair in p.replace)
    rules = [r for r in owned_rules(kind, before_objs) if kind.key(r) not in deleted]
    rules += [_tc.public(pair[1]) for pair in p.replace] + [_tc.public(d) for d in p.add]
    return sorted(rules, key=kind.key)


def run(module):
    params = module.params
    state = params["state"]
    kind = _tc.FlowerKind()
    ns = _validate.netns("namespace", params["namespace"])
    rules = _tc.validate_config(params["config"], state)
    devices = [_validate.ifname("devices[%d]" % i, d) for i, d in enumerate(params["devices"] or [])]
    if state in ("merged", "replaced", "rendered") and not rules:
        raise _validate.InputError("config", "give at least one rule for state=%s" % state)

    if state == "rendered":
        return dict(changed=False, rendered=_tc.rendered_lines(rules))

    client = _tc.TcClient(Runner(module, "tc", ns), Ip(Runner(module, "ip", ns)))
    try:
        links = client.links()
        hooks = client.hooks()
        scope = set(r["dev"] for r in rules)
        if state in ("overridden", "gathered") or (state == "deleted" and not rules):
            scope |= set(devices) if devices else set(hooks)
        hooks, filters = read_state(client, scope, hooks)
    except ToolError as exc:
        raise Failure("cannot read the current tc state: %s" % exc.message, **exc.as_result())
    except _tc.ParseError as exc:
        raise Failure(str(exc))
    current = _tc.group(filters)
    before = sorted(owned_rules(kind, current), key=kind.key)

    if state == "gathered":
        return dict(changed=False, gathered=before, before=before)

    if state == "deleted":
        resolve_deleted_protocols(rules, params["config"], current)
    p = plan(kind, state, rules, current)
    for d in _tc.changing(p):
        _tc.complete(d)
    refuse_unsafe(kind, state, p, current, links)
    if params["require_ipsec_before_offload"]:
        require_ipsec_first(client, newly_offloadable(kind, p), links)
    remove_qdisc = []
    if params["remove_ingress_qdisc"] and state in ("deleted", "overridden"):
        remove_qdisc = qdiscs_left_empty(kind, p, current, hooks, scope)

    lines, undo, owners = _tc.build_batch(kind, p, hooks, remove_qdisc)
    result = dict(changed=bool(lines), commands=lines, before=before)
    if module._diff:
        result["diff"] = {"before": text(before), "after": text(predicted(kind, p, current))}
    if not lines or module.check_mode:
        result["after"] = predicted(kind, p, current)
        result["rules"] = status_rows(kind, p, filters, module.check_mode)
        return result

    touched = set(line.split()[3] for line in lines)  # "<obj> <verb> dev DEV ..."
    batch = batch_of(client, undo, touched, hooks, filters)
    apply_batch(client, lines, owners, touched, batch)

    # verify: read back and plan again; nothing may be left to do
    current2, filters2 = verify_applied(client, kind, state, rules, scope, touched, remove_qdisc, lines, batch)
    after = sorted(owned_rules(kind, current2), key=kind.key)
    result["after"] = after
    result["rules"] = status_rows(kind, p, filters2, False)
    if module._diff:
        result["diff"]["after"] = text(after)
    return result


def verify_applied(client, kind, state, rules, scope, touched, remove_qdisc, lines, batch):
    """Read back and plan again: (current rules, filters) when nothing is left to do, else undo and fail."""
    try:
        hooks2, filters2 = read_state(client, scope | touched)
        current2 = _tc.group(filters2)
        p2 = plan(kind, state, [dict(r) for r in rules], current2)
        leftover = bool(p2.add or p2.replace or p2.delete or p2.foreign) or any(
            d in hooks2 for d in remove_qdisc)
    except (ToolError, _tc.ParseError) as exc:
        leftover, p2 = True, None
        detail = str(exc)
    if leftover:
        out = batch.rollback(len(lines))
        back, rb_error, same = out.undone, "; ".join(out.problems), out.restored
        if p2 is not None:
            detail = "still to do: %s" % ", ".join(
                ["add %s" % _tc.describe(d) for d in p2.add] + ["change %s" % _tc.describe(pair[1]) for pair in p2.replace]
                + ["delete %s" % _tc.describe(c) for c in p2.delete] + ["qdisc on %s" % d for d in remove_qdisc if d in hooks2])
        raise Failure("the rules read back differ from the request after applying (%s); %s" % (
            detail, "undid the run, the host is as before" if same else
            "undo did not restore the previous state%s: check %s by hand" % (
                " (%s)" % rb_error if rb_error else "", ", ".join(sorted(touched)))),
            commands=lines, rollback=back, restored=same)
    return current2, filters2


def refuse_unsafe(kind, state, p, current, links):
    """Fail before anything changes: a filter of someone else in the way, a slot taken, an owned rule
    that could not be restored, a device that is not there."""
    if p.foreign:
        msgs = []
        for c, d in p.foreign:
            msgs.append("%s (%s) %s a %s filter this collection does not own (no %s cookie); %s" % (
                d.get("_field", "config"), _tc.describe(d),
                "names" if state == "deleted" else "collides with",
                c["kind"], _tc.COOKIE_PREFIX,
                "it is left alone" if state == "deleted" else "choose another prio or remove that filter yourself"))
        raise Failure("; ".join(msgs))
    conflicts = _tc.slot_conflicts(kind, p, p.add, current)
    if conflicts:
        raise Failure("; ".join("%s (%s): dev %s chain %d prio %d %s" % (
            d.get("_field", "config"), _tc.describe(d), c["dev"], c["chain"], c["prio"], why)
            for d, c, why in conflicts))
    for c in list(p.delete) + [pair[0] for pair in p.replace]:
        why = _tc.restorable(c)
        if why:
            raise Failure("the owned rule %s cannot be changed safely: %s; fix or remove it by hand"
                          % (_tc.describe(c), why))
    check_devices(p, links)


def require_ipsec_first(client, need, links):
    """mlx5's order: offloadable TC rules only where IPsec offload already exists (same PCI function)."""
    if not need:
        return
    try:
        have = client.xfrm_offload_devices()
    except ToolError as exc:
        raise Failure("cannot read `ip xfrm state` to check that IPsec offload is set up before "
                      "offloadable TC rules (%s); set require_ipsec_before_offload: false if this host "
                      "uses no IPsec offload" % exc.message)
    missing = [d for d in need if not _tc.ipsec_ready(d, have, links)]
    if missing:
        raise Failure("refusing offloadable TC rules on %s: no offloaded xfrm state on %s (or on another "
                      "netdev of the same PCI function) yet. %s"
                      % (", ".join(missing), "it" if len(missing) == 1 else "them",
                         IPSEC_FIRST % ", ".join(missing)))


def qdiscs_left_empty(kind, p, current, hooks, scope):
    """The devices of the scope whose ingress qdisc holds nothing once the plan ran."""
    out = []
    gone = set(kind.key(c) for c in p.delete)
    for dev in sorted(scope):
        if hooks.get(dev) != "ingress":
            continue
        left = [c for c in current if c["dev"] == dev and kind.key(c) not in gone]
        wanted = [d for d in _tc.changing(p) + p.unchanged if d["dev"] == dev]
        if not left and not wanted:
            out.append(dev)
    return out


def batch_of(client, undo, touched, hooks, filters):
    """The run's lines as one _steps.Batch (``undo[i]`` undoes line i): the batch back runs with
    -force (every undo tried); restored() reads the touched devices again and compares them with
    what they held before the run."""
    snapshot_hooks = dict((d, hooks.get(d)) for d in touched)
    snapshot = _tc.fingerprint([f for f in filters if f["dev"] in touched])

    def send_back(back):
        try:
            client.batch(back, force=True)
        except ToolError as exc:
            return [exc.message]
        return []

    def restored():
        try:
            h2, f2 = read_state(client, touched)
        except (ToolError, _tc.ParseError):
            return False
        return dict((d, h2.get(d)) for d in touched) == snapshot_hooks and _tc.fingerprint(f2) == snapshot

    return _steps.Batch(undo, send_back, restored)


def apply_batch(client, lines, owners, touched, batch):
    """One tc -batch; a refused line undoes the lines before it and fails naming the rule and tc's words."""
    def send():
        try:
            client.batch(lines)
        except ToolError as exc:
            return exc
        return None

    def locate(exc):  # tc names the failing line; without it, every line may have applied
        k = failed_batch_line(exc.stderr)
        return k - 1 if k and 1 <= k <= len(lines) else len(lines)

    out = batch.run(send, locate)
    if out is None:
        return
    exc, back, same = out.error, out.undone, out.restored
    rb_error = "; ".join(out.problems)
    k = failed_batch_line(exc.stderr)
    owner = owners[k - 1] if k and 1 <= k <= len(lines) else None
    who = owner if isinstance(owner, str) else (
        "%s (%s)" % (owner.get("_field", "rule"), _tc.describe(owner)) if owner else "a line")
    hint = _tc.hint_for(exc.stderr + "\n" + exc.stdout)
    msg = "tc refused %s: %s" % (who, _tc.batch_message(exc.stderr, exc.stdout))
    if hint:
        msg += " -- %s" % hint
    msg += ". %s" % ("Undid the %d line(s) already applied; the host is as before." % len(back) if same
                     else "Undo of %d line(s) did not restore the previous state%s: check the device(s) %s by hand."
                     % (len(back), " (%s)" % rb_error if rb_error else "", ", ".join(sorted(touched))))
    extra = exc.as_result()
    if hint:
        extra["hint"] = hint
    raise Failure(msg, commands=lines, failed_command=lines[k - 1] if k and 1 <= k <= len(lines) else None,
                  rollback=back, restored=same, **extra)


def main():
    module = AnsibleModule(argument_spec=dict(argument_spec(), **_lock.ARGSPEC), supports_check_mode=True)
    try:
        with _lock.host_lock(module):
            result = run(module)
    except _validate.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)
    except Failure as exc:
        module.fail_json(msg=exc.msg, **exc.extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
