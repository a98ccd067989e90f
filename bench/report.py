# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn bench/run.sh's raw.jsonl into bench.csv, bench.md, bench.png and the results section of
docs/benchmark.md (between its `<!-- bench:begin -->` / `<!-- bench:end -->` markers).

  report.py RESULTS_DIR --machine TEXT --loop-pairs N [--docs docs/benchmark.md] [--date ISO]

The pure part (rows(), targets(), markdown()) has no I/O; matplotlib is imported only for the chart.
Prints the table and the targets on stdout.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import re

PHASES = ("apply", "noop", "deleted")
METHODS = ("floor", "perobj", "module", "ansible", "ansible_stub", "loop")
METHOD_TEXT = {
    "floor": "floor: one raw `ip -batch -` (no-op: one state + one policy dump)",
    "perobj": "one `ip` process per object (above the measured N: extrapolated)",
    "module": "collection, module on the host (no SSH)",
    "ansible": "collection, ansible-playbook (one task per module)",
    "ansible_stub": "ansible-playbook, the same lists to a module that does nothing (Ansible's own cost)",
    "loop": "Ansible loop, one module run per object (extrapolated from a few pairs)",
}
# Issue 17's targets: the module on the host within 8x of the floor (apply) and of the two dumps
# (no-op); the ansible-playbook rows improved by the same factor as the module's, from the run before
# that work (2026-11-24: module 13.1x / 18.6x, ansible-playbook 22.4x / 32.4x), so within
# 22.4 * 8 / 13.1 = 13.7x and 32.4 * 8 / 18.6 = 13.9x.  (Issue 5 asked for 1.5x and 2x: out of reach
# for a Python module and Ansible's per-run cost, docs/benchmark.md.)
TARGETS = {"apply_floor": 8.0, "noop_dump": 8.0, "apply_floor_ansible": 13.7, "noop_dump_ansible": 13.9,
           "loop_speedup": 50.0, "growth": 12.0}


def load(lines):
    return [json.loads(line) for line in lines if line.strip()]


def rows(raw, loop_pairs):
    """One row per (N, phase, method): seconds (state + policy module runs summed), ratio to the
    floor of the same N and phase, objects/s, peak RSS (MiB, the larger of the two modules)."""
    acc = {}
    loop = None
    for r in raw:
        if r["method"] == "loop":
            if r["n"] == loop_pairs:
                loop = r["r"]["seconds"] / r["r"]["objects"]
            continue
        if r["n"] == 0:
            continue
        k = (r["n"], r["phase"], r["method"])
        a = acc.setdefault(k, {"seconds": 0.0, "rss": None, "parts": 0})
        a["seconds"] += r["r"]["seconds"]
        a["parts"] += 1
        rss = r["r"].get("maxrss_kib")
        if rss is not None and r["method"] == "module":
            a["rss"] = max(a["rss"] or 0, rss)
    sizes = sorted({k[0] for k in acc})
    # one `ip` per object: measured for small N only; above, extrapolated per object from the
    # largest N measured (each object is one process: the cost per object does not depend on N)
    perobj = {}
    for (n, phase, m), a in sorted(acc.items()):
        if m == "perobj":
            perobj[phase] = (n, a["seconds"] / (4 * n))
    for n in sizes:
        for phase, (mn, per) in perobj.items():
            if (n, phase, "perobj") not in acc:
                acc[(n, phase, "perobj")] = {"seconds": per * 4 * n, "rss": None, "parts": 0,
                                             "note": "extrapolated from %d pairs" % mn}
    out = []
    for n in sizes:
        objs = 4 * n
        for phase in PHASES:
            floor = acc.get((n, phase, "floor"))
            for m in METHODS:
                if m == "loop":
                    if phase != "apply" or loop is None:
                        continue
                    secs, rss, note = loop * objs, None, "extrapolated from %d pairs" % loop_pairs
                else:
                    a = acc.get((n, phase, m))
                    if a is None:
                        continue
                    secs, rss, note = a["seconds"], a["rss"], a.get("note", "")
                out.append({"n_pairs": n, "objects": objs, "phase": phase, "method": m, "seconds": round(secs, 3),
                            "ratio_to_floor": round(secs / floor["seconds"], 2) if floor and floor["seconds"] else None,
                            "objects_per_s": round(objs / secs, 3) if secs else None,
                            "peak_rss_mib": round(rss / 1024.0, 1) if rss else None, "note": note})
    return out


def _get(rs, n, phase, method):
    for r in rs:
        if (r["n_pairs"], r["phase"], r["method"]) == (n, phase, method):
            return r
    return None


