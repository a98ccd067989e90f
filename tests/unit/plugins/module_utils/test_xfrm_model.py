# -*- coding: utf-8 -*-
"""Validation, rendering, comparison and undo logic of _xfrm (table driven, exact batch lines)."""
from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _steps
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import plan
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError
from harness import fixture

RNG = X.OWNED_REQID_RANGE
K16 = "0x" + "ab" * 20
K32 = "0x" + "cd" * 36
NEW = {"offload_packet": True, "sa_dir": True}
OLD = {"offload_packet": True, "sa_dir": False}
IP61 = {"offload_packet": False, "sa_dir": False}
# validate_sa / validate_sp get each element as the modules hand it over: with the sub-options applied
SA_OPTIONS = _argspec.Options(X.sa_options())
SP_OPTIONS = _argspec.Options(X.sp_options())


_ABSENT = object()  # sa(name=_ABSENT): the option left out (not given as null)


def sa(**kw):
    item = dict(src="192.0.2.1", dst="192.0.2.2", spi="0x1000", reqid="0x51c00001", direction="out",
                aead=dict(key=K16), offload=dict(type="packet", dev="p0"))
    item.update(kw)
    return {k: v for k, v in item.items() if v is not _ABSENT}


def desired_sa(state="replaced", **kw):
    return X.check_sa(X.complete_sa(X.validate_sa("config[0]", SA_OPTIONS.apply("config[0]", sa(**kw)), state, RNG)))


