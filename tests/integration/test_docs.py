"""The documentation keeps up with the code.

- Every error message the engine can raise (the first argument of DSError and its
  subclasses in plugins/module_utils/*.py, found with the `ast` module) appears in
  the troubleshooting tables of docs/docsite/rst/troubleshooting.rst (the troubleshooting page of
  the docsite), so adding a message without documenting it fails here.
- `ansible-doc` renders every module in plugins/modules/ and every role that has
  meta/argument_specs.yml, with exit 0 and no warning.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dirstorage_replica import metrics

ROOT = Path(__file__).resolve().parent.parent.parent
ENGINE = ROOT / "plugins" / "module_utils"
TROUBLESHOOTING = ROOT / "docs" / "docsite" / "rst" / "troubleshooting.rst"
MONITORING = ROOT / "docs" / "docsite" / "rst" / "guide_monitoring.rst"
ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"

PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrifgx%]")


def _format_string(node):
    """The message format of `Cls("..." % args)`, `Cls("...")` or `Cls("..." "...")`, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _format_string(node.left)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _format_string(node.left), _format_string(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _class_name(func):
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _error_classes(trees):
    """{name: has its own __init__} for DSError and every engine class derived from it."""
    classes = {"DSError": False}
    grew = True
    while grew:
        grew = False
        for tree in trees:
            for node in ast.walk(tree):
                if (isinstance(node, ast.ClassDef) and node.name not in classes
                        and any(_class_name(b) in classes for b in node.bases)):
                    classes[node.name] = any(isinstance(b, ast.FunctionDef) and b.name == "__init__"
                                             for b in node.body)
                    grew = True
    return classes


def error_messages():
    """[(file:line, class, template)] for every error message constructed in the engine:
    `SomeError("..." % args, hint)` and, in error classes with their own __init__,
    `super().__init__("..." % args)`. template: the format with each placeholder written as `…`."""
    paths = sorted(ENGINE.glob("*.py"))
    trees = {path: ast.parse(path.read_text(), str(path)) for path in paths}
    classes = _error_classes(trees.values())
    found = []
    for path, tree in trees.items():
        owners = {}
        for cls in ast.walk(tree):
            if isinstance(cls, ast.ClassDef):
                for node in ast.walk(cls):
                    owners[node] = cls.name
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = _class_name(node.func)
            is_super_init = (name == "__init__" and isinstance(node.func.value, ast.Call)
                             and _class_name(node.func.value.func) == "super" and owners.get(node) in classes)
            if is_super_init:
                name = owners[node]
            elif name not in classes or classes[name]:
                continue  # not an error, or one whose own __init__ builds the message (found above)
            fmt = _format_string(node.args[0])
            if fmt is None and is_super_init:
                continue  # plumbing (DSError passing its message on to Exception)
            where = "%s:%d" % (path.relative_to(ROOT), node.lineno)
            assert fmt is not None, "%s: the message is not a literal format string; document it by hand" % where
            found.append((where, name, normalise(PLACEHOLDER.sub("…", fmt))))
    return found


def normalise(text):
    return " ".join(text.replace("`", "").split())


def troubleshooting_table_messages():
    """The first cell of every row of the troubleshooting page's grid tables (between its
    `.. troubleshooting:start` and `.. troubleshooting:end` comments), normalised. A cell may
    span several lines; the column's width is read from the table's `+---+` border."""
    text = TROUBLESHOOTING.read_text()
    start = text.index(".. troubleshooting:start")
    end = text.index(".. troubleshooting:end")
    cells, width, cell = [], None, []
    for line in text[start:end].splitlines():
        if line.startswith("+"):
            if cell and not line.startswith("+="):
                cells.append(normalise(" ".join(cell)))
            cell = []
            width = line.index("+", 1)
        elif line.startswith("|") and width is not None:
            cell.append(line[1:width])
        else:
            width, cell = None, []
    return [c for c in cells if c != "message"]


#: how many leading literal words of a message identify it (placeholders left out): enough to
#: tell messages apart, few enough that rewording a message's tail does not break the docs
KEY_WORDS = 6


def literal_words(template):
    return [w for w in template.replace("…", " ").split() if w]


def _contains(words, key):
    return any(words[i:i + len(key)] == key for i in range(len(words) - len(key) + 1))


def test_engine_has_error_messages():
    # guards the extraction itself: a refactoring that hides the messages from `ast` must not pass silently
    assert len(error_messages()) > 50


def test_every_error_message_is_in_the_troubleshooting_table():
    documented = [literal_words(cell) for cell in troubleshooting_table_messages()]
    missing = sorted({(template, where) for where, _cls, template in error_messages()
                      if not any(_contains(cell, literal_words(template)[:KEY_WORDS]) for cell in documented)})
    assert not missing, "docs/docsite/rst/troubleshooting.rst lacks these messages (add a row with cause and " \
        "cure):\n" + "\n".join("  %s   (%s)" % m for m in missing)


def _ansible_doc(*args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="1")
    return subprocess.run([str(ANSIBLE_DOC), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def _no_warnings(res):
    assert res.returncode == 0, res.stderr
    noise = [line for line in res.stderr.splitlines() if re.search(r"\[(WARNING|DEPRECATION WARNING|ERROR)\]", line)]
    assert not noise, "\n".join(noise)


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_module(module):
    res = _ansible_doc("dirstorage.replication." + module)
    _no_warnings(res)
    assert "dirstorage.replication." + module in res.stdout
    assert "EXAMPLES" in res.stdout and "RETURN VALUES" in res.stdout


def test_every_role_documents_its_arguments():
    assert sorted(ROLES) == sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_role(role):
    res = _ansible_doc("-t", "role", "dirstorage.replication." + role)
    _no_warnings(res)
    assert "ENTRY POINT" in res.stdout


def test_monitoring_docs_use_the_metrics_the_schedule_role_writes():
    written = {metrics.PREFIX + name for name, _kind, _help in metrics.METRICS}
    for doc in (MONITORING, ROOT / "docs" / "prometheus" / "dirstorage-alerts.yml"):
        used = set(re.findall(r"dirstorage_replication_[a-z_]+", doc.read_text()))
        assert used <= written, "%s uses metrics the schedule role does not write: %s" % (doc, used - written)
    assert written <= set(re.findall(r"dirstorage_replication_[a-z_]+", MONITORING.read_text()))


if __name__ == "__main__":
    # prints the messages, for writing the table
    for where, cls, template in error_messages():
        print("%-40s %-15s %s" % (where, cls, template))
