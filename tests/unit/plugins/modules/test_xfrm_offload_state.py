# -*- coding: utf-8 -*-
"""xfrm_offload_state end to end against FakeHost + the xfrm simulator (tests/unit/xfrm_sim.py)."""
from __future__ import annotations

import json
import time

import pytest
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils import basic

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as M
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

KEY_A = "0x" + "a1" * 20
KEY_B = "0x" + "b2" * 36
KEY_C = "0x" + "c3" * 20
KEYS = ("a1" * 20, "b2" * 36, "c3" * 20, "11" * 20, "22" * 20, "A1" * 20)
HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")
HELP_61 = fixture("xfrm/iproute2-6.1-state-help-real.txt")
LAB = fixture("xfrm/lab-xfrm-state.txt")  # two foreign SAs (reqid 1 and 2)


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


def host(sim, help_text=HELP_615):
    return FakeHost([(("ip", "xfrm", "state", "help"), (255, "", help_text)), (("ip",), sim)])


def out_sa(**kw):
    d = dict(src="192.0.2.1", dst="192.0.2.2", spi="0x1000", reqid="0x51c00001", direction="out",
             aead=dict(key=KEY_A), offload=dict(type="packet", dev="p0"))
    d.update(kw)
    return d


def in_sa(**kw):
    d = dict(src="192.0.2.2", dst="192.0.2.1", spi="0x1001", reqid="0x51c00002", direction="in",
             aead=dict(key=KEY_B), offload=dict(type="packet", dev="p0"))
    d.update(kw)
    return d


def no_secrets(h, result):
    """Keys only ever on stdin: never in argv, result, diff, msg."""
    text = json.dumps(result).lower()
    argv = json.dumps(h.commands()).lower()
    for k in KEYS:
        assert k.lower() not in text
        assert k.lower() not in argv


def batches(h):
    return [s for a, s in h.calls if a[-2:] == ["-batch", "-"]]


def test_merged_adds_then_idempotent():
    sim = XfrmSim(LAB)
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(), in_sa()]), h, diff=True)
    assert not failed, res
    assert res["changed"] and res["counts"] == {"added": 2, "replaced": 0, "deleted": 0, "unchanged": 0}
    assert res["commands"] == [
        "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
        "replay-window 0 flag esn aead rfc4106(gcm(aes)) <redacted> 128 offload packet dev p0 dir out",
        "xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x00001001 reqid 0x51c00002 mode transport "
        "replay-window 64 flag esn aead rfc4106(gcm(aes)) <redacted> 128 offload packet dev p0 dir in",
    ]
    assert batches(h) == [res["commands"][0].replace("<redacted>", KEY_A) + "\n"
                          + res["commands"][1].replace("<redacted>", KEY_B) + "\n"]
    assert [c[:3] for c in h.commands()] == [["ip", "xfrm", "state"], ["ip", "xfrm", "state"],
                                             ["ip", "-o", "link"], ["ip", "-batch", "-"], ["ip", "xfrm", "state"]]
    assert res["before"] == [] and [a["spi"] for a in res["after"]] == ["0x00001000", "0x00001001"]
    assert res["offload"] == [
        {"sa": "SA src 192.0.2.1 dst 192.0.2.2 spi 0x00001000", "requested": "packet", "dev": "p0",
         "in_effect": "packet", "in_effect_dev": "p0"},
        {"sa": "SA src 192.0.2.2 dst 192.0.2.1 spi 0x00001001", "requested": "packet", "dev": "p0",
         "in_effect": "packet", "in_effect_dev": "p0"}]
    assert res["diff"]["before"] == "" and "key: <redacted>" in res["diff"]["after"]
    no_secrets(h, res)

    h2 = host(sim)
    res2, failed = run_module(M.main, dict(config=[out_sa(), in_sa()]), h2)
    assert not failed and not res2["changed"] and res2["commands"] == []
    assert res2["counts"]["unchanged"] == 2 and batches(h2) == []


