"""The collection's modules, run by real Ansible (ad-hoc `ansible` and `ansible-playbook`,
local connection) against the golden fixtures; nothing of the engine is mocked.

Most cases run `ansible -o` (which has check mode); pytest-ansible's `ansible_adhoc`
fixture (`localhost` below: AnsiballZ, the local connection, structured results) runs
the others.

Each run starts an ansible process (~1 s), so the cases are grouped to keep the
file under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dirstorage_replica.ansible_args import CONNECTION_ARGS
from dirstorage_replica.positions import Recorder
from dirstorage_replica.storage import Storage, hex_tid, tid_from_epoch
from tests.support.checks import assert_reads_as, expected_refusal, manifest, replica_state

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = ("replicate", "clone", "storage_info", "verify")
ENV = dict(
    os.environ,
    ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
    ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
    ANSIBLE_DEPRECATION_WARNINGS="False",
    ANSIBLE_LOCALHOST_WARNING="False",
    ANSIBLE_NOCOLOR="1",
)


def run_module(module, args, check=False):
    """Run dirstorage.replication.<module> on the implicit localhost; return (ok, result dict)."""
    cmd = [str(BIN / "ansible"), "localhost", "-o", "-m", "dirstorage.replication." + module,
           "-a", json.dumps(args)] + (["--check"] if check else [])  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("localhost | ")), None)
    assert line is not None, "no result line\nstdout: %s\nstderr: %s" % (r.stdout, r.stderr)
    status, _unused, payload = line[len("localhost | "):].partition(" => ")
    result = json.loads(payload)
    assert (r.returncode == 0) == (status in ("SUCCESS", "CHANGED")), line
    assert result.get("changed", False) == (status == "CHANGED"), line
    return status in ("SUCCESS", "CHANGED"), result


def run_playbook(tmp_path, plays, inventory=None, extra=()):
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump(plays, sort_keys=False))
    cmd = [str(BIN / "ansible-playbook"), str(book)]
    if inventory is not None:
        inv = tmp_path / "hosts.yml"
        inv.write_text(yaml.safe_dump(inventory, sort_keys=False))
        cmd += ["-i", str(inv)]
    r = subprocess.run(cmd + list(extra), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    return r


def test_replicate_check_then_pull_then_nothing(unpack_fixture):
    case = unpack_fixture("bushy")
    m = manifest(case)
    master, replica = str(case / "master"), str(case / "replica")
    before = replica_state(replica)

    ok, would = run_module("replicate", {"master": master, "path": replica}, check=True)
    assert ok and would["changed"] is True
    assert would["transactions"] > 0 and would["files"] > 0 and would["bytes"] > 0
    assert would["before_tid"] == would["after_tid"] == m["replica"]["last_tid"]
    assert replica_state(replica) == before, "check mode changed the replica"

    ok, res = run_module("replicate", {"master": master, "path": replica})
    assert ok and res["changed"] is True
    assert res["before_tid"] == m["replica"]["last_tid"]
    assert res["after_tid"] == m["master"]["last_tid"] == res["master_tid"]
    assert_reads_as(replica, master)
    counts = ("transactions", "files", "bytes")
    assert [res[k] for k in counts] == [would[k] for k in counts]
    assert res["files"] == len(m["expected_increment"])
    assert res["lag_seconds"] == 0.0
    # every documented return key is really returned
    doc = yaml.safe_load(_module_attr("replicate", "RETURN"))
    assert set(doc) <= set(res), set(doc) - set(res)

    ok, again = run_module("replicate", {"master": master, "path": replica})
    assert ok and again["changed"] is False
    assert again["transactions"] == again["files"] == again["bytes"] == 0
    assert again["before_tid"] == again["after_tid"] == m["master"]["last_tid"]


def test_replicate_refusal_is_one_line_and_leaves_replica(unpack_fixture):
    case = unpack_fixture("foreign")
    replica = str(case / "replica")
    before = replica_state(replica)
    ok, res = run_module("replicate", {"master": str(case / "master"), "path": replica})
    assert not ok
    assert expected_refusal(manifest(case)) in res["msg"]
    assert "\n" not in res["msg"] and "Traceback" not in res["msg"]
    assert res["retryable"] is False
    assert replica_state(replica) == before


def test_storage_info_facts_and_verify(unpack_fixture):
    case = unpack_fixture("chunky")
    m = manifest(case)
    ok, res = run_module("storage_info", {"path": str(case / "replica")})
    assert ok and res["changed"] is False
    st = res["storage"]
    assert st["identity"] == m["replica"]["identity"]
    assert st["format"] == "chunky" and st["classname"] == "Full"
    assert st["last_tid"] == m["replica"]["last_tid"] and st["packed_tid"] == m["replica"]["packed_tid"]
    assert st["last_time"].endswith("Z") and st["last_time"][:4].isdigit()
    assert st["lock"]["held"] is False
    doc = yaml.safe_load(_module_attr("storage_info", "RETURN"))
    assert set(doc["storage"]["contains"]) <= set(st)

    ok, res = run_module("storage_info", {"path": str(case)})
    assert not ok and "not a DirectoryStorage" in res["msg"]

    # verify: a clean replica against its master, then a damaged one
    ok, res = run_module("verify", {"path": str(case / "replica"), "master": str(case / "master")})
    assert ok and res["ok"] is True and res["problems"] == [] and res["changed"] is False
    assert res["checked_transactions"] > 0 and res["master_tid"] == m["master"]["last_tid"]
    doc = yaml.safe_load(_module_attr("verify", "RETURN"))
    assert set(doc) <= set(res)
    replica = Storage(str(case / "replica"))
    newest = replica.transaction(replica.last_tid())
    victim = replica.path("o%s.%s" % (hex_tid(newest.oids[0]), hex_tid(newest.tid)))
    data = bytearray(Path(victim).read_bytes())
    data[-1] ^= 0xFF
    os.chmod(victim, 0o644)
    Path(victim).write_bytes(bytes(data))
    ok, res = run_module("verify", {"path": str(case / "replica")})
    assert not ok and res["ok"] is False and res["problems"]
    assert "problem" in res["msg"] and "\n" not in res["msg"]


def test_clone_check_clone_idempotent(unpack_fixture, tmp_path):
    case = unpack_fixture("lawn")
    m = manifest(case)
    dest = tmp_path / "standby"
    args = {"master": str(case / "master"), "path": str(dest)}
    ok, res = run_module("clone", args, check=True)
    assert ok and res["changed"] is True and not dest.exists()

    ok, res = run_module("clone", args)
    assert ok and res["changed"] is True and res["transactions"] > 0
    assert res["after_tid"] == m["master"]["last_tid"] == hex_tid(Storage(str(dest)).last_tid())
    doc = yaml.safe_load(_module_attr("clone", "RETURN"))
    assert set(doc) <= set(res)

    state = replica_state(dest)
    ok, res = run_module("clone", args)
    assert ok and res["changed"] is False and res["after_tid"] == m["master"]["last_tid"]
    ok, res = run_module("clone", dict(args, force=True), check=True)
    assert ok and res["changed"] is True
    assert replica_state(dest) == state


@pytest.fixture
def localhost(ansible_adhoc, tmp_path):
    """Run a module on localhost through pytest-ansible: run(name, **args) -> result
    (its ad-hoc runs have no check mode: run_module covers that)."""
    inv = tmp_path / "hosts"
    inv.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)

    def run(module, **args):
        hosts = ansible_adhoc(inventory=str(inv))
        return getattr(hosts["localhost"], "dirstorage.replication." + module)(**args)["localhost"]

    return run


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_clone_of_a_crashed_master_then_verify(localhost, unpack_fixture, tmp_path):
    """A master that crashed mid-journal is recovered by its serve before the copy is taken."""
    d = unpack_fixture("crashed-master")
    dest = tmp_path / "standby"
    made = localhost("clone", master=str(d / "master"), path=str(dest))
    assert made["changed"] is True
    assert made["after_tid"] == manifest(d)["after_recovery"]["last_tid"]
    assert_reads_as(dest, d / "master")
    again = localhost("clone", master=str(d / "master"), path=str(dest))
    assert again["changed"] is False
    checked = localhost("verify", path=str(dest), master=str(d / "master"))
    assert checked["ok"] is True and not checked.get("failed"), checked
    assert checked["master_checked_transactions"] == checked["checked_transactions"] > 0


def test_ansible_doc_renders_every_module():
    for name in MODULES:
        r = subprocess.run([str(BIN / "ansible-doc"), "dirstorage.replication." + name], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        assert "RETURN VALUES" in r.stdout and "EXAMPLES" in r.stdout, name
        assert "ERROR" not in r.stderr, r.stderr
    names = ["dirstorage.replication." + n for n in MODULES]
    r = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", "-j"] + names,
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    # the shared connection options reached the modules that talk to a master, documented as specified
    for name in ("replicate", "clone", "verify"):
        opts = docs["dirstorage.replication." + name]["doc"]["options"]
        for key, spec in CONNECTION_ARGS.items():
            assert key in opts, (name, key)
            assert opts[key]["type"] == spec["type"], (name, key)
            assert opts[key].get("default") == spec.get("default"), (name, key)
            assert opts[key].get("choices") == spec.get("choices"), (name, key)


def test_action_plugin_resolves_master_from_inventory(unpack_fixture, tmp_path):
    """master_host/master_path become user@address:path and port from the master's hostvars
    (an unreachable port, so the module's one-line error shows what was resolved)."""
    case = unpack_fixture("bushy")
    replica = str(case / "replica")
    before = replica_state(replica)
    inventory = {"all": {"hosts": {
        "standby1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "db1": {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "zope"},
    }}}  # fmt: skip
    task = {"dirstorage.replication.replicate": {"master_host": "db1", "master_path": str(case / "master"),
                                                 "path": replica, "timeout": 5},
            "register": "r", "ignore_errors": True}  # fmt: skip
    both = {"dirstorage.replication.replicate": {"master_host": "db1", "master_path": "/x", "master": "/y",
                                                 "path": replica},
            "register": "b", "ignore_errors": True}  # fmt: skip
    show = {"ansible.builtin.debug": {"msg": "RESULT {{ [r.msg, b.msg] | to_json }}"}}
    r = run_playbook(tmp_path, [{"hosts": "standby1", "gather_facts": False, "tasks": [task, both, show]}],
                     inventory=inventory)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "RESULT " in ln)
    unreachable, conflict = json.loads(json.loads(line.split(": ", 1)[1]).split("RESULT ", 1)[1])
    assert "zope@127.0.0.1:1" in unreachable, unreachable
    assert "not both" in conflict
    assert replica_state(replica) == before


