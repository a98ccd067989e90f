# -*- coding: utf-8 -*-
"""Stand-in for `swanctl`, `ipsec` (libreswan) and `ip xfrm state list nokeys` in
test_ike_sa_loss.py: two hosts' daemons and kernels in one JSON file ($IKE_FAKE_STATE), the host
from $IKE_FAKE_HOST (set by a per-host interpreter wrapper). Installed under those names on PATH
(argv[0] chooses). Every SA negotiation makes fresh random SPIs on both ends; terminating a CHILD_SA
removes it on both ends (the peer's half found by SPI), and its kernel SAs where they still exist.
Only what the ike role calls is implemented; the calls are logged (state["log"])."""

from __future__ import annotations

import fcntl
import json
import os
import random
import sys


def peer_of(state, host):
    return next(h for h in state["hosts"] if h != host)


def new_spi():
    return "%08x" % random.randint(0x100, 0xFFFFFFFF)


def responder_name(state, name):
    # CHILD_SA names differ per end (each end sorts its children with itself as "local")
    return state.get("rename", {}).get(name, name)


def children(state, host):
    return state["hosts"][host]["children"]


def kernel(state, host):
    return state["hosts"][host]["kernel"]


def negotiate(state, host, conn, child, rename=True):
    """A new CHILD_SA (and IKE SA if none): fresh SPIs on both ends, SAs in both kernels."""
    peer = peer_of(state, host)
    spi_in, spi_out = new_spi(), new_spi()
    state["next_id"] += 1
    children(state, host).append({"conn": conn, "name": child, "id": state["next_id"], "in": spi_in, "out": spi_out})
    state["next_id"] += 1
    children(state, peer).append({"conn": conn, "name": responder_name(state, child) if rename else child, "id": state["next_id"],
                                  "in": spi_out, "out": spi_in})
    for h in (host, peer):
        kernel(state, h).extend([spi_in, spi_out])


def drop(state, host, c):
    """Terminate CHILD_SA c of host: gone on both ends, kernel SAs removed where they exist."""
    peer = peer_of(state, host)
    children(state, host).remove(c)
    other = [p for p in children(state, peer) if p["in"] == c["out"] and p["out"] == c["in"]]
    for p in other:
        children(state, peer).remove(p)
    for h in (host, peer):
        state["hosts"][h]["kernel"] = [s for s in kernel(state, h) if s not in (c["in"], c["out"])]


def opt(args, name):
    return args[args.index(name) + 1] if name in args else None


def swanctl(state, host, args):
    hs = state["hosts"][host]
    if "--stats" in args:
        return 0
    if "--list-conns" in args:
        for n in hs["loaded"]:
            print("%s: IKEv2, no reauthentication, rekeying every 14400s" % n)
        return 0
    if "--load-all" in args:
        d = hs["dir"]
        hs["loaded"] = sorted(f[:-5] for f in os.listdir(d) if f.endswith(".conf") and not f.endswith("-psk.conf"))
        return 0
    if "--list-sas" in args:
        for conn in sorted({c["conn"] for c in hs["children"]}):
            print("%s: #1, ESTABLISHED, IKEv2, 67f52c2df0491a49_i* 3dc68ccec0786e8e_r" % conn)
            for c in hs["children"]:
                if c["conn"] == conn:
                    print("  %s: #%d, reqid 1, INSTALLED, TRANSPORT, ESP:AES_GCM_16-256/ESN" % (c["name"], c["id"]))
                    print("    in  %s,      0 bytes,     0 packets" % c["in"])
                    print("    out %s,      0 bytes,     0 packets" % c["out"])
        return 0
    if "--initiate" in args:
        conn, child = opt(args, "--ike"), opt(args, "--child")
        if conn not in hs["loaded"]:
            sys.stderr.write("no config named '%s'\n" % conn)
            return 1
        negotiate(state, host, conn, child)
        return 0
    if "--terminate" in args:
        if "--child-id" in args:
            cid = int(opt(args, "--child-id"))
            hit = [c for c in hs["children"] if c["id"] == cid]
        else:
            hit = [c for c in hs["children"] if c["conn"] == opt(args, "--ike")]
        if not hit:
            sys.stderr.write("terminate failed: no matching SAs to terminate found\n")
            return 1
        for c in hit:
            drop(state, host, c)
        return 0
    sys.stderr.write("ike_fake swanctl: not implemented: %s\n" % args)
    return 2


def ipsec(state, host, args):
    hs = state["hosts"][host]
    if args[:2] == ["whack", "--status"]:
        for n in hs["loaded"]:
            print('000 "%s": 192.168.100.1---192.168.100.2; unrouted; my_ip=unset' % n)
        return 0
    if args[:2] == ["whack", "--showstates"]:
        for c in hs["children"]:
            print('#%d: "%s":500 ESTABLISHED_CHILD_SA (established Child SA); REKEY in 28510s; newest; IKE SA #1'
                  % (c["id"], c["name"]))
            print('#%d: "%s" esp.%s@192.168.100.2 esp.%s@192.168.100.1 Traffic: ESPin=0B ESPout=0B'
                  % (c["id"], c["name"], c["out"], c["in"]))
        return 0
    if args[:1] == ["trafficstatus"]:
        for c in hs["children"]:
            print("#%d: \"%s\", type=ESP, add_time=1, inBytes=0, outBytes=0, id='192.168.100.2'" % (c["id"], c["name"]))
        return 0
    if args[:1] == ["auto"]:
        what, name = args[1], (args[2] if len(args) > 2 else None)
        if what == "--rereadsecrets":
            return 0
        if what == "--add":
            hs["loaded"] = sorted(set(hs["loaded"]) | {name})
            return 0
        if what == "--delete":
            for c in [c for c in hs["children"] if c["name"] == name]:
                drop(state, host, c)
            hs["loaded"] = [n for n in hs["loaded"] if n != name]
            return 0
        if what == "--down":
            for c in [c for c in hs["children"] if c["name"] == name]:
                drop(state, host, c)
            return 0
        if what == "--up":
            if name not in hs["loaded"]:
                return 1
            # libreswan: one conn per merged CHILD_SA, the same name on both ends
            negotiate(state, host, name.rsplit("-c", 1)[0], name, rename=False)
            return 0
    sys.stderr.write("ike_fake ipsec: not implemented: %s\n" % args)
    return 2


def ip(state, host, args):
    if args[:3] in (["xfrm", "state", "list"], ["xfrm", "state", "show"]):
        for spi in kernel(state, host):
            print("src 192.168.100.1 dst 192.168.100.2\n\tproto esp spi 0x%s reqid 16389 mode transport\n"
                  "\treplay-window 0 flag esn" % spi)
        return 0
    sys.stderr.write("ike_fake ip: not implemented: %s\n" % args)
    return 2


def main():
    tool, args = os.environ.get("IKE_FAKE_TOOL") or os.path.basename(sys.argv[0]), sys.argv[1:]
    path, host = os.environ["IKE_FAKE_STATE"], os.environ["IKE_FAKE_HOST"]
    with open(path + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        state["log"].append([host, tool] + args)
        if tool == "grep":
            rc = 0   # the role's check that the distribution's libreswan files include the collection's
        else:
            rc = {"swanctl": swanctl, "ipsec": ipsec, "ip": ip}[tool](state, host, args)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
