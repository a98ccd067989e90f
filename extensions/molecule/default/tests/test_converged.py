"""Verify phase "converged" (after converge + idempotence): the pair's SA/SP sets mirror each other,
traffic across the pair is encrypted and counted by both peers' SAs, foreign objects are intact."""
from __future__ import annotations

import os
import shlex

import pytest

import xfrm_view

pytestmark = pytest.mark.phase("converged")

PINGS = 10


def _addrs(dumps):
    (a, da), (b, db) = sorted(dumps.items())
    return a, b, set(da["addresses"]), set(db["addresses"])


def test_each_host_has_owned_sas_and_policies_both_ways(dumps, rng):
    a, b, aa, ba = _addrs(dumps)
    for host, local, peer in ((a, aa, ba), (b, ba, aa)):
        d = dumps[host]
        assert xfrm_view.sas_between(d, local, peer, rng), "%s: no owned outbound SA to its peer" % host
        assert xfrm_view.sas_between(d, peer, local, rng), "%s: no owned inbound SA from its peer" % host
        assert xfrm_view.policies_between(d, "out", local, peer, rng), "%s: no owned out policy" % host
        assert xfrm_view.policies_between(d, "in", peer, local, rng), "%s: no owned in policy" % host


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
def test_sa_of_sender_equals_sa_of_receiver(dumps, rng, direction):
    """A's outbound SA == B's inbound SA: addresses, SPI, reqid, mode, algorithm and key (as hash)."""
    a, b, aa, ba = _addrs(dumps)
    (snd, sa), (rcv, ra) = ((a, aa), (b, ba)) if direction == "a->b" else ((b, ba), (a, aa))
    sent = xfrm_view.sas_between(dumps[snd], sa, ra, rng)
    received = xfrm_view.sas_between(dumps[rcv], sa, ra, rng)
    assert sent, "%s has no owned SA towards %s" % (snd, rcv)
    assert sent == received, "%s -> %s SAs differ:\n on %s: %s\n on %s: %s" % (snd, rcv, snd, sent, rcv, received)


def test_each_direction_has_its_own_key_and_spi(dumps, rng):
    a, b, aa, ba = _addrs(dumps)
    fwd = xfrm_view.sas_between(dumps[a], aa, ba, rng)
    rev = xfrm_view.sas_between(dumps[a], ba, aa, rng)
    fwd_keys = {alg[-1] for sa in fwd for alg in sa[6]}
    rev_keys = {alg[-1] for sa in rev for alg in sa[6]}
    assert fwd_keys and rev_keys
    assert not fwd_keys & rev_keys, "a key is shared by both directions (GCM nonce reuse risk)"
    assert not {sa[3] for sa in fwd} & {sa[3] for sa in rev}, "an SPI is used in both directions"


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
def test_out_policy_of_sender_equals_in_policy_of_receiver(dumps, rng, direction):
    a, b, aa, ba = _addrs(dumps)
    (snd, sa), (rcv, ra) = ((a, aa), (b, ba)) if direction == "a->b" else ((b, ba), (a, aa))
    out = xfrm_view.policies_between(dumps[snd], "out", sa, ra, rng)
    inn = xfrm_view.policies_between(dumps[rcv], "in", sa, ra, rng)
    assert out, "%s has no owned out policy towards %s" % (snd, rcv)
    assert out == inn, "policies differ:\n %s out: %s\n %s in: %s" % (snd, out, rcv, inn)


def test_every_owned_policy_has_its_sa_on_the_host(dumps, rng):
    for host, d in dumps.items():
        sa_keys = {(sa["src"], sa["dst"], sa["reqid"]) for sa in d["states"] if xfrm_view.is_owned_sa(sa, rng)}
        for pol in d["policies"]:
            if xfrm_view.is_owned_policy(pol, rng):
                for t in pol["tmpl"]:
                    assert (t["src"], t["dst"], t["reqid"]) in sa_keys, "%s: policy %s has no SA" % (host, pol["sel"])


