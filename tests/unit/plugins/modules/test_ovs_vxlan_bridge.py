# -*- coding: utf-8 -*-
from __future__ import annotations

import json

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _ovs
from ansible_collections.ipsec_offload.mlx5.plugins.modules import ovs_vxlan_bridge
from harness import FakeHost, run_module

OWN = ["map", [["ipsec_offload_mlx5", "owned"]]]


def tables(bridges=(), ports=(), ifaces=()):
    """Build the three `list TABLE` JSON documents the module reads."""
    return {
        "bridge": json.dumps({"headings": ["_uuid", "name", "ports", "external_ids"], "data": [list(b) for b in bridges]}),
        "port": json.dumps({"headings": ["_uuid", "name", "external_ids"], "data": [list(p) for p in ports]}),
        "interface": json.dumps({"headings": ["name", "type", "options"], "data": [list(i) for i in ifaces]}),
    }


EMPTY = tables()
# br-ovs (owned) with rep0 (owned), vxlan1 (owned, remote .2, key 100) and foreign0 (not owned);
# br-other (foreign) with vx9 (foreign).
EXISTING = tables(
    bridges=[
        (["uuid", "b1"], "br-ovs", ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p3"], ["uuid", "p0"]]], OWN),
        (["uuid", "b2"], "br-other", ["uuid", "p9"], ["map", []]),
    ],
    ports=[
        (["uuid", "p0"], "br-ovs", ["map", []]),
        (["uuid", "p1"], "rep0", OWN),
        (["uuid", "p2"], "vxlan1", OWN),
        (["uuid", "p3"], "foreign0", ["map", []]),
        (["uuid", "p9"], "vx9", ["map", []]),
    ],
    ifaces=[
        ("br-ovs", "internal", ["map", []]),
        ("rep0", "", ["map", []]),
        ("vxlan1", "vxlan", ["map", [["dst_port", "4789"], ["key", "100"], ["local_ip", "192.168.100.1"], ["remote_ip", "192.168.100.2"]]]),
        ("foreign0", "", ["map", []]),
        ("vx9", "vxlan", ["map", [["remote_ip", "10.9.9.9"]]]),
    ])

VX = {"name": "vxlan1", "local_ip": "192.168.100.1", "remote_ip": "192.168.100.2", "key": 100}


def host_with(db_tables, applied=None):
    """A fake ovs-vsctl: `list TABLE` answers from db_tables; a transaction switches to `applied`."""
    state = {"t": db_tables}

    def answer(argv, stdin):
        if "list" in argv:
            return 0, state["t"][argv[-1]], ""
        if applied is not None:
            state["t"] = applied
        return 0, "", ""
    return FakeHost([(("ovs-vsctl",), answer)])


def test_parse_db_joins_tables_and_reads_ownership():
    t = EXISTING
    db = _ovs.parse_db(_ovs.parse_table(t["bridge"]), _ovs.parse_table(t["port"]), _ovs.parse_table(t["interface"]))
    assert db["br-ovs"]["owned"] is True and db["br-other"]["owned"] is False
    assert db["br-ovs"]["ports"]["vxlan1"] == {"owned": True, "type": "vxlan", "options": {
        "dst_port": "4789", "key": "100", "local_ip": "192.168.100.1", "remote_ip": "192.168.100.2"}}
    assert db["br-ovs"]["ports"]["foreign0"]["owned"] is False
    assert list(db["br-other"]["ports"]) == ["vx9"]  # one-element set is the bare uuid


def test_create_everything_in_one_transaction():
    host = host_with(EMPTY, applied=EXISTING)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"], "vxlan": [VX]}, host)
    assert not failed and res["changed"]
    writes = [c for c in host.commands() if "list" not in c]
    assert writes == [["ovs-vsctl", "--timeout=10",
                       "--", "add-br", "br-ovs", "--", "br-set-external-id", "br-ovs", "ipsec_offload_mlx5", "owned",
                       "--", "add-port", "br-ovs", "rep0", "--", "set", "port", "rep0", "external_ids:ipsec_offload_mlx5=owned",
                       "--", "add-port", "br-ovs", "vxlan1", "--", "set", "interface", "vxlan1", "type=vxlan",
                       "options:dst_port=4789", "options:key=100", "options:local_ip=192.168.100.1",
                       "options:remote_ip=192.168.100.2",
                       "--", "set", "port", "vxlan1", "external_ids:ipsec_offload_mlx5=owned"]]
    assert res["changes"][0] == "create bridge br-ovs"


def test_second_run_is_unchanged():
    host = host_with(EXISTING)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"], "vxlan": [VX]}, host)
    assert not failed and res["changed"] is False and res["changes"] == []
    assert all("list" in c for c in host.commands())


def test_check_mode_reports_but_does_not_write():
    host = host_with(EMPTY)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"], "vxlan": [VX]}, host,
                             check_mode=True, diff=True)
    assert not failed and res["changed"]
    assert all("list" in c for c in host.commands())
    assert "absent" in res["diff"]["before"] and "create bridge br-ovs" in res["diff"]["after"]


