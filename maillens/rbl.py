"""DNS block/allow lists: zone specs as main.cf writes them, and their health.

A DNSBL that died keeps answering NXDOMAIN (harmless but useless), one that
was abandoned may start listing the whole Internet (every message rejected),
and Spamhaus refuses queries that come through public resolvers with a
special 127.255.255.x answer (so ``reject_rbl_client zen.spamhaus.org``
silently does nothing).  None of that shows in the mail log until it hurts;
``check_zones`` asks each zone for its standard test points (RFC 5782 §5:
127.0.0.2 and ``test`` listed, 127.0.0.1 and ``invalid`` not listed, plus a
zone's documented extra test entries) and says which case applies.

Zone specs: ``zen.spamhaus.org``, ``zen.spamhaus.org=127.0.0.[2..11]``
(reply filter: only those answers count) and, in ``postscreen_dnsbl_sites``,
``zen.spamhaus.org=127.0.0.[2..11]*3`` (weight).

dnspython is imported inside the functions that query, so reading a
configuration does not pay for it.
"""

from __future__ import annotations

import ipaddress
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from maillens.errors import UsageError

#: Restrictions whose argument is a DNS list zone, and the kind of that zone.
ZONE_RESTRICTIONS: Mapping[str, str] = {
    "reject_rbl_client": "rbl",
    "permit_dnswl_client": "dnswl",
    "reject_rhsbl_client": "rhsbl",
    "reject_rhsbl_reverse_client": "rhsbl",
    "reject_rhsbl_helo": "rhsbl",
    "reject_rhsbl_sender": "rhsbl",
    "reject_rhsbl_recipient": "rhsbl",
    "permit_rhswl_client": "rhswl",
    "postscreen_dnsbl_sites": "rbl",
}

#: Documented test entries beyond 127.0.0.2 (all must be listed).
EXTRA_TEST_POINTS: Mapping[str, tuple[str, ...]] = {
    "zen.spamhaus.org": ("127.0.0.4", "127.0.0.10"),
    "sbl-xbl.spamhaus.org": ("127.0.0.4",),
    "xbl.spamhaus.org": ("127.0.0.4",),
}

#: Spamhaus-style "we will not answer you" codes.
REFUSAL_ANSWERS: Mapping[str, str] = {
    "127.255.255.252": "typing error in the DNSBL name",
    "127.255.255.254": "queried through a public/open resolver",
    "127.255.255.255": "excessive number of queries",
}

STATUSES = ("alive", "dead", "lists_everything", "refused")


# --------------------------------------------------------------------------- zone specs


@dataclass(frozen=True)
class ReplyFilter:
    """A reply filter such as ``127.0.0.[2..11]`` or ``127.0.[0..255].[1;3]``.

    Each of the four octets is a number or ``[...]`` holding ``;``-separated
    numbers and ``a..b`` ranges, as postconf(5) describes.
    """

    text: str
    octets: tuple[frozenset[int], ...]

    @classmethod
    def parse(cls, text: str) -> ReplyFilter | None:
        parts = re.findall(r"\[[^\]]*\]|[^.\[\]]+", text)
        if len(parts) != 4 or "".join(parts).count("[") != text.count("["):
            return None
        octets: list[frozenset[int]] = []
        for part in parts:
            values: set[int] = set()
            for item in part.strip("[]").split(";"):
                lo, dots, hi = item.partition("..")
                try:
                    a, b = int(lo), int(hi if dots else lo)
                except ValueError:
                    return None
                if not (0 <= a <= b <= 255):
                    return None
                values.update(range(a, b + 1))
            octets.append(frozenset(values))
        return cls(text, tuple(octets))

    def matches(self, address: str) -> bool:
        try:
            packed = ipaddress.IPv4Address(address).packed
        except ValueError:
            return False
        return all(octet in allowed for octet, allowed in zip(packed, self.octets))


@dataclass(frozen=True)
class RblZone:
    """One DNS list as configured: domain, kind, optional reply filter and weight.

    ``kind`` is ``rbl`` (client IP lists), ``rhsbl`` (domain lists),
    ``dnswl``/``rhswl`` (allow lists).  ``restriction`` is where it came from
    (``reject_rbl_client``, ``postscreen_dnsbl_sites``...).
    """

    domain: str
    kind: str
    restriction: str
    filter: ReplyFilter | None = None
    weight: int | None = None
    raw: str = ""

    @property
    def filter_text(self) -> str:
        return self.filter.text if self.filter else ""

    @property
    def ip_based(self) -> bool:
        return self.kind in ("rbl", "dnswl")

    def counts(self, answer: str) -> bool:
        """Whether an A answer from this zone makes the restriction fire."""
        return self.filter.matches(answer) if self.filter else True

    def to_dict(self) -> dict[str, object]:
        return {"zone": self.domain, "kind": self.kind, "restriction": self.restriction,
                "filter": self.filter_text or None, "weight": self.weight}


def parse_zone_spec(spec: str, restriction: str = "reject_rbl_client", *, weighted: bool = False) -> RblZone | None:
    """``zone[=filter][*weight]`` → ``RblZone`` (None when it is not a domain)."""
    text = spec.strip()
    weight: int | None = None
    if weighted:
        m = re.search(r"\*(-?\d+)$", text)
        if m:
            weight, text = int(m.group(1)), text[: m.start()]
        else:
            weight = 1
    domain, _, filt = text.partition("=")
    domain = domain.strip().rstrip(".").lower()
    if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", domain):
        return None
    reply_filter = ReplyFilter.parse(filt.strip()) if filt.strip() else None
    kind = ZONE_RESTRICTIONS.get(restriction, "rbl")
    if restriction == "postscreen_dnsbl_sites" and weight is not None and weight < 0:
        kind = "dnswl"
    return RblZone(domain, kind, restriction, reply_filter, weight, spec)


