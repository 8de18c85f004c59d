#!/usr/bin/env python3
"""Benchmark ``maillens tail -F``: append-to-print latency and idle CPU, against GNU ``tail -F``.

A writer appends real corpus lines (one ``write`` per line, as rsyslog does) at a
fixed rate; the follower's stdout is read in another thread and each line's
arrival is matched to the moment it was written.  GNU coreutils ``tail -F`` (the
oracle: what ``maillens tail`` replaces) runs the same schedule in the same run.

    python bench/bench_tail.py                    # 10,000 lines at 2,000 lines/s, idle 20 s
    python bench/bench_tail.py --lines 2000 --idle 5

Modes measured: piped JSON (inotify), piped JSON with inotify disabled
(adaptive ``os.stat`` polling), the rich terminal view on a pseudo-terminal,
and ``tail -F``.  Targets: p99 < 100 ms, idle CPU < 1 %.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAILLENS = [sys.executable, "-c", "from maillens.cli.main import cli; cli()"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def corpus_lines() -> list[str]:
    shared = ROOT.parent / "shared" / "corpus" / "real-postfix-dev" / "maillog"
    if shared.exists():
        return shared.read_text().splitlines()
    with tarfile.open(ROOT / "tests" / "corpus" / "real-postfix-dev.tar.xz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/maillog"))
        fh = tar.extractfile(member)
        assert fh is not None
        return fh.read().decode().splitlines()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


class Reader(threading.Thread):
    """Reads a follower's output, noting when each numbered line arrives."""

    def __init__(self, stream, pattern: re.Pattern[bytes] | None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.stream = stream
        self.pattern = pattern
        self.arrivals: list[tuple[float, int | None]] = []

    def run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.stream, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if self.pattern is None:
                    self.arrivals.append((now, None))
                elif m := self.pattern.search(line):
                    self.arrivals.append((now, int(m.group(1))))


def run_case(name: str, argv: list[str], lines: list[str], rate: float, idle: float, *,
             env: dict[str, str] | None = None, terminal: bool = False,
             pattern: re.Pattern[bytes] | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    log = tmp / "mail.log"
    log.touch()
    master = None
    if terminal:
        master, slave = pty.openpty()
        os.set_blocking(master, True)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
        clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        proc = subprocess.Popen([*argv, str(log)], stdout=slave, stderr=subprocess.DEVNULL, stdin=slave,
                                env={**clean, "TERM": "xterm-256color", **(env or {})}, start_new_session=True)
        os.close(slave)
        reader = Reader(master, pattern)
    else:
        proc = subprocess.Popen([*argv, str(log)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        reader = Reader(proc.stdout.fileno(), pattern)
    reader.start()
    try:
        fh = open(log, "a", buffering=1)
        # warm-up: the first line shows the follower is running
        deadline = time.monotonic() + 30
        warm = 0
        while not reader.arrivals and time.monotonic() < deadline:
            fh.write(lines[0] + "\n")  # until the follower, started with -n 0, shows one
            warm += 1
            time.sleep(0.2)
        if not reader.arrivals:
            raise RuntimeError(f"{name}: the follower printed nothing")
        time.sleep(0.5)
        skip = len(reader.arrivals)

        # idle CPU first, while nothing is written
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        idle_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)

        # the stream: line i (1-based in the file) is due at t0 + (i - first)/rate
        written: dict[int, float] = {}
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        first = warm + 1
        for i, line in enumerate(lines[1:], start=first):
            due = t0 + (i - first) / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            fh.write(line + "\n")  # line buffered: one write(2) per line
            written[i] = time.monotonic()
        send_time = time.monotonic() - t0
        deadline = time.monotonic() + 30
        while len(reader.arrivals) - skip < len(lines) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        fh.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if master is not None:
            os.close(master)
        shutil.rmtree(tmp, ignore_errors=True)

    arrivals = reader.arrivals[skip:]
    if pattern is None:  # GNU tail: lines come in order, match by position
        numbered = [(t, i) for (t, _), i in zip(arrivals, range(first, first + len(lines) - 1))]
    else:
        numbered = [(t, n) for t, n in arrivals if n is not None]
    lat = sorted((t - written[n]) * 1000 for t, n in numbered if n in written)
    seen = [n for _, n in numbered]
    return {
        "case": name,
        "lines": len(lines) - 1,
        "received": len(lat),
        "in_order_once": seen == sorted(set(seen)) and len(seen) == len(lines) - 1,
        "rate_achieved": (len(lines) - 1) / send_time,
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] if lat else None,
        "max_ms": lat[-1] if lat else None,
        "idle_cpu_pct": idle_cpu * 100,
        "busy_cpu_pct": busy_cpu * 100,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=2000.0, help="lines per second")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args()

    base = corpus_lines()
    lines = (base * (args.lines // len(base) + 2))[: args.lines + 1]
    json_lineno = re.compile(rb'"lineno":(\d+)')
    cases = [
        ("maillens tail -F --json (inotify)", [*MAILLENS, "tail", "-F", "-n", "0", "--json"], {}, False, json_lineno),
        ("maillens tail -F --json (polling)", [*MAILLENS, "tail", "-F", "-n", "0", "--json"],
         {"MAILLENS_TAIL_POLL": "1"}, False, json_lineno),
        ("maillens tail -F (rich, pty)", [*MAILLENS, "tail", "-F", "-n", "0", "--source"], {}, True,
         re.compile(rb"mail\.log:(\d+) ")),
    ]
    gnu_tail = shutil.which("tail")
    if gnu_tail:
        cases.append(("GNU tail -F (oracle)", [gnu_tail, "-F", "-n", "0"], {}, False, None))
    results = [run_case(name, argv, lines, args.rate, args.idle, env=env, terminal=term, pattern=pat)
               for name, argv, env, term, pat in cases]

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    oracle = next((r for r in results if r["case"].startswith("GNU")), None)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.lines} lines at {args.rate:.0f} lines/s, idle CPU over {args.idle:.0f} s "
          f"({os.cpu_count()} cores, load average {load} at the end: other work skews the tail of p99)\n")
    head = f"{'case':36} {'recv':>6} {'once':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'idle CPU':>9} {'busy CPU':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['case']:36} {r['received']:>6} {str(r['in_order_once']):>5} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['max_ms']:8.2f} {r['idle_cpu_pct']:8.3f}% {r['busy_cpu_pct']:8.1f}%")
    if oracle:
        print()
        for r in results:
            if r is not oracle:
                print(f"{r['case']}: p50 {r['p50_ms'] / oracle['p50_ms']:.1f}x, p99 {r['p99_ms'] / oracle['p99_ms']:.1f}x "
                      f"GNU tail's; busy CPU {r['busy_cpu_pct'] / max(oracle['busy_cpu_pct'], 0.01):.0f}x")
    main_case = results[0]
    ok = main_case["p99_ms"] < 100 and all(r["idle_cpu_pct"] < 1 for r in results if "maillens" in r["case"])
    print(f"\ntargets (p99 < 100 ms, idle CPU < 1 %): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
