"""A hand-built ``ReportData`` for the render, mail and browser tests.

Its figures are the *inputs* of those tests (they check that what goes in
comes out, escaped); figures from real logs are checked in test_report.py
against the corpus truth and ``maillens summary``.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from maillens.reportdata import Figure, HourRow, ReportData, table

EVIL_HELO = '<script>alert("helo")</script>.evil.example'


def sample_report(**overrides: object) -> ReportData:
    hourly = tuple(
        HourRow(h, received=3 * h, delivered=2 * h, rejected=(40 if h == 8 else h), deferred=h % 3, bounced=h % 2)
        for h in range(24)
    )
    data = dict(
        host="mx.example.org",
        day=date(2026, 11, 9),
        generated_at=datetime(2026, 11, 10, 6, 25, tzinfo=timezone.utc),
        source="store /var/lib/maillens/maillens.db",
        headline=(
            Figure("received", "received", 1198, 1000, 1100.5, anchor="deliveries"),
            Figure("delivered", "delivered", 1599, 1599, 1500.0, anchor="deliveries"),
            Figure("rejected", "rejected", 2979, 3100, None, note="64.0% of connections", anchor="rejects"),
            Figure("deferred", "deferred", 343, None, None, anchor="deferrals"),
            Figure("bounced", "bounced", 61, 70, 65.0, anchor="bounces"),
            Figure("sasl_failures", "SASL failures", 714, 700, 690.0, anchor="sasl"),
            Figure("rejected_clients", "unique rejected clients", 1507, anchor="rejected"),
        ),
        connections=4655,
        hourly=hourly,
        rejects_by_restriction=table(
            [("restriction", "text"), ("rejects", "int"), ("share", "pct")],
            [("reject_unknown_client_hostname", 1053, 0.353), ("reject_rbl_client", 852, 0.286)],
        ),
        rejects_by_stage=table([("stage", "text"), ("rejects", "int")], [("RCPT", 2940), ("MAIL", 15), ("DATA", 24)]),
        rbl_zones=table(
            [("zone", "text"), ("hits", "int"), ("unique IPs", "int"), ("share of rejects", "pct")],
            [("zen.spamhaus.org", 86, 60, 0.0289), ("bl.spamcop.net", 102, 60, 0.0342)],
        ),
        rbl_unused=("dnsbl.sorbs.net",),
        spf_results=table([("result", "text"), ("count", "int")], [("Pass", 948), ("Fail", 558)]),
        spf_fail_domains=table([("domain", "text"), ("fails", "int")], [("spoofed.example", 33)]),
        rejected_clients=table(
            [("client IP", "text"), ("rDNS", "text"), ("rejects", "int"), ("restrictions", "list")],
            [("127.0.0.9", "unknown", 12, ("reject_rbl_client", "check_helo_access"))],
            more=3,
        ),
        rejected_helos=table([("HELO", "text"), ("rejects", "int")], [(EVIL_HELO, 7), ("localhost", 4)]),
        rejected_sender_domains=table([("domain", "text"), ("rejects", "int")], [("nx.example", 9)]),
        senders_by_count=table([("sender", "text"), ("messages", "int"), ("bytes", "bytes")], [("a@example.org", 40, 123456)]),
        recipients_by_count=table([("recipient", "text"), ("messages", "int"), ("bytes", "bytes")], [("b@example.org", 30, 654321)]),
        bounces_by_domain=table(
            [("domain", "text"), ("bounced", "int"), ("DSN", "list"), ("reply", "text")],
            [("bluesaga.test", 5, ("5.1.1",), "550 5.1.1 <x@bluesaga.test>: Recipient address rejected & gone")],
        ),
        deferrals_by_domain=table(
            [("domain", "text"), ("deferred", "int"), ("DSN", "list"), ("reply", "text")],
            [("falconmaple.example", 134, ("4.4.1",), "connect to mx.falconmaple.example: Connection refused")],
        ),
        expired=table([("queue id", "text"), ("sender", "text")], [("4ABCDEF", "c@example.org")]),
        sasl_by_client=table([("client IP", "text"), ("failures", "int")], [("127.121.245.116", 237)]),
        sasl_by_username=table([("username", "text"), ("failures", "int")], [("admin", 100)]),
        problems=table([("level", "text"), ("message", "text"), ("count", "int")], [("warning", "non-SMTP command from x", 24)]),
        bans_note="Ban list: not configured yet (see `maillens bans --help`).",
        suggest_note="Allowlist suggestions from the store up to the end of 2026-11-09: 1 OK and 0 REJECT entries.",
        suggestions=table(
            [("map", "text"), ("entry", "text"), ("action", "text"), ("finding", "text"), ("score", "int"),
             ("takes effect", "text"), ("evidence", "text")],
            [("access.client", "mail.evil.example", "OK", "suggested", 12.5,
              "no: check_client_access must come before reject_unknown_client_hostname",
              f"HELO {EVIL_HELO} in every session\r\nFAKE: evidence line\x1b[31m; FCrDNS ok")],
        ),  # fmt: skip
    )
    data.update(overrides)
    return ReportData(**data)  # type: ignore[arg-type]


# -- a real store from a corpus log --------------------------------------------------------

#: A reject line whose HELO is markup, put into the corpus log's first day.
EVIL_LINE = (
    "Nov  9 23:59:58 mx postfix/smtpd[99999]: NOQUEUE: reject: RCPT from unknown[127.250.0.1]: "
    "450 4.7.25 Client host rejected: cannot find your hostname, [127.250.0.1]; "
    f"from=<x@evil.example> to=<alice@example.org> proto=ESMTP helo=<{EVIL_HELO}>"
)


def corpus_classifier(directory: Path) -> Any:
    """UTC and the corpus's own end as the year reference: no dependence on
    the machine's clock or zone (the corpus ran in UTC)."""
    import json
    from datetime import datetime, timezone

    from maillens.classify import Classifier

    last = datetime.fromisoformat(json.loads((directory / "summary.json").read_text())["last_timestamp"])
    return Classifier(reference_time=last, tz=timezone.utc)


def ingest_corpus(directory: Path, db: Path, *, evil: bool = False, work: Path | None = None) -> Path:
    """Ingest a corpus ``maillog`` into the store ``db`` (optionally with EVIL_LINE)."""
    from maillens.ingest import ingest

    log = directory / "maillog"
    if evil:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        cut = next((i for i, line in enumerate(lines) if line.startswith("Nov 10")), len(lines))
        # enough copies to top the "HELO names of rejected clients" table
        lines[cut:cut] = [EVIL_LINE + "\n"] * 400
        log = (work or db.parent) / "maillog-evil"
        log.write_text("".join(lines), encoding="utf-8")
    ingest([str(log)], db, classify=corpus_classifier(directory).classify)
    return db
