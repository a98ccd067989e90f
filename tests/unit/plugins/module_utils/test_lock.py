# -*- coding: utf-8 -*-
"""The per-host lock (plugins/module_utils/_lock.py): pure parsing, real flock(2) between processes,
and the modules' use of it (check mode and read-only states take no lock; a held lock fails the run
naming the holder before any command runs)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock
from ansible_collections.ipsec_offload.mlx5.plugins.modules import mlx_sriov
from ansible_collections.ipsec_offload.mlx5.plugins.modules import ovs_vxlan_bridge
from ansible_collections.ipsec_offload.mlx5.plugins.modules import tc_flower_vlan
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state
from ansible_collections.ipsec_offload.mlx5.plugins.modules import mlx_devlink_eswitch
from harness import FakeHost, fixture, run_module

PROC_LOCKS = fixture("lock/proc-locks-dev-host.txt")
DEV = (0xfe, 0x00)

HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, b"ipsec_offload.mlx5.xfrm_offload_state pid %d since now\n" % os.getpid())
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("text,inode,dev,want", [
    (PROC_LOCKS, 2146321, DEV, [6457]),          # the holder; the "->" waiter 6461 is not one
    (PROC_LOCKS, 2146321, None, [6457]),
    (PROC_LOCKS, 2146321, (0xfe, 0x01), []),     # same inode, other device
    (PROC_LOCKS, 5333226, DEV, []),              # a POSIX lock is not our flock
    (PROC_LOCKS, 5349810, DEV, []),              # OFD locks neither
    (PROC_LOCKS, 1, DEV, []),
    ("", 2146321, DEV, []),
    ("1: FLOCK ADVISORY WRITE x fe:00:7 0 EOF\n2: FLOCK ADVISORY WRITE 42 fe:00:7 0 EOF\n", 7, DEV, [42]),
    ("garbage\n1: FLOCK ADVISORY WRITE 42 fe:00 0 EOF\n", 7, DEV, []),
])
def test_lock_holders(text, inode, dev, want):
    assert _lock.lock_holders(text, inode, dev) == want


@pytest.mark.parametrize("raw,want", [
    (b"ipsec_offload.mlx5.tc_flower_vlan pid 12 since 2026-11-24T14:00:00Z\n",
     "ipsec_offload.mlx5.tc_flower_vlan pid 12 since 2026-11-24T14:00:00Z"),
    (b"a\nb\tc\x1b[31m", "a b c?[31m"),
    (b"\xff\xfe x", "\ufffd\ufffd x"),
    (b"x" * 500, "x" * 200),
    (b"", ""),
])
def test_holder_text(raw, want):
    assert _lock.holder_text(raw) == want


def start_holder(path, seconds=30):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, path, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def stop(p):
    p.kill()
    p.wait()


def test_acquire_free_lock_writes_holder_record_0600(tmp_path):
    path = str(tmp_path / "l")
    fd = _lock.acquire(path, 0, "ipsec_offload.mlx5.mlx_sriov")
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        with open(path) as fh:
            text = fh.read()
        assert text.startswith("ipsec_offload.mlx5.mlx_sriov pid %d since " % os.getpid())
        with open("/proc/locks") as fh:
            assert os.getpid() in _lock.lock_holders(fh.read(), os.stat(path).st_ino)
    finally:
        os.close(fd)


def test_held_lock_times_out_naming_the_holder(tmp_path):
    path = str(tmp_path / "l")
    p = start_holder(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(_lock.LockTimeout) as err:
            _lock.acquire(path, 1, "me")
        waited = time.monotonic() - t0
        assert 1.0 <= waited < 5
        assert err.value.holder["pid"] == p.pid
        msg = str(err.value)
        assert "PID %d" % p.pid in msg
        assert "xfrm_offload_state pid %d" % p.pid in msg
        assert path in msg and "lock_timeout" in msg
        # the holder's record was not overwritten by the loser
        with open(path) as fh:
            assert fh.read().startswith("ipsec_offload.mlx5.xfrm_offload_state pid %d" % p.pid)
    finally:
        stop(p)


def test_timeout_zero_tries_once(tmp_path):
    path = str(tmp_path / "l")
    p = start_holder(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(_lock.LockTimeout):
            _lock.acquire(path, 0, "me")
        assert time.monotonic() - t0 < 0.5
    finally:
        stop(p)


def test_waits_and_gets_the_lock_when_the_holder_ends(tmp_path):
    path = str(tmp_path / "l")
    p = start_holder(path, seconds=0.6)
    try:
        t0 = time.monotonic()
        fd = _lock.acquire(path, 10, "me")
        waited = time.monotonic() - t0
        os.close(fd)
        assert 0.2 <= waited < 5
    finally:
        stop(p)


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    path = str(tmp_path / "l")
    p = start_holder(path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    fd = _lock.acquire(path, 0, "me")
    os.close(fd)


def test_two_processes_serialise(tmp_path):
    path = str(tmp_path / "l")
    log = str(tmp_path / "log")
    prog = ("import sys, time, os\n"
            "from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock\n"
            "fd = _lock.acquire(sys.argv[1], 20, 'p')\n"
            "t0 = time.time(); time.sleep(0.4); t1 = time.time()\n"
            "open(sys.argv[2], 'a').write('%f %f\\n' % (t0, t1))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", prog, path, log], env=env) for dummy in range(3)]
    assert [q.wait() for q in procs] == [0, 0, 0]
    with open(log) as fh:
        spans = sorted(tuple(map(float, line.split())) for line in fh)
    assert len(spans) == 3
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 <= b0, spans  # no two holders at once


def test_unopenable_lock_path_is_an_error_not_a_pass(tmp_path):
    with pytest.raises(OSError):
        _lock.acquire(str(tmp_path / "missing-dir" / "l"), 0, "me")


# the modules: one call each that would change the host (FakeHost without handlers: any command
# fails the test), and the same call in check mode / a read-only state
MODULES = [
    (xfrm_offload_state.main, dict(config=[dict(src="192.0.2.1", dst="192.0.2.2", spi=256, reqid=1371537409,
                                                aead=dict(key="0x" + "11" * 20))])),
    (xfrm_offload_policy.main, dict(config=[dict(src="192.0.2.1/32", dst="192.0.2.2/32", dir="out",
                                                 tmpl=dict(src="192.0.2.1", dst="192.0.2.2", reqid=1371537409))])),
    (tc_flower_vlan.main, dict(config=[], state="deleted")),
    (mlx_devlink_eswitch.main, dict(device="pci/0000:08:00.0", mode="switchdev")),
    (mlx_sriov.main, dict(pf="p0", num_vfs=2)),
    (ovs_vxlan_bridge.main, dict(bridge="br-ovs", state="absent")),
]
IDS = [m.__module__.rsplit(".", 1)[-1] for m, dummy in MODULES]


@pytest.mark.parametrize("main,args", MODULES, ids=IDS)
def test_module_fails_on_held_lock_before_any_command(main, args, tmp_path, monkeypatch):
    path = str(tmp_path / "host.lock")
    monkeypatch.setattr(_lock, "LOCK_PATH", path)
    p = start_holder(path)
    try:
        h = FakeHost()
        res, failed = run_module(main, dict(args, lock_timeout=0), h)
        assert failed, res
        assert "holds the host lock %s: PID %d" % (path, p.pid) in res["msg"]
        assert res["lock_holder_pid"] == p.pid
        assert h.calls == []
        assert "0x" + "11" * 20 not in str(res) and "11" * 20 not in str(res)
    finally:
        stop(p)


@pytest.mark.parametrize("main,args", MODULES, ids=IDS)
def test_negative_lock_timeout_names_the_field(main, args, tmp_path):
    h = FakeHost()
    res, failed = run_module(main, dict(args, lock_timeout=-1), h)
    assert failed and res["msg"].startswith("lock_timeout: ") and res["field"] == "lock_timeout"
    assert h.calls == []


def test_check_mode_and_read_only_states_take_no_lock(tmp_path, monkeypatch):
    path = str(tmp_path / "host.lock")
    monkeypatch.setattr(_lock, "LOCK_PATH", path)
    p = start_holder(path)

    class M(object):
        def __init__(self, check_mode, state):
            self.check_mode = check_mode
            self.params = dict(state=state, lock_timeout=0)

        def fail_json(self, **kw):
            raise AssertionError(kw)

    try:
        for check_mode, state in [(True, "merged"), (False, "gathered"), (False, "rendered"), (True, None)]:
            with _lock.host_lock(M(check_mode, state)) as fd:
                assert fd is None
        # and a changing run does try (and fails on the held lock)
        with pytest.raises(AssertionError) as err:
            with _lock.host_lock(M(False, "merged")):
                pass
        assert "PID %d" % p.pid in str(err.value)
    finally:
        stop(p)


def test_lock_is_released_after_the_module_run(tmp_path, monkeypatch):
    path = str(tmp_path / "host.lock")
    monkeypatch.setattr(_lock, "LOCK_PATH", path)
    h = FakeHost()
    res, failed = run_module(mlx_sriov.main, dict(pf="p0; reboot", num_vfs=2), h)
    assert failed and "pf" in res["msg"]
    assert os.path.exists(path)  # the lock was taken ...
    fd = _lock.acquire(path, 0, "after")  # ... and released when the run ended
    os.close(fd)


def test_holder_that_is_not_one_of_ours_is_named_by_its_command(tmp_path):
    """flock(1) holding the file: the stale record of an earlier module run must not be shown."""
    path = str(tmp_path / "l")
    with open(path, "w") as fh:
        fh.write("ipsec_offload.mlx5.xfrm_offload_policy pid 1 since 2026-01-01T00:00:00Z\n")
    p = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                          "fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                          "print('held', flush=True)\ntime.sleep(30)", path], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    try:
        with pytest.raises(_lock.LockTimeout) as err:
            _lock.acquire(path, 0, "me")
        assert err.value.holder == {"pid": p.pid, "text": "command " + os.path.basename(sys.executable)[:15]}
        assert "xfrm_offload_policy" not in str(err.value)
    finally:
        stop(p)


class _Exiting(object):
    """A module stand-in whose exit_json/fail_json probe the lock the way the next run would."""

    def __init__(self, path):
        self.check_mode = False
        self.params = dict(state="merged", lock_timeout=0)
        self.path = path
        self.seen = []

    def _probe(self, kind, kw):
        try:
            fd = _lock.acquire(self.path, 0, "next run")
        except _lock.LockTimeout:
            self.seen.append((kind, "held"))
        else:
            os.close(fd)
            self.seen.append((kind, "free"))
        return kw

    def exit_json(self, **kw):
        return self._probe("exit", kw)

    def fail_json(self, **kw):
        return self._probe("fail", kw)


@pytest.mark.parametrize("kind", ["exit", "fail"])
def test_lock_is_released_before_the_result_is_written(kind, tmp_path, monkeypatch):
    """Writing the result can block (a controller interrupted behind a multiplexed SSH connection
    stops reading it): by then the host is final, so the lock must already be free."""
    path = str(tmp_path / "host.lock")
    monkeypatch.setattr(_lock, "LOCK_PATH", path)
    m = _Exiting(path)
    cls_exit, cls_fail = m.exit_json, m.fail_json
    with _lock.host_lock(m) as fd:
        assert fd is not None
        with pytest.raises(_lock.LockTimeout):  # held during the work
            _lock.acquire(path, 0, "during")
        getattr(m, kind + "_json")(msg="done")
    assert m.seen == [(kind, "free")]
    # the module's methods are its own again afterwards
    assert m.exit_json == cls_exit and m.fail_json == cls_fail


def test_lock_released_while_a_real_result_write_blocks(tmp_path):
    """A real process: the module's stdout is a pipe nobody reads and its result is larger than the
    pipe buffer, so exit_json blocks in write(2); another process must still get the lock."""
    path = str(tmp_path / "host.lock")
    prog = r"""
import json, os, sys
sys.path[:0] = [p for p in sys.argv[2:]]
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _lock
class M(object):
    check_mode = False
    params = dict(state="merged", lock_timeout=0)
    def exit_json(self, **kw):
        os.write(2, b"writing\n")
        sys.stdout.write(json.dumps(kw)); sys.stdout.flush()
    fail_json = exit_json
m = M()
with _lock.host_lock(m, path=sys.argv[1]):
    m.exit_json(result="x" * (1 << 20))
"""
    p = subprocess.Popen([sys.executable, "-c", prog, path] + sys.path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stderr.readline().strip() == b"writing"
        time.sleep(0.2)
        assert p.poll() is None  # still blocked writing its result
        fd = _lock.acquire(path, 5, "next run")
        os.close(fd)
    finally:
        p.kill()
        p.wait()
