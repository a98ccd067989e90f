# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mesh scale benchmark (issue 18), on the controller alone: no VM, no host contacted.

For each case (a generated inventory), `ansible-playbook playbooks/render.yml` (derive.yml: pairs,
key store; then every host's file) is run twice - the first run creates the key store, the second
finds it - with ipsec_key_derivation=hkdf (the key store then holds no key; the master secret is a
throw-away one, given in a 0600 vars file) and reveal_keys=true into a 0700 temporary directory
that is removed at the end (the keys are needed to check the mirror; none is printed).  Measured
per run: wall time, CPU time (user+sys of ansible-playbook and its workers), peak RSS (the
largest process), store size and entries, rendered files and batch lines.  Then checked on the
files of the second run: every directed pair mirrored (one out SA on the sender, one in SA on
the receiver, same SPI, reqid and key), keys distinct, SPIs unique per destination, reqids unique
per host, the store without any key; with --pins, a host is added and then removed and every
pair of the hosts that stay keeps its SPI, reqid and key.

    python3 bench/mesh_scale.py                       # full 100, 300, 1000; partial 1000 x 16 peers
    python3 bench/mesh_scale.py --cases full:100,full:300 --pins
    python3 bench/mesh_scale.py --chart-only          # table + chart from the saved results

Results: bench/results/mesh_scale.jsonl (one line per run) and mesh_scale.png (the chart, with a
python that has matplotlib: bench/requirements.txt), and the table section of docs/mesh-scale.md.
Knobs: --python (ansible-playbook's venv: the project .venv by default), --keep (leave the
temporary directory).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "docs", "mesh-scale.md")
DEFAULT_CASES = "full:100,full:300,full:1000,partial:1000:16"

_SA_RE = re.compile(r"^xfrm state add src (\S+) dst (\S+) proto esp spi (0x[0-9a-f]+) reqid (0x[0-9a-f]+) .*"
                    r"aead \S+ (0x[0-9A-Fa-f]+) ")


def host_name(i):
    return "h%04d" % i