def targets(rs):
    """[(name, value, limit, ok)] for the issue's targets, on the largest N measured."""
    sizes = sorted({r["n_pairs"] for r in rs})
    if not sizes:
        return []
    top = sizes[-1]
    out = []
    for phase, label, target in (("apply", "apply / floor", "apply_floor"),
                                 ("noop", "no-op / (state + policy dump)", "noop_dump")):
        for m, suffix in (("module", ""), ("ansible", "_ansible")):
            r = _get(rs, top, phase, m)
            if r and r["ratio_to_floor"] is not None:
                limit = TARGETS[target + suffix]
                out.append(("%s at N=%d (%s)" % (label, top, m), r["ratio_to_floor"], limit,
                            r["ratio_to_floor"] <= limit))
    for n in sizes:
        lo, a = _get(rs, n, "apply", "loop"), _get(rs, n, "apply", "ansible")
        if lo and a:
            sp = round(lo["seconds"] / a["seconds"], 1)
            out.append(("Ansible loop / ansible-playbook apply at N=%d (speed-up, >=)" % n, sp,
                        TARGETS["loop_speedup"], sp >= TARGETS["loop_speedup"]))
    if 1000 in sizes and 10000 in sizes:
        for m in ("module", "ansible", "floor"):
            for phase in PHASES:
                a, b = _get(rs, 1000, phase, m), _get(rs, 10000, phase, m)
                if a and b:
                    g = round(b["seconds"] / a["seconds"], 2)
                    out.append(("growth 1k -> 10k, %s %s" % (m, phase), g, TARGETS["growth"],
                                g <= TARGETS["growth"]))
    return out


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = ("%.2f" % v) if v < 10 else ("%.1f" % v) if v < 1000 else ("%.0f" % v)
    return "%s%s" % (v, unit)


def markdown(rs, tg, topo, machine, date, loop_pairs):
    lines = ["Run: %s. Machine: %s." % (date, machine), "",
             "| N pairs | objects | phase | method | wall s | x floor | objects/s | peak RSS MiB | note |",
             "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rs:
        lines.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            r["n_pairs"], r["objects"], r["phase"], METHOD_TEXT[r["method"]], _fmt(r["seconds"]),
            _fmt(r["ratio_to_floor"]), _fmt(r["objects_per_s"]), _fmt(r["peak_rss_mib"]), r["note"]))
    lines += ["", "Objects = 2 SAs + 2 policies per pair. The Ansible loop was measured for %d pairs and "
              "extrapolated per object." % loop_pairs, "",
              "| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
    for name, v, lim, ok in tg:
        lines.append("| %s | %s | %s | %s |" % (name, _fmt(v), _fmt(lim), "yes" if ok else "**no**"))
    if topo:
        lines += ["", "| topology | site.yml converge, both hosts (s) | vendor command sequence, one script "
                      "per host over SSH (s) | ratio |", "| --- | ---: | ---: | ---: |"]
        for name, (site, vendor) in sorted(topo.items()):
            lines.append("| %s | %s | %s | %s |" % (name, _fmt(site), _fmt(vendor),
                                                    _fmt(site / vendor) if site and vendor else "-"))
    return "\n".join(lines) + "\n"


def topologies(raw):
    out = {}
    for r in raw:
        if r["n"] == 0 and r["method"] in ("site", "vendor"):
            t = out.setdefault(r["phase"], [None, None])
            t[0 if r["method"] == "site" else 1] = r["r"]["seconds"]
    return out


def chart(rs, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    styles = {"floor": "k-o", "perobj": "r--s", "module": "b-o", "ansible": "g-^", "ansible_stub": "g:v", "loop": "m:x"}
    for ax, phase in zip(axes, PHASES):
        for m in METHODS:
            pts = [(r["objects"], r["seconds"]) for r in rs if r["phase"] == phase and r["method"] == m]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[m], label=METHOD_TEXT[m].split(" (", maxsplit=1)[0])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("objects (SAs + policies)")
        ax.set_ylabel("wall time, s")
        ax.set_title({"apply": "apply (all new)", "noop": "no-op re-run", "deleted": "deleted (all)"}[phase])
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def replace_section(text, section):
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pat.search(text):
        raise ValueError("markers %s ... %s not found" % (begin, end))
    return pat.sub(lambda _m: begin + "\n" + section + end, text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--loop-pairs", type=int, required=True)
    ap.add_argument("--docs")
    ap.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    a = ap.parse_args()
    with open(os.path.join(a.results, "raw.jsonl")) as f:
        raw = load(f)
    rs = rows(raw, a.loop_pairs)
    tg = targets(rs)
    md = markdown(rs, tg, topologies(raw), a.machine, a.date, a.loop_pairs)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["date", "machine", "n_pairs", "objects", "phase", "method", "seconds",
                                        "ratio_to_floor", "objects_per_s", "peak_rss_mib", "note"],
                       lineterminator="\n")  # csv's default is \r\n (ansible-test line-endings)
    w.writeheader()
    for r in rs:
        w.writerow(dict(r, date=a.date, machine=a.machine))
    with open(os.path.join(a.results, "bench.csv"), "w") as f:
        f.write(buf.getvalue())
    with open(os.path.join(a.results, "bench.md"), "w") as f:
        f.write("# Scale benchmark results (bench/run.sh)\n\n" + md + "\n![chart](bench.png)\n")
    chart(rs, os.path.join(a.results, "bench.png"), "ipsec_offload.mlx5 scale benchmark, %s\n%s" % (a.date, a.machine))
    if a.docs:
        with open(a.docs) as f:
            text = f.read()
        with open(a.docs, "w") as f:
            f.write(replace_section(text, md))
    print(md)
    missed = [t for t in tg if not t[3]]
    print("targets met: %d of %d" % (len(tg) - len(missed), len(tg)))


if __name__ == "__main__":
    main()
