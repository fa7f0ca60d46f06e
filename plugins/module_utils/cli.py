# -*- coding: utf-8 -*-
# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`ds-replica`: the command line, with the original replica.py usage.

Exit codes: a pull, serve or clone exits 0, 1 (failed) or 75 (busy, retry
later); `status` and `verify` follow the Nagios convention: 0 OK, 1 WARNING,
2 CRITICAL (bad usage exits 2, as argparse does).

    ds-replica [-v] [-q] [-e SSHCMD] [-d DIR] [user@]MasterHost:MasterDirectory ReplicaDirectory
    ds-replica --stop-command CMD --start-command CMD [--stop-timeout S] MASTER REPLICA   (a hot standby)
    ds-replica serve [--snapshot-timeout S] MasterDirectory
    ds-replica clone [options] [user@]MasterHost:MasterDirectory NewReplicaDirectory
    ds-replica follow [--interval S] [--metrics FILE] [user@]MasterHost:MasterDirectory ReplicaDirectory
    ds-replica promote [--check] [--json] ReplicaDirectory
    ds-replica status [--json] Directory
    ds-replica verify [--json] ReplicaDirectory [[user@]MasterHost:MasterDirectory]
    ds-replica horizon [--json] [--max-age DAYS] [--metrics FILE] MasterDirectory
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import sys
import time
import traceback

from .clone import clone
from .errors import DSError
from .follow import FollowSettings, Stopped, StopSwitch, follow
from .hot import STOP_TIMEOUT, hot_standby
from .info import master_lag, storage_info, verify
from .keep_aside import kept_aside_line, list_kept
from .metrics import horizon_values, write_metrics
from .options import CONNECTION_OPTIONS, PullOptions
from .positions import standby_horizon
from .promote import promote
from .replica import pull
from .reseed import reseed
from .serve import WRITE_TIMEOUT, serve

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: busy, try again later
VERBS = ("serve", "clone", "status", "verify", "pull", "follow", "promote", "kept-aside", "horizon")
OK, WARNING, CRITICAL = 0, 1, 2  # status and verify (Nagios)


class Terminated(BaseException):
    """Raised by SIGTERM/SIGHUP so that every finally: block runs (locks,
    snapshot mode) before the process ends."""


def _on_signal(signum, frame):
    raise Terminated("terminated by signal %d" % signum)


