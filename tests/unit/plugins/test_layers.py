"""The engine's layers hold: every import in plugins/module_utils/ points down
LAYERS, so each file can be read knowing only the files below it.

LAYERS is the one place the order is written (top first; within a layer, a
file may import only the files after it).  Every engine file must be placed
in it, so a new file has to be given its place."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[3] / "plugins" / "module_utils"

# (layer, files top to bottom); docs/docsite/rst/architecture.rst follows this order (checked below)
LAYERS = [
    ("command line and modules", ["cli", "cron", "fleet", "access", "ansible_args", "install"]),
    ("operations", ["follow", "replica", "clone", "promote", "reseed", "reseed_inplace", "info"]),
    ("steps the operations share", ["partial", "keep_aside", "increment", "hold", "follow_state", "metrics", "hot"]),
    ("options", ["options"]),
    ("transport", ["transport"]),
    ("master side", ["serve", "packmirror", "pack", "positions", "watch", "delta"]),
    ("wire", ["protocol"]),
    ("snapshot", ["snapshot"]),
    ("journal", ["journal"]),
    ("archive", ["ustar"]),
    ("fleet marks", ["fleet_marks"]),
    ("storage", ["storage"]),
    ("durable files", ["durable"]),
    ("errors", ["errors"]),
]

# how the engine is imported outside its own package
PACKAGES = ("dirstorage_replica", "ansible_collections.dirstorage.replication.plugins.module_utils")


def order():
    """Each engine file's rank: 0 at the top."""
    names = [name for layer in LAYERS for name in layer[1]]
    return {name: rank for rank, name in enumerate(names)}


def _engine_name(dotted):
    for package in PACKAGES:
        if dotted == package:
            return ""
        if dotted.startswith(package + "."):
            return dotted[len(package) + 1:].split(".")[0]
    return None


def imported(tree):
    """(line, engine file) of every import of an engine file in `tree`:
    relative, or through one of PACKAGES, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, _engine_name(alias.name)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "") if node.level else _engine_name(node.module or "")
            if base in (".", ""):  # from . import journal, ustar
                found += [(node.lineno, alias.name) for alias in node.names]
            elif base is not None:
                found.append((node.lineno, base.lstrip(".").split(".")[0]))
    return [(line, name) for line, name in found if name]


def engine_files(folder=ENGINE):
    return sorted(path.stem for path in folder.glob("*.py") if path.stem != "__init__")


def upward_imports(folder=ENGINE, layers=None):
    """Every import of a file placed above the importer (or not placed)."""
    rank = layers or order()
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.stem == "__init__":
            continue
        for line, name in imported(ast.parse(path.read_text(), str(path))):
            if name not in rank or rank[name] <= rank[path.stem]:
                found.append("%s:%d imports %s" % (path.name, line, name))
    return found


def test_every_engine_file_has_its_place_in_the_layers():
    names = [name for layer in LAYERS for name in layer[1]]
    assert len(names) == len(set(names)), "a file is placed twice"
    assert sorted(names) == engine_files()


def test_every_engine_import_points_down_the_layers():
    assert upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    (tmp_path / "top.py").write_text("from .bottom import x\nfrom . import middle\n")
    (tmp_path / "middle.py").write_text("def f():\n    from dirstorage_replica.top import y\n")
    (tmp_path / "bottom.py").write_text(
        "import dirstorage_replica.middle\n"
        "from ansible_collections.dirstorage.replication.plugins.module_utils import elsewhere\n")
    assert upward_imports(tmp_path, {"top": 0, "middle": 1, "bottom": 2}) == [
        "bottom.py:1 imports middle", "bottom.py:2 imports elsewhere", "middle.py:2 imports top"]


def test_the_architecture_page_lists_the_layers_as_written_here():
    page = (ENGINE.parents[1] / "docs" / "docsite" / "rst" / "architecture.rst").read_text()
    listed = [line[3:] for line in page.splitlines() if line.startswith("#. ")]
    assert listed == ["%s: %s" % (layer, ", ".join("``%s.py``" % f for f in files)) for layer, files in LAYERS]
    files = [line.split(" | ")[1].strip() for line in page.splitlines() if line.startswith("| ")]
    table = [cell for cell in files if cell.endswith(".py``")]
    assert table == ["``%s.py``" % f for _layer, files in LAYERS for f in files]
