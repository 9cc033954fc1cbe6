"""The evidence audit log in PostgreSQL: the same hash chain as the local file, one row per record.

Selected by ZERODOC_AUDIT_DSN or AIRFLOW_CONN_ZERODOC_AUDIT (see ``zerodoc.audit.log.open_audit_log``).

One chain, extended under a transaction-scoped advisory lock. Every worker process runs the
group commit of ``GroupCommitLog``: its writer thread takes a batch of waiting requests and, in
one transaction, takes ``pg_advisory_xact_lock``, reads the head (seq, hash) by primary key,
inserts the batch chained onto it and commits. Callers are released only after COMMIT returns
(``synchronous_commit = on`` for the session, so the WAL is flushed): durable before the answer
leaves. The lock is why several uvicorn workers (and API replicas) keep one gap-free chain; it
is held for two round trips and one commit per batch, and batches grow when workers wait for it,
as they do for the file's ``flock`` (docs/api.md has the measured cost: about half the file's
throughput on a saturated 2-core machine). Per-writer chains would need no lock,
but then a deleted tail of one writer's chain hides among the others', seq stops being a total
order for the access log, and the verifier must trust a list of writers: one chain is simpler to
check and to explain.

``record`` holds the record's canonical JSON (the bytes the hash covers); the other columns are
copies for indexed access-log queries, and ``verify`` checks that they agree with it. Triggers
refuse UPDATE, DELETE and TRUNCATE (defence in depth: grant the API's role INSERT and SELECT
only); whoever can bypass them (a superuser) still cannot edit a row without ``verify`` finding it.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zerodoc.audit.log import (
    GENESIS_HASH,
    AuditError,
    GroupCommitLog,
    Search,
    VerifyResult,
    chain,
    record_hash,
)

SCHEMA = "zerodoc_audit"
TABLE = f"{SCHEMA}.evidence_log"
# pg_advisory_xact_lock keys: one for extending the chain, one for creating the schema.
CHAIN_LOCK = 0x5A44_4155_4449_5401  # "ZDAUDIT" + 1
DDL_LOCK = 0x5A44_4155_4449_5402
INDEXED = ("ts", "subject_pseudonym", "consumer", "decision", "path")
# One simple-query string (no parameters): BEGIN, the chain lock and the head in one round trip.
LOCK_AND_HEAD_SQL = (
    f"BEGIN; SELECT pg_advisory_xact_lock({CHAIN_LOCK}); SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1"
)
INSERT_SQL = (
    f"INSERT INTO {TABLE} (seq, {', '.join(INDEXED)}, hash, record) "
    "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[])"
)

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq bigint PRIMARY KEY,
    ts text COLLATE "C" NOT NULL,
    subject_pseudonym text,
    consumer text,
    decision text,
    path text,
    hash text NOT NULL,
    record text NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_log_subject ON {TABLE} (subject_pseudonym, seq);
CREATE INDEX IF NOT EXISTS evidence_log_consumer ON {TABLE} (consumer, seq);
CREATE OR REPLACE FUNCTION {SCHEMA}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the evidence audit log is append-only (% refused)', TG_OP;
END $$;
CREATE OR REPLACE TRIGGER evidence_log_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.refuse_change();
CREATE OR REPLACE TRIGGER evidence_log_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.refuse_change();
"""


def libpq_uri(dsn: str) -> str:
    """Accept Airflow/SQLAlchemy spellings (postgres://, postgresql+psycopg2://) as well as libpq's."""
    scheme, _, rest = dsn.partition("://")
    if rest and scheme.split("+", 1)[0] in ("postgres", "postgresql"):
        return "postgresql://" + rest
    return dsn


def redacted(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(libpq_uri(dsn))
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(dsn: str):
    import psycopg

    conn = psycopg.connect(libpq_uri(dsn), autocommit=True, connect_timeout=10)
    # Released callers were promised a durable record: never let a role default weaken that.
    conn.execute("SET synchronous_commit = on")
    return conn


def table_exists(conn) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0])


def ensure_schema(conn) -> None:
    """Create the table and its triggers once; a role with only INSERT and SELECT never gets here."""
    if table_exists(conn):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(DDL)


