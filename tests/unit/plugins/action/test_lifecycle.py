# -*- coding: utf-8 -*-
"""The SA lifecycle in the ipsec_keystore action (present=, retire_hosts=): a key, with its SPI,
serves one SA instance, ever.  Lost SAs are rotated on both peers (new random SPI, new key), never
re-added; a direction whose peer was not read is held; what a run hands out is marked installed;
teardown retires; the store refuses going backwards; check mode writes nothing; no key in results."""

from __future__ import annotations

import pytest
import yaml

from ansible.errors import AnsibleActionFail

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

from test_ipsec_keystore_rotation import assert_no_keys, hosts, run_action, stored


def sa_ids(entries, d, which):
    """{host: [SA identity dicts]} as xfrm_offload_state gathered gives them, for the named
    directions (``which``: {pair name: ("out", "in")}) at their current SPI."""
    addr = {p["name"]: (p["src"], p["dst"]) for p in d["pairs"]}
    out = {}
    for p in d["pairs"]:
        e = entries[(p["src_host"], p["dst_host"])]
        for end in which.get(p["name"], ()):
            host = p["src_host"] if end == "out" else p["dst_host"]
            src, dst = addr[p["name"]]
            out.setdefault(host, []).append({"src": src, "dst": dst, "spi": "0x%08x" % e["spi"]})
    return out


BOTH = ("out", "in")


@pytest.fixture
def pair(tmp_path):
    path = tmp_path / "ks" / "keys.yml"
    d = _pairs.derive(hosts(2), keys="none")
    r = run_action(path, d)
    assert r["changed"] and r["created"] == ["n1->n2", "n2->n1"]
    e = stored(path)
    assert not e[("n1", "n2")]["installed"] and not e[("n2", "n1")]["installed"]
    return path, d


def converge(path, d, present, seen, check=False):
    return run_action(path, d, check=check, present=present, seen=seen)


def test_first_converge_marks_installed_then_steady(pair):
    path, d = pair
    r = converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    assert r["changed"] and sorted(r["lifecycle"]["fresh"]) == ["n1->n2", "n2->n1"] and r["rotated"] == {}
    e = stored(path)
    assert e[("n1", "n2")]["installed"] and e[("n2", "n1")]["installed"]
    # steady state: every SA where it belongs -> nothing to do, nothing written
    text = path.read_text()
    r = converge(path, d, sa_ids(e, d, {"n1->n2": BOTH, "n2->n1": BOTH}), ["n1", "n2"])
    assert not r["changed"] and r["lifecycle"]["fresh"] == [] and r["rotated"] == {} and r["held"] == {}
    assert path.read_text() == text


@pytest.mark.parametrize("missing", [("n1->n2", "out"), ("n1->n2", "in"), ("n2->n1", "out"), ("both", None)])
def test_lost_sa_rotates_that_direction_on_both_peers(pair, missing):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    e1 = stored(path)
    have = {"n1->n2": list(BOTH), "n2->n1": list(BOTH)}
    if missing[0] == "both":
        have = {}                                       # reboot of both / teardown by hand
    else:
        have[missing[0]].remove(missing[1])
    r = converge(path, d, sa_ids(e1, d, have), ["n1", "n2"])
    lost = ["n1->n2", "n2->n1"] if missing[0] == "both" else [missing[0]]
    assert sorted(r["rotated"]) == lost and r["held"] == {}
    assert sorted(r["lifecycle"]["fresh"]) == lost
    assert r["lifecycle"]["planned"] == {}             # real run: the store holds the new generation
    e2 = stored(path)
    for name in lost:
        k = tuple(name.split("->"))
        assert e2[k]["spi"] != e1[k]["spi"] and e2[k]["key"] != e1[k]["key"]
        assert e2[k]["generation"] == 2 and e2[k]["installed"] and e2[k]["reqid"] == e1[k]["reqid"]
        assert e2[k]["retired"] == [{"generation": 1, "spi": e1[k]["spi"], "fp": _pairs.key_fingerprint(e1[k]["key"])}]
        assert "missing on" in r["rotated"][name] and "new generation 2" in r["rotated"][name]
    for name in {"n1->n2", "n2->n1"} - set(lost):
        k = tuple(name.split("->"))
        assert e2[k] == e1[k]
    assert_no_keys(r, {**e1, **{("x", k): v for k, v in e2.items()}})
    # the next run with the new SAs in place is steady
    r = converge(path, d, sa_ids(e2, d, {"n1->n2": BOTH, "n2->n1": BOTH}), ["n1", "n2"])
    assert not r["changed"] and r["rotated"] == {}


