"""The test harness's real OpenSSH server works, with the system ssh client and with paramiko."""

import os
import subprocess

import paramiko
import pytest

from testbed.harness.sshd import ensure_local_user, remove_local_user, start_sshd
from tests.support.treeutil import assert_tree_unchanged, fixture_cases, tree_state


def test_ssh_client_runs_command(sshd):
    cmd = [
        "ssh", "-F", "/dev/null", "-i", str(sshd.client_key_path), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={sshd.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-p", str(sshd.port), f"{sshd.user}@127.0.0.1", "echo", "ok",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert r.returncode == 0, f"{r.stderr}\n--- sshd log ---\n{sshd.log_text()}"
    assert r.stdout == "ok\n"
    # the helper builds the same kind of command
    r = subprocess.run(
        sshd.ssh_argv("echo", "ok"), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        check=False,
    )
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


def test_paramiko_runs_command_with_pinned_host_key(sshd):
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.user,
        key_filename=str(sshd.client_key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _unused, stdout, _unused = client.exec_command("echo ok")
        assert stdout.read() == b"ok\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_unknown_host_key_is_rejected(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    client = paramiko.SSHClient()
    client.load_host_keys(str(empty))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    # an authentication failure is an SSHException too: the refusal must be the host key's
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts") as err:
        client.connect(
            sshd.host,
            port=sshd.port,
            username=sshd.user,
            key_filename=str(sshd.client_key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    assert not isinstance(err.value, paramiko.AuthenticationException)
    client.close()


def test_unauthorized_key_is_refused_and_forced_command_applies(sshd, tmp_path):
    from testbed.harness.sshd import make_keypair

    key, pub = make_keypair(tmp_path, "other")
    r = subprocess.run(
        sshd.ssh_argv("echo", "ok", key=key), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        check=False,
    )
    assert r.returncode == 255
    with sshd.authorized(sshd.user, pub, options='command="echo forced",restrict', append=True):
        r = subprocess.run(
            sshd.ssh_argv("echo", "ok", key=key), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            check=False,
        )
        assert (r.returncode, r.stdout) == (0, "forced\n"), r.stderr
    # restored: the extra key is gone again, the fixture's key still works
    assert pub not in sshd.authorized_keys_path(sshd.user).read_text()
    r = subprocess.run(sshd.ssh_argv("true"), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       check=False)
    assert r.returncode == 0, r.stderr


def test_extra_listen_addresses():
    with start_sshd(["127.0.0.2", "127.0.0.3"]) as server:
        for host in server.hosts:
            r = subprocess.run(
                server.ssh_argv("echo", host, host=host),
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            assert (r.returncode, r.stdout) == (0, f"{host}\n"), r.stderr + server.log_text()
        workdir = server.workdir
    assert not workdir.exists()
    assert not server.alive()


def test_an_address_taken_off_refuses_and_its_open_sessions_end(tmp_path):
    """listen_on: the E2E failover's "the master host is down" (a multiplexed connection, as Ansible keeps
    one, ends too), and back."""
    with start_sshd(["127.0.0.2", "127.0.0.3"]) as server:
        control = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60", "-o", f"ControlPath={tmp_path}/cm-%h"]

        def run(host, *ssh_opts):
            argv = server.ssh_argv("echo", host, host=host)
            argv[1:1] = list(ssh_opts)
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                                  check=False)

        assert run("127.0.0.3", *control).stdout == "127.0.0.3\n"
        assert (tmp_path / "cm-127.0.0.3").exists()  # the multiplexing connection outlives the command
        server.listen_on(["127.0.0.2"])
        down = run("127.0.0.3", *control)
        assert down.returncode == 255 and "Connection refused" in down.stderr, down.stderr
        assert run("127.0.0.2").stdout == "127.0.0.2\n"
        server.listen_on(["127.0.0.2", "127.0.0.3"])
        assert run("127.0.0.3", *control).stdout == "127.0.0.3\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="creating local accounts needs root")  # ci-runs: CI is root
def test_other_local_account_can_log_in(sshd):
    name = "dstest_harness"
    ensure_local_user(name)
    try:
        with sshd.authorized(name, sshd.client_pub_line):
            r = subprocess.run(
                sshd.ssh_argv("id", "-un", user=name),
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
            assert (r.returncode, r.stdout) == (0, f"{name}\n"), r.stderr + sshd.log_text()[-2000:]
    finally:
        remove_local_user(name)


def test_unpack_fixture_and_tree_state(unpack_fixture):
    assert "bushy" in fixture_cases()
    case = unpack_fixture("bushy")
    assert (case / "master").is_dir() and (case / "replica").is_dir() and (case / "manifest.json").is_file()
    before = tree_state(case / "replica")
    assert any(t == "file" and digest for t, _unused, digest in before.values())
    assert_tree_unchanged(case / "replica", before)
    second = unpack_fixture("bushy")
    assert second != case and tree_state(second / "replica") == before
    victim = next(p for p, (t, _unused, _unused) in sorted(before.items()) if t == "file")
    (case / "replica" / victim).chmod(0o600)
    with pytest.raises(AssertionError, match="mode"):
        assert_tree_unchanged(case / "replica", before)
