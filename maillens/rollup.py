"""Build one day's ``ReportData`` from the store, with pandas.

Why from the store and not from the log: a past day's report must not
re-read rotated logs, and the figures must be the ones ``maillens summary``
prints for the same day.  So the headline and per-hour figures are the
store's pflogsumm-rule counters (``counts``, written by ``maillens.counting``),
and the detail tables come from the rows the store keeps one per line
(``events``: rejects, SPF, SASL failures), per address (``addr_stats``),
per message and delivery attempt (``messages`` / ``deliveries``) and per
detail key (``details``: warnings, fatal errors, panics).

Log files given on the command line are first ingested into a throw-away
store (``report_from_files``), so both paths share one set of rules.

Example::

    with Store.open(readonly=True) as store:
        data = build_report(store, date(2026, 11, 9), host="mx.example.org")
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from maillens.errors import ConfigError
from maillens.reportdata import Figure, HourRow, ReportData, Table, table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from maillens.store import Store

#: Text cells longer than this are cut: a 10 kB HELO must not bloat the mail.
CELL_LIMIT = 200


@dataclass(frozen=True)
class ReportOptions:
    """The ``[report]`` keys rollup needs (validated here, its owner)."""

    top: int = 10
    host: str | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "ReportOptions":
        top = section.get("top", 10)
        if isinstance(top, bool) or (isinstance(top, float) and not top.is_integer()):
            raise ConfigError(f"[report] top = {top!r}: must be a whole number of rows")  # (int(1.5) is 1)
        try:
            top = int(top)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"[report] top = {top!r}: must be a whole number of rows") from None
        if not 1 <= top <= 10000:
            raise ConfigError(f"[report] top = {top}: must be between 1 and 10000")
        host = section.get("host")
        if host is not None and not isinstance(host, str):
            raise ConfigError("[report] host must be a string (the name shown in the report and subject)")
        return cls(top=top, host=host or None)


# -- small helpers ---------------------------------------------------------------


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > CELL_LIMIT:
        return value[: CELL_LIMIT - 1] + "…"
    return value


def _domain(address: Any) -> str:
    """The domain of an address, lower-cased; ``<>`` for the null sender."""
    text = "" if address is None else str(address)
    if not text or text == "<>":
        return "<>"
    at = text.rfind("@")
    return text[at + 1 :].lower() if at >= 0 else text.lower()


def _day_bounds(day: date) -> tuple[float, float]:
    """Epoch range of a calendar day in local time (how the envelope dates
    traditional syslog lines), for tables that keep ``ts`` but no ``day``."""
    start = datetime.combine(day, time()).astimezone()
    end = datetime.combine(day + timedelta(days=1), time()).astimezone()
    return start.timestamp(), end.timestamp()


def _top(frame: "pd.DataFrame", top: int) -> tuple["pd.DataFrame", int]:
    return frame.head(top), max(len(frame) - top, 0)


def _frequent(frame: "pd.DataFrame", key: str, col: str, limit: int = 4) -> dict[str, tuple[str, ...]]:
    """Per ``key``: the distinct non-empty ``col`` values, most frequent first.

    Vectorised (one groupby on the pair) because a per-group Python lambda
    over ten thousand client IPs costs seconds; callers pass only the rows of
    the keys they show.
    """
    part = frame[frame[col] != ""]
    if not len(part):
        return {}
    pairs = part.groupby([key, col], sort=False).size().reset_index(name="_n")
    pairs = pairs.sort_values([key, "_n", col], ascending=[True, False, True])
    pairs = pairs.groupby(key, sort=False).head(limit)
    out: dict[str, list[str]] = {}
    for k, v in zip(pairs[key], pairs[col]):
        out.setdefault(k, []).append(v)
    return {k: tuple(_clip(x) for x in v) for k, v in out.items()}


def _names(values: Iterable[Any], limit: int = 4) -> tuple[str, ...]:
    """Distinct non-empty values, most frequent first (pandas order kept)."""
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(str(v))
        if len(out) >= limit:
            break
    return tuple(_clip(v) for v in out)


# -- headline and hours ----------------------------------------------------------------


HEADLINE = (
    # key, label, store counter, anchor
    ("received", "received", "received", "deliveries"),
    ("delivered", "delivered", "delivered", "deliveries"),
    ("rejected", "rejected", "rejected", "rejects"),
    ("deferred", "deferred", "deferred", "deferrals"),
    ("bounced", "bounced", "bounced", "bounces"),
    ("expired", "expired", "expired", "expired"),
    ("sasl_failures", "SASL failures", "sasl_failures", "sasl"),
    ("rejected_clients", "unique rejected clients", "rejected_clients", "rejected"),
    ("connections", "SMTP connections", "connections", "summary"),
)


def _rejected_clients_per_day(store: "Store", start: str, end: str) -> dict[str, int]:
    cur = store.connection.execute(
        "SELECT day, count(DISTINCT client_ip) FROM events WHERE day BETWEEN ? AND ? AND kind = 'reject' "
        "AND client_ip IS NOT NULL AND client_ip != '' GROUP BY day",
        (start, end),
    )
    return {d: int(n) for d, n in cur}


def headline(store: "Store", day: date, rejected_clients: int | None = None) -> tuple[tuple[Figure, ...], int]:
    """Headline figures with the previous day and the 7 days before as context.

    Days absent from the store are not averaged as zeros: a store that began
    yesterday compares with what it has (``None`` when it has nothing).
    """
    first = (day - timedelta(days=7)).isoformat()
    rollups = store.daily_rollups(first, day.isoformat())
    clients = _rejected_clients_per_day(store, first, (day - timedelta(days=1)).isoformat())
    clients[day.isoformat()] = (rejected_clients if rejected_clients is not None else
                                _rejected_clients_per_day(store, day.isoformat(), day.isoformat()).get(day.isoformat(), 0))
    for d, n in clients.items():
        rollups.setdefault(d, {})["rejected_clients"] = n
    today = rollups.get(day.isoformat(), {})
    prev_key = (day - timedelta(days=1)).isoformat()
    before = [rollups[d] for d in sorted(rollups) if d < day.isoformat()]
    figures = []
    for key, label, counter, anchor in HEADLINE:
        value = int(today.get(counter, 0))
        previous = int(rollups[prev_key].get(counter, 0)) if prev_key in rollups else None
        average = sum(int(r.get(counter, 0)) for r in before) / len(before) if before else None
        note = ""
        if key == "rejected":
            offered = value + int(today.get("received", 0))
            if offered:
                note = f"{round(100 * value / offered)}% of received+rejected"
        figures.append(Figure(key, label, value, previous, average, note, anchor))
    if not any(f.value for f in figures):
        return (), 0
    return tuple(figures), int(today.get("connections", 0))


def hourly(store: "Store", day: date) -> tuple[HourRow, ...]:
    """pflogsumm's per-hour columns; "deferred" per hour counts deferrals, as
    pflogsumm's per-day and per-hour tables do."""
    rows = store.hourly(day.isoformat())
    return tuple(
        HourRow(h, r.get("received", 0), r.get("delivered", 0), r.get("rejected", 0), r.get("deferrals", 0),
                r.get("bounced", 0))
        for h, r in enumerate(rows)
    )  # fmt: skip


