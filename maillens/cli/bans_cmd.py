"""``maillens bans``: the block list, from the store or from log files."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from maillens.cli.main import handle_errors, load_settings, note
from maillens.errors import UsageError
from maillens.exporters import FORMATS, NFT_RULE_SNIPPET

log = logging.getLogger(__name__)


def parse_at(text: str | None) -> float | None:
    """``--at``: an ISO 8601 date/time (UTC when no zone is given) or epoch seconds."""
    if text is None:
        return None
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r}: give a time like 2026-11-10T07:30:00+00:00 or epoch seconds") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _when(ts: float | None) -> str:
    if ts is None:
        return "permanent"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def render_list(entries: list[Any], refused: list[Any]) -> str:
    """The ``--list`` table: who, which jail, since when, until when, on what evidence."""
    lines = [f"{len(entries)} banned"]
    if entries:
        width = max(len(e.address) for e in entries)
        jw = max(len(e.jail) for e in entries)
        lines.append(f"{'address':<{width}}  {'jail':<{jw}}  fails  bans  first (UTC)          "
                     f"until (UTC)          evidence (last)")  # fmt: skip
        for e in entries:
            last = e.evidence[-1] if e.evidence else ""
            lines.append(
                f"{e.address:<{width}}  {e.jail:<{jw}}  {e.failures:>5}  {e.bans:>4}  {_when(e.first):<19}  "
                f"{_when(e.until):<19}  {last[:120]}"
            )
    if refused:
        lines.append(f"{len(refused)} refused (never banned)")
        for r in refused:
            lines.append(f"  {r.ip}  {r.jail}: {r.reason} ({r.failures} failures, {_when(r.time)})")
    return "\n".join(lines) + "\n"


@click.command(epilog="The nft sets need a rule that uses them, once (e.g. in /etc/nftables.conf):\n\n\b\n"
               + NFT_RULE_SNIPPET)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="plain", show_default=True,
              help="Block list format.")
@click.option("--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the list to this file (atomically) instead of stdout.")
@click.option("--list", "as_list", is_flag=True,
              help="Show who is banned, by which jail, since/until when and why (and refused bans).")
@click.option("--at", "at", default=None, metavar="TIME",
              help="List the bans in force at TIME (ISO 8601 or epoch); later lines are not used.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Load the written file: nft -f, ipset restore, iptables-restore --noflush, postfix reload.")
@click.option("--db", "db", type=click.Path(dir_okay=False), default=None,
              help="The store (default: [store] db).")
@click.option("--postfix-config", "postfix_dir", type=click.Path(file_okay=False), default=None,
              help="Directory with main.cf/master.cf for mynetworks and access tables "
                   "(default: [postfix] config_dir, else postconf).")  # fmt: skip
@click.pass_context
@handle_errors
def bans(ctx: click.Context, files: tuple[str, ...], fmt: str, output: str | None, as_list: bool,
         at: str | None, do_apply: bool, db: str | None, postfix_dir: str | None, silent: bool = False) -> None:
    """Write the current block list.

    Without FILE the jails judge what 'maillens ingest' stored since the last
    run (state and ban history are kept in the store, so bantime.increment
    survives restarts) and the list is as of now.  Given FILE... (globs,
    rotated sets, .gz/.bz2/.xz, - for stdin) the jails judge those lines
    afresh, as of the last line's time: the way to try jails on history.
    (``silent`` is for ``ingest --bans`` without a file: judge, store, print nothing.)
    """
    from maillens.banconfig import BanSettings
    from maillens.bans import BanEngine
    from maillens.exporters import OTHER_FAMILY, apply, render, write_atomic, written_entries
    from maillens.neverban import NeverBan

    if do_apply and not output:
        raise UsageError("--apply needs --output FILE: the loader reads the written file")
    settings = load_settings(ctx)
    cfg = BanSettings.from_section(settings.section("bans"))
    never = NeverBan.from_settings(cfg, _postfix_config(settings, postfix_dir, cfg))
    engine = BanEngine(cfg, never)
    until = parse_at(at)
    if files:
        for f in files:
            if f != "-" and not Path(f).exists() and not any(Path(f).parent.glob(Path(f).name)):
                raise UsageError(f"{f} does not exist; give mail log files, or no FILE to use the store")
        engine.feed_paths(list(files), until=until)
        now = until if until is not None else engine.last_time
        if now is None:  # an empty (just rotated) or undated log: nobody to ban, an empty list
            note("maillens: no line with a time stamp in the given files; the list is empty")
            now = time.time()
    else:
        now = until if until is not None else time.time()
        _from_store(ctx, engine, db, until)
    entries = engine.entries(now)
    text = render(fmt, entries, now)
    if as_list:
        click.echo(render_list(entries, sorted(engine.refused.values(), key=lambda r: r.time)), nl=False)
    if output:
        write_atomic(Path(output), text)
        written, left_out = written_entries(fmt, entries, now)
        note(f"wrote {written} entries ({fmt}) to {output}")
        if left_out:
            log.warning("%d ban(s) of the other address family are not in %s: --format %s writes them",
                        left_out, output, OTHER_FAMILY[fmt])
        if do_apply:
            result = apply(fmt, Path(output))
            note(f"applied: {' '.join(result.command)} exited with status {result.returncode}")
    elif not as_list and not silent:
        click.echo(text, nl=False)
    if engine.refused and not as_list and not silent:  # each refusal is logged (-v); one line says there were some
        note(f"maillens: {len(engine.refused)} ban(s) refused for protected addresses (mynetworks, "
             "allowed clients, ignoreip, loopback, own addresses); --list or -v shows them")


def _postfix_config(settings: Any, postfix_dir: str | None, cfg: Any) -> Any:
    """The Postfix configuration for the never-ban lists, or None (with a warning) if this host has none.

    A Postfix that is there but cannot be read (``postconf`` missing from where
    the config says, or failing) is an error: banning its ``mynetworks`` because
    of it would fail open, and under ``-q`` the warning would go unseen.
    """
    if not (cfg.mynetworks or cfg.access_client):
        return None
    from maillens.errors import PostfixMissingError
    from maillens.postconf import load_postfix_config, postfix_settings

    section = postfix_settings(settings.section("postfix"))
    directory = postfix_dir or section["config_dir"]
    try:
        return load_postfix_config(directory, postconf=section["postconf"])
    except PostfixMissingError:
        return None  # NeverBan warns that mynetworks and access tables are unprotected


def _from_store(ctx: click.Context, engine: Any, db: str | None, until: float | None) -> None:
    from maillens.banstore import update_from_store
    from maillens.errors import StoreError
    from maillens.store import Store, default_db_path

    configured = load_settings(ctx).get("store", "db")
    path = Path(db) if db else (Path(configured) if isinstance(configured, str) else default_db_path())
    if not path.exists():
        raise StoreError(f"no store at {path}; run 'maillens ingest' first, pass --db, or give log files")
    with Store.open(path) as store:
        update_from_store(store, engine, until=until)
