"""What the API keeps in memory to answer from: which datasets, households, and shared tables.

- One ``DatasetIndex`` per per-subject dataset that some grant can return (a dataset nobody is
  granted is not loaded at all: at 10M subjects its keys alone are ~320 MB per worker).
- household_v1 is keyed by household, not by person. ``HouseholdIndex`` loads it keyed by
  ``household_id`` and answers for a subject through residence_v1, the published membership:
  subject -> household_id (residence, as served) -> household row. A household is answered with
  ``needs_document`` for every member when any member's inputs are quarantined, because one
  member's missing income makes the household's income, and its ratio to the median, wrong.
- Aggregate datasets (``SHARED_TABLES``) hold no subject; ``SharedTable`` reads the current
  version whole (a few thousand rows) for POST /v1/shared-tables/query.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zerodoc.api.datasets import EVIDENCE_TYPES, KEY_COLUMNS, SHARED_TABLES
from zerodoc.api.index import (
    KEY_BYTES,
    DatasetIndex,
    DatasetUnavailable,
    Snapshot,
    _keys_array,
    _sha256_file,
    cached_table,
    compact_columns,
    quarantined_pseudonyms,
)
from zerodoc.api.policy import AccessPolicy
from zerodoc.config import Settings
from zerodoc.publish import store
from zerodoc.sql import sql_literal

HOUSEHOLD_DATASET = "household_v1"
MEMBERSHIP_DATASET = "residence_v1"
MEMBERSHIP_COLUMN = "household_id"


def _check_published_bytes(version: store.PublishedVersion) -> None:
    expected = str(version.metadata.get("checksum") or "").removeprefix("sha256:")
    if expected and _sha256_file(version.data_path) != expected:
        # We sign what we serve: never sign data that is not the data that was published.
        raise DatasetUnavailable(
            f"{version.dataset} version {version.version}: data.parquet does not match its published checksum"
        )


def household_key(household_id: int) -> str:
    """A household id as the 32-byte hex key the index searches (big-endian, so sorted like the ids)."""
    return int(household_id).to_bytes(KEY_BYTES, "big").hex()


class HouseholdView:
    """A household snapshot bound to the residence snapshot that says who lives where.

    Quacks like ``Snapshot`` where the evidence route uses one (version, as_of, run ids,
    is_quarantined, lookup); the version is household_v1's, the run ids are both datasets'.
    """

    def __init__(self, households: Snapshot, members: Snapshot, quarantined_households: np.ndarray):
        self.households, self.members = households, members
        self.dataset, self.version, self.as_of = households.dataset, households.version, households.as_of
        self.published_for = households.published_for
        self.validation_run_ids = list(dict.fromkeys(households.validation_run_ids + members.validation_run_ids))
        self._quarantined_households = quarantined_households

    def household_id(self, pseudonym: str) -> int | None:
        member = self.members.lookup(pseudonym)
        return None if member is None else member.get(MEMBERSHIP_COLUMN)

    def is_quarantined(self, pseudonym: str) -> bool:
        if self.households.is_quarantined(pseudonym) or self.members.is_quarantined(pseudonym):
            return True
        hid = self.household_id(pseudonym)
        if hid is None or len(self._quarantined_households) == 0:
            return False
        i = int(np.searchsorted(self._quarantined_households, hid))
        return i < len(self._quarantined_households) and int(self._quarantined_households[i]) == hid

    def lookup(self, pseudonym: str) -> dict[str, Any] | None:
        hid = self.household_id(pseudonym)
        return None if hid is None else self.households.lookup(household_key(hid))

    def lookup_json(self, pseudonym: str, names: tuple[str, ...]) -> bytes | None:
        hid = self.household_id(pseudonym)
        return None if hid is None else self.households.lookup_json(household_key(hid), names)


class HouseholdIndex(DatasetIndex):
    """household_v1 keyed by household_id; ``snapshot()`` gives a ``HouseholdView`` over residence_v1."""

    def __init__(self, columns: tuple[str, ...], cfg: Settings, members: DatasetIndex):
        super().__init__(HOUSEHOLD_DATASET, columns, cfg)
        self.members = members
        self._quarantined: dict[str, np.ndarray] = {}  # household version -> sorted household ids

    def snapshot(self) -> HouseholdView:  # type: ignore[override]
        households = super().snapshot()
        members = self.members.snapshot()
        return HouseholdView(households, members, self._quarantined.get(households.version, _NO_IDS))

    def _load(self, version: store.PublishedVersion) -> Snapshot:
        _check_published_bytes(version)
        # Shared by the workers like the per-person indexes: one mapped Arrow file per version.
        table = cached_table(
            version, self.columns, self.cfg, self.cfg.state_dir / "tmp", build=_build_households, kind="household_id"
        )
        keys = _keys_array(table.column("_key"), copy=False)
        table = table.drop_columns(["_key"])
        meta = version.metadata
        published_for = None if meta.get("published_for") is None else str(meta["published_for"])
        quarantined = quarantined_pseudonyms(version.dataset, published_for, self.cfg)
        # Kept for the version being loaded and the one still serving; older ones are dropped.
        serving = self.serving_version
        self._quarantined = {v: ids for v, ids in self._quarantined.items() if v == serving}
        self._quarantined[version.version] = self._households_of(quarantined)
        return Snapshot(
            dataset=version.dataset,
            version=version.version,
            as_of=None if meta.get("as_of") is None else str(meta["as_of"]),
            validation_run_ids=[str(r) for r in meta.get("validation_runs") or []],
            keys=keys,
            table=table,
            quarantined=quarantined,
            published_for=published_for,
        )

    def _households_of(self, pseudonyms: np.ndarray) -> np.ndarray:
        """Sorted ids of the households (in the current residence_v1) the given subjects live in."""
        if len(pseudonyms) == 0:
            return _NO_IDS
        try:
            residence = store.current(MEMBERSHIP_DATASET, self.cfg)
        except (store.NotPublishedError, OSError, ValueError, KeyError):
            return _NO_IDS
        # numpy drops trailing NUL bytes of S32 items: pad back before hex.
        wanted = pa.table({"p": pa.array([bytes(k).ljust(KEY_BYTES, b"\0").hex() for k in pseudonyms])})
        con = duckdb.connect()
        try:
            con.register("wanted", wanted)
            ids = con.execute(
                f"SELECT DISTINCT {MEMBERSHIP_COLUMN} FROM read_parquet(?) AS r JOIN wanted ON r.subject_pseudonym = "
                f"wanted.p WHERE {MEMBERSHIP_COLUMN} IS NOT NULL ORDER BY 1",
                [str(residence.data_path)],
            ).fetchnumpy()[MEMBERSHIP_COLUMN]
        except duckdb.Error as exc:
            problem = f"{HOUSEHOLD_DATASET}: cannot map quarantined members to households: {exc}"
            raise DatasetUnavailable(problem) from exc
        finally:
            con.close()
        return np.asarray(ids, dtype=np.int64)


_NO_IDS = np.array([], dtype=np.int64)


def _build_households(version: store.PublishedVersion, columns: tuple[str, ...], _spill: Any) -> pa.Table:
    """household_v1 sorted by household_id, the id big-endian in the last 8 of 32 key bytes."""
    key = KEY_COLUMNS[HOUSEHOLD_DATASET]
    selected = "".join(f', "{c}"' for c in columns)
    query = (
        f'SELECT "{key}" AS _key{selected} FROM read_parquet({sql_literal(str(version.data_path))}) '
        f'WHERE "{key}" IS NOT NULL AND "{key}" >= 0 ORDER BY "{key}"'
    )
    con = duckdb.connect()
    try:
        table = con.sql(query).to_arrow_table()
    except duckdb.Error as exc:
        raise DatasetUnavailable(f"{version.dataset} version {version.version}: cannot read data: {exc}") from exc
    finally:
        con.close()
    ids = table.column("_key").to_numpy().astype(">u8")
    padded = np.zeros((len(ids), KEY_BYTES), dtype=np.uint8)
    padded[:, KEY_BYTES - 8 :] = ids.view(np.uint8).reshape(len(ids), 8)
    keys = pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), len(ids), [None, pa.py_buffer(padded)])
    rest = compact_columns(table.drop_columns(["_key"]).combine_chunks())
    return rest.add_column(0, "_key", keys)


class SharedTable:
    """The current version of an aggregate dataset, read whole and kept until CURRENT.json moves."""

    def __init__(self, dataset: str, cfg: Settings):
        self.dataset, self.cfg = dataset, cfg
        self.pointer = store.dataset_dir(dataset, cfg) / "CURRENT.json"
        self._lock = threading.Lock()
        self._loaded: tuple[str, list[dict[str, Any]]] | None = None

    def current(self) -> tuple[store.PublishedVersion, list[dict[str, Any]]]:
        """(version, rows as JSON-ready dicts, in published order). Raises DatasetUnavailable."""
        try:
            version = store.current(self.dataset, self.cfg)
        except store.NotPublishedError as exc:
            raise DatasetUnavailable(f"dataset {self.dataset} has not been published yet") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetUnavailable(f"dataset {self.dataset}: unreadable current version: {exc}") from exc
        with self._lock:
            if self._loaded is None or self._loaded[0] != version.version:
                _check_published_bytes(version)
                try:
                    rows = pq.read_table(version.data_path).to_pylist()
                except (OSError, pa.ArrowException) as exc:
                    problem = f"{self.dataset} version {version.version}: cannot read data: {exc}"
                    raise DatasetUnavailable(problem) from exc
                for row in rows:
                    for k, v in row.items():
                        if hasattr(v, "isoformat"):
                            row[k] = v.isoformat()
                self._loaded = (version.version, rows)
            return version, self._loaded[1]


def build_indexes(policy: AccessPolicy, cfg: Settings) -> dict[str, DatasetIndex]:
    """dataset -> its index, for every per-subject dataset some grant can return."""
    granted = {g.dataset for g in policy.grants.values()}
    wanted = [ds for ds in EVIDENCE_TYPES.values() if ds in granted]
    indexes: dict[str, DatasetIndex] = {}
    if HOUSEHOLD_DATASET in wanted:
        cols = policy.granted_columns(MEMBERSHIP_DATASET)
        members = DatasetIndex(
            MEMBERSHIP_DATASET, (*cols, MEMBERSHIP_COLUMN) if MEMBERSHIP_COLUMN not in cols else cols, cfg
        )
        indexes[MEMBERSHIP_DATASET] = members
        indexes[HOUSEHOLD_DATASET] = HouseholdIndex(policy.granted_columns(HOUSEHOLD_DATASET), cfg, members)
    for ds in wanted:
        if ds not in indexes:
            indexes[ds] = DatasetIndex(ds, policy.granted_columns(ds), cfg)
    return indexes


def build_shared_tables(cfg: Settings) -> dict[str, SharedTable]:
    return {ds: SharedTable(ds, cfg) for ds in SHARED_TABLES}
