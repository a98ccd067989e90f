# -*- coding: utf-8 -*-
"""xfrm_guard_boot: the guards of one namespace kept for boot in one module run (boot file, script,
systemd unit), idempotent, check mode and diff, absent removes what is no longer used; only guards
are accepted.  Files go below a temporary root; systemctl is a FakeHost."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import threading

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _guard as G
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_guard_boot as M
from harness import FakeHost, run_module

RNG = ["0x51c00000", "0x51c0ffff"]
SP_OUT = {"src": "192.0.2.1/32", "dst": "192.0.2.2/32", "dir": "out", "priority": 100,
          "tmpl": {"src": "192.0.2.1", "dst": "192.0.2.2", "reqid": "0x51c00001", "mode": "transport"},
          "offload": {"type": "packet", "dev": "p0"}}
SP_IN = dict(SP_OUT, src="192.0.2.2/32", dst="192.0.2.1/32", dir="in",
             tmpl={"src": "192.0.2.2", "dst": "192.0.2.1", "reqid": "0x51c00002", "mode": "transport"})
GUARDS = G.guards_for([SP_OUT, SP_IN])
SCRIPT = "#!/bin/sh\necho guards\n"
UNIT = "[Unit]\nDescription=test\n"
BATCH = "/etc/ipsec_offload_mlx5/guards/%s.batch"


def args(root, **kw):
    a = dict(config=GUARDS, owned_reqid_range=RNG, script=SCRIPT, unit=UNIT, root=str(root))
    a.update(kw)
    return a


def tree(root):
    out = {}
    for d, dummy, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = (open(p).read(), stat.S_IMODE(os.stat(p).st_mode))
    return out


def test_present_writes_then_idempotent_and_check_mode_writes_nothing(tmp_path):
    res, failed = run_module(M.main, args(tmp_path), FakeHost(), check_mode=True, diff=True)
    assert not failed and res["changed"] and tree(tmp_path) == {}
    assert [f["action"] for f in res["files"]] == ["created", "written", "created", "written"]
    assert res["systemd"] == "not managed: root is set"

    res, failed = run_module(M.main, args(tmp_path), FakeHost(), diff=True)
    assert not failed and res["changed"], res
    t = tree(tmp_path)
    text, mode = t["etc/ipsec_offload_mlx5/guards/init.batch"]
    assert mode == 0o644 and text.startswith("# ipsec_offload.mlx5 fail-closed guard policies (initial network")
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    assert lines == res["rendered"] and len(lines) == 4
    assert all(x.startswith("xfrm policy add ") and " action block" in x and "offload" not in x for x in lines)
    assert sorted(set(re.findall(r"mark (\S+) mask (\S+)", text))) == [("0x0", "0x1"), ("0x1", "0x1")], text
    assert t["usr/local/sbin/ipsec-offload-mlx5-guards"] == (SCRIPT, 0o755)
    assert "etc/systemd/system/ipsec-offload-mlx5-guards.service" not in t   # a root: no unit
    assert res["diff"]["before"] == "" and res["diff"]["after"] == text

    res, failed = run_module(M.main, args(tmp_path), FakeHost(), diff=True)
    assert not failed and not res["changed"] and res["files"] == [] and "diff" not in res
    assert tree(tmp_path) == t

    # a file changed by hand (or a wrong mode) is put back, the rest is left alone
    p = tmp_path / "usr/local/sbin/ipsec-offload-mlx5-guards"
    p.chmod(0o700)
    res, failed = run_module(M.main, args(tmp_path), FakeHost())
    assert res["changed"] and res["files"] == [{"path": str(p), "action": "written"}]
    assert tree(tmp_path) == t


def test_namespaces_get_own_files_and_absent_removes_only_when_unused(tmp_path):
    for ns in (None, "vf1"):
        res, failed = run_module(M.main, args(tmp_path, namespace=ns), FakeHost())
        assert not failed and res["changed"]
    t = tree(tmp_path)
    assert "(vf1)" in t["etc/ipsec_offload_mlx5/guards/vf1.batch"][0]
    res, failed = run_module(M.main, dict(state="absent", root=str(tmp_path)), FakeHost(), diff=True)
    assert not failed and res["changed"] and res["systemd"].startswith("kept: boot files of other namespaces")
    assert res["diff"]["after"] == "" and res["diff"]["before"] == t["etc/ipsec_offload_mlx5/guards/init.batch"][0]
    assert sorted(tree(tmp_path)) == ["etc/ipsec_offload_mlx5/guards/vf1.batch", "usr/local/sbin/ipsec-offload-mlx5-guards"]
    # check mode of the last one: reported, nothing removed
    res, failed = run_module(M.main, dict(state="absent", namespace="vf1", root=str(tmp_path)), FakeHost(), check_mode=True)
    assert res["changed"] and len(tree(tmp_path)) == 2
    assert [f["action"] for f in res["files"]] == ["removed", "removed", "removed"]
    res, failed = run_module(M.main, dict(state="absent", namespace="vf1", root=str(tmp_path)), FakeHost())
    assert not failed and res["changed"] and tree(tmp_path) == {}
    assert not (tmp_path / "etc/ipsec_offload_mlx5/guards").exists()
    res, failed = run_module(M.main, dict(state="absent", namespace="vf1", root=str(tmp_path)), FakeHost())
    assert not failed and not res["changed"]


def test_systemd_unit_written_enabled_once_disabled_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "_systemd_here", lambda root: True)
    enabled = {"v": False}

    def systemctl(argv, stdin):
        if argv[1] == "is-enabled":
            return (0, "enabled\n", "") if enabled["v"] else (1, "disabled\n", "")
        if argv[1] == "enable":
            enabled["v"] = True
        if argv[1] == "disable":
            enabled["v"] = False
        return 0, "", ""
    h = FakeHost([(("systemctl",), systemctl)])
    res, failed = run_module(M.main, args(tmp_path), h)
    assert not failed and res["systemd"] == "enabled", res
    assert h.commands() == [["systemctl", "is-enabled", M.UNIT_NAME], ["systemctl", "daemon-reload"],
                            ["systemctl", "enable", M.UNIT_NAME]]
    assert tree(tmp_path)["etc/systemd/system/ipsec-offload-mlx5-guards.service"] == (UNIT, 0o644)
    h = FakeHost([(("systemctl",), systemctl)])
    res, failed = run_module(M.main, args(tmp_path), h)
    assert not failed and not res["changed"] and res["systemd"] == "already enabled"
    assert h.commands() == [["systemctl", "is-enabled", M.UNIT_NAME]]
    h = FakeHost([(("systemctl",), systemctl)])
    res, failed = run_module(M.main, dict(state="absent", root=str(tmp_path)), h)
    assert not failed and res["systemd"] == "disabled" and tree(tmp_path) == {} and not enabled["v"]
    assert h.commands() == [["systemctl", "disable", M.UNIT_NAME], ["systemctl", "daemon-reload"]]


def test_systemctl_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "_systemd_here", lambda root: True)
    h = FakeHost([(("systemctl", "is-enabled"), (1, "", "")), (("systemctl", "enable"), (1, "", "Access denied")),
                  (("systemctl",), (0, "", ""))])
    res, failed = run_module(M.main, args(tmp_path), h)
    assert failed and "systemctl enable" in res["msg"] and "Access denied" in res["msg"]


@pytest.mark.parametrize("kw, field, text", [
    (dict(config=[SP_OUT]), "config[0]", "is not a guard"),
    (dict(config=[]), "config", "is empty"),
    (dict(config=[dict(GUARDS[0], src="10.0.0.1/32\nxfrm policy flush")]), "config[0].src", ""),
    # the policy module's sub-options (X.sp_options), applied as it applies them
    (dict(config=[GUARDS[0], dict(GUARDS[1], colour="red")]), "config[1]", "unknown option(s): colour"),
    (dict(config=[dict(GUARDS[0], mark="0x1")]), "config[0].mark", "must be of type dict"),
    (dict(config=[dict(GUARDS[0], dir="both")]), "config[0].dir", "must be one of in, out, fwd"),
    (dict(config=[dict(GUARDS[0], tmpl=dict(GUARDS[0]["tmpl"], spi=1))]), "config[0].tmpl", "unknown option(s): spi"),
    (dict(config=["action=block"]), "config[0].src", "is required"),  # Ansible reads k=v text as a dict
    (dict(namespace="init"), "namespace", "cannot be told apart"),
    (dict(namespace="../etc"), "namespace", ""),
    (dict(script=None), "script", "is required"),
    (dict(root="relative/dir"), "root", "absolute"),
])
def test_bad_input_refused_before_any_file(tmp_path, kw, field, text):
    a = args(tmp_path)
    a.update(kw)
    res, failed = run_module(M.main, a, FakeHost())
    assert failed and res["field"] == field and text in res["msg"], res
    assert tree(tmp_path) == {}


def test_directories_made_meanwhile_by_another_run_are_fine(tmp_path, monkeypatch):
    """Two inventory hosts on one machine (the playbook tests: lab1 and lab2 local, one root) write
    their boot files at the same time: a directory that appears between the check and the mkdir
    must not fail the run ("File exists", seen in test_site_check_diff)."""
    for d in ("etc/ipsec_offload_mlx5/guards", "usr/local/sbin"):
        (tmp_path / d).mkdir(parents=True)
    real_isdir, asked = os.path.isdir, set()

    def isdir(p):   # the module's own check does not see them yet; later looks (os.makedirs') do
        p = str(p)
        if p.startswith(str(tmp_path)) and p not in asked:
            asked.add(p)
            return False
        return real_isdir(p)
    monkeypatch.setattr(M.os.path, "isdir", isdir)
    res, failed = run_module(M.main, args(tmp_path), FakeHost())
    assert not failed, res
    assert "etc/ipsec_offload_mlx5/guards/init.batch" in tree(tmp_path)


def test_runs_on_one_machine_take_turns(tmp_path):
    """Namespace hosts of one machine (lab/mesh.sh: four per VM, teardown.yml at once) share the boot
    files: one run removing the last batch file and the directory while another listed it failed
    with "guards: No such file or directory". A run now holds an flock on /etc (here: the root) for
    its whole read and change."""
    held = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=run_module(M.main, args(tmp_path, namespace="ns7"), FakeHost())))
    worker.start()
    worker.join(0.5)
    try:
        assert worker.is_alive(), "the run did not wait for the machine's lock"
        assert not os.path.exists(tmp_path / "etc/ipsec_offload_mlx5/guards/ns7.batch")
    finally:
        os.close(held)   # closing the descriptor releases the flock
    worker.join(10)
    res, failed = out["r"]
    assert not failed and res["changed"] and os.path.exists(tmp_path / "etc/ipsec_offload_mlx5/guards/ns7.batch")