# -- rejects, RBL, SPF, SASL (from the events table) -----------------------------------

#: The columns each stored event kind contributes to the report.
_EVENT_COLS: dict[str, tuple[str, ...]] = {
    "reject": ("client_ip", "stage", "restriction", "rbl", "sender", "helo"),
    "reject_warning": ("client_ip", "rbl"),
    "spf": ("client_ip", "spf_result", "sender", "helo"),
    "sasl_failure": ("client_ip", "client_name", "sasl_username"),
}


def load_events(store: "Store", day: date) -> dict[str, "pd.DataFrame"]:
    """The day's stored events that the report groups: one frame per kind.

    One query per kind, with only the columns that kind needs and NULLs made
    ``''`` in SQL: on a million-line day building Python strings is most of
    the cost, so every column left out counts.
    """
    import pandas as pd

    out = {}
    for kind, cols in _EVENT_COLS.items():
        select = ", ".join(f"coalesce({c}, '')" for c in cols)
        cur = store.connection.execute(f"SELECT {select} FROM events WHERE day = ? AND kind = ?",
                                       (day.isoformat(), kind))  # fmt: skip
        out[kind] = pd.DataFrame.from_records(cur.fetchall(), columns=list(cols), coerce_float=False)
    return out


def client_names(store: "Store", day: date, kind: str, ips: Sequence[str]) -> dict[str, str]:
    """The name Postfix logged most often for each of ``ips`` (few: the shown rows)."""
    names: dict[str, str] = {}
    for i in range(0, len(ips), 500):
        chunk = list(ips[i : i + 500])
        marks = ", ".join("?" * len(chunk))
        cur = store.connection.execute(
            f"SELECT client_ip, client_name, count(*) AS n FROM events WHERE day = ? AND kind = ? "
            f"AND client_ip IN ({marks}) AND coalesce(client_name, '') != '' "
            "GROUP BY client_ip, client_name ORDER BY client_ip, n DESC, client_name",
            (day.isoformat(), kind, *chunk))  # fmt: skip
        for ip, name, _n in cur:
            names.setdefault(ip, _clip(name))
    return names


