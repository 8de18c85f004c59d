"""One ``maillens report`` run: build, render, write files atomically, mail.

The click command only parses options; this is the importable whole, so cron
wrappers and tests can run a report without click.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Mapping, Sequence

from maillens.errors import ConfigError, UsageError
from maillens.exporters import write_atomic  # one atomic writer for every output file
from maillens.reportdata import ReportData


REPORT_KEYS = frozenset({
    "top", "host", "templates", "mail_from", "mail_to", "sendmail", "smtp_host", "smtp_port", "smtp_starttls",
    "smtp_tls", "smtp_user", "smtp_password", "smtp_timeout", "smtp_cafile",
})  # fmt: skip


def report_settings(section: Mapping[str, Any]) -> None:
    """Validate ``[report]`` (config.validate runs it for every command, so a typo is found at once)."""
    from maillens.mail import mail_settings
    from maillens.rollup import ReportOptions

    ReportOptions.from_section(section)
    templates = section.get("templates")
    if templates is not None and (not isinstance(templates, str) or not Path(templates).expanduser().is_dir()):
        raise ConfigError(f"[report] templates = {templates!r}: give a directory of template overrides")
    # mail_from defaults to this host's FQDN: a DNS lookup not worth making just to validate
    mail_settings({**section, "mail_from": section.get("mail_from") or "maillens@localhost"})


def check_output_path(path: str | None, option: str) -> None:
    """An output file's directory must exist: a typo must not create a directory tree."""
    if path and path != "-":
        parent = Path(path).expanduser().parent
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: directory {parent} does not exist; create it or choose another path")


@dataclass
class ReportResult:
    data: ReportData
    stdout_text: str | None = None
    done: list[str] = field(default_factory=list)


def load_postfix(settings: Any, explicit: str | None) -> Any:
    """main.cf for "configured but never hit" RBL zones; None when unknown.

    Only an explicit ``--postfix-config`` / ``[postfix] config_dir`` that cannot
    be read is an error: without one, a host with no Postfix simply gets a
    report without that line.
    """
    config_dir = explicit or settings.section("postfix").get("config_dir")
    try:
        from maillens.postconf import load_postfix_config
    except ImportError:  # pragma: no cover - postconf ships with maillens
        return None
    if config_dir:
        return load_postfix_config(config_dir)
    try:
        return load_postfix_config(None)
    except ConfigError:
        return None


def build(
    settings: Any,
    section: Mapping[str, Any],
    *,
    day: date | None,
    files: Sequence[str] = (),
    db: str | None = None,
    postfix_config: str | None = None,
    access_client: str | None = None,
    access_sender: str | None = None,
) -> ReportData:
    """The day's figures, plus the allowlist suggestions when they can be computed.

    Suggestions come from the files themselves when files are given (what
    ``maillens suggest FILES`` reads), else from the store when the access
    tables are known; see ``maillens.reportsuggest``.
    """
    from maillens.reportsuggest import MapPaths
    from maillens.rollup import ReportOptions, build_report, report_from_files
    from maillens.store import Store

    options = ReportOptions.from_section(section)
    postfix = load_postfix(settings, postfix_config)
    suggest_section = settings.section("suggest")
    paths = MapPaths.resolve(suggest_section, access_client, access_sender)
    if files:
        data = report_from_files(files, day, options=options, postfix=postfix)
        return with_suggestions(data, suggest_section, top=options.top, files=files, paths=paths, postfix=postfix)
    if day is None:
        raise UsageError("give --date (today, yesterday or YYYY-MM-DD)")
    with Store.open(db, readonly=True) as store:
        data = build_report(store, day, options=options, postfix=postfix)
        return with_suggestions(data, suggest_section, top=options.top, store=store, paths=paths, postfix=postfix)


def with_suggestions(data: ReportData, suggest_section: dict[str, Any], **how: Any) -> ReportData:
    """``data`` with its "Allowlist suggestions" table and note; unchanged (pointer line) otherwise."""
    import dataclasses

    from maillens.reportsuggest import section_for

    found = section_for(suggest_section, data.day, **how)
    if found is None:
        return data
    table, note = found
    return dataclasses.replace(data, suggestions=table, suggest_note=note)


def run_report(
    settings: Any,
    section: Mapping[str, Any],
    *,
    day: date | None,
    files: Sequence[str] = (),
    db: str | None = None,
    html_path: str | None = None,
    text_path: str | None = None,
    mail_to: Sequence[str] = (),
    mail_default: bool = False,
    postfix_config: str | None = None,
    access_client: str | None = None,
    access_sender: str | None = None,
) -> ReportResult:
    """Build the report and deliver it where asked; text to stdout when nowhere."""
    from maillens import mail, render

    check_output_path(html_path, "--html")  # before the (slow) build, not after it
    check_output_path(text_path, "--text")
    mail_conf = mail.mail_settings(section) if (mail_to or mail_default) else None
    recipients: tuple[str, ...] = ()
    if mail_conf is not None:
        recipients = mail.addresses(list(mail_to), "--mail-to") if mail_to else mail_conf.mail_to
        if not recipients:
            raise UsageError("--mail given but [report] mail_to is empty; give --mail-to ADDR")
    data = build(settings, section, day=day, files=files, db=db, postfix_config=postfix_config,
                 access_client=access_client, access_sender=access_sender)
    result = ReportResult(data)
    text = render.render_text(data, section)
    if html_path:
        write_atomic(html_path, render.render_html(data, section))
        result.done.append(f"wrote {html_path}")
    if text_path == "-" or not (html_path or text_path or mail_conf):
        result.stdout_text = text
    elif text_path:
        write_atomic(text_path, text)
        result.done.append(f"wrote {text_path}")
    if mail_conf is not None:
        msg = mail.build_message(data, text=text, html=render.render_mail_html(data, section),
                                 mail_from=mail_conf.mail_from, mail_to=recipients)  # fmt: skip
        where = mail.send(msg, mail_conf)
        result.done.append(f"mailed to {', '.join(recipients)} via {where}")
    return result
