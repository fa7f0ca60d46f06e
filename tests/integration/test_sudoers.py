"""The standby role's sudoers drop-in for hot standbys (`service:` in
standby_storages), rendered with ansible's own template module and checked by
visudo, as the role's `validate:` does: the replica account may run exactly
`systemctl stop NAME` and `systemctl start NAME`, nothing more."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.integration.test_modules import BIN, ENV, ROOT

TEMPLATE = ROOT / "roles" / "standby" / "templates" / "sudoers.j2"


@pytest.fixture
def visudo():
    """visudo checks the drop-in as the role does: never skipped (make deps installs sudo)."""
    if not shutil.which("visudo"):
        pytest.fail("visudo missing: run `make deps` as root (Debian package sudo)", pytrace=False)


def render(tmp_path, services, user="dsreplica"):
    dest = tmp_path / "ds-replica-sudoers"
    extra = {"standby_user": user, "standby_services": services, "standby_systemctl": "/usr/bin/systemctl"}
    r = subprocess.run([str(BIN / "ansible"), "localhost", "-m", "ansible.builtin.template", "-a",
                        "src=%s dest=%s mode=0440 validate='visudo -cf %%s'" % (TEMPLATE, dest), "-e",
                        json.dumps(extra)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
                       check=False)
    return r, dest


@pytest.mark.usefixtures("visudo")
def test_exactly_stop_and_start_of_each_service(tmp_path):
    r, dest = render(tmp_path, ["zeo-standby", "zeo@main.service"])
    assert r.returncode == 0, r.stdout + r.stderr
    rules = [line for line in dest.read_text().splitlines() if line and not line.startswith("#")]
    assert rules == [
        "dsreplica ALL=(root) NOPASSWD: /usr/bin/systemctl stop zeo-standby, /usr/bin/systemctl start zeo-standby",
        "dsreplica ALL=(root) NOPASSWD: /usr/bin/systemctl stop zeo@main.service, "
        "/usr/bin/systemctl start zeo@main.service",
    ]


@pytest.mark.usefixtures("visudo")
def test_visudo_guards_the_file(tmp_path):
    # a name the role's own check would refuse: visudo refuses the file too, and nothing is installed
    r, dest = render(tmp_path, ["a,b=c:d"])
    assert r.returncode != 0 and "failed to validate" in r.stdout + r.stderr
    assert not dest.exists()
