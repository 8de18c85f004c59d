"""Ingest from a real systemd journal: equal to the same lines from a file, resumed by cursor.

Journal files are made by the real ``systemd-journal-remote`` from journal
export format written here, and read back by the real ``journalctl`` (what
``maillens ingest --journal-dir`` runs).  Every check compares the store with
one clean ingest of the same lines from a plain file.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from maillens.errors import ExitStatus
from tests.conftest import require_tool
from tests.test_ingest import ENV, MAILLENS, clean_run, corpus_lines, snapshot

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "6a1f0c2b9d8e4f7a8b3c2d1e0f9a8b7c"
_LINE = re.compile(rb"^(\S+) (\S+) ([^\s\[:]+)\[(\d+)\]: (.*)$", re.S)
#: A reject with bytes that are not UTF-8 (journalctl prints its MESSAGE as a list of numbers),
#: after the corpus's last line: within one boot the journal's time only goes forward.
BAD = (b"2026-11-10T07:27:00.000000+00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a\xff\xfe[192.0.2.7]: "
       b"554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org; "
       b"from=<x@\xc3(.example> to=<y@example.org> proto=ESMTP helo=<\x80\x81>\n")


def _field(key: str, value: bytes) -> bytes:
    """One field in export format; the binary-safe form for anything but printable ASCII."""
    if all(0x20 <= b < 0x7F for b in value):
        return key.encode() + b"=" + value + b"\n"
    return key.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


def export(lines: list[bytes], *, facility: int = 2, extra: list[tuple[str, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """Journal export format for syslog lines ``TIME host ident[pid]: message``."""
    out = []
    for line in lines:
        m = _LINE.match(line.rstrip(b"\n"))
        assert m, line
        usec = int(datetime.fromisoformat(m.group(1).decode()).timestamp() * 1_000_000 + 0.5)
        fields = [("__REALTIME_TIMESTAMP", str(usec).encode()),
                  ("__MONOTONIC_TIMESTAMP", str(usec - 1_700_000_000_000_000).encode()),
                  ("_BOOT_ID", BOOT_ID.encode()), ("_HOSTNAME", m.group(2)), ("SYSLOG_IDENTIFIER", m.group(3)),
                  ("SYSLOG_PID", m.group(4)), ("_PID", m.group(4)), ("SYSLOG_FACILITY", str(facility).encode()),
                  ("PRIORITY", b"6"), ("MESSAGE", m.group(5)), *extra]  # fmt: skip
        out.append(b"".join(_field(k, v) for k, v in fields) + b"\n")
    return b"".join(out)


def write_journal(path: Path, data: bytes) -> None:
    """Add entries to a journal file with the real systemd-journal-remote (appends when it exists)."""
    tool = require_tool(JOURNAL_REMOTE, reason="apt install systemd-journal-remote")
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([tool, "-o", str(path), "-"], input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def run_ingest(db: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``maillens ingest --db DB ARGS``: (lines it says it read, stderr)."""
    require_tool("journalctl")
    proc = subprocess.run([*MAILLENS, "ingest", "--db", str(db), *args], capture_output=True, text=True,
                          env=env or ENV)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"ingested (\d+) lines", proc.stderr)
    assert m, proc.stderr
    return int(m.group(1)), proc.stderr


def _cut(lines: list[bytes], at: int) -> int:
    """The first index at or after ``at`` whose time stamp is later than the line before it:
    a journal file added later is merged by time, so a part must not share one with the last."""
    while lines[at][:32] == lines[at - 1][:32]:
        at += 1
    return at


def test_journal_ingest_equals_the_file_and_resumes_by_cursor(tmp_path: Path) -> None:
    lines = corpus_lines() + [BAD]
    jdir = tmp_path / "journal"
    db = tmp_path / "m.db"
    a, b = _cut(lines, 12000), _cut(lines, 24000)
    noise = export(corpus_lines(300)[-50:], facility=3)  # not facility mail: not what mail.log holds
    write_journal(jdir / "one.journal", export(lines[:a]) + noise)
    n, err = run_ingest(db, "--journal-dir", str(jdir))
    assert n == a and "the journal" in err
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == 0  # nothing new
    write_journal(jdir / "one.journal", export(lines[a:b]))  # journal-remote run again: appended
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == b - a
    write_journal(jdir / "two.journal", export(lines[b:]))  # a second journal file
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == len(lines) - b
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == 0
    got = snapshot(db)
    assert got == clean_run(tmp_path, lines)
    assert any("\ufffd" in row[4] for row in got["events"] if row[2] == "192.0.2.7")  # bad bytes kept, replaced
    conn = sqlite3.connect(db)
    (name, cursor, counted), = conn.execute("SELECT name, cursor, lines FROM sources")
    conn.close()
    assert name == "journal:" + str(jdir) and cursor.startswith("s=") and counted == len(lines)


