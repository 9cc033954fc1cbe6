"""The custom expectations: Python rules, DuckDB macros and both GX engines give the same verdict."""

from __future__ import annotations

from pathlib import Path

import duckdb
import great_expectations as gx
import pandas as pd
import pytest

import zerodoc.quality  # noqa: F401  (registers the custom expectations, patches GX for DuckDB)
from zerodoc.quality.expectations import (
    ExpectColumnValuesToBeExistingRegionCode,
    ExpectColumnValuesToBePlausibleHangulName,
    ExpectColumnValuesToBeValidBusinessRegistrationNumber,
    ExpectColumnValuesToBeValidForeignRegistrationNumber,
)
from zerodoc.quality.identifiers import (
    brn_check_digit,
    brn_reason,
    duckdb_macros_sql,
    frn_reason,
    is_existing_region_code,
    is_plausible_hangul_name,
    is_valid_brn,
    is_valid_frn,
    region_codes,
    region_regex,
)
from zerodoc.quality.suite import Check, unexpected_predicate

from .support import make_brn, make_rrn

# ---- foreign registration number -------------------------------------------------------------------
FRN_VALID = [
    make_rrn("850615", "5"),  # born 1985, male
    make_rrn("991231", "6"),  # born 1999, female
    make_rrn("000229", "7"),  # 2000 is a leap year (century divisible by 400)
    make_rrn("200930", "8"),  # last birth date whose check digit is enforced
    "201001-7999999",  # from October 2020 the check digit is random
    "240229-8000000",  # post-2020 leap day
]
FRN_INVALID = {
    make_rrn("850615", "1"): "is not 5-8",  # a citizen's number
    make_rrn("050101", "3"): "is not 5-8",
    make_rrn("850615", "5", bad_check=True): "check digit",
    make_rrn("200930", "7", bad_check=True): "check digit",
    make_rrn("000229", "5"): "does not exist",  # 1900 is not a leap year
    make_rrn("010229", "7"): "does not exist",  # 2001 is not a leap year
    make_rrn("851301", "5"): "does not exist",
    "850615-9123456": "is not 5-8",
    "8506155123456": "not in the form",
    None: "missing",
}


@pytest.mark.parametrize("value", FRN_VALID)
def test_valid_foreign_registration_numbers(value: str) -> None:
    assert frn_reason(value) is None


@pytest.mark.parametrize(("value", "why"), list(FRN_INVALID.items()))
def test_invalid_foreign_registration_numbers(value: str | None, why: str) -> None:
    assert why in frn_reason(value)
    assert not is_valid_frn(value)


def test_foreigner_check_digit_uses_base_13() -> None:
    citizen_style = make_rrn("850615", "1")[:7] + "5" + make_rrn("850615", "1")[8:]
    assert citizen_style != make_rrn("850615", "5")
    assert "check digit" in frn_reason(citizen_style)


# ---- business registration number ------------------------------------------------------------------
BRN_VALID = [
    "124-81-00998",  # a real, published number
    make_brn("220816251"),
    make_brn("000000000"),  # check 0
    make_brn("123456789"),  # d9 = 9: floor(9 * 5 / 10) = 4 is added
    make_brn("999999995"),  # d9 = 5: floor(25 / 10) = 2
]
BRN_INVALID = {
    "124-81-00997": "check digit",
    make_brn("123456789", bad_check=True): "check digit",
    "1248100998": "not in the form",
    "124-8-100998": "not in the form",
    "12A-81-00998": "not in the form",
    "124-81-009981": "not in the form",
    None: "missing",
}


def test_brn_check_digit_formula() -> None:
    # 1*1+2*3+4*7+8*1+1*3+0*7+0*1+9*3+9*5 = 118, + floor(45/10) = 122 -> (10 - 2) % 10 = 8
    assert brn_check_digit("124810099") == 8


@pytest.mark.parametrize("value", BRN_VALID)
def test_valid_business_registration_numbers(value: str) -> None:
    assert brn_reason(value) is None


@pytest.mark.parametrize(("value", "why"), list(BRN_INVALID.items()))
def test_invalid_business_registration_numbers(value: str | None, why: str) -> None:
    assert why in brn_reason(value)
    assert not is_valid_brn(value)


# ---- names and regions -----------------------------------------------------------------------------
NAMES = {
    "김민준": True,
    "남궁민수": True,  # two-syllable surname
    "이가": True,
    "황보서연이": True,
    "김": False,  # one syllable
    "독고영재하나": False,  # six syllables
    "ㄱㅁㅈ": False,  # jamo only
    "김 민준": False,
    "John Smith": False,
    "김민준1": False,
    "": False,
}


@pytest.mark.parametrize(("name", "ok"), list(NAMES.items()))
def test_hangul_name_plausibility(name: str, ok: bool) -> None:
    assert is_plausible_hangul_name(name) is ok


def test_region_codes_come_from_the_seed() -> None:
    sigungu, sido = region_codes("sigungu"), region_codes("sido")
    assert "11110" in sigungu and "26110" in sigungu
    assert sido >= {"11", "26"} and all(len(c) == 2 for c in sido)
    assert is_existing_region_code("11110") and not is_existing_region_code("11119")
    assert is_existing_region_code("11", "sido") and not is_existing_region_code("11110", "sido")
    assert not is_existing_region_code(11110)
    with pytest.raises(ValueError, match="region level"):
        region_codes("dong")


# ---- DuckDB macros agree with Python ---------------------------------------------------------------


def _duck() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for macro in duckdb_macros_sql():
        con.execute(macro)
    return con


