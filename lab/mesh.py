# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab mesh (lab/mesh.sh): its inventory, its expected SAs, and what the VMs report.

Hosts are named meshK (K = 1..254); host meshK lives in network namespace meshK on one of the two
lab VMs, with address 10.77.0.K/24 on its veth end veth0 (the other end, mbK, is a port of the VM's
bridge br-mesh, which also holds link0, the wire between the VMs). A layout is a comma list of
meshK=VM, for example mesh1=1,mesh2=1,mesh3=2.

Subcommands (the controller's, except snapshot):
  inventory LAYOUT --port VM=PORT... --key F --known-hosts F --out F
                 the Ansible inventory: every host an inventory host (ansible_host/port of its VM,
                 ipsec_namespace, ipsec_local_ip, ipsec_dev), all in one full-mesh group
  pairs LAYOUT [--involving HOST]
                 the directed pairs "SENDER RECEIVER SENDER_VM RECEIVER_ADDRESS RECEIVER_VM", one a line
  snapshot NS... (runs ON a VM: plugins/module_utils/_xfrm_text.py and this file as one text on the
                 stdin of `python3 - snapshot NS...`, so the collection's own parser reads `ip xfrm`)
                 per namespace, the owned SAs "SA NS SRC DST SPI REQID PACKETS KEYHASH" (KEYHASH:
                 the first 16 hex digits of the SHA-256 of the key: the key itself never leaves the
                 VM) and owned policies "SP NS SRC DST DIR REQID ACTION"; "NS NS absent" for a
                 namespace that does not exist
  check LAYOUT SNAPSHOT [--gone HOST...]
                 every directed pair of LAYOUT has its SA out on the sender and in on the receiver
                 with the same SPI, reqid and key hash, each host has exactly those SAs, and no SA
                 or policy anywhere names a --gone host (its namespace has none left)
  traffic LAYOUT BEFORE AFTER [--involving HOST]
                 every directed pair's SA counted more packets in AFTER than in BEFORE on both ends
  kept LAYOUT BEFORE AFTER
                 every directed pair of LAYOUT has the same SPI, reqid and key hash in AFTER as in BEFORE
  empty SNAPSHOT  no owned SA or policy in any namespace
Each check prints one summary line (and one line per problem, never a key) and exits 1 on a problem.
"""

import argparse
import hashlib
import re
import subprocess
import sys

OWNED = (0x51C00000, 0x51C0FFFF)
PREFIX = "10.77.0."
DEV = "veth0"
GROUP = "ipsec_mesh"
_NAME = re.compile(r"^mesh([1-9][0-9]{0,2})$")


class MeshError(Exception):
    pass


def host_number(name):
    m = _NAME.match(name)
    if not m or not 1 <= int(m.group(1)) <= 254:
        raise MeshError("%r: a mesh host is named meshK, K = 1..254" % name)
    return int(m.group(1))


def address(name):
    return PREFIX + str(host_number(name))


def parse_layout(text):
    """'mesh1=1,mesh2=2' -> [('mesh1', 1), ('mesh2', 2)] in the given order; names unique, VM 1 or 2."""
    out, seen = [], set()
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        name, sep, vm = item.partition("=")
        if not sep or vm not in ("1", "2"):
            raise MeshError("%r: a layout entry is meshK=VM with VM 1 or 2" % item)
        host_number(name)
        if name in seen:
            raise MeshError("%s: listed twice in the layout" % name)
        seen.add(name)
        out.append((name, int(vm)))
    if len(out) < 2:
        raise MeshError("a mesh needs at least 2 hosts")
    return out


def directed_pairs(layout, involving=None):
    """Every ordered (sender, receiver) of a full mesh: n(n-1) of them; with involving, those with that host at one end."""
    names = [h for h, _vm in layout]
    return [(a, b) for a in names for b in names if a != b and (involving is None or involving in (a, b))]


def inventory(layout, ports, key, known_hosts):
    """The YAML text of the inventory (plain scalars only, so no YAML library is needed)."""
    lines = ["# Written by lab/mesh.sh (lab/mesh.py inventory): %d hosts in network namespaces of the lab pair." % len(layout),
             "all:", "  children:", "    %s:" % GROUP, "      hosts:"]
    for name, vm in layout:
        if vm not in ports:
            raise MeshError("no SSH port given for VM %d (--port %d=PORT)" % (vm, vm))
        lines += ["        %s:" % name,
                  "          ansible_port: %d" % ports[vm],
                  "          mesh_vm: %d" % vm,
                  "          ipsec_namespace: %s" % name,
                  "          ipsec_local_ip: %s" % address(name)]
    lines += ["      vars:",
              "        ansible_host: 127.0.0.1",
              "        ansible_user: root",
              "        ansible_ssh_private_key_file: %s" % key,
              "        ansible_python_interpreter: /usr/bin/python3",
              "        ansible_ssh_common_args: >-",
              "          -o UserKnownHostsFile=%s -o StrictHostKeyChecking=accept-new" % known_hosts,
              "          -o IdentitiesOnly=yes -o ServerAliveInterval=15",
              "        ansible_ssh_pipelining: true",
              "        ipsec_meshes: [%s]" % GROUP,
              "        ipsec_dev: %s" % DEV,
              "        # veth has no IPsec offload: software ESP, a lab-only setting",
              "        ipsec_offload: none",
              "        ipsec_mode: transport"]
    return "\n".join(lines) + "\n"


# --- on the VM ---------------------------------------------------------------------------------------

def _owned(reqid):
    return reqid is not None and OWNED[0] <= reqid <= OWNED[1]


def _hex(value):
    """A 32-bit number as the snapshot writes it (0x + 8 hex digits)."""
    return "0x%08x" % int(value)


def _xfrm_parsers():
    """(parse_states, parse_policies) of the collection (plugins/module_utils/_xfrm_text.py).  On a VM
    (snapshot) that file's text runs in front of this one, so they are globals here; on the
    controller (tests) the file is loaded from the tree."""
    g = globals()
    if "parse_states" in g and "parse_policies" in g:
        return g["parse_states"], g["parse_policies"]
    import importlib.util  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins", "module_utils", "_xfrm_text.py")
    spec = importlib.util.spec_from_file_location("_xfrm_text", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.parse_states, mod.parse_policies


def owned_sa_lines(ns, text):
    """`ip -s xfrm state list` (with keys) -> SA lines of the owned SAs; the key only as a hash."""
    out = []
    for sa in _xfrm_parsers()[0](text):
        if sa["spi"] is None or not _owned(sa["reqid"]):
            continue
        key = (sa["aead"] or {}).get("key")
        keyhash = hashlib.sha256(("0x" + key).encode()).hexdigest()[:16] if key else "-"
        packets = (sa["stats"] or {}).get("packets") or 0
        out.append("SA %s %s %s %s %s %d %s" % (ns, sa["src"], sa["dst"], _hex(sa["spi"]), _hex(sa["reqid"]), packets, keyhash))
    return out


def owned_sp_lines(ns, text):
    """`ip xfrm policy list` -> SP lines of the owned policies (reqid of the first template in the range)."""
    out = []
    for sp in _xfrm_parsers()[1](text):
        reqid = sp["tmpls"][0]["reqid"] if sp["tmpls"] else None
        if _owned(reqid):
            out.append("SP %s %s %s %s %s %s" % (ns, sp["src"].split("/")[0], sp["dst"].split("/")[0], sp["dir"] or "?",
                                                 _hex(reqid), sp["action"]))
    return out


def snapshot(namespaces, run=subprocess.run):
    out = []
    present = run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    for ns in namespaces:
        if ns not in present:
            out.append("NS %s absent" % ns)
            continue
        sa = run(["ip", "-n", ns, "-s", "xfrm", "state", "list"], capture_output=True, text=True, check=True).stdout
        sp = run(["ip", "-n", ns, "xfrm", "policy", "list"], capture_output=True, text=True, check=True).stdout
        out += owned_sa_lines(ns, sa) + owned_sp_lines(ns, sp)
    return out


# --- on the controller -------------------------------------------------------------------------------

def read_snapshot(lines):
    """SA/SP lines -> (sas {ns: {(src, dst): (spi, reqid, packets, keyhash)}}, sps {ns: [(src, dst, dir, reqid, action)]}, dup)."""
    sas, sps, dup = {}, {}, []
    for line in lines:
        w = line.split()
        if w[:1] == ["SA"] and len(w) == 8:
            ns, ident = w[1], (w[2], w[3])
            if ident in sas.setdefault(ns, {}):
                dup.append("%s: two owned SAs %s -> %s" % (ns, w[2], w[3]))
            sas[ns][ident] = (w[4], w[5], int(w[6]), w[7])
        elif w[:1] == ["SP"] and len(w) == 7:
            sps.setdefault(w[1], []).append(tuple(w[2:]))
    return sas, sps, dup


def check(layout, lines, gone=()):
    """Problems (a list of lines) of a snapshot against the layout's full mesh; [] when it is exact."""
    sas, sps, problems = read_snapshot(lines)
    names = [h for h, _vm in layout]
    for a, b in directed_pairs(layout):
        ident = (address(a), address(b))
        out_sa, in_sa = sas.get(a, {}).get(ident), sas.get(b, {}).get(ident)
        if out_sa is None or in_sa is None:
            problems.append("%s -> %s: SA missing on %s" % (a, b, " and ".join(
                h for h, sa in ((a, out_sa), (b, in_sa)) if sa is None)))
        elif (out_sa[0], out_sa[1], out_sa[3]) != (in_sa[0], in_sa[1], in_sa[3]):
            problems.append("%s -> %s: the two ends differ (SPI %s/%s, reqid %s/%s, key hash %s)"
                            % (a, b, out_sa[0], in_sa[0], out_sa[1], in_sa[1],
                               "same" if out_sa[3] == in_sa[3] else "different"))
        for end, d in ((a, "out"), (b, "in")):
            if not any(p[:3] == (ident[0], ident[1], d) and p[4] == "allow" for p in sps.get(end, [])):
                problems.append("%s -> %s: no dir %s policy on %s" % (a, b, d, end))
    for h in names:
        want = {(address(h), address(p)) for p in names if p != h} | {(address(p), address(h)) for p in names if p != h}
        extra = set(sas.get(h, {})) - want
        if extra:
            problems.append("%s: %d owned SA(s) outside the mesh: %s" % (h, len(extra), ", ".join("%s>%s" % s for s in sorted(extra))))
        extra_sp = {p[:2] for p in sps.get(h, [])} - want
        if extra_sp:
            problems.append("%s: owned policies outside the mesh: %s" % (h, ", ".join("%s>%s" % s for s in sorted(extra_sp))))
    for g in gone:
        addr = address(g)
        left = sorted("%s:%s>%s" % (ns, s, d) for ns, v in sas.items() for (s, d) in v if addr in (s, d) or ns == g)
        left_sp = sorted("%s:%s>%s %s" % (ns, p[0], p[1], p[2]) for ns, v in sps.items() for p in v if addr in p[:2] or ns == g)
        if left or left_sp:
            problems.append("%s (gone): %d SA(s) and %d policy(ies) left: %s" % (g, len(left), len(left_sp), " ".join((left + left_sp)[:8])))
    return problems


def traffic(layout, before, after, involving=None):
    """(rose, problems): a directed pair rose when its SA counted more packets on both ends."""
    b_sas = read_snapshot(before)[0]
    a_sas = read_snapshot(after)[0]
    rose, problems = 0, []
    for a, b in directed_pairs(layout, involving):
        ident = (address(a), address(b))
        ends = []
        for end in (a, b):
            new = a_sas.get(end, {}).get(ident)
            old = b_sas.get(end, {}).get(ident)
            if new is None:
                ends.append("%s: no SA" % end)
            elif old is not None and old[0] == new[0] and new[2] <= old[2]:
                ends.append("%s: %d -> %d packets" % (end, old[2], new[2]))
            elif new[2] == 0:
                ends.append("%s: 0 packets" % end)
        if ends:
            problems.append("%s -> %s did not carry traffic (%s)" % (a, b, "; ".join(ends)))
        else:
            rose += 1
    return rose, problems


def kept(layout, before, after):
    """(same, problems): a directed pair is kept when both ends show the same SPI, reqid and key hash as before."""
    b_sas = read_snapshot(before)[0]
    a_sas = read_snapshot(after)[0]
    same, problems = 0, []
    for a, b in directed_pairs(layout):
        ident = (address(a), address(b))
        diff = []
        for end in (a, b):
            old, new = b_sas.get(end, {}).get(ident), a_sas.get(end, {}).get(ident)
            if old is None or new is None:
                diff.append("%s: SA %s" % (end, "missing before" if old is None else "missing after"))
                continue
            for i, what in ((0, "SPI"), (1, "reqid")):
                if old[i] != new[i]:
                    diff.append("%s: %s %s -> %s" % (end, what, old[i], new[i]))
            if old[3] != new[3]:
                diff.append("%s: key changed" % end)
        if diff:
            problems.append("%s -> %s changed (%s)" % (a, b, "; ".join(diff)))
        else:
            same += 1
    return same, problems


def _lines(path):
    with open(path, "r", encoding="utf-8") as fh:
        return [ln.rstrip("\n") for ln in fh if ln.strip()]


def _report(ok_line, problems):
    for p in problems:
        print("  " + p)
    print(("" if not problems else "FAIL: ") + ok_line)
    return 1 if problems else 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mesh.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inventory")
    p.add_argument("layout")
    p.add_argument("--port", action="append", default=[], help="VM=PORT")
    p.add_argument("--key", required=True)
    p.add_argument("--known-hosts", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("pairs")
    p.add_argument("layout")
    p.add_argument("--involving")
    p = sub.add_parser("snapshot")
    p.add_argument("namespaces", nargs="+")
    p = sub.add_parser("check")
    p.add_argument("layout")
    p.add_argument("snapshot")
    p.add_argument("--gone", nargs="*", default=[])
    for name in ("traffic", "kept"):
        p = sub.add_parser(name)
        p.add_argument("layout")
        p.add_argument("before")
        p.add_argument("after")
        if name == "traffic":
            p.add_argument("--involving")
    p = sub.add_parser("empty")
    p.add_argument("snapshot")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "snapshot":
            print("\n".join(snapshot(args.namespaces)))
            return 0
        if args.cmd == "empty":
            sas, sps = read_snapshot(_lines(args.snapshot))[:2]
            left = ["%s: %d owned SA(s), %d owned policy(ies)" % (ns, len(sas.get(ns, {})), len(sps.get(ns, [])))
                    for ns in sorted(set(sas) | set(sps))]
            return _report("no owned SA or policy in any namespace" if not left else "owned objects left", left)
        layout = parse_layout(args.layout)
        if args.cmd == "inventory":
            ports = {}
            for item in args.port:
                vm, _sep, port = item.partition("=")
                ports[int(vm)] = int(port)
            text = inventory(layout, ports, args.key, args.known_hosts)
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
            return 0
        if args.cmd == "pairs":
            if args.involving:
                host_number(args.involving)
            vm_of = dict(layout)
            for a, b in directed_pairs(layout, args.involving):
                print("%s %s %d %s %d" % (a, b, vm_of[a], address(b), vm_of[b]))
            return 0
        if args.cmd == "check":
            problems = check(layout, _lines(args.snapshot), args.gone)
            n = len(directed_pairs(layout))
            gone = (", none left of %s" % " ".join(args.gone)) if args.gone else ""
            return _report("%d hosts, %d directed SAs, each out on its sender and in on its receiver (same SPI, reqid, key hash), "
                           "no other owned SA%s" % (len(layout), n, gone), problems)
        before, after = _lines(args.before), _lines(args.after)
        if args.cmd == "traffic":
            rose, problems = traffic(layout, before, after, args.involving)
            n = len(directed_pairs(layout, args.involving))
            return _report("%d of %d directed SAs%s counted more packets on both ends"
                           % (rose, n, " with %s" % args.involving if args.involving else ""), problems)
        same, problems = kept(layout, before, after)
        return _report("%d of %d directed SAs kept SPI, reqid and key (compared by hash)" % (same, len(directed_pairs(layout))), problems)
    except (MeshError, OSError, ValueError) as exc:
        print("mesh.py: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
