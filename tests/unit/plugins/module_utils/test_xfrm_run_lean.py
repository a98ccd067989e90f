# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_xfrm_run.lean_exit_args: Ansible's no_log scrub made linear, only when provably a no-op."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.parameters import remove_values

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


def test_state_module_logs_config_as_its_length_and_no_key(monkeypatch):
    """Ansible logs the invocation scrubbed keys x text; the state module logs config as '<N objects>'."""
    from ansible.module_utils import basic
    from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as M
    from harness import patch_module_args
    logged = []
    monkeypatch.setattr(basic.AnsibleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    cfg = [{"dst": "192.0.2.%d" % i, "spi": 0x1000 + i, "aead": {"key": "0x%072x" % (i + 1)}} for i in range(1, 4)]
    with patch_module_args({"config": cfg, "state": "deleted", "namespace": "ns9"}):
        module = M.StateModule(argument_spec=M.argument_spec(), supports_check_mode=True)
    assert len(logged) == 1 and "config=<3 objects>" in logged[0] and "namespace=ns9" in logged[0]
    assert "%070x" % 2 not in logged[0]
    assert module.params["config"][0]["aead"]["key"] == "0x%072x" % 2  # params restored
