# -*- coding: utf-8 -*-
"""tests/lab/reliability_lib.py, the helpers of lab/reliability.sh and of its checks, on small
dumps written in iproute2's layout (no VM): the owned objects, the identities render.yml installs,
the key forms and the search, the key store reader, which run touched a task last.  The foreign
objects are lab/owned.py's (tests/unit/test_lab_owned.py)."""
from __future__ import annotations

import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reliability_lib as R  # noqa: E402  pylint: disable=wrong-import-position

KEY = "ab" * 16 + "01020304"  # key || 4-byte salt
STATES = (
    "src 192.168.100.1 dst 192.168.100.2\n"
    "\tproto esp spi 0x00001000 reqid 1371537409 mode transport\n"
    "\treplay-window 0 flag esn\n"
    "\taead rfc4106(gcm(aes)) 0x" + KEY + " 128\n"
    "\tanti-replay esn context:\n"
    "\tsel src 0.0.0.0/0 dst 0.0.0.0/0\n"
    "src 192.168.100.1 dst 192.168.100.99\n"
    "\tproto esp spi 0x77700001 reqid 7 mode transport\n"
    "\treplay-window 0\n"
    "\taead rfc4106(gcm(aes)) 0x" + "cd" * 20 + " 128\n"
    "\tsel src 0.0.0.0/0 dst 0.0.0.0/0\n"
)
POLICIES = (
    "src 10.1.0.0/16 dst 10.2.0.0/16\n"
    "\tdir out priority 0\n"
    "\ttmpl src 192.168.100.1 dst 192.168.100.2\n"
    "\t\tproto esp reqid 1371537409 mode transport\n"
    "src 192.168.100.1/32 dst 192.168.100.99/32\n"
    "\tdir out priority 0\n"
    "\ttmpl src 192.168.100.1 dst 192.168.100.99\n"
    "\t\tproto esp reqid 7 mode transport\n"
)


def dump(states=STATES, policies=POLICIES):
    return "#REL states\n%s#REL policies\n%s" % (states, policies)


def test_host_idents_are_the_owned_objects_only():
    assert R.host_idents(dump()) == ["sa 192.168.100.1 192.168.100.2 4096 1371537409",
                                     "sp 10.1.0.0/16 10.2.0.0/16 out 1371537409"]


def test_render_idents_read_render_yml_lines():
    text = ("printf '%s\\n' 'xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00001000 reqid "
            "0x51c00001 mode transport aead rfc4106(gcm(aes)) <redacted> 128'\n"
            "xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir out tmpl src 192.168.100.1 dst 192.168.100.2 "
            "proto esp reqid 0x51c00001 mode transport\n")
    assert R.render_idents(text) == R.host_idents(dump())


def test_keys_of_the_owned_sas():
    assert R.keys(STATES) == [KEY]


def test_forms_and_search(tmp_path):
    raw = bytes.fromhex(KEY)
    f = R.forms(KEY)
    assert f["hex key||salt"] == KEY and f["hex key without salt"] == KEY[:-8]
    assert base64.b64encode(raw).decode().startswith(f["base64 key||salt"])
    (tmp_path / "clean.log").write_text("spi 0x00001000 " + KEY[:20] + "\n")  # a prefix is not the key
    assert R.search([KEY], [str(tmp_path)])["occurrences"] == 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "leak.json").write_text('{"k": "%s", "b": "%s"}' % (KEY.upper(), base64.b64encode(raw[:-4]).decode()))
    found = R.search([KEY], [str(tmp_path)])
    assert found["files"] == 2 and found["occurrences"] == 3  # hex (any case) + hex without salt + base64
    assert all(KEY[:7] not in h for h in found["hits"])  # a hit names six hex digits, never more


def test_keystore_keys_json_and_yaml():
    assert R.keystore_keys('{"key": "0x%s", "previous": {"key": "0x%s"}}' % (KEY, "ef" * 20)) == [KEY, "ef" * 20]
    assert R.keystore_keys("key: '0x%s'\nspi: '0x00001000'\n" % KEY) == [KEY]


def test_last_runs(tmp_path, capsys):
    a, b = tmp_path / "a.tlog", tmp_path / "b.tlog"
    a.write_text("2026-12-07 04:00:01,100 p=1 u=root n=ansible | TASK [ipsec_offload.mlx5.ipsec : IPsec states (SAs)] ***\n"
                 "2026-12-07 04:00:05,200 p=1 u=root n=ansible | changed: [lab1]\n")
    b.write_text("2026-12-07 04:00:02,100 p=2 u=root n=ansible | TASK [ipsec_offload.mlx5.ipsec : IPsec states (SAs)] ***\n"
                 "2026-12-07 04:00:06,000 p=2 u=root n=ansible | ok: [lab1]\n")
    R.last_runs(["%s=site" % a, "%s=teardown" % b])
    assert capsys.readouterr().out.split("|")[:3] == ["lab1", "IPsec states (SAs)", "teardown"]
