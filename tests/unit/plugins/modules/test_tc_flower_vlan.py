# -*- coding: utf-8 -*-
"""tc_flower_vlan against a scripted host.

FakeTc stands in for the kernel's ingress tc state: it answers `tc -j qdisc show`, `tc -j filter
show dev D ingress` in the shape real iproute2 prints (see fixtures/tc for the real outputs the
parser is tested on) and applies `tc [-force] -batch -` line by line, stopping at the first failure
with `Command failed -:N` as tc does.  Failures are injected per line (``fail_on``).
"""

from __future__ import annotations

import copy
import json

import pytest

from harness import FakeHost, fixture, run_module

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _tc
from ansible_collections.ipsec_offload.mlx5.plugins.modules import tc_flower_vlan

COOKIE = "69706f2d6d6c783501"
_LL = {"all": "all", "ip": "ip", "ipv6": "ipv6", "arp": "arp", "802.1q": "802.1Q", "802.1ad": "802.1ad"}
_ETH = {"ip": "ipv4", "ipv6": "ipv6", "arp": "arp"}


class KernelError(Exception):
    pass


class FakeTc:
    def __init__(self, links=("pf0", "pf0vf0_rep", "rep1", "lo"), hooks=None, filters=None, hw_devs=(), xfrm="",
                 parents=None):
        self.links = set(links)
        self.parents = dict(parents or {})  # ifname -> (parentbus, parentdev)
        self.hooks = dict(hooks or {})
        self.filters = copy.deepcopy(filters or {})  # dev -> [filter objects with options]
        self.hw_devs = set(hw_devs)
        self.xfrm = xfrm
        self.fail_on = []   # (substring of a batch line, kernel message)
        self.mangle = None  # callable(obj) applied to a filter the fake kernel stores
        self.index = 100
        self.batches = []

    # ---- reads
    def dump(self, dev):
        out = []
        for f in sorted(self.filters.get(dev, []), key=lambda o: (o["chain"], o["pref"])):
            out.append({k: f[k] for k in ("protocol", "pref", "kind", "chain")})
            out.append(f)
        return json.dumps(out)

    def qdiscs(self):
        out = []
        for dev in sorted(self.links):
            out.append({"kind": "noqueue", "handle": "0:", "dev": dev, "root": True, "refcnt": 2, "options": {}})
            if dev in self.hooks:
                out.append({"kind": self.hooks[dev], "handle": "ffff:", "dev": dev, "parent": "ffff:fff1", "options": {}})
        return json.dumps(out)

    def ip_links(self):
        out = []
        for x in sorted(self.links):
            obj = {"ifname": x}
            if x in self.parents:
                obj.update(parentbus=self.parents[x][0], parentdev=self.parents[x][1])
            out.append(obj)
        return json.dumps(out)

    def state(self):
        return copy.deepcopy((self.hooks, self.filters))

    # ---- the emulated kernel
    def _find(self, dev, chain, prio):
        for f in self.filters.get(dev, []):
            if (f["chain"], f["pref"]) == (chain, prio):
                return f
        return None

    def _flower(self, dev, proto, chain, prio, handle, toks):
        keys, opts, actions = {}, {"handle": handle}, []
        i = 0
        while i < len(toks) and toks[i] != "action":
            t = toks[i]
            if t in ("skip_sw", "skip_hw"):
                opts[t] = True
                i += 1
                continue
            v = toks[i + 1]
            if t in ("vlan_id", "vlan_prio", "cvlan_id", "cvlan_prio", "dst_port", "src_port"):
                keys[t] = int(v)
            elif t in ("vlan_ethtype", "cvlan_ethtype"):
                keys[t] = _LL[v]
            elif t == "ip_proto":
                keys[t] = {"0x32": "esp", "0x33": "ah"}.get(v, v)
            else:
                keys[t] = v
            i += 2
        inner = proto if proto not in ("802.1q", "802.1ad", "all") else None
        vt = toks[toks.index("vlan_ethtype") + 1] if "vlan_ethtype" in toks[:i] else None
        if vt and vt not in ("802.1q", "802.1ad"):
            inner = vt
        elif vt:
            inner = toks[toks.index("cvlan_ethtype") + 1] if "cvlan_ethtype" in toks[:i] else None
        if inner:
            keys["eth_type"] = _ETH[inner]
        order = 0
        while i < len(toks):
            assert toks[i] == "action"
            order += 1
            self.index += 1
            a = {"order": order}
            kind = toks[i + 1]
            i += 2
            if kind == "vlan":
                if toks[i] == "pop":
                    a.update(kind="vlan", vlan_action="pop")
                    i += 1
                else:
                    a.update(kind="vlan", vlan_action="push", id=int(toks[i + 2]), protocol=_LL[toks[i + 4]],
                             priority=int(toks[i + 6]))
                    i += 7
                a["control_action"] = {"type": "pipe"}
            else:
                what, target = toks[i + 1], toks[i + 3]
                if target not in self.links:
                    raise KernelError('Cannot find device "%s"' % target)
                a.update(kind="mirred", mirred_action=what, direction="egress", to_dev=target,
                         control_action={"type": "stolen" if what == "redirect" else "pipe"})
                i += 4
            a.update(index=self.index, ref=1, bind=1)
            if i < len(toks) and toks[i] == "cookie":
                a["cookie"] = toks[i + 1]
                i += 2
            actions.append(a)
        opts["keys"] = keys
        if opts.get("skip_sw") and dev not in self.hw_devs:
            raise KernelError("Error: TC offload is disabled on net device.")
        if dev in self.hw_devs and not opts.get("skip_hw"):
            opts.update(in_hw=True, in_hw_count=1)
        else:
            opts["not_in_hw"] = True
        opts["actions"] = actions
        obj = {"protocol": _LL[proto], "pref": prio, "kind": "flower", "chain": chain, "options": opts}
        if self.mangle:
            self.mangle(obj)
        return obj

    def apply(self, line):
        for needle, msg in self.fail_on:
            if needle in line:
                raise KernelError(msg)
        t = line.split()
        if t[0] == "qdisc":
            dev = t[3]
            if t[1] == "add":
                if dev in self.hooks:
                    raise KernelError("Error: Exclusivity flag on, cannot modify.")
                self.hooks[dev] = "ingress"
            else:
                if dev not in self.hooks:
                    raise KernelError("Error: Cannot find specified qdisc on specified device.")
                del self.hooks[dev]
                self.filters.pop(dev, None)
            return
        verb, dev, proto, chain, prio = t[1], t[3], t[6], int(t[8]), int(t[10])
        if dev not in self.links:
            raise KernelError('Cannot find device "%s"' % dev)
        if dev not in self.hooks:
            raise KernelError("Error: Parent Qdisc doesn't exists.")
        cur = self._find(dev, chain, prio)
        if cur is not None and cur["protocol"] != _LL[proto]:
            raise KernelError("Error: Protocol mismatch for filter with specified priority.")
        if verb == "del":
            if cur is None:
                raise KernelError("Error: Filter with specified priority/protocol not found.")
            self.filters[dev].remove(cur)
            return
        handle = int(t[12])
        obj = self._flower(dev, proto, chain, prio, handle, t[14:])
        if verb == "add" and cur is not None:
            raise KernelError("Error: Filter already exists.")
        if cur is not None:
            self.filters[dev].remove(cur)
        self.filters.setdefault(dev, []).append(obj)

    def batch(self, argv, stdin):
        force = "-force" in argv
        self.batches.append((force, stdin))
        errors, rc = [], 0
        for n, line in enumerate(stdin.splitlines(), 1):
            try:
                self.apply(line)
            except KernelError as exc:
                errors.append("%s\nWe have an error talking to the kernel\nCommand failed -:%d" % (exc, n))
                rc = 1
                if not force:
                    break
        return rc, "", "\n".join(errors) + ("\n" if errors else "")

    def host(self):
        return FakeHost([
            (("ip", "-d", "-j", "link", "show"), lambda a, s: (0, self.ip_links(), "")),
            (("ip", "xfrm", "state", "list", "nokeys"), lambda a, s: (0, self.xfrm, "")),
            (("tc", "-j", "qdisc", "show"), lambda a, s: (0, self.qdiscs(), "")),
            (("tc", "-j", "filter", "show", "dev"), lambda a, s: (0, self.dump(a[5]), "")),
            (("tc", "-batch", "-"), self.batch),
            (("tc", "-force", "-batch", "-"), self.batch),
        ])


