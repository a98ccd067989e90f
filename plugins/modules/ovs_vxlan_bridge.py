#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: ovs_vxlan_bridge
short_description: An Open vSwitch bridge with VXLAN tunnel ports and plain ports, in one transaction
version_added: 0.1.0
description:
  - Ensures an OVS bridge exists with the listed plain ports (for example a VF representor) and
    VXLAN ports (remote/local tunnel endpoint, VNI, UDP port), as used by the
    "IPsec over a VXLAN overlay" topology.
  - All changes go to the database as one C(ovs-vsctl) transaction, so a failure leaves the
    switch as it was.
  - Ports and bridges this module creates carry C(external_ids:ipsec_offload_mlx5=owned). Only such
    objects are ever changed or removed; a listed port that exists without the mark is refused.
  - Chosen over C(openvswitch.openvswitch.openvswitch_port) because that module applies interface
    options only when it creates a port, so a changed remote_ip or VNI never converges.
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.lock
options:
  bridge:
    description: Bridge name.
    type: str
    required: true
  ports:
    description: Plain ports (existing netdevs such as a VF representor) to attach.
    type: list
    elements: str
    default: []
  vxlan:
    description: VXLAN tunnel ports.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Port (and interface) name.
        type: str
        required: true
      remote_ip:
        description: Peer tunnel endpoint address.
        type: str
        required: true
      local_ip:
        description: Local tunnel endpoint address (recommended, so the tunnel source is fixed for IPsec selectors).
        type: str
      key:
        description: VXLAN network identifier (VNI), 0..16777215.
        type: raw
      dst_port:
        description: UDP destination port.
        type: raw
        default: 4789
      options:
        description: Further interface options (for example C(tos), C(df_default)); values are strings.
        type: dict
        default: {}
  purge:
    description: Remove ports on this bridge that this collection created and that are not listed.
    type: bool
    default: false
  state:
    description:
      - C(present) creates/updates; C(absent) removes the listed ports, and the bridge itself when
        this collection created it and no other port is left on it.
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description: Seconds C(ovs-vsctl) waits for the database.
    type: int
    default: 10
attributes:
  check_mode:
    description: Reads the database and returns the transaction it would run, without running it.
    support: full
  diff_mode:
    description: Returns the bridge with its ports before and after (or the planned changes in check mode).
    support: full
requirements:
  - Open vSwitch (C(ovs-vsctl)) running on the managed host.
'''

EXAMPLES = r'''
- name: VXLAN overlay bridge on the tunnel endpoint, with the VF representor attached
  ipsec_offload.mlx5.ovs_vxlan_bridge:
    bridge: br-ovs
    ports: [pf0vf0_rep]
    vxlan:
      - name: vxlan1
        local_ip: 192.168.100.1
        remote_ip: 192.168.100.2
        key: 100
        dst_port: 4789

- name: Remove the tunnel port again (the bridge goes too if this collection created it and it is empty)
  ipsec_offload.mlx5.ovs_vxlan_bridge:
    bridge: br-ovs
    ports: [pf0vf0_rep]
    vxlan:
      - name: vxlan1
        remote_ip: 192.168.100.2
    state: absent
