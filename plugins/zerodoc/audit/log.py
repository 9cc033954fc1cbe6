"""Append-only, hash-chained audit log (JSON lines) of every evidence API request.

Each record carries ``prev_hash`` and ``hash = sha256(prev_hash + canonical(record))`` where the
canonical record is every field except ``hash``. Editing, removing or reordering a record
breaks the chain at that record; ``verify_chain`` finds the first break. Truncating the tail
is only detectable against a head hash kept elsewhere (see ``VerifyResult.head_hash``).

Appends hold an exclusive ``fcntl.flock`` on the log file and read the tail under it, so
several API worker processes extend one chain instead of forking it; each record is
fsync'd before ``append`` returns, i.e. before the response leaves.

With ``group_commit=True`` (the API server), concurrent ``append`` / ``append_async`` calls in
one process are written by one writer thread as a batch under one lock and one fsync, and each
caller is released only after that fsync: the same durability, one fsync per batch instead of
per request (an fsync costs milliseconds; a request's own work tens of microseconds).
``append_async`` lets an event loop await its record without parking a thread per request.

The API server's workers do not append here themselves (unless ZERODOC_AUDIT_PROCESS=off): one audit
process (``zerodoc.audit.service``) appends every worker's records with this class, batch by batch.

This file is the embedded default. ``open_audit_log`` picks the PostgreSQL backend
(``zerodoc.audit.pg``) instead when ZERODOC_AUDIT_DSN or AIRFLOW_CONN_ZERODOC_AUDIT is set; both
share the group commit, the record format and the chain, so ``verify`` and ``search`` mean the same.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zerodoc.fsutil import libc_keeping_gil
from zerodoc.privacy import contains_rrn

GENESIS_HASH = "0" * 64
REDACTED = "[redacted: shaped like a resident registration number]"

# The only keys a record may carry; raw identifiers have no field to land in.
RECORD_FIELDS = (
    "request_id",
    "method",
    "path",
    "consumer",
    "purpose",
    "consent_id",
    "evidence_type",
    "dataset",
    "dataset_version",
    "subject_pseudonym",
    "fields",
    "decision",
    "status",
    "reason",
)


_FIELD_SET = frozenset(RECORD_FIELDS)


class AuditError(RuntimeError):
    """The audit log could not be written; the request must not be answered."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(record["prev_hash"].encode("ascii") + canonical_json(body)).hexdigest()


def _scrub(value: Any) -> Any:
    """Defence in depth: no string that looks like a raw national ID is ever written."""
    if isinstance(value, str):
        return REDACTED if contains_rrn(value) else value
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def scrubbed_record(fields: dict[str, Any]) -> dict[str, Any]:
    """The record's fields, scrubbed: every text value holding something shaped like an ID redacted.

    Most values repeat from record to record (consumer, purpose, dataset, version, field names):
    a value once found clean is remembered (a bounded set), so the usual record costs a few set
    lookups instead of a regex pass over all its text.
    """
    record = {k: fields.get(k) for k in RECORD_FIELDS}
    for k, v in record.items():
        if isinstance(v, str):
            if not _clean(v):
                record[k] = REDACTED
        elif isinstance(v, list) and not all(_clean(x) for x in v if isinstance(x, str)):
            record[k] = _scrub(v)
    return record


_CLEAN: set[str] = set()  # text values seen to hold no ID shape
_CLEAN_MAX = 4096


def _id_free(text: str) -> bool:
    """not contains_rrn(text), without the regex for plain ASCII letters and digits."""
    if text.isascii() and text.isalnum() and not (len(text) == 13 and text.isdigit()):
        # ASCII letters and digits only (e.g. a hex pseudonym): the pattern wants no letter or digit
        # on either side of its 13 digits, so only a string that is exactly 13 digits can match.
        return True
    return not contains_rrn(text)


def _clean(text: str) -> bool:
    """_id_free(text), remembered for values that recur."""
    if text in _CLEAN:
        return True
    if not _id_free(text):
        return False
    if len(text) <= 128:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN.add(text)
    return True


