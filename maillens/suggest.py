"""Suggest access.client / access.sender entries, and judge the ones already there.

Nothing here changes a file: the result is a list of entries with the facts
behind each, for a postmaster to accept by copying lines.

OK (likely false positives).  A client or sender domain is a candidate when
mail from it was refused by a check an access-table ``OK`` can bypass: the
client's reputation or DNS (RBLs, ``reject_unknown_client_hostname``) or its
HELO go to access.client; the sender's checks (SPF policy,
``reject_unknown_sender_domain``) go to access.sender.  A candidate must
pass three gates:

1. no sign of abuse: dictionary attacks on unknown users, relay attempts,
   pipelining, SASL guessing, HELO forgery, SPF failure for a domain the
   client does not belong to, or an explicit REJECT the admin wrote;
2. an identity link between client and mail: its verified hostname (or a
   constant HELO) lies in the sender's domain, SPF passed for it, or -- for
   a steady relay with a proper name -- every domain it sends for is one
   local users write to;
3. a score of at least ``ok_threshold`` (default 8) from the weights below.

==========================================================  ======
evidence                                                    points
==========================================================  ======
forward-confirmed rDNS that is not a generic/dynamic name    +2
one FQDN HELO in every session (+1 more if = its hostname)   +1/+2
hostname in the sender's domain (HELO only: +1)              +2
few sender domains (<= 3); many (>= 5): forger               +1/-2
local users wrote to that domain (not by HELO link alone)    +3
SPF pass for the domain from this client                     +2
the domain's mail accepted from other linked clients         +1
the same envelope retried after a 4xx, like an MTA queue     +3
came back over at least an hour                              +1
every refused recipient is an existing user                  +1
refused by one check only (one RBL zone)                     +1
low volume (<= 5 recipients per message)                     +1
also listed by a warn-only DNSBL                             -2
==========================================================  ======

A candidate whose refusals were all temporary (4xx) gets no permanent entry
(flagged ``transient``): no mail was lost, and either its mail got through
afterwards or the sender is still retrying while the cause (typically DNS)
may go away by itself.

REJECT (abuse the other checks miss).  An rDNS suffix qualifies when at least
``min_network_clients`` verified clients share it, most of them in one /16,
three quarters of them misbehave, none is a known correspondent, and most of
their recipients got past the client checks (the RBLs missed them).  A sender
domain qualifies when at least ``min_domain_clients`` clients used it, none of
its mail was ever accepted, nobody here writes to it, and the servers its own
SPF record authorises all misbehave -- a domain merely forged by bots has no
such servers and is left alone.

Existing entries are flagged ``stale`` (matched nothing in the period),
``conflict`` (an OK for a client or domain that now misbehaves), ``inert``
(a key smtpd never looks up: ``.domain`` with the default
``parent_domain_matches_subdomains``, CIDR in a hash table, ``@domain``) or
``ineffective`` (an OK that matched but could not help because of the
restriction order).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from maillens.accessmap import DEFAULT_PARENT_STYLE, AccessTable, unreachable, valid_key
from maillens.errors import ConfigError, UsageError
from maillens.events import Event
from maillens.suggestdata import (
    CLIENT_REPUTATION,
    HELO_SYNTAX,
    SENDER_CHECKS,
    ClientStats,
    EvidenceCollector,
    aligned,
)
from maillens.suggestscore import (
    World,
    abuse,
    abuse_summary,
    helo_of,
    hours,
    order_effect,
    reject_summary,
    score_behaviour,
    score_identity,
    score_relationship,
    shared_provider,
    vetoes,
    zones_passed,
)

if TYPE_CHECKING:  # pragma: no cover
    from maillens.postconf import PostfixConfig

CLIENT_MAP, SENDER_MAP = "access.client", "access.sender"
#: ``[suggest]`` keys naming the tables' source files (defaults for --access-client/--access-sender).
MAP_KEYS = ("access_client", "access_sender")


def _plain(number: float) -> str:
    return f"{number:,.0f}" if number == int(number) else f"{number:g}"


def parse_since(text: str | None) -> timedelta | None:
    """``30d``, ``12h``, ``2w``, ``90m`` → timedelta (None for empty)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text.lower())
    if not m:
        raise UsageError(f"--since {text!r}: use a number and a unit, e.g. 30d, 12h, 2w")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


