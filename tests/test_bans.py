"""Jails: fail2ban's counting worked by hand, the never-ban lists, the corpus truth.

The hand-worked cases follow fail2ban 1.0.2's code (FailTicket.adjustTime,
FailManager.addFailure/cleanup, BanManager.addBanTicket, ObserverThread.
failureFound/incrBanTime); each comment shows the arithmetic.  Whole-corpus
agreement with fail2ban itself is in ``test_bans_fail2ban.py``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import corpus_dir, corpus_events
from maillens.banconfig import KIND_NEEDLES, RESTRICTION_NEEDLES, BanSettings
from maillens.banmodel import BanHistory, BanRecord, Increment, JailParams, JailState, parse_duration
from maillens.bans import BanEngine
from maillens.errors import ConfigError
from maillens.neverban import NeverBan
from maillens.postconf import load_postfix_config

X = "192.0.2.7"


def run(params: JailParams, events: list[tuple[float, str | None]], history: BanHistory | None = None) -> tuple[JailState, list[BanRecord]]:
    """Feed (time, address-or-None) lines, numbered from 1, to one jail."""
    state = JailState(params, history or BanHistory())
    bans: list[BanRecord] = []
    state.on_ban = bans.append
    for n, (t, ip) in enumerate(events, 1):
        state.process(float(t), ip, f"line {n}", line_no=n)
    return state, bans


# --------------------------------------------------------------------------- counting by hand


def test_rate_scaled_ticket_bans_where_a_window_would_not() -> None:
    # maxretry 4, findtime 60; failures at 0, 30, 59, 61.
    # t=61: first(0) < 61-60 -> retry = round(3 / 61 * 60) = round(2.95) = 3, first = 1; +1 -> 4: ban.
    # A sliding window [1, 61] holds only 3 failures.
    p = JailParams("j", maxretry=4, findtime=60, bantime=600)
    times = [0, 30, 59, 61]
    _, bans = run(p, [(t, X) for t in times])
    assert [(b.time, b.failures, b.ban_count) for b in bans] == [(61, 4, 1)]
    assert sum(1 for t in times if 61 - 60 <= t <= 61) == 3


def test_python_rounding_half_to_even() -> None:
    # maxretry 3, findtime 60; failures at 0, 120, 121, 122.
    # t=120: round(1 / 120 * 60) = round(0.5) = 0 (half to even), +1 -> 1
    # t=121: round(1 / 61 * 60) = round(0.98) = 1, +1 -> 2
    # t=122: round(2 / 61 * 60) = round(1.97) = 2, +1 -> 3: ban at 122, not at 121 as half-up would.
    p = JailParams("j", maxretry=3, findtime=60, bantime=600)
    _, bans = run(p, [(0, X), (120, X), (121, X), (122, X)])
    assert [b.time for b in bans] == [122]


def test_old_failure_rounds_away() -> None:
    # maxretry 3, findtime 600; failures at 0, 2000, 2001, 2002.
    # t=2000: round(1 / 2000 * 600) = round(0.3) = 0, +1 -> 1;  t=2001: round(1/601*600) = 1, +1 -> 2
    # t=2002: round(2 / 602 * 600) = round(1.99) = 2, +1 -> 3: ban.
    p = JailParams("j", maxretry=3, findtime=600, bantime=600)
    state, bans = run(p, [(0, X), (2000, X), (2001, X)])
    assert bans == [] and state.fail_list[X].retry == 2
    _, bans = run(p, [(0, X), (2000, X), (2001, X), (2002, X)])
    assert [b.time for b in bans] == [2002]


def test_service_task_drops_idle_tickets_every_100th_line() -> None:
    # maxretry 3, findtime 60.  Line 1: X at 0; lines 2-99: other lines; line 100 at t=61: the
    # service task runs cleanup(61) and drops X's ticket (time 0 <= 61 - 60).  X at 62 and 63
    # then count 1, 2: no ban.  Without the service run (same failures, no filler lines):
    # t=62: round(1/62*60) = 1, +1 -> 2; t=63: round(2/61*60) = 2, +1 -> 3: ban at 63.
    p = JailParams("j", maxretry=3, findtime=60, bantime=600)
    filler: list[tuple[float, str | None]] = [(30, None)] * 98
    state, bans = run(p, [(0, X), *filler, (61, None), (62, X), (63, X)])
    assert bans == [] and state.fail_list[X].retry == 2
    _, bans = run(p, [(0, X), (62, X), (63, X)])
    assert [b.time for b in bans] == [63]


def test_increment_formula_counts_known_bad_addresses_double() -> None:
    # bantime 100, maxretry 2, findtime 1000, increment (factor 1, formula bantime * 2**count).
    # 0, 1: ban #1, 100 s (no history yet), until 101.
    # 200: unbanned (200 > 101).  One failure: the filter counts 1, the observer adds
    #      (1 << 1) / 2 + 1 - 1 = 1 more (ban count 1 in history) -> 2: ban #2,
    #      bantime max(100, 100 * 2**1) = 200, until 400; 'failures' counts the attempt twice.
    # 500: observer adds min((1 << 2) / 2 + 1, maxretry) - 1 = 1 -> ban #3, 100 * 2**2 = 400.
    p = JailParams("j", maxretry=2, findtime=1000, bantime=100, increment=Increment(enabled=True))
    state, bans = run(p, [(0, X), (1, X), (200, X), (500, X)])
    assert [(b.time, b.ban_count, b.ban_time, b.until, b.failures) for b in bans] == [
        (1, 1, 100, 101, 2), (200, 2, 200, 400, 2), (500, 3, 400, 900, 2)]  # fmt: skip
    assert state.history.rows[(X, "j")] == (3, 500, 400)
    # maxtime caps it
    p2 = JailParams("j", maxretry=2, findtime=1000, bantime=100, increment=Increment(enabled=True, maxtime=300))
    _, bans = run(p2, [(0, X), (1, X), (200, X), (500, X)])
    assert [b.ban_time for b in bans] == [100, 200, 300]


def test_increment_multipliers() -> None:
    # multipliers 1 5 30: bantime * factor * multipliers[count] (the last one once count runs past).
    p = JailParams("j", maxretry=2, findtime=1000, bantime=100,
                   increment=Increment(enabled=True, multipliers=(1, 5, 30)))  # fmt: skip
    _, bans = run(p, [(0, X), (1, X), (200, X), (800, X), (4000, X)])
    assert [(b.time, b.ban_count, b.ban_time) for b in bans] == [(1, 1, 100), (200, 2, 500), (800, 3, 3000), (4000, 4, 3000)]


def test_repeat_while_banned_prolongs_without_a_new_ban() -> None:
    # bantime 100: ban at 1 until 101.  A new ticket reaches maxretry at 51 while banned:
    # BanManager extends the ban to 51 + 100 = 151 (bantime 100 + 50) and counts no new ban.
    p = JailParams("j", maxretry=2, findtime=1000, bantime=100)
    state, bans = run(p, [(0, X), (1, X), (50, X), (51, X)])
    assert len(bans) == 1 and state.ban_total == 1
    assert state.ban_list[X].end_of_ban(100) == 151
    state.check_unban(151)
    assert X in state.ban_list
    state.check_unban(152)
    assert X not in state.ban_list


def test_permanent_bans() -> None:
    p = JailParams("j", maxretry=1, findtime=60, bantime=-1)
    state, bans = run(p, [(5, X)])
    assert bans[0].until is None and bans[0].ban_time == -1
    state.check_unban(10**12)
    assert X in state.ban_list


def test_overalljails_counts_bans_of_every_jail() -> None:
    # X banned by jail a at 0; then by jail b at 10.  With overalljails, b's increment sees
    # a's ban (sum of ban counts 1): ban count 2, bantime max(100, 100 * 2**1) = 200.
    hist = BanHistory()
    inc = Increment(enabled=True, overalljails=True)
    a = JailState(JailParams("a", maxretry=1, findtime=60, bantime=100, increment=inc), hist)
    b = JailState(JailParams("b", maxretry=1, findtime=60, bantime=100, increment=inc), hist)
    a.process(0.0, X, "a")
    [ticket] = b.process(10.0, X, "b")
    assert (ticket.ban_count, ticket.ban_time) == (2, 200)
    hist2 = BanHistory()
    plain = Increment(enabled=True)
    JailState(JailParams("a", maxretry=1, findtime=60, bantime=100, increment=plain), hist2).process(0.0, X, "a")
    [t2] = JailState(JailParams("b", maxretry=1, findtime=60, bantime=100, increment=plain), hist2).process(10.0, X, "b")
    assert (t2.ban_count, t2.get_ban_time(100)) == (1, 100)


def test_state_round_trips_through_json() -> None:
    p = JailParams("j", maxretry=3, findtime=600, bantime=100, increment=Increment(enabled=True))
    state, _ = run(p, [(0, X), (1, X), (2, X), (3, "192.0.2.8")])
    copy = JailState(p, state.history)
    copy.load_dict(json.loads(json.dumps(state.to_dict())))
    for s in (state, copy):
        s.process(50.0, "192.0.2.8", "x", line_no=5)
    assert copy.to_dict() == state.to_dict()


@pytest.mark.parametrize("text,seconds", [
    ("600", 600), (600, 600), ("10m", 600), ("1h30m", 5400), ("1d12h", 129600), ("2w", 1209600),
    ("1h 30m", 5400), (-1, -1), ("-1", -1), ("90s", 90),
])  # fmt: skip
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10x", "ten minutes", True, None])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("section,message", [
    ({"bogus": 1}, "[bans] has no setting 'bogus'"),
    ({"jails": {"x": {"maxretry": 0, "match": [{"kind": "reject"}]}}}, "[bans.jails.x] maxretry must be"),
    ({"jails": {"x": {"match": [{"kind": "reject"}], "filter": "postfix"}}}, "needs its evidence: either"),
    ({"jails": {"x": {"maxretry": 3}}}, "needs its evidence"),
    ({"jails": {"sasl": {"bantime": 0}}}, "bantime must be positive, or -1"),
    ({"jails": {"sasl": {"findtime": "soon"}}}, "findtime: cannot read 'soon'"),
    ({"jails": {"sasl": {"increment": {"factr": 2}}}}, "increment has no setting 'factr'"),
    ({"jails": {"x": {"match": [{"reason": "~("}]}}}, "bad regular expression"),
    ({"ignoreip": ["not-an-ip"]}, "[bans] ignoreip: 'not-an-ip' is not an IP address"),
    ({"aggregate": {"ipv4_prefix": 40}}, "ipv4_prefix must be a whole number from 8 to 32"),
    ({"jails": {"x": {"filter": "no-such-filter-anywhere"}}}, "no-such-filter-anywhere"),
])  # fmt: skip
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        BanSettings.from_section(section)
    assert message in str(err.value)


def test_config_defaults_overrides_and_fail2ban_keys() -> None:
    cfg = BanSettings.from_section({
        "jails": {
            "sasl": {"maxretry": 3},
            "rbl": {"enabled": False},
            "mine": {"filter": "/etc/fail2ban/filter.d/postfix.conf[mode=auth]", "bantime": "2h",
                     "bantime.increment": True, "bantime.multipliers": "1 2 4", "bantime.maxtime": "1d"},
        }
    })  # fmt: skip
    jails = {j.name: j for j in cfg.jails}
    assert "rbl" not in jails and {"sasl", "dictionary", "mine"} <= set(jails)
    assert jails["sasl"].params.maxretry == 3 and jails["sasl"].params.findtime == 3600  # rest kept
    mine = jails["mine"].params
    assert (mine.bantime, mine.increment.enabled, mine.increment.multipliers, mine.increment.maxtime) == (
        7200, True, (1.0, 2.0, 4.0), 86400)
    assert BanSettings.from_section({"default_jails": False}).jails == ()


# --------------------------------------------------------------------------- never ban

SASL_LINE = "Nov  9 08:41:{s:02d} mx postfix/submission/smtpd[13611]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure, sasl_username=x@example.org"


def _engine(section: dict[str, Any], postfix_dir: Path | None, own: list[str] | None = None) -> BanEngine:
    cfg = BanSettings.from_section(section)
    pc = load_postfix_config(postfix_dir) if postfix_dir else None
    return BanEngine(cfg, NeverBan.from_settings(cfg, pc, own=own if own is not None else []))


def _feed_text(engine: BanEngine, lines: list[str], tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n")
    engine.feed_paths([str(path)])


def test_never_ban_lists_refuse_with_reasons(dev_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = _engine(
        {"loopback": ["::1/128"], "ignoreip": ["198.51.100.0/24"],
         "jails": {"sasl": {"maxretry": 2, "increment": False}}},
        dev_corpus / "config", own=["203.0.113.1"],
    )  # fmt: skip
    ips = ["127.0.0.1", "::1", "198.51.100.20", "203.0.113.1", "2001:db8::7", "192.0.2.44"]
    lines = [SASL_LINE.format(s=s, ip=ip) for s in (1, 2) for ip in ips]
    with caplog.at_level(logging.INFO, logger="maillens.bans"):  # refusals are logged at INFO (-v)
        _feed_text(engine, lines, tmp_path)
    banned = {e.address for e in engine.entries()}
    assert banned == {"2001:db8::7", "192.0.2.44"}  # IPv6 too
    reasons = {ip: r.reason for (ip, _jail), r in engine.refused.items()}
    assert reasons["127.0.0.1"].startswith("mynetworks 127.0.0.1/32 in ")  # from the corpus's main.cf
    assert reasons["::1"] == "loopback (::1/128)"
    assert reasons["198.51.100.20"] == "ignoreip 198.51.100.0/24 in [bans]"
    assert reasons["203.0.113.1"] == "one of this server's addresses (203.0.113.1)"
    assert "refused to ban 127.0.0.1 (jail sasl, 2 failures): mynetworks 127.0.0.1/32" in caplog.text


def test_access_client_ok_is_never_banned(suggest_corpus: Path) -> None:
    """The suggest corpus has a client allowed by name in access.client that makes dictionary-style errors."""
    engine = _engine({"loopback": []}, suggest_corpus / "config")
    engine.feed_paths([str(suggest_corpus / "maillog")])
    table = (suggest_corpus / "config" / "access.client").read_text().splitlines()
    ok_refusals = [r for r in engine.refused.values() if "access.client line" in r.reason]
    assert ok_refusals, "expected a refusal by an access.client OK entry"
    for r in ok_refusals:
        lineno = int(r.reason.split("access.client line ")[1].split()[0])
        key, value = table[lineno - 1].split(None, 1)
        assert value.strip() == "OK" and f"({key} OK)" in r.reason
        assert r.ip not in {e.address for e in engine.entries()}


def test_aggregation_and_its_refusal() -> None:
    nb = NeverBan([(__import__("ipaddress").ip_network("192.0.2.200/32"), "ignoreip 192.0.2.200/32 in [bans]")])
    cfg = BanSettings.from_section({"default_jails": False, "loopback": [], "aggregate": {"enabled": True, "min_addresses": 3},
                                    "jails": {"x": {"match": [{"kind": "sasl_failure"}], "maxretry": 1, "bantime": 100}}})  # fmt: skip
    engine = BanEngine(cfg, nb)
    ips = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "192.0.2.1", "192.0.2.2", "192.0.2.3",
           "2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1::3", "2001:db8:0:2::1"]  # fmt: skip
    state = engine.jails[0].state
    for i, ip in enumerate(ips):
        state.process(float(i), ip, f"line {ip}")
    got = {e.address: e for e in engine.entries(at=10)}
    assert set(got) == {"198.51.100.0/24", "192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8:0:1::/64", "2001:db8:0:2::1"}
    assert got["198.51.100.0/24"].members == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    assert got["198.51.100.0/24"].until == 102 and got["198.51.100.0/24"].failures == 3


# --------------------------------------------------------------------------- the corpus truth

PROTECTED_PREFIXES = ("legit_", "out_")
PROTECTED = {"sasl_success", "sasl_fail_then_ok", "access_client_ok", "sender_access_ok"}


def _protected(scenario: str) -> bool:
    return scenario.startswith(PROTECTED_PREFIXES) or scenario in PROTECTED


@pytest.mark.parametrize("corpus", ["real-postfix-dev", "real-postfix-suggest-dev"])
@pytest.mark.parametrize("log", ["maillog", "maillog.rfc3339"])
def test_default_jails_on_corpus_truth(corpus: str, log: str) -> None:
    directory = corpus_dir(corpus)
    # loopback judged like any client: the corpus plays remote clients from 127.x.y.z, and
    # 127.0.0.1 must then be protected by mynetworks from the corpus's main.cf
    engine = _engine({"loopback": []}, directory / "config")
    bans: list[BanRecord] = []
    for j in engine.jails:
        j.state.on_ban = bans.append
    engine.feed_paths([str(directory / log)])
    sasl = next(j.cfg.params for j in engine.jails if j.cfg.name == "sasl")

    scenarios: dict[str, set[str]] = {}
    failures: dict[str, list[float]] = {}
    for line in (directory / "truth.jsonl").read_text().splitlines():
        s = json.loads(line)
        scenarios.setdefault(s["client_ip"], set()).add(s["scenario"])
        for step in s["steps"]:
            if step["code"] == 535:  # SASL authentication failed
                failures.setdefault(s["client_ip"], []).append(datetime.fromisoformat(step["t"]).timestamp())

    brute = sorted(ip for ip, sc in scenarios.items() if "sasl_bruteforce" in sc)
    must_ban = []
    for ip in brute:
        t = sorted(failures.get(ip, []))
        n = sasl.maxretry
        # reached maxretry within findtime (2 s margin: the log has whole seconds, the truth microseconds)
        if any(t[i + n - 1] - t[i] <= sasl.findtime - 2 for i in range(len(t) - n + 1)):
            must_ban.append(ip)
    assert must_ban, "the corpus has brute-force clients that reach maxretry"
    sasl_banned = {b.ip for b in bans if b.jail == "sasl"}
    assert [ip for ip in must_ban if ip not in sasl_banned] == []

    protected = {ip for ip, sc in scenarios.items() if any(_protected(x) for x in sc)}
    assert "127.0.0.1" in protected
    wrongly = sorted({(b.ip, b.jail) for b in bans if b.ip in protected or b.ip == "127.0.0.1"})
    assert wrongly == []
    assert len(bans) > 50  # the default jails do ban the bad clients


@pytest.mark.parametrize("corpus", ["real-postfix-dev", "real-postfix-suggest-dev"])
def test_kind_needles_cover_every_event(corpus: str) -> None:
    """Lines skipped unclassified by the jails' prefilter can never be evidence."""
    events = corpus_events(corpus)
    missing = [(ev.kind, ev.raw) for ev in events
               if ev.kind in KIND_NEEDLES and not any(n in ev.raw for n in KIND_NEEDLES[ev.kind])]  # fmt: skip
    assert missing == []
    named = [ev for ev in events if ev.kind in ("reject", "reject_warning") and ev.restriction in RESTRICTION_NEEDLES]
    assert len({ev.restriction for ev in named}) >= 4  # the corpus exercises them
    missing = [(ev.restriction, ev.raw) for ev in named if not any(n in ev.raw for n in RESTRICTION_NEEDLES[ev.restriction])]
    assert missing == []


