"""Ingest's per-line work on blocks of whole lines, in worker processes where that pays.

Classifying a line and applying pflogsumm's counting rules to it is most of
what ``maillens ingest`` costs, and neither needs the lines before it -- with
three exceptions, handled so that the result equals one straight read:

* **Per-message counting state** (a message's size and origin, used by later
  lines of the same message): ``BlockCounter`` counts everything additive in
  the block and *records* those calls in line order; the parent replays them.
* **Tracking**: each event the tracker needs travels as a small tuple
  (``tracker.compact``: pickling ``Event`` objects cost more than classifying
  them); the parent feeds them to its one tracker in line order, interleaved
  with the recorded counter calls exactly as a straight read would make them.
* **The year of traditional time stamps** depends on the lines before
  (December → January).  The parent predicts each block's starting year state
  from the first and last line of every earlier block (``YearSeeds``); a
  worker reports its block's real end state, and when a prediction turns out
  wrong the parent classifies that block again itself, from the right state.
  So the years are the straight read's by construction, whatever the log.

A block's result is a plain tuple (see ``BlockWorker.run``); only small
things cross the process boundary: counter deltas, the compact tuples, and
the rows of the ``events`` table.
"""

from __future__ import annotations

import marshal
import os
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator

from maillens.counting import BlockCounter
from maillens.envelope import YearInference, parse_envelope
from maillens.store import STORED_EVENT_KINDS
from maillens.tracker import TRACKED_KINDS, compact

#: A block's result: (lines, counts, deferred, addr, details, ops, event rows, year state at its end).
BlockResult = tuple[int, dict[Any, int], set[Any], dict[Any, list[float]], dict[Any, int], list[tuple[Any, ...]],
                    list[tuple[Any, ...]], tuple[Any, Any]]
#: Where a block's year inference starts: (reference time, year, last time stamp).
Seed = tuple[datetime | None, int | None, datetime | None]


def event_row(ev: Any, day: str) -> tuple[Any, ...]:
    """One ``events`` row (``store.EVENT_COLUMNS`` order)."""
    return event_row_at(ev, ev.ts.timestamp(), day)


def event_row_at(ev: Any, ts: float, day: str) -> tuple[Any, ...]:
    """``event_row`` with the time already in epoch seconds (``ingestscan``)."""
    d = ev.data
    return (
        ts, day, ev.kind, ev.program, ev.pid, ev.queue_id, d.get("client_ip"),
        d.get("client_name"), d.get("stage"), d.get("code"), d.get("dsn"), d.get("restriction"),
        d.get("rbl"), d.get("sender"), d.get("recipient"), d.get("helo"), d.get("sasl_method"),
        d.get("sasl_username"), d.get("spf_result"), d.get("reason"), ev.raw,
    )  # fmt: skip


