"""The report mail goes through real mail servers and arrives whole.

* SMTP: an aiosmtpd server on 127.0.0.1 started here (plain, and STARTTLS
  with a throw-away certificate plus LOGIN/PLAIN authentication).
* sendmail: Postfix's own ``sendmail -t -oi`` into a private Postfix
  instance (own config dir, queue and log under a temp dir, no inet
  listener) that relays to the aiosmtpd server — see ``postfix_instance``.

Each received message is parsed with the stdlib email parser: both parts
present, headers as composed, and the figures in the subject and in both
parts equal the figures of the report data that was sent (for a report built
from a real store, test_report.py's corpus test checks those against the
store and the corpus truth).
"""

from __future__ import annotations

import email
import email.policy
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import IN_CI, require_tool
from maillens import mail, render
from maillens.errors import ConfigError, UsageError
from report_fixtures import EVIL_HELO, sample_report

pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """aiosmtpd handler: every accepted message lands in a queue."""

    def __init__(self) -> None:
        self.received: "queue.Queue[dict[str, Any]]" = queue.Queue()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.put(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "content": bytes(envelope.original_content or envelope.content),
                "authenticated": bool(getattr(session, "authenticated", False)),
                "tls": session.ssl is not None,
            }
        )
        return "250 2.0.0 accepted by the maillens test sink"

    def wait(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.received.get(timeout=timeout)


def start_sink(**smtp_kwargs: Any) -> tuple[Controller, Sink, int]:
    sink = Sink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port, **smtp_kwargs)
    ctl.start()
    return ctl, sink, port