def test_duckdb_macros_match_python() -> None:
    con = _duck()
    for macro, fn, values in [
        ("zd_frn_valid", is_valid_frn, FRN_VALID + list(FRN_INVALID)),
        ("zd_brn_valid", is_valid_brn, BRN_VALID + list(BRN_INVALID)),
        ("zd_hangul_name", is_plausible_hangul_name, [*NAMES, None]),
    ]:
        got = dict(con.execute(f"SELECT x, {macro}(x) FROM unnest(?::VARCHAR[]) t(x)", [values]).fetchall())
        assert got == {v: (None if v is None else fn(v)) for v in values}, macro


def test_brn_macro_exhaustive_over_check_digits() -> None:
    con = _duck()
    values = [
        f"{a:03d}-{b:02d}-{c:04d}{d}"
        for a in (0, 124, 999)
        for b in (0, 81)
        for c in range(0, 10000, 37)
        for d in range(10)
    ]
    rows = con.execute("SELECT x, zd_brn_valid(x) FROM unnest(?::VARCHAR[]) t(x)", [values]).fetchall()
    assert [(v, ok) for v, ok in rows if ok != is_valid_brn(v)] == []
    assert sum(ok for _, ok in rows) == len(values) // 10


def test_frn_macro_exhaustive_over_dates_and_sex_digits() -> None:
    con = _duck()
    values = [
        f"{yy:02d}{mm:02d}{dd:02d}-{s}12345{c}"
        for yy in range(0, 100, 4)
        for mm in (1, 2, 10, 13)
        for dd in (1, 29, 30, 31)
        for s in "0145789"
        for c in "0369"
    ]
    rows = con.execute("SELECT x, zd_frn_valid(x) FROM unnest(?::VARCHAR[]) t(x)", [values]).fetchall()
    assert [(v, ok) for v, ok in rows if ok != is_valid_frn(v)] == []


def test_region_predicate_matches_python() -> None:
    con = duckdb.connect()
    values = ["11110", "11119", "26110", "1111", "111101", "x11110", "ABCDE", "11", "1", None]
    for level in ("sigungu", "sido"):
        got = dict(
            con.execute(
                f"SELECT x, regexp_full_match(x, '{region_regex(level)}') FROM unnest(?::VARCHAR[]) t(x)", [values]
            ).fetchall()
        )
        assert got == {v: (None if v is None else is_existing_region_code(v, level)) for v in values}


# ---- both GX engines -------------------------------------------------------------------------------


def _column(values: list, n: int = 30) -> list:
    return (values + [None] * n)[:n]


FRAME = pd.DataFrame(
    {
        "frn": _column(FRN_VALID + [v for v in FRN_INVALID if v is not None]),
        "brn": _column(BRN_VALID + [v for v in BRN_INVALID if v is not None]),
        "name": _column(list(NAMES) * 2),
        "region": _column(["11110", "11119", "26110", "ABCDE", "11", None] * 4),
    }
)

CASES = [
    (
        ExpectColumnValuesToBeValidForeignRegistrationNumber(column="frn"),
        "expect_column_values_to_be_valid_foreign_registration_number",
        {"column": "frn"},
    ),
    (
        ExpectColumnValuesToBeValidBusinessRegistrationNumber(column="brn"),
        "expect_column_values_to_be_valid_business_registration_number",
        {"column": "brn"},
    ),
    (
        ExpectColumnValuesToBePlausibleHangulName(column="name"),
        "expect_column_values_to_be_plausible_hangul_name",
        {"column": "name"},
    ),
    (
        ExpectColumnValuesToBeExistingRegionCode(column="region"),
        "expect_column_values_to_be_existing_region_code",
        {"column": "region"},
    ),
    (
        ExpectColumnValuesToBeExistingRegionCode(column="region", level="sido"),
        "expect_column_values_to_be_existing_region_code",
        {"column": "region", "level": "sido"},
    ),
]


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory):
    path: Path = tmp_path_factory.mktemp("custom") / "t.duckdb"
    con = duckdb.connect(str(path))
    con.register("frame", FRAME)
    con.execute("CREATE TABLE t AS SELECT * FROM frame")
    for macro in duckdb_macros_sql():
        con.execute(macro)  # macros are persisted in the file, as in the scratch database of a run
    con.close()
    context = gx.get_context(mode="ephemeral")
    sql = context.data_sources.add_sql(name="d", connection_string=f"duckdb:///{path}")
    sql_batch = sql.add_table_asset(name="t", table_name="t").add_batch_definition_whole_table("all").get_batch()
    pandas_batch = (
        context.data_sources.add_pandas("p")
        .add_dataframe_asset("a")
        .add_batch_definition_whole_dataframe("b")
        .get_batch(batch_parameters={"dataframe": FRAME})
    )
    yield pandas_batch, sql_batch
    sql.get_engine().dispose()


@pytest.mark.parametrize(("expectation", "type_", "kwargs"), CASES, ids=lambda c: c if isinstance(c, str) else "")
def test_pandas_sql_and_own_predicate_agree(batches, expectation, type_: str, kwargs: dict) -> None:
    pandas_batch, sql_batch = batches
    assert expectation.expectation_type == type_
    p = pandas_batch.validate(expectation, result_format="SUMMARY")
    s = sql_batch.validate(expectation, result_format="SUMMARY")
    assert not p.exception_info.get("raised_exception") and not s.exception_info.get("raised_exception")
    predicate = unexpected_predicate(Check(id="c", type=type_, kwargs=kwargs, severity="fail", description=""), "t")
    con = _duck()
    con.register("t", FRAME)
    own = con.execute(f"SELECT count(*) FROM t WHERE {predicate}").fetchone()[0]
    assert p.result["unexpected_count"] == s.result["unexpected_count"] == own > 0