@pytest.mark.parametrize("corpus", ["real-postfix-dev", "real-postfix-suggest-dev"])
def test_prefilter_changes_nothing(corpus: str) -> None:
    """Every line classified (no prefilter) gives the same bans as the prefiltered run."""
    dev_corpus = corpus_dir(corpus)
    log = str(dev_corpus / "maillog")
    fast = _engine({"loopback": []}, dev_corpus / "config")
    fast.feed_paths([log])
    slow = _engine({"loopback": []}, dev_corpus / "config")
    slow.every_line = True
    slow.feed_paths([log])
    assert [e.to_json() for e in fast.entries()] == [e.to_json() for e in slow.entries()]
    a, b = fast.state_dict(), slow.state_dict()
    assert (a["jails"], a["lines"], a["last_time"]) == (b["jails"], b["lines"], b["last_time"])
    # and in parallel, in small blocks, the same again
    par = _engine({"loopback": []}, dev_corpus / "config")
    par.feed_paths([log], workers=2, block_size=64 << 10)
    c = par.state_dict()
    assert (c["jails"], c["lines"], c["last_time"]) == (b["jails"], b["lines"], b["last_time"])


# --------------------------------------------------------------------------- the command


def _config(tmp_path: Path, corpus: Path, extra: str = "") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bans]\nloopback = []\n{extra}\n[postfix]\nconfig_dir = "{corpus / "config"}"\n')
    return cfg


