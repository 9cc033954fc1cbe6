"""The auditors' read side of the evidence audit log, on the backend the API writes to.

``configured_log`` is the one choice of log that ``zerodoc audit verify`` and the auditor pages
make, on top of ``open_audit_log`` (PostgreSQL when ZERODOC_AUDIT_DSN / AIRFLOW_CONN_ZERODOC_AUDIT
is set, else the local file), so the pages show and verify what /v1/access-log serves.
``browse`` answers the pages' filters (consumer, purpose, dataset, day) with a total count,
which the API's ``Search`` does not offer; chain checks are the backend's own ``verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerodoc.audit.log import AuditError, AuditLog, GroupCommitLog, open_audit_log, read_records


def configured_log(state_dir: Path, path: Path | None = None, dsn: str | None = None) -> GroupCommitLog:
    """An explicit DSN, else an explicit log file, else the backend the API is configured with."""
    if path is not None and not dsn:
        return AuditLog(path)
    return open_audit_log(state_dir, dsn=dsn)


@dataclass(frozen=True)
class Browse:
    """Exact-match filters (all optional); ``date`` is a YYYY-MM-DD prefix of the UTC timestamp."""

    consumer: str | None = None
    purpose: str | None = None
    dataset: str | None = None
    date: str | None = None
    limit: int = 500

    def matches(self, rec: dict[str, Any]) -> bool:
        return (
            (not self.consumer or rec.get("consumer") == self.consumer)
            and (not self.purpose or rec.get("purpose") == self.purpose)
            and (not self.dataset or rec.get("dataset") == self.dataset)
            and (not self.date or str(rec.get("ts", "")).startswith(self.date))
        )


def browse(log: GroupCommitLog, query: Browse) -> tuple[list[dict[str, Any]], int]:
    """(the newest ``query.limit`` matching records, newest first; how many match in all).

    Raises AuditError when the log cannot be read (e.g. PostgreSQL is down).
    """
    from zerodoc.audit.pg import PostgresAuditLog

    if isinstance(log, PostgresAuditLog):
        return _browse_postgres(log, query)
    if isinstance(log, AuditLog):
        matched = [rec for rec in read_records(log.path) if query.matches(rec)]
        return matched[-query.limit :][::-1] if query.limit else [], len(matched)
    raise TypeError(f"no auditor view for {type(log).__name__}")


def unreadable(log: GroupCommitLog) -> str | None:
    """Why the log cannot be read at all (PostgreSQL unreachable or refusing us), else None.

    A chain check that cannot connect is an outage, not a broken chain; callers say which.
    A missing log file is left to ``verify``, which reports it.
    """
    from zerodoc.audit.pg import PostgresAuditLog

    if not isinstance(log, PostgresAuditLog):
        return None
    import psycopg

    from zerodoc.audit.pg import connect

    try:
        with connect(log.dsn) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot read audit log {log.describe()}: {exc}"
    return None


def _browse_postgres(log: Any, query: Browse) -> tuple[list[dict[str, Any]], int]:
    import psycopg

    from zerodoc.audit.pg import TABLE, connect, table_exists

    # consumer is an indexed column; purpose and dataset live only in the hashed record text.
    where, params = ["TRUE"], []
    if query.consumer:
        where.append("consumer = %s")
        params.append(query.consumer)
    for key in ("purpose", "dataset"):
        value = getattr(query, key)
        if value:
            where.append(f"(record::jsonb ->> '{key}') = %s")
            params.append(value)
    if query.date:
        where.append("starts_with(ts, %s)")
        params.append(query.date)
    cond = " AND ".join(where)
    try:
        with connect(log.dsn) as conn:
            if not table_exists(conn):
                return [], 0  # nothing was ever recorded here
            conn.autocommit = False
            # Count and page from one snapshot, so the total agrees with the rows shown.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            total = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE {cond}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT record FROM {TABLE} WHERE {cond} ORDER BY seq DESC LIMIT %s", [*params, query.limit]
            ).fetchall()
    except psycopg.Error as exc:
        raise AuditError(f"cannot read audit log {log.describe()}: {exc}") from exc
    return [json.loads(r[0]) for r in rows], int(total)
