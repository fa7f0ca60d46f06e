"""The collection as users get it: build the tarball, install it into an empty
collections path, and run the demo playbook from the installed copy only.

Nothing from the checkout is on the collections path (ANSIBLE_COLLECTIONS_PATH is the
empty temporary folder, the ansible.cfg of the checkout is not read): if galaxy.yml's
build_ignore drops a file the collection needs, or meta/runtime.yml is wrong, this fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from dirstorage_replica.info import storage_info

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL = "%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])

pytestmark = pytest.mark.slow


def _run(argv, cwd, env, timeout=300):
    res = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert res.returncode == 0, "%s failed (%d)\n--- stdout\n%s\n--- stderr\n%s" % (
        " ".join(map(str, argv)), res.returncode, res.stdout[-4000:], res.stderr[-4000:])
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(collections_path, env, tarball): the collection built from this checkout and installed."""
    work = tmp_path_factory.mktemp("packaging")
    empty_cfg = work / "ansible.cfg"
    empty_cfg.write_text("[defaults]\n")
    collections = work / "collections"
    collections.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(empty_cfg), ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(work / "tmp"), ANSIBLE_HOME=str(work / "home"),
               ANSIBLE_GALAXY_SERVER="https://example.invalid/")  # no dependencies: never asks a server
    _run([BIN / "ansible-galaxy", "collection", "build", "--output-path", work, ROOT], cwd=work, env=env)
    tarball = work / TARBALL
    assert tarball.is_file()
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", collections, tarball], cwd=work, env=env)
    return collections, env, tarball


def test_tarball_holds_the_collection_and_no_development_files(installed):
    _collections, _env, tarball = installed
    with tarfile.open(tarball) as tf:
        names = set(tf.getnames())
    for needed in ("MANIFEST.json", "FILES.json", "README.md", "LICENSE", "meta/runtime.yml",
                   "meta/execution-environment.yml", "requirements.txt", "bindep.txt", "playbooks/demo.yml",
                   "playbooks/replicate.yml", "plugins/modules/replicate.py", "plugins/action/replicate.py",
                   "plugins/module_utils/replica.py"):
        assert needed in names, needed
    for top in (".venv", ".collections", ".ansible", "demo", "tests/output", "bench/results", ".git", "build",
                ".pytest_cache", ".ruff_cache"):
        assert not any(n == top or n.startswith(top + "/") for n in names), top
    assert not any(n.endswith(".pyc") or "__pycache__" in n or ".egg-info" in n for n in names)


def test_installed_copy_is_the_only_one_seen(installed):
    collections, env, _tarball = installed
    res = _run([BIN / "ansible-galaxy", "collection", "list", "dirstorage.replication", "--format", "json"],
               cwd=collections.parent, env=env)
    found = json.loads(res.stdout)
    assert list(found) == [str(collections / "ansible_collections")], found


def test_demo_playbook_runs_from_the_installed_collection(installed, unpack_fixture, tmp_path):
    collections, env, _tarball = installed
    case = unpack_fixture("bushy")
    master, standby, result = case / "master", case / "replica", tmp_path / "result.json"
    run = _run([BIN / "ansible-playbook", "-vvv", "-i", "localhost,", "dirstorage.replication.demo",
                "-e", "demo_master=%s demo_standby=%s demo_result=%s" % (master, standby, result)],
               cwd=tmp_path, env=env)
    pulled = json.loads(result.read_text())
    assert pulled["changed"] and pulled["transactions"] > 0  # bushy's replica lags its master
    assert pulled["after_tid"] == storage_info(str(master))["last_tid"]
    assert storage_info(str(standby))["last_tid"] == storage_info(str(master))["last_tid"]
    # the playbook and every module came from the installed copy, not from the checkout
    installed_copy = collections / "ansible_collections" / "dirstorage" / "replication"
    assert "plays in %s" % (installed_copy / "playbooks" / "demo.yml") in run.stdout, run.stdout[-3000:]
    used = [ln.split("Using module file ", 1)[1].strip() for ln in run.stdout.splitlines()
            if "Using module file " in ln]
    ours = [m for m in used if Path(m).name in ("replicate.py", "storage_info.py", "verify.py")]
    assert {Path(m).name for m in ours} == {"replicate.py", "storage_info.py", "verify.py"}, used
    assert all(Path(m).parent == installed_copy / "plugins" / "modules" for m in ours), ours
    assert str(ROOT / "plugins") not in run.stdout


def test_execution_environment_definition_builds_a_context(installed, tmp_path):
    """ansible-builder (3.x, the one AWX users run) accepts execution-environment.yml
    and, reading the installed collection's meta/execution-environment.yml, finds
    its Python and system requirements. (The image build itself needs the base
    image from quay.io, which this machine cannot reach.)"""
    collections, env, tarball = installed
    work = tmp_path / "ee"
    work.mkdir()
    (work / tarball.name).write_bytes(tarball.read_bytes())
    (work / "execution-environment.yml").write_text((ROOT / "execution-environment.yml").read_text())
    _run([BIN / "ansible-builder", "create", "-f", "execution-environment.yml", "-c", "context"], cwd=work, env=env)
    containerfile = (work / "context" / "Dockerfile").read_text()
    assert "ansible-core==" in containerfile and "ansible-galaxy" in containerfile
    assert (work / "context" / "_build" / "collections" / tarball.name).read_bytes() == tarball.read_bytes()
    galaxy = yaml.safe_load((work / "context" / "_build" / "requirements.yml").read_text())
    assert galaxy["collections"][0]["type"] == "file"
    assert galaxy["collections"][0]["name"].endswith(tarball.name)

    res = _run([BIN / "ansible-builder", "introspect", "--sanitize", collections], cwd=work, env=env)
    deps = yaml.safe_load(res.stdout)
    runtime = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    for req in filter(None, runtime):
        assert any(p.startswith(req) and "dirstorage.replication" in p for p in deps["python"]), (req, deps)
    system = " ".join(deps["system"])
    for pkg in ("openssh-client [platform:dpkg]", "openssh-clients [platform:rpm]", "tar"):
        assert pkg in system, (pkg, deps)
