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
    # foreign_resident_id, frn, nationality, visa_type, sigungu_code, entry_date, registered_date, updated_at
    (1, "880808-6234567", "VNM", "F-6", "11110", "20190101", "20190201", dt.datetime(2020, 1, 1)),
    (2, "030303-7345678", "UZB", "E-9", "26350", "20240101", "20240115", UPDATED),
    (3, "880808-6234567", "VNM", "F-6", "26350", "20190101", "20240301", UPDATED),
]
# One row each for the entities no mart reads yet: staged, tested, pseudonymised.
BUSINESS_REGISTRATIONS = [(1, "101-81-00340", "800101-1234567", "철수 상사", "도매 및 소매업", "20100101", "")]
UNEMPLOYMENT_BENEFITS = [(1, "800101-1234567", "20240701", "20240708", 120, 64_192, 7_703_040)]
LIVELIHOOD_RECIPIENTS = [(1, "820202-2345678", 1, "생계,의료", 700_000, "20200101")]
DISABILITY_REGISTRY = [(1, "100303-3456789", "지적", "심한 장애", "20150101")]
YOUTH_LEAP_ACCOUNTS = [(1, "900404-1111111", "004", "20240101", 700_000, 21_000, "active")]


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
    f = list(zip(*FOREIGN_RESIDENTS, strict=True))
    _write(home, "moj", "foreign_residents", pa.table({
        "foreign_resident_id": pa.array(f[0], pa.int64()),
        "frn": pa.array(f[1], pa.string()),
        "name": pa.array(["NGUYEN LAN", "KARIMOV AZIZ", "NGUYEN LAN"], pa.string()),
        "nationality": pa.array(f[2], pa.string()),
        "visa_type": pa.array(f[3], pa.string()),
        "sigungu_code": pa.array(f[4], pa.string()),
        "entry_date": pa.array(f[5], pa.string()),
        "registered_date": pa.array(f[6], pa.string()),
        "updated_at": pa.array(f[7], pa.timestamp("us")),
    }), ds)  # fmt: skip
    b = list(zip(*BUSINESS_REGISTRATIONS, strict=True))
    _write(home, "nts", "business_registrations", pa.table({
        "business_registration_id": pa.array(b[0], pa.int64()),
        "brn": pa.array(b[1], pa.string()),
        "owner_rrn": pa.array(b[2], pa.string()),
        "trade_name": pa.array(b[3], pa.string()),
        "business_type": pa.array(b[4], pa.string()),
        "opened_date": pa.array(b[5], pa.string()),
        "closed_date": pa.array(b[6], pa.string()),
        "updated_at": pa.array([UPDATED], pa.timestamp("us")),
    }), ds)  # fmt: skip
    u = list(zip(*UNEMPLOYMENT_BENEFITS, strict=True))
    _write(home, "moel", "unemployment_benefits", pa.table({
        "benefit_id": pa.array(u[0], pa.int64()),
        "rrn": pa.array(u[1], pa.string()),
        "claim_date": pa.array(u[2], pa.string()),
        "benefit_start_date": pa.array(u[3], pa.string()),
        "benefit_days": pa.array(u[4], pa.int32()),
        "daily_amount": pa.array(u[5], pa.int64()),
        "total_paid": pa.array(u[6], pa.int64()),
        "updated_at": pa.array([UPDATED], pa.timestamp("us")),
    }), ds)  # fmt: skip
    lr = list(zip(*LIVELIHOOD_RECIPIENTS, strict=True))
    _write(home, "mohw", "basic_livelihood_recipients", pa.table({
        "recipient_id": pa.array(lr[0], pa.int64()),
        "rrn": pa.array(lr[1], pa.string()),
        "household_size": pa.array(lr[2], pa.int32()),
        "benefit_types": pa.array(lr[3], pa.string()),
        "monthly_benefit": pa.array(lr[4], pa.int64()),
        "selected_date": pa.array(lr[5], pa.string()),
        "updated_at": pa.array([UPDATED], pa.timestamp("us")),
    }), ds)  # fmt: skip
    dr = list(zip(*DISABILITY_REGISTRY, strict=True))
    _write(home, "mohw", "disability_registry", pa.table({
        "registration_id": pa.array(dr[0], pa.int64()),
        "rrn": pa.array(dr[1], pa.string()),
        "disability_type": pa.array(dr[2], pa.string()),
        "severity": pa.array(dr[3], pa.string()),
        "registered_date": pa.array(dr[4], pa.string()),
        "updated_at": pa.array([UPDATED], pa.timestamp("us")),
    }), ds)  # fmt: skip
    y = list(zip(*YOUTH_LEAP_ACCOUNTS, strict=True))
    _write(home, "fsc", "youth_leap_accounts", pa.table({
        "account_id": pa.array(y[0], pa.int64()),
        "rrn": pa.array(y[1], pa.string()),
        "bank_code": pa.array(y[2], pa.string()),
        "opened_date": pa.array(y[3], pa.string()),
        "monthly_contribution": pa.array(y[4], pa.int64()),
        "government_match": pa.array(y[5], pa.int64()),
        "status": pa.array(y[6], pa.string()),
        "updated_at": pa.array([UPDATED], pa.timestamp("us")),
    }), ds)  # fmt: skip


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
