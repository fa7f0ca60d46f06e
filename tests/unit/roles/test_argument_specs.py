"""Each role's meta/argument_specs.yml (what `ansible-doc -t role` shows and what Ansible
checks when the role runs) agrees with its defaults/main.yml: every default is documented in
every entry point, with the same value, and no documented default is missing from the file.
A default computed with Jinja is documented in words (no `default:` in the spec)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "roles"


def _yaml(path):
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _entry_points():
    points = []
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        specs = _yaml(role / "meta" / "argument_specs.yml")["argument_specs"]
        for entry, spec in specs.items():
            points.append(pytest.param(role.name, spec.get("options") or {}, id="%s:%s" % (role.name, entry)))
    return points


@pytest.mark.parametrize("role, options", _entry_points())
def test_argument_specs_agree_with_defaults(role, options):
    defaults = _yaml(ROLES / role / "defaults" / "main.yml") or {}
    assert sorted(set(defaults) - set(options)) == [], "defaults of %s missing from its argument_specs" % role
    for name, value in defaults.items():
        if isinstance(value, str) and "{{" in value:
            assert "default" not in options[name], "%s: %s is computed; describe its default in words" % (role, name)
        else:
            assert "default" in options[name] and options[name]["default"] == value, (role, name)
    documented = {name for name, option in options.items() if "default" in option}
    assert sorted(documented - set(defaults)) == [], "%s documents defaults its defaults/main.yml lacks" % role


def test_every_role_variable_carries_its_role_prefix_or_is_collection_level():
    """ansible-lint's var-naming[no-role-prefix] checks the defaults; this also covers the
    options documented without a default (only the deprecated install_* aliases may differ)."""
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        for spec in _yaml(role / "meta" / "argument_specs.yml")["argument_specs"].values():
            odd = [n for n in spec.get("options") or {} if not n.startswith(role.name + "_")]
            allowed = {"install_bin", "install_lib_dir"} if role.name == "dirstorage_replication" else set()
            assert set(odd) <= allowed, (role.name, odd)
