"""The classifier against the real-Postfix corpus: every session, every label.

``log_index.jsonl`` lists, per SMTP session, the line numbers of ``maillog``
that belong to it and the log events the harness found there (labels such as
``reject:RCPT:reject_rbl_client:zen.spamhaus.org``).  These tests derive the
same labels from maillens's events and require exact equality for 100% of
sessions, and compare addresses with ``truth.jsonl`` (what the client sent).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Iterable

import pytest

from conftest import CORPORA, corpus_dir, corpus_events
from maillens.events import RESTRICTIONS

# The harness's label names for a few restrictions, mapped to Postfix's own.
LABEL_RESTRICTION = {
    "check_helo_access regexp": "check_helo_access",
    "check_policy_service (policyd-spf)": "check_policy_service",
    "permit_sasl_authenticated,reject (client)": "reject",
    "reject_unauth_pipelining (client)": "reject_unauth_pipelining",
}


# The harness labels failed commands only for these (rcpt failures are rejects).
CMDFAIL_LABELLED = frozenset({"auth", "data", "mail", "vrfy"})


def normalise_label(label: str) -> str:
    parts = label.split(":")
    if parts[0] == "reject" and len(parts) >= 3:
        parts[2] = LABEL_RESTRICTION.get(parts[2], parts[2])
    return ":".join(parts)


@lru_cache(maxsize=None)
def sessions(name: str) -> tuple[dict, ...]:
    path = corpus_dir(name) / "log_index.jsonl"
    return tuple(json.loads(line) for line in path.read_text().splitlines())


@lru_cache(maxsize=None)
def truth(name: str) -> dict[str, dict]:
    path = corpus_dir(name) / "truth.jsonl"
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out[record["sid"]] = record
    return out


def ndr_queue_ids(events: Iterable) -> set[str]:
    """Queue IDs of non-delivery notices, from maillens's bounce_notice events."""
    return {ev.bounce_queue_id for ev in events if ev.kind == "bounce_notice" and ev.bounce_queue_id}


def labels_from_events(events: list, ndrs: set[str]) -> Counter[str]:
    """The harness's label vocabulary, computed from maillens events."""
    labels: Counter[str] = Counter()
    final: dict[tuple[str, str, str], tuple[str, str]] = {}  # (queue_id, rcpt, orig_rcpt) -> (agent, status)
    agent_of: dict[tuple[str, str, str], str] = {}
    expired: set[str] = set()
    for ev in events:
        k = ev.kind
        if k == "reject":
            label = f"reject:{ev.stage}:{ev.restriction}"
            if ev.rbl:
                label += f":{ev.rbl}"
            if ev.queue_id:
                label += ":with_queue_id"
            labels[label] += 1
        elif k == "reject_warning":
            labels[f"reject_warning:{ev.stage}:{ev.rbl or ev.restriction}"] += 1
        elif k == "spf":
            labels[f"spf:{ev.spf_result}"] += 1
        elif k == "sasl_failure":
            labels[f"sasl_fail:{ev.sasl_method}"] += 1
        elif k == "received" and ev.client_ip is not None:
            labels["queued"] += 1
            if ev.sasl_method:
                labels[f"sasl_ok:{ev.sasl_method}:{ev.sasl_username}"] += 1
        elif k == "lost_connection":
            labels[f"lost_connection:{ev.after}"] += 1
        elif k == "pipelining":
            labels[f"improper_pipelining:{ev.after}"] += 1
        elif k == "too_many_errors":
            labels["too_many_errors"] += 1
        elif k == "warning" and ev.topic in ("non_smtp_command", "queue_file_size_limit"):
            labels[ev.topic] += 1
        elif k == "bounce_notice" and ev.notice_type == "sender non-delivery notification":
            labels["ndr_generated"] += 1
        elif k == "disconnect":
            for command, (ok, total) in (ev.commands or {}).items():
                if command in CMDFAIL_LABELLED and ok < total:
                    labels[f"cmdfail:{command}"] += 1
        elif k == "delivery":
            key = (ev.queue_id, ev.recipient, ev.orig_recipient)
            if ev.daemon not in ("error", "retry"):
                agent_of.setdefault(key, ev.daemon)
            # Postfix's error agent stands in for a transport that is temporarily
            # suspended ("delivery temporarily suspended"); every such destination
            # in these corpora is a remote one, delivered by smtp.
            final[key] = (agent_of.get(key, "smtp" if ev.daemon in ("error", "retry") else ev.daemon), ev.status)
        elif k == "expired":
            expired.add(ev.queue_id)
    for (queue_id, _rcpt, _orig), (agent, status) in final.items():
        if queue_id in ndrs:
            labels["ndr_delivered_locally"] += 1
        elif queue_id in expired and status == "deferred":
            labels[f"delivery:{agent}:expired"] += 1
        else:
            labels[f"delivery:{agent}:{status}"] += 1
    return labels


