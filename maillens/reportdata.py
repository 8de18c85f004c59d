"""What a daily report says, as plain values: the contract between rollup and render.

``rollup`` fills a ``ReportData`` (with pandas, from the store or from log
files); ``render`` and ``mail`` only read it.  Keeping it free of pandas and
jinja2 means templates, the mail composer and their tests can be exercised on
a hand-built value, and a user's template override sees simple attributes.

Every string in here that came from a log line (HELO names, addresses, reply
texts, warning messages) is attacker-controlled: templates must print it
through autoescaping and never mark it safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

#: The headline figures, in display order: key -> label.
HEADLINE_KEYS: Final = (
    ("received", "received"),
    ("delivered", "delivered"),
    ("rejected", "rejected"),
    ("deferred", "deferred"),
    ("bounced", "bounced"),
    ("expired", "expired"),
    ("sasl_failures", "SASL failures"),
    ("rejected_clients", "unique rejected clients"),
)

#: The per-hour series, in display order.
HOURLY_SERIES: Final = ("received", "delivered", "rejected", "deferred", "bounced")


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; ``kind`` tells templates how to format and align it.

    kinds: ``text`` (log data, escaped), ``int``, ``pct`` (a fraction 0..1),
    ``bytes``, ``list`` (a tuple of strings shown comma-separated).
    """

    label: str
    kind: str = "text"

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "pct", "bytes")


@dataclass(frozen=True, slots=True)
class Table:
    """Rows for one report table; ``more`` counts rows cut by the top-N limit."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...] = ()
    more: int = 0

    def __bool__(self) -> bool:  # a section is shown only when it has data
        return bool(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, index: int) -> list[Any]:
        return [row[index] for row in self.rows]


def table(columns: list[tuple[str, str]] | tuple[tuple[str, str], ...], rows: Any = (), more: int = 0) -> Table:
    """Shorthand: ``table([("zone", "text"), ("hits", "int")], rows)``."""
    return Table(tuple(Column(label, kind) for label, kind in columns), tuple(tuple(r) for r in rows), more)


@dataclass(frozen=True, slots=True)
class Figure:
    """One headline number with what it is compared against.

    ``previous`` is the value on the day before and ``average7`` the mean of
    the seven days before the report day; both are ``None`` when the data
    source has no such days (a single log file), so no fake "+100 %" appears.
    """

    key: str
    label: str
    value: int
    previous: int | None = None
    average7: float | None = None
    note: str = ""
    anchor: str = ""

    @staticmethod
    def _change(value: float, base: float | None) -> float | None:
        if base is None or base == 0:
            return None
        return (value - base) / base

    @property
    def change_previous(self) -> float | None:
        """Relative change against the previous day (0.25 = +25 %), or None."""
        return self._change(self.value, self.previous)

    @property
    def change_average7(self) -> float | None:
        return self._change(self.value, self.average7)


@dataclass(frozen=True, slots=True)
class HourRow:
    hour: int
    received: int = 0
    delivered: int = 0
    rejected: int = 0
    deferred: int = 0
    bounced: int = 0

    def value(self, series: str) -> int:
        return int(getattr(self, series))


def empty_hours() -> tuple[HourRow, ...]:
    return tuple(HourRow(h) for h in range(24))


@dataclass(frozen=True)
class ReportData:
    """Everything one day's report shows.  Empty tables mean "section hidden"."""

    host: str
    day: date
    generated_at: datetime
    source: str
    headline: tuple[Figure, ...] = ()
    connections: int = 0
    hourly: tuple[HourRow, ...] = field(default_factory=empty_hours)
    rejects_by_restriction: Table = field(default_factory=lambda: table([("restriction", "text")]))
    rejects_by_stage: Table = field(default_factory=lambda: table([("stage", "text")]))
    rbl_zones: Table = field(default_factory=lambda: table([("zone", "text")]))
    #: zones in main.cf that rejected nobody; None when main.cf is not known.
    rbl_unused: tuple[str, ...] | None = None
    spf_results: Table = field(default_factory=lambda: table([("result", "text")]))
    spf_fail_domains: Table = field(default_factory=lambda: table([("domain", "text")]))
    rejected_clients: Table = field(default_factory=lambda: table([("client", "text")]))
    rejected_helos: Table = field(default_factory=lambda: table([("helo", "text")]))
    rejected_sender_domains: Table = field(default_factory=lambda: table([("domain", "text")]))
    senders_by_count: Table = field(default_factory=lambda: table([("sender", "text")]))
    senders_by_size: Table = field(default_factory=lambda: table([("sender", "text")]))
    recipients_by_count: Table = field(default_factory=lambda: table([("recipient", "text")]))
    recipients_by_size: Table = field(default_factory=lambda: table([("recipient", "text")]))
    bounces_by_domain: Table = field(default_factory=lambda: table([("domain", "text")]))
    deferrals_by_domain: Table = field(default_factory=lambda: table([("domain", "text")]))
    expired: Table = field(default_factory=lambda: table([("queue id", "text")]))
    sasl_by_client: Table = field(default_factory=lambda: table([("client", "text")]))
    sasl_by_username: Table = field(default_factory=lambda: table([("username", "text")]))
    problems: Table = field(default_factory=lambda: table([("level", "text")]))
    #: one-line summaries: the ban list's changes of the day; the allowlist
    #: suggestions' counts, or a pointer when they cannot be computed.
    bans_note: str = ""
    suggest_note: str = ""
    #: what part of the day the data covers when not all of it (``rollup.coverage``)
    coverage_note: str = ""
    #: the store stops before this day: nothing was ingested for it
    store_behind: bool = False
    #: ``maillens suggest`` over the period ending with the day (empty when not computed):
    #: map, entry, action, finding, score, takes effect, evidence (see ``suggestout.report_table``).
    suggestions: Table = field(default_factory=lambda: table([("map", "text")]))

    def figure(self, key: str) -> Figure | None:
        return next((f for f in self.headline if f.key == key), None)

    def value(self, key: str) -> int:
        fig = self.figure(key)
        return fig.value if fig is not None else 0

    @property
    def has_traffic(self) -> bool:
        return any(row.value(s) for row in self.hourly for s in HOURLY_SERIES)
