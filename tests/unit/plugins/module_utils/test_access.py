"""What the roles write where another account or a shell reads it
(plugins/module_utils/access.py, issue 20): a standby key on the master
stays restricted to `ds-replica serve PATH` whatever the standby account put
in its .pub file, and a hot standby's service name stays one word for the
shell that runs its stop and start commands."""

from __future__ import annotations

import base64
import shlex
import struct

import pytest

from dirstorage_replica.access import authorized_key_line, forced_command, public_key, service_command

BIN, PATH = "/usr/local/bin/ds-replica", "/srv/zodb/main"


def blob(kind, body=b"\x01" * 32):
    """The base64 blob of a public key of type `kind` (its first string names the type)."""
    kind = kind.encode("ascii")
    return base64.b64encode(struct.pack(">I", len(kind)) + kind + struct.pack(">I", len(body)) + body).decode()


ED = "ssh-ed25519 %s dsreplica@standby1" % blob("ssh-ed25519")


@pytest.mark.parametrize("kind", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp521", "ssh-rsa",
                                  "sk-ssh-ed25519@openssh.com"])
def test_a_key_of_an_allowed_type_is_restricted_to_serve(kind):
    key = "%s %s ds-replica-main@standby1\n" % (kind, blob(kind))
    line = authorized_key_line(key, BIN, PATH)
    assert line == 'restrict,command="%s serve %s" %s' % (BIN, PATH, key.strip())
    assert "\n" not in line


@pytest.mark.parametrize("text,message", [
    (ED + "\n" + ED, "more than one line"),  # the second line would be a key without restrictions
    (ED + "\r" + ED, "more than one line"),
    ('command="/bin/sh" ' + ED, "allowed key type"),
    ("restrict " + ED, "allowed key type"),
    ("no-pty,permitopen=\"*:*\" " + ED, "allowed key type"),
    ("ssh-dss %s x" % blob("ssh-dss"), "allowed key type"),
    ("ssh-ed25519 %s x" % blob("ssh-rsa"), "not a valid ssh-ed25519 key"),
    ("ssh-ed25519 not-base64!", "not a valid ssh-ed25519 key"),
    ("ssh-ed25519", "allowed key type"),
    ("", "allowed key type"),
    (ED + " \x1b[2J", "control characters"),
    ("ssh-ed25519 " + "A" * 20000, "at most"),
])
def test_anything_but_one_plain_key_is_refused_in_one_line(text, message):
    with pytest.raises(ValueError, match=message) as e:
        authorized_key_line(text, BIN, PATH)
    assert "\n" not in str(e.value)


def test_paths_are_quoted_for_the_shell_inside_the_forced_command():
    line = authorized_key_line(ED, BIN, "/srv/my storage;rm -rf ~", "--snapshot-timeout 120")
    command = line[len('restrict,command="'):line.index('" ssh-ed25519')]
    assert shlex.split(command) == [BIN, "serve", "--snapshot-timeout", "120", "/srv/my storage;rm -rf ~"]


@pytest.mark.parametrize("ds_replica,path,options", [
    (BIN, '/srv/a" ssh-ed25519 AAAA', ""),  # would end command="..." early
    (BIN, "/srv/it's", ""),  # shlex would quote it with double quotes
    (BIN, "/srv/a\\b", ""),
    (BIN, "/srv/a\nb", ""),
    (BIN, "relative/path", ""),
    ('/usr/bin/ds-replica"', PATH, ""),
    ("ds-replica", PATH, ""),
    (BIN, PATH, '--x "a\\"b"'),
    (BIN, PATH, "--x 'unclosed"),
])
def test_a_value_that_would_break_out_of_the_forced_command_is_refused(ds_replica, path, options):
    with pytest.raises(ValueError) as e:
        forced_command(ds_replica, path, options)
    assert "\n" not in str(e.value)


def test_the_key_itself_is_written_back_in_its_canonical_form():
    assert public_key("  ssh-ed25519   %s  a comment  \n" % blob("ssh-ed25519")) == \
        "ssh-ed25519 %s a comment" % blob("ssh-ed25519")


@pytest.mark.parametrize("service", ["zeo-ro", "zeo@main.service", "zope_ro.2"])
def test_a_service_name_gives_the_sudo_systemctl_command(service):
    assert service_command("stop", service) == "sudo -n /usr/bin/systemctl stop %s" % service
    assert shlex.split(service_command("start", service, "/bin/systemctl")) == \
        ["sudo", "-n", "/bin/systemctl", "start", service]


@pytest.mark.parametrize("service", ["zeo; touch /tmp/owned", "$(id)", "`id`", "a b", "-H evil.example",
                                     "--force", "", "x" * 300, "zeo\nro", "a,b", "a:b", "a\\x2db", None])
def test_a_service_name_that_is_not_one_unit_name_is_refused(service):
    with pytest.raises(ValueError, match="is not a systemd unit name") as e:
        service_command("stop", service)
    assert "\n" not in str(e.value)


def test_only_stop_and_start_with_an_absolute_systemctl():
    with pytest.raises(ValueError, match="only be stopped or started"):
        service_command("restart; id", "zeo")
    for systemctl in ("systemctl", "/usr/bin/systemctl; id", "/usr/bin/system ctl"):
        with pytest.raises(ValueError, match="not an absolute path"):
            service_command("stop", "zeo", systemctl)
