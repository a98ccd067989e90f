# -*- coding: utf-8 -*-
from __future__ import annotations

import errno

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _sysfs
from fake_sysfs import FakeSysfs

PF = "0000:08:00.0"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    t = FakeSysfs(tmp_path / "sys")
    t.install(monkeypatch, _sysfs)
    return t


# --------------------------------------------------------------------------------- pure parts

@pytest.mark.parametrize("current,desired,expected", [
    (0, 0, []), (2, 2, []), (0, 4, [4]), (4, 0, [0]), (2, 3, [0, 3]), (3, None, []),
])
def test_numvfs_writes_go_through_zero(current, desired, expected):
    assert _sysfs.numvfs_writes(current, desired) == expected


VFS = [
    {"index": 0, "address": "0000:08:00.2", "driver": "mlx5_core"},
    {"index": 1, "address": "0000:08:00.3", "driver": None},
    {"index": 2, "address": "0000:08:00.4", "driver": "vfio-pci"},
]


@pytest.mark.parametrize("desired,changes,problems", [
    ({0: (True, "mlx5_core"), 1: (True, "mlx5_core")}, [("bind", 1, "0000:08:00.3", "mlx5_core")], []),
    ({0: (False, "mlx5_core"), 1: (False, "mlx5_core"), 2: (False, "mlx5_core")},
     [("unbind", 0, "0000:08:00.2", "mlx5_core"), ("unbind", 2, "0000:08:00.4", "vfio-pci")], []),
    ({2: (True, "mlx5_core")}, [], [2]),
    ({2: (True, "vfio-pci")}, [], []),
    ({7: (True, "mlx5_core")}, [], [7]),
])
def test_binding_changes(desired, changes, problems):
    got, probs = _sysfs.binding_changes(VFS, desired)
    assert got == changes
    assert [p[0] for p in probs] == problems


def test_binding_problem_says_what_to_do():
    probs = _sysfs.binding_changes(VFS, {2: (True, "mlx5_core")})[1]
    assert "bound to vfio-pci, not mlx5_core" in probs[0][1]


@pytest.mark.parametrize("name", ["mlx5_core", "vfio-pci", "ixgbevf"])
def test_driver_name_ok(name):
    assert _sysfs.driver_name("vf_driver", name) == name


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "mlx5 core", "x;reboot", "", "mlx5_core\n"])
def test_driver_name_refused(name):
    with pytest.raises(ValueError, match="vf_driver"):
        _sysfs.driver_name("vf_driver", name)


def test_hint_for_known_errno():
    assert "goes through 0" not in (_sysfs.hint_for("/sys/x/sriov_numvfs", errno.EBUSY) or "")
    assert "count is 0" in _sysfs.hint_for("/sys/x/sriov_numvfs", errno.EBUSY)
    assert "max_vfs" in _sysfs.hint_for("/sys/x/sriov_numvfs", errno.ENOMEM)
    assert "root" in _sysfs.hint_for("/sys/bus/pci/drivers/mlx5_core/bind", errno.EACCES)
    assert _sysfs.hint_for("/sys/x/other", errno.EBUSY) is None


# ---------------------------------------------------------------------------- on a fake tree

def test_pci_device_from_netdev_and_address(tree):
    tree.add_pci_pf(PF, netdevs=("p0",))
    s = _sysfs.Sysfs()
    by_if = _sysfs.device_from_netdev(s, "p0")
    by_addr = _sysfs.device_from_name(s, PF)
    by_handle = _sysfs.device_from_name(s, "pci/" + PF)
    assert by_if == by_addr == by_handle
    assert (by_if["bus"], by_if["name"], by_if["devlink"]) == ("pci", PF, "pci/" + PF)


def test_pci_address_is_case_insensitive(tree):
    tree.add_pci_pf("0000:0a:00.1", netdevs=("p1",))
    assert _sysfs.device_from_name(_sysfs.Sysfs(), "0000:0A:00.1")["name"] == "0000:0a:00.1"


