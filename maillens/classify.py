"""Text in, events out: the envelope, then the rule files, then typed fields.

Pure: no files, no clock, no network.  The rules are the fail2ban filter files
in ``parsers/`` (and any directory the config names); this module only decides
which filters apply to a line (by program name, the filter's ``_daemon``) and
turns a match's groups into an ``Event``:

* the rule's ``(?#kind=...)`` comment gives the kind (``@group`` means "the
  value of that group"), other ``key=value`` words are constant fields;
* ``ip4``/``ip6`` become ``client_ip``; the failure id ``fid`` becomes
  ``queue_id`` unless the rule says ``fid=other_field``;
* an empty group ``r__NAME`` (or ``r__NAME_N``, as group names must be unique)
  that took part in the match names the restriction;
* ``alt_NAME[_N]`` groups fill ``NAME`` (fail2ban's own convention).

Speed: per program, the ``^``-anchored failregex lines of a filter are joined
into one alternation (groups renamed apart), so one ``re`` call in C tries them
all in order -- the same first-match-wins result as fail2ban's loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Callable, Iterable

from maillens.envelope import YearInference, log_int, parse_envelope
from maillens.events import Event
from maillens.filterconf import Filter, load_filter, parsers_dir

_INT_FIELDS = frozenset({"code", "client_port", "size", "nrcpt", "bytes", "uid", "conn_use", "rank", "count", "signal"})
_FLOAT_FIELDS = frozenset({"delay"})
_GROUP_RE = re.compile(r"\(\?P<(\w+)>")
_BACKREF_RE = re.compile(r"\(\?P=(\w+)\)")
_ANNOTATION_RE = re.compile(r"\(\?#[^)]*\)")
_CHECK_RESTRICTION = {"header": "header_checks", "mime-header": "header_checks",
                      "nested-header": "header_checks", "body": "body_checks"}
_SPF_IDENTITY = {"mfrom": "mailfrom", "helo": "helo", "mailfrom": "mailfrom"}
_MARKER_SUFFIX = re.compile(r"_\d+$")
_COUNTER_RE = re.compile(r"(\w+)=(\d+)(?:/(\d+))?")


@dataclass(slots=True)
class _Alternative:
    """One failregex inside a joined alternation, with its plan for building an Event.

    The plan is worked out once per rule, so that per line only the groups the
    rule has are fetched (in one C call) and only the conversions it needs run.
    """

    rule_id: str
    annotations: dict[str, str]
    group_names: tuple[str, ...]  # renamed names in the joined regex
    field_names: tuple[str, ...]  # original names
    plain_groups: tuple[str, ...] = ()  # renamed groups copied as fields
    plain_fields: tuple[str, ...] = ()
    alt_groups: tuple[tuple[str, str], ...] = ()  # (renamed group, field it fills if empty)
    marker_groups: tuple[str, ...] = ()
    marker_restrictions: tuple[str, ...] = ()
    ip_groups: tuple[str, ...] = ()
    fid_group: str | None = None
    qid_group: str | None = None
    int_fields: tuple[str, ...] = ()
    float_fields: tuple[str, ...] = ()
    alt_fields: tuple[str, ...] = ()
    fetch: tuple[str, ...] = ()  # every group the plan reads, in one m.group() call
    offsets: tuple[int, int, int] = (0, 0, 0)  # ends of the plain, alt and marker parts of fetch
    ip_count: int = 0
    kind: str = "other"  # the kind annotation as written
    kind_field: str | None = None  # the group whose value is the kind (``kind=@group``)
    fid_field: str = "queue_id"
    #: (field, constant value or the "@group" text, group to read it from or None), kind and fid left out
    extra_annotations: tuple[tuple[str, str, str | None], ...] = ()

    def plan(self) -> "_Alternative":
        renamed = dict(zip(self.field_names, self.group_names))
        plain = [n for n in self.field_names if not n.startswith(("r__", "alt_"))
                 and n not in ("content", "ip4", "ip6", "fid", "dns", "queue_id", "ip")]
        self.plain_fields = tuple(plain)
        self.plain_groups = tuple(renamed[n] for n in plain)
        self.alt_groups = tuple((renamed[n], re.sub(r"_\d+$", "", n[4:])) for n in self.field_names if n.startswith("alt_"))
        markers = [n for n in self.field_names if n.startswith("r__")]
        self.marker_groups = tuple(renamed[n] for n in markers)
        self.marker_restrictions = tuple(_MARKER_SUFFIX.sub("", n[3:]) for n in markers)
        self.ip_groups = tuple(renamed[n] for n in ("ip4", "ip6") if n in renamed)
        self.fid_group = renamed.get("fid")
        self.qid_group = renamed.get("queue_id")
        fields = set(plain) | {f for _, f in self.alt_groups}
        self.int_fields = tuple(sorted(_INT_FIELDS & fields))
        self.float_fields = tuple(sorted(_FLOAT_FIELDS & fields))
        self.alt_fields = tuple(f for _, f in self.alt_groups)
        self.ip_count = len(self.ip_groups)
        self.fetch = (self.plain_groups + tuple(g for g, _ in self.alt_groups) + self.marker_groups + self.ip_groups
                      + ((self.qid_group,) if self.qid_group else ()) + ((self.fid_group,) if self.fid_group else ()))
        n_plain = len(self.plain_groups)
        n_alt = n_plain + len(self.alt_groups)
        self.offsets = (n_plain, n_alt, n_alt + len(self.marker_groups))
        self.kind = self.annotations.get("kind", "other")
        self.kind_field = self.kind[1:] if self.kind.startswith("@") else None
        self.fid_field = self.annotations.get("fid", "queue_id")
        self.extra_annotations = () if len(self.annotations) <= 1 else tuple(  # (as _finish_event reads them)
            (key, value, value[1:] if value.startswith("@") else None)
            for key, value in self.annotations.items() if key not in ("kind", "fid")
        )
        return self


@dataclass(slots=True)
class _CompiledFilter:
    flt: Filter
    daemon: re.Pattern[str] | None
    joined: re.Pattern[str] | None
    alternatives: dict[str, _Alternative]


def _join(flt: Filter) -> tuple[re.Pattern[str] | None, dict[str, _Alternative]]:
    """Join a filter's anchored failregexes into one ordered alternation."""
    if flt.ignoreregex or not flt.failregex or not all(rx.anchored for rx in flt.failregex):
        return None, {}
    parts: list[str] = []
    alternatives: dict[str, _Alternative] = {}
    for rx in flt.failregex:
        prefix = f"g{rx.index}_"
        body = _ANNOTATION_RE.sub("", rx.pattern.pattern)
        # Every alternative is anchored; ``match(text, pos)`` anchors at ``pos``
        # where ``^`` would not, so the joined form drops the caret.
        body = body[1:] if body.startswith("^") else body
        body = _GROUP_RE.sub(lambda m: f"(?P<{prefix}{m.group(1)}>", body)
        body = _BACKREF_RE.sub(lambda m: f"(?P={prefix}{m.group(1)})", body)
        outer = f"_m{rx.index}"
        parts.append(f"(?P<{outer}>{body})")
        names = tuple(rx.pattern.groupindex)
        alternatives[outer] = _Alternative(
            rule_id=f"{flt.path.name}:failregex[{rx.index + 1}]",
            annotations=rx.annotations,
            group_names=tuple(prefix + n for n in names),
            field_names=names,
        ).plan()
    try:
        return re.compile("|".join(parts)), alternatives
    except re.error:
        return None, {}


