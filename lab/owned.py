"""What the lab suites count of the collection's objects on a VM, read with the collection's own
parsers (plugins/module_utils: _xfrm_text for `ip xfrm`, _tc for `tc -j`), on the controller:

    ip xfrm state list nokeys      | python3 lab/owned.py sas       # owned SAs
    ip xfrm policy list            | python3 lab/owned.py sps       # owned SA policies (and guards)
    ip -s xfrm state list nokeys   | python3 lab/owned.py packets   # packets counted by owned SAs
    (echo '#dev link0'; tc -j filter show dev link0 ingress; ...) | python3 lab/owned.py tc

Owned: an SA whose reqid, a policy one of whose templates' reqid, is in the collection's owned range
(_xfrm.OWNED_REQID_RANGE); a tc filter whose first action carries the collection's cookie.  For tc,
each device's `tc -j` output follows a line "#dev NAME" (no output: no ingress qdisc, no filter).
Prints one number.  The collection is imported from ANSIBLE_COLLECTIONS_PATH (lab/lib.sh's
lab_start points it at the work tree)."""
from __future__ import annotations

import os
import sys


def _utils():
    """(_xfrm_text, _tc, owned reqid range) of the collection."""
    for path in reversed([p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]):
        if path not in sys.path:
            sys.path.insert(0, path)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _tc, _xfrm, _xfrm_text
    return _xfrm_text, _tc, _xfrm.OWNED_REQID_RANGE


def _in(rng, reqid):
    return reqid is not None and rng[0] <= reqid <= rng[1]


def owned_sas(text):
    xt, dummy, rng = _utils()
    return [sa for sa in xt.parse_states(text) if _in(rng, sa.get("reqid"))]


def count(what, text):
    """The number `what` (sas, sps, packets, tc) counts in `text`."""
    xt, tc, rng = _utils()
    if what == "sas":
        return len(owned_sas(text))
    if what == "packets":
        return sum((sa.get("stats") or {}).get("packets") or 0 for sa in owned_sas(text))
    if what == "sps":
        return sum(1 for sp in xt.parse_policies(text) if any(_in(rng, t.get("reqid")) for t in sp.get("tmpls") or []))
    if what == "tc":
        n, dev, body = 0, None, []
        for line in text.splitlines() + ["#dev"]:
            if line.startswith("#dev"):
                if dev is not None:
                    n += sum(1 for f in tc.parse_filters(dev, "\n".join(body)) if f["owned"])
                dev, body = line[len("#dev"):].strip(), []
            else:
                body.append(line)
        return n
    raise ValueError("unknown count %r (sas, sps, packets, tc)" % what)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: owned.py sas|sps|packets|tc < TEXT")
    try:
        print(count(argv[1], sys.stdin.read()))
    except ValueError as exc:  # unknown count, or tc output that is not JSON (_tc.ParseError)
        sys.exit("owned.py: %s" % exc)


if __name__ == "__main__":
    main(sys.argv)