def test_hostile_entries_never_stop_a_run(tmp_path: Path) -> None:
    """Binary junk, a huge message, newlines, no identifier, no message: one line each that has a message."""
    jdir = tmp_path / "journal"
    good = corpus_lines(20)
    data = export(good[:10])
    usec = int(datetime.fromisoformat(good[9][:32].decode()).timestamp() * 1_000_000)
    odd = [
        [("MESSAGE", bytes(range(256)) * 3)],  # every byte value, NUL and newlines included
        [("MESSAGE", b"x" * 70_000)],  # over journalctl's 4 kB JSON limit without --all
        [("MESSAGE", b"first\nsecond\r\nthird")],
        [("MESSAGE", b"\xff\xfe\xfd")],
        [("MESSAGE", "utf-8 \u00e9\u4e2d \U0001f600".encode())],
        [],  # no MESSAGE at all: nothing to read
    ]
    for k, fields in enumerate(odd):
        entry = [("__REALTIME_TIMESTAMP", str(usec + k + 1).encode()),
                 ("__MONOTONIC_TIMESTAMP", str(usec + k + 1 - 1_700_000_000_000_000).encode()),
                 ("_BOOT_ID", BOOT_ID.encode()), ("SYSLOG_FACILITY", b"2"), *fields]  # fmt: skip
        if k % 2:
            entry.append(("SYSLOG_IDENTIFIER", b"we ird[x]: id\n"))
        data += b"".join(_field(key, v) for key, v in entry) + b"\n"
    data += export(good[10:])
    write_journal(jdir / "odd.journal", data)
    db = tmp_path / "m.db"
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == 20 + len(odd) - 1
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT sum(value) FROM counts WHERE name = 'lines'").fetchone()[0] == 25
    conn.close()