class RuleSet:
    """The filters that classify lines, in priority order, compiled once."""

    def __init__(self, filters: Iterable[Filter]) -> None:
        compiled = []
        for flt in filters:
            daemon_text = flt.options.get("_daemon")
            daemon = re.compile(daemon_text) if daemon_text and flt.prefregex is not None else None
            joined, alternatives = _join(flt) if daemon is not None else (None, {})
            compiled.append(_CompiledFilter(flt, daemon, joined, alternatives))
        compiled.sort(key=lambda c: int(c.flt.options.get("maillens_priority", "50") or 50))
        self.filters: tuple[_CompiledFilter, ...] = tuple(compiled)
        self._by_program: dict[str, tuple[_CompiledFilter, ...]] = {}

    @classmethod
    def load(cls, extra_dirs: Iterable[Path | str] = ()) -> "RuleSet":
        """maillens's own rule files, plus (overriding by file name) those in ``extra_dirs``."""
        files: dict[str, Path] = {}
        for directory in (parsers_dir(), *(Path(d) for d in extra_dirs)):
            for path in sorted(Path(directory).glob("*.conf")):
                files[path.stem] = path
        filters = []
        for path in files.values():
            flt = load_filter(str(path))
            if flt.failregex:
                filters.append(flt)
        return cls(filters)

    def for_program(self, program: str) -> tuple[_CompiledFilter, ...]:
        found = self._by_program.get(program)
        if found is None:
            found = tuple(c for c in self.filters if c.daemon is None or c.daemon.fullmatch(program))
            if len(self._by_program) > 10_000:  # hostile input: unbounded program names
                self._by_program.clear()
            self._by_program[program] = found
        return found


