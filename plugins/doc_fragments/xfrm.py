# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # Options and rules shared by xfrm_offload_state and xfrm_offload_policy.
    DOCUMENTATION = r'''
options:
  state:
    description:
      - C(merged) makes the listed objects exist as given; options left out keep the value the object
        already has (or take their default when it is created).
      - C(replaced) makes the listed objects exist exactly as given (options left out take their defaults).
      - C(overridden) is C(replaced) plus the deletion of every B(owned) object that is not listed. An
        empty O(config) is refused (use C(deleted) to remove everything this collection owns).
      - C(deleted) deletes the listed objects (only their identity is needed), or every owned object
        when O(config) is empty.
      - C(gathered) changes nothing and returns the owned objects in RV(gathered).
      - C(rendered) needs no host access. It returns the batch lines for the listed objects in
        RV(rendered), keys masked.
    type: str
    choices: [merged, replaced, overridden, deleted, gathered, rendered]
    default: merged
  owned_reqid_range:
    description:
      - The reqid range that marks objects as owned by this collection, as C([first, last]); integers
        or C(0x) strings.
      - When left out, C([0x51c00000, 0x51c0ffff]) (the constant C(OWNED_REQID_RANGE) in
        C(module_utils/_xfrm.py); the pair-derivation plugin allocates reqids inside it).
      - An SA is owned when its reqid lies in the range; a policy when it has a template and every
        template's reqid lies in the range. Only owned objects are ever replaced or deleted, by any state.
        Listed objects whose reqid is outside the range are refused, so everything this collection
        creates can be recognised later.
    type: list
    elements: raw
  features:
    description:
      - What the host's C(ip) and kernel support. Each item left out (or null) is probed with
        C(ip xfrm state help) and the kernel release; give a value to override the probe (for example
        on a distribution kernel with backports). With O(state=rendered) nothing is probed and both
        default to V(true).
    type: dict
    suboptions:
      offload_packet:
        description:
          - C(ip) knows C(offload packet) (iproute2 >= 6.2). Without it, packet offload is refused before
            anything changes, and crypto offload is written in the old form C(offload dev DEV dir DIR).
        type: bool
      sa_dir:
        description:
          - The SA direction attribute is in effect - iproute2 >= 6.11 sends it (C(dir in|out), also
            implied by C(offload ... dir)) and kernel >= 6.10 honours it. Decides the replay window of
            outbound SAs (see the C(replay_window) option of M(ipsec_offload.mlx5.xfrm_offload_state)).
        type: bool
  output:
    description:
      - C(full) returns RV(before), RV(after) and one RV(offload) entry per listed object.
      - C(summary) leaves out RV(before) and RV(after) and lists in RV(offload) only objects whose
        offload in effect is not the one requested. The result's C(invocation) (the echo of the
        module arguments, shown at C(-vvv)) gives O(config) as its length, for example
        C(<20000 objects>), not the list. Use it for thousands of objects - Ansible scans every
        string of a result for C(no_log) values and encodes it, and the controller decodes and
        keeps it, so big results cost time.
    type: str
    choices: [full, summary]
    default: full
notes:
  - All changes of one run go to a single C(ip -batch -) on standard input. C(ip xfrm) stops at the
    first command the kernel refuses; the module then reads the objects back, works out which lines
    took effect, undoes them in reverse order, reads again to confirm the host is as it was, and fails
    naming the object of the failing line with the kernel's message (and a hint when the message is
    known).
  - After a successful batch the objects are read back and every requested offload is checked; a
    missing one fails the run and rolls it back.
  - Never flushes anything; objects this collection does not own are left alone.
'''