def _by_count(values: "pd.Series") -> "pd.DataFrame":
    """``key``/``n`` per distinct value, biggest first, ties by key (stable output)."""
    import pandas as pd

    vc = values.value_counts(sort=False)
    frame = pd.DataFrame({"key": list(vc.index), "n": vc.to_numpy()})
    return frame.sort_values(["n", "key"], ascending=[False, True], kind="stable")


def _top_keys(frame: "pd.DataFrame", col: str, top: int, distinct: str | None = None
              ) -> tuple[list[tuple[str, int]], int, dict[str, int], "pd.DataFrame"]:  # fmt: skip
    """Top ``col`` values by rows; for the shown ones only, distinct ``distinct``
    values and their rows (so per-key work stays small on a million-line day)."""
    ranked = _by_count(frame[col])
    shown, more = _top(ranked, top)
    keys = list(zip(shown["key"], (int(n) for n in shown["n"])))
    mine = frame[frame[col].isin(shown["key"])]
    counts = mine.groupby(col, sort=False)[distinct].nunique().to_dict() if distinct else {}
    return keys, more, counts, mine


def _ranked_table(frame: "pd.DataFrame", col: str, top: int, label: str, count_label: str) -> Table:
    """Top ``col`` values with their row count and distinct clients."""
    keys, more, ips, _ = _top_keys(frame, col, top, "client_ip")
    return table([(label, "text"), (count_label, "int"), ("clients", "int")],
                 [(_clip(k), n, ips.get(k, 0)) for k, n in keys], more)  # fmt: skip


def _shares(values: "pd.Series", label: str, count_label: str, total: int) -> Table:
    ranked = _by_count(values)
    return table([(label, "text"), (count_label, "int"), ("share", "pct")],
                 [(_clip(k), int(n), n / total) for k, n in zip(ranked["key"], ranked["n"])])  # fmt: skip


def _domains(values: "pd.Series") -> "pd.Series":
    """``_domain`` of each value, computed once per distinct value."""
    uniq = values.unique()
    return values.map(dict(zip(uniq, map(_domain, uniq))))


