# -*- coding: utf-8 -*-
"""Reliability 6 (issue 15): property tests (hypothesis) of the shared validator, the derivation
and the renderers.

Generated strings (any Unicode, plus alphabets biased towards what breaks things: digits of every
script, white space, line breaks, shell and batch metacharacters, '%' zone ids) go into every
string field of module_utils/_validate, every string inventory variable of the derivation, the
xfrm modules' ``state: rendered`` and the render.yml filter.  Properties:

- never an exception other than the documented one (InputError / AnsibleFilterError / fail_json);
- a refusal names its field and has no line break;
- whatever is accepted comes out without a line break, a control character or an unquoted shell
  metacharacter: batch lines carry only [A-Za-z0-9 _.:/@+=,-] outside the fixed words
  "<redacted>" and "rfc4106(gcm(aes))"; a rendered script has only the lines the renderer means to
  emit, each batch line one single-quoted printf argument, and ``bash -n`` accepts it.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs  # noqa: E402
from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_render import ipsec_render  # noqa: E402
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V  # noqa: E402
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run  # noqa: E402
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy, xfrm_offload_state  # noqa: E402

import _rel  # noqa: E402
from harness import FakeHost, run_module  # noqa: E402

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# digits of several scripts, white space, controls, shell/batch metacharacters, address pieces
NASTY = ("0123456789abcdefABCDEFx.:/%-_@+= \t\n\r\x00\x0b\x0c'\"`$();&|<>#\\*?![]{}~"
         "\u0660\u0661\u0662\u0669\u06f1\u0966\uff10\uff11\uff41\u00b2\u2028\u2029\u200b\u00a0")
nasty = st.text(alphabet=NASTY, max_size=48)
anything = st.one_of(st.text(max_size=64), nasty, st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                     st.booleans(), st.none(), st.floats(allow_nan=True), st.lists(st.integers(), max_size=2))

SAFE_TOKEN = re.compile(r"[A-Za-z0-9 _.:/@+=,-]*")
FIXED = ("<redacted>", "rfc4106(gcm(aes))")
FIELD = "config[7].x"


def _refusal_ok(exc, field=FIELD):
    text = str(exc)
    assert text.startswith(field + ": "), text
    assert "\n" not in text and "\r" not in text, text


def _clean(text):
    for w in FIXED:
        text = text.replace(w, "")
    return text


STRING_VALIDATORS = {
    "ifname": V.ifname, "netns": V.netns, "devlink_handle": V.devlink_handle, "devlink_port": V.devlink_port,
    "pci_address": V.pci_address, "integer": lambda f, v: V.integer(f, v, 0, 2 ** 32),
    "port": V.port, "protocol": V.protocol, "hexbytes": lambda f, v: V.hexbytes(f, v, (20, 36)),
    "aead_key": lambda f, v: V.aead_key(f, v, (20, 36)), "address": V.address, "prefix": V.prefix,
    "prefix_strict": lambda f, v: V.prefix(f, v, strict=True), "mac": V.mac, "word": V.word,
    "choice": lambda f, v: V.choice(f, v, ("packet", "crypto", "none")), "boolean": V.boolean,
    "string": V.string,
}
_RECORDED = set()


@pytest.mark.parametrize("name", sorted(STRING_VALIDATORS))
@SETTINGS
@given(value=anything)
def test_validator_never_raises_anything_else(name, value):
    if name not in _RECORDED:
        _RECORDED.add(name)
        _rel.record("properties", target="_validate." + name, examples=SETTINGS.max_examples)
    fn = STRING_VALIDATORS[name]
    try:
        out = fn(FIELD, value)
    except V.InputError as exc:
        _refusal_ok(exc)
        return
    if name == "string":
        return
    text = str(out)
    # accepted: no line break, control character, white space (but none at all) or metacharacter
    assert SAFE_TOKEN.fullmatch(text) and " " not in text, (name, value, text)
    if isinstance(value, str) and name not in ("hexbytes", "aead_key", "protocol", "integer", "port"):
        assert value.isascii() and value.strip() == value, (name, value)


@SETTINGS
@given(value=nasty)
def test_integer_is_ascii_only(value):
    try:
        n = V.integer(FIELD, value)
    except V.InputError as exc:
        _refusal_ok(exc)
        return
    assert re.fullmatch(r"0[xX][0-9a-fA-F]+|[0-9]+", value), value
    assert n == (int(value, 16) if value[:2].lower() == "0x" else int(value))


# ------------------------------------------------------------------------------ the derivation

def _lab(var, value, host="edge-a"):
    hv = {
        "edge-a": {"ipsec_local_ip": "192.0.2.1", "ipsec_peers": ["edge-b"], "ipsec_offload": "crypto",
                   "ipsec_dev": "p0"},
        "edge-b": {"ipsec_local_ip": "192.0.2.2", "ipsec_peers": ["edge-a"], "ipsec_offload": "crypto",
                   "ipsec_dev": "p0"},
    }
    if var.startswith("sel."):
        hv["edge-a"]["ipsec_selectors"] = hv["edge-b"]["ipsec_selectors"] = [
            {"proto": "udp", var[4:]: value} if var != "sel.proto" else {"proto": value}]
        return hv, "host edge-a: ipsec_selectors[0]"
    if var.startswith("ov."):
        hv[host]["ipsec_overrides"] = {"edge-b": {var[3:]: value}}
        return hv, "host edge-a: ipsec_overrides[edge-b]"
    if var == "ipsec_networks":
        for h in hv:
            hv[h]["ipsec_mode"] = "tunnel"
        hv[host][var] = [value]
        return hv, "host edge-a: ipsec_networks[0]"
    hv[host][var] = value
    return hv, "host edge-a: " + var


DERIVE_VARS = ("ipsec_local_ip", "ipsec_dev", "ipsec_namespace", "ipsec_mode", "ipsec_offload", "ipsec_key_bits",
               "ipsec_policy_priority", "ipsec_networks", "sel.proto", "sel.dport", "sel.sport", "ov.spi",
               "ov.reqid", "ov.key")


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


@pytest.mark.parametrize("var", DERIVE_VARS)
@FEW
@given(value=st.one_of(nasty, st.text(max_size=40), st.integers(min_value=-5, max_value=2 ** 33)))
def test_derivation_accepts_or_names_the_variable(var, value):
    if "ipsec_pairs " + var not in _RECORDED:
        _RECORDED.add("ipsec_pairs " + var)
        _rel.record("properties", target="ipsec_pairs: " + var, examples=FEW.max_examples)
    hv, where = _lab(var, value)
    if var == "sel.proto" or var.startswith("sel."):
        hv["edge-b"]["ipsec_selectors"] = [dict(hv["edge-a"]["ipsec_selectors"][0])]
    try:
        out = ipsec_pairs(hv, keys="optional")
    except AnsibleFilterError as exc:
        text = str(exc)
        assert "host edge-" in text or "ipsec_" in text, text
        for problem in text.split("\n  - "):
            assert "\r" not in problem
        return
    for s in _strings(out["hosts"]):
        assert SAFE_TOKEN.fullmatch(_clean(s)), (var, value, s)


# ------------------------------------------------------------------------------ module rendering

def _host():
    h = FakeHost()
    h.handlers.append(((), (1, "", "not scripted\n")))
    return h


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


SA_FIELDS = ("src", "dst", "spi", "reqid", "dev", "sel.src", "sel.dst", "sel.proto", "sel.dport", "key")


def _sa(field, value):
    sa = dict(src="192.0.2.1", dst="192.0.2.2", spi="0x1000", reqid="0x51c00001", direction="out",
              aead=dict(key="0x" + "3c" * 16 + "01020304"), offload=dict(type="crypto", dev="p0"))
    if field == "dev":
        sa["offload"]["dev"] = value
    elif field == "key":
        sa["aead"]["key"] = value
    elif field.startswith("sel."):
        sa["sel"] = {"proto": "udp"} if field == "sel.dport" else {}
        sa["sel"][field[4:]] = value
    else:
        sa[field] = value
    return sa


def _check_rendered(res, failed, value):
    if failed:
        msg = str(res.get("msg", ""))
        assert msg.startswith("config") or msg.startswith("value of") or "config[0]" in msg, msg
        assert _rel.no_traceback(msg, str(res.get("exception", ""))), msg
        assert "\n" not in msg, msg
        return
    for line in res["rendered"]:
        assert SAFE_TOKEN.fullmatch(_clean(line)), (value, line)


@pytest.mark.parametrize("field", SA_FIELDS)
@FEW
@given(value=st.one_of(nasty, st.text(max_size=40)))
def test_state_rendered_lines_are_clean(field, value):
    if "xfrm_offload_state rendered: " + field not in _RECORDED:
        _RECORDED.add("xfrm_offload_state rendered: " + field)
        _rel.record("properties", target="xfrm_offload_state rendered: " + field, examples=FEW.max_examples)
    res, failed = run_module(xfrm_offload_state.main, dict(config=[_sa(field, value)], state="rendered"), _host())
    _check_rendered(res, failed, value)


SP_FIELDS = ("src", "dst", "proto", "dport", "priority", "dev", "tmpl.src", "tmpl.reqid", "mark.value")


def _sp(field, value):
    sp = dict(src="192.0.2.1/32", dst="192.0.2.2/32", dir="out", offload=dict(type="packet", dev="p0"),
              tmpl=dict(src="192.0.2.1", dst="192.0.2.2", reqid="0x51c00001"))
    if field == "dev":
        sp["offload"]["dev"] = value
    elif field.startswith("tmpl."):
        sp["tmpl"][field[5:]] = value
    elif field == "mark.value":
        sp["mark"] = {"value": value}
    elif field == "dport":
        sp.update(proto="udp", dport=value)
    else:
        sp[field] = value
    return sp


@pytest.mark.parametrize("field", SP_FIELDS)
@FEW
@given(value=st.one_of(nasty, st.text(max_size=40)))
def test_policy_rendered_lines_are_clean(field, value):
    if "xfrm_offload_policy rendered: " + field not in _RECORDED:
        _RECORDED.add("xfrm_offload_policy rendered: " + field)
        _rel.record("properties", target="xfrm_offload_policy rendered: " + field, examples=FEW.max_examples)
    res, failed = run_module(xfrm_offload_policy.main, dict(config=[_sp(field, value)], state="rendered"), _host())
    _check_rendered(res, failed, value)


# ------------------------------------------------------------------------------ render.yml's filter

_SCRIPT_LINES = [
    re.compile(r"#!/bin/sh"),
    re.compile(r"# [ -~]*"),
    re.compile(r"set -e"),
    re.compile(r"xfrm_batch\(\) \{"),
    re.compile(r"  :"),
    re.compile(r"  # (SAs|policies) \([0-9]+\)[ -~]*"),
    re.compile(r"  printf '%s\\n' '(?:[^']|'\"'\"')*'"),
    re.compile(r"\}"),
    re.compile(r"xfrm_batch \| ip (?:-n [A-Za-z0-9_.][A-Za-z0-9_.-]* )?-batch -"),
]
_SCRIPTS = []


@SETTINGS
@given(host=st.one_of(nasty, st.sampled_from(["lab1", "edge-a", "n.example.com"])),
       ns=st.one_of(st.none(), nasty, st.sampled_from(["ns0", ""])),
       lines=st.lists(st.one_of(st.text(max_size=60), nasty), max_size=6))
def test_render_script_structure(host, ns, lines):
    if "render" not in _RECORDED:
        _RECORDED.add("render")
        _rel.record("properties", target="ipsec_render script", examples=SETTINGS.max_examples)
    try:
        text = ipsec_render(host, "script", namespace=ns, states=lines, policies=lines[:2])
    except AnsibleFilterError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("ipsec_render_script: ")
        return
    got = []
    for ln in text.splitlines():
        assert any(r.fullmatch(ln) for r in _SCRIPT_LINES), ln
        if ln.startswith("  printf "):
            words = shlex.split(ln)
            assert len(words) == 3
            got.append(words[2])
    assert got == list(lines) + list(lines[:2])
    assert text.count("\n") == len(text.splitlines())
    if len(_SCRIPTS) < 200:
        _SCRIPTS.append(text)


def test_render_scripts_pass_bash_n(tmp_path):
    """bash -n on scripts the property test accepted (and a fixed sample when it ran none)."""
    scripts = list(_SCRIPTS) or [ipsec_render("lab1", "script", namespace="ns0",
                                              states=["xfrm state add src 1.1.1.1 'x'"], policies=[])]
    for i, text in enumerate(scripts):
        (tmp_path / ("s%03d.sh" % i)).write_text(text)
    p = subprocess.run(["bash", "-c", 'for f in "$1"/*.sh; do bash -n "$f" || echo "BAD $f"; done', "x",
                        str(tmp_path)], capture_output=True, text=True, check=False)
    _rel.record("properties", target="render bash -n", examples=len(scripts), bad=p.stdout.count("BAD"))
    assert "BAD" not in p.stdout and not p.stderr, p.stdout + p.stderr
