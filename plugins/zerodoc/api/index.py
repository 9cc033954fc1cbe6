"""In-memory point-lookup index over the CURRENT published version of a dataset.

Built once per version: DuckDB reads data.parquet, keeps only the columns some grant can
return, keeps the latest row per subject where a dataset has several (income: tax_year),
and sorts by pseudonym. The pseudonym is held as 32 raw bytes in one contiguous numpy
array searched by bisection; the other columns stay Arrow (strings dictionary-encoded).

Footprint: 32 B/subject for the key plus the granted columns (about 4-8 B each for ints,
dates and dictionary codes). At 10M subjects: ~0.5 GB per dataset with the demo policy,
per worker process, doubled briefly while a new version loads beside the old one
(measured numbers in the module's docs/report; see `footprint_bytes`).

Freshness: each lookup stats CURRENT.json (one syscall); when it changed and names another
version (publish or rollback), that version is loaded and swapped in. Published versions
are immutable, so the index never goes stale otherwise.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zerodoc.api.datasets import KEY_COLUMN, LATEST_BY
from zerodoc.config import Settings
from zerodoc.publish import store

KEY_BYTES = 32


class DatasetUnavailable(RuntimeError):
    """The dataset cannot answer: not published, or its current version is unreadable or corrupt."""


@dataclass(frozen=True)
class Snapshot:
    dataset: str
    version: str
    as_of: str | None
    validation_run_ids: list[str]
    keys: np.ndarray  # dtype S32, sorted
    table: pa.Table  # row i belongs to keys[i]

    def lookup(self, pseudonym: str) -> dict[str, Any] | None:
        try:
            needle = bytes.fromhex(pseudonym)
        except ValueError:
            return None
        if len(needle) != KEY_BYTES or len(self.keys) == 0:
            return None
        i = int(np.searchsorted(self.keys, needle))
        # numpy strips trailing NUL bytes from S-dtype items: pad back before comparing.
        if i >= len(self.keys) or self.keys[i].ljust(KEY_BYTES, b"\0") != needle:
            return None
        row = self.table.slice(i, 1).to_pylist()[0]
        return {k: _jsonable(v) for k, v in row.items()}

    def footprint_bytes(self) -> int:
        return int(self.keys.nbytes) + int(self.table.nbytes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def load_snapshot(version: store.PublishedVersion, columns: tuple[str, ...]) -> Snapshot:
    meta = version.metadata
    expected = str(meta.get("checksum") or "").removeprefix("sha256:")
    if expected and _sha256_file(version.data_path) != expected:
        # We sign what we serve: never sign data that is not the data that was published.
        raise DatasetUnavailable(
            f"{version.dataset} version {version.version}: data.parquet does not match its published checksum"
        )
    selected = ", ".join(f'"{c}"' for c in columns)
    latest = LATEST_BY.get(version.dataset)
    dedupe = (
        f'QUALIFY row_number() OVER (PARTITION BY "{KEY_COLUMN}" ORDER BY "{latest}" DESC) = 1'
        if latest
        else ""
    )
    query = (
        f'SELECT unhex("{KEY_COLUMN}") AS _key{", " + selected if selected else ""} '
        f"FROM read_parquet({_sql_literal(str(version.data_path))}) "
        f'WHERE "{KEY_COLUMN}" IS NOT NULL AND length("{KEY_COLUMN}") = {KEY_BYTES * 2} '
        f"{dedupe} ORDER BY _key"
    )
    con = duckdb.connect()
    try:
        table = con.sql(query).to_arrow_table()
    except duckdb.Error as exc:
        raise DatasetUnavailable(
            f"{version.dataset} version {version.version}: cannot read data: {exc}"
        ) from exc
    finally:
        con.close()
    key_col = table.column("_key").combine_chunks().cast(pa.binary(KEY_BYTES))
    keys = np.frombuffer(key_col.buffers()[1], dtype=f"S{KEY_BYTES}")[: len(key_col)].copy()
    table = table.drop_columns(["_key"]).combine_chunks()
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            table = table.set_column(table.column_names.index(name), name, pc.dictionary_encode(col))
    runs = meta.get("validation_runs") or []
    return Snapshot(
        dataset=version.dataset,
        version=version.version,
        as_of=None if meta.get("as_of") is None else str(meta["as_of"]),
        validation_run_ids=[str(r) for r in runs],
        keys=keys,
        table=table,
    )


class DatasetIndex:
    """The current snapshot of one dataset, reloaded when CURRENT.json points elsewhere."""

    def __init__(self, dataset: str, columns: tuple[str, ...], cfg: Settings):
        self.dataset = dataset
        self.columns = columns
        self.cfg = cfg
        self.pointer = store.dataset_dir(dataset, cfg) / "CURRENT.json"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._snapshot: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        try:
            st = os.stat(self.pointer)
        except FileNotFoundError as exc:
            raise DatasetUnavailable(f"dataset {self.dataset} has not been published yet") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        snap = self._snapshot
        if snap is not None and stamp == self._stamp:
            return snap
        with self._lock:  # one loader; concurrent requests wait for it rather than load twice
            if self._snapshot is not None and stamp == self._stamp:
                return self._snapshot
            try:
                version = store.current(self.dataset, self.cfg)
            except store.NotPublishedError as exc:
                raise DatasetUnavailable(str(exc)) from exc
            except (OSError, ValueError, KeyError) as exc:
                raise DatasetUnavailable(
                    f"dataset {self.dataset}: unreadable current version: {exc}"
                ) from exc
            if self._snapshot is None or self._snapshot.version != version.version:
                self._snapshot = load_snapshot(version, self.columns)
            self._stamp = stamp
            return self._snapshot
