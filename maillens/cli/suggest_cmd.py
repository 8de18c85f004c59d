"""``maillens suggest``: access.client / access.sender entries with their evidence (options only)."""

from __future__ import annotations

import dataclasses
from datetime import timezone
from typing import Any

import click

from maillens.cli.main import handle_errors, load_settings


@click.command("suggest")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--access-client", "client_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Source file of the check_client_access table (e.g. /etc/postfix/access.client; "
                   "default: [suggest] access_client).")
@click.option("--access-sender", "sender_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Source file of the check_sender_access table (e.g. /etc/postfix/access.sender; "
                   "default: [suggest] access_sender).")
@click.option("--since", metavar="AGE",
              help="Only the last AGE of mail (30d, 12h, 2w): back from the newest line of the FILEs, "
                   "or from now for the store.")
@click.option("--format", "fmt", type=click.Choice(["postmap", "json", "diff"]), default="postmap",
              show_default=True, help="postmap lines with evidence comments, a JSON list, or a unified diff.")
@click.option("--postfix-config", type=click.Path(file_okay=False), metavar="DIR",
              help="Directory with main.cf/master.cf for the restriction-order check "
                   "(default: [postfix] config_dir, else the local postconf).")
@click.option("--db", type=click.Path(dir_okay=False), help="Store to read when no FILE is given (default: [store] db).")
@click.pass_context
@handle_errors
def suggest(ctx: click.Context, files: tuple[str, ...], client_path: str | None, sender_path: str | None,
            since: str | None, fmt: str, postfix_config: str | None, db: str | None) -> None:
    """Suggest OK entries for mail wrongly refused and REJECT entries for abuse the checks miss.

    Reads FILEs (rotated and compressed sets too, '-' for stdin) or, without FILEs, the store.
    Existing entries of the given tables are not repeated; stale, conflicting and ineffective ones
    are flagged.  Nothing is changed: review the output, copy the lines, run postmap.

    \b
    maillens suggest --access-client /etc/postfix/access.client \\
                     --access-sender /etc/postfix/access.sender --since 30d /var/log/mail.log*
    """
    from maillens import suggestout
    from maillens.reporting import load_postfix
    from maillens.accessmap import AccessTable
    from maillens.suggest import CLIENT_MAP, SENDER_MAP, SuggestSettings, parse_since
    from maillens.suggest import suggest as run

    settings = load_settings(ctx)
    section = settings.section("suggest")
    options = SuggestSettings.from_section(section)
    client_path = client_path or section.get("access_client")
    sender_path = sender_path or section.get("access_sender")
    if since:
        options = dataclasses.replace(options, since=parse_since(since))
    client_table = AccessTable.load(client_path) if client_path else None
    sender_table = AccessTable.load(sender_path) if sender_path else None
    postfix = load_postfix(settings, postfix_config)  # explicit dir must load; else local postconf if any
    cutoff = None
    if files:
        from maillens.sources import iter_events

        events = iter_events(files)
        newest = _newest_time(files) if options.since is not None and "-" not in files else None
        cutoff = newest - options.since if newest is not None else None
    else:
        events, options = _store_events(settings, db, options)
    result = run(events, client_table=client_table, sender_table=sender_table, postfix=postfix,
                 settings=options, client_path=client_path, sender_path=sender_path, cutoff=cutoff)
    if fmt == "json":
        click.echo(suggestout.to_json(result), nl=False)
    elif fmt == "diff":
        tables = {CLIENT_MAP: (client_path, _read(client_path)), SENDER_MAP: (sender_path, _read(sender_path))}
        click.echo(suggestout.to_diff(result, tables), nl=False)
    else:
        click.echo(suggestout.to_postmap(result, {CLIENT_MAP: client_path, SENDER_MAP: sender_path}), nl=False)


def _newest_time(files: tuple[str, ...]) -> Any:
    """The time of the newest line: the end of the last file of the (oldest-first) set.

    Lets ``--since`` filter while streaming instead of holding every event.
    """
    from collections import deque

    from maillens.classify import Classifier
    from maillens.sources import expand_paths, read_file_lines

    inputs = expand_paths(files)
    if not inputs:
        return None
    tail = deque(read_file_lines(inputs[-1].path), maxlen=200)
    classifier = Classifier()
    classifier.start_source(inputs[-1].reference_time)
    stamps = [e.ts for e in (classifier.classify(line.text) for line in tail) if e.ts is not None]
    return max(stamps) if stamps else None


def _read(path: str | None) -> str:
    if not path:
        return ""
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", errors="replace")


def _store_events(settings: Any, db: str | None, options: Any) -> tuple[list[Any], Any]:
    """Events from the store; ``--since`` counts back from now there (the store keeps growing)."""
    from datetime import datetime

    from maillens.store import Store
    from maillens.suggestdata import events_from_store

    since_ts = None
    if options.since is not None:
        since_ts = (datetime.now(timezone.utc) - options.since).timestamp()
    with Store.open(db or settings.section("store").get("db"), readonly=True) as store:
        events = list(events_from_store(store, since_ts))
    return events, dataclasses.replace(options, since=None)
