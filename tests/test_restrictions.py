"""``maillens restrictions`` on the corpus: hits per configured entry equal the corpus truth.

Expected figures come from the corpus files only: ``log_index.jsonl`` (the
log events the harness found per session, with the smtpd service) and
``summary.json``'s "log" section (reject lines per stage and restriction).
The harness labels a few restrictions in its own words; this is the mapping
to the names main.cf uses:
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import corpus_events
from maillens.cli.main import cli
from maillens.postconf import load_postfix_config
from maillens.restrictions import UNLOGGED, RestrictionMatcher

#: harness label → (main.cf restriction name, restriction list it says fired)
LABELS = {
    "check_helo_access regexp": ("check_helo_access", None),
    "check_policy_service (policyd-spf)": ("check_policy_service", None),
    "permit_sasl_authenticated,reject (client)": ("reject", "client"),
    "reject_unauth_pipelining (client)": ("reject_unauth_pipelining", "client"),
}
#: syslog names of the corpus master.cf services (its ``-o syslog_name`` settings)
SERVICES = {"postfix/smtpd": "smtp", "postfix/submission/smtpd": "submission"}

Key = tuple[str, str, str, str]  # service, list stage, restriction, zone


def truth_counts(corpus: Path, phases: set[int] | None = None) -> tuple[Counter[Key], Counter[Key]]:
    """(rejects, reject_warnings) per configured entry, from the corpus labels."""
    config = load_postfix_config(corpus / "config")
    summary = json.loads((corpus / "summary.json").read_text())["log"]
    warn_zone_restriction = {
        key.split(" ", 1)[1].split(":")[1]: key.split(" ", 1)[1].split(":")[0]
        for key in summary["reject_warning_lines"]
    }
    phase_of = {}
    for line in (corpus / "truth.jsonl").read_text().splitlines():
        session = json.loads(line)
        phase_of[session["sid"]] = session["phase"]
    rejects: Counter[Key] = Counter()
    warnings: Counter[Key] = Counter()
    for line in (corpus / "log_index.jsonl").read_text().splitlines():
        session = json.loads(line)
        if phases is not None and phase_of[session["sid"]] not in phases:
            continue
        service = SERVICES[session["service"]]
        for label, count in session["log_events"].items():
            kind, _, rest = label.partition(":")
            if kind not in ("reject", "reject_warning"):
                continue
            log_stage, _, rest = rest.partition(":")
            parts = [p for p in rest.split(":") if p != "with_queue_id"]
            if kind == "reject_warning":
                name, zone = warn_zone_restriction[parts[0]], parts[0]
            else:
                name, zone = parts[0], (parts[1] if len(parts) > 1 else "")
            name, list_stage = LABELS.get(name, (name, None))
            if list_stage is None and log_stage == "DATA":
                list_stage = "data"
            if list_stage is None:  # the one list of this service holding it
                stages = {r.stage for r in config.checks(service) if r.name == name
                          and (not zone or (r.zone is not None and r.zone.domain == zone))}
                assert len(stages) == 1, f"{label}: truth does not say which of {stages} fired"
                list_stage = stages.pop()
            (rejects if kind == "reject" else warnings)[(service, list_stage, name, zone)] += count
    return rejects, warnings


@lru_cache(maxsize=None)
def run_restrictions(corpus: Path, *extra: str) -> dict[str, Any]:
    """The command's --json --unexplained output (cached: several tests read it)."""
    result = CliRunner().invoke(
        cli,
        ["restrictions", "--postfix-config", str(corpus / "config"), str(corpus / "maillog"),
         "--json", "--unexplained", *extra],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def row_key(row: dict[str, Any]) -> Key:
    argument = row["argument"] or ""
    zone = argument.split("=")[0] if row["restriction"] == "reject_rbl_client" else ""
    return (row["service"], row["stage"], row["restriction"], zone)


def test_hits_equal_corpus_truth(any_corpus: Path) -> None:
    out = run_restrictions(any_corpus)
    rejects, warnings = truth_counts(any_corpus)
    summary = json.loads((any_corpus / "summary.json").read_text())["log"]
    # the expectation itself adds up to the summary's reject and reject_warning lines
    assert sum(rejects.values()) == sum(summary["reject_lines_by_stage_and_restriction"].values())
    assert sum(warnings.values()) == sum(summary["reject_warning_lines"].values())

    rows = out["restrictions"]
    assert len({row_key(r) for r in rows}) == len(rows), "one row per configured entry"
    assert {row_key(r): r["hits"] for r in rows if r["hits"]} == dict(rejects)
    assert {row_key(r): r["warnings"] for r in rows if r["warnings"]} == dict(warnings)
    assert out["unexplained"] == []
    assert out["rejects"] == sum(rejects.values())
    assert out["reject_warnings"] == sum(warnings.values())


def test_never_fired_and_warn_only(any_corpus: Path) -> None:
    out = run_restrictions(any_corpus)
    rejects, warnings = truth_counts(any_corpus)
    config = load_postfix_config(any_corpus / "config")
    configured = [r for s in config.smtpd_services() for r in config.checks(s.name) if r.can_reject]

    def key(r: Any) -> Key:
        return (r.service, r.stage, r.name, r.zone.domain if r.zone else "")

    def allowlist(r: Any) -> bool:  # a table whose lines all say OK or DUNNO cannot refuse: not "never fired"
        if r.map is None or not r.map.path:
            return False
        lines = [ln.split() for ln in (any_corpus / "config" / Path(r.map.path).name).read_text().splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        return all(len(parts) > 1 and parts[1].upper() in ("OK", "DUNNO") for parts in lines)

    silent = {key(r) for r in configured if not rejects[key(r)] and not warnings[key(r)] and not allowlist(r)}
    # smtpd_helo_required refuses with a 503 and no reject line: it cannot be counted, so it is
    # "not logged", never "never fired" -- though the truth's helo_missing sessions met it
    unlogged = {k for k in silent if k[2] in UNLOGGED}
    expected_never = silent - unlogged
    expected_warn_only = {key(r) for r in configured if not rejects[key(r)] and warnings[key(r)]}
    assert expected_never, "the corpus configuration has unexercised restrictions"
    assert {row_key(r) for r in out["never_fired"]} == expected_never
    assert {row_key(r) for r in out["restrictions"] if r["status"] == "not_logged"} == unlogged
    truth = [json.loads(line) for line in (any_corpus / "truth.jsonl").read_text().splitlines()]
    assert any(t["scenario"] == "helo_missing" for t in truth)  # it acted: clients sent MAIL without HELO
    assert any(k[2] == "smtpd_helo_required" for k in unlogged)
    assert {row_key(r) for r in out["warn_only"]} == expected_warn_only == {
        ("smtp", "client", "reject_rbl_client", "dnsbl.sorbs.net")
    }
    # permit_* entries cannot reject: neither fired nor "never fired"
    assert all(not r["restriction"].startswith("permit") for r in out["never_fired"])


def test_json_list_shape(dev_corpus: Path) -> None:
    result = CliRunner().invoke(
        cli, ["restrictions", "--postfix-config", str(dev_corpus / "config"), str(dev_corpus / "maillog"), "--json",
              "--service", "submission"],
        catch_exceptions=False,
    )
    rows = json.loads(result.output)
    assert isinstance(rows, list)
    assert {"service", "stage", "position", "restriction", "argument", "hits", "warnings"} <= set(rows[0])
    assert {r["service"] for r in rows} == {"submission"}
    client = [(r["position"], r["restriction"]) for r in rows if r["stage"] == "client"]
    assert client == [(1, "permit_sasl_authenticated"), (2, "reject")]


def test_since_limits_the_period(dev_corpus: Path) -> None:
    # phase 3 starts 2026-11-10 07:18:52 UTC, hours after phase 2 ended
    out = run_restrictions(dev_corpus, "--since", "2026-11-10T03:00:00+00:00")
    rejects, warnings = truth_counts(dev_corpus, phases={3})
    assert 0 < sum(rejects.values()) < sum(truth_counts(dev_corpus)[0].values())
    assert {row_key(r): r["hits"] for r in out["restrictions"] if r["hits"]} == dict(rejects)
    assert {row_key(r): r["warnings"] for r in out["restrictions"] if r["warnings"]} == dict(warnings)


def test_unexplained_rejects_when_config_changed(tmp_path: Path, dev_corpus: Path) -> None:
    """Drop RBL zones from main.cf: their rejects become unexplained, counted per zone."""
    main_cf = (dev_corpus / "config" / "main.cf").read_text()
    (tmp_path / "main.cf").write_text(main_cf.replace("    reject_rbl_client zen.spamhaus.org,\n", "")
                                      .replace("    reject_rbl_client bl.spamcop.net,\n", ""))
    (tmp_path / "master.cf").write_text((dev_corpus / "config" / "master.cf").read_text())
    summary = json.loads((dev_corpus / "summary.json").read_text())["log"]["rbl_reject_lines_by_zone"]
    config = load_postfix_config(tmp_path)
    result = RestrictionMatcher(config).tally(corpus_events("real-postfix-dev"))
    unexplained = {u.rbl: u.count for u in result.unexplained}
    assert unexplained == {"zen.spamhaus.org": summary["zen.spamhaus.org"], "bl.spamcop.net": summary["bl.spamcop.net"]}
    assert all("not configured for service smtp" in u.why for u in result.unexplained)


def test_store_rows_match_like_events(dev_corpus: Path) -> None:
    """The store hands back dict rows, not Events: same attribution."""
    from maillens.store import EVENT_COLUMNS

    events = [e for e in corpus_events("real-postfix-dev") if e.kind in ("reject", "reject_warning")]
    rows = [{c: getattr(e, c, None) for c in EVENT_COLUMNS if c not in ("ts", "day")} for e in events]
    config = load_postfix_config(dev_corpus / "config")
    from_events = RestrictionMatcher(config).tally(events)
    from_rows = RestrictionMatcher(config).tally(rows)
    assert [(r.hits, r.warnings) for r in from_rows.rows] == [(r.hits, r.warnings) for r in from_events.rows]


def test_text_output_names_never_fired(dev_corpus: Path) -> None:
    result = CliRunner().invoke(
        cli, ["restrictions", "--postfix-config", str(dev_corpus / "config"), str(dev_corpus / "maillog")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    text = result.output
    assert "Never fired:" in text and "Only reject_warning" in text
    assert "warn_if_reject reject_rbl_client dnsbl.sorbs.net" in text


def test_a_restriction_class_in_a_list_is_its_restrictions(tmp_path: Path) -> None:
    """``rbl_checks`` (a smtpd_restriction_classes name) in a list runs its own entries there:
    their rejects land on them, not on 'not configured', and its zones are checked by 'rbl'."""
    conf = tmp_path / "pf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        "smtpd_restriction_classes = rbl_checks\n"
        "rbl_checks = reject_rbl_client zen.spamhaus.org, warn_if_reject reject_rhsbl_sender dbl.spamhaus.org\n"
        "smtpd_client_restrictions = permit_mynetworks, rbl_checks, reject_unknown_client_hostname\n")
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov  9 08:41:22 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 Service "
        "unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org; from=<a@b.example> "
        "to=<x@example.org> proto=ESMTP helo=<h>\n"
        "Nov  9 08:41:23 mx postfix/smtpd[1]: NOQUEUE: reject_warning: RCPT from c.example[192.0.2.10]: 554 5.7.1 "
        "Service unavailable; Sender address [a@spam.example] blocked using dbl.spamhaus.org; "
        "from=<a@spam.example> to=<x@example.org> proto=ESMTP helo=<c.example>\n")
    res = CliRunner().invoke(cli, ["restrictions", "--json", "--unexplained", "--postfix-config", str(conf), str(log)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    client = [(r["position"], r["restriction"], r["parameter"], r["hits"], r["warnings"])
              for r in out["restrictions"] if r["stage"] == "client"]
    assert client == [(1, "permit_mynetworks", "smtpd_client_restrictions", 0, 0),
                      (2, "reject_rbl_client", "rbl_checks", 1, 0),
                      (3, "reject_rhsbl_sender", "rbl_checks", 0, 1),
                      (4, "reject_unknown_client_hostname", "smtpd_client_restrictions", 0, 0)]
    assert out["unexplained"] == []
    assert {z.domain for z in load_postfix_config(conf).rbl_zones()} == {"zen.spamhaus.org", "dbl.spamhaus.org"}


def test_the_same_check_twice_a_reject_lands_on_the_table_that_can_refuse(tmp_path: Path) -> None:
    """An allowlist table (OK lines only) and then a blocklist table, both check_client_access:
    'Access denied' came from the second.  Counting it on the first (as before) told the admin
    the table doing the work never fired; the allowlist itself is 'accepts only'."""
    conf = tmp_path / "pf"
    conf.mkdir()
    (conf / "main.cf").write_text("smtpd_client_restrictions = permit_mynetworks, "
                                  "check_client_access hash:/etc/postfix/client_ok, "
                                  "check_client_access cidr:/etc/postfix/client_bad.cidr\n")
    (conf / "client_ok").write_text("192.0.2.99 OK\ngood.example OK\n")
    (conf / "client_bad.cidr").write_text("192.0.2.0/24 REJECT\n")
    log = tmp_path / "mail.log"
    log.write_text("Nov  9 08:41:22 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.12]: 554 5.7.1 "
                   "<unknown[192.0.2.12]>: Client host rejected: Access denied; from=<a@b.example> "
                   "to=<x@example.org> proto=ESMTP helo=<h>\n")
    res = CliRunner().invoke(cli, ["restrictions", "--json", "--unexplained", "--postfix-config", str(conf),
                                   str(log)], catch_exceptions=False)
    out = json.loads(res.output)
    rows = {r["argument"]: (r["hits"], r["status"]) for r in out["restrictions"]
            if r["restriction"] == "check_client_access"}
    assert rows == {"hash:/etc/postfix/client_ok": (0, "accepts_only"),
                    "cidr:/etc/postfix/client_bad.cidr": (1, "fired")}
    assert not [r for r in out["never_fired"] if r["restriction"] == "check_client_access"]


def test_postscreen_rejects_land_on_its_dns_lists_and_tests(tmp_path: Path) -> None:
    """postscreen's 'blocked using zen' lands on zen in postscreen_dnsbl_sites, a protocol-test reject
    on its tests; a site with a negative weight (an allowlist) cannot refuse.  Before, both were
    'not configured' and every postscreen list looked unused."""
    conf = tmp_path / "pf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        "postscreen_dnsbl_sites = zen.spamhaus.org*3, b.barracudacentral.org*2,\n"
        "    list.dnswl.org=127.0.[0..255].[1..3]*-2\n"
        "postscreen_dnsbl_action = enforce\n")
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov  9 08:41:22 mx postfix/postscreen[5]: NOQUEUE: reject: RCPT from [192.0.2.7]:41234: 550 5.7.1 Service "
        "unavailable; client [192.0.2.7] blocked using zen.spamhaus.org; from=<a@b.example>, to=<x@example.org>, "
        "proto=ESMTP, helo=<h>\n"
        "Nov  9 08:41:23 mx postfix/postscreen[5]: NOQUEUE: reject: RCPT from [192.0.2.8]:41235: 550 5.5.1 Protocol "
        "error; from=<a@b.example>, to=<x@example.org>, proto=SMTP, helo=<h>\n")
    res = CliRunner().invoke(cli, ["restrictions", "--json", "--unexplained", "--postfix-config", str(conf),
                                   str(log)], catch_exceptions=False)
    out = json.loads(res.output)
    rows = [(r["restriction"], r["argument"], r["hits"], r["status"]) for r in out["restrictions"]
            if r["service"] == "postscreen"]
    assert rows == [("postscreen_dnsbl_sites", "zen.spamhaus.org*3", 1, "fired"),
                    ("postscreen_dnsbl_sites", "b.barracudacentral.org*2", 0, "never_fired"),
                    ("postscreen_dnsbl_sites", "list.dnswl.org=127.0.[0..255].[1..3]*-2", 0, "accepts_only"),
                    ("postscreen", None, 1, "fired")]
    assert out["unexplained"] == [] and out["rejects"] == 2


def test_sleep_takes_its_seconds() -> None:
    """``sleep 1`` is one entry (its argument is seconds), not a restriction named '1' that never fired."""
    from maillens.restrictions import parse_restriction_list

    got = parse_restriction_list(["sleep", "1", "permit_mynetworks", "reject_unknown_client_hostname"],
                                 service="smtp", stage="client", parameter="smtpd_client_restrictions")
    assert [(r.name, r.argument) for r in got] == [("sleep", "1"), ("permit_mynetworks", None),
                                                  ("reject_unknown_client_hostname", None)]


@pytest.mark.parametrize("since", ["7x", "yesterday-ish"])
def test_bad_since_is_a_usage_error(dev_corpus: Path, since: str) -> None:
    result = CliRunner().invoke(
        cli, ["restrictions", "--postfix-config", str(dev_corpus / "config"), str(dev_corpus / "maillog"),
              "--since", since],
    )
    assert result.exit_code == 2
    assert "--since" in result.output


def test_parse_since_durations() -> None:
    from maillens.cli.server_cmd import parse_since

    now = datetime.fromisoformat("2026-11-10T12:00:00+00:00")
    assert parse_since("7d", now) == datetime.fromisoformat("2026-11-03T12:00:00+00:00")
    assert parse_since("90m", now) == datetime.fromisoformat("2026-11-10T10:30:00+00:00")
    assert parse_since("2026-11-09", now) == datetime.fromisoformat("2026-11-09T00:00:00+00:00")


SYNTH_MAIN_CF = """\
smtpd_client_restrictions = permit_mynetworks
smtpd_sender_restrictions = check_sender_access hash:/etc/postfix/sender_access
smtpd_recipient_restrictions = check_client_access cidr:/etc/postfix/client.cidr,
    reject_unauth_destination, warn_if_reject reject_unknown_helo_hostname, reject
header_checks = regexp:/etc/postfix/header_checks
smtpd_milters = inet:127.0.0.1:11332
"""
SYNTH_LOG = [
    # access map REJECT without text: logged like 'reject', belongs to the map
    "Nov 10 10:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <a@spam.example>:"
    " Sender address rejected: Access denied; from=<a@spam.example> to=<u@example.org> proto=ESMTP helo=<x.example>",
    "Nov 10 10:00:02 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.2]: 554 5.7.1 <unknown[192.0.2.2]>:"
    " Client host rejected: go away; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x.example>",
    # the final plain 'reject' of the recipient list
    "Nov 10 10:00:03 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.3]: 554 5.7.1 <u@example.org>:"
    " Recipient address rejected: Access denied; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x.example>",
    "Nov 10 10:00:04 mx postfix/smtpd[1]: NOQUEUE: reject_warning: RCPT from unknown[192.0.2.4]: 450 4.7.1"
    " <nowhere.example>: Helo command rejected: Host not found; from=<a@b.example> to=<u@example.org> proto=ESMTP"
    " helo=<nowhere.example>",
    "Nov 10 10:00:05 mx postfix/cleanup[2]: 4jNNYF2l5FzJ9cR: reject: header Subject: buy now from unknown[192.0.2.5];"
    " from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x.example>: 5.7.1 no thanks",
    "Nov 10 10:00:06 mx postfix/smtpd[1]: 4jNNYF2l5FzJ9cS: milter-reject: END-OF-MESSAGE from unknown[192.0.2.6]:"
    " 5.7.1 Spam message rejected; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x.example>",
    # rejected by something this configuration does not have
    "Nov 10 10:00:07 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 Service unavailable;"
    " Client host [192.0.2.7] blocked using zen.spamhaus.org; from=<a@b.example> to=<u@example.org> proto=ESMTP"
    " helo=<x.example>",
]


def test_access_maps_content_checks_and_milters(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(SYNTH_MAIN_CF)
    log = tmp_path / "mail.log"
    log.write_text("\n".join(SYNTH_LOG) + "\n")
    result = CliRunner().invoke(
        cli, ["restrictions", "--postfix-config", str(tmp_path), str(log), "--json", "--unexplained"],
        catch_exceptions=False,
    )
    out = json.loads(result.output)
    hits = {(r["service"], r["stage"], r["position"], r["restriction"]): (r["hits"], r["warnings"])
            for r in out["restrictions"] if r["hits"] or r["warnings"]}
    assert hits == {
        ("smtp", "sender", 1, "check_sender_access"): (1, 0),
        ("smtp", "recipient", 1, "check_client_access"): (1, 0),
        ("smtp", "recipient", 3, "reject_unknown_helo_hostname"): (0, 1),
        ("smtp", "recipient", 4, "reject"): (1, 0),
        ("smtp", "end_of_data", 1, "milter"): (1, 0),
        ("cleanup", "end_of_data", 1, "header_checks"): (1, 0),
    }
    assert [(u["restriction"], u["rbl"], u["count"]) for u in out["unexplained"]] == [
        ("reject_rbl_client", "zen.spamhaus.org", 1)
    ]


def test_from_the_store_equals_truth(tmp_path: Path, dev_corpus: Path) -> None:
    """Without log files the command reads what 'maillens ingest' stored."""
    db = tmp_path / "store.db"
    runner = CliRunner()
    ingest = runner.invoke(cli, ["ingest", "--db", str(db), str(dev_corpus / "maillog")], catch_exceptions=False)
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(cli, ["restrictions", "--db", str(db), "--postfix-config", str(dev_corpus / "config"),
                                 "--json", "--unexplained"], catch_exceptions=False)
    out = json.loads(result.output)
    rejects, warnings = truth_counts(dev_corpus)
    assert {row_key(r): r["hits"] for r in out["restrictions"] if r["hits"]} == dict(rejects)
    assert {row_key(r): r["warnings"] for r in out["restrictions"] if r["warnings"]} == dict(warnings)
    assert out["unexplained"] == []


def test_hostile_log_does_not_crash(tmp_path: Path, dev_corpus: Path) -> None:
    log = tmp_path / "junk.log"
    log.write_bytes(b"\x00\xff\xfe garbage\n" + b"Nov 10 10:00:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from"
                    b" \n" + b"x" * 100_000 + b"\n")
    result = CliRunner().invoke(
        cli, ["restrictions", "--postfix-config", str(dev_corpus / "config"), str(log), "--json", "--unexplained"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert all(r["hits"] == 0 for r in json.loads(result.output)["restrictions"])
