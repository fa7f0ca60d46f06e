"""The cron wrapper `ds-replica-cron` (plugins/module_utils/cron.py) without a real pull:
its command line, what it makes of ds-replica's answer, the metrics it records and its exit
status. tests/integration/test_metrics.py runs the real wrapper on a real pull."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dirstorage_replica import cron, metrics

RESULT = {"changed": True, "transactions": 3, "files": 5, "bytes": 2048, "lag_seconds": 0.5,
          "snapshot_seconds": 0.25, "downtime_seconds": 0.125}


@pytest.fixture
def ds_replica(monkeypatch):
    """A stand-in for the ds-replica child: set .rc and .stdout; .calls records the command lines."""

    class Child:
        rc = 0
        stdout = b""
        calls = []

    def run(cmd, stdout=None, check=False):
        Child.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, Child.rc, Child.stdout)

    monkeypatch.setattr(cron.subprocess, "run", run)
    return Child


@pytest.mark.parametrize("argv, expected", [
    (["main", "--", "-p", "22", "m:/s", "/r"], ("/default", "main", ["-p", "22", "m:/s", "/r"])),
    (["--textfile-dir", "/t", "main", "m:/s", "/r"], ("/t", "main", ["m:/s", "/r"])),
    (["main"], ("/default", "main", [])),
])
def test_command_line(argv, expected):
    assert cron.parse_args(argv, "/default") == expected


def test_json_result_is_the_last_line():
    assert cron.json_result(b'noise\n{"transactions": 1}\n') == {"transactions": 1}
    assert cron.json_result(b"") is None
    assert cron.json_result(b"not json\n") is None
    assert cron.json_result(b"[1, 2]\n") is None


def test_success_runs_ds_replica_quietly_and_records_the_result(ds_replica, tmp_path, capsys):
    ds_replica.stdout = (json.dumps(RESULT) + "\n").encode()
    before = time.time()
    rc = cron.main(["--textfile-dir", str(tmp_path), "main", "--", "m:/s", "/r"], ds_replica="/bin/dsr")
    assert rc == 0
    assert ds_replica.calls == [["/bin/dsr", "-q", "--json", "m:/s", "/r"]]
    values = metrics.read_metrics(str(tmp_path / "dirstorage_main.prom"))
    assert values["last_result"] == 1
    assert before <= values["last_attempt_timestamp_seconds"] <= values["last_success_timestamp_seconds"] <= time.time()
    assert {k: values[k] for k in metrics.RESULT_FIGURES} == {k: float(RESULT[k]) for k in metrics.RESULT_FIGURES}
    assert capsys.readouterr() == ("", "")  # silent: cron mails nothing


def test_failure_passes_the_status_on_and_keeps_the_last_success(ds_replica, tmp_path):
    path = str(tmp_path / "dirstorage_main.prom")
    old = metrics.after_success({}, 10.0, 11.0, RESULT)
    metrics.write_metrics(path, "main", old)
    ds_replica.rc = 75
    before = time.time()
    assert cron.main(["--textfile-dir", str(tmp_path), "main", "m:/s", "/r"], ds_replica="/bin/dsr") == 75
    values = metrics.read_metrics(path)
    assert values["last_result"] == 0
    assert values["last_attempt_timestamp_seconds"] >= before
    assert values["last_success_timestamp_seconds"] == 11.0
    assert values["transactions"] == RESULT["transactions"]


def test_success_without_a_json_result_counts_as_a_failure(ds_replica, tmp_path, capsys):
    ds_replica.stdout = b"Replica complete\n"
    assert cron.main(["--textfile-dir", str(tmp_path), "main", "m:/s", "/r"], ds_replica="/bin/dsr") == 1
    assert capsys.readouterr().err == "ds-replica-cron: ds-replica printed no JSON result\n"
    assert metrics.read_metrics(str(tmp_path / "dirstorage_main.prom"))["last_result"] == 0


@pytest.mark.parametrize("child_rc, expected", [(0, 1), (75, 75)])
def test_an_unwritable_metrics_folder_is_said_and_fails_the_run(ds_replica, tmp_path, capsys, child_rc, expected):
    ds_replica.rc = child_rc
    ds_replica.stdout = (json.dumps(RESULT) + "\n").encode()
    missing = tmp_path / "missing"
    assert cron.main(["--textfile-dir", str(missing), "main", "m:/s", "/r"], ds_replica="/bin/dsr") == expected
    assert capsys.readouterr().err.startswith("ds-replica-cron: cannot write %s/dirstorage_main.prom: " % missing)


def test_the_default_ds_replica_is_the_one_beside_the_command(tmp_path, monkeypatch):
    (tmp_path / "ds-replica-cron").write_text("")
    monkeypatch.setattr(cron.sys, "argv", [str(tmp_path / "ds-replica-cron")])
    assert cron.default_ds_replica() == "ds-replica"  # none beside it: from PATH
    (tmp_path / "ds-replica").write_text("#!/bin/sh\n")
    (tmp_path / "ds-replica").chmod(0o755)
    assert cron.default_ds_replica() == str(tmp_path / "ds-replica")
