# -*- coding: utf-8 -*-
"""lab/lib.sh verify_table: the verify role's table from a verify.yml log (a real one, lab/verify.sh
stage nic), one plain line per row, nothing of the callback's framing."""
from __future__ import annotations

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG = os.path.join(ROOT, "tests", "unit", "fixtures", "verify", "verify-report-nic.log")


def table(path):
    p = subprocess.run(["bash", "-c", 'source "$1/lab/lib.sh"; verify_table "$2"', "-", ROOT, path],
                       capture_output=True, text=True, check=True)
    return p.stdout.splitlines()


def test_verify_table_reads_the_report_rows():
    lines = table(LOG)
    assert lines[0].split()[:2] == ["host", "SA"]
    assert len(lines) == 1 + 2 * (2 + 1 + 8)
    assert [ln.split()[-1] for ln in lines if ln.split()[1].startswith("0x")] == ["PASS"] * 4
    assert lines[3].startswith("lab1  ping 198.51.100.2 ") and lines[3].endswith("packets counted 40: PASS")
    assert lines[7].split() == ["lab1", "NIC", "eth0", "ipsec_rx_pkts", "0", "20", "20"]
    assert not any(ln.startswith(("ok:", "TASK")) or ln.endswith(")") and "(item=" in ln for ln in lines)


def test_verify_table_of_a_log_without_report_is_empty(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("TASK [ipsec_offload.mlx5.verify : Pass or fail] ***\nok: [lab1] => (item=x)\n")
    assert table(str(log)) == []
