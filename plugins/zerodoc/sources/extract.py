"""Extract one agency entity into the raw zone: one Parquet partition per logical date plus a manifest.

The same code reads PostgreSQL, MariaDB or the file stand-in; which one is decided by
configuration (`AIRFLOW_CONN_<CONN_ID>`), never by the caller. Output is ordered by the
entity key, so a rerun of the same logical date writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from zerodoc.catalog import Agency, Entity, agencies
from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.fsutil import staged_dir, write_json_atomic
from zerodoc.sources.watermarks import Window

ROW_GROUP = 122_880  # DuckDB's row-group size: larger groups parallelise scans well
FETCH_ROWS = 100_000
ARROW = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}


class SourceUnavailableError(RuntimeError):
    """The agency system could not be reached or read; the task should retry."""


class SourceDataError(RuntimeError):
    """The source answered, but with something that breaks its contract (after retries)."""

# REST: attempts per page and the first backoff (doubling); tests shorten them.
REST_ATTEMPTS = 5
REST_BACKOFF_S = 0.5
REST_TIMEOUT_S = 30.0
REST_PAGE_SIZE = 5000
# Clean CSV files go through Arrow's reader; off = always the exact line-by-line reader (tests).
CSV_FAST_PATH = True


@dataclass(frozen=True)
class ExtractResult:
    agency: str
    entity: str
    logical_date: str
    rows: int
    path: Path
    manifest_path: Path
    checksum: str
    source: str


def arrow_schema(entity: Entity) -> pa.Schema:
    return pa.schema([(c, ARROW[t]) for c, t in entity.columns.items()])


def raw_schema(entity: Entity) -> pa.Schema:
    """Declared columns; CSV entities add the line-provenance and parse-error columns."""
    schema = arrow_schema(entity)
    if entity.kind == "csv":
        from zerodoc.sources.csvdrop import META_FIELDS

        schema = pa.schema(list(schema) + [pa.field(n, t) for n, t in META_FIELDS])
    return schema


def connection_uri(conn_id: str) -> str | None:
    """Airflow's env convention, so the same setting serves Airflow tasks and the CLI."""
    return os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or None


def describe_source(agency: Agency, entity: Entity, cfg: Settings) -> str:
    uri = connection_uri(agency.conn_id)
    if entity.kind == "csv":
        return f"drop:{drop_root(agency, cfg) / entity.agency / entity.name}"
    if uri is None:
        return f"file:{stand_in_path(entity, cfg)}"
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path} table {entity.table}"


def stand_in_path(entity: Entity, cfg: Settings) -> Path:
    return cfg.sources_dir / entity.agency / f"{entity.name}.parquet"


# ---- readers: each yields record batches in the declared schema, ordered by the key ---------


def read_file(entity: Entity, cfg: Settings, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    path = stand_in_path(entity, cfg)
    if not path.exists():
        raise SourceUnavailableError(
            f"no stand-in file {path} for {entity.qualified}: run `zerodoc generate` first "
            f"or configure AIRFLOW_CONN_ for the agency server"
        )
    schema = arrow_schema(entity)
    # Streamed in the file's own (deterministic) order: memory stays flat at any scale.
    for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP, columns=list(entity.columns)):
        batch = batch.cast(schema)
        if window is not None:
            batch = batch.filter(window.mask(batch))
        yield batch


