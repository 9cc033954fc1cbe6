"""Auditor pages on the PostgreSQL audit backend: when it is configured they list and verify its records, not the
file's, filter on fields that live only in the hashed record, show a tampered row as a broken chain, and say so
when PostgreSQL cannot be reached instead of showing an empty log."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from fastapi.testclient import TestClient

from zerodoc.audit.log import AuditLog
from zerodoc.audit.pg import TABLE, PostgresAuditLog
from zerodoc.config import Settings
from zerodoc.ui import data
from zerodoc.ui.app import create_app

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RAW_ID = "900101-1234568"


@pytest.fixture
def audit_dsn(postgres_up, monkeypatch) -> str:
    """A database of its own, configured as the audit backend the way the API's is; dropped afterwards."""
    name = f"zd_ui_audit_test_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    monkeypatch.delenv("AIRFLOW_CONN_ZERODOC_AUDIT", raising=False)
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", dsn)
    yield dsn
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def home(tmp_path, audit_dsn):
    """A home whose local file log holds one record the pages must NOT show, and three records in PostgreSQL."""
    cfg = Settings(home=tmp_path)
    AuditLog(cfg.state_dir / "audit" / "evidence.log").append(
        consumer="file-only-consumer", purpose="basic_livelihood_application", dataset="residence_v1",
        decision="allowed", status=200)
    pg = PostgresAuditLog(audit_dsn)
    for consumer, purpose, dataset in (
        ("welfare-portal", "basic_livelihood_application", "residence_v1"),
        ("bank-app", "youth_leap_account_eligibility", "youth_leap_eligibility_v1"),
        ("welfare-portal", "emergency_livelihood_support", "income_v1"),
    ):
        pg.append(path="/v1/evidence", consumer=consumer, purpose=purpose, dataset=dataset, decision="allowed",
                  status=200, subject_pseudonym="f" * 64, consent_id="consent-12345", fields=["sido_name"],
                  reason=f"granted for {RAW_ID}")  # scrubbed on write; the page must not show it either
    return cfg


def client(cfg):
    return TestClient(create_app(cfg, reader=lambda: "auditor"))


def test_data_layer_reads_the_configured_postgres_log(home, audit_dsn):
    log = data.evidence_log(home)
    assert isinstance(log, PostgresAuditLog) and log.describe() == audit_dsn
    recs, total = data.access_records(home)
    assert total == 3 and [r["seq"] for r in recs] == [3, 2, 1]  # newest first
    assert {r["consumer"] for r in recs} == {"welfare-portal", "bank-app"}
    assert all(r["subject_pseudonym"] == "ffffff…" and r["consent_id"] == "con…" for r in recs)
    # purpose and dataset are not columns of the table: they are read from the hashed record.
    assert data.access_records(home, purpose="youth_leap_account_eligibility")[1] == 1
    assert [r["seq"] for r in data.access_records(home, consumer="welfare-portal", dataset="income_v1")[0]] == [3]
    assert data.access_records(home, consumer="welfare-portal", limit=1)[1] == 2
    assert len(data.access_records(home, consumer="welfare-portal", limit=1)[0]) == 1
    today = recs[0]["ts"][:10]
    assert data.access_records(home, date=today)[1] == 3 and data.access_records(home, date="1999-01-01")[1] == 0


def test_access_page_shows_the_postgres_records_not_the_file(home, audit_dsn):
    r = client(home).get("/access")
    assert r.status_code == 200
    assert "3 matching records" in r.text and f"<code>{audit_dsn}</code>" in r.text
    assert "file-only-consumer" not in r.text and "bank-app" in r.text
    assert RAW_ID not in r.text and "f" * 64 not in r.text and "consent-12345" not in r.text
    r = client(home).get("/access", params={"dataset": "youth_leap_eligibility_v1"})
    assert "1 matching records" in r.text and "youth_leap_account_eligibility" in r.text


def test_verify_page_checks_the_postgres_chain_and_finds_a_tampered_row(home, audit_dsn):
    c = client(home)
    r = c.post("/access/verify")
    assert '<p id=verdict class="ok">Chain intact: chain intact: 3 records</p>' in r.text
    assert f"<code>{audit_dsn}</code>" in r.text
    # A superuser edits row 2 behind the append-only triggers: the page reports the break at that row.
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        conn.execute(f"UPDATE {TABLE} SET record = replace(record, 'bank-app', 'bank-ap2') WHERE seq = 2")
        conn.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")
    r = c.post("/access/verify")
    assert "Chain BROKEN: record 2 was modified (hash mismatch)" in r.text
    assert "first bad record: 2" in r.text
    # The untouched file log still verifies, so the verdict above came from PostgreSQL.
    assert AuditLog(home.state_dir / "audit" / "evidence.log").verify().ok


def test_without_a_dsn_the_pages_read_the_file_again(home, monkeypatch):
    monkeypatch.delenv("ZERODOC_AUDIT_DSN")
    r = client(home).get("/access")
    assert "1 matching records" in r.text and "file-only-consumer" in r.text
    assert "Chain intact: chain intact: 1 records" in client(home).post("/access/verify").text


def test_an_unreachable_database_is_an_outage_not_an_empty_or_broken_log(home, monkeypatch):
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", "postgresql://postgres:s3cret@127.0.0.1:1/zerodoc_audit")
    for r in (client(home).get("/access"), client(home).post("/access/verify")):
        assert r.status_code == 503
        assert "The audit log cannot be read" in r.text and "postgresql://postgres:***@127.0.0.1:1/" in r.text
        assert "s3cret" not in r.text and "matching records" not in r.text and "Chain BROKEN" not in r.text
