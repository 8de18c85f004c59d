"""Judging one client or sender domain: misbehaviour, identity, relationship, behaviour.

The weights are documented in ``maillens.suggest``; this module computes them
and says, for each point, the fact behind it, so every suggestion can be
explained line by line.  ``order_effect`` answers the other question a
suggestion must answer: would the entry take effect with the restriction
order of the current main.cf/master.cf?
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from maillens.accessmap import AccessTable
from maillens.suggestdata import (
    ABUSE_REJECTS,
    ClientStats,
    EvidenceCollector,
    aligned,
)

if TYPE_CHECKING:  # pragma: no cover
    from maillens.postconf import PostfixConfig
    from maillens.suggest import SuggestSettings

_GENERIC_RDNS = re.compile(r"(?:^|[.-])(?:dyn|dynamic|dhcp|dsl|adsl|xdsl|pool|cable|broadband|ppp|dialup|"
                           r"customer|client|static|host|ip|cpe|user|res|residential)[0-9-]*(?:-|$)")


@dataclass
class World:
    """What a judgement may consult: the evidence, the settings, the tables and main.cf."""

    ev: EvidenceCollector
    settings: SuggestSettings
    client_table: AccessTable | None
    sender_table: AccessTable | None
    cfg: PostfixConfig | None
    client_path: str | None
    sender_path: str | None
    parent_style: bool
    abuse_cache: dict[str, tuple[int, list[tuple[str, str]]]] = field(default_factory=dict)

    def client_entry(self, c: ClientStats):  # type: ignore[no-untyped-def]
        if self.client_table is None:
            return None
        return self.client_table.lookup_client(c.name, c.ip, parent_style=self.parent_style)

    def sender_entry(self, sender: str):  # type: ignore[no-untyped-def]
        if self.sender_table is None:
            return None
        return self.sender_table.lookup_sender(sender, parent_style=self.parent_style,
                                               recipient_delimiter=self.ev.delimiter)


#: Mailbox providers anyone can sign up with.  An access.sender OK for one of them lets
#: every forger of @gmail.com past the sender checks (and policyd-spf after them): never
#: suggested, whatever the evidence; their own servers' rejects need another fix.
SHARED_PROVIDERS: frozenset[str] = frozenset("""
gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de yahoo.es yahoo.it yahoo.co.jp ymail.com
rocketmail.com hotmail.com hotmail.co.uk hotmail.fr hotmail.de hotmail.it hotmail.es outlook.com outlook.fr
outlook.de live.com live.fr live.co.uk live.de msn.com aol.com aim.com icloud.com me.com mac.com
mail.com gmx.com gmx.net gmx.de gmx.at gmx.ch gmx.fr web.de t-online.de freenet.de posteo.de mailbox.org
proton.me protonmail.com protonmail.ch pm.me tutanota.com tuta.io zoho.com zohomail.com yandex.com yandex.ru
ya.ru mail.ru bk.ru inbox.ru list.ru rambler.ru qq.com foxmail.com 163.com 126.com yeah.net sina.com
sohu.com naver.com daum.net hanmail.net orange.fr wanadoo.fr free.fr laposte.net sfr.fr neuf.fr libero.it
virgilio.it tiscali.it alice.it seznam.cz wp.pl o2.pl interia.pl onet.pl fastmail.com fastmail.fm hushmail.com
rediffmail.com btinternet.com sky.com virginmedia.com comcast.net verizon.net att.net sbcglobal.net
bellsouth.net cox.net charter.net earthlink.net shaw.ca rogers.com sympatico.ca bigpond.com optusnet.com.au
""".split())


def shared_provider(domain: str, extra: Iterable[str] = ()) -> bool:
    """A freemail or big shared provider (or a subdomain of one), or one the config names."""
    domain = domain.lower().rstrip(".")
    names = SHARED_PROVIDERS.union(d.lower() for d in extra)
    return any(domain == n or domain.endswith("." + n) for n in names)


def hours(first: float | None, last: float | None) -> float:
    """Hours between two epoch times (0 when unknown)."""
    return ((last or 0.0) - (first or 0.0)) / 3600.0 if first is not None else 0.0


def generic_name(name: str, ip: str) -> bool:
    """A dynamic-looking rDNS name: it spells the address, or its first label is a numbered pool name."""
    if name == "unknown":
        return True
    numbers = re.findall(r"\d+", name)
    octets = ip.split(".") if "." in ip else []
    if octets and sum(1 for o in octets if o in numbers) >= 3:
        return True
    first = name.split(".", 1)[0]
    return bool(re.search(r"\d", first) and _GENERIC_RDNS.search(first))


def fqdn_helo(helo: str) -> bool:
    """A fully qualified host name (not an address literal, not ``localhost``-like)."""
    return bool(re.fullmatch(r"(?=.{4,253}$)([a-z0-9-]+\.)+[a-z][a-z0-9-]*", helo.lower()))


def abuse(c: ClientStats, world: World) -> tuple[int, list[tuple[str, str]]]:
    """Points and (category, detail) facts of misbehaviour: vetoes an OK, marks a network."""
    cached = world.abuse_cache.get(c.ip)
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
    world.abuse_cache[c.ip] = (points, facts)
    return points, facts


def abuse_summary(clients: Iterable[ClientStats], world: World) -> str:
    """``23 tried unknown recipients, 9 relay attempts, ...`` over a group of clients."""
    per = Counter(cat for c in clients for cat, _ in abuse(c, world)[1])
    return ", ".join(f"{n} {cat}" for cat, n in per.most_common())


def vetoes(c: ClientStats, world: World) -> list[str]:
    """Reasons that rule out an OK whatever else is true (empty: none)."""
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
    if any(r == "fail" and not aligned(c.name, d) and not aligned(helo_of(c), d) for (d, r) in c.spf):
        out.append("SPF fail for a domain it does not belong to")
    return out


def helo_of(c: ClientStats) -> str:
    """The HELO name the client used most (lower case)."""
    return c.helos.most_common(1)[0][0].lower() if c.helos else ""


def score_identity(c: ClientStats, world: World, facts: list[str]) -> tuple[float, list[str], list[str]]:
    """FCrDNS, HELO and the client↔domain link.

    Returns (points, linked domains, strongly linked domains): a HELO in the
    domain is a link the client asserts itself; its verified name, an SPF
    pass or a correspondent-only domain set are links others vouch for.
    """
    score = 0.0
    name, helo = c.name, helo_of(c)
    if c.verified and not generic_name(name, c.ip):
        score += 2
        facts.append(f"FCrDNS ok ({name})")
    elif c.verified:
        facts.append(f"FCrDNS ok but a generic name ({name})")
    elif c.fcrdns_warning:
        facts.append(f"no FCrDNS: PTR {c.fcrdns_warning} does not resolve back")
    steady_helo = len(c.helos) == 1 and fqdn_helo(helo)
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
    # A steady, well-named MTA that sends only for domains our users write to is linked to them by
    # that relationship, even when its name is in another domain (an ISP's or an ESP's relay).
    by_peers = [] if by_name or by_spf else [
        d for d in domains if world.ev.correspondent_users(d)] if (
        c.verified and not generic_name(name, c.ip) and helo == name and len(c.helos) == 1
        and 0 < len(domains) <= 3) else []
    if by_peers and len(by_peers) == len(domains):
        facts.append("every domain it sends for is one local users write to")
    else:
        by_peers = []
    strong = list(dict.fromkeys(by_name + by_spf + by_peers))
    return score, strong + [d for d in by_helo if d not in strong], strong


def score_relationship(c: ClientStats, linked: list[str], strong: list[str], world: World,
                       facts: list[str]) -> float:
    """Correspondents and the domain's other good mail: does the rest of the log know this sender?

    Correspondents count only for strongly linked domains: a bot can claim
    any domain in its HELO, including one our users write to.
    """
    score = 0.0
    for d in strong:
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


def score_behaviour(c: ClientStats, blocking: Counter[tuple[str, int, str]], world: World,
                    facts: list[str]) -> float:
    """How it sent: MTA retries, persistence, real recipients, one refusing check, low volume."""
    score = 0.0
    retries = sum(a.retries_after_tempfail(world.settings.retry_gap) for a in c.envelopes.values())
    if retries:
        score += 3
        facts.append(f"retried the same envelope {retries} time{'s' if retries > 1 else ''} after a 4xx")
    span = hours(c.first, c.last)
    if span >= 1 and (c.sessions >= 2 or len(c.reject_times) >= 2):
        score += 1
        facts.append(f"came back over {span:.1f} h")
    rcpts = list(c.rejected_rcpts)
    known = sum(1 for r in rcpts if world.ev.is_known_recipient(r))
    if rcpts and known == len(rcpts):
        score += 1
        facts.append(f"refused recipients are existing users ({known}/{len(rcpts)})")
    checks = {(r, z) for (r, _code, z) in blocking}
    if len(checks) == 1:
        score += 1
    units = max(1, c.sessions, len({s for (s, _r) in c.envelopes}) + c.accepted)
    if sum(c.rejected_rcpts.values()) + c.accepted_rcpts <= 5 * units:
        score += 1
        facts.append(f"low volume ({units} {'sessions' if c.sessions else 'messages'})")
    if c.warn_zones:
        score -= 2
        facts.append(f"also listed in {', '.join(sorted(c.warn_zones))} (warn only)")
    return score


def zones_passed(world: World, c: ClientStats, blocking: Counter[tuple[str, int, str]]) -> str | None:
    """``passed the 7 DNSBLs checked before it``: the restriction order shows what the client got through."""
    zones = {z for (r, _code, z) in blocking if r == "reject_rbl_client" and z}
    if world.cfg is None or len(zones) != 1:
        return None
    program = c.services.most_common(1)[0][0] if c.services else "postfix/smtpd"
    service = world.cfg.service_for_program(program) or "smtp"
    entries = [r for r in world.cfg.restrictions(service, "client") if r.name == "reject_rbl_client"]
    zone = zones.pop()
    before = next((i for i, r in enumerate(entries) if r.zone is not None and r.zone.domain == zone), None)
    if not before:
        return None
    return f"passed the {before} DNSBL{'s' if before > 1 else ''} checked before {zone}"


def reject_summary(blocking: Counter[tuple[str, int, str]], c: ClientStats) -> str:
    """``22 refused (22 by reject_rbl_client zone; 554) over 14.8 h``."""
    parts = Counter[str]()
    for (restriction, code, zone), n in blocking.items():
        parts[f"{restriction}{' ' + zone if zone else ''}"] += n
    what = ", ".join(f"{n} by {k}" for k, n in parts.most_common())
    codes = sorted({code for (_r, code, _z) in blocking})
    return f"{sum(blocking.values())} refused ({what}; {'/'.join(map(str, codes))}) over {hours(c.first, c.last):.1f} h"


def _same_table(world: World, amap: Any, path: str | None) -> bool:
    """Is the map main.cf names the table file we were given (same file, else same base name)?"""
    if path is None or world.cfg is None:
        return True
    located = world.cfg.locate(amap.path) if amap.path else None
    try:
        if located is not None and Path(located).resolve() == Path(path).resolve():
            return True
    except OSError:
        pass
    return bool(amap.path) and Path(amap.path).name == Path(path).name


def order_effect(world: World, c: ClientStats, blocking: Counter[tuple[str, int, str]], check: str,
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
    if not ours:  # a table given by another name (a working copy): main.cf's one table of that check is it
        named = [(stage, r) for stage, rs in lists.items() for r in rs if r.name == check and r.map is not None]
        if len({r.map.spec for _, r in named}) == 1:
            ours = named
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


