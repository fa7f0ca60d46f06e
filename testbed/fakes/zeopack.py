# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A site's pack command, as playbooks/pack.yml runs it (`pack_command`), for
a simulated storage that serves its toolkit (testbed/fakes/toolkit.py).

On a real site this is ZEO's ``zeopack -t TIME HOST:PORT``: it asks the
running server to pack to Unix time TIME.  Here it asks the running
simulated storage the same over XML-RPC (``pack(TIME)``), with the
``user:password`` of an access file:

    python -m testbed.fakes.zeopack -t 1700000000 URL ACCESS_FILE

It prints the storage's x.packed afterwards; a refusal (e.g. a snapshot in
progress) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
import xmlrpc.client


def main(argv=None):
    parser = argparse.ArgumentParser(prog="zeopack", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("-t", "--time", type=float, required=True, help="pack to this Unix time")
    parser.add_argument("url", help="the toolkit's URL")
    parser.add_argument("access", help="file holding user:password")
    args = parser.parse_args(argv)
    with open(args.access) as f:
        user, _colon, password = f.read().strip().partition(":")
    parts = urllib.parse.urlsplit(args.url)
    netloc = "%s:%s@%s" % (urllib.parse.quote(user, safe=""), urllib.parse.quote(password, safe=""), parts.netloc)
    server = xmlrpc.client.ServerProxy(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), allow_none=True)
    try:
        print(server.pack(args.time))
    except (xmlrpc.client.Error, OSError) as e:
        print("zeopack: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
