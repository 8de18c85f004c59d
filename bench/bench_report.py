#!/usr/bin/env python3
"""Benchmark: build one day's report from the store for a day of 1,000,000 log lines.

The day is made from the real corpus log: copies of it (client addresses and
queue IDs rewritten per copy, as bench/make_log.py does) with every phase of
traffic moved into its own slot of one calendar day, so the whole million
lines carry the same date.  The log is ingested once (cached in bench/out/),
then the report is built from the store several times.

Target (issue 4): building the report (the pandas rollup: every table) in
under 5 s.  Rendering HTML, text and the inlined mail HTML is timed too.
The oracle in the same run is the real ``pflogsumm`` on the same log: the
ratio says how much faster the morning report is than summarising the log.

    python bench/bench_report.py [--lines 1000000] [--runs 3] [--no-pflogsumm]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from make_log import B62, IP_RE, QID_RE, default_corpus  # noqa: E402

DAY = date(2026, 11, 20)
TARGET_SECONDS = 5.0


def one_day_log(source: list[bytes], lines: int, year: int = 2026) -> list[bytes]:
    """Copies of ``source`` packed into one day: phase p of copy r goes to slot r*P+p."""
    stamps = [datetime.strptime(f"{year} {line[:15].decode()}", "%Y %b %d %H:%M:%S") for line in source]
    phase, starts, prev = [], [], None
    for ts in stamps:  # a gap of more than an hour starts a new phase
        if prev is None or (ts - prev).total_seconds() > 3600:
            starts.append(ts)
        phase.append(len(starts) - 1)
        prev = ts
    copies = -(-lines // len(source))
    slot = 86400 // (copies * len(starts))
    longest = max((ts - starts[p]).total_seconds() for ts, p in zip(stamps, phase))
    if longest >= slot:
        raise SystemExit(f"{lines} lines do not fit one day: phases last {longest:.0f}s, slots are {slot}s")
    midnight = datetime.combine(DAY, datetime.min.time())
    out: list[bytes] = []
    for rep in range(copies):
        first_octet = b"%d" % (10 + rep % 200)
        prefix = B62[rep // 62 % 62 : rep // 62 % 62 + 1] + B62[rep % 62 : rep % 62 + 1]
        for line, ts, p in zip(source, stamps, phase):
            when = midnight + timedelta(seconds=(rep * len(starts) + p) * slot + (ts - starts[p]).total_seconds())
            stamp = f"{when:%b} {when.day:>2} {when:%H:%M:%S}".encode()
            body = IP_RE.sub(lambda m: first_octet + b"." + m.group(1) + b"." + m.group(2) + b"." + m.group(3), line[15:])
            out.append(stamp + QID_RE.sub(lambda m: prefix + m.group(1), body))
            if len(out) == lines:
                return out
    return out


def prepare(lines: int) -> tuple[Path, Path]:
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    log, db = out / f"oneday-{lines}.log", out / f"oneday-{lines}.db"
    if not log.exists():
        t0 = time.perf_counter()
        data = one_day_log(default_corpus().read_bytes().splitlines(keepends=True), lines)
        tmp = log.with_suffix(".tmp")
        tmp.write_bytes(b"".join(data))
        tmp.replace(log)
        print(f"made {log.name}: {len(data)} lines in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if not db.exists():
        from maillens.classify import Classifier
        from maillens.ingest import ingest

        t0 = time.perf_counter()
        tmp_db = db.with_suffix(".tmp.db")
        for p in (tmp_db, Path(f"{tmp_db}-wal"), Path(f"{tmp_db}-shm")):
            p.unlink(missing_ok=True)
        ref = datetime.combine(DAY + timedelta(days=1), datetime.min.time()).astimezone()
        stats = ingest([str(log)], tmp_db, classify=Classifier(reference_time=ref).classify)
        tmp_db.replace(db)
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp_db}{suffix}").unlink(missing_ok=True)
        print(f"ingested {stats.lines} lines in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return log, db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pflogsumm", action="store_true")
    args = parser.parse_args()
    log, db = prepare(args.lines)

    from maillens import render
    from maillens.rollup import ReportOptions, build_report
    from maillens.store import Store

    builds, renders = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        with Store.open(db, readonly=True) as store:
            data = build_report(store, DAY, options=ReportOptions(host="bench.example.org"))
        t1 = time.perf_counter()
        render.render_html(data), render.render_text(data), render.render_mail_html(data)
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        renders.append(t2 - t1)
    build, rend = statistics.median(builds), statistics.median(renders)
    with Store.open(db, readonly=True) as store:
        lines = store.daily_rollup(DAY)["lines"]
        events = store.connection.execute("SELECT count(*) FROM events WHERE day = ?", (DAY.isoformat(),)).fetchone()[0]
    print(f"day {DAY}: {lines} lines in the store, {events} stored events, {data.value('received')} received, "
          f"{data.value('rejected')} rejected")  # fmt: skip
    print(f"report build (rollup, all tables): {build:.2f}s median of {args.runs}  (target < {TARGET_SECONDS:.0f}s)")
    print(f"render html + text + mail html:    {rend:.2f}s")
    pflogsumm = shutil.which("pflogsumm") or ("/usr/sbin/pflogsumm" if Path("/usr/sbin/pflogsumm").exists() else None)
    if pflogsumm and not args.no_pflogsumm:
        t0 = time.perf_counter()
        subprocess.run([pflogsumm, str(log)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        oracle = time.perf_counter() - t0
        print(f"pflogsumm on the same log:          {oracle:.2f}s  -> report from the store is "
              f"{oracle / (build + rend):.1f}x faster")  # fmt: skip
    if lines < args.lines:
        raise SystemExit(f"only {lines} of {args.lines} lines landed on {DAY}")
    if build >= TARGET_SECONDS:
        raise SystemExit(f"FAIL: report build took {build:.2f}s (target < {TARGET_SECONDS:.0f}s)")


if __name__ == "__main__":
    main()
