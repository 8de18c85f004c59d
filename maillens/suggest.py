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
   constant HELO) lies in the sender's domain, or SPF passed for it;
3. a score of at least ``ok_threshold`` (default 8) from the weights below.

==========================================================  ======
evidence                                                    points
==========================================================  ======
forward-confirmed rDNS that is not a generic/dynamic name    +2
one FQDN HELO in every session (+1 more if = its hostname)   +1/+2
hostname in the sender's domain (HELO only: +1)              +2
few sender domains (<= 3); many (>= 5): forger               +1/-2
local users wrote to that domain (linked client only)        +3
SPF pass for the domain from this client                     +2
the domain's mail accepted from other linked clients         +1
the same envelope retried after a 4xx, like an MTA queue     +3
came back over at least an hour                              +1
every refused recipient is an existing user                  +1
refused by one check only (one RBL zone)                     +1
low volume (<= 5 recipients per message)                     +1
also listed by a warn-only DNSBL                             -2
==========================================================  ======

A candidate whose refusals were all temporary (4xx) and whose mail was
accepted afterwards needs no entry: the problem went away by itself.

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
(a ``.domain`` key Postfix never consults with the current
``parent_domain_matches_subdomains``) or ``ineffective`` (an OK that matched
but could not help because of the restriction order).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from maillens.accessmap import DEFAULT_PARENT_STYLE, AccessTable, valid_key
from maillens.errors import ConfigError, UsageError
from maillens.events import Event
from maillens.suggestdata import (
    ABUSE_REJECTS,
    CLIENT_REPUTATION,
    HELO_SYNTAX,
    SENDER_CHECKS,
    ClientStats,
    DomainStats,
    EvidenceCollector,
    aligned,
)

if TYPE_CHECKING:  # pragma: no cover
    from maillens.postconf import PostfixConfig

CLIENT_MAP, SENDER_MAP = "access.client", "access.sender"
_GENERIC_RDNS = re.compile(r"(?:^|[.-])(?:dyn|dynamic|dhcp|dsl|adsl|xdsl|pool|cable|broadband|ppp|dialup|"
                           r"customer|client|static|host|ip|cpe|user|res|residential)[0-9-]*(?:-|$)")


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

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> SuggestSettings:
        known = {"ok_threshold": float, "min_network_clients": int, "min_domain_clients": int,
                 "network_share": float, "retry_gap": float}
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key == "since":
                try:
                    values["since"] = parse_since(str(value))
                except UsageError:
                    raise ConfigError(f"[suggest] since = {value!r}: use e.g. '30d'") from None
            elif key in known:
                try:
                    values[key] = known[key](value)
                except (TypeError, ValueError):
                    raise ConfigError(f"[suggest] {key} = {value!r} must be a number") from None
            else:
                raise ConfigError(f"[suggest] has no setting {key!r}; known: since, {', '.join(known)}")
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


# ----------------------------------------------------------------------------- context


@dataclass
class _World:
    ev: EvidenceCollector
    settings: SuggestSettings
    client_table: AccessTable | None
    sender_table: AccessTable | None
    cfg: PostfixConfig | None
    client_path: str | None
    sender_path: str | None
    parent_style: bool
    abuse: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    def client_entry(self, c: ClientStats):  # type: ignore[no-untyped-def]
        if self.client_table is None:
            return None
        return self.client_table.lookup_client(c.name, c.ip, parent_style=self.parent_style)

    def sender_entry(self, sender: str):  # type: ignore[no-untyped-def]
        if self.sender_table is None:
            return None
        return self.sender_table.lookup_sender(sender, parent_style=self.parent_style,
                                               recipient_delimiter=self.ev.delimiter)


def _hours(first: float | None, last: float | None) -> float:
    return ((last or 0.0) - (first or 0.0)) / 3600.0 if first is not None else 0.0


def _generic_name(name: str, ip: str) -> bool:
    """A dynamic-looking rDNS name: it spells the address, or its first label is a numbered pool name."""
    if name == "unknown":
        return True
    numbers = re.findall(r"\d+", name)
    octets = ip.split(".") if "." in ip else []
    if octets and sum(1 for o in octets if o in numbers) >= 3:
        return True
    first = name.split(".", 1)[0]
    return bool(re.search(r"\d", first) and _GENERIC_RDNS.search(first))


def _fqdn_helo(helo: str) -> bool:
    return bool(re.fullmatch(r"(?=.{4,253}$)([a-z0-9-]+\.)+[a-z][a-z0-9-]*", helo.lower()))


