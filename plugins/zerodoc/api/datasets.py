"""The published datasets the evidence API can answer from, and their columns.

Mirrors the contracts in docs/architecture.md ("Published datasets"); the policy loader
checks every granted field against these, so a typo in a grant fails at start, not at request.
"""

from __future__ import annotations

# evidence_type in the request -> published dataset: every shared dataset about one person.
# household_v1 is keyed by household: its evidence is the subject's household (membership from
# residence_v1). living_population_by_region_v1 is about no one: it is read whole, with a purpose,
# at POST /v1/shared-tables/query (SHARED_TABLES), never as evidence about a subject.
EVIDENCE_TYPES: dict[str, str] = {
    "residence": "residence_v1",
    "income": "income_v1",
    "employment": "employment_v1",
    "household": "household_v1",
    "crime_victim_support": "victim_support_eligibility_v1",
    "youth_leap_eligibility": "youth_leap_eligibility_v1",
    "benefit_notification": "benefit_notifications_v1",
}

# Aggregate datasets (no subject in them) -> the columns a query may filter on by equality.
SHARED_TABLES: dict[str, tuple[str, ...]] = {
    "living_population_by_region_v1": ("sido_code", "sigungu_code", "age_band", "sex"),
}

# The paper document a consumer asks the citizen for when we cannot answer for that person.
FALLBACK_DOCUMENTS: dict[str, str] = {
    "residence_v1": "resident registration certificate (주민등록표 등본)",
    "income_v1": "income certificate (소득금액증명)",
    "victim_support_eligibility_v1": "crime victim confirmation (범죄피해자 확인서)",
    "youth_leap_eligibility_v1": "income certificate (소득금액증명) and household certificate (주민등록표 등본)",
    "employment_v1": "employment insurance eligibility history (고용보험 피보험자격 이력내역서)",
    "household_v1": "household certificate (주민등록표 등본) and each member's income certificate (소득금액증명)",
    "benefit_notifications_v1": "income certificate (소득금액증명) and household certificate (주민등록표 등본)",
}

# The one-stop crime-victim bundle: support area -> (eligibility, rule id, reason columns); the
# reason is the first condition that failed (null when eligible), so each part explains itself.
VICTIM_SUPPORT_DATASET = "victim_support_eligibility_v1"
VICTIM_SUPPORT_AREAS: dict[str, tuple[str, str, str]] = {
    area: (f"{area}_eligible", f"{area}_rule_id", f"{area}_reason")
    for area in ("legal_aid", "relief_fund", "emergency_livelihood", "employment_support", "financial_support")
}

KEY_COLUMN = "subject_pseudonym"
# Datasets keyed by something other than the subject: that column is the lookup key, never a field.
KEY_COLUMNS: dict[str, str] = {"household_v1": "household_id"}

DATASET_COLUMNS: dict[str, tuple[str, ...]] = {
    "residence_v1": (
        "subject_pseudonym",
        "sido_code",
        "sido_name",
        "sigungu_code",
        "sigungu_name",
        "household_id",
        "household_size",
        "is_household_head",
        "moved_in_on",
        "as_of",
    ),
    "income_v1": (
        "subject_pseudonym",
        "tax_year",
        "earned_income_krw",
        "business_income_krw",
        "other_income_krw",
        "total_income_krw",
        "filed_on",
        "as_of",
    ),
    "victim_support_eligibility_v1": (
        "subject_pseudonym",
        *(c for cols in VICTIM_SUPPORT_AREAS.values() for c in cols),
        "inputs",
        "as_of",
    ),
}

DATASET_COLUMNS["youth_leap_eligibility_v1"] = (
    "subject_pseudonym", "rule_id", "median_rule_id", "age_on_as_of", "income_tax_year", "earned_income_krw",
    "comprehensive_income_krw", "household_id", "household_size", "household_income_krw", "median_income_krw",
    "percent_of_median", "is_age_eligible", "is_individual_income_eligible", "is_household_income_eligible",
    "has_open_account", "is_eligible", "ineligibility_reason", "as_of",
)

DATASET_COLUMNS["employment_v1"] = (
    "subject_pseudonym",
    "is_insured",
    "current_employer_brn",
    "insured_since",
    "current_monthly_wage_krw",
    "current_enrolment_count",
    "enrolment_count",
    "last_lost_on",
    "as_of",
)
DATASET_COLUMNS["household_v1"] = (
    "household_id",
    "household_size",
    "members_with_income",
    "household_income_krw",
    "latest_tax_year",
    "median_rule_id",
    "median_year",
    "median_income_krw",
    "income_to_median_ratio",
    "as_of",
)
DATASET_COLUMNS["benefit_notifications_v1"] = (
    "notification_id",
    "subject_pseudonym",
    "programme",
    "rule_id",
    "reason",
    "eligible_on",
)
DATASET_COLUMNS["living_population_by_region_v1"] = (
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
)

# Datasets with several rows per subject: the evidence is the row with the greatest value here.
# benefit_notifications_v1 has one row per person and programme; with one programme today that
# is one per person, and with more the evidence names the most recent notification.
LATEST_BY: dict[str, str] = {"income_v1": "tax_year", "benefit_notifications_v1": "eligible_on"}

# Fields that are never granted: the key travels in the envelope, not in "fields".
NOT_GRANTABLE = frozenset({KEY_COLUMN})
