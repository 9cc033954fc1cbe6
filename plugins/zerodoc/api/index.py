"""Point-lookup index over the CURRENT published version of a dataset, shared by the API workers.

Built once per version: DuckDB reads data.parquet, keeps only the columns some grant can
return, keeps the latest row per subject where a dataset has several (income: tax_year),
and sorts by pseudonym. The pseudonym is held as 32 raw bytes searched by bisection; the
other columns stay Arrow (strings dictionary-encoded, dates as ISO text).

Shared, not per worker: the first worker to need a version builds that sorted table and writes
it as an uncompressed Arrow IPC file under state/index-cache/<dataset>/<version>/ (tmp, fsync,
rename, then a sidecar with its size and SHA-256); the others wait on a file lock, and every
worker memory-maps the file zero-copy (keys as a numpy view of the mapped bytes, columns read
through views of the mapped buffers). The pages are the kernel's page cache, mapped by all
workers: one copy whatever the worker count. Each worker checks the file (magic, size, SHA-256,
schema) before serving it; reading it for the hash also maps every page, so the server's
proportional set size shows the whole index from the start. A file that fails the check is
deleted and rebuilt, never served. Published versions are immutable, so a cache file never goes
stale; the directories of versions no longer retained are removed when a version is built.

Footprint: 32 B/subject for the key plus the granted columns (ints and dictionary codes; 4-8 B
each), once for the whole server. Building peaks at DuckDB's sort (capped at SORT_MEMORY_LIMIT,
spilling to state/tmp) plus the Arrow result, in one worker at a time; a new version is
mapped beside the old one before the swap.

Per-person paper fallback: with each version we also load the pseudonyms of subjects whose
records for the dataset's inputs (config/datasets.yml) sit in the quarantine zone for the
version's `published_for` date. The dataset may hold nothing, or only part, for them; the API
answers "needs_document" for those people only. Rows without an ID column (households) mark
every resident registered in that household.

Freshness: each lookup stats CURRENT.json (one syscall); when it changed and names another
version (publish or rollback), that version is loaded in the background and swapped in
(see DatasetIndex). Published versions are immutable, so nothing else can make it stale.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
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
from zerodoc.sql import sql_literal

KEY_BYTES = 32
SORT_MEMORY_LIMIT = "1GB"
# Dictionary values held as Python objects (names, codes, dates); a near-unique text column
# (e.g. explanation inputs) stays in Arrow, where 10M strings cost a fraction of the memory.
MAX_LISTED_VALUES = 1 << 16
# Bump when the cached file's layout or the way it is built changes: old files are then ignored.
CACHE_FORMAT = 1
ARROW_MAGIC = b"ARROW1"
# memoryview formats of the integer/float Arrow types read per lookup straight from their buffer.
_FORMATS = {
    pa.int8(): "b", pa.int16(): "h", pa.int32(): "i", pa.int64(): "q",
    pa.uint8(): "B", pa.uint16(): "H", pa.uint32(): "I", pa.uint64(): "Q",
    pa.float32(): "f", pa.float64(): "d",
}  # fmt: skip

log = logging.getLogger(__name__)


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
    quarantined: np.ndarray = field(default_factory=lambda: np.array([], dtype=f"S{KEY_BYTES}"))  # sorted
    published_for: str | None = None

    def __post_init__(self) -> None:
        for name in ("keys", "quarantined"):  # _position reads their raw bytes
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=f"S{KEY_BYTES}"))
        # A getter per column over one contiguous array: no Arrow scalar per request.
        columns = (
            [(n, _getter(_one_chunk(self.table.column(n)))) for n in self.table.column_names] if len(self.keys) else []
        )
        object.__setattr__(self, "_columns", tuple(columns))
        # The same per column, giving each value as its canonical JSON (signing.canonical_bytes) text.
        json_columns = (
            {n: _json_getter(_one_chunk(self.table.column(n))) for n in self.table.column_names}
            if len(self.keys)
            else {}
        )
        object.__setattr__(self, "_json_columns", json_columns)
        object.__setattr__(self, "_json_plans", {})

    def is_quarantined(self, pseudonym: str) -> bool:
        return len(self.quarantined) > 0 and _contains(self.quarantined, pseudonym)

    def lookup(self, pseudonym: str) -> dict[str, Any] | None:
        i = _position(self.keys, pseudonym)
        if i is None:
            return None
        return {name: get(i) for name, get in self._columns}

    def lookup_json(self, pseudonym: str, names: tuple[str, ...]) -> bytes | None:
        """canonical_bytes({name: lookup(pseudonym)[name] for name in names}), or None: no such subject.

        Built from each value's JSON text (dictionary values encoded once per version), in sorted
        key order, so it is byte for byte what canonical_bytes of lookup()'s dict would give.
        """
        i = _position(self.keys, pseudonym)
        if i is None:
            return None
        plan = self._json_plans.get(names)
        if plan is None:
            plan = self._json_plans[names] = tuple(
                (json.dumps(n, ensure_ascii=False).encode("utf-8") + b":", self._json_columns[n]) for n in sorted(names)
            )
        return b"{" + b",".join([key + get(i) for key, get in plan]) + b"}"

    def footprint_bytes(self) -> int:
        return int(self.keys.nbytes) + int(self.table.nbytes)


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    # combine_chunks copies even a single chunk's buffers: keep the mapped one as it is.
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _values_view(arr: pa.Array) -> memoryview:
    """Row i of a fixed-width array is view[i] as a Python int/float: no copy, no numpy scalar."""
    fmt = _FORMATS[arr.type]
    width = arr.type.bit_width // 8
    data = memoryview(arr.buffers()[1]) if len(arr) else memoryview(b"")
    return data[arr.offset * width : (arr.offset + len(arr)) * width].cast(fmt)


def _bit_getter(buf: pa.Buffer, offset: int):
    bits = memoryview(buf)
    return lambda i: (bits[(offset + i) >> 3] >> ((offset + i) & 7)) & 1


def _getter(col: pa.Array):
    """i -> the JSON-ready value of row i, read from views of the (possibly mapped) Arrow buffers.

    Nothing per row is decoded up front: integers, floats, booleans, dictionary codes and the
    validity bitmap are read in place per lookup; only a dictionary's distinct values become
    Python objects. Arrow's scalar access (col[i].as_py()) builds a Scalar object per value;
    this is ~10x cheaper. Types without a fast path keep it.
    """
    if pa.types.is_null(col.type):  # no buffers at all: every value is null
        return lambda i: None
    valid = _bit_getter(col.buffers()[0], col.offset) if col.null_count else None
    if pa.types.is_dictionary(col.type) and len(col.dictionary) <= MAX_LISTED_VALUES and col.indices.type in _FORMATS:
        codes = _values_view(col.indices)
        values = [_jsonable(v) for v in col.dictionary.to_pylist()]
        if valid is None:
            return lambda i: values[codes[i]]
        return lambda i: values[codes[i]] if valid(i) else None
    if col.type in _FORMATS:
        data = _values_view(col)
        if valid is None:
            return data.__getitem__
        return lambda i: data[i] if valid(i) else None
    if pa.types.is_boolean(col.type):
        bit = _bit_getter(col.buffers()[1], col.offset)
        if valid is None:
            return lambda i: bool(bit(i))
        return lambda i: bool(bit(i)) if valid(i) else None
    return lambda i: _jsonable(col[i].as_py())


def _canonical(value: Any) -> bytes:
    """signing.canonical_bytes of one value (not imported: signing must not depend on the index)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_getter(col: pa.Array):
    """i -> canonical JSON text of _getter(col)(i): dictionary values encoded once, ints by repr."""
    if pa.types.is_dictionary(col.type) and len(col.dictionary) <= MAX_LISTED_VALUES and col.indices.type in _FORMATS:
        codes = _values_view(col.indices)
        values = [_canonical(_jsonable(v)) for v in col.dictionary.to_pylist()]
        if not col.null_count:
            return lambda i: values[codes[i]]
        valid = _bit_getter(col.buffers()[0], col.offset)
        return lambda i: values[codes[i]] if valid(i) else b"null"
    get = _getter(col)
    if pa.types.is_integer(col.type):  # json writes an int as int.__repr__
        return lambda i: b"null" if (v := get(i)) is None else str(v).encode("ascii")
    return lambda i: _canonical(get(i))


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _position(keys: np.ndarray, pseudonym: str) -> int | None:
    """Row of the pseudonym in sorted S32 keys, or None."""
    try:
        needle = bytes.fromhex(pseudonym)
    except ValueError:
        return None
    n = len(keys)
    if len(needle) != KEY_BYTES or n == 0:
        return None
    i = int(keys.searchsorted(needle))
    if i >= n:
        return None
    # Compare the stored bytes: numpy's item would strip trailing NULs and cost a scalar object.
    at = i * KEY_BYTES
    return i if memoryview(keys).cast("B")[at : at + KEY_BYTES] == needle else None


