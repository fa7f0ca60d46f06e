"""The cron wrapper `ds-replica-cron` (plugins/module_utils/cron.py) without a real pull:
its command line, what it makes of ds-replica's answer, the metrics it records and its exit
status. tests/integration/test_metrics.py runs the real wrapper on a real pull."""

from __future__ import annotations

import fcntl
import json
import os
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


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """The account's home (its ~/.ds-replica holds the default lock folder)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.mark.parametrize("argv, expected", [
    (["main", "--", "-p", "22", "m:/s", "/r"], ("/default", None, "main", ["-p", "22", "m:/s", "/r"])),
    (["--textfile-dir", "/t", "--lock-dir", "/l", "main", "m:/s", "/r"], ("/t", "/l", "main", ["m:/s", "/r"])),
    (["main"], ("/default", None, "main", [])),
])
def test_command_line(argv, expected):
    opts = cron.parse_args(argv, "/default")
    assert (opts.textfile_dir, opts.lock_dir, opts.name, opts.args) == expected
    assert opts.stuck_after == cron.STUCK_AFTER


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


# ------------------------------------------------------------ the run's lock (issue 20)

def hold(path, pid, started):
    """Hold the lock file `path` as another run would (an open file with flock), its pid and start written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    f = open(path, "w")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write("%d %.3f\n" % (pid, started))
    f.flush()
    return f


def test_the_lock_is_in_a_folder_only_the_account_may_write(ds_replica, tmp_path, home):
    ds_replica.stdout = (json.dumps(RESULT) + "\n").encode()
    assert cron.main(["--textfile-dir", str(tmp_path), "main", "--", "m:/s", "/r"], ds_replica="/bin/dsr") == 0
    folder = home / ".ds-replica"
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert (folder / "ds-replica-main.lock").exists()
    assert cron.default_lock_dir() == str(folder) and not cron.default_lock_dir().startswith("/run/lock")


def test_a_run_that_finds_a_young_run_holding_the_lock_leaves_quietly(ds_replica, tmp_path, home, capsys):
    with hold(home / ".ds-replica" / "ds-replica-main.lock", 4242, time.time() - 60):
        rc = cron.main(["--textfile-dir", str(tmp_path), "main", "--", "m:/s", "/r"], ds_replica="/bin/dsr")
    assert (rc, ds_replica.calls, capsys.readouterr().err) == (0, [], "")
    assert not (tmp_path / "dirstorage_main.prom").exists()  # the holder records its own run


def test_a_run_held_off_by_a_stuck_run_says_so_and_records_a_failure(ds_replica, tmp_path, home, capsys):
    """A lock held past --stuck-after (a stuck run, or anyone else holding it)
    is never silent: one line (cron mails it), exit 75, a failed run in the metrics."""
    with hold(home / ".ds-replica" / "ds-replica-main.lock", 4242, time.time() - 7200):
        rc = cron.main(["--textfile-dir", str(tmp_path), "main", "--", "m:/s", "/r"], ds_replica="/bin/dsr")
    err = capsys.readouterr().err
    assert rc == 75 and ds_replica.calls == []
    assert len(err.splitlines()) == 1 and "(pid 4242) has held" in err and "it seems stuck" in err, err
    assert metrics.read_metrics(str(tmp_path / "dirstorage_main.prom"))["last_result"] == 0


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_lock_folder_others_may_write_is_refused(ds_replica, tmp_path, capsys, mode):
    """Like /run/lock: another account could hold the lock or plant the file."""
    folder = tmp_path / "locks"
    folder.mkdir()
    os.chmod(folder, mode)
    rc = cron.main(["--textfile-dir", str(tmp_path), "--lock-dir", str(folder), "main", "m:/s", "/r"],
                   ds_replica="/bin/dsr")
    err = capsys.readouterr().err
    assert rc == 1 and ds_replica.calls == []
    assert len(err.splitlines()) == 1 and "is not a folder that only this account" in err, err


def test_a_symlinked_lock_file_is_not_followed(ds_replica, tmp_path, capsys):
    folder = tmp_path / "locks"
    folder.mkdir(mode=0o700)
    (folder / "ds-replica-main.lock").symlink_to(tmp_path / "elsewhere")
    rc = cron.main(["--textfile-dir", str(tmp_path), "--lock-dir", str(folder), "main", "m:/s", "/r"],
                   ds_replica="/bin/dsr")
    assert rc == 1 and ds_replica.calls == [] and not (tmp_path / "elsewhere").exists()
    assert len(capsys.readouterr().err.splitlines()) == 1
