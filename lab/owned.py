"""What the lab suites read of a VM's xfrm objects, tc rules and IKE daemon, with the collection's
own parsers (plugins/module_utils: _xfrm_text for `ip xfrm`, _guard for what a guard is, _tc for
`tc -j`, _ethtool for `ethtool -S`, _kernel for /proc/net/xfrm_stat; plugins/plugin_utils/_ike for
the daemons' status), on the controller.  The text comes on stdin; one number, or one item per line,
goes out:

    ip xfrm state list nokeys      | owned.py sas        # owned SAs
    ip -s xfrm state list nokeys   | owned.py packets    # packets counted by owned SAs
    ip xfrm state list nokeys      | owned.py ids        # owned SAs as "src>dst:0xSPI", sorted
    ip xfrm state list nokeys      | owned.py spis       # their SPIs (0x%08x), sorted
    ip xfrm state list nokeys      | owned.py deletes    # "xfrm state delete ..." lines (ip -batch)
    ip xfrm state list [nokeys]    | owned.py sa-objects # each SA as one JSON line, sorted, without
                                                         # its counters, its key as a SHA-256
    ip xfrm policy list            | owned.py sps        # owned policies (SA policies and guards)
    ip xfrm policy list            | owned.py sp-objects # each policy as one JSON line, sorted
    ip xfrm policy list            | owned.py guards     # the collection's guards (_guard.is_guard)
    (echo '#dev link0'; tc -j filter show dev link0 ingress; ...) | owned.py tc          # owned rules
    (echo '#dev link0'; tc -j filter show dev link0 ingress; ...) | owned.py tc-objects  # each rule as
                                                  # one JSON line [dev, rule], sorted, without counters
    (echo '#dev link0'; tc -j qdisc show dev link0; ...) | owned.py qdiscs   # "DEV ingress|clsact"
    swanctl --list-sas             | owned.py ike-status strongswan   # "I IKE / C CHILD"
    ipsec trafficstatus            | owned.py ike-status libreswan    # "C CHILD"
    swanctl --list-sas             | owned.py ike-spis strongswan     # the daemon's SPIs, sorted
    ipsec whack --showstates       | owned.py ike-spis libreswan
    ethtool -S DEV                 | owned.py ethtool NAME...         # their values, "/"-joined ("?": none)
    cat /proc/net/xfrm_stat        | owned.py xfrm-stat NAME          # one counter
    cat /proc/net/xfrm_stat        | owned.py xfrm-stat-delta BEFORE  # "Name +N ..." of those that moved
                                                                      # since the file BEFORE

Owned: as the modules decide it (_xfrm.SAKind / SPKind .owned: an SA whose reqid, a policy all of
whose templates' reqids, are in the collection's owned range); a tc filter whose first action carries the collection's cookie; an IKE
connection named ipsec_offload_mlx5-*.  The xfrm selections take options:

    --all              every object, owned or not;  --foreign: only those not owned
    --among A B ...    only objects whose source and destination addresses are both among these
    --except-spi SPI   not the SA with this SPI (repeatable; 0 leaves out larval/acquire states)
    --offload DEV[:MODE]  only objects offloaded to netdev DEV (in MODE: crypto or packet)

--all and --foreign select tc rules too.  For tc, each device's `tc -j` output follows a line
"#dev NAME" (no output: no ingress qdisc, no filter).  The collection is imported from ANSIBLE_COLLECTIONS_PATH (lab/lib.sh's lab_start points it
at the work tree)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys


def _utils():
    """The collection's module_utils / plugin_utils modules this file reads with, by name."""
    for path in reversed([p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]):
        if path not in sys.path:
            sys.path.insert(0, path)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _ethtool, _guard, _kernel, _tc, _xfrm, _xfrm_text
    from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _ike
    return {"xfrm_text": _xfrm_text, "tc": _tc, "xfrm": _xfrm, "guard": _guard, "ike": _ike, "ethtool": _ethtool,
            "kernel": _kernel}


def _spi(text):
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError("--except-spi %r is not a number" % text) from None


