"""Incremental ingest: read what is new in each log, count it, commit it with its offset.

Reading uses pygtail (``Pygtail``, the user's choice) wrapped in ``StoreTail``
because pygtail alone does not give the guarantees ingest needs.  Where it
falls short, and what this module does instead:

1. pygtail keeps its offset in ``<log>.offset`` beside the log and rewrites it
   in place (open "w", write): a crash can leave it empty and the next run
   starts again at byte 0, counting everything twice.  → Offsets live in the
   store and are committed in the same SQLite transaction as the counts,
   events and message records of the lines they cover (``update_offset_file``
   and ``write_offset_to_file`` are no-ops here).
2. pygtail opens the log in text mode with the locale's codec, strictly: one
   non-UTF-8 byte raises ``UnicodeDecodeError`` and stops the run; its text
   ``tell()`` is an opaque cookie.  → Files are opened in binary; lines are
   decoded with replacement; offsets are byte offsets.
3. pygtail recognises one rotation step (``.1``, ``.1.gz``, dateext) and by
   inode only (and gzip only): after two rotations between runs (``mail.log`` →
   ``mail.log.1`` → ``mail.log.2.gz``) or once compression changed the inode
   it resets to the live file and silently skips the rest.  → The whole rotated
   set is searched for the file we were reading, by a signature of its first
   bytes (which survives rename and compression), then every newer file is
   read in order.  The set is opened at one consistent moment (listed again
   after opening, inode by inode) and read through those handles, so a
   rotation during the run can neither swap a file under its name nor make
   one be read twice.  Rotated files may be plain, gzip, bzip2 or xz, whatever
   their names say (``maillens.logcompress`` reads the magic bytes); a
   compressed file beside its uncompressed source (``mail.log.2.xz`` next to
   ``mail.log.2``) is still being written and is left out until the compressor
   has removed the source.
4. pygtail notices copytruncate only when the file is now *smaller* than the
   offset; truncated-and-regrown past it, it reads from the middle of new
   lines.  → The head signature catches that too; the copy is found by
   signature and read from the old offset first.
5. pygtail hands out a trailing partial line (writer mid-line) unless
   ``full_lines``; and per-line ``readline``/``tell`` is slow.  → Blocks are
   read from pygtail's file handle; only newline-terminated lines are
   consumed from the live file (a rotated file's last line is taken whole).

The first run on a store reads the whole rotated set, oldest first.

Speed: classifying and counting run on blocks of whole lines, in worker
processes for inputs over ``POOL_MIN_BYTES`` (``maillens.ingestwork``); this
process replays, in line order, the compact tuples the tracker needs and the
per-message counting calls, and commits.  Offsets still go only with the data
they cover: a batch is committed at the end offset of its last applied block.

What no reader can fix: lines written between logrotate's copy and its
truncate (copytruncate's documented race) are in neither file.

One ingest runs at a time: ``flock`` on ``<db>.lock``; a second one waits up
to ``wait`` seconds, then stops with ``BusyError``.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pygtail import Pygtail

from maillens import logcompress
from maillens.counting import Counter
from maillens.ingestwork import INHERITED_FDS, BlockPool, BlockResult, BlockWorker, lean_gc, worker_count
from maillens.errors import BusyError, InputError
from maillens.store import Batch, Store
from maillens.tracker import Tracker

log = logging.getLogger("maillens.ingest")

HEAD_LEN = 1024
BLOCK = 4 << 20
BATCH_LINES = 50_000
#: Blocks for worker processes: small enough to keep both busy, big enough to amortise a hand-over.
POOL_BLOCK = 1 << 20
#: A rotated compressed file that breaks off and has not changed for this long is damaged (``_damaged``).
DAMAGED_AFTER = 600
#: Inputs smaller than this are read in this process: starting workers would cost more.
POOL_MIN_BYTES = 2 << 20
_ROTATED_N = re.compile(r"\.(\d+)(\.(?:gz|bz2|xz))?$")
_DATED = re.compile(r"-\d{8}(-\d+)?(\.(?:gz|bz2|xz))?")


class StoreTail(Pygtail):  # type: ignore[misc]
    """pygtail that never writes offset files and reads bytes."""

    def __init__(self, filename: str, offset: int = 0, rotated: str | None = None) -> None:
        super().__init__(filename, offset_file=os.devnull, copytruncate=True, full_lines=True)
        self.offset = offset
        self.rotated_logfile = rotated

    def update_offset_file(self) -> None:  # offsets go to the store
        pass

    def write_offset_to_file(self, offset: Any) -> None:
        pass

    def _filehandle(self) -> Any:
        if not self.fh or self._is_closed():
            name = self.rotated_logfile or self.filename
            raw = open(name, "rb")
            self.fh = logcompress.stream(raw, "plain" if name == self.filename else logcompress.kind_of(raw.fileno()))
            self.fh.seek(self.offset)
        return self.fh


@dataclass
class Segment:
    path: str
    offset: int
    live: bool
    fh: Any = None  # opened when the rotated set was taken, so later renames cannot swap it
    kind: str = "plain"  # plain, gz, bz2 or xz (logcompress.kind_of)


@dataclass
class _Opened:
    name: str
    fh: Any
    fd: int
    kind: str
    size: int  # uncompressed: exact for plain and gzip (ISIZE, below 4 GiB), else an estimate
    size_known: bool = True
    _head: bytes | None = None  # the content's first HEAD_LEN bytes, decompressed once per run

    @property
    def head(self) -> bytes:
        if self._head is None:
            self._head = head_bytes(self.fd, self.kind, HEAD_LEN)
        return self._head


def _open(name: str, live: bool = False) -> _Opened:
    """Open one file of the set; a rotated one's compression is read from its magic bytes."""
    raw = open(name, "rb")
    fd = raw.fileno()
    kind = "plain" if live else logcompress.kind_of(fd)
    size, exact = logcompress.content_size(fd, kind)
    return _Opened(name, logcompress.stream(raw, kind), fd, kind, size, exact)


