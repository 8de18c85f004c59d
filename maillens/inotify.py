"""inotify(7) through libc and ``ctypes``: change notification without a native dependency.

``maillens.follow`` sleeps in ``poll(2)`` on this descriptor instead of waking
up to ``stat`` files, which is what keeps an idle ``tail -F`` near 0 % CPU.
Events are not decoded: any event means "look again", which also makes a
queue overflow harmless.  ``Inotify.create()`` returns ``None`` off Linux, when
the kernel refuses (watch limits), or when ``MAILLENS_TAIL_POLL`` is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x002, 0x004, 0x008
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x040, 0x080, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
FILE_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
DIR_MASK = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB


class Inotify:
    """The few inotify calls we need; any event just means "look again"."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        self._libc = ctypes.CDLL(name, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd: int = fd

    @classmethod
    def create(cls) -> "Inotify | None":
        if not sys.platform.startswith("linux") or os.environ.get("MAILLENS_TAIL_POLL"):
            return None
        try:
            return cls()
        except (OSError, AttributeError):
            return None

    def watch(self, path: str, mask: int) -> int | None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        return wd if wd >= 0 else None

    def unwatch(self, wd: int | None) -> None:
        if wd is not None and wd >= 0:
            self._libc.inotify_rm_watch(self.fd, wd)  # fails harmlessly if the inode is gone

    def drain(self) -> None:
        """Read and discard pending events (the descriptor is non-blocking)."""
        try:
            while os.read(self.fd, 65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
