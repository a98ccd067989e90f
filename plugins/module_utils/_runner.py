# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the system tools the collection drives (ip, tc, devlink, ethtool).

Private to the collection.  Every command is an argument list (never a shell string), runs with
LC_ALL=C so the output we parse is stable, and secrets only ever travel on stdin (``ip -batch -``).
A failure becomes a ToolError that carries the quoted command, the tool's own message and, when we
recognise the kernel's message, a hint that says what to do about it.
"""

from __future__ import annotations

import re
import shlex

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}

# Tools that take a network namespace themselves; the rest are wrapped in `ip netns exec`.
_NATIVE_NETNS = {"ip": ["-n"], "tc": ["-n"]}

# Known kernel / driver / tool messages -> what the user should do.  Matched case-insensitively
# against stderr+stdout of a failed command.  Keep the patterns short and the advice concrete.
HINTS = [
    (r"value after \"offload dir\" is invalid|\"offload\" is the second value",
     "this iproute2 is too old for 'offload packet' (needs iproute2 >= 6.2); upgrade iproute2 "
     "or use offload type 'crypto' or 'none'"),
    (r"Changing fs mode is not supported when eswitch offloads enabled|"
     r"Moving to \S+ is not supported when eswitch offloads enabled|"
     r"Software managed steering is not supported when eswitch offloads enabled",
     "flow_steering_mode can only change while the eswitch is in legacy mode: set the eswitch to "
     "legacy first, or let mlx_devlink_eswitch order it (steering mode before switchdev)"),
    (r"Can't change eswitch mode when IPsec SA and/or policies are configured",
     "remove the offloaded IPsec SAs and policies on this device first (xfrm_offload_state / "
     "xfrm_offload_policy state=deleted), then change the eswitch mode"),
    (r"Can't change mode, E-Switch is busy",
     "the eswitch is busy (offloaded TC rules or IPsec objects hold it): remove them, then retry"),
    (r"Device does not support policy priority",
     "mlx5 offers policy priorities only where it offers packet offload: with flow_steering_mode smfs "
     "in switchdev mode it has neither; set dmfs (while legacy) before switchdev"),
    (r"Device doesn't support IPsec packet|Packet offload is not supported",
     "this device/firmware does not offer IPsec packet offload here: check the NIC is "
     "crypto-enabled, flow_steering_mode is dmfs before switchdev, and for a VF that "
     "ipsec_packet is enabled on its port function"),
    (r"Port doesn't support ipsec_(packet|crypto) function attribute",
     "this devlink port has no IPsec port-function capability (the driver does not implement it)"),
    (r"function attribute supported for VFs only",
     "ipsec_packet/ipsec_crypto can only be set on a VF port (flavour pcivf)"),
    (r"Unsupported replay window size",
     "for inbound packet offload the replay window must be 32, 64, 128 or 256"),
    (r"Policy offload is not supported",
     "this device cannot offload policies: use offload type 'none' for the policy (or a NIC "
     "that supports packet offload)"),
    (r"Requested AEAD algorithm not found|Requested type not found",
     "the kernel lacks ESP or AES-GCM support (CONFIG_INET_ESP / CONFIG_CRYPTO_GCM, or the esp4/"
     "esp6 module is not loaded)"),
    (r"Device doesn't support offload with ESN",
     "the device cannot offload ESN states: disable esn for this SA or use another offload type"),
    (r"Device does not support requested policy priority",
     "mlx5 cannot offload a policy with priority 4294967295: give the policy's priority "
     "(config[].priority) a value of at most 4294967294"),
    (r"Cannot offload forward policy",
     "mlx5 offloads in and out policies only: give the fwd policy offload type 'none'"),
    (r"Cannot offload without reqid",
     "a packet-offloaded SA needs a reqid (config[].reqid) that its policy's template names"),
    (r"Device does not support upper protocol other than TCP/UDP",
     "mlx5 offloads selectors with proto tcp, udp or none only: change sel.proto / the policy's "
     "proto, or do not offload this object"),
    (r"Mismatched SA and offload direction",
     "the SA direction and the offload direction differ: make them the same"),
    # devlink eswitch / port function (mlx5 eswitch_offloads.c; appended for mlx_devlink_eswitch)
    (r"Device doesn't support IPsec crypto",
     "this device/firmware does not offer IPsec crypto offload for VFs: check the NIC is "
     "crypto-enabled and its firmware supports it"),
    (r"Eswitch vport is disabled",
     "the VF's eswitch vport is not enabled: create the VF (mlx_sriov num_vfs) and put the eswitch "
     "in switchdev mode before setting its port function"),
    (r"Failed to set IPsec (packet mode|crypto)",
     "the firmware refused the port-function change: the VF must be unbound from its driver while "
     "its IPsec capability changes (mlx_devlink_eswitch does that for PCI VFs with unbind_vfs: true); "
     "else check dmesg for the mlx5 syndrome"),
    (r"Bad parameter: supported values are",
     "this kernel does not know that flow_steering_mode value (6.12 takes dmfs and smfs; hmfs came "
     "later): choose one it lists"),
    (r"Packet offload tunnel mode is disabled due to encap settings",
     "mlx5 made its IPsec tables while the eswitch encap mode was basic (switchdev): tunnel-mode "
     "packet offload needs encap_mode: none before the first IPsec object, or use transport mode"),
    (r"Can't set encapsulation when (flows|IPsec SA)",
     "the encap mode cannot change while offloaded flows or IPsec SAs/policies exist: remove them "
     "first (tc_flower_vlan / xfrm_offload_state / xfrm_offload_policy state=deleted)"),
    (r"multi-PF netdev \(Socket Direct\)",
     "switchdev mode is not possible while a multi-PF (Socket Direct) netdev is configured"),
    (r"Can't change mode while devlink traps are active",
     "disable the active devlink traps (devlink trap set ... action drop) before changing the eswitch mode"),
    # the xfrm core's words when the driver refused without a message of its own (xfrm_dev_state_add)
    (r"Device failed to offload this state",
     "the device refused the SA without saying why: on mlx5 that is what the PF answers (EBUSY) while a "
     "VF of it has ipsec_crypto/ipsec_packet enabled on its port function (disable them with "
     "mlx_devlink_eswitch, or offload on the VF); else check dmesg"),
    # generic: last, so that the specific messages above win when devlink prints both
    (r"Device or resource busy",
     "the device is busy: on mlx5, IPsec offload and offloaded TC rules on the same netdev exclude "
     "each other until the IPsec tables exist (create IPsec states/policies before TC rules), and a "
     "PF cannot offload IPsec while one of its VFs has ipsec_crypto/ipsec_packet enabled on its port "
     "function (nor a VF get one while the PF has IPsec objects offloaded)"),
]


def hint_for(text):
    """Return the advice for a known tool/kernel message, or None."""
    for pattern, advice in HINTS:
        if re.search(pattern, text or "", re.IGNORECASE):
            return advice
    return None


class ToolError(Exception):
    """A system tool failed.  Never carries stdin (it may hold key material)."""

    def __init__(self, cmd, rc, stdout="", stderr="", what=None):
        self.cmd = list(cmd)
        self.rc = rc
        self.stdout = stdout or ""
        self.stderr = stderr or ""
        self.what = what
        self.hint = hint_for(self.stderr + "\n" + self.stdout)
        super().__init__(self.message)

    @property
    def tool_message(self):
        text = (self.stderr.strip() or self.stdout.strip())
        return text.splitlines()[-1] if text else "no message"

    @property
    def message(self):
        head = "%s failed" % (self.what or shlex.join(self.cmd))
        msg = "%s (rc=%s): %s" % (head, self.rc, (self.stderr.strip() or self.stdout.strip() or "no message"))
        if self.hint:
            msg += " -- %s" % self.hint
        return msg

    def as_result(self):
        """Fields to add to a failed module result (safe: argv never holds secrets)."""
        res = {"cmd": shlex.join(self.cmd), "rc": self.rc, "stderr": self.stderr, "stdout": self.stdout}
        if self.hint:
            res["hint"] = self.hint
        return res


class Runner:
    """One system tool, run through AnsibleModule.run_command with an argument list.

    ``namespace``: run inside that network namespace (``ip -n``/``tc -n``, else ``ip netns exec``).
    """

    def __init__(self, module, tool, namespace=None, required=True):
        self.module = module
        self.tool = tool
        self.namespace = namespace
        self.path = module.get_bin_path(tool, required=required)
        self._ip_path = None

    def available(self):
        return self.path is not None

    def argv(self, args):
        args = [str(a) for a in args]
        if not self.namespace:
            return [self.path] + args
        if self.tool in _NATIVE_NETNS:
            return [self.path] + _NATIVE_NETNS[self.tool] + [self.namespace] + args
        if self._ip_path is None:
            self._ip_path = self.module.get_bin_path("ip", required=True)
        return [self._ip_path, "netns", "exec", self.namespace, self.path] + args

    def run(self, args, data=None, ok_rcs=(0,), what=None):
        """Run; return (rc, stdout, stderr).  Raise ToolError unless rc is in ok_rcs.

        ``data`` goes to stdin: the only channel for key material.
        """
        cmd = self.argv(args)
        kwargs = {"check_rc": False, "environ_update": dict(C_LOCALE)}
        if data is not None:
            kwargs["data"] = data
            kwargs["binary_data"] = True  # we terminate lines ourselves
        rc, out, err = self.module.run_command(cmd, **kwargs)
        if rc not in ok_rcs:
            raise ToolError(cmd, rc, out, err, what=what)
        return rc, out, err

    def out(self, args, what=None):
        return self.run(args, what=what)[1]

    def json(self, args, what=None):
        """Run a command that prints JSON (devlink -j, tc -j) and decode it."""
        import json

        out = self.out(args, what=what)
        if not out.strip():
            return None
        try:
            return json.loads(out)
        except ValueError as exc:
            raise ToolError(self.argv(args), 0, out, "could not decode JSON output: %s" % exc, what=what)


BATCH_FAILED_RE = re.compile(r"Command failed (?:-|\S+):(\d+)")


def failed_batch_line(stderr):
    """Return the 1-based line number at which `ip -batch`/`tc -batch` stopped, or None."""
    m = BATCH_FAILED_RE.search(stderr or "")
    return int(m.group(1)) if m else None


def batch_text(lines):
    """Join batch lines for stdin.  Each line must be one command: refuse embedded newlines."""
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError("a batch line contains a line break")
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
