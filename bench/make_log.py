#!/usr/bin/env python3
"""Build a large benchmark log by repeating a real corpus log.

Each repetition is shifted one day later (so a 2M-line log spans about two
months, crossing New Year: year inference is exercised), and its client
addresses and queue IDs are rewritten so repetitions do not collide:
``127.a.b.c`` becomes ``N.a.b.c`` and long queue IDs get a per-copy prefix.

    python bench/make_log.py --lines 2000000 --out bench/out/big.log [--corpus tests/corpus/.cache/real-postfix-dev/maillog]
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
IP_RE = re.compile(rb"\b127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
QID_RE = re.compile(rb"\b4j([0-9A-Za-z]{13})\b")
B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def default_corpus() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import corpus_dir  # noqa: E402

    return corpus_dir("real-postfix-dev") / "maillog"


def shifted_copy(lines: list[bytes], rep: int, year: int) -> list[bytes]:
    first_octet = b"%d" % (10 + rep % 200)
    prefix = B62[rep // 62 % 62:rep // 62 % 62 + 1] + B62[rep % 62:rep % 62 + 1]
    cache: dict[bytes, bytes] = {}
    out = []
    for line in lines:
        stamp = line[:15]
        new = cache.get(stamp)
        if new is None:
            when = datetime.strptime(f"{year} {stamp.decode()}", "%Y %b %d %H:%M:%S") + timedelta(days=rep)
            new = f"{MONTHS[when.month - 1]} {when.day:>2} {when:%H:%M:%S}".encode()
            cache[stamp] = new
        body = IP_RE.sub(lambda m: first_octet + b"." + m.group(1) + b"." + m.group(2) + b"." + m.group(3), line[15:])
        body = QID_RE.sub(lambda m: prefix + m.group(1), body)
        out.append(new + body)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "big.log")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--year", type=int, default=2026, help="year of the corpus's first line")
    args = parser.parse_args()
    source = (args.corpus or default_corpus()).read_bytes().splitlines(keepends=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    written = 0
    with tmp.open("wb") as fh:
        rep = 0
        while written < args.lines:
            chunk = shifted_copy(source, rep, args.year)[: args.lines - written]
            fh.writelines(chunk)
            written += len(chunk)
            rep += 1
    tmp.replace(args.out)
    print(f"{args.out}: {written} lines, {rep} copies", file=sys.stderr)


if __name__ == "__main__":
    main()
