# -*- coding: utf-8 -*-
"""Run the reliability suite and write docs/reliability.md from what it measured.

    python tests/unit/reliability/figures.py            # run, print the document
    python tests/unit/reliability/figures.py --write    # run, write docs/reliability.md

Every number in the document comes from this run: each test appends what it measured to the file
named by RELIABILITY_RECORD (see _rel.record), and pytest's JUnit XML gives the outcomes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
DOC = os.path.join(ROOT, "docs", "reliability.md")
SUITE = "tests/unit/reliability"


def run_suite():
    fd, rec = tempfile.mkstemp(prefix="reliability-", suffix=".jsonl")
    os.close(fd)
    xml = rec[:-6] + ".xml"
    env = dict(os.environ, RELIABILITY_RECORD=rec)
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SUITE, "--junitxml", xml],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.time() - t0
    with open(rec, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    outcomes = collections.Counter()
    xfails = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        kids = {c.tag: c for c in case}
        if "failure" in kids or "error" in kids:
            outcomes["failed"] += 1
        elif "skipped" in kids:
            msg = kids["skipped"].get("message", "")
            if kids["skipped"].get("type") == "pytest.xfail" or msg.startswith("xfail") or "xfail" in msg:
                outcomes["xfailed"] += 1
                xfails.append((case.get("name"), msg))
            else:
                outcomes["skipped"] += 1
        else:
            outcomes["passed"] += 1
    for f in (rec, xml):
        os.unlink(f)
    tail = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
    return records, outcomes, xfails, elapsed, p.returncode, tail


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except OSError:
        return "not installed"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def by(records, figure):
    return [r for r in records if r["figure"] == figure]


def render(records, outcomes, xfails, elapsed, rc, tail):
    import ansible

    bad = by(records, "bad_input")
    targets = collections.OrderedDict()
    for r in bad:
        t = targets.setdefault(r["target"], [0, 0, 0])
        t[0] += 1
        t[1] += r["ok"]
        t[2] += r["reads"]
    bad_rows = [(t, n, ok, reads) for t, (n, ok, reads) in targets.items()]
    bad_rows.append(("**all**", sum(r[1] for r in bad_rows), sum(r[2] for r in bad_rows), sum(r[3] for r in bad_rows)))
    netns = by(records, "bad_input_netns")
    ntargets = collections.OrderedDict()
    for r in netns:
        t = ntargets.setdefault(r["target"], [0, 0])
        t[0] += 1
        t[1] += r["ok"]
    netns_rows = [(t, n, ok) for t, (n, ok) in ntargets.items()] or [("(skipped: needs root + ip netns)", 0, 0)]

    keys = by(records, "keys")
    key_rows = [(r["part"], r["keys"], r["places"], r["occurrences"]) for r in keys]
    key_rows.append(("**all**", sum(r[1] for r in key_rows), sum(r[2] for r in key_rows), sum(r[3] for r in key_rows)))
    modes = by(records, "keystore_modes")

    part = by(records, "partway")
    prow = collections.OrderedDict()
    for r in part:
        t = prow.setdefault(r["scenario"], [r["lines"], 0, 0, 0])
        t[0] = max(t[0], r["lines"])
        t[1] += 1
        t[2] += bool(r["restored"])
        t[3] += bool(r["named"])
    part_rows = [(s, v[0], v[1], v[2], v[3]) for s, v in prow.items()]
    part_rows.append(("**all**", "", sum(r[2] for r in part_rows), sum(r[3] for r in part_rows),
                      sum(r[4] for r in part_rows)))

    foreign = by(records, "foreign")
    frows = [(r["step"], r["objects"], r["objects"] if r["intact"] else 0) for r in foreign]
    frows.append(("**all runs**", sum(r[1] for r in frows), sum(r[2] for r in frows)))

    ok_bad = sum(r["ok"] for r in bad)

    hard = by(records, "hardening")
    hcls = collections.OrderedDict()
    for r in hard:
        t = hcls.setdefault((r["cls"], r["target"]), [0, 0])
        t[0] += 1
        t[1] += r["ok"]
    hard_rows = [(c, t, n, ok) for (c, t), (n, ok) in sorted(hcls.items())]
    hard_rows.append(("**all**", "", sum(r[2] for r in hard_rows), sum(r[3] for r in hard_rows)))
    props = by(records, "properties")
    prop_rows = [(r["target"], r["examples"], r.get("bad", "")) for r in props]
    doc = """# Reliability and security: unit-level figures