UPLINK = {"dev": "pf0", "prio": 10, "protocol": "802.1q",
          "match": {"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5},
          "actions": [{"vlan": "pop"}, {"vlan": "pop"}, {"mirred": "redirect", "dev": "pf0vf0_rep"}]}
REP = {"dev": "pf0vf0_rep", "prio": 10, "protocol": "all",
       "actions": [{"vlan": "push", "id": 5}, {"vlan": "push", "id": 10}, {"mirred": "redirect", "dev": "pf0"}]}
NO_IPSEC_CHECK = {"require_ipsec_before_offload": False}


def args(config=None, **kw):
    a = dict(NO_IPSEC_CHECK)
    if config is not None:
        a["config"] = config
    a.update(kw)
    return a


def batches(host):
    return [s for argv, s in host.calls if "-batch" in argv]


def owned_fake(fake, config):
    """Put rules on a FakeTc the way this module would (through the fake kernel)."""
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args(config), host)
    assert not failed, res["msg"]
    return fake


# -------------------------------------------------------------------------------------- create + idempotence

def test_vendor_roce_rules_created_then_idempotent():
    fake = FakeTc(hw_devs=("pf0", "pf0vf0_rep"))
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK, REP]), host)
    assert not failed, res
    assert res["changed"] is True
    assert res["commands"] == [
        "qdisc add dev pf0 ingress",
        "qdisc add dev pf0vf0_rep ingress",
        "filter add dev pf0 ingress protocol 802.1q chain 0 prio 10 handle 1 flower vlan_id 10 vlan_ethtype 802.1q "
        "cvlan_id 5 action vlan pop cookie 69706f2d6d6c783501 action vlan pop action mirred egress redirect dev pf0vf0_rep",
        "filter add dev pf0vf0_rep ingress protocol all chain 0 prio 10 handle 1 flower action vlan push id 5 protocol "
        "802.1q priority 0 cookie 69706f2d6d6c783501 action vlan push id 10 protocol 802.1q priority 0 action mirred "
        "egress redirect dev pf0",
    ]
    assert batches(host) == ["\n".join(res["commands"]) + "\n"]
    assert [(r["dev"], r["status"], r["offload"], r["handle"], r["in_hw_count"]) for r in res["rules"]] == [
        ("pf0", "added", "in_hw", 1, 1), ("pf0vf0_rep", "added", "in_hw", 1, 1)]
    assert [r["dev"] for r in res["after"]] == ["pf0", "pf0vf0_rep"] and res["before"] == []

    host2 = fake.host()
    res2, failed2 = run_module(tc_flower_vlan.main, args([UPLINK, REP]), host2)
    assert not failed2 and res2["changed"] is False and res2["commands"] == []
    assert batches(host2) == []
    assert [(r["status"], r["offload"]) for r in res2["rules"]] == [("unchanged", "in_hw")] * 2


