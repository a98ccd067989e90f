#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: mlx_sriov
short_description: SR-IOV VF count and VF driver binding of a PF, through sysfs
version_added: 0.1.0
description:
  - Sets the number of VFs of a PF (C(sriov_numvfs)) and which VFs are bound to a driver, in one
    run that is undone if a step fails.
  - A change between two non-zero counts goes through 0, as the kernel requires (it answers
    C(Device or resource busy) to a new count written over a non-zero one).
  - "Refused before anything changes: more VFs than C(sriov_totalvfs), a count change while the
    eswitch is in switchdev mode (unless O(allow_switchdev)), a VF bound to another driver than
    the one asked for, a VF index that will not exist."
  - Works for PCI PFs (mlx5 and others) and for netdevsim devices (the lab's NIC simulator), whose
    VFs have no PCI address; binding does not apply to them and the module says so in a warning.
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.lock
options:
  pf:
    description: Netdev name of the PF (for example C(p0) or C(enp8s0f0np0)). One of O(pf) and O(device) is required.
    type: str
  device:
    description:
      - The PF as a PCI address (C(0000:08:00.0)) or devlink handle (C(pci/0000:08:00.0),
        C(netdevsim/netdevsim1)).
    type: str
  num_vfs:
    description: Number of VFs. Omit to keep the current count.
    type: raw
  vf_driver:
    description: Driver VFs are bound to. Default is the PF's own driver (for example C(mlx5_core)).
    type: str
  vfs_bound:
    description:
      - V(true) binds every VF to O(vf_driver); V(false) unbinds every VF. Omit to leave bindings
        as they are (new VFs then follow C(sriov_drivers_autoprobe)).
      - Entries in O(vfs) take precedence for their VF.
    type: bool
  vfs:
    description: Binding of single VFs.
    type: list
    elements: dict
    default: []
    suboptions:
      index:
        description: VF number (0 is the first VF).
        type: raw
        required: true
      bound:
        description: Whether this VF is bound.
        type: bool
        required: true
      driver:
        description: Driver for this VF when bound; default O(vf_driver).
        type: str
  drivers_autoprobe:
    description:
      - Set C(sriov_drivers_autoprobe) (whether new VFs are bound to a driver when created) before the
        count changes. PCI only. Omit to keep it.
    type: bool
  allow_switchdev:
    description:
      - Allow a VF count change while the PF's eswitch is in switchdev mode. That removes every VF
        representor and what is configured on it; netdevsim also drops to legacy mode when the
        count goes to 0. Without it such a change is refused.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description:
      - Reports the sysfs writes that would run. VFs that do not exist yet are shown by number.
  diff_mode:
    support: full
    description: Before/after text of the VF count, autoprobe setting and per-VF driver.
requirements:
  - Linux sysfs; C(devlink) (optional) to read the eswitch mode before a count change.
notes:
  - Run as root. Only the given PF and its VFs are touched.
  - Run it before M(ipsec_offload.mlx5.mlx_devlink_eswitch) - the VF count is set while the eswitch is legacy.
'''

EXAMPLES = r'''
- name: Two VFs on the mlx5 PF p0, all bound to mlx5_core
  ipsec_offload.mlx5.mlx_sriov:
    pf: p0
    num_vfs: 2
    vfs_bound: true

- name: One VF, created unbound (the vendor sequence unbinds it before switchdev)
  ipsec_offload.mlx5.mlx_sriov:
    device: "0000:08:00.0"
    num_vfs: 1
    vfs:
      - index: 0
        bound: false

- name: Lab - two VFs on netdevsim (no PCI VFs, so no binding)
  ipsec_offload.mlx5.mlx_sriov:
    device: netdevsim/netdevsim1
    num_vfs: 2
'''

RETURN = r'''
steps:
  description: The sysfs writes that ran (or would run), as C(echo VALUE > PATH).
  returned: always
  type: list
  elements: str
  sample:
    - echo 0 > /sys/devices/pci0000:00/0000:00:03.0/0000:08:00.0/sriov_numvfs
    - echo 2 > /sys/devices/pci0000:00/0000:00:03.0/0000:08:00.0/sriov_numvfs
    - echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/unbind
device:
  description: The PF as found in sysfs.
  returned: always
  type: dict
  sample: {bus: pci, name: "0000:08:00.0", devlink: pci/0000:08:00.0, driver: mlx5_core, netdevs: [p0]}
  contains:
    bus:
      description: C(pci) or C(netdevsim).
      type: str
      sample: pci
    name:
      description: PCI address or netdevsim device name.
      type: str
      sample: "0000:08:00.0"
    devlink:
      description: Its devlink handle.
      type: str
      sample: pci/0000:08:00.0
    driver:
      description: The PF's driver.
      type: str
      sample: mlx5_core
    netdevs:
      description: Netdevs of the PF.
      type: list
      elements: str
      sample: [p0]
before:
  description: SR-IOV state before the change.
  returned: always
  type: dict
  sample: {num_vfs: 0, total_vfs: 4, drivers_autoprobe: true, vfs: []}
  contains:
    num_vfs:
      description: VF count.
      type: int
      sample: 0
    total_vfs:
      description: Upper limit (sriov_totalvfs; netdevsim - max_vfs from debugfs when readable; else null).
      type: int
      sample: 4
    drivers_autoprobe:
      description: sriov_drivers_autoprobe (null where it does not exist).
      type: bool
      sample: true
    vfs:
      description: VFs with index, PCI address, driver (null = unbound) and netdevs; empty for netdevsim.
      type: list
      elements: dict
      sample:
        - {index: 0, address: "0000:08:00.2", driver: mlx5_core, netdevs: [pf0vf0]}
        - {index: 1, address: "0000:08:00.3", driver: null, netdevs: []}
after:
  description: SR-IOV state after the change (predicted in check mode), as RV(before).
  returned: always
  type: dict
  sample:
    num_vfs: 2
    total_vfs: 4
    drivers_autoprobe: true
    vfs:
      - {index: 0, address: "0000:08:00.2", driver: mlx5_core, netdevs: [pf0vf0]}
      - {index: 1, address: "0000:08:00.3", driver: mlx5_core, netdevs: [pf0vf1]}
notes:
  description: Remarks (also given as warnings), for example that binding does not apply to netdevsim.
  returned: always
  type: list
  elements: str
  sample:
    - >-
      vfs_bound/vfs: not applicable to netdevsim/netdevsim1: netdevsim VFs have no PCI address and no
      driver to bind; nothing was bound or unbound
eswitch_mode:
  description: Eswitch mode read through devlink before a count change (null when not read or not reported).
  returned: always
  type: str
  sample: legacy
rollback:
  description: On failure, the undo steps that ran, each with its outcome.
  returned: failed
  type: list
  elements: str
  sample: ["restore 2 VFs (/sys/devices/pci0000:00/0000:00:03.0/0000:08:00.0/sriov_numvfs) and their drivers: ok"]
'''

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _devlink, _lock, _steps, _sysfs, _validate
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError

_DEVICE_RE = re.compile(r"(?:pci/)?[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]|(?:netdevsim/)?netdevsim[0-9]{1,10}")


# a precondition not met, nothing changed: the collection's one refusal error, by a shorter name
Refused = _validate.InputError


def validate(params):
    want = {"pf": None, "device": None, "num_vfs": None, "vf_driver": None, "vfs_bound": params.get("vfs_bound"),
            "vfs": {}, "vf_fields": {}, "autoprobe": params.get("drivers_autoprobe"),
            "allow_switchdev": bool(params.get("allow_switchdev"))}
    if params.get("pf") is not None:
        want["pf"] = _validate.ifname("pf", params["pf"])
    if params.get("device") is not None:
        if not isinstance(params["device"], str) or not _DEVICE_RE.fullmatch(params["device"]):
            raise _validate.InputError("device", "%s is not a PCI address (0000:08:00.0) or a pci/... or "
                                                 "netdevsim/netdevsimN devlink handle" % _validate.show(params["device"]))
        want["device"] = params["device"]
    if params.get("num_vfs") is not None:
        want["num_vfs"] = _validate.integer("num_vfs", params["num_vfs"], 0, 65535)
    if params.get("vf_driver") is not None:
        try:
            want["vf_driver"] = _sysfs.driver_name("vf_driver", params["vf_driver"])
        except ValueError as exc:
            raise _validate.InputError("vf_driver", str(exc).split(": ", 1)[1])
    for i, entry in enumerate(params.get("vfs") or []):
        f = "vfs[%d]" % i
        index = _validate.integer(f + ".index", entry.get("index"), 0, 65535)
        if index in want["vfs"]:
            raise _validate.InputError(f + ".index", "VF %d is listed twice" % index)
        drv = entry.get("driver")
        if drv is not None:
            try:
                _sysfs.driver_name(f + ".driver", drv)
            except ValueError as exc:
                raise _validate.InputError(f + ".driver", str(exc).split(": ", 1)[1])
        if not isinstance(entry.get("bound"), bool):
            raise _validate.InputError(f + ".bound", "must be true or false")
        want["vfs"][index] = (entry["bound"], drv)
        want["vf_fields"][index] = f
    return want


# ---------------------------------------------------------------------------------- pure parts

def desired_bindings(want, count, default_driver):
    """{index: (bound, driver)} for the VFs whose binding is asked for, given the final count.

    Raise Refused for a listed VF that will not exist.  Pure.
    """
    out = {}
    if want["vfs_bound"] is not None:
        for i in range(count):
            out[i] = (want["vfs_bound"], default_driver)
    for index, (bound, drv) in want["vfs"].items():
        if index >= count:
            raise Refused(want["vf_fields"][index] + ".index",
                          "VF %d will not exist (the PF will have %d VFs)" % (index, count))
        out[index] = (bound, drv or default_driver)
    return out


def predicted_vfs(count, autoprobe, pf_driver):
    """The VFs a count change will create, addresses unknown until then.  Pure."""
    return [{"index": i, "address": "<vf %d>" % i, "driver": pf_driver if autoprobe else None, "netdevs": []}
            for i in range(count)]


def render_text(dev, info):
    lines = ["device %s (driver %s)" % (dev["devlink"], dev.get("driver") or "-"),
             "num_vfs: %s (total %s)" % (info["num_vfs"], info["total_vfs"] if info["total_vfs"] is not None else "?")]
    if info["drivers_autoprobe"] is not None:
        lines.append("drivers_autoprobe: %s" % ("1" if info["drivers_autoprobe"] else "0"))
    for vf in info["vfs"]:
        lines.append("vf %d %s: %s" % (vf["index"], vf["address"], vf["driver"] or "unbound"))
    return "\n".join(lines) + "\n"


def public(info):
    return {"num_vfs": info["num_vfs"], "total_vfs": info["total_vfs"],
            "drivers_autoprobe": info["drivers_autoprobe"],
            "vfs": [dict(v) for v in info["vfs"]]}


# --------------------------------------------------------------------------------------- host

def read_info(sysfs, dev):
    info = _sysfs.sriov_info(sysfs, dev)
    if dev["bus"] == "netdevsim" and info["total_vfs"] is None:
        # netdevsim keeps its limit in debugfs (default 4); readable only where debugfs is mounted
        info["total_vfs"] = sysfs.read_int(sysfs.p("kernel", "debug", "netdevsim", dev["name"], "max_vfs"))
    return info


def eswitch_mode(module, handle):
    dl = _devlink.Devlink(Runner(module, "devlink", required=False))
    if not dl.available() or not handle:
        return None
    try:
        return dl.eswitch(handle)["mode"]
    except (ToolError, _devlink.DevlinkParseError):
        return None  # no devlink instance / no eswitch: nothing to protect


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pf=dict(type="str"),
            device=dict(type="str"),
            num_vfs=dict(type="raw"),
            vf_driver=dict(type="str"),
            vfs_bound=dict(type="bool"),
            vfs=dict(type="list", elements="dict", default=[], options=dict(
                index=dict(type="raw", required=True),
                bound=dict(type="bool", required=True),
                driver=dict(type="str"),
            )),
            drivers_autoprobe=dict(type="bool"),
            allow_switchdev=dict(type="bool", default=False),
            **_lock.ARGSPEC
        ),
        mutually_exclusive=[("pf", "device")],
        required_one_of=[("pf", "device")],
        supports_check_mode=True,
    )
    with _lock.host_lock(module):
        _main(module)


def _main(module):
    try:
        want = validate(module.params)
    except _validate.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)

    sysfs = _sysfs.Sysfs()
    field = "pf" if want["pf"] else "device"
    try:
        dev = (_sysfs.device_from_netdev(sysfs, want["pf"]) if want["pf"]
               else _sysfs.device_from_name(sysfs, want["device"]))
        info = read_info(sysfs, dev)
    except _sysfs.SysfsError as exc:
        msg = str(exc)
        module.fail_json(msg=msg if msg.startswith(field + ":") else "%s: %s" % (field, msg), field=field)
    dev["driver"] = info["driver"]
    dev_out = {"bus": dev["bus"], "name": dev["name"], "devlink": dev["devlink"], "driver": info["driver"],
               "netdevs": info["netdevs"]}
    before = public(info)
    result = {"changed": False, "steps": [], "device": dev_out, "before": before, "eswitch_mode": None,
              "notes": []}

    def note(text):
        result["notes"].append(text)
        module.warn(text)

    try:
        plan = _plan(module, sysfs, want, dev, info, note, result)
    except Refused as exc:
        module.fail_json(msg=str(exc), field=exc.field, **result)
    except _sysfs.SysfsError as exc:
        module.fail_json(msg=str(exc), **dict(result, **exc.as_result()))

    planned = [s.text for s in plan["steps"]] + [_binding_step(sysfs, c).text for c in plan["changes"]]
    result["changed"] = bool(planned)
    if module.check_mode or not planned:
        after = _predicted_after(info, plan) if planned else dict(before)
        result["steps"] = planned
        result["after"] = after
        if module._diff:
            result["diff"] = {"before": render_text(dev, before), "after": render_text(dev, after)}
        module.exit_json(**result)

    _execute(module, sysfs, want, dev, plan, result)
    after = public(read_info(sysfs, dev))
    result["after"] = after
    if plan["writes"] and result["eswitch_mode"] == "switchdev":
        mode_now = eswitch_mode(module, dev["devlink"])
        if mode_now != "switchdev":
            note("the eswitch of %s is now in %s mode (netdevsim leaves switchdev when the VF count goes to "
                 "0): run mlx_devlink_eswitch again" % (dev["devlink"], mode_now))
    if module._diff:
        result["diff"] = {"before": render_text(dev, before), "after": render_text(dev, after)}
    module.exit_json(**result)


def _plan(module, sysfs, want, dev, info, note, result):
    """What to change, in order: {steps: [_steps.Step], changes: binding changes, desired, writes,
    count, autoprobe, vfs_after, binding_asked}. Raises Refused before anything."""
    steps = []
    field = "pf" if want["pf"] else "device"
    if info["num_vfs"] is None:
        raise Refused(field, "%s has no SR-IOV (no sriov_numvfs in %s): the device or its driver does not "
                             "offer VFs, or SR-IOV is off in the firmware/BIOS"
                      % (dev["devlink"], sysfs.show(dev["path"])))
    pci = dev["bus"] == "pci"
    default_driver = want["vf_driver"] or info["driver"]
    if (want["vfs_bound"] or any(pair[0] for pair in want["vfs"].values())) and pci and not default_driver:
        raise Refused("vf_driver", "the PF has no driver to copy; name the VF driver")
    count = want["num_vfs"] if want["num_vfs"] is not None else info["num_vfs"]
    if want["num_vfs"] is not None and info["total_vfs"] is not None and want["num_vfs"] > info["total_vfs"]:
        raise Refused("num_vfs", "%s is more than the %s VFs %s offers (%s)"
                      % (want["num_vfs"], info["total_vfs"], dev["devlink"],
                         "sriov_totalvfs" if pci else "netdevsim max_vfs"))
    binding_asked = want["vfs_bound"] is not None or bool(want["vfs"])
    if binding_asked and not pci:
        note("vfs_bound/vfs: not applicable to %s: netdevsim VFs have no PCI address and no driver "
             "to bind; nothing was bound or unbound" % dev["devlink"])
        binding_asked = False
    desired = desired_bindings(want, count, default_driver) if binding_asked else {}
    writes = _sysfs.numvfs_writes(info["num_vfs"], want["num_vfs"])

    if writes:
        mode = eswitch_mode(module, dev["devlink"])
        result["eswitch_mode"] = mode
        if mode == "switchdev" and not want["allow_switchdev"]:
            raise Refused("num_vfs", "the eswitch of %s is in switchdev mode; changing the VF count (%s -> %s) "
                                     "there removes every VF representor and what is configured on it (OVS "
                                     "ports, TC rules, IPsec objects), the kernel takes a new count only over 0 "
                                     "('Device or resource busy' otherwise, seen on netdevsim), and netdevsim drops "
                                     "to legacy mode when the count goes to 0. Set the count while the eswitch is "
                                     "legacy (run mlx_sriov before mlx_devlink_eswitch), or set allow_switchdev: "
                                     "true" % (dev["devlink"], info["num_vfs"], want["num_vfs"]))

    autoprobe = info["drivers_autoprobe"]
    if want["autoprobe"] is not None:
        if info["drivers_autoprobe"] is None:
            note("drivers_autoprobe: not applicable to %s (no sriov_drivers_autoprobe)" % dev["devlink"])
        elif want["autoprobe"] != info["drivers_autoprobe"]:
            autoprobe = want["autoprobe"]
            path = _sysfs.autoprobe_path(dev)
            old = "1" if info["drivers_autoprobe"] else "0"
            new = "1" if want["autoprobe"] else "0"
            steps.append(_steps.Step(_sysfs.echo_text(sysfs, path, new), lambda p=path, v=new: sysfs.write(p, v),
                                     _sysfs.echo_text(sysfs, path, old), lambda p=path, v=old: sysfs.write(p, v)))

    if writes:
        path = _sysfs.numvfs_path(dev)
        original = [(v["address"], v["driver"]) for v in info["vfs"]]

        def restore(path=path, n=info["num_vfs"], original=original):
            if sysfs.read_int(path):
                sysfs.write(path, 0)
            if n:
                sysfs.write(path, n)
            for vf in _sysfs.vfs_of(sysfs, dev):
                want_drv = dict(original).get(vf["address"], vf["driver"])
                if vf["driver"] == want_drv:
                    continue
                if vf["driver"] is not None:
                    _sysfs.unbind(sysfs, vf["driver"], vf["address"])
                if want_drv is not None:
                    _sysfs.bind(sysfs, want_drv, vf["address"])
        undo_text = "restore %d VFs (%s) and their drivers" % (info["num_vfs"], sysfs.show(path))
        for i, value in enumerate(writes):
            steps.append(_steps.Step(_sysfs.echo_text(sysfs, path, value), lambda p=path, v=value: sysfs.write(p, v),
                                     undo_text if i == 0 else None, restore if i == 0 else None))
        vfs_after = predicted_vfs(count, autoprobe, info["driver"]) if pci else []
    else:
        vfs_after = info["vfs"]
    changes, problems = _sysfs.binding_changes(vfs_after, desired)
    if problems:
        index, msg = problems[0]
        raise Refused(want["vf_fields"].get(index, "vfs_bound"), msg)
    return {"steps": steps, "changes": changes, "desired": desired, "writes": writes, "count": count,
            "autoprobe": autoprobe, "vfs_after": vfs_after, "binding_asked": binding_asked}


def _binding_step(sysfs, change):
    """The step of one VF bind/unbind, with the opposite as its undo."""
    action, _index, addr, drv = change
    path = _sysfs.driver_file(sysfs, drv, action)
    other = "bind" if action == "unbind" else "unbind"
    return _steps.Step(_sysfs.echo_text(sysfs, path, addr), lambda: sysfs.write(path, addr),
                       _sysfs.echo_text(sysfs, _sysfs.driver_file(sysfs, drv, other), addr),
                       lambda: sysfs.write(_sysfs.driver_file(sysfs, drv, other), addr))


def _predicted_after(info, plan):
    """The public view check mode reports: the count, autoprobe and VF drivers the plan leaves."""
    after = {"num_vfs": plan["count"], "total_vfs": info["total_vfs"], "drivers_autoprobe": plan["autoprobe"],
             "vfs": [dict(v) for v in plan["vfs_after"]]}
    for action, index, _addr, drv in plan["changes"]:
        for v in after["vfs"]:
            if v["index"] == index:
                v["driver"] = drv if action == "bind" else None
    return after


def _execute(module, sysfs, want, dev, plan, result):
    """Run the plan (the shared step engine); on a failure undo the steps done, newest first, and
    fail with what happened."""
    run = _steps.Run(result["steps"], (_sysfs.SysfsError,))
    changes = plan["changes"]
    try:
        run.run_all(plan["steps"])
        if plan["writes"] and plan["binding_asked"]:
            # the VFs exist now: plan their bindings on what the kernel made of them
            run.at("read the new VFs")
            changes, problems = _sysfs.binding_changes(_sysfs.vfs_of(sysfs, dev), plan["desired"])
            if problems:
                index, msg = problems[0]
                raise Refused(want["vf_fields"].get(index, "vfs_bound"), msg)
        run.run_all(_binding_step(sysfs, change) for change in changes)
    except (_sysfs.SysfsError, Refused) as exc:
        rollback = run.rollback()
        extra = exc.as_result() if isinstance(exc, _sysfs.SysfsError) else {"field": exc.field}
        result.update(rollback=rollback, failed_step=run.current, changed=bool(run.ran))
        module.fail_json(msg="%s -- %s" % (exc, _steps.verdict(rollback)), **dict(result, **extra))


if __name__ == "__main__":
    main()