def test_check_mode_changes_nothing():
    sim = XfrmSim(LAB)
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(), in_sa()]), h, check_mode=True, diff=True)
    assert not failed and res["changed"] and len(res["commands"]) == 2
    assert batches(h) == [] and sim.states == {}
    assert [a["spi"] for a in res["after"]] == ["0x00001000", "0x00001001"]
    assert res["offload"][0]["in_effect"] is None
    no_secrets(h, res)


def test_old_kernel_or_ip_outbound_window_is_1():
    sim = XfrmSim(sa_dir=False)
    h = host(sim, HELP_61)
    res, failed = run_module(M.main, dict(config=[out_sa(offload=dict(type="none"))]), h)
    assert not failed, res
    assert res["commands"][0].endswith("mode transport replay-window 1 flag esn aead rfc4106(gcm(aes)) <redacted> 128")
    assert res["features"] == {"offload_packet": False, "sa_dir": False, "iproute2_sa_dir": False, "kernel": "6.12"}


def test_sa_dir_kernel_refuses_window_on_out_so_we_send_0():
    # The simulator enforces the >= 6.10 rule; forcing sa_dir false makes the module send 1 and fail.
    sim = XfrmSim(sa_dir=True)
    res, failed = run_module(M.main, dict(config=[out_sa()], features=dict(sa_dir=False)), host(sim))
    assert failed and "Replay window should be 0 for output SA" in res["msg"] and res["rolled_back"]
    res, failed = run_module(M.main, dict(config=[out_sa()]), host(sim))
    assert not failed and res["changed"]


def test_packet_offload_refused_with_iproute2_61_before_any_change():
    sim = XfrmSim()
    h = host(sim, HELP_61)
    res, failed = run_module(M.main, dict(config=[out_sa(), in_sa()]), h)
    assert failed and res["field"] == "config[0].offload.type" and "iproute2 >= 6.2" in res["msg"]
    assert batches(h) == []


def test_missing_device_refused():
    sim = XfrmSim(links=("lo", "eth0"))
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa()], namespace="ns1"), h)
    assert failed and res["field"] == "config[0].offload.dev" and "does not exist in namespace ns1" in res["msg"]
    assert batches(h) == [] and ["ip", "-n", "ns1", "-o", "link", "show"] in h.commands()


@pytest.mark.parametrize("args,field,text", [
    (dict(config=[out_sa(spi=255)]), "config[0].spi", "reserved by IANA"),
    (dict(config=[out_sa(), in_sa(spi="0x1000", dst="192.0.2.2", src="192.0.2.1")]), "config[1]", "listed twice"),
    (dict(config=[out_sa(), in_sa(aead=dict(key=KEY_A))]), "config[1].aead.key", "config[0]"),
    (dict(config=[out_sa(offload=dict(type="packet", dev="p0;reboot"))]), "config[0].offload.dev", "interface name"),
    (dict(config=[out_sa()], namespace="ns 1"), "namespace", "not a valid network namespace"),
    (dict(config=[out_sa()], reveal_keys=True), "reveal_keys", "only allowed with state rendered"),
    (dict(config=[], state="overridden"), "config", "use state deleted"),
    (dict(config=[out_sa()], owned_reqid_range=[1, 2]), "config[0].reqid", "outside the owned range"),
])
def test_bad_input_fails_before_any_command(args, field, text):
    h = FakeHost()  # any command would raise UnexpectedCommand
    res, failed = run_module(M.main, args, h)
    assert failed and res["field"] == field and text in res["msg"], res
    assert h.calls == []
    no_secrets(h, res)


def test_key_already_on_host_refused():
    sim = XfrmSim(LAB)
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(aead=dict(key="0x" + "11" * 20))]), h)
    assert failed and res["field"] == "config[0].aead.key" and "spi 0x00001000" in res["msg"]
    assert batches(h) == []
    no_secrets(h, res)