def addr(i):
    """A unique unicast address per host index (10.64.0.1, ...)."""
    n = i + 1
    return "10.%d.%d.%d" % (64 + n // 64516, (n // 254) % 254, n % 254 + 1)


def write_inventory(directory, n, peers=0, skip=()):
    """A full mesh (one ipsec_meshes group) or, with peers, each host with ``peers`` peers (its
    neighbours on a ring: peers/2 each side, as racks of a GPU cluster pair with their neighbours)."""
    os.makedirs(directory, exist_ok=True)
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    directed = 0
    for i in range(n):
        if i in skip:
            continue
        lines.append("        %s:" % host_name(i))
        lines.append("          ipsec_local_ip: %s" % addr(i))
        if peers:
            ps = sorted({(i + d) % n for d in range(-(peers // 2), peers // 2 + 1) if d} - set(skip))
            lines.append("          ipsec_peers: [%s]" % ", ".join(host_name(p) for p in ps))
            directed += len(ps)
    lines.append("      vars:")
    if not peers:
        lines.append("        ipsec_meshes: [mesh]")
    lines += ["        ipsec_dev: enp8s0f0np0", "        ansible_connection: local", ""]
    with open(os.path.join(directory, "hosts.yml"), "w", encoding="ascii") as fh:
        fh.write("\n".join(lines))
    if not peers:
        directed = (n - len(skip)) * (n - len(skip) - 1)
    return directory, directed


def tree_hwm_kb(root):
    """The largest VmHWM (peak resident set, kB) of process `root` and its descendants, from /proc."""
    parent, hwm = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry, encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:  # gone meanwhile
            continue
        pid = int(entry)
        parent[pid] = int(fields.get("PPid", "0").strip() or 0)
        hwm[pid] = int(fields.get("VmHWM", "0 kB").split()[0])
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        grown = bool(more)
        tree |= more
    return max((hwm.get(pid, 0) for pid in tree), default=0)


def run_render(python, work, inv, store, out, secret_file, tag):
    """One render.yml run: a dict of measurements."""
    ansible_playbook = os.path.join(os.path.dirname(python), "ansible-playbook")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOME=os.path.join(work, "ansible-home"),
               ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp"), ANSIBLE_COLLECTIONS_PATH=os.path.join(work, "collections"))
    cmd = [ansible_playbook, "-i", inv, os.path.join(ROOT, "playbooks", "render.yml"),
           "-e", "ipsec_render_dir=%s" % out, "-e", "ipsec_keystore_path=%s" % store,
           "-e", "ipsec_key_derivation=hkdf", "-e", "reveal_keys=true", "-e", "@%s" % secret_file]
    t0 = time.monotonic()
    with open(os.path.join(work, "%s.log" % tag), "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        peak_kb = 0
        while True:
            # CPU time from wait4 (the child and the workers it waited for); NOT its ru_maxrss: Linux
            # hands a child the high-water RSS of the process it was forked from (this one, which
            # holds a whole mesh's keys after a check) at execve, so the process tree's own VmHWM
            # is polled instead
            dummy, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if dummy:
                break
            peak_kb = max(peak_kb, tree_hwm_kb(proc.pid))
            time.sleep(0.2)
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        with open(os.path.join(work, "%s.log" % tag), encoding="utf-8") as fh:
            tail = fh.read()[-3000:]
        raise SystemExit("render.yml failed (%s, rc %d):\n%s" % (tag, rc, tail))
    files = [f for f in os.listdir(out) if f.endswith(".xfrm.sh")]
    lines = 0
    for f in files:
        with open(os.path.join(out, f), encoding="ascii") as fh:
            lines += sum(1 for ln in fh if ln.startswith("  printf "))
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mb": round(peak_kb / 1024.0, 1), "store_bytes": os.path.getsize(store),
            "files": len(files), "batch_lines": lines}


def read_sas(out):
    """{host file: [(src, dst, spi, reqid, key)]} of the rendered SAs (revealed keys)."""
    per = {}
    for f in sorted(os.listdir(out)):
        if not f.endswith(".xfrm.sh"):
            continue
        sas = []
        with open(os.path.join(out, f), encoding="ascii") as fh:
            for ln in fh:
                if ln.startswith("  printf '%s\\n' 'xfrm state add "):
                    m = _SA_RE.match(ln[len("  printf '%s\\n' '"):])
                    if m is None:
                        raise AssertionError("%s: an SA line the benchmark cannot read" % f)
                    sas.append(m.groups())
        per[f[:-len(".xfrm.sh")]] = sas
    return per


def check_mesh(out, store, ips, expected_pairs):
    """The correctness checks of issue 18 on one render: returns {name: count checked}; raises
    AssertionError naming the first violation (never a key)."""
    per = read_sas(out)
    ip_of = dict(ips)
    outs, ins = {}, {}
    for host, sas in per.items():
        me = ip_of[host]
        spis_in, reqids = set(), set()
        for src, dst, spi, reqid, key in sas:
            side = outs if src == me else ins
            if (src == me) == (dst == me):
                raise AssertionError("%s: an SA %s->%s that is not its own" % (host, src, dst))
            if (src, dst) in side:
                raise AssertionError("%s: two SAs %s->%s" % (host, src, dst))
            side[(src, dst)] = (spi, reqid, key.lower())
            if dst == me:
                if spi in spis_in:
                    raise AssertionError("%s: SPI %s used twice towards it" % (host, spi))
                spis_in.add(spi)
            if reqid in reqids:
                raise AssertionError("%s: reqid %s used twice" % (host, reqid))
            reqids.add(reqid)
    if set(outs) != set(ins):
        raise AssertionError("%d directions have no matching SA on the other end" % len(set(outs) ^ set(ins)))
    if len(outs) != expected_pairs:
        raise AssertionError("%d directed pairs rendered, %d expected" % (len(outs), expected_pairs))
    for k, v in outs.items():
        if ins[k] != v:
            raise AssertionError("%s->%s: the two ends differ (SPI, reqid or key)" % k)
    aes = {v[2][2:-8] for v in outs.values()}
    if len(aes) != len(outs):
        raise AssertionError("%d directions share an AES key" % (len(outs) - len(aes)))
    with open(store, encoding="utf-8") as fh:
        text = fh.read()
    if '"key"' in text:
        raise AssertionError("the key store holds a key (hkdf: it must hold none)")
    return {"directed_pairs_mirrored": len(outs), "distinct_keys": len(aes), "hosts": len(per)}, outs


def by_names(outs, ips):
    name_of = {ip: h for h, ip in ips}
    return {(name_of[s], name_of[d]): v for (s, d), v in outs.items()}


def case_label(kind, n, peers):
    return "full mesh %d" % n if kind == "full" else "%d hosts x %d peers" % (n, peers)


def run_case(args, kind, n, peers, work):
    label = case_label(kind, n, peers)
    cdir = os.path.join(work, "%s-%d-%d" % (kind, n, peers))
    os.makedirs(cdir, mode=0o700)
    inv, expected = write_inventory(os.path.join(cdir, "inv"), n, peers)
    store = os.path.join(cdir, "ks", "keys.yml")
    ips = [(host_name(i), addr(i)) for i in range(n)]
    rows = []
    for run in (1, 2):
        out = os.path.join(cdir, "out")
        m = run_render(args.python, work, inv, store, out, args.secret_file, "%s-%d-%d-run%d" % (kind, n, peers, run))
        m.update({"case": label, "kind": kind, "n": n, "peers": peers, "run": run, "directed_sas": expected})
        with open(store, encoding="utf-8") as fh:
            m["store_entries"] = fh.read().count('"installed"')
        print("  %-22s run %d: %7.1f s wall, %7.1f s CPU, %6.0f MB peak RSS, store %5.1f MB (%d entries), "
              "%d files, %d batch lines" % (label, run, m["wall_s"], m["cpu_s"], m["peak_rss_mb"],
                                            m["store_bytes"] / 1e6, m["store_entries"], m["files"], m["batch_lines"]),
              flush=True)
        rows.append(m)
    checks, outs = check_mesh(os.path.join(cdir, "out"), store, ips, expected)
    print("  %-22s checked: %s" % (label, ", ".join("%s %d" % kv for kv in sorted(checks.items()))), flush=True)
    rows[-1]["checks"] = checks
    if args.pins:
        before = by_names(outs, ips)
        del outs
        # a host added (index n), then one removed (index 1): every pair of the others keeps its numbers and key
        for what, skip in (("added", ()), ("removed", {1})):
            inv2, exp = write_inventory(os.path.join(cdir, "inv-" + what), n + 1, peers, skip=skip)
            ips2 = [(host_name(i), addr(i)) for i in range(n + 1) if i not in skip]
            out2 = os.path.join(cdir, "out-" + what)
            m = run_render(args.python, work, inv2, store, out2, args.secret_file, "%s-%d-%d-%s" % (kind, n, peers, what))
            dummy, outs2 = check_mesh(out2, store, ips2, exp)
            after = by_names(outs2, ips2)
            kept = [k for k in before if k in after]
            moved = [k for k in kept if before[k] != after[k]]
            if moved:
                raise AssertionError("host %s: %d pairs changed SPI, reqid or key (first %s->%s)" % (what, len(moved), *moved[0]))
            print("  %-22s host %s: %d pairs kept their SPI, reqid and key (%.1f s)" % (label, what, len(kept), m["wall_s"]),
                  flush=True)
            rows[-1]["checks"]["pins_kept_when_host_" + what] = len(kept)
            shutil.rmtree(out2)
    return rows


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for ln in fh:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            mem = int(fh.readline().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    return "%d cores (%s), %d GiB, Python %s, %s" % (os.cpu_count() or 0, cpu, mem, platform.python_version(),
                                                     platform.platform(terse=True))


def markdown(rows, meta):
    out = ["<!-- generated by bench/mesh_scale.py: do not edit by hand -->",
           "Measured %s on %s; load average at the start %s. %s" % (meta["date"], meta["machine"], meta["load"], meta["note"]),
           "",
           "| case | directed SAs | run | wall | CPU | peak RSS | key store | batch lines | files |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append("| %s | %s | %d | %.1f s | %.1f s | %.0f MB | %.1f MB, %s entries | %s | %d |" % (
            r["case"], "{:,}".format(r["directed_sas"]), r["run"], r["wall_s"], r["cpu_s"], r["peak_rss_mb"],
            r["store_bytes"] / 1e6, "{:,}".format(r["store_entries"]), "{:,}".format(r["batch_lines"]), r["files"]))
    checks = [r for r in rows if r.get("checks")]
    if checks:
        out += ["", "Checked on the second run's files:", ""]
        for r in checks:
            done = ", ".join("%s %s" % (k.replace("_", " "), "{:,}".format(v)) for k, v in sorted(r["checks"].items()))
            out.append("- %s: %s" % (r["case"], done))
    return "\n".join(out) + "\n"


def replace_section(text, body, begin="<!-- mesh-scale:begin -->", end="<!-- mesh-scale:end -->"):
    if begin in text and end in text:
        a, b = text.index(begin) + len(begin), text.index(end)
        return text[:a] + "\n" + body + text[b:]
    return text + "\n" + begin + "\n" + body + end + "\n"


def chart(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    full = [r for r in rows if r["kind"] == "full"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, style in ((1, "o-"), (2, "s--")):
        rs = sorted((r for r in full if r["run"] == run), key=lambda r: r["n"])
        axes[0].plot([r["directed_sas"] for r in rs], [r["wall_s"] for r in rs], style, label="wall, run %d" % run)
        axes[0].plot([r["directed_sas"] for r in rs], [r["cpu_s"] for r in rs], style, alpha=0.5, label="CPU, run %d" % run)
        axes[1].plot([r["directed_sas"] for r in rs], [r["peak_rss_mb"] for r in rs], style, label="run %d" % run)
    part = [r for r in rows if r["kind"] != "full"]
    if part:
        axes[0].plot([r["directed_sas"] for r in part], [r["wall_s"] for r in part], "kx", label="wall, partial meshes")
        axes[0].plot([r["directed_sas"] for r in part], [r["cpu_s"] for r in part], "k+", label="CPU, partial meshes")
        axes[1].plot([r["directed_sas"] for r in part], [r["peak_rss_mb"] for r in part], "kx", label="partial meshes")
    for ax, ylabel in ((axes[0], "seconds"), (axes[1], "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("directed SAs (full mesh of N hosts: N(N-1); partial: N x peers)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("render.yml (derive + render), controller only")
    axes[1].set_title("memory")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, help="full:N and partial:N:PEERS, comma separated (%(default)s)")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--pins", default="", help="a case (full:N) where a host is also added, then removed, and the pins "
                                               "of the others checked (default: none)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--chart-only", action="store_true")
    ap.add_argument("--note", default="", help="a sentence for the doc (for example what else loaded the machine)")
    args = ap.parse_args()
    raw = os.path.join(RESULTS, "mesh_scale.jsonl")
    if not args.chart_only:
        cases = []
        for c in args.cases.split(","):
            parts = c.split(":")
            if parts[0] == "full" and len(parts) == 2:
                cases.append(("full", int(parts[1]), 0))
            elif parts[0] == "partial" and len(parts) == 3:
                cases.append(("partial", int(parts[1]), int(parts[2])))
            else:
                raise SystemExit("--cases: %r is not full:N or partial:N:PEERS" % c)
        work = tempfile.mkdtemp(prefix="mesh-scale-")            # 0700: the rendered files hold keys
        try:
            coll = os.path.join(work, "collections", "ansible_collections", "ipsec_offload")
            os.makedirs(coll)
            os.symlink(ROOT, os.path.join(coll, "mlx5"))
            args.secret_file = os.path.join(work, "secret.yml")
            fd = os.open(args.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write("ipsec_master_secret: %s\n" % os.urandom(32).hex())   # throw-away, never printed
            meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "machine": machine(), "load": "%.1f" % os.getloadavg()[0], "note": args.note}
            print("mesh scale benchmark, %s, %s" % (meta["date"], meta["machine"]), flush=True)
            os.makedirs(RESULTS, exist_ok=True)
            with open(raw, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"meta": meta}) + "\n")
            for kind, n, peers in cases:
                a = argparse.Namespace(**vars(args))
                a.pins = args.pins == ("%s:%d" % (kind, n) + (":%d" % peers if peers else ""))
                rows = run_case(a, kind, n, peers, work)
                with open(raw, "a", encoding="utf-8") as fh:     # case by case: a long run keeps what it measured
                    for r in rows:
                        fh.write(json.dumps(r, sort_keys=True) + "\n")
        finally:
            if args.keep:
                print("kept %s (it holds keys: remove it)" % work)
            else:
                shutil.rmtree(work, ignore_errors=True)
    with open(raw, encoding="utf-8") as fh:
        lines = [json.loads(ln) for ln in fh if ln.strip()]
    meta, rows = lines[0]["meta"], lines[1:]
    text = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else "# Mesh scale\n"
    with open(DOC, "w", encoding="utf-8") as fh:
        fh.write(replace_section(text, markdown(rows, meta)))
    try:
        chart(rows, os.path.join(RESULTS, "mesh_scale.png"), "ipsec_offload.mlx5 mesh scale, %s" % meta["date"])
    except ImportError:
        print("no matplotlib here: chart skipped (bench/requirements.txt)", file=sys.stderr)
    print("results: %s, %s" % (raw, DOC))


if __name__ == "__main__":
    main()
