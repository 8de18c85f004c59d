#!/usr/bin/env python3
"""``maillens ingest`` end to end (parse, track, store) against pflogsumm, same file, same run.

    python bench/bench_ingest.py [--sizes 1000000 2000000] [--repeat 1] [--incremental]

For each size: wall time of ``maillens ingest`` into a fresh store and of
``pflogsumm`` on the same log (interleaved, best of ``--repeat``), lines/s,
the ratio (pflogsumm time / maillens time: above 1 means maillens is
faster; the issue's target is >= 1.5 at 2M lines) and the peak RSS of each
(flat in log size is the target: compare the sizes).

``--incremental``: a store already holding 30 days (the benchmark log has one
corpus copy per day), then 50,000 new lines appended to the log and one more
``maillens ingest`` timed, as cron would run it (target: under 1 s).
Results also go to bench/out/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import OUT, make_log, run

MAILLENS = [sys.executable, "-c", "from maillens.cli.main import cli; cli()"]
LINES_PER_DAY = 31207  # one corpus copy per day in make_log's output


def full_runs(sizes: list[int], repeat: int) -> list[dict[str, float]]:
    pflogsumm = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    rows = []
    print(f"{'lines':>9} {'ingest s':>9} {'lines/s':>9} {'RSS MB':>7} {'pflogsumm s':>11} {'lines/s':>9} "
          f"{'RSS MB':>7} {'ratio':>6}")
    for size in sizes:
        log = make_log(size)
        ours, theirs = [], []
        for _ in range(repeat):
            db = OUT / f"ingest-{size}.db"
            for p in OUT.glob(f"ingest-{size}.db*"):
                p.unlink()
            ours.append(run(MAILLENS + ["ingest", "--db", str(db), str(log)]))
            theirs.append(run([pflogsumm, str(log)]))
        bo = min(ours, key=lambda r: r.seconds)
        bt = min(theirs, key=lambda r: r.seconds)
        row = {
            "lines": size, "ingest_seconds": round(bo.seconds, 2), "ingest_lines_per_s": round(size / bo.seconds),
            "ingest_peak_rss_mb": round(max(r.peak_rss_mb for r in ours), 1),
            "pflogsumm_seconds": round(bt.seconds, 2), "pflogsumm_lines_per_s": round(size / bt.seconds),
            "pflogsumm_peak_rss_mb": round(max(r.peak_rss_mb for r in theirs), 1),
            "ratio": round(bt.seconds / bo.seconds, 2),
        }  # fmt: skip
        rows.append(row)
        print(f"{size:>9} {row['ingest_seconds']:>9} {row['ingest_lines_per_s']:>9} {row['ingest_peak_rss_mb']:>7} "
              f"{row['pflogsumm_seconds']:>11} {row['pflogsumm_lines_per_s']:>9} {row['pflogsumm_peak_rss_mb']:>7} "
              f"{row['ratio']:>6}")
    return rows


def incremental(days: int = 30, new_lines: int = 50_000) -> dict[str, float]:
    source = make_log(1_000_000)  # 32 corpus days
    with source.open("rb") as fh:
        all_lines = fh.readlines()
    base, extra = all_lines[: days * LINES_PER_DAY], all_lines[days * LINES_PER_DAY:][:new_lines]
    work = OUT / "incremental"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log, db = work / "mail.log", work / "m.db"
    log.write_bytes(b"".join(base))
    first = run(MAILLENS + ["ingest", "--db", str(db), str(log)])
    with log.open("ab") as fh:
        fh.write(b"".join(extra))
    t0 = time.perf_counter()
    second = run(MAILLENS + ["ingest", "--db", str(db), str(log)])
    wall = time.perf_counter() - t0
    row = {"store_days": days, "store_lines": len(base), "first_ingest_seconds": round(first.seconds, 2),
           "new_lines": len(extra), "incremental_seconds": round(wall, 3),
           "incremental_peak_rss_mb": round(second.peak_rss_mb, 1)}
    print(f"store of {days} days ({len(base)} lines, built in {row['first_ingest_seconds']} s): "
          f"{len(extra)} new lines ingested in {row['incremental_seconds']} s (peak RSS {row['incremental_peak_rss_mb']} MB)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--incremental", action="store_true", help="also time a 50,000-line run on a 30-day store")
    parser.add_argument("--no-full", action="store_true", help="skip the full-log runs")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    result: dict[str, object] = {}
    if not args.no_full:
        result["full"] = full_runs(args.sizes, args.repeat)
    if args.incremental:
        result["incremental"] = incremental()
    (OUT / "ingest.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
