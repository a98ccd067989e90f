# -*- coding: utf-8 -*-
"""mlx_sriov on a fake sysfs tree whose fake kernel enforces the real rules (new count only over 0,
sriov_totalvfs / netdevsim max_vfs, bind/unbind errors), plus a scripted devlink for the eswitch."""
from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _sysfs
from ansible_collections.ipsec_offload.mlx5.plugins.modules import mlx_sriov as mod
from fake_sysfs import FakeSysfs
from harness import FakeHost, fixture, run_module

PF = "0000:08:00.0"
NUMVFS = "/sys/devices/pci0000:00/%s/sriov_numvfs" % PF
BIND = "/sys/bus/pci/drivers/mlx5_core/bind"
UNBIND = "/sys/bus/pci/drivers/mlx5_core/unbind"


def fx(name):
    return "".join(fixture("devlink/" + name).splitlines(True)[1:])


def eswitch(mode, handle="pci/" + PF):
    return FakeHost([(("devlink", "-j", "dev", "eswitch", "show", handle),
                      (0, '{"dev":{"%s":{"mode":"%s"}}}' % (handle, mode), ""))])


@pytest.fixture
def tree(tmp_path, monkeypatch):
    t = FakeSysfs(tmp_path / "sys")
    t.install(monkeypatch, _sysfs)
    t.pf = t.add_pci_pf(PF, netdevs=("p0",), total_vfs=4)
    t.nsim = t.add_netdevsim("netdevsim1", netdevs=("eth0",), max_vfs=4)
    return t


# ----------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("args,field", [
    ({"pf": "p0; reboot", "num_vfs": 1}, "pf"),
    ({"pf": "p0 p1"}, "pf"),
    ({"device": "0000:08:00.0\n", "num_vfs": 1}, "device"),
    ({"device": "auxiliary/mlx5_core.eth.0"}, "device"),
    ({"pf": "p0", "num_vfs": -1}, "num_vfs"),
    ({"pf": "p0", "vf_driver": "../../../kernel/x"}, "vf_driver"),
    ({"pf": "p0", "vfs": [{"index": 0, "bound": True}, {"index": 0, "bound": False}]}, "vfs[1].index"),
    ({"pf": "p0", "vfs": [{"index": 0, "bound": True, "driver": "a/b"}]}, "vfs[0].driver"),
    ({"pf": "nope0", "num_vfs": 1}, "pf"),
    ({"device": "0000:09:00.0", "num_vfs": 1}, "device"),
    ({"pf": "p0", "num_vfs": 5}, "num_vfs"),
    ({"device": "netdevsim/netdevsim1", "num_vfs": 5}, "num_vfs"),
    ({"pf": "p0", "num_vfs": 2, "vfs": [{"index": 2, "bound": True}]}, "vfs[0].index"),
])
def test_bad_input_is_refused_naming_the_field(tree, args, field):
    if args.get("device") == "netdevsim/netdevsim1":
        # netdevsim's limit lives in debugfs (samples/netdevsim/01-new-device.txt: max_vfs = 4)
        os.makedirs(tree.p("kernel", "debug", "netdevsim", "netdevsim1"))
        with open(tree.p("kernel", "debug", "netdevsim", "netdevsim1", "max_vfs"), "w") as fh:
            fh.write("4\n")
    host = FakeHost()
    res, failed = run_module(mod.main, args, host)
    assert failed and res["field"] == field and res["msg"].startswith(field + ":"), res
    assert tree.writes == [] and host.commands() == []


def test_pf_and_device_are_exclusive(tree):
    res, failed = run_module(mod.main, {"pf": "p0", "device": PF}, FakeHost())
    assert failed and "mutually exclusive" in res["msg"]


def test_device_without_sriov(tree):
    tree.add_pci_pf("0000:0a:00.0", netdevs=("eno1",), sriov=False, driver="igb")
    res, failed = run_module(mod.main, {"pf": "eno1", "num_vfs": 2}, FakeHost())
    assert failed and res["field"] == "pf" and "has no SR-IOV" in res["msg"]


# ----------------------------------------------------------------------------- count changes

def test_create_vfs_then_idempotent(tree):
    host = eswitch("legacy")
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 2, "vfs_bound": True}, host, diff=True)
    assert not failed, res["msg"]
    assert res["changed"] and res["steps"] == ["echo 2 > " + NUMVFS]
    assert tree.writes == [(NUMVFS, "2")]
    assert res["device"] == {"bus": "pci", "name": PF, "devlink": "pci/" + PF, "driver": "mlx5_core", "netdevs": ["p0"]}
    assert res["before"]["num_vfs"] == 0 and res["after"]["num_vfs"] == 2
    assert [(v["address"], v["driver"]) for v in res["after"]["vfs"]] == [
        ("0000:08:00.2", "mlx5_core"), ("0000:08:00.3", "mlx5_core")]
    assert res["eswitch_mode"] == "legacy"
    assert "vf 1 0000:08:00.3: mlx5_core" in res["diff"]["after"] and "num_vfs: 0 (total 4)" in res["diff"]["before"]
    tree.writes.clear()
    res2, failed2 = run_module(mod.main, {"pf": "p0", "num_vfs": 2, "vfs_bound": True}, FakeHost())
    assert not failed2 and not res2["changed"] and res2["steps"] == [] and tree.writes == []


