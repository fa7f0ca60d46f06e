"""Engine functions stay short enough to read at once: no function in
plugins/module_utils/ is longer than 60 lines, from `def` to its last line
(complexity is held to 12 by ruff's C901, see pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[3] / "plugins" / "module_utils"
MAX_LINES = 60


def long_functions(folder=ENGINE, limit=MAX_LINES):
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append("%s:%d %s is %d lines" % (path.name, node.lineno, node.name, length))
    return found


def test_no_engine_function_is_longer_than_60_lines():
    assert long_functions() == []


def test_the_shape_check_sees_a_long_function(tmp_path):
    body = "\n".join("    x = %d" % i for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text("def long():\n%s\n\n\ndef short():\n    return 1\n" % body)
    assert long_functions(tmp_path) == ["long.py:1 long is %d lines" % (MAX_LINES + 1)]
