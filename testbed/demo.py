# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make demo`: the embedded demo, on this machine only (no root, ssh or network).

1. wipes ./demo/ and builds a master storage there (the test master of
   testbed/fakes/simulated_storage.py, committing as the real engine does);
2. makes the standby's first copy with the engine's clone;
3. writes new transactions on the master;
4. runs `ansible-playbook playbooks/demo.yml`, whose replicate task brings the
   standby up to date from the local master path;
5. prints what was replicated and checks that standby and master agree.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dirstorage_replica import clone, storage  # noqa: E402
from dirstorage_replica.info import storage_info  # noqa: E402
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage  # noqa: E402

DEMO = os.path.join(ROOT, "demo")
MASTER = os.path.join(DEMO, "master")
STANDBY = os.path.join(DEMO, "standby")
RESULT = os.path.join(DEMO, "result.json")


def say(msg):
    print("==> " + msg, flush=True)


def pickle(rng, size):
    return PICKLE_HEAD + rng.randbytes(max(0, size - len(PICKLE_HEAD) - 1)) + b"."


def write(master, rng, count, what):
    for i in range(count):
        if master.last_tid == storage.ZERO_TID:
            batch, description = {0: pickle(rng, 300)}, b"initial database creation"
        else:
            batch = {}
            for _unused in range(rng.randint(1, 4)):
                grow = master.last_oid < 40 and rng.random() < 0.6
                oid = master.new_oid() if grow else rng.randint(0, master.last_oid)
                batch[oid] = pickle(rng, rng.choice((200, 800, 3000, 20000)))
            description = b"demo %s %d" % (what.encode(), i)
        master.commit(batch, user=b"/ demo", description=description)


def main():
    rng = random.Random(20251126)
    if os.path.exists(DEMO):
        shutil.rmtree(DEMO)
    os.makedirs(DEMO)

    say("building the master storage in demo/master")
    create_storage(MASTER, "bushy")
    with SimulatedStorage(MASTER) as master:
        write(master, rng, 30, "history")
    say("master has %d transactions, newest %s" % (30, storage.hex_tid(storage.Storage(MASTER).last_tid())))

    say("first copy of the master into demo/standby (ds-replica clone)")
    first = clone.clone(MASTER, STANDBY)
    say("cloned %d transactions, %d files, %d bytes" % (first["transactions"], first["files"], first["bytes"]))

    say("writing 12 new transactions on the master")
    with SimulatedStorage(MASTER) as master:
        write(master, rng, 12, "new")

    say("ansible-playbook playbooks/demo.yml")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_DEPRECATION_WARNINGS="False")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
           os.path.join(ROOT, "playbooks", "demo.yml"),
           "-e", "demo_master=%s demo_standby=%s demo_result=%s" % (MASTER, STANDBY, RESULT)]
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        say("the playbook failed (exit %d)" % rc)
        return rc

    with open(RESULT) as f:
        result = json.load(f)
    m, s = storage_info(MASTER), storage_info(STANDBY)
    say("replicated %d transactions, %d files, %d bytes in %.3fs; master held in snapshot mode %.3fs; lag now %.1fs"
        % (result["transactions"], result["files"], result["bytes"], result["elapsed_seconds"],
           result["snapshot_seconds"], result["lag_seconds"]))
    say("standby %s at %s (%s), master at %s" % (s["identity"], s["last_tid"], s["last_time"], m["last_tid"]))
    if s["last_tid"] != m["last_tid"] or result["transactions"] != 12:
        say("demo FAILED: the standby did not reach the master")
        return 1
    say("demo OK: the standby is a complete copy of the master (./demo/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