def split_block(data: bytes) -> list[str]:
    """Decode (bad bytes replaced) and split; a final newline ends the last line, it adds none."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


class BlockWorker:
    """Classifies and counts blocks of lines; keeps nothing between blocks but caches."""

    def __init__(self, classify: Callable[..., Any], years: YearInference | None = None) -> None:
        self.classify = classify
        self.years = years  # the classifier's, when it is ours (seeded per block)
        self.ops: list[tuple[Any, ...]] = []
        self.counter = BlockCounter(self.ops)

    def take_line(self, line: str, source: str, lineno: int, add_op: Callable[[Any], None],
             add_row: Callable[[Any], None]) -> None:
        """One line: classified, counted, its tracker tuple and ``events`` row handed over."""
        ev = self.classify(line, source, lineno)
        self.counter.feed(ev)
        kind = ev.kind
        if kind in TRACKED_KINDS:
            t = compact(ev)
            if t is not None:
                add_op(t)
            if kind in STORED_EVENT_KINDS and ev.ts is not None:
                add_row(event_row(ev, t[2] if t is not None else ev.ts.date().isoformat()))
        elif kind in STORED_EVENT_KINDS and ev.ts is not None:
            add_row(event_row(ev, ev.ts.date().isoformat()))

    def run(self, data: bytes, source: str, first_lineno: int, seed: Seed | None = None) -> BlockResult:
        years = self.years
        if seed is not None and years is not None:
            years.reset(seed[0])
            years._year, years._last = seed[1], seed[2]
        ops: list[tuple[Any, ...]] = []
        self.counter.ops = self.ops = ops
        rows: list[tuple[Any, ...]] = []
        add_op, add_row, take = ops.append, rows.append, self.take_line
        lineno = first_lineno - 1
        lines = split_block(data)
        for line in lines:
            lineno += 1
            take(line, source, lineno, add_op, add_row)
        counts, deferred, addr, details = self.counter.drain()
        end = (years._year, years._last) if years is not None else (None, None)
        return len(lines), counts, deferred, addr, details, ops, rows, end


class YearSeeds:
    """Predicts where each block's year inference starts, from its predecessors' first and last lines."""

    def __init__(self, reference: datetime | None) -> None:
        self.reference = reference
        self.years = YearInference(reference)

    def next(self, data: bytes) -> Seed:
        y = self.years
        seed = (self.reference, y._year, y._last)
        nl = data.find(b"\n")
        first = data[:nl] if nl >= 0 else data
        body = data[:-1] if data.endswith(b"\n") else data
        last = body[body.rfind(b"\n") + 1:]
        for raw in (first, last):
            parse_envelope(raw.decode("utf-8", "replace").rstrip("\r"), y)
        return seed


# -- worker processes -------------------------------------------------------------------
_WORKER: BlockWorker | None = None


def _default_worker() -> BlockWorker:
    global _WORKER
    if _WORKER is None:
        from maillens.ingestscan import IngestScanner

        _WORKER = IngestScanner()
    return _WORKER


def _init_worker(parent: int, inherited: tuple[int, ...]) -> None:
    """A worker dies with its parent and holds none of its locks.

    Forked workers inherit the ingest lock's descriptor: left running after
    the parent was killed they would keep every later ingest out.  So the
    copies are closed (the parent's lock stays), and Linux is asked to kill
    the worker when the parent dies (``PR_SET_PDEATHSIG``).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


@contextmanager
def lean_gc(young: int = 20_000) -> Iterator[None]:
    """Python's cycle collector kept out of ingest's way; restored afterwards.

    Ingest allocates millions of short-lived tuples and dicts and builds no
    cycles worth collecting: at the default threshold (700) the collector runs
    after every few lines and walks the compiled rules and open records each
    time.  What exists now (modules, compiled rules) is frozen out of its walks
    -- forked workers inherit that -- and the youngest generation is collected
    every ``young`` allocations instead.  Measured: 5-8% of ingest's CPU.
    """
    import gc

    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


#: Descriptors workers must not keep (``ingest.ingest_lock`` registers its lock here).
INHERITED_FDS: set[int] = set()


def _pool_job(job: tuple[bytes, str, int, Seed]) -> tuple[bytes, tuple[Any, Any]]:
    """Run in a worker: the result marshalled (a third of pickle's cost, both ways, for these
    plain tuples, dicts and strings); the year state, which holds a datetime, beside it."""
    res = _default_worker().run(*job)
    return marshal.dumps(res[:7]), res[7]


def worker_count() -> int:
    """Cores this process may use (at most 4: the parent's sequential part limits the gain)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4)


class BlockPool:
    """Blocks in, results out in block order; at most two blocks per worker in flight."""

    def __init__(self, workers: int) -> None:
        from maillens.classify import default_rules

        default_rules()  # compiled once here, inherited by the forked workers
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"),
                                        initializer=_init_worker, initargs=(os.getpid(), tuple(INHERITED_FDS)))
        self._local: BlockWorker | None = None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, blocks: Iterable[tuple[bytes, int, Any]], source: str, first_lineno: int,
            reference: datetime | None) -> Iterator[tuple[BlockResult, Any]]:
        """``(result, tag)`` per ``(data, line count, tag)`` block, in order, the years checked."""
        seeds = YearSeeds(reference)
        window: deque[tuple[Future[tuple[bytes, tuple[Any, Any]]], tuple[bytes, str, int, Seed], Any]] = deque()
        lineno = first_lineno
        end: tuple[Any, Any] | None = None
        for data, nlines, tag in blocks:
            job = (data, source, lineno, seeds.next(data))
            lineno += nlines
            window.append((self.pool.submit(_pool_job, job), job, tag))
            if len(window) >= 2 * self.workers:
                res, tag_out, end = self._take(window.popleft(), end)
                yield res, tag_out
        while window:
            res, tag_out, end = self._take(window.popleft(), end)
            yield res, tag_out

    def _take(self, item: tuple[Future[tuple[bytes, tuple[Any, Any]]], tuple[bytes, str, int, Seed], Any],
              end: tuple[Any, Any] | None) -> tuple[BlockResult, Any, tuple[Any, Any]]:
        """The block's result; classified again here when its predicted year state was wrong."""
        future, job, tag = item
        payload, years_end = future.result()
        res: BlockResult = (*marshal.loads(payload), years_end)  # type: ignore[assignment]
        seed = job[3]
        if end is not None and (seed[1], seed[2]) != end:
            if self._local is None:
                from maillens.ingestscan import IngestScanner

                self._local = IngestScanner()
            res = self._local.run(job[0], job[1], job[2], (seed[0], *end))
        return res, tag, res[7]