def test_software_rule_reports_not_in_hw():
    fake = FakeTc()
    res, failed = run_module(tc_flower_vlan.main, args([dict(REP, hw="skip_hw")]), fake.host())
    assert not failed
    assert [(r["status"], r["offload"]) for r in res["rules"]] == [("added", "not_in_hw")]
    assert " flower skip_hw action " in res["commands"][1]


def test_check_mode_changes_nothing_and_diff_shows_the_rule():
    fake = FakeTc()
    before = fake.state()
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), host, check_mode=True, diff=True)
    assert not failed and res["changed"] is True
    assert res["commands"][0] == "qdisc add dev pf0 ingress" and len(res["commands"]) == 2
    assert batches(host) == [] and fake.state() == before
    assert res["diff"] == {"before": "", "after": (
        "dev pf0 chain 0 prio 10 protocol 802.1q: flower vlan_id 10 vlan_ethtype 802.1q cvlan_id 5 action vlan pop "
        "action vlan pop action mirred egress redirect dev pf0vf0_rep\n")}
    assert [(r["status"], r["offload"]) for r in res["rules"]] == [("added", "unknown")]


def test_diff_after_apply_is_read_back():
    fake = FakeTc()
    res, failed = run_module(tc_flower_vlan.main, args([REP]), fake.host(), diff=True)
    assert not failed
    assert res["diff"]["after"] == ("dev pf0vf0_rep chain 0 prio 10 protocol all: flower action vlan push id 5 protocol "
                                    "802.1q priority 0 action vlan push id 10 protocol 802.1q priority 0 action mirred "
                                    "egress redirect dev pf0\n")


