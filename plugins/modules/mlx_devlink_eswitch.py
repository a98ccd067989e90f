#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: mlx_devlink_eswitch
short_description: Eswitch mode, flow steering mode and VF port-function IPsec capabilities of a NIC, in one ordered transaction
version_added: 0.1.0
description:
  - Brings one devlink device (for example C(pci/0000:08:00.0); any bus, also
    C(netdevsim/netdevsim1)) to the eswitch mode, C(flow_steering_mode) and encap mode asked for,
    and sets the C(ipsec_packet)/C(ipsec_crypto) capabilities of the listed VF ports.
  - "Steps run in the order the mlx5 driver needs, each skipped when already true:
    C(flow_steering_mode) first (it can only change in legacy mode; C(dmfs) is needed for packet
    offload in switchdev), then VFs unbound, encap mode, eswitch mode, port functions, VFs rebound."
  - "Preconditions are checked before anything changes: the device and the parameter exist, a
    steering change is not asked for in switchdev mode (unless O(steering_via_legacy)), no IPsec
    state or policy is offloaded to a netdev of this device and no offloaded (in_hw) TC rule
    exists on one when the mode, encap or steering mode must change, port functions name VF ports
    that report the capability, and the first VF capability is not asked for while IPsec objects are
    offloaded to the PF (mlx5 answers that with EBUSY and no message). Each refusal says what to do."
  - If a step fails, the steps already done are undone in reverse order, unbound VFs are bound
    again, and the module fails with the kernel's message and a hint.
  - Changing the eswitch mode destroys and recreates the VF representors (and what was configured
    on them); unbinding a VF removes its netdev until it is bound again.
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.lock
options:
  device:
    description: The devlink handle of the PF, as C(devlink dev) lists it (C(pci/0000:08:00.0), C(netdevsim/netdevsim1)).
    type: str
    required: true
  mode:
    description: Eswitch mode. Omit to keep the current one.
    type: str
    choices: [legacy, switchdev]
  flow_steering_mode:
    description:
      - The mlx5 C(flow_steering_mode) devlink parameter (cmode runtime). Omit to keep it.
      - IPsec packet offload in switchdev mode needs C(dmfs).
      - Refused when the device has no such parameter (upstream netdevsim, non-mlx5 NICs; the lab's
        simulated ConnectX has it).
    type: str
    choices: [dmfs, smfs, hmfs]
  encap_mode:
    description:
      - Eswitch encap mode. Omit to keep it. Refused when the device does not report one (upstream netdevsim).
      - In legacy mode mlx5 only stores it; in switchdev mode it cannot change while IPsec objects are
        offloaded (refused before anything changes), and tunnel-mode packet offload needs C(none).
    type: str
    choices: [none, basic]
  steering_via_legacy:
    description:
      - Allow a O(flow_steering_mode) change while the eswitch is in switchdev mode by going
        through legacy mode (switchdev -> legacy -> set steering -> switchdev).
      - This destroys and recreates every VF representor. Without it such a request is refused.
    type: bool
    default: false
  port_functions:
    description: IPsec capabilities of VF ports. Each entry names a port or a VF.
    type: list
    elements: dict
    default: []
    suboptions:
      port:
        description: Devlink port handle (C(pci/0000:08:00.0/1), C(netdevsim/netdevsim1/128)). Mutually exclusive with O(port_functions[].vf).
        type: str
      vf:
        description: VF number (the port whose flavour is C(pcivf) with this C(vfnum)).
        type: raw
      controller:
        description:
          - With O(port_functions[].vf), the controller number (BlueField; 0 is the local host).
          - Needed only when a VF number is on several controllers.
        type: raw
      ipsec_packet:
        description:
          - Enable or disable IPsec packet (full) offload for this VF. Omit to keep it.
          - V(true) on a port that does not report the capability is refused; V(false) there is
            already true (noted in RV(notes)).
        type: bool
      ipsec_crypto:
        description: Enable or disable IPsec crypto offload for this VF. Omit to keep it. Unsupported as for O(port_functions[].ipsec_packet).
        type: bool
  unbind_vfs:
    description:
      - Unbind the bound VFs of this PF (PCI only) while the eswitch mode or port functions change and
        bind them again afterwards, also after a failure. The mlx5 driver needs a VF unbound to
        change its C(ipsec_packet) capability.
      - "Refused when a VF is bound to another driver than the PF's (for example C(vfio-pci) for a VM):
        unbinding it would block until the VM releases it."
      - Not applicable to netdevsim (its VFs have no PCI address); the result says so. (The lab's
        simulated ConnectX keeps a debugfs list of VFs it treats as bound, see lab/README.md.)
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description:
      - Reports the ordered steps that would run. Port functions of a device that must first change
        to switchdev mode are shown with the VF number, as their ports do not exist yet.
  diff_mode:
    support: full
    description: Before/after text of eswitch mode, encap mode, steering mode and VF port capabilities.
