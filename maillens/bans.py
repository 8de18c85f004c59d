"""Jails over the log: who to ban, for how long, on what evidence.

A jail names its evidence -- maillens event conditions (``kind``,
``restriction``, ``rbl``, ...) or any fail2ban filter (``/etc/fail2ban/
filter.d/postfix.conf[mode=auth]``, or a file of ``parsers/``) -- and
fail2ban's knobs: ``maxretry``, ``findtime``, ``bantime`` (-1 permanent) and
``bantime.increment`` (``factor``, ``multipliers``, ``maxtime``,
``overalljails``).  Counting is fail2ban's own, reproduced in
``maillens.banmodel`` (rate-scaled tickets, not a sliding window) on log
time, to the second as fail2ban reads time stamps.

Some addresses are never banned, whatever they do: Postfix's ``mynetworks``,
addresses and names that ``check_client_access`` tables (and
``postscreen_access_list``) allow with OK, ``ignoreip`` from the config,
loopback and the server's own addresses.  Their failures are still counted,
on the side, so that a ban they would have earned is logged as refused,
with the reason.

Config (``[bans]``; every key optional)::

    [bans]
    ignoreip = ["192.0.2.0/24", "2001:db8::/32"]
    loopback = ["127.0.0.0/8", "::1/128"]   # [] to judge loopback clients too
    ignoreself = true          # the server's own addresses
    mynetworks = true          # from the Postfix configuration ([postfix] config_dir)
    access_client = true       # OK entries of check_client_access tables
    history = "1w"             # fail2ban's dbpurgeage: how long past bans count
    default_jails = true
    [bans.aggregate]           # list a /24 or /64 instead of its addresses
    enabled = false
    ipv4_prefix = 24
    ipv6_prefix = 64
    min_addresses = 3
    [bans.jails.sasl]          # overrides the built-in jail of that name
    maxretry = 3
    [bans.jails.postfix-auth]  # a jail of your own, on a fail2ban filter
    filter = "/etc/fail2ban/filter.d/postfix.conf[mode=auth]"
    "bantime.increment" = true

Example::

    cfg = BanSettings.from_section(load_config().section("bans"))
    engine = BanEngine(cfg, NeverBan.from_settings(cfg, postfix_config=None))
    engine.feed_paths(["/var/log/mail.log"])
    for entry in engine.entries(engine.last_time): print(entry.address, entry.jail)
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping

from maillens.banconfig import Aggregate, BanSettings, Condition, JailConfig
from maillens.banmodel import SVC_LINES, BanHistory, Increment, JailState
from maillens.events import Event
from maillens.exporters import BanEntry
from maillens.neverban import NeverBan

log = logging.getLogger("maillens.bans")

#: Longest evidence line kept (a hostile log cannot bloat the store).
_MAX_EVIDENCE = 1000

# --------------------------------------------------------------------------- evaluation


@lru_cache(maxsize=1 << 16)
def normalize_ip(text: str | None) -> str | None:
    """The canonical form of an address from a log (None when it is not one).

    IPv4-mapped IPv6 addresses become IPv4, as fail2ban's ``<HOST>`` does.
    """
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass
class Refusal:
    """A ban the never-ban lists stopped: logged, and listed by ``--list``."""

    ip: str
    jail: str
    reason: str
    time: float
    failures: int
    count: int = 1


class _Jail:
    """A jail at run time: its evidence test and its fail2ban state."""

    def __init__(self, cfg: JailConfig, history: BanHistory) -> None:
        self.cfg = cfg
        self.state = JailState(cfg.params, history)
        # failures of never-banned addresses, counted the same way, only to report refusals
        self.shadow = JailState(replace(cfg.params, increment=Increment()), BanHistory())
        self.filter = None
        if cfg.filter_spec is not None:
            from maillens.filterconf import load_filter

            self.filter = load_filter(cfg.filter_spec)

        # conditions by event kind (None: conditions that take any kind)
        self.match_by_kind = _by_kind(cfg.match)
        self.ignore_by_kind = _by_kind(cfg.ignore)

    def evidence(self, ev: Event, never: NeverBan) -> str | None:
        """The address an event is evidence against (event-condition jails), if any."""
        kind = ev.kind
        data = ev.data
        for c in self.match_by_kind.get(kind, self.match_by_kind.get(None, ())):
            if c.holds(ev, data, never):
                break
        else:
            return None
        for c in self.ignore_by_kind.get(kind, self.ignore_by_kind.get(None, ())):
            if c.holds(ev, data, never):
                return None
        return normalize_ip(data.get("client_ip"))


def _by_kind(conditions: Iterable[Condition]) -> dict[str | None, list[Condition]]:
    out: dict[str | None, list[Condition]] = {}
    anykind = [c for c in conditions if c.kind is None]
    for c in conditions:
        for k in c.kind or ():
            out.setdefault(k, [])
    for k in list(out):
        out[k] = [c for c in conditions if c.kind is None or k in c.kind]
    if anykind:
        out[None] = anykind
    return out


class BanEngine:
    """All jails over one stream of lines (or stored events), in log order."""

    def __init__(self, settings: BanSettings, never: NeverBan, history: BanHistory | None = None) -> None:
        self.settings = settings
        self.never = never
        self.history = history if history is not None else BanHistory(settings.history)
        self.jails = [_Jail(cfg, self.history) for cfg in settings.jails]
        self.lines = 0
        self.last_time: float | None = None
        self.refused: dict[tuple[str, str], Refusal] = {}
        self.names: dict[str, str] = {}  # last client name seen per address (access.client name keys)
        needles: list[str] = []
        self.every_line = False  # an event jail whose evidence has no known needle
        self.filter_jails = [i for i, j in enumerate(self.jails) if j.filter is not None]
        kinds: dict[str, list[int]] = {}
        self.any_kind: list[int] = []  # event jails with a condition on any kind
        for i, j in enumerate(self.jails):
            if j.filter is not None:
                continue
            n = j.cfg.needles
            if n is None:
                self.every_line = True
            else:
                needles.extend(n)
            if any(c.kind is None for c in j.cfg.match):
                self.any_kind.append(i)
            else:
                for c in j.cfg.match:
                    for k in c.kind or ():
                        kinds.setdefault(k, []).append(i)
        # kind -> the event jails that can use it, in config order (jails share the ban history)
        self.by_kind = {k: sorted(set(v) | set(self.any_kind)) for k, v in kinds.items()}
        self.needles = tuple(dict.fromkeys(needles))
        self._needle_re = re.compile("|".join(map(re.escape, self.needles))) if self.needles else None

    # -- feeding -------------------------------------------------------------
    def feed_paths(self, paths: Iterable[str], *, until: float | None = None, classifier: Any = None) -> None:
        """Read log files (globs, rotated sets, compressed) and evaluate every line.

        Lines after ``until`` (epoch seconds) are not used.  ``classifier``
        defaults to a ``maillens.classify.Classifier`` in the local time zone.
        """
        from maillens.classify import Classifier
        from maillens.sources import expand_paths, read_file_lines

        clf = classifier or Classifier()
        for item in expand_paths(paths):
            clf.start_source(item.reference_time)
            if not self.filter_jails and not self.every_line and self._needle_re is not None:
                if not self._feed_blocks(item.path, clf, until):
                    return
                continue
            last: str | None = None
            for line in read_file_lines(item.path):
                used = self.feed_line(line.text, clf, until=until)
                if used is None:
                    return
                last = None if used else line.text
            if last is not None:
                self._note_time(clf.classify(last))  # "as of the last line's time"

    def _feed_blocks(self, path: str, clf: Any, until: float | None) -> bool:
        """The same as ``feed_line`` on each line, a block of lines at a time.

        Only lines holding a needle, and every 100th line (the service
        task's clock), are classified; finding them is left to the regex
        engine over the whole block rather than a Python loop per line.
        False once a line after ``until`` is reached.
        """
        from maillens.fastscan import iter_blocks

        rx = self._needle_re
        assert rx is not None
        tail: str | None = None
        for block, _first in iter_blocks(path):
            text = block.decode("utf-8", errors="replace")
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            lines = text.split("\n")
            picks: list[int] = []
            idx = prev = 0
            for m in rx.finditer(text):
                pos = m.start()
                idx += text.count("\n", prev, pos)
                prev = pos
                if not picks or picks[-1] != idx:
                    picks.append(idx)
            base = self.lines
            svc = range((-(base + 1)) % SVC_LINES, len(lines), SVC_LINES)
            for i in sorted(set(picks).union(svc)):
                raw = lines[i]
                ev = clf.classify(raw)
                if until is not None and ev.ts is not None and self._time(ev) > until:  # type: ignore[operator]
                    return False
                self.lines = base + i  # _line counts this one
                self._line(ev, raw, {})
            self.lines = base + len(lines)
            tail = lines[-1] if (picks[-1:] != [len(lines) - 1] and (base + len(lines)) % SVC_LINES) else None
        if tail is not None:
            self._note_time(clf.classify(tail))  # "as of the last line's time"
        return True

    def feed_line(self, raw: str, clf: Any, *, until: float | None = None) -> bool | None:
        """One log line: True if it was classified, False if it could be skipped,
        None if it lies after ``until`` (and was not used)."""
        hits: dict[int, str | None] = {}
        for i in self.filter_jails:
            m = self.jails[i].filter.match_line(raw)  # type: ignore[union-attr]
            if m is not None:
                hits[i] = normalize_ip(m.host)
        if (
            hits
            or (self.lines + 1) % SVC_LINES == 0
            or self.every_line
            or (self._needle_re is not None and self._needle_re.search(raw) is not None)
        ):
            ev = clf.classify(raw)
            if until is not None and ev.ts is not None and self._time(ev) > until:  # type: ignore[operator]
                return None
            self._line(ev, raw, hits)
            return True
        self.lines += 1
        return False

    def feed_events(self, events: Iterable[Event]) -> None:
        """Already classified events (the store's), each counted as one line."""
        for ev in events:
            hits: dict[int, str | None] = {}
            for i in self.filter_jails:
                m = self.jails[i].filter.match_line(ev.raw)  # type: ignore[union-attr]
                if m is not None:
                    hits[i] = normalize_ip(m.host)
            self._line(ev, ev.raw, hits)

    @staticmethod
    def _time(ev: Event) -> float | None:
        # fail2ban reads time stamps to the whole second (its strptime drops %f)
        return float(math.floor(ev.ts.timestamp())) if ev.ts is not None else None

    def _note_time(self, ev: Event) -> None:
        t = self._time(ev)
        if t is not None and (self.last_time is None or t > self.last_time):
            self.last_time = t

    def _line(self, ev: Event, raw: str, hits: Mapping[int, str | None]) -> None:
        self.lines += 1
        t = self._time(ev)
        if t is None:
            t = self.last_time
        else:
            self.last_time = t
        if t is None:
            return
        svc = self.lines % SVC_LINES == 0
        if svc:
            candidates: Iterable[int] = range(len(self.jails))
        else:
            by_kind = self.by_kind.get(ev.kind, self.any_kind)
            if not hits and not by_kind:
                return
            candidates = sorted({*by_kind, *hits}) if hits else by_kind
        name = ev.client_name
        for i in candidates:
            jail = self.jails[i]
            ip = hits.get(i) if jail.filter is not None else jail.evidence(ev, self.never)
            if ip is None and not svc:
                continue
            if ip is not None:
                if name:
                    self.names[ip] = name
                reason = self.never.reason(ip, name or self.names.get(ip))
                if reason is not None:
                    self._shadow(jail, t, ip, raw, reason)
                    ip = None
            state = jail.state
            state.check_unban(t)
            if ip is not None:
                state.add_line_failure(t, ip, raw[:_MAX_EVIDENCE])
            if svc:
                state.perform_svc(t)
                jail.shadow.perform_svc(t)
            state.check_ban(t)

    def _shadow(self, jail: _Jail, t: float, ip: str, raw: str, reason: str) -> None:
        for ticket in jail.shadow.process(t, ip, raw[:_MAX_EVIDENCE]):
            jail.shadow.ban_list.clear()
            key = (ip, jail.cfg.name)
            old = self.refused.get(key)
            if old is None:
                log.warning("refused to ban %s (jail %s, %d failures): %s", ip, jail.cfg.name, ticket.failures, reason)
                self.refused[key] = Refusal(ip, jail.cfg.name, reason, t, ticket.failures)
            else:
                old.count += 1
                old.time = t
                old.failures = ticket.failures

    # -- results -------------------------------------------------------------
    def entries(self, at: float | None = None) -> list[BanEntry]:
        """The bans in force at ``at`` (default: the last line's time), aggregated if configured."""
        at = self.last_time if at is None else at
        out: list[BanEntry] = []
        for jail in self.jails:
            bantime = jail.cfg.params.bantime
            for ticket in jail.state.ban_list.values():
                eob = ticket.end_of_ban(bantime)
                if at is not None and at > eob:
                    continue
                reason = self.never.reason(ticket.ip, self.names.get(ticket.ip))
                if reason is not None:  # the never-ban lists changed since the ban
                    log.warning("refused to list %s (jail %s): %s", ticket.ip, jail.cfg.name, reason)
                    continue
                permanent = ticket.get_ban_time(bantime) == -1
                out.append(BanEntry(
                    address=ticket.ip, jail=jail.cfg.name, failures=ticket.failures,
                    first=ticket.first_seen, last=ticket.time, until=None if permanent else eob,
                    bans=ticket.ban_count, evidence=list(ticket.matches),
                ))  # fmt: skip
        out.sort(key=lambda e: (e.first, e.address, e.jail))
        if self.settings.aggregate.enabled:
            out = aggregate(out, self.settings.aggregate, self.never)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "last_time": self.last_time,
            "jails": {j.cfg.name: j.state.to_dict() for j in self.jails},
            "names": self.names,
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        self.lines = int(data.get("lines", 0))
        self.last_time = data.get("last_time")
        self.names = dict(data.get("names", {}))
        for j in self.jails:
            saved = data.get("jails", {}).get(j.cfg.name)
            if saved:
                j.state.load_dict(saved)


def aggregate(entries: list[BanEntry], agg: Aggregate, never: NeverBan) -> list[BanEntry]:
    """Replace the addresses of a crowded /24 (/64) by the prefix, unless it covers a never-ban address."""
    groups: dict[str, list[BanEntry]] = {}
    for e in entries:
        net = e.network
        if net.num_addresses != 1:
            continue
        plen = agg.ipv4_prefix if net.version == 4 else agg.ipv6_prefix
        groups.setdefault(str(net.supernet(new_prefix=plen)), []).append(e)
    replaced: set[int] = set()
    out: list[BanEntry] = []
    for prefix, members in groups.items():
        addrs = sorted({m.address for m in members})
        if len(addrs) < agg.min_addresses:
            continue
        reason = never.overlap(prefix)
        if reason is not None:
            log.warning("refused to ban %s for %d banned addresses in it: %s", prefix, len(addrs), reason)
            continue
        replaced.update(id(m) for m in members)
        permanent = any(m.until is None for m in members)
        out.append(BanEntry(
            address=prefix, jail=",".join(sorted({m.jail for m in members})),
            failures=sum(m.failures for m in members), first=min(m.first for m in members),
            last=max(m.last for m in members),
            until=None if permanent else max(m.until for m in members if m.until is not None),
            bans=max(m.bans for m in members),
            evidence=[line for m in members for line in m.evidence[-1:]], members=addrs,
        ))  # fmt: skip
    out.extend(e for e in entries if id(e) not in replaced)
    out.sort(key=lambda e: (e.first, e.address, e.jail))
    return out


def ban_records(engine: BanEngine) -> Iterator[tuple[str, str, float, float | None]]:
    """``(jail, ip, time, until)`` of every ban in force in ``engine`` (for tests and --list)."""
    for j in engine.jails:
        for t in j.state.ban_list.values():
            eob = t.end_of_ban(j.cfg.params.bantime)
            yield j.cfg.name, t.ip, t.time, None if t.get_ban_time(j.cfg.params.bantime) == -1 else eob
