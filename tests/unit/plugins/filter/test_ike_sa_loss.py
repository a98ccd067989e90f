# -*- coding: utf-8 -*-
"""roles/ike through ansible-playbook: SA loss (the kernel deleted the daemon's SAs and told no
daemon) found by SPI and healed by a new negotiation, never by re-installing the old SAs.

Two inventory hosts on localhost (local connection); each host's `swanctl` / `ipsec` / `ip` is
ike_fake.py (one JSON file holds both daemons and both kernels, a per-host interpreter wrapper tells
it which host runs). Proved for strongSwan and libreswan:
  converge -> changed=0 -> the responder's kernel SAs deleted -> check mode names the lost CHILD_SA
  and changes nothing -> converge: the initiator terminates the CHILD_SA (matched by SPI: the names
  differ per end) and negotiates it again (new SPIs on both ends, daemon and kernel agree) -> changed=0;
  the initiator's own loss; a responder alone in the run (--limit) heals its loss itself; no PSK in
  any output.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from test_rekey_playbook import recap, run

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "ike_fake.py")
CONN = "ipsec_offload_mlx5-lab1-lab2"
PSK = "0123456789abcdefTESTPSKnotAkey0123456789abcdef"

PLAY = """---
- name: The ike role as playbooks/site.yml runs it
  hosts: all
  gather_facts: false
  tasks:
    - name: IKEv2 connections, daemon, initiation
      ansible.builtin.include_role:
        name: ipsec_offload.mlx5.ike
      vars:
        ike_connections: "{{ test_connections }}"
"""


def connection(host, peer, backend):
    a = {"lab1": "192.168.100.1", "lab2": "192.168.100.2"}
    local, remote = a[host], a[peer]
    vx = [(None, 4789), (4789, None)] if host == "lab1" else [(None, 4789), (4789, None)]
    return {"name": CONN, "peer": peer, "local_addr": local, "remote_addr": remote, "initiator": host < peer,
            "mode": "transport", "offload": "none", "dev": None, "key_bits": 256, "psk": PSK,
            "children": [{"name": "%s-c%d" % (CONN, i), "local": local + "/32", "remote": remote + "/32",
                          "proto": "udp", "lport": lp, "rport": rp} for i, (lp, rp) in enumerate(vx, 1)]}


@pytest.fixture
def env(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the role writes root-owned 0600 files: needs root")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("swanctl", "ipsec", "ip", "grep"):
        (bindir / tool).write_text('#!/bin/sh\nIKE_FAKE_TOOL=%s exec "%s" "%s" "$@"\n' % (tool, sys.executable, FAKE))
        (bindir / tool).chmod(0o755)
    state = {"next_id": 0, "log": [], "rename": {CONN + "-c1": CONN + "-c2", CONN + "-c2": CONN + "-c1"}, "hosts": {}}
    inv = {"all": {"hosts": {}}}
    for host in ("lab1", "lab2"):
        d = tmp_path / host
        d.mkdir()
        wrapper = tmp_path / ("python-" + host)
        wrapper.write_text("#!/bin/sh\nIKE_FAKE_HOST=%s IKE_FAKE_STATE=%s PATH=%s:$PATH exec %s \"$@\"\n"
                           % (host, tmp_path / "state.json", bindir, sys.executable))
        wrapper.chmod(0o755)
        state["hosts"][host] = {"dir": str(d), "loaded": [], "children": [], "kernel": []}
        peer = "lab2" if host == "lab1" else "lab1"
        inv["all"]["hosts"][host] = {
            "ansible_connection": "local", "ansible_python_interpreter": str(wrapper),
            "ike_swanctl_dir": str(d), "ike_libreswan_dir": str(d), "ike_libreswan_config": str(d / "ipsec.conf"),
            "test_conn": {"host": host, "peer": peer}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(inv))
    (tmp_path / "play.yml").write_text(PLAY)
    return tmp_path


def converge(tmp_path, backend, *extra, check=False):
    conns = {h: [connection(h, p, backend)] for h, p in (("lab1", "lab2"), ("lab2", "lab1"))}
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(yaml.safe_dump({"ipsec_backend": backend, "conns": conns}))
    rc, out = run(tmp_path, str(tmp_path / "play.yml"), str(tmp_path / "inv.yml"), "-e", "@" + str(vars_file),
                  "-e", "test_connections={{ conns[inventory_hostname] }}", *extra, check=check)
    assert PSK not in out, "the PSK is in the playbook output"
    return rc, out


def state(tmp_path):
    return json.loads((tmp_path / "state.json").read_text())


def daemon_spis(st, host):
    return sorted(s for c in st["hosts"][host]["children"] for s in (c["in"], c["out"]))


def consistent(st):
    """Both daemons list the same CHILD_SAs (mirrored) and every SPI they list is in the kernel."""
    for h in ("lab1", "lab2"):
        assert daemon_spis(st, h) == sorted(st["hosts"][h]["kernel"]), h
    assert daemon_spis(st, "lab1") == daemon_spis(st, "lab2")


def lose(tmp_path, host, n=None):
    """The kernel drops host's SAs (all, or those of its first n CHILD_SAs); no daemon is told."""
    st = state(tmp_path)
    gone = [s for c in st["hosts"][host]["children"][:n] for s in (c["in"], c["out"])]
    st["hosts"][host]["kernel"] = [s for s in st["hosts"][host]["kernel"] if s not in gone]
    (tmp_path / "state.json").write_text(json.dumps(st))
    return gone


