"""(In make soak, not make test, for now: on a quiet machine its check that the
master wrote on after standby1's pull failed — see the closing note of the
session that moved it; it passed on a loaded one.)

End to end, on loopback hosts: a cascade master -> standby1 -> standby2,
set up by provision.yml with the master role applied to standby1 too
(`direct` snapshots of its replica, keys restricted to `ds-replica serve`),
pulls by replicate.yml while the master takes writes, then standby2 switches
its upstream to the master and catches up directly.  Root only."""

from __future__ import annotations

import os
import time

import pytest

from dirstorage_replica import storage
from tests.support.checks import assert_reads_as
from tests.support.e2e import Fleet, last_tid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="E2E needs root (real accounts)")

STANDBYS = {"standby1": ("127.0.0.7", "dscasone", "cas_one"), "standby2": ("127.0.0.8", "dscastwo", "cas_two")}


def cascade(fleet, upstream):
    """An inventory hook: standby1 is also a master (of its replica); standby2
    pulls from `upstream` ("standby1" or "master"), or is left out (None)."""
    def hook(inv):
        standbys = inv["all"]["children"]["dirstorage_standbys"]["hosts"]
        masters = inv["all"]["children"]["dirstorage_masters"]["hosts"]
        master = masters["master"]
        if upstream is None:
            del standbys["standby2"]
            return
        one = fleet.replica("standby1")
        masters["standby1"] = dict(standbys["standby1"], master_user=fleet.user("standby1"),
                                   master_authorized_keys_file=str(fleet.sshd.authorized_keys_path(fleet.user("standby1"))),
                                   master_host_key_file=master["master_host_key_file"],
                                   master_storages=[{"name": "cas_one", "path": str(one), "snapshot": ["direct"]}])
        if upstream == "standby1":
            standbys["standby2"]["standby_storages"][0].update(master_host="standby1", master_path=str(one))
    return hook


@pytest.fixture(scope="module")
def fleet():
    f = Fleet("dscas", master_ip="127.0.0.6", standbys=STANDBYS, own_paths=True)
    with f.running():
        yield f


def writing_master(fleet, rate):
    """Restart the master serving with `rate` transactions per second going on (0: none)."""
    fleet.stop_master()
    fleet.start_master(rate=rate)


def test_cascade_then_switch_upstream(fleet):
    t0 = time.monotonic()
    fleet.inventory_hook = cascade(fleet, None)
    fleet.playbook("provision.yml", timeout=900)  # standby1 first: standby2's master must exist
    fleet.inventory_hook = cascade(fleet, "standby1")
    fleet.playbook("provision.yml", "--limit", "standby1,standby2", timeout=900)
    one, two, master = fleet.replica("standby1"), fleet.replica("standby2"), fleet.master_home
    keys = fleet.sshd.authorized_keys_path(fleet.user("standby1")).read_text()
    assert f'restrict,command="{fleet.bin} serve {one}"' in keys
    conf = (one / "config" / "snapshot.conf").read_text().splitlines()
    assert [ln for ln in conf if ln.strip() and not ln.startswith("#")] == ["direct"]
    assert_reads_as(two, one)

    # both standbys pull at once while the master takes writes; standby2 once more
    writing_master(fleet, rate=20)
    fleet.replicate()
    _proc, report = fleet.replicate("--limit", "standby2,localhost")
    (result,) = report["standby2"]
    assert result["after_tid"] == last_tid(one)
    assert_reads_as(two, one)  # = the master as of standby1's newest transaction...
    writing_master(fleet, rate=0)
    newest_one = storage.Storage(one).last_tid()
    assert newest_one in {t.tid for t in storage.Storage(master).chain()}
    assert newest_one < storage.Storage(master).last_tid()  # ...which the master has since passed

    # standby2 switches its upstream to the master and catches up directly
    fleet.inventory_hook = cascade(fleet, "master")
    fleet.playbook("provision.yml", "--limit", "master,standby1,standby2", timeout=900)  # both ends of the switch
    _proc, report = fleet.replicate("--limit", "standby2,localhost")
    (result,) = report["standby2"]
    assert result["changed"] is True and result["after_tid"] == last_tid(master)
    assert_reads_as(two, master)
    print("cascade E2E: %.0fs" % (time.monotonic() - t0))
