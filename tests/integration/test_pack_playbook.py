"""playbooks/pack.yml on a local master (issue 24): the site's pack command
run as words with {days} replaced by the plan's, held back to the horizon
(the oldest position of a standby) unless pack_force, --check running
nothing, and the module pack_plan's documented return."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time

import yaml

from dirstorage_replica import positions
from dirstorage_replica.storage import hex_tid, tid_from_epoch
from testbed.fakes.simulated_storage import create_storage
from tests.integration.test_modules import BIN, ENV, ROOT, _module_attr, run_module

DAY = 86400.0
RECORDER = """\
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def master_with_standbys(tmp_path, now):
    home = tmp_path / "main"
    create_storage(home)
    for name, tid_days, seen_days in (("fast", 0.01, 0.0), ("slow", 10, 0.1)):
        positions.Recorder(str(home), name, "follow", clock=lambda s=now - seen_days * DAY: s).record(
            tid_from_epoch(now - tid_days * DAY))
    return home


def run_pack(tmp_path, home, *extra):
    script = tmp_path / "record-pack.py"
    script.write_text(RECORDER)
    calls = tmp_path / "calls"
    inventory = {"all": {"children": {"dirstorage_masters": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "master_user": getpass.getuser(),
        "master_storages": [{"name": "main", "path": str(home)}],
        # {days} and {time} for the plan, a word with a space to show no shell splits it again
        "pack_command": "%s %s %s 'a word' -d {days} --time {time}" % (sys.executable, script, calls)}}}}}}
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump(inventory))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(ROOT / "playbooks" / "pack.yml"), *extra],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    ran = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return r.stdout, ran


def test_the_horizon_holds_the_pack_back_and_check_mode_runs_nothing(tmp_path):
    now = time.time()
    home = master_with_standbys(tmp_path, now)
    slow = hex_tid(tid_from_epoch(now - 10 * DAY))
    out, ran = run_pack(tmp_path, home, "--check", "-e", "pack_days=7")
    assert "(check mode, not run) %s: packing to " % home in out
    assert "held back from 7 days by standby slow, which holds %s" % slow in out
    assert ran == []
    out, ran = run_pack(tmp_path, home, "-e", "pack_days=7")
    assert len(ran) == 1 and ran[0][0] == "a word" and ran[0][1] == "-d" and ran[0][3] == "--time"
    days, when = float(ran[0][2]), int(ran[0][4])
    # not one second past the slow standby's position, with 10 minutes to spare, in {days} and {time} alike
    assert 10 + 600 / DAY <= days < 10.01 and when <= now - 10 * DAY - 600


def test_a_forced_pack_goes_past_the_horizon_and_names_the_standby_it_strands(tmp_path):
    now = time.time()
    home = master_with_standbys(tmp_path, now)
    out, ran = run_pack(tmp_path, home, "-e", "pack_days=7", "-e", "pack_force=true")
    assert "this strands standby slow (holding %s): re-seed it with 'ds-replica clone --delta MASTER PATH'" % (
        hex_tid(tid_from_epoch(now - 10 * DAY))) in out
    assert len(ran) == 1 and 7 < float(ran[0][2]) < 7.01


def test_pack_plan_module_returns_what_it_documents(tmp_path):
    home = master_with_standbys(tmp_path, time.time())
    ok, res = run_module("pack_plan", {"path": str(home), "days": 3, "command": "zeopack -d {days} 127.0.0.1:8100"})
    assert ok and res["changed"] is False
    doc = yaml.safe_load(_module_attr("pack_plan", "RETURN"))
    assert set(doc["plan"]["contains"]) <= set(res["plan"])
    assert res["plan"]["held_back_by"] == "slow" and res["plan"]["argv"][:2] == ["zeopack", "-d"]
    ok, res = run_module("pack_plan", {"path": str(home), "days": 3, "command": "zeopack -d {days} {host}"})
    assert not ok and res["msg"].startswith("pack_command may hold only {days} and {time}, not {host}")
