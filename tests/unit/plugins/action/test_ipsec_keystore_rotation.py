# -*- coding: utf-8 -*-
"""The ipsec_keystore action's key rotation: rotate (start / resume), rotation_stage (advance,
finish), check mode writes nothing, file mode stays 0600, no key in any result."""

from __future__ import annotations

import os
import re
import stat
from unittest import mock

import pytest
import yaml

from ansible.errors import AnsibleActionFail
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultSecret, is_encrypted
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from ansible_collections.ipsec_offload.mlx5.plugins.action.ipsec_keystore import ActionModule
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

HEXKEY = re.compile(r"[0-9a-f]{40,}")


def hosts(n):
    names = ["n%d" % i for i in range(1, n + 1)]
    return {h: {"ipsec_local_ip": "10.9.0.%d" % i, "ipsec_offload": "none", "ipsec_peers": [x for x in names if x != h]}
            for i, h in enumerate(names, 1)}


def run_action(path, pairs, check=False, diff=False, secrets=None, **extra):
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


def all_key_hex(entries):
    out = []
    for e in entries.values():
        out.append(e["key"])
        if e.get("previous"):
            out.append(e["previous"]["key"])
    return out


def assert_no_keys(result, entries):
    flat = repr(result).lower()
    assert not any(k in flat for k in all_key_hex(entries))
    assert not HEXKEY.search(flat)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "ks" / "keys.yml"
    d = _pairs.derive(hosts(2), keys="none")
    r = run_action(path, d)
    assert r["changed"] and r["rotations"] == {}
    return path, d


def test_rotate_start_resume_advance_finish(store):
    path, d = store
    before = stored(path)

    r = run_action(path, d, rotate=["n1->n2"], diff=True)
    after = stored(path)
    assert r["changed"] is True
    assert r["rotation_started"] == ["n1->n2"] and r["rotation_continuing"] == []
    assert r["rotations"] == {"n1->n2": "inbound"}
    e, old = after[("n1", "n2")], before[("n1", "n2")]
    assert e["previous"] == {"key": old["key"], "spi": old["spi"], "generation": 1}
    assert e["key"] != old["key"] and e["spi"] != old["spi"] and e["reqid"] == old["reqid"]
    assert after[("n2", "n1")] == before[("n2", "n1")]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert "rotation inbound from generation 1" in r["diff"]["after"] and "<redacted>" in r["diff"]["after"]
    assert_no_keys(r, after)

    # resume: the same call again changes nothing (no third key)
    text = path.read_text()
    r = run_action(path, d, rotate=["n1->n2"])
    assert r["changed"] is False and r["rotation_continuing"] == ["n1->n2"] and r["rotation_started"] == []
    assert path.read_text() == text
    # plain derive.yml runs (no rotate) keep the rotation as it is
    r = run_action(path, d)
    assert r["changed"] is False and r["rotations"] == {"n1->n2": "inbound"}
    assert path.read_text() == text

    for stage in ("outbound", "retire"):
        r = run_action(path, d, rotation_stage=stage)
        assert r["changed"] is True and r["rotation_advanced"] == ["n1->n2"]
        assert r["rotations"] == {"n1->n2": stage}
        r = run_action(path, d, rotation_stage=stage)     # idempotent
        assert r["changed"] is False and r["rotation_advanced"] == []
    r = run_action(path, d, rotation_stage="finished")
    assert r["changed"] is True and r["rotation_finished"] == ["n1->n2"] and r["rotations"] == {}
    fin = stored(path)
    assert fin[("n1", "n2")] == {"key": e["key"], "spi": e["spi"], "reqid": e["reqid"], "generation": 2,
                                 "installed": True,
                                 "retired": [{"generation": 1, "spi": old["spi"], "fp": _pairs.key_fingerprint(old["key"])}]}
    assert "previous" not in path.read_text()
    assert_no_keys(r, fin)


def test_check_mode_writes_nothing(store):
    path, d = store
    text = path.read_text()
    r = run_action(path, d, rotate="all", check=True)
    assert r["changed"] is True and sorted(r["rotation_started"]) == ["n1->n2", "n2->n1"]
    assert path.read_text() == text
    run_action(path, d, rotate="all")
    text = path.read_text()
    r = run_action(path, d, rotation_stage="outbound", check=True)
    assert r["changed"] is True and r["rotation_advanced"] == ["n1->n2", "n2->n1"]
    assert path.read_text() == text
    # the stage before was not written in check mode: the next one may be reported anyway
    r = run_action(path, d, rotation_stage="retire", check=True)
    assert r["changed"] is True and r["rotations"] == {"n1->n2": "retire", "n2->n1": "retire"}
    r = run_action(path, d, rotation_stage="finished", check=True)
    assert r["rotation_finished"] == ["n1->n2", "n2->n1"] and r["rotations"] == {}
    assert path.read_text() == text


def test_skip_and_conflicts_refused(store):
    path, d = store
    run_action(path, d, rotate=["n1"])
    text = path.read_text()
    with pytest.raises(AnsibleActionFail, match="rotation is at stage inbound; it cannot skip to retire"):
        run_action(path, d, rotation_stage="retire")
    with pytest.raises(AnsibleActionFail, match="mutually exclusive"):
        run_action(path, d, rotate=["n1"], rotation_stage="outbound")
    with pytest.raises(AnsibleActionFail, match="rotate\\[0\\]: n7 matches no IPsec pair"):
        run_action(path, d, rotate=["n7"])
    with pytest.raises(AnsibleActionFail, match="rotation_stage: 'sideways' is not one of"):
        run_action(path, d, rotation_stage="sideways")
    assert path.read_text() == text


def test_rotation_in_vault_encrypted_store(store, tmp_path):
    from ansible.parsing.vault import VaultLib
    path, d = store
    secret = VaultSecret(b"rotation-test-password")
    secrets = [("default", secret)]
    path.write_bytes(VaultLib(secrets).encrypt(path.read_text(), secret=secret, vault_id="default"))
    r = run_action(path, d, rotate="all", secrets=secrets)
    assert r["encrypted"] is True and len(r["rotation_started"]) == 2
    data = path.read_bytes()
    assert is_encrypted(data)
    doc = yaml.safe_load(VaultLib(secrets).decrypt(data).decode())
    assert set(_pairs.rotations_of(_pairs.parse_store(doc)).values()) == {"inbound"}
