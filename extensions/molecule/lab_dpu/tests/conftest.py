"""Verify tests of the lab_dpu scenario: the default scenario's fixtures (pairfixtures.py) with a
per-session salt for the key hashes (no prepare step here) and no phases (converged only)."""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))
from pairfixtures import *  # noqa: E402,F401,F403  pylint: disable=wrong-import-position,wildcard-import,unused-wildcard-import


def pytest_configure(config):
    config.addinivalue_line("markers", "phase(name): verify phase of the default scenario (all run here)")


@pytest.fixture(scope="session")
def salt() -> str:  # noqa: F811  (overrides pairfixtures.salt: nothing on disk in this scenario)
    return secrets.token_hex(16)
