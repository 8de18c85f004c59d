#!/usr/bin/env python3
"""``maillens parse --stats`` against pflogsumm on the same log, in the same run.

    python bench/bench_parse.py [--sizes 1000000 2000000 4000000] [--repeat 3]

For each size: the best of ``--repeat`` wall times for each tool (machines
here are noisy; the best run is the least disturbed one), lines/s, the ratio
(pflogsumm time / maillens time: above 1 means maillens is faster), and the
peak RSS of each tool's whole process tree.  Results also go to
bench/out/parse.json.  The issue's targets: ratio >= 2 at 2M lines, peak RSS
< 200 MB and flat from 1M to 4M lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from common import OUT, make_log, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="maillens --workers (default: one per core)")
    args = parser.parse_args()
    pflogsumm = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    maillens = [sys.executable, "-m", "maillens", "parse", "--stats"]
    if args.workers is not None:
        maillens += ["--workers", str(args.workers)]
    results = []
    print(f"{'lines':>9} {'maillens s':>10} {'lines/s':>10} {'RSS MB':>7} {'pflogsumm s':>11} {'lines/s':>10} {'RSS MB':>7} {'ratio':>6}")
    for size in args.sizes:
        log = make_log(size)
        ours, theirs = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            ours.append(run(maillens + [str(log)]))
            theirs.append(run([pflogsumm, str(log)]))
        best_ours = min(ours, key=lambda r: r.seconds)
        best_theirs = min(theirs, key=lambda r: r.seconds)
        row = {
            "lines": size,
            "maillens_seconds": round(best_ours.seconds, 3),
            "maillens_lines_per_s": round(size / best_ours.seconds),
            "maillens_peak_rss_mb": round(max(r.peak_rss_mb for r in ours), 1),
            "pflogsumm_seconds": round(best_theirs.seconds, 3),
            "pflogsumm_lines_per_s": round(size / best_theirs.seconds),
            "pflogsumm_peak_rss_mb": round(max(r.peak_rss_mb for r in theirs), 1),
            "ratio": round(best_theirs.seconds / best_ours.seconds, 2),
        }
        results.append(row)
        print(f"{size:>9} {row['maillens_seconds']:>10} {row['maillens_lines_per_s']:>10} {row['maillens_peak_rss_mb']:>7}"
              f" {row['pflogsumm_seconds']:>11} {row['pflogsumm_lines_per_s']:>10} {row['pflogsumm_peak_rss_mb']:>7}"
              f" {row['ratio']:>6}")
    OUT.mkdir(exist_ok=True)
    (OUT / "parse.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
