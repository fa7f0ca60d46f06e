# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real monitoring programs around live standbys, for tests/integration/test_prometheus.py
and bench/record_dashboard.py (which draws docs/grafana/dirstorage-replication.png).

- ``compress_rules``: the project's alert rules (docs/prometheus/dirstorage-alerts.yml) with time
  compressed by one factor: every ``for:`` and every threshold compared with a ``*_seconds``
  series is multiplied by it; nothing else changes (expressions, labels, annotations), so an
  hour-long staleness becomes seconds and the rules keep their meaning.
- ``NodeExporter``: Debian's ``prometheus-node-exporter`` on a free loopback port with only its
  textfile collector, reading one standby's textfile folder.
- ``Prometheus``: Debian's ``prometheus`` on a free loopback port, scraping the exporters every
  second (each target labelled ``instance=<standby>``, as node_exporter's host would be) and
  evaluating the rules every second; ``alerts()``, ``query_range()``, ``label_values()`` are its
  HTTP API.
- ``Monitored``: two live simulated masters (``main``, ``catalog``) and two standbys, each
  storage pulled by the real cron wrapper (``ds-replica-cron``) or followed by ``ds-replica
  follow --metrics``, into the standby's textfile folder; ``run_story`` plays the outage the
  test and the picture show.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from dirstorage_replica import storage
from dirstorage_replica.clone import clone
from testbed import dashboard
from testbed.harness.reliability import MasterProcess
from testbed.harness.sshd import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "docs" / "prometheus" / "dirstorage-alerts.yml"
PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
BIN = Path(sys.executable).parent
CRON = str(BIN / "ds-replica-cron")
DS_REPLICA = str(BIN / "ds-replica")

# ------------------------------------------------------------------ the rules, time compressed

DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
SECONDS_THRESHOLD = re.compile(r"(_seconds\s*>\s*)(\d+(?:\.\d+)?)")


def duration_seconds(text):
    m = DURATION.match(text)
    if not m:
        raise ValueError("not a simple Prometheus duration: %r" % text)
    return int(m.group(1)) * UNIT_SECONDS[m.group(2)]


def compress_rules(text, factor):
    """The rules file `text` with every `for:` and every `*_seconds > N` threshold multiplied by
    `factor` (a YAML text); everything else of each rule is kept as it is."""
    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "%dms" % round(duration_seconds(rule["for"]) * factor * 1000)
            rule["expr"] = SECONDS_THRESHOLD.sub(
                lambda m: m.group(1) + ("%g" % (float(m.group(2)) * factor)), rule["expr"])
    return yaml.safe_dump(doc, sort_keys=False)


# ------------------------------------------------------------------ the programs

class ProgramMissing(AssertionError):
    """A monitoring program is not installed: never a silent skip."""


def require(path, package):
    if not os.access(path, os.X_OK):
        raise ProgramMissing("%s missing: run `make deps` as root (Debian package %s)" % (path, package))


def http_json(url, params=None, timeout=10.0):
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body = json.loads(answer.read().decode("utf-8"))
    if body.get("status") != "success":
        raise AssertionError("%s answered %s" % (url, body))
    return body["data"]


class Daemon(object):
    """A program on a free loopback port, its output in `log`; ready once `ready_path` answers 200."""

    ready_path = "/"

    def __init__(self, argv, log, port):
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.log = Path(log)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready(30.0)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited (%s): %s" % (self.proc.args[0], self.proc.returncode,
                                                             self.log.read_text()[-2000:]))
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2.0) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("%s did not answer on %s within %gs" % (self.proc.args[0], self.url, timeout))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NodeExporter(Daemon):
    """node_exporter with only the textfile collector, on `textfile_dir`."""

    ready_path = "/metrics"

    def __init__(self, textfile_dir, log):
        require(NODE_EXPORTER, "prometheus-node-exporter")
        port = free_port()
        super().__init__([NODE_EXPORTER, "--web.listen-address=127.0.0.1:%d" % port, "--collector.disable-defaults",
                          "--collector.textfile", "--collector.textfile.directory=%s" % textfile_dir], log, port)


