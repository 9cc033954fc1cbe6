"""Korean identifier and legacy-date rules, in Python and as DuckDB macros with the same semantics."""

from __future__ import annotations

import re

RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
# From October 2020 the trailing six digits are random, so the check digit proves nothing.
CHECK_DIGIT_UNTIL = (2020, 10, 1)

_RRN_RE = re.compile(r"[0-9]{6}-[0-9]{7}")
_YYYYMMDD_RE = re.compile(r"[0-9]{8}")
_CENTURY = {"1": 1900, "2": 1900, "3": 2000, "4": 2000, "5": 1900, "6": 1900, "7": 2000, "8": 2000}
_FOREIGNER = frozenset("5678")


def _date_exists(year: int, month: int, day: int) -> bool:
    if year < 1 or not 1 <= month <= 12 or day < 1:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    return day <= days


def is_valid_yyyymmdd(s: object) -> bool:
    """True when `s` is an 8-digit `YYYYMMDD` string naming a day that exists (proleptic Gregorian)."""
    if not isinstance(s, str) or not _YYYYMMDD_RE.fullmatch(s):
        return False
    return _date_exists(int(s[:4]), int(s[4:6]), int(s[6:]))


def rrn_reason(s: object) -> str | None:
    """Why `s` is not a valid resident registration number, or None when it is valid."""
    if s is None:
        return "missing"
    if not isinstance(s, str) or not _RRN_RE.fullmatch(s):
        return "not in the form YYMMDD-SXXXXXX"
    sex_digit = s[7]
    if sex_digit not in _CENTURY:
        return f"7th digit {sex_digit} is not 1-8"
    year = _CENTURY[sex_digit] + int(s[:2])
    month, day = int(s[2:4]), int(s[4:6])
    if not _date_exists(year, month, day):
        return f"birth date {year:04d}-{s[2:4]}-{s[4:6]} does not exist"
    if (year, month, day) < CHECK_DIGIT_UNTIL:
        digits = s[:6] + s[7:13]
        total = sum(int(d) * w for d, w in zip(digits, RRN_WEIGHTS, strict=True))
        base = 13 if sex_digit in _FOREIGNER else 11
        expected = (base - total % 11) % 10
        if int(s[13]) != expected:
            return f"check digit {s[13]} should be {expected}"
    return None


def is_valid_rrn(s: object) -> bool:
    """True for a well-formed RRN, existing birth date and, before October 2020, a right check digit."""
    return rrn_reason(s) is None


def _weighted_sum_sql(x: str) -> str:
    positions = [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]
    return " + ".join(
        f"CAST(substr({x}, {p}, 1) AS INTEGER) * {w}" for p, w in zip(positions, RRN_WEIGHTS, strict=True)
    )


def duckdb_macros_sql() -> list[str]:
    """`CREATE MACRO` statements for `zd_valid_yyyymmdd(x)` and `zd_rrn_valid(x)`; NULL in, NULL out.

    They mirror `is_valid_yyyymmdd` and `is_valid_rrn` exactly (the unit tests compare them value by value).
    """
    s = _weighted_sum_sql("x")
    return [
        # try_strptime alone accepts 7 digits ('2023011') and year 0, so the shape is checked first.
        """CREATE OR REPLACE MACRO zd_valid_yyyymmdd(x) AS (
            CASE WHEN x IS NULL THEN NULL
                 WHEN NOT regexp_full_match(x, '[0-9]{8}') OR substr(x, 1, 4) = '0000' THEN false
                 ELSE try_strptime(x, '%Y%m%d') IS NOT NULL
            END)""",
        """CREATE OR REPLACE MACRO zd_rrn_birth_yyyymmdd(x) AS (
            CASE WHEN substr(x, 8, 1) IN ('1', '2', '5', '6') THEN '19' ELSE '20' END || substr(x, 1, 6))""",
        f"""CREATE OR REPLACE MACRO zd_rrn_valid(x) AS (
            CASE WHEN x IS NULL THEN NULL
                 WHEN NOT regexp_full_match(x, '[0-9]{{6}}-[1-8][0-9]{{6}}') THEN false
                 WHEN NOT zd_valid_yyyymmdd(zd_rrn_birth_yyyymmdd(x)) THEN false
                 WHEN zd_rrn_birth_yyyymmdd(x) >= '20201001' THEN true
                 ELSE CAST(substr(x, 14, 1) AS INTEGER) = (
                     (CASE WHEN substr(x, 8, 1) IN ('5', '6', '7', '8') THEN 13 ELSE 11 END
                      - ({s}) % 11) % 10)
            END)""",
    ]
