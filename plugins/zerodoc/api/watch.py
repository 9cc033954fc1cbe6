"""Has anything changed in the API's state directories since a request last looked? One syscall to know.

The API re-reads a few files when they change: consumers.json (a revoked key), signing/keys.json
(a rotation), each dataset's CURRENT.json (a publish or rollback), and the consent database (a
revocation committed by another process). Stat-ing each per request costs three or four
syscalls and an SQLite pragma on every answer, for files that change a few times a day.

A ChangeWatch holds one inotify descriptor watching those directories. ``generation()`` is one
non-blocking read of it: unchanged while no event was queued, else incremented. Each user keeps
the generation it last checked at and only re-does its own check (the stat, the pragma) when the
generation moved. Events are queued by the kernel inside the writer's own system call (write,
rename, ...), so a change that completed before a request is read is seen by that request,
exactly as a stat would see it.

Where inotify is unavailable or a watched directory is removed or moved, ``generation()``
changes on every call: every user checks every time, as before this existed. A directory that
cannot be watched (not created yet) is not ``covers()``-ed: its user keeps checking every time.
An overflow of the event queue moves the generation like any event, so nothing is missed.
The state directory must be local (it already is: flock and SQLite WAL require it); changes
made by another host would not be seen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path

from zerodoc.fsutil import libc_keeping_gil

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)  # fmt: skip
# The watch itself is gone (directory removed, moved or unmounted): nothing more will be reported.
LOST = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


class ChangeWatch:
    """One inotify descriptor over some directories; ``generation()`` moves when any of them changed."""

    def __init__(self, directories: Iterable[Path]):
        self._lock = threading.Lock()
        self._generation = 0
        self._pins: dict[int, int] = {}  # thread -> generation pinned for the request it is handling
        self._fd: int | None = None
        self.reason: str | None = None  # why every call counts as a change, when it does
        self._watched: set[str] = set()
        dirs = sorted({str(Path(d)) for d in directories})
        if os.environ.get("ZERODOC_API_WATCH", "").lower() in ("0", "off", "stat"):
            self.reason = "disabled by ZERODOC_API_WATCH"
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            init, add = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            self.reason = "no inotify in this C library"
            return
        add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self.reason = f"inotify_init1: {os.strerror(ctypes.get_errno())}"
            return
        for d in dirs:  # one that cannot be watched (e.g. not created yet) is left to its user's stat
            if add(fd, os.fsencode(d), WATCH_MASK) >= 0:
                self._watched.add(d)
        self._fd = fd
        # Closed with the watch at the latest (an inotify instance is a scarce per-user resource: 128).
        self._finalizer = weakref.finalize(self, os.close, fd)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        # The empty check on every request is a read(2) that fails with EAGAIN, made through
        # ctypes.PyDLL so the GIL is kept: poll() from the select module lets go of it for the call,
        # handing it to the audit writer thread and back, several times per request (one per user).
        self._read = None
        pylibc = libc_keeping_gil()
        if pylibc is not None:
            read = pylibc.read
            read.argtypes, read.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_ssize_t
            self._buf = ctypes.create_string_buffer(65536)
            self._read = read

    @property
    def active(self) -> bool:
        return self._fd is not None

    def covers(self, directory: Path) -> bool:
        """Whether changes in this directory move the generation (else its user must keep checking)."""
        return self._fd is not None and str(Path(directory)) in self._watched

    def pin(self) -> None:
        """Until ``unpin()``, ``generation()`` on this thread answers what it is now: one read per request.

        A request checks keys, consumers, consents and its dataset's pointer; each asked for the
        generation, a read(2) each. Pinned, a change that completed before the request was read is
        still seen (the pin reads after that), and the request's checks all see the same state.
        """
        self._pins[threading.get_ident()] = self._current()

    def unpin(self) -> None:
        self._pins.pop(threading.get_ident(), None)

    def generation(self) -> int:
        """The current generation: the same number as last time exactly when nothing changed."""
        if self._pins:
            pinned = self._pins.get(threading.get_ident())
            if pinned is not None:
                return pinned
        return self._current()

    def _current(self) -> int:
        with self._lock:  # a reader consuming the events and the count moving are one step
            if self._fd is not None:
                if self._read is not None:
                    got = self._read(self._fd, self._buf, 65536)
                    if got < 0:
                        err = ctypes.get_errno()
                        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                            return self._generation  # nothing queued
                        if err != errno.EINTR:  # interrupted: counted as a change, the safe side
                            self._give_up(f"reading inotify events: {errno.errorcode.get(err, err)}")
                    else:
                        self._inspect(self._buf.raw[:got])
                elif not self._poll.poll(0):  # nothing queued: cheaper than a read that fails with EAGAIN
                    return self._generation
                else:
                    try:
                        data = os.read(self._fd, 65536)
                    except BlockingIOError:
                        return self._generation
                    except OSError as exc:
                        self._give_up(f"reading inotify events: {errno.errorcode.get(exc.errno, exc.errno)}")
                    else:
                        self._inspect(data)
            self._generation += 1
            return self._generation

    def _inspect(self, data: bytes) -> None:
        """Drain what is queued; a lost watch or an overflow means events may be missing from now on."""
        while True:
            at = 0
            while at + EVENT.size <= len(data):
                _wd, mask, _cookie, length = EVENT.unpack_from(data, at)
                if mask & LOST:
                    self._give_up("a watched directory was removed or moved")
                    return
                if mask & IN_Q_OVERFLOW:
                    log.warning("inotify queue overflowed; changes since are found by the next checks")
                at += EVENT.size + length
            try:
                data = os.read(self._fd, 65536)  # type: ignore[arg-type]
            except BlockingIOError:
                return
            except OSError:
                return

    def _give_up(self, reason: str) -> None:
        log.warning("state watch off (%s): checking files on every request", reason)
        self.reason = reason
        if self._fd is not None:
            self._finalizer()  # closes the descriptor, once
            self._fd = None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._finalizer()
                self._fd = None
                self.reason = "closed"