def reject_tables(ev: dict[str, "pd.DataFrame"], top: int, configured_zones: Sequence[str] | None,
                  names: Any = None) -> dict[str, Any]:  # fmt: skip
    """Rejects by restriction, stage and RBL zone; top clients, HELOs, sender domains.

    ``names(ips)`` gives the client names of the shown clients (from the store).
    """
    import pandas as pd

    rej = ev["reject"]
    total = len(rej)
    out: dict[str, Any] = {}
    if total:
        out["rejects_by_restriction"] = _shares(rej["restriction"].replace("", "unknown"), "restriction", "rejects", total)
        out["rejects_by_stage"] = _shares(rej["stage"].replace("", "unknown"), "stage", "rejects", total)
    both = pd.concat([rej[["rbl", "client_ip"]].assign(kind="reject"),
                      ev["reject_warning"][["rbl", "client_ip"]].assign(kind="reject_warning")], ignore_index=True)
    listed = both[both["rbl"] != ""]
    rows = []
    if len(listed):
        hits = listed.groupby(["rbl", "kind"], sort=False).size().unstack(fill_value=0)
        ips = listed.groupby("rbl", sort=False)["client_ip"].nunique()
        stats = [(zone, int(hits.at[zone, "reject"]) if "reject" in hits.columns else 0,
                  int(hits.at[zone, "reject_warning"]) if "reject_warning" in hits.columns else 0, int(ips[zone]))
                 for zone in hits.index]  # fmt: skip
        stats.sort(key=lambda r: (-r[1], -r[2], r[0]))
        rows = [(_clip(z), h, w, n, (h / total) if total else None) for z, h, w, n in stats]
    out["rbl_zones"] = table(
        [("zone", "text"), ("reject hits", "int"), ("warn-only hits", "int"), ("unique IPs", "int"),
         ("share of all rejects", "pct")], rows)  # fmt: skip
    if configured_zones is not None:
        hit = {str(z).lower() for z in listed["rbl"].unique()}
        out["rbl_unused"] = tuple(z for z in configured_zones if z.lower() not in hit)
    clients = rej[rej["client_ip"] != ""]
    if len(clients):
        keys, more, _, mine = _top_keys(clients, "client_ip", top)
        rdns = names([ip for ip, _n in keys]) if names else {}
        restrictions = _frequent(mine, "client_ip", "restriction")
        out["rejected_clients"] = table(
            [("client IP", "text"), ("rDNS", "text"), ("rejects", "int"), ("restrictions", "list")],
            [(_clip(ip), rdns.get(ip, ""), n, restrictions.get(ip, ())) for ip, n in keys], more)
    helos = rej[rej["helo"] != ""]
    if len(helos):
        out["rejected_helos"] = _ranked_table(helos, "helo", top, "HELO", "rejects")
    senders = rej[rej["sender"] != ""]
    if len(senders):
        doms = senders[["client_ip"]].assign(domain=_domains(senders["sender"]))
        out["rejected_sender_domains"] = _ranked_table(doms, "domain", top, "sender domain", "rejects")
    return out


def spf_tables(ev: dict[str, "pd.DataFrame"], top: int) -> dict[str, Any]:
    """SPF results by outcome, and fails by the sender domain the client claimed."""
    spf = ev["spf"]
    if not len(spf):
        return {}
    result = spf["spf_result"].str.lower().replace("", "unknown")
    out: dict[str, Any] = {"spf_results": _shares(result, "result", "checks", len(spf))}
    fails = spf[result == "fail"]
    if len(fails):
        claimed = fails["sender"].where(fails["sender"] != "", fails["helo"])
        doms = fails[["client_ip"]].assign(domain=_domains(claimed))
        out["spf_fail_domains"] = _ranked_table(doms, "domain", top, "claimed sender domain", "fails")
    return out


def sasl_tables(ev: dict[str, "pd.DataFrame"], top: int) -> dict[str, Any]:
    """SASL failures by client (with the usernames tried) and by username."""
    sasl = ev["sasl_failure"]
    if not len(sasl):
        return {}
    out: dict[str, Any] = {}
    keys, more, _, mine = _top_keys(sasl, "client_ip", top)
    names = _frequent(mine, "client_ip", "client_name", 1)
    users = _frequent(mine, "client_ip", "sasl_username")
    out["sasl_by_client"] = table(
        [("client IP", "text"), ("rDNS", "text"), ("failures", "int"), ("usernames", "list")],
        [(_clip(ip or "unknown"), (names.get(ip) or ("",))[0], n, users.get(ip, ())) for ip, n in keys], more)
    named = sasl[sasl["sasl_username"] != ""]
    if len(named):
        out["sasl_by_username"] = _ranked_table(named, "sasl_username", top, "username", "failures")
    return out


# -- deliveries (addr_stats, deliveries, messages, details) ------------------------------


def address_tables(store: "Store", day: date, top: int) -> dict[str, Any]:
    """pflogsumm's senders/recipients by count and by size, from ``addr_stats``."""
    import pandas as pd

    frame = pd.read_sql_query(
        "SELECT kind, key, count, bytes FROM addr_stats WHERE day = ? AND kind IN ('sender', 'recipient')",
        store.connection, params=(day.isoformat(),))  # fmt: skip
    out: dict[str, Any] = {}
    for kind in ("sender", "recipient"):
        part = frame[frame["kind"] == kind]
        if not len(part):
            continue
        for order, col in (("count", "count"), ("size", "bytes")):
            ranked = part[part[col] > 0].sort_values([col, "key"], ascending=[False, True])
            shown, more = _top(ranked, top)
            out[f"{kind}s_by_{order}"] = table(
                [(kind, "text"), ("messages", "int"), ("bytes", "bytes")],
                [(_clip(r.key), int(r.count), int(r.bytes)) for r in shown.itertuples()], more)  # fmt: skip
    return out