class Selection:
    """Which xfrm objects a count or a list takes (the options above)."""

    def __init__(self, opts):
        self.who = "all" if opts.all else "foreign" if opts.foreign else "owned"
        self.among = set(opts.among) if opts.among is not None else None
        self.except_spi = {_spi(s) for s in opts.except_spi or []}
        dev, _sep, mode = (opts.offload or "").partition(":")
        self.dev, self.mode = dev or None, mode or None

    def take(self, obj, kind):
        """Whether ``obj`` is taken; ``kind`` (_xfrm.SAKind / SPKind) says whether it is owned."""
        if self.who != "all" and kind.owned(obj) != (self.who == "owned"):
            return False
        if self.among is not None and not {(obj.get(k) or "").split("/")[0] for k in ("src", "dst")} <= self.among:
            return False
        if obj.get("spi") in self.except_spi:
            return False
        off = obj.get("offload") or {}
        return self.dev is None or (off.get("dev") == self.dev and self.mode in (None, off.get("type")))


def _sas(text, sel, utils):
    kind = utils["xfrm"].SAKind()
    return [sa for sa in utils["xfrm_text"].parse_states(text) if sel.take(sa, kind)]


def _sps(text, sel, utils):
    kind = utils["xfrm"].SPKind()
    return [sp for sp in utils["xfrm_text"].parse_policies(text) if sel.take(sp, kind)]


def _per_dev(text):
    """[(dev, text)] of input where each device's output follows a line "#dev NAME"."""
    out, dev, body = [], None, []
    for line in text.splitlines() + ["#dev"]:
        if line.startswith("#dev"):
            if dev is not None:
                out.append((dev, "\n".join(body)))
            dev, body = line[len("#dev"):].strip(), []
        else:
            body.append(line)
    return out


def _tc_filters(text, sel, utils):
    """The selected filters (owned: the collection's cookie) of "#dev NAME" + `tc -j filter show` input."""
    found = [f for dev, body in _per_dev(text) for f in utils["tc"].parse_filters(dev, body)]
    return [f for f in found if sel.who == "all" or f["owned"] == (sel.who == "owned")]


def _qdiscs(text, utils):
    """"DEV KIND" of the ingress hook qdiscs in "#dev NAME" + `tc -j qdisc show dev NAME` input (tc
    names no device in the objects when the dump was asked for one: the "#dev" line's is taken)."""
    tc, found = utils["tc"], {}
    for dev, body in _per_dev(text):
        data = [dict(q, dev=q.get("dev") or dev) for q in tc.load_json(body, "tc -j qdisc show dev %s" % dev)
                if isinstance(q, dict)]
        found.update(tc.parse_qdiscs(json.dumps(data)))
    return sorted("%s %s" % kv for kv in found.items())


def _ike(what, backend, text, utils):
    ike = utils["ike"]
    prefix = ike.CONN_PREFIX + "-"
    if backend == "strongswan":
        conns = [s for s in ike.parse_swanctl_sas(text) if s["name"].startswith(prefix)]
        children = [c for s in conns for c in s["children"] if c["name"].startswith(prefix)]
        if what == "ike-status":
            return ["%d IKE / %d CHILD" % (sum(1 for s in conns if s["state"] == "ESTABLISHED"),
                                           sum(1 for c in children if c["state"] == "INSTALLED"))]
        spis = [c[k] for c in children for k in ("spi_in", "spi_out") if c[k]]
    elif what == "ike-status":
        return ["%d CHILD" % sum(1 for r in ike.parse_trafficstatus(text) if r["name"].startswith(prefix))]
    else:
        # every CHILD_SA state, superseded ones too: their SAs are in the kernel as long as they are
        spis = [s[k] for s in ike.parse_showstates(text, newest=False) for k in ("spi_in", "spi_out")]
    return sorted({"0x%08x" % int(s, 16) for s in spis})


VOLATILE = ("stats", "counters", "seq_tokens")  # what traffic and time change in an SA left alone


def _steady(obj):
    """A parsed SA or policy as one JSON line, without what traffic and time change, a key as its hash."""
    out = {k: v for k, v in obj.items() if k not in VOLATILE}
    if (out.get("aead") or {}).get("key"):
        out["aead"] = dict(out["aead"], key="sha256:" + hashlib.sha256(out["aead"]["key"].encode()).hexdigest())
    return json.dumps(out, sort_keys=True)


