"""Extract one agency entity into the raw zone: one Parquet partition per logical date plus a manifest.

The same code reads PostgreSQL, MariaDB or the file stand-in; which one is decided by
configuration (`AIRFLOW_CONN_<CONN_ID>`), never by the caller. Output is ordered by the
entity key, so a rerun of the same logical date writes byte-identical files.
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import threading
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
# zstd level 1: on 1M MOIS residents it wrote 24 MB where snappy wrote 38 MB, for ~the same time.
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 1
SINK_BUFFER_BYTES = 4 << 20
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
    mode: str = "full"  # full snapshot or incremental window
    mode_reason: str = ""


def arrow_schema(entity: Entity) -> pa.Schema:
    return pa.schema([(c, ARROW[t]) for c, t in entity.columns.items()])


def raw_schema(entity: Entity, windowed: bool = False) -> pa.Schema:
    """Declared columns; CSV and REST entities add their provenance and parse-error columns, and
    entities with a soft-delete column, or any incremental window, the row's operation `_op` (OP_FIELD):
    staging must tell a window from a snapshot to know whether an absent key was deleted."""
    schema = arrow_schema(entity)
    if entity.kind == "csv":
        from zerodoc.sources.csvdrop import META_FIELDS

        schema = pa.schema(list(schema) + [pa.field(n, t) for n, t in META_FIELDS])
    if entity.kind == "rest":
        schema = pa.schema(list(schema) + [pa.field(n, t) for n, t in REST_META_FIELDS])
    if entity.deleted_column is not None or windowed:
        schema = schema.append(pa.field(OP_FIELD, pa.string()))
    return schema


# `_op` of each raw row: a live row of a full snapshot, a changed row of an incremental window, or
# a tombstone (the soft-delete column is set). Staging deletes tombstoned keys, and only a
# partition holding snapshot rows may delete keys that are simply absent from it.
OP_FIELD = "_op"
OP_SNAPSHOT, OP_UPSERT, OP_DELETE = "snapshot", "upsert", "delete"


def with_ops(batches: Iterator[pa.RecordBatch], entity: Entity, snapshot: bool) -> Iterator[pa.RecordBatch]:
    """Append `_op`; a tombstone keeps only its key, cursor and deletion mark, the rest NULL: a
    cancelled record's personal data goes no further than the source (nor can it fail a check)."""
    import pyarrow.compute as pc

    kept = {entity.key, entity.cursor, entity.deleted_column}
    live = OP_SNAPSHOT if snapshot else OP_UPSERT
    for batch in batches:
        if entity.deleted_column is None:  # a window of an entity without soft deletes: all live
            yield batch.append_column(OP_FIELD, pa.array([live] * batch.num_rows, pa.string()))
            continue
        mark = batch.column(batch.schema.get_field_index(entity.deleted_column))
        deleted = pc.fill_null(mark, False) if pa.types.is_boolean(mark.type) else pc.is_valid(mark)
        if pc.any(deleted).as_py():
            columns = [col if name in kept or name.startswith("_") else
                       pc.if_else(deleted, pa.scalar(None, col.type), col)
                       for name, col in zip(batch.schema.names, batch.columns, strict=True)]
            batch = pa.record_batch(columns, schema=batch.schema)
        ops = pc.if_else(deleted, OP_DELETE, live)
        yield batch.append_column(OP_FIELD, ops.cast(pa.string()))


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

    def batches() -> Iterator[pa.RecordBatch]:
        # Streamed in the file's own (deterministic) order: memory stays flat at any scale.
        for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP, columns=list(entity.columns)):
            batch = batch.cast(schema)
            if window is not None:
                batch = batch.filter(window.mask(batch))
            yield batch

    # Decoding the file overlaps the Parquet writer (read_postgres overlaps its COPY in its own thread).
    return read_ahead(batches(), READ_AHEAD_BATCHES, f"read-{entity.qualified}")


# COPY rows are gathered into blocks this large before Arrow parses them: few, big parse calls.
COPY_BLOCK_BYTES = 8 << 20
COPY_QUEUE_BLOCKS = 3  # blocks in flight between the draining thread and the parser (memory bound)


