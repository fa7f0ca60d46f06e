"""The connection options reach an OpenSSH command (`-e` / ssh_command): a
stand-in ssh records the argv it was given, then runs the serve on this
machine (testbed/ssh_standins/local_ssh.py), so the pull itself completes."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from dirstorage_replica.ansible_args import pull_options
from dirstorage_replica.replica import pull
from tests.support.checks import assert_objects, manifest

ROOT = Path(__file__).resolve().parents[2]
DS_REPLICA = str(Path(sys.executable).with_name("ds-replica"))
RECORDER = """
import json, os, sys
with open(sys.argv[1], "w") as f:
    json.dump(sys.argv[2:], f)
os.execv(sys.executable, [sys.executable, %r, *sys.argv[2:]])
""" % str(ROOT / "testbed" / "ssh_standins" / "local_ssh.py")


def recording_ssh(tmp_path):
    """(ssh command, file where it records its options and destination)."""
    script, record = tmp_path / "record_ssh.py", tmp_path / "argv.json"
    script.write_text(RECORDER)
    return " ".join(shlex.quote(w) for w in (sys.executable, str(script), str(record))), record


def test_cli_flags_reach_the_ssh_command(unpack_fixture, tmp_path):
    d = unpack_fixture("bushy")
    ssh, record = recording_ssh(tmp_path)
    proc = subprocess.run([DS_REPLICA, "-q", "-e", ssh, "--remote-command", DS_REPLICA, "-p", "2222",
                           "-i", "/keys/id", "--known-hosts", "/keys/kh", "--accept-new-host-key", "--timeout", "9",
                           "zope@db1:%s" % (d / "master"), str(d / "replica")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert_objects(d / "replica", manifest(d)["master"]["objects"])
    argv = json.loads(record.read_text())
    assert argv[:-1] == ["-p", "2222", "-i", "/keys/id", "-o", "UserKnownHostsFile=/keys/kh",
                         "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=9", "--", "zope@db1"]
    assert shlex.split(argv[-1]) == [DS_REPLICA, "serve", str(d / "master")]


def test_module_default_timeout_reaches_the_ssh_command(unpack_fixture, tmp_path):
    d = unpack_fixture("chunky")
    ssh, record = recording_ssh(tmp_path)
    opts = pull_options({"ssh_command": ssh, "remote_command": DS_REPLICA})
    result = pull("db1:%s" % (d / "master"), str(d / "replica"), opts)
    assert result["after_tid"] == manifest(d)["master"]["last_tid"]
    assert json.loads(record.read_text())[:-1] == ["-o", "ConnectTimeout=60", "--", "db1"]
