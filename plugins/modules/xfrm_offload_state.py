#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: xfrm_offload_state
short_description: IPsec SAs (xfrm states) with mlx5 packet or crypto offload, as one resource list
version_added: 0.1.0
description:
  - Manages a list of ESP security associations (C(ip xfrm state)) in one call, with AES-GCM
    (V(rfc4106(gcm(aes\)\))), extended sequence numbers and IPsec packet offload ("full offload") or
    crypto offload on an NVIDIA ConnectX-6 Dx / ConnectX-7 / BlueField-2 port.
  - The identity of an SA is its destination address and SPI. An SA is owned by this collection when
    its reqid lies in O(owned_reqid_range); only owned SAs are ever replaced or deleted.
  - An SA cannot be changed in place. A listed SA that differs from the one on the host is deleted
    and added again in the same batch, and only with a B(new key). Re-creating an SA with its old key
    would restart its sequence numbers under that key (AES-GCM nonce reuse), so that is refused.
  - Refused before anything changes, naming the field - a key used by two listed SAs or by another SA
    on the host, IPv4/IPv6 mixes, a wrong key length, SPI 0 or 1..255 (reserved by IANA), an ICV other
    than 128 bits with offload (mlx5), an inbound packet-offload replay window other than 32/64/128/256,
    a reqid outside the owned range, an offload device that does not exist, packet offload with an
    C(ip) that does not know it.
  - Crypto offload can silently fall back to software; after the change every requested offload is
    read back and checked, and a missing one fails the run and rolls it back (unless
    O(config[].offload.fallback=allow)).
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.common
  - ipsec_offload.mlx5.xfrm
  - ipsec_offload.mlx5.lock
