"""Compose the report mail and send it: SMTP (STARTTLS, login) or local sendmail.

The message is ``multipart/alternative``: the plain-text report first, the
HTML part (CSS inlined, table charts) last, as RFC 2046 orders them from
plainest to richest.  Settings come from the ``[report]`` section, which the
config layer already overlays with ``MAILLENS_REPORT_*`` environment
variables, so a password can stay out of the file:

``mail_from``     envelope and From: address (default ``maillens@<fqdn>``)
``mail_to``       default recipients (string or list) when ``--mail-to`` is absent
``smtp_host``     send by SMTP to this host; without it, use ``sendmail``
``smtp_port``     default 25 (587 implies STARTTLS, 465 implies TLS)
``smtp_starttls`` ``true``/``false``; default: true on 587 and whenever ``smtp_user`` is set
``smtp_tls``      implicit TLS (port 465 style)
``smtp_user`` / ``smtp_password``  login after STARTTLS (a server without STARTTLS gets no
                  password unless ``smtp_starttls = false`` says to send it in clear)
``smtp_cafile``   CA bundle to verify the server's certificate (default: the system's)
``smtp_timeout``  seconds, default 30
``sendmail``      path of sendmail(1), default ``/usr/sbin/sendmail``
"""

from __future__ import annotations

import math
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Iterable, Mapping

from maillens.errors import ConfigError, MaillensError, UsageError
from maillens.reportdata import ReportData

_UNSAFE_HEADER = re.compile(r"[\x00-\x1f\x7f]+")
_ADDRESS = re.compile(r"^[^\s<>@,;:\"]+@[^\s<>@,;:\"]+$")


class MailError(MaillensError):
    """The report could not be handed to the mail system."""


@dataclass(frozen=True)
class MailSettings:
    mail_from: str
    mail_to: tuple[str, ...] = ()
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = 30.0
    smtp_cafile: str | None = None
    sendmail: str = "/usr/sbin/sendmail"

    @property
    def method(self) -> str:
        return "smtp" if self.smtp_host else "sendmail"


