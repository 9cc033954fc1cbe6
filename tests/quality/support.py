"""Tiny builders of well-formed and deliberately broken source rows for the quality tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zerodoc.quality.identifiers import RRN_WEIGHTS


def make_rrn(yymmdd: str, sex_digit: str, serial: str = "12345", *, bad_check: bool = False) -> str:
    """A resident registration number with a correct (or deliberately wrong) check digit."""
    body = yymmdd + sex_digit + serial
    total = sum(int(d) * w for d, w in zip(body, RRN_WEIGHTS, strict=True))
    check = ((13 if sex_digit in "5678" else 11) - total % 11) % 10
    if bad_check:
        check = (check + 1) % 10
    return f"{yymmdd}-{sex_digit}{serial}{check}"


RESIDENT_SCHEMA = pa.schema(
    [
        ("resident_id", pa.int64()),
        ("rrn", pa.string()),
        ("name", pa.string()),
        ("sex", pa.string()),
        ("birth_date", pa.string()),
        ("household_id", pa.int64()),
        ("sigungu_code", pa.string()),
        ("address", pa.string()),
        ("moved_in_date", pa.string()),
        ("updated_at", pa.timestamp("us")),
    ]
)


def resident(i: int, **overrides: object) -> dict:
    row = {
        "resident_id": i,
        "rrn": make_rrn("800101", "1" if i % 2 else "2", f"{i % 100000:05d}"),
        "name": "김민준",
        "sex": "M" if i % 2 else "F",
        "birth_date": "19800101",
        "household_id": 1000 + i // 3,
        "sigungu_code": "11110",
        "address": "서울특별시 종로구 세종대로 1",
        "moved_in_date": "20150301",
        "updated_at": None,
    }
    row.update(overrides)
    return row


def make_brn(first_nine: str, *, bad_check: bool = False) -> str:
    """A business registration number `XXX-XX-XXXXX` with a correct (or deliberately wrong) check digit."""
    d = [int(c) for c in first_nine]
    total = sum(x * w for x, w in zip(d, (1, 3, 7, 1, 3, 7, 1, 3, 5), strict=True)) + d[8] * 5 // 10
    check = (10 - total % 10) % 10
    if bad_check:
        check = (check + 1) % 10
    return f"{first_nine[:3]}-{first_nine[3:5]}-{first_nine[5:]}{check}"


def write_raw(home: Path, agency: str, entity: str, ds: str, rows: list[dict], schema: pa.Schema) -> Path:
    """Write a raw partition the way the extractor does: part-0.parquet plus _manifest.json."""
    part_dir = home / "raw" / agency / entity / f"ds={ds}"
    part_dir.mkdir(parents=True, exist_ok=True)
    path = part_dir / "part-0.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    (part_dir / "_manifest.json").write_text(json.dumps({"rows": len(rows), "checksum": checksum}))
    return path


HOUSEHOLD_SCHEMA = pa.schema(
    [
        ("household_id", pa.int64()),
        ("head_resident_id", pa.int64()),
        ("sigungu_code", pa.string()),
        ("address", pa.string()),
        ("registered_date", pa.string()),
        ("updated_at", pa.timestamp("us")),
    ]
)

INCOME_SCHEMA = pa.schema(
    [
        ("income_id", pa.int64()),
        ("rrn", pa.string()),
        ("tax_year", pa.int32()),
        ("earned_income", pa.int64()),
        ("business_income", pa.int64()),
        ("other_income", pa.int64()),
        ("filed_date", pa.string()),
        ("updated_at", pa.timestamp("us")),
    ]
)


def household(i: int, **overrides: object) -> dict:
    row = {
        "household_id": i,
        "head_resident_id": 10 * i,
        "sigungu_code": "26110",
        "address": "부산광역시 중구 중앙대로 1",
        "registered_date": "20100105",
        "updated_at": None,
    }
    row.update(overrides)
    return row


def income(i: int, **overrides: object) -> dict:
    row = {
        "income_id": i,
        "rrn": make_rrn("750505", "2", f"{i % 100000:05d}"),
        "tax_year": 2023,
        "earned_income": 35_000_000,
        "business_income": 0,
        "other_income": 1_200_000,
        "filed_date": "20240531",
        "updated_at": None,
    }
    row.update(overrides)
    return row


def planted_residents(n: int = 200) -> tuple[list[dict], dict[str, int]]:
    """Residents with one planted defect per row (rows disjoint) except one row that fails twice.

    Returns the rows and the unexpected count each check must report.
    """
    rows = [resident(i) for i in range(1, n + 1)]
    rows[0]["rrn"] = None
    rows[1]["rrn"] = make_rrn("800101", "1", bad_check=True)
    rows[2]["rrn"] = make_rrn("801301", "2")  # month 13
    rows[3]["name"] = None
    rows[4]["birth_date"] = "20230230"
    rows[5]["resident_id"] = rows[6]["resident_id"]  # both copies fail uniqueness
    rows[7]["sex"] = "X"
    rows[8]["sigungu_code"] = "1111"
    rows[9]["household_id"] = None
    rows[10]["name"] = "John Smith"  # warn only: the row passes
    rows[11]["moved_in_date"] = "20150231"  # warn only
    rows[12]["sex"] = "U"  # the row failing twice
    rows[12]["sigungu_code"] = "ABCDE"
    counts = {
        "resident_id_not_null": 0,
        "resident_id_unique": 2,
        "rrn_not_null": 1,
        "rrn_valid": 2,
        "name_not_null": 1,
        "name_hangul": 1,
        "sex_in_set": 2,
        "birth_date_valid": 1,
        "sigungu_code_format": 2,
        "sigungu_code_exists": 2,
        "household_id_not_null": 1,
        "moved_in_date_valid": 1,
    }
    return rows, counts