class _ChunkStream(io.RawIOBase):
    """A file-like view over an iterator of byte chunks (psycopg COPY output)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = bytes(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def read_postgres(entity: Entity, uri: str, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    """COPY ... TO STDOUT (CSV) streamed into Arrow's CSV reader: no row ever becomes a Python object."""
    import psycopg
    from psycopg import sql

    schema = arrow_schema(entity)
    cols = list(entity.columns)
    schema_name, table = entity.table.split(".", 1)
    where = sql.SQL("")
    if window is not None:
        cur_col = sql.Identifier(window.cursor)
        parts = [sql.SQL("{} <= {}").format(cur_col, sql.Literal(window.high))]
        if window.low is not None:
            parts.insert(0, sql.SQL("{} > {}").format(cur_col, sql.Literal(window.low)))
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)
    query = sql.SQL(
        "COPY (SELECT {cols} FROM {tbl}{where} ORDER BY {key}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        tbl=sql.Identifier(schema_name, table),
        where=where,
        key=sql.Identifier(entity.key),
    )
    try:
        with psycopg.connect(uri, connect_timeout=10) as conn, conn.cursor() as cur:
            with cur.copy(query) as copy:
                reader = pacsv.open_csv(
                    io.BufferedReader(_ChunkStream(iter(copy)), buffer_size=1 << 20),
                    read_options=pacsv.ReadOptions(column_names=cols, block_size=8 << 20),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types=schema,
                        null_values=["\\N"],
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                )
                yield from reader
    except psycopg.OperationalError as exc:
        raise SourceUnavailableError(f"PostgreSQL source for {entity.qualified} unavailable: {exc}") from exc


def read_mysql(entity: Entity, uri: str, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    """Server-side cursor, fetched in blocks and converted column-wise."""
    import pymysql
    import pymysql.cursors

    schema = arrow_schema(entity)
    cols = list(entity.columns)
    parts = urlsplit(uri)
    db_name, table = mysql_table(entity, uri)
    try:
        conn = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=db_name,
            charset="utf8mb4",
            cursorclass=pymysql.cursors.SSCursor,
            connect_timeout=10,
        )
    except pymysql.err.OperationalError as exc:
        raise SourceUnavailableError(f"MariaDB source for {entity.qualified} unavailable: {exc}") from exc
    try:
        with conn.cursor() as cur:
            col_sql = ", ".join(f"`{c}`" for c in cols)
            where, args = "", ()
            if window is not None:
                where, args = f" WHERE `{window.cursor}` <= %s", (window.high,)
                if window.low is not None:
                    where = f" WHERE `{window.cursor}` > %s AND `{window.cursor}` <= %s"
                    args = (window.low, window.high)
            cur.execute(f"SELECT {col_sql} FROM `{db_name}`.`{table}`{where} ORDER BY `{entity.key}`", args)
            while rows := cur.fetchmany(FETCH_ROWS):
                columns = list(zip(*rows, strict=True))
                yield pa.record_batch(
                    [pa.array(columns[i], type=schema.field(i).type) for i in range(len(cols))], schema=schema
                )
    except pymysql.err.OperationalError as exc:
        raise SourceUnavailableError(f"MariaDB source for {entity.qualified} failed mid-read: {exc}") from exc
    finally:
        conn.close()


def mysql_table(entity: Entity, uri: str) -> tuple[str, str]:
    """(database, table): a database named in the URI wins over the declared qualifier."""
    declared_db, table = entity.table.split(".", 1)
    return (urlsplit(uri).path.lstrip("/") or declared_db), table


def drop_root(agency: Agency, cfg: Settings) -> Path:
    """Where an agency drops CSV deliveries: a file:// connection, else $ZERODOC_HOME/sources/drop."""
    uri = connection_uri(agency.conn_id)
    if uri and urlsplit(uri).scheme == "file":
        return Path(unquote(urlsplit(uri).path))
    return cfg.sources_dir / "drop"


def delivery_dir(agency: Agency, entity: Entity, logical_date: str, cfg: Settings) -> Path:
    """The delivery a logical date reads: its own date's folder, else the latest one before it.

    Fixed by the logical date, never by the clock: a rerun reads the same folder.
    """
    base = drop_root(agency, cfg) / entity.agency / entity.name
    dated = sorted(p for p in base.glob("????-??-??") if p.is_dir() and p.name <= logical_date) if base.is_dir() else []
    if not dated:
        raise SourceUnavailableError(
            f"no delivery for {entity.qualified} on or before {logical_date} under {base} "
            f"(expected {base}/<YYYY-MM-DD>/*.csv)"
        )
    return dated[-1]


