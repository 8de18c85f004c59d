"""The tail view against corpus truth and against ``maillens parse``.

* ``tail --json`` prints exactly what ``parse --json`` prints for the same lines;
  piped ``tail`` prints exactly the tag and facts of parse's events.
* The tag of every line agrees with the corpus's per-session labels
  (``log_index.jsonl``), the filters select what the truth (or real ``grep``)
  says, and ``--client --trace`` selects exactly a client's session lines.
* Control characters from a log never reach the output.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from maillens.events import Event
from maillens.live import (
    TAG_ORDER,
    Filters,
    LiveState,
    counts_text,
    json_line,
    neutralise,
    offenders_text,
    plain_line,
    rich_line,
    status_bar,
    tag_for,
    trace_style,
)
from tests.conftest import corpus_dir, corpus_events, require_tool

MAILLENS = [sys.executable, "-c", "from maillens.cli.main import cli; cli()"]

#: log_index labels -> the tag each such line must carry; the label families
#: that are per-line exact in this corpus (summary.json's line counts agree).
def truth_tag(label: str) -> str | None:
    parts = label.split(":")
    head = parts[0]
    if head == "reject":
        return "RBL" if len(parts) > 2 and parts[2] == "reject_rbl_client" else "REJECT"
    if head == "reject_warning":
        return "REJ-WARN"
    if head == "spf":
        return "SPF-FAIL" if parts[1] == "fail" else "SPF"
    if head == "sasl_fail":
        return "SASL-FAIL"
    if head == "sasl_ok":
        return "AUTH"
    if head == "delivery":
        return {"sent": "SENT", "bounced": "BOUNCE", "expired": "EXPIRED"}.get(parts[2])
    if head == "ndr_delivered_locally":
        return "SENT"
    if head == "ndr_generated":
        return "NDR"
    if head in ("lost_connection", "improper_pipelining", "too_many_errors"):
        return "CONN-ERR"
    return None


EXACT_TAGS = ("RBL", "REJECT", "REJ-WARN", "SPF-FAIL", "SPF", "SASL-FAIL", "AUTH", "SENT", "BOUNCE", "EXPIRED",
              "NDR", "CONN-ERR", "CONNECT", "DISCONN")


def run(args: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([*MAILLENS, *args], input=stdin, capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def event_from_json(d: dict) -> Event:
    """An Event rebuilt from ``parse --json`` output: the oracle's classification."""
    common = {k: d.get(k) for k in ("host", "program", "pid", "source", "lineno", "queue_id")}
    data = {k: v for k, v in d.items() if k not in common and k not in ("ts", "kind")}
    ts = datetime.fromisoformat(d["ts"]) if d.get("ts") else None
    return Event(d["kind"], ts=ts, data=data, **common)


@pytest.fixture(scope="module")
def maillog() -> Path:
    return corpus_dir("real-postfix-dev") / "maillog"


@pytest.fixture(scope="module")
def log_index() -> list[dict]:
    path = corpus_dir("real-postfix-dev") / "log_index.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads((corpus_dir("real-postfix-dev") / "summary.json").read_text())


@pytest.fixture(scope="module")
def parse_json(maillog: Path) -> list[str]:
    return run(["parse", "--json", str(maillog)]).splitlines()


@pytest.fixture(scope="module")
def tail_plain(maillog: Path) -> list[str]:
    return run(["tail", "-n", "+1", str(maillog)]).splitlines()


@pytest.fixture(scope="module")
def events() -> tuple:
    return corpus_events("real-postfix-dev")


# -- equality with `maillens parse` ------------------------------------------------------------


def test_json_equals_parse_json(maillog: Path, parse_json: list[str]) -> None:
    assert run(["tail", "-n", "+1", "--json", str(maillog)]).splitlines() == parse_json
    assert len(parse_json) == 31207


