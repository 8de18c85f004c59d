"""Following log files by name, like ``tail -F``, without losing or repeating a line.

Why this is more than ``readline`` in a loop: mail logs are rotated under the
reader's feet, in two ways, and a live view must survive both:

* **rename and create** (logrotate's default, rsyslog reopening on HUP): the
  name now points at a new inode.  The old file is drained to its end first --
  and kept open for a grace period, because the writer keeps appending to it
  until it reopens -- then the new file is read from offset 0.
* **copytruncate**: the same inode shrinks to 0 (or is refilled past our
  offset before we look; a fingerprint of the bytes just before our offset
  catches that).  Lines written after our last read but before the copy are
  recovered from the copy (``mail.log.1``) when one is found.

A partial last line is held until its newline arrives (a writer may flush
half a line), except when its file is gone for good or input ends.

Waiting costs nothing when idle: on Linux the loop sleeps in ``poll(2)`` on an
inotify descriptor (through ``ctypes`` and libc, no new native dependency),
with a stat every ``safety_interval`` seconds as a net under missed events;
elsewhere it polls ``os.stat`` with an interval that backs off when idle.

``Follower`` knows nothing of classification: it yields ``TailLine`` (source,
1-based line number in the file it came from, text).  ``--since`` needs a
line's time; the caller injects ``line_time(text, source)`` (the source lets
it anchor a year-less syslog time stamp to that file's mtime, as ``parse`` does).
"""

from __future__ import annotations

import glob
import logging
import os
import select
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Iterator

from maillens.errors import InputError, UsageError
from maillens.inotify import DIR_MASK, FILE_MASK, Inotify

log = logging.getLogger(__name__)

CHUNK = 1 << 16
#: Bytes read from one file per ``poll`` call, so one huge file cannot starve the others.
MAX_READ_PER_POLL = 1 << 20
#: A "line" longer than this is cut: hostile input must not grow memory without end.
MAX_LINE = 1 << 20
FINGERPRINT = 64
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")
STDIN = "-"


