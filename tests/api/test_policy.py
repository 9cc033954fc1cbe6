"""The access policy file: the real one loads; mistakes stop the server with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerodoc.api.app import create_app
from zerodoc.api.policy import PolicyError, load_policy
from zerodoc.config import REPO_ROOT

HEADER = """
version: 1
purposes:
  livelihood:
    legal_basis: National Basic Living Security Act Art. 21-22
grants:
"""


def _write(tmp_path: Path, grants: str, header: str = HEADER) -> Path:
    path = tmp_path / "access_policy.yml"
    path.write_text(header + grants, encoding="utf-8")
    return path


def test_repository_policy_grants_exactly_the_demo_consumers():
    policy = load_policy(REPO_ROOT / "config" / "access_policy.yml")
    grants = {k: g.fields for k, g in policy.grants.items()}
    assert grants == {
        ("welfare-portal", "residence_v1", "basic_livelihood_application"): (
            "sido_name",
            "sigungu_name",
            "household_size",
            "moved_in_on",
        ),
        ("welfare-portal", "income_v1", "basic_livelihood_application"): ("tax_year", "total_income_krw"),
        ("youth-account-service", "income_v1", "youth_leap_account_eligibility"): (
            "tax_year",
            "earned_income_krw",
            "total_income_krw",
        ),
        ("victim-support-center", "victim_support_eligibility_v1", "crime_victim_support"): tuple(
            f"{area}_{suffix}"
            for area in ("legal_aid", "relief_fund", "emergency_livelihood", "employment_support", "financial_support")
            for suffix in ("eligible", "rule_id", "reason")
        )
        + ("inputs",),
        ("youth-account-service", "youth_leap_eligibility_v1", "youth_leap_account_eligibility"): (
            "is_eligible", "rule_id", "ineligibility_reason", "age_on_as_of", "income_tax_year",
            "percent_of_median", "is_age_eligible", "is_individual_income_eligible",
            "is_household_income_eligible", "has_open_account",
        ),
        ("welfare-portal", "employment_v1", "basic_livelihood_application"): (
            "is_insured",
            "insured_since",
            "current_monthly_wage_krw",
            "last_lost_on",
        ),
        ("welfare-portal", "household_v1", "basic_livelihood_application"): (
            "household_size",
            "members_with_income",
            "household_income_krw",
            "latest_tax_year",
            "median_rule_id",
            "median_year",
            "median_income_krw",
            "income_to_median_ratio",
        ),
        ("welfare-portal", "benefit_notifications_v1", "benefit_guidance"): (
            "programme",
            "rule_id",
            "reason",
            "eligible_on",
        ),
        ("regional-planning-office", "living_population_by_region_v1", "regional_service_planning"): (
            "sido_code",
            "sido_name",
            "sigungu_code",
            "sigungu_name",
            "age_band",
            "sex",
            "is_total",
            "population",
            "is_suppressed",
            "suppression_reason",
            "as_of",
        ),
        ("victim-support-center", "employment_v1", "crime_victim_support"): (
            "is_insured",
            "current_enrolment_count",
            "last_lost_on",
        ),
    }
    assert (
        policy.grants[("victim-support-center", "victim_support_eligibility_v1", "crime_victim_support")].max_age_days
        == 90
    )
    assert all(p.legal_basis for p in policy.purposes.values())
    assert policy.grant_for("youth-account-service", "residence_v1", "youth_leap_account_eligibility") is None


@pytest.mark.parametrize(
    ("grants", "message"),
    [
        (
            "  - {consumer: a-b, dataset: passports_v1, purpose: livelihood, fields: [x]}\n",
            "grant #1 (a-b / passports_v1 / livelihood): unknown dataset 'passports_v1'",
        ),
        (
            "  - {consumer: a-b, dataset: household_v1, purpose: livelihood, fields: [household_id]}\n",
            "grant #1 (a-b / household_v1 / livelihood): unknown field 'household_id' for household_v1",
        ),
        (
            "  - {consumer: a-b, dataset: income_v1, purpose: livelihood, fields: [salary]}\n",
            "grant #1 (a-b / income_v1 / livelihood): unknown field 'salary' for income_v1",
        ),
        (
            "  - {consumer: a-b, dataset: income_v1, purpose: livelihood, fields: [subject_pseudonym]}\n",
            "unknown field 'subject_pseudonym' for income_v1",
        ),
        (
            "  - {consumer: a-b, dataset: income_v1, purpose: livelihood, fields: [tax_year]}\n"
            "  - {consumer: a-b, dataset: income_v1, purpose: livelihood,"
            " fields: [total_income_krw]}\n",
            "grant #2 (a-b / income_v1 / livelihood): duplicate grant",
        ),
        (
            "  - {consumer: a-b, dataset: income_v1, purpose: marketing, fields: [tax_year]}\n",
            "unknown purpose 'marketing'",
        ),
        (
            "  - {consumer: a-b, dataset: income_v1, purpose: livelihood, fields: []}\n",
            "fields must be a non-empty list",
        ),
        (
            "  - {consumer: a-b, dataset: income_v1, purpose: livelihood, fields: [tax_year], expires: never}\n",
            "grant #1: unknown keys ['expires']",
        ),
    ],
)
def test_invalid_grants_are_rejected_with_a_clear_message(tmp_path, grants, message):
    path = _write(tmp_path, grants)
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_purpose_without_legal_basis_and_duplicate_yaml_keys_are_rejected(tmp_path):
    path = _write(tmp_path, "", "version: 1\npurposes:\n  some_purpose: {legal_basis: ''}\ngrants: []\n")
    with pytest.raises(PolicyError, match="legal_basis must be non-empty"):
        load_policy(path)
    path = _write(
        tmp_path,
        "",
        "version: 1\npurposes:\n  some_purpose: {legal_basis: a}\n  some_purpose: {legal_basis: b}\ngrants: []\n",
    )
    with pytest.raises(PolicyError, match="duplicate key 'some_purpose'"):
        load_policy(path)


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="access policy file not found"):
        load_policy(tmp_path / "nope.yml")


def test_app_refuses_to_start_on_an_invalid_policy(cfg, tmp_path, monkeypatch):
    path = _write(
        tmp_path,
        "  - {consumer: a-b, dataset: income_v1, purpose: livelihood, fields: [x]}\n",
    )
    monkeypatch.setenv("ZERODOC_ACCESS_POLICY", str(path))
    with pytest.raises(PolicyError, match="unknown field 'x'"):
        create_app(cfg)
