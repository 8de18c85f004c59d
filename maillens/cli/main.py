"""The ``maillens`` group, global options, and the error-to-exit-code mapping."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from typing import Any, Callable, TypeVar

import click

from maillens import __version__
from maillens.errors import ExitStatus, MaillensError

#: command name -> "module:attribute"; the module is imported on first use.
LAZY_COMMANDS: dict[str, str] = {
    "parse": "maillens.cli.parse_cmd:parse",
    "explain": "maillens.cli.parse_cmd:explain",
    "match": "maillens.cli.parse_cmd:match",
    "ingest": "maillens.cli.store_cmd:ingest",
    "summary": "maillens.cli.store_cmd:summary",
    "trace": "maillens.cli.store_cmd:trace",
    "report": "maillens.cli.report_cmd:report",
    "tail": "maillens.cli.tail_cmd:tail",
    "bans": "maillens.cli.bans_cmd:bans",
    "suggest": "maillens.cli.suggest_cmd:suggest",
    "restrictions": "maillens.cli.server_cmd:restrictions",
    "rbl": "maillens.cli.server_cmd:rbl",
}

F = TypeVar("F", bound=Callable[..., Any])


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's main, with every way out turned into one ``maillens:`` line and an ExitStatus.

        Click's own usage errors span three lines (usage, hint, error); cron
        mail and scripts want one.  Anything unexpected is the safety net:
        one line and a hint to rerun with ``-v`` for the traceback.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Exit as exc:  # pragma: no cover - click returns it when not standalone
            code = exc.exit_code
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "maillens"
            _fail(f"{exc.format_message()} (see '{where} --help')", ExitStatus.USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), ExitStatus(exc.exit_code) if exc.exit_code in set(ExitStatus) else ExitStatus.ERROR)
        except (click.Abort, KeyboardInterrupt):
            sys.exit(int(ExitStatus.INTERRUPTED))
        except MaillensError as exc:
            _fail(str(exc), exc.exit_status)
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(int(ExitStatus.OK))
        except Exception as exc:  # noqa: BLE001 - the safety net: never a bare traceback
            _unexpected(exc)
        sys.exit(code if isinstance(code, int) else int(ExitStatus.OK))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        """Remember the sub-command's arguments: the group callback skips the config check for --help."""
        ctx.meta["maillens.args"] = list(args)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    return None  # command planned but not built yet
                raise
            return getattr(module, attr)
        return super().get_command(ctx, cmd_name)


_VERBOSE = 0  # set by the group callback: -v shows the traceback of an unexpected error
_QUIET = False  # set by the group callback: -q keeps status lines off stderr


def note(message: str) -> None:
    """A status line for the person at the terminal, on stderr; ``-q`` silences it.

    Cron mails whatever a job prints, so ``-q`` (what the cron script and the
    systemd units pass) must leave only errors: a run that did its work says
    nothing.
    """
    if not _QUIET:
        click.echo(message, err=True)


def _fail(message: str, status: ExitStatus) -> None:
    """One line on stderr (newlines folded: a message is one line) and the exit code."""
    click.echo("maillens: " + " ".join(str(message).split()), err=True)
    sys.exit(int(status))


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot complain."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _unexpected(exc: BaseException) -> None:
    """The safety net: a known family of failure gets words; anything else a pointer to -v."""
    import sqlite3
    import traceback

    if _VERBOSE:
        traceback.print_exception(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        _fail(f"the store cannot be used (SQLite says: {exc}); pass another --db or move the file aside",
              ExitStatus.DATA)
    if isinstance(exc, MemoryError):
        _fail("out of memory; give fewer or smaller inputs", ExitStatus.ERROR)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot use{where}: {exc.strerror}", ExitStatus.ERROR)
    hint = "" if _VERBOSE else "; rerun with -v for the traceback and report it"
    _fail(f"internal error: {type(exc).__name__}: {exc}{hint}", ExitStatus.ERROR)


def handle_errors(func: F) -> F:
    """Turn ``MaillensError`` into one plain line on stderr and its exit code.

    Ctrl-C exits 130 without a traceback; a closed stdout (``| head``) exits
    quietly as Unix tools do.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MaillensError as exc:
            click.echo(f"maillens: {exc}", err=True)
            sys.exit(int(exc.exit_status))
        except KeyboardInterrupt:
            sys.exit(int(ExitStatus.INTERRUPTED))
        except BrokenPipeError:
            try:
                sys.stdout = None  # type: ignore[assignment]
            finally:
                sys.exit(int(ExitStatus.OK))

    return wrapper  # type: ignore[return-value]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="maillens")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (default: /etc/maillens/config.toml, then the XDG user file).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, config_path: str | None) -> None:
    """Read Postfix mail logs: classify, follow, summarise, ban, suggest."""
    global _VERBOSE, _QUIET
    _VERBOSE, _QUIET = verbose, quiet
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="maillens: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    rest = ctx.meta.get("maillens.args", ())
    if not {"-h", "--help"} & set(rest):  # help works even while the config is broken
        _checked_settings(ctx)


def _checked_settings(ctx: click.Context) -> Any:
    """Settings read and validated once per run; every command sees the same ones."""
    from maillens.config import load_config, validate

    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = {}
    if "settings" not in obj:
        settings = load_config(obj.get("config_path"))
        validate(settings)
        obj["settings"] = settings
    return obj["settings"]


def load_settings(ctx: click.Context) -> Any:
    """The frozen settings for this run (config files, env, then flags)."""
    return _checked_settings(ctx)


def main() -> None:  # pragma: no cover - console entry point convenience
    cli()
