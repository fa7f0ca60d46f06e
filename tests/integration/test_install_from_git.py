"""The collection installed from git, as docs/docsite/rst/guide_awx.rst shows it for an AWX project's
collections/requirements.yml (and as `ansible-galaxy collection install git+...` does by
hand): ansible-galaxy clones the repository, finds galaxy.yml at its root and installs the
collection, which is then the one Ansible uses.

The repository is a `git clone` of this checkout (its HEAD commit: uncommitted changes are
not in it), reached by a git+file:// URL; nothing from the checkout is on the collections
path (an empty ansible.cfg, ANSIBLE_COLLECTIONS_PATH the empty temporary folder).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from testbed.harness.awx_job import BIN, ROOT, docs_snippet, run_checked

GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = "%s.%s" % (GALAXY["namespace"], GALAXY["name"])

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path):
    """(clone, env): a clone of this checkout's HEAD tagged as a release, and an environment
    that sees no collection and never asks a Galaxy server."""
    clone = tmp_path / "dirstorage-replication"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True, timeout=120)
    subprocess.run(["git", "-C", str(clone), "tag", "v" + GALAXY["version"]], check=True, timeout=60)
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(cfg), ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_GALAXY_SERVER="https://example.invalid/")
    return clone, env


def _used_copy(collections, env, cwd):
    """The file ansible-doc reads the replicate module from, with only `collections` on the path."""
    env = dict(env, ANSIBLE_COLLECTIONS_PATH=str(collections))
    res = run_checked([BIN / "ansible-doc", "--json", FQCN + ".replicate"], cwd=cwd, env=env, text=True)
    return Path(json.loads(res.stdout)[FQCN + ".replicate"]["doc"]["filename"])


def _assert_installed(collections, env, cwd):
    installed = collections / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    manifest = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == (
        GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
    assert _used_copy(collections, env, cwd) == installed / "plugins" / "modules" / "replicate.py"
    assert (installed / "playbooks" / "replicate.yml").is_file()
    assert not (installed / ".git").exists()


def test_install_from_a_git_url(repo, tmp_path):
    clone, env = repo
    collections = tmp_path / "collections"
    run_checked([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", collections,
                 "git+file://%s" % clone], cwd=tmp_path, env=env)
    _assert_installed(collections, env, tmp_path)


DOC_GIT_URL = "https://git.example.org/dba/dirstorage-replication.git"


def git_form_of_docs_requirements(url):
    """docs/docsite/rst/guide_awx.rst's collections/requirements.yml with its commented git entry taken instead of
    the Galaxy one (as its comment says), as written there but for the repository's URL."""
    lines = docs_snippet("collections/requirements.yml").splitlines()
    at = next(i for i, ln in enumerate(lines) if "from a tarball or git" in ln)
    entry = [ln.replace("# ", "", 1) for ln in lines[at + 1:] if ln.lstrip().startswith("# ")]
    text = "\n".join([ln for ln in lines[:at] if not ln.lstrip().startswith(("- name", "version"))] + entry)
    assert DOC_GIT_URL in text, text  # the page still shows the URL this test replaces
    return text.replace(DOC_GIT_URL, "file://%s" % url) + "\n"


def test_install_from_requirements_yml_with_a_git_version(repo, tmp_path):
    """The commented form of docs/docsite/rst/guide_awx.rst's collections/requirements.yml, taken from the page:
    type git, a tag (the release's)."""
    clone, env = repo
    requirements = tmp_path / "requirements.yml"
    requirements.write_text(git_form_of_docs_requirements(clone))
    [entry] = yaml.safe_load(requirements.read_text())["collections"]
    assert entry == {"name": "file://%s" % clone, "type": "git", "version": "v" + GALAXY["version"]}, entry
    collections = tmp_path / "collections"
    run_checked([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", collections,
                 "-r", requirements], cwd=tmp_path, env=env)
    _assert_installed(collections, env, tmp_path)
