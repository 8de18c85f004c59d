"""Finding the jails' evidence in a log, a block at a time, on every core.

Counting (``banmodel``) must see failures in log order, but *finding* them is
pure: classify a line, test the jails' conditions.  So a log is cut into
whole-line blocks (``fastscan.iter_blocks``); in each block the regex
engine finds the lines that hold a needle (text every line of a wanted
event kind contains, ``banconfig.KIND_NEEDLES``), only those and every
100th line (fail2ban's service clock) are classified, and what comes back
is small: per picked line its index, its time, and (jail, address) pairs.
Blocks go to worker processes when there is more than one core and the
input is big enough to pay for them; results are consumed in order.

Year inference (BSD time stamps have no year) needs the lines in order, so
the reader dates each block's first line itself, in order, and a worker
restarts its inference from that date: the years come out as reading
straight through gives them.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping

from maillens.banconfig import Condition, JailConfig
from maillens.events import Event

#: Lines between two runs of fail2ban's service task (``banmodel.SVC_LINES``).
from maillens.banmodel import SVC_LINES

#: (index in block, whole-second time or None, ((jail index, address), ...), client name, evidence line)
Pick = tuple[int, "float | None", tuple[tuple[int, str], ...], "str | None", "str | None"]

#: Longest evidence line kept (a hostile log cannot bloat the state).
MAX_EVIDENCE = 1000
#: Inputs smaller than this are scanned in-process (a pool costs more than it saves).
PARALLEL_MIN_BYTES = 16 << 20


@lru_cache(maxsize=1 << 16)
def normalize_ip(text: str | None) -> str | None:
    """The canonical form of an address from a log (None when it is not one).

    IPv4-mapped IPv6 addresses become IPv4, as fail2ban's ``<HOST>`` does.
    """
    import ipaddress

    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if addr.scope_id:  # fe80::1%eth0: no firewall set takes a zone
            return None
    return str(addr)


def event_time(ev: Event) -> float | None:
    """The event's time to the whole second, as fail2ban reads time stamps (its strptime drops %f)."""
    return float(math.floor(ev.ts.timestamp())) if ev.ts is not None else None


def _by_kind(conditions: Iterable[Condition]) -> dict[str | None, list[Condition]]:
    conditions = list(conditions)
    out: dict[str | None, list[Condition]] = {}
    for c in conditions:
        for k in c.kind or ():
            out[k] = [d for d in conditions if d.kind is None or k in d.kind]
    anykind = [c for c in conditions if c.kind is None]
    if anykind:
        out[None] = anykind
    return out


class Finder:
    """The event-condition jails' evidence test (picklable: it travels to workers).

    ``us`` answers ``is_us`` for ``helo_is_us`` conditions (a ``NeverBan``
    holding only this server's names is enough).
    """

    def __init__(self, jails: Iterable[JailConfig], us: Any) -> None:
        self.us = us
        self.tests: list[tuple[int, dict[str | None, list[Condition]], dict[str | None, list[Condition]]]] = []
        kinds: dict[str, list[int]] = {}
        anykind: list[int] = []
        for i, cfg in enumerate(jails):
            if cfg.filter_spec is not None:
                continue
            self.tests.append((i, _by_kind(cfg.match), _by_kind(cfg.ignore)))
            if any(c.kind is None for c in cfg.match):
                anykind.append(i)
            for c in cfg.match:
                for k in c.kind or ():
                    kinds.setdefault(k, []).append(i)
        by_jail = {i: (m, ig) for i, m, ig in self.tests}
        self.anykind = [(i, *by_jail[i]) for i in anykind]
        self.by_kind = {
            k: [(i, *by_jail[i]) for i in sorted(set(v) | set(anykind))] for k, v in kinds.items()
        }

    def find(self, ev: Event) -> list[tuple[int, str]]:
        """(jail index, address) for every event jail this event is evidence for."""
        out: list[tuple[int, str]] = []
        kind = ev.kind
        data = ev.data
        us = self.us
        for i, match, ignore in self.by_kind.get(kind, self.anykind):
            for c in match.get(kind, match.get(None, ())):
                if c.holds(ev, data, us):
                    break
            else:
                continue
            if any(c.holds(ev, data, us) for c in ignore.get(kind, ignore.get(None, ()))):
                continue
            ip = normalize_ip(data.get("client_ip"))
            if ip is not None:
                out.append((i, ip))
        return out


@dataclass(frozen=True)
class ScanSpec:
    """What a worker needs besides the block: the finder, the needles, the clock's zone."""

    finder: Finder
    needles: tuple[str, ...]
    tz: tzinfo | None
    helo_us: bool = False  # also pick lines whose ``helo=<...>`` names this server (finder.us.is_us)


_WORKER: dict[str, Any] = {}


