"""``maillens summary`` against the real pflogsumm (Debian's), run on the same files.

Grand Totals must be equal character for character; the one deliberate
difference on these logs (second Postfix instances, docs/counting.md) is
computed independently from the log text and asserted as such.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import corpus_dir, require_tool

F2B_LOGS = sorted(Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs").glob("postfix*"))
CORPUS_LOGS = [(c, log) for c in ("real-postfix-dev", "real-postfix-suggest-dev") for log in ("maillog", "maillog.rfc3339")]

_GT_KEYS = {
    "received": "received", "delivered": "delivered", "forwarded": "forwarded", "deferred": "deferred",
    "bounced": "bounced", "rejected": "rejected", "reject warnings": "reject_warnings", "held": "held",
    "discarded": "discarded", "bytes received": "bytes_received", "bytes delivered": "bytes_delivered",
    "senders": "senders", "sending hosts/domains": "sending_hosts", "recipients": "recipients",
    "recipient hosts/domains": "recipient_hosts",
}  # fmt: skip


MAILLENS = (sys.executable, "-c", "from maillens.cli.main import cli; cli()")


def run_maillens(*args: str) -> str:
    proc = subprocess.run([*MAILLENS, *args], capture_output=True, text=True,
                          env={"TZ": "UTC", "PATH": "/usr/bin:/bin:/usr/sbin", "MAILLENS_CONFIG": "/dev/null"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_pflogsumm(path: Path) -> str:
    exe = require_tool("pflogsumm")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def grand_totals_block(text: str) -> str:
    start = text.index("\nGrand Totals")
    end = text.index("recipient hosts/domains", start)
    return text[start : end + len("recipient hosts/domains")]


def parse_grand_totals(block: str) -> dict[str, tuple[int, str]]:
    """pflogsumm's numbers with their unit suffix (k/m scale large values)."""
    out: dict[str, tuple[int, str]] = {}
    for line in block.splitlines():
        m = re.match(r"\s*(\d+)([ km])  (.+?)(?: \(\d+%\))?(?:  \((\d+)[ km]? deferrals\))?$", line)
        if m and m.group(3) in _GT_KEYS:
            out[_GT_KEYS[m.group(3)]] = (int(m.group(1)), m.group(2))
            if m.group(4):
                out["deferrals"] = (int(m.group(4)), " ")
    return out


def scaled(value: int) -> tuple[int, str]:
    if value > 536870912:
        return value // 1048576, "m"
    if value > 524288:
        return value // 1024, "k"
    return value, " "


def second_instance_lines(path: Path, what: str) -> int:
    """Lines from a second Postfix instance (postfix-NAME/...) of one kind: pflogsumm skips them."""
    rx = re.compile(r"^\S+\s+\d+ [\d:]+ \S+ postfix-[^/\s]+/\S*?\[\d+\]: \w+: " + what)
    with path.open(encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if rx.match(line))


@pytest.mark.oracle
@pytest.mark.parametrize("corpus,log", CORPUS_LOGS)
def test_grand_totals_equal_pflogsumm_on_corpus(corpus: str, log: str) -> None:
    path = corpus_dir(corpus) / log
    ours = run_maillens("summary", str(path))
    theirs = run_pflogsumm(path)
    assert grand_totals_block(ours) == grand_totals_block(theirs)
    # --json carries the same figures, unscaled
    data = json.loads(run_maillens("summary", "--json", str(path)))["grand_totals"]
    for key, (num, unit) in parse_grand_totals(grand_totals_block(theirs)).items():
        assert scaled(data[key]) == (num, unit), key
    assert set(data) >= {"received", "delivered", "forwarded", "deferred", "deferrals", "bounced", "rejected",
                         "reject_warnings", "held", "discarded", "bytes_received", "bytes_delivered", "senders",
                         "sending_hosts", "recipients", "recipient_hosts", "expired"}