requirements:
  - C(devlink) (iproute2) on the managed host; C(ip) and C(tc) for the busy checks.
notes:
  - Run as root. Only the listed device and ports are changed; nothing is flushed.
  - "Order with the other modules: M(ipsec_offload.mlx5.mlx_sriov) (VF count, while legacy) ->
    this module -> IPsec states/policies -> TC rules (mlx5 refuses the first offloaded IPsec object
    while offloaded TC rules exist)."
'''

EXAMPLES = r'''
- name: mlx5 PF ready for IPsec packet offload on VF 0 (dmfs, switchdev, ipsec_packet)
  ipsec_offload.mlx5.mlx_devlink_eswitch:
    device: pci/0000:08:00.0
    flow_steering_mode: dmfs
    mode: switchdev
    port_functions:
      - vf: 0
        ipsec_packet: true

- name: Lab (the simulated ConnectX on netdevsim, lab/sim) - the same sequence as on mlx5
  ipsec_offload.mlx5.mlx_devlink_eswitch:
    device: netdevsim/netdevsim1
    flow_steering_mode: dmfs
    mode: switchdev
    port_functions:
      - vf: 0
        ipsec_packet: true

- name: Back to legacy
  ipsec_offload.mlx5.mlx_devlink_eswitch:
    device: pci/0000:08:00.0
    mode: legacy
'''

RETURN = r'''
steps:
  description: >-
    What ran (or would run in check mode), in order: devlink commands as argument strings and
    sysfs writes as C(echo VALUE > PATH).
  returned: always
  type: list
  elements: str
  sample:
    - devlink dev param set pci/0000:08:00.0 name flow_steering_mode value dmfs cmode runtime
    - echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/unbind
    - devlink dev eswitch set pci/0000:08:00.0 mode switchdev
    - devlink port function set pci/0000:08:00.0/1 ipsec_packet enable
    - echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/bind
before:
  description: Device state read before any change.
  returned: always
  type: dict
  sample:
    mode: legacy
    encap_mode: basic
    inline_mode: none
    flow_steering_mode: smfs
    ports:
      - {port: pci/0000:08:00.0/65535, flavour: physical, vf: null, netdev: p0, ipsec_packet: null, ipsec_crypto: null}
  contains:
    mode:
      description: Eswitch mode (null when the device reports none).
      type: str
      sample: legacy
    encap_mode:
      description: Encap mode (null when not reported).
      type: str
      sample: basic
    inline_mode:
      description: Inline mode (null when not reported).
      type: str
      sample: none
    flow_steering_mode:
      description: Runtime value of flow_steering_mode (null when the device has no such parameter).
      type: str
      sample: smfs
    ports:
      description: Ports of the device with flavour, VF number, netdev and the two capabilities (true/false, null = not reported).
      type: list
      elements: dict
      sample:
        - {port: pci/0000:08:00.0/65535, flavour: physical, vf: null, netdev: p0, ipsec_packet: null, ipsec_crypto: null}
after:
  description: Device state read after the change (predicted in check mode), same keys as RV(before).
  returned: always
  type: dict
  sample:
    mode: switchdev
    encap_mode: basic
    inline_mode: none
    flow_steering_mode: dmfs
    ports:
      - {port: pci/0000:08:00.0/1, flavour: pcivf, vf: 0, netdev: pf0vf0, ipsec_packet: true, ipsec_crypto: false}
      - {port: pci/0000:08:00.0/2, flavour: pcivf, vf: 1, netdev: pf0vf1, ipsec_packet: false, ipsec_crypto: false}
      - {port: pci/0000:08:00.0/65535, flavour: physical, vf: null, netdev: p0, ipsec_packet: null, ipsec_crypto: null}
vfs_unbound:
  description: PCI addresses of VFs unbound for the change and bound again.
  returned: always
  type: list
  elements: str
  sample: ["0000:08:00.2", "0000:08:00.3"]
notes:
  description: Remarks, for example that VF unbinding does not apply to netdevsim.
  returned: always
  type: list
  elements: str
  sample:
    - >-
      unbind_vfs: not applicable to netdevsim (only PCI VFs have a driver to unbind; netdevsim VFs have no
      PCI address)
rollback:
  description: On failure, the undo steps that ran, each with its outcome.
  returned: failed
  type: list
  elements: str
  sample:
    - "devlink dev param set pci/0000:08:00.0 name flow_steering_mode value smfs cmode runtime: ok"
    - "echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/bind: ok"
    - "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/bind: ok"