def head_bytes(fd: int, kind: str | bool, length: int) -> bytes:
    """The first ``length`` bytes of a file's content, without moving its handle."""
    if isinstance(kind, bool):  # the older form: gz or not
        kind = "gz" if kind else "plain"
    return logcompress.head(fd, kind, length)


def _sig(f: _Opened, length: int) -> str | None:
    data = f.head[:length] if length <= HEAD_LEN else head_bytes(f.fd, f.kind, length)
    return hashlib.sha1(data).hexdigest() if len(data) == length else None


def rotated_set(path: str) -> list[str]:
    """The live file and its rotated siblings, newest first.

    Numbered (``mail.log.1``, ``mail.log.2.gz``) and dateext
    (``mail.log-20261109.xz``) names, plain or ``.gz``/``.bz2``/``.xz``.  A
    compressed file whose uncompressed source is still there is left out: the
    compressor (gzip, bzip2, xz, logrotate's compresscmd) writes it beside
    the source and removes the source only when done, so until then it is
    half-written and the source holds the same lines whole.
    """
    numbered: list[tuple[int, str]] = []
    for cand in glob.glob(glob.escape(path) + ".*"):
        m = _ROTATED_N.search(cand[len(path):])
        if m and cand[len(path):] == m.group(0):
            numbered.append((int(m.group(1)), cand))
    dated = [c for c in glob.glob(glob.escape(path) + "-[0-9]*") if _DATED.fullmatch(c[len(path):])]
    strip = logcompress.strip_ext
    dated.sort(key=lambda c: (strip(c), strip(c) == c), reverse=True)  # newest first, plain before compressed
    out = [path] if os.path.exists(path) else []
    out += [c for _, c in sorted(numbered)]
    out += dated
    present = set(out)
    return [c for c in out if c == path or strip(c) == c or strip(c) not in present]


def plan_sources(paths: list[str], known: Iterable[str]) -> list[str]:
    """The logs to read, each once, under the name the store follows it by.

    A log is named by its real path, so a symlink and its target are one
    source (a store that already follows the link's own name keeps it).  A
    path that is a rotated file of another log being read, or of one the store
    already follows (``mail.log*`` on the command line, or ``mail.log.1`` after
    ``mail.log``), is read as part of that log and not again on its own: its
    lines would be counted twice.
    """
    followed = set(known)
    by_target = {os.path.realpath(f): f for f in followed if os.path.isabs(f)}  # (a followed link's own name)
    names: list[str] = []
    for path in paths:
        plain = os.path.abspath(path)
        real = os.path.realpath(plain)
        name = plain if plain in followed else by_target.get(real, real)
        if name not in names:
            names.append(name)
    families = {log: set(rotated_set(log)) for log in followed.union(names) if os.path.isabs(log)}
    out: list[str] = []
    for name in names:
        owner = next((log for log, family in families.items() if log != name and name in family), None)
        if owner is None:
            out.append(name)
        else:
            log.warning("%s is a rotated file of %s, which reads it: not read again on its own "
                        "(its lines would count twice)", name, owner)
    return out


