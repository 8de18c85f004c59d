"""Reading lines: files, globs, directories, stdin, compressed and rotated sets.

Logs are hostile input.  Lines are read in binary blocks and decoded as UTF-8
with replacement, so stray bytes never stop a run; a line longer than
``MAX_LINE`` bytes is cut there (the rest skipped up to the next newline) so a
runaway line cannot exhaust memory.  Every line read is yielded: nothing is
dropped silently.

A rotated set (``mail.log.3.gz mail.log.2.gz mail.log.1 mail.log``, or
logrotate's ``dateext`` names) is read oldest first, whatever order the names
were given in.
"""

from __future__ import annotations

import glob
import logging
import lzma
import os
import re
import sys
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, NamedTuple

from maillens.errors import ConfigError, InputError
from maillens.logcompress import decompressor

MAX_LINE = 1 << 20  # 1 MiB: longer lines are truncated, never buffered whole
BLOCK = 1 << 20
STDIN = "-"
log = logging.getLogger("maillens")

_ROTATION_RE = re.compile(r"^(?P<base>.*?)(?:[.-](?P<num>\d{1,4})|-(?P<date>\d{8}(?:\d{2})?))?$")
_COMPRESSED = (".gz", ".bz2", ".xz", ".lzma")


PARSE_KEYS = frozenset({"rules_dirs"})


def parse_settings(section: Mapping[str, Any]) -> list[str]:
    """Validate ``[parse]``: ``rules_dirs``, directories of extra rule files.

    A directory that does not exist is an error, not an empty rule set: the
    rules a user added would otherwise be silently missing from every count.
    """
    dirs = section.get("rules_dirs", [])
    if isinstance(dirs, str):
        dirs = [dirs]
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"[parse] rules_dirs = {dirs!r}: give a list of directory paths, e.g. [\"/etc/maillens/rules\"]")
    for directory in dirs:
        if not os.path.isdir(directory):
            raise ConfigError(f"[parse] rules_dirs: {directory} is not a directory; create it or remove it from the list")
    return dirs


class Line(NamedTuple):
    """One input line: where it came from (path or ``-``), its 1-based number, its text."""

    source: str
    lineno: int
    text: str


@dataclass(frozen=True, slots=True)
class InputFile:
    path: str
    reference_time: datetime | None  # when it was last written: gives BSD time stamps their year


def _rotation_key(path: str) -> tuple[str, int, str]:
    """Sort key putting a rotated set oldest first: base name, then age (older first)."""
    name = path
    for ext in _COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    m = _ROTATION_RE.match(name)
    assert m is not None
    base = m.group("base")
    if m.group("num") is not None and Path(base).name:
        return (base, -int(m.group("num")), "")
    if m.group("date") is not None:
        return (base, -1_000_000, m.group("date"))  # dateext: older dates first, all before the live file
    return (name, 0, "")


def expand_paths(paths: Iterable[str]) -> list[InputFile]:
    """Globs and directories to files, rotated sets ordered oldest first.

    Raises ``InputError`` for a name that matches nothing, so a typo in cron
    is an error rather than an empty report.
    """
    found: list[str] = []
    for spec in paths:
        if spec == STDIN:
            found.append(STDIN)
            continue
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise InputError(f"no file matches {spec!r}")
        for match in matches:
            if os.path.isdir(match):
                files = _directory_files(match)
                if not files:
                    raise InputError(f"{match} is a directory with no log files in it; give the log files to read")
                found.extend(files)
            elif os.path.exists(match):
                found.append(match)
            else:
                raise InputError(f"{match}: no such file; check the path")
    order: dict[str, int] = {}
    for path in found:
        order.setdefault(_rotation_key(path)[0], len(order))
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda p: (order[_rotation_key(p)[0]], _rotation_key(p)[1], _rotation_key(p)[2]) if p != STDIN else (len(order), 0, ""))
    out = []
    for path in unique:
        ref = None
        if path != STDIN:
            try:
                ref = datetime.fromtimestamp(os.stat(path).st_mtime, tz=timezone.utc)
            except OSError:
                ref = None
        out.append(InputFile(path, ref))
    return out


def _directory_files(directory: str) -> list[str]:
    """The visible regular files of a directory, sorted; an unreadable directory is an error."""
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError as exc:
        raise InputError(f"cannot list {directory}: {exc.strerror}; check its permissions") from None
    return [str(p) for p in entries if p.is_file() and not p.name.startswith(".")]


def _open_error(path: str, exc: OSError) -> InputError:
    """One line that says what is wrong with an input and what to do."""
    if isinstance(exc, PermissionError):
        hint = "check its permissions"
    elif isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        hint = "check the path"
    else:
        hint = "check the file and the disk it is on"
    return InputError(f"cannot read {path}: {exc.strerror or exc}; {hint}")


def _open_raw(path: str) -> tuple[IO[bytes], str]:
    """A file (or stdin) opened for binary reading, and its compression by magic bytes.

    The magic bytes are *peeked*, never read and sought back, so pipes work
    too (``<(zcat ...)``, a FIFO), not just regular files.
    """
    if path == STDIN:
        raw: IO[bytes] = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise _open_error(path, exc) from None
    try:
        head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""  # type: ignore[attr-defined]
    except OSError as exc:
        if path != STDIN:
            raw.close()
        raise _open_error(path, exc) from None
    if head.startswith(b"\x1f\x8b"):
        return raw, "gz"
    if head.startswith(b"BZh"):
        return raw, "bz2"
    if head.startswith(b"\xfd7zXZ\x00") or head.startswith(b"\x5d\x00\x00"):
        return raw, "xz"  # (xz, or the older lzma-alone format: one decompressor reads both)
    return raw, "plain"


