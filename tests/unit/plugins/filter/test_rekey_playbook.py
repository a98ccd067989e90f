# -*- coding: utf-8 -*-
"""playbooks/rekey.yml for real: ansible-playbook on localhost (two inventory hosts, local
connection, one network namespace each).

* --syntax-check on the example inventories;
* the host kernel (scratch namespaces, real `ip`): check mode announces a rotation without writing
  the key store; a real run starts it, then fails in phase 1 because this kernel has no ESP/GCM,
  leaving the namespaces untouched and the rotation resumable; check mode then shows every phase;
* a simulated kernel (tests/unit/xfrm_sim.py behind a stand-in `ip` on PATH): the whole rotation
  with an interruption in phase 4a, a site.yml-style converge in the middle (must not tear down
  the new SAs), the resume, and a converge afterwards with changed=0.
No key (current or previous) may appear in any playbook output.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import uuid

import pytest
import yaml

import ansible_collections.ipsec_offload.mlx5 as collection

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
REKEY = os.path.join(ROOT, "playbooks", "rekey.yml")
DERIVE = os.path.join(ROOT, "playbooks", "derive.yml")
EXAMPLES = os.path.join(ROOT, "inventories", "examples")
FAKE_IP = os.path.join(HERE, "rekey_fake_ip.py")
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))
BIN = os.path.dirname(sys.executable)

sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))   # tests/unit: xfrm_sim for unpickling

CONVERGE = """---
- name: Derive
  ansible.builtin.import_playbook: %s

- name: IPsec states and policies, as playbooks/site.yml does them
  hosts: all
  gather_facts: false
  roles:
    - role: ipsec_offload.mlx5.ipsec
      vars:
        ipsec_sas: "{{ ipsec_host.states }}"
        ipsec_policies: "{{ ipsec_host.policies }}"
        ipsec_namespace: "{{ ipsec_host.namespace | default('', true) }}"
        ipsec_owned_reqid_range: "{{ hostvars['localhost'].ipsec_derived.reqid_range }}"