def _bool(section: Mapping[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"[report] {key} = {value!r}: use true or false")


def _int(section: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = section.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"[report] {key} = {value!r}: must be a whole number") from None
    if not low <= number <= high:
        raise ConfigError(f"[report] {key} = {number}: must be between {low} and {high}")
    return number


def check_address(address: str, where: str) -> str:
    """A bare ``local@domain``: no display names, no header injection."""
    address = address.strip()
    if not _ADDRESS.match(address):
        raise UsageError(f"{where}: {address!r} is not a plain mail address like postmaster@example.org")
    return address


def addresses(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items: Iterable[str] = value.split(",") if isinstance(value, str) else value
    return tuple(check_address(str(a), where) for a in items if str(a).strip())


def mail_settings(section: Mapping[str, Any]) -> MailSettings:
    """Validate the mail keys of ``[report]``; errors name the key to fix."""
    port = _int(section, "smtp_port", 25, 1, 65535)
    tls = _bool(section, "smtp_tls", port == 465)
    user = section.get("smtp_user") or None
    password = section.get("smtp_password") or None
    if user and password is None:
        raise ConfigError("[report] smtp_user is set but smtp_password is not (or set MAILLENS_REPORT_SMTP_PASSWORD)")
    timeout = section.get("smtp_timeout", 30)
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(timeout, bool) or not 0 < seconds <= 3600:  # (nan fails too) 0 would make the socket non-blocking
        raise ConfigError(f"[report] smtp_timeout = {timeout!r}: must be a number of seconds above 0, at most 3600")
    timeout = seconds
    return MailSettings(
        mail_from=check_address(str(section.get("mail_from") or f"maillens@{socket.getfqdn()}"), "[report] mail_from"),
        mail_to=addresses(section.get("mail_to"), "[report] mail_to"),
        smtp_host=(str(section["smtp_host"]).strip() or None) if section.get("smtp_host") else None,
        smtp_port=port,
        # a password never crosses the network in clear unless the config says so in words
        smtp_starttls=_bool(section, "smtp_starttls", port == 587 or bool(user)) and not tls,
        smtp_tls=tls,
        smtp_user=str(user) if user else None,
        smtp_password=str(password) if password is not None else None,
        smtp_timeout=timeout,
        smtp_cafile=_cafile(section.get("smtp_cafile")),
        sendmail=str(section.get("sendmail") or "/usr/sbin/sendmail"),
    )


def _cafile(value: Any) -> str | None:
    if not value:
        return None
    if not Path(str(value)).is_file():
        raise ConfigError(f"[report] smtp_cafile = {str(value)!r} is not a file; give the CA bundle's path")
    return str(value)


def _header_text(value: str, limit: int = 120) -> str:
    """Log-derived text (the host name) made safe for a header: one line, short."""
    text = _UNSAFE_HEADER.sub(" ", value).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def subject_for(data: ReportData) -> str:
    """``[maillens] mx.example.org 2026-11-09: 1198 received, 1599 delivered, ...``"""
    parts = [
        f"{data.value('received')} received",
        f"{data.value('delivered')} delivered",
        f"{data.value('rejected')} rejected",
        f"{data.value('deferred')} deferred",
        f"{data.value('bounced')} bounced",
    ]
    if data.value("sasl_failures"):
        parts.append(f"{data.value('sasl_failures')} SASL failures")
    return f"[maillens] {_header_text(data.host)} {data.day.isoformat()}: " + ", ".join(parts)


def build_message(
    data: ReportData,
    *,
    text: str,
    html: str,
    mail_from: str,
    mail_to: Iterable[str],
) -> EmailMessage:
    """The ``multipart/alternative`` report mail (text first, HTML last)."""
    recipients = tuple(mail_to)
    if not recipients:
        raise UsageError("no recipient: give --mail-to ADDR or set [report] mail_to")
    msg = EmailMessage()
    msg["Subject"] = subject_for(data)
    msg["From"] = mail_from
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=mail_from.rsplit("@", 1)[-1])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg["X-Maillens-Report"] = f"{_header_text(data.host)} {data.day.isoformat()}"
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def send(msg: EmailMessage, settings: MailSettings) -> str:
    """Hand the message over; returns a short description of where it went."""
    if settings.method == "smtp":
        return _send_smtp(msg, settings)
    return _send_sendmail(msg, settings)


def _send_smtp(msg: EmailMessage, s: MailSettings) -> str:
    assert s.smtp_host is not None
    where = f"{s.smtp_host}:{s.smtp_port}"
    context = ssl.create_default_context(cafile=s.smtp_cafile)
    try:
        if s.smtp_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=context)
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
        with client:
            client.ehlo()
            if s.smtp_starttls:
                client.starttls(context=context)
                client.ehlo()
            if s.smtp_user:
                client.login(s.smtp_user, s.smtp_password or "")
            refused = client.send_message(msg, from_addr=s.mail_from)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP server {where} refused the login of [report] smtp_user: {exc.smtp_code} "
                        f"{exc.smtp_error.decode(errors='replace')}") from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(f"SMTP server {where} does not offer STARTTLS/AUTH; check [report] smtp_starttls and smtp_user "
                        "(smtp_starttls = false sends the password unencrypted)") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"SMTP server {where} refused every recipient: {', '.join(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        said = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        hint = "; set [report] smtp_starttls = true" if exc.smtp_code in (530, 538) and not s.smtp_starttls else ""
        raise MailError(f"SMTP server {where} said {exc.smtp_code} {said}{hint}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"cannot send the report via SMTP to {where}: {exc}; check [report] smtp_host/smtp_port") from None
    if refused:
        raise MailError(f"SMTP server {where} refused: {', '.join(sorted(refused))}")
    return f"smtp {where}"


def _send_sendmail(msg: EmailMessage, s: MailSettings) -> str:
    """``sendmail -t -oi``: recipients from the headers, a lone dot is no end."""
    path = s.sendmail
    if not Path(path).exists():
        found = shutil.which(Path(path).name)
        if not found:
            raise MailError(f"{path} not found: install an MTA, or set [report] smtp_host or [report] sendmail")
        path = found
    cmd = [path, "-t", "-oi", "-f", s.mail_from]
    try:
        proc = subprocess.run(cmd, input=msg.as_bytes(), capture_output=True, timeout=max(s.smtp_timeout, 60))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MailError(f"cannot run {path}: {exc}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MailError(f"{path} -t -oi exited {proc.returncode}: {detail[-1] if detail else 'no message'}")
    return f"sendmail {path}"
