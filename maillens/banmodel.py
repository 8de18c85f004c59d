"""fail2ban's counting and banning, replayed on log time.

Why a model of fail2ban rather than a sliding window: users move jails
between fail2ban and maillens and expect the same bans.  fail2ban does not
count "failures in the last ``findtime`` seconds"; it keeps one *ticket* per
address whose retry count is rescaled by the observed rate whenever the
ticket grows older than ``findtime`` (``FailTicket.adjustTime``), drops idle
tickets only when its service task runs (every 100th line, at most every 5
seconds, and after each ban), and with ``bantime.increment`` adds extra
retries to failures of addresses it has banned before (``ObserverThread.
failureFound``) and lengthens their bans (``incrBanTime``).  This module
mirrors those classes (fail2ban 1.0.2: server/failmanager.py, ticket.py,
banmanager.py, observer.py, filter.py) step for step, with one clock: the
time of the line being processed, as fail2ban would see it reading the log
live.  Its threads are replaced by a fixed order per line:

1. unban what has expired (``Actions.__checkUnBan``);
2. the filter adds the failure (``Filter.processLineAndAdd``), bans when the
   ticket reaches ``maxretry`` and tells the observer (``failureFound``);
3. every 100th line the service task drops idle tickets (``performSvc``);
4. the actions take the queued tickets (``Actions.__checkBan``) and the
   observer lengthens new bans and records them (``banFound``).

``tests/test_bans.py`` runs fail2ban's own classes in that order on the
corpus and checks that this model gives the same bans, counts and times.

Example::

    hist = BanHistory()
    jail = JailState(JailParams("sasl", maxretry=3, findtime=600, bantime=3600), hist)
    for t in (0, 10, 20):
        new = jail.process(float(t), "192.0.2.7", "SASL LOGIN authentication failed")
    [b.ip for b in new]                       # ['192.0.2.7']
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

#: fail2ban's end of a permanent ban (``Ticket.MAX_TIME``).
MAX_TIME = 0x7FFFFFFFFFFF
#: Lines between two service runs (``Filter.processLineAndAdd``).
SVC_LINES = 100
#: Seconds between two service runs at most (``Filter.performSvc``).
SVC_INTERVAL = 5

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "mo": 2629800, "mon": 2629800, "month": 2629800, "months": 2629800,
    "y": 31557600, "year": 31557600, "years": 31557600,
}  # fmt: skip
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


def parse_duration(value: Any, *, what: str = "duration") -> float:
    """Seconds from ``600``, ``"10m"``, ``"1h 30m"``, ``"1d12h"`` or ``-1``.

    The unit names are fail2ban's (``m`` is minutes, ``mo`` months); a bare
    number is seconds.  Raises ValueError with a message naming ``what``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be seconds or a duration like '10m', not {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be seconds or a duration like '10m', not {value!r}")
    text = value.strip().lower()
    if text == "-1":
        return -1.0
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m or m.end() == pos or (m.group(2) and m.group(2) not in _UNITS):
            raise ValueError(f"{what}: cannot read {value!r}; write seconds or e.g. '10m', '1h30m', '2d', '1w'")
        total += float(m.group(1)) * _UNITS[m.group(2) or "s"]
        pos = m.end()
    return total


class Ticket:
    """fail2ban's ``FailTicket``/``BanTicket`` in one class (the fields both use).

    ``first`` is fail2ban's ``_firstTime``, which rate scaling moves forward;
    ``first_seen`` keeps the real time of the first failure for reports.
    """

    __slots__ = (
        "ip", "time", "first", "first_seen", "retry", "failures", "matches", "ban_count", "ban_time",
        "restored",
    )  # fmt: skip

    def __init__(self, ip: str, time: float, matches: list[str] | None = None) -> None:
        self.ip = ip
        self.time = time
        self.first = time
        self.first_seen = time
        self.retry: float = 0  # FailTicket: _data['failures'] (0) until added
        self.failures = 0
        self.matches: list[str] = matches or []
        self.ban_count = 0
        self.ban_time: float | None = None
        self.restored = False

    # -- FailTicket ----------------------------------------------------------
    def set_retry(self, value: float) -> None:
        self.retry = value
        if not self.failures:
            self.failures = 1
        if not value:
            self.failures = 0
            self.matches = []

    def adjust_time(self, time: float, maxtime: float) -> None:
        """Rate-scale the retry count when the ticket outgrows ``maxtime`` (findtime)."""
        if time > self.time:
            if self.first < time - maxtime:
                self.retry = int(round(self.retry / float(time - self.first) * maxtime))
                self.first = time - maxtime
            self.time = time

    def inc(self, matches: list[str] | None, attempt: int, count: float) -> None:
        self.retry += count
        self.failures += attempt
        if matches:
            self.matches = self.matches + matches

    # -- Ticket --------------------------------------------------------------
    def set_ban_count(self, value: int) -> None:
        if value > self.ban_count:
            self.ban_count = value

    def get_ban_time(self, default: float) -> float:
        return self.ban_time if self.ban_time is not None else default

    def end_of_ban(self, default: float) -> float:
        bantime = self.get_ban_time(default)
        if bantime == -1:
            return MAX_TIME
        return self.time + bantime

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ticket":
        t = cls(str(data["ip"]), float(data["time"]))
        for name in cls.__slots__:
            if name in data:
                setattr(t, name, data[name])
        t.matches = list(t.matches or [])
        return t


@dataclass(frozen=True)
class Increment:
    """``bantime.increment`` and its options; ``ban_time`` is fail2ban's ``evformula``.

    ``rndtime`` and a custom ``formula`` are not offered: the first makes
    ban ends random, the second is Python ``eval`` of configuration text.
    """

    enabled: bool = False
    factor: float = 1.0
    multipliers: tuple[float, ...] = ()
    maxtime: float | None = None
    overalljails: bool = False

    def ban_time(self, base: float, count: int) -> float:
        if self.multipliers:
            m = self.multipliers[count if count < len(self.multipliers) else -1]
            value = base * self.factor * m
        else:
            value = max(base, base * (1 << (count if count < 20 else 20)) * self.factor)
        if self.maxtime is not None:
            value = min(value, self.maxtime)
        return value


@dataclass(frozen=True)
class JailParams:
    name: str
    maxretry: int = 5
    findtime: float = 600.0
    bantime: float = 600.0
    increment: Increment = field(default_factory=Increment)
    maxmatches: int | None = None  # None: fail2ban's jail.conf default, maxretry

    @property
    def keep_matches(self) -> int:
        return self.maxretry if self.maxmatches is None else self.maxmatches


class BanHistory:
    """fail2ban's ``bips`` table: the last ban of each address in each jail.

    ``purge_age`` is fail2ban's ``dbpurgeage``: a non-permanent row whose
    ban is older than it (and whose ban ended more than three ban times
    before that) is forgotten, so an address starts again at ban count 0.
    fail2ban purges hourly; here a row is forgotten as soon as it qualifies.
    """

    OUTDATED_FACTOR = 3

    def __init__(self, purge_age: float | None = None) -> None:
        self.rows: dict[tuple[str, str], tuple[int, int, float]] = {}
        self.purge_age = purge_age

    def _alive(self, row: tuple[int, int, float], now: float) -> bool:
        if self.purge_age is None:
            return True
        _count, tob, btime = row
        limit = int(now) - self.purge_age
        return not (tob < limit and btime != -1 and tob + btime * self.OUTDATED_FACTOR < limit)

    def get(self, ip: str, jail: str, now: float, overalljails: bool = False) -> tuple[int, int, float] | None:
        """``(bancount, timeofban, bantime)`` like ``Fail2BanDb.getBan``."""
        if not overalljails:
            row = self.rows.get((ip, jail))
            return row if row is not None and self._alive(row, now) else None
        rows = [r for (rip, _j), r in self.rows.items() if rip == ip and self._alive(r, now)]
        if not rows:
            return None
        return sum(r[0] for r in rows), max(r[1] for r in rows), sum(r[2] for r in rows)

    def add(self, ip: str, jail: str, ticket: Ticket, default_bantime: float) -> None:
        self.rows[(ip, jail)] = (ticket.ban_count, int(round(ticket.time)), ticket.get_ban_time(default_bantime))

    def purge(self, now: float) -> None:
        for key in [k for k, r in self.rows.items() if not self._alive(r, now)]:
            del self.rows[key]

    def to_list(self) -> list[list[Any]]:
        return [[ip, jail, *row] for (ip, jail), row in self.rows.items()]

    def load_list(self, rows: Iterable[list[Any]]) -> None:
        for ip, jail, count, tob, btime in rows:
            self.rows[(str(ip), str(jail))] = (int(count), int(tob), float(btime))


@dataclass
class BanRecord:
    """One ban as the actions saw it: who, until when, on what evidence."""

    jail: str
    ip: str
    time: float  # ticket time: the failure that completed the ban
    first: float
    failures: int
    ban_count: int
    ban_time: float  # -1 permanent
    matches: list[str]

    @property
    def until(self) -> float | None:
        return None if self.ban_time == -1 else self.time + self.ban_time


class JailState:
    """One jail's fail list, ban list and service clock (fail2ban's Filter,
    FailManager, BanManager and the observer's part for this jail)."""

    def __init__(self, params: JailParams, history: BanHistory) -> None:
        self.p = params
        self.history = history
        self.fail_list: dict[str, Ticket] = {}
        self.ban_list: dict[str, Ticket] = {}
        self.queue: list[Ticket] = []
        self.next_svc = -(1 << 63)
        self.next_unban = float(MAX_TIME)
        self.fail_total = 0
        self.ban_total = 0
        self.on_ban: Callable[[BanRecord], None] | None = None
        self._ends: list[tuple[float, int, str]] = []  # (end of ban, seq, address), a heap
        self._seq = 0

    # -- FailManager ---------------------------------------------------------
    def add_failure(self, tick: Ticket, count: float = 1, observed: bool = False) -> float:
        entry = self.fail_list.get(tick.ip)
        if entry is not None:
            if entry is tick:
                matches: list[str] | None = None
                attempt = 1
            else:
                matches = tick.matches if self.p.keep_matches else None
                attempt = tick.failures
                if attempt <= 0:
                    attempt += 1
            entry.adjust_time(tick.time, self.p.findtime)
            entry.inc(matches, attempt, count)
            keep = self.p.keep_matches
            if keep:
                if len(entry.matches) > keep:
                    entry.matches = entry.matches[-keep:]
            else:
                entry.matches = []
        else:
            if observed:
                return tick.retry
            entry = tick
            if count > tick.failures:
                entry.set_retry(count)
            self.fail_list[tick.ip] = entry
        self.fail_total += 1
        return entry.retry

    def cleanup(self, now: float) -> None:
        limit = now - self.p.findtime
        stale = [ip for ip, t in self.fail_list.items() if t.time <= limit]
        for ip in stale:
            del self.fail_list[ip]

    def _to_ban(self, ip: str | None) -> Ticket | None:
        ids = [ip] if ip is not None and ip in self.fail_list else list(self.fail_list)
        for fid in ids:
            t = self.fail_list[fid]
            if t.retry >= self.p.maxretry:
                del self.fail_list[fid]
                return t
        return None

    # -- Filter --------------------------------------------------------------
    def perform_ban(self, ip: str | None, now: float) -> None:
        while True:
            t = self._to_ban(ip)
            if t is None:
                break
            self.queue.append(t)
            if ip:
                break
        self.perform_svc(now)

    def perform_svc(self, now: float, force: bool = False) -> None:
        if force or now >= self.next_svc:
            self.next_svc = now + SVC_INTERVAL
            self.cleanup(now)

    def add_line_failure(self, now: float, ip: str, match: str) -> None:
        """One failure found on the line being processed (``processLineAndAdd``)."""
        tick = Ticket(ip, now, [match])
        attempts = self.add_failure(tick)
        if attempts >= self.p.maxretry:
            self.perform_ban(ip, now)
        self.failure_found(tick, now)

    # -- Observer ------------------------------------------------------------
    def failure_found(self, tick: Ticket, now: float) -> None:
        """Known bad addresses count more: one failure counts 2, 3, 5, 9... (increment only)."""
        if not self.p.increment.enabled:
            return
        ban_count = 0
        retry_count: float = 1
        time_of_ban = None
        row = self.history.get(tick.ip, self.p.name, now)
        if row is not None:
            ban_count = max(row[0], tick.ban_count)
            retry_count = (1 << (ban_count if ban_count < 20 else 20)) / 2 + 1
            time_of_ban = row[1]
        retry_count = min(retry_count, self.p.maxretry)
        if time_of_ban is not None and tick.time <= time_of_ban:
            return
        if retry_count <= 1:
            return
        retry_count = self.add_failure(tick, retry_count - 1, True)
        tick.set_ban_count(ban_count)
        if retry_count >= self.p.maxretry:
            self.perform_ban(tick.ip, now)

    def incr_ban_time(self, ban_time: float, ticket: Ticket, now: float) -> float:
        inc = self.p.increment
        if ban_time > 0 and inc.enabled:
            row = self.history.get(ticket.ip, self.p.name, now, overalljails=inc.overalljails)
            if row is not None:
                ban_count, time_of_ban, _last = row
                if ban_count >= ticket.ban_count:
                    ticket.set_ban_count(ban_count + 1)
                if ban_count > 0:
                    ban_time = inc.ban_time(ban_time, ban_count)
                ticket.ban_time = ban_time
                if not ticket.time > time_of_ban:
                    ticket.restored = True
        return ban_time

    def ban_found(self, ticket: Ticket, btime: float, now: float) -> None:
        if ticket.restored:
            return
        old = btime
        if btime != -1 and ticket.ban_time is None:
            btime = self.incr_ban_time(btime, ticket, now)
            if btime == -1 or btime > old:
                ticket.ban_time = btime
        if btime != -1 and ticket.time + btime < now:
            return
        if not ticket.restored:
            self.history.add(ticket.ip, self.p.name, ticket, self.p.bantime)

    # -- Actions / BanManager -----------------------------------------------
    def _add_ban_ticket(self, ticket: Ticket, now: float) -> bool:
        eob = ticket.end_of_ban(self.p.bantime)
        if eob < now:
            return False
        old = self.ban_list.get(ticket.ip)
        if old is not None:
            if eob > old.end_of_ban(self.p.bantime):
                btm = ticket.get_ban_time(self.p.bantime)
                if btm != -1:
                    diftm = ticket.time - old.time
                    if diftm > 0:
                        btm += diftm
                old.ban_time = btm
            return False
        self.ban_list[ticket.ip] = ticket
        self.ban_total += 1
        ticket.ban_count += 1
        self._push_end(ticket)
        if self.next_unban > eob:
            self.next_unban = eob
        return True

    def check_ban(self, now: float) -> list[Ticket]:
        """Take the queued tickets: new bans (returned), or prolong current ones."""
        banned: list[Ticket] = []
        queue, self.queue = self.queue, []
        for ticket in queue:
            btime = ticket.get_ban_time(self.p.bantime)
            if self._add_ban_ticket(ticket, now):
                banned.append(ticket)
                self.ban_found(ticket, btime, now)
                if self.on_ban is not None:
                    self.on_ban(self.record(ticket))
        return banned

    def check_unban(self, now: float) -> list[Ticket]:
        """Lift every ban with ``now`` past its end (BanManager.unBanList).

        fail2ban rescans its whole ban list whenever the earliest end is
        reached; a heap of ends gives the same set without the rescans
        (an end that moved, by a prolonged ban, is pushed again).
        """
        if self.next_unban > now:
            return []
        gone: list[Ticket] = []
        heap = self._ends
        while heap and heap[0][0] < now:
            _eob, _seq, ip = heapq.heappop(heap)
            t = self.ban_list.get(ip)
            if t is None:
                continue
            eob = t.end_of_ban(self.p.bantime)
            if now > eob:
                gone.append(t)
                del self.ban_list[ip]
            else:
                self._push_end(t)
        self.next_unban = heap[0][0] if heap else float(MAX_TIME)
        return gone

    def _push_end(self, ticket: Ticket) -> None:
        self._seq += 1
        heapq.heappush(self._ends, (ticket.end_of_ban(self.p.bantime), self._seq, ticket.ip))

    def record(self, ticket: Ticket) -> BanRecord:
        return BanRecord(
            jail=self.p.name,
            ip=ticket.ip,
            time=ticket.time,
            first=ticket.first_seen,
            failures=ticket.failures,
            ban_count=ticket.ban_count,
            ban_time=ticket.get_ban_time(self.p.bantime),
            matches=list(ticket.matches),
        )

    # -- one line, whole -----------------------------------------------------
    def process(self, now: float, ip: str | None, match: str = "", *, line_no: int | None = None) -> list[Ticket]:
        """Steps 1-4 of the module docstring for a jail that sees one line alone.

        ``line_no`` is the jail's 1-based count of lines read (every line,
        matching or not); without it the service task runs only after bans.
        """
        self.check_unban(now)
        if ip is not None:
            self.add_line_failure(now, ip, match)
        if line_no is not None and line_no % SVC_LINES == 0:
            self.perform_svc(now)
        return self.check_ban(now)

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "fail_list": [t.to_dict() for t in self.fail_list.values()],
            "ban_list": [t.to_dict() for t in self.ban_list.values()],
            "next_svc": self.next_svc,
            "fail_total": self.fail_total,
            "ban_total": self.ban_total,
        }

    def load_dict(self, data: dict[str, Any]) -> None:
        self.fail_list = {t.ip: t for t in map(Ticket.from_dict, data.get("fail_list", ()))}
        self.ban_list = {t.ip: t for t in map(Ticket.from_dict, data.get("ban_list", ()))}
        self.next_svc = data.get("next_svc", self.next_svc)
        self.fail_total = int(data.get("fail_total", 0))
        self.ban_total = int(data.get("ban_total", 0))
        self._ends = []
        for t in self.ban_list.values():
            self._push_end(t)
        self.next_unban = self._ends[0][0] if self._ends else float(MAX_TIME)