options:
  config:
    description:
      - The SAs. For O(state=deleted) only O(config[].dst) and O(config[].spi) are needed.
    type: list
    elements: dict
    suboptions:
      src:
        description: Source address of the SA (the sender). Required except for O(state=deleted).
        type: str
      dst:
        description: Destination address of the SA (the receiver); same family as O(config[].src).
        type: str
        required: true
      spi:
        description:
          - Security parameter index, 256..4294967295, as an integer or a C(0x) string (INI inventories
            turn C(0x1000) into 4096; both are accepted). 0 and 1..255 are refused.
        type: raw
        required: true
      reqid:
        description:
          - Request id linking the SA to its policy template; must lie in O(owned_reqid_range).
            Required except for O(state=deleted).
        type: raw
      mode:
        description: IPsec mode. Defaults to C(transport) when the SA is created.
        type: str
        choices: [transport, tunnel]
      direction:
        description:
          - Whether this host receives (C(in)) or sends (C(out)) with this SA. Sets the offload direction,
            the SA direction attribute where the host supports it, and the replay window rules.
            Required except for O(state=deleted).
        type: str
        choices: [in, out]
      aead:
        description: The AEAD transform. Required except for O(state=deleted).
        type: dict
        suboptions:
          name:
            description: Algorithm. Only AES-GCM per RFC 4106 for now.
            type: str
            choices: ["rfc4106(gcm(aes))"]
            default: "rfc4106(gcm(aes))"
          key:
            description:
              - Hex key followed by the 4-byte salt (C(0x) optional), 20 bytes (AES-128) or 36 bytes
                (AES-256). Each SA needs its own key. Sent to C(ip) on standard input only; shown as
                C(<redacted>) everywhere.
            type: str
            required: true
          icv:
            description: ICV length in bits. Defaults to 128 when the SA is created; mlx5 offload needs 128.
            type: raw
      esn:
        description: Extended (64-bit) sequence numbers. Defaults to V(true) when the SA is created.
        type: bool
      installed:
        description:
          - V(true) says this SA (its SPI with its key) was installed by an earlier run. If the host no
            longer has it, it was lost (link down of its offload netdev, reboot, driver reset, a
            teardown running at the same time) and the module fails before any change instead of
            adding it again, because a key serves one SA instance, ever. Only a new SPI and key heal
            it (site.yml's SA lifecycle step rotates the direction on both peers).
          - An SA present on the host is kept or updated as usual. Not compared, not reported.
        type: bool
        default: false
      replay_window:
        description:
          - Anti-replay window of an inbound SA in packets, 0..4096; at least 1 with ESN and 32, 64, 128
            or 256 with inbound packet offload (mlx5). Defaults to 64 when the SA is created.
          - Leave it out for O(config[].direction=out). The module sends what the host needs for an
            outbound SA, where the window is not used. With the SA direction attribute in effect
            (kernel >= 6.10 and iproute2 >= 6.11, see O(features.sa_dir)) that is 0, which such a
            kernel requires ("Replay window should be 0 for output SA"). Otherwise it is 1 with
            ESN, because older kernels and iproute2 refuse ESN without a window, and 0 without ESN.
            An outbound SA's window is not compared when checking idempotence.
        type: raw
      sel:
        description: Optional traffic selector of the SA (the policy normally selects the traffic).
        type: dict
        suboptions:
          src:
            description: Source prefix, for example C(10.0.0.0/24); no host bits.
            type: str
          dst:
            description: Destination prefix.
            type: str
          proto:
            description: Upper-layer protocol, a number or a name such as C(tcp), C(udp), C(sctp).
            type: raw
          sport:
            description: Source port (tcp, udp, sctp, dccp only).
            type: raw
          dport:
            description: Destination port (tcp, udp, sctp, dccp only).
            type: raw
      offload:
        description:
          - Hardware offload. Required when the SA is created (there is no offload device to default
            to); on an existing SA with O(state=merged) the current offload is kept.
        type: dict
        suboptions:
          type:
            description:
              - C(packet) (the product default) hands the whole ESP data path to the NIC; C(crypto)
                offloads only the cipher; C(none) keeps the SA in software (for labs and tests -
                never make it the default for real hosts).
            type: str
            choices: [packet, crypto, none]
            default: packet
          dev:
            description: The uplink / PF / VF netdev that offloads the SA. Required unless O(config[].offload.type=none).
            type: str
          fallback:
            description:
              - What to do when the kernel accepted a C(crypto) SA but did not offload it (software
                fallback). C(fail) rolls the run back and fails; C(allow) keeps the software SA, warns,
                and reports it in RV(offload). Packet offload never falls back.
            type: str
            choices: [fail, allow]
            default: fail
  reveal_keys:
    description:
      - With O(state=rendered), print the real keys (as C(0x) + upper-case hex) instead of C(<redacted>).
        Refused with any other state.
      - Ansible still masks any string equal to a key exactly as you gave it.
    type: bool
    default: false
attributes:
  check_mode:
    description: Reads the host, computes the changes and returns them (RV(commands), diff) without running them.
    support: full
  diff_mode:
    description: Returns the changed objects before and after as YAML-like text, keys redacted.
    support: full
notes:
  - Scale - one state dump, one batch and one dump to verify per run, whatever the number of SAs.
  - On a kernel with C(lockdown=confidentiality) the kernel hides SA keys; key changes are then not
    detected and a deleted SA cannot be restored by a rollback.
  - A rollback re-adds an SA the failed run had deleted with the key read from the kernel; its sequence
    numbers restart. Rekey (new SPI and key) after such a failure.
'''

EXAMPLES = r'''
- name: Outbound and inbound SA of one host, packet offload on the uplink
  ipsec_offload.mlx5.xfrm_offload_state:
    config:
      - src: 192.168.100.1
        dst: 192.168.100.2
        spi: "0x00001000"
        reqid: "0x51c00001"
        direction: out
        aead:
          key: "{{ sa_out_key }}"     # 0x + 36 bytes (AES-256 + salt), from the pair derivation
        offload: {type: packet, dev: p0}
      - src: 192.168.100.2
        dst: 192.168.100.1
        spi: "0x00001001"
        reqid: "0x51c00002"
        direction: in
        replay_window: 64
        aead:
          key: "{{ sa_in_key }}"
        offload: {type: packet, dev: p0}

- name: Lab (no NIC) - the same SAs in software
  ipsec_offload.mlx5.xfrm_offload_state:
    config: "{{ lab_sas }}"          # same list with offload: {type: none}
    state: replaced

- name: Review the commands without touching a host
  ipsec_offload.mlx5.xfrm_offload_state:
    config: "{{ lab_sas }}"
    state: rendered

- name: Remove every SA this collection owns
  ipsec_offload.mlx5.xfrm_offload_state:
    state: deleted
'''

RETURN = r'''
changed:
  description: Whether SAs were (or in check mode would be) added, replaced or deleted.
  returned: always
  type: bool
  sample: true
commands:
  description: The batch lines (for C(ip -batch -)) of this run, keys shown as C(<redacted>).
  returned: when a host was read
  type: list
  elements: str
  sample:
    - >-
      xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00001000 reqid 0x51c00001
      mode transport replay-window 0 flag esn aead rfc4106(gcm(aes)) <redacted> 128
      offload packet dev p0 dir out
counts:
  description: Number of SAs added, replaced, deleted and unchanged.
  returned: when a host was read
  type: dict
  sample: {added: 2, replaced: 0, deleted: 0, unchanged: 0}
before:
  description: The owned SAs before the run (keys redacted).
  returned: when a host was read and O(output=full)
  type: list
  elements: dict
  sample:
    - src: 192.168.100.1
      dst: 192.168.100.2
      spi: "0x00001000"
      reqid: "0x51c00001"
      mode: transport
      direction: out
      aead: {name: "rfc4106(gcm(aes))", key: "<redacted>", icv: 128}
      esn: true
      replay_window: 0
      sel: null
      offload: {type: packet, dev: p0}
after:
  description: The owned SAs after the run as read back from the host (in check mode, as they would be).
  returned: when a host was read and O(output=full)
  type: list
  elements: dict
  sample:
    - src: 192.168.100.1
      dst: 192.168.100.2
      spi: "0x00001000"
      reqid: "0x51c00001"
      mode: transport
      direction: out
      aead: {name: "rfc4106(gcm(aes))", key: "<redacted>", icv: 128}
      esn: true
      replay_window: 0
      sel: null
      offload: {type: packet, dev: p0}
    - src: 192.168.100.2
      dst: 192.168.100.1
      spi: "0x00001001"
      reqid: "0x51c00002"
      mode: transport
      direction: in
      aead: {name: "rfc4106(gcm(aes))", key: "<redacted>", icv: 128}
      esn: true
      replay_window: 64
      sel: null
      offload: {type: packet, dev: p0}
offload:
  description:
    - One entry per listed SA (not for O(state=deleted)), what offload was requested and what is in
      effect (after the run; in check mode, now).
  returned: when a host was read
  type: list
  elements: dict
  sample:
    - {sa: "SA src 192.168.100.1 dst 192.168.100.2 spi 0x00001000", requested: packet, dev: p0,
       in_effect: packet, in_effect_dev: p0}
features:
  description: What C(ip) and the kernel support (probed or given), see O(features).
  returned: when a host was read, and with O(state=rendered)
  type: dict
  sample: {offload_packet: true, sa_dir: true, iproute2_sa_dir: true, kernel: "6.12"}
gathered:
  description: The owned SAs on the host (keys redacted).
  returned: O(state=gathered)
  type: list
  elements: dict
  sample:
    - src: 192.168.100.2
      dst: 192.168.100.1
      spi: "0x00001001"
      reqid: "0x51c00002"
      mode: transport
      direction: in
      aead: {name: "rfc4106(gcm(aes))", key: "<redacted>", icv: 128}
      esn: true
      replay_window: 64
      sel: null
      offload: {type: packet, dev: p0}
rendered:
  description: The batch lines that would add the listed SAs.
  returned: O(state=rendered)
  type: list
  elements: str
  sample:
    - >-
      xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00001000 reqid 0x51c00001
      mode transport replay-window 0 flag esn aead rfc4106(gcm(aes)) <redacted> 128
      offload packet dev p0 dir out
failed_object:
  description: The SA whose batch line failed or whose check after the change failed.
  returned: failure while applying
  type: str
  sample: SA src 192.168.100.2 dst 192.168.100.1 spi 0x00001001
kernel_message:
  description: What C(ip) / the kernel said (key material removed).
  returned: failure while applying
  type: str
  sample: "Error: Requested AEAD algorithm not found."
rolled_back:
  description: Whether the rollback restored every object this run had touched.
  returned: failure while applying
  type: bool
  sample: true
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run


class StateModule(_xfrm_run.LeanConfig, AnsibleModule):
    """AnsibleModule with `config`'s sub-options applied by _argspec (see _xfrm_run.LeanConfig)."""


class StateSpec(_xfrm_run.Spec):
    which = "state"
    kind = X.SAKind()
    label = "sa"

    def validate(self, field, item, state, rng):
        return X.validate_sa(field, item, state, rng)

    def complete(self, d, current):
        return X.check_sa(X.complete_sa(d, current))

    def check(self, desired, current, features):
        if desired and desired[0].get("aead") is not None:
            X.check_key_reuse(desired, current, self.kind)


def argument_spec():
    return dict(
        config=dict(type="list", elements="dict", options=X.sa_options()),
        state=dict(type="str", default="merged",
                   choices=["merged", "replaced", "overridden", "deleted", "gathered", "rendered"]),
        namespace=dict(type="str"),
        owned_reqid_range=dict(type="list", elements="raw"),
        reveal_keys=dict(type="bool", default=False, no_log=False),
        output=dict(type="str", choices=["full", "summary"], default="full"),
        features=dict(type="dict", options=dict(
            offload_packet=dict(type="bool"),
            sa_dir=dict(type="bool"),
        )),
    )


def main():
    with _xfrm_run.collector_paused():
        spec, StateModule.config_options = _argspec.lean(dict(argument_spec(), **_lock.ARGSPEC))
        module = StateModule(argument_spec=spec, supports_check_mode=True)
        module.apply_config()
        with _lock.host_lock(module):
            _xfrm_run.run(module, StateSpec(), module.params)


if __name__ == "__main__":
    main()
