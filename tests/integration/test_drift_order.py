"""playbooks/drift.yml against a live master and its follower: a transaction
the master commits and the follower applies between the check's reads is not
taken for drift (CI saw pack.yml stop with "standby1 holds transaction …,
newer than its master" while the master wrote on and standby1 followed).

A callback (testbed/harness/callback_plugins/run_at_task_start.py) commits on
the master and pulls into the standby just before the standby's storage is
read, with one fork so the hosts take their turn in inventory order, the
master first: had the master been read first, it would look older than the
standby."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from dirstorage_replica.clone import clone
from dirstorage_replica.storage import Storage, hex_tid
from tests.integration.test_modules import BIN, ENV, ROOT
from tests.integration.test_reliability import _stopped_master
from tests.support.checks import assert_reads_as

COMMIT_AND_FOLLOW = """\
import os, subprocess, sys
sys.path.insert(0, %r)
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage
master, standby = sys.argv[1:]
with SimulatedStorage(master) as tm:
    tm.commit({tm.new_oid(): PICKLE_HEAD + os.urandom(500) + b"."})
subprocess.run([%r, "-q", master, standby], check=True)
"""


def local_host(addr, **hostvars):
    return dict(ansible_connection="local", ansible_python_interpreter=sys.executable, ansible_host=addr, **hostvars)


def test_a_commit_the_follower_applies_between_the_reads_is_not_drift(tmp_path):
    master, standby = tmp_path / "master", tmp_path / "standby"
    _stopped_master(master, 3)
    clone(str(master), str(standby))
    before = Storage(str(master)).newest_tid()
    inventory = {"all": {"children": {
        "dirstorage_masters": {"hosts": {"master": local_host(
            "127.0.0.1", master_storages=[{"name": "main", "path": str(master)}])}},
        "dirstorage_standbys": {"hosts": {"standby": local_host(
            "127.0.0.2", standby_storages=[{"name": "main", "path": str(standby), "master_host": "master",
                                            "master_path": str(master)}])}},
    }}}  # fmt: skip
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    script = tmp_path / "commit_and_follow.py"
    script.write_text(COMMIT_AND_FOLLOW % (str(ROOT), str(BIN / "ds-replica")))
    argv = [sys.executable, str(script), str(master), str(standby)]
    plan = {"host": "standby", "task": "Read what each", "argv": argv}
    env = dict(ENV, ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "testbed" / "harness" / "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="run_at_task_start", DS_AT_TASK_START=json.dumps(plan))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-f", "1", "-i", str(tmp_path / "hosts.yml"),
                        str(ROOT / "playbooks" / "drift.yml")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # the master did commit during the run, and the standby did apply it before it was read
    after = Storage(str(master)).newest_tid()
    assert after > before
    assert hex_tid(Storage(str(standby)).last_tid()) == hex_tid(after)
    assert_reads_as(standby, master)
