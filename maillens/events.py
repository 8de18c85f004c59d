"""The typed event: one per input line, whatever the line was.

Kinds beyond the issue's list: ``notice`` is a line a rule understood that
carries no client or message event -- server life-cycle (started, stopping,
reload), statistics, outbound ``connect to ...`` failures, access-map actions
such as HOLD or DISCARD -- with a ``topic`` field saying which.

Every line of input becomes exactly one ``Event`` -- ``unparsed`` when even the
syslog envelope could not be read -- so counts never silently lose lines.

Common fields are attributes; the fields of each kind live in ``data`` and are
also readable as attributes (``event.client_ip``), returning ``None`` when the
kind does not carry them.  Field names are fixed by the issues because users
script against ``maillens parse --json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from maillens.textsafe import json_safe

#: Every value ``Event.kind`` may take.
KINDS: Final = (
    "reject",
    "reject_warning",
    "connect",
    "disconnect",
    "lost_connection",
    "timeout",
    "too_many_errors",
    "pipelining",
    "sasl_failure",
    "spf",
    "received",
    "cleanup",
    "queued",
    "delivery",
    "expired",
    "bounce_notice",
    "removed",
    "postscreen",
    "tls",
    "warning",
    "notice",
    "other",
    "unparsed",
)

#: Restriction names as main.cf spells them (plus ``unknown`` when nothing fits).
RESTRICTIONS: Final = (
    "reject_rbl_client",
    "reject_rhsbl_client",
    "reject_rhsbl_sender",
    "reject_rhsbl_helo",
    "reject_rhsbl_reverse_client",
    "reject_rhsbl_recipient",
    "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname",
    "check_client_access",
    "check_helo_access",
    "reject_invalid_helo_hostname",
    "reject_non_fqdn_helo_hostname",
    "reject_unknown_helo_hostname",
    "check_sender_access",
    "reject_non_fqdn_sender",
    "reject_unknown_sender_domain",
    "check_recipient_access",
    "reject_non_fqdn_recipient",
    "reject_unknown_recipient_domain",
    "reject_unauth_destination",
    "reject_unlisted_recipient",
    "reject_unlisted_sender",
    "reject_unverified_recipient",
    "reject_unverified_sender",
    "check_policy_service",
    "reject_unauth_pipelining",
    "smtpd_helo_required",
    "message_size_limit",
    "reject_sender_login_mismatch",
    "header_checks",
    "body_checks",
    "milter",
    "postscreen",
    "reject",
    "unknown",
)

#: Kinds that describe a client doing something wrong: what jails and the live
#: view's offender bar look at.
OFFENCE_KINDS: Final = frozenset(
    {"reject", "sasl_failure", "too_many_errors", "pipelining", "lost_connection", "timeout"}
)

_COMMON: Final = ("ts", "host", "program", "pid", "source", "lineno", "kind", "queue_id")


@dataclass(slots=True)
class Event:
    """One classified log line.

    ``raw`` keeps the line exactly as read (after decoding with replacement) so
    that ``explain`` and ``tail --raw`` can show it; ``message`` is the part
    after the syslog envelope.  ``rule`` names the rule that matched
    (``file.conf:failregex[N]``) for ``explain``.
    """

    kind: str
    ts: datetime | None = None
    host: str | None = None
    program: str | None = None
    pid: int | None = None
    source: str | None = None
    lineno: int | None = None
    queue_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    raw: str = ""
    message: str = ""
    rule: str | None = None

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: kind-specific fields.
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            data = object.__getattribute__(self, "data")
        except AttributeError:
            raise AttributeError(name) from None
        return data.get(name)

    @property
    def daemon(self) -> str | None:
        """The last part of the program name: ``smtpd`` for ``postfix/submission/smtpd``."""
        if not self.program:
            return None
        return self.program.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: common fields first, then the kind's non-null fields."""
        out: dict[str, Any] = {
            "ts": self.ts.isoformat() if self.ts is not None else None,
            "host": self.host,
            "program": self.program,
            "pid": self.pid,
            "source": self.source,
            "lineno": self.lineno,
            "kind": self.kind,
            "queue_id": self.queue_id,
        }
        for key, value in self.data.items():
            if value is not None and key not in out:
                out[key] = value
        return out

    def to_json(self) -> str:
        """One JSON line, safe to show on a terminal (C1 and bidi characters escaped)."""
        return json_safe(json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")))