def _close(files: list[_Opened]) -> None:
    for f in files:
        f.fh.close()


def snapshot(path: str, attempts: int = 8) -> list[_Opened]:
    """The rotated set opened at one consistent moment, newest first, one handle per content.

    Listing and opening race with logrotate's renames, so the names are listed
    again after opening: if any name now leads to another file, try again.  A
    compressed file with the same first bytes as a newer one (the same content
    twice) is dropped; ``rotated_set`` already leaves out one still being written.
    """
    for attempt in range(attempts):
        names = rotated_set(path)
        opened: list[_Opened] = []
        try:
            for name in names:
                opened.append(_open(name, name == path))
            stable = rotated_set(path) == names and all(
                os.stat(f.name).st_ino == os.fstat(f.fd).st_ino for f in opened
            )
        except OSError:
            stable = False
        if stable:
            out: list[_Opened] = []
            seen: set[str] = set()
            for f in opened:
                sig = _sig(f, HEAD_LEN)
                if sig is not None and sig in seen:
                    f.fh.close()
                    continue
                if sig is not None:
                    seen.add(sig)
                out.append(f)
            return out
        _close(opened)
        time.sleep(0.05 * (attempt + 1))
    raise InputError(f"{path} keeps changing while its rotated set is read (logrotate running?); run again")


def resolve(path: str, state: dict[str, Any] | None) -> list[Segment]:
    """Where to read from: the file we were in (found by signature), then every newer one.

    The segments carry open handles: what they read cannot be swapped by a
    rotation that happens afterwards.
    """
    files = snapshot(path)
    chosen: list[Segment] = []
    if state is None:  # first run: the whole rotated set, oldest first (history for past-day reports)
        chosen = [Segment(f.name, 0, f.name == path, f.fh, f.kind) for f in reversed(files)]
    elif not int(state.get("offset") or 0) or not state.get("head_len"):
        chosen = [Segment(f.name, 0, True, f.fh, f.kind) for f in files if f.name == path]
    else:
        offset, head, head_len = int(state["offset"]), state["head"], int(state["head_len"])
        for i, f in enumerate(files):
            # an estimated size (bzip2, xz) never rules a file out: the signature decides
            if (f.size >= offset or not f.size_known) and _sig(f, head_len) == head:
                chosen = [Segment(f.name, offset, f.name == path, f.fh, f.kind)]
                chosen += [Segment(g.name, 0, g.name == path, g.fh, g.kind) for g in reversed(files[:i])]
                break
        else:
            log.warning("%s: the file last read (offset %d) is not in its rotated set any more; "
                        "reading %s from the start", path, offset, path)
            chosen = [Segment(f.name, 0, True, f.fh, f.kind) for f in files if f.name == path]
    keep = {id(s.fh) for s in chosen}
    _close([f for f in files if id(f.fh) not in keep])
    return chosen


