"""GX's Pandas engine and our DuckDB path count the same unexpected rows for every check of every suite."""

from __future__ import annotations

from pathlib import Path

import great_expectations as gx
import pyarrow as pa
import pytest

from zerodoc.config import settings
from zerodoc.quality.suite import load_suite, to_gx_suite
from zerodoc.quality.validate import validate_partition

from .support import (
    HOUSEHOLD_SCHEMA,
    INCOME_SCHEMA,
    RESIDENT_SCHEMA,
    household,
    income,
    make_rrn,
    planted_residents,
    write_raw,
)

DS = "2024-05-01"


def _households() -> list[dict]:
    rows = [household(i) for i in range(1, 31)]
    rows[0]["household_id"] = None
    rows[1]["household_id"] = 5
    rows[2]["registered_date"] = "2010010"
    rows[3]["registered_date"] = None
    rows[4]["sigungu_code"] = "26 110"
    rows[5]["head_resident_id"] = None
    return rows


def _income() -> list[dict]:
    rows = [income(i) for i in range(1, 41)]
    rows[0]["tax_year"] = 2101
    rows[1]["tax_year"] = 2000  # boundary: allowed
    rows[2]["other_income"] = -1
    rows[3]["earned_income"] = None
    rows[4]["rrn"] = make_rrn("200930", "4", bad_check=True)
    rows[5]["rrn"] = make_rrn("201001", "4", bad_check=True)  # allowed: post-October-2020 number
    rows[6]["rrn"] = make_rrn("850615", "6")  # foreigner, valid
    rows[7]["filed_date"] = "20240229"  # leap day, valid
    rows[8]["filed_date"] = "20230229"
    rows[9]["income_id"] = None
    return rows


CASES = {
    "mois__residents": ("mois", "residents", RESIDENT_SCHEMA, lambda: planted_residents(120)[0]),
    "mois__households": ("mois", "households", HOUSEHOLD_SCHEMA, _households),
    "nts__income": ("nts", "income", INCOME_SCHEMA, _income),
}


def _pandas_counts(suite_name: str, df) -> dict[str, int]:
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("p")
        .add_dataframe_asset("a")
        .add_batch_definition_whole_dataframe("b")
        .get_batch(batch_parameters={"dataframe": df})
    )
    result = batch.validate(
        to_gx_suite(load_suite(suite_name, settings().expectations_dir)), result_format="SUMMARY"
    )
    return {r.expectation_config.meta["zerodoc_id"]: r.result["unexpected_count"] for r in result.results}


@pytest.mark.parametrize("suite_name", list(CASES))
def test_pandas_and_duckdb_agree(suite_name: str, zerodoc_home: Path) -> None:
    agency, entity, schema, rows = CASES[suite_name]
    table = pa.Table.from_pylist(rows(), schema=schema)
    raw = write_raw(zerodoc_home, agency, entity, DS, table.to_pylist(), schema)
    duck = {c.id: c.unexpected_count for c in validate_partition(suite_name, raw, DS).checks}
    pandas = _pandas_counts(suite_name, table.to_pandas())
    assert pandas == duck
    assert sum(duck.values()) > 0, "the sample must exercise the checks"
