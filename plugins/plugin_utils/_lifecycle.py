# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SA lifecycle on the controller: what the hosts still have, against what the key store handed out.

Pure functions (the ipsec_keystore action does the file I/O).  The rule they enforce: a key, with
its SPI, serves one SA instance, ever.  An SA that the kernel lost (reboot, link down of its
offload netdev, driver reload, teardown) is never installed again with its old key - the peer
would drop the restarted sequence as replays and one AES-GCM key would serve two instances.  The
direction is rotated instead: a new generation (new random SPI, new key) on both peers, the
receiver's inbound SA first (site.yml's heal phase), then the sender's, and the remnants of the old
instance are removed by the converge (they are no longer desired).

A direction whose SA was lost while one of its two hosts could not be read (not in the play:
--limit; unreachable) cannot be rotated on both peers: it is *held* - each end keeps what it still
has, nothing is added - and the run fails for it at the end, naming the pair and the command that
heals it.
"""

from __future__ import annotations

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

OUT_GENERATIONS = {None: ("current",), "inbound": ("previous",), "outbound": ("previous", "current"),
                   "retire": ("current",)}


def _spi_int(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    return int(s, 16) if s.startswith("0x") else int(s)


def present_from_gathered(gathered):
    """{host: [SA dicts with src, dst, spi]} (xfrm_offload_state gathered) -> {host: {(src, dst, spi)}}."""
    out = {}
    for host, sas in (gathered or {}).items():
        ids = set()
        for sa in sas or []:
            try:
                ids.add((str(sa.get("src") or ""), str(sa["dst"]), _spi_int(sa["spi"])))
            except (KeyError, TypeError, ValueError):
                raise _pairs.DeriveError(["host %s: an SA read from the host has no usable src/dst/spi" % host]) from None
        out[str(host)] = ids
    return out


def _expected(entry):
    """[(end, generation label)] the hosts of a direction must hold, by the entry's rotation stage."""
    stage = entry.get("stage") if entry.get("previous") else None
    out = [("src", g) for g in OUT_GENERATIONS[stage]]
    out += [("dst", g) for g in (("current",) if stage is None else ("previous", "current"))]
    return out


