"""Korean identifier and legacy-date rules, in Python and as DuckDB macros with the same semantics."""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

from zerodoc.config import REPO_ROOT

RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
# From October 2020 the trailing six digits are random, so the check digit proves nothing.
CHECK_DIGIT_UNTIL = (2020, 10, 1)

_RRN_RE = re.compile(r"[0-9]{6}-[0-9]{7}")
_YYYYMMDD_RE = re.compile(r"[0-9]{8}")
_CENTURY = {"1": 1900, "2": 1900, "3": 2000, "4": 2000, "5": 1900, "6": 1900, "7": 2000, "8": 2000}
_FOREIGNER = frozenset("5678")
_REGIONS_CSV = REPO_ROOT / "dbt_project" / "seeds" / "regions.csv"


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
    """`CREATE MACRO` statements for every `zd_*` identifier and date rule; NULL in, NULL out.

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
        # Once the shape matched, the birth date is 8 digits with a 19xx/20xx year, so of
        # zd_valid_yyyymmdd only its try_strptime step can still fail (the rest cost a second regex).
        f"""CREATE OR REPLACE MACRO zd_rrn_valid(x) AS (
            CASE WHEN x IS NULL THEN NULL
                 WHEN NOT regexp_full_match(x, '[0-9]{{6}}-[1-8][0-9]{{6}}') THEN false
                 WHEN try_strptime(zd_rrn_birth_yyyymmdd(x), '%Y%m%d') IS NULL THEN false
                 WHEN zd_rrn_birth_yyyymmdd(x) >= '20201001' THEN true
                 ELSE CAST(substr(x, 14, 1) AS INTEGER) = (
                     (CASE WHEN substr(x, 8, 1) IN ('5', '6', '7', '8') THEN 13 ELSE 11 END
                      - ({s}) % 11) % 10)
            END)""",
        *extra_duckdb_macros_sql(),
    ]


# ---- foreign registration number -----------------------------------------------------------------
# Same shape and rules as a resident registration number; the 7th digit 5-8 marks a foreigner
# (5/6 born in the 1900s, 7/8 in the 2000s) and selects the check-digit base 13.


def frn_reason(s: object) -> str | None:
    """Why `s` is not a valid foreign registration number, or None when it is valid."""
    if s is None:
        return "missing"
    if isinstance(s, str) and _RRN_RE.fullmatch(s) and s[7] not in _FOREIGNER:
        return f"7th digit {s[7]} is not 5-8 (a foreigner's number)"
    return rrn_reason(s)


def is_valid_frn(s: object) -> bool:
    """True for a well-formed foreign registration number (7th digit 5-8) under the RRN rules."""
    return frn_reason(s) is None


# ---- business registration number ----------------------------------------------------------------
BRN_WEIGHTS = (1, 3, 7, 1, 3, 7, 1, 3, 5)
_BRN_RE = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{5}")


def brn_check_digit(nine_digits: str) -> int:
    """The 10th digit of a business registration number from its first nine digits."""
    d = [int(c) for c in nine_digits]
    total = sum(x * w for x, w in zip(d, BRN_WEIGHTS, strict=True)) + d[8] * 5 // 10
    return (10 - total % 10) % 10


def brn_reason(s: object) -> str | None:
    """Why `s` is not a valid business registration number (`XXX-XX-XXXXX`), or None when it is."""
    if s is None:
        return "missing"
    if not isinstance(s, str) or not _BRN_RE.fullmatch(s):
        return "not in the form XXX-XX-XXXXX"
    digits = s.replace("-", "")
    expected = brn_check_digit(digits[:9])
    if int(digits[9]) != expected:
        return f"check digit {digits[9]} should be {expected}"
    return None


def is_valid_brn(s: object) -> bool:
    return brn_reason(s) is None


# ---- Hangul names ----------------------------------------------------------------------------------
# Korean names are 2-5 precomposed syllables (one- or two-syllable surname, one to three given);
# jamo alone, Latin letters, digits and spaces are not a registered Korean name.
_HANGUL_NAME_RE = re.compile(r"[가-힣]{2,5}")
HANGUL_NAME_REGEX = "^[가-힣]{2,5}$"


def is_plausible_hangul_name(s: object) -> bool:
    return isinstance(s, str) and _HANGUL_NAME_RE.fullmatch(s) is not None


# ---- region codes ------------------------------------------------------------------------------------
REGION_LEVELS = ("sigungu", "sido")


def region_codes(level: str = "sigungu", path: Path | None = None) -> frozenset[str]:
    """Administrative codes that exist (`dbt_project/seeds/regions.csv`): 5-digit sigungu or 2-digit sido."""
    if level not in REGION_LEVELS:
        raise ValueError(f"region level must be one of {REGION_LEVELS}, got {level!r}")
    return _region_codes(level, path or _REGIONS_CSV)


@functools.cache
def _region_codes(level: str, path: Path) -> frozenset[str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return frozenset(row[f"{level}_code"] for row in csv.DictReader(fh))


def is_existing_region_code(s: object, level: str = "sigungu") -> bool:
    return isinstance(s, str) and s in region_codes(level)


def region_regex(level: str = "sigungu") -> str:
    """The existing codes as one alternation for DuckDB's `regexp_full_match`: RE2 runs it as a DFA,
    about 5x cheaper per row than `x IN (<250 strings>)`, which DuckDB evaluates as a chain of compares."""
    return "|".join(re.escape(c) for c in sorted(region_codes(level)))


def _brn_sum_sql(x: str) -> str:
    positions = (1, 2, 3, 5, 6, 8, 9, 10, 11)
    terms = [f"CAST(substr({x}, {p}, 1) AS INTEGER) * {w}" for p, w in zip(positions, BRN_WEIGHTS, strict=True)]
    return " + ".join(terms) + f" + CAST(substr({x}, 11, 1) AS INTEGER) * 5 // 10"


def extra_duckdb_macros_sql() -> list[str]:
    """Macros for the foreign registration number, business registration number and Hangul name."""
    return [
        """CREATE OR REPLACE MACRO zd_frn_valid(x) AS (
            CASE WHEN x IS NULL THEN NULL
                 WHEN NOT regexp_full_match(x, '[0-9]{6}-[5-8][0-9]{6}') THEN false
                 ELSE zd_rrn_valid(x)
            END)""",
        f"""CREATE OR REPLACE MACRO zd_brn_valid(x) AS (
            CASE WHEN x IS NULL THEN NULL
                 WHEN NOT regexp_full_match(x, '[0-9]{{3}}-[0-9]{{2}}-[0-9]{{5}}') THEN false
                 ELSE CAST(substr(x, 12, 1) AS INTEGER) = (10 - ({_brn_sum_sql("x")}) % 10) % 10
            END)""",
        f"""CREATE OR REPLACE MACRO zd_hangul_name(x) AS (
            CASE WHEN x IS NULL THEN NULL ELSE regexp_full_match(x, '{HANGUL_NAME_REGEX[1:-1]}') END)""",
    ]