def test_foreign_sa_is_never_replaced():
    sim = XfrmSim(LAB)
    h = host(sim)
    foreign = out_sa(src="192.168.100.1", dst="192.168.100.2", spi="0x1000", offload=dict(type="none"))
    res, failed = run_module(M.main, dict(config=[foreign]), h)
    assert failed and res["field"] == "config[0]" and "not owned by this collection" in res["msg"]
    assert batches(h) == []


def test_replace_needs_new_key_then_deletes_before_add():
    sim = XfrmSim(LAB)
    assert not run_module(M.main, dict(config=[out_sa()]), host(sim))[1]
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(esn=False)], state="replaced"), h)
    assert failed and res["field"] == "config[0].aead.key" and "nonce" in res["msg"] and batches(h) == []
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(esn=False, aead=dict(key=KEY_C))], state="replaced"), h,
                             diff=True)
    assert not failed, res
    assert res["counts"]["replaced"] == 1
    assert res["commands"][0] == "xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000"
    assert res["commands"][1].startswith("xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 ")
    assert "esn: true" in res["diff"]["before"] and "esn: false" in res["diff"]["after"]
    assert sim.states[("192.0.2.2", 0x1000)]["aead"][1] == "0x" + "c3" * 20
    no_secrets(h, res)


def test_overridden_and_deleted_touch_only_owned():
    sim = XfrmSim(LAB)
    assert not run_module(M.main, dict(config=[out_sa(), in_sa()]), host(sim))[1]
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[in_sa()], state="overridden"), h)
    assert not failed and res["commands"] == ["xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000"]
    h = host(sim)
    res, failed = run_module(M.main, dict(state="deleted"), h)
    assert not failed and res["commands"] == ["xfrm state delete src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x00001001"]
    assert res["after"] == [] and sim.states == {}
    # the two foreign lab SAs are still printed by the host
    res, failed = run_module(M.main, dict(state="gathered", owned_reqid_range=[1, 2]), host(sim))
    assert [g["spi"] for g in res["gathered"]] == ["0x00001001", "0x00001000"]
    assert all(g["aead"]["key"] == "<redacted>" for g in res["gathered"])
    res, failed = run_module(M.main, dict(state="deleted", config=[{"dst": "192.168.100.2", "spi": 4096}]), host(sim))
    assert failed and "not owned" in res["msg"]


def test_failure_mid_batch_rolls_back_and_names_object():
    sim = XfrmSim(LAB, fail=lambda line: "Error: Requested AEAD algorithm not found." if "spi 0x00001001" in line
                  and "add" in line else None)
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(), in_sa()]), h)
    assert failed
    assert res["failed_object"] == "SA src 192.0.2.2 dst 192.0.2.1 spi 0x00001001" and res["failed_line"] == 2
    assert "Requested AEAD algorithm not found" in res["msg"] and "CONFIG_INET_ESP" in res["msg"]
    assert res["rolled_back"] and "host is as before" in res["msg"]
    assert sim.states == {}
    undo = batches(h)[1]
    assert undo == "xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000\n"
    no_secrets(h, res)


def test_failed_replace_restores_old_sa_with_its_key():
    sim = XfrmSim(LAB)
    assert not run_module(M.main, dict(config=[out_sa()]), host(sim))[1]
    sim.fail = lambda line: "RTNETLINK answers: Invalid argument" if "add" in line else None
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(aead=dict(key=KEY_C), offload=dict(type="packet",
                                                                                            dev="eth0"))],
                                          state="replaced"), h)
    assert failed and res["failed_line"] == 2 and res["rolled_back"] is False  # the re-add hit the same failure
    sim.fail = lambda line: "RTNETLINK answers: Invalid argument" if "add" in line and "c3c3" in line else None
    h = host(sim)
    sim.states.clear()
    assert not run_module(M.main, dict(config=[out_sa()]), host(sim))[1]
    res, failed = run_module(M.main, dict(config=[out_sa(aead=dict(key=KEY_C), offload=dict(type="packet",
                                                                                            dev="eth0"))],
                                          state="replaced"), h)
    assert failed and res["rolled_back"] and res["failed_line"] == 2
    assert "Invalid argument" in res["msg"]
    undo = batches(h)[1]
    assert undo.startswith("xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 ")
    assert KEY_A in undo
    assert sim.states[("192.0.2.2", 0x1000)]["aead"][1] == KEY_A
    no_secrets(h, res)


