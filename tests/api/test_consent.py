"""Citizen-side consent endpoints: record and revoke, by the citizen-service role only, audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zerodoc.privacy import pseudonymize

from .support import ALICE, BOB, audit_records, bearer, body

CITIZEN = "citizen-portal"


def _consent_body(**over) -> dict:
    return {
        "subject_id": ALICE,
        "consumer": "welfare-portal",
        "purpose": "basic_livelihood_application",
        "datasets": ["residence_v1"],
        "valid_to": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        **over,
    }


def test_recorded_consent_opens_evidence_and_revoking_closes_it(client, keys, published, audit_path):
    r = client.post("/v1/consents", json=_consent_body(), headers=bearer(keys[CITIZEN]))
    assert r.status_code == 201, r.text
    consent = r.json()
    assert consent["consent_id"].startswith("cns_") and consent["revoked_at"] is None
    assert consent["datasets"] == ["residence_v1"] and ALICE not in r.text
    rec = audit_records(audit_path)[-1]
    assert (rec["status"], rec["reason"], rec["consumer"], rec["consent_id"]) == (
        201,
        "consent_recorded",
        CITIZEN,
        consent["consent_id"],
    )
    assert rec["subject_pseudonym"] == pseudonymize(ALICE, published.pseudonym_key)

    welfare = bearer(keys["welfare-portal"])
    ok = client.post("/v1/evidence", json=body(consent_id=consent["consent_id"]), headers=welfare)
    assert ok.status_code == 200

    # Revoking needs the subject too: a consent id alone revokes nothing.
    wrong = client.post(
        "/v1/consents/revoke",
        json={"consent_id": consent["consent_id"], "subject_id": BOB},
        headers=bearer(keys[CITIZEN]),
    )
    assert wrong.status_code == 404 and wrong.json() == {
        "error": {"code": "consent_not_found", "message": "no such consent for this subject"}
    }
    r = client.post(
        "/v1/consents/revoke",
        json={"consent_id": consent["consent_id"], "subject_id": ALICE},
        headers=bearer(keys[CITIZEN]),
    )
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert audit_records(audit_path)[-1]["reason"] == "consent_revoked"
    denied = client.post("/v1/evidence", json=body(consent_id=consent["consent_id"]), headers=welfare)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "consent_revoked"


def test_only_the_citizen_service_role_manages_consent(client, keys, audit_path):
    for who in ("welfare-portal", "audit-office"):
        r = client.post("/v1/consents", json=_consent_body(), headers=bearer(keys[who]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_not_allowed"
        assert audit_records(audit_path)[-1]["consumer"] == who
    assert client.post("/v1/consents", json=_consent_body()).status_code == 401


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"purpose": "marketing_campaigns"}, "unknown_purpose"),
        ({"datasets": ["passports_v1"]}, "invalid_datasets"),
        ({"datasets": []}, "invalid_datasets"),
        ({"consumer": "Welfare Portal"}, "invalid_consumer"),
        ({"valid_to": "2020-01-01T00:00:00Z"}, "invalid_validity"),
        ({"valid_to": "2030-01-01T00:00:00"}, "invalid_validity"),
        ({"valid_to": "tomorrow"}, "invalid_validity"),
        ({"subject_id": "9001011234567"}, "invalid_subject_id"),
        ({"datasets": "residence_v1"}, "invalid_request"),
    ],
)
def test_bad_consent_requests(client, keys, audit_path, over, code):
    r = client.post("/v1/consents", json=_consent_body(**over), headers=bearer(keys[CITIZEN]))
    assert r.status_code == 422 and r.json()["error"]["code"] == code
    assert audit_records(audit_path)[-1]["reason"] == code


def test_consents_survive_a_restart(published, keys, consents):
    from fastapi.testclient import TestClient

    from zerodoc.api.app import create_app

    with TestClient(create_app(published, rate_per_sec=0)) as c:
        cid = c.post("/v1/consents", json=_consent_body(), headers=bearer(keys[CITIZEN])).json()["consent_id"]
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post("/v1/evidence", json=body(consent_id=cid), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 200
    assert oct((published.state_dir / "consent.sqlite").stat().st_mode & 0o777) == "0o600"
