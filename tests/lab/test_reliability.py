# -*- coding: utf-8 -*-
"""The checks of the lab reliability suite (issue 7 items 1, 4, 5, 6), as pytest.

NEEDS THE LAB: lab/reliability.sh drives the two VMs (plants foreign state, samples argv, runs and
interrupts the playbooks, collects the keys) and leaves its evidence in REL_OUT: facts.jsonl (one
JSON object per fact: kind, name, then what it saw) and the files the facts name.  It then runs this
file on that directory; its exit status is the suite's verdict.  Without REL_OUT there is nothing
to check and every test is skipped, saying so (this file is not part of the unit run).

Environment: REL_OUT (the evidence), REL_STORE (the key store), REL_KEYS (the keys collected from
both kernels and the store, one hex key||salt per line), REL_STAGES_RUN (the optional stages that ran).

Keys are never printed: lab/reliability.sh runs this file with --assert=plain (pytest's assertion
rewriting would show the values of an assert's subexpressions), the asserts on keys carry their own
messages with counts only, and the suite then searches this file's output for the keys too.
"""

from __future__ import annotations

import glob
import json
import os
import re
import stat
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reliability_lib as R  # noqa: E402  pylint: disable=wrong-import-position

OUT = os.environ.get("REL_OUT")
pytestmark = pytest.mark.skipif(not OUT, reason="needs the evidence of lab/reliability.sh (REL_OUT): run that")


def facts(kind):
    with open(os.path.join(OUT, "facts.jsonl"), encoding="utf-8") as fh:
        return [f for f in map(json.loads, fh) if f["kind"] == kind]


def text(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def stages():
    return set((os.environ.get("REL_STAGES_RUN") or "").split())


# ---- 1. keys ------------------------------------------------------------------------------------

def keys():
    return R.read_keys(os.environ["REL_KEYS"])


def test_keys_of_both_directions_were_collected():
    n = len(keys())
    assert n >= 2, "%d keys collected, expected both directions of every generation" % n


def test_key_store_is_private():
    store = os.environ["REL_STORE"]
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(store)).st_mode) == 0o700


def test_the_search_finds_the_keys_where_they_are():
    """Positive control: the key store holds keys by design (current and previous of each direction);
    they are among the keys searched for, and the search finds every one of them there."""
    with open(os.environ["REL_STORE"], encoding="utf-8") as fh:
        stored = sorted({k.lower() for k in R.keystore_keys(fh.read())})
    missing = len(set(stored) - set(keys()))
    assert len(stored) >= 2 and missing == 0, "%d keys in the store, %d of them not searched for" % (len(stored), missing)
    found = R.search(stored, [os.environ["REL_STORE"]])
    n, hits = found["occurrences"], len(found["hits"])
    assert n >= len(stored) and hits >= len(stored), "found %d times (%d forms) for %d keys" % (n, hits, len(stored))


def test_no_key_in_logs_results_rendered_files_or_argv():
    paths = (glob.glob(os.path.join(OUT, "*.log")) + [os.path.join(OUT, "results")]
             + glob.glob(os.path.join(OUT, "render-*")) + glob.glob(os.path.join(OUT, "argv-lab*.txt")))
    found = R.search(keys(), paths)
    assert found["files"] > 10 and found["bytes"] > 0, "nothing to search: %r" % {k: found[k] for k in ("files", "bytes")}
    assert found["occurrences"] == 0, found["hits"][:20]


def test_no_key_in_the_vms_files():
    hits = facts("vmhits")
    assert {h["name"] for h in hits} == {"lab1", "lab2"}
    for h in hits:
        assert text(h["file"]).split() == [], "%s: files holding a key: %s" % (h["name"], text(h["file"]))


def test_argv_was_sampled_on_both_vms():
    for n in (1, 2):
        head = text(os.path.join(OUT, "argv-lab%d.txt" % n)).splitlines()[0]
        m = re.match(r"#samples (\d+) argv-reads (\d+)", head)
        assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, head


# ---- 4. interruptions -----------------------------------------------------------------------------

