"""The store: schema versions, migration, refusal of newer stores, the read API."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from maillens.errors import ExitStatus, StoreError
from maillens.store import SCHEMA_VERSION, Batch, Store

MAILLENS = (sys.executable, "-c", "from maillens.cli.main import cli; cli()")


def _batch(day: str, qid: str, n: int) -> Batch:
    b = Batch()
    b.counts[(day, 8, "delivered")] = n
    b.counts[(day, 9, "delivered")] = 1
    b.deferred.add((day, qid))
    b.addr_stats[(day, "recipient_domain", "example.org")] = [n, 100 * n, 1, 2.0 * n, float(n)]
    b.details[(day, "restriction", "reject_rbl_client", "zen.spamhaus.org", "RCPT")] = n
    b.events.append((1.0, day, "reject", "postfix/smtpd", 1, None, "192.0.2.1", "x.example", "RCPT", 554,
                     "5.7.1", "reject_rbl_client", "zen.spamhaus.org", "a@b", "c@d", "helo", None, None, None,
                     "blocked", "raw line"))
    b.messages.append({"queue_id": qid, "day": day, "first_ts": 2.0, "sender": "s@example.org",
                       "deliveries": [{"recipient": "r@example.org", "status": "sent", "delay": 0.5}]})
    return b


def test_new_store_has_current_schema(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db") as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rollups_add_up_across_batches_and_days(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db") as store:
        for batch in (_batch("2026-11-09", "Q1", 3), _batch("2026-11-09", "Q1", 2), _batch("2026-11-10", "Q1", 4)):
            with store.transaction() as conn:
                store.write_batch(conn, batch)
        assert store.days() == ["2026-11-09", "2026-11-10"]
        day = store.daily_rollup("2026-11-09")
        assert (day["delivered"], day["deferred"]) == (3 + 1 + 2 + 1, 1)
        both = store.daily_rollup("2026-11-09", "2026-11-10")
        assert (both["delivered"], both["deferred"]) == (12, 1)  # the same message deferred on both days
        assert store.hourly("2026-11-09")[8]["delivered"] == 5
        assert store.addr_stats("2026-11-09", "2026-11-10", kind="recipient_domain")["example.org"] == [9, 900, 3, 18.0, 4.0]
        assert store.details(section="restriction") == [("restriction", "reject_rbl_client", "zen.spamhaus.org", "RCPT", 9)]
        assert [e["client_ip"] for e in store.events("2026-11-10", kinds=("reject",))] == ["192.0.2.1"]
        msgs = store.messages(recipient="r@example.org")
        assert len(msgs) == 3 and msgs[0]["deliveries"][0]["status"] == "sent"
        assert store.messages("2026-11-10", sender="s@example.org")[0]["queue_id"] == "Q1"


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.db") as store:
        with pytest.raises(RuntimeError):
            with store.transaction() as conn:
                store.write_batch(conn, _batch("2026-11-09", "Q1", 3))
                store.save_source_state(conn, "/var/log/mail.log", {"offset": 99}, 0.0)
                raise RuntimeError("crash")
        assert store.days() == [] and store.source_state("/var/log/mail.log") is None


def old_store(db: Path, version: int, *rows_sql: str) -> Path:
    """A store as maillens wrote it at schema ``version`` (its migrations up to there), with rows."""
    from maillens.store import _MIGRATIONS

    conn = sqlite3.connect(db)
    conn.executescript("".join(_MIGRATIONS[v] for v in range(1, version + 1)))
    for sql in rows_sql:
        conn.execute(sql)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return db


def test_version_1_store_is_migrated(tmp_path: Path) -> None:
    db = old_store(tmp_path / "old.db", 1, "INSERT INTO counts VALUES ('2026-01-01', 3, 'received', 7)")
    with Store.open(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.daily_rollup("2026-01-01")["received"] == 7
        indexes = {r[0] for r in store.connection.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"messages_day_sender", "events_day_client_ip", "messages_day_client_ip"} <= indexes


def test_newer_store_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this maillens knows"):
        Store.open(db)
    proc = subprocess.run([*MAILLENS, "summary", "--db", str(db)], capture_output=True, text=True)
    assert proc.returncode == ExitStatus.DATA
    assert "upgrade maillens" in proc.stderr


def test_not_a_store_and_missing_store(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a maillens store"):
        Store.open(junk)
    with pytest.raises(StoreError, match="run 'maillens ingest' first"):
        Store.open(tmp_path / "none.db", readonly=True)


def test_a_store_in_a_directory_the_reader_cannot_write_says_so(tmp_path: Path) -> None:
    """A postmaster without write access to root's store directory: SQLite cannot create
    the WAL index (-shm) there.  The message says that, not that the file is no store."""
    import os
    import shutil

    from maillens.ingest import ingest

    directory = tmp_path / "store"
    directory.mkdir()
    db = directory / "m.db"
    ingest([str(Path(__file__).resolve().parent.parent / "sample-logs" / "mail.log")], db)
    cmd = [*MAILLENS, "summary", "--db", str(db)]
    if os.geteuid() == 0:  # root writes anywhere: drop the capability that lets it
        from conftest import require_tool

        cmd = [require_tool("setpriv"), "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search", *cmd]
        shutil.chown(directory, user="nobody")
    directory.chmod(0o755 if os.geteuid() == 0 else 0o555)
    db.chmod(0o644)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        directory.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(directory, user="root")
    assert proc.returncode == ExitStatus.DATA, proc.stderr
    assert f"{directory} is not writable for this user" in proc.stderr and proc.stderr.count("\n") == 1
