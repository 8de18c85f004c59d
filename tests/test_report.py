"""The daily report's figures against the corpus truth and ``maillens summary``.

For every corpus log and every calendar day in it, the report is built from
a real store (the corpus log ingested by the real ingest).  Oracles:

* ``maillens summary --json`` for the same day, both from the store and
  straight from the file (a different code path: no store, no tracker
  persistence);
* the corpus's own ``pflogsumm.txt`` (real pflogsumm) per-day traffic table;
* ``summary.json`` (counts found in the log by the corpus harness): the
  report's per-day tables summed over the days equal the whole-log counts;
* ``log_index.jsonl`` + the raw log lines for unique IPs per RBL zone and day.

No expected figure here comes from maillens's own output.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import CORPORA, corpus_dir
from maillens.cli.main import cli
from maillens.reportdata import HOURLY_SERIES, ReportData, Table
from maillens.rollup import ReportOptions, build_report
from maillens.store import Store
from report_fixtures import corpus_classifier, ingest_corpus

ALL = ReportOptions(top=10000, host="mx.example.org")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


@pytest.fixture(scope="module", params=CORPORA)
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One corpus ingested into a store, with a full report for each of its days."""
    directory = corpus_dir(request.param)
    db = ingest_corpus(directory, tmp_path_factory.mktemp(request.param) / "store.db")
    summary = json.loads((directory / "summary.json").read_text())
    days = [date.fromisoformat(d) for d in summary["calendar_days"]]
    with Store.open(db, readonly=True) as store:
        assert store.days() == [d.isoformat() for d in days]
        reports = {d: build_report(store, d, options=ALL) for d in days}
        rollups = {d: store.daily_rollup(d) for d in days}
    return {"dir": directory, "db": db, "summary": summary, "days": days, "reports": reports, "rollups": rollups}


def as_dict(t: Table, key: int = 0, value: int = 1) -> dict[str, int]:
    return {row[key]: row[value] for row in t.rows}


def summed(reports: dict[date, ReportData], attr: str, key: int = 0, value: int = 1) -> Counter[str]:
    total: Counter[str] = Counter()
    for data in reports.values():
        total.update(as_dict(getattr(data, attr), key, value))
    return total


