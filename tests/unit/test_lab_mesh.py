# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lab/mesh.py, the helper of the lab mesh suite (lab/mesh.sh): the inventory it writes (read by
YAML and derived by the collection's own pair derivation: 8 hosts -> 56 directed pairs, a ninth adds
16), the SA/policy snapshot it takes on the VMs (never a key, only a hash) and its checks."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import pytest
import yaml

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("lab_mesh", os.path.join(ROOT, "lab", "mesh.py"))
mesh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mesh)

EIGHT = "mesh1=1,mesh2=1,mesh3=1,mesh4=1,mesh5=2,mesh6=2,mesh7=2,mesh8=2"
NINE = EIGHT + ",mesh9=1"


def hostvars_of(text):
    """The inventory's hosts with their group's vars merged in, as Ansible's hostvars give them."""
    inv = yaml.safe_load(text)
    group = inv["all"]["children"][mesh.GROUP]
    hv = {h: dict(group["vars"], **(v or {}), inventory_hostname=h) for h, v in group["hosts"].items()}
    return hv, {"all": list(hv), mesh.GROUP: list(hv), "ungrouped": []}


def write(tmp_path, layout):
    out = tmp_path / "hosts.yml"
    rc = mesh.main(["inventory", layout, "--port", "1=2371", "--port", "2=2372",
                    "--key", "/r/id_ed25519", "--known-hosts", "/r/known_hosts", "--out", str(out)])
    assert rc == 0
    return out.read_text()


def test_eight_hosts_give_56_directed_pairs_and_a_ninth_16_more():
    eight, nine = mesh.parse_layout(EIGHT), mesh.parse_layout(NINE)
    pairs8, pairs9 = mesh.directed_pairs(eight), mesh.directed_pairs(nine)
    assert len(pairs8) == len(set(pairs8)) == 56 and all(a != b for a, b in pairs8)
    assert len(pairs9) == 72 and set(pairs8) <= set(pairs9)
    new = mesh.directed_pairs(nine, involving="mesh9")
    assert len(new) == 16 and set(new) == set(pairs9) - set(pairs8)
    assert {b for a, b in new if a == "mesh9"} == {"mesh%d" % k for k in range(1, 9)}


def test_inventory_every_host_in_its_namespace_on_its_vm(tmp_path):
    hv = hostvars_of(write(tmp_path, NINE))[0]
    assert sorted(hv, key=mesh.host_number) == ["mesh%d" % k for k in range(1, 10)]
    for h, v in hv.items():
        k = mesh.host_number(h)
        assert v["ipsec_namespace"] == h and v["ipsec_local_ip"] == "10.77.0.%d" % k
        assert v["ansible_port"] == (2371 if k in (1, 2, 3, 4, 9) else 2372) and v["mesh_vm"] in (1, 2)
        assert v["ansible_host"] == "127.0.0.1" and v["ipsec_dev"] == "veth0" and v["ipsec_offload"] == "none"
        assert v["ipsec_meshes"] == [mesh.GROUP] and "/r/known_hosts" in v["ansible_ssh_common_args"]


@pytest.mark.parametrize("layout, n", [(EIGHT, 56), (NINE, 72)])
def test_the_collection_derives_every_directed_pair_of_the_inventory(tmp_path, layout, n):
    hv, groups = hostvars_of(write(tmp_path, layout))
    d = _pairs.derive(hv, groups=groups, keys="none")
    got = {(p["src_host"], p["dst_host"]) for p in d["pairs"]}
    assert len(d["pairs"]) == n and got == set(mesh.directed_pairs(mesh.parse_layout(layout)))


@pytest.mark.parametrize("bad", ["mesh1=1", "mesh1=1,mesh1=2", "mesh1=3,mesh2=1", "host1=1,mesh2=1", "mesh0=1,mesh2=1",
                                 "mesh1,mesh2=1", "mesh255=1,mesh2=2"])
def test_bad_layouts_are_refused(bad):
    with pytest.raises(mesh.MeshError):
        mesh.parse_layout(bad)


