#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: verify
short_description: Check a DirectoryStorage replica against its checksums and its master
version_added: 0.1.0
description:
  - Checks a storage against its own MD5 checksums (the transaction chain down to the pack, the revisions those
    transactions wrote, every current-revision file).
  - Given O(master), also checks that the replica's history is the master's, up to the replica's newest transaction.
  - Fails, listing the problems, when any is found.
  - Changes nothing, except that it finishes an in-place re-seed that was interrupted (C(ds-replica clone --delta)),
    as the next pull would; it then reports C(changed) and RV(finished_reseed).
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  path:
    description:
      - The storage folder to check.
    type: path
    required: true
    aliases: [replica]
  master:
    description:
      - The master storage, as C([user@]host:path) (reached over ssh), or a plain local path. Without it, only the
        storage's own checksums are checked.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dirstorage.replication.connection
attributes:
  check_mode:
    support: full
    details: Runs the same checks; an interrupted in-place re-seed is not finished, only named in RV(pending_reseed).
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: dirstorage.replication.replicate
  - module: dirstorage.replication.storage_info
"""

EXAMPLES = r"""
- name: Check a replica against its checksums
  dirstorage.replication.verify:
    path: /srv/standby/storage

- name: Check a replica against its master
  dirstorage.replication.verify:
    path: /srv/standby/storage
    master: zope@db1.example.com:/var/lib/zope/storage
"""

RETURN = r"""
ok:
  description: Whether no problem was found.
  returned: always
  type: bool
  sample: true
problems:
  description: One line per problem found.
  returned: always
  type: list
  elements: str
  sample: ["transaction 040D44D7890F0444 differs from the master's"]
last_tid:
  description: Newest transaction id of the storage.
  returned: success
  type: str
  sample: 040D44D7890F0444
checked_transactions:
  description: Transactions checked against their checksums.
  returned: success
  type: int
  sample: 120
checked_files:
  description: Object revision and current-revision files checked.
  returned: success
  type: int
  sample: 410
master_checked_transactions:
  description: Transactions found identical on the master (0 without O(master)).
  returned: success
  type: int
  sample: 120
pending_reseed:
  description:
    - Keep-aside folders of interrupted in-place re-seeds found next to the storage (empty when there was none).
      Outside check mode they are then finished (or dropped, when the re-seed never passed its commit point).
  returned: success
  type: list
  elements: str
  sample: ["storage.before-reseed-20261203T074500Z"]
finished_reseed:
  description: Keep-aside folders whose re-seed this run finished (their files removed from the storage's C(A/)).
  returned: success
  type: list
  elements: str
  sample: []
settled_reseed:
  description: Whether this run finished or dropped the interrupted re-seeds of RV(pending_reseed).
  returned: success
  type: bool
  sample: false
master_tid:
  description: Newest transaction id of the master.
  returned: when O(master) is given
  type: str
  sample: 040D44D7890F0444
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import (  # noqa: E402
    argument_spec,
    fail_message,
    pull_options,
)
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.info import verify  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            path=dict(type="path", required=True, aliases=["replica"]),
            master=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = verify(p["path"], master=p["master"], opts=pull_options(p), finish=not module.check_mode)
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e), ok=False, problems=[fail_message(e)])
    path = result.pop("path")  # a "path" key would make AnsibleModule add file attributes to the result
    problems = result["problems"]
    if problems:
        more = " (and %d more)" % (len(problems) - 1) if len(problems) > 1 else ""
        module.fail_json(msg="%s: %d problem(s): %s%s" % (path, len(problems), problems[0], more),
                         changed=result["settled_reseed"], **result)
    module.exit_json(changed=result["settled_reseed"] or (module.check_mode and bool(result["pending_reseed"])),
                     **result)


if __name__ == "__main__":
    main()
