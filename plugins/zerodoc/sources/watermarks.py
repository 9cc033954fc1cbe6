"""Incremental extraction windows: which cursor range a logical date reads, fixed once chosen.

State per entity lives in `$ZERODOC_HOME/state/watermarks/<agency>.<entity>.json`, written
atomically after the raw partition is committed. The first extraction of a logical date D takes
(high of the latest recorded date before D, D + 1 day]; a rerun of D reuses D's recorded window,
so it reads the same rows (byte-identical output) whatever the clock says. A date backfilled
between recorded ones ends where the next recorded window begins: nominal windows never overlap.

Late-arriving rows (committed after their window was read, or stamped back in time) are caught by
`lookback_hours`: a window reads from `low - lookback`, and every (key, cursor) pair that another
recorded partition already holds is dropped (`already_extracted`), so overlapping reads never
duplicate a row and each row version belongs to exactly one partition: the first that saw it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from zerodoc.config import Settings


@dataclass(frozen=True)
class Window:
    cursor: str
    low: dt.datetime | None  # exclusive; None = from the beginning
    high: dt.datetime  # inclusive
    lookback: dt.timedelta = dt.timedelta(0)

    @property
    def read_low(self) -> dt.datetime | None:
        """Where the read starts (exclusive): the window's low, minus the lookback."""
        return None if self.low is None else self.low - self.lookback

    def mask(self, batch: pa.RecordBatch) -> pa.Array:
        col = batch.column(batch.schema.get_field_index(self.cursor))
        high = pa.scalar(self.high, col.type)
        keep = pc.less_equal(col, high)
        if self.read_low is not None:
            keep = pc.and_(keep, pc.greater(col, pa.scalar(self.read_low, col.type)))
        return pc.fill_null(keep, False)

    def as_dict(self) -> dict:
        out = {"cursor": self.cursor, "low": self.low.isoformat() if self.low else None,
               "high": self.high.isoformat()}
        if self.lookback:
            out["lookback_hours"] = self.lookback // dt.timedelta(hours=1)
            out["read_low"] = self.read_low.isoformat() if self.read_low else None
        return out


def state_path(entity, cfg: Settings) -> Path:
    return cfg.state_dir / "watermarks" / f"{entity.agency}.{entity.name}.json"


def _load(entity, cfg: Settings) -> dict:
    path = state_path(entity, cfg)
    if not path.exists():
        return {"entity": entity.qualified, "cursor": entity.cursor, "windows": {}}
    return json.loads(path.read_text())


def _parse(v: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(v) if v else None


def window_for(entity, logical_date: str, cfg: Settings) -> Window:
    windows = _load(entity, cfg)["windows"]
    if logical_date in windows:
        w = windows[logical_date]
        # The recorded lookback, not today's config: a rerun reads what the first run read.
        return Window(entity.cursor, _parse(w["low"]), _parse(w["high"]),
                      dt.timedelta(hours=w.get("lookback_hours", 0)))
    earlier = [d for d in windows if d < logical_date]
    later = [d for d in windows if d > logical_date]
    low = _parse(windows[max(earlier)]["high"]) if earlier else None
    high = dt.datetime.combine(dt.date.fromisoformat(logical_date) + dt.timedelta(days=1), dt.time())
    if later:
        nxt = windows[min(later)]
        # The next recorded window starts where this one must end; one from the beginning leaves nothing.
        nxt_low = _parse(nxt["low"])
        high = min(high, nxt_low) if nxt_low is not None else (low or dt.datetime.min)
    if low is not None and high < low:
        high = low
    return Window(entity.cursor, low, high, dt.timedelta(hours=entity.lookback_hours))


WINDOW_REASON = "window of the rows changed since the previous extraction"


def extraction_mode(entity, logical_date: str, cfg: Settings) -> tuple[str, str]:
    """What `extract` takes for a logical date when the caller does not say: ("full" | "incremental",
    why). An entity configured `mode: incremental` takes a full snapshot on its `snapshot_weekday`
    and on its first extraction (nothing earlier to continue from), a window otherwise; a rerun of a
    date repeats what that date's first extraction took. Decided by the logical date and the recorded
    state only, never the clock."""
    from zerodoc.catalog import WEEKDAYS

    if entity.mode != "incremental":
        return "full", "configured mode: full"
    windows = _load(entity, cfg)["windows"]
    if logical_date in windows:  # same mode, same words: a rerun's manifest is byte-identical
        w = windows[logical_date]
        if w.get("mode") == "full":
            return "full", w.get("reason", "full snapshot")
        return "incremental", w.get("reason", WINDOW_REASON)
    if WEEKDAYS[dt.date.fromisoformat(logical_date).weekday()] == entity.snapshot_weekday:
        return "full", f"weekly full snapshot ({entity.snapshot_weekday})"
    if not any(d < logical_date for d in windows):
        return "full", "first extraction: no earlier snapshot or window to continue from"
    return "incremental", WINDOW_REASON


def overlapping_dates(entity, logical_date: str, window: Window, cfg: Settings) -> list[str]:
    """Other recorded logical dates whose read range meets this window's (read_low, high]. A full
    snapshot after this date does not count: it holds every row, without dropping what earlier windows
    took, so a rerun of an earlier window would otherwise lose its rows to it."""
    out = []
    for d, w in _load(entity, cfg)["windows"].items():
        if d == logical_date or (w.get("mode") == "full" and d > logical_date):
            continue
        lo, hi = _parse(w.get("read_low", w["low"])), _parse(w["high"])
        if (window.read_low is None or hi > window.read_low) and (lo is None or lo < window.high):
            out.append(d)
    return out


def pair_codes(keys, cursors) -> pa.Array:
    """(key, cursor) as one 16-byte value per row (both as int64), so a set lookup is one vectorised
    hash probe. A row with a NULL key or cursor gets a NULL code and never matches."""
    import numpy as np

    k = keys.cast(pa.int64())
    c = cursors.cast(pa.int64())
    n = len(k)
    packed = np.empty((n, 2), dtype="<i8")
    packed[:, 0] = k.fill_null(0).to_numpy(zero_copy_only=False)
    packed[:, 1] = c.fill_null(0).to_numpy(zero_copy_only=False)
    valid = pc.and_(pc.is_valid(k), pc.is_valid(c))
    codes = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(packed.tobytes())])
    return pc.if_else(valid, codes, pa.scalar(None, pa.binary(16)))


