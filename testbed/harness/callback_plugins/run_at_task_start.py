# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An Ansible callback for tests: run a command in the controller just before
a task starts on a host, so that a test can change the world at an exact
point of a playbook (a master commits and its follower applies between two
reads of the drift check).

Set DS_AT_TASK_START to JSON ``{"host": H, "task": PREFIX, "argv": [...]}``,
put this folder in ANSIBLE_CALLBACK_PLUGINS and ``run_at_task_start`` in
ANSIBLE_CALLBACKS_ENABLED. The command runs once, the first time a task whose
name starts with PREFIX is queued for host H. Ansible sends
``v2_runner_on_start`` before it starts the task's worker, so with ``-f 1`` the
hosts queued before H have finished the task and H has not begun it.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: run_at_task_start
type: aggregate
short_description: run a command just before a task starts on a host (tests only)
description: Reads DS_AT_TASK_START (JSON with host, task and argv).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "run_at_task_start"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plan = json.loads(os.environ.get("DS_AT_TASK_START", "null"))

    def v2_runner_on_start(self, host, task):
        plan = self._plan
        if plan and host.get_name() == plan["host"] and task.get_name().startswith(plan["task"]):
            self._plan = None
            subprocess.run(plan["argv"], check=True, timeout=120)
