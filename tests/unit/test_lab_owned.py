"""lab/owned.py, the lab suites' counts of owned objects (lab/lib.sh owned_sas / owned_sps /
owned_packets / owned_tc), read with the collection's parsers: on `ip -s xfrm state` and `ip xfrm
policy` texts captured in the lab (one SA / policy given an owned reqid, the other left foreign) and
on the lab's RoCE `tc -j` dumps (owned, and the same rule without the cookie)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import fixture

ROOT = Path(__file__).resolve().parents[2]
OWNED = str(ROOT / "lab" / "owned.py")
# one SA (spi 0x1000, 6 packets) and the policy with reqid 1 made the collection's; reqid 2 stays foreign
STATES = fixture("xfrm/lab-xfrm-state-s.txt").replace("reqid 1(0x00000001)", "reqid 1371537409(0x51c00001)")
POLICIES = fixture("pairs/lab-xfrm-policy.txt").replace("reqid 1 ", "reqid 1371537409 ")
PUSH = fixture("tc/lab_roce_vf0_rep_qinq_push_owned.json")
POP = fixture("tc/lab_roce_link0_qinq_pop_owned.json")


def _foreign(text):
    data = json.loads(text)
    for a in data[1]["options"]["actions"]:
        a.pop("cookie", None)
    return json.dumps(data)


def run(what, text):
    """owned.py as lab/lib.sh runs it: a process, text on stdin, the collection found through
    ANSIBLE_COLLECTIONS_PATH (here: the farm tests/unit/conftest.py made)."""
    farm = next(p for p in sys.path if os.path.isdir(os.path.join(p, "ansible_collections", "ipsec_offload", "mlx5")))
    out = subprocess.run([sys.executable, OWNED, what], input=text, capture_output=True, text=True, check=False,
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=farm))
    return out.returncode, out.stdout.strip(), out.stderr.strip()


def test_fixtures_hold_one_owned_and_one_foreign_object():
    assert STATES.count("reqid 1371537409(") == 1 and STATES.count("reqid 2(") == 1
    assert POLICIES.count("reqid 1371537409 ") == 1 and POLICIES.count("reqid 2 ") == 1


@pytest.mark.parametrize("what, text, want", [
    ("sas", STATES, "1"),
    ("sas", fixture("xfrm/lab-xfrm-state-s.txt"), "0"),  # reqids 1 and 2: nothing of ours
    ("sas", "", "0"),
    ("packets", STATES, "6"),  # the owned SA's "lifetime current" packets only (the foreign one has 6 too)
    ("packets", STATES.replace("reqid 2(0x00000002)", "reqid 1371537410(0x51c00002)"), "12"),
    ("sps", POLICIES, "1"),
    ("sps", "", "0"),
    ("tc", "#dev vf0_rep\n%s\n#dev link0\n%s\n" % (PUSH, POP), "2"),
    ("tc", "#dev vf0_rep\n%s\n#dev link0\n%s\n" % (_foreign(PUSH), POP), "1"),
    ("tc", "#dev vf0_rep\n#dev link0\n", "0"),  # no ingress qdisc: tc printed nothing
])
def test_counts(what, text, want):
    assert run(what, text) == (0, want, "")


def test_refusals_say_why():
    rc, out, err = run("tc", "#dev link0\nnot json\n")
    assert rc == 1 and out == "" and "is not valid JSON" in err
    rc, out, err = run("keys", "")
    assert rc == 1 and "unknown count 'keys'" in err
