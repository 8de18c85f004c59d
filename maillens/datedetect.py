"""Where fail2ban finds a line's time stamp, so maillens cuts out the same text.

fail2ban removes a line's time stamp before any filter regex sees the line:
the text before the stamp and the text after it are joined, and that is what
``prefregex``/``failregex`` search.  Which text counts as the stamp is decided
by the filter's ``datepattern`` (fail2ban's ``DateDetector``), so a filter
matches the same lines in maillens as in fail2ban only if this is done the
same way.  This module rebuilds fail2ban 1.0's date templates from their
pattern language -- strptime ``%`` directives, ``{^LN-BEG}``, ``{UNB}``,
``{DATE}``, ``{NONE}``, ``EPOCH``/``LEPOCH``, ``TAI64N`` -- with the same
regexes and word/line boundaries.

Only *where* the stamp is matters here; the time itself is read by
``maillens.envelope``.  Not modelled: fail2ban's run-time reordering of
templates by hit count.  Instead the choice is deterministic: a line-anchored
template that matches wins at once (in list order), otherwise the match
nearest the start of the line -- which is what fail2ban settles on for logs
whose stamps are at the start of each line.

>>> DEFAULT_DETECTOR.find("Nov  9 08:41:19 mx postfix/smtpd[1]: connect")
(0, 15)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

LINE_BEGIN = 8
LINE_END = 4

_WEEKDAYS = "mon|tue|wed|thu|fri|sat|sun"
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DAY_C = r"(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])"
_HMS_C = r"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)"


def _year_cent_re(now: datetime | None = None) -> str:
    """fail2ban's ``%ExY``: years of this century's decades in use (e.g. ``20[0-2]\\d``).

    fail2ban-regex accepts years from 2000 (its test clock) up to three years
    ahead; the regex is built from the first three digits of those years.
    """
    year = (now or datetime.now()).year
    cents = {str(year - 1)[:3], str(year + 3)[:3]}
    cents |= {str(y)[:3] for y in range(2000, year + 1, 3)}
    ordered = sorted(cents)
    common = ordered[0][:2] if all(c[:2] == ordered[0][:2] for c in ordered) else ""
    if common and len(ordered) > 1:
        return common + "[" + "".join(c[2] for c in ordered) + "]"
    return ordered[0] if len(ordered) == 1 else "(?:" + "|".join(ordered) + ")"


#: strptime directives -> regex, as fail2ban 1.0 sets them (C locale names).
TIME_RE: dict[str, str] = {
    "a": f"(?P<a>{_WEEKDAYS})",
    "A": "(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)",
    "b": f"(?P<b>{_MONTHS})",
    "B": "(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)",
    "c": rf"(?P<a>{_WEEKDAYS})\s+(?P<b>{_MONTHS})\s+{_DAY_C}\s+{_HMS_C}\s+(?P<Y>\d\d\d\d)",
    "f": r"(?P<f>[0-9]{1,6})",
    "G": r"(?P<G>\d\d\d\d)",
    "I": r"(?P<I>1[0-2]|0[1-9]|[1-9])",
    "j": r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])",
    "p": "(?P<p>am|pm)",
    "U": r"(?P<U>5[0-3]|[0-4]\d|\d)",
    "u": r"(?P<u>[1-7])",
    "V": r"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)",
    "W": r"(?P<W>5[0-3]|[0-4]\d|\d)",
    "w": r"(?P<w>[0-6])",
    "X": _HMS_C,
    "x": r"(?P<m>1[0-2]|0[1-9]|[1-9])/" + _DAY_C + r"/(?P<y>\d\d)",
    "y": r"(?P<y>\d\d)",
    "%": "%",
    # fail2ban's own definitions (server/strptime.py):
    "k": r" ?(?P<H>[0-2]?\d)",
    "l": r" ?(?P<I>1?\d)",
    "Z": r"(?P<Z>Z|[A-Z]{3,5})",
    "z": r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
    "ExZ": r"(?P<Z>[A-Z](?:[A-Z]{2,4})?)",
    "Exz": r"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)",
    "d": r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])",
    "m": r"(?P<m>0?[1-9]|1[0-2])",
    "Y": r"(?P<Y>\d{4})",
    "H": r"(?P<H>[0-1]?\d|2[0-3])",
    "M": r"(?P<M>[0-5]?\d)",
    "S": r"(?P<S>[0-5]?\d|6[0-1])",
    "Exd": r"(?P<d>[1-2]\d|0[1-9]|3[0-1])",
    "Exm": r"(?P<m>0[1-9]|1[0-2])",
    "ExH": r"(?P<H>[0-1]\d|2[0-3])",
    "Exk": r" ?(?P<H>[0-1]?\d|2[0-3])",
    "Exl": r" ?(?P<I>1[0-2]|\d)",
    "ExM": r"(?P<M>[0-5]\d)",
    "ExS": r"(?P<S>[0-5]\d|6[0-1])",
    "ExY": rf"(?P<Y>{_year_cent_re()}\d)",
    "Exy": r"(?P<y>\d{2})",
}

#: fail2ban's default date templates, in its order (server/datedetector.py).
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
)

_DIRECTIVE_RE = re.compile(
    "%(%|" + "|".join(k for k in TIME_RE if len(k) > 1) + "|[" + "".join(k for k in TIME_RE if len(k) == 1) + "])"
)
_GROUPED_RE = re.compile(r"(?<!(?:\(\?))(?<!\\)\((?!\?)")
_GROUP_RE = re.compile(r"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$")
_GLOBAL_FLAGS_RE = re.compile(r"((?:^|(?!<\\))\(\?[a-z]+\))")
_UNBOUND_RE = re.compile(r"^\{UNB\}")
_LN_BEG_RE = re.compile(r"^\{\^LN-BEG\}")
_START_BOUND_RE = re.compile(r"^\((?:\?:)?\^\|\\b\|\\W\)")
_END_BOUND_RE = re.compile(r"\(\?=\\b\|\\W\|\$\)$")
_NO_WORD_BEGIN_RE = re.compile(r"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)")
_NO_WORD_END_RE = re.compile(r"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$")
_DEL_WORD_BOUNDS_RE = re.compile(r"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$")
_LINE_BEGIN_RE = re.compile(r"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))")
_LINE_END_RE = re.compile(r"(?<![\\\|])(?:\$\)?)$")
_ALPHA_RE = re.compile(r"(?<!%)%[aAbBpc]")
_EPOCH_IN_PATTERN_RE = re.compile(r"(?<!\\)\{L?EPOCH\}", re.IGNORECASE)
_DATE_PREMATCH_RE = re.compile(r"(?<!\\)\{DATE\}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DateTemplate:
    """One way to find a time stamp: the regex whose group 1 is the stamp."""

    name: str
    pattern: str | None  # the datepattern text it came from (None: epoch/TAI64N)
    regex: re.Pattern[str]
    flags: int

    @property
    def anchored(self) -> bool:
        return bool(self.flags & (LINE_BEGIN | LINE_END))


def _bounded(name: str, pattern: str | None, regex: str, word_begin: bool | str = True,
             word_end: bool = True) -> DateTemplate:
    """fail2ban's ``DateTemplate.setRegex``: add word or line boundaries, group 1."""
    regex = regex.strip()
    gf = _GLOBAL_FLAGS_RE.search(regex)
    if gf:
        regex = _GLOBAL_FLAGS_RE.sub("", regex, count=1)
    bound_begin = word_begin and not _NO_WORD_BEGIN_RE.search(regex)
    bound_end = word_end and not _NO_WORD_END_RE.search(regex)
    if not _GROUPED_RE.search(regex):
        regex = _GROUP_RE.sub(r"\1(\2)\3", regex)
    flags = 0
    if bound_begin:
        if word_begin != "start":
            regex = r"(?=^|\b|\W)" + regex
        else:
            flags |= LINE_BEGIN
            regex = r"^(?:\W{0,2})?" + regex
            if not name.startswith("{^LN-BEG}"):
                name = "{^LN-BEG}" + name
    if bound_end:
        regex += r"(?=\b|\W|$)"
    if not flags & LINE_BEGIN and _LINE_BEGIN_RE.search(regex):
        flags |= LINE_BEGIN
    if _LINE_END_RE.search(regex):
        flags |= LINE_END
    regex = _DEL_WORD_BOUNDS_RE.sub(lambda m: m.group().replace("**", ""), regex)
    if gf:
        regex = gf.group(1) + regex
    return DateTemplate(name, pattern, re.compile(regex), flags)


