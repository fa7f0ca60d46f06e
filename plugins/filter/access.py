# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: authorized_key_line
short_description: A standby key's authorized_keys line, restricted to ds-replica serve
version_added: 0.2.0
description:
  - The master role's C(authorized_keys) line of a standby key, C(restrict,command="DS_REPLICA serve [OPTIONS] PATH"
    KEY). The key must be exactly one public key of an allowed type (ssh-ed25519, ecdsa-sha2-nistp256/384/521,
    ssh-rsa, their security-key variants), without options or a second line; every word of the forced command is
    checked (no quote, backslash or control character) and shell-quoted. Anything else fails the task in
    one line. C(service_command) builds a hot standby's C(sudo -n SYSTEMCTL stop|start NAME), the name checked
    and quoted. See C(plugins/module_utils/access.py).
options:
  _input:
    description: The public key (the content of the standby's C(.pub) file).
    type: str
    required: true
  ds_replica:
    description: Absolute path of ds-replica on the master.
    type: str
    required: true
  path:
    description: Absolute path of the master's storage.
    type: str
    required: true
  serve_options:
    description: Extra options of the forced C(ds-replica serve).
    type: str
    default: ""
"""

EXAMPLES = r"""
line: "{{ item.key | dirstorage.replication.authorized_key_line('/usr/local/bin/ds-replica', item.master_path) }}"
stop: "{{ 'zeo-ro' | dirstorage.replication.service_command('stop', '/usr/bin/systemctl') }}"
"""

RETURN = r"""
_value:
  description: The authorized_keys line (authorized_key_line), or the shell command (service_command).
  type: str
"""

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.dirstorage.replication.plugins.module_utils.access import (  # noqa: E402
    authorized_key_line,
    service_command,
)


def _checked(build, *args):
    try:
        return build(*args)
    except ValueError as e:
        raise AnsibleFilterError(str(e))


def filter_authorized_key_line(key, ds_replica, path, serve_options=""):
    return _checked(authorized_key_line, key, ds_replica, path, serve_options)


def filter_service_command(service, verb, systemctl="/usr/bin/systemctl"):
    return _checked(service_command, verb, service, systemctl)


class FilterModule(object):
    def filters(self):
        return {"authorized_key_line": filter_authorized_key_line, "service_command": filter_service_command}
