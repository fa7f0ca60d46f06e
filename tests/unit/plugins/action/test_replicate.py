"""The action plugin's master resolution: master_host + master_path become the module's
``master`` (``[user@]address:path``) and ``port``, from the master's inventory variables."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleActionFail
from ansible_collections.dirstorage.replication.plugins.action.replicate import ActionModule

from dirstorage_replica.transport import parse_master


class _Templar(object):
    """Renders the few templates these tests use, as the task's templar would."""

    def __init__(self, values):
        self.values = values

    def template(self, value):
        return self.values.get(value, value) if isinstance(value, str) else value


def _resolve(args, hostvars, templates=None):
    action = ActionModule.__new__(ActionModule)  # no task, connection or loader needed
    action._templar = _Templar(templates or {})
    return action._resolve_master(dict(args), {"hostvars": hostvars})


def _fails(args, hostvars=None):
    with pytest.raises(AnsibleActionFail) as err:
        _resolve(args, hostvars or {"db1": {}})
    return str(err.value)


DB1 = {"ansible_host": "192.0.2.7", "ansible_user": "zope", "ansible_port": 2222}


def test_master_host_and_path_become_user_at_address_colon_path_and_port():
    args = _resolve({"master_host": "db1", "master_path": "/srv/zodb/main", "path": "/srv/replica"}, {"db1": DB1})
    assert args == {"master": "zope@192.0.2.7:/srv/zodb/main", "port": 2222, "path": "/srv/replica"}
    assert parse_master(args["master"]) == ("zope", "192.0.2.7", "/srv/zodb/main")


def test_without_master_host_the_arguments_pass_unchanged():
    args = {"master": "db9:/srv/s", "path": "/srv/replica", "port": 22}
    assert _resolve(args, {"db1": DB1}) == args


def test_the_inventory_name_is_the_address_when_there_is_no_ansible_host():
    args = _resolve({"master_host": "db1.example.org", "master_path": "/srv/s"}, {"db1.example.org": {}})
    assert args == {"master": "db1.example.org:/srv/s"}


def test_the_old_ansible_ssh_variables_are_read_too():
    hv = {"ansible_ssh_host": "192.0.2.8", "ansible_ssh_user": "backup", "ansible_ssh_port": "2200"}
    args = _resolve({"master_host": "db1", "master_path": "/srv/s"}, {"db1": hv})
    assert args == {"master": "backup@192.0.2.8:/srv/s", "port": 2200}


def test_ansible_host_wins_over_ansible_ssh_host_and_empty_values_are_skipped():
    hv = {"ansible_host": "192.0.2.7", "ansible_ssh_host": "192.0.2.8", "ansible_user": "", "ansible_ssh_user": "b"}
    assert _resolve({"master_host": "db1", "master_path": "/s"}, {"db1": hv})["master"] == "b@192.0.2.7:/s"
    hv = {"ansible_host": "", "ansible_ssh_host": None}
    assert _resolve({"master_host": "db1", "master_path": "/s"}, {"db1": hv})["master"] == "db1:/s"


def test_host_variables_are_templated():
    hv = {"ansible_host": "{{ db1_address }}", "ansible_user": "{{ db_user }}"}
    args = _resolve({"master_host": "db1", "master_path": "/s"}, {"db1": hv},
                    templates={"{{ db1_address }}": "192.0.2.9", "{{ db_user }}": "zope"})
    assert args["master"] == "zope@192.0.2.9:/s"


def test_an_ipv6_address_is_bracketed():
    args = _resolve({"master_host": "db6", "master_path": "/srv/s"}, {"db6": {"ansible_host": "2001:db8::7"}})
    assert args["master"] == "[2001:db8::7]:/srv/s"
    assert parse_master(args["master"]) == (None, "2001:db8::7", "/srv/s")


def test_the_tasks_own_user_and_port_win_over_the_inventory():
    args = _resolve({"master_host": "db1", "master_path": "/s", "user": "ops", "port": 22}, {"db1": DB1})
    assert args == {"master": "ops@192.0.2.7:/s", "user": "ops", "port": 22}


def test_a_port_that_is_not_a_number_is_refused():
    assert _fails({"master_host": "db1", "master_path": "/s"}, {"db1": {"ansible_port": "ssh"}}) == (
        "ansible_port of db1 is not a number: 'ssh'")


def test_master_and_master_host_together_are_refused():
    assert _fails({"master": "db1:/s", "master_host": "db1", "master_path": "/s"}) == (
        "give either master, or master_host and master_path, not both")


@pytest.mark.parametrize("args", [
    {"master_host": "db1"},
    {"master_path": "/srv/s"},
    {"master_host": "", "master_path": "/srv/s"},
    {"master_host": "db1", "master_path": ""},
])
def test_master_host_without_master_path_or_the_reverse_is_refused(args):
    assert _fails(args) == "master_host and master_path go together: give both"


def test_a_master_host_missing_from_the_inventory_is_refused():
    assert _fails({"master_host": "db2", "master_path": "/s"}, {"db1": DB1}) == (
        "master_host db2 is not in the inventory")