class Prometheus(Daemon):
    """A Prometheus scraping `targets` ({instance label: exporter URL}) every second, with `rules`."""

    ready_path = "/-/ready"

    def __init__(self, workdir, targets, rules_text):
        require(PROMETHEUS, "prometheus")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yml").write_text(rules_text)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [{"job_name": "node", "static_configs": [
                {"targets": [url.split("//", 1)[1]], "labels": {"instance": name}}
                for name, url in sorted(targets.items())]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        super().__init__([PROMETHEUS, "--config.file=%s" % (workdir / "prometheus.yml"),
                          "--storage.tsdb.path=%s" % (workdir / "data"),
                          "--web.listen-address=127.0.0.1:%d" % port], workdir / "prometheus.log", port)

    def api(self, path, **params):
        return http_json(self.url + "/api/v1/" + path, params)

    def alerts(self):
        """The active alerts: [(alertname, instance, storage, state)]."""
        return sorted((a["labels"]["alertname"], a["labels"].get("instance"), a["labels"].get("storage"), a["state"])
                      for a in self.api("alerts")["alerts"])

    def alert_rules(self):
        """{alertname: (expression, `for` in seconds)} of the rules Prometheus loaded."""
        return {r["name"]: (r["query"], r["duration"]) for g in self.api("rules", type="alert")["groups"]
                for r in g["rules"]}

    def query_range(self, expr, start, end, step=1.0):
        data = self.api("query_range", query=expr, start="%.3f" % start, end="%.3f" % end, step="%g" % step)
        assert data["resultType"] == "matrix", data
        return data["result"]

    def label_values(self, label, match):
        return self.api("label/%s/values" % label, **{"match[]": match})


# ------------------------------------------------------------------ standbys

