# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _devlink, _tc, _xfrm_text
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import Runner, ToolError
from harness import FakeHost, fixture, run_module


def fx(name):
    """A fixture under fixtures/devlink without its first comment line (the source note)."""
    text = fixture("devlink/" + name)
    lines = text.splitlines(True)
    assert lines[0].startswith("#"), "fixture %s must start with its source note" % name
    return "".join(lines[1:])


# ------------------------------------------------------------------------------------- eswitch

@pytest.mark.parametrize("name,handle,expected", [
    ("eswitch_netdevsim_legacy.json.txt", "netdevsim/netdevsim1",
     {"mode": "legacy", "inline_mode": None, "encap_mode": None}),
    ("eswitch_netdevsim_switchdev.json.txt", "netdevsim/netdevsim1",
     {"mode": "switchdev", "inline_mode": None, "encap_mode": None}),
    ("eswitch_mlx5_mode_only_REAL.json.txt", "pci/0000:03:00.0",
     {"mode": "switchdev", "inline_mode": None, "encap_mode": None}),
    ("eswitch_mlx5_legacy_DERIVED.json.txt", "pci/0000:08:00.1",
     {"mode": "legacy", "inline_mode": "none", "encap_mode": "basic"}),
    # another handle than the one printed: nothing known about it
    ("eswitch_mlx5_legacy_DERIVED.json.txt", "pci/0000:08:00.0",
     {"mode": None, "inline_mode": None, "encap_mode": None}),
])
def test_parse_eswitch_real_and_derived(name, handle, expected):
    assert _devlink.parse_eswitch(fx(name), handle) == expected


def test_parse_eswitch_without_mode_attribute():
    # "when the mode attribute is absent: {"dev":{}}" (devlink_dev_eswitch_show.txt)
    assert _devlink.parse_eswitch('{"dev":{}}', "pci/0000:03:00.0")["mode"] is None


def test_parse_eswitch_rejects_garbage():
    with pytest.raises(_devlink.DevlinkParseError):
        _devlink.parse_eswitch("netdevsim/netdevsim1: mode legacy", "netdevsim/netdevsim1")


# --------------------------------------------------------------------------------------- param

@pytest.mark.parametrize("data,handle,expected", [
    (None, "pci/0000:06:00.0", {"runtime": "smfs"}),  # None -> the DERIVED fixture
    ('{"param":{"pci/0000:06:00.0":[{"name":"flow_steering_mode","type":"driver-specific",'
     '"values":[{"cmode":"runtime","value":"dmfs","default":"dmfs"}]}]}}', "pci/0000:06:00.0", {"runtime": "dmfs"}),
    # historic kernel bug: empty values list
    ('{"param":{"pci/0000:06:00.0":[{"name":"flow_steering_mode","type":"driver-specific","values":[]}]}}',
     "pci/0000:06:00.0", {}),
    # netdevsim's own params listed, no flow_steering_mode among them (04-params.txt, as JSON)
    ('{"param":{"netdevsim/netdevsim1":[{"name":"max_macs","type":"generic","values":[{"cmode":"driverinit","value":32}]},'
     '{"name":"test1","type":"driver-specific","values":[{"cmode":"driverinit","value":true}]}]}}',
     "netdevsim/netdevsim1", None),
    ("", "pci/0000:06:00.0", None),
])
def test_parse_param(data, handle, expected):
    if data is None:
        data = fx("param_fsm_smfs_DERIVED.json.txt")
    assert _devlink.parse_param(data, handle, "flow_steering_mode") == expected


# --------------------------------------------------------------------------------------- ports

