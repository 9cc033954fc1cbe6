"""Every denial path: exact status and error body, and each one lands in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.consumers import revoke_consumer
from zerodoc.audit.log import verify_chain
from zerodoc.config import REPO_ROOT
from zerodoc.privacy import contains_rrn, pseudonymize

from .support import ALICE, BOB, CONSENTS, NOBODY, audit_records, bearer, body

WELFARE = "welfare-portal"
LIVELIHOOD = "basic_livelihood_application"


def _record(consents, cfg, subject=ALICE, consumer=WELFARE, purpose=LIVELIHOOD, datasets=("residence_v1",), **kw):
    now = datetime.now(UTC)
    args = {
        "subject_pseudonym": pseudonymize(subject, cfg.pseudonym_key),
        "consumer": consumer,
        "purpose": purpose,
        "datasets": list(datasets),
        "valid_from": now - timedelta(days=10),
        "valid_to": now + timedelta(days=10),
        "recorded_by": "test",
        **kw,
    }
    return consents.record(**args).consent_id


def _assert_audited(audit_path, status: int, code: str, consumer: str | None) -> dict:
    rec = audit_records(audit_path)[-1]
    assert (rec["status"], rec["reason"], rec["consumer"]) == (status, code, consumer)
    assert rec["decision"] == ("denied" if status >= 400 else rec["decision"])
    assert rec["fields"] == [] or status == 200
    return rec


def _error(r) -> tuple[int, dict]:
    return r.status_code, r.json()


def test_no_key(client, audit_path):
    r = client.post("/v1/evidence", json=body())
    assert _error(r) == (
        401,
        {
            "error": {
                "code": "unauthorized",
                "message": "missing, unknown or revoked API key; send 'Authorization: Bearer <key>'",
            }
        },
    )
    _assert_audited(audit_path, 401, "unauthorized", None)


def test_revoked_key(client, keys, published, audit_path):
    revoke_consumer(WELFARE, published)
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys[WELFARE]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    _assert_audited(audit_path, 401, "unauthorized", None)


def test_wrong_purpose(client, keys, audit_path):
    r = client.post("/v1/evidence", json=body(purpose="youth_leap_account_eligibility"), headers=bearer(keys[WELFARE]))
    assert _error(r) == (
        403,
        {
            "error": {
                "code": "purpose_not_granted",
                "message": "consumer 'welfare-portal' is not granted residence_v1 for purpose "
                "'youth_leap_account_eligibility'",
            }
        },
    )
    rec = _assert_audited(audit_path, 403, "purpose_not_granted", WELFARE)
    assert rec["purpose"] == "youth_leap_account_eligibility"


def test_wrong_role(client, keys, audit_path):
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys["citizen-portal"]))
    assert _error(r) == (
        403,
        {"error": {"code": "role_not_allowed", "message": "this API key's role may not use this endpoint"}},
    )
    _assert_audited(audit_path, 403, "role_not_allowed", "citizen-portal")


def test_field_not_granted(client, keys, audit_path):
    r = client.post("/v1/evidence", json=body(fields=["sido_name", "household_id"]), headers=bearer(keys[WELFARE]))
    assert _error(r) == (
        403,
        {
            "error": {
                "code": "field_not_granted",
                "message": "requested field(s) not granted for this purpose; granted: "
                "['sido_name', 'sigungu_name', 'household_size', 'moved_in_on']",
            }
        },
    )
    _assert_audited(audit_path, 403, "field_not_granted", WELFARE)
    # Asking for fewer fields than granted is fine and returns exactly those.
    r = client.post("/v1/evidence", json=body(fields=["sido_name"]), headers=bearer(keys[WELFARE]))
    assert r.status_code == 200 and r.json()["evidence"]["fields"] == {"sido_name": "서울특별시"}
    assert audit_records(audit_path)[-1]["fields"] == ["sido_name"]


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("unknown id", "consent_missing", "no consent matching this subject, consumer and purpose"),
        ("other subject", "consent_missing", "no consent matching this subject, consumer and purpose"),
        ("other consumer", "consent_missing", "no consent matching this subject, consumer and purpose"),
        ("revoked", "consent_revoked", "the consent was revoked by the subject"),
        ("expired", "consent_expired", "the consent is not valid at this time"),
        ("not yet valid", "consent_expired", "the consent is not valid at this time"),
        ("scope", "consent_scope", "the consent does not cover this dataset"),
    ],
)
def test_consent_denials(client, keys, published, consents, audit_path, case, code, message):
    now = datetime.now(UTC)
    consent_id = {
        "unknown id": lambda: "cns_does-not-exist",
        "other subject": lambda: CONSENTS[(BOB, LIVELIHOOD)],
        "other consumer": lambda: _record(consents, published, consumer="youth-account-service"),
        "revoked": lambda: (
            consents.revoke(_record(consents, published), pseudonymize(ALICE, published.pseudonym_key)).consent_id
        ),
        "expired": lambda: _record(
            consents, published, valid_from=now - timedelta(days=30), valid_to=now - timedelta(days=1)
        ),
        "not yet valid": lambda: _record(
            consents, published, valid_from=now + timedelta(days=1), valid_to=now + timedelta(days=30)
        ),
        "scope": lambda: _record(consents, published, datasets=["income_v1"]),
    }[case]()
    r = client.post("/v1/evidence", json=body(consent_id=consent_id), headers=bearer(keys[WELFARE]))
    assert _error(r) == (403, {"error": {"code": code, "message": message}})
    rec = _assert_audited(audit_path, 403, code, WELFARE)
    assert rec["consent_id"] == consent_id
    assert rec["subject_pseudonym"] == pseudonymize(ALICE, published.pseudonym_key)


def test_403_has_the_same_shape_whether_or_not_the_subject_exists(client, keys):
    """A consumer without consent learns nothing about who is in the data."""
    answers = [
        client.post("/v1/evidence", json=body(subject_id=s, consent_id="cns_x"), headers=bearer(keys[WELFARE]))
        for s in (ALICE, NOBODY)
    ]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()
    assert answers[0].headers.keys() == answers[1].headers.keys()


def _policy_with_max_age(tmp_path, monkeypatch, days: int) -> None:
    policy = (REPO_ROOT / "config" / "access_policy.yml").read_text(encoding="utf-8")
    policy = policy.replace(
        "    purpose: basic_livelihood_application\n    fields: [sido_name",
        f"    purpose: basic_livelihood_application\n    max_age_days: {days}\n    fields: [sido_name",
        1,
    )
    path = tmp_path / "policy.yml"
    path.write_text(policy, encoding="utf-8")
    monkeypatch.setenv("ZERODOC_ACCESS_POLICY", str(path))


def test_stale_data_answers_needs_document(published, keys, consents, audit_path, tmp_path, monkeypatch):
    from zerodoc.api.signing import verify_evidence

    _policy_with_max_age(tmp_path, monkeypatch, 30)  # the fixture data is as of 2025-06-30
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post("/v1/evidence", json=body(), headers=bearer(keys[WELFARE]))
        jwks = c.get("/.well-known/jwks.json").json()
    assert r.status_code == 200
    answer = r.json()
    assert answer["status"] == "needs_document"
    assert answer["document"] == "resident registration certificate (주민등록표 등본)"
    assert answer["reason"] == "data_stale"
    assert "fields" not in answer["evidence"] and answer["evidence"]["document"] == answer["document"]
    assert verify_evidence(answer, jwks)
    rec = audit_records(audit_path)[-1]
    assert (rec["status"], rec["decision"], rec["reason"], rec["fields"]) == (200, "needs_document", "data_stale", [])


def test_fresh_data_within_max_age_is_answered(published, keys, consents, tmp_path, monkeypatch):
    from datetime import date

    from .support import publish, residence_table

    today = date.today().isoformat()
    publish(published, "residence_v1", "today", residence_table(published.pseudonym_key), as_of=today)
    _policy_with_max_age(tmp_path, monkeypatch, 30)
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        r = c.post("/v1/evidence", json=body(), headers=bearer(keys[WELFARE]))
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.json()["evidence"]["as_of"] == today


def test_rate_limit(published, keys, consents, audit_path):
    with TestClient(create_app(published, rate_per_sec=0.5, burst=2)) as c:
        h = bearer(keys[WELFARE])
        assert [c.post("/v1/evidence", json=body(), headers=h).status_code for _ in range(2)] == [200, 200]
        r = c.post("/v1/evidence", json=body(), headers=h)
        # Another consumer has its own bucket.
        other = c.post(
            "/v1/evidence",
            json=body(evidence_type="income", purpose="youth_leap_account_eligibility"),
            headers=bearer(keys["youth-account-service"]),
        )
    assert _error(r) == (
        429,
        {
            "error": {
                "code": "rate_limited",
                "message": "too many requests for this API key; retry after the time in Retry-After",
            }
        },
    )
    assert 1 <= int(r.headers["retry-after"]) <= 2
    assert other.status_code == 200
    rec = audit_records(audit_path)[-2]
    assert (rec["status"], rec["reason"], rec["consumer"]) == (429, "rate_limited", WELFARE)


def test_unauthenticated_floods_are_rate_limited_too(published, keys, consents, audit_path):
    with TestClient(create_app(published, rate_per_sec=0.5, burst=2)) as c:
        statuses = [c.post("/v1/evidence", json=body()).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    rec = audit_records(audit_path)[-1]
    assert (rec["status"], rec["reason"], rec["consumer"]) == (429, "rate_limited", None)


@pytest.mark.parametrize("declared", [True, False])
def test_oversize_body(client, keys, audit_path, declared):
    big = {**body(), "consent_id": "x" * 5000}
    import json

    raw = json.dumps(big).encode()
    headers = {**bearer(keys[WELFARE]), "Content-Type": "application/json"}
    if declared:
        r = client.post("/v1/evidence", content=raw, headers=headers)
    else:  # chunked, no Content-Length: the cap applies while reading
        r = client.post("/v1/evidence", content=iter([raw[:3000], raw[3000:]]), headers=headers)
    assert _error(r) == (413, {"error": {"code": "body_too_large", "message": "request body larger than 4096 bytes"}})
    _assert_audited(audit_path, 413, "body_too_large", WELFARE)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("subject_id", "900101-1234567' OR '1'='1", "invalid_subject_id"),
        ("subject_id", "900101-1234567\n", "invalid_subject_id"),
        ("subject_id", "<script>alert(1)</script>", "invalid_subject_id"),
        ("purpose", "basic_livelihood_application; DROP TABLE consents", "invalid_purpose"),
        ("purpose", "../../etc/passwd", "invalid_purpose"),
        ("evidence_type", "residence\u0000", "unknown_evidence_type"),
        ("consent_id", "' OR 1=1 --", "consent_missing"),
        ("consent_id", 'cns_x"); DELETE FROM consents; --', "consent_missing"),
    ],
)
def test_injection_strings_are_refused_and_not_echoed(client, keys, audit_path, consents, field, value, code):
    r = client.post("/v1/evidence", json=body(**{field: value}), headers=bearer(keys[WELFARE]))
    assert r.status_code in (403, 422) and r.json()["error"]["code"] == code
    assert value not in r.text
    _assert_audited(audit_path, r.status_code, code, WELFARE)
    # The consent table survived and the chain is intact.
    assert consents.get(CONSENTS[(ALICE, LIVELIHOOD)]) is not None
    assert verify_chain(audit_path).ok
    assert not contains_rrn(audit_path.read_text(encoding="utf-8"))


def test_unknown_body_keys_are_not_echoed(client, keys):
    r = client.post("/v1/evidence", json={**body(), "900101-1234567": 1, "x'--": 2}, headers=bearer(keys[WELFARE]))
    assert _error(r) == (422, {"error": {"code": "invalid_request", "message": "unknown field(s): (not shown)"}})


def test_no_subject_id_in_server_logs(client, keys, caplog):
    caplog.set_level("DEBUG")
    h = bearer(keys[WELFARE])
    client.post("/v1/evidence", json=body(), headers=h)
    client.post("/v1/evidence", json=body(subject_id=NOBODY), headers=h)
    client.post("/v1/evidence", json=body(subject_id="9001011234567"), headers=h)
    assert not contains_rrn(caplog.text)
