"""extensions/molecule/default/tests/test_topology.py's tc checks (run by hand in the molecule
scenario, not in CI) read `tc -j` with the collection's own parser (_tc.parse_filters, through
xfrm_view.module_util).  Here they run against a stand-in testinfra host that answers with the tc
dumps captured in the lab's RoCE topology (tests/unit/fixtures/tc/lab_roce_*): the converged check
passes on them and fails when a rule is missing, pushes the tags in the wrong order or redirects
elsewhere; the torn-down check fails while an owned rule is left and passes without the qdisc."""
from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import fixture

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "extensions" / "molecule" / "default" / "tests"))
import test_topology as T  # noqa: E402  pylint: disable=wrong-import-position
import xfrm_view  # noqa: E402  pylint: disable=wrong-import-position

PUSH = json.loads(fixture("tc/lab_roce_vf0_rep_qinq_push_owned.json"))  # vf0_rep: push 5, push 10, redirect link0
POP = json.loads(fixture("tc/lab_roce_link0_qinq_pop_owned.json"))  # link0: vlan 10 + cvlan 5, pop, pop, redirect vf0_rep
INVENTORY = {"name": "lab-roce", "topology": "roce_vf", "netns": "",
             "vars": {"roce_vf_pf": "link0", "roce_vf_rep": "vf0_rep", "roce_vf_outer_vlan": 10,
                      "roce_vf_inner_vlan": 5},
             "hosts": {"lab1": {}, "lab2": {}}}


class Host:
    """What the checks use of a testinfra host: run / check_output with testinfra's quoting."""

    def __init__(self, filters):
        self.filters = filters  # dev -> tc -j filter list, or None: no ingress qdisc

    def run(self, cmd, *args):
        line = cmd % tuple(shlex.quote(str(a)) for a in args)
        words = line.split()
        dev = words[words.index("dev") + 1]
        rules = self.filters.get(dev)
        if words[:3] == ["tc", "qdisc", "show"]:
            out = "" if rules is None else "qdisc ingress ffff: parent ffff:fff1 ----------------\n"
        elif words[:4] == ["tc", "-j", "filter", "show"]:
            out = json.dumps(rules or [])
        else:
            raise AssertionError("unexpected command %r" % line)
        return SimpleNamespace(rc=0, stdout=out, stderr="")

    def check_output(self, cmd, *args):
        return self.run(cmd, *args).stdout


@pytest.fixture(autouse=True)
def lab_roce(monkeypatch):
    monkeypatch.setattr(xfrm_view, "lab_inventory", lambda: copy.deepcopy(INVENTORY))


def pair(**filters):
    return {name: Host(dict(filters)) for name in ("lab1", "lab2")}


def test_module_util_is_the_collections_tc_parser():
    tc = xfrm_view.module_util("_tc")
    assert tc.COOKIE_PREFIX == "69706f2d6d6c7835"
    assert Path(tc.__file__).resolve() == ROOT / "plugins" / "module_utils" / "_tc.py"


def test_converged_qinq_rules_pass():
    T.test_qinq_tc_rules_owned_and_in_place(pair(vf0_rep=PUSH, link0=POP))


def _edited(filters, edit):
    out = copy.deepcopy(filters)
    edit(out[1]["options"]["actions"], out[1]["options"])
    return out


@pytest.mark.parametrize("filters, message", [
    ({"vf0_rep": PUSH, "link0": None}, "no owned tc rule on link0"),
    ({"vf0_rep": [], "link0": POP}, "no owned tc rule on vf0_rep"),
    # the tags pushed outer first: the frame would leave with vlan 5 outside
    ({"vf0_rep": _edited(PUSH, lambda a, o: (a[0].update(id=10), a[1].update(id=5))), "link0": POP},
     "pushing vlan 5 then 10"),
    ({"vf0_rep": _edited(PUSH, lambda a, o: a[2].update(to_dev="link1")), "link0": POP}, "redirecting to link0"),
    ({"vf0_rep": PUSH, "link0": _edited(POP, lambda a, o: a.pop(1))}, "popping both tags"),
    ({"vf0_rep": PUSH, "link0": _edited(POP, lambda a, o: o["keys"].update(cvlan_id=6))}, "matching vlan 10 + 5"),
    # a foreign rule (no cookie) that looks right is not the collection's
    ({"vf0_rep": _edited(PUSH, lambda a, o: [x.pop("cookie") for x in a]), "link0": POP},
     "no owned tc rule on vf0_rep"),
])
def test_converged_qinq_check_fails_on(filters, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        T.test_qinq_tc_rules_owned_and_in_place(pair(**filters))


def test_torn_down_check():
    T.test_no_owned_tc_rule_left(pair(vf0_rep=None, link0=None))  # ingress qdisc gone
    T.test_no_owned_tc_rule_left(pair(vf0_rep=[], link0=[]))  # qdisc kept, no rule
    foreign = _edited(POP, lambda a, o: [x.pop("cookie") for x in a])
    T.test_no_owned_tc_rule_left(pair(vf0_rep=None, link0=foreign))  # someone else's rule stays
    with pytest.raises(AssertionError, match="owned tc rules left on link0"):
        T.test_no_owned_tc_rule_left(pair(vf0_rep=None, link0=POP))
