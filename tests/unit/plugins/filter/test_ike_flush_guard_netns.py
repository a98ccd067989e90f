# -*- coding: utf-8 -*-
"""roles/ike/tasks/libreswan_flush_guard.yml on the real kernel, in a scratch network namespace
(ansible-playbook itself runs in it, so `ip` and the xfrm_offload_policy module see that namespace's
xfrm state), with pluto not running (a stand-in `ipsec` that fails `whack --status`).

pluto flushes every xfrm SA and policy when it starts, so the role refuses to start it over foreign
state; the collection's own guard policies (owned template reqid, action block, mark mask 0x1) are
not foreign (site.yml installs them again right after the ike role) and must not block the start;
everything else still does: a foreign policy next to the guards, a guard-shaped block policy with a
foreign reqid, an owned block policy with another mark mask, an owned SA-shaped allow policy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from test_rekey_playbook import BIN, COLLECTIONS

pytestmark = pytest.mark.netns

OWNED = 0x51C00005
A, B = "10.79.0.1", "10.79.0.2"
GUARDS = ["src {a}/32 dst {b}/32 proto udp dport 4789 dir out action block priority 4294967295 mark {m} mask 0x1 "
          "tmpl src {a} dst {b} proto esp reqid {r} mode transport".format(a=A, b=B, m=m, r=OWNED) for m in ("0", "0x1")]
GUARDS += ["src {b}/32 dst {a}/32 proto udp sport 4789 dir in action block priority 4294967295 mark {m} mask 0x1 "
           "tmpl src {b} dst {a} proto esp reqid {r} mode transport".format(a=A, b=B, m=m, r=OWNED) for m in ("0", "0x1")]
# (name, policies added next to the guards, refused?)
CASES = [
    ("empty", [], False),
    ("guards only", GUARDS, False),
    ("foreign policy too", GUARDS + ["src 10.80.0.1/32 dst 10.80.0.2/32 dir out priority 100"], True),
    ("guard-shaped, foreign reqid", ["src {a}/32 dst {b}/32 dir out action block priority 4294967295 mark 0 mask 0x1 "
                                     "tmpl src {a} dst {b} proto esp reqid 7 mode transport".format(a=A, b=B)], True),
    ("owned block, mark mask 0xff", GUARDS + ["src {a}/32 dst {b}/32 dir out action block priority 4294967295 mark 0 mask "
                                              "0xff tmpl src {a} dst {b} proto esp reqid {r} mode transport"
                                              .format(a=A, b=B, r=OWNED)], True),
    ("owned SA policy",
     GUARDS + ["src {a}/32 dst {b}/32 dir out priority 100 tmpl src {a} dst {b} proto esp reqid {r} "
               "mode transport".format(a=A, b=B, r=OWNED)], True),
]

PLAY_HEAD = """---
- name: libreswan flush refusal, pluto not running
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: %s
    ike_backend: libreswan
  tasks:
"""
CASE = """
    - name: "Case {i}: policies"
      ansible.builtin.shell: "ip xfrm policy flush; ip xfrm state flush{adds}"
      changed_when: false

    - name: "Case {i}: the refusal"
      block:
        - name: "Case {i}: flush guard"
          ansible.builtin.include_role:
            name: ipsec_offload.mlx5.ike
            tasks_from: libreswan_flush_guard.yml

        - name: "Case {i}: result"
          ansible.builtin.debug:
            msg: "CASE {i} STARTS"
      rescue:
        - name: "Case {i}: result"
          ansible.builtin.debug:
            msg: "CASE {i} REFUSED {{{{ ansible_failed_result.msg | regex_search('[0-9]+ SAs and [0-9]+ policies[^(]*[(]not counting [0-9]+') }}}}"
"""


@pytest.fixture
def netns(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (network namespaces)")
    name = "ikefg-%s" % uuid.uuid4().hex[:8]
    if subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode:
        pytest.skip("ip netns add failed")
    try:
        probe = subprocess.run(["ip", "-n", name, "xfrm", "policy", "add"] + GUARDS[0].split(),
                               capture_output=True, text=True, check=False)
        if probe.returncode:
            pytest.skip("this kernel refuses xfrm policies: %s" % probe.stderr.strip())
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_own_guards_do_not_block_pluto_start(tmp_path, netns):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ipsec = bindir / "ipsec"
    ipsec.write_text("#!/bin/sh\necho 'whack: Pluto is not running (no \"/run/pluto/pluto.ctl\")' >&2\nexit 1\n")
    ipsec.chmod(0o755)
    play = PLAY_HEAD % sys.executable
    for i, (_name, pols, _refused) in enumerate(CASES):
        play += CASE.format(i=i, adds="".join("; ip xfrm policy add " + p for p in pols))
    (tmp_path / "play.yml").write_text(play)
    env = dict(os.environ, HOME=str(tmp_path / "home"), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "ah"),
               PATH="%s:%s" % (bindir, os.environ.get("PATH", "")), ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    p = subprocess.run(["ip", "netns", "exec", netns, os.path.join(BIN, "ansible-playbook"), str(tmp_path / "play.yml")],
                       env=env, capture_output=True, text=True, timeout=900, cwd=str(tmp_path), check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    for i, (name, pols, refused) in enumerate(CASES):
        m = re.search(r'"msg": "CASE %d (STARTS|REFUSED)([^"]*)"' % i, out)
        assert m, "case %d (%s): no result in\n%s" % (i, name, out)
        assert (m.group(1) == "REFUSED") == refused, "case %d (%s): %s" % (i, name, m.group(0))
        if refused:
            n_guards = sum(1 for q in pols if q in GUARDS)
            assert "policies installed now (not counting %d" % n_guards in m.group(2).replace("are ", ""), m.group(0)
    # nothing else in the namespace was touched: the last case's policies are all there
    left = subprocess.run(["ip", "-n", netns, "xfrm", "policy", "list"], capture_output=True, text=True, check=True).stdout
    assert len(re.findall(r"(?m)^src ", left)) == len(CASES[-1][1])
