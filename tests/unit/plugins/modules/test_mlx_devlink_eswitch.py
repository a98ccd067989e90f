# -*- coding: utf-8 -*-
"""mlx_devlink_eswitch against a scripted devlink (a small state machine that answers like mlx5 or
netdevsim, with the kernel's own error texts from ../shared/reference/samples) and a fake sysfs."""
from __future__ import annotations

import json
import re

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _sysfs
from ansible_collections.ipsec_offload.mlx5.plugins.modules import mlx_devlink_eswitch as mod
from fake_sysfs import FakeSysfs
from harness import FakeHost, fixture, run_module

PF = "0000:08:00.0"
DEV = "pci/" + PF
NSIM = "netdevsim/netdevsim1"

# kernel messages, verbatim from the samples
FSM_IN_SWITCHDEV = ("Error: mlx5_core: Changing fs mode is not supported when eswitch offloads enabled.\n"
                    "kernel answers: Operation not supported\n")  # kernel_and_driver_error_messages.txt
IPSEC_BLOCKS_MODE = ("Error: mlx5_core: Can't change eswitch mode when IPsec SA and/or policies are configured.\n"
                     "kernel answers: Operation not supported\n")
NO_PACKET = "Error: mlx5_core: Device doesn't support IPsec packet mode.\nkernel answers: Operation not supported\n"
NSIM_NO_CAP = "Error: Port doesn't support %s function attribute.\nkernel answers: Operation not supported\n"  # 03-port-function.txt
NSIM_NO_PARAM = "kernel answers: Invalid argument\n"  # 04-params.txt


class FakeDevlink:
    """devlink for one device.  mlx5 style: uplink port 65535, VF i on port 1+i with caps;
    netdevsim style: port 0, VF i on port 128+i, no caps, no steering parameter, no encap."""

    def __init__(self, handle=DEV, kind="mlx5", mode="legacy", fsm="smfs", encap="basic", num_vfs=2, caps=True):
        self.handle, self.kind, self.mode = handle, kind, mode
        self.fsm = fsm if kind == "mlx5" else None
        self.encap = encap if kind == "mlx5" else None
        self._num_vfs = num_vfs  # an int, or a callable (VF count read from the fake sysfs)
        self.caps = {i: {"ipsec_crypto": False, "ipsec_packet": False} for i in range(self.num_vfs)} if (
            caps and kind == "mlx5") else None
        self.fail = {}  # text of argv[1:] -> (rc, out, err), one shot

    @property
    def num_vfs(self):
        return self._num_vfs() if callable(self._num_vfs) else self._num_vfs

    def vf_port(self, i):
        return "%s/%d" % (self.handle, (1 + i) if self.kind == "mlx5" else (128 + i))

    def ports_json(self):
        ports = {}
        if self.kind == "mlx5":
            ports["%s/65535" % self.handle] = {"type": "eth", "netdev": "p0", "flavour": "physical", "port": 0,
                                               "splittable": False}
        else:
            ports["%s/0" % self.handle] = {"type": "eth", "netdev": "eth0", "flavour": "physical", "port": 1,
                                           "splittable": False}
        if self.mode == "switchdev":
            for i in range(self.num_vfs):
                p = {"type": "eth", "netdev": ("pf0vf%d" % i) if self.kind == "mlx5" else "eth%d" % (i + 1),
                     "flavour": "pcivf", "controller": 0, "pfnum": 0, "vfnum": i, "external": False,
                     "splittable": False}
                if self.caps is not None:
                    p["function"] = {"hw_addr": "00:00:00:00:00:00", "roce": "enable",
                                     "ipsec_crypto": "enable" if self.caps[i]["ipsec_crypto"] else "disable",
                                     "ipsec_packet": "enable" if self.caps[i]["ipsec_packet"] else "disable"}
                ports[self.vf_port(i)] = p
        return json.dumps({"port": ports})

    def __call__(self, argv, stdin):
        args = argv[1:]
        key = " ".join(args)
        if key in self.fail:
            return self.fail.pop(key)
        if args[:4] == ["-j", "dev", "eswitch", "show"]:
            attrs = {"mode": self.mode}
            if self.kind == "mlx5":
                attrs.update({"inline-mode": "none", "encap-mode": self.encap})
            return 0, json.dumps({"dev": {self.handle: attrs}}), ""
        if args[:4] == ["-j", "dev", "param", "show"]:
            if self.fsm is None:
                return 1, "", NSIM_NO_PARAM
            return 0, json.dumps({"param": {self.handle: [{"name": "flow_steering_mode", "type": "driver-specific",
                                                           "values": [{"cmode": "runtime", "value": self.fsm}]}]}}), ""
        if args[:3] == ["-j", "port", "show"]:
            return 0, self.ports_json(), ""
        if args[:3] == ["dev", "eswitch", "set"]:
            if args[4] == "mode":
                self.mode = args[5]
            elif args[4] == "encap-mode":
                if self.encap is None:
                    return 1, "", "kernel answers: Operation not supported\n"
                self.encap = args[5]
            return 0, "", ""
        if args[:3] == ["dev", "param", "set"]:
            if self.fsm is None:
                return 1, "", NSIM_NO_PARAM
            if self.mode == "switchdev":
                return 1, "", FSM_IN_SWITCHDEV
            self.fsm = args[7]
            return 0, "", ""
        if args[:3] == ["port", "function", "set"]:
            port, cap, word = args[3], args[4], args[5]
            if self.caps is None:
                return 1, "", NSIM_NO_CAP % cap
            i = [n for n in range(self.num_vfs) if self.vf_port(n) == port][0]
            self.caps[i][cap] = word == "enable"
            return 0, "", ""
        raise AssertionError("fake devlink: unexpected %r" % argv)


