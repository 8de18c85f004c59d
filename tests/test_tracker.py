"""Message records against the corpus truth (summary.json, truth.jsonl, log_index.jsonl)."""

from __future__ import annotations

import json
import re
from collections import Counter as Tally
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import pytest

from maillens.events import Event
from maillens.tracker import Tracker
from tests.conftest import corpus_dir, corpus_events


@lru_cache(maxsize=None)
def records(name: str) -> tuple[dict[str, Any], ...]:
    tracker = Tracker()
    for ev in corpus_events(name):
        tracker.feed(ev)
    out = tracker.drain()
    tracker.close_all()
    return tuple(out + tracker.drain())


def load_jsonl(name: str, file: str) -> list[dict[str, Any]]:
    with (corpus_dir(name) / file).open() as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("name", ["real-postfix-dev", "real-postfix-suggest-dev"])
def test_delivery_outcomes_equal_corpus_truth(name: str) -> None:
    truth = json.loads((corpus_dir(name) / "summary.json").read_text())["log"]["delivery_status_lines"]
    statuses = Tally(d["status"] for m in records(name) for d in m["deliveries"])
    want_sent = sum(n for k, n in truth.items() if k.endswith(" sent"))
    want_deferred = sum(n for k, n in truth.items() if k.endswith(" deferred"))
    want_bounced = sum(n for k, n in truth.items() if k.endswith(" bounced"))
    assert statuses["sent"] == want_sent
    assert statuses["deferred"] == want_deferred
    assert statuses["bounced"] == want_bounced
    assert sum(1 for m in records(name) if m["state"] == "expired") == truth.get("qmgr expired", 0)


def test_bounce_notices_link_to_their_parents() -> None:
    name = "real-postfix-dev"
    recs = records(name)
    by_qid = {m["queue_id"]: m for m in recs}
    truth = load_jsonl(name, "truth.jsonl")
    index = load_jsonl(name, "log_index.jsonl")
    with_ndr = {q for s in truth if "ndr_generated" in s["expected"]["events"] for q in s["queue_ids"]}
    parents = {m["queue_id"] for m in recs if m["bounce_queue_ids"]}
    assert parents == with_ndr
    children = [c for m in recs if m["bounce_queue_ids"] for c in m["bounce_queue_ids"].split(",")]
    assert len(children) == sum(s["log_events"].get("ndr_generated", 0) for s in index)
    for child in children:
        assert by_qid[child]["parent_queue_id"] in parents
        assert by_qid[child]["sender"] == ""  # a notice comes from the null sender
    # every queue ID on a session's lines is its own message or a notice we linked to it
    lines = (corpus_dir(name) / "maillog").read_text().split("\n")
    qid_rx = re.compile(r"^\S+ +\d+ \S+ \S+ postfix/(?:qmgr|local|cleanup)\[\d+\]: ([0-9A-Za-z]{10,}):")
    for s in index:
        if not s["queue_ids"]:
            continue
        seen = {m.group(1) for n in s["maillog_lines"] if (m := qid_rx.match(lines[n - 1]))}
        linked = {c for q in s["queue_ids"] for c in (by_qid[q]["bounce_queue_ids"] or "").split(",") if c}
        assert seen - set(s["queue_ids"]) == linked, s["sid"]


def test_client_and_sasl_user_equal_truth() -> None:
    name = "real-postfix-dev"
    by_qid = {m["queue_id"]: m for m in records(name)}
    checked = 0
    sasl_ok = {
        s["sid"]: k.split(":", 2)[1:] for s in load_jsonl(name, "log_index.jsonl") for k in s["log_events"]
        if k.startswith("sasl_ok:")
    }
    for s in load_jsonl(name, "truth.jsonl"):
        for q in s["queue_ids"]:
            m = by_qid[q]
            assert m["client_ip"] == s["client_ip"], q
            assert m["connect_ts"] is not None
            if s["sid"] in sasl_ok:
                assert [m["sasl_method"], m["sasl_username"]] == sasl_ok[s["sid"]], q
            else:
                assert m["sasl_username"] is None, q
            checked += 1
    assert checked > 1500


def test_message_fields_from_the_log() -> None:
    recs = records("real-postfix-dev")
    queued = [m for m in recs if m["nrcpt"] is not None]
    assert all(m["size"] and m["sender"] is not None and m["message_id"] is not None for m in queued)
    states = Tally(m["state"] for m in recs)
    assert set(states) <= {"removed", "expired", "abandoned", "incomplete"}


