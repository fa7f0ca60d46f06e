#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: promote
short_description: Promote a DirectoryStorage standby to master
version_added: 0.2.0
description:
  - Checks the standby at O(path) as C(ds-replica verify) does (chain, revisions, current-revision files and
    C(x.*)) and refuses if it fails; then marks it promoted (C(config/promoted), with the time and the newest
    transaction). From then on every pull into it refuses, so no cron entry or playbook can overwrite the new
    master; it can be served to the other standbys at once.
  - Same as C(ds-replica promote PATH).
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  path:
    description:
      - The standby to promote.
    type: path
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks the storage and reports RV(changed=true) when it would be promoted; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: dirstorage.replication.reseed
  - module: dirstorage.replication.fleet_state
"""

EXAMPLES = r"""
- name: Make this standby the master
  dirstorage.replication.promote:
    path: /srv/standby/main
"""

RETURN = r"""
changed:
  description:
    - Whether the storage was promoted now (in check mode, whether it would be); false when it was promoted
      already.
  returned: always
  type: bool
  sample: true
promoted_at:
  description: UTC time of the promotion (null in check mode).
  returned: success
  type: str
  sample: "2026-11-26T18:00:00Z"
tid:
  description: Newest transaction of the storage when promoted.
  returned: success
  type: str
  sample: 040D44D7890F0444
checked_transactions:
  description: Transactions checked before promoting (absent when it was promoted already).
  returned: when checked
  type: int
  sample: 1200
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import fail_message  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.promote import promote  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True)
    try:
        result = promote(module.params["path"], check=module.check_mode)
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e), retryable=bool(getattr(e, "retryable", False)))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
