"""``maillens restrictions`` and ``maillens rbl``: the log tied back to the server's configuration.

Thin click layer: options, output and exit codes.  The work is done by
``maillens.postconf`` (reading the configuration), ``maillens.restrictions``
(attributing rejects) and ``maillens.rbl`` (DNS list health).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

import click

from maillens.cli.main import handle_errors, load_settings
from maillens.errors import ExitStatus, UsageError

_POSTFIX_CONFIG_HELP = (
    "Directory holding main.cf and master.cf, read like 'postconf -c DIR' "
    "(default: [postfix] config_dir, else the local Postfix through postconf)."
)


def _postfix_config(ctx: click.Context, directory: str | None) -> Any:
    from maillens.postconf import load_postfix_config, postfix_settings

    section = postfix_settings(load_settings(ctx).section("postfix"))
    return load_postfix_config(directory or section["config_dir"], postconf=section["postconf"])


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``7d``, ``12h``, ``30m``, ``2w`` (ago) or an ISO date/time → an aware datetime."""
    if not text:
        return None
    now = now or datetime.now(timezone.utc)
    m = _DURATION.match(text.strip().lower())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: use a duration like 7d, 12h, 30m or a date like 2026-11-09") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _events_from_logs(paths: Iterable[str], since: datetime | None) -> Iterator[Any]:
    from maillens.sources import iter_events

    for event in iter_events(list(paths)):
        if event.kind not in ("reject", "reject_warning"):
            continue
        if since is not None and event.ts is not None and event.ts < since:
            continue
        yield event


def _events_from_store(db: str | None, since: datetime | None) -> Iterator[dict[str, Any]]:
    from maillens.store import Store

    with Store.open(db, readonly=True) as store:
        yield from store.events(
            kinds=("reject", "reject_warning"),
            since_ts=since.timestamp() if since else None,
            columns=("kind", "program", "stage", "code", "restriction", "rbl", "reason", "raw"),
        )


def _entry_label(r: Any) -> str:
    if r.implicit:
        return f"({r.parameter}) {r.name}"
    from maillens.postconf import STAGE_PARAMETERS

    via = f"{r.parameter}: " if r.parameter and r.parameter not in (*STAGE_PARAMETERS.values(), r.name) else ""
    return f"{via}{'warn_if_reject ' if r.warn_only else ''}{r.name}{' ' + r.argument if r.argument else ''}"


def _restrictions_text(result: Any, source: str) -> str:
    lines = [f"Postfix configuration: {source}", ""]
    width = min(72, max([len(_entry_label(row.restriction)) for row in result.rows] + [11]))
    header = f"{'service':<11} {'stage':<11} {'pos':>3}  {'restriction':<{width}} {'hits':>6} {'warn':>5}  status"
    lines.append(header)
    lines.append("-" * len(header))
    for row in result.rows:
        r = row.restriction
        status = {"fired": "", "accepts_only": "-"}.get(row.status, row.status.replace("_", " "))
        lines.append(f"{r.service or '':<11} {r.stage:<11} {r.position:>3}  {_entry_label(r)[:width]:<{width}} "
                     f"{row.hits:>6} {row.warnings:>5}  {status}".rstrip())
    for title, status in (("Never fired", "never_fired"), ("Only reject_warning (ready to be made real)", "warn_only")):
        rows = result.by_status(status)
        if rows:
            lines += ["", f"{title}:"]
            lines += [f"  {x.restriction.service} {x.restriction.stage} #{x.restriction.position} "
                      f"{x.restriction.name}{' ' + x.restriction.argument if x.restriction.argument else ''}"
                      for x in rows]
    if result.unexplained:
        lines += ["", "Rejects the configuration cannot explain:"]
        for u in result.unexplained:
            lines.append(f"  {u.count:>6}  {u.program} {u.kind} {u.stage} {u.restriction}"
                         f"{' ' + u.rbl if u.rbl else ''}: {u.why}")
    lines += ["", f"{result.rejects} rejects, {result.warnings} reject warnings"]
    return "\n".join(lines)


@click.command("restrictions")
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--since", help="Only events newer than this: 7d, 12h, 30m, 2w or an ISO date.")
@click.option("--postfix-config", "postfix_dir", type=click.Path(file_okay=False), help=_POSTFIX_CONFIG_HELP)
@click.option("--db", type=click.Path(dir_okay=False), help="Store to read when no log files are given.")
@click.option("--service", "services", multiple=True, help="Only this master.cf service (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of restriction objects.")
@click.option("--unexplained", "show_unexplained", is_flag=True,
              help="With --json: an object with restrictions, never_fired, warn_only and unexplained.")
