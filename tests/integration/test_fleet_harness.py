"""The E2E fleet harness (testbed/harness/e2e.py) gives no two hosts a shared thing to create.

On loopback (the fallback when its containers cannot be booted) every E2E
"host" is an address on one machine, sharing /etc/group: two hosts whose
schedule role created the same metrics group at once failed provision.yml
(``groupadd: group 'dsfo-metrics' already exists``). These check the
inventories the E2E tests run there (the failover's hooks included) without
running them: each host its own group and folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.harness import container
from testbed.harness.e2e import DEFAULT_GROUP, Fleet, LocalHost, LoopbackFallbackWarning
from tests.integration import test_e2e, test_e2e_failover


def _offline(fleet):
    """The fleet as `running()` leaves it, without starting anything."""
    work = fleet.base / "sshd"
    fleet.sshd = SimpleNamespace(port=2222, client_key_path=work / "key", known_hosts_path=work / "known_hosts",
                                 workdir=work, authorized_keys_path=lambda user: work / f"keys-{user}")
    fleet.port = 2222
    fleet.master_url = "http://127.0.0.1:1/toolkit"
    fleet.xmlrpc_port, fleet.s1_port = 1, 3
    return fleet


def _metrics_of_every_host(fleet):
    inv = json.loads(fleet.inventory().read_text())
    seen = {}
    for group in inv["all"]["children"].values():
        for host, hvars in group["hosts"].items():
            seen[host] = (hvars["schedule_textfile_group"], hvars["schedule_textfile_dir"])
    return seen


def _assert_all_distinct(seen):
    groups = [g for g, _d in seen.values()]
    dirs = [d for _g, d in seen.values()]
    assert len(set(groups)) == len(groups), seen
    assert len(set(dirs)) == len(dirs), seen
    assert all(len(g) <= 32 for g in groups), groups  # groupadd's limit


@pytest.fixture
def fleets():
    made = []

    def make(*args, **kw):
        made.append(_offline(Fleet(*args, containers=False, **kw)))
        return made[-1]

    yield make
    for f in made:
        shutil.rmtree(f.base, ignore_errors=True)


def test_failover_hosts_never_share_a_metrics_group(fleets):
    f = fleets("dsfo", test_e2e_failover.MASTER_IP, test_e2e_failover.STANDBYS, own_paths=True,
               master_storage="fo_main")
    hooks = [None, test_e2e_failover.first_inventory(f),
             test_e2e_failover.after_failover_inventory(f),
             test_e2e_failover.after_failover_inventory(f, old_master_listed_as="master"),
             test_e2e_failover.after_failover_inventory(f, promote_command="false")]
    for hook in hooks:
        f.inventory_hook = hook
        seen = _metrics_of_every_host(f)
        assert {"standby1", "standby2"} <= set(seen)
        _assert_all_distinct(seen)
        # the same host keeps its group and folder from one inventory to the next (idempotent reruns)
        assert seen["standby2"] == (f.metrics_group("standby2"), str(f.metrics_dir("standby2")))


def test_default_paths_fleet_keeps_the_default_group_on_one_host(fleets):
    f = fleets("dse2e", test_e2e.MASTER_IP, test_e2e.STANDBYS, own_paths=False)
    seen = _metrics_of_every_host(f)
    _assert_all_distinct(seen)
    assert seen["standby1"][0] == DEFAULT_GROUP
    both = ("standby1", "standby2")
    assert [Path(seen[h][1]) for h in both] == [f.base / h / "metrics" for h in both]


def test_a_fleet_whose_containers_cannot_boot_falls_back_to_loopback_loudly(monkeypatch):
    """No systemd-nspawn: the fleet says so in a warning (pytest's summary) and on stderr, and runs
    its hosts on loopback; with fallback=False it fails instead. Never a silent skip."""
    monkeypatch.setattr(container, "NSPAWN", "/nonexistent/systemd-nspawn")
    f = Fleet("dsnb", "127.0.0.250", {"standby1": ("127.0.0.251", "dsnbone", "nb_one")})
    try:
        with pytest.warns(LoopbackFallbackWarning, match=r"E2E fleet dsnb: .*LOOPBACK ADDRESSES.*systemd-nspawn"):
            assert f._boot_hosts() is False
        assert f.hosts_on == {} and f.on("standby1") is LocalHost
        strict = Fleet("dsnb", "127.0.0.250", {"standby1": ("127.0.0.251", "dsnbone", "nb_one")}, fallback=False)
        try:
            with pytest.raises(container.ContainerError, match="systemd-nspawn missing"):
                strict._boot_hosts()
        finally:
            shutil.rmtree(strict.base, ignore_errors=True)
    finally:
        shutil.rmtree(f.base, ignore_errors=True)
