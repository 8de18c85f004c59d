"""``maillens ingest``, ``summary`` and ``trace``: the store at the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from maillens.cli.main import handle_errors, load_settings, note
from maillens.errors import NotFoundError, UsageError

DEFAULT_LOG = "/var/log/mail.log"

db_option = click.option(
    "--db", "db", type=click.Path(dir_okay=False), default=None,
    help="The store (default: [store] db, else /var/lib/maillens/maillens.db as root, the XDG state dir otherwise).",
)  # fmt: skip


def _db(ctx: click.Context, db: str | None) -> Path:
    from maillens.store import default_db_path

    if db:
        return Path(db)
    configured = load_settings(ctx).get("store", "db")
    if configured is not None and not isinstance(configured, str):
        raise UsageError("[store] db in the config must be a file path string")
    return Path(configured) if configured else default_db_path()


def _store_reads_journal(db: Path) -> bool | None:
    """What the store already follows by default: the journal (True), the mail log (False), nothing (None).

    Without a FILE the choice sticks to what earlier runs read: deciding
    afresh each time would, on the day mail.log appears (or goes), read the
    same mail a second time from the other source.
    """
    import sqlite3

    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sources")}
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # not a store (yet): the ingest itself says what is wrong
    if DEFAULT_LOG in names:
        return False
    return True if "journal:" in names else None


def _log_exists(path: str) -> bool:
    """The log or, just after a rotation, one of its rotated files (what ingest would read)."""
    from maillens.ingest import rotated_set

    return bool(rotated_set(path))


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@db_option
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another running ingest before giving up.")
@click.option("--batch-lines", type=click.IntRange(100), default=50_000, show_default=True,
              help="Lines per transaction (each commits its offset with its figures).")
@click.option("--journal", "use_journal", is_flag=True,
              help="Read the systemd journal's mail entries (after any FILE); the default when there is no mail log.")
@click.option("--journal-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Read the journal files in DIR (journalctl --directory), e.g. copied from another host.")
@click.option("--bans", "run_bans", is_flag=True,
              help="Then let the jails judge the new events (as 'maillens bans' does from the store).")
@click.option("--bans-output", type=click.Path(dir_okay=False), default=None,
              help="With --bans: also write the block list to this file (atomically).")
@click.option("--bans-format", default="nft", show_default=True, help="With --bans-output: its format.")
@click.option("--bans-apply", is_flag=True, help="With --bans-output: load it (nft -f, ipset restore, ...).")
@click.pass_context
@handle_errors
def ingest(ctx: click.Context, files: tuple[str, ...], db: str | None, wait: float, batch_lines: int,
           use_journal: bool, journal_dir: str | None, run_bans: bool, bans_output: str | None, bans_format: str, bans_apply: bool) -> None:
    """Read what is new in FILE... (default /var/log/mail.log, else the journal) into the store.

    Run it every few minutes (cron, systemd timer): it continues where the
    last run stopped, across rename-and-create and copytruncate rotation
    (rotated files plain or compressed with gzip, bzip2 or xz), and in the
    journal from the cursor it committed.
    With --bans the jails then judge what was added, so one timer keeps both
    the store and the block list current.
    """
    if (bans_output or bans_apply) and not run_bans:
        raise UsageError("--bans-output and --bans-apply go with --bans")
    if bans_apply and not bans_output:
        raise UsageError("--bans-apply loads the file --bans-output writes: give --bans-output FILE")
    from maillens.exporters import FORMATS

    if bans_format not in FORMATS:  # said now, not after the whole ingest has run
        raise UsageError(f"--bans-format {bans_format!r}: use one of {', '.join(FORMATS)}")
    if "-" in files:
        raise UsageError("ingest cannot read standard input: it keeps its place in each file between runs; "
                         "save the lines to a file and ingest that, or pipe them to 'maillens summary -'")
    from maillens.ingest import ingest as run_ingest

    journal = use_journal or journal_dir is not None
    if not files and not journal:
        follows = _store_reads_journal(_db(ctx, db))
        journal = follows if follows is not None else not _log_exists(DEFAULT_LOG)
    paths = list(files) or ([] if journal else [DEFAULT_LOG])
    max_age = load_settings(ctx).get("store", "incomplete_after")
    if max_age is not None and (not isinstance(max_age, (int, float)) or isinstance(max_age, bool) or max_age <= 0):
        raise UsageError("[store] incomplete_after must be a positive number of seconds (default 518400, 6 days)")
    for p in paths:
        if not _log_exists(p):
            raise UsageError(f"{p} does not exist; give the mail log to read, or --journal for the systemd journal")
    age = float(max_age) if max_age is not None else None
    if journal:
        from maillens.journal import ingest_journal

        stats = ingest_journal(_db(ctx, db), directory=journal_dir, paths=paths, wait=wait, batch_lines=batch_lines,
                               max_age=age)
    else:
        stats = run_ingest(paths, _db(ctx, db), wait=wait, batch_lines=batch_lines, max_age=age)
    note(
        f"ingested {stats.lines} lines from {stats.files} file(s){' and the journal' if journal else ''}: "
        f"{stats.messages} messages closed, "
        f"{stats.events} events stored"
    )
    if run_bans:
        from maillens.cli.bans_cmd import bans

        ctx.invoke(bans, files=(), fmt=bans_format, output=bans_output, as_list=False, at=None,
                   do_apply=bans_apply, db=str(_db(ctx, db)), postfix_dir=None, silent=bans_output is None)


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@db_option
@click.option("--date", "date_spec", default=None, metavar="WHEN",
              help="today, yesterday, YYYY-MM-DD or FROM..TO (default: everything).")
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as JSON.")
@click.option("--top", type=int, default=-1, help="Rows per list (default: all, like pflogsumm).")
@click.pass_context
@handle_errors
def summary(ctx: click.Context, files: tuple[str, ...], db: str | None, date_spec: str | None,
            as_json: bool, top: int) -> None:
    """A pflogsumm-like summary of FILE... or, without files, of the store."""
    from maillens.store import Store
    from maillens.summary import SummaryData, parse_date_spec, render_json, render_text, summarize_events, today_for

    days = parse_date_spec(date_spec, today_for())
    if files:
        from maillens.sources import iter_events

        data = summarize_events(iter_events(list(files)), days)
    else:
        with Store.open(_db(ctx, db), readonly=True) as store:
            data = SummaryData.from_store(store, *(days or (None, None)))
    click.echo(render_json(data) if as_json else render_text(data, top))


def _canonical_ip(text: str) -> str:
    """An address as Postfix logs it (IPv6 lower case and compressed), so any spelling finds it."""
    import ipaddress

    try:
        return ipaddress.ip_address(text.strip().strip("[]")).compressed
    except ValueError:
        return text


@click.command()
@click.argument("queue_id", required=False)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@db_option
@click.option("--sender", default=None, help="Messages from this envelope sender ('<>' or '': the null sender).")
@click.option("--recipient", default=None, help="Messages to this recipient.")
@click.option("--client", "client_ip", default=None, help="Messages and rejects of this client IP.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.pass_context
@handle_errors
def trace(ctx: click.Context, queue_id: str | None, files: tuple[str, ...], db: str | None, sender: str | None,
          recipient: str | None, client_ip: str | None, as_json: bool) -> None:
    """The whole story of a message: QUEUEID, or --sender/--recipient/--client.

    With FILE... the logs are read now; otherwise the store is asked.
    """
    from maillens.tracker import find_messages, format_story

    if sender is not None:
        sender = sender.strip()
        sender = "" if sender == "<>" else sender.removeprefix("<").removesuffix(">")
    if client_ip:
        client_ip = _canonical_ip(client_ip)
    if queue_id and (sender is not None or recipient or client_ip) and Path(queue_id).exists():
        files, queue_id = (queue_id, *files), None  # `trace --client IP FILE`
    if not (queue_id or sender is not None or recipient or client_ip):
        raise UsageError("say which message: a QUEUEID, or --sender, --recipient or --client")
    messages, rejects = find_messages(
        list(files), _db(ctx, db) if not files else None, queue_id=queue_id, sender=sender,
        recipient=recipient, client_ip=client_ip,
    )  # fmt: skip
    if not messages and not rejects:
        what = queue_id or ("<>" if sender == "" else sender) or recipient or client_ip
        raise NotFoundError(f"no message found for {what}")
    if as_json:
        for m in messages:
            click.echo(json.dumps(m, ensure_ascii=False, default=str))
        for r in rejects:
            click.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    click.echo(format_story(messages, rejects))
