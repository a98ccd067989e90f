# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _runner
from harness import FakeHost, run_module


def _main_factory(fn):
    def main():
        module = AnsibleModule(argument_spec={"namespace": {"type": "str"}})
        fn(module)
    return main


@pytest.mark.parametrize("tool,ns,expected", [
    ("ip", None, ["ip", "xfrm", "state"]),
    ("ip", "ns0", ["ip", "-n", "ns0", "xfrm", "state"]),
    ("tc", "ns0", ["tc", "-n", "ns0", "xfrm", "state"]),
    ("ethtool", "ns0", ["ip", "netns", "exec", "ns0", "/usr/sbin/ethtool", "xfrm", "state"]),
])
def test_argv_namespace(tool, ns, expected):
    host = FakeHost([((), (0, "", ""))])

    def body(module):
        r = _runner.Runner(module, tool, namespace=ns)
        r.run(["xfrm", "state"])
        module.exit_json()

    run_module(_main_factory(body), {}, host)
    assert host.commands() == [expected]


def test_failure_carries_command_and_hint_but_not_stdin():
    host = FakeHost([(("ip",), (2, "", "Error: Policy offload is not supported.\n"))])
    seen = {}

    def body(module):
        r = _runner.Runner(module, "ip")
        try:
            r.run(["-batch", "-"], data=b"xfrm state add ... aead x 0xsecret 128\n")
        except _runner.ToolError as exc:
            seen["exc"] = exc
        module.exit_json()

    run_module(_main_factory(body), {}, host)
    exc = seen["exc"]
    assert exc.rc == 2
    assert "Policy offload is not supported" in exc.message
    assert "cannot offload policies" in exc.hint
    assert "secret" not in exc.message and "secret" not in repr(exc.as_result())
    assert exc.as_result()["cmd"] == "/usr/sbin/ip -batch -"


@pytest.mark.parametrize("stderr,line", [
    ("Error: ...\nCommand failed -:3\n", 3),
    ("RTNETLINK answers: File exists\nCommand failed -:12\n", 12),
    ("Error: nothing\n", None),
])
def test_failed_batch_line(stderr, line):
    assert _runner.failed_batch_line(stderr) == line


def test_batch_text_refuses_embedded_newline():
    assert _runner.batch_text(["a b", "c"]) == b"a b\nc\n"
    with pytest.raises(ValueError):
        _runner.batch_text(["xfrm state add dev eth0\nxfrm state flush"])


def test_json_decode_error_is_a_tool_error():
    host = FakeHost([(("devlink",), (0, "not json", ""))])
    seen = {}

    def body(module):
        try:
            _runner.Runner(module, "devlink").json(["-j", "dev", "show"])
        except _runner.ToolError as exc:
            seen["msg"] = exc.message
        module.exit_json()

    run_module(_main_factory(body), {}, host)
    assert "could not decode JSON" in seen["msg"]


# The mlx5 refusals the lab's simulated ConnectX (lab/sim/ipsec.c) reproduces, as `ip -batch`
# prints them: each gets advice that names the field to change.
@pytest.mark.parametrize("stderr,field", [
    ("Error: netdevsim: Device does not support requested policy priority.", "config[].priority"),
    ("Error: mlx5_core: Cannot offload forward policy.", "offload type 'none'"),
    ("Error: mlx5_core: Cannot offload without reqid.", "config[].reqid"),
    ("Error: mlx5_core: Device does not support upper protocol other than TCP/UDP.", "proto"),
    ("Error: netdevsim: Unsupported replay window size.", "32, 64, 128 or 256"),
])
def test_hint_for_mlx5_refusals(stderr, field):
    hint = _runner.hint_for(stderr)
    assert hint is not None and field in hint


@pytest.mark.parametrize("stderr,advice", [
    # the xfrm core's words when the driver gave none (mlx5: the PF while a VF has an IPsec capability)
    ("Error: Device failed to offload this state.", "ipsec_crypto/ipsec_packet enabled on its port function"),
    ("Error: netdevsim: Packet offload tunnel mode is disabled due to encap settings.", "encap_mode: none"),
    ("Error: netdevsim: Device does not support policy priority.", "dmfs (while legacy) before switchdev"),
    ("Error: netdevsim: Packet offload is not supported.", "dmfs before switchdev"),
])
def test_hints_for_the_mlx5_eswitch_rules_on_xfrm(stderr, advice):
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import hint_for
    assert advice in (hint_for(stderr) or "")
