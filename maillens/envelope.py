"""The syslog envelope: timestamp, host, program, pid -- and the message.

Recognised forms (one compiled regex each, tried in order of likelihood):

* traditional BSD syslog: ``Nov  9 08:41:19 mx postfix/smtpd[123]: msg``
  (space- or zero-padded or unpadded day; the year is not in the line and is
  inferred by ``YearInference``);
* RFC 3339 (rsyslog's default on Debian 12): ``2026-11-09T08:41:19.211563+00:00 mx ...``;
* journalctl ``-o short-iso`` / ``short-iso-precise``: ``2026-11-09T08:41:19+0000 mx ...``;
* RFC 5424: ``<22>1 2026-11-09T08:41:19.211Z mx postfix/smtpd 123 - - msg``;
* Solaris message IDs after the program: ``... postfix/smtpd[1]: [ID 197553 mail.info] msg``.

Leading NUL bytes (what a crash leaves in a preallocated log) are skipped.
Everything here is pure: text in, fields out; the clock is injected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Final

MONTHS: Final = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}

_PROGRAM = r"(?P<program>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?:"
_SOLARIS = r"(?: \[ID \d+ [\w.]+\])?"

BSD_RE: Final = re.compile(
    r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<day>\d{1,2}) "
    r"(?P<hms>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))? (?P<host>\S+) " + _PROGRAM + _SOLARIS + r" ?(?P<msg>.*)",
    re.DOTALL,
)
ISO_RE: Final = re.compile(
    r"(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) (?P<host>\S+) "
    + _PROGRAM + _SOLARIS + r" ?(?P<msg>.*)",
    re.DOTALL,
)
RFC5424_RE: Final = re.compile(
    r"<\d{1,3}>\d{1,2} (?P<iso>\S+) (?P<host>\S+) (?P<program>\S+) (?P<pid>\S+) \S+ "
    r"(?:-|(?:\[(?:[^\]\"\\]|\\.|\"(?:[^\"\\]|\\.)*\")*\])+) ?(?P<msg>.*)",
    re.DOTALL,
)
#: The envelope of the two common forms up to the message, for scanners that
#: need only the program name and where the message starts (``fastscan``).
#: Built from the same pieces as BSD_RE and ISO_RE so the two cannot drift.
PREFIX_RE: Final = re.compile(
    r"(?:(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) \S+ "
    + _PROGRAM.replace("(?P<pid>", "(?:") + _SOLARIS + r" ?",
)


@dataclass(slots=True)
class Envelope:
    """What the syslog envelope says; ``ts`` is timezone-aware."""

    ts: datetime
    host: str
    program: str
    pid: int | None
    message: str


@lru_cache(maxsize=1)
def local_zone() -> tzinfo:
    """This machine's time zone with its rules (summer time included), as syslog wrote by it.

    ``datetime.now().astimezone().tzinfo`` is today's fixed offset: a July line
    read in November would be an hour off.  The zone is found by name (``TZ``,
    the ``/etc/localtime`` link, Debian's ``/etc/timezone``) so that it can be
    pickled to worker processes; without a name, today's offset is the fallback.
    """
    from zoneinfo import ZoneInfo

    names = []
    env = os.environ.get("TZ", "").lstrip(":")
    if env:  # a name, or a file (TZ=:/etc/localtime is set to save stat calls)
        names.append(_zone_name(os.path.realpath(env)) if env.startswith("/") else env)
    else:
        names.append(_zone_name(os.path.realpath("/etc/localtime")))
        try:
            with open("/etc/timezone", encoding="ascii") as fh:
                names.append(fh.read().strip())
        except (OSError, UnicodeDecodeError):
            pass
    for name in names:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # (ZoneInfoNotFoundError is a KeyError) a POSIX TZ rule, junk
            continue
    return datetime.now().astimezone().tzinfo or timezone.utc


def _zone_name(path: str) -> str:
    """``/usr/share/zoneinfo/posix/Europe/Paris`` → ``Europe/Paris`` (a path outside zoneinfo stays as
    it is, and ``ZoneInfo`` refuses it)."""
    return path.split("zoneinfo/", 1)[-1].removeprefix("posix/").removeprefix("right/")


class YearInference:
    """Gives BSD time stamps a year, from a reference time and the stream so far.

    The first line gets the year that puts it not more than a day after the
    reference (a log is not written in the future).  After that the year moves
    forward when the date falls back by more than half a year (December to
    January) and the new date follows the last within a month, or is not more
    than a day after the reference; otherwise the line is out of order (a host
    booting with its clock unset logs ``Jan  1 00:00:12`` between November
    lines), not a New Year: moving every later line a year ahead would turn an
    hour's ban into a year's.  A line whose date jumps ahead by more than half
    a year into the future (``Dec 31`` logged a second after ``Jan  1``) is
    last year's; the year stays.  A reference older than the lines (a skewed
    clock) still lets a contiguous log cross New Year.  Feed lines in log
    order; call ``reset`` for a new file.
    """

    ROLLBACK: Final = timedelta(days=182)
    AHEAD: Final = timedelta(days=1)
    NEW_YEAR_GAP: Final = timedelta(days=31)

    def __init__(self, reference: datetime | None = None, tz: tzinfo | None = None) -> None:
        self.tz: tzinfo = tz or local_zone()
        self.reference = reference
        self._year: int | None = None
        self._last: datetime | None = None
        self._cache_key: tuple[str, str, str] | None = None
        self._cache_value: datetime | None = None

    def reset(self, reference: datetime | None = None) -> None:
        self.reference = reference
        self._year = None
        self._last = None
        self._cache_key = None

    def resolve(self, mon: str, day: str, hms: str) -> datetime:
        key = (mon, day, hms)
        if key == self._cache_key and self._cache_value is not None:
            return self._cache_value
        month = MONTHS[mon]
        d = int(day)
        h, m, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        if self._year is None:
            ref = self.reference or datetime.now(self.tz)
            ref = ref.astimezone(self.tz)
            year = ref.year
            candidate = _safe_datetime(year, month, d, h, m, s, self.tz)
            if candidate - ref > timedelta(days=1):
                year -= 1
            self._year = year
        ts = _safe_datetime(self._year, month, d, h, m, s, self.tz)
        last, ref = self._last, self.reference
        if ref is None and last is not None and abs(last - ts) > self.ROLLBACK:
            ref = datetime.now(self.tz)  # standard input: now is when it was written up to
        if last is not None and last - ts > self.ROLLBACK:  # the date fell back: New Year, or a line out of order
            later = _safe_datetime(self._year + 1, month, d, h, m, s, self.tz)
            if later - last <= self.NEW_YEAR_GAP or later.replace(second=0) - ref <= self.AHEAD:
                self._year += 1
                ts = later
        elif last is not None and ts - last > self.ROLLBACK and ts.replace(second=0) - ref > self.AHEAD:
            # December after January, in the future (to the minute, as ``ingestscan`` caches): this line only
            ts = _safe_datetime(self._year - 1, month, d, h, m, s, self.tz)
        self._last = ts
        self._cache_key, self._cache_value = key, ts
        return ts


def _safe_datetime(year: int, month: int, day: int, h: int, m: int, s: int, tz: tzinfo) -> datetime:
    """A datetime even for impossible dates (Feb 29 in a wrong year, day 31 in
    April): clamp to the month's last valid day instead of failing."""
    while True:
        try:
            return datetime(year, month, day, min(h, 23), min(m, 59), min(s, 59), tzinfo=tz)
        except ValueError:
            if day <= 28:
                return datetime(year, month, 1, tzinfo=tz)
            day -= 1