Generated by `tests/unit/reliability/figures.py` from one run of the suite; do not edit by hand.
Every number below was measured by that run (each test records what it saw before asserting).
The lab half (a kernel with ESP, real traffic) is the last section, written by `lab/reliability.sh`.

Reproduce (from the repository root, with the project venv):

```
.venv/bin/python tests/unit/reliability/figures.py --write   # runs the suite, rewrites this page (.venv: made by scripts/test.sh)
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/reliability   # the suite alone
```

Run: {date} UTC, {elapsed:.1f} s, pytest: {tail} (exit {rc}); outcomes {outcomes}.
Host: Linux {kernel}, {ip}, Python {py}, ansible-core {ansible}.
Tests that need root and `ip netns` skip themselves elsewhere (then their rows are missing).

## 1. Bad input is refused before anything changes

A case passes when the module (or the key store action, or the pair derivation) fails, the message
names the field (`config[0].offload.dev`; for the derivation `host X: variable`), no Python
traceback appears anywhere in the result, and the scripted host saw no state-changing command.
Read-only is defined per tool in `tests/unit/reliability/_rel.py` (`read_only`, itself tested): `ip`
xfrm state/policy list|help, link show, netns list, -V; `tc` ... show; `devlink` ... show;
`ethtool` with no option or -i/-k/-S; `ovs-vsctl` list/show/get/find; anything with `-batch` and
everything else counts as a change, and sysfs writes (FakeSysfs) count as changes too.
Inputs: numbers out of range, wrong key lengths/types, all-zero keys, IPv4/IPv6 mixes, unknown
devices, missing and one-sided peers, colliding SPI/reqid, shared keys, foreign identities, and
injection attempts (`p0; reboot`, `$(reboot)`, backticks, spaces, newlines, quotes, `#`, 200-300
character and non-ASCII names) in devices, selectors, keys, namespaces, bridge names and options.

{bad}

The same cases of the three netns-capable modules, run against the REAL kernel (`ip`/`tc` in a
scratch network namespace holding veths and foreign state: an xfrm policy with reqid 7, an ingress
u32 filter); the whole namespace dump must be identical before and after:

{netns}

Known defects (strict xfail, listed for their owners):

{xfails}

## 1b. Input hardening (issue 15): the adversarial corpus and property tests

One validator (`plugins/module_utils/_validate.py`) serves the modules and the controller's pair
derivation, so a value is accepted or refused identically, named `config[5000].spi` by a module and
`host edge-a: ipsec_selectors[0].proto` by the derivation. Grammars are allow-lists matched whole
(`fullmatch`, never `$`), ASCII only: interface names as the kernel defines them (1-15 bytes, no
`/`, `:` or white space, not `.`/`..`; here also no shell/batch metacharacters and no leading `-`),
namespace names (not `.`/`..`, no `/`), addresses and prefixes without zone ids (`%zone` refused),
protocols by number 1..255 or known name, integers of ASCII digits (int() and isdigit() accept
Unicode digits: refused here; module integer options are `raw` so Ansible does not normalise them
first), devlink PCI handles of hex digits, tc vlan ids 1..4094, one AES key never in two SAs
whatever the salts. render.yml writes every batch line as one single-quoted `printf` argument (no
here-document a value could close), through the `ipsec_render` filter.