@contextmanager
def ingest_lock(db: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold ``<db>.lock`` exclusively for the duration."""
    lock_path = Path(str(db) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    INHERITED_FDS.add(fd)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"another 'maillens ingest' is running on {db} (lock {lock_path}); "
                        "wait for it or pass --wait SECONDS"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        INHERITED_FDS.discard(fd)
        os.close(fd)


@dataclass
class IngestStats:
    lines: int = 0
    batches: int = 0
    messages: int = 0
    events: int = 0
    files: int = 0


class Ingester:
    """Reads sources into one store; ``run()`` is one ``maillens ingest``.

    Per block of lines, classifying and counting (``ingestwork.BlockWorker``)
    run in worker processes when the input is big enough to repay starting
    them, else here; the tracker, the per-message counting state and the
    store are fed here, in line order, from the blocks' small results.
    """

    def __init__(self, store: Store, *, batch_lines: int = BATCH_LINES,
                 classify: Callable[..., Any] | None = None, max_age: float | None = None,
                 workers: int | None = None) -> None:
        self.store = store
        self.batch_lines = batch_lines
        self.block = max(1 << 14, min(BLOCK, batch_lines * 160))
        self._start_source: Callable[[Any], None] | None = None
        if classify is None:
            from maillens.ingestscan import IngestScanner

            self.worker: BlockWorker = IngestScanner()
            self._start_source = self.worker.years.reset  # type: ignore[union-attr]
        else:
            self.worker = BlockWorker(classify, None)
        # a caller's own classifier stays in this process (it may hold state we cannot seed)
        self.workers = (worker_count() if workers is None else workers) if self._start_source else 1
        self._pool: BlockPool | None = None
        self.counter = Counter()
        self.tracker = Tracker(on_evict=self.counter.forget, **({"max_age": max_age} if max_age else {}))
        opened = store.load_open_state()
        self.counter.restore(opened.get("counter", {}))
        self.tracker.restore(opened)
        self.stats = IngestStats()
        self._rows: list[tuple[Any, ...]] = []
        self._lines = 0

    def run(self, paths: list[str]) -> IngestStats:
        try:
            for path in plan_sources(paths, self.store.source_names()):
                self._ingest_path(path)
        finally:
            self.store.rollback()  # rows written ahead of a batch that was never committed
            if self._pool is not None:
                self._pool.close()
        return self.stats

    # -- one configured source -------------------------------------------------------
    def _ingest_path(self, path: str) -> None:
        if not os.path.exists(path) and not rotated_set(path):
            raise InputError(f"{path} does not exist; pass the mail log to read (e.g. /var/log/mail.log)")
        for _ in range(6):  # a rotation during the read → resolve again from what was committed
            state = self.store.source_state(path)
            segs = resolve(path, state)
            log.debug("resolve %s from %s: %s", path, state, [(s.path, s.offset) for s in segs])
            progressed = moved = False
            try:
                for i, seg in enumerate(segs):
                    lines_before = int(state["lines"]) if state and i == 0 else 0
                    did, moved = self._read_segment(path, seg, lines_before)
                    log.debug("read %s@%d: committed=%s moved=%s", seg.path, seg.offset, did, moved)
                    progressed |= did
                    if moved and _damaged(seg):
                        log.warning("%s breaks off and has not changed for %d minutes: it is damaged, not still "
                                    "being written; what follows the break is lost, newer files are read",
                                    seg.path, DAMAGED_AFTER // 60)
                        moved = False
                        continue
                    if moved:
                        break
            finally:
                for seg in segs:
                    seg.fh.close()
            if not progressed and not moved:
                return

    def _read_segment(self, name: str, seg: Segment, lines_done: int) -> tuple[bool, bool]:
        """Read one file from ``seg.offset`` to its end, committing every batch.

        Returns (committed anything, the file changed under us → resolve again).
        ``known`` holds the file's first bytes as verified (at resolve time, or
        taken from the blocks read); after every block of the live file its
        head must still equal them, else it was truncated (copytruncate) and
        the block is dropped.  Blocks already read before that are committed.
        """
        tail = StoreTail(name, seg.offset, None if seg.live else seg.path)
        tail.fh = seg.fh  # pygtail reads the handle opened with the snapshot
        fh = tail._filehandle()
        plain = seg.kind == "plain"
        fd = fh.fileno()
        try:
            fh.seek(seg.offset)  # a compressed file is decompressed up to there
        except logcompress.DECOMPRESS_ERRORS:
            return False, True  # a compressed file that breaks off before the offset: resolve again
        reader = _SegmentReader(seg, fh, fd, plain, head_bytes(fd, seg.kind, min(seg.offset, HEAD_LEN)))
        from datetime import datetime

        reference = datetime.fromtimestamp(os.fstat(fd).st_mtime).astimezone()
        if self._start_source is not None:  # traditional time stamps get their year from the file's time
            self._start_source(reference)
        remaining = _content_size(fd, seg.kind) - seg.offset  # bzip2/xz: an estimate, enough for this
        pool = self._pool_for(remaining)
        lineno = lines_done
        progressed = False
        try:
            if pool is None:
                results = self._here(reader.blocks(self.block), seg.path, lineno + 1)
            else:
                results = pool.map(reader.blocks(min(self.block, POOL_BLOCK)), seg.path, lineno + 1, reference)
            for res, end in results:
                self._apply(res)
                if self._lines >= self.batch_lines:
                    lineno = self._commit(name, fd, reader.known, end, lineno)
                    progressed = True
            if self._lines or self._rows:
                lineno = self._commit(name, fd, reader.known, reader.committable, lineno)
                progressed = True
            if progressed:
                self.stats.files += 1
        finally:
            fh.close()
        return progressed, reader.moved

    def _here(self, blocks: Iterator[tuple[bytes, int, int]], source: str, lineno: int
              ) -> Iterator[tuple[BlockResult, int]]:
        for data, nlines, end in blocks:
            yield self.worker.run(data, source, lineno), end
            lineno += nlines

    def _pool_for(self, remaining: int) -> BlockPool | None:
        """Worker processes, started once, when this input is big enough to repay them."""
        if self.workers <= 1 or remaining < POOL_MIN_BYTES:
            return None
        if self._pool is None:
            self._pool = BlockPool(self.workers)
        return self._pool

    def _apply(self, res: BlockResult) -> None:
        """One block's result, in line order: counter figures, per-message calls, tracker, rows."""
        lines, counts, deferred, addr, details, ops, rows, _years = res
        counter = self.counter
        counter.merge(counts, deferred, addr, details)
        feed, replay = self.tracker.feed_compact, counter.apply
        for op in ops:
            if len(op[0]) == 1:
                replay(op)
            else:
                feed(op)
        self._rows += rows
        self._lines += lines
        self._write_ahead()

    def _commit(self, name: str, fd: int, known: bytes, end: int, lineno: int) -> int:
        """Write what the applied blocks added, with the offset they end at, in one transaction."""
        head_len = min(HEAD_LEN, end, len(known))
        st = os.fstat(fd)
        state = {"inode": st.st_ino, "dev": st.st_dev, "offset": end,
                 "head": hashlib.sha1(known[:head_len]).hexdigest(), "head_len": head_len,
                 "lines": lineno + self._lines}
        return self._commit_state(name, state)

    def _commit_state(self, name: str, state: dict[str, Any],
                      also: Callable[[Any], None] | None = None) -> int:
        """Write what the applied blocks added and where they end (``state``) in one
        transaction; ``also(conn)`` adds a source's own position (the journal's cursor)."""
        lineno = int(state["lines"])
        counts, deferred, addr, details = self.counter.drain()
        for day, n in self.tracker.incomplete.items():
            counts[(day, 0, "messages_incomplete")] = counts.get((day, 0, "messages_incomplete"), 0) + n
        self.tracker.incomplete = {}
        messages = self.tracker.drain()
        rows, self._rows = self._rows, []
        batch = Batch(counts=counts, deferred=deferred, addr_stats=addr, details=details, events=rows,
                      messages=messages, late_links=self.tracker.late_links)
        self.tracker.late_links = []
        open_state = self.tracker.open_state()
        open_state["counter"] = self.counter.open_state()
        conn = self.store.begin()  # open since the batch's first block (``_write_ahead``), or now
        self.store.write_batch(conn, batch)
        self.store.save_source_state(conn, name, state, time.time())
        if also is not None:
            also(conn)
        self.store.save_open_state(conn, open_state)
        self.store.commit()
        self.stats.lines += self._lines
        self.stats.batches += 1
        self.stats.messages += len(messages)
        self.stats.events += len(rows)
        self._lines = 0
        return lineno

    def _write_ahead(self) -> None:
        """The events and closed messages of the blocks applied so far, into the batch's transaction.

        Written as blocks arrive, so SQLite works while the worker processes
        classify the next blocks instead of after the last one; nothing is
        committed before ``_commit_state`` adds the offset, and a failure
        before then rolls it all back (``run``).
        """
        rows, self._rows = self._rows, []
        messages = self.tracker.drain()
        links, self.tracker.late_links = self.tracker.late_links, []
        if not (rows or messages or links):
            return
        conn = self.store.begin()
        self.store.write_events(conn, rows)
        self.store.write_messages(conn, messages, links)
        self.stats.events += len(rows)
        self.stats.messages += len(messages)


