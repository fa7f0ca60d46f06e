# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Installing the engine on a host: the files of one folder, given by name and
content, written in one call (module ``install_files``, role ``install``).

Copying the engine's 36 files one Ansible task item at a time cost three
round trips per file per host: about 45 s per host for each playbook that
installs it. One call compares and writes them all."""

from __future__ import annotations

import os
import re

from .durable import fsync_path, read_file, write_atomic
from .errors import DSError

#: a plain file name: no folder, no "..", no hidden file, nothing a shell would read differently
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}\Z")


def check_file_names(names):
    """Refuse any name that is not a plain file name (before anything touches the disk)."""
    bad = sorted(n for n in names if not isinstance(n, str) or not FILE_NAME.match(n) or ".." in n)
    if bad:
        raise DSError("not plain file names: %s" % ", ".join(repr(n) for n in bad[:5]),
                      hint="give names without '/' or '..', starting with a letter, digit or '_'")


def files_to_write(folder, files):
    """The names of `files` ({name: bytes}) whose file in `folder` is missing or holds other bytes, sorted."""
    check_file_names(files)
    stale = []
    for name in sorted(files):
        try:
            same = read_file(os.path.join(folder, name)) == files[name]
        except FileNotFoundError:
            same = False
        if not same:
            stale.append(name)
    return stale


def write_files(folder, files, names, mode=0o644):
    """Write `names` of `files` into the existing `folder`, each atomically (temp, fsync, rename), and
    the folder's entries durably at the end."""
    check_file_names(names)
    for name in names:
        write_atomic(os.path.join(folder, name), files[name], mode=mode, sync=False)
    for name in names:
        fsync_path(os.path.join(folder, name))
    if names:
        fsync_path(folder, directory=True)
