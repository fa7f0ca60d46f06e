"""The inventory against what the storages say of themselves (issue 11)."""

from __future__ import annotations

from dirstorage_replica.fleet import drift_problems, newest_standby

PROMOTED = {"promoted_at": "2026-11-26T18:00:00Z", "tid": "0000000000000002"}


def master(host="db1", addr="10.0.0.1", **kw):
    return dict({"host": host, "addr": addr, "name": "main", "path": "/srv/main", "role": "master", "exists": True,
                 "identity": "a" * 32, "last_tid": "0000000000000005", "promoted": None, "upstream": None}, **kw)


def standby(host, addr="10.0.0.9", **kw):
    return dict({"host": host, "addr": addr, "name": "main", "path": "/srv/replica", "role": "standby", "exists": True,
                 "identity": "a" * 32, "last_tid": "0000000000000004", "promoted": None,
                 "upstream": "zope@10.0.0.1:/srv/main", "upstream_host": "10.0.0.1", "upstream_path": "/srv/main",
                 "master_host": "db1", "master_addr": "10.0.0.1", "master_path": "/srv/main"}, **kw)


def test_a_fleet_as_the_inventory_says_has_no_problem():
    assert drift_problems([master(), standby("s1"), standby("s2", upstream=None, upstream_host=None)]) == []


def test_a_promoted_standby_must_move_to_the_masters():
    [line] = drift_problems([standby("s1", promoted=PROMOTED)])
    assert line.startswith("s1: storage main (/srv/replica) was promoted to master at 2026-11-26T18:00:00Z")
    assert "move it to dirstorage_masters" in line


def test_the_old_master_beside_a_promoted_copy_must_move_to_the_standbys():
    [line] = drift_problems([master(), master("s1", path="/srv/replica", promoted=PROMOTED)])
    assert line.startswith("db1: storage main (/srv/main) was replaced as master by s1")
    assert "then run rejoin.yml" in line


def test_a_standby_that_follows_another_master_than_the_inventory_says():
    [line] = drift_problems([standby("s2", upstream="z@10.0.0.3:/srv/replica", upstream_host="10.0.0.3",
                                     upstream_path="/srv/replica")])
    assert "follows z@10.0.0.3:/srv/replica, the inventory says 10.0.0.1:/srv/main" in line


def test_a_standby_ahead_of_its_master_unless_it_is_rejoining():
    states = [master(last_tid="0000000000000003"), standby("s1")]
    [line] = drift_problems(states)
    assert "newer than its master db1" in line
    assert drift_problems(states, skip_ahead=["s1"]) == []


def test_a_re_seeded_old_master_still_listed_as_master():
    [line] = drift_problems([master(upstream="z@10.0.0.3:/srv/replica")])
    assert "is a standby of z@10.0.0.3:/srv/replica" in line and "move it to dirstorage_standbys" in line


def test_storages_that_do_not_exist_or_did_not_answer_are_not_judged():
    assert drift_problems([standby("s1", exists=False, promoted=PROMOTED)]) == []


def test_the_newest_standby_first_in_inventory_order_on_a_tie():
    states = [master(), standby("s1", last_tid="0000000000000007"), standby("s2", last_tid="0000000000000009"),
              standby("s3", last_tid="0000000000000009")]
    assert newest_standby(states, "db1", "/srv/main") == ("s2", "main", "0000000000000009")
    assert newest_standby(states, "db9", "/srv/main") is None


def cascade(**s1_kw):
    """db1 -> s1 (10.0.0.2:/srv/replica, listed as a master too) -> s2, whose
    inventory entry names s1; s1_kw: what else s1 says of itself."""
    s1 = standby("s1", addr="10.0.0.2", path="/srv/replica", **s1_kw)
    s1_as_master = master("s1", addr="10.0.0.2", path="/srv/replica", upstream="zope@10.0.0.1:/srv/main", **s1_kw)
    s2 = standby("s2", path="/srv/replica2", upstream="dsr@10.0.0.2:/srv/replica", upstream_host="10.0.0.2",
                 upstream_path="/srv/replica", master_host="s1", master_addr="10.0.0.2", master_path="/srv/replica")
    return s1, s1_as_master, s2


def test_a_cascade_is_no_drift_and_may_switch_its_upstream():
    """standby1 serves standby2 (issue 10): it is listed as a master and as a
    standby; standby2 may be re-pointed from standby1 to the master and back."""
    s1, s1_as_master, s2 = cascade()
    assert drift_problems([master(), s1, s1_as_master, s2]) == []
    to_master = dict(s2, master_host="db1", master_addr="10.0.0.1", master_path="/srv/main")
    assert drift_problems([master(), s1, s1_as_master, to_master]) == []
    back = dict(s2, upstream="zope@10.0.0.1:/srv/main", upstream_host="10.0.0.1", upstream_path="/srv/main")
    assert drift_problems([master(), s1, s1_as_master, back]) == []


def test_a_switch_is_judged_only_with_both_storages_in_the_run():
    """Same paths on every host, as real fleets have them: the storage followed
    is found by address and path, and must have been read in this run."""
    _s1, _s1_as_master, s2 = cascade()
    to_master = dict(s2, master_host="db1", master_addr="10.0.0.1", master_path="/srv/main")
    [line] = drift_problems([master(), to_master, standby("s3", addr="10.0.0.3", path="/srv/replica")])
    assert "follows dsr@10.0.0.2:/srv/replica, the inventory says 10.0.0.1:/srv/main" in line
    assert "run with both hosts in the play" in line


FOLLOWS_S1 = ("s2: storage main (/srv/replica2) follows dsr@10.0.0.2:/srv/replica, the inventory says "
              "10.0.0.1:/srv/main: set its master_host and master_path to the storage it follows (to switch a "
              "cascade's upstream, run with both hosts in the play)")


def test_a_switch_to_a_storage_of_another_identity_is_drift():
    s1, s1_as_master, s2 = cascade(identity="b" * 32)
    to_master = dict(s2, master_host="db1", master_addr="10.0.0.1", master_path="/srv/main")
    # s2 follows s1, whose storage is not the master's (another identity): not a cascade, s2 drifted
    assert drift_problems([master(), s1, s1_as_master, to_master]) == [FOLLOWS_S1]


def test_a_standby_re_pointed_to_a_promoted_storage_is_still_drift():
    s1, _s1_as_master, s2 = cascade(promoted=PROMOTED)
    to_master = dict(s2, master_host="db1", master_addr="10.0.0.1", master_path="/srv/main")
    lines = drift_problems([master(), s1, to_master])
    # s1's promotion is drift of db1 and s1, and s2 following the promoted s1 is no cascade: one line each
    assert [line.split(":", 1)[0] for line in lines] == ["db1", "s1", "s2"], lines
    assert lines[0].startswith("db1: storage main (/srv/main) was replaced as master by s1")
    assert lines[1].startswith("s1: storage main (/srv/replica) was promoted to master at 2026-11-26T18:00:00Z")
    assert lines[2] == FOLLOWS_S1