def test_lost_again_never_reuses_an_spi_or_key(pair):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    spis, keys = set(), set()
    for dummy in range(6):
        e = stored(path)
        spis.add(e[("n1", "n2")]["spi"])
        keys.add(e[("n1", "n2")]["key"])
        r = converge(path, d, sa_ids(e, d, {"n2->n1": BOTH}), ["n1", "n2"])   # n1->n2 lost on both ends
        assert list(r["rotated"]) == ["n1->n2"]
    e = stored(path)
    assert e[("n1", "n2")]["generation"] == 7 and len(e[("n1", "n2")]["retired"]) == 6
    assert e[("n1", "n2")]["spi"] not in spis and e[("n1", "n2")]["key"] not in keys


def test_peer_not_in_run_holds_the_pair_and_changes_nothing(pair):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    e1 = stored(path)
    text = path.read_text()
    # n1 rebooted (nothing left), n2 not in this run (--limit n1)
    r = converge(path, d, {"n1": []}, ["n1"])
    assert r["rotated"] == {} and sorted(r["held"]) == ["n1->n2", "n2->n1"]
    assert "n2 not in this run or not reachable" in r["held"]["n1->n2"]
    assert "--limit n1,n2,localhost" in r["held"]["n1->n2"] and "missing on n1 (out)" in r["held"]["n1->n2"]
    assert r["lifecycle"]["held"]["n1->n2"]["out"] == [] and r["lifecycle"]["held"]["n2->n1"]["in"] == []
    assert not r["changed"] and path.read_text() == text and stored(path) == e1
    # the derivation then installs nothing of the held pair on n1 (no re-add), policies stay
    dd = _pairs.derive(hosts(2), store=stored(path), lifecycle=r["lifecycle"])
    assert dd["hosts"]["n1"]["states"] == [] and len(dd["hosts"]["n1"]["policies"]) >= 2
    assert dd["heal"]["n1"]["add_in"] == []


def test_new_pair_with_one_side_in_run_is_marked_and_heals_later(pair):
    path, d = pair
    r = converge(path, d, {"n1": []}, ["n1"])          # first install, --limit n1
    assert sorted(r["lifecycle"]["fresh"]) == ["n1->n2", "n2->n1"] and r["held"] == {}
    e1 = stored(path)
    # later both: n2 never got its SAs -> the direction is rotated, never completed with the old key
    r = converge(path, d, sa_ids(e1, d, {"n1->n2": ("out",), "n2->n1": ("in",)}), ["n1", "n2"])
    assert sorted(r["rotated"]) == ["n1->n2", "n2->n1"]


def test_check_mode_plans_but_writes_nothing(pair):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    e1 = stored(path)
    text = path.read_text()
    r = converge(path, d, sa_ids(e1, d, {"n2->n1": BOTH, "n1->n2": ("in",)}), ["n1", "n2"], check=True)
    assert list(r["rotated"]) == ["n1->n2"] and path.read_text() == text
    plan = r["lifecycle"]["planned"]["n1->n2"]
    assert plan["generation"] == 2 and plan["spi"] != e1[("n1", "n2")]["spi"]
    dd = _pairs.derive(hosts(2), store=e1, lifecycle=r["lifecycle"])
    out = [s for s in dd["hosts"]["n1"]["states"] if s["direction"] == "out"]
    assert [s["spi"] for s in out] == [plan["spi"]] and out[0]["aead"]["key"][2:] != e1[("n1", "n2")]["key"]
    assert [s["spi"] for s in dd["heal"]["n2"]["add_in"]] == [plan["spi"]]


def test_unmanaged_pairs_are_left_to_the_ike_daemon(pair):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    r = run_action(path, d, present={"n1": [], "n2": []}, seen=["n1", "n2"], unmanaged=["n1->n2", "n2->n1"])
    assert r["rotated"] == {} and r["held"] == {} and not r["changed"]


def test_teardown_retires_and_next_converge_installs_new_instances(pair):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    e1 = stored(path)
    r = run_action(path, d, retire_hosts=["n1"])
    assert sorted(r["retired"]) == ["n1->n2", "n2->n1"] and r["changed"]
    e2 = stored(path)
    for k in e1:
        assert e2[k]["spi"] != e1[k]["spi"] and e2[k]["key"] != e1[k]["key"] and not e2[k]["installed"]
    r = converge(path, d, {"n1": [], "n2": sa_ids(e1, d, {"n1->n2": ("in",), "n2->n1": ("out",)})["n2"]}, ["n1", "n2"])
    assert r["rotated"] == {} and sorted(r["lifecycle"]["fresh"]) == ["n1->n2", "n2->n1"]


