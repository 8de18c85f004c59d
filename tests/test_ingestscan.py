"""``IngestScanner`` (ingest's fast per-block path) gives exactly ``BlockWorker``'s results.

``BlockWorker`` is the reference: it classifies every line into an ``Event``
with ``Classifier`` and counts, compacts and stores it.  The scanner takes
shortcuts (time per minute, one reused record); these tests hold the two to
the same block results -- counts, details, per-message calls, tracker tuples,
event rows and the year state at the end -- on both corpora in both time
stamp forms, on fail2ban's own postfix logs, on dates the year inference
clamps or rolls over, and on random lines.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maillens.classify import Classifier
from maillens.ingestscan import IngestScanner
from maillens.ingestwork import BlockWorker, YearSeeds
from tests.conftest import corpus_dir

FAIL2BAN_LOGS = Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs")
REFERENCE = datetime(2026, 11, 12, tzinfo=timezone.utc)


def _reference_worker() -> BlockWorker:
    clf = Classifier(tz=timezone.utc)
    return BlockWorker(clf.classify, clf.years)


def _scanner() -> IngestScanner:
    scanner = IngestScanner()
    scanner.years.tz = timezone.utc  # type: ignore[union-attr]
    return scanner


def _blocks(data: bytes, size: int) -> list[bytes]:
    """Whole-line blocks of about ``size`` bytes."""
    out, start = [], 0
    while start < len(data):
        cut = data.find(b"\n", start + size)
        end = len(data) if cut < 0 else cut + 1
        out.append(data[start:end])
        start = end
    return out


def assert_same_results(data: bytes, block_size: int = 1 << 16) -> None:
    """Both workers, block by block from the predicted year seeds, give equal results."""
    reference, scanner = _reference_worker(), _scanner()
    seeds = YearSeeds(REFERENCE)
    seeds.years.tz = timezone.utc
    lineno = 1
    for block in _blocks(data, block_size):
        seed = seeds.next(block)
        expected = reference.run(block, "log", lineno, seed)
        got = scanner.run(block, "log", lineno, seed)
        for name, a, b in zip(("lines", "counts", "deferred", "addr", "details", "ops", "rows", "years"),
                              expected, got):
            assert a == b, f"{name} differ in the block from line {lineno}"
        lineno += expected[0]


@pytest.mark.parametrize("corpus", ["real-postfix-dev", "real-postfix-suggest-dev"])
@pytest.mark.parametrize("log", ["maillog", "maillog.rfc3339"])
def test_scanner_equals_block_worker_on_the_corpora(corpus: str, log: str) -> None:
    assert_same_results((corpus_dir(corpus) / log).read_bytes())


def test_scanner_equals_block_worker_on_fail2ban_postfix_logs() -> None:
    logs = sorted(FAIL2BAN_LOGS.glob("postfix*")) if FAIL2BAN_LOGS.is_dir() else []
    if not logs:
        from tests.conftest import require_tool

        require_tool("fail2ban-regex", reason="fail2ban's own postfix test logs")
    assert logs, f"fail2ban is installed but {FAIL2BAN_LOGS} holds no postfix logs"
    for path in logs:
        assert_same_results(path.read_bytes(), block_size=4096)


def test_year_roll_over_clamped_dates_and_odd_envelopes() -> None:
    """The lines the per-minute shortcut must not take, or must take exactly."""
    lines = [
        "Dec 31 23:59:58 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]",
        "Dec 31 23:59:59 mx postfix/smtpd[1]: disconnect from a.example[192.0.2.1] ehlo=1 quit=1 commands=2",
        "Jan  1 00:00:01 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]",
        "Jan  1 00:00:02 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]",
        "Feb 29 10:00:00 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Feb 30 10:00:05 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Feb 30 10:00:06 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Nov  0 10:00:07 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Nov 31 24:61:60 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Nov 30 10:00:60 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Nov 30 10:00:59.123456 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Nov 30 10:00:59 mx postfix/qmgr[2]: 4F3A21C0D9: removed\r",
        "\x00\x00Nov 30 10:01:00 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Nov 30 10:01:01 mx postfix/qmgr: 4F3A21C0D9: removed",
        "Nov 30 10:01:02 mx postfix/qmgr[x]: 4F3A21C0D9: removed",
        "Nov 30 10:01:03 mx someprogram[9]: 4F3A21C0D9: hello",
        "Nov 30 10:01:04 mx postfix/smtpd[3]:",
        "2026-11-30T10:01:05.123+00:00 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Jun 30 10:01:05 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Dec 30 10:01:05 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "Jul  1 10:01:06 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
        "not a log line at all",
        "Jul  1 10:01:06 mx postfix/qmgr[2]: 4F3A21C0D9: removed",
    ]
    data = "\n".join(lines).encode() + b"\n"
    for size in (1, 200, 1 << 16):
        assert_same_results(data, block_size=size)


_FRAGMENTS = st.sampled_from([
    "Nov  9 08:41:19 ", "Nov  9 08:41:20 ", "Nov  9 08:42:00 ", "Dec 31 23:59:59 ", "Jan  1 00:00:00 ",
    "Feb 29 12:00:00 ", "2026-11-09T08:41:19+00:00 ", "mx ", "postfix/smtpd[123]: ", "postfix/qmgr[7]: ",
    "postfix/submission/smtpd[5]: ", "policyd-spf[9]: ", "postfix/smtp[4]: ", "postfix/cleanup[8]: ",
    "connect from a.example[192.0.2.1]", "NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 ",
    "Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org; ",
    "from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x>", "4F3A21C0D9: ", "removed",
    "from=<a@b.example>, size=123, nrcpt=1 (queue active)", "client=a.example[192.0.2.1]",
    "to=<c@d.example>, relay=local, delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (delivered)",
    "message-id=<x@y>", "warning: ", "\r", "\x00", "é", ":", "[", "]", " ", "\t",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_FRAGMENTS, max_size=8).map("".join), max_size=30))
def test_scanner_equals_block_worker_on_random_lines(lines: list[str]) -> None:
    data = "\n".join(lines).encode("utf-8", "replace")
    assert_same_results(data, block_size=64)
