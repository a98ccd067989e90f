# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ipsec_ike
short_description: IKE backends (strongSwan, libreswan) - connections, config text, status parsing
version_added: 0.1.0
description:
  - Applied to O(_input) (the derivation, a connection or a tool's text) with the positional O(host) and
    keyword options; O(what) chooses the operation (see EXAMPLES).
  - C(connections) - this host's IKE connections from the pair derivation (the host's own slice
    C(ipsec_host) that C(playbooks/derive.yml) hands it, or the nested C(ipsec_pairs) filter result with
    keys), one per peer, named C(ipsec_offload_mlx5-<a>-<b>), with one
    CHILD_SA per traffic-selector pair of the derived policies and a per-pair PSK (HMAC-SHA256 of the
    pair's two ESP keys, or C(ipsec_overrides[peer].psk)). Carries the PSK - use with no_log.
  - C(public) - the same without the PSK; C(redact) - a list of connections (O(_input)) without their PSK.
  - C(libreswan_children) - a list of connections (O(_input)) as libreswan runs them - CHILD_SAs that differ
    only in their ports merged into one with any port (one CHILD_SA per address and protocol pair).
  - C(swanctl), C(swanctl_secrets), C(libreswan), C(libreswan_secrets) - the text of the files the
    collection owns for one connection (O(_input) is then a connection, not the derivation).
  - C(swanctl_sas), C(trafficstatus), C(showstates) - parse C(swanctl --list-sas) / C(ipsec trafficstatus) /
    C(ipsec whack --showstates) text
    (O(_input) is the text); C(showstates) gives the newest CHILD_SA state per connection,
    C(showstates_all) every CHILD_SA state that lists its SPIs, by serial.
  - C(whack_status) - the collection's conns named in C(ipsec whack --status) text (with libreswan, the loaded
    ones), sorted; C(swanctl_conns) - the connections C(swanctl --list-conns) lists as loaded.
  - C(xfrm_states), C(xfrm_policies) - the kernel's side, read with the collection's own C(ip xfrm)
    parser from C(ip xfrm state list nokeys) / C(ip xfrm policy list) text (O(_input)) - every SA as
    ipsec_offload_info returns it in C(xfrm_states) (identifiers such as C(spi) as C(0x%08x), offload
    facts, counters); every policy as C(src), C(dst), C(dir), C(action), C(reqids). Never a key.
  - C(support) - O(_input) is the backend's version text; whether it can do O(offload).
positional: _input, host
options:
  _input:
    description: The derivation, a connection, or a tool's text, depending on O(what).
    type: raw
    required: true
  host:
    description: The inventory host (for O(what=connections)/O(what=public)); the backend name for O(what=support).
    type: str
  what:
    description: The operation.
    type: str
    choices: [connections, public, redact, libreswan_children, swanctl, swanctl_secrets, libreswan, libreswan_secrets,
              swanctl_sas, swanctl_conns, trafficstatus, showstates, showstates_all, whack_status, xfrm_states,
              xfrm_policies, support]
    default: connections
  overrides:
    description: The host's C(ipsec_overrides) (per peer C(psk)).
    type: dict
  offload:
    description: The requested offload for O(what=support).
    type: str
    choices: [none, crypto, packet]
    default: none
"""

EXAMPLES = r"""
- name: This host's IKE connections (PSK inside)
  ansible.builtin.set_fact:
    ike_conns: "{{ ipsec_host | ipsec_offload.mlx5.ipsec_ike(inventory_hostname) }}"
  no_log: true

- name: Parse swanctl --list-sas
  ansible.builtin.debug:
    msg: "{{ sas.stdout | ipsec_offload.mlx5.ipsec_ike(what='swanctl_sas') }}"
"""

RETURN = r"""
_value:
  description: A list of connections, a config file's text, a list of parsed SAs, or the support dict.
  type: raw
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_text
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _ike


def _xfrm_policies(text):
    return [{"src": sp["src"], "dst": sp["dst"], "dir": sp["dir"], "action": sp["action"],
             "reqids": [t["reqid"] for t in sp["tmpls"]]} for sp in _xfrm_text.parse_policies(text or "")]


def ipsec_ike(data, host=None, what="connections", overrides=None, offload="none"):
    try:
        if what == "connections":
            return _ike.connections(data, host, overrides)
        if what == "public":
            return _ike.public(_ike.connections(data, host, overrides))
        if what == "libreswan_children":
            return _ike.libreswan_children(data)
        if what == "redact":
            return _ike.public(data)
        if what in ("swanctl", "swanctl_secrets", "libreswan", "libreswan_secrets"):
            return getattr(_ike, "render_" + what)(data)
        if what == "swanctl_sas":
            return _ike.parse_swanctl_sas(data)
        if what == "showstates":
            return _ike.parse_showstates(data)
        if what == "swanctl_conns":
            return _ike.parse_swanctl_conns(data)
        if what == "whack_status":
            return _ike.parse_whack_status(data)
        if what == "showstates_all":
            return _ike.parse_showstates(data, newest=False)
        if what == "xfrm_states":
            return _xfrm_text.parse_xfrm_sa_counters(data)
        if what == "xfrm_policies":
            return _xfrm_policies(data)
        if what == "trafficstatus":
            return _ike.parse_trafficstatus(data)
        if what == "support":
            return _ike.backend_support(host, data, offload)
    except _ike.IkeError as e:
        raise AnsibleFilterError("ipsec_ike: %s" % e) from None
    except (KeyError, TypeError, ValueError) as e:
        # never echo the input: it may hold a PSK
        raise AnsibleFilterError("ipsec_ike(%s): malformed input (%s)" % (what, type(e).__name__)) from None
    raise AnsibleFilterError("ipsec_ike: what=%r is not one of connections, public, redact, libreswan_children, swanctl, swanctl_secrets, "
                             "libreswan, libreswan_secrets, swanctl_sas, swanctl_conns, trafficstatus, showstates, showstates_all, "
                             "whack_status, xfrm_states, xfrm_policies, support" % (what,))


class FilterModule:
    def filters(self):
        return {"ipsec_ike": ipsec_ike}
