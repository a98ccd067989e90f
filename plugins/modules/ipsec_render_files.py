#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the work is done by the action plugin of the same name, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: ipsec_render_files
short_description: Write every IPsec host's rendered ip xfrm script in one controller-side step
version_added: 0.1.0
description:
  - Runs on the controller only (action plugin); no managed host is contacted. Used by C(playbooks/render.yml)
    after C(playbooks/derive.yml) has created missing keys and pinned SPIs/reqids in the key store.
  - Derives the pairs from the inventory (C(hostvars), C(groups)) and the key store (read once), then, one host
    at a time, builds that host's SAs and SPs only and renders them exactly as M(ipsec_offload.mlx5.xfrm_offload_state)
    and M(ipsec_offload.mlx5.xfrm_offload_policy) with C(state=rendered) do (the same argument spec, validation
    and rendering code), into one POSIX script per host written by the P(ipsec_offload.mlx5.ipsec_render#filter)
    filter's script builder (every batch line one single-quoted printf argument; anything but one printable
    ASCII line refused), plus C(pairs.txt) (no secrets).
  - Files are mode 0600 in a directory made (or set) 0700. They are written to a staging directory first and
    moved into place only when every host rendered, so bad input refuses the run before any file is written.
    Unchanged files are left as they are. In check mode nothing is written.
  - The whole mesh's objects are never held at once (a full mesh of N hosts has N*(N-1) directed SAs).
  - Keys are masked (C(<redacted>)) unless O(reveal_keys=true). The result never contains key material.
  - With C(ipsec_key_derivation=hkdf) the secret is read from the play variable C(ipsec_master_secret), never
    from an option.
options:
  dest:
    description: The render directory.
    type: path
    required: true
  hosts:
    description: Host names to consider (default every inventory host), as for the P(ipsec_offload.mlx5.ipsec_pairs#filter) filter.
    type: list
    elements: str
  keystore:
    description: The key store file (absolute or C(~/)); empty - keys from the inventory only.
    type: str
  key_derivation:
    description: C(keystore) or C(hkdf), as C(ipsec_key_derivation).
    type: str
    choices: [keystore, hkdf]
    default: keystore
  reveal_keys:
    description: Put the real keys in the files.
    type: bool
    default: false
  workers:
    description:
      - Processes that render (forked on the controller; each writes its hosts' staged files). C(auto) - the
        controller's CPUs, at most 4. Fewer than 16 hosts are rendered in one process.
    type: raw
    default: auto
  features:
    description: What the target's ip/kernel support, passed on as the xfrm modules' O(ipsec_offload.mlx5.xfrm_offload_state#module:features).
    type: dict
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Render every host's file (after import_playbook derive.yml)
  ipsec_offload.mlx5.ipsec_render_files:
    dest: /tmp/ipsec-rendered
    hosts: "{{ ipsec_target_hosts }}"
    keystore: "{{ ipsec_keystore_path }}"
"""

RETURN = r"""
dest:
  description: The render directory.
  returned: always
  type: str
files:
  description: The files written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
host_names:
  description: The hosts that got a file.
  returned: always
  type: list
  elements: str
pairs:
  description: Number of directed pairs.
  returned: always
  type: int
reveal_keys:
  description: Whether the keys are in the files.
  returned: always
  type: bool
"""
