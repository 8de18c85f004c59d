"""The report's "Allowlist suggestions" section against ``maillens suggest`` and the corpus truth.

Oracles: the ``maillens suggest --format json`` command's own output for the
same input (computed here, never copied into the test), and the corpus's
``suggest_truth.json`` (every required suggestion, the restriction-order
warnings, stale and conflicting entries, no entry for transient refusals).
The section is read back from what the reader gets: the HTML file's table,
the mail's HTML part and the plain-text part.  (Kept apart from
test_report.py, which is about the day's figures, to stay under the module
size guideline.)
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import corpus_dir
from maillens.cli.main import cli
from report_fixtures import ingest_corpus

CORPUS = "real-postfix-suggest-dev"
TRUTH_GROUPS = ("ok_access_client", "ok_access_sender", "reject_access_client", "reject_access_sender")


def _run(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _maps(d: Path) -> list[str]:
    return ["--access-client", str(d / "config/access.client"), "--access-sender", str(d / "config/access.sender"),
            "--postfix-config", str(d / "config")]  # fmt: skip


def expected_rows(items: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The command's JSON items as the section's cells: every item but the
    transient ones (no entry needed), in the command's order."""
    rows = []
    for i in items:
        if i["kind"] == "transient":
            continue
        effect = {True: "yes", False: f"no: {i['config_change']}", None: ""}[i["effective_with_current_config"]]
        finding = "suggested" if i["kind"] == "suggestion" else i["kind"]
        rows.append((i["map"], i["key"], i["action"], finding, f"{i['score']:g}", effect, "; ".join(i["evidence"])))
    return rows


class _SectionTable(HTMLParser):
    """The cell texts of the table inside ``<section id="suggestions">``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inside = False
        self.rows: list[list[str]] = []
        self.note = ""
        self._cell: list[str] | None = None
        self._in_note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.inside = dict(attrs).get("id") == "suggestions"
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self._cell = []
        elif self.inside and tag == "p" and "note" in (dict(attrs).get("class") or ""):
            self._in_note = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.inside = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "p":
            self._in_note = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_note:
            self.note += data


def section_of(html: str) -> tuple[str, list[tuple[str, ...]]]:
    parser = _SectionTable()
    parser.feed(html)
    return parser.note, [tuple(r) for r in parser.rows if r]  # the header row has no <td>


def text_section(text: str) -> str:
    """The plain-text part's section, whitespace folded (evidence is wrapped there)."""
    part = text.split("\nAllowlist suggestions\n", 1)[1]
    part = re.split(r"\n\n(?=\S)", part.split("\n", 2)[2], maxsplit=1)[0]  # up to the next heading
    return " ".join(part.split())


def _truth() -> dict[str, Any]:
    return json.loads((corpus_dir(CORPUS) / "suggest_truth.json").read_text())


def check_truth(rows: list[tuple[str, ...]]) -> None:
    """The corpus truth's required findings, as the report shows them."""
    truth = _truth()
    suggested = {(r[0], r[1]): r for r in rows if r[3] == "suggested"}
    maps = {"ok_access_client": "access.client", "ok_access_sender": "access.sender",
            "reject_access_client": "access.client", "reject_access_sender": "access.sender"}  # fmt: skip
    for group in TRUTH_GROUPS:
        for entry in truth[group]:
            hits = [suggested[(maps[group], k)] for k in entry["keys"] if (maps[group], k) in suggested]
            if entry.get("optional") and not hits:
                continue
            assert len(hits) == 1, (group, entry["key"])
            row = hits[0]
            assert row[2].split()[0] == entry["action"], entry["key"]
            if entry.get("effective_with_current_config") is False:
                assert row[5].startswith("no: ") and len(row[5]) > 10, entry["key"]  # the warning and its fix
            elif entry.get("effective_with_current_config") is True:
                assert row[5] == "yes", entry["key"]
    by_finding = {(r[3], r[1]) for r in rows}
    for entry in truth["stale_entries"]:
        assert ("stale", entry["key"]) in by_finding
    for entry in truth["conflict_entries"]:
        assert ("conflict", entry["key"]) in by_finding
    for entry in truth["no_entry_needed"]:
        assert not any(entry["key"] in (r[1], r[1].lstrip(".")) for r in rows), entry["key"]
    abusive = set(truth["abusive_clients"]) | set(truth["abusive_sender_domains"])
    assert abusive and not any(r[1] in abusive and r[2] == "OK" and r[3] == "suggested" for r in rows)


@pytest.fixture(scope="module")
def from_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The report of the log's last day (the default with files), as HTML, text and mail HTML."""
    from maillens import render, reporting
    from maillens.config import Settings

    d = corpus_dir(CORPUS)
    log = str(d / "maillog")
    work = tmp_path_factory.mktemp("report-suggest")
    html, text = work / "r.html", work / "r.txt"
    _run("report", log, "--top", "1000", "--host", "mx.example.org", *_maps(d), "--html", str(html),
         "--text", str(text))  # fmt: skip
    data = reporting.build(Settings({}), {"top": 1000},
                           day=None, files=[log], postfix_config=str(d / "config"),
                           access_client=str(d / "config/access.client"),
                           access_sender=str(d / "config/access.sender"))  # fmt: skip
    items = json.loads(_run("suggest", "--format", "json", *_maps(d), log))
    return {"html": html.read_text(), "text": text.read_text(), "mail": render.render_mail_html(data),
            "items": items, "data": data}