def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from maillens.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_json_from_files_and_at(dev_corpus: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, dev_corpus)
    log = str(dev_corpus / "maillog")
    res = _cli("--config", str(cfg), "bans", "--format", "json", log)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data and all(set(d) == {"address", "jail", "failures", "first", "last", "until", "bans", "evidence"} for d in data)
    engine = _engine({"loopback": []}, dev_corpus / "config", own=None)
    engine.feed_paths([log])
    from maillens.exporters import prepare

    listed = prepare(engine.entries(), engine.last_time)  # one entry per address: the longest ban
    assert [(d["address"], d["jail"], d["bans"]) for d in data] == [(e.address, e.jail, e.bans) for e in listed]
    # every entry is a client the truth says misbehaved, and its evidence is lines of the log
    lines = set((dev_corpus / "maillog").read_text().splitlines())
    assert all(ev in lines for d in data for ev in d["evidence"])
    # --at: the list as it stood one second before a ban, and at the ban
    sasl = next(d for d in data if d["jail"] == "sasl")
    last = datetime.fromisoformat(sasl["last"]).timestamp()
    before = json.loads(_cli("--config", str(cfg), "bans", "--format", "json", "--at", str(last - 1), log).stdout)
    at = json.loads(_cli("--config", str(cfg), "bans", "--format", "json", "--at", sasl["last"], log).stdout)
    assert (sasl["address"], "sasl") in {(d["address"], d["jail"]) for d in at}
    assert all(datetime.fromisoformat(d["first"]).timestamp() <= last - 1 for d in before)


