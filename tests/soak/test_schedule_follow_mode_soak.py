"""make soak: the schedule role's follow mode run through (about a minute on a loaded
2-core machine, too long for make test, where tests/integration/test_follow_unit.py renders
and verifies the unit): the role's own follow.yml and handler against localhost with a
stand-in systemctl. cron -> follow installs, verifies (the real systemd-analyze), enables
and starts the unit with the RestartSec asked; a changed unit is restarted; follow -> cron
stops, disables and removes it and reloads systemd.

Collected only with SOAK=1 (see tests/conftest.py)."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys

import yaml

from tests.integration.test_follow_unit import TEMPLATE, directives, item_for, pair
from tests.integration.test_modules import BIN, ENV, ROOT

__all__ = ["pair"]  # the fixture, shared with test_follow_unit.py


# a stand-in for systemctl (this machine runs no systemd): each call appended to a log, units'
# enabled/active state kept in files beside it; `show` answers what the systemd_service module reads
FAKE_SYSTEMCTL = r"""#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/systemctl.log"
unit=$(echo "$2" | tr -d "'")
case "$1" in
  daemon-reload|mark) exit 0 ;;
  show) if [ -e "$UNIT_DIR/$unit" ]; then load=loaded; else load=not-found; fi
        if [ -e "$here/$unit.active" ]; then act=active; else act=inactive; fi
        printf 'Id=%s\nLoadState=%s\nActiveState=%s\n' "$unit" "$load" "$act" ;;
  is-enabled) if [ -e "$here/$unit.enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  enable) touch "$here/$unit.enabled" ;;
  disable) rm -f "$here/$unit.enabled" ;;
  start|restart) touch "$here/$unit.active" ;;
  stop) rm -f "$here/$unit.active" ;;
  *) echo "fake systemctl: $*" >&2; exit 1 ;;
esac
"""


def run_follow_tasks(tmp_path, item, runs):
    """The schedule role's follow.yml and handler, as the role includes them, against localhost
    with a stand-in systemctl, once per entry of `runs` ((following, RestartSec): whether `item`
    is in follow mode), each a play of one ansible-playbook run; after each, the unit is copied
    to unit-after-<n> (if there is one). Less follow.yml's first block (the host must run
    systemd, which this machine does not). The systemctl calls of each run."""
    tasks = yaml.safe_load((ROOT / "roles" / "schedule" / "tasks" / "follow.yml").read_text())
    assert tasks[0]["name"] == "Check that the standby runs systemd"
    for task in tasks:  # the role's templates/ folder, which a play outside the role does not search
        if "ansible.builtin.template" in task:
            task["ansible.builtin.template"]["src"] = str(TEMPLATE)
    handlers = yaml.safe_load((ROOT / "roles" / "schedule" / "handlers" / "main.yml").read_text())
    fake, units = tmp_path / "fake-bin", tmp_path / "units"
    fake.mkdir()
    units.mkdir()
    (fake / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "systemctl").chmod(0o755)
    unit = units / "ds-replica-follow-main.service"
    common = {"standby_resolved": [item], "schedule_unit_dir": str(units), "schedule_account": getpass.getuser(),
              "schedule_ds_replica": str(BIN / "ds-replica"), "schedule_textfile_dir": str(tmp_path / "textfile"),
              "schedule_follow_interval": 0.5,
              **yaml.safe_load((ROOT / "roles" / "schedule" / "vars" / "main.yml").read_text())}
    plays = []
    for n, (following, restart_seconds) in enumerate(runs):
        mark = {"name": "mark", "ansible.builtin.command": "systemctl mark %d" % n, "changed_when": False}
        keep = {"name": "keep the unit", "changed_when": False,
                "ansible.builtin.shell": "cp %s %s/unit-after-%d || true" % (unit, tmp_path, n)}
        plays.append({"hosts": "localhost", "gather_facts": False, "handlers": handlers,
                      "vars": {"schedule_follow_storages": [item] if following else [],
                               "schedule_follow_names": [item["name"]] if following else [],
                               "schedule_follow_restart_seconds": restart_seconds},
                      "tasks": [mark, *tasks[1:], {"meta": "flush_handlers"}, keep]})
    (tmp_path / "follow-play.yml").write_text(yaml.safe_dump(plays))
    env = dict(ENV, PATH="%s:%s" % (fake, ENV.get("PATH", "/usr/bin:/bin")), UNIT_DIR=str(units))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                        "-e", "ansible_python_interpreter=%s" % sys.executable, str(tmp_path / "follow-play.yml"),
                        "-e", json.dumps(common)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=180, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    calls = []
    for line in (fake / "systemctl.log").read_text().splitlines():
        if line.startswith("mark "):
            calls.append([])
        else:
            calls[-1].append(line)
    return calls


def test_follow_mode_installs_enables_and_starts_a_unit_and_removes_it_when_back_to_cron(tmp_path, pair):
    master, replica = pair
    item = item_for(master, replica)
    install, change, back = run_follow_tasks(tmp_path, item, [(True, 7), (True, 3), (False, 3)])
    # cron -> follow: the unit written (RestartSec as asked), verified, enabled and started
    first = tmp_path / "unit-after-0"
    assert directives(first)["RestartSec"] == ["7"] and directives(first)["Restart"] == ["always"]
    assert "enable ds-replica-follow-main.service" in install and "start ds-replica-follow-main.service" in install
    assert install[0] == "daemon-reload", install  # before the first start, systemd reads the new unit
    # a changed unit is restarted (and not enabled or started again)
    assert directives(tmp_path / "unit-after-1")["RestartSec"] == ["3"]
    assert "restart ds-replica-follow-main.service" in change, change
    assert not [c for c in change if c.split()[0] in ("enable", "start")], change
    # follow -> cron: the follower stopped and disabled, its unit removed, systemd reloaded
    assert not (tmp_path / "units" / "ds-replica-follow-main.service").exists()
    acted = [c.split()[0] for c in back if c.split()[0] in ("stop", "disable", "daemon-reload")]
    assert sorted(acted[:2]) == ["disable", "stop"] and acted[2:] == ["daemon-reload"], back
    assert not list((tmp_path / "fake-bin").glob("ds-replica-follow-main.service.*"))