def _abuse(c: ClientStats, world: _World) -> tuple[int, list[tuple[str, str]]]:
    """Points and (category, detail) facts of misbehaviour: vetoes an OK, marks a network."""
    cached = world.abuse.get(c.ip)
    if cached is not None:
        return cached
    points, facts = 0, []  # type: int, list[tuple[str, str]]
    counts = c.restriction_counts()
    unknown = len(c.unknown_rcpts)
    if unknown:
        points += 3 if unknown >= 3 else 1
        facts.append(("unknown recipients", f"{unknown} unknown recipient{'s' if unknown > 1 else ''} tried"))
    for restriction, what in ABUSE_REJECTS.items():
        if restriction != "reject_unlisted_recipient" and counts[restriction]:
            points += 1 if restriction == "reject_non_fqdn_recipient" else 3
            facts.append((what, f"{counts[restriction]} x {what}"))
    spf_fail = {d for (d, r) in c.spf if r == "fail" and not aligned(c.name, d)}
    if spf_fail:
        points += 2
        facts.append(("SPF forgery", f"SPF fail for {', '.join(sorted(spf_fail)[:3])}"))
    for n, what, weight in ((c.sasl_failures, "SASL authentication failures", 3),
                            (c.pipelining, "pipelining violations", 3),
                            (c.too_many_errors, "'too many errors' disconnects", 2)):
        if n:
            points += weight
            facts.append((what, f"{n} {what}"))
    rbl = {z for (r, _code, z) in c.rejects if r == "reject_rbl_client" and z} | c.warn_zones
    if rbl:
        points += 1
        facts.append(("RBL-listed", f"listed in {', '.join(sorted(rbl))}"))
    if counts["reject_invalid_helo_hostname"] or counts["reject_unknown_sender_domain"]:
        points += 1
        facts.append(("bogus HELO or sender", "invalid HELO or non-existent sender domain"))
    world.abuse[c.ip] = (points, facts)
    return points, facts


def _abuse_summary(clients: Iterable[ClientStats], world: _World) -> str:
    """``23 tried unknown recipients, 9 relay attempts, ...`` over a group of clients."""
    per = Counter(cat for c in clients for cat, _ in _abuse(c, world)[1])
    return ", ".join(f"{n} {cat}" for cat, n in per.most_common())


# ----------------------------------------------------------------------------- OK: clients


def _vetoes(c: ClientStats, world: _World) -> list[str]:
    counts = c.restriction_counts()
    out = []
    if len(c.unknown_rcpts) >= 3 or (c.unknown_rcpts and len(c.unknown_rcpts) * 5 > len(c.rejected_rcpts)):
        out.append("tried unknown recipients")
    for restriction in ("reject_unauth_destination", "reject_unauth_pipelining", "check_helo_access",
                        "reject_non_fqdn_sender", "check_client_access"):
        if counts[restriction]:
            out.append(f"refused by {restriction}")
    if c.sasl_failures or c.pipelining or c.too_many_errors:
        out.append("protocol abuse")
    if any(r == "fail" and not aligned(c.name, d) and not aligned(_helo(c), d) for (d, r) in c.spf):
        out.append("SPF fail for a domain it does not belong to")
    return out


def _helo(c: ClientStats) -> str:
    return c.helos.most_common(1)[0][0].lower() if c.helos else ""


def _score_identity(c: ClientStats, world: _World, facts: list[str]) -> tuple[float, list[str]]:
    """FCrDNS, HELO and the client↔domain link; returns (points, linked domains)."""
    score = 0.0
    name, helo = c.name, _helo(c)
    if c.verified and not _generic_name(name, c.ip):
        score += 2
        facts.append(f"FCrDNS ok ({name})")
    elif c.verified:
        facts.append(f"FCrDNS ok but a generic name ({name})")
    elif c.fcrdns_warning:
        facts.append(f"no FCrDNS: PTR {c.fcrdns_warning} does not resolve back")
    steady_helo = len(c.helos) == 1 and _fqdn_helo(helo)
    if steady_helo:
        score += 2 if helo == name else 1
        facts.append(f"HELO {helo}" + (" = its hostname" if helo == name else " in every session"))
    domains = [d for d, _ in c.domains.most_common()] + [d for d in c.accepted_domains if d not in c.domains]
    by_name = [d for d in domains if c.verified and aligned(name, d)]
    by_helo = [d for d in domains if steady_helo and aligned(helo, d)]
    by_spf = sorted({d for (d, r) in c.spf if r == "pass"})
    if by_name:
        score += 2
        facts.append(f"its hostname is in {', '.join(by_name[:3])}")
    elif by_helo:
        score += 1
        facts.append(f"its HELO is in {', '.join(by_helo[:3])}")
    if by_spf:
        score += 2
        facts.append(f"SPF pass for {', '.join(by_spf[:3])}")
    if domains and len(domains) <= 3:
        score += 1
        facts.append(f"sends for {', '.join(domains)}")
    elif len(domains) >= 5:
        score -= 2
        facts.append(f"uses {len(domains)} different sender domains")
    linked = list(dict.fromkeys(by_name + by_spf + by_helo))
    return score, linked


