"""The metrics file the schedule role's cron wrapper writes, read with the
Prometheus text-format parser and checked against the module's own answer
for the same pull, and against storage_info."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dirstorage_replica import storage
from tests.integration.test_modules import BIN, ENV, ROOT, run_module
from tests.support.checks import manifest

TEMPLATE = ROOT / "roles" / "schedule" / "templates" / "ds-replica-cron.j2"
RULES = ROOT / "docs" / "prometheus" / "dirstorage-alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "dirstorage-alerts.test.yml"


def promtool(*args, stdin=None):
    """Prometheus' own checker (`make promtool` puts it in build/tools)."""
    exe = shutil.which("promtool") or str(ROOT / "build" / "tools" / "promtool")
    assert Path(exe).is_file(), "promtool is missing: run `make promtool` (from Debian's prometheus package)"
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False)


def render_launcher(tmp_path, textfile_dir):
    """The schedule role's launcher, rendered with ansible's own template module. Its python runs
    with -S (no site-packages), so it finds the engine only in the lib folder it was given, as on a
    host where the install role copied it."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "dirstorage_replica").symlink_to(ROOT / "plugins" / "module_utils")
    dest = tmp_path / "ds-replica-cron"
    extra = {"schedule_python": "%s -S" % sys.executable, "schedule_ds_replica": str(BIN / "ds-replica"),
             "schedule_textfile_dir": str(textfile_dir), "dirstorage_replication_lib_dir": str(lib)}
    r = subprocess.run([str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.template",
                        "-a", "src=%s dest=%s mode=0755" % (TEMPLATE, dest), "-e", json.dumps(extra)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return [str(dest)]


@pytest.fixture(params=["role", "pip"])
def wrapper(request, tmp_path):
    """The command line of the wrapper and its metrics folder: as the schedule role installs it
    (launcher) or as pip does (console script of pyproject.toml, next to ds-replica)."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    locks = ["--lock-dir", str(tmp_path / "locks")]  # not the account's own ~/.ds-replica
    if request.param == "role":
        return render_launcher(tmp_path, textfile) + locks, textfile
    return [str(BIN / "ds-replica-cron"), "--textfile-dir", str(textfile)] + locks, textfile


def read_metrics(path):
    values = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.documentation, family.name
        for sample in family.samples:
            assert sample.labels == {"storage": "main"}
            values[sample.name[len("dirstorage_replication_"):]] = sample.value
    return values


def test_metrics_match_the_module_result(unpack_fixture, wrapper):
    d = unpack_fixture("flat")
    m = manifest(d)
    wrapper, textfile = wrapper
    # what the module says would come (check mode changes nothing) ...
    ok, would = run_module("replicate", {"master": str(d / "master"), "path": str(d / "replica")}, check=True)
    assert ok and would["transactions"] > 0
    # ... is what the scheduled run moved and reported
    t0 = time.time()
    run = subprocess.run([*wrapper, "main", "--", str(d / "master"), str(d / "replica")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")  # silent: cron mails nothing
    values = read_metrics(textfile / "dirstorage_main.prom")
    check = promtool("check", "metrics", stdin=(textfile / "dirstorage_main.prom").read_text())
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
    assert values["last_result"] == 1
    assert t0 <= values["last_attempt_timestamp_seconds"] <= values["last_success_timestamp_seconds"] <= time.time()
    assert values["transactions"] == would["transactions"]
    assert values["bytes"] == would["bytes"]
    assert values["lag_seconds"] == 0.0
    assert 0 <= values["snapshot_seconds"] <= time.time() - t0
    # storage_info tells AWX users the same: the replica is at the master's newest transaction
    ok, info = run_module("storage_info", {"path": str(d / "replica")})
    assert ok and info["storage"]["last_tid"] == m["master"]["last_tid"]
    assert info["storage"]["last_replication"] is not None

    # a failed run: result 0, the last success and its figures kept, status passed on
    (d / "master" / "config" / "identity").write_text("0" * 32 + "\n")
    t1 = time.time()
    failed = subprocess.run([*wrapper, "main", "--", str(d / "master"), str(d / "replica")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode != 0 and "identity" in failed.stderr
    after = read_metrics(textfile / "dirstorage_main.prom")
    check = promtool("check", "metrics", stdin=(textfile / "dirstorage_main.prom").read_text())
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
    assert after["last_result"] == 0
    assert after["last_success_timestamp_seconds"] == values["last_success_timestamp_seconds"]
    assert t1 <= after["last_attempt_timestamp_seconds"] <= time.time()
    assert after["transactions"] == values["transactions"]
    assert storage.Storage(d / "replica").last_tid().hex().upper() == m["master"]["last_tid"]
    assert not [p for p in Path(textfile).iterdir() if p.name.endswith(".tmp")]


def test_alert_rules_load_and_fire_as_documented():
    """The rules operators load into Prometheus are valid, and each alert fires
    (and stays quiet) as its comment says: promtool's rule unit tests, with a
    healthy second storage that must never alert."""
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    run = promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_a_master_writes_its_horizon_metrics(tmp_path):
    """`ds-replica horizon --metrics` on a master: a file promtool accepts, with the
    age of the oldest position and how long its standby has been silent."""
    from dirstorage_replica.positions import Recorder
    from testbed.fakes.simulated_storage import create_storage

    master = tmp_path / "main"
    create_storage(master)
    now = time.time()
    for name, tid_age, seen_age in (("near", 60, 5), ("gone", 10 * 86400, 3 * 86400)):
        Recorder(str(master), name, "pull", clock=lambda s=now - seen_age: s).record(
            storage.tid_from_epoch(now - tid_age))
    prom = tmp_path / "dirstorage_master_main.prom"
    run = subprocess.run([str(BIN / "ds-replica"), "horizon", "--max-age", "2", "--metrics", str(prom), str(master)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "held by standby near" in run.stdout and "gone: holds" in run.stdout and "SILENT" in run.stdout
    check = promtool("check", "metrics", stdin=prom.read_text())
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
    values = read_metrics(prom)
    assert (values["standbys"], values["silent_standbys"]) == (2, 1)
    assert 10 * 86400 - 5 < values["horizon_age_seconds"] < 10 * 86400 + 60
    assert 3 * 86400 - 5 < values["horizon_holder_silence_seconds"] < 3 * 86400 + 60
