# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every kind of error the engine raises on purpose: a DSError says in one
line what is wrong and what to do; its kind says whether trying again later
may help (`retryable`) and lets the command line choose its exit code."""

from __future__ import annotations


class DSError(Exception):
    """An error with a one-line message that says what is wrong and what to do."""

    #: whether trying again later may succeed
    retryable = False

    def __init__(self, message, hint=None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else "%s: %s" % (message, hint))

    def __str__(self):
        return self.message if not self.hint else "%s; %s" % (self.message, self.hint)


class NotAStorage(DSError):
    pass


class Refused(DSError):
    """The master refused the request (identity, pack, divergence...)."""


class Busy(DSError):
    """Something holds a lock or snapshot mode; trying later may work."""

    retryable = True


class Corrupt(DSError):
    """A file or an archive is not what it claims to be."""


class TransportError(DSError):
    """The way to the master failed (ssh, network); trying later may work."""

    retryable = True


class LocalDiskError(DSError):
    """The replica's own disk failed (full, read-only...): not the network.
    Not retryable for a one-shot pull (exit 1), but a follower waits and
    tries again, since space may be freed."""