def host_for(dl, xfrm_state="", xfrm_policy="", tc=None):
    tc = tc or {}
    return FakeHost([
        (("devlink",), dl),
        (("ip", "xfrm", "state", "list", "nokeys"), (0, xfrm_state, "")),
        (("ip", "xfrm", "policy", "list"), (0, xfrm_policy, "")),
        (("tc", "-j", "filter", "show", "dev"), lambda argv, stdin: (0, tc.get(argv[5], "[]"), "")),
    ])


def writes(host):
    """Commands that change something (everything but the reads)."""
    return [c for c in host.commands() if not (c[:2] == ["devlink", "-j"] or c[0] in ("ip", "tc"))]


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    t = FakeSysfs(tmp_path / "sys")
    t.install(monkeypatch, _sysfs)
    devdir = t.add_pci_pf(PF, netdevs=("p0", "pf0vf0", "pf0vf1"), total_vfs=4)
    t.set_vfs(devdir, 2)
    t.set_vfs(t.add_netdevsim("netdevsim1", netdevs=("eth0",)), 2)
    t.writes.clear()
    return t


def fx(name):
    return "".join(fixture("devlink/" + name).splitlines(True)[1:])


# ------------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("args,field", [
    ({"device": "pci/0000:08:00.0; reboot"}, "device"),
    ({"device": "eth0"}, "device"),
    ({"device": DEV + "\n"}, "device"),
    ({"device": DEV, "port_functions": [{"port": DEV + "/1", "vf": 0, "ipsec_packet": True}]}, "port_functions[0]"),
    ({"device": DEV, "port_functions": [{"ipsec_packet": True}]}, "port_functions[0]"),
    ({"device": DEV, "port_functions": [{"port": "pci/0000:09:00.0/1", "ipsec_packet": True}]},
     "port_functions[0].port"),
    ({"device": DEV, "port_functions": [{"port": DEV + "/1 x", "ipsec_packet": True}]}, "port_functions[0].port"),
    ({"device": DEV, "port_functions": [{"vf": 0}]}, "port_functions[0]"),
    ({"device": DEV, "port_functions": [{"vf": -1, "ipsec_packet": True}]}, "port_functions[0].vf"),
    ({"device": DEV, "port_functions": [{"vf": 0, "ipsec_packet": True}, {"vf": 0, "ipsec_crypto": True}]},
     "port_functions[1]"),
    ({"device": DEV, "port_functions": [{"port": DEV + "/1", "controller": 1, "ipsec_packet": True}]},
     "port_functions[0].controller"),
])
def test_bad_input_names_the_field_and_touches_nothing(sysfs, args, field):
    host = host_for(FakeDevlink())
    res, failed = run_module(mod.main, args, host)
    assert failed and res["field"] == field and res["msg"].startswith(field + ":")
    assert host.commands() == [] and sysfs.writes == []


# ------------------------------------------------------------------------ the mlx5 sequence

FULL = {"device": DEV, "flow_steering_mode": "dmfs", "mode": "switchdev",
        "port_functions": [{"vf": 0, "ipsec_packet": True}]}

FULL_STEPS = [
    "devlink dev param set pci/0000:08:00.0 name flow_steering_mode value dmfs cmode runtime",
    "echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/unbind",
    "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/unbind",
    "devlink dev eswitch set pci/0000:08:00.0 mode switchdev",
    "devlink port function set pci/0000:08:00.0/1 ipsec_packet enable",
    "echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/bind",
    "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/bind",
]


