# -*- coding: utf-8 -*-
"""The per-host slices of the derivation (issue 18): each host's JSON text holds exactly what the
nested derivation gives that host (SAs with keys, policies, guards, peers, namespace, its rekey
and heal steps, the pairs it is part of), in every rotation stage, with held and fresh pairs,
in hkdf mode, and through the filter."""

from __future__ import annotations

import itertools
import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

SECRET = "slice-test-master-secret-0123456789abcdef"


def inventory(n=4):
    names = ["n%d" % i for i in range(1, n + 1)]
    hv = {h: {"ipsec_local_ip": "10.9.0.%d" % i, "ipsec_meshes": ["m"], "ipsec_offload": "packet",
              "ipsec_dev": "p0", "ipsec_namespace": "ns%d" % i if i % 2 else ""}
          for i, h in enumerate(names, 1)}
    hv["n1"]["ipsec_fail_closed"] = False   # one host without guards
    return hv, {"all": names, "m": names}


def counter_keys():
    c = itertools.count(1)
    return lambda bits: ("%02x" % next(c)) * (bits // 8 + _pairs.SALT_BYTES)


def first_store(hv, groups):
    d = _pairs.derive(hv, groups=groups, keys="none")
    links = _pairs.links_from_summary(d["pairs"])
    _pairs.allocate(links, _pairs.DEFAULT_REQID_RANGE, {})
    entries, dummy = _pairs.update_store({}, links, new_key=counter_keys())
    return entries


def rotated_store(hv, groups, entries, names, stage):
    d = _pairs.derive(hv, groups=groups, keys="none")
    links = _pairs.links_from_summary(d["pairs"])
    _pairs.allocate(links, _pairs.DEFAULT_REQID_RANGE, _pairs.pins_of(entries))
    _pairs.attach_keys(links, entries, require=False)
    entries, dummy = _pairs.update_store(entries, links)
    entries, dummy = _pairs.start_rotation(entries, links, _pairs.select_pairs(names, [lk.name for lk in links]),
                                           new_key=counter_keys())
    if stage != "inbound":
        for step in ("outbound", "retire")[:("outbound", "retire").index(stage) + 1]:
            entries, dummy = _pairs.advance_rotation(entries, step)
    return entries


def assert_slices_match(nested, sliced):
    assert sliced["reqid_range"] == nested["reqid_range"]
    assert sliced["count"] == len(nested["pairs"])
    assert sliced["host_names"] == sorted({p["src_host"] for p in nested["pairs"]} | {p["dst_host"] for p in nested["pairs"]})
    assert sliced["rotations"] == nested["rotations"]
    assert sliced["rotating"] == [p for p in nested["pairs"] if p["rotation"]]
    assert json.loads(sliced["pair_ends"]) == {p["name"]: [p["src_host"], p["dst_host"]] for p in nested["pairs"]}
    assert sorted(sliced["hosts"]) == sorted(nested["hosts"])
    for host, text in sliced["hosts"].items():
        assert isinstance(text, str)
        s = json.loads(text)
        for field in ("namespace", "peers", "states", "policies", "guards"):
            assert s[field] == nested["hosts"][host][field], (host, field)
        assert s["rekey"] == nested["rekey"][host]
        assert s["heal"] == nested["heal"][host]
        assert s["pairs"] == [p for p in nested["pairs"] if host in (p["src_host"], p["dst_host"])]


def test_slices_equal_the_nested_derivation_outside_a_rotation():
    hv, groups = inventory()
    store = _pairs.parse_store(_pairs.store_document(first_store(hv, groups)))
    nested = _pairs.derive(hv, groups=groups, store=store)
    sliced = _pairs.derive_slices(hv, groups=groups, store=store)
    assert_slices_match(nested, sliced)
    n1 = json.loads(sliced["hosts"]["n1"])
    assert n1["guards"] == [] and len(n1["states"]) == 6 and n1["namespace"] == "ns1"
    assert all(s["aead"]["key"] for s in n1["states"])
    assert sliced["rotating"] == [] and all(s["rekey"] == {"add_in": [], "add_out": [], "del_out": [], "del_in": []}
                                            for s in map(json.loads, sliced["hosts"].values()))


@pytest.mark.parametrize("stage", ["inbound", "outbound", "retire"])
def test_slices_equal_the_nested_derivation_in_every_rotation_stage(stage):
    hv, groups = inventory()
    entries = rotated_store(hv, groups, first_store(hv, groups), ["n1->n2", "n3<->n4"], stage)
    store = _pairs.parse_store(_pairs.store_document(entries))
    nested = _pairs.derive(hv, groups=groups, store=store)
    sliced = _pairs.derive_slices(hv, groups=groups, store=store)
    assert_slices_match(nested, sliced)
    assert sorted(sliced["rotations"]) == ["n1->n2", "n3->n4", "n4->n3"]
    n2 = json.loads(sliced["hosts"]["n2"])
    assert len(n2["rekey"]["add_in"]) == 1 and n2["rekey"]["add_out"] == [] and len(n2["rekey"]["del_in"]) == 1


def test_slices_with_held_and_fresh_pairs_and_hkdf():
    hv, groups = inventory(3)
    d = _pairs.derive(hv, groups=groups, keys="none")
    links = _pairs.links_from_summary(d["pairs"])
    _pairs.allocate(links, _pairs.DEFAULT_REQID_RANGE, {})
    entries, dummy = _pairs.update_store({}, links, key_mode="hkdf")
    store = _pairs.parse_store(_pairs.store_document(entries))
    life = {"held": {"n1->n2": {"out": [], "in": ["current"]}}, "fresh": ["n2->n3", "n3->n2"], "check_mode": False}
    nested = _pairs.derive(hv, groups=groups, store=store, master_secret=SECRET, lifecycle=life)
    sliced = _pairs.derive_slices(hv, groups=groups, store=store, master_secret=SECRET, lifecycle=life)
    assert_slices_match(nested, sliced)
    n1, n3 = json.loads(sliced["hosts"]["n1"]), json.loads(sliced["hosts"]["n3"])
    assert not any(s["dst"] == "10.9.0.2" for s in n1["states"])      # held: nothing re-added on the sender
    assert [s["src"] for s in n3["heal"]["add_in"]] == ["10.9.0.2"]
    assert all(s.get("installed") for s in n1["states"])              # not fresh: never installed again if lost


def test_filter_slices_option():
    hv, groups = inventory(3)
    doc = _pairs.store_document(first_store(hv, groups))
    out = ipsec_pairs(hv, groups=groups, keystore=doc, slices=True)
    assert set(out) == {"reqid_range", "host_names", "count", "rotations", "rotating", "pair_ends", "hosts"}
    assert out["count"] == 6 and all(isinstance(t, str) for t in out["hosts"].values())
    with pytest.raises(AnsibleFilterError, match="slices=true: only with keys='required'"):
        ipsec_pairs(hv, groups=groups, keystore=doc, slices=True, keys="optional")