def _contains(keys: np.ndarray, pseudonym: str) -> bool:
    return _position(keys, pseudonym) is not None


def _keys_array(col: pa.ChunkedArray | pa.Array, copy: bool = True) -> np.ndarray:
    """The keys as S32. copy=False gives a view of the Arrow buffer (e.g. the mapped cache file)."""
    if isinstance(col, pa.ChunkedArray):
        col = _one_chunk(col)
    if col.type != pa.binary(KEY_BYTES):
        col = col.cast(pa.binary(KEY_BYTES))
    if len(col) == 0:
        return np.array([], dtype=f"S{KEY_BYTES}")
    keys = np.frombuffer(col.buffers()[1], dtype=f"S{KEY_BYTES}", count=len(col), offset=col.offset * KEY_BYTES)
    return keys.copy() if copy else keys


def quarantined_pseudonyms(dataset: str, published_for: str | None, cfg: Settings) -> np.ndarray:
    """Sorted pseudonyms of subjects whose input records are quarantined as of this version's date:
    for an entity delivered as windows, rejected on an earlier date and not replaced by a valid
    version since (`zerodoc.sources.current`)."""
    from zerodoc.catalog import datasets, entity
    from zerodoc.privacy import duckdb_macro_sql
    from zerodoc.sources.current import current_rows_sql, open_quarantine_sql

    empty = np.array([], dtype=f"S{KEY_BYTES}")
    spec = datasets().get(dataset)
    if spec is None or not published_for:
        return empty
    parts: list[str] = []
    for qualified in spec.inputs:
        agency = qualified.split(".", 1)[0]
        found = open_quarantine_sql(entity(qualified), published_for, cfg)
        if found is None:
            continue
        quarantined, cols = found
        id_cols = sorted(c for c in cols if c == "rrn" or c.endswith("_rrn"))  # e.g. police cases: victim_rrn
        if id_cols:
            parts += [f"SELECT zd_pseudonym({c}) AS p FROM ({quarantined}) WHERE {c} IS NOT NULL" for c in id_cols]
        elif "household_id" in cols:
            members = current_rows_sql(
                entity(f"{agency}.residents"), published_for, cfg, ["rrn", "household_id"],
                where=f"household_id IN (SELECT household_id FROM ({quarantined}))",
            )
            if members is not None:
                parts.append(f"SELECT zd_pseudonym(rrn) AS p FROM ({members}) WHERE rrn IS NOT NULL")
    if not parts:
        return empty
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(duckdb_macro_sql(cfg.pseudonym_key))
        table = con.sql(
            f"SELECT DISTINCT unhex(p) AS k FROM ({' UNION ALL '.join(parts)}) WHERE p IS NOT NULL ORDER BY k"
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise DatasetUnavailable(f"{dataset}: cannot read quarantine for {published_for}: {exc}") from exc
    finally:
        con.close()
    return _keys_array(table.column("k"))


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


def _build_table(version: store.PublishedVersion, columns: tuple[str, ...], spill_dir: Path | None) -> pa.Table:
    """The version's rows to serve, sorted by key: `_key` (fixed_size_binary(32)) then the columns."""
    selected = ", ".join(f'"{c}"' for c in columns)
    latest = LATEST_BY.get(version.dataset)
    dedupe = f'QUALIFY row_number() OVER (PARTITION BY "{KEY_COLUMN}" ORDER BY "{latest}" DESC) = 1' if latest else ""
    query = (
        f'SELECT unhex("{KEY_COLUMN}") AS _key{", " + selected if selected else ""} '
        f"FROM read_parquet({sql_literal(str(version.data_path))}) "
        f'WHERE "{KEY_COLUMN}" IS NOT NULL AND length("{KEY_COLUMN}") = {KEY_BYTES * 2} '
        f"{dedupe} ORDER BY _key"
    )
    con = duckdb.connect()
    try:
        if spill_dir is not None:
            # Cap DuckDB's sort memory (it spills beyond); the result table is what stays resident.
            spill_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            con.sql(f"SET temp_directory = {sql_literal(str(spill_dir))}")
            con.sql(f"SET memory_limit = '{SORT_MEMORY_LIMIT}'")
        table = con.sql(query).to_arrow_table()
    except duckdb.Error as exc:
        raise DatasetUnavailable(f"{version.dataset} version {version.version}: cannot read data: {exc}") from exc
    finally:
        con.close()
    keys = table.column("_key").combine_chunks().cast(pa.binary(KEY_BYTES))
    table = compact_columns(table.drop_columns(["_key"]).combine_chunks())
    return table.add_column(0, "_key", keys)


def compact_columns(table: pa.Table) -> pa.Table:
    """Dates as ISO text and all text dictionary-encoded, as every index holds its columns.

    ISO text as dictionary codes is as small as date32, and needs no conversion per request.
    """
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_date32(col.type):
            col = pc.cast(col, pa.string())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            table = table.set_column(table.column_names.index(name), name, pc.dictionary_encode(col))
    return table


def cache_path(version: store.PublishedVersion, columns: tuple[str, ...], cfg: Settings, kind: str = "") -> Path:
    """Where the workers share this version's index for this set of granted columns (and kind of key)."""
    spec = [CACHE_FORMAT, version.dataset, version.version, list(columns), LATEST_BY.get(version.dataset)]
    if kind:  # e.g. households keyed by household_id: another build, another file
        spec.append(kind)
    tag = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]
    return cfg.state_dir / "index-cache" / version.dataset / version.version / f"{tag}.arrow"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _open_cached(path: Path, columns: tuple[str, ...]) -> pa.Table | None:
    """The mapped table if the file is whole and is what was written; None (file removed) otherwise."""
    sidecar = _sidecar(path)
    if not path.exists() and not sidecar.exists():
        return None
    problem = None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        mapped = pa.memory_map(str(path), "r")
        size = mapped.size()
        buf = mapped.read_buffer(size)  # zero-copy: the mapped pages themselves
        view = memoryview(buf)
        if size != meta["size"]:
            problem = f"{size} bytes, {meta['size']} written"
        elif view[: len(ARROW_MAGIC)] != ARROW_MAGIC or view[-len(ARROW_MAGIC) :] != ARROW_MAGIC:
            problem = "no Arrow file magic at both ends"
        elif hashlib.sha256(view).hexdigest() != meta["sha256"]:  # also maps every page: PSS shows it all
            problem = "SHA-256 differs from the one written"
        else:
            table = pa.ipc.open_file(buf).read_all()
            if table.column_names != ["_key", *columns] or table.schema.field("_key").type != pa.binary(KEY_BYTES):
                problem = f"unexpected columns {table.column_names}"
            elif table.num_rows != meta["rows"]:
                problem = f"{table.num_rows} rows, {meta['rows']} written"
            else:
                return table
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        problem = f"unreadable: {exc}"
    log.warning("index cache %s failed its check (%s): removing it to rebuild", path, problem)
    path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return None