@pytest.mark.oracle
@pytest.mark.parametrize("corpus", ["real-postfix-dev"])
def test_other_sections_equal_pflogsumm(corpus: str) -> None:
    """Per-day, per-hour, domain and detail sections hold the same rows (pflogsumm orders ties randomly)."""
    path = corpus_dir(corpus) / "maillog"
    ours, theirs = run_maillens("summary", str(path)), run_pflogsumm(path)
    start_ours = ours.index("\nPer-Hour Traffic")
    start_theirs = theirs.index("\nPer-Hour Traffic")
    end_ours = ours.index("\nMaster daemon messages")
    end_theirs = theirs.index("\nMaster daemon messages")
    assert sorted(ours[start_ours:end_ours].splitlines()) == sorted(theirs[start_theirs:end_theirs].splitlines())


@pytest.mark.oracle
@pytest.mark.parametrize("path", F2B_LOGS, ids=lambda p: p.name)
def test_grand_totals_on_fail2ban_test_logs(path: Path) -> None:
    theirs = parse_grand_totals(grand_totals_block(run_pflogsumm(path)))
    data = json.loads(run_maillens("summary", "--json", str(path)))["grand_totals"]
    # by design (docs/counting.md, "second instances"): maillens counts postfix-NAME/... lines
    extra = {
        "rejected": second_instance_lines(path, "reject: "),
        "reject_warnings": second_instance_lines(path, "reject_warning: "),
        "received": second_instance_lines(path, "client="),
    }
    for key, (num, unit) in theirs.items():
        assert scaled(data[key] - extra.get(key, 0)) == (num, unit), key


def test_second_instances_and_service_names_are_counted(tmp_path: Path) -> None:
    """The documented differences, shown on lines pflogsumm demonstrably skips."""
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov  9 08:41:21 mx postfix-out/smtpd[11]: NOQUEUE: reject: RCPT from a.example[192.0.2.1]: "
        "554 5.7.1 <x@example.org>: Relay access denied; from=<a@b.example> to=<x@example.org> proto=ESMTP helo=<a>\n"
        "Nov  9 08:41:22 mx postfix/smtp-25/smtpd[12]: 4F00000001: client=b.example[192.0.2.2]\n"
    )
    data = json.loads(run_maillens("summary", "--json", str(log)))["grand_totals"]
    assert (data["rejected"], data["received"]) == (1, 1)
    if require_tool("pflogsumm"):
        theirs = parse_grand_totals(grand_totals_block(run_pflogsumm(log)))
        assert (theirs["rejected"][0], theirs["received"][0]) == (0, 0)


def test_summary_from_store_equals_summary_from_file(tmp_path: Path) -> None:
    path = corpus_dir("real-postfix-dev") / "maillog.rfc3339"  # dates carry their year
    db = tmp_path / "m.db"
    subprocess.run([*MAILLENS, "ingest", "--db", str(db), str(path)], check=True,
                   capture_output=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "MAILLENS_CONFIG": "/dev/null"})
    from_file = json.loads(run_maillens("summary", "--json", str(path)))
    from_store = json.loads(run_maillens("summary", "--json", "--db", str(db)))
    assert from_store == from_file
    one_day_file = json.loads(run_maillens("summary", "--json", "--date", "2026-11-10", str(path)))
    one_day_store = json.loads(run_maillens("summary", "--json", "--date", "2026-11-10", "--db", str(db)))
    assert one_day_store == one_day_file
    assert one_day_store["grand_totals"]["delivered"] < from_file["grand_totals"]["delivered"]


