"""The ``tail`` view: a tag, key facts and a counts bar for each classified line.

Everything here is a pure function of events and state (the output loop is
``maillens.cli.tail_cmd``), so tests render to a string exactly and the piped
form can be compared with ``maillens parse`` line for line.

Terminal safety: text from a log is attacker-controlled (a HELO name can carry
``\\x1b]52;...`` to rewrite the clipboard or retitle the window), so every
string that came from a line goes through ``neutralise`` / ``safe_text``
before display: C0/C1 control characters, DEL and Unicode bidi overrides are
shown as visible ``\\xNN`` / ``\\uNNNN`` escapes.  Rich markup is never parsed
from log text (only ``Text`` objects are printed).
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from maillens.errors import ConfigError, UsageError
from maillens.events import KINDS, OFFENCE_KINDS, RESTRICTIONS, Event

if TYPE_CHECKING:
    from rich.text import Text

# ---------------------------------------------------------------------------------------------
# Terminal safety

from maillens.textsafe import UNSAFE_RE, _escape, json_safe, neutralise  # noqa: E402,F401  (re-exported)


def safe_text(text: str, style: str = "") -> "Text":
    """A rich ``Text`` of log-borne ``text``: no markup parsing, escapes in reverse video."""
    from rich.text import Text

    out = Text(style=style)
    pos = 0
    for m in UNSAFE_RE.finditer(text):
        out.append(text[pos:m.start()])
        out.append(_escape(m.group(0)), style="reverse")
        pos = m.end()
    out.append(text[pos:])
    return out


# ---------------------------------------------------------------------------------------------
# Tags: one short class name per event, with a colour and filter groups


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    style: str
    groups: frozenset[str]


def _tag(name: str, style: str, *groups: str) -> Tag:
    return Tag(name, style, frozenset({name.lower(), *groups}))


TAGS: dict[str, Tag] = {t.name: t for t in (
    _tag("REJECT", "bold red", "reject"),
    _tag("RBL", "bold magenta", "reject", "rbl"),
    _tag("REJ-WARN", "yellow", "warn", "rbl-warn"),
    _tag("SPF-FAIL", "red", "spf"),
    _tag("SPF", "cyan", "spf"),
    _tag("SASL-FAIL", "bold bright_red", "sasl", "auth"),
    _tag("AUTH", "green", "sasl", "auth"),
    _tag("BOUNCE", "bold red", "bounce", "delivery"),
    _tag("NDR", "yellow", "bounce"),
    _tag("EXPIRED", "red", "bounce", "delivery"),
    _tag("DEFER", "yellow", "defer", "delivery"),
    _tag("SENT", "green", "delivery"),
    _tag("CONN-ERR", "yellow", "conn", "conn-err"),
    _tag("CONNECT", "dim", "conn"),
    _tag("DISCONN", "dim", "conn"),
    _tag("PSCREEN", "magenta", "postscreen"),
    _tag("QUEUED", "blue", "queue", "info"),
    _tag("WARN", "yellow", "warn"),
    _tag("TLS", "dim", "info"),
    _tag("INFO", "dim", "info"),
    _tag("UNPARSED", "dim red", "info"),
)}
#: Order of the counts bar: the things an incident is about first.
TAG_ORDER: tuple[str, ...] = tuple(TAGS)
TAG_WIDTH = max(len(t) for t in TAGS)

_KIND_TAG = {
    "reject_warning": "REJ-WARN", "sasl_failure": "SASL-FAIL", "expired": "EXPIRED",
    "bounce_notice": "NDR", "lost_connection": "CONN-ERR", "timeout": "CONN-ERR",
    "too_many_errors": "CONN-ERR", "pipelining": "CONN-ERR", "connect": "CONNECT",
    "disconnect": "DISCONN", "postscreen": "PSCREEN", "queued": "QUEUED", "warning": "WARN",
    "tls": "TLS", "unparsed": "UNPARSED",
}
_STATUS_TAG = {"sent": "SENT", "deferred": "DEFER", "bounced": "BOUNCE", "expired": "EXPIRED"}


def tag_for(ev: Event) -> str:
    """The tag of one event: what kind of trouble (or success) it is, in one word."""
    kind = ev.kind
    if kind == "reject":
        return "RBL" if str(ev.restriction or "").startswith(("reject_rbl", "reject_rhsbl")) else "REJECT"
    if kind == "spf":
        return "SPF-FAIL" if ev.spf_result == "fail" else "SPF"
    if kind == "delivery":
        return _STATUS_TAG.get(str(ev.status or ""), "INFO")
    if kind == "received":
        return "AUTH" if ev.sasl_username or ev.sasl_method else "QUEUED"
    return _KIND_TAG.get(kind, "INFO")


# ---------------------------------------------------------------------------------------------
# Key facts: a compact, ordered list of (text, style) pieces


Piece = tuple[str, str]


def _client(ev: Event) -> list[Piece]:
    ip, name = ev.client_ip, ev.client_name
    if ip and name and name != ip:
        return [(f"{name}[{ip}]", "bold")]
    if ip or name:
        return [(str(ip or name), "bold")]
    return []


def _addr(value: Any) -> str:
    return f"<{value}>" if value is not None else ""


def _route(sender: Any, recipient: Any) -> list[Piece]:
    if sender is None and recipient is None:
        return []
    return [(f"{_addr(sender) or '?'} → {_addr(recipient) or '?'}", "green")]


def _shorten(text: Any, limit: int = 120) -> str:
    s = str(text or "")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def facts(ev: Event) -> list[Piece]:
    """The key facts of an event, most telling first (narrow terminals crop the end)."""
    kind = ev.kind
    out: list[Piece] = []
    if kind in ("reject", "reject_warning"):
        out += _client(ev)
        out.append((str(ev.stage or "?"), "dim"))
        out.append((str(ev.restriction or "unknown"), "bold red" if kind == "reject" else "yellow"))
        if ev.rbl:
            out.append((str(ev.rbl), "magenta"))
        if "helo" in str(ev.restriction or "") and ev.helo is not None:
            out.append((f"helo=<{ev.helo}>", "yellow"))
        out += _route(ev.sender, ev.recipient)
        out.append((" ".join(str(x) for x in (ev.code, ev.dsn) if x is not None), "dim"))
        if ev.restriction in (None, "unknown"):
            out.append((_shorten(ev.reason), ""))
    elif kind == "spf":
        out.append((str(ev.spf_result or "?"), "bold"))
        out.append((str(ev.identity or ""), "dim"))
        if ev.client_ip:
            out.append((str(ev.client_ip), "bold"))
        if ev.sender:
            out.append((_addr(ev.sender), "green"))
        if ev.helo:
            out.append((f"helo={ev.helo}", "dim"))
    elif kind == "sasl_failure":
        out += _client(ev)
        out.append((str(ev.sasl_method or "?"), ""))
        if ev.sasl_username:
            out.append((f"user={ev.sasl_username}", ""))
        out.append((_shorten(ev.reason, 60), "dim"))
    elif kind == "delivery":
        out.append((_addr(ev.recipient), "green"))
        if ev.orig_recipient:
            out.append((f"(orig {_addr(ev.orig_recipient)})", "dim"))
        out.append((f"relay={ev.relay}", ""))
        out.append((f"dsn={ev.dsn}", "dim"))
        if ev.status not in ("sent",):
            out.append((_shorten(ev.reason), ""))
    elif kind == "received":
        out += _client(ev)
        if ev.sasl_username or ev.sasl_method:
            out.append((f"sasl={ev.sasl_method}:{ev.sasl_username}", "green"))
    elif kind == "queued":
        out.append((f"from={_addr(ev.sender)}", "green"))
        out.append((f"size={ev.size} nrcpt={ev.nrcpt}", "dim"))
    elif kind == "expired":
        out.append((f"from={_addr(ev.sender)} expired, returned to sender", ""))
    elif kind == "bounce_notice":
        out.append((f"non-delivery notice {ev.bounce_queue_id}", ""))
    elif kind in ("connect", "disconnect", "lost_connection", "timeout", "too_many_errors", "pipelining"):
        out += _client(ev)
        if ev.after:
            out.append((f"after {ev.after}", ""))
        if kind != "connect" and kind != "disconnect":
            out.append((kind.replace("_", " "), "dim"))
    else:
        out += _generic(ev)
    return [(t, s) for t, s in out if t]


_CLIENT_KEYS = frozenset({"client_ip", "client_name", "severity", "topic"})


def _generic(ev: Event) -> list[Piece]:
    """Kinds without a layout of their own: client, topic, then the other fields as key=value.

    Only parsed fields are used (not the message), so the piped line is a pure
    function of what ``parse --json`` says; lines no rule understood show their message.
    """
    if ev.kind in ("other", "unparsed"):
        return [(_shorten(ev.message or ev.raw, 200), "")]
    out = _client(ev)
    if ev.topic:
        out.append((str(ev.topic), "bold"))
    rest = [f"{k}={_shorten(v, 80)}" for k, v in ev.data.items() if k not in _CLIENT_KEYS and v not in (None, "")]
    if rest:
        out.append((" ".join(rest), ""))
    if not out:
        out.append((ev.kind.replace("_", " "), "dim"))
    return out


def _zone_matches(zone: str, wanted: Iterable[str]) -> bool:
    """``--rbl spamcop.net`` matches bl.spamcop.net (a parent zone), ``l.spamcop.net`` does not."""
    return bool(zone) and any(zone == w or zone.endswith("." + w) for w in wanted)


def trace_style(queue_id: str) -> str:
    """A colour that is stable for one queue ID, so one message's lines match by eye."""
    palette = ("bright_cyan", "bright_magenta", "bright_yellow", "bright_green", "bright_blue",
               "cyan", "magenta", "yellow", "green", "blue", "bright_red", "orange3")
    return "bold " + palette[zlib.crc32(queue_id.encode()) % len(palette)]