def test_nonzero_to_nonzero_goes_through_zero(tree):
    tree.set_vfs(tree.pf, 2)
    res, failed = run_module(mod.main, {"device": PF, "num_vfs": 3}, eswitch("legacy"))
    assert not failed, res["msg"]
    assert tree.writes == [(NUMVFS, "0"), (NUMVFS, "3")]
    assert tree.numvfs(tree.pf) == 3


def test_new_vfs_unbound_as_asked(tree):
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 1, "vfs": [{"index": 0, "bound": False}]},
                             eswitch("legacy"))
    assert not failed, res["msg"]
    assert res["steps"] == ["echo 1 > " + NUMVFS, "echo 0000:08:00.2 > " + UNBIND]
    assert tree.vf_driver("0000:08:00.2") is None


def test_autoprobe_off_then_create(tree):
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 2, "drivers_autoprobe": False}, eswitch("legacy"))
    assert not failed
    assert res["steps"] == ["echo 0 > /sys/devices/pci0000:00/%s/sriov_drivers_autoprobe" % PF, "echo 2 > " + NUMVFS]
    assert [v["driver"] for v in res["after"]["vfs"]] == [None, None]
    assert res["after"]["drivers_autoprobe"] is False


def test_check_mode_predicts_and_writes_nothing(tree):
    tree.set_vfs(tree.pf, 1)
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 2, "vfs_bound": False}, eswitch("legacy"),
                             check_mode=True, diff=True)
    assert not failed and res["changed"]
    assert res["steps"] == ["echo 0 > " + NUMVFS, "echo 2 > " + NUMVFS,
                            "echo <vf 0> > " + UNBIND, "echo <vf 1> > " + UNBIND]
    assert tree.writes == [] and tree.numvfs(tree.pf) == 1
    assert res["after"]["num_vfs"] == 2 and [v["driver"] for v in res["after"]["vfs"]] == [None, None]
    assert "vf 1 <vf 1>: unbound" in res["diff"]["after"]


# ------------------------------------------------------------------------------- switchdev

def test_count_change_in_switchdev_is_refused_and_explained(tree):
    tree.set_vfs(tree.pf, 2)
    host = eswitch("switchdev")
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 3}, host)
    assert failed and res["field"] == "num_vfs"
    assert "switchdev mode" in res["msg"] and "Device or resource busy" in res["msg"]
    assert "allow_switchdev: true" in res["msg"] and "before mlx_devlink_eswitch" in res["msg"]
    assert tree.writes == []
    assert host.commands() == [["devlink", "-j", "dev", "eswitch", "show", "pci/" + PF]]


def test_count_change_in_switchdev_allowed(tree):
    tree.set_vfs(tree.pf, 2)
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 0, "allow_switchdev": True}, eswitch("switchdev"))
    assert not failed and tree.writes == [(NUMVFS, "0")]


def test_no_devlink_no_eswitch_check(tree):
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 1}, FakeHost(), bins=[])
    assert not failed and res["eswitch_mode"] is None and tree.numvfs(tree.pf) == 1


def test_binding_only_does_not_read_the_eswitch(tree):
    tree.set_vfs(tree.pf, 2)
    host = FakeHost()
    res, failed = run_module(mod.main, {"pf": "p0", "vfs": [{"index": 1, "bound": False}]}, host)
    assert not failed and res["steps"] == ["echo 0000:08:00.3 > " + UNBIND] and host.commands() == []
    # and back
    res, failed = run_module(mod.main, {"pf": "p0", "vfs_bound": True}, host)
    assert res["steps"] == ["echo 0000:08:00.3 > " + BIND] and tree.vf_driver("0000:08:00.3") == "mlx5_core"


def test_vf_bound_elsewhere_is_refused(tree):
    tree.set_vfs(tree.pf, 2)
    tree.set_vf_driver("0000:08:00.3", "vfio-pci")
    res, failed = run_module(mod.main, {"pf": "p0", "vfs_bound": True}, FakeHost())
    assert failed and res["field"] == "vfs_bound" and "bound to vfio-pci, not mlx5_core" in res["msg"]
    assert tree.writes == []
    # unbinding it is a plain request (from its own driver)
    res, failed = run_module(mod.main, {"pf": "p0", "vfs": [{"index": 1, "bound": False}]}, FakeHost())
    assert not failed and res["steps"] == ["echo 0000:08:00.3 > /sys/bus/pci/drivers/vfio-pci/unbind"]


# ------------------------------------------------------------------------------- failure/undo

