# -*- coding: utf-8 -*-
"""Policy marks in the _xfrm model and the fail-closed guards of _guard.

Parse fixture: tests/unit/fixtures/xfrm/policy-marks-guards-real.txt, REAL `ip xfrm policy` output
captured in a scratch netns on the dev host (kernel 6.18.44-fc, iproute2 6.1.0; its header says what
it shows).  The real-kernel proof (EEXIST, drops, module scopes) is in
tests/unit/plugins/modules/test_xfrm_policy_guard_netns.py.
"""
from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard as G
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import plan
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError
from harness import fixture

RNG = X.OWNED_REQID_RANGE
SP_OPTIONS = _argspec.Options(X.sp_options())  # applied to each element before validate_sp, as the modules do
CAPTURE = fixture("xfrm/policy-marks-guards-real.txt")


def section(start, end="$ "):
    lines = CAPTURE.splitlines()
    i = lines.index(start) + 1
    j = next((n for n in range(i, len(lines)) if lines[n].startswith(end)), len(lines))
    return "\n".join(lines[i:j]) + "\n"


PLAIN = section("$ ip xfrm policy")
STATS = section("$ ip -s xfrm policy")
FINAL = section("$ ip xfrm policy list")


def sa_policy(**kw):
    d = dict(src="10.77.0.1/32", dst="10.77.0.2/32", dir="out", priority=100, action="allow",
             tmpl=dict(src="10.77.0.1", dst="10.77.0.2", proto="esp", reqid=0x51C00001, mode="transport",
                       level="required"),
             offload=dict(type="none"))
    d.update(kw)
    return d


def desired(item, state="replaced", field="config[0]"):
    d = X.validate_sp(field, SP_OPTIONS.apply(field, item), state, RNG)
    return d if state == "deleted" else X.complete_sp(d)


# ---- parsing real output -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [PLAIN, STATS], ids=["plain", "-s"])
def test_parse_marks_from_real_output(text):
    sps = X.parse_policies(text)
    assert [(s["src"], s["dir"], s["mark"]) for s in sps] == [
        ("10.78.0.0/24", "fwd", {"value": 0x10, "mask": 0xFFFFFFFF}),
        ("10.77.0.2/32", "in", {"value": 1, "mask": 1}),
        ("10.77.0.1/32", "out", {"value": 1, "mask": 1}),
        ("10.77.0.1/32", "out", {"value": 0, "mask": 1}),   # printed "mark 0/0x1"
        ("10.77.0.1/32", "out", None),
    ]
    for s in sps:
        assert s["extras"] == [], s  # a parsed mark is modelled, not an unknown extra
    guards = [s for s in sps if G.is_guard(s)]
    assert [(s["dst"], s["mark"]["value"]) for s in guards] == [("10.77.0.1/32", 1), ("10.77.0.2/32", 1),
                                                                ("10.77.0.2/32", 0)]
    assert (guards[1]["priority"], guards[1]["action"], guards[1]["offload"]) == (
        2147483392, "block", {"type": "none", "dev": None})
    # the selector dport and the template survive next to the mark line
    assert (sps[1]["proto"], sps[1]["dport"], sps[1]["tmpls"][0]["reqid"]) == (17, 4789, 0x51C00002)


def test_three_policies_one_selector_are_three_identities():
    kind = X.SPKind()
    out = [s for s in X.parse_policies(PLAIN) if s["src"] == "10.77.0.1/32"]
    assert len({kind.key(s) for s in out}) == 3
    # ... and the SA policy is the one whose key a markless desired policy has
    d = desired(sa_policy())
    sa = [s for s in out if kind.key(s) == kind.key(d)]
    assert len(sa) == 1 and sa[0]["action"] == "allow" and kind.same(sa[0], d)


def test_unparsable_mark_stays_an_extra():
    text = "src 10.0.0.1/32 dst 10.0.0.2/32 \n\tdir out priority 0 ptype main \n\tmark weird \n"
    sp = X.parse_policies(text)[0]
    assert sp["mark"] == "weird" and sp["extras"] == ["mark"]
    assert X.SPKind().differences(sp, sp) == ["extras"]


# ---- render / parse round trip -------------------------------------------------------------------

GUARD_LINES = [
    "xfrm policy add src 10.77.0.1/32 dst 10.77.0.2/32 dir out mark 0x0 mask 0x1 action block priority 4294967295 "
    "ptype main tmpl src 10.77.0.1 dst 10.77.0.2 proto esp reqid 0x51c00001 mode transport",
    "xfrm policy add src 10.77.0.1/32 dst 10.77.0.2/32 dir out mark 0x1 mask 0x1 action block priority 4294967295 "
    "ptype main tmpl src 10.77.0.1 dst 10.77.0.2 proto esp reqid 0x51c00001 mode transport",
]


