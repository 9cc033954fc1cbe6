"""A daily (incremental) build after a change equals a full rebuild of the same data, row for row, for every model."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zerodoc.config import Settings
from zerodoc.transform.runner import run_dbt

from .conftest import DS, write_validated_zone

DAY2 = (dt.date.fromisoformat(DS) + dt.timedelta(days=1)).isoformat()
BUMPED = pa.scalar(dt.datetime(2025, 3, 1, 18, 0), pa.timestamp("us"))
SCHEMAS = ("staging", "intermediate", "shared")


def _bump(table: pa.Table, key: str, ids: set[int], **changes: object) -> pa.Table:
    """Set columns on the rows whose key is in ids and bump their updated_at, as the agency does on a change."""
    hit = pc.is_in(table[key], pa.array(sorted(ids), table[key].type))
    for col, value in {**changes, "updated_at": BUMPED}.items():
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.if_else(hit, pa.scalar(value, table[col].type), table[col]))
    return table


def _append(table: pa.Table, row: dict[str, object]) -> pa.Table:
    extra = pa.table({f.name: pa.array([row[f.name]], f.type) for f in table.schema})
    return pa.concat_tables([table, extra])


def write_day2(home) -> None:
    """Day 2 = day 1 with a move, removals, a new person, a corrected and a withdrawn return, a lost job and a new case.

    Removals: resident 5 (a duplicate registry row of a person who keeps another row) and resident 3
    (the person's only row: they vanish from the spine and their household shrinks); income 1 (one
    of two tax years of a person, the kept filing of that year).
    """
    src = home / "validated"

    def read(agency: str, entity: str) -> pa.Table:
        return pq.read_table(src / agency / entity / f"ds={DS}" / "part-0.parquet")

    residents = _bump(read("mois", "residents"), "resident_id", {4}, sigungu_code="11110")
    residents = residents.filter(pc.invert(pc.is_in(residents["resident_id"], pa.array([3, 5], pa.int64()))))
    residents = _append(residents, {
        "resident_id": 6, "rrn": "010606-4123456", "name": "최지우", "sex": "F", "birth_date": "20010606",
        "household_id": 300, "sigungu_code": "41590", "address": "경기도 화성시 시청로 159",
        "moved_in_date": "20250301", "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    households = _append(read("mois", "households"), {
        "household_id": 300, "head_resident_id": 6, "sigungu_code": "41590", "address": "경기도 화성시 시청로 159",
        "registered_date": "20250301", "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    incomes = _bump(read("nts", "income"), "income_id", {2}, earned_income=5_000_000)
    incomes = incomes.filter(pc.not_equal(incomes["income_id"], 1))
    enrolments = _bump(read("moel", "employment_insurance"), "enrolment_id", {1}, lost_date=DAY2.replace("-", ""))
    cases = _append(read("police", "crime_victim_cases"), {
        "case_id": 5, "victim_rrn": "010606-4123456", "crime_type": "상해", "incident_date": "20250228",
        "reported_date": "20250301", "police_station_code": "PS1001", "sigungu_code": "41590",
        "summary": "피해 진술 접수", "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    for agency, entity, table in (
        ("mois", "residents", residents),
        ("mois", "households", households),
        ("nts", "income", incomes),
        ("moel", "employment_insurance", enrolments),
        ("police", "crime_victim_cases", cases),
    ):
        part = src / agency / entity / f"ds={DAY2}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-0.parquet")


def _snapshot(cfg: Settings) -> dict[str, list[tuple]]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables where table_schema in ? order by all",
            [list(SCHEMAS)],
        ).fetchall()
        return {f"{s}.{t}": con.execute(f'select * from "{s}"."{t}" order by all').fetchall() for s, t in names}


@pytest.fixture(scope="module")
def day2_both_ways(tmp_path_factory: pytest.TempPathFactory):
    """Day 1 built once; then day 2 built incrementally in one copy and with --full-refresh in another."""
    daily = Settings(home=tmp_path_factory.mktemp("daily_home"))
    write_validated_zone(daily.home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(daily.home))
        run_dbt(["build"], ds=DS, cfg=daily)
    day1 = _snapshot(daily)
    write_day2(daily.home)
    full = Settings(home=tmp_path_factory.mktemp("full_home"))
    shutil.copytree(daily.home / "validated", full.home / "validated")
    full.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(daily.warehouse_path, full.warehouse_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(daily.home))
        run_dbt(["build", "--exclude-resource-type", "unit_test"], ds=DAY2, cfg=daily)
        mp.setenv("ZERODOC_HOME", str(full.home))
        run_dbt(["build", "--full-refresh"], ds=DAY2, cfg=full)
    return day1, _snapshot(daily), _snapshot(full)


def test_daily_build_after_a_change_equals_a_full_rebuild(day2_both_ways):
    day1, daily, full = day2_both_ways
    shared = [n for n in full if n.startswith("shared.") and n != "shared.build_as_of"]
    assert len(shared) == 8, shared
    assert daily["shared.build_as_of"] == full["shared.build_as_of"] == [(dt.date.fromisoformat(DAY2),)]
    assert sorted(daily) == sorted(full)
    for name in full:
        assert daily[name] == full[name], f"{name}: the daily build differs from a full rebuild"
    # The fixture really changed things: the comparison is not of two unchanged copies of day 1.
    changed = {n for n in full if day1.get(n) != full[n]}
    assert {
        "staging.stg_mois__residents", "staging.stg_nts__incomes", "intermediate.int_residents_deduplicated",
        "intermediate.int_incomes_latest_filing", "intermediate.int_persons", "shared.income_v1",
        "shared.residence_v1", "shared.employment_v1", "shared.victim_support_eligibility_v1",
    } <= changed  # fmt: skip
    # Resident 3 (their only row) vanished, 6 is new, 5 was a duplicate row never kept.
    assert sorted(r[0] for r in day1["intermediate.int_residents_deduplicated"]) == [1, 2, 3, 4]
    assert sorted(r[0] for r in daily["intermediate.int_residents_deduplicated"]) == [1, 2, 4, 6]