def _score_relationship(c: ClientStats, linked: list[str], world: _World, facts: list[str]) -> float:
    score = 0.0
    verified_links = [d for d in linked if aligned(c.name, d) or (d, "pass") in c.spf]
    for d in verified_links:
        users = world.ev.correspondent_users(d)
        if users:
            score += 3
            facts.append(f"{len(users)} local user{'s' if len(users) > 1 else ''} wrote to {d}")
            break
    for d in linked:
        dom = world.ev.domains.get(d)
        others = {ip for ip in (dom.accepted_clients if dom else ()) if ip != c.ip
                  and (ip in dom.spf_pass_clients or aligned(world.ev.client_names.get(ip), d))}
        if others:
            score += 1
            facts.append(f"{d} delivered fine from {len(others)} other client{'s' if len(others) > 1 else ''}")
            break
    return score


def _score_behaviour(c: ClientStats, blocking: Counter[tuple[str, int, str]], world: _World,
                     facts: list[str]) -> float:
    score = 0.0
    retries = sum(a.retries_after_tempfail(world.settings.retry_gap) for a in c.envelopes.values())
    if retries:
        score += 3
        facts.append(f"retried the same envelope {retries} time{'s' if retries > 1 else ''} after a 4xx")
    hours = _hours(c.first, c.last)
    if hours >= 1 and (c.sessions >= 2 or len(c.reject_times) >= 2):
        score += 1
        facts.append(f"came back over {hours:.1f} h")
    rcpts = list(c.rejected_rcpts)
    known = sum(1 for r in rcpts if world.ev.is_known_recipient(r))
    if rcpts and known == len(rcpts):
        score += 1
        facts.append(f"refused recipients are existing users ({known}/{len(rcpts)})")
    checks = {(r, z) for (r, _code, z) in blocking}
    if len(checks) == 1:
        score += 1
    messages = max(1, len({s for (s, _r) in c.envelopes}), c.sessions)
    if sum(c.rejected_rcpts.values()) + c.accepted_rcpts <= 5 * max(messages, c.sessions + c.accepted):
        score += 1
        facts.append(f"low volume ({c.sessions or messages} sessions)")
    if c.warn_zones:
        score -= 2
        facts.append(f"also listed in {', '.join(sorted(c.warn_zones))} (warn only)")
    return score


def _reject_summary(blocking: Counter[tuple[str, int, str]], c: ClientStats) -> str:
    parts = Counter[str]()
    for (restriction, code, zone), n in blocking.items():
        parts[f"{restriction}{' ' + zone if zone else ''}"] += n
    what = ", ".join(f"{n} by {k}" for k, n in parts.most_common())
    codes = sorted({code for (_r, code, _z) in blocking})
    return f"{sum(blocking.values())} refused ({what}; {'/'.join(map(str, codes))}) over {_hours(c.first, c.last):.1f} h"


def _transient(times: list[float], codes: Iterable[int], accepted_after: Iterable[float]) -> bool:
    """All refusals were 4xx and mail got through later: nothing to allow permanently."""
    if not times or any(code >= 500 for code in codes):
        return False
    last_reject = max(times)
    return any(t > last_reject for t in accepted_after)