A case passes when the target fails, names the field, shows no traceback and no line break, and
nothing changed (no state-changing command or sysfs write, the inventory untouched, no key store or
rendered file written; a pinned pair's override collision names both pairs). Classes: `address`
(zone ids with line breaks / heredoc ends / shell, trailing newlines, Unicode and full-width
digits, NUL), `digits` (Unicode digits, whitespace, signs, underscores), `name` (`.`, `..`, `/`,
`:`, leading `-`, quotes, line breaks), `proto`, `key` (all-zero AES, one AES key with two salts,
128/256), `vlan`, `handle`, `text`, `list` (10,001 SAs or a 100-host mesh with one bad element in the
middle), `pinned`, `render` (render.yml and its filter).

{hard}

Property tests (hypothesis: generated text of any script plus line breaks, controls, shell and
batch metacharacters and `%`): every string validator, every string inventory variable of the
derivation, every string field of `xfrm_offload_state`/`xfrm_offload_policy` `state: rendered`,
and the render filter; never an exception other than the documented refusal, never a line break or
unquoted metacharacter in what is accepted, and `bash -n` on the rendered scripts:

{props}

## 2. Key material never leaks

Searched for each key: hex of key||salt in any case and without `0x`, the AES key and the salt
alone, base64 of both, the decimal integer. Places: every result field (msg, diff, commands,
before/after, failed_object, kernel_message, rendered), every warning, every argv handed to
run_command, the key store action's result and diff, rendered files, and the complete stdout+stderr
of `ansible-playbook -vvvv` runs (render.yml masked and with reveal_keys; a playbook calling
xfrm_offload_state in check mode, with state=rendered and a real apply that this kernel refuses).
Positive controls in the same tests: the keys are found on stdin of `ip -batch -`, in reveal_keys
output and in the derivation's per-host SA objects.

{keys}

Key store modes after creation under umask 0: {modes}.

## 3. A batch that fails part way leaves the host as it was

The simulated kernel refuses the first, a middle or the last line of a 200-object batch (a rekey
has 400 lines: delete + add per SA); the host must then equal the snapshot taken before the run
(every SA with its key, policy, qdisc and filter, foreign objects included) and the failing
object must be named (failed_object / failed_command and the message).

{part}

## 4. Foreign state stays byte-for-byte intact

Foreign SAs/policies: real captures (strongSwan-style lab SAs reqid 1/2, the mlx5 strongSwan SA with
`flag af-unspec` and no sel line, fastswan fwd/out/in policies) plus objects the simulator holds
with reqid 1, 3, 0x51bfffff and 0x51c10000 and a template-less policy. tc: a foreign u32 filter and
foreign flower rules. OVS: a foreign port on the owned bridge, a foreign bridge and VXLAN port (no
OVS here: the transaction handed to ovs-vsctl is checked). Steps: merged, overridden, deleted with
an empty list, a rekey-like replace, and requests naming a foreign identity (refused).

{foreign}
""".format(
        date=time.strftime("%Y-%m-%d %H:%M", time.gmtime()), elapsed=elapsed, tail=tail, rc=rc,
        outcomes=", ".join("%d %s" % (n, k) for k, n in sorted(outcomes.items())),
        kernel=platform.release(), ip=tool_version(["ip", "-V"]), py=platform.python_version(),
        ansible=ansible.__version__,
        bad=table(["target", "cases", "refused correctly", "read-only commands seen"], bad_rows)
        + "\n\n%d of %d cases refused correctly." % (ok_bad, len(bad)),
        hard=table(["class", "target", "cases", "refused correctly, nothing changed"], hard_rows)
        + "\n\n%d of %d hardening cases refused correctly." % (hard_rows[-1][3], hard_rows[-1][2]),
        props=table(["target", "examples", "scripts bash -n refused"], prop_rows) if prop_rows else "(not run)",
        netns=table(["module", "cases on the real kernel", "refused, host unchanged"], netns_rows),
        xfails="\n".join("- `%s`: %s" % (n, m.replace("reason: ", "")) for n, m in xfails) or "- none",
        keys=table(["part", "keys tried", "places searched", "occurrences (must be 0)"], key_rows),
        modes=", ".join("%s %s" % (k, oct(v)) for r in modes for k, v in sorted(r.items()) if k in
                        ("file", "dir", "parent")) or "not measured",
        part=table(["scenario", "batch lines", "positions tried", "hosts restored", "failing object named"],
                   part_rows),
        foreign=table(["run", "foreign objects", "intact after the run"], frows),
    )
    return doc


LAB_BEGIN = "<!-- lab-reliability:begin"
LAB_END = "<!-- lab-reliability:end -->"


def lab_section(path):
    """The lab figures block lab/reliability.sh wrote into the page (kept as it is), or ''."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return ""
    i, j = text.find(LAB_BEGIN), text.find(LAB_END)
    if i < 0 or j < i:
        return ""
    return "\n" + text[i:j + len(LAB_END)] + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write docs/reliability.md")
    a = ap.parse_args()
    records, outcomes, xfails, elapsed, rc, tail = run_suite()
    doc = render(records, outcomes, xfails, elapsed, rc, tail)
    if a.write:
        os.makedirs(os.path.dirname(DOC), exist_ok=True)
        doc += lab_section(DOC)
        with open(DOC, "w", encoding="utf-8") as fh:
            fh.write(doc)
        print("wrote %s (%s, %.1f s)" % (DOC, tail, elapsed))
    else:
        print(doc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
