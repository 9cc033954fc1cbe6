"""The dbt bench's day 2: day 1 linked as is, about 1 % of rows changed (updated_at only), nothing else
touched; the daily run reads it as a window of the changed rows, the full build as a full snapshot."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("dbt_bench", REPO / "bench" / "dbt_bench.py")
dbt_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dbt_bench)

DAY1, DAY2 = "2026-11-01", "2026-11-02"
N = 20_000


def test_day_two_changes_about_one_percent_of_rows(tmp_path):
    big, home = tmp_path / "big", tmp_path / "bench"
    part = big / "validated" / "mois" / "residents" / f"ds={DAY1}"
    part.mkdir(parents=True)
    stamp = dt.datetime(2026, 10, 31, 12)
    pq.write_table(pa.table({
        "resident_id": pa.array(range(N), pa.int64()),
        "sigungu_code": pa.array(["11110"] * N),
        "updated_at": pa.array([stamp] * N, pa.timestamp("us")),
    }), part / "part-0.parquet")  # fmt: skip

    changed = dbt_bench.prepare_home(big, home, DAY1, DAY2)

    day1 = home / "validated" / "mois" / "residents" / f"ds={DAY1}"
    assert day1.is_symlink() and day1.resolve() == part.resolve()
    assert set(changed) == {"mois.residents"}  # entities without a day-1 partition are skipped
    day2 = home / "validated" / "mois" / "residents" / f"ds={DAY2}" / "part-0.parquet"
    dbt_bench.use_day2(home, DAY2, "snapshot")
    with duckdb.connect() as con:
        rows, bumped, other = con.execute(
            f"select count(*), count_if(updated_at = timestamp '2026-11-01 12:00:00'), "
            f"count_if(sigungu_code <> '11110') from '{day2}'"
        ).fetchone()
    assert rows == N and other == 0
    assert bumped == changed["mois.residents"]
    assert 0.005 * N < bumped < 0.02 * N
    # The daily run's day 2: only the changed rows, as incremental extraction delivers them.
    dbt_bench.use_day2(home, DAY2, "window")
    with duckdb.connect() as con:
        rows, ops, stamps = con.execute(
            f"select count(*), list(distinct _op), list(distinct updated_at) from '{day2}'"
        ).fetchone()
    assert rows == bumped and ops == ["upsert"] and stamps == [dt.datetime(2026, 11, 1, 12)]


def test_csv_drops_stay_snapshots_in_the_daily_run(tmp_path):
    """MOEL is a CSV drop: no window can be extracted, so both runs read the same full snapshot."""
    big, home = tmp_path / "big", tmp_path / "bench"
    for agency, entity, key in (("mois", "residents", "resident_id"), ("moel", "employment_insurance", "enrolment_id")):
        part = big / "validated" / agency / entity / f"ds={DAY1}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({
            key: pa.array(range(N), pa.int64()),
            "updated_at": pa.array([dt.datetime(2026, 10, 31, 12)] * N, pa.timestamp("us")),
        }), part / "part-0.parquet")  # fmt: skip
    dbt_bench.prepare_home(big, home, DAY1, DAY2)
    dbt_bench.use_day2(home, DAY2, "window")
    moel = home / "validated" / "moel" / "employment_insurance" / f"ds={DAY2}"
    assert moel.resolve() == (home / "day2" / "snapshot" / "moel" / "employment_insurance").resolve()
    assert pq.read_metadata(moel / "part-0.parquet").num_rows == N


def test_fingerprints_tell_equal_tables_from_different_ones(tmp_path):
    wh = tmp_path / "w.duckdb"
    with duckdb.connect(str(wh)) as con:
        con.execute("create schema shared; create table shared.a as select range as k, 'x' as v from range(100)")
        con.execute("create schema intermediate; create table intermediate.int_person_changes (k int)")
    before = dbt_bench.fingerprint(wh)
    assert list(before) == ["shared.a"] and before["shared.a"][0] == 100  # run state is not compared
    with duckdb.connect(str(wh)) as con:
        con.execute("update shared.a set v = 'y' where k = 7")
    assert dbt_bench.fingerprint(wh) != before


def test_both_sides_of_the_orchestration_ratio_run_the_pipelines_daily_build():
    from zerodoc.transform.runner import DAILY_BUILD_ARGS

    assert ("build", *dbt_bench.DAILY_ARGS) == DAILY_BUILD_ARGS
