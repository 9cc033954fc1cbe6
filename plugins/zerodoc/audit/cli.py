"""`zerodoc audit verify`: check the evidence audit log (file or PostgreSQL) and the validation log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zerodoc.audit.log import AuditLog
from zerodoc.audit.log import default_log_path as _log_path
from zerodoc.audit.reader import configured_log
from zerodoc.config import settings


def default_log_path() -> Path:
    return _log_path(settings().state_dir)


def default_validation_log_path() -> Path:
    from zerodoc.audit.validation_log import log_path

    return log_path(settings().reports_dir)


def _check_evidence(path: Path | None, dsn: str | None = None) -> tuple[bool, str]:
    log = configured_log(settings().state_dir, path=path, dsn=dsn)
    if isinstance(log, AuditLog) and path is None and not log.path.exists():
        # A fresh home that has served no evidence yet; a log named on the command line must exist.
        return True, f"evidence log   {log.describe()}: no records yet (no evidence served)"
    result = log.verify()
    if not result.ok:
        return False, f"evidence log   {log.describe()}: BROKEN: {result.message}"
    return True, f"evidence log   {log.describe()}: OK: {result.message}; head hash {result.head_hash}"


def _check_validation(path: Path | None) -> tuple[bool, str]:
    from zerodoc.audit.validation_log import verify_validation_log

    log = path or default_validation_log_path()
    if path is None and not log.exists() and not any((log.parent / "validation").glob("*/summary.json")):
        return True, f"validation log {log}: no records yet (no validation runs)"
    # Without a log but with run reports this reports the log as missing, as it should.
    result = verify_validation_log(log)
    if not result.ok:
        return False, f"validation log {log}: BROKEN: {result.message}"
    return True, f"validation log {log}: OK: {result.message}; head hash {result.head_hash}"


def audit_verify(
    path: Annotated[
        Path | None,
        typer.Argument(help="Evidence audit log to check (default: $ZERODOC_HOME/state/audit/evidence.log)."),
    ] = None,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="PostgreSQL audit log to check (default: $ZERODOC_AUDIT_DSN or $AIRFLOW_CONN_ZERODOC_AUDIT "
            "when set and no PATH is given).",
        ),
    ] = None,
    validation_log: Annotated[
        Path | None,
        typer.Option(
            "--validation-log",
            help="Validation log to check (default: $ZERODOC_HOME/reports/validation-log.jsonl).",
        ),
    ] = None,
) -> None:
    """Verify both hash chains (evidence served, validation runs); one line per log, exit 1 if either is broken."""
    broken = False
    for ok, line in (_check_evidence(path, dsn), _check_validation(validation_log)):
        typer.echo(line, err=not ok)
        broken = broken or not ok
    if broken:
        raise typer.Exit(code=1)
