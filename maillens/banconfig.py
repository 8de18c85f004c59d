"""The ``[bans]`` configuration: jails, their evidence, the never-ban switches.

Every key is checked here and an error names the key to fix.  The built-in
jails (``DEFAULT_JAILS``) suit a hardened MX; ``[bans.jails.NAME]`` changes
one (keys given replace the built-in ones; giving ``match`` or ``filter``
replaces its evidence) or adds a jail, ``enabled = false`` drops one, and
``default_jails = false`` drops them all.

A jail's evidence is either ``match``, a list of event conditions (a table
of event fields, all of which must hold: a value, a list of values, or
``"~regex"``; plus ``helo_is_us = true`` for a HELO naming this server) with
an optional ``ignore`` list of the same form, or ``filter``, any fail2ban
filter file with parameters (``/etc/fail2ban/filter.d/postfix.conf[mode=auth]``
or a name from ``parsers/``).  fail2ban's dotted keys (``"bantime.increment"``,
``"bantime.factor"``, ...) are accepted as well as an ``increment`` table.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from maillens.banmodel import Increment, JailParams, parse_duration
from maillens.errors import ConfigError
from maillens.events import Event

if TYPE_CHECKING:  # pragma: no cover
    from maillens.neverban import NeverBan

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

#: Text a reject line must hold for the rules to name it with a restriction:
#: Postfix's own reply texts, as ``parsers/postfix-reject.conf`` reads them
#: (checked against the corpus by the tests).  A jail on one of these
#: restrictions needs only such lines classified, not every reject.
RESTRICTION_NEEDLES: dict[str, tuple[str, ...]] = {
    "reject_rbl_client": ("Service unavailable; Client host [",),
    "check_helo_access": ("Helo command rejected: ",),
    "reject_unauth_destination": ("Relay access denied",),
    "reject_unlisted_recipient": ("User unknown in ",),
    "reject_unverified_recipient": ("undeliverable address", "unverified address"),
}
#: A condition ``helo_is_us = true`` picks lines by this marker: the scanner
#: then picks lines whose ``helo=<...>`` names this server.
HELO_IS_US = "\x00helo_is_us"

_JAIL_KEYS = {
    "enabled", "match", "ignore", "filter", "maxretry", "findtime", "bantime", "maxmatches", "increment",
    "bantime.increment", "bantime.factor", "bantime.multipliers", "bantime.maxtime", "bantime.overalljails",
}  # fmt: skip
_INCREMENT_KEYS = {"enabled", "factor", "multipliers", "maxtime", "overalljails"}
_SECTION_KEYS = {
    "ignoreip", "loopback", "ignoreself", "mynetworks", "access_client", "history", "default_jails",
    "aggregate", "jails",
}  # fmt: skip


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """All of ``tests`` must hold: field name -> set of values or a regex."""

    kind: frozenset[str] | None
    tests: tuple[tuple[str, Any], ...]

    def matches(self, ev: Event, never: "NeverBan | None") -> bool:
        if self.kind is not None and ev.kind not in self.kind:
            return False
        return self.holds(ev, ev.data, never)

    def holds(self, ev: Event, data: Mapping[str, Any], never: "NeverBan | None") -> bool:
        """The field tests, the kind already known to match (runs per evidence line)."""
        for name, test in self.tests:
            if name == "helo_is_us":
                if bool(never is not None and never.is_us(data.get("helo"))) != test:
                    return False
                continue
            value = getattr(ev, name) if name in _EVENT_ATTRS else data.get(name)
            if value is None:
                return False
            if value.__class__ is not str:
                value = str(value)
            if test.__class__ is frozenset:
                if value not in test:
                    return False
            elif not test.search(value):
                return False
        return True


#: Event fields that are attributes rather than ``data`` entries.
_EVENT_ATTRS = frozenset({"kind", "ts", "host", "program", "pid", "source", "lineno", "queue_id", "raw", "message",
                          "rule", "daemon"})  # fmt: skip


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
            tests = dict(cond.tests)
            restrictions = tests.get("restriction")
            if tests.get("helo_is_us") is True:
                out.append(HELO_IS_US)
            elif (isinstance(restrictions, frozenset) and cond.kind <= {"reject", "reject_warning"}
                  and all(r in RESTRICTION_NEEDLES for r in restrictions)):  # fmt: skip
                for r in sorted(restrictions):
                    out.extend(RESTRICTION_NEEDLES[r])
            else:
                for k in sorted(cond.kind):
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


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _bool(value: Any, where: str) -> bool:
    """true/false, or the same as a string (MAILLENS_BANS_* environment overrides are strings)."""
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
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
        from maillens.errors import FilterError
        from maillens.filterconf import load_filter

        try:
            load_filter(filter_spec)  # fail now, with the filter's own message, not mid-run
        except FilterError as exc:
            raise ConfigError(f"{where} filter: {exc}") from None
    return JailConfig(params, match, _compile_conditions(raw.get("ignore"), f"{where} ignore"), filter_spec)
