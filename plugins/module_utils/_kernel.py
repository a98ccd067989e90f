# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parsers of the kernel's own files: the release string, /proc/modules, modules.builtin and
modules.dep, the kernel config (/proc/config.gz, /boot/config-*), /proc/net/xfrm_stat; and what
they say about the kernel pieces IPsec offload needs.  Pure: text in, plain data out (the reading is
ipsec_offload_info's)."""

from __future__ import annotations

import os
import re

# Kernel pieces: result name -> (module name or None, CONFIG symbol)
KERNEL_FEATURES = (
    ("esp4", "esp4", "CONFIG_INET_ESP"),
    ("esp6", "esp6", "CONFIG_INET6_ESP"),
    ("esp4_offload", "esp4_offload", "CONFIG_INET_ESP_OFFLOAD"),
    ("esp6_offload", "esp6_offload", "CONFIG_INET6_ESP_OFFLOAD"),
    ("xfrm_user", "xfrm_user", "CONFIG_XFRM_USER"),
    ("xfrm_offload", None, "CONFIG_XFRM_OFFLOAD"),
    ("gcm", "gcm", "CONFIG_CRYPTO_GCM"),
    ("mlx5_ipsec", None, "CONFIG_MLX5_EN_IPSEC"),
)


def version_tuple(text):
    """'6.12.117+deb13-amd64' -> (6, 12, 117); '6.1.0' -> (6, 1, 0); non-numeric -> None."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return tuple(int(g) for g in m.groups(default="0"))


def parse_proc_modules(text):
    """/proc/modules -> set of loaded module names."""
    return set(line.split()[0] for line in (text or "").splitlines() if line.strip())


def parse_module_paths(text):
    """modules.builtin / modules.dep -> set of module names ('kernel/net/ipv4/esp4.ko[.xz]: ...' ->
    'esp4').  Names are normalised with '-' -> '_' as the kernel does."""
    names = set()
    for line in (text or "").splitlines():
        path = line.split(":", 1)[0].strip()
        if not path:
            continue
        base = os.path.basename(path)
        m = re.match(r"^(.*?)\.ko(?:\.\w+)?$", base)
        if m:
            names.add(m.group(1).replace("-", "_"))
    return names


def parse_kernel_config(text):
    """Kernel .config text -> {symbol: 'y'|'m'|'n'|value}; '# CONFIG_X is not set' -> 'n'."""
    conf = {}
    for line in (text or "").splitlines():
        line = line.strip()
        m = re.match(r"^# (CONFIG_\w+) is not set$", line)
        if m:
            conf[m.group(1)] = "n"
            continue
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            conf[m.group(1)] = m.group(2)
    return conf


def kernel_features(loaded=None, builtin=None, available=None, config=None):
    """Combine the sources (each None when unreadable) into
    {feature: 'loaded'|'builtin'|'module'|'absent'|'unknown'}."""
    out = {}
    for name, mod, symbol in KERNEL_FEATURES:
        state = "unknown"
        if mod and loaded is not None and mod in loaded:
            state = "loaded"
        elif mod and builtin is not None and mod in builtin:
            state = "builtin"
        elif config is not None:
            val = config.get(symbol, "n")
            state = {"y": "builtin", "m": "module"}.get(val, "absent")
            if state == "module" and mod and available is not None and mod not in available:
                state = "absent"  # configured as a module but not installed
        elif mod and available is not None and mod in available:
            state = "module"
        elif mod and builtin is not None and available is not None:
            state = "absent"  # neither built in nor installed as a module
        out[name] = state
    return out


def parse_xfrm_stat(text):
    """/proc/net/xfrm_stat -> {name: int}."""
    stats = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            stats[parts[0]] = int(parts[1])
    return stats
