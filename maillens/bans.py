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
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping

from maillens.banmodel import SVC_LINES, BanHistory, Increment, JailParams, JailState, parse_duration
from maillens.errors import ConfigError
from maillens.events import Event
from maillens.exporters import BanEntry
from maillens.neverban import NeverBan

log = logging.getLogger("maillens.bans")

#: Built-in jails for a hardened MX.  Each can be changed or switched off
#: under ``[bans.jails.NAME]``; ``default_jails = false`` drops them all.
DEFAULT_JAILS: dict[str, dict[str, Any]] = {
    # Password guessing on submission (or port 25).  A failure the server
    # caused (auth backend down) is not the client's: ignored.
    "sasl": {
        "match": [{"kind": "sasl_failure"}],
        "ignore": [{"reason": "~(?i)connection lost to authentication server"}],
        "maxretry": 5, "findtime": "1h", "bantime": "1h",
        "increment": {"factor": 1, "maxtime": "1w"},
    },
    # Clients that keep coming back while listed by a DNSBL.
    "rbl": {
        "match": [{"kind": "reject", "restriction": "reject_rbl_client"},
                  {"kind": "postscreen", "action": "DNSBL"}],
        "maxretry": 3, "findtime": "1h", "bantime": "6h",
        "increment": {"factor": 1, "maxtime": "1w"},
    },
    # HELO claiming to be this server (the guide's helo regexp map, or a
    # HELO naming one of our names or addresses).
    "helo-forgery": {
        "match": [{"kind": "reject", "restriction": "check_helo_access"},
                  {"kind": "reject", "helo_is_us": True}],
        "maxretry": 1, "findtime": "1d", "bantime": "1d",
        "increment": {"factor": 1, "maxtime": "4w"},
    },
    # Talking before the greeting or without waiting for replies: bots.
    "pregreet": {
        "match": [{"kind": "pipelining"},
                  {"kind": "postscreen", "action": ["PREGREET", "COMMAND PIPELINING"]}],
        "maxretry": 2, "findtime": "1h", "bantime": "1d",
        "increment": {"factor": 1, "maxtime": "4w"},
    },
    # smtpd_hard_error_limit reached.
    "too-many-errors": {
        "match": [{"kind": "too_many_errors"}],
        "maxretry": 2, "findtime": "1h", "bantime": "6h",
        "increment": {"factor": 1, "maxtime": "1w"},
    },
    # Trying to relay through us.
    "relay-probe": {
        "match": [{"kind": "reject", "restriction": "reject_unauth_destination"}],
        "maxretry": 3, "findtime": "1h", "bantime": "1d",
        "increment": {"factor": 1, "maxtime": "4w"},
    },
    # Guessing recipients: many unknown users in a short time.
    "dictionary": {
        "match": [{"kind": "reject",
                   "restriction": ["reject_unlisted_recipient", "reject_unverified_recipient"]}],
        "maxretry": 10, "findtime": "10m", "bantime": "6h",
        "increment": {"factor": 1, "maxtime": "1w"},
    },
}  # fmt: skip

#: Text every line of an event kind contains (checked against the corpus by
#: the tests), so lines no jail can use are not classified at all.
KIND_NEEDLES: dict[str, tuple[str, ...]] = {
    "reject": ("reject:",),
    "reject_warning": ("reject_warning:",),
    "sasl_failure": ("authentication failed",),
    "pipelining": ("improper command pipelining",),
    "too_many_errors": ("too many errors",),
    "lost_connection": ("lost connection",),
    "timeout": ("timeout after",),
    "postscreen": ("postscreen",),
}