def _write_durably(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_cache(path: Path, table: pa.Table) -> None:
    """Arrow IPC file (uncompressed: it is mapped as is), then its size and SHA-256 beside it."""

    def arrow(fh) -> None:
        with pa.ipc.new_file(fh, table.schema) as writer:
            writer.write_table(table)

    _write_durably(path, arrow)
    meta = {"size": path.stat().st_size, "sha256": _sha256_file(path), "rows": table.num_rows}
    _write_durably(_sidecar(path), lambda fh: fh.write(json.dumps(meta).encode()))
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_unretained(dataset: str, cfg: Settings) -> None:
    root = cfg.state_dir / "index-cache" / dataset
    retained = set(store.list_versions(dataset, cfg))
    for entry in root.iterdir():
        if entry.is_dir() and entry.name not in retained:
            # Workers still mapping a file there keep its pages until they unmap it.
            shutil.rmtree(entry, ignore_errors=True)


def cached_table(
    version: store.PublishedVersion,
    columns: tuple[str, ...],
    cfg: Settings,
    spill_dir: Path | None = None,
    build: Any = None,
    kind: str = "",
) -> pa.Table:
    """The version's sorted table, memory-mapped from the shared cache; built by whoever comes first.

    build(version, columns, spill_dir) makes the table (`_key` as fixed_size_binary(32), sorted,
    then the columns) when the cache has none; _build_table by default. kind names another build.
    """
    build = build or _build_table
    path = cache_path(version, columns, cfg, kind)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait here while one builds; released on exit or death
        table = _open_cached(path, columns)
        if table is None:
            for stale in path.parent.glob(f".{path.name}*.tmp"):  # a builder killed mid-write; we hold its lock
                stale.unlink(missing_ok=True)
            _write_cache(path, build(version, columns, spill_dir))
            _remove_unretained(version.dataset, cfg)
            table = _open_cached(path, columns)
            if table is None:
                raise DatasetUnavailable(
                    f"{version.dataset} version {version.version}: index cache {path} is unreadable right after writing"
                )
    return table


def load_snapshot(
    version: store.PublishedVersion,
    columns: tuple[str, ...],
    spill_dir: Path | None = None,
    cfg: Settings | None = None,
) -> Snapshot:
    """The version's snapshot: mapped from the shared cache under cfg's state dir, in memory without cfg."""
    meta = version.metadata
    expected = str(meta.get("checksum") or "").removeprefix("sha256:")
    if expected and _sha256_file(version.data_path) != expected:
        # We sign what we serve: never sign data that is not the data that was published.
        raise DatasetUnavailable(
            f"{version.dataset} version {version.version}: data.parquet does not match its published checksum"
        )
    if cfg is None:
        table = _build_table(version, columns, spill_dir)
    else:
        table = cached_table(version, columns, cfg, spill_dir)
    keys = _keys_array(table.column("_key"), copy=False)
    table = table.drop_columns(["_key"])
    runs = meta.get("validation_runs") or []
    published_for = None if meta.get("published_for") is None else str(meta["published_for"])
    quarantined = (
        quarantined_pseudonyms(version.dataset, published_for, cfg)
        if cfg is not None
        else np.array([], dtype=f"S{KEY_BYTES}")
    )
    return Snapshot(
        dataset=version.dataset,
        version=version.version,
        as_of=None if meta.get("as_of") is None else str(meta["as_of"]),
        validation_run_ids=[str(r) for r in runs],
        keys=keys,
        table=table,
        quarantined=quarantined,
        published_for=published_for,
    )


class DatasetIndex:
    """The snapshot of one dataset the API answers from, following CURRENT.json.

    The first load blocks (the app warms it at start). After that, a new CURRENT version is
    loaded in a background thread while requests keep being answered from the old snapshot
    (each answer names its dataset_version, so that is honest); the new one is swapped in
    when complete. Loading 10M rows takes tens of seconds, and a publish must not stall or
    fail requests for that long. A version that fails to load is not retried until
    CURRENT.json changes again; the old snapshot keeps serving and /v1/health shows it.
    """

    def __init__(self, dataset: str, columns: tuple[str, ...], cfg: Settings):
        self.dataset = dataset
        self.columns = columns
        self.cfg = cfg
        self.pointer = store.dataset_dir(dataset, cfg) / "CURRENT.json"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._snapshot: Snapshot | None = None
        self._loading: tuple[int, int, int] | None = None
        self._failed: tuple[tuple[int, int, int], str] | None = None
        # A ChangeWatch covering the pointer's directory (set by the API): no stat while nothing changed there.
        self.watch: Any = None
        self._seen: int | None = None

    @property
    def serving_version(self) -> str | None:
        return self._snapshot.version if self._snapshot else None

    @property
    def last_error(self) -> str | None:
        return self._failed[1] if self._failed else None

    def _load(self, version: store.PublishedVersion) -> Snapshot:
        return load_snapshot(version, self.columns, spill_dir=self.cfg.state_dir / "tmp", cfg=self.cfg)

    def snapshot(self) -> Snapshot:
        if self.watch is None:
            return self._snapshot_checked()
        generation = self.watch.generation()
        snap = self._snapshot
        if snap is not None and generation == self._seen:
            return snap  # the swap of a background load shows here too: it replaces _snapshot
        snap = self._snapshot_checked()
        self._seen = generation  # read before the check: a change after it moves the generation again
        return snap

    def _snapshot_checked(self) -> Snapshot:
        try:
            st = os.stat(self.pointer)
        except FileNotFoundError as exc:
            raise DatasetUnavailable(f"dataset {self.dataset} has not been published yet") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        snap = self._snapshot
        if snap is not None and stamp in (self._stamp, self._loading):
            return snap
        with self._lock:
            snap = self._snapshot
            if self._failed and self._failed[0] == stamp:
                if snap is not None:
                    return snap
                raise DatasetUnavailable(self._failed[1])
            if snap is not None and stamp in (self._stamp, self._loading):
                return snap
            try:
                version = store.current(self.dataset, self.cfg)
            except store.NotPublishedError as exc:
                raise DatasetUnavailable(str(exc)) from exc
            except (OSError, ValueError, KeyError) as exc:
                raise DatasetUnavailable(f"dataset {self.dataset}: unreadable current version: {exc}") from exc
            if snap is not None and snap.version == version.version:
                self._stamp = stamp
                return snap
            if snap is None and _on_event_loop():
                # Published after the loop's readiness check: never stall every request of this
                # worker on a first load; load it aside and say so until it is in.
                if self._loading != stamp:
                    self._loading = stamp
                    threading.Thread(
                        target=self._load_in_background, args=(version, stamp), name=f"load-{self.dataset}", daemon=True
                    ).start()
                raise DatasetUnavailable(f"dataset {self.dataset} version {version.version} is loading")
            if snap is None:
                try:
                    self._snapshot = self._load(version)
                except DatasetUnavailable as exc:
                    self._failed = (stamp, str(exc))
                    raise
                self._stamp, self._failed = stamp, None
                return self._snapshot
            self._loading = stamp
            threading.Thread(
                target=self._load_in_background,
                args=(version, stamp),
                name=f"load-{self.dataset}",
                daemon=True,
            ).start()
            return snap

    def _load_in_background(self, version: store.PublishedVersion, stamp: tuple[int, int, int]) -> None:
        try:
            new = self._load(version)
        except Exception as exc:  # noqa: BLE001 - keep serving the old snapshot, report the failure
            log.error(
                "keeping %s %s: loading %s failed: %s",
                self.dataset,
                self.serving_version,
                version.version,
                exc,
            )
            with self._lock:
                self._failed = (stamp, f"{self.dataset} version {version.version} failed to load: {exc}")
                self._loading = None
            return
        with self._lock:
            if self._loading == stamp:  # CURRENT may have moved on meanwhile; then the newer load wins
                self._snapshot, self._stamp, self._failed = new, stamp, None
                self._loading = None