def _lines_in(db: Path) -> int:
    try:
        conn = sqlite3.connect(db)
        try:
            return int(conn.execute("SELECT coalesce(sum(value), 0) FROM counts WHERE name = 'lines'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_run_then_a_clean_run_equals_one_clean_run(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("MAILLENS_CRASH_SEED", "77")))
    lines = corpus_lines(12000)
    jdir = tmp_path / "journal"
    write_journal(jdir / "x.journal", export(lines))
    require_tool("journalctl")
    args = ["ingest", "--batch-lines", "100", "--journal-dir", str(jdir)]
    db = tmp_path / "m.db"
    kills = 0
    done = 0
    for k in range(6):  # killed once before its first commit, then each time after a random amount of work
        proc = subprocess.Popen([*MAILLENS, *args, "--wait", "30", "--db", str(db)], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = done + (rng.randint(200, 1800) if k else 10**9)
        deadline = time.monotonic() + (0.2 if not k else 60)
        while proc.poll() is None and _lines_in(db) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert _lines_in(db) >= done
        done = _lines_in(db)
    assert kills >= 5 and 0 < done < len(lines), (kills, done)
    proc = subprocess.run([*MAILLENS, *args, "--db", str(db)], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(db) == clean_run(tmp_path, lines)


def test_missing_journalctl_is_one_plain_error(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = subprocess.run([*MAILLENS, "ingest", "--db", str(tmp_path / "m.db"), "--journal"], capture_output=True,
                          text=True, env={**ENV, "PATH": str(empty)})
    assert proc.returncode != 0
    said = proc.stderr.strip().splitlines()
    assert len(said) == 1 and "journalctl" in said[0] and "install systemd" in said[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_journal_dir_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([*MAILLENS, "ingest", "--db", str(tmp_path / "m.db"), "--journal-dir",
                           str(tmp_path / "nope")], capture_output=True, text=True, env=ENV)
    assert proc.returncode != 0 and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_files_then_the_journal_in_one_run(tmp_path: Path) -> None:
    lines = corpus_lines(3000)
    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(lines[:1500]))
    jdir = tmp_path / "journal"
    at = _cut(lines, 1500)
    write_journal(jdir / "x.journal", export(lines[at:]))
    log.write_bytes(b"".join(lines[:at]))
    db = tmp_path / "m.db"
    assert run_ingest(db, str(log), "--journal-dir", str(jdir))[0] == len(lines)
    assert snapshot(db) == clean_run(tmp_path, lines)


def test_version_2_store_gains_the_cursor_column(tmp_path: Path) -> None:
    """An existing store (schema 2, a file source) is migrated and keeps its rows; then the journal goes in."""
    from maillens.store import SCHEMA_VERSION, Store
    from tests.test_store import old_store

    db = old_store(tmp_path / "old.db", 2,
                   "INSERT INTO sources (name, offset, lines) VALUES ('/var/log/mail.log', 42, 7)")
    with Store.open(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.source_state("/var/log/mail.log")["offset"] == 42
        cols = [r[1] for r in store.connection.execute("PRAGMA table_info(sources)")]
        assert "cursor" in cols
    jdir = tmp_path / "journal"
    write_journal(jdir / "x.journal", export(corpus_lines(100)))
    assert run_ingest(db, "--journal-dir", str(jdir))[0] == 100


@pytest.mark.parametrize("flag", [[], ["--journal"]])
def test_without_a_mail_log_the_journal_is_read(tmp_path: Path, flag: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No FILE and no /var/log/mail.log: this host's journal (whatever mail entries it holds)."""
    from click.testing import CliRunner

    import maillens.cli.store_cmd as store_cmd
    from maillens.cli.main import cli

    require_tool("journalctl")
    if not flag:
        monkeypatch.setattr(store_cmd, "DEFAULT_LOG", str(tmp_path / "no-mail.log"))
    monkeypatch.setenv("MAILLENS_CONFIG", "/dev/null")
    result = CliRunner().invoke(cli, ["ingest", "--db", str(tmp_path / "m.db"), *flag])
    assert result.exit_code in (0, ExitStatus.ERROR), result.stderr
    if result.exit_code == 0:
        assert "and the journal" in result.stderr
        conn = sqlite3.connect(tmp_path / "m.db")
        names = [r[0] for r in conn.execute("SELECT name FROM sources")]
        conn.close()
        assert names in ([], ["journal:"])
    else:  # a host whose journal this user may not read: journalctl's reason, in one line
        assert "journalctl failed" in result.stderr


def test_worker_processes_give_the_store_of_one_straight_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's blocks classified in worker processes: the same store as in this process."""
    import maillens.ingest as ingest_mod
    import maillens.journal as journal_mod
    from maillens.journal import JournalIngester
    from maillens.store import Store

    require_tool("journalctl")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(ingest_mod, "POOL_MIN_BYTES", 1 << 16)
    monkeypatch.setattr(journal_mod, "POOL_MIN_BYTES", 1 << 16)
    monkeypatch.setattr(journal_mod, "POOL_BLOCK", 1 << 15)
    lines = corpus_lines(6000)
    jdir = tmp_path / "journal"
    write_journal(jdir / "x.journal", export(lines))
    stores = {}
    try:
        for workers in (1, 2):
            db = tmp_path / f"w{workers}.db"
            with Store.open(db) as store:
                ing = JournalIngester(store, workers=workers, batch_lines=1000)
                pools: list[object] = []
                real = ing._pool_for
                monkeypatch.setattr(ing, "_pool_for", lambda n: pools.append(real(n)) or pools[-1])
                assert ing.run_journal(str(jdir)).lines == len(lines)
                assert (pools[0] is not None) == (workers > 1)
            stores[workers] = snapshot(db)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert stores[2] == stores[1] == clean_run(tmp_path, lines)


def test_without_a_file_the_store_keeps_reading_what_it_read_before(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that followed the journal goes on with the journal when a mail.log appears later
    (and one that followed mail.log does not switch to the journal): no mail is read twice."""
    from click.testing import CliRunner

    import maillens.cli.store_cmd as store_cmd
    from maillens.cli.main import cli
    from maillens.store import Store

    log = tmp_path / "mail.log"
    log.write_bytes(b"\n".join(corpus_lines(50)) + b"\n")
    monkeypatch.setattr(store_cmd, "DEFAULT_LOG", str(log))
    monkeypatch.setenv("MAILLENS_CONFIG", "/dev/null")
    journal_db, file_db = tmp_path / "j.db", tmp_path / "f.db"
    for db, name in ((journal_db, "journal:"), (file_db, str(log))):
        with Store.open(db) as store, store.transaction() as conn:
            store.save_source_state(conn, name, {"offset": 0, "lines": 0}, 0.0)
    assert store_cmd._store_reads_journal(journal_db) is True
    assert store_cmd._store_reads_journal(file_db) is False
    assert store_cmd._store_reads_journal(tmp_path / "new.db") is None
    result = CliRunner().invoke(cli, ["ingest", "--db", str(file_db)])
    lines = log.read_bytes().count(b"\n")
    assert result.exit_code == 0 and f"ingested {lines} lines from 1 file(s):" in result.stderr, result.stderr
    require_tool("journalctl")
    result = CliRunner().invoke(cli, ["ingest", "--db", str(journal_db)])
    assert "from 0 file(s) and the journal" in result.stderr or "journalctl failed" in result.stderr, result.stderr
    conn = sqlite3.connect(journal_db)
    assert [r[0] for r in conn.execute("SELECT name FROM sources")] == ["journal:"]  # mail.log was not read
    conn.close()


def test_a_journal_directory_without_journal_files_is_an_error(tmp_path: Path) -> None:
    """journalctl --directory on an empty directory says nothing and exits 0: a wrong path in a
    timer would 'succeed' for ever."""
    from click.testing import CliRunner

    from maillens.cli.main import cli

    empty = tmp_path / "not-the-journal"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["ingest", "--db", str(tmp_path / "j.db"), "--journal-dir", str(empty)])
    assert result.exit_code != 0 and f"{empty} holds no *.journal files" in result.stderr, result.stderr
