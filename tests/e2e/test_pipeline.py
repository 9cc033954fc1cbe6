"""The whole path through Airflow on the real PostgreSQL and MariaDB sources, then the evidence API."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from tests.servers import agency_servers
from zerodoc.config import settings
from zerodoc.privacy import contains_rrn, duckdb_macro_sql, pseudonymize

DS = "2026-11-20"
PERSONS = 3000


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, postgres_up, mariadb_up):
    import os

    home = tmp_path_factory.mktemp("e2e_home")
    os.environ["ZERODOC_HOME"] = str(home)
    cfg = settings()
    from zerodoc.orchestration.local import apply_airflow_env

    apply_airflow_env(cfg)
    from zerodoc.orchestration.pipeline import run_pipeline
    from zerodoc.sources.agency_server import serve

    # Every source kind for real: MOIS and MOJ on PostgreSQL, NTS on MariaDB, MOEL and police CSV
    # drops, MOHW and FSC from the simulated agency REST API on loopback.
    with agency_servers() as env, serve(cfg.sources_dir) as api:
        os.environ.update({"AIRFLOW_CONN_ZERODOC_MOJ": env["AIRFLOW_CONN_ZERODOC_MOIS"],
                           "AIRFLOW_CONN_ZERODOC_MOHW": api, "AIRFLOW_CONN_ZERODOC_FSC": api})
        try:
            summary = run_pipeline(cfg, persons=PERSONS, seed=11, ds=DS, console=Console(quiet=True))
            rerun = run_pipeline(cfg, persons=PERSONS, seed=11, ds=DS, console=Console(quiet=True))
        finally:
            for k in ("AIRFLOW_CONN_ZERODOC_MOJ", "AIRFLOW_CONN_ZERODOC_MOHW", "AIRFLOW_CONN_ZERODOC_FSC"):
                os.environ.pop(k, None)
    yield cfg, summary, rerun
    os.environ.pop("ZERODOC_HOME", None)


@pytest.mark.e2e
@pytest.mark.services
def test_every_dag_succeeds(pipeline_run):
    _, summary, rerun = pipeline_run
    from zerodoc.catalog import agencies

    expected = [(f"ingest_{code}", "success") for code in agencies()] + [
        ("publish_shared", "success"), ("notify_benefits", "success")]
    assert [(r.dag_id, r.state) for r in summary.dag_runs] == expected, summary.problems
    assert summary.ok, summary.problems
    assert rerun.ok, rerun.problems


@pytest.mark.e2e
@pytest.mark.services
def test_rows_reconcile_exactly_with_the_defect_plan(pipeline_run):
    cfg, summary, _ = pipeline_run
    from zerodoc.catalog import agencies

    kinds = {"mois": "postgres", "moj": "postgres", "nts": "mysql", "moel": "csv", "police": "csv",
             "mohw": "rest", "fsc": "rest"}
    entities = [e.qualified for a in agencies().values() for e in a.entities.values()]
    assert len(entities) == 11
    for q in entities:
        got, want = summary.entities[q], summary.expected[q]
        assert (got["extracted"], got["passed"], got["quarantined"]) == (
            want["extracted"], want["passed"], want["quarantined"]), q
        agency, name = q.split(".")
        part = f"{agency}/{name}/ds={DS}/part-0.parquet"
        manifest = json.loads((cfg.raw_dir / f"{agency}/{name}/ds={DS}/_manifest.json").read_text())
        assert manifest["source"]["kind"] == kinds[agency], q
        assert pq.read_metadata(cfg.raw_dir / part).num_rows == got["extracted"]
        assert pq.read_metadata(cfg.validated_dir / part).num_rows == got["passed"]
        assert pq.read_metadata(cfg.quarantine_dir / part).num_rows == got["quarantined"]


@pytest.mark.e2e
@pytest.mark.services
def test_rerun_publishes_the_same_versions(pipeline_run):
    _, summary, rerun = pipeline_run
    assert {k: v["version"] for k, v in summary.published.items()} == {
        k: v["version"] for k, v in rerun.published.items()}


@pytest.mark.e2e
@pytest.mark.services
def test_published_files_hold_no_raw_national_id(pipeline_run):
    cfg, summary, _ = pipeline_run
    from zerodoc.catalog import datasets

    assert set(summary.published) == set(datasets())
    scanned = 0
    for path in cfg.published_dir.rglob("*"):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for col in table.columns:
                if pa.types.is_floating(col.type):
                    continue  # a ratio cannot hold an ID; its digits would only make false alarms
                values = col.cast(pa.string()).to_pylist()
                assert not any(v and contains_rrn(v) for v in values), (path, col)
                scanned += len(values)
        elif path.is_file():
            assert not contains_rrn(path.read_text()), path
    assert scanned > PERSONS


@pytest.mark.e2e
@pytest.mark.services
def test_evidence_api_answers_denies_and_audits(pipeline_run, monkeypatch):
    from zerodoc.api.app import create_app
    from zerodoc.api.consent import ConsentRegistry
    from zerodoc.api.signing import verify_evidence
    from zerodoc.audit.log import verify_chain

    cfg, summary, _ = pipeline_run
    monkeypatch.setenv("ZERODOC_HOME", str(cfg.home))
    residents = cfg.validated_dir / f"mois/residents/ds={DS}/part-0.parquet"
    con = duckdb.connect()
    con.execute(duckdb_macro_sql(cfg.pseudonym_key))
    rrn, pseudonym = con.execute(
        f"select rrn, zd_pseudonym(rrn) from read_parquet('{residents}') order by resident_id limit 1"
    ).fetchone()
    # `zerodoc run` issued the demo consumer's key and recorded a consent, exactly as printed.
    demo = json.loads((cfg.state_dir / "demo-request.json").read_text())
    key = demo["key"]
    body = {"evidence_type": "residence", "subject_id": rrn, "purpose": "basic_livelihood_application",
            "consent_id": demo["consent_id"]}
    # A subject nobody holds: consented (so the request gets past the consent check), yet unknown.
    unknown = "010101-3000001"
    now = dt.datetime.now(dt.UTC)
    unknown_consent = ConsentRegistry(cfg).record(
        subject_pseudonym=pseudonymize(unknown, cfg.pseudonym_key), consumer=demo["consumer"],
        purpose=demo["purpose"], datasets=["residence_v1"], valid_from=now - dt.timedelta(minutes=1),
        valid_to=now + dt.timedelta(days=1), recorded_by="e2e test")
    with TestClient(create_app(cfg)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        ok = client.post("/v1/evidence", json=body, headers=auth)
        assert ok.status_code == 200, ok.text
        answer = ok.json()
        ev = answer["evidence"]
        assert ev["subject_pseudonym"] == pseudonym
        assert ev["dataset_version"] == summary.published["residence_v1"]["version"]
        assert set(ev["fields"]) == {"sido_name", "sigungu_name", "household_size", "moved_in_on"}
        assert ev["validation_run_ids"]
        jwks = client.get("/.well-known/jwks.json").json()
        assert verify_evidence(answer, jwks)
        answer["evidence"]["fields"]["household_size"] += 1
        assert not verify_evidence(answer, jwks)

        denials = {
            401: client.post("/v1/evidence", json=body, headers={"Authorization": "Bearer wrong"}),
            403: client.post("/v1/evidence", json={**body, "purpose": "marketing"}, headers=auth),
            422: client.post("/v1/evidence", json={**body, "subject_id": "not-an-id"}, headers=auth),
            404: client.post("/v1/evidence", json={**body, "subject_id": unknown,
                                                    "consent_id": unknown_consent.consent_id}, headers=auth),
        }
        for status, resp in denials.items():
            assert resp.status_code == status, (status, resp.text)
            assert set(resp.json()["error"]) >= {"code", "message"}

    log_path = cfg.state_dir / "audit" / "evidence.log"
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    tail = records[-5:]
    assert [r["status"] for r in tail] == [200, 401, 403, 422, 404]
    assert [r["decision"] for r in tail] == ["allowed", "denied", "denied", "denied", "denied"]
    assert rrn not in log_path.read_text()
    assert verify_chain(log_path).ok