def test_parse_ports_netdevsim_switchdev_real():
    ports = _devlink.parse_ports(fx("port_show_netdevsim_switchdev.json.txt"), "netdevsim/netdevsim1")
    assert [(p["port"], p["index"], p["flavour"], p["netdev"], p["vfnum"]) for p in ports] == [
        ("netdevsim/netdevsim1/0", 0, "physical", "eth0", None),
        ("netdevsim/netdevsim1/128", 128, "pcivf", "eth1", 0),
        ("netdevsim/netdevsim1/129", 129, "pcivf", "eth2", 1),
    ]
    # netdevsim reports no port function at all: both caps unsupported (None), not False
    assert all(p["caps"] == {"ipsec_crypto": None, "ipsec_packet": None} for p in ports)


def test_parse_ports_mlx5_caps_are_strings_turned_into_bools():
    (p,) = _devlink.parse_ports(fx("port_show_mlx5_vf_DERIVED.json.txt"), "pci/0000:06:00.0")
    assert p["port"] == "pci/0000:06:00.0/2" and p["vfnum"] == 1 and p["controller"] == 0
    assert p["caps"] == {"ipsec_crypto": False, "ipsec_packet": True}


def test_parse_ports_filters_other_devices():
    assert _devlink.parse_ports(fx("port_show_mlx5_vf_DERIVED.json.txt"), "pci/0000:06:00.1") == []
    assert _devlink.parse_ports(fx("port_show_netdevsim_vf128.json.txt"), "netdevsim/netdevsim10") == []


@pytest.mark.parametrize("value,expected", [
    ("enable", True), ("disable", False), ("enabled", True), ("disabled", False),  # iproute2 vs docs
    (True, True), (False, False), (None, None),
])
def test_cap_value(value, expected):
    assert _devlink.cap_value(value) is expected


def test_cap_value_unknown_word():
    with pytest.raises(_devlink.DevlinkParseError):
        _devlink.cap_value("maybe")


def test_find_port_by_vf_handle_and_errors():
    ports = _devlink.parse_ports(fx("port_show_netdevsim_switchdev.json.txt"), "netdevsim/netdevsim1")
    assert _devlink.find_port(ports, vf=1)["port"] == "netdevsim/netdevsim1/129"
    assert _devlink.find_port(ports, port="netdevsim/netdevsim1/0")["flavour"] == "physical"
    with pytest.raises(LookupError, match="no devlink port for VF 5"):
        _devlink.find_port(ports, vf=5)
    with pytest.raises(LookupError, match="no devlink port netdevsim/netdevsim1/7"):
        _devlink.find_port(ports, port="netdevsim/netdevsim1/7")
    # BlueField: the same VF number on the host controller and on the ARM side
    dup = ports + [dict(ports[1], port="netdevsim/netdevsim1/200", controller=1, external=True)]
    with pytest.raises(LookupError, match="several ports"):
        _devlink.find_port(dup, vf=0)
    assert _devlink.find_port(dup, vf=0, controller=1)["port"] == "netdevsim/netdevsim1/200"


# ------------------------------------------------------------------------------- argument lists

@pytest.mark.parametrize("fn,args,expected", [
    (_devlink.eswitch_set_args, ("pci/0000:08:00.0", "switchdev"), ["dev", "eswitch", "set", "pci/0000:08:00.0", "mode", "switchdev"]),
    (_devlink.eswitch_set_args, ("pci/0000:31:00.0", None, "none"), ["dev", "eswitch", "set", "pci/0000:31:00.0", "encap-mode", "none"]),
    (_devlink.param_set_args, ("pci/0000:08:00.0", "flow_steering_mode", "dmfs"),
     ["dev", "param", "set", "pci/0000:08:00.0", "name", "flow_steering_mode", "value", "dmfs", "cmode", "runtime"]),
    (_devlink.port_fn_set_args, ("pci/0000:31:00.0/1", "ipsec_packet", True),
     ["port", "function", "set", "pci/0000:31:00.0/1", "ipsec_packet", "enable"]),
    (_devlink.port_fn_set_args, ("netdevsim/netdevsim1/128", "ipsec_crypto", False),
     ["port", "function", "set", "netdevsim/netdevsim1/128", "ipsec_crypto", "disable"]),
    (_devlink.eswitch_show_args, ("netdevsim/netdevsim1",), ["-j", "dev", "eswitch", "show", "netdevsim/netdevsim1"]),
    (_devlink.param_show_args, ("pci/0000:06:00.0",), ["-j", "dev", "param", "show", "pci/0000:06:00.0", "name", "flow_steering_mode"]),
])
def test_argument_lists(fn, args, expected):
    assert fn(*args) == expected


