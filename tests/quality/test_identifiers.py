"""RRN and YYYYMMDD rules: the Python functions and the DuckDB macros agree value by value."""

from __future__ import annotations

import duckdb
import pytest

from zerodoc.quality.identifiers import duckdb_macros_sql, is_valid_rrn, is_valid_yyyymmdd, rrn_reason

from .support import make_rrn

VALID = [
    make_rrn("800101", "1"),  # 1900s citizen, male
    make_rrn("991231", "2"),  # 1900s citizen, female
    make_rrn("000229", "3"),  # 2000 is a leap year
    make_rrn("200930", "4"),  # last day the check digit is enforced
    make_rrn("850615", "5"),  # foreigner, 1900s (13 - sum % 11)
    make_rrn("050101", "8"),  # foreigner, 2000s
    "201001-3123456",  # issued from October 2020: trailing digits are random, any check digit is fine
    "231231-4000000",
    "201001-7999999",  # post-2020 foreigner
]

INVALID = {
    make_rrn("800101", "1", bad_check=True): "check digit",
    make_rrn("200930", "3", bad_check=True): "check digit",  # 2020-09-30 still needs it
    make_rrn("850615", "5", bad_check=False).replace("-5", "-1"): "check digit",  # foreign formula differs
    make_rrn("010229", "3"): "does not exist",  # 2001 is not a leap year
    make_rrn("000229", "1"): "does not exist",  # 1900 is not a leap year
    make_rrn("801301", "1"): "does not exist",  # month 13
    make_rrn("800100", "1"): "does not exist",
    "800101-9123456": "not in the form",  # 9 is no sex digit
    "800101-0123456": "not in the form",
    "8001011234567": "not in the form",  # hyphen missing
    "800101-123456": "not in the form",
    "80O101-1234567": "not in the form",
    "": "not in the form",
}


@pytest.mark.parametrize("rrn", VALID)
def test_valid_rrns(rrn: str) -> None:
    assert rrn_reason(rrn) is None
    assert is_valid_rrn(rrn)


@pytest.mark.parametrize(("rrn", "why"), INVALID.items())
def test_invalid_rrns_say_why(rrn: str, why: str) -> None:
    assert not is_valid_rrn(rrn)
    reason = rrn_reason(rrn)
    assert reason is not None and (why in reason or (why == "not in the form" and "1-8" in reason))


def test_leap_day_depends_on_century() -> None:
    assert is_valid_rrn(make_rrn("000229", "3"))  # 2000-02-29
    assert not is_valid_rrn(make_rrn("010229", "3"))  # 2001-02-29
    assert not is_valid_rrn(make_rrn("000229", "1"))  # 1900-02-29


def test_post_2020_numbers_skip_the_check_digit() -> None:
    good = make_rrn("201001", "3")
    wrong = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert is_valid_rrn(wrong)
    assert not is_valid_rrn(make_rrn("200930", "3", bad_check=True))


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("20240229", True),
        ("20230230", False),
        ("20231301", False),
        ("19000229", False),
        ("20000229", True),
        ("2023011", False),
        ("202301011", False),
        ("00000101", False),
        ("00010101", True),
        ("2023-01-01", False),
    ],
)
def test_yyyymmdd(text: str, ok: bool) -> None:
    assert is_valid_yyyymmdd(text) is ok


def test_duckdb_macros_match_python() -> None:
    con = duckdb.connect()
    for macro in duckdb_macros_sql():
        con.execute(macro)
    rrns = VALID + list(INVALID) + [None]
    got = dict(con.execute("SELECT x, zd_rrn_valid(x) FROM unnest(?::VARCHAR[]) t(x)", [rrns]).fetchall())
    assert got == {r: (None if r is None else is_valid_rrn(r)) for r in rrns}

    dates = [
        "20240229",
        "20230230",
        "20231301",
        "19000229",
        "2023011",
        "00000101",
        "00010101",
        "2023-01-01",
        None,
    ]
    got = dict(
        con.execute("SELECT x, zd_valid_yyyymmdd(x) FROM unnest(?::VARCHAR[]) t(x)", [dates]).fetchall()
    )
    assert got == {d: (None if d is None else is_valid_yyyymmdd(d)) for d in dates}


def test_macros_agree_on_every_day_and_sex_digit() -> None:
    """Exhaustive over YYMMDD x S for one serial: every date edge (leap years, month ends, Oct 2020)."""
    con = duckdb.connect()
    for macro in duckdb_macros_sql():
        con.execute(macro)
    rrns = [
        f"{yy:02d}{mm:02d}{dd:02d}-{s}12345{c}"
        for yy in range(0, 100, 3)
        for mm in (0, 1, 2, 9, 10, 12, 13)
        for dd in (0, 1, 28, 29, 30, 31, 32)
        for s in "0123456789"
        for c in "07"
    ]
    rows = con.execute("SELECT x, zd_rrn_valid(x) FROM unnest(?::VARCHAR[]) t(x)", [rrns]).fetchall()
    mismatches = [(r, v) for r, v in rows if v != is_valid_rrn(r)]
    assert mismatches == []
