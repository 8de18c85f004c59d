"""Ingest from the systemd journal: mail entries as syslog lines, resumed by cursor.

On a host without ``/var/log/mail.log`` (no rsyslog) Postfix's lines live only
in the journal.  ``journalctl`` is the supported reader of journal files (the
format has no stable library outside systemd), so it is run as a stream::

    journalctl --output=json --all --output-fields=... [--directory=DIR] [--cursor=C] SYSLOG_FACILITY=2

Selection: ``SYSLOG_FACILITY=2`` (mail) is exactly what Debian's rsyslog
writes to ``/var/log/mail.log`` (``mail.*``): Postfix (``syslog_facility =
mail``), policyd-spf, Dovecot, OpenDKIM and the rest of the mail system log
there, and a file ingest and a journal ingest of one host see the same lines.
Selecting by unit (``postfix@-.service``) would miss the helpers Postfix
spawns under other names and every mail program outside the unit.

Each entry becomes the line rsyslog would have written, read by the same
envelope parser as a file: ``RFC3339-time host ident[pid]: message`` with the
time from ``__REALTIME_TIMESTAMP`` in the local zone (as rsyslog writes it),
``_HOSTNAME``, ``SYSLOG_IDENTIFIER`` and ``SYSLOG_PID`` (else ``_PID``).
``MESSAGE`` arrives as a JSON list of bytes when it is not UTF-8; it is kept
as bytes and decoded with replacement downstream, like a file's bad bytes.  A
newline inside a message becomes ``#012`` (rsyslog's escape), so one entry is
one line.

Position: the ``__CURSOR`` of the last entry of a batch is committed in the
same transaction as the batch (``sources.cursor``), exactly like a file's
offset: a killed run loses and repeats nothing.  The next run starts with
``--cursor`` at that entry and drops it (``--after-cursor`` would skip a
second entry when the stored one has been vacuumed away).

What no reader can fix: journal files copied in later whose entries sort
before the cursor (journalctl's order) are not read; entries vacuumed before
a run are gone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

from maillens.errors import InputError
from maillens.ingest import POOL_BLOCK, POOL_MIN_BYTES, IngestStats, Ingester, ingest_lock
from maillens.store import Store

log = logging.getLogger("maillens.journal")

#: Syslog facility 2 is ``mail``: what ``/var/log/mail.log`` holds.
MAIL_FACILITY = 2
FIELDS = ("__REALTIME_TIMESTAMP", "_HOSTNAME", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "_PID", "MESSAGE")
_UNSAFE = str.maketrans({" ": "_", "\t": "_", "\n": "_", "\r": "_", "[": "_", "]": "_", ":": "_"})


def source_name(directory: str | None) -> str:
    """The ``sources`` row of a journal: ``journal:`` (this host's) or ``journal:DIR``."""
    return "journal:" + (os.path.abspath(directory) if directory else "")


def journalctl() -> str:
    """The journalctl program, or a plain-words error saying what to do."""
    exe = shutil.which("journalctl")
    if exe is None:
        raise InputError(
            "journalctl was not found on PATH (it comes with systemd); install systemd, or give the mail log "
            "file to read, e.g. 'maillens ingest /var/log/mail.log'"
        )
    return exe


def command(directory: str | None, cursor: str | None) -> list[str]:
    """The journalctl command line (``--all``: fields over 4 kB would otherwise be null)."""
    cmd = [journalctl(), "--output=json", "--all", "--no-pager", "--output-fields=" + ",".join(FIELDS)]
    if directory:
        cmd.append("--directory=" + directory)
    if cursor:
        cmd.append("--cursor=" + cursor)
    cmd.append(f"SYSLOG_FACILITY={MAIL_FACILITY}")
    return cmd


def _value(value: Any) -> bytes | None:
    """One JSON field value as bytes: text, a list of byte values (not UTF-8), or several
    values (the field repeated; the first one counts).  Anything else is no value."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list) and value:
        if all(isinstance(b, int) for b in value):
            try:
                return bytes(value)
            except ValueError:
                return None
        return _value(value[0])
    return None


def _text(value: Any, default: str) -> str:
    raw = _value(value)
    text = raw.decode("utf-8", "replace").translate(_UNSAFE) if raw else ""
    return text or default


def entry_line(entry: dict[str, Any]) -> bytes | None:
    """The syslog line rsyslog would have written for one journal entry (None: no message)."""
    message = _value(entry.get("MESSAGE"))
    stamp = _value(entry.get("__REALTIME_TIMESTAMP"))
    if message is None or stamp is None:
        return None
    try:
        usec = int(stamp)
        when = datetime.fromtimestamp(usec // 1_000_000, timezone.utc).astimezone()
    except (ValueError, OverflowError, OSError):
        return None
    when = when.replace(microsecond=usec % 1_000_000)
    host = _text(entry.get("_HOSTNAME"), "localhost")
    ident = _text(entry.get("SYSLOG_IDENTIFIER"), "unknown")
    pid = _text(entry.get("SYSLOG_PID"), "") or _text(entry.get("_PID"), "")
    tag = f"{ident}[{pid}]" if pid.isdigit() else ident
    head = f"{when.isoformat(timespec='microseconds')} {host} {tag}: ".encode()
    return head + message.replace(b"\n", b"#012").replace(b"\r", b"#015") + b"\n"


def entry_blocks(stream: IO[bytes], start: str | None, size: int) -> Iterator[tuple[bytes, int, str]]:
    """``(whole lines, their count, cursor of the block's last entry)`` from journalctl's JSON.

    The entry at ``start`` (the committed cursor, where ``--cursor`` begins) was
    read before and is dropped.  A line that is not a JSON object is skipped
    with a warning: nothing journalctl prints may stop a run.
    """
    lines: list[bytes] = []
    nbytes = 0
    cursor: str | None = None
    first = True
    for raw in stream:
        try:
            entry = json.loads(raw)
        except ValueError:
            log.warning("journalctl printed a line that is not JSON; skipped: %r", raw[:200])
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("__CURSOR"), str):
            continue
        if first:
            first = False
            if start is not None and entry["__CURSOR"] == start:
                continue
        line = entry_line(entry)
        cursor = entry["__CURSOR"]
        if line is not None:
            lines.append(line)
            nbytes += len(line)
        if nbytes >= size:
            yield b"".join(lines), len(lines), cursor
            lines, nbytes = [], 0
    if lines and cursor is not None:
        yield b"".join(lines), len(lines), cursor


class JournalIngester(Ingester):
    """An ``Ingester`` that also reads the journal, through the same classify/count/track/store path."""

    def run_journal(self, directory: str | None = None) -> IngestStats:
        try:
            self._ingest_journal(directory)
        finally:
            self.store.rollback()  # rows written ahead of a batch that was never committed
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        return self.stats

    def _cursor(self, name: str) -> str | None:
        row = self.store.connection.execute("SELECT cursor FROM sources WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _ingest_journal(self, directory: str | None) -> None:
        if directory is not None and not os.path.isdir(directory):
            raise InputError(f"{directory} is not a directory; give --journal-dir a directory of *.journal files")
        if directory is not None and not _has_journal_files(directory):  # (journalctl says nothing, exit 0)
            raise InputError(f"{directory} holds no *.journal files; give --journal-dir the directory they are in "
                             "(e.g. /var/log/journal)")
        name = source_name(directory)
        start = self._cursor(name)
        state = self.store.source_state(name)
        done = int(state["lines"]) if state else 0
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(command(directory, start), stdout=subprocess.PIPE, stderr=errors,
                                    stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            try:
                self._read(name, entry_blocks(proc.stdout, start, min(self.block, POOL_BLOCK)), done)
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.stdout.close()
                rc = proc.wait()
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip()
        if rc != 0:
            first = said.splitlines()[0] if said else f"exit status {rc}"
            hint = ("the journal no longer knows where the last run stopped; " if start and "cursor" in said else "")
            raise InputError(f"journalctl failed ({first}); {hint}check that the journal "
                             f"{directory or 'of this host'} is readable (root, or the systemd-journal group)")
        if said:
            log.warning("journalctl: %s", said.splitlines()[0])

    def _read(self, name: str, blocks: Iterator[tuple[bytes, int, str]], done: int) -> None:
        """Classify, count and track the entries' lines; commit each batch with its last cursor."""
        buffered: list[tuple[bytes, int, str]] = []
        size = 0
        for block in blocks:  # enough to tell whether worker processes pay (cf. _pool_for)
            buffered.append(block)
            size += len(block[0])
            if size >= POOL_MIN_BYTES:
                break

        def all_blocks() -> Iterator[tuple[bytes, int, str]]:
            yield from buffered
            buffered.clear()
            yield from blocks

        reference = datetime.now().astimezone()
        if self._start_source is not None:
            self._start_source(reference)
        pool = self._pool_for(size)  # at least POOL_MIN_BYTES only when the stream went on that far
        source = name
        if pool is None:
            results = self._here(all_blocks(), source, done + 1)
        else:
            results = pool.map(all_blocks(), source, done + 1, reference)
        cursor: str | None = None
        for res, cursor in results:
            self._apply(res)
            if self._lines >= self.batch_lines:
                done = self._commit_cursor(name, cursor, done)
        if (self._lines or self._rows) and cursor is not None:
            self._commit_cursor(name, cursor, done)

    def _commit_cursor(self, name: str, cursor: str, done: int) -> int:
        """One batch and the cursor of its last entry, in one transaction (``offset`` means nothing here)."""

        def save(conn: Any) -> None:
            conn.execute("UPDATE sources SET cursor = ? WHERE name = ?", (cursor, name))

        return self._commit_state(name, {"offset": 0, "lines": done + self._lines}, also=save)


def _has_journal_files(directory: str) -> bool:
    """Any journal file in ``directory`` or below it (journalctl -D reads the machine-id subdirectories)."""
    for _root, _dirs, files in os.walk(directory):
        if any(f.endswith((".journal", ".journal~")) for f in files):
            return True
    return False


def ingest_journal(db: str | os.PathLike[str] | None = None, *, directory: str | None = None,
                   paths: list[str] | None = None, wait: float = 0.0, batch_lines: int | None = None,
                   max_age: float | None = None, workers: int | None = None) -> IngestStats:
    """One ``maillens ingest --journal``: lock, open the store, read FILEs (if any) then the journal."""
    from maillens.ingest import BATCH_LINES
    from maillens.ingestwork import lean_gc
    from maillens.store import default_db_path

    db_path = Path(db) if db is not None else default_db_path()
    journalctl()  # before the lock and the store: a missing tool is the user's first news
    started = time.monotonic()
    with ingest_lock(db_path, wait), lean_gc():
        with Store.open(db_path) as store:
            ing = JournalIngester(store, batch_lines=batch_lines or BATCH_LINES, max_age=max_age, workers=workers)
            if paths:
                ing.run(paths)
                ing._pool = None
            stats = ing.run_journal(directory)
    log.debug("journal ingest took %.2f s", time.monotonic() - started)
    return stats