def test_setter_refuses_nonsense():
    with pytest.raises(ValueError):
        _devlink.eswitch_set_args("pci/0000:08:00.0")
    with pytest.raises(ValueError):
        _devlink.port_fn_set_args("pci/0000:08:00.0/1", "roce", True)


# ------------------------------------------------------------------------------ busy scans

def test_offloaded_xfrm_states_netdevsim_real_no_key_in_labels():
    text = fx("xfrm_state_netdevsim_crypto.txt")
    found = _xfrm_text.offloaded_xfrm(text, "state", ["eth0", "eth1"])
    assert found == [
        {"kind": "state", "dev": "eth0", "dir": "in", "mode": "crypto", "label": "src 192.0.2.2 dst 192.0.2.1 spi 0x00001001"},
        {"kind": "state", "dev": "eth0", "dir": "out", "mode": "crypto", "label": "src 192.0.2.1 dst 192.0.2.2 spi 0x00001000"},
    ]
    assert "0102030405" not in repr(found)
    assert _xfrm_text.offloaded_xfrm(text, "state", ["eth9"]) == []


def test_offloaded_xfrm_state_mlx5_packet_real():
    found = _xfrm_text.offloaded_xfrm(fx("xfrm_state_mlx5_packet.txt"), "state")
    assert found == [{"kind": "state", "dev": "eth2", "dir": "out", "mode": "packet",
                      "label": "src 192.169.101.2 dst 192.169.101.1 spi 0xc88b7652"}]
    assert "e406a010" not in repr(found)


def test_offloaded_xfrm_policies_real_fwd_not_offloaded():
    found = _xfrm_text.offloaded_xfrm(fx("xfrm_policy_mlx5_packet.txt"), "policy", ["p0"])
    assert [(f["dev"], f["dir"], f["mode"], f["label"]) for f in found] == [
        ("p0", "out", "packet", "src 192.168.102.0/24 dst 192.168.201.0/24 dir out"),
        ("p0", "in", "packet", "src 192.168.201.0/24 dst 192.168.102.0/24 dir in"),
    ]


def test_offloaded_xfrm_empty():
    assert _xfrm_text.offloaded_xfrm("", "state") == []


@pytest.mark.parametrize("name,expected", [
    ("tc_netdevsim_in_hw.json.txt", 2),
    ("tc_netdevsim_not_in_hw.json.txt", 0),
])
def test_tc_in_hw_real(name, expected):
    assert _tc.tc_in_hw(fx(name)) == expected


def test_tc_in_hw_empty():
    assert _tc.tc_in_hw("[]") == 0
    assert _tc.tc_in_hw("") == 0


# ------------------------------------------------------------------------------------ client

def _client_main(body):
    def main():
        module = AnsibleModule(argument_spec={})
        body(_devlink.Devlink(Runner(module, "devlink")), module)
    return main


def test_client_param_unsupported_is_none_other_errors_raise():
    host = FakeHost([
        (("devlink", "-j", "dev", "param", "show", "netdevsim/netdevsim1"), (1, "", "kernel answers: Invalid argument\n")),
        (("devlink", "-j", "dev", "param", "show", "pci/0000:99:00.0"), (1, "", "devlink answers: No such device\n")),
        (("devlink", "-j", "dev", "param", "show", "pci/0000:06:00.0"), (0, fx("param_fsm_smfs_DERIVED.json.txt"), "")),
    ])
    seen = {}

    def body(dl, module):
        seen["nsim"] = dl.param("netdevsim/netdevsim1")
        seen["mlx5"] = dl.param("pci/0000:06:00.0")
        try:
            dl.param("pci/0000:99:00.0")
        except ToolError as exc:
            seen["err"] = exc.tool_message
        module.exit_json()

    run_module(_client_main(body), {}, host)
    assert seen == {"nsim": None, "mlx5": {"runtime": "smfs"}, "err": "devlink answers: No such device"}
    assert host.commands()[0] == ["devlink", "-j", "dev", "param", "show", "netdevsim/netdevsim1",
                                  "name", "flow_steering_mode"]


