"""``maillens tail``: options, and the output loop over follow.py (input) and live.py (rendering).

The loop is output, which is this layer's job: it classifies each batch the
follower returns, filters it, and prints it -- through rich (lines above a
live counts bar) on a terminal, as plain lines or JSON Lines otherwise.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

import click

from maillens.cli.main import handle_errors, load_settings
from maillens.errors import UsageError
from maillens.events import Event
from maillens.follow import Follower, StartAt, TailLine
from maillens.live import tail_settings
from maillens.live import Filters, LiveState, json_line, neutralise, plain_line, rich_line, status_bar, tag_for

if TYPE_CHECKING:
    from rich.text import Text

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


_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|hours|d|day|days|w|week|weeks)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600,
                 "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``15m``, ``1h``, ``2d``) or an ISO time."""
    now = now or datetime.now(timezone.utc).astimezone()
    m = _SINCE_RE.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give a duration such as 30m, 1h, 2d or a time such as 2026-11-09T08:00"
        ) from None
    return when if when.tzinfo else when.astimezone()


class _Bar:
    """The live region: re-rendered from the current state each time rich draws it.

    Rich redraws the live region under every ``console.print``, so one draw per
    batch of lines keeps the bar current without a refresh thread.
    """

    def __init__(self, state: LiveState) -> None:
        self.state = state

    def __rich__(self) -> "Text":
        return status_bar(self.state)


@dataclass
class ViewOptions:
    """How lines are shown; ``terminal=None`` means "ask the output stream"."""

    raw: bool = False
    json: bool = False
    trace: bool = False
    terminal: bool | None = None
    show_source: bool = False
    poll_timeout: float = 1.0


class Classifiers:
    """One classifier per source, its year inference anchored like ``maillens parse`` anchors it.

    ``parse`` gives a file's BSD time stamps their year from the file's mtime;
    doing the same here is what makes ``tail --json`` equal ``parse --json``.
    """

    def __init__(self, rules: Any = None, factory: Callable[[datetime | None], Any] | None = None) -> None:
        if factory is None:
            from maillens.classify import Classifier

            def factory(reference: datetime | None) -> Any:
                return Classifier(rules, reference_time=reference)

        self._factory = factory
        self._by_source: dict[str, Any] = {}

    @staticmethod
    def _reference(source: str) -> datetime | None:
        if source == "-":
            return None
        try:
            return datetime.fromtimestamp(os.stat(source).st_mtime, tz=timezone.utc)
        except OSError:
            return None

    def classify(self, line: TailLine) -> Event:
        clf = self._by_source.get(line.source)
        if clf is None:
            clf = self._by_source[line.source] = self._factory(self._reference(line.source))
        ev: Event = clf.classify(line.text, source=line.source, lineno=line.lineno)
        return ev


def _batches(lines: Iterator[TailLine], size: int = 512) -> Iterator[list[TailLine]]:
    batch: list[TailLine] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class View:
    """Turns batches of lines into output: rich on a terminal, plain or JSON Lines otherwise."""

    def __init__(self, filters: Filters, options: ViewOptions, out: TextIO | None = None,
                 classifiers: Classifiers | None = None) -> None:
        self.filters = filters
        self.options = options
        self.out = out or sys.stdout
        self.classifiers = classifiers or Classifiers()
        self.state = LiveState()
        isatty = getattr(self.out, "isatty", lambda: False)
        self.terminal = options.terminal if options.terminal is not None else bool(isatty())
        self.fancy = self.terminal and not options.json
        self.console: Any = None
        if self.fancy:
            from rich.console import Console

            self.console = Console(file=self.out, highlight=False, markup=False, emoji=False,
                                   force_terminal=options.terminal or None)

    def notice(self, message: str) -> None:
        """A follower's remark (rotation, truncation): a dim line on screen, else stderr."""
        text = f"maillens: {neutralise(message)}"
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text, style="dim italic"))
        else:
            self.out.flush()
            print(text, file=sys.stderr, flush=True)

    def handle(self, batch: list[TailLine]) -> None:
        shown: list[Event] = []
        for line in batch:
            ev = self.classifiers.classify(line)
            tag = tag_for(ev)
            if self.filters.matches(ev, tag):
                self.state.add(ev, tag)
                shown.append(ev)
        if not shown:
            return
        opts = self.options
        if self.console is None:
            if opts.json:
                text = "\n".join(json_line(ev) for ev in shown)
            else:
                text = "\n".join(plain_line(ev, raw=opts.raw, source=opts.show_source) for ev in shown)
            self.out.write(text + "\n")
            self.out.flush()
            return
        from rich.text import Text

        # facts are cropped to one screen line (most telling first); --raw wraps: all of it is the point
        crop = not opts.raw
        body = Text("\n", no_wrap=crop, overflow="ellipsis" if crop else "fold").join(
            rich_line(ev, raw=opts.raw, trace=opts.trace, source=opts.show_source) for ev in shown)
        self.console.print(body, no_wrap=crop, overflow="ellipsis" if crop else "fold", crop=crop)

    def run(self, follower: Follower) -> None:
        """Show history (``--since``), then what the follower yields until it is done."""
        if not self.fancy:
            self._loop(follower)
            return
        from rich.live import Live

        with Live(_Bar(self.state), console=self.console, auto_refresh=False, transient=False,
                  redirect_stdout=False, redirect_stderr=False):
            self._loop(follower)

    def _loop(self, follower: Follower) -> None:
        for batch in _batches(follower.history()):
            self.handle(batch)
        while True:
            batch = follower.poll(self.options.poll_timeout)
            if batch:
                self.handle(batch)
            if follower.done:
                return


def sigterm_as_exit() -> None:
    """SIGTERM unwinds like Ctrl-C does, so the terminal is restored (cursor shown, bar drawn)."""

    def _handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _handler)


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
