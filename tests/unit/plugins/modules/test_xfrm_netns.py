# -*- coding: utf-8 -*-
"""xfrm_offload_policy and xfrm_offload_state against the real kernel, in a scratch netns.

The modules run as Ansible runs them (a Python process with an args file; real AnsibleModule,
real `ip`, real no_log filtering).  The dev/CI host kernel takes xfrm POLICIES but has no ESP/GCM,
so every SA add is refused with "Requested AEAD algorithm not found"; iproute2 6.1 there rejects
`offload packet`.  Proved here on a real kernel:
  - policies: merged, idempotent second run, check mode changes nothing, update, overridden and
    deleted leave a foreign policy (made by the test) alone;
  - a batch that `ip` aborts part way (forced past the capability probe) is undone: the host ends
    exactly as before, and the failing object is named;
  - SAs: the kernel's refusal is reported with the object and a hint, no key leaks, the host
    (and the foreign policy) is unchanged;
  - packet offload with this iproute2 is refused before anything changes.
In the lab VMs (kernel 6.12, ESP, iproute2 6.15) the same SA calls succeed; see the lab playbooks.
"""

from __future__ import annotations

import os

import pytest

from netns_util import module_process, need_netns, sh

pytestmark = pytest.mark.netns

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = os.path.join(HERE, "..", "..", "..", "..", "plugins", "modules")
KEY_OUT = "0x" + "5a" * 20
KEY_IN = "0x" + "a5" * 36