def _ev(kind: str, ts: datetime, qid: str | None = None, **data: Any) -> Event:
    return Event(kind=kind, ts=ts, host="mx", program="postfix/qmgr", pid=1, queue_id=qid, data=data)


def test_memory_is_bounded_by_open_messages_and_stale_ones_are_counted() -> None:
    tracker = Tracker(max_age=3600)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    peak = 0
    n = 20_000
    for i in range(n):
        ts = start + timedelta(seconds=60 * i)
        tracker.feed(_ev("queued", ts, f"Q{i:08d}", sender="a@example.org", size=100, nrcpt=1))
        if i % 2:  # half of them finish normally
            tracker.feed(_ev("removed", ts, f"Q{i:08d}"))
        peak = max(peak, len(tracker.open))
        tracker.drain()
    assert peak <= 3600 // 60 // 2 + 3
    assert sum(tracker.incomplete.values()) == n // 2 - len(tracker.open)


def test_state_survives_a_restart_between_lines() -> None:
    """Open records saved and restored mid-stream give the same records as one pass."""
    events = corpus_events("real-postfix-dev")
    one = Tracker()
    for ev in events:
        one.feed(ev)
    cut = len(events) // 2
    a = Tracker()
    for ev in events[:cut]:
        a.feed(ev)
    first = a.drain()
    b = Tracker()
    b.restore(json.loads(json.dumps(a.open_state())))
    for ev in events[cut:]:
        b.feed(ev)
    assert first + b.drain() == one.drain()


@pytest.mark.parametrize("name", ["real-postfix-dev", "real-postfix-suggest-dev"])
def test_counting_state_follows_the_open_messages(name: str) -> None:
    """pflogsumm's per-message state (size, origin) lives as long as the tracker's record, plus
    ``max_age`` for a message closed as abandoned (qmgr may still take it, e.g. released from hold).

    Such messages never get qmgr's "removed" line: without the limit their
    counting state would grow with the log.
    """
    from maillens.counting import Counter

    counter = Counter()
    tracker = Tracker(on_evict=counter.forget)
    abandoned = 0
    for ev in corpus_events(name):
        counter.feed(ev)
        tracker.feed(ev)
        abandoned += sum(m["state"] == "abandoned" for m in tracker.drain())
    assert abandoned > 0  # the corpus has clients that leave before the message is queued
    assert set(counter.open) <= set(tracker.open) | set(tracker.abandoned)
    last = max(ev.ts for ev in corpus_events(name) if ev.ts is not None).timestamp()
    assert all(ts >= last - tracker.max_age for ts in tracker.abandoned.values())  # older ones were let go


def test_spf_helo_reaches_its_session_among_many_open_ones() -> None:
    """A busy server has hundreds of smtpd sessions open at once: policyd-spf's line (which
    names only the client address) still finds its own client's session and message, also
    after the tracker's state went through the store between two runs."""
    from maillens.classify import Classifier

    clf = Classifier(tz=timezone.utc, reference_time=datetime(2026, 11, 10, tzinfo=timezone.utc))
    lines = [f"Nov  9 08:41:{i // 10:02d} mx postfix/smtpd[{1000 + i}]: connect from h{i}.example[192.0.2.{i}]"
             for i in range(1, 200)]
    lines.append("Nov  9 08:41:30 mx postfix/smtpd[1001]: 4jNNYF2l5FzJ9cR: client=h1.example[192.0.2.1]")
    spf = ("Nov  9 08:41:31 mx policyd-spf[9]: : prepend Received-SPF: None (mailfrom) identity=mailfrom; "
           "client-ip=192.0.2.1; helo=mx.h1.example; envelope-from=a@h1.example; receiver=example.org")
    for restart in (False, True):
        tracker = Tracker()
        for line in lines:
            tracker.feed(clf.classify(line))
        if restart:
            state = json.loads(json.dumps(tracker.open_state()))
            tracker = Tracker()
            tracker.restore({kind: dict(sorted(recs.items())) for kind, recs in state.items()})  # as the store
        tracker.feed(clf.classify(spf))
        assert tracker.open["4jNNYF2l5FzJ9cR"]["helo"] == "mx.h1.example", restart