def _damaged(seg: Segment) -> bool:
    """A rotated compressed file that broke off (``moved``) and is old: damaged, not a copy still arriving.

    logrotate compresses in seconds and keeps the source beside the file until
    it is done (``rotated_set`` reads the source meanwhile); a compressed file
    that still breaks off long after its last change will never heal, and
    waiting for it would stop every newer file from being read.
    """
    if seg.live or seg.kind == "plain":
        return False
    try:
        return time.time() - os.stat(seg.path).st_mtime > DAMAGED_AFTER
    except OSError:
        return False


def _replaced(fd: int, path: str) -> bool:
    """The live file was renamed away: its unterminated last line is final."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return True


def _gz_size(fd: int) -> int:
    """A gzip file's uncompressed size (its ISIZE trailer: fine below 4 GiB)."""
    return logcompress.content_size(fd, "gz")[0]


def _content_size(fd: int, kind: str) -> int:
    """The uncompressed size, for ``_pool_for`` only: bzip2 and xz keep no size
    trailer, so theirs is an estimate from the compressed size
    (``logcompress.ESTIMATE_RATIO``); a wrong guess only starts workers for a
    small file or reads a big one in this process, it never changes what is read."""
    return logcompress.content_size(fd, kind)[0]


class _SegmentReader:
    """Whole-line blocks of one segment, with the truncation check after every read."""

    def __init__(self, seg: Segment, fh: Any, fd: int, plain: bool, known: bytes) -> None:
        self.seg, self.fh, self.fd, self.plain, self.known = seg, fh, fd, plain, known
        self.moved = False
        self._broken: BaseException | None = None
        #: The byte offset up to which every yielded block reaches.
        self.committable = seg.offset

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes.  A compressed file is read in ``read1`` steps: its
        ``read(size)`` throws away what it decompressed when the data breaks off
        part-way, and that part is exactly what a file still being written has."""
        if self.plain:
            return self.fh.read(size)  # type: ignore[no-any-return]
        if self._broken is not None:
            raise self._broken
        parts: list[bytes] = []
        got = 0
        while got < size:
            try:
                piece = self.fh.read1(size - got)
            except logcompress.DECOMPRESS_ERRORS as exc:
                if not parts:
                    raise
                self._broken = exc  # hand out what came before; the next read reports the break
                break
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def blocks(self, size: int) -> Iterator[tuple[bytes, int, int]]:
        """``(bytes of whole lines, their line count, offset after them)``."""
        seg, fd, plain = self.seg, self.fd, self.plain
        rpos = pos = seg.offset
        carry = b""
        while True:
            try:
                block = self._read(size)
            except logcompress.DECOMPRESS_ERRORS as exc:
                if plain:
                    raise InputError(f"cannot read {seg.path}: {exc}") from None
                self.moved = True  # a compressed file that breaks off (still being written): resolve again
                return
            known = self.known
            if len(known) < HEAD_LEN and block and rpos <= len(known):
                self.known = known = (known + block[len(known) - rpos :])[:HEAD_LEN]
            if plain and seg.live and os.pread(fd, len(known), 0) != known:
                self.moved = True  # truncated (copytruncate) under us: drop this block
                return
            rpos += len(block)
            if not block:
                if carry and (not seg.live or _replaced(fd, seg.path)):
                    self.committable = pos + len(carry)
                    yield carry, 1, pos + len(carry)
                return
            data = carry + block if carry else block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                pos += cut
                self.committable = pos
                yield data[:cut], data.count(b"\n", 0, cut), pos


def ingest(paths: list[str], db: str | os.PathLike[str] | None = None, *, wait: float = 0.0,
           batch_lines: int = BATCH_LINES, classify: Callable[..., Any] | None = None,
           max_age: float | None = None, workers: int | None = None) -> IngestStats:
    """One ``maillens ingest``: lock, open the store, read every path, unlock."""
    from maillens.store import default_db_path

    db_path = Path(db) if db is not None else default_db_path()
    with ingest_lock(db_path, wait), lean_gc():
        with Store.open(db_path) as store:
            return Ingester(store, batch_lines=batch_lines, classify=classify, max_age=max_age,
                            workers=workers).run(paths)
