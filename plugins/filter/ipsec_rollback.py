# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ipsec_rollback
short_description: What undoes one run of the ipsec role on a host (site-level rollback)
version_added: 0.1.0
description:
  - Takes the registered results of the ipsec role's two steps in THIS run (the
    M(ipsec_offload.mlx5.xfrm_offload_state) result and the M(ipsec_offload.mlx5.xfrm_offload_policy)
    result, both with O(ipsec_offload.mlx5.xfrm_offload_state#module:output=full)) and returns what
    puts the host's owned SAs and SPs back as they were before that run, for a LATER step of the
    playbook that failed (playbooks/site.yml, topology play).
  - Policies carry no secret, so they are fully restorable - policies the run added are deleted,
    policies it changed or removed are given back as they were (config shape).
  - SAs the run added are deleted (by identity). SAs the run replaced or removed cannot be put back -
    keys are never read back from a host - and are counted in RV(_value.sa_unrestorable).
  - A step that was skipped, failed (the module then undid its own batch) or changed nothing
    contributes nothing. The filter is pure - it reads no host and no key.
positional: _input
options:
  _input:
    description: The registered result of the SA step (C(ipsec_state_result)); C({}) when absent.
    type: dict
    required: true
  policy_result:
    description: The registered result of the SP step (C(ipsec_policy_result)); C({}) when absent.
    type: dict
  heal_result:
    description:
      - The registered result of the SA lifecycle's heal phase in THIS run (playbooks/lifecycle.yml,
        C(ipsec_heal_result)), which adds the inbound SAs of new SA instances before the ipsec role
        runs; C({}) when absent. The SAs it added are deleted too (their keys are recorded as
        installed, so the next run rotates those directions instead of re-adding them).
    type: dict
"""

EXAMPLES = r"""
- name: What this run changed
  ansible.builtin.set_fact:
    plan: "{{ ipsec_state_result | default({}) | ipsec_offload.mlx5.ipsec_rollback(ipsec_policy_result | default({})) }}"
"""

RETURN = r"""
_value:
  description: The rollback plan.
  type: dict
  contains:
    sa_delete:
      description: Identities (src, dst, spi) of the SAs this run added.
      type: list
      elements: dict
    sp_delete:
      description: Identities (src, dst, dir and proto/sport/dport when set) of the policies this run added.
      type: list
      elements: dict
    sp_restore:
      description: The policies this run changed or removed, as they were (config shape, for state merged).
      type: list
      elements: dict
    sp_unrestorable:
      description: Policies this run changed or removed that the config shape cannot express (extra
        templates or attributes); left as the run made them.
      type: list
      elements: str
    sa_unrestorable:
      description: Number of SAs this run replaced or removed (their keys are unknown; not restorable).
      type: int
    applied:
      description: Whether this run changed anything that the plan undoes or reports.
      type: bool
"""

from ansible.errors import AnsibleFilterError

# the mark is part of a policy's identity (guard policies differ from their SA policy only by it)
SP_CONFIG_FIELDS = ("src", "dst", "proto", "sport", "dport", "dir", "mark", "priority", "action", "tmpl", "offload")
SP_ID_FIELDS = ("src", "dst", "proto", "sport", "dport", "dir", "mark")


def _usable(result):
    """The step ran, succeeded and changed something (a failed step undid its own batch)."""
    return bool(isinstance(result, dict) and result.get("changed") and not result.get("failed")
                and not result.get("skipped"))


def _sa_id(sa):
    spi = sa.get("spi")
    spi = ("0x%08x" % spi) if isinstance(spi, int) else str(spi).lower()
    return (sa.get("src"), sa.get("dst"), spi)


def _hashable(v):
    if isinstance(v, dict):    # a mark {value, mask} as the module reports it
        return tuple(sorted((k, str(x)) for k, x in v.items()))
    return v


def _sp_id(sp):
    return tuple(_hashable(sp.get(f)) for f in SP_ID_FIELDS)


def _sp_config(sp):
    return {f: sp[f] for f in SP_CONFIG_FIELDS if sp.get(f) is not None}


def _sp_name(sp):
    return "SP src %s dst %s dir %s" % (sp.get("src"), sp.get("dst"), sp.get("dir"))


def _added_sas(result, step):
    if "before" not in result or "after" not in result:
        raise ValueError("the %s's result has no before/after (run it with output=full)" % step)
    return {_sa_id(s) for s in result["after"]} - {_sa_id(s) for s in result["before"]}


def rollback_plan(state_result, policy_result=None, heal_result=None):
    """Pure: see DOCUMENTATION.  Raises ValueError when a usable result lacks before/after."""
    plan = {"sa_delete": [], "sp_delete": [], "sp_restore": [], "sp_unrestorable": [],
            "sa_unrestorable": 0, "applied": False}
    added = set()
    if _usable(heal_result):
        added |= _added_sas(heal_result, "heal phase")
        plan["applied"] = True
    if _usable(state_result):
        added |= _added_sas(state_result, "SA step")
        before = {_sa_id(s) for s in state_result["before"]}
        after = {_sa_id(s) for s in state_result["after"]}
        counts = state_result.get("counts") or {}
        if "replaced" in counts or "deleted" in counts:
            plan["sa_unrestorable"] = int(counts.get("replaced", 0)) + int(counts.get("deleted", 0))
        else:
            plan["sa_unrestorable"] = len(before - after)
        plan["applied"] = True
    plan["sa_delete"] = [{"src": i[0], "dst": i[1], "spi": i[2]} for i in sorted(added)]
    if _usable(policy_result):
        if "before" not in policy_result or "after" not in policy_result:
            raise ValueError("the SP step's result has no before/after (run it with output=full)")
        before_ids = {_sp_id(p) for p in policy_result["before"]}
        after_cfg = [_sp_config(p) for p in policy_result["after"]]
        for p in sorted(policy_result["after"], key=lambda x: str(_sp_id(x))):
            if _sp_id(p) not in before_ids:
                plan["sp_delete"].append({f: p[f] for f in SP_ID_FIELDS if p.get(f) is not None})
        for p in policy_result["before"]:
            if _sp_config(p) in after_cfg:
                continue  # untouched by the run
            if p.get("extras") or p.get("extra_tmpls"):
                plan["sp_unrestorable"].append(_sp_name(p))
                continue
            plan["sp_restore"].append(_sp_config(p))
        plan["applied"] = True
    return plan


def ipsec_rollback(state_result, policy_result=None, heal_result=None):
    try:
        return rollback_plan(state_result, policy_result, heal_result)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise AnsibleFilterError("ipsec_rollback: %s" % e) from None


class FilterModule:
    def filters(self):
        return {"ipsec_rollback": ipsec_rollback}
