# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that talk to a master (replicate, clone, verify)."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  port:
    description:
      - SSH port of the master.
      - Default is the port from C(~/.ssh/config) for that host, else C(22).
      - Ignored for a local master and with O(ssh_command) (put C(-p) in the command instead).
    type: int
  user:
    description:
      - Account on the master, when O(master) does not say C(user@).
      - Default is the user from C(~/.ssh/config) for that host, else the remote user running the module.
    type: str
  key_file:
    description:
      - Private key file used to log into the master (a path on the standby, not the key itself).
    type: path
  known_hosts_file:
    description:
      - C(known_hosts) file that the master's host key is checked against.
      - Default is C(~/.ssh/known_hosts) of the account running the module (plus C(/etc/ssh/ssh_known_hosts)).
    type: path
  accept_new_host_key:
    description:
      - Record the master's host key in O(known_hosts_file) when it is not known yet.
      - A host key that B(changed) is always refused, whatever this option says.
    type: bool
    default: false
  remote_command:
    description:
      - Path of C(ds-replica) on the master (what the master runs as C(ds-replica serve PATH)).
    type: str
    default: ds-replica
  ssh_command:
    description:
      - Use this OpenSSH command instead of the built-in client (paramiko), for example C(ssh -p 2222 -o BatchMode=yes).
      - With it, O(port), O(key_file), O(known_hosts_file) and O(accept_new_host_key) are not used; put the
        corresponding C(ssh) options in the command.
    type: str
  snapshot_timeout:
    description:
      - Keep retrying to put the master into snapshot mode for this many seconds when it is busy
        (for example packing). C(0) tries once.
    type: float
    default: 0
  snapshot_interval:
    description:
      - Pause in seconds between those tries (used with O(snapshot_timeout)).
    type: float
    default: 5
  timeout:
    description:
      - Network timeout in seconds.
    type: float
    default: 60
  compress:
    description:
      - Compress the transfer (gzip); worth it on slow links. Needs a master running this tool.
    type: bool
    default: false
  bwlimit:
    description:
      - Limit the transfer to this many KiB per second.
    type: float
  protocol:
    description:
      - Request version. C(0) talks to a master running the original C(replica.py) (no statistics, no check mode
        answer, no compression); C(1) is this tool's.
    type: int
    choices: [0, 1]
    default: 1
requirements:
  - Python 3.11 or later on the standby.
  - C(paramiko) on the standby for ssh masters, unless O(ssh_command) is given.
  - C(ds-replica) (this collection's engine, or the original C(replica.py) with O(protocol=0)) on an ssh master.
"""
