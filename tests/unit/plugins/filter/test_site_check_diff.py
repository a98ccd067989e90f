# -*- coding: utf-8 -*-
"""`site.yml --check --diff` shows the SA changes (identities, never a key), on the simulated kernel
of test_rekey_playbook.py (a stand-in `ip`): the SA task of the ipsec role and the heal phase of
playbooks/lifecycle.yml carry no no_log, so their diff and their failures reach the operator; the
whole -vvvv output is searched for every key of the key store."""

from __future__ import annotations

import re

from test_rekey_playbook import DERIVE, assert_no_keys, run, sim_states, store, store_keys, write_inventory
from test_lifecycle_playbook import drop_states, site_subset
# the simulated fixture is used by name as a test argument
from test_rekey_playbook import simulated  # noqa: F401  # pylint: disable=unused-import


def task_output(out, task, host):
    """The output of TASK [... task] for one host: from its 'changed: [host]' / 'ok: [host]' line
    (and the diff printed before it) back to the task's header."""
    blocks = re.split(r"^TASK \[", out, flags=re.M)
    mine = [b for b in blocks if b.split("]", 1)[0].endswith(task)]
    assert mine, "task %r not in the output" % task
    text = mine[0]
    # the diff of each host is printed right before its result line; cut at that host's line
    parts = re.split(r"^((?:changed|ok|fatal|skipping): \[%s\].*)$" % re.escape(host), text, flags=re.M)
    assert len(parts) >= 3, "no result line for %s in %r" % (host, text[:2000])
    before = parts[0]
    for other in re.finditer(r"^(?:changed|ok|fatal|skipping): \[[^]]+\].*$", before, flags=re.M):
        before = before[other.end():]
    return before + parts[1]


def test_check_diff_shows_sas_without_keys(tmp_path, simulated):
    env, simdir = simulated
    inv = write_inventory(tmp_path, "sim1", "sim2")
    site = site_subset(tmp_path)
    # keys first: check mode never writes the key store
    rc, out = run(tmp_path, DERIVE, inv, env=env)
    assert rc == 0, out
    pairs = store(tmp_path)
    s12, s21 = pairs["lab1"]["lab2"]["spi"], pairs["lab2"]["lab1"]["spi"]
    keys = store_keys(tmp_path)
    assert len(keys) == 2

    rc, out = run(tmp_path, site, inv, "-vvvv", env=env, check=True)
    assert rc == 0, out[-3000:]
    for host, out_spi, in_spi in (("lab1", s12, s21), ("lab2", s21, s12)):
        text = task_output(out, "IPsec states (SAs)", host)
        assert "censored" not in text
        assert text.splitlines()[-1].startswith("changed: [%s]" % host), text[-2000:]
        added = [ln for ln in text.splitlines() if ln.startswith("+")]
        assert "+- src: 192.168.100.%s" % host[-1] in added or any(ln.startswith("+- ") for ln in added), text[-2000:]
        body = "\n".join(added)
        for spi in (out_spi, in_spi):
            assert "spi: '%s'" % spi in body or "spi: %s" % spi in body, body
        assert "direction: out" in body and "direction: in" in body
        assert "reqid:" in body and "offload:" in body
        assert "key: <redacted>" in body or "<redacted>" in body
    assert sim_states(simdir, "sim1") == sim_states(simdir, "sim2") == {}   # check mode changed nothing
    assert_no_keys(out, keys)

    # converge, lose lab1's SAs: check mode names the rotation and the heal phase shows its new
    # inbound SAs as a diff too (the heal task has no no_log either)
    rc, out = run(tmp_path, site, inv, env=env)
    assert rc == 0, out[-3000:]
    drop_states(simdir, "sim1")
    rc, out = run(tmp_path, site, inv, "-vvvv", env=env, check=True)
    assert rc == 0, out[-3000:]
    heal = task_output(out, "New inbound SAs (merged)", "lab2")
    assert "censored" not in heal
    assert heal.splitlines()[-1].startswith("changed: [lab2]"), heal[-2000:]
    assert any(ln.startswith("+") and "direction: in" in ln for ln in heal.splitlines()), heal[-2000:]
    states = task_output(out, "IPsec states (SAs)", "lab2")
    assert any(ln.startswith("-") and "spi:" in ln for ln in states.splitlines()), states[-2000:]   # the old remnants go
    assert_no_keys(out, keys | store_keys(tmp_path))
