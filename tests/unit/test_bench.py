# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of the scale benchmark: bench/gen.py (objects and raw batch lines) and
bench/report.py (rows, ratios, targets, the docs section)."""

from __future__ import annotations

import importlib.util
import itertools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    spec = importlib.util.spec_from_file_location("bench_" + name, os.path.join(ROOT, "bench", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load("gen")
report = _load("report")

K1, K2 = "11" * 36, "22" * 36


def test_pair_objects_lines():
    sas, sps, adds, sp_adds, dels_sa, dels_sp = gen.pair_objects(0x123, K1, K2)
    assert adds == [
        "xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00010246 reqid 0x51c01246 mode transport "
        "dir out replay-window 0 flag esn aead rfc4106(gcm(aes)) 0x" + K1 + " 128",
        "xfrm state add src 192.168.100.2 dst 192.168.100.1 proto esp spi 0x00010247 reqid 0x51c01247 mode transport "
        "dir in replay-window 64 flag esn aead rfc4106(gcm(aes)) 0x" + K2 + " 128",
    ]
    assert sp_adds == [
        "xfrm policy add src 10.1.1.35/32 dst 10.2.1.35/32 dir out priority 0 ptype main tmpl src 192.168.100.1 "
        "dst 192.168.100.2 proto esp reqid 0x51c01246 mode transport",
        "xfrm policy add src 10.2.1.35/32 dst 10.1.1.35/32 dir in priority 0 ptype main tmpl src 192.168.100.2 "
        "dst 192.168.100.1 proto esp reqid 0x51c01247 mode transport",
    ]
    assert dels_sa == ["xfrm state delete src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x00010246",
                       "xfrm state delete src 192.168.100.2 dst 192.168.100.1 proto esp spi 0x00010247"]
    assert dels_sp == ["xfrm policy delete src 10.1.1.35/32 dst 10.2.1.35/32 dir out ptype main",
                       "xfrm policy delete src 10.2.1.35/32 dst 10.1.1.35/32 dir in ptype main"]
    assert sas[0] == {"src": "192.168.100.1", "dst": "192.168.100.2", "spi": "0x00010246", "reqid": "0x51c01246",
                      "mode": "transport", "direction": "out", "esn": True, "aead": {"key": "0x" + K1},
                      "offload": {"type": "none"}}
    assert sas[1]["replay_window"] == 64 and sas[1]["direction"] == "in" and sas[1]["aead"]["key"] == "0x" + K2
    assert sps[0] == {"src": "10.1.1.35/32", "dst": "10.2.1.35/32", "dir": "out",
                      "tmpl": {"src": "192.168.100.1", "dst": "192.168.100.2", "reqid": "0x51c01246"},
                      "offload": {"type": "none"}}


def test_generate_counts_order_and_unique_identities():
    keys = ("%072x" % i for i in itertools.count(1))
    data, adds, dels = gen.generate(300, keys)
    assert len(data["bench_sas"]) == len(data["bench_sps"]) == 600
    assert len(adds) == len(dels) == 1200
    # SAs before policies when adding; policies before SAs when deleting
    assert adds[599].startswith("xfrm state add") and adds[600].startswith("xfrm policy add")
    assert dels[599].startswith("xfrm policy delete") and dels[600].startswith("xfrm state delete")
    assert len({s["spi"] for s in data["bench_sas"]}) == 600
    assert len({s["aead"]["key"] for s in data["bench_sas"]}) == 600
    assert len({(p["src"], p["dst"], p["dir"]) for p in data["bench_sps"]}) == 600


@pytest.mark.parametrize("n", [0, -1, gen.MAX_PAIRS + 1])
def test_generate_refuses_sizes_outside_the_owned_reqid_range(n):
    with pytest.raises(ValueError, match="owned reqid range"):
        gen.generate(n, gen.random_keys())


def test_generate_largest_size_stays_in_owned_range():
    data, _a, _d = gen.generate(gen.MAX_PAIRS, ("%072x" % i for i in itertools.count(1)))
    assert int(data["bench_sas"][-1]["reqid"], 16) <= 0x51C0FFFF


def _raw(n, phase, method, seconds, **kw):
    r = {"seconds": seconds}
    r.update(kw)
    return {"n": n, "phase": phase, "method": method, "r": r}


RAW = [
    _raw(1000, "apply", "floor", 2.0, maxrss_kib=4000),
    _raw(1000, "noop", "floor", 0.5),
    _raw(1000, "apply", "module", 1.0, maxrss_kib=20480),   # state
    _raw(1000, "apply", "module", 1.5, maxrss_kib=10240),   # policy
    _raw(1000, "noop", "module", 0.8, maxrss_kib=1024),
    _raw(1000, "apply", "ansible", 5.0),
    _raw(10000, "apply", "floor", 20.0),
    _raw(10000, "noop", "floor", 5.0),
    _raw(10000, "apply", "module", 40.0, maxrss_kib=102400),
    _raw(10000, "noop", "module", 8.0),
    _raw(10000, "apply", "ansible", 45.0),
    _raw(10000, "noop", "ansible", 80.0),
    _raw(10000, "noop", "ansible_stub", 30.0),
    _raw(10, "apply", "loop", 80.0, objects=40),
    _raw(0, "vxlan", "site", 60.0),
    _raw(0, "vxlan", "vendor", 6.0),
]


def test_rows_sum_module_parts_ratio_rate_rss_and_loop_extrapolation():
    rs = report.rows(RAW, 10)
    m = report._get(rs, 1000, "apply", "module")
    assert m == {"n_pairs": 1000, "objects": 4000, "phase": "apply", "method": "module", "seconds": 2.5,
                 "ratio_to_floor": 1.25, "objects_per_s": 1600.0, "peak_rss_mib": 20.0, "note": ""}
    assert report._get(rs, 1000, "apply", "floor")["peak_rss_mib"] is None  # only module processes
    lo = report._get(rs, 10000, "apply", "loop")
    assert lo["seconds"] == 80000.0 and lo["note"] == "extrapolated from 10 pairs"
    assert report._get(rs, 1000, "noop", "loop") is None
    assert [r["n_pairs"] for r in rs if r["method"] == "floor"] == [1000, 1000, 10000, 10000]


def test_rows_perobj_extrapolated_above_the_measured_size():
    raw = [_raw(100, "apply", "floor", 1.0), _raw(100, "apply", "perobj", 40.0),
           _raw(1000, "apply", "floor", 8.0), _raw(1000, "deleted", "floor", 4.0)]
    rs = report.rows(raw, 10)
    assert report._get(rs, 100, "apply", "perobj")["note"] == ""
    big = report._get(rs, 1000, "apply", "perobj")
    assert (big["seconds"], big["ratio_to_floor"], big["note"]) == (400.0, 50.0, "extrapolated from 100 pairs")
    assert report._get(rs, 1000, "deleted", "perobj") is None  # nothing measured to extrapolate from


def test_targets_values_and_verdicts():
    tg = {name: (v, lim, ok) for name, v, lim, ok in report.targets(report.rows(RAW, 10))}
    assert tg["apply / floor at N=10000 (module)"] == (2.0, 8.0, True)
    assert tg["apply / floor at N=10000 (ansible)"] == (2.25, 13.7, True)
    assert tg["no-op / (state + policy dump) at N=10000 (module)"] == (1.6, 8.0, True)
    assert tg["no-op / (state + policy dump) at N=10000 (ansible)"] == (16.0, 13.9, False)
    assert tg["Ansible loop / ansible-playbook apply at N=1000 (speed-up, >=)"] == (1600.0, 50.0, True)
    assert tg["growth 1k -> 10k, module apply"] == (16.0, 12.0, False)
    assert tg["growth 1k -> 10k, floor apply"] == (10.0, 12.0, True)


def test_the_stub_row_is_its_own_method():
    """ansible_stub (the same lists to a module that does nothing) is a row of its own, never summed
    into the collection's ansible row."""
    rs = report.rows(RAW, 10)
    assert report._get(rs, 10000, "noop", "ansible")["seconds"] == 80.0
    stub = report._get(rs, 10000, "noop", "ansible_stub")
    assert (stub["seconds"], stub["ratio_to_floor"]) == (30.0, 6.0)
    assert report._get(rs, 10000, "apply", "ansible_stub") is None
    md = report.markdown(rs, report.targets(rs), report.topologies(RAW), "m", "d", 10)
    assert "| 10000 | 40000 | noop | ansible-playbook, the same lists to a module that does nothing" in md


