# -*- coding: utf-8 -*-
"""The key store: action (create keys once, pin SPI/reqid, 0600/0700, atomic, vault) and lookup."""

from __future__ import annotations

import os
import re
import stat
from unittest import mock

import pytest
import yaml

from ansible.errors import AnsibleActionFail, AnsibleLookupError
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret, is_encrypted
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.ipsec_offload.mlx5.plugins.action.ipsec_keystore import ActionModule
from ansible_collections.ipsec_offload.mlx5.plugins.lookup.ipsec_keystore import LookupModule
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore

HEXKEY = re.compile(r"0x[0-9a-f]{40,}")


def hosts(n, **common):
    names = ["n%d" % i for i in range(1, n + 1)]
    return {h: dict({"ipsec_local_ip": "10.9.0.%d" % i, "ipsec_offload": "none", "ipsec_peers": [x for x in names if x != h]},
                    **common) for i, h in enumerate(names, 1)}


def run_action(path, pairs, check=False, diff=False, secrets=None, **extra):
    # a plain Task (no collection loader in plain pytest): only the fields ActionBase.run reads
    task = Task()
    task.action = "ipsec_offload.mlx5.ipsec_keystore"
    task.args = dict({"path": str(path), "pairs": pairs}, **extra)
    task.check_mode = check
    task.diff = diff
    loader = DataLoader()
    if secrets:
        loader.set_vault_secrets(secrets)
    return ActionModule(task, mock.MagicMock(), PlayContext(), loader, None, None).run(task_vars={})


def stored(path):
    return _pairs.parse_store(yaml.safe_load(open(path, encoding="utf-8")))


def test_creates_keys_once_with_modes_0600_0700(tmp_path):
    path = tmp_path / "ks" / "sub" / "keys.yml"
    d = _pairs.derive(hosts(3), keys="none")
    old = os.umask(0)          # a careless umask must not loosen anything
    try:
        r = run_action(path, d)
    finally:
        os.umask(old)
    assert r["changed"] is True and r["encrypted"] is False
    assert r["created"] == r["pinned"] == ["n1->n2", "n1->n3", "n2->n1", "n2->n3", "n3->n1", "n3->n2"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path.parent.parent).st_mode) == 0o700
    text = path.read_text()
    assert text.startswith("# ipsec_offload.mlx5 key store")
    entries = stored(path)
    keys = [e["key"] for e in entries.values()]
    assert len(set(keys)) == 6 and all(len(k) == 72 for k in keys)
    for p in d["pairs"]:
        e = entries[(p["src_host"], p["dst_host"])]
        assert (e["spi"], e["reqid"]) == (p["spi"], p["reqid"])
    # no key material in the result
    flat = repr(r)
    assert not HEXKEY.search(flat) and not any(k in flat for k in keys)
    assert sorted(os.listdir(path.parent)) == ["keys.yml"]       # no temporary file left behind

    again = run_action(path, d)
    assert again["changed"] is False and again["created"] == [] and again["pinned"] == []
    assert path.read_text() == text


def test_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "new-dir" / "keys.yml"
    r = run_action(path, _pairs.derive(hosts(2), keys="none"), check=True)
    assert r["changed"] is True and r["created"] == ["n1->n2", "n2->n1"]
    assert not path.parent.exists()


def test_diff_redacts_keys(tmp_path):
    path = tmp_path / "keys.yml"
    r = run_action(path, _pairs.derive(hosts(2), keys="none"), diff=True)
    assert r["diff"]["before"] == ""
    lines = r["diff"]["after"].splitlines()
    assert len(lines) == 2 and all("key <redacted>, spi 0x" in ln for ln in lines)
    assert not HEXKEY.search(r["diff"]["after"].replace("spi 0x", "").replace("reqid 0x", ""))