@dataclass(frozen=True, slots=True)
class TailLine:
    """One complete line: where it came from and its text without the newline."""

    source: str
    lineno: int | None
    text: str


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where reading starts in each file: ``-n N``, ``-n +N`` or ``--since``."""

    last: int | None = 10
    from_line: int | None = None
    since: datetime | None = None

    @classmethod
    def parse_n(cls, text: str) -> "StartAt":
        """``-n`` as tail spells it: ``10`` (last ten lines) or ``+1`` (from line 1)."""
        value = text.strip()
        plus = value.startswith("+")
        digits = value[1:] if plus or value.startswith("-") else value
        if not digits.isdigit():
            raise UsageError(f"-n {text!r}: give a number of lines, e.g. -n 50, or -n +1 to start at line 1")
        n = int(digits)
        if plus:
            return cls(last=None, from_line=max(n, 1))
        return cls(last=n)


@dataclass(eq=False, slots=True)
class _Handle:
    """One open file being read: identity, position, partial line, lines so far."""

    name: str
    fd: int
    ident: tuple[int, int]
    pos: int
    lineno: int
    buf: bytearray = field(default_factory=bytearray)
    fp: bytes = b""  # the bytes just before ``pos``: a truncate-and-refill changes them
    wd: int | None = None
    retired: float | None = None  # monotonic time the name stopped pointing here
    last_growth: float = field(default_factory=time.monotonic)
    eof: bool = False
    skipping: bool = False  # inside an overlong line, dropping bytes up to its newline

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _decode(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


def _split(handle: _Handle, data: bytes) -> list[TailLine]:
    """Append ``data`` to the handle's partial line; return the complete lines.

    A line longer than ``MAX_LINE`` is cut there and the rest dropped up to its
    newline, as ``maillens.sources`` does, so line numbers agree with ``parse``.
    """
    out: list[TailLine] = []
    if handle.skipping:
        nl = data.find(b"\n")
        if nl < 0:
            return out
        data, handle.skipping = data[nl + 1:], False
    buf = handle.buf
    buf += data
    start = 0
    while True:
        nl = buf.find(b"\n", start)
        if nl < 0:
            break
        handle.lineno += 1
        out.append(TailLine(handle.name, handle.lineno, _decode(bytes(buf[start:nl]))))
        start = nl + 1
    del buf[:start]
    if len(buf) > MAX_LINE:
        handle.lineno += 1
        out.append(TailLine(handle.name, handle.lineno, _decode(bytes(buf[:MAX_LINE]))))
        buf.clear()
        handle.skipping = True
    return out


def _flush(handle: _Handle) -> list[TailLine]:
    """The partial last line, when no newline will ever come for it."""
    if not handle.buf:
        return []
    handle.lineno += 1
    line = TailLine(handle.name, handle.lineno, _decode(bytes(handle.buf)))
    handle.buf.clear()
    return [line]


def count_newlines(fd: int, end: int) -> int:
    """Lines before byte ``end``: what makes line numbers agree with ``maillens parse``."""
    count, pos = 0, 0
    while pos < end:
        data = os.pread(fd, min(CHUNK * 16, end - pos), pos)
        if not data:
            break
        count += data.count(b"\n")
        pos += len(data)
    return count


def offset_of_last(fd: int, size: int, n: int) -> int:
    """Byte offset where the last ``n`` lines start (a final unterminated line counts)."""
    if n <= 0:
        return size
    pos = size
    if size and os.pread(fd, 1, size - 1) == b"\n":
        pos -= 1  # the final newline ends the last line, it does not start one
    seen = 0
    while pos > 0:
        step = min(CHUNK, pos)
        data = os.pread(fd, step, pos - step)
        idx = len(data)
        while True:
            idx = data.rfind(b"\n", 0, idx)
            if idx < 0:
                break
            seen += 1
            if seen == n:
                return pos - step + idx + 1
        pos -= step
    return 0


def offset_of_line(fd: int, size: int, line: int) -> int:
    """Byte offset where 1-based line ``line`` starts (``size`` if the file is shorter)."""
    need, pos = line - 1, 0
    while need > 0 and pos < size:
        data = os.pread(fd, CHUNK, pos)
        if not data:
            break
        idx = -1
        while need > 0:
            idx = data.find(b"\n", idx + 1)
            if idx < 0:
                break
            need -= 1
        if need == 0:
            return pos + idx + 1
        pos += len(data)
    return size if need > 0 else 0


def _line_at(fd: int, size: int, off: int) -> tuple[int, bytes]:
    """The first whole line starting at or after ``off``: (its offset, its bytes)."""
    start = off
    if off > 0:
        while True:
            data = os.pread(fd, 4096, start - 1)
            if not data:
                return size, b""
            idx = data.find(b"\n")
            if idx >= 0:
                start = start - 1 + idx + 1
                break
            start += len(data)
            if start >= size:
                return size, b""
    data = os.pread(fd, 8192, start)
    end = data.find(b"\n")
    return start, data if end < 0 else data[:end]


def offset_of_time(fd: int, size: int, since: datetime, line_time: Callable[[str], datetime | None]) -> int:
    """Offset of the first line stamped at or after ``since``, by bisection on time stamps.

    Syslog files are written in time order, so bisection finds the point in a
    few dozen reads even in a gigabyte; lines without a readable time stamp are
    stepped over.
    """
    lo, hi = 0, size
    while hi - lo > 8192:
        mid = (lo + hi) // 2
        off, ts = mid, None
        start = mid
        for _ in range(64):  # step over unparsable lines
            start, raw = _line_at(fd, size, off)
            if start >= hi:
                break
            ts = line_time(_decode(raw))
            if ts is not None:
                break
            off = start + len(raw) + 1
        if ts is None or start >= hi:
            hi = mid
        elif ts < since:
            lo = start + 1
        else:
            hi = mid
    start, _ = _line_at(fd, size, lo) if lo else (0, b"")
    while start < size:
        _, raw = _line_at(fd, size, start)
        ts = line_time(_decode(raw))
        if ts is not None and ts >= since:
            return start
        start += len(raw) + 1
    return size


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def rotated_siblings(path: str) -> list[str]:
    """The rotated copies of ``path`` (``mail.log.1``, ``mail.log.2.gz``, ``mail.log-20261109``)."""
    found = set(glob.glob(glob.escape(path) + ".*")) | set(glob.glob(glob.escape(path) + "-*"))
    found.discard(path)
    return sorted(p for p in found if os.path.isfile(p))


def _is_compressed(path: str) -> bool:
    """gzip, bzip2 or xz by the first bytes (logrotate's names do not have to say)."""
    from maillens.logcompress import kind_of

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # missing or unreadable: the follower says so in its own words
    try:
        return os.path.isfile(path) and kind_of(fd) != "plain"
    finally:
        os.close(fd)


def compressed_lines(path: str, start: StartAt,
                     line_time: Callable[[str, str], datetime | None] | None) -> Iterator[TailLine]:
    """A compressed file's lines picked as ``-n N``, ``-n +N`` or ``--since`` pick them, decompressed.

    Read through once (memory: the last N lines at most), as ``zcat FILE | tail`` would.
    """
    from collections import deque

    from maillens.sources import read_file_lines

    lines = (TailLine(line.source, line.lineno, line.text) for line in read_file_lines(path))
    if start.since is not None and line_time is not None:
        yield from _from_time(lines, start.since, line_time)
    elif start.from_line is not None:
        yield from (line for line in lines if line.lineno >= start.from_line)
    else:
        yield from deque(lines, maxlen=start.last if start.last is not None else 10)


def history_lines(paths: Iterable[str], since: datetime,
                  line_time: Callable[[str, str], datetime | None]) -> Iterator[TailLine]:
    """Lines of the rotated history of ``paths`` from ``since`` on, through the core reader.

    Files last written before ``since`` cannot hold a matching line and are not
    opened (reading a year of ``.gz`` history to show the last hour would be slow).
    """
    from maillens.sources import read_lines

    cutoff = since.timestamp()
    files = [p for path in paths if path != STDIN for p in rotated_siblings(path)
             if os.stat(p).st_mtime >= cutoff]
    if not files:
        return
    yield from _from_time((TailLine(line.source, line.lineno, line.text) for line in read_lines(files)),
                          since, line_time)


def _from_time(lines: Iterable[TailLine], since: datetime,
               line_time: Callable[[str, str], datetime | None]) -> Iterator[TailLine]:
    """The lines from the first one dated ``since`` or later on (later lines are not re-dated)."""
    started = False
    for line in lines:
        if not started:
            ts = line_time(line.text, line.source)
            if ts is None or ts < since:
                continue
            started = True
        yield line


class Follower:
    """Reads several files (and stdin) from a start point, optionally following them.

    ``poll(timeout)`` returns the complete lines that arrived, waiting up to
    ``timeout`` seconds for some; ``done`` turns true when nothing is left to
    read (not following and every input at its end, or only an ended stdin).
    """

    def __init__(
        self,
        paths: list[str],
        *,
        follow: bool = False,
        by_name: bool = False,
        start: StartAt = StartAt(),
        line_time: Callable[[str, str], datetime | None] | None = None,
        notice: Callable[[str], None] | None = None,
        safety_interval: float = 1.0,
        drain_grace: float = 5.0,
        poll_min: float = 0.02,
        poll_max: float = 0.1,
        stdin_fd: int = 0,
        use_inotify: bool = True,
    ) -> None:
        if start.since is not None and line_time is None:
            raise ValueError("start.since needs line_time")
        #: Compressed files (rotated history given by name) are finished: read once, never followed.
        self.compressed = [p for p in paths if p != STDIN and _is_compressed(p)]
        self.paths = [p for p in paths if p not in self.compressed] or ([] if self.compressed else [STDIN])
        self.follow = follow
        self.by_name = by_name
        self.start = start
        self.line_time = line_time
        self.notice = notice or (lambda msg: log.warning("%s", msg))
        self.safety_interval = safety_interval
        self.drain_grace = drain_grace
        self.poll_min, self.poll_max = poll_min, poll_max
        self._interval = poll_min
        self._current: dict[str, _Handle | None] = {}
        self._draining: list[_Handle] = []
        self._missing_reported: set[str] = set()
        self._stdin_fd: int | None = stdin_fd if STDIN in self.paths else None
        self._stdin_handle = _Handle(STDIN, stdin_fd, (0, 0), 0, 0)
        self._stdin_skip = (start.from_line - 1) if start.from_line else 0
        self._stdin_tail: list[TailLine] = []
        self._inotify = Inotify.create() if follow and use_inotify else None
        self._dir_watches: dict[str, int | None] = {}
        self._more = False
        self._opened = False

    # -- public -------------------------------------------------------------------------------

    @property
    def uses_inotify(self) -> bool:
        return self._inotify is not None

    @property
    def done(self) -> bool:
        if not self._opened or self._more:
            return False
        if self._stdin_fd is not None:
            return False
        if self.follow:
            return not any(p != STDIN for p in self.paths)
        return True

    def close(self) -> None:
        for handle in [*self._draining, *(h for h in self._current.values() if h)]:
            handle.close()
        self._draining.clear()
        self._current.clear()
        if self._inotify:
            self._inotify.close()
            self._inotify = None

    def __enter__(self) -> "Follower":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def history(self) -> Iterator[TailLine]:
        """Compressed files named on the command line, then for ``--since`` the matching lines
        of the rotated, maybe compressed, history."""
        for path in self.compressed:
            if self.follow:
                self.notice(f"{path} is compressed (finished rotated history): shown, not followed")
            yield from compressed_lines(path, self.start, self.line_time)
        if self.start.since is not None and self.line_time is not None:
            yield from history_lines(self.paths, self.start.since, self.line_time)

    def lines(self) -> Iterator[TailLine]:
        """Every line, blocking between arrivals; ends when ``done``."""
        while True:
            batch = self.poll(None)
            yield from batch
            if self.done:
                return

    def poll(self, timeout: float | None) -> list[TailLine]:
        """Lines that are there now, or that arrive within ``timeout`` seconds."""
        if not self._opened:
            self._open_all()
        out = self._collect()
        if out or self.done or not self.follow and self._stdin_fd is None:
            return out
        deadline = None if timeout is None else time.monotonic() + timeout
        while not out:
            wait = self._wait_time(deadline)
            if wait <= 0 and deadline is not None and time.monotonic() >= deadline:
                break
            self._sleep(wait)
            out = self._collect()
            # adaptive polling (no inotify): fast while data flows, backing off when idle
            self._interval = self.poll_min if out else min(self._interval * 2, self.poll_max)
            if self.done:
                break
        return out

    # -- opening ------------------------------------------------------------------------------

    def _open_all(self) -> None:
        self._opened = True
        for path in self.paths:
            if path == STDIN:
                continue
            self._current[path] = None
            self._watch_dir(path)
            handle = self._open(path, initial=True)
            if handle is None and not self.by_name:  # only -F waits for a file to appear
                raise InputError(f"cannot open {path}: no such file; check the path (or use -F to wait for it)")
            self._current[path] = handle

    def _watch_dir(self, path: str) -> None:
        if self._inotify is None or not self.by_name:
            return
        directory = os.path.dirname(os.path.abspath(path))
        if directory not in self._dir_watches:
            self._dir_watches[directory] = self._inotify.watch(directory, DIR_MASK)

    def _open(self, path: str, *, initial: bool) -> _Handle | None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            if self.by_name and path not in self._missing_reported:
                self._missing_reported.add(path)
                self.notice(f"{path}: no such file yet; waiting for it to appear")
            return None
        except OSError as exc:
            if not self.by_name:
                raise InputError(f"cannot open {path}: {exc.strerror}; check its permissions") from None
            if path not in self._missing_reported:
                self._missing_reported.add(path)
                self.notice(f"{path}: {exc.strerror}; retrying")
            return None
        st = os.fstat(fd)
        pos, lineno = 0, 0
        if initial:
            pos = self._start_offset(fd, st.st_size, path)
            lineno = count_newlines(fd, pos) if pos else 0
        elif path in self._missing_reported:
            self.notice(f"{path} has appeared; following it")
        self._missing_reported.discard(path)
        handle = _Handle(path, fd, (st.st_dev, st.st_ino), pos, lineno)
        if pos:
            handle.fp = os.pread(fd, min(FINGERPRINT, pos), pos - min(FINGERPRINT, pos))
        if self._inotify is not None:
            handle.wd = self._inotify.watch(path, FILE_MASK)
        return handle

    def _start_offset(self, fd: int, size: int, path: str) -> int:
        start = self.start
        line_time = self.line_time
        if start.since is not None and line_time is not None:
            return offset_of_time(fd, size, start.since, lambda text: line_time(text, path))
        if start.from_line is not None:
            return offset_of_line(fd, size, start.from_line)
        return offset_of_last(fd, size, start.last if start.last is not None else 10)

    # -- reading ------------------------------------------------------------------------------

    def _collect(self) -> list[TailLine]:
        out: list[TailLine] = []
        self._more = False
        if self._inotify is not None:
            self._inotify.drain()
        for handle in list(self._draining):
            out += self._read(handle)
            if self._retire_done(handle):
                out += _flush(handle)
                self._drop(handle)
        for path, handle in list(self._current.items()):
            if self.by_name:
                out += self._check_name(path)
                handle = self._current[path]
            if handle is not None:
                out += self._read(handle)
        if not self.follow:
            for path, handle in self._current.items():
                if handle is not None and handle.eof and not self._more:
                    out += _flush(handle)
            if not self._more:
                for handle in self._current.values():
                    if handle is not None:
                        handle.close()
                self._current = {}
        return out + self._read_stdin()

    def _read(self, handle: _Handle) -> list[TailLine]:
        out: list[TailLine] = []
        try:
            st = os.fstat(handle.fd)
        except OSError:
            return out
        if st.st_size < handle.pos or (handle.pos and not self._fingerprint_ok(handle)):
            out += self._truncated(handle)
        budget = MAX_READ_PER_POLL
        handle.eof = False
        while budget > 0:
            try:
                data = os.pread(handle.fd, min(CHUNK, budget), handle.pos)
            except OSError as exc:
                self.notice(f"{handle.name}: read error ({exc.strerror}); will retry")
                return out
            if not data:
                handle.eof = True
                break
            handle.pos += len(data)
            budget -= len(data)
            handle.last_growth = time.monotonic()
            tail = handle.fp + data
            handle.fp = tail[-FINGERPRINT:]
            out += _split(handle, data)
        if not handle.eof:
            self._more = True
        return out

    def _fingerprint_ok(self, handle: _Handle) -> bool:
        n = len(handle.fp)
        if n == 0:
            return True
        try:
            return os.pread(handle.fd, n, handle.pos - n) == handle.fp
        except OSError:
            return False

    def _truncated(self, handle: _Handle) -> list[TailLine]:
        """copytruncate (or ``: > file``): recover the unread tail from the copy, restart at 0."""
        out = self._recover_from_copy(handle)
        if out is None:
            self.notice(f"{handle.name}: file truncated")
            out = []
        out += _flush(handle)
        handle.pos, handle.lineno, handle.fp = 0, 0, b""
        return out

    def _recover_from_copy(self, handle: _Handle) -> list[TailLine] | None:
        if handle.retired is not None or handle.name == STDIN:
            return None
        n = len(handle.fp)
        if n == 0:
            return []
        candidates = [c for c in rotated_siblings(handle.name) if not c.endswith(COMPRESSED_SUFFIXES)]
        candidates.sort(key=_mtime, reverse=True)  # the copy just made is the newest
        for candidate in candidates:
            try:
                fd = os.open(candidate, os.O_RDONLY)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_size < handle.pos or os.pread(fd, n, handle.pos - n) != handle.fp:
                    continue
                out: list[TailLine] = []
                pos = handle.pos
                while data := os.pread(fd, CHUNK, pos):
                    pos += len(data)
                    out += _split(handle, data)
                return out
            finally:
                os.close(fd)
        return None

    def _check_name(self, path: str) -> list[TailLine]:
        """Has ``path`` come to mean another file (rename+create), or vanished?"""
        handle = self._current[path]
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if handle is not None and st is not None and (st.st_dev, st.st_ino) == handle.ident:
            return []
        out: list[TailLine] = []
        if handle is not None:
            out += self._read(handle)  # what was written before the rename, in order
            handle.retired = time.monotonic()
            self._draining.append(handle)
            self._current[path] = None
            if st is None:
                self.notice(f"{path} has been moved or removed; waiting for a new file")
        if st is not None:
            new = self._open(path, initial=False)
            if new is not None and handle is not None:
                self.notice(f"{path} has been replaced; following the new file")
            self._current[path] = new
        return out

    def _retire_done(self, handle: _Handle) -> bool:
        """A renamed-away file is dropped once its writer has left it alone for a while."""
        if handle.retired is None:
            return False
        return time.monotonic() - max(handle.retired, handle.last_growth) >= self.drain_grace

    def _drop(self, handle: _Handle) -> None:
        if self._inotify is not None:
            self._inotify.unwatch(handle.wd)
        handle.close()
        self._draining.remove(handle)

    def _read_stdin(self) -> list[TailLine]:
        fd, handle = self._stdin_fd, self._stdin_handle
        if fd is None:
            return []
        out: list[TailLine] = []
        ended = False
        budget = MAX_READ_PER_POLL
        while budget > 0:
            if self.follow:  # never block the loop: other files are waiting too
                ready, _, _ = select.select([fd], [], [], 0)
                if not ready:
                    break
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                self.notice(f"standard input: read error ({exc.strerror})")
                data = b""
            if not data:
                ended = True
                break
            budget -= len(data)
            out += _split(handle, data)
        if budget <= 0:
            self._more = True
        if ended:
            out += _flush(handle)
            self._stdin_fd = None
        if self._stdin_skip:
            skip = min(self._stdin_skip, len(out))
            self._stdin_skip -= skip
            out = out[skip:]
        if not self.follow and self.start.from_line is None:
            keep = self.start.last if self.start.last is not None else 10
            self._stdin_tail = (self._stdin_tail + out)[-keep:] if keep else []
            return self._stdin_tail if ended else []
        return out

    # -- waiting ------------------------------------------------------------------------------

    def _wait_time(self, deadline: float | None) -> float:
        if self._more:
            return 0.0
        waits = [self.safety_interval if self._inotify is not None else self._interval]
        if self._draining:
            waits.append(self.drain_grace / 4)
        if deadline is not None:
            waits.append(deadline - time.monotonic())
        return max(0.0, min(waits))

    def _sleep(self, wait: float) -> None:
        """Sleep in poll(2) on inotify and stdin; without follow, stdin's blocking read is the wait."""
        if self._stdin_fd is not None and not self.follow:
            return
        poller = select.poll()
        for fd in (self._inotify.fd if self._inotify else None, self._stdin_fd):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        poller.poll(wait * 1000)