class _Syscalls:
    """The writer's short system calls (microseconds: lock, size, read, write), holding the GIL.

    Python's os functions let go of the GIL around every call; the request loop thread then takes
    it, and the writer must wait to get it back, a pair of context switches per call, some ten
    per batch. Called through ctypes.PyDLL they keep it; only fsync (milliseconds) and waiting
    for another process's lock let go. Without a usable C library the os functions are used.
    """

    def __init__(self) -> None:
        self.libc = None
        libc = libc_keeping_gil()
        if libc is None:
            return
        try:
            for name, args, res in (
                ("flock", [ctypes.c_int, ctypes.c_int], ctypes.c_int),
                ("lseek", [ctypes.c_int, ctypes.c_long, ctypes.c_int], ctypes.c_long),
                ("pread", [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long], ctypes.c_ssize_t),
                ("pwrite", [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long], ctypes.c_ssize_t),
                ("ftruncate", [ctypes.c_int, ctypes.c_long], ctypes.c_int),
            ):
                fn = getattr(libc, name)
                fn.argtypes, fn.restype = args, res
            self.libc = libc
        except (OSError, AttributeError):
            pass

    @staticmethod
    def _check(result: int) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return result

    def lock_now(self, fd: int) -> bool:
        """Take the exclusive lock if it is free at once; False if another process holds it."""
        if self.libc is None:
            return False
        if self.libc.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) == 0:
            return True
        if ctypes.get_errno() in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
            return False
        return self._check(-1) == 0

    def unlock(self, fd: int) -> None:
        if self.libc is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            self._check(self.libc.flock(fd, fcntl.LOCK_UN))

    def size(self, fd: int) -> int:
        if self.libc is None:
            return os.fstat(fd).st_size
        return self._check(self.libc.lseek(fd, 0, os.SEEK_END))

    def pread(self, fd: int, n: int, at: int) -> bytes:
        if self.libc is None:
            return os.pread(fd, n, at)
        buf = ctypes.create_string_buffer(n)
        got = self._check(self.libc.pread(fd, buf, n, at))
        return buf.raw[:got]

    def pwrite(self, fd: int, data: bytes, at: int) -> int:
        if self.libc is None:
            return os.pwrite(fd, data, at)
        return self._check(self.libc.pwrite(fd, data, len(data), at))

    def truncate(self, fd: int, size: int) -> None:
        if self.libc is None:
            os.ftruncate(fd, size)
        else:
            self._check(self.libc.ftruncate(fd, size))


_SYS = _Syscalls()


def _read_tail(fd: int, size: int) -> tuple[int, str, int]:
    """(last seq, last hash, byte offset where the next record goes), reading back from size.

    Bytes after the last newline are a write torn by a crash; that request was never
    answered (records are fsync'd before the response), so they are overwritten.
    """
    pos = size
    buf = b""
    last_nl = prev_nl = -1
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        buf = _SYS.pread(fd, step, pos) + buf
        last_nl = buf.rfind(b"\n")
        prev_nl = buf.rfind(b"\n", 0, last_nl) if last_nl > 0 else -1
        if prev_nl >= 0:
            break
    if last_nl < 0:
        return 0, GENESIS_HASH, 0
    last = json.loads(buf[prev_nl + 1 : last_nl])
    return int(last["seq"]), str(last["hash"]), pos + last_nl + 1


# A record's canonical JSON, key by key in sorted order: seven values differ from record to record
# (consent_id, hash, prev_hash, request_id, seq, subject_pseudonym, ts); the other eleven repeat
# (the same consumer, purpose, dataset version, fields, decision...), so the text between the
# varying ones is cut once per combination (_Template) and each record is a join of byte strings
# and one SHA-256 instead of a sorted json.dumps of an 18-key dict.
_VARYING = ("consent_id", "hash", "prev_hash", "request_id", "seq", "subject_pseudonym", "ts")
_REPEATED = tuple(k for k in RECORD_FIELDS if k not in _VARYING)
_ORDER = tuple(sorted((*RECORD_FIELDS, "seq", "ts", "prev_hash", "hash")))
# The cuts below rely on this order (it is the alphabet's, so it only changes with the field names).
assert _ORDER == (
    "consent_id", "consumer", "dataset", "dataset_version", "decision", "evidence_type", "fields", "hash",
    "method", "path", "prev_hash", "purpose", "reason", "request_id", "seq", "status", "subject_pseudonym", "ts",
), _ORDER  # fmt: skip
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


