# -*- coding: utf-8 -*-
"""playbooks/render.yml for real: ansible-playbook on localhost, the example inventories, the key
store in a temporary HOME.  Checks the files (modes, mirrored SPIs, masked/revealed keys) and that
no key reaches the playbook output."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys

import pytest
import yaml

import ansible_collections.ipsec_offload.mlx5 as collection

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
PLAYBOOK = os.path.join(ROOT, "playbooks", "render.yml")
DERIVE = os.path.join(ROOT, "playbooks", "derive.yml")
EXAMPLES = os.path.join(ROOT, "inventories", "examples")
# .../ansible_collections/ipsec_offload/mlx5 -> the directory holding ansible_collections
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))

needs_modules = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(ROOT, "plugins", "modules", m + ".py")) for m in ("xfrm_offload_state", "xfrm_offload_policy")),
    reason="the xfrm_offload_state/xfrm_offload_policy modules are not in this tree")


def run(tmp_path, cmd):
    env = dict(os.environ, HOME=str(tmp_path / "home"), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path), check=False)
    return p.returncode, p.stdout + p.stderr


def play(tmp_path, inventory, *extra, playbook=PLAYBOOK):
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.path.join(EXAMPLES, inventory),
           playbook, "-e", "ipsec_render_dir=%s" % (tmp_path / "out"), "-e", "ipsec_keystore_path=%s" % (tmp_path / "ks" / "keys.yml")]
    return run(tmp_path, cmd + list(extra))


def store_keys(tmp_path):
    doc = yaml.safe_load((tmp_path / "ks" / "keys.yml").read_text())
    return {(s, d): e["key"][2:].lower() for s, dsts in doc["pairs"].items() for d, e in dsts.items()}


def batch(path):
    """The ip -batch lines of a rendered script: each is the one single-quoted printf argument of a
    line `  printf '%s\\n' '...'` (render.yml's ipsec_render filter)."""
    out = []
    for ln in path.read_text().splitlines():
        if ln.startswith("  printf "):
            words = shlex.split(ln)
            assert words[:2] == ["printf", "%s\\n"] and len(words) == 3, ln
            out.append(words[2])
    return out


def lines(path, what):
    return [ln for ln in batch(path) if ln.startswith("xfrm %s add " % what)]


def spi_of(line):
    return re.search(r" spi (0x[0-9a-f]+)", line).group(1)


@needs_modules
def test_render_lab_masked_then_revealed(tmp_path):
    rc, out = play(tmp_path, "lab")
    assert rc == 0, out
    keys = store_keys(tmp_path)
    assert sorted(keys) == [("lab1", "lab2"), ("lab2", "lab1")]
    low = out.lower()
    assert not any(k in low for k in keys.values())
    outdir = tmp_path / "out"
    assert stat.S_IMODE(os.stat(outdir).st_mode) == 0o700
    assert sorted(os.listdir(outdir)) == ["lab1.xfrm.sh", "lab2.xfrm.sh", "pairs.txt"]
    for f in os.listdir(outdir):
        assert stat.S_IMODE(os.stat(outdir / f).st_mode) == 0o600
    l1, l2 = lines(outdir / "lab1.xfrm.sh", "state"), lines(outdir / "lab2.xfrm.sh", "state")
    assert len(l1) == len(l2) == 2
    assert all("<redacted>" in ln and "rfc4106(gcm(aes))" in ln for ln in l1 + l2)
    assert not any(k in (outdir / "lab1.xfrm.sh").read_text().lower() for k in keys.values())
    # mirrored: lab1's out SA is lab2's in SA (same SPI and reqid), and the other way round
    out1 = [ln for ln in l1 if "src 192.168.100.1 dst 192.168.100.2" in ln]
    in2 = [ln for ln in l2 if "src 192.168.100.1 dst 192.168.100.2" in ln]
    assert len(out1) == len(in2) == 1 and spi_of(out1[0]) == spi_of(in2[0])
    assert re.search(r"reqid (\S+)", out1[0]).group(1) == re.search(r"reqid (\S+)", in2[0]).group(1)
    assert " dir out" in out1[0] and " dir in" in in2[0]
    assert "offload" not in " ".join(l1 + l2)           # the lab pair is software-only
    pol = lines(outdir / "lab1.xfrm.sh", "policy")
    # one SA policy per direction and its two guards (block, marks 0/0x1 and 0x1/0x1)
    assert len(pol) == 6 and sum(" action block " in ln for ln in pol) == 4
    assert sum(" mark 0x0 mask 0x1 " in ln for ln in pol) == sum(" mark 0x1 mask 0x1 " in ln for ln in pol) == 2
    table = (outdir / "pairs.txt").read_text()
    assert "lab1->lab2" in table and "keystore/256" in table

    # second run: same key store, same numbers, keys revealed in the files only
    before = (outdir / "lab1.xfrm.sh").read_text()
    rc, out = play(tmp_path, "lab", "-e", "reveal_keys=true")
    assert rc == 0, out
    assert store_keys(tmp_path) == keys
    assert not any(k in out.lower() for k in keys.values())
    text = (outdir / "lab1.xfrm.sh").read_text()
    assert "<redacted>" not in text and keys[("lab1", "lab2")] in text.lower() and keys[("lab2", "lab1")] in text.lower()
    spis_before = [spi_of(ln) for ln in before.splitlines() if ln.startswith("  printf '%s\\n' 'xfrm state add ")]
    assert [spi_of(ln) for ln in lines(outdir / "lab1.xfrm.sh", "state")] == spis_before
    assert text.endswith("\nxfrm_batch | ip -batch -\n") and "<<" not in text


@needs_modules
def test_render_mesh3_namespace_and_offload(tmp_path):
    rc, out = play(tmp_path, "mesh3")
    assert rc == 0, out
    outdir = tmp_path / "out"
    n3 = lines(outdir / "node3.xfrm.sh", "state")
    assert len(n3) == 4 and (outdir / "node3.xfrm.sh").read_text().endswith("\nxfrm_batch | ip -n ns0 -batch -\n")
    assert all("offload crypto dev enp8s0f0np0" in ln for ln in n3)
    n1 = lines(outdir / "node1.xfrm.sh", "state")
    assert len(n1) == 4 and all("offload packet dev enp8s0f0np0" in ln for ln in n1)
    assert any(spi_of(ln) == "0x00001000" for ln in n1)           # the hand-given SPI node1 -> node2


def test_render_limit_without_localhost_is_refused_with_the_fix(tmp_path):
    # every controller play would be skipped without a word: refused, naming the limit and the cure
    rc, out = play(tmp_path, "mesh3", "--limit", "ipsec_mesh")
    assert rc != 0, out
    assert "--limit ipsec_mesh leaves out localhost" in out and "--limit 'ipsec_mesh,localhost'" in out
    assert not (tmp_path / "out").exists() and not (tmp_path / "ks" / "keys.yml").exists()
    rc, out = play(tmp_path, "mesh3", "--limit", "ipsec_mesh,localhost")
    assert rc == 0, out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.xfrm.sh")) == ["node1.xfrm.sh", "node2.xfrm.sh", "node3.xfrm.sh"]


def test_derive_playbook_keystore_once_and_quiet(tmp_path):
    rc, out = play(tmp_path, "mesh3", playbook=DERIVE)
    assert rc == 0, out
    assert "changed=1" in out
    ks = tmp_path / "ks" / "keys.yml"
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600 and stat.S_IMODE(os.stat(ks.parent).st_mode) == 0o700
    keys = store_keys(tmp_path)
    assert len(keys) == 6 and not any(k in out.lower() for k in keys.values())
    text = ks.read_text()
    rc, out = play(tmp_path, "mesh3", "-v", playbook=DERIVE)
    assert rc == 0, out
    assert "changed=0" in out and ks.read_text() == text
    assert not any(k in out.lower() for k in keys.values())


def test_derive_playbook_check_mode_without_keys_writes_nothing(tmp_path):
    # a fresh store in check mode: the pairs are derived with throw-away keys (never stored, never
    # installed: check mode), so that site.yml --check can show what a first run would do
    rc, out = play(tmp_path, "lab", "--check", playbook=DERIVE)
    assert rc == 0, out
    assert "Create missing keys and pin SPI/reqid in the key store" in out
    assert not (tmp_path / "ks").exists()


def test_render_refuses_bad_inventory_before_writing(tmp_path):
    inv = tmp_path / "bad.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {
        "a": {"ipsec_local_ip": "10.0.0.1", "ipsec_peers": ["b"], "ipsec_offload": "none"},
        "b": {"ipsec_local_ip": "10.0.0.2", "ipsec_offload": "none"},
    }}}))
    rc, out = play(tmp_path, str(inv), playbook=DERIVE)
    assert rc != 0
    assert "host a: ipsec_peers: lists b, but b does not list a" in out
    assert not (tmp_path / "out").exists() and not (tmp_path / "ks").exists()


