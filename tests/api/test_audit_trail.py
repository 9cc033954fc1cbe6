"""Every /v1/ request, allowed or denied, lands in the audit log with its decision, and no raw ID."""

from __future__ import annotations

from zerodoc.api.consumers import revoke_consumer
from zerodoc.audit.log import verify_chain
from zerodoc.privacy import contains_rrn, pseudonymize

from .support import ALICE, BOB, CONSENTS, NOBODY, audit_records, bearer, body


def test_each_request_is_recorded_with_its_decision_and_no_raw_id(client, keys, published, audit_path):
    welfare, youth = bearer(keys["welfare-portal"]), bearer(keys["youth-account-service"])
    json_header = {"Content-Type": "application/json"}
    calls = [
        (lambda: client.post("/v1/evidence", json=body(), headers=welfare), 200),
        (lambda: client.post("/v1/evidence", json=body()), 401),
        (lambda: client.post("/v1/evidence", json=body(), headers=bearer("zdk_wrong")), 401),
        (lambda: client.post("/v1/evidence", json=body(evidence_type="income"), headers=youth), 403),
        (lambda: client.post("/v1/evidence", content=b"{oops", headers={**welfare, **json_header}), 422),
        (lambda: client.post("/v1/evidence", json=body(subject_id="9001011234567"), headers=welfare), 422),
        (lambda: client.post("/v1/evidence", json=body(subject_id=NOBODY), headers=welfare), 404),
        (lambda: client.post("/v1/evidence", json=body(consent_id=BOB), headers=welfare), 422),
        (lambda: client.get("/v1/health"), 200),
        (lambda: client.get("/v1/nope"), 404),
    ]
    for call, status in calls:
        assert call().status_code == status
    revoke_consumer("welfare-portal", published)
    assert client.post("/v1/evidence", json=body(), headers=welfare).status_code == 401

    records = audit_records(audit_path)
    key = published.pseudonym_key
    summary = [(r["status"], r["decision"], r["consumer"], r["reason"]) for r in records]
    assert summary == [
        (200, "allowed", "welfare-portal", "granted"),
        (401, "denied", None, "unauthorized"),
        (401, "denied", None, "unauthorized"),
        (403, "denied", "youth-account-service", "purpose_not_granted"),
        (422, "denied", "welfare-portal", "invalid_json"),
        (422, "denied", "welfare-portal", "invalid_subject_id"),
        (404, "denied", "welfare-portal", "subject_not_found"),
        (422, "denied", "welfare-portal", "invalid_consent_id"),
        (200, "allowed", None, "health"),
        (404, "denied", None, "not_found"),
        (401, "denied", None, "unauthorized"),
    ]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))

    allowed = records[0]
    assert allowed["subject_pseudonym"] == pseudonymize(ALICE, key)
    assert allowed["fields"] == ["sido_name", "sigungu_name", "household_size", "moved_in_on"]
    assert allowed["dataset"] == "residence_v1" and allowed["dataset_version"] == "20250630T000000"
    assert allowed["purpose"] == "basic_livelihood_application"
    assert allowed["consent_id"] == CONSENTS[(ALICE, "basic_livelihood_application")]
    # A denied request still names whose data was asked for, so the citizen can see the attempt.
    assert records[3]["subject_pseudonym"] == pseudonymize(ALICE, key)
    assert records[3]["fields"] == []
    assert records[6]["subject_pseudonym"] == pseudonymize(NOBODY, key)

    text = audit_path.read_text(encoding="utf-8")
    for raw in (ALICE, BOB, NOBODY, "9001011234567", ALICE.replace("-", "")):
        assert raw not in text
    assert not contains_rrn(text)
    assert verify_chain(audit_path).ok


def test_the_record_is_written_before_the_response(client, keys, audit_path):
    before = len(audit_records(audit_path)) if audit_path.exists() else 0
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    # TestClient returns only after the handler returned; no background task is involved.
    assert r.status_code == 200
    assert len(audit_records(audit_path)) == before + 1


def test_no_answer_leaves_when_the_audit_log_cannot_be_written(client, keys, audit_path):
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    audit_path.unlink(missing_ok=True)
    audit_path.mkdir()  # opening a directory for writing fails, even for root
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 503
    assert r.json() == {
        "error": {
            "code": "audit_unavailable",
            "message": "the request could not be recorded; try again later",
        }
    }
