"""pflogsumm's counting rules, applied to events, in a form the store can add up.

``Counter.feed(event)`` does what pflogsumm 1.1.5's main loop does with the
same line (see docs/counting.md for every rule and every deliberate
difference), but keeps its figures per *day and hour* (``counts``), per day
and address (``addr``), per day and detail key (``details``) and per day and
deferred message (``deferred``), so that

* ``maillens summary FILE`` feeds a fresh Counter and prints it, and
* ``maillens ingest`` drains a Counter into the store after every batch
  (``drain()``), and ``maillens summary`` over a date range sums the same
  rows back (``maillens.summary.SummaryData.from_store``).

State that spans lines of one message (the size seen on qmgr's ``from=``
line, where a received message came from) is kept per open queue ID and
dropped when the message is removed, so memory follows the open messages.
"""

from __future__ import annotations

import re
from math import isfinite
from typing import Any, Final

from maillens.envelope import log_int
from maillens.events import Event

#: pflogsumm's text patterns, copied from /usr/sbin/pflogsumm (1.1.5).
_CLEANUP_REJ: Final = re.compile(
    r".*?\b((?:milter-)?reject|warning|hold|discard): (header|body|END-OF-MESSAGE) (.*)$", re.S
)
_CLIENT: Final = re.compile(r"\w+: client=(.+?)(?:,|$)", re.S)
_SMTPD_REJ: Final = re.compile(r"\w+: (reject(?:_warning)?|hold|discard): ")
_FROM_SIZE: Final = re.compile(r"from=<([^>]*)>, size=(\d+)")
_TO: Final = re.compile(
    r"to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]+), (?:conn_use=[^,]+, )?delay=([^,]+), "
    r"(?:delays=[^,]+, )?(?:dsn=[^,]+, )?status=(\S+)(.*)$",
    re.S,
)
_PICKUP: Final = re.compile(r": (?:sender|uid)=")
_SMTP_FAIL1: Final = re.compile(r".* connect to (\S+?): ([^;]+); address \S+ port.*$", re.S)
_SMTP_FAIL2: Final = re.compile(r".* connect to ([^[]+)\[\S+?\]: (.+?) \(port \d+\)$", re.S)
_QID: Final = re.compile(r"[^:\s]+")
_DEFER_REASON: Final = re.compile(r", status=deferred \(([^\)]+)")
_BOUNCE_REASON: Final = re.compile(r", status=bounced \((.+)\)", re.S)
_DOMAIN_LOWER: Final = re.compile(r"(@.+)", re.S)
#: pflogsumm's ``^.* \b(?:reject…): (\S+) from (\S+?): (.*)$`` -- its greedy ``^.*`` picks the
#: rightmost keyword where the rest fits; done as keyword search + anchored tail (no backtracking).
_REJ_KW: Final = re.compile(r" \b(?:reject(?:_warning)?|hold|discard): ")
_REJ_TAIL: Final = re.compile(r"(\S+) from (\S+?): (.*)$", re.S)
_HOST_IP: Final = re.compile(r"^([^\[]*)\[((?:\d{1,3}\.){3}\d{1,3})\]")
_HOST_SLASH: Final = re.compile(r"^([^/]*)/([0-9a-f.:]+)", re.I)
_HOST_ANY: Final = re.compile(r"^([^\[\(/]*)[\[\(/]([^\]\)]+)[\]\)]:?\d*$")
_DOMAIN_2LVL: Final = re.compile(r"^(.*)\.([^\.]+)\.([^\.]{3}|[^\.]{2,3}\.[^\.]{2})$", re.S)

#: Which counter each reject-like word adds to (and the detail section).
_REJ_COUNTER: Final = {
    "reject": "rejected",
    "milter-reject": "rejected",
    "reject_warning": "reject_warnings",
    "warning": "reject_warnings",
    "hold": "held",
    "discard": "discarded",
}
_REJ_SECTION: Final = {
    "reject": "reject",
    "milter-reject": "reject",
    "reject_warning": "reject_warning",
    "warning": "reject_warning",
    "hold": "hold",
    "discard": "discard",
}


def string_trimmer(text: str, max_len: int) -> str:
    """pflogsumm: cut to ``max_len`` with an ellipsis."""
    return text[: max_len - 3] + "..." if len(text) > max_len else text