def test_json_of_the_last_lines_equals_parse_json(maillog: Path, parse_json: list[str]) -> None:
    assert run(["tail", "-n", "777", "--json", str(maillog)]).splitlines() == parse_json[-777:]


def test_piped_output_is_parse_classification(tail_plain: list[str], parse_json: list[str]) -> None:
    expected = [plain_line(event_from_json(json.loads(j))) for j in parse_json]
    assert tail_plain == expected
    assert not any("\x1b" in line for line in tail_plain)


def test_stdin_equals_parse_of_stdin(maillog: Path) -> None:
    data = maillog.read_bytes()
    parsed = run(["parse", "--json", "-"], stdin=data).splitlines()
    assert run(["tail", "--json", "-n", "50", "-"], stdin=data).splitlines() == parsed[-50:]


# -- classification against corpus truth --------------------------------------------------------


def test_every_session_is_tagged_as_its_labels_say(tail_plain: list[str], log_index: list[dict]) -> None:
    tags = {i: line.split()[2] for i, line in enumerate(tail_plain, 1)}
    assert len(tags) == 31207
    deferred_sessions = 0
    for session in log_index:
        seen = Counter(tags[n] for n in session["maillog_lines"])
        want: Counter[str] = Counter({"CONNECT": 1, "DISCONN": 1})
        for label, count in session["log_events"].items():
            tag = truth_tag(label)
            if tag:
                want[tag] += count
        assert {t: seen[t] for t in EXACT_TAGS if seen[t]} == {t: want[t] for t in EXACT_TAGS if want[t]}, \
            session["sid"]
        # deferrals are labelled once per message, not per retry line: DEFER must appear exactly
        # in the sessions whose mail was deferred (and later sent, bounced or expired)
        was_deferred = any(label.startswith(("delivery:smtp:deferred", "delivery:smtp:expired"))
                           for label in session["log_events"])
        if seen["DEFER"]:
            deferred_sessions += 1
        assert bool(seen["DEFER"]) == was_deferred, session["sid"]
    assert deferred_sessions == sum(1 for s in log_index if any(
        label.startswith(("delivery:smtp:deferred", "delivery:smtp:expired")) for label in s["log_events"]))