def test_new_host_keeps_existing_keys_and_numbers(tmp_path):
    path = tmp_path / "keys.yml"
    run_action(path, _pairs.derive(hosts(3), keys="none"))
    before = stored(path)
    hv = hosts(4)
    r = run_action(path, _pairs.derive(hv, keys="none"))
    after = stored(path)
    assert {k: after[k] for k in before} == before
    assert sorted(r["created"]) == ["n1->n4", "n2->n4", "n3->n4", "n4->n1", "n4->n2", "n4->n3"]
    # the filter with the store gives the same numbers the store pins, and the stored keys
    full = _pairs.derive(hv, store=after)
    for p in full["pairs"]:
        e = after[(p["src_host"], p["dst_host"])]
        assert (p["spi"], p["reqid"], p["key_source"]) == (e["spi"], e["reqid"], "keystore")
        st = [s for s in full["hosts"][p["src_host"]]["states"] if s["direction"] == "out" and s["spi"] == p["spi"]]
        assert st[0]["aead"]["key"] == "0x" + e["key"]


def test_pins_win_over_new_colliding_pairs(tmp_path):
    """A crowded reqid range: the action allocates the new pairs around the pinned ones."""
    path = tmp_path / "keys.yml"
    rng = ["0x51c00000", "0x51c0000f"]
    run_action(path, _pairs.derive(hosts(4, ipsec_owned_reqid_range=rng), keys="none"))
    before = stored(path)
    hv = hosts(6, ipsec_owned_reqid_range=rng)
    hv = {("a" + h if h in ("n5", "n6") else h): v for h, v in hv.items()}   # new names sort first
    for v in hv.values():
        v["ipsec_peers"] = [("a" + p if p in ("n5", "n6") else p) for p in v["ipsec_peers"]]
    r = run_action(path, _pairs.derive(hv, keys="none"))
    assert r["repinned"] == []
    after = stored(path)
    assert {k: (after[k]["spi"], after[k]["reqid"]) for k in before} == {k: (v["spi"], v["reqid"]) for k, v in before.items()}
    full = _pairs.derive(hv, store=after)
    by_host = {}
    for p in full["pairs"]:
        for h in (p["src_host"], p["dst_host"]):
            by_host.setdefault(h, []).append(p["reqid"])
    assert all(len(v) == len(set(v)) for v in by_host.values())


def test_inventory_keys_are_not_stored(tmp_path):
    path = tmp_path / "keys.yml"
    hv = hosts(2)
    hv["n1"]["ipsec_overrides"] = {"n2": {"key": "0x" + "ab" * 36}}
    r = run_action(path, _pairs.derive(hv, keys="none"))
    assert r["created"] == ["n2->n1"]
    e = stored(path)
    assert e[("n1", "n2")]["key"] is None and e[("n1", "n2")]["spi"] is not None
    assert "ab" * 36 not in path.read_text()


def test_refuses_sa_objects_as_input(tmp_path):
    with pytest.raises(AnsibleActionFail, match="pairs holds SA objects"):
        run_action(tmp_path / "k.yml", _pairs.derive(hosts(2), keys="optional"))
    with pytest.raises(AnsibleActionFail, match="Invalid options for ipsec_offload.mlx5.ipsec_keystore: bogus"):
        run_action(tmp_path / "k.yml", [], bogus=1)
    with pytest.raises(AnsibleActionFail, match=r"pairs\[0\]: not an entry"):
        run_action(tmp_path / "k.yml", [{"src_host": "a"}])


def test_corrupt_store_errors_never_show_keys(tmp_path):
    path = tmp_path / "keys.yml"
    run_action(path, _pairs.derive(hosts(2), keys="none"))
    text = path.read_text()
    secret = re.search(r'"key": "0x([0-9a-f]+)"', text).group(1)
    # 1. broken JSON (and YAML) on the key's line
    path.write_text(text.replace('"key": "0x' + secret, '"key": [0x' + secret))
    with pytest.raises(AnsibleActionFail) as ei:
        run_action(path, _pairs.derive(hosts(2), keys="none"))
    assert "is not valid YAML (line" in str(ei.value) and secret not in str(ei.value)
    # 2. a key of the wrong size for ipsec_key_bits
    path.write_text(text)
    with pytest.raises(AnsibleActionFail) as ei:
        run_action(path, _pairs.derive(hosts(2, ipsec_key_bits=128), keys="none"))
    assert "is 36 bytes long (AES-256 + salt) but ipsec_key_bits is 128" in str(ei.value)
    assert secret not in str(ei.value)
    # 3. one key copied into the other direction by hand
    other = re.findall(r'"key": "0x([0-9a-f]+)"', text)[1]
    path.write_text(text.replace(other, secret))
    with pytest.raises(AnsibleActionFail) as ei:
        run_action(path, _pairs.derive(hosts(2), keys="none"))
    assert "is also used by the reverse direction" in str(ei.value) and secret not in str(ei.value)


