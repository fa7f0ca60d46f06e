#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pack_plan
short_description: Plan a pack of a replicated DirectoryStorage master that its standbys can follow
version_added: 0.3.0
description:
  - Reads where the standbys of the master storage at O(path) stand (C(misc/standbys), recorded by its
    C(ds-replica serve)) and plans a pack keeping O(days) days of history, or back to the horizon (the oldest
    transaction a standby still holds) when that is older, so that no standby is stranded.
  - With O(force), packs to O(days) even past the horizon, and names every standby that pack strands (each is
    re-seeded with C(ds-replica clone --delta)).
  - Returns the argv of the site's own pack O(command) for that plan; it runs nothing and changes nothing
    (C(playbooks/pack.yml) runs the command).
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  path:
    description:
      - The master storage folder.
    type: path
    required: true
  days:
    description:
      - Days of history to keep (the pack drops what is older), unless the horizon is older.
    type: float
    required: true
  command:
    description:
      - The site's pack command, for example C(zeopack -d {days} 127.0.0.1:8100). Split into words as a shell
        would, never run by a shell. C({days}) (days back, rounded up, O(margin) to spare) and C({time}) (Unix
        time) are replaced by the plan's; no other field is allowed (write a brace as C({{) or C(}})).
      - Without it, RV(plan.argv) is null.
    type: str
  force:
    description:
      - Pack to O(days) even past the horizon, stranding the standbys named in RV(plan.stranded).
    type: bool
    default: false
  max_age:
    description:
      - Standbys not heard from within this many days do not hold the pack back (they are named in
        RV(plan.stranded) when the pack passes them). Default is to count every recorded standby.
    type: float
  margin:
    description:
      - Seconds the pack goes further back than the plan's time, so that a command run a little after the plan
        (C({days}) counts back from when it runs) still stays at or before the horizon.
    type: float
    default: 600
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
"""

EXAMPLES = r"""
- name: Plan a pack keeping a week of history
  dirstorage.replication.pack_plan:
    path: /var/lib/zope/storage
    days: 7
    command: zeopack -d {days} 127.0.0.1:8100
  register: pack

- name: Pack as planned
  ansible.builtin.command:
    argv: "{{ pack.plan.argv }}"
  when: pack.plan.pack
  changed_when: true
"""

RETURN = r"""
plan:
  description: What the pack would do.
  returned: success
  type: dict
  contains:
    path:
      description: Absolute path of the master storage.
      type: str
      sample: /var/lib/zope/storage
    pack:
      description: Whether there is anything to pack (the plan's time is after the storage's last pack).
      type: bool
      sample: true
    pack_time:
      description: Unix time the pack goes back to (O(margin) seconds before the plan's own time, to spare).
      type: int
      sample: 1764150300
    pack_days:
      description: The same, as days back from now (rounded up), what C({days}) is replaced by.
      type: float
      sample: 7.0071
    requested_days:
      description: O(days).
      type: float
      sample: 7
    requested_time:
      description: Unix time O(days) days ago.
      type: float
      sample: 1764150900.5
    packed_time:
      description: Unix time the storage was last packed to (null if never).
      type: float
      sample: null
    horizon:
      description:
        - The oldest transaction a standby heard from within O(max_age) holds (see
          M(dirstorage.replication.storage_info)).
      type: dict
      sample: {"tid": "040D44D78EBB2244", "time": 1764150900.5, "age_seconds": 259200.0, "standby": "standby2"}
    held_back_by:
      description: The standby whose position held the pack back from O(days) (null when it was not held back).
      type: str
      sample: standby2
    forced:
      description: O(force).
      type: bool
      sample: false
    stranded:
      description:
        - Standbys whose newest transaction is older than the pack (each needs C(ds-replica clone --delta) after it).
      type: list
      elements: str
      sample: []
    argv:
      description: The pack command's words for this plan (null without O(command)).
      type: list
      elements: str
      sample: ["zeopack", "-d", "7.0071", "127.0.0.1:8100"]
    message:
      description: The plan in one line.
      type: str
      sample: "/var/lib/zope/storage: packing to 2025-11-19T09:45:00Z (7.0071 days back)"
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import fail_message  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.pack import pack_plan  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True), days=dict(type="float", required=True),
                           command=dict(type="str"), force=dict(type="bool", default=False),
                           max_age=dict(type="float"), margin=dict(type="float", default=600.0)),
        supports_check_mode=True,
    )
    p = module.params
    try:
        plan = pack_plan(p["path"], p["days"], p["command"], p["force"], p["max_age"], margin=p["margin"])
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e))
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