def test_legacy_to_switchdev_with_dmfs_and_ipsec_packet_in_order(sysfs):
    dl = FakeDevlink()
    host = host_for(dl)
    res, failed = run_module(mod.main, FULL, host)
    assert not failed, res["msg"]
    assert res["changed"] and res["steps"] == FULL_STEPS
    assert writes(host) == [
        ["devlink", "dev", "param", "set", DEV, "name", "flow_steering_mode", "value", "dmfs", "cmode", "runtime"],
        ["devlink", "dev", "eswitch", "set", DEV, "mode", "switchdev"],
        ["devlink", "port", "function", "set", DEV + "/1", "ipsec_packet", "enable"],
    ]
    assert sysfs.writes == [
        ("/sys/bus/pci/drivers/mlx5_core/unbind", "0000:08:00.2"), ("/sys/bus/pci/drivers/mlx5_core/unbind", "0000:08:00.3"),
        ("/sys/bus/pci/drivers/mlx5_core/bind", "0000:08:00.2"), ("/sys/bus/pci/drivers/mlx5_core/bind", "0000:08:00.3")]
    assert (dl.mode, dl.fsm, dl.caps[0]["ipsec_packet"]) == ("switchdev", "dmfs", True)
    assert res["before"]["mode"] == "legacy" and res["before"]["flow_steering_mode"] == "smfs"
    assert res["after"]["mode"] == "switchdev" and res["after"]["flow_steering_mode"] == "dmfs"
    assert [p["ipsec_packet"] for p in res["after"]["ports"] if p["vf"] == 0] == [True]
    assert res["vfs_unbound"] == ["0000:08:00.2", "0000:08:00.3"]
    assert sysfs.vf_driver("0000:08:00.2") == "mlx5_core"
    # the busy scan ran before anything changed, over the PF's and representors' netdevs
    first_write = host.commands().index(writes(host)[0])
    reads = host.commands()[:first_write]
    assert ["ip", "xfrm", "state", "list", "nokeys"] in reads and ["ip", "xfrm", "policy", "list"] in reads
    assert ["tc", "-j", "filter", "show", "dev", "p0", "ingress"] in reads

    # second run: nothing to do, no write, no sysfs write, no busy scan
    host2 = host_for(dl)
    sysfs.writes.clear()
    res2, failed2 = run_module(mod.main, FULL, host2)
    assert not failed2 and not res2["changed"] and res2["steps"] == []
    assert writes(host2) == [] and sysfs.writes == []
    assert [c[0] for c in host2.commands()] == ["devlink", "devlink", "devlink"]


def test_check_mode_lists_the_steps_and_changes_nothing(sysfs):
    dl = FakeDevlink()
    host = host_for(dl)
    res, failed = run_module(mod.main, FULL, host, check_mode=True, diff=True)
    assert not failed and res["changed"]
    assert res["steps"][:4] == FULL_STEPS[:4]
    assert res["steps"][4].startswith("devlink port function set <port of VF 0> ipsec_packet enable")
    assert res["steps"][5:] == FULL_STEPS[5:]
    assert writes(host) == [] and sysfs.writes == []
    assert (dl.mode, dl.fsm) == ("legacy", "smfs")
    assert "mode: switchdev" in res["diff"]["after"] and "flow_steering_mode: dmfs" in res["diff"]["after"]
    assert "mode: legacy" in res["diff"]["before"]


def test_check_mode_in_switchdev_knows_the_ports(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    res, failed = run_module(mod.main, {"device": DEV, "port_functions": [{"vf": 1, "ipsec_crypto": True}]},
                             host_for(dl), check_mode=True, diff=True)
    assert not failed and res["steps"] == [
        "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/unbind",  # only the VF whose port changes
        "devlink port function set pci/0000:08:00.0/2 ipsec_crypto enable",
        "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/bind"]
    assert "port pci/0000:08:00.0/2 (vf 1): ipsec_crypto=disable ipsec_packet=disable" in res["diff"]["before"]
    assert "port pci/0000:08:00.0/2 (vf 1): ipsec_crypto=enable ipsec_packet=disable" in res["diff"]["after"]
    assert sysfs.writes == []


def test_unbind_vfs_false_leaves_vfs_alone(sysfs):
    dl = FakeDevlink()
    res, failed = run_module(mod.main, dict(FULL, unbind_vfs=False), host_for(dl))
    assert not failed and res["vfs_unbound"] == [] and sysfs.writes == []
    assert [s for s in res["steps"] if s.startswith("echo")] == []


def test_vf_bound_to_vfio_is_refused_before_anything(sysfs):
    sysfs.add_pci_driver("vfio-pci")
    sysfs.set_vf_driver("0000:08:00.3", "vfio-pci")
    host = host_for(FakeDevlink())
    res, failed = run_module(mod.main, FULL, host)
    assert failed and res["field"] == "unbind_vfs"
    assert "VF 1 (0000:08:00.3) is bound to vfio-pci" in res["msg"] and "unbind_vfs: false" in res["msg"]
    assert writes(host) == [] and sysfs.writes == []


# ---------------------------------------------------------------------- steering in switchdev

def test_steering_change_in_switchdev_is_refused_with_what_to_do(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="smfs")
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": DEV, "flow_steering_mode": "dmfs"}, host)
    assert failed and res["field"] == "flow_steering_mode"
    assert "switchdev mode" in res["msg"] and "steering_via_legacy: true" in res["msg"]
    # both kernels' words: 6.12 (the lab's) and later
    assert "'Software managed steering is not supported when eswitch offloads enabled.'" in res["msg"]
    assert "'Changing fs mode is not supported when eswitch offloads enabled'" in res["msg"]
    assert writes(host) == []


def test_steering_via_legacy_goes_through_legacy(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="smfs")
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": DEV, "flow_steering_mode": "dmfs", "steering_via_legacy": True},
                             host)
    assert not failed, res["msg"]
    assert writes(host) == [
        ["devlink", "dev", "eswitch", "set", DEV, "mode", "legacy"],
        ["devlink", "dev", "param", "set", DEV, "name", "flow_steering_mode", "value", "dmfs", "cmode", "runtime"],
        ["devlink", "dev", "eswitch", "set", DEV, "mode", "switchdev"],
    ]
    assert res["steps"][:2] == ["echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/unbind",
                                "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/unbind"]
    assert (dl.mode, dl.fsm) == ("switchdev", "dmfs")


