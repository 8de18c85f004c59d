"""Incremental ingest: rotation, truncation, bad bytes, partial lines, the lock, SIGKILL.

Every check compares the store after incremental runs with the store after
one clean run over the same lines: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from maillens.errors import ExitStatus
from maillens.ingest import ingest, ingest_lock
from tests.conftest import corpus_dir

MAILLENS = (sys.executable, "-c", "from maillens.cli.main import cli; cli()")
ENV = {**os.environ, "TZ": "UTC", "MAILLENS_CONFIG": "/dev/null"}


def corpus_lines(n: int | None = None) -> list[bytes]:
    data = (corpus_dir("real-postfix-dev") / "maillog.rfc3339").read_bytes().split(b"\n")[:-1]
    return [line + b"\n" for line in data[:n]]


def snapshot(db: Path) -> dict[str, Any]:
    """Everything ingest derives from lines (not ids or wall-clock times)."""
    conn = sqlite3.connect(db)
    out = {
        "counts": sorted(conn.execute("SELECT day, hour, name, value FROM counts")),
        "deferred": sorted(conn.execute("SELECT * FROM deferred_messages")),
        "addr": sorted(conn.execute("SELECT * FROM addr_stats")),
        "details": sorted(conn.execute("SELECT * FROM details")),
        "events": sorted(conn.execute("SELECT ts, kind, client_ip, restriction, raw FROM events")),
        "messages": sorted(conn.execute(
            "SELECT queue_id, day, first_ts, last_ts, state, client_ip, sender, size, nrcpt, parent_queue_id, "
            "bounce_queue_ids FROM messages")),
        "deliveries": sorted(conn.execute(
            "SELECT m.queue_id, d.ts, d.recipient, d.status, d.dsn FROM deliveries d JOIN messages m ON m.id = d.message")),
        "lines": conn.execute("SELECT sum(value) FROM counts WHERE name = 'lines'").fetchone()[0],
    }  # fmt: skip
    conn.close()
    return out


def clean_run(tmp_path: Path, lines: list[bytes]) -> dict[str, Any]:
    ref = tmp_path / "reference"
    ref.mkdir()
    (ref / "all.log").write_bytes(b"".join(lines))
    ingest([str(ref / "all.log")], ref / "ref.db")
    return snapshot(ref / "ref.db")


def rotate_rename(log: Path, compress_older: bool = True) -> None:
    """Debian's logrotate with delaycompress: .N.gz → .N+1.gz, .1 → .2.gz, log → .1, new log."""
    d, name = log.parent, log.name
    nums = sorted((int(p.name[len(name) + 1:].split(".")[0]) for p in d.glob(name + ".*")), reverse=True)
    for n in nums:
        src = d / f"{name}.{n}"
        gz = d / f"{name}.{n}.gz"
        if gz.exists():
            os.rename(gz, d / f"{name}.{n + 1}.gz")
        elif src.exists():
            if compress_older:
                with src.open("rb") as fi, gzip.open(d / f"{name}.{n + 1}.gz", "wb") as fo:
                    shutil.copyfileobj(fi, fo)
                src.unlink()
            else:
                os.rename(src, d / f"{name}.{n + 1}")
    os.rename(log, d / f"{name}.1")
    log.touch()


def rotate_copytruncate(log: Path) -> None:
    rotate_rename_dest = log.parent / (log.name + ".1")
    if rotate_rename_dest.exists():
        with rotate_rename_dest.open("rb") as fi, gzip.open(str(rotate_rename_dest) + ".tmp.gz", "wb") as fo:
            shutil.copyfileobj(fi, fo)
        rotate_rename_dest.unlink()
        nums = sorted((int(p.name[len(log.name) + 1:].split(".")[0]) for p in log.parent.glob(log.name + ".*.gz")
                       if not p.name.endswith(".tmp.gz")), reverse=True)
        for n in nums:
            os.rename(log.parent / f"{log.name}.{n}.gz", log.parent / f"{log.name}.{n + 1}.gz")
        os.rename(str(rotate_rename_dest) + ".tmp.gz", log.parent / f"{log.name}.2.gz")
    shutil.copyfile(log, rotate_rename_dest)
    with log.open("r+b") as fh:
        fh.truncate(0)


