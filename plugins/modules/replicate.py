#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: replicate
short_description: Bring a DirectoryStorage replica up to date with its master
version_added: 0.1.0
description:
  - One replication event, run on the standby. Asks the master (through ssh, or a local folder) for the
    transactions the replica lacks and applies them atomically. The replica is either unchanged or complete,
    never half-written, even if the run is interrupted.
  - The master is held in snapshot mode only while the increment is read; it keeps serving its clients.
  - Refuses, with one line saying why, when the replica is not a copy of the master (identity), has transactions
    the master does not have (diverged), or the master was packed past the replica's newest transaction.
  - An action plugin of the same name can resolve the master from the inventory with O(master_host) and
    O(master_path).
author:
  - dirstorage.replication contributors (@dirstorage)
options:
  master:
    description:
      - The master storage, as C([user@]host:path) (reached over ssh), or a plain local path (a master on the same
        machine, read directly).
      - Required unless O(master_host) is given; mutually exclusive with it.
    type: str
  path:
    description:
      - The replica storage folder on the standby. It must already be a copy of the master
        (see M(dirstorage.replication.clone) for the first copy).
    type: path
    required: true
    aliases: [replica]
  master_host:
    description:
      - Handled by the action plugin on the controller. Inventory name of the master.
      - Its C(ansible_host) (else the name itself), C(ansible_port) and C(ansible_user) give the address, O(port)
        and O(user), unless the task sets O(port) or O(user). Host key checking stays on.
      - Requires O(master_path); mutually exclusive with O(master).
    type: str
  master_path:
    description:
      - Handled by the action plugin on the controller. The storage folder on O(master_host).
    type: path
  stop_command:
    description:
      - Hot standby. A storage process (a read-only ZEO server, say) serves the replica and holds its C(misc/lock).
        The increment is received and checked while the process still serves; only then is this command run
        (with C(/bin/sh -c), as the user the module runs as), C(misc/lock) awaited, the increment applied and
        O(start_command) run. Nothing is stopped when nothing is new.
      - Requires O(start_command).
    type: str
  start_command:
    description:
      - Hot standby. Starts the storage process again after the apply; it also runs when anything failed after
        O(stop_command) ran.
      - Requires O(stop_command).
    type: str
  stop_timeout:
    description:
      - Hot standby. Seconds that O(stop_command) and O(start_command) may each take, and that the pull waits after
        the start of O(stop_command) for C(misc/lock) to be free.
    type: float
    default: 60
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - dirstorage.replication.connection
attributes:
  check_mode:
    support: full
    details: Asks the master what would come (transactions, files, bytes) and changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
  action:
    support: full
    details: The action plugin resolves O(master_host) and O(master_path) into O(master), O(port) and O(user).
  async:
    support: full
  bypass_host_loop:
    support: none
notes:
  - The module takes C(misc/lock) of the replica; without O(stop_command) it fails with a retryable message if a
    storage process or another pull holds it. Two pulls into one replica never overlap.
  - Check mode needs a master running this tool (O(protocol=1)).
seealso:
  - module: dirstorage.replication.clone
  - module: dirstorage.replication.verify
  - module: dirstorage.replication.storage_info
"""

EXAMPLES = r"""
- name: Pull from a master over ssh
  dirstorage.replication.replicate:
    master: zope@db1.example.com:/var/lib/zope/storage
    path: /srv/standby/storage
    key_file: /home/replica/.ssh/id_ed25519

- name: Pull from the inventory host that is the master (address, port and user from its hostvars)
  dirstorage.replication.replicate:
    master_host: "{{ groups['dirstorage_masters'][0] }}"
    master_path: /var/lib/zope/storage
    path: /srv/standby/storage
    compress: true
    snapshot_timeout: 300
  register: pulled

- name: Show what came
  ansible.builtin.debug:
    msg: "{{ pulled.transactions }} transactions, {{ pulled.bytes }} bytes, lag {{ pulled.lag_seconds }}s"

- name: A hot standby served by a read-only ZEO server, stopped only for the apply
  dirstorage.replication.replicate:
    master: zope@db1.example.com:/var/lib/zope/storage
    path: /srv/standby/storage
    stop_command: sudo -n systemctl stop zeo-standby
    start_command: sudo -n systemctl start zeo-standby
    stop_timeout: 120
  register: hot

