"""The pflogsumm-parity summary: data from a Counter or the store, text or JSON out.

``SummaryData`` is one shape for both sources: ``from_counter`` (files read
now) and ``from_store`` (a day range of rollups), so ``maillens summary FILE``
and ``maillens summary --date D`` print the same thing for the same lines.
The text layout follows pflogsumm 1.1.5 section by section (same titles, same
column formats, same unit scaling) and then adds maillens's own sections.
Counting rules: docs/counting.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable

from maillens.counting import Counter
from maillens.errors import UsageError

#: JSON Grand Totals keys, in pflogsumm's order (plus ``expired``).
TOTAL_KEYS: tuple[str, ...] = (
    "received", "delivered", "forwarded", "deferred", "deferrals", "bounced", "rejected",
    "reject_warnings", "held", "discarded", "bytes_received", "bytes_delivered", "senders",
    "sending_hosts", "recipients", "recipient_hosts", "expired",
)  # fmt: skip

_PFLOG_SECTIONS = (
    ("deferral", "message deferral detail"),
    ("bounce", "message bounce detail (by relay)"),
    ("reject", "message reject detail"),
    ("reject_warning", "message reject warning detail"),
    ("hold", "message hold detail"),
    ("discard", "message discard detail"),
    ("smtp_failure", "smtp delivery failures"),
    ("warning", "Warnings"),
    ("fatal", "Fatal Errors"),
    ("panic", "Panics"),
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_date_spec(spec: str | None, today: date) -> tuple[date, date] | None:
    """``today``, ``yesterday``, ``YYYY-MM-DD`` or ``FROM..TO`` → inclusive range."""
    if spec is None:
        return None
    s = spec.strip().lower()
    if s == "today":
        return today, today
    if s == "yesterday":
        y = today - timedelta(days=1)
        return y, y
    try:
        if ".." in s:
            a, b = s.split("..", 1)
            start, end = date.fromisoformat(a.strip()), date.fromisoformat(b.strip())
        else:
            start = end = date.fromisoformat(s)
    except ValueError:
        raise UsageError(f"--date {spec!r}: use today, yesterday, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD") from None
    if end < start:
        raise UsageError(f"--date {spec!r}: the range ends before it starts")
    return start, end


@dataclass
class SummaryData:
    """Everything the summary prints, already aggregated over the period."""

    counts: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)
    per_hour: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in range(24)])
    addr: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    details: dict[str, dict[tuple[str, str, str], int]] = field(default_factory=dict)

    # -- building ------------------------------------------------------------------
    @classmethod
    def from_counter(cls, counter: Counter, days: tuple[date, date] | None = None) -> "SummaryData":
        lo, hi = (days[0].isoformat(), days[1].isoformat()) if days else ("", "~")
        data = cls()
        for (day, hour, name), v in counter.counts.items():
            if lo <= day <= hi:
                data._add_count(day, hour, name, v)
        data.deferred = len({q for d, q in counter.deferred if lo <= d <= hi})
        for (day, q) in counter.deferred:
            if lo <= day <= hi:
                data.per_day.setdefault(day, {})
        for (day, kind, key), v in counter.addr.items():
            if lo <= day <= hi:
                data._add_addr(kind, key, v)
        for (day, section, k1, k2, k3), n in counter.details.items():
            if lo <= day <= hi:
                sec = data.details.setdefault(section, {})
                sec[(k1, k2, k3)] = sec.get((k1, k2, k3), 0) + n
        return data

    @classmethod
    def from_store(cls, store: Any, start: date | str | None, end: date | str | None) -> "SummaryData":
        s = start.isoformat() if isinstance(start, date) else start
        e = end.isoformat() if isinstance(end, date) else end
        if s is None and e is None:
            days = store.days()
            s, e = (days[0], days[-1]) if days else ("0000-00-00", "0000-00-00")
        data = cls()
        cur = store.connection.execute(
            "SELECT day, hour, name, value FROM counts WHERE day BETWEEN ? AND ?", (s, e)
        )
        for day, hour, name, v in cur:
            data._add_count(day, int(hour), name, int(v))
        data.deferred = store.deferred_count(s, e)
        for kind in ("sender", "recipient", "sender_domain", "recipient_domain"):
            for key, v in store.addr_stats(s, e, kind=kind).items():
                data._add_addr(kind, key, v)
        for section, k1, k2, k3, n in store.details(s, e):
            data.details.setdefault(section, {})[(k1, k2, k3)] = n
        return data

    def _add_count(self, day: str, hour: int, name: str, v: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + v
        d = self.per_day.setdefault(day, {})
        d[name] = d.get(name, 0) + v
        h = self.per_hour[hour]
        h[name] = h.get(name, 0) + v

    def _add_addr(self, kind: str, key: str, v: list[float]) -> None:
        rec = self.addr.setdefault(kind, {}).get(key)
        if rec is None:
            self.addr[kind][key] = [v[0], v[1], v[2], v[3], v[4]]
        else:
            rec[0] += v[0]
            rec[1] += v[1]
            rec[2] += v[2]
            rec[3] += v[3]
            rec[4] = max(rec[4], v[4])

    # -- figures ---------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        c = self.counts
        addr = self.addr
        out = {k: int(c.get(k, 0)) for k in TOTAL_KEYS}
        out["deferred"] = self.deferred
        out["senders"] = sum(1 for v in addr.get("sender", {}).values() if v[0])
        out["sending_hosts"] = sum(1 for v in addr.get("sender_domain", {}).values() if v[0])
        out["recipients"] = sum(1 for v in addr.get("recipient", {}).values() if v[0])
        out["recipient_hosts"] = sum(1 for v in addr.get("recipient_domain", {}).values() if v[0])
        return out

    def day_count(self) -> int:
        return sum(1 for d in self.per_day.values() if d.get("lines"))

    def to_json(self) -> dict[str, Any]:
        totals = self.totals()
        nested = {sec: _nest(self.details.get(sec, {})) for sec, _ in _PFLOG_SECTIONS}
        return {
            "grand_totals": totals,
            "per_day": {d: _traffic(v) for d, v in sorted(self.per_day.items()) if v.get("lines")},
            "per_hour": [_traffic(h) for h in self.per_hour],
            "days": self.day_count(),
            "recipient_domains": _addr_rows(self.addr.get("recipient_domain", {}), True),
            "sender_domains": _addr_rows(self.addr.get("sender_domain", {}), False),
            "senders": _addr_rows(self.addr.get("sender", {}), False),
            "recipients": _addr_rows(self.addr.get("recipient", {}), False),
            "no_size": {k1: k2 for (k1, k2, _), _n in sorted(self.details.get("no_size", {}).items())},
            **nested,
            "master": {k1: n for (k1, _, _), n in self.details.get("master", {}).items()},
            "rejects_by_restriction": _flat(self.details.get("restriction", {}), ("restriction", "rbl", "stage")),
            "reject_warnings_by_restriction": _flat(
                self.details.get("restriction_warning", {}), ("restriction", "rbl", "stage")
            ),
            "rbl_zones": _by_first(self.details.get("restriction", {}), 1),
            "spf": _flat(self.details.get("spf", {}), ("result", "identity", "action")),
            "sasl_failures": _flat(self.details.get("sasl", {}), ("client_ip", "method", "username")),
            "postscreen": _flat(self.details.get("postscreen", {}), ("action", "client_ip")),
            "connections": int(self.counts.get("connections", 0)),
            "lost_connections": int(self.counts.get("lost_connections", 0)),
            "bounce_notices": int(self.counts.get("bounce_notices", 0)),
            "messages_incomplete": int(self.counts.get("messages_incomplete", 0)),
        }


def _traffic(c: dict[str, int]) -> dict[str, int]:
    """pflogsumm's five traffic columns; its "rejected" column adds warnings, holds, discards."""
    return {
        "received": c.get("received", 0),
        "delivered": c.get("delivered", 0),
        "deferred": c.get("deferrals", 0),
        "bounced": c.get("bounced", 0),
        "rejected": c.get("rejected", 0) + c.get("reject_warnings", 0) + c.get("held", 0) + c.get("discarded", 0),
    }