def test_changed_remote_converges():
    host = host_with(EXISTING)
    vx = dict(VX, remote_ip="192.168.100.3")
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"], "vxlan": [vx]}, host)
    assert not failed and res["changed"]
    write = [c for c in host.commands() if "list" not in c][0]
    assert write[-4:] == ["options:dst_port=4789", "options:key=100", "options:local_ip=192.168.100.1",
                          "options:remote_ip=192.168.100.3"]
    assert ["clear", "interface", "vxlan1", "options"] == write[write.index("clear"):write.index("clear") + 4]


def test_foreign_port_is_refused_not_changed():
    host = host_with(EXISTING)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["vx9"]}, host)
    assert failed and res["field"] == "ports[0]" and "vx9" in res["msg"] and "not created by this collection" in res["msg"]
    assert all("list" in c for c in host.commands())


def test_absent_removes_owned_ports_keeps_bridge_with_foreign_port():
    host = host_with(EXISTING)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"], "vxlan": [VX],
                                                     "state": "absent"}, host)
    assert not failed and res["changed"]
    write = [c for c in host.commands() if "list" not in c][0]
    assert write == ["ovs-vsctl", "--timeout=10", "--", "del-port", "br-ovs", "rep0", "--", "del-port", "br-ovs", "vxlan1"]


def test_absent_removes_owned_bridge_when_listed_ports_were_its_last():
    # br-ovs (owned) holding only rep0 and vxlan1 (owned): removing both removes the bridge too,
    # in the same call (the teardown playbook lists the ports).
    own_only = tables(
        bridges=[(["uuid", "b1"], "br-ovs", ["set", [["uuid", "p1"], ["uuid", "p2"], ["uuid", "p0"]]], OWN)],
        ports=[(["uuid", "p0"], "br-ovs", ["map", []]), (["uuid", "p1"], "rep0", OWN), (["uuid", "p2"], "vxlan1", OWN)],
        ifaces=[("br-ovs", "internal", ["map", []]), ("rep0", "", ["map", []]),
                ("vxlan1", "vxlan", ["map", [["key", "100"], ["remote_ip", "192.168.100.2"]]])])
    host = host_with(own_only, applied=EMPTY)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"], "vxlan": [VX],
                                                     "state": "absent"}, host)
    assert not failed and res["changed"]
    write = [c for c in host.commands() if "list" not in c][0]
    assert write == ["ovs-vsctl", "--timeout=10", "--", "--if-exists", "del-br", "br-ovs"]


def test_purge_removes_only_owned_unlisted():
    host = host_with(EXISTING)
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "vxlan": [VX], "purge": True}, host)
    assert not failed
    write = [c for c in host.commands() if "list" not in c][0]
    assert write == ["ovs-vsctl", "--timeout=10", "--", "del-port", "br-ovs", "rep0"]


def test_transaction_failure_is_reported_with_hint_free_message():
    def answer(argv, stdin):
        if "list" in argv:
            return 0, EMPTY[argv[-1]], ""
        return 1, "", "ovs-vsctl: cannot create a port named rep0 because a port named rep0 already exists\n"
    host = FakeHost([(("ovs-vsctl",), answer)])
    res, failed = run_module(ovs_vxlan_bridge.main, {"bridge": "br-ovs", "ports": ["rep0"]}, host)
    assert failed and "nothing was applied" in res["msg"] and "already exists" in res["msg"]


@pytest.mark.parametrize("args,field", [
    ({"bridge": "br ovs"}, "bridge"),
    ({"bridge": "br-ovs", "ports": ["eth0; reboot"]}, "ports[0]"),
    ({"bridge": "br-ovs", "vxlan": [dict(VX, remote_ip="10.0.0.300")]}, "vxlan[0].remote_ip"),
    ({"bridge": "br-ovs", "vxlan": [dict(VX, remote_ip="2001:db8::2")]}, "vxlan[0]"),
    ({"bridge": "br-ovs", "vxlan": [dict(VX, key=1 << 24)]}, "vxlan[0].key"),
    ({"bridge": "br-ovs", "vxlan": [dict(VX, options={"tos": "inherit\nx"})]}, "vxlan[0].options"),
    ({"bridge": "br-ovs", "ports": ["vxlan1"], "vxlan": [VX]}, "vxlan[0].name"),
])
def test_bad_input_names_the_field_and_runs_nothing(args, field):
    host = FakeHost()
    res, failed = run_module(ovs_vxlan_bridge.main, args, host)
    assert failed and res["field"] == field and res["msg"].startswith(field + ":")
    assert host.calls == []
