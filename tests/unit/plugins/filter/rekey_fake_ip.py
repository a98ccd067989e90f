# -*- coding: utf-8 -*-
"""A stand-in `ip` executable for the rekey.yml playbook test: tests/unit/xfrm_sim.XfrmSim with
its SAD/SPD kept per network namespace in a pickle under $FAKE_IP_DIR, so that a whole
ansible-playbook run (local connection, modules as subprocesses) sees one consistent "kernel".

The host kernel here has no ESP/GCM, so a real apply of AES-GCM SAs is impossible; the parsers and
the batch handling the modules rely on are checked against REAL captures elsewhere.

Knobs (environment): FAKE_IP_FAIL_ON - a batch line containing this text fails like the kernel
refusing it (to interrupt a rekey part way); FAKE_IP_FAIL_NS limits that to one namespace.  Every batch is appended to $FAKE_IP_DIR/batches.log.
"""

from __future__ import annotations

import os
import pickle
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from xfrm_sim import XfrmSim  # noqa: E402  (tests/unit)

HELP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "info",
                    "ip_xfrm_state_help_iproute2_6.2plus_DERIVED.txt")


def main(argv):
    base = os.environ["FAKE_IP_DIR"]
    args = list(argv[1:])
    ns = "_init"
    if args[:1] == ["-n"]:
        ns = args[1]
        args = args[2:]
    if args == ["-V"]:
        sys.stdout.write("ip utility, iproute2-6.15.0\n")
        return 0
    if args == ["netns", "list"]:
        sys.stdout.write("".join("%s\n" % n[:-4] for n in sorted(os.listdir(base)) if n.endswith(".sim")))
        return 0
    if args[:3] == ["xfrm", "state", "help"]:
        with open(HELP, encoding="utf-8") as fh:
            text = "".join(ln for ln in fh if not ln.startswith("#"))
        sys.stderr.write(text)
        return 255
    path = os.path.join(base, ns + ".sim")
    sim = XfrmSim(links=("lo", "link0"))
    if os.path.exists(path):
        with open(path, "rb") as fh:
            sim = pickle.load(fh)
    if args in (["-s", "xfrm", "state", "list", "nokeys"], ["-s", "xfrm", "state", "list"]):
        args = ["xfrm", "state", "list"]
    fail_on = os.environ.get("FAKE_IP_FAIL_ON")
    if os.environ.get("FAKE_IP_FAIL_NS") not in (None, ns):
        fail_on = None
    sim.fail = (lambda line: "RTNETLINK answers: Operation not permitted" if fail_on in line else None) if fail_on else None
    stdin = sys.stdin.read() if args == ["-batch", "-"] else ""
    try:
        rc, out, err = sim([argv[0]] + args, stdin)
    except AssertionError as e:
        sys.stderr.write("fake ip: %s\n" % e)
        return 1
    sim.fail = None
    if args == ["-batch", "-"]:
        with open(os.path.join(base, "batches.log"), "a", encoding="utf-8") as fh:
            fh.write("# %s rc=%d\n%s" % (ns, rc, stdin))
    with open(path, "wb") as fh:
        pickle.dump(sim, fh)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
