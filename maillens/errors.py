"""Errors users see, and the exit codes the CLI maps them to.

Library code raises a ``MaillensError`` subclass with a message that says what
to fix (which flag, which config key, which line of which file); the CLI prints
that one line and exits with the error's ``exit_status``.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes of the ``maillens`` command; scripts and cron rely on them."""

    OK = 0
    ERROR = 1  # something went wrong at run time (I/O, a failed tool)
    USAGE = 2  # bad arguments or configuration: the user must change something
    NOT_FOUND = 3  # the thing asked for (queue ID, file) does not exist
    BUSY = 4  # another ingest holds the lock
    DATA = 5  # input or store in a state we refuse to touch (newer schema)
    INTERRUPTED = 130  # Ctrl-C


class MaillensError(Exception):
    """Base of all errors meant for a user; the message is one plain line."""

    exit_status: ExitStatus = ExitStatus.ERROR


class UsageError(MaillensError):
    """Bad argument or option value."""

    exit_status = ExitStatus.USAGE


class ConfigError(MaillensError):
    """Bad configuration file or value; the message names the file and key."""

    exit_status = ExitStatus.USAGE


class PostfixMissingError(ConfigError):
    """No Postfix on this host and no configuration named: callers that can go on without one may.

    Kept apart from a Postfix that is there but cannot be read (``postconf``
    failing): the never-ban lists must not quietly lose ``mynetworks`` then.
    """


class FilterError(MaillensError):
    """A fail2ban-format filter file cannot be read or compiled."""

    exit_status = ExitStatus.USAGE


class InputError(MaillensError):
    """An input file cannot be opened or read."""

    exit_status = ExitStatus.ERROR


class NotFoundError(MaillensError):
    """What was asked for does not exist (a queue ID, a file)."""

    exit_status = ExitStatus.NOT_FOUND


class BusyError(MaillensError):
    """Another process holds a lock we need."""

    exit_status = ExitStatus.BUSY


class StoreError(MaillensError):
    """The store cannot be used as it is (e.g. written by a newer maillens)."""

    exit_status = ExitStatus.DATA