def test_crypto_fallback_fails_and_rolls_back_unless_allowed(monkeypatch):
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    sim = XfrmSim(fallback_devs=("eth0",))
    h = host(sim)
    cfg = [out_sa(offload=dict(type="crypto", dev="eth0"))]
    res, failed = run_module(M.main, dict(config=cfg), h)
    assert failed and "fell back" in res["msg"] and "fallback: allow" in res["msg"] and res["rolled_back"]
    assert sim.states == {}
    cfg = [out_sa(offload=dict(type="crypto", dev="eth0", fallback="allow"))]
    res, failed = run_module(M.main, dict(config=cfg), host(sim))
    assert not failed and res["offload"][0]["requested"] == "crypto" and res["offload"][0]["in_effect"] == "none"
    assert warned == ["SA src 192.0.2.1 dst 192.0.2.2 spi 0x00001000: crypto offload on eth0 was requested but the "
                      "kernel runs it in software (fallback allowed)"]
    res, failed = run_module(M.main, dict(config=cfg), host(sim))
    assert not failed and not res["changed"]


def test_packet_offload_refused_by_device():
    sim = XfrmSim(no_packet_devs=("eth0",))
    res, failed = run_module(M.main, dict(config=[out_sa(offload=dict(type="packet", dev="eth0"))]), host(sim))
    assert failed and "Invalid argument" in res["kernel_message"] and res["rolled_back"]


def test_rendered_needs_no_host_and_masks_or_reveals():
    h = FakeHost()
    res, failed = run_module(M.main, dict(config=[out_sa(), in_sa()], state="rendered"), h)
    assert not failed and h.calls == [] and len(res["rendered"]) == 2
    assert "<redacted>" in res["rendered"][0]
    res, failed = run_module(M.main, dict(config=[out_sa()], state="rendered", reveal_keys=True,
                                          features=dict(sa_dir=False)), h)
    assert res["rendered"][0] == (
        "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001000 reqid 0x51c00001 mode transport "
        "replay-window 1 flag esn aead rfc4106(gcm(aes)) 0x" + "A1" * 20 + " 128 offload packet dev p0 dir out")


def test_batch_killed_without_line_number():
    # ip exits 255 on a parse error without "Command failed": progress comes from reading back.
    sim = XfrmSim()
    sim.fail = lambda line: "Error: argument \"x\" is wrong: bad" if "spi 0x00001001" in line else None
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[out_sa(), in_sa()]), h)
    assert failed and res["failed_line"] == 2 and res["rolled_back"] and sim.states == {}


