#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: xfrm_offload_policy
short_description: IPsec policies (xfrm policies) with mlx5 packet offload, as one resource list
version_added: 0.1.0
description:
  - Manages a list of IPsec security policies (C(ip xfrm policy), main policy type) in one call, with
    IPsec packet offload ("full offload") on an NVIDIA ConnectX-6 Dx / ConnectX-7 / BlueField-2 port.
  - The identity of a policy is its selector (source and destination prefix, protocol, ports), its
    direction and its mark (value and mask; no mark is the kernel's 0/0). A policy is owned by this
    collection when it has a template and the template's reqid lies
    in O(owned_reqid_range); only owned policies are ever changed or deleted.
  - A changed policy is rewritten with C(ip xfrm policy update), which swaps it atomically (no moment
    without a policy, so no cleartext window); new ones use C(add), removed ones C(delete).
  - Policies support only packet offload. Forward (C(fwd)) policies are never offloaded by mlx5, so
    offload on them is refused.
  - A policy with a mark whose value is 0 and mask is not (the guards' C(0/0x1)) is deleted with one
    netlink request (C(XFRM_MSG_DELPOLICY) with the mark), not with C(ip) - C(ip xfrm policy delete)
    leaves such a mark out and would delete the unmarked policy with the same selector instead. Its
    line in RV(commands) shows what is deleted.
  - "Fail-closed guards: for every SA policy the pair derivation adds two guard policies with the same
    selector and direction, C(action block), no offload, priority C(0xffffffff) and the marks
    C(0/0x1) and C(0x1/0x1) (constants in C(module_utils/_guard.py)). They differ from the SA policy
    only in the mark, which the kernel compares, so they can coexist with it; together they match every
    packet. While the SA policy exists it wins; when the kernel loses it (netdev down, reboot) the guards
    drop the traffic instead of letting it leave in clear. O(scope) lets C(overridden), C(deleted) and
    C(gathered) act on the SA policies and the guards separately (teardown removes the guards last)."
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.common
  - ipsec_offload.mlx5.xfrm
  - ipsec_offload.mlx5.lock
options:
  config:
    description:
      - The policies. For O(state=deleted) only the selector and O(config[].dir) are needed.
    type: list
    elements: dict
    suboptions:
      src:
        description: Source prefix of the selector, for example C(10.0.0.1/32) or C(10.1.0.0/16); no host bits.
        type: str
        required: true
      dst:
        description: Destination prefix of the selector; same family as O(config[].src).
        type: str
        required: true
      proto:
        description: Upper-layer protocol of the selector, a number or a name such as C(tcp), C(udp), C(sctp).
        type: raw
      sport:
        description: Source port of the selector (tcp, udp, sctp, dccp only).
        type: raw
      dport:
        description: Destination port of the selector (tcp, udp, sctp, dccp only).
        type: raw
      dir:
        description: Policy direction.
        type: str
        required: true
        choices: [in, out, fwd]
      priority:
        description: Policy priority (lower wins). Defaults to 0 when the policy is created.
        type: raw
      action:
        description: C(allow) protects the traffic with the template; C(block) drops it. Defaults to C(allow).
        type: str
        choices: [allow, block]
      tmpl:
        description:
          - The template (the SA to use). Required when the policy is created, also for C(block)
            policies, where the kernel does not use it but its reqid marks the policy as owned.
        type: dict
        suboptions:
          src:
            description: Template source address (tunnel endpoint). Required for tunnel mode.
            type: str
          dst:
            description: Template destination address (tunnel endpoint). Required for tunnel mode.
            type: str
          proto:
            description: IPsec protocol.
            type: str
            choices: [esp]
            default: esp
          reqid:
            description: Request id of the SAs this template uses; must lie in O(owned_reqid_range).
            type: raw
            required: true
          mode:
            description: IPsec mode.
            type: str
            choices: [transport, tunnel]
            default: transport
          level:
            description: C(required) drops traffic without a matching SA; C(use) lets it pass in clear text.
            type: str
            choices: [required, use]
            default: required
      mark:
        description:
          - The policy's mark; part of its identity (two policies that differ only in the mark are two
            policies to the kernel). A packet matches when its mark ANDed with O(config[].mark.mask)
            equals O(config[].mark.value).
          - Left out, the policy has no mark (the kernel's 0/0, matching every packet).
        type: dict
        suboptions:
          value:
            description: Mark value, an integer or a decimal / C(0x) hex string, 0 to C(0xffffffff); no bits outside the mask.
            type: raw
            required: true
          mask:
            description: Mark mask, as O(config[].mark.value). Defaults to C(0xffffffff) (as with C(ip xfrm policy)).
            type: raw
      offload:
        description:
          - Hardware offload. Required when an C(in) or C(out) policy is created; C(fwd) policies
            default to no offload. With O(state=merged) an existing policy keeps its offload.
        type: dict
        suboptions:
          type:
            description:
              - C(packet) (the default for C(in)/C(out)) installs the policy in the NIC; C(none) keeps it in
                software (labs, and C(fwd) policies).
            type: str
            choices: [packet, none]
          dev:
            description: The netdev that offloads the policy. Required with C(packet).
            type: str
  scope:
    description:
      - Which owned policies C(overridden) may delete, C(deleted) with an empty O(config) deletes, and
        C(gathered), RV(before) and RV(after) report.
      - C(all) (the default) - every owned policy.
      - C(guards) - only the fail-closed guards (owned, C(action block), mark mask C(0x1)).
      - C(policies) - every owned policy except the guards.
      - With C(policies) or C(guards), a listed policy outside the scope is refused, naming it. Owned
        policies outside the scope are never changed or deleted. Teardown runs C(deleted) with
        C(policies) first, then removes the SAs, then runs C(deleted) with C(guards) (or keeps the guards,
        so the traffic stays blocked while no key is installed).
    type: str
    choices: [all, policies, guards]
    default: all
attributes:
  check_mode:
    description: Reads the host, computes the changes and returns them (RV(commands), diff) without running them.
    support: full
  diff_mode:
    description: Returns the changed objects before and after as YAML-like text, keys redacted.
    support: full
'''

EXAMPLES = r'''
- name: Transport-mode policies of one host, packet offload on the uplink
  ipsec_offload.mlx5.xfrm_offload_policy:
    config:
      - src: 192.168.100.1/32
        dst: 192.168.100.2/32
        dir: out
        tmpl: {src: 192.168.100.1, dst: 192.168.100.2, reqid: "0x51c00001"}
        offload: {type: packet, dev: p0}
      - src: 192.168.100.2/32
        dst: 192.168.100.1/32
        dir: in
        tmpl: {src: 192.168.100.2, dst: 192.168.100.1, reqid: "0x51c00002"}
        offload: {type: packet, dev: p0}

- name: Only VXLAN (udp/4789) between the tunnel endpoints, software policies for the lab
  ipsec_offload.mlx5.xfrm_offload_policy:
    config:
      - {src: 192.168.100.1/32, dst: 192.168.100.2/32, proto: udp, dport: 4789, dir: out,
         tmpl: {reqid: "0x51c00001"}, offload: {type: none}}
    state: overridden

- name: Remove every policy this collection owns
  ipsec_offload.mlx5.xfrm_offload_policy:
    state: deleted

- name: A fail-closed guard pair for the outbound policy above (same selector, block, marks 0/0x1 and 0x1/0x1)
  ipsec_offload.mlx5.xfrm_offload_policy:
    config:
      - {src: 192.168.100.1/32, dst: 192.168.100.2/32, dir: out, action: block, priority: 0xffffffff,
         mark: {value: 0, mask: 1}, tmpl: {reqid: "0x51c00001"}, offload: {type: none}}
      - {src: 192.168.100.1/32, dst: 192.168.100.2/32, dir: out, action: block, priority: 0xffffffff,
         mark: {value: 1, mask: 1}, tmpl: {reqid: "0x51c00001"}, offload: {type: none}}

- name: Remove the owned SA policies but keep the guards (traffic stays blocked)
  ipsec_offload.mlx5.xfrm_offload_policy:
    state: deleted
    scope: policies
'''

RETURN = r'''
changed:
  description: Whether policies were (or in check mode would be) added, updated or deleted.
  returned: always
  type: bool
  sample: true
commands:
  description: The batch lines (for C(ip -batch -)) of this run.
  returned: when a host was read
  type: list
  elements: str
  sample:
    - >-
      xfrm policy add src 192.168.100.1/32 dst 192.168.100.2/32 dir out priority 0 ptype main
      offload packet dev p0 tmpl src 192.168.100.1 dst 192.168.100.2 proto esp reqid 0x51c00001 mode transport
counts:
  description: Number of policies added, replaced (updated), deleted and unchanged.
  returned: when a host was read
  type: dict
  sample: {added: 2, replaced: 0, deleted: 0, unchanged: 0}
before:
  description: The owned policies before the run.
  returned: when a host was read and O(output=full)
  type: list
  elements: dict
  sample:
    - src: 192.168.100.1/32
      dst: 192.168.100.2/32
      dir: out
      action: allow
      priority: 0
      tmpl: {src: 192.168.100.1, dst: 192.168.100.2, proto: esp, reqid: "0x51c00001", mode: transport, level: required}
      offload: {type: packet, dev: p0}
after:
  description: The owned policies after the run as read back (in check mode, as they would be).
  returned: when a host was read and O(output=full)
  type: list
  elements: dict
  sample:
    - src: 192.168.100.1/32
      dst: 192.168.100.2/32
      dir: out
      action: allow
      priority: 0
      tmpl: {src: 192.168.100.1, dst: 192.168.100.2, proto: esp, reqid: "0x51c00001", mode: transport, level: required}
      offload: {type: packet, dev: p0}
    - src: 192.168.100.2/32
      dst: 192.168.100.1/32
      dir: in
      action: allow
      priority: 0
      tmpl: {src: 192.168.100.2, dst: 192.168.100.1, proto: esp, reqid: "0x51c00002", mode: transport, level: required}
      offload: {type: packet, dev: p0}
offload:
  description: One entry per listed policy (not for O(state=deleted)), requested offload and what is in effect.
  returned: when a host was read
  type: list
  elements: dict
  sample:
    - {sp: "SP src 192.168.100.1/32 dst 192.168.100.2/32 dir out", requested: packet, dev: p0,
       in_effect: packet, in_effect_dev: p0}
features:
  description: What C(ip) and the kernel support (probed or given).
  returned: when a host was read, and with O(state=rendered)
  type: dict
  sample: {offload_packet: true, sa_dir: true, iproute2_sa_dir: true, kernel: "6.12"}
gathered:
  description: The owned policies on the host.
  returned: O(state=gathered)
  type: list
  elements: dict
  sample:
    - src: 192.168.100.2/32
      dst: 192.168.100.1/32
      dir: in
      action: allow
      priority: 0
      tmpl: {src: 192.168.100.2, dst: 192.168.100.1, proto: esp, reqid: "0x51c00002", mode: transport, level: required}
      offload: {type: packet, dev: p0}
rendered:
  description: The batch lines that would add the listed policies.
  returned: O(state=rendered)
  type: list
  elements: str
  sample:
    - >-
      xfrm policy add src 192.168.100.1/32 dst 192.168.100.2/32 dir out priority 0 ptype main
      offload packet dev p0 tmpl src 192.168.100.1 dst 192.168.100.2 proto esp reqid 0x51c00001 mode transport
failed_object:
  description: The policy whose batch line failed or whose check after the change failed.
  returned: failure while applying
  type: str
  sample: SP src 192.168.100.2/32 dst 192.168.100.1/32 dir in
kernel_message:
  description: What C(ip) / the kernel said.
  returned: failure while applying
  type: str
  sample: "RTNETLINK answers: Invalid argument"
rolled_back:
  description: Whether the rollback restored every policy this run had touched.
  returned: failure while applying
  type: bool
  sample: true
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard as G
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run


class PolicyHost(_xfrm_run.XfrmHost):
    """XfrmHost whose batch sends `xfrm policy delete` lines for a mark with value 0 (the guards'
    0/0x1) over netlink: `ip` would drop that mark and delete the unmarked policy with the same
    selector instead (see _guard.ip_cannot_delete).  The other lines still go to `ip -batch -`, in
    order, in runs; the first failure stops the batch, as `ip -batch` does."""

    def batch(self, lines):
        run = []
        for line in list(lines) + [None]:
            sp = G.split_delete_line(line) if line is not None else None
            if line is not None and not (sp is not None and G.ip_cannot_delete(sp)):
                run.append(line)
                continue
            if run:
                rc, err = super().batch(run)
                if rc != 0:
                    return rc, err
                run = []
            if line is None:
                return 0, ""
            err = G.netlink_delete(sp, self.namespace)
            if err:
                return 2, err


class PolicySpec(_xfrm_run.Spec):
    which = "policy"
    kind = X.SPKind()
    label = "sp"
    host_class = PolicyHost

    def __init__(self, scope="all"):
        self.scope = scope
        self.kind = G.scoped_kind(scope) if scope != "all" else X.SPKind()

    def validate(self, field, item, state, rng):
        sp = X.validate_sp(field, item, state, rng)
        if self.scope != "all":
            guard = G.is_guard_mark(sp["mark"]) and sp["action"] in (None, "block")
            if guard != (self.scope == "guards"):
                raise X.InputError(field + (".mark" if self.scope == "guards" else ""),
                                   "%s is %sa guard (action block, mark mask 0x%x) but scope is %s; list it "
                                   "with scope %s or all" % (self.kind.describe(sp), "" if guard else "not ",
                                                             G.GUARD_MARK_BIT, self.scope,
                                                             "guards" if guard else "policies"))
        return sp

    def complete(self, d, current):
        return X.complete_sp(d, current)


class PolicyModule(_xfrm_run.LeanConfig, AnsibleModule):
    """AnsibleModule with `config`'s sub-options applied by _argspec (see _xfrm_run.LeanConfig)."""


def argument_spec():
    return dict(
        config=dict(type="list", elements="dict", options=X.sp_options()),
        scope=dict(type="str", choices=list(G.SCOPES), default="all"),
        state=dict(type="str", default="merged",
                   choices=["merged", "replaced", "overridden", "deleted", "gathered", "rendered"]),
        namespace=dict(type="str"),
        owned_reqid_range=dict(type="list", elements="raw"),
        output=dict(type="str", choices=["full", "summary"], default="full"),
        features=dict(type="dict", options=dict(
            offload_packet=dict(type="bool"),
            sa_dir=dict(type="bool"),
        )),
    )


def main():
    with _xfrm_run.collector_paused():
        spec, PolicyModule.config_options = _argspec.lean(dict(argument_spec(), **_lock.ARGSPEC))
        module = PolicyModule(argument_spec=spec, supports_check_mode=True)
        module.apply_config()
        with _lock.host_lock(module):
            _xfrm_run.run(module, PolicySpec(module.params["scope"]), module.params)


if __name__ == "__main__":
    main()
