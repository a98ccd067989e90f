# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAs of a lab VM with a hash of their keys (lab/lifecycle.sh `sas` / `foreign_sas`).

Runs ON the VM: plugins/module_utils/_xfrm_text.py and this file as one text on the stdin of
`python3 -`, so the collection's own parser (parse_states, defined by the text in front) reads `ip
xfrm state list`, keys included; only the SHA-256 of each key leaves the VM.  One line per SA with a
key: "src>dst 0xSPI 0xREQID KEYHASH", foreign SAs (reqid outside the owned range) prefixed "F ".
"""
import hashlib
import subprocess

OWNED = (0x51C00000, 0x51C0FFFF)  # _xfrm.OWNED_REQID_RANGE (tests/unit/test_lab_owned.py holds them equal)


def sa_lines(text, parse=None):
    """`ip xfrm state list` text -> the lines above (parse: parse_states, the one in front by default)."""
    out = []
    for sa in (parse or globals()["parse_states"])(text):
        key = (sa.get("aead") or {}).get("key")
        if key is None:
            continue
        owned = OWNED[0] <= (sa.get("reqid") or 0) <= OWNED[1]
        out.append(("" if owned else "F ") + "%s>%s 0x%08x 0x%08x %s" % (
            sa["src"], sa["dst"], sa["spi"] or 0, sa["reqid"] or 0, hashlib.sha256(key.encode()).hexdigest()))
    return out


if __name__ == "__main__":
    for line in sa_lines(subprocess.run(["ip", "xfrm", "state", "list"], capture_output=True, text=True,
                                        check=True).stdout):
        print(line)
