"""A day of changes at an agency, applied to a generated stand-in: soft deletes, ordinary updates
and late corrections (committed on the day but stamped back into an earlier window), seeded so
tests assert exact counts.

The stand-in Parquet is rewritten in place (same row order); `zerodoc.sources.servers.load_servers`
then puts the changed table into PostgreSQL / MariaDB, and the REST server serves it as is.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zerodoc.config import Settings

DELETED_AT = dt.time(9, 0)  # the agency's cancellations land in the morning batch
UPDATED_AT = dt.time(10, 0)


@dataclass(frozen=True)
class ChangeSet:
    entity: str
    day: str
    deleted: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    late_stamp: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def apply_changes(qualified: str, day: str, cfg: Settings, seed: int, *, deletions: int = 0, updates: int = 0,
                  late: int = 0, late_by_hours: int = 30, delete_keys: Sequence[int] = (),
                  exclude: Sequence[int] = ()) -> ChangeSet:
    """Change `deletions + updates + late` distinct live, single-row records of `qualified` on `day`,
    none of them in `exclude`; `delete_keys` are soft-deleted as well (the caller's choice).

    Deleted rows get `deleted_column` (and the cursor) stamped `day 09:00`; updated rows get the
    cursor `day 10:00`; late rows get it `late_by_hours` earlier than that, i.e. inside a window
    that may already have been extracted. Records whose key appears more than once (the planted
    duplicate-key defects) are never picked, so each change touches exactly one row.
    """
    from zerodoc.catalog import entity as lookup
    from zerodoc.sources.extract import stand_in_path

    ent = lookup(qualified)
    if ent.cursor is None:
        raise ValueError(f"{qualified} has no cursor column to stamp changes with")
    if (deletions or delete_keys) and ent.deleted_column is None:
        raise ValueError(f"{qualified} declares no deleted_column: it cannot soft-delete")
    path = stand_in_path(ent, cfg)
    table = pq.read_table(path)
    keys = table[ent.key].to_numpy(zero_copy_only=False)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    candidates = np.sort(first[counts == 1])
    fixed = np.flatnonzero(np.isin(keys, np.asarray(delete_keys, dtype=keys.dtype)))
    if len(fixed) != len(set(delete_keys)):
        raise ValueError(f"{qualified}: delete_keys must each name one row")
    candidates = candidates[~np.isin(keys[candidates], np.asarray(list(exclude) + list(delete_keys),
                                                                  dtype=keys.dtype))]
    if ent.deleted_column is not None:
        col = table[ent.deleted_column]
        live = pc.invert(pc.fill_null(col, False)) if pa.types.is_boolean(col.type) else pc.is_null(col)
        candidates = candidates[live.to_numpy(zero_copy_only=False)[candidates]]
    wanted = deletions + updates + late
    if wanted > len(candidates):
        raise ValueError(f"{qualified}: {wanted} changes asked, {len(candidates)} records can take one")
    date = dt.date.fromisoformat(day)
    rng = np.random.default_rng([seed, date.toordinal(), zlib.crc32(qualified.encode())])
    picked = rng.choice(candidates, wanted, replace=False)
    rows = {"deleted": np.sort(np.concatenate([picked[:deletions], fixed]).astype(np.int64)),
            "updated": np.sort(picked[deletions:deletions + updates]),
            "late": np.sort(picked[deletions + updates:])}

    deleted_stamp = dt.datetime.combine(date, DELETED_AT)
    updated_stamp = dt.datetime.combine(date, UPDATED_AT)
    late_stamp = updated_stamp - dt.timedelta(hours=late_by_hours)
    cursor = table[ent.cursor].to_numpy(zero_copy_only=False).copy()
    cursor[rows["deleted"]] = np.datetime64(deleted_stamp, "us")
    cursor[rows["updated"]] = np.datetime64(updated_stamp, "us")
    cursor[rows["late"]] = np.datetime64(late_stamp, "us")
    table = table.set_column(table.schema.get_field_index(ent.cursor), ent.cursor,
                             pa.array(cursor, table.schema.field(ent.cursor).type))
    if len(rows["deleted"]):
        i = table.schema.get_field_index(ent.deleted_column)
        col = table[ent.deleted_column]
        hit = np.zeros(table.num_rows, dtype=bool)
        hit[rows["deleted"]] = True
        mark = pa.scalar(True) if pa.types.is_boolean(col.type) else pa.scalar(deleted_stamp, col.type)
        table = table.set_column(i, ent.deleted_column, pc.if_else(pa.array(hit), mark, col).cast(col.type))
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=122_880, compression="zstd")
    tmp.replace(path)
    return ChangeSet(
        qualified, day,
        deleted=[int(k) for k in keys[rows["deleted"]]],
        updated=[int(k) for k in keys[rows["updated"]]],
        late=[int(k) for k in keys[rows["late"]]],
        late_stamp=late_stamp.isoformat() if late else None,
    )