def test_action_plugin_over_real_ssh(unpack_fixture, tmp_path, sshd):
    """The whole path: inventory -> action plugin -> module -> paramiko -> sshd -> ds-replica serve."""
    case = unpack_fixture("bushy")
    m = manifest(case)
    inventory = {"all": {"hosts": {
        "standby1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "db1": {"ansible_host": sshd.host, "ansible_port": sshd.port, "ansible_user": sshd.user},
    }}}  # fmt: skip
    task = {"dirstorage.replication.replicate": {
        "master_host": "db1", "master_path": str(case / "master"), "path": str(case / "replica"),
        "key_file": str(sshd.client_key_path), "known_hosts_file": str(sshd.known_hosts_path),
        "remote_command": str(BIN / "ds-replica"), "compress": True}, "register": "r"}  # fmt: skip
    show = {"ansible.builtin.debug": {"msg": "RESULT {{ r | to_json }}"}}
    r = run_playbook(tmp_path, [{"hosts": "standby1", "gather_facts": False, "tasks": [task, show]}],
                     inventory=inventory)
    assert r.returncode == 0, r.stdout + r.stderr + "\n--- sshd log ---\n" + sshd.log_text()
    line = next(ln for ln in r.stdout.splitlines() if "RESULT " in ln)
    res = json.loads(json.loads(line.split(": ", 1)[1]).split("RESULT ", 1)[1])
    assert res["changed"] is True and res["after_tid"] == m["master"]["last_tid"]
    assert hex_tid(Storage(str(case / "replica")).last_tid()) == m["master"]["last_tid"]


