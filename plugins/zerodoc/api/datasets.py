"""The published datasets the evidence API can answer from, and their columns.

Mirrors the contracts in docs/architecture.md ("Published datasets"); the policy loader
checks every granted field against these, so a typo in a grant fails at start, not at request.
"""

from __future__ import annotations

# evidence_type in the request -> published dataset
EVIDENCE_TYPES: dict[str, str] = {
    "residence": "residence_v1",
    "income": "income_v1",
}

KEY_COLUMN = "subject_pseudonym"

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
}

# Datasets with several rows per subject: the evidence is the row with the greatest value here.
LATEST_BY: dict[str, str] = {"income_v1": "tax_year"}

# Fields that are never granted: the key travels in the envelope, not in "fields".
NOT_GRANTABLE = frozenset({KEY_COLUMN})
