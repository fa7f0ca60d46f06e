# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Zope DirectoryStorageToolkit, as far as a replication tool sees it.

`ToolkitServer(master)` serves XML-RPC on 127.0.0.1 (a free port, in a thread)
with the toolkit's methods `enterSnapshot(code)`, `leaveSnapshot(code)` and
`currentSnapshotCode()` for a `SimulatedStorage`, behind HTTP basic authentication:

- a missing or wrong Authorization header gets HTTP 401 (as Zope answers);
- a refusal from the storage (already in snapshot mode, misc/sublock held by a
  tool, wrong code) comes back as the XML-RPC fault Zope makes of an
  exception: code -1, ``Unexpected Zope exception: <message>``;
- the methods return None (``<nil/>``), as Zope marshals a None result.

It also answers ``pack(unix_time)``, the site's pack route (what ZEO's
``zeopack`` reaches on a real site, `testbed/fakes/zeopack.py` here): the
storage packs as ``db.pack(t)`` does on the real engine
(`SimulatedStorage.pack_at`), and the call returns the new x.packed (hex).
"""

from __future__ import annotations

import base64
import collections
import hmac
import os
import secrets
import threading
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from dirstorage_replica import durable, errors, storage

TOOLKIT_PATH = "/Control_Panel/DirectoryStorageToolkit"


class ToolkitServer(object):
    """XML-RPC front of a SimulatedStorage; see the module docstring.

    Attributes: `url`, `username`, `password`, `calls` (a Counter of method
    name -> authenticated calls), `unauthorized` (requests answered 401).
    """

    def __init__(self, master, username="admin", password=None, port=0, path=TOOLKIT_PATH):
        self.master = master
        self.username = username
        self.password = password if password is not None else secrets.token_hex(8)
        self.calls = collections.Counter()
        self.unauthorized = 0
        expected = "Basic " + base64.b64encode(("%s:%s" % (self.username, self.password)).encode()).decode()
        toolkit = self

        class Handler(SimpleXMLRPCRequestHandler):
            rpc_paths = (path,)

            def do_POST(self):
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    toolkit.unauthorized += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'basic realm="Zope"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_POST()

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = SimpleXMLRPCServer(("127.0.0.1", port), Handler, allow_none=True, logRequests=False)
        for name, method in (("enterSnapshot", master.enter_snapshot),
                             ("leaveSnapshot", master.leave_snapshot),
                             ("currentSnapshotCode", lambda: master.snapshot_code),
                             ("pack", lambda when: _packed(master, when))):
            self._server.register_function(self._zope_call(name, method), name)
        self.port = self._server.server_address[1]
        self.url = "http://127.0.0.1:%d%s" % (self.port, path)
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-toolkit", daemon=True)
        self._thread.start()

    def _zope_call(self, name, method):
        def call(*args):
            self.calls[name] += 1
            try:
                return method(*args)
            except errors.DSError as e:
                raise xmlrpc.client.Fault(-1, "Unexpected Zope exception: %s" % e) from e
        return call

    def write_snapshot_conf(self, home, extra_lines=()):
        """Point `home`'s config/snapshot.conf at this server: an ``http`` line
        whose access file (config/toolkit.access, mode 0600) holds
        ``user:password``, followed by `extra_lines` (e.g. ``"nodirect"``)."""
        config = os.path.join(home, "config")
        durable.write_atomic(os.path.join(config, "toolkit.access"),
                             ("%s:%s\n" % (self.username, self.password)).encode(), mode=0o600)
        lines = ["http %s toolkit.access" % self.url] + list(extra_lines)
        durable.write_atomic(os.path.join(config, "snapshot.conf"), ("\n".join(lines) + "\n").encode())

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _packed(master, when):
    """Pack `master` as db.pack(`when`) would; its x.packed afterwards (hex)."""
    return storage.hex_tid(master.pack_at(float(when)))
