"""Ban state and history in the store, so increments survive restarts.

fail2ban keeps its ``bips`` (the last ban of each address per jail) in a
database so that ``bantime.increment`` still knows an address after a
restart.  maillens keeps the same, and the rest of each jail's state (the
open failure tickets, the bans in force), in the store's SQLite file, in
tables of its own created with ``CREATE TABLE IF NOT EXISTS`` (the store's
convention for other modules' tables):

``bans_meta(key, value)``
    ``last_event_id`` (the store's ``events.id`` judged up to), and the
    engine's line count, last time and address→name map (JSON).
``bans_state(jail, state)``
    One JSON document per jail: fail list, ban list, service clock.
``bans_history(ip, jail, bancount, timeofban, bantime)``
    fail2ban's ``bips``.
``bans_log(id, jail, ip, time, first, until, bancount, failures, evidence)``
    Every ban ever made, for ``--list`` and audits.

``update_from_store`` reads, judges the events stored since the last run
and writes everything back in one ``BEGIN IMMEDIATE`` transaction, so two
runs never judge the same events twice and a crash leaves the old state.
A jail added to the config starts empty: it judges events from then on
(give log files to judge history).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterator

from maillens.bans import BanEngine
from maillens.banmodel import BanRecord
from maillens.events import Event
from maillens.store import EVENT_COLUMNS, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS bans_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bans_state (jail TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bans_history (
    ip TEXT NOT NULL, jail TEXT NOT NULL, bancount INTEGER NOT NULL, timeofban INTEGER NOT NULL,
    bantime REAL NOT NULL, PRIMARY KEY (ip, jail));
CREATE TABLE IF NOT EXISTS bans_log (
    id INTEGER PRIMARY KEY, jail TEXT NOT NULL, ip TEXT NOT NULL, time REAL NOT NULL, first REAL,
    until REAL, bancount INTEGER NOT NULL, failures INTEGER NOT NULL, evidence TEXT);
CREATE INDEX IF NOT EXISTS bans_log_ip ON bans_log (ip);
"""

_DATA_COLUMNS = tuple(c for c in EVENT_COLUMNS if c not in ("ts", "day", "kind", "program", "pid", "queue_id", "raw"))


def ensure_tables(store: Store) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            store.connection.execute(statement)


def _stored_events(store: Store, after_id: int, classifier: Any) -> Iterator[tuple[int, Event]]:
    """Stored events after ``after_id`` as full events.

    The raw line is classified again (pure, cheap) so that fields the
    events table does not keep (postscreen ``action``, ``after``) are there;
    the stored time stamp wins, since year inference needs the whole file.
    """
    cols = ("id", *EVENT_COLUMNS)
    cur = store.connection.execute(f"SELECT {', '.join(cols)} FROM events WHERE id > ? ORDER BY id", (after_id,))
    for row in cur:
        rec = dict(zip(cols, row))
        ts = datetime.fromtimestamp(rec["ts"], timezone.utc) if rec["ts"] is not None else None
        raw = rec["raw"] or ""
        ev = classifier.classify(raw) if raw else Event(kind=rec["kind"] or "other")
        if ev.kind != rec["kind"]:  # the rules changed since ingest: trust the store
            ev = Event(kind=rec["kind"], raw=raw, program=rec["program"], pid=rec["pid"], queue_id=rec["queue_id"],
                       data={c: rec[c] for c in _DATA_COLUMNS if rec[c] is not None})  # fmt: skip
        ev.ts = ts
        yield int(rec["id"]), ev


def _load(store: Store, engine: BanEngine) -> int:
    conn = store.connection
    meta = dict(conn.execute("SELECT key, value FROM bans_meta"))
    engine.load_state({
        "lines": int(meta.get("lines", 0)),
        "last_time": json.loads(meta["last_time"]) if "last_time" in meta else None,
        "names": json.loads(meta.get("names", "{}")),
        "jails": {j: json.loads(s) for j, s in conn.execute("SELECT jail, state FROM bans_state")},
    })  # fmt: skip
    engine.history.load_list(conn.execute("SELECT ip, jail, bancount, timeofban, bantime FROM bans_history"))
    return int(meta.get("last_event_id", 0))


def _save(store: Store, engine: BanEngine, last_id: int, new_bans: list[BanRecord]) -> None:
    conn = store.connection
    state = engine.state_dict()
    meta = {
        "last_event_id": str(last_id),
        "lines": str(state["lines"]),
        "last_time": json.dumps(state["last_time"]),
        "names": json.dumps(state["names"], separators=(",", ":")),
    }
    conn.executemany("INSERT OR REPLACE INTO bans_meta VALUES (?, ?)", list(meta.items()))
    conn.execute("DELETE FROM bans_state")
    conn.executemany(
        "INSERT INTO bans_state VALUES (?, ?)",
        [(name, json.dumps(s, separators=(",", ":"))) for name, s in state["jails"].items()],
    )
    if engine.settings.history is not None and engine.last_time is not None:
        engine.history.purge(engine.last_time)
    conn.execute("DELETE FROM bans_history")
    conn.executemany("INSERT INTO bans_history VALUES (?, ?, ?, ?, ?)", engine.history.to_list())
    conn.executemany(
        "INSERT INTO bans_log (jail, ip, time, first, until, bancount, failures, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.jail, r.ip, r.time, r.first, r.until, r.ban_count, r.failures, json.dumps(r.matches)) for r in new_bans],
    )


def update_from_store(store: Store, engine: BanEngine, *, until: float | None = None, classifier: Any = None) -> int:
    """Judge the events stored since the last run; returns how many were judged.

    Events after ``until`` (epoch seconds) are left for a later run.
    """
    from maillens.classify import Classifier

    clf = classifier or Classifier(tz=timezone.utc)
    new_bans: list[BanRecord] = []
    for j in engine.jails:
        j.state.on_ban = new_bans.append
    ensure_tables(store)
    with store.transaction():
        last_id = _load(store, engine)
        judged = 0
        for event_id, ev in _stored_events(store, last_id, clf):
            if until is not None and ev.ts is not None and ev.ts.timestamp() > until:
                break
            engine.feed_events([ev])
            last_id = event_id
            judged += 1
        _save(store, engine, last_id, new_bans)
    return judged


def ban_log(store: Store, ip: str | None = None) -> list[dict[str, Any]]:
    """Every recorded ban (oldest first), optionally of one address."""
    ensure_tables(store)
    sql = "SELECT jail, ip, time, first, until, bancount, failures, evidence FROM bans_log"
    args: tuple[Any, ...] = ()
    if ip is not None:
        sql += " WHERE ip = ?"
        args = (ip,)
    cols = ("jail", "ip", "time", "first", "until", "bancount", "failures", "evidence")
    out = []
    for row in store.connection.execute(sql + " ORDER BY id", args):
        rec = dict(zip(cols, row))
        rec["evidence"] = json.loads(rec["evidence"] or "[]")
        out.append(rec)
    return out
