"""Templates -> text: the report as a self-contained HTML file, plain text, mail HTML.

Templates are jinja2 files shipped in ``reports/`` (the ``maillens.reports``
package); a directory named by ``[report] templates`` in the config is searched
first, so a user overrides one file by dropping a file of the same name there.

Everything printed from a ``ReportData`` may have come from a log line and is
attacker-controlled.  So HTML templates are autoescaped (even user overrides:
autoescaping is decided here, by file name, not by the template), and every
printed value passes through ``_finalize`` which drops control characters that
could corrupt a terminal or a mail body.  Charts are drawn from numbers only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from maillens.errors import ConfigError
from maillens.reportdata import HOURLY_SERIES, Column, ReportData

if TYPE_CHECKING:  # pragma: no cover
    import jinja2

HTML_TEMPLATE = "report.html.j2"
TEXT_TEMPLATE = "report.txt.j2"
MAIL_TEMPLATE = "mail.html.j2"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ONE_LINE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def one_line(value: Any) -> str:
    """A log field as one line of plain characters (no breaks, no bidi tricks)."""
    return _ONE_LINE.sub("\N{REPLACEMENT CHARACTER}", "" if value is None else str(value))


def builtin_template_dir() -> Path:
    return Path(str(resources.files("maillens.reports")))


def user_template_dir(section: Mapping[str, Any] | None) -> Path | None:
    """The ``[report] templates`` directory, validated: it must exist."""
    if not section or not section.get("templates"):
        return None
    path = Path(str(section["templates"])).expanduser()
    if not path.is_dir():
        raise ConfigError(f"[report] templates = {str(path)!r} is not a directory; create it or remove the key")
    return path


def _finalize(value: Any) -> Any:
    """Applied to every ``{{ }}``: no ``None`` printed, no control characters.

    Line breaks survive here because macros and ``texttable`` return several
    lines; single log fields lose theirs earlier (``one_line`` in ``cell``,
    ``ReportData`` for host and source), so a field cannot fake a line.
    Markup stays Markup: swapping a character for U+FFFD cannot open a tag.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        cleaned = _CONTROL.sub("\N{REPLACEMENT CHARACTER}", value)
        return type(value)(cleaned) if hasattr(value, "__html__") else cleaned
    return value


def _autoescape(name: str | None) -> bool:
    # Decided by name, so an override template cannot switch escaping off by
    # being named differently than ours: only .txt templates are not HTML.
    return not (name or "").endswith((".txt", ".txt.j2"))


def environment(section: Mapping[str, Any] | None = None) -> "jinja2.Environment":
    """A jinja2 environment over the user's template dir (if any), then ours."""
    import jinja2

    dirs = [str(p) for p in (user_template_dir(section), builtin_template_dir()) if p is not None]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs),
        autoescape=_autoescape,
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=fmt_num,
        pct=fmt_pct,
        change=fmt_change,
        size=fmt_bytes,
        cell=fmt_cell,
        clip=clip,
        texttable=text_table,
        textrecords=text_records,
        line=one_line,
        lpad=lambda v, w: str(v).rjust(int(w)),
        rpad=lambda v, w: str(v).ljust(int(w)),
    )
    env.globals.update(series=HOURLY_SERIES, chart=hour_chart, bar=bar_width)
    return env


# -- formatting ---------------------------------------------------------------


def fmt_num(value: Any) -> str:
    """Integers plainly (``1198``), averages with one decimal."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return str(int(value))


def fmt_pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.{digits}f}%"


def fmt_change(value: float | None) -> str:
    """``+12%`` / ``-3%`` / ``±0%``; empty when there is nothing to compare with."""
    if value is None:
        return ""
    pct = round(value * 100)
    return "±0%" if pct == 0 else f"{pct:+d}%"


def fmt_bytes(value: Any) -> str:
    """pflogsumm's style: bytes up to 512k, then k, then m."""
    n = int(value or 0)
    if n > 512 * 1024 * 1024:
        return f"{n // (1024 * 1024)}m"
    if n > 512 * 1024:
        return f"{n // 1024}k"
    return str(n)


def fmt_cell(value: Any, column: Column) -> str:
    if column.kind == "int":
        return fmt_num(value)
    if column.kind == "pct":
        return fmt_pct(value)
    if column.kind == "bytes":
        return fmt_bytes(value)
    if column.kind == "list":
        return one_line(", ".join(str(v) for v in (value or ())))
    return one_line(value)


def text_table(t: Any, indent: int = 3, width: int = 70) -> Any:
    """A pflogsumm-style block: numbers right-aligned, text left, last column free.

    Layout is computed here rather than in jinja because column widths depend
    on every row; the cell *content* is still the template's ``cell`` format.
    """
    from markupsafe import Markup

    # Markup so that _finalize keeps the line breaks; every cell is cleaned
    # in _text_lines, and text templates are not HTML-escaped anyway.
    return Markup("\n".join(_text_lines(list(t.columns), t.rows, indent, width)))