def test_to_legacy_with_steering_change_sets_legacy_first(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": DEV, "mode": "legacy", "flow_steering_mode": "smfs"}, host)
    assert not failed, res["msg"]
    assert writes(host) == [
        ["devlink", "dev", "eswitch", "set", DEV, "mode", "legacy"],
        ["devlink", "dev", "param", "set", DEV, "name", "flow_steering_mode", "value", "smfs", "cmode", "runtime"],
    ]


def test_encap_before_switchdev(sysfs):
    dl = FakeDevlink()
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": DEV, "mode": "switchdev", "encap_mode": "none",
                                        "flow_steering_mode": "dmfs", "unbind_vfs": False}, host)
    assert not failed
    assert [c[5:7] for c in writes(host)] == [["name", "flow_steering_mode"], ["encap-mode", "none"], ["mode", "switchdev"]]


# ------------------------------------------------------------------------------ busy devices

def test_offloaded_ipsec_on_the_pf_refuses_a_mode_change(sysfs):
    state = fx("xfrm_state_mlx5_packet.txt").replace("dev eth2", "dev p0")
    host = host_for(FakeDevlink(), xfrm_state=state)
    res, failed = run_module(mod.main, FULL, host)
    assert failed and res["field"] == "mode"
    assert "state src 192.169.101.2 dst 192.169.101.1 spi 0xc88b7652 on p0 (packet offload)" in res["msg"]
    assert "xfrm_offload_state" in res["msg"]
    assert "'Can't change eswitch mode when IPsec SA and/or policies are configured'" in res["msg"]
    assert "e406a010" not in json.dumps(res)  # the key printed by the real sample never leaks
    assert writes(host) == [] and sysfs.writes == []


def test_offloaded_ipsec_elsewhere_does_not_block(sysfs):
    state = fx("xfrm_state_mlx5_packet.txt")  # on eth2, not a netdev of this device
    policy = fx("xfrm_policy_mlx5_packet.txt").replace("dev p0", "dev p9")
    res, failed = run_module(mod.main, FULL, host_for(FakeDevlink(), xfrm_state=state, xfrm_policy=policy))
    assert not failed, res["msg"]


def test_offloaded_policy_on_a_representor_blocks(sysfs):
    policy = fx("xfrm_policy_mlx5_packet.txt").replace("dev p0", "dev pf0vf1")
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    res, failed = run_module(mod.main, {"device": DEV, "mode": "legacy"}, host_for(dl, xfrm_policy=policy))
    assert failed and "policy src 192.168.102.0/24 dst 192.168.201.0/24 dir out on pf0vf1" in res["msg"]
    assert dl.mode == "switchdev"


