"""The evidence audit log in PostgreSQL: the same hash chain as the local file, one row per record.

Selected by ZERODOC_AUDIT_DSN or AIRFLOW_CONN_ZERODOC_AUDIT (see ``zerodoc.audit.log.open_audit_log``).

One chain, extended under a transaction-scoped advisory lock. Every worker process runs the
group commit of ``GroupCommitLog``: its writer thread takes a batch of waiting requests and
calls ``zerodoc_audit.append_batch`` once. That one statement takes ``pg_advisory_xact_lock``,
reads the head (seq, hash) by primary key, chains and inserts the batch (``sha256`` in the
server, over the same canonical JSON this package hashes) and commits: one round trip. Callers
are released only after it returns, i.e. after COMMIT (``synchronous_commit = on`` for the
session, so the WAL is flushed): durable before the answer leaves. The lock is why several
uvicorn workers (and API replicas) keep one gap-free chain; it is held for one statement and its
commit per batch, and batches grow when workers wait for it, as for the file's ``flock``
(docs/api.md has the measured cost). Per-writer chains would need no lock, but then a deleted
tail of one writer's chain hides among the others', seq stops being a total order for the access
log, and the verifier must trust a list of writers: one chain is simpler to check and to explain.

``record`` holds the record's canonical JSON (the bytes the hash covers); the other columns are
copies for indexed access-log queries, and ``verify`` checks that they agree with it. Triggers
refuse UPDATE, DELETE and TRUNCATE (defence in depth: grant the API's role INSERT and SELECT
only); whoever can bypass them (a superuser) still cannot edit a row without ``verify`` finding it.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zerodoc.audit.log import (
    GENESIS_HASH,
    AuditError,
    GroupCommitLog,
    Search,
    VerifyResult,
    canonical_json,
    record_hash,
    scrubbed_record,
)

SCHEMA = "zerodoc_audit"
TABLE = f"{SCHEMA}.evidence_log"
# pg_advisory_xact_lock keys: one for extending the chain, one for creating the schema.
CHAIN_LOCK = 0x5A44_4155_4449_5401  # "ZDAUDIT" + 1
DDL_LOCK = 0x5A44_4155_4449_5402
INDEXED = ("ts", "subject_pseudonym", "consumer", "decision", "path")
APPEND = f"{SCHEMA}.append_batch"
APPEND_SQL = f"SELECT first_seq, head_hash, hashes FROM {APPEND}(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
SENTINEL = "P" * 64  # stands for prev_hash while a record's text is cut into its parts

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
-- Lock, head, chain and insert a batch in one statement, i.e. one round trip and one commit.
-- Record i's canonical JSON is x1 || x2 || prev_hash || y || seq || z (see _parts), its hash is
-- sha256(prev_hash || that), and the stored text has ',"hash":"<hash>"' spliced in after x1:
-- exactly what zerodoc.audit.log computes, so verify() checks both backends alike.
CREATE OR REPLACE FUNCTION {APPEND}(
    p_x1 text[], p_x2 text[], p_y text[], p_z text[],
    p_ts text[], p_subject text[], p_consumer text[], p_decision text[], p_path text[]
) RETURNS TABLE (first_seq bigint, head_hash text, hashes text[]) LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
    prev text;
    h text;
    hs text[] := '{{}}';
BEGIN
    PERFORM pg_advisory_xact_lock({CHAIN_LOCK});
    SELECT t.seq, t.hash INTO s, prev FROM {TABLE} AS t ORDER BY t.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        s := 0;
        prev := repeat('0', 64);
    END IF;
    first_seq := s + 1;
    head_hash := prev;
    FOR i IN 1 .. coalesce(array_length(p_x1, 1), 0) LOOP
        s := s + 1;
        h := encode(sha256(convert_to(prev || p_x1[i] || p_x2[i] || prev || p_y[i] || s || p_z[i], 'UTF8')), 'hex');
        INSERT INTO {TABLE} (seq, ts, subject_pseudonym, consumer, decision, path, hash, record)
        VALUES (s, p_ts[i], p_subject[i], p_consumer[i], p_decision[i], p_path[i], h,
                p_x1[i] || ',"hash":"' || h || '"' || p_x2[i] || prev || p_y[i] || s || p_z[i]);
        hs := hs || h;
        prev := h;
    END LOOP;
    hashes := hs;
    RETURN NEXT;
END $$;
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


READY_TIMEOUT_SECONDS = 2.0
READY_CACHE_SECONDS = 1.0


def connect(dsn: str):
    import psycopg

    conn = psycopg.connect(libpq_uri(dsn), autocommit=True, connect_timeout=10)
    # Released callers were promised a durable record: never let a role default weaken that.
    conn.execute("SET synchronous_commit = on")
    return conn


def table_exists(conn) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0])


def schema_ready(conn) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regproc(%s) IS NOT NULL", (TABLE, APPEND))
    return bool(row.fetchone()[0])


def ensure_schema(conn) -> None:
    """Create the table, triggers and function once; a role with only INSERT and SELECT never gets here."""
    if schema_ready(conn):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        conn.execute(DDL)


def _parts(record: dict[str, Any]) -> tuple[str, str, str, str]:
    """(x1, x2, y, z): the record's canonical JSON is x1 + x2 + prev_hash + y + str(seq) + z.

    Keys sort as ... fields < hash < method < ... < prev_hash < ... < seq < status ..., and a
    key's quoted name followed by a colon cannot occur inside a JSON string (its quotes would be
    escaped), so each cut point occurs once. Every part is cut at an ASCII byte: valid UTF-8.
    """
    body = canonical_json({**record, "seq": 0, "prev_hash": SENTINEL}).decode("utf-8")
    prev_at = body.index('"prev_hash":"' + SENTINEL + '"') + len('"prev_hash":"')
    seq_at = body.index(',"seq":0,') + len(',"seq":')
    method_at = body.index(',"method":')
    return body[:method_at], body[method_at:prev_at], body[prev_at + len(SENTINEL) : seq_at], body[seq_at + 1 :]


class PostgresAuditLog(GroupCommitLog):
    def __init__(self, dsn: str, group_commit: bool = False):
        super().__init__(group_commit)
        self.dsn = dsn
        self._conn = None
        self._conn_lock = threading.Lock()
        self._ready: str | None = None
        self._ready_at = float("-inf")

    def describe(self) -> str:
        return redacted(self.dsn)

    async def ready(self) -> str | None:
        """A round trip on a connection of its own (the writer's may be mid-batch), 2 s at most;
        the answer is reused for a second, so several checkers cost one query."""
        import asyncio

        now = time.monotonic()
        if now - self._ready_at < READY_CACHE_SECONDS:
            return self._ready
        try:
            await asyncio.wait_for(asyncio.to_thread(self._ping), timeout=READY_TIMEOUT_SECONDS)
            self._ready = None
        except TimeoutError:
            self._ready = f"audit database {self.describe()} did not answer within {READY_TIMEOUT_SECONDS:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure means: not ready, and why
            self._ready = f"audit database {self.describe()} cannot be reached: {type(exc).__name__}"
        self._ready_at = time.monotonic()
        return self._ready

    def _ping(self) -> None:
        import psycopg

        with psycopg.connect(libpq_uri(self.dsn), autocommit=True,
                             connect_timeout=int(READY_TIMEOUT_SECONDS)) as conn:
            conn.execute("SELECT 1")

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
                ts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
                records, columns = [], [[] for _ in range(9)]
                for fields in batch:
                    record = scrubbed_record(fields)
                    record["ts"] = ts
                    records.append(record)
                    for column, value in zip(
                        columns, (*_parts(record), *(record.get(k) for k in INDEXED)), strict=True
                    ):
                        column.append(value)
                conn = self._connection()
                # One statement in autocommit: it returns after its COMMIT (WAL flushed).
                first_seq, prev_hash, hashes = conn.execute(APPEND_SQL, columns).fetchone()
            except (psycopg.Error, OSError, ValueError, KeyError, TypeError) as exc:
                self._drop_connection()
                raise AuditError(f"cannot append to audit log {self.describe()}: {exc}") from exc
        for i, (record, digest) in enumerate(zip(records, hashes, strict=True)):
            record.update(seq=first_seq + i, prev_hash=prev_hash, hash=digest)
            prev_hash = digest
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
