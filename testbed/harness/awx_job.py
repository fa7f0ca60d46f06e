# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An AWX job, run as AWX runs it, for tests/integration/test_awx_runner.py.

- ``docs_snippet``: a file of the AWX guide, docs/docsite/rst/guide_awx.rst (its yaml block that starts with `# NAME`);
- ``PrivateDataDir``: the folder AWX hands to ansible-runner: ``project/`` (the project's
  files only), ``inventory/``, ``env/extravars``, ``env/ssh_key`` (the Machine credential's
  key; ansible-runner loads it into an ssh-agent), ``env/cmdline`` (the credential's user),
  ``env/envvars``, ``requirements_collections/`` (what the project sync installed from
  ``collections/requirements.yml``) and, after the run, ``artifacts/<job>/``;
- ``project_sync``: ``ansible-galaxy collection install -r collections/requirements.yml``
  into ``requirements_collections/``, as AWX's project update does, against a Galaxy server;
- ``Job``: the job through ansible-runner as AWX's control node and execution node run it
  (``ansible-runner transmit | ansible-runner worker | ansible-runner process``), read back
  from its artifacts (status, rc, job events).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
AWX_DOC = ROOT / "docs" / "docsite" / "rst" / "guide_awx.rst"


def docs_snippet(name):
    """The ``.. code:: yaml`` block of the AWX guide whose first line is `# NAME...`, as written there."""
    for block in re.findall(r"^\.\. code:: yaml\n\n((?:   .*\n|\n)+)", AWX_DOC.read_text(), flags=re.M):
        text = textwrap.dedent(block).strip("\n") + "\n"
        if text.startswith("# " + name):
            return text
    raise AssertionError("%s has no yaml block starting with '# %s'" % (AWX_DOC.relative_to(ROOT), name))


def clean_env(**extra):
    """The process environment without the test run's ANSIBLE_* settings, PATH led by this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = "%s:%s" % (BIN, env.get("PATH", "/usr/bin:/bin"))
    env.update(extra)
    return env


def run_checked(argv, cwd, env, timeout=600, stdin=None, check=True, text=False):
    """A command's CompletedProcess; with `check`, its exit status must be 0 (else its output is shown)."""
    res = subprocess.run([str(a) for a in argv], cwd=str(cwd), env=env, input=stdin, capture_output=True,
                         timeout=timeout, text=text, check=False)
    assert res.returncode == 0 or not check, "%s failed (%d)\n--- stdout\n%s\n--- stderr\n%s" % (
        " ".join(map(str, argv)), res.returncode, res.stdout[-4000:], res.stderr[-4000:])
    return res


class PrivateDataDir(object):
    """An ansible-runner private data directory laid out as AWX lays it out for a job."""

    def __init__(self, path, project_files, inventory, extravars, ssh_key, user, envvars=None):
        self.path = Path(path)
        for name, text in project_files.items():
            self._write("project/" + name, text)
        self._write("inventory/hosts.json", json.dumps(inventory, indent=1))
        self._write("env/extravars", json.dumps(extravars))
        self._write("env/ssh_key", Path(ssh_key).read_text(), mode=0o600)
        self._write("env/cmdline", "-u %s" % user)
        self.collections = self.path / "requirements_collections"
        self.collections.mkdir()
        env = {"ANSIBLE_COLLECTIONS_PATH": str(self.collections), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_SSH_CONTROL_PATH_DIR": self._control_path_dir()}
        env.update(envvars or {})
        self._write("env/envvars", json.dumps(env))

    @staticmethod
    def _control_path_dir():
        """ssh's multiplexing sockets, in a short folder of /tmp: a socket path over 107 bytes is refused
        (unix_listener: too long), and pytest's folders (popen-gw0/test_..._a0/job-1/...) come near that."""
        path = tempfile.mkdtemp(prefix="ds-awx-cp-")
        atexit.register(shutil.rmtree, path, True)
        return path

    def _write(self, name, text, mode=0o644):
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)

    def project_sync(self, galaxy_url):
        """Install project/collections/requirements.yml into requirements_collections/ from `galaxy_url`."""
        env = clean_env(ANSIBLE_CONFIG=str(self.path / "no-ansible.cfg"), ANSIBLE_GALAXY_SERVER=galaxy_url,
                        ANSIBLE_HOME=str(self.path / "sync-home"))
        (self.path / "no-ansible.cfg").write_text("[defaults]\n")
        run_checked([BIN / "ansible-galaxy", "collection", "install", "-r", "collections/requirements.yml",
                     "-p", self.collections], cwd=self.path / "project", env=env)
        return self.collections / "ansible_collections"


class Job(object):
    """One job of `playbook` in a private data dir, through transmit | worker | process."""

    def __init__(self, pdd, playbook, ident):
        self.pdd = pdd
        self.ident = ident
        env = clean_env(HOME=str(pdd.path / "home"))
        runner = str(BIN / "ansible-runner")
        stream = run_checked([runner, "transmit", pdd.path, "-p", playbook, "--ident", ident], cwd=pdd.path,
                             env=env).stdout
        worker_dir = pdd.path / ("worker-" + ident)
        # the worker exits with the job's rc; what counts is what it streamed back
        stream = run_checked([runner, "worker", "--private-data-dir", worker_dir, "--delete"], cwd=pdd.path,
                             env=env, stdin=stream, check=False).stdout
        self.output = run_checked([runner, "process", pdd.path, "--ident", ident], cwd=pdd.path, env=env,
                                  stdin=stream).stdout.decode("utf-8", "replace")
        self.artifacts = pdd.path / "artifacts" / ident

    @property
    def status(self):
        return (self.artifacts / "status").read_text().strip()

    @property
    def rc(self):
        return int((self.artifacts / "rc").read_text())

    def events(self, kind=None):
        """The job events (what AWX stores and shows), in order, optionally only those of `kind`."""
        found = []
        for path in (self.artifacts / "job_events").glob("*.json"):
            event = json.loads(path.read_text())
            if "event_data" in event and (kind is None or event["event"] == kind):
                found.append(event)
        return sorted(found, key=lambda e: e["counter"])

    def task_events(self, kind, task):
        return [e for e in self.events(kind) if e["event_data"].get("task") == task]
