# -*- coding: utf-8 -*-
"""A fake sysfs tree (directories, files and symlinks under tmp_path) and a fake kernel that
reacts to writes the way the real one does for SR-IOV:

- sriov_numvfs: a new non-zero count over a non-zero one -> EBUSY (PCI core and netdevsim);
  more than sriov_totalvfs -> ERANGE (PCI core); netdevsim: more than max_vfs -> ENOMEM.
  PCI VFs appear as virtfnN -> ../<vf address>, bound to the PF's driver when
  sriov_drivers_autoprobe is 1.  netdevsim VFs have no PCI address (no virtfnN).
- /sys/bus/pci/drivers/<drv>/bind|unbind: create/remove the device's driver link; binding a bound
  device -> EBUSY, unbinding from a driver it is not bound to -> ENODEV.

The layout follows what a real host shows (see ../shared/reference/samples/netdevsim/01-new-device.txt
for netdevsim: /sys/bus/netdevsim/devices/netdevsim1/{sriov_numvfs,net/,driver}, no sriov_totalvfs).
"""

from __future__ import annotations

import errno
import os


def _link(target, name):
    os.makedirs(os.path.dirname(name), exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(name)), name)


def _file(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


class FakeSysfs:
    def __init__(self, root):
        self.root = str(root)
        self.writes = []        # (path as on a real host, value)
        self.fail = {}          # (basename of file, value) -> errno, consumed once
        self.fail_always = {}   # same, never consumed
        self.vf_addresses = {}  # pf address -> [vf addresses]
        self.max_vfs = {}       # netdevsim name -> max_vfs

    # ---------------------------------------------------------------------------- building
    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def _driver_dir(self, bus, drv):
        d = self.p("bus", bus, "drivers", drv)
        os.makedirs(d, exist_ok=True)
        for f in ("bind", "unbind"):
            if not os.path.exists(os.path.join(d, f)):
                _file(os.path.join(d, f), "")
        return d

    def _netdev(self, devdir, ifname):
        nd = os.path.join(devdir, "net", ifname)
        os.makedirs(nd, exist_ok=True)
        _link(devdir, os.path.join(nd, "device"))
        _link(nd, self.p("class", "net", ifname))

    def add_pci_pf(self, addr, driver="mlx5_core", total_vfs=8, netdevs=("p0",), autoprobe=True,
                   vf_addresses=None, sriov=True):
        devdir = self.p("devices", "pci0000:00", addr)
        os.makedirs(devdir)
        os.makedirs(self.p("bus", "pci", "devices"), exist_ok=True)
        _link(self.p("bus", "pci"), os.path.join(devdir, "subsystem"))
        _link(devdir, self.p("bus", "pci", "devices", addr))
        if driver:
            _link(self._driver_dir("pci", driver), os.path.join(devdir, "driver"))
        if sriov:
            _file(os.path.join(devdir, "sriov_numvfs"), "0\n")
            _file(os.path.join(devdir, "sriov_totalvfs"), "%d\n" % total_vfs)
            _file(os.path.join(devdir, "sriov_drivers_autoprobe"), "1\n" if autoprobe else "0\n")
        for n in netdevs:
            self._netdev(devdir, n)
        bus, rest = addr.rsplit(":", 1)
        self.vf_addresses[addr] = vf_addresses or ["%s:%02x.%d" % (bus, int(rest.split(".")[0], 16) + (i + 2) // 8,
                                                                   (i + 2) % 8) for i in range(total_vfs)]
        return devdir

    def add_netdevsim(self, name="netdevsim1", netdevs=("eth0",), max_vfs=4):
        devdir = self.p("devices", name)
        os.makedirs(devdir)
        os.makedirs(self.p("bus", "netdevsim", "devices"), exist_ok=True)
        _link(self.p("bus", "netdevsim"), os.path.join(devdir, "subsystem"))
        _link(devdir, self.p("bus", "netdevsim", "devices", name))
        _link(self._driver_dir("netdevsim", "netdevsim"), os.path.join(devdir, "driver"))
        _file(os.path.join(devdir, "sriov_numvfs"), "0\n")
        for n in netdevs:
            self._netdev(devdir, n)
        self.max_vfs[name] = max_vfs
        return devdir

    def add_pci_driver(self, drv):
        self._driver_dir("pci", drv)

    # ------------------------------------------------------------------------------ state
    def numvfs(self, devdir):
        with open(os.path.join(devdir, "sriov_numvfs")) as fh:
            return int(fh.read())

    def vf_driver(self, vf_addr):
        link = self.p("bus", "pci", "devices", vf_addr, "driver")
        return os.path.basename(os.path.realpath(link)) if os.path.lexists(link) else None

    def set_vf_driver(self, vf_addr, drv):
        link = self.p("bus", "pci", "devices", vf_addr, "driver")
        if os.path.lexists(link):
            os.unlink(link)
        if drv:
            _link(self._driver_dir("pci", drv), link)

    def set_vfs(self, devdir, n):
        """Set the VF count directly (test setup), as the kernel would."""
        self._apply_numvfs(devdir, n)

    def _apply_numvfs(self, devdir, n):
        name = os.path.basename(devdir)
        bus = os.path.basename(os.path.realpath(os.path.join(devdir, "subsystem")))
        if bus == "pci":
            for entry in os.listdir(devdir):
                if entry.startswith("virtfn"):
                    vf = os.path.realpath(os.path.join(devdir, entry))
                    os.unlink(os.path.join(devdir, entry))
                    os.unlink(self.p("bus", "pci", "devices", os.path.basename(vf)))
                    for root, dirs, files in os.walk(vf, topdown=False):
                        for f in files:
                            os.unlink(os.path.join(root, f))
                        for d in dirs:
                            full = os.path.join(root, d)
                            os.unlink(full) if os.path.islink(full) else os.rmdir(full)
                    os.rmdir(vf)
            with open(os.path.join(devdir, "sriov_drivers_autoprobe")) as fh:
                auto = fh.read().strip() == "1"
            pf_drv_link = os.path.join(devdir, "driver")
            pf_drv = os.path.basename(os.path.realpath(pf_drv_link)) if os.path.lexists(pf_drv_link) else None
            for i in range(n):
                addr = self.vf_addresses[name][i]
                vfdir = self.p("devices", "pci0000:00", addr)
                os.makedirs(vfdir)
                _link(self.p("bus", "pci"), os.path.join(vfdir, "subsystem"))
                _link(vfdir, self.p("bus", "pci", "devices", addr))
                _link(vfdir, os.path.join(devdir, "virtfn%d" % i))
                if auto and pf_drv:
                    self.set_vf_driver(addr, pf_drv)
        _file(os.path.join(devdir, "sriov_numvfs"), "%d\n" % n)

    # ------------------------------------------------------------------------- the kernel
    def show(self, path):
        return "/sys/" + os.path.relpath(path, self.root)

    def write(self, sysfs_obj, path, data):
        """Replacement for _sysfs.Sysfs._write_file (installed by ``install``)."""
        value = data.strip()
        self.writes.append((self.show(path), value))
        base = os.path.basename(path)
        for table in (self.fail, self.fail_always):
            code = table.get((base, value))
            if code is not None:
                if table is self.fail:
                    del self.fail[(base, value)]
                raise OSError(code, os.strerror(code))
        if not os.path.exists(path):
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        devdir = os.path.dirname(path)
        if base == "sriov_numvfs":
            n = int(value)
            cur = self.numvfs(devdir)
            if n == cur:
                return
            if cur and n:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            name = os.path.basename(devdir)
            if name in self.max_vfs:
                if n > self.max_vfs[name]:
                    raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
            else:
                with open(os.path.join(devdir, "sriov_totalvfs")) as fh:
                    if n > int(fh.read()):
                        raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
            self._apply_numvfs(devdir, n)
        elif base in ("bind", "unbind"):
            drv = os.path.basename(devdir)
            cur = self.vf_driver(value)
            if not os.path.exists(self.p("bus", "pci", "devices", value)):
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            if base == "bind":
                if cur is not None:
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
                self.set_vf_driver(value, drv)
            else:
                if cur != drv:
                    raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
                self.set_vf_driver(value, None)
        else:
            _file(path, value + "\n")

    def install(self, monkeypatch, sysfs_module):
        fake = self
        monkeypatch.setattr(sysfs_module, "DEFAULT_ROOT", self.root)

        def write_file(sysfs_obj, path, data):
            fake.write(sysfs_obj, path, data)
        monkeypatch.setattr(sysfs_module.Sysfs, "_write_file", write_file)
        return self
