# -*- coding: utf-8 -*-
"""Pure helpers of lab/reliability.sh and of its checks (tests/lab/test_reliability.py), on the
controller, standard library only: the owned objects of `ip xfrm` dumps, the identities render.yml
would install, the key forms searched and the search itself, which run touched a task last.
`ip xfrm` output is parsed by the collection's own parser, plugins/module_utils/_xfrm_text.py,
imported by path from the checkout (REL_XFRM_TEXT, default: this checkout's).  The foreign objects
(SAs, policies, tc rules, ingress qdiscs) are read by lab/owned.py (reliability.sh foreign_of).

  python3 tests/lab/reliability_lib.py host|keys < DUMP
  python3 tests/lab/reliability_lib.py render FILE | keystore FILE | scan KEYFILE PATH... | last LOG=NAME...
"""
from __future__ import annotations

import base64
import importlib.util
import os
import re
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OWN_LO, OWN_HI = 0x51c00000, 0x51c0ffff


def _load_xfrm_text():
    path = os.environ.get("REL_XFRM_TEXT") or os.path.join(ROOT, "plugins", "module_utils", "_xfrm_text.py")
    spec = importlib.util.spec_from_file_location("_xfrm_text", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


XT = _load_xfrm_text()


def _owned(r):
    return r is not None and OWN_LO <= r <= OWN_HI


def owned(obj):
    reqids = [obj["reqid"]] if "reqid" in obj else [t["reqid"] for t in obj["tmpls"]]
    return any(_owned(r) for r in reqids)


def sections(text):
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("#REL "):
            name = line[5:].strip()
            out[name] = []
        elif name:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def host_idents(text):
    """owned SAs/SPs of `#REL states` (ip xfrm state list nokeys) and `#REL policies`"""
    s = sections(text)
    out = []
    for sa in XT.parse_states(s.get("states", "")):
        if owned(sa):
            out.append("sa %s %s %d %d" % (sa["src"], sa["dst"], sa["spi"], sa["reqid"]))
    for sp in XT.parse_policies(s.get("policies", "")):
        if owned(sp):
            out.append("sp %s %s %s %d" % (sp["src"], sp["dst"], sp["dir"], sp["tmpls"][0]["reqid"]))
    return sorted(out)


def render_idents(text):
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("printf "):  # render.yml: each batch line is one single-quoted printf argument
            try:
                parts = shlex.split(s)
            except ValueError:
                continue
            s = parts[-1] if len(parts) >= 3 else ""
        f = s.split()
        kv = {}
        for k, v in zip(f[3:], f[4:]):
            kv.setdefault(k, v)  # the first src/dst: the SA's addresses, the policy's selector
        if f[:3] == ["xfrm", "state", "add"]:
            out.append("sa %s %s %d %d" % (kv["src"], kv["dst"], int(kv["spi"], 0), int(kv["reqid"], 0)))
        elif f[:3] == ["xfrm", "policy", "add"]:
            out.append("sp %s %s %s %d" % (kv["src"], kv["dst"], kv["dir"], int(kv["reqid"], 0)))
    return sorted(out)


def keys(text):
    """key||salt hex of the owned SAs in `ip xfrm state list` output (with keys)"""
    return [sa["aead"]["key"] for sa in XT.parse_states(text) if owned(sa) and sa["aead"] and sa["aead"]["key"]]


def forms(hexkey):
    raw = bytes.fromhex(hexkey)
    f = {"hex key||salt": hexkey.lower(), "hex key without salt": hexkey.lower()[:-8]}
    for label, b in (("base64 key||salt", raw), ("base64 key without salt", raw[:-4])):
        f[label] = base64.b64encode(b).decode().rstrip("=")[:-1]  # last char depends on what follows
    return f


def read_keys(keyfile):
    """The keys of a key list file (one hex key||salt per line), lower case, sorted, unique."""
    with open(keyfile, encoding="ascii") as fh:
        return sorted({k.strip().lower() for k in fh if k.strip()})


def _files(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(d, n) for d, dummy, ns in os.walk(p) for n in ns)
        elif os.path.exists(p):
            files.append(p)
    return files


def search(keys, paths):
    """Every form of every key in every file under ``paths`` -> {keys, forms, files, bytes, hits}, hits
    as "FILE: N x FORM of key ABCDEF..." (six hex digits of the key: not enough to use it)."""
    pats = [(k, label, p) for k in keys for label, p in forms(k).items()]
    files = _files(paths)
    hits, nbytes, occ = [], 0, 0
    for fn in files:
        with open(fn, "rb") as fh:
            data = fh.read().decode("latin-1")
        nbytes += len(data)
        low = data.lower()
        for k, label, p in pats:
            n = (low if label.startswith("hex") else data).count(p)
            if n:
                occ += n
                hits.append("%s: %d x %s of key %s..." % (fn, n, label, k[:6]))
    return {"keys": len(keys), "forms": len(pats), "files": len(files), "bytes": nbytes, "occurrences": occ,
            "hits": hits}


def scan(keyfile, paths):
    r = search(read_keys(keyfile), paths)
    print("keys %d forms %d files %d bytes %d occurrences %d" % (
        r["keys"], r["forms"], r["files"], r["bytes"], r["occurrences"]))
    for h in r["hits"]:
        print(h)


def keystore_keys(text):
    """Every key of a key store, current and previous: JSON ("key": "0x..") and YAML (key: '0x..')."""
    return re.findall(r"\bkey[\"']?\s*:\s*[\"']?0x([0-9a-fA-F]{16,})", text)


def last_runs(pairs):
    """pairs: LOG=NAME ... (ansible log_path files). For each host and task label, the time of the
    result line under that task banner in each log -> which run touched it last."""
    res = {}
    for item in pairs:
        log, name = item.split("=")
        task = None
        for line in open(log, encoding="utf-8", errors="replace"):
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) .*?\| (.*)", line)
            if not m:
                continue
            ts, msg = m.groups()
            t = re.match(r"TASK \[(?:[^\]]*: )?([^\]]+)\]", msg)
            if t:
                task = t.group(1)
                continue
            r = re.match(r"(ok|changed): \[(\w+)\]", msg)
            if r and task:
                res.setdefault((r.group(2), task), []).append((ts, name))
    for (host, task), v in sorted(res.items()):
        ts, name = max(v)
        print("%s|%s|%s|%s" % (host, task, name, ts))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "host":
        print("\n".join(host_idents(sys.stdin.read())))
    elif cmd == "render":
        print("\n".join(render_idents(open(sys.argv[2]).read())))
    elif cmd == "keys":
        print("\n".join(keys(sys.stdin.read())))
    elif cmd == "keystore":
        with open(sys.argv[2], encoding="utf-8") as fh:
            print("\n".join(keystore_keys(fh.read())))
    elif cmd == "scan":
        scan(sys.argv[2], sys.argv[3:])
    elif cmd == "last":
        last_runs(sys.argv[2:])
