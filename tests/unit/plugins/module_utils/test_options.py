"""The connection options are written once (options.CONNECTION_OPTIONS): the
command line, the Ansible argument spec, PullOptions and the (static) doc
fragment must all say what the table says, and the old flags and module
options must stay what they were."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import yaml

from dirstorage_replica import cli, transport
from dirstorage_replica.ansible_args import CONNECTION_ARGS, argument_spec, pull_options
from dirstorage_replica.options import CONNECTION_OPTIONS, PullOptions

COLLECTION = "ansible_collections.dirstorage.replication.plugins"
MASTER_MODULES = ("replicate", "clone", "verify")
MODULE_OPTIONS = [o for o in CONNECTION_OPTIONS if o.module]

# What the modules accepted before the table existed: names, types, defaults, choices.
MODULE_ARGS_BEFORE = dict(
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
    standby_name=dict(type="str"),
    protocol=dict(type="int", default=1, choices=[0, 1]),
)


def parse_pull(*argv):
    return cli._options(cli._pull_parser().parse_args([*argv, "db1:/srv/storage", "/srv/replica"]))


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_without_flags_gives_the_table_defaults():
    opts = parse_pull()
    for option in CONNECTION_OPTIONS:
        expected = option.default_for("cli")
        expected = expected() if callable(expected) else expected
        assert getattr(opts, option.name) == expected, option.name
    # like the original replica.py: ds-replica is looked for on the master in the folder it runs from here
    assert opts.remote_dir == os.path.dirname(os.path.abspath(sys.argv[0]))
    assert opts.remote_command is None and opts.user is None


def test_every_old_flag_still_sets_its_option():
    opts = parse_pull("-e", "ssh -4", "-d", "/opt/ds", "--remote-command", "/usr/bin/ds-replica", "-p", "2222",
                      "-i", "/k", "--known-hosts", "/kh", "--accept-new-host-key", "--timeout", "7.5",
                      "--snapshot-timeout", "30", "--snapshot-interval", "2", "--compress", "--bwlimit", "100",
                      "--protocol", "0", "--standby-name", "st-1.dc2", "-n")
    assert (opts.ssh_command, opts.remote_dir, opts.remote_command) == ("ssh -4", "/opt/ds", "/usr/bin/ds-replica")
    assert (opts.port, opts.key_file, opts.known_hosts_file, opts.accept_new_host_key) == (2222, "/k", "/kh", True)
    assert (opts.timeout, opts.snapshot_timeout, opts.snapshot_interval) == (7.5, 30.0, 2.0)
    assert (opts.compress, opts.bwlimit, opts.protocol, opts.check) == (True, 100.0, 0, True)
    assert opts.standby_name == "st-1.dc2"
    long_forms = parse_pull("--port", "22", "--identity", "/k2")
    assert (long_forms.port, long_forms.key_file) == (22, "/k2")


def test_cli_refuses_a_protocol_outside_the_choices(capsys):
    with pytest.raises(SystemExit):
        parse_pull("--protocol", "2")
    assert "invalid choice" in capsys.readouterr().err


def test_cli_help_shows_the_table_defaults(capsys):
    with pytest.raises(SystemExit):
        cli._pull_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "network timeout in seconds (default 60)" in out and "(the old -s; default 5)" in out
    assert "-e SSHCMD" in out and "-d DIR" in out and "--user" not in out


# -- Ansible ------------------------------------------------------------------------------------------------


def test_module_argument_spec_is_what_it_was():
    assert CONNECTION_ARGS == MODULE_ARGS_BEFORE


def test_module_argument_spec_follows_the_table():
    assert list(CONNECTION_ARGS) == [o.name for o in MODULE_OPTIONS]
    for option in MODULE_OPTIONS:
        spec = CONNECTION_ARGS[option.name]
        assert spec["type"] == option.type
        assert spec.get("default") == option.default_for("module")
        assert spec.get("choices") == (list(option.choices) if option.choices else None)


def test_pull_options_from_module_params():
    defaults = pull_options({"master": "db1:/x"})
    for option in MODULE_OPTIONS:
        assert getattr(defaults, option.name) == option.default_for("module"), option.name
    assert defaults.remote_command == "ds-replica" and defaults.remote_dir is None and defaults.check is False
    given = pull_options({"port": 2222, "user": "zope", "timeout": 5.0, "protocol": 0}, check=True)
    assert (given.port, given.user, given.timeout, given.protocol, given.check) == (2222, "zope", 5.0, 0, True)


def test_pull_options_engine_defaults():
    opts = PullOptions()
    for option in CONNECTION_OPTIONS:
        assert getattr(opts, option.name) == option.default, option.name
    assert opts.check is False and opts.remote_command is None
    with pytest.raises(TypeError, match="unknown pull option.*: prot"):
        PullOptions(prot=0)


def _fragment_options():
    fragment = importlib.import_module(COLLECTION + ".doc_fragments.connection").ModuleDocFragment
    return yaml.safe_load(fragment.DOCUMENTATION)["options"]


def test_doc_fragment_agrees_with_the_table():
    documented = _fragment_options()
    assert sorted(documented) == sorted(o.name for o in MODULE_OPTIONS)
    for option in MODULE_OPTIONS:
        doc = documented[option.name]
        assert doc["type"] == option.type, option.name
        assert doc.get("default") == option.default_for("module"), option.name
        assert doc.get("choices") == (list(option.choices) if option.choices else None), option.name


class _Built(Exception):
    pass


@pytest.mark.parametrize("name", MASTER_MODULES)
def test_modules_use_the_connection_spec_and_document_it(name, monkeypatch):
    module = importlib.import_module(COLLECTION + ".modules." + name)
    seen = {}

    def capture(argument_spec, **kw):
        seen.update(argument_spec)
        raise _Built()

    monkeypatch.setattr(module, "AnsibleModule", capture)
    with pytest.raises(_Built):
        module.main()
    assert {k: seen.get(k) for k in CONNECTION_ARGS} == CONNECTION_ARGS
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert "dirstorage.replication.connection" in doc["extends_documentation_fragment"]
    assert not set(doc["options"]) & set(CONNECTION_ARGS), "a module documents a connection option itself"


def test_argument_spec_keeps_the_modules_own_options():
    spec = argument_spec(path=dict(type="path", required=True))
    assert spec["path"] == dict(type="path", required=True) and spec["timeout"] == CONNECTION_ARGS["timeout"]


# -- OpenSSH (ssh_command) ----------------------------------------------------------------------------------


def test_openssh_argv_carries_every_connection_option():
    argv = transport.openssh_argv("ssh -o BatchMode=yes", "zope", "db1", "ds-replica serve /srv/s", port=2222,
                                  key_file="/k", known_hosts_file="/kh", accept_new_host_key=True, timeout=7.5)
    assert argv == ["ssh", "-o", "BatchMode=yes", "-p", "2222", "-i", "/k", "-o", "UserKnownHostsFile=/kh",
                    "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=8",
                    "--", "zope@db1", "ds-replica serve /srv/s"]


def test_openssh_argv_without_options_adds_nothing():
    argv = transport.openssh_argv("'/usr/bin/my ssh'", None, "db1", "ds-replica serve /s")
    assert argv == ["/usr/bin/my ssh", "--", "db1", "ds-replica serve /s"]


def test_openssh_timeout_is_at_least_one_second():
    argv = transport.openssh_argv("ssh", None, "db1", "c", timeout=0.2)
    assert argv[1:3] == ["-o", "ConnectTimeout=1"]