def install_signal_handlers():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def notify_service_manager(state):
    """Tell systemd (a Type=notify unit: $NOTIFY_SOCKET) the service's `state`,
    e.g. "READY=1".  Without a service manager, nothing happens."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode("ascii"), address)
        except OSError:
            pass  # readiness is a courtesy to the service manager, never a reason to stop following


def _stdout(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def _stderr(msg):
    sys.stderr.write(msg.rstrip("\n") + "\n")
    sys.stderr.flush()


CLI_TYPES = {"int": int, "float": float, "str": str, "path": str}


def _add_ssh_options(p):
    """The connection flags, from the table in options.py."""
    g = p.add_argument_group("connection")
    for option in CONNECTION_OPTIONS:
        if not option.flags:
            continue
        kw = dict(dest=option.name, help=option.help)
        if option.type == "bool":
            kw["action"] = "store_true"
        else:
            kw.update(type=CLI_TYPES[option.type], metavar=option.metavar, choices=option.choices)
            default = option.default_for("cli")
            kw["default"] = None if callable(default) else default
        g.add_argument(*option.flags, **kw)


def _common(p):
    p.add_argument("-v", "--verbose", action="store_true", help="say what happens, step by step")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing unless something is wrong")


def _pull_parser():
    p = argparse.ArgumentParser(
        prog="ds-replica",
        usage="ds-replica [-v] [-q] [-e SSHCMD] [-d DIR] [user@]MasterHost:MasterDirectory ReplicaDirectory",
        description="Bring a DirectoryStorage replica up to date with its master, atomically. Other verbs: "
                    "serve, clone, follow, status, verify, promote, horizon (ds-replica VERB --help).")
    _common(p)
    _add_ssh_options(p)
    p.add_argument("-n", "--check", action="store_true", help="ask what would come; change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _add_hot_options(p)
    p.add_argument("master", help="[user@]host:path of the master storage, or a local path")
    p.add_argument("replica", help="the replica storage folder")
    return p


def _add_hot_options(p):
    g = p.add_argument_group("hot standby (a storage process serves the replica; it is stopped only for the apply)")
    g.add_argument("--stop-command", metavar="CMD", help="stops the storage process (run with /bin/sh -c)")
    g.add_argument("--start-command", metavar="CMD", help="starts it again, also after a failure")
    g.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT, metavar="S",
                   help="wait at most S seconds for each command and for misc/lock to be free "
                        "(default %(default)g)")


def _options(args):
    """PullOptions from the parsed flags; a flag not given takes its default
    (a computed one, such as -d, is computed now)."""
    given = {}
    for option in CONNECTION_OPTIONS:
        if option.flags:
            value = getattr(args, option.name)
            default = option.default_for("cli")
            given[option.name] = default() if value is None and callable(default) else value
    return PullOptions(check=getattr(args, "check", False), **given)


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


class Progress(object):
    """A one-line progress display on a terminal; silent elsewhere."""

    def __init__(self, enabled):
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, files, nbytes, total_files=None, total_bytes=None):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and not (total_files and files == total_files):
            return
        self.last = now
        rate = nbytes / max(now - self.t0, 1e-6)
        line = "%d files, %s, %s/s" % (files, _human(nbytes), _human(rate))
        if total_bytes:
            left = max(total_bytes - nbytes, 0) / max(rate, 1.0)
            line = "%d/%d files, %s of %s, %s/s, %ds left" % (
                files, total_files or 0, _human(nbytes), _human(total_bytes), _human(rate), left)
        sys.stderr.write("\r" + line[:120].ljust(79))
        sys.stderr.flush()

    def done(self):
        if self.enabled and self.last:
            sys.stderr.write("\n")


def cmd_pull(argv):
    args = _pull_parser().parse_args(argv)
    log = _stderr if args.verbose else None
    progress = Progress(not args.quiet)
    try:
        hot = hot_standby(args.stop_command, args.start_command, args.stop_timeout, log)
        result = pull(args.master, args.replica, _options(args), log=log, progress=progress, hot=hot)
    finally:
        progress.done()
    if args.json:
        _stdout(json.dumps(result, sort_keys=True))
    if args.verbose:
        _stderr("%d transactions, %d files, %s in %.2fs; master in snapshot mode %.3fs; lag %.1fs%s"
                % (result["transactions"], result["files"], _human(result["bytes"]), result["elapsed_seconds"],
                   result["snapshot_seconds"], result["lag_seconds"],
                   "; storage process down %.3fs" % result["downtime_seconds"] if hot else ""))
    if not args.quiet:
        if args.check:
            _stderr("Would replicate %d transactions (%d files, %s)" % (
                result["transactions"], result["files"], _human(result["bytes"])))
        elif not result["transactions"]:
            _stderr("Replica complete (already up to date)")
        else:
            _stderr("Replica complete")
    return EXIT_OK


def _serve_parser():
    p = argparse.ArgumentParser(prog="ds-replica serve",
                                description="Answer one replication request on stdin/stdout (run by ssh on the "
                                            "master; safe as an authorized_keys forced command).")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-t", "--snapshot-timeout", type=float, default=0.0, metavar="S",
                   help="retry entering snapshot mode for up to S seconds (a request may ask for more)")
    p.add_argument("-s", "--snapshot-interval", type=float, default=5.0, metavar="S", help="pause between tries")
    p.add_argument("--write-timeout", type=float, default=WRITE_TIMEOUT, metavar="S",
                   help="drop a standby that reads nothing of the answer for S seconds (default %(default)g; 0: never)")
    p.add_argument("directory")
    return p


def cmd_serve(argv):
    args = _serve_parser().parse_args(argv)
    log = (lambda m: _stderr("ds-replica serve: " + m)) if args.verbose else None
    stdout = sys.stdout.buffer
    serve(args.directory, sys.stdin.buffer, stdout, log=log, snapshot_timeout=args.snapshot_timeout,
          snapshot_interval=args.snapshot_interval, warn=lambda m: _stderr("ds-replica serve: warning: " + m),
          detach_cleanup=True, write_timeout=args.write_timeout)
    return EXIT_OK


def _clone_parser():
    p = argparse.ArgumentParser(prog="ds-replica clone",
                                description="Make the first copy of a live master (through snapshot mode).")
    _common(p)
    _add_ssh_options(p)
    p.add_argument("--force", action="store_true", help="replace an existing storage at the destination")
    p.add_argument("--delta", action="store_true",
                   help="re-seed a storage of the same identity (or resume an interrupted clone), transferring "
                        "only what is missing or different: in place, or by a new tree when it cannot; "
                        "transactions only it holds are kept aside (list them with 'ds-replica kept-aside')")
    p.add_argument("--tree", action="store_true",
                   help="with --delta: re-seed by a new tree even where in place would do, keeping the whole "
                        "old tree aside")
    p.add_argument("--json", action="store_true")
    p.add_argument("master")
    p.add_argument("replica")
    return p


def cmd_clone(argv):
    args = _clone_parser().parse_args(argv)
    progress = Progress(not args.quiet)
    try:
        if args.delta:
            result = reseed(args.master, args.replica, _options(args), log=_stderr if args.verbose else None,
                            progress=progress, in_place=not args.tree)
        else:
            result = clone(args.master, args.replica, _options(args), force=args.force,
                           log=_stderr if args.verbose else None, progress=progress)
    finally:
        progress.done()
    if args.json:
        _stdout(json.dumps(result, sort_keys=True))
    if not args.quiet and args.delta:
        _print_reseed(result)
    elif not args.quiet:
        _stderr("Clone complete: %d transactions, %d files, %s, newest transaction %s"
                % (result["transactions"], result["files"], _human(result["bytes"]), result["after_tid"]))
    return EXIT_OK


def _follow_parser():
    p = argparse.ArgumentParser(prog="ds-replica follow",
                                description="Keep a replica following its master through one open connection: "
                                            "each new transaction is applied seconds after its commit. Runs until "
                                            "SIGTERM/SIGINT (exit 0) or a refusal that retrying cannot fix (exit 1).")
    _common(p)
    _add_ssh_options(p)
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="how often the master looks for a new transaction (default %(default)g)")
    p.add_argument("--metrics", metavar="FILE",
                   help="node_exporter textfile to write after each increment and at least every minute")
    p.add_argument("--min-apply-interval", type=float, default=60.0, metavar="S",
                   help="with a hot standby's stop/start commands: apply at most once per S seconds "
                        "(default %(default)g)")
    p.add_argument("--json", action="store_true", help="print each increment's result as one JSON line on stdout")
    _add_hot_options(p)
    p.add_argument("master", help="[user@]host:path of the master storage, or a local path")
    p.add_argument("replica", help="the replica storage folder")
    return p


def cmd_follow(argv):
    args = _follow_parser().parse_args(argv)
    stop = StopSwitch()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.ask())
    settings = FollowSettings(interval=args.interval, metrics=args.metrics,
                              min_apply_interval=args.min_apply_interval)
    on_increment = (lambda result: _stdout(json.dumps(result, sort_keys=True))) if args.json else None
    log = _stderr if args.verbose else None
    try:
        # ready: from now on SIGTERM ends the follower at a transaction boundary (the unit is Type=notify);
        # a SIGTERM that arrives while the notice is still being sent is caught below like any other
        notify_service_manager("READY=1")
        follow(args.master, args.replica, _options(args), settings, log=log,
               warn=lambda m: _stderr("ds-replica: " + m), stop=stop, on_increment=on_increment,
               hot=hot_standby(args.stop_command, args.start_command, args.stop_timeout, log))
    except Stopped:
        if not args.quiet:
            _stderr("ds-replica: follow stopped; the replica is at a transaction boundary")
    return EXIT_OK


def _print_reseed(result):
    """clone --delta's summary (its method, and why a new tree), and every
    transaction kept aside, so that the operator sees what the old master
    had that the new one never received."""
    method = result["method"]
    if method == "tree":
        method = "by a new tree (%s)" % result["method_reason"]
    kept = "" if result["kept_files"] is None else ", %d kept" % result["kept_files"]
    _stderr("Re-seed complete, %s: %d files received (%s)%s, %d removed, newest transaction %s"
            % (method, result["files"], _human(result["bytes"]), kept, result["removed_files"], result["after_tid"]))
    if result["kept_aside"]:
        _stderr(kept_aside_line(result))


def _kept_aside_parser():
    p = argparse.ArgumentParser(prog="ds-replica kept-aside",
                                description="List the transactions a re-seed kept aside in a "
                                            "PATH.before-reseed-<UTC time> folder: tid, time, user, description, "
                                            "oids.")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("folder")
    return p


def cmd_kept_aside(argv):
    args = _kept_aside_parser().parse_args(argv)
    kept = list_kept(args.folder)
    lines = ["%s: %d transaction(s)%s" % (kept["path"], len(kept["transactions"]),
                                          ", re-seed not finished (the next one finishes it)" if kept["pending"]
                                          else "")]
    lines += ["%s %s user=%r description=%r oids=%s" % (t["tid"], t["time"], t["user"], t["description"],
                                                        ",".join(t["oids"])) for t in kept["transactions"]]
    _print(kept, args.json, lines)
    return EXIT_OK


def _promote_parser():
    p = argparse.ArgumentParser(prog="ds-replica promote",
                                description="Make a standby the master: check it as verify does, then mark it "
                                            "promoted (config/promoted); every later pull into it refuses.")
    _common(p)
    p.add_argument("-n", "--check", action="store_true", help="check it and say what would be done; change nothing")
    p.add_argument("--json", action="store_true")
    p.add_argument("replica")
    return p


def cmd_promote(argv):
    args = _promote_parser().parse_args(argv)
    result = promote(args.replica, check=args.check, log=_stderr if args.verbose else None)
    if args.json:
        _stdout(json.dumps(result, sort_keys=True))
    if not args.quiet:
        _stderr("%s %s (newest transaction %s%s)" % (
            "Would promote" if args.check else "Promoted" if result["changed"] else "Already promoted:",
            result["path"], result["tid"], ", at %s" % result["promoted_at"] if result["promoted_at"] else ""))
    return EXIT_OK


def _print(result, as_json, lines):
    if as_json:
        _stdout(json.dumps(result, sort_keys=True, indent=2))
    else:
        for line in lines:
            _stdout(line)


def _status_parser():
    p = argparse.ArgumentParser(prog="ds-replica status",
                                description="Summarise a storage (and, given its master, how far behind it is). "
                                            "Exit 0 OK, 1 WARNING, 2 CRITICAL (Nagios).")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--master", metavar="[USER@]HOST:PATH",
                   help="the replica's master: report the lag and what is waiting (asks the master; no lock taken)")
    p.add_argument("--warn-age", type=float, metavar="S",
                   help="WARNING when the replica lags its master (or, without --master, when the newest "
                        "transaction is older) by more than S seconds")
    p.add_argument("--crit-age", type=float, metavar="S", help="CRITICAL likewise")
    _add_ssh_options(p)
    p.add_argument("directory")
    return p


def _status_state(info, args):
    """(exit code, state word) from the age thresholds and a pending increment."""
    age = info["master"]["lag_seconds"] if args.master else info["age_seconds"]
    if age is not None and args.crit_age is not None and age > args.crit_age:
        return CRITICAL, "CRITICAL"
    if age is not None and args.warn_age is not None and age > args.warn_age:
        return WARNING, "WARNING"
    if info["journal_pending_replica"]:
        return WARNING, "WARNING"
    return OK, "OK"


def _status_lines(info, state):
    holders = []
    for name in ("lock", "sublock"):
        if info[name]["held"]:
            holders.append("misc/%s held%s" % (name, " by pid %s" % info[name]["pid"] if info[name]["pid"] else ""))
    ago = ", %.0fs ago" % info["age_seconds"] if info["age_seconds"] is not None else ""
    pending = ", replica increment pending" if info["journal_pending_replica"] else ""
    lines = [
        "%s: %s storage %s (%s, %s)" % (state, info["classname"], info["path"], info["format"], info["identity"]),
        "newest transaction: %s (%s)%s" % (info["last_tid"], info["last_time"] or "empty", ago),
        "packed up to: %s" % (info["packed_tid"] if info["packed_time"] else "never"),
        "snapshot: %s" % (info["snapshot_code"] or "no"),
        "locks: %s" % (", ".join(holders) or "free"),
        "journal backlog: %d transaction(s)%s" % (info["journal_backlog"], pending),
        "last replication: %s" % (info["last_replication"] or "never"),
    ]
    follower = info.get("follower")
    if follower:
        lines.append(_follower_line(follower))
    if info.get("promoted"):
        lines.append("promoted to master at %s (newest transaction then %s): pulls into it refuse"
                     % (info["promoted"]["promoted_at"], info["promoted"]["tid"]))
    if info.get("upstream"):
        lines.append("upstream: %s" % info["upstream"])
    if "master" in info:
        lag = info["master"]
        lines.append("master: newest transaction %s (%s); lag %.1fs, %d transaction(s), %d bytes waiting"
                     % (lag["master_tid"], lag["master_time"], lag["lag_seconds"], lag["waiting_transactions"],
                        lag["waiting_bytes"]))
    return lines


def _follower_line(follower):
    """The follower's state (misc/ds-replica-follow.json) in one line; a hot
    standby's: its service's downtime at the last apply, and what waits."""
    hot = ""
    if follower.get("downtime_seconds") is not None:
        hot = "; service down %.3fs at the last apply" % follower["downtime_seconds"]
    if follower.get("spooled_increments"):
        hot += ", %d increment(s) received and waiting" % follower["spooled_increments"]
    return "follower: %s%s, replica at %s, recorded %.0fs ago%s%s" % (
        follower.get("state"), " (pid %s)" % follower.get("pid") if follower.get("running") else " (not running)",
        follower.get("tid"), time.time() - (follower.get("updated") or 0), hot,
        "; " + follower["error"] if follower.get("error") else "")


def cmd_status(argv):
    args = _status_parser().parse_args(argv)
    try:
        info = storage_info(args.directory)
        if args.master:
            info["master"] = master_lag(args.directory, args.master, _options(args))
    except DSError as e:
        _stdout("CRITICAL: %s" % e)
        return CRITICAL
    code, state = _status_state(info, args)
    _print(dict(info, state=state), args.json, _status_lines(info, state))
    return code


def _verify_parser():
    p = argparse.ArgumentParser(prog="ds-replica verify",
                                description="Check a storage against its own checksums, and a replica against its "
                                            "master. Exit 0 OK, 2 CRITICAL.")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    _add_ssh_options(p)
    p.add_argument("directory")
    p.add_argument("master", nargs="?", help="[user@]host:path of the master, or a local path")
    return p


def cmd_verify(argv):
    args = _verify_parser().parse_args(argv)
    try:
        result = verify(args.directory, args.master, _options(args))
    except DSError as e:
        _stdout("CRITICAL: %s" % e)
        return CRITICAL
    state = "OK" if result["ok"] else "CRITICAL"
    lines = ["%s: %s: %d transactions and %d files checked%s" % (
        state, result["path"], result["checked_transactions"], result["checked_files"],
        ", %d transactions match the master" % result["master_checked_transactions"] if args.master else "")]
    lines += ["  " + pr for pr in result["problems"][:50]]
    _print(dict(result, state=state), args.json, lines)
    return OK if result["ok"] else CRITICAL


def _horizon_parser():
    p = argparse.ArgumentParser(
        prog="ds-replica horizon",
        description="Where the standbys of this master stand, as its serve recorded them (misc/standbys): the "
                    "oldest transaction a standby still holds (packing past it strands that standby), and every "
                    "standby with its position and when it was last heard from.")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing (with --metrics, from cron)")
    p.add_argument("--max-age", type=float, metavar="DAYS",
                   help="leave out of the horizon, and flag as silent, standbys not heard from within DAYS days")
    p.add_argument("--metrics", metavar="FILE",
                   help="also write the master's metrics to FILE (node_exporter textfile, e.g. "
                        "/var/lib/prometheus/node-exporter/dirstorage_master_main.prom)")
    p.add_argument("--name", metavar="STORAGE", help="the storage label of the metrics (default: the folder's name)")
    p.add_argument("directory", help="the master storage")
    return p


def _ago(seconds):
    if seconds < 120:
        return "%.0fs ago" % seconds
    if seconds < 7200:
        return "%.0f min ago" % (seconds / 60)
    if seconds < 2 * 86400:
        return "%.1f h ago" % (seconds / 3600)
    return "%.1f days ago" % (seconds / 86400)


def _utc(epoch):
    if epoch is None:
        return "empty"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _horizon_lines(report):
    h, days = report["horizon"], report["max_age_days"]
    within = " seen within %g days" % days if days is not None else ""
    if h is not None:
        age = " (%s, %s)" % (_utc(h["time"]), _ago(h["age_seconds"])) if h["time"] is not None else ""
        lines = ["horizon: %s%s, held by standby %s" % (h["tid"], age, h["standby"])]
    elif report["standbys"]:
        lines = ["horizon: none (no standby%s)" % within]
    else:
        lines = ["horizon: none (no standby recorded in misc/standbys)"]
    for s in report["standbys"]:
        silent = ": SILENT, not heard from within %g days" % days if s["silent"] else ""
        lines.append("  %s: holds %s (%s), %s, last seen %s%s" % (s["name"], s["tid"], _utc(s["tid_time"]), s["kind"],
                                                                  _ago(s["seen_age_seconds"]), silent))
    return lines


def cmd_horizon(argv):
    args = _horizon_parser().parse_args(argv)
    now = time.time()
    report = standby_horizon(args.directory, args.max_age, now)
    if args.metrics:
        name = args.name or os.path.basename(report["path"].rstrip("/"))
        write_metrics(args.metrics, name, horizon_values(report, now))
    if not args.quiet:
        _print(report, args.json, _horizon_lines(report))
    return EXIT_OK


COMMANDS = {"serve": cmd_serve, "clone": cmd_clone, "status": cmd_status, "verify": cmd_verify, "pull": cmd_pull,
            "follow": cmd_follow,
            "promote": cmd_promote, "kept-aside": cmd_kept_aside, "horizon": cmd_horizon}


def parsers():
    """{command: its argparse parser}, in the order of VERBS ("pull" is also what runs without a verb);
    read by docs/gen_cli_reference.py to write the ds-replica reference (docs/cli.md)."""
    made = {"serve": _serve_parser, "clone": _clone_parser, "status": _status_parser, "verify": _verify_parser,
            "pull": _pull_parser, "follow": _follow_parser, "promote": _promote_parser,
            "kept-aside": _kept_aside_parser, "horizon": _horizon_parser}
    return {verb: made[verb]() for verb in VERBS}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    install_signal_handlers()
    verb = argv[0] if argv and argv[0] in VERBS else None
    prefix = "ds-replica serve: " if verb == "serve" else "ds-replica: "
    command = COMMANDS[verb] if verb else cmd_pull
    try:
        return command(argv[1:] if verb else argv)
    except DSError as e:
        if verbose:
            traceback.print_exc()
        _stderr(prefix + str(e))
        return EXIT_TEMPFAIL if e.retryable else EXIT_FAIL
    except Terminated as e:
        _stderr(prefix + "%s; the replica is unchanged or complete (never half-written)" % e)
        return 143
    except KeyboardInterrupt:
        _stderr(prefix + "interrupted; the replica is unchanged or complete (never half-written)")
        return 130
    except OSError as e:
        if verbose:
            traceback.print_exc()
        _stderr(prefix + "%s%s" % (e.strerror or e, " (%s)" % e.filename if e.filename else ""))
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
