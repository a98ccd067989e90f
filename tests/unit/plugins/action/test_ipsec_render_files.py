# -*- coding: utf-8 -*-
"""The ipsec_render_files action (render.yml's one-step render, issue 18): its parameters (config by
_argspec, as the modules apply it) are what the xfrm modules' ArgumentSpecValidator gives; its
output per host is what the modules render; host_slice/links_by_host give what host_objects gives."""

from __future__ import annotations

import copy
import os
import sys

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ipsec_offload.mlx5.plugins.action import ipsec_render_files as A
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy as P
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as S

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "filter"))
from test_ipsec_pairs_inventories import derive_with_store  # noqa: E402  pylint: disable=wrong-import-position


def mesh(n, **extra):
    hv = {"h%02d" % i: dict({"ipsec_local_ip": "10.9.0.%d" % (i + 1), "ipsec_meshes": ["m"], "ipsec_dev": "eth0"}, **extra)
          for i in range(n)}
    return hv, {"m": sorted(hv)}


def renderers():
    return (A._Renderer("xfrm_offload_state", S.argument_spec(), S.StateSpec()),
            A._Renderer("xfrm_offload_policy", P.argument_spec(), P.PolicySpec("all")))


def configs(result):
    for h, obj in sorted(result["hosts"].items()):
        base = {"state": "rendered", "owned_reqid_range": result["reqid_range"]}
        if obj["namespace"]:
            base["namespace"] = obj["namespace"]
        yield h, dict(base, config=obj["states"], reveal_keys=True), dict(base, config=obj["policies"] + obj["guards"])


def _validator(r, p):
    """The xfrm module's full argument spec through Ansible's own validator: (params or None, error)."""
    spec = S.argument_spec() if r.what == "xfrm_offload_state" else P.argument_spec()
    res = ArgumentSpecValidator(spec).validate(copy.deepcopy(p))
    return (None, res.error_messages[0]) if res.error_messages else (res.validated_parameters, None)


@pytest.mark.parametrize("name", ["lab", "mesh3", "vxlan-overlay", "roce-vf", "lab-roce", "lab-vxlan"])
def test_parameters_equal_the_validators_on_the_examples(name):
    st, po = renderers()
    for h, sp, pp in configs(derive_with_store(name)):
        for r, p in ((st, sp), (po, pp)):
            assert r.params(h, copy.deepcopy(p)) == _validator(r, p)[0]


def test_unusual_values_as_the_validator():
    """Values the derivation never makes: converted as Ansible converts them, or refused naming the
    host, the module and the field."""
    st, dummy = renderers()
    hv, groups = mesh(2)
    r = _pairs.derive(hv, groups=groups, master_secret="s" * 32)
    sp = dict(state="rendered", owned_reqid_range=r["reqid_range"], config=r["hosts"]["h00"]["states"])
    for mutate, accepted in ((lambda c: c[0].__setitem__("esn", "yes"), True),     # converted
                             (lambda c: c[0].__setitem__("dst", 10), True),        # int for str: converted
                             (lambda c: c[0].__setitem__("spi", None), True),      # required means present
                             (lambda c: c[0].pop("spi"), False),                   # required
                             (lambda c: c[0].__setitem__("bogus", 1), False),      # unknown
                             (lambda c: c[0]["offload"].__setitem__("type", "x"), False)):  # not a choice
        p = copy.deepcopy(sp)
        mutate(p["config"])
        want, error = _validator(st, p)
        assert (want is not None) == accepted, error
        if accepted:
            assert st.params("h00", copy.deepcopy(p)) == want
        else:
            with pytest.raises(Exception, match=r"host h00: xfrm_offload_state: config\[0\]"):
                st.params("h00", p)
    with pytest.raises(Exception, match="host h00: xfrm_offload_state: .*state"):
        st.params("h00", dict(sp, state="bogus"))


def test_lines_are_the_modules_rendered_output():
    st, po = renderers()
    for h, sp, pp in configs(derive_with_store("mesh3")):
        for r, p, spec in ((st, sp, S.StateSpec()), (po, pp, P.PolicySpec("all"))):
            vp = _validator(r, p)[0]
            rng = X.owned_range(vp["owned_reqid_range"])
            spec.kind = type(spec.kind)(rng)
            assert r.lines(h, p) == _xfrm_run.render_config(spec, vp, rng)[0]


def test_host_slice_is_host_objects():
    hv, groups = mesh(6)
    hv["h02"]["ipsec_namespace"] = "ns0"
    specs, links, dummy = _pairs.derive_links(hv, groups=groups, master_secret="s" * 32)
    full = _pairs.host_objects(specs, links)
    by_host = _pairs.links_by_host(specs, links)
    assert list(by_host) == sorted(full)
    for h, items in by_host.items():
        assert _pairs.host_slice(specs, h, items) == full[h]


def run_render_action(tmp_path, hv, groups, out, **args):
    from unittest import mock
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play_context import PlayContext
    from ansible.playbook.task import Task
    task = Task()
    task.action = "ipsec_offload.mlx5.ipsec_render_files"
    task.args = dict({"dest": str(out), "keystore": str(tmp_path / "ks.yml"), "key_derivation": "hkdf",
                      "reveal_keys": True}, **args)
    task.check_mode = False
    task.diff = False
    templar = mock.MagicMock()
    templar.template = lambda v: v
    action = A.ActionModule(task, mock.MagicMock(), PlayContext(), DataLoader(), templar, None)
    return action.run(task_vars={"hostvars": hv, "groups": groups, "ipsec_master_secret": "m" * 32})


def test_parallel_render_is_the_serial_render(tmp_path, monkeypatch):
    """Hosts rendered in several processes give the very same files; a bad value in any process
    refuses the run and nothing is written."""
    hv, groups = mesh(24)
    hv["h05"]["ipsec_namespace"] = "ns1"
    r1 = run_render_action(tmp_path, hv, groups, tmp_path / "one", workers=1)
    r3 = run_render_action(tmp_path, hv, groups, tmp_path / "three", workers=3)
    assert r1["changed"] and r3["changed"] and r1["host_names"] == r3["host_names"] == sorted(hv)
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == sorted(os.listdir(tmp_path / "three")) and len(names) == 25
    for n in names:
        assert (tmp_path / "one" / n).read_bytes() == (tmp_path / "three" / n).read_bytes()
        assert os.stat(tmp_path / "three" / n).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "three").st_mode & 0o777 == 0o700
    again = run_render_action(tmp_path, hv, groups, tmp_path / "three", workers=3)
    assert not again["changed"]
    real = A.R.ipsec_render_script

    def bad_h23(host, **kw):
        if host == "h23":
            A.R._fail("ipsec_render_script", "host h23: states[0]: not one printable ASCII line; nothing was written")
        return real(host, **kw)

    monkeypatch.setattr(A.R, "ipsec_render_script", bad_h23)    # h23 (index 22) is in the first child's share
    with pytest.raises(Exception, match="host h23: states.0.: not one printable ASCII line"):
        run_render_action(tmp_path, hv, groups, tmp_path / "four", workers=3)
    assert os.listdir(tmp_path / "four") == []
