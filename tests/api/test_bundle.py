"""POST /v1/bundles/crime-victim-support: 503 until the shared dataset is published, then one signed answer."""

from __future__ import annotations

import time
from datetime import date

from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.signing import verify_evidence
from zerodoc.privacy import pseudonymize

from .support import ALICE, BOB, CONSENTS, audit_records, bearer, publish, victim_table

CENTER = "victim-support-center"
PURPOSE = "crime_victim_support"


def _req(subject=ALICE, **over) -> dict:
    return {"subject_id": subject, "purpose": PURPOSE, "consent_id": CONSENTS[(subject, PURPOSE)], **over}


def test_503_until_the_dataset_is_published_then_answers(client, keys, published, audit_path):
    h = bearer(keys[CENTER])
    r = client.post("/v1/bundles/crime-victim-support", json=_req(), headers=h)
    assert r.status_code == 503 and r.json() == {
        "error": {
            "code": "dataset_unavailable",
            "message": "dataset victim_support_eligibility_v1 has not been published yet",
        }
    }
    assert audit_records(audit_path)[-1]["reason"] == "dataset_unavailable"

    today = date.today()
    publish(
        published,
        "victim_support_eligibility_v1",
        "20260101T000000",
        victim_table(published.pseudonym_key, today),
        as_of=today.isoformat(),
    )
    deadline = time.monotonic() + 20
    while (r := client.post("/v1/bundles/crime-victim-support", json=_req(), headers=h)).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    answer = r.json()
    ev = answer["evidence"]
    assert answer["status"] == "ok" and ev["evidence_type"] == "crime_victim_support_bundle"
    assert ev["areas"] == {
        "legal_aid": {"eligible": True, "rule_id": "legal_aid.r1", "reason": None},
        "relief_fund": {"eligible": True, "rule_id": "relief_fund.r1", "reason": None},
        "emergency_livelihood": {"eligible": False, "rule_id": "emergency_livelihood.r1",
                                 "reason": "household_income_above_ceiling"},
        "employment_support": {"eligible": True, "rule_id": "employment_support.r1", "reason": None},
        "financial_support": {"eligible": False, "rule_id": "financial_support.r1",
                              "reason": "household_income_above_ceiling"},
    }
    assert ev["inputs"] == {"victim_case_id": "VC-2025-0001", "household_income_ratio": 0.42}
    assert ev["dataset_version"] == "20260101T000000" and ev["validation_run_ids"]
    assert ev["subject_pseudonym"] == pseudonymize(ALICE, published.pseudonym_key)
    assert verify_evidence(answer, client.get("/.well-known/jwks.json").json())
    rec = audit_records(audit_path)[-1]
    assert (rec["path"], rec["decision"], rec["dataset"]) == (
        "/v1/bundles/crime-victim-support",
        "allowed",
        "victim_support_eligibility_v1",
    )
    assert "inputs" in rec["fields"] and "legal_aid_eligible" in rec["fields"]

    # Someone without a row: 404 (the center holds consent); stale data: needs_document (max_age_days 90).
    r = client.post("/v1/bundles/crime-victim-support", json=_req(BOB), headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "subject_not_found"


def test_stale_victim_data_needs_the_paper_confirmation(published, keys, consents):
    publish(
        published,
        "victim_support_eligibility_v1",
        "old",
        victim_table(published.pseudonym_key, date(2020, 1, 1)),
        as_of="2020-01-01",
    )
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post("/v1/bundles/crime-victim-support", json=_req(), headers=bearer(keys[CENTER]))
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["document"], r.json()["reason"]) == (
        "needs_document",
        "crime victim confirmation (범죄피해자 확인서)",
        "data_stale",
    )


def test_bundle_needs_grant_and_consent(client, keys):
    r = client.post("/v1/bundles/crime-victim-support", json=_req(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "purpose_not_granted"
    r = client.post("/v1/bundles/crime-victim-support", json=_req(consent_id="cns_nope"), headers=bearer(keys[CENTER]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "consent_missing"
