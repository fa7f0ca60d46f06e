# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin adapter between Ansible module parameters and the engine.

The argument spec of the connection options, derived from the table in
options.py (documented in plugins/doc_fragments/connection.py, which a unit
test holds to the table), and PullOptions built from a module's params.  This
is the only module_utils file written for Ansible; it needs no Ansible import
itself.
"""

from __future__ import annotations

from .options import CONNECTION_OPTIONS, PullOptions


def _spec(option):
    """One option's entry in an Ansible argument spec."""
    spec = dict(type=option.type)
    default = option.default_for("module")
    if default is not None:
        spec["default"] = default
    if option.choices:
        spec["choices"] = list(option.choices)
    if option.no_log is not None:
        spec["no_log"] = option.no_log
    return spec


CONNECTION_ARGS = {o.name: _spec(o) for o in CONNECTION_OPTIONS if o.module}


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