def test_in_hw_tc_rules_block_a_mode_change(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    host = host_for(dl, tc={"pf0vf0": fx("tc_netdevsim_in_hw.json.txt"), "p0": fx("tc_netdevsim_not_in_hw.json.txt")})
    res, failed = run_module(mod.main, {"device": DEV, "mode": "legacy"}, host)
    assert failed and "offloaded (in_hw) TC rules exist on pf0vf0 (2)" in res["msg"] and "p0 (" not in res["msg"]
    assert writes(host) == []


def test_tc_rules_do_not_block_port_functions_only(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    host = host_for(dl, tc={"pf0vf0": fx("tc_netdevsim_in_hw.json.txt")})
    res, failed = run_module(mod.main, {"device": DEV, "port_functions": [{"vf": 0, "ipsec_packet": True}]}, host)
    assert not failed and dl.caps[0]["ipsec_packet"] is True
    assert not [c for c in host.commands() if c[0] == "tc"]  # only the IPsec objects are read (below)


def test_first_vf_capability_while_the_pf_offloads_ipsec_is_refused_before_anything(sysfs):
    # mlx5_devlink_port_fn_ipsec_packet_set: -EBUSY without a message when no VF has a capability yet
    # and the PF has offloaded IPsec objects (esw->dev->num_ipsec_offloads)
    state = fx("xfrm_state_mlx5_packet.txt").replace("dev eth2", "dev p0")
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    host = host_for(dl, xfrm_state=state)
    res, failed = run_module(mod.main, {"device": DEV, "port_functions": [{"vf": 1, "ipsec_crypto": True}]}, host)
    assert failed and res["field"] == "port_functions[0].ipsec_crypto"
    assert "EBUSY, without a message" in res["msg"] and "spi 0xc88b7652 on p0" in res["msg"]
    assert writes(host) == [] and dl.caps[1]["ipsec_crypto"] is False


def test_another_vf_capability_while_one_vf_has_one_goes_to_the_kernel(sysfs):
    state = fx("xfrm_state_mlx5_packet.txt").replace("dev eth2", "dev p0")
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    dl.caps[0]["ipsec_packet"] = True
    res, failed = run_module(mod.main, {"device": DEV, "port_functions": [{"vf": 1, "ipsec_packet": True}]},
                             host_for(dl, xfrm_state=state))
    assert not failed, res["msg"]
    assert dl.caps[1]["ipsec_packet"] is True


def test_encap_change_alone_in_legacy_is_not_held_by_ipsec(sysfs):
    # mlx5_devlink_eswitch_encap_mode_set stores the value in legacy mode, whatever is offloaded
    state = fx("xfrm_state_mlx5_packet.txt").replace("dev eth2", "dev p0")
    dl = FakeDevlink()
    host = host_for(dl, xfrm_state=state)
    res, failed = run_module(mod.main, {"device": DEV, "encap_mode": "none"}, host)
    assert not failed, res["msg"]
    assert dl.encap == "none" and not [c for c in host.commands() if c[0] in ("ip", "tc")]


def test_encap_change_in_switchdev_is_held_by_ipsec_and_quotes_the_kernel(sysfs):
    state = fx("xfrm_state_mlx5_packet.txt").replace("dev eth2", "dev p0")
    dl = FakeDevlink(mode="switchdev", fsm="dmfs", encap="none")
    res, failed = run_module(mod.main, {"device": DEV, "encap_mode": "basic"}, host_for(dl, xfrm_state=state))
    assert failed and res["field"] == "encap_mode"
    assert "'Can't set encapsulation when IPsec SA and/or policies are configured'" in res["msg"]
    assert dl.encap == "none"


# ------------------------------------------------------------------------ failure and undo

def test_kernel_refusal_mid_way_undoes_everything_and_rebinds(sysfs):
    dl = FakeDevlink()
    dl.fail["dev eswitch set %s mode switchdev" % DEV] = (1, "", IPSEC_BLOCKS_MODE)
    host = host_for(dl)
    res, failed = run_module(mod.main, FULL, host)
    assert failed
    assert "Can't change eswitch mode when IPsec SA and/or policies are configured" in res["msg"]
    assert "every step done was undone" in res["msg"]
    assert res["hint"].startswith("remove the offloaded IPsec SAs and policies")
    assert res["failed_step"] == "devlink dev eswitch set pci/0000:08:00.0 mode switchdev"
    assert res["rollback"] == [
        "devlink dev param set pci/0000:08:00.0 name flow_steering_mode value smfs cmode runtime: ok",
        "echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/bind: ok",
        "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/bind: ok"]
    assert (dl.mode, dl.fsm) == ("legacy", "smfs")
    assert sysfs.vf_driver("0000:08:00.2") == "mlx5_core" and sysfs.vf_driver("0000:08:00.3") == "mlx5_core"


def test_port_function_refused_by_firmware_undoes_mode_and_steering(sysfs):
    dl = FakeDevlink()
    dl.fail["port function set %s/1 ipsec_packet enable" % DEV] = (1, "", NO_PACKET)
    res, failed = run_module(mod.main, FULL, host_for(dl))
    assert failed and "Device doesn't support IPsec packet mode" in res["msg"]
    assert "crypto-enabled" in res["hint"]
    assert res["rollback"] == [
        "devlink dev eswitch set pci/0000:08:00.0 mode legacy: ok",
        "devlink dev param set pci/0000:08:00.0 name flow_steering_mode value smfs cmode runtime: ok",
        "echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/bind: ok",
        "echo 0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/bind: ok"]
    assert (dl.mode, dl.fsm, dl.caps[0]["ipsec_packet"]) == ("legacy", "smfs", False)
    assert sysfs.vf_driver("0000:08:00.2") == "mlx5_core"


def test_rebind_failure_rolls_back_and_says_so(sysfs):
    import errno
    dl = FakeDevlink()
    sysfs.fail_always[("bind", "0000:08:00.3")] = errno.ENODEV
    res, failed = run_module(mod.main, FULL, host_for(dl))
    assert failed and "0000:08:00.3" in res["msg"] and "UNDO INCOMPLETE" in res["msg"]
    assert (dl.mode, dl.fsm) == ("legacy", "smfs")
    assert any("0000:08:00.3 > /sys/bus/pci/drivers/mlx5_core/bind: FAILED" in r for r in res["rollback"])
    assert sysfs.vf_driver("0000:08:00.2") == "mlx5_core"


def test_port_function_on_a_physical_port_is_refused(sysfs):
    dl = FakeDevlink(mode="switchdev", fsm="dmfs")
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": DEV, "port_functions": [{"port": DEV + "/65535",
                                                                           "ipsec_packet": True}]}, host)
    assert failed and res["field"] == "port_functions[0]"
    assert "is a physical port" in res["msg"] and "flavour pcivf" in res["msg"]
    assert writes(host) == []