def test_hkdf_mode_store_has_no_key_and_keys_follow_generation(tmp_path):
    path = tmp_path / "ks" / "keys.yml"
    d = _pairs.derive(hosts(2), keys="none")
    run_action(path, d, key_derivation="hkdf")
    assert "key:" not in path.read_text()
    secret = "m" * 40
    run_action(path, d, key_derivation="hkdf", present={"n1": [], "n2": []}, seen=["n1", "n2"])
    e1 = stored(path)
    d1 = _pairs.derive(hosts(2), store=e1, master_secret=secret)
    k1 = {s["spi"]: s["aead"]["key"] for s in d1["hosts"]["n1"]["states"]}
    # both ends hold the same key for each SA; each direction its own
    k2 = {s["spi"]: s["aead"]["key"] for s in d1["hosts"]["n2"]["states"]}
    assert k1 == k2 and len(set(k1.values())) == 2
    r = run_action(path, d, key_derivation="hkdf", present={"n1": [], "n2": []}, seen=["n1", "n2"])
    assert sorted(r["rotated"]) == ["n1->n2", "n2->n1"] and "key:" not in path.read_text()
    d2 = _pairs.derive(hosts(2), store=stored(path), master_secret=secret)
    k3 = {s["spi"]: s["aead"]["key"] for s in d2["hosts"]["n1"]["states"]}
    assert not set(k3) & set(k1) and not set(k3.values()) & set(k1.values())


def test_hkdf_lost_store_never_brings_back_a_key(tmp_path):
    """A key serves one SA instance, ever - also in hkdf mode when the key store is lost: the new
    store's pairs start again at generation 1 with the same hash-chosen SPIs, but each entry has a
    new random nonce (the HKDF salt), so no key of the lost store comes back."""
    secret = "m" * 40
    d = _pairs.derive(hosts(2), keys="none")
    first, again = tmp_path / "a" / "keys.yml", tmp_path / "b" / "keys.yml"
    run_action(first, d, key_derivation="hkdf")
    run_action(again, d, key_derivation="hkdf")          # the same inventory, the store made again
    e1, e2 = stored(first), stored(again)
    assert {k: (v["spi"], v["generation"]) for k, v in e1.items()} == {k: (v["spi"], v["generation"]) for k, v in e2.items()}
    k1 = {s["spi"]: s["aead"]["key"] for s in _pairs.derive(hosts(2), store=e1, master_secret=secret)["hosts"]["n1"]["states"]}
    k2 = {s["spi"]: s["aead"]["key"] for s in _pairs.derive(hosts(2), store=e2, master_secret=secret)["hosts"]["n1"]["states"]}
    assert set(k1) == set(k2) and not set(k1.values()) & set(k2.values())
    # a store with nonces is version 3: earlier versions of the collection refuse it rather than
    # derive other keys from it
    assert yaml.safe_load(first.read_text()[len(_pairs.STORE_HEADER):])["ipsec_offload_keystore"] == 3
    # reading a store is deterministic: the same store gives the same keys on every run
    assert k1 == {s["spi"]: s["aead"]["key"] for s in _pairs.derive(hosts(2), store=stored(first), master_secret=secret)["hosts"]["n1"]["states"]}


def test_hkdf_entries_without_nonce_keep_their_keys():
    """Stores written before the nonce: their entries have none and keep the keys they had."""
    secret = "m" * 40
    doc = {"ipsec_offload_keystore": 2, "pairs": {
        "n1": {"n2": {"spi": "0x%08x" % 0x1234, "reqid": "0x51c00001", "installed": True}},
        "n2": {"n1": {"spi": "0x%08x" % 0x1235, "reqid": "0x51c00002", "installed": True}}}}
    store = _pairs.parse_store(doc)
    assert all("nonce" not in e for e in store.values())
    dd = _pairs.derive(hosts(2), store=store, master_secret=secret)
    got = {s["spi"]: s["aead"]["key"].removeprefix("0x") for s in dd["hosts"]["n1"]["states"]}
    bits = len(got[0x1234]) * 4 - 32
    assert got[0x1234] == _pairs.derive_key(secret.encode(), "n1", "n2", 0x1234, 1, bits)
    # the original construction: HKDF-SHA256 without salt, info sender, receiver, SPI, generation
    info = b"\x00".join([b"ipsec_offload.mlx5 sa-key v1", b"n1", b"n2", b"00001234", b"1"])
    assert got[0x1234] == _pairs.hkdf_sha256(secret.encode(), info, bits // 8 + 4).hex()
    # a malformed nonce is refused naming the entry
    doc["pairs"]["n1"]["n2"]["nonce"] = "xyz"
    with pytest.raises(_pairs.DeriveError, match=r"key store entry n1->n2: nonce must be 32 lower-case hex digits"):
        _pairs.parse_store(doc)


def test_bad_stores_and_secrets_are_refused_naming_the_pair(pair):
    path, d = pair
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])      # both lost -> generation 2
    doc = yaml.safe_load(path.read_text())
    e = doc["pairs"]["n1"]["n2"]
    # a generation going backwards
    bad = yaml.safe_load(path.read_text())
    bad["pairs"]["n1"]["n2"]["generation"] = 1
    with pytest.raises(_pairs.DeriveError, match=r"n1->n2: the current generation 1 is not newer than retired generation 1"):
        _pairs.parse_store(bad)
    # a used key marked unused: the retired key copied back
    retired_spi = e["retired"][0]["spi"]
    bad = yaml.safe_load(path.read_text())
    bad["pairs"]["n1"]["n2"]["spi"] = retired_spi
    bad["pairs"]["n1"]["n2"]["installed"] = False
    with pytest.raises(_pairs.DeriveError, match=r"n1->n2: the current SPI .* belongs to a retired SA instance"):
        _pairs.parse_store(bad)
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(AnsibleActionFail, match=r"n1->n2"):
        converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    # hkdf: short secret, and a hand-given key cannot mix with it
    with pytest.raises(_pairs.DeriveError, match=r"ipsec_master_secret: is 10 bytes long; it must be at least 32"):
        _pairs.derive(hosts(2), master_secret="0123456789")
    hv = hosts(2)
    hv["n1"]["ipsec_overrides"] = {"n2": {"key": "0x" + "ab" * 36}}
    with pytest.raises(_pairs.DeriveError, match=r"host n1: ipsec_overrides\[n2\].key: ipsec_key_derivation is hkdf"):
        _pairs.derive(hv, master_secret="s" * 32)