def test_namespace_goes_to_tc_and_ip():
    inner = FakeTc().host()

    def strip_ns(argv, stdin):
        assert argv[1:3] == ["-n", "ns0"], argv
        return inner.run_command(["/usr/sbin/" + argv[0]] + argv[3:], data=stdin, environ_update={"LC_ALL": "C"})

    host = FakeHost([(("ip",), strip_ns), (("tc",), strip_ns)])
    res, failed = run_module(tc_flower_vlan.main, args([REP], namespace="ns0"), host)
    assert not failed, res
    assert ["tc", "-n", "ns0", "-batch", "-"] in host.commands()
    assert ["ip", "-n", "ns0", "-d", "-j", "link", "show"] in host.commands()


# -------------------------------------------------------------------------------------- ownership

def foreign_flower(dev="pf0", prio=10, protocol="802.1Q"):
    return {"protocol": protocol, "pref": prio, "kind": "flower", "chain": 0, "options": {
        "handle": 1, "keys": {"vlan_id": 10, "vlan_ethtype": "802.1Q", "cvlan_id": 5}, "not_in_hw": True,
        "actions": [{"order": 1, "kind": "vlan", "vlan_action": "pop", "control_action": {"type": "pipe"}},
                    {"order": 2, "kind": "vlan", "vlan_action": "pop", "control_action": {"type": "pipe"}},
                    {"order": 3, "kind": "mirred", "mirred_action": "redirect", "direction": "egress",
                     "to_dev": "pf0vf0_rep", "control_action": {"type": "stolen"}}]}}


def foreign_u32(prio=1):
    obj = json.loads(fixture("tc/u32_mirred_bookworm_host.json"))[2]
    obj["pref"] = prio
    return obj


def test_identical_foreign_rule_is_refused_not_adopted():
    fake = FakeTc(hooks={"pf0": "ingress"}, filters={"pf0": [foreign_flower()]})
    before = fake.state()
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), host)
    assert failed
    assert res["msg"].startswith("config[0] (dev pf0 chain 0 prio 10 protocol 802.1q) collides with a flower filter "
                                 "this collection does not own")
    assert batches(host) == [] and fake.state() == before


def test_foreign_filter_with_other_protocol_in_the_slot_is_refused():
    fake = FakeTc(hooks={"pf0": "ingress"}, filters={"pf0": [foreign_u32(prio=10)]})
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), host)
    assert failed and "config[0]" in res["msg"] and "foreign u32 filter with protocol all" in res["msg"]
    assert batches(host) == []


def test_owned_rule_with_other_protocol_needs_overridden():
    fake = owned_fake(FakeTc(), [dict(REP, dev="pf0", protocol="arp")])
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), fake.host())
    assert failed and "state=overridden" in res["msg"]
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK], state="overridden"), fake.host())
    assert not failed, res
    assert res["commands"][:1] == ["filter del dev pf0 ingress protocol arp chain 0 prio 10"]
    assert [f["protocol"] for f in fake.filters["pf0"]] == ["802.1Q"]


