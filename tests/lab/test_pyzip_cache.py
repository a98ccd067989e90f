"""lab/vm/pyzip_cache.py (the lab VMs' cache of code compiled from zip archives): a cached code
object is the one a fresh compile gives, with the current file name (nested code too); a changed
source is compiled again; a cache that cannot be read or written changes nothing."""
from __future__ import annotations

import importlib.util
import zipimport
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "lab" / "vm" / "pyzip_cache.py"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("pyzip_cache_under_test", SRC)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(zipimport, "_compile_source", zipimport._compile_source)  # restored afterwards
    spec.loader.exec_module(mod)      # /var/cache/lab-pyzip is absent here: nothing is hooked
    assert zipimport._compile_source is not mod._cached_compile
    monkeypatch.setattr(mod, "CACHE_DIR", str(tmp_path))
    return mod, tmp_path


SOURCE = b"def f(x):\n    def g():\n        return x * 2\n    return g()\nRESULT = f(21)\n"


def run(code):
    ns = {}
    exec(code, ns)  # pylint: disable=exec-used
    return ns


def test_second_run_takes_the_cached_code_with_its_own_file_name(cache):
    mod, d = cache
    first = mod._cached_compile("/tmp/a1/ansible_x_payload.zip/ansible/module_utils/m.py", SOURCE)
    assert len(list(d.iterdir())) == 1 and run(first)["RESULT"] == 42
    second = mod._cached_compile("/tmp/b2/ansible_x_payload.zip/ansible/module_utils/m.py", SOURCE)
    assert run(second)["RESULT"] == 42
    nested = [c for c in second.co_consts if hasattr(c, "co_filename")][0]
    assert second.co_filename == nested.co_filename == "/tmp/b2/ansible_x_payload.zip/ansible/module_utils/m.py"
    fresh = zipimport._compile_source("/tmp/b2/ansible_x_payload.zip/ansible/module_utils/m.py", SOURCE)
    assert second == fresh and [c for c in fresh.co_consts if hasattr(c, "co_filename")][0] == nested


def test_a_changed_source_or_path_is_compiled_again(cache):
    mod, d = cache
    mod._cached_compile("/t/p.zip/a.py", SOURCE)
    code = mod._cached_compile("/t/p.zip/a.py", SOURCE.replace(b"21", b"4"))
    assert run(code)["RESULT"] == 8
    mod._cached_compile("/t/p.zip/b.py", SOURCE)
    assert len(list(d.iterdir())) == 3


def test_unreadable_or_unwritable_cache_changes_nothing(cache):
    mod, d = cache
    name = "/t/p.zip/a.py"
    mod._cached_compile(name, SOURCE)
    entry = next(d.iterdir())
    entry.write_bytes(b"not marshal data")
    assert run(mod._cached_compile(name, SOURCE))["RESULT"] == 42
    mod.CACHE_DIR = str(d / "missing")
    assert run(mod._cached_compile(name, SOURCE))["RESULT"] == 42