def _reply_stats(part: "pd.DataFrame") -> "pd.DataFrame":
    return part.groupby("domain", sort=False).agg(
        n=("status", "size"),
        dsn=("dsn", lambda s: tuple(s[s != ""].value_counts().index[:3])),
        reply=("reply", lambda s: s.value_counts().index[0] if len(s) else ""),
    )


def _failed_deliveries(store: "Store", lo: float, hi: float) -> "pd.DataFrame":
    """Bounced and deferred attempts in [lo, hi): finished messages' delivery
    records plus the attempts of messages still open (the tracker's open
    state), so a message with one bounced and one still-deferred recipient
    is not missing from the bounce table."""
    import pandas as pd

    cols = ["recipient", "status", "dsn", "reply"]
    closed = pd.read_sql_query(
        "SELECT recipient, status, dsn, reply FROM deliveries WHERE ts >= ? AND ts < ? "
        "AND status IN ('bounced', 'deferred')",
        store.connection, params=(lo, hi))  # fmt: skip
    still_open = [
        [d.get(c) for c in cols]
        for msg in store.load_open_state().get("message", {}).values() if isinstance(msg, dict)
        for d in msg.get("deliveries") or () if isinstance(d, dict)
        and d.get("status") in ("bounced", "deferred") and isinstance(d.get("ts"), (int, float)) and lo <= d["ts"] < hi
    ]  # fmt: skip
    frame = pd.concat([closed, pd.DataFrame(still_open, columns=cols)], ignore_index=True) if still_open else closed
    frame = frame.fillna("").astype(str)
    return frame.assign(domain=frame["recipient"].map(_domain))


def failure_tables(store: "Store", day: date, top: int) -> dict[str, Any]:
    """Bounces and deferrals by destination domain, with DSN codes and replies.

    Bounce counts, DSNs and replies come from the delivery attempts of the
    day (``_failed_deliveries``).  Deferral counts are the per-domain
    ``defers`` of ``addr_stats``: pflogsumm's figure, the one ``summary``
    prints; their DSN and reply texts come from the attempts.
    """
    import pandas as pd

    lo, hi = _day_bounds(day)
    frame = _failed_deliveries(store, lo, hi)
    out: dict[str, Any] = {}
    cols = [("domain", "text"), ("", "int"), ("DSN", "list"), ("most frequent reply", "text")]
    bounced = frame[frame["status"] == "bounced"]
    if len(bounced):
        stats = _reply_stats(bounced).reset_index().sort_values(["n", "domain"], ascending=[False, True])
        shown, more = _top(stats, top)
        cols[1] = ("bounced", "int")
        out["bounces_by_domain"] = table(
            cols, [(_clip(r.domain), int(r.n), _names(r.dsn), _clip(r.reply)) for r in shown.itertuples()], more)
    defers = pd.read_sql_query(
        "SELECT key AS domain, defers AS n FROM addr_stats WHERE day = ? AND kind = 'recipient_domain' "
        "AND defers > 0", store.connection, params=(day.isoformat(),))  # fmt: skip
    if len(defers):
        deferred = frame[frame["status"] == "deferred"]
        replies = _reply_stats(deferred) if len(deferred) else None
        defers = defers.sort_values(["n", "domain"], ascending=[False, True])
        shown, more = _top(defers, top)
        rows = []
        for r in shown.itertuples():
            known = replies is not None and r.domain in replies.index
            dsn = _names(replies.at[r.domain, "dsn"]) if known else ()
            reply = _clip(replies.at[r.domain, "reply"]) if known else ""
            rows.append((_clip(r.domain), int(r.n), dsn, reply))
        cols[1] = ("deferrals", "int")
        out["deferrals_by_domain"] = table(cols, rows, more)
    expired = pd.read_sql_query(
        "SELECT queue_id, sender, nrcpt FROM messages WHERE state = 'expired' AND last_ts >= ? AND last_ts < ? "
        "ORDER BY last_ts",
        store.connection, params=(lo, hi))  # fmt: skip
    if len(expired):
        shown, more = _top(expired.fillna(""), top)
        out["expired"] = table(
            [("queue ID", "text"), ("sender", "text"), ("recipients", "int")],
            [(_clip(r.queue_id), _clip(r.sender or "<>"), int(r.nrcpt or 0)) for r in shown.itertuples()], more)  # fmt: skip
    return out


