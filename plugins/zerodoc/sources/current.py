"""What an entity holds as of a logical date when it arrives as a weekly snapshot plus daily windows.

A window holds only the rows that changed, so one date's validated or quarantine partition no
longer says who is quarantined *now*: a record rejected on Sunday's snapshot and unchanged since
is in no later partition, yet still has no valid version. The state as of date D is the latest
snapshot on or before D followed by every window after it (`chain`); a key's latest version in that
chain decides (`open_quarantine_sql`, `current_rows_sql`). For an entity extracted as a snapshot
every day the chain is that one date, and both read what a single partition says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from zerodoc.catalog import Entity
from zerodoc.config import Settings
from zerodoc.sql import sql_literal


def _partition(zone: Path, entity: Entity, ds: str) -> Path:
    return zone / entity.agency / entity.name / f"ds={ds}" / "part-0.parquet"


def chain(entity: Entity, logical_date: str, cfg: Settings) -> list[str]:
    """Oldest first: the latest full snapshot on or before `logical_date`, then every window up to it.
    With no snapshot at all (windows from the beginning), every extracted date up to it; with no raw
    partition at all (zones written by other means), the date itself."""
    root = cfg.raw_dir / entity.agency / entity.name
    dates = sorted(
        d.name.removeprefix("ds=") for d in root.glob("ds=*")
        if d.name.removeprefix("ds=") <= logical_date and (d / "_manifest.json").is_file()
    )
    out: list[str] = []
    for ds in reversed(dates):
        out.append(ds)
        manifest = json.loads((root / f"ds={ds}" / "_manifest.json").read_text(encoding="utf-8"))
        if "window" not in manifest:  # a full snapshot: nothing before it counts
            break
    return out[::-1] or [logical_date]


def open_quarantine_sql(entity: Entity, logical_date: str, cfg: Settings) -> tuple[str, set[str]] | None:
    """SQL for the quarantined rows whose key has no later version in the chain (still quarantined as
    of `logical_date`), and their column names. A row without a key cannot be superseded and stays
    until the next snapshot. None when no date of the chain quarantined anything."""
    dates = chain(entity, logical_date, cfg)
    quarantined = [(d, p) for d in dates if (p := _partition(cfg.quarantine_dir, entity, d)).is_file()]
    if not quarantined:
        return None
    key = entity.key
    columns = set().union(*(pq.read_schema(p).names for _, p in quarantined))
    q = " UNION ALL BY NAME ".join(
        f"SELECT *, {key} AS _zd_key, {sql_literal(d)} AS _zd_ds FROM read_parquet({sql_literal(str(p))})"
        for d, p in quarantined
    )
    if len(dates) == 1:
        return f"SELECT * EXCLUDE (_zd_key, _zd_ds) FROM ({q})", columns
    # Later versions: validated rows (tombstones included) of later windows, and later quarantined rows.
    later = [
        f"SELECT {key} AS _zd_key, {sql_literal(d)} AS _zd_ds FROM read_parquet({sql_literal(str(p))})"
        for d in dates[1:] if (p := _partition(cfg.validated_dir, entity, d)).is_file()
    ] + ["SELECT _zd_key, _zd_ds FROM q_rows"]
    return (
        f"WITH q_rows AS ({q}), later AS ({' UNION ALL '.join(later)}) "
        f"SELECT * EXCLUDE (_zd_key, _zd_ds) FROM q_rows r "
        f"WHERE NOT EXISTS (SELECT 1 FROM later l WHERE l._zd_key = r._zd_key AND l._zd_ds > r._zd_ds)"
    ), columns


def current_rows_sql(entity: Entity, logical_date: str, cfg: Settings, columns: list[str],
                     where: str = "TRUE") -> str | None:
    """SQL for each key's latest version in the chain (validated or quarantined, not a tombstone), with
    `columns`; `where` (over those columns) picks the candidate keys first, so a key matches when any
    of its versions does and the latest version still must. None when nothing was extracted."""
    key = entity.key
    parts = []
    for d in chain(entity, logical_date, cfg):
        for zone in (cfg.validated_dir, cfg.quarantine_dir):
            p = _partition(zone, entity, d)
            if not p.is_file():
                continue
            op = "_op" if "_op" in pq.read_schema(p).names else "NULL::VARCHAR"
            parts.append(
                f"SELECT {key} AS _zd_key, {sql_literal(d)} AS _zd_ds, {op} AS _zd_op, {', '.join(columns)} "
                f"FROM read_parquet({sql_literal(str(p))})"
            )
    if not parts:
        return None
    rows = " UNION ALL ".join(parts)
    return (
        f"WITH v AS ({rows}), candidates AS (SELECT DISTINCT _zd_key FROM v WHERE {where}), "
        f"latest AS (SELECT * FROM v WHERE _zd_key IN (SELECT _zd_key FROM candidates) "
        # Every row of the key's latest date: copies of a duplicated key are all rejected, all kept.
        f"QUALIFY _zd_ds = max(_zd_ds) OVER (PARTITION BY _zd_key) "
        # A row without a key is nobody's earlier version: each stands alone.
        f"UNION ALL SELECT * FROM v WHERE _zd_key IS NULL) "
        f"SELECT {', '.join(columns)} FROM latest WHERE coalesce(_zd_op, '') <> 'delete' AND ({where})"
    )
