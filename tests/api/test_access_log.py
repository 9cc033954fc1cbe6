"""Who looked at whose data: citizen-service search by subject (POST body), auditor filters, chain check."""

from __future__ import annotations

import json

from zerodoc.privacy import contains_rrn

from .support import ALICE, BOB, audit_records, bearer, body

CITIZEN, AUDITOR, WELFARE = "citizen-portal", "audit-office", "welfare-portal"


def _traffic(client, keys):
    h = bearer(keys[WELFARE])
    client.post("/v1/evidence", json=body(), headers=h)  # ALICE allowed
    client.post("/v1/evidence", json=body(purpose="youth_leap_account_eligibility"), headers=h)  # ALICE denied
    client.post("/v1/evidence", json=body(subject_id=BOB, evidence_type="income"), headers=h)  # BOB allowed


def test_citizen_service_sees_who_looked_at_one_subject(client, keys, audit_path):
    _traffic(client, keys)
    r = client.post("/v1/access-log/search", json={"subject_id": ALICE}, headers=bearer(keys[CITIZEN]))
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [(e["consumer"], e["purpose"], e["decision"], e["reason"]) for e in entries] == [
        (WELFARE, "youth_leap_account_eligibility", "denied", "purpose_not_granted"),
        (WELFARE, "basic_livelihood_application", "allowed", "granted"),
    ]
    assert entries[1]["fields"] == ["sido_name", "sigungu_name", "household_size", "moved_in_on"]
    assert all(e["ts"].endswith("Z") for e in entries)
    assert "subject_pseudonym" not in r.text and ALICE not in r.text
    rec = audit_records(audit_path)[-1]
    assert (rec["path"], rec["consumer"], rec["reason"]) == ("/v1/access-log/search", CITIZEN, "access_log")


def test_citizen_service_must_name_a_subject_and_cannot_filter_others(client, keys):
    h = bearer(keys[CITIZEN])
    assert client.post("/v1/access-log/search", json={}, headers=h).status_code == 422
    r = client.post("/v1/access-log/search", json={"subject_id": ALICE, "consumer": WELFARE}, headers=h)
    assert r.status_code == 422
    assert client.get("/v1/access-log", headers=h).json()["error"]["code"] == "role_not_allowed"


def test_consumers_cannot_read_the_access_log(client, keys):
    h = bearer(keys[WELFARE])
    r = client.post("/v1/access-log/search", json={"subject_id": ALICE}, headers=h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_not_allowed"
    assert client.get("/v1/audit/verify", headers=h).status_code == 403
    assert client.get("/v1/access-log").status_code == 401


def test_auditor_filters_by_consumer_and_decision(client, keys):
    _traffic(client, keys)
    h = bearer(keys[AUDITOR])
    r = client.get("/v1/access-log", params={"consumer": WELFARE, "decision": "allowed"}, headers=h)
    assert r.status_code == 200
    assert [e["evidence_type"] for e in r.json()["entries"]] == ["income", "residence"]
    r = client.post("/v1/access-log/search", json={"subject_id": BOB, "limit": 5}, headers=h)
    assert [e["dataset"] for e in r.json()["entries"]] == ["income_v1"]
    r = client.get("/v1/access-log", params={"decision": "denied", "limit": 1}, headers=h)
    assert len(r.json()["entries"]) == 1
    assert client.get("/v1/access-log", params={"limit": "lots"}, headers=h).status_code == 422
    assert client.get("/v1/access-log", params={"subject_id": ALICE}, headers=h).status_code == 422
    assert not contains_rrn(json.dumps(r.json()))


def test_auditor_chain_check_finds_tampering(client, keys, audit_path):
    _traffic(client, keys)
    h = bearer(keys[AUDITOR])
    ok = client.get("/v1/audit/verify", headers=h).json()
    assert ok["ok"] is True and ok["records"] >= 3
    lines = audit_path.read_text(encoding="utf-8").splitlines(keepends=True)
    rec = json.loads(lines[1])
    rec["decision"] = "allowed"
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    audit_path.write_text("".join(lines), encoding="utf-8")
    bad = client.get("/v1/audit/verify", headers=h).json()
    assert bad["ok"] is False and bad["first_bad_seq"] == 2
    assert "record 2 was modified" in bad["message"]