def problem_table(store: "Store", day: date, top: int) -> dict[str, Any]:
    """pflogsumm's warnings / fatal errors / panics (``details``)."""
    rows = []
    for level in ("panic", "fatal", "warning"):
        found = sorted(store.details(day, section=level), key=lambda r: (-r[4], r[1], r[2]))
        rows += [(level, _clip(k1), _clip(k2), n) for _s, k1, k2, _k3, n in found]
    if not rows:
        return {}
    return {"problems": table([("level", "text"), ("program", "text"), ("message", "text"), ("count", "int")],
                              rows[: max(top, 20)], max(len(rows) - max(top, 20), 0))}  # fmt: skip


def _this_host() -> str:
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn and not fqdn.startswith("localhost") else socket.gethostname()


# -- the whole report --------------------------------------------------------------------


def configured_rbl_zones(postfix: Any) -> tuple[str, ...] | None:
    """IP and domain block lists main.cf rejects with (not allow lists)."""
    if postfix is None:
        return None
    zones = []
    for z in postfix.rbl_zones():
        if z.kind in ("rbl", "rhsbl") and z.domain not in zones:
            zones.append(z.domain)
    return tuple(zones)


def coverage(store: "Store", day: date, now: datetime | None = None) -> tuple[str, bool]:
    """What part of the day the data covers, when not all of it ("" when it does), and whether
    the store stops before the day (nothing ingested for it: a stalled ingest, for cron to hear of).

    A report must not pass a stalled ingest off as a quiet day, nor a log
    that ends at 00:02 as a day of two minutes' mail.
    """
    row = store.connection.execute(
        "SELECT day, max(hour) FROM counts WHERE name = 'lines' AND day = "
        "(SELECT max(day) FROM counts WHERE name = 'lines')").fetchone()
    if row is None or row[0] is None:
        return "The store holds no log lines yet: run 'maillens ingest'.", True
    newest_day, newest_hour = date.fromisoformat(row[0]), int(row[1])
    if newest_day < day:
        return (f"No data after {newest_day.isoformat()} {newest_hour:02d}:59: nothing newer has been "
                "ingested (is 'maillens ingest' running?), so this day cannot be reported."), True
    oldest_day, oldest_hour = store.connection.execute(
        "SELECT day, min(hour) FROM counts WHERE name = 'lines' AND day = "
        "(SELECT min(day) FROM counts WHERE name = 'lines')").fetchone()
    if date.fromisoformat(oldest_day) > day:
        return (f"No data before {oldest_day} {int(oldest_hour):02d}:00: this day is older than the store's "
                "history."), False
    parts = []
    if oldest_day == day.isoformat() and int(oldest_hour) > 0:
        parts.append(f"begins in the {int(oldest_hour):02d}:00 hour")
    today = (now or datetime.now(timezone.utc)).astimezone().date()
    if newest_day == day and newest_hour < 23:
        parts.append(f"ends in the {newest_hour:02d}:00 hour{' (so far)' if day >= today else ''}")
    if not parts:
        return "", False
    return f"The log {' and '.join(parts)} of this day: the figures cover part of it.", False


