"""``parse --stats``: what a log contains, by kind, restriction and RBL zone.

Also the honesty report the brief asks for: how many lines were ``unparsed``
(no syslog envelope), ``other`` (a known program but no rule) or rejects whose
restriction is ``unknown`` -- each listed with examples so a rule can be added.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from maillens.events import Event

_SHAPE_DIGITS = re.compile(r"\d+")
_SHAPE_QID = re.compile(r"\b[0-9A-Z]{10,}\b|\b[0-9A-Za-z]{12,16}\b")
MAX_EXAMPLES = 50
MAX_SHAPES = 5000  # hostile input cannot grow the table of unknown line shapes without bound


def line_shape(event: Event) -> str:
    """A line's message with its variable parts blurred, to group unknown lines."""
    text = _SHAPE_QID.sub("QUEUEID", event.message[:160])
    return f"{event.program or '?'}: {_SHAPE_DIGITS.sub('N', text)}"


@dataclass
class ParseStats:
    lines: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    rejects: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, restriction)
    restrictions: Counter[str] = field(default_factory=Counter)
    rbl_zones: Counter[str] = field(default_factory=Counter)
    warnings_by_restriction: Counter[str] = field(default_factory=Counter)
    spf: Counter[str] = field(default_factory=Counter)
    sasl_methods: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)
    unexplained: Counter[tuple[str, str]] = field(default_factory=Counter)  # (what, shape)
    examples: dict[tuple[str, str], tuple[str, int, str]] = field(default_factory=dict)  # (source, lineno, text)

    def add(self, ev: Event) -> None:
        self.count(ev.kind, ev.data, ev)

    def count(self, kind: str, data: Mapping[str, Any], event: Event | Callable[[], Event]) -> None:
        """Count one line of ``kind`` with its fields ``data``.

        ``event`` is the line's Event, or a function that makes it: only lines
        listed as not understood need one, so the fast scanner builds it then.
        """
        self.lines += 1
        self.kinds[kind] += 1
        if kind == "reject":
            restriction = data.get("restriction", "unknown")
            self.restrictions[restriction] += 1
            self.rejects[(data.get("stage") or "?", restriction)] += 1
            if data.get("rbl"):
                self.rbl_zones[data["rbl"]] += 1
            if restriction == "unknown":
                self._unexplained("restriction unknown", event if isinstance(event, Event) else event())
        elif kind == "reject_warning":
            self.warnings_by_restriction[data.get("restriction", "unknown")] += 1
        elif kind == "spf":
            self.spf[data.get("spf_result", "none")] += 1
        elif kind == "sasl_failure":
            self.sasl_methods[data.get("sasl_method") or "?"] += 1
        elif kind == "delivery":
            self.deliveries[data.get("status") or "?"] += 1
        elif kind in ("other", "unparsed"):
            self._unexplained(kind, event if isinstance(event, Event) else event())

    def _unexplained(self, what: str, ev: Event) -> None:
        key = (what, line_shape(ev) if what != "unparsed" else ev.raw[:80])
        if key not in self.unexplained and len(self.unexplained) >= MAX_SHAPES:
            key = (what, "(more shapes than are listed)")
        self.unexplained[key] += 1
        if key not in self.examples and len(self.examples) < 10 * MAX_EXAMPLES:
            self.examples[key] = (ev.source or "-", ev.lineno or 0, ev.raw[:300])

    def merge(self, other: "ParseStats", line_offset: int = 0) -> None:
        """Add another partial count (from a worker process) into this one.

        ``line_offset`` shifts the line numbers of the other's examples, for a
        worker that counted a block's lines from 1.
        """
        self.lines += other.lines
        for name in ("kinds", "rejects", "restrictions", "rbl_zones", "warnings_by_restriction", "spf",
                     "sasl_methods", "deliveries", "unexplained"):
            getattr(self, name).update(getattr(other, name))
        for key, (source, lineno, text) in other.examples.items():
            if key not in self.examples and len(self.examples) < 10 * MAX_EXAMPLES:
                self.examples[key] = (source, lineno + line_offset, text)

    def example(self, key: tuple[str, str]) -> str | None:
        found = self.examples.get(key)
        return None if found is None else f"{found[0]}:{found[1]}: {found[2]}"

    def extend(self, events: Iterable[Event]) -> "ParseStats":
        for ev in events:
            self.add(ev)
        return self

    def share(self, what: str) -> float:
        count = self.kinds.get(what, 0) if what != "restriction unknown" else self.restrictions.get("unknown", 0)
        return count / self.lines if self.lines else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "kinds": dict(self.kinds.most_common()),
            "rejects_by_restriction": dict(self.restrictions.most_common()),
            "rejects_by_stage_and_restriction": {f"{s} {r}": n for (s, r), n in self.rejects.most_common()},
            "rbl_zones": dict(self.rbl_zones.most_common()),
            "reject_warnings_by_restriction": dict(self.warnings_by_restriction.most_common()),
            "spf_results": dict(self.spf.most_common()),
            "sasl_failures_by_method": dict(self.sasl_methods.most_common()),
            "delivery_status": dict(self.deliveries.most_common()),
            "unexplained": [
                {"what": what, "shape": shape, "count": n, "example": self.example((what, shape))}
                for (what, shape), n in self.unexplained.most_common(MAX_EXAMPLES)
            ],
        }

    def render_text(self) -> str:
        out: list[str] = []
        total = self.lines or 1

        def section(title: str, counter: Counter[str]) -> None:
            if not counter:
                return
            out.append(f"\n{title}")
            width = max(len(k) for k in counter)
            for key, n in counter.most_common():
                out.append(f"  {key:<{width}}  {n:>9}  {100 * n / total:6.2f}%")

        out.append(f"lines read: {self.lines}")
        section("Lines by kind", self.kinds)
        section("Rejects by restriction", self.restrictions)
        if self.rejects:
            out.append("\nRejects by SMTP stage")
            stages: Counter[str] = Counter()
            for (stage, _), n in self.rejects.items():
                stages[stage] += n
            for stage, n in stages.most_common():
                out.append(f"  {stage:<16}  {n:>9}")
        section("RBL zones (rejects)", self.rbl_zones)
        section("Reject warnings (warn_if_reject) by restriction", self.warnings_by_restriction)
        section("SPF results", self.spf)
        section("SASL failures by method", self.sasl_methods)
        section("Deliveries by status", self.deliveries)
        out.append("\nNot understood (add a rule in parsers/ or a rules directory):")
        if not self.unexplained:
            out.append("  none")
        for (what, shape), n in self.unexplained.most_common(MAX_EXAMPLES):
            out.append(f"  {n:>7}  {what}: {shape}")
            example = self.example((what, shape))
            if example:
                out.append(f"           e.g. {example}")
        return "\n".join(out).lstrip("\n") + "\n"