RENDER_SA = [
    ("out packet, SA dir in effect", {}, NEW,
     "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "replay-window 0 flag esn aead rfc4106(gcm(aes)) <redacted> 128 offload packet dev p0 dir out"),
    ("out packet, old kernel or ip: window 1 with esn", {}, OLD,
     "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "replay-window 1 flag esn aead rfc4106(gcm(aes)) <redacted> 128 offload packet dev p0 dir out"),
    ("out software, no esn", dict(esn=False, offload=dict(type="none")), OLD,
     "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "replay-window 0 aead rfc4106(gcm(aes)) <redacted> 128"),
    ("out software with SA dir: top-level dir", dict(offload=dict(type="none")), NEW,
     "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "dir out replay-window 0 flag esn aead rfc4106(gcm(aes)) <redacted> 128"),
    ("in packet tunnel AES-256 window 128 selector", dict(
        src="10.0.0.2", dst="10.0.0.1", spi=4097, direction="in", mode="tunnel", replay_window=128,
        aead=dict(key=K32), sel=dict(src="10.1.0.0/24", dst="10.2.0.0/24", proto="udp", dport=4789)), NEW,
     "xfrm state add src 10.0.0.2 dst 10.0.0.1 proto esp spi 0x00001001 reqid 0x51c00001 mode tunnel "
     "replay-window 128 flag esn aead rfc4106(gcm(aes)) <redacted> 128 sel src 10.1.0.0/24 dst 10.2.0.0/24 "
     "proto 17 dport 4789 offload packet dev p0 dir in"),
    ("crypto with new ip", dict(offload=dict(type="crypto", dev="eth0")), NEW,
     "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "replay-window 0 flag esn aead rfc4106(gcm(aes)) <redacted> 128 offload crypto dev eth0 dir out"),
    ("crypto with iproute2 6.1 syntax", dict(offload=dict(type="crypto", dev="eth0")), IP61,
     "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "replay-window 1 flag esn aead rfc4106(gcm(aes)) <redacted> 128 offload dev eth0 dir out"),
    ("ipv6 in, icv 96 in software, no esn window 32", dict(
        src="2001:db8::2", dst="2001:db8::1", direction="in", esn=False, replay_window=32,
        aead=dict(key=K16, icv=96), offload=dict(type="none")), NEW,
     "xfrm state add src 2001:db8::2 dst 2001:db8::1 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
     "dir in replay-window 32 aead rfc4106(gcm(aes)) <redacted> 96"),
]


@pytest.mark.parametrize("name,kw,features,line", RENDER_SA, ids=[c[0] for c in RENDER_SA])
def test_render_sa_add(name, kw, features, line):
    assert X.SAKind().render_add(desired_sa(**kw), features) == line


def test_render_sa_keys_plain_and_reveal_and_delete():
    d = desired_sa()
    kind = X.SAKind()
    assert " aead rfc4106(gcm(aes)) 0x" + "ab" * 20 + " 128 " in kind.render_add(d, NEW, "plain")
    assert " aead rfc4106(gcm(aes)) 0x" + "AB" * 20 + " 128 " in kind.render_add(d, NEW, "reveal")
    assert kind.render_delete(d) == "xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000"


def test_render_parsed_sa_roundtrip():
    """A parsed SA (rollback re-add) renders from what the kernel printed, key included."""
    cur = X.parse_states(fixture("xfrm/lab-xfrm-state.txt"))[0]
    assert X.SAKind().render_add(cur, NEW, "plain") == (
        "xfrm state add src 192.168.100.2 dst 192.168.100.1 proto esp spi 0x00001001 reqid 0x00000002 "
        "mode transport replay-window 64 flag esn aead rfc4106(gcm(aes)) 0x" + "22" * 20 + " 128 "
        "sel src 192.168.100.2/32 dst 192.168.100.1/32")


BAD_SA = [
    ("spi 0", dict(spi=0), "config[0].spi", "not a valid SPI"),
    ("spi reserved", dict(spi="0xff"), "config[0].spi", "reserved by IANA"),
    ("spi too big", dict(spi=2 ** 32), "config[0].spi", "out of range"),
    ("spi garbage", dict(spi="12; reboot"), "config[0].spi", "not an integer"),
    ("reqid outside range", dict(reqid=5), "config[0].reqid", "outside the owned range"),
    ("key too short", dict(aead=dict(key="0x" + "ab" * 16)), "config[0].aead.key", "allowed: 20 or 36 bytes"),
    ("key AES-192", dict(aead=dict(key="0x" + "ab" * 28)), "config[0].aead.key", "28 bytes"),
    ("key not hex", dict(aead=dict(key="0xzz" + "ab" * 19)), "config[0].aead.key", "hex string"),
    ("key zero", dict(aead=dict(key="0x" + "00" * 20)), "config[0].aead.key", "all zeros"),
    ("key missing", dict(aead=dict()), "config[0].aead.key", "is required"),
    ("algo", dict(aead=dict(key=K16, name="cbc(aes)")), "config[0].aead.name", "must be one of"),
    ("icv", dict(aead=dict(key=K16, icv=32)), "config[0].aead.icv", "not one of"),
    ("icv 96 offloaded", dict(aead=dict(key=K16, icv=96)), "config[0].aead.icv", "128-bit ICV"),
    ("mix families", dict(dst="2001:db8::2"), "config[0]", "mixes IPv4 and IPv6"),
    ("bad address", dict(dst="192.0.2.300"), "config[0].dst", "not an IPv4 or IPv6 address"),
    ("direction missing", dict(direction=None), "config[0].direction", "must be one of in, out, got None"),
    ("direction left out", dict(direction=_ABSENT), "config[0].direction", "is required"),
    ("window on out", dict(replay_window=64), "config[0].replay_window", "inbound SAs only"),
    ("window packet in", dict(direction="in", replay_window=100), "config[0].replay_window", "32, 64, 128 or 256"),
    ("window esn 0", dict(direction="in", replay_window=0, offload=dict(type="none")), "config[0].replay_window",
     "at least 1 with esn"),
    ("window too big", dict(direction="in", replay_window=5000), "config[0].replay_window", "out of range"),
    ("dev injection", dict(offload=dict(type="packet", dev="eth0; reboot")), "config[0].offload.dev",
     "not a valid interface name"),
    ("dev with newline", dict(offload=dict(type="crypto", dev="eth0\nxfrm")), "config[0].offload.dev",
     "not a valid interface name"),
    ("dev missing", dict(offload=dict(type="packet")), "config[0].offload.dev", "is required"),
    ("offload missing on create", dict(offload=None), "config[0].offload.dev", "is required"),
    ("fallback on packet", dict(offload=dict(type="packet", dev="p0", fallback="allow")),
     "config[0].offload.fallback", "only applies to offload type crypto"),
    ("sel host bits", dict(sel=dict(src="10.0.0.5/24")), "config[0].sel.src", "host bits"),
    ("sel ports without proto", dict(sel=dict(dport=80)), "config[0].sel.dport", "need proto"),
    ("sel proto name", dict(sel=dict(proto="tcpx")), "config[0].sel.proto", "not a known protocol"),
    ("sel family", dict(sel=dict(src="2001:db8::/64")), "config[0].sel.src", "mixes IPv4 and IPv6"),
    ("unknown option", dict(colour="red"), "config[0]", "unknown option"),
]


@pytest.mark.parametrize("name,kw,field,text", BAD_SA, ids=[c[0] for c in BAD_SA])
def test_bad_sa_names_field(name, kw, field, text):
    with pytest.raises(InputError) as exc:
        desired_sa(**kw)
    assert exc.value.field == field
    assert text in str(exc.value)
    assert "ab" * 10 not in str(exc.value)  # never the key


def test_deleted_needs_identity_only():
    d = X.validate_sa("config[3]", {"dst": "192.0.2.2", "spi": 4096}, "deleted", RNG)
    assert X.SAKind().key(d) == ("192.0.2.2", 4096, "esp", None)


@pytest.mark.parametrize("value,expected", [
    (None, X.OWNED_REQID_RANGE), ([1, "0x10"], (1, 16)), (["0x51c00000", 1371602943], (0x51C00000, 0x51C0FFFF)),
])
def test_owned_range(value, expected):
    assert X.owned_range(value) == expected


@pytest.mark.parametrize("value,field", [([5, 1], "owned_reqid_range"), ([1], "owned_reqid_range"),
                                         (["x", 2], "owned_reqid_range[0]")])
def test_owned_range_bad(value, field):
    with pytest.raises(InputError) as exc:
        X.owned_range(value)
    assert exc.value.field == field


def test_key_reuse_in_list_and_on_host():
    kind = X.SAKind()
    a = desired_sa()
    b = desired_sa(spi=4097, reqid="0x51c00002")
    b["field"] = "config[1]"
    with pytest.raises(InputError) as exc:
        X.check_key_reuse([a, b], [], kind)
    assert exc.value.field == "config[1].aead.key" and "config[0]" in str(exc.value)
    host = X.parse_states(fixture("xfrm/lab-xfrm-state.txt"))
    c = desired_sa(aead=dict(key="0x" + "11" * 20))
    with pytest.raises(InputError) as exc:
        X.check_key_reuse([c], host, kind)
    assert exc.value.field == "config[0].aead.key" and "spi 0x00001000" in str(exc.value)
    X.check_key_reuse([a], host, kind)  # distinct key: fine


def lab_sa_owned(**changes):
    """The lab SA 0x1000 as if it were owned (reqid in the range)."""
    cur = X.parse_states(fixture("xfrm/lab-xfrm-state.txt"))[1]
    cur = dict(cur, reqid=0x51C00001)
    cur.update(changes)
    return cur


DIFF_CASES = [
    ("same", {}, dict(src="192.168.100.1", dst="192.168.100.2", aead=dict(key="0x" + "11" * 20),
                      offload=dict(type="none"), sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), [], NEW),
    ("no sel wanted", {}, dict(src="192.168.100.1", dst="192.168.100.2", aead=dict(key="0x" + "11" * 20),
                               offload=dict(type="none")), ["sel"], NEW),
    ("other key", {}, dict(src="192.168.100.1", dst="192.168.100.2", offload=dict(type="none"),
                           sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), ["aead.key"], NEW),
    ("offload wanted", {}, dict(src="192.168.100.1", dst="192.168.100.2", aead=dict(key="0x" + "11" * 20),
                                offload=dict(type="crypto", dev="eth0"),
                                sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), ["offload"], NEW),
    ("crypto fell back, allowed", {}, dict(src="192.168.100.1", dst="192.168.100.2", aead=dict(key="0x" + "11" * 20),
                                           offload=dict(type="crypto", dev="eth0", fallback="allow"),
                                           sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), [], NEW),
    ("out window ignored", {"replay_window": 1}, dict(
        src="192.168.100.1", dst="192.168.100.2", aead=dict(key="0x" + "11" * 20), offload=dict(type="none"),
        sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), [], NEW),
    ("direction differs", {"direction": "in"}, dict(
        src="192.168.100.1", dst="192.168.100.2", aead=dict(key="0x" + "11" * 20), offload=dict(type="none"),
        sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), ["direction"], NEW),
    ("key hidden on host: not compared", {"aead": {"name": X.AEAD_RFC4106, "key": None, "icv": 128}}, dict(
        src="192.168.100.1", dst="192.168.100.2", offload=dict(type="none"),
        sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")), [], NEW),
    ("src and esn", {}, dict(src="192.168.100.9", dst="192.168.100.2", esn=False, aead=dict(key="0x" + "11" * 20),
                             offload=dict(type="none"), sel=dict(src="192.168.100.1/32", dst="192.168.100.2/32")),
     ["src", "esn"], NEW),
]


@pytest.mark.parametrize("name,cur_changes,want,diff,features", DIFF_CASES, ids=[c[0] for c in DIFF_CASES])
def test_sa_differences(name, cur_changes, want, diff, features):
    w = dict(spi="0x1000", reqid="0x51c00001", direction="out", aead=dict(key=K16))
    w.update(want)
    d = X.check_sa(X.complete_sa(X.validate_sa("config[0]", w, "replaced", RNG)))
    assert X.SAKind().differences(lab_sa_owned(**cur_changes), d) == diff


def test_merged_completes_from_current():
    cur = lab_sa_owned()
    item = dict(src="192.168.100.1", dst="192.168.100.2", spi=4096, reqid="0x51c00001", direction="out",
                aead=dict(key="0x" + "11" * 20))
    d = X.complete_sa(X.validate_sa("config[0]", item, "merged", RNG), cur)
    assert d["sel"] == cur["sel"] and d["offload"]["type"] == "none" and d["esn"] is True
    assert X.SAKind().same(cur, d)


def test_replace_with_same_key_refused():
    kind = X.SAKind()
    cur = lab_sa_owned()
    d = X.check_sa(X.complete_sa(X.validate_sa("config[0]", dict(
        src="192.168.100.1", dst="192.168.100.2", spi=4096, reqid="0x51c00001", direction="out", esn=False,
        aead=dict(key="0x" + "11" * 20), offload=dict(type="none")), "replaced", RNG)))
    p = plan(kind, "replaced", [d], [cur])
    assert len(p.replace) == 1
    with pytest.raises(InputError) as exc:
        X.check_replace_keys(kind, p.replace)
    assert exc.value.field == "config[0].aead.key" and "esn" in str(exc.value)


# ---- policies ---------------------------------------------------------------------------------

def sp(**kw):
    item = dict(src="10.0.0.1/32", dst="10.0.0.2/32", dir="out",
                tmpl=dict(src="10.0.0.1", dst="10.0.0.2", reqid="0x51c00001"), offload=dict(dev="p0"))
    item.update(kw)
    return item


def desired_sp(state="replaced", **kw):
    return X.complete_sp(X.validate_sp("config[0]", SP_OPTIONS.apply("config[0]", sp(**kw)), state, RNG))


RENDER_SP = [
    ("out packet", {}, "add",
     "xfrm policy add src 10.0.0.1/32 dst 10.0.0.2/32 dir out priority 0 ptype main offload packet dev p0 "
     "tmpl src 10.0.0.1 dst 10.0.0.2 proto esp reqid 0x51c00001 mode transport"),
    ("update tunnel, ports, priority", dict(src="10.1.0.0/16", dst="10.2.0.0/16", proto="tcp", sport=1, dport=2,
                                            priority=100, tmpl=dict(src="192.0.2.1", dst="192.0.2.2",
                                                                    reqid=1371537410, mode="tunnel")), "update",
     "xfrm policy update src 10.1.0.0/16 dst 10.2.0.0/16 proto 6 sport 1 dport 2 dir out priority 100 ptype main "
     "offload packet dev p0 tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x51c00002 mode tunnel"),
    ("fwd, no offload by default", dict(dir="fwd", offload=None), "add",
     "xfrm policy add src 10.0.0.1/32 dst 10.0.0.2/32 dir fwd priority 0 ptype main "
     "tmpl src 10.0.0.1 dst 10.0.0.2 proto esp reqid 0x51c00001 mode transport"),
    ("block, marker tmpl without addresses, level use", dict(action="block", offload=dict(type="none"),
                                                             tmpl=dict(reqid="0x51c00003", level="use")), "add",
     "xfrm policy add src 10.0.0.1/32 dst 10.0.0.2/32 dir out action block priority 0 ptype main "
     "tmpl proto esp reqid 0x51c00003 mode transport level use"),
]


@pytest.mark.parametrize("name,kw,verb,line", RENDER_SP, ids=[c[0] for c in RENDER_SP])
def test_render_sp(name, kw, verb, line):
    kind = X.SPKind()
    d = desired_sp(**kw)
    assert (kind.render_update(d) if verb == "update" else kind.render_add(d)) == line


def test_render_sp_delete():
    d = X.validate_sp("config[0]", dict(src="10.1.0.0/16", dst="10.2.0.0/16", dir="in", proto=17, dport=4789),
                      "deleted", RNG)
    assert X.SPKind().render_delete(d) == ("xfrm policy delete src 10.1.0.0/16 dst 10.2.0.0/16 proto 17 dport 4789 "
                                           "dir in ptype main")


BAD_SP = [
    ("fwd offload", dict(dir="fwd", offload=dict(type="packet", dev="p0")), "config[0].offload.type",
     "forward policies cannot be offloaded"),
    ("crypto on policy", dict(offload=dict(type="crypto", dev="p0")), "config[0].offload.type", "must be one of"),
    ("tmpl missing", dict(tmpl=None), "config[0].tmpl", "is required"),
    ("tmpl reqid outside", dict(tmpl=dict(reqid=7)), "config[0].tmpl.reqid", "outside the owned range"),
    ("tunnel without endpoints", dict(tmpl=dict(reqid="0x51c00001", mode="tunnel")), "config[0].tmpl",
     "tunnel mode needs"),
    ("dir", dict(dir="both"), "config[0].dir", "must be one of"),
    ("host bits", dict(src="10.0.0.1/24"), "config[0].src", "host bits"),
    ("family mix", dict(dst="2001:db8::/64"), "config[0]", "mixes IPv4 and IPv6"),
    ("dev injection", dict(offload=dict(dev="p0 tmpl")), "config[0].offload.dev", "not a valid interface name"),
    ("level", dict(tmpl=dict(reqid="0x51c00001", level="optional")), "config[0].tmpl.level", "must be one of"),
    ("priority", dict(priority=-1), "config[0].priority", "out of range"),
    ("ports need tcp/udp", dict(proto="icmp", sport=8), "config[0].sport", "need proto"),
]


@pytest.mark.parametrize("name,kw,field,text", BAD_SP, ids=[c[0] for c in BAD_SP])
def test_bad_sp_names_field(name, kw, field, text):
    with pytest.raises(InputError) as exc:
        desired_sp(**kw)
    assert exc.value.field == field
    assert text in str(exc.value)


def test_sp_same_as_parsed_and_ownership():
    kind = X.SPKind((1, 2))
    cur = X.parse_policies(fixture("xfrm/lab-xfrm-policy.txt"))[1]
    d = X.complete_sp(X.validate_sp("config[0]", dict(
        src="192.168.100.1/32", dst="192.168.100.2/32", dir="out", offload=dict(type="none"),
        tmpl=dict(src="192.168.100.1", dst="192.168.100.2", reqid=1)), "replaced", (1, 2)))
    assert kind.key(cur) == kind.key(d) and kind.same(cur, d) and kind.owned(cur)
    assert not X.SPKind().owned(cur)  # default range: reqid 1 is foreign
    fwd = X.parse_policies(section_fastswan())[0]
    assert not X.SPKind().owned(fwd)  # no template: never owned


def section_fastswan():
    t = fixture("xfrm/mlx5-packet-offload-real.txt")
    return t.split("ipsec-gw:$ sudo ip xfrm policy", 1)[1]


# ---- ops, undo, progress ---------------------------------------------------------------------

def _sa_obj(spi, key, **kw):
    d = X.parse_states(fixture("xfrm/lab-xfrm-state.txt"))[1]
    d = dict(d, spi=spi, reqid=0x51C00001, aead={"name": X.AEAD_RFC4106, "key": key, "icv": 128})
    d.update(kw)
    return d


A = _sa_obj(0x2000, "a1" * 20)
B = _sa_obj(0x2001, "b1" * 20)
OLD_C = _sa_obj(0x2002, "c1" * 20)
NEW_C = _sa_obj(0x2002, "c2" * 20)
D = _sa_obj(0x2003, "d1" * 20)
OPS = [("add", A, None), ("add", B, None), ("delete", OLD_C, None), ("add", NEW_C, None), ("delete", D, None)]
BEFORE = [OLD_C, D]

PROGRESS = [
    ("nothing applied", [OLD_C, D], 0),
    ("first add applied", [A, OLD_C, D], 1),
    ("adds applied", [A, B, OLD_C, D], 2),
    ("replace: delete applied, add failed", [A, B, D], 3),
    ("replace done, last delete failed", [A, B, NEW_C, D], 4),
    ("all applied", [A, B, NEW_C], 5),
]


@pytest.mark.parametrize("name,host,count", PROGRESS, ids=[c[0] for c in PROGRESS])
def test_applied_count(name, host, count):
    assert X.applied_count(X.SAKind(), OPS, host) == count


def test_ops_order_and_undo():
    kind = X.SAKind()
    p = plan(kind, "overridden", [A, B, NEW_C], BEFORE)
    ops = X.ops_for_plan(kind, p)
    assert [(v, o["spi"]) for v, o, dummy in ops] == [
        ("add", 0x2000), ("add", 0x2001), ("delete", 0x2002), ("add", 0x2002), ("delete", 0x2003)]
    undo = _steps.undo_prefix([X.undo_op(op) for op in ops], 4)  # as _xfrm_run.batch_of builds it
    assert [(v, o["spi"], o["aead"]["key"][:2]) for v, o, dummy in undo] == [
        ("delete", 0x2002, "c2"), ("add", 0x2002, "c1"), ("delete", 0x2001, "b1"), ("delete", 0x2000, "a1")]
    lines = X.render_ops(kind, undo, NEW, "mask")
    assert lines[0] == "xfrm state delete src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00002002"
    assert lines[1].startswith("xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00002002 ")


def test_sp_update_undo():
    kind = X.SPKind()
    old = desired_sp(priority=5)
    new = desired_sp(priority=6)
    p = plan(kind, "merged", [new], [old])
    ops = X.ops_for_plan(kind, p)
    assert [(v, o["priority"]) for v, o, dummy in ops] == [("update", 6)]
    assert [(v, o["priority"]) for v, o, dummy in [X.undo_op(op) for op in ops]] == [("update", 5)]
    assert X.applied_count(kind, ops, [old]) == 0 and X.applied_count(kind, ops, [new]) == 1


def test_state_matches():
    kind = X.SAKind()
    keys = {kind.key(o) for o in (A, OLD_C)}
    assert X.state_matches(kind, [OLD_C], [OLD_C, D], keys)
    assert not X.state_matches(kind, [OLD_C], [NEW_C], keys)
    assert not X.state_matches(kind, [OLD_C], [OLD_C, A], keys)


def test_to_text_is_redacted_yaml():
    text = X.to_text([X.SAKind().public(desired_sa())])
    assert text.splitlines()[:3] == ["- src: 192.0.2.1", "  dst: 192.0.2.2", "  spi: 0x00001000"]
    assert "    key: <redacted>" in text and "ab" * 20 not in text
