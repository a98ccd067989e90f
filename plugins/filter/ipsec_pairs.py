# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ipsec_pairs
short_description: Derive mirrored IPsec SAs and SPs for every host from the inventory
version_added: 0.1.0
description:
  - Reads the C(ipsec_*) variables of the inventory hosts, finds every pair (from C(ipsec_peers) lists
    and C(ipsec_meshes) groups) and returns, for each host, the list of SAs for
    M(ipsec_offload.mlx5.xfrm_offload_state) and of SPs for M(ipsec_offload.mlx5.xfrm_offload_policy).
  - Every directed pair A->B gets one SA that A installs with C(direction=out) and B with C(direction=in),
    with the same addresses, SPI, reqid, mode and key. Each direction has its own key.
  - SPIs are unique per destination host, reqids unique on each host and taken from the owned range
    (default C(0x51c00000..0x51c0ffff), C(ipsec_owned_reqid_range)). Both are derived from the host names
    (sha256, deterministic probing on collision), so the same inventory gives the same numbers and
    adding a host does not renumber existing pairs; pins recorded in the key store and hand-given
    C(ipsec_overrides) take precedence.
  - Keys come from C(ipsec_overrides[peer].key) (e.g. vault variables) or from the key store (see
    M(ipsec_offload.mlx5.ipsec_keystore)). A key shared by two directions or pairs is refused.
  - A key rotation recorded in the key store (new generation - new key and SPI, same reqid, previous
    kept until finished) adds the previous generation's SAs as its stage allows (see RV(_value.hosts)).
  - Every problem (missing or one-sided peer, unknown host, duplicate address, colliding hand-given
    SPI/reqid, missing device, ...) fails the filter before any host is touched, naming the host and
    the variable. Error messages never contain key material.
  - Per-host variables read - C(ipsec_local_ip) (required), C(ipsec_peers), C(ipsec_meshes), C(ipsec_dev),
    C(ipsec_offload) (packet|crypto|none, default packet), C(ipsec_mode) (transport|tunnel),
    C(ipsec_selectors) (list of proto/sport/dport), C(ipsec_networks) (tunnel mode), C(ipsec_fwd_policy),
    C(ipsec_key_bits) (128|256, default 256), C(ipsec_policy_priority), C(ipsec_namespace),
    C(ipsec_owned_reqid_range), C(ipsec_overrides) (per peer spi/reqid/key for the SA this host -> peer).