@pytest.fixture()
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    ctl, sink, port = start_sink()
    try:
        yield sink, port
    finally:
        ctl.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl tool."""
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class _ById(HTMLParser):
    """Attributes and text of every element that has an id (nesting-aware)."""

    VOID = {"br", "img", "meta", "link", "hr", "input", "col", "area", "base", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, dict[str, str]] = {}
        self.texts: dict[str, str] = {}
        self.stack: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in self.VOID:
            return
        ident = a.get("id")
        if ident:
            self.attrs[ident] = a
            self.texts[ident] = ""
        self.stack.append(ident)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        for ident in self.stack:
            if ident:
                self.texts[ident] += data


def elements_by_id(html: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    p = _ById()
    p.feed(html)
    return p.attrs, p.texts


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def check_report_message(msg: email.message.EmailMessage, data: Any, rcpts: list[str]) -> tuple[str, str]:
    """Structure, headers and figures of a received report mail; returns (text, html)."""
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text, html = parts[0].get_content(), parts[1].get_content()
    assert msg["From"] == "maillens@example.org"
    assert [a.addr_spec for a in msg["To"].addresses] == rcpts
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"] and msg["Date"]
    subject = str(msg["Subject"])
    ids, texts = elements_by_id(html)
    assert data.host in subject and data.day.isoformat() in subject
    for key in ("received", "delivered", "rejected", "deferred", "bounced"):
        value = data.value(key)
        assert f"{value} {key}" in subject
        # text part: pflogsumm-like "  1198   received" lines
        assert re.search(rf"^\s+{value}\s+{key}\b", text, re.M), (key, text[:800])
        # html part: the figure cell carries the number, and shows it
        assert ids[f"fig-{key}"]["data-value"] == str(value), key
        assert re.match(rf"\s*{value}\b", texts[f"fig-{key}"]), texts[f"fig-{key}"]
    # no SVG in mail, CSS inlined, and log text escaped
    assert "<svg" not in html
    assert 'style="' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert EVIL_HELO in text  # plain text is text: shown as is, harmless
    return text, html


def settings(**keys: Any) -> mail.MailSettings:
    base = {"mail_from": "maillens@example.org"}
    base.update(keys)
    return mail.mail_settings(base)


def compose(data: Any, rcpts: list[str]) -> Any:
    return mail.build_message(
        data, text=render.render_text(data), html=render.render_mail_html(data),
        mail_from="maillens@example.org", mail_to=rcpts,
    )  # fmt: skip


def test_report_mail_via_smtp(smtp_sink: tuple[Sink, int]) -> None:
    sink, port = smtp_sink
    data = sample_report()
    rcpts = ["postmaster@example.org", "ops@example.net"]
    where = mail.send(compose(data, rcpts), settings(smtp_host="127.0.0.1", smtp_port=port))
    assert where == f"smtp 127.0.0.1:{port}"
    got = sink.wait()
    assert got["mail_from"] == "maillens@example.org"
    assert got["rcpt_tos"] == rcpts
    check_report_message(parse(got["content"]), data, rcpts)


def test_report_mail_via_starttls_and_login(tls_files: tuple[Path, Path]) -> None:
    import ssl

    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    seen: list[tuple[str, bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        seen.append((mechanism, auth_data.login, auth_data.password))
        return AuthResult(success=ok, handled=False)

    ctl, sink, port = start_sink(tls_context=ctx, require_starttls=True, authenticator=authenticator,
                                 auth_require_tls=True)  # fmt: skip
    try:
        data = sample_report()
        conf = dict(smtp_host="127.0.0.1", smtp_port=str(port), smtp_starttls="true", smtp_user="reporter",
                    smtp_cafile=str(cert))  # fmt: skip
        with pytest.raises(mail.MailError, match="refused the login"):
            mail.send(compose(data, ["a@example.org"]), settings(smtp_password="wrong", **conf))
        mail.send(compose(data, ["a@example.org"]), settings(smtp_password="s3cret", **conf))
        got = sink.wait()
        assert got["tls"] and got["authenticated"]
        assert seen[-1][1:] == (b"reporter", b"s3cret")
        check_report_message(parse(got["content"]), data, ["a@example.org"])
        # without STARTTLS the server refuses: the error names what to fix
        with pytest.raises(mail.MailError, match=r"530 .*smtp_starttls = true"):
            mail.send(compose(data, ["a@example.org"]), settings(smtp_host="127.0.0.1", smtp_port=port))
    finally:
        ctl.stop()


def test_password_is_not_sent_in_clear_unless_the_config_says_so() -> None:
    """A server on port 25 offering AUTH without STARTTLS: with smtp_user set, STARTTLS is
    required by default, so the password never leaves; ``smtp_starttls = false`` is the
    explicit way to send it unencrypted (e.g. to a relay on this machine)."""
    seen: list[bytes] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        seen.append(auth_data.password)
        return AuthResult(success=True, handled=False)

    ctl, sink, port = start_sink(authenticator=authenticator, auth_require_tls=False)
    try:
        conf = dict(smtp_host="127.0.0.1", smtp_port=str(port), smtp_user="reporter", smtp_password="s3cret")
        with pytest.raises(mail.MailError, match="does not offer STARTTLS.*unencrypted"):
            mail.send(compose(sample_report(), ["a@example.org"]), settings(**conf))
        assert seen == []
        mail.send(compose(sample_report(), ["a@example.org"]), settings(smtp_starttls="false", **conf))
        assert seen == [b"s3cret"] and sink.wait()["authenticated"]
    finally:
        ctl.stop()


def test_unreachable_smtp_server_is_one_plain_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(mail.MailError, match=rf"127\.0\.0\.1:{port}.*smtp_host"):
        mail.send(compose(sample_report(), ["a@example.org"]), settings(smtp_host="127.0.0.1", smtp_port=port,
                                                                         smtp_timeout=5))  # fmt: skip


def test_log_text_cannot_inject_headers() -> None:
    data = sample_report(host="mx.example.org\r\nBcc: victim@example.net")
    msg = compose(data, ["a@example.org"])
    raw = msg.as_bytes()
    head = raw.split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in head
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    assert parse(raw)["Bcc"] is None
    # and in the bodies the break is gone too (one log field stays one line)
    text = render.render_text(data)
    assert "\nBcc:" not in text and "\nBcc:" not in render.render_html(data)


def test_settings_are_validated_with_the_key_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[report\] smtp_port"):
        mail.mail_settings({"smtp_port": "smtp"})
    with pytest.raises(ConfigError, match=r"\[report\] smtp_starttls"):
        mail.mail_settings({"smtp_starttls": "perhaps"})
    with pytest.raises(ConfigError, match="smtp_password"):
        mail.mail_settings({"smtp_user": "u"})
    with pytest.raises(UsageError, match="mail_to"):
        mail.mail_settings({"mail_to": "not an address"})
    with pytest.raises(ConfigError, match="smtp_cafile"):
        mail.mail_settings({"smtp_cafile": str(tmp_path / "missing.pem")})
    for timeout in (0, -5, "nan", "soon", True, 1e9):  # 0 made the socket non-blocking: a crash at send time
        with pytest.raises(ConfigError, match=r"\[report\] smtp_timeout"):
            mail.mail_settings({"smtp_timeout": timeout})
    assert mail.mail_settings({"smtp_timeout": "2.5"}).smtp_timeout == 2.5
    s = mail.mail_settings({"smtp_host": "mx", "smtp_port": "587", "mail_to": "a@example.org, b@example.org"})
    assert (s.smtp_starttls, s.smtp_tls, s.mail_to, s.method) == (True, False, ("a@example.org", "b@example.org"), "smtp")
    assert mail.mail_settings({}).method == "sendmail"
    with pytest.raises(UsageError, match="--mail-to"):
        mail.build_message(sample_report(), text="t", html="h", mail_from="a@example.org", mail_to=[])


# -- the sendmail path through a private Postfix instance ---------------------------------

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _postfix(postfix: str, conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -c DIR: this instance's main.cf; postfix logs its own errors to maillog_file.
    return subprocess.run([postfix, "-c", str(conf), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def postfix_instance() -> Iterator[tuple[Path, Sink, int]]:
    """A private Postfix (config, queue, data and log in one temp dir) that
    relays everything to an aiosmtpd sink on 127.0.0.1.

    ``master_service_disable = inet`` and a master.cf without inet services
    keep it off every TCP port, so it can run beside a system Postfix.
    Needs root (master and postdrop), as in CI.
    """
    postfix = require_tool("postfix", reason="the sendmail path test runs a private Postfix")
    require_tool("sendmail")
    if os.geteuid() != 0:
        message = "starting a private Postfix instance needs root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    ctl, sink, port = start_sink()
    base = Path(tempfile.mkdtemp(prefix="maillens-pfx-", dir="/tmp"))
    base.chmod(0o755)
    conf, queue_dir, data_dir = base / "conf", base / "queue", base / "data"
    for d in (conf, queue_dir, data_dir):
        d.mkdir()
    shutil.chown(data_dir, user="postfix")
    (conf / "main.cf").write_text(
        f"""compatibility_level = 3.6