def test_render_refuses_a_bad_key_without_showing_it(tmp_path):
    secret = "0x" + "5ec2e7" * 6 + "99"     # 19 bytes: wrong length
    inv = tmp_path / "badkey.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {
        "a": {"ipsec_local_ip": "10.0.0.1", "ipsec_peers": ["b"], "ipsec_offload": "none",
              "ipsec_overrides": {"b": {"key": secret}}},
        "b": {"ipsec_local_ip": "10.0.0.2", "ipsec_peers": ["a"], "ipsec_offload": "none"},
    }}}))
    rc, out = play(tmp_path, str(inv), "-vvv", playbook=DERIVE)
    assert rc != 0
    assert "host a: ipsec_overrides[b].key: is 19 bytes long" in out
    assert secret[2:] not in out.lower() and secret[2:18] not in out.lower()


VAULT_PASSWORD = "not a real secret"


def test_keys_from_inline_vault_variables(tmp_path):
    """Keys may come from vault-encrypted inventory variables instead of the key store: the filter
    reads them through hostvars, nothing is written, no key is printed."""
    from ansible.parsing.vault import VaultLib, VaultSecret
    k_ab, k_ba = "0x" + "a1" * 36, "0x" + "b2" * 36
    vault = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])

    def vaulted(text):
        return "!vault |\n" + "".join("  " + ln + "\n" for ln in vault.encrypt(text).decode().splitlines())
    (tmp_path / "pw").write_text(VAULT_PASSWORD)
    (tmp_path / "inv.yml").write_text(
        "all:\n  hosts:\n"
        "    a: {ipsec_local_ip: 10.0.0.1, ipsec_peers: [b], ipsec_offload: none}\n"
        "    b: {ipsec_local_ip: 10.0.0.2, ipsec_peers: [a], ipsec_offload: none}\n"
        "  vars:\n    key_ab: %s    key_ba: %s" % (vaulted(k_ab).replace("\n  ", "\n      "), vaulted(k_ba).replace("\n  ", "\n      ")))
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "a.yml").write_text("ipsec_overrides: {b: {key: '{{ key_ab }}'}}\n")
    (tmp_path / "host_vars" / "b.yml").write_text("ipsec_overrides: {a: {key: '{{ key_ba }}'}}\n")
    (tmp_path / "p.yml").write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.set_fact:
        derived: "{{ hostvars | ipsec_offload.mlx5.ipsec_pairs(groups=groups) }}"
      no_log: true
    - ansible.builtin.assert:
        that:
          - derived.hosts.a.states | selectattr('direction', 'equalto', 'out') | map(attribute='aead.key') | list == ['%s']
          - derived.hosts.b.states | selectattr('direction', 'equalto', 'out') | map(attribute='aead.key') | list == ['%s']
          - derived.pairs | map(attribute='key_source') | unique | list == ['inventory']
        quiet: true
""" % (k_ab, k_ba))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp_path / "inv.yml"),
           str(tmp_path / "p.yml"), "--vault-password-file", str(tmp_path / "pw")]
    rc, out = run(tmp_path, cmd)
    assert rc == 0, out
    assert "ok=2" in out and "failed=0" in out
    assert not os.path.exists(tmp_path / "home" / ".ansible" / "ipsec_offload_mlx5")