def _copy_query(entity: Entity, window: Window | None):
    from psycopg import sql

    schema_name, table = entity.table.split(".", 1)
    where = sql.SQL("")
    if window is not None:
        cur_col = sql.Identifier(window.cursor)
        parts = [sql.SQL("{} <= {}").format(cur_col, sql.Literal(window.high))]
        if window.read_low is not None:
            parts.insert(0, sql.SQL("{} > {}").format(cur_col, sql.Literal(window.read_low)))
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)
    return sql.SQL(
        "COPY (SELECT {cols} FROM {tbl}{where} ORDER BY {key}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in entity.columns),
        tbl=sql.Identifier(schema_name, table),
        where=where,
        key=sql.Identifier(entity.key),
    )


# information_schema.columns.data_type values each declared type reads without loss.
PG_COMPATIBLE = {
    "int32": {"integer", "smallint"},
    "int64": {"bigint", "integer", "smallint"},
    "string": {"text", "character varying", "character"},
    "timestamp": {"timestamp without time zone"},
    "date": {"date"},
    "float64": {"double precision", "real", "numeric"},
    "bool": {"boolean"},
}


MYSQL_COMPATIBLE = {
    "int32": {"int", "mediumint", "smallint", "tinyint"},
    "int64": {"bigint", "int", "mediumint", "smallint", "tinyint"},
    "string": {"varchar", "char", "text", "tinytext", "mediumtext", "longtext"},
    "timestamp": {"datetime", "timestamp"},
    "date": {"date"},
    "float64": {"double", "float", "decimal"},
    "bool": {"tinyint"},
}


def schema_drift(entity: Entity, actual: dict[str, str], compatible: dict[str, set[str]]) -> str | None:
    """What differs between the declared columns and the source's {column: type}, or None.

    A missing or retyped declared column always fails (no row could be read in the declared
    contract); a new column fails under `on_schema_drift: fail` and is left out otherwise (the
    extract selects declared columns only).
    """
    missing = [c for c in entity.columns if c not in actual]
    retyped = [f"{c} (declared {t}, source {actual[c]})" for c, t in entity.columns.items()
               if c in actual and actual[c] not in compatible[t]]
    extra = [c for c in actual if c not in entity.columns]
    parts = [f"missing column(s) {', '.join(missing)}" if missing else "",
             f"retyped column(s) {', '.join(retyped)}" if retyped else "",
             f"new column(s) {', '.join(extra)}" if extra and entity.on_schema_drift == "fail" else ""]
    detail = "; ".join(p for p in parts if p)
    if not detail:
        return None
    return f"{entity.qualified}: schema drift against config/sources.yml in {entity.table}: {detail} " \
           f"(policy: {entity.on_schema_drift})"


def _postgres_columns(conn, entity: Entity) -> dict[str, str]:
    schema_name, table = entity.table.split(".", 1)
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (schema_name, table),
    ).fetchall()
    if not rows:
        raise SourceDataError(f"{entity.qualified}: table {entity.table} not found in the source database")
    return dict(rows)