def test_unknown_device_fails_with_devlink_message(sysfs):
    host = FakeHost([(("devlink",), (1, "", "devlink answers: No such device\n"))])
    res, failed = run_module(mod.main, {"device": "pci/0000:99:00.0", "mode": "switchdev"}, host)
    assert failed and "cannot read devlink device pci/0000:99:00.0" in res["msg"]
    assert "No such device" in res["msg"]


# ------------------------------------------------------------------------------ netdevsim (lab)

def nsim():
    return FakeDevlink(handle=NSIM, kind="netdevsim")


def test_netdevsim_switchdev_roundtrip(sysfs):
    dl = nsim()
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": NSIM, "mode": "switchdev"}, host, diff=True)
    assert not failed, res["msg"]
    assert res["steps"] == ["devlink dev eswitch set netdevsim/netdevsim1 mode switchdev"]
    assert any("not applicable to netdevsim" in n for n in res["notes"])
    assert res["before"]["flow_steering_mode"] is None and res["after"]["mode"] == "switchdev"
    assert [p["port"] for p in res["after"]["ports"]] == [NSIM + "/0", NSIM + "/128", NSIM + "/129"]
    assert "port netdevsim/netdevsim1/128 (vf 0): ipsec_crypto=unsupported" in res["diff"]["after"]
    assert sysfs.writes == []
    res2 = run_module(mod.main, {"device": NSIM, "mode": "switchdev"}, host_for(dl))[0]
    assert not res2["changed"]


def test_netdevsim_ipsec_packet_is_a_clear_error_and_mode_is_undone(sysfs):
    dl = nsim()
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": NSIM, "mode": "switchdev",
                                        "port_functions": [{"vf": 0, "ipsec_packet": True}]}, host)
    assert failed and res["field"] == "port_functions[0].ipsec_packet"
    # the message leads with the field and the port (not with the port listing that preceded the check)
    assert res["msg"].startswith("port_functions[0].ipsec_packet: port netdevsim/netdevsim1/128 (vf 0, eth1) "
                                 "does not report ipsec_packet")
    assert "netdevsim never does" in res["msg"] and "omit ipsec_packet" in res["msg"]
    assert res["msg"].endswith("(checked after the mode change, once the VF ports existed) -- every step done "
                               "was undone")
    assert res["failed_step"] == "devlink -j port show (ports after the mode change)"
    # the kernel was never asked (no bare 'Operation not supported'), and the mode went back
    assert not [c for c in host.commands() if c[1:3] == ["port", "function"]]
    assert res["rollback"] == ["devlink dev eswitch set netdevsim/netdevsim1 mode legacy: ok"]
    assert dl.mode == "legacy"


def test_netdevsim_in_switchdev_refuses_cap_before_anything(sysfs):
    dl = FakeDevlink(handle=NSIM, kind="netdevsim", mode="switchdev")
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": NSIM, "port_functions": [{"port": NSIM + "/129",
                                                                            "ipsec_crypto": True}]}, host)
    assert failed and "does not report ipsec_crypto" in res["msg"] and writes(host) == []


