"""Restriction lists, and which configured restriction each logged reject came from.

Two halves of one concern:

* the model of a restriction list (``Restriction``, ``AccessMap``, the stage
  vocabulary) that ``maillens.postconf`` builds from main.cf/master.cf;
* ``RestrictionMatcher``: given a ``PostfixConfig``, it attributes every
  ``reject`` / ``reject_warning`` event to one configured entry and tallies
  hits, warnings, entries that never fired and rejects the configuration
  cannot explain (the config changed since, or a map maillens cannot see).

How an event finds its entry (the log names the restriction, not the list):

1. the service, from the program name and master.cf ``syslog_name``
   (``postfix/submission/smtpd`` → ``submission``);
2. entries of that service with the same restriction name (and, for DNS
   lists, the same zone); ``reject_warning`` prefers ``warn_if_reject``
   entries, ``reject`` the others;
3. the lists Postfix evaluates at the logged stage: with
   ``smtpd_delay_reject = yes`` client/helo/sender checks run at RCPT TO;
4. for restrictions whose reply names the list they ran in (``reject``,
   ``reject_unauth_pipelining``, ``check_policy_service``...), the reply's
   "Client host rejected" / "Sender address rejected" words pick the list;
5. the first remaining entry in evaluation order, which is the one that fired
   (Postfix stops at the first reject).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from maillens.rbl import ZONE_RESTRICTIONS, RblZone, parse_zone_spec

if TYPE_CHECKING:  # pragma: no cover
    from maillens.postconf import PostfixConfig

# --------------------------------------------------------------------------- restriction lists

#: Restriction stages in the order Postfix evaluates them, and their parameters.
STAGE_PARAMETERS: Mapping[str, str] = {
    "client": "smtpd_client_restrictions",
    "helo": "smtpd_helo_restrictions",
    "sender": "smtpd_sender_restrictions",
    "relay": "smtpd_relay_restrictions",
    "recipient": "smtpd_recipient_restrictions",
    "data": "smtpd_data_restrictions",
    "end_of_data": "smtpd_end_of_data_restrictions",
    "etrn": "smtpd_etrn_restrictions",
}
STAGES: tuple[str, ...] = tuple(STAGE_PARAMETERS)
EVALUATION_ORDER: tuple[str, ...] = STAGES[:7]

#: Restrictions whose next token is a lookup table.
ACCESS_RESTRICTIONS: frozenset[str] = frozenset(
    f"check_{what}_{kind}access"
    for what in ("client", "reverse_client_hostname", "helo", "sender", "recipient")
    for kind in ("", "a_", "mx_", "ns_")
) | {"check_ccert_access", "check_sasl_access", "check_etrn_access"}

#: What a bare ``type:table`` means in each list (Postfix's default access check).
BARE_MAP_RESTRICTION: Mapping[str, str] = {
    "client": "check_client_access",
    "helo": "check_helo_access",
    "sender": "check_sender_access",
    "relay": "check_recipient_access",
    "recipient": "check_recipient_access",
}

_ARGUMENT_RESTRICTIONS = (
    ACCESS_RESTRICTIONS | (set(ZONE_RESTRICTIONS) - {"postscreen_dnsbl_sites"})
    | {"check_policy_service", "sleep"}  # ("sleep 1": the 1 is sleep's seconds, not a restriction)
)
#: Access-table actions that can refuse mail (a restriction name may be a reject_*).
_REFUSING = frozenset({"REJECT", "DEFER", "DEFER_IF_REJECT", "DEFER_IF_PERMIT", "RESTRICTION"})
#: Checks that reject without a ``reject:`` line in the log (smtpd answers 503 and logs only
#: the lost connection or a command counter): no hit can be counted, so none is "never fired".
UNLOGGED = frozenset({"smtpd_helo_required"})

#: Table types that name a file (``mysql:/etc/postfix/x.cf`` names its config file).
#: Old spellings Postfix still accepts → the names the log classifier uses.
ALIASES: Mapping[str, str] = {
    "reject_invalid_hostname": "reject_invalid_helo_hostname",
    "reject_non_fqdn_hostname": "reject_non_fqdn_helo_hostname",
    "reject_unknown_hostname": "reject_unknown_helo_hostname",
    "reject_unknown_client": "reject_unknown_reverse_client_hostname",
    "check_relay_domains": "reject_unauth_destination",
}

_NEVER_REJECT = frozenset({"dunno", "sleep", "warn_if_reject", "defer_if_reject"})

_FILE_TYPES = frozenset(
    "btree cdb cidr dbm hash lmdb pcre regexp sdbm texthash mysql pgsql ldap sqlite memcache socketmap".split()
)


@dataclass(frozen=True)
class AccessMap:
    """A lookup table named in the configuration: ``hash:/etc/postfix/access``.

    ``path`` is the file behind it for file-backed types (after ``proxy:``),
    else None; use ``PostfixConfig.locate(path)`` to find it on disk.
    """

    type: str
    name: str
    restriction: str
    service: str | None = None
    stage: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.type}:{self.name}"

    @property
    def path(self) -> str | None:
        inner_type, _, inner = (self.type, "", self.name)
        if inner_type == "proxy" and ":" in inner:
            inner_type, _, inner = inner.partition(":")
        return inner if inner_type in _FILE_TYPES and inner.startswith("/") else None

    @classmethod
    def from_spec(cls, spec: str, restriction: str, service: str | None, stage: str | None) -> AccessMap | None:
        kind, sep, name = spec.partition(":")
        if not sep or not kind or not re.fullmatch(r"[a-z0-9_]+", kind):
            return None
        return cls(kind, name, restriction, service, stage)


@dataclass(frozen=True)
class Restriction:
    """One entry of a restriction list, where it sits, and what it points at.

    ``name`` is the Postfix restriction name (a bare ``type:table`` becomes the
    list's ``check_*_access``); ``argument`` the zone, table or policy service
    as written; ``position`` counts from 1 within the list.  ``implicit``
    entries are checks Postfix makes without being listed
    (``smtpd_reject_unlisted_recipient``, ``message_size_limit``): their
    ``parameter`` names the setting that enables them.
    """

    service: str | None
    stage: str
    position: int
    name: str
    argument: str | None = None
    warn_only: bool = False
    raw: str = ""
    parameter: str = ""
    explicit: bool = True
    implicit: bool = False
    zone: RblZone | None = None
    map: AccessMap | None = None

    @property
    def can_reject(self) -> bool:
        """False for entries that only ever accept or pass (``permit_*``, ``dunno``, a postscreen
        allowlist site: a negative weight only lowers the score)."""
        if self.zone is not None and (self.zone.weight or 0) < 0:
            return False
        return not (self.name.startswith("permit") or self.name in _NEVER_REJECT)

    @property
    def key(self) -> tuple[str | None, str, int, bool]:
        return (self.service, self.stage, self.position, self.implicit)

    def to_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "stage": self.stage,
            "position": self.position,
            "restriction": self.name,
            "argument": self.argument,
            "warn_only": self.warn_only,
            "implicit": self.implicit,
            "parameter": self.parameter,
        }


def parse_restriction_list(
    tokens: list[str],
    *,
    service: str | None,
    stage: str,
    parameter: str,
    explicit: bool = True,
    classes: Iterable[str] | Mapping[str, Sequence[str]] = (),
    _depth: int = 0,
) -> list[Restriction]:
    """Tokens of one restriction list → ``Restriction`` entries in order.

    A ``smtpd_restriction_classes`` name in the list (``classes`` given as a
    mapping to each class's tokens) stands for that class's restrictions,
    which Postfix evaluates in its place: they are listed there, in order,
    each with the class as its ``parameter``, so their rejects land on them.
    """
    out: list[Restriction] = []
    expand = classes if isinstance(classes, Mapping) else {}
    classes = set(classes)
    i, warn = 0, False
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "warn_if_reject":
            warn = True
            continue
        if token in expand and _depth < 8:  # (a class naming itself, directly or not, stops somewhere)
            for inner in parse_restriction_list(list(expand[token]), service=service, stage=stage, parameter=token,
                                                explicit=explicit, classes=expand, _depth=_depth + 1):
                out.append(replace(inner, position=len(out) + 1, warn_only=inner.warn_only or warn,
                                   raw=f"{'warn_if_reject ' if warn else ''}{token}: {inner.raw}"))
            warn = False
            continue
        name, argument, raw = ALIASES.get(token, token), None, token
        if token in _ARGUMENT_RESTRICTIONS and i < len(tokens):
            argument = tokens[i]
            raw = f"{token} {argument}"
            i += 1
        elif ":" in token and not token.startswith("{") and token not in classes:
            name, argument = BARE_MAP_RESTRICTION.get(stage, token), token
        zone = parse_zone_spec(argument, restriction=name) if name in ZONE_RESTRICTIONS and argument else None
        amap = (
            AccessMap.from_spec(argument, name, service, stage)
            if argument and name in ACCESS_RESTRICTIONS
            else None
        )
        if warn:
            raw = f"warn_if_reject {raw}"
        out.append(Restriction(service, stage, len(out) + 1, name, argument, warn, raw, parameter,
                               explicit, False, zone, amap))
        warn = False
    return out




def implicit_checks(cfg: PostfixConfig, service: str = "smtp") -> list[Restriction]:
    """Checks smtpd makes without a list entry, as ``implicit`` restrictions.

    ``smtpd_reject_unlisted_recipient`` (runs after the recipient list),
    ``smtpd_reject_unlisted_sender``, ``message_size_limit`` (MAIL FROM
    SIZE=) and ``smtpd_helo_required``: the log names them like listed
    restrictions, so hits must have somewhere to land.
    """
    found: list[Restriction] = []

    def add(stage: str, name: str, parameter: str) -> None:
        position = len(cfg.restrictions(service, stage)) + 1
        found.append(Restriction(service, stage, position, name, None, False, f"{parameter} = "
                                 f"{cfg.parameter(parameter, service)}", parameter,
                                 cfg.is_explicit(parameter, service), True))

    if cfg.flag("smtpd_helo_required", service):
        add("helo", "smtpd_helo_required", "smtpd_helo_required")
    if cfg.flag("smtpd_reject_unlisted_sender", service):
        add("sender", "reject_unlisted_sender", "smtpd_reject_unlisted_sender")
    if (cfg.parameter("message_size_limit", service) or "0").strip() not in ("0", ""):
        add("sender", "message_size_limit", "message_size_limit")
    if cfg.flag("smtpd_reject_unlisted_recipient", service):
        add("recipient", "reject_unlisted_recipient", "smtpd_reject_unlisted_recipient")
    if (cfg.parameter("smtpd_milters", service) or "").strip():
        add("end_of_data", "milter", "smtpd_milters")
    return found


#: Pseudo-service for cleanup(8)'s content checks (header_checks, body_checks).
CONTENT_SERVICE = "cleanup"
#: The "service" of postscreen(8)'s own checks (they run before any smtpd list).
POSTSCREEN_SERVICE = "postscreen"


def content_checks(cfg: PostfixConfig) -> list[Restriction]:
    """header/body checks run by cleanup(8), as implicit end_of_data entries of ``cleanup``."""
    found: list[Restriction] = []
    for name, params in (("header_checks", ("header_checks", "mime_header_checks", "nested_header_checks")),
                         ("body_checks", ("body_checks",))):
        tables = [t for p in params for t in cfg.list_parameter(p)]
        if tables:
            found.append(Restriction(CONTENT_SERVICE, "end_of_data", len(found) + 1, name, " ".join(tables),
                                     False, name, params[0], True, True))
    return found


def postscreen_checks(cfg: PostfixConfig) -> list[Restriction]:
    """postscreen's DNS lists (``postscreen_dnsbl_sites``), one entry per site, and its other tests.

    postscreen logs its rejects as ``postfix/postscreen ... NOQUEUE: reject``,
    naming the list that scored (``blocked using zen.spamhaus.org``) or, for
    the protocol tests, none: without these entries every such reject was
    'not configured' and the lists looked unused.
    """
    sites = cfg.list_parameter("postscreen_dnsbl_sites")
    found: list[Restriction] = []
    for site in sites:
        zone = parse_zone_spec(site, restriction="postscreen_dnsbl_sites", weighted=True)
        if zone is not None:
            found.append(Restriction(POSTSCREEN_SERVICE, "client", len(found) + 1, "postscreen_dnsbl_sites", site,
                                     False, site, "postscreen_dnsbl_sites", True, False, zone))
    if sites:  # pregreet, bare newline, pipelining, non-SMTP command: what postscreen_*_action enforce
        found.append(Restriction(POSTSCREEN_SERVICE, "client", len(found) + 1, "postscreen", None, False,
                                 "postscreen protocol tests", "postscreen_greet_action", True, True))
    return found


def evaluation_stages(stage: str, delay_reject: bool) -> tuple[str, ...]:
    """Which restriction lists Postfix evaluates when a reject is logged at ``stage``.

    ``stage`` is the log's word (CONNECT, EHLO/HELO, MAIL, RCPT, DATA,
    END-OF-MESSAGE, ETRN, VRFY).  With ``smtpd_delay_reject = yes`` the
    client, helo and sender lists run at RCPT TO, which is why nearly every
    reject in a real log says RCPT.
    """
    s = stage.upper()
    early = ("client", "helo", "sender")
    if s == "CONNECT":
        return ("client",)
    if s in ("HELO", "EHLO"):
        return ("helo",) if delay_reject else ("client", "helo")
    if s == "MAIL":
        return ("sender",) if delay_reject else ("client", "helo", "sender")
    if s in ("RCPT", "VRFY"):
        return (*early, "relay", "recipient") if delay_reject else ("relay", "recipient")
    if s == "DATA":
        return ("data",)
    if s in ("END-OF-MESSAGE", "END-OF-DATA", "EOD"):
        return ("end_of_data",)
    if s == "ETRN":
        return ("etrn",)
    return EVALUATION_ORDER


# --------------------------------------------------------------------------- matching log events

#: Reply words → the list a generic restriction ran in (smtpd_check.c's reply classes).
_REPLY_CLASS = re.compile(
    r"\b(Client host|Helo command|Sender address|Recipient address|Data command|End-of-data|Etrn command)"
    r" rejected\b"
)
_CLASS_STAGES: Mapping[str, tuple[str, ...]] = {
    "Client host": ("client",),
    "Helo command": ("helo",),
    "Sender address": ("sender",),
    "Recipient address": ("relay", "recipient"),
    "Data command": ("data",),
    "End-of-data": ("end_of_data",),
    "Etrn command": ("etrn",),
}

#: Reply words → the access checks whose bare REJECT says them.
_CLASS_ACCESS: Mapping[str, str] = {
    "Client host": "check_client",
    "Helo command": "check_helo",
    "Sender address": "check_sender",
    "Recipient address": "check_recipient",
}

#: Restrictions whose reply names the list they ran in rather than what they check.
GENERIC_RESTRICTIONS = frozenset(
    {"reject", "defer", "defer_if_permit", "reject_unauth_pipelining", "check_policy_service",
     "reject_multi_recipient_bounce", "reject_plaintext_session"}
)

REJECT_KINDS = ("reject", "reject_warning")


def _field(event: Any, name: str) -> Any:
    """An event attribute, from an ``Event`` or a store row (dict)."""
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


@dataclass
class RestrictionStats:
    """Hits of one configured entry: ``hits`` rejects, ``warnings`` reject_warnings."""

    restriction: Restriction
    hits: int = 0
    warnings: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    #: its table holds only OK/DUNNO entries: it lets mail in, it never refuses any
    allowlist: bool = False

    @property
    def status(self) -> str:
        """``fired``, ``warn_only`` (ready to be made real), ``never_fired``, ``accepts_only``, or
        ``not_logged`` (a check Postfix does not log: its hits cannot be counted)."""
        if not self.restriction.can_reject or (self.allowlist and not (self.hits or self.warnings)):
            return "accepts_only"
        if self.hits:
            return "fired"
        if self.warnings:
            return "warn_only"
        return "not_logged" if self.restriction.name in UNLOGGED else "never_fired"

    def to_dict(self) -> dict[str, object]:
        out = self.restriction.to_dict()
        out.update({"hits": self.hits, "warnings": self.warnings, "status": self.status,
                    "codes": dict(sorted(self.codes.items()))})
        return out


@dataclass
class Unexplained:
    """Rejects the configuration cannot account for, grouped by what the log says."""

    program: str
    kind: str
    stage: str
    restriction: str
    rbl: str | None
    why: str
    count: int = 0
    example: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"program": self.program, "kind": self.kind, "stage": self.stage,
                "restriction": self.restriction, "rbl": self.rbl, "why": self.why,
                "count": self.count, "example": self.example}


@dataclass
class Effectiveness:
    """What ``maillens restrictions`` shows: every configured entry with its hits."""

    rows: list[RestrictionStats]
    unexplained: list[Unexplained]
    rejects: int = 0
    warnings: int = 0

    def by_status(self, status: str) -> list[RestrictionStats]:
        return [r for r in self.rows if r.status == status]

    def to_dict(self) -> dict[str, object]:
        return {
            "restrictions": [r.to_dict() for r in self.rows],
            "never_fired": [r.to_dict() for r in self.by_status("never_fired")],
            "warn_only": [r.to_dict() for r in self.by_status("warn_only")],
            "unexplained": [u.to_dict() for u in self.unexplained],
            "rejects": self.rejects,
            "reject_warnings": self.warnings,
        }


class RestrictionMatcher:
    """Attributes reject events to configured restriction entries (see the module docstring)."""

    def __init__(self, config: PostfixConfig) -> None:
        self.config = config
        self._checks = {s.name: config.checks(s.name) for s in config.smtpd_services()}
        self._checks[CONTENT_SERVICE] = content_checks(config)
        self._checks[POSTSCREEN_SERVICE] = postscreen_checks(config)
        self._delay = {name: config.delay_reject(name) for name in self._checks}
        self._services: dict[str, str | None] = {}
        self._rejecting: dict[str, bool] = {}  # table spec -> can it refuse (``_may_reject``)

    def service_of(self, program: str | None) -> str | None:
        key = program or ""
        if key not in self._services:
            daemon = key.rsplit("/", 1)[-1]
            self._services[key] = {"cleanup": CONTENT_SERVICE, "postscreen": POSTSCREEN_SERVICE}.get(
                daemon) or self.config.service_for_program(program)
        return self._services[key]

    def match(self, event: Any) -> tuple[Restriction | None, str]:
        """(entry, "") or (None, why it cannot be explained)."""
        program = _field(event, "program")
        service = self.service_of(program)
        if service is None:
            return None, f"no smtpd service in master.cf logs as {program!r}"
        name = _field(event, "restriction") or "unknown"
        if name == "unknown":
            return None, "the log line names no restriction maillens knows"
        zone = (_field(event, "rbl") or "").lower().rstrip(".")
        if service == POSTSCREEN_SERVICE:  # a listed site by the zone the line names, else the protocol tests
            name = "postscreen_dnsbl_sites" if zone else "postscreen"
        candidates = [r for r in self._checks.get(service, []) if r.name == name]
        if name in ZONE_RESTRICTIONS and zone:
            candidates = [r for r in candidates if r.zone is not None and r.zone.domain == zone]
        if name in GENERIC_RESTRICTIONS:
            m = _REPLY_CLASS.search(_field(event, "reason") or _field(event, "raw") or "")
            lists = _CLASS_STAGES[m.group(1)] if m else EVALUATION_ORDER
            in_list = [r for r in candidates if r.stage in lists]
            # a plain 'reject' in another list cannot have said these words: an access map's REJECT did
            candidates = in_list or (self._access_by_reply(service, event) if name == "reject" else []) or candidates
        if not candidates:
            what = f"{name} {zone}".strip()
            return None, f"{what} is not configured for service {service}"
        warning = _field(event, "kind") == "reject_warning"
        candidates = _prefer(candidates, lambda r: r.warn_only == warning)
        stage = _field(event, "stage") or ""
        allowed = evaluation_stages(stage, self._delay.get(service, True))
        candidates = _prefer(candidates, lambda r: r.stage in allowed)
        if len(candidates) > 1:  # the same check twice (an allowlist table, then a blocklist one)
            candidates = _prefer(candidates, lambda r: r.map is None or self._may_reject(r.map))
        return candidates[0], ""

    def _may_reject(self, amap: AccessMap) -> bool:
        """Can this table refuse anything?  A table of OK/DUNNO entries only (an allowlist) cannot
        have said the reject; a table that cannot be read might have."""
        known = self._rejecting.get(amap.spec)
        if known is None:
            from maillens.accessmap import AccessTable
            from maillens.errors import MaillensError

            located = self.config.locate(amap.path) if amap.path else None
            try:
                table = AccessTable.load(located) if located is not None else None
            except (OSError, ValueError, MaillensError):
                table = None
            known = table is None or any(e.action in _REFUSING for e in table)
            self._rejecting[amap.spec] = known
        return known

    def _access_by_reply(self, service: str, event: Any) -> list[Restriction]:
        """A bare ``REJECT`` in an access map logs like ``reject``: "Sender address rejected: Access denied"."""
        m = _REPLY_CLASS.search(_field(event, "reason") or _field(event, "raw") or "")
        prefix = _CLASS_ACCESS.get(m.group(1)) if m else None
        if prefix is None:
            return []
        return [r for r in self._checks.get(service, []) if r.map is not None and r.name.startswith(prefix)]

    def tally(self, events: Iterable[Any]) -> Effectiveness:
        """Count hits per entry over ``events`` (non-reject events are skipped)."""
        rows = {r.key: RestrictionStats(r, allowlist=r.map is not None and not self._may_reject(r.map))
                for checks in self._checks.values() for r in checks}
        unexplained: dict[tuple[str, ...], Unexplained] = {}
        rejects = warnings = 0
        for event in events:
            kind = _field(event, "kind")
            if kind not in REJECT_KINDS:
                continue
            if kind == "reject":
                rejects += 1
            else:
                warnings += 1
            entry, why = self.match(event)
            if entry is None:
                key = tuple(str(_field(event, f) or "") for f in ("program", "kind", "stage", "restriction", "rbl"))
                u = unexplained.setdefault(key, Unexplained(*key[:4], key[4] or None, why))  # type: ignore[arg-type]
                u.count += 1
                u.example = u.example or (_field(event, "raw") or "")
                continue
            stats = rows[entry.key]
            if kind == "reject":
                stats.hits += 1
            else:
                stats.warnings += 1
            code = _field(event, "code")
            if code:
                stats.codes[str(code)] += 1
        ordered = sorted(unexplained.values(), key=lambda u: -u.count)
        return Effectiveness(list(rows.values()), ordered, rejects, warnings)


def _prefer(items: list[Restriction], keep: Any) -> list[Restriction]:
    """The items passing ``keep``, or all of them when none does (a hint, not a filter)."""
    kept = [r for r in items if keep(r)]
    return kept or items
