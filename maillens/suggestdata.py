"""Evidence for allowlist suggestions: one pass over events, aggregated per client and domain.

``maillens.suggest`` decides; this module only remembers what the log showed,
in a form the decisions can be explained from ("retried the same envelope 3
times after 450", "4 local users wrote to example.net").  It keeps per-client
and per-domain aggregates, not events, so a month of log fits in memory; the
only per-event state is the queue-ID → (client, sender) map, dropped when the
message leaves the queue.

Events may come from a log (all kinds) or from the store (no ``connect`` or
``warning`` rows); every figure degrades gracefully when a kind is missing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from maillens.envelope import log_int
from maillens.events import Event

#: Restrictions of smtpd_client_restrictions an access.client OK can bypass.
CLIENT_REPUTATION = frozenset({
    "reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_reverse_client",
    "reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname",
})
#: HELO checks: the client is at fault, so the key is the client (access.client).
HELO_SYNTAX = frozenset({
    "reject_non_fqdn_helo_hostname", "reject_invalid_helo_hostname", "reject_unknown_helo_hostname",
    "reject_rhsbl_helo",
})
#: Sender checks an access.sender OK can bypass (policy = SPF here).
SENDER_CHECKS = frozenset({
    "check_policy_service", "reject_unknown_sender_domain", "reject_rhsbl_sender",
})
#: Rejects that say the client misbehaved, whatever its reputation.
ABUSE_REJECTS = {
    "reject_unlisted_recipient": "unknown recipients",
    "reject_unauth_destination": "relay attempts",
    "reject_unauth_pipelining": "SMTP pipelining abuse",
    "check_helo_access": "HELO rejected by the HELO access map",
    "reject_non_fqdn_sender": "unqualified sender addresses",
    "reject_non_fqdn_recipient": "unqualified recipient addresses",
}

#: Per-client detail kept (recipients, envelopes, times): a dictionary attack of a million
#: addresses must not exhaust memory, and a few hundred already tell the story.
PER_CLIENT_LIMIT = 500

_TAIL_RE = re.compile(r"from=<(?P<sender>[^>]*)>(?: to=<(?P<rcpt>[^>]*)>)?(?: proto=\S+)?(?: helo=<(?P<helo>[^>]*)>)?")


def _keep_latest(times: list[float], ts: float) -> None:
    """Append up to the limit; beyond it keep the newest time in the last slot (max stays exact)."""
    if len(times) < PER_CLIENT_LIMIT:
        times.append(ts)
    elif ts > times[-1]:
        times[-1] = ts


def domain_of(address: str | None) -> str:
    """``User@Example.ORG.`` → ``example.org`` ('' for the null sender or no domain)."""
    if not address or "@" not in address:
        return ""
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def base_address(address: str, delimiters: str) -> str:
    """``bob+tag@example.org`` → ``bob@example.org`` (recipient_delimiter)."""
    local, at, domain = address.lower().rpartition("@")
    if not at:
        return address.lower()
    cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
    return f"{local[:cut] if cut > 0 else local}@{domain}"


def org_domain(name: str) -> str:
    """The organisational part of a name: its last two labels (three under ``co.uk``-like zones).

    No public-suffix list is shipped; the heuristic only has to tell whether a
    host and a sender domain belong together (``smtpout.example.net`` and
    ``example.net``), never to draw a key from it.
    """
    labels = name.lower().rstrip(".").split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def aligned(host: str | None, domain: str) -> bool:
    """True when a host name and a mail domain belong to the same organisation."""
    if not host or not domain or host == "unknown" or "." not in host:
        return False
    return org_domain(host) == org_domain(domain)


@dataclass
class Attempts:
    """Tries of one envelope (sender, recipient) from one client: (time, reply code)."""

    tries: list[tuple[float, int]] = field(default_factory=list)

    def retries_after_tempfail(self, gap: float) -> int:
        """How often it came back at least ``gap`` seconds after a 4xx: MTA queue behaviour."""
        tries = sorted(self.tries)
        return sum(1 for a, b in zip(tries, tries[1:]) if 400 <= a[1] < 500 and b[0] - a[0] >= gap)


@dataclass
class ClientStats:
    """Everything seen from one client address."""

    ip: str
    names: Counter[str] = field(default_factory=Counter)
    other_names: Counter[str] = field(default_factory=Counter)
    helos: Counter[str] = field(default_factory=Counter)
    services: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    first: float | None = None
    last: float | None = None
    fcrdns_warning: str | None = None
    rejects: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (restriction, code, zone)
    reject_times: list[float] = field(default_factory=list)
    warn_zones: set[str] = field(default_factory=set)
    senders: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    rejected_rcpts: Counter[str] = field(default_factory=Counter)
    envelopes: dict[tuple[str, str], Attempts] = field(default_factory=dict)
    unknown_rcpts: set[str] = field(default_factory=set)
    accepted: int = 0
    accepted_rcpts: int = 0
    accepted_domains: Counter[str] = field(default_factory=Counter)
    accepted_times: list[tuple[float, str]] = field(default_factory=list)  # (time, sender)
    spf: Counter[tuple[str, str]] = field(default_factory=Counter)  # (domain, result)
    sasl_failures: int = 0
    pipelining: int = 0
    too_many_errors: int = 0

    def seen(self, ts: float | None) -> None:
        if ts is None:
            return
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    @property
    def name(self) -> str:
        """The name Postfix gave the client most often (``unknown``: not forward-confirmed)."""
        names = self.names or self.other_names
        return names.most_common(1)[0][0] if names else "unknown"

    @property
    def verified(self) -> bool:
        """Forward-confirmed reverse DNS: Postfix logged a name, not ``unknown``."""
        return self.name != "unknown"

    def restriction_counts(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (restriction, _code, _zone), n in self.rejects.items():
            out[restriction] += n
        return out


@dataclass
class DomainStats:
    """Everything seen for one envelope sender domain."""

    domain: str
    clients: set[str] = field(default_factory=set)
    rejected_clients: set[str] = field(default_factory=set)
    rejects: Counter[tuple[str, int]] = field(default_factory=Counter)  # (restriction, code)
    refused_by: dict[str, Counter[str]] = field(default_factory=dict)  # client ip -> restrictions
    accepted: int = 0
    accepted_clients: set[str] = field(default_factory=set)
    spf: Counter[str] = field(default_factory=Counter)
    spf_pass_clients: set[str] = field(default_factory=set)
    spf_fail_clients: set[str] = field(default_factory=set)
    senders: set[str] = field(default_factory=set)
    first: float | None = None
    last: float | None = None


class EvidenceCollector:
    """Feed events in log order; read ``clients``, ``domains`` and the rest afterwards.

    ``our_domains`` are the domains local users send from (mydestination,
    myorigin); without them they are learned from local deliveries.
    """

    def __init__(self, *, recipient_delimiter: str = "+", our_domains: Iterable[str] = ()) -> None:
        self.delimiter = recipient_delimiter
        self.our_domains: set[str] = {d.lower().rstrip(".") for d in our_domains if d}
        self._learn_domains = not self.our_domains
        self.clients: dict[str, ClientStats] = {}
        self.domains: dict[str, DomainStats] = {}
        self.local_users: set[str] = set()
        self.correspondents: dict[str, set[str]] = {}  # remote domain -> senders who wrote to it
        self.all_senders: set[str] = set()
        self.client_names: dict[str, str] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.events = 0
        self._queue: dict[str, list] = {}  # queue id -> [client ip, sender, time, nrcpt]

    # ------------------------------------------------------------------ helpers

    def client(self, ip: str) -> ClientStats:
        stats = self.clients.get(ip)
        if stats is None:
            stats = self.clients[ip] = ClientStats(ip)
        return stats

    def domain(self, name: str) -> DomainStats:
        stats = self.domains.get(name)
        if stats is None:
            stats = self.domains[name] = DomainStats(name)
        return stats

    @staticmethod
    def _ts(ev: Event) -> float | None:
        return ev.ts.timestamp() if isinstance(ev.ts, datetime) else None

    # ------------------------------------------------------------------ feeding

    def feed_all(self, events: Iterable[Event]) -> EvidenceCollector:
        for ev in events:
            self.feed(ev)
        return self

    def feed(self, ev: Event) -> None:
        """Take one event; anything unexpected in it is ignored, never raised."""
        ts = self._ts(ev)
        self.events += 1
        if ts is not None:
            self.first = ts if self.first is None else min(self.first, ts)
            self.last = ts if self.last is None else max(self.last, ts)
        handler = getattr(self, f"_on_{ev.kind}", None)
        if handler is not None:
            try:
                handler(ev, ts)
            except (TypeError, ValueError, AttributeError):
                pass  # hostile or half-parsed input: skip the line, keep going

    def _on_connect(self, ev: Event, ts: float | None) -> None:
        if not ev.client_ip:
            return
        c = self.client(ev.client_ip)
        c.sessions += 1
        c.names[(ev.client_name or "unknown").lower()] += 1
        c.seen(ts)

    def _on_warning(self, ev: Event, ts: float | None) -> None:
        topic = ev.data.get("topic")
        if topic in ("hostname_mismatch", "address_not_listed") and ev.client_ip:
            self.client(ev.client_ip).fcrdns_warning = (ev.client_name or "?").lower()

    def _envelope(self, ev: Event) -> tuple[str | None, str | None, str | None]:
        sender, rcpt, helo = ev.data.get("sender"), ev.data.get("recipient"), ev.data.get("helo")
        if sender is None and ev.reason:
            m = _TAIL_RE.search(ev.reason)  # events from an older classifier keep them in the text
            if m:
                sender, rcpt, helo = m.group("sender"), m.group("rcpt"), m.group("helo")
        return sender, rcpt, helo

    def _on_reject(self, ev: Event, ts: float | None) -> None:
        if not ev.client_ip:
            return
        c = self.client(ev.client_ip)
        c.seen(ts)
        if ev.client_name:
            c.other_names[ev.client_name.lower()] += 1
        sender, rcpt, helo = self._envelope(ev)
        restriction = ev.restriction or "unknown"
        code = log_int(ev.code or 0) or 0
        c.rejects[(restriction, code, ev.rbl or "")] += 1
        c.services[ev.program or ""] += 1
        if ts is not None:
            _keep_latest(c.reject_times, ts)
        if helo:
            c.helos[helo] += 1
        if restriction == "reject_unlisted_recipient" and rcpt:
            if len(c.unknown_rcpts) < PER_CLIENT_LIMIT:
                c.unknown_rcpts.add(rcpt.lower())
        if rcpt:
            if rcpt.lower() in c.rejected_rcpts or len(c.rejected_rcpts) < PER_CLIENT_LIMIT:
                c.rejected_rcpts[rcpt.lower()] += 1
        if sender is not None:
            s = sender.lower()
            if s in c.senders or len(c.senders) < PER_CLIENT_LIMIT:
                c.senders[s] += 1
            self.all_senders.add(s)
            dom = domain_of(s)
            if dom:
                c.domains[dom] += 1
                d = self.domain(dom)
                d.clients.add(c.ip)
                d.rejected_clients.add(c.ip)
                d.rejects[(restriction, code)] += 1
                d.refused_by.setdefault(c.ip, Counter())[restriction] += 1
                d.senders.add(s)
                if ts is not None:
                    d.first = ts if d.first is None else min(d.first, ts)
                    d.last = ts if d.last is None else max(d.last, ts)
            if ts is not None:
                key = (s, (rcpt or "").lower())
                if key in c.envelopes or len(c.envelopes) < PER_CLIENT_LIMIT:
                    tries = c.envelopes.setdefault(key, Attempts()).tries
                    if len(tries) < 100:
                        tries.append((ts, code))

    def _on_reject_warning(self, ev: Event, ts: float | None) -> None:
        if ev.client_ip and ev.rbl:
            self.client(ev.client_ip).warn_zones.add(ev.rbl)

    def _on_spf(self, ev: Event, ts: float | None) -> None:
        ip, sender, result = ev.client_ip, ev.sender, (ev.spf_result or "").lower()
        if not ip or not sender or ev.identity not in (None, "mailfrom"):
            return
        dom = domain_of(sender)
        if not dom:
            return
        self.client(ip).spf[(dom, result)] += 1
        d = self.domain(dom)
        d.spf[result] += 1
        d.clients.add(ip)
        if result == "pass":
            d.spf_pass_clients.add(ip)
        elif result == "fail":
            d.spf_fail_clients.add(ip)

    def _on_received(self, ev: Event, ts: float | None) -> None:
        if ev.queue_id and ev.client_ip:
            self._queue[ev.queue_id] = [ev.client_ip, None, ts, 0]
            if ev.client_name:
                name = ev.client_name.lower()
                self.client_names.setdefault(ev.client_ip, name)
                if ev.client_ip not in ("127.0.0.1", "::1"):
                    self.client(ev.client_ip).other_names[name] += 1

    def _on_queued(self, ev: Event, ts: float | None) -> None:
        entry = self._queue.get(ev.queue_id or "")
        if entry is None:
            self._queue[ev.queue_id or ""] = [None, (ev.sender or "").lower(), ts, log_int(ev.nrcpt or 0) or 0]
            return
        if entry[1] is not None:
            return  # qmgr logs from= again after a restart: count the message once
        entry[1], entry[3] = (ev.sender or "").lower(), log_int(ev.nrcpt or 0) or 0
        ip = entry[0]
        sender = entry[1]
        self.all_senders.add(sender)
        if ip in ("127.0.0.1", "::1"):
            return
        c = self.client(ip)
        c.accepted += 1
        c.accepted_rcpts += entry[3] or 1
        when = entry[2] if entry[2] is not None else ts
        c.seen(when)
        dom = domain_of(sender)
        if len(c.accepted_times) < PER_CLIENT_LIMIT:
            c.accepted_times.append((when or 0.0, sender))
        elif when is not None and when > c.accepted_times[-1][0]:
            c.accepted_times[-1] = (when, sender)
        if dom:
            c.accepted_domains[dom] += 1
            d = self.domain(dom)
            d.accepted += 1
            d.accepted_clients.add(ip)
            d.clients.add(ip)
            d.senders.add(sender)

    def _on_delivery(self, ev: Event, ts: float | None) -> None:
        rcpt = (ev.recipient or "").lower()
        relay = (ev.relay or "").lower()
        if not rcpt:
            return
        if relay in ("local", "virtual") or relay.startswith(("local", "private/", "lmtp")):
            if ev.status == "sent":
                for addr in (rcpt, (ev.orig_recipient or "").lower()):
                    if addr:
                        self.local_users.add(base_address(addr, self.delimiter))
                        if self._learn_domains:
                            self.our_domains.add(domain_of(addr))
            return
        entry = self._queue.get(ev.queue_id or "")
        sender = entry[1] if entry else None
        # A local user's message to a remote domain makes that domain a correspondent, whether or
        # not the remote MX took it this time.  Whose user it was is decided when asked: our
        # domains may still be learned from later local deliveries.
        if sender and domain_of(rcpt):
            self.correspondents.setdefault(domain_of(rcpt), set()).add(base_address(sender, self.delimiter))

    def _on_removed(self, ev: Event, ts: float | None) -> None:
        self._queue.pop(ev.queue_id or "", None)

    def _on_expired(self, ev: Event, ts: float | None) -> None:
        self._queue.pop(ev.queue_id or "", None)

    def _on_sasl_failure(self, ev: Event, ts: float | None) -> None:
        if ev.client_ip:
            self.client(ev.client_ip).sasl_failures += 1

    def _on_pipelining(self, ev: Event, ts: float | None) -> None:
        if ev.client_ip:
            self.client(ev.client_ip).pipelining += 1

    def _on_too_many_errors(self, ev: Event, ts: float | None) -> None:
        if ev.client_ip:
            self.client(ev.client_ip).too_many_errors += 1

    # ------------------------------------------------------------------ derived

    def is_known_recipient(self, address: str) -> bool:
        return base_address(address, self.delimiter) in self.local_users

    def correspondent_users(self, domain: str) -> set[str]:
        """Local users who wrote to ``domain`` (or a subdomain of it)."""
        out: set[str] = set()
        for dom, users in self.correspondents.items():
            if (dom == domain or dom.endswith("." + domain)) and dom not in self.our_domains:
                out |= {u for u in users if domain_of(u) in self.our_domains}
        return out


# --------------------------------------------------------------------------- the store

_STORE_KINDS = ("reject", "reject_warning", "spf", "sasl_failure", "pipelining", "too_many_errors")


def events_from_store(store: object, since_ts: float | None = None) -> Iterable[Event]:
    """The store's rows as the events the collector takes.

    The store keeps rejects, SPF results and protocol troubles as events and
    accepted mail as message records; connects and FCrDNS warnings are not
    kept, so suggestions from the store lack session counts and PTR names.
    """
    from datetime import date as _date, timezone

    def when(ts: float | None) -> datetime | None:
        return datetime.fromtimestamp(ts, timezone.utc) if ts is not None else None

    fields = ("client_ip", "client_name", "stage", "code", "restriction", "rbl", "sender", "recipient",
              "helo", "spf_result", "reason")
    for row in store.events(kinds=_STORE_KINDS, since_ts=since_ts):  # type: ignore[attr-defined]
        data = {k: row.get(k) for k in fields if row.get(k) is not None}
        if row["kind"] == "spf":
            data["identity"] = "mailfrom"
        yield Event(row["kind"], ts=when(row.get("ts")), program=row.get("program"), pid=row.get("pid"),
                    queue_id=row.get("queue_id"), data=data)
    start = _date.fromtimestamp(since_ts) if since_ts is not None else None
    for msg in store.messages(start, None if start is None else _date.max):  # type: ignore[attr-defined]
        qid, ts = msg.get("queue_id") or f"#{msg.get('id')}", when(msg.get("first_ts"))
        if since_ts is not None and (msg.get("first_ts") or 0) < since_ts:
            continue
        yield Event("received", ts=ts, queue_id=qid,
                    data={"client_ip": msg.get("client_ip"), "client_name": msg.get("client_name")})
        yield Event("queued", ts=ts, queue_id=qid, data={"sender": msg.get("sender") or "",
                                                          "nrcpt": msg.get("nrcpt") or 0})
        for d in msg.get("deliveries", []):
            yield Event("delivery", ts=when(d.get("ts")), queue_id=qid,
                        data={k: d.get(k) for k in ("recipient", "orig_recipient", "relay", "status")})
        yield Event("removed", ts=ts, queue_id=qid)