def test_render_guards_exact_lines():
    kind = X.SPKind()
    ds = [desired(g, field="config[%d]" % i) for i, g in enumerate(G.guards_for([sa_policy()]))]
    assert [kind.render_add(d) for d in ds] == GUARD_LINES
    assert kind.render_update(ds[1]).startswith("xfrm policy update src 10.77.0.1/32 dst 10.77.0.2/32 dir out "
                                                "mark 0x1 mask 0x1 action block ")
    assert kind.render_delete(ds[0]) == ("xfrm policy delete src 10.77.0.1/32 dst 10.77.0.2/32 dir out "
                                         "mark 0x0 mask 0x1 ptype main")
    # no mark: the lines are exactly as before marks existed
    sa = desired(sa_policy())
    assert kind.render_add(sa) == ("xfrm policy add src 10.77.0.1/32 dst 10.77.0.2/32 dir out priority 100 "
                                   "ptype main tmpl src 10.77.0.1 dst 10.77.0.2 proto esp reqid 0x51c00001 "
                                   "mode transport")
    assert kind.render_delete(sa) == "xfrm policy delete src 10.77.0.1/32 dst 10.77.0.2/32 dir out ptype main"


def test_round_trip_parsed_guard_is_same_as_desired():
    kind = X.SPKind()
    parsed = [s for s in X.parse_policies(PLAIN) if s["src"] == "10.77.0.1/32" and s["mark"]]
    for p in parsed:
        want = desired(dict(sa_policy(), action="block", priority=2147483392,
                            mark={"value": p["mark"]["value"], "mask": "0x1"}))
        assert kind.key(p) == kind.key(want) and kind.same(p, want) and kind.identical(p, p)
        # public output -> config -> the same desired object
        pub = kind.public(p)
        assert pub["mark"] == {"value": "%#x" % p["mark"]["value"], "mask": "0x1"}
        cfg = {k: pub[k] for k in ("src", "dst", "dir", "priority", "action", "mark")}
        cfg["tmpl"] = {k: v for k, v in pub["tmpl"].items() if v is not None}
        cfg["offload"] = {"type": pub["offload"]["type"]}
        again = desired(cfg)
        assert kind.key(again) == kind.key(p) and kind.same(p, again)
        assert kind.describe(p).endswith(" dir out mark %#x/0x1" % p["mark"]["value"])


def test_public_and_describe_without_mark_unchanged():
    kind = X.SPKind()
    sa = [s for s in X.parse_policies(PLAIN) if s["mark"] is None][0]
    assert "mark" not in kind.public(sa)
    assert kind.describe(sa) == "SP src 10.77.0.1/32 dst 10.77.0.2/32 dir out"
    g = [s for s in X.parse_policies(PLAIN) if s["mark"] == {"value": 0, "mask": 1}][0]
    assert kind.describe(g) == "SP src 10.77.0.1/32 dst 10.77.0.2/32 dir out mark 0x0/0x1"


def test_mark_0_0_is_no_mark_and_default_mask():
    kind = X.SPKind()
    assert desired(sa_policy(mark={"value": 0, "mask": 0}))["mark"] is None
    assert desired(sa_policy(mark={"value": "0x10"}))["mark"] == {"value": 0x10, "mask": 0xFFFFFFFF}
    fwd = X.parse_policies(PLAIN)[0]
    want = desired(dict(src="10.78.0.0/24", dst="10.78.1.0/24", dir="fwd", mark={"value": 16},
                        tmpl={"reqid": "0x51c00009"}))
    assert kind.key(fwd) == kind.key(want)


BAD_MARK = [
    ("not a dict", "0x1", "config[3].mark", "must be of type dict"),
    ("value missing", {"mask": 1}, "config[3].mark.value", "is required"),
    ("unknown key", {"value": 1, "mask": 1, "bits": 2}, "config[3].mark", "unknown option"),
    ("too big", {"value": 1, "mask": 0x100000000}, "config[3].mark.mask", "out of range"),
    ("negative", {"value": -1}, "config[3].mark.value", "out of range"),
    ("bool", {"value": True}, "config[3].mark.value", "boolean"),
    ("unicode digits", {"value": "\u0661"}, "config[3].mark.value", "not an integer"),
    ("underscore", {"value": "1_0"}, "config[3].mark.value", "not an integer"),
    ("space", {"value": " 1"}, "config[3].mark.value", "not an integer"),
    ("newline", {"value": "1\n"}, "config[3].mark.value", "not an integer"),
    ("injection", {"value": "1 action allow"}, "config[3].mark.value", "not an integer"),
    ("hex too long", {"value": "0x100000000"}, "config[3].mark.value", "not an integer"),
    ("bits outside mask", {"value": 3, "mask": 1}, "config[3].mark.value", "bits outside mask"),
    ("float", {"value": 1.0}, "config[3].mark.value", "not an integer"),
]