def _json_text(value: str) -> bytes:
    """json.dumps(value, ensure_ascii=False) as UTF-8 for text, without the encoder for the usual plain ASCII."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return b'"' + value.encode("ascii") + b'"'
    return _encode(value).encode("utf-8")


class _Template:
    """The canonical text around a record's varying values, for one combination of repeated values."""

    __slots__ = ("values", "after_consent", "before_prev", "before_request", "before_subject")

    def __init__(self, values: dict[str, Any]):
        self.values = values  # scrubbed
        text = {k: _encode(values[k]).encode("utf-8") for k in _REPEATED}
        self.after_consent = b"".join(
            b',"' + k.encode("ascii") + b'":' + text[k]
            for k in ("consumer", "dataset", "dataset_version", "decision", "evidence_type", "fields")
        )
        self.before_prev = b',"method":' + text["method"] + b',"path":' + text["path"] + b',"prev_hash":'
        self.before_request = b',"purpose":' + text["purpose"] + b',"reason":' + text["reason"] + b',"request_id":'
        self.before_subject = b',"status":' + text["status"] + b',"subject_pseudonym":'


_TEMPLATES: dict[tuple[Any, ...], _Template] = {}
_TEMPLATES_MAX = 1024


def _template(fields: dict[str, Any]) -> _Template | None:
    """The template for these repeated values, or None when one is not plain text, a whole number,
    None or a list of text (that record takes canonical_json)."""
    key = []
    for k in _REPEATED:
        v = fields.get(k)
        kind = type(v)
        if kind is list:
            if not all(type(x) is str for x in v):
                return None
            v = ("list", *v)  # never equal to a text or number key
        elif kind is not str and kind is not int and v is not None:
            return None  # bool (hashes like 0/1 but encodes as true/false), float, dict, ...
        key.append(v)
    found = _TEMPLATES.get(tuple(key))
    if found is None:
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        scrubbed = scrubbed_record({k: fields.get(k) for k in _REPEATED})
        found = _TEMPLATES[tuple(key)] = _Template({k: scrubbed[k] for k in _REPEATED})
    return found


def _varying(value: Any) -> tuple[Any, bytes] | None:
    """A per-record value (consent_id, request_id, subject_pseudonym), scrubbed, and its JSON; None: not text."""
    if value is None:
        return None, b"null"
    if type(value) is not str:
        return None
    if not _id_free(value):  # not remembered as _clean does: these values rarely repeat
        value = REDACTED
    return value, _json_text(value)


def _template_parts(fields: dict[str, Any]):
    """(template, consent, request, subject) for a record a template can write, else None."""
    template = _template(fields)
    if template is None:
        return None
    consent = _varying(fields.get("consent_id"))
    request = _varying(fields.get("request_id"))
    subject = _varying(fields.get("subject_pseudonym"))
    if consent is None or request is None or subject is None:
        return None
    return template, consent, request, subject


def _fast_line(fields: dict[str, Any], seq: int, ts_text: bytes, ts: str, prev_hash: str):
    """(record, line, hash) from a template, or None when the record needs canonical_json."""
    parts = _template_parts(fields)
    if parts is None:
        return None
    template, consent, request, subject = parts
    prev = prev_hash.encode("ascii")
    prev_text = b'"' + prev + b'"' if prev_hash.isalnum() else _encode(prev_hash).encode("ascii")
    head = b'{"consent_id":' + consent[1] + template.after_consent
    tail = b"".join(
        (
            template.before_prev,
            prev_text,
            template.before_request,
            request[1],
            b',"seq":',
            str(seq).encode("ascii"),
            template.before_subject,
            subject[1],
            b',"ts":',
            ts_text,
            b"}",
        )
    )
    digest = hashlib.sha256(prev + head + tail).hexdigest()
    record = {
        **template.values,
        "consent_id": consent[0],
        "request_id": request[0],
        "subject_pseudonym": subject[0],
        "seq": seq,
        "ts": ts,
        "prev_hash": prev_hash,
        "hash": digest,
    }
    return record, head + b',"hash":"' + digest.encode("ascii") + b'"' + tail + b"\n", digest