def assess(entries, links, addrs, present, seen, unmanaged=(), key_mode="keystore",
           new_key=_pairs.generate_key, token_bytes=None):
    """Compare the key store with the SAs read from the hosts; rotate lost directions, hold the ones
    that cannot be rotated, mark what this run hands out as installed.

    entries  the key store after update_store (every link has an entry)
    links    the allocated links (lk.spi = the current SPI)
    addrs    {pair name: (src address, dst address)}
    present  {host: {(src, dst, spi)}} owned SAs read from the hosts (present_from_gathered)
    seen     hosts whose SAs were read in this run
    unmanaged  pair names whose SAs this collection does not install (IKE backends)
    Returns (new_entries, report): report {"rotated": {name: why}, "held": {name: {"out": [...],
    "in": [...], "reason": why}}, "fresh": [names], "planned": {name: {"spi", "generation"}}}.
    ``fresh``: directions whose current generation this run installs for the first time (marked
    installed in new_entries); ``planned``: the new generation of every rotated direction.
    """
    out = {k: dict(v) for k, v in entries.items()}
    seen = set(seen)
    unmanaged = set(unmanaged or ())
    report = {"rotated": {}, "held": {}, "fresh": [], "planned": {}}
    live_to = {}   # dst address -> SPIs of every SA towards it on any host read
    for ids in present.values():
        for (dummy, dst, spi) in ids:
            live_to.setdefault(dst, set()).add(spi)
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        if lk.name in unmanaged:
            continue
        e = out.get((lk.src, lk.dst))
        if e is None or e.get("spi") is None:
            continue
        sip, dip = addrs[lk.name]
        ends = {"src": lk.src, "dst": lk.dst}
        spi_of = {"current": e["spi"], "previous": (e.get("previous") or {}).get("spi")}

        def has(end, gen):
            return (sip, dip, spi_of[gen]) in present.get(ends[end], ())

        expected = _expected(e)
        installed = {"current": bool(e.get("installed")), "previous": True}
        if not installed["current"] and any(ends[end] in seen and has(end, g) for end, g in expected if g == "current"):
            installed["current"] = True    # on a host although never handed out by this store: count it
        lost = [(end, g) for end, g in expected if installed[g] and ends[end] in seen and not has(end, g)]
        if not lost:
            if not e.get("installed") and (lk.src in seen or lk.dst in seen):
                e["installed"] = True
                report["fresh"].append(lk.name)
            continue
        why = "; ".join("SA spi 0x%08x (generation %d, %s) missing on %s (%s)"
                        % (spi_of[g], (e.get("generation") or 1) if g == "current" else e["previous"]["generation"],
                           g, ends[end], "out" if end == "src" else "in") for end, g in lost)
        unseen = [ends[end] for end in ("src", "dst") if ends[end] not in seen]
        blocker = None
        if unseen:
            blocker = ("%s not in this run or not reachable, so the direction cannot be rotated on both peers. "
                       "Heal it with both hosts in the run: ansible-playbook site.yml --limit %s,%s,localhost"
                       % (" and ".join(unseen), lk.src, lk.dst))
        elif lk.key_source == "inventory" or lk.key_override is not None:
            blocker = ("its key is hand-given (ipsec_overrides[%s].key on %s): give a new key and a new SPI there"
                       % (lk.dst, lk.src))
        elif lk.spi_source == "override":
            blocker = ("its SPI is hand-given (ipsec_overrides[%s].spi on %s): give a new SPI there (the key then "
                       "rotates with it)" % (lk.dst, lk.src))
        if blocker:
            keep = {"out": [g for g in OUT_GENERATIONS[e.get("stage") if e.get("previous") else None] if has("src", g)],
                    "in": [g for end, g in expected if end == "dst" and has("dst", g)]}
            keep["reason"] = "%s: lost: %s. Not re-added with its old key; %s" % (lk.name, why, blocker)
            report["held"][lk.name] = keep
            continue
        taken = set(live_to.get(dip, ())) | {x.spi for x in links if x.dst == lk.dst and x.spi is not None}
        kw = {} if token_bytes is None else {"token_bytes": token_bytes}
        spi = _pairs.random_spi(_pairs.retired_spis(out, lk.dst) | taken, **kw)
        _pairs.new_generation(e, lk, out, key_mode, new_key, spi=spi)
        e["installed"] = True     # handed out now: installed by this run's converge
        report["rotated"][lk.name] = "%s: lost: %s -> new generation %d, SPI 0x%08x, new key, on both peers" % (
            lk.name, why, e["generation"], spi)
        report["planned"][lk.name] = {"spi": spi, "generation": e["generation"]}
        report["fresh"].append(lk.name)
    return out, report


def retire_hosts(entries, links, hosts, key_mode="keystore", new_key=_pairs.generate_key):
    """teardown.yml: every installed direction to or from one of ``hosts`` had its SAs removed there:
    its SA instance is over.  Retire it (SPI and key never handed out again) and give it the next
    generation, not installed: the next site.yml installs a new instance on both peers.
    Returns (new_entries, [names])."""
    out = {k: dict(v) for k, v in entries.items()}
    hosts = set(hosts)
    names = []
    for lk in sorted(links, key=lambda x: (x.src, x.dst)):
        e = out.get((lk.src, lk.dst))
        if e is None or e.get("spi") is None or not (lk.src in hosts or lk.dst in hosts):
            continue
        if not e.get("installed") and not e.get("previous"):
            continue
        if lk.key_source == "inventory" or lk.spi_source == "override":
            continue    # hand-given: the next site.yml finds it lost and refuses it until a new key and SPI are given
        _pairs.new_generation(e, lk, out, key_mode, new_key)
        names.append(lk.name)
    return out, names
