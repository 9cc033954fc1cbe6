"""Per-person paper fallback: quarantined subjects get needs_document, everyone else evidence."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.signing import verify_evidence

from .support import ALICE, BOB, audit_records, bearer, body


def _quarantine(cfg, agency: str, entity: str, table: pa.Table, ds: str = "2025-06-30") -> None:
    path = cfg.quarantine_dir / agency / entity / f"ds={ds}" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)


def _reasons(n: int) -> pa.Array:
    return pa.array([[{"expectation_id": "x", "severity": "fail", "reason": "bad"}]] * n)


@pytest.fixture
def quarantined_bob(published):
    # BOB's income row failed validation (e.g. impossible filed_date): the raw row is in quarantine.
    _quarantine(
        published,
        "nts",
        "income",
        pa.table({"income_id": [7], "rrn": [BOB.replace("-", "")], "tax_year": [2024], "_reasons": _reasons(1)}),
    )
    return published


def test_quarantined_subject_gets_needs_document_and_others_evidence(quarantined_bob, keys, consents, audit_path):
    h = bearer(keys["welfare-portal"])
    with TestClient(create_app(quarantined_bob, rate_per_sec=0)) as c:
        bob = c.post("/v1/evidence", json=body(evidence_type="income", subject_id=BOB), headers=h)
        alice = c.post("/v1/evidence", json=body(evidence_type="income", subject_id=ALICE), headers=h)
        jwks = c.get("/.well-known/jwks.json").json()
    assert bob.status_code == 200
    answer = bob.json()
    assert (answer["status"], answer["document"], answer["reason"]) == (
        "needs_document",
        "income certificate (소득금액증명)",
        "records_quarantined",
    )
    assert answer["evidence"]["dataset_version"] == "20250630T000000"
    assert verify_evidence(answer, jwks)
    assert alice.status_code == 200 and alice.json()["status"] == "ok"
    assert alice.json()["evidence"]["fields"]["tax_year"] == 2024
    recs = audit_records(audit_path)
    bob_rec = next(r for r in recs if r["decision"] == "needs_document")
    assert (bob_rec["status"], bob_rec["reason"], bob_rec["dataset"]) == (200, "records_quarantined", "income_v1")


def test_a_quarantined_household_marks_its_residents(published, keys, consents):
    # ALICE lives in household 10; the household row failed, ALICE's resident row passed.
    validated = published.validated_dir / "mois" / "residents" / "ds=2025-06-30" / "part-0.parquet"
    validated.parent.mkdir(parents=True)
    pq.write_table(
        pa.table({"resident_id": [1, 2], "rrn": [ALICE, "770707-1111111"], "household_id": [10, 11]}), validated
    )
    _quarantine(published, "mois", "households", pa.table({"household_id": [10], "_reasons": _reasons(1)}))
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
        income = c.post("/v1/evidence", json=body(evidence_type="income"), headers=bearer(keys["welfare-portal"]))
    assert r.json()["status"] == "needs_document"
    assert r.json()["document"] == "resident registration certificate (주민등록표 등본)"
    assert income.json()["status"] == "ok"  # other datasets are not affected


def test_quarantine_of_another_date_does_not_count(published, keys, consents):
    _quarantine(
        published,
        "nts",
        "income",
        pa.table({"rrn": [BOB], "_reasons": _reasons(1)}),
        ds="2025-05-31",
    )
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post(
            "/v1/evidence", json=body(evidence_type="income", subject_id=BOB), headers=bearer(keys["welfare-portal"])
        )
    assert r.json()["status"] == "ok"


def test_needs_document_only_after_consent(quarantined_bob, keys):
    """Without consent nobody learns that a subject's records were quarantined."""
    with TestClient(create_app(quarantined_bob, rate_per_sec=0)) as c:
        r = c.post(
            "/v1/evidence",
            json=body(evidence_type="income", subject_id=BOB, consent_id="cns_none"),
            headers=bearer(keys["welfare-portal"]),
        )
    assert r.status_code == 403 and r.json()["error"]["code"] == "consent_missing"


def test_a_quarantined_victim_case_asks_for_the_paper_confirmation(published, keys, consents):
    """Police cases carry the ID as victim_rrn: a quarantined case still marks that person only."""
    from datetime import date

    from .support import CONSENTS, publish, victim_table

    publish(published, "victim_support_eligibility_v1", "20250630T000000", victim_table(published.pseudonym_key,
                                                                                       date(2025, 6, 30)))
    _quarantine(published, "police", "crime_victim_cases",
                pa.table({"case_id": [3], "victim_rrn": [ALICE.replace("-", "")], "_reasons": _reasons(1)}))
    h = bearer(keys["victim-support-center"])
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post("/v1/bundles/crime-victim-support", headers=h, json={
            "subject_id": ALICE, "purpose": "crime_victim_support",
            "consent_id": CONSENTS[(ALICE, "crime_victim_support")]})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["status"], answer["document"]) == ("needs_document", "crime victim confirmation (범죄피해자 확인서)")
