# -*- coding: utf-8 -*-
"""The SA lifecycle through ansible-playbook (simulated kernel behind a stand-in `ip`, as in
test_rekey_playbook.py): derive.yml, playbooks/lifecycle.yml and the plays of playbooks/site.yml
that install the SAs and refuse held pairs, taken from site.yml unchanged.

A lost SA is never re-added with its old key: after the owned SAs of one host are deleted (what the
kernel does to offloaded SAs on link down, and a reboot does to all), the next converge rotates
each lost direction on BOTH peers (new SPI, new key), the receivers' inbound SA first; a further
run is changed=0; with the peer outside the run (--limit) nothing is re-added and the run fails
naming the pair and the command; check mode names the rotation and writes nothing; guards are
installed beside every SA policy; no key in any output."""

from __future__ import annotations

import os
import pickle

import yaml

from test_rekey_playbook import DERIVE, ROOT, assert_no_keys, recap, run, sim_states, store, write_inventory
from test_rekey_playbook import site_subset as site_plays
# the simulated fixture is used by name as a test argument
from test_rekey_playbook import simulated  # noqa: F401  # pylint: disable=unused-import

LIFECYCLE = os.path.join(ROOT, "playbooks", "lifecycle.yml")
PLAYS = ("IPsec states and policies", "SA lifecycle - directions that could not be healed in this run")


def site_subset(tmp_path):
    with open(os.path.join(ROOT, "playbooks", "site.yml"), encoding="utf-8") as fh:
        assert any(p.get("ansible.builtin.import_playbook") == "lifecycle.yml" for p in yaml.safe_load(fh))
    return site_plays(tmp_path, PLAYS, imports=(DERIVE, LIFECYCLE))


def all_keys(tmp_path):
    keys = set()
    for dsts in store(tmp_path).values():
        for e in dsts.values():
            keys.add(e["key"][2:].lower())
    return keys


def drop_states(simdir, ns):
    """Delete every SA of a simulated namespace (the kernel's flush on link down / a reboot)."""
    path = simdir / (ns + ".sim")
    with open(path, "rb") as fh:
        sim = pickle.load(fh)
    sim.states.clear()
    with open(path, "wb") as fh:
        pickle.dump(sim, fh)


def sim_policies(simdir, ns):
    with open(simdir / (ns + ".sim"), "rb") as fh:
        return pickle.load(fh).policies


