"""docs/cli.md and docs/docsite/rst/cli.rst, the ds-replica reference in the repository and in
the docsite, are what docs/gen_cli_reference.py writes from the command's argparse parsers now:
a new option, command or help text without regenerating the pages fails here
(`.venv/bin/python docs/gen_cli_reference.py` rewrites them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dirstorage_replica import cli

ROOT = Path(__file__).resolve().parents[3]
GENERATOR = ROOT / "docs" / "gen_cli_reference.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_parsers():
    gen = _generator()
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == gen.render(), "docs/cli.md is out of date: run .venv/bin/python docs/gen_cli_reference.py"
    committed = (ROOT / "docs" / "docsite" / "rst" / "cli.rst").read_text(encoding="utf-8")
    assert committed == gen.render_rst(), \
        "docs/docsite/rst/cli.rst is out of date: run .venv/bin/python docs/gen_cli_reference.py"


def test_every_command_and_option_has_its_place():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parsers = cli.parsers()
    assert set(parsers) == set(cli.VERBS) == set(cli.COMMANDS)
    for verb, parser in parsers.items():
        assert "## `ds-replica %s`" % verb in text
        for action in parser._actions:
            for flag in [] if action.dest == "help" else action.option_strings:
                assert "`%s" % flag in text, (verb, flag)
