# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generate the benchmark objects for N SA pairs (controller side, standard library only).

Pair i (0-based) between this host L=192.168.100.1 and its peer R=192.168.100.2:
  SA out  L->R spi 0x00010000+2i   reqid 0x51c01000+2i   (transport, ESN, AES-256-GCM, own random key)
  SA in   R->L spi 0x00010000+2i+1 reqid 0x51c01000+2i+1 (replay window 64)
  SP out  10.1.h.l/32 -> 10.2.h.l/32 tmpl L->R reqid of SA out      (h.l = i as two bytes)
  SP in   10.2.h.l/32 -> 10.1.h.l/32 tmpl R->L reqid of SA in
So N pairs = 2N SAs + 2N SPs.  Offload type none (the lab has no mlx5 NIC).

Writes into OUTDIR:
  vars.json           {"bench_sas": [...], "bench_sps": [...]}  module config lists (keys inside)
  add.batch           the same objects as raw `ip -batch` lines (SAs, then SPs): the floor
  del.batch           their deletes (SPs, then SAs)
The key material stays in OUTDIR (under lab/run, never committed); it only reaches `ip` on stdin.

  python3 bench/gen.py N OUTDIR [--pairs-limit M]
"""

from __future__ import annotations

import argparse
import json
import os

LOCAL = "192.168.100.1"
REMOTE = "192.168.100.2"
SPI_BASE = 0x00010000
REQID_BASE = 0x51C01000
AEAD = "rfc4106(gcm(aes))"
MAX_PAIRS = 0xFFFF // 2 - 0x1000  # stay inside the owned reqid range 0x51c00000..0x51c0ffff


def pair_objects(i, key_out, key_in):
    """(sas, sps, add_lines, del_lines) of pair i.  Keys are 72 lower-case hex digits."""
    hi, lo = i >> 8, i & 0xFF
    a, b = "10.1.%d.%d/32" % (hi, lo), "10.2.%d.%d/32" % (hi, lo)
    spi_o, spi_i = SPI_BASE + 2 * i, SPI_BASE + 2 * i + 1
    rq_o, rq_i = REQID_BASE + 2 * i, REQID_BASE + 2 * i + 1
    sas = [
        {"src": LOCAL, "dst": REMOTE, "spi": "0x%08x" % spi_o, "reqid": "0x%08x" % rq_o, "mode": "transport",
         "direction": "out", "esn": True, "aead": {"key": "0x" + key_out}, "offload": {"type": "none"}},
        {"src": REMOTE, "dst": LOCAL, "spi": "0x%08x" % spi_i, "reqid": "0x%08x" % rq_i, "mode": "transport",
         "direction": "in", "esn": True, "replay_window": 64, "aead": {"key": "0x" + key_in},
         "offload": {"type": "none"}},
    ]
    sps = [
        {"src": a, "dst": b, "dir": "out", "tmpl": {"src": LOCAL, "dst": REMOTE, "reqid": "0x%08x" % rq_o},
         "offload": {"type": "none"}},
        {"src": b, "dst": a, "dir": "in", "tmpl": {"src": REMOTE, "dst": LOCAL, "reqid": "0x%08x" % rq_i},
         "offload": {"type": "none"}},
    ]
    adds = [
        "xfrm state add src %s dst %s proto esp spi 0x%08x reqid 0x%08x mode transport dir out replay-window 0 "
        "flag esn aead %s 0x%s 128" % (LOCAL, REMOTE, spi_o, rq_o, AEAD, key_out),
        "xfrm state add src %s dst %s proto esp spi 0x%08x reqid 0x%08x mode transport dir in replay-window 64 "
        "flag esn aead %s 0x%s 128" % (REMOTE, LOCAL, spi_i, rq_i, AEAD, key_in),
    ]
    sp_adds = [
        "xfrm policy add src %s dst %s dir out priority 0 ptype main tmpl src %s dst %s proto esp reqid 0x%08x "
        "mode transport" % (a, b, LOCAL, REMOTE, rq_o),
        "xfrm policy add src %s dst %s dir in priority 0 ptype main tmpl src %s dst %s proto esp reqid 0x%08x "
        "mode transport" % (b, a, REMOTE, LOCAL, rq_i),
    ]
    dels_sa = ["xfrm state delete src %s dst %s proto esp spi 0x%08x" % (LOCAL, REMOTE, spi_o),
               "xfrm state delete src %s dst %s proto esp spi 0x%08x" % (REMOTE, LOCAL, spi_i)]
    dels_sp = ["xfrm policy delete src %s dst %s dir out ptype main" % (a, b),
               "xfrm policy delete src %s dst %s dir in ptype main" % (b, a)]
    return sas, sps, adds, sp_adds, dels_sa, dels_sp


def generate(n, keys):
    """All objects of n pairs; ``keys`` yields 72-hex-digit keys (two per pair)."""
    if not 1 <= n <= MAX_PAIRS:
        raise ValueError("N must be 1..%d (owned reqid range)" % MAX_PAIRS)
    sas, sps, sa_add, sp_add, sa_del, sp_del = [], [], [], [], [], []
    for i in range(n):
        a, b, c, d, e, f = pair_objects(i, next(keys), next(keys))
        sas += a
        sps += b
        sa_add += c
        sp_add += d
        sa_del += e
        sp_del += f
    return {"bench_sas": sas, "bench_sps": sps}, sa_add + sp_add, sp_del + sa_del


def random_keys():
    while True:
        yield os.urandom(36).hex()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("outdir")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    old = os.umask(0o077)
    try:
        data, adds, dels = generate(a.n, random_keys())
        with open(os.path.join(a.outdir, "vars.json"), "w") as f:
            json.dump(data, f)
        with open(os.path.join(a.outdir, "add.batch"), "w") as f:
            f.write("\n".join(adds) + "\n")
        with open(os.path.join(a.outdir, "del.batch"), "w") as f:
            f.write("\n".join(dels) + "\n")
    finally:
        os.umask(old)


if __name__ == "__main__":
    main()
