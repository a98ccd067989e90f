# -*- coding: utf-8 -*-
"""_argspec (the xfrm modules' `config` sub-options applied by the module, not by AnsibleModule):
the same outcome as AnsibleModule's own validation of the full spec, input by input (accepted or
refused, the values handed to the module, the no_log values), and DOCUMENTATION documenting every
declared sub-option exactly (validate-modules only sees the lean spec given to AnsibleModule)."""

from __future__ import annotations

import copy
import random

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy as P
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as S

KEY = "0x" + "ab" * 36
MODULES = {"state": S, "policy": P}

# Values tried for each option, by declared type: the right type, conversions Ansible makes
# (int -> str, "yes" -> bool, "k=v" -> dict), values it refuses, null.
POOL = {
    "str": ["192.0.2.1", "esp", "packet", "in", "out", "transport", 5, 1.5, True, None, "", "True", "False",
            ["x"], {"a": 1}],
    "raw": ["0x1000", 4096, None, "", True, ["x"]],
    "bool": [True, False, "yes", "no", "on", "0", 1, 0, 2, "maybe", None, 1.0, ["x"]],
    "dict": [None, {}, "type=packet dev=p0", '{"type": "none"}', "garbage", 5, ["x"]],
}


def _ansible(full, elements):
    """AnsibleModule's validation of the full spec: (error or None, config, no_log values)."""
    try:
        res = ArgumentSpecValidator({"config": full}).validate({"config": elements})
    except TypeError as exc:  # Ansible goes on into the sub-options of a dict it could not convert
        return "crash: %s" % exc, None, None
    if res.error_messages:
        return res.error_messages[0], None, set(res._no_log_values)
    return None, res.validated_parameters["config"], set(res._no_log_values)


def _ours(full, elements):
    lean, options = _argspec.lean({"config": full})
    assert "options" not in lean["config"] and lean["config"]["elements"] == "dict"
    secrets = set()
    for e in elements:
        options.secrets(e, secrets)
    try:
        return None, [options.apply("config[%d]" % i, e) for i, e in enumerate(elements)], secrets
    except InputError as exc:
        return exc, None, secrets


GOOD = {"str": ["192.0.2.1", 5, "x"], "raw": ["0x1000", 4096], "bool": [True, False, "yes", 0], "dict": [{}]}


def _random_element(options, rnd, depth=0):
    item = {}
    for name, opt in options.items():
        if rnd.random() < (0.02 if opt.get("required") else 0.3):
            continue  # left out
        wanted = opt.get("type", "str")
        pick = rnd.random()
        if wanted == "dict" and opt.get("options") and pick < 0.8 and depth < 2:
            item[name] = _random_element(opt["options"], rnd, depth + 1)
        elif opt.get("choices") and pick < 0.8:
            item[name] = rnd.choice(list(opt["choices"]))
        elif opt.get("no_log") and pick < 0.8:
            item[name] = KEY
        else:
            item[name] = copy.deepcopy(rnd.choice(GOOD[wanted] if pick < 0.9 else POOL[wanted]))
    if rnd.random() < 0.03:
        item["bogus"] = 1
    return item


@pytest.mark.parametrize("which", sorted(MODULES))
def test_same_outcome_as_ansible_random(which):
    full = MODULES[which].argument_spec()["config"]
    rnd = random.Random(20261207)
    accepted = refused = 0
    for _n in range(1500):
        elements = [_random_element(full["options"], rnd) for _i in range(rnd.choice((1, 1, 2)))]
        err_a, cfg_a, nl_a = _ansible(full, [dict(e) for e in elements])
        err_o, cfg_o, nl_o = _ours(full, [dict(e) for e in elements])
        assert (err_a is None) == (err_o is None), (elements, err_a, err_o)
        assert cfg_o == cfg_a, elements
        assert nl_a is None or nl_o == nl_a, elements
        if err_a is None:
            accepted += 1
        else:
            refused += 1
    # the corpus exercises both outcomes, not one
    assert accepted > 100 and refused > 100, (accepted, refused)