@dataclass(frozen=True)
class SuggestSettings:
    """The ``[suggest]`` config section (all optional)."""

    ok_threshold: float = 8.0
    min_network_clients: int = 10
    min_domain_clients: int = 10
    network_share: float = 0.75
    retry_gap: float = 60.0
    since: timedelta | None = None
    #: Domains to treat as shared mailbox providers besides ``suggestscore.SHARED_PROVIDERS``.
    shared_providers: tuple[str, ...] = ()

    #: Each number's allowed range: outside it a suggestion could REJECT whole ISPs
    #: (``network_share = 0``) or allow on no evidence (``min_network_clients = 0``).
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {"ok_threshold": (1.0, 100.0), "min_network_clients": (2, 1_000_000),
              "min_domain_clients": (2, 1_000_000), "network_share": (0.5, 1.0), "retry_gap": (0.0, 86_400.0)}

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> SuggestSettings:
        known = {"ok_threshold": float, "min_network_clients": int, "min_domain_clients": int,
                 "network_share": float, "retry_gap": float}
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key in MAP_KEYS:  # table paths: read by the commands (suggest, report), not a tuning knob
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"[suggest] {key} = {value!r}: give the table's source file path")
            elif key == "shared_providers":
                if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                    raise ConfigError(f"[suggest] shared_providers = {value!r}: give a list of domains")
                values[key] = tuple(value)
            elif key == "since":
                try:
                    values["since"] = parse_since(str(value))
                except UsageError:
                    raise ConfigError(f"[suggest] since = {value!r}: use e.g. '30d'") from None
            elif key in known:
                low, high = cls.RANGES[key]
                try:
                    number = known[key](value)
                    if known[key] is int and float(value) != number:  # int(2.5) is 2: say so instead
                        number = None
                except (TypeError, ValueError, OverflowError):
                    number = None
                if isinstance(value, bool) or number is None or not low <= number <= high:  # (nan fails too)
                    raise ConfigError(f"[suggest] {key} = {value!r}: give a number from {_plain(low)} "
                                      f"to {_plain(high)}")
                values[key] = number
            else:
                raise ConfigError(f"[suggest] has no setting {key!r}; known: since, {', '.join(known)}, "
                                  f"shared_providers, {', '.join(MAP_KEYS)}")
        return cls(**values)


@dataclass
class Suggestion:
    """One proposed entry, or one remark about an existing entry (``kind`` != suggestion)."""

    map: str
    key: str
    action: str
    score: float
    evidence: list[str]
    kind: str = "suggestion"
    subject: str = ""
    effective: bool | None = None
    config_change: str | None = None
    lineno: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"map": self.map, "key": self.key, "action": self.action, "score": round(self.score, 1),
                "evidence": list(self.evidence), "kind": self.kind, "subject": self.subject,
                "effective_with_current_config": self.effective, "config_change": self.config_change,
                "line": self.lineno}


@dataclass
class SuggestResult:
    items: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def suggestions(self) -> list[Suggestion]:
        return [i for i in self.items if i.kind == "suggestion"]

    def flagged(self, kind: str) -> list[Suggestion]:
        return [i for i in self.items if i.kind == kind]


# ----------------------------------------------------------------------------- OK: clients


def _temporary(times: list[float], codes: Iterable[int], accepted_after: Iterable[float]) -> str | None:
    """Why no permanent entry fits when every refusal was a 4xx, else None.

    A 4xx loses no mail: the sender retries.  If its mail got through later
    the problem went away by itself; if not, it may still (DNS outages end),
    and a permanent OK would switch the checks off for good.
    """
    if any(code >= 500 for code in codes):
        return None
    if times and any(t > max(times) for t in accepted_after):
        return "all refusals were temporary (4xx) and the same sender got through later"
    return "refused only temporarily (4xx) so far: the sender keeps retrying; no entry unless it becomes permanent"


