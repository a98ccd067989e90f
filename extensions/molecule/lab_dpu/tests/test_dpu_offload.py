"""Packet offload on the real pair: preflight ready, every owned SA and in/out policy offloaded in
packet mode on the NIC, and the NIC's ethtool ipsec_* packet counters rising with traffic on both
peers (read with the collection's ipsec_offload_info module, run through testinfra's host.ansible)."""
from __future__ import annotations

import json
import os
import shlex

import xfrm_view

PINGS = 20


def _dev(host) -> str:
    dev = os.environ.get("IPSEC_DPU_DEV") or host.ansible.get_variables().get("ipsec_dev")
    assert dev, "no NIC netdev: set ipsec_dev in the inventory or IPSEC_DPU_DEV"
    return dev


def _info(host, dev):
    args = {"devices": [dev], "sa_counters": False}
    # the drivers the inventory accepts for packet offload (site.yml's preflight reads the same
    # variable; default mlx5_core): a lab's simulated ConnectX is netdevsim to the kernel
    drivers = host.ansible.get_variables().get("ipsec_packet_offload_drivers")
    if drivers:
        args["packet_offload_drivers"] = list(drivers)
    ns = os.environ.get("IPSEC_VERIFY_NETNS", "")
    if ns:
        args["namespace"] = ns
    return host.ansible("ipsec_offload.mlx5.ipsec_offload_info", json.dumps(args), check=False)


def test_preflight_says_packet_offload_ready(pair):
    for name, host in pair.items():
        summary = _info(host, _dev(host))["summary"]
        assert summary["packet_offload_ready"], "%s: %s" % (name, summary["reasons"])


def test_owned_sas_and_policies_are_packet_offloaded(pair, dumps, rng):
    for name, d in dumps.items():
        dev = _dev(pair[name])
        owned = [sa for sa in d["states"] if xfrm_view.is_owned_sa(sa, rng)]
        assert owned, "%s: no owned SA" % name
        bad = [(sa["src"], sa["dst"], "0x%08x" % sa["spi"], sa["offload"]) for sa in owned
               if not sa["offload"] or sa["offload"]["mode"] != "packet" or sa["offload"]["dev"] != dev]
        assert not bad, "%s: owned SAs not in packet offload on %s: %s" % (name, dev, bad)
        owned_pols = [p for p in d["policies"] if xfrm_view.is_owned_policy(p, rng) and p["dir"] in ("in", "out")]
        # the fail-closed guards (action block, never offloaded) sit beside the SA policies
        pols = [p for p in owned_pols if p.get("action") != "block"]
        guards = [p for p in owned_pols if p.get("action") == "block"]
        assert pols, "%s: no owned in/out SA policy" % name
        bad = [(p["dir"], p["sel"], p["offload"]) for p in pols if not p["offload"] or p["offload"]["mode"] != "packet"]
        assert not bad, "%s: owned SA policies not in packet offload: %s" % (name, bad)
        assert not [g for g in guards if g["offload"]], "%s: a guard policy is offloaded: %s" % (name, guards)
        unguarded = {(p["dir"], p["sel"]) for p in pols} - {(g["dir"], g["sel"]) for g in guards}
        if pair[name].ansible.get_variables().get("ipsec_fail_closed", True) not in (False, "false", "no"):
            assert not unguarded, "%s: SA policies without a guard (fail closed): %s" % (name, sorted(unguarded))


def test_nic_ipsec_counters_rise_on_both_peers(pair, dumps, salt, rng):
    (a, da), (b, db) = sorted(dumps.items())
    aa, ba = set(da["addresses"]), set(db["addresses"])
    outs = xfrm_view.sas_between(da, aa, ba, rng)
    assert outs, "%s has no owned SA towards %s" % (a, b)
    target = sorted(x[1] for x in outs)[0]
    devs = {n: _dev(h) for n, h in pair.items()}
    before = {n: _info(h, devs[n])["devices"][devs[n]]["ipsec_counters"] for n, h in pair.items()}
    assert all(v is not None for v in before.values()), "ethtool could not be read: %s" % before
    ns = os.environ.get("IPSEC_VERIFY_NETNS", "")
    prefix = "ip netns exec %s " % shlex.quote(ns) if ns else ""
    ping = pair[a].run(prefix + "ping -n -q -c %d -i 0.2 -W 2 %s" % (PINGS, shlex.quote(target)))
    assert ping.rc == 0, "ping %s from %s failed: %s %s" % (target, a, ping.stdout, ping.stderr)
    for n, h in pair.items():
        # the kernel's per-SA counts (from the NIC with packet offload): shown, not asserted
        for key, packets in sorted(xfrm_view.counters(xfrm_view.dump(h, salt, ns), rng).items()):
            print("%s SA %s -> %s spi 0x%08x: %d packets" % (n, key[0], key[1], key[2], packets))
        after = _info(h, devs[n])["devices"][devs[n]]["ipsec_counters"]
        delta = xfrm_view.nic_packet_deltas(before[n], after)
        print("%s %s ipsec_* packet counter rise: %s" % (n, devs[n], delta))
        assert delta["tx"] is not None and delta["rx"] is not None, \
            "%s %s: no ipsec_* tx/rx packet counters in ethtool -S: %s" % (n, devs[n], sorted(after))
        assert delta["tx"] >= PINGS and delta["rx"] >= PINGS, \
            "%s %s: NIC IPsec counters rose by %s for %d pings each way" % (n, devs[n], delta, PINGS)
