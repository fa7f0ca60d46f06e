# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ansible-test's get-pip.py bootstrap script (`make sanity` uses it).

`ansible-test sanity --venv` bootstraps pip in each new virtual environment by
running get-pip.py, downloaded from ci-files.testing.ansible.com into
~/.ansible/test/cache/get_pip_<version>.py. Where that host cannot be reached
(PyPI can), `make sanity` saves this file there instead: it installs the pip
bundled with Python (ensurepip, offline), then does what get-pip.py does with
its arguments: `pip install` them (pip==<version>, setuptools, wheel...) from
PyPI. get-pip.py's own flags --no-setuptools and --no-wheel only mean "do not
add those packages", which is already the case here, so they are dropped.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    env = dict(os.environ)  # ensurepip hides pip's configuration (PIP_CONFIG_FILE=/dev/null): keep ours for PyPI
    ensurepip.bootstrap(upgrade=True)
    return subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env)


if __name__ == "__main__":
    sys.exit(main())
