# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only ethtool client: driver info (-i), features (-k) and statistics (-S).

Private to the collection.  The parsers are pure functions over ethtool's text output (ethtool has
no stable JSON for these three commands on the versions we meet: Debian 12 ships ethtool 6.1).
The client never changes anything: it runs ``ethtool -i|-k|-S DEV`` only, and turns the usual
"this driver cannot do that" answers into ``None`` plus a short reason instead of a failure, so an
info module can report "absent/unknown" rather than fail on a host without an mlx5 NIC.
"""

from __future__ import annotations

import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError

# The ethtool -k features that matter for IPsec offload (kernel names, see `ethtool -k`).
ESP_FEATURES = (
    "esp-hw-offload",
    "esp-tx-csum-hw-offload",
    "tx-esp-segmentation",
    "hw-tc-offload",
)

# `ethtool -S` counter names vary by kernel, driver and OFED (ipsec_rx_pkts, ipsec_full_*, older
# ipsec_dec_in_packets ...): select by prefix, never by a fixed list.
IPSEC_COUNTER_PREFIX = "ipsec_"

_FEATURE_RE = re.compile(r"^\s*([A-Za-z0-9_.-]+):\s+(on|off)(?:\s+\[([^\]]*)\])?\s*$")
_STAT_RE = re.compile(r"^\s+(\S.*?):\s+(-?\d+)\s*$")

# Messages ethtool prints when the device is not there / the driver lacks the operation.
_NO_DEVICE_RE = re.compile(r"No such device|no device matches name|does not exist", re.IGNORECASE)
_UNSUPPORTED_RE = re.compile(r"Operation not supported|no stats available|not supported", re.IGNORECASE)


def parse_driver_info(text):
    """`ethtool -i DEV` -> dict with underscore keys (driver, version, firmware_version, bus_info,
    supports_statistics, ...).  Values are stripped strings; empty values stay ''. """
    info = {}
    for line in (text or "").splitlines():
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        key = key.strip()
        if not key or not re.match(r"^[A-Za-z0-9 _-]+$", key):
            continue
        info[key.replace("-", "_").replace(" ", "_")] = value.strip()
    return info


def parse_features(text):
    """`ethtool -k DEV` -> {feature-name: {"enabled": bool, "fixed": bool, "requested": bool|None}}.

    ``[fixed]`` means the driver does not let it change; ``[requested on]`` means the user asked
    for it but the driver/dependencies keep it off.
    """
    feats = {}
    for line in (text or "").splitlines():
        m = _FEATURE_RE.match(line)
        if not m:
            continue
        name, state, note = m.group(1), m.group(2), (m.group(3) or "").strip()
        requested = None
        if note.startswith("requested "):
            requested = note.split(None, 1)[1] == "on"
        feats[name] = {"enabled": state == "on", "fixed": note == "fixed", "requested": requested}
    return feats


def esp_features(features):
    """Pick the IPsec-relevant features; key names use underscores (esp_hw_offload ...).

    A feature the kernel does not list (old kernel) is None: unknown, not off.
    """
    out = {}
    for name in ESP_FEATURES:
        f = (features or {}).get(name)
        out[name.replace("-", "_")] = None if f is None else {"enabled": f["enabled"], "fixed": f["fixed"]}
    return out


def parse_stats(text, prefix=IPSEC_COUNTER_PREFIX):
    """`ethtool -S DEV` -> {counter: int} for every counter whose name starts with ``prefix``
    (all counters when prefix is '' or None).  Header lines ("NIC statistics:") are skipped."""
    stats = {}
    for line in (text or "").splitlines():
        m = _STAT_RE.match(line)
        if not m:
            continue
        name = m.group(1).strip()
        if prefix and not name.startswith(prefix):
            continue
        stats[name] = int(m.group(2))
    return stats


def classify_error(text):
    """Map an ethtool failure message to 'no_device', 'unsupported' or 'error'."""
    if _NO_DEVICE_RE.search(text or ""):
        return "no_device"
    if _UNSUPPORTED_RE.search(text or ""):
        return "unsupported"
    return "error"


class Ethtool:
    """Read-only queries.  Each method returns (value, problem): value is None when the query
    could not be answered and problem is then a short text such as
    ``"unsupported: Cannot get driver information: Operation not supported"``."""

    def __init__(self, module, namespace=None):
        self.runner = Runner(module, "ethtool", namespace=namespace, required=False)

    def available(self):
        return self.runner.available()

    def _text(self, args):
        if not self.available():
            return None, "absent: ethtool is not installed"
        try:
            return self.runner.out(args), None
        except ToolError as exc:
            msg = exc.tool_message
            return None, "%s: %s" % (classify_error(exc.stderr + "\n" + exc.stdout), msg)

    def driver_info(self, dev):
        text, problem = self._text(["-i", dev])
        return (parse_driver_info(text) if text is not None else None), problem

    def features(self, dev):
        text, problem = self._text(["-k", dev])
        return (parse_features(text) if text is not None else None), problem

    def ipsec_counters(self, dev):
        text, problem = self._text(["-S", dev])
        return (parse_stats(text) if text is not None else None), problem
