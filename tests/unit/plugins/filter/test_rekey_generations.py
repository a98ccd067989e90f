# -*- coding: utf-8 -*-
"""Key rotation in the pair derivation (pure): generations in the key store, what every stage
emits per host (make-before-break), the rekey steps, and the store document round trip."""

from __future__ import annotations

import itertools

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs


def inventory(n=2):
    names = ["lab%d" % i for i in range(1, n + 1)]
    return {h: {"ipsec_local_ip": "192.168.100.%d" % i, "ipsec_peers": [x for x in names if x != h],
                "ipsec_offload": "packet", "ipsec_dev": "p0"} for i, h in enumerate(names, 1)}


def counter_keys():
    """Deterministic distinct keys (not secrets: test only)."""
    c = itertools.count(1)
    return lambda bits: ("%02x" % next(c)) * (bits // 8 + _pairs.SALT_BYTES)


def store_for(hv, new_key=None):
    """The store after a first derive.yml: keys and pins for every pair."""
    d = _pairs.derive(hv, keys="none")
    links = _pairs.links_from_summary(d["pairs"])
    _pairs.allocate(links, _pairs.DEFAULT_REQID_RANGE, {})
    entries, dummy = _pairs.update_store({}, links, new_key=new_key or counter_keys())
    return entries


def rotate(hv, entries, selectors, new_key):
    """What the ipsec_keystore action does with rotate=selectors."""
    d = _pairs.derive(hv, keys="none")
    links = _pairs.links_from_summary(d["pairs"])
    _pairs.allocate(links, _pairs.DEFAULT_REQID_RANGE, _pairs.pins_of(entries))
    _pairs.attach_keys(links, entries, require=False)
    entries, dummy = _pairs.update_store(entries, links)
    chosen = _pairs.select_pairs(selectors, [lk.name for lk in links])
    return _pairs.start_rotation(entries, links, chosen, new_key=new_key)


def roundtrip(entries):
    return _pairs.parse_store(_pairs.store_document(entries))


def spis(states):
    return [(s["src"], s["dst"], s["direction"], s["spi"]) for s in states]


@pytest.fixture
def started():
    hv = inventory()
    keys = counter_keys()
    before = store_for(hv, keys)
    after, report = rotate(hv, before, ["lab1->lab2"], keys)
    return hv, before, after, report


def test_rotate_creates_new_generation_keeps_reqid(started):
    hv, before, after, report = started
    assert report == {"started": ["lab1->lab2"], "continuing": []}
    old, new = before[("lab1", "lab2")], after[("lab1", "lab2")]
    assert new["reqid"] == old["reqid"]
    assert new["spi"] != old["spi"] and new["key"] != old["key"]
    assert new["generation"] == 2 and new["stage"] == "inbound"
    assert new["previous"] == {"key": old["key"], "spi": old["spi"], "generation": 1}
    # the other direction is untouched
    assert after[("lab2", "lab1")] == before[("lab2", "lab1")]
    # the document round trip keeps everything
    assert roundtrip(after) == after
    doc = _pairs.store_document(after)
    e = doc["pairs"]["lab1"]["lab2"]
    assert e["rotation"] == "inbound" and e["generation"] == 2 and e["previous"]["generation"] == 1
    assert e["previous"]["spi"] == "0x%08x" % old["spi"]


def test_rotate_again_continues_no_third_key(started):
    hv, before, after, report = started
    again, rep2 = rotate(hv, after, ["lab1->lab2"], counter_keys())
    assert rep2 == {"started": [], "continuing": ["lab1->lab2"]}
    assert again == after
    # also after a later stage
    adv, dummy = _pairs.advance_rotation(after, "outbound")
    again, rep3 = rotate(hv, adv, "lab1<->lab2", counter_keys())
    assert rep3["continuing"] == ["lab1->lab2"] and rep3["started"] == ["lab2->lab1"]
    assert again[("lab1", "lab2")] == adv[("lab1", "lab2")]


@pytest.mark.parametrize("sel, want", [
    (None, {"lab1->lab2", "lab2->lab1", "lab1->lab3", "lab3->lab1", "lab2->lab3", "lab3->lab2"}),
    (["lab1->lab2"], {"lab1->lab2"}),
    (["lab1<->lab2"], {"lab1->lab2", "lab2->lab1"}),
    (["lab3"], {"lab1->lab3", "lab3->lab1", "lab2->lab3", "lab3->lab2"}),
    ("lab1->lab2,lab3->lab1", {"lab1->lab2", "lab3->lab1"}),
])
def test_select_pairs(sel, want):
    names = ["%s->%s" % (a, b) for a in ("lab1", "lab2", "lab3") for b in ("lab1", "lab2", "lab3") if a != b]
    assert _pairs.select_pairs(sel, names) == want


@pytest.mark.parametrize("sel, msg", [
    (["lab1->lab9"], "rotate[0]: lab1->lab9 matches no IPsec pair"),
    (["ok", 5], "rotate[1]: must be a string"),
    ({"a": 1}, "rotate: must be a list"),
])
def test_select_pairs_refused(sel, msg):
    with pytest.raises(_pairs.DeriveError) as e:
        _pairs.select_pairs(sel, ["lab1->lab2", "ok->x"] if sel != ["ok", 5] else ["ok->x"])
    assert msg in str(e.value)


def test_new_spi_never_in_use_towards_destination():
    """Force the hashed candidates of generation 2 onto SPIs already used towards lab1: the
    rotation must skip every one of them (current and previous)."""
    hv = inventory(3)
    entries = store_for(hv)
    lk = _pairs.Link("lab2", "lab1")
    cands = [v for v, dummy in itertools.islice(_pairs._hash_candidates("spi-generation-2", "lab2", "lab1", *_pairs.SPI_RANGE), 3)]
    # occupy the first two candidates: one as lab3->lab1's current SPI, one as its previous SPI
    entries[("lab3", "lab1")]["spi"] = cands[0]
    entries[("lab3", "lab1")]["previous"] = {"key": "ab" * 36, "spi": cands[1], "generation": 1}
    entries[("lab3", "lab1")]["stage"] = "inbound"
    v = _pairs._rotation_spi(entries, [], lk, 2)
    assert v == cands[2]
    assert v not in {e["spi"] for (s, d), e in entries.items() if d == "lab1"}


def test_many_rotations_never_reuse_a_live_spi_and_keys_distinct():
    hv = inventory(3)
    keys = counter_keys()
    entries = store_for(hv, keys)
    for rnd in range(5):
        entries, rep = rotate(hv, entries, None, keys)
        assert len(rep["started"]) == 6
        for dst in ("lab1", "lab2", "lab3"):
            live = []
            for (s, d), e in entries.items():
                if d == dst:
                    live += [e["spi"], e["previous"]["spi"]]
            assert len(live) == len(set(live)) == 4
        allkeys = [e["key"][:-8] for e in entries.values()] + [e["previous"]["key"][:-8] for e in entries.values()]
        assert len(allkeys) == len(set(allkeys)) == 12
        # derivation with both generations accepts it (distinct keys, valid allocation)
        d = _pairs.derive(hv, store=roundtrip(entries))
        assert set(d["rotations"].values()) == {"inbound"}
        for stage in ("outbound", "retire", "finished"):
            entries, dummy = _pairs.advance_rotation(entries, stage)
        assert _pairs.rotations_of(entries) == {}
        assert all(e["generation"] == rnd + 2 for e in entries.values())


# what each stage emits, on the sender (lab1, out) and the receiver (lab2, in) of lab1->lab2
STAGES = [
    ("inbound", ["old"], ["old", "new"]),
    ("outbound", ["old", "new"], ["old", "new"]),
    ("retire", ["new"], ["old", "new"]),
    ("finished", ["new"], ["new"]),
]


@pytest.mark.parametrize("stage, out_gens, in_gens", STAGES)
def test_derive_emits_per_stage(started, stage, out_gens, in_gens):
    hv, before, after, report = started
    entries = after
    for s in ("outbound", "retire", "finished")[:["inbound", "outbound", "retire", "finished"].index(stage)]:
        entries, dummy = _pairs.advance_rotation(entries, s)
    d = _pairs.derive(hv, store=roundtrip(entries))
    old, new = before[("lab1", "lab2")], after[("lab1", "lab2")]
    gen = {"old": old, "new": new}
    a, b = "192.168.100.1", "192.168.100.2"
    l1 = [s for s in d["hosts"]["lab1"]["states"] if s["dst"] == b]
    l2 = [s for s in d["hosts"]["lab2"]["states"] if s["dst"] == b]
    assert spis(l1) == [(a, b, "out", gen[g]["spi"]) for g in out_gens]
    assert spis(l2) == [(a, b, "in", gen[g]["spi"]) for g in in_gens]
    for s in l1 + l2:
        g = new if s["spi"] == new["spi"] else old
        assert s["aead"]["key"] == "0x" + g["key"] and s["reqid"] == old["reqid"]
        assert s["offload"] == {"type": "packet", "dev": "p0"}
    # mirrored: every SA lab1 sends with exists on lab2 with the same SPI, key and reqid
    for s in l1:
        twin = [x for x in l2 if x["spi"] == s["spi"]]
        assert len(twin) == 1 and twin[0]["aead"] == s["aead"] and twin[0]["reqid"] == s["reqid"]
    # the reverse direction is not in rotation: one SA each
    assert len([s for s in d["hosts"]["lab1"]["states"] if s["dst"] == a]) == 1
    # policies never change
    base = _pairs.derive(hv, store=roundtrip(before))
    assert d["hosts"]["lab1"]["policies"] == base["hosts"]["lab1"]["policies"]
    assert d["hosts"]["lab2"]["policies"] == base["hosts"]["lab2"]["policies"]
    pair = [p for p in d["pairs"] if p["name"] == "lab1->lab2"][0]
    assert pair["rotation"] == (None if stage == "finished" else stage)
    assert pair["generation"] == 2
    assert pair["previous_spi_hex"] == (None if stage == "finished" else "0x%08x" % old["spi"])


def test_rekey_steps(started):
    hv, before, after, report = started
    d = _pairs.derive(hv, store=roundtrip(after))
    old, new = before[("lab1", "lab2")], after[("lab1", "lab2")]
    a, b = "192.168.100.1", "192.168.100.2"
    ident = {"src": a, "dst": b, "spi": old["spi"]}
    r1, r2 = d["rekey"]["lab1"], d["rekey"]["lab2"]
    assert r1["add_in"] == [] and r1["del_in"] == []
    assert spis(r1["add_out"]) == [(a, b, "out", new["spi"])] and r1["del_out"] == [ident]
    assert spis(r2["add_in"]) == [(a, b, "in", new["spi"])] and r2["del_in"] == [ident]
    assert r2["add_out"] == [] and r2["del_out"] == []
    assert r1["add_out"][0]["aead"]["key"] == "0x" + new["key"] == r2["add_in"][0]["aead"]["key"]
    assert r2["add_in"][0]["replay_window"] == _pairs.REPLAY_WINDOW
    assert d["rotations"] == {"lab1->lab2": "inbound"}
    # the steps do not depend on the stage (so a re-run at any stage resumes)
    adv, dummy = _pairs.advance_rotation(after, "outbound")
    adv, dummy = _pairs.advance_rotation(adv, "retire")
    assert _pairs.derive(hv, store=roundtrip(adv))["rekey"] == d["rekey"]
    # and are empty once finished
    fin, dummy = _pairs.advance_rotation(adv, "finished")
    assert all(v == {"add_in": [], "add_out": [], "del_out": [], "del_in": []}
               for v in _pairs.derive(hv, store=roundtrip(fin))["rekey"].values())


def test_advance_is_monotonic_and_stepwise(started):
    hv, before, after, report = started
    with pytest.raises(_pairs.DeriveError) as e:
        _pairs.advance_rotation(after, "retire")
    assert "at stage inbound; it cannot skip to retire" in str(e.value)
    adv, rep = _pairs.advance_rotation(after, "outbound")
    assert rep == {"advanced": ["lab1->lab2"], "finished": []}
    same, rep = _pairs.advance_rotation(adv, "outbound")
    assert same == adv and rep == {"advanced": [], "finished": []}
    adv, dummy = _pairs.advance_rotation(adv, "retire")
    back, rep = _pairs.advance_rotation(adv, "outbound")      # never backwards
    assert back == adv and rep["advanced"] == []
    fin, rep = _pairs.advance_rotation(adv, "finished")
    assert rep == {"advanced": [], "finished": ["lab1->lab2"]}
    e = fin[("lab1", "lab2")]
    assert "previous" not in e and "stage" not in e and e["generation"] == 2
    assert "previous" not in _pairs.store_document(fin)["pairs"]["lab1"]["lab2"]
    with pytest.raises(_pairs.DeriveError, match="rotation_stage"):
        _pairs.advance_rotation(fin, "inbound")


def test_allocation_keeps_previous_spi_reserved(started):
    """A new pair towards lab2 must not get the previous SPI of lab1->lab2 while it is alive."""
    hv, before, after, report = started
    prev = after[("lab1", "lab2")]["previous"]["spi"]
    hv["lab3"] = {"ipsec_local_ip": "192.168.100.3", "ipsec_peers": ["lab2"], "ipsec_offload": "none",
                  "ipsec_overrides": {"lab2": {"spi": prev}}}
    hv["lab2"]["ipsec_peers"] = ["lab1", "lab3"]
    with pytest.raises(_pairs.DeriveError) as e:
        _pairs.derive(hv, store=roundtrip(after), keys="optional")
    assert "is used by an earlier generation of lab1->lab2" in str(e.value)
    # hashed allocation simply avoids it
    del hv["lab3"]["ipsec_overrides"]
    links = _pairs.build_links(*_pairs.read_inventory(hv)[:2])
    pins = _pairs.pins_of(after)
    assert pins[("lab1", "lab2")]["previous_spi"] == prev
    _pairs.allocate(links, _pairs.DEFAULT_REQID_RANGE, pins)
    assert all(lk.spi != prev for lk in links if lk.dst == "lab2")


def test_rotation_refused_for_inventory_keys_and_missing_keys():
    hv = inventory()
    hv["lab1"]["ipsec_overrides"] = {"lab2": {"key": "0x" + "12" * 36}}
    entries = store_for(hv)
    with pytest.raises(_pairs.DeriveError) as e:
        rotate(hv, entries, ["lab1->lab2"], counter_keys())
    assert "host lab1: ipsec_overrides[lab2].key: the key of lab1->lab2 comes from the inventory" in str(e.value)
    assert "12" * 36 not in str(e.value)
    links = [_pairs.Link("lab2", "lab1")]
    links[0].spi, links[0].spi_source = 0x2000, "hash"
    with pytest.raises(_pairs.DeriveError) as e:
        _pairs.start_rotation({}, links, {"lab2->lab1"}, new_key=counter_keys())
    assert "key store entry lab2->lab1: no key yet" in str(e.value)


@pytest.mark.parametrize("entry, msg", [
    ({"rotation": "inbound"}, "a rotation needs previous"),
    ({"rotation": "sideways", "previous": {"key": "0x" + "cd" * 36, "spi": "0x1000"}}, "rotation must be one of"),
    ({"rotation": "inbound", "generation": 2, "previous": {"key": "0x" + "cd" * 36, "spi": "0x2000"}},
     "previous spi equals the current"),
    ({"rotation": "inbound", "previous": {"key": "0x" + "cd" * 36, "spi": "0x3000"}},
     "the previous generation 1 is not older than the current one 1"),
    ({"rotation": "inbound", "previous": {"key": "0xzz", "spi": "0x1000"}}, "previous key must be a hex string"),
    ({"generation": 0}, "generation 0x0 is out of range"),
])
def test_parse_store_rotation_refused(entry, msg):
    e = dict({"key": "0x" + "ab" * 36, "spi": "0x2000", "reqid": "0x51c00001"}, **entry)
    with pytest.raises(_pairs.DeriveError) as err:
        _pairs.parse_store({"ipsec_offload_keystore": 1, "pairs": {"a": {"b": e}}})
    assert "key store entry a->b: " in str(err.value) and msg in str(err.value)
    assert "cd" * 36 not in str(err.value) and "ab" * 36 not in str(err.value)


def test_old_store_without_generations_reads_as_before():
    doc = {"ipsec_offload_keystore": 1, "pairs": {"a": {"b": {"key": "0x" + "ab" * 36, "spi": "0x00002000", "reqid": "0x51c00001"}}}}
    # version 1 stores, written before the SA lifecycle: every entry counts as installed
    assert _pairs.parse_store(doc) == {("a", "b"): {"key": "ab" * 36, "spi": 0x2000, "reqid": 0x51c00001,
                                                    "generation": 1, "installed": True, "retired": []}}
    # written back as version 2, the migration made explicit
    v2 = {"ipsec_offload_keystore": 2, "pairs": {"a": {"b": dict(doc["pairs"]["a"]["b"], installed=True)}}}
    assert _pairs.store_document(_pairs.parse_store(doc)) == v2
