# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # Options every netdev-level module of the collection shares.
    DOCUMENTATION = r'''
options:
  namespace:
    description:
      - Network namespace to act in (for example the namespace a VF was moved into).
      - C(ip) and C(tc) get C(-n NAMESPACE); other tools run under C(ip netns exec NAMESPACE).
      - Omit to act in the namespace Ansible runs in.
    type: str
requirements:
  - Linux with iproute2 (C(ip), C(tc)) on the managed host; the Python standard library only.
notes:
  - Commands run as argument lists with C(LC_ALL=C); key material is only ever passed on standard
    input (C(ip -batch -)), never on a command line.
'''
