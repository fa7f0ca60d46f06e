# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a storage says of its own place in a fleet, kept in its `config/`
so that it does not depend on any inventory:

- `config/promoted` (JSON: when, and the newest transaction then): written
  by `ds-replica promote`; from then on no pull goes INTO this storage.
- `config/upstream` (one line: the master argument it is a standby of):
  written by `clone` / `clone --delta` and when a standby is re-pointed.

A clone copies neither (it sends config/settings and config/identity only),
so a standby never inherits its master's marks.
"""

from __future__ import annotations

import datetime
import json
import os

from .durable import read_file, remove_atomic_leftovers, write_atomic
from .errors import Refused
from .storage import hex_tid

PROMOTED = "promoted"
UPSTREAM = "upstream"


def _config(home, name):
    return os.path.join(home, "config", name)


def promoted(home):
    """The promotion marker's dict ({"promoted_at", "tid"}), or None."""
    try:
        data = read_file(_config(home, PROMOTED))
    except FileNotFoundError:
        return None
    try:
        mark = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        mark = {}
    return {"promoted_at": str(mark.get("promoted_at", "unknown time")), "tid": str(mark.get("tid", "unknown"))}


def mark_promoted(home, tid, now=None):
    """Write config/promoted; the caller holds the storage's locks (promote),
    so a temporary file of an earlier promote cut short is removed first."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    mark = {"promoted_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "tid": hex_tid(tid)}
    remove_atomic_leftovers(_config(home, PROMOTED))
    write_atomic(_config(home, PROMOTED), (json.dumps(mark, sort_keys=True) + "\n").encode("ascii"))
    return mark


def refuse_if_promoted(home):
    """A pull INTO a promoted storage would overwrite a master's history."""
    mark = promoted(home)
    if mark is not None:
        raise Refused("%s was promoted to master at %s (newest transaction then %s): refusing to pull into it"
                      % (home, mark["promoted_at"], mark["tid"]),
                      "pull from it instead; to make it a standby again use 'ds-replica clone --delta'")


def upstream(home):
    """The master argument this standby was last pointed at, or None."""
    try:
        return read_file(_config(home, UPSTREAM)).decode("utf-8").strip() or None
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def set_upstream(home, master):
    """Record `master` (the caller holds the storage's locks: a temporary
    file of an earlier write cut short is removed); True when that changed
    something."""
    remove_atomic_leftovers(_config(home, UPSTREAM))
    if upstream(home) == master:
        return False
    write_atomic(_config(home, UPSTREAM), (master + "\n").encode("utf-8"))
    return True