def test_overridden_deletes_owned_only_and_leaves_foreign_alone():
    fake = owned_fake(FakeTc(), [dict(REP, dev="pf0", prio=20), dict(REP, prio=30)])
    fake.filters["pf0"].append(foreign_u32(prio=1))
    fake.filters["pf0"].append(foreign_flower(prio=40))
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK], state="overridden"), fake.host())
    assert not failed, res
    assert res["commands"] == [
        "filter del dev pf0 ingress protocol all chain 0 prio 20",
        "filter del dev pf0vf0_rep ingress protocol all chain 0 prio 30",
        _tc.filter_line("add", _tc.public(_tc.validate_rule("c", UPLINK, "replaced"))),
    ]
    assert sorted((f["kind"], f["pref"]) for f in fake.filters["pf0"]) == [("flower", 10), ("flower", 40), ("u32", 1)]
    assert fake.filters["pf0vf0_rep"] == []


def test_overridden_scope_can_be_limited_by_devices():
    fake = owned_fake(FakeTc(), [dict(REP, dev="pf0", prio=20), dict(REP, prio=30)])
    res, failed = run_module(tc_flower_vlan.main, args([], state="overridden", devices=["pf0vf0_rep"]), fake.host())
    assert not failed
    assert res["commands"] == ["filter del dev pf0vf0_rep ingress protocol all chain 0 prio 30"]


def test_deleted_all_owned_keeps_foreign_and_qdisc():
    fake = owned_fake(FakeTc(), [UPLINK])
    fake.filters["pf0"].append(foreign_u32(prio=1))
    res, failed = run_module(tc_flower_vlan.main, args(state="deleted", remove_ingress_qdisc=True), fake.host())
    assert not failed
    assert res["commands"] == ["filter del dev pf0 ingress protocol 802.1q chain 0 prio 10"]
    assert fake.hooks == {"pf0": "ingress"} and [f["kind"] for f in fake.filters["pf0"]] == ["u32"]
    assert [(r["status"], r["offload"]) for r in res["rules"]] == [("deleted", "absent")]


def test_deleted_removes_empty_ingress_qdisc_only_when_asked():
    fake = owned_fake(FakeTc(), [UPLINK, REP])
    res, failed = run_module(tc_flower_vlan.main, args([{"dev": "pf0", "prio": 10}], state="deleted"), fake.host())
    assert not failed and res["commands"] == ["filter del dev pf0 ingress protocol 802.1q chain 0 prio 10"]
    assert "pf0" in fake.hooks
    res, failed = run_module(tc_flower_vlan.main, args([{"dev": "pf0vf0_rep", "prio": 10, "protocol": "all"}],
                                                       state="deleted", remove_ingress_qdisc=True), fake.host())
    assert not failed
    assert res["commands"] == ["filter del dev pf0vf0_rep ingress protocol all chain 0 prio 10",
                               "qdisc del dev pf0vf0_rep ingress"]
    assert fake.hooks == {"pf0": "ingress"}
    res, failed = run_module(tc_flower_vlan.main, args(state="deleted"), fake.host())
    assert not failed and res["changed"] is False


def test_clsact_is_never_removed():
    fake = owned_fake(FakeTc(hooks={"pf0": "clsact"}), [UPLINK])
    res, failed = run_module(tc_flower_vlan.main, args(state="deleted", remove_ingress_qdisc=True), fake.host())
    assert not failed and res["commands"] == ["filter del dev pf0 ingress protocol 802.1q chain 0 prio 10"]
    assert fake.hooks == {"pf0": "clsact"}


def test_deleting_a_listed_foreign_rule_is_refused():
    fake = FakeTc(hooks={"pf0": "ingress"}, filters={"pf0": [foreign_flower()]})
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([{"dev": "pf0", "prio": 10}], state="deleted"), host)
    assert failed and "does not own" in res["msg"] and batches(host) == []


