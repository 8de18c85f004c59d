"""access(5) tables: read them the way ``postmap`` does, look them up the way smtpd does.

``maillens suggest`` must not hand over an entry that is already there, must
tell which existing entry a client or sender hits, and must pick keys that
Postfix will actually consult.  All three need Postfix's own semantics, so
this module copies them rather than approximating them:

Reading (``postmap``, verified against ``postmap -s``):

* a logical line starts with a non-whitespace character; a physical line that
  starts with whitespace is glued to it *as is* (no separator added); blank
  and ``#`` comment lines are skipped, also in the middle of a continuation;
  a continuation with nothing to continue is ignored;
* the key is the first token, where double quotes group (``"john doe"@x``)
  and a backslash escapes the next character; quotes and backslashes stay in
  the key; an unbalanced quote makes postmap ignore the line;
* the value is the rest with surrounding whitespace removed (a ``#`` after a
  value is part of the value); a key without value is ignored;
* keys are folded to lower case (values are not); the first of duplicate keys
  wins.

Looking up (smtpd_check.c ``check_namadr_access``, ``check_mail_access``):

* client (``check_client_access``): the client name -- ``unknown`` when it
  is not forward-confirmed -- then its parent domains, then the address and its
  parent networks (``1.2.3.4``, ``1.2.3``, ``1.2``, ``1``; for IPv6 the string
  is cut at the last ``:`` each time);
* parent domains: with ``smtpd_access_maps`` in ``parent_domain_matches_subdomains``
  (Postfix's default) ``a.b.c`` tries ``a.b.c``, ``b.c``, ``c`` and keys with a
  leading dot are never consulted; without it, it tries ``a.b.c``, ``.b.c``,
  ``.c``.  A numeric name (an address literal) is never split;
* sender (``check_sender_access``): ``user+ext@domain``, ``user@domain``
  (only with a ``recipient_delimiter``), the domain and its parents,
  ``user+ext@``, ``user@``; the null sender is looked up as ``<>``
  (``smtpd_null_access_lookup_key``);
* the first key found decides, whatever its action: ``DUNNO`` stops the
  search just like ``OK`` does.

Example::

    table = AccessTable.parse(".example.com REJECT\\nexample.com OK\\n")
    table.lookup_client("mx.example.com", "192.0.2.1").entry.key   # 'example.com'
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from maillens.errors import InputError

#: Postfix's default ``parent_domain_matches_subdomains`` includes ``smtpd_access_maps``.
DEFAULT_PARENT_STYLE = True
#: ``smtpd_null_access_lookup_key`` default.
NULL_SENDER_KEY = "<>"

_SPACE = " \t\n\r\v\f"  # C isspace() in the C locale, which postmap uses

#: First word of a value → what smtpd does with it (check_table_result order).
_ACTION_WORDS = {
    "DUNNO": "DUNNO",
    "OK": "OK",
    "REJECT": "REJECT",
    "DEFER": "DEFER",
    "DEFER_IF_REJECT": "DEFER_IF_REJECT",
    "DEFER_IF_PERMIT": "DEFER_IF_PERMIT",
    "DISCARD": "DISCARD",
    "HOLD": "HOLD",
    "FILTER": "FILTER",
    "REDIRECT": "REDIRECT",
    "BCC": "BCC",
    "PREPEND": "PREPEND",
    "WARN": "WARN",
    "INFO": "INFO",
}


def classify_action(value: str) -> str:
    """The action an access-table value stands for.

    ``OK`` and all-numerical values accept; ``REJECT``/``5NN``/``reject``
    reject; ``DEFER``/``4NN`` defer; other restriction names come back as
    ``RESTRICTION`` (``permit`` as ``OK``).  Case does not matter, as in smtpd.
    """
    text = value.strip(_SPACE)
    word = re.split(r"[ \t]", text, maxsplit=1)[0] if text else ""
    upper = word.upper()
    if upper in _ACTION_WORDS:
        return _ACTION_WORDS[upper]
    if re.fullmatch(r"[0-9]+", text):
        return "OK"  # "An all-numerical result is treated as OK" (pop-before-smtp)
    if re.fullmatch(r"[45][0-9][0-9]", word):
        return "REJECT" if word[0] == "5" else "DEFER"
    first = re.split(r"[ \t,]", text, maxsplit=1)[0].lower()
    if first in ("permit", "permit_auth_destination"):
        return "OK"
    if first in ("reject", "reject_unauth_destination"):
        return "REJECT"
    if first in ("defer", "defer_unauth_destination"):
        return "DEFER"
    return "RESTRICTION"


@dataclass(frozen=True, slots=True)
class Entry:
    """One table entry: the key as postmap stores it (lower case) and its value."""

    key: str
    value: str
    lineno: int
    source: str = "access"

    @property
    def action(self) -> str:
        return classify_action(self.value)

    @property
    def where(self) -> str:
        return f"{self.source} line {self.lineno}"


@dataclass(frozen=True, slots=True)
class Match:
    """A lookup result: the entry found and the lookup key that found it."""

    entry: Entry
    probe: str

    @property
    def action(self) -> str:
        return self.entry.action


# --------------------------------------------------------------------------- reading


def _logical_lines(text: str, source: str, warnings: list[str]) -> Iterator[tuple[int, str]]:
    """postmap's logical lines: (first physical line number, glued text)."""
    start, buf = 0, None  # type: int, str | None
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip(_SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in _SPACE:
            if buf is None:
                warnings.append(f"{source}, line {number}: logical line must not start with whitespace")
                continue
            buf += line
            continue
        if buf is not None:
            yield start, buf
        start, buf = number, line
    if buf is not None:
        yield start, buf


def _split_key(line: str) -> tuple[str, str] | None:
    """Split a logical line into (key, rest); None when a quote is unbalanced."""
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in _SPACE:
            return line[:i], line[i:]
        i += 1
    if quoted:
        return None
    return line, ""


class AccessTable:
    """An access(5) source file as Postfix sees it after ``postmap``.

    ``entries`` keeps file order (first of duplicates only); ``warnings``
    holds what postmap would warn about, in postmap's words.
    """

    def __init__(self, entries: Iterable[Entry] = (), *, source: str = "access",
                 warnings: Iterable[str] = ()) -> None:
        self.source = source
        self.warnings: list[str] = list(warnings)
        self._by_key: dict[str, Entry] = {}
        for entry in entries:
            if entry.key in self._by_key:
                self.warnings.append(f"{entry.where}: duplicate entry: \"{entry.key}\"")
                continue
            self._by_key[entry.key] = entry

    # ------------------------------------------------------------ construction

    @classmethod
    def parse(cls, text: str, source: str = "access") -> AccessTable:
        """Table text → table, with postmap's reading rules (module docstring)."""
        warnings: list[str] = []
        entries: list[Entry] = []
        for lineno, line in _logical_lines(text, source, warnings):
            split = _split_key(line)
            if split is None:
                warnings.append(f"{source}, line {lineno}: unbalanced '\"' in '{line}' -- ignoring this line")
                continue
            key, rest = split
            value = rest.strip(_SPACE)
            if not value:
                warnings.append(f"{source}, line {lineno}: expected format: key whitespace value "
                                "-- ignoring this line")
                continue
            entries.append(Entry(key.lower(), value, lineno, source))
        return cls(entries, source=source, warnings=warnings)

    @classmethod
    def load(cls, path: str | Path) -> AccessTable:
        """Read a table source file (not the ``.db``); errors say which file."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise InputError(f"access table {p} does not exist; check the path given") from None
        except OSError as exc:
            raise InputError(f"cannot read access table {p}: {exc.strerror}") from None
        return cls.parse(data.decode("utf-8", errors="replace"), source=str(p))

    # ------------------------------------------------------------ plain access

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._by_key.values())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._by_key

    def get(self, key: str) -> Entry | None:
        """Literal lookup, like ``postmap -q key``: case-insensitive, no magic."""
        return self._by_key.get(key.lower())

    def first(self, probes: Iterable[str]) -> Match | None:
        """The first probe that has an entry (smtpd stops there, whatever the action)."""
        for probe in probes:
            entry = self._by_key.get(probe.lower())
            if entry is not None:
                return Match(entry, probe.lower())
        return None

    # ------------------------------------------------------------ smtpd lookups

    def lookup_client(self, name: str | None, addr: str | None, *,
                      parent_style: bool = DEFAULT_PARENT_STYLE) -> Match | None:
        """What ``check_client_access`` finds for a client (name ``unknown`` if unverified)."""
        return self.first(client_probes(name, addr, parent_style=parent_style))

    def lookup_domain(self, domain: str, *, parent_style: bool = DEFAULT_PARENT_STYLE) -> Match | None:
        """What ``check_helo_access`` (or a domain-only check) finds for a name."""
        return self.first(domain_probes(domain, parent_style=parent_style))

    def lookup_sender(self, address: str | None, *, parent_style: bool = DEFAULT_PARENT_STYLE,
                      recipient_delimiter: str = "", null_key: str = NULL_SENDER_KEY,
                      myorigin: str | None = None) -> Match | None:
        """What ``check_sender_access`` finds for an envelope sender."""
        return self.first(sender_probes(address, parent_style=parent_style,
                                        recipient_delimiter=recipient_delimiter,
                                        null_key=null_key, myorigin=myorigin))


# --------------------------------------------------------------------------- lookup orders


def is_address(text: str) -> bool:
    """True for an IPv4/IPv6 address string (Postfix's ``valid_hostaddr``)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def domain_probes(domain: str, *, parent_style: bool = DEFAULT_PARENT_STYLE) -> list[str]:
    """Keys smtpd tries for a host or domain name, in order (check_domain_access).

    >>> domain_probes("a.b.c")
    ['a.b.c', 'b.c', 'c']
    >>> domain_probes("a.b.c", parent_style=False)
    ['a.b.c', '.b.c', '.c']
    """
    name = domain.lower()
    if not name:
        return []
    probes = [name]
    if is_address(name):
        return probes  # "Don't apply subdomain magic to numerical hostnames."
    pos = 0
    while True:
        nxt = name.find(".", pos + 1)
        if nxt < 0:
            break
        if parent_style:
            nxt += 1
        pos = nxt
        if pos >= len(name):
            break
        probes.append(name[pos:])
    return probes


def address_probes(addr: str) -> list[str]:
    """Keys smtpd tries for a client address: the address, then shorter prefixes.

    >>> address_probes("192.0.2.1")
    ['192.0.2.1', '192.0.2', '192.0', '192']
    """
    text = addr.lower()
    if not text:
        return []
    delim = ":" if ":" in text else "."
    probes = [text]
    while delim in text:
        text = text[: text.rindex(delim)]
        probes.append(text)
    return probes


def client_probes(name: str | None, addr: str | None, *,
                  parent_style: bool = DEFAULT_PARENT_STYLE) -> list[str]:
    """Keys ``check_client_access`` tries: the name (or ``unknown``), its parents, the address."""
    probes = domain_probes(name or "unknown", parent_style=parent_style)
    if addr:
        probes += address_probes(addr)
    return probes


def sender_probes(address: str | None, *, parent_style: bool = DEFAULT_PARENT_STYLE,
                  recipient_delimiter: str = "", null_key: str = NULL_SENDER_KEY,
                  myorigin: str | None = None) -> list[str]:
    """Keys ``check_sender_access`` tries for an envelope sender, in order.

    An address without ``@`` is qualified with ``myorigin`` first, as
    trivial-rewrite does before smtpd looks it up.
    """
    if not address:
        return [null_key]
    addr = address.lower()
    if "@" not in addr:
        if not myorigin:
            return [addr]  # smtpd would warn "no @domain"; nothing else is tried
        addr = f"{addr}@{myorigin.lower()}"
    local, _, domain = addr.rpartition("@")
    bare_local = _strip_extension(local, recipient_delimiter)
    probes = [addr]
    if bare_local != local:
        probes.append(f"{bare_local}@{domain}")
    probes += domain_probes(domain, parent_style=parent_style)
    probes.append(f"{local}@")
    if bare_local != local:
        probes.append(f"{bare_local}@")
    return probes


def _strip_extension(local: str, delimiters: str) -> str:
    """``user+ext`` → ``user`` (strip_addr: the first delimiter found ends the user part)."""
    if not delimiters:
        return local
    cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
    return local[:cut] if cut > 0 else local


def unreachable(key: str, *, client: bool, parent_style: bool = DEFAULT_PARENT_STYLE) -> str | None:
    """Why smtpd can never find ``key`` in a hash-type client or sender table (None: it can).

    These are the classic silent mistakes: ``.domain`` keys with the default
    ``parent_domain_matches_subdomains``, CIDR ranges in a hash table,
    ``@domain`` (a virtual(5) form, not an access(5) one), mail addresses in a
    client table.
    """
    k = key.lower()
    if k.startswith(".") and parent_style:
        return (f"keys with a leading dot are never looked up while parent_domain_matches_subdomains "
                f"includes smtpd_access_maps; the key {k[1:]} matches the domain and its subdomains")
    if "/" in k and re.fullmatch(r"[0-9a-f.:]+/\d+", k):
        return "a hash table matches no CIDR range; use a cidr: table or a partial address like 192.0.2"
    if client and "@" in k:
        return "check_client_access looks up host names and addresses, never mail addresses"
    if not client and k.startswith("@"):
        return f"check_sender_access never looks up @domain; the key is the bare domain {k[1:]}"
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)+", k) and not valid_key(k):
        return "not an address or prefix smtpd would produce (octets above 255 or leading zeros)"
    return None


# --------------------------------------------------------------------------- writing

_HOST_RE = re.compile(r"\.?(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                      r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_LOCAL_RE = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


def valid_key(key: str) -> bool:
    """True for keys maillens is willing to write: hostnames, ``.domains``, IPs and
    prefixes, ``user@domain``, ``@domain``-free ``user@``.  Anything a log line
    could smuggle in (spaces, quotes, ``#``) is refused.
    """
    k = key.lower()
    if not k or len(k) > 320:
        return False
    if re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){0,3}", k):
        return all(int(part) < 256 and (part == "0" or not part.startswith("0")) for part in k.split("."))
    if ":" in k:
        return bool(re.fullmatch(r"[0-9a-f:]+", k))
    if "@" in k:
        local, _, domain = k.rpartition("@")
        if not _LOCAL_RE.fullmatch(local) or "@" in local:
            return False
        return domain == "" or bool(_HOST_RE.fullmatch(domain))
    return bool(_HOST_RE.fullmatch(k))


def format_line(key: str, value: str, width: int = 32) -> str:
    """One table line, key padded so values line up; refuses keys postmap would misread."""
    if not valid_key(key):
        raise ValueError(f"refusing to write access key {key!r}")
    if any(c in value for c in "\n\r") or not value.strip():
        raise ValueError(f"refusing to write access value {value!r}")
    return f"{key:<{width}} {value.strip()}"


def comment_lines(text: str) -> list[str]:
    """Text → ``# ...`` lines (postmap skips them; a ``#`` after a value would not be skipped)."""
    return [f"# {line}".rstrip() for line in text.splitlines() or [""]]
