#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_state
short_description: What DirectoryStorage storages say of their place in a fleet
version_added: 0.2.0
description:
  - For each storage of O(storages), returns what it says of itself, independently of any inventory; its
    identity, newest transaction, whether it was promoted to master (C(ds-replica promote)) and when, and the
    master it follows (C(config/upstream), written by clone, C(clone --delta) and this module).
  - With O(upstream) and O(path), records that the standby at O(path) now follows O(upstream) (a standby
    re-pointed to a new master).
  - The playbooks compare these states with the inventory (filter C(dirstorage.replication.fleet_drift)).
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  storages:
    description:
      - The storages to read; each a dict with at least C(path). Every key is returned as given, with the state
        added.
    type: list
    elements: dict
    default: []
  host:
    description:
      - The inventory name of this host, added to each returned storage as C(host).
    type: str
    default: ""
  path:
    description:
      - The standby whose upstream O(upstream) records.
    type: path
  upstream:
    description:
      - The C([user@]host:path) of the master the standby at O(path) now follows.
    type: str
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
  - module: dirstorage.replication.storage_info
  - module: dirstorage.replication.promote
"""

EXAMPLES = r"""
- name: Read the state of this standby's storages
  dirstorage.replication.fleet_state:
    storages: "{{ standby_storages }}"
    host: "{{ inventory_hostname }}"
  register: state

- name: This standby now follows db2
  dirstorage.replication.fleet_state:
    path: /srv/standby/main
    upstream: zope@db2.example.com:/srv/standby/main
"""

RETURN = r"""
storages:
  description: O(storages), each with its state added.
  returned: always
  type: list
  elements: dict
  contains:
    exists:
      description: Whether the path holds a storage.
      type: bool
    identity:
      description: The storage identity.
      type: str
    last_tid:
      description: Newest transaction id (16 upper-case hex digits).
      type: str
    promoted:
      description: C({promoted_at, tid}) when the storage was promoted to master, else null.
      type: dict
    upstream:
      description: The master it follows (C([user@]host:path)), or null when none is recorded.
      type: str
    upstream_host:
      description: The host part of RV(storages[].upstream).
      type: str
    upstream_path:
      description: The path part of RV(storages[].upstream).
      type: str
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import fail_message  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.fleet import storage_state  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.fleet_marks import (  # noqa: E402
    set_upstream,
    upstream,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(storages=dict(type="list", elements="dict", default=[]), host=dict(type="str", default=""),
                           path=dict(type="path"), upstream=dict(type="str")),
        required_together=[("path", "upstream")],
        supports_check_mode=True,
    )
    p = module.params
    changed = False
    try:
        if p["upstream"]:
            changed = upstream(p["path"]) != p["upstream"]
            if changed and not module.check_mode:
                set_upstream(p["path"], p["upstream"])
        states = [dict(s, host=p["host"], **storage_state(s["path"])) for s in p["storages"] if s.get("path")]
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e))
    module.exit_json(changed=changed, storages=states)


if __name__ == "__main__":
    main()