class PostgresAuditLog(GroupCommitLog):
    def __init__(self, dsn: str, group_commit: bool = False):
        super().__init__(group_commit)
        self.dsn = dsn
        self._conn = None
        self._conn_lock = threading.Lock()

    def describe(self) -> str:
        return redacted(self.dsn)

    def _connection(self):
        if self._conn is None or self._conn.closed:
            conn = connect(self.dsn)
            ensure_schema(conn)
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - it is already broken; a new one is made next time
                pass
        self._conn = None

    def _write_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import psycopg

        with self._conn_lock:
            try:
                conn = self._connection()
                # Two round trips while the lock is held: begin+lock+head, then insert+commit.
                cur = conn.execute(LOCK_AND_HEAD_SQL)
                while cur.nextset():  # to the last statement's result: the head
                    pass
                head = cur.fetchone()
                seq, prev_hash = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
                records, lines = chain(batch, seq, prev_hash)
                params = (
                    [r["seq"] for r in records],
                    *([r.get(k) for r in records] for k in INDEXED),
                    [r["hash"] for r in records],
                    [line[:-1].decode("utf-8") for line in lines],
                )
                # INSERT and COMMIT leave together (pipeline mode): one more round trip, not two.
                # Leaving the block waits for both results and raises if either failed.
                with conn.pipeline():
                    conn.execute(INSERT_SQL, params)
                    conn.execute("COMMIT")
            except (psycopg.Error, OSError, ValueError, KeyError, TypeError) as exc:
                self._drop_connection()
                raise AuditError(f"cannot append to audit log {self.describe()}: {exc}") from exc
        return records

    def search(self, query: Search) -> list[dict[str, Any]]:
        where, params = [], []
        for column, value in (
            ("subject_pseudonym", query.subject_pseudonym),
            ("consumer", query.consumer),
            ("decision", query.decision),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.paths is not None:
            where.append("path = ANY(%s)")
            params.append(list(query.paths))
        if query.since:
            where.append("ts >= %s")
            params.append(query.since)
        if query.until:
            where.append("ts < %s")
            params.append(query.until)
        sql = f"SELECT record FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT %s"
        params.append(query.limit)
        with connect(self.dsn) as conn:
            if not table_exists(conn):
                return []  # nothing was ever recorded here
            rows = conn.execute(sql, params).fetchall()
        return [json.loads(r[0]) for r in rows]

    def verify(self) -> VerifyResult:
        """Walk the table by seq: gap-free seq, each record links to the previous hash and hashes to its own."""
        import psycopg

        where = self.describe()
        try:
            with connect(self.dsn) as conn:
                if not table_exists(conn):
                    return VerifyResult(False, 0, None, f"no audit table {TABLE} in {where}")
                conn.autocommit = False
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                with conn.cursor(name="zerodoc_audit_verify") as cur:
                    cur.itersize = 10_000
                    cur.execute(f"SELECT seq, {', '.join(INDEXED)}, hash, record FROM {TABLE} ORDER BY seq")
                    return _walk(cur)
        except psycopg.Error as exc:
            return VerifyResult(False, 0, None, f"cannot read audit log {where}: {exc}")


def _walk(rows) -> VerifyResult:
    prev_hash = GENESIS_HASH
    count = 0
    for seq, *indexed, row_hash, text in rows:
        expected = count + 1
        if seq != expected:
            return VerifyResult(
                False,
                count,
                expected,
                f"expected seq {expected}, found seq {seq} (a record was removed or inserted)",
            )
        try:
            rec = json.loads(text)
            rec_seq, rec_prev, rec_hash = rec["seq"], rec["prev_hash"], rec["hash"]
        except (ValueError, KeyError, TypeError):
            return VerifyResult(False, count, expected, f"record {seq} is not a valid audit record")
        if rec_seq != seq:
            return VerifyResult(False, count, expected, f"record {seq} carries seq {rec_seq} (moved)")
        if rec_prev != prev_hash:
            return VerifyResult(False, count, expected, f"record {seq} does not link to the previous record's hash")
        if record_hash(rec) != rec_hash or row_hash != rec_hash:
            return VerifyResult(False, count, expected, f"record {seq} was modified (hash mismatch)")
        for column, value in zip(INDEXED, indexed, strict=True):
            if rec.get(column) != value:
                return VerifyResult(
                    False, count, expected, f"record {seq}: column {column} disagrees with the hashed record"
                )
        prev_hash = rec_hash
        count += 1
    return VerifyResult(True, count, None, f"chain intact: {count} records", head_hash=prev_hash)
