# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""misc/ds-replica-follow.json: what a follower says of itself (written by
follow.py's Recorder, read by `ds-replica status` and storage_info)."""

from __future__ import annotations

import json
import os

from .durable import pid_alive

STATE_FILE = "ds-replica-follow.json"  # in the replica's misc/


def follower_state(replica_dir):
    """What the follower last recorded in the replica's misc/ (None if none),
    and whether its process still runs."""
    try:
        with open(os.path.join(replica_dir, "misc", STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    state["running"] = state.get("state") != "stopped" and isinstance(pid, int) and pid > 0 and pid_alive(pid)
    return state
