"""``maillens tail``: a classified ``tail -F`` (options only; the work is in follow.py and live.py)."""

from __future__ import annotations

import functools
import os
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from maillens.cli.main import handle_errors, load_settings
from maillens.errors import ConfigError

DEFAULT_LOG = "/var/log/mail.log"


def tail_settings(section: dict[str, Any]) -> tuple[list[str], int]:
    """Validate ``[tail]``: ``paths`` (list of files) and ``window_minutes`` (offender bar)."""
    paths = section.get("paths", [DEFAULT_LOG])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError("[tail] paths must be a list of file names, e.g. paths = [\"/var/log/mail.log\"]")
    window = section.get("window_minutes", 10)
    try:
        window = int(window)
    except (TypeError, ValueError):
        raise ConfigError(f"[tail] window_minutes must be a whole number of minutes, not {window!r}") from None
    if window <= 0:
        raise ConfigError("[tail] window_minutes must be at least 1")
    return paths, window


@click.command("tail")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-f", "follow_fd", is_flag=True, help="Keep reading as the file grows (follow the open file).")
@click.option("-F", "follow_name", is_flag=True,
              help="Follow by name across rotation (rename+create, copytruncate); wait for missing files.")
@click.option("-n", "--lines", "lines", default="10", show_default=True, metavar="N|+N",
              help="Start with the last N lines, or at line N with +N (+1: the whole file).")
@click.option("--since", metavar="WHEN",
              help="Start at the first line from WHEN on (1h, 30m, 2d or an ISO time), reading rotated "
                   "and compressed history too.")
@click.option("--only", multiple=True, metavar="CLASSES",
              help="Show only these classes, e.g. reject,bounce (tags, groups or event kinds).")
@click.option("--not", "exclude", multiple=True, metavar="CLASSES", help="Hide these classes, e.g. conn.")
@click.option("--client", multiple=True, metavar="IP/CIDR", help="Only lines about clients in this network.")
@click.option("--sender", multiple=True, metavar="ADDR", help="Only this sender (address, @domain or glob).")
@click.option("--recipient", multiple=True, metavar="ADDR", help="Only this recipient (address, @domain or glob).")
@click.option("--restriction", multiple=True, metavar="NAME", help="Only rejects by this restriction.")
@click.option("--rbl", multiple=True, metavar="ZONE", help="Only rejects by this DNSBL zone.")
@click.option("--grep", metavar="REGEX", help="Only lines whose raw text matches REGEX.")
@click.option("--raw", is_flag=True, help="Show the original line, highlighted, instead of key facts.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, the same objects as `maillens parse --json`.")
@click.option("--trace", is_flag=True,
              help="Colour queue IDs so one message's lines match by eye; filters keep a matched message's lines.")
@click.option("--source", "show_source", is_flag=True, help="Prefix each line with file:line.")
@click.pass_context
@handle_errors
def tail(ctx: click.Context, files: tuple[str, ...], follow_fd: bool, follow_name: bool, lines: str,
         since: str | None, only: tuple[str, ...], exclude: tuple[str, ...], client: tuple[str, ...],
         sender: tuple[str, ...], recipient: tuple[str, ...], restriction: tuple[str, ...],
         rbl: tuple[str, ...], grep: str | None, raw: bool, as_json: bool, trace: bool,
         show_source: bool) -> None:
    """Show mail log lines classified as they arrive, like `tail -F`.

    Each line gets a tag (REJECT, RBL, SPF-FAIL, SASL-FAIL, BOUNCE, DEFER, SENT, CONN-ERR, WARN, ...)
    and its key facts; on a terminal a bottom bar counts lines per tag and names the top offending
    clients of the last minutes.  Without -f/-F it prints and exits.  Ctrl-C exits with status 130.
    """
    from maillens.follow import Follower, StartAt, parse_since
    from maillens.live import Classifiers, Filters, View, ViewOptions, sigterm_as_exit

    settings = load_settings(ctx)
    paths, window = tail_settings(settings.section("tail"))
    if not files:
        files = ("-",) if not sys.stdin.isatty() and not (follow_fd or follow_name) else tuple(paths)
    start = StartAt.parse_n(lines)
    line_time = None
    if since is not None:
        start = StartAt(last=None, since=parse_since(since))
        line_time = _line_time
    filters = Filters.build(only=only, exclude=exclude, client=client, sender=sender, recipient=recipient,
                            restriction=restriction, rbl=rbl, grep=grep, trace=trace)
    view = View(filters, ViewOptions(raw=raw, json=as_json, trace=trace,
                                     show_source=show_source or (len(files) > 1 and not as_json)),
                classifiers=Classifiers(_rules(settings)))
    view.state.window = timedelta(minutes=window)
    sigterm_as_exit()
    follower = Follower(list(files), follow=follow_fd or follow_name, by_name=follow_name, start=start,
                        line_time=line_time, notice=view.notice)
    with follower:
        view.run(follower)


def _rules(settings: Any) -> Any:
    """The same rule set ``maillens parse`` uses: built-in rules plus ``[parse] rules_dirs``."""
    from maillens.classify import RuleSet

    dirs = settings.get("parse", "rules_dirs", [])
    if isinstance(dirs, str):
        dirs = [dirs]
    return RuleSet.load(dirs) if dirs else None


def _line_time(text: str, source: str) -> Any:
    """A line's time stamp for ``--since``: the year anchored to the file's mtime, as ``parse`` does.

    Year inference starts afresh for each probe because bisection jumps around the file.
    """
    from maillens.envelope import YearInference, parse_envelope

    env = parse_envelope(text, YearInference(_mtime(source)))
    return env.ts if env is not None else None


@functools.lru_cache(maxsize=64)
def _mtime(source: str) -> Any:
    try:
        return datetime.fromtimestamp(os.stat(source).st_mtime, tz=timezone.utc)
    except OSError:
        return None