def calls(tmp_path, since, word):
    return [c for c in state(tmp_path)["log"][since:] if word in c]


@pytest.mark.parametrize("backend", ["strongswan", "libreswan"])
def test_lost_sas_negotiated_again(env, backend):
    tmp = env
    heal = "--child-id" if backend == "strongswan" else "--down"
    rc, out = converge(tmp, backend)
    assert rc == 0, out
    st = state(tmp)
    n_child = 2 if backend == "strongswan" else 1     # libreswan: one merged CHILD_SA (docs/ike.md)
    assert len(st["hosts"]["lab1"]["children"]) == len(st["hosts"]["lab2"]["children"]) == n_child
    consistent(st)
    rc, out = converge(tmp, backend)
    assert rc == 0 and all(r["changed"] == 0 for r in recap(out).values()), out

    # the responder's kernel loses every SA of the daemon: the daemon still lists them
    old = set(lose(tmp, "lab2"))
    before = state(tmp)
    n = len(before["log"])
    rc, out = converge(tmp, backend, check=True)
    assert rc == 0, out
    assert "lost on lab2" in out and "would be" in out, out
    after = state(tmp)
    assert after["hosts"] == before["hosts"], "check mode changed a daemon or a kernel"
    assert not calls(tmp, n, heal) and not calls(tmp, n, "--initiate") and not calls(tmp, n, "--up")

    n = len(after["log"])
    rc, out = converge(tmp, backend)
    assert rc == 0, out
    assert recap(out)["lab1"]["changed"] > 0 and "lost on lab2" in out
    # the initiator ended the CHILD_SAs (its own halves, found by SPI) and negotiated them again
    assert {c[0] for c in calls(tmp, n, heal)} == {"lab1"}
    st = state(tmp)
    consistent(st)
    assert len(st["hosts"]["lab2"]["children"]) == n_child
    new = set(daemon_spis(st, "lab2"))
    assert new and not new & old, "an old SPI came back"
    rc, out = converge(tmp, backend)
    assert rc == 0 and all(r["changed"] == 0 for r in recap(out).values()), out

    # the initiator's own loss (one CHILD_SA)
    old = set(lose(tmp, "lab1", 1))
    rc, out = converge(tmp, backend)
    assert rc == 0 and "lost here" in out, out
    st = state(tmp)
    consistent(st)
    assert not set(daemon_spis(st, "lab1")) & old and len(st["hosts"]["lab1"]["children"]) == n_child

    # a responder alone in the run (its initiator not in it) heals its own loss
    old = set(lose(tmp, "lab2"))
    n = len(state(tmp)["log"])
    rc, out = converge(tmp, backend, "--limit", "lab2")
    assert rc == 0 and "lost here" in out, out
    assert {c[0] for c in calls(tmp, n, heal)} == {"lab2"}
    st = state(tmp)
    consistent(st)
    assert not set(daemon_spis(st, "lab2")) & old and len(st["hosts"]["lab2"]["children"]) == n_child
    rc, out = converge(tmp, backend)
    assert rc == 0 and all(r["changed"] == 0 for r in recap(out).values()), out
