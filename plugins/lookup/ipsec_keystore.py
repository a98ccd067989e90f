# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ipsec_keystore
short_description: Read the IPsec key store (plain or ansible-vault encrypted) on the controller
version_added: 0.1.0
description:
  - Reads the key store that the M(ipsec_offload.mlx5.ipsec_keystore) action maintains and returns
    its content, decrypting it with the run's vault secrets if the file is ansible-vault encrypted.
  - The result holds key material. Use it only as the O(ipsec_offload.mlx5.ipsec_pairs#filter:keystore)
    argument of the P(ipsec_offload.mlx5.ipsec_pairs#filter) filter, in a task with C(no_log=true).
  - A missing file gives an empty store (the filter then says which keys are missing).
  - Warns if the file or its directory can be read by group or others.
options:
  _terms:
    description: Path of the key store file (C(~) is expanded; relative paths are relative to the playbook directory).
    required: true
    type: list
    elements: path
"""

EXAMPLES = r"""
- name: Derive every host's SAs and SPs with the keys from the key store
  ansible.builtin.set_fact:
    ipsec_derived: >-
      {{ hostvars | ipsec_offload.mlx5.ipsec_pairs(groups=groups,
           keystore=lookup('ipsec_offload.mlx5.ipsec_keystore', ipsec_keystore_path)) }}
  no_log: true
"""

RETURN = r"""
_raw:
  description: The parsed key store document (C(ipsec_offload_keystore) version and C(pairs)), or an empty mapping.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore

display = Display()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        out = []
        for term in terms:
            path = _keystore.resolve(term, self._loader.get_basedir())
            vault = getattr(self._loader, "_vault", None)
            try:
                with _pairs.no_gc():
                    doc, dummy = _keystore.read(path, getattr(vault, "secrets", None) or None)
            except _keystore.KeyStoreError as e:
                raise AnsibleLookupError(str(e)) from None
            for w in _keystore.loose_mode_warnings(path):
                display.warning(w)
            out.append(doc if doc is not None else {})
        return out