queue_directory = {queue_dir}
data_directory = {data_dir}
maillog_file = {data_dir}/maillog
maillog_file_prefixes = {base}
syslog_name = maillens-test
myhostname = maillens-test.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
master_service_disable = inet
relayhost = [127.0.0.1]:{port}
smtp_tls_security_level = none
smtp_dns_support_level = disabled
default_destination_concurrency_limit = 2
"""
    )
    (conf / "master.cf").write_text(MASTER_CF)
    started = _postfix(postfix, conf, "start")
    log = data_dir / "maillog"
    try:
        if started.returncode != 0:
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
            pytest.fail(f"private postfix did not start: {detail}")
        yield conf, sink, port
    finally:
        _postfix(postfix, conf, "stop")
        ctl.stop()
        for _ in range(50):  # master removes its pid file on exit
            if not (queue_dir / "pid" / "master.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


def test_report_mail_via_postfix_sendmail(postfix_instance: tuple[Path, Sink, int],
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    conf, sink, _port = postfix_instance
    monkeypatch.setenv("MAIL_CONFIG", str(conf))  # sendmail/postdrop: use the private instance
    data = sample_report()
    rcpts = ["postmaster@example.org"]
    where = mail.send(compose(data, rcpts), settings(sendmail=require_tool("sendmail")))
    assert where.startswith("sendmail ")
    try:
        got = sink.wait(timeout=60)
    except queue.Empty:
        log = conf.parent / "data" / "maillog"
        pytest.fail("postfix did not relay the report: " + (log.read_text(errors="replace")[-3000:] if log.exists() else ""))
    assert got["mail_from"] == "maillens@example.org"  # sendmail -f
    assert got["rcpt_tos"] == rcpts  # -t: taken from To:
    msg = parse(got["content"])
    assert "maillens-test.localdomain" in str(msg["Received"])  # really went through Postfix
    check_report_message(msg, data, rcpts)


@pytest.fixture(scope="module")
def corpus_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, int]]:
    """A report built from a real store (corpus log ingested) and the store's own figures."""
    from datetime import date

    from conftest import corpus_dir
    from maillens.rollup import ReportOptions, build_report
    from maillens.store import Store
    from report_fixtures import ingest_corpus

    db = ingest_corpus(corpus_dir("real-postfix-dev"), tmp_path_factory.mktemp("mailstore") / "store.db",
                       evil=True)  # fmt: skip
    day = date(2026, 11, 9)
    with Store.open(db, readonly=True) as store:
        data = build_report(store, day, options=ReportOptions(host="mx.example.org"))
        return data, store.daily_rollup(day)