def test_client_ports_and_eswitch():
    host = FakeHost([
        (("devlink", "-j", "port", "show"), (0, fx("port_show_netdevsim_switchdev.json.txt"), "")),
        (("devlink", "-j", "dev", "eswitch"), (0, fx("eswitch_netdevsim_switchdev.json.txt"), "")),
    ])
    seen = {}

    def body(dl, module):
        seen["ports"] = [p["port"] for p in dl.ports("netdevsim/netdevsim1")]
        seen["mode"] = dl.eswitch("netdevsim/netdevsim1")["mode"]
        module.exit_json()

    run_module(_client_main(body), {}, host)
    assert seen == {"ports": ["netdevsim/netdevsim1/0", "netdevsim/netdevsim1/128", "netdevsim/netdevsim1/129"],
                    "mode": "switchdev"}


# --------------------------------------------- hints for devlink messages (appended to _runner.HINTS)

@pytest.mark.parametrize("stderr,advice", [
    # texts from ../shared/reference/samples/kernel_and_driver_error_messages.txt, as devlink prints them
    ("Error: mlx5_core: Device doesn't support IPSec crypto.\nkernel answers: Operation not supported", "crypto-enabled"),
    ("Error: mlx5_core: Device doesn't support IPsec packet mode.\nkernel answers: Operation not supported",
     "does not offer IPsec packet offload"),
    ("Error: mlx5_core: Eswitch vport is disabled.\nkernel answers: Operation not supported", "vport is not enabled"),
    ("Error: mlx5_core: Failed to set IPsec crypto.\nkernel answers: Invalid argument", "firmware refused"),
    ("Error: mlx5_core: Can't set encapsulation when IPsec SA and/or policies are configured.\n"
     "kernel answers: Operation not supported", "encap mode cannot change"),
    ("Error: mlx5_core: Can't change E-Switch mode to switchdev when multi-PF netdev (Socket Direct) is configured.\n"
     "kernel answers: Operation not permitted", "Socket Direct"),
    ("Error: mlx5_core: Changing fs mode is not supported when eswitch offloads enabled.\n"
     "kernel answers: Operation not supported", "legacy mode"),
    ("Error: Port doesn't support ipsec_packet function attribute.\nkernel answers: Operation not supported",
     "no IPsec port-function capability"),
    # mlx5 6.12 (the lab's kernel), as the simulated ConnectX answers them (lab/sim/devlink.c, lab/device/eswitch.yml)
    ("Error: netdevsim: Software managed steering is not supported when eswitch offloads enabled.\n"
     "kernel answers: Operation not supported", "legacy mode"),
    ('Error: netdevsim: Bad parameter: supported values are ["dmfs", "smfs"].\nkernel answers: Invalid argument',
     "6.12 takes dmfs and smfs"),
    ("Error: netdevsim: Failed to set IPsec packet mode.\nkernel answers: Device or resource busy",
     "must be unbound"),
    ("kernel answers: Device or resource busy", "ipsec_crypto/ipsec_packet enabled on its port function"),
])
def test_devlink_failures_carry_a_hint(stderr, advice):
    exc = ToolError(["devlink", "port", "function", "set", "pci/0000:08:00.0/1", "ipsec_packet", "enable"], 1, "", stderr)
    assert exc.hint and advice in exc.hint