def test_gathered_round_trip():
    fake = owned_fake(FakeTc(), [UPLINK, REP])
    fake.filters["pf0"].append(foreign_u32(prio=1))
    res, failed = run_module(tc_flower_vlan.main, args(state="gathered"), fake.host())
    assert not failed and res["changed"] is False
    assert res["gathered"] == [_tc.public(_tc.validate_rule("c", r, "replaced")) for r in (UPLINK, REP)]
    host = fake.host()
    res2, failed = run_module(tc_flower_vlan.main, args(res["gathered"], state="replaced"), host)
    assert not failed and res2["changed"] is False and batches(host) == []


def test_rendered_runs_nothing():
    host = FakeHost()  # any command would fail the test
    res, failed = run_module(tc_flower_vlan.main, {"state": "rendered", "config": [UPLINK]}, host)
    assert not failed and res["changed"] is False and host.calls == []
    assert res["rendered"] == ["qdisc add dev pf0 ingress", _tc.filter_line("add", _tc.public(
        _tc.validate_rule("c", UPLINK, "rendered")))]


# -------------------------------------------------------------------------------------- merged / replaced

def test_merged_changes_only_what_is_given():
    fake = owned_fake(FakeTc(), [UPLINK])
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([{"dev": "pf0", "prio": 10, "protocol": "802.1Q", "hw": "skip_hw"}]),
                             host)
    assert not failed, res
    assert res["commands"] == [
        "filter replace dev pf0 ingress protocol 802.1q chain 0 prio 10 handle 1 flower skip_hw vlan_id 10 vlan_ethtype "
        "802.1q cvlan_id 5 action vlan pop cookie 69706f2d6d6c783501 action vlan pop action mirred egress redirect dev "
        "pf0vf0_rep"]
    assert res["rules"][0]["status"] == "replaced"


def test_replaced_resets_left_out_fields():
    fake = owned_fake(FakeTc(), [dict(UPLINK, hw="skip_hw")])
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK], state="replaced"), fake.host())
    assert not failed and res["changed"] is True and " skip_hw " not in res["commands"][0]


def test_merged_new_rule_without_actions_names_the_field():
    fake = FakeTc()
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([{"dev": "pf0", "prio": 3}]), host)
    assert failed and res["field"] == "config[0].actions" and batches(host) == []


# -------------------------------------------------------------------------------------- preconditions

@pytest.mark.parametrize("cfg,field", [
    ([dict(UPLINK, dev="pf9")], "config[0].dev"),
    ([dict(UPLINK, actions=[{"vlan": "pop"}, {"mirred": "redirect", "dev": "nosuch"}])], "config[0].actions[1].dev"),
    ([dict(UPLINK, dev="pf0; reboot")], "config[0].dev"),
    ([dict(UPLINK, match={"vlan_id": 10, "vlan_ethtype": "802.1q", "cvlan_id": 5000})], "config[0].match.cvlan_id"),
])
def test_bad_input_fails_before_any_change(cfg, field):
    fake = FakeTc()
    before = fake.state()
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args(cfg), host)
    assert failed and res["field"] == field and res["msg"].startswith(field + ": ")
    assert batches(host) == [] and fake.state() == before


def test_bad_namespace_name_is_refused_without_commands():
    host = FakeHost()
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK], namespace="ns0 x"), host)
    assert failed and res["field"] == "namespace" and host.calls == []


def test_invalid_json_from_tc_fails_cleanly():
    fake = FakeTc(hooks={"pf0": "ingress"})
    host = fake.host().on(("tc", "-j", "filter", "show"), (0, '[{"order":1 police 0x1 rate 1Mbit}]', ""))
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), host)
    assert failed and "not valid JSON" in res["msg"] and batches(host) == []


def test_owned_rule_with_unmanaged_settings_is_not_touched():
    fake = owned_fake(FakeTc(), [UPLINK])
    fake.filters["pf0"][0]["options"]["keys"]["ip_tos"] = "0x10"
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK], state="replaced"), host)
    assert failed and "ip_tos" in res["msg"] and batches(host) == []


# -------------------------------------------------------------------------------------- IPsec first (mlx5)

