"""The schedule role's follow mode: the systemd unit it installs, rendered with
ansible's own template module, checked by `systemd-analyze verify` (never
skipped: `make deps` installs systemd, a test dependency), and its ExecStart
run directly (no systemd here): the follower it starts keeps the replica at the master's newest transaction and stops
cleanly on SIGTERM, the signal systemd sends."""

from __future__ import annotations

import getpass
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from dirstorage_replica import storage
from dirstorage_replica.clone import clone
from dirstorage_replica.info import storage_info
from testbed.fakes.simulated_storage import PICKLE_HEAD, SimulatedStorage, create_storage
from tests.integration.test_modules import BIN, ENV, ROOT
from tests.support.checks import assert_reads_as

TEMPLATE = ROOT / "roles" / "schedule" / "templates" / "ds-replica-follow.service.j2"


def render_unit(tmp_path, item, **extra):
    dest = tmp_path / ("ds-replica-follow-%s.service" % item["name"])
    variables = {"item": item, "schedule_account": getpass.getuser(), "schedule_ds_replica": str(BIN / "ds-replica"),
                 **yaml.safe_load((ROOT / "roles" / "schedule" / "vars" / "main.yml").read_text()),
                 "schedule_textfile_dir": str(tmp_path / "textfile"), "schedule_follow_interval": 0.2,
                 "schedule_follow_restart_seconds": 10, **extra}
    r = subprocess.run([str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.template",
                        "-a", "src=%s dest=%s mode=0644" % (TEMPLATE, dest), "-e", json.dumps(variables)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def assert_verifies(unit):
    """`systemd-analyze verify` finds no error or warning in `unit` (a problem names the file).
    Fails, never skips, where systemd is missing."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze missing: run `make deps` as root (Debian package systemd)", pytrace=False)
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.name in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def directives(unit):
    """{key: [values]} of the unit file (sections ignored)."""
    found = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def pair(tmp_path):
    master = tmp_path / "master"
    create_storage(master, "bushy")
    with SimulatedStorage(master) as tm:
        tm.commit({tm.new_oid(): PICKLE_HEAD + b"first."})
    replica = tmp_path / "replica dir"  # a space: the unit's quoting must hold
    clone(str(master), str(replica))
    (tmp_path / "textfile").mkdir()
    return master, replica


def item_for(master, replica, **extra):
    return {"name": "main", "path": str(replica), "master": str(master), "master_port": 22,
            "key_file": "/home/dsreplica/.ssh/ds-replica-main", "known_hosts_file": "/home/dsreplica/.ssh/known_hosts",
            "compress": False, "snapshot_timeout": 0.0, **extra}


def test_unit_is_hardened_and_restarts(tmp_path, pair):
    master, replica = pair
    unit = render_unit(tmp_path, item_for(master, replica))
    d = directives(unit)
    assert d["User"] == [getpass.getuser()] and d["Restart"] == ["always"]
    assert d["RestartSec"] == ["10"]  # schedule_follow_restart_seconds as render_unit gives it
    assert d["NoNewPrivileges"] == ["yes"] and d["ProtectSystem"] == ["strict"] and d["PrivateTmp"] == ["yes"]
    writable = shlex.split(d["ReadWritePaths"][0])
    assert str(replica) in writable and "-" + str(tmp_path / "textfile") in writable
    assert d["KillSignal"] == ["SIGTERM"]
    assert_verifies(unit)


def test_a_hot_standby_unit_passes_its_commands_and_allows_sudo(tmp_path, pair):
    master, replica = pair
    stop, start = "sudo -n /usr/bin/systemctl stop zeo-ro", "sudo -n /usr/bin/systemctl start zeo-ro"
    unit = render_unit(tmp_path, item_for(master, replica, stop_command=stop, start_command=start, stop_timeout=90))
    d = directives(unit)
    argv = shlex.split(d["ExecStart"][0])
    at = argv.index("--stop-command")
    assert argv[at:at + 6] == ["--stop-command", stop, "--start-command", start, "--stop-timeout", "90"]
    # sudo is set-uid: a hot standby's unit cannot forbid new privileges, nor set anything that makes
    # systemd imply NoNewPrivileges=yes for a User= service (test_systemd.py runs sudo under it)
    assert d["NoNewPrivileges"] == ["no"]
    implying = {"PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectClock",
                "RestrictSUIDSGID", "LockPersonality", "SystemCallFilter", "SystemCallArchitectures",
                "RestrictAddressFamilies", "RestrictNamespaces", "MemoryDenyWriteExecute", "RestrictRealtime",
                "DynamicUser"}
    assert not implying & set(d), sorted(implying & set(d))
    assert d["ProtectSystem"] == ["strict"] and "-/run/sudo" in d["ReadWritePaths"]
    assert_verifies(unit)


def cron_job(tmp_path, item, lock_dir=None):
    """The command of the schedule role's cron entry for `item`, rendered by
    Ansible from the role's own task and variables (lock_dir: the role's default)."""
    tasks = yaml.safe_load((ROOT / "roles" / "schedule" / "tasks" / "main.yml").read_text())
    task = next(t for t in tasks if t.get("name") == "Cron entry of each storage")
    if lock_dir is None:
        lock_dir = yaml.safe_load((ROOT / "roles" / "schedule" / "defaults" / "main.yml").read_text())[
            "schedule_lock_dir"]
    variables = {"item": item, "schedule_ds_replica": "/usr/local/bin/ds-replica", "schedule_lock_dir": lock_dir,
                 "schedule_bin": "/usr/local/bin/ds-replica-cron", "schedule_textfile_dir": "/var/lib/node-exporter",
                 **yaml.safe_load((ROOT / "roles" / "schedule" / "vars" / "main.yml").read_text()), **task["vars"]}
    dest = tmp_path / "cron-job.txt"
    r = subprocess.run([str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.copy",
                        "-a", "content={{ job }} dest=%s mode=0644" % dest, "-e", json.dumps(variables)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest.read_text()


def test_cron_and_unit_pass_a_hot_standbys_commands_as_written(tmp_path, pair):
    """Spaces, quotes and $ in a stop or start command reach ds-replica
    unchanged, from the cron entry (a shell line) and the unit alike."""
    master, replica = pair
    stop = "systemctl stop 'zeo ro'  &&  echo \"$HOME  stopped\" >/dev/null"
    start = "systemctl start 'zeo ro'"
    item = item_for(master, replica, stop_command=stop, start_command=start, stop_timeout=90)
    unit = [w.replace("$$", "$").replace("%%", "%")  # systemd's escapes of $ and %
            for w in shlex.split(directives(render_unit(tmp_path, item))["ExecStart"][0])]
    for argv in (shlex.split(cron_job(tmp_path, item)), unit):
        at = argv.index("--stop-command")
        assert argv[at:at + 6] == ["--stop-command", stop, "--start-command", start, "--stop-timeout", "90"], argv
        assert argv[-2:] == [str(master), str(replica)]


def test_the_cron_entry_leaves_the_lock_to_the_wrapper(tmp_path, pair):
    """No lock in a world-writable folder (issue 20: any local user holding
    /run/lock/ds-replica-NAME.lock stopped every pull): the wrapper takes it
    in the replica account's own folder, or in schedule_lock_dir."""
    master, replica = pair
    argv = shlex.split(cron_job(tmp_path, item_for(master, replica)))
    assert argv[0] == "/usr/local/bin/ds-replica-cron" and "--lock-dir" not in argv, argv
    assert not any("flock" in word or word.startswith("/run/lock") for word in argv), argv
    argv = shlex.split(cron_job(tmp_path, item_for(master, replica), lock_dir="/var/lib/ds replica/locks"))
    assert argv[argv.index("--lock-dir") + 1] == "/var/lib/ds replica/locks"
    assert argv[argv.index("--lock-dir") + 2:][:2] == ["main", "--"]


def test_unit_runs_a_follower_that_keeps_up_and_stops_cleanly(tmp_path, pair):
    master, replica = pair
    unit = render_unit(tmp_path, item_for(master, replica, snapshot_timeout=2.0))
    argv = shlex.split(directives(unit)["ExecStart"][0])
    assert argv[1] == "follow" and argv[-2:] == [str(master), str(replica)] and "--snapshot-timeout" in argv
    follower = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with SimulatedStorage(master) as tm:
            for i in range(20):
                tm.commit({tm.new_oid(): PICKLE_HEAD + b"txn %d." % i})
                time.sleep(0.05)
        newest = storage.Storage(master).last_tid()
        metrics = tmp_path / "textfile" / "dirstorage_main.prom"

        def caught_up():  # the replica at the master's newest, and the metrics written after it
            return (storage.Storage(replica).last_tid() == newest and metrics.exists()
                    and 'dirstorage_replication_last_result{storage="main"} 1.0' in metrics.read_text())

        deadline = time.monotonic() + 30
        while not caught_up() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert caught_up(), "the follower did not keep up"
    finally:
        follower.send_signal(signal.SIGTERM)
        _out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert err.strip().splitlines()[-1] == "ds-replica: follow stopped; the replica is at a transaction boundary"
    assert_reads_as(replica, master)
    # storage_info (the module's answer, ds-replica status) shows what the follower did last
    state = storage_info(str(replica))["follower"]
    assert state["state"] == "stopped" and state["tid"] == newest.hex().upper() and state["running"] is False
    status = subprocess.run([str(BIN / "ds-replica"), "status", str(replica)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "follower: stopped (not running), replica at %s" % newest.hex().upper() in status.stdout


def cron_hands_to_the_shell(field):
    """What cron runs with /bin/sh -c for a command field of a crontab line (crontab(5)): up to the
    first % that no backslash escapes (the rest is its standard input), each \\% made %."""
    out, i = [], 0
    while i < len(field):
        if field.startswith("\\%", i):
            out.append("%")
            i += 2
            continue
        if field[i] == "%":
            break
        out.append(field[i])
        i += 1
    return "".join(out)


def installed_cron_line(tmp_path, item, wrapper):
    """The line the schedule role's own cron task (ansible.builtin.cron, as the role runs it)
    writes for `item`, into a file of tmp_path instead of /etc/cron.d."""
    tasks = yaml.safe_load((ROOT / "roles" / "schedule" / "tasks" / "main.yml").read_text())
    task = dict(next(t for t in tasks if t.get("name") == "Cron entry of each storage"))
    task["ansible.builtin.cron"] = dict(task["ansible.builtin.cron"], cron_file=str(tmp_path / "cron.d-entry"))
    task.pop("when")
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]
    (tmp_path / "cron-play.yml").write_text(yaml.safe_dump(play))
    variables = {"schedule_cron_storages": [item], "schedule_account": getpass.getuser(),
                 "schedule_ds_replica": "/usr/local/bin/ds-replica", "schedule_lock_dir": str(tmp_path),
                 "schedule_bin": str(wrapper), "schedule_textfile_dir": str(tmp_path / "textfile"),
                 "schedule_minute": "*/5", "schedule_hour": "*",
                 **yaml.safe_load((ROOT / "roles" / "schedule" / "vars" / "main.yml").read_text())}
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                        "-e", "ansible_python_interpreter=%s" % sys.executable,
                        str(tmp_path / "cron-play.yml"), "-e", json.dumps(variables)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    [line] = [ln for ln in (tmp_path / "cron.d-entry").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    return line


def test_the_installed_cron_line_passes_commands_with_percent_signs(tmp_path, pair):
    """cron ends a command at an unescaped % (the rest is its stdin): the line the role installs,
    cut and unescaped as cron does and run by /bin/sh, gives the wrapper a stop and a start
    command holding % exactly as written."""
    master, replica = pair
    stop = "logger -t zeo \"stopping at $(date +%H:%M)\" && systemctl stop 'zeo ro'"
    start = "systemctl start zeo-ro; printf '100%%\\n' >/dev/null"
    item = item_for(master, replica, stop_command=stop, start_command=start, stop_timeout=90)
    wrapper = tmp_path / "ds-replica-cron"  # stands for the wrapper: writes down the arguments it got
    wrapper.write_text("#!%s\nimport json, sys\nopen(%r, 'w').write(json.dumps(sys.argv[1:]))\n"
                       % (sys.executable, str(tmp_path / "argv.json")))
    wrapper.chmod(0o755)
    line = installed_cron_line(tmp_path, item, wrapper)
    fields = line.split(None, 6)
    assert fields[:6] == ["*/5", "*", "*", "*", "*", getpass.getuser()], line
    r = subprocess.run(["/bin/sh", "-c", cron_hands_to_the_shell(fields[6])], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, (line, r.stderr)
    argv = json.loads((tmp_path / "argv.json").read_text())
    at = argv.index("--stop-command")
    assert argv[at:at + 6] == ["--stop-command", stop, "--start-command", start, "--stop-timeout", "90"], argv
    assert argv[-2:] == [str(master), str(replica)]


def test_the_unit_names_the_standby_when_one_is_given(tmp_path, pair):
    master, replica = pair
    named = shlex.split(directives(render_unit(tmp_path, item_for(master, replica, standby_name="st1-main")))
                        ["ExecStart"][0])
    assert named[named.index("--standby-name") + 1] == "st1-main"
    default = shlex.split(directives(render_unit(tmp_path, item_for(master, replica, standby_name="")))
                          ["ExecStart"][0])
    assert "--standby-name" not in default