'''

import shlex

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _devlink, _lock, _steps, _sysfs, _tc, _validate, _xfrm_text
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._iproute2 import Ip
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError


# a precondition not met, nothing changed: the collection's one refusal error, by a shorter name
Refused = _validate.InputError


# ------------------------------------------------------------------------------------- input

def validate(params):
    device = _validate.devlink_handle("device", params["device"])
    want = {"device": device, "mode": params.get("mode"), "fsm": params.get("flow_steering_mode"),
            "encap": params.get("encap_mode"), "via_legacy": bool(params.get("steering_via_legacy")),
            "unbind_vfs": bool(params.get("unbind_vfs")), "ports": []}
    if want["mode"] is not None:
        _validate.choice("mode", want["mode"], _devlink.MODES)
    if want["fsm"] is not None:
        _validate.choice("flow_steering_mode", want["fsm"], _devlink.FLOW_STEERING_MODES)
    if want["encap"] is not None:
        _validate.choice("encap_mode", want["encap"], _devlink.ENCAP_MODES)
    seen = set()
    for i, entry in enumerate(params.get("port_functions") or []):
        f = "port_functions[%d]" % i
        port, vf = entry.get("port"), entry.get("vf")
        if (port is None) == (vf is None):
            raise _validate.InputError(f, "give exactly one of port or vf")
        if port is not None:
            port = _validate.devlink_port(f + ".port", port)
            if _devlink.device_of_port(port) != device:
                raise _validate.InputError(f + ".port", "%s is not a port of device %s" % (port, device))
            key = ("port", port)
        else:
            vf = _validate.integer(f + ".vf", vf, 0, 65535)
            key = ("vf", vf, entry.get("controller"))
        controller = entry.get("controller")
        if controller is not None:
            if port is not None:
                raise _validate.InputError(f + ".controller", "only goes with vf, not with port")
            controller = _validate.integer(f + ".controller", controller, 0, 65535)
        caps = {}
        for cap in _devlink.PORT_CAPS:
            v = entry.get(cap)
            if v is not None:
                if not isinstance(v, bool):
                    raise _validate.InputError(f + "." + cap, "must be true or false")
                caps[cap] = v
        if not caps:
            raise _validate.InputError(f, "set ipsec_packet and/or ipsec_crypto")
        if key in seen:
            raise _validate.InputError(f, "the same port is listed twice")
        seen.add(key)
        want["ports"].append({"field": f, "port": port, "vf": vf, "controller": controller, "caps": caps})
    return want


# ----------------------------------------------------------------------------- pure planning

def _step(kind, args, undo=None, label=None):
    """One named step: ``args`` are its named arguments, ``undo`` the arguments of the same kind of
    step that puts back what it changes (None: nothing to undo, or undone by other means)."""
    return {"kind": kind, "args": args, "undo": undo, "label": label}


# the devlink step kinds and their argument lists (named arguments -> devlink argv)
_DEVLINK_ARGV = {
    "mode": lambda a: _devlink.eswitch_set_args(a["device"], mode=a["mode"]),
    "encap": lambda a: _devlink.eswitch_set_args(a["device"], encap_mode=a["encap_mode"]),
    "fsm": lambda a: _devlink.param_set_args(a["device"], _devlink.FSM_PARAM, a["value"]),
    "port": lambda a: _devlink.port_fn_set_args(a["port"], a["cap"], a["enabled"]),
}


def devlink_argv(kind, args):
    """The devlink argument list of a devlink step kind with these named arguments.  Pure."""
    return _DEVLINK_ARGV[kind](args)


def _mode(dev, mode):
    return {"device": dev, "mode": mode}


def plan_device(state, want):
    """Ordered devlink steps for mode / steering / encap; raise Refused.  Pure.

    Order: [switchdev -> legacy when needed] -> flow_steering_mode -> encap -> [-> switchdev].
    """
    dev = want["device"]
    cur_mode = state["mode"]
    target = want["mode"] or cur_mode
    if want["mode"] is not None and cur_mode is None:
        raise Refused("mode", "device %s reports no eswitch mode (the driver has no eswitch support); "
                              "omit mode" % dev)
    fsm_change = want["fsm"] is not None and want["fsm"] != state["flow_steering_mode"]
    if want["fsm"] is not None and not state["fsm_supported"]:
        raise Refused("flow_steering_mode", "device %s has no flow_steering_mode parameter (it is an mlx5 "
                                            "parameter: upstream netdevsim and other drivers do not have "
                                            "it); omit flow_steering_mode" % dev)
    encap_change = want["encap"] is not None and want["encap"] != state["encap_mode"]
    if want["encap"] is not None and state["encap_mode"] is None:
        raise Refused("encap_mode", "device %s reports no encap mode (upstream netdevsim has none); omit "
                                    "encap_mode" % dev)

    steps = []
    mode_now = cur_mode
    if fsm_change and cur_mode == "switchdev":
        if target == "switchdev" and not want["via_legacy"]:
            raise Refused("flow_steering_mode",
                          "cannot change from %s to %s while the eswitch of %s is in switchdev mode (mlx5 "
                          "refuses it: recent kernels with 'Changing fs mode is not supported when eswitch "
                          "offloads enabled', 6.12 for smfs with 'Software managed steering is not supported "
                          "when eswitch offloads enabled.', and a dmfs that 6.12 takes there does not reach "
                          "the eswitch tables made at switchdev entry); set steering_via_legacy: true to let "
                          "this module go through legacy mode (every VF representor is destroyed and "
                          "recreated), or run once with mode: legacy"
                          % (state["flow_steering_mode"], want["fsm"], dev))
        steps.append(_step("mode", _mode(dev, "legacy"), _mode(dev, "switchdev")))
        mode_now = "legacy"
    elif target == "legacy" and cur_mode != "legacy" and cur_mode is not None:
        steps.append(_step("mode", _mode(dev, "legacy"), _mode(dev, cur_mode)))
        mode_now = "legacy"
    if fsm_change:
        prev = state["flow_steering_mode"]
        steps.append(_step("fsm", {"device": dev, "value": want["fsm"]},
                           {"device": dev, "value": prev} if prev else None))
    if encap_change:
        steps.append(_step("encap", {"device": dev, "encap_mode": want["encap"]},
                           {"device": dev, "encap_mode": state["encap_mode"]}))
    if target is not None and mode_now != target:
        steps.append(_step("mode", _mode(dev, target), _mode(dev, mode_now)))
    return steps


def plan_port_functions(ports, wanted, notes=None):
    """Port-function steps for the wanted entries against the ports read; raise Refused.  Pure.

    A capability the port does not report cannot be enabled (refused); asking for it to be off is
    already true (a note says so).
    """
    steps = []
    for w in wanted:
        try:
            p = _devlink.find_port(ports, port=w["port"], vf=w["vf"], controller=w["controller"])
        except LookupError as exc:
            raise Refused(w["field"], str(exc))
        if p["flavour"] != "pcivf":
            raise Refused(w["field"], "%s is a %s port: ipsec_packet/ipsec_crypto can only be set on VF ports "
                                      "(flavour pcivf)" % (p["port"], p["flavour"]))
        for cap in _devlink.PORT_CAPS:
            if cap not in w["caps"]:
                continue
            cur = p["caps"][cap]
            if cur is None and not w["caps"][cap]:
                if notes is not None:
                    notes.append("%s: port %s does not report %s; it cannot be on, nothing to disable"
                                 % (w["field"], _devlink.describe_port(p), cap))
                continue
            if cur is None:
                raise Refused("%s.%s" % (w["field"], cap),
                              "port %s does not report %s: the driver or firmware does not offer this "
                              "capability here (upstream netdevsim never does; mlx5 needs a crypto-enabled "
                              "NIC, kernel >= 6.6 and iproute2 >= 6.7); omit %s" % (_devlink.describe_port(p), cap, cap))
            if cur != w["caps"][cap]:
                steps.append(_step("port", {"port": p["port"], "cap": cap, "enabled": w["caps"][cap]},
                                   {"port": p["port"], "cap": cap, "enabled": cur}, label=_devlink.describe_port(p)))
    return steps


def vfs_of_port_steps(ports, steps):
    """VF numbers (local controller) whose port a step changes.  Pure."""
    changed = set(s["args"]["port"] for s in steps)
    return set(p["vfnum"] for p in ports if p["port"] in changed and p["vfnum"] is not None
               and not p.get("external"))


def plan_run(dev_steps, to_unbind, port_steps, deferred_ports):
    """The whole change as one ordered list of named steps, computed once: check mode reports it and
    the real run executes it, step by step.  Pure.

    Order: the steering/encap steps before the first mode step (they need legacy mode) -> "unbind"
    each VF -> the rest of the device steps -> "ports_after_mode" (when a mode change must first
    create the VF ports: the port functions are read and planned once the mode has changed) or the
    port-function steps -> "bind" each VF again.  ``to_unbind``: [(PCI address, driver)].
    """
    first_mode = next((i for i, s in enumerate(dev_steps) if s["kind"] == "mode"), len(dev_steps))
    vfs = [{"address": addr, "driver": drv} for addr, drv in to_unbind]
    plan = list(dev_steps[:first_mode])
    plan += [_step("unbind", vf, vf) for vf in vfs]  # undone by binding it again
    plan += dev_steps[first_mode:]
    if deferred_ports:
        plan.append(_step("ports_after_mode", {"wanted": deferred_ports}))
    plan += port_steps
    plan += [_step("bind", vf) for vf in vfs]
    return plan


def _pending_ports(wanted):
    """(who, cap, word) for each capability of port_functions planned after the mode change."""
    out = []
    for w in wanted:
        who = w["port"] or "<port of VF %d%s>" % (w["vf"], "" if w["controller"] is None
                                                  else " on controller %d" % w["controller"])
        for cap, v in sorted(w["caps"].items()):
            out.append((who, cap, "enable" if v else "disable"))
    return out


def step_lines(step, sysfs):
    """What a step shows in ``steps``: its devlink command or sysfs write; a "ports_after_mode" step
    (check mode only: the real run reports the port steps it plans then) one line per capability."""
    kind, args = step["kind"], step["args"]
    if kind in _DEVLINK_ARGV:
        return [_argv_text(devlink_argv(kind, args))]
    if kind in ("unbind", "bind"):
        return [_sysfs.echo_text(sysfs, _sysfs.driver_file(sysfs, args["driver"], kind), args["address"])]
    return ["devlink port function set %s %s %s (if not already; the port exists after the mode change)" % p
            for p in _pending_ports(args["wanted"])]


# what mlx5 says when IPsec objects hold the eswitch (eswitch_offloads.c), quoted in our refusals
KERNEL_BUSY = {
    "mode": " (mlx5 refuses it: 'Can't change eswitch mode when IPsec SA and/or policies are configured')",
    "encap_mode": " (mlx5 refuses it in switchdev mode: 'Can't set encapsulation when IPsec SA and/or policies "
                  "are configured')",
}


def port_step_field(wanted, ports, step):
    """The input field (port_functions[i].cap) of a port step.  Pure."""
    port, cap = step["args"]["port"], step["args"]["cap"]
    for w in wanted:
        try:
            p = _devlink.find_port(ports, port=w["port"], vf=w["vf"], controller=w["controller"])
        except LookupError:
            continue
        if p["port"] == port:
            return "%s.%s" % (w["field"], cap)
    return "port_functions"


def busy_reasons(xfrm_found, tc_counts):
    """Human reasons why the eswitch cannot change now.  Pure."""
    reasons = []
    if xfrm_found:
        items = ["%s %s on %s (%s offload)" % (x["kind"], x["label"], x["dev"], x["mode"] or "crypto")
                 for x in xfrm_found[:5]]
        more = " and %d more" % (len(xfrm_found) - 5) if len(xfrm_found) > 5 else ""
        reasons.append("IPsec objects are offloaded to netdevs of this device: %s%s; remove them first "
                       "(xfrm_offload_state / xfrm_offload_policy with state: deleted), then rerun"
                       % ("; ".join(items), more))
    busy_tc = sorted((dev, n) for dev, n in tc_counts.items() if n)
    if busy_tc:
        reasons.append("offloaded (in_hw) TC rules exist on %s; they hold the eswitch ('E-Switch is busy'): "
                       "remove them first (tc_flower_vlan with state: deleted), then rerun"
                       % ", ".join("%s (%d)" % d for d in busy_tc))
    return reasons


def state_dict(state):
    ports = []
    for p in state["ports"]:
        ports.append({"port": p["port"], "flavour": p["flavour"], "vf": p["vfnum"], "netdev": p["netdev"],
                      "ipsec_crypto": p["caps"]["ipsec_crypto"], "ipsec_packet": p["caps"]["ipsec_packet"]})
    return {"mode": state["mode"], "encap_mode": state["encap_mode"], "inline_mode": state["inline_mode"],
            "flow_steering_mode": state["flow_steering_mode"], "ports": ports}


def predict(before, want, port_steps):
    after = {k: v for k, v in before.items() if k != "ports"}
    after["ports"] = [dict(p) for p in before["ports"]]
    if want["mode"]:
        after["mode"] = want["mode"]
    if want["fsm"]:
        after["flow_steering_mode"] = want["fsm"]
    if want["encap"]:
        after["encap_mode"] = want["encap"]
    for s in port_steps:
        for p in after["ports"]:
            if p["port"] == s["args"]["port"]:
                p[s["args"]["cap"]] = s["args"]["enabled"]
    return after


def _cap_word(v):
    return "unsupported" if v is None else ("enable" if v else "disable")


def render_text(d, device):
    """Diff text; no secrets exist here."""
    lines = ["device %s" % device]
    for key in ("mode", "encap_mode", "inline_mode", "flow_steering_mode"):
        lines.append("%s: %s" % (key, d.get(key) if d.get(key) is not None else "-"))
    for p in d.get("ports", []):
        if p["flavour"] == "pcivf":
            lines.append("port %s (vf %s): ipsec_crypto=%s ipsec_packet=%s"
                         % (p["port"], p["vf"], _cap_word(p["ipsec_crypto"]), _cap_word(p["ipsec_packet"])))
    for w in d.get("pending_ports", []):
        lines.append(w)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- host I/O

def read_state(dl, device):
    esw = dl.eswitch(device)
    fsm = dl.param(device, _devlink.FSM_PARAM)
    return {"mode": esw["mode"], "encap_mode": esw["encap_mode"], "inline_mode": esw["inline_mode"],
            "fsm_supported": fsm is not None, "flow_steering_mode": (fsm or {}).get("runtime"),
            "ports": dl.ports(device)}


def check_vfs_exist(sysfs, device, wanted):
    """Refuse a port function for a VF number the PF does not have (sysfs sriov_numvfs)."""
    vfs = [w for w in wanted if w["vf"] is not None and not w["controller"]]
    if not vfs:
        return
    try:
        num = _sysfs.sriov_info(sysfs, _sysfs.device_from_name(sysfs, device))["num_vfs"]
    except _sysfs.SysfsError:
        return  # not a device we can see in sysfs (auxiliary/...): the port lookup decides
    for w in vfs:
        if num is not None and w["vf"] >= num:
            raise Refused(w["field"] + ".vf", "VF %d does not exist: %s has %d VFs (create them first with "
                                              "mlx_sriov)" % (w["vf"], device, num))


def device_netdevs(sysfs, device, ports):
    names = set(p["netdev"] for p in ports if p["netdev"])
    bus, name = device.split("/", 1)
    if bus in ("pci", "netdevsim"):
        names.update(sysfs.listdir(sysfs.p("bus", bus, "devices", name, "net")))
    return sorted(names)


def scan_busy(module, netdevs, with_tc=True):
    ip = Ip(Runner(module, "ip"))
    found = []
    found += _xfrm_text.offloaded_xfrm(ip.xfrm_text("state", nokeys=True), "state", netdevs)
    found += _xfrm_text.offloaded_xfrm(ip.xfrm_text("policy"), "policy", netdevs)
    if not with_tc:
        return found, {}, True
    tc = _tc.TcClient(Runner(module, "tc", required=False), ip)
    counts = {}
    if tc.available():
        for dev in netdevs:
            counts[dev] = _tc.tc_in_hw(tc.filters_text(dev))
    return found, counts, tc.available()


def _argv_text(args):
    return shlex.join(["devlink"] + list(args))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            device=dict(type="str", required=True),
            mode=dict(type="str", choices=list(_devlink.MODES)),
            flow_steering_mode=dict(type="str", choices=list(_devlink.FLOW_STEERING_MODES)),
            encap_mode=dict(type="str", choices=list(_devlink.ENCAP_MODES)),
            steering_via_legacy=dict(type="bool", default=False),
            port_functions=dict(type="list", elements="dict", default=[], options=dict(
                port=dict(type="str"),
                vf=dict(type="raw"),
                controller=dict(type="raw"),
                ipsec_packet=dict(type="bool"),
                ipsec_crypto=dict(type="bool"),
            )),
            unbind_vfs=dict(type="bool", default=True),
            **_lock.ARGSPEC
        ),
        supports_check_mode=True,
    )
    with _lock.host_lock(module):
        _main(module)


def _main(module):
    try:
        want = validate(module.params)
    except _validate.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)
    device = want["device"]
    dl = _devlink.Devlink(Runner(module, "devlink"))
    sysfs = _sysfs.Sysfs()
    notes = []
    result = {"changed": False, "steps": [], "vfs_unbound": [], "notes": notes}

    try:
        state = read_state(dl, device)
    except (ToolError, _devlink.DevlinkParseError) as exc:
        extra = exc.as_result() if isinstance(exc, ToolError) else {}
        module.fail_json(msg="cannot read devlink device %s (does `devlink dev` list it?): %s"
                             % (device, getattr(exc, "message", str(exc))), **extra)
    before = state_dict(state)
    result["before"] = before

    # ---- plan and preconditions (nothing changes before all of them pass)
    try:
        dev_steps, port_steps, deferred = plan_changes(module, sysfs, state, want, notes)
        mode_changes = any(s["kind"] == "mode" for s in dev_steps)
        to_unbind = []
        if want["unbind_vfs"] and (mode_changes or port_steps or deferred):
            # a mode change: every bound VF; port functions only: the VFs whose port changes
            only = None if (mode_changes or deferred) else vfs_of_port_steps(state["ports"], port_steps)
            to_unbind = vfs_to_unbind(sysfs, device, only, notes)
    except Refused as exc:
        module.fail_json(msg=str(exc), field=exc.field, **result)

    changed = bool(dev_steps or port_steps or deferred)
    result["changed"] = changed
    if not changed:
        result["after"] = before
        if module._diff:
            result["diff"] = {"before": render_text(before, device), "after": render_text(before, device)}
        module.exit_json(**result)

    plan = plan_run(dev_steps, to_unbind, port_steps, want["ports"] if deferred else [])
    if module.check_mode:
        result["steps"] = [line for step in plan for line in step_lines(step, sysfs)]
        result["vfs_unbound"] = [s["args"]["address"] for s in plan if s["kind"] == "unbind"]
        after = predict(before, want, port_steps)
        pending = ["%s: %s=%s" % p for s in plan if s["kind"] == "ports_after_mode"
                   for p in _pending_ports(s["args"]["wanted"])]
        if pending:
            after["pending_ports"] = pending
        result["after"] = after
        if module._diff:
            result["diff"] = {"before": render_text(before, device), "after": render_text(after, device)}
        module.exit_json(**result)

    execute(module, dl, sysfs, device, plan, notes, result)
    try:
        after = state_dict(read_state(dl, device))
    except (ToolError, _devlink.DevlinkParseError) as exc:
        module.fail_json(msg="the changes ran but the device cannot be read back: %s" % exc, **result)
    result["after"] = after
    if module._diff:
        result["diff"] = {"before": render_text(before, device), "after": render_text(after, device)}
    module.exit_json(**result)


def plan_changes(module, sysfs, state, want, notes):
    """Device and port steps, after every precondition passed -> (dev_steps, port_steps, deferred);
    raise Refused.  deferred: the port functions wait for the mode change (their ports appear then)."""
    device = want["device"]
    dev_steps = plan_device(state, want)
    mode_changes = any(s["kind"] == "mode" for s in dev_steps)
    deferred = bool(want["ports"]) and mode_changes
    check_vfs_exist(sysfs, device, want["ports"])
    port_steps = [] if deferred else plan_port_functions(state["ports"], want["ports"], notes)
    # an encap change alone in legacy mode is only stored by mlx5: nothing holds it
    held = [s for s in dev_steps
            if not (s["kind"] == "encap" and not mode_changes and state["mode"] == "legacy")]
    found, tc_counts, have_tc = [], {}, True
    if held or port_steps:
        netdevs = device_netdevs(sysfs, device, state["ports"])
        try:
            found, tc_counts, have_tc = scan_busy(module, netdevs, with_tc=bool(held))
        except ToolError as exc:
            module.fail_json(msg="cannot check for offloaded IPsec objects / TC rules: %s" % exc.message,
                             **exc.as_result())
    if held:
        if not have_tc:
            notes.append("tc not found: offloaded TC rules were not checked")
        # offloaded TC rules only matter to mode and encap changes
        if not any(s["kind"] in ("mode", "encap") for s in held):
            tc_counts = {}
        reasons = busy_reasons(found, tc_counts)
        if reasons:
            field = "mode" if mode_changes else ("encap_mode" if any(s["kind"] == "encap" for s in held)
                                                 else "flow_steering_mode")
            raise Refused(field, "the eswitch of %s cannot change now: %s%s"
                          % (device, " / ".join(reasons), KERNEL_BUSY.get(field, "") if found else ""))
    if port_steps and found and not any(p["caps"]["ipsec_crypto"] or p["caps"]["ipsec_packet"]
                                        for p in state["ports"] if p["flavour"] == "pcivf"):
        s0 = port_steps[0]
        raise Refused(port_step_field(want["ports"], state["ports"], s0),
                      "no VF of %s has an IPsec capability yet and IPsec objects are offloaded to its "
                      "netdevs (%s): mlx5 refuses the first VF capability then (EBUSY, without a message); "
                      "remove them first (xfrm_offload_state / xfrm_offload_policy with state: deleted), "
                      "then rerun" % (device, "; ".join("%s %s on %s" % (x["kind"], x["label"], x["dev"])
                                                        for x in found[:3])))
    return dev_steps, port_steps, deferred


def vfs_to_unbind(sysfs, device, only, notes):
    """[(PCI address, driver)] of the bound VFs of ``device`` (only the VF numbers in ``only`` unless
    it is None); raise Refused for a VF bound to another driver than the PF's."""
    if not device.startswith("pci/"):
        notes.append("unbind_vfs: not applicable to %s (only PCI VFs have a driver to unbind; netdevsim "
                     "VFs have no PCI address)" % device.split("/")[0])
        return []
    to_unbind = []
    try:
        pf = _sysfs.device_from_name(sysfs, device)
        pf_driver = _sysfs.driver_of(sysfs, pf["path"])
        for vf in _sysfs.vfs_of(sysfs, pf):
            if vf["driver"] is None or (only is not None and vf["index"] not in only):
                continue
            if vf["driver"] != pf_driver:
                raise Refused("unbind_vfs", "VF %d (%s) is bound to %s (a VM's passthrough driver?): "
                                            "unbinding it would block until its user lets go; "
                                            "detach it, or set unbind_vfs: false"
                                            % (vf["index"], vf["address"], vf["driver"]))
            to_unbind.append((vf["address"], vf["driver"]))
    except _sysfs.SysfsError as exc:
        raise Refused("unbind_vfs", "cannot list the VFs of %s in sysfs: %s" % (device, exc))
    return to_unbind


def _engine_step(dl, sysfs, step):
    """A devlink, unbind or bind plan step as a step of the shared engine (_steps): its text is
    the devlink command or sysfs write it runs, its undo the step that puts it back."""
    kind, args = step["kind"], step["args"]
    if kind in _DEVLINK_ARGV:
        argv = devlink_argv(kind, args)
        text = _argv_text(argv)
        back = devlink_argv(kind, step["undo"]) if step["undo"] is not None else None
        return _steps.Step(text, lambda: dl.run(argv, what=text),
                           _argv_text(back) if back else None,
                           (lambda: dl.run(back, what=_argv_text(back))) if back else None)
    addr, drv = args["address"], args["driver"]
    text = step_lines(step, sysfs)[0]
    if kind == "unbind":
        # undone by binding it again - after the devlink undos, as the VF was bound before them
        back = _sysfs.echo_text(sysfs, _sysfs.driver_file(sysfs, drv, "bind"), addr)
        return _steps.Step(text, lambda: _sysfs.unbind(sysfs, drv, addr), back,
                           lambda: _sysfs.bind(sysfs, drv, addr), key=("vf", addr), late=True)
    return _steps.Step(text, lambda: _sysfs.bind(sysfs, drv, addr))


def execute(module, dl, sysfs, device, plan, notes, result):
    """Run the plan through the shared step engine; on a failure undo what was done (devlink steps
    newest first, then the VFs unbound by this run bound again) and fail the module with the
    kernel's message.  Every VF is bound again at the end even when one bind fails (the failures
    are raised after the last)."""
    run = _steps.Run(result["steps"], (ToolError, _sysfs.SysfsError))
    bind_errors = []
    try:
        for step in plan:
            kind = step["kind"]
            if kind == "ports_after_mode":
                run.at("devlink -j port show (ports after the mode change)")
                ports = dl.ports(device)
                run.run_all(_engine_step(dl, sysfs, s) for s in plan_port_functions(ports, step["args"]["wanted"], notes))
            elif kind == "bind":
                run.at("bind the VFs again")
                try:
                    run.run(_engine_step(dl, sysfs, step))
                    run.settle(("vf", step["args"]["address"]))
                except _sysfs.SysfsError as exc:
                    bind_errors.append(str(exc))
            else:
                run.run(_engine_step(dl, sysfs, step))
                if kind == "unbind":
                    result["vfs_unbound"].append(step["args"]["address"])
        if bind_errors:
            raise _sysfs.SysfsError("; ".join(bind_errors))
    except (ToolError, _sysfs.SysfsError, Refused, _devlink.DevlinkParseError) as exc:
        rollback = run.rollback()
        msg, extra = _failure_message(exc, run.current)
        result["rollback"] = rollback
        result["failed_step"] = run.current
        result["changed"] = bool(run.ran)
        module.fail_json(msg="%s -- %s" % (msg, _steps.verdict(rollback)), **dict(result, **extra))


def _failure_message(exc, failed_step):
    extra = {}
    if isinstance(exc, ToolError):
        extra = exc.as_result()
        msg = exc.message
        if "Device or resource busy" in (exc.stderr + exc.stdout) and "function" in exc.cmd:
            msg += (" (for a port function: the VF is still bound -- keep unbind_vfs: true -- or the PF "
                    "already has offloaded IPsec objects while no VF has the capability yet)")
    elif isinstance(exc, _sysfs.SysfsError):
        extra = exc.as_result()
        msg = "%s: %s" % (failed_step, exc)
    elif isinstance(exc, Refused):
        # only the port functions of a device whose mode had to change first are checked here
        msg = "%s (checked after the mode change, once the VF ports existed)" % exc
        extra["field"] = exc.field
    else:
        msg = "%s: %s" % (failed_step, exc)
    return msg, extra


if __name__ == "__main__":
    main()
