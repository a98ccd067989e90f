# -*- coding: utf-8 -*-
"""Reliability 2: key material never leaks.

Searched for every key: the hex of key||salt in any case, without 0x, the AES key and the 4-byte
salt on their own, base64 of both, the decimal integer (``_rel.key_forms``).

A. xfrm_offload_state in-process (the harness returns the module's result dict BEFORE Ansible's
   no_log masking, so nothing helps the module here) with many random keys, given in mixed case and
   with/without 0x: apply with diff, check mode, idempotent rerun, rekey, output=summary, gathered,
   deleted, rendered, a kernel refusal part way whose message ECHOES the key (as `ip` does for a bad
   token), a crypto fallback (warnings) allowed and refused.  Searched: the whole result (msg,
   diff, commands, before/after, failed_object, kernel_message, ...), every warning, every argv
   the module handed to run_command.  Positive controls: the keys ARE on stdin of `ip -batch -`
   and in `rendered` with reveal_keys, so the search can find them.
B. The derivation and the key store: the secret-free allocation, the key store action's result
   and diff, the file modes (0600 file, 0700 directories).
C. Real `ansible-playbook -vvvv` runs (connection local): playbooks/render.yml (masked files,
   then reveal_keys), and a small playbook calling xfrm_offload_state in check mode, with
   state=rendered and a real apply in a scratch netns (this kernel has no ESP: the apply fails)
   -- the whole stdout+stderr is searched.
Figure: occurrences found (must be 0) / places searched / keys tried.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
import yaml
from unittest import mock

from ansible.module_utils import basic
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

import ansible_collections.ipsec_offload.mlx5 as collection
from ansible_collections.ipsec_offload.mlx5.plugins.action.ipsec_keystore import ActionModule as KeystoreAction
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state

import _rel
from harness import FakeHost, fixture, run_module
from xfrm_sim import XfrmSim

HELP_615 = fixture("xfrm/iproute2-6.15.0-state-help-DERIVED.txt")
LAB_STATES = fixture("xfrm/lab-xfrm-state.txt")
N = 60


@pytest.fixture(autouse=True)
def kernel_612(monkeypatch):
    monkeypatch.setattr(_xfrm_run, "kernel_release", lambda: "6.12.117+deb13-amd64")


class Search:
    """Counts places searched and occurrences found, and records the figure at the end."""

    def __init__(self, name, keys):
        self.name = name
        self.keys = list(keys)
        self.places = 0
        self.hits = []

    def look(self, where, text):
        self.places += 1
        n = _rel.occurrences(text, self.keys)
        if n:
            self.hits.append((where, n))
        return n

    def done(self):
        _rel.record("keys", part=self.name, keys=len(self.keys), places=self.places,
                    occurrences=sum(n for _w, n in self.hits))
        assert not self.hits, "key material found in: %s" % self.hits


def spelled(rng, key):
    """The key as a user might write it: mixed case, with or without 0x."""
    body = "".join(c.upper() if rng.random() < 0.5 else c for c in key[2:])
    return ("0x" if rng.random() < 0.7 else "") + body


def make_sas(rng, n, seed_first=0):
    out, keys = [], []
    for i in range(n):
        key = _rel.random_key(rng, 20 if i % 2 else 36)
        keys.append(key)
        d = dict(src="10.1.0.%d" % (i + 1), dst="10.2.0.%d" % (i + 1), spi="0x%08x" % (0x7000 + seed_first + i),
                 reqid="0x%08x" % (0x51c00001 + i), direction="in" if i % 2 else "out",
                 aead=dict(key=spelled(rng, key)), offload=dict(type="crypto" if i % 3 == 0 else "none", dev="p0"))
        if d["offload"]["type"] == "none":
            del d["offload"]["dev"]
        if i % 2:
            d["replay_window"] = 128
        out.append(d)
    return out, keys


def run_searched(search, sim, args, check_mode=False, diff=True, what=""):
    warnings = []
    real_warn = basic.AnsibleModule.warn

    def warn(self, warning, *a, **k):
        warnings.append(warning)
        return real_warn(self, warning, *a, **k)

    host = FakeHost([(("ip", "xfrm", "state", "help"), (255, "", HELP_615)), (("ip",), sim)])
    with mock.patch.object(basic.AnsibleModule, "warn", warn):
        res, failed = run_module(xfrm_offload_state.main, args, host, check_mode=check_mode, diff=diff)
    search.look(what + " result", _rel.texts_of(res))
    for field in ("msg", "kernel_message", "failed_object", "diff", "commands", "rendered", "stderr", "stdout"):
        if field in res:
            search.look("%s %s" % (what, field), _rel.texts_of(res[field]))
    search.look(what + " warnings", "\n".join(warnings))
    search.look(what + " argv", json.dumps(host.commands()))
    return res, failed, host, warnings


def test_xfrm_state_never_shows_a_key():
    rng = random.Random(20261124)
    sim = XfrmSim(LAB_STATES, fallback_devs=("p0",))
    config, keys = make_sas(rng, N)
    search = Search("xfrm_offload_state (in-process)", keys)

    # crypto offload on p0 falls back to software here: allowed -> warnings that name each SA
    for d in config:
        if d["offload"]["type"] == "crypto":
            d["offload"]["fallback"] = "allow"
    res, failed, host, warnings = run_searched(search, sim, dict(config=config), what="apply")
    assert not failed and res["counts"]["added"] == N, res.get("msg")
    assert len(warnings) == sum(1 for d in config if d["offload"]["type"] == "crypto") > 0
    stdin = "\n".join(host.stdins())
    assert all(_rel.occurrences(stdin, [k]) > 0 for k in keys), "positive control: keys go to ip on stdin"

    res, failed, host, _w = run_searched(search, sim, dict(config=config), what="rerun")
    assert not failed and res["changed"] is False

    rekeyed, new_keys = make_sas(rng, N)
    for d in rekeyed:
        if d["offload"]["type"] == "crypto":
            d["offload"]["fallback"] = "allow"
    search.keys += new_keys
    res, failed, host, _w = run_searched(search, sim, dict(config=rekeyed, state="replaced"), check_mode=True,
                                         what="rekey check mode")
    assert not failed and res["changed"] and host.stdins() == []
    res, failed, host, _w = run_searched(search, sim, dict(config=rekeyed, state="replaced", output="summary"),
                                         what="rekey")
    assert not failed and res["counts"]["replaced"] == N, res.get("msg")

    # the kernel refuses a line part way and its message ECHOES the key token (ip does that for a
    # token it cannot parse); the rollback re-adds the old SAs with their keys read back
    third, third_keys = make_sas(rng, N)
    search.keys += third_keys

    fired = []

    def echo(line):
        if not fired and "spi 0x%08x" % (0x7000 + 40) in line and " add " in line:
            fired.append(line)
            tok = line.split(" aead ")[1].split()[1]
            return 'Error: argument "%s" is wrong: %s (%s)' % (tok, tok.upper(), tok[2:])
        return None
    sim.fail = echo
    res, failed, host, _w = run_searched(search, sim, dict(config=third, state="replaced"), what="refused part way")
    sim.fail = None
    assert fired and failed and res["rolled_back"] is True and "spi 0x00007028" in res["failed_object"], res.get("msg")
    assert "<redacted>" in res["kernel_message"]

    # crypto fallback refused (fallback: fail): verify fails, rollback
    res, failed, host, _w = run_searched(search, sim, dict(config=third, state="replaced"), what="fallback refused")
    assert failed and "fell back" in res["msg"] and res["rolled_back"] is True

    res, failed, host, _w = run_searched(search, sim, dict(state="gathered"), diff=False, what="gathered")
    assert not failed and len(res["gathered"]) == N

    res, failed, host, _w = run_searched(search, sim, dict(config=rekeyed, state="rendered"), what="rendered")
    assert not failed and len(res["rendered"]) == N and all("<redacted>" in ln for ln in res["rendered"])
    revealed, failed = run_module(xfrm_offload_state.main, dict(config=rekeyed, state="rendered", reveal_keys=True),
                                  FakeHost())
    assert not failed and all(_rel.occurrences("\n".join(revealed["rendered"]), [k]) for k in new_keys), \
        "positive control: reveal_keys shows the keys"

    res, failed, host, _w = run_searched(search, sim, dict(state="deleted"), what="deleted")
    assert not failed and res["counts"]["deleted"] == N
    search.done()


# -------------------------------------------------------------------------------- B. derivation + store

def hosts(n):
    names = ["n%02d" % i for i in range(1, n + 1)]
    return {h: {"ipsec_local_ip": "10.9.0.%d" % i, "ipsec_offload": "none", "ipsec_peers": [x for x in names if x != h]}
            for i, h in enumerate(names, 1)}


def run_action(path, pairs, diff=True, **extra):
    task = Task()
    task.action = "ipsec_offload.mlx5.ipsec_keystore"
    task.args = dict({"path": str(path), "pairs": pairs}, **extra)
    task.check_mode = False
    task.diff = diff
    return KeystoreAction(task, mock.MagicMock(), PlayContext(), DataLoader(), None, None).run(task_vars={})


def test_derivation_and_key_store_never_show_a_key(tmp_path):
    hv = hosts(6)                                     # 30 directed pairs
    alloc = _pairs.derive(hv, keys="none")
    path = tmp_path / "ks" / "sub" / "keys.yml"
    old = os.umask(0)
    try:
        first = run_action(path, alloc)
        again = run_action(path, alloc)
    finally:
        os.umask(old)
    doc = yaml.safe_load(path.read_text())
    keys = [e["key"] for dsts in doc["pairs"].values() for e in dsts.values()]
    assert len(keys) == len(set(keys)) == 30
    search = Search("derivation + key store", keys)
    search.look("allocation (keys=none)", _rel.texts_of(alloc))
    search.look("key store action result", _rel.texts_of(first))
    search.look("key store action diff", _rel.texts_of(first.get("diff")))
    search.look("key store action rerun", _rel.texts_of(again))
    derived = _pairs.derive(hv, store=_pairs.parse_store(doc))
    search.look("derivation pairs table", _rel.texts_of(derived["pairs"]))
    assert all(_rel.occurrences(_rel.texts_of(derived["hosts"]), [k]) for k in keys), \
        "positive control: the per-host SA objects carry the keys (they go to the module, no_log)"
    # a key rotation (new generation of every key, the previous one kept until finished), if this
    # version of the key store action has it: every stage's result and diff, old and new keys
    if "rotate" in KeystoreAction._VALID_ARGS:
        results = [run_action(path, alloc, rotate="all")]
        rotated = yaml.safe_load(path.read_text())
        new = [e["key"] for dsts in rotated["pairs"].values() for e in dsts.values()]
        assert len(set(new) - set(keys)) == 30, "the rotation gave every pair a new key"
        search.keys += new
        mid = _pairs.derive(hv, store=_pairs.parse_store(rotated))
        search.look("derivation pairs table during a rotation", _rel.texts_of(mid["pairs"]))
        for stage in ("outbound", "retire", "finished"):
            results.append(run_action(path, alloc, rotation_stage=stage))
        for n, r in enumerate(results):
            search.look("key store rotation step %d result+diff" % n, _rel.texts_of(r))
    modes = {"file": stat.S_IMODE(os.stat(path).st_mode), "dir": stat.S_IMODE(os.stat(path.parent).st_mode),
             "parent": stat.S_IMODE(os.stat(path.parent.parent).st_mode)}
    _rel.record("keystore_modes", ok=modes == {"file": 0o600, "dir": 0o700, "parent": 0o700}, **modes)
    assert modes == {"file": 0o600, "dir": 0o700, "parent": 0o700}
    search.done()


def test_damaged_key_store_errors_never_show_a_key():
    """A key store damaged by hand: every error names the entry, never the key (also keys that are
    almost valid: one digit short, a non-hex digit, an integer, a list, 0x doubled)."""
    rng = random.Random(99)
    keys = [_rel.random_key(rng, 36) for dummy in range(6)]
    bad_values = [keys[0][:-1], keys[1][:-1] + "g", int(keys[2], 16), [keys[3]], "0x" + keys[4], keys[5] + "00"]
    doc = {"ipsec_offload_keystore": 1,
           "pairs": {"a": {"b%d" % i: {"key": v, "spi": 4096 + i, "reqid": 0x51c00001 + i}
                           for i, v in enumerate(bad_values)}}}
    search = Search("damaged key store", keys)
    with pytest.raises(_pairs.DeriveError) as ei:
        _pairs.parse_store(doc)
    text = str(ei.value)
    assert all(("a->b%d" % i) in text for i in range(len(bad_values))), text
    search.look("parse_store error", text)
    from ansible.errors import AnsibleFilterError
    from ansible_collections.ipsec_offload.mlx5.plugins.filter.ipsec_pairs import ipsec_pairs
    with pytest.raises(AnsibleFilterError) as fe:
        ipsec_pairs(hosts(2), keystore=doc)
    search.look("ipsec_pairs filter error", str(fe.value))
    search.done()


# -------------------------------------------------------------------------------- C. ansible-playbook -vvvv

ROOT = _rel.ROOT
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


def ansible(tmp_path, *args):
    env = dict(os.environ, HOME=str(tmp_path / "home"), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_DEPRECATION_WARNINGS="0")
    p = subprocess.run([PLAYBOOK_BIN, "-vvvv"] + list(args), env=env, capture_output=True, text=True, timeout=300,
                       cwd=str(tmp_path), check=False)
    return p.returncode, p.stdout + p.stderr


needs_playbook = pytest.mark.skipif(not os.path.exists(PLAYBOOK_BIN), reason="ansible-playbook not in this venv")


@needs_playbook
def test_render_playbook_vvvv_never_shows_a_key(tmp_path):
    out_dir, ks = tmp_path / "out", tmp_path / "ks" / "keys.yml"
    base = ["-i", os.path.join(ROOT, "inventories", "examples", "mesh3"), os.path.join(ROOT, "playbooks", "render.yml"),
            "-e", "ipsec_render_dir=%s" % out_dir, "-e", "ipsec_keystore_path=%s" % ks]
    rc, out = ansible(tmp_path, *base)
    assert rc == 0, out[-3000:]
    doc = yaml.safe_load(ks.read_text())
    keys = [e["key"] for dsts in doc["pairs"].values() for e in dsts.values()]
    assert len(keys) == 6
    search = Search("render.yml -vvvv", keys)
    search.look("ansible-playbook -vvvv output (masked)", out)
    for f in sorted(os.listdir(out_dir)):
        search.look("rendered file " + f, (out_dir / f).read_text())
    modes = sorted({oct(stat.S_IMODE(os.stat(out_dir / f).st_mode)) for f in os.listdir(out_dir)})
    assert modes == ["0o600"] and stat.S_IMODE(os.stat(out_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600

    rc, out2 = ansible(tmp_path, *(base + ["-e", "reveal_keys=true", "-e", "ipsec_render_dir=%s" % (tmp_path / "rev")]))
    assert rc == 0, out2[-3000:]
    search.look("ansible-playbook -vvvv output (reveal_keys=true)", out2)
    revealed = "".join((tmp_path / "rev" / f).read_text() for f in os.listdir(tmp_path / "rev"))
    assert all(_rel.occurrences(revealed, [k]) for k in keys), "positive control: reveal_keys puts them in the files"
    search.done()


SMALL_PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    sas:
{sas}
  tasks:
    - name: check mode
      ipsec_offload.mlx5.xfrm_offload_state:
        config: "{{{{ sas }}}}"
        namespace: {ns}
      check_mode: true
      diff: true
    - name: rendered
      ipsec_offload.mlx5.xfrm_offload_state:
        config: "{{{{ sas }}}}"
        state: rendered
    - name: real apply (this kernel has no ESP - it fails)
      ipsec_offload.mlx5.xfrm_offload_state:
        config: "{{{{ sas }}}}"
        namespace: {ns}
      diff: true
      register: applied
      ignore_errors: true
    - name: the apply failed as expected
      ansible.builtin.assert:
        that: applied is failed
"""