def test_counts_bar_totals_equal_truth(events: tuple, log_index: list[dict]) -> None:
    state = LiveState(window=timedelta(days=10))
    for ev in events:
        state.add(ev, tag_for(ev))
    want: Counter[str] = Counter()
    for session in log_index:
        want["CONNECT"] += 1
        want["DISCONN"] += 1
        for label, count in session["log_events"].items():
            if tag := truth_tag(label):
                want[tag] += count
    assert {t: state.counts[t] for t in EXACT_TAGS} == {t: want[t] for t in EXACT_TAGS}
    assert state.total == 31207
    bar = counts_text(state)
    for t in EXACT_TAGS:
        assert f"{t} {want[t]}" in bar.split("  ")

    # top offenders over the whole log: per client, the offence labels of its sessions
    offences: Counter[str] = Counter()
    for session in log_index:
        for label, count in session["log_events"].items():
            if label.startswith(("reject:", "sasl_fail:", "lost_connection:", "improper_pipelining:",
                                 "too_many_errors")):
                offences[session["client_ip"]] += count
    top = sorted(offences.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert state.top_offenders(5) == top


def test_offender_window_is_log_time(events: tuple, log_index: list[dict]) -> None:
    """Only the last ten minutes of the log count: the final phase's SASL attackers."""
    state = LiveState()
    for ev in events:
        state.add(ev, tag_for(ev))
    newest = max(ev.ts for ev in events if ev.ts is not None)
    horizon = newest - timedelta(minutes=10)
    lines_ts = {ev.lineno: ev.ts for ev in events}
    offences: Counter[str] = Counter()
    for session in log_index:
        n = sum(c for label, c in session["log_events"].items()
                if label.startswith(("reject:", "sasl_fail:", "lost_connection:", "improper_pipelining:",
                                     "too_many_errors")))
        if n and lines_ts[session["maillog_lines"][0]] >= horizon:
            offences[session["client_ip"]] += n
    top = sorted(offences.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert state.top_offenders(5) == top
    assert offenders_text(state).startswith("top offenders (10 min): " + top[0][0])


def test_status_bar_renders_exactly(events: tuple) -> None:
    from rich.console import Console

    state = LiveState()
    for ev in events[:500]:
        state.add(ev, tag_for(ev))
    console = Console(width=400, force_terminal=True, color_system=None, _environ={}, file=io.StringIO())
    console.print(status_bar(state))
    assert console.file.getvalue() == counts_text(state) + "\n" + offenders_text(state) + "\n"


# -- filters ------------------------------------------------------------------------------------


def shown(events: tuple, **options: object) -> list[Event]:
    flt = Filters.build(**options)  # type: ignore[arg-type]
    return [ev for ev in events if flt.matches(ev, tag_for(ev))]


def test_filters_select_what_the_truth_says(events: tuple, summary: dict, log_index: list[dict]) -> None:
    log = summary["log"]
    assert len(shown(events, only=["rbl"])) == sum(log["rbl_reject_lines_by_zone"].values())
    assert len(shown(events, rbl=["zen.spamhaus.org"])) == log["rbl_reject_lines_by_zone"]["zen.spamhaus.org"]
    assert len(shown(events, restriction=["check_client_access"])) == \
        log["reject_lines_by_stage_and_restriction"]["NOQUEUE RCPT check_client_access"]
    for ip, count in log["sasl_failures_per_ip"].items():
        assert len(shown(events, only=["sasl-fail"], client=[ip])) == count
    rejects = sum(c for s in log_index for label, c in s["log_events"].items() if label.startswith("reject:"))
    assert len(shown(events, only=["reject"])) == rejects
    conn = 2 * len(log_index) + sum(c for s in log_index for label, c in s["log_events"].items()
                                    if truth_tag(label) == "CONN-ERR")
    assert len(shown(events, exclude=["conn"])) == 31207 - conn
    assert len(shown(events, only=["reject", "bounce"], exclude=["rbl"])) == rejects - 852 + 95 + 81 + 176


def test_rbl_filter_takes_whole_zone_names_in_any_case(events: tuple, summary: dict) -> None:
    """``--rbl ZEN.spamhaus.org`` is zen; ``--rbl spamhaus.org`` its parent; ``--rbl en.spamhaus.org``
    is no zone of the log (it used to match zen by the end of the name)."""
    zen = summary["log"]["rbl_reject_lines_by_zone"]["zen.spamhaus.org"]
    spamhaus = sum(n for z, n in summary["log"]["rbl_reject_lines_by_zone"].items() if z.endswith(".spamhaus.org"))
    assert len(shown(events, rbl=["ZEN.spamhaus.org"])) == zen > 0
    assert len(shown(events, rbl=["spamhaus.org"])) == spamhaus
    assert len(shown(events, rbl=["en.spamhaus.org"])) == 0


def test_text_filters_equal_real_grep(events: tuple, maillog: Path) -> None:
    grep = require_tool("grep")

    def grep_count(*patterns: str) -> int:
        data = maillog.read_bytes()
        for p in patterns:
            data = subprocess.run([grep, "-E", p], input=data, capture_output=True).stdout
        return len(data.splitlines())

    assert len(shown(events, grep=r"helo=<\[127\.")) == grep_count(r"helo=<\[127\.")
    assert len(shown(events, only=["reject"], sender=["carol@example.org"])) == \
        grep_count(" reject: ", r"from=<carol@example\.org> ")
    assert len(shown(events, only=["reject"], recipient=["@example.org"])) == \
        grep_count(" reject: ", r"to=<[^>]*@example\.org>")
    assert len(shown(events, only=["sent"], recipient=["alice@example.org"])) == \
        grep_count(r"to=<alice@example\.org>.*status=sent|orig_to=<alice@example\.org>.*status=sent")


def test_client_trace_follows_each_message_to_its_end(events: tuple, log_index: list[dict]) -> None:
    """``--client IP --trace`` shows exactly the client's sessions: smtpd, SPF, every queue line, bounces."""
    by_ip: defaultdict[str, set[int]] = defaultdict(set)
    for session in log_index:
        by_ip[session["client_ip"]].update(session["maillog_lines"])
    by_line = {ev.lineno: ev for ev in events}

    def check(spec: str, want: set[int]) -> None:
        seen = shown(events, client=[spec], trace=True)
        got = {ev.lineno for ev in seen}
        assert got <= want, spec
        # A stream cannot know the future: Postfix logs a bounce's own cleanup line just before
        # the "sender non-delivery notification" that ties it to the message; only those may be missing.
        notices = {ev.bounce_queue_id: ev.lineno for ev in seen if ev.kind == "bounce_notice"}
        for n in want - got:
            ev = by_line[n]
            assert ev.queue_id in notices and n < notices[ev.queue_id], (spec, n, ev.raw)

    for ip in sorted(by_ip)[::25] + ["127.36.189.110", "127.121.245.116"]:
        check(ip, by_ip[ip])
    net = ipaddress.ip_network("127.40.0.0/14")
    check(str(net), set().union(*(lines for ip, lines in by_ip.items() if ipaddress.ip_address(ip) in net)))

    # --only delivery --client IP --trace: the deliveries of that client's mail, though the client=
    # line that names the queue ID is itself hidden
    notice_at = {ev.bounce_queue_id: ev.lineno for ev in events if ev.kind == "bounce_notice"}
    for ip in ("127.0.0.1", "127.36.189.110"):
        got = {ev.lineno for ev in shown(events, only=["delivery"], client=[ip], trace=True)}
        assert got <= by_ip[ip]
        final = [n for n in by_ip[ip] if tag_for(by_line[n]) in ("SENT", "BOUNCE", "EXPIRED")]
        assert len(final) == sum(c for s in log_index if s["client_ip"] == ip
                                 for label, c in s["log_events"].items()
                                 if truth_tag(label) in ("SENT", "BOUNCE", "EXPIRED")) > 0
        for n in final:  # shown, unless it is a bounce's own delivery logged before its notice
            assert n in got or n < notice_at.get(by_line[n].queue_id, 0), (ip, by_line[n].raw)


def test_bad_filter_values_say_what_to_fix() -> None:
    from maillens.errors import UsageError

    for kwargs, flag in (({"only": ["rejekt"]}, "--only"), ({"client": ["1.2.3.999"]}, "--client"),
                         ({"restriction": ["reject_foo"]}, "--restriction"), ({"grep": "("}, "--grep")):
        with pytest.raises(UsageError, match=flag):
            Filters.build(**kwargs)  # type: ignore[arg-type]


# -- terminal safety ----------------------------------------------------------------------------

HOSTILE_HELO = "\x1b]0;owned\x07\x1b[2J\x9b31mred\u202eevil\x00\x7f\rx"


def hostile_line(maillog: Path) -> str:
    """A real reject line from the corpus whose HELO is replaced by escape sequences."""
    for line in maillog.read_text().splitlines():
        if "reject: RCPT" in line and "helo=<" in line:
            return re.sub(r"helo=<[^>]*>", lambda _: f"helo=<{HOSTILE_HELO}>", line)
    raise AssertionError("no reject line with a HELO in the corpus")


def only_sgr(text: str) -> str:
    """What is left after removing rich's own colour codes: must hold no control characters."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_neutralise_covers_every_unsafe_character() -> None:
    unsafe = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))] + list("\u061c\u200e\u200f\u2028\u2029") \
        + [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
    out = neutralise("".join(unsafe))
    assert all(ch.isprintable() and ch.isascii() for ch in out)
    assert neutralise("plain ascii, é, 中文 ok") == "plain ascii, é, 中文 ok"


def test_hostile_helo_is_neutralised_in_every_output(maillog: Path, tmp_path: Path) -> None:
    from rich.console import Console

    line = hostile_line(maillog)
    log = tmp_path / "mail.log"
    log.write_text(line + "\n", encoding="utf-8")
    bad = ("\x1b", "\x07", "\x9b", "\u202e", "\x00", "\x7f", "\r")
    for args in (["tail", str(log)], ["tail", "--raw", str(log)], ["tail", "--json", str(log)]):
        out = run(args)
        assert not any(b in out for b in bad), (args, out)
    plain = run(["tail", "--raw", str(log)])
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b31mred\\u202eevil\\x00\\x7f\\x0dx" in plain
    parsed = json.loads(run(["tail", "--json", str(log)]))
    assert HOSTILE_HELO in parsed["helo"] and parsed == json.loads(run(["parse", "--json", str(log)]))

    from maillens.classify import Classifier

    ev = Classifier().classify(line, source=str(log), lineno=1)
    assert ev.kind == "reject" and HOSTILE_HELO in (ev.helo or "")
    for raw in (False, True):
        console = Console(width=300, force_terminal=True, color_system="truecolor", file=io.StringIO())
        console.print(rich_line(ev, raw=raw, trace=True))
        rendered = only_sgr(console.file.getvalue())
        assert not any(b in rendered for b in bad)
        if raw:
            assert "\\x1b]0;owned" in rendered
    assert not any(b in json_line(ev) for b in bad)


def test_rich_markup_in_a_log_is_text(maillog: Path) -> None:
    from rich.console import Console

    from maillens.classify import Classifier

    line = hostile_line(maillog).replace(HOSTILE_HELO, "[bold red]x[/]")
    ev = Classifier().classify(line)
    console = Console(width=400, force_terminal=True, color_system=None, _environ={}, file=io.StringIO())
    console.print(rich_line(ev, raw=True))
    assert "[bold red]x[/]" in console.file.getvalue()


def test_trace_colours_are_stable_per_queue_id(events: tuple) -> None:
    qids = sorted({ev.queue_id for ev in events if ev.queue_id})
    assert len({trace_style(q) for q in qids}) >= 8
    assert all(trace_style(q) == trace_style(q) for q in qids[:50])
    ev = next(e for e in events if e.queue_id)
    assert ev.queue_id in rich_line(ev, trace=True).plain
    span_styles = {str(s.style) for s in rich_line(ev, trace=True).spans}
    assert trace_style(ev.queue_id) in span_styles


# -- --since over rotated, compressed history ----------------------------------------------------


def test_since_reads_rotated_and_compressed_history(tmp_path: Path, maillog: Path) -> None:
    lines = maillog.read_text().splitlines(keepends=True)
    third = len(lines) // 3
    (tmp_path / "mail.log.2.gz").write_bytes(gzip.compress("".join(lines[:third]).encode()))
    (tmp_path / "mail.log.1").write_text("".join(lines[third:2 * third]))
    (tmp_path / "mail.log").write_text("".join(lines[2 * third:]))
    end = datetime(2026, 11, 10, 7, 27, tzinfo=timezone.utc).timestamp()
    for name, age in (("mail.log.2.gz", 2 * 3600 * 24), ("mail.log.1", 3600 * 12), ("mail.log", 0)):
        os.utime(tmp_path / name, (end - age, end - age))
    everything = [json.loads(j) for j in run(["parse", "--json", str(tmp_path / "mail.log*")]).splitlines()]
    for since in ("2026-11-09T15:30:00+00:00", "2026-11-10T07:20:00+00:00", "2026-11-01T00:00:00+00:00"):
        when = datetime.fromisoformat(since)
        first = next(i for i, d in enumerate(everything) if datetime.fromisoformat(d["ts"]) >= when)
        got = [json.loads(j) for j in run(["tail", "--since", since, "--json", str(tmp_path / "mail.log")]).splitlines()]
        assert got == everything[first:], since


# -- the command's edges: signals, config, usage ------------------------------------------------


@pytest.mark.parametrize("sig,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupt_exits_cleanly_with_its_status(tmp_path: Path, maillog: Path, sig: str, status: int) -> None:
    import signal
    import time

    log = tmp_path / "mail.log"
    log.write_text("".join(maillog.read_text().splitlines(keepends=True)[:5]))
    proc = subprocess.Popen([*MAILLENS, "tail", "-F", "-n", "5", str(log)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    got = [proc.stdout.readline() for _ in range(5)]  # it is running and following
    assert all(b" " in line for line in got)
    time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == status
    assert b"Traceback" not in err


def test_config_and_usage_errors_name_what_to_fix(tmp_path: Path, maillog: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[tail]\nwindow_minutes = \"soon\"\n")
    proc = subprocess.run([*MAILLENS, "--config", str(bad), "tail", str(maillog)], capture_output=True)
    assert proc.returncode == 2 and b"[tail] window_minutes" in proc.stderr
    proc = subprocess.run([*MAILLENS, "tail", "--client", "10.0.0.300", str(maillog)], capture_output=True)
    assert proc.returncode == 2 and b"--client" in proc.stderr
    proc = subprocess.run([*MAILLENS, "tail", str(tmp_path / "missing.log")], capture_output=True)
    assert proc.returncode == 1 and b"-F" in proc.stderr and proc.stderr.count(b"\n") == 1


def test_several_files_and_filters_through_the_command(tmp_path: Path, maillog: Path, parse_json: list[str]) -> None:
    lines = maillog.read_text().splitlines(keepends=True)
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(lines[:3000]))
    b.write_text("".join(lines[3000:6000]))
    out = run(["tail", "-n", "+1", "--only", "rbl", "--source", str(a), str(b)]).splitlines()
    want = [json.loads(j) for j in parse_json[:6000]]
    want = [d for d in want if d["kind"] == "reject" and d.get("restriction") == "reject_rbl_client"]
    assert [line.split()[0] for line in out] == [
        f"{a if d['lineno'] <= 3000 else b}:{d['lineno'] if d['lineno'] <= 3000 else d['lineno'] - 3000}"
        for d in want]
    assert all(line.split()[3] == "RBL" for line in out)


def test_one_clock_for_tail_trace_and_since_whatever_the_logs_zone(tmp_path: Path) -> None:
    """An RFC 3339 log stamped in UTC, read where TZ is New York: tail shows the local
    time (as trace does), and --since that local time starts at that line."""
    src = (corpus_dir("real-postfix-dev") / "maillog.rfc3339").read_text().splitlines()[:200]
    log = tmp_path / "mail.log"
    log.write_text("\n".join(src) + "\n")
    last = datetime.fromisoformat(src[-1].split(" ", 1)[0])
    assert last.utcoffset() == timedelta(0)
    local = last.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert local.hour != last.hour
    env = {"TZ": "America/New_York", "MAILLENS_CONFIG": "/dev/null"}
    shown = run(["tail", "-n", "1", str(log)], env=env)
    assert shown.startswith(local.strftime("%Y-%m-%d %H:%M:%S")), shown
    since = run(["tail", "--since", local.strftime("%Y-%m-%dT%H:%M:%S"), str(log)], env=env)
    assert since.splitlines()[0].startswith(local.strftime("%Y-%m-%d %H:%M:%S")), since
    qid = next(m.group(1) for line in reversed(src) if (m := re.search(r"\]: (\w{12,}): ", line)))
    story = run(["trace", qid, str(log)], env=env)
    stamps = set(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", story))
    times = {datetime.fromisoformat(line.split(" ", 1)[0]) for line in src}
    assert stamps <= {t.astimezone(local.tzinfo).strftime("%Y-%m-%d %H:%M:%S") for t in times}, (stamps, story)