# A record's canonical line cut where the chain values go (hash, prev_hash, seq, ts): four pieces
# joined by SEGMENT_SEP, which JSON text cannot hold raw (control characters are escaped in it).
SEGMENT_SEP = b"\x00"


def record_segments(fields: dict[str, Any]) -> bytes | None:
    """The record's canonical text around its chain values, scrubbed as chain() scrubs; None when it
    takes chain()'s general path. A worker makes these, so that the audit process, which alone knows
    seq, ts and the previous hash, joins and hashes bytes instead of parsing and re-serialising a record.
    """
    parts = _template_parts(fields)
    if parts is None:
        return None
    template, consent, request, subject = parts
    return SEGMENT_SEP.join(
        (
            b'{"consent_id":' + consent[1] + template.after_consent,
            template.before_prev,
            template.before_request + request[1] + b',"seq":',
            template.before_subject + subject[1] + b',"ts":',
        )
    )


def chain_lines(
    batch: list[dict[str, Any] | bytes], seq: int, prev_hash: str, ts: str | None = None
) -> tuple[list[bytes], int, str]:
    """chain() for a writer that needs only the lines: items are records' fields or their
    record_segments(); returns the lines and the new (seq, hash) of the tail."""
    lines: list[bytes] = []
    if ts is None:
        ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    ts_text = _encode(ts).encode("utf-8")
    end = ts_text + b"}"
    for item in batch:
        seq += 1
        if type(item) is bytes:
            head, before_prev, before_seq, before_ts = item.split(SEGMENT_SEP)
            prev = prev_hash.encode("ascii")
            prev_text = b'"' + prev + b'"' if prev_hash.isalnum() else _encode(prev_hash).encode("ascii")
            tail = b"".join((before_prev, prev_text, before_seq, str(seq).encode("ascii"), before_ts, end))
            prev_hash = hashlib.sha256(prev + head + tail).hexdigest()
            lines.append(head + b',"hash":"' + prev_hash.encode("ascii") + b'"' + tail + b"\n")
            continue
        _records, one = chain([item], seq - 1, prev_hash, ts)
        prev_hash = _records[0]["hash"]
        lines.append(one[0])
    return lines, seq, prev_hash


def _line_and_hash(record: dict[str, Any]) -> tuple[bytes, str]:
    """The record's log line and its hash, serialising it once instead of twice.

    ``hash`` sorts just before ``method``, which every record carries, and ``,"method":`` cannot
    occur earlier inside a JSON string (its quotes would be escaped), so the hashed body and the
    line differ only by the hash spliced in there.
    """
    body = canonical_json(record)
    digest = hashlib.sha256(record["prev_hash"].encode("ascii") + body).hexdigest()
    at = body.index(b',"method":')
    return body[:at] + b',"hash":"' + digest.encode("ascii") + b'"' + body[at:] + b"\n", digest


class _Pending:
    __slots__ = ("fields", "done", "record", "error", "loop", "future")

    def __init__(self, fields: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None):
        self.fields = fields
        self.loop = loop
        self.future: asyncio.Future | None = loop.create_future() if loop is not None else None
        self.done = threading.Event() if loop is None else None
        self.record: dict[str, Any] | None = None
        self.error: BaseException | None = None


def _settle(pending: list[_Pending]) -> None:
    """Runs in the waiting event loop: hand each awaiting request its record (or the failure)."""
    for p in pending:
        assert p.future is not None
        if p.future.done():  # the request was cancelled (client gone); its record is written anyway
            continue
        if p.error is not None:
            p.future.set_exception(AuditError(str(p.error)))
        else:
            p.future.set_result(p.record)


