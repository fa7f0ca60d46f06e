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
      - Ignored for a local master. With O(ssh_command), passed to it as C(-p PORT).
    type: int
  user:
    description:
      - Account on the master, when O(master) does not say C(user@).
      - Default is the user from C(~/.ssh/config) for that host, else the remote user running the module.
    type: str
  key_file:
    description:
      - Private key file used to log into the master (a path on the standby, not the key itself).
      - With O(ssh_command), passed to it as C(-i KEY_FILE).
    type: path
  known_hosts_file:
    description:
      - C(known_hosts) file that the master's host key is checked against.
      - Default is C(~/.ssh/known_hosts) of the account running the module (plus C(/etc/ssh/ssh_known_hosts)).
      - With O(ssh_command), passed to it as C(-o UserKnownHostsFile=KNOWN_HOSTS_FILE).
    type: path
  accept_new_host_key:
    description:
      - Record the master's host key in O(known_hosts_file) when it is not known yet.
      - A host key that B(changed) is always refused, whatever this option says.
      - With O(ssh_command), C(true) passes C(-o StrictHostKeyChecking=accept-new) to it.
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
      - O(port), O(key_file), O(known_hosts_file), O(accept_new_host_key) and O(timeout) are passed to it as
        OpenSSH options, after the command's own (never through a shell), so that an option written in the
        command takes precedence (OpenSSH keeps the first value it is given). The user and host come from
        O(master) (or O(user)).
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
      - With the built-in client, it bounds connecting, logging in and any silence of the master once its answer
        has begun (before it begins, the master is also given the time of its waits for snapshot mode).
      - With O(ssh_command), it bounds connecting only (the TCP connection, the SSH handshake and key exchange),
        passed as C(-o ConnectTimeout=N) in whole seconds (rounded up). A master that stops answering later is
        noticed only through the OpenSSH client's own settings (for example C(-o ServerAliveInterval=15) in the
        command).
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
  standby_name:
    description:
      - The name under which the master records where this standby stands (the newest transaction it holds and when
        it was last seen), read by C(ds-replica horizon) and M(dirstorage.replication.storage_info) on the master.
      - 1 to 64 letters, digits, C(.), C(_) or C(-). Default is the standby's host name.
      - Sent with request version 1 only; a C(protocol=0) request is recorded under its ssh client address.
    type: str
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