@pytest.mark.parametrize("name,mark,field,text", BAD_MARK, ids=[c[0] for c in BAD_MARK])
@pytest.mark.parametrize("state", ["replaced", "deleted"])
def test_bad_mark_names_field(name, mark, field, text, state):
    with pytest.raises(InputError) as exc:
        X.validate_sp("config[3]", SP_OPTIONS.apply("config[3]", sa_policy(mark=mark)), state, RNG)
    assert exc.value.field == field and text in str(exc.value)


def test_good_mark_spellings():
    for v in (1, "1", "0x1", "0X1", "0x00000001"):
        assert desired(sa_policy(mark={"value": v, "mask": "0xffffffff"}))["mark"] == {"value": 1, "mask": 0xFFFFFFFF}
    assert desired(sa_policy(mark={"value": "4294967295"}))["mark"]["value"] == 0xFFFFFFFF


def test_plan_overridden_keeps_guards_next_to_sa_policy():
    kind = X.SPKind()
    current = X.parse_policies(FINAL)  # SA policy out + guard 0/1 out + guard 1/1 in (udp 4789)
    want = [desired(dict(sa_policy(), priority=100))]
    want += [desired(dict(g, priority=2147483392), field="config[%d]" % (i + 1))
             for i, g in enumerate(G.guards_for([sa_policy()]))]
    p = plan(kind, "overridden", want, current)
    assert [kind.describe(d) for d in p.add] == ["SP src 10.77.0.1/32 dst 10.77.0.2/32 dir out mark 0x1/0x1"]
    assert len(p.unchanged) == 2 and not p.replace
    assert [kind.describe(c) for c in p.delete] == [
        "SP src 10.77.0.2/32 dst 10.77.0.1/32 proto 17 dport 4789 dir in mark 0x1/0x1"]


def test_scoped_kinds():
    current = X.parse_policies(FINAL)
    pol, gua = G.scoped_kind("policies"), G.scoped_kind("guards")
    assert [s["action"] for s in current if pol.owned(s)] == ["allow"]
    assert [s["mark"] for s in current if gua.owned(s)] == [{"value": 1, "mask": 1}, {"value": 0, "mask": 1}]
    p = plan(pol, "deleted", [], current)
    assert [c["action"] for c in p.delete] == ["allow"]
    p = plan(gua, "deleted", [], current)
    assert len(p.delete) == 2 and all(G.is_guard(c) for c in p.delete)
    # the class keeps its scope when _xfrm_run re-creates the kind with another owned range
    again = type(gua)((1, 2))
    assert again.scope == "guards" and not any(again.owned(s) for s in current)
    with pytest.raises(ValueError):
        G.scoped_kind("some")


def test_is_guard_needs_ownership_block_and_mask():
    g = X.parse_policies(FINAL)[1]
    assert G.is_guard(g)
    assert not G.is_guard(g, (1, 2))                          # reqid outside the owned range
    assert not G.is_guard(dict(g, action="allow"))
    assert not G.is_guard(dict(g, mark={"value": 1, "mask": 3}))
    assert not G.is_guard(dict(g, mark=None))
    assert not G.is_guard(dict(g, tmpls=[]))                  # no template: never ours
    assert G.is_guard_mark({"value": "0x0", "mask": "1"}) is False  # config strings are not parsed here
    assert G.is_guard_mark({"value": 0, "mask": 1})


# ---- guards_for ------------------------------------------------------------------------------------

def test_guards_for_shape():
    sa = sa_policy(proto="udp", dport=4789, offload={"type": "packet", "dev": "p0"})
    g0, g1 = G.guards_for([sa])
    assert g0 == {"src": "10.77.0.1/32", "dst": "10.77.0.2/32", "proto": "udp", "dport": 4789, "dir": "out",
                  "priority": G.GUARD_PRIORITY, "action": "block", "mark": {"value": 0, "mask": 1},
                  "tmpl": sa["tmpl"], "offload": {"type": "none"}}
    assert g1 == dict(g0, mark={"value": 1, "mask": 1})
    assert g0["tmpl"] is not sa["tmpl"]  # copies: the caller's dicts are never shared
    assert (G.GUARD_PRIORITY, G.GUARD_MARK_BIT) == (0xFFFFFFFF, 0x1)


