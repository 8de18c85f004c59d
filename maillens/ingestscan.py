"""Ingest's per-line work without building a datetime and an ``Event`` per line.

``BlockWorker`` classifies each line into an ``Event`` and then counts,
compacts and stores it; most of what that costs is not the rules but the
objects around them: a timezone-aware ``datetime`` per line (turned straight
back into epoch seconds and a day string), an ``Event``, and the calls that
convert between them.  ``IngestScanner`` gives the *same* block results
(a test holds the two equal on the corpora and on random bytes) by doing the
same steps with the expensive parts kept per minute or reused:

* the envelope is read with the same ``BSD_RE``; a line's time comes from
  ``YearInference.resolve`` once per minute of log time, and from the cached
  minute plus its seconds for the other lines of that minute (the year state
  is brought up to date before every ``resolve`` and at the end of the block,
  so it is exactly the straight read's);
* the rules run as ``Classifier`` runs them (same joined regexes, same
  ``_fill_planned``), filling one reused record instead of a new ``Event``;
* counting, the tracker's tuples and the ``events`` rows come from the same
  functions ``BlockWorker`` calls (``Counter.feed_at``, ``compact_at``,
  ``event_row_at``), given the minute's day, hour and epoch.

Any line outside that path (another envelope form, fractions of a second, a
carriage return, odd dates, rules that need fail2ban's general matcher) is
classified by ``Classifier`` and handled exactly as ``BlockWorker`` does.
"""

from __future__ import annotations

from typing import Any

from maillens.classify import Classifier, RuleSet, _CompiledFilter, _fill_planned
from maillens.envelope import BSD_RE
from maillens.envelope import _int as pid_int
from maillens.ingestwork import BlockResult, BlockWorker, Seed, event_row_at, split_block
from maillens.store import STORED_EVENT_KINDS
from maillens.tracker import TRACKED_KINDS, compact_at


class _Line:
    """The attributes of an ``Event`` that counting, compacting and rows read; one per scanner, reused."""

    __slots__ = ("kind", "program", "pid", "host", "data", "message", "raw", "queue_id", "daemon", "rule", "ts")

    def __init__(self) -> None:
        self.kind = "other"
        self.program: str | None = None
        self.pid: int | None = None
        self.host: str | None = None
        self.data: dict[str, Any] = {}
        self.message = ""
        self.raw = ""
        self.queue_id: str | None = None
        self.daemon: str | None = None
        self.rule: str | None = None
        self.ts = None


class IngestScanner(BlockWorker):
    """``BlockWorker`` with the per-line objects kept per minute or reused; same results."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        clf = Classifier(rules)
        super().__init__(clf.classify, clf.years)
        self.rules = clf.rules
        self._programs: dict[str, tuple[_CompiledFilter, ...] | None] = {}
        self._daemons: dict[str, str] = {}

    def _filters(self, program: str) -> tuple[_CompiledFilter, ...] | None:
        """The program's filters, or None when one needs fail2ban's general matcher (slow path)."""
        found = self._programs.get(program, False)
        if found is False:
            compiled = self.rules.for_program(program)
            found = None if any(c.joined is None for c in compiled) else compiled
            if len(self._programs) > 10_000:  # hostile input: unbounded program names
                self._programs.clear()
            self._programs[program] = found
        return found  # type: ignore[return-value]

    def run(self, data: bytes, source: str, first_lineno: int, seed: Seed | None = None) -> BlockResult:
        years = self.years
        assert years is not None
        if seed is not None:
            years.reset(seed[0])
            years._year, years._last = seed[1], seed[2]
        ops: list[tuple[Any, ...]] = []
        self.counter.ops = self.ops = ops
        rows: list[tuple[Any, ...]] = []
        counter = self.counter
        feed_at, add_op, add_row = counter.feed_at, ops.append, rows.append
        tracked, stored = TRACKED_KINDS, STORED_EVENT_KINDS
        bsd = BSD_RE.match
        resolve = years.resolve
        filters_of, programs = self._filters, self._programs
        daemons = self._daemons
        rec = _Line()
        minute: str | None = None  # the line start up to the minute of the cached time
        base = 0.0  # epoch seconds of that minute's second 0
        day = ""
        hour = 0
        pending: tuple[str, str, str] | None = None  # last cached line not yet given to resolve()
        lineno = first_lineno - 1
        lines = split_block(data)
        for line in lines:
            lineno += 1
            m = bsd(line)
            filters: Any = None
            if m is not None and m.group("frac") is None and not line.endswith("\r"):
                mon, mday, hms, host, program, pid, msg = m.group("mon", "day", "hms", "host", "program", "pid", "msg")
                filters = programs.get(program, False)
                if filters is False:
                    filters = filters_of(program)
                cut = m.end("hms") - 3
            if filters is None or hms[6:] > "59":
                if pending is not None:
                    resolve(*pending)
                    pending = None
                minute = None
                self.take_line(line, source, lineno, add_op, add_row)
                continue
            if line[:cut] == minute:
                pending = (mon, mday, hms)
                ts = base + int(hms[6:])
            else:
                if pending is not None:
                    resolve(*pending)
                    pending = None
                when = resolve(mon, mday, hms)
                if when.day != int(mday) or when.hour != int(hms[:2]) or when.minute != int(hms[3:5]):
                    minute = None  # a date resolve() clamps (day 0, 30 February, hour 24): no per-minute shortcut
                    self.take_line(line, source, lineno, add_op, add_row)  # (resolving it again changes nothing)
                    continue
                ts = when.timestamp()
                base = ts - int(hms[6:])
                day = f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
                hour = when.hour
                minute = line[:cut]
            rec.program = program
            rec.pid = pid_int(pid)
            rec.host = host
            rec.message = msg
            rec.raw = line
            daemon = daemons.get(program)
            if daemon is None:
                if len(daemons) > 10_000:  # hostile input: unbounded program names
                    daemons.clear()
                daemon = daemons[program] = program.rsplit("/", 1)[-1]
            rec.daemon = daemon
            rec.kind, rec.queue_id, rec.data = "other", None, {}
            if msg:
                for compiled in filters:
                    hit = compiled.joined.match(msg)
                    if hit is not None:
                        _fill_planned(rec, hit, compiled.alternatives[hit.lastgroup or ""])  # type: ignore[arg-type]
                        break
            feed_at(rec, day, hour)
            kind = rec.kind
            if kind in tracked:
                t = compact_at(rec, ts, day)
                add_op(t)
                if kind in stored:
                    add_row(event_row_at(rec, ts, day))
            elif kind in stored:
                add_row(event_row_at(rec, ts, day))
        if pending is not None:
            resolve(*pending)
        counts, deferred, addr, details = counter.drain()
        return len(lines), counts, deferred, addr, details, ops, rows, (years._year, years._last)