- name: A master on the same machine
  dirstorage.replication.replicate:
    master: /var/lib/zope/storage
    path: /backup/storage
"""

RETURN = r"""
changed:
  description: Whether transactions arrived (in check mode, whether some would arrive).
  returned: always
  type: bool
  sample: true
before_tid:
  description: Newest transaction id of the replica before the run (16 upper-case hex digits).
  returned: success
  type: str
  sample: 03E5A6C1D2B4F000
after_tid:
  description: Newest transaction id of the replica after the run (in check mode, the same as RV(before_tid)).
  returned: success
  type: str
  sample: 03E5A6C2A0C1D111
transactions:
  description: Number of transactions received (in check mode, that would be received).
  returned: success
  type: int
  sample: 12
files:
  description: Number of files in the increment.
  returned: success
  type: int
  sample: 40
bytes:
  description: Bytes of file content in the increment.
  returned: success
  type: int
  sample: 182044
lag_seconds:
  description: Time between the master's newest transaction and the replica's, after the run (0 when up to date).
  returned: success
  type: float
  sample: 0.0
snapshot_seconds:
  description: Time the master was held in snapshot mode for this run.
  returned: success
  type: float
  sample: 0.042
elapsed_seconds:
  description: Wall time of the run on the standby.
  returned: success
  type: float
  sample: 0.31
downtime_seconds:
  description: Time from the start of O(stop_command) to the end of O(start_command); 0 when nothing was stopped.
  returned: success
  type: float
  sample: 0.18
master_tid:
  description: Newest transaction id of the master as it answered (null with O(protocol=0)).
  returned: success
  type: str
  sample: 03E5A6C2A0C1D111
pack:
  description:
    - When the master had been packed past the replica, what packing the replica as the master was did (the master's
      C(packed_tid), the files C(set_aside) as C(NAME-<time>-deleted), the transactions C(relinked), the old set-aside
      files C(removed)); null when the master's pack had been followed already.
  returned: success, not in check mode
  type: dict
  sample: {"packed_tid": "03E5A6C2A0C1D111", "set_aside": 49, "relinked": 1, "removed": 0}
"""

# Ansible modules keep their imports after the documentation strings.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.ansible_args import (  # noqa: E402
    argument_spec,
    fail_message,
    pull_options,
)
from ansible_collections.dirstorage.replication.plugins.module_utils.errors import DSError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.hot import STOP_TIMEOUT, hot_standby  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.replica import pull  # noqa: E402

RESULT_KEYS = ("before_tid", "after_tid", "transactions", "files", "bytes", "lag_seconds", "snapshot_seconds",
               "elapsed_seconds", "master_tid", "downtime_seconds", "pack")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            master=dict(type="str"),
            path=dict(type="path", required=True, aliases=["replica"]),
            # resolved into master by the action plugin on the controller
            master_host=dict(type="str"),
            master_path=dict(type="path"),
            # hot standby
            stop_command=dict(type="str"),
            start_command=dict(type="str"),
            stop_timeout=dict(type="float", default=STOP_TIMEOUT),
        ),
        required_together=[("stop_command", "start_command")],
        supports_check_mode=True,
    )
    p = module.params
    if p["master_host"] or p["master_path"]:
        module.fail_json(msg="master_host and master_path are resolved by the replicate action plugin; "
                             "call the module as dirstorage.replication.replicate, or give master")
    if not p["master"]:
        module.fail_json(msg="master is required (or master_host and master_path)")
    try:
        hot = hot_standby(p["stop_command"], p["start_command"], p["stop_timeout"])
        result = pull(p["master"], p["path"], pull_options(p, check=module.check_mode), hot=hot)
    except (DSError, OSError) as e:
        module.fail_json(msg=fail_message(e), retryable=bool(getattr(e, "retryable", False)))
    out = {k: result.get(k) for k in RESULT_KEYS}
    # check mode reports what would change, as Ansible check mode does
    out["changed"] = bool(result["transactions"]) if module.check_mode else bool(result["changed"])
    module.exit_json(**out)


if __name__ == "__main__":
    main()
