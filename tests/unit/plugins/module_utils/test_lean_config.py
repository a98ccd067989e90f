# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_xfrm_run.LeanConfig: `config` held out of AnsibleModule's validation and put back by the module.

Why the override of AnsibleModule._load_params is there: AnsibleModule's validator deep-copies every
parameter it validates; with `config` held out, the list (20,000 dicts in the benchmark) is not
copied (test_validator_deep_copies_config_only_without_the_override), nor in the copy of the
arguments ansible-core keeps while reading them (test_arguments_core_keeps_leave_config_out_only_
with_the_override).  And that it changes nothing
else: what the module ends up with, or refuses, is what AnsibleModule's own validation of the full
spec gives, for every form `config` can take.
"""

from __future__ import annotations

import copy

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common import arg_spec
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from harness import ModuleExit, patch_module_args

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy as P
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as S

KEY = "0x" + "5a" * 36
SA = {"src": "192.0.2.1", "dst": "192.0.2.2", "spi": "0x1000", "reqid": "0x51c00001", "direction": "out",
      "aead": {"key": KEY}, "offload": {"type": "none"}}
SP = {"src": "10.0.0.0/24", "dst": "10.0.1.0/24", "dir": "out",
      "tmpl": {"src": "192.0.2.1", "dst": "192.0.2.2", "reqid": "0x51c00001"}}
MODULES = {"state": (S, S.StateModule, SA), "policy": (P, P.PolicyModule, SP)}


def _fail(self, msg, **kwargs):
    raise ModuleExit(dict(kwargs, msg=msg, failed=True), True)


def _module(which, params, monkeypatch):
    """(the module's params after apply_config, or None; the failure result, or None)."""
    mod, cls, _item = MODULES[which]
    spec, cls.config_options = _argspec.lean(mod.argument_spec())
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail)
    try:
        with patch_module_args(params):
            module = cls(argument_spec=spec, supports_check_mode=True)
        module.apply_config()
    except ModuleExit as done:
        return None, done.result
    return module.params, None


def _ansible(which, params):
    mod = MODULES[which][0]
    res = ArgumentSpecValidator(mod.argument_spec()).validate(params)
    return (None, res.error_messages[0]) if res.error_messages else (res.validated_parameters, None)


@pytest.mark.parametrize("which", sorted(MODULES))
def test_validator_deep_copies_config_only_without_the_override(which, monkeypatch):
    mod, cls, item = MODULES[which]
    spec, cls.config_options = _argspec.lean(mod.argument_spec())
    copied = []
    real = copy.deepcopy

    def recording(value, memo=None):
        if isinstance(value, dict):
            copied.append(value.get("config"))
        return real(value, memo)

    monkeypatch.setattr(arg_spec, "deepcopy", recording)
    config = [dict(item) for _i in range(3)]
    with patch_module_args({"config": config}):
        module = cls(argument_spec=spec, supports_check_mode=True)
    assert copied == [None]  # the validator copied the params without the list
    module.apply_config()
    assert len(module.params["config"]) == 3 and module.params["config"][0]["dst"] == item["dst"]
    copied.clear()
    with patch_module_args({"config": config}):
        basic.AnsibleModule(argument_spec=spec, supports_check_mode=True)
    assert copied == [config]  # plain AnsibleModule copies the whole list