def read_csv_drop(agency: Agency, entity: Entity, logical_date: str, cfg: Settings,
                  stats: list | None = None) -> Iterator[pa.RecordBatch]:
    from zerodoc.sources.csvdrop import (
        DeliveryError,
        FileStats,
        detect_encoding,
        read_delivery_file,
        read_delivery_file_fast,
    )

    folder = delivery_dir(agency, entity, logical_date, cfg)
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise SourceUnavailableError(f"delivery folder {folder} holds no *.csv file")
    root = drop_root(agency, cfg)
    for path in files:
        rel = str(path.relative_to(root))
        st = FileStats(rel, "", sha256=sha256_file(path))
        if stats is not None:
            stats.append(st)
        try:
            fast = read_delivery_file_fast(path, rel, entity.columns, st) if CSV_FAST_PATH else None
            if fast is not None:
                yield from fast
            else:
                st.encoding = detect_encoding(path)
                yield from read_delivery_file(path, rel, entity.columns, entity.on_schema_drift, st)
        except DeliveryError as exc:
            raise SourceDataError(f"{entity.qualified}: {exc}") from exc


def read_rest(entity: Entity, base_url: str, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    """Keyset-paged JSON with retries (backoff) on 5xx, 429, timeouts, malformed or short pages."""
    import datetime as dt
    import json
    import time

    import httpx

    schema = arrow_schema(entity)
    url = f"{base_url.rstrip('/')}/v1/{entity.agency}/{entity.name}"
    ts_cols = [c for c, t in entity.columns.items() if t == "timestamp"]
    cursor: str | None = None
    seen = 0
    total = None
    page_no = 0
    with httpx.Client(timeout=REST_TIMEOUT_S) as client:
        while True:
            page_no += 1
            params = {"page_size": REST_PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
            if window is not None:
                params |= {"updated_until": window.high.isoformat()}
                if window.low is not None:
                    params |= {"updated_after": window.low.isoformat()}
            problem = ""
            for attempt in range(REST_ATTEMPTS):
                if attempt:
                    time.sleep(REST_BACKOFF_S * 2 ** (attempt - 1))
                try:
                    resp = client.get(url, params=params)
                except httpx.TimeoutException:
                    problem = f"timed out after {REST_TIMEOUT_S}s"
                    continue
                except httpx.TransportError as exc:
                    problem = f"connection failed: {exc}"
                    continue
                if resp.status_code == 429 or resp.status_code >= 500:
                    problem = f"HTTP {resp.status_code}"
                    continue
                if resp.status_code != 200:
                    raise SourceDataError(f"{entity.qualified}: {url} answered HTTP {resp.status_code}: "
                                          f"{resp.text[:200]}")
                try:
                    body = json.loads(resp.content)
                    data, nxt, page_total = body["data"], body["next_cursor"], int(body["total"])
                except (ValueError, KeyError, TypeError) as exc:
                    problem = f"malformed JSON ({type(exc).__name__}: {str(exc)[:120]})"
                    continue
                if nxt is not None and len(data) < REST_PAGE_SIZE:
                    problem = f"short page: {len(data)} rows of {REST_PAGE_SIZE} with more to come"
                    continue
                if nxt is None and seen + len(data) != page_total:
                    problem = f"short last page: {seen + len(data)} rows in all, the API announced {page_total}"
                    continue
                break
            else:
                transient = problem.startswith(("HTTP", "timed", "connection"))
                kind = SourceUnavailableError if transient else SourceDataError
                raise kind(f"REST source for {entity.qualified}: page {page_no} ({url} {params}) failed "
                           f"{REST_ATTEMPTS} times; last: {problem}")
            if total is None:
                total = page_total
            elif page_total != total:
                raise SourceDataError(f"{entity.qualified}: total changed mid-extract ({total} -> {page_total})")
            for row in data:
                for c in ts_cols:
                    if row.get(c) is not None:
                        row[c] = dt.datetime.fromisoformat(row[c])
            if data:
                try:
                    yield pa.RecordBatch.from_pylist(data, schema=schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise SourceDataError(
                        f"{entity.qualified}: page {page_no} breaks the declared types: {exc}") from exc
            seen += len(data)
            if nxt is None:
                break
            cursor = nxt
    if seen != total:
        raise SourceDataError(f"{entity.qualified}: got {seen} rows but the API announced {total}")


def read_entity(agency: Agency, entity: Entity, cfg: Settings, logical_date: str = "",
                stats: list | None = None, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    uri = connection_uri(agency.conn_id)
    if entity.kind == "csv":
        return read_csv_drop(agency, entity, logical_date, cfg, stats)
    if uri is None:
        return read_file(entity, cfg, window)
    if entity.kind == "rest":
        return read_rest(entity, uri, window)
    scheme = urlsplit(uri).scheme
    if scheme.startswith("postgres"):
        return read_postgres(entity, uri, window)
    if scheme.startswith(("mysql", "mariadb")):
        return read_mysql(entity, uri, window)
    raise SourceUnavailableError(f"{agency.conn_id}: unsupported connection scheme {scheme!r}")


# ---- writer -----------------------------------------------------------------------------------


def raw_partition(entity: Entity, logical_date: str, cfg: Settings) -> Path:
    return cfg.raw_dir / entity.agency / entity.name / f"ds={logical_date}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_kind(agency: Agency, entity: Entity) -> str:
    if entity.kind == "csv":
        return "csv"
    return "file" if connection_uri(agency.conn_id) is None else agency.kind


def extract(
    qualified: str, logical_date: str, cfg: Settings | None = None, mode: str | None = None
) -> ExtractResult:
    """Replace the raw partition of `logical_date` for one entity: a full snapshot, or in
    incremental mode the rows whose cursor lies in the logical date's fixed window."""
    from zerodoc.sources.watermarks import record_window, window_for

    cfg = cfg or load_settings()
    agency_code, name = qualified.split(".", 1)
    agency = agencies()[agency_code]
    entity = agency.entities[name]
    mode = mode or entity.mode
    window = None
    if mode == "incremental":
        if entity.cursor is None or entity.kind == "csv":
            raise SourceDataError(f"{qualified}: incremental mode needs a cursor column and a queryable source")
        window = window_for(entity, logical_date, cfg)
    schema = raw_schema(entity)
    final = raw_partition(entity, logical_date, cfg)
    rows = 0
    file_stats: list = []
    with staged_dir(final) as tmp:
        part = tmp / "part-0.parquet"
        with pq.ParquetWriter(part, schema, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in read_entity(agency, entity, cfg, logical_date, file_stats, window):
                if batch.schema != schema:
                    batch = batch.cast(schema)
                pending.append(batch)
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP:
                    table = pa.Table.from_batches(pending, schema)
                    full = (pending_rows // ROW_GROUP) * ROW_GROUP
                    writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP)
                    pending = table.slice(full).to_batches()
                    pending_rows -= full
                rows += batch.num_rows
            if pending_rows:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP)
        checksum = sha256_file(part)
        manifest = {
            "agency": agency.code,
            "entity": entity.name,
            "logical_date": logical_date,
            "rows": rows,
            "schema": [[f.name, str(f.type)] for f in schema],
            "checksum": checksum,
            "files": ["part-0.parquet"],
            "source": {"kind": source_kind(agency, entity),
                       "table": entity.table, "conn_id": agency.conn_id},
        }
        if entity.kind == "csv":
            manifest["source"]["files"] = [
                {"file": st.file, "encoding": st.encoding, "sha256": st.sha256, "records": st.records,
                 "parse_errors": st.parse_errors, "flagged": st.flagged}
                for st in file_stats
            ]
            manifest["parse_errors"] = sum(st.parse_errors for st in file_stats)
        if window is not None:
            manifest["window"] = window.as_dict()
        write_json_atomic(tmp / "_manifest.json", manifest)
    if window is not None:
        record_window(entity, logical_date, window, rows, checksum, cfg)
    return ExtractResult(
        agency.code, entity.name, logical_date, rows, final / "part-0.parquet", final / "_manifest.json",
        checksum, describe_source(agency, entity, cfg),
    )