@pytest.fixture
def ns():
    need_netns()
    name = "xfrmt-%d" % os.getpid()
    if sh("ip", "netns", "add", name, check=False).returncode:
        pytest.skip("cannot create a network namespace here (ip netns)")
    try:
        sh("ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        sh("ip", "-n", name, "link", "set", "v0", "up")
        sh("ip", "-n", name, "link", "set", "v1", "up")
        # a foreign policy (reqid 7: outside the owned range) the modules must never touch
        sh("ip", "-n", name, "xfrm", "policy", "add", "src", "10.99.0.1/32", "dst", "10.99.0.2/32", "dir", "out",
           "tmpl", "src", "10.99.0.1", "dst", "10.99.0.2", "proto", "esp", "reqid", "7", "mode", "transport")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def host_text(ns):
    return (sh("ip", "-n", ns, "xfrm", "policy", "list").stdout, sh("ip", "-n", ns, "xfrm", "state", "list").stdout)


def run(module, ns, check_mode=False, diff=False, **params):
    params = dict(params, namespace=ns)
    if check_mode:
        params["_ansible_check_mode"] = True
    if diff:
        params["_ansible_diff"] = True
    res, p = module_process(os.path.join(MODULES, module + ".py"), params)
    for k in (KEY_OUT, KEY_IN):
        for text in (p.stdout, p.stderr):
            assert k[2:] not in text.lower()
    return res


OUT = dict(src="10.77.0.1/32", dst="10.77.0.2/32", dir="out", offload=dict(type="none"),
           tmpl=dict(src="10.77.0.1", dst="10.77.0.2", reqid="0x51c00001"))
IN = dict(src="10.77.0.2/32", dst="10.77.0.1/32", dir="in", offload=dict(type="none"),
          tmpl=dict(src="10.77.0.2", dst="10.77.0.1", reqid="0x51c00002"))
FWD = dict(src="10.77.0.2/32", dst="10.77.1.0/24", dir="fwd", proto="udp", dport=4789,
           tmpl=dict(src="10.77.0.2", dst="10.77.0.1", reqid="0x51c00002", level="use"))


def test_policy_lifecycle(ns):
    foreign_only = host_text(ns)
    res = run("xfrm_offload_policy", ns, config=[OUT, IN, FWD])
    assert res.get("failed") is not True, res
    assert res["changed"] is True and res["counts"]["added"] == 3
    policies = sh("ip", "-n", ns, "xfrm", "policy", "list").stdout
    assert ("src 10.77.0.1/32 dst 10.77.0.2/32 \n\tdir out priority 0 ptype main \n\ttmpl src 10.77.0.1 dst "
            "10.77.0.2\n\t\tproto esp reqid 1371537409 mode transport\n") in policies
    assert "src 10.77.0.2/32 dst 10.77.1.0/24 proto udp dport 4789 \n\tdir fwd priority 0 ptype main" in policies
    assert "\t\tlevel use \n" in policies
    assert [o["in_effect"] for o in res["offload"]] == ["none", "none", "none"]

    # second run: nothing to do
    res = run("xfrm_offload_policy", ns, config=[OUT, IN, FWD])
    assert res.get("failed") is not True and res["changed"] is False and res["commands"] == [], res

    # check mode with a change: reported, host untouched
    snap = host_text(ns)
    res = run("xfrm_offload_policy", ns, check_mode=True, diff=True, config=[dict(OUT, priority=50)])
    assert res["changed"] is True and res["commands"][0].startswith("xfrm policy update ")
    assert "priority: 50" in res["diff"]["after"] and "priority: 0" in res["diff"]["before"]
    assert host_text(ns) == snap

    # a real update
    res = run("xfrm_offload_policy", ns, config=[dict(OUT, priority=50)])
    assert res["changed"] is True and res["counts"]["replaced"] == 1
    assert "\tdir out priority 50 ptype main" in sh("ip", "-n", ns, "xfrm", "policy", "list").stdout

    # overridden: only IN stays of ours; the foreign one stays too
    res = run("xfrm_offload_policy", ns, state="overridden", config=[IN])
    assert res.get("failed") is not True, res
    assert res["counts"] == {"added": 0, "replaced": 0, "deleted": 2, "unchanged": 1}
    text = sh("ip", "-n", ns, "xfrm", "policy", "list").stdout
    assert "10.99.0.1/32 dst 10.99.0.2/32" in text and "reqid 7 " in text
    assert "10.77.0.1/32 dst 10.77.0.2/32" not in text and "10.77.0.2/32 dst 10.77.0.1/32" in text

    # gathered sees only owned
    res = run("xfrm_offload_policy", ns, state="gathered")
    assert [(g["src"], g["dir"]) for g in res["gathered"]] == [("10.77.0.2/32", "in")]

    # deleted (all owned): back to the foreign policy alone
    res = run("xfrm_offload_policy", ns, state="deleted")
    assert res["changed"] is True and res["counts"]["deleted"] == 1
    assert host_text(ns) == foreign_only


def test_policy_batch_aborted_part_way_is_undone(ns):
    # iproute2 6.1 does not know `offload packet`: forcing the capability makes `ip -batch` die on the
    # third line (rc 255, no line number) after two policies went in; they must be removed again.
    out = sh("ip", "-V").stdout
    if "iproute2-6.1" not in out and "iproute2-5." not in out and "iproute2-6.0" not in out:
        pytest.skip("needs an iproute2 without 'offload packet' to provoke the parse failure: %s" % out.strip())
    before = host_text(ns)
    bad = dict(OUT, src="10.77.5.0/24", dst="10.77.6.0/24", offload=dict(type="packet", dev="v0"))
    res = run("xfrm_offload_policy", ns, config=[OUT, IN, bad], features=dict(offload_packet=True))
    assert res.get("failed") is True, res
    assert res["failed_line"] == 3 and res["failed_object"] == "SP src 10.77.5.0/24 dst 10.77.6.0/24 dir out"
    assert '"offload" is the second value' in res["kernel_message"]
    assert res["rolled_back"] is True and "Rolled back 2 applied change(s)" in res["msg"]
    assert host_text(ns) == before


def test_packet_offload_refused_by_old_iproute2_before_any_change(ns):
    if "iproute2-6.1" not in sh("ip", "-V").stdout:
        pytest.skip("this iproute2 knows 'offload packet'")
    before = host_text(ns)
    res = run("xfrm_offload_policy", ns, config=[dict(OUT, offload=dict(type="packet", dev="v0"))])
    assert res.get("failed") is True and res["field"] == "config[0].offload.type"
    assert "iproute2 >= 6.2" in res["msg"]
    assert host_text(ns) == before


SA_OUT = dict(src="10.77.0.1", dst="10.77.0.2", spi="0x2000", reqid="0x51c00001", direction="out",
              aead=dict(key=KEY_OUT), offload=dict(type="none"))
SA_IN = dict(src="10.77.0.2", dst="10.77.0.1", spi="0x2001", reqid="0x51c00002", direction="in",
             aead=dict(key=KEY_IN), offload=dict(type="none"))


def kernel_has_esp(ns):
    p = sh("ip", "-n", ns, "xfrm", "state", "add", "src", "10.66.0.1", "dst", "10.66.0.2", "proto", "esp", "spi",
           "0x100", "reqid", "9", "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x" + "01" * 20, "128",
           check=False)
    if p.returncode == 0:
        sh("ip", "-n", ns, "xfrm", "state", "delete", "src", "10.66.0.1", "dst", "10.66.0.2", "proto", "esp", "spi",
           "0x100")
    return p.returncode == 0


def test_state_kernel_refusal_reported_and_host_unchanged(ns):
    if kernel_has_esp(ns):
        pytest.skip("this kernel has ESP + GCM: the refusal path cannot be provoked (the lab VMs run the SA cycle)")
    # an owned policy first, so "unchanged" covers more than the foreign one
    assert run("xfrm_offload_policy", ns, config=[OUT]).get("failed") is not True
    before = host_text(ns)
    res = run("xfrm_offload_state", ns, config=[SA_OUT, SA_IN], diff=True)
    assert res.get("failed") is True, res
    assert res["failed_object"] == "SA src 10.77.0.1 dst 10.77.0.2 spi 0x00002000" and res["failed_line"] == 1
    assert "Requested AEAD algorithm not found" in res["kernel_message"]
    assert "CONFIG_INET_ESP" in res["msg"] and res["rolled_back"] is True
    assert res["commands"][0] == ("xfrm state add src 10.77.0.1 dst 10.77.0.2 proto esp spi 0x00002000 reqid "
                                  "0x51c00001 mode transport replay-window %d flag esn aead rfc4106(gcm(aes)) "
                                  "<redacted> 128" % (0 if res["features"]["sa_dir"] else 1))
    assert host_text(ns) == before
    # check mode on the same input: nothing run, nothing changed
    res = run("xfrm_offload_state", ns, config=[SA_OUT, SA_IN], check_mode=True)
    assert res.get("failed") is not True and res["changed"] is True and res["counts"]["added"] == 2
    assert host_text(ns) == before
    res = run("xfrm_offload_state", ns, state="gathered")
    assert res["gathered"] == []


def test_state_bad_input_names_field_and_touches_nothing(ns):
    before = host_text(ns)
    res = run("xfrm_offload_state", ns, config=[dict(SA_OUT, spi=7)])
    assert res.get("failed") is True and res["field"] == "config[0].spi"
    res = run("xfrm_offload_state", ns, config=[SA_OUT, dict(SA_IN, aead=dict(key=KEY_OUT))])
    assert res.get("failed") is True and res["field"] == "config[1].aead.key"
    res = run("xfrm_offload_state", ns, config=[dict(SA_OUT, offload=dict(type="crypto", dev="v0;reboot"))])
    assert res.get("failed") is True and res["field"] == "config[0].offload.dev"
    assert host_text(ns) == before
