"""The API on the PostgreSQL audit backend: every request lands there, the access log and chain check read it,
and a kill -9 of a two-worker server mid-load loses no answered request's record."""

from __future__ import annotations

import json
import os
import secrets

import psycopg
import pytest
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.audit.pg import TABLE, PostgresAuditLog

from .support import ALICE, bearer, body, kill_mid_load, start_api_workers

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def audit_dsn(postgres_up, monkeypatch) -> str:
    name = f"zd_api_audit_test_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", dsn)
    yield dsn
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(dsn: str, where: str = "TRUE") -> list[dict]:
    with psycopg.connect(dsn) as conn:
        return [json.loads(r[0]) for r in conn.execute(f"SELECT record FROM {TABLE} WHERE {where} ORDER BY seq")]


def test_requests_are_audited_in_postgres_and_read_back(audit_dsn, published, keys, consents, audit_path):
    with TestClient(create_app(published, rate_per_sec=0)) as client:
        welfare, auditor = bearer(keys["welfare-portal"]), bearer(keys["audit-office"])
        assert client.post("/v1/evidence", json=body(), headers=welfare).status_code == 200
        wrong_purpose = body(purpose="crime_victim_support")
        assert client.post("/v1/evidence", json=wrong_purpose, headers=welfare).status_code == 403
        assert client.post("/v1/evidence", json=body()).status_code == 401
        # Committed before the response: the rows are there the moment the answers are.
        assert [(r["status"], r["reason"]) for r in _rows(audit_dsn)] == [
            (200, "granted"),
            (403, "purpose_not_granted"),
            (401, "unauthorized"),
        ]
        log = client.get("/v1/access-log", params={"consumer": "welfare-portal"}, headers=auditor)
        assert log.status_code == 200
        assert [(e["status"], e["reason"]) for e in log.json()["entries"]] == [
            (403, "purpose_not_granted"),
            (200, "granted"),
        ]
        search = client.post(
            "/v1/access-log/search", json={"subject_id": ALICE, "decision": "allowed"}, headers=auditor
        )
        assert [e["fields"] for e in search.json()["entries"]] == [
            ["sido_name", "sigungu_name", "household_size", "moved_in_on"]
        ]
        verify = client.get("/v1/audit/verify", headers=auditor).json()
        # The two access-log reads were audited too, before their answers left.
        assert verify["ok"] and verify["records"] == 5 and verify["message"] == "chain intact: 5 records"
    assert not audit_path.exists()  # nothing went to the local file


def test_no_answer_leaves_when_postgres_cannot_take_the_record(published, keys, consents, monkeypatch):
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", "postgresql://postgres@127.0.0.1:1/nowhere")
    with TestClient(create_app(published, rate_per_sec=0)) as client:
        r = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "audit_unavailable"


def test_kill9_mid_load_loses_no_answered_request(audit_dsn, published, keys, consents, tmp_path):
    env = {
        **os.environ,
        "ZERODOC_HOME": str(published.home),
        "ZERODOC_AUDIT_DSN": audit_dsn,
        "ZERODOC_API_RATE_PER_SEC": "0",
    }
    proc, port = start_api_workers(env, tmp_path / "server.log")
    answered = kill_mid_load(proc, port, keys["welfare-portal"])  # the whole server, mid-load

    statuses = {s for s, _ in answered}
    assert statuses == {200, 403}, statuses
    assert len(answered) >= 100, f"only {len(answered)} answers before the kill"
    records = _rows(audit_dsn, "path = '/v1/evidence'")
    recorded_refs = {r["consent_id"] for r in records if r["reason"] == "consent_missing"}
    refused = [ref for s, ref in answered if s == 403]
    lost = [ref for ref in refused if ref not in recorded_refs]
    granted_answers = sum(1 for s, _ in answered if s == 200)
    granted_records = sum(1 for r in records if r["reason"] == "granted")
    print(f"kill -9 mid-load: answered {len(answered)}, audit rows {len(records)}, lost {len(lost)}")
    assert lost == []  # audit_lost = 0, matched request by request
    assert granted_records >= granted_answers
    # Records of requests cut off by the kill may exist without an answer, never the reverse;
    # and the chain the two workers extended together is intact.
    assert PostgresAuditLog(audit_dsn).verify().ok