def _init(spec: ScanSpec) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks
    from maillens.classify import Classifier

    _WORKER.clear()
    _WORKER.update(spec=spec, clf=Classifier(tz=spec.tz))


def scan_block(args: tuple[bytes, int, datetime | None]) -> tuple[int, list[Pick], float | None]:
    """One whole-line block: (lines in it, picks in order, time of its last line)."""
    block, base, reference = args
    spec: ScanSpec = _WORKER["spec"]
    clf = _WORKER["clf"]
    clf.start_source(reference)
    finder = spec.finder
    text = block.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    # str.find per needle is far faster than a regex alternation over the block
    found: list[int] = []
    find = text.find
    for needle in spec.needles:
        pos = find(needle)
        while pos >= 0:
            found.append(pos)
            pos = find(needle, pos + 1)
    if spec.helo_us:
        # The rules take the HELO as everything from "helo=<" to the ">" ending the line; trying
        # every "helo=<" of a line includes the one they take.
        is_us = finder.us.is_us
        pos = find("helo=<")
        while pos >= 0:
            end = find("\n", pos)
            if end < 0:
                end = len(text)
            if text[end - 1] == ">" and is_us(text[pos + 6:end - 1]):
                found.append(pos)
            pos = find("helo=<", pos + 6)
    found.sort()
    picks_at: list[int] = []
    idx = prev = 0
    count = text.count
    for pos in found:
        idx += count("\n", prev, pos)
        prev = pos
        if not picks_at or picks_at[-1] != idx:
            picks_at.append(idx)
    svc = range((-(base + 1)) % SVC_LINES, len(lines), SVC_LINES)
    wanted = set(picks_at)
    out: list[Pick] = []
    last_t: float | None = None
    for i in sorted(wanted.union(svc)):
        raw = lines[i]
        if i in wanted:
            ev = clf.classify(raw)
            t = event_time(ev)
            hits = tuple(finder.find(ev))
        else:  # a service-clock line: only its time is needed
            t = _line_time(raw, clf)
            hits = ()
        last_t = t if t is not None else last_t
        if hits:
            out.append((i, t, hits, ev.data.get("client_name"), raw[:MAX_EVIDENCE]))
        else:
            out.append((i, t, (), None, None))
    if not out or out[-1][0] != len(lines) - 1:
        t = _line_time(lines[-1], clf)
        last_t = t if t is not None else last_t
    return len(lines), out, last_t


def _line_time(raw: str, clf: Any) -> float | None:
    """A line's time without classifying it (the classifier's own envelope reader and year state)."""
    from maillens.envelope import parse_envelope

    env = parse_envelope(raw, clf.years)
    return float(math.floor(env.ts.timestamp())) if env is not None and env.ts is not None else None


def scan_paths(
    paths: Iterable[str], spec: ScanSpec, *, workers: int | None = None, block_size: int | None = None,
    reference: datetime | None = None,
) -> Iterator[tuple[int, list[Pick], float | None]]:
    """``scan_block`` results for every block of every input, in order.

    Line numbers for the service clock are counted across inputs (fail2ban
    counts every line it reads).  ``reference`` overrides the files'
    modification times for year inference.
    """
    from maillens.fastscan import iter_blocks
    from maillens.sources import MAX_LINE, expand_paths

    items = expand_paths(paths)
    size = block_size or MAX_LINE - (64 << 10)  # below MAX_LINE: iter_blocks can skip its long-line check
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        total = sum(_size(item.path) for item in items)
        workers = min(cores, 4) if total >= PARALLEL_MIN_BYTES else 1
    base = [0]

    def jobs() -> Iterator[tuple[bytes, int, datetime | None]]:
        from maillens.classify import Classifier

        # Each block's first line is dated here, in order, so that the year inference
        # a worker restarts from it is the one reading straight through would reach.
        dating = Classifier(tz=spec.tz)
        for item in items:
            ref = reference or item.reference_time
            dating.start_source(ref)
            for block, _first in iter_blocks(item.path, size):
                nl = block.find(b"\n")
                head = dating.classify((block if nl < 0 else block[:nl]).decode("utf-8", errors="replace"))
                if head.ts is not None:
                    ref = head.ts
                job = (block, base[0], ref)
                base[0] += block.count(b"\n") + 1
                yield job

    if workers <= 1:
        _init(spec)
        for job in jobs():
            yield scan_block(job)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(spec,)) as pool:
        window: deque[Any] = deque()
        for job in jobs():  # at most two blocks per worker in flight: memory stays bounded
            window.append(pool.submit(scan_block, job))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def filter_hits(filters: Mapping[int, Any], raw: str) -> list[tuple[int, str]]:
    """(jail index, address) for the fail2ban-filter jails whose filter matches ``raw``."""
    out = []
    for i, flt in filters.items():
        m = flt.match_line(raw)
        if m is not None:
            ip = normalize_ip(m.host)
            if ip is not None:
                out.append((i, ip))
    return out
