# -*- coding: utf-8 -*-
"""A small stand-in for `ip xfrm` + the kernel's SAD/SPD, for the module tests.

It executes `ip -batch -` lines (state add/delete, policy add/update/delete) the way ip and the
kernel do (stop at the first error, rc 2, message on stderr, no "Command failed" line) and prints
`ip xfrm state|policy list` in iproute2's layout (tabs, trailing spaces, the order of
ip/ipxfrm.c).  The layout itself is checked against REAL captures in the _xfrm parser tests; this
simulator only has to be good enough to drive the modules through their paths.

Knobs: sa_dir (kernel+ip with the SA direction attribute), fallback_devs (crypto offload silently
stays in software), no_packet_devs (packet offload -> EINVAL), no_policy_offload_devs,
aead_missing (no ESP/GCM in the kernel), fail (callable(line) -> error text or None),
links (interface names).
"""

from __future__ import annotations

import shlex


def _kv(tokens, i):
    return tokens[i + 1] if i + 1 < len(tokens) else None


class XfrmSim:
    def __init__(self, states="", policies="", sa_dir=True, fallback_devs=(), no_packet_devs=(),
                 no_policy_offload_devs=(), aead_missing=False, fail=None, links=("lo", "eth0", "p0")):
        self.states = {}      # (dst, spi) -> dict
        self.policies = {}    # (src, dst, proto, sport, dport, dir) -> dict
        self.raw_states = states      # text of foreign objects printed before ours
        self.raw_policies = policies
        self.sa_dir = sa_dir
        self.fallback_devs = set(fallback_devs)
        self.no_packet_devs = set(no_packet_devs)
        self.no_policy_offload_devs = set(no_policy_offload_devs)
        self.aead_missing = aead_missing
        self.fail = fail
        self.links = list(links)
        self.batches = []

    # ---- entry point for FakeHost ---------------------------------------------------------
    def __call__(self, argv, stdin):
        args = argv[1:]
        if args and args[0] == "-n":
            self.namespaces = getattr(self, "namespaces", set()) | {args[1]}
            args = args[2:]
        if args == ["xfrm", "state", "list"]:
            return 0, self.raw_states + self.state_text(), ""
        if args == ["xfrm", "policy", "list"]:
            return 0, self.raw_policies + self.policy_text(), ""
        if args == ["-o", "link", "show"]:
            return 0, "".join("%d: %s: <BROADCAST,UP> mtu 1500\n" % (i + 1, n) for i, n in enumerate(self.links)), ""
        if args == ["-batch", "-"]:
            self.batches.append(stdin)
            for line in stdin.splitlines():
                err = self.execute(line)
                if err:
                    return err
            return 0, "", ""
        raise AssertionError("xfrm_sim: unexpected ip command %r" % (argv,))

    # ---- commands -------------------------------------------------------------------------
    def execute(self, line):
        if self.fail:
            msg = self.fail(line)
            if msg:
                return 2, "", msg + "\n"
        t = shlex.split(line)
        if t[:3] == ["xfrm", "state", "add"]:
            return self._state_add(t[3:])
        if t[:3] == ["xfrm", "state", "delete"]:
            k = (_kv(t, t.index("dst")), int(_kv(t, t.index("spi")), 0))
            if k not in self.states:
                return 2, "", "RTNETLINK answers: No such process\n"
            del self.states[k]
            return None
        if t[:2] == ["xfrm", "policy"] and t[2] in ("add", "update", "delete"):
            return self._policy(t[2], t[3:])
        return 255, "", "Command \"%s\" is unknown, try \"ip help\".\n" % t[0]

    def _state_add(self, t):
        sa = {"src": None, "dst": None, "spi": None, "reqid": 0, "mode": "transport", "dir": None, "window": 0,
              "esn": False, "aead": None, "sel": None, "offload": None}
        i = 0
        while i < len(t):
            w = t[i]
            if w in ("src", "dst", "mode", "dir"):
                sa[w] = t[i + 1]
                i += 2
            elif w == "proto":
                i += 2
            elif w == "spi":
                sa["spi"] = int(t[i + 1], 0)
                i += 2
            elif w == "reqid":
                sa["reqid"] = int(t[i + 1], 0)
                i += 2
            elif w == "replay-window":
                sa["window"] = int(t[i + 1])
                i += 2
            elif w == "flag":
                sa["esn"] = t[i + 1] == "esn"
                i += 2
            elif w == "aead":
                sa["aead"] = (t[i + 1], t[i + 2].lower(), int(t[i + 3]))
                i += 4
            elif w == "sel":
                sel = {}
                i += 1
                while i < len(t) and t[i] in ("src", "dst", "proto", "sport", "dport"):
                    sel[t[i]] = t[i + 1]
                    i += 2
                sa["sel"] = sel
            elif w == "offload":
                i += 1
                mode = "crypto"
                if t[i] in ("packet", "crypto"):
                    mode = t[i]
                    i += 1
                dev = t[i + 1]
                odir = t[i + 3]
                i += 4
                if dev not in self.links:
                    return 255, "", "Error: argument \"%s\" is wrong: value after \"offload dev\" is invalid\n" % dev
                sa["offload"] = (dev, odir, mode)
                sa["dir"] = odir if self.sa_dir else sa["dir"]
            else:
                return 255, "", "Error: unknown token %s\n" % w
        if not self.sa_dir:
            sa["dir"] = None
        if self.aead_missing:
            return 2, "", "Error: Requested AEAD algorithm not found.\n"
        if sa["dir"] == "out" and sa["window"]:
            return 2, "", "Error: Replay window should be 0 for output SA.\n"
        if sa["esn"] and not sa["window"] and sa["dir"] != "out":
            return 2, "", "Error: ESN replay window must be > 0.\n"
        k = (sa["dst"], sa["spi"])
        if k in self.states:
            return 2, "", "RTNETLINK answers: File exists\n"
        if sa["offload"] is not None:
            dev, mode = sa["offload"][0], sa["offload"][2]
            if mode == "packet" and dev in self.no_packet_devs:
                return 2, "", "RTNETLINK answers: Invalid argument\n"
            if mode == "crypto" and dev in self.fallback_devs:
                sa["offload"] = None  # silently software
        self.states[k] = sa
        return None

    def _policy(self, verb, t):
        sp = {"src": None, "dst": None, "proto": None, "sport": None, "dport": None, "dir": None, "action": "allow",
              "priority": 0, "tmpl": None, "offload": None, "mark": None}
        i = 0
        while i < len(t):
            w = t[i]
            if w in ("src", "dst", "dir", "action", "proto", "sport", "dport") and sp["tmpl"] is None:
                sp[w] = t[i + 1]
                i += 2
            elif w == "priority":
                sp["priority"] = int(t[i + 1])
                i += 2
            elif w == "ptype":
                i += 2
            elif w == "mark" and sp["tmpl"] is None:
                sp["mark"] = (int(t[i + 1], 0), int(t[i + 3], 0) if t[i + 2:i + 3] == ["mask"] else 0xFFFFFFFF)
                i += 4 if t[i + 2:i + 3] == ["mask"] else 2
            elif w == "offload":
                dev = t[i + 3]
                if dev not in self.links:
                    return 255, "", "Error: argument \"%s\" is wrong: Invalid device name\n" % dev
                sp["offload"] = dev
                i += 4
            elif w == "tmpl":
                sp["tmpl"] = {"src": "0.0.0.0", "dst": "0.0.0.0", "reqid": 0, "mode": "transport", "level": "required"}
                i += 1
            elif sp["tmpl"] is not None and w in ("src", "dst", "mode", "level"):
                sp["tmpl"][w] = t[i + 1]
                i += 2
            elif sp["tmpl"] is not None and w == "reqid":
                sp["tmpl"]["reqid"] = int(t[i + 1], 0)
                i += 2
            elif sp["tmpl"] is not None and w == "proto":
                i += 2
            else:
                return 255, "", "Error: unknown token %s\n" % w
        # the kernel's identity: selector, dir and the mark (value and mask compared exactly)
        k = (sp["src"], sp["dst"], sp["proto"], sp["sport"], sp["dport"], sp["dir"], sp["mark"] or (0, 0))
        if verb == "delete":
            if k not in self.policies:
                return 2, "", "RTNETLINK answers: No such file or directory\n"
            del self.policies[k]
            return None
        if verb == "add" and k in self.policies:
            return 2, "", "RTNETLINK answers: File exists\n"
        if sp["offload"] and sp["offload"] in self.no_policy_offload_devs:
            return 2, "", "Error: Policy offload is not supported.\n"
        self.policies[k] = sp
        return None

    # ---- printing (iproute2 layout) ---------------------------------------------------------
    def state_text(self):
        out = []
        for sa in self.states.values():
            out.append("src %s dst %s\n" % (sa["src"], sa["dst"]))
            out.append("\tproto esp spi 0x%08x reqid %d mode %s\n" % (sa["spi"], sa["reqid"], sa["mode"]))
            esn_attr = sa["esn"] or sa["window"] > 32
            out.append("\treplay-window %d %s\n" % (0 if esn_attr else sa["window"], "flag esn" if sa["esn"] else ""))
            name, key, icv = sa["aead"]
            out.append("\taead %s %s %d\n" % (name, key, icv))
            if esn_attr:
                bmp = (sa["window"] + 31) // 32
                out.append("\tanti-replay esn context:\n\t seq-hi 0x0, seq 0x0, oseq-hi 0x0, oseq 0x0\n")
                out.append("\t replay_window %d, bitmap-length %d" % (sa["window"], bmp))
                if bmp:
                    out.append("\n\t " + "00000000 " * bmp)
                out.append("\n")
            else:
                out.append("\tanti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000\n")
            if sa["offload"]:
                out.append("\tcrypto offload parameters: dev %s dir %s mode %s\n" % sa["offload"])
            if sa["dir"]:
                out.append("\tdir %s\n" % sa["dir"])
            sel = sa["sel"] or {}
            zero = "::/0" if ":" in sa["dst"] else "0.0.0.0/0"
            line = "\tsel src %s dst %s " % (self._pfx(sel.get("src"), zero), self._pfx(sel.get("dst"), zero))
            for f in ("proto", "sport", "dport"):
                if sel.get(f):
                    line += "%s %s " % (f, sel[f])
            out.append(line + "\n")
        return "".join(out)

    @staticmethod
    def _pfx(v, zero):
        if v is None:
            return zero
        return v if "/" in v else v + ("/128" if ":" in v else "/32")

    def policy_text(self):
        out = []
        for sp in self.policies.values():
            line = "src %s dst %s " % (self._pfx(sp["src"], None), self._pfx(sp["dst"], None))
            for f in ("proto", "sport", "dport"):
                if sp[f]:
                    line += "%s %s " % (f, sp[f])
            out.append(line + "\n")
            out.append("\tdir %s %spriority %d ptype main \n" % (
                sp["dir"], "action block " if sp["action"] == "block" else "", sp["priority"]))
            if sp.get("mark") and sp["mark"] != (0, 0):
                # iproute2 prints it with %#x: 0 as "0", others as 0x...
                out.append("\tmark %s/%s \n" % tuple("0" if v == 0 else "0x%x" % v for v in sp["mark"]))
            t = sp["tmpl"]
            if t:
                out.append("\ttmpl src %s dst %s\n\t\tproto esp reqid %d mode %s\n"
                           % (t["src"], t["dst"], t["reqid"], t["mode"]))
                if t["level"] == "use":
                    out.append("\t\tlevel use \n")
            if sp["offload"]:
                out.append("\tcrypto offload parameters: dev %s mode packet\n" % sp["offload"])
        return "".join(out)
