"""`ds-replica verify` and `status` check the mutable files the storage engine
reads when it opens a storage: x.serial, x.oid and x.packed (8 bytes each),
x.serial naming a transaction that exists, x.oid not below the highest oid of
the chain.  The real engine refuses a 9-byte x.oid ("Bad stored oid")."""

from __future__ import annotations

import json

import pytest

from dirstorage_replica import cli, durable, storage

LAYOUTS = ["lawn", "chunky"]


def _run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def _storage(unpack_fixture, case):
    home = unpack_fixture(case) / "master"
    return home, storage.Storage(home)


@pytest.mark.parametrize("case", LAYOUTS)
def test_clean_golden_storage_passes(unpack_fixture, capsys, case):
    home, _st = _storage(unpack_fixture, case)
    code, out = _run(capsys, "verify", str(home))
    assert (code, out.splitlines()[0].split(":")[0]) == (0, "OK"), out
    assert _run(capsys, "status", str(home))[0] == 0


@pytest.mark.parametrize("case", LAYOUTS)
def test_nine_byte_oid_is_critical_in_verify_and_status(unpack_fixture, capsys, case):
    home, st = _storage(unpack_fixture, case)
    path = st.path("x.oid")
    with open(path, "ab") as f:
        f.write(b"\0")
    rel = st.relpath("x.oid")
    assert rel == "A/x/oid"  # both layouts keep x.oid in a folder x/
    code, out = _run(capsys, "verify", "--json", str(home))
    result = json.loads(out)
    assert code == 2 and result["state"] == "CRITICAL"
    assert "%s is 9 bytes, not 8" % rel in result["problems"]
    code, out = _run(capsys, "status", str(home))
    assert code == 2
    assert out.startswith("CRITICAL: ") and "%s is 9 bytes, not 8" % rel in out
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize("case", LAYOUTS)
def test_oid_below_the_chain_is_critical(unpack_fixture, capsys, case):
    home, st = _storage(unpack_fixture, case)
    durable.write_atomic(st.path("x.oid"), b"\0" * 7 + b"\1")
    code, out = _run(capsys, "verify", str(home))
    assert code == 2
    assert "  %s is 0000000000000001, below object" % st.relpath("x.oid") in out


@pytest.mark.parametrize("case", LAYOUTS)
def test_serial_naming_a_missing_transaction_is_critical(unpack_fixture, capsys, case):
    home, st = _storage(unpack_fixture, case)
    missing = (int.from_bytes(st.last_tid(), "big") + 1).to_bytes(8, "big")
    durable.write_atomic(st.path("x.serial"), missing)
    code, out = _run(capsys, "verify", str(home))
    assert code == 2
    line = "%s names transaction %s, which is missing" % (st.relpath("x.serial"), storage.hex_tid(missing))
    assert "  " + line in out
    code, out = _run(capsys, "status", str(home))
    assert code == 2 and line in out


@pytest.mark.parametrize("case", LAYOUTS)
def test_short_packed_is_critical(unpack_fixture, capsys, case):
    home, st = _storage(unpack_fixture, case)
    durable.write_atomic(st.path("x.packed"), b"\0" * 7)
    code, out = _run(capsys, "verify", str(home))
    assert code == 2
    assert "  %s is 7 bytes, not 8" % st.relpath("x.packed") in out


@pytest.mark.parametrize("case", LAYOUTS)
def test_missing_serial_is_critical_in_verify_and_status(unpack_fixture, capsys, case):
    """Without x.serial a storage reads as empty (newest transaction
    0000000000000000): neither status nor verify may call that OK (issue 20:
    a hostile master's clone --delta answer once removed it)."""
    home, st = _storage(unpack_fixture, case)
    rel = st.relpath("x.serial")
    (home / rel).unlink()
    code, out = _run(capsys, "verify", str(home))
    assert code == 2 and "  %s is missing" % rel in out, out
    code, out = _run(capsys, "status", str(home))
    assert code == 2 and out.startswith("CRITICAL: ") and "%s is missing" % rel in out, out
    assert len(out.splitlines()) == 1
