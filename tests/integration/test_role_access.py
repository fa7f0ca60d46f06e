"""The roles' own tasks, rendered by Ansible with the collection's filters
(no host is changed): the master role's authorized_keys line of a standby
key and the standby role's stop and start commands of a hot standby's
service refuse what a standby account or an inventory could slip into them
(issue 20; the checks themselves are tested in
tests/unit/plugins/module_utils/test_access.py)."""

from __future__ import annotations

import json
import shlex
import subprocess

import yaml

from tests.integration.test_modules import BIN, ENV, ROOT
from tests.unit.plugins.module_utils.test_access import ED


def task(role, tasks_file, name):
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / tasks_file).read_text())
    return next(t for t in tasks if t.get("name") == name)


def render(tmp_path, template, variables):
    """(exit status, output, rendered text) of `template` (a Jinja string) with `variables`."""
    dest = tmp_path / "rendered.txt"
    dest.unlink(missing_ok=True)
    r = subprocess.run([str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.copy",
                        "-a", "content={{ rendered }} dest=%s mode=0644" % dest,
                        "-e", json.dumps(dict(variables, rendered=template))],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    return r.returncode, r.stdout + r.stderr, dest.read_text() if dest.exists() else None


def authorized_block(tmp_path, key, path="/srv/zodb/main"):
    block = task("master", "keys.yml", "Authorize each standby key for its storage only")[
        "ansible.builtin.blockinfile"]["block"]
    return render(tmp_path, block, {"item": {"name": "main", "standby": "standby1", "master_path": path, "key": key},
                                    "dirstorage_replication_bin": "/usr/local/bin/ds-replica",
                                    "master_serve_options": ""})


def test_the_master_role_restricts_a_plain_key(tmp_path):
    status, output, text = authorized_block(tmp_path, ED + "\n", "/srv/my zodb")
    assert status == 0, output
    assert text == 'restrict,command="/usr/local/bin/ds-replica serve \'/srv/my zodb\'" %s' % ED


def test_the_master_role_refuses_a_two_line_public_key(tmp_path):
    """A second line in the standby's .pub file once became a key without restrictions."""
    status, output, text = authorized_block(tmp_path, ED + "\nssh-ed25519 AAAAC3Nz attacker\n")
    assert status != 0 and text is None
    assert "the standby's public key file holds more than one line" in output


def test_the_master_role_refuses_a_quote_in_the_master_path(tmp_path):
    status, output, text = authorized_block(tmp_path, ED, '/srv/x" ssh-ed25519 AAAA')
    assert status != 0 and text is None and "cannot be part of the forced command" in output


def stop_command(tmp_path, service):
    resolved = task("standby", "resolve.yml", "Resolve each storage's master, key and known_hosts")["vars"]["resolved"]
    return render(tmp_path, resolved["stop_command"], {"item": {"name": "main", "service": service},
                                                       "standby_systemctl": "/usr/bin/systemctl"})


def test_the_standby_role_builds_a_services_stop_command(tmp_path):
    status, output, text = stop_command(tmp_path, "zeo@main.service")
    assert status == 0, output
    assert shlex.split(text) == ["sudo", "-n", "/usr/bin/systemctl", "stop", "zeo@main.service"]


def test_the_standby_role_refuses_a_service_name_the_shell_would_split(tmp_path):
    """hot.py runs the stop command with /bin/sh -c: `zeo; touch F` once ran touch."""
    status, output, text = stop_command(tmp_path, "zeo; touch /tmp/ds-replica-owned")
    assert status != 0 and text is None
    assert "is not a systemd unit name" in output