def test_offloadable_rule_refused_without_offloaded_ipsec_state():
    fake = FakeTc(xfrm="")
    before = fake.state()
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, {"config": [UPLINK]}, host)
    assert failed
    assert "no offloaded xfrm state on it (or on another netdev of the same PCI function) yet" in res["msg"]
    assert "apply the IPsec states and policies" in res["msg"]
    assert "pf0" in res["msg"] and batches(host) == [] and fake.state() == before
    assert ["ip", "xfrm", "state", "list", "nokeys"] in host.commands()


def test_offloadable_rule_allowed_once_ipsec_is_offloaded_on_the_device():
    xfrm = fixture("tc/xfrm_state_netdevsim_crypto.txt")  # offload on eth0
    fake = FakeTc(links=("eth0", "eth1"), xfrm=xfrm)
    rule = {"dev": "eth0", "prio": 1, "protocol": "ip", "match": {"dst_ip": "192.0.2.1"},
            "actions": [{"vlan": "push", "id": 10}, {"mirred": "redirect", "dev": "eth1"}]}
    res, failed = run_module(tc_flower_vlan.main, {"config": [rule]}, fake.host())
    assert not failed and res["changed"] is True
    res, failed = run_module(tc_flower_vlan.main, {"config": [dict(rule, dev="eth1", prio=2,
                                                                   actions=[{"vlan": "pop"}])]}, fake.host())
    assert failed and "eth1" in res["msg"]


def test_representor_rule_allowed_when_ipsec_is_offloaded_on_its_uplink():
    # IPsec over VXLAN: SAs offloaded on the uplink (real mlx5 output names it eth2), TC on the VF
    # representor, which mlx5 registers on the same PCI function
    pci = ("pci", "0000:08:00.0")
    fake = FakeTc(links=("eth2", "pf0vf0", "enp8s0f0v0"), xfrm=fixture("tc/xfrm_state_mlx5_packet_real.txt"),
                  parents={"eth2": pci, "pf0vf0": pci, "enp8s0f0v0": ("pci", "0000:08:00.2")})
    rep = {"dev": "pf0vf0", "prio": 1, "actions": [{"mirred": "redirect", "dev": "eth2"}]}
    res, failed = run_module(tc_flower_vlan.main, {"config": [rep]}, fake.host())
    assert not failed, res
    res, failed = run_module(tc_flower_vlan.main, {"config": [dict(rep, dev="enp8s0f0v0")]}, fake.host())
    assert failed and res["msg"].startswith("refusing offloadable TC rules on enp8s0f0v0: ")


def test_skip_hw_rules_do_not_read_xfrm():
    fake = FakeTc()
    host = fake.host()
    res, failed = run_module(tc_flower_vlan.main, {"config": [dict(UPLINK, hw="skip_hw")]}, host)
    assert not failed and ["ip", "xfrm", "state", "list", "nokeys"] not in host.commands()


def test_replacing_an_already_offloadable_rule_does_not_check_again():
    fake = owned_fake(FakeTc(), [UPLINK])
    host = fake.host()
    changed = dict(UPLINK, actions=[{"vlan": "pop"}, {"mirred": "redirect", "dev": "pf0vf0_rep"}])
    res, failed = run_module(tc_flower_vlan.main, {"config": [changed]}, host)
    assert not failed and res["changed"] and ["ip", "xfrm", "state", "list", "nokeys"] not in host.commands()


# -------------------------------------------------------------------------------------- rollback