def test_guards_for_order_dedup_and_skips():
    out = sa_policy()
    inn = sa_policy(src="10.77.0.2/32", dst="10.77.0.1/32", dir="in",
                    tmpl=dict(out["tmpl"], src="10.77.0.2", dst="10.77.0.1", reqid=0x51C00002))
    fwd = dict(inn, dir="fwd")
    same_sel_other_proto_spelling = sa_policy(proto="17", dport=1)
    udp = sa_policy(proto="udp", dport=1)
    block = sa_policy(action="block")
    guards = G.guards_for([out, inn, fwd, out, udp, same_sel_other_proto_spelling, block])
    assert [(g["dir"], g["src"], g.get("proto"), g["mark"]["value"]) for g in guards] == [
        ("out", "10.77.0.1/32", None, 0), ("out", "10.77.0.1/32", None, 1),
        ("in", "10.77.0.2/32", None, 0), ("in", "10.77.0.2/32", None, 1),
        ("fwd", "10.77.0.2/32", None, 0), ("fwd", "10.77.0.2/32", None, 1),
        ("out", "10.77.0.1/32", "udp", 0), ("out", "10.77.0.1/32", "udp", 1),
    ]
    assert G.guards_for(guards) == []      # guards (block) get no guards
    assert G.guards_for([]) == [] and G.guards_for(None) == []


def test_guards_for_output_is_valid_module_config():
    guards = G.guards_for([sa_policy(), sa_policy(dir="in", src="10.77.0.2/32", dst="10.77.0.1/32")])
    kind = X.SPKind()
    ds = [desired(g, field="config[%d]" % i) for i, g in enumerate(guards)]
    assert len({kind.key(d) for d in ds}) == 4
    assert all(G.is_guard(d) for d in ds)
    assert all(d["priority"] == 0xFFFFFFFF and d["offload"] == {"type": "none", "dev": None} for d in ds)


@pytest.mark.parametrize("sp,text", [
    (sa_policy(tmpl=None), "has no template reqid"),
    (sa_policy(tmpl={"src": "10.77.0.1"}), "has no template reqid"),
    (sa_policy(mark={"value": 1}), "has a mark"),
    (sa_policy(priority=0xFFFFFFFF), "is not better than the guards'"),
    (sa_policy(priority="0xffffffff"), "is not better than the guards'"),
    (sa_policy(priority="high"), "is not an integer"),
    (sa_policy(dir=None), "dir is required"),
    ("not a dict", "must be a dictionary"),
])
def test_guards_for_refuses(sp, text):
    with pytest.raises(ValueError) as exc:
        G.guards_for([sa_policy(), sp])
    assert "policies[1]" in str(exc.value) and text in str(exc.value)


def test_guards_lose_to_every_priority_the_derivation_allows():
    """The pair derivation allows ipsec_policy_priority 0..0xfffffffe (mlx5 refuses 0xffffffff for an
    offloaded policy): the guards' priority is worse than all of them (lower wins)."""
    guards = G.guards_for([sa_policy(priority=0xFFFFFFFE), sa_policy(dir="in", priority=0)])
    assert len(guards) == 4 and all(g["priority"] == 0xFFFFFFFF for g in guards)


# ---- deleting a mark-value-0 policy (iproute2 drops that mark on delete) --------------------------

def test_ip_cannot_delete_only_value_zero_marks():
    assert G.ip_cannot_delete({"mark": {"value": 0, "mask": 1}})
    assert not G.ip_cannot_delete({"mark": {"value": 1, "mask": 1}})
    assert not G.ip_cannot_delete({"mark": None}) and not G.ip_cannot_delete({})


def test_delpolicy_message_layout():
    import struct
    msg = G.delpolicy_message({"src": "10.1.0.0/24", "dst": "10.2.0.0/16", "proto": "udp", "dport": 4789,
                               "dir": "in", "mark": {"value": 0, "mask": 1}}, seq=7)
    assert len(msg) == 16 + 64 + 12
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, flags, seq, pid) == (92, 0x14, 0x5, 7, 0)
    sel = msg[16:16 + 56]
    assert sel[0:4] == bytes([10, 2, 0, 0]) and sel[16:20] == bytes([10, 1, 0, 0])
    assert struct.unpack_from("!HHHH", sel, 32) == (4789, 0xFFFF, 0, 0)
    assert struct.unpack_from("=HBBB", sel, 40) == (2, 16, 24, 17)
    assert struct.unpack_from("=IB", msg, 16 + 56) == (0, 0)          # index 0, dir in
    assert struct.unpack_from("=HHII", msg, 80) == (12, 21, 0, 1)     # XFRMA_MARK 0/0x1


def test_split_delete_line_round_trip():
    kind = X.SPKind()
    for g in G.guards_for([sa_policy(proto="tcp", sport=1, dport=2)]):
        d = desired(g)
        back = G.split_delete_line(kind.render_delete(d))
        assert kind.key(dict(back, ptype="main", if_id=None)) == kind.key(d)
    assert G.split_delete_line("xfrm policy add src 1.1.1.1/32 dst 2.2.2.2/32 dir out") is None
