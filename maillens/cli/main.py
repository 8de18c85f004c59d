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
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="maillens: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


def load_settings(ctx: click.Context) -> Any:
    """The frozen settings for this run (config files, env, then flags)."""
    from maillens.config import load_config

    obj = ctx.find_root().obj or {}
    return load_config(obj.get("config_path"))


def main() -> None:  # pragma: no cover - console entry point convenience
    cli()
