# -*- coding: utf-8 -*-
"""rxe_link against a scripted `rdma` and a fake /sys/class/infiniband built from lab captures."""
from __future__ import annotations

import os

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.modules import rxe_link as mod
from harness import FakeHost, fixture, run_module

INIT = fixture("rdma/rdma-link-show-init.json")
EMPTY = fixture("rdma/rdma-link-show-empty.json")
WITH_VF0 = ('[{"ifindex":1,"ifname":"rxe_vf0","port":1,"state":"ACTIVE","physical_state":"LINK_UP",'
            '"netdev":"vf0","netdev_index":5}\n]\n')


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


def make_device(root, name, gids_fixture="gids-rxe_vf0.txt", counters=True):
    base = os.path.join(str(root), name, "ports", "1")
    for line in fixture("rdma/" + gids_fixture).splitlines():
        idx, gid, rest = line.split(" ", 2)
        gtype, ndev = rest.rsplit(" ", 1)
        _write(os.path.join(base, "gids", idx), gid)
        if gtype != "-":   # an empty slot's type/ndev answer EINVAL: no file here
            _write(os.path.join(base, "gid_attrs", "types", idx), gtype)
            _write(os.path.join(base, "gid_attrs", "ndevs", idx), ndev)
    if counters:
        for line in fixture("rdma/hw-counters-rxe_link0.txt").splitlines():
            key, val = line.split()
            _write(os.path.join(base, "hw_counters", key), val)


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    monkeypatch.setattr(mod, "SYSFS_IB", str(tmp_path))
    monkeypatch.setattr(mod, "GID_WAIT", (2, 0))
    return tmp_path


def test_present_creates_and_reports_gid(sysfs):
    shows = [EMPTY, WITH_VF0]

    def add(argv, stdin):
        make_device(sysfs, "rxe_vf0")
        return 0, "", ""
    host = FakeHost([(("rdma", "-j", "link", "show"), lambda a, s: (0, shows.pop(0), "")),
                     (("rdma", "link", "add"), add)])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}], "address": "192.168.10.2"}, host, diff=True)
    assert not failed, res
    assert res["changed"] is True
    assert host.commands() == [["rdma", "-j", "link", "show"],
                               ["rdma", "link", "add", "rxe_vf0", "type", "rxe", "netdev", "vf0"],
                               ["rdma", "-j", "link", "show"]]
    link = res["links"][0]
    assert (link["device"], link["owned"], link["action"], link["gid_index"], link["gid_address"]) == \
        ("rxe_vf0", True, "add", 1, "192.168.10.2")
    assert link["counters"] == {"sent_pkts": 200, "rcvd_pkts": 200}
    assert res["commands"] == ["rdma link add rxe_vf0 type rxe netdev vf0"]
    assert res["diff"] == {"before": "", "after": "rxe_vf0 port 1 netdev vf0 state ACTIVE\n"}


def test_present_is_idempotent(sysfs):
    make_device(sysfs, "rxe_vf0")
    host = FakeHost([(("rdma", "-j", "link", "show"), (0, INIT, ""))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}]}, host)
    assert not failed and res["changed"] is False
    assert host.commands() == [["rdma", "-j", "link", "show"]]
    assert res["links"][0]["gid_index"] == 1


def test_check_mode_runs_nothing(sysfs):
    host = FakeHost([(("rdma", "-j", "link", "show"), (0, EMPTY, ""))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}]}, host, check_mode=True, diff=True)
    assert not failed and res["changed"] is True
    assert host.commands() == [["rdma", "-j", "link", "show"]]
    assert res["commands"] == ["rdma link add rxe_vf0 type rxe netdev vf0"]
    assert res["diff"]["after"] == "rxe_vf0 port 1 netdev vf0 state (to be created)\n"


def test_namespace_wraps_rdma(sysfs):
    host = FakeHost([(("ip", "netns", "exec", "ns0", "/usr/sbin/rdma", "-j", "link", "show"), (0, EMPTY, ""))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}], "namespace": "ns0", "state": "gathered"}, host)
    assert not failed and res["changed"] is False
    assert res["links"][0]["device"] is None


def test_failure_rolls_back_earlier_links(sysfs):
    def add(argv, stdin):
        if argv[3] == "rxe_vf1":
            return 1, "", "error: Operation not permitted\n"
        return 0, "", ""
    host = FakeHost([(("rdma", "-j", "link", "show"), (0, EMPTY, "")),
                     (("rdma", "link", "add"), add),
                     (("rdma", "link", "delete"), (0, "", ""))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}, {"netdev": "vf1"}]}, host)
    assert failed
    assert host.commands()[1:] == [["rdma", "link", "add", "rxe_vf0", "type", "rxe", "netdev", "vf0"],
                                   ["rdma", "link", "add", "rxe_vf1", "type", "rxe", "netdev", "vf1"],
                                   ["rdma", "link", "delete", "rxe_vf0"]]
    assert res["failed_object"] == "rxe_vf1"
    assert "rolled back: removed rxe_vf0 again" in res["msg"]
    assert "VLAN device is refused" in res["msg"]