def text_records(t: Any, details: int = 1, indent: int = 3, width: int = 76, limit: int = 1000) -> Any:
    """Like ``texttable``, but the last ``details`` columns (evidence, warnings)
    go under their row, labelled, wrapped and not cut at ``width``, so the
    text part keeps every fact."""
    import textwrap

    from markupsafe import Markup

    cols = list(t.columns)
    split = len(cols) - details
    lines = _text_lines(cols[:split], [row[:split] for row in t.rows], indent, width)
    out = lines[:1]
    pad = " " * (indent + 4)
    for line, row in zip(lines[1:], t.rows):
        out.append(line)
        for value, col in zip(row[split:], cols[split:]):
            text = _finalize(clip(fmt_cell(value, col), limit))
            if text:
                out.extend(textwrap.wrap(f"{col.label}: {text}", width=width + indent, initial_indent=pad,
                                         subsequent_indent=pad, break_long_words=False, break_on_hyphens=False))
    return Markup("\n".join(out))


def _text_lines(cols: list[Column], rows: Any, indent: int, width: int) -> list[str]:
    """Header and rows, columns padded to their widest cell."""
    cells = [[_finalize(clip(fmt_cell(v, c), width)) for v, c in zip(row, cols)] for row in rows]
    widths = [max([len(c.label)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    lines = []
    for row in [[c.label for c in cols]] + cells:
        parts = []
        for i, (text, col) in enumerate(zip(row, cols)):
            last = i == len(cols) - 1
            if col.numeric:
                parts.append(text.rjust(widths[i]))
            else:
                parts.append(text if last else text.ljust(widths[i]))
        lines.append(" " * indent + "  ".join(parts).rstrip())
    return lines


def clip(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def bar_width(value: float, maximum: float, full: float = 100.0) -> float:
    """Share of ``full`` for a bar; a non-zero value always gets a visible sliver."""
    if not maximum or not value:
        return 0.0
    return max(round(full * value / maximum, 1), 0.5)


# -- the per-hour chart ---------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    hour: int
    value: int


@dataclass(frozen=True)
class ChartRow:
    """One series of the small-multiples chart: 24 bars scaled to its own peak."""

    series: str
    total: int
    peak: int
    top: float
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class HourChart:
    width: float
    height: float
    label_width: float
    row_height: float
    rows: tuple[ChartRow, ...]
    ticks: tuple[tuple[float, str], ...]


def hour_chart(hourly: Any, width: float = 720.0, row_height: float = 44.0) -> HourChart:
    """Geometry for an inline SVG: one row per series so a small series is not
    flattened by a big one (rejects often dwarf deliveries)."""
    label_width = 110.0
    plot = width - label_width - 8
    slot = plot / 24
    rows = []
    for i, series in enumerate(HOURLY_SERIES):
        values = [row.value(series) for row in hourly]
        peak = max(values) if values else 0
        top = i * row_height + 4
        inner = row_height - 12
        bars = []
        for hour, v in enumerate(values):
            h = (inner * v / peak) if peak else 0.0
            if v and h < 1:
                h = 1.0
            bars.append(Bar(round(label_width + hour * slot + 1, 2), round(top + inner - h, 2),
                            round(slot - 2, 2), round(h, 2), hour, v))
        rows.append(ChartRow(series, sum(values), peak, top, tuple(bars)))
    height = len(HOURLY_SERIES) * row_height + 14
    ticks = tuple((round(label_width + h * slot + slot / 2, 2), f"{h:02d}") for h in range(0, 24, 3))
    return HourChart(width, height, label_width, row_height, tuple(rows), ticks)


# -- entry points -----------------------------------------------------------------


def _context(data: ReportData) -> dict[str, Any]:
    return {"r": data, "weekday": data.day.strftime("%A") if isinstance(data.day, date) else ""}


def render(name: str, data: ReportData, section: Mapping[str, Any] | None = None) -> str:
    import jinja2

    try:
        return environment(section).get_template(name).render(_context(data))
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"report template {exc.name!r} not found in [report] templates or the built-in set") from None
    except jinja2.TemplateError as exc:
        where = f"{getattr(exc, 'filename', None) or name}:{getattr(exc, 'lineno', '?')}"
        raise ConfigError(f"report template {where}: {exc}; fix the template override") from None


def render_html(data: ReportData, section: Mapping[str, Any] | None = None) -> str:
    """The self-contained HTML file: inline CSS and SVG, nothing fetched."""
    return render(HTML_TEMPLATE, data, section)


def render_text(data: ReportData, section: Mapping[str, Any] | None = None) -> str:
    """The plain-text report, pflogsumm-like, also the mail's text part.

    Blank-line runs left by hidden sections are squeezed here, so templates
    can stay readable instead of fighting jinja's whitespace control.
    """
    text = render(TEXT_TEMPLATE, data, section)
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"


def render_mail_html(data: ReportData, section: Mapping[str, Any] | None = None) -> str:
    """The mail's HTML part: table-bar charts (no SVG), CSS inlined per element.

    ``<style>`` is kept as well, for the dark-mode media query that cannot be
    inlined; clients that drop it still get the inlined light styles.
    """
    import css_inline

    html = render(MAIL_TEMPLATE, data, section)
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    return inliner.inline(html)
