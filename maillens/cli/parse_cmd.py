"""``maillens parse``, ``explain`` and ``match``: the classifier at the terminal."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from maillens.cli.main import handle_errors, load_settings, note
from maillens.errors import UsageError
from maillens.textsafe import json_safe, neutralise

DEFAULT_LOG = "/var/log/mail.log"


def default_inputs(files: tuple[str, ...]) -> list[str]:
    """The files given, else stdin when piped, else the system mail log."""
    if files:
        return list(files)
    if not sys.stdin.isatty():
        return ["-"]
    if Path(DEFAULT_LOG).exists():
        return [DEFAULT_LOG]
    raise UsageError(f"no input: give log files (or '-' for stdin); {DEFAULT_LOG} does not exist here")


def _rules_dirs(ctx: click.Context) -> list[str]:
    """``[parse] rules_dirs`` from the config: directories of extra rule files."""
    from maillens.sources import parse_settings

    return parse_settings(load_settings(ctx).section("parse"))


def build_classifier(ctx: click.Context, reference_time: str | None) -> Any:
    from maillens.classify import Classifier, RuleSet

    rules_dirs = _rules_dirs(ctx)
    rules = RuleSet.load(rules_dirs) if rules_dirs else None
    return Classifier(rules, reference_time=_reference(reference_time))


def _reference(reference_time: str | None) -> datetime | None:
    """``--reference-time`` checked even where it changes nothing (--stats), so a typo is never ignored."""
    if not reference_time:
        return None
    try:
        ref = datetime.fromisoformat(reference_time)
    except ValueError:
        raise UsageError(f"--reference-time {reference_time!r} is not an ISO 8601 time (e.g. 2026-11-10T00:00)") from None
    return ref if ref.tzinfo is not None else ref.astimezone()


def _format_text(ev: Any) -> str:
    ts = ev.ts.isoformat(timespec="seconds") if ev.ts else "-"
    facts = " ".join(f"{k}={v}" for k, v in ev.data.items() if v not in (None, "") and k != "commands")
    qid = f" {ev.queue_id}" if ev.queue_id else ""
    return neutralise(f"{ts} {ev.kind}{qid} {facts}".rstrip())


reference_option = click.option(
    "--reference-time", metavar="ISO", default=None,
    help="When the logs end (default: each file's mtime); gives 'Nov  9' style dates their year.")


@click.command()
@click.argument("files", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
@click.option("--stats", is_flag=True, help="Counts by kind, restriction and RBL zone, and lines not understood.")
@click.option("--kind", "kinds", multiple=True, help="Only events of this kind (repeatable).")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Processes for --stats (default: one per core, at most 4; 0 or 1: none).")
@reference_option
@click.pass_context
@handle_errors
def parse(ctx: click.Context, files: tuple[str, ...], as_json: bool, stats: bool, kinds: tuple[str, ...],
          workers: int | None, reference_time: str | None) -> None:
    """Turn mail log lines into typed events (files, globs, .gz/.bz2/.xz, '-' for stdin)."""
    from maillens.events import KINDS
    from maillens.sources import iter_events
    from maillens.stats import ParseStats

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"--kind {unknown[0]!r} is not a kind; choose from {', '.join(KINDS)}")
    _reference(reference_time)
    out = sys.stdout
    inputs = default_inputs(files)
    if stats and not kinds:
        from maillens.fastscan import scan_stats

        summary = scan_stats(inputs, workers=workers, rules_dirs=_rules_dirs(ctx))
    elif stats:
        summary = ParseStats().extend(ev for ev in iter_events(inputs, build_classifier(ctx, reference_time))
                                      if ev.kind in kinds)
    if stats:
        if as_json:
            json.dump(summary.to_dict(), out, indent=1)
            out.write("\n")
        else:
            out.write(summary.render_text())
        return
    events = iter_events(inputs, build_classifier(ctx, reference_time))
    wanted = set(kinds)
    write = out.write
    for ev in events:
        if wanted and ev.kind not in wanted:
            continue
        write((ev.to_json() if as_json else _format_text(ev)) + "\n")


@click.command()
@click.argument("lines", nargs=-1, required=False)
@click.option("--filter", "filter_spec", default=None, help="Also show what this fail2ban filter makes of it.")
@reference_option
@click.pass_context
@handle_errors
def explain(ctx: click.Context, lines: tuple[str, ...], filter_spec: str | None, reference_time: str | None) -> None:
    """Show which rule matched a line and every field it extracted (reads stdin without LINES)."""
    from maillens.filterconf import load_filter

    classifier = build_classifier(ctx, reference_time)
    texts = [line.rstrip("\n") for line in sys.stdin] if list(lines) in ([], ["-"]) else list(lines)
    flt = load_filter(filter_spec) if filter_spec else None
    for i, text in enumerate(texts):
        if i:
            click.echo("")
        ev = classifier.classify(text)
        click.echo(f"line     : {neutralise(ev.raw)}")
        click.echo(f"kind     : {ev.kind}")
        click.echo(f"rule     : {ev.rule or '(none)'}")
        if ev.ts is not None:
            click.echo(f"ts       : {ev.ts.isoformat()}")
        for name in ("host", "program", "pid", "queue_id"):
            value = getattr(ev, name)
            if value is not None:
                click.echo(f"{name:<9}: {value}")
        for key, value in ev.data.items():
            shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            click.echo(f"{key:<9}: {neutralise(shown)}")
        if flt is not None:
            match = flt.match_line(text)
            if match is None:
                click.echo(f"{flt.spec}: no match")
            else:
                click.echo(f"{flt.spec}: failregex[{match.regex.index + 1}] host={match.host}")
                for key, value in match.fields.items():
                    click.echo(f"  {key}: {value}")


@click.command()
@click.option("--filter", "filter_spec", required=True,
              help="fail2ban filter: a name, a path, or NAME[mode=aggressive, ...].")
@click.argument("files", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One object per matched line: source, lineno, host, captures.")
@handle_errors
def match(filter_spec: str, files: tuple[str, ...], as_json: bool) -> None:
    """Print the lines a fail2ban filter matches, with the host, as fail2ban-regex would.

    The host is fail2ban's failure id, as ``fail2ban-regex --raw`` gives it:
    names are never looked up.  As in fail2ban-regex, empty lines and lines
    starting with '#' are not tested, and the filter keeps its state from line
    to line (maxlines buffers, multi-line failure ids).
    """
    from maillens.filterconf import load_filter
    from maillens.sources import read_lines

    flt = load_filter(filter_spec)
    matcher = flt.matcher()
    write = sys.stdout.write
    matched = 0
    unterminated: list[tuple[str, bytes]] = []  # fail2ban-regex does not test a last line without a newline
    for line in read_lines(default_inputs(files), unterminated):
        text = line.text.rstrip("\r\n")
        if not text or text.startswith("#"):
            continue
        m = matcher.match_line(text)
        if m is None:
            continue
        matched += 1
        if as_json:
            obj: dict[str, Any] = {"source": line.source, "lineno": line.lineno, "host": m.host}
            for key, value in m.captures.items():
                obj.setdefault(key.lower(), value)
            write(json_safe(json.dumps(obj, ensure_ascii=False)) + "\n")
        else:
            write(f"{neutralise(line.source)}:{line.lineno}\t{neutralise(m.host)}\t{neutralise(line.text)}\n")
    for path, _ in unterminated:
        note(f"maillens: the last line of {path} has no newline: not tested (as fail2ban-regex leaves it)")
    if not as_json:
        note(f"{matched} lines matched {flt.spec}")
