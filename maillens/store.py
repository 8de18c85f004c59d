"""The embedded store: one SQLite file with rollups, message records and events.

Why SQLite: one file, no server, transactions.  ``maillens ingest`` commits
the read offsets of its sources in the *same* transaction as the counts,
events and message records those lines produced, so a crash at any point
leaves either all of a batch or none of it.

Schema (version ``SCHEMA_VERSION``; ``PRAGMA user_version`` holds it):

``counts(day, hour, name, value)``
    Hourly counters in long form (``name`` is one of ``COUNTERS``).  The
    daily rollup is the sum over hours.  Days are the log's own calendar
    days (the time stamps as written), ``YYYY-MM-DD``.
``deferred_messages(day, queue_id)``
    Which messages had a deferral on which day: the pflogsumm "deferred"
    figure is the number of *distinct* messages, which does not add up
    across days, so it is counted from here.
``addr_stats(day, kind, key, count, bytes, defers, delay_sum, delay_max)``
    Per sender / recipient address and per sending / recipient domain
    (``kind`` in ``sender``, ``recipient``, ``sender_domain``,
    ``recipient_domain``), pflogsumm's counting; ``delay_sum`` is in
    milliseconds (an integer, so sums never depend on batch boundaries).
``details(day, section, k1, k2, k3, count)``
    Counted detail lines: pflogsumm's nested sections (``deferral``,
    ``bounce``, ``reject``, ``reject_warning``, ``hold``, ``discard``,
    ``smtp_failure``, ``warning``, ``fatal``, ``panic``, ``master``,
    ``no_size``) and maillens's own (``restriction``: restriction, rbl zone,
    stage; ``spf``: result, identity; ``sasl``: client ip, method;
    ``postscreen``: action, client ip).  Missing keys are ``''``.
``messages`` / ``deliveries``
    One row per tracked message (``state``: removed, expired, abandoned,
    incomplete) and one per delivery attempt.
``events``
    One row per line that reports and ban lists look at one by one:
    rejects, reject warnings, SASL failures, SPF results, postscreen
    actions and the connection troubles (``STORED_EVENT_KINDS``).
``sources``
    Where each input stopped: file identity (inode, head signature) and
    byte offset, or for the journal its ``cursor``; committed with the batch
    it covers.
``open_state``
    The tracker's open messages and sessions between runs (JSON).

Other modules may keep their own tables in the same file (e.g. ``bans_*``),
created by themselves with ``CREATE TABLE IF NOT EXISTS``; the version here
covers only the tables above.

Reading (what reports, bans and suggestions use)::

    store = Store.open(path)                    # or Store.open() for the default
    store.days()                                # ['2026-11-09', '2026-11-10']
    store.daily_rollup("2026-11-09")            # {'received': 1198, 'delivered': ...}
    store.hourly("2026-11-09")                  # 24 dicts, hour 0..23
    store.details("2026-11-09", section="restriction")
    store.addr_stats("2026-11-09", kind="sender")
    store.messages(day="2026-11-09", sender="a@b")   # dicts, each with 'deliveries'
    store.events("2026-11-09", kinds=("reject",), client_ip="192.0.2.1")
    store.connection                            # sqlite3 connection, e.g. for pandas.read_sql
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from maillens.errors import ConfigError, StoreError

#: The schema this code writes.  Bump it and add a ``_MIGRATIONS`` step.
SCHEMA_VERSION = 4

#: Hourly counters (``counts.name``).  The first block is pflogsumm's.
COUNTERS: tuple[str, ...] = (
    "received",
    "delivered",
    "forwarded",
    "deferrals",
    "bounced",
    "rejected",
    "reject_warnings",
    "held",
    "discarded",
    "bytes_received",
    "bytes_delivered",
    "expired",
    # maillens's own
    "connections",
    "sasl_failures",
    "lost_connections",
    "bounce_notices",
    "messages_incomplete",
    "lines",
)

#: Event kinds stored one row per line in ``events``.
STORED_EVENT_KINDS = frozenset(
    {
        "reject",
        "reject_warning",
        "sasl_failure",
        "spf",
        "postscreen",
        "too_many_errors",
        "pipelining",
        "lost_connection",
        "timeout",
    }
)

EVENT_COLUMNS: tuple[str, ...] = (
    "ts", "day", "kind", "program", "pid", "queue_id", "client_ip", "client_name", "stage", "code",
    "dsn", "restriction", "rbl", "sender", "recipient", "helo", "sasl_method", "sasl_username",
    "spf_result", "reason", "raw",
)  # fmt: skip

MESSAGE_COLUMNS: tuple[str, ...] = (
    "queue_id", "day", "first_ts", "last_ts", "state", "client_name", "client_ip", "helo",
    "sasl_method", "sasl_username", "message_id", "sender", "size", "nrcpt", "parent_queue_id",
    "bounce_queue_ids", "origin", "connect_ts",
)  # fmt: skip

DELIVERY_COLUMNS: tuple[str, ...] = (
    "ts", "recipient", "orig_recipient", "status", "relay", "delay", "delays", "dsn", "reply",
)  # fmt: skip

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE counts (
    day TEXT NOT NULL, hour INTEGER NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (day, hour, name)) WITHOUT ROWID;
CREATE TABLE deferred_messages (
    day TEXT NOT NULL, queue_id TEXT NOT NULL, PRIMARY KEY (day, queue_id)) WITHOUT ROWID;
CREATE TABLE addr_stats (
    day TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    defers INTEGER NOT NULL DEFAULT 0, delay_sum REAL NOT NULL DEFAULT 0,
    delay_max REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, kind, key)) WITHOUT ROWID;
CREATE TABLE details (
    day TEXT NOT NULL, section TEXT NOT NULL, k1 TEXT NOT NULL, k2 TEXT NOT NULL, k3 TEXT NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (day, section, k1, k2, k3)) WITHOUT ROWID;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, queue_id TEXT, day TEXT, first_ts REAL, last_ts REAL, state TEXT,
    client_name TEXT, client_ip TEXT, helo TEXT, sasl_method TEXT, sasl_username TEXT,
    message_id TEXT, sender TEXT, size INTEGER, nrcpt INTEGER, parent_queue_id TEXT,
    bounce_queue_ids TEXT, origin TEXT, connect_ts REAL);
CREATE INDEX messages_queue_id ON messages (queue_id);
CREATE INDEX messages_day ON messages (day);
CREATE TABLE deliveries (
    message INTEGER NOT NULL REFERENCES messages (id), ts REAL, recipient TEXT,
    orig_recipient TEXT, status TEXT, relay TEXT, delay REAL, delays TEXT, dsn TEXT, reply TEXT);
CREATE INDEX deliveries_message ON deliveries (message);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, ts REAL, day TEXT, kind TEXT, program TEXT, pid INTEGER,
    queue_id TEXT, client_ip TEXT, client_name TEXT, stage TEXT, code INTEGER, dsn TEXT,
    restriction TEXT, rbl TEXT, sender TEXT, recipient TEXT, helo TEXT, sasl_method TEXT,
    sasl_username TEXT, spf_result TEXT, reason TEXT, raw TEXT);
CREATE INDEX events_day_kind ON events (day, kind);
CREATE TABLE sources (
    name TEXT PRIMARY KEY, inode INTEGER, dev INTEGER, offset INTEGER NOT NULL,
    head TEXT, head_len INTEGER, lines INTEGER NOT NULL DEFAULT 0, updated REAL);
CREATE TABLE open_state (kind TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID;
"""