class Standby(object):
    """One standby: its textfile folder, and per storage a replica pulled by the cron wrapper
    (`modes[storage] == "cron"`, args `extra[storage]`) or followed (`"follow"`)."""

    def __init__(self, work, name, masters, modes, extra=None):
        self.name = name
        self.dir = Path(work) / name
        self.textfile = self.dir / "textfile"
        self.textfile.mkdir(parents=True)
        # each host has its own home, so its own lock folder: a shared ~/.ds-replica would let one
        # standby's run of `catalog` hold the lock of the other's, whose runs then skip (exit 0)
        self.lock_dir = self.dir / "locks"
        self.lock_dir.mkdir(mode=0o700)
        self.masters = masters
        self.modes = modes
        self.extra = extra or {}
        self.sources, self.replicas, self.running, self.followers = {}, {}, {}, {}
        for name_, home in masters.items():
            self.sources[name_] = self.dir / ("master-" + name_)  # the path this standby reaches its master by
            self.sources[name_].symlink_to(home)
            self.replicas[name_] = self.dir / name_
            clone(str(home), str(self.replicas[name_]))

    def pull(self, name):
        """Start the cron wrapper for `name` unless its previous run is still going (as cron would)."""
        proc = self.running.get(name)
        if proc is not None and proc.poll() is None:
            return
        self.running[name] = subprocess.Popen(
            [CRON, "--textfile-dir", str(self.textfile), "--lock-dir", str(self.lock_dir), name, "--",
             *self.extra.get(name, ()), str(self.sources[name]), str(self.replicas[name])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def follow(self, name):
        log = open(self.dir / ("follow-%s.log" % name), "ab")
        self.followers[name] = subprocess.Popen(
            [DS_REPLICA, "follow", "--interval", "0.2", "--metrics", os.path.join(self.textfile, "dirstorage_%s.prom"
                                                                                  % name),
             *self.extra.get(name, ()), str(self.sources[name]), str(self.replicas[name])],
            stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def stop_following(self, name):
        """SIGTERM, as `systemctl stop` sends: the follower ends at a transaction boundary (exit 0)."""
        proc = self.followers.pop(name)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (self.dir / ("follow-%s.log" % name)).read_text()

    def set_reachable(self, name, reachable):
        source = self.sources[name]
        if reachable and not source.is_symlink():
            source.symlink_to(self.masters[name])
        elif not reachable and source.is_symlink():
            source.unlink()

    def close(self):
        for name in list(self.followers):
            self.stop_following(name)
        for proc in self.running.values():
            proc.wait()


class Monitored(object):
    """Two live masters, two standbys, their node_exporters and one Prometheus (`factor`: the rules'
    time compression). Use as a context manager; `run_story` plays the outage."""

    STORAGES = {"main": 1.0, "catalog": 0.2}  # share of `rate` each master writes

    def __init__(self, work, rate=10.0, pull_interval=2.0, factor=1 / 300.0):
        self.work = Path(work)
        self.rate, self.pull_interval, self.factor = rate, pull_interval, factor
        self.masters, self.master_procs, self.exporters = {}, [], {}
        self.standbys = {}
        self.prometheus = None
        self._stop = threading.Event()
        self._scheduler = None
        self.events = []  # (unix time, what)

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        for i, (name, share) in enumerate(self.STORAGES.items()):
            home = self.work / "masters" / name
            self.master_procs.append(MasterProcess(home, rate=self.rate * share, create="bushy", seed=i + 1))
            self.masters[name] = home
        # standby1 pulls both with the cron wrapper, `main` as a hot standby (its "service" is stopped
        # around each apply); standby2 follows `main` and pulls `catalog` with the cron wrapper
        self.standbys["standby1"] = Standby(self.work, "standby1", self.masters, {"main": "cron", "catalog": "cron"},
                                            {"main": ["--stop-command", "sleep 0.2", "--start-command", "true"]})
        self.standbys["standby2"] = Standby(self.work, "standby2", self.masters, {"main": "follow", "catalog": "cron"})
        for standby in self.standbys.values():
            for name, mode in standby.modes.items():
                if mode == "follow":
                    standby.follow(name)
            self.exporters[standby.name] = NodeExporter(standby.textfile, standby.dir / "node_exporter.log")
        self.prometheus = Prometheus(self.work / "prometheus", {n: e.url for n, e in self.exporters.items()},
                                     compress_rules(RULES.read_text(), self.factor))
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)
        self._scheduler.start()
        self.start = time.time()

    def _schedule(self):
        while not self._stop.is_set():
            for standby in self.standbys.values():
                for name, mode in standby.modes.items():
                    if mode == "cron":
                        standby.pull(name)
            self._stop.wait(self.pull_interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout=30)
        for standby in self.standbys.values():
            standby.close()
        for program in [self.prometheus, *self.exporters.values()]:
            if program is not None:
                program.stop()
        for proc in self.master_procs:
            proc.stop()

    def note(self, what):
        self.events.append((time.time(), what))

    def wait_for_alerts(self, predicate, timeout, what):
        """Poll /api/v1/alerts every second until predicate(alerts) holds; every answer is kept in
        self.seen (time, alerts)."""
        deadline = time.monotonic() + timeout
        while True:
            alerts = self.prometheus.alerts()
            self.seen.append((time.time(), alerts))
            if predicate(alerts):
                return alerts
            if time.monotonic() > deadline:
                raise AssertionError("%s: not within %gs; alerts: %s" % (what, timeout, alerts))
            time.sleep(1.0)

    def wait_for_series(self, timeout=30.0):
        """Until Prometheus holds a last result of 1 for every standby and storage."""
        want = {(s, n) for s in self.standbys for n in self.STORAGES}
        deadline = time.monotonic() + timeout
        while True:
            got = {(r["metric"]["instance"], r["metric"]["storage"]) for r in
                   self.prometheus.api("query", query="dirstorage_replication_last_result == 1")["result"]}
            if want <= got:
                return
            if time.monotonic() > deadline:
                raise AssertionError("Prometheus has a successful pull of only %s of %s" % (sorted(got), sorted(want)))
            time.sleep(0.5)

    def run_story(self, warmup=6.0, tail=6.0, outage_timeout=60.0, recovery_timeout=40.0):
        """Healthy standbys; then standby2's follower of `main` stopped (its pulls stop) and standby1's
        path to the `catalog` master gone (its pulls fail) until the stale and failing alerts fire;
        then both back, until every alert of theirs resolves. Returns the figures."""
        self.seen = []
        self.wait_for_series()
        time.sleep(warmup)
        s1, s2 = self.standbys["standby1"], self.standbys["standby2"]
        self.note("outage")
        s2.stop_following("main")
        s1.set_reachable("catalog", False)
        outage = time.monotonic()
        fired = self.wait_for_alerts(
            lambda a: ("DirstorageReplicationStale", "standby2", "main", "firing") in a
            and ("DirstorageReplicationFailing", "standby1", "catalog", "firing") in a,
            outage_timeout, "the stale and failing alerts firing")
        fired_after = time.monotonic() - outage
        self.note("recovery")
        newest = storage.Storage(str(self.masters["main"])).newest_tid()
        s2.follow("main")
        s1.set_reachable("catalog", True)
        recovery = time.monotonic()
        self.wait_for_alerts(lambda a: not any(alert[1:3] in (("standby2", "main"), ("standby1", "catalog"))
                                               and alert[0] != "DirstorageReplicationSnapshotSlow" for alert in a),
                             recovery_timeout, "the alerts resolving")
        resolved_after = time.monotonic() - recovery
        caught_up = storage.Storage(str(s2.replicas["main"])).last_tid() >= newest
        time.sleep(tail)
        self.end = time.time()
        return {"fired": fired, "fired_after_s": round(fired_after, 1), "resolved_after_s": round(resolved_after, 1),
                "caught_up": caught_up}

    # ------------------------------------------------------------ the dashboard's questions

    def dashboard_answers(self, step=1.0):
        """Every panel query of the dashboard (its variables at "All", Grafana's `.*`) asked over the
        run with /api/v1/query_range: {"start", "end", "step", "panels": {expr: result}}."""
        answers = {"start": self.start, "end": self.end, "step": step, "events": self.events, "panels": {}}
        for _title, expr in dashboard.panel_queries(dashboard.load()):
            answers["panels"][expr] = self.prometheus.query_range(dashboard.with_all(expr), self.start, self.end,
                                                                  step)
        return answers


def copy_logs(work, dest):
    """Keep the programs' logs of a failed run (tests/output/...)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for log in Path(work).rglob("*.log"):
        shutil.copy(log, dest / ("%s-%s" % (log.parent.name, log.name)))
