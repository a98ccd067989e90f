# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One playbook run at a time per key store (controller side).

The SA lifecycle compares what the hosts hold with what the key store handed out, then installs.
Two runs against one key store at once can interleave those steps: one run removes or rotates an
SA while the other, which read the hosts before, installs the key it derived - a key serving two
SA instances.  So every playbook that derives (derive.yml) holds this lock for the whole run.

The lock is a small file beside the key store naming the holder: the PID of the ansible-playbook
process and that process's start time (so a recycled PID is not taken for the holder).  A holder
that is gone (killed, crashed, ended without releasing) is detected and its lock taken over; the
file is only read and written under the key store directory's flock (_keystore.locked).
"""

from __future__ import annotations

import json
import os
import socket
import time

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore


def lock_path(store_path):
    d, base = os.path.split(store_path)
    return os.path.join(d, "." + base + ".run")


def start_time(pid):
    """The process's start time in clock ticks since boot (/proc), or None where there is no /proc."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from the last ')'
    try:
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def alive(holder):
    """Whether the process that wrote ``holder`` still runs (same PID and start time)."""
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True          # another controller: cannot be checked from here, never taken over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    st = start_time(pid)
    return st is None or holder.get("start") is None or st == holder["start"]


def me(pid, what):
    return {"pid": pid, "start": start_time(pid), "host": socket.gethostname(), "what": what,
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}     # unreadable or torn: treated as stale


def _write(path, holder):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(holder, fh)
    os.replace(tmp, path)


def try_acquire(store_path, holder):
    """One attempt.  Returns (True, previous holder taken over or None) or (False, current holder)."""
    path = lock_path(store_path)
    with _keystore.locked(store_path):
        cur = _read(path)
        if cur and cur.get("pid") == holder["pid"] and cur.get("start") == holder["start"] \
                and cur.get("host") == holder["host"]:
            return True, None                          # this run holds it already (a second import)
        if cur and alive(cur):
            return False, cur
        _write(path, holder)
        return True, cur


def acquire(store_path, holder, timeout, poll=2.0, sleep=time.sleep, clock=time.monotonic):
    """Wait up to ``timeout`` seconds.  Returns (waited seconds, stale holder taken over or None);
    raises TimeoutError(holder) when another live run still holds the lock."""
    t0 = clock()
    while True:
        ok, other = try_acquire(store_path, holder)
        if ok:
            return clock() - t0, other
        if clock() - t0 >= timeout:
            raise TimeoutError(other)
        sleep(poll)


def release(store_path, holder):
    """Remove the lock if ``holder`` holds it.  Returns True if it was removed."""
    path = lock_path(store_path)
    if not os.path.isdir(os.path.dirname(path)):
        return False
    with _keystore.locked(store_path):
        cur = _read(path)
        if cur and cur.get("pid") == holder["pid"] and cur.get("start") == holder["start"]:
            os.unlink(path)
            return True
    return False


def describe(holder):
    if not holder:
        return "an unknown run"
    return "PID %s on %s (%s, since %s)" % (
        holder.get("pid"), holder.get("host"), holder.get("what") or "a playbook", holder.get("since"))
