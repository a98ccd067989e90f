# Copyright: ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The layer rules of docs/architecture.md, checked on the source tree.

- module_utils holds what runs on the managed host: it imports no plugin_utils, no controller
  plugin and nothing of ansible-core besides ansible.module_utils.
- modules import no plugin_utils (they are shipped to the host without them).
- controller-only code (the pair derivation, IKE configuration) lives in plugin_utils, and no
  module imports it.
- no function in plugins/ is longer than 80 lines.
- one client per tool: every `ip` Runner is handed straight to _iproute2.Ip, every `tc` Runner to
  _tc.TcClient and every `devlink` Runner to _devlink.Devlink, so each command line of those tools
  is written in one class.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
COLL = "ansible_collections.ipsec_offload.mlx5.plugins."
MAX_LINES = 80


def _py(sub):
    return sorted((PLUGINS / sub).glob("*.py"))


def _imports(path):
    """Every module name a file imports (``from X import y`` gives X and X.y)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update("%s.%s" % (node.module, a.name) for a in node.names)
    return names


def _long_functions(path, root=ROOT):
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_LINES:
                out.append("%s:%d %s (%d lines)" % (path.relative_to(root), node.lineno, node.name, length))
    return out


def _controller_imports(path):
    """What a host-side file imports that is not host-side: the collection's non-module_utils code,
    ansible-core outside ansible.module_utils."""
    return sorted(n for n in _imports(path)
                  if n.startswith(COLL) and not n.startswith(COLL + "module_utils")
                  or n.startswith("ansible.") and not n.startswith("ansible.module_utils"))


@pytest.mark.parametrize("path", _py("module_utils"), ids=lambda p: p.name)
def test_module_utils_import_only_host_side_code(path):
    bad = _controller_imports(path)
    assert bad == [], "%s imports controller-side code: %s" % (path.name, bad)


@pytest.mark.parametrize("path", _py("modules"), ids=lambda p: p.name)
def test_modules_import_no_plugin_utils(path):
    bad = sorted(n for n in _imports(path) if n.startswith(COLL + "plugin_utils"))
    assert bad == [], "%s imports plugin_utils (not shipped to the host): %s" % (path.name, bad)


def test_controller_only_code_is_in_plugin_utils():
    assert not (PLUGINS / "module_utils" / "_pairs.py").exists()
    assert not (PLUGINS / "module_utils" / "_ike.py").exists()
    assert (PLUGINS / "plugin_utils" / "_pairs.py").exists()
    assert (PLUGINS / "plugin_utils" / "_ike.py").exists()


def test_no_function_over_80_lines():
    long = [f for path in sorted(PLUGINS.rglob("*.py")) for f in _long_functions(path)]
    assert long == [], "functions over %d lines: %s" % (MAX_LINES, "; ".join(long))


CLIENTS = {"ip": "Ip", "tc": "TcClient", "devlink": "Devlink"}


def _call_name(node):
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)


def _loose_runners(path, root=ROOT):
    """Runner(module, "ip"|"tc"|"devlink", ...) calls that are not the argument of that tool's client."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrapped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in CLIENTS.values():
            wrapped.update(id(a) for a in node.args)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == "Runner" and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in CLIENTS:
            tool = node.args[1].value
            if id(node) not in wrapped:
                out.append("%s:%d Runner for %s outside %s" % (path.relative_to(root), node.lineno, tool, CLIENTS[tool]))
    return out


def test_one_client_per_tool():
    loose = [f for path in sorted(PLUGINS.rglob("*.py")) for f in _loose_runners(path)]
    assert loose == [], "; ".join(loose)


def test_the_checks_see_a_violation(tmp_path):
    """The readers above find what they look for (a check that cannot fail checks nothing)."""
    src = tmp_path / "x.py"
    src.write_text("from %splugin_utils import _pairs\nimport ansible.plugins.action\n"
                   "from ansible.module_utils.basic import AnsibleModule\n\n\ndef f():\n%s"
                   % (COLL, "    x = 1\n" * MAX_LINES), encoding="utf-8")
    assert _controller_imports(src) == ["ansible.plugins.action", COLL + "plugin_utils", COLL + "plugin_utils._pairs"]
    assert _long_functions(src, tmp_path) == ["x.py:6 f (%d lines)" % (MAX_LINES + 1)]
    src.write_text('a = Ip(Runner(m, "ip"))\nb = Runner(m, "ip", ns)\nc = TcClient(Runner(m, "tc"), a)\n'
                   'd = Runner(m, "tc")\ne = Runner(m, "devlink")\nf = Runner(m, "ethtool")\n', encoding="utf-8")
    assert _loose_runners(src, tmp_path) == ["x.py:2 Runner for ip outside Ip", "x.py:4 Runner for tc outside TcClient",
                                             "x.py:5 Runner for devlink outside Devlink"]
