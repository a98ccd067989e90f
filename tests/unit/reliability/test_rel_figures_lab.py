# -*- coding: utf-8 -*-
"""figures.py --write keeps the lab figures block that lab/reliability.sh writes into the page."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402  pylint: disable=wrong-import-position

BLOCK = ("<!-- lab-reliability:begin (written by lab/reliability.sh; figures.py keeps this block) -->\n"
         "## Lab figures\n\n| figure | value | holds |\n|---|---|---|\n| 4. interruptions | 4 / 4 | yes |\n"
         "<!-- lab-reliability:end -->")


@pytest.mark.parametrize("text,want", [
    ("# unit page\n\nbody\n\n" + BLOCK + "\n", "\n" + BLOCK + "\n"),
    ("# unit page\n" + BLOCK + "\ntrailing text\n", "\n" + BLOCK + "\n"),
    ("# unit page without a lab block\n", ""),
    ("<!-- lab-reliability:end -->\n<!-- lab-reliability:begin -->\n", ""),  # end before begin
    ("<!-- lab-reliability:begin -->\nno end\n", ""),
])
def test_lab_section(tmp_path, text, want):
    p = tmp_path / "reliability.md"
    p.write_text(text, encoding="utf-8")
    assert figures.lab_section(str(p)) == want


def test_lab_section_missing_file(tmp_path):
    assert figures.lab_section(str(tmp_path / "none.md")) == ""