@click.pass_context
@handle_errors
def restrictions(ctx: click.Context, logs: tuple[str, ...], since: str | None, postfix_dir: str | None,
                 db: str | None, services: tuple[str, ...], as_json: bool, show_unexplained: bool) -> None:
    """Each configured restriction, in order, with its hits in the period.

    Reads the given LOGS (globs, '-', .gz/.bz2/.xz), else the store.  Lists the
    restrictions that never fired, the ones that only fire as reject_warning,
    and rejects the current configuration cannot explain.
    """
    from maillens.restrictions import RestrictionMatcher

    config = _postfix_config(ctx, postfix_dir)
    start = parse_since(since)
    events = _events_from_logs(logs, start) if logs else _events_from_store(db, start)
    result = RestrictionMatcher(config).tally(events)
    if services:
        known = {s.name for s in config.smtpd_services()}
        unknown = [s for s in services if s not in known]
        if unknown:
            raise UsageError(f"--service {unknown[0]}: not an smtpd service in master.cf ({', '.join(sorted(known))})")
        result.rows = [r for r in result.rows if r.restriction.service in services]
    if as_json:
        payload: Any = result.to_dict() if show_unexplained else [r.to_dict() for r in result.rows]
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(_restrictions_text(result, config.source))


@click.group("rbl")
def rbl() -> None:
    """DNS block lists in the Postfix configuration: list them, check their health."""


@rbl.command("zones")
@click.option("--postfix-config", "postfix_dir", type=click.Path(file_okay=False), help=_POSTFIX_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
@handle_errors
def rbl_zones(ctx: click.Context, postfix_dir: str | None, as_json: bool) -> None:
    """The DNSBL/RHSBL/DNSWL zones the configuration uses, with reply filters and weights."""
    zones = _postfix_config(ctx, postfix_dir).rbl_zones()
    if as_json:
        click.echo(json.dumps([z.to_dict() for z in zones], indent=2))
        return
    for z in zones:
        extra = (f" filter {z.filter_text}" if z.filter else "") + (f" weight {z.weight}" if z.weight is not None else "")
        click.echo(f"{z.domain:<32} {z.kind:<6} {z.restriction}{extra}")


@rbl.command("check")
@click.option("--nameserver", help="Resolver to ask, HOST[:PORT] (default: the first of /etc/resolv.conf).")
@click.option("--zone", "zones", multiple=True,
              help="Check this zone (ZONE[=FILTER]) instead of the configured ones; repeatable.")
@click.option("--timeout", type=click.FloatRange(0.05, 60), default=3.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.option("--postfix-config", "postfix_dir", type=click.Path(file_okay=False), help=_POSTFIX_CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
@handle_errors
def rbl_check(ctx: click.Context, nameserver: str | None, zones: tuple[str, ...], timeout: float,
              postfix_dir: str | None, as_json: bool) -> None:
    """Query every configured DNS list for its test points and say which still work.

    Each zone is alive, dead (its 127.0.0.2/'test' entry is missing: NXDOMAIN,
    SERVFAIL, timeout), lists_everything (127.0.0.1/'invalid' is listed), or
    refused (the list will not answer this resolver, e.g. Spamhaus's
    127.255.255.254 for public resolvers).  Exits 1 when any zone is not alive.
    """
    from maillens import rbl as rbl_mod

    if zones:
        parsed = [rbl_mod.parse_zone_spec(z) for z in zones]
        bad = [z for z, p in zip(zones, parsed) if p is None]
        if bad:
            raise UsageError(f"--zone {bad[0]!r}: give a DNS zone such as zen.spamhaus.org[=127.0.0.[2..11]]")
        targets = [p for p in parsed if p is not None]
    else:
        targets = _postfix_config(ctx, postfix_dir).rbl_zones()
    server = rbl_mod.parse_nameserver(nameserver) if nameserver else None
    results = rbl_mod.check_zones(targets, server, timeout=timeout)
    if results and all(r.status == "dead" and "timeout" in r.reason for r in results):
        # every list silent: the resolver is the one not answering; calling them all dead
        # would invite removing working lists
        from maillens.errors import MaillensError

        raise MaillensError(f"no answer from the resolver {nameserver or '(from /etc/resolv.conf)'} for any of "
                            f"{len(results)} zone(s) within {timeout:g} s: check --nameserver or the resolver; "
                            "no list was judged")
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        if not results:
            click.echo("no DNS list zones configured")
        for r in results:
            click.echo(f"{r.zone.domain:<32} {r.status:<17} {r.elapsed_ms:>8.1f} ms  {r.reason}")
    if any(not r.ok for r in results):
        ctx.exit(int(ExitStatus.ERROR))