@needs_playbook
@pytest.mark.netns
def test_xfrm_state_playbook_vvvv_never_shows_a_key(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (scratch network namespace)")
    ns = "relkeys-%d" % os.getpid()
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True, check=False).returncode:
        pytest.skip("cannot create a network namespace here")
    try:
        rng = random.Random(7)
        config, keys = make_sas(rng, 8)
        for d in config:
            d["offload"] = {"type": "none"}
        sas = textwrap.indent(yaml.safe_dump(config, default_flow_style=False), " " * 6)
        (tmp_path / "pb.yml").write_text(SMALL_PLAYBOOK.format(sas=sas, ns=ns))
        (tmp_path / "inv").write_text("localhost ansible_connection=local\n")
        before = subprocess.run(["ip", "-n", ns, "xfrm", "state", "list"], capture_output=True, text=True,
                                check=False).stdout
        rc, out = ansible(tmp_path, "-i", str(tmp_path / "inv"), str(tmp_path / "pb.yml"))
        after = subprocess.run(["ip", "-n", ns, "xfrm", "state", "list"], capture_output=True, text=True,
                               check=False).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert rc == 0, out[-3000:]
    assert "Requested AEAD algorithm not found" in out or "AEAD" in out, out[-3000:]
    assert before == after == ""
    search = Search("xfrm_offload_state playbook -vvvv", keys)
    search.look("ansible-playbook -vvvv output (check mode, rendered, failed apply)", out)
    search.done()


# -------------------------------------------------------------------------------- the search itself

KEY = "0x" + "00112233445566778899aabbccddeeff" + "c0ffee01"


@pytest.mark.parametrize("text", [
    KEY, KEY.upper(), KEY[2:], "x" + KEY[2:-8] + "x",                 # whole, upper case, no 0x, AES key alone
    "salt c0ffee01", "salt C0FFEE01",                                   # salt alone
    "ABEiM0RVZneImaq7zN3u/8D/7gE=", "ABEiM0RVZneImaq7zN3u/w",            # base64 of key||salt, of the key
    str(int(KEY, 16)),                                                  # an unquoted YAML key -> integer
])
def test_search_finds_every_spelling(text):
    assert _rel.occurrences("... %s ..." % text, [KEY]) >= 1


def test_search_finds_nothing_in_a_redacted_text():
    assert _rel.occurrences("aead rfc4106(gcm(aes)) <redacted> 128 spi 0x00001000 reqid 0x51c00001", [KEY]) == 0