def test_netdevsim_cap_off_is_already_true(sysfs):
    dl = FakeDevlink(handle=NSIM, kind="netdevsim", mode="switchdev")
    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": NSIM, "port_functions": [{"vf": 1, "ipsec_packet": False}]}, host)
    assert not failed and not res["changed"] and writes(host) == []
    assert res["notes"] == ["port_functions[0]: port netdevsim/netdevsim1/129 (vf 1, eth2) does not report "
                            "ipsec_packet; it cannot be on, nothing to disable"]


@pytest.mark.parametrize("device,dl", [
    (DEV, FakeDevlink()), (NSIM, FakeDevlink(handle=NSIM, kind="netdevsim")),
    (DEV, FakeDevlink(mode="switchdev", fsm="dmfs")), (NSIM, FakeDevlink(handle=NSIM, kind="netdevsim", mode="switchdev")),
])
def test_vf_that_does_not_exist_is_refused_before_anything(sysfs, device, dl):
    host = host_for(dl)
    mode = dl.mode
    res, failed = run_module(mod.main, {"device": device, "mode": "switchdev",
                                        "port_functions": [{"vf": 2, "ipsec_crypto": True}]}, host)
    assert failed and res["field"] == "port_functions[0].vf"
    assert res["msg"].endswith("VF 2 does not exist: %s has 2 VFs (create them first with mlx_sriov)" % device)
    assert writes(host) == [] and sysfs.writes == [] and dl.mode == mode


@pytest.mark.parametrize("args,field", [
    ({"flow_steering_mode": "dmfs"}, "flow_steering_mode"),
    ({"encap_mode": "none"}, "encap_mode"),
])
def test_netdevsim_lacks_mlx5_knobs(sysfs, args, field):
    host = host_for(nsim())
    res, failed = run_module(mod.main, dict(args, device=NSIM, mode="switchdev"), host)
    assert failed and res["field"] == field and "omit " + field in res["msg"]
    assert writes(host) == []


# ------------------------------------------------------------------------------------ pure plan

def _state(**kw):
    s = {"mode": "legacy", "encap_mode": "basic", "inline_mode": "none", "flow_steering_mode": "smfs",
         "fsm_supported": True, "ports": []}
    s.update(kw)
    return s


def _want(**kw):
    w = {"device": DEV, "mode": None, "fsm": None, "encap": None, "via_legacy": False, "unbind_vfs": True, "ports": []}
    w.update(kw)
    return w


@pytest.mark.parametrize("state,want,expected", [
    (_state(), _want(), []),
    (_state(), _want(mode="legacy", fsm="smfs", encap="basic"), []),
    (_state(), _want(mode="switchdev"), [("mode", "switchdev", "legacy")]),
    (_state(), _want(mode="switchdev", fsm="dmfs", encap="none"),
     [("fsm", "dmfs", "smfs"), ("encap", "none", "basic"), ("mode", "switchdev", "legacy")]),
    (_state(mode="switchdev"), _want(mode="legacy", fsm="dmfs"),
     [("mode", "legacy", "switchdev"), ("fsm", "dmfs", "smfs")]),
    (_state(mode="switchdev"), _want(fsm="dmfs", via_legacy=True),
     [("mode", "legacy", "switchdev"), ("fsm", "dmfs", "smfs"), ("mode", "switchdev", "legacy")]),
    (_state(mode="switchdev"), _want(encap="none"), [("encap", "none", "basic")]),
])
def test_plan_device_order_and_undo(state, want, expected):
    steps = mod.plan_device(state, want)

    def value(args):
        return args.get("mode") or args.get("encap_mode") or args.get("value")
    assert [(s["kind"], value(s["args"]), value(s["undo"])) for s in steps] == expected


def test_plan_device_refusals():
    with pytest.raises(mod.Refused, match="reports no eswitch mode"):
        mod.plan_device(_state(mode=None), _want(mode="switchdev"))
    with pytest.raises(mod.Refused, match="steering_via_legacy"):
        mod.plan_device(_state(mode="switchdev"), _want(fsm="dmfs"))


# ------------------------------------------------------------- the lab sequence, both modules

