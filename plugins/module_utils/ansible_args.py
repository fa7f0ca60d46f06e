# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin adapter between Ansible module parameters and the engine.

The argument spec of the connection options (documented once, in
plugins/doc_fragments/connection.py) and PullOptions built from a module's
params.  This is the only module_utils file written for Ansible; it needs no
Ansible import itself.
"""

from __future__ import annotations

from .replica import PullOptions

CONNECTION_ARGS = dict(
    port=dict(type="int"),
    user=dict(type="str"),
    key_file=dict(type="path", no_log=False),
    known_hosts_file=dict(type="path"),
    accept_new_host_key=dict(type="bool", default=False),
    remote_command=dict(type="str", default="ds-replica"),
    ssh_command=dict(type="str"),
    snapshot_timeout=dict(type="float", default=0.0),
    snapshot_interval=dict(type="float", default=5.0),
    timeout=dict(type="float", default=60.0),
    compress=dict(type="bool", default=False),
    bwlimit=dict(type="float"),
    protocol=dict(type="int", default=1, choices=[0, 1]),
)


def argument_spec(**own):
    """The module's own options plus the connection options."""
    spec = dict(CONNECTION_ARGS)
    spec.update(own)
    return spec


def pull_options(params, check=False):
    """PullOptions from module params (missing connection keys take their defaults)."""
    kw = {}
    for name, opt in CONNECTION_ARGS.items():
        value = params.get(name)
        kw[name] = opt.get("default") if value is None else value
    return PullOptions(check=check, **kw)


def fail_message(exc):
    """One line for fail_json: a DSError's own text, or an OSError's essentials."""
    if isinstance(exc, OSError) and exc.strerror:
        return "%s%s" % (exc.strerror, " (%s)" % exc.filename if exc.filename else "")
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__