def _time(ev: Event, fmt: str) -> str:
    """The line's time in this machine's zone, as ``trace`` shows it and ``--since`` reads it
    (an RFC 3339 line stamped in another zone would otherwise show a different clock)."""
    return ev.ts.astimezone().strftime(fmt) if ev.ts is not None else "-" * len(datetime(2000, 1, 1).strftime(fmt))


def plain_line(ev: Event, *, raw: bool = False, source: bool = False) -> str:
    """The piped form: ``2026-11-09 08:41:22 RBL       facts…``; no escape codes, no controls."""
    tag = tag_for(ev)
    head = f"{_time(ev, '%Y-%m-%d %H:%M:%S')} {tag:<{TAG_WIDTH}}"
    if source:
        head = f"{ev.source}:{ev.lineno} {head}"
    if raw:
        return f"{head} {neutralise(ev.raw)}"
    parts = ([ev.queue_id] if ev.queue_id else []) + [t for t, _ in facts(ev)]
    return f"{head} {neutralise(' '.join(parts))}"


_RAW_HIGHLIGHTS: tuple[tuple[str, str], ...] = (
    (r"^\S+(?: +\d+ \d\d:\d\d:\d\d)?", "dim"),
    (r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\[[0-9a-fA-F:]{3,}\]", "bold yellow"),
    (r"<[^<>\s]*>", "green"),
    (r"\b[245]\d\d [245]\.\d{1,3}\.\d{1,3}\b|\bdsn=\d\.\d+\.\d+", "cyan"),
    (r"\b(?:reject|reject_warning|warning|status=(?:bounced|deferred|expired)|fatal|panic):?", "bold red"),
    (r"\bstatus=sent\b", "bold green"),
    (r"\b(?:" + "|".join(sorted(RESTRICTIONS, key=len, reverse=True)) + r")\b", "magenta"),
)


def rich_line(ev: Event, *, raw: bool = False, trace: bool = False, source: bool = False) -> "Text":
    """The terminal form: coloured tag, time, queue ID, facts (or the highlighted raw line)."""
    from rich.text import Text

    tag = tag_for(ev)
    line = Text(no_wrap=not raw, overflow="fold" if raw else "ellipsis", end="")
    if source:
        line.append_text(safe_text(f"{ev.source}:{ev.lineno} ", "dim"))
    line.append(_time(ev, "%H:%M:%S") + " ", style="dim")
    line.append(f"{tag:<{TAG_WIDTH}}", style=TAGS[tag].style)
    line.append(" ")
    if raw:
        body = safe_text(ev.raw)
        for pattern, style in _RAW_HIGHLIGHTS:
            body.highlight_regex(pattern, style)
        if ev.queue_id:
            body.highlight_words([ev.queue_id], trace_style(ev.queue_id) if trace else "cyan")
        line.append_text(body)
        return line
    if ev.queue_id:
        line.append_text(safe_text(ev.queue_id, trace_style(ev.queue_id) if trace else "cyan"))
        line.append(" ")
    for i, (text, style) in enumerate(facts(ev)):
        if i:
            line.append(" ")
        line.append_text(safe_text(text, style))
    return line


# ---------------------------------------------------------------------------------------------
# Filters


def _split_list(values: Iterable[str]) -> list[str]:
    return [v.strip().lower() for value in values for v in value.split(",") if v.strip()]


def _tags_of(tokens: Iterable[str], flag: str) -> frozenset[str]:
    known_groups = {g for t in TAGS.values() for g in t.groups}
    kinds = set(KINDS) | {"notice"}
    out: set[str] = set()
    for token in tokens:  # a token may be a tag, a group of tags, an event kind -- or several
        if token in kinds:
            out.add(f"kind:{token}")
        elif token not in known_groups:
            names = ", ".join(sorted(known_groups | kinds))
            raise UsageError(f"{flag} {token!r}: not a class; use one of: {names}")
        out |= {t.name for t in TAGS.values() if token in t.groups}
    return frozenset(out)


def _match_address(patterns: Sequence[str], value: Any) -> bool:
    if value is None:
        return False
    addr = str(value).lower()
    for p in patterns:
        if p.startswith("@") and addr.endswith(p):
            return True
        if any(c in p for c in "*?[") and fnmatchcase(addr, p):
            return True
        if addr == p:
            return True
    return False


@dataclass
class Filters:
    """What to show; options combine with AND, the values of one option with OR.

    With ``trace``, a queue ID seen on a matching line (``client=``, a reject
    with a queue ID, a delivery to the recipient asked for) lets the other lines
    of that message through too, and so does the smtpd process of a matching
    session until its ``disconnect``, so a message can be followed end to end.
    """

    only: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    senders: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    restrictions: frozenset[str] = frozenset()
    rbls: tuple[str, ...] = ()
    grep: re.Pattern[str] | None = None
    trace: bool = False
    _queue_ids: dict[str, None] = field(default_factory=dict)
    _sessions: dict[tuple[Any, Any], None] = field(default_factory=dict)

    @classmethod
    def build(cls, *, only: Iterable[str] = (), exclude: Iterable[str] = (), client: Iterable[str] = (),
              sender: Iterable[str] = (), recipient: Iterable[str] = (), restriction: Iterable[str] = (),
              rbl: Iterable[str] = (), grep: str | None = None, trace: bool = False) -> "Filters":
        """Validate the options' values; each mistake names its flag and what would be accepted."""
        networks = []
        for value in client:
            try:
                networks.append(ipaddress.ip_network(value.strip(), strict=False))
            except ValueError:
                raise UsageError(f"--client {value!r}: give an IP address or a CIDR such as 192.0.2.0/24") from None
        restrictions = frozenset(_split_list(restriction))
        bad = restrictions - set(RESTRICTIONS)
        if bad:
            raise UsageError(f"--restriction {sorted(bad)[0]!r}: not a Postfix restriction name; "
                             f"use one of: {', '.join(RESTRICTIONS)}")
        pattern = None
        if grep is not None:
            try:
                pattern = re.compile(grep)
            except re.error as exc:
                raise UsageError(f"--grep {grep!r}: not a valid regular expression ({exc})") from None
        return cls(only=_tags_of(_split_list(only), "--only"), exclude=_tags_of(_split_list(exclude), "--not"),
                   networks=tuple(networks), senders=tuple(_split_list(sender)),
                   recipients=tuple(_split_list(recipient)), restrictions=restrictions,
                   rbls=tuple(z.lower().rstrip(".") for z in _split_list(rbl)), grep=pattern, trace=trace)

    def _in(self, selection: frozenset[str], ev: Event, tag: str) -> bool:
        return tag in selection or f"kind:{ev.kind}" in selection

    def _fields_match(self, ev: Event) -> bool:
        if self.networks:
            try:
                ip = ipaddress.ip_address(str(ev.client_ip))
            except ValueError:
                return False
            if not any(ip in net for net in self.networks):
                return False
        if self.senders and not _match_address(self.senders, ev.sender):
            return False
        if self.recipients and not (_match_address(self.recipients, ev.recipient)
                                    or _match_address(self.recipients, ev.orig_recipient)):
            return False
        if self.restrictions and ev.restriction not in self.restrictions:
            return False
        if self.rbls and not _zone_matches(str(ev.rbl or "").lower(), self.rbls):
            return False
        return True

    def matches(self, ev: Event, tag: str) -> bool:
        # fields (and --trace's memory of queue IDs and sessions) first: a message's ``client=``
        # line must be remembered even when --only hides it, or its deliveries would be lost
        if (self.networks or self.senders or self.recipients or self.restrictions or self.rbls) \
                and not self._related(ev):
            return False
        if self.only and not self._in(self.only, ev, tag):
            return False
        if self.exclude and self._in(self.exclude, ev, tag):
            return False
        return self.grep is None or self.grep.search(ev.raw) is not None

    def _related(self, ev: Event) -> bool:
        if not self.trace:
            return self._fields_match(ev)
        session = (ev.host, ev.pid) if ev.pid is not None and str(ev.program or "").endswith("smtpd") else None
        matched = (self._fields_match(ev) or bool(ev.queue_id and ev.queue_id in self._queue_ids)
                   or (session in self._sessions and ev.client_ip is None))
        if matched:
            for qid in (ev.queue_id, ev.bounce_queue_id):  # a bounce's notice belongs to its message
                if qid:
                    self._remember(self._queue_ids, str(qid))
            if session is not None:
                # lines of the same smtpd process without a client (Cyrus SASL's warnings) are its session's
                if ev.kind == "disconnect":
                    self._sessions.pop(session, None)
                else:
                    self._remember(self._sessions, session)
        return matched

    @staticmethod
    def _remember(seen: dict[Any, None], key: Any) -> None:
        seen[key] = None
        if len(seen) > 100_000:  # bounded memory on a week-long follow
            del seen[next(iter(seen))]


# ---------------------------------------------------------------------------------------------
# Running state and the bottom bar


@dataclass
class LiveState:
    """Counts per tag and the offending clients of the last ``window`` of log time.

    The window is measured in the log's own time (the newest time stamp seen),
    not the wall clock, so replaying history (``-n +1``, ``--since``) shows what
    the bar showed then, and a test gets the same bar every run.
    """

    window: timedelta = timedelta(minutes=10)
    counts: Counter[str] = field(default_factory=Counter)
    total: int = 0
    newest: datetime | None = None
    _recent: deque[tuple[datetime, str]] = field(default_factory=deque)
    _offenders: Counter[str] = field(default_factory=Counter)

    def add(self, ev: Event, tag: str) -> None:
        self.counts[tag] += 1
        self.total += 1
        if ev.ts is not None and (self.newest is None or ev.ts > self.newest):
            self.newest = ev.ts
        if ev.kind in OFFENCE_KINDS and ev.client_ip and ev.ts is not None:
            self._recent.append((ev.ts, str(ev.client_ip)))
            self._offenders[str(ev.client_ip)] += 1
        self._expire()

    def _expire(self) -> None:
        if self.newest is None:
            return
        horizon = self.newest - self.window
        while self._recent and self._recent[0][0] < horizon:
            _, ip = self._recent.popleft()
            self._offenders[ip] -= 1
            if self._offenders[ip] <= 0:
                del self._offenders[ip]

    def top_offenders(self, n: int = 5) -> list[tuple[str, int]]:
        return sorted(self._offenders.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def counts_text(state: LiveState) -> str:
    """``REJECT 12  RBL 3  …  lines 1234``: the first bar line, plain."""
    parts = [f"{t} {state.counts[t]}" for t in TAG_ORDER if state.counts[t]]
    return "  ".join([*parts, f"lines {state.total}"])


def offenders_text(state: LiveState, n: int = 5) -> str:
    minutes = int(state.window.total_seconds() // 60)
    top = state.top_offenders(n)
    body = "  ".join(f"{neutralise(ip)} ×{count}" for ip, count in top) if top else "none"
    return f"top offenders ({minutes} min): {body}"


def status_bar(state: LiveState, n: int = 5) -> "Text":
    """The bottom bar on a terminal: running counts per tag, then the top offending clients."""
    from rich.text import Text

    bar = Text(no_wrap=True, overflow="ellipsis", end="")
    first = True
    for t in TAG_ORDER:
        if state.counts[t]:
            if not first:
                bar.append("  ")
            bar.append(t, style=TAGS[t].style)
            bar.append(f" {state.counts[t]}")
            first = False
    if not first:
        bar.append("  ")
    bar.append(f"lines {state.total}", style="dim")
    bar.append("\n")
    bar.append(offenders_text(state, n), style="dim")
    return bar


def json_line(ev: Event) -> str:
    """``--json``: the same object as ``maillens parse --json``, terminal-safe."""
    return json_safe(ev.to_json())


DEFAULT_LOG = "/var/log/mail.log"
TAIL_KEYS = frozenset({"paths", "window_minutes"})


def tail_settings(section: Mapping[str, Any]) -> tuple[list[str], int]:
    """Validate ``[tail]``: ``paths`` (list of files) and ``window_minutes`` (offender bar)."""
    paths = section.get("paths", [DEFAULT_LOG])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError("[tail] paths must be a list of file names, e.g. paths = [\"/var/log/mail.log\"]")
    window = section.get("window_minutes", 10)
    try:
        window = int(window)
    except (TypeError, ValueError):
        raise ConfigError(f"[tail] window_minutes must be a whole number of minutes, not {window!r}") from None
    if window <= 0:
        raise ConfigError("[tail] window_minutes must be at least 1")
    return paths, window