def parse_iso(text: str, tz: tzinfo) -> datetime | None:
    """RFC 3339 / ISO 8601 text to an aware datetime; ``None`` when unreadable."""
    try:
        ts = datetime.fromisoformat(text.replace(",", ".", 1) if "," in text else text)
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=tz)
    return ts


def parse_envelope(line: str, years: YearInference) -> Envelope | None:
    """Split one line into envelope and message; ``None`` if it has no envelope."""
    if line.startswith("\x00"):
        line = line.lstrip("\x00")
    m = BSD_RE.match(line)
    if m is not None:
        ts = years.resolve(m.group("mon"), m.group("day"), m.group("hms"))
        frac = m.group("frac")
        if frac:
            ts = ts.replace(microsecond=int((frac + "000000")[:6]))
        return Envelope(ts, m.group("host"), m.group("program"), _int(m.group("pid")), m.group("msg"))
    m = ISO_RE.match(line)
    if m is None:
        m = RFC5424_RE.match(line)
    if m is not None:
        ts = parse_iso(m.group("iso"), years.tz)
        if ts is None:
            return None
        return Envelope(ts, m.group("host"), m.group("program"), _int(m.group("pid")), m.group("msg"))
    return None


#: The largest number read from log text as a number: SQLite's INTEGER.  A mail system writes
#: nothing bigger; taken as a number it would stop a run (SQLite refuses it, ``int`` refuses
#: over 4,300 digits), so it stays text or is left out.
MAX_LOG_INT: Final = 2**63 - 1


def log_int(text: object) -> int | None:
    """``int(text)`` when that works and fits SQLite's INTEGER, else None: hostile lines never raise."""
    try:
        value = int(text)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return value if -MAX_LOG_INT - 1 <= value <= MAX_LOG_INT else None


def _int(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    return log_int(text)


def strip_date(line: str, datepattern: str | None = None) -> tuple[str, str | None]:
    """fail2ban's view of a line: the text with its time stamp cut out.

    fail2ban's filters never see the time stamp: it joins the text before and
    after it (``maillens.datedetect`` finds it with fail2ban's own templates;
    ``datepattern`` is a filter's option, None for fail2ban's defaults).
    Returns ``(rest, date_text)``; ``date_text`` is ``None`` when the line has
    no time stamp, and then ``rest`` is the whole line, which fail2ban still
    tests against the filter.
    """
    from maillens.datedetect import DateDetector

    return DateDetector.for_datepattern(datepattern).split(line)
