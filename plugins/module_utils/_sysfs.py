# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SR-IOV through sysfs: VF count, VF PCI addresses, driver bind/unbind.

Private to the collection.  Everything goes through a ``Sysfs`` object whose root is injectable
(tests build a fake tree under tmp_path); messages always show the real ``/sys/...`` path.

Devices are plain dicts: {"bus", "name", "path", "devlink"}:
  PCI        /sys/bus/pci/devices/0000:08:00.0          devlink handle pci/0000:08:00.0
             sriov_numvfs, sriov_totalvfs, sriov_drivers_autoprobe, virtfnN -> ../0000:08:00.2,
             driver -> .../bus/pci/drivers/mlx5_core, net/<ifname>
  netdevsim  /sys/bus/netdevsim/devices/netdevsim1      devlink handle netdevsim/netdevsim1
             sriov_numvfs only (no sriov_totalvfs: the limit is debugfs max_vfs), no virtfnN: its
             VFs have no PCI address, so bind/unbind does not apply to them.
Writes are plain file writes; the kernel's errno becomes a SysfsError with a hint.
"""

from __future__ import annotations

import errno
import os
import re

DEFAULT_ROOT = "/sys"

_DRIVER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_VIRTFN_RE = re.compile(r"^virtfn(\d+)\Z")
_PCI_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\Z")
_NSIM_RE = re.compile(r"^netdevsim\d+\Z")

# (file name, errno) -> what to do.  None as errno: any.
_HINTS = [
    ("sriov_numvfs", errno.EBUSY,
     "the kernel takes a new VF count only while the count is 0 (this module writes 0 first); still "
     "busy means the VFs are held (assigned to a VM through vfio, or the driver refuses in the current "
     "eswitch state)"),
    ("sriov_numvfs", errno.ENOMEM,
     "more VFs than the device offers (netdevsim: /sys/kernel/debug/netdevsim/<dev>/max_vfs)"),
    ("sriov_numvfs", errno.ERANGE, "more VFs than sriov_totalvfs"),
    ("sriov_numvfs", errno.EINVAL, "the count is not accepted: check sriov_totalvfs and the firmware's NUM_OF_VFS"),
    ("sriov_numvfs", errno.ENOENT, "no driver is bound to the PF (bind the PF's driver first)"),
    ("sriov_numvfs", errno.ENOSYS, "the PF's driver does not support SR-IOV"),
    ("bind", errno.ENODEV, "the driver does not handle this device (wrong vf_driver, or driver_override "
                           "names another driver)"),
    ("bind", errno.EBUSY, "the device is already bound to a driver"),
    ("bind", errno.ENOENT, "the driver is not loaded (modprobe it) or the device vanished"),
    ("unbind", errno.ENODEV, "the device is not bound to this driver"),
    ("unbind", errno.ENOENT, "the driver is not loaded or the device vanished"),
    (None, errno.EACCES, "writing sysfs needs root (become: true)"),
    (None, errno.EPERM, "writing sysfs needs root (become: true)"),
]


class SysfsError(Exception):
    """A sysfs read/write failed, or a device is not what we need."""

    def __init__(self, msg, path=None, err=None, hint=None):
        self.path = path
        self.errno = err
        self.hint = hint
        full = msg + (" -- %s" % hint if hint else "")
        super().__init__(full)

    def as_result(self):
        res = {}
        if self.path:
            res["path"] = self.path
        if self.errno is not None:
            res["errno"] = errno.errorcode.get(self.errno, str(self.errno))
        if self.hint:
            res["hint"] = self.hint
        return res


def hint_for(path, err):
    base = os.path.basename(path)
    for name, code, advice in _HINTS:
        if (name is None or name == base) and code == err:
            return advice
    return None


def driver_name(field, value):
    """A driver name as used in /sys/bus/pci/drivers/<name>/: no slashes, no dots-only."""
    if not isinstance(value, str) or not _DRIVER_RE.match(value) or set(value) == {"."}:
        raise ValueError("%s: %r is not a driver name (letters, digits, _ . -)" % (field, value))
    return value


class Sysfs:
    """File access below one sysfs root."""

    def __init__(self, root=None):
        self.root = os.path.abspath(root if root is not None else DEFAULT_ROOT)

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def show(self, path):
        """The path as it is on a real host (/sys/...), for messages and step lists."""
        rel = os.path.relpath(path, self.root)
        return "/sys" if rel == "." else "/sys/" + rel

    def exists(self, path):
        return os.path.exists(path)

    def read(self, path, default=None):
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise SysfsError("cannot read %s: %s" % (self.show(path), exc.strerror), self.show(path), exc.errno,
                             hint_for(path, exc.errno))

    def read_int(self, path):
        text = self.read(path)
        if text is None or text == "":
            return None
        try:
            return int(text, 0)
        except ValueError:
            raise SysfsError("%s holds %r, not a number" % (self.show(path), text), self.show(path))

    def link_target(self, path):
        """basename of where a symlink points, or None when absent."""
        if not os.path.lexists(path):
            return None
        return os.path.basename(os.path.realpath(path))

    def listdir(self, path):
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def write(self, path, value):
        data = "%s\n" % value
        try:
            self._write_file(path, data)
        except OSError as exc:
            code = exc.errno
            raise SysfsError("writing %s to %s failed: %s (%s)" % (value, self.show(path), exc.strerror or exc,
                                                                   errno.errorcode.get(code, code)),
                             self.show(path), code, hint_for(path, code))

    def _write_file(self, path, data):  # tests replace this with a fake kernel
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(data)


# ------------------------------------------------------------------------------------- devices

def _device_at(sysfs, path, what):
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise SysfsError("%s: no such device (%s does not exist)" % (what, sysfs.show(path)), sysfs.show(path))
    bus = sysfs.link_target(os.path.join(real, "subsystem"))
    name = os.path.basename(real)
    return {"bus": bus, "name": name, "path": real, "devlink": "%s/%s" % (bus, name) if bus else None}


def device_from_netdev(sysfs, ifname):
    """The parent device of a netdev (the PF), from /sys/class/net/<ifname>/device."""
    netdir = sysfs.p("class", "net", ifname)
    if not os.path.lexists(netdir):
        raise SysfsError("pf: there is no network interface %s" % ifname, sysfs.show(netdir))
    link = os.path.join(netdir, "device")
    if not os.path.lexists(link):
        raise SysfsError("pf: %s has no parent device (a virtual interface? give the PF's netdev)" % ifname,
                         sysfs.show(link))
    return _device_at(sysfs, link, "pf %s" % ifname)


def device_from_name(sysfs, value):
    """A PCI address (0000:08:00.0), or a devlink handle pci/<addr> or netdevsim/netdevsimN."""
    bus, dummy, name = value.rpartition("/")
    if not bus:
        bus = "pci" if _PCI_RE.match(value) else ("netdevsim" if _NSIM_RE.match(value) else "")
        name = value
    if bus == "pci" and _PCI_RE.match(name):
        name = name.lower()
    elif not (bus == "netdevsim" and _NSIM_RE.match(name)):
        raise SysfsError("device: %r is neither a PCI address (0000:08:00.0) nor a pci/... or "
                         "netdevsim/netdevsimN handle" % value)
    return _device_at(sysfs, sysfs.p("bus", bus, "devices", name), "device %s" % value)


def driver_of(sysfs, dev_path):
    return sysfs.link_target(os.path.join(dev_path, "driver"))


def netdevs_of(sysfs, dev_path):
    return sysfs.listdir(os.path.join(dev_path, "net"))


def vfs_of(sysfs, dev):
    """VFs of a PCI PF: [{"index", "address", "driver", "netdevs"}] by index; [] elsewhere."""
    out = []
    if dev["bus"] != "pci":
        return out
    for entry in sysfs.listdir(dev["path"]):
        m = _VIRTFN_RE.match(entry)
        if not m:
            continue
        vf_path = os.path.realpath(os.path.join(dev["path"], entry))
        out.append({"index": int(m.group(1)), "address": os.path.basename(vf_path),
                    "driver": driver_of(sysfs, vf_path), "netdevs": netdevs_of(sysfs, vf_path)})
    out.sort(key=lambda v: v["index"])
    return out


def sriov_info(sysfs, dev):
    """-> {"num_vfs", "total_vfs", "drivers_autoprobe", "driver", "vfs", "netdevs"}.

    num_vfs is None when the device has no SR-IOV (no sriov_numvfs file).
    """
    path = dev["path"]
    auto = sysfs.read_int(os.path.join(path, "sriov_drivers_autoprobe"))
    return {
        "num_vfs": sysfs.read_int(os.path.join(path, "sriov_numvfs")),
        "total_vfs": sysfs.read_int(os.path.join(path, "sriov_totalvfs")),
        "drivers_autoprobe": None if auto is None else bool(auto),
        "driver": driver_of(sysfs, path),
        "vfs": vfs_of(sysfs, dev),
        "netdevs": netdevs_of(sysfs, path),
    }


def numvfs_path(dev):
    return os.path.join(dev["path"], "sriov_numvfs")


def autoprobe_path(dev):
    return os.path.join(dev["path"], "sriov_drivers_autoprobe")


def driver_file(sysfs, driver, action):
    """/sys/bus/pci/drivers/<driver>/bind|unbind."""
    driver_name("driver", driver)
    if action not in ("bind", "unbind"):
        raise ValueError(action)
    return sysfs.p("bus", "pci", "drivers", driver, action)


def bind(sysfs, driver, address):
    sysfs.write(driver_file(sysfs, driver, "bind"), address)


def unbind(sysfs, driver, address):
    sysfs.write(driver_file(sysfs, driver, "unbind"), address)


# ------------------------------------------------------------------------------- pure planning

def numvfs_writes(current, desired):
    """Values to write to sriov_numvfs to go from ``current`` to ``desired``.

    The kernel (PCI core, and netdevsim) refuses a new non-zero count over a non-zero one with EBUSY,
    so a change between two non-zero counts goes through 0.
    """
    if desired is None or current == desired:
        return []
    if current and desired:
        return [0, desired]
    return [desired]


def binding_changes(vfs, desired):
    """What to do so each VF is bound as wanted.

    ``vfs``: [{"index", "address", "driver"}] as read; ``desired``: {index: (bound, driver)} where
    driver is the one a bound VF must use.  -> (changes, problems):
    changes  [("unbind", index, address, current_driver) | ("bind", index, address, driver)]
    problems [(index, message)] for VFs that do not exist or are bound to another driver.
    """
    by_index = dict((v["index"], v) for v in vfs)
    changes, problems = [], []
    for index in sorted(desired):
        bound, drv = desired[index]
        vf = by_index.get(index)
        if vf is None:
            problems.append((index, "there is no VF %d (the PF has %d VFs)" % (index, len(vfs))))
            continue
        cur = vf["driver"]
        if bound:
            if cur == drv:
                continue
            if cur is not None:
                problems.append((index, "VF %d (%s) is bound to %s, not %s: unbind it first (bound: false) "
                                        "or ask for driver %s" % (index, vf["address"], cur, drv, cur)))
                continue
            changes.append(("bind", index, vf["address"], drv))
        elif cur is not None:
            changes.append(("unbind", index, vf["address"], cur))
    return changes, problems


def echo_text(sysfs, path, value):
    """The shell equivalent of a write, for step lists: ``echo 0000:08:00.2 > /sys/.../unbind``."""
    return "echo %s > %s" % (value, sysfs.show(path))