def test_every_interruption_converges():
    """After each interruption: the re-run succeeds and reports changed>0 when it had work left (a
    module already running on the host may finish after its controller died: then changed=0 is right),
    and site.yml --check --diff then has nothing to change."""
    ints = facts("interrupt")
    want = {"conv-sigkill": "converge-sigkill", "conv-sshclient": "converge-sshclient",
            "rekey-sigint": "rekey-sigint", "rekey-sshd": "rekey-sshd"}
    assert {i["name"] for i in ints} == {want[s] for s in stages() if s in want}
    reruns = {f["name"]: f for f in facts("rerun")}
    idems = {f["name"]: f for f in facts("idem")}
    for i in ints:
        r, idem = reruns[i["name"]], idems[i["name"]]
        assert r["rc"] == 0, (i, r)
        if r["left"]:
            assert r["changed"] > 0, ("work was left but the re-run reported changed=0", i, r)
        assert idem["rc"] == 0 and idem["summary"] == "changed=0 failed=0", (i, idem)


def test_module_processes_settle_after_each_interruption():
    for f in facts("settle"):
        assert f["ok"] == 1, "%s: a module process still worked 300 s after the kill on %s" % (f["name"], f["host"])


def test_overridden_removes_a_stray_owned_sa():
    if "conv-sigkill" not in stages():
        pytest.skip("stage conv-sigkill did not run")
    (f,) = facts("stray")
    assert text(f["file"]).strip() == ""


def test_steps_of_the_suite_succeed():
    """The runs the suite makes besides the interrupted ones (converge for a stage, tc_flower_vlan
    overridden/deleted, rekey.yml --check during a rotation, teardown.yml, site.yml after the
    concurrent runs)."""
    bad = [f for f in facts("step") if f["rc"] != 0]
    assert bad == []
    assert any(f["name"].startswith("teardown.yml") for f in facts("step"))


def test_teardown_leaves_no_owned_object():
    (f,) = facts("owned")
    assert f["left"] == 0


# ---- owned objects = the derivation, 5. foreign objects ---------------------------------------------

def test_owned_objects_as_derived():
    """After every re-run and concurrent run the owned SAs/SPs on each host are exactly what
    render.yml derives: no duplicate, no orphan."""
    renders = facts("render")
    assert all(f["rc"] == 0 for f in renders), [f for f in renders if f["rc"]]
    checks = facts("expect")
    assert len(checks) == 2 * len(renders)
    for f in checks:  # line lists compared as multisets: a duplicate or an orphan differs
        want, got = text(f["expect"]).splitlines(), text(f["got"]).splitlines()
        assert got, "no owned object on %s after %s" % (f["host"], f["name"])
        assert sorted(got) == sorted(want), "%s %s: %s vs %s" % (f["name"], f["host"], f["expect"], f["got"])


def test_foreign_objects_intact():
    (planted,) = facts("foreign")[:1]
    before = text(planted["file"])
    assert planted["name"] == "planted" and len(before.splitlines()) >= 20, before
    later = facts("foreign")[1:]
    assert later, "no snapshot after the planting"
    changed = [f["name"] for f in later if text(f["file"]) != before]
    assert changed == [], "foreign objects changed after: %s" % changed


# ---- 6. the lock, concurrent runs ---------------------------------------------------------------------

def test_a_held_lock_refuses_naming_the_holder_and_changes_nothing():
    (f,) = facts("lock")
    assert f["rc"] != 0
    assert "holds the host lock /run/ipsec_offload_mlx5.lock: PID %s" % f["holder"] in text(f["log"])
    assert text(f["before"]) == text(f["after"])


def test_two_site_runs_at_once():
    if "conc-site-site" not in stages():
        pytest.skip("stage conc-site-site did not run")
    (f,) = [t for t in facts("together") if t["name"] == "conc-site-site"]
    assert (f["rc1"], f["rc2"]) == (0, 0), f


def test_site_and_teardown_at_once_never_bring_back_an_old_key():
    """A key serves one SA instance, ever: site.yml read the hosts before teardown removed them and
    must never put a removed SA back with its old key.  Allowed: site.yml succeeds (its SA step ran
    before teardown's removal, or after a rotation), or refuses with the "never added again" message."""
    if "conc-site-teardown" not in stages():
        pytest.skip("stage conc-site-teardown did not run")
    (f,) = [t for t in facts("together") if t["name"] == "conc-site-teardown"]
    assert f["rc2"] == 0, "teardown.yml failed: %s" % f["log2"]
    assert f["rc1"] == 0 or "never added again with its old key" in text(f["log1"]), f["log1"]
    (s,) = facts("spis")
    back = set(text(s["before"]).split()) & set(text(s["after"]).split())
    assert back == set(), "SAs teardown removed are back with their old SPI and key: %s" % sorted(back)
