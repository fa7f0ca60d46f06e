"""The replicate job as AWX runs it: ansible-runner, a private data directory, the
collection installed by a project sync, and the job's events as what users see.

The private data directory is laid out as AWX lays it out: `project/` holds only the two
files of docs/docsite/rst/guide_awx.rst (`collections/requirements.yml` and the one-line `replicate.yml`),
`inventory/` the fleet, `env/extravars` the report path, `env/ssh_key` the Machine
credential's key (ansible-runner loads it into an ssh-agent; the inventory names no key)
and `env/cmdline` its user. The project sync installs `collections/requirements.yml`
with ansible-galaxy from a private Galaxy server (testbed/fakes/galaxy_server.py) that
serves the tarball `ansible-galaxy collection build` made of this checkout. The job goes
through `ansible-runner transmit | worker | process`, as from AWX's control node to an
execution node, and is judged by its artifacts: status, rc and job events.

The hosts are an E2E fleet (testbed/harness/e2e.py: a container per host, each with its own
sshd on a loopback address) with this test's own prefix, addresses, storages and install paths,
provisioned once with provision.yml.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from testbed.fakes.galaxy_server import GalaxyServer
from testbed.harness.awx_job import BIN, ROOT, Job, PrivateDataDir, clean_env, docs_snippet
from testbed.harness.e2e import Fleet, last_tid
from testbed.harness.sshd import free_port
from tests.support.checks import assert_reads_as

pytestmark = [pytest.mark.ssh, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (local accounts)")]  # ci-runs: CI is root

PREFIX = "dsawx"
MASTER_IP = "127.0.14.2"
STANDBYS = {"standby1": ("127.0.14.3", "dsawxone", "awx_one"), "standby2": ("127.0.14.4", "dsawxtwo", "awx_two")}
PULL_TASK = "Pull each storage"
FIELDS = ("transactions", "lag_seconds", "after_tid")
REPORT = "dirstorage-report.json"


@pytest.fixture(scope="module")
def fleet():
    fleet = Fleet(PREFIX, MASTER_IP, STANDBYS, own_paths=True)
    with fleet.running():  # it makes the folder of dirstorage_replication_bin (/opt/dsawx/bin) on every host
        fleet.playbook("provision.yml", timeout=900)  # minutes on a loaded machine
        yield fleet


@pytest.fixture(scope="module")
def galaxy(tmp_path_factory):
    """A private Galaxy server holding the collection built from this checkout."""
    out = tmp_path_factory.mktemp("build")
    res = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(ROOT)],
                         env=clean_env(ANSIBLE_HOME=str(out / "home")), capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    with GalaxyServer(out.glob("*.tar.gz")) as server:
        yield server


def awx_inventory(fleet, unreachable=()):
    """The fleet's inventory as an AWX inventory holds it: no key file (the Machine credential
    brings the key through ssh-agent) and no user (it is -u); `unreachable` standbys point to
    a port where nothing listens."""
    inv = json.loads(fleet.inventory().read_text())
    common = inv["all"]["vars"]
    del common["ansible_ssh_private_key_file"], common["ansible_user"]
    common["ansible_ssh_common_args"] = common["ansible_ssh_common_args"].replace("-o IdentitiesOnly=yes", "")
    for host in unreachable:
        inv["all"]["children"]["dirstorage_standbys"]["hosts"][host]["ansible_port"] = free_port([STANDBYS[host][0]])
    return inv


def run_job(fleet, galaxy, tmp_path, ident, unreachable=(), report=False):
    """A new private data dir, its project sync, and the job on replicate.yml (with the JSON report
    of docs/docsite/rst/guide_awx.rst in the job's artifacts if `report`)."""
    # AWX passes the job id as awx_job_id; the worker returns its artifacts/<job id>/ (/runner/... in an EE)
    extravars = {"awx_job_id": ident}
    if report:
        extravars["dirstorage_replicate_report"] = str(
            tmp_path / ("job-" + ident) / ("worker-" + ident) / "artifacts" / "{{ awx_job_id }}" / REPORT)
    pdd = PrivateDataDir(
        tmp_path / ("job-" + ident),
        {"collections/requirements.yml": docs_snippet("collections/requirements.yml"),
         "replicate.yml": docs_snippet("replicate.yml")},
        awx_inventory(fleet, unreachable), extravars,
        fleet.sshd.client_key_path, "root")
    installed = pdd.project_sync(galaxy.url)
    assert (installed / "dirstorage" / "replication" / "MANIFEST.json").is_file()
    assert sorted(p.name for p in pdd.path.joinpath("project").rglob("*") if p.is_file()) == [
        "replicate.yml", "requirements.yml"]
    return Job(pdd, "replicate.yml", ident)


def pulls(job, kind="runner_item_on_ok"):
    """{(host, storage): module result} of the pull task's per-storage events of `kind`."""
    return {(e["event_data"]["host"], e["event_data"]["res"]["item"]["name"]): e["event_data"]["res"]
            for e in job.task_events(kind, PULL_TASK)}


def expected_pulls(hosts=tuple(STANDBYS)):
    return {(h, STANDBYS[h][2]) for h in hosts}


def test_job_pulls_every_standby_and_reports_each_storage(fleet, galaxy, tmp_path):
    fleet.write_more(seconds=1.0, seed=21)
    newest = last_tid(fleet.master_home)
    job = run_job(fleet, galaxy, tmp_path, "1", report=True)
    assert (job.status, job.rc) == ("successful", 0), job.output[-4000:]
    results = pulls(job)
    assert set(results) == expected_pulls()
    for key, res in results.items():
        assert all(field in res for field in FIELDS), (key, res)
        assert res["changed"] is True and res["transactions"] > 0 and res["after_tid"] == newest, (key, res)
    # one ok event per standby for the pull task, holding its storages' results
    oks = job.task_events("runner_on_ok", PULL_TASK)
    assert sorted(e["event_data"]["host"] for e in oks) == sorted(STANDBYS)
    assert not job.events("runner_on_failed") and not job.events("runner_on_unreachable")
    for host in STANDBYS:
        assert_reads_as(fleet.replica(host), fleet.master_home)
    # the machine-readable report of docs/docsite/rst/guide_awx.rst, in the job's artifacts
    report = json.loads((job.artifacts / REPORT).read_text())
    assert {h: [r["after_tid"] for r in rs] for h, rs in report.items()} == {h: [newest] for h in STANDBYS}


def test_scheduled_run_with_nothing_new_changes_nothing(fleet, galaxy, tmp_path):
    if any(last_tid(fleet.replica(h)) != last_tid(fleet.master_home) for h in STANDBYS):
        run_job(fleet, galaxy, tmp_path, "catch-up")  # the test before did not get them there
    job = run_job(fleet, galaxy, tmp_path, "2")
    assert (job.status, job.rc) == ("successful", 0), job.output[-4000:]
    results = pulls(job)
    assert set(results) == expected_pulls()
    assert all(res["changed"] is False and res["transactions"] == 0 for res in results.values()), results
    changed = [e for e in job.events() if e["event_data"].get("res", {}).get("changed")]
    assert not changed, [(e["event"], e["event_data"].get("host"), e["event_data"].get("task")) for e in changed]
    (stats,) = job.events("playbook_on_stats")
    assert stats["event_data"]["changed"] == {} and set(stats["event_data"]["ok"]) >= set(STANDBYS)


def test_unreachable_standby_fails_the_job_and_says_why(fleet, galaxy, tmp_path):
    fleet.write_more(seconds=0.7, seed=22)
    newest = last_tid(fleet.master_home)
    job = run_job(fleet, galaxy, tmp_path, "3", unreachable=["standby2"])
    assert job.status == "failed" and job.rc != 0, job.output[-4000:]
    # the other standby pulled
    results = pulls(job)
    assert set(results) == expected_pulls(["standby1"])
    assert results[("standby1", "awx_one")]["after_tid"] == newest
    assert_reads_as(fleet.replica("standby1"), fleet.master_home)
    # the events say which host failed and why
    failed = job.events("runner_on_failed")
    assert [e["event_data"]["host"] for e in failed] == ["standby2"], failed
    msg = failed[0]["event_data"]["res"]["msg"]
    # ssh refuses to connect; with pipelining, Ansible says so in one of two ways, depending on whether
    # ssh had ended before Ansible wrote the module to its stdin (CI saw the second once)
    assert msg.startswith("standby2 is unreachable: "), msg
    assert "Connection refused" in msg or ("Data could not be sent to remote host '%s'" % STANDBYS["standby2"][0]
                                           in msg and "Broken pipe" in msg), msg
    (stats,) = job.events("playbook_on_stats")
    assert set(stats["event_data"]["failures"]) == {"standby2"}