_JAIL_KEYS = {
    "enabled", "match", "ignore", "filter", "maxretry", "findtime", "bantime", "maxmatches", "increment",
    "bantime.increment", "bantime.factor", "bantime.multipliers", "bantime.maxtime", "bantime.overalljails",
}  # fmt: skip
_INCREMENT_KEYS = {"enabled", "factor", "multipliers", "maxtime", "overalljails"}
_SECTION_KEYS = {
    "ignoreip", "loopback", "ignoreself", "mynetworks", "access_client", "history", "default_jails",
    "aggregate", "jails",
}  # fmt: skip
_MAX_EVIDENCE = 1000


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """All of ``tests`` must hold: field name -> set of values or a regex."""

    kind: frozenset[str] | None
    tests: tuple[tuple[str, Any], ...]

    def matches(self, ev: Event, never: "NeverBan | None") -> bool:
        if self.kind is not None and ev.kind not in self.kind:
            return False
        for name, test in self.tests:
            if name == "helo_is_us":
                if bool(never is not None and never.is_us(ev.helo)) != test:
                    return False
                continue
            value = getattr(ev, name)
            if isinstance(test, re.Pattern):
                if value is None or not test.search(str(value)):
                    return False
            elif value is None or str(value) not in test:
                return False
        return True


def _compile_condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: each condition is a table like {{kind = \"reject\"}}, not {raw!r}")
    kind = None
    tests: list[tuple[str, Any]] = []
    for name, value in raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ConfigError(f"{where}: {name!r} is not an event field name")
        if name == "helo_is_us":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: helo_is_us must be true or false")
            tests.append((name, value))
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {name} must be a string, a number or a list of them")
        if len(values) == 1 and isinstance(values[0], str) and values[0].startswith("~"):
            try:
                tests.append((name, re.compile(values[0][1:])))
            except re.error as exc:
                raise ConfigError(f"{where}: {name}: bad regular expression {values[0][1:]!r} ({exc})") from None
            continue
        if name == "kind":
            kind = frozenset(str(v) for v in values)
            continue
        tests.append((name, frozenset(str(v) for v in values)))
    return Condition(kind, tuple(tests))


def _compile_conditions(raw: Any, where: str) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    return tuple(_compile_condition(item, f"{where}[{i}]") for i, item in enumerate(items))


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class JailConfig:
    params: JailParams
    match: tuple[Condition, ...] = ()
    ignore: tuple[Condition, ...] = ()
    filter_spec: str | None = None

    @property
    def name(self) -> str:
        return self.params.name

    @property
    def needles(self) -> tuple[str, ...] | None:
        """Substrings one of which every evidence line has; None when any line may be."""
        if self.filter_spec is not None:
            return None
        out: list[str] = []
        for cond in self.match:
            if cond.kind is None or any(k not in KIND_NEEDLES for k in cond.kind):
                return None
            for k in cond.kind:
                out.extend(KIND_NEEDLES[k])
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Aggregate:
    enabled: bool = False
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    min_addresses: int = 3


@dataclass(frozen=True)
class BanSettings:
    jails: tuple[JailConfig, ...]
    ignoreip: tuple[str, ...] = ()
    loopback: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    ignoreself: bool = True
    mynetworks: bool = True
    access_client: bool = True
    history: float | None = 7 * 86400.0
    aggregate: Aggregate = field(default_factory=Aggregate)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "BanSettings":
        """Validate ``[bans]``; every error names the key to fix."""
        unknown = sorted(set(section) - _SECTION_KEYS)
        if unknown:
            raise ConfigError(f"[bans] has no setting {unknown[0]!r}; known: {', '.join(sorted(_SECTION_KEYS))}")
        jails_raw = section.get("jails", {})
        if not isinstance(jails_raw, Mapping):
            raise ConfigError("[bans.jails] must be a table of jails ([bans.jails.NAME])")
        use_defaults = _bool(section.get("default_jails", True), "[bans] default_jails")
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in DEFAULT_JAILS.items()} if use_defaults else {}
        for name, raw in jails_raw.items():
            if not isinstance(raw, Mapping):
                raise ConfigError(f"[bans.jails.{name}] must be a table")
            base = merged.get(name, {})
            if "filter" in raw or "match" in raw:
                base = {k: v for k, v in base.items() if k not in ("filter", "match", "ignore")}
            merged[name] = {**base, **raw}
        jails = tuple(j for name, raw in merged.items() if (j := _jail(name, raw)) is not None)
        history_raw = section.get("history", "1w")
        history = None if history_raw in (-1, "-1", None) else _duration(history_raw, "[bans] history")
        return cls(
            jails=jails,
            ignoreip=_addr_list(section.get("ignoreip", ()), "[bans] ignoreip"),
            loopback=_addr_list(section.get("loopback", cls.loopback), "[bans] loopback"),
            ignoreself=_bool(section.get("ignoreself", True), "[bans] ignoreself"),
            mynetworks=_bool(section.get("mynetworks", True), "[bans] mynetworks"),
            access_client=_bool(section.get("access_client", True), "[bans] access_client"),
            history=history,
            aggregate=_aggregate(section.get("aggregate", {})),
        )


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value, what=where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _addr_list(value: Any, where: str) -> tuple[str, ...]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{where} must be a list of addresses or networks")
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip("[]").replace("]/", "/"), strict=False)))
        except ValueError:
            raise ConfigError(f"{where}: {item!r} is not an IP address or network (like 192.0.2.0/24)") from None
    return tuple(out)