""" % DERIVE


def write_inventory(tmp_path, ns1, ns2, fail_closed=True):
    inv = {"all": {
        "children": {"ipsec_lab": {
            "hosts": {"lab1": {"ipsec_local_ip": "192.168.100.1", "ipsec_namespace": ns1},
                      "lab2": {"ipsec_local_ip": "192.168.100.2", "ipsec_namespace": ns2}},
            "vars": {"ipsec_meshes": ["ipsec_lab"], "ipsec_dev": "link0", "ipsec_offload": "none",
                     "ipsec_fail_closed": fail_closed,
                     # the guards' boot files go below the test's directory, not into this host's /etc
                     "ipsec_guards_root": str(tmp_path / "root"),
                     "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}},
        "vars": {"ipsec_keystore_path": str(tmp_path / "ks" / "keys.yml")}}}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(inv))
    return str(path)


def site_subset(tmp_path, names, imports=(DERIVE,)):
    """A playbook of the named plays of playbooks/site.yml, taken unchanged, after imports of the
    given playbooks (derive.yml by default)."""
    with open(os.path.join(ROOT, "playbooks", "site.yml"), encoding="utf-8") as fh:
        site = yaml.safe_load(fh)
    plays = [p for p in site if p.get("name") in names]
    assert [p["name"] for p in plays] == list(names)
    path = tmp_path / "site_subset.yml"
    path.write_text(yaml.safe_dump([{"name": os.path.basename(i), "ansible.builtin.import_playbook": i} for i in imports]
                                   + plays, sort_keys=False))
    return str(path)


def run(tmp_path, playbook, inventory, *extra, env=None, check=False):
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook] + list(extra)
    if check:
        cmd += ["--check", "--diff"]
    e = dict(os.environ, HOME=str(tmp_path / "home"), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
             ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "ah"),
             ANSIBLE_RETRY_FILES_ENABLED="0")
    e.update(env or {})
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600, cwd=str(tmp_path), check=False)
    return p.returncode, p.stdout + p.stderr


def recap(out):
    """{host: {ok, changed, failed, ...}} from the PLAY RECAP."""
    res = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", out, re.M):
        res[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return res


def store(tmp_path):
    doc = yaml.safe_load((tmp_path / "ks" / "keys.yml").read_text())
    return doc["pairs"]


def store_keys(tmp_path):
    keys = set()
    for dsts in store(tmp_path).values():
        for e in dsts.values():
            keys.add(e["key"][2:].lower())
            if "previous" in e:
                keys.add(e["previous"]["key"][2:].lower())
    return keys


def assert_no_keys(out, keys):
    low = out.lower()
    leaked = [k[:6] + "..." for k in keys if k in low or k[:40] in low]
    assert not leaked, "key material in the playbook output: %s" % leaked


def test_syntax_check(tmp_path):
    for inv in ("lab", "mesh3"):
        rc, out = run(tmp_path, REKEY, os.path.join(EXAMPLES, inv), "--syntax-check")
        assert rc == 0 and "playbook: " in out, out


# ---------------------------------------------------------------------------------------------
# the host kernel, scratch namespaces

def _can_netns():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = "rkp-%s" % uuid.uuid4().hex[:8]
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return ok


def _ns_dump(ns):
    return tuple(subprocess.run(["ip", "-n", ns, "xfrm", what, "list"], capture_output=True, text=True,
                                check=True).stdout for what in ("state", "policy"))


@pytest.fixture
def namespaces():
    names = ["rk%s-%d" % (uuid.uuid4().hex[:6], i) for i in (1, 2)]
    for n in names:
        subprocess.run(["ip", "netns", "add", n], check=True)
    yield names
    for n in names:
        subprocess.run(["ip", "netns", "del", n], check=False)


def _kernel_has_gcm(ns):
    line = ("xfrm state add src 10.0.0.1 dst 10.0.0.2 proto esp spi 0x1000 reqid 1 mode transport "
            "aead rfc4106(gcm(aes)) 0x%s 128\nxfrm state delete src 10.0.0.1 dst 10.0.0.2 proto esp spi 0x1000\n" % ("11" * 36))
    return subprocess.run(["ip", "-n", ns, "-batch", "-"], input=line, capture_output=True, text=True,
                          check=False).returncode == 0


@pytest.mark.netns
@pytest.mark.skipif(not _can_netns(), reason="needs root and ip netns")
def test_host_kernel_check_mode_and_refused_start(tmp_path, namespaces):
    ns1, ns2 = namespaces
    if _kernel_has_gcm(ns1):
        pytest.skip("this kernel has ESP/GCM: the simulated-kernel test covers the full run")
    inv = write_inventory(tmp_path, ns1, ns2)
    rc, out = run(tmp_path, DERIVE, inv)
    assert rc == 0, out
    text0 = (tmp_path / "ks" / "keys.yml").read_text()
    dump0 = [_ns_dump(n) for n in namespaces]

    # 1. check mode, no rotation yet: announced, nothing written, host phases have nothing to do
    rc, out = run(tmp_path, REKEY, inv, check=True)
    assert rc == 0, out
    assert "started now: lab1->lab2, lab2->lab1" in out and "none; " in out and "Finished: []" in out
    assert (tmp_path / "ks" / "keys.yml").read_text() == text0
    assert recap(out)["lab1"]["changed"] == recap(out)["lab2"]["changed"] == 0
    assert_no_keys(out, store_keys(tmp_path))

    # 2. real run of one direction: phase 0 writes the new generation, phase 1 is refused by this
    #    kernel (no AEAD); the module rolls back, any_errors_fatal stops every later phase
    rc, out = run(tmp_path, REKEY, inv, "-e", '{"rekey_pairs": ["lab1->lab2"]}')
    assert rc != 0
    assert "Requested AEAD algorithm not found" in out and "the host is as before" in out
    assert "Rekey phase 2" not in out
    pairs = store(tmp_path)
    assert pairs["lab1"]["lab2"]["rotation"] == "inbound" and "rotation" not in pairs["lab2"]["lab1"]
    assert [_ns_dump(n) for n in namespaces] == dump0
    keys = store_keys(tmp_path)
    assert len(keys) == 3
    assert_no_keys(out, keys)
    text1 = (tmp_path / "ks" / "keys.yml").read_text()
    old_spi, new_spi = pairs["lab1"]["lab2"]["previous"]["spi"], pairs["lab1"]["lab2"]["spi"]

    # 3. check mode on the started rotation: every phase's commands, no write, no change
    rc, out = run(tmp_path, REKEY, inv, check=True)
    assert rc == 0, out
    assert "started now: none" in out
    adds = re.findall(r'"(xfrm state add [^"]+)"', out)
    assert len(adds) == 2 and all("spi %s " % new_spi in a and "<redacted>" in a for a in adds)
    assert "rotation outbound from generation 1" in out and "rotation retire from generation 1" in out
    assert "lab1->lab2: key <redacted>, spi %s, reqid" % new_spi in out
    assert old_spi in out
    assert (tmp_path / "ks" / "keys.yml").read_text() == text1
    assert [_ns_dump(n) for n in namespaces] == dump0
    assert_no_keys(out, keys)


# ---------------------------------------------------------------------------------------------
# simulated kernel: the full rotation

def sim_states(simdir, ns):
    path = simdir / (ns + ".sim")
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        sim = pickle.load(fh)
    return {("0x%08x" % spi, dst): sa["aead"][1] for (dst, spi), sa in sim.states.items()}


@pytest.fixture
def simulated(tmp_path):
    bindir, simdir = tmp_path / "bin", tmp_path / "sim"
    bindir.mkdir()
    simdir.mkdir()
    ip = bindir / "ip"
    ip.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, FAKE_IP))
    ip.chmod(0o755)
    env = {"PATH": "%s:%s" % (bindir, os.environ.get("PATH", "")), "FAKE_IP_DIR": str(simdir)}
    (tmp_path / "converge.yml").write_text(CONVERGE)
    return env, simdir


def test_simulated_rotation_interrupted_resumed(tmp_path, simulated):
    env, simdir = simulated
    inv = write_inventory(tmp_path, "sim1", "sim2")
    converge = str(tmp_path / "converge.yml")
    a, b = "192.168.100.1", "192.168.100.2"

    rc, out = run(tmp_path, converge, inv, env=env)
    assert rc == 0, out
    g1 = store(tmp_path)
    spi12, spi21 = g1["lab1"]["lab2"]["spi"], g1["lab2"]["lab1"]["spi"]
    first = {"sim1": sim_states(simdir, "sim1"), "sim2": sim_states(simdir, "sim2")}
    assert set(first["sim1"]) == set(first["sim2"]) == {(spi12, b), (spi21, a)}

    # rotate both directions; lab2 refuses the deletion of its old outbound SA (phase 4a)
    fail = dict(env, FAKE_IP_FAIL_ON="xfrm state delete", FAKE_IP_FAIL_NS="sim2")
    rc, out = run(tmp_path, REKEY, inv, "-e", '{"rekey_pairs": ["lab1<->lab2"]}', "-e", "rekey_settle_seconds=0", env=fail)
    assert rc != 0 and "Operation not permitted" in out, out
    assert "Rekey phase 4b" not in out
    keys = store_keys(tmp_path)
    assert len(keys) == 4
    assert_no_keys(out, keys)
    g2 = store(tmp_path)
    n12, n21 = g2["lab1"]["lab2"]["spi"], g2["lab2"]["lab1"]["spi"]
    assert g2["lab1"]["lab2"]["rotation"] == g2["lab2"]["lab1"]["rotation"] == "retire"
    assert g2["lab1"]["lab2"]["reqid"] == g1["lab1"]["lab2"]["reqid"] and n12 not in (spi12, spi21)
    assert g2["lab1"]["lab2"]["previous"]["spi"] == spi12
    # lab1 deleted its old outbound SA; lab2 still has its own (the refused deletion)
    s1, s2 = sim_states(simdir, "sim1"), sim_states(simdir, "sim2")
    assert set(s1) == {(n12, b), (spi21, a), (n21, a)}
    assert set(s2) == {(spi12, b), (n12, b), (spi21, a), (n21, a)}
    # mirrored: the same key on both ends of every new SA, different from the old one
    assert s1[(n12, b)] == s2[(n12, b)] != s2[(spi12, b)]
    assert s1[(n21, a)] == s2[(n21, a)] != s1[(spi21, a)]

    # site.yml-style converge in the middle of the rotation (stage retire): it removes only what the
    # stage allows (lab2's old outbound SA) and keeps every new SA and the old inbound ones
    rc, out = run(tmp_path, converge, inv, env=env)
    assert rc == 0, out
    assert set(sim_states(simdir, "sim1")) == {(n12, b), (spi21, a), (n21, a)}
    assert set(sim_states(simdir, "sim2")) == {(spi12, b), (n12, b), (n21, a)}
    assert_no_keys(out, keys)

    # resume: no new key, finishes
    rc, out = run(tmp_path, REKEY, inv, "-e", "rekey_settle_seconds=0", env=env)
    assert rc == 0, out
    assert "started now: none" in out and "Finished: ['lab1->lab2', 'lab2->lab1']" in out
    assert store_keys(tmp_path) == {g2["lab1"]["lab2"]["key"][2:].lower(), g2["lab2"]["lab1"]["key"][2:].lower()}
    g3 = store(tmp_path)
    assert all("rotation" not in e and "previous" not in e and e["generation"] == 2
               for dsts in g3.values() for e in dsts.values())
    assert (g3["lab1"]["lab2"]["spi"], g3["lab2"]["lab1"]["spi"]) == (n12, n21)
    assert set(sim_states(simdir, "sim1")) == set(sim_states(simdir, "sim2")) == {(n12, b), (n21, a)}
    assert_no_keys(out, keys)

    # afterwards site.yml stays changed=0, and so does rekey's converge of nothing in rotation
    rc, out = run(tmp_path, converge, inv, env=env)
    assert rc == 0, out
    r = recap(out)
    assert r["lab1"]["changed"] == r["lab2"]["changed"] == r["localhost"]["changed"] == 0, out
