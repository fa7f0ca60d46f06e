# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_drift
short_description: The inventory against what the storages say of themselves
version_added: 0.2.0
description:
  - One line per storage whose inventory entry disagrees with what the storage says of itself (promoted, its
    upstream, its newest transaction), each naming the inventory change to make. See
    C(plugins/module_utils/fleet.py).
options:
  _input:
    description: Storage states (module C(dirstorage.replication.fleet_state)) with C(role) and, for standbys,
      C(master_host), C(master_addr), C(master_path).
    type: list
    elements: dict
    required: true
  skip_ahead:
    description: Hosts not checked for being ahead of their master (the old master being rejoined).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
problems: "{{ states | dirstorage.replication.fleet_drift }}"
newest: "{{ states | dirstorage.replication.fleet_newest('db1', '/var/lib/zope/storage') }}"
"""

RETURN = r"""
_value:
  description: The problem lines (fleet_drift), or [host, name, tid] of the newest standby (fleet_newest).
  type: list
"""

from ansible_collections.dirstorage.replication.plugins.module_utils.fleet import (  # noqa: E402
    drift_problems,
    newest_standby,
)


def fleet_drift(states, skip_ahead=()):
    return drift_problems(states, skip_ahead)


def fleet_newest(states, master_host, master_path):
    best = newest_standby(states, master_host, master_path)
    return list(best) if best else []


class FilterModule(object):
    def filters(self):
        return {"fleet_drift": fleet_drift, "fleet_newest": fleet_newest}