def _aggregate(raw: Any) -> Aggregate:
    if not isinstance(raw, Mapping):
        raise ConfigError("[bans.aggregate] must be a table")
    unknown = sorted(set(raw) - {"enabled", "ipv4_prefix", "ipv6_prefix", "min_addresses"})
    if unknown:
        raise ConfigError(f"[bans.aggregate] has no setting {unknown[0]!r}")
    agg = Aggregate(
        enabled=_bool(raw.get("enabled", False), "[bans.aggregate] enabled"),
        ipv4_prefix=raw.get("ipv4_prefix", 24),
        ipv6_prefix=raw.get("ipv6_prefix", 64),
        min_addresses=raw.get("min_addresses", 3),
    )
    for key, lo, hi in (("ipv4_prefix", 8, 32), ("ipv6_prefix", 16, 128), ("min_addresses", 2, 1 << 20)):
        v = getattr(agg, key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"[bans.aggregate] {key} must be a whole number from {lo} to {hi}")
    return agg


def _increment(raw: Mapping[str, Any], where: str) -> Increment:
    inc: dict[str, Any] = {}
    table = raw.get("increment")
    if isinstance(table, bool):
        inc["enabled"] = table
    elif isinstance(table, Mapping):
        unknown = sorted(set(table) - _INCREMENT_KEYS)
        if unknown:
            raise ConfigError(f"{where}.increment has no setting {unknown[0]!r}; known: {', '.join(sorted(_INCREMENT_KEYS))}")
        inc = {"enabled": True, **table}
    elif table is not None:
        raise ConfigError(f"{where}: increment must be true/false or a table")
    for key in _INCREMENT_KEYS - {"enabled"}:
        if f"bantime.{key}" in raw:
            inc[key] = raw[f"bantime.{key}"]
    if "bantime.increment" in raw:
        inc["enabled"] = raw["bantime.increment"]
    enabled = _bool(inc.get("enabled", False), f"{where}: increment enabled")
    factor = inc.get("factor", 1)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise ConfigError(f"{where}: bantime factor must be a positive number")
    mult = inc.get("multipliers", ())
    if isinstance(mult, str):
        mult = mult.split()
    try:
        multipliers = tuple(float(m) for m in mult)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: bantime multipliers must be numbers, like [1, 2, 4, 8]") from None
    maxtime = inc.get("maxtime")
    return Increment(
        enabled=enabled,
        factor=float(factor),
        multipliers=multipliers,
        maxtime=None if maxtime is None else _duration(maxtime, f"{where}: bantime maxtime"),
        overalljails=_bool(inc.get("overalljails", False), f"{where}: overalljails"),
    )