def _module_attr(module, attr):
    """DOCUMENTATION / RETURN of a module file, without importing it."""
    import ast

    tree = ast.parse((ROOT / "plugins" / "modules" / (module + ".py")).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attr for t in node.targets):
            return node.value.value
    pytest.fail("%s has no %s" % (module, attr))


def test_storage_info_says_where_the_standbys_of_a_master_stand(unpack_fixture):
    case = unpack_fixture("lawn")
    master = case / "master"
    now = time.time()
    for name, tid_age, seen_age in (("near", 60, 5), ("far", 3 * 86400, 3600), ("gone", 40 * 86400, 30 * 86400)):
        Recorder(str(master), name, "pull", clock=lambda s=now - seen_age: s).record(tid_from_epoch(now - tid_age))
    ok, res = run_module("storage_info", {"path": str(master), "max_age": 7})
    assert ok
    st = res["storage"]
    assert st["horizon"]["standby"] == "far" and st["horizon"]["tid"] == hex_tid(tid_from_epoch(now - 3 * 86400))
    assert 3 * 86400 - 5 < st["horizon"]["age_seconds"] < 3 * 86400 + 120
    assert [(s["name"], s["silent"]) for s in st["standbys"]] == [("gone", True), ("far", False), ("near", False)]
    assert st["silent_standbys"] == ["gone"]
    ok, res = run_module("storage_info", {"path": str(master)})
    assert res["storage"]["horizon"]["standby"] == "gone" and res["storage"]["silent_standbys"] == []


