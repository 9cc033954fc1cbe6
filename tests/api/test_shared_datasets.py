"""Evidence for every per-person shared dataset (employment, household, benefit notification) and
the aggregate living-population table read at /v1/shared-tables/query."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.consent import ConsentRegistry
from zerodoc.api.consumers import add_consumer
from zerodoc.api.datasets import DATASET_COLUMNS, EVIDENCE_TYPES, SHARED_TABLES
from zerodoc.api.signing import verify_evidence
from zerodoc.config import REPO_ROOT
from zerodoc.privacy import pseudonymize

from .support import ALICE, BOB, NOBODY, audit_records, bearer, publish

CAROL = "770707-1111111"
LIVELIHOOD = "basic_livelihood_application"
VERSION = "20250630T000000"


def _consent(cfg, subject: str, consumer: str, purpose: str, datasets: list[str]) -> str:
    now = datetime.now(UTC)
    return (
        ConsentRegistry(cfg)
        .record(
            subject_pseudonym=pseudonymize(subject, cfg.pseudonym_key),
            consumer=consumer,
            purpose=purpose,
            datasets=datasets,
            valid_from=now - timedelta(days=1),
            valid_to=now + timedelta(days=30),
            recorded_by="test",
        )
        .consent_id
    )


def _ask(c, key: str, evidence_type: str, subject: str, consent_id: str, purpose: str = LIVELIHOOD):
    body = {"evidence_type": evidence_type, "subject_id": subject, "purpose": purpose, "consent_id": consent_id}
    return c.post("/v1/evidence", json=body, headers=bearer(key))


@pytest.fixture
def today():
    """Data as of today, so the grants' max_age_days (45) does not send everyone to paper."""
    return date.today()


@pytest.fixture
def households(cfg, keys, today):
    """ALICE and BOB share household 10 (two earners); CAROL lives alone in household 11."""
    k = cfg.pseudonym_key
    publish(
        cfg,
        "residence_v1",
        VERSION,
        pa.table(
            {
                "subject_pseudonym": [pseudonymize(s, k) for s in (ALICE, BOB, CAROL)],
                "sido_code": ["11", "11", "26"],
                "sido_name": ["서울특별시", "서울특별시", "부산광역시"],
                "sigungu_code": ["11680", "11680", "26350"],
                "sigungu_name": ["강남구", "강남구", "해운대구"],
                "household_id": pa.array([10, 10, 11], pa.int64()),
                "household_size": pa.array([2, 2, 1], pa.int64()),
                "is_household_head": [True, False, True],
                "moved_in_on": [date(2019, 3, 2)] * 3,
                "as_of": [today] * 3,
            }
        ),
        as_of=today.isoformat(),
    )
    publish(
        cfg,
        "household_v1",
        "20250630T010000",
        pa.table(
            {
                "household_id": pa.array([11, 10, 256], pa.int64()),  # unsorted; 256 ends in a NUL byte
                "household_size": pa.array([1, 2, 4], pa.int64()),
                "members_with_income": pa.array([1, 2, 0], pa.int64()),
                "household_income_krw": pa.array([18_000_000, 51_500_000, 0], pa.int64()),
                "latest_tax_year": pa.array([2024, 2024, None], pa.int32()),
                "median_rule_id": [
                    "median_income.2025.size_1",
                    "median_income.2025.size_2",
                    "median_income.2025.size_4",
                ],
                "median_year": pa.array([2025, 2025, 2025], pa.int32()),
                "median_income_krw": pa.array([2_392_013, 3_932_658, 6_097_773], pa.int64()),
                "income_to_median_ratio": [18_000_000 / 12 / 2_392_013, 51_500_000 / 12 / 3_932_658, 0.0],
                "as_of": [today] * 3,
            }
        ),
        as_of=today.isoformat(),
    )
    return cfg