def _jail(name: str, raw: Mapping[str, Any]) -> JailConfig | None:
    where = f"[bans.jails.{name}]"
    unknown = sorted(set(raw) - _JAIL_KEYS)
    if unknown:
        raise ConfigError(f"{where} has no setting {unknown[0]!r}; known: {', '.join(sorted(_JAIL_KEYS))}")
    if not _bool(raw.get("enabled", True), f"{where} enabled"):
        return None
    filter_spec = raw.get("filter")
    match = _compile_conditions(raw.get("match"), f"{where} match")
    if filter_spec is not None and (not isinstance(filter_spec, str) or not filter_spec.strip()):
        raise ConfigError(f"{where} filter must be a filter file name, e.g. 'postfix.conf[mode=auth]'")
    if (filter_spec is None) == (not match):
        raise ConfigError(f"{where} needs its evidence: either match = [{{kind = ...}}] or filter = '...', not both")
    maxretry = raw.get("maxretry", 5)
    if isinstance(maxretry, bool) or not isinstance(maxretry, int) or maxretry < 1:
        raise ConfigError(f"{where} maxretry must be a whole number of at least 1")
    findtime = _duration(raw.get("findtime", 600), f"{where} findtime")
    bantime = _duration(raw.get("bantime", 600), f"{where} bantime")
    if findtime <= 0:
        raise ConfigError(f"{where} findtime must be positive")
    if bantime != -1 and bantime <= 0:
        raise ConfigError(f"{where} bantime must be positive, or -1 for permanent bans")
    maxmatches = raw.get("maxmatches")
    if maxmatches is not None and (isinstance(maxmatches, bool) or not isinstance(maxmatches, int) or maxmatches < 0):
        raise ConfigError(f"{where} maxmatches must be a whole number")
    params = JailParams(name, maxretry, findtime, bantime, _increment(raw, where), maxmatches)
    if filter_spec is not None:
        from maillens.filterconf import load_filter

        load_filter(filter_spec)  # fail now, with the filter's own message, not mid-run
    return JailConfig(params, match, _compile_conditions(raw.get("ignore"), f"{where} ignore"), filter_spec)


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

    def evidence(self, ev: Event, never: NeverBan) -> str | None:
        """The address an event is evidence against (event-condition jails), if any."""
        if not any(c.matches(ev, never) for c in self.cfg.match):
            return None
        if any(c.matches(ev, never) for c in self.cfg.ignore):
            return None
        return normalize_ip(ev.client_ip)


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
        for j in self.jails:
            if j.filter is not None:
                continue
            n = j.cfg.needles
            if n is None:
                self.every_line = True
            else:
                needles.extend(n)
        self.needles = tuple(dict.fromkeys(needles))

    # -- feeding -------------------------------------------------------------
    def feed_paths(self, paths: Iterable[str], *, until: float | None = None) -> None:
        """Read log files (globs, rotated sets, compressed) and evaluate every line.

        Lines after ``until`` (epoch seconds) are not used.
        """
        from maillens.classify import Classifier
        from maillens.sources import expand_paths, read_file_lines

        clf = Classifier()
        for item in expand_paths(paths):
            clf.start_source(item.reference_time)
            last: str | None = None
            for line in read_file_lines(item.path):
                used = self.feed_line(line.text, clf, until=until)
                if used is None:
                    return
                last = None if used else line.text
            if last is not None:
                self._note_time(clf.classify(last))  # "as of the last line's time"

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
            or any(n in raw for n in self.needles)
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
        name = ev.client_name
        if name and ev.client_ip:
            key = normalize_ip(ev.client_ip)
            if key is not None:
                self.names[key] = name
        svc = self.lines % SVC_LINES == 0
        for i, jail in enumerate(self.jails):
            ip = hits.get(i) if jail.filter is not None else jail.evidence(ev, self.never)
            if ip is None and not svc:
                continue
            if ip is not None:
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
