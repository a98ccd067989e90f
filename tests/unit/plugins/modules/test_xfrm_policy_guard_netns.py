# -*- coding: utf-8 -*-
"""Fail-closed guard policies on the real kernel: two scratch namespaces joined by a veth pair.

Proved here (root, `ip netns`; the host kernel takes xfrm policies even without ESP):
  1. an SA-shaped allow policy (template reqid in the owned range) and its two guards (same
     selector, action block, marks 0/0x1 and 0x1/0x1, priority 0xffffffff) are all accepted, while a
     guard with the SA policy's exact selector and no mark is refused with EEXIST: the kernel does not
     compare priority or action;
  2. traffic (ICMP echo, from Python raw sockets: no ping binary needed): with no policy it passes
     in clear (the positive control); with only the guards it is dropped, XfrmOutPolBlock (sender) or
     XfrmInPolBlock (receiver) rises, whatever the socket mark (0 or 1: why there are two guards);
     with the SA policy next to the guards the SA policy wins (XfrmOutNoStates, not PolBlock);
  3. xfrm_offload_policy (run as Ansible runs it): converge with guards, second run changed=0,
     overridden with scope policies leaves the guards, deleted with scope guards removes only the
     guards, and foreign policies (reqid outside the owned range; no template but a guard-like mark)
     are never touched.
"""

from __future__ import annotations

import os
import sys

import pytest

from netns_util import module_process, need_netns, sh

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard as G

pytestmark = pytest.mark.netns

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = os.path.join(HERE, "..", "..", "..", "..", "plugins", "modules")
A_IP, B_IP = "10.77.0.1", "10.77.0.2"


@pytest.fixture
def pair():
    """Namespaces (a, b): a0 10.77.0.1/24 in a <-veth-> b0 10.77.0.2/24 in b."""
    need_netns()
    a, b = "guard-a-%d" % os.getpid(), "guard-b-%d" % os.getpid()
    if sh("ip", "netns", "add", a, check=False).returncode:
        pytest.skip("cannot create a network namespace here (ip netns)")
    try:
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", b)
        for ns, dev, ip in ((a, "a0", A_IP), (b, "b0", B_IP)):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        if not os.path.exists("/proc/net/xfrm_stat"):
            pytest.skip("kernel without CONFIG_XFRM_STATISTICS (/proc/net/xfrm_stat)")
        yield a, b
    finally:
        sh("ip", "netns", "del", a, check=False)
        sh("ip", "netns", "del", b, check=False)


PING = r"""
import os, socket, struct, sys, time
dst, mark = sys.argv[1], int(sys.argv[2])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
ident, got, errors = os.getpid() & 0xffff, 0, []
for seq in range(1, 4):
    body = b"fail-closed-guard"
    pkt = struct.pack("!BBHHH", 8, 0, csum(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + body + b"\0"), ident, seq)
    try:
        s.sendto(pkt + body, (dst, 0))
    except OSError as e:
        errors.append(e.errno)
        continue
    end = time.time() + 1.0
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            data = s.recv(2048)
        except socket.timeout:
            break
        ihl = (data[0] & 15) * 4
        t, _c, _s, i, q = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if t == 0 and i == ident and q == seq:
            got += 1
            break
print(got, ",".join(map(str, errors)))
"""


def ping(ns, dst, mark=0):
    """3 ICMP echo requests from ``ns``: (replies, [send errnos])."""
    out = sh("ip", "netns", "exec", ns, sys.executable, "-c", PING, dst, str(mark)).stdout.split()
    return int(out[0]), [int(e) for e in out[1].split(",")] if len(out) > 1 else []


def xfrm_stat(ns):
    text = sh("ip", "netns", "exec", ns, "cat", "/proc/net/xfrm_stat").stdout
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}


def policy(ns, verb, src, dst, direction, *extra, check=True):
    return sh("ip", "-n", ns, "xfrm", "policy", verb, "src", src, "dst", dst, "dir", direction, *extra, check=check)


def tmpl(src, dst, reqid):
    return ("tmpl", "src", src, "dst", dst, "proto", "esp", "reqid", reqid, "mode", "transport")


GUARD = ("action", "block", "priority", str(G.GUARD_PRIORITY))
MARK0 = ("mark", "0", "mask", str(G.GUARD_MARK_BIT))
MARK1 = ("mark", str(G.GUARD_MARK_BIT), "mask", str(G.GUARD_MARK_BIT))
A2B = (A_IP + "/32", B_IP + "/32")
G0_OUT = {"src": A2B[0], "dst": A2B[1], "dir": "out", "mark": dict(G.GUARD_MARKS[0])}