def test_absent_leaves_foreign_device(sysfs):
    make_device(sysfs, "rxe_link0")
    host = FakeHost([(("rdma", "-j", "link", "show"), (0, INIT, ""))])
    # rxe_link0 serves link0 but the configured (owned) name is rxe_mine: it stays
    res, failed = run_module(mod.main, {"config": [{"netdev": "link0", "name": "rxe_mine"}], "state": "absent"}, host)
    assert not failed and res["changed"] is False
    assert host.commands() == [["rdma", "-j", "link", "show"]]
    assert (res["links"][0]["device"], res["links"][0]["owned"]) == ("rxe_link0", False)


def test_absent_removes_owned(sysfs):
    shows = [INIT, fixture("rdma/rdma-link-show-empty.json")]
    host = FakeHost([(("rdma", "-j", "link", "show"), lambda a, s: (0, shows.pop(0), "")),
                     (("rdma", "link", "delete"), (0, "", ""))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}], "state": "absent"}, host)
    assert not failed and res["changed"] is True
    assert host.commands()[1] == ["rdma", "link", "delete", "rxe_vf0"]
    assert res["links"][0]["device"] is None


@pytest.mark.parametrize("args, field", [
    ({"config": [{"netdev": "vf0; reboot"}]}, "config[0].netdev"),
    ({"config": [{"netdev": "vf0", "name": "a b"}]}, "config[0].name"),
    ({"config": [{"netdev": "vf0"}], "namespace": "ns0 x"}, "namespace"),
    ({"config": [{"netdev": "vf0"}], "address": "fe80::1"}, "address"),
    ({"config": [{"netdev": "vf0"}], "address": "1.2.3"}, "address"),
])
def test_bad_input_touches_nothing(sysfs, args, field):
    host = FakeHost()
    res, failed = run_module(mod.main, args, host)
    assert failed and res["field"] == field
    assert host.commands() == []


def test_gathered_without_rdma_tool_reports_no_device(sysfs):
    host = FakeHost()
    res, failed = run_module(mod.main, {"config": [{"netdev": "link0"}], "state": "gathered"}, host,
                             bins=["ip", "ibv_rc_pingpong"])
    assert not failed, res
    assert host.commands() == []
    assert (res["links"][0]["device"], res["ibv_rc_pingpong"]) == (None, True)


def test_present_without_rdma_tool_fails(sysfs):
    host = FakeHost()
    res, failed = run_module(mod.main, {"config": [{"netdev": "link0"}]}, host, bins=["ip"])
    assert failed and "rdma" in res["msg"]
    assert host.commands() == []


# `rdma` on a kernel without the RDMA core (seen on the CI host: ib_core neither loaded nor loadable)
NO_CORE = (1, "", "Failed to open NETLINK_RDMA socket\n")


def test_gathered_without_rdma_core_reports_no_device(sysfs):
    host = FakeHost([(("rdma", "-j", "link", "show"), NO_CORE)])
    res, failed = run_module(mod.main, {"config": [{"netdev": "link0"}], "state": "gathered"}, host,
                             bins=["ip", "rdma"])
    assert not failed, res
    assert res["changed"] is False
    assert (res["links"][0]["device"], res["links"][0]["gid_index"]) == (None, None)
    assert "NETLINK_RDMA" in res["rdma_problem"] and "ib_core" in res["rdma_problem"]


def test_absent_without_rdma_core_has_nothing_to_remove(sysfs):
    host = FakeHost([(("rdma", "-j", "link", "show"), NO_CORE)])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}], "state": "absent"}, host, bins=["ip", "rdma"])
    assert not failed, res
    assert res["changed"] is False and res["commands"] == []
    assert host.commands() == [["rdma", "-j", "link", "show"]]


def test_present_without_rdma_core_fails_naming_it(sysfs):
    host = FakeHost([(("rdma", "-j", "link", "show"), NO_CORE)])
    res, failed = run_module(mod.main, {"config": [{"netdev": "vf0"}]}, host, bins=["ip", "rdma"])
    assert failed
    assert "NETLINK_RDMA" in res["msg"] and "modprobe rdma_rxe" in res["msg"]
    assert host.commands() == [["rdma", "-j", "link", "show"]]


def test_gathered_other_rdma_failure_still_fails(sysfs):
    host = FakeHost([(("rdma", "-j", "link", "show"), (1, "", "Permission denied\n"))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "link0"}], "state": "gathered"}, host,
                             bins=["ip", "rdma"])
    assert failed and "Permission denied" in res["msg"]


def test_gathered_reports_no_problem_when_rdma_answers(sysfs):
    host = FakeHost([(("rdma", "-j", "link", "show"), (0, EMPTY, ""))])
    res, failed = run_module(mod.main, {"config": [{"netdev": "link0"}], "state": "gathered"}, host,
                             bins=["ip", "rdma"])
    assert not failed and res["rdma_problem"] is None