def _from_pattern(pattern: str) -> DateTemplate:
    """fail2ban's ``DatePatternRegex``: strptime directives to a bounded regex."""
    text = pattern
    word_begin: bool | str = True
    word_end = True
    if _UNBOUND_RE.search(text):
        text = _UNBOUND_RE.sub("", text)
        word_begin = word_end = False
    if word_begin and _LN_BEG_RE.search(text):
        text = _LN_BEG_RE.sub("", text)
        word_begin = "start"
    try:
        regex = _DIRECTIVE_RE.sub(lambda m: TIME_RE[m.group(1)], text)
        if "%" in _DIRECTIVE_RE.sub("", text.replace("%%", "")):
            raise ValueError("unknown % directive")
        if _ALPHA_RE.search(text):
            regex = "(?iu)" + regex
        return _bounded(pattern, pattern, regex, word_begin, word_end)
    except (re.error, ValueError) as exc:
        raise ValueError(f"datepattern {pattern!r} is not a valid fail2ban date pattern ({exc})") from None


def _epoch(line_begin_only: bool = False, pattern: str | None = None, long_form: bool = False) -> DateTemplate:
    epoch = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?" if long_form else r"\d{10,11}\b(?:\.\d{3,6})?"
    name = pattern or ("LongEpoch" if long_form else "Epoch")
    if pattern:
        return _bounded(name, pattern, "(" + _EPOCH_IN_PATTERN_RE.sub(lambda _m: f"({epoch})", pattern) + ")")
    if not line_begin_only:
        regex = (r"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))%s)"
                 r"(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))") % epoch
        return _bounded(name, None, regex, word_begin=False)
    return _bounded(name, None, r"((?P<square>(?<=^\[))?%s)(?(square)(?=\]))" % epoch, word_begin="start")


