"""One audit process per server: it chains and fsyncs the records of every worker, which wait for its acks.

Without it each uvicorn worker ran its own writer thread, and the two appended to one file under
``flock``: a batch per worker, the tail read back whenever the other had written, and the GIL handed
between the request loop and the writer around every batch. Here a worker's event loop sends its
records over a Unix socket (lines, all the records of one loop iteration in one write) and awaits
acks; the audit process (one thread, no GIL to share) reads what every worker sent, chains it as one
batch onto the log with ``AuditLog`` (same lines, same chain, same ``flock`` against any other writer),
fsyncs once, and acks each worker's share in one write. A record line is its JSON object, or, for the
usual record, its ``record_segments``: the worker scrubs and serialises it around the chain values, so
the audit process only joins and hashes bytes. An ack line is ``+N`` (the next N records of
that connection are durable) or ``-N message`` (they are not: the caller answers 503).

Durability is unchanged: an answer waits for the ack, and the ack is sent after the fsync. A record
whose ack is lost (the audit process died after the fsync) is in the log and its request is refused:
a record without an answer is allowed, an answer without a record is not. With the audit process gone
a worker's waiting requests fail at once and new ones fail until the process is back (503
``audit_unavailable``); a worker that finds it gone starts a new one (under a lock, so one), at most
once a second.

Started by the first worker that needs it (``ensure_running``), in the worker's process group: a
``kill -9`` of the server's group takes it down with the workers. It exits when its last worker has
disconnected and none comes back within ``IDLE_EXIT_SECONDS``, or on SIGTERM/SIGINT once its workers
have gone (at most ``TERM_GRACE_SECONDS`` later).

    python -m zerodoc.audit.service --state-dir STATE   # what a worker runs; a supervisor can too
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from zerodoc.audit.log import (
    _FIELD_SET,
    RECORD_FIELDS,
    SEGMENT_SEP,
    AuditError,
    AuditLog,
    GroupCommitLog,
    Search,
    VerifyResult,
    default_log_path,
    record_segments,
)

log = logging.getLogger(__name__)

IDLE_EXIT_SECONDS = 3.0
TERM_GRACE_SECONDS = 5.0
START_TIMEOUT_SECONDS = 15.0
RESPAWN_INTERVAL_SECONDS = 1.0
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / "audit" / "audit.sock"


def usable(state_dir: Path) -> bool:
    """A Unix socket can live at the state directory's path (sun_path is short)."""
    return len(os.fsencode(socket_path(state_dir))) <= _MAX_UNIX_PATH


