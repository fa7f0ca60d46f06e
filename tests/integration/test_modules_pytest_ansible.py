"""The modules through pytest-ansible's `ansible_adhoc` fixture: real module
runs (AnsiballZ, the local connection) with structured results."""

from __future__ import annotations

import sys

import pytest

from tests.support.checks import assert_objects, expected_refusal, manifest, replica_state

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture
def localhost(ansible_adhoc, tmp_path):
    """Run a module on localhost: run(name, **args) -> result.  (pytest-ansible's
    ad-hoc runs have no check mode: test_modules.py covers it with ansible -C.)"""
    inv = tmp_path / "hosts"
    inv.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)

    def run(module, **args):
        hosts = ansible_adhoc(inventory=str(inv))
        return getattr(hosts["localhost"], "dirstorage.replication." + module)(**args)["localhost"]

    return run


def test_replicate_then_nothing_then_storage_info(localhost, unpack_fixture):
    d = unpack_fixture("chunky")
    m = manifest(d)
    first = localhost("replicate", master=str(d / "master"), path=str(d / "replica"))
    assert first["changed"] is True, first
    assert first["after_tid"] == m["master"]["last_tid"]
    assert first["files"] == len(m["expected_increment"]) and first["bytes"] > 0
    assert_objects(d / "replica", m["master"]["objects"])
    second = localhost("replicate", master=str(d / "master"), path=str(d / "replica"))
    assert (second["changed"], second["transactions"]) == (False, 0)
    info = localhost("storage_info", path=str(d / "replica"))
    assert info["changed"] is False
    assert info["storage"]["last_tid"] == m["master"]["last_tid"] and info["storage"]["format"] == "chunky"


def test_refusal_fails_with_one_line(localhost, unpack_fixture):
    d = unpack_fixture("foreign")
    before = replica_state(d / "replica")
    res = localhost("replicate", master=str(d / "master"), path=str(d / "replica"))
    assert res.get("failed") is True
    assert expected_refusal(manifest(d)) in res["msg"] and "\n" not in res["msg"]
    assert replica_state(d / "replica") == before


def test_clone_then_verify(localhost, unpack_fixture, tmp_path):
    d = unpack_fixture("crashed-master")
    dest = tmp_path / "standby"
    made = localhost("clone", master=str(d / "master"), path=str(dest))
    assert made["changed"] is True
    assert made["after_tid"] == manifest(d)["after_recovery"]["last_tid"]
    again = localhost("clone", master=str(d / "master"), path=str(dest))
    assert again["changed"] is False
    checked = localhost("verify", path=str(dest), master=str(d / "master"))
    assert checked["ok"] is True and not checked.get("failed"), checked
