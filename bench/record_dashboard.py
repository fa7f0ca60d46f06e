# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record the Grafana dashboard's answers from a running Prometheus, and draw the picture
(docs/grafana/dashboard-answers.json -> bench/plot_dashboard.py -> docs/grafana/dirstorage-replication.png).

The story of tests/integration/test_prometheus.py (testbed/harness/monitoring.py), longer: two live
simulated masters (`main`, `catalog`); `standby1` pulls both with the real cron wrapper
(`ds-replica-cron`, `main` as a hot standby whose stop command sleeps 0.2 s), `standby2` follows
`main` (`ds-replica follow --metrics`) and pulls `catalog` with the cron wrapper; Debian's
node_exporter reads each standby's textfile folder and Debian's Prometheus scrapes both every
second, with the project's alert rules time-compressed by --factor. After --warmup seconds,
standby2's follower is stopped and standby1 loses its path to the `catalog` master, until the stale
and failing alerts fire; both come back, the alerts resolve, --tail seconds more. Then every panel
query is asked with /api/v1/query_range over the whole run.

    .venv/bin/python bench/record_dashboard.py [--factor 0.00833] [--warmup 30] [--tail 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import plot_dashboard  # noqa: E402

from testbed.harness.monitoring import Monitored  # noqa: E402

DEFAULT_ANSWERS = ROOT / "docs" / "grafana" / "dashboard-answers.json"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--factor", type=float, default=1 / 120.0,
                   help="the alert rules' time compression (default: an hour is 30 s)")
    p.add_argument("--warmup", type=float, default=30.0, help="healthy seconds before the outage")
    p.add_argument("--tail", type=float, default=30.0, help="seconds recorded after the alerts resolved")
    p.add_argument("--rate", type=float, default=10.0, help="transactions/s written to the main master")
    p.add_argument("--step", type=float, default=2.0, help="query_range step, seconds")
    p.add_argument("--answers", default=str(DEFAULT_ANSWERS))
    p.add_argument("--out", default=str(plot_dashboard.DEFAULT_OUT))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ds-dashboard-") as tmp:
        with Monitored(Path(tmp), rate=args.rate, factor=args.factor) as m:
            story = m.run_story(warmup=args.warmup, tail=args.tail, outage_timeout=3600 * args.factor * 3,
                                recovery_timeout=120.0)
            answers = m.dashboard_answers(step=args.step)
    with open(args.answers, "w") as f:
        json.dump(answers, f, indent=0)
        f.write("\n")
    print("alerts fired %ss after the outage, resolved %ss after the recovery -> %s"
          % (story["fired_after_s"], story["resolved_after_s"], args.answers))
    plot_dashboard.plot(args.answers, args.out)


if __name__ == "__main__":
    main()
