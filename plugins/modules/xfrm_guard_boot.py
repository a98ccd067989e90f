#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: xfrm_guard_boot
short_description: Keep the fail-closed IPsec guard policies of one network namespace for boot
version_added: 0.1.0
description:
  - Writes the guard policies (C(action block), the guard marks, never offloaded, no key) of one
    network namespace as C(ip -batch) lines to C(/etc/ipsec_offload_mlx5/guards/NAME.batch) (NAME
    the namespace, C(init) for the initial one), installs the script that applies every such file
    (C(/usr/local/sbin/ipsec-offload-mlx5-guards)) and, where systemd is PID 1, the unit that runs it
    before C(network-pre.target), enabled. So the protected traffic is dropped from the first packet
    after a reboot until the next converge installs the SAs, never sent in clear.
  - One module run does what the ipsec role did in seven tasks before (render, two directories,
    three files, the unit's enablement); each part changes only when it differs.
  - O(state=absent) removes this namespace's file; when no other namespace's file is left it also
    disables and removes the unit, removes the script and the empty directory.
  - Reads and writes only these paths. Changes no xfrm state (the ipsec role installs the guards
    themselves with M(ipsec_offload.mlx5.xfrm_offload_policy)).
author: ipsec_offload.mlx5 contributors (!UNKNOWN)
options:
  config:
    description:
      - The guard policies, in the M(ipsec_offload.mlx5.xfrm_offload_policy) config shape (the
        derivation's C(guards)). Each must be a guard (C(action block), a guard mark, no offload).
        Required with O(state=present); an empty list is refused (use O(state=absent)).
    type: list
    elements: dict
  namespace:
    description:
      - The network namespace the guards belong to; omit for the initial namespace. C(init) is
        refused (the file name C(init.batch) stands for the initial namespace).
    type: str
  state:
    description: Keep the guards for boot, or remove this namespace's file (and the rest when unused).
    type: str
    choices: [present, absent]
    default: present
  owned_reqid_range:
    description: The collection's reqid range, as for M(ipsec_offload.mlx5.xfrm_offload_policy).
    type: list
    elements: raw
  script:
    description: Text of the script that applies the boot files. Required with O(state=present).
    type: str
  unit:
    description: Text of the systemd unit that runs the script. Required with O(state=present).
    type: str
  root:
    description:
      - Prefix of every path (tests, images being built). With a root the unit is neither written
        nor enabled (systemd of the running host would not see it).
    type: path
    default: ""
attributes:
  check_mode:
    description: Compares every path and the unit's state and returns what would change (RV(files)), writing nothing.
    support: full
  diff_mode:
    description: Returns the boot file's text before and after (guards hold no key).
    support: full
requirements:
  - Linux; C(systemctl) where systemd is PID 1. The Python standard library only.
'''

EXAMPLES = r'''
- name: Guards of the initial namespace, for boot
  ipsec_offload.mlx5.xfrm_guard_boot:
    config: "{{ ipsec_host.guards }}"   # this host's slice (playbooks/derive.yml)
    owned_reqid_range: "{{ hostvars['localhost'].ipsec_derived.reqid_range }}"
    script: "{{ lookup('ansible.builtin.file', 'ipsec-offload-mlx5-guards') }}"
    unit: "{{ lookup('ansible.builtin.file', 'ipsec-offload-mlx5-guards.service') }}"
'''

RETURN = r'''
files:
  description: What was (or in check mode would be) done to each path, in order.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/etc/ipsec_offload_mlx5/guards/init.batch", "action": "written"}]
systemd:
  description: The unit's handling - C(enabled), C(disabled), C(already enabled), C(not managed) and why.
  returned: always
  type: str
  sample: enabled
rendered:
  description: The batch lines of the boot file (guards hold no key).
  returned: with O(state=present)
  type: list
  elements: str
  sample:
    - >-
      xfrm policy add src 192.0.2.1/32 dst 192.0.2.2/32 dir out mark 0x0 mask 0x1 action block
      priority 4294967295 ptype main tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x51c00001 mode transport
    - >-
      xfrm policy add src 192.0.2.1/32 dst 192.0.2.2/32 dir out mark 0x1 mask 0x1 action block
      priority 4294967295 ptype main tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x51c00001 mode transport
'''

import fcntl
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard as G
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X

GUARDS_DIR = "/etc/ipsec_offload_mlx5/guards"
SCRIPT = "/usr/local/sbin/ipsec-offload-mlx5-guards"
UNIT_NAME = "ipsec-offload-mlx5-guards.service"
UNIT = "/etc/systemd/system/" + UNIT_NAME
HEADER = ("# ipsec_offload.mlx5 fail-closed guard policies (%s).\n"
          "# Written by the ipsec role; applied at boot by " + SCRIPT + ". Do not edit.\n")


def render(config, rng):
    """Guard config -> batch lines.  Raises X.InputError naming the field."""
    if not config:
        raise X.InputError("config", "is empty: use state absent to stop keeping guards for boot")
    kind = X.SPKind(rng)
    ops = []
    # the policy module's sub-options: unknown keys, types and choices refused as it refuses them
    for i, item in enumerate(_argspec.apply_list(_argspec.Options(X.sp_options()), config)):
        field = "config[%d]" % i
        sp = X.complete_sp(X.validate_sp(field, item, "merged", rng))
        if not G.is_guard_mark(sp["mark"]) or sp["action"] != "block" or (sp.get("offload") or {}).get("type") not in (None, "none"):
            raise X.InputError(field, "%s is not a guard (action block, a guard mark, no offload): only guards "
                                      "are kept for boot" % kind.describe(sp))
        ops.append(("add", sp, None))
    return X.render_ops(kind, ops, X.RENDER_FEATURES, "mask")


def _read(path):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


class Files:
    """Idempotent writes and removals below root, recorded in ``done``; nothing happens in check mode."""

    def __init__(self, module, root):
        self.module, self.root, self.done = module, root, []

    def path(self, p):
        return self.root + p

    def directory(self, p, mode=0o755):
        path = self.path(p)
        if os.path.isdir(path):
            if _mode(path) != mode:
                self._do(path, "mode %o" % mode, lambda: os.chmod(path, mode))
            return
        # exist_ok: another run (an inventory host on the same machine) may create it meanwhile
        self._do(path, "created", lambda: (os.makedirs(path, mode, exist_ok=True), os.chmod(path, mode)))

    def parent(self, p):
        """The directory of ``p``, created (0755) when missing; an existing one is left as it is."""
        path = os.path.dirname(self.path(p))
        if not os.path.isdir(path):
            self._do(path, "created", lambda: os.makedirs(path, 0o755, exist_ok=True))

    def file(self, p, content, mode):
        path = self.path(p)
        if _read(path) == content and _mode(path) == mode:
            return False
        self._do(path, "written", lambda: self._write(path, content, mode))
        return True

    @staticmethod
    def _write(path, content, mode):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ipsec-offload-mlx5.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
            os.chmod(tmp, mode)
            if os.geteuid() == 0:
                os.chown(tmp, 0, 0)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def remove(self, p):
        path = self.path(p)
        if os.path.lexists(path) and not os.path.isdir(path):
            self._do(path, "removed", lambda: os.unlink(path))
            return True
        return False

    def remove_empty_dir(self, p):
        path = self.path(p)
        if os.path.isdir(path):
            gone = {d["path"] for d in self.done if d["action"] == "removed"}   # check mode: not removed yet
            left = [n for n in os.listdir(path)
                    if not n.startswith(".ipsec-offload-mlx5.") and os.path.join(path, n) not in gone]
            if not left:
                self._do(path, "removed", lambda: os.rmdir(path))

    def _do(self, path, action, fn):
        self.done.append({"path": path, "action": action})
        if not self.module.check_mode:
            fn()


def host_lock(root):
    """An exclusive flock on /etc (or on ``root``), held until the fd is closed: several inventory
    hosts on one machine (one per network namespace) share the boot files, and one run's removal of
    the last file and its directory must not interleave with another's listing or writing."""
    path = root or "/etc"
    while not os.path.isdir(path) and os.path.dirname(path) != path:   # a root not made yet: its parent
        path = os.path.dirname(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _systemd_here(root):
    return root == "" and os.path.isdir("/run/systemd/system")


def _systemctl(module, *args):
    rc, out, err = module.run_command(["systemctl"] + list(args), environ_update={"LC_ALL": "C"})
    return rc, out.strip(), err.strip()


def present(module, files, p, rng):
    lines = render(p["config"], rng)
    for opt in ("script", "unit"):
        if not p.get(opt):
            module.fail_json(msg="%s: is required with state present" % opt, field=opt, changed=False)
    name = p.get("namespace") or "init"
    batch = GUARDS_DIR + "/" + name + ".batch"
    before = _read(files.path(batch))
    content = HEADER % (p.get("namespace") or "initial network namespace") + "".join(line + "\n" for line in lines)
    files.directory(GUARDS_DIR)
    files.file(batch, content, 0o644)
    files.parent(SCRIPT)
    files.file(SCRIPT, p["script"].rstrip("\n") + "\n", 0o755)
    systemd = "not managed: systemd is not PID 1 here" if p["root"] == "" else "not managed: root is set"
    if _systemd_here(p["root"]):
        files.parent(UNIT)
        unit_changed = files.file(UNIT, p["unit"].rstrip("\n") + "\n", 0o644)
        rc, out, dummy = _systemctl(module, "is-enabled", UNIT_NAME)
        if rc == 0 and out == "enabled" and not unit_changed:
            systemd = "already enabled"
        else:
            systemd = "enabled"
            files.done.append({"path": UNIT_NAME, "action": "enabled (daemon-reload, systemctl enable)"})
            if not module.check_mode:
                for args in (("daemon-reload",), ("enable", UNIT_NAME)):
                    rc, out, err = _systemctl(module, *args)
                    if rc != 0:
                        module.fail_json(msg="systemctl %s failed: %s" % (" ".join(args), err or out or "rc=%d" % rc),
                                         changed=True, files=files.done)
    diff = {"before": before or "", "after": content, "before_header": files.path(batch),
            "after_header": files.path(batch)} if before != content else None
    return lines, systemd, diff


def absent(module, files, p):
    name = p.get("namespace") or "init"
    batch = GUARDS_DIR + "/" + name + ".batch"
    before = _read(files.path(batch))
    files.remove(batch)
    gdir = files.path(GUARDS_DIR)
    left = [n for n in (os.listdir(gdir) if os.path.isdir(gdir) else [])
            if n.endswith(".batch") and n != name + ".batch"]
    systemd = "kept: boot files of other namespaces are left (%s)" % ", ".join(sorted(left)) if left else "not installed"
    if not left:
        unit_path = files.path(UNIT)
        if _systemd_here(p["root"]) and os.path.exists(unit_path):
            systemd = "disabled"
            files.done.append({"path": UNIT_NAME, "action": "disabled"})
            if not module.check_mode:
                rc, out, err = _systemctl(module, "disable", UNIT_NAME)
                if rc != 0:
                    module.fail_json(msg="systemctl disable failed: %s" % (err or out or "rc=%d" % rc),
                                     changed=True, files=files.done)
        unit_removed = files.remove(UNIT)
        files.remove(SCRIPT)
        files.remove_empty_dir(GUARDS_DIR)
        if unit_removed and _systemd_here(p["root"]) and not module.check_mode:
            _systemctl(module, "daemon-reload")
    diff = {"before": before, "after": "", "before_header": files.path(batch),
            "after_header": files.path(batch)} if before is not None else None
    return systemd, diff


def main():
    module = AnsibleModule(argument_spec=dict(
        config=dict(type="list", elements="dict"),
        namespace=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        owned_reqid_range=dict(type="list", elements="raw"),
        script=dict(type="str"),
        unit=dict(type="str"),
        root=dict(type="path", default=""),
    ), supports_check_mode=True)
    p = module.params
    try:
        V.netns("namespace", p.get("namespace"))
        if p.get("namespace") == "init":
            raise X.InputError("namespace", "'init' cannot be told apart from the initial network namespace in %s "
                                            "(init.batch); rename the namespace or set ipsec_fail_closed: false"
                               % GUARDS_DIR)
        root = (p["root"] or "").rstrip("/")
        if root and not os.path.isabs(root):
            raise X.InputError("root", "must be an absolute path")
        p["root"] = root
        rng = X.owned_range(p.get("owned_reqid_range"))
        files = Files(module, root)
        result = {}
        lock = host_lock(root)
        try:
            if p["state"] == "present":
                lines, systemd, diff = present(module, files, p, rng)
                result["rendered"] = lines
            else:
                systemd, diff = absent(module, files, p)
        finally:
            os.close(lock)
    except X.InputError as exc:
        module.fail_json(msg=str(exc), field=exc.field, changed=False)
    except OSError as exc:
        module.fail_json(msg="%s: %s" % (getattr(exc, "filename", None) or "guards for boot", exc.strerror or exc),
                         changed=False)
    result.update(changed=bool(files.done), files=files.done, systemd=systemd)
    if module._diff and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
