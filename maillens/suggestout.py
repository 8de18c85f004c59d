"""Suggestions as text a postmaster can use: postmap lines, JSON, or a diff of the table.

Evidence goes on ``#`` lines *above* each entry: postmap ignores comment
lines, but a ``#`` after a value is part of the value (it would become the
reply text of a REJECT).  An entry the current restriction order would
ignore is written commented out, with the configuration change it needs,
so copying lines never installs an entry that silently does nothing.
"""

from __future__ import annotations

import difflib
import json
import textwrap
from typing import TYPE_CHECKING, Iterable

from maillens.accessmap import comment_lines, format_line
from maillens.suggest import CLIENT_MAP, SENDER_MAP, Suggestion, SuggestResult

if TYPE_CHECKING:  # pragma: no cover
    from maillens.reportdata import Table

_CHECK = {CLIENT_MAP: "check_client_access", SENDER_MAP: "check_sender_access"}
_FLAG_WORDS = {
    "conflict": "CONFLICT",
    "stale": "STALE",
    "inert": "INERT",
    "ineffective": "NOT EFFECTIVE",
    "transient": "NO ENTRY NEEDED",
}


def _wrap(facts: Iterable[str], indent: str = "  ") -> list[str]:
    text = "; ".join(facts)
    return textwrap.wrap(text, width=96, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [indent]


def entry_lines(item: Suggestion) -> list[str]:
    """Comment lines with the evidence, then the entry (commented out if it would not work)."""
    head = f"score {item.score:.1f}: {item.evidence[0] if item.evidence else ''}"
    lines = comment_lines(head) + comment_lines("\n".join(_wrap(item.evidence[1:])))
    entry = format_line(item.key, item.action)
    if item.effective is False:
        lines += comment_lines("\n".join(_wrap([f"NOT EFFECTIVE with the current configuration: "
                                                  f"{item.config_change}"], indent="")))
        lines += comment_lines("Make that change first, then uncomment:")
        lines.append(f"# {entry}")
    else:
        if item.effective is None and item.config_change:
            lines += comment_lines(f"note: {item.config_change}")
        lines.append(entry)
    return lines


def flag_lines(item: Suggestion) -> list[str]:
    where = f"line {item.lineno}: " if item.lineno else ""
    head = f"{_FLAG_WORDS.get(item.kind, item.kind.upper())}: {where}{item.key}"
    if item.action and item.action != "none":
        head += f" {item.action}"
    lines = comment_lines(head) + comment_lines("\n".join(_wrap(item.evidence)))
    if item.config_change:
        lines += comment_lines("\n".join(_wrap([f"change: {item.config_change}"])))
    return lines


def to_postmap(result: SuggestResult, paths: dict[str, str | None]) -> str:
    """Both maps' sections, ready to review and paste into the tables."""
    out = comment_lines("maillens suggest: " + "; ".join(result.notes))
    for map_name in (CLIENT_MAP, SENDER_MAP):
        items = [i for i in result.items if i.map == map_name]
        target = paths.get(map_name) or map_name
        out += ["", *comment_lines(f"=== {target} ({_CHECK[map_name]}): review, copy, then run: postmap {target}")]
        suggestions = [i for i in items if i.kind == "suggestion"]
        if not suggestions:
            out += comment_lines("no new entries suggested")
        for item in suggestions:
            out += ["", *entry_lines(item)]
        flags = [i for i in items if i.kind != "suggestion"]
        if flags:
            out += ["", *comment_lines("--- existing entries and other findings")]
            for item in flags:
                out += flag_lines(item)
    return "\n".join(out) + "\n"


def to_json(result: SuggestResult) -> str:
    """A list of objects: ``map``, ``key``, ``action``, ``score``, ``evidence`` and more."""
    return json.dumps([i.to_dict() for i in result.items], indent=2, ensure_ascii=False) + "\n"


def proposed_table(original: str, items: list[Suggestion]) -> str:
    """The table text with conflicts commented out, flags annotated and suggestions appended."""
    lines = original.split("\n")
    trailing = lines and lines[-1] == ""
    if trailing:
        lines = lines[:-1]
    notes: dict[int, list[str]] = {}
    disable: set[int] = set()
    for item in items:
        if item.kind in ("conflict", "stale", "inert", "ineffective") and item.lineno:
            notes.setdefault(item.lineno, []).extend(
                comment_lines(f"maillens: {_FLAG_WORDS[item.kind]}: " + "; ".join(item.evidence)))
            if item.kind == "conflict":
                disable.add(item.lineno)
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        out.extend(notes.get(number, []))
        out.append(f"# {line}" if number in disable else line)
    added = [i for i in items if i.kind == "suggestion"]
    if added:
        out += ["", *comment_lines("added by maillens suggest")]
        for item in added:
            out += entry_lines(item)
    return "\n".join(out) + "\n"


def to_diff(result: SuggestResult, tables: dict[str, tuple[str | None, str]]) -> str:
    """Unified diffs of each table: ``tables`` maps a map name to (path, current text)."""
    chunks: list[str] = []
    for map_name in (CLIENT_MAP, SENDER_MAP):
        path, text = tables.get(map_name, (None, ""))
        items = [i for i in result.items if i.map == map_name and i.kind != "transient"]
        if not items:
            continue
        new = proposed_table(text, items)
        name = path or map_name
        chunks.extend(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                           fromfile=f"a/{name.lstrip('/')}", tofile=f"b/{name.lstrip('/')}"))
    return "".join(chunks)


def report_table(result: SuggestResult, top: int = 20) -> "Table":
    """The report's "Access-map suggestions" section as a ``reportdata.Table``.

    One row per suggestion and per flagged existing entry (conflicts first);
    the evidence is joined into one cell, since the report only points the
    admin at ``maillens suggest`` for the copy-ready lines.
    """
    from maillens.reportdata import table

    rows = []
    for item in result.items:
        if item.kind == "transient":
            continue
        what = "suggested" if item.kind == "suggestion" else item.kind
        effect = {True: "yes", False: "no: " + (item.config_change or ""), None: ""}[item.effective]
        rows.append((item.map, item.key, item.action, what, round(item.score, 1), effect,
                     "; ".join(item.evidence)))
    columns = [("map", "text"), ("entry", "text"), ("action", "text"), ("finding", "text"),
               ("score", "int"), ("takes effect", "text"), ("evidence", "text")]
    return table(columns, rows[:top], more=max(0, len(rows) - top))
