# -*- coding: utf-8 -*-
"""The lab and molecule helpers parse `ip xfrm` text with the collection's parser
(plugins/module_utils/_xfrm_text.py), not with one of their own: lab/reliability.sh's helper
(tests/lab/reliability_lib.py) imports it by path, extensions/molecule/default/files/xfrm_dump.py runs with its text in front.
Both run here on the real outputs of tests/unit/fixtures/xfrm."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from harness import fixture

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
XFRM_TEXT = os.path.join(ROOT, "plugins", "module_utils", "_xfrm_text.py")
OWNED = "reqid 1371537409 "  # 0x51c00001


def _text(name):
    return "".join(line for line in fixture(name).splitlines(True) if not line.startswith("#"))


def _owned(text):
    return text.replace("reqid 1 ", OWNED)


def _rel_helper(tmp_path):
    """The helper lab/reliability.sh runs (and its checks import): tests/lab/reliability_lib.py."""
    del tmp_path
    return os.path.join(ROOT, "tests", "lab", "reliability_lib.py")


def _run_helper(helper, cmd, stdin):
    env = dict(os.environ, REL_XFRM_TEXT=XFRM_TEXT)
    out = subprocess.run([sys.executable, helper, cmd], input=stdin, capture_output=True, text=True, env=env, check=True)
    return out.stdout.splitlines()


def test_reliability_helper_reads_xfrm_with_the_collection_parser(tmp_path):
    helper = _rel_helper(tmp_path)
    states = _owned(_text("xfrm/lab-xfrm-state.txt"))
    policies = _owned(_text("xfrm/lab-xfrm-policy.txt"))
    dump = "#REL states\n%s\n#REL policies\n%s\n" % (states, policies)
    assert _run_helper(helper, "host", dump) == [
        "sa 192.168.100.1 192.168.100.2 4096 1371537409",
        "sp 192.168.100.1/32 192.168.100.2/32 out 1371537409"]
    # keys: only the owned SA's key||salt, as the key search needs it
    assert _run_helper(helper, "keys", states) == ["1111111111111111111111111111111111111111"]


def _bundle():
    """What tests/xfrm_view.py bundle() and the prepare.yml task send to the host."""
    with open(XFRM_TEXT, encoding="utf-8") as fh:
        parser = fh.read()
    with open(os.path.join(ROOT, "extensions", "molecule", "default", "files", "xfrm_dump.py"), encoding="utf-8") as fh:
        script = fh.read()
    ns = {"__name__": "xfrm_dump_bundle"}
    exec(compile(parser + "\n" + script, "xfrm_dump_bundle.py", "exec"), ns)  # pylint: disable=exec-used
    return ns


def test_molecule_dump_hashes_keys_and_reads_with_the_collection_parser():
    ns = _bundle()
    text = _text("xfrm/lab-xfrm-state-s.txt")
    states = ns["dump_states"](text, "salt-of-sixteen-chars")
    assert [(s["src"], s["spi"], s["reqid"], s["mode"], s["packets"], s["bytes"]) for s in states] == [
        ("192.168.100.2", 0x1001, 2, "transport", 6, 384), ("192.168.100.1", 0x1000, 1, "transport", 6, 384)]
    assert states[0]["sel"].startswith("src 192.168.100.2/32 dst 192.168.100.1/32")
    assert states[0]["algos"]["aead"]["name"] == "rfc4106(gcm(aes))" and states[0]["algos"]["aead"]["icv"] == "128"
    out = json.dumps(states)
    for key in re.findall(r"0x([0-9a-f]{32,})", text):
        assert key not in out
    # the same key gives the same hash for the same salt, another salt another hash
    again = ns["dump_states"](text, "salt-of-sixteen-chars")
    other = ns["dump_states"](text, "another-salt-sixteen")
    assert again == states and other[0]["algos"]["aead"]["key_hash"] != states[0]["algos"]["aead"]["key_hash"]


def test_molecule_dump_policies_and_offload():
    ns = _bundle()
    pols = ns["dump_policies"](_text("xfrm/policy-marks-guards-real.txt"))  # `reqid N(0x..)` form too
    assert pols and all(p["dir"] in ("in", "out", "fwd") for p in pols)
    assert any(t["reqid"] == 0x51c00002 for p in pols for t in p["tmpl"])
    (sa,) = ns["dump_states"](_text("tc/xfrm_state_mlx5_packet_real.txt"), "salt-of-sixteen-chars")
    assert sa["offload"] == {"dev": "eth2", "dir": "out", "mode": "packet"}
    pols = ns["dump_policies"](_text("devlink/xfrm_policy_mlx5_packet.txt"))
    assert {"dev": "p0", "mode": "packet"} in [p["offload"] for p in pols]


def test_reliability_helper_finds_every_key_of_the_key_store(tmp_path):
    """The key search looks for the key store's keys too (those of SAs no kernel holds any more: a
    rotation's previous key, a torn-down pair): the store as the collection writes it (JSON, one
    pair per line) and as older releases wrote it (YAML)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
    from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore, _pairs
    k1, k2, k3 = "11" * 36, "22" * 36, "33" * 20
    entries = {
        ("a", "b"): {"key": k1, "spi": 0x1001, "reqid": 0x51c00001, "generation": 2, "installed": True,
                     "previous": {"key": k2, "spi": 0x1000, "generation": 1}, "stage": "in_added"},
        ("b", "a"): {"key": k3, "spi": 0x1002, "reqid": 0x51c00002, "generation": 1, "installed": True},
    }
    store = tmp_path / "keystore.yml"
    store.write_text(_keystore.render(_pairs.store_document(entries)), encoding="utf-8")
    helper = _rel_helper(tmp_path)
    env = dict(os.environ, REL_XFRM_TEXT=XFRM_TEXT)
    out = subprocess.run([sys.executable, helper, "keystore", str(store)], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert sorted(out) == sorted([k1, k2, k3])
    legacy = tmp_path / "legacy.yml"
    legacy.write_text("ipsec_offload_keystore: 1\npairs:\n  a:\n    b:\n      key: '0x%s'\n      spi: 4097\n" % k1,
                      encoding="utf-8")
    out = subprocess.run([sys.executable, helper, "keystore", str(legacy)], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == [k1]