def summary_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["summary", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# -- headline and per-hour figures ------------------------------------------------------


def test_headline_equals_summary_from_store_and_from_file(corpus: dict[str, Any]) -> None:
    log = str(corpus["dir"] / "maillog")
    for day, data in corpus["reports"].items():
        from_store = summary_json("--db", str(corpus["db"]), "--date", day.isoformat())
        from_file = summary_json(log, "--date", day.isoformat())
        for totals in (from_store["grand_totals"], from_file["grand_totals"]):
            for key in ("received", "delivered", "rejected", "deferred", "bounced", "expired"):
                assert data.value(key) == totals[key], (day, key)
        hours = from_store["per_hour"]
        roll_hours = _store_hours(corpus["db"], day)
        for h, row in enumerate(data.hourly):
            assert (row.received, row.delivered, row.deferred, row.bounced) == (
                hours[h]["received"], hours[h]["delivered"], hours[h]["deferred"], hours[h]["bounced"])
            # summary's per-hour "rejected" is pflogsumm's: rejects + warnings + holds + discards;
            # the report's chart shows rejects, so that it adds up to the headline figure
            extra = sum(roll_hours[h][k] for k in ("reject_warnings", "held", "discarded"))
            assert row.rejected + extra == hours[h]["rejected"]
        assert sum(r.rejected for r in data.hourly) == data.value("rejected")


def _store_hours(db: Path, day: date) -> list[dict[str, int]]:
    with Store.open(db, readonly=True) as store:
        return store.hourly(day)


def pflogsumm_per_day(text: str) -> dict[date, dict[str, int]]:
    """The real pflogsumm's Per-Day Traffic Summary (corpus pflogsumm.txt)."""
    out = {}
    section = text.split("Per-Day Traffic Summary", 1)[1].split("\n\n", 1)[0]
    for m in re.finditer(r"^\s+(\w{3})\s+(\d+) (\d{4})\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", section, re.M):
        mon, d, y, *nums = m.groups()
        out[date(int(y), _MONTHS[mon], int(d))] = dict(zip(
            ("received", "delivered", "deferred", "bounced", "rejected"), map(int, nums)))  # fmt: skip
    return out


def test_per_day_figures_equal_real_pflogsumm(corpus: dict[str, Any]) -> None:
    truth = pflogsumm_per_day((corpus["dir"] / "pflogsumm.txt").read_text())
    assert set(truth) == set(corpus["days"])
    for day, data in corpus["reports"].items():
        t = truth[day]
        roll = corpus["rollups"][day]
        assert data.value("received") == t["received"]
        assert data.value("delivered") == t["delivered"]
        assert data.value("bounced") == t["bounced"]
        assert sum(h.deferred for h in data.hourly) == t["deferred"]  # pflogsumm's per-day column: deferrals
        assert data.value("rejected") + roll["reject_warnings"] + roll["held"] + roll["discarded"] == t["rejected"]


def test_days_add_up_to_the_logs_delivery_lines(corpus: dict[str, Any]) -> None:
    lines = corpus["summary"]["log"]["delivery_status_lines"]
    reports = corpus["reports"]
    assert sum(d.value("bounced") for d in reports.values()) == lines.get("postfix/smtp bounced", 0)
    assert sum(d.value("expired") for d in reports.values()) == lines.get("qmgr expired", 0)
    deferrals = sum(n for k, n in lines.items() if k.endswith(" deferred"))
    assert sum(summed(reports, "deferrals_by_domain").values()) == deferrals
    assert sum(summed(reports, "bounces_by_domain").values()) == lines.get("postfix/smtp bounced", 0)
    assert sum(len(d.expired) + d.expired.more for d in reports.values()) == lines.get("qmgr expired", 0)


# -- rejects, RBL zones, SPF, SASL ------------------------------------------------------------


def _truth_restriction(name: str) -> str:
    """summary.json's reject key → the restriction name as main.cf spells it."""
    name = name.split(":", 1)[0].split(" (", 1)[0].split(" ", 1)[0]
    return name.rsplit(",", 1)[-1]  # "permit_sasl_authenticated,reject" → "reject" (what rejected)


def test_rejects_by_restriction_and_stage_equal_the_log(corpus: dict[str, Any]) -> None:
    truth = corpus["summary"]["log"]["reject_lines_by_stage_and_restriction"]
    by_restriction: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    for key, n in truth.items():
        _queue, stage, rest = key.split(" ", 2)
        by_restriction[_truth_restriction(rest)] += n
        by_stage[stage] += n
    reports = corpus["reports"]
    assert summed(reports, "rejects_by_restriction") == by_restriction
    assert summed(reports, "rejects_by_stage") == by_stage
    assert sum(d.value("rejected") for d in reports.values()) == sum(truth.values())


def test_rbl_zones_hits_warnings_and_unique_ips(corpus: dict[str, Any]) -> None:
    log = corpus["summary"]["log"]
    reports = corpus["reports"]
    assert summed(reports, "rbl_zones") == Counter(log["rbl_reject_lines_by_zone"])
    warn_truth = Counter({k.split(":", 1)[1]: n for k, n in log["reject_warning_lines"].items()
                          if "reject_rbl_client:" in k})  # fmt: skip
    warned = summed(reports, "rbl_zones", value=2)
    assert +warned == warn_truth
    # unique client IPs per zone and day: the sessions' own reject lines, by line number
    lines = (corpus["dir"] / "maillog").read_text(errors="replace").splitlines()
    ips: dict[tuple[date, str], set[str]] = defaultdict(set)
    for entry in map(json.loads, (corpus["dir"] / "log_index.jsonl").read_text().splitlines()):
        for n in entry["maillog_lines"]:
            m = re.search(r"\breject(?:_warning)?: RCPT .* blocked using ([^;,\s]+)", lines[n - 1])
            if m:
                mon, d = lines[n - 1].split()[:2]
                year = int(corpus["summary"]["first_timestamp"][:4])
                ips[(date(year, _MONTHS[mon], int(d)), m.group(1))].add(entry["client_ip"])
    for day, data in reports.items():
        got = {row[0]: row[3] for row in data.rbl_zones.rows}
        want = {zone: len(s) for (d, zone), s in ips.items() if d == day}
        assert got == want, day
        total = data.value("rejected")
        assert all(row[4] == pytest.approx(row[1] / total) for row in data.rbl_zones.rows)


def test_rbl_zones_configured_but_never_hit(corpus: dict[str, Any], tmp_path: Path) -> None:
    from maillens.postconf import load_postfix_config

    config = corpus["dir"] / "config"
    mine = tmp_path / "postfix"
    mine.mkdir()
    main_cf = next(config.rglob("main.cf"))
    text = main_cf.read_text()
    assert "reject_rbl_client zen.spamhaus.org" in text
    (mine / "main.cf").write_text(text.replace(
        "reject_rbl_client zen.spamhaus.org", "reject_rbl_client zen.spamhaus.org,\n    reject_rbl_client never.example.test"))  # fmt: skip
    day = corpus["days"][0]
    with Store.open(corpus["db"], readonly=True) as store:
        as_configured = build_report(store, day, options=ALL, postfix=load_postfix_config(main_cf.parent))
        extra = build_report(store, day, options=ALL, postfix=load_postfix_config(mine))
    assert as_configured.rbl_unused == ()  # every zone of the corpus main.cf rejected someone
    assert extra.rbl_unused == ("never.example.test",)
    assert corpus["reports"][day].rbl_unused is None  # main.cf unknown: no claim either way


def test_spf_results_equal_policyd_spf_lines(corpus: dict[str, Any]) -> None:
    kinds = corpus["summary"]["log"]["line_kinds"]
    truth = Counter({k.rsplit(": ", 1)[1].lower(): n for k, n in kinds.items()
                     if k.startswith("policyd-spf: prepend Received-SPF: ")})  # fmt: skip
    truth["fail"] = kinds.get("policyd-spf: reject (SPF fail)", 0)
    assert summed(corpus["reports"], "spf_results") == +truth
    fails = summed(corpus["reports"], "spf_fail_domains")
    assert sum(fails.values()) == truth["fail"]


def test_sasl_failures_by_client_equal_the_log(corpus: dict[str, Any]) -> None:
    truth = Counter(corpus["summary"]["log"]["sasl_failures_per_ip"])
    reports = corpus["reports"]
    assert summed(reports, "sasl_by_client", value=2) == truth
    assert sum(d.value("sasl_failures") for d in reports.values()) == sum(truth.values())
    assert sum(summed(reports, "sasl_by_username").values()) <= sum(truth.values())


def test_top_lists_are_cut_and_counted(corpus: dict[str, Any]) -> None:
    day = corpus["days"][0]
    with Store.open(corpus["db"], readonly=True) as store:
        short = build_report(store, day, options=ReportOptions(top=3))
    full = corpus["reports"][day]
    for name in ("rejected_clients", "rejected_helos", "senders_by_count", "sasl_by_client"):
        t_short, t_full = getattr(short, name), getattr(full, name)
        assert t_short.rows == t_full.rows[:3]
        assert len(t_short) + t_short.more == len(t_full)
    counts = [row[2] for row in full.rejected_clients.rows]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == full.value("rejected") - _rejects_without_client(corpus["db"], day)


def _rejects_without_client(db: Path, day: date) -> int:
    with Store.open(db, readonly=True) as store:
        return int(store.connection.execute(
            "SELECT count(*) FROM events WHERE day = ? AND kind = 'reject' AND coalesce(client_ip, '') = ''",
            (day.isoformat(),)).fetchone()[0])  # fmt: skip


# -- the command ------------------------------------------------------------------------------


def test_report_command_from_file_and_from_store(tmp_path: Path) -> None:
    directory = corpus_dir("real-postfix-dev")
    log = str(directory / "maillog")
    db = ingest_corpus(directory, tmp_path / "store.db")
    runner = CliRunner()
    html, text = tmp_path / "r.html", tmp_path / "r.txt"
    res = runner.invoke(cli, ["report", "--db", str(db), "--date", "2026-11-09", "--html", str(html),
                              "--text", str(text), "--host", "mx.example.org"], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    totals = summary_json(log, "--date", "2026-11-09")["grand_totals"]
    body = text.read_text()
    for key in ("received", "delivered", "rejected", "deferred", "bounced"):
        assert re.search(rf"^\s+{totals[key]}\s+{key}\b", body, re.M), key
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and f'id="fig-received" data-value="{totals["received"]}"' in page
    # nothing to fetch (URLs in reply texts are text; test_report_browser watches the network)
    assert not re.search(r"""(?:href|src)\s*=\s*["']?(?!["'#])|url\(|@import""", page)
    # from the file directly: the same text (but for the source line, and the allowlist
    # section, computed from the file's own lines only: test_report_suggest.py checks it)
    res2 = runner.invoke(cli, ["report", log, "--date", "2026-11-09", "--host", "mx.example.org"],
                         catch_exceptions=False)  # fmt: skip
    assert res2.exit_code == 0
    assert "Allowlist suggestions from the given log files up to the end of 2026-11-09: " in " ".join(res2.output.split())
    allowlist = r"^Allowlist suggestions\n-+\n.*?\n(?=\S[^\n]*\n-+\n)"
    strip = lambda s: re.sub(allowlist, "", re.sub(r"^From .*\n", "", s, flags=re.M), flags=re.M | re.S)  # noqa: E731
    assert "Allowlist suggestions" not in strip(body) and "Allowlist suggestions" not in strip(res2.output)
    assert strip(res2.output) == strip(body)
    # a range is refused with the flag to fix; a missing store names --db
    bad = runner.invoke(cli, ["report", "--db", str(db), "--date", "2026-11-09..2026-11-10"])
    assert bad.exit_code == 2 and "--date" in bad.output
    missing = runner.invoke(cli, ["report", "--db", str(tmp_path / "none.db"), "--date", "2026-11-09"])
    assert missing.exit_code != 0 and "--db" in missing.output


def test_report_says_what_part_of_the_day_the_data_covers(corpus: dict[str, Any]) -> None:
    """A log that starts at 08:41 or stops at 07:26 covers part of a day, and a day after the
    store's newest line has no data at all: the report says so instead of passing a stalled
    ingest off as a quiet day (and cron, under -q, gets that as an error line)."""
    lines = (corpus["dir"] / "maillog").read_text(errors="replace").splitlines()
    first_hour, last_hour = int(lines[0][7:9]), int(lines[-1][7:9])
    first, last = corpus["days"][0], corpus["days"][-1]
    notes = {d: r.coverage_note for d, r in corpus["reports"].items()}
    assert notes[first] == f"The log begins in the {first_hour:02d}:00 hour of this day: the figures cover part of it."
    if last_hour < 23:
        assert notes[last] == f"The log ends in the {last_hour:02d}:00 hour of this day: the figures cover part of it."
    assert all(n == "" for d, n in notes.items() if d not in (first, last))
    after = last + timedelta(days=3)
    import sys

    res = subprocess.run([sys.executable, "-m", "maillens", "-q", "report", "--db", str(corpus["db"]), "--date",
                          after.isoformat()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    said = f"No data after {last.isoformat()} {last_hour:02d}:59: nothing newer has been ingested"
    assert res.stderr.startswith("maillens: " + said) and res.stderr.count("\n") == 1
    assert "NOTE: " + said in res.stdout


def test_template_override_dir_is_used_and_still_escapes(tmp_path: Path) -> None:
    from maillens import render
    from report_fixtures import EVIL_HELO, sample_report

    custom = tmp_path / "templates"
    custom.mkdir()
    (custom / "report.txt.j2").write_text("custom {{ r.host }} {{ r.value('received') }}\n")
    (custom / "report.html.j2").write_text("<p>{{ r.rejected_helos.rows[0][0] }}</p>\n")
    data = sample_report()
    section = {"templates": str(custom)}
    assert render.render_text(data, section) == f"custom {data.host} {data.value('received')}\n"
    html = render.render_html(data, section)
    assert EVIL_HELO not in html and "&lt;script&gt;" in html
    # templates not overridden come from the built-in set
    assert "<svg" not in render.render_mail_html(data, section)
    from maillens.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[report\] templates"):
        render.render_text(data, {"templates": str(tmp_path / "nope")})
    (custom / "report.txt.j2").write_text("{% if %}\n")
    with pytest.raises(ConfigError, match="report.txt.j2"):
        render.render_text(data, section)


def test_hostile_log_fields_stay_inert(tmp_path: Path) -> None:
    """Control characters, bidi overrides and markup in log fields."""
    from maillens import render
    from maillens.reportdata import table
    from report_fixtures import sample_report

    nasty = "evil\x1b[31m\u202egnp.exe\r\nFAKE: line <b>bold</b> & \x00"
    data = sample_report(rejected_helos=table([("HELO", "text"), ("rejects", "int")], [(nasty, 1)]))
    text = render.render_text(data)
    html = render.render_html(data)
    mail_html = render.render_mail_html(data)
    for out in (text, html, mail_html):
        assert "\x1b" not in out and "\u202e" not in out and "\x00" not in out
        assert "\nFAKE: line" not in out
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt; &amp;" in html
    assert "<b>bold</b>" not in mail_html


def test_classifier_reference_is_the_corpus_end() -> None:
    """Guard for the fixture itself: the corpus's days come out as its summary says."""
    c = corpus_classifier(corpus_dir("real-postfix-dev"))
    ev = c.classify("Nov  9 08:41:19 mx postfix/postfix-script[1]: starting the Postfix mail system")
    assert ev.ts is not None and ev.ts.date() == date(2026, 11, 9)
    assert HOURLY_SERIES[0] == "received"


# -- contrib: cron.daily script and systemd units ------------------------------------------------

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def _unit(path: Path) -> Any:
    import configparser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _maillens_commands() -> list[list[str]]:
    import shlex

    commands = []
    for unit in sorted((CONTRIB / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                commands.append(shlex.split(line.split("=", 1)[1])[1:])
    script = (CONTRIB / "cron.daily" / "maillens-report").read_text()
    for m in re.finditer(r'^\s*(?:exec )?"\$MAILLENS" (.+)$', script, re.M):
        words = shlex.split(m.group(1).replace('"${MAILLENS_LOG:-/var/log/mail.log}"', "/var/log/mail.log"))
        commands.append([w if not w.startswith("$") else "x" for w in words])
    return commands


def maillens_command(tmp_path: Path) -> str:
    """The installed ``maillens`` script, else a wrapper running this interpreter's maillens."""
    import shutil as sh
    import sys

    found = sh.which("maillens")
    if found:
        return found
    wrapper = tmp_path / "maillens"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m maillens "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_contrib_commands_are_real_maillens_commands() -> None:
    commands = _maillens_commands()
    assert len(commands) >= 5
    for args in commands:
        res = CliRunner().invoke(cli, [*args, "--help"])
        assert res.exit_code == 0, (args, res.output)


def test_systemd_units_verify_and_timers(tmp_path: Path) -> None:
    from conftest import require_tool

    analyze = require_tool("systemd-analyze", reason="checks contrib/systemd units")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    maillens = maillens_command(bindir)
    tmp_path = tmp_path / "units"
    tmp_path.mkdir()
    for unit in (CONTRIB / "systemd").iterdir():  # systemd checks ExecStart binaries: point at ours
        (tmp_path / unit.name).write_text(unit.read_text().replace("=maillens ", f"={maillens} "))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["maillens-ingest.service", "maillens-ingest.timer", "maillens-report.service",
                     "maillens-report.timer"]  # fmt: skip
    res = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    ingest, report = _unit(tmp_path / "maillens-ingest.timer"), _unit(tmp_path / "maillens-report.timer")
    assert report["Timer"]["Persistent"] == "true" and ingest["Timer"]["Persistent"] == "true"
    times = []
    for spec in (ingest["Timer"]["OnCalendar"], report["Timer"]["OnCalendar"]):
        out = subprocess.run([analyze, "calendar", "--iterations=3", spec], capture_output=True, text=True,
                             check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}).stdout  # fmt: skip
        stamps = re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", out.split("Next elapse", 1)[1])
        times.append([datetime.fromisoformat(s) for s in stamps[::2][:3]] if len(stamps) > 3 else
                     [datetime.fromisoformat(s) for s in stamps[:3]])  # fmt: skip
    gaps = [{(b - a).total_seconds() for a, b in zip(t, t[1:])} for t in times]
    assert gaps == [{600.0}, {86400.0}]


def test_cron_daily_script_ingests_and_mails(tmp_path: Path) -> None:
    """The cron.daily script as cron runs it: ingest, then the report by mail
    (to an aiosmtpd server on 127.0.0.1) and as an HTML file."""
    import os
    import shutil as sh

    from test_mail import elements_by_id, parse, start_sink

    ctl, sink, port = start_sink()
    try:
        log = tmp_path / "mail.log"
        sh.copy2(corpus_dir("real-postfix-dev") / "maillog", log)
        config = tmp_path / "config.toml"
        config.write_text(
            f'[store]\ndb = "{tmp_path / "maillens.db"}"\n'
            f'[report]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\nmail_from = "maillens@example.org"\n'
            'mail_to = ["postmaster@example.org"]\nhost = "mx.example.org"\n'
        )  # fmt: skip
        maillens = maillens_command(tmp_path)
        env = {
            "MAILLENS": maillens, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MAILLENS_CONFIG": str(config),
            "MAILLENS_LOG": str(log), "MAILLENS_REPORT_DATE": "2026-11-10",
            "MAILLENS_REPORT_HTML": str(tmp_path / "report.html"), "TZ": os.environ.get("TZ", "UTC"),
        }  # fmt: skip
        script = CONTRIB / "cron.daily" / "maillens-report"
        for _run in range(2):  # the second run reads nothing new and reports the same day again
            res = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr
            assert res.stdout == res.stderr == "", res  # cron mails any output: a run that worked says nothing
            msg = parse(sink.wait()["content"])
            assert str(msg["Subject"]).startswith("[maillens] mx.example.org 2026-11-10: ")
            html = [p for p in msg.iter_parts() if p.get_content_type() == "text/html"][0].get_content()
            totals = summary_json("--db", str(tmp_path / "maillens.db"), "--date", "2026-11-10")["grand_totals"]
            ids, _ = elements_by_id(html)
            for key in ("received", "delivered", "rejected", "deferred", "bounced"):
                assert ids[f"fig-{key}"]["data-value"] == str(totals[key])
        assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    finally:
        ctl.stop()


def test_cron_daily_script_sees_local_and_sbin_directories(tmp_path: Path) -> None:
    """anacron's PATH lacks /usr/local/bin, where pip installs maillens: the job then
    exited 0 without a word and the reports stopped.  Its commands must see it (and
    the sbin directories --apply's loaders live in) whatever PATH cron gives."""
    seen = tmp_path / "path.txt"
    fake = tmp_path / "maillens"
    fake.write_text(f'#!/bin/sh\necho "$PATH" >> "{seen}"\n')
    fake.chmod(0o755)
    env = {"MAILLENS": str(fake), "PATH": "/bin", "HOME": str(tmp_path)}
    res = subprocess.run(["/bin/sh", str(CONTRIB / "cron.daily" / "maillens-report")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == res.stderr == "", res
    paths = seen.read_text().split()
    assert len(paths) == 2  # the ingest, then the report
    for directory in ("/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        assert all(directory in p.split(":") for p in paths), (directory, paths)


def test_ban_list_changes_of_the_day(tmp_path: Path) -> None:
    """After a real ``maillens bans`` run on the store, the report's one-line
    ban summary counts the bans the ban log holds for that day, per jail."""
    from datetime import timezone

    from maillens.banstore import ban_log

    # the corpus clients are on 127/8, which maillens never bans: move them to 10/8
    text = (corpus_dir("real-postfix-dev") / "maillog").read_text(errors="replace")
    log = tmp_path / "mail.log"
    log.write_text(re.sub(r"\b127\.(\d+\.\d+\.\d+)\b", r"10.\1", text))
    db = tmp_path / "store.db"
    from maillens.ingest import ingest

    ingest([str(log)], db, classify=corpus_classifier(corpus_dir("real-postfix-dev")).classify)
    before = build_report(Store.open(db, readonly=True), date(2026, 11, 9), options=ALL).bans_note
    assert "keeps none yet" in before and "maillens bans" in before
    res = CliRunner().invoke(cli, ["bans", "--db", str(db)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with Store.open(db) as store:
        log_rows = ban_log(store)
    assert log_rows, "maillens bans banned nobody on the corpus"
    with Store.open(db, readonly=True) as store:
        for day in (date(2026, 11, 9), date(2026, 11, 10)):
            note = build_report(store, day, options=ALL).bans_note
            made = Counter(r["jail"] for r in log_rows
                           if datetime.fromtimestamp(r["time"], timezone.utc).date() == day)  # fmt: skip
            ended = sum(1 for r in log_rows if r["until"] and datetime.fromtimestamp(r["until"], timezone.utc).date() == day)
            assert f"{sum(made.values())} new ban" in note and f"{ended} ran out" in note
            for jail, n in made.items():
                assert f"{jail} {n}" in note


def test_report_tables_as_pandas_frames(corpus: dict[str, Any]) -> None:
    from maillens.rollup import frames

    day = corpus["days"][0]
    data = corpus["reports"][day]
    fr = frames(data)
    assert list(fr["rbl_zones"]["reject hits"]) == [row[1] for row in data.rbl_zones.rows]
    assert int(fr["hourly"]["received"].sum()) == corpus["rollups"][day]["received"]
    assert len(fr["hourly"]) == 24