def _nest(d: dict[tuple[str, str, str], int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (k1, k2, k3), n in d.items():
        node = out.setdefault(k1, {})
        if k3:
            node = node.setdefault(k2, {})
            node[k3] = node.get(k3, 0) + n
        else:
            node[k2] = node.get(k2, 0) + n
    return out


def _flat(d: dict[tuple[str, str, str], int], names: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = [{**dict(zip(names, k)), "count": n} for k, n in d.items()]
    return sorted(rows, key=lambda r: (-r["count"], [str(r[n]) for n in names]))


def _by_first(d: dict[tuple[str, str, str], int], idx: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, n in d.items():
        if k[idx]:
            out[k[idx]] = out.get(k[idx], 0) + n
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _addr_rows(d: dict[str, list[float]], delivery: bool) -> list[dict[str, Any]]:
    rows = []
    for key, (cnt, size, defers, dsum, dmax) in d.items():
        row: dict[str, Any] = {"key": key, "count": int(cnt), "bytes": int(size)}
        if delivery:
            row.update(defers=int(defers), avg_delay=(dsum / 1000 / cnt) if cnt else 0.0, max_delay=dmax)
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["count"], -r["bytes"], r["key"]))


# -- text rendering (pflogsumm's layout) ------------------------------------------------
def adj_int_units(value: float) -> tuple[int, str]:
    value = value or 0
    if value > 536870912:
        return int(value / 1048576), "m"
    if value > 524288:
        return int(value / 1024), "k"
    return int(value), " "


def adj_time_units(value: float) -> tuple[float, str]:
    value = value or 0
    if value > 3600:
        return value / 3600, "h"
    if value > 60:
        return value / 60, "m"
    return value, "s"


def _u(value: float) -> str:
    n, unit = adj_int_units(value)
    return f"{n:6d}{unit}"


def normalize_host(text: str) -> tuple[int, ...] | str:
    """pflogsumm's tie-break key: IPs by octets, names by reversed labels."""
    first = text.split()[0] if text.split() else ""
    parts = first.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
        return "".join(chr(int(p)) for p in parts)
    import re

    return "".join(x.lower() for x in reversed(re.split(r"[.@]", first)))


def _title(title: str) -> str:
    return f"\n{title}\n{'-' * len(title)}\n"


def _pct(part: int, whole: int) -> int:
    return int(part / whole * 100) if whole else 0


def grand_totals_text(t: dict[str, int]) -> str:
    """pflogsumm's Grand Totals block, character for character."""
    total = t["delivered"] + t["rejected"] + t["discarded"]
    deferrals = f"  ({adj_int_units(t['deferrals'])[0]}{adj_int_units(t['deferrals'])[1]} deferrals)" if t["deferrals"] else ""
    lines = [
        _title("Grand Totals"), "messages\n\n",
        f" {_u(t['received'])}  received\n", f" {_u(t['delivered'])}  delivered\n",
        f" {_u(t['forwarded'])}  forwarded\n", f" {_u(t['deferred'])}  deferred{deferrals}\n",
        f" {_u(t['bounced'])}  bounced\n", f" {_u(t['rejected'])}  rejected ({_pct(t['rejected'], total)}%)\n",
        f" {_u(t['reject_warnings'])}  reject warnings\n", f" {_u(t['held'])}  held\n",
        f" {_u(t['discarded'])}  discarded ({_pct(t['discarded'], total)}%)\n", "\n",
        f" {_u(t['bytes_received'])}  bytes received\n", f" {_u(t['bytes_delivered'])}  bytes delivered\n",
        f" {_u(t['senders'])}  senders\n", f" {_u(t['sending_hosts'])}  sending hosts/domains\n",
        f" {_u(t['recipients'])}  recipients\n", f" {_u(t['recipient_hosts'])}  recipient hosts/domains\n",
    ]  # fmt: skip
    return "".join(lines)


def _traffic_row(label: str, row: dict[str, int], divisor: int = 0) -> str:
    cells = []
    for col in ("received", "delivered", "deferred", "bounced", "rejected"):
        v: float = row[col]
        if divisor:
            v = v / divisor + 0.5
        cells.append(f"    {_u(v)}")
    return f"    {label}{''.join(cells)}\n"


def render_text(data: SummaryData, top: int = -1) -> str:
    """The whole plain-text summary."""
    j = data.to_json()
    out = [grand_totals_text(j["grand_totals"]), "\n"]
    days = j["days"]
    header = "received  delivered   deferred    bounced     rejected\n    " + "-" * 68 + "\n"
    if days > 1:
        out.append(_title("Per-Day Traffic Summary"))
        out.append("    date          " + header)
        for d, row in j["per_day"].items():
            y, m, dd = d.split("-")
            out.append(_traffic_row(f"{_MONTHS[int(m) - 1]} {int(dd):2d} {y}", row))
    out.append(_title(f"Per-Hour Traffic {'Daily Average' if days > 1 else 'Summary'}"))
    out.append("    time          " + header)
    for hour, row in enumerate(j["per_hour"]):
        out.append(_traffic_row(f"{hour:02d}00-{hour + 1:02d}00  ", row, days))
    out.append(_domain_sections(j, top))
    for col, what in (("count", "count"), ("bytes", "size")):
        for key, title in (("senders", "Senders"), ("recipients", "Recipients")):
            rows = sorted(j[key], key=lambda r: (-r[col], normalize_host(r["key"]), r["key"]))
            out.append(_user_section(rows, f"{title} by message {what}", col, top))
    out.append(_plain_list(j["no_size"], "Messages with no size data"))
    for sec, title in _PFLOG_SECTIONS:
        out.append(_nested(j[sec], title))
    out.append(_counted({k: n for k, n in j["master"].items()}, "Master daemon messages"))
    out.append(_extras(j))
    return "".join(out)


def _domain_sections(j: dict[str, Any], top: int) -> str:
    out = [_title("Host/Domain Summary: Message Delivery ")]
    out.append(" sent cnt  bytes   defers   avg dly max dly host/domain\n")
    out.append(" -------- -------  -------  ------- ------- -----------\n")
    for r in j["recipient_domains"][: top if top > 0 else None]:
        avg, au = adj_time_units(r["avg_delay"])
        mx, mu = adj_time_units(r["max_delay"])
        out.append(f" {_u(r['count'])}  {_u(r['bytes'])}  {_u(r['defers'])}  {avg:5.1f} {au}  {mx:5.1f} {mu}  {r['key']}\n")
    out.append(_title("Host/Domain Summary: Messages Received "))
    out.append(" msg cnt   bytes   host/domain\n -------- -------  -----------\n")
    for r in j["sender_domains"][: top if top > 0 else None]:
        out.append(f" {_u(r['count'])}  {_u(r['bytes'])}  {r['key']}\n")
    return "".join(out)


def _user_section(rows: list[dict[str, Any]], title: str, col: str, top: int) -> str:
    if top > 0:
        title = f"top {top} {title}"
    if not rows:
        return f"\n{title}: none\n"
    lines = [f"\n{title}\n{'-' * len(title)}\n"]
    for r in rows[: top if top > 0 else None]:
        lines.append(f" {_u(r[col])}  {r['key']}\n")
    return "".join(lines)


def _plain_list(d: dict[str, str], title: str) -> str:
    if not d:
        return ""  # pflogsumm prints this one "quietly": nothing when empty
    return f"\n{title}\n{'-' * len(title)}\n" + "".join(f" {k}  {v}\n" for k, v in sorted(d.items()))


def _counted(d: dict[str, int], title: str, indent: str = " ") -> str:
    if not d:
        return f"\n{title}: none\n"
    rows = sorted(d.items(), key=lambda kv: (-kv[1], normalize_host(kv[0]), kv[0]))
    return f"\n{title}\n{'-' * len(title)}\n" + "".join(f"{indent}{_u(n)}  {k}\n" for k, n in rows)


def _nested(tree: dict[str, Any], title: str) -> str:
    if not tree:
        return f"\n{title}: none\n"
    out = [f"\n{title}\n{'-' * len(title)}\n"]
    _walk(tree, 2, out)
    return "".join(out)


def _walk(tree: dict[str, Any], level: int, out: list[str]) -> None:
    pad = " " * level
    for key in sorted(tree):
        sub = tree[key]
        if isinstance(sub, dict):
            leaf = not any(isinstance(v, dict) for v in sub.values())
            total = f" (total: {sum(sub.values())})" if leaf else ""
            out.append(f"{pad}{key}{total}\n")
            if leaf:
                for k, n in sorted(sub.items(), key=lambda kv: (-kv[1], normalize_host(kv[0]), kv[0])):
                    out.append(f"{pad}  {_u(n)}  {k}\n")
            else:
                _walk(sub, level + 2, out)


def _extras(j: dict[str, Any]) -> str:
    """maillens's sections beyond pflogsumm."""
    out = [_title("maillens: rejects by restriction")]
    by_r: dict[str, int] = {}
    for r in j["rejects_by_restriction"]:
        by_r[r["restriction"]] = by_r.get(r["restriction"], 0) + r["count"]
    out += [f" {_u(n)}  {k}\n" for k, n in sorted(by_r.items(), key=lambda kv: (-kv[1], kv[0]))] or [" none\n"]
    out.append(_title("maillens: rejects by RBL zone"))
    out += [f" {_u(n)}  {k}\n" for k, n in j["rbl_zones"].items()] or [" none\n"]
    out.append(_title("maillens: SPF results"))
    spf: dict[str, int] = {}
    for r in j["spf"]:
        spf[r["result"]] = spf.get(r["result"], 0) + r["count"]
    out += [f" {_u(n)}  {k}\n" for k, n in sorted(spf.items(), key=lambda kv: (-kv[1], kv[0]))] or [" none\n"]
    out.append(_title("maillens: SASL authentication failures by client"))
    sasl: dict[str, int] = {}
    for r in j["sasl_failures"]:
        sasl[r["client_ip"]] = sasl.get(r["client_ip"], 0) + r["count"]
    out += [f" {_u(n)}  {k}\n" for k, n in sorted(sasl.items(), key=lambda kv: (-kv[1], kv[0]))] or [" none\n"]
    out.append(_title("maillens: postscreen"))
    ps: dict[str, int] = {}
    for r in j["postscreen"]:
        ps[r["action"]] = ps.get(r["action"], 0) + r["count"]
    out += [f" {_u(n)}  {k}\n" for k, n in sorted(ps.items(), key=lambda kv: (-kv[1], kv[0]))] or [" none\n"]
    out.append(
        f"\n {j['connections']} smtpd connections, {j['lost_connections']} lost, "
        f"{j['bounce_notices']} bounce notices, {j['grand_totals']['expired']} expired, "
        f"{j['messages_incomplete']} messages incomplete\n"
    )
    return "".join(out)


def summarize_events(events: Iterable[Any], days: tuple[date, date] | None = None) -> SummaryData:
    """Count a stream of events (``maillens summary FILE``)."""
    from maillens.tracker import Tracker

    counter = Counter()
    tracker = Tracker(on_evict=counter.forget)
    feed_c, feed_t = counter.feed, tracker.feed
    for ev in events:
        feed_c(ev)
        feed_t(ev)
        if len(tracker.finished) > 10000:
            tracker.drain()
    for day, n in tracker.incomplete.items():
        key = (day, 0, "messages_incomplete")
        counter.counts[key] = counter.counts.get(key, 0) + n
    return SummaryData.from_counter(counter, days)


def render_json(data: SummaryData) -> str:
    return json.dumps(data.to_json(), indent=2, ensure_ascii=False)


def today_for(now: datetime | None = None) -> date:
    return (now or datetime.now().astimezone()).date()
