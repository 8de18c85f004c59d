"""``maillens trace``: every message of the log can be found, from the store as from the files.

Oracles: the corpus's ``log_index.jsonl`` (each session's queue IDs and log
lines) and ``truth.jsonl`` (each session's envelope senders and recipients, and
which recipients were refused), and the log's own qmgr lines for the null sender.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from maillens.cli.main import cli
from maillens.ingest import ingest
from maillens.tracker import find_messages
from tests.conftest import corpus_dir


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    corpus = corpus_dir("real-postfix-dev")
    db = tmp_path_factory.mktemp("trace") / "store.db"
    ingest([str(corpus / "maillog")], db)
    index = {row["sid"]: row for row in map(json.loads, (corpus / "log_index.jsonl").read_text().splitlines())}
    truth = {row["sid"]: row for row in map(json.loads, (corpus / "truth.jsonl").read_text().splitlines())}
    lines = (corpus / "maillog").read_text(errors="replace").splitlines()
    return {"db": db, "log": corpus / "maillog", "index": index, "truth": truth, "lines": lines}


def test_every_queue_id_of_the_log_is_found_in_the_store(dev: dict[str, Any]) -> None:
    """Messages still deferred when the log ends are the 'where is my mail' cases: the
    store keeps them in the tracker's open state, and trace must show them too."""
    qids = [q for row in dev["index"].values() for q in row["queue_ids"]]
    assert len(qids) > 1000
    missing = [q for q in qids if not any(m["queue_id"] == q for m in find_messages([], dev["db"], queue_id=q)[0])]
    assert missing == []
    still_open = {m["queue_id"] for q in qids for m in find_messages([], dev["db"], queue_id=q)[0]
                  if m["state"].startswith("still open")}
    removed = {m.group(1) for line in dev["lines"] if (m := re.search(r" postfix/qmgr\[\d+\]: (\w+): removed$", line))}
    assert still_open and not still_open & removed  # open: qmgr never logged their removal


def _refused(dev: dict[str, Any]) -> list[tuple[str, str, str, set[str]]]:
    """(sid, sender, recipient, the session's log lines) of recipients refused before a queue ID existed."""
    out = []
    for sid, row in dev["index"].items():
        if row["queue_ids"]:
            continue
        for msg in dev["truth"][sid]["expected"]["messages"]:
            for rcpt in msg["rcpts"]:
                if rcpt["result"] == "reject" and msg["mail_from"]:
                    out.append((sid, msg["mail_from"], rcpt["rcpt"],
                                {dev["lines"][n - 1] for n in row["maillog_lines"]}))
    return out


def test_noqueue_rejects_are_found_by_sender_and_recipient(dev: dict[str, Any]) -> None:
    """'Why was mail from X (or to Y) refused?': a reject without a queue ID has no
    message, so trace shows the rejects themselves, whatever the address's case."""
    refused = _refused(dev)
    assert len(refused) > 100
    for sid, sender, recipient, session_lines in refused[::25]:
        for query in ({"sender": sender}, {"sender": sender.upper()}, {"recipient": recipient}):
            _, rejects = find_messages([], dev["db"], **query)
            assert session_lines & {r["raw"] for r in rejects}, (sid, query)
    sid, sender, _, session_lines = refused[0]
    store_rejects = find_messages([], dev["db"], sender=sender)[1]
    file_rejects = find_messages([str(dev["log"])], None, sender=sender)[1]
    assert [r["raw"] for r in store_rejects] == [r["raw"] for r in file_rejects]


def test_senders_of_messages_equal_truth_even_when_never_queued(dev: dict[str, Any]) -> None:
    """A message refused at DATA never reaches qmgr's ``from=``: its sender comes from
    the reject line, so ``--sender`` finds it and the story does not show ``from=<>``."""
    named = {m.group(1) for line in dev["lines"] if (m := re.search(r": (\w+): .*\bfrom=<", line))}
    checked = never_queued = 0
    for sid, row in dev["index"].items():
        senders = {m["mail_from"].lower() for m in dev["truth"][sid]["messages"]}
        for qid in row["queue_ids"]:
            (msg,) = [m for m in find_messages([], dev["db"], queue_id=qid)[0] if m["queue_id"] == qid]
            if qid not in named:  # e.g. lost in DATA: no line of the log gives its sender
                assert msg["sender"] is None
                continue
            assert msg["sender"] is not None and msg["sender"].lower() in senders, (sid, qid, msg["sender"])
            checked += 1
            never_queued += msg["size"] is None
    assert checked > 1000 and never_queued > 10


def test_null_sender_is_found(dev: dict[str, Any]) -> None:
    """``--sender '<>'`` lists the messages qmgr logged with ``from=<>`` (bounces, backscatter)."""
    qmgr = re.compile(r" postfix/qmgr\[\d+\]: (\w+): from=<>, size=")
    expected = {m.group(1) for line in dev["lines"] if (m := qmgr.search(line))}
    assert expected
    found = {m["queue_id"] for m in find_messages([], dev["db"], sender="")[0]}
    assert found == expected
    res = CliRunner().invoke(cli, ["trace", "--db", str(dev["db"]), "--sender", "<>", "--json"])
    assert res.exit_code == 0, res.output
    assert {json.loads(line)["queue_id"] for line in res.output.splitlines()} == expected


def test_trace_says_not_found_in_one_line(dev: dict[str, Any], tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["trace", "--db", str(dev["db"]), "--sender", "nobody@nowhere.invalid"])
    assert res.exit_code == 3 and res.output.strip() == "maillens: no message found for nobody@nowhere.invalid"


def test_qmgr_from_is_the_sender_even_after_a_recipient_was_refused(tmp_path: Path) -> None:
    """One recipient refused after the queue file exists: the reject names the sender as the
    client gave it; qmgr's from= is the envelope as queued (after sender_canonical_maps).
    The record keeps qmgr's, so --sender finds the mail by the address it was sent with."""
    log = tmp_path / "mail.log"
    log.write_text("\n".join([
        "Nov  9 08:41:20 mx postfix/smtpd[7]: connect from c.example[192.0.2.5]",
        "Nov  9 08:41:21 mx postfix/smtpd[7]: 4F3A21C0D9: client=c.example[192.0.2.5]",
        "Nov  9 08:41:21 mx postfix/smtpd[7]: 4F3A21C0D9: reject: RCPT from c.example[192.0.2.5]: 550 5.1.1 "
        "<nobody@example.org>: Recipient address rejected: User unknown in local recipient table; "
        "from=<alice@internal.local> to=<nobody@example.org> proto=ESMTP helo=<c.example>",
        "Nov  9 08:41:22 mx postfix/cleanup[8]: 4F3A21C0D9: message-id=<1@c.example>",
        "Nov  9 08:41:22 mx postfix/qmgr[9]: 4F3A21C0D9: from=<alice@ours.example>, size=500, nrcpt=1 (queue active)",
        "Nov  9 08:41:22 mx postfix/local[10]: 4F3A21C0D9: to=<bob@example.org>, relay=local, delay=0.1, "
        "delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)",
        "Nov  9 08:41:22 mx postfix/qmgr[9]: 4F3A21C0D9: removed",
    ]) + "\n")
    found, _ = find_messages([str(log)], None, sender="alice@ours.example")
    assert [(m["queue_id"], m["sender"]) for m in found] == [("4F3A21C0D9", "alice@ours.example")]
    assert find_messages([str(log)], None, sender="alice@internal.local")[0] == []
