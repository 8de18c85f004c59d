"""Correlation: queue IDs and smtpd sessions → one record per message.

Postfix writes a message's story over many lines and processes: smtpd
(``connect``, ``QID: client=``, maybe ``QID: reject: RCPT``), cleanup
(``message-id=``), qmgr (``from=, size=, nrcpt=``), one delivery line per
recipient and attempt (smtp, local, virtual, lmtp, error, …), bounce
(``sender non-delivery notification: NEWQID``), qmgr ``removed``.  The
tracker folds them into a record that ``trace``, reports and the store use.

Memory follows what is open at once, not the log's size: a record leaves
memory when qmgr says ``removed``; one whose smtpd session ended before
cleanup took the message is closed as ``abandoned``; anything not seen for
``max_age`` seconds of *log* time is written out as ``incomplete`` and
counted (``incomplete`` attribute and the ``messages_incomplete`` counter).
Sweeps happen when the log time crosses a fixed 60-second grid, so where a
batch (or a crash) splits the input never changes the result.

Queue IDs are opaque strings, so short (``4F3A21C0D9``) and long
(``4jNNYT59HXzJ9dN``) IDs work alike.  Sessions are keyed by
(host, program, pid): one smtpd process serves one client at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Final

from maillens.envelope import log_int
from maillens.events import Event

#: Seconds of log time without a line before an open message is written out
#: as incomplete.  Longer than Postfix's default maximal_queue_lifetime (5d).
DEFAULT_MAX_AGE: Final = 6 * 86400
#: An smtpd session with no line for this long is forgotten.
SESSION_MAX_AGE: Final = 3600
#: After the client left, a message cleanup never saw is abandoned after this.
ABANDON_AFTER: Final = 300
SWEEP_EVERY: Final = 60
#: The event kinds the tracker reads (``compact`` drops the others).
TRACKED_KINDS: Final = frozenset({"connect", "received", "cleanup", "queued", "delivery", "expired", "bounce_notice",
                                  "removed", "disconnect", "reject", "reject_warning", "spf"})


def _new_message(qid: str, ts: float, day: str) -> dict[str, Any]:
    return {
        "queue_id": qid, "day": day, "first_ts": ts, "last_ts": ts, "state": None,
        "client_name": None, "client_ip": None, "helo": None, "sasl_method": None,
        "sasl_username": None, "message_id": None, "sender": None, "size": None, "nrcpt": None,
        "parent_queue_id": None, "bounce_queue_ids": None, "origin": None, "connect_ts": None,
        "deliveries": [], "_session": None, "_left": None, "_expired": False,
    }  # fmt: skip


class Tracker:
    """Feed events in log order; collect closed records from ``finished``.

    >>> t = Tracker()
    >>> for ev in events: t.feed(ev)          # doctest: +SKIP
    >>> t.finished[0]["state"]                 # doctest: +SKIP
    'removed'
    """

    def __init__(self, max_age: float = DEFAULT_MAX_AGE, on_evict: Callable[[str], None] | None = None) -> None:
        self.max_age = float(max_age)
        self.open: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        #: Open session keys by client address, oldest connect first (policyd-spf's lines name the address).
        self._by_ip: dict[Any, dict[str, None]] = {}
        self.finished: list[dict[str, Any]] = []
        #: (notice queue ID, parent queue ID) learnt after the notice was closed:
        #: the store applies them to records it already holds.
        self.late_links: list[tuple[str, str]] = []
        #: Records written out as incomplete, per day of their last line.
        self.incomplete: dict[str, int] = {}
        self.next_sweep = 0.0
        self.on_evict = on_evict
        #: Queue IDs closed as abandoned, with their last time: their counting state goes after max_age.
        self.abandoned: dict[str, float] = {}
        self._dispatch: dict[str, Callable[[tuple[Any, ...], float], None]] = {
            "connect": self._connect,
            "received": self._received,
            "cleanup": self._cleanup,
            "queued": self._queued,
            "delivery": self._delivery,
            "expired": self._expired,
            "bounce_notice": self._bounce_notice,
            "removed": self._removed,
            "disconnect": self._disconnect,
            "reject": self._reject,
            "reject_warning": self._reject,
            "spf": self._spf,
        }
        assert set(self._dispatch) == TRACKED_KINDS

    # -- the per-line entry point ------------------------------------------------
    def feed(self, ev: Event) -> None:
        t = compact(ev)
        if t is not None:
            self.feed_compact(t)

    def feed_compact(self, t: tuple[Any, ...]) -> None:
        """One event in the form ``compact`` gives (what ingest's worker processes send)."""
        ts = t[1]
        if ts >= self.next_sweep:
            self.sweep(ts)
        self._dispatch[t[0]](t, ts)

    def drain(self) -> list[dict[str, Any]]:
        """Hand over the records closed since the last call."""
        out, self.finished = self.finished, []
        return out

    # -- helpers -------------------------------------------------------------------
    def _message(self, t: tuple[Any, ...], ts: float, qid: str | None = None) -> dict[str, Any] | None:
        qid = qid or t[3]
        if not qid:
            return None
        msg = self.open.get(qid)
        if msg is None:
            msg = self.open[qid] = _new_message(qid, ts, t[2])
            if qid in self.abandoned:  # seen again (released from hold): its counting state is its own again
                del self.abandoned[qid]
        elif ts - msg["last_ts"] > self.max_age:
            self._close(msg, "incomplete")  # an old record under a reused short ID
            return self._message(t, ts, qid)
        msg["last_ts"] = ts
        return msg

    def _close(self, msg: dict[str, Any], state: str) -> None:
        qid = msg["queue_id"]
        if self.open.get(qid) is msg:
            del self.open[qid]
        msg["state"] = state
        sess = self.sessions.get(msg.pop("_session", None) or "")
        if sess is not None and qid in sess["queue_ids"]:
            sess["queue_ids"].remove(qid)
        msg.pop("_left", None)
        msg.pop("_expired", None)
        if msg["bounce_queue_ids"] is not None and not isinstance(msg["bounce_queue_ids"], str):
            msg["bounce_queue_ids"] = ",".join(msg["bounce_queue_ids"])
        if state == "incomplete":
            day = msg["day"]
            self.incomplete[day] = self.incomplete.get(day, 0) + 1
        if state == "incomplete" and self.on_evict is not None:
            self.on_evict(qid)
        elif state == "abandoned":
            # qmgr may still take it (a message held by cleanup and released later): its counting
            # state is kept for max_age more, then released (``sweep``), so it cannot pile up
            self.abandoned[qid] = msg["last_ts"]
        self.finished.append(msg)

    def sweep(self, now: float) -> None:
        """Close what has been open too long (log time ``now``)."""
        self.next_sweep = (now // SWEEP_EVERY + 1) * SWEEP_EVERY
        limit = now - self.max_age
        for msg in [m for m in self.open.values() if m["last_ts"] < limit]:
            self._close(msg, "incomplete")
        gone = now - ABANDON_AFTER
        for msg in [m for m in self.open.values() if m["_left"] is not None and m["_left"] < gone]:
            self._close(msg, "abandoned")
        old = now - SESSION_MAX_AGE
        for key in [k for k, s in self.sessions.items() if s["last_ts"] < old]:
            self._end_session(key)
        for qid in [q for q, ts in self.abandoned.items() if ts < limit]:
            del self.abandoned[qid]
            if self.on_evict is not None:
                self.on_evict(qid)

    def close_all(self) -> None:
        """End of input for a one-shot run (``summary FILE``, ``trace FILE``)."""
        for msg in list(self.open.values()):
            self._close(msg, "incomplete")

    # -- handlers: t = (kind, ts, day, queue_id, session key, daemon, *fields of the kind) ----
    def _connect(self, t: tuple[Any, ...], ts: float) -> None:
        key = t[4]
        self._end_session(key)  # (a process whose disconnect line was lost: its new client replaces it)
        self.sessions[key] = {
            "client_name": t[6], "client_ip": t[7], "helo": None,
            "connect_ts": ts, "last_ts": ts, "queue_ids": [],
        }  # fmt: skip
        self._by_ip.setdefault(t[7], {})[key] = None

    def _end_session(self, key: str) -> dict[str, Any] | None:
        """Forget an open session (and its place in the by-address index); the session, if it was open."""
        sess = self.sessions.pop(key, None)
        if sess is not None:
            keys = self._by_ip.get(sess["client_ip"])
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._by_ip[sess["client_ip"]]
        return sess

    def _received(self, t: tuple[Any, ...], ts: float) -> None:
        msg = self._message(t, ts)
        if msg is None:
            return
        daemon = t[5]
        msg["origin"] = daemon
        for f, v in zip(_RECEIVED_FIELDS, t[6:10]):
            if v is not None:
                msg[f] = v
        if daemon == "smtpd" or daemon == "postscreen":
            key = t[4]
            sess = self.sessions.get(key)
            if sess is not None:
                sess["last_ts"] = ts
                sess["queue_ids"].append(msg["queue_id"])
                msg["_session"] = key
                msg["connect_ts"] = sess["connect_ts"]
                if msg["helo"] is None:
                    msg["helo"] = sess["helo"]

    def _cleanup(self, t: tuple[Any, ...], ts: float) -> None:
        msg = self._message(t, ts)
        if msg is not None and t[6] is not None:
            msg["message_id"] = t[6]

    def _queued(self, t: tuple[Any, ...], ts: float) -> None:
        msg = self._message(t, ts)
        if msg is None:
            return
        msg["_left"] = None
        if t[6] is not None:  # qmgr's from= is the envelope as queued (after canonical rewriting): it wins
            msg["sender"] = t[6]
        if msg["size"] is None and t[7] is not None:
            msg["size"] = t[7]
        if msg["nrcpt"] is None and t[8] is not None:
            msg["nrcpt"] = t[8]

    def _delivery(self, t: tuple[Any, ...], ts: float) -> None:
        msg = self._message(t, ts)
        if msg is not None:
            msg["deliveries"].append(t[6])

    def _reject(self, t: tuple[Any, ...], ts: float) -> None:
        """A reject with a queue ID refuses one recipient of an accepted message."""
        helo = t[6]
        sess = self.sessions.get(t[4])
        if sess is not None:
            sess["last_ts"] = ts
            if helo and sess["helo"] is None:
                sess["helo"] = helo
        if t[7] is None:  # no queue ID (NOQUEUE): nothing more to record
            return
        msg = self._message(t, ts)
        if msg is None:
            return
        if msg["helo"] is None and helo:
            msg["helo"] = helo
        if msg["sender"] is None and t[8] is not None:  # a message refused at DATA never reaches qmgr's from=
            # (the reject names the sender before rewriting: qmgr's from=, if it comes, replaces it)
            msg["sender"] = t[8]
        msg["deliveries"].append(t[7])

    def _spf(self, t: tuple[Any, ...], ts: float) -> None:
        """policyd-spf runs in its own process: tie its HELO to the client's open session."""
        helo, ip = t[6], t[7]
        if not helo or not ip:
            return
        keys = self._by_ip.get(ip)
        if not keys:
            return
        sess = self.sessions[next(reversed(keys))]  # the client's most recent open session
        if sess["helo"] is None:
            sess["helo"] = helo
        for qid in sess["queue_ids"]:
            m = self.open.get(qid)
            if m is not None and m["helo"] is None:
                m["helo"] = helo

    def _expired(self, t: tuple[Any, ...], ts: float) -> None:
        msg = self._message(t, ts)
        if msg is not None:
            msg["_expired"] = True
            if msg["sender"] is None:
                msg["sender"] = t[6]

    def _bounce_notice(self, t: tuple[Any, ...], ts: float) -> None:
        parent = self._message(t, ts)
        child_id = t[6]
        if parent is None or not child_id:
            return
        if parent["bounce_queue_ids"] is None:
            parent["bounce_queue_ids"] = []
        parent["bounce_queue_ids"].append(child_id)
        child = self.open.get(child_id)
        if child is None:  # bounce often logs after the notice was delivered and removed
            self.late_links.append((child_id, parent["queue_id"]))
            child = next((m for m in reversed(self.finished[-500:]) if m["queue_id"] == child_id), None)
        if child is not None:
            child["parent_queue_id"] = parent["queue_id"]
            if child["origin"] is None:
                child["origin"] = "bounce"

    def _removed(self, t: tuple[Any, ...], ts: float) -> None:
        msg = self._message(t, ts)
        if msg is not None:
            self._close(msg, "expired" if msg["_expired"] else "removed")

    def _disconnect(self, t: tuple[Any, ...], ts: float) -> None:
        sess = self._end_session(t[4])
        if sess is None:
            return
        for qid in list(sess["queue_ids"]):
            msg = self.open.get(qid)
            if msg is None or msg["nrcpt"] is not None:
                continue
            msg["_left"] = ts  # unless qmgr takes it soon, the client left it (reject at DATA, lost)

    # -- state between runs ------------------------------------------------------------
    def open_state(self) -> dict[str, dict[str, Any]]:
        return {
            "message": dict(self.open),
            "session": dict(self.sessions),
            "tracker": {"state": {"next_sweep": self.next_sweep, "abandoned": dict(self.abandoned)}},
        }

    def restore(self, state: dict[str, dict[str, Any]]) -> None:
        self.open = dict(state.get("message", {}))
        sessions = state.get("session", {})  # (the store gives them back by key: order by connect again)
        self.sessions = dict(sorted(sessions.items(), key=lambda item: item[1].get("connect_ts") or 0.0))
        self._by_ip = {}
        for key, sess in self.sessions.items():
            self._by_ip.setdefault(sess.get("client_ip"), {})[key] = None
        saved = state.get("tracker", {}).get("state", {})
        self.next_sweep = float(saved.get("next_sweep", 0.0))
        self.abandoned = {str(q): float(ts) for q, ts in (saved.get("abandoned") or {}).items()}


_RECEIVED_FIELDS: Final = ("client_name", "client_ip", "sasl_method", "sasl_username")


def _session_key(ev: Event) -> str:
    """One smtpd process serves one client at a time: (host, program, pid)."""
    return f"{ev.host}|{ev.program}|{ev.pid}"


def _int_or_none(value: Any) -> int | None:
    return log_int(value) if value is not None else None


def compact(ev: Event) -> tuple[Any, ...] | None:
    """What the tracker needs of one event, as a small tuple; None when it needs nothing.

    ``(kind, epoch ts, day, queue_id, session key, daemon, *fields)``: cheap to
    pickle, so ``maillens ingest``'s worker processes classify and send these
    instead of ``Event`` objects, and the one sequential tracker replays them.
    Fields per kind are what the handlers read; delivery attempts travel as
    the very dicts the message record keeps.
    """
    if ev.kind not in TRACKED_KINDS or ev.ts is None:
        return None
    t = ev.ts
    return compact_at(ev, t.timestamp(), t.date().isoformat())


def compact_at(ev: Any, ts: float, day: str) -> tuple[Any, ...]:
    """``compact`` of a tracked kind, its time already in epoch seconds and day (``ingestscan``)."""
    kind = ev.kind
    d = ev.data
    head = (kind, ts, day, ev.queue_id)
    if kind == "delivery":
        delay = d.get("delay")
        return (*head, None, None, {
            "ts": ts, "recipient": d.get("recipient"), "orig_recipient": d.get("orig_recipient"),
            "status": d.get("status"), "relay": d.get("relay"),
            "delay": float(delay) if delay is not None else None, "delays": d.get("delays"),
            "dsn": d.get("dsn"), "reply": d.get("reason"),
        })  # fmt: skip
    if kind == "connect":
        return (*head, _session_key(ev), None, d.get("client_name"), d.get("client_ip"))
    if kind == "disconnect":
        return (*head, _session_key(ev), None)
    if kind == "reject" or kind == "reject_warning":
        qid = ev.queue_id
        attempt = None if not qid or qid == "NOQUEUE" else {
            "ts": ts, "recipient": d.get("recipient"), "orig_recipient": None,
            "status": "rejected" if kind == "reject" else "reject_warning", "relay": None,
            "delay": None, "delays": d.get("stage"), "dsn": d.get("dsn"), "reply": d.get("reason"),
        }  # fmt: skip
        return (*head, _session_key(ev), None, d.get("helo"), attempt, d.get("sender"))
    if kind == "received":
        daemon = ev.daemon
        key = _session_key(ev) if daemon == "smtpd" or daemon == "postscreen" else None
        return (*head, key, daemon, *(d.get(f) for f in _RECEIVED_FIELDS))
    if kind == "queued":
        return (*head, None, None, d.get("sender"), _int_or_none(d.get("size")), _int_or_none(d.get("nrcpt")))
    if kind == "cleanup":
        mid = d.get("message_id")
        if mid is None and "message-id=" in ev.message:
            mid = ev.message.split("message-id=", 1)[1].strip()
        return (*head, None, None, mid)
    if kind == "spf":
        return (*head, None, None, d.get("helo"), d.get("client_ip"))
    if kind == "expired":
        return (*head, None, None, d.get("sender"))
    if kind == "bounce_notice":
        return (*head, None, None, d.get("bounce_queue_id"))
    return (*head, None, None)  # removed


# -- trace: find and tell a message's story ------------------------------------------------
def _matches(msg: dict[str, Any], queue_id: str | None, sender: str | None, recipient: str | None,
             client_ip: str | None) -> bool:
    """``sender=""`` asks for the null sender (``from=<>``), not for messages whose sender is unknown."""
    if queue_id and queue_id not in (msg["queue_id"], msg.get("parent_queue_id")):
        return False
    if sender is not None and (msg.get("sender") is None or msg["sender"].lower() != sender.lower()):
        return False
    if client_ip is not None and msg.get("client_ip") != client_ip:
        return False
    if recipient is not None and not any(
        recipient.lower() in ((d.get("recipient") or "").lower(), (d.get("orig_recipient") or "").lower())
        for d in msg.get("deliveries", ())
    ):
        return False
    return True


#: The kinds a trace shows beside the messages: refused before (or without) a queue ID.
_REFUSALS: Final = ("reject", "reject_warning", "sasl_failure")


def _refusal_matches(ev: Event, sender: str | None, recipient: str | None, client_ip: str | None) -> bool:
    """A reject of the client, sender or recipient asked for (``NOQUEUE`` ones have no message)."""
    if ev.kind not in _REFUSALS or not (sender is not None or recipient or client_ip):
        return False
    d = ev.data
    return ((client_ip is None or ev.client_ip == client_ip)
            and (sender is None or (d.get("sender") is not None and d["sender"].lower() == sender.lower()))
            and (recipient is None or (d.get("recipient") or "").lower() == recipient.lower()))


def find_messages(files: list[str], db: Any, *, queue_id: str | None = None, sender: str | None = None,
                  recipient: str | None = None, client_ip: str | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages, and the rejects of the client, sender or recipient asked for, from files or the store.

    From the store, messages still open (in the queue, deferred) come from the
    tracker's saved state: they are the "where is my mail" cases.
    """
    if files:
        from maillens.sources import iter_events

        tracker = Tracker()
        found: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        for ev in iter_events(files):
            tracker.feed(ev)
            if _refusal_matches(ev, sender, recipient, client_ip):
                rejects.append({"ts": ev.ts.timestamp() if ev.ts else None, "kind": ev.kind, "raw": ev.raw,
                                "queue_id": ev.queue_id, "restriction": ev.restriction, "reason": ev.reason,
                                "client_ip": ev.client_ip})
            if tracker.finished:
                found += [m for m in tracker.drain() if _matches(m, queue_id, sender, recipient, client_ip)]
        tracker.close_all()
        found += [m for m in tracker.drain() if _matches(m, queue_id, sender, recipient, client_ip)]
        for m in found:
            if m["state"] == "incomplete":
                m["state"] = "open at end of input"
        return sorted(found, key=lambda m: m["first_ts"]), rejects
    from maillens.store import Store

    with Store.open(db, readonly=True) as store:
        still_open = store.load_open_state().get("message", {})
        msgs = store.messages(queue_id=queue_id, sender=sender, recipient=recipient, client_ip=client_ip)
        msgs += _still_open(still_open, queue_id, sender, recipient, client_ip)
        for m in list(msgs):  # the non-delivery notices a message caused belong to its story
            for child in (m.get("bounce_queue_ids") or "").split(","):
                if child and all(x["queue_id"] != child for x in msgs):
                    msgs += store.messages(queue_id=child) or _still_open(still_open, child, None, None, None)
        rejects = list(store.events(kinds=_REFUSALS, client_ip=client_ip, sender=sender, recipient=recipient,
                                    columns=("ts", "kind", "queue_id", "restriction", "reason", "client_ip", "raw"))
                       ) if (sender is not None or recipient or client_ip) else []
    return sorted(msgs, key=lambda m: m["first_ts"]), rejects


def _still_open(saved_messages: dict[str, dict[str, Any]], queue_id: str | None, sender: str | None,
                recipient: str | None, client_ip: str | None) -> list[dict[str, Any]]:
    """The messages the last ingest left open (its saved state) that match, as records ("still open")."""
    out = []
    for saved in saved_messages.values():
        msg = {k: v for k, v in saved.items() if not k.startswith("_")}
        if isinstance(msg.get("bounce_queue_ids"), list):
            msg["bounce_queue_ids"] = ",".join(msg["bounce_queue_ids"])
        msg["state"] = "still open (in the queue, or its end not logged yet)"
        if _matches(msg, queue_id, sender, recipient, client_ip):
            out.append(msg)
    return out


def _when(ts: float | None) -> str:
    from datetime import datetime, timezone

    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_story(messages: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> str:
    """Plain text: one block per message, then the client's rejects."""
    out: list[str] = []
    for m in messages:
        out.append(f"{m['queue_id']}  ({m['state']})")
        if m.get("connect_ts") is not None:
            out.append(f"  {_when(m['connect_ts'])}  connect from {m.get('client_name') or '?'}[{m.get('client_ip') or '?'}]")
        elif m.get("client_ip"):
            out.append(f"  {_when(m['first_ts'])}  received via {m.get('origin') or '?'} from "
                       f"{m.get('client_name') or '?'}[{m['client_ip']}]")
        elif m.get("origin"):
            out.append(f"  {_when(m['first_ts'])}  created by {m['origin']}")
        facts = [f"helo={m['helo']}" if m.get("helo") else None,
                 f"sasl={m.get('sasl_method')}:{m['sasl_username']}" if m.get("sasl_username") else None,
                 f"message-id={m['message_id']}" if m.get("message_id") else None]
        if any(facts):
            out.append("  " + " ".join(f for f in facts if f))
        if m.get("parent_queue_id"):
            out.append(f"  bounce notice for {m['parent_queue_id']}")
        if m.get("size") is not None or m.get("nrcpt") is not None:
            out.append(f"  {_when(m['first_ts'])}  queued from=<{m.get('sender') or ''}> size={m.get('size')} "
                       f"nrcpt={m.get('nrcpt')}")
        elif m.get("sender") is not None:  # refused or abandoned before qmgr took it
            out.append(f"  from=<{m['sender']}> (never queued for delivery)")
        for d in m.get("deliveries", ()):
            extra = f" delay={d['delay']}" if d.get("delay") is not None else ""
            out.append(f"  {_when(d.get('ts'))}  to=<{d.get('recipient') or ''}> {d.get('status')} "
                       f"relay={d.get('relay') or '-'} dsn={d.get('dsn') or '-'}{extra}"
                       + (f" ({d['reply']})" if d.get("reply") else ""))
        if m.get("bounce_queue_ids"):
            out.append(f"  non-delivery notice queued as {m['bounce_queue_ids']}")
        out.append(f"  {_when(m['last_ts'])}  {m['state']}")
        out.append("")
    if rejects:
        out.append("rejects and failures:")
        out += [f"  {_when(r.get('ts'))}  {r['kind']} {r.get('client_ip') or ''} {r.get('restriction') or ''} "
                f"{r.get('reason') or ''}".rstrip()
                for r in rejects]
    return "\n".join(out).rstrip("\n")
