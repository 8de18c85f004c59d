"""``parse --stats`` at speed: the same rules, without building an Event per line.

``classify`` makes a full ``Event`` for every line (time stamp with its year,
typed fields); a summary of a 2-million-line log needs none of that, only which
rule matched and a few fields.  This module runs the *same compiled rules*
(``RuleSet``'s joined alternations) directly on each line from the end of its
syslog envelope, reads the kind and the handful of fields ``ParseStats``
counts, and hands any line it cannot settle this way (no envelope, rules that
need fail2ban's general matcher, lines nothing matched) to ``Classifier`` --
so both paths give the same counts by construction, and a test holds them to it.

Work is split over processes in blocks of raw bytes: the parent only reads
(and decompresses); workers decode, split and scan, and return partial counts.
"""

from __future__ import annotations

import os
import re
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from maillens.classify import Classifier, RuleSet, _Alternative, _CompiledFilter, _fix_spf, default_rules
from maillens.envelope import PREFIX_RE, log_int
from maillens.sources import BLOCK, MAX_LINE, expand_paths, iter_raw_lines, read_chunks
from maillens.stats import ParseStats

_GROUP_RE = re.compile(r"\(\?P<(\w+)>")

#: The fields ParseStats reads, per kind.
_WANTED = {
    "reject": ("stage", "rbl"),
    "reject_warning": ("rbl",),
    "spf": ("spf_result", "reason", "code", "identity"),
    "sasl_failure": ("sasl_method",),
    "delivery": ("status",),
}


@dataclass(slots=True)
class _FastAlt:
    """What the scanner reads from one rule's match: a subset of its plan (``_Alternative``)."""

    kind: str | None  # None: the kind is the value of the rule's ``action`` group (``kind=@action``)
    wanted: tuple[str, ...]  # renamed groups to fetch, in the order of ``wanted_fields``
    wanted_fields: tuple[str, ...]  # the field each group fills (alt_ groups fill their base field)
    simple: bool  # a constant kind whose count is all ParseStats wants
    plan: _Alternative


def _fast_alt(alt: _Alternative) -> _FastAlt | None:
    """The scanner's view of a rule, or None when only the full classifier can read it."""
    kind = alt.annotations.get("kind", "other")
    if any(v.startswith("@") for v in alt.annotations.values()) and kind != "@action":
        return None
    kind_group = kind == "@action"
    fields = ["action"] if kind_group else []
    for kind_name in (("reject", "reject_warning") if kind_group else (kind,)):
        fields += [f for f in _WANTED.get(kind_name, ()) if f not in fields]
    # plain groups first, then alt_ groups: the first value found wins, as in the plan
    pairs = [(f, g) for f, g in zip(alt.plain_fields, alt.plain_groups) if f in fields]
    pairs += [(f, g) for g, f in alt.alt_groups if f in fields]
    return _FastAlt(
        kind=None if kind_group else kind,
        wanted=tuple(g for _, g in pairs),
        wanted_fields=tuple(f for f, _ in pairs),
        simple=not kind_group and kind not in _WANTED,
        plan=alt,
    )


