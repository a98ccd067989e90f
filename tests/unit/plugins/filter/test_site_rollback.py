# -*- coding: utf-8 -*-
"""Site-level rollback of playbooks/site.yml, for real (ansible-playbook, simulated kernel as in
test_rekey_playbook.py): the site's own "IPsec states and policies" and "Topology after IPsec" plays,
taken from playbooks/site.yml unchanged, with a topology that fails after the IPsec play applied
(ipsec_topology=vxlan_overlay without its variables: the role refuses). The rescue must give each
namespace back exactly as it was: a foreign SP kept, a stale owned SP (removed by the IPsec play)
given back, the SAs and SPs the run added removed; no key in the output."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

from test_lifecycle_playbook import LIFECYCLE
from test_rekey_playbook import DERIVE, FAKE_IP, assert_no_keys, run, store_keys, write_inventory
from test_rekey_playbook import site_subset as site_plays
# the simulated fixture is used by name as a test argument
from test_rekey_playbook import simulated  # noqa: F401  # pylint: disable=unused-import

PLAYS = ("IPsec states and policies", "Topology after IPsec")


def site_subset(tmp_path):
    # with the SA lifecycle (as site.yml runs it): on a fresh pair its heal phase adds the inbound
    # SAs before the IPsec play adds the outbound ones; the rollback must remove both
    return site_plays(tmp_path, PLAYS, imports=(DERIVE, LIFECYCLE))


def fake_ip(env, ns, *args, stdin=""):
    p = subprocess.run([sys.executable, FAKE_IP, "-n", ns] + list(args), input=stdin, text=True,
                       capture_output=True, env=dict(os.environ, **env), check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def dump(simdir, ns):
    with open(simdir / (ns + ".sim"), "rb") as fh:
        sim = pickle.load(fh)
    return sim.state_text() + "==\n" + sim.policy_text()


def test_topology_failure_rolls_back_the_ipsec_play(tmp_path, simulated):
    env, simdir = simulated
    # guards off: deleting a guard (mark value 0) goes over netlink, which the simulated kernel
    # behind the stand-in `ip` cannot see (the netns test of the policy module covers it for real)
    inv = write_inventory(tmp_path, "sim1", "sim2", fail_closed=False)
    for ns, me in (("sim1", "192.168.100.1"), ("sim2", "192.168.100.2")):
        fake_ip(env, ns, "-batch", "-", stdin=(
            "xfrm policy add src %s/32 dst 10.99.0.1/32 dir out priority 9 tmpl src %s dst 10.99.0.1 proto esp reqid 0x100 mode transport\n"
            "xfrm policy add src %s/32 dst 10.98.0.1/32 dir out priority 5 tmpl src %s dst 10.98.0.1 proto esp reqid 0x51c0fff0 mode transport\n"
            % (me, me, me, me)))
    before = {ns: dump(simdir, ns) for ns in ("sim1", "sim2")}
    assert "reqid 1371602928" in before["sim1"] and "10.99.0.1" in before["sim2"]

    rc, out = run(tmp_path, site_subset(tmp_path), inv, "-e", "ipsec_topology=vxlan_overlay", env=env)
    assert rc != 0, out
    # the IPsec play applied (SAs added), then the topology play failed and its rescue rolled back
    assert "TASK [ipsec_offload.mlx5.ipsec : Remove the SAs this run added]" in out, out
    assert re.search(r"TASK \[New inbound SAs \(merged\)\][^\n]*\n(?:changed|ok): \[lab\d\]", out), out
    for host in ("lab1", "lab2"):
        assert re.search(r'fatal: \[%s\]: FAILED! => .*The topology step failed on %s \(task [^)]+\): [^"]+ IPsec rollback: '
                         r'removed 2 SA\(s\) and 2 policy\(ies\) this run added, restored 1 policy\(ies\)\.' % (host, host), out), out
    assert {ns: dump(simdir, ns) for ns in ("sim1", "sim2")} == before
    keys = store_keys(tmp_path)
    assert len(keys) == 2
    assert_no_keys(out, keys)
    # the batches really added and removed the run's SAs
    log = (simdir / "batches.log").read_text()
    assert log.count("xfrm state add") == 4 and log.count("xfrm state delete") == 4, log  # 2 per namespace


def test_check_mode_reports_and_changes_nothing(tmp_path, simulated):
    env, simdir = simulated
    # guards off: deleting a guard (mark value 0) goes over netlink, which the simulated kernel
    # behind the stand-in `ip` cannot see (the netns test of the policy module covers it for real)
    inv = write_inventory(tmp_path, "sim1", "sim2", fail_closed=False)
    run(tmp_path, DERIVE, inv, env=env)  # the key store first (check mode never writes it)
    rc, out = run(tmp_path, site_subset(tmp_path), inv, "-e", "ipsec_topology=vxlan_overlay", env=env, check=True)
    assert rc != 0, out
    assert "check mode: reported, not done" in out, out
    assert not (simdir / "batches.log").exists() or "add" not in (simdir / "batches.log").read_text()
