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

import logging
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any, Iterable, Mapping

from maillens.banconfig import HELO_IS_US, Aggregate, BanSettings, JailConfig
from maillens.banmodel import SVC_LINES, BanHistory, Increment, JailState
from maillens.banscan import MAX_EVIDENCE, Finder, ScanSpec, event_time, filter_hits, normalize_ip, scan_paths
from maillens.events import Event
from maillens.exporters import BanEntry
from maillens.neverban import NeverBan

log = logging.getLogger("maillens.bans")

__all__ = ["BanEngine", "BanSettings", "Refusal", "aggregate", "normalize_ip"]

# --------------------------------------------------------------------------- evaluation


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
    """A jail at run time: its fail2ban state (and its filter, for filter jails)."""

    def __init__(self, cfg: JailConfig, history: BanHistory) -> None:
        self.cfg = cfg
        self.state = JailState(cfg.params, history)
        # failures of never-banned addresses, counted the same way, only to report refusals
        self.shadow = JailState(replace(cfg.params, increment=Increment()), BanHistory())
        self.filter = None
        if cfg.filter_spec is not None:
            from maillens.filterconf import load_filter

            self.filter = load_filter(cfg.filter_spec)


class BanEngine:
    """All jails over one stream of lines (or stored events), in log order.

    Finding evidence (``banscan.Finder``, fail2ban filters) is separate from
    counting it (``_apply``, in order, in this process).
    """

    def __init__(self, settings: BanSettings, never: NeverBan, history: BanHistory | None = None) -> None:
        self.settings = settings
        self.never = never
        self.history = history if history is not None else BanHistory(settings.history)
        self.jails = [_Jail(cfg, self.history) for cfg in settings.jails]
        self.lines = 0
        self.last_time: float | None = None
        self.refused: dict[tuple[str, str], Refusal] = {}
        self.names: dict[str, str] = {}  # last client name per banned-for address (access.client name keys)
        self.finder = Finder(settings.jails, NeverBan(our_names=never.our_names))
        self.filters = {i: j.filter for i, j in enumerate(self.jails) if j.filter is not None}
        needles: list[str] = []
        self.every_line = False  # an event jail whose evidence has no known needle
        for j in self.jails:
            if j.filter is None:
                n = j.cfg.needles
                if n is None:
                    self.every_line = True
                else:
                    needles.extend(n)
        # HELO-is-us conditions pick lines by the HELO itself (banscan applies is_us to it)
        self.helo_us = HELO_IS_US in needles
        needles = [n for n in needles if n != HELO_IS_US]
        self.needles = tuple(dict.fromkeys(needles))

    # -- feeding -------------------------------------------------------------
    def feed_paths(
        self, paths: Iterable[str], *, until: float | None = None, tz: tzinfo | None = None,
        reference: datetime | None = None, workers: int | None = None, block_size: int | None = None,
    ) -> None:
        """Read log files (globs, rotated sets, compressed) and evaluate every line.

        Lines after ``until`` (epoch seconds) are not used.  ``tz`` is the
        zone of time stamps without one (default: local); ``reference``
        replaces the files' modification times for year inference.  With
        only event jails whose kinds have needles, lines are picked by
        ``banscan`` (in parallel for big inputs); fail2ban-filter jails need
        every line and read line by line.
        """
        paths = list(paths)
        if self.filters or self.every_line or not (self.needles or self.helo_us):
            self._feed_lines(paths, until, tz, reference)
            return
        spec = ScanSpec(self.finder, self.needles, tz, self.helo_us)
        for n_lines, picks, last_t in scan_paths(paths, spec, workers=workers, block_size=block_size,
                                                 reference=reference):  # fmt: skip
            base = self.lines
            for i, t, hits, name, raw in picks:
                if until is not None and t is not None and t > until:
                    return
                self.lines = base + i
                self._apply(t, hits, name, raw or "")
            self.lines = base + n_lines
            if last_t is not None and (self.last_time is None or last_t > self.last_time):
                if until is None or last_t <= until:
                    self.last_time = last_t

    def _feed_lines(self, paths: list[str], until: float | None, tz: tzinfo | None, reference: datetime | None) -> None:
        from maillens.classify import Classifier
        from maillens.sources import expand_paths, read_file_lines

        clf = Classifier(tz=tz)
        for item in expand_paths(paths):
            clf.start_source(reference or item.reference_time)
            for line in read_file_lines(item.path):
                ev = clf.classify(line.text)
                t = event_time(ev)
                if until is not None and t is not None and t > until:
                    return
                self._event(ev, line.text, t)

    def feed_events(self, events: Iterable[Event]) -> None:
        """Already classified events (the store's), each counted as one line."""
        for ev in events:
            self._event(ev, ev.raw, event_time(ev))

    def _event(self, ev: Event, raw: str, t: float | None) -> None:
        hits = self.finder.find(ev)
        if self.filters:
            hits += filter_hits(self.filters, raw)
            hits.sort()
        self._apply(t, hits, ev.data.get("client_name"), raw[:MAX_EVIDENCE])

    def _apply(self, t: float | None, hits: Iterable[tuple[int, str]], name: str | None, raw: str) -> None:
        """One line, its evidence found: count it in each jail, in config order (steps of ``banmodel``)."""
        self.lines += 1
        if t is None:
            t = self.last_time
        else:
            self.last_time = t
        if t is None:
            return
        svc = self.lines % SVC_LINES == 0
        if svc:
            found = dict(hits)
            todo: Iterable[tuple[int, str | None]] = [(i, found.get(i)) for i in range(len(self.jails))]
        elif not hits:
            return
        else:
            todo = hits
        for i, ip in todo:
            jail = self.jails[i]
            if ip is not None:
                if name:
                    self.names[ip] = name
                reason = self.never.reason(ip, name or self.names.get(ip))
                if reason is not None:
                    self._shadow(jail, t, ip, raw, reason)
                    ip = None
            state = jail.state
            if state.next_unban <= t:  # (check_unban's own first test, inlined: this runs per line)
                state.check_unban(t)
            if ip is not None:
                state.add_line_failure(t, ip, raw)
            if svc:
                state.perform_svc(t)
                jail.shadow.perform_svc(t)
            if state.queue:
                state.check_ban(t)

    def _shadow(self, jail: _Jail, t: float, ip: str, raw: str, reason: str) -> None:
        for ticket in jail.shadow.process(t, ip, raw):
            jail.shadow.ban_list.clear()
            key = (ip, jail.cfg.name)
            old = self.refused.get(key)
            if old is None:
                log.info("refused to ban %s (jail %s, %d failures): %s", ip, jail.cfg.name, ticket.failures, reason)
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
            log.info("refused to ban %s for %d banned addresses in it: %s", prefix, len(addrs), reason)
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