def test_failed_write_leaves_the_old_store(tmp_path):
    path = tmp_path / "keys.yml"
    run_action(path, _pairs.derive(hosts(2), keys="none"))
    text = path.read_text()
    with mock.patch.object(_keystore.os, "replace", side_effect=OSError(28, "No space left on device")):
        with pytest.raises(OSError):
            run_action(path, _pairs.derive(hosts(3), keys="none"))
    assert path.read_text() == text
    assert sorted(os.listdir(tmp_path)) == ["keys.yml"]


SECRETS = [("prod", VaultSecret(b"correct horse"))]


def keystore_lookup(loader):
    """The lookup as the plugin loader hands it out: ansible-core before 2.19 (2.16 is the declared
    minimum) reads its options by the name the loader sets, which a bare instance lacks."""
    lk = LookupModule(loader=loader)
    if not hasattr(lk, "_load_name"):
        lk._load_name = "ipsec_offload.mlx5.ipsec_keystore"
    return lk


def test_vault_encrypted_store_round_trip(tmp_path):
    path = tmp_path / "keys.yml"
    run_action(path, _pairs.derive(hosts(2), keys="none"))
    plain = path.read_text()
    path.write_bytes(VaultLib(SECRETS).encrypt(plain, vault_id="prod"))
    before = path.read_bytes()
    assert is_encrypted(before)

    with pytest.raises(AnsibleActionFail, match="is vault-encrypted; run with --ask-vault-pass"):
        run_action(path, _pairs.derive(hosts(3), keys="none"))
    with pytest.raises(AnsibleActionFail, match="none of the given vault secrets opens it"):
        run_action(path, _pairs.derive(hosts(3), keys="none"), secrets=[("prod", VaultSecret(b"wrong"))])
    assert path.read_bytes() == before

    same = run_action(path, _pairs.derive(hosts(2), keys="none"), secrets=SECRETS)
    assert same["changed"] is False and same["encrypted"] is True and path.read_bytes() == before

    r = run_action(path, _pairs.derive(hosts(3), keys="none"), secrets=SECRETS)
    assert r["changed"] is True and r["encrypted"] is True and len(r["created"]) == 4
    data = path.read_bytes()
    assert is_encrypted(data) and b"key:" not in data
    assert data.splitlines()[0] == before.splitlines()[0] == b"$ANSIBLE_VAULT;1.2;AES256;prod"   # same vault id
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = yaml.safe_load(VaultLib(SECRETS).decrypt(data))
    old = _pairs.parse_store(yaml.safe_load(plain))
    new = _pairs.parse_store(doc)
    assert {k: new[k] for k in old} == old and len(new) == 6

    # the lookup reads it through the same vault secrets
    loader = DataLoader()
    loader.set_vault_secrets(SECRETS)
    got = keystore_lookup(loader).run([str(path)], variables={})
    assert _pairs.parse_store(got[0]) == new


def test_lookup_plain_missing_and_locked_out(tmp_path):
    path = tmp_path / "keys.yml"
    loader = DataLoader()
    assert keystore_lookup(loader).run([str(path)], variables={}) == [{}]
    run_action(path, _pairs.derive(hosts(2), keys="none"))
    got = keystore_lookup(loader).run([str(path)], variables={})
    assert _pairs.parse_store(got[0]) == stored(path)
    path.write_bytes(VaultLib(SECRETS).encrypt(path.read_text(), vault_id="prod"))
    with pytest.raises(AnsibleLookupError, match="is vault-encrypted"):
        keystore_lookup(DataLoader()).run([str(path)], variables={})


