# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the roles write where another account or a shell reads it, built
from values that may come from elsewhere (an inventory, a published key),
so each is checked and quoted before it lands where a shell or sshd reads it:

- `authorized_key_line`: the master's `authorized_keys` line of a standby
  key, restricted to `ds-replica serve PATH`.  The key is published by the
  standby (the content of a `.pub` file the standby account owns): exactly
  one public key of an allowed type, no options, nothing on a second line.
  Every value of the forced command is checked and shell-quoted.
- `service_command`: `sudo -n SYSTEMCTL stop|start NAME` of a hot
  standby's `service:`, which ds-replica runs with `/bin/sh -c` (hot.py).

Each refuses a bad value with ValueError in one line (the filter plugin
`plugins/filter/access.py` turns it into the task's failure).
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
import struct

KEY_TYPES = (
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
MAX_KEY = 16384  # an ssh-rsa key of 16384 bits is under 3 KiB of base64
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}\Z")
_COMMENT_RE = re.compile(r"^[\x20-\x7e]*\Z")  # printable ASCII: no newline, no control character
# a word of command="...": sshd ends it at a double quote and unescapes a backslash; without
# a single quote, shlex.quote() adds neither
_COMMAND_WORD_RE = re.compile(r"^[^\"'\\\x00-\x1f\x7f]+\Z")
# systemd unit names, as the sudoers drop-in can name them (no ',', ':', '=', '\'); never an option ('-...')
SERVICE_RE = re.compile(r"^[A-Za-z0-9@._][A-Za-z0-9@._-]{0,254}\Z")
_SYSTEMCTL_RE = re.compile(r"^/[A-Za-z0-9_./-]+\Z")


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def public_key(text):
    """`text` (a `.pub` file's content) as one `TYPE BASE64 [COMMENT]` line
    once checked: an allowed type, base64 holding a key of that same type,
    a printable one-line comment; ValueError otherwise."""
    if not isinstance(text, str) or len(text) > MAX_KEY:
        raise ValueError("the standby's public key is not a string of at most %d characters" % MAX_KEY)
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise ValueError("the standby's public key file holds more than one line: refusing it")
    words = line.split(None, 2)
    if len(words) < 2 or words[0] not in KEY_TYPES:
        raise ValueError("the standby's public key does not start with an allowed key type (%s), options "
                         "are refused: %s" % (", ".join(KEY_TYPES), _short(line)))
    if _key_blob_type(words[1]) != words[0]:
        raise ValueError("the standby's public key is not a valid %s key: %s" % (words[0], _short(line)))
    if len(words) == 3 and not _COMMENT_RE.match(words[2]):
        raise ValueError("the standby's public key has a comment with control characters: %s" % _short(line))
    return " ".join(words)


def _key_blob_type(blob):
    """The key type a key's base64 blob names (its first string), or None."""
    if not _BASE64_RE.match(blob):
        return None
    try:
        data = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", data[:4])
        return data[4:4 + length].decode("ascii") if 0 < length <= len(data) - 4 else None
    except (binascii.Error, struct.error, UnicodeDecodeError):
        return None


def _command_word(value, what):
    if not isinstance(value, str) or not _COMMAND_WORD_RE.match(value):
        raise ValueError("%s %s cannot be part of the forced command: no quote, backslash or control "
                         "character" % (what, _short(value)))
    return shlex.quote(value)


def _absolute(value, what):
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("%s %s is not an absolute path" % (what, _short(value)))
    return _command_word(value, what)


def forced_command(ds_replica, path, serve_options=""):
    """`DS_REPLICA serve [OPTIONS] PATH`, every word checked and quoted."""
    words = [_absolute(ds_replica, "the ds-replica command"), "serve"]
    try:
        options = shlex.split(serve_options or "")
    except ValueError:
        raise ValueError("the serve options %s are not a valid command line" % _short(serve_options))
    words += [_command_word(option, "the serve option") for option in options]
    words.append(_absolute(path, "the master path"))
    return " ".join(words)


def authorized_key_line(key, ds_replica, path, serve_options=""):
    """The authorized_keys line: the key, restricted to its forced command."""
    return 'restrict,command="%s" %s' % (forced_command(ds_replica, path, serve_options), public_key(key))


def service_command(verb, service, systemctl="/usr/bin/systemctl"):
    """`sudo -n SYSTEMCTL VERB SERVICE`, the service name checked (and
    quoted) so that the shell that runs it (hot.py) reads one word."""
    if verb not in ("stop", "start"):
        raise ValueError("a service can only be stopped or started, not %s" % _short(verb))
    if not isinstance(service, str) or not SERVICE_RE.match(service):
        raise ValueError("the service %s is not a systemd unit name ([A-Za-z0-9@._-], not starting with '-')"
                         % _short(service))
    if not isinstance(systemctl, str) or not _SYSTEMCTL_RE.match(systemctl):
        raise ValueError("systemctl %s is not an absolute path of [A-Za-z0-9_./-]" % _short(systemctl))
    return "sudo -n %s %s %s" % (shlex.quote(systemctl), verb, shlex.quote(service))
