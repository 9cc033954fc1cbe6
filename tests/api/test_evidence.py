"""POST /v1/evidence: granted fields only, signed answers, and the exact error envelope."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from zerodoc.api.consumers import revoke_consumer
from zerodoc.api.signing import verify_evidence
from zerodoc.privacy import pseudonymize
from zerodoc.publish.store import switch_current

from .support import ALICE, BOB, NOBODY, bearer, body, income_table, publish


def test_residence_answer_carries_only_granted_fields_and_verifies(client, keys, published):
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 200, r.text
    answer = r.json()
    ev = answer["evidence"]
    assert ev["fields"] == {
        "sido_name": "서울특별시",
        "sigungu_name": "강남구",
        "household_size": 3,
        "moved_in_on": "2019-03-02",
    }
    assert ev["evidence_type"] == "residence"
    assert ev["dataset"] == "residence_v1"
    assert ev["dataset_version"] == "20250630T000000"
    assert ev["as_of"] == "2025-06-30"
    assert ev["validation_run_ids"] == ["run-residence_v1-20250630T000000"]
    assert ev["purpose"] == "basic_livelihood_application"
    assert ev["consumer"] == "welfare-portal"
    assert ev["subject_pseudonym"] == pseudonymize(ALICE, published.pseudonym_key)
    assert ev["issued_at"].endswith("Z")
    assert ALICE not in r.text
    header, payload, sig = answer["signature"].split(".")
    assert header and sig and payload == "", "signature must be a detached JWS"

    jwks = client.get("/.well-known/jwks.json").json()
    assert [k["kid"] for k in jwks["keys"]] == [answer["kid"]]
    assert all("d" not in k for k in jwks["keys"]), "JWKS must not publish private key material"
    assert verify_evidence(answer, jwks)


def test_income_answer_is_the_latest_tax_year_with_the_purposes_fields(client, keys):
    r = client.post(
        "/v1/evidence",
        json=body(evidence_type="income", purpose="youth_leap_account_eligibility"),
        headers=bearer(keys["youth-account-service"]),
    )
    assert r.status_code == 200, r.text
    assert r.json()["evidence"]["fields"] == {
        "tax_year": 2024,
        "earned_income_krw": 32_000_000,
        "total_income_krw": 33_000_000,
    }
    r = client.post(
        "/v1/evidence",
        json=body(evidence_type="income", subject_id=BOB),
        headers=bearer(keys["welfare-portal"]),
    )
    assert r.json()["evidence"]["fields"] == {"tax_year": 2024, "total_income_krw": 18_500_000}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda ev: ev["fields"].update(household_size=4),
        lambda ev: ev.update(purpose="youth_leap_account_eligibility"),
        lambda ev: ev.update(subject_pseudonym="0" * 64),
        lambda ev: ev["fields"].pop("moved_in_on"),
    ],
)
def test_tampered_evidence_fails_verification(client, keys, tamper):
    answer = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).json()
    jwks = client.get("/.well-known/jwks.json").json()
    tamper(answer["evidence"])
    assert not verify_evidence(answer, jwks)


def test_signature_from_another_key_fails_verification(client, keys, tmp_path):
    from zerodoc.api.signing import load_or_create_keys

    answer = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).json()
    other = load_or_create_keys(tmp_path)
    assert not verify_evidence(answer, other.jwks())
    assert not verify_evidence({**answer, "signature": "garbage"}, client.get("/.well-known/jwks.json").json())


def test_old_answers_verify_after_key_rotation(published, keys, consents):
    from fastapi.testclient import TestClient

    from zerodoc.api.app import create_app
    from zerodoc.api.signing import rotate_signing_key

    with TestClient(create_app(published)) as c:
        before = c.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).json()
    rotate_signing_key(published.state_dir)
    with TestClient(create_app(published)) as c:
        after = c.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).json()
        jwks = c.get("/.well-known/jwks.json").json()
    assert after["kid"] != before["kid"]
    assert len(jwks["keys"]) == 2
    assert verify_evidence(before, jwks) and verify_evidence(after, jwks)


def _income_version_served(client, key: str, want: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.post("/v1/evidence", json=body(evidence_type="income"), headers=bearer(key))
        assert r.status_code == 200, r.text
        ev = r.json()["evidence"]
        if ev["dataset_version"] == want or time.monotonic() > deadline:
            return ev
        time.sleep(0.05)


def test_a_new_current_version_is_served_without_restart(client, keys, published):
    table = income_table(published.pseudonym_key)
    table = table.set_column(5, "total_income_krw", pa.array([1, 2, 3], pa.int64()))
    publish(published, "income_v1", "20250701T000000", table)
    # Loaded in the background; answers meanwhile come from (and name) the previous version.
    ev = _income_version_served(client, keys["welfare-portal"], "20250701T000000")
    assert ev["dataset_version"] == "20250701T000000"
    assert ev["fields"]["total_income_krw"] == 2
    # Rollback is just another switch of CURRENT.
    switch_current("income_v1", "20250630T000000", reason="rollback", cfg=published)
    ev = _income_version_served(client, keys["welfare-portal"], "20250630T000000")
    assert ev["fields"]["total_income_krw"] == 33_000_000


def test_a_corrupt_new_version_leaves_the_previous_one_serving(client, keys, published):
    publish(published, "income_v1", "20250701T000000", income_table(published.pseudonym_key))
    data = published.published_dir / "income_v1" / "versions" / "20250701T000000" / "data.parquet"
    data.write_bytes(data.read_bytes()[:-10])
    ev = _income_version_served(client, keys["welfare-portal"], "20250630T000000")  # notices CURRENT moved
    assert ev["dataset_version"] == "20250630T000000"
    deadline = time.monotonic() + 20
    while client.get("/v1/health").json()["datasets"]["income_v1"]["load_error"] is None:
        assert time.monotonic() < deadline, "the failed load was never reported"
        time.sleep(0.05)
    health = client.get("/v1/health").json()["datasets"]["income_v1"]
    assert health["version"] == "20250701T000000" and health["serving_version"] == "20250630T000000"
    assert "does not match its published checksum" in health["load_error"]
    r = client.post("/v1/evidence", json=body(evidence_type="income"), headers=bearer(keys["welfare-portal"]))
    assert r.json()["evidence"]["dataset_version"] == "20250630T000000"


def _error(r) -> tuple[int, dict]:
    return r.status_code, r.json()


def test_401_without_key(client):
    status, err = _error(client.post("/v1/evidence", json=body()))
    assert status == 401
    assert err == {
        "error": {
            "code": "unauthorized",
            "message": "missing, unknown or revoked API key; send 'Authorization: Bearer <key>'",
        }
    }


def test_401_with_wrong_key(client):
    r = client.post("/v1/evidence", json=body(), headers=bearer("zdk_not-a-real-key"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"


def test_401_with_revoked_key_while_running(client, keys, published):
    assert client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).status_code == 200
    revoke_consumer("welfare-portal", published)
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_401_comes_before_body_validation(client):
    r = client.post("/v1/evidence", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_403_purpose_not_granted(client, keys):
    # youth-account-service holds income_v1 for its own purpose only, and no residence_v1 at all.
    r = client.post(
        "/v1/evidence",
        json=body(evidence_type="income"),
        headers=bearer(keys["youth-account-service"]),
    )
    assert _error(r) == (
        403,
        {
            "error": {
                "code": "purpose_not_granted",
                "message": "consumer 'youth-account-service' is not granted income_v1 "
                "for purpose 'basic_livelihood_application'",
            }
        },
    )
    r = client.post(
        "/v1/evidence",
        json=body(purpose="youth_leap_account_eligibility"),
        headers=bearer(keys["youth-account-service"]),
    )
    assert r.status_code == 403


def test_422_bad_json(client, keys):
    r = client.post(
        "/v1/evidence",
        content=b'{"evidence_type": "residence",',
        headers={**bearer(keys["welfare-portal"]), "Content-Type": "application/json"},
    )
    assert _error(r) == (
        422,
        {"error": {"code": "invalid_json", "message": "request body is not valid JSON"}},
    )


@pytest.mark.parametrize("bad", ["9001011234567", "900101-123456", "901301-1234567", "900101-9234567", " "])
def test_422_bad_subject_id_shape_is_not_echoed(client, keys, bad):
    r = client.post("/v1/evidence", json=body(subject_id=bad), headers=bearer(keys["welfare-portal"]))
    assert _error(r) == (
        422,
        {
            "error": {
                "code": "invalid_subject_id",
                "message": "subject_id must be a resident registration number YYMMDD-SXXXXXX",
            }
        },
    )


def test_422_unknown_evidence_type_missing_fields_and_bad_consent(client, keys):
    h = bearer(keys["welfare-portal"])
    r = client.post("/v1/evidence", json=body(evidence_type="passport"), headers=h)
    assert _error(r) == (
        422,
        {
            "error": {
                "code": "unknown_evidence_type",
                "message": "evidence_type must be one of ['benefit_notification', 'crime_victim_support', "
                "'employment', 'household', 'income', 'residence', 'youth_leap_eligibility']",
            }
        },
    )
    r = client.post("/v1/evidence", json={"evidence_type": "residence", "subject_id": ALICE}, headers=h)
    assert _error(r) == (
        422,
        {"error": {"code": "invalid_request", "message": "missing field(s): purpose, consent_id"}},
    )
    r = client.post("/v1/evidence", json=body(consent_id=""), headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_consent_id"
    r = client.post("/v1/evidence", json=body(consent_id=f"for {ALICE}"), headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_consent_id"
    r = client.post("/v1/evidence", json=[body()], headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_404_unknown_subject(client, keys):
    r = client.post("/v1/evidence", json=body(subject_id=NOBODY), headers=bearer(keys["welfare-portal"]))
    assert _error(r) == (
        404,
        {"error": {"code": "subject_not_found", "message": "no residence record for this subject"}},
    )


def test_503_when_dataset_not_published(cfg, keys, consents):
    from fastapi.testclient import TestClient

    from zerodoc.api.app import create_app

    with TestClient(create_app(cfg)) as c:
        r = c.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert _error(r) == (
        503,
        {
            "error": {
                "code": "dataset_unavailable",
                "message": "dataset residence_v1 has not been published yet",
            }
        },
    )


def test_503_when_published_data_does_not_match_its_checksum(cfg, keys, consents):
    from fastapi.testclient import TestClient

    from zerodoc.api.app import create_app

    from .support import residence_table

    publish(cfg, "residence_v1", "v1", residence_table(cfg.pseudonym_key))
    data = cfg.published_dir / "residence_v1" / "versions" / "v1" / "data.parquet"
    import pyarrow.parquet as pq

    pq.write_table(residence_table(cfg.pseudonym_key, sigungu="위조구"), data)
    with TestClient(create_app(cfg)) as c:
        r = c.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 503
    assert "does not match its published checksum" in r.json()["error"]["message"]


def test_unknown_route_and_method_use_the_envelope(client):
    r = client.get("/v1/nope")
    assert _error(r) == (404, {"error": {"code": "not_found", "message": "Not Found"}})
    r = client.get("/v1/evidence")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_health_lists_current_versions_without_auth(client):
    r = client.get("/v1/health")
    assert r.status_code == 200
    datasets = {
        ds: {
            "evidence_type": et,
            "version": "20250630T000000",
            "as_of": "2025-06-30",
            "serving_version": "20250630T000000",
            "load_error": None,
            # the fixture's data is from 2025: far past the 36-hour freshness SLA
            "freshness_hours": 36,
            "stale": True,
        }
        for et, ds in (("residence", "residence_v1"), ("income", "income_v1"))
    }
    for et, ds in (("crime_victim_support", "victim_support_eligibility_v1"),
                   ("youth_leap_eligibility", "youth_leap_eligibility_v1"), ("employment", "employment_v1"),
                   ("household", "household_v1"), ("benefit_notification", "benefit_notifications_v1")):
        datasets[ds] = {"evidence_type": et, "version": None, "as_of": None, "serving_version": None,
                        "load_error": None}
    for entry in datasets.values():
        entry["granted"] = True  # config/access_policy.yml grants every per-person dataset to someone
    assert r.json() == {"status": "ok", "datasets": datasets}