def test_pairs_command_lists_sender_vm_and_receiver_address(capsys):
    assert mesh.main(["pairs", NINE, "--involving", "mesh9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 16
    assert "mesh9 mesh5 1 10.77.0.5 2" in lines and "mesh5 mesh9 2 10.77.0.9 1" in lines and "mesh1 mesh9 1 10.77.0.9 1" in lines


KEY_A, KEY_B = "0x" + "ab" * 20, "0x" + "cd" * 20
# `ip -s xfrm state` / `ip xfrm policy` as iproute2 prints them (tabs, trailing blanks): lab/mesh.py's input
STATE = "\n".join([
    "src 10.77.0.1 dst 10.77.0.2",
    "\tproto esp spi 0x00001001(4097) reqid 1371537409(0x51c00001) mode transport",
    "\treplay-window 0 seq 0x00000000 flag esn (0x10000000)",
    "\taead rfc4106(gcm(aes)) %s (160 bits) 128" % KEY_A,
    "\tsel src 10.77.0.1/32 dst 10.77.0.2/32 uid 0",
    "\tlifetime config:",
    "\t  limit: soft (INF)(bytes), hard (INF)(bytes)",
    "\t  limit: soft (INF)(packets), hard (INF)(packets)",
    "\tlifetime current:",
    "\t  384(bytes), 6(packets)",
    "\t  add 2026-11-24 09:09:18 use 2026-11-24 09:09:21",
    "src 10.77.0.2 dst 10.77.0.1",
    "\tproto esp spi 0x00001002(4098) reqid 1371537410(0x51c00002) mode transport",
    "\taead rfc4106(gcm(aes)) %s (160 bits) 128" % KEY_B,
    "\tlifetime current:",
    "\t  0(bytes), 0(packets)",
    "src 10.77.0.1 dst 10.99.0.1",
    "\tproto esp spi 0x00000abc(2748) reqid 256(0x00000100) mode transport",
    "\taead rfc4106(gcm(aes)) %s (160 bits) 128" % KEY_B,
    "\tlifetime current:",
    "\t  64(bytes), 1(packets)",
]) + "\n"
POLICY = "\n".join([
    "src 10.77.0.1/32 dst 10.77.0.2/32 ",
    "\tdir out priority 0 ptype main ",
    "\ttmpl src 10.77.0.1 dst 10.77.0.2",
    "\t\tproto esp reqid 1371537409 mode transport",
    "src 10.77.0.1/32 dst 10.77.0.2/32 ",
    "\tdir out action block priority 4294967295 ptype main ",
    "\tmark 0/0x1 ",
    "\ttmpl src 10.77.0.1 dst 10.77.0.2",
    "\t\tproto esp reqid 1371537409 mode transport",
    "src 10.77.0.1/32 dst 10.99.0.1/32 ",
    "\tdir out priority 9 ptype main ",
    "\ttmpl src 10.77.0.1 dst 10.99.0.1",
    "\t\tproto esp reqid 256 mode transport",
]) + "\n"


def test_snapshot_of_the_owned_objects_never_carries_a_key():
    sa = mesh.owned_sa_lines("mesh1", STATE)
    sp = mesh.owned_sp_lines("mesh1", POLICY)
    text = "\n".join(sa + sp)
    assert KEY_A[2:] not in text and KEY_B[2:] not in text   # foreign SA (reqid 0x100) left out too
    assert sa == ["SA mesh1 10.77.0.1 10.77.0.2 0x00001001 0x51c00001 6 " + hashlib.sha256(KEY_A.encode()).hexdigest()[:16],
                  "SA mesh1 10.77.0.2 10.77.0.1 0x00001002 0x51c00002 0 " + hashlib.sha256(KEY_B.encode()).hexdigest()[:16]]
    assert sp == ["SP mesh1 10.77.0.1 10.77.0.2 out 0x51c00001 allow", "SP mesh1 10.77.0.1 10.77.0.2 out 0x51c00001 block"]


def test_snapshot_runs_ip_per_namespace_and_names_a_missing_one():
    calls = []

    class Done:
        def __init__(self, out):
            self.stdout = out

    def run(argv, **_kw):
        calls.append(argv)
        if argv[:3] == ["ip", "netns", "list"]:
            return Done("mesh2\nmesh1 (id: 0)\n")
        return Done(STATE if "state" in argv else POLICY)

    out = mesh.snapshot(["mesh1", "mesh3"], run=run)
    assert out[-1] == "NS mesh3 absent" and len(out) == 5
    assert ["ip", "-n", "mesh1", "-s", "xfrm", "state", "list"] in calls


def test_snapshot_as_sent_to_the_vm_uses_the_collections_parser():
    """mesh.sh sends _xfrm_text.py and mesh.py as one text to `python3 - snapshot`: it compiles, and
    the snapshot reads `ip xfrm` with the parser defined in front of it (no file of the tree there)."""
    text = "".join(open(os.path.join(ROOT, *p), encoding="utf-8").read()
                   for p in (("plugins", "module_utils", "_xfrm_text.py"), ("lab", "mesh.py")))
    ns = {"__name__": "on_the_vm"}
    exec(compile(text, "<stdin>", "exec"), ns)  # pylint: disable=exec-used
    assert "__file__" not in ns and ns["_xfrm_parsers"]() == (ns["parse_states"], ns["parse_policies"])

    class Done:
        def __init__(self, out):
            self.stdout = out

    def run(argv, **_kw):
        if argv[:3] == ["ip", "netns", "list"]:
            return Done("mesh1\n")
        return Done(STATE if "state" in argv else POLICY)

    assert ns["snapshot"](["mesh1"], run=run) == mesh.snapshot(["mesh1"], run=run)


def full_snapshot(layout, packets=0, spi_shift=0, skip=()):
    """What a converged mesh reports: per directed pair its SA on both ends and a policy each."""
    lines = []
    for i, (a, b) in enumerate(mesh.directed_pairs(layout)):
        if (a, b) in skip:
            continue
        sa, sb = mesh.address(a), mesh.address(b)
        ident = "0x%08x 0x%08x" % (0x1000 + i + spi_shift, 0x51c00000 + i)
        lines += ["SA %s %s %s %s %d h%015d" % (ns, sa, sb, ident, packets, i) for ns in (a, b)]
        lines += ["SP %s %s %s out 0x%08x allow" % (a, sa, sb, 0x51c00000 + i),
                  "SP %s %s %s in 0x%08x allow" % (b, sa, sb, 0x51c00000 + i),
                  "SP %s %s %s out 0x%08x block" % (a, sa, sb, 0x51c00000 + i)]
    return lines


def test_check_accepts_the_full_mesh_and_names_what_is_wrong():
    eight, nine = mesh.parse_layout(EIGHT), mesh.parse_layout(NINE)
    assert mesh.check(eight, full_snapshot(eight)) == []
    p = mesh.check(eight, full_snapshot(eight, skip={("mesh2", "mesh7")}))
    assert len(p) == 3 and p[0] == "mesh2 -> mesh7: SA missing on mesh2 and mesh7"
    # one end with another SPI
    snap = full_snapshot(eight)
    snap[0] = snap[0].replace(" 0x00001000 ", " 0x00001fff ")
    assert mesh.check(eight, snap) == ["mesh1 -> mesh2: the two ends differ (SPI 0x00001fff/0x00001000, reqid "
                                       "0x51c00000/0x51c00000, key hash same)"]
    # the ninth host's SAs left on the peers after it was removed from the layout
    p = mesh.check(eight, full_snapshot(nine), gone=["mesh9"])
    assert any(x.startswith("mesh9 (gone): ") for x in p) and any("outside the mesh" in x for x in p)
    assert mesh.check(eight, full_snapshot(eight), gone=["mesh9"]) == []


def test_traffic_every_directed_sa_must_rise_on_both_ends():
    eight, nine = mesh.parse_layout(EIGHT), mesh.parse_layout(NINE)
    before, after = full_snapshot(eight, 0), full_snapshot(eight, 4)
    assert mesh.traffic(eight, before, after) == (56, [])
    stuck = [ln for ln in after if not ln.startswith("SA mesh3 10.77.0.3 10.77.0.6 ")] + \
        [ln for ln in before if ln.startswith("SA mesh3 10.77.0.3 10.77.0.6 ")]
    rose, problems = mesh.traffic(eight, before, stuck)
    assert rose == 55 and problems == ["mesh3 -> mesh6 did not carry traffic (mesh3: 0 -> 0 packets)"]
    # the new host's 16: its SAs did not exist before
    rose, problems = mesh.traffic(nine, before, full_snapshot(nine, 2), involving="mesh9")
    assert (rose, problems) == (16, [])


def test_kept_compares_spi_reqid_and_key_hash_of_both_ends():
    eight = mesh.parse_layout(EIGHT)
    assert mesh.kept(eight, full_snapshot(eight, 0), full_snapshot(eight, 9)) == (56, [])
    same, problems = mesh.kept(eight, full_snapshot(eight), full_snapshot(eight, spi_shift=1))
    assert same == 0 and problems[0].startswith("mesh1 -> mesh2 changed (mesh1: SPI 0x00001000 -> 0x00001001; ")
    snap = full_snapshot(eight)
    snap[1] = snap[1][:-1] + "x"
    same, problems = mesh.kept(eight, full_snapshot(eight), snap)
    assert same == 55 and problems == ["mesh1 -> mesh2 changed (mesh2: key changed)"]
    assert "h0000" not in problems[0]   # a hash is not printed either


def test_empty_and_the_command_line(tmp_path, capsys):
    eight = mesh.parse_layout(EIGHT)
    f = tmp_path / "snap"
    f.write_text("NS mesh1 absent\n")
    assert mesh.main(["empty", str(f)]) == 0
    assert capsys.readouterr().out.strip() == "no owned SA or policy in any namespace"
    f.write_text("\n".join(full_snapshot(eight)) + "\n")
    assert mesh.main(["check", EIGHT, str(f)]) == 0
    assert capsys.readouterr().out.startswith("8 hosts, 56 directed SAs, each out on its sender")
    assert mesh.main(["empty", str(f)]) == 1
    assert "FAIL: owned objects left" in capsys.readouterr().out
    g = tmp_path / "after"
    g.write_text("\n".join(full_snapshot(eight, 3)) + "\n")
    assert mesh.main(["traffic", EIGHT, str(f), str(g)]) == 0
    assert capsys.readouterr().out.strip() == "56 of 56 directed SAs counted more packets on both ends"
    assert mesh.main(["kept", EIGHT, str(f), str(g)]) == 0
    assert mesh.main(["check", "mesh1=9,mesh2=1", str(f)]) == 2