@pytest.mark.parametrize("which, element, field", [
    ("state", {"dst": "192.0.2.2"}, "config[0].spi"),
    ("state", {"dst": "192.0.2.2", "spi": 1, "esn": "maybe"}, "config[0].esn"),
    ("state", {"dst": "192.0.2.2", "spi": 1, "mode": "beet"}, "config[0].mode"),
    ("state", {"dst": "192.0.2.2", "spi": 1, "aead": {"icv": 128}}, "config[0].aead.key"),
    ("state", {"dst": "192.0.2.2", "spi": 1, "offload": {"type": "full"}}, "config[0].offload.type"),
    ("state", {"dst": "192.0.2.2", "spi": 1, "offload": "garbage"}, "config[0].offload"),
    ("state", {"dst": "192.0.2.2", "spi": 1, "sel": {"bogus": 1}}, "config[0].sel"),
    ("state", "garbage", "config[0]"),
    ("policy", {"src": "10.0.0.0/8", "dst": "10.1.0.0/16"}, "config[0].dir"),
    ("policy", {"src": "a", "dst": "b", "dir": "out", "tmpl": {"mode": "tunnel"}}, "config[0].tmpl.reqid"),
    ("policy", {"src": "a", "dst": "b", "dir": "fwd", "mark": {"mask": 1}}, "config[0].mark.value"),
])
def test_refusal_names_the_field(which, element, field):
    full = MODULES[which].argument_spec()["config"]
    err_a, _c, _n = _ansible(full, [element])
    err_o, _c, _n = _ours(full, [element])
    assert err_a is not None and err_o is not None
    assert err_o.field == field and str(err_o).startswith(field + ": ")


def test_conversions_and_defaults_as_ansible():
    full = S.argument_spec()["config"]
    el = {"dst": "192.0.2.2", "spi": "0x1000", "esn": "yes", "src": 5, "offload": "dev=p0",
          "aead": {"key": KEY}}
    err, cfg, secrets = _ours(full, [el])
    assert err is None
    got = cfg[0]
    assert got["esn"] is True and got["src"] == "5" and got["installed"] is False
    assert got["offload"] == {"type": "packet", "dev": "p0", "fallback": "fail"}
    assert got["aead"] == {"name": "rfc4106(gcm(aes))", "key": KEY, "icv": None}
    assert got["mode"] is None and got["sel"] is None
    assert secrets == {KEY}
    assert _ansible(full, [el])[1] == cfg


def test_unsupported_spec_keys_are_refused():
    # an alias or a fallback added to the spec later must not be ignored silently
    with pytest.raises(ValueError, match="aliases"):
        _argspec.lean({"config": {"type": "list", "elements": "dict",
                                  "options": {"a": {"type": "str", "aliases": ["b"]}}}})
    with pytest.raises(ValueError, match="type int"):
        _argspec.lean({"config": {"type": "list", "elements": "dict", "options": {"a": {"type": "int"}}}})


def _doc_matches_spec(doc_options, spec_options, path):
    assert set(doc_options) == set(spec_options), path
    for name, opt in spec_options.items():
        doc = doc_options[name]
        where = "%s.%s" % (path, name)
        assert doc.get("type", "str") == opt.get("type", "str"), where
        assert bool(doc.get("required", False)) == bool(opt.get("required", False)), where
        assert doc.get("default") == opt.get("default"), where
        assert doc.get("choices") == (list(opt["choices"]) if opt.get("choices") is not None else None), where
        assert doc.get("elements") == opt.get("elements"), where
        if opt.get("options"):
            _doc_matches_spec(doc["suboptions"], opt["options"], where)
        else:
            assert "suboptions" not in doc, where


@pytest.mark.parametrize("which", sorted(MODULES))
def test_documentation_documents_the_sub_options_exactly(which):
    mod = MODULES[which]
    doc = yaml.safe_load(mod.DOCUMENTATION)["options"]["config"]
    full = mod.argument_spec()["config"]
    assert doc["type"] == "list" and doc["elements"] == "dict"
    _doc_matches_spec(doc["suboptions"], full["options"], "config")
