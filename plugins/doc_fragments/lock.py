# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # The per-host lock every state-changing module run takes (plugins/module_utils/_lock.py).
    DOCUMENTATION = r'''
options:
  lock_timeout:
    description:
      - Seconds to wait for the per-host lock C(/run/ipsec_offload_mlx5.lock) that every
        state-changing run of the collection's modules holds while it reads, changes and verifies
        the host, so two playbook runs against one host at once are serialised instead of interleaved.
      - When the lock is still held after this time the module fails, naming the holder's PID,
        and changes nothing. C(0) tries once without waiting.
      - Check mode and the states C(gathered) and C(rendered) take no lock.
      - The lock is released when the module process ends, also when it is killed.
    type: int
    default: 120
'''
