# Copyright: dirstorage.replication contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plot pull time against storage size (ds-replica and rsync) from results.json."""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "docs", "benchmark-pull-vs-n.png")


def plot(results_path, out=DEFAULT_OUT):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with open(results_path) as f:
        res = json.load(f)
    inc = res["scenarios"]["increment"]
    ns = sorted(inc, key=int)
    x = [int(n) for n in ns]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    series = [("ds_replica", "ds-replica pull, new ssh connection", "o-"),
              ("rsync", "rsync -a, new ssh connection", "s--"),
              ("ds_replica_cm", "ds-replica pull, persistent ssh connection", "o:"),
              ("rsync_cm", "rsync -a, persistent ssh connection", "s:")]
    for key, label, style in series:
        if not all(key + "_median_s" in inc[n] for n in ns):
            continue
        med = [inc[n][key + "_median_s"] for n in ns]
        lo = [min(inc[n][key + "_s"]) for n in ns]
        hi = [max(inc[n][key + "_s"]) for n in ns]
        err = [[m - a for m, a in zip(med, lo, strict=True)], [b - m for m, b in zip(med, hi, strict=True)]]
        ax.errorbar(x, med, yerr=err, fmt=style, capsize=3, label=label)
        for xi, m in zip(x, med, strict=True):
            ax.annotate("%.2fs" % m, (xi, m), textcoords="offset points", xytext=(6, 4), fontsize=8)
    k = inc[ns[0]]["k"]
    files = inc[ns[0]]["increment_files"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: "%g" % v)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: "{:,.0f}".format(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(x)
    ax.set_xlabel("object revision files in the storage (N)")
    ax.set_ylabel("wall time of one pull, seconds (median, min-max)")
    ax.set_title("Pull of %d new transactions (~%d files) over ssh on loopback" % (k, files), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out)
    return out


if __name__ == "__main__":
    print(plot(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results", "results.json")))
