# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _rdma
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError

from harness import fixture


def gid_rows(name):
    rows = []
    for line in fixture("rdma/" + name).splitlines():
        idx, gid, rest = line.split(" ", 2)
        gtype, ndev = rest.rsplit(" ", 1)
        rows.append(_rdma.gid_entry(idx, gid, None if gtype == "-" else gtype, None if ndev == "-" else ndev))
    return rows


@pytest.mark.parametrize("name, expected", [
    ("rdma-link-show-empty.json", []),
    ("rdma-link-show-init.json", [("rxe_vf0", "DOWN", "vf0"), ("rxe_link0", "ACTIVE", "link0"),
                                  ("rxe_mvx", "ACTIVE", None)]),
    ("rdma-link-show-nsx.json", [("rxe_vf0", "DOWN", None), ("rxe_link0", "ACTIVE", None),
                                 ("rxe_mvx", "ACTIVE", "mvx")]),
])
def test_parse_links_real(name, expected):
    links = _rdma.parse_links(fixture("rdma/" + name))
    assert [(lk["name"], lk["state"], lk["netdev"]) for lk in links] == expected
    assert all(lk["port"] == 1 for lk in links)


def test_parse_links_garbage():
    with pytest.raises(ValueError, match="cannot decode"):
        _rdma.parse_links("link rxe0/1 state ACTIVE")
    assert _rdma.parse_links("") == []


def test_gid_table_real():
    rows = _rdma.used_gids(gid_rows("gids-rxe_vf0.txt"))
    assert [(r["index"], r["type"], r["netdev"], r["ipv4"]) for r in rows] == [
        (0, "RoCE v2", "vf0", None), (1, "RoCE v2", "vf0", "192.168.10.2")]


@pytest.mark.parametrize("netdev, address, expected", [
    (None, None, {"index": 1, "address": "192.168.10.2"}),
    ("vf0", "192.168.10.2", {"index": 1, "address": "192.168.10.2"}),
    ("vf0", "192.168.10.1", None),
    ("link0", None, None),
])
def test_roce_v2_ipv4_gid(netdev, address, expected):
    assert _rdma.roce_v2_ipv4_gid(gid_rows("gids-rxe_vf0.txt"), netdev, address) == expected


def test_roce_v1_and_vlan_gids():
    rows = [_rdma.gid_entry(0, "0000:0000:0000:0000:0000:ffff:c0a8:6401", "IB/RoCE v1", "link0"),
            _rdma.gid_entry(3, "0000:0000:0000:0000:0000:ffff:c0a8:6501", "RoCE v2", "link0.100"),
            _rdma.gid_entry(1, "0000:0000:0000:0000:0000:ffff:c0a8:6401", "RoCE v2", "link0")]
    assert _rdma.roce_v2_ipv4_gid(rows) == {"index": 3, "address": "192.168.101.1"}
    assert _rdma.roce_v2_ipv4_gid(rows, "link0") == {"index": 1, "address": "192.168.100.1"}


LINKS = _rdma.parse_links(fixture("rdma/rdma-link-show-init.json"))


@pytest.mark.parametrize("config, state, actions, views", [
    # a new owned link on a netdev that has none
    ([{"netdev": "vf1", "name": "rxe_vf1"}], "present", [("add", "rxe_vf1", "vf1")],
     [("rxe_vf1", True, "add")]),
    # already there: nothing to do
    ([{"netdev": "vf0", "name": "rxe_vf0"}], "present", [], [("rxe_vf0", True, None)]),
    # another device serves link0 (e.g. mlx5_0): used, not ours, nothing made
    ([{"netdev": "link0", "name": "rxe_mine"}], "present", [], [("rxe_link0", False, None)]),
    ([{"netdev": "vf0", "name": "rxe_vf0"}], "absent", [("delete", "rxe_vf0", "vf0")], [(None, True, "delete")]),
    # absent never removes a foreign device on the netdev
    ([{"netdev": "link0", "name": "rxe_mine"}], "absent", [], [("rxe_link0", False, None)]),
    ([{"netdev": "vf1", "name": "rxe_vf1"}], "absent", [], [(None, False, None)]),
    ([{"netdev": "link0", "name": "rxe_link0"}], "gathered", [], [("rxe_link0", True, None)]),
])
def test_plan(config, state, actions, views):
    got_actions, got_views = _rdma.plan(config, LINKS, state)
    assert got_actions == actions
    assert [(v["link"], v["owned"], v["action"]) for v in got_views] == views


@pytest.mark.parametrize("config, field", [
    ([{"netdev": "vf1", "name": "rxe_link0"}], "config[0].name"),   # name taken on link0
    ([{"netdev": "vf1", "name": "rxe_mvx"}], "config[0].name"),     # name taken, netdev in another netns
])
def test_plan_conflicts(config, field):
    with pytest.raises(InputError) as err:
        _rdma.plan(config, LINKS, "present")
    assert err.value.field == field


@pytest.mark.parametrize("config, field", [
    ([{"netdev": "eth0; reboot"}], "config[0].netdev"),
    ([{"netdev": "vf0", "name": "rxe vf0"}], "config[0].name"),
    ([{"netdev": "vf0", "name": "rxe_vf0\n"}], "config[0].name"),
    ([{"netdev": "vf0"}, {"netdev": "vf0"}], "config[1].netdev"),
    ([{"netdev": "vf0", "name": "x"}, {"netdev": "vf1", "name": "x"}], "config[1].name"),
    (["vf0"], "config[0]"),
])
def test_validate_config_refuses(config, field):
    with pytest.raises(InputError) as err:
        _rdma.validate_config(config)
    assert err.value.field == field


def test_validate_config_default_name():
    assert _rdma.validate_config([{"netdev": "vf0"}, {"netdev": "link0", "name": "rxe0"}]) == [
        {"netdev": "vf0", "name": "rxe_vf0"}, {"netdev": "link0", "name": "rxe0"}]


@pytest.mark.parametrize("action, argv", [
    (("add", "rxe_vf0", "vf0"), ["link", "add", "rxe_vf0", "type", "rxe", "netdev", "vf0"]),
    (("delete", "rxe_vf0", "vf0"), ["link", "delete", "rxe_vf0"]),
])
def test_render(action, argv):
    assert _rdma.render(*action) == argv


def test_describe():
    assert _rdma.describe(LINKS[:2]) == ("rxe_link0 port 1 netdev link0 state ACTIVE\n"
                                         "rxe_vf0 port 1 netdev vf0 state DOWN\n")
