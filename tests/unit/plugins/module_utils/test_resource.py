# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _resource


class Kind(_resource.ObjectKind):
    """Objects are dicts {id, val, owner}; owner True means ours."""

    def key(self, obj):
        return obj["id"]

    def same(self, current, desired):
        return current["val"] == desired["val"]

    def owned(self, obj):
        return obj.get("owner", True)

    def merge(self, current, desired):
        m = dict(current)
        m.update({k: v for k, v in desired.items() if v is not None})
        return m


CUR = [{"id": 1, "val": "a"}, {"id": 2, "val": "b"}, {"id": 3, "val": "x", "owner": False}]


@pytest.mark.parametrize("state,desired,expect", [
    ("merged", [{"id": 1, "val": "a"}], {"added": 0, "replaced": 0, "deleted": 0, "unchanged": 1}),
    ("merged", [{"id": 1, "val": None}], {"added": 0, "replaced": 0, "deleted": 0, "unchanged": 1}),
    ("replaced", [{"id": 1, "val": "z"}, {"id": 9, "val": "n"}], {"added": 1, "replaced": 1, "deleted": 0, "unchanged": 0}),
    ("overridden", [{"id": 1, "val": "a"}], {"added": 0, "replaced": 0, "deleted": 1, "unchanged": 1}),
    ("deleted", [{"id": 2}, {"id": 7}], {"added": 0, "replaced": 0, "deleted": 1, "unchanged": 0}),
    ("deleted", [], {"added": 0, "replaced": 0, "deleted": 2, "unchanged": 0}),
])
def test_plan_counts(state, desired, expect):
    assert _resource.plan(Kind(), state, desired, CUR).counts() == expect


def test_overridden_and_deleted_never_touch_foreign():
    for state, desired in (("overridden", []), ("deleted", [])):
        p = _resource.plan(Kind(), state, desired, CUR)
        assert all(c["id"] != 3 for c in p.delete)


def test_desired_colliding_with_foreign_is_reported_not_replaced():
    p = _resource.plan(Kind(), "replaced", [{"id": 3, "val": "mine"}], CUR)
    assert not p.replace and len(p.foreign) == 1
    p = _resource.plan(Kind(), "deleted", [{"id": 3}], CUR)
    assert not p.delete and len(p.foreign) == 1


def test_unknown_state():
    with pytest.raises(ValueError):
        _resource.plan(Kind(), "gathered", [], CUR)
