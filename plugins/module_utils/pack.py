# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a pack of a replicated master, never past what a standby still
needs (module pack_plan,
playbooks/pack.yml): how far back to pack, and the site's own command.

A pack to time T drops the history before T and moves x.packed to T; a
standby whose newest transaction is older than that can no longer pull
("storage has been packed since the last replica").  So the plan packs to
the requested age or to the horizon (positions.py: the oldest transaction a
standby heard from within `max_age_days` holds), whichever is older; only
`force` packs past the horizon, and the plan then names every standby it
strands and the cure.

The command is the site's (e.g. ZEO's `zeopack -d {days} HOST:PORT`): split
into words as a shell would (shlex), never run by a shell; `{days}` (days
back, rounded up) and `{time}` (Unix time) are the only fields, and their
values are numbers this plan computes.  Both reach `margin` seconds
(MARGIN unless given) further back than the plan's time, so that a pack run
a little after the plan still stays at or before the horizon ({days} counts
back from the moment the command runs, {time} does not).
"""

from __future__ import annotations

import math
import shlex
import string
import time

from .errors import Refused
from .positions import standby_horizon
from .storage import ZERO_TID, Storage, tid_to_epoch

DAY = 86400.0
MARGIN = 600.0
FIELDS = ("days", "time")


def command_argv(template, days, when):
    """The argv of the site's pack command `template` for `days` and the
    Unix time `when`; Refused for a template that is not words with only
    {days} and {time} in them."""
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise Refused("pack_command cannot be split into words (%s): %r" % (e, template),
                      "quote it as a shell would, e.g. zeopack -d {days} HOST:PORT")
    if not words:
        raise Refused("pack_command is empty", "give the site's pack command, e.g. zeopack -d {days} HOST:PORT")
    for word in words:
        _check_fields(word, template)
    return [word.format(days=days, time=when) for word in words]


def _check_fields(word, template):
    try:
        fields = [(name, spec, conv) for _text, name, spec, conv in string.Formatter().parse(word) if name is not None]
    except ValueError as e:
        raise Refused("pack_command has a stray brace (%s): %r" % (e, template), "write a brace as {{ or }}")
    for name, spec, conv in fields:
        if name not in FIELDS or spec or conv:
            raise Refused("pack_command may hold only {days} and {time}, not {%s}: %r" % (name, template),
                          "write a brace as {{ or }}")


def pack_plan(path, days, command=None, force=False, max_age_days=None, now=None, margin=MARGIN):
    """What a pack of the master at `path` keeping `days` days of history
    would do: the time it packs to (`margin` seconds to spare), what holds it
    back or whom it strands, and the argv of `command` (None without one)."""
    if not days >= 0:
        raise Refused("the days of history to keep must be 0 or more, not %r" % days)
    if math.isnan(margin) or margin < 0:  # as `not margin >= 0`, NaN refused too
        raise Refused("the pack's margin must be 0 seconds or more, not %r" % margin)
    now = time.time() if now is None else now
    report = standby_horizon(path, max_age_days, now)
    requested = now - days * DAY
    horizon = report["horizon"]
    held = horizon is not None and horizon["time"] is not None and horizon["time"] < requested and not force
    target = horizon["time"] if held else requested
    packed = Storage(path).packed_tid()
    packed_time = tid_to_epoch(packed) if packed != ZERO_TID else None
    stranded = [s for s in report["standbys"] if s["tid_time"] is not None and s["tid_time"] < target]
    pack_days = math.ceil((now - target + margin) / DAY * 10000) / 10000
    pack_time = int(target - margin)
    plan = {"path": report["path"], "requested_days": days, "requested_time": round(requested, 3),
            "pack_time": pack_time, "pack_days": pack_days, "packed_time": packed_time, "horizon": horizon,
            "held_back_by": horizon["standby"] if held else None, "forced": bool(force),
            "stranded": [s["name"] for s in stranded],
            "pack": packed_time is None or pack_time > packed_time,
            "argv": command_argv(command, "%g" % pack_days, "%d" % pack_time) if command else None}
    plan["message"] = plan_message(plan, stranded)
    return plan


def plan_message(plan, stranded):
    """The plan in one line."""
    if not plan["pack"]:
        return "%s: nothing to pack: already packed to %s, at or after %s" % (
            plan["path"], _utc(plan["packed_time"]), _utc(plan["pack_time"]))
    line = "%s: packing to %s (%g days back)" % (plan["path"], _utc(plan["pack_time"]), plan["pack_days"])
    if plan["held_back_by"]:
        line += ", held back from %g days by standby %s, which holds %s" % (
            plan["requested_days"], plan["held_back_by"], plan["horizon"]["tid"])
    if stranded:
        line += "; this strands standby %s (holding %s): re-seed %s with 'ds-replica clone --delta MASTER PATH'" % (
            ", ".join(s["name"] for s in stranded), ", ".join(s["tid"] for s in stranded),
            "it" if len(stranded) == 1 else "them")
    return line


def _utc(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else "never"
