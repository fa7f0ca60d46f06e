#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: storage_info
short_description: Facts about a DirectoryStorage storage
version_added: 0.1.0
description:
  - Reads a storage folder (master or replica) and returns its identity, format, class, newest and packed
    transaction with their UTC times, snapshot and lock state, journal backlog and last replication.
  - On a master, where each standby stands and the horizon, the oldest transaction a standby still holds.
  - Never changes anything; takes no lock.
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  path:
    description:
      - The storage folder.
    type: path
    required: true
  max_age:
    description:
      - On a master, standbys not heard from within this many days are left out of RV(storage.horizon) and flagged
        C(silent) in RV(storage.standbys) (as C(ds-replica horizon --max-age)).
      - Default is to count every recorded standby.
    type: float
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: dirstorage.replication.verify
"""

EXAMPLES = r"""
- name: Read the replica's state
  dirstorage.replication.storage_info:
    path: /srv/standby/storage
  register: replica

- name: Complain when the replica is more than an hour behind
  ansible.builtin.assert:
    that: replica.storage.age_seconds is none or replica.storage.age_seconds < 3600
"""

RETURN = r"""
storage:
  description: Facts about the storage.
  returned: success
  type: dict
  contains:
    path:
      description: Absolute path of the storage.
      type: str
      sample: /srv/standby/storage
    identity:
      description: The storage identity (C(config/identity)); a replica has its master's.
      type: str
      sample: f2ee6b267bee30ea90d2f344ed25d1f5
    classname:
      description: Storage class (C(Full) or C(Minimal)).
      type: str
      sample: Full
    format:
      description: File name format (C(flat), C(lawn), C(chunky) or C(bushy)).
      type: str
      sample: bushy
    version:
      description: Structure version from C(config/settings).
      type: str
      sample: "0.11"
    last_tid:
      description:
        - Newest committed transaction id (16 upper-case hex digits).
        - A running storage keeps its newest commits in C(journal/) until it flushes a batch into C(A/); they count.
      type: str
      sample: 040D44D7890F0444
    last_time:
      description: Time of the newest transaction, UTC, ISO 8601 (null for an empty storage).
      type: str
      sample: "2025-11-26T09:54:01.123456Z"
    flushed_tid:
      description:
        - Newest transaction already flushed into C(A/) (C(A/x.serial)).
        - Below RV(storage.last_tid) while the journal holds commits.
      type: str
      sample: 040D44D7890F0444
    packed_tid:
      description: Transaction id the storage was last packed up to (all zeros if never packed).
      type: str
      sample: "0000000000000000"
    packed_time:
      description: Time of RV(storage.packed_tid), UTC, ISO 8601 (null if never packed).
      type: str
      sample: null
    snapshot:
      description: Whether C(misc/snapshot) marks the storage as a snapshot (stopped cleanly, or held by a tool).
      type: bool
      sample: true
    snapshot_code:
      description: Content of C(misc/snapshot) (null when there is none).
      type: str
      sample: shutdown
    lock:
      description: Whether C(misc/lock) is held (a storage process or a pull has the storage) and by which pid.
      type: dict
      sample: {"held": false, "pid": null}
    sublock:
      description: Whether C(misc/sublock) is held and by which pid.
      type: dict
      sample: {"held": false, "pid": null}
    journal_backlog:
      description: Committed transactions waiting in C(journal/) to be flushed into C(A/).
      type: int
      sample: 0
    journal_pending_replica:
      description: Whether an increment waits in C(journal/replica.tar) (a pull was interrupted after its commit
        point; the next pull applies it).
      type: bool
      sample: false
    spill_files:
      description: Files in C(B/) (written while in snapshot mode, not yet recombined).
      type: int
      sample: 0
    last_replication:
      description: UTC time of the last replication into this storage, ISO 8601 (null if none recorded).
      type: str
      sample: "2025-11-26T09:55:00Z"
    last_replication_age_seconds:
      description: Seconds since RV(storage.last_replication).
      type: float
      sample: 42.0
    age_seconds:
      description: Seconds since the newest transaction (null for an empty storage).
      type: float
      sample: 61.3
    follower:
      description:
        - What C(ds-replica follow) last recorded about this replica (C(misc/ds-replica-follow.json)), null if no
          follower ever ran on it.
        - C(state) is C(following), C(retrying) (with C(error) and C(retry_in)) or C(stopped) (with C(error) when a
          refusal stopped it); C(running) says whether its process is alive; C(tid) is the replica's newest
          transaction as the follower last saw it, C(updated) the Unix time of the record (renewed every heartbeat,
          10 s, while it follows).
        - A hot standby's follower also records C(downtime_seconds), how long its read-only service was stopped by
          the last apply, and C(spooled_increments), the increments received and checked but not yet applied.
      type: dict
      sample: {"state": "following", "running": true, "pid": 4242, "tid": "040D44D78EBB2244",
               "lag_seconds": 0.21, "updated": 1764150900.5, "master": "zope@db1:/srv/zeo/main"}
    horizon:
      description:
        - On a master, the oldest transaction held by a standby heard from within O(max_age) (the horizon). Packing
          past it strands that standby. Null when no such standby is recorded.
        - C(tid), its Unix C(time) and C(age_seconds), and the C(standby) that holds it.
      type: dict
      sample: {"tid": "040D44D78EBB2244", "time": 1764150900.5, "age_seconds": 259200.0, "standby": "standby2"}
    standbys:
      description:
        - On a master, every standby its serve recorded (C(misc/standbys/NAME.json)), oldest position first.
        - C(name) (C(--standby-name), or the ssh client address of a request of version 0); C(kind) of its last
          request (C(pull), C(follow) or C(clone)); C(tid), the newest transaction it is known to hold, and
          C(tid_time); C(sent_tid), what it was last sent; C(seen), the Unix time it was last heard from, and
          C(seen_age_seconds); C(silent), not heard from within O(max_age).
      type: list
      elements: dict
      sample: [{"name": "standby2", "kind": "follow", "tid": "040D44D78EBB2244", "tid_time": 1764150900.5,
                "sent_tid": "040D44D78EBB2244", "seen": 1764410100.0, "seen_age_seconds": 3.2, "silent": false}]
    silent_standbys:
      description: Names of the silent standbys (see RV(storage.standbys)) whose position is older than the horizon.
      type: list
      elements: str
      sample: []
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import fail_message  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.info import storage_info  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True), max_age=dict(type="float")),
                           supports_check_mode=True)
    try:
        info = storage_info(module.params["path"], module.params["max_age"])
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e))
    module.exit_json(changed=False, storage=info)


if __name__ == "__main__":
    main()
