# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test bed: what the tests (tests/) and the benchmarks (bench/) run the collection against.

- ``fakes``: stand-ins for the outside systems a real site has (the master's storage
  process, Zope's DirectoryStorageToolkit, a hot standby's read-only server, a Galaxy
  server, ZEO's zeopack);
- ``ssh_standins``: programs given to ``ds-replica -e`` in place of ssh;
- ``harness``: starts the real programs around the collection (sshd, systemd-nspawn,
  Prometheus and node_exporter, ansible-playbook, ansible-runner, loop devices under
  strace) and the simulated master and ``ds-replica follow`` as processes;
- ``demo``: ``make demo``; ``dashboard``: the Grafana dashboard's queries, read by its test
  and by bench/plot_dashboard.py.

It ships with the collection beside tests/ and bench/, which import it; tests/README.md maps it.
Assertions that only the tests use stay in tests/support/.
"""
