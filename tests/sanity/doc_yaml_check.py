# Copyright: ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Name the plugin files whose DOCUMENTATION, EXAMPLES or RETURN block is not valid YAML.

ansible-test's validate-modules stops the whole sanity run with a bare YAML traceback that does not
say which file it was reading; scripts/sanity.sh runs this afterwards to point at the culprit.
Usage: python doc_yaml_check.py [COLLECTION_ROOT]   (exit 1 when a block does not parse)
Not part of the collection's content.
"""

from __future__ import annotations

import ast
import glob
import os
import sys

import yaml

BLOCKS = ('DOCUMENTATION', 'EXAMPLES', 'RETURN')


def doc_blocks(source: str, path: str) -> list[tuple[str, str]]:
    """Return (name, text) for each top-level string assignment to a documentation block."""
    found = []
    for node in ast.parse(source, path).body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in BLOCKS \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.append((target.id, node.value.value))
    return found


def problems(root: str) -> list[str]:
    """One line per documentation block under ROOT/plugins that YAML cannot load."""
    lines = []
    for path in sorted(glob.glob(os.path.join(root, 'plugins', '*', '*.py'))):
        with open(path, encoding='utf-8') as handle:
            source = handle.read()
        try:
            blocks = doc_blocks(source, path)
        except SyntaxError as exc:
            lines.append('%s: not valid Python: %s' % (os.path.relpath(path, root), exc))
            continue
        for name, text in blocks:
            try:
                yaml.safe_load(text)
            except yaml.YAMLError as exc:
                lines.append('%s %s: %s' % (os.path.relpath(path, root), name, ' '.join(str(exc).split())))
    return lines


def main(argv: list[str]) -> int:
    """Print the problems; exit status 1 when there are any."""
    found = problems(argv[0] if argv else '.')
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
