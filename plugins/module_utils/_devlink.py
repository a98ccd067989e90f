# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""devlink: the eswitch mode, the flow_steering_mode parameter and the port functions of a device.

Private to the collection.  The parsers are pure functions over the JSON that ``devlink -j`` prints
(decoded, or the raw text); the setters return argument lists; the ``Devlink`` class is the only
part that runs anything.  Any devlink handle works (``pci/0000:08:00.0``, ``netdevsim/netdevsim1``,
``auxiliary/...``): nothing here assumes the PCI bus.

Shapes (see ../shared/reference/samples/devlink_*.txt and netdevsim/*.txt):
  devlink -j dev eswitch show H   {"dev":{"H":{"mode":"switchdev","inline-mode":"none","encap-mode":"basic"}}}
                                  (netdevsim: mode only; a key is absent when the kernel gave no value)
  devlink -j dev param show H name flow_steering_mode
                                  {"param":{"H":[{"name":..,"type":..,"values":[{"cmode":"runtime","value":"dmfs"}]}]}}
                                  (the kernel refuses the query when the driver has no such parameter)
  devlink -j port show            {"port":{"H/1":{"flavour":"pcivf","vfnum":0,"netdev":..,"function":{..}}}}
                                  (function.ipsec_packet / ipsec_crypto are "enable"/"disable" strings and
                                  are absent when the driver does not report the capability)

What holds the eswitch busy is read by the parsers of those tools' output: offloaded IPsec objects
by _xfrm_text.offloaded_xfrm, offloaded TC rules by _tc.tc_in_hw.
"""

from __future__ import annotations

import json
import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import ToolError

MODES = ("legacy", "switchdev")
ENCAP_MODES = ("none", "basic")
FLOW_STEERING_MODES = ("dmfs", "smfs", "hmfs")
PORT_CAPS = ("ipsec_crypto", "ipsec_packet")
FSM_PARAM = "flow_steering_mode"


class DevlinkParseError(ValueError):
    """devlink printed something we do not understand."""


def _decode(data):
    if isinstance(data, (bytes, str)):
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError as exc:
            raise DevlinkParseError("devlink printed no valid JSON: %s" % exc)
    return data if data is not None else {}


def device_of_port(port_handle):
    """``pci/0000:08:00.0/1`` -> ``pci/0000:08:00.0``."""
    return port_handle.rsplit("/", 1)[0]


# ---------------------------------------------------------------------------------------- parsers

def parse_eswitch(data, handle):
    """-> {"mode", "inline_mode", "encap_mode"}; a value is None when devlink did not print it."""
    doc = _decode(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("dev", {}), dict):
        raise DevlinkParseError("unexpected 'devlink -j dev eswitch show' output")
    attrs = doc.get("dev", {}).get(handle) or {}
    return {"mode": attrs.get("mode"), "inline_mode": attrs.get("inline-mode"),
            "encap_mode": attrs.get("encap-mode")}


def parse_param(data, handle, name):
    """-> {cmode: value} for parameter ``name`` of ``handle``, or None when it is not listed.

    Accepts the array form (``{"param":{"H":[{...}]}}``, what iproute2 prints) and, defensively, an
    object keyed by handle holding one parameter.  A listed parameter with an empty ``values`` list
    (a historic kernel bug) gives {}.
    """
    doc = _decode(data)
    params = doc.get("param", {}) if isinstance(doc, dict) else {}
    entries = params.get(handle)
    if entries is None:
        return None
    if isinstance(entries, dict):
        entries = [entries]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            values = {}
            for v in entry.get("values") or []:
                if isinstance(v, dict) and "cmode" in v:
                    values[v["cmode"]] = v.get("value")
            return values
    return None


_CAP_WORDS = {"enable": True, "enabled": True, "true": True,
              "disable": False, "disabled": False, "false": False}


def cap_value(value):
    """A port-function capability as printed -> True/False, None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _CAP_WORDS:
        raise DevlinkParseError("unexpected port function capability value %r" % (value,))
    return _CAP_WORDS[word]


def parse_ports(data, device=None):
    """-> list of ports (sorted by index), only those of ``device`` when given.

    Each: {"port", "device", "index", "flavour", "netdev", "pfnum", "vfnum", "controller",
    "external", "caps": {"ipsec_crypto": True|False|None, "ipsec_packet": ...}}.
    A cap is None when the driver did not report it (unsupported there).
    """
    doc = _decode(data)
    ports = doc.get("port", {}) if isinstance(doc, dict) else {}
    if not isinstance(ports, dict):
        raise DevlinkParseError("unexpected 'devlink -j port show' output")
    out = []
    for handle, attrs in ports.items():
        if "/" not in handle:
            continue
        dev, index = handle.rsplit("/", 1)
        if device is not None and dev != device:
            continue
        attrs = attrs or {}
        fn = attrs.get("function") or {}
        try:
            idx = int(index)
        except ValueError:
            raise DevlinkParseError("unexpected devlink port handle %r" % handle)
        out.append({
            "port": handle, "device": dev, "index": idx,
            "flavour": attrs.get("flavour"), "netdev": attrs.get("netdev"),
            "pfnum": attrs.get("pfnum"), "vfnum": attrs.get("vfnum"),
            "controller": attrs.get("controller"), "external": attrs.get("external"),
            "caps": dict((c, cap_value(fn.get(c))) for c in PORT_CAPS),
        })
    out.sort(key=lambda p: (p["device"], p["index"]))
    return out


def find_port(ports, port=None, vf=None, controller=None):
    """Pick one port by handle, or by VF number (and controller).  Raise LookupError with a reason."""
    if port is not None:
        for p in ports:
            if p["port"] == port:
                return p
        raise LookupError("there is no devlink port %s" % port)
    cands = [p for p in ports if p["flavour"] == "pcivf" and p["vfnum"] == vf
             and (controller is None or p["controller"] == controller)]
    if not cands:
        raise LookupError("there is no devlink port for VF %d%s (VF ports exist only while the VF "
                          "exists and, on most drivers, in switchdev mode)"
                          % (vf, "" if controller is None else " on controller %d" % controller))
    if len(cands) > 1:
        raise LookupError("VF %d matches several ports (%s): give controller or port"
                          % (vf, ", ".join(p["port"] for p in cands)))
    return cands[0]


def describe_port(p):
    if p["flavour"] == "pcivf" and p["vfnum"] is not None:
        return "%s (vf %s%s)" % (p["port"], p["vfnum"], ", %s" % p["netdev"] if p["netdev"] else "")
    return "%s (%s%s)" % (p["port"], p["flavour"], ", %s" % p["netdev"] if p["netdev"] else "")


# ------------------------------------------------------------------------------- argument lists

def eswitch_show_args(handle):
    return ["-j", "dev", "eswitch", "show", handle]


def param_show_args(handle, name=FSM_PARAM):
    return ["-j", "dev", "param", "show", handle, "name", name]


def port_show_args():
    return ["-j", "port", "show"]


def eswitch_set_args(handle, mode=None, encap_mode=None):
    args = ["dev", "eswitch", "set", handle]
    if mode is not None:
        args += ["mode", mode]
    if encap_mode is not None:
        args += ["encap-mode", encap_mode]
    if len(args) == 4:
        raise ValueError("eswitch_set_args: nothing to set")
    return args


def param_set_args(handle, name, value, cmode="runtime"):
    return ["dev", "param", "set", handle, "name", name, "value", value, "cmode", cmode]


def port_fn_set_args(port, cap, enabled):
    if cap not in PORT_CAPS:
        raise ValueError("unknown port function capability %r" % cap)
    return ["port", "function", "set", port, cap, "enable" if enabled else "disable"]


# ------------------------------------------------------------ views for ipsec_offload_info

def parse_dev_handles(data):
    """``devlink -j dev`` -> set of handles."""
    return set(((_decode(data) or {}).get("dev") or {}).keys())


def device_of_netdev(ports, netdev):
    """The devlink device whose port (as parse_ports gives it) carries ``netdev`` (first match), or None."""
    for port in ports or []:
        if port["netdev"] == netdev:
            return port["device"]
    return None


def eswitch_facts(data, handle):
    """parse_eswitch with the names ipsec_offload_info returns: {'eswitch_mode', 'inline_mode', 'encap_mode'}."""
    attrs = parse_eswitch(data, handle)
    return {"eswitch_mode": attrs["mode"], "inline_mode": attrs["inline_mode"], "encap_mode": attrs["encap_mode"]}


def param_value(data, handle, name, cmode="runtime"):
    """``devlink -j dev param show H name N`` -> the value for ``cmode``, or None."""
    return (parse_param(data, handle, name) or {}).get(cmode)


def vf_ports(ports, handle):
    """VF ports (flavour pcivf) of devlink device ``handle`` with their IPsec caps (True/False, or
    None when the port function does not report the capability)."""
    return [{"port": p["port"], "vfnum": p["vfnum"], "pfnum": p["pfnum"], "netdev": p["netdev"],
             "ipsec_packet": p["caps"]["ipsec_packet"], "ipsec_crypto": p["caps"]["ipsec_crypto"]}
            for p in ports or [] if p["device"] == handle and p["flavour"] == "pcivf"]


# ----------------------------------------------------------------------------------- the client

_PARAM_UNSUPPORTED_RE = re.compile(r"Invalid argument|Operation not supported|not supported", re.I)


class Devlink:
    """The collection's one client of devlink, over a Runner (tool "devlink"): the parsed views
    for the modules that change a device (eswitch, param, ports) and the decoded JSON for
    ipsec_offload_info's tolerant reads (the *_json methods), from the same argument lists."""

    def __init__(self, runner):
        self.runner = runner
        self.tool = runner.tool

    def available(self):
        return self.runner.available()

    def devices_json(self):
        return self.runner.json(["-j", "dev"], what="devlink -j dev")

    def ports_json(self):
        return self.runner.json(port_show_args(), what="devlink -j port show")

    def eswitch_json(self, handle):
        return self.runner.json(eswitch_show_args(handle), what="devlink -j dev eswitch show %s" % handle)

    def param_json(self, handle, name=FSM_PARAM):
        return self.runner.json(param_show_args(handle, name), what="devlink -j dev param show %s" % handle)

    def argv_text(self, args):
        import shlex
        return shlex.join(self.runner.argv(args))

    def eswitch(self, handle):
        return parse_eswitch(self.runner.out(eswitch_show_args(handle)), handle)

    def param(self, handle, name=FSM_PARAM):
        """-> {cmode: value}, or None when the driver has no such parameter."""
        try:
            out = self.runner.out(param_show_args(handle, name))
        except ToolError as exc:
            if _PARAM_UNSUPPORTED_RE.search(exc.stderr + exc.stdout):
                return None
            raise
        return parse_param(out, handle, name)

    def ports(self, handle):
        return parse_ports(self.runner.out(port_show_args()), handle)

    def run(self, args, what=None):
        self.runner.run(args, what=what)