def put_unless_stopped(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` on a bounded queue, waiting for room until `stop` is set (the consumer has gone);
    False when it was not put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def read_postgres(entity: Entity, uri: str, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    """COPY ... TO STDOUT (CSV) drained by a thread into multi-MiB blocks that Arrow's CSV reader parses
    while the next block arrives: no row ever becomes a Python object, and the network read, the
    parse and the Parquet encoding overlap. Each COPY message is one whole row, so a block always
    ends on a record boundary and parses on its own.

    psycopg2's `copy_expert` drains the same rows with a third of the CPU, but when the server kills
    the connection it loses the server's reason ("server closed the connection unexpectedly", and
    an unraisable SystemError on stderr): psycopg 3 says what happened, which is worth the CPU.
    """
    import psycopg

    schema = arrow_schema(entity)
    query = _copy_query(entity, window)
    read_opts = pacsv.ReadOptions(column_names=list(entity.columns), block_size=COPY_BLOCK_BYTES + (1 << 20))
    parse_opts = pacsv.ParseOptions(newlines_in_values=True)
    convert_opts = pacsv.ConvertOptions(
        column_types=schema, null_values=["\\N"], strings_can_be_null=True, quoted_strings_can_be_null=False,
    )
    try:
        conn = psycopg.connect(uri, connect_timeout=10)
        try:
            drift = schema_drift(entity, _postgres_columns(conn, entity), PG_COMPATIBLE)
        except BaseException:
            conn.close()
            raise
    except psycopg.OperationalError as exc:
        raise SourceUnavailableError(f"PostgreSQL source for {entity.qualified} unavailable: {exc}") from exc
    if drift:
        conn.close()
        raise SourceDataError(drift)
    blocks: queue.Queue = queue.Queue(maxsize=COPY_QUEUE_BLOCKS)
    stop = threading.Event()

    put = functools.partial(put_unless_stopped, blocks, stop=stop)

    def drain() -> None:
        try:
            with conn.cursor() as cur, cur.copy(query) as copy:
                # Appending to one bytearray frees each row's libpq buffer at once; holding the rows
                # for a join cost twice the CPU.
                block = bytearray()
                for row in copy:
                    block += row
                    if len(block) >= COPY_BLOCK_BYTES:
                        # Leaving the COPY early (the reader stopped) cancels it on the server.
                        if not put(block):
                            return
                        block = bytearray()
                if block and not put(block):
                    return
            put(None)
        except BaseException as exc:  # handed to the reading thread, which raises it
            put(exc)

    drainer = threading.Thread(target=drain, name=f"copy-{entity.qualified}", daemon=True)
    drainer.start()
    try:
        while (block := blocks.get()) is not None:
            if isinstance(block, BaseException):
                raise block
            yield from pacsv.read_csv(
                pa.py_buffer(block), read_options=read_opts, parse_options=parse_opts, convert_options=convert_opts,
            ).to_batches()
    except psycopg.OperationalError as exc:
        raise SourceUnavailableError(f"PostgreSQL source for {entity.qualified} unavailable: {exc}") from exc
    finally:
        stop.set()
        drainer.join()
        conn.close()


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
            cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (db_name, table))
            actual = {name: typ.lower() for name, typ in cur.fetchall()}
            if not actual:
                raise SourceDataError(f"{entity.qualified}: table {db_name}.{table} not found in the source database")
            if drift := schema_drift(entity, actual, MYSQL_COMPATIBLE):
                raise SourceDataError(drift)
            col_sql = ", ".join(f"`{c}`" for c in cols)
            where, args = "", ()
            if window is not None:
                where, args = f" WHERE `{window.cursor}` <= %s", (window.high,)
                if window.read_low is not None:
                    where = f" WHERE `{window.cursor}` > %s AND `{window.cursor}` <= %s"
                    args = (window.read_low, window.high)
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
    from concurrent.futures import ThreadPoolExecutor

    from zerodoc.sources.csvdrop import (
        DeliveryError,
        FileStats,
        detect_encoding,
        prepare_fast,
        read_delivery_file,
        read_delivery_file_fast,
    )

    folder = delivery_dir(agency, entity, logical_date, cfg)
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise SourceUnavailableError(f"delivery folder {folder} holds no *.csv file")
    root = drop_root(agency, cfg)
    # The next file is read, hashed and transcoded (Python, holding the GIL) while Arrow parses and
    # Parquet encodes this one (C++, without it): two cores busy instead of one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"csv-{entity.qualified}") as pool:
        ahead = pool.submit(prepare_fast, files[0]) if CSV_FAST_PATH else None
        for k, path in enumerate(files):
            prepared = ahead.result() if ahead is not None else None
            ahead = pool.submit(prepare_fast, files[k + 1]) if CSV_FAST_PATH and k + 1 < len(files) else None
            rel = str(path.relative_to(root))
            st = FileStats(rel, "")
            if stats is not None:
                stats.append(st)
            try:
                fast = read_delivery_file_fast(path, rel, entity.columns, st, prepared) if CSV_FAST_PATH else None
                del prepared
                if fast is not None:
                    yield from fast
                else:
                    st.sha256 = st.sha256 or sha256_file(path)
                    st.encoding = detect_encoding(path)
                    yield from read_delivery_file(path, rel, entity.columns, entity.on_schema_drift, st)
            except DeliveryError as exc:
                raise SourceDataError(f"{entity.qualified}: {exc}") from exc


def read_rest(entity: Entity, base_url: str, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    """Keyset-paged JSON with retries (backoff) on 5xx, 429, timeouts, malformed or short pages.

    A page is retried or fails as a whole; a record inside a good page that breaks the contract
    (not an object, no key, a value of the wrong JSON type or unparsable) is still a row, its
    readable values kept, `_parse_error` the exact reason and `_raw_record` its JSON text, so
    validation quarantines it and its neighbours pass.
    """
    import json
    import time

    import httpx

    schema = pa.schema(list(arrow_schema(entity)) + [pa.field(n, t) for n, t in REST_META_FIELDS])
    url = f"{base_url.rstrip('/')}/v1/{entity.agency}/{entity.name}"
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
                if window.read_low is not None:
                    params |= {"updated_after": window.read_low.isoformat()}
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
                    if not isinstance(data, list):
                        raise TypeError(f"data is a JSON {_json_type(data)}, not an array")
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
            if data:
                rows = []
                for i, item in enumerate(data):
                    row, error = rest_record(item, entity)
                    row |= {"_source_page": page_no, "_record_number": seen + i + 1,
                            "_raw_record": _json_text(item, RAW_RECORD_CHARS) if error else None,
                            "_parse_error": error}
                    rows.append(row)
                yield pa.RecordBatch.from_pylist(rows, schema=schema)
            seen += len(data)
            if nxt is None:
                break
            cursor = nxt
    if seen != total:
        raise SourceDataError(f"{entity.qualified}: got {seen} rows but the API announced {total}")


REST_META_FIELDS = [
    ("_source_page", pa.int32()),
    ("_record_number", pa.int64()),  # 1-based position in the whole extract
    ("_raw_record", pa.string()),
    ("_parse_error", pa.string()),
]
RAW_RECORD_CHARS = 1 << 20  # as a CSV line: beyond 1 MiB a record is a broken export, kept truncated
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(v), type(v).__name__)


def _json_text(v, limit: int = 200) -> str:
    import json

    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def _rest_value(v, typ: str):
    """The JSON value as the declared type, or ValueError saying why not (no silent coercion)."""
    import datetime as dt

    if typ in _INT_RANGE:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {_json_type(v)} {_json_text(v, 40)}")
        lo, hi = _INT_RANGE[typ]
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of the {typ} range")
        return v
    if typ == "float64":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"expected a number, got {_json_type(v)} {_json_text(v, 40)}")
        return float(v)
    if typ == "bool":
        if not isinstance(v, bool):
            raise ValueError(f"expected a boolean, got {_json_type(v)} {_json_text(v, 40)}")
        return v
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {_json_type(v)} {_json_text(v, 40)}")
    if typ == "timestamp":
        try:
            ts = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"unparsable timestamp {_json_text(v, 40)}") from None
        if ts.tzinfo is not None:  # the contract is agency-local naive time; an offset is ambiguous
            raise ValueError(f"timestamp {_json_text(v, 40)} carries a UTC offset")
        return ts
    if typ == "date":
        try:
            return dt.date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"unparsable date {_json_text(v, 40)}") from None
    return v


def rest_record(item, entity: Entity) -> tuple[dict, str | None]:
    """One JSON record as {column: value} in the declared types, and the reason it breaks the contract
    (None when it does not). Unreadable values are None; absent non-key fields are NULLs (JSON APIs
    leave nulls out), an absent or null key is a defect."""
    if not isinstance(item, dict):
        return {}, f"record is a JSON {_json_type(item)}, not an object"
    row: dict = {}
    errors = []
    if item.get(entity.key) is None:
        errors.append(f"key field {entity.key} is {'null' if entity.key in item else 'missing'}")
    for col, typ in entity.columns.items():
        v = item.get(col)
        if v is None:
            continue
        try:
            row[col] = _rest_value(v, typ)
        except ValueError as exc:
            errors.append(f"{col}: {exc}")
    return row, "; ".join(errors) or None


def _with_null_columns(batches: Iterator[pa.RecordBatch], fields: list[pa.Field]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for f in fields:
            batch = batch.append_column(f, pa.nulls(batch.num_rows, f.type))
        yield batch


def read_entity(agency: Agency, entity: Entity, cfg: Settings, logical_date: str = "",
                stats: list | None = None, window: Window | None = None) -> Iterator[pa.RecordBatch]:
    uri = connection_uri(agency.conn_id)
    if entity.kind == "csv":
        return read_csv_drop(agency, entity, logical_date, cfg, stats)
    if uri is None:
        batches = read_file(entity, cfg, window)
        if entity.kind == "rest":  # the stand-in has no pages: the REST provenance columns stay NULL
            batches = _with_null_columns(batches, [pa.field(n, t) for n, t in REST_META_FIELDS])
        return batches
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


class _HashingFile:
    """Write-only file that hashes every byte on its way out: the manifest checksum costs no second read."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by write_parquet
        self.sha256 = hashlib.sha256()
        self._pos = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self._pos += len(data)
        return self._fh.write(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def writable(self) -> bool:
        return True


def dictionary_columns(table: pa.Table) -> list[str]:
    """Columns worth dictionary encoding: at most half as many distinct values as rows.

    Decided once, on the first row group (deterministic: the data is ordered). Unique columns —
    keys, registration numbers — skip the dictionary Parquet would otherwise build and then
    abandon, which cost a third of the encoding time on a 1M-row extract.
    """
    import pyarrow.compute as pc

    n = table.num_rows
    return [name for name, col in zip(table.column_names, table.columns, strict=True)
            if pc.count_distinct(col, mode="all").as_py() * 2 <= n]


def write_parquet(batches: Iterator[pa.RecordBatch], schema: pa.Schema, path: Path) -> tuple[int, str]:
    """Stream batches into one Parquet file of ROW_GROUP-row groups; return (rows, sha256)."""
    hashing = _HashingFile(path)
    # Buffered on the Arrow side: a few multi-MiB writes reach Python, not one per page header.
    sink = pa.BufferedOutputStream(pa.PythonFile(hashing, mode="w"), buffer_size=SINK_BUFFER_BYTES)
    writer: pq.ParquetWriter | None = None
    rows = 0

    def write(table: pa.Table) -> None:
        nonlocal writer
        if writer is None:
            writer = pq.ParquetWriter(sink, schema, compression=PARQUET_COMPRESSION,
                                      compression_level=PARQUET_COMPRESSION_LEVEL,
                                      use_dictionary=dictionary_columns(table))
        writer.write_table(table, row_group_size=ROW_GROUP)

    try:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in batches:
            if batch.schema != schema:
                batch = batch.cast(schema)
            pending.append(batch)
            pending_rows += batch.num_rows
            rows += batch.num_rows
            if pending_rows >= ROW_GROUP:
                table = pa.Table.from_batches(pending, schema)
                full = (pending_rows // ROW_GROUP) * ROW_GROUP
                for start in range(0, full, ROW_GROUP):
                    write(table.slice(start, ROW_GROUP))
                pending = table.slice(full).to_batches()
                pending_rows -= full
        if pending_rows or writer is None:
            write(pa.Table.from_batches(pending, schema))
        writer.close()
    finally:
        sink.close()
        hashing.close()
    return rows, hashing.sha256.hexdigest()


def source_kind(agency: Agency, entity: Entity) -> str:
    if entity.kind == "csv":
        return "csv"
    return "file" if connection_uri(agency.conn_id) is None else agency.kind


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


READ_AHEAD_BATCHES = 2  # batches read ahead of the Parquet writer: ~2 row groups of memory


def read_ahead(batches: Iterator[pa.RecordBatch], depth: int, name: str) -> Iterator[pa.RecordBatch]:
    """`batches`, produced by a thread of their own up to `depth` ahead of the consumer.

    Reading a source (Parquet decoding, a COPY's CSV parse, casts) and pyarrow's Parquet writer
    each run on one core and release the GIL: overlapped, an extract costs about the slower of the
    two instead of their sum. A consumer that stops early stops the producer, which closes
    `batches` (so a source cursor is let go); an error in the producer is raised in the consumer.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    put = functools.partial(put_unless_stopped, items, stop=stop)

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - raised again in the consuming thread
            put(_Raised(exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        producer.join()


def write_partition(entity: Entity, logical_date: str, cfg: Settings, batches: Iterator[pa.RecordBatch],
                    schema: pa.Schema, source: dict, manifest_extra=None) -> tuple[Path, int, str]:
    """Write `batches` as the raw partition of `logical_date` (Parquet + manifest) and swap it in
    atomically; return (partition dir, rows, sha256). `manifest_extra()` is called once the batches
    are consumed, for what the reader learned on the way (CSV file stats, the window)."""
    final = raw_partition(entity, logical_date, cfg)
    with staged_dir(final) as tmp:
        rows, checksum = write_parquet(batches, schema, tmp / "part-0.parquet")
        manifest = {
            "agency": entity.agency,
            "entity": entity.name,
            "logical_date": logical_date,
            "rows": rows,
            "schema": [[f.name, str(f.type)] for f in schema],
            "checksum": checksum,
            "files": ["part-0.parquet"],
            "source": dict(source),
        }
        extra = manifest_extra() if manifest_extra else {}
        if "files" in extra:
            manifest["source"]["files"] = extra.pop("files")
        manifest.update(extra)
        write_json_atomic(tmp / "_manifest.json", manifest)
    return final, rows, checksum


def extract(
    qualified: str, logical_date: str, cfg: Settings | None = None, mode: str | None = None
) -> ExtractResult:
    """Replace the raw partition of `logical_date` for one entity: a full snapshot, or in
    incremental mode the rows whose cursor lies in the logical date's fixed window. Without a `mode`,
    the entity's configuration and the date decide (`watermarks.extraction_mode`)."""
    from zerodoc.sources.watermarks import (
        already_extracted,
        drop_seen,
        extraction_mode,
        record_snapshot,
        record_window,
        window_for,
    )

    cfg = cfg or load_settings()
    agency_code, name = qualified.split(".", 1)
    agency = agencies()[agency_code]
    entity = agency.entities[name]
    reason = "requested by the caller"
    if mode is None:
        mode, reason = extraction_mode(entity, logical_date, cfg)
    window = None
    if mode == "incremental":
        if entity.cursor is None or entity.kind == "csv":
            raise SourceDataError(f"{qualified}: incremental mode needs a cursor column and a queryable source")
        window = window_for(entity, logical_date, cfg)
    schema = raw_schema(entity, windowed=window is not None)
    file_stats: list = []

    def manifest_extra() -> dict:
        extra: dict = {"mode": mode, "mode_reason": reason}
        if entity.kind == "csv":
            extra["files"] = [
                {"file": st.file, "encoding": st.encoding, "sha256": st.sha256, "records": st.records,
                 "parse_errors": st.parse_errors, "flagged": st.flagged}
                for st in file_stats
            ]
            extra["parse_errors"] = sum(st.parse_errors for st in file_stats)
        if entity.kind == "rest":
            extra["parse_errors"] = counts["parse_errors"]
        if entity.deleted_column is not None:
            extra["tombstones"] = counts["tombstones"]
        if window is not None:
            extra["window"] = window.as_dict()
        return extra

    batches = read_entity(agency, entity, cfg, logical_date, file_stats, window)
    if window is not None:
        # Read before the partition is replaced: this date's own previous rows never count as seen.
        batches = drop_seen(batches, entity, already_extracted(entity, logical_date, window, cfg))
    if entity.deleted_column is not None or window is not None:
        batches = with_ops(batches, entity, snapshot=window is None)
    counts = {"parse_errors": 0, "tombstones": 0}

    def counted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        for batch in batches:
            if entity.kind == "rest":
                counts["parse_errors"] += batch.num_rows - batch.column("_parse_error").null_count
            if entity.deleted_column is not None:
                counts["tombstones"] += pc.sum(pc.equal(batch.column(OP_FIELD), OP_DELETE)).as_py() or 0
            yield batch

    batches = counted(batches)
    final, rows, checksum = write_partition(
        entity, logical_date, cfg, batches, schema,
        {"kind": source_kind(agency, entity), "table": entity.table, "conn_id": agency.conn_id}, manifest_extra)
    if window is not None:
        record_window(entity, logical_date, window, rows, checksum, cfg)
    elif entity.mode == "incremental":
        record_snapshot(entity, logical_date, rows, checksum, cfg, reason)
    return ExtractResult(
        agency.code, entity.name, logical_date, rows, final / "part-0.parquet", final / "_manifest.json",
        checksum, describe_source(agency, entity, cfg), mode, reason,
    )