_SAID: Final = re.compile(r"^.* said: ", re.S)
_COLON_LAZY: Final = re.compile(r"^.*?: *", re.S)
_COLON_ANY: Final = re.compile(r"^.*: *", re.S)
_CODE3: Final = re.compile(r"^\d{3} ")
_CONNECT_TO: Final = re.compile(r"^connect to ")
_CLEANUP_FROM: Final = re.compile(r"( from \S+?)?; from=<.*$", re.S)
_HAS_DOMAIN: Final = re.compile(r"^[^@]+@(.+)$", re.S)
_AFTER_WORD: Final = {w: re.compile(r"^.*" + w + ": ", re.S) for w in ("warning", "fatal", "panic")}
_AFTER_MASTER: Final = re.compile(r"^.*master.*: ", re.S)


def said_string_trimmer(text: str, max_len: int) -> str:
    """pflogsumm: drop leading ``... said:`` / ``...:`` parts until it fits."""
    while len(text) > max_len:
        m = _SAID.match(text)
        if m:
            text = text[m.end():]
            continue
        m = _COLON_LAZY.match(text)
        if m and _COLON_ANY.match(text):
            text = text[m.end():]
            continue
        return text[: max_len - 3] + "..."
    return text


def gimme_domain(client: str) -> str:
    """pflogsumm's ``gimme_domain``: the client's 2nd-level domain, else its IP."""
    m = _HOST_IP.match(client) or _HOST_SLASH.match(client) or _HOST_ANY.match(client)
    domain, ip = (m.group(1), m.group(2)) if m else ("", "")
    if domain == "" or domain == "unknown":
        return ip
    m2 = _DOMAIN_2LVL.match(domain)
    return (m2.group(2) + "." + m2.group(3)).lower() if m2 else domain


def norm_addr(addr: str) -> str:
    """Lower-case the domain part, as pflogsumm does without ``-i``."""
    at = addr.find("@")
    return addr if at < 0 else addr[:at] + addr[at:].lower()


_R = re.S
_RJ_ADDR = re.compile(r"^(\d{3} <).*?(>:)", _R)
_RJ_PROTO = re.compile(r"^(?:\d{3} \d\.\d\.\d )(Protocol error);.*$", _R)
_RJ_REASON = re.compile(r"^(?:.*?[:;] )(?:\[[^\]]+\] )?([^;,]+)[;,].*$", _R)
_RJ_ADDR_REJ = re.compile(r"^((?:Sender|Recipient) address rejected: [^:]+):.*$", _R)
_RJ_BLOCKED = re.compile(r"(client|Client host|Sender address) .+? blocked", _R)
_RJ_MAIL = re.compile(r"^\d{3} (?:<.+>: )?([^;:]+)[;:]?.*$", _R)
_RJ_OTHER = re.compile(r"^(?:.*[:;] )?([^,]+).*$", _R)
_RJ_TO1 = re.compile(r"to=<([^>]+)>")
_RJ_TO2 = re.compile(r"\d{3} <([^>]+)>: User unknown ")
_RJ_TO3 = re.compile(r"to=<(.*?)(?:[, ]|$)", _R)
_RJ_FROM = re.compile(r"from=<([^>]+)>")
_RJ_RCPT = re.compile(r"^(Recipient address rejected:|User unknown( |$))")
_RJ_PIPE = re.compile(r"^.*?\d{3} (Improper use of SMTP command pipelining);.*$", _R)
_RJ_SRC = re.compile(r"^.+? from (\S+?):.*$", _R)
_RJ_SIZE = re.compile(r"^.*?\d{3} (Message size exceeds fixed limit);.*$", _R)
_RJ_CONF = re.compile(r"^.*?\d{3} (Server configuration (?:error|problem));.*$", _R)


_REJ_WORDS: Final = (" reject: ", " reject_warning: ", " hold: ", " discard: ")