def test_household_evidence_answers_through_residence(households, keys, today):
    welfare = keys["welfare-portal"]
    consent = {
        s: _consent(households, s, "welfare-portal", LIVELIHOOD, ["household_v1"]) for s in (ALICE, CAROL, NOBODY)
    }
    with TestClient(create_app(households, rate_per_sec=0)) as c:
        alice = _ask(c, welfare, "household", ALICE, consent[ALICE])
        carol = _ask(c, welfare, "household", CAROL, consent[CAROL])
        nobody = _ask(c, welfare, "household", NOBODY, consent[NOBODY])
        jwks = c.get("/.well-known/jwks.json").json()
    assert alice.status_code == 200, alice.json()
    evidence = alice.json()["evidence"]
    assert evidence["fields"] == {
        "household_size": 2,
        "members_with_income": 2,
        "household_income_krw": 51_500_000,
        "latest_tax_year": 2024,
        "median_rule_id": "median_income.2025.size_2",
        "median_year": 2025,
        "median_income_krw": 3_932_658,
        "income_to_median_ratio": pytest.approx(51_500_000 / 12 / 3_932_658),
    }
    assert (evidence["evidence_type"], evidence["dataset"], evidence["dataset_version"]) == (
        "household",
        "household_v1",
        "20250630T010000",
    )
    assert evidence["as_of"] == today.isoformat()
    # The household's own validation run and the residence run that says who lives in it.
    assert evidence["validation_run_ids"] == ["run-household_v1-20250630T010000", f"run-residence_v1-{VERSION}"]
    assert verify_evidence(alice.json(), jwks)
    assert carol.json()["evidence"]["fields"]["median_rule_id"] == "median_income.2025.size_1"
    assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "subject_not_found"
    # Households are mapped from the shared index cache like the per-person datasets: one file for all workers.
    cached = list((households.state_dir / "index-cache" / "household_v1" / "20250630T010000").glob("*.arrow"))
    assert len(cached) == 1 and cached[0].with_name(cached[0].name + ".json").exists()
    with TestClient(create_app(households, rate_per_sec=0)) as c:  # a second worker: maps it, same answer
        again = _ask(c, welfare, "household", ALICE, consent[ALICE])
    assert again.json()["evidence"]["fields"] == alice.json()["evidence"]["fields"]
    assert list((households.state_dir / "index-cache" / "household_v1").rglob("*.arrow")) == cached


def test_one_quarantined_member_sends_the_whole_household_to_paper(households, keys):
    # BOB's income row failed validation: household 10's income is incomplete for ALICE too.
    path = households.quarantine_dir / "nts" / "income" / f"ds={date.today().isoformat()}" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"income_id": [7], "rrn": [BOB.replace("-", "")], "tax_year": [2024]}), path)
    welfare = keys["welfare-portal"]
    with TestClient(create_app(households, rate_per_sec=0)) as c:
        alice = _ask(
            c, welfare, "household", ALICE, _consent(households, ALICE, "welfare-portal", LIVELIHOOD, ["household_v1"])
        )
        carol = _ask(
            c, welfare, "household", CAROL, _consent(households, CAROL, "welfare-portal", LIVELIHOOD, ["household_v1"])
        )
    assert (alice.json()["status"], alice.json()["reason"], alice.json()["document"]) == (
        "needs_document",
        "records_quarantined",
        "household certificate (주민등록표 등본) and each member's income certificate (소득금액증명)",
    )
    assert carol.json()["status"] == "ok"