def test_failure_part_way_rolls_back_everything_this_run_did():
    fake = owned_fake(FakeTc(), [dict(REP, dev="pf0", prio=20), dict(REP, dev="pf0", prio=30)])
    before = fake.state()
    fake.batches = []
    fake.fail_on = [("prio 10 handle 1 flower action vlan push id 5", "Error: Failed to load TC action module.")]
    host = fake.host()
    new_rep = dict(REP, actions=[{"vlan": "push", "id": 5}, {"mirred": "redirect", "dev": "pf0"}])
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK, dict(REP, dev="pf0", prio=20, hw="skip_hw"), new_rep],
                                                       state="overridden"), host)
    assert failed
    assert res["commands"] == [
        "qdisc add dev pf0vf0_rep ingress",
        "filter del dev pf0 ingress protocol all chain 0 prio 30",
        "filter replace dev pf0 ingress protocol all chain 0 prio 20 handle 1 flower skip_hw action vlan push id 5 "
        "protocol 802.1q priority 0 cookie 69706f2d6d6c783501 action vlan push id 10 protocol 802.1q priority 0 action "
        "mirred egress redirect dev pf0",
        _tc.filter_line("add", _tc.public(_tc.validate_rule("c", UPLINK, "replaced"))),
        "filter add dev pf0vf0_rep ingress protocol all chain 0 prio 10 handle 1 flower action vlan push id 5 protocol "
        "802.1q priority 0 cookie 69706f2d6d6c783501 action mirred egress redirect dev pf0",
    ]
    assert res["failed_command"] == res["commands"][4]
    assert res["rollback"] == [
        "filter del dev pf0 ingress protocol 802.1q chain 0 prio 10",
        "filter replace dev pf0 ingress protocol all chain 0 prio 20 handle 1 flower action vlan push id 5 protocol "
        "802.1q priority 0 cookie 69706f2d6d6c783501 action vlan push id 10 protocol 802.1q priority 0 action mirred "
        "egress redirect dev pf0",
        "filter add dev pf0 ingress protocol all chain 0 prio 30 handle 1 flower action vlan push id 5 protocol 802.1q "
        "priority 0 cookie 69706f2d6d6c783501 action vlan push id 10 protocol 802.1q priority 0 action mirred egress "
        "redirect dev pf0",
        "qdisc del dev pf0vf0_rep ingress",
    ]
    assert res["restored"] is True
    assert res["msg"].startswith("tc refused config[2] (dev pf0vf0_rep chain 0 prio 10 protocol all): "
                                 "Error: Failed to load TC action module. -- the kernel lacks an action")
    assert "Undid the 4 line(s) already applied; the host is as before." in res["msg"]
    assert [b[0] for b in fake.batches] == [False, True]

    def strip(state):
        hooks, filters = state
        return hooks, {d: _tc.fingerprint(_tc.parse_filters(d, json.dumps(v))) for d, v in filters.items() if v}
    assert strip(fake.state()) == strip(before)


def test_failure_on_first_line_runs_no_rollback():
    fake = FakeTc()
    fake.fail_on = [("qdisc add dev pf0", "Error: Exclusivity flag on, cannot modify.")]
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), fake.host())
    assert failed and res["rollback"] == [] and res["restored"] is True
    assert "ingress qdisc on pf0" in res["msg"]


def test_unknown_failure_point_undoes_all_lines_with_force():
    fake = FakeTc()
    host = fake.host().on(("tc", "-batch", "-"), (1, "", "Segmentation fault\n"))
    res, failed = run_module(tc_flower_vlan.main, args([UPLINK]), host)
    assert failed
    assert res["rollback"] == ["filter del dev pf0 ingress protocol 802.1q chain 0 prio 10", "qdisc del dev pf0 ingress"]
    assert [b[0] for b in fake.batches] == [True]
    assert res["restored"] is True and fake.hooks == {}


def test_read_back_mismatch_is_undone_and_reported():
    fake = FakeTc()

    def drop_priority(obj):  # a kernel that stores the push priority differently than asked
        for a in obj["options"]["actions"]:
            if a.get("vlan_action") == "push":
                a["priority"] = 0

    fake.mangle = drop_priority
    res, failed = run_module(tc_flower_vlan.main, args([dict(REP, actions=[{"vlan": "push", "id": 5, "priority": 3}])]),
                             fake.host())
    assert failed
    assert "read back differ" in res["msg"] and "change dev pf0vf0_rep chain 0 prio 10 protocol all" in res["msg"]
    assert res["restored"] is True and fake.hooks == {} and fake.filters.get("pf0vf0_rep") is None
