"""Auditor pages on a hand-made $ZERODOC_HOME: content, masking, filters, chain verification, auth."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from zerodoc.audit.log import AuditLog
from zerodoc.config import Settings
from zerodoc.ui.app import create_app
from zerodoc.ui.dbt_docs import docs_dir
from zerodoc.ui.links import base_path, report_url, task_link

RAW_ID = "900101-1234568"


@pytest.fixture()
def home(tmp_path, monkeypatch):
    # The file backend: a PostgreSQL audit DSN in the environment would send the pages there.
    monkeypatch.delenv("ZERODOC_AUDIT_DSN", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ZERODOC_AUDIT", raising=False)
    cfg = Settings(home=tmp_path)
    run = cfg.reports_dir / "validation" / "mois__residents-2026-11-20-abc"
    (run / "data_docs").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "suite": "mois__residents", "run_id": "mois__residents-2026-11-20-abc", "logical_date": "2026-11-20",
        "extracted": 3000, "passed": 2957, "quarantined": 43,
        "gate": {"passed": True, "message": "ok", "max_fail_percent": 5.0}, "checks": []}))
    (run / "report.html").write_text("<html>report</html>")
    (run / "data_docs" / "index.html").write_text(f"<html>unexpected: {RAW_ID}</html>")
    ds = cfg.published_dir / "residence_v1"
    v1, v2 = "2026-11-19.aaaa", "2026-11-20.bbbb"
    for v, day in ((v1, "2026-11-19"), (v2, "2026-11-20")):
        (ds / "versions" / v).mkdir(parents=True)
        (ds / "versions" / v / "metadata.json").write_text(json.dumps({
            "dataset": "residence_v1", "version": v, "as_of": day, "row_count": 10, "contract_hash": "c0ffee" * 6,
            "columns": [["subject_pseudonym", "BYTE_ARRAY"], ["sido_name", "BYTE_ARRAY"]],
            "validation_runs": [f"mois__residents-{day}-abc"]}))
    (ds / "CURRENT.json").write_text(json.dumps({"version": v1}))
    (ds / "HISTORY.jsonl").write_text(
        json.dumps({"version": v1, "previous": None, "reason": "publish 2026-11-19"}) + "\n"
        + json.dumps({"version": v2, "previous": v1, "reason": "publish 2026-11-20"}) + "\n"
        + json.dumps({"version": v1, "previous": v2, "reason": "rollback by operator"}) + "\n")
    log = AuditLog(cfg.state_dir / "audit" / "evidence.log")
    for consumer, purpose in (("welfare-portal", "basic_livelihood_application"),
                              ("bank-app", "youth_leap_account_eligibility")):
        log.append(consumer=consumer, purpose=purpose, dataset="residence_v1", decision="allow", status=200,
                   subject_pseudonym="f" * 64, consent_id="consent-12345", fields=["sido_name"])
    return cfg


def client(cfg, user="auditor"):
    return TestClient(create_app(cfg, reader=lambda: user))


def test_runs_page_shows_counts_and_links(home):
    r = client(home).get("/runs")
    assert r.status_code == 200
    assert '<td class="n quarantined">43</td>' in r.text
    assert 'reports/mois__residents-2026-11-20-abc/report.html' in r.text
    assert 'reports/mois__residents-2026-11-20-abc/data_docs/index.html' in r.text


def test_data_docs_are_served_with_identifiers_masked(home):
    r = client(home).get("/reports/mois__residents-2026-11-20-abc/data_docs/index.html")
    assert r.status_code == 200
    assert RAW_ID not in r.text and "900101-1******" in r.text


def test_report_files_cannot_escape_the_reports_folder(home):
    assert client(home).get("/reports/x/..%2F..%2F..%2Fstate%2Faudit%2Fevidence.log").status_code == 404


def test_publish_history_shows_versions_runs_and_rollbacks(home):
    r = client(home).get("/publish")
    assert "2026-11-20.bbbb" in r.text and "mois__residents-2026-11-19-abc" in r.text
    assert "1 rollbacks" in r.text and "c0ffeec0ffeec0ff" in r.text


def test_access_log_filters_and_masks(home):
    c = client(home)
    assert "2 matching records" in c.get("/access").text
    r = c.get("/access", params={"consumer": "bank-app"})
    assert "1 matching records" in r.text and "youth_leap_account_eligibility" in r.text
    assert "f" * 64 not in r.text and "consent-12345" not in r.text
    assert "0 matching records" in c.get("/access", params={"date": "1999-01-01"}).text


def test_verify_chain_detects_tampering(home):
    c = client(home)
    assert "Chain intact" in c.post("/access/verify").text
    path = home.state_dir / "audit" / "evidence.log"
    path.write_text(path.read_text().replace("bank-app", "bank-ap2"))
    assert "Chain BROKEN" in c.post("/access/verify").text


def test_catalog_shows_contract_and_grants(home):
    r = client(home).get("/catalog")
    assert r.status_code == 200
    assert "residence_v1" in r.text and "sido_name" in r.text and "welfare-portal" in r.text


def test_without_airflow_session_access_is_refused(home, monkeypatch):
    # Airflow's own dependency: no cookie, no bearer token -> 401, never the page.
    r = TestClient(create_app(home)).get("/runs")
    assert r.status_code == 401


def test_catalog_flags_stale_datasets(home):
    # The fixture's residence_v1 is as_of 2026-11-19: long past its 36 h SLA; unpublished ones are stale too.
    r = client(home).get("/catalog")
    assert 'cat-residence_v1">residence_v1 <span class="fail stale">STALE</span>' in r.text


def test_data_docs_page_lists_each_run(home):
    r = client(home).get("/data-docs")
    assert r.status_code == 200
    assert 'href="reports/mois__residents-2026-11-20-abc/data_docs/index.html"' in r.text
    assert 'href="dbt-docs/">dbt docs</a>' in r.text and 'href="data-docs">Data Docs</a>' in r.text


def test_dbt_docs_are_served_from_the_last_build_masked(home):
    c = client(home)
    assert "No dbt docs yet" in c.get("/dbt-docs/").text
    docs = docs_dir(home)
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html><script>fetch('manifest.json')</script>dbt docs</html>")
    (docs / "manifest.json").write_text(json.dumps({"nodes": {}, "note": RAW_ID}))
    (docs / "catalog.json").write_text("{}")
    r = c.get("/dbt-docs/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "fetch('manifest.json')" in r.text
    m = c.get("/dbt-docs/manifest.json")
    assert m.headers["content-type"] == "application/json" and RAW_ID not in m.text and "900101-1******" in m.text
    assert c.get("/dbt-docs", follow_redirects=False).headers["location"] == "dbt-docs/"
    # Only the three files dbt writes: nothing else under $ZERODOC_HOME is reachable through this route.
    assert c.get("/dbt-docs/..%2F..%2Fstate%2Faudit%2Fevidence.log").status_code == 404
    assert c.get("/dbt-docs/run_results.json").status_code == 404


def test_task_links_point_into_the_auditor_section():
    summary = {"report_path": "/srv/zerodoc/reports/validation/mois__residents-2026-11-20-abc/report.html"}
    assert task_link("validate_residents", summary, prefix="") == \
        "/zerodoc/reports/mois__residents-2026-11-20-abc/report.html"
    assert task_link("validate_residents", summary, prefix="/airflow") == \
        "/airflow/zerodoc/reports/mois__residents-2026-11-20-abc/report.html"
    assert task_link("publish_residence_v1", None, prefix="") == "/zerodoc/publish#ds-residence_v1"
    assert task_link("dbt_build", None, prefix="") == "/zerodoc/dbt-docs/"
    assert task_link("dbt.dbt_producer_watcher", None, prefix="") == "/zerodoc/dbt-docs/"
    # A validate task that failed before returning has no report: no link rather than a broken one.
    assert task_link("validate_residents", None, prefix="") == ""
    assert task_link("extract_residents", None, prefix="") == ""


def test_report_url_in_the_task_log_is_absolute_when_airflow_base_url_is_set(monkeypatch):
    path = "/srv/zerodoc/reports/validation/nts__income-2026-11-20-abc/report.html"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    assert report_url(path) == "http://airflow.example:8080/zerodoc/reports/nts__income-2026-11-20-abc/report.html"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example/base")
    assert base_path() == "/base"
    assert report_url(path) == "http://airflow.example/base/zerodoc/reports/nts__income-2026-11-20-abc/report.html"
