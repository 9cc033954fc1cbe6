"""The declared sources and datasets (config/*.yml), loaded once and validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from zerodoc.config import REPO_ROOT, ConfigError

ARROW_TYPES = {"int32", "int64", "string", "timestamp", "date", "float64", "bool"}
KINDS = ("postgres", "mysql", "file", "csv", "rest")
SCHEMA_POLICIES = ("fail", "evolve")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Entity:
    agency: str
    name: str
    table: str
    key: str
    suite: str
    columns: dict[str, str]
    kind: str = "file"
    # Column whose value only grows (updated_at or a sequence): enables incremental extraction.
    cursor: str | None = None
    # What a header that differs from `columns` does: fail the task, or evolve (drop unknown
    # columns, missing ones become NULL, and every row carries a `schema_drift` flag).
    on_schema_drift: str = "fail"
    # full: every run takes the whole table; incremental: the rows whose cursor lies in the
    # logical date's window (zerodoc.sources.watermarks).
    mode: str = "full"
    # Soft-delete column (deleted_at timestamp, or an is_deleted bool): a row with it set is a
    # tombstone in raw (`_op = 'delete'`), its payload blanked; staging removes the record.
    deleted_column: str | None = None
    # Incremental windows re-read this many hours before their start, so rows committed late or
    # stamped back in time are still picked up; (key, cursor) pairs already extracted are skipped.
    lookback_hours: int = 0
    # Incremental entities take a full snapshot on this weekday (and on their first extraction):
    # only a snapshot sees a physical delete or a row stamped back beyond the lookback.
    snapshot_weekday: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.agency}.{self.name}"


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    owner: str
    sensitivity: str
    conn_id: str
    kind: str
    entities: dict[str, Entity] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    name: str
    model: str
    description: str
    inputs: tuple[str, ...]
    retain_versions: int


@lru_cache(maxsize=4)
def agencies(path: Path = REPO_ROOT / "config" / "sources.yml") -> dict[str, Agency]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    out: dict[str, Agency] = {}
    for code, spec in doc["agencies"].items():
        if spec.get("kind") not in KINDS:
            raise ConfigError(f"{path}: agency {code}: kind must be one of {', '.join(KINDS)}")
        ents = {}
        for ename, e in spec["entities"].items():
            bad = {c: t for c, t in e["columns"].items() if t not in ARROW_TYPES}
            if bad:
                raise ConfigError(f"{path}: {code}.{ename}: unknown column types {bad}")
            if e["key"] not in e["columns"]:
                raise ConfigError(f"{path}: {code}.{ename}: key {e['key']!r} is not a declared column")
            cursor = e.get("cursor")
            if cursor is not None and cursor not in e["columns"]:
                raise ConfigError(f"{path}: {code}.{ename}: cursor {cursor!r} is not a declared column")
            policy = e.get("on_schema_drift", "fail")
            if policy not in SCHEMA_POLICIES:
                raise ConfigError(f"{path}: {code}.{ename}: on_schema_drift must be one of {SCHEMA_POLICIES}")
            mode = e.get("mode", "full")
            if mode not in ("full", "incremental"):
                raise ConfigError(f"{path}: {code}.{ename}: mode must be full or incremental")
            if mode == "incremental" and (cursor is None or spec["kind"] == "csv"):
                raise ConfigError(f"{path}: {code}.{ename}: incremental mode needs a cursor and a non-CSV source")
            deleted = e.get("deleted_column")
            if deleted is not None and e["columns"].get(deleted) not in ("timestamp", "bool"):
                raise ConfigError(f"{path}: {code}.{ename}: deleted_column {deleted!r} must be a declared "
                                  f"timestamp or bool column")
            lookback = e.get("lookback_hours", 0)
            if not isinstance(lookback, int) or lookback < 0 or (lookback and cursor is None):
                raise ConfigError(f"{path}: {code}.{ename}: lookback_hours must be a whole number >= 0 "
                                  f"and needs a cursor")
            weekday = e.get("snapshot_weekday")
            if weekday is not None and weekday not in WEEKDAYS:
                raise ConfigError(f"{path}: {code}.{ename}: snapshot_weekday must be one of {', '.join(WEEKDAYS)}")
            if mode == "incremental" and weekday is None:
                raise ConfigError(
                    f"{path}: {code}.{ename}: incremental mode needs snapshot_weekday: windows never see a "
                    f"physical delete or a row stamped back more than lookback_hours, a weekly full snapshot does")
            if mode == "full" and weekday is not None:
                raise ConfigError(f"{path}: {code}.{ename}: snapshot_weekday applies to mode: incremental only "
                                  f"(mode: full takes a snapshot every day)")
            ents[ename] = Entity(
                code, ename, e["table"], e["key"], e["suite"], dict(e["columns"]),
                kind=spec["kind"], cursor=cursor, on_schema_drift=policy, mode=mode,
                deleted_column=deleted, lookback_hours=lookback, snapshot_weekday=weekday,
            )
        out[code] = Agency(
            code, spec["name"], spec["owner"], spec["sensitivity"], spec["conn_id"], spec["kind"], ents
        )
    return out


def entity(qualified: str) -> Entity:
    agency, name = qualified.split(".", 1)
    try:
        return agencies()[agency].entities[name]
    except KeyError as exc:
        raise ConfigError(f"unknown entity {qualified!r}; declared in config/sources.yml") from exc


@lru_cache(maxsize=4)
def datasets(path: Path = REPO_ROOT / "config" / "datasets.yml") -> dict[str, Dataset]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = {}
    for name, spec in doc["datasets"].items():
        for q in spec["inputs"]:
            entity(q)
        out[name] = Dataset(
            name, spec["model"], spec["description"], tuple(spec["inputs"]), int(spec["retain_versions"])
        )
    return out