def _traffic_plan(pair, a, b, target_sa_dst):
    """How to send traffic from host a to host b on this scenario's topology: (ping prefix, target,
    capture device, tcpdump filter, what to expect).  Read from the same inventory as converge."""
    inv = xfrm_view.lab_inventory()
    hv = {**inv["vars"], **(inv["hosts"].get(b) or {})}
    if inv["topology"] == "vxlan_overlay":
        # VF -> representor -> OVS -> vxlan1 -> udp/4789 -> ESP on the PF (link0) towards the peer's
        # tunnel endpoint; the overlay ping is invisible on the wire
        return ("", hv["vxlan_overlay_vf_address"].split("/")[0], inv["vars"]["ipsec_dev"],
                "host %s" % hv["ipsec_local_ip"], "vxlan")
    if inv["topology"] == "roce_vf":
        # ns0: VF -> representor ingress tc (push cvlan 5, vlan 10, mirred) -> PF (link0): QinQ + ESP
        return ("ip netns exec %s " % shlex.quote(inv["netns"]), hv["ipsec_local_ip"], inv["vars"]["roce_vf_pf"],
                "", "qinq")
    dev = pair[a].check_output("ip -o route get %s | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p'", target_sa_dst).strip()
    assert dev, "no route from %s to %s" % (a, target_sa_dst)
    return ("", target_sa_dst, dev, "host %s" % target_sa_dst, "plain")


def test_traffic_is_esp_and_counted_by_both_peers(pair, dumps, salt, rng):
    """Ping A -> B along the topology's path (plain: the peer; vxlan: the peer's overlay address
    through OVS; roce: from the VF's namespace through the QinQ tc rules); on A's wire only ESP
    leaves (roce: every ESP frame double-tagged, vlan 10 + cvlan 5; vxlan: no cleartext VXLAN);
    every owned SA of the pair on both peers counts >= PINGS more packets."""
    a, b, aa, ba = _addrs(dumps)
    netns = os.environ.get("IPSEC_VERIFY_NETNS", "")
    target_sa_dst = sorted(x[1] for x in xfrm_view.sas_between(dumps[a], aa, ba, rng))[0]
    prefix, target, dev, flt, kind = _traffic_plan(pair, a, b, target_sa_dst)
    before = {n: xfrm_view.counters(d, rng) for n, d in dumps.items()}
    cap = "/tmp/molecule-verify.pcap"
    run = (
        "rm -f {cap}; timeout 60 tcpdump -n -U -i {dev} -Q out -w {cap} {flt} >/dev/null 2>&1 & tp=$!; sleep 2; "
        "{prefix}ping -n -q -c {n} -i 0.2 -W 2 {t}; rc=$?; sleep 1; kill -INT $tp; wait $tp; "
        "tcpdump -e -n -r {cap} 2>/dev/null; rm -f {cap}; exit $rc"
    ).format(cap=cap, dev=shlex.quote(dev), flt=flt, prefix=prefix, t=shlex.quote(target), n=PINGS)
    out = pair[a].run(run)
    assert out.rc == 0, "ping %s from %s failed (rc %s): %s %s" % (target, a, out.rc, out.stdout[-500:], out.stderr)
    wire = xfrm_view.count_frames(out.stdout)
    print("%s %s wire (%s) towards %s: %s" % (a, kind, dev, target, wire))
    assert wire["esp"] >= PINGS, "fewer ESP packets on %s's wire than pings: %s" % (dev, wire)
    assert wire["icmp"] == 0, "cleartext ICMP left %s towards %s: %s" % (a, target, wire)
    if kind == "vxlan":
        assert wire["vxlan"] == 0, "cleartext VXLAN left %s: %s" % (a, wire)
    if kind == "qinq":
        assert wire["esp_qinq"] == wire["esp"], "ESP frames without both QinQ tags on %s: %s" % (dev, wire)
    after = {n: xfrm_view.counters(xfrm_view.dump(h, salt, netns), rng) for n, h in pair.items()}
    rows = []
    for host in (a, b):
        for key, pk in sorted(after[host].items()):
            if {key[0], key[1]} <= (aa | ba):
                rows.append((host, key, before[host].get(key, 0), pk))
    for host, key, old, new in rows:
        print("%s SA %s -> %s spi 0x%08x: packets %d -> %d (+%d)" % (host, key[0], key[1], key[2], old, new, new - old))
    hosts_seen = {r[0] for r in rows}
    assert hosts_seen == {a, b} and len(rows) >= 4, "expected >= 2 owned SAs per host, got %s" % rows
    low = [r for r in rows if r[3] - r[2] < PINGS]
    assert not low, "SA counters that rose by fewer than %d packets: %s" % (PINGS, low)


def test_foreign_objects_untouched(dumps, snapshots, rng):
    for host, d in dumps.items():
        then = xfrm_view.foreign(snapshots[host], rng)
        now = xfrm_view.foreign(d, rng)
        assert then["states"], "%s: prepare planted no foreign SA (nothing to compare)" % host
        assert now == then, "%s: foreign SAs/policies changed:\n before: %s\n now:    %s" % (host, then, now)