def check_store_figures(msg: email.message.EmailMessage, data: Any, roll: dict[str, int]) -> None:
    text, html = check_report_message(msg, data, ["postmaster@example.org"])
    ids, _texts = elements_by_id(html)
    for key in ("received", "delivered", "rejected", "deferred", "bounced", "expired", "sasl_failures"):
        assert data.value(key) == roll[key]
        assert ids[f"fig-{key}"]["data-value"] == str(roll[key])
    assert f"{roll['sasl_failures']} SASL failures" in str(msg["Subject"])
    # the per-hour table of the mail adds up to the store's day
    hours = re.findall(r'<td class="h"[^>]*>(\d\d)-\d\d</td>((?:<td class="n"[^>]*>\d+</td>){5})', html)
    assert len(hours) == 24
    cols = [list(map(int, re.findall(r">(\d+)<", cells))) for _h, cells in hours]
    assert sum(c[0] for c in cols) == roll["received"] and sum(c[2] for c in cols) == roll["rejected"]
    assert sum(c[3] for c in cols) == roll["deferrals"] and sum(c[4] for c in cols) == roll["bounced"]


def test_store_report_via_smtp_carries_the_stores_numbers(smtp_sink: tuple[Sink, int],
                                                          corpus_day: tuple[Any, dict[str, int]]) -> None:  # fmt: skip
    sink, port = smtp_sink
    data, roll = corpus_day
    mail.send(compose(data, ["postmaster@example.org"]), settings(smtp_host="127.0.0.1", smtp_port=port))
    check_store_figures(parse(sink.wait()["content"]), data, roll)


def test_store_report_via_postfix_sendmail_carries_the_stores_numbers(
    postfix_instance: tuple[Path, Sink, int], corpus_day: tuple[Any, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf, sink, _port = postfix_instance
    monkeypatch.setenv("MAIL_CONFIG", str(conf))
    data, roll = corpus_day
    mail.send(compose(data, ["postmaster@example.org"]), settings(sendmail=require_tool("sendmail")))
    msg = parse(sink.wait(timeout=60)["content"])
    assert "maillens-test.localdomain" in str(msg["Received"])
    check_store_figures(msg, data, roll)


def test_report_command_mails_through_smtp(smtp_sink: tuple[Sink, int], tmp_path: Path) -> None:
    """``maillens report FILE --mail-to`` end to end, settings from a config file."""
    from click.testing import CliRunner

    from conftest import corpus_dir
    from maillens.cli.main import cli

    sink, port = smtp_sink
    config = tmp_path / "config.toml"
    config.write_text(f'[report]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\nmail_from = "maillens@example.org"\n'
                      'host = "mx.example.org"\n')  # fmt: skip
    log = corpus_dir("real-postfix-dev") / "maillog"
    res = CliRunner().invoke(cli, ["--config", str(config), "report", str(log), "--date", "2026-11-10",
                                   "--mail-to", "postmaster@example.org"], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    msg = parse(sink.wait()["content"])
    assert str(msg["Subject"]).startswith("[maillens] mx.example.org 2026-11-10: ")
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
