#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the work is done by the action plugin of the same name, on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: ipsec_run_lock
short_description: One playbook run at a time per IPsec key store (controller side)
version_added: 0.1.0
description:
  - Runs on the controller only (action plugin); no managed host is contacted.
  - The SA lifecycle of C(site.yml) reads the hosts' SAs, compares them with the key store, then
    installs. A second run against the same key store could interleave with those steps - for
    example remove or rotate an SA that the first run read before and then installs again with the
    key it derived, so one key would serve two SA instances. C(derive.yml) therefore takes this lock
    for the whole run (C(site.yml), C(rekey.yml), C(teardown.yml), C(render.yml)); a second run waits
    for it, up to O(timeout) seconds, then fails naming the holder.
  - The lock is the file C(.<key store name>.run) beside the key store, naming the holder (the PID of
    the C(ansible-playbook) process, its start time, the controller's host name). A holder that no
    longer runs (killed, crashed, ended before releasing) is detected and its lock taken over; a
    holder on another controller (a shared key store directory) is never taken over.
  - Released at the end of each playbook; a run that stops early leaves the file, which the next run
    sees as stale.
  - Check mode changes nothing on the hosts, so C(derive.yml) does not take the lock in check mode.
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
options:
  path:
    description:
      - The key store file (C(ipsec_keystore_path)), absolute or starting with C(~/). Empty - every
        key from the inventory, no key store - skips the task (nothing shared to protect).
    type: str
  state:
    description: Take the lock (waiting for another run) or give it back (only if this run holds it).
    type: str
    choices: [acquired, released]
    default: acquired
  timeout:
    description: Seconds to wait for another run to finish before failing.
    type: int
    default: 900
  what:
    description: A label for the holder shown to a waiting run (for example the playbook's name).
    type: str
attributes:
  check_mode:
    description: Runs in check mode as well (the playbooks skip it there).
    support: full
  diff_mode:
    description: No diff.
    support: none
"""

EXAMPLES = r"""
- name: This run holds the key store
  ipsec_offload.mlx5.ipsec_run_lock:
    path: "{{ ipsec_keystore_path }}"
    what: site.yml
"""

RETURN = r"""
lock:
  description: The lock file.
  returned: unless skipped
  type: str
  sample: /home/ops/.ansible/ipsec_offload_mlx5/.keystore.yml.run
waited:
  description: Seconds spent waiting for another run.
  returned: when acquired
  type: float
  sample: 0.0
released:
  description: Whether this run held the lock and removed it (never reported as a change).
  returned: with O(state=released)
  type: bool
  sample: true
stale:
  description: The holder of a stale lock that was taken over (a run that no longer runs), or null.
  returned: when acquired
  type: str
  sample: "PID 41822 on ctl1 (teardown.yml (4 hosts), since 2026-12-05 09:14:02 UTC)"
"""
