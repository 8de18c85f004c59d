"""Incremental ingest over rotated sets compressed with gzip, bzip2 and xz.

The compressing is done by the real ``gzip``, ``bzip2`` and ``xz`` tools, as
logrotate's ``compresscmd`` runs them.  Every check compares the store with
one clean ingest of the same lines from one plain file: each line counted
exactly once.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from maillens.ingest import ingest, rotated_set
from tests.conftest import require_tool
from tests.test_ingest import append, clean_run, corpus_lines, snapshot

EXT = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz"}


def compress(path: Path, tool: str) -> Path:
    """Compress in place as logrotate does: ``path.ext`` written, then ``path`` removed."""
    subprocess.run([require_tool(tool), path], check=True)
    out = Path(str(path) + EXT[tool])
    assert out.exists() and not path.exists()
    return out


def rotate_numbered(log: Path, tool: str) -> None:
    """``mail.log.N[.ext]`` → ``N+1``, ``mail.log`` → ``.1``; delaycompress: the new ``.2`` is compressed."""
    d, name = log.parent, log.name
    rotated = []
    for p in d.glob(name + ".*"):
        num, _, ext = p.name[len(name) + 1 :].partition(".")
        rotated.append((int(num), ext))
    for num, ext in sorted(rotated, reverse=True):
        suffix = "." + ext if ext else ""
        os.rename(d / f"{name}.{num}{suffix}", d / f"{name}.{num + 1}{suffix}")
    os.rename(log, d / f"{name}.1")
    log.touch()
    if (d / f"{name}.2").exists():
        compress(d / f"{name}.2", tool)


def rotate_dated(log: Path, tool: str, day: int) -> None:
    """logrotate's dateext with delaycompress: the previous plain ``mail.log-DATE`` is compressed."""
    for p in log.parent.glob(log.name + "-*"):
        if p.suffix not in (".gz", ".bz2", ".xz"):
            compress(p, tool)
    os.rename(log, log.parent / f"{log.name}-202611{day:02d}")
    log.touch()


@pytest.mark.parametrize("scheme", ["numbered", "dateext"])
def test_rotations_compressed_by_bzip2_and_xz_count_each_line_once(tmp_path: Path, scheme: str) -> None:
    lines = corpus_lines(9000)
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    day = 0

    def rotate(tool: str) -> None:
        nonlocal day
        day += 1
        rotate_numbered(log, tool) if scheme == "numbered" else rotate_dated(log, tool, day)

    append(log, lines[:2000])
    assert ingest([str(log)], db).lines == 2000
    append(log, lines[2000:3000])
    rotate("xz")  # the unread tail now in the first rotated file
    append(log, lines[3000:4000])
    rotate("bzip2")  # ... and now bzip2-compressed under a new name: found by its first bytes
    append(log, lines[4000:5000])
    assert ingest([str(log)], db).lines == 3000
    assert ingest([str(log)], db).lines == 0
    append(log, lines[5000:6000])
    rotate("xz")
    append(log, lines[6000:6500])
    rotate("gzip")
    rotate("bzip2")  # two more rotations, one of them over an empty log
    append(log, lines[6500:7000])
    assert ingest([str(log)], db).lines == 2000
    names = {p.name for p in tmp_path.iterdir()}
    assert {s for s in (".gz", ".bz2", ".xz") if any(n.endswith(s) for n in names)} == {".gz", ".bz2", ".xz"}
    append(log, lines[7000:9000])
    assert ingest([str(log)], db).lines == 2000
    assert snapshot(db) == clean_run(tmp_path, lines)


def _write_mixed_set(log: Path, parts: list[bytes], *, lying: bool, dated: bool) -> None:
    """``parts`` oldest first into ``.4.xz .3.bz2 .2.gz .1`` and the live file (or dateext names).

    With ``lying`` the names do not say what wrote them (``compressext``
    mismatches): xz data named ``.gz``, gzip named ``.bz2``, bzip2 with no
    extension at all.
    """
    lies = {"xz": ".gz", "gzip": ".bz2", "bzip2": ""}
    for k, (part, tool) in enumerate(zip(parts[:4], ("xz", "bzip2", "gzip", None))):
        stem = log.parent / (f"{log.name}-2026110{k + 1}" if dated else f"{log.name}.{4 - k}")
        stem.write_bytes(part)
        if tool is not None:
            out = compress(stem, tool)
            if lying:
                os.rename(out, str(stem) + lies[tool])
    log.write_bytes(parts[4])


@pytest.mark.parametrize("lying", [False, True], ids=["names-true", "names-lie"])
@pytest.mark.parametrize("dated", [False, True], ids=["numbered", "dateext"])
def test_first_run_reads_a_mixed_set_oldest_first(tmp_path: Path, lying: bool, dated: bool) -> None:
    for tool in ("gzip", "bzip2", "xz"):
        require_tool(tool)
    lines = corpus_lines(6000)
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    cuts = [0, 1500, 2500, 3700, 4800, 6000]
    parts = [b"".join(lines[a:b]) for a, b in zip(cuts, cuts[1:])]
    _write_mixed_set(log, parts, lying=lying, dated=dated)
    assert len(rotated_set(str(log))) == 5
    assert ingest([str(log)], db).lines == 6000
    assert ingest([str(log)], db).lines == 0
    assert snapshot(db) == clean_run(tmp_path, lines)


