# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stop flag that a signal handler may set: what the fakes' processes use
instead of a threading.Event, whose `set()` from a handler can hang for good
(the handler runs between two bytecodes of the main thread, possibly inside
`Event.wait` holding the very lock `set()` takes)."""

from __future__ import annotations

import signal
import time

SLICE = 0.01  # seconds: how late `wait` sees the flag


class SignalStop(object):
    """`set()` only sets a flag; `is_set()` and `wait(timeout)` as threading.Event's."""

    def __init__(self):
        self.flag = False

    def set(self):
        self.flag = True

    def is_set(self):
        return self.flag

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.flag:
            left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self.flag


def stop_on(*signums):
    """A SignalStop set by each of `signums`."""
    stop = SignalStop()
    for signum in signums:
        signal.signal(signum, lambda *_: stop.set())
    return stop