def test_lost_sas_rotate_on_both_peers_never_readded(tmp_path, simulated):
    env, simdir = simulated
    inv = write_inventory(tmp_path, "sim1", "sim2")
    site = site_subset(tmp_path)
    a, b = "192.168.100.1", "192.168.100.2"

    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    g1 = store(tmp_path)
    s12, s21 = g1["lab1"]["lab2"]["spi"], g1["lab2"]["lab1"]["spi"]
    assert g1["lab1"]["lab2"]["installed"] is True and g1["lab2"]["lab1"]["installed"] is True
    k1 = {"sim1": sim_states(simdir, "sim1"), "sim2": sim_states(simdir, "sim2")}
    assert set(k1["sim1"]) == set(k1["sim2"]) == {(s12, b), (s21, a)}
    # an SA policy and its two guards for each direction on each host
    pol = sim_policies(simdir, "sim1")
    assert len(pol) == 6 and sum(1 for p in pol.values() if p["action"] == "block") == 4
    # and kept for boot (below ipsec_guards_root here): two guards per SA policy, no key
    boot = (tmp_path / "root" / "etc" / "ipsec_offload_mlx5" / "guards" / "sim1.batch").read_text()
    lines = boot.splitlines()
    assert len(lines) == 6 and all(ln.startswith("xfrm policy add") and ln.count("xfrm") == 1 for ln in lines[2:])
    assert boot.endswith("\n") and boot.count("action block") == 4
    assert (tmp_path / "root" / "usr" / "local" / "sbin" / "ipsec-offload-mlx5-guards").stat().st_mode & 0o111
    assert {p["mark"] for p in pol.values() if p["action"] == "block"} == {(0, 1), (1, 1)}
    keys1 = all_keys(tmp_path)

    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    r = recap(out)
    assert r["lab1"]["changed"] == r["lab2"]["changed"] == r["localhost"]["changed"] == 0, out

    # lab1 loses its SAs (link down of the offload netdev / reboot): the next run rotates both
    # directions on both peers; no old SPI or key comes back anywhere
    drop_states(simdir, "sim1")
    log0 = (simdir / "batches.log").read_text()
    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    assert "lab1->lab2: lost: SA spi %s (generation 1, current) missing on lab1 (out)" % s12 in out
    assert "lab2->lab1: lost: SA spi %s (generation 1, current) missing on lab1 (in)" % s21 in out
    g2 = store(tmp_path)
    n12, n21 = g2["lab1"]["lab2"]["spi"], g2["lab2"]["lab1"]["spi"]
    assert n12 not in (s12, s21) and n21 not in (s12, s21)
    assert g2["lab1"]["lab2"]["generation"] == g2["lab2"]["lab1"]["generation"] == 2
    k2 = {"sim1": sim_states(simdir, "sim1"), "sim2": sim_states(simdir, "sim2")}
    assert set(k2["sim1"]) == set(k2["sim2"]) == {(n12, b), (n21, a)}          # old remnants removed on lab2
    assert k2["sim1"][(n12, b)] == k2["sim2"][(n12, b)] and k2["sim1"][(n21, a)] == k2["sim2"][(n21, a)]
    old_keys = {v.lower() for d in k1.values() for v in d.values()}
    assert not old_keys & {v.lower() for d in k2.values() for v in d.values()}
    # order: every new inbound SA (heal phase) before any new outbound SA
    own = {"sim1": a, "sim2": b}
    kinds, ns = [], None
    for ln in (simdir / "batches.log").read_text()[len(log0):].splitlines():
        if ln.startswith("# "):
            ns = ln.split()[1]
        elif ln.startswith("xfrm state add"):
            dst = ln.split(" dst ", 1)[1].split()[0]
            kinds.append("in" if dst == own[ns] else "out")
    assert kinds.count("in") == 2 and kinds.count("out") == 2 and kinds.index("out") > 1, kinds
    keys2 = all_keys(tmp_path)
    assert_no_keys(out, keys1 | keys2)

    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    r = recap(out)
    assert r["lab1"]["changed"] == r["lab2"]["changed"] == r["localhost"]["changed"] == 0, out

    # check mode after another loss: named, nothing written, nothing changed on the hosts
    drop_states(simdir, "sim2")
    text = (tmp_path / "ks" / "keys.yml").read_text()
    before = (sim_states(simdir, "sim1"), sim_states(simdir, "sim2"))
    rc, out = run(tmp_path, site, inv, env=env, check=True)
    assert rc == 0, out
    assert "lab1->lab2: lost: SA spi %s" % n12 in out and "new generation 3" in out
    assert (tmp_path / "ks" / "keys.yml").read_text() == text
    assert (sim_states(simdir, "sim1"), sim_states(simdir, "sim2")) == before
    assert_no_keys(out, keys1 | keys2)

    # with both in the run it heals
    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    g3 = store(tmp_path)
    m12, m21 = g3["lab1"]["lab2"]["spi"], g3["lab2"]["lab1"]["spi"]
    assert set(sim_states(simdir, "sim1")) == set(sim_states(simdir, "sim2")) == {(m12, b), (m21, a)}
    assert {m12, m21}.isdisjoint({s12, s21, n12, n21})
    keys3 = all_keys(tmp_path)
    assert_no_keys(out, keys1 | keys2 | keys3)

    # --limit lab1 after lab1 lost its SAs: its peer is out of the run, so nothing is re-added;
    # the run fails naming both directions and the command that heals them
    drop_states(simdir, "sim1")
    text = (tmp_path / "ks" / "keys.yml").read_text()
    sim2_before = sim_states(simdir, "sim2")
    rc, out = run(tmp_path, site, inv, "--limit", "lab1,localhost", env=env)
    assert rc != 0
    assert "2 direction(s) not healed, never re-added with their old keys" in out
    assert "lab2 not in this run or not reachable" in out and "--limit lab1,lab2,localhost" in out
    assert (tmp_path / "ks" / "keys.yml").read_text() == text
    assert sim_states(simdir, "sim1") == {} and sim_states(simdir, "sim2") == sim2_before
    assert len(sim_policies(simdir, "sim1")) == 6          # SA policies and guards: traffic fails closed
    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    g4 = store(tmp_path)
    assert {g4["lab1"]["lab2"]["spi"], g4["lab2"]["lab1"]["spi"]}.isdisjoint({s12, s21, n12, n21, m12, m21})
    assert_no_keys(out, keys1 | keys2 | keys3 | all_keys(tmp_path))


def test_teardown_retires_keys_and_site_installs_new_instances(tmp_path, simulated):
    env, simdir = simulated
    # guards off here: deleting a guard (mark value 0) goes over netlink, which the simulated kernel
    # behind the stand-in `ip` cannot see (the policy module's netns test covers it for real)
    inv = write_inventory(tmp_path, "sim1", "sim2", fail_closed=False)
    site = site_subset(tmp_path)
    teardown = os.path.join(ROOT, "playbooks", "teardown.yml")
    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    g1 = store(tmp_path)
    keys1 = all_keys(tmp_path)
    rc, out = run(tmp_path, teardown, inv, env=env)
    assert rc == 0, out
    assert sim_states(simdir, "sim1") == sim_states(simdir, "sim2") == {}
    g2 = store(tmp_path)
    for s, d in (("lab1", "lab2"), ("lab2", "lab1")):
        assert g2[s][d]["installed"] is False and g2[s][d]["generation"] == 2
        assert g2[s][d]["spi"] != g1[s][d]["spi"] and g2[s][d]["key"] != g1[s][d]["key"]
        assert [r["spi"] for r in g2[s][d]["retired"]] == [g1[s][d]["spi"]]
    assert_no_keys(out, keys1 | all_keys(tmp_path))
    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out
    states = sim_states(simdir, "sim1")
    want = {(g2["lab1"]["lab2"]["spi"], "192.168.100.2"), (g2["lab2"]["lab1"]["spi"], "192.168.100.1")}
    assert set(states) == set(sim_states(simdir, "sim2")) == want
    assert not {v.lower()[2:] for v in states.values()} & keys1
    assert store(tmp_path)["lab1"]["lab2"]["installed"] is True