@pytest.mark.parametrize("which", sorted(MODULES))
def test_arguments_core_keeps_leave_config_out_only_with_the_override(which, monkeypatch):
    """ansible-core 2.19's basic._load_params keeps a deep copy of all module arguments
    (basic._PARSED_MODULE_ARGS, read afterwards for `_ansible_tracebacks_for` only).  With LeanConfig
    that copy leaves `config` out, so the list is never deep-copied; the other arguments are kept as
    before, the module still gets the whole list, and basic's `copy` is the real module afterwards."""
    if getattr(basic, "copy", None) is not copy or not hasattr(basic, "_PARSED_MODULE_ARGS"):
        pytest.skip("this ansible-core keeps no copy of the arguments (2.16: no basic._PARSED_MODULE_ARGS)")
    mod, cls, item = MODULES[which]
    spec, cls.config_options = _argspec.lean(mod.argument_spec())
    config = [dict(item) for _i in range(3)]
    args = {"config": config, "state": "merged", "_ansible_tracebacks_for": ["error"]}
    copied = []
    real = copy.deepcopy

    def recording(value, memo=None):
        if isinstance(value, dict) and isinstance(value.get("config"), list):
            copied.append(len(value["config"]))
        return real(value, memo)

    monkeypatch.setattr(copy, "deepcopy", recording)
    with patch_module_args(args):
        module = cls(argument_spec=spec, supports_check_mode=True)
    assert copied == []
    kept = basic._PARSED_MODULE_ARGS  # pylint: disable=protected-access
    assert "config" not in kept and kept["state"] == "merged" and kept["_ansible_tracebacks_for"] == ["error"]
    assert basic.copy is copy
    module.apply_config()
    assert len(module.params["config"]) == 3 and module.params["config"][0]["dst"] == item["dst"]
    with patch_module_args(args):
        basic.AnsibleModule(argument_spec=spec, supports_check_mode=True)
    assert copied == [3]  # plain AnsibleModule: the whole list copied
    assert basic._PARSED_MODULE_ARGS["config"] == config  # pylint: disable=protected-access


@pytest.mark.parametrize("which", sorted(MODULES))
@pytest.mark.parametrize("form", ["list", "empty", "null", "absent", "dict", "text", "k=v text", "number",
                                  "boolean", "element text", "element k=v", "element number"])
def test_config_forms_as_ansible(which, form, monkeypatch):
    item = MODULES[which][2]
    value = {"list": [item], "empty": [], "null": None, "dict": item, "text": "a,b", "k=v text": "dst=x spi=1",
             "number": 5, "boolean": True, "element text": ["garbage"], "element k=v": ["dst=x spi=1"],
             "element number": [5]}.get(form)
    params = {} if form == "absent" else {"config": value}
    ours, failed = _module(which, dict(params), monkeypatch)
    theirs, error = _ansible(which, copy.deepcopy(params))
    assert (ours is None) == (theirs is None), (failed, error)
    if ours is not None:
        assert ours["config"] == theirs["config"]
    else:
        assert failed["field"].startswith("config") and failed["msg"].startswith(failed["field"] + ": ")


def test_a_refusal_by_ansible_still_echoes_config_masked(monkeypatch):
    """AnsibleModule refuses `state` while `config` is held out: the echo has it back, key masked
    by Ansible (fail_json put it back and registered its no_log values first)."""
    captured = {}

    def fail(self, msg, **kwargs):
        captured["no_log"] = set(self.no_log_values)
        captured["config"] = self.params.get("config")
        raise ModuleExit(dict(kwargs, msg=msg, failed=True), True)

    spec, S.StateModule.config_options = _argspec.lean(S.argument_spec())
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail)
    with pytest.raises(ModuleExit), patch_module_args({"config": [SA], "state": "bogus"}):
        S.StateModule(argument_spec=spec, supports_check_mode=True)
    assert captured["config"] == [SA] and KEY in captured["no_log"]


@pytest.mark.parametrize("which", sorted(MODULES))
def test_collector_off_during_the_run_and_back_after(which, monkeypatch):
    """The modules run with Python's cyclic garbage collector off (_xfrm_run.collector_paused) and
    leave it as they found it, also when the run ends in exit_json/fail_json."""
    import gc
    from harness import FakeHost, run_module
    from xfrm_sim import XfrmSim
    mod, dummy, item = MODULES[which]
    seen = []
    sim = XfrmSim()

    def ip(argv, stdin):
        seen.append(gc.isenabled())
        return sim(argv, stdin)

    host = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", "")), (("ip",), ip)])
    assert gc.isenabled()
    res, failed = run_module(mod.main, {"config": [item], "state": "gathered"}, host)
    assert not failed, res
    assert seen and not any(seen) and gc.isenabled()
    res, failed = run_module(mod.main, {"config": "a,b"}, host)
    assert failed and gc.isenabled()
