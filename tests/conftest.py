"""Fixtures shared by all tests.

- ``unpack_fixture``: ``unpack(case) -> Path`` extracts ``tests/fixtures/<case>.tar.gz``
  into the test's ``tmp_path`` and returns the case folder (master/, replica/, manifest.json).
- ``sshd`` (session): a real OpenSSH server on 127.0.0.1, see ``testbed/harness/sshd.py``.
- ``tree_state`` and friends live in ``tests/support/treeutil.py``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from testbed.harness.sshd import SSHD, SshdError, start_sshd
from tests.support.treeutil import unpack_case

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".collections"


# the long soak runs are collected only by `make soak` (SOAK=1), never skipped in `make test`
collect_ignore = [] if os.environ.get("SOAK") == "1" else ["soak"]

# property-based tests (Hypothesis): a few hundred examples each in `make
# test`, many more in `make soak`; no deadline (the machine is shared)
settings.register_profile("default", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("soak" if os.environ.get("SOAK") == "1" else "default")


def _link_collection():
    """Same as `make collections`: .collections/ansible_collections/dirstorage/replication -> root,
    so that `ansible_collections.dirstorage.replication...` imports and ansible runs find this checkout."""
    link = COLLECTIONS / "ansible_collections" / "dirstorage" / "replication"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("../../..")


_link_collection()
# read by pytest-ansible (--ansible-unit-inject-only, see pyproject.toml) and by ansible children
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))


@pytest.fixture
def unpack_fixture(tmp_path):
    """Return ``unpack(case, dest=None) -> Path``: extract a golden case into ``tmp_path``
    (or ``dest``) and return ``<dir>/<case>``. Unpacking the same case twice in one test
    gives two independent copies (the second one under ``tmp_path/<case>-2/``)."""
    counter = itertools.count(1)

    def unpack(case: str, dest=None):
        if dest is None:
            dest = tmp_path
            if (tmp_path / case).exists():
                dest = tmp_path / f"{case}-{next(counter) + 1}"
        return unpack_case(case, dest)

    return unpack


@pytest.fixture(scope="session")
def sshd():
    """A real OpenSSH sshd on 127.0.0.1:<free port> for the whole session; the current
    user is authorized with ``sshd.client_key_path``. Tests changing authorizations should
    use ``with sshd.authorized(user, pub, options): ...`` so the change is undone."""
    if not os.path.exists(SSHD):
        # never a silent skip: `make test` installs openssh-server when run as root (CI is root)
        pytest.fail(f"{SSHD} missing: run `make deps` as root to install openssh-server", pytrace=False)
    try:
        server = start_sshd(["127.0.0.1"])
    except SshdError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


#: the longest test files (minutes each: fleets, containers, power cuts), started first so that the
#: pytest-xdist workers (make test: --dist loadfile --no-loadscope-reorder) finish together; by default
#: xdist starts the files with the most tests first, which left test_e2e_failover.py running alone at the end
LONGEST_FIRST = ("test_e2e_failover.py", "test_e2e.py", "test_systemd.py", "test_power_loss.py", "test_awx_runner.py",
                 "test_crash_points_delta.py", "test_crash_points.py", "test_prometheus.py", "test_reliability.py",
                 "test_install_from_git.py", "test_hot_standby.py", "test_follow_operation.py", "test_metrics.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "sshd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ssh)
    rank = {"tests/integration/" + name: i for i, name in enumerate(LONGEST_FIRST)}
    # a stable sort: each file keeps its own order, the other files theirs
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONGEST_FIRST)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The figures the reliability and soak tests measured, one line each,
    ready to paste into an issue note."""
    from testbed.harness.reliability import SUMMARY_KEY

    lines = config.stash.get(SUMMARY_KEY, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line("[reliability] " + line)
