# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark probes run INSIDE the lab VM (standard library only).  Each prints one JSON line.

  vm_bench.py raw NS FILE            one `ip -n NS -batch -` with FILE on stdin (the floor)
  vm_bench.py perobj NS FILE         one `ip -n NS -batch -` process per line of FILE (key on stdin)
  vm_bench.py dump NS                `ip -n NS xfrm state list` + `ip -n NS xfrm policy list`
  vm_bench.py count NS               number of SAs and SPs in NS
  vm_bench.py module DIR VARS LIST STATE NS
                                     run the module kept in DIR (an exploded AnsiballZ payload, see
                                     run.sh) with config = VARS[LIST] (VARS: gen.py's vars.json), state
                                     STATE, namespace NS, output summary: as Ansible runs it on the host
                                     but without SSH and controller (python3 AnsiballZ_*.py execute)
  vm_bench.py profile DIR VARS LIST STATE NS OUT   the same under cProfile (top functions to OUT)

Timing: time.monotonic() around the child; peak memory: ru_maxrss of that child from os.wait4
(the child's own peak resident set, KiB), so each figure is one process, not a running maximum.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time


def _run(argv, stdin_path=None, stdout=subprocess.DEVNULL):
    """Run argv; return (rc, seconds, maxrss KiB)."""
    fin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=fin, stdout=stdout, stderr=subprocess.PIPE if stdout is not None else None)
        _pid, status, ru = os.wait4(p.pid, 0)
        dt = time.monotonic() - t0
    finally:
        if stdin_path:
            fin.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, dt, ru.ru_maxrss


def cmd_raw(ns, path):
    with tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        with open(path, "rb") as fin:
            p = subprocess.Popen(["ip", "-n", ns, "-batch", "-"], stdin=fin, stdout=subprocess.DEVNULL, stderr=err)
            _pid, status, ru = os.wait4(p.pid, 0)
        dt = time.monotonic() - t0
        err.seek(0)
        msg = err.read().decode(errors="replace")[-300:]
    with open(path) as f:
        n = sum(1 for line in f if line.strip())
    return {"seconds": dt, "maxrss_kib": ru.ru_maxrss, "rc": os.waitstatus_to_exitcode(status), "objects": n,
            "stderr": msg}


def cmd_perobj(ns, path):
    with open(path, "rb") as f:
        lines = [line for line in f if line.strip()]
    failed = 0
    t0 = time.monotonic()
    for line in lines:
        p = subprocess.run(["ip", "-n", ns, "-batch", "-"], input=line, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        failed += p.returncode != 0
    return {"seconds": time.monotonic() - t0, "objects": len(lines), "failed": failed}


def cmd_dump(ns):
    t0 = time.monotonic()
    total = 0
    for what in ("state", "policy"):
        p = subprocess.run(["ip", "-n", ns, "xfrm", what, "list"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           check=False)
        total += len(p.stdout)
    return {"seconds": time.monotonic() - t0, "bytes": total}


def cmd_count(ns):
    out = {}
    for what in ("state", "policy"):
        p = subprocess.run(["ip", "-n", ns, "xfrm", what, "list"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           check=False)
        out[what] = sum(1 for line in p.stdout.decode().splitlines() if line.startswith("src "))
    return out


def _payload(d):
    files = glob.glob(os.path.join(d, "AnsiballZ_*.py"))
    if len(files) != 1:
        raise SystemExit("no single AnsiballZ_*.py in %s" % d)
    return files[0]


def _write_args(d, vars_path, key, state, ns):
    """debug_dir/args = the captured internal _ansible_* parameters + our module arguments."""
    argfile = os.path.join(d, "debug_dir", "args")
    with open(argfile) as f:
        captured = json.load(f)
    with open(vars_path) as f:
        mine = {"config": json.load(f)[key], "state": state, "namespace": ns, "output": "summary"}
    margs = {k: v for k, v in captured["ANSIBLE_MODULE_ARGS"].items() if k.startswith("_ansible_")}
    # as with pipelining (what play.yml uses): no remote temporary directory of the capture run
    margs.update(_ansible_check_mode=False, _ansible_diff=False, _ansible_keep_remote_files=False,
                 _ansible_tmpdir=None)
    margs.update(mine)
    captured["ANSIBLE_MODULE_ARGS"] = margs
    with open(argfile, "w") as f:
        json.dump(captured, f)


def _result(stdout):
    try:
        text = stdout.decode()
        return json.loads(text[text.index("{"):])
    except (ValueError, UnicodeDecodeError):
        return {"failed": True, "msg": "no JSON result: %r" % stdout[-300:]}


def cmd_module(d, vars_path, key, state, ns):
    _write_args(d, vars_path, key, state, ns)
    with tempfile.TemporaryFile() as out:
        rc, dt, rss = _run([sys.executable, _payload(d), "execute"], stdout=out)
        out.seek(0)
        res = _result(out.read())
    return {"seconds": dt, "maxrss_kib": rss, "rc": rc, "changed": res.get("changed"), "failed": bool(res.get("failed")),
            "counts": res.get("counts"), "msg": (res.get("msg") or "")[:300]}


def cmd_profile(d, vars_path, key, state, ns, out_path):
    """cProfile the module run: python3 -m cProfile -o FILE AnsiballZ_x.py execute, then the top entries."""
    _write_args(d, vars_path, key, state, ns)
    prof = out_path + ".pstats"
    with tempfile.TemporaryFile() as out:
        rc, dt, rss = _run([sys.executable, "-m", "cProfile", "-o", prof, _payload(d), "execute"], stdout=out)
        out.seek(0)
        res = _result(out.read())
    import io
    import pstats
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("cumulative").print_stats(30)
    st.sort_stats("tottime").print_stats(20)
    with open(out_path, "w") as f:
        f.write(buf.getvalue())
    return {"seconds": dt, "maxrss_kib": rss, "rc": rc, "changed": res.get("changed"), "failed": bool(res.get("failed"))}


def main(argv):
    cmds = {"raw": (cmd_raw, 2), "perobj": (cmd_perobj, 2), "dump": (cmd_dump, 1), "count": (cmd_count, 1),
            "module": (cmd_module, 5), "profile": (cmd_profile, 6)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        sys.stderr.write(__doc__)
        return 2
    print(json.dumps(cmds[argv[1]][0](*argv[2:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