def append(log: Path, lines: list[bytes]) -> None:
    with log.open("ab") as fh:
        fh.write(b"".join(lines))


def test_incremental_runs_with_rotations_equal_one_clean_run(tmp_path: Path) -> None:
    lines = corpus_lines(9000)
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    append(log, lines[:2000])
    assert ingest([str(log)], db).lines == 2000
    assert ingest([str(log)], db).lines == 0  # nothing new
    append(log, lines[2000:3000])
    rotate_rename(log)  # unread tail now in mail.log.1
    append(log, lines[3000:4000])
    rotate_rename(log)  # ... and now in mail.log.2.gz (new inode, compressed)
    append(log, lines[4000:5000])
    assert ingest([str(log)], db).lines == 3000
    append(log, lines[5000:6500])
    assert ingest([str(log)], db).lines == 1500
    append(log, lines[6500:7000])
    rotate_copytruncate(log)
    append(log, lines[7000:7200])
    assert ingest([str(log)], db).lines == 700
    # truncated and regrown past the old offset: pygtail alone would read from mid-file
    rotate_copytruncate(log)
    append(log, lines[7200:9000])
    assert ingest([str(log)], db).lines == 1800
    assert not list(tmp_path.glob("*.offset"))  # no pygtail offset files beside the log
    assert snapshot(db) == clean_run(tmp_path, lines)