# Version 2: look-ups that trace, bans and suggest need (by address, by client).
_V2 = """
CREATE INDEX messages_sender ON messages (sender);
CREATE INDEX messages_client_ip ON messages (client_ip);
CREATE INDEX deliveries_recipient ON deliveries (recipient);
CREATE INDEX events_client_ip ON events (client_ip, ts);
"""

# Version 3: where a journal source stopped is a journalctl cursor, not a byte offset.
_V3 = """
ALTER TABLE sources ADD COLUMN cursor TEXT;
"""

# Version 4: look-ups by client and sender indexed within each day.  Indexed on the
# address alone, every batch inserts at random places all over the store's whole
# history; within a day, a batch touches only its own days' part of the index
# (measured: no clear gain at 30 days on this machine, the checkpoint's pages are
# mostly the rows themselves).  A look-up over all days asks each day
# (``_ALL_DAYS``): a scan of the small ``counts`` table for the days, then one
# index probe per day.
_V4 = """
DROP INDEX messages_sender;
DROP INDEX messages_client_ip;
DROP INDEX messages_day;
DROP INDEX events_client_ip;
CREATE INDEX messages_day_sender ON messages (day, sender);
CREATE INDEX messages_day_client_ip ON messages (day, client_ip);
CREATE INDEX events_day_client_ip ON events (day, client_ip);
"""

_MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}

#: Every day the store holds (each stored message and event has a counted line on its day):
#: the leading column for the day-first indexes when a look-up spans all days.
_ALL_DAYS = "day IN (SELECT DISTINCT day FROM counts)"


def default_db_path() -> Path:
    """``[store] db`` from the config, else the state dir's ``maillens.db``."""
    from maillens.config import default_state_dir, load_config

    try:
        configured = load_config().section("store").get("db")
    except ConfigError:
        configured = None
    if configured is not None and not isinstance(configured, str):
        raise ConfigError("[store] db must be a file path string")
    return Path(configured) if configured else default_state_dir() / "maillens.db"


def _day(value: str | date | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _day_conditions(start: Any, end: Any) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their arguments) limiting rows to the days ``start``..``end``, if given."""
    if start is None and end is None:
        return [], []
    first, last = _range(start, end)
    return ["day BETWEEN ? AND ?"], [first, last]


def _range(start: str | date | None, end: str | date | None) -> tuple[str, str]:
    """Inclusive day range; one day when ``end`` is omitted, everything when both are."""
    s, e = _day(start), _day(end)
    if s is None and e is None:
        return "0000-00-00", "9999-99-99"
    return (s or "0000-00-00"), (e or s or "9999-99-99")


@dataclass
class Batch:
    """What one batch of lines adds to the store (written in one transaction).

    The accumulating side (``maillens.counting``) fills the dicts; the tracker
    fills ``messages``.  Keys of ``counts`` are ``(day, hour, name)``; of
    ``addr_stats`` ``(day, kind, key)`` with values ``[count, bytes, defers,
    delay_sum, delay_max]``; of ``details`` ``(day, section, k1, k2, k3)``.
    """

    counts: dict[tuple[str, int, str], int] = field(default_factory=dict)
    deferred: set[tuple[str, str]] = field(default_factory=set)
    addr_stats: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    details: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: (notice queue ID, parent queue ID) for notices stored before the link was seen.
    late_links: list[tuple[str, str]] = field(default_factory=list)


class Store:
    """An open store.  Use ``Store.open(path)``; close it (or use ``with``)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.connection = conn
        self.path = path
        self.readonly = readonly

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> "Store":
        """Open (and create or migrate, unless ``readonly``) the store at ``path``.

        A store written by a newer maillens is refused: reading it with an
        older schema in mind could silently misreport.
        """
        p = Path(path) if path is not None else default_db_path()
        if readonly and not p.exists():
            raise StoreError(f"no store at {p}; run 'maillens ingest' first or pass --db")
        if not readonly:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store's directory {p.parent}: {exc.strerror}") from None
        try:
            uri = f"file:{p}?mode=ro" if readonly else str(p)
            conn = sqlite3.connect(uri, uri=readonly, isolation_level=None, timeout=60)
            conn.execute("PRAGMA busy_timeout = 60000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if not os.access(p.parent, os.W_OK) and ("readonly" in str(exc) or "unable to open" in str(exc)):
                raise StoreError(
                    f"cannot open {p}: SQLite must create {p.name}-shm beside it (the store is in WAL mode) "
                    f"and {p.parent} is not writable for this user; run as the user that runs "
                    "'maillens ingest', or give this user write access to that directory"
                ) from None
            raise StoreError(f"{p} is not a maillens store (SQLite says: {exc}); pass another --db") from None
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"store {p} has schema version {version}, newer than this maillens knows "
                f"({SCHEMA_VERSION}); upgrade maillens or pass another --db"
            )
        store = cls(conn, p, readonly)
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if version < SCHEMA_VERSION:
                store._migrate(version)
        elif version < SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"store {p} has an old schema ({version}); run 'maillens ingest' once to upgrade it")
        return store

    def _migrate(self, version: int) -> None:
        """Apply every step after ``version`` in one transaction."""
        conn = self.connection
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
            for step in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.connection.execute("PRAGMA user_version").fetchone()[0])

    # -- writing (ingest) ----------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on any exception."""
        conn = self.connection
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def begin(self) -> sqlite3.Connection:
        """Open a write transaction unless one is open; ``commit()`` or ``rollback()`` ends it.

        ``maillens ingest`` writes a batch's rows as its blocks arrive (SQLite
        works while the worker processes classify the next blocks) and commits
        them with the read offset at the batch's end.
        """
        conn = self.connection
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        return conn

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def write_batch(self, conn: sqlite3.Connection, batch: Batch) -> None:
        """Add one batch's figures (inside ``transaction()`` or ``begin()``)."""
        if batch.counts:
            conn.executemany(
                "INSERT INTO counts VALUES (?, ?, ?, ?) ON CONFLICT (day, hour, name) "
                "DO UPDATE SET value = value + excluded.value",
                [(d, h, n, v) for (d, h, n), v in batch.counts.items()],
            )
        if batch.deferred:
            conn.executemany("INSERT OR IGNORE INTO deferred_messages VALUES (?, ?)", list(batch.deferred))
        if batch.addr_stats:
            conn.executemany(
                "INSERT INTO addr_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, kind, key) DO UPDATE "
                "SET count = count + excluded.count, bytes = bytes + excluded.bytes, "
                "defers = defers + excluded.defers, delay_sum = delay_sum + excluded.delay_sum, "
                "delay_max = max(delay_max, excluded.delay_max)",
                [(d, k, key, *v) for (d, k, key), v in batch.addr_stats.items()],
            )
        if batch.details:
            conn.executemany(
                "INSERT INTO details VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, section, k1, k2, k3) "
                "DO UPDATE SET count = count + excluded.count",
                [(*k, v) for k, v in batch.details.items()],
            )
        self.write_events(conn, batch.events)
        self.write_messages(conn, batch.messages, batch.late_links)

    @staticmethod
    def write_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Rows of ``events`` (``EVENT_COLUMNS`` order)."""
        if rows:
            marks = ", ".join("?" * len(EVENT_COLUMNS))
            conn.executemany(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})", rows)

    def write_messages(self, conn: sqlite3.Connection, messages: list[dict[str, Any]],
                       late_links: list[tuple[str, str]]) -> None:
        """Closed message records, then the notice-to-parent links learnt after a notice was stored."""
        if messages:
            self._write_messages(conn, messages)
        for child, parent in late_links:
            conn.execute(
                "UPDATE messages SET parent_queue_id = ?, origin = coalesce(origin, 'bounce') WHERE id = "
                "(SELECT max(id) FROM messages WHERE queue_id = ?) AND parent_queue_id IS NULL",
                (parent, child),
            )

    @staticmethod
    def _write_messages(conn: sqlite3.Connection, messages: list[dict[str, Any]]) -> None:
        cols = ", ".join(MESSAGE_COLUMNS)
        marks = ", ".join("?" * len(MESSAGE_COLUMNS))
        row = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        next_id = int(row[0]) + 1
        msg_rows = []
        dlv_rows = []
        for m in messages:
            msg_rows.append((next_id, *(m.get(c) for c in MESSAGE_COLUMNS)))
            for d in m.get("deliveries", ()):
                dlv_rows.append((next_id, *(d.get(c) for c in DELIVERY_COLUMNS)))
            next_id += 1
        conn.executemany(f"INSERT INTO messages (id, {cols}) VALUES (?, {marks})", msg_rows)
        if dlv_rows:
            dmarks = ", ".join("?" * (len(DELIVERY_COLUMNS) + 1))
            conn.executemany(
                f"INSERT INTO deliveries (message, {', '.join(DELIVERY_COLUMNS)}) VALUES ({dmarks})", dlv_rows
            )

    def source_names(self) -> list[str]:
        """Every input the store follows (file paths, ``journal:...``)."""
        return [row[0] for row in self.connection.execute("SELECT name FROM sources")]

    def source_state(self, name: str) -> dict[str, Any] | None:
        """The committed read position of input ``name`` (None when never read)."""
        cur = self.connection.execute(
            "SELECT inode, dev, offset, head, head_len, lines FROM sources WHERE name = ?", (name,)
        )
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("inode", "dev", "offset", "head", "head_len", "lines"), row))

    @staticmethod
    def save_source_state(conn: sqlite3.Connection, name: str, state: dict[str, Any], now: float) -> None:
        conn.execute(
            "INSERT INTO sources (name, inode, dev, offset, head, head_len, lines, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET inode = excluded.inode, "
            "dev = excluded.dev, offset = excluded.offset, head = excluded.head, "
            "head_len = excluded.head_len, lines = excluded.lines, updated = excluded.updated",
            (name, state.get("inode"), state.get("dev"), state["offset"], state.get("head"),
             state.get("head_len"), state.get("lines", 0), now),
        )  # fmt: skip

    def load_open_state(self) -> dict[str, dict[str, Any]]:
        """The tracker's open records by ``kind`` then key."""
        out: dict[str, dict[str, Any]] = {}
        for kind, key, state in self.connection.execute("SELECT kind, key, state FROM open_state"):
            out.setdefault(kind, {})[key] = json.loads(state)
        return out

    @staticmethod
    def save_open_state(conn: sqlite3.Connection, state: dict[str, dict[str, Any]]) -> None:
        """Replace the open records (small: bounded by what is open at once)."""
        conn.execute("DELETE FROM open_state")
        conn.executemany(
            "INSERT INTO open_state VALUES (?, ?, ?)",
            [(kind, key, json.dumps(value, separators=(",", ":"))) for kind, recs in state.items()
             for key, value in recs.items()],
        )  # fmt: skip

    # -- reading (reports, bans, suggest, summary) ---------------------------
    def days(self) -> list[str]:
        """Days that have any counted line, oldest first."""
        return [r[0] for r in self.connection.execute("SELECT DISTINCT day FROM counts ORDER BY day")]

    def daily_rollup(self, start: str | date, end: str | date | None = None) -> dict[str, int]:
        """Counters summed over ``start``..``end`` (inclusive; one day without ``end``).

        Includes ``deferred``: distinct messages with a deferral in the range.
        """
        s, e = _range(start, end)
        out = dict.fromkeys(COUNTERS, 0)
        for name, value in self.connection.execute(
            "SELECT name, sum(value) FROM counts WHERE day BETWEEN ? AND ? GROUP BY name", (s, e)
        ):
            out[name] = int(value)
        out["deferred"] = self.deferred_count(s, e)
        return out

    def daily_rollups(self, start: str | date | None = None, end: str | date | None = None) -> dict[str, dict[str, int]]:
        """Per day: the counters of that day (``deferred`` included)."""
        s, e = _range(start, end)
        out: dict[str, dict[str, int]] = {}
        for day, name, value in self.connection.execute(
            "SELECT day, name, sum(value) FROM counts WHERE day BETWEEN ? AND ? GROUP BY day, name", (s, e)
        ):
            out.setdefault(day, dict.fromkeys(COUNTERS, 0))[name] = int(value)
        for day, n in self.connection.execute(
            "SELECT day, count(*) FROM deferred_messages WHERE day BETWEEN ? AND ? GROUP BY day", (s, e)
        ):
            out.setdefault(day, dict.fromkeys(COUNTERS, 0))["deferred"] = int(n)
        for v in out.values():
            v.setdefault("deferred", 0)
        return dict(sorted(out.items()))

    def hourly(self, start: str | date, end: str | date | None = None) -> list[dict[str, int]]:
        """24 dicts (hour 0..23) of counters summed over the day range."""
        s, e = _range(start, end)
        hours = [dict.fromkeys(COUNTERS, 0) for _ in range(24)]
        for hour, name, value in self.connection.execute(
            "SELECT hour, name, sum(value) FROM counts WHERE day BETWEEN ? AND ? GROUP BY hour, name", (s, e)
        ):
            hours[int(hour)][name] = int(value)
        return hours

    def deferred_count(self, start: str | date | None = None, end: str | date | None = None) -> int:
        s, e = _range(start, end)
        row = self.connection.execute(
            "SELECT count(DISTINCT queue_id) FROM deferred_messages WHERE day BETWEEN ? AND ?", (s, e)
        ).fetchone()
        return int(row[0])

    def details(
        self, start: str | date | None = None, end: str | date | None = None, *, section: str | None = None
    ) -> list[tuple[str, str, str, str, int]]:
        """``(section, k1, k2, k3, count)`` summed over the range."""
        s, e = _range(start, end)
        sql = "SELECT section, k1, k2, k3, sum(count) FROM details WHERE day BETWEEN ? AND ?"
        args: list[Any] = [s, e]
        if section is not None:
            sql += " AND section = ?"
            args.append(section)
        sql += " GROUP BY section, k1, k2, k3"
        return [(a, b, c, d, int(n)) for a, b, c, d, n in self.connection.execute(sql, args)]

    def addr_stats(
        self, start: str | date | None = None, end: str | date | None = None, *, kind: str
    ) -> dict[str, list[float]]:
        """``key -> [count, bytes, defers, delay_sum, delay_max]`` for one kind over the range."""
        s, e = _range(start, end)
        return {
            key: [int(c), int(b), int(d), float(ds), float(dm)]
            for key, c, b, d, ds, dm in self.connection.execute(
                "SELECT key, sum(count), sum(bytes), sum(defers), sum(delay_sum), max(delay_max) "
                "FROM addr_stats WHERE day BETWEEN ? AND ? AND kind = ? GROUP BY key",
                (s, e, kind),
            )
        }

    def messages(
        self,
        start: str | date | None = None,
        end: str | date | None = None,
        *,
        queue_id: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        client_ip: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        with_deliveries: bool = True,
    ) -> list[dict[str, Any]]:
        """Message records (oldest first), each with its ``deliveries`` list."""
        where, args = self._message_filter(start, end, queue_id, sender, recipient, client_ip, state)
        sql = f"SELECT id, {', '.join(MESSAGE_COLUMNS)} FROM messages {where} ORDER BY first_ts, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(zip(("id", *MESSAGE_COLUMNS), r)) for r in self.connection.execute(sql, args)]
        if with_deliveries and rows:
            by_id = {r["id"]: r for r in rows}
            for r in rows:
                r["deliveries"] = []
            ids = list(by_id)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = ", ".join("?" * len(chunk))
                for d in self.connection.execute(
                    f"SELECT message, {', '.join(DELIVERY_COLUMNS)} FROM deliveries "
                    f"WHERE message IN ({q}) ORDER BY rowid",
                    chunk,
                ):
                    by_id[d[0]]["deliveries"].append(dict(zip(DELIVERY_COLUMNS, d[1:])))
        return rows

    @staticmethod
    def _message_filter(
        start: Any, end: Any, queue_id: Any, sender: Any, recipient: Any, client_ip: Any, state: Any
    ) -> tuple[str, list[Any]]:
        conds, args = _day_conditions(start, end)
        for col, value in (("queue_id", queue_id), ("client_ip", client_ip), ("state", state)):
            if value is not None:
                conds.append(f"{col} = ?")
                args.append(value)
        if sender is not None:  # addresses match as the tracker matches them, whatever their case
            conds.append("lower(sender) = ?")
            args.append(sender.lower())
        if start is None and end is None and queue_id is None and (sender is not None or client_ip is not None):
            conds.insert(0, _ALL_DAYS)
        if recipient is not None:
            conds.append("id IN (SELECT message FROM deliveries "
                         "WHERE lower(recipient) = ? OR lower(orig_recipient) = ?)")
            args += [recipient.lower(), recipient.lower()]
        return ("WHERE " + " AND ".join(conds)) if conds else "", args

    def events(
        self,
        start: str | date | None = None,
        end: str | date | None = None,
        *,
        kinds: Sequence[str] | None = None,
        client_ip: str | None = None,
        since_ts: float | None = None,
        columns: Sequence[str] = EVENT_COLUMNS,
        sender: str | None = None,
        recipient: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stored events (``STORED_EVENT_KINDS``) in log order; ``ts`` is epoch seconds."""
        bad = [c for c in columns if c not in EVENT_COLUMNS]
        if bad:
            raise ValueError(f"unknown event columns {bad}")
        conds, args = _day_conditions(start, end)
        if kinds:
            conds.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += list(kinds)
        if start is None and end is None and (client_ip is not None or sender is not None or recipient is not None):
            conds.insert(0, _ALL_DAYS)  # a look-up over all days: the day-first indexes need the days
        if client_ip is not None:
            conds.append("client_ip = ?")
            args.append(client_ip)
        for col, address in (("sender", sender), ("recipient", recipient)):
            if address is not None:  # (any case, as the tracker matches; the (day, kind) index narrows it)
                conds.append(f"lower({col}) = ?")
                args.append(address.lower())
        if since_ts is not None:
            conds.append("ts >= ?")
            args.append(since_ts)
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        cur = self.connection.execute(f"SELECT {', '.join(columns)} FROM events {where} ORDER BY id", args)
        for row in cur:
            yield dict(zip(columns, row))

    def sources(self) -> list[dict[str, Any]]:
        cur = self.connection.execute("SELECT name, inode, offset, lines, updated FROM sources ORDER BY name")
        return [dict(zip(("name", "inode", "offset", "lines", "updated"), r)) for r in cur]


def iter_rows(conn: sqlite3.Connection, sql: str, args: Iterable[Any] = ()) -> Iterator[tuple[Any, ...]]:
    """Small helper for callers that want raw tuples."""
    yield from conn.execute(sql, tuple(args))
