"""The parse path end to end: envelopes, inputs, hostile bytes, the fast counter."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CORPORA, corpus_dir
from maillens.classify import Classifier
from maillens.cli.main import cli
from maillens.envelope import YearInference, parse_envelope
from maillens.events import KINDS
from maillens.fastscan import scan_stats
from maillens.sources import MAX_LINE, expand_paths, iter_events, read_lines
from maillens.stats import ParseStats

UTC = timezone.utc
REJECT = ("postfix/smtpd[13562]: NOQUEUE: reject: RCPT from static.65.119.83.127.clients.telco-one.example"
          "[127.83.119.65]: 554 5.7.1 Service unavailable; Client host [127.83.119.65] blocked using "
          "dnsbl.dronebl.org; from=<alerts@windblue.test> to=<charles@example.org> proto=ESMTP helo=<[127.83.119.65]>")


@pytest.mark.parametrize("line", [
    f"Nov  9 08:41:22 mx {REJECT}",
    f"Nov 09 08:41:22 mx {REJECT}",
    f"Nov 9 08:41:22 mx {REJECT}",
    f"2026-11-09T08:41:22.000000+00:00 mx {REJECT}",
    f"2026-11-09T08:41:22+0000 mx {REJECT}",
    f"2026-11-09T08:41:22.123456+0000 mx {REJECT}",
    f"\x00\x00\x00Nov  9 08:41:22 mx {REJECT}",
    f"Nov  9 08:41:22 mx postfix/smtpd[13562]: [ID 197553 mail.info] {REJECT.split(': ', 1)[1]}",
    f"<22>1 2026-11-09T08:41:22Z mx postfix/smtpd 13562 - - {REJECT.split(': ', 1)[1]}",
])
def test_every_envelope_gives_the_same_reject(line: str) -> None:
    ev = Classifier(reference_time=datetime(2026, 11, 25, tzinfo=UTC), tz=UTC).classify(line)
    assert ev.kind == "reject"
    assert ev.restriction == "reject_rbl_client" and ev.rbl == "dnsbl.dronebl.org"
    assert ev.client_ip == "127.83.119.65" and ev.sender == "alerts@windblue.test"
    assert ev.program == "postfix/smtpd" and ev.pid == 13562
    assert ev.ts.replace(microsecond=0) == datetime(2026, 11, 9, 8, 41, 22, tzinfo=UTC)


@pytest.mark.parametrize("program", ["postfix/smtpd", "postfix-out/smtpd", "postfix/submission/smtpd",
                                     "postfix/smtp-25/smtpd", "postfix/10025/smtpd"])
def test_program_names(program: str) -> None:
    line = f"Nov  9 08:41:22 mx {program}[1]: connect from a.example[192.0.2.1]"
    ev = Classifier(tz=UTC).classify(line)
    assert (ev.kind, ev.program, ev.client_ip) == ("connect", program, "192.0.2.1")


def test_year_rolls_over_new_year() -> None:
    years = YearInference(reference=datetime(2027, 1, 2, tzinfo=UTC), tz=UTC)
    stamps = [parse_envelope(f"{d} mx postfix/qmgr[1]: x", years).ts for d in
              ("Dec 30 23:59:59", "Dec 31 12:00:00", "Jan  1 00:00:01", "Jan  2 10:00:00")]
    assert [ts.year for ts in stamps] == [2026, 2026, 2027, 2027]
    assert stamps == sorted(stamps)


def test_year_is_never_in_the_future() -> None:
    years = YearInference(reference=datetime(2026, 3, 1, tzinfo=UTC), tz=UTC)
    ts = parse_envelope("Nov  9 08:41:22 mx postfix/qmgr[1]: x", years).ts
    assert ts.year == 2025


def test_a_line_out_of_order_does_not_move_the_year() -> None:
    """A host booting with its clock unset logs ``Jan  1 00:00:12`` among November lines:
    that is no New Year (every later line would be a year ahead, and a one-hour ban a
    year's).  ``Dec 31`` logged a second after ``Jan  1`` is last year's, and the year stays."""
    years = YearInference(reference=datetime(2026, 11, 25, 12, tzinfo=UTC), tz=UTC)
    stamps = [parse_envelope(f"{d} mx postfix/qmgr[1]: x", years).ts for d in
              ("Nov 25 10:00:00", "Jan  1 00:00:12", "Nov 25 10:20:00", "Nov 25 10:21:00")]
    assert [ts.isoformat() for ts in stamps] == ["2026-11-25T10:00:00+00:00", "2026-01-01T00:00:12+00:00",
                                                 "2026-11-25T10:20:00+00:00", "2026-11-25T10:21:00+00:00"]
    years = YearInference(reference=datetime(2027, 3, 2, tzinfo=UTC), tz=UTC)
    stamps = [parse_envelope(f"{d} mx postfix/qmgr[1]: x", years).ts for d in
              ("Jan  1 00:00:05", "Dec 31 23:59:59", "Jan  1 00:00:06")]
    assert [ts.year for ts in stamps] == [2027, 2026, 2027]
    # a file whose time is older than its lines (a skewed clock) still crosses New Year
    years = YearInference(reference=datetime(2026, 12, 30, 12, tzinfo=UTC), tz=UTC)
    stamps = [parse_envelope(f"{d} mx postfix/qmgr[1]: x", years).ts for d in
              ("Dec 30 10:00:00", "Dec 31 23:59:00", "Jan  1 00:00:01", "Jan  2 10:00:00")]
    assert [ts.year for ts in stamps] == [2026, 2026, 2027, 2027]


def test_a_line_out_of_order_on_standard_input_does_not_move_the_year() -> None:
    """Standard input has no file time: now is its reference, so ``zcat ... | maillens bans -``
    dates the lines after an unset-clock line as the file would."""
    now = datetime.now(UTC)
    day = (now - __import__("datetime").timedelta(days=40)).strftime("%b %e")
    lines = (f"{day} 10:00:00", "Jan  1 00:00:12", f"{day} 10:00:05")

    def stamps(reference: datetime | None) -> list[datetime]:
        years = YearInference(reference=reference, tz=UTC)
        return [parse_envelope(f"{d} mx postfix/qmgr[1]: x", years).ts for d in lines]

    piped, written_now = stamps(None), stamps(now)
    assert piped == written_now  # standard input reads as a file written now
    assert piped[0].year == piped[2].year and piped[2] < now  # the odd line moved no later one ahead


def test_tz_naming_a_zone_file_keeps_the_zones_rules(tmp_path: Path) -> None:
    """``TZ=:/etc/localtime`` (set to save stat calls) or a zoneinfo path: the zone by its name,
    summer time included -- not today's fixed offset."""
    zoneinfo = Path("/usr/share/zoneinfo/Europe/Berlin")
    if not zoneinfo.is_file():
        pytest.fail("tzdata is not installed (the Debian package tzdata)")
    link = tmp_path / "localtime"
    link.symlink_to(zoneinfo)
    log = tmp_path / "mail.log"
    log.write_text("Jul  1 10:00:00 mx postfix/qmgr[1]: 4F3A21C0D9: removed\n")
    written = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    os.utime(log, (written, written))
    proc = subprocess.run([sys.executable, "-m", "maillens", "parse", "--json", str(log)], capture_output=True,
                          text=True, env={**os.environ, "TZ": f":{link}", "MAILLENS_CONFIG": "/dev/null"}, check=True)
    assert json.loads(proc.stdout)["ts"] == "2026-07-01T10:00:00+02:00"


def test_an_unset_clock_line_does_not_turn_an_hours_ban_into_a_years(tmp_path: Path) -> None:
    """The same log through ``maillens bans``: the SASL attacker after the odd line is banned
    for the jail's bantime from its failures' real time, as fail2ban would."""
    from click.testing import CliRunner

    from maillens.cli.main import cli

    lines = ["Nov 25 10:00:00 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]",
             "Jan  1 00:00:12 mx postfix/master[100]: daemon started -- version 3.7.11"]
    lines += [f"Nov 25 10:2{i}:00 mx postfix/submission/smtpd[2]: warning: unknown[203.0.113.50]: SASL LOGIN "
              "authentication failed: authentication failure, sasl_username=x@example.org" for i in range(6)]
    log = tmp_path / "mail.log"
    log.write_text("\n".join(lines) + "\n")
    written = datetime(2026, 11, 25, 10, 30, tzinfo=UTC).timestamp()
    os.utime(log, (written, written))
    config = tmp_path / "c.toml"
    config.write_text("[bans]\nloopback = []\nmynetworks = false\nignoreself = false\naccess_client = false\n"
                      "[bans.jails.sasl]\nbantime = 3600\nmaxretry = 5\n")
    db = tmp_path / "store.db"
    outputs = []
    at = ["--at", "2026-11-25T10:30:00"]  # the list as it stood then (not expired by the time the test runs)
    for args in (["ingest", "--db", str(db), str(log)], ["bans", "--format", "json", "--db", str(db), *at],
                 ["bans", "--format", "json", str(log), *at]):
        res = CliRunner().invoke(cli, ["--config", str(config), *args], env={"TZ": "UTC"}, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outputs.append(res.stdout)
    for listed in outputs[1:]:  # from the store (the lines' years set by ingest) and from the file
        (entry,) = [e for e in json.loads(listed) if e["address"] == "203.0.113.50"]
        # the fifth failure (10:24) bans for an hour
        assert (entry["last"], entry["until"]) == ("2026-11-25T10:24:00+00:00", "2026-11-25T11:24:00+00:00")


@pytest.mark.parametrize("zone,offsets", [("Europe/Berlin", ("+02:00", "+01:00")),
                                          ("America/New_York", ("-04:00", "-05:00"))])
def test_traditional_times_follow_the_zones_summer_time(tmp_path: Path, zone: str, offsets: tuple[str, str]) -> None:
    """``Jul  1 10:00:00`` read in November is summer time: the zone's rules, not today's offset
    (what ``fail2ban-regex`` dates it by; a July line was an hour late)."""
    log = tmp_path / "mail.log"
    log.write_text("Jul  1 10:00:00 mx postfix/qmgr[1]: 4F3A21C0D9: removed\n"
                   "Nov 20 10:00:00 mx postfix/qmgr[1]: 4F3A21C0D9: removed\n")
    written = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    os.utime(log, (written, written))
    proc = subprocess.run([sys.executable, "-m", "maillens", "parse", "--json", str(log)], capture_output=True,
                          text=True, env={**os.environ, "TZ": zone, "MAILLENS_CONFIG": "/dev/null"}, check=True)
    stamps = [json.loads(line)["ts"] for line in proc.stdout.splitlines()]
    assert stamps == [f"2026-07-01T10:00:00{offsets[0]}", f"2026-11-20T10:00:00{offsets[1]}"]


@pytest.mark.parametrize("tool", ["gzip", "bzip2", "xz"])
def test_a_cut_short_compressed_file_gives_what_the_real_tool_recovers(tmp_path: Path, tool: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Everything before the break, at least as much as ``gzip -dc`` (``bzip2``, ``xz``) gives, then a warning.
    (The whole file read in one ``GzipFile.read`` lost up to a block before the break; a small
    file that broke before its first block was read as compressed bytes.)"""
    from conftest import require_tool

    exe = require_tool(tool)
    text = (corpus_dir("real-postfix-dev") / "maillog").read_bytes()
    for cut_at in (0.5, None):  # half the compressed file; a small file cut before its first block ends
        source = text if cut_at else text[:200_000]
        packed = subprocess.run([exe, "-c"], input=source, capture_output=True, check=True).stdout
        cut = tmp_path / f"cut.{tool}"
        cut.write_bytes(packed[: int(len(packed) * cut_at)] if cut_at else packed[:15_000])
        recovered = subprocess.run([exe, "-dc", str(cut)], capture_output=True).stdout
        assert len(recovered) < len(source)
        caplog.clear()
        got = [line.text for line in read_lines([str(cut)])]
        want = source.decode("utf-8", "replace").splitlines()
        # the source's lines up to the break (the last one cut where the break is), never the
        # compressed bytes as text (bzip2 gives nothing before its first 900 kB block ends) ...
        assert got == [] or (got[:-1] == want[:len(got) - 1] and want[len(got) - 1].startswith(got[-1]))
        # ... and at least as many as the real tool gives
        assert len(got) >= len(recovered.decode("utf-8", "replace").splitlines())
        assert "compressed data ends early or is damaged" in caplog.text


def test_a_small_archive_that_inflates_hugely_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """200 bytes of bzip2 that inflate to 100 MB (a hostile or broken archive): read piece by
    piece, never whole (one decompress call used to return it all at once)."""
    import tracemalloc

    from maillens.sources import read_chunks

    bomb = tmp_path / "mail.log.2.bz2"
    bomb.write_bytes(bz2.compress(b"A" * (100 << 20)))
    assert bomb.stat().st_size < 1000
    tracemalloc.start()
    try:
        total = sum(len(chunk) for chunk in read_chunks(str(bomb)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 100 << 20 and peak < 16 << 20


def test_gzip_members_one_after_another_are_all_read(tmp_path: Path) -> None:
    """``cat a.gz b.gz`` is one valid gzip file (zero padding between members allowed)."""
    lines = (corpus_dir("real-postfix-dev") / "maillog").read_text().splitlines()[:3000]
    first = gzip.compress(("\n".join(lines[:1000]) + "\n").encode())
    second = gzip.compress(("\n".join(lines[1000:]) + "\n").encode())
    path = tmp_path / "mail.log.2.gz"
    path.write_bytes(first + b"\x00" * 512 + second)
    assert [line.text for line in read_lines([str(path)])] == lines


def test_explain_dash_reads_standard_input() -> None:
    line = "Nov  9 08:41:22 mx postfix/smtpd[1]: connect from a.example[192.0.2.1]"
    for args in (["explain", "-"], ["explain"]):
        result = CliRunner().invoke(cli, args, input=line + "\n")
        assert result.exit_code == 0 and "kind     : connect" in result.output, result.output


def test_rotated_set_is_read_oldest_first(tmp_path: Path) -> None:
    names = {"mail.log": "4", "mail.log.1": "3", "mail.log.2.gz": "2", "mail.log.3.bz2": "1", "mail.log.4.xz": "0"}
    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    for name, text in names.items():
        opener = openers.get(Path(name).suffix, open)
        with opener(tmp_path / name, "wt") as fh:
            fh.write(f"Nov  9 08:41:2{text} mx postfix/qmgr[1]: ABCDEF123{text}: removed\n")
    given_order = [str(tmp_path / n) for n in ("mail.log", "mail.log.2.gz", "mail.log.1", "mail.log.4.xz", "mail.log.3.bz2")]
    texts = [line.text[-len("ABCDEF1230: removed"):] for line in read_lines(given_order)]
    assert texts == [f"ABCDEF123{i}: removed" for i in range(5)]
    assert [f.path for f in expand_paths([str(tmp_path / "mail.log*")])][-1].endswith("mail.log")


def test_stdin_is_read(tmp_path: Path) -> None:
    line = f"Nov  9 08:41:22 mx {REJECT}\n"
    result = subprocess.run([sys.executable, "-m", "maillens", "parse", "--json", "-"], input=line.encode(),
                            capture_output=True, check=True)
    obj = json.loads(result.stdout)
    assert obj["kind"] == "reject" and obj["source"] == "-" and obj["lineno"] == 1


def test_overlong_line_is_cut_not_buffered(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("wb") as fh:
        fh.write(b"Nov  9 08:41:22 mx postfix/smtpd[1]: connect from a[192.0.2.1]\n")
        fh.write(b"Nov  9 08:41:22 mx postfix/smtpd[1]: " + b"A" * (3 * MAX_LINE) + b"\n")
        fh.write(b"Nov  9 08:41:22 mx postfix/smtpd[1]: connect from b[192.0.2.2]\n")
    lines = list(read_lines([str(path)]))
    assert [len(line.text) <= MAX_LINE for line in lines] == [True, True, True]
    assert [line.lineno for line in lines] == [1, 2, 3]
    stats = scan_stats([str(path)], workers=1)
    assert stats.lines == 3 and stats.kinds["connect"] == 2
    from maillens import fastscan

    small = list(fastscan.iter_blocks(str(path), block_size=MAX_LINE // 2))  # the long line spans many blocks
    assert sum(block.count(b"\n") + 1 for block, _ in small) == 3


lines_strategy = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([REJECT.encode(), b"connect from x[1.2.3.4]", b"4jNNYF2l5FzJ9cR: removed"]).flatmap(
            lambda body: st.integers(0, len(body)).map(lambda n: b"Nov  9 08:41:22 mx " + body[:n])),
    ).map(lambda b: b.replace(b"\n", b" ")),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(lines_strategy)
def test_hostile_input_never_raises_and_every_line_is_one_event(tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mail.log"
    path.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
    events = list(iter_events([str(path)]))
    assert len(events) == len(lines)
    assert all(ev.kind in KINDS for ev in events)
    assert [ev.lineno for ev in events] == list(range(1, len(lines) + 1))
    assert scan_stats([str(path)], workers=1).to_dict() == ParseStats().extend(events).to_dict()


@pytest.mark.parametrize("name", CORPORA)
def test_fast_stats_equal_event_stats(name: str) -> None:
    """The parallel counter and the full classifier agree on every count."""
    log = str(corpus_dir(name) / "maillog")
    assert scan_stats([log], workers=2).to_dict() == ParseStats().extend(iter_events([log])).to_dict()


def test_stats_lists_nothing_unexplained_on_the_corpus() -> None:
    result = CliRunner().invoke(cli, ["parse", "--stats", str(corpus_dir("real-postfix-dev") / "maillog")])
    assert result.exit_code == 0, result.output
    assert "Not understood" in result.output
    assert result.output.rstrip().endswith("none")


def test_unknown_kind_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["parse", "--kind", "bogus", "x.log"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["parse", "--stats", str(tmp_path / "nope.log")])
    assert result.exit_code != 0
    assert result.output.count("\n") == 1 and "nope.log" in result.output


@pytest.mark.parametrize("name", CORPORA)
def test_joined_rules_equal_fail2ban_style_matching(name: str) -> None:
    """The fast joined alternation gives the same events as fail2ban's own order:
    prefregex, then each failregex in turn (``Filter.match_line``)."""
    from maillens.classify import RuleSet, default_rules

    slow_rules = RuleSet([c.flt for c in default_rules().filters])
    for compiled in slow_rules.filters:
        compiled.joined = None
    fast = Classifier(tz=UTC, reference_time=datetime(2026, 11, 25, tzinfo=UTC))
    slow = Classifier(slow_rules, tz=UTC, reference_time=datetime(2026, 11, 25, tzinfo=UTC))
    for line in read_lines([str(corpus_dir(name) / "maillog")]):
        a, b = fast.classify(line.text), slow.classify(line.text)
        assert (a.kind, a.queue_id, a.data, a.rule) == (b.kind, b.queue_id, b.data, b.rule), line


def test_parallel_ranges_keep_line_numbers(tmp_path: Path) -> None:
    """Workers reading their own byte ranges report unknown lines at their true line numbers."""
    sample = (corpus_dir("real-postfix-dev") / "maillog").read_text().splitlines()
    lines = []
    for i in range(40_000):
        lines.append(sample[i % len(sample)])
        if i % 9_973 == 0:
            lines.append(f"junk line {i} \x00\xff")
            lines.append(f"Nov  9 08:41:22 mx postfix/smtpd[1]: a message no rule knows {i}")
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(lines) + "\n", errors="surrogateescape")
    parallel = scan_stats([str(path)], workers=2)
    assert parallel.to_dict() == ParseStats().extend(iter_events([str(path)])).to_dict()
    assert parallel.examples, "the junk lines are listed with examples"


def test_planned_fields_equal_fail2ban_order_for_odd_annotations(tmp_path: Path) -> None:
    """A user's rule file may annotate in ways the shipped rules do not: a lone non-kind
    annotation, ``kind=@`` with no group name, a kind taken from a group, another failure-id field.
    The joined path (``_finish_planned``) must still give what fail2ban's order gives."""
    from maillens.classify import RuleSet
    from maillens.filterconf import load_filter

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "odd.conf").write_text(
        "[INCLUDES]\nbefore = maillens-common.conf\n\n[Definition]\n_daemon = oddd\n"
        "failregex = (?#topic=lonely)^odd one <HOST>$\n"
        "            (?#kind=@)^odd two <HOST>$\n"
        "            (?#kind=@action topic=y)^odd three <F-ACTION>\\w+</F-ACTION> <HOST>$\n"
        "            (?#kind=notice fid=msgref)^odd four <F-ID>\\w+</F-ID> <HOST> code=<F-CODE>\\d+</F-CODE>$\n"
        "ignoreregex =\n"
    )
    (rules_dir / "maillens-common.conf").write_text((Path(__file__).resolve().parent.parent / "parsers"
                                                     / "maillens-common.conf").read_text())
    flt = load_filter(str(rules_dir / "odd.conf"))
    fast_rules = RuleSet([flt])
    slow_rules = RuleSet([flt])
    for compiled in slow_rules.filters:
        compiled.joined = None
    assert all(c.joined is not None for c in fast_rules.filters)
    fast, slow = Classifier(fast_rules, tz=UTC), Classifier(slow_rules, tz=UTC)
    for text in ("odd one 192.0.2.1", "odd two 192.0.2.2", "odd three reject 192.0.2.3",
                 "odd four AB12 192.0.2.4 code=99999999999999999999999", "odd four AB12 192.0.2.4 code=550"):
        line = f"Nov  9 08:41:22 mx oddd[1]: {text}"
        a, b = fast.classify(line), slow.classify(line)
        assert (a.kind, a.queue_id, a.data, a.rule) == (b.kind, b.queue_id, b.data, b.rule), text
        assert a.rule is not None, text