def chain(
    batch: list[dict[str, Any]], seq: int, prev_hash: str, ts: str | None = None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Scrub, number, timestamp and chain a batch onto (seq, prev_hash): the records and their lines."""
    records: list[dict[str, Any]] = []
    lines: list[bytes] = []
    # One time for the batch: its records are chained and written together, under one lock and one fsync.
    if ts is None:
        ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    ts_text = _encode(ts).encode("utf-8")
    for fields in batch:
        seq += 1
        fast = _fast_line(fields, seq, ts_text, ts, prev_hash)
        if fast is None:  # a value the templates do not take: the general path, same bytes
            record = scrubbed_record(fields)
            record["seq"] = seq
            record["ts"] = ts
            record["prev_hash"] = prev_hash
            line, prev_hash = _line_and_hash(record)
            record["hash"] = prev_hash
        else:
            record, line, prev_hash = fast
        records.append(record)
        lines.append(line)
    return records, lines


@dataclass(frozen=True)
class Search:
    """An access-log query; every filter is optional. ``paths``: only records of these routes."""

    subject_pseudonym: str | None = None
    consumer: str | None = None
    decision: str | None = None
    since: str | None = None  # ISO 8601 UTC text, compared as text like the records' ts
    until: str | None = None
    paths: tuple[str, ...] | None = None
    limit: int = 100

    def matches(self, rec: dict[str, Any]) -> bool:
        if self.subject_pseudonym is not None and rec.get("subject_pseudonym") != self.subject_pseudonym:
            return False
        if self.paths is not None and rec.get("path") not in self.paths:
            return False
        if self.consumer is not None and rec.get("consumer") != self.consumer:
            return False
        if self.decision is not None and rec.get("decision") != self.decision:
            return False
        ts = str(rec.get("ts", ""))
        return not ((self.since and ts < self.since) or (self.until and ts >= self.until))


class GroupCommitLog:
    """The append side shared by the backends: validation, group commit, waking the callers.

    A backend implements ``_write_batch`` (chain the batch onto the head and make it durable,
    atomically), ``search`` and ``verify``.
    """

    # Under load, batches start at most this often (seconds): while a batch's callers wait for its
    # fsync/commit anyway, the next batch fills instead of going out with one or two records, so
    # fewer syncs serve the same answers (CPU per answer drops). The first record after a quiet
    # spell is written at once. 0: each batch starts as soon as the previous one is durable.
    commit_interval = 0.0

    def __init__(self, group_commit: bool = False):
        self._group = group_commit
        # queue.SimpleQueue is C: a put is a fraction of a microsecond and wakes a blocked get without
        # the pure-Python Condition's lock, waiter list and notify on every request.
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._writer: threading.Thread | None = None

    def describe(self) -> str:
        raise NotImplementedError

    async def ready(self) -> str | None:
        """None when a record could be made durable now, else why not (the API's /readyz: a load
        balancer takes a replica that cannot audit out of rotation instead of sending it requests
        it can only refuse). Cheap enough to be asked every second or two."""
        return None

    def search(self, query: Search) -> list[dict[str, Any]]:
        """The newest ``query.limit`` matching records, newest first."""
        raise NotImplementedError

    def verify(self) -> VerifyResult:
        raise NotImplementedError

    def _write_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def append(self, **fields: Any) -> dict[str, Any]:
        """Chain one record onto the log and fsync it. Raises AuditError if that is impossible."""
        unknown = set(fields) - set(RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown audit record fields: {sorted(unknown)}")
        if not self._group:
            return self._write_batch([fields])[0]
        pending = _Pending(fields)
        self._enqueue(pending)
        assert pending.done is not None
        pending.done.wait()
        if pending.error is not None:
            raise AuditError(str(pending.error))
        assert pending.record is not None
        return pending.record

    async def append_async(self, **fields: Any) -> dict[str, Any]:
        """``append`` for an event loop: returns once the record is fsync'd, holding no thread meanwhile."""
        return await self.append_fields_async(fields)

    async def append_fields_async(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``append_async`` for a dict the caller made for it (it is not copied, not to be changed after)."""
        if not fields.keys() <= _FIELD_SET:
            raise ValueError(f"unknown audit record fields: {sorted(set(fields) - _FIELD_SET)}")
        if not self._group:
            return await asyncio.to_thread(self._write_one, fields)
        pending = _Pending(fields, asyncio.get_running_loop())
        self._enqueue(pending)
        assert pending.future is not None
        return await pending.future

    def _write_one(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self._write_batch([fields])[0]

    def _enqueue(self, pending: _Pending) -> None:
        writer = self._writer
        if writer is None or not writer.is_alive():
            with self._start_lock:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(target=self._run_writer, name="audit-writer", daemon=True)
                    self._writer.start()
        self._queue.put(pending)

    def _run_writer(self) -> None:
        started = 0.0
        while True:
            first = self._queue.get()  # blocks, without the GIL, until a record is queued
            pause = started + self.commit_interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            started = time.monotonic()
            batch = [first]
            try:
                while True:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                records = self._write_batch([p.fields for p in batch])
            except Exception as exc:  # noqa: BLE001 - never leave a waiting request hanging
                for p in batch:
                    p.error = exc
            else:
                for p, rec in zip(batch, records, strict=True):
                    p.record = rec
            by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
            for p in batch:
                if p.loop is None:
                    assert p.done is not None
                    p.done.set()
                else:
                    by_loop.setdefault(p.loop, []).append(p)
            for loop, waiting in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, waiting)  # one wake-up per loop and batch
                except RuntimeError:  # that loop has closed: nobody is waiting any more
                    pass


class AuditLog(GroupCommitLog):
    """The embedded default: a JSON-lines file, appended under flock and fsync'd."""

    def __init__(self, path: Path, group_commit: bool = False):
        super().__init__(group_commit)
        self.path = Path(path)
        self._fd: int | None = None
        self._fd_id: tuple[int, int] | None = None
        self._fd_lock = threading.Lock()
        # (file size, seq, hash) right after this process's last batch: while the size is still that,
        # no other writer appended since and the tail need not be read back and parsed again.
        self._tail: tuple[int, int, str] | None = None

    def describe(self) -> str:
        return str(self.path)

    async def ready(self) -> str | None:
        target = self.path if self.path.exists() else self.path.parent
        while not target.exists() and target != target.parent:  # created on the first append
            target = target.parent
        if not os.access(target, os.W_OK):
            return f"audit log {self.path} is not writable"
        return None

    def search(self, query: Search) -> list[dict[str, Any]]:
        found = [rec for rec in read_records(self.path) if query.matches(rec)]
        return found[-query.limit :][::-1]

    def verify(self) -> VerifyResult:
        return verify_chain(self.path)

    def _write_batch(self, batch: list[dict[str, Any]], lines_only: bool = False) -> list[dict[str, Any]]:
        """Chain batch onto the log and fsync it; the records, or with lines_only (items may be
        record_segments() too) none."""
        with self._fd_lock:  # flock excludes other processes; this, other threads sharing the descriptor
            try:
                fd = self._descriptor()
                if not _SYS.lock_now(fd):  # another process is writing: wait for it without the GIL
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    size = _SYS.size(fd)
                    tail = self._tail
                    if tail is not None and tail[0] == size:
                        offset, seq, prev_hash = tail
                    else:
                        seq, prev_hash, offset = _read_tail(fd, size)
                    self._tail = None  # until this batch is durable
                    if lines_only:
                        records: list[dict[str, Any]] = []
                        lines, seq, prev_hash = chain_lines(batch, seq, prev_hash)
                    else:
                        records, lines = chain(batch, seq, prev_hash)
                        seq, prev_hash = records[-1]["seq"], records[-1]["hash"]
                    if offset != size:  # a write torn by a crash: never answered, overwritten
                        _SYS.truncate(fd, offset)
                    data = b"".join(lines)
                    written = 0
                    while written < len(data):
                        written += _SYS.pwrite(fd, data[written:], offset + written)
                    os.fsync(fd)  # milliseconds: the one call of the batch that lets go of the GIL
                    self._tail = (offset + len(data), seq, prev_hash)
                finally:
                    _SYS.unlock(fd)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._close_descriptor()  # reopened (and re-checked) on the next batch
                raise AuditError(f"cannot append to audit log {self.path}: {exc}") from exc
        return records

    def _descriptor(self) -> int:
        """The log's descriptor, kept open between batches (opening it costs more than a batch's writes).

        Reopened when the path no longer names the open file (removed, moved or replaced): a stat per
        batch, not per record. A newly created log has its directory entry fsync'd too.
        """
        fd = self._fd
        if fd is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._fd_id:
                return fd
            self._close_descriptor()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if created:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        st = os.fstat(fd)
        self._fd, self._fd_id = fd, (st.st_dev, st.st_ino)
        return fd

    def _close_descriptor(self) -> None:
        self._tail = None
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd, self._fd_id = None, None

    def close(self) -> None:
        with self._fd_lock:
            self._close_descriptor()


def audit_dsn() -> str | None:
    """PostgreSQL audit backend URI: ZERODOC_AUDIT_DSN, else Airflow's AIRFLOW_CONN_ZERODOC_AUDIT."""
    return os.environ.get("ZERODOC_AUDIT_DSN") or os.environ.get("AIRFLOW_CONN_ZERODOC_AUDIT") or None


def default_log_path(state_dir: Path) -> Path:
    return Path(state_dir) / "audit" / "evidence.log"


def open_audit_log(state_dir: Path, group_commit: bool = False, dsn: str | None = None) -> GroupCommitLog:
    """The configured backend: PostgreSQL when a DSN is given or configured, else the local file."""
    dsn = dsn or audit_dsn()
    if dsn:
        from zerodoc.audit.pg import PostgresAuditLog

        return PostgresAuditLog(dsn, group_commit=group_commit)
    return AuditLog(default_log_path(state_dir), group_commit=group_commit)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record in the log, oldest first (a torn last line is skipped)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - generator keeps it open while iterating
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if line.endswith(b"\n"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad_seq: int | None
    message: str
    head_hash: str | None = None


def verify_chain(path: Path) -> VerifyResult:
    """Walk the log from the first record; report the first record that breaks the chain.

    ``first_bad_seq`` is the position (1-based) at which the chain breaks, which is the seq
    that record should have had: the edited record, or the place a record went missing.
    """
    path = Path(path)
    if not path.exists():
        return VerifyResult(False, 0, None, f"no audit log at {path}")
    prev_hash = GENESIS_HASH
    count = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            expected = count + 1
            if not line.endswith(b"\n"):
                return VerifyResult(
                    False, count, expected, f"line {lineno}: record {expected} is incomplete (torn write)"
                )
            try:
                rec = json.loads(line)
                seq, rec_prev, rec_hash = rec["seq"], rec["prev_hash"], rec["hash"]
            except (ValueError, KeyError, TypeError):
                return VerifyResult(
                    False, count, expected, f"line {lineno}: record {expected} is not a valid audit record"
                )
            if seq != expected:
                return VerifyResult(
                    False,
                    count,
                    expected,
                    f"line {lineno}: expected seq {expected}, found seq {seq} "
                    "(a record was removed, inserted or reordered)",
                )
            if rec_prev != prev_hash:
                return VerifyResult(
                    False,
                    count,
                    expected,
                    f"line {lineno}: record {seq} does not link to the previous record's hash",
                )
            if record_hash(rec) != rec_hash:
                return VerifyResult(False, count, expected, f"line {lineno}: record {seq} was modified (hash mismatch)")
            prev_hash = rec_hash
            count += 1
    return VerifyResult(True, count, None, f"chain intact: {count} records", head_hash=prev_hash)
