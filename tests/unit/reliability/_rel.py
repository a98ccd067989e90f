# -*- coding: utf-8 -*-
"""Shared helpers of the unit-level reliability and security suite (issue 7).

- ``read_only(argv)``: the precise definition of a command that cannot change host state, per
  tool.  Everything not listed is treated as state-changing (default deny).
- ``no_traceback(text)``: a failure message must not carry a Python traceback.
- ``key_forms(hexkey)``: the spellings of one key||salt we search output for (hex in any case,
  without 0x, the AES key and the salt separately, base64 of the bytes, the decimal integer).
- ``record(figure, **values)``: when RELIABILITY_RECORD names a file, append one JSON line; the
  figures script (figures.py) runs the suite with it set and adds up the lines.  Tests record the
  values they measured BEFORE asserting on them, so a failing check still shows in the figures.
- ``load_test_module(relpath)``: import a fake from another test file (FakeTc, FakeDevlink) under
  a private name, so pytest does not collect its tests twice.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(UNIT))

# --------------------------------------------------------------------------------------------
# read-only commands, per tool

# `ip` (after the global options -n NS, -o, -d, -j, -s): the subcommands that only print.
_IP_READ = [("xfrm", "state", "list"), ("xfrm", "policy", "list"), ("xfrm", "state", "help"),
            ("xfrm", "policy", "help"), ("link", "show"), ("netns", "list"), ("-V",)]
_IP_READ_EXACT = [("xfrm", "state"), ("xfrm", "policy")]   # no verb = list
_TC_READ_VERBS = ("show", "list", "ls")
_OVS_READ = ("list", "show", "get", "find", "br-exists", "list-br", "list-ports", "list-ifaces", "port-to-br",
             "iface-to-br")
_ETHTOOL_READ = ("-i", "--driver", "-k", "--show-features", "--show-offload", "-S", "--statistics", "-m",
                 "--show-ring", "-g", "-l", "--show-channels")


def _strip_global(argv, flags_with_arg, flags):
    """Drop leading global options; return the rest."""
    i = 0
    while i < len(argv):
        if argv[i] in flags_with_arg:
            i += 2
        elif argv[i] in flags:
            i += 1
        else:
            break
    return argv[i:]


def read_only(argv):
    """True when ``argv`` (argv[0] reduced to the tool name, as FakeHost records it) cannot change
    host state.  Writes to sysfs are not commands: FakeSysfs records them separately."""
    if not argv:
        return False
    tool, args = argv[0], list(argv[1:])
    if "-batch" in args or "-b" in args:
        return False
    if tool == "ip":
        args = _strip_global(args, ("-n", "-netns"),
                             ("-o", "-oneline", "-d", "-details", "-j", "-json", "-s", "-stats", "-p", "-pretty"))
        if args[:2] == ["netns", "exec"]:
            return read_only(args[3:])
        if tuple(args) in _IP_READ_EXACT:
            return True
        return any(tuple(args[:len(p)]) == p for p in _IP_READ)
    if tool == "tc":
        args = _strip_global(args, ("-n", "-netns"), ("-j", "-json", "-s", "-d", "-p", "-pretty", "-force"))
        return len(args) >= 2 and args[0] in ("qdisc", "filter", "class", "chain", "action", "actions") and (
            args[1] in _TC_READ_VERBS)
    if tool == "devlink":
        args = _strip_global(args, (), ("-j", "-p", "-n", "-s", "-d", "-v"))
        # devlink OBJECT [SUBOBJECT] show ...
        return "show" in args[:3] and "set" not in args[:3] and "add" not in args[:3] and "del" not in args[:3]
    if tool == "ethtool":
        return len(args) == 1 or (len(args) == 2 and args[0] in _ETHTOOL_READ)
    if tool == "ovs-vsctl":
        args = [a for a in args if not a.startswith("--")]
        return bool(args) and args[0] in _OVS_READ and "--" not in argv[1:]
    return False


def writes(commands):
    """The state-changing commands among ``commands``."""
    return [c for c in commands if not read_only(c)]


# --------------------------------------------------------------------------------------------
# messages

_TB = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+|\b(?:Type|Key|Attribute|Index|"
                 r"Name|UnboundLocal|ZeroDivision)Error\b")


def no_traceback(*texts):
    """True when none of ``texts`` looks like a Python traceback or a bare Python exception."""
    return not any(_TB.search(t or "") for t in texts)


# --------------------------------------------------------------------------------------------
# key material

def key_forms(hexkey):
    """Spellings of one key||salt (``0x`` + hex) to search for.  All lower case (search lower-cased
    text).  The salt is the last 4 bytes (RFC 4106)."""
    h = hexkey.lower()
    if h.startswith("0x"):
        h = h[2:]
    raw = binascii.unhexlify(h)
    forms = {
        h,                      # whole key||salt, any case (text is lower-cased)
        h[:-8],                 # AES key alone
        h[-8:],                 # salt alone (8 hex digits)
        str(int(h, 16)),        # decimal (an unquoted key in YAML becomes an integer)
    }
    for b in (raw, raw[:-4]):
        forms.add(base64.b64encode(b).decode().lower().rstrip("="))
    # base64 is case sensitive: search it case-sensitively too (see occurrences())
    return forms, {base64.b64encode(raw).decode().rstrip("="), base64.b64encode(raw[:-4]).decode().rstrip("=")}


def occurrences(text, hexkeys):
    """Number of (key, form) hits of any of ``hexkeys`` in ``text``."""
    low = (text or "").lower()
    n = 0
    for k in hexkeys:
        lower_forms, b64 = key_forms(k)
        n += sum(low.count(f) for f in lower_forms)
        n += sum((text or "").count(f) for f in b64)
    return n


def random_key(rng, nbytes):
    return "0x" + "".join("%02x" % rng.randrange(256) for dummy in range(nbytes))


def texts_of(obj):
    """Every string in a JSON-able structure (keys and values), joined, plus its JSON dump."""
    return json.dumps(obj, default=str, sort_keys=True)


# --------------------------------------------------------------------------------------------
# figures

def record(figure, **values):
    path = os.environ.get("RELIABILITY_RECORD")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(values, figure=figure), sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# fakes from other test files

def load_test_module(relpath, name):
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(UNIT, relpath)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
