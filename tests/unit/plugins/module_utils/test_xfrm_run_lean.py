# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_xfrm_run.lean_exit_args: Ansible's no_log scrub made linear, only when provably a no-op."""

from __future__ import annotations

import os

import pytest
from ansible.module_utils.common.parameters import remove_values
from netns_util import module_process

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run as R

KEY1 = "0x" + "ab" * 36
KEY2 = "cd" * 20
MASK = R.NO_LOG_TEXT
PARAMS = {"config": [{"spi": "0x1000", "aead": {"key": KEY1, "name": "rfc4106(gcm(aes))"}},
                     {"spi": "0x1001", "aead": {"key": KEY2, "name": "rfc4106(gcm(aes))"}}],
          "state": "merged", "namespace": None}
MASKED = {"config": [{"spi": "0x1000", "aead": {"key": MASK, "name": "rfc4106(gcm(aes))"}},
                     {"spi": "0x1001", "aead": {"key": MASK, "name": "rfc4106(gcm(aes))"}}],
          "state": "merged", "namespace": None}
CLEAN = {"changed": True, "commands": ["xfrm state add ... aead rfc4106(gcm(aes)) <redacted> 128"],
         "counts": {"added": 2}}


@pytest.mark.parametrize("name, secrets, result, lean", [
    ("keys, clean result: own invocation, nothing left to scrub", {KEY1, KEY2}, CLEAN, True),
    ("no secrets: untouched (Ansible adds its invocation)", set(), CLEAN, False),
    ("a key in the result: Ansible scrubs", {KEY1, KEY2}, dict(CLEAN, msg="bad " + KEY2), False),
    ("a key inside a longer string: Ansible scrubs", {KEY1}, dict(CLEAN, commands=["x" + KEY1[2:] + "y"]), False),
    ("any other 40+ hex run in the result: Ansible scrubs", {KEY1}, dict(CLEAN, note="f" * 40), False),
    ("a secret that is not hex key material: Ansible scrubs", {KEY1, "hunter2"}, CLEAN, False),
    ("a key as a dict key of the result: Ansible scrubs", {KEY1}, dict(CLEAN, odd={KEY1[2:]: 1}), False),
])
def test_lean_exit_args(name, secrets, result, lean):
    out, left = R.lean_exit_args(secrets, PARAMS, result)
    if lean:
        assert left == set()
        assert out == dict(result, invocation={"module_args": MASKED})
        assert remove_values(out, secrets) == out  # what Ansible would have done changes nothing
    else:
        assert out is result and left == set(secrets)


def test_lean_exit_args_param_holding_a_key_inside_text_falls_back():
    params = dict(PARAMS, note="key=" + KEY2)  # not equal to a secret: masking misses it, the scan sees it
    out, left = R.lean_exit_args({KEY1, KEY2}, params, CLEAN)
    assert out is CLEAN and left == {KEY1, KEY2}


def test_lean_exit_args_does_not_change_params():
    R.lean_exit_args({KEY1, KEY2}, PARAMS, CLEAN)
    assert PARAMS["config"][0]["aead"]["key"] == KEY1


SUMMARY = dict(PARAMS, output="summary")


@pytest.mark.parametrize("name, secrets, result, scrub", [
    ("keys, clean result", {KEY1, KEY2}, CLEAN, set()),
    ("no secrets (the policy module)", set(), CLEAN, set()),
    ("a key in the result: Ansible still scrubs", {KEY1, KEY2}, dict(CLEAN, msg="bad " + KEY2), {KEY1, KEY2}),
    ("a secret that is not hex key material", {KEY1, "hunter2"}, CLEAN, {KEY1, "hunter2"}),
])
def test_summary_echoes_config_as_its_length(name, secrets, result, scrub):
    """output=summary: the invocation is always the module's own, `config` given as its length, in
    every case (Ansible's would echo the whole list); the rest of the params as given."""
    out, left = R.lean_exit_args(secrets, SUMMARY, result)
    assert out["invocation"] == {"module_args": dict(SUMMARY, config="<2 objects>")}, name
    assert {k: v for k, v in out.items() if k != "invocation"} == result
    assert left == scrub
    assert SUMMARY["config"] == PARAMS["config"]  # params untouched


def test_full_output_echoes_the_whole_config_masked():
    out, left = R.lean_exit_args({KEY1, KEY2}, dict(PARAMS, output="full"), CLEAN)
    assert out["invocation"]["module_args"]["config"] == MASKED["config"] and left == set()


def test_state_module_logs_config_as_its_length_and_no_key(monkeypatch):
    """Ansible logs the invocation scrubbed keys x text; the state module logs config as '<N objects>'."""
    from ansible.module_utils import basic
    from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as M
    from harness import patch_module_args
    logged = []
    monkeypatch.setattr(basic.AnsibleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    cfg = [{"dst": "192.0.2.%d" % i, "spi": 0x1000 + i, "aead": {"key": "0x%072x" % (i + 1)}} for i in range(1, 4)]
    spec, M.StateModule.config_options = _argspec.lean(M.argument_spec())  # as main() does
    with patch_module_args({"config": cfg, "state": "deleted", "namespace": "ns9"}):
        module = M.StateModule(argument_spec=spec, supports_check_mode=True)
    assert len(logged) == 1 and "config=<3 objects>" in logged[0] and "namespace=ns9" in logged[0]
    assert "%070x" % 2 not in logged[0]
    assert module.params["config"] is None  # held out of AnsibleModule's validation (test_lean_config.py)
    module.apply_config()
    assert module.params["config"][0]["aead"]["key"] == "0x%072x" % 2  # and back, as given
    # why the override of AnsibleModule._log_invocation is needed: given `config` as a plain list
    # (the sub-options are applied later, by the module), Ansible would log the keys in clear
    logged.clear()
    with patch_module_args({"config": cfg, "state": "deleted", "namespace": "ns9"}):
        basic.AnsibleModule(argument_spec=spec, supports_check_mode=True)
    assert "%070x" % 2 in logged[0]


STATE_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "plugins", "modules",
                        "xfrm_offload_state.py")
SA = {"src": "192.0.2.1", "dst": "192.0.2.2", "spi": "0x1000", "reqid": "0x51c00001", "direction": "out",
      "aead": {"key": KEY1}, "offload": {"type": "none"}}


@pytest.mark.parametrize("why, params", [
    # AnsibleModule.__init__ itself refuses `state` (it no longer knows aead.key is no_log)
    ("AnsibleModule refuses another parameter", {"config": [SA], "state": "bogus"}),
    # _argspec refuses config[1] after reading config[0]'s key
    ("_argspec refuses a later element", {"config": [SA, dict(SA, spi="0x1001", esn="maybe")]}),
    ("the module's own check refuses (one key in two SAs)",
     {"config": [SA, dict(SA, spi="0x1001", aead={"key": "0x" + KEY2}), dict(SA, spi="0x1002")],
      "state": "rendered"}),
    ("a successful rendered run", {"config": [SA], "state": "rendered"}),
])
def test_no_key_in_the_real_module_output(why, params):
    """The module run as Ansible runs it (a process, arguments from a file): no key in what it prints,
    whichever layer refuses; the invocation shows the key masked."""
    out, proc = module_process(STATE_PY, params)
    for key in (KEY1[2:], KEY2):
        assert key not in proc.stdout and key not in proc.stderr, why
    assert out["invocation"]["module_args"]["config"][0]["aead"]["key"] == MASK, why
    assert ("failed" in out) == (why != "a successful rendered run"), out