def test_install_files_writes_what_differs_in_one_call(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "kept.txt").write_text("not one of the files\n")
    files = {"a.py": "print('a')\n", "b.py": "x = 'b'\n"}
    ok, would = run_module("install_files", {"path": str(folder), "files": files, "mode": "0640"}, check=True)
    assert ok and would["changed"] and would["written"] == ["a.py", "b.py"]
    assert sorted(os.listdir(folder)) == ["kept.txt"], "check mode wrote"
    ok, res = run_module("install_files", {"path": str(folder), "files": files, "mode": "0640"})
    assert ok and res["written"] == ["a.py", "b.py"]
    assert {n: (folder / n).read_text() for n in files} == files
    assert {oct(os.stat(folder / n).st_mode & 0o777) for n in files} == {"0o640"}
    assert (folder / "kept.txt").read_text() == "not one of the files\n"
    ok, again = run_module("install_files", {"path": str(folder), "files": files, "mode": "0640"})
    assert ok and not again["changed"] and again["written"] == []
    # one file edited on the host, another one's mode changed: only what differs is written or set
    (folder / "a.py").write_text("print('edited')\n")
    os.chmod(folder / "b.py", 0o600)
    ok, res = run_module("install_files", {"path": str(folder), "files": files, "mode": "0640"})
    assert ok and res["changed"] and res["written"] == ["a.py"]
    assert (folder / "a.py").read_text() == files["a.py"] and oct(os.stat(folder / "b.py").st_mode & 0o777) == "0o640"


@pytest.mark.parametrize("name", ["../escape.py", "sub/x.py", ".hidden", "a..b", ""])
def test_install_files_refuses_a_name_that_is_not_a_plain_file_name(tmp_path, name):
    folder = tmp_path / "lib"
    folder.mkdir()
    ok, res = run_module("install_files", {"path": str(folder), "files": {"fine.py": "", name: "x"}})
    assert not ok and res["msg"].startswith("not plain file names: %r" % name), res
    assert os.listdir(folder) == [] and not (tmp_path / "escape.py").exists()


def test_install_role_installs_the_engine_byte_for_byte_then_changes_nothing(tmp_path):
    lib, bin_ = tmp_path / "lib", tmp_path / "bin"
    bin_.mkdir()
    install_vars = {"dirstorage_replication_lib_dir": str(lib), "dirstorage_replication_bin": str(bin_ / "ds-replica"),
                    "install_python": sys.executable}
    plays = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "dirstorage.replication.install"}],
              "vars": install_vars}]
    first = run_playbook(tmp_path, plays)
    assert first.returncode == 0, first.stdout[-3000:]
    engine = ROOT / "plugins" / "module_utils"
    installed = lib / "dirstorage_replica"
    assert sorted(os.listdir(installed)) == sorted(p.name for p in engine.glob("*.py"))
    for source in engine.glob("*.py"):  # delta.py and pack.py hold braces Jinja would read: not templated
        assert (installed / source.name).read_bytes() == source.read_bytes(), source.name
    r = subprocess.run([str(bin_ / "ds-replica"), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.startswith("usage: ds-replica"), r.stderr
    second = run_playbook(tmp_path, plays)
    assert second.returncode == 0 and "changed=0" in second.stdout.split("PLAY RECAP")[1], second.stdout[-3000:]
