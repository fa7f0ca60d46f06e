# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A private Galaxy server on 127.0.0.1 serving collection tarballs, as an organisation's
Automation Hub or galaxy_ng would to AWX's project sync (its "Galaxy credential").

Only the part of the v3 API that `ansible-galaxy collection install` reads: the API root,
a collection, its versions, one version's metadata (download URL, sha256, dependencies)
and the download. Nothing leaves the machine.

    with GalaxyServer([tarball]) as galaxy:
        env["ANSIBLE_GALAXY_SERVER"] = galaxy.url
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API = "/api/"
V3 = API + "v3/"


def _manifest(tarball):
    with tarfile.open(tarball) as tf:
        return json.load(tf.extractfile("MANIFEST.json"))["collection_info"]


class GalaxyServer(object):
    """Serves `tarballs` (built collections) at `self.url` until closed."""

    def __init__(self, tarballs):
        self.routes = {API: {"available_versions": {"v3": "v3/"}}}
        self.downloads = {}
        for tarball in map(Path, tarballs):
            self._publish(tarball)
        self.requests = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = "http://127.0.0.1:%d%s" % (self.httpd.server_address[1], API)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _publish(self, tarball):
        info = _manifest(tarball)
        ns, name, version = info["namespace"], info["name"], info["version"]
        base = "%scollections/%s/%s/" % (V3, ns, name)
        download = "/download/%s" % tarball.name
        self.downloads[download] = tarball
        self.routes[base] = {"namespace": ns, "name": name, "href": base,
                             "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                             "highest_version": {"version": version}}
        listing = self.routes.setdefault(base + "versions/", {"meta": {"count": 0}, "links": {"next": None},
                                                              "data": []})
        listing["data"].append({"version": version, "href": "%sversions/%s/" % (base, version)})
        listing["meta"]["count"] += 1
        self.routes["%sversions/%s/" % (base, version)] = {
            "namespace": {"name": ns}, "collection": {"name": name}, "version": version,
            "href": "%sversions/%s/" % (base, version), "download_url": download,
            "artifact": {"sha256": hashlib.sha256(tarball.read_bytes()).hexdigest(), "filename": tarball.name},
            "metadata": {"dependencies": info.get("dependencies") or {}}, "signatures": []}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                if path in server.downloads:
                    self._send(200, server.downloads[path].read_bytes(), "application/gzip")
                elif path in server.routes:
                    self._send(200, json.dumps(server.routes[path]).encode(), "application/json")
                else:
                    self._send(404, b'{"errors": [{"status": "404", "detail": "Not found."}]}', "application/json")

            def _send(self, code, body, kind):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
