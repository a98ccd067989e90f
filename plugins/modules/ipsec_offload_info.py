#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: ipsec_offload_info
short_description: Report IPsec packet-offload readiness, NIC capabilities and IPsec counters (read-only)
version_added: 0.1.0
description:
  - Gathers, without changing anything, what decides whether IPsec packet (full) offload can work
    on a host, and the counters that show whether it does.
  - Host level - the kernel release, the iproute2 version and whether this C(ip) accepts
    C(offload packet) (probed from the usage text of C(ip xfrm state help), which never talks to
    the kernel), the kernel's ESP/XFRM pieces (from C(/proc/modules),
    C(/lib/modules/RELEASE/modules.builtin), C(modules.dep) and C(/proc/config.gz) or
    C(/boot/config-RELEASE)) and the global C(/proc/net/xfrm_stat) counters.
  - Per device - driver and firmware (C(ethtool -i)), the ESP features (C(ethtool -k)), every
    C(ethtool -S) counter whose name starts with C(ipsec_) (names differ between kernels, drivers
    and OFED, so none is hard-coded) and offloaded TC rules on ingress (C(tc -j filter show)).
  - Per devlink device (given, or derived from a device through C(devlink -j port show) or its
    parent bus/device) - eswitch mode, C(flow_steering_mode) and the C(ipsec_packet) /
    C(ipsec_crypto) capability of every VF port function.
  - Per SA - addresses, SPI, reqid, mode, direction, offload device and type, byte/packet counts and
    replay/integrity failure counts from C(ip -s xfrm state list nokeys). Key material is never read
    when this C(ip) supports C(nokeys), and key lines are dropped by the parser in any case.
  - A summary - C(packet_offload_ready) with the C(reasons) it is not, and what could not be
    verified. In switchdev mode, IPsec on a device that is the devlink device's own netdev (the
    PF, as in a VXLAN overlay) is not ready while any VF port function has C(ipsec_crypto) or
    C(ipsec_packet) enabled (mlx5 refuses the PF's SAs then); IPsec on VF netdevs (RoCE over VF)
    needs C(ipsec_packet) on the VF port functions.
  - Whatever is missing on the host (a tool, a devlink device, a driver without ethtool support,
    a NIC that is not an mlx5) is reported as absent or unknown, not as a failure. Only bad input
    and a named namespace that does not exist fail the module.
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
options:
  devices:
    description:
      - Network devices (netdev names) to inspect, for example the PF uplink or a VF netdev.
      - Each is checked for C(esp-hw-offload) and counted as an SA carrier, so list the netdevs the
        SAs will be offloaded to; a VF representor usually has no ESP offload of its own (its
        eswitch is covered through the PF's devlink device).
      - With no devices only host-level facts and SA counters are gathered, and the summary cannot
        call the host ready.
    type: list
    elements: str
    default: []
  devlink:
    description:
      - devlink handles to inspect (for example C(pci/0000:08:00.0)) in addition to those derived
        from O(devices).
    type: list
    elements: str
    default: []
  sa_counters:
    description:
      - Gather per-SA counters with C(ip -s xfrm state), and the SA lifecycle health of the owned
        objects (RV(xfrm_health)) from C(ip xfrm policy).
    type: bool
    default: true
  owned_reqid_range:
    description: The reqid range the collection owns (as for the xfrm modules), for RV(xfrm_health).
    type: list
    elements: raw
  packet_offload_drivers:
    description:
      - The netdev drivers the summary accepts as doing IPsec packet offload the way mlx5 does. A
        device with another driver makes C(packet_offload_ready) false.
      - The default is the mlx5 driver. Add a driver only when it implements mlx5's packet offload at
        the kernel API, as the lab's simulated ConnectX does (C(netdevsim) built with the
        collection's C(lab/sim), see docs/lab-sim.md).
    type: list
    elements: str
    default: [mlx5_core]
    version_added: 0.2.0
extends_documentation_fragment:
  - ipsec_offload.mlx5.common
attributes:
  check_mode:
    support: full
    description: The module never changes anything; check mode runs the same read-only commands.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
notes:
  - Read-only. The commands it runs are C(ip -V), C(ip xfrm state help), C(ip netns list) (only with
    O(namespace)), C(ip -d -j link show dev DEV), C(ethtool -i|-k|-S DEV), C(tc -j filter show dev DEV
    ingress), C(devlink -j dev), C(devlink -j port show), C(devlink -j dev eswitch show HANDLE),
    C(devlink -j dev param show HANDLE name flow_steering_mode) and C(ip -s xfrm state list nokeys).
  - Kernel facts are read from files in the namespace Ansible runs in; device, TC, devlink and SA
    facts come from O(namespace) when it is given.
  - C(packet_offload_ready) is true only when nothing is missing and nothing was left unverified;
    it is a precondition check, not a proof (only an offloaded SA on the NIC proves offload).
'''

EXAMPLES = r'''
- name: Check the PF uplink before configuring packet offload
  ipsec_offload.mlx5.ipsec_offload_info:
    devices: [p0]
  register: ipsec_info

- name: Stop early when the host cannot do packet offload
  ansible.builtin.assert:
    that: ipsec_info.summary.packet_offload_ready
    fail_msg: "{{ ipsec_info.summary.reasons + ipsec_info.summary.unverified }}"

# A VF moved into a namespace: its netdev is read there; its PF's devlink device stays in the
# initial namespace (devlink lists only the instances of its own namespace), so read it from there
- name: The VF's netdev in its namespace
  ipsec_offload.mlx5.ipsec_offload_info:
    namespace: ns0
    devices: [enp8s0f0v0]

- name: The representor and the eswitch device, in the initial namespace
  ipsec_offload.mlx5.ipsec_offload_info:
    devices: [enp8s0f0npf0vf0]
    devlink: [pci/0000:08:00.0]

- name: Show packet-offloaded SAs and their counters
  ansible.builtin.debug:
    msg: "{{ ipsec_info.xfrm_states | selectattr('offload_mode', 'eq', 'packet') | list }}"
'''

RETURN = r'''
kernel:
  description: Kernel facts.
  returned: always
  type: dict
  sample:
    release: 6.12.117+deb13-amd64
    version: 6.12.117
    meets_packet_offload_minimum: true
    features: {esp4: loaded, esp6: module, esp4_offload: loaded, esp6_offload: module, xfrm_user: builtin,
               xfrm_offload: builtin, gcm: module, mlx5_ipsec: builtin}
    xfrm_stat_present: true
    xfrm_stat: {XfrmInError: 0, XfrmInNoStates: 3, XfrmInStateSeqError: 0, XfrmOutNoStates: 0}
  contains:
    release:
      description: The release, as C(uname -r) prints it.
      type: str
      sample: 6.12.117+deb13-amd64
    version:
      description: Numeric part of the release; null when it is not numeric.
      type: str
      sample: 6.12.117
    meets_packet_offload_minimum:
      description: Release is 6.6 or newer (the minimum NVIDIA documents); null when the release is not numeric.
      type: bool
      sample: true
    features:
      description:
        - State of esp4, esp6, esp4_offload, esp6_offload, xfrm_user, xfrm_offload, gcm and mlx5_ipsec
          (C(CONFIG_MLX5_EN_IPSEC)).
        - One of C(loaded), C(builtin), C(module) (available, not loaded), C(absent), C(unknown).
      type: dict
      sample: {esp4: module, esp6: module, xfrm_offload: builtin, mlx5_ipsec: unknown}
    xfrm_stat_present:
      description: Whether C(/proc/net/xfrm_stat) exists.
      type: bool
      sample: true
    xfrm_stat:
      description: The counters in C(/proc/net/xfrm_stat) (XfrmInNoStates and the others).
      type: dict
      sample: {XfrmInError: 0, XfrmInNoStates: 3, XfrmInStateSeqError: 0, XfrmOutNoStates: 0}
iproute2:
  description: The C(ip) tool.
  returned: always
  type: dict
  sample: {present: true, version: 6.15.0, offload_packet: true, list_nokeys: true, sa_dir: true}
  contains:
    present:
      description: Whether C(ip) was found.
      type: bool
      sample: true
    version:
      description: Version from C(ip -V), for example 6.1.0 (old builds print a snapshot date such as ss190107).
      type: str
      sample: 6.15.0
    offload_packet:
      description: Whether this C(ip) accepts C(offload packet); null when that could not be told.
      type: bool
      sample: true
    list_nokeys:
      description: Whether this C(ip) supports C(list nokeys).
      type: bool
      sample: true
    sa_dir:
      description: Whether this C(ip) accepts the SA C(dir in|out) keyword (iproute2 6.10 and newer).
      type: bool
      sample: true
tools:
  description: Which of ip, tc, ethtool and devlink were found.
  returned: always
  type: dict
  sample: {ip: true, tc: true, ethtool: false, devlink: true}
devices:
  description: Per device, keyed by name.
  returned: always
  type: dict
  sample:
    p0:
      present: true
      driver: mlx5_core
      driver_version: 6.12.117+deb13-amd64
      firmware_version: 22.39.1002 (MT_0000000359)
      bus_info: "0000:08:00.0"
      esp_features:
        esp_hw_offload: {enabled: true, fixed: false}
        esp_tx_csum_hw_offload: {enabled: true, fixed: true}
        tx_esp_segmentation: {enabled: true, fixed: true}
        hw_tc_offload: {enabled: false, fixed: false}
      ipsec_counters: {ipsec_rx_pkts: 38, ipsec_rx_bytes: 6004, ipsec_rx_drop_pkts: 0, ipsec_tx_pkts: 46,
                       ipsec_tx_bytes: 7084, ipsec_tx_drop_pkts: 0}
      tc_ingress: {filters: 0, in_hw: []}
      devlink: pci/0000:08:00.0
      offloaded_states: 2
      problems: {}
  contains:
    present:
      description: Whether the netdev exists (in O(namespace)); null when it could not be looked up.
      type: bool
      sample: true
    driver:
      description: Driver name; null when unknown.
      type: str
      sample: mlx5_core
    driver_version:
      description: Driver version; null when unknown.
      type: str
      sample: 6.12.117+deb13-amd64
    firmware_version:
      description: Firmware version; null when unknown.
      type: str
      sample: 28.39.1002 (MT_0000000359)
    bus_info:
      description: Bus address; null when unknown.
      type: str
      sample: "0000:08:00.0"
    esp_features:
      description:
        - esp_hw_offload, esp_tx_csum_hw_offload, tx_esp_segmentation and hw_tc_offload, each a dict
          with C(enabled) and C(fixed), or null when the kernel does not list it.
        - Null as a whole when ethtool could not answer.
      type: dict
      sample:
        esp_hw_offload: {enabled: true, fixed: false}
        esp_tx_csum_hw_offload: {enabled: true, fixed: true}
        tx_esp_segmentation: {enabled: true, fixed: true}
        hw_tc_offload: {enabled: false, fixed: false}
    ipsec_counters:
      description: Every C(ethtool -S) counter whose name starts with C(ipsec_); null when ethtool could not answer.
      type: dict
      sample: {ipsec_rx_pkts: 38, ipsec_tx_pkts: 46}
    tc_ingress:
      description:
        - C(filters) (number of rules on ingress) and C(in_hw) (the rules in hardware, each with pref,
          kind, chain, protocol, handle, in_hw_count and skip_sw).
        - Null when tc could not answer.
      type: dict
      sample:
        filters: 2
        in_hw:
          - {pref: 10, kind: flower, chain: 0, protocol: 802.1Q, handle: 1, in_hw_count: 1, skip_sw: false}
    devlink:
      description: The devlink handle of the device; null when none was found.
      type: str
      sample: pci/0000:08:00.0
    offloaded_states:
      description: Number of SAs offloaded to this device; null when the SAs were not read.
      type: int
      sample: 2
    problems:
      description: What could not be read and why (query name to message).
      type: dict
      sample: {"ethtool -i": "unsupported: Cannot get driver information: Operation not supported"}
devlink:
  description: Per devlink handle.
  returned: always
  type: dict
  sample:
    pci/0000:08:00.0:
      eswitch_mode: switchdev
      inline_mode: none
      encap_mode: basic
      flow_steering_mode: dmfs
      vf_ports:
        - {port: pci/0000:08:00.0/1, vfnum: 0, pfnum: 0, netdev: pf0vf0, ipsec_packet: true, ipsec_crypto: false}
      problems: {}
  contains:
    eswitch_mode:
      description: C(legacy) or C(switchdev); null when unknown.
      type: str
      sample: switchdev
    inline_mode:
      description: Inline mode; null when not reported.
      type: str
      sample: none
    encap_mode:
      description: Encap mode; null when not reported.
      type: str
      sample: basic
    flow_steering_mode:
      description: C(dmfs), C(smfs) or C(hmfs); null when unknown.
      type: str
      sample: dmfs
    vf_ports:
      description:
        - VF ports with port, vfnum, pfnum, netdev, ipsec_packet and ipsec_crypto.
        - The caps are true or false, or null when the port function reports no such capability.
      type: list
      elements: dict
      sample:
        - {port: pci/0000:08:00.0/1, vfnum: 0, pfnum: 0, netdev: pf0vf0, ipsec_packet: true, ipsec_crypto: false}
    problems:
      description: What could not be read and why.
      type: dict
      sample: {flow_steering_mode: "kernel answers: Invalid argument"}
xfrm_states:
  description:
    - One entry per SA with src, dst, proto, spi (0x%08x), spi_int, reqid, mode, flags, dir, sel_src,
      sel_dst, offloaded, offload_dev, offload_dir, offload_mode (crypto, packet, or null when this
      iproute2 does not print it), replay_window, seq, oseq, bytes, packets, replay_window_errors,
      replay_errors, integrity_failed, added and last_used.
    - Never any key material. Empty when O(sa_counters=false).
  returned: always
  type: list
  elements: dict
  sample:
    - src: 192.168.100.1
      dst: 192.168.100.2
      proto: esp
      spi: "0x00001000"
      spi_int: 4096
      reqid: 1371537409
      mode: transport
      flags: [esn]
      dir: out
      sel_src: 192.168.100.1/32
      sel_dst: 192.168.100.2/32
      offloaded: true
      offload_dev: p0
      offload_dir: out
      offload_mode: packet
      replay_window: 0
      seq: 0
      oseq: 10
      bytes: 640
      packets: 10
      replay_window_errors: 0
      replay_errors: 0
      integrity_failed: 0
      added: "2026-11-24 09:09:18"
      last_used: "2026-11-24 09:09:21"
xfrm_health:
  description:
    - The SA lifecycle, as this host sees it (owned objects only; the pair view across hosts is
      C(playbooks/verify.yml)). Empty lists when all is well; null when O(sa_counters=false) or the
      policies could not be read.
    - C(policies_without_sa) - an owned allow policy whose template (reqid, destination) has no SA
      here (the SA was lost; its traffic is dropped).
    - C(guards_active) - a guard policy whose SA policy is gone (link down flushed a packet-offloaded
      policy, or a reboot) - the guard is what drops the protected traffic now.
    - C(sas_without_policy) - an owned SA no owned policy selects (a remnant).
  returned: always
  type: dict
  sample: {policies_without_sa: ["SP src 10.0.0.1/32 dst 10.0.0.2/32 dir out (reqid 0x51c00001)"],
           guards_active: [], sas_without_policy: []}
xfrm_states_problem:
  description: Why the SAs could not be read; null when they were.
  returned: always
  type: str
  sample: "RTNETLINK answers: Operation not permitted"
summary:
  description: Readiness for IPsec packet offload.
  returned: always
  type: dict
  sample:
    packet_offload_ready: false
    reasons:
      - "p0: esp-hw-offload is off: enable it with 'ethtool -K p0 esp-hw-offload on'"
    unverified: []
  contains:
    packet_offload_ready:
      description: True when nothing is missing and nothing was left unverified.
      type: bool
      sample: false
    reasons:
      description: What is missing, each entry saying what to do about it.
      type: list
      elements: str
      sample: ["p0: esp-hw-offload is off: enable it with 'ethtool -K p0 esp-hw-offload on'"]
    unverified:
      description: What could not be checked.
      type: list
      elements: str
      sample: ["p0: driver unknown (unsupported: Cannot get driver information: Operation not supported)"]
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _devlink as D
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._ethtool import Ethtool, esp_features
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _iproute2 as IP
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _kernel as K
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _tc as TC
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_text as XT

# Vendor (MLNX_EN "IPsec Full Offload"): "This feature requires Linux kernel v6.6, or higher".
MIN_KERNEL = (6, 6)
MLX5_DRIVER = "mlx5_core"

# Root for the host files we read; tests point it at a temporary tree.
FS_ROOT = "/"


# ---------------------------------------------------------------------------------------------
# Pure: the readiness summary.  The parsers of what the host prints are in module_utils (one per
# tool output): _kernel, _iproute2, _xfrm_text, _devlink, _ethtool, _tc.
# ---------------------------------------------------------------------------------------------

def summarize(result, devices_given, namespace=None, drivers=(MLX5_DRIVER,)):
    """Readiness for packet offload from the gathered facts -> (ready, reasons, unverified)."""
    reasons, unverified = [], []
    _summarize_host(result, reasons, unverified)
    if not devices_given:
        unverified.append("no devices given: NIC capabilities not checked")
    for name, dev in sorted(result["devices"].items()):
        _summarize_device(name, dev, namespace, drivers, reasons, unverified)
    _summarize_devlink(result, reasons, unverified)
    return not reasons and not unverified, reasons, unverified


def _summarize_host(result, reasons, unverified):
    """The kernel's version and features, iproute2's offload packet."""
    kernel = result["kernel"]
    if kernel["meets_packet_offload_minimum"] is None:
        unverified.append("kernel release %r is not numeric: version not checked" % kernel["release"])
    elif not kernel["meets_packet_offload_minimum"]:
        reasons.append("kernel %s is older than %d.%d, the minimum NVIDIA documents for IPsec packet "
                       "(full) offload: upgrade the kernel" % ((kernel["version"],) + MIN_KERNEL))

    ipr = result["iproute2"]
    if ipr["offload_packet"] is False:
        reasons.append("this ip (iproute2 %s) does not accept 'offload packet' (added in iproute2 6.2): "
                       "upgrade iproute2" % (ipr["version"] or "unknown version"))
    elif ipr["offload_packet"] is None:
        unverified.append("could not tell whether ip accepts 'offload packet' (%s)"
                          % ("ip not found" if not ipr["present"] else "usage text not recognised"))

    feats = kernel["features"]
    usable = ("loaded", "builtin", "module")
    esp = (feats["esp4"], feats["esp6"])
    if esp == ("absent", "absent"):
        reasons.append("the kernel has no ESP (CONFIG_INET_ESP/esp4 and CONFIG_INET6_ESP/esp6 absent)")
    elif not any(state in usable for state in esp):
        unverified.append("could not tell whether the kernel has ESP (no /proc/modules, modules.builtin, "
                          "modules.dep or kernel config readable)")
    for name, what in (("xfrm_user", "CONFIG_XFRM_USER: ip xfrm cannot talk to the kernel"),
                       ("xfrm_offload", "CONFIG_XFRM_OFFLOAD: no IPsec offload at all"),
                       ("gcm", "CONFIG_CRYPTO_GCM: rfc4106(gcm(aes)) SAs cannot be created, offloaded or not")):
        if feats[name] == "absent":
            reasons.append("the kernel lacks %s (%s)" % (name, what))
    if feats["mlx5_ipsec"] == "absent" and any(d.get("driver") == MLX5_DRIVER for d in result["devices"].values()):
        reasons.append("the kernel is built without CONFIG_MLX5_EN_IPSEC: mlx5 offers no IPsec offload")


def _summarize_device(name, dev, namespace, drivers, reasons, unverified):
    """One netdev: present, its driver, esp-hw-offload, offloaded TC rules before IPsec, devlink."""
    if dev["present"] is None:
        unverified.append("%s: could not look the device up (%s)" % (name, dev["problems"].get("ip link")))
        return
    if not dev["present"]:
        reasons.append("%s: no such network device%s" % (name, (" in namespace %s" % namespace) if namespace else ""))
        return
    if dev["driver"] is None:
        unverified.append("%s: driver unknown (%s)" % (name, dev["problems"].get("ethtool -i", "no answer")))
    elif dev["driver"] not in drivers:
        reasons.append("%s: driver is %s, not %s (this collection drives mlx5 packet offload; "
                       "packet_offload_drivers lists the drivers accepted)"
                       % (name, dev["driver"], " or ".join(drivers)))
    feat = (dev["esp_features"] or {}).get("esp_hw_offload")
    if feat is None:
        unverified.append("%s: esp-hw-offload unknown (%s)" % (name, dev["problems"].get("ethtool -k", "not listed by ethtool -k")))
    elif not feat["enabled"]:
        if feat["fixed"]:
            reasons.append("%s: esp-hw-offload is off [fixed]: the driver/firmware offers no IPsec offload on "
                           "this netdev (a crypto-enabled ConnectX/BlueField and mlx5 IPsec support are needed)" % name)
        else:
            reasons.append("%s: esp-hw-offload is off: enable it with 'ethtool -K %s esp-hw-offload on'" % (name, name))
    tc = dev["tc_ingress"]
    if tc and tc["in_hw"]:
        if dev["offloaded_states"] is None:
            unverified.append("%s: %d offloaded TC rule(s) on ingress and the SAs were not read: mlx5 refuses "
                              "the first offloaded IPsec SA/policy (EBUSY) while such rules exist" % (name, len(tc["in_hw"])))
        elif dev["offloaded_states"] == 0:
            reasons.append("%s: %d offloaded TC rule(s) on ingress: mlx5 refuses the first offloaded IPsec "
                           "SA/policy (EBUSY) while they exist; create the IPsec states/policies first, then "
                           "the TC rules" % (name, len(tc["in_hw"])))
    if dev["driver"] == MLX5_DRIVER and dev["devlink"] is None:
        unverified.append("%s: no devlink device found: eswitch and steering mode not checked" % name)


def _summarize_devlink(result, reasons, unverified):
    """Each devlink device in switchdev: dmfs, and the VF port functions' IPsec capabilities."""
    for handle, dl in sorted(result["devlink"].items()):
        if dl["eswitch_mode"] != "switchdev":
            continue
        fsm = dl["flow_steering_mode"]
        if fsm == "smfs":
            reasons.append("%s: flow_steering_mode is smfs in switchdev mode: packet offload needs dmfs; set the "
                           "eswitch to legacy, set flow_steering_mode dmfs, then switchdev again" % handle)
        elif fsm is None:
            unverified.append("%s: flow_steering_mode unknown (%s)" % (handle, dl["problems"].get("flow_steering_mode", "not reported")))
        # IPsec on this device's own netdev (the PF / uplink): mlx5 refuses the PF's offloaded SAs and
        # policies while any VF holds an IPsec capability (eswitch.c mlx5_eswitch_block_ipsec), and
        # the VFs need none. IPsec on VF netdevs (RoCE over VF): every VF port needs ipsec_packet.
        on_pf = sorted(n for n, d in result["devices"].items() if d.get("devlink") == handle)
        if on_pf:
            held = [vf["port"] for vf in dl["vf_ports"] if vf["ipsec_packet"] or vf["ipsec_crypto"]]
            if held:
                reasons.append("%s: IPsec is offloaded to %s (the PF) while the VF port function(s) %s have "
                               "ipsec_crypto/ipsec_packet enabled: mlx5 refuses the PF's offloaded SAs and "
                               "policies then (EBUSY); disable them on the VFs (nic_prep_vf_ipsec_packet: []), "
                               "or run IPsec on the VF netdevs instead" % (handle, ", ".join(on_pf), ", ".join(held)))
            continue
        if any(d.get("present") and d.get("devlink") is None for d in result["devices"].values()):
            continue  # PF or VF netdev cannot be told (reported above as unverified for mlx5)
        for vf in dl["vf_ports"]:
            what = "%s (VF %s%s)" % (vf["port"], vf["vfnum"], (", netdev %s" % vf["netdev"]) if vf["netdev"] else "")
            if vf["ipsec_packet"] is False:
                reasons.append("%s: ipsec_packet is disabled on the port function: unbind the VF, run 'devlink "
                               "port function set %s ipsec_packet enable', bind it again" % (what, vf["port"]))
            elif vf["ipsec_packet"] is None:
                reasons.append("%s: the port function reports no ipsec_packet capability (driver/firmware "
                               "without VF IPsec packet offload)" % what)


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------

def _host_path(path):
    return os.path.join(FS_ROOT, path.lstrip("/"))


def _read_text(path):
    """Text of a host file, or None when it is missing/unreadable (.gz is decompressed)."""
    full = _host_path(path)
    try:
        if full.endswith(".gz"):
            import gzip
            with gzip.open(full, "rt", encoding="utf-8", errors="replace") as fh:
                return fh.read()
        with open(full, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except (IOError, OSError, EOFError):
        return None


def kernel_release():
    return os.uname().release


def gather_kernel():
    release = kernel_release()
    vt = K.version_tuple(release)
    loaded_text = _read_text("/proc/modules")
    builtin_text = _read_text("/lib/modules/%s/modules.builtin" % release)
    dep_text = _read_text("/lib/modules/%s/modules.dep" % release)
    config_text = _read_text("/proc/config.gz")
    if config_text is None:
        config_text = _read_text("/boot/config-%s" % release)
    features = K.kernel_features(
        loaded=K.parse_proc_modules(loaded_text) if loaded_text is not None else None,
        builtin=K.parse_module_paths(builtin_text) if builtin_text is not None else None,
        available=K.parse_module_paths(dep_text) if dep_text is not None else None,
        config=K.parse_kernel_config(config_text) if config_text is not None else None)
    stat_text = _read_text("/proc/net/xfrm_stat")
    return {
        "release": release,
        "version": ".".join(str(n) for n in vt) if vt else None,
        "meets_packet_offload_minimum": (vt[:2] >= MIN_KERNEL) if vt else None,
        "features": features,
        "xfrm_stat_present": stat_text is not None,
        "xfrm_stat": K.parse_xfrm_stat(stat_text),
    }


class Gatherer:
    """Read-only queries.  Every method returns data plus a short problem text instead of raising."""

    def __init__(self, module, namespace):
        self.module = module
        self.namespace = namespace
        self.ip_host = IP.Ip(Runner(module, "ip", required=False))  # tool facts: no namespace needed
        # Tools without their own netns option run under `ip netns exec`, which needs ip.
        self.can_enter = self.ip_host.available() or not namespace
        self.ip = IP.Ip(Runner(module, "ip", namespace=namespace, required=False))
        self.tc = TC.TcClient(Runner(module, "tc", namespace=namespace, required=False), self.ip)
        self.devlink = D.Devlink(Runner(module, "devlink", namespace=namespace, required=False)) if self.can_enter else None
        self.ethtool = Ethtool(module, namespace=namespace) if self.can_enter else None

    @staticmethod
    def _try(client, method, *args, stdout_in_errors=True):
        """Run a read-only query, ``client``'s ``method`` with ``args`` (an Ip, a TcClient, a Runner)
        -> (its text or decoded JSON, None) or (None, problem text).

        ``stdout_in_errors=False`` keeps stdout (which may hold SA text) out of the problem text.
        """
        if client is None:
            return None, "absent: ip is needed to run commands in the namespace"
        if not client.available():
            return None, "absent: %s is not installed" % client.tool
        try:
            return getattr(client, method)(*args), None
        except ToolError as exc:
            if not stdout_in_errors:
                err = exc.stderr.strip()
                return None, (err.splitlines()[-1] if err else "failed with rc=%s" % exc.rc)
            return None, exc.tool_message

    def tools(self):
        return {"ip": self.ip_host.available(), "tc": self.tc.available(),
                "ethtool": bool(self.ethtool and self.ethtool.available()),
                "devlink": bool(self.devlink and self.devlink.available())}

    def namespaces(self):
        out, problem = self._try(self.ip_host, "netns_text")
        return (IP.parse_netns_list(out) if out is not None else None), problem

    def iproute2(self):
        res = {"present": self.ip_host.available(), "version": None, "offload_packet": None,
               "list_nokeys": None, "sa_dir": None}
        if not res["present"]:
            return res
        res["version"] = IP.parse_ip_version(self.ip_host.version_text())
        usage, problem = self._try(self.ip_host, "state_usage")
        if usage is not None:
            res.update(XT.parse_state_usage(usage))
        return res

    def device(self, name, dl_ports, dl_devs):
        dev = {"present": False, "driver": None, "driver_version": None, "firmware_version": None,
               "bus_info": None, "esp_features": None, "ipsec_counters": None, "tc_ingress": None,
               "devlink": None, "offloaded_states": None, "problems": {}}
        link, problem = self._try(self.ip, "links_json", name)
        parsed = IP.parse_link(link)
        if parsed is None:
            dev["problems"]["ip link"] = problem or "no such device"
            if problem and problem.startswith("absent:"):
                dev["present"] = None
            return dev
        dev["present"] = True
        if self.ethtool is None:
            for q in ("ethtool -i", "ethtool -k", "ethtool -S"):
                dev["problems"][q] = "absent: ip is needed to run ethtool in the namespace"
        else:
            info, problem = self.ethtool.driver_info(name)
            if info is not None:
                dev["driver"] = info.get("driver") or None
                dev["driver_version"] = info.get("version") or None
                dev["firmware_version"] = info.get("firmware_version") or None
                dev["bus_info"] = info.get("bus_info") or None
            else:
                dev["problems"]["ethtool -i"] = problem
            feats, problem = self.ethtool.features(name)
            if feats is not None:
                dev["esp_features"] = esp_features(feats)
            else:
                dev["problems"]["ethtool -k"] = problem
            counters, problem = self.ethtool.ipsec_counters(name)
            if counters is not None:
                dev["ipsec_counters"] = counters
            else:
                dev["problems"]["ethtool -S"] = problem
        tc, problem = self._try(self.tc, "filters_text", name)
        if problem is None:
            try:
                dev["tc_ingress"] = TC.tc_offloaded(tc)
            except TC.ParseError as exc:
                problem = str(exc)
        if problem is not None:
            dev["problems"]["tc filter"] = problem
        handle = D.device_of_netdev(dl_ports, name)
        if handle is None and parsed["parent"] and parsed["parent"] in (dl_devs or ()):
            handle = parsed["parent"]
        dev["devlink"] = handle
        return dev

    def devlink_index(self):
        """-> (set of devlink handles, or None when devlink cannot answer; list of ports; problem)."""
        devs, problem = self._try(self.devlink, "devices_json")
        if problem:
            return None, [], problem
        ports, problem = self._try(self.devlink, "ports_json")
        if problem:
            return D.parse_dev_handles(devs), [], problem
        try:
            return D.parse_dev_handles(devs), D.parse_ports(ports), None
        except D.DevlinkParseError as exc:
            return D.parse_dev_handles(devs), [], "devlink -j port show: %s" % exc

    def devlink_device(self, handle, ports):
        dl = {"eswitch_mode": None, "inline_mode": None, "encap_mode": None, "flow_steering_mode": None,
              "vf_ports": D.vf_ports(ports, handle), "problems": {}}
        obj, problem = self._try(self.devlink, "eswitch_json", handle)
        try:
            if problem is None:
                dl.update(D.eswitch_facts(obj, handle))
        except D.DevlinkParseError as exc:
            problem = str(exc)
        if problem is not None:
            dl["problems"]["eswitch"] = problem
        obj, problem = self._try(self.devlink, "param_json", handle, "flow_steering_mode")
        try:
            if problem is None:
                dl["flow_steering_mode"] = D.param_value(obj, handle, "flow_steering_mode")
        except D.DevlinkParseError as exc:
            problem = str(exc)
        if problem is not None:
            dl["problems"]["flow_steering_mode"] = problem
        return dl

    def xfrm_states(self, nokeys):
        out, problem = self._try(self.ip, "xfrm_text", "state", nokeys, True, stdout_in_errors=False)
        if problem:
            return None, problem
        # Parse at once: only counters leave the parser; the raw text goes no further.
        return XT.parse_xfrm_sa_counters(out), None


def xfrm_health(states, policies, rng):
    """Owned objects of one host -> {policies_without_sa, guards_active, sas_without_policy}.

    ``states``: xfrm_states entries (dst, spi, reqid); ``policies``: X.parse_policies output."""
    owned = X.SPKind(rng)
    sa_ids = {(sa.get("dst"), sa.get("reqid")) for sa in states if rng[0] <= (sa.get("reqid") or 0) <= rng[1]}
    allow, guards = {}, []
    for sp in policies:
        if not owned.owned(sp):
            continue
        if _guard.is_guard(sp, rng):
            guards.append(sp)
        elif sp.get("action") != "block":
            allow[(sp["src"], sp["dst"], sp.get("proto"), sp.get("sport"), sp.get("dport"), sp["dir"])] = sp
    out = {"policies_without_sa": [], "guards_active": [], "sas_without_policy": []}
    wanted = set()
    for sp in allow.values():
        for t in sp["tmpls"]:
            wanted.add((t.get("dst"), t.get("reqid")))
            if (t.get("dst"), t.get("reqid")) not in sa_ids:
                out["policies_without_sa"].append("%s (reqid 0x%08x)" % (owned.describe(sp), t["reqid"]))
    for g in guards:
        k = (g["src"], g["dst"], g.get("proto"), g.get("sport"), g.get("dport"), g["dir"])
        if k not in allow:
            text = "%s (reqid 0x%08x)" % (owned.describe(g), g["tmpls"][0]["reqid"])
            if text not in out["guards_active"]:
                out["guards_active"].append(text)
    for sa in states:
        r = sa.get("reqid") or 0
        if rng[0] <= r <= rng[1] and (sa.get("dst"), r) not in wanted:
            out["sas_without_policy"].append("SA src %s dst %s spi %s (reqid 0x%08x)" % (sa.get("src"), sa.get("dst"), sa.get("spi"), r))
    return out


def validate(params):
    devices = []
    for i, name in enumerate(params["devices"] or []):
        V.ifname("devices[%d]" % i, name)
        if name not in devices:
            devices.append(name)
    handles = []
    for i, handle in enumerate(params["devlink"] or []):
        V.devlink_handle("devlink[%d]" % i, handle)
        if handle not in handles:
            handles.append(handle)
    ns = V.netns("namespace", params["namespace"])
    return devices, handles, ns


_DRIVER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def validate_drivers(drivers):
    if not drivers:
        raise V.InputError("packet_offload_drivers", "is empty: give at least one driver (the default is %s)" % MLX5_DRIVER)
    for i, name in enumerate(drivers):
        if not isinstance(name, str) or not _DRIVER_RE.fullmatch(name):
            raise V.InputError("packet_offload_drivers[%d]" % i, "%s is not a driver name (as ethtool -i prints it: "
                                                                 "letters, digits, _ and -)" % V.show(name))
    return drivers


def main():
    module = AnsibleModule(
        argument_spec={
            "devices": {"type": "list", "elements": "str", "default": []},
            "devlink": {"type": "list", "elements": "str", "default": []},
            "sa_counters": {"type": "bool", "default": True},
            "owned_reqid_range": {"type": "list", "elements": "raw"},
            "namespace": {"type": "str"},
            "packet_offload_drivers": {"type": "list", "elements": "str", "default": [MLX5_DRIVER]},
        },
        supports_check_mode=True,
    )
    try:
        devices, handles, ns = validate(module.params)
        drivers = validate_drivers(module.params["packet_offload_drivers"])
        rng = X.owned_range(module.params["owned_reqid_range"])
    except V.InputError as exc:
        module.fail_json(msg=str(exc))

    g = Gatherer(module, ns)
    if ns:
        names, problem = g.namespaces()
        if names is None:
            module.fail_json(msg="namespace: cannot list network namespaces (%s)" % problem)
        if ns not in names:
            module.fail_json(msg="namespace: network namespace %r does not exist; create it (ip netns add %s) "
                                 "or omit the option" % (ns, ns))

    result = {"changed": False, "tools": g.tools(), "iproute2": g.iproute2(), "kernel": gather_kernel(),
              "devices": {}, "devlink": {}, "xfrm_states": [], "xfrm_states_problem": None, "xfrm_health": None}

    dl_devs, dl_ports, dl_problem = g.devlink_index()
    for name in devices:
        dev = g.device(name, dl_ports, dl_devs)
        if dl_problem and dev["present"]:
            dev["problems"]["devlink"] = dl_problem
        result["devices"][name] = dev

    wanted = list(handles)
    for dev in result["devices"].values():
        if dev["devlink"] and dev["devlink"] not in wanted:
            wanted.append(dev["devlink"])
    for handle in wanted:
        if dl_devs is not None and handle in dl_devs:
            result["devlink"][handle] = g.devlink_device(handle, dl_ports)
            continue
        result["devlink"][handle] = {
            "eswitch_mode": None, "inline_mode": None, "encap_mode": None, "flow_steering_mode": None,
            "vf_ports": [], "problems": {"device": dl_problem if dl_devs is None else "no such devlink device"}}

    if module.params["sa_counters"]:
        sas, problem = g.xfrm_states(nokeys=result["iproute2"]["list_nokeys"] is not False)
        if sas is not None:
            result["xfrm_states"] = sas
            for name, dev in result["devices"].items():
                if dev["present"]:
                    dev["offloaded_states"] = sum(1 for sa in sas if sa["offload_dev"] == name)
            out, problem = g._try(g.ip, "xfrm_text", "policy", stdout_in_errors=False)
            if problem is None:
                result["xfrm_health"] = xfrm_health(sas, X.parse_policies(out), rng)
        else:
            result["xfrm_states_problem"] = problem

    ready, reasons, unverified = summarize(result, bool(devices), ns, tuple(drivers))
    result["summary"] = {"packet_offload_ready": ready, "reasons": reasons, "unverified": unverified}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
