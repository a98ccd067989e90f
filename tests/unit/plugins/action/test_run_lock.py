# -*- coding: utf-8 -*-
"""The key store's run lock (plugin_utils._runlock, action ipsec_run_lock): one playbook run at a
time per key store, a holder that no longer runs is taken over, a live one is waited for and then
named; and for real: two ansible-playbook processes against one key store run one after the other."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _runlock

import ansible_collections.ipsec_offload.mlx5 as collection

COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "ks" / "keystore.yml")


def holder(pid=None, start="auto", host=None):
    h = _runlock.me(pid or os.getpid(), "test")
    if start != "auto":
        h["start"] = start
    if host:
        h["host"] = host
    return h


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_acquire_release_and_reentrant(store):
    me = holder()
    assert _runlock.acquire(store, me, timeout=0) == (pytest.approx(0, abs=0.5), None)
    path = _runlock.lock_path(store)
    assert os.path.basename(path) == ".keystore.yml.run" and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert json.load(open(path))["pid"] == os.getpid()
    assert _runlock.try_acquire(store, me) == (True, None)          # a second import in the same run
    assert _runlock.release(store, me) and not os.path.exists(path)
    assert not _runlock.release(store, me)                          # nothing held: nothing done


def test_live_holder_is_waited_for_then_named(store):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = holder(pid=other.pid)
        assert _runlock.try_acquire(store, theirs) == (True, None)
        sleeps = []
        with pytest.raises(TimeoutError) as exc:
            _runlock.acquire(store, holder(), timeout=3, poll=1, sleep=sleeps.append,
                             clock=iter(range(100)).__next__)
        assert exc.value.args[0]["pid"] == other.pid and sleeps == [1, 1]
        assert "PID %d on %s (test" % (other.pid, socket.gethostname()) in _runlock.describe(exc.value.args[0])
        assert not _runlock.release(store, holder())                # not ours: left alone
        assert json.load(open(_runlock.lock_path(store)))["pid"] == other.pid
    finally:
        other.kill()
        other.wait()
    # its process is gone now: the next run takes the lock over at once
    waited, stale = _runlock.acquire(store, holder(), timeout=0)
    assert stale["pid"] == other.pid


@pytest.mark.parametrize("case", ["dead pid", "recycled pid", "torn file"])
def test_stale_holders_are_taken_over(store, case):
    if case == "dead pid":
        stale = holder(pid=dead_pid())
    elif case == "recycled pid":       # a live PID, but not the process that wrote the lock
        stale = holder(pid=os.getppid(), start=1)
    else:
        stale = None
    os.makedirs(os.path.dirname(store))
    with open(_runlock.lock_path(store), "w") as fh:
        fh.write(json.dumps(stale) if stale else '{"pid": 12')
    ok, prev = _runlock.try_acquire(store, holder())
    assert ok and json.load(open(_runlock.lock_path(store)))["pid"] == os.getpid()


def test_holder_on_another_controller_is_never_taken_over(store):
    far = holder(pid=dead_pid(), host="other-controller.example")
    assert _runlock.try_acquire(store, far)[0]
    assert _runlock.try_acquire(store, holder()) == (False, far)


PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ipsec_offload.mlx5.ipsec_run_lock:
        path: "{store}"
        what: "{name}"
        timeout: 60
      register: lock
    - ansible.builtin.debug:
        msg: "{name} got the lock after {{{{ lock.waited }}}} s at {{{{ now(utc=true).timestamp() }}}}"
    - ansible.builtin.pause:
        seconds: {hold}
    - ansible.builtin.debug:
        msg: "{name} released at {{{{ now(utc=true).timestamp() }}}}"
    - ipsec_offload.mlx5.ipsec_run_lock:
        path: "{store}"
        state: released
"""


def test_two_playbooks_against_one_key_store_run_one_after_the_other(tmp_path, store):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "ah"), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    procs = []
    for name, hold in (("first", 6), ("second", 0)):
        pb = tmp_path / ("%s.yml" % name)
        pb.write_text(PLAY.format(store=store, name=name, hold=hold))
        procs.append(subprocess.Popen([os.path.join(BIN, "ansible-playbook"), str(pb)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(2)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    def stamp(out, what):
        line = [x for x in out.splitlines() if what in x][0]
        return float(line.rsplit(" ", 1)[1].strip('"'))
    released = stamp(outs[0], "first released at")
    got = stamp(outs[1], "second got the lock after")
    assert got >= released, outs                       # the second waited for the first to end
    waited = float(outs[1].split("second got the lock after ")[1].split(" s")[0])
    assert waited >= 2, outs
    assert not os.path.exists(_runlock.lock_path(store))


def test_bad_options_are_refused(tmp_path, store):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "ah"), ANSIBLE_NOCOLOR="1")
    for opts, text in (('state: grabbed', "state"), ("timeout: -1", "timeout must be >= 0"),
                       ("colour: blue", "colour"), ('path: "relative/ks.yml"', "relative path")):
        pb = tmp_path / "bad.yml"
        pb.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                      "    - ipsec_offload.mlx5.ipsec_run_lock:\n        %s\n%s"
                      % (opts, "" if opts.startswith("path") else '        path: "%s"\n' % store))
        p = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(pb)], env=env, capture_output=True,
                           text=True, check=False)
        assert p.returncode != 0 and text in p.stdout + p.stderr, (opts, p.stdout + p.stderr)
    assert not os.path.exists(_runlock.lock_path(store))