# --------------------------------------------------------------------------- health check


@dataclass
class Probe:
    """One DNS question about a test point and what came back."""

    point: str
    qname: str
    expect_listed: bool
    rcode: str = ""
    answers: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0
    error: str | None = None

    @property
    def listed(self) -> bool:
        return bool(self.answers)

    def to_dict(self) -> dict[str, object]:
        return {"point": self.point, "qname": self.qname, "expect_listed": self.expect_listed,
                "rcode": self.rcode, "answers": self.answers,
                "elapsed_ms": round(self.elapsed_ms, 1), "error": self.error}


@dataclass
class ZoneHealth:
    """The verdict for one zone, with the evidence."""

    zone: RblZone
    status: str
    reason: str
    probes: list[Probe]

    @property
    def ok(self) -> bool:
        return self.status == "alive"

    @property
    def elapsed_ms(self) -> float:
        return sum(p.elapsed_ms for p in self.probes)

    def to_dict(self) -> dict[str, object]:
        out = self.zone.to_dict()
        out.update({"status": self.status, "reason": self.reason,
                    "elapsed_ms": round(self.elapsed_ms, 1), "probes": [p.to_dict() for p in self.probes]})
        return out


def parse_nameserver(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address → (address, port)."""
    text = text.strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    try:
        ipaddress.ip_address(host)
        number = int(port) if port else 53
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"--nameserver {text!r}: give an IP address, optionally with :PORT") from None
    return host, number


def default_nameserver() -> tuple[str, int]:
    """The first resolver of /etc/resolv.conf (what Postfix itself would ask)."""
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver()
    except Exception as exc:  # dnspython raises NoResolverConfiguration and friends
        raise UsageError(f"no system resolver ({exc}); give --nameserver HOST[:PORT]") from None
    if not resolver.nameservers:
        raise UsageError("no nameserver in /etc/resolv.conf; give --nameserver HOST[:PORT]")
    return str(resolver.nameservers[0]), int(resolver.port)


def test_points(zone: RblZone) -> list[tuple[str, str, bool]]:
    """(test point, query name, expected listed) for a zone."""
    if not zone.ip_based:
        return [("test", f"test.{zone.domain}", True), ("invalid", f"invalid.{zone.domain}", False)]
    points = [("127.0.0.2", True), ("127.0.0.1", False)]
    points[1:1] = [(p, True) for p in EXTRA_TEST_POINTS.get(zone.domain, ())]
    return [(ip, ".".join(reversed(ip.split("."))) + "." + zone.domain, listed) for ip, listed in points]


def _ask(server: tuple[str, int], probe: Probe, timeout: float) -> Probe:
    """Send one A query; never raises (a failure is recorded in ``probe.error``)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    start = time.monotonic()
    try:
        query = dns.message.make_query(probe.qname, dns.rdatatype.A)
        response = dns.query.udp(query, server[0], port=server[1], timeout=timeout)
        if response.flags & 0x0200:  # TC: retry over TCP as a resolver would
            response = dns.query.tcp(query, server[0], port=server[1], timeout=timeout)
    except dns.exception.Timeout:
        probe.error = "timeout"
    except (OSError, dns.exception.DNSException) as exc:
        probe.error = f"{type(exc).__name__}: {exc}"
    else:
        probe.rcode = dns.rcode.to_text(response.rcode())
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.A:
                probe.answers.extend(sorted(r.address for r in rrset))
    probe.elapsed_ms = (time.monotonic() - start) * 1000
    return probe


def classify(zone: RblZone, probes: list[Probe]) -> tuple[str, str]:
    """(status, reason) from the answers to a zone's test points.

    Refusal outranks everything (the other answers then mean nothing), a zone
    that lists a must-not-be-listed point lists everything, a zone that does
    not list 127.0.0.2/``test`` is dead.
    """
    for p in probes:
        if p.rcode == "REFUSED":
            return "refused", f"{p.qname}: the server answered REFUSED"
        for answer in p.answers:
            if answer in REFUSAL_ANSWERS:
                return "refused", f"{p.point} → {answer} ({REFUSAL_ANSWERS[answer]})"
    for p in probes:
        if not p.expect_listed and p.listed:
            return "lists_everything", f"{p.point} must not be listed but answers {', '.join(p.answers)}"
    for p in probes:
        if p.expect_listed and not p.listed:
            what = p.error or (p.rcode if p.rcode != "NOERROR" else "no A record")
            return "dead", f"test point {p.point} is not listed ({what})"
    first = next(p for p in probes if p.expect_listed)
    reason = f"{first.point} → {', '.join(first.answers)}"
    if zone.filter and not any(zone.counts(a) for a in first.answers):
        reason += f"; none of these pass the reply filter {zone.filter_text}"
    return "alive", reason


def check_zone(zone: RblZone, server: tuple[str, int], timeout: float = 3.0) -> ZoneHealth:
    probes = [_ask(server, Probe(point, qname, listed), timeout) for point, qname, listed in test_points(zone)]
    status, reason = classify(zone, probes)
    return ZoneHealth(zone, status, reason, probes)


def check_zones(
    zones: Iterable[RblZone], server: tuple[str, int] | None = None, timeout: float = 3.0, workers: int = 8
) -> list[ZoneHealth]:
    """Check every zone once (same domain with several filters: asked once each), in order."""
    zone_list = list(zones)
    if not zone_list:
        return []
    target = server or default_nameserver()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(zone_list)))) as pool:
        return list(pool.map(lambda z: check_zone(z, target, timeout), zone_list))
