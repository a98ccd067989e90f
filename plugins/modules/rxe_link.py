#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rxe_link
short_description: Soft-RoCE (rdma_rxe) links on netdevs, and the RoCE v2 GID to use on them
version_added: 0.1.0
description:
  - Makes (V(present)), removes (V(absent)) or reads (V(gathered)) the RDMA link bound to each listed
    netdev, with C(rdma link add NAME type rxe netdev DEV) / C(rdma link delete NAME), in the netdev's
    network namespace.
  - For each netdev it returns the RDMA device in use, its RoCE v2 IPv4-mapped GID index (what
    C(ibv_rc_pingpong -g) and C(ib_send_bw -x) need) read from
    C(/sys/class/infiniband/DEV/ports/1/gids) and C(gid_attrs), and the device's packet counters
    (C(hw_counters/sent_pkts), C(rcvd_pkts)) so traffic can be compared with IPsec SA counters.
  - "Ownership: a link is this collection's when its name is the configured one (default
    C(rxe_<netdev>)) and it is bound to that netdev. Another RDMA device already bound to the netdev
    (a NIC's own RoCE device such as C(mlx5_0), or an rxe made by hand) is used as it is and never
    removed."
  - If one of several links cannot be made, the links this run made are removed again.
  - "Limit of rdma_rxe up to Linux 6.12 at least: it looks its routes up in, and listens on udp/4791
    in, the initial network namespace only, so an rxe link on a netdev in another namespace is
    created but carries no traffic (C(rxe_find_route4: no route))."
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
extends_documentation_fragment:
  - ipsec_offload.mlx5.common
  - ipsec_offload.mlx5.lock
options:
  config:
    description: Netdevs to bind an RDMA link to (or to read).
    type: list
    elements: dict
    default: []
    suboptions:
      netdev:
        description: The netdev (in O(namespace) when given).
        type: str
        required: true
      name:
        description: Name of the RDMA device to create. Default C(rxe_<netdev>).
        type: str
  state:
    description:
      - V(present) creates the missing links, V(absent) removes the owned ones, V(gathered) only reads.
      - With V(gathered) and an empty O(config), every RDMA link visible in O(namespace) is returned.
    type: str
    choices: [present, absent, gathered]
    default: present
  address:
    description:
      - IPv4 address whose RoCE v2 GID to pick (the local end of the traffic). Default the first
        IPv4-mapped RoCE v2 GID of the netdev.
      - After a link is created, the module waits up to 3 s for that GID to appear.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports the C(rdma) commands that would run; nothing changes.
  diff_mode:
    support: full
    description: Before/after list of the RDMA links of the listed netdevs.
requirements:
  - C(rdma) (iproute2) on the managed host (V(gathered) without it reports no RDMA link); the
    C(rdma_rxe) kernel module for V(present) (loaded on demand by C(rdma link add)).
notes:
  - Run as root.
  - A kernel without the RDMA core (C(ib_core) neither loaded nor loadable, so C(rdma) answers
    C(Failed to open NETLINK_RDMA socket)) has no RDMA device - V(gathered) reports none and
    V(absent) has nothing to remove (both say why in RV(rdma_problem)); V(present) fails.
'''

EXAMPLES = r'''
- name: Soft-RoCE on the VF stand-in vf0 (initial namespace), pick the GID of 192.168.10.1
  ipsec_offload.mlx5.rxe_link:
    config:
      - netdev: vf0
    address: 192.168.10.1
  register: rxe

- name: Run RoCE v2 traffic with it
  ansible.builtin.command:
    argv: [ibv_rc_pingpong, -d, "{{ rxe.links[0].device }}", -g, "{{ rxe.links[0].gid_index }}", -n, "100"]
  changed_when: false

- name: Remove it again (only a link named rxe_vf0 on vf0 is removed)
  ipsec_offload.mlx5.rxe_link:
    config:
      - netdev: vf0
    state: absent

- name: Which RDMA device serves p0 (a NIC's own RoCE device counts)
  ipsec_offload.mlx5.rxe_link:
    config:
      - netdev: p0
    state: gathered
'''

RETURN = r'''
links:
  description: One entry per O(config) item (for V(gathered) without O(config), per visible link).
  returned: always
  type: list
  elements: dict
  contains:
    netdev:
      description: The netdev.
      type: str
      sample: vf0
    name:
      description: The configured (owned) RDMA device name.
      type: str
      sample: rxe_vf0
    device:
      description: The RDMA device bound to the netdev after the run (owned or not), or null.
      type: str
      sample: rxe_vf0
    owned:
      description: Whether RV(links[].device) is the configured, owned one.
      type: bool
      sample: true
    action:
      description: C(add), C(delete) or null.
      type: str
      sample: add
    state:
      description: Port state (C(ACTIVE), C(DOWN)) of RV(links[].device).
      type: str
      sample: ACTIVE
    gid_index:
      description: Index of the RoCE v2 IPv4-mapped GID (null if there is none).
      type: int
      sample: 1
    gid_address:
      description: The IPv4 address of that GID.
      type: str
      sample: 192.168.10.1
    gids:
      description: The used GID table entries (index, gid, type, netdev, ipv4).
      type: list
      elements: dict
      sample:
        - {index: 1, gid: "0000:0000:0000:0000:0000:ffff:c0a8:0a01", type: RoCE v2, netdev: vf0, ipv4: 192.168.10.1}
    counters:
      description: C(sent_pkts) and C(rcvd_pkts) of the device's port 1 (rdma_rxe hw_counters); empty when absent.
      type: dict
      sample: {sent_pkts: 200, rcvd_pkts: 200}
  sample:
    - netdev: vf0
      name: rxe_vf0
      device: rxe_vf0
      owned: true
      action: add
      state: ACTIVE
      gid_index: 1
      gid_address: 192.168.10.1
      gids:
        - {index: 0, gid: "fe80:0000:0000:0000:5054:00ff:fecc:0100", type: RoCE v2, netdev: vf0, ipv4: null}
        - {index: 1, gid: "0000:0000:0000:0000:0000:ffff:c0a8:0a01", type: RoCE v2, netdev: vf0, ipv4: 192.168.10.1}
      counters: {sent_pkts: 0, rcvd_pkts: 0}
commands:
  description: The C(rdma) commands that ran (or would run in check mode).
  returned: always
  type: list
  elements: str
  sample: ["rdma link add rxe_vf0 type rxe netdev vf0"]
ibv_rc_pingpong:
  description: Whether C(ibv_rc_pingpong) (rdma-core's ibverbs-utils) is installed on the host.
  returned: always
  type: bool
  sample: true
rdma_problem:
  description: Why the host has no RDMA device to list (no RDMA core in the kernel); null when C(rdma) could list them.
  returned: always
  type: str
  sample: "rdma -j link show failed (rc=1): Failed to open NETLINK_RDMA socket -- the kernel's RDMA core (ib_core) is not loaded"
  version_added: 0.2.0
'''

import os
import shlex
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _rdma
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError

SYSFS_IB = "/sys/class/infiniband"
# what `rdma` says when the kernel has no RDMA netlink: ib_core is neither loaded nor loadable (a
# host or container without RDMA); such a host has no RDMA device at all
NO_RDMA_NETLINK = "Failed to open NETLINK_RDMA socket"
GID_WAIT = (10, 0.3)  # tries, seconds between: the IPv4 GID follows the link a moment later


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except (IOError, OSError):
        return None


def read_gids(device):
    """The used GID table of port 1 of ``device`` from sysfs."""
    base = os.path.join(SYSFS_IB, device, "ports", "1")
    try:
        names = os.listdir(os.path.join(base, "gids"))
    except OSError:
        return []
    rows = []
    for name in sorted(names, key=lambda n: int(n) if n.isdigit() else -1):
        if not name.isdigit():
            continue
        gid = _read(os.path.join(base, "gids", name))
        if gid is None:
            continue
        # an empty slot answers EINVAL for its type/ndev: those read as None
        rows.append(_rdma.gid_entry(name, gid, _read(os.path.join(base, "gid_attrs", "types", name)),
                                    _read(os.path.join(base, "gid_attrs", "ndevs", name))))
    return _rdma.used_gids(rows)


def read_counters(device):
    out = {}
    for name in ("sent_pkts", "rcvd_pkts"):
        text = _read(os.path.join(SYSFS_IB, device, "ports", "1", "hw_counters", name))
        if text is not None and text.isdigit():
            out[name] = int(text)
    return out


def read_links(runner):
    return _rdma.parse_links(runner.out(["-j", "link", "show"], what="rdma -j link show"))


def _view(view, links, address):
    by_name = dict((lk["name"], lk) for lk in links)
    device = view["link"] if view["link"] in by_name else None
    res = dict(netdev=view["netdev"], name=view["name"], device=device, owned=bool(device and view["owned"]),
               action=view["action"], state=None, gid_index=None, gid_address=None, gids=[], counters={})
    if device:
        gids = read_gids(device)
        gid = _rdma.roce_v2_ipv4_gid(gids, view["netdev"], address)
        res.update(state=by_name[device]["state"], gids=gids, counters=read_counters(device),
                   gid_index=gid["index"] if gid else None, gid_address=gid["address"] if gid else None)
    return res


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="list", elements="dict", default=[], options=dict(
                netdev=dict(type="str", required=True),
                name=dict(type="str"),
            )),
            state=dict(type="str", choices=["present", "absent", "gathered"], default="present"),
            address=dict(type="str"),
            namespace=dict(type="str"),
            **_lock.ARGSPEC
        ),
        supports_check_mode=True,
    )
    with _lock.host_lock(module):
        _main(module)


def _main(module):
    p = module.params
    try:
        namespace = V.netns("namespace", p["namespace"])
        config = _rdma.validate_config(p["config"])
        address = None
        if p["address"]:
            addr = V.address("address", p["address"])
            if addr.version != 4:
                raise V.InputError("address", "RoCE v2 GIDs are picked by IPv4 address; %s is IPv6" % addr)
            address = str(addr)
    except V.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)

    state = p["state"]
    # gathered on a host without the rdma tool (iproute2 without it): no RDMA link, not a failure
    rdma = Runner(module, "rdma", namespace=namespace, required=state != "gathered")
    rdma_problem = None
    try:
        before = read_links(rdma) if rdma.available() else []
    except (ToolError, ValueError) as exc:
        msg = exc.message if isinstance(exc, ToolError) else str(exc)
        no_core = isinstance(exc, ToolError) and NO_RDMA_NETLINK in exc.stderr + exc.stdout
        if no_core:
            msg += " -- the kernel's RDMA core (ib_core) is not loaded"
        if not no_core or state == "present":
            module.fail_json(msg="cannot list the RDMA links: %s%s" % (
                msg, " (Soft-RoCE needs it: modprobe rdma_rxe)" if no_core else ""))
        # no RDMA core: no RDMA device can exist, so nothing to read or to remove
        rdma_problem = msg
        before = []
    if state == "gathered" and not config:
        config = [{"netdev": lk["netdev"], "name": lk["name"]} for lk in before if lk["netdev"]]
    try:
        actions, views = _rdma.plan(config, before, state)
    except V.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field)

    commands = [shlex.join(["rdma"] + _rdma.render(*a)) for a in actions]
    result = dict(changed=bool(actions), commands=commands, rdma_problem=rdma_problem,
                  ibv_rc_pingpong=module.get_bin_path("ibv_rc_pingpong") is not None)
    after = before
    if actions and not module.check_mode:
        _apply(module, rdma, actions, commands)
        after = read_links(rdma)
        if any(a[0] == "add" for a in actions):
            tries, pause = GID_WAIT
            for dummy in range(tries):
                if all(_rdma.roce_v2_ipv4_gid(read_gids(v["name"]), v["netdev"], address)
                       for v in views if v["action"] == "add"):
                    break
                time.sleep(pause)
    elif actions:  # check mode: show the links as they would be
        after = [lk for lk in before if not any(a[0] == "delete" and a[1] == lk["name"] for a in actions)]
        after += [dict(name=a[1], port=1, state="(to be created)", physical_state=None, netdev=a[2])
                  for a in actions if a[0] == "add"]
    links = [_view(v, after, address) for v in views]
    result["links"] = links
    if module._diff:
        netdevs = set(v["netdev"] for v in views)
        result["diff"] = {"before": _rdma.describe([lk for lk in before if lk["netdev"] in netdevs]),
                          "after": _rdma.describe([lk for lk in after if lk["netdev"] in netdevs])}
    missing = [lk["netdev"] for lk in links if state == "present" and lk["device"] and lk["gid_index"] is None
               and not module.check_mode]
    if missing:
        module.warn("no RoCE v2 IPv4 GID%s on %s yet: is the netdev up with an IPv4 address?"
                    % (" for %s" % address if address else "", ", ".join(missing)))
    module.exit_json(**result)


def _apply(module, rdma, actions, commands):
    """Run the actions in order; on a refusal remove the links added so far and fail."""
    done = []
    for action in actions:
        try:
            rdma.run(_rdma.render(*action))
        except ToolError as exc:
            undo = []
            for prev in reversed(done):
                if prev[0] == "add":
                    try:
                        rdma.run(_rdma.render("delete", prev[1], prev[2]))
                        undo.append("removed %s again" % prev[1])
                    except ToolError as exc2:
                        undo.append("could not remove %s: %s" % (prev[1], exc2.tool_message))
            hint = ""
            if action[0] == "add" and "Operation not permitted" in (exc.stderr + exc.stdout):
                hint = (" -- rdma_rxe accepts only a netdev that is not itself an upper device "
                        "(a VLAN device is refused); bind it to the lower netdev")
            module.fail_json(msg="%s %s on %s failed: %s%s%s" % (
                action[0], action[1], action[2], exc.message, hint,
                ("; rolled back: " + ", ".join(undo)) if undo else ""),
                failed_object=action[1], commands=commands, **exc.as_result())
        done.append(action)


if __name__ == "__main__":
    main()
