"""Compressed rotated logs for ingest: which compressor, opening, first bytes, size.

logrotate compresses with gzip unless told otherwise (``compresscmd
/usr/bin/xz``, ``compressext .xz``; or bzip2), and nothing forces the name's
extension to match what was written.  So a rotated file's kind is taken from
its first bytes, never from its name.  Everything here works on a file
descriptor that was opened once: ingest must read the very file it took its
snapshot of, whatever is renamed afterwards.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib
from typing import IO, Any

#: Compressed names logrotate may give (``compressext``); the kind still comes from the bytes.
COMPRESSED_EXTS = (".gz", ".bz2", ".xz")

#: What reading a compressed file that breaks off (still being written, damaged) raises.
DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, OSError, zlib.error, lzma.LZMAError, gzip.BadGzipFile,
)  # fmt: skip

#: bzip2 and xz keep no uncompressed size where it is cheap to read; mail logs compress
#: about 8-15:1 with either, so this ratio gives an estimate of the right order.
ESTIMATE_RATIO = 10
#: How much compressed input ``head`` reads at most: bzip2 emits nothing before its
#: first block (up to 900 kB of text) is complete.
_HEAD_INPUT_MAX = 8 << 20


def kind_of(fd: int) -> str:
    """``plain``, ``gz``, ``bz2`` or ``xz`` from the magic bytes at the start of ``fd``."""
    magic = os.pread(fd, 6, 0)
    if magic.startswith(b"\x1f\x8b"):
        return "gz"
    if magic[:3] == b"BZh" and magic[3:4].isdigit() and magic[3:4] != b"0":
        return "bz2"
    if magic == b"\xfd7zXZ\x00":
        return "xz"
    return "plain"


def stream(raw: IO[bytes], kind: str) -> Any:
    """A reader of the uncompressed content over the already open ``raw`` handle."""
    if kind == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(raw)
    if kind == "xz":
        return lzma.LZMAFile(raw)
    return raw


def decompressor(kind: str) -> Any:
    """A fresh incremental decompressor for ``gz``, ``bz2`` or ``xz`` (xz also reads the older
    lzma-alone format, whose files ``sources`` sends here under ``xz`` too)."""
    if kind == "gz":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_AUTO)


def head(fd: int, kind: str, length: int) -> bytes:
    """The first ``length`` bytes of the content (fewer if there are fewer), handle untouched.

    A file that breaks off (a compressor still writing it) gives what could be
    decompressed so far: its signature then simply does not match yet.
    """
    if kind == "plain":
        return os.pread(fd, length, 0)
    dec = decompressor(kind)
    out = b""
    pos = 0
    while len(out) < length and pos < _HEAD_INPUT_MAX:
        chunk = os.pread(fd, 65536, pos)
        if not chunk:
            break
        pos += len(chunk)
        try:
            out += dec.decompress(chunk, length - len(out))
        except (zlib.error, OSError, EOFError, lzma.LZMAError):
            break
        if getattr(dec, "eof", False):
            break
    return out[:length]


def content_size(fd: int, kind: str) -> tuple[int, bool]:
    """(uncompressed size, exact?) of an open file.

    gzip's ISIZE trailer is exact below 4 GiB.  bzip2 and xz have no trailer
    to read it from, so their size is an estimate (``ESTIMATE_RATIO``): it only
    decides whether starting worker processes pays, and must never be used to
    rule a file out.
    """
    size = os.fstat(fd).st_size
    if kind == "plain":
        return size, True
    if kind == "gz":
        return (int(struct.unpack("<I", os.pread(fd, 4, size - 4))[0]) if size >= 4 else 0), True
    return size * ESTIMATE_RATIO, False


def strip_ext(name: str) -> str:
    """``mail.log.2.xz`` → ``mail.log.2``; other names unchanged."""
    for ext in COMPRESSED_EXTS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name
