"""Shared benchmark helpers: run a command, time it, sample its process tree's memory.

Peak memory is the largest sum over the command and all its children (workers
included), sampled every 20 ms from /proc.  The sum is of PSS (proportional set
size: a page shared by n processes counts 1/n in each), so forked workers'
shared pages are not counted twice -- what the machine actually had to give.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int


def _children(pid: int) -> list[int]:
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                for child in fh.read().split():
                    found.extend(_children(int(child)))
    except OSError:
        pass
    return found


def _rss_kb(pid: int) -> int:
    """PSS of one process in KiB (RSS where the kernel has no smaps_rollup)."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def run(cmd: list[str], stdout_path: Path | None = None, check: bool = True, memory: bool = True) -> Run:
    """Run ``cmd`` to completion; wall time and peak RSS of its whole process tree.

    A failed command stops the benchmark (``check``): timing a crash would
    print a ratio that means nothing.
    """
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_kb(p) for p in _children(proc.pid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    if memory:  # reading smaps_rollup costs CPU too: time without it where the time is the point
        sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    if memory:
        sampler.join()
    if stdout_path:
        out.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
        if check:
            raise SystemExit(f"benchmark stopped: {cmd[0]} ... exited {proc.returncode}")
    return Run(seconds, peak / 1024, proc.returncode)


def make_log(lines: int) -> Path:
    """The benchmark log of ``lines`` lines (built once, kept in bench/out)."""
    path = OUT / f"bench-{lines}.log"
    if not path.exists():
        subprocess.run([sys.executable, str(HERE / "make_log.py"), "--lines", str(lines), "--out", str(path)], check=True)
    return path