def test_employment_evidence_has_only_the_purpose_fields(published, keys, audit_path, today):
    k = published.pseudonym_key
    publish(
        published,
        "employment_v1",
        VERSION,
        pa.table(
            {
                "subject_pseudonym": [pseudonymize(ALICE, k)],
                "is_insured": [True],
                "current_employer_brn": ["1208147521"],
                "insured_since": [date(2021, 4, 1)],
                "current_monthly_wage_krw": pa.array([2_750_000], pa.int64()),
                "current_enrolment_count": pa.array([1], pa.int32()),
                "enrolment_count": pa.array([3], pa.int32()),
                "last_lost_on": [date(2021, 3, 31)],
                "as_of": [today],
            }
        ),
        as_of=today.isoformat(),
    )
    welfare, center = keys["welfare-portal"], keys["victim-support-center"]
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        w = _ask(
            c, welfare, "employment", ALICE, _consent(published, ALICE, "welfare-portal", LIVELIHOOD, ["employment_v1"])
        )
        v = _ask(
            c,
            center,
            "employment",
            ALICE,
            _consent(published, ALICE, "victim-support-center", "crime_victim_support", ["employment_v1"]),
            purpose="crime_victim_support",
        )
        # A consent for residence and income only does not cover employment.
        narrow = _ask(
            c, welfare, "employment", ALICE, _consent(published, ALICE, "welfare-portal", LIVELIHOOD, ["income_v1"])
        )
    assert w.json()["evidence"]["fields"] == {
        "is_insured": True,
        "insured_since": "2021-04-01",
        "current_monthly_wage_krw": 2_750_000,
        "last_lost_on": "2021-03-31",
    }
    assert v.json()["evidence"]["fields"] == {
        "is_insured": True,
        "current_enrolment_count": 1,
        "last_lost_on": "2021-03-31",
    }
    assert (narrow.status_code, narrow.json()["error"]["code"]) == (403, "consent_scope")
    recs = [r for r in audit_records(audit_path) if r["dataset"] == "employment_v1"]
    assert [(r["consumer"], r["reason"], r["fields"]) for r in recs] == [
        ("welfare-portal", "granted", ["is_insured", "insured_since", "current_monthly_wage_krw", "last_lost_on"]),
        ("victim-support-center", "granted", ["is_insured", "current_enrolment_count", "last_lost_on"]),
        ("welfare-portal", "consent_scope", []),
    ]


def test_benefit_notification_evidence_names_rule_and_reason(published, keys):
    p = pseudonymize(ALICE, published.pseudonym_key)
    publish(
        published,
        "benefit_notifications_v1",
        VERSION,
        pa.table(
            {
                "notification_id": ["n-old", "n-new"],
                "subject_pseudonym": [p, p],
                "programme": ["youth_leap_account", "youth_leap_account"],
                "rule_id": ["youth_leap.2024", "youth_leap.2025"],
                "reason": ["age 24; household 120% of median", "age 25; household 140% of median"],
                "eligible_on": [date(2024, 6, 30), date(2025, 6, 30)],
            }
        ),
    )
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        consent = _consent(published, ALICE, "welfare-portal", "benefit_guidance", ["benefit_notifications_v1"])
        r = _ask(c, keys["welfare-portal"], "benefit_notification", ALICE, consent, purpose="benefit_guidance")
        wrong = _ask(
            c, keys["youth-account-service"], "benefit_notification", ALICE, consent, purpose="benefit_guidance"
        )
    assert r.json()["evidence"]["fields"] == {
        "programme": "youth_leap_account",
        "rule_id": "youth_leap.2025",
        "reason": "age 25; household 140% of median",
        "eligible_on": "2025-06-30",
    }
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "purpose_not_granted")


def _population(cfg) -> None:
    rows = [
        ("11", "서울특별시", "11680", "강남구", "20-29", "M", False, 812, None),
        ("11", "서울특별시", "11680", "강남구", "20-29", "F", False, None, "primary"),
        ("11", "서울특별시", "11680", "강남구", "total", "total", True, 5120, None),
        ("26", "부산광역시", "26350", "해운대구", "20-29", "M", False, 301, None),
    ]
    cols = ["sido_code", "sido_name", "sigungu_code", "sigungu_name", "age_band", "sex", "is_total", "population"]
    table = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    table["population"] = pa.array(table["population"], pa.int64())
    table["is_suppressed"] = [r[8] is not None for r in rows]
    table["suppression_reason"] = [r[8] for r in rows]
    table["as_of"] = [date(2025, 6, 30)] * len(rows)
    publish(cfg, "living_population_by_region_v1", VERSION, pa.table(table))