def test_lab_sequence_on_netdevsim(sysfs):
    """What the lab playbook does on netdevsim/netdevsim1 (samples/netdevsim/02-03): VFs while legacy,
    switchdev, then the refusals a lab run must show cleanly, then back to legacy."""
    from ansible_collections.ipsec_offload.mlx5.plugins.modules import mlx_sriov
    sysfs.set_vfs(sysfs.p("devices", "netdevsim1"), 0)
    # VF ports follow the VF count in sysfs, as in netdevsim
    dl = FakeDevlink(handle=NSIM, kind="netdevsim", num_vfs=lambda: sysfs.numvfs(sysfs.p("devices", "netdevsim1")))

    res, failed = run_module(mlx_sriov.main, {"device": NSIM, "num_vfs": 2}, host_for(dl))
    assert not failed and res["steps"] == ["echo 2 > /sys/devices/netdevsim1/sriov_numvfs"]

    res, failed = run_module(mod.main, {"device": NSIM, "mode": "switchdev"}, host_for(dl))
    assert not failed and [p["vf"] for p in res["after"]["ports"]] == [None, 0, 1]

    res, failed = run_module(mlx_sriov.main, {"device": NSIM, "num_vfs": 3}, host_for(dl))
    assert failed and res["field"] == "num_vfs" and "switchdev" in res["msg"]

    host = host_for(dl)
    res, failed = run_module(mod.main, {"device": NSIM, "port_functions": [{"vf": 0, "ipsec_packet": True}]}, host)
    assert failed and "does not report ipsec_packet" in res["msg"] and writes(host) == []

    res, failed = run_module(mod.main, {"device": NSIM, "mode": "legacy"}, host_for(dl))
    assert not failed and res["after"]["mode"] == "legacy" and len(res["after"]["ports"]) == 1
    assert sysfs.writes == [("/sys/devices/netdevsim1/sriov_numvfs", "2")]


# ------------------------------------------------- one plan: check mode reports what the run does

def _resolve_pending(line, dl):
    """A check-mode line for a port planned after the mode change, as the real run prints it."""
    m = re.match(r"devlink port function set <port of VF (\d+)> (\S+) (\S+) \(if not already;", line)
    return "devlink port function set %s %s %s" % (dl.vf_port(int(m.group(1))), m.group(2), m.group(3)) if m else line


@pytest.mark.parametrize("make_dl,args", [
    (FakeDevlink, FULL),
    (lambda: FakeDevlink(mode="switchdev", fsm="dmfs"), {"device": DEV, "port_functions": [{"vf": 1, "ipsec_crypto": True}]}),
    (lambda: FakeDevlink(mode="switchdev"), {"device": DEV, "mode": "legacy", "flow_steering_mode": "dmfs"}),
    (lambda: FakeDevlink(mode="switchdev"), {"device": DEV, "flow_steering_mode": "dmfs", "steering_via_legacy": True}),
    (FakeDevlink, {"device": DEV, "mode": "switchdev", "encap_mode": "none", "unbind_vfs": False}),
    (FakeDevlink, {"device": DEV, "mode": "switchdev", "port_functions": [{"vf": 0, "ipsec_packet": True},
                                                                          {"vf": 1, "ipsec_crypto": True}]}),
    (lambda: FakeDevlink(handle=NSIM, kind="netdevsim"), {"device": NSIM, "mode": "switchdev"}),
])
def test_check_mode_reports_exactly_the_steps_the_run_executes(sysfs, make_dl, args):
    dl_check = make_dl()
    check, failed = run_module(mod.main, args, host_for(dl_check), check_mode=True)
    assert not failed and check["changed"] and sysfs.writes == []
    dl = make_dl()
    host = host_for(dl)
    res, failed = run_module(mod.main, args, host)
    assert not failed, res["msg"]
    assert [_resolve_pending(line, dl) for line in check["steps"]] == res["steps"]
    assert check["vfs_unbound"] == res["vfs_unbound"]
    # and the run's steps are what reached devlink and sysfs, in that order
    assert [line for line in res["steps"] if line.startswith("devlink ")] == [
        "devlink " + " ".join(c[1:]) for c in writes(host)]
    assert [line for line in res["steps"] if line.startswith("echo ")] == [
        "echo %s > %s" % (value, path) for path, value in sysfs.writes]


def test_plan_run_orders_named_steps_with_their_undo():
    dev_steps = mod.plan_device(_state(), _want(mode="switchdev", fsm="dmfs", encap="none"))
    port = {"field": "port_functions[0]", "port": None, "vf": 0, "controller": None, "caps": {"ipsec_packet": True}}
    plan = mod.plan_run(dev_steps, [("0000:08:00.2", "mlx5_core")], [], [port])
    assert [s["kind"] for s in plan] == ["fsm", "encap", "unbind", "mode", "ports_after_mode", "bind"]
    assert plan[0]["args"] == {"device": DEV, "value": "dmfs"} and plan[0]["undo"] == {"device": DEV, "value": "smfs"}
    assert plan[2]["args"] == plan[2]["undo"] == {"address": "0000:08:00.2", "driver": "mlx5_core"}
    assert plan[3]["args"] == {"device": DEV, "mode": "switchdev"} and plan[3]["undo"]["mode"] == "legacy"
    assert mod.devlink_argv("mode", plan[3]["args"]) == ["dev", "eswitch", "set", DEV, "mode", "switchdev"]
    assert plan[4]["args"]["wanted"] == [port] and plan[5]["undo"] is None
