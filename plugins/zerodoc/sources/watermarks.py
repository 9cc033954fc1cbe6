"""Incremental extraction windows: which cursor range a logical date reads, fixed once chosen.

State per entity lives in `$ZERODOC_HOME/state/watermarks/<agency>.<entity>.json`, written
atomically after the raw partition is committed. The first extraction of a logical date D takes
(high of the latest recorded date before D, D + 1 day]; a rerun of D reuses D's recorded window,
so it reads the same rows (byte-identical output) whatever the clock says. A date backfilled
between recorded ones ends where the next recorded window begins: windows never overlap, so
two runs never duplicate a row.
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

    def mask(self, batch: pa.RecordBatch) -> pa.Array:
        col = batch.column(batch.schema.get_field_index(self.cursor))
        high = pa.scalar(self.high, col.type)
        keep = pc.less_equal(col, high)
        if self.low is not None:
            keep = pc.and_(keep, pc.greater(col, pa.scalar(self.low, col.type)))
        return pc.fill_null(keep, False)

    def as_dict(self) -> dict:
        return {"cursor": self.cursor, "low": self.low.isoformat() if self.low else None,
                "high": self.high.isoformat()}


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
        return Window(entity.cursor, _parse(w["low"]), _parse(w["high"]))
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
    return Window(entity.cursor, low, high)


def record_window(entity, logical_date: str, window: Window, rows: int, checksum: str, cfg: Settings) -> None:
    from zerodoc.fsutil import write_json_atomic

    state = _load(entity, cfg)
    w = window.as_dict()
    state["windows"][logical_date] = {"low": w["low"], "high": w["high"], "rows": rows, "checksum": checksum}
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
