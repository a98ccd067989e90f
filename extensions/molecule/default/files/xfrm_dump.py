"""Print this host's IPsec SAs, policies and local addresses as JSON, keys replaced by a salted hash.

Run ON the managed host (python3 standard library only): by extensions/molecule/*/prepare.yml (foreign-object
snapshot) and by the testinfra tests (extensions/molecule/default/tests/xfrm_view.py), as
    python3 xfrm_dump.py SALT [NETNS]
Each SA's key material is read from `ip -s xfrm state` on the host and only HMAC-SHA256(SALT,
algorithm|key|icv) leaves it: two SAs with the same key give the same `key_hash` for the same salt,
and nothing printed reveals the key. A fresh salt per run keeps the hashes unlinkable across runs.

`ip xfrm` text is parsed by the collection's own parser: this file is never run alone but with
plugins/module_utils/_xfrm_text.py (stdlib only) in front of it, one text (bundle() in
tests/xfrm_view.py for testinfra, the "dump script" task in prepare.yml for ansible.builtin.script),
so _blocks, parse_states and parse_policies are defined when it runs.
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


# _blocks, parse_states and parse_policies below are _xfrm_text's, defined by the text in front.

def _block_text(head, body):
    return "\n".join([" ".join(head)] + ["\t" + line for line in body])


def _algos(body, salt):
    """Key lines -> {kind: {name, key_bits, icv, key_hash}}: the key leaves only as HMAC(salt)."""
    algos = {}
    for line in body:
        w = line.split()
        if w[0] in ("aead", "enc", "auth", "auth-trunc", "comp") and len(w) >= 3:
            mac = hmac.new(salt.encode(), "|".join(w[1:]).encode(), hashlib.sha256).hexdigest()
            bits = re.search(r"\((\d+) bits\)", line)
            algos[w[0]] = {"name": w[1], "key_bits": int(bits.group(1)) if bits else None,
                           "icv": w[-1] if w[0] == "aead" else None, "key_hash": mac[:32]}
    return algos


def dump_states(text, salt):
    """`ip -s xfrm state list` -> SAs, parsed by the collection's parse_states (_xfrm_text)."""
    states = []
    for head, body in _blocks(text):  # noqa: F821 pylint: disable=undefined-variable
        parsed = parse_states(_block_text(head, body))  # noqa: F821 pylint: disable=undefined-variable
        if not parsed:
            continue
        m = parsed[0]
        off = m["offload"]
        sel = next((" ".join(line.split()[1:]) for line in body if line.split()[0] == "sel"), None)
        states.append({"src": m["src"], "dst": m["dst"], "proto": m["proto"], "spi": m["spi"], "reqid": m["reqid"],
                       "mode": m["mode"], "algos": _algos(body, salt), "sel": sel,
                       "offload": None if off["type"] == "none" else {"dev": off["dev"], "dir": off["dir"],
                                                                      "mode": off["type"]},
                       "bytes": (m["stats"] or {}).get("bytes"), "packets": (m["stats"] or {}).get("packets")})
    return states


def dump_policies(text):
    """`ip xfrm policy list` -> SPs, parsed by the collection's parse_policies (_xfrm_text)."""
    pols = []
    for head, body in _blocks(text):  # noqa: F821 pylint: disable=undefined-variable
        for m in parse_policies(_block_text(head, body)):  # noqa: F821 pylint: disable=undefined-variable
            pol = {"sel": " ".join(head), "dir": None if m["socket"] else m["dir"],
                   "tmpl": [{"src": t["src"], "dst": t["dst"], "proto": t["proto"], "reqid": t["reqid"],
                             "mode": t["mode"]} for t in m["tmpls"]],
                   "offload": None if m["offload"]["type"] == "none" else {"dev": m["offload"]["dev"],
                                                                           "mode": m["offload"]["type"]}}
            if not m["socket"]:
                pol["priority"] = m["priority"]
                pol["action"] = m["action"]  # guards (fail closed): block
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
    out = {"states": dump_states(ip(["-s", "xfrm", "state", "list"], netns), salt),
           "policies": dump_policies(ip(["xfrm", "policy", "list"], netns)),
           "addresses": addrs}
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