def test_version_1_store_is_migrated_every_entry_installed(tmp_path):
    path = tmp_path / "ks" / "keys.yml"
    d = _pairs.derive(hosts(2), keys="none")
    run_action(path, d)
    doc = yaml.safe_load(path.read_text())
    doc["ipsec_offload_keystore"] = 1
    for dsts in doc["pairs"].values():
        for e in dsts.values():
            e.pop("installed")
    path.write_text(yaml.safe_dump(doc))
    e = stored(path)
    assert all(v["installed"] for v in e.values())
    r = converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])      # nothing on the hosts: all lost
    assert sorted(r["rotated"]) == ["n1->n2", "n2->n1"]
    assert yaml.safe_load(path.read_text())["ipsec_offload_keystore"] == 2


def test_esn_per_pair_both_ends_agree():
    hv = hosts(2)
    assert all(s["esn"] for s in _pairs.derive(hv, keys="optional")["hosts"]["n1"]["states"])
    for h in hv.values():
        h["ipsec_esn"] = False
    assert not any(s["esn"] for s in _pairs.derive(hv, keys="optional")["hosts"]["n1"]["states"])
    hv["n2"]["ipsec_esn"] = True
    with pytest.raises(_pairs.DeriveError, match=r"host n1: ipsec_esn: False, but peer n2 uses True"):
        _pairs.derive(hv, keys="optional")
    hv["n2"]["ipsec_esn"] = "no"
    with pytest.raises(_pairs.DeriveError, match=r"host n2: ipsec_esn: must be true or false"):
        _pairs.derive(hv, keys="optional")


def test_sas_found_on_the_hosts_are_marked_installed_new_ones_are_not(pair):
    # what site.yml's IPsec step gets: the SAs the lifecycle step found carry installed: true (the
    # state module then refuses to re-add one that vanishes before the step runs); new instances
    # (first install, rotated after a loss) do not
    path, d = pair
    r = converge(path, d, {"n1": [], "n2": []}, ["n1", "n2"])
    first = _pairs.derive(hosts(2), store=stored(path), lifecycle=r["lifecycle"])
    assert [s.get("installed") for h in ("n1", "n2") for s in first["hosts"][h]["states"]] == [None] * 4
    e = stored(path)
    r = converge(path, d, sa_ids(e, d, {"n1->n2": BOTH, "n2->n1": ("in",)}), ["n1", "n2"])   # n2->n1 out lost
    assert list(r["rotated"]) == ["n2->n1"]
    dd = _pairs.derive(hosts(2), store=stored(path), lifecycle=r["lifecycle"])
    mark = {(s["src"], s["direction"]): s.get("installed") for h in ("n1", "n2") for s in dd["hosts"][h]["states"]}
    n1, n2 = (p["src"] for p in sorted(d["pairs"], key=lambda p: p["name"]))
    assert mark == {(n1, "out"): True, (n1, "in"): True, (n2, "out"): None, (n2, "in"): None}
    # without the lifecycle step (render.yml, derive.yml) nothing is marked
    plain = _pairs.derive(hosts(2), store=stored(path), lifecycle={"check_mode": False})
    assert not any("installed" in s for h in ("n1", "n2") for s in plain["hosts"][h]["states"])