def test_scale_thousands_one_batch():
    n = 3000
    cfg = []
    for i in range(n):
        cfg.append(dict(src="10.0.%d.%d" % (i // 250, i % 250 + 1), dst="10.1.0.1", spi=0x10000 + i,
                        reqid=0x51C00000 + i, direction="out", aead=dict(key="0x%032x%08x" % (i + 1, 0x5a17)),
                        offload=dict(type="packet", dev="p0")))
    sim = XfrmSim()
    h = host(sim)
    t0 = time.time()
    res, failed = run_module(M.main, dict(config=cfg), h)
    took = time.time() - t0
    assert not failed and res["counts"]["added"] == n
    assert len(batches(h)) == 1 and batches(h)[0].count("\n") == n
    h2 = host(sim)
    t0 = time.time()
    res, failed = run_module(M.main, dict(config=cfg, output="summary"), h2)
    took2 = time.time() - t0
    assert not failed and not res["changed"] and res["counts"]["unchanged"] == n
    assert "before" not in res and "after" not in res and res["offload"] == []
    assert took < 20 and took2 < 20, (took, took2)
    # the module returns its own invocation (with output=summary `config` as its length, every key
    # masked with output=full) and leaves Ansible's no_log scrub (remove_values: strings x secrets)
    # nothing to scan; with the keys it would scan every string of result + invocation once per
    # key: 3000 x ~36000 comparisons
    assert res["invocation"]["module_args"]["config"] == "<%d objects>" % n
    keys = {c["aead"]["key"] for c in cfg}
    bare = {k: v for k, v in res.items() if k != "invocation"}
    out, left = _xfrm_run.lean_exit_args(keys, {"config": cfg, "output": "full"}, bare)
    assert left == set() and out["invocation"]["module_args"]["config"][7]["aead"]["key"] == _xfrm_run.NO_LOG_TEXT
    t0 = time.time()
    assert remove_values(res, left) == res
    assert time.time() - t0 < 2


def test_missing_namespace_named():
    h = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)),
                  (("ip", "-n", "nons"), (255, "", 'Cannot open network namespace "nons": No such file or directory\n'))])
    res, failed = run_module(M.main, dict(state="gathered", namespace="nons"), h)
    assert failed and res["field"] == "namespace" and "does not exist" in res["msg"]


def test_check_mode_with_namespace_not_created_yet_reports_adds(monkeypatch):
    """site.yml --check: the task that creates the VF's namespace was skipped, so it is missing."""
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    missing = (255, "", 'Cannot open network namespace "ns0": No such file or directory\n')
    h = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip", "-n", "ns0"), missing)])
    cfg = [out_sa(offload={"type": "none"}), in_sa(offload={"type": "none"})]
    res, failed = run_module(M.main, dict(config=cfg, namespace="ns0"), h, check_mode=True)
    assert not failed, res
    assert res["changed"] is True and res["counts"]["added"] == 2
    assert len(warned) == 1 and "ns0 does not exist yet" in warned[0]
    assert not any("-batch" in argv for argv in h.commands())
    no_secrets(h, res)
    # a real run still refuses, naming the field
    res, failed = run_module(M.main, dict(config=cfg, namespace="ns0"), h)
    assert failed and res["field"] == "namespace" and "does not exist" in res["msg"]


@pytest.mark.parametrize("state", ["merged", "overridden", "replaced"])
@pytest.mark.parametrize("check_mode", [False, True])
def test_installed_sa_that_vanished_is_never_added_again(state, check_mode):
    # site.yml marks the SAs its lifecycle step found on the hosts; one that is gone when the IPsec
    # step runs (link down, a teardown at the same time) must not come back with its old key
    sim = XfrmSim(LAB)
    res, failed = run_module(M.main, dict(config=[in_sa()]), host(sim))
    assert not failed and res["changed"]
    before = dict(sim.states)
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[in_sa(installed=True), out_sa(installed=True)], state=state),
                             h, check_mode=check_mode)
    assert failed and res["field"] == "config[1].installed", res
    assert "SA src 192.0.2.1 dst 192.0.2.2 spi 0x00001000" in res["msg"] and "never added again" in res["msg"]
    assert "rotates this direction" in res["msg"]
    assert batches(h) == [] and sim.states == before
    no_secrets(h, res)
    # present and marked installed: kept, nothing to do; a new SA (not marked) is added as usual
    h = host(sim)
    res, failed = run_module(M.main, dict(config=[in_sa(installed=True), out_sa()], state=state), h,
                             check_mode=check_mode)
    assert not failed and res["counts"]["added"] == 1 and res["counts"]["unchanged"] == 1, res
    assert "installed" not in json.dumps(res["after"])


def test_installed_must_be_a_boolean():
    res, failed = run_module(M.main, dict(config=[out_sa(installed="yes please")]), host(XfrmSim(LAB)))
    assert failed and "installed" in res["msg"]
