"""Helpers of the molecule verify tests (imported by the scenarios' conftest.py / tests).

Everything on a host is read by files/xfrm_dump.py, run ON the host: keys never reach the
controller, only HMAC-SHA256(salt, algorithm|key|icv) does.  Comparisons here are pure functions of
those dumps so that a failure message shows identities and hashes, never a key.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DUMP_SCRIPT = HERE.parent / "files" / "xfrm_dump.py"
# the collection's `ip xfrm` parser (stdlib only): sent to the host in front of xfrm_dump.py
XFRM_TEXT = HERE.parents[3] / "plugins" / "module_utils" / "_xfrm_text.py"
PHASES = ("converged", "torn_down")


def project_dir() -> Path:
    return Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or HERE.parents[3])


def module_util(name: str):
    """The collection's module_utils NAME (e.g. "_tc"), imported from this checkout: the molecule
    checks read tool output with the parsers the modules use.  When the checkout is not already
    importable as ansible_collections.ipsec_offload.mlx5, a symlink farm in a temporary directory
    (removed at exit) makes it so."""
    full = "ansible_collections.ipsec_offload.mlx5.plugins.module_utils." + name
    try:
        return importlib.import_module(full)
    except ImportError:
        pass
    base = tempfile.mkdtemp(prefix="ipsec_offload_mlx5_molecule_")
    atexit.register(shutil.rmtree, base, True)  # the symlink only: rmtree does not follow it
    link = os.path.join(base, "ansible_collections", "ipsec_offload", "mlx5")
    os.makedirs(os.path.dirname(link))
    os.symlink(str(HERE.parents[3]), link)
    sys.path.insert(0, base)
    for mod in [m for m in sys.modules if m == "ansible_collections.ipsec_offload"
                or m.startswith("ansible_collections.ipsec_offload.")]:
        del sys.modules[mod]  # a failed attempt may have cached a partial package
    importlib.invalidate_caches()
    return importlib.import_module(full)


def owned_range() -> tuple[int, int]:
    """The collection's owned reqid range: IPSEC_OWNED_REQID_RANGE="lo,hi" or the ipsec role default."""
    env = os.environ.get("IPSEC_OWNED_REQID_RANGE")
    if env:
        lo, hi = (v.strip() for v in env.split(","))
    else:
        with open(project_dir() / "roles" / "ipsec" / "defaults" / "main.yml", encoding="utf-8") as f:
            lo, hi = yaml.safe_load(f)["ipsec_owned_reqid_range"]
    return int(str(lo), 0), int(str(hi), 0)


def bundle() -> str:
    """xfrm_dump.py with the collection's parser in front: one script text for `python3 -c`."""
    return XFRM_TEXT.read_text(encoding="utf-8") + "\n" + DUMP_SCRIPT.read_text(encoding="utf-8")


def dump(host, salt: str, netns: str = "") -> dict:
    """Run xfrm_dump.py on a testinfra host; return its JSON (states, policies, addresses)."""
    script = bundle()
    cmd = "python3 -c " + shlex.quote(script) + " " + shlex.quote(salt)
    if netns:
        cmd += " " + shlex.quote(netns)
    out = host.run(cmd)
    assert out.rc == 0, "xfrm_dump.py failed on %s: %s" % (host.backend.get_pytest_id(), out.stderr)
    return json.loads(out.stdout)


def is_owned_sa(sa: dict, rng) -> bool:
    return rng[0] <= (sa.get("reqid") or 0) <= rng[1]


def is_owned_policy(pol: dict, rng) -> bool:
    return any(rng[0] <= (t.get("reqid") or 0) <= rng[1] for t in pol["tmpl"])


def sa_identity(sa: dict) -> tuple:
    """What must be equal on both ends of an SA (no counters, no offload line: those are per host)."""
    algos = tuple(sorted((k, v["name"], v["key_bits"], v["icv"], v["key_hash"]) for k, v in sa["algos"].items()))
    return (sa["src"], sa["dst"], sa.get("proto"), "0x%08x" % sa["spi"], sa.get("reqid"), sa.get("mode"), algos)


def policy_identity(pol: dict) -> tuple:
    tmpl = tuple((t.get("src"), t.get("dst"), t.get("proto"), t.get("reqid"), t.get("mode")) for t in pol["tmpl"])
    return (pol["sel"], tmpl)