positional: _input
options:
  _input:
    description: Ansible's C(hostvars) (or any mapping host name -> variables).
    type: dict
    required: true
  groups:
    description: Ansible's C(groups); needed when C(ipsec_meshes) names groups.
    type: dict
  hosts:
    description: Host names to consider (default every host in O(_input)).
    type: list
    elements: str
  meshes:
    description: Group names that form full meshes, in addition to the hosts' C(ipsec_meshes).
    type: list
    elements: str
  reqid_range:
    description: C([lo, hi]) range to allocate reqids from; overrides C(ipsec_owned_reqid_range).
    type: list
    elements: raw
  keystore:
    description: The key store as the P(ipsec_offload.mlx5.ipsec_keystore#lookup) lookup returns it.
    type: dict
  key_derivation:
    description:
      - C(keystore) - keys come from the key store (or C(ipsec_overrides)).
      - C(hkdf) - every key is HKDF-SHA256(O(master_secret), salt = the key store entry's random nonce,
        sender, receiver, SPI, generation); the key store then holds no key (SPIs, reqids, generations,
        nonces). A store made again has new nonces, so it never derives a key an earlier store gave.
        Hand-given keys are refused.
    type: str
    choices: [keystore, hkdf]
    default: keystore
  master_secret:
    description: The one secret of O(key_derivation=hkdf) (at least 32 bytes; keep it in ansible-vault).
    type: str
  lifecycle:
    description:
      - The C(lifecycle) result of the M(ipsec_offload.mlx5.ipsec_keystore) action run with C(present)
        (site.yml) - directions held because their SA was lost while a peer was out of reach (each end
        keeps only what it still has), directions installed for the first time (RV(_value.heal)), and in
        check mode the planned new generations (shown with throw-away keys).
    type: dict
  keys:
    description:
      - C(required) - every SA must get a key (from the inventory or the key store).
      - C(optional) - SAs without a key get C(aead.key=null).
      - C(none) - no keys and no C(hosts) in the result; the secret-free allocation for the
        M(ipsec_offload.mlx5.ipsec_keystore) action.
    type: str
    choices: [required, optional, none]
    default: required
  packed:
    description:
      - With O(keys=none) - the allocation in a compact form for the M(ipsec_offload.mlx5.ipsec_keystore) action,
        C(reqid_range), C(count) (directed pairs), C(host_names) and C(packed) (one JSON text of the pairs)
        instead of the C(pairs) list. C(playbooks/derive.yml) keeps its allocation so - a full mesh of 300 hosts
        has 89,700 directed pairs, which Ansible is slow to store and pass on as a list of mappings.
    type: bool
    default: false
  slices:
    description:
      - With O(keys=required) - every host's part as one JSON text (C(hosts[h]), parse it with C(from_json))
        instead of nested mappings, plus what the playbooks need on the controller - C(reqid_range),
        C(host_names), C(count), C(rotations), C(rotating) (the C(pairs) entries of unfinished rotations)
        and C(pair_ends) (JSON text, pair name to C([src_host, dst_host])). No C(pairs), C(rekey) or C(heal)
        at the top - each host's text holds its own C(pairs), C(rekey) and C(heal) beside C(namespace),
        C(peers), C(states), C(policies) and C(guards).
      - C(playbooks/derive.yml) derives so and hands each host its own slice (the fact C(ipsec_host)) -
        Ansible is slow to store and pass on N*(N-1) nested mappings (the derivation task of a full mesh of
        200 hosts took 52 s with them, 6 s with the texts; docs/mesh-scale.md).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Derive every host's SAs and SPs (keys from vault variables in ipsec_overrides)
  ansible.builtin.set_fact:
    ipsec_derived: "{{ hostvars | ipsec_offload.mlx5.ipsec_pairs(groups=groups) }}"
  no_log: true

- name: Install this host's SAs
  ipsec_offload.mlx5.xfrm_offload_state:
    config: "{{ hostvars['localhost'].ipsec_derived.hosts[inventory_hostname].states }}"
  no_log: true

- name: Show the allocation (no secrets in it)
  ansible.builtin.debug:
    msg: "{{ (hostvars | ipsec_offload.mlx5.ipsec_pairs(groups=groups, keys='none')).pairs }}"
"""

RETURN = r"""
_value:
  description: The derivation.
  type: dict
  contains:
    reqid_range:
      description: The C([lo, hi]) reqid range used.
      type: list
      elements: int
    pairs:
      description: One secret-free entry per directed pair, sorted by name.
      type: list
      elements: dict
      contains:
        name: {description: "C(src_host->dst_host)", type: str}
        src_host: {description: Sending host, type: str}
        dst_host: {description: Receiving host, type: str}
        src: {description: Tunnel address of the sender, type: str}
        dst: {description: Tunnel address of the receiver, type: str}
        spi: {description: SPI, type: int}
        spi_hex: {description: SPI as C(0x%08x), type: str}
        spi_source: {description: "Where the SPI came from: override, pinned, hash or probed", type: str}
        reqid: {description: reqid, type: int}
        reqid_hex: {description: reqid as C(0x%08x), type: str}
        reqid_source: {description: "Where the reqid came from: override, pinned, hash or probed", type: str}
        key_bits: {description: AES key size, type: int}
        key_source: {description: "Where the key comes from: inventory, keystore or missing", type: str}
        mode: {description: transport or tunnel, type: str}
        generation: {description: "Key generation in use (1 until the first rotation; known when derived with the key store)", type: int}
        rotation: {description: "Stage of an unfinished key rotation (inbound, outbound, retire), else null", type: str}
        previous_spi_hex: {description: "SPI of the previous generation while a rotation is unfinished, else null", type: str}
    host_names:
      description: The hosts that take part (sorted).
      type: list
      elements: str
    hosts:
      description:
        - Per host - C(namespace), C(peers) (hosts it sends to), C(states) (SA objects, keys included)
          and C(policies) (SP objects). Absent with O(keys=none).
        - With O(slices=true) each value is one JSON text of that host's part, which also holds its
          C(guards), C(pairs), C(rekey) and C(heal) (see O(slices)).
        - During an unfinished key rotation C(states) holds the SAs of both generations that the stage
          allows (same reqid, so the policies do not change) - stage C(inbound) - old SAs plus the new
          inbound SA; C(outbound) - old and new both ways; C(retire) - new both ways plus the old
          inbound SA. See C(playbooks/rekey.yml).
      type: dict
    rekey:
      description:
        - Per host, the steps of C(playbooks/rekey.yml) for the pairs in rotation (whatever their stage)
          - C(add_in) and C(add_out) (new SAs, keys included), C(del_out) and C(del_in) (identities
          C(src), C(dst), C(spi) of the previous generation). Empty lists outside a rotation. Absent
          with O(keys=none).
      type: dict
    rotations:
      description: C(a->b) to stage for every unfinished rotation. Absent with O(keys=none).
      type: dict
    heal:
      description:
        - Per host, C(add_in) - the inbound SAs of the directions that get a new SA instance in this run
          (new pairs, directions rotated after a lost SA), which site.yml adds on the receivers before any
          sender adds its outbound SA. Absent with O(keys=none).
      type: dict
    count:
      description: With O(slices=true) - the number of directed pairs.
      type: int
    rotating:
      description: With O(slices=true) - the C(pairs) entries of the unfinished rotations (no secrets).
      type: list
      elements: dict
    pair_ends:
      description: With O(slices=true) - a JSON text mapping each pair name C(a->b) to C([a, b]).
      type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs


def ipsec_pairs(hostvars, groups=None, hosts=None, meshes=None, reqid_range=None, keystore=None, keys="required",
                key_derivation="keystore", master_secret=None, lifecycle=None, packed=False, slices=False):
    with _pairs.no_gc():
        return _ipsec_pairs(hostvars, groups, hosts, meshes, reqid_range, keystore, keys, key_derivation, master_secret,
                            lifecycle, packed, slices)


def _ipsec_pairs(hostvars, groups, hosts, meshes, reqid_range, keystore, keys, key_derivation, master_secret,
                 lifecycle, packed, slices):
    try:
        if packed:
            if keys != "none":
                raise _pairs.DeriveError(["packed=true: only with keys='none' (the secret-free allocation)"])
            specs, links, rrange = _pairs.derive_links(
                hostvars, hosts=hosts, groups=groups, meshes=meshes, reqid_range=reqid_range,
                store=_pairs.parse_store(keystore) if keystore is not None else None, keys="none")
            return {"reqid_range": list(rrange), "count": len(links), "host_names": sorted(specs),
                    "packed": _pairs.pack_links(specs, links)}
        if key_derivation not in _pairs.KEY_DERIVATIONS:
            raise _pairs.DeriveError(["ipsec_key_derivation: must be one of %s, got %r"
                                      % (", ".join(_pairs.KEY_DERIVATIONS), key_derivation)])
        if key_derivation == "hkdf" and keys != "none" and master_secret is None:
            raise _pairs.DeriveError(["ipsec_master_secret: ipsec_key_derivation is hkdf, so every key is derived "
                                      "from this secret: set it (from ansible-vault, at least 32 bytes)"])
        store = _pairs.parse_store(keystore) if keystore is not None else None
        if slices:
            if keys != "required":
                raise _pairs.DeriveError(["slices=true: only with keys='required' (each host's SAs with their keys)"])
            return _pairs.derive_slices(hostvars, hosts=hosts, groups=groups, meshes=meshes, reqid_range=reqid_range,
                                        store=store, master_secret=master_secret if key_derivation == "hkdf" else None,
                                        lifecycle=lifecycle)
        r = _pairs.derive(hostvars, hosts=hosts, groups=groups, meshes=meshes,
                          reqid_range=reqid_range, store=store, keys=keys,
                          master_secret=master_secret if key_derivation == "hkdf" and keys != "none" else None,
                          lifecycle=lifecycle)
        r["host_names"] = _host_names(r["pairs"])
        return r
    except _pairs.DeriveError as e:
        raise AnsibleFilterError("ipsec_pairs: %s" % e) from None


def _host_names(pairs):
    return sorted({p["src_host"] for p in pairs} | {p["dst_host"] for p in pairs})


class FilterModule:
    def filters(self):
        return {"ipsec_pairs": ipsec_pairs}