'''

RETURN = r'''
changes:
  description: What changed (or would change in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["create bridge br-ovs", "add port pf0vf0_rep to br-ovs"]
cmd:
  description: The C(ovs-vsctl) transaction that ran (or would run).
  returned: changed
  type: list
  elements: str
  sample: [/usr/bin/ovs-vsctl, --timeout=10, --, add-br, br-ovs, --, br-set-external-id, br-ovs, ipsec_offload_mlx5, owned,
           --, add-port, br-ovs, pf0vf0_rep, --, set, port, pf0vf0_rep, "external_ids:ipsec_offload_mlx5=owned"]
bridge:
  description: The bridge as read after the change (ports with type, options and ownership).
  returned: always
  type: dict
  sample:
    owned: true
    ports:
      br-ovs: {type: internal, options: {}, owned: false}
      pf0vf0_rep: {type: "", options: {}, owned: true}
      vxlan1:
        type: vxlan
        options: {dst_port: "4789", key: "100", local_ip: 192.168.100.1, remote_ip: 192.168.100.2}
        owned: true
'''

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock, _ovs, _validate
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError


def read_db(runner, timeout):
    base = ["--timeout=%d" % timeout, "--format=json", "--data=json"]
    tables = {}
    for table, cols in (("bridge", "_uuid,name,ports,external_ids"),
                        ("port", "_uuid,name,external_ids"),
                        ("interface", "name,type,options")):
        tables[table] = _ovs.parse_table(runner.out(base + ["--columns=" + cols, "list", table]))
    return _ovs.parse_db(tables["bridge"], tables["port"], tables["interface"])


def validate(params):
    bridge = _validate.ifname("bridge", params["bridge"])
    ports = [_validate.ifname("ports[%d]" % i, p) for i, p in enumerate(params["ports"])]
    vxlans = []
    names = set(ports)
    for i, v in enumerate(params["vxlan"]):
        f = "vxlan[%d]" % i
        name = _validate.ifname(f + ".name", v["name"])
        if name in names:
            raise _validate.InputError(f + ".name", "%s is listed twice" % name)
        names.add(name)
        remote = _validate.address(f + ".remote_ip", v["remote_ip"])
        local = _validate.address(f + ".local_ip", v["local_ip"]) if v.get("local_ip") else None
        _validate.same_family(f, remote, local)
        key = _validate.integer(f + ".key", v["key"], 0, 16777215) if v.get("key") is not None else None
        dst_port = _validate.integer(f + ".dst_port", v["dst_port"], 1, 65535)
        opts = {}
        for k, val in (v.get("options") or {}).items():
            if isinstance(val, (int, float)):
                val = str(val)   # YAML numbers and booleans, written as before (str())
            if not isinstance(k, str) or not re.fullmatch(r"[a-z0-9_]{1,40}", k) or not isinstance(val, str) or \
                    not re.fullmatch(r"[A-Za-z0-9_.:-]{0,64}", val):
                raise _validate.InputError(f + ".options", "option %s=%s is not a plain word"
                                           % (_validate.show(k), _validate.show(val)))
            opts[k] = val
        vxlans.append({"name": name, "remote_ip": str(remote), "local_ip": str(local) if local else None,
                       "key": key, "dst_port": dst_port, "options": opts})
    if bridge in names:
        raise _validate.InputError("bridge", "%s is also listed as a port" % bridge)
    fields = dict((p, "ports[%d]" % i) for i, p in enumerate(ports))
    fields.update((v["name"], "vxlan[%d].name" % i) for i, v in enumerate(vxlans))
    return bridge, ports, vxlans, fields


def _text(db, bridge):
    info = db.get(bridge)
    if info is None:
        return "bridge %s: absent\n" % bridge
    lines = ["bridge %s%s" % (bridge, " (owned)" if info["owned"] else "")]
    for name, p in sorted(info["ports"].items()):
        opts = _ovs._fmt(p["options"])
        lines.append("  port %s type=%s%s%s" % (name, p["type"] or "system", " {%s}" % opts if opts else "",
                                                " (owned)" if p["owned"] else ""))
    return "\n".join(lines) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bridge=dict(type="str", required=True),
            ports=dict(type="list", elements="str", default=[]),
            vxlan=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                remote_ip=dict(type="str", required=True),
                local_ip=dict(type="str"),
                key=dict(type="raw", no_log=False),
                dst_port=dict(type="raw", default=4789),
                options=dict(type="dict", default={}),
            )),
            purge=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            timeout=dict(type="int", default=10),
            **_lock.ARGSPEC
        ),
        supports_check_mode=True,
    )
    with _lock.host_lock(module):
        _main(module)


def _main(module):
    try:
        bridge, ports, vxlans, fields = validate(module.params)
    except _validate.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)

    runner = Runner(module, "ovs-vsctl")
    timeout = module.params["timeout"]
    try:
        before = read_db(runner, timeout)
    except ToolError as exc:
        module.fail_json(msg="cannot read the Open vSwitch database (is ovsdb-server running?): %s" % exc.message,
                         **exc.as_result())
    try:
        args, changes = _ovs.plan_bridge(before, bridge, ports, vxlans, module.params["state"],
                                         module.params["purge"], fields)
    except _validate.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)

    result = dict(changed=bool(args), changes=changes)
    if args:
        cmd = ["--timeout=%d" % timeout] + args
        result["cmd"] = runner.argv(cmd)
        if not module.check_mode:
            try:
                runner.run(cmd, what="ovs-vsctl transaction")
            except ToolError as exc:
                module.fail_json(msg="Open vSwitch refused the change (nothing was applied: one "
                                     "transaction): %s" % exc.message, changes=changes, **exc.as_result())
    after = read_db(runner, timeout) if (args and not module.check_mode) else before
    result["bridge"] = after.get(bridge, {})
    if module._diff:
        result["diff"] = {"before": _text(before, bridge),
                          "after": _text(after, bridge) if not module.check_mode else "\n".join(changes) + "\n"}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
