"""Hash-chained, append-only log of validation runs (`$ZERODOC_HOME/reports/validation-log.jsonl`).

Each JSON line carries ``seq``, ``prev_hash`` and ``hash = sha256(prev_hash + canonical(record
without hash))``: editing, removing, inserting or reordering a record breaks the chain at that
record. Removing the *last* records leaves a valid shorter chain, so ``verify_validation_log``
also checks the chain against the run reports on disk: every ``reports/validation/<run>/summary.json``
must have a record, and the newest record of a run must carry that summary's sha256 (an edited
report is caught too). Appends hold an exclusive ``fcntl.flock`` and read the tail under it, so
concurrent Airflow tasks extend one chain instead of forking it; each record is fsync'd.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

# One hash-chain definition for every tamper-evident log: the evidence audit log's.
from zerodoc.audit.log import GENESIS_HASH, canonical_json, record_hash

LOG_NAME = "validation-log.jsonl"

# The fields a caller supplies; seq, prev_hash, hash and recorded_at are added by `append_run`.
RUN_FIELDS = (
    "suite",
    "suite_version",
    "suite_hash",
    "run_id",
    "logical_date",
    "data_checksum",
    "extracted",
    "passed",
    "quarantined",
    "gate_passed",
    "report_path",
    "summary_sha256",
)


class ValidationLogError(RuntimeError):
    """The validation log could not be appended to."""


def log_path(reports_dir: Path) -> Path:
    return Path(reports_dir) / LOG_NAME


def _tail(fh: Any) -> tuple[int, str, int]:
    """(last seq, last hash, offset for the next record); bytes after the last newline are a torn
    write from a crash before fsync returned, so that run never completed and they are overwritten."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    pos, buf = end, b""
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        last_nl = buf.rfind(b"\n")
        if last_nl >= 0 and (buf.rfind(b"\n", 0, last_nl) >= 0 or pos == 0):
            start = buf.rfind(b"\n", 0, last_nl) + 1
            last = json.loads(buf[start:last_nl])
            return int(last["seq"]), str(last["hash"]), pos + last_nl + 1
    return 0, GENESIS_HASH, 0


def append_run(path: Path, **fields: Any) -> dict[str, Any]:
    """Append one validation run under an exclusive lock; returns the record as written."""
    unknown = set(fields) - set(RUN_FIELDS)
    missing = set(RUN_FIELDS) - set(fields)
    if unknown or missing:
        raise ValidationLogError(f"validation log record: unknown {sorted(unknown)}, missing {sorted(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            seq, prev_hash, offset = _tail(fh)
            record: dict[str, Any] = {"seq": seq + 1, "prev_hash": prev_hash, **fields}
            # When the run was recorded is an audit fact about the run, not data the task produces.
            record["recorded_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            record["hash"] = record_hash(record)
            fh.seek(offset)
            fh.truncate()
            fh.write(canonical_json(record) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return record


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head_hash: str
    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        if self.ok:
            return f"{self.records} validation records chain correctly and match the run reports"
        return "; ".join(self.problems)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_validation_log(path: Path, reports_dir: Path | None = None) -> VerifyResult:
    """Walk the chain from the first record, then check it against the run reports beside it.

    Reports: the first break in the chain (an edited, removed, inserted or reordered record), every
    run report without a record (e.g. the last records were cut off), and every run whose
    summary.json no longer matches the hash logged for it. `reports_dir` defaults to the log's folder.
    """
    path = Path(path)
    reports_dir = Path(reports_dir) if reports_dir else path.parent
    if not path.exists():
        return VerifyResult(False, 0, GENESIS_HASH, (f"no validation log at {path}",))
    problems: list[str] = []
    prev_hash, count = GENESIS_HASH, 0
    latest: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            expected = count + 1
            try:
                rec = json.loads(line)
                seq, rec_prev, rec_hash = rec["seq"], rec["prev_hash"], rec["hash"]
            except (ValueError, KeyError, TypeError):
                problems.append(f"line {lineno}: not a validation record (torn or edited)")
                break
            if seq != expected:
                problems.append(
                    f"line {lineno}: expected record {expected}, found {seq} (a record was removed, "
                    "inserted or reordered)"
                )
                break
            if rec_prev != prev_hash:
                problems.append(f"line {lineno}: record {seq} does not link to the record before it")
                break
            if record_hash(rec) != rec_hash:
                problems.append(f"line {lineno}: record {seq} ({rec.get('run_id')}) was edited (hash mismatch)")
                break
            prev_hash, count = rec_hash, expected
            latest[rec["run_id"]] = rec
    if not problems:
        for summary in sorted((reports_dir / "validation").glob("*/summary.json")):
            run_id = summary.parent.name
            rec = latest.get(run_id)
            if rec is None:
                problems.append(f"run {run_id} has a report but no record in the log (records removed?)")
            elif rec["summary_sha256"] != sha256_file(summary):
                problems.append(f"run {run_id}: {summary} differs from the summary logged in record {rec['seq']}")
    return VerifyResult(not problems, count, prev_hash, tuple(problems))


def validation_verify(
    path: Annotated[
        Path | None,
        typer.Argument(help="Validation log to check (default: $ZERODOC_HOME/reports/validation-log.jsonl)."),
    ] = None,
) -> None:
    """Verify the validation log's hash chain and that it covers every run report; exit 1 if not."""
    from zerodoc.config import settings

    result = verify_validation_log(path or log_path(settings().reports_dir))
    if not result.ok:
        typer.echo(f"BROKEN: {result.message}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"OK: {result.message}; head hash {result.head_hash}")
