"""/readyz: a replica that cannot write audit records says so (503 and why), so the load balancer takes
it out of rotation instead of sending it requests it can only refuse; the check itself is never audited."""

from __future__ import annotations

import socket

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.servers import scratch_postgres
from zerodoc.api.app import create_app
from zerodoc.audit.pg import TABLE

from .support import audit_records


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_ready_with_the_local_audit_log_and_not_audited(published, audit_path):
    with TestClient(create_app(published, rate_per_sec=0)) as client:
        r = client.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready"})
    assert not audit_path.exists() or audit_records(audit_path) == []


def test_not_ready_while_no_audit_process_answers(published, monkeypatch):
    # A supervisor was to run it (external) and has not: every evidence request would be a 503.
    monkeypatch.setenv("ZERODOC_AUDIT_PROCESS", "external")
    with TestClient(create_app(published, rate_per_sec=0)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and "audit process" in r.json()["reason"]


@pytest.fixture
def audit_database(postgres_up) -> str:
    with scratch_postgres() as dsn:
        yield dsn


def test_ready_follows_the_audit_database(published, monkeypatch, audit_database):
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", audit_database)
    with TestClient(create_app(published, rate_per_sec=0)) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/readyz").status_code == 200
    with psycopg.connect(audit_database) as conn:  # no check wrote an audit row
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0]
        assert not exists or conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 0

    dead = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", dead)
    with TestClient(create_app(published, rate_per_sec=0)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready" and "cannot be reached" in body["reason"]
    assert "127.0.0.1" in body["reason"]  # which database, with any password redacted
