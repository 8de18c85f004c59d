"""Matching a loaded fail2ban filter against log lines, line for line as fail2ban does.

What fail2ban reports for a line depends on details that are easy to get
wrong, so they follow fail2ban 1.0's ``Filter.processLine``/``findFailure``
(as ``fail2ban-regex --raw`` runs them):

* the time stamp is cut out (``maillens.datedetect``), the text before and
  after it joined; a line without one is still tested, whole;
* regexes search that text *with a newline appended* (``$`` and ``[^;]*``
  behave accordingly); with ``maxlines`` > 1 the last lines are joined;
* ``ignoreregex`` is tried on the whole line first when there are fewer of them
  than failregexes minus two, and after a failregex matches on the
  ``<F-CONTENT>`` the failregexes saw;
* ``prefregex`` must match first; its groups are merged under the failregex's
  (a failregex group that did not take part still overrides with nothing);
* the first failregex that matches decides; a match whose ``<F-NOFAIL>`` took
  part is no failure; ``<F-MLFID>`` ties lines of one connection together
  (``<F-MLFFORGET>``, ``<F-MLFGAINED>``), held for 5 minutes, 100 at most;
* the failure id is the ``<F-ID>`` if there is one, else the address (``ip4``,
  then ``ip6``, normalised as fail2ban's ``IPAddr`` prints it, masked by a
  ``<CIDR>``), else the ``dns`` text -- never looked up (``--raw``).
"""

from __future__ import annotations

import socket
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from maillens.filterconf import Filter, FilterRegex

TupleLine = tuple[str, str, str]  # (before the time stamp, the stamp, after it)

_CIDR_RAW = -2
_FAM_IPV4 = _CIDR_RAW - socket.AF_INET
_FAM_IPV6 = _CIDR_RAW - socket.AF_INET6
_MLFID_MAX = 100
_MLFID_SECONDS = 5 * 60


@dataclass(slots=True)
class FilterMatch:
    """What fail2ban would report for one line: the failure id and the captures."""

    host: str
    fields: dict[str, str]
    regex: FilterRegex
    captures: dict[str, str] = field(default_factory=dict)  # only the <F-NAME> captures


def ip_text(text: str, cidr: int) -> str:
    """The failure id fail2ban's ``IPAddr(text, cidr)`` prints.

    ``cidr`` is fail2ban's: a family marker (address as captured, normalised),
    a prefix length from ``<CIDR>`` (masked network), or raw (text unchanged).
    """
    if cidr == _CIDR_RAW:
        return text
    families = [_CIDR_RAW - cidr] if cidr < _CIDR_RAW else [socket.AF_INET, socket.AF_INET6]
    for family in families:
        try:
            binary = socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        if family == socket.AF_INET:
            (addr,), plen = struct.unpack("!L", binary), 32
            if cidr >= 0:
                addr &= ~(0xFFFFFFFF >> cidr) & 0xFFFFFFFF
                plen = cidr
            suffix = f"/{plen}" if plen and plen < 32 else ""
            return socket.inet_ntop(socket.AF_INET, struct.pack("!L", addr)) + suffix
        hi, lo = struct.unpack("!QQ", binary)
        addr, plen = (hi << 64) | lo, 128
        if cidr >= 0:
            addr &= ~(((1 << 128) - 1) >> cidr) & ((1 << 128) - 1)
            plen = cidr
        elif addr >> 32 == 0xFFFF:  # IPv4-mapped (::ffff:0:0/96): fail2ban makes it IPv4
            return socket.inet_ntop(socket.AF_INET, struct.pack("!L", addr & 0xFFFFFFFF))
        suffix = f"/{plen}" if plen and plen < 128 else ""
        return socket.inet_ntop(socket.AF_INET6, struct.pack("!QQ", addr >> 64, addr & ((1 << 64) - 1))) + suffix
    return text


def _buffer(lines: list[TupleLine]) -> str:
    return "\n".join(t[0] + t[2] for t in lines) + "\n"


