#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the work is done by the action plugin of the same name, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: ipsec_keystore
short_description: Keep the IPsec key store on the controller (keys per direction, pinned SPI/reqid)
version_added: 0.1.0
description:
  - Runs on the controller only (action plugin); no managed host is contacted.
  - For every directed pair given in O(pairs) (the secret-free result of the
    P(ipsec_offload.mlx5.ipsec_pairs#filter) filter with C(keys='none')), makes sure the key store holds
    an AES-GCM key||salt generated with Python's C(secrets) (unless the inventory gives the key), and
    records (pins) the SPI and reqid allocated to the pair so that later inventory changes never
    renumber it.
  - Allocation is redone here with the pins already in the store, so a new pair that collides with an
    existing one moves, never the existing one.
  - The file is JSON under a comment header (one pair entry per line; YAML tools read it too, and stores
    written as YAML by earlier versions are read), created mode 0600 atomically (temporary file + rename)
    in a directory created 0700, under an exclusive lock. If it is ansible-vault encrypted it is decrypted with the run's vault
    secrets and written back encrypted with the same vault id.
  - Existing keys are never changed or removed here except by a rotation (O(rotate)); entries of
    pairs no longer in the inventory are kept and listed in RV(unused). A stored key whose size no
    longer matches C(ipsec_key_bits) is an error (delete the entry to generate a new key).
  - The result never contains key material, so the task does not need C(no_log).
  - Key rotation (used by C(playbooks/rekey.yml)) - O(rotate) starts a new generation for the chosen
    directed pairs - a new key and a new SPI (never one in use towards the same destination, current
    or previous), the same reqid - and keeps the previous generation in the entry until the rotation
    is finished. Re-running it for a pair already in rotation changes nothing (no third key).
    O(rotation_stage) then moves every rotation in progress forward, one stage at a time -
    C(inbound) (new inbound SAs being installed) -> C(outbound) -> C(retire) -> C(finished), which drops
    the previous generation. While a rotation is unfinished the P(ipsec_offload.mlx5.ipsec_pairs#filter)
    filter emits the SAs of both generations that the stage allows, so C(site.yml) keeps them.
options:
  path:
    description: Key store file on the controller. C(~) is expanded; relative paths are relative to the playbook directory.
    type: path
    required: true
  pairs:
    description:
      - The result of the P(ipsec_offload.mlx5.ipsec_pairs#filter) filter applied to C(hostvars) with
        C(groups=groups) and C(keys='none') (a dict with C(pairs) and C(reqid_range)), or its C(pairs) list
        (see EXAMPLES), or the filter's packed form (C(packed=true) - C(packed) and C(reqid_range)).
      - A result that holds C(hosts) (SA objects, possibly with keys) is refused.
    type: raw
    required: true
  reqid_range:
    description: C([lo, hi]) reqid range; default the C(reqid_range) of O(pairs), else C([0x51c00000, 0x51c0ffff]).
    type: list
    elements: raw
  rotate:
    description:
      - Start (or continue) a key rotation for these directed pairs - each item C(a->b) (one direction),
        C(a<->b) (both directions) or a host name (every direction to and from it); the string C(all)
        selects every pair. A selector that matches no pair is an error.
      - Pairs whose key or SPI is hand-given in C(ipsec_overrides) cannot be rotated here.
      - Mutually exclusive with O(rotation_stage).
    type: raw
  rotation_stage:
    description:
      - Move every rotation in progress to this stage. A rotation already there or further is left
        alone; skipping a stage is refused (allowed in check mode, where the stages before were
        only reported). C(finished) drops the previous generation.
      - Mutually exclusive with O(rotate).
    type: str
    choices: [outbound, retire, finished]
attributes:
  check_mode:
    support: full
    description: Reports what would be created or pinned; writes nothing.
  diff_mode:
    support: full
    description: Lists the entries before and after, keys shown as C(<redacted>).
  platform:
    support: full
    platforms: posix
    description: Runs on the controller.
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Create missing keys and pin SPI/reqid allocations
  ipsec_offload.mlx5.ipsec_keystore:
    path: "{{ ipsec_keystore_path }}"
    pairs: "{{ hostvars | ipsec_offload.mlx5.ipsec_pairs(groups=groups, keys='none') }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: Absolute path of the key store.
  returned: always
  type: str
  sample: /home/ops/.ansible/ipsec_offload_mlx5/keystore.yml
encrypted:
  description: Whether the key store is ansible-vault encrypted.
  returned: always
  type: bool
  sample: true
created:
  description: Directed pairs (C(a->b)) that got a new key.
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw3", "gw3->gw1"]
pinned:
  description: Directed pairs whose SPI/reqid were recorded for the first time.
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw3", "gw3->gw1"]
repinned:
  description: Directed pairs whose recorded SPI/reqid changed (hand-given override, or reqid range change).
  returned: always
  type: list
  elements: str
  sample: ["gw2->gw3"]
unused:
  description: Entries in the store for pairs that are no longer in the inventory (kept).
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw9", "gw9->gw1"]
pairs:
  description: Number of directed pairs handled.
  returned: always
  type: int
  sample: 6
rotation_started:
  description: Directed pairs that got a new generation (new key and SPI) in this run.
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw2", "gw2->gw1"]
rotation_continuing:
  description: Chosen pairs that were already in rotation (left as they are).
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw2"]
rotation_advanced:
  description: Rotations moved to O(rotation_stage).
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw2", "gw2->gw1"]
rotation_finished:
  description: Rotations finished in this run (previous generation dropped).
  returned: always
  type: list
  elements: str
  sample: ["gw1->gw2", "gw2->gw1"]
rotations:
  description: "Rotations in progress after this run, as a mapping C(a->b) to its stage."
  returned: always
  type: dict
  sample: {"gw1->gw2": outbound, "gw2->gw1": outbound}
"""
