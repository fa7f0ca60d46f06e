# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inventory against what the storages say of themselves, so that a
failover acts on what the storages are, not on what the inventory says.

`storage_state(path)` is what one storage says (read on its host by the
`fleet_state` module): identity, newest transaction, promoted or not, its
upstream.  The controller (filter plugin `fleet`) joins the states of every
host with what the inventory says of each storage (role master or standby,
the standby's master_host/addr/path) and asks:

- `drift_problems(states)`: one line per disagreement, each naming the
  inventory change to make; playbooks stop before changing anything;
- `newest_standby(states, master_host, master_path)`: which standby of a
  master's storage holds the newest transaction (promote.yml).
"""

from __future__ import annotations

import os

from .errors import DSError
from .fleet_marks import promoted, upstream
from .storage import Storage, hex_tid
from .transport import parse_master


def storage_state(path):
    """What the storage at `path` says of itself; `exists` False when there
    is none (yet)."""
    if not os.path.isfile(os.path.join(path, "config", "settings")):
        return {"exists": False}
    try:
        st = Storage(path)
        last = hex_tid(st.newest_tid())  # a live master's newest commits wait in its journal
    except DSError as e:
        return {"exists": True, "error": str(e)}
    up = upstream(st.home)
    _user, host, up_path = parse_master(up) if up else (None, None, None)
    return {"exists": True, "identity": st.identity, "last_tid": last, "promoted": promoted(st.home),
            "upstream": up, "upstream_host": host, "upstream_path": up_path}


def _where(s):
    return "%s: storage %s (%s)" % (s["host"], s.get("name"), s["path"])


def _promoted_standby(s):
    if s["role"] == "standby" and s.get("promoted"):
        return ("%s was promoted to master at %s: move it to dirstorage_masters (master_storages) and set the "
                "other standbys' master_host to %s" % (_where(s), s["promoted"]["promoted_at"], s["host"]))
    return None


def _also_a_standby(s, states):
    """A storage listed both as a master and as a standby: the middle of a
    cascade (a standby that is also the master of other standbys), which
    follows its own upstream and serves others."""
    return any(o["role"] == "standby" and o["host"] == s["host"] and o["path"] == s["path"] for o in states)


def _state_at(states, addr, path):
    return next((o for o in states if o.get("addr") == addr and o["path"] == path), None)


def _cascade_switch(s, states):
    """The standby follows one storage and the inventory names another, both
    read in this run, of its identity and never promoted: a cascade (issue
    10), whose standbys may switch between the master and a standby at any
    time (the pull still refuses a history that is not a prefix)."""
    followed = _state_at(states, s["upstream_host"], s["upstream_path"])
    named = _state_at(states, s.get("master_addr"), s.get("master_path"))
    return all(o is not None and not o.get("promoted") and o.get("identity") == s.get("identity")
               for o in (followed, named))


def _standby_listed_as_master(s, states):
    if s["role"] == "master" and not s.get("promoted") and s.get("upstream") and not _also_a_standby(s, states):
        return ("%s is a standby of %s since it was re-seeded: move it to dirstorage_standbys (standby_storages)"
                % (_where(s), s["upstream"]))
    return None


def _other_upstream(s, states):
    if s["role"] != "standby" or not s.get("upstream_host") or s.get("promoted") or _cascade_switch(s, states):
        return None
    if (s["upstream_host"], s["upstream_path"]) != (s.get("master_addr"), s.get("master_path")):
        return ("%s follows %s, the inventory says %s:%s: set its master_host and master_path to the storage it "
                "follows (to switch a cascade's upstream, run with both hosts in the play)"
                % (_where(s), s["upstream"], s.get("master_addr"), s.get("master_path")))
    return None


def _replaced_master(s, states):
    if s["role"] != "master" or s.get("promoted") or not s.get("identity"):
        return None
    for other in states:
        if other is not s and other.get("identity") == s["identity"] and other.get("promoted"):
            return ("%s was replaced as master by %s (promoted at %s): move it to dirstorage_standbys with "
                    "master_host %s, then run rejoin.yml" % (_where(s), other["host"],
                                                             other["promoted"]["promoted_at"], other["host"]))
    return None


def _ahead_of_master(s, states, skip):
    if s["role"] != "standby" or s["host"] in skip or not s.get("last_tid"):
        return None
    for m in states:
        if (m["role"] == "master" and m["host"] == s.get("master_host") and m["path"] == s.get("master_path")
                and m.get("last_tid") and m["last_tid"] < s["last_tid"]):
            return ("%s holds transaction %s, newer than its master %s (%s): %s is not the current master; set "
                    "its master_host to the one that is" % (_where(s), s["last_tid"], m["host"], m["last_tid"],
                                                            m["host"]))
    return None


def drift_problems(states, skip_ahead=()):
    """One line per storage whose inventory entry disagrees with what it
    says of itself.  `states`: dicts of storage_state plus host, addr (its
    ansible_host), name, path, role and (standbys) master_host, master_addr,
    master_path; storages that do not exist (yet) or whose host did not
    answer are not judged."""
    states = [s for s in states if s.get("exists")]
    problems = []
    for s in states:
        line = (_promoted_standby(s) or _standby_listed_as_master(s, states) or _other_upstream(s, states)
                or _replaced_master(s, states) or _ahead_of_master(s, states, skip_ahead))
        if line:
            problems.append(line)
    return problems


def newest_standby(states, master_host, master_path):
    """(host, name, last_tid) of the standby of `master_host`:`master_path`
    holding the newest transaction (the first in inventory order on a tie),
    or None when none answered."""
    best = None
    for s in states:
        if (s["role"] == "standby" and s.get("exists") and s.get("last_tid") and s.get("master_host") == master_host
                and s.get("master_path") == master_path and (best is None or s["last_tid"] > best[2])):
            best = (s["host"], s.get("name"), s["last_tid"])
    return best
