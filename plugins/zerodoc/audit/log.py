"""Append-only, hash-chained audit log (JSON lines) of every evidence API request.

Each record carries ``prev_hash`` and ``hash = sha256(prev_hash + canonical(record))`` where the
canonical record is every field except ``hash``. Editing, removing or reordering a record
breaks the chain at that record; ``verify_chain`` finds the first break. Truncating the tail
is only detectable against a head hash kept elsewhere (see ``VerifyResult.head_hash``).

Appends hold an exclusive ``fcntl.flock`` on the log file and read the tail under it, so
several API worker processes extend one chain instead of forking it; each record is
fsync'd before ``append`` returns, i.e. before the response leaves.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def _read_tail(fh) -> tuple[int, str, int]:
    """(last seq, last hash, byte offset where the next record goes), reading from the end.

    Bytes after the last newline are a write torn by a crash; that request was never
    answered (records are fsync'd before the response), so they are overwritten.
    """
    fh.seek(0, os.SEEK_END)
    pos = fh.tell()
    buf = b""
    last_nl = prev_nl = -1
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        last_nl = buf.rfind(b"\n")
        prev_nl = buf.rfind(b"\n", 0, last_nl) if last_nl > 0 else -1
        if prev_nl >= 0:
            break
    if last_nl < 0:
        return 0, GENESIS_HASH, 0
    last = json.loads(buf[prev_nl + 1 : last_nl])
    return int(last["seq"]), str(last["hash"]), pos + last_nl + 1


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, **fields: Any) -> dict[str, Any]:
        """Chain one record onto the log and fsync it. Raises AuditError if that is impossible."""
        unknown = set(fields) - set(RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown audit record fields: {sorted(unknown)}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    seq, prev_hash, offset = _read_tail(fh)
                    record: dict[str, Any] = {k: _scrub(fields.get(k)) for k in RECORD_FIELDS}
                    record["seq"] = seq + 1
                    record["ts"] = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
                    record["prev_hash"] = prev_hash
                    record["hash"] = record_hash(record)
                    fh.seek(offset)
                    fh.truncate()
                    fh.write(canonical_json(record) + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            if created:
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except (OSError, ValueError, KeyError) as exc:
            raise AuditError(f"cannot append to audit log {self.path}: {exc}") from exc
        return record


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
                return VerifyResult(
                    False, count, expected, f"line {lineno}: record {seq} was modified (hash mismatch)"
                )
            prev_hash = rec_hash
            count += 1
    return VerifyResult(True, count, None, f"chain intact: {count} records", head_hash=prev_hash)