_DEFAULT_RULES: RuleSet | None = None


def default_rules() -> RuleSet:
    global _DEFAULT_RULES
    if _DEFAULT_RULES is None:
        _DEFAULT_RULES = RuleSet.load()
    return _DEFAULT_RULES


class Classifier:
    """Turns lines into events; keeps only the year-inference state between lines.

    ``reference_time`` is when the log was written up to (a file's mtime, or
    now); it gives traditional syslog time stamps their year.  Call
    ``start_source`` when a new file begins.
    """

    def __init__(self, rules: RuleSet | None = None, *, reference_time: datetime | None = None,
                 tz: tzinfo | None = None) -> None:
        self.rules = rules or default_rules()
        self.years = YearInference(reference_time, tz)

    def start_source(self, reference_time: datetime | None) -> None:
        self.years.reset(reference_time)

    def classify(self, line: str, source: str | None = None, lineno: int | None = None) -> Event:
        raw = line.rstrip("\r\n") if line.endswith(("\n", "\r")) else line
        env = parse_envelope(raw, self.years)
        if env is None:
            return Event("unparsed", None, None, None, None, source, lineno, None, {}, raw, raw)
        event = Event("other", env.ts, env.host, env.program, env.pid, source, lineno, None, {}, raw, env.message)
        if env.message:
            self._apply_rules(event, env.message, raw)
        return event

    def _apply_rules(self, event: Event, message: str, raw: str) -> None:
        for compiled in self.rules.for_program(event.program or ""):
            if compiled.joined is not None:
                m = compiled.joined.match(message)
                if m is None:
                    continue
                _fill_planned(event, m, compiled.alternatives[m.lastgroup or ""])
                return
            match = compiled.flt.match_line(raw)
            if match is not None:
                rule_id = f"{compiled.flt.path.name}:failregex[{match.regex.index + 1}]"
                _fill_event(event, dict(match.fields), match.regex.annotations, rule_id)
                return


def _fill_planned(event: Event, m: re.Match[str], alt: _Alternative) -> None:
    """Build the event's fields from a joined-regex match, following the rule's plan.

    Gives exactly what ``_fill_event`` gives for the same groups (a test holds
    the two to it); all groups are fetched in one call, markers found by index.
    """
    fetch = alt.fetch
    values = m.group(*fetch) if len(fetch) > 1 else ((m.group(fetch[0]),) if fetch else ())
    n_plain, n_alt, n_mark = alt.offsets
    plain = values[:n_plain]
    data = dict(zip(alt.plain_fields, plain)) if None not in plain else {
        k: v for k, v in zip(alt.plain_fields, plain) if v is not None}
    if n_alt > n_plain:
        for field_name, value in zip(alt.alt_fields, values[n_plain:n_alt]):
            if value is not None and field_name not in data:
                data[field_name] = value
    restriction = None
    if n_mark > n_alt:
        markers = values[n_alt:n_mark]
        if "" in markers:  # markers are empty groups: "" when they took part, None when not
            restriction = alt.marker_restrictions[markers.index("")]
    rest = values[n_mark:]
    address = rest[0] if alt.ip_count and rest[0] is not None else (
        rest[1] if alt.ip_count > 1 else None)
    if address is not None:
        data.setdefault("client_ip", address)
    rest = rest[alt.ip_count:]
    queue_id = rest[0] if alt.qid_group else None
    fid = rest[-1] if alt.fid_group else None
    _finish_planned(event, data, restriction, queue_id, fid, alt)


def _finish_planned(event: Event, data: dict[str, Any], restriction: str | None, queue_id: str | None,
                    fid: str | None, alt: _Alternative) -> None:
    """``_finish_event`` with the annotation work done once per rule (``_Alternative.plan``).

    Same steps in the same order; a test holds the joined path to the
    fail2ban-order one, which goes through ``_finish_event``.
    """
    if fid is not None:
        if alt.fid_field == "queue_id":
            queue_id = fid
        else:
            data[alt.fid_field] = fid
    event.queue_id = queue_id
    for key, value, group in alt.extra_annotations:
        if group is not None:
            value = data.get(group, value)
            if key == "restriction":
                value = _CHECK_RESTRICTION.get(value, value)
        data.setdefault(key, value)
    kind = data.pop(alt.kind_field, "other") if alt.kind_field is not None else alt.kind
    _conclude(event, data, kind, restriction, alt.rule_id, alt.int_fields, alt.float_fields)