def sas_between(d: dict, src_addrs, dst_addrs, rng) -> set:
    return {sa_identity(sa) for sa in d["states"]
            if is_owned_sa(sa, rng) and sa["src"] in src_addrs and sa["dst"] in dst_addrs}


def policies_between(d: dict, direction: str, src_addrs, dst_addrs, rng) -> set:
    return {policy_identity(p) for p in d["policies"]
            if p["dir"] == direction and is_owned_policy(p, rng)
            and any(t.get("src") in src_addrs and t.get("dst") in dst_addrs for t in p["tmpl"])}


def foreign(d: dict, rng) -> dict:
    """Objects outside the owned range, without what traffic or time changes."""
    states = sorted(repr(sa_identity(sa) + (sa.get("sel"),)) for sa in d["states"] if not is_owned_sa(sa, rng))
    pols = sorted(repr(policy_identity(p) + (p["dir"], p.get("priority"))) for p in d["policies"]
                  if not is_owned_policy(p, rng))
    return {"states": states, "policies": pols}


def counters(d: dict, rng) -> dict:
    """(src, dst, spi) -> packets of every owned SA."""
    return {(sa["src"], sa["dst"], sa["spi"]): sa["packets"] or 0 for sa in d["states"] if is_owned_sa(sa, rng)}


def count_capture(text: str) -> dict:
    """Count ESP and ICMP lines of `tcpdump -n -r` output."""
    return {"esp": len(re.findall(r"\bESP\(spi=", text)), "icmp": len(re.findall(r"\bICMP\b", text))}


def nic_packet_deltas(before: dict, after: dict) -> dict:
    """Largest rise of the NIC's IPsec packet counters per direction, from two `ethtool -S` ipsec_*
    dicts (ipsec_offload_info devices.<dev>.ipsec_counters).  Names vary by kernel and driver
    (ipsec_tx_pkts, OFED ipsec_full_tx_pkts, ...): a packet counter is one with tx|rx and pkts|packets
    in its name and no drop/err/miss/fail."""
    out = {"tx": None, "rx": None}
    for name, new in (after or {}).items():
        low = name.lower()
        if not re.search(r"pkts|packets", low) or re.search(r"drop|err|miss|fail|bad|invalid", low):
            continue
        for d in ("tx", "rx"):
            if re.search(r"(^|_)%s(_|$)" % d, low):
                rise = int(new) - int((before or {}).get(name, 0))
                out[d] = rise if out[d] is None else max(out[d], rise)
    return out


def lab_inventory() -> dict:
    """The example inventory the scenario converged with (MOLECULE_LAB_INVENTORY, default "lab"):
    its topology, the SAs' namespace and per-host variables, read from the same hosts.yml that
    molecule.yml passes to ansible-playbook."""
    name = os.environ.get("MOLECULE_LAB_INVENTORY", "").strip() or "lab"
    path = project_dir() / "inventories" / "examples" / name / "hosts.yml"
    with open(path, encoding="utf-8") as f:
        group = yaml.safe_load(f)["all"]["children"]["ipsec_lab"]
    gvars = group.get("vars") or {}
    return {"name": name, "topology": gvars.get("ipsec_topology", "none"),
            "netns": gvars.get("ipsec_namespace", "") or "", "vars": gvars, "hosts": group["hosts"]}


def count_frames(text: str) -> dict:
    """Count what `tcpdump -e -n -r` printed: ESP frames, of those the ones with both QinQ tags
    (outer vlan 10, inner vlan 5 as the RoCE inventories set), cleartext ICMP and cleartext VXLAN."""
    lines = [ln for ln in text.splitlines() if re.match(r"^\d{2}:\d{2}:", ln)]
    esp = [ln for ln in lines if re.search(r"\bESP\(spi=", ln)]
    return {"frames": len(lines), "esp": len(esp),
            "esp_qinq": sum(1 for ln in esp if re.search(r"vlan 10, .*vlan 5, ", ln)),
            "icmp": sum(1 for ln in lines if re.search(r"\bICMP\b", ln)),
            "vxlan": sum(1 for ln in lines if re.search(r"\bVXLAN\b|\.4789[: ]", ln) and "ESP" not in ln)}