def test_section_lists_what_suggest_prints(from_files: dict[str, Any]) -> None:
    want = expected_rows(from_files["items"])
    assert any(r[3] == "suggested" for r in want) and any(r[5].startswith("no: ") for r in want)
    for name in ("html", "mail"):
        note, rows = section_of(from_files[name])
        assert rows == want, name
        suggested = [i for i in from_files["items"] if i["kind"] == "suggestion"]
        ok = sum(1 for i in suggested if i["action"] == "OK")
        assert f"{ok} OK and {len(suggested) - ok} REJECT entries suggested" in note
    text = text_section(from_files["text"])
    position = 0
    for row in want:  # every fact, in order, in the text part too
        head = re.compile(r"\s+".join(map(re.escape, (row[0], row[1], *row[2].split(), row[3], row[4]))))
        m = head.search(text, position)
        assert m, row[:5]
        position = m.end()
        detail = (f"takes effect: {row[5]} " if row[5] else "") + f"evidence: {row[6]}"
        assert text[position:].startswith(" " + " ".join(detail.split())), row[:2]
    check_truth(want)


def test_section_cut_to_the_day(tmp_path: Path) -> None:
    """A past day's section knows only that day and before: the report of the
    first day equals ``maillens suggest`` on the log cut at midnight."""
    d = corpus_dir(CORPUS)
    lines = (d / "maillog").read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    first = [line for line in lines if line.startswith("Nov 16")]
    assert 0 < len(first) < len(lines)
    cut = tmp_path / "maillog-16"
    cut.write_text("".join(first), encoding="utf-8")
    cut_items = json.loads(_run("suggest", "--format", "json", *_maps(d), str(cut)))
    html = tmp_path / "r.html"
    _run("report", str(d / "maillog"), "--date", "2026-11-16", "--top", "1000", *_maps(d), "--html", str(html))
    note, rows = section_of(html.read_text())
    assert rows == expected_rows(cut_items)
    assert "up to the end of 2026-11-16" in note
    whole = json.loads(_run("suggest", "--format", "json", *_maps(d), str(d / "maillog")))
    assert expected_rows(whole) != rows  # the cut is real: the last minutes changed the evidence


def test_store_section_needs_the_tables_and_equals_suggest_db(tmp_path: Path) -> None:
    """From the store: pointer line without access tables; with them (here
    from ``[suggest]`` in the config file) what ``maillens suggest --db`` prints."""
    from maillens.rollup import SUGGEST_NOTE

    d = corpus_dir(CORPUS)
    db = ingest_corpus(d, tmp_path / "store.db")
    common = ["--db", str(db), "--postfix-config", str(d / "config")]
    html = tmp_path / "plain.html"
    _run("report", *common, "--date", "2026-11-17", "--html", str(html))
    note, rows = section_of(html.read_text())
    assert rows == [] and note == SUGGEST_NOTE
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[suggest]\naccess_client = "{d / "config/access.client"}"\n'
                   f'access_sender = "{d / "config/access.sender"}"\n')  # fmt: skip
    items = json.loads(_run("--config", str(cfg), "suggest", "--format", "json", *common))
    _run("--config", str(cfg), "report", *common, "--date", "2026-11-17", "--top", "1000", "--html", str(html))
    note, rows = section_of(html.read_text())
    assert rows == expected_rows(items) and "from the store up to the end of 2026-11-17" in note
    check_truth(rows)
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[suggest]\naccess_client = "{tmp_path / "missing"}"\n')
    res = CliRunner().invoke(cli, ["--config", str(bad), "report", *common, "--date", "2026-11-17"])
    assert res.exit_code != 0 and "missing" in res.output


def test_hostile_suggestion_cells_stay_text() -> None:
    from maillens import render
    from report_fixtures import EVIL_HELO, sample_report

    data = sample_report()
    assert EVIL_HELO in data.suggestions.rows[0][6]
    for html in (render.render_html(data), render.render_mail_html(data)):
        assert EVIL_HELO not in html and "&lt;script&gt;" in html
        _note, rows = section_of(html)
        # the same text, breaks and escape characters shown as U+FFFD
        assert rows[0][6] == re.sub(r"[\r\n\x1b]", "\N{REPLACEMENT CHARACTER}", data.suggestions.rows[0][6])
    text = render.render_text(data)
    assert "\nFAKE" not in text and "\x1b" not in text
    assert re.search(r"access\.client\s+mail\.evil\.example\s+OK\s+suggested\s+12\.5\n", text)
    assert EVIL_HELO in text  # plain text: shown as it is, one line
