# -*- coding: utf-8 -*-
"""playbooks/derive.yml + slices.yml for real (ansible-playbook, the mesh3 example inventory, no host
contacted): every IPsec host's fact ipsec_host holds its own SAs and policies and nothing of the
pairs it is not part of, localhost's ipsec_derived keeps no key after the hand-out, and no key
reaches the playbook output (issue 18)."""

from __future__ import annotations

import json
import os
import stat
import sys

from test_render_playbook import EXAMPLES, ROOT, run, store_keys

DUMP = """---
- name: Derive
  ansible.builtin.import_playbook: %s

- name: Dump what each host and the controller hold (test only)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Per host slice and the controller's derivation, to a 0600 file
      ansible.builtin.copy:
        dest: "{{ dump_file }}"
        mode: "0600"
        content: >-
          {{ {'hosts': dict(groups['all'] | zip(groups['all'] | map('extract', hostvars, 'ipsec_host'))),
              'in_mesh': dict(groups['all'] | zip(groups['all'] | map('extract', hostvars, 'ipsec_in_mesh'))),
              'controller': ipsec_derived} | to_json }}
      no_log: true
"""


def test_each_host_holds_only_its_own_slice(tmp_path):
    pb = tmp_path / "dump.yml"
    pb.write_text(DUMP % os.path.join(ROOT, "playbooks", "derive.yml"))
    dump = tmp_path / "dump.json"
    # one more inventory host without any ipsec_* variable (a jump host, a monitoring box)
    extra = tmp_path / "extra.yml"
    extra.write_text("all:\n  hosts:\n    bystander:\n      ansible_connection: local\n")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.path.join(EXAMPLES, "mesh3"),
           "-i", str(extra), str(pb), "-e", "ipsec_keystore_path=%s" % (tmp_path / "ks" / "keys.yml"), "-e", "dump_file=%s" % dump]
    rc, out = run(tmp_path, cmd)
    assert rc == 0, out
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600
    d = json.loads(dump.read_text())
    keys = store_keys(tmp_path)                                   # (src, dst) -> hex key, 6 directions
    assert len(keys) == 6 and len(set(keys.values())) == 6
    assert not any(k in out.lower() for k in keys.values())     # nothing in the playbook output
    ctl = d["controller"]
    assert "hosts" not in ctl and ctl["count"] == 6 and ctl["host_names"] == ["node1", "node2", "node3"]
    assert not any(k in json.dumps(ctl).lower() for k in keys.values())   # the controller keeps no key
    assert json.loads(ctl["pair_ends"])["node1->node3"] == ["node1", "node3"]
    ips = {"node1": "10.20.0.1", "node2": "10.20.0.2", "node3": "10.20.0.3"}
    # a host without a pair gets an empty slice and ipsec_in_mesh false: site.yml's plays skip it
    assert d["hosts"].pop("bystander") == {} and d["in_mesh"].pop("bystander") is False
    assert sorted(d["hosts"]) == sorted(ips)
    for host, mine in d["hosts"].items():
        assert d["in_mesh"][host] is True
        text = json.dumps(mine).lower()
        for (src, dst), key in keys.items():
            # a host holds exactly the keys of the directions it sends or receives
            assert (key in text) == (host in (src, dst)), (host, src, dst)
        assert len(mine["states"]) == 4 and len(mine["policies"]) >= 4
        assert all(ips[host] in (s["src"], s["dst"]) for s in mine["states"])
        assert sorted(mine["peers"]) == sorted(set(ips) - {host})
        assert all(host in (p["src_host"], p["dst_host"]) for p in mine["pairs"]) and len(mine["pairs"]) == 4
        assert mine["namespace"] == ("ns0" if host == "node3" else None)
        assert set(mine["rekey"]) == {"add_in", "add_out", "del_out", "del_in"} and mine["heal"] == {"add_in": []}