def _client_candidates(world: _World) -> list[Suggestion]:
    out: list[Suggestion] = []
    for c in world.ev.clients.values():
        blocking = Counter({k: n for k, n in c.rejects.items() if k[0] in CLIENT_REPUTATION | HELO_SYNTAX})
        if not blocking:
            continue
        existing = world.client_entry(c)
        facts = [_reject_summary(blocking, c)]
        if _transient(c.reject_times, [k[1] for k in blocking], [t for t, _ in c.accepted_times]):
            out.append(Suggestion(CLIENT_MAP, c.name if c.verified else c.ip, "none", 0.0,
                                  facts + ["all refusals were temporary and its mail was accepted later"],
                                  kind="transient", subject=c.ip))
            continue
        if _vetoes(c, world):
            continue
        if existing is not None:
            if existing.action == "OK":
                eff, change = _order(world, c, blocking, "check_client_access", world.client_path)
                out.append(Suggestion(CLIENT_MAP, existing.entry.key, existing.entry.value, 0.0,
                                      facts + [f"already matched by {existing.entry.where}"],
                                      kind="ineffective", subject=c.ip, effective=eff, config_change=change,
                                      lineno=existing.entry.lineno))
            continue
        score, linked = _score_identity(c, world, facts)
        if not linked:
            continue
        score += _score_relationship(c, linked, world, facts)
        score += _score_behaviour(c, blocking, world, facts)
        if score < world.settings.ok_threshold:
            continue
        key = c.name if c.verified else c.ip
        if not valid_key(key):
            continue
        eff, change = _order(world, c, blocking, "check_client_access", world.client_path)
        out.append(Suggestion(CLIENT_MAP, key, "OK", score, facts, subject=c.ip, effective=eff,
                              config_change=change))
    return out


# ----------------------------------------------------------------------------- OK: sender domains


def _domain_candidates(world: _World) -> list[Suggestion]:
    out: list[Suggestion] = []
    for d in world.ev.domains.values():
        blocking = Counter({k: n for k, n in d.rejects.items() if k[0] in SENDER_CHECKS})
        if not blocking or not valid_key(d.domain):
            continue
        refused_by = {ip for ip in d.rejected_clients
                      if any(k[0] in SENDER_CHECKS for k in world.ev.clients[ip].rejects)}
        clients = [world.ev.clients[ip] for ip in sorted(refused_by)]
        facts = [f"{sum(blocking.values())} refused ({', '.join(f'{n} by {r} {code}' for (r, code), n in blocking.most_common())})"
                 f" from {len(clients)} client{'s' if len(clients) != 1 else ''} over {_hours(d.first, d.last):.1f} h"]
        times = [t for c in clients for t in c.reject_times]
        accepted_after = [t for c in clients for t, s in c.accepted_times if s.endswith("@" + d.domain)]
        if _transient(times, [code for (_r, code) in blocking], accepted_after):
            out.append(Suggestion(SENDER_MAP, d.domain, "none", 0.0,
                                  facts + ["all refusals were temporary and the same mail was accepted later"],
                                  kind="transient", subject=d.domain))
            continue
        if not clients or any(not aligned(c.name, d.domain) or not c.verified for c in clients):
            continue  # refused from clients that are not the domain's own: forgery, not a false positive
        if any(_vetoes(c, world) for c in clients) or any(world.sender_entry(s) for s in d.senders):
            continue
        score = 0.0
        names = sorted({c.name for c in clients})
        score += 2
        facts.append(f"sent by its own server{'s' if len(names) > 1 else ''} {', '.join(names[:3])} (FCrDNS)")
        if all(len(c.helos) == 1 and _helo(c) == c.name for c in clients):
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
        score += _score_behaviour(merged, Counter({(r, code, ""): n for (r, code), n in blocking.items()}),
                                  world, facts)
        if len({dom for c in clients for dom in c.domains}) == 1:
            score += 1
            facts.append(f"only {d.domain} from there")
        if score < world.settings.ok_threshold:
            continue
        if any(r == "check_policy_service" for (r, _c) in blocking):
            facts.append(f"narrower fix: ask {d.domain} to list {', '.join(names[:3])} in its SPF record")
        eff, change = _order(world, clients[0], Counter({(r, c, ""): n for (r, c), n in blocking.items()}),
                             "check_sender_access", world.sender_path)
        out.append(Suggestion(SENDER_MAP, d.domain, "OK", score, facts, subject=d.domain, effective=eff,
                              config_change=change))
    return out


# ----------------------------------------------------------------------------- REJECT