def test_cli_list_shows_refusals(suggest_corpus: Path, tmp_path: Path) -> None:
    res = _cli("--config", str(_config(tmp_path, suggest_corpus)), "bans", "--list", str(suggest_corpus / "maillog"))
    assert res.exit_code == 0
    out = res.stdout.splitlines()
    assert out[0].endswith(" banned") and out[1].split()[:3] == ["address", "jail", "fails"]
    refused = [line for line in out if "access.client line" in line]
    assert refused and " refused (never banned)" in res.stdout


def test_cli_usage_errors(dev_corpus: Path, tmp_path: Path) -> None:
    log = str(dev_corpus / "maillog")
    res = _cli("bans", "--apply", log)
    assert res.exit_code == 2 and "--apply needs --output FILE" in res.stderr
    res = _cli("--config", str(_config(tmp_path, dev_corpus)), "bans", "--format", "json", "--output",
               str(tmp_path / "x.json"), "--apply", log)  # fmt: skip
    assert res.exit_code == 2 and "--apply has no loader for format 'json'" in res.stderr
    res = _cli("bans", "--at", "yesterday-ish", log)
    assert res.exit_code == 2 and "--at 'yesterday-ish'" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[bans.jails.sasl]\nmaxretry = -3\n")
    res = _cli("--config", str(bad), "bans", log)
    assert res.exit_code == 2 and "[bans.jails.sasl] maxretry must be" in res.stderr
    res = _cli("bans", "--db", str(tmp_path / "none.db"))
    assert res.exit_code == 5 and "no store at" in res.stderr


