"""Pulls across a real OpenSSH sshd on 127.0.0.1: paramiko and `-e ssh`,
host key checking, and a key restricted to `ds-replica serve`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dirstorage_replica import errors
from dirstorage_replica.options import PullOptions
from dirstorage_replica.replica import pull
from testbed.harness.sshd import make_keypair
from tests.support.checks import assert_objects, assert_same_files, manifest, replica_state

NORMAL = ["bushy", "chunky", "lawn", "flat"]
DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))


def paramiko_opts(sshd, **kw):
    return PullOptions(port=sshd.port, key_file=str(sshd.client_key_path), known_hosts_file=str(sshd.known_hosts_path),
                       remote_command=DS_REPLICA, timeout=20, **kw)


def master_spec(sshd, path):
    return "%s@%s:%s" % (sshd.user, sshd.host, path)


@pytest.mark.parametrize("case", NORMAL)
def test_pull_over_paramiko(sshd, unpack_fixture, case):
    d = unpack_fixture(case)
    m = manifest(d)
    started = time.monotonic()
    result = pull(master_spec(sshd, d / "master"), str(d / "replica"), paramiko_opts(sshd))
    took = time.monotonic() - started
    assert result["after_tid"] == m["master"]["last_tid"] and result["changed"]
    # the master reports how long it held its snapshot (0.0 when it does not say)
    assert 0 < result["snapshot_seconds"] < took and result["files"] == len(m["expected_increment"])
    assert_same_files(d / "replica", d / "master", m["expected_increment"])
    assert_objects(d / "replica", m["master"]["objects"])
    again = pull(master_spec(sshd, d / "master"), str(d / "replica"), paramiko_opts(sshd))
    assert (again["changed"], again["transactions"]) == (False, 0)


@pytest.mark.parametrize("case", NORMAL)
def test_pull_over_openssh_command(sshd, unpack_fixture, case):
    d = unpack_fixture(case)
    m = manifest(d)
    proc = subprocess.run([DS_REPLICA, "-e", sshd.ssh_command_string(), "--remote-command", DS_REPLICA,
                           master_spec(sshd, d / "master"), str(d / "replica")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "Replica complete"
    assert_objects(d / "replica", m["master"]["objects"])
    quiet = subprocess.run([DS_REPLICA, "-q", "-e", sshd.ssh_command_string(), "-d", str(Path(DS_REPLICA).parent),
                            master_spec(sshd, d / "master"), str(d / "replica")], capture_output=True, text=True,
                           check=False)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_refusal_over_ssh_is_one_clear_line(sshd, unpack_fixture):
    d = unpack_fixture("packed-since")
    before = replica_state(d / "replica")
    proc = subprocess.run([DS_REPLICA, "-p", str(sshd.port), "-i", str(sshd.client_key_path),
                           "--known-hosts", str(sshd.known_hosts_path), "--remote-command", DS_REPLICA,
                           master_spec(sshd, d / "master"), str(d / "replica")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "packed since the last replica" in proc.stderr
    assert replica_state(d / "replica") == before


def test_unknown_host_key_is_refused(sshd, unpack_fixture, tmp_path):
    d = unpack_fixture("chunky")
    before = replica_state(d / "replica")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    opts = PullOptions(port=sshd.port, key_file=str(sshd.client_key_path), known_hosts_file=str(empty),
                       remote_command=DS_REPLICA, timeout=20)
    with pytest.raises(errors.DSError, match="host key .* is unknown"):
        pull(master_spec(sshd, d / "master"), str(d / "replica"), opts)
    assert replica_state(d / "replica") == before
    # OpenSSH refuses too, with StrictHostKeyChecking=yes
    cmd = "ssh -F /dev/null -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes " \
          "-o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null -p %d" % (sshd.client_key_path, empty, sshd.port)
    proc = subprocess.run([DS_REPLICA, "-q", "-e", cmd, "--remote-command", DS_REPLICA,
                           master_spec(sshd, d / "master"), str(d / "replica")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "Host key verification failed" in proc.stderr
    assert replica_state(d / "replica") == before


def test_accept_new_host_key_records_it_once(sshd, unpack_fixture, tmp_path):
    d = unpack_fixture("lawn")
    kh = tmp_path / "known_hosts"
    opts = PullOptions(port=sshd.port, key_file=str(sshd.client_key_path), known_hosts_file=str(kh),
                       remote_command=DS_REPLICA, timeout=20, accept_new_host_key=True)
    assert pull(master_spec(sshd, d / "master"), str(d / "replica"), opts)["changed"]
    recorded = kh.read_text()
    key = sshd.host_key_pub_line.split()[1]
    assert [line for line in recorded.splitlines() if key in line] == ["[%s]:%d %s %s" % (
        sshd.host, sshd.port, sshd.host_key_pub_line.split()[0], key)]
    # a second pull finds the key known and leaves the file as it was
    assert pull(master_spec(sshd, d / "master"), str(d / "replica"), opts)["changed"] is False
    assert kh.read_text() == recorded


def test_changed_host_key_is_refused_even_with_accept_new(sshd, unpack_fixture, tmp_path):
    d = unpack_fixture("flat")
    before = replica_state(d / "replica")
    _key, other_pub = make_keypair(tmp_path, "other_host_key")
    kh = tmp_path / "known_hosts"
    kh.write_text("[%s]:%d %s\n" % (sshd.host, sshd.port, " ".join(other_pub.split()[:2])))
    for accept in (False, True):
        opts = PullOptions(port=sshd.port, key_file=str(sshd.client_key_path), known_hosts_file=str(kh),
                           remote_command=DS_REPLICA, timeout=20, accept_new_host_key=accept)
        with pytest.raises(errors.DSError, match="CHANGED"):
            pull(master_spec(sshd, d / "master"), str(d / "replica"), opts)
    assert replica_state(d / "replica") == before


def test_unreachable_master_is_a_clear_error(unpack_fixture, sshd):
    d = unpack_fixture("bushy")
    before = replica_state(d / "replica")
    opts = PullOptions(port=1, key_file=str(sshd.client_key_path), known_hosts_file=str(sshd.known_hosts_path),
                       timeout=5)
    with pytest.raises(errors.DSError, match="cannot reach the master") as err:
        pull("127.0.0.1:%s" % (d / "master"), str(d / "replica"), opts)
    assert err.value.retryable
    assert replica_state(d / "replica") == before


def test_master_path_not_a_storage(sshd, unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    before = replica_state(d / "replica")
    with pytest.raises(errors.DSError, match="not a DirectoryStorage"):
        pull(master_spec(sshd, tmp_path), str(d / "replica"), paramiko_opts(sshd))
    assert replica_state(d / "replica") == before


def test_restricted_key_serves_one_storage_and_nothing_else(sshd, unpack_fixture, tmp_path):
    d = unpack_fixture("chunky")
    m = manifest(d)
    key, pub = make_keypair(tmp_path, "standby_key")
    forced = 'restrict,command="%s serve %s"' % (DS_REPLICA, d / "master")
    with sshd.authorized(sshd.user, pub, options=forced, append=True):
        opts = PullOptions(port=sshd.port, key_file=str(key), known_hosts_file=str(sshd.known_hosts_path),
                           remote_command="/bin/false", timeout=20)
        result = pull(master_spec(sshd, "/somewhere/else"), str(d / "replica"), opts)
        assert result["after_tid"] == m["master"]["last_tid"]
        proc = subprocess.run(sshd.ssh_argv("cat", "/etc/passwd", key=key), capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL, check=False)
        assert b"root:" not in proc.stdout
        assert proc.returncode != 0