def _net16(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 16 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _network_rejects(world: _World) -> list[Suggestion]:
    """rDNS suffixes of abusive provider networks the client checks let through."""
    settings = world.settings
    by_suffix: dict[str, set[str]] = {}
    for c in world.ev.clients.values():
        if not c.verified:
            continue
        labels = c.name.split(".")
        for i in range(1, len(labels) - 1):
            by_suffix.setdefault(".".join(labels[i:]), set()).add(c.ip)
    qualified: list[tuple[str, set[str], list[str]]] = []
    for suffix, ips in by_suffix.items():
        if len(ips) < settings.min_network_clients:
            continue
        clients = [world.ev.clients[ip] for ip in ips]
        nets = Counter(_net16(ip) for ip in ips)
        net, in_net = nets.most_common(1)[0]
        bad = [c for c in clients if _abuse(c, world)[0] >= 1]
        if in_net < settings.network_share * len(ips) or len(bad) < settings.network_share * len(ips):
            continue
        if any(world.ev.correspondent_users(d) for c in clients for d in c.accepted_domains
               if aligned(c.name, d) or (d, "pass") in c.spf and not _abuse(c, world)[0]):
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
                 f"{len(bad)} misbehaved (clients per kind: {_abuse_summary(bad, world)})",
                 f"{missed:.0%} of their {total} recipients got past the client checks "
                 f"({sum(c.accepted for c in clients)} messages accepted)",
                 "no legitimate correspondent among them"]
        qualified.append((suffix, ips, facts))
    qualified.sort(key=lambda q: (-len(q[1]), -q[0].count(".")))
    out: list[Suggestion] = []
    taken: set[str] = set()
    for suffix, ips, facts in qualified:
        if ips <= taken:
            continue
        taken |= ips
        key = suffix if world.parent_style else "." + suffix
        if not valid_key(key):
            continue
        action = f"REJECT too much spam from {suffix}"
        sample = world.ev.clients[next(iter(ips))]
        eff, change = _order(world, sample, Counter(), "check_client_access", world.client_path)
        out.append(Suggestion(CLIENT_MAP, key, action, float(len(ips)), facts, subject=suffix,
                              effective=eff, config_change=change))
    return out


def _sender_rejects(world: _World) -> list[Suggestion]:
    """Sender domains whose own (SPF-authorised) servers misbehave and that never sent good mail."""
    out: list[Suggestion] = []
    for d in world.ev.domains.values():
        if len(d.clients) < world.settings.min_domain_clients or d.accepted or not d.spf_pass_clients:
            continue
        if world.ev.correspondent_users(d.domain) or not valid_key(d.domain):
            continue
        authorised = [world.ev.clients[ip] for ip in d.spf_pass_clients if ip in world.ev.clients]
        if not authorised or any(_abuse(c, world)[0] < 1 for c in authorised):
            continue
        if any(world.sender_entry(s) for s in list(d.senders)[:20]):
            continue
        facts = [f"used by {len(d.clients)} different clients, {sum(d.rejects.values())} recipients refused, "
                 f"nothing ever accepted",
                 f"its SPF record authorises {len(authorised)} of them, all misbehaving "
                 f"(clients per kind: {_abuse_summary(authorised, world)})",
                 "no local user writes to it"]
        sample = world.ev.clients[next(iter(d.rejected_clients or d.clients))]
        eff, change = _order(world, sample, Counter(), "check_sender_access", world.sender_path)
        out.append(Suggestion(SENDER_MAP, d.domain, f"REJECT mail from {d.domain} refused: its servers send spam",
                              float(len(d.clients)), facts, subject=d.domain, effective=eff, config_change=change))
    return out


# ----------------------------------------------------------------------------- existing entries


def _existing_flags(world: _World) -> list[Suggestion]:
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
                if entry.key in other_style:
                    style = "includes" if world.parent_style else "does not include"
                    out.append(Suggestion(CLIENT_MAP, entry.key, entry.value, 0.0, [
                        f"never consulted: parent_domain_matches_subdomains {style} smtpd_access_maps"],
                        kind="inert", lineno=entry.lineno))
                else:
                    out.append(Suggestion(CLIENT_MAP, entry.key, entry.value, 0.0,
                                          ["no client matched it in the period"], kind="stale",
                                          lineno=entry.lineno))
                continue
            if entry.action == "OK":
                bad = [(c, _abuse(c, world)) for c in users]
                worst = [(c, a) for c, a in bad if a[0] >= 3]
                if worst and len(worst) * 2 >= len(users):
                    c, (points, facts) = max(worst, key=lambda x: x[1][0])
                    out.append(Suggestion(CLIENT_MAP, entry.key, entry.value, float(points),
                                          [f"matched {c.name}[{c.ip}], which misbehaves: "
                                           + "; ".join(detail for _cat, detail in facts),
                                           "remove the OK (or replace it by REJECT)"],
                                          kind="conflict", subject=c.ip, lineno=entry.lineno))
    if world.sender_table is not None:
        hits: dict[str, set[str]] = {}
        for sender in world.ev.all_senders:
            hit = world.sender_entry(sender)
            if hit is not None:
                hits.setdefault(hit.entry.key, set()).add(sender)
        for entry in world.sender_table:
            if entry.key not in hits:
                out.append(Suggestion(SENDER_MAP, entry.key, entry.value, 0.0,
                                      ["no sender matched it in the period"], kind="stale", lineno=entry.lineno))
    return out