SA_VIEWS = {
    "sas": lambda sas: [str(len(sas))],
    "packets": lambda sas: [str(sum((sa.get("stats") or {}).get("packets") or 0 for sa in sas))],
    "ids": lambda sas: sorted("%s>%s:0x%08x" % (sa["src"], sa["dst"], sa["spi"] or 0) for sa in sas),
    "spis": lambda sas: sorted("0x%08x" % (sa["spi"] or 0) for sa in sas),
    "deletes": lambda sas: ["xfrm state delete src %s dst %s proto %s spi 0x%08x" % (sa["src"], sa["dst"], sa["proto"], sa["spi"] or 0)
                            for sa in sas],
    "sa-objects": lambda sas: sorted(map(_steady, sas)),
}


def _options(what, argv):
    """The xfrm selection options of a view (nothing else is taken)."""
    parser = argparse.ArgumentParser(prog="owned.py " + what, add_help=False, exit_on_error=False)
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--foreign", action="store_true")
    parser.add_argument("--among", nargs="+")
    parser.add_argument("--except-spi", action="append")
    parser.add_argument("--offload")
    try:
        opts, extra = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise ValueError("%s: %s" % (what, exc)) from None
    if extra:
        raise ValueError("%s: unknown arguments %s" % (what, " ".join(extra)))
    if opts.all and opts.foreign:
        raise ValueError("%s: --all and --foreign exclude each other" % what)
    return opts


def _ethtool(text, names, utils):
    stats = utils["ethtool"].parse_stats(text, prefix=None)
    return ["/".join(str(stats.get(n, "?")) for n in names)]


def _xfrm_stat_delta(text, before_file, utils):
    parse = utils["kernel"].parse_xfrm_stat
    with open(before_file, encoding="utf-8") as f:
        before = parse(f.read())
    after = parse(text)
    return [" ".join("%s %+d" % (k, v - before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0))]


def read(what, text, argv=()):
    """The lines `owned.py WHAT ARGV...` prints for `text`."""
    argv = list(argv)
    utils = _utils()
    if what in ("ike-status", "ike-spis"):
        if len(argv) != 1 or argv[0] not in ("strongswan", "libreswan"):
            raise ValueError("%s needs one argument, the backend: strongswan or libreswan" % what)
        return _ike(what, argv[0], text, utils)
    if what == "ethtool":
        if not argv:
            raise ValueError("ethtool needs the names of the counters")
        return _ethtool(text, argv, utils)
    if what == "xfrm-stat":
        if len(argv) != 1:
            raise ValueError("xfrm-stat needs one argument, the counter's name")
        return [str(utils["kernel"].parse_xfrm_stat(text).get(argv[0], "?"))]
    if what == "xfrm-stat-delta":
        if len(argv) != 1:
            raise ValueError("xfrm-stat-delta needs one argument, the file of the counters before")
        return _xfrm_stat_delta(text, argv[0], utils)
    sel = Selection(_options(what, argv))
    if what in SA_VIEWS:
        return SA_VIEWS[what](_sas(text, sel, utils))
    if what == "sps":
        return [str(len(_sps(text, sel, utils)))]
    if what == "sp-objects":
        return sorted(map(_steady, _sps(text, sel, utils)))
    if what == "guards":
        return [str(sum(1 for sp in _sps(text, sel, utils) if utils["guard"].is_guard(sp)))]
    if what == "tc":
        return [str(len(_tc_filters(text, sel, utils)))]
    if what == "tc-objects":
        return utils["tc"].fingerprint(_tc_filters(text, sel, utils))
    if what == "qdiscs":
        return _qdiscs(text, utils)
    raise ValueError("unknown view %r (%s)" % (what, ", ".join(VIEWS)))


VIEWS = list(SA_VIEWS) + ["sps", "sp-objects", "guards", "tc", "tc-objects", "qdiscs", "ike-status", "ike-spis", "ethtool", "xfrm-stat",
                          "xfrm-stat-delta"]


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: owned.py %s [ARGS] < TEXT" % "|".join(VIEWS))
    try:
        lines = read(argv[1], sys.stdin.read(), argv[2:])
    except (ValueError, OSError) as exc:  # unknown view or argument, a missing file, tc output that is not JSON
        sys.exit("owned.py: %s" % exc)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main(sys.argv)
