"""The report's "Allowlist suggestions" section: ``maillens suggest`` over the report's period.

The period ends with the report's day: a report of a past day must say what
was known that evening, not what later mail revealed, and a report rebuilt
tomorrow must say the same.  It reaches back ``[suggest] since`` from there
(default: all the input has), because an allowlist judgement needs more than
one day -- retries over hours, correspondents of the month.

From log files the section is computed from the files themselves, exactly as
``maillens suggest FILES`` reads them (the store keeps no connects or FCrDNS
warnings, so a detour through the report's throw-away store would change the
evidence): the report of the files' last day lists what
``maillens suggest --format json FILES`` prints.  From the store it is
computed only when the access tables are known (``--access-client`` /
``--access-sender`` or ``[suggest] access_client`` / ``access_sender``);
without them it would re-suggest what the tables already hold, so the report
keeps its pointer line instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from maillens.events import Event
    from maillens.reportdata import Table
    from maillens.suggest import SuggestResult

@dataclass(frozen=True)
class MapPaths:
    """The access tables' source files; either may be unknown."""

    client: str | None = None
    sender: str | None = None

    @classmethod
    def resolve(cls, section: dict[str, Any], client: str | None, sender: str | None) -> "MapPaths":
        """Flags first, then ``[suggest] access_client`` / ``access_sender``."""
        return cls(client or section.get("access_client") or None, sender or section.get("access_sender") or None)

    def __bool__(self) -> bool:
        return bool(self.client or self.sender)


def until_end_of(events: Iterable["Event"], end: datetime) -> Iterator["Event"]:
    """Events before ``end``; undated ones pass, as ``maillens suggest`` keeps them."""
    for ev in events:
        if ev.ts is None or ev.ts < end:
            yield ev


def compute(
    section: dict[str, Any],
    day: date,
    *,
    files: Sequence[str] = (),
    store: Any = None,
    paths: MapPaths = MapPaths(),
    postfix: Any = None,
) -> "SuggestResult | None":
    """Suggestions over the period ending with ``day``; None when nothing can be computed."""
    from maillens.accessmap import AccessTable
    from maillens.rollup import _day_bounds
    from maillens.suggest import SuggestSettings, suggest

    if not files and not (paths and store is not None):
        return None
    options = SuggestSettings.from_section(section)
    end_ts = _day_bounds(day)[1]
    end = datetime.fromtimestamp(end_ts, timezone.utc)
    if files:
        from maillens.sources import iter_events

        # suggest() counts ``since`` back from the newest kept event: as if the log ended with the day
        events: Iterable[Event] = until_end_of(iter_events(files), end)
    else:
        from maillens.suggestdata import events_from_store

        since_ts = end_ts - options.since.total_seconds() if options.since is not None else None
        events = until_end_of(events_from_store(store, since_ts), end)
        options = dataclasses.replace(options, since=None)
    return suggest(
        events,
        client_table=AccessTable.load(paths.client) if paths.client else None,
        sender_table=AccessTable.load(paths.sender) if paths.sender else None,
        postfix=postfix, settings=options, client_path=paths.client, sender_path=paths.sender,
    )  # fmt: skip


def note(result: "SuggestResult", day: date, *, from_files: bool, since: Any) -> str:
    """The one-line summary above the table: how many of what, over which period."""
    new = result.suggestions
    ok = sum(1 for s in new if s.action.startswith("OK"))
    inert = sum(1 for s in new if s.effective is False)
    remarks = sum(1 for s in result.items if s.kind not in ("suggestion", "transient"))
    period = "the given log files" if from_files else "the store"
    period += f", {since} back from the end of {day.isoformat()}" if since else f" up to the end of {day.isoformat()}"
    head = (f"Allowlist suggestions from {period}: {ok} OK and {len(new) - ok} REJECT "
            f"entr{'y' if len(new) == 1 else 'ies'} suggested")
    if inert:
        head += f" ({inert} not effective with the current restriction order: see 'takes effect')"
    head += f", {remarks} remark{'' if remarks == 1 else 's'} on existing entries"
    return head + "; `maillens suggest` prints them ready for postmap."


def section_for(
    section: dict[str, Any],
    day: date,
    *,
    top: int,
    files: Sequence[str] = (),
    store: Any = None,
    paths: MapPaths = MapPaths(),
    postfix: Any = None,
) -> tuple["Table", str] | None:
    """The report's table and note, or None (keep the pointer line)."""
    from maillens.suggestout import report_table

    result = compute(section, day, files=files, store=store, paths=paths, postfix=postfix)
    if result is None:
        return None
    return report_table(result, top=top), note(result, day, from_files=bool(files), since=section.get("since"))
