"""`zerodoc audit verify`: check the evidence audit log's hash chain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zerodoc.audit.log import verify_chain
from zerodoc.config import settings


def default_log_path() -> Path:
    return settings().state_dir / "audit" / "evidence.log"


def audit_verify(
    path: Annotated[
        Path | None,
        typer.Argument(help="Audit log to check (default: $ZERODOC_HOME/state/audit/evidence.log)."),
    ] = None,
) -> None:
    """Verify the audit log's hash chain; exit 1 naming the first bad record if it is broken."""
    result = verify_chain(path or default_log_path())
    if not result.ok:
        typer.echo(f"BROKEN: {result.message}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"OK: {result.message}; head hash {result.head_hash}")