def reject_keyword_ends(text: str) -> list[int]:
    r"""Where each ``_REJ_KW`` match ends, as ``finditer`` finds them (left to right, not overlapping).

    ``str.find`` does it in a fraction of the regex's time: the pattern's
    ``\b`` always holds after its leading space, so it is four literals.
    Two matches can share one space (``" reject: hold: "``); ``finditer``
    keeps the first, and so does this.
    """
    if ": " not in text:
        return []
    found: list[tuple[int, int]] = []
    for word in _REJ_WORDS:
        i = text.find(word)
        while i >= 0:
            found.append((i, i + len(word)))
            i = text.find(word, i + 1)
    if len(found) < 2:
        return [found[0][1]] if found else []
    found.sort()
    ends: list[int] = []
    last = 0
    for start, end in found:
        if start >= last:
            ends.append(end)
            last = end
    return ends


def reject_reason(reas: str) -> str:
    r"""``_RJ_REASON.sub(r"\1", reas, count=1)`` without the regex's backtracking.

    The pattern ``^(?:.*?[:;] )(?:\[[^\]]+\] )?([^;,]+)[;,].*$`` takes, after the
    first ``": "`` or ``"; "`` where the rest fits, an optional ``[...] `` and
    then the run of characters up to the next ``;`` or ``,``; the whole text
    becomes that run.  Done with ``str.find``: a test holds it to the regex.
    """
    pos = 0
    n = len(reas)
    while True:
        a, b = reas.find(": ", pos), reas.find("; ", pos)
        p = a if b < 0 or (0 <= a < b) else b
        if p < 0:
            return reas
        j = p + 2
        if j < n and reas[j] == "[":
            k = reas.find("]", j + 1)
            if k > j + 1 and reas.startswith(" ", k + 1):
                run = _reason_run(reas, k + 2, n)
                if run is not None:
                    return run
        run = _reason_run(reas, j, n)
        if run is not None:
            return run
        pos = p + 1


def _reason_run(reas: str, j: int, n: int) -> str | None:
    """``([^;,]+)[;,]`` at ``j``: the run before the next ``;`` or ``,`` (None when there is none)."""
    a, b = reas.find(";", j), reas.find(",", j)
    e = a if b < 0 or (0 <= a < b) else b
    return reas[j:e] if e > j else None


def smtpd_reject_key(rmdr: str) -> tuple[str, str, str] | None:
    """pflogsumm's ``proc_smtpd_reject`` detail key: (type, reason, datum)."""
    m = None
    for end in reversed(reject_keyword_ends(rmdr)):
        m = _REJ_TAIL.match(rmdr, end)
        if m is not None:
            break
    if m is None:
        return None
    rej_typ, rej_from, rej_rmdr = m.groups()
    reas = rej_rmdr
    if rej_typ in ("RCPT", "DATA", "CONNECT"):  # (substring guards only skip subs that cannot apply)
        if reas[3:5] == " <":
            reas = _RJ_ADDR.sub(r"\1\2", reas, count=1)
        if "Protocol error;" in reas:
            reas = _RJ_PROTO.sub(r"\1", reas, count=1)
        reas = reject_reason(reas)
        if "address rejected: " in reas:
            reas = _RJ_ADDR_REJ.sub(r"\1", reas, count=1)
        if " blocked" in reas:
            reas = _RJ_BLOCKED.sub("blocked", reas, count=1)
    elif rej_typ == "MAIL":
        reas = _RJ_MAIL.sub(r"\1", reas, count=1)
    else:
        reas = _RJ_OTHER.sub(r"\1", reas, count=1)
    if reas.startswith("Sender address rejected:"):
        fm = _RJ_FROM.search(rej_rmdr)
        return rej_typ, reas, fm.group(1) if fm else "<>"
    if _RJ_RCPT.match(reas):
        to = _RJ_TO1.search(rej_rmdr) or _RJ_TO2.search(rej_rmdr) or _RJ_TO3.search(rej_rmdr)
        return rej_typ, reas, to.group(1) if to else "<>"
    new, n = _RJ_PIPE.subn(r"\1", reas, count=1) if "pipelining;" in reas else (reas, 0)
    if n:
        src = _RJ_SRC.match(rmdr)
        return rej_typ, new, src.group(1) if src else ""
    new, n = _RJ_SIZE.subn(r"\1", reas, count=1) if "fixed limit;" in reas else (reas, 0)
    if n:
        return rej_typ, new, gimme_domain(rej_from)
    new, n = _RJ_CONF.subn(r"(Local) \1", reas, count=1) if "Server configuration" in reas else (reas, 0)
    if n:
        return rej_typ, new, gimme_domain(rej_from)
    return rej_typ, reas, gimme_domain(rej_from)


