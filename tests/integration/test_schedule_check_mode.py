"""The schedule role in check mode on a host that has no metrics group yet (an old master
that rejoins as a standby: `rejoin.yml --check`): the plan is reported, nothing is created,
and the run does not fail on the group that would be created.

Found by the E2E failover once each fleet host had a metrics group of its own: before, the
group another "host" of the same machine had made hid it."""

from __future__ import annotations

import grp
import json
import re
import subprocess
import sys

import yaml

from tests.integration.test_modules import BIN, ENV, ROOT

GROUP = "dsckmode-metrics"  # never created: the run is in check mode


def test_check_mode_with_a_metrics_group_still_to_create(tmp_path):
    tasks = yaml.safe_load((ROOT / "roles" / "schedule" / "tasks" / "main.yml").read_text())
    [block] = [t for t in tasks if t.get("name") == "Metrics folder for node_exporter"]
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [block]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    textfile = tmp_path / "textfile"
    variables = {"schedule_state": "present", "schedule_manage_textfile_dir": True, "schedule_account": "nobody",
                 "schedule_textfile_group": GROUP, "schedule_textfile_dir": str(textfile)}
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "--check",
                        "-e", "ansible_python_interpreter=%s" % sys.executable, str(tmp_path / "play.yml"),
                        "-e", json.dumps(variables)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=180, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert re.search(r"changed: \[localhost\]", r.stdout.split("Create the metrics group", 1)[1]), r.stdout
    assert GROUP not in {g.gr_name for g in grp.getgrall()} and not textfile.exists()