@pytest.mark.parametrize("name", CORPORA)
def test_every_session_has_exactly_its_labels(name: str) -> None:
    events = corpus_events(name)
    ndrs = ndr_queue_ids(events)
    mismatches = []
    for session in sessions(name):
        evs = [events[n - 1] for n in session["maillog_lines"]]
        got = labels_from_events(evs, ndrs)
        want = Counter({normalise_label(k): v for k, v in session["log_events"].items()})
        if got != want:
            mismatches.append((session["sid"], session["scenario"], dict(want - got), dict(got - want)))
    assert not mismatches, f"{len(mismatches)} of {len(sessions(name))} sessions differ, e.g. {mismatches[:5]}"


@pytest.mark.parametrize("name", CORPORA)
def test_addresses_equal_truth(name: str) -> None:
    """client_ip on every smtpd/policy line of a session is the client's; senders and
    recipients of rejects are what the client sent."""
    events = corpus_events(name)
    records = truth(name)
    problems = []
    checked = 0
    for session in sessions(name):
        record = records[session["sid"]]
        senders = {m["mail_from"] for m in record["messages"]}
        rcpts = {r for m in record["messages"] for r in m["rcpts"]}
        for n in session["maillog_lines"]:
            ev = events[n - 1]
            if ev.daemon in ("smtpd",) or ev.kind == "spf":
                if ev.client_ip is not None:
                    checked += 1
                    if ev.client_ip != record["client_ip"]:
                        problems.append((session["sid"], n, "client_ip", ev.client_ip, record["client_ip"]))
            if ev.kind in ("reject", "reject_warning"):
                if ev.sender is not None and ev.sender not in senders:
                    problems.append((session["sid"], n, "sender", ev.sender, senders))
                if ev.recipient is not None and ev.recipient not in rcpts:
                    problems.append((session["sid"], n, "recipient", ev.recipient, rcpts))
    assert checked > 0
    assert not problems, f"{len(problems)} differences, e.g. {problems[:5]}"


@pytest.mark.parametrize("name", CORPORA)
def test_nothing_unparsed_and_little_unknown(name: str) -> None:
    events = corpus_events(name)
    kinds = Counter(ev.kind for ev in events)
    unknown = sum(1 for ev in events if ev.kind == "reject" and ev.restriction == "unknown")
    assert len(events) == sum(1 for _ in (corpus_dir(name) / "maillog").open("rb"))
    assert kinds["unparsed"] == 0
    assert kinds["other"] / len(events) < 0.001, [ev.raw for ev in events if ev.kind == "other"][:5]
    assert unknown / len(events) < 0.001
    assert all(ev.restriction in RESTRICTIONS for ev in events if ev.kind in ("reject", "reject_warning"))


@pytest.mark.parametrize("name", CORPORA)
def test_reject_counts_equal_summary(name: str) -> None:
    """Per stage and restriction (and RBL zone) the reject lines equal summary.json's count."""
    summary = json.loads((corpus_dir(name) / "summary.json").read_text())
    want: Counter[str] = Counter()
    for key, n in summary["log"]["reject_lines_by_stage_and_restriction"].items():
        qid, stage, restriction = key.split(" ", 2)
        restriction, _, zone = restriction.partition(":")
        restriction = LABEL_RESTRICTION.get(restriction, restriction)
        want[f"{stage} {restriction} {zone}".rstrip()] += n
    got: Counter[str] = Counter()
    for ev in corpus_events(name):
        if ev.kind == "reject":
            got[f"{ev.stage} {ev.restriction} {ev.rbl or ''}".rstrip()] += 1
    assert got == want


@pytest.mark.parametrize("name", CORPORA)
def test_traditional_and_rfc3339_copies_agree(name: str) -> None:
    classic = corpus_events(name, "maillog")
    precise = corpus_events(name, "maillog.rfc3339")
    assert len(classic) == len(precise)
    for a, b in zip(classic, precise):
        assert a.kind == b.kind and a.data == b.data and a.queue_id == b.queue_id, (a.raw, b.raw)
        assert (a.host, a.program, a.pid) == (b.host, b.program, b.pid)
        assert a.ts == b.ts.replace(microsecond=0), (a.raw, b.raw)
