# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options, written once: what a pull, a clone or a verify
against a master can be told, with each option's type, default, choices and
command-line flags.

Everything else is derived from CONNECTION_OPTIONS: PullOptions (below), the
Ansible argument spec (ansible_args.py) and the `ds-replica` flags (cli.py).
The modules' documentation (plugins/doc_fragments/connection.py) is static
YAML for ansible-doc; a unit test checks that it agrees with this table.
"""

from __future__ import annotations

import os
import sys

SAME = object()  # "the same as `default`"


def this_folder():
    """The folder of the running ds-replica: where the original replica.py
    looked for itself on the master (`-d` of the command line)."""
    return os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None


class Option(object):
    """One connection option.

    `type` is the Ansible type name (str, path, int, float or bool).
    `default` is the engine's (PullOptions); `module_default` and `cli_default`
    say where a module option or a command-line flag starts elsewhere (a
    callable `cli_default` is called when the flag is not given).  No `flags`:
    not on the command line; `module=False`: not a module option.  `no_log`
    (Ansible): False says that a "key" in the name is no secret.
    """

    def __init__(self, name, type, default=None, choices=None, flags=(), metavar=None, help=None, module=True,
                 module_default=SAME, cli_default=SAME, no_log=None):
        self.name = name
        self.type = type
        self.default = default
        self.choices = choices
        self.flags = flags
        self.metavar = metavar
        self.help = help
        self.module = module
        self.module_default = module_default
        self.cli_default = cli_default
        self.no_log = no_log

    def default_for(self, where):
        """The default of a module option (where="module") or of a flag (where="cli")."""
        own = self.module_default if where == "module" else self.cli_default
        return self.default if own is SAME else own


# In the order of `ds-replica --help`.
CONNECTION_OPTIONS = (
    Option("ssh_command", "str", flags=("-e",), metavar="SSHCMD",
           help="use this OpenSSH command instead of the built-in client, e.g. 'ssh -p 2222'"),
    Option("remote_dir", "path", flags=("-d",), metavar="DIR", module=False, cli_default=this_folder,
           help="folder holding ds-replica on the master (default: the folder of this ds-replica)"),
    Option("remote_command", "str", module_default="ds-replica", flags=("--remote-command",), metavar="PATH",
           help="full path of ds-replica on the master"),
    Option("port", "int", flags=("-p", "--port"), help="ssh port of the master"),
    Option("user", "str"),
    Option("key_file", "path", flags=("-i", "--identity"), metavar="KEY", help="private key file", no_log=False),
    Option("known_hosts_file", "path", flags=("--known-hosts",), metavar="FILE",
           help="known_hosts file to check the master's host key against (default ~/.ssh/known_hosts)"),
    Option("accept_new_host_key", "bool", False, flags=("--accept-new-host-key",),
           help="record the master's host key if it is not known yet (a changed key is always refused)"),
    Option("timeout", "float", 60.0, flags=("--timeout",), help="network timeout in seconds (default %(default)g)"),
    Option("snapshot_timeout", "float", 0.0, flags=("--snapshot-timeout",), metavar="S",
           help="keep retrying snapshot mode on the master for S seconds (the old -t)"),
    Option("snapshot_interval", "float", 5.0, flags=("--snapshot-interval",), metavar="S",
           help="pause between those tries (the old -s; default %(default)g)"),
    Option("compress", "bool", False, flags=("--compress",), help="compress the transfer (for slow links)"),
    Option("bwlimit", "float", flags=("--bwlimit",), metavar="KIB", help="limit the transfer to KIB KiB/s"),
    Option("standby_name", "str", flags=("--standby-name",), metavar="NAME",
           help="the name the master records this standby's position under (default: this host's name)"),
    Option("protocol", "int", 1, choices=(0, 1), flags=("--protocol",),
           help="request version: 0 talks to an old replica.py master (no statistics)"),
)

OPTION_NAMES = tuple(o.name for o in CONNECTION_OPTIONS)


class PullOptions(object):
    """Everything a pull can be told (CLI flags and module options): the
    options of CONNECTION_OPTIONS with their engine defaults, plus `check`."""

    __slots__ = OPTION_NAMES + ("check",)

    def __init__(self, *, check=False, **given):
        unknown = set(given) - set(OPTION_NAMES)
        if unknown:
            raise TypeError("unknown pull option(s): %s" % ", ".join(sorted(unknown)))
        for option in CONNECTION_OPTIONS:
            setattr(self, option.name, given.get(option.name, option.default))
        self.check = check

    def __repr__(self):
        return "PullOptions(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)