def _qid_of(msg: str) -> str:
    """pflogsumm's ``$qid``: the message's first run of characters other than ``:`` and white space."""
    m = _QID.match(msg)
    return m.group(0) if m else ""


def pflogsumm_cmd(program: str | None, syslog_name: str = "postfix") -> str | None:
    """The daemon name a line is filed under, or None when pflogsumm skips the line.

    ``postfix/smtpd`` → ``smtpd``; ``postfix/submission/smtpd`` → ``smtpd``;
    ``postfix`` / ``postfix-script`` → themselves; anything else → None.
    Two deliberate differences (docs/counting.md): other master.cf service
    names (``postfix/smtp-25/smtpd``) end in their daemon, where pflogsumm
    files them under ``smtp-25/smtpd`` and so never counts what they receive;
    and second instances (``postfix-out/smtp``) are counted, where pflogsumm
    skips them unless given ``--syslog-name``.
    """
    if not program:
        return None
    head, sep, rest = program.partition("/")
    if not sep:
        return program if program in ("postfix", "postfix-script", syslog_name) else None
    if head != "postfix" and head != syslog_name and not head.startswith("postfix-"):
        return None
    if "/" in rest:
        rest = rest.rsplit("/", 1)[1]
    return rest or None


class Counter:
    """Accumulates pflogsumm's figures (and maillens's extras) per day and hour."""

    def __init__(self, syslog_name: str = "postfix") -> None:
        self.syslog_name = syslog_name
        self.counts: dict[tuple[str, int, str], int] = {}
        self.deferred: set[tuple[str, str]] = set()
        self.addr: dict[tuple[str, str, str], list[float]] = {}
        self.details: dict[tuple[str, str, str, str, str], int] = {}
        # per open queue ID: [size or 0, whence or None]
        self.open: dict[str, list[Any]] = {}
        self._cmds: dict[str, str | None] = {}
        self._hours: dict[tuple[int, int, int, int], tuple[str, int]] = {}

    # -- helpers ---------------------------------------------------------------
    def _inc(self, day: str, hour: int, name: str, n: int = 1) -> None:
        key = (day, hour, name)
        self.counts[key] = self.counts.get(key, 0) + n

    def _detail(self, day: str, section: str, k1: str, k2: str = "", k3: str = "") -> None:
        key = (day, section, k1, k2, k3)
        self.details[key] = self.details.get(key, 0) + 1

    def _addr(self, day: str, kind: str, key: str) -> list[float]:
        k = (day, kind, key)
        rec = self.addr.get(k)
        if rec is None:
            rec = self.addr[k] = [0, 0, 0, 0.0, 0.0]
        return rec

    def drain(self) -> tuple[dict[Any, int], set[tuple[str, str]], dict[Any, list[float]], dict[Any, int]]:
        """Hand over (and forget) the figures counted so far; open state stays."""
        out = (self.counts, self.deferred, self.addr, self.details)
        self.counts, self.deferred, self.addr, self.details = {}, set(), {}, {}
        return out

    # -- the per-line rules ------------------------------------------------------
    def feed(self, ev: Event) -> None:
        ts = ev.ts
        if ts is None:
            return
        hk = (ts.year, ts.month, ts.day, ts.hour)
        dh = self._hours.get(hk)
        if dh is None:
            dh = self._hours[hk] = (f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}", ts.hour)
        self.feed_at(ev, *dh)

    def feed_at(self, ev: Event, day: str, hour: int) -> None:
        """``feed`` with the line's day and hour already worked out (``ingestscan`` keeps them per minute).

        ``ev`` may be any object with Event's attributes (``daemon`` included)."""
        kind = ev.kind
        counts = self.counts
        lk = (day, hour, "lines")
        counts[lk] = counts.get(lk, 0) + 1
        if kind not in _PLAIN_KINDS:
            self._extras(ev, kind, day, hour)
        program = ev.program
        if program is None:
            return
        cmd = self._cmds.get(program, "?")
        if cmd == "?":
            if len(self._cmds) > 10_000:  # hostile input: unbounded program names
                self._cmds.clear()
            cmd = self._cmds[program] = pflogsumm_cmd(program, self.syslog_name)
        if cmd is None:
            return
        self._pflogsumm(ev, cmd, day, hour)

    def _extras(self, ev: Event, kind: str, day: str, hour: int) -> None:
        """maillens's own figures: restrictions, RBL zones, SPF, SASL, postscreen."""
        data = ev.data
        if kind == "reject" or kind == "reject_warning":
            section = "restriction" if kind == "reject" else "restriction_warning"
            self._detail(day, section, data.get("restriction") or "unknown", data.get("rbl") or "",
                         data.get("stage") or "")  # fmt: skip
        elif kind == "connect":
            if ev.daemon == "smtpd":
                self._inc(day, hour, "connections")
        elif kind == "sasl_failure":
            self._inc(day, hour, "sasl_failures")
            self._detail(day, "sasl", data.get("client_ip") or "", data.get("sasl_method") or "",
                         data.get("sasl_username") or "")  # fmt: skip
        elif kind == "spf":
            self._detail(day, "spf", (data.get("spf_result") or "").lower(), data.get("identity") or "",
                         data.get("action") or "")  # fmt: skip
        elif kind == "postscreen":
            action = data.get("action") or (ev.message.split(" ", 1)[0] if ev.message else "")
            self._detail(day, "postscreen", str(action), data.get("client_ip") or "")
        elif kind == "lost_connection":
            self._inc(day, hour, "lost_connections")
        elif kind == "expired":
            self._inc(day, hour, "expired")
        elif kind == "bounce_notice":
            self._inc(day, hour, "bounce_notices")
        elif kind == "removed":
            self._dropped(ev.queue_id or "")

    def _rmdr(self, ev: Event) -> str:
        """pflogsumm's ``$logRmdr``: the line after time stamp and host."""
        raw = ev.raw
        prog = ev.program or ""
        i = raw.find(prog + "[") if prog else -1
        if i < 0:
            i = raw.find(prog + ":") if prog else -1
        if i >= 0:
            return raw[i:].rstrip("\r\n")
        pid = f"[{ev.pid}]" if ev.pid is not None else ""
        return f"{prog}{pid}: {ev.message}"

    def _pflogsumm(self, ev: Event, cmd: str, day: str, hour: int) -> None:
        msg = ev.message
        has_pid = ev.pid is not None
        if cmd == "cleanup" and has_pid and (": header " in msg or ": body " in msg or ": END-OF-MESSAGE " in msg):
            m = _CLEANUP_REJ.match(msg)
            if m:
                sub, reas, rest = m.groups()
                rest = _CLEANUP_FROM.sub("", rest, count=1)
                rest = string_trimmer(rest, 64)
                self._inc(day, hour, _REJ_COUNTER[sub])
                self._detail(day, _REJ_SECTION[sub], cmd, reas, rest)
                return
        if msg.startswith(_WORDS):  # (the queue-ID-like first word can be one of them only then)
            qid = _qid_of(msg)
            if qid in ("warning", "fatal", "panic"):
                rmdr = self._rmdr(ev)
                m = _AFTER_WORD[qid].match(rmdr)
                reason = rmdr[m.end():] if m else rmdr
                self._detail(day, qid, cmd, string_trimmer(reason, 66))
                return
            if qid in ("reject", "reject_warning", "hold", "discard"):
                self._smtpd_reject(ev, qid, day, hour)
                return
        if cmd == "master":
            rmdr = self._rmdr(ev)
            m = _AFTER_MASTER.match(rmdr)
            self._detail(day, "master", rmdr[m.end():] if m else "")
            return
        if cmd == "smtpd" or cmd == "postscreen":
            if not has_pid:
                return
            if "client=" in msg:
                m = _CLIENT.match(msg)
                if m:
                    self._received(_qid_of(msg), gimme_domain(m.group(1)), day, hour)
                    return
            if ": reject" in msg or ": hold: " in msg or ": discard: " in msg:
                m = _SMTPD_REJ.match(msg)
                if m:
                    self._smtpd_reject(ev, m.group(1), day, hour)
            return
        self._other(ev, msg, cmd, day, hour)

    def _received(self, qid: str, whence: str, day: str, hour: int) -> None:
        self._inc(day, hour, "received")
        self._whence(qid, whence)

    # -- the per-message state (``BlockCounter`` records these calls instead) ---------
    def _dropped(self, qid: str) -> None:
        """qmgr removed the message: its size and origin are no longer needed."""
        self.open.pop(qid, None)

    def _whence(self, qid: str, whence: str) -> None:
        """Where a received message came from (its sender is counted when qmgr logs the size)."""
        rec = self.open.get(qid)
        if rec is None:
            self.open[qid] = [0, whence]
        else:
            rec[1] = whence

    def _smtpd_reject(self, ev: Event, sub: str, day: str, hour: int) -> None:
        self._inc(day, hour, _REJ_COUNTER[sub])
        key = smtpd_reject_key(self._rmdr(ev))
        if key is not None:
            self._detail(day, _REJ_SECTION[sub], *key)

    def _other(self, ev: Event, msg: str, cmd: str, day: str, hour: int) -> None:
        if "size=" in msg:
            m = _FROM_SIZE.search(msg)
            if m:
                self._sized(_qid_of(msg), m.group(1), log_int(m.group(2)) or 0, day, hour)
                return
        if "to=<" in msg:
            m = _TO.search(msg)
            if m:
                self._delivery(ev, cmd, _qid_of(msg), m, day, hour)
                return
        if cmd == "pickup":
            if _PICKUP.search(msg):
                self._received(_qid_of(msg), "pickup", day, hour)
            return
        if cmd == "smtp" and "connect to " in msg:
            rmdr = self._rmdr(ev)
            m = _SMTP_FAIL1.match(rmdr) or _SMTP_FAIL2.match(rmdr)
            if m:
                self._detail(day, "smtp_failure", m.group(2).lower(), m.group(1))

    def _sized(self, qid: str, addr: str, size: int, day: str, hour: int) -> None:
        rec = self.open.get(qid)
        if rec is not None and rec[0]:
            return  # pflogsumm: "avoid double-counting!" (qmgr logs from= on every retry)
        addr = norm_addr(addr) if addr else "from=<>"
        if rec is None:
            rec = self.open[qid] = [size, None]
        rec[0] = size
        whence = rec[1]
        if whence:
            m = _HAS_DOMAIN.match(addr)
            dom = m.group(1) if m else (addr if whence == "pickup" else whence)
            d = self._addr(day, "sender_domain", dom)
            d[0] += 1
            d[1] += size
            u = self._addr(day, "sender", addr)
            u[0] += 1
            u[1] += size
            self._inc(day, hour, "bytes_received", size)
            rec[1] = None

    def _delivery(self, ev: Event, cmd: str, qid: str, m: "re.Match[str]", day: str, hour: int) -> None:
        addr, relay, delay_s, status, to_rmdr = m.groups()
        addr = norm_addr(addr)
        at = addr.find("@")
        dom = addr[at + 1:] if at > 0 else addr
        try:
            delay = float(delay_s)
        except ValueError:
            delay = 0.0
        if not isfinite(delay):  # "delay=1e400", "delay=nan": not a delay, and round() would raise
            delay = 0.0
        if status == "sent":
            if "forwarded as " in to_rmdr:
                self._inc(day, hour, "forwarded")
                return
            rd = self._addr(day, "recipient_domain", dom)
            rd[0] += 1
            rd[3] += round(delay * 1000)  # integer ms: sums must not depend on batch boundaries
            if delay > rd[4]:
                rd[4] = delay
            ru = self._addr(day, "recipient", addr)
            ru[0] += 1
            self._inc(day, hour, "delivered")
            self._sent_size(qid, addr, dom, day, hour)
        elif status == "deferred":
            rm = _DEFER_REASON.search(ev.message)
            reason = rm.group(1) if rm else ""
            reason = said_string_trimmer(reason, 65)
            reason = _CODE3.sub("", reason, count=1)
            reason = _CONNECT_TO.sub("", reason, count=1)
            self._detail(day, "deferral", cmd, reason)
            self._inc(day, hour, "deferrals")
            self.deferred.add((day, qid))
            rd = self._addr(day, "recipient_domain", dom)
            rd[2] += 1
            if delay > rd[4]:
                rd[4] = delay
        elif status == "bounced":
            rm = _BOUNCE_REASON.search(ev.message)
            reason = said_string_trimmer(rm.group(1) if rm else "", 66)
            reason = _CODE3.sub("", reason, count=1)
            self._detail(day, "bounce", relay, reason)
            self._inc(day, hour, "bounced")

    def _sent_size(self, qid: str, addr: str, dom: str, day: str, hour: int) -> None:
        """A delivered recipient's bytes: the size qmgr logged for its message, if seen."""
        rec = self.open.get(qid)
        size = rec[0] if rec is not None else 0
        if size:
            self._addr(day, "recipient_domain", dom)[1] += size
            self._addr(day, "recipient", addr)[1] += size
            self._inc(day, hour, "bytes_delivered", size)
        else:
            self._detail(day, "no_size", qid, addr)

    def apply(self, op: tuple[Any, ...]) -> None:
        """Replay one per-message call a ``BlockCounter`` recorded (in line order)."""
        _OPS[op[0]](self, *op[1:])

    def merge(self, counts: dict[Any, int], deferred: set[tuple[str, str]], addr: dict[Any, list[float]],
              details: dict[Any, int]) -> None:
        """Add figures counted elsewhere (a worker's block) to this counter's."""
        mine = self.counts
        for k, v in counts.items():
            mine[k] = mine.get(k, 0) + v
        self.deferred |= deferred
        mine_d = self.details
        for k, v in details.items():
            mine_d[k] = mine_d.get(k, 0) + v
        mine_a = self.addr
        for k, v in addr.items():
            rec = mine_a.get(k)
            if rec is None:
                mine_a[k] = v
            else:
                rec[0] += v[0]
                rec[1] += v[1]
                rec[2] += v[2]
                rec[3] += v[3]
                if v[4] > rec[4]:
                    rec[4] = v[4]

    # -- state between runs ------------------------------------------------------
    def open_state(self) -> dict[str, Any]:
        return {qid: list(v) for qid, v in self.open.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self.open = {qid: list(v) for qid, v in state.items()}

    def forget(self, qid: str) -> None:
        """The tracker evicted ``qid``: drop its per-message state too."""
        self.open.pop(qid, None)


#: The first words pflogsumm files a line under (warnings, rejects) instead of a queue ID.
_WORDS: Final = ("warning", "fatal", "panic", "reject", "reject_warning", "hold", "discard")

#: Kinds with nothing for ``_extras`` (the common ones: skip the call).
_PLAIN_KINDS: Final = frozenset({"received", "cleanup", "queued", "delivery", "disconnect", "tls", "other",
                                 "warning", "unparsed", "timeout", "too_many_errors", "pipelining"})


class BlockCounter(Counter):
    """A Counter for one block of lines read apart from the others (a worker process).

    Everything pflogsumm counts per line is additive and is counted here; the
    few calls that need what earlier lines said about the same message (size
    and origin per queue ID) cannot be settled inside a block, so they are
    recorded in ``ops`` -- in line order, interleaved with whatever else the
    caller appends -- and replayed by the one sequential ``Counter.apply``.
    """

    def __init__(self, ops: list[tuple[Any, ...]], syslog_name: str = "postfix") -> None:
        super().__init__(syslog_name)
        self.ops = ops

    def _dropped(self, qid: str) -> None:
        self.ops.append(("X", qid))

    def _whence(self, qid: str, whence: str) -> None:
        self.ops.append(("W", qid, whence))

    def _sized(self, qid: str, addr: str, size: int, day: str, hour: int) -> None:
        self.ops.append(("S", qid, addr, size, day, hour))

    def _sent_size(self, qid: str, addr: str, dom: str, day: str, hour: int) -> None:
        self.ops.append(("D", qid, addr, dom, day, hour))


#: The recorded calls by tag (``BlockCounter``); single letters, apart from event kinds.
_OPS: Final = {"X": Counter._dropped, "W": Counter._whence, "S": Counter._sized, "D": Counter._sent_size}