def test_shared_table_query_returns_signed_rows_with_suppressed_cells_null(published, keys, audit_path):
    _population(published)
    planner = add_consumer("regional-planning-office", published)
    query = {"dataset": "living_population_by_region_v1", "purpose": "regional_service_planning"}
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        gangnam = c.post("/v1/shared-tables/query", json={**query, "sigungu_code": "11680"}, headers=bearer(planner))
        everything = c.post("/v1/shared-tables/query", json=query, headers=bearer(planner))
        jwks = c.get("/.well-known/jwks.json").json()
        not_granted = c.post("/v1/shared-tables/query", json=query, headers=bearer(keys["welfare-portal"]))
        per_person = c.post(
            "/v1/shared-tables/query", json={**query, "dataset": "residence_v1"}, headers=bearer(planner)
        )
        bad_filter = c.post("/v1/shared-tables/query", json={**query, "subject_id": ALICE}, headers=bearer(planner))
    assert gangnam.status_code == 200, gangnam.json()
    evidence = gangnam.json()["evidence"]
    assert (evidence["evidence_type"], evidence["dataset_version"], evidence["as_of"]) == (
        "shared_table",
        VERSION,
        "2025-06-30",
    )
    assert evidence["filters"] == {"sigungu_code": "11680"} and evidence["row_count"] == 3
    assert [(r["age_band"], r["sex"], r["population"], r["suppression_reason"]) for r in evidence["rows"]] == [
        ("20-29", "M", 812, None),
        ("20-29", "F", None, "primary"),
        ("total", "total", 5120, None),
    ]
    assert "subject_pseudonym" not in str(evidence)
    assert verify_evidence(gangnam.json(), jwks)
    assert everything.json()["evidence"]["row_count"] == 4
    assert (not_granted.status_code, not_granted.json()["error"]["code"]) == (403, "purpose_not_granted")
    assert (per_person.status_code, per_person.json()["error"]["code"]) == (422, "not_a_shared_table")
    assert (bad_filter.status_code, bad_filter.json()["error"]) == (
        422,
        {"code": "invalid_request", "message": "unknown field(s): subject_id"},
    )
    recs = [r for r in audit_records(audit_path) if r["path"] == "/v1/shared-tables/query"]
    assert [(r["consumer"], r["status"], r["reason"], r["dataset"], r["subject_pseudonym"]) for r in recs] == [
        ("regional-planning-office", 200, "granted", "living_population_by_region_v1", None),
        ("regional-planning-office", 200, "granted", "living_population_by_region_v1", None),
        ("welfare-portal", 403, "purpose_not_granted", "living_population_by_region_v1", None),
        ("regional-planning-office", 422, "not_a_shared_table", None, None),
        ("regional-planning-office", 422, "invalid_request", None, None),
    ]
    assert recs[0]["dataset_version"] == VERSION


def test_every_shared_mart_is_evidence_or_a_shared_table():
    marts = {p.stem for p in (REPO_ROOT / "dbt_project" / "models" / "marts" / "shared").glob("*_v1.sql")}
    assert len(marts) == 8
    assert set(EVIDENCE_TYPES.values()) | set(SHARED_TABLES) == marts
    assert not set(EVIDENCE_TYPES.values()) & set(SHARED_TABLES)
    assert set(DATASET_COLUMNS) == marts


def test_datasets_no_grant_returns_are_not_loaded(published, keys, tmp_path, monkeypatch):
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "version: 1\npurposes:\n  livelihood:\n    legal_basis: National Basic Living Security Act Art. 21-22\n"
        "grants:\n  - {consumer: welfare-portal, dataset: income_v1, purpose: livelihood, fields: [tax_year]}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("ZERODOC_ACCESS_POLICY", str(policy))
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        health = c.get("/v1/health").json()["datasets"]
    assert health["income_v1"]["granted"] and health["income_v1"]["serving_version"] == VERSION
    # residence_v1 is published but no grant returns it: not held in memory.
    assert not health["residence_v1"]["granted"] and health["residence_v1"]["version"] == VERSION
    assert health["residence_v1"]["serving_version"] is None