def _tai64n(line_begin: bool = False) -> DateTemplate:
    return _bounded("TAI64N", None, "@[0-9a-f]{24}", word_begin="start" if line_begin else False)


@lru_cache(maxsize=256)
def template(pattern: str) -> DateTemplate:
    """One template from a ``datepattern`` line (fail2ban's ``_getPatternTemplate``)."""
    key = pattern if "%" in pattern else pattern.upper()
    if "EPOCH" in key:
        if _EPOCH_IN_PATTERN_RE.search(pattern):
            return _epoch(pattern=pattern, long_form="LEPOCH" in key)
        if key in ("EPOCH", "{^LN-BEG}EPOCH", "^EPOCH"):
            return _epoch(line_begin_only=key != "EPOCH")
        if key in ("LEPOCH", "{^LN-BEG}LEPOCH", "^LEPOCH"):
            return _epoch(line_begin_only=key != "LEPOCH", long_form=True)
    if key in ("TAI64N", "{^LN-BEG}TAI64N", "^TAI64N"):
        return _tai64n(line_begin=key != "TAI64N")
    return _from_pattern(pattern)


def _unbound(pattern: str) -> str:
    pattern = _LN_BEG_RE.sub("", _UNBOUND_RE.sub("", pattern))
    return _END_BOUND_RE.sub("", _START_BOUND_RE.sub("", pattern))


@lru_cache(maxsize=1)
def default_templates() -> tuple[DateTemplate, ...]:
    """fail2ban's default list: line-anchored copies first, then the originals."""
    anchored: list[DateTemplate] = []
    originals: list[DateTemplate] = []
    for pattern in DEFAULT_PATTERNS:
        tpl = template(pattern)
        if not tpl.name.startswith(("{^LN-BEG}", "^")):
            copy = template("{^LN-BEG}" + (tpl.pattern if tpl.pattern is not None else tpl.name))
            if copy.name != tpl.name:
                anchored.append(copy)
        originals.append(tpl)
    return tuple(anchored + originals)


def templates_for(datepattern: str | None) -> tuple[DateTemplate, ...]:
    """The templates a filter's ``datepattern`` option selects (None: the defaults).

    Raises ``ValueError`` when a line of the option is not a date pattern.
    """
    if datepattern is None:
        return default_templates()
    out: list[DateTemplate] = []
    names: set[str] = set()

    def add(tpl: DateTemplate, ignore_dup: bool) -> None:
        if tpl.name in names:
            if ignore_dup:
                return
            raise ValueError(f"datepattern {datepattern!r} names the template {tpl.name!r} twice")
        names.add(tpl.name)
        out.append(tpl)

    for line in (s.strip() for s in re.split("\n+", datepattern)):
        if not line:
            continue
        key = line if "%" in line else line.upper()
        if key in ("{^LN-BEG}", "{DEFAULT}"):
            dup = bool(out)
            for tpl in default_templates():
                if key == "{DEFAULT}" or tpl.flags & LINE_BEGIN:
                    add(tpl, dup)
        elif "{DATE}" in key:
            dup = bool(out)
            for pattern in DEFAULT_PATTERNS:
                base = template(pattern)
                source = base.pattern if base.pattern is not None else base.name
                add(template(_DATE_PREMATCH_RE.sub(lambda _m: _unbound(source), line)), dup)
        elif key == "{NONE}":
            add(_from_pattern("{UNB}^"), False)
        else:
            add(template(line), False)
    return tuple(out)


class DateDetector:
    """Finds the time stamp in a line the way fail2ban's detector settles on it."""

    def __init__(self, templates: tuple[DateTemplate, ...]) -> None:
        self.templates = templates

    @classmethod
    @lru_cache(maxsize=64)
    def for_datepattern(cls, datepattern: str | None) -> "DateDetector":
        return cls(templates_for(datepattern))

    def find(self, line: str) -> tuple[int, int] | None:
        """The span of the time stamp (group 1 of the winning template), or None."""
        best: tuple[int, int, int] | None = None  # (distance, start, end)
        for tpl in self.templates:
            m = tpl.regex.search(line)
            if m is None:
                continue
            if tpl.anchored or m.start() == 0:
                return m.span(1)
            if best is None or m.start() < best[0]:
                best = (m.start(), *m.span(1))
        return None if best is None else (best[1], best[2])

    def split(self, line: str) -> tuple[str, str | None]:
        """``(line without its time stamp, the stamp)``; ``(line, None)`` when there is none."""
        span = self.find(line)
        if span is None:
            return line, None
        start, end = span
        return line[:start] + line[end:], line[start:end]


DEFAULT_DETECTOR = DateDetector(default_templates())
LINE_BEGIN_DETECTOR = DateDetector.for_datepattern("{^LN-BEG}")