def bans_note(store: "Store", day: date) -> str:
    """One line on the ban list's changes of the day (``bans_log``, kept by
    ``maillens bans`` in the same store), or a pointer when there is none."""
    conn = store.connection
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bans_log'").fetchone():
        return "Ban list: this store keeps none yet; see `maillens bans --help` to ban repeat offenders."
    lo, hi = _day_bounds(day)
    made = conn.execute(
        "SELECT jail, count(*), count(DISTINCT ip) FROM bans_log WHERE time >= ? AND time < ? GROUP BY jail "
        "ORDER BY count(*) DESC, jail", (lo, hi)).fetchall()  # fmt: skip
    ended = conn.execute("SELECT count(*) FROM bans_log WHERE until >= ? AND until < ?", (lo, hi)).fetchone()[0]
    if not made and not ended:
        return "Ban list: no address was banned or released on this day (`maillens bans --list` shows the list)."
    per_jail = ", ".join(f"{_clip(j)} {n}" for j, n, _ips in made)
    total = sum(n for _j, n, _ips in made)
    return (f"Ban list: {total} new ban{'s' if total != 1 else ''}"
            + (f" ({per_jail})" if made else "")
            + f", {ended} ran out on this day; `maillens bans --list` shows them.")  # fmt: skip


SUGGEST_NOTE = ("Allowlist suggestions: `maillens suggest` proposes access-map entries; give the report "
                "--access-client/--access-sender ([suggest] access_client/access_sender) to list them here.")


def build_report(
    store: "Store",
    day: date,
    *,
    options: ReportOptions | None = None,
    postfix: Any = None,
    source: str | None = None,
    now: datetime | None = None,
) -> ReportData:
    """Everything one day's report shows, from an open store."""
    opts = options or ReportOptions()
    top = opts.top
    ev = load_events(store, day)
    rej_ips = ev["reject"]["client_ip"]
    figures, connections = headline(store, day, int(rej_ips[rej_ips != ""].nunique()))
    fields: dict[str, Any] = {}
    names = lambda ips: client_names(store, day, "reject", ips)  # noqa: E731
    fields.update(reject_tables(ev, top, configured_rbl_zones(postfix), names))
    fields.update(spf_tables(ev, top))
    fields.update(sasl_tables(ev, top))
    fields.update(address_tables(store, day, top))
    fields.update(failure_tables(store, day, top))
    fields.update(problem_table(store, day, top))
    note, behind = coverage(store, day, now)
    return ReportData(
        host=opts.host or _this_host(),
        day=day,
        generated_at=(now or datetime.now(timezone.utc)).astimezone(),
        source=source or f"store {store.path}",
        headline=figures,
        connections=connections,
        hourly=hourly(store, day),
        bans_note=bans_note(store, day),
        coverage_note=note,
        store_behind=behind,
        suggest_note=SUGGEST_NOTE,
        **fields,
    )


def report_from_files(
    paths: Sequence[str],
    day: date | None = None,
    *,
    options: ReportOptions | None = None,
    postfix: Any = None,
    now: datetime | None = None,
) -> ReportData:
    """Read log files into a throw-away store, then report one day of it.

    The same ingest, tracker and pflogsumm-rule counter as ``maillens ingest``
    run, so a report from files equals the one from the store.  Without
    ``day``, the last day the files reach is reported.
    """
    import tempfile
    from pathlib import Path

    from maillens.errors import InputError
    from maillens.ingest import ingest
    from maillens.store import Store

    if not paths:
        raise InputError("no log file given")
    with tempfile.TemporaryDirectory(prefix="maillens-report-") as tmp:
        db = Path(tmp) / "report.db"
        ingest(list(paths), db)
        store = Store.open(db, readonly=True)
        try:
            days = store.days()
            if not days and day is None:
                raise InputError(f"no dated log lines in {', '.join(paths)}; is it a mail log? (--date reports a day anyway)")
            chosen = day or date.fromisoformat(days[-1])
            label = ", ".join(str(p) for p in paths)
            return build_report(store, chosen, options=options, postfix=postfix, source=f"files {label}", now=now)
        finally:
            store.close()


def frames(data: ReportData) -> dict[str, "pd.DataFrame"]:
    """The report's tables as pandas frames (for scripts and notebooks)."""
    import pandas as pd

    out = {}
    for name, value in vars(data).items():
        if isinstance(value, Table):
            out[name] = pd.DataFrame(list(value.rows), columns=[c.label for c in value.columns])
    out["hourly"] = pd.DataFrame([vars(h) if hasattr(h, "__dict__") else
                                  {k: getattr(h, k) for k in h.__slots__} for h in data.hourly])  # fmt: skip
    return out
