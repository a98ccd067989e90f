"""extensions/molecule/default/files/xfrm_dump.py (sent to the hosts by the molecule verifiers, with
_xfrm_text's text in front) on a packet-offloaded SA policy with its two fail-closed guards, as the
lab's simulated ConnectX lists them."""
from __future__ import annotations

from pathlib import Path

from test_lab_helpers import _bundle

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "unit" / "fixtures" / "sim" / "xfrm_policy_packet.txt"

GUARDS = """src 203.0.113.1/32 dst 203.0.113.2/32
\tdir out action block priority 4294967295 ptype main
\tmark 0/0x1
\ttmpl src 203.0.113.1 dst 203.0.113.2
\t\tproto esp reqid 1371590897 mode transport
src 203.0.113.1/32 dst 203.0.113.2/32
\tdir out action block priority 4294967295 ptype main
\tmark 0x1/0x1
\ttmpl src 203.0.113.1 dst 203.0.113.2
\t\tproto esp reqid 1371590897 mode transport
"""


def test_guards_are_told_from_packet_offloaded_sa_policies():
    text = "".join(line for line in FIX.read_text().splitlines(keepends=True) if not line.startswith("#"))
    pols = _bundle()["dump_policies"](text + GUARDS)
    assert [(p["dir"], p["action"], (p["offload"] or {}).get("mode")) for p in pols] == [
        ("out", "allow", "packet"), ("in", "allow", "packet"), ("out", "block", None), ("out", "block", None)]
    assert {p["priority"] for p in pols if p["action"] == "block"} == {0xFFFFFFFF}
