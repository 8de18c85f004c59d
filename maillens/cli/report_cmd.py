"""``maillens report``: one day's report as HTML file, text and mail."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import click

from maillens.cli.main import handle_errors, load_settings, note


def _day(spec: str | None, default: str | None) -> date | None:
    from maillens.errors import UsageError
    from maillens.summary import parse_date_spec, today_for

    if spec is not None and not spec.strip():
        raise UsageError("--date is empty: give today, yesterday or YYYY-MM-DD")
    value = spec or default
    if value is None:
        return None
    try:
        start, end = parse_date_spec(value, today_for()) or (None, None)
    except UsageError:  # (summary's message offers ranges, which a report does not take)
        raise UsageError(f"--date {value!r}: give today, yesterday or YYYY-MM-DD") from None
    if start != end:
        raise UsageError(f"--date {value!r}: a report covers one day; give today, yesterday or YYYY-MM-DD")
    return start


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--date", "date_spec", metavar="DAY",
              help="today, yesterday or YYYY-MM-DD (default: yesterday; with FILEs, their last day).")
@click.option("--db", type=click.Path(dir_okay=False), help="Store to read (default: [store] db).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write the self-contained HTML file here.")
@click.option("--text", "text_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the plain-text report here ('-' for stdout).")
@click.option("--mail-to", "mail_to", multiple=True, metavar="ADDR",
              help="Mail the report to ADDR (repeatable; default: [report] mail_to with --mail).")
@click.option("--mail", "mail_flag", is_flag=True, help="Mail the report to [report] mail_to.")
@click.option("--postfix-config", type=click.Path(file_okay=False),
              help="Directory with main.cf, to list RBL zones that never hit (default: [postfix] config_dir).")
@click.option("--access-client", "access_client", type=click.Path(dir_okay=False), metavar="FILE",
              help="check_client_access table source, for the allowlist section (default: [suggest] access_client).")
@click.option("--access-sender", "access_sender", type=click.Path(dir_okay=False), metavar="FILE",
              help="check_sender_access table source, for the allowlist section (default: [suggest] access_sender).")
@click.option("--host", help="Server name for the title and subject (default: [report] host, else this host).")
@click.option("--top", type=click.IntRange(1, 10000), help="Rows per table (default: [report] top, 10).")
@click.pass_context
@handle_errors
def report(ctx: click.Context, files: tuple[str, ...], date_spec: str | None, db: str | None,
           html_path: str | None, text_path: str | None, mail_to: tuple[str, ...], mail_flag: bool,
           postfix_config: str | None, access_client: str | None, access_sender: str | None,
           host: str | None, top: int | None) -> None:  # fmt: skip
    """Build one day's report from the store, or from FILEs, and write or mail it.

    \b
    maillens report --date yesterday --html /var/www/mail.html --mail-to postmaster@example.org
    maillens report /var/log/mail.log.1           # text on stdout, from the file

    The "Allowlist suggestions" section is `maillens suggest` over the FILEs, or over the store
    when the access tables are given, up to the end of the day.
    """
    from maillens import reporting

    settings = load_settings(ctx)
    section: dict[str, Any] = settings.section("report")
    if host:
        section["host"] = host
    if top:
        section["top"] = top
    day = _day(date_spec, None if files else "yesterday")
    result = reporting.run_report(
        settings, section, day=day, files=list(files), db=db, html_path=html_path, text_path=text_path,
        mail_to=list(mail_to), mail_default=mail_flag, postfix_config=postfix_config,
        access_client=access_client, access_sender=access_sender,
    )  # fmt: skip
    if result.stdout_text is not None:
        click.echo(result.stdout_text, nl=False)
    if result.data.store_behind:
        # a stalled ingest is an error for cron to mail, even under -q; the report says it too
        logging.getLogger("maillens").error("%s", result.data.coverage_note)
    for line in result.done:
        note(f"maillens: {line}")