def test_a_log_named_twice_is_read_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``ingest mail.log*`` (the shell gives the live log and its rotated files), then a
    rotated file again, then the same log through a symlink: each line is counted once."""
    lines = corpus_lines(6000)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "mail.log"
    append(log, lines[:2000])
    rotate_rename(log)
    append(log, lines[2000:4000])
    rotate_rename(log)  # mail.log.2.gz, mail.log.1, mail.log
    append(log, lines[4000:6000])
    db = tmp_path / "m.db"
    given = sorted(str(p) for p in logs.glob("mail.log*"))
    assert len(given) == 3
    assert ingest(given, db).lines == 6000
    assert "mail.log.1 is a rotated file of " in caplog.text
    assert ingest([str(logs / "mail.log.1")], db).lines == 0  # read already, as part of mail.log
    link = tmp_path / "maillog"
    link.symlink_to(log)
    assert ingest([str(link)], db).lines == 0
    assert snapshot(db) == clean_run(tmp_path, lines)
    # a store that has followed a link by its own name: the target named directly is the same log
    db2 = tmp_path / "m2.db"
    from maillens.ingest import plan_sources

    assert plan_sources([str(log), str(link)], [str(link)]) == [str(link)]
    assert ingest([str(logs / "mail.log.2.gz"), str(logs / "mail.log.1"), str(link)], db2).lines == 6000
    assert ingest([str(log)], db2).lines == 0


def test_bad_bytes_and_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    good = corpus_lines(50)
    bad = (b"2026-11-09T08:41:21.000000+00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from a\xff\xfe[192.0.2.7]: "
           b"554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org; "
           b"from=<x@\xc3(.example> to=<y@example.org> proto=ESMTP helo=<\x80\x81>\n")
    append(log, good[:10] + [bad] + good[10:20])
    half = good[20][:30]
    append(log, [half])
    assert ingest([str(log)], db).lines == 21  # the partial line waits for its end
    append(log, [good[20][30:]] + good[21:])
    assert ingest([str(log)], db).lines == 30
    conn = sqlite3.connect(db)
    raw = conn.execute("SELECT raw FROM events WHERE client_ip = '192.0.2.7'").fetchone()[0]
    assert "\ufffd" in raw
    conn.close()
    assert snapshot(db) == clean_run(tmp_path, good[:10] + [bad] + good[10:])


def test_second_ingest_is_refused_while_one_runs(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, corpus_lines(10))
    db = tmp_path / "m.db"
    with ingest_lock(db):
        proc = subprocess.run([*MAILLENS, "ingest", "--db", str(db), str(log)], capture_output=True, text=True,
                              env=ENV)
    assert proc.returncode == ExitStatus.BUSY
    assert "another 'maillens ingest' is running" in proc.stderr
    proc = subprocess.run([*MAILLENS, "ingest", "--db", str(db), str(log)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr


def _lines_in(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT coalesce(sum(value), 0) FROM counts WHERE name = 'lines'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """>= 20 SIGKILLs while lines are appended and the log rotated both ways."""
    rng = random.Random(int(os.environ.get("MAILLENS_CRASH_SEED", "1234")))
    lines = corpus_lines() * 8  # queue IDs repeat between copies: both runs see the same sequence
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    log.touch()
    pos = before = 0
    kills = mid_work = 0
    # how long a run takes here to start, and to start and read an average chunk (CI may be loaded)
    t0 = time.monotonic()
    subprocess.run([*MAILLENS, "ingest", "--db", str(tmp_path / "warm.db"), str(log)], env=ENV, check=True,
                   capture_output=True)
    startup = time.monotonic() - t0
    warm = tmp_path / "warm.log"
    warm.write_bytes(b"".join(lines[:3750]))
    t0 = time.monotonic()
    subprocess.run([*MAILLENS, "ingest", "--batch-lines", "100", "--db", str(tmp_path / "warm2.db"), str(warm)],
                   env=ENV, check=True, capture_output=True)
    full = time.monotonic() - t0
    i = 0
    journal: list[tuple[Any, ...]] = []
    while kills < 22 and i < 60:
        i += 1
        chunk = rng.randint(2500, 5000)
        append(log, lines[pos : pos + chunk])
        pos += chunk
        journal.append((i, "append", pos - chunk, pos))
        if i % 6 == 2:
            rotate_rename(log)
            journal.append((i, "rename"))
        elif i % 6 == 5:
            rotate_copytruncate(log)
            journal.append((i, "copytruncate"))
        proc = subprocess.Popen([*MAILLENS, "-vv", "ingest", "--wait", "30", "--batch-lines", "100", "--db", str(db),
                                 str(log)], env=ENV, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"run{i}.err", "w"))
        time.sleep(rng.uniform(0.8 * startup, max(full, startup + 0.05)))
        if i % 3 == 1:  # rotation while that run may still be reading
            append(log, lines[pos : pos + 200])
            pos += 200
            rotate_rename(log) if i % 2 else rotate_copytruncate(log)
            journal.append((i, "mid", pos - 200, pos, "rename" if i % 2 else "copytruncate"))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            proc.wait()
            done = _lines_in(db)
            mid_work += int(before < done < pos)  # it had committed some batches, not all
            before = done
        proc.wait()
    append(log, lines[pos : pos + 1000])
    lines = lines[: pos + 1000]
    final = subprocess.run([*MAILLENS, "-vv", "ingest", "--db", str(db), str(log)], env=ENV, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    print(f"{kills} SIGKILLs, {mid_work} between two commits of one run")
    assert kills >= 20 and mid_work >= 5
    got, want = snapshot(db), clean_run(tmp_path, lines)
    if got["lines"] != want["lines"]:  # diagnostics for a failure
        print(final.stderr)
        for f in sorted(tmp_path.glob("run*.err"), key=lambda p: int(p.name[3:-4])):
            print("=====", f.name, f.read_text())
        from collections import Counter as _C
        miss = _C(r[4] for r in want["events"]) - _C(r[4] for r in got["events"])
        extra = _C(r[4] for r in got["events"]) - _C(r[4] for r in want["events"])
        idx = {ln.decode("utf-8", "replace").rstrip("\n"): k for k, ln in enumerate(lines)}
        ks = sorted(idx[r] % len(corpus_lines()) for r in miss)
        print("missing", sum(miss.values()), "extra", sum(extra.values()), ks[:3], ks[-3:], "log", journal)
        print("lines", got["lines"], want["lines"], sorted(p.name for p in tmp_path.iterdir()))
        print(sqlite3.connect(db).execute("SELECT * FROM sources").fetchall())
    assert {k: got[k] == want[k] for k in got} == dict.fromkeys(got, True)
    assert got == want


def test_worker_blocks_equal_one_straight_read_across_new_year(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks classified in worker processes give the store of one sequential read, years included.

    The log spans New Year in traditional time stamps (no year in the line);
    some blocks end on a line without an envelope, so the parent's prediction
    of where a block's year inference starts is wrong there and that block is
    classified again from the right state.
    """
    import maillens.ingest as ingest_mod
    from datetime import datetime

    from maillens.ingest import Ingester
    from maillens.store import Store

    src = (corpus_dir("real-postfix-dev") / "maillog").read_bytes().split(b"\n")[:-1][:5000]
    lines: list[bytes] = []
    for first, second in ((b"Dec 30", b"Dec 31"), (b"Dec 31", b"Jan  1"), (b"Jan  1", b"Jan  2")):
        for k, line in enumerate(src):
            day = first if line.startswith(b"Nov  9") else second
            lines.append(day + line[6:] + b"\n")
            if k % 97 == 0:
                lines.append(b"garbage without an envelope\n")
    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(lines))
    # written "before" most of its lines (a skewed clock; the benchmark log too): blocks dated
    # apart from the file's time alone would put January in the wrong year
    when = datetime(2026, 12, 30, 12, 0).astimezone().timestamp()
    os.utime(log, (when, when))
    monkeypatch.setattr(ingest_mod, "POOL_BLOCK", 1 << 14)
    monkeypatch.setattr(ingest_mod, "POOL_MIN_BYTES", 0)
    stores = {}
    for workers in (1, 2):
        db = tmp_path / f"w{workers}.db"
        with Store.open(db) as store:
            ing = Ingester(store, workers=workers)
            assert ing.run([str(log)]).lines == len(lines)
            if workers > 1:
                assert ing._pool is not None and ing._pool._local is not None  # a prediction was redone
        stores[workers] = snapshot(db)
        with Store.open(db, readonly=True) as store:
            assert store.days() == ["2026-12-30", "2026-12-31", "2027-01-01"]
    assert stores[2] == stores[1]


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def test_workers_die_with_a_killed_ingest_and_hold_no_lock(tmp_path: Path) -> None:
    """SIGKILL of a run that started worker processes: they go too, and the next run is not locked out."""
    log = tmp_path / "mail.log"
    append(log, corpus_lines() * 2)  # big enough for worker processes
    db = tmp_path / "m.db"
    proc = subprocess.Popen([*MAILLENS, "ingest", "--db", str(db), str(log)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        workers = _children_of(proc.pid)
        time.sleep(0.01)
    assert workers, "the run ended before it started workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
              for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()
                and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z"]
    again = subprocess.run([*MAILLENS, "ingest", "--db", str(db), str(log)], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert snapshot(db) == clean_run(tmp_path, corpus_lines() * 2)


def test_a_long_ingest_lets_another_writer_in(tmp_path: Path) -> None:
    """``maillens bans`` saves its state in the same store while a long first ingest runs.

    Ingest holds SQLite's write lock for one batch at a time (rows are written as
    blocks arrive, committed with the offset at the batch's end); between batches
    another writer that waits a couple of seconds gets its turn."""
    import sqlite3
    import subprocess
    import sys
    import time

    from maillens.store import Store

    text = (corpus_dir("real-postfix-dev") / "maillog").read_bytes()
    log = tmp_path / "mail.log"
    log.write_bytes(text * 10)
    db = tmp_path / "m.db"
    with Store.open(db) as store:
        store.connection.execute("CREATE TABLE probe (x)")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from maillens.ingest import ingest; "
                             "ingest([sys.argv[1]], sys.argv[2])", str(log), str(db)])
    turns = refused = 0
    try:
        while proc.poll() is None:
            conn = sqlite3.connect(db, timeout=2.5, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO probe VALUES (1)")
                conn.execute("COMMIT")
                turns += 1
            except sqlite3.OperationalError:
                refused += 1
            finally:
                conn.close()
            time.sleep(0.2)
    finally:
        assert proc.wait(timeout=300) == 0
    assert refused == 0
    assert turns >= 3  # it ran long enough to be asked several times
