#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: clone
short_description: Make the first copy of a live DirectoryStorage master
version_added: 0.1.0
description:
  - Copies a master storage, through ssh or from a local folder, into a new replica folder on the standby. The master
    is held in snapshot mode during the transfer and keeps serving its clients, so no downtime is needed.
  - The copy is written into a hidden sibling folder and renamed into place only once it is complete and durable;
    an interrupted clone never looks like a valid replica.
  - When O(path) already holds a storage the module changes nothing (unless O(force=true)); bring it up to date with
    M(dirstorage.replication.replicate).
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
      - The new replica folder on the standby. Its parent folder must exist. It may exist if it is empty.
    type: path
    required: true
    aliases: [replica]
  force:
    description:
      - Replace a storage (or a non-empty folder) that is already at O(path). The old one is removed only after the new
        copy is complete.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dirstorage.replication.connection
attributes:
  check_mode:
    support: full
    details: Reports RV(changed=true) when O(path) holds no storage (or O(force=true)), without contacting the master.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: dirstorage.replication.replicate
  - module: dirstorage.replication.storage_info
"""

EXAMPLES = r"""
- name: First copy of the master, unless the standby already has one
  dirstorage.replication.clone:
    master: zope@db1.example.com:/var/lib/zope/storage
    path: /srv/standby/storage
    key_file: /home/replica/.ssh/id_ed25519

- name: Start over from a fresh copy
  dirstorage.replication.clone:
    master: zope@db1.example.com:/var/lib/zope/storage
    path: /srv/standby/storage
    force: true
"""

RETURN = r"""
changed:
  description: Whether a copy was made (in check mode, whether one would be made).
  returned: always
  type: bool
  sample: true
after_tid:
  description: Newest transaction id of the replica (16 upper-case hex digits). Null in check mode when a copy would
    be made.
  returned: success
  type: str
  sample: 03E5A6C2A0C1D111
transactions:
  description: Number of transactions copied (0 when nothing was copied).
  returned: success
  type: int
  sample: 1200
files:
  description: Number of files copied.
  returned: success
  type: int
  sample: 5230
bytes:
  description: Bytes of file content copied.
  returned: success
  type: int
  sample: 73400320
snapshot_seconds:
  description: Time the master was held in snapshot mode.
  returned: success
  type: float
  sample: 1.9
elapsed_seconds:
  description: Wall time of the copy on the standby.
  returned: success
  type: float
  sample: 2.1
"""

import os  # noqa: E402

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import (  # noqa: E402
    argument_spec,
    fail_message,
    pull_options,
)
from ansible_collections.dirstorage.replication.plugins.module_utils.clone import clone  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.storage import Storage, hex_tid  # noqa: E402

# no "path" key: AnsibleModule would add file attributes of it to the result
RESULT_KEYS = ("after_tid", "transactions", "files", "bytes", "snapshot_seconds", "elapsed_seconds")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            master=dict(type="str", required=True),
            path=dict(type="path", required=True, aliases=["replica"]),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path = os.path.abspath(p["path"])
    # the engine's own test for "already holds a storage" (it refuses to overwrite one without force)
    holds_storage = os.path.isfile(os.path.join(path, "config", "settings"))
    nothing = dict(transactions=0, files=0, bytes=0, snapshot_seconds=0.0, elapsed_seconds=0.0)
    try:
        if holds_storage and not p["force"]:
            module.exit_json(changed=False, after_tid=hex_tid(Storage(path).last_tid()), **nothing)
        if module.check_mode:
            module.exit_json(changed=True, after_tid=None, **nothing)
        result = clone(p["master"], path, pull_options(p), force=p["force"])
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e), retryable=bool(getattr(e, "retryable", False)))
    module.exit_json(changed=bool(result["changed"]), **{k: result.get(k) for k in RESULT_KEYS})


if __name__ == "__main__":
    main()
