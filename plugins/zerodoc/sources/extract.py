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


def connection_uri(conn_id: str) -> str | None:
    """Airflow's env convention, so the same setting serves Airflow tasks and the CLI."""
    return os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or None


def describe_source(agency: Agency, entity: Entity, cfg: Settings) -> str:
    uri = connection_uri(agency.conn_id)
    if uri is None:
        return f"file:{stand_in_path(entity, cfg)}"
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path} table {entity.table}"


def stand_in_path(entity: Entity, cfg: Settings) -> Path:
    return cfg.sources_dir / entity.agency / f"{entity.name}.parquet"


# ---- readers: each yields record batches in the declared schema, ordered by the key ---------


def read_file(entity: Entity, cfg: Settings) -> Iterator[pa.RecordBatch]:
    path = stand_in_path(entity, cfg)
    if not path.exists():
        raise SourceUnavailableError(
            f"no stand-in file {path} for {entity.qualified}: run `zerodoc generate` first "
            f"or configure AIRFLOW_CONN_ for the agency server"
        )
    schema = arrow_schema(entity)
    # Streamed in the file's own (deterministic) order: memory stays flat at any scale.
    for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP, columns=list(entity.columns)):
        yield batch.cast(schema)


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


def read_postgres(entity: Entity, uri: str) -> Iterator[pa.RecordBatch]:
    """COPY ... TO STDOUT (CSV) streamed into Arrow's CSV reader: no row ever becomes a Python object."""
    import psycopg
    from psycopg import sql

    schema = arrow_schema(entity)
    cols = list(entity.columns)
    schema_name, table = entity.table.split(".", 1)
    query = sql.SQL(
        "COPY (SELECT {cols} FROM {tbl} ORDER BY {key}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        tbl=sql.Identifier(schema_name, table),
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


def read_mysql(entity: Entity, uri: str) -> Iterator[pa.RecordBatch]:
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
            cur.execute(f"SELECT {col_sql} FROM `{db_name}`.`{table}` ORDER BY `{entity.key}`")
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


def read_entity(agency: Agency, entity: Entity, cfg: Settings) -> Iterator[pa.RecordBatch]:
    uri = connection_uri(agency.conn_id)
    if uri is None:
        return read_file(entity, cfg)
    scheme = urlsplit(uri).scheme
    if scheme.startswith("postgres"):
        return read_postgres(entity, uri)
    if scheme.startswith(("mysql", "mariadb")):
        return read_mysql(entity, uri)
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


def extract(qualified: str, logical_date: str, cfg: Settings | None = None) -> ExtractResult:
    """Replace the raw partition of `logical_date` for one entity with a fresh full extract."""
    cfg = cfg or load_settings()
    agency_code, name = qualified.split(".", 1)
    agency = agencies()[agency_code]
    entity = agency.entities[name]
    schema = arrow_schema(entity)
    final = raw_partition(entity, logical_date, cfg)
    rows = 0
    with staged_dir(final) as tmp:
        part = tmp / "part-0.parquet"
        with pq.ParquetWriter(part, schema, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in read_entity(agency, entity, cfg):
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
            "source": {"kind": "file" if connection_uri(agency.conn_id) is None else agency.kind,
                       "table": entity.table, "conn_id": agency.conn_id},
        }
        write_json_atomic(tmp / "_manifest.json", manifest)
    return ExtractResult(
        agency.code, entity.name, logical_date, rows, final / "part-0.parquet", final / "_manifest.json",
        checksum, describe_source(agency, entity, cfg),
    )