#: Below this, a file that looks compressed and ends early is taken for plain text that
#: happens to start with a magic number (``]\x00\x00`` is lzma's): a compressor's headers
#: and first block are longer.
_MIN_COMPRESSED = 64


def _inflate(raw: IO[bytes], kind: str, size: int) -> Iterator[bytes]:
    """The decompressed content in blocks of at most ``size``, member after member.

    Each piece is given out as soon as it is decompressed, so a file that
    breaks off loses nothing before the break (``GzipFile.read`` drops what
    it had decompressed in the read that fails).  Raises EOFError there, or
    the decompressor's error at damage.
    """
    dec = decompressor(kind)
    between = False  # at the end of a member (gzip -c a b, pbzip2 write several)
    while True:
        data = raw.read(1 << 17)
        if not data:
            if not between and not dec.eof:
                raise EOFError("compressed data ends before its end marker")
            return
        while data:
            if between:
                data = data.lstrip(b"\x00")  # gzip members may be padded with zeros
                if not data:
                    break
                dec, between = decompressor(kind), False
            yield from _decompress_bounded(dec, data, size)
            if not dec.eof:
                break
            data, between = dec.unused_data, True


def _decompress_bounded(dec: Any, data: bytes, size: int) -> Iterator[bytes]:
    """``dec.decompress(data)`` in pieces of at most ``size``: a small input that inflates to
    gigabytes (a hostile or broken archive) never sits in memory whole."""
    if hasattr(dec, "unconsumed_tail"):  # zlib's: the input it did not get to stays there
        while True:
            out = dec.decompress(data, size)
            if out:
                yield out
            data = dec.unconsumed_tail
            if not data or dec.eof:
                return
    out = dec.decompress(data, max_length=size)
    while True:
        if out:
            yield out
        if dec.eof or dec.needs_input:
            return
        out = dec.decompress(b"", max_length=size)


def read_chunks(path: str, size: int = BLOCK) -> Iterator[bytes]:
    """Raw blocks of one input, decompressed; damage never raises.

    A file that only *looks* compressed (its first bytes happen to be a magic
    number but nothing decompresses) is read as plain bytes.  A compressed
    file that breaks off part-way (rotation caught mid-write, a damaged
    archive) yields everything up to the break and logs a warning naming the file.
    """
    raw, kind = _open_raw(path)
    try:
        if kind != "plain":
            produced = False
            try:
                for block in _inflate(raw, kind, size):
                    produced = True
                    yield block
                return
            except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
                regular = path != STDIN and os.path.isfile(path)  # (only a regular file can be read again)
                if produced or not regular or (isinstance(exc, EOFError) and os.path.getsize(path) >= _MIN_COMPRESSED):
                    log.warning("%s: compressed data ends early or is damaged (%s); what came before was read",
                                path, exc)
                    return
                raw.seek(0)  # nothing decompressed, not even a beginning: it only looked compressed
        while True:
            try:
                block = raw.read(size)
            except OSError as exc:
                raise _open_error(path, exc) from None  # plain bytes: a real read error, not damage
            if not block:
                return
            yield block
    finally:
        if path != STDIN:
            raw.close()


def iter_raw_lines(chunks: Iterable[bytes], partial: list[bytes] | None = None) -> Iterator[bytes]:
    """Split raw blocks into lines without ever holding more than ``MAX_LINE`` of one.

    A last line without a newline is a line too -- unless ``partial`` is given:
    then it goes there instead (``match`` leaves it untested, as fail2ban-regex does).
    """
    pending = b""
    skipping = False
    for block in chunks:
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            block = block[nl + 1:]
            skipping = False
        data = pending + block if pending else block
        parts = data.split(b"\n")
        pending = parts.pop()
        yield from parts
        if len(pending) > MAX_LINE:
            yield pending[:MAX_LINE]
            pending = b""
            skipping = True
    if pending and not skipping:
        if partial is None:
            yield pending
        else:
            partial.append(pending)


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace")


def read_file_lines(path: str, partial: list[bytes] | None = None) -> Iterator[Line]:
    """Lines of one file (or ``-``), decoded, numbered from 1 (``partial``: see ``iter_raw_lines``)."""
    lineno = 0
    for raw in iter_raw_lines(read_chunks(path), partial):
        lineno += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield Line(path, lineno, decode(raw))


def read_lines(paths: Iterable[str], partial: list[tuple[str, bytes]] | None = None) -> Iterator[Line]:
    """All lines of all inputs, rotated sets oldest first.

    With ``partial``, each file's last line without a newline is left out and
    listed there (path, bytes) instead.
    """
    for item in expand_paths(paths):
        cut: list[bytes] | None = [] if partial is not None else None
        yield from read_file_lines(item.path, cut)
        if cut and partial is not None:
            partial.append((item.path, cut[0]))


def iter_events(paths: Iterable[str], classifier=None):  # type: ignore[no-untyped-def]
    """One ``Event`` per input line, in order (see ``maillens.classify``)."""
    from maillens.classify import Classifier

    clf = classifier or Classifier()
    for item in expand_paths(paths):
        clf.start_source(item.reference_time)
        for line in read_file_lines(item.path):
            yield clf.classify(line.text, line.source, line.lineno)
