# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host lock of the collection's state-changing module runs.

Every module that changes host state (SAs, policies, tc rules, OVS, devlink, VFs) runs its
read-plan-apply-verify cycle under an exclusive flock(2) on LOCK_PATH, so two playbook runs against
the same host serialise object by object instead of interleaving their reads and writes. The lock
is the kernel's: it ends with the process (also on SIGKILL or a lost SSH connection), so a killed
run never leaves a stale lock behind. The lock file is never removed (removing it would let two
runs hold locks on two different files).

    with host_lock(module):
        ...           # read, plan, apply, verify; exit_json/fail_json inside is fine

Check mode and the states gathered/rendered change nothing and take no lock.
On timeout the module fails naming the holder: its PID (from /proc/locks, the kernel's view) and
what the holder wrote into the file (module name, PID, start time).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

LOCK_PATH = "/run/ipsec_offload_mlx5.lock"
DEFAULT_TIMEOUT = 120
POLL = 0.1

# merged into each state-changing module's argument_spec (documented by the doc fragment
# ipsec_offload.mlx5.lock)
ARGSPEC = dict(lock_timeout=dict(type="int", default=DEFAULT_TIMEOUT))

READ_ONLY_STATES = ("gathered", "rendered")


class LockTimeout(Exception):
    def __init__(self, path, timeout, holder):
        self.path = path
        self.timeout = timeout
        self.holder = holder  # dict: pid (int or None), text (str)
        pid = holder.get("pid")
        who = "PID %s" % pid if pid else "an unknown process"
        if holder.get("text"):
            who += " (%s)" % holder["text"]
        super(LockTimeout, self).__init__(
            "another run of ipsec_offload.mlx5 holds the host lock %s: %s; waited %s s (lock_timeout). "
            "Let that run finish (two playbook runs against one host at once are serialised, not merged), "
            "or raise lock_timeout" % (path, who, timeout))


def lock_holders(proc_locks_text, inode, dev=None):
    """PIDs holding a FLOCK on the file with this inode (and device major:minor, when given),
    from the text of /proc/locks. Pure: table-tested."""
    pids = []
    for line in proc_locks_text.splitlines():
        f = line.split()
        if len(f) < 6 or f[0].endswith("->"):  # "->" lines are waiters, not holders
            continue
        if f[1] != "FLOCK":
            continue
        parts = f[5].split(":")
        if len(parts) != 3:
            continue
        try:
            if int(parts[2]) != inode:
                continue
            if dev is not None and (int(parts[0], 16), int(parts[1], 16)) != dev:
                continue
            pids.append(int(f[4]))
        except ValueError:
            continue
    return pids


def holder_text(raw):
    """The one-line holder record a run writes into the lock file, sanitised for a message."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())[:200]
    return "".join(c if c.isprintable() else "?" for c in text)


def describe_holder(fd, path):
    holder = {"pid": None, "text": ""}
    try:
        st = os.fstat(fd)
        with open("/proc/locks") as fh:
            pids = [p for p in lock_holders(fh.read(), st.st_ino, (os.major(st.st_dev), os.minor(st.st_dev)))
                    if p != os.getpid()]
        holder["pid"] = pids[0] if pids else None
    except (OSError, ValueError):
        pass
    try:
        with open(path, "rb") as fh:
            record = holder_text(fh.read(400))
    except OSError:
        record = ""
    # the record is the last run of ours that held the lock; it names the holder only when its PID is
    # the holder's (another program may flock the file too): otherwise name the holder's command
    pid = holder["pid"]
    if pid is None or (" pid %s " % pid) in (" %s " % record):
        holder["text"] = record
    else:
        try:
            with open("/proc/%s/comm" % pid, "rb") as fh:
                holder["text"] = "command " + holder_text(fh.read(64))
        except OSError:
            pass
    return holder


def acquire(path, timeout, name, clock=time.monotonic, sleep=time.sleep):
    """Open (create 0600) and flock path; retry until timeout seconds passed (0: one try).
    Returns the open fd (closing it or exiting releases the lock). Raises LockTimeout, OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        deadline = clock() + max(timeout, 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if clock() >= deadline:
                raise LockTimeout(path, timeout, describe_holder(fd, path))
            sleep(POLL)
        record = "%s pid %d since %s\n" % (name, os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def wanted(module):
    """True when this run may change the host: not check mode, not gathered/rendered."""
    if module.check_mode:
        return False
    return module.params.get("state") not in READ_ONLY_STATES


@contextlib.contextmanager
def host_lock(module, path=None):
    """Hold the per-host lock around a module's work (see the module docstring)."""
    if not wanted(module):
        yield None
        return
    path = path or LOCK_PATH
    timeout = module.params.get("lock_timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if timeout < 0:
        module.fail_json(msg="lock_timeout: must be 0 or more seconds, got %d" % timeout, field="lock_timeout")
    name = getattr(module, "_name", "") or "ipsec_offload.mlx5"
    try:
        fd = acquire(path, timeout, name)
    except LockTimeout as exc:
        module.fail_json(msg=str(exc), lock_holder_pid=exc.holder.get("pid"))
    except OSError as exc:
        module.fail_json(msg="cannot take the host lock %s: %s (the modules run as root: use become)"
                         % (path, exc.strerror or exc))
    # The lock is released before the result is written, not after: when exit_json/fail_json run,
    # the host is in its final state, and writing the result can block for as long as nobody
    # reads it (a controller interrupted behind a multiplexed SSH connection leaves the module
    # stuck in write(2) on its stdout), which must not keep every later run off the host.
    held = [fd]

    def release():
        if held:
            os.close(held.pop())

    def releasing(method):
        def call(*args, **kwargs):
            release()
            return method(*args, **kwargs)
        return call

    saved = module.exit_json, module.fail_json
    module.exit_json, module.fail_json = releasing(saved[0]), releasing(saved[1])
    try:
        yield fd
    finally:
        release()
        module.exit_json, module.fail_json = saved
