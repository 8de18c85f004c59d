"""``python -m maillens``: the same as the ``maillens`` command."""

from maillens.cli.main import cli

cli()
