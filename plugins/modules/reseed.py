#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: reseed
short_description: Re-seed a DirectoryStorage standby or old master from a master, transferring only what differs
version_added: 0.2.0
description:
  - Same as C(ds-replica clone --delta MASTER PATH). O(path) holds a storage with the master's identity (a
    standby that diverged, an old master, or a clone that was interrupted); only what differs is transferred.
  - In place (RV(method=in-place)) when O(path)'s newest transactions include one the master holds (the anchor)
    and the master is not packed past it; O(path) is rewound to the anchor and the master's increment applied
    through the journal, as a pull does. Otherwise (no anchor, master packed past it, a partial clone to
    resume) by a new tree (RV(method=tree)), swapped into place in one atomic step; RV(method_reason) says why.
  - When O(path) holds transactions the master does not (an old master that committed after the last pull),
    they are kept in C(PATH.before-reseed-<UTC time>) (in place, only their files and the files they changed; by
    a new tree, the whole old storage), listed in RV(diverged_transactions) and by C(ds-replica kept-aside).
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  master:
    description:
      - The master storage, as C([user@]host:path) (reached over ssh), or a plain local path.
    type: str
    required: true
  path:
    description:
      - The storage to re-seed.
    type: path
    required: true
  in_place:
    description:
      - Rewind and re-seed the storage in place (only the diverged transactions' files kept aside), by a new tree
        when it cannot (RV(method_reason) says why).
      - V(false) re-seeds by a new tree even where in place would do, keeping the whole old tree aside.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dirstorage.replication.connection
attributes:
  check_mode:
    support: full
    details: Reports RV(changed=true) without contacting the master.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: dirstorage.replication.clone
  - module: dirstorage.replication.promote
"""

EXAMPLES = r"""
- name: Make the old master a standby of the new one
  dirstorage.replication.reseed:
    master: zope@db2.example.com:/srv/standby/main
    path: /var/lib/zope/storage
  register: reseed

- name: Show what only the old master held
  ansible.builtin.debug:
    msg: "kept aside in {{ reseed.kept_aside }}: {{ reseed.diverged_transactions }}"
  when: reseed.kept_aside
"""

RETURN = r"""
method:
  description: How the storage was re-seeded, V(in-place) or V(tree) (null in check mode).
  returned: always
  type: str
  sample: in-place
method_reason:
  description: Why a new tree was built instead of re-seeding in place.
  returned: when RV(method=tree)
  type: str
  sample: no transaction of the chain window is the master's
anchor_tid:
  description: The newest transaction O(path) and the master both held.
  returned: success
  type: str
  sample: 040D44D7890F0400
changed:
  description:
    - Whether the storage was re-seeded (in check mode, whether it would be).
    - V(false) when it already was the master's (in place, nothing diverged and nothing to apply).
  returned: always
  type: bool
  sample: true
after_tid:
  description: Newest transaction of the re-seeded storage.
  returned: success
  type: str
  sample: 040D44D7890F0444
files:
  description: Files received from the master.
  returned: success
  type: int
  sample: 812
bytes:
  description: Bytes of file content received.
  returned: success
  type: int
  sample: 1048576
kept_files:
  description: Files kept (hard-linked) from what O(path) already held, by a new tree (null in place, where every
    file but the diverged ones stays).
  returned: success
  type: int
  sample: 436000
removed_files:
  description: Files of O(path) the master does not hold.
  returned: success
  type: int
  sample: 900
diverged_transactions:
  description: The transactions O(path) held that the master does not, each with C(tid), C(time), C(user),
    C(description).
  returned: success
  type: list
  elements: dict
  sample: [{"tid": "040D44D7890F0444", "time": "2026-11-26T18:00:00Z", "user": "alice", "description": "order"}]
kept_aside:
  description: Where the diverged transactions were kept (null when nothing was lost).
  returned: success
  type: str
  sample: /var/lib/zope/storage.before-reseed-20261126T180000Z
kept_aside_line:
  description: One line listing RV(diverged_transactions) and RV(kept_aside) (null when nothing was lost), as
    C(ds-replica clone --delta) prints it.
  returned: success
  type: str
  sample: "1 transaction(s) the master does not hold, kept in /var/lib/zope/storage.before-reseed-20261126T180000Z:
    040D44D7890F0444 2026-11-26T18:00:00Z user='alice' description='order'"
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import (  # noqa: E402
    argument_spec,
    fail_message,
    pull_options,
)
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.keep_aside import (  # noqa: E402
    kept_aside_line,
)
from ansible_collections.dirstorage.replication.plugins.module_utils.reseed import reseed  # noqa: E402

RESULT_KEYS = ("method", "method_reason", "anchor_tid", "after_tid", "before_tid", "files", "bytes", "kept_files",
               "removed_files", "diverged_transactions",
               "kept_aside", "snapshot_seconds", "elapsed_seconds", "master_tid")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(master=dict(type="str", required=True), path=dict(type="path", required=True),
                                    in_place=dict(type="bool", default=True)),
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        module.exit_json(changed=True, method=None, diverged_transactions=[], kept_aside=None, kept_aside_line=None)
    try:
        result = reseed(p["master"], p["path"], pull_options(p), in_place=p["in_place"])
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e), retryable=bool(getattr(e, "retryable", False)))
    module.exit_json(changed=result.get("changed", True), kept_aside_line=kept_aside_line(result),
                     **{k: result.get(k) for k in RESULT_KEYS})


if __name__ == "__main__":
    main()