def test_cli_apply_nft_in_namespace(dev_corpus: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from conftest import require_tool
    from test_exporters import require_netns

    require_tool("nft")
    require_netns()
    out = tmp_path / "maillens.nft"
    exe = shutil.which("maillens")
    assert exe, "the maillens entry point is installed (pip install -e .)"
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-ec",
         f"{exe} --config {_config(tmp_path, dev_corpus)} bans --format nft --output {out} --apply "
         f"--at 2026-11-10T07:26:00 {dev_corpus / 'maillog'}; nft -j list set inet maillens blocked4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"applied: nft -f {out} exited with status 0" in proc.stderr
    loaded = json.loads(proc.stdout)
    elems = [s for s in loaded["nftables"] if "set" in s][0]["set"].get("elem", [])
    assert len(elems) == len([line for line in out.read_text().splitlines() if line.strip().startswith("127.")])
    assert elems


def test_store_state_survives_restarts(dev_corpus: Path, tmp_path: Path) -> None:
    """Judging the store in two runs (ingest, bans, ingest more, bans) equals one run over it all,
    and the second run's increments need the first run's history."""
    from maillens.banstore import ban_log, update_from_store
    from maillens.ingest import ingest
    from maillens.store import Store

    lines = (dev_corpus / "maillog").read_text().splitlines(keepends=True)
    half = len(lines) // 2
    split_log = tmp_path / "split" / "mail.log"
    whole_log = tmp_path / "whole" / "mail.log"
    for p in (split_log, whole_log):
        p.parent.mkdir()
    split_log.write_text("".join(lines[:half]))
    whole_log.write_text("".join(lines))

    def judge(db: Path) -> None:
        with Store.open(db) as store:
            update_from_store(store, _engine({"loopback": []}, dev_corpus / "config"))

    split_db, whole_db = tmp_path / "split.db", tmp_path / "whole.db"
    ingest([str(split_log)], split_db)
    judge(split_db)
    with Store.open(split_db) as store:
        first_run = ban_log(store)
    with split_log.open("a") as fh:
        fh.write("".join(lines[half:]))
    ingest([str(split_log)], split_db)
    judge(split_db)
    ingest([str(whole_log)], whole_db)
    judge(whole_db)
    with Store.open(split_db) as a, Store.open(whole_db) as b:
        two_runs, one_run = ban_log(a), ban_log(b)
        tables = ("bans_history", "bans_state")
        assert [list(a.connection.execute(f"SELECT * FROM {t} ORDER BY 1, 2")) for t in tables] == \
            [list(b.connection.execute(f"SELECT * FROM {t} ORDER BY 1, 2")) for t in tables]
    assert first_run and two_runs == one_run
    earlier = {(r["ip"], r["jail"]) for r in first_run}
    carried = [r for r in two_runs[len(first_run):] if (r["ip"], r["jail"]) in earlier and r["bancount"] >= 2]
    assert carried, "some repeat offender's later ban counted its ban from the first run"


def test_blocks_date_lines_like_reading_straight_through(dev_corpus: Path, tmp_path: Path) -> None:
    """A log crossing New Year (no year in its time stamps), read line by line, in blocks, and in
    parallel blocks: the same years, so the same bans."""
    from datetime import timedelta

    out = []
    for line in (dev_corpus / "maillog").read_text().splitlines():
        when = datetime.strptime("2026 " + line[:15], "%Y %b %d %H:%M:%S") + timedelta(days=52, hours=8)
        out.append(f"{when:%b} {when.day:>2} {when:%H:%M:%S}" + line[15:])
    assert out[0].startswith("Dec 31") and out[-1].startswith("Jan  1")
    log = tmp_path / "mail.log"
    log.write_text("\n".join(out) + "\n")
    runs = []
    for mode in ("lines", 1, 2):
        engine = _engine({"loopback": []}, dev_corpus / "config")
        if mode == "lines":
            engine.every_line = True
            engine.feed_paths([str(log)])
        else:
            engine.feed_paths([str(log)], workers=mode, block_size=32 << 10)
        state = engine.state_dict()
        runs.append((state["jails"], state["lines"], state["last_time"]))
    assert runs[0] == runs[1] == runs[2]
    years = {datetime.fromtimestamp(t["time"]).year for j in runs[0][0].values() for t in j["ban_list"]}
    assert len(years) == 2  # bans on both sides of New Year


def test_client_access_tables_hash_and_cidr(tmp_path: Path) -> None:
    """OK entries of check_client_access tables, looked up as smtpd does, protect addresses and names;
    a prefix covering one of them is never listed."""
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text(
        "mynetworks = 10.9.0.0/16 [2001:db8:9::]/48\n"
        "smtpd_client_restrictions = permit_mynetworks,\n"
        f"    check_client_access cidr:{conf}/clients.cidr,\n    check_client_access hash:{conf}/access.client\n"
    )
    (conf / "master.cf").write_text("smtp      inet  n       -       n       -       -       smtpd\n")
    (conf / "clients.cidr").write_text("203.0.113.7 REJECT no\n203.0.113.0/24 OK\n2001:db8:5::/64 OK\n")
    # Postfix's default parent_domain_matches_subdomains: "partner.example" covers its subdomains
    (conf / "access.client").write_text("partner.example OK\n198.51.100 OK\nbad.partner.example REJECT\n")
    cfg = BanSettings.from_section({"loopback": []})
    nb = NeverBan.from_settings(cfg, load_postfix_config(conf), own=[])
    assert nb.reason("203.0.113.7") is None  # the first cidr match decides: REJECT
    assert nb.reason("203.0.113.8") == f"allowed by {conf}/clients.cidr line 2 (203.0.113.0/24 OK)"
    assert nb.reason("2001:db8:5::1").startswith(f"allowed by {conf}/clients.cidr line 3")
    assert nb.reason("198.51.100.20") == f"allowed by {conf}/access.client line 2 (198.51.100 OK)"
    assert nb.reason("192.0.2.1", "mx1.partner.example") == f"allowed by {conf}/access.client line 1 (partner.example OK)"
    assert nb.reason("192.0.2.1", "bad.partner.example") is None  # its own REJECT entry is found first
    assert nb.reason("192.0.2.1", "unknown") is None
    assert nb.reason("10.9.3.4").startswith("mynetworks 10.9.0.0/16")
    assert nb.reason("2001:db8:9:1::1").startswith("mynetworks 2001:db8:9::/48")
    assert nb.overlap("198.51.100.0/24") == f"{conf}/access.client line 2 allows 198.51.100"
    assert nb.overlap("10.9.200.0/24").startswith("mynetworks")
    assert nb.overlap("192.0.2.0/24") is None


def test_hostile_lines_never_crash(tmp_path: Path) -> None:
    engine = _engine({"loopback": [], "jails": {"sasl": {"maxretry": 1}}}, None)
    lines = [
        SASL_LINE.format(s=1, ip="999.1.2.3"),  # not an address: no evidence
        SASL_LINE.format(s=2, ip="fe80::1%eth0"),
        SASL_LINE.format(s=3, ip="::ffff:192.0.2.9"),  # IPv4-mapped: banned as IPv4
        "\x00\x00" + SASL_LINE.format(s=4, ip="192.0.2.10"),
        "Nov  9 08:41:05 mx postfix/smtpd[1]: NOQUEUE: reject: " + "x" * 200_000,
        "garbage without any time stamp reject: authentication failed",
        SASL_LINE.format(s=6, ip="2001:DB8::A"),  # upper case: one canonical form
        "",
    ]
    path = tmp_path / "hostile.log"
    path.write_bytes("\n".join(lines).encode() + b"\xff\xfe broken utf-8 reject:\n")
    engine.feed_paths([str(path)])
    assert {e.address for e in engine.entries()} == {"192.0.2.9", "192.0.2.10", "2001:db8::a"}


def test_cli_from_store_keeps_state_between_runs(dev_corpus: Path, tmp_path: Path) -> None:
    from maillens.ingest import ingest
    from maillens.store import Store

    db = tmp_path / "store.db"
    ingest([str(dev_corpus / "maillog")], db)
    cfg = str(_config(tmp_path, dev_corpus))
    at = "2026-11-10T07:27:00+00:00"  # the corpus's end: wall-clock now would find every ban over
    first = _cli("--config", cfg, "bans", "--db", str(db), "--format", "json", "--at", at)
    assert first.exit_code == 0, first.stderr
    with Store.open(db) as store:
        logged = store.connection.execute("SELECT count(*) FROM bans_log").fetchone()[0]
        judged = int(store.connection.execute("SELECT value FROM bans_meta WHERE key = 'last_event_id'").fetchone()[0])
        stored = store.connection.execute("SELECT max(id) FROM events").fetchone()[0]
    assert logged > 50 and judged == stored  # every stored event judged once
    again = _cli("--config", cfg, "bans", "--db", str(db), "--format", "json", "--at", at)
    assert again.stdout == first.stdout  # nothing new: the same list, from the kept state
    with Store.open(db) as store:
        assert store.connection.execute("SELECT count(*) FROM bans_log").fetchone()[0] == logged
    data = json.loads(first.stdout)
    truth = {json.loads(line)["client_ip"]: json.loads(line)["scenario"]
             for line in (dev_corpus / "truth.jsonl").read_text().splitlines()}  # fmt: skip
    assert data and all(d["address"] in truth for d in data)


@pytest.mark.parametrize("helo,us", [
    ("mx.example.net", True), ("MX.Example.NET", True), ("mx.example.net.", True), ("[192.0.2.1]", True),
    ("[IPv6:2001:db8::1]", True), ("192.0.2.1", True), ("mx.example.net..", False), ("[[192.0.2.1]]", False),
    ("mx", False), ("other.example.net", False), ("", False), (None, False),
])  # fmt: skip
def test_helo_is_us_and_its_needles(helo: Any, us: bool) -> None:
    from maillens.banscan import Finder, ScanSpec, _init, scan_block

    nb = NeverBan(our_names=["mx.example.net", "192.0.2.1", "2001:db8::1"])
    assert nb.is_us(helo) is us
    # the prefilter picks exactly these lines (plus every 100th, the service clock's)
    cfg = BanSettings.from_section({"default_jails": False, "jails": {
        "h": {"match": [{"kind": "reject", "helo_is_us": True}], "maxretry": 1}}})  # fmt: skip
    engine = BanEngine(cfg, nb)
    assert engine.needles == () and engine.helo_us
    line = ("Nov  9 08:41:36 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[198.51.100.1]: 554 5.7.1 "
            f"<a@b>: Relay access denied; from=<s@t> to=<a@b> proto=ESMTP helo=<{helo}>")  # fmt: skip
    _init(ScanSpec(Finder(cfg.jails, nb), engine.needles, None, engine.helo_us))
    n, picks, _ = scan_block((((line + "\n" + "filler\n") * 3).encode()[:-1], 1000, None))
    assert n == 6 and [p[0] for p in picks] == ([0, 2, 4] if us else [])
    if us and helo is not None:
        assert [p[2] for p in picks] == [((0, "198.51.100.1"),)] * 3


def test_cli_reads_compressed_and_stdin(dev_corpus: Path, tmp_path: Path) -> None:
    import gzip

    from click.testing import CliRunner

    from maillens.cli.main import cli

    cfg = str(_config(tmp_path, dev_corpus))
    text = (dev_corpus / "maillog").read_bytes()
    gz = tmp_path / "mail.log.1.gz"
    gz.write_bytes(gzip.compress(text))
    plain = _cli("--config", cfg, "bans", "--format", "json", str(dev_corpus / "maillog")).stdout
    assert json.loads(plain)
    assert _cli("--config", cfg, "bans", "--format", "json", str(gz)).stdout == plain
    res = CliRunner().invoke(cli, ["--config", cfg, "bans", "--format", "json", "-"], input=text)
    assert res.exit_code == 0 and res.stdout == plain


def test_bans_refuse_to_run_when_the_postfix_there_cannot_be_read(dev_corpus: Path, tmp_path: Path) -> None:
    """A ``postconf`` that is configured but fails must stop the run: going on without
    ``mynetworks`` would ban the server's own clients (fail open), and under ``-q`` -- what
    cron passes -- the warning that says so is not printed.  With a Postfix that is read,
    the same client is refused."""
    from maillens.cli.main import ExitStatus

    log = tmp_path / "mail.log"
    log.write_text("\n".join(SASL_LINE.format(s=s, ip="127.0.0.1") for s in range(1, 30)) + "\n")
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[bans]\nloopback = []\nignoreself = false\n[postfix]\npostconf = "{tmp_path / "no-such-postconf"}"\n')
    res = _cli("-q", "--config", str(broken), "bans", "--format", "plain", str(log))
    assert res.exit_code == ExitStatus.USAGE and "127.0.0.1" not in res.stdout, res.output
    assert "no-such-postconf" in res.stderr and res.stderr.count("\n") == 1
    read = _cli("-q", "--config", str(_config(tmp_path, dev_corpus, "ignoreself = false")), "bans", "--format", "plain", str(log))
    assert read.exit_code == 0 and "127.0.0.1" not in read.stdout, read.output
    assert "mynetworks = 127.0.0.1/32" in (dev_corpus / "config" / "main.cf").read_text()