def test_kernel_guard_pair_coexists_and_drops(pair):
    a, b = pair
    # positive control: no policy, traffic passes in clear (both socket marks)
    assert ping(a, B_IP) == (3, []) and ping(a, B_IP, mark=1) == (3, [])

    # 1. SA policy + both guards are accepted; an unmarked guard is a duplicate of the SA policy
    policy(a, "add", *A2B, "out", "priority", "100", *tmpl(A_IP, B_IP, "0x51c00001"))
    dup = policy(a, "add", *A2B, "out", *GUARD, *tmpl(A_IP, B_IP, "0x51c00001"), check=False)
    assert dup.returncode == 2 and "File exists" in dup.stderr, dup
    policy(a, "add", *A2B, "out", *MARK0, *GUARD, *tmpl(A_IP, B_IP, "0x51c00001"))
    policy(a, "add", *A2B, "out", *MARK1, *GUARD, *tmpl(A_IP, B_IP, "0x51c00001"))
    text = sh("ip", "-n", a, "xfrm", "policy", "list").stdout
    assert text.count("src 10.77.0.1/32 dst 10.77.0.2/32") == 3
    assert "\tmark 0/0x1 \n" in text and "\tmark 0x1/0x1 \n" in text

    # iproute2 drops a mark whose value is 0 on delete: `delete ... mark 0 mask 1` removes the
    # UNMARKED SA policy, not the guard (why the module deletes such guards over netlink)
    policy(a, "delete", *A2B, "out", *MARK0)
    text = sh("ip", "-n", a, "xfrm", "policy", "list").stdout
    assert "priority 100 " not in text and "\tmark 0/0x1 \n" in text, text
    assert G.netlink_delete(G0_OUT, a) is None
    assert "\tmark 0/0x1 \n" not in sh("ip", "-n", a, "xfrm", "policy", "list").stdout
    assert G.netlink_delete(G0_OUT, a) == "RTNETLINK answers: No such file or directory"
    policy(a, "add", *A2B, "out", "priority", "100", *tmpl(A_IP, B_IP, "0x51c00001"))
    policy(a, "add", *A2B, "out", *MARK0, *GUARD, *tmpl(A_IP, B_IP, "0x51c00001"))

    # the SA policy wins while it exists: no SA -> XfrmOutNoStates, not the guards' PolBlock
    before = xfrm_stat(a)
    assert ping(a, B_IP)[0] == 0
    after = xfrm_stat(a)
    assert after["XfrmOutNoStates"] > before["XfrmOutNoStates"]
    assert after["XfrmOutPolBlock"] == before["XfrmOutPolBlock"]

    # 2. the SA policy is lost (as on netdev down): the guards drop, whatever the skb mark
    policy(a, "delete", *A2B, "out")
    for mark in (0, 1, 3):
        before = xfrm_stat(a)
        replies, errors = ping(a, B_IP, mark=mark)
        after = xfrm_stat(a)
        assert replies == 0 and errors == [1, 1, 1], (mark, replies, errors)  # EPERM from xfrm_lookup
        assert after["XfrmOutPolBlock"] - before["XfrmOutPolBlock"] == 3, mark

    # one guard alone covers only its half of the mark space: why there are two
    policy(a, "delete", *A2B, "out", *MARK1)
    assert ping(a, B_IP, mark=1) == (3, [])
    assert ping(a, B_IP, mark=0)[0] == 0

    # no guard any more: clear again (the positive control at the end)
    assert G.netlink_delete(G0_OUT, a) is None
    assert ping(a, B_IP) == (3, [])


def test_kernel_inbound_guards_drop_at_the_receiver(pair):
    a, b = pair
    policy(b, "add", *A2B, "in", *MARK0, *GUARD, *tmpl(A_IP, B_IP, "0x51c00001"))
    policy(b, "add", *A2B, "in", *MARK1, *GUARD, *tmpl(A_IP, B_IP, "0x51c00001"))
    before = xfrm_stat(b)
    assert ping(a, B_IP) == (0, [])  # sent in clear by a (no policy there), dropped by b
    assert xfrm_stat(b)["XfrmInPolBlock"] - before["XfrmInPolBlock"] == 3
    assert G.netlink_delete(dict(G0_OUT, dir="in"), b) is None
    policy(b, "delete", *A2B, "in", *MARK1)
    assert ping(a, B_IP) == (3, [])