def already_extracted(entity, logical_date: str, window: Window, cfg: Settings) -> pa.Array:
    """The (key, cursor) codes of every row version another overlapping raw partition already holds,
    within this window's read range."""
    import pyarrow.parquet as pq

    from zerodoc.sources.extract import raw_partition

    codes = []
    for d in overlapping_dates(entity, logical_date, window, cfg):
        path = raw_partition(entity, d, cfg) / "part-0.parquet"
        if not path.is_file():
            continue
        t = pq.read_table(path, columns=[entity.key, entity.cursor])
        t = t.filter(window.mask(t))
        codes.append(pair_codes(t[entity.key].combine_chunks(), t[entity.cursor].combine_chunks()))
    if not codes:
        return pa.array([], pa.binary(16))
    return pc.unique(pa.concat_arrays(codes)).drop_null()


def drop_seen(batches, entity, seen: pa.Array):
    """Leave out the row versions in `seen`; rows within this extraction are never compared to each
    other (a duplicate key in the source stays for validation to reject)."""
    if len(seen) == 0:
        yield from batches
        return
    for batch in batches:
        codes = pair_codes(batch.column(batch.schema.get_field_index(entity.key)),
                           batch.column(batch.schema.get_field_index(entity.cursor)))
        hit = pc.fill_null(pc.is_in(codes, value_set=seen), False)
        yield batch.filter(pc.invert(hit)) if pc.any(hit).as_py() else batch


def record_window(entity, logical_date: str, window: Window, rows: int, checksum: str, cfg: Settings) -> None:
    from zerodoc.fsutil import write_json_atomic

    state = _load(entity, cfg)
    w = window.as_dict()
    state["windows"][logical_date] = {"low": w["low"], "high": w["high"], "rows": rows, "checksum": checksum}
    if window.lookback:
        state["windows"][logical_date] |= {"read_low": w["read_low"], "lookback_hours": w["lookback_hours"]}
    state["windows"] = dict(sorted(state["windows"].items()))
    write_json_atomic(state_path(entity, cfg), state)


def record_snapshot(entity, logical_date: str, rows: int, checksum: str, cfg: Settings, reason: str) -> None:
    """Record a full snapshot of an incremental entity as covering everything up to the end of its
    logical date: the next window starts there, and drops the row versions the snapshot already holds."""
    from zerodoc.fsutil import write_json_atomic

    state = _load(entity, cfg)
    high = dt.datetime.combine(dt.date.fromisoformat(logical_date) + dt.timedelta(days=1), dt.time())
    state["windows"][logical_date] = {"mode": "full", "reason": reason, "low": None, "high": high.isoformat(),
                                      "rows": rows, "checksum": checksum}
    state["windows"] = dict(sorted(state["windows"].items()))
    write_json_atomic(state_path(entity, cfg), state)


def backfill(qualified: str, start: str, end: str, cfg: Settings | None = None, mode: str | None = None) -> list:
    """Extract every logical date from `start` to `end` (inclusive), oldest first."""
    from zerodoc.sources.extract import extract

    d, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < d:
        raise ValueError(f"backfill range is empty: {start} > {end}")
    out = []
    while d <= last:
        out.append(extract(qualified, d.isoformat(), cfg, mode=mode))
        d += dt.timedelta(days=1)
    return out