# ----------------------------------------------------------------------------- restriction order


def _same_table(world: _World, amap: Any, path: str | None) -> bool:
    if path is None or world.cfg is None:
        return True
    located = world.cfg.locate(amap.path) if amap.path else None
    try:
        if located is not None and Path(located).resolve() == Path(path).resolve():
            return True
    except OSError:
        pass
    return bool(amap.path) and Path(amap.path).name == Path(path).name


def _order(world: _World, c: ClientStats, blocking: Counter[tuple[str, int, str]], check: str,
           path: str | None) -> tuple[bool | None, str | None]:
    """Would an entry in the table behind ``check`` have let this mail in, given main.cf?"""
    cfg = world.cfg
    if cfg is None:
        return None, None
    program = c.services.most_common(1)[0][0] if c.services else "postfix/smtpd"
    service = cfg.service_for_program(program) or "smtp"
    from maillens.restrictions import EVALUATION_ORDER, STAGE_PARAMETERS

    lists = {stage: cfg.restrictions(service, stage) for stage in EVALUATION_ORDER}
    ours = [(stage, r) for stage, rs in lists.items() for r in rs
            if r.name == check and r.map is not None and _same_table(world, r.map, path)]
    spec = ours[0][1].map.spec if ours else f"hash:{path or '/etc/postfix/' + check.split('_')[1] + '.access'}"
    if not blocking:
        if ours:
            return True, None
        stage = "client" if check == "check_client_access" else "sender"
        return False, f"add '{check} {spec}' to {STAGE_PARAMETERS[stage]}"
    changes: list[str] = []
    for (restriction, _code, zone) in blocking:
        found = [(stage, r) for stage, rs in lists.items() for r in rs
                 if r.name == restriction and not r.warn_only
                 and (not zone or r.zone is None or r.zone.domain == zone)]
        if not found:
            return None, f"{restriction} is not in the current configuration of service {service}"
        stage, rej = found[0]
        param = STAGE_PARAMETERS[stage]
        mine = [r for s, r in ours if s == stage]
        if mine and mine[0].position < rej.position:
            continue
        if mine:
            change = (f"{check} must come before {restriction} in {param} "
                      f"(now entry {mine[0].position}, after entry {rej.position})")
        else:
            change = f"{param} has no {check}: add '{check} {spec}' before {restriction}"
        hint = _HINTS.get(restriction)
        changes.append(change + (f" (or {hint})" if hint else ""))
    if not changes:
        return True, None
    return False, "; ".join(dict.fromkeys(changes))


_HINTS = {
    "reject_unknown_client_hostname": "the sending site fixes its PTR/A records",
    "reject_unknown_reverse_client_hostname": "the sending site fixes its PTR record",
    "reject_non_fqdn_helo_hostname": "a check_helo_access entry, or the sender fixes its HELO",
    "reject_invalid_helo_hostname": "a check_helo_access entry, or the sender fixes its HELO",
    "reject_unknown_helo_hostname": "a check_helo_access entry, or the sender fixes its HELO",
}


# ----------------------------------------------------------------------------- entry point


def suggest(events: Iterable[Event], *, client_table: AccessTable | None = None,
            sender_table: AccessTable | None = None, postfix: PostfixConfig | None = None,
            settings: SuggestSettings | None = None, client_path: str | None = None,
            sender_path: str | None = None) -> SuggestResult:
    """Read events once and return suggestions and flags, best first."""
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
    collector.feed_all(_since(events, settings.since))
    world = _World(collector, settings, client_table, sender_table, postfix, client_path, sender_path,
                   parent_style)
    items = (_client_candidates(world) + _domain_candidates(world) + _network_rejects(world)
             + _sender_rejects(world) + _existing_flags(world))
    order = {"suggestion": 0, "conflict": 1, "ineffective": 2, "stale": 3, "inert": 4, "transient": 5}
    items.sort(key=lambda i: (order.get(i.kind, 9), i.map, not i.action.startswith("OK"), -i.score, i.key))
    notes = [f"{collector.events} events, {len(collector.clients)} clients"
             + (f", {_hours(collector.first, collector.last):.1f} h of log" if collector.first else ""),
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