def _split_matched(m: Any, org: list[TupleLine]) -> tuple[list[TupleLine], list[TupleLine]]:
    """(lines the match covers, the others) -- fail2ban's ``Regex.search`` bookkeeping."""
    if len(org) <= 1:
        return list(org), []
    s = m.string
    start = s.rfind("\n", 0, m.start() + 1) + 1
    end = s.find("\n", m.end() - 1)
    end = len(s) if end < 0 else end + 1
    first, last = s.count("\n", 0, start), s.count("\n", 0, end)
    matched, unmatched = list(org[first:last]), list(org[:first])
    skipped: list[str] = []
    n = 0
    while f"skiplines{n}" in m.re.groupindex:
        if m.group(f"skiplines{n}") is not None:
            skipped.append(m.group(f"skiplines{n}"))
        n += 1
    pos = 0
    for line in "".join(skipped).splitlines():
        for k, t in enumerate(matched[pos:]):
            if t[0] + t[2] == line:
                unmatched.append(matched.pop(pos + k))
                pos += k
                break
    unmatched.extend(org[last:])
    return matched, unmatched


class Matcher:
    """One filter over a stream of lines, keeping fail2ban's state between them."""

    def __init__(self, flt: Filter) -> None:
        self.flt = flt
        self.detector = flt.date_detector()
        self.buffer: list[TupleLine] = []
        self._mlfid_cache: OrderedDict[str, tuple[dict[str, Any], float]] | None = None

    @property
    def _mlfid(self) -> OrderedDict[str, tuple[dict[str, Any], float]]:
        if self._mlfid_cache is None:
            self._mlfid_cache = OrderedDict()
        return self._mlfid_cache

    def match_line(self, line: str) -> FilterMatch | None:
        """The failure fail2ban reports for this line (None: no failure)."""
        line = line.rstrip("\r\n")
        span = self.detector.find(line)
        if span is None:
            return self.match_parts(("", "", line))
        start, end = span
        return self.match_parts((line[:start], line[start:end], line[end:]))

    def match_parts(self, tline: TupleLine) -> FilterMatch | None:
        flt = self.flt
        if flt.maxlines > 1:
            self.buffer = (self.buffer + [tline])[-flt.maxlines:]
        else:
            self.buffer = [tline]
        org = self.buffer
        buf: str | None = _buffer(org)
        if flt.ignoreregex and len(flt.ignoreregex) < len(flt.failregex) - 2:
            if self._ignored(buf, org, None):
                return None
        pre: dict[str, Any] = {}
        if flt.prefregex is not None:
            pm = flt.prefregex.pattern.search(buf)
            if pm is None:
                return None
            pre = flt.prefregex.groups(pm)
            content = pre.pop("content", None)
            if content:
                self.buffer, buf = [("", "", content)], None
        for rx in flt.failregex:
            if buf is None:
                buf = _buffer(self.buffer)
            m = rx.pattern.search(buf)
            if m is None:
                continue
            fail = rx.groups(m)
            matched, unmatched = _split_matched(m, org)
            if flt.ignoreregex and self._ignored(buf, org, (matched, unmatched)):
                return None
            self.buffer, buf = unmatched, None
            if pre:
                fail = {**pre, **fail}
            mlfid = fail.get("mlfid")
            if mlfid is not None:
                fail = self._merge(mlfid, fail, matched)
                if fail.get("nofail"):
                    return None
            found = self._failure_id(fail, rx, m, mlfid)
            if found is _NEXT_REGEX:
                continue
            if found is None or fail.get("nofail"):
                return None
            fields = {k: v for k, v in fail.items() if isinstance(v, str) and k != "content"}
            names = rx.captures | (flt.prefregex.captures if flt.prefregex is not None else frozenset())
            return FilterMatch(str(found), fields, rx, {k: v for k, v in fields.items() if k in names})
        return None

    def _ignored(self, buf: str, org: list[TupleLine], split: tuple[list[TupleLine], list[TupleLine]] | None) -> bool:
        if split is not None and self.flt.maxlines > 1:
            org = split[0]
            buf = _buffer(org)
        for rx in self.flt.ignoreregex:
            if rx.pattern.search(buf):
                if split is not None:
                    self.buffer = split[1]
                return True
        return False

    def _failure_id(self, fail: dict[str, Any], rx: FilterRegex, m: Any, mlfid: Any) -> object:
        """fail2ban's choice of failure id (``--raw``); ``_NEXT_REGEX`` when the regex yields none."""
        fid = fail.get("fid")
        ip, cidr = fail.get("ip4"), _FAM_IPV4
        if ip is None:
            ip, cidr = fail.get("ip6"), _FAM_IPV6
        if ip is not None:
            if fail.get("cidr"):
                cidr = int(fail["cidr"])
        else:
            ip, cidr = fail.get("dns"), _CIDR_RAW
            if ip is None:
                if fid is None and mlfid is None:
                    fid = next((m.group(g) for g in ("fid", "ip4", "ip6", "dns")
                                if g in m.re.groupindex and m.group(g) is not None), None)
                    if fid is None:
                        return _NEXT_REGEX  # fail2ban logs "No group found" and tries the next regex
                ip = fid
        if ip is None:
            fail["mlfpending"] = 1  # a connection's lines so far, waiting for its address
            return None
        if fid is None or fid == ip:
            return ip_text(ip, cidr)
        fail["ip"] = ip_text(ip, cidr)
        return fid

    # -- multi-line failure ids (fail2ban's Filter._mergeFailure) -------------
    def _cache_get(self, key: str) -> dict[str, Any] | None:
        entry = self._mlfid.get(key)
        if entry is None:
            return None
        if entry[1] > time.time():
            return entry[0]
        del self._mlfid[key]
        return None

    def _cache_set(self, key: str, value: dict[str, Any]) -> None:
        now = time.time()
        if len(self._mlfid) >= _MLFID_MAX:
            while self._mlfid:
                _, (_, expires) = self._mlfid.popitem(last=False)
                if expires > now and len(self._mlfid) < _MLFID_MAX:
                    break
        self._mlfid[key] = (value, now + _MLFID_SECONDS)

    def _merge(self, mlfid: str, fail: dict[str, Any], matched: list[TupleLine]) -> dict[str, Any]:
        known = self._cache_get(mlfid)
        users = None
        flags = 0
        if fail.get("mlfgained"):
            flags |= 8 | 1
            if not fail.get("nofail"):
                fail["nofail"] = fail["mlfgained"]
        elif fail.get("nofail"):
            flags |= 1
        if fail.pop("mlfforget", None):
            flags |= 2
        if known is not None:
            users = _update_users(known, fail.get("user"))
            if known.pop("nofail", None):
                flags |= 4
            if known.pop("mlfgained", None):
                flags |= 4
            if flags & 8:
                known.pop("mlfpending", None)
            if (flags & 4) == 0 and not known.get("mlfpending", 0):
                known.pop("matches", None)
            known.update((k, v) for k, v in fail.items() if v is not None)
            fail = known
            if flags & 2:
                self._mlfid.pop(mlfid, None)
        elif not flags & 2:
            users = _update_users(fail, fail.get("user"))
            self._cache_set(mlfid, fail)
        if fail.pop("mlfpending", 0) or (users and len(users) > 1):
            fail.pop("nofail", None)
            fail.pop("mlfgained", None)
            flags &= ~(8 | 1)
        if (flags & 1) == 0:
            lines = fail.pop("nofail-matches", []) + fail.get("matches", [])
            if (flags & 8) == 0:
                lines += matched
            fail["matches"] = lines
        elif (flags & 3) == 1:
            fail["nofail-matches"] = fail.get("nofail-matches", []) + matched
        return fail


_NEXT_REGEX = object()


def _update_users(fail: dict[str, Any], user: Any) -> Any:
    users = fail.get("users")
    if user:
        if not users:
            fail["users"] = users = set()
        users.add(user)
    return users
