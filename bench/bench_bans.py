#!/usr/bin/env python3
"""``maillens bans`` (all default jails) against ``fail2ban-regex`` on the same log, same run.

    python bench/bench_bans.py [--sizes 2000000] [--repeat 3]

maillens evaluates every built-in jail (SASL, RBL, HELO forgery, pregreet,
too many errors, relay probing, dictionary attacks) with fail2ban's counting
and writes the json block list; fail2ban-regex matches one filter,
``postfix[mode=aggressive]``, and counts nothing.  For each size: the best of
``--repeat`` interleaved wall times of each, lines/s, the ratio
(fail2ban-regex time / maillens time; the issue's target is >= 5 at 2M
lines) and peak RSS of each process tree.  Results also go to
bench/out/bans.json.  CPU seconds (user + system of each whole process
tree) are reported too: on a shared machine wall times swing with other
load, the work done does not.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
from typing import Any

from common import OUT, make_log, run


def timed(cmd: list[str], out: Any = None) -> tuple[Any, float]:
    """``common.run`` plus the CPU seconds of the command's whole (waited-for) process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run(cmd, out)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    f2b = shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"
    results = []
    print(f"{'lines':>9} {'maillens s':>10} {'lines/s':>10} {'RSS MB':>7} {'f2b-regex s':>11} {'lines/s':>10} {'RSS MB':>7} {'ratio':>6}")
    for size in args.sizes:
        log = make_log(size)
        maillens = [sys.executable, "-m", "maillens", "bans", "--format", "json", str(log)]
        oracle = [f2b, str(log), "postfix[mode=aggressive]"]
        ours, theirs, our_cpu, their_cpu = [], [], [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            r, c = timed(maillens, OUT / "bans-list.json")
            ours.append(r)
            our_cpu.append(c)
            r, c = timed(oracle)
            theirs.append(r)
            their_cpu.append(c)
        if any(r.returncode != 0 for r in ours + theirs):
            raise SystemExit("a run failed; see above")
        best_ours = min(ours, key=lambda r: r.seconds)
        best_theirs = min(theirs, key=lambda r: r.seconds)
        banned = len(json.loads((OUT / "bans-list.json").read_text()))
        row = {
            "lines": size,
            "maillens_seconds": round(best_ours.seconds, 3),
            "maillens_lines_per_s": round(size / best_ours.seconds),
            "maillens_peak_rss_mb": round(max(r.peak_rss_mb for r in ours), 1),
            "maillens_banned": banned,
            "fail2ban_regex_seconds": round(best_theirs.seconds, 3),
            "fail2ban_regex_lines_per_s": round(size / best_theirs.seconds),
            "fail2ban_regex_peak_rss_mb": round(max(r.peak_rss_mb for r in theirs), 1),
            "ratio": round(best_theirs.seconds / best_ours.seconds, 2),
            "maillens_cpu_seconds": round(min(our_cpu), 2),
            "fail2ban_regex_cpu_seconds": round(min(their_cpu), 2),
            "cpu_ratio": round(min(their_cpu) / min(our_cpu), 2),
            "all_maillens_seconds": [round(r.seconds, 2) for r in ours],
            "all_fail2ban_regex_seconds": [round(r.seconds, 2) for r in theirs],
        }
        results.append(row)
        print(f"{size:>9} {row['maillens_seconds']:>10} {row['maillens_lines_per_s']:>10} {row['maillens_peak_rss_mb']:>7}"
              f" {row['fail2ban_regex_seconds']:>11} {row['fail2ban_regex_lines_per_s']:>10}"
              f" {row['fail2ban_regex_peak_rss_mb']:>7} {row['ratio']:>6}   ({banned} banned; CPU s "
              f"{row['maillens_cpu_seconds']} vs {row['fail2ban_regex_cpu_seconds']}: {row['cpu_ratio']}x)")
    OUT.mkdir(exist_ok=True)
    (OUT / "bans.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
