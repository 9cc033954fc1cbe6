"""Load the generated agency records into the real agency servers (PostgreSQL, MariaDB).

Bulk paths only: COPY FROM STDIN for PostgreSQL, LOAD DATA LOCAL INFILE for MariaDB.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from zerodoc.catalog import Agency, Entity
from zerodoc.config import Settings
from zerodoc.sources.extract import connection_uri, mysql_table, stand_in_path

PG_TYPES = {"int32": "integer", "int64": "bigint", "string": "text", "timestamp": "timestamp",
            "date": "date", "float64": "double precision", "bool": "boolean"}
MY_TYPES = {"int32": "INT", "int64": "BIGINT", "string": "VARCHAR(255)", "timestamp": "DATETIME",
            "date": "DATE", "float64": "DOUBLE", "bool": "BOOLEAN"}
NULL = "\\N"


def _csv_for_load(path: Path, out: Path) -> None:
    """Stand-in Parquet → CSV with \\N for NULL, the form both servers bulk-load."""
    table = pq.read_table(path)
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.string())
        cols.append(col)
    table = pa.table(cols, names=table.column_names)
    # Arrow writes NULL as an empty field; fill explicit \N so empty strings stay distinct.
    filled = pa.table(
        [c.fill_null(NULL) if pa.types.is_string(c.type) else c.cast(pa.string()).fill_null(NULL)
         for c in table.columns],
        names=table.column_names,
    )
    pacsv.write_csv(filled, out, pacsv.WriteOptions(include_header=False, quoting_style="needed"))


def load_postgres(agency: Agency, cfg: Settings) -> dict[str, int]:
    import psycopg

    uri = connection_uri(agency.conn_id)
    if uri is None:
        raise RuntimeError(f"AIRFLOW_CONN_{agency.conn_id.upper()} is not set")
    counts = {}
    with psycopg.connect(uri, autocommit=False) as conn:
        for entity in agency.entities.values():
            schema, table = entity.table.split(".", 1)
            cols = ", ".join(f'"{c}" {PG_TYPES[t]}' for c, t in entity.columns.items())
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}"')
            conn.execute(f'CREATE TABLE "{schema}"."{table}" ({cols})')
            with tempfile.TemporaryDirectory() as tmp:
                csv_path = Path(tmp) / "load.csv"
                _csv_for_load(stand_in_path(entity, cfg), csv_path)
                # Arrow quotes every string; FORCE_NULL makes a quoted \N a NULL again.
                force_null = ", ".join(f'"{c}"' for c in entity.columns)
                copy_sql = (
                    f'COPY "{schema}"."{table}" FROM STDIN '
                    f"WITH (FORMAT csv, NULL '\\N', FORCE_NULL ({force_null}))"
                )
                with conn.cursor() as cur, open(csv_path, "rb") as fh:
                    with cur.copy(copy_sql) as copy:
                        while block := fh.read(1 << 20):
                            copy.write(block)
            conn.execute(f'CREATE INDEX ON "{schema}"."{table}" ("{entity.key}")')
            counts[entity.qualified] = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
        conn.commit()
    return counts


def load_mysql(agency: Agency, cfg: Settings) -> dict[str, int]:
    import pymysql

    uri = connection_uri(agency.conn_id)
    if uri is None:
        raise RuntimeError(f"AIRFLOW_CONN_{agency.conn_id.upper()} is not set")
    parts = urlsplit(uri)
    conn = pymysql.connect(
        host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
        user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
        charset="utf8mb4", local_infile=True, autocommit=True,
    )
    counts = {}
    try:
        with conn.cursor() as cur:
            for entity in agency.entities.values():
                db, table = mysql_table(entity, uri)
                cols = ", ".join(f"`{c}` {MY_TYPES[t]}" for c, t in entity.columns.items())
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4")
                cur.execute(f"DROP TABLE IF EXISTS `{db}`.`{table}`")
                cur.execute(f"CREATE TABLE `{db}`.`{table}` ({cols}, KEY (`{entity.key}`)) ENGINE=InnoDB")
                with tempfile.TemporaryDirectory() as tmp:
                    csv_path = Path(tmp) / "load.csv"
                    _csv_for_load(stand_in_path(entity, cfg), csv_path)
                    cur.execute(
                        f"LOAD DATA LOCAL INFILE %s INTO TABLE `{db}`.`{table}` CHARACTER SET utf8mb4 "
                        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
                        "LINES TERMINATED BY '\\n'",
                        (str(csv_path),),
                    )
                cur.execute(f"SELECT count(*) FROM `{db}`.`{table}`")
                counts[entity.qualified] = cur.fetchone()[0]
    finally:
        conn.close()
    return counts


def load_servers(agencies: dict[str, Agency], cfg: Settings) -> dict[str, int]:
    """Load every agency that has a server configured; return row counts per entity."""
    counts: dict[str, int] = {}
    for agency in agencies.values():
        # CSV drops and REST APIs are read where they are; only database agencies get loaded.
        if agency.kind not in ("postgres", "mysql") or connection_uri(agency.conn_id) is None:
            continue
        loader = load_postgres if agency.kind == "postgres" else load_mysql
        counts.update(loader(agency, cfg))
    return counts


def entity_stand_in(entity: Entity, cfg: Settings) -> Path:
    return stand_in_path(entity, cfg)
