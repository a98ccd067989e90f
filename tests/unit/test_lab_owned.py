"""lab/owned.py, what the lab suites read of a VM (lab/lib.sh owned_* / all_* / xfrm_stat_delta,
and the readers of lab/ike.sh, lifecycle.sh, rekey.sh, demo.sh, device.sh, topologies.sh and
verify.sh), read with the collection's parsers: on `ip -s xfrm state` and `ip xfrm policy` texts
captured in the lab (one SA / policy given an owned reqid, the other left foreign), the sim's
packet-offload captures, the guards' real capture, the lab's RoCE `tc -j` dumps (owned, and the same
rule without the cookie), the IKE daemons' status texts, `ethtool -S` and /proc/net/xfrm_stat; and
lab/sa_keys.py, which lifecycle.sh runs on a VM behind _xfrm_text.py."""
from __future__ import annotations

import hashlib
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


def run(what, text, *args):
    """owned.py as lab/lib.sh runs it: a process, text on stdin, the collection found through
    ANSIBLE_COLLECTIONS_PATH (here: the farm tests/unit/conftest.py made)."""
    farm = next(p for p in sys.path if os.path.isdir(os.path.join(p, "ansible_collections", "ipsec_offload", "mlx5")))
    out = subprocess.run([sys.executable, OWNED, what, *args], input=text, capture_output=True, text=True, check=False,
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
    assert rc == 1 and "unknown view 'keys'" in err


# ---- the xfrm selections: --all / --foreign / --among / --except-spi / --offload ------------------

PACKET_SAS = fixture("sim/xfrm_state_packet.txt")     # two SAs, owned reqids, offload packet on eth0
PACKET_SPS = fixture("sim/xfrm_policy_packet.txt")    # their two policies, offload packet on eth0
# the policy listing of the guards' real capture: three guards (block, owned, mark mask 0x1), their
# SA policy, and a foreign fwd policy with mark 0x10/0xffffffff
_marks = fixture("xfrm/policy-marks-guards-real.txt")
GUARDS = _marks[_marks.index("$ ip xfrm policy\n") + len("$ ip xfrm policy\n"):].split("\n$ ", 1)[0]


def test_guard_capture_holds_what_the_tests_say():
    assert GUARDS.count("action block") == 3 and GUARDS.count("mark 0x10/0xffffffff") == 1
    assert GUARDS.count("\nsrc ") + GUARDS.startswith("src ") == 5


@pytest.mark.parametrize("what, text, args, want", [
    ("sas", STATES, ["--all"], "2"),
    ("sas", STATES, ["--foreign"], "1"),
    ("packets", STATES, ["--foreign"], "6"),
    ("sas", STATES, ["--all", "--among", "192.168.100.1", "192.168.100.2"], "2"),
    ("sas", STATES, ["--all", "--among", "192.168.100.1", "192.168.100.9"], "0"),  # both ends must be among them
    ("sas", STATES, ["--all", "--except-spi", "0x1000"], "1"),
    ("sas", STATES, ["--all", "--except-spi", "4096", "--except-spi", "0x00001001"], "0"),
    ("sas", STATES, ["--all", "--offload", "eth0"], "0"),  # not offloaded
    ("sas", PACKET_SAS, [], "2"),
    ("sas", PACKET_SAS, ["--offload", "eth0"], "2"),
    ("sas", PACKET_SAS, ["--offload", "eth0:packet"], "2"),
    ("sas", PACKET_SAS, ["--offload", "eth0:crypto"], "0"),
    ("sas", PACKET_SAS, ["--offload", "eth1:packet"], "0"),
    ("sps", PACKET_SPS, ["--all", "--offload", "eth0:packet"], "2"),
    ("sps", PACKET_SPS, ["--foreign"], "0"),
    ("sps", POLICIES, ["--all"], "2"),
    ("sps", POLICIES, ["--foreign"], "1"),
    # policy selectors carry a prefix length: the address before it counts
    ("sps", PACKET_SPS, ["--among", "203.0.113.1", "203.0.113.2"], "2"),
    ("sps", PACKET_SPS, ["--among", "203.0.113.1"], "0"),
    ("sps", GUARDS, [], "4"),             # three guards and their SA policy
    ("sps", GUARDS, ["--all"], "5"),
    ("guards", GUARDS, [], "3"),
    ("guards", GUARDS.replace("mark 0/0x1", "mark 0/0x3"), [], "2"),   # another mask: not a guard
    ("guards", GUARDS.replace("reqid 1371537410", "reqid 7"), [], "2"),  # foreign: not ours
    ("guards", PACKET_SPS, [], "0"),
])
def test_selections(what, text, args, want):
    assert run(what, text, *args) == (0, want, "")


def test_lists_of_sas():
    assert run("ids", STATES) == (0, "192.168.100.1>192.168.100.2:0x00001000", "")
    assert run("ids", STATES, "--all")[1].splitlines() == [
        "192.168.100.1>192.168.100.2:0x00001000", "192.168.100.2>192.168.100.1:0x00001001"]
    assert run("spis", PACKET_SAS)[1].splitlines() == ["0x0000d0f1", "0x0000d0f2"]
    assert run("spis", STATES, "--foreign") == (0, "0x00001001", "")
    assert run("deletes", STATES, "--all")[1].splitlines() == [
        "xfrm state delete src 192.168.100.2 dst 192.168.100.1 proto esp spi 0x00001001",
        "xfrm state delete src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00001000"]
    assert run("deletes", "") == (0, "", "")


def test_larval_states_can_be_left_out():
    """An acquire (larval) state has SPI 0: the IKE suite's SPI lists leave it out with --except-spi 0."""
    larval = "src 192.168.100.1 dst 192.168.100.2\n\tproto esp spi 0x00000000 reqid 9 mode transport\n\treplay-window 0 \n"
    text = STATES + larval
    assert run("spis", text, "--foreign")[1].splitlines() == ["0x00000000", "0x00001001"]
    assert run("spis", text, "--foreign", "--except-spi", "0") == (0, "0x00001001", "")


def test_objects_are_steady_under_traffic_and_show_any_change():
    """sa-objects / sp-objects: the foreign-objects-untouched checks of demo.sh and ike.sh.  The
    counters (-s, lastused, the replay state) are left out; a change of what the SA is shows; a key
    is a hash, never itself."""
    plain = run("sa-objects", fixture("xfrm/lab-xfrm-state.txt"), "--all")
    assert plain[0] == 0 and len(plain[1].splitlines()) == 2
    assert run("sa-objects", fixture("xfrm/lab-xfrm-state-s.txt"), "--all") == plain
    assert "1111111111" not in plain[1] and '"key": "sha256:' in plain[1]
    rekeyed = fixture("xfrm/lab-xfrm-state.txt").replace("0x1111111111111111111111111111111111111111", "0x" + "3" * 40)
    assert run("sa-objects", rekeyed, "--all") != plain
    assert run("sa-objects", fixture("xfrm/lab-xfrm-state.txt").replace("reqid 2 ", "reqid 3 "), "--all") != plain
    sps = run("sp-objects", fixture("xfrm/lab-xfrm-policy.txt"), "--all")
    assert sps[0] == 0 and len(sps[1].splitlines()) == 2
    assert run("sp-objects", fixture("xfrm/lab-xfrm-policy-s.txt"), "--all") == sps
    assert run("sp-objects", fixture("xfrm/lab-xfrm-policy.txt").replace("priority 0", "priority 7", 1), "--all") != sps
    assert run("sa-objects", "", "--all") == (0, "", "")


# ---- the IKE daemons' status (lab/ike.sh) ----------------------------------------------------------

SWANCTL = fixture("ike/swanctl-list-sas-sample.txt").replace("lab:", "ipsec_offload_mlx5-lab1-lab2:")
TRAFFIC = """\
#3: "ipsec_offload_mlx5-lab1-lab2-c1", type=ESP, add_time=1732456789, inBytes=0, outBytes=1408, maxBytes=2^63B, id='192.168.100.2'
#7: "someone-else", type=ESP, add_time=1732456790, inBytes=1408, outBytes=0, maxBytes=2^63B, id='192.168.100.2'
"""
# c2 has a superseded state (#3) beside its newest (#5): its SAs are still in the kernel, so listed
SHOWSTATES = """\
#2: "ipsec_offload_mlx5-lab1-lab2-c1" esp.248d1071@192.168.100.2 esp.4e68b7a9@192.168.100.1 Traffic: ESPin=0B ESPout=0B ESPmax=2^63B
000 #5: "ipsec_offload_mlx5-lab1-lab2-c2" esp.b81df6e@192.168.100.2 esp.8fd9bdcd@192.168.100.1 Traffic: ESPin=128B ESPout=0B ESPmax=2^63B
000 #3: "ipsec_offload_mlx5-lab1-lab2-c2" esp.a3a6c6eb@192.168.100.2 esp.1fd9bdcd@192.168.100.1 Traffic: ESPin=0B ESPout=0B ESPmax=2^63B
"""


@pytest.mark.parametrize("what, backend, text, want", [
    ("ike-status", "strongswan", SWANCTL, "1 IKE / 1 CHILD"),
    ("ike-status", "strongswan", fixture("ike/swanctl-list-sas-sample.txt"), "0 IKE / 0 CHILD"),  # not ours
    ("ike-status", "strongswan", SWANCTL.replace("INSTALLED", "REKEYED"), "1 IKE / 0 CHILD"),
    ("ike-status", "strongswan", "", "0 IKE / 0 CHILD"),
    ("ike-status", "libreswan", TRAFFIC, "1 CHILD"),
    ("ike-status", "libreswan", "", "0 CHILD"),
    ("ike-spis", "strongswan", SWANCTL, "0xc52f2ad7\n0xcf62a413"),
    ("ike-spis", "libreswan", SHOWSTATES, "0x0b81df6e\n0x1fd9bdcd\n0x248d1071\n0x4e68b7a9\n0x8fd9bdcd\n0xa3a6c6eb"),
    ("ike-spis", "libreswan", "", ""),
])
def test_ike_daemons(what, backend, text, want):
    assert run(what, text, backend) == (0, want, "")


# ---- ethtool -S and /proc/net/xfrm_stat (lifecycle.sh, topologies.sh, rekey.sh) ----------------------

ETHTOOL = "NIC statistics:\n     rx_packets: 10\n     ipsec_rx_pkts: 12\n     ipsec_tx_pkts: 34\n     ipsec_tx_drop_pkts: 0\n"
XSTAT = "XfrmInError             \t0\nXfrmInStateSeqError     \t3\nXfrmOutPolBlock         \t5\n"


def test_counters(tmp_path):
    assert run("ethtool", ETHTOOL, "ipsec_tx_pkts", "ipsec_rx_pkts") == (0, "34/12", "")
    assert run("ethtool", ETHTOOL, "ipsec_tx_drop_pkts", "ipsec_rx_drop_pkts") == (0, "0/?", "")
    assert run("xfrm-stat", XSTAT, "XfrmInStateSeqError") == (0, "3", "")
    assert run("xfrm-stat", XSTAT, "XfrmNope") == (0, "?", "")
    before = tmp_path / "before"
    before.write_text(XSTAT)
    assert run("xfrm-stat-delta", XSTAT, str(before)) == (0, "", "")
    later = XSTAT.replace("3\n", "4\n").replace("5\n", "9\n")
    assert run("xfrm-stat-delta", later, str(before)) == (0, "XfrmInStateSeqError +1 XfrmOutPolBlock +4", "")


@pytest.mark.parametrize("what, args, says", [
    ("sas", ["--bogus"], "sas: unknown arguments --bogus"),
    ("sas", ["strongswan"], "sas: unknown arguments strongswan"),
    ("sas", ["--all", "--foreign"], "--all and --foreign exclude each other"),
    ("sas", ["--except-spi", "zz"], "--except-spi 'zz' is not a number"),
    ("ike-spis", [], "ike-spis needs one argument, the backend"),
    ("ike-status", ["racoon"], "ike-status needs one argument, the backend"),
    ("ethtool", [], "ethtool needs the names of the counters"),
    ("xfrm-stat", [], "xfrm-stat needs one argument"),
    ("xfrm-stat-delta", ["/nonexistent/before"], "No such file"),
])
def test_bad_arguments_say_what(what, args, says):
    rc, out, err = run(what, "", *args)
    assert rc == 1 and out == "" and says in err


# ---- lab/sa_keys.py: runs on a VM behind _xfrm_text.py (lab/lifecycle.sh sa_keys) --------------------

def _sa_keys_namespace():
    """The one text lifecycle.sh sends to `python3 -` on the VM, compiled, not run as __main__."""
    text = "\n".join((ROOT / p).read_text(encoding="utf-8")
                     for p in ("plugins/module_utils/_xfrm_text.py", "lab/sa_keys.py"))
    ns = {"__name__": "sa_keys_on_the_vm"}
    exec(compile(text, "<vm>", "exec"), ns)  # pylint: disable=exec-used
    return ns


def test_sa_keys_hashes_keys_and_marks_foreign_sas():
    ns = _sa_keys_namespace()
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm  # pylint: disable=import-outside-toplevel
    assert ns["OWNED"] == _xfrm.OWNED_REQID_RANGE
    text = fixture("xfrm/lab-xfrm-state.txt").replace("reqid 1 ", "reqid 1371537409 ")
    lines = ns["sa_lines"](text)
    assert [ln.split()[:-1] for ln in lines] == [
        ["F", "192.168.100.2>192.168.100.1", "0x00001001", "0x00000002"],
        ["192.168.100.1>192.168.100.2", "0x00001000", "0x51c00001"]]
    assert lines[1].split()[3] == hashlib.sha256(("1" * 40).encode()).hexdigest()
    assert not any("1111111111" in ln or "2222222222" in ln for ln in lines)
    # nokeys, or keys zeroed by lockdown: nothing to hash, no line
    assert ns["sa_lines"](fixture("xfrm/lab-xfrm-state.txt").replace("0x1111111111111111111111111111111111111111", "<<Keys hidden>>")) \
        == [lines[0]]


# ---- foreign objects (lab/reliability.sh foreign_of): rules and qdiscs of `tc -j` ------------------

def test_foreign_tc_rules_and_qdiscs():
    owned_push = "#dev vf0_rep\n%s\n" % PUSH
    foreign_push = "#dev vf0_rep\n%s\n" % _foreign(PUSH)
    assert run("tc-objects", owned_push, "--foreign") == (0, "", "")
    rc, out, err = run("tc-objects", foreign_push + "#dev link0\n%s\n" % POP, "--foreign")
    assert rc == 0 and err == "" and len(out.splitlines()) == 1 and out.startswith('["vf0_rep", ')
    assert run("tc-objects", foreign_push, "--all")[1] == out
    assert "cookie" not in json.dumps(json.loads(out)[1]["options"]["actions"][0])
    # counters and action indexes are no change; a rule changed is
    counted = json.loads(_foreign(PUSH))
    for a in counted[1]["options"]["actions"]:
        a["stats"] = {"packets": 99, "bytes": 9999}
    assert run("tc-objects", "#dev vf0_rep\n%s\n" % json.dumps(counted), "--foreign")[1] == out
    counted[1]["pref"] = 7
    assert run("tc-objects", "#dev vf0_rep\n%s\n" % json.dumps(counted), "--foreign")[1] != out
    qdiscs = fixture("tc/qdisc_show_ingress_clsact_host.json")
    assert run("qdiscs", "#dev r0\n%s\n" % qdiscs) == (0, "r0 ingress\nr1 clsact", "")
    assert run("qdiscs", "#dev link0\n#dev vf0_rep\n") == (0, "", "")
    # `tc -j qdisc show dev link0` names no device in its objects (iproute2 prints "dev" only for an
    # unfiltered dump): the "#dev" line's name is taken
    one_dev = json.dumps([{"kind": "noqueue", "handle": "0:", "root": True, "refcnt": 2, "options": {}},
                          {"kind": "ingress", "handle": "ffff:", "parent": "ffff:fff1", "options": {}}])
    assert run("qdiscs", "#dev link0\n%s\n#dev vf0_rep\n[]\n" % one_dev) == (0, "link0 ingress", "")


def test_foreign_objects_change_only_with_a_foreign_object():
    """reliability.sh's snapshot of foreign objects: an owned SA or policy replaced (a rekey) is no
    change; a foreign one changed is."""
    before = (run("sa-objects", STATES, "--foreign"), run("sp-objects", POLICIES, "--foreign"))
    assert before[0][1] and before[1][1]
    rekeyed = (run("sa-objects", STATES.replace("spi 0x00001000", "spi 0x00002000"), "--foreign"),
               run("sp-objects", POLICIES.replace("dir out priority 0", "dir out priority 9"), "--foreign"))
    # the out policy (reqid 1371537409) is the owned one, the in policy (reqid 2) the foreign one
    assert POLICIES.index("dir out priority 0") < POLICIES.index("reqid 1371537409 ") and POLICIES.index("reqid 2 ") < POLICIES.index("dir out")
    assert rekeyed == before
    assert run("sa-objects", STATES.replace("spi 0x00001001", "spi 0x00002001"), "--foreign") != before[0]
    assert run("sp-objects", POLICIES.replace("dir in priority 0", "dir in priority 9"), "--foreign") != before[1]
