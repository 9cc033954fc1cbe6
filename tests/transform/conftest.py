"""A tiny validated zone (every source entity: MOIS, NTS, MOJ, MOEL, MOHW, FSC, police) and one dbt build."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerodoc.config import Settings

DS = "2025-03-01"
UPDATED = dt.datetime(2025, 2, 28, 12, 0)

# Household 100 (종로구): 김철수 (head) + 이영희 + 김민준, and 이영희 holds a second, older registry
# row (same rrn) that must not count twice. Household 200 (해운대구): 박서준 alone.
RESIDENTS = [
    # resident_id, rrn, name, sex, birth_date, household_id, sigungu_code, moved_in_date, updated_at
    (1, "800101-1234567", "김철수", "M", "19800101", 100, "11110", "20150101", UPDATED),
    (2, "820202-2345678", "이영희", "F", "19820202", 100, "11110", "20150101", UPDATED),
    (3, "100303-3456789", "김민준", "M", "20100303", 100, "11110", "20150101", UPDATED),
    (4, "900404-1111111", "박서준", "M", "19900404", 200, "26350", "20200601", UPDATED),
    (5, "8202022345678", "이영희", "F", "19820202", 100, "11110", "20100101", dt.datetime(2020, 1, 1)),
]
HOUSEHOLDS = [
    (100, 1, "11110", "20150101"),
    (200, 4, "26350", "20200601"),
]
# 김철수 has two tax years; 박서준 filed 2024 twice (the amended, later return wins), the
# amendment with his ID written without the hyphen.
INCOME = [
    # income_id, rrn, tax_year, earned, business, other, filed_date
    (1, "800101-1234567", 2023, 30_000_000, 0, 0, "20240531"),
    (2, "800101-1234567", 2024, 31_000_000, 0, 100, "20250531"),
    (3, "900404-1111111", 2024, 0, 12_000_000, 0, "20250531"),
    (4, "9004041111111", 2024, 0, 13_500_000, 250_000, "20250715"),
]

# 박서준 is insured at a job since 2023; 김철수's job ended in 2024.
ENROLMENTS = [
    # enrolment_id, rrn, employer_brn, acquired_date, lost_date, monthly_wage
    (1, "900404-1111111", "1018100340", "20230101", "", 2_500_000),
    (2, "800101-1234567", "1018100340", "20200101", "20240630", 3_000_000),
]
# 김철수 was assaulted (2024) and injured (2025, the later case decides); 이영희 reported a fraud.
# A victim registered with a foreign registration number (7th digit 5) is not on the MOIS spine.
CASES = [
    # case_id, victim_rrn, crime_type, incident_date, reported_date
    (1, "800101-1234567", "폭행", "20240301", "20240302"),
    (2, "800101-1234567", "상해", "20250110", "20250111"),
    (3, "820202-2345678", "사기", "20250201", "20250203"),
    (4, "950505-5123456", "상해", "20250115", "20250116"),
]
# Two registered foreign residents (MOJ): on the spine as foreign_resident, counted in the living
# population, with sex and birth date read from the registration number (6: female, 1900s; 7: male,
# 2000s). The card of 880808-6234567 was reissued: the later-updated card is the one kept.
FOREIGN_RESIDENTS = [
    # foreign_resident_id, frn, name, nationality, visa_type, sigungu_code, entry_date, registered_date, updated_at
    (1, "880808-6234567", "NGUYEN LAN", "VNM", "F-6", "11110", "20190101", "20190201", dt.datetime(2020, 1, 1)),
    (2, "030303-7345678", "KARIMOV AZIZ", "UZB", "E-9", "26350", "20240101", "20240115", UPDATED),
    (3, "880808-6234567", "NGUYEN LAN", "VNM", "F-6", "26350", "20190101", "20240301", UPDATED),
]
# One row each (updated_at added when written) for the entities no mart reads yet: staged, tested, pseudonymised.
BUSINESS_REGISTRATIONS = [(1, "101-81-00340", "800101-1234567", "철수 상사", "도매 및 소매업", "20100101", "")]
UNEMPLOYMENT_BENEFITS = [(1, "800101-1234567", "20240701", "20240708", 120, 64_192, 7_703_040)]
# 이영희 receives the livelihood benefit (생계급여): her household (100, with 김철수) gets no emergency livelihood aid.
LIVELIHOOD_RECIPIENTS = [(1, "820202-2345678", 1, "생계,의료", 700_000, "20200101")]
DISABILITY_REGISTRY = [(1, "100303-3456789", "지적", "심한 장애", "20150101")]
# Youth Leap Accounts (FSC): 박서준 closed his, so he may open one again (eligible); 이영희 holds an open one.
YOUTH_LEAP_ACCOUNTS = [
    # account_id, rrn, bank_code, opened_date, monthly_contribution, government_match, status
    (1, "900404-1111111", "004", "20240101", 700_000, 21_000, "closed"),
    (2, "820202-2345678", "088", "20240301", 300_000, 9_000, "active"),
]


def _write(home: Path, agency: str, entity: str, table: pa.Table, ds: str = DS) -> None:
    part = home / "validated" / agency / entity / f"ds={ds}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, part / "part-0.parquet")


def write_validated_zone(home: Path, ds: str = DS) -> None:
    """Validated-zone Parquet with the source schemas of docs/architecture.md."""
    r = list(zip(*RESIDENTS, strict=True))
    _write(home, "mois", "residents", pa.table({
        "resident_id": pa.array(r[0], pa.int64()),
        "rrn": pa.array(r[1], pa.string()),
        "name": pa.array(r[2], pa.string()),
        "sex": pa.array(r[3], pa.string()),
        "birth_date": pa.array(r[4], pa.string()),
        "household_id": pa.array(r[5], pa.int64()),
        "sigungu_code": pa.array(r[6], pa.string()),
        "address": pa.array(["서울특별시 종로구 세종대로 209"] * 3 + ["부산광역시 해운대구 해운대로 264"]
                            + ["서울특별시 종로구 세종대로 209"], pa.string()),
        "moved_in_date": pa.array(r[7], pa.string()),
        "updated_at": pa.array(r[8], pa.timestamp("us")),
    }), ds)  # fmt: skip
    h = list(zip(*HOUSEHOLDS, strict=True))
    _write(home, "mois", "households", pa.table({
        "household_id": pa.array(h[0], pa.int64()),
        "head_resident_id": pa.array(h[1], pa.int64()),
        "sigungu_code": pa.array(h[2], pa.string()),
        "address": pa.array(["서울특별시 종로구 세종대로 209", "부산광역시 해운대구 해운대로 264"]),
        "registered_date": pa.array(h[3], pa.string()),
        "updated_at": pa.array([UPDATED] * len(HOUSEHOLDS), pa.timestamp("us")),
    }), ds)  # fmt: skip
    i = list(zip(*INCOME, strict=True))
    _write(home, "nts", "income", pa.table({
        "income_id": pa.array(i[0], pa.int64()),
        "rrn": pa.array(i[1], pa.string()),
        "tax_year": pa.array(i[2], pa.int32()),
        "earned_income": pa.array(i[3], pa.int64()),
        "business_income": pa.array(i[4], pa.int64()),
        "other_income": pa.array(i[5], pa.int64()),
        "filed_date": pa.array(i[6], pa.string()),
        "updated_at": pa.array([UPDATED] * len(INCOME), pa.timestamp("us")),
    }), ds)  # fmt: skip
    e = list(zip(*ENROLMENTS, strict=True))
    _write(home, "moel", "employment_insurance", pa.table({
        "enrolment_id": pa.array(e[0], pa.int64()),
        "rrn": pa.array(e[1], pa.string()),
        "employer_brn": pa.array(e[2], pa.string()),
        "workplace_name": pa.array(["제로독 상사"] * len(ENROLMENTS), pa.string()),
        "acquired_date": pa.array(e[3], pa.string()),
        "lost_date": pa.array(e[4], pa.string()),
        "monthly_wage": pa.array(e[5], pa.int64()),
        "updated_at": pa.array([UPDATED] * len(ENROLMENTS), pa.timestamp("us")),
    }), ds)  # fmt: skip
    c = list(zip(*CASES, strict=True))
    _write(home, "police", "crime_victim_cases", pa.table({
        "case_id": pa.array(c[0], pa.int64()),
        "victim_rrn": pa.array(c[1], pa.string()),
        "crime_type": pa.array(c[2], pa.string()),
        "incident_date": pa.array(c[3], pa.string()),
        "reported_date": pa.array(c[4], pa.string()),
        "police_station_code": pa.array(["PS1001"] * len(CASES), pa.string()),
        "sigungu_code": pa.array(["11110"] * len(CASES), pa.string()),
        "summary": pa.array(["피해 진술 접수"] * len(CASES), pa.string()),
        "updated_at": pa.array([UPDATED] * len(CASES), pa.timestamp("us")),
    }), ds)  # fmt: skip
    _write_declared(home, "moj.foreign_residents", FOREIGN_RESIDENTS, ds)
    _write_declared(home, "nts.business_registrations", [(*r, UPDATED) for r in BUSINESS_REGISTRATIONS], ds)
    _write_declared(home, "moel.unemployment_benefits", [(*r, UPDATED) for r in UNEMPLOYMENT_BENEFITS], ds)
    _write_declared(home, "mohw.basic_livelihood_recipients", [(*r, UPDATED) for r in LIVELIHOOD_RECIPIENTS], ds)
    _write_declared(home, "mohw.disability_registry", [(*r, UPDATED) for r in DISABILITY_REGISTRY], ds)
    _write_declared(home, "fsc.youth_leap_accounts", [(*r, UPDATED) for r in YOUTH_LEAP_ACCOUNTS], ds)


def _write_declared(home: Path, qualified: str, rows: list[tuple], ds: str) -> None:
    """rows in the column order of config/sources.yml, typed as the extractor types them."""
    from zerodoc.catalog import entity
    from zerodoc.sources.extract import arrow_schema

    schema = arrow_schema(entity(qualified))
    agency, name = qualified.split(".")
    _write(home, agency, name, pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows],
                                                    schema=schema), ds)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """One `dbt build` over the tiny validated zone; yields (settings, run summary)."""
    from zerodoc.transform.runner import run_dbt

    home = tmp_path_factory.mktemp("zerodoc_home")
    write_validated_zone(home)
    cfg = Settings(home=home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(home))
        summary = run_dbt(["build"], ds=DS, cfg=cfg)
        yield cfg, summary


@pytest.fixture
def pseudonym_key() -> bytes:
    return os.environ["ZERODOC_PSEUDONYM_KEY"].encode()