def _client_candidates(world: World) -> list[Suggestion]:
    """OK for access.client: clients refused for their reputation, DNS or HELO that pass the gates."""
    out: list[Suggestion] = []
    for c in world.ev.clients.values():
        blocking = Counter({k: n for k, n in c.rejects.items() if k[0] in CLIENT_REPUTATION | HELO_SYNTAX})
        if not blocking:
            continue
        existing = world.client_entry(c)
        facts = [reject_summary(blocking, c)]
        if vetoes(c, world):
            continue
        if existing is not None:
            if existing.action == "OK":
                eff, change = order_effect(world, c, blocking, "check_client_access", world.client_path)
                out.append(Suggestion(CLIENT_MAP, existing.entry.key, existing.entry.value, 0.0,
                                      facts + [f"already matched by {existing.entry.where}"],
                                      kind="ineffective", subject=c.ip, effective=eff, config_change=change,
                                      lineno=existing.entry.lineno))
            continue
        score, linked, strong = score_identity(c, world, facts)
        if not linked:
            continue
        score += score_relationship(c, linked, strong, world, facts)
        score += score_behaviour(c, blocking, world, facts)
        passed = zones_passed(world, c, blocking)
        if passed:
            facts.insert(1, passed)
        if score < world.settings.ok_threshold:
            continue
        key = c.name if c.verified else c.ip
        why = _temporary(c.reject_times, [k[1] for k in blocking], [t for t, _ in c.accepted_times])
        if why:
            out.append(Suggestion(CLIENT_MAP, key, "none", score, facts + [why], kind="transient", subject=c.ip))
            continue
        if not valid_key(key):
            continue
        eff, change = order_effect(world, c, blocking, "check_client_access", world.client_path)
        out.append(Suggestion(CLIENT_MAP, key, "OK", score, facts, subject=c.ip, effective=eff,
                              config_change=change))
    return out


# ----------------------------------------------------------------------------- OK: sender domains


def _domain_candidates(world: World) -> list[Suggestion]:
    """OK for access.sender: domains refused by sender checks when sent from their own servers."""
    out: list[Suggestion] = []
    for d in world.ev.domains.values():
        blocking = Counter({k: n for k, n in d.rejects.items() if k[0] in SENDER_CHECKS})
        if not blocking or not valid_key(d.domain) or shared_provider(d.domain, world.settings.shared_providers):
            continue  # (an OK for a provider anyone can sign up with would let every forger of it in)
        refused_by = {ip for ip, checks in d.refused_by.items() if any(r in SENDER_CHECKS for r in checks)}
        clients = [world.ev.clients[ip] for ip in sorted(refused_by)]
        facts = [f"{sum(blocking.values())} refused ({', '.join(f'{n} by {r} {code}' for (r, code), n in blocking.most_common())})"
                 f" from {len(clients)} client{'s' if len(clients) != 1 else ''} over {hours(d.first, d.last):.1f} h"]
        times = [t for c in clients for t in c.reject_times]
        accepted_after = [t for c in clients for t, s in c.accepted_times if s.endswith("@" + d.domain)]
        if not clients or any(not aligned(c.name, d.domain) or not c.verified for c in clients):
            continue  # refused from clients that are not the domain's own: forgery, not a false positive
        if any(vetoes(c, world) for c in clients) or any(world.sender_entry(s) for s in d.senders):
            continue
        score = 0.0
        names = sorted({c.name for c in clients})
        score += 2
        facts.append(f"sent by its own server{'s' if len(names) > 1 else ''} {', '.join(names[:3])} (FCrDNS)")
        if all(len(c.helos) == 1 and helo_of(c) == c.name for c in clients):
            score += 2
            facts.append("HELO = hostname")
        users = world.ev.correspondent_users(d.domain)
        if users:
            score += 3
            facts.append(f"{len(users)} local user{'s' if len(users) > 1 else ''} wrote to {d.domain}")
        merged = ClientStats("*")
        for c in clients:
            merged.envelopes.update(c.envelopes)
            merged.rejected_rcpts.update(c.rejected_rcpts)
            merged.reject_times += c.reject_times
            merged.sessions += c.sessions
            merged.seen(c.first)
            merged.seen(c.last)
        score += score_behaviour(merged, Counter({(r, code, ""): n for (r, code), n in blocking.items()}),
                                  world, facts)
        if len({dom for c in clients for dom in c.domains}) == 1:
            score += 1
            facts.append(f"only {d.domain} from there")
        if score < world.settings.ok_threshold:
            continue
        why = _temporary(times, [code for (_r, code) in blocking], accepted_after)
        if why:
            out.append(Suggestion(SENDER_MAP, d.domain, "none", score, facts + [why], kind="transient",
                                  subject=d.domain))
            continue
        if refused_by & d.spf_fail_clients:
            facts.append(f"narrower fix: ask {d.domain} to list {', '.join(names[:3])} in its SPF record")
        eff, change = order_effect(world, clients[0], Counter({(r, c, ""): n for (r, c), n in blocking.items()}),
                             "check_sender_access", world.sender_path)
        out.append(Suggestion(SENDER_MAP, d.domain, "OK", score, facts, subject=d.domain, effective=eff,
                              config_change=change))
    return out