# ---- the module -------------------------------------------------------------------------------------

def run(ns, **params):
    params = dict(params, namespace=ns)
    return module_process(os.path.join(MODULES, "xfrm_offload_policy.py"), params)[0]


SA_OUT = dict(src=A_IP + "/32", dst=B_IP + "/32", dir="out", priority=100,
              tmpl=dict(src=A_IP, dst=B_IP, reqid="0x51c00001"), offload=dict(type="none"))
SA_IN = dict(src=B_IP + "/32", dst=A_IP + "/32", dir="in", priority=100,
             tmpl=dict(src=B_IP, dst=A_IP, reqid="0x51c00002"), offload=dict(type="none"))


def foreign_blocks(ns):
    """The text blocks of the two foreign policies (10.99.0.0/24), as `ip xfrm policy` prints them."""
    blocks, cur = [], None
    for line in sh("ip", "-n", ns, "xfrm", "policy", "list").stdout.splitlines():
        if not line.startswith(("\t", " ")):
            cur = [line]
            blocks.append(cur)
        elif cur is not None:
            cur.append(line)
    return sorted("\n".join(b) for b in blocks if "10.99.0." in b[0])


def owned(ns):
    text = sh("ip", "-n", ns, "xfrm", "policy", "list").stdout
    return text.count("reqid 1371537409 ") + text.count("reqid 1371537410 ")


def test_module_scopes_on_the_kernel(pair):
    a, _b = pair
    # foreign: reqid 7 (outside the owned range), and no template but the guards' mark and action
    policy(a, "add", "10.99.0.1/32", "10.99.0.2/32", "out", *tmpl("10.99.0.1", "10.99.0.2", "7"))
    policy(a, "add", "10.99.0.1/32", "10.99.0.2/32", "out", *MARK0, *GUARD)
    policy(a, "add", "10.99.0.2/32", "10.99.0.1/32", "in", *MARK1, "action", "block")
    foreign = foreign_blocks(a)
    assert len(foreign) == 3

    config = [SA_OUT, SA_IN] + G.guards_for([SA_OUT, SA_IN])
    res = run(a, config=config, state="overridden")
    assert res.get("failed") is not True, res
    assert res["counts"]["added"] == 6 and owned(a) == 6
    res = run(a, config=config, state="overridden")
    assert res.get("failed") is not True and res["changed"] is False and res["counts"]["unchanged"] == 6, res

    # guards do not get in the way of the SA policy: no SA -> NoStates, not PolBlock
    before = xfrm_stat(a)
    assert ping(a, B_IP)[0] == 0
    assert xfrm_stat(a)["XfrmOutPolBlock"] == before["XfrmOutPolBlock"]

    # overridden, scope policies, only the outbound SA policy listed: the inbound SA policy goes,
    # every guard stays
    res = run(a, config=[SA_OUT], state="overridden", scope="policies")
    assert res.get("failed") is not True, res
    assert res["counts"] == {"added": 0, "replaced": 0, "deleted": 1, "unchanged": 1}, res
    assert owned(a) == 5 and len(res["after"]) == 1
    # a guard listed under scope policies is refused before anything changes
    res = run(a, config=[SA_OUT] + config[2:3], state="overridden", scope="policies")
    assert res.get("failed") is True and res["field"] == "config[1]" and owned(a) == 5, res

    # teardown order: SA policies, then guards (as playbooks/teardown.yml does); traffic is dropped by
    # the guards in between
    res = run(a, state="deleted", scope="policies")
    assert res.get("failed") is not True and res["counts"]["deleted"] == 1 and owned(a) == 4, res
    before = xfrm_stat(a)
    assert ping(a, B_IP) == (0, [1, 1, 1])
    assert xfrm_stat(a)["XfrmOutPolBlock"] - before["XfrmOutPolBlock"] == 3
    res = run(a, state="deleted", scope="policies")
    assert res.get("failed") is not True and res["changed"] is False, res

    res = run(a, state="deleted", scope="guards")
    assert res.get("failed") is not True and res["counts"]["deleted"] == 4 and owned(a) == 0, res
    res = run(a, state="deleted", scope="guards")
    assert res.get("failed") is not True and res["changed"] is False, res
    res = run(a, state="deleted")
    assert res.get("failed") is not True and res["changed"] is False, res
    assert foreign_blocks(a) == foreign
    assert ping(a, B_IP) == (3, [])