def test_loose_modes_are_reported(tmp_path):
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    f = d / "keys.yml"
    f.write_text("{}\n")
    os.chmod(f, 0o644)
    w = _keystore.loose_mode_warnings(str(f))
    assert w == ["ipsec key store: %s is mode 0755; it should be 0700 (chmod 700 %s)" % (d, d),
                 "ipsec key store: %s is mode 0644; it should be 0600 (chmod 600 %s)" % (f, f)]
    # a write replaces the file with a 0600 one (the directory is the user's: only warned about)
    _keystore.write(str(f), {"ipsec_offload_keystore": 1, "pairs": {}})
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600


def test_relative_path_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _keystore.resolve("~/ks/k.yml") == str(tmp_path / "ks" / "k.yml")
    with pytest.raises(_keystore.KeyStoreError, match=r"ipsec_keystore_path: 'k.yml' is a relative path.*/play/dir"):
        _keystore.resolve("k.yml", "/play/dir")
    with pytest.raises(_keystore.KeyStoreError, match="relative path"):
        _keystore.resolve("keys/../k.yml")
    with pytest.raises(_keystore.KeyStoreError):
        _keystore.resolve("  ")


def test_store_is_json_one_entry_per_line_and_yaml_stores_are_still_read(tmp_path):
    """Issue 18: the store is written as JSON (fast to read and write at mesh scale, still YAML to
    YAML tools); a store written as YAML by an earlier version is read and kept as it is."""
    import json
    from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore
    path = tmp_path / "keys.yml"
    run_action(path, _pairs.derive(hosts(3), keys="none"))
    text = path.read_text()
    assert text.startswith(_pairs.STORE_HEADER)
    body = text[len(_pairs.STORE_HEADER):]
    doc = json.loads(body)
    assert doc == yaml.safe_load(text)
    assert len([ln for ln in body.splitlines() if '"key": "0x' in ln]) == 6     # one line per entry
    # an older YAML store: read the same, not rewritten while nothing changes
    old = tmp_path / "old.yml"
    old.write_text(_pairs.STORE_HEADER + yaml.safe_dump(doc, default_flow_style=False))
    before = old.read_text()
    assert _pairs.parse_store(_keystore.read(str(old))[0]) == _pairs.parse_store(doc)
    res = run_action(old, _pairs.derive(hosts(3), keys="none"))
    assert not res["changed"] and old.read_text() == before


def test_packed_pairs_pin_what_the_pairs_list_pins(tmp_path):
    """derive.yml passes the allocation packed (issue 18): the store is the same as from the list."""
    from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
    hv = hosts(4)
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    ra = run_action(a, _pairs.derive(hv, keys="none"), key_derivation="hkdf")
    rb = run_action(b, ipsec_pairs(hv, keys="none", packed=True), key_derivation="hkdf")
    # the same pins; each store's entries have their own random hkdf nonces
    nonce = re.compile(r'"nonce": "[0-9a-f]{32}", ')
    assert len(nonce.findall(a.read_text())) == 12
    assert nonce.sub("", a.read_text()) == nonce.sub("", b.read_text()) and ra["pairs"] == rb["pairs"] == 12
    with pytest.raises(AnsibleActionFail, match="packed pairs: not the text pack_pairs"):
        run_action(b, {"packed": "[[1"})


def test_hkdf_store_holds_no_key_at_mesh_scale(tmp_path):
    """Issue 18: with ipsec_key_derivation=hkdf the store holds pins, generations and flags only,
    whatever the size (a 60-host full mesh: 3,540 entries)."""
    import json
    from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
    hv = {"m%02d" % i: {"ipsec_local_ip": "10.8.0.%d" % (i + 1), "ipsec_offload": "none", "ipsec_meshes": ["g"]}
          for i in range(60)}
    path = tmp_path / "keys.yml"
    res = run_action(path, ipsec_pairs(hv, groups={"g": sorted(hv)}, keys="none", packed=True), key_derivation="hkdf")
    assert res["pairs"] == 3540 and res["created"] == []
    text = path.read_text()
    doc = json.loads(text[len(_pairs.STORE_HEADER):])
    entries = [e for dsts in doc["pairs"].values() for e in dsts.values()]
    assert len(entries) == 3540
    assert all(set(e) == {"spi", "reqid", "nonce", "installed"} for e in entries)
    assert len({e["nonce"] for e in entries}) == 3540
    assert '"key"' not in text