def _fill_event(event: Event, groups: dict[str, Any], annotations: dict[str, str], rule_id: str) -> None:
    """Build the event's fields from a match's group dict (fail2ban-order path)."""
    data: dict[str, Any] = {}
    restriction = None
    for name, value in groups.items():
        if name.startswith("r__"):
            restriction = _MARKER_SUFFIX.sub("", name[3:])
        elif name.startswith("alt_"):
            data.setdefault(_MARKER_SUFFIX.sub("", name[4:]), value)
        elif name not in ("content", "ip4", "ip6", "fid", "dns", "queue_id", "ip"):  # ip: fail2ban's host, = client_ip
            data[name] = value
    address = groups.get("ip4") or groups.get("ip6")
    if address is not None:
        data.setdefault("client_ip", address)
    _finish_event(event, data, restriction, groups.get("queue_id"), groups.get("fid"), annotations, rule_id,
                  tuple(_INT_FIELDS.intersection(data)), tuple(_FLOAT_FIELDS.intersection(data)))


def _finish_event(event: Event, data: dict[str, Any], restriction: str | None, queue_id: str | None,
                  fid: str | None, annotations: dict[str, str], rule_id: str,
                  int_fields: Iterable[str], float_fields: Iterable[str]) -> None:
    """What every rule match ends with: failure id, annotations, kind, types, the kind's fixer."""
    if fid is not None:
        fid_field = annotations.get("fid", "queue_id")
        if fid_field == "queue_id":
            queue_id = fid
        else:
            data[fid_field] = fid
    event.queue_id = queue_id
    kind = annotations.get("kind", "other")
    if len(annotations) > 1:
        for key, value in annotations.items():
            if key in ("kind", "fid"):
                continue
            if value.startswith("@"):
                value = data.get(value[1:], value)
                if key == "restriction":
                    value = _CHECK_RESTRICTION.get(value, value)
            data.setdefault(key, value)
    if kind.startswith("@"):
        kind = data.pop(kind[1:], "other")
    _conclude(event, data, kind, restriction, rule_id, int_fields, float_fields)


def _conclude(event: Event, data: dict[str, Any], kind: str, restriction: str | None, rule_id: str,
              int_fields: Iterable[str], float_fields: Iterable[str]) -> None:
    """Both finishing paths end alike: restriction marker, numbers typed, the kind's fixer, the event filled."""
    if restriction is not None:
        data["restriction"] = restriction
    for name in int_fields:
        if name in data:
            number = log_int(data[name])  # (an absurd number stays text: it never raises)
            if number is not None:
                data[name] = number
    for name in float_fields:
        if name in data:
            try:
                data[name] = float(data[name])
            except (TypeError, ValueError):
                pass
    event.kind = kind
    event.rule = rule_id
    fixer = _KIND_FIXERS.get(kind)
    if fixer is not None:
        fixer(data)
    event.data = data


def _fix_reject(data: dict[str, Any]) -> None:
    data.pop("action", None)
    data.setdefault("restriction", "unknown")


def _fix_spf(data: dict[str, Any]) -> None:
    result = data.get("spf_result")
    reason = data.get("reason") or ""
    if result is None:
        lowered = reason.lower()
        if "softfail" in lowered:
            result = "softfail"
        elif "permanent error" in lowered or "permerror" in lowered:
            result = "permerror"
        elif "temporary error" in lowered or "temperror" in lowered:
            result = "temperror"
        elif "fail" in lowered:
            result = "fail"
        else:
            result = "none"
    data["spf_result"] = result.lower()
    if "identity" in data:
        data["identity"] = _SPF_IDENTITY.get(data["identity"].lower(), data["identity"].lower())
    code = data.get("code")
    if "action" not in data and isinstance(code, int):
        data["action"] = "reject" if code >= 500 else "defer"


def _fix_disconnect(data: dict[str, Any]) -> None:
    counters = data.pop("counters", None)
    if not counters:
        return
    commands: dict[str, list[int]] = {}
    for name, ok, total in _COUNTER_RE.findall(counters):
        good = log_int(ok)
        whole = log_int(total) if total else good
        if good is not None and whole is not None:  # (absurd numbers are left out, never raised on)
            commands[name] = [good, whole]
    data["commands"] = commands


def _fix_postscreen_or_notice(data: dict[str, Any]) -> None:
    if "action" in data:
        data["action"] = data["action"].strip()


_KIND_FIXERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "reject": _fix_reject,
    "reject_warning": _fix_reject,
    "spf": _fix_spf,
    "disconnect": _fix_disconnect,
    "postscreen": _fix_postscreen_or_notice,
}
