# -*- coding: utf-8 -*-
"""Reliability 1, real kernel: the bad-input cases of the netns-capable modules (xfrm_offload_state,
xfrm_offload_policy, tc_flower_vlan) run against the REAL ip/tc in a scratch network namespace.

The module runs in-process with the real AnsibleModule.run_command (only exit_json/fail_json are
intercepted to read the result).  The namespace holds veths named like the simulated hosts' links
(p0, eth0, pf0, pf0vf0_rep) and foreign state the modules must never touch: an xfrm policy with
reqid 7 and an ingress qdisc with a u32 filter.  Before and after each case the whole namespace is
dumped (`ip xfrm state/policy list`, `ip -o link show`, `tc -j qdisc show`, `tc -j filter show` of
every link); the dumps must be identical.  (The host kernel has no ESP, so no foreign SA can exist
here; foreign SAs are covered by the simulator in test_rel_foreign.py.)
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess

import pytest
from unittest import mock

from ansible.module_utils import basic
from harness import patch_module_args  # 2.19's, or the same on ansible-core 2.16

import _rel
import test_rel_bad_input as corpus
from harness import ModuleExit, _exit_json, _fail_json

pytestmark = pytest.mark.netns

C = dict(os.environ, LC_ALL="C", LANG="C")
LINKS = (("p0", "eth0"), ("pf0", "pf0vf0_rep"))
NETNS_MODULES = ("xfrm_offload_state", "xfrm_offload_policy", "tc_flower_vlan")
# Cases that need objects only the simulator can hold (a foreign SA: this kernel has no ESP).
NEEDS_SIM = {"state-key-of-foreign-sa", "state-collides-foreign-sa"}
# iproute2 < 6.2 (this host: 6.1) refuses the packet keyword before the device is looked up.
FIELD_HERE = {"state-dev-unknown": ("config[0].offload.dev", "config[0].offload.type")}


def sh(*argv, check=True):
    p = subprocess.run(list(argv), capture_output=True, text=True, env=C, check=False)
    if check and p.returncode:
        raise AssertionError("%s failed (rc=%d): %s" % (" ".join(argv), p.returncode, p.stderr))
    return p


@pytest.fixture(scope="module")
def ns():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs iproute2 (ip, tc)")
    name = "relbad-%d" % os.getpid()
    if sh("ip", "netns", "add", name, check=False).returncode:
        pytest.skip("cannot create a network namespace here")
    try:
        for a, b in LINKS:
            sh("ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "-n", name, "link", "set", a, "up")
            sh("ip", "-n", name, "link", "set", b, "up")
        sh("ip", "-n", name, "xfrm", "policy", "add", "src", "10.99.0.1/32", "dst", "10.99.0.2/32", "dir", "out",
           "tmpl", "src", "10.99.0.1", "dst", "10.99.0.2", "proto", "esp", "reqid", "7", "mode", "transport")
        sh("tc", "-n", name, "qdisc", "add", "dev", "pf0", "ingress")
        sh("tc", "-n", name, "filter", "add", "dev", "pf0", "ingress", "protocol", "all", "pref", "10",
           "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "pf0vf0_rep")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def snapshot(ns):
    out = {
        "xfrm state": sh("ip", "-n", ns, "xfrm", "state", "list").stdout,
        "xfrm policy": sh("ip", "-n", ns, "xfrm", "policy", "list").stdout,
        "links": sh("ip", "-n", ns, "-o", "link", "show").stdout,
        "qdisc": sh("tc", "-n", ns, "-j", "qdisc", "show").stdout,
    }
    for pair in LINKS:
        for dev in pair:
            out["filter " + dev] = sh("tc", "-n", ns, "-j", "filter", "show", "dev", dev, "ingress").stdout
    return out


def run_real(main, args):
    """Run ``main`` in-process with the real run_command / get_bin_path; return (result, failed)."""
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        try:
            main()
        except ModuleExit as done:
            return done.result, done.failed
    raise AssertionError("module returned without exit_json/fail_json")


# Cases whose scripted host holds something the scratch namespace does not (an owned SA, offload-capable
# devices) are simulator-only as well.
PLAIN_HOSTS = ("xfrm", "xfrm61", "xfrm_nons", "tc")
CASES = [c for c in corpus.CASES if c[1] in NETNS_MODULES and c[0] not in NEEDS_SIM and c[4] in PLAIN_HOSTS]


def localise(case, args, ns):
    args = copy.deepcopy(args)
    if case == "state-namespace-missing":
        args["namespace"] = "relbad-missing-%d" % os.getpid()
    elif "namespace" not in args:
        args["namespace"] = ns
    return args


@pytest.mark.parametrize("case,module,args,field,hostkind", [pytest.param(*c, id=c[0]) for c in CASES])
def test_real_host_unchanged_by_bad_input(ns, case, module, args, field, hostkind):
    before = snapshot(ns)
    res, failed = run_real(corpus.MODULES[module].main, localise(case, args, ns))
    after = snapshot(ns)
    fields = FIELD_HERE.get(case, (field,))
    msg = str(res.get("msg", ""))
    why = []
    if not failed:
        why.append("did not fail")
    if not any(f in msg for f in fields):
        why.append("message does not name %s" % " or ".join(fields))
    if not _rel.no_traceback(msg, _rel.texts_of(res)):
        why.append("traceback in the result")
    changed = sorted(k for k in before if before[k] != after[k])
    if changed:
        why.append("host state changed: %s" % ", ".join(changed))
    _rel.record("bad_input_netns", case=case, target=module, ok=not why, changed=len(changed))
    assert not why, "%s: %s -- %r" % (case, "; ".join(why), res)


def test_snapshot_sees_a_change(ns):
    """The before/after comparison can fail: a policy added by hand shows up in the snapshot."""
    before = snapshot(ns)
    sh("ip", "-n", ns, "xfrm", "policy", "add", "src", "10.98.0.1/32", "dst", "10.98.0.2/32", "dir", "in")
    try:
        assert snapshot(ns)["xfrm policy"] != before["xfrm policy"]
    finally:
        sh("ip", "-n", ns, "xfrm", "policy", "delete", "src", "10.98.0.1/32", "dst", "10.98.0.2/32", "dir", "in")
    assert snapshot(ns) == before
