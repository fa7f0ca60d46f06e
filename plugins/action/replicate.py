# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of dirstorage.replication.replicate.

Lets a task name the master by its inventory name (``master_host``) and its
storage folder (``master_path``) instead of spelling ``master``: the address,
port and user come from that host's variables (``ansible_host`` or the name,
``ansible_port``, ``ansible_user``), as ansible.posix.synchronize resolves its
destination.  Unlike synchronize, nothing here weakens host key checking: the
module still checks the master's key against known_hosts.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = True

    def _hostvar(self, hostvars, names):
        for name in names:
            if name in hostvars:
                value = self._templar.template(hostvars[name])
                if value not in (None, ""):
                    return value
        return None

    def _resolve_master(self, args, task_vars):
        host = args.pop("master_host", None)
        path = args.pop("master_path", None)
        if host is None and path is None:
            return args
        if args.get("master"):
            raise AnsibleActionFail("give either master, or master_host and master_path, not both")
        if not host or not path:
            raise AnsibleActionFail("master_host and master_path go together: give both")
        all_hostvars = task_vars.get("hostvars", {})
        if host not in all_hostvars:
            raise AnsibleActionFail("master_host %s is not in the inventory" % host)
        hv = all_hostvars[host]
        addr = self._hostvar(hv, ("ansible_host", "ansible_ssh_host")) or host
        port = self._hostvar(hv, ("ansible_port", "ansible_ssh_port"))
        user = args.get("user") or self._hostvar(hv, ("ansible_user", "ansible_ssh_user"))
        if ":" in str(addr):  # IPv6 literal
            addr = "[%s]" % addr
        args["master"] = "%s%s:%s" % ("%s@" % user if user else "", addr, path)
        if port is not None and args.get("port") is None:
            try:
                args["port"] = int(port)
            except (TypeError, ValueError):
                raise AnsibleActionFail("ansible_port of %s is not a number: %r" % (host, port))
        return args

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # unused since ansible 2.5
        args = self._resolve_master(dict(self._task.args), task_vars)
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result.update(self._execute_module(module_args=args, task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