@pytest.mark.parametrize("tool", ["bzip2", "xz"])
def test_half_written_compressed_file_is_not_read_twice(tmp_path: Path, tool: str) -> None:
    """A compressor caught mid-write: its output beside the source, then without it, then done."""
    lines = corpus_lines(8000)
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    append(log, lines[:3000])
    assert ingest([str(log)], db).lines == 3000
    append(log, lines[3000:5000])
    rotate_numbered(log, tool)  # mail.log.1 holds 2000 unread lines
    append(log, lines[5000:6000])
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")  # the next rotation starts ...
    os.rename(log, tmp_path / "mail.log.1")
    log.touch()
    whole = subprocess.run([require_tool(tool), "-c", tmp_path / "mail.log.2"], check=True,
                           capture_output=True).stdout
    target = tmp_path / f"mail.log.2{EXT[tool]}"
    target.write_bytes(whole[: len(whole) // 2])  # ... and its compressor is half-way
    append(log, lines[6000:6500])
    assert ingest([str(log)], db).lines == 3500  # the source read, the half-written copy left alone
    assert ingest([str(log)], db).lines == 0
    target.write_bytes(whole)  # the compressor finishes and removes its source
    (tmp_path / "mail.log.2").unlink()
    append(log, lines[6500:7000])
    assert ingest([str(log)], db).lines == 500
    assert snapshot(db) == clean_run(tmp_path, lines[:7000])


def _cut_rotation(tmp_path: Path, tool: str) -> tuple[list[bytes], Path, Path, Path, bytes, int]:
    """1,000 lines ingested, then two rotations: ``mail.log.2`` (8,000 unread lines) is
    compressed by ``tool`` and cut to 3/5, its source gone.  Returns (lines, live log, store,
    the cut file, its whole compressed content, how many unread lines decompress from the cut)."""
    import bz2
    import lzma
    import zlib

    lines = corpus_lines(11000)
    log = tmp_path / "mail.log"
    db = tmp_path / "m.db"
    append(log, lines[:1000])
    assert ingest([str(log)], db).lines == 1000
    append(log, lines[1000:9000])  # > one bzip2 block (900 kB) unread
    os.rename(log, tmp_path / "mail.log.1")
    append(log, lines[9000:10000])
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
    os.rename(log, tmp_path / "mail.log.1")
    append(log, lines[10000:11000])
    whole = subprocess.run([require_tool(tool), "-c", tmp_path / "mail.log.2"], check=True,
                           capture_output=True).stdout
    cut = whole[: len(whole) * 3 // 5]
    target = tmp_path / f"mail.log.2{EXT[tool]}"
    target.write_bytes(cut)
    (tmp_path / "mail.log.2").unlink()
    dec = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "bzip2": bz2.BZ2Decompressor,
           "xz": lzma.LZMADecompressor}[tool]()
    readable = dec.decompress(cut).count(b"\n") - 1000  # what the standard library can get out of it
    assert 0 < readable < 8000
    return lines, log, db, target, whole, readable


@pytest.mark.parametrize("tool", ["bzip2", "xz"])
def test_compressed_file_that_breaks_off_is_read_to_the_break_then_on(tmp_path: Path, tool: str) -> None:
    """The file last read turns up compressed and cut short, its source gone (a compressor that
    died, a copy still arriving): what decompresses is read once, nothing newer is read before
    it, no run crashes, and once the file is whole the rest follows."""
    lines, log, db, target, whole, readable = _cut_rotation(tmp_path, tool)
    assert ingest([str(log)], db).lines == readable
    assert ingest([str(log)], db).lines == 0  # still cut short: newer files wait, in order
    target.write_bytes(whole)
    assert ingest([str(log)], db).lines == 11000 - 1000 - readable
    assert snapshot(db) == clean_run(tmp_path, lines)


def test_first_run_beside_a_half_written_copy(tmp_path: Path) -> None:
    """The very first run meets ``.2`` and its half-written ``.2.xz``: the lines are read once."""
    lines = corpus_lines(4000)
    log = tmp_path / "mail.log"
    (tmp_path / "mail.log.2").write_bytes(b"".join(lines[:2000]))
    whole = subprocess.run([require_tool("xz"), "-c", tmp_path / "mail.log.2"], check=True,
                           capture_output=True).stdout
    (tmp_path / "mail.log.2.xz").write_bytes(whole[: len(whole) * 2 // 3])
    (tmp_path / "mail.log.1").write_bytes(b"".join(lines[2000:3000]))
    log.write_bytes(b"".join(lines[3000:]))
    db = tmp_path / "m.db"
    assert ingest([str(log)], db).lines == 4000
    assert snapshot(db) == clean_run(tmp_path, lines)


@pytest.mark.parametrize("tool", ["gzip", "bzip2", "xz"])
def test_damaged_compressed_file_is_skipped_past_its_break(tmp_path: Path, tool: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The same cut-short file, unchanged for an hour: damaged, not still arriving.  What
    decompresses is read, the loss is told in a warning, and the newer files are read after
    it (before, every later run read nothing at all)."""
    _, log, db, target, _, readable = _cut_rotation(tmp_path, tool)
    hour_ago = time.time() - 3600
    os.utime(target, (hour_ago, hour_ago))
    with caplog.at_level(logging.WARNING, logger="maillens.ingest"):
        assert ingest([str(log)], db).lines == readable + 2000
    assert any("damaged" in r.getMessage() and "mail.log.2" in r.getMessage() for r in caplog.records)
    assert ingest([str(log)], db).lines == 0