def test_bad_date_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([*MAILLENS, "summary", "--date", "last week",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--date" in proc.stderr


def test_maillens_sections_equal_corpus_truth() -> None:
    """Rejects by restriction and RBL zone, SASL failures per client: summary.json's counts."""
    directory = corpus_dir("real-postfix-dev")
    truth = json.loads((directory / "summary.json").read_text())["log"]
    data = json.loads(run_maillens("summary", "--json", str(directory / "maillog")))
    want: dict[str, int] = {}
    for key, n in truth["reject_lines_by_stage_and_restriction"].items():
        name = key.split(" ")[2].split(":")[0]
        name = "reject" if name == "permit_sasl_authenticated,reject" else name
        want[name] = want.get(name, 0) + n
    got: dict[str, int] = {}
    for row in data["rejects_by_restriction"]:
        got[row["restriction"]] = got.get(row["restriction"], 0) + row["count"]
    assert got == want
    assert data["rbl_zones"] == truth["rbl_reject_lines_by_zone"]
    sasl: dict[str, int] = {}
    for row in data["sasl_failures"]:
        sasl[row["client_ip"]] = sasl.get(row["client_ip"], 0) + row["count"]
    assert sasl == truth["sasl_failures_per_ip"]
    assert data["grand_totals"]["expired"] == truth["delivery_status_lines"]["qmgr expired"]
    assert data["connections"] == truth["other"]["smtpd connections"]
    assert data["bounce_notices"] == truth["other"]["bounce: sender non-delivery notification"]


HELD_THEN_RELEASED = """\
Nov  9 08:41:21 mx postfix/smtpd[13562]: connect from out1.maple85.example[127.36.189.110]
Nov  9 08:41:21 mx postfix/smtpd[13562]: 4jNNYF2l5FzJ9cR: client=out1.maple85.example[127.36.189.110]
Nov  9 08:41:21 mx postfix/cleanup[13584]: 4jNNYF2l5FzJ9cR: hold: header Subject: hi from out1.maple85.example\
[127.36.189.110]; from=<michael@maple85.example> to=<frank@example.org> proto=ESMTP helo=<out1.maple85.example>: held
Nov  9 08:41:21 mx postfix/cleanup[13584]: 4jNNYF2l5FzJ9cR: message-id=<5wbvd2gq@maple85.example>
Nov  9 08:41:21 mx postfix/smtpd[13562]: disconnect from out1.maple85.example[127.36.189.110] ehlo=1 mail=1 rcpt=1 \
data=1 quit=1 commands=5
Nov  9 08:50:00 mx postfix/smtpd[13562]: connect from out2.example[127.36.189.111]
Nov  9 08:50:01 mx postfix/smtpd[13562]: disconnect from out2.example[127.36.189.111] ehlo=1 quit=1 commands=2
Nov  9 09:30:00 mx postfix/postsuper[2000]: 4jNNYF2l5FzJ9cR: released from hold
Nov  9 09:30:01 mx postfix/qmgr[13513]: 4jNNYF2l5FzJ9cR: from=<michael@maple85.example>, size=39289, nrcpt=1 (queue active)
Nov  9 09:30:01 mx postfix/local[13585]: 4jNNYF2l5FzJ9cR: to=<frank@example.org>, relay=local, delay=2000, \
delays=0.09/0.01/0/0, dsn=2.0.0, status=sent (delivered to mailbox)
Nov  9 09:30:01 mx postfix/qmgr[13513]: 4jNNYF2l5FzJ9cR: removed
"""


@pytest.mark.oracle
def test_message_held_then_released_counts_as_pflogsumm_counts_it(tmp_path: Path) -> None:
    """Held by cleanup, the client gone, released from hold 50 minutes later: the tracker has
    closed it as abandoned by then, but its sender and bytes still count when qmgr takes it."""
    log = tmp_path / "held.log"
    log.write_text(HELD_THEN_RELEASED)
    theirs = parse_grand_totals(grand_totals_block(run_pflogsumm(log)))
    assert theirs["bytes_received"] == (39289, " ") and theirs["senders"] == (1, " ")  # the oracle's view
    data = json.loads(run_maillens("summary", "--json", str(log)))["grand_totals"]
    for key, (num, unit) in theirs.items():
        assert scaled(data[key]) == (num, unit), key