def test_netdevsim_device(tree):
    tree.add_netdevsim("netdevsim1", netdevs=("eth0",))
    s = _sysfs.Sysfs()
    d = _sysfs.device_from_netdev(s, "eth0")
    assert (d["bus"], d["name"], d["devlink"]) == ("netdevsim", "netdevsim1", "netdevsim/netdevsim1")
    assert _sysfs.device_from_name(s, "netdevsim/netdevsim1") == d
    info = _sysfs.sriov_info(s, d)
    # real netdevsim: sriov_numvfs only, no sriov_totalvfs, VFs without PCI address
    assert info == {"num_vfs": 0, "total_vfs": None, "drivers_autoprobe": None, "driver": "netdevsim",
                    "vfs": [], "netdevs": ["eth0"]}


@pytest.mark.parametrize("call,arg,message", [
    (_sysfs.device_from_netdev, "nope0", "pf: there is no network interface nope0"),
    (_sysfs.device_from_name, "0000:09:00.0", "no such device"),
    (_sysfs.device_from_name, "auxiliary/mlx5_core.eth.0", "neither a PCI address"),
    (_sysfs.device_from_name, "eth0", "neither a PCI address"),
    (_sysfs.device_from_name, PF + "\n", "neither a PCI address"),
])
def test_device_errors(tree, call, arg, message):
    tree.add_pci_pf(PF)
    with pytest.raises(_sysfs.SysfsError, match=message):
        call(_sysfs.Sysfs(), arg)


def test_virtual_netdev_has_no_device(tree):
    import os
    os.makedirs(tree.p("class", "net", "veth0"))
    with pytest.raises(_sysfs.SysfsError, match="no parent device"):
        _sysfs.device_from_netdev(_sysfs.Sysfs(), "veth0")


def test_sriov_info_lists_vfs_with_drivers(tree):
    devdir = tree.add_pci_pf(PF, total_vfs=4)
    tree.set_vfs(devdir, 2)
    tree.set_vf_driver("0000:08:00.3", None)
    s = _sysfs.Sysfs()
    info = _sysfs.sriov_info(s, _sysfs.device_from_name(s, PF))
    assert info["num_vfs"] == 2 and info["total_vfs"] == 4 and info["drivers_autoprobe"] is True
    assert info["driver"] == "mlx5_core" and info["netdevs"] == ["p0"]
    assert [(v["index"], v["address"], v["driver"]) for v in info["vfs"]] == [
        (0, "0000:08:00.2", "mlx5_core"), (1, "0000:08:00.3", None)]


def test_bind_unbind_write_the_driver_files(tree):
    devdir = tree.add_pci_pf(PF)
    tree.set_vfs(devdir, 1)
    s = _sysfs.Sysfs()
    _sysfs.unbind(s, "mlx5_core", "0000:08:00.2")
    assert tree.vf_driver("0000:08:00.2") is None
    _sysfs.bind(s, "mlx5_core", "0000:08:00.2")
    assert tree.vf_driver("0000:08:00.2") == "mlx5_core"
    assert tree.writes == [("/sys/bus/pci/drivers/mlx5_core/unbind", "0000:08:00.2"),
                           ("/sys/bus/pci/drivers/mlx5_core/bind", "0000:08:00.2")]


def test_write_error_becomes_sysfs_error_with_hint(tree):
    devdir = tree.add_pci_pf(PF)
    tree.set_vfs(devdir, 2)
    s = _sysfs.Sysfs()
    with pytest.raises(_sysfs.SysfsError) as exc:
        s.write(_sysfs.numvfs_path(_sysfs.device_from_name(s, PF)), 3)
    e = exc.value
    assert e.path == "/sys/devices/pci0000:00/%s/sriov_numvfs" % PF
    assert e.as_result()["errno"] == "EBUSY"
    assert "writing 3 to /sys/devices/pci0000:00/0000:08:00.0/sriov_numvfs failed" in str(e)
    assert "count is 0" in str(e)


def test_bind_to_missing_driver(tree):
    devdir = tree.add_pci_pf(PF)
    tree.set_vfs(devdir, 1)
    with pytest.raises(_sysfs.SysfsError, match="not loaded"):
        _sysfs.bind(_sysfs.Sysfs(), "vfio-pci", "0000:08:00.2")


def test_echo_text_shows_real_path(tree):
    s = _sysfs.Sysfs()
    assert _sysfs.echo_text(s, _sysfs.driver_file(s, "mlx5_core", "unbind"), "0000:08:00.2") == \
        "echo 0000:08:00.2 > /sys/bus/pci/drivers/mlx5_core/unbind"