def test_failure_after_count_change_restores_count_and_bindings(tree):
    tree.set_vfs(tree.pf, 2)
    tree.set_vf_driver("0000:08:00.3", None)  # VF 1 was unbound before
    tree.fail_always[("unbind", "0000:08:00.2")] = errno.EBUSY
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 3, "vfs_bound": False}, eswitch("legacy"))
    assert failed and res["failed_step"] == "echo 0000:08:00.2 > " + UNBIND
    assert "every step done was undone" in res["msg"] and res["errno"] == "EBUSY"
    assert res["rollback"] == ["restore 2 VFs (%s) and their drivers: ok" % NUMVFS]
    assert tree.numvfs(tree.pf) == 2
    assert (tree.vf_driver("0000:08:00.2"), tree.vf_driver("0000:08:00.3")) == ("mlx5_core", None)


def test_kernel_refusing_the_count_restores_the_old_one(tree):
    tree.set_vfs(tree.pf, 2)
    tree.fail[("sriov_numvfs", "3")] = errno.ENOMEM
    res, failed = run_module(mod.main, {"pf": "p0", "num_vfs": 3}, eswitch("legacy"))
    assert failed and "writing 3 to %s failed" % NUMVFS in res["msg"]
    assert tree.numvfs(tree.pf) == 2 and res["rollback"][0].endswith(": ok")
    assert tree.writes == [(NUMVFS, "0"), (NUMVFS, "3"), (NUMVFS, "2")]


def test_undo_of_a_binding(tree):
    tree.set_vfs(tree.pf, 2)
    tree.fail_always[("unbind", "0000:08:00.3")] = errno.EBUSY
    res, failed = run_module(mod.main, {"pf": "p0", "vfs_bound": False}, FakeHost())
    assert failed and res["rollback"] == ["echo 0000:08:00.2 > %s: ok" % BIND]
    assert tree.vf_driver("0000:08:00.2") == "mlx5_core"


# ------------------------------------------------------------------------------- netdevsim

def test_netdevsim_count_and_binding_not_applicable(tree):
    host = eswitch("legacy", handle="netdevsim/netdevsim1")
    res, failed = run_module(mod.main, {"pf": "eth0", "num_vfs": 2, "vfs_bound": True}, host)
    assert not failed, res["msg"]
    assert res["steps"] == ["echo 2 > /sys/devices/netdevsim1/sriov_numvfs"]
    assert res["device"]["devlink"] == "netdevsim/netdevsim1" and res["after"]["vfs"] == []
    assert any("not applicable to netdevsim/netdevsim1" in w for w in res["notes"])
    assert tree.numvfs(tree.nsim) == 2


def test_netdevsim_switchdev_to_zero_warns_about_legacy(tree, monkeypatch):
    tree.set_vfs(tree.nsim, 2)
    state = {"mode": "switchdev"}

    def show(argv, stdin):
        return 0, '{"dev":{"netdevsim/netdevsim1":{"mode":"%s"}}}' % state["mode"], ""

    orig = tree.write

    def write(s, path, data):  # netdevsim: count 0 in switchdev -> legacy (nsim_drv_configure_vfs)
        orig(s, path, data)
        if path.endswith("sriov_numvfs") and data.strip() == "0":
            state["mode"] = "legacy"
    monkeypatch.setattr(_sysfs.Sysfs, "_write_file", write)
    host = FakeHost([(("devlink",), show)])
    res, failed = run_module(mod.main, {"device": "netdevsim/netdevsim1", "num_vfs": 0, "allow_switchdev": True},
                             host)
    assert not failed
    assert any("now in legacy mode" in w for w in res["notes"])


# ------------------------------------------------------------------------------- pure parts

@pytest.mark.parametrize("vfs_bound,vfs,count,expected", [
    (None, {}, 2, {}),
    (True, {}, 2, {0: (True, "mlx5_core"), 1: (True, "mlx5_core")}),
    (True, {1: (False, None)}, 2, {0: (True, "mlx5_core"), 1: (False, "mlx5_core")}),
    (None, {0: (True, "vfio-pci")}, 1, {0: (True, "vfio-pci")}),
])
def test_desired_bindings(vfs_bound, vfs, count, expected):
    want = {"vfs_bound": vfs_bound, "vfs": vfs, "vf_fields": {i: "vfs[%d]" % i for i in vfs}}
    assert mod.desired_bindings(want, count, "mlx5_core") == expected


def test_eswitch_fixture_shape_matches_what_the_module_reads(tree):
    # the module reads the mode with the same parser as mlx_devlink_eswitch; REAL netdevsim output
    tree.set_vfs(tree.nsim, 2)
    host = FakeHost([(("devlink",), (0, fx("eswitch_netdevsim_switchdev.json.txt"), ""))])
    res, failed = run_module(mod.main, {"device": "netdevsim/netdevsim1", "num_vfs": 1}, host)
    assert failed and res["field"] == "num_vfs" and res["eswitch_mode"] == "switchdev"