class FastScanner:
    """Counts lines into a ``ParseStats`` using the rules' joined regexes."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules or default_rules()
        self.classifier = Classifier(self.rules)
        self._alts: dict[int, dict[str, _FastAlt | None]] = {}
        self._lean_regex: dict[int, Any] = {}
        self._programs: dict[str, tuple[tuple[Any, dict[str, _FastAlt | None]], ...] | None] = {}

    def _for_program(self, program: str) -> tuple[tuple[Any, dict[str, _FastAlt | None]], ...] | None:
        found = self._programs.get(program, False)
        if found is False:
            compiled: tuple[_CompiledFilter, ...] = self.rules.for_program(program)
            if any(c.joined is None for c in compiled):
                found = None  # a filter needs fail2ban's general matcher: take the slow path
            else:
                found = tuple((self._lean(c), self._fast_alts(c)) for c in compiled)
            if len(self._programs) > 10_000:
                self._programs.clear()
            self._programs[program] = found
        return found  # type: ignore[return-value]

    def _lean(self, compiled: _CompiledFilter) -> Any:
        """The joined regex with every group the counts do not read made non-capturing.

        Same language, same alternative chosen (capturing changes no match),
        fewer captures for ``re`` to record: the scanner's hot loop is mostly this.
        """
        cached = self._lean_regex.get(id(compiled))
        if cached is not None:
            return cached
        pattern = compiled.joined.pattern  # type: ignore[union-attr]
        if "(?P=" in pattern:
            lean = compiled.joined
        else:
            keep = set(compiled.alternatives)
            for alt in self._fast_alts(compiled).values():
                if alt is not None:
                    keep.update(alt.wanted)
                    keep.update(alt.plan.marker_groups)
            lean = re.compile(_GROUP_RE.sub(lambda m: m.group(0) if m.group(1) in keep else "(?:", pattern))
        self._lean_regex[id(compiled)] = lean
        return lean

    def _fast_alts(self, compiled: _CompiledFilter) -> dict[str, _FastAlt | None]:
        key = id(compiled)
        alts = self._alts.get(key)
        if alts is None:
            alts = {name: _fast_alt(alt) for name, alt in compiled.alternatives.items()}
            self._alts[key] = alts
        return alts

    def scan_lines(self, lines: Iterable[str], stats: ParseStats, source: str, first_lineno: int) -> None:
        """Count ``lines`` into ``stats``; the loop is kept flat on purpose (it runs per line)."""
        prefix_match = PREFIX_RE.match
        for_program = self._programs.get
        slow = self._slow
        simple: Counter[str] = Counter()  # kinds that need no field, counted in bulk
        lineno = first_lineno - 1
        for line in lines:
            lineno += 1
            m = prefix_match(line)
            if m is None:
                slow(stats, line, source, lineno)
                continue
            pos = m.end()
            if pos == len(line):
                slow(stats, line, source, lineno)
                continue
            program = m.group("program")
            filters = for_program(program, False)
            if filters is False:
                filters = self._for_program(program)
            if filters is None:
                slow(stats, line, source, lineno)
                continue
            for joined, alts in filters:
                hit = joined.match(line, pos)
                if hit is None:
                    continue
                alt = alts[hit.lastgroup]
                if alt is None:
                    slow(stats, line, source, lineno)
                elif alt.simple:
                    simple[alt.kind] += 1
                else:
                    self._count(stats, alt, hit, line, source, lineno)
                break
            else:
                slow(stats, line, source, lineno)
        stats.kinds.update(simple)
        stats.lines += sum(simple.values())

    def _slow(self, stats: ParseStats, line: str, source: str, lineno: int) -> None:
        stats.add(self.classifier.classify(line, source, lineno))

    def _count(self, stats: ParseStats, alt: _FastAlt, hit: Any, line: str, source: str, lineno: int) -> None:
        """Count a rule whose kind needs fields, reading only those from the match."""
        data: dict[str, Any] = {}
        for name, value in zip(alt.wanted_fields, hit.group(*alt.wanted) if len(alt.wanted) > 1 else (
                (hit.group(alt.wanted[0]),) if alt.wanted else ())):
            if value is not None and name not in data:
                data[name] = value
        kind = alt.kind or data.get("action") or "other"
        if kind in ("reject", "reject_warning"):
            plan = alt.plan
            restriction = plan.annotations.get("restriction")
            if plan.marker_groups:
                flags = hit.group(*plan.marker_groups) if len(plan.marker_groups) > 1 else (
                    hit.group(plan.marker_groups[0]),)
                if "" in flags:  # markers are empty groups: "" when they took part
                    restriction = plan.marker_restrictions[flags.index("")]
            if restriction is None or restriction.startswith("@"):
                self._slow(stats, line, source, lineno)
                return
            data["restriction"] = restriction
        elif kind == "spf":  # results need the same normalisation as classify
            if "code" in data:
                number = log_int(data["code"])  # as classify does: an absurd number stays text
                if number is not None:
                    data["code"] = number
            _fix_spf(data)
        stats.count(kind, data, lambda: self.classifier.classify(line, source, lineno))


def _split_block(block: bytes) -> list[str]:
    """Decode and split, dropping one CR before each LF as ``sources`` does per line."""
    text = block.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
    return text.split("\n")


def _scan_block(args: tuple[bytes, str, int]) -> tuple[ParseStats, int]:
    """A block the parent read; line numbers are already absolute."""
    block, source, first_lineno = args
    stats = ParseStats()
    lines = _split_block(block)
    _worker_scanner().scan_lines(lines, stats, source, first_lineno)
    return stats, 0


def _scan_range(args: tuple[str, int, int]) -> tuple[ParseStats, int]:
    """A byte range of a plain file, read by the worker itself (whole lines).

    Line numbers count from 1 within the range; the parent shifts them when it
    merges, in order.  Returns the stats and the range's number of lines.
    """
    path, start, end = args
    with open(path, "rb") as fh:
        fh.seek(start)
        block = fh.read(end - start)
    if block.endswith(b"\n"):
        block = block[:-1]
    if len(block) > MAX_LINE and _max_line(block) > MAX_LINE:
        block = _cut_long_lines(block)
    lines = _split_block(block) if block or end > start else []
    stats = ParseStats()
    _worker_scanner().scan_lines(lines, stats, path, 1)
    return stats, len(lines)


def plain_ranges(path: str, block_size: int) -> list[tuple[int, int]] | None:
    """Whole-line byte ranges of a plain (uncompressed, seekable) file, or ``None``.

    ``None`` means: read it as a stream instead -- it is compressed, not a
    regular file, or holds a line so long that a range could not stay small.
    """
    try:
        if not os.path.isfile(path):
            return None
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(6)
            if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00")):
                return None
            bounds = [0]
            position = block_size
            while position < size:
                fh.seek(position)
                found = -1
                scanned = 0
                while found < 0:
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    found = chunk.find(b"\n")
                    scanned += len(chunk) if found < 0 else found + 1
                    if found < 0 and scanned > 2 * block_size:
                        return None  # a runaway line: the streaming reader bounds it
                if found < 0:
                    break
                cut = position + scanned
                if cut > bounds[-1]:
                    bounds.append(cut)
                position = max(cut, position) + block_size
            if bounds[-1] < size:
                bounds.append(size)
    except OSError:
        return None
    return list(zip(bounds, bounds[1:]))


_SCANNER: FastScanner | None = None
_RULES_DIRS: tuple[str, ...] = ()


def _use_rules(rules_dirs: tuple[str, ...]) -> None:
    global _RULES_DIRS, _SCANNER
    _RULES_DIRS, _SCANNER = rules_dirs, None


def _init_worker(rules_dirs: tuple[str, ...]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks
    _use_rules(rules_dirs)


def _worker_scanner() -> FastScanner:
    global _SCANNER
    if _SCANNER is None:
        _SCANNER = FastScanner(RuleSet.load(_RULES_DIRS) if _RULES_DIRS else None)
    return _SCANNER


def iter_blocks(path: str, block_size: int = BLOCK * 2) -> Iterator[tuple[bytes, int]]:
    """Whole-line byte blocks of one input and the number of their first line.

    Built on ``sources.iter_raw_lines`` semantics: a line longer than
    ``MAX_LINE`` is cut there, damaged compressed input ends the file quietly
    after a warning.
    """
    lineno = 1
    pending = b""
    skipping = False  # inside the rest of a line already cut at MAX_LINE
    for chunk in read_chunks(path, block_size):
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            chunk, skipping = chunk[nl + 1:], False
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            if len(pending) > MAX_LINE:  # one runaway line: keep its head, skip to its end
                yield pending[:MAX_LINE], lineno
                lineno += 1
                pending, skipping = b"", True
            continue
        block, pending = data[:cut], data[cut + 1:]
        if len(block) > MAX_LINE and _max_line(block) > MAX_LINE:
            block = _cut_long_lines(block)
        yield block, lineno
        lineno += block.count(b"\n") + 1
    if pending:
        block = b"\n".join(iter_raw_lines([pending]))
        if block:
            yield block, lineno


def _max_line(block: bytes) -> int:
    return max(len(part) for part in block.split(b"\n"))


def _cut_long_lines(block: bytes) -> bytes:
    return b"\n".join(part[:MAX_LINE] for part in block.split(b"\n"))


def scan_stats(paths: Iterable[str], workers: int | None = None, rules_dirs: Iterable[str] = ()) -> ParseStats:
    """``ParseStats`` over inputs, in parallel where there is more than one core.

    Memory stays bounded whatever the input size: at most two blocks per
    worker are in flight, and ``ParseStats`` keeps counters, not lines.
    """
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 4)
    dirs = tuple(str(d) for d in rules_dirs)
    _use_rules(dirs)
    total = ParseStats()
    lines_before: dict[str, int] = {}  # per source: lines of the ranges merged so far

    def jobs() -> Iterator[tuple[Any, Any, str]]:
        for item in expand_paths(paths):
            ranges = plain_ranges(item.path, BLOCK * 2) if workers > 1 else None
            if ranges is not None:  # workers read their own ranges: the parent only merges
                for start, end in ranges:
                    yield _scan_range, (item.path, start, end), item.path
            else:
                for block, lineno in iter_blocks(item.path):
                    yield _scan_block, (block, item.path, lineno), item.path

    def merge(result: tuple[ParseStats, int], source: str) -> None:
        stats, nlines = result
        offset = lines_before.get(source, 0)
        total.merge(stats, offset)
        lines_before[source] = offset + nlines

    if workers <= 1:
        for func, args, source in jobs():
            merge(func(args), source)
        return total
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(dirs,)) as pool:
        window: deque[tuple[Any, str]] = deque()
        for func, args, source in jobs():  # bounded: never more than 2 blocks per worker in flight
            window.append((pool.submit(func, args), source))
            if len(window) >= 2 * workers:
                future, src = window.popleft()
                merge(future.result(), src)
        while window:
            future, src = window.popleft()
            merge(future.result(), src)
    return total