# ---- the audit process ---------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One worker's connection: its records in, its acks out, in the order it sent them."""

    def __init__(self, server: _AuditServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._partial = b""

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        self.transport = transport
        self.server.connected(self)

    def data_received(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            self.server.received(self, lines)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.server.disconnected(self)


class _AuditServer:
    def __init__(self, log_path: Path, sock_path: Path):
        self.log = AuditLog(log_path)  # _write_batch: flock, tail, chain, pwrite, fsync
        self.sock_path = sock_path
        self.pending: list[tuple[_Connection, bytes]] = []
        self.scheduled = False
        self.clients: set[_Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.stopping = False

    def connected(self, conn: _Connection) -> None:
        self.clients.add(conn)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def disconnected(self, conn: _Connection) -> None:
        self.clients.discard(conn)
        if not self.clients:
            self._idle_timer = self.loop.call_later(0 if self.stopping else IDLE_EXIT_SECONDS, self._exit_if_idle)

    def _exit_if_idle(self) -> None:
        if not self.clients and not self.done.done():  # anything still pending is written on the way out
            self.done.set_result(None)

    def received(self, conn: _Connection, lines: list[bytes]) -> None:
        self.pending.extend((conn, line) for line in lines)
        if not self.scheduled:
            # After this iteration's other reads: one batch for whatever every worker has sent by then.
            self.scheduled = True
            self.loop.call_soon(self.write)

    def write(self) -> None:
        """Chain and fsync what is pending as one batch, then ack each connection's share in order."""
        self.scheduled = False
        pending, self.pending = self.pending, []
        results: list[str | None] = []  # per pending record: None when durable, else why not
        batch: list[dict[str, Any] | bytes] = []
        # The usual line is a record's segments (record_segments: SEGMENT_SEP first, then four pieces).
        if all(line[:1] == SEGMENT_SEP and line.count(SEGMENT_SEP) == 4 for _conn, line in pending):
            batch, results = [line[1:] for _conn, line in pending], [None] * len(pending)
            pending_lines: list[tuple[_Connection, bytes]] = []
        else:  # JSON records (the general path) among them: one by one
            pending_lines = pending
        for _conn, line in pending_lines:
            if line[:1] == SEGMENT_SEP:
                if line.count(SEGMENT_SEP) != 4:
                    results.append("record segments are not four pieces")
                    continue
                batch.append(line[1:])
                results.append(None)
                continue
            try:
                fields = json.loads(line)
            except ValueError:
                results.append("record is not JSON")
                continue
            if type(fields) is not dict or not fields.keys() <= _FIELD_SET:
                results.append("record has fields an audit record cannot carry")
                continue
            batch.append(fields)
            results.append(None)
        if batch:
            try:
                self.log._write_batch(batch, lines_only=True)
            except AuditError as exc:
                log.error("audit batch of %d records not written: %s", len(batch), exc)
                message = str(exc).replace("\n", " ")
                results = [message if r is None else r for r in results]
        acks: dict[_Connection, list[list]] = {}
        for (conn, _line), result in zip(pending, results, strict=True):
            runs = acks.setdefault(conn, [])
            if runs and runs[-1][1] == result:
                runs[-1][0] += 1
            else:
                runs.append([1, result])
        for conn, runs in acks.items():
            if conn.transport is None:
                continue  # that worker is gone; its records are written, nobody waits for them
            conn.transport.write(
                b"".join((f"+{n}\n" if result is None else f"-{n} {result}\n").encode("utf-8") for n, result in runs)
            )
        if self.stopping and not self.clients:
            self._exit_if_idle()

    def stop(self) -> None:
        """SIGTERM/SIGINT: take no new workers, finish for the connected ones, exit once they have gone."""
        if self.stopping:
            return
        self.stopping = True
        self.server.close()
        if not self.clients:
            self._exit_if_idle()
        self.loop.call_later(TERM_GRACE_SECONDS, lambda: self.done.done() or self.done.set_result(None))

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self.sock_path.unlink(missing_ok=True)  # left by a killed predecessor; its lock proves it is gone
        old_umask = os.umask(0o177)  # the socket: this user only
        try:
            self.server = await self.loop.create_unix_server(lambda: _Connection(self), str(self.sock_path))
        finally:
            os.umask(old_umask)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop)
        # Nobody may connect at all (the worker that started it died first): do not linger then either.
        self._idle_timer = self.loop.call_later(START_TIMEOUT_SECONDS, self._exit_if_idle)
        try:
            await self.done
        finally:
            self.server.close()
            if self.pending:
                self.write()
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()
            self.log.close()


def run_audit_process(state_dir: Path) -> int:
    """Serve the audit socket of state_dir until idle or told to stop. 0, or 3 if another one serves it."""
    state_dir = Path(state_dir)
    sock = socket_path(state_dir)
    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One audit process per state directory: the lock is held for its whole life and dies with it.
    lock_fd = os.open(sock.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + 2.0
    while True:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            # A predecessor killed a moment ago can hold it until its exit has closed its files.
            if _connectable(sock) or time.monotonic() > deadline:
                os.close(lock_fd)
                return 3
            time.sleep(0.02)
    try:
        asyncio.run(_AuditServer(default_log_path(state_dir), sock).serve())
    finally:
        os.close(lock_fd)
    return 0


# ---- starting it from a worker ---------------------------------------------------------------


def _connectable(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


_CHILDREN: list[subprocess.Popen] = []  # started here; polled so that a dead one is reaped


def ensure_running(state_dir: Path, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Start the audit process of state_dir unless one answers on its socket; return once one does.

    Workers race here at start and after the process died: a lock file lets one of them start it.
    Raises AuditError if none answers within timeout.
    """
    for child in list(_CHILDREN):
        if child.poll() is not None:
            _CHILDREN.remove(child)
    sock = socket_path(state_dir)
    if _connectable(sock):
        return
    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(sock.with_suffix(".start"), "a+b") as guard:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
        if _connectable(sock):
            return
        child = subprocess.Popen(
            [sys.executable, "-m", "zerodoc.audit.service", "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        _CHILDREN.append(child)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _connectable(sock):
                return
            if child.poll() is not None:
                if _connectable(sock):  # exit 3: another one got there first
                    return
                raise AuditError(f"the audit process exited with {child.returncode} before it served {sock}")
            time.sleep(0.01)
    raise AuditError(f"no audit process answers on {sock} after {timeout:.0f}s")


# ---- the worker's side -----------------------------------------------------------------------


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _Channel(asyncio.Protocol):
    """A worker loop's connection: records of one loop iteration go in one write; acks settle futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._out: list[bytes] = []
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._partial = b""

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        self.transport = transport

    def send(self, fields: dict[str, Any]) -> asyncio.Future:
        segments = record_segments(fields)  # the usual record: scrubbed and cut here, joined and hashed there
        if segments is not None:
            line = SEGMENT_SEP + segments + b"\n"
        else:
            try:
                line = _dumps(fields).encode("utf-8") + b"\n"
            except (TypeError, ValueError, RecursionError) as exc:  # a value JSON cannot carry: as the file backend
                raise AuditError(f"audit record cannot be written: {exc}") from None
        future = self.loop.create_future()
        self._waiting.append(future)
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(line)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        waiting = self._waiting
        for line in lines:
            if line[:1] == b"+":
                for _ in range(int(line[1:])):
                    future = waiting.popleft()
                    if not future.done():  # done: the request was cancelled (client gone)
                        future.set_result(None)
            else:
                count, _, message = line[1:].decode("utf-8", "replace").partition(" ")
                for _ in range(int(count)):
                    future = waiting.popleft()
                    if not future.done():
                        future.set_exception(AuditError(f"the audit process could not write the record: {message}"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.transport = None
        waiting, self._waiting = self._waiting, collections.deque()
        for future in waiting:
            if not future.done():
                future.set_exception(AuditError("the audit process went away before the record was durable"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class AuditProcessLog(GroupCommitLog):
    """The file backend for a server's workers: records go to the audit process, reads go to the file.

    ``append_fields_async`` returns once the audit process acked the record's fsync; it returns the
    fields it was given (the chained record, with seq and hash, is in the log). ``spawn=False``: the
    audit process is someone else's to run (a supervisor), and a missing one only means 503s.
    """

    def __init__(self, state_dir: Path, spawn: bool = True):
        super().__init__(group_commit=True)
        self.state_dir = Path(state_dir)
        self.path = default_log_path(self.state_dir)
        self.socket = socket_path(self.state_dir)
        self.spawn = spawn
        self._file = AuditLog(self.path)  # reads only: search and verify
        self._channels: dict[asyncio.AbstractEventLoop, _Channel] = {}
        self._connecting: dict[asyncio.AbstractEventLoop, asyncio.Future] = {}
        self._last_start = float("-inf")
        self._start_lock = threading.Lock()

    def describe(self) -> str:
        return str(self.path)

    async def ready(self) -> str | None:
        """This loop's channel to the audit process is open, or can be opened now (which restarts a
        dead process, as a request would)."""
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is not None and not channel.closed:
            return None
        try:
            await asyncio.wait_for(self._channel(loop), timeout=5.0)
        except (AuditError, TimeoutError) as exc:
            return f"audit process at {self.socket} not reachable: {exc}"
        return None

    def search(self, query: Search) -> list[dict[str, Any]]:
        return self._file.search(query)

    def verify(self) -> VerifyResult:
        return self._file.verify()

    async def append_fields_async(self, fields: dict[str, Any]) -> dict[str, Any]:
        if not fields.keys() <= _FIELD_SET:
            raise ValueError(f"unknown audit record fields: {sorted(set(fields) - _FIELD_SET)}")
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None or channel.closed:
            channel = await self._channel(loop)
        await channel.send(fields)
        return fields

    def append(self, **fields: Any) -> dict[str, Any]:
        """From a thread without a loop: a connection of its own for one record."""
        unknown = set(fields) - set(RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown audit record fields: {sorted(unknown)}")
        self._ensure(blocking=True)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(self.socket))
                s.sendall(_dumps(fields).encode("utf-8") + b"\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise AuditError("the audit process went away before the record was durable")
                    reply += chunk
        except OSError as exc:
            raise AuditError(f"the audit process at {self.socket} cannot be reached: {exc}") from exc
        if not reply.startswith(b"+1"):
            raise AuditError(f"the audit process could not write the record: {reply[3:].decode(errors='replace')}")
        return fields

    async def start(self) -> None:
        """Connect this loop now (starting the audit process if needed) rather than on the first request."""
        await self._channel(asyncio.get_running_loop())

    async def _channel(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        """This loop's open channel; concurrent callers share one connection attempt."""
        connecting = self._connecting.get(loop)
        if connecting is None:
            connecting = self._connecting[loop] = loop.create_future()
            try:
                channel = await self._connect(loop)
            except BaseException as exc:
                connecting.set_exception(exc if isinstance(exc, AuditError) else AuditError(str(exc)))
                connecting.exception()  # retrieved: a failed attempt nobody else awaited is not an error
                raise
            else:
                self._channels[loop] = channel
                connecting.set_result(channel)
            finally:
                del self._connecting[loop]
            return channel
        return await connecting

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        try:
            _, channel = await loop.create_unix_connection(lambda: _Channel(loop), str(self.socket))
            return channel
        except OSError:
            pass
        if not self.spawn:
            raise AuditError(f"no audit process answers on {self.socket}")
        await asyncio.to_thread(self._ensure, False)
        try:
            _, channel = await loop.create_unix_connection(lambda: _Channel(loop), str(self.socket))
        except OSError as exc:
            raise AuditError(f"the audit process at {self.socket} cannot be reached: {exc}") from exc
        return channel

    def _ensure(self, blocking: bool) -> None:
        """ensure_running, at most once per RESPAWN_INTERVAL_SECONDS per process: meanwhile requests get 503."""
        if not self.spawn:
            return
        with self._start_lock:
            if _connectable(self.socket):
                return
            now = time.monotonic()
            if not blocking and now - self._last_start < RESPAWN_INTERVAL_SECONDS:
                raise AuditError("the audit process is being restarted")
            self._last_start = now
            # A request waits for this: a restart takes a Python start-up (~0.2 s), not START_TIMEOUT_SECONDS.
            ensure_running(self.state_dir, timeout=START_TIMEOUT_SECONDS if blocking else 5.0)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="the server's state directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="audit-process %(levelname)s %(message)s")
    sys.exit(run_audit_process(args.state_dir))


if __name__ == "__main__":
    main()