# ----------------------------------------------------------------------------- REJECT


def _net16(ip: str) -> str:
    """The /16 (IPv4) or /48 (IPv6) around an address: how far one provider's block reaches."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 16 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _network_rejects(world: World) -> list[Suggestion]:
    """rDNS suffixes of abusive provider networks the client checks let through."""
    settings = world.settings
    by_suffix: dict[str, set[str]] = {}
    for c in world.ev.clients.values():
        if not c.verified:
            continue
        labels = c.name.split(".")
        for i in range(1, len(labels) - 1):
            by_suffix.setdefault(".".join(labels[i:]), set()).add(c.ip)
    qualified: list[tuple[str, set[str], set[str], list[str]]] = []
    for suffix, ips in by_suffix.items():
        if len(ips) < settings.min_network_clients:
            continue
        clients = [world.ev.clients[ip] for ip in ips]
        nets = Counter(_net16(ip) for ip in ips)
        net, in_net = nets.most_common(1)[0]
        bad = [c for c in clients if abuse(c, world)[0] >= 1]
        if in_net < settings.network_share * len(ips) or len(bad) < settings.network_share * len(ips):
            continue
        if any(_established(c, world) for c in clients):
            continue
        total = sum(sum(c.rejected_rcpts.values()) + c.accepted_rcpts for c in clients)
        by_client_checks = sum(n for c in clients for (r, _code, _z), n in c.rejects.items()
                               if r in CLIENT_REPUTATION or r == "check_client_access")
        missed = 1 - by_client_checks / total if total else 0.0
        if missed < 0.5:
            continue
        if world.client_table is not None:
            hits = [world.client_entry(c) for c in clients]
            if sum(1 for h in hits if h is not None) * 2 >= len(clients):
                continue
        facts = [f"{len(ips)} distinct clients under {suffix}, {in_net} of them in {net}",
                 f"{len(bad)} misbehaved (clients per kind: {abuse_summary(bad, world)})",
                 f"{missed:.0%} of their {total} recipients got past the client checks "
                 f"({sum(c.accepted for c in clients)} messages accepted)",
                 "no legitimate correspondent among them"]
        qualified.append((suffix, ips, {c.ip for c in bad}, facts))
    chosen: list[tuple[str, set[str], set[str], list[str]]] = []
    for item in sorted(qualified, key=lambda q: -q[0].count(".")):  # most specific first
        below = [q for q in chosen if q[0].endswith("." + item[0])]
        if below and item[2] <= set().union(*(q[2] for q in below)):
            continue  # the narrower suffixes already cover every client that misbehaved
        chosen = [q for q in chosen if q not in below] + [item]
    out: list[Suggestion] = []
    for suffix, ips, _bad, facts in chosen:
        key = suffix if world.parent_style else "." + suffix
        if not valid_key(key):
            continue
        action = f"REJECT too much spam from {suffix}"
        sample = world.ev.clients[next(iter(ips))]
        eff, change = order_effect(world, sample, Counter(), "check_client_access", world.client_path)
        out.append(Suggestion(CLIENT_MAP, key, action, float(len(ips)), facts, subject=suffix,
                              effective=eff, config_change=change))
    return out


def _established(c: ClientStats, world: World) -> bool:
    """A well-behaved client whose accepted mail comes from a correspondent domain it speaks for."""
    return abuse(c, world)[0] == 0 and any(
        world.ev.correspondent_users(d) for d in c.accepted_domains if aligned(c.name, d) or (d, "pass") in c.spf)


def _sender_rejects(world: World) -> list[Suggestion]:
    """Sender domains whose own (SPF-authorised) servers misbehave and that never sent good mail."""
    out: list[Suggestion] = []
    for d in world.ev.domains.values():
        if len(d.clients) < world.settings.min_domain_clients or d.accepted or not d.spf_pass_clients:
            continue
        if world.ev.correspondent_users(d.domain) or not valid_key(d.domain):
            continue
        authorised = [world.ev.clients[ip] for ip in d.spf_pass_clients if ip in world.ev.clients]
        if not authorised or any(abuse(c, world)[0] < 1 for c in authorised):
            continue
        if any(world.sender_entry(s) for s in list(d.senders)[:20]):
            continue
        facts = [f"used by {len(d.clients)} different clients, {sum(d.rejects.values())} recipients refused, "
                 f"nothing ever accepted",
                 f"its SPF record authorises {len(authorised)} of them, all misbehaving "
                 f"(clients per kind: {abuse_summary(authorised, world)})",
                 "no local user writes to it"]
        sample = world.ev.clients[next(iter(d.rejected_clients or d.clients))]
        eff, change = order_effect(world, sample, Counter(), "check_sender_access", world.sender_path)
        out.append(Suggestion(SENDER_MAP, d.domain, f"REJECT mail from {d.domain} refused: its servers send spam",
                              float(len(d.clients)), facts, subject=d.domain, effective=eff, config_change=change))
    return out


# ----------------------------------------------------------------------------- existing entries


def _existing_flags(world: World) -> list[Suggestion]:
    """Stale, inert and conflicting entries of the given tables."""
    out: list[Suggestion] = []
    if world.client_table is not None:
        used: dict[str, list[ClientStats]] = {}
        other_style: set[str] = set()
        for c in world.ev.clients.values():
            hit = world.client_entry(c)
            if hit is not None:
                used.setdefault(hit.entry.key, []).append(c)
            alt = world.client_table.lookup_client(c.name, c.ip, parent_style=not world.parent_style)
            if alt is not None:
                other_style.add(alt.entry.key)
        for entry in world.client_table:
            users = used.get(entry.key, [])
            if not users:
                why = unreachable(entry.key, client=True, parent_style=world.parent_style)
                if why is None and entry.key in other_style:
                    style = "includes" if world.parent_style else "does not include"
                    why = f"never consulted: parent_domain_matches_subdomains {style} smtpd_access_maps"
                if why:
                    out.append(Suggestion(CLIENT_MAP, entry.key, entry.value, 0.0, [why], kind="inert",
                                          lineno=entry.lineno))
                else:
                    out.append(Suggestion(CLIENT_MAP, entry.key, entry.value, 0.0,
                                          ["no client matched it in the period"], kind="stale",
                                          lineno=entry.lineno))
                continue
            if entry.action == "OK":
                bad = [(c, abuse(c, world)) for c in users]
                worst = [(c, a) for c, a in bad if a[0] >= 3]
                if worst and len(worst) * 2 >= len(users):
                    c, (points, facts) = max(worst, key=lambda x: x[1][0])
                    out.append(Suggestion(CLIENT_MAP, entry.key, entry.value, float(points),
                                          [f"matched {c.name}[{c.ip}], which misbehaves: "
                                           + "; ".join(detail for _cat, detail in facts),
                                           "remove the OK (or replace it by REJECT)"],
                                          kind="conflict", subject=c.ip, lineno=entry.lineno))
    if world.sender_table is not None:
        out += _existing_sender_flags(world, world.sender_table)
    return out


def _existing_sender_flags(world: World, table: AccessTable) -> list[Suggestion]:
    """Sender entries nobody used, and OKs that let in domains misbehaving clients use."""
    out: list[Suggestion] = []
    hits: dict[str, set[str]] = {}  # entry key -> client ips of the senders it matched
    for d in world.ev.domains.values():
        for sender in d.senders:
            hit = world.sender_entry(sender)
            if hit is not None:
                hits.setdefault(hit.entry.key, set()).update(d.clients)
    for sender in world.ev.all_senders:
        hit = world.sender_entry(sender)
        if hit is not None:
            hits.setdefault(hit.entry.key, set())
    for entry in table:
        if entry.key not in hits:
            why = unreachable(entry.key, client=False, parent_style=world.parent_style)
            out.append(Suggestion(SENDER_MAP, entry.key, entry.value, 0.0,
                                  [why or "no sender matched it in the period"], kind="inert" if why else "stale",
                                  lineno=entry.lineno))
            continue
        clients = [world.ev.clients[ip] for ip in hits[entry.key] if ip in world.ev.clients]
        bad = [c for c in clients if abuse(c, world)[0] >= 3]
        if entry.action == "OK" and len(bad) >= 3 and len(bad) * 2 >= len(clients):
            out.append(Suggestion(SENDER_MAP, entry.key, entry.value, float(len(bad)), [
                f"{len(bad)} of the {len(clients)} clients using it misbehave ({abuse_summary(bad, world)})",
                "an OK here lets them skip the sender checks: remove it, or allow the domain's own "
                "servers in access.client instead"], kind="conflict", lineno=entry.lineno))
    return out


# ----------------------------------------------------------------------------- entry point


def suggest(events: Iterable[Event], *, client_table: AccessTable | None = None,
            sender_table: AccessTable | None = None, postfix: PostfixConfig | None = None,
            settings: SuggestSettings | None = None, client_path: str | None = None,
            sender_path: str | None = None, cutoff: datetime | None = None) -> SuggestResult:
    """Read events once and return suggestions and flags, best first.

    ``cutoff`` drops older events as they stream by; without it,
    ``settings.since`` counts back from the newest event, which needs them all
    in memory first.
    """
    settings = settings or SuggestSettings()
    delimiter, our_domains, parent_style = "+", [], DEFAULT_PARENT_STYLE
    if postfix is not None:
        delimiter = postfix.parameter("recipient_delimiter") or ""
        our_domains = [*postfix.mydestination, postfix.parameter("myorigin") or "",
                       postfix.parameter("mydomain") or ""]
        pdms = postfix.parameter("parent_domain_matches_subdomains")
        if pdms is not None:
            parent_style = "smtpd_access_maps" in re.split(r"[\s,]+", pdms)
    collector = EvidenceCollector(recipient_delimiter=delimiter, our_domains=[d for d in our_domains if "." in d])
    if cutoff is not None:
        collector.feed_all(e for e in events if e.ts is None or e.ts >= cutoff)
    else:
        collector.feed_all(_since(events, settings.since))
    world = World(collector, settings, client_table, sender_table, postfix, client_path, sender_path,
                   parent_style)
    items = (_client_candidates(world) + _domain_candidates(world) + _network_rejects(world)
             + _sender_rejects(world) + _existing_flags(world))
    order = {"suggestion": 0, "conflict": 1, "ineffective": 2, "stale": 3, "inert": 4, "transient": 5}
    items.sort(key=lambda i: (order.get(i.kind, 9), i.map, not i.action.startswith("OK"), -i.score, i.key))
    notes = [f"{collector.events} events, {len(collector.clients)} clients"
             + (f", {hours(collector.first, collector.last):.1f} h of log" if collector.first else ""),
             f"restriction order from {postfix.source}" if postfix is not None
             else "restriction order not checked (no Postfix configuration)"]
    return SuggestResult(items, notes)


def _since(events: Iterable[Event], since: timedelta | None) -> Iterable[Event]:
    """Keep events within ``since`` of the newest one seen so far (logs are in time order)."""
    if since is None:
        yield from events
        return
    buffered: list[Event] = list(events)
    stamps = [e.ts for e in buffered if e.ts is not None]
    if not stamps:
        yield from buffered
        return
    cutoff = max(stamps) - since
    for e in buffered:
        if e.ts is None or e.ts >= cutoff:
            yield e
