"""Tombstones reach the shared marts: staging deletes a tombstoned key, and deletes absent keys only
when the partition is a full snapshot (an incremental window holds only what changed)."""

from __future__ import annotations

import datetime as dt
import os

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.transform.conftest import DS, write_validated_zone
from zerodoc.config import Settings
from zerodoc.privacy import pseudonymize
from zerodoc.transform.runner import run_dbt

DAY2 = (dt.date.fromisoformat(DS) + dt.timedelta(days=1)).isoformat()
DAY3 = (dt.date.fromisoformat(DS) + dt.timedelta(days=2)).isoformat()
STAMP2 = dt.datetime(2025, 3, 2, 9, 0)
STAMP3 = dt.datetime(2025, 3, 3, 9, 0)
PAYLOAD = ["rrn", "name", "sex", "birth_date", "household_id", "sigungu_code", "address", "moved_in_date"]


def _residents(home, ds: str) -> pa.Table:
    return pq.read_table(home / "validated" / "mois" / "residents" / f"ds={ds}" / "part-0.parquet")


def _write_residents(home, ds: str, table: pa.Table) -> None:
    part = home / "validated" / "mois" / "residents" / f"ds={ds}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, part / "part-0.parquet")


def _copy_others(home, src: str, dst: str) -> None:
    """Every other entity's day-`src` partition, unchanged, as day `dst` (dbt reads each entity's own day)."""
    for part in sorted((home / "validated").glob("*/*")):
        if part.relative_to(home / "validated").parts == ("mois", "residents"):
            continue
        (part / f"ds={dst}").mkdir(parents=True, exist_ok=True)
        (part / f"ds={dst}" / "part-0.parquet").write_bytes((part / f"ds={src}" / "part-0.parquet").read_bytes())


def _with_ops(table: pa.Table, ops: list[str], deleted_at: list) -> pa.Table:
    """The raw shape of an entity with a soft-delete column: deleted_at, then _op; tombstones blanked."""
    table = table.append_column("deleted_at", pa.array(deleted_at, pa.timestamp("us")))
    dead = pa.array([op == "delete" for op in ops])
    for col in PAYLOAD:
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.if_else(dead, pa.scalar(None, table[col].type), table[col]))
    return table.append_column("_op", pa.array(ops, pa.string()))


def _pseudonym(rrn: str) -> str:
    return pseudonymize(rrn, os.environ["ZERODOC_PSEUDONYM_KEY"].encode())


def _state(cfg: Settings) -> tuple[dict[int, str], set[str]]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        staged = dict(con.execute("select resident_id, sigungu_code from staging.stg_mois__residents").fetchall())
        shared = {r[0] for r in con.execute("select subject_pseudonym from shared.residence_v1").fetchall()}
    return staged, shared


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    """Day 1: the tiny zone (no _op: a partition from before tombstones). Day 2: an incremental window
    with one tombstone (resident 4) and one change (resident 1 moved). Day 3: a full snapshot with a
    tombstone for resident 3, resident 5 simply absent, 1 and 2 present."""
    cfg = Settings(home=tmp_path_factory.mktemp("tombstone_home"))
    home = cfg.home
    write_validated_zone(home)
    states = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(home))
        run_dbt(["build", "--exclude-resource-type", "unit_test"], ds=DS, cfg=cfg)
        states[1] = _state(cfg)

        day1 = _residents(home, DS)
        moved = day1.filter(pc.equal(day1["resident_id"], 1))
        moved = moved.set_column(moved.schema.get_field_index("sigungu_code"), "sigungu_code",
                                 pa.array(["26350"])).set_column(
            moved.schema.get_field_index("updated_at"), "updated_at", pa.array([STAMP2], pa.timestamp("us")))
        gone = day1.filter(pc.equal(day1["resident_id"], 4))
        gone = gone.set_column(gone.schema.get_field_index("updated_at"), "updated_at",
                               pa.array([STAMP2], pa.timestamp("us")))
        _write_residents(home, DAY2, _with_ops(pa.concat_tables([moved, gone]), ["upsert", "delete"],
                                               [None, STAMP2]))
        _copy_others(home, DS, DAY2)
        run_dbt(["build", "--exclude-resource-type", "unit_test"], ds=DAY2, cfg=cfg)
        states[2] = _state(cfg)

        snap = pa.concat_tables([moved, day1.filter(pc.is_in(day1["resident_id"], pa.array([2, 3])))])
        snap = snap.set_column(snap.schema.get_field_index("updated_at"), "updated_at",
                               pa.array([STAMP2, day1["updated_at"][1].as_py(), STAMP3], pa.timestamp("us")))
        _write_residents(home, DAY3, _with_ops(snap, ["snapshot", "snapshot", "delete"], [None, None, STAMP3]))
        _copy_others(home, DS, DAY3)
        run_dbt(["build", "--exclude-resource-type", "unit_test"], ds=DAY3, cfg=cfg)
        states[3] = _state(cfg)
    return states


def test_day1_partition_without_op_builds_as_before(three_days):
    staged, shared = three_days[1]
    assert sorted(staged) == [1, 2, 3, 4, 5]
    assert _pseudonym("900404-1111111") in shared


def test_incremental_tombstone_removes_the_person_and_nothing_absent(three_days):
    staged, shared = three_days[2]
    # 4 is tombstoned; 2, 3 and 5 are not in the window but stay: an incremental window is no snapshot.
    assert sorted(staged) == [1, 2, 3, 5]
    assert staged[1] == "26350"  # the upsert in the same window is applied
    assert _pseudonym("900404-1111111") not in shared  # 박서준 left the registry: gone from residence_v1
    assert _pseudonym("800101-1234567") in shared


def test_snapshot_tombstone_and_vanished_rows_are_both_removed(three_days):
    staged, shared = three_days[3]
    assert sorted(staged) == [1, 2]  # 3 by its tombstone, 5 because a full snapshot no longer has it
    assert _pseudonym("100303-3456789") not in shared  # 김민준 (resident 3)
    assert {_pseudonym("800101-1234567"), _pseudonym("820202-2345678")} <= shared
