"""Print this host's IPsec SAs, policies and local addresses as JSON, keys replaced by a salted hash.

Run ON the managed host (python3 standard library only): by molecule/*/prepare.yml (foreign-object
snapshot) and by the testinfra tests (molecule/default/tests/xfrm_view.py), as
    python3 xfrm_dump.py SALT [NETNS]
Each SA's key material is read from `ip -s xfrm state` on the host and only HMAC-SHA256(SALT,
algorithm|key|icv) leaves it: two SAs with the same key give the same `key_hash` for the same salt,
and nothing printed reveals the key. A fresh salt per run keeps the hashes unlinkable across runs.
"""
import hashlib
import hmac
import json
import re
import subprocess
import sys


def ip(args, netns):
    cmd = ["ip"] + (["-n", netns] if netns else []) + args
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False)
    if out.returncode != 0:
        sys.stderr.write("%s failed: %s\n" % (" ".join(cmd), out.stderr.decode(errors="replace").strip()))
        sys.exit(2)
    return out.stdout.decode(errors="replace")


def blocks(text):
    """Split `ip xfrm` output into blocks: a block starts at a line that is not indented."""
    cur = []
    for line in text.splitlines():
        if line and not line[0].isspace():
            if cur:
                yield cur
            cur = [line]
        elif cur and line.strip():
            cur.append(line)
    if cur:
        yield cur


def word_after(words, key):
    for i, w in enumerate(words[:-1]):
        if w == key:
            return words[i + 1]
    return None


def parse_states(text, salt):
    states = []
    for blk in blocks(text):
        head = blk[0].split()
        sa = {"src": word_after(head, "src"), "dst": word_after(head, "dst"), "algos": {},
              "offload": None, "packets": None, "bytes": None, "sel": None}
        for n, line in enumerate(blk[1:], 1):
            w = line.split()
            if not w:
                continue
            if w[0] == "proto":
                sa["proto"] = w[1]
                spi = word_after(w, "spi")
                sa["spi"] = int(spi.split("(")[0], 16) if spi else None
                reqid = word_after(w, "reqid")
                sa["reqid"] = int(reqid.split("(")[0], 0) if reqid else 0
                sa["mode"] = word_after(w, "mode")
            elif w[0] in ("aead", "enc", "auth", "auth-trunc", "comp") and len(w) >= 3:
                mac = hmac.new(salt.encode(), "|".join(w[1:]).encode(), hashlib.sha256).hexdigest()
                bits = re.search(r"\((\d+) bits\)", line)
                sa["algos"][w[0]] = {"name": w[1], "key_bits": int(bits.group(1)) if bits else None,
                                     "icv": w[-1] if w[0] == "aead" else None, "key_hash": mac[:32]}
            elif w[0] == "sel":
                sa["sel"] = " ".join(w[1:])
            elif line.strip().startswith("crypto offload parameters:"):
                sa["offload"] = {"dev": word_after(w, "dev"), "dir": word_after(w, "dir"),
                                 "mode": word_after(w, "mode") or "crypto"}
            elif w[0] == "lifetime" and w[1:2] == ["current:"] and n + 1 < len(blk):
                m = re.match(r"\s*(\d+)\(bytes\),\s*(\d+)\(packets\)", blk[n + 1])
                if m:
                    sa["bytes"], sa["packets"] = int(m.group(1)), int(m.group(2))
        states.append(sa)
    return states


def parse_policies(text):
    pols = []
    for blk in blocks(text):
        head = blk[0].split()
        pol = {"sel": " ".join(head), "dir": None, "tmpl": [], "offload": None}
        for line in blk[1:]:
            w = line.split()
            if w[0] == "dir":
                pol["dir"] = w[1]
                pol["priority"] = int(word_after(w, "priority") or 0)
            elif w[0] == "tmpl":
                pol["tmpl"].append({"src": word_after(w, "src"), "dst": word_after(w, "dst")})
            elif w[0] == "proto" and pol["tmpl"]:
                reqid = word_after(w, "reqid")
                pol["tmpl"][-1].update({"proto": w[1], "reqid": int(reqid, 0) if reqid else 0,
                                        "mode": word_after(w, "mode")})
            elif line.strip().startswith("crypto offload parameters:"):
                pol["offload"] = {"dev": word_after(w, "dev"), "mode": word_after(w, "mode") or "crypto"}
        if pol["dir"] is None and "socket" in head:  # per-socket policies: not ours to compare
            continue
        pols.append(pol)
    return pols


def main():
    if len(sys.argv) < 2 or len(sys.argv[1]) < 16:
        sys.stderr.write("usage: xfrm_dump.py SALT(>=16 chars) [NETNS]\n")
        sys.exit(2)
    salt = sys.argv[1]
    netns = sys.argv[2] if len(sys.argv) > 2 else ""
    addrs = sorted({a["local"] for link in json.loads(ip(["-j", "addr", "show"], netns) or "[]")
                    for a in link.get("addr_info", []) if a.get("local")})
    out = {"states": parse_states(ip(["-s", "xfrm", "state", "list"], netns), salt),
           "policies": parse_policies(ip(["xfrm", "policy", "list"], netns)),
           "addresses": addrs}
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