def test_markdown_table_and_topologies():
    rs = report.rows(RAW, 10)
    md = report.markdown(rs, report.targets(rs), report.topologies(RAW), "m", "d", 10)
    assert md.startswith("Run: d. Machine: m.\n")
    assert "| 1000 | 4000 | apply | collection, module on the host (no SSH) | 2.50 | 1.25 | 1600 | 20.0 |  |" in md
    assert "| growth 1k -> 10k, module apply | 16.0 | 12.0 | **no** |" in md
    assert "| vxlan | 60.0 | 6.00 | 10.0 |" in md


def test_replace_section():
    text = "a\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nb\n"
    assert report.replace_section(text, "new\n") == "a\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\nb\n"
    with pytest.raises(ValueError):
        report.replace_section("no markers", "x")


def test_mesh_scale_peak_rss_is_the_tree_own():
    """bench/mesh_scale.py polls VmHWM of the process tree: a small child started from a large
    parent reports its own size (wait4's ru_maxrss would report the parent's, inherited at execve),
    and a grandchild's allocation counts."""
    import subprocess
    import sys
    import time

    mesh_scale = _load("mesh_scale")
    ballast = bytearray(300 * 1024 * 1024)  # this process: above 300 MB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = subprocess.Popen(["sleep", "60"])
    big = subprocess.Popen(["sh", "-c", sys.executable + " -c 'b = bytearray(96 << 20); b[::4096] = b\"y\" * len(b[::4096]);"
                            " import time; time.sleep(60)'"])
    try:
        deadline = time.monotonic() + 30  # the grandchild's allocation, on a loaded machine too
        while mesh_scale.tree_hwm_kb(big.pid) < 96 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mesh_scale.tree_hwm_kb(small.pid) < 50 * 1024
        assert mesh_scale.tree_hwm_kb(big.pid) >= 96 * 1024  # the python grandchild under sh
        assert mesh_scale.tree_hwm_kb(big.pid) < 250 * 1024
    finally:
        for proc in (small, big):
            for pid in [int(x) for x in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False).stdout.split()]:
                os.kill(pid, 9)  # the grandchild, when sh did not exec it
            proc.kill()
            proc.wait()
    del ballast
